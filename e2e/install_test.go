package e2e

// Installing and running warren the ways users do: a plain `go build`
// (with cgo), runsc found with no flag or variable, no silent fallback to
// runc, and make install's files with the systemd unit's own command.

import (
	"bufio"
	"context"
	"debug/elf"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

// plainPath has no runsc on it: runsc must be found beside warren.
const plainPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// besideRunsc puts bin in a fresh directory with runsc beside it, as
// make build and make install do, and returns its new path.
func besideRunsc(t *testing.T, bin string, withRunsc bool) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	dst := filepath.Join(dir, "warren")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if withRunsc {
		if err := os.Symlink(runscBin, filepath.Join(dir, "runsc")); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func isDynamic(t *testing.T, path string) bool {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// `go build ./cmd/warren` where a C compiler is installed gives a
// dynamically linked warren; its sandboxes start on both runtimes, in an
// image with no libc at all (busybox), and it finds runsc beside itself.
func TestCgoBuild(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatal("this test needs a C compiler, as the users it stands for have: apt-get install gcc")
	}
	root, _ := filepath.Abs("..")
	built := filepath.Join(t.TempDir(), "warren")
	cmd := exec.Command("go", "build", "-o", built, "./cmd/warren")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if !isDynamic(t, built) {
		t.Fatal("go build with cgo gave a static binary; this test is meant for a dynamic one")
	}
	bin := besideRunsc(t, built, true)
	s := startServerWith(t, "", bin, nil, plainPath)
	info, err := s.c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.DefaultRuntime != "gvisor" || len(info.Warnings) != 0 {
		t.Fatalf("info %+v: want gvisor found beside warren, and no warnings", info)
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
			if res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "echo hi; ls /lib* 2>&1 | head -1"}); res.ExitCode != 0 || !strings.HasPrefix(res.Stdout, "hi\n") {
				t.Fatalf("exec: %+v", res)
			}
			// The agent's loader and libraries are warren's, read-only.
			if res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "ls /.warren/lib && touch /.warren/lib/x"}); !strings.Contains(res.Stdout, "ld.so") || !strings.Contains(res.Stdout, "libc.so.6") || res.ExitCode == 0 {
				t.Fatalf("agent libraries: %+v", res)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := s.c.WriteFile(ctx, sb.ID, "/tmp/f", strings.NewReader("data")); err != nil {
				t.Fatal(err)
			}
			if res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "cat /tmp/f"}); res.Stdout != "data" {
				t.Fatalf("file: %+v", res)
			}
		})
	}
}

// Without runsc, auto refuses to start rather than run sandboxes under
// runc; runc chosen by name starts, and says what it is.
func TestNoSilentFallback(t *testing.T) {
	bin := besideRunsc(t, warrenBin, false)
	data := t.TempDir()
	defer cleanDataDir(t, data)
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", data)
	cmd.Env = append(environWithout("WARREN_RUNSC"), plainPath, "WARREN_IMAGE_DIR="+imageDir)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "gVisor is not available") || !strings.Contains(string(out), "--runtime runc") {
		t.Fatalf("serve without runsc: %v\n%s", err, out)
	}
	// The agent host refuses the same way, before anything starts.
	ws := t.TempDir()
	start := exec.Command(bin, "start", "--workspace", ws, "--check", "--data-dir", t.TempDir(), "--port", "0", "--sidecar-dir", sidecarDir())
	start.Env = append(environWithout("WARREN_RUNSC"), plainPath, "WARREN_IMAGE_DIR="+imageDir)
	if out, err := start.CombinedOutput(); err == nil || !strings.Contains(string(out), "gVisor is not available") {
		t.Fatalf("start without runsc: %v\n%s", err, out)
	}
	// Named, runc serves. A data dir whose parent its user namespace
	// cannot walk costs the namespace: that is a warning everywhere.
	private := filepath.Join(t.TempDir(), "private")
	os.Mkdir(private, 0o700)
	s := startServerWith(t, filepath.Join(private, "data"), bin, []string{"--runtime", "runc"}, plainPath)
	t.Cleanup(func() { cleanDataDir(t, filepath.Join(private, "data")) })
	info, err := s.c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.DefaultRuntime != "runc" || len(info.Warnings) != 1 || !strings.Contains(info.Warnings[0], "WITHOUT a user namespace") {
		t.Fatalf("info: %+v", info)
	}
	if !strings.Contains(s.hello, "WITHOUT a user namespace") {
		t.Fatalf("serve's start output does not warn: %s", s.hello)
	}
}

