package e2e

// The README, run as written: `make run` in a fresh copy of the tree (the
// first terminal), then every command of the tour and of the agent-host
// section in one shell on a terminal (the second), in order, each one
// checked for success and for what its `# →` comment says it prints.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/warrenhq/warren/client"
)

// readmeStep is one complete shell command of the README.
type readmeStep struct {
	section string
	command string
	expect  string // from "# → ...", if any
}

var expectComment = regexp.MustCompile(`#\s*→\s*(.+?)\s*$`)

// readmeSteps splits the sh blocks of the named sections into complete
// commands: lines accumulate until bash can parse them.
func readmeSteps(t *testing.T, readme string, sections ...string) []readmeStep {
	t.Helper()
	var steps []readmeStep
	section, inBlock := "", false
	chunk := ""
	for _, line := range strings.Split(readme, "\n") {
		switch {
		case strings.HasPrefix(line, "## "):
			section = strings.TrimPrefix(line, "## ")
		case strings.HasPrefix(line, "```sh") && !inBlock:
			inBlock = true
		case strings.HasPrefix(line, "```") && inBlock:
			if strings.TrimSpace(chunk) != "" {
				t.Fatalf("README, %s: a command does not end: %q", section, chunk)
			}
			inBlock = false
		case inBlock && contains(sections, section):
			chunk += line + "\n"
			if strings.TrimSpace(chunk) == "" {
				chunk = ""
				continue
			}
			if exec.Command("bash", "-n", "-c", chunk).Run() != nil {
				continue // not a whole command yet
			}
			step := readmeStep{section: section, command: strings.TrimSpace(chunk)}
			if m := expectComment.FindStringSubmatch(line); m != nil {
				step.expect = m[1]
			}
			steps = append(steps, step)
			chunk = ""
		}
	}
	return steps
}

