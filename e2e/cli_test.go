package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/warrenhq/warren/client"
)

// cli runs the warren CLI against s and returns stdout, stderr and the
// exit code.
func (s *server) cli(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return s.cliAs(t, s.key, stdin, args...)
}

// cliAs runs the CLI with another API key.
func (s *server) cliAs(t *testing.T, key, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(warrenBin, args...)
	cmd.Env = append(os.Environ(), "WARREN_URL="+s.url, "WARREN_API_KEY="+key)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run warren %v: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

func TestCLI(t *testing.T) {
	s := startServer(t, "")
	if out, errOut, code := s.cli(t, "", "image", "build", "busybox", "--json"); code != 0 || !strings.Contains(out, `"state": "ready"`) {
		t.Fatalf("image build: %d %q %q", code, out, errOut)
	}
	if out, _, code := s.cli(t, "", "image", "ls"); code != 0 || !strings.Contains(out, "busybox") || !strings.Contains(out, "ready") {
		t.Fatalf("image ls: %d %q", code, out)
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			out, errOut, code := s.cli(t, "", "sandbox", "create", "--image", "base", "--runtime", rt, "--json")
			if code != 0 {
				t.Fatalf("create: %d %s", code, errOut)
			}
			var sb struct{ ID, State, Runtime string }
			if err := json.Unmarshal([]byte(out), &sb); err != nil || sb.State != "running" || sb.Runtime != rt {
				t.Fatalf("create --json printed %q (%v)", out, err)
			}
			if out, errOut, code := s.cli(t, "", "exec", sb.ID, "--", "python3", "-c", "print(2+2)"); out != "4\n" || code != 0 {
				t.Fatalf("exec python3: %q %q %d", out, errOut, code)
			}
			if out, errOut, code := s.cli(t, "", "exec", sb.ID, "--", "sh", "-c", "echo to-err >&2; exit 7"); code != 7 || errOut != "to-err\n" || out != "" {
				t.Fatalf("exit code and stderr: %q %q %d", out, errOut, code)
			}
			if out, _, code := s.cli(t, "piped\ninput\n", "exec", sb.ID, "--", "wc", "-l"); strings.TrimSpace(out) != "2" || code != 0 {
				t.Fatalf("stdin forwarding: %q %d", out, code)
			}
			out, _, code = s.cli(t, "", "exec", "--json", sb.ID, "--", "sh", "-c", "echo j; exit 3")
			var res struct {
				ExitCode int    `json:"exit_code"`
				Stdout   string `json:"stdout"`
			}
			if json.Unmarshal([]byte(out), &res) != nil || res.ExitCode != 3 || res.Stdout != "j\n" || code != 3 {
				t.Fatalf("exec --json: %q %d", out, code)
			}
			local := filepath.Join(t.TempDir(), "f.txt")
			os.WriteFile(local, []byte("file body\n"), 0o644)
			if _, errOut, code := s.cli(t, "", "files", "put", sb.ID, local, "/root/f.txt"); code != 0 {
				t.Fatalf("files put: %s", errOut)
			}
			if out, _, _ := s.cli(t, "", "files", "get", sb.ID, "/root/f.txt"); out != "file body\n" {
				t.Fatalf("files get: %q", out)
			}
			if out, _, _ := s.cli(t, "", "files", "ls", sb.ID, "/root", "--json"); !strings.Contains(out, `"name": "f.txt"`) {
				t.Fatalf("files ls --json: %q", out)
			}
			if out, _, _ := s.cli(t, "", "sandbox", "ls"); !strings.Contains(out, sb.ID) {
				t.Fatalf("sandbox ls: %q", out)
			}
			if out, _, code := s.cli(t, "", "sandbox", "get", sb.ID); code != 0 || !strings.Contains(out, "running") {
				t.Fatalf("sandbox get: %q", out)
			}
			if rt == "gvisor" {
				if out, errOut, code := s.cli(t, "", "sandbox", "pause", sb.ID); code != 0 || !strings.Contains(out, sb.ID+" paused (pause=") {
					t.Fatalf("sandbox pause: %d %q %q", code, out, errOut)
				}
				if out, errOut, code := s.cli(t, "", "sandbox", "resume", sb.ID, "--json"); code != 0 || !strings.Contains(out, `"state": "running"`) || !strings.Contains(out, `"resume_ms"`) {
					t.Fatalf("sandbox resume --json: %d %q %q", code, out, errOut)
				}
				out, errOut, code := s.cli(t, "", "sandbox", "fork", sb.ID, "--count", "2", "--json")
				var forked struct {
					Sandboxes []client.Sandbox `json:"sandboxes"`
				}
				if code != 0 || json.Unmarshal([]byte(out), &forked) != nil || len(forked.Sandboxes) != 2 {
					t.Fatalf("sandbox fork --json: %d %q %q", code, out, errOut)
				}
				for _, f := range forked.Sandboxes {
					if got, _, _ := s.cli(t, "", "files", "get", f.ID, "/root/f.txt"); got != "file body\n" {
						t.Fatalf("a fork lacks the source's file: %q", got)
					}
					s.cli(t, "", "sandbox", "rm", f.ID)
				}
			} else if _, errOut, code := s.cli(t, "", "sandbox", "pause", sb.ID); code == 0 || !strings.Contains(errOut, "cannot pause") {
				t.Fatalf("runc pause should be refused with the reason: %d %q", code, errOut)
			}
			if _, _, code := s.cli(t, "", "sandbox", "rm", sb.ID); code != 0 {
				t.Fatal("sandbox rm failed")
			}
			if _, errOut, code := s.cli(t, "", "exec", sb.ID, "--", "true"); code == 0 || !strings.Contains(errOut, "not running") {
				t.Fatalf("exec on removed sandbox: %q %d", errOut, code)
			}
		})
	}
}

// TestShell drives `warren shell` on a real terminal.
func TestShell(t *testing.T) {
	s := startServer(t, "")
	out, _, _ := s.cli(t, "", "sandbox", "create", "--image", "busybox", "--json")
	var sb struct{ ID string }
	_ = json.Unmarshal([]byte(out), &sb)
	cmd := exec.Command(warrenBin, "shell", sb.ID)
	cmd.Env = append(os.Environ(), "WARREN_URL="+s.url, "WARREN_API_KEY="+s.key)
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 100, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var screen bytes.Buffer
	got := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			screen.Write(buf[:n])
			if strings.Contains(screen.String(), "30 100") && strings.Contains(screen.String(), "shell-ok") {
				close(got)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	tty.WriteString("stty size; echo shell-$((1))k | tr 1 o\n")
	select {
	case <-got:
	case <-time.After(20 * time.Second):
		t.Fatalf("shell output never showed size and echo: %q", screen.String())
	}
	tty.WriteString("exit 4\n")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 4 {
			t.Fatalf("warren shell exit: %v, want code 4", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("warren shell did not exit after the remote shell did")
	}
}