// make install's files, the unit's own command serving, and make
// uninstall taking away exactly what install put there.
func TestInstall(t *testing.T) {
	root, _ := filepath.Abs("..")
	prefix := t.TempDir()
	os.Chmod(prefix, 0o755)
	// Something of the user's that must survive: a directory install
	// writes into, with a file of its own.
	mine := filepath.Join(prefix, "usr/local/bin/mine")
	os.MkdirAll(filepath.Dir(mine), 0o755)
	os.WriteFile(mine, []byte("mine"), 0o755)
	vars := []string{
		"BINDIR=" + prefix + "/usr/local/bin", "DATADIR=" + prefix + "/usr/local/share",
		"UNITDIR=" + prefix + "/usr/local/lib/systemd/system", "SYSCONFDIR=" + prefix + "/etc",
		"STATEDIR=" + prefix + "/var/lib/warren", "BIN=" + warrenBin, "RUNSC=" + runscBin,
	}
	script := func(verb string) string {
		cmd := exec.Command("scripts/install.sh", verb)
		cmd.Dir = root
		cmd.Env = append(append(os.Environ(), vars...), plainPath)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh %s: %v\n%s", verb, err, out)
		}
		return string(out)
	}
	before := tree(t, prefix)
	out := script("install")
	for _, f := range []string{"usr/local/bin/warren", "usr/local/bin/runsc", "usr/local/lib/systemd/system/warren.service", "etc/warren/warren.toml", "usr/local/share/warren/installed"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Fatalf("install did not make %s:\n%s", f, out)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(prefix, "usr/local/lib/systemd/system/warren.service"))
	for _, want := range []string{"KillMode=process", "Restart=on-failure", "StateDirectory=warren", "ConfigurationDirectory=warren"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	for _, bad := range []string{"\nProtectSystem", "\nPrivateTmp", "\nProtectHome"} {
		if strings.Contains(string(unit), bad) {
			t.Errorf("the unit has %s, which hides warren's mounts from the host", strings.TrimSpace(bad))
		}
	}
	// The unit's ExecStart, as systemd would run it, on a free port.
	var execStart []string
	sc := bufio.NewScanner(strings.NewReader(string(unit)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			execStart = strings.Fields(v)
		}
	}
	if len(execStart) < 2 || execStart[0] != prefix+"/usr/local/bin/warren" {
		t.Fatalf("ExecStart %v", execStart)
	}
	conf := filepath.Join(prefix, "etc/warren/warren.toml")
	b, _ := os.ReadFile(conf)
	if !strings.Contains(string(b), `data-dir = "`+prefix+`/var/lib/warren"`) {
		t.Fatalf("config does not point at the state dir:\n%s", b)
	}
	addr := freeAddr(t)
	edited := strings.Replace(string(b), `listen = "127.0.0.1:7070"`, `listen = "`+addr+`"`, 1)
	os.WriteFile(conf, []byte(edited), 0o640)
	os.Chmod(prefix+"/var", 0o755)
	svc := exec.Command(execStart[0], execStart[1:]...)
	svc.Env = []string{plainPath, "HOME=/root", "WARREN_IMAGE_DIR=" + imageDir}
	logs := &syncBuffer{}
	svc.Stdout, svc.Stderr = logs, logs
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	state := prefix + "/var/lib/warren"
	defer cleanDataDir(t, state)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			svc.Process.Signal(syscall.SIGTERM)
			svc.Wait()
		}
	}
	defer stop()
	s := &server{t: t, dataDir: state, url: "http://" + addr, logs: logs}
	eventually(t, 60*time.Second, "the installed warren serves", func() error {
		key, err := os.ReadFile(filepath.Join(state, "admin.key"))
		if err != nil {
			return err
		}
		s.key = strings.TrimSpace(string(key))
		s.c = client.New(s.url, s.key)
		_, err = s.c.Info(context.Background())
		return err
	})
	sb := s.create(t, client.CreateRequest{Image: "busybox"})
	if sb.Runtime != "gvisor" {
		t.Fatalf("the installed warren runs %s; want gvisor, with the runsc installed beside it", sb.Runtime)
	}
	if res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "echo installed"}); res.Stdout != "installed\n" {
		t.Fatalf("exec: %+v", res)
	}
	if _, err := s.c.DeleteSandbox(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	stop()
	if t.Failed() {
		t.Logf("installed warren's log:\n%s", logs.String())
	}

	// Installing again keeps the edited config; uninstall keeps it too,
	// and the state, and the user's own file, and removes the rest.
	if out := script("install"); !strings.Contains(out, "keeping "+prefix+"/etc/warren/warren.toml") {
		t.Fatalf("reinstall did not keep the edited config:\n%s", out)
	}
	out = script("uninstall")
	after := tree(t, prefix)
	var left []string
	for _, p := range after {
		if !contains(before, p) && !strings.HasPrefix(p, "var") {
			left = append(left, p)
		}
	}
	want := []string{"etc", "etc/warren", "etc/warren/warren.toml"}
	if strings.Join(left, " ") != strings.Join(want, " ") {
		t.Fatalf("after uninstall, beyond what was there and the state: %v; want only the edited config %v\n%s", left, want, out)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Fatal("uninstall removed a file it did not install")
	}
	if _, err := os.Stat(filepath.Join(state, "warren.db")); err != nil {
		t.Fatal("uninstall removed the state")
	}
}

func tree(t *testing.T, root string) []string {
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