// farm makes a fresh copy of the tree to run make in: links to the
// sources and the build cache, no data dir, no bin.
func farm(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		switch e.Name() {
		case ".data", "bin", ".git":
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// waitFor waits until out holds s, or fails after timeout.
func waitFor(t *testing.T, out interface{ String() string }, s string, timeout time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q in %s; output so far:\n%s", what, s, timeout, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestReadme(t *testing.T) {
	if _, err := exec.LookPath("jq"); err != nil {
		t.Fatal("the README uses jq, which make deps installs: run make test")
	}
	root, _ := filepath.Abs("..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	tour := readmeSteps(t, string(readme), "A 60-second tour")
	agent := readmeSteps(t, string(readme), "Host a coding agent")
	if len(tour) < 10 || len(agent) < 3 {
		t.Fatalf("found %d tour and %d agent-host commands in the README; did its sections move?", len(tour), len(agent))
	}
	var makeRun string
	for _, line := range strings.Split(string(readme), "\n") {
		if strings.HasPrefix(line, "make run") {
			makeRun, _, _ = strings.Cut(line, "#")
			break
		}
	}
	if strings.TrimSpace(makeRun) != "make run" {
		t.Fatalf("the README's first terminal runs %q, not make run", makeRun)
	}

	dir := farm(t, root)
	// runc's user namespace walks to the data dir, as it would to
	// /var/lib/warren.
	os.Chmod(filepath.Dir(dir), 0o711)
	home := t.TempDir()
	os.Chmod(home, 0o755)
	agentData := filepath.Join(t.TempDir(), "warren")
	baseEnv := []string{"HOME=" + home, "PATH=/usr/local/go/bin:" + strings.TrimPrefix(plainPath, "PATH="), "TERM=xterm", "LANG=C.UTF-8",
		"GOCACHE=" + goEnv(t, "GOCACHE"), "GOMODCACHE=" + goEnv(t, "GOMODCACHE"), "GOFLAGS=" + os.Getenv("GOFLAGS"), "GOPROXY=" + goEnv(t, "GOPROXY")}
	defer func() {
		// What the README left running goes, as a test's sandboxes do.
		stop := exec.Command(filepath.Join(dir, "bin/warren"), "stop", "--workspace", filepath.Join(home, "src/myapp"), "--data-dir", agentData)
		_ = stop.Run()
		if err := deleteAll(filepath.Join(dir, ".data")); err != nil {
			t.Errorf("clean up after the README: %v", err)
		}
		cleanDataDir(t, filepath.Join(dir, ".data"))
		cleanDataDir(t, agentData)
	}()

	// The first terminal.
	makeOut := &syncBuffer{}
	mk := exec.Command("make", "run")
	mk.Dir = dir
	mk.Env = baseEnv
	mk.Stdout, mk.Stderr = makeOut, makeOut
	mk.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := mk.Start(); err != nil {
		t.Fatal(err)
	}
	stopMake := func() {
		if mk.ProcessState == nil {
			_ = syscall.Kill(-mk.Process.Pid, syscall.SIGINT) // Ctrl-C
			done := make(chan struct{})
			go func() { mk.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = syscall.Kill(-mk.Process.Pid, syscall.SIGKILL)
				<-done
			}
		}
	}
	defer stopMake()
	waitFor(t, makeOut, "warren is serving at http://127.0.0.1:7070", 15*time.Minute, "make run")
	defer func() {
		if t.Failed() {
			t.Logf("make run's terminal:\n%s", makeOut.String())
		}
	}()

	// The second terminal: one shell on a pty, fed the commands.
	sess := newReadmeShell(t, dir, append(baseEnv, "WARREN_DATA_DIR="+agentData, "WARREN_SIDECAR_DIR="+sidecarDir()))
	for _, step := range tour {
		sess.run(t, step)
	}
	stopMake()
	if !strings.Contains(makeOut.String(), "warren stopped") {
		t.Fatalf("make run did not stop on Ctrl-C:\n%s", makeOut.String())
	}
	for _, step := range agent {
		sess.run(t, step)
	}
}

// deleteAll starts a node on dataDir, deletes its sandboxes and stops it.
func deleteAll(dataDir string) error {
	if _, err := os.Stat(filepath.Join(dataDir, "warren.db")); err != nil {
		return nil
	}
	cmd := exec.Command(warrenBin, "serve", "--json", "--listen", "127.0.0.1:0", "--data-dir", dataDir, "--runsc", runscBin)
	cmd.Env = append(environWithout("WARREN_RUNSC"), "WARREN_ADMIN_KEY="+adminKey, "WARREN_IMAGE_DIR="+imageDir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	var hello struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(stdout).Decode(&hello); err != nil {
		return fmt.Errorf("serve %s: %v\n%s", dataDir, err, logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := client.New(hello.URL, adminKey)
	list, err := c.ListSandboxes(ctx, client.ListOptions{States: []client.State{"running", "paused", "failed"}})
	if err != nil {
		return err
	}
	for _, sb := range list {
		if _, err := c.DeleteSandbox(ctx, sb.ID); err != nil {
			return err
		}
	}
	return nil
}

func goEnv(t *testing.T, name string) string {
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// readmeShell is an interactive bash on a pty, as a person's terminal
// is. After each command it prints its exit code in a marker (its prompt
// command), so the test types the next only when the last has finished.
type readmeShell struct {
	tty *os.File
	out *syncBuffer
}

const rcMarker = "@@rc="

func newReadmeShell(t *testing.T, dir string, env []string) *readmeShell {
	t.Helper()
	cmd := exec.Command("bash", "--norc", "--noprofile", "-i")
	cmd.Dir = dir
	cmd.Env = append(env, "PS1=", "PS2=", `PROMPT_COMMAND=echo "`+rcMarker+`$?@@"`)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	s := &readmeShell{tty: tty, out: &syncBuffer{}}
	go func() { _, _ = copyAll(s.out, tty) }()
	t.Cleanup(func() {
		tty.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	waitFor(t, s.out, rcMarker, 30*time.Second, "bash's first prompt")
	// Nothing typed is echoed back, to keep outputs apart.
	s.run(t, readmeStep{section: "setup", command: "stty -echo"})
	return s
}

func copyAll(dst *syncBuffer, src *os.File) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := src.Read(buf)
		if k > 0 {
			dst.Write(buf[:k])
			n += int64(k)
		}
		if err != nil {
			return n, err
		}
	}
}

// run types one command as written, waits for the prompt, and checks it.
func (s *readmeShell) run(t *testing.T, step readmeStep) {
	t.Helper()
	from := len(s.out.String())
	fmt.Fprintf(s.tty, "%s\n", step.command)
	interactive := strings.HasPrefix(step.command, "warren shell ")
	if interactive {
		time.Sleep(3 * time.Second) // the remote shell's prompt
		fmt.Fprint(s.tty, "echo in-shell-$((6*7)); exit\r")
	}
	deadline := time.Now().Add(10 * time.Minute)
	var out, rc string
	for {
		all := s.out.String()[from:]
		if i := strings.Index(all, rcMarker); i >= 0 && strings.Contains(all[i+len(rcMarker):], "@@") {
			out = all[:i]
			rc, _, _ = strings.Cut(all[i+len(rcMarker):], "@@")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("README (%s): %s\ndid not finish in 10 minutes; terminal:\n%s", step.section, step.command, all)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rc != "0" {
		t.Fatalf("README (%s): %s\nexited %s:\n%s", step.section, step.command, rc, out)
	}
	if step.expect != "" && !strings.Contains(out, step.expect) {
		t.Fatalf("README (%s): %s\nprinted no %q:\n%s", step.section, step.command, step.expect, out)
	}
	if interactive && !strings.Contains(out, "in-shell-42") {
		t.Fatalf("README: %s did not run what was typed into it:\n%s", step.command, out)
	}
	t.Logf("README (%s): %s", step.section, step.command)
}
