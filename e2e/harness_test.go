// Package e2e drives a real warren binary with real runsc and runc
// sandboxes, a real SQLite file and real HTTP. It needs root, runc and a
// runsc; `make test` installs them.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

var (
	warrenBin string
	runscBin  string
	imageDir  string
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		// Skipped, not failed: any user can run the unit tests with
		// go test ./... (or make test-unit).
		fmt.Println("e2e: skipped: these tests drive real sandboxes and need root (make test as root)")
		os.Exit(0)
	}
	root, _ := filepath.Abs("..")
	warrenBin = os.Getenv("WARREN_BIN")
	if warrenBin == "" {
		warrenBin = filepath.Join(os.TempDir(), "warren-e2e")
		build := exec.Command("go", "build", "-o", warrenBin, "./cmd/warren")
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build warren: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	runscBin = os.Getenv("WARREN_RUNSC")
	if runscBin == "" {
		b, err := os.ReadFile(filepath.Join(root, ".cache/runsc-path"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: no runsc: set WARREN_RUNSC or run make test")
			os.Exit(1)
		}
		runscBin = strings.TrimSpace(string(b))
	}
	imageDir = os.Getenv("WARREN_TEST_IMAGE_DIR")
	if imageDir == "" {
		imageDir = filepath.Join(root, ".cache/images")
	}
	// warren starts LXCFS for runc sandboxes and leaves it serving (it
	// outlives warren, as sandboxes do); stop it if these tests did.
	_, lxcfsBefore := os.Stat("/var/lib/lxcfs/proc/meminfo")
	cgroupsBefore := sandboxCgroups()
	code := m.Run()
	// Nothing is orphaned: every sandbox cgroup the tests made is gone.
	if code == 0 {
		for _, d := range sandboxCgroups() {
			if !slices.Contains(cgroupsBefore, d) {
				fmt.Fprintf(os.Stderr, "e2e: a sandbox's cgroup was left behind: %s\n", d)
				code = 1
			}
		}
	}
	if lxcfsBefore != nil {
		if b, err := os.ReadFile("/run/warren-lxcfs.pid"); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		_ = syscall.Unmount("/var/lib/lxcfs", syscall.MNT_DETACH)
	}
	os.Exit(code)
}

// sandboxCgroups lists the sandbox cgroups on this host, v1 and v2.
func sandboxCgroups() []string {
	var out []string
	// warren-TAG: the cgroups of a node with an id of its own.
	for _, pat := range []string{"/sys/fs/cgroup/*/warren*/sbx_*", "/sys/fs/cgroup/warren*/sbx_*"} {
		m, _ := filepath.Glob(pat)
		out = append(out, m...)
	}
	return out
}

// server is one warren serve process.
type server struct {
	t       *testing.T
	dataDir string
	url     string
	key     string
	cmd     *exec.Cmd
	logs    *syncBuffer
	// hello is what serve printed when it was ready (--json).
	hello string
	c     *client.Client
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const adminKey = "e2e-admin-key-0123456789"

// startServer runs warren serve on a fresh data dir (or the given one).
func startServer(t *testing.T, dataDir string, extraEnv ...string) *server {
	t.Helper()
	return startServerWith(t, dataDir, warrenBin, []string{"--runsc", runscBin}, extraEnv...)
}

// startServerWith runs the warren binary bin with args added to serve's.
func startServerWith(t *testing.T, dataDir, bin string, args []string, extraEnv ...string) *server {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
		t.Cleanup(func() { cleanDataDir(t, dataDir) })
	}
	// runc's user namespace needs to walk to the data dir (as
	// /var/lib/warren would allow); the test's temporary parent is 0700.
	os.Chmod(filepath.Dir(dataDir), 0o711)
	return launch(t, dataDir, exec.Command(bin, append([]string{"serve", "--json", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, args...)...), extraEnv...)
}

// launch starts cmd, a warren serve on dataDir, and waits until it serves.
func launch(t *testing.T, dataDir string, cmd *exec.Cmd, extraEnv ...string) *server {
	t.Helper()
	s := &server{t: t, dataDir: dataDir, key: adminKey, logs: &syncBuffer{}, cmd: cmd}
	// runsc comes from args, or is found as a user's warren finds it.
	s.cmd.Env = append(environWithout("WARREN_RUNSC"), "WARREN_ADMIN_KEY="+adminKey, "WARREN_IMAGE_DIR="+imageDir)
	s.cmd.Env = append(s.cmd.Env, extraEnv...)
	s.cmd.Stderr = s.logs
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		var raw json.RawMessage
		var hello struct {
			URL string `json:"url"`
		}
		err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&raw)
		if err == nil {
			err = json.Unmarshal(raw, &hello)
		}
		s.url, s.hello = hello.URL, string(raw)
		ready <- err
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("warren serve did not start: %v\n%s", err, s.logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("warren serve did not start in 60s\n%s", s.logs.String())
	}
	s.c = client.New(s.url, s.key)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("warren log:\n%s", s.logs.String())
		}
	})
	t.Cleanup(s.stop)
	return s
}

// environWithout is this process's environment without the named
// variables.
func environWithout(names ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, name) {
			out = append(out, kv)
		}
	}
	return out
}

// stop ends the server gracefully, after deleting what tests left behind.
func (s *server) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if list, err := s.c.ListSandboxes(ctx, client.ListOptions{States: []client.State{"running", "failed"}}); err == nil {
		for _, sb := range list {
			_, _ = s.c.DeleteSandbox(ctx, sb.ID)
		}
	}
	s.stopKeepingSandboxes()
}

// stopKeepingSandboxes stops the server gracefully and leaves its
// sandboxes running, as an upgrade would.
func (s *server) stopKeepingSandboxes() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	// What runsc pins in the data dir goes with warren (this build; an
	// older release may be running), so the data dir can be removed after.
	if s.cmd.ProcessState.Success() && slices.Contains(s.cmd.Args, warrenBin) {
		pin := filepath.Join(s.dataDir, "runtime", "runsc", "null-netns")
		if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), " "+pin+" ") {
			s.t.Errorf("warren stopped and left %s mounted", pin)
		}
	}
}

// kill9 ends the server the hard way, as a crash would.
func (s *server) kill9() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// cleanDataDir unmounts what a data dir may still hold so it can be removed.
func cleanDataDir(t *testing.T, dir string) {
	out, _ := os.ReadFile("/proc/self/mountinfo")
	var points []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir) {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

func (s *server) create(t *testing.T, req client.CreateRequest) *client.Sandbox {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sb, err := s.c.CreateSandbox(ctx, &req)
	if err != nil {
		t.Fatalf("create %+v: %v", req, err)
	}
	if sb.State != "running" {
		t.Fatalf("created sandbox is %s", sb.State)
	}
	return sb
}

func (s *server) exec(t *testing.T, id string, req client.ExecRequest) *client.ExecResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := s.c.Exec(ctx, id, &req)
	if err != nil {
		t.Fatalf("exec %+v in %s: %v", req, id, err)
	}
	return res
}

// raw sends a request with an explicit key and body and returns status and
// decoded JSON body.
func (s *server) raw(t *testing.T, method, path, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// runtimes are the backends every behaviour is checked on.
var runtimes = []string{"gvisor", "runc"}

// traces lists what the host still holds for a sandbox id: processes,
// mounts, cgroups, directories.
func traces(t *testing.T, s *server, id string) []string {
	t.Helper()
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(id)) {
			found = append(found, "process "+filepath.Base(filepath.Dir(p))+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, id) {
			found = append(found, "mount: "+line)
		}
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/warren/" + id)
	for _, c := range cgroups {
		found = append(found, "cgroup "+c)
	}
	if _, err := os.Stat("/sys/fs/cgroup/warren/" + id); err == nil {
		found = append(found, "cgroup /sys/fs/cgroup/warren/"+id)
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "sandboxes", id)); err == nil {
		found = append(found, "directory "+filepath.Join(s.dataDir, "sandboxes", id))
	}
	if _, err := os.Stat(filepath.Join(s.dataDir, "network", id+".json")); err == nil {
		found = append(found, "network state for "+id)
	}
	if out, err := exec.Command("nft", "list", "table", "ip", "warren").Output(); err == nil && bytes.Contains(out, []byte(id)) {
		found = append(found, "nftables chain for "+id)
	}
	for _, rt := range []string{"runsc", "runc"} {
		state, _ := filepath.Glob(filepath.Join(s.dataDir, "runtime", rt, "*"+id+"*"))
		for _, st := range state {
			found = append(found, rt+" state "+st)
		}
	}
	return found
}

// eventually retries check until it passes or the timeout ends.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = check(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: still failing after %s: %v", what, timeout, err)
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// waitTCP waits until addr accepts connections.
func waitTCP(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 15*time.Second, addr+" accepting", func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}
