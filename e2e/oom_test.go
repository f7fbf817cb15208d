package e2e

// Out of memory: the process that ran the sandbox out of memory is
// killed (exit 137, oom_killed), and the sandbox, its other processes and
// its neighbours carry on — on gVisor, whose kernel has no OOM killer for
// its workload (warren's agent kills), and on runc (the host kernel does).

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

// creep allocates 10 MB every 50 ms until it is stopped.
const creep = `
import time
keep = []
while True:
    keep.append(bytearray(10 * 1024 * 1024))
    time.sleep(0.05)
`

// several starts three 100 MB processes that stay, then one of 300 MB:
// together over 512 MB, the biggest must go and the others stay.
const several = `for i in 1 2 3; do python3 -c "import time; b = bytearray(100 << 20); time.sleep(60)" & done
sleep 2
python3 -c "import time; b = bytearray(300 << 20); time.sleep(60)"
echo big=$?
sleep 1
echo small=$(pgrep -fc '^python3 .*100 << 20')`

func TestOOM(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "base", Runtime: rt, Resources: &client.Resources{MemoryMB: 512}})
			neighbour := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
			// The sandbox sees exactly what it asked for.
			if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "free -m | awk '/^Mem:/ {print $2}'"}); strings.TrimSpace(r.Stdout) != "512" {
				t.Fatalf("free -m total: %q", r.Stdout)
			}
			if r := s.exec(t, sb.ID, client.ExecRequest{Argv: []string{"python3", "-c", "print(int(open('/proc/meminfo').readline().split()[1]) // 1024)"}}); strings.TrimSpace(r.Stdout) != "512" {
				t.Fatalf("MemTotal as a self-sizing runtime reads it: %q", r.Stdout)
			}
			// A server that must outlive what follows.
			if _, err := s.c.StartCommand(ctx, sb.ID, &client.CommandRequest{Name: "web", Cmd: "cd /tmp && echo up > index.html && python3 -m http.server 8000"}); err != nil {
				t.Fatal(err)
			}
			waitTCP(t, sb.Address+":8000")

			oom := func(what string, req client.ExecRequest) {
				t.Helper()
				r := s.exec(t, sb.ID, req)
				if r.ExitCode != 137 || !r.OOMKilled {
					t.Fatalf("%s: exit %d, oom_killed %v (stderr %q)", what, r.ExitCode, r.OOMKilled, r.Stderr)
				}
			}
			oom("900 MB at once", client.ExecRequest{Argv: []string{"python3", "-c", "b = bytearray(900 << 20)"}})
			oom("a slow creep", client.ExecRequest{Argv: []string{"python3", "-c", creep}, TimeoutSeconds: 120})
			r := s.exec(t, sb.ID, client.ExecRequest{Cmd: several, TimeoutSeconds: 120})
			if !strings.Contains(r.Stdout, "big=137") || !strings.Contains(r.Stdout, "small=3") {
				t.Fatalf("several processes over the limit: %q", r.Stdout)
			}
			s.exec(t, sb.ID, client.ExecRequest{Cmd: "pkill -f '^python3 .*100 << 20'; true"})

			// Streams say it too.
			exit, err := s.c.ExecStream(ctx, sb.ID, &client.ExecRequest{Argv: []string{"python3", "-c", "b = bytearray(900 << 20)"}}, client.ExecHandlers{})
			if err != nil {
				t.Fatal(err)
			}
			if exit.ExitCode != 137 || !exit.OOMKilled {
				t.Fatalf("streamed exec: %+v", exit)
			}
			// And background commands.
			if _, err := s.c.StartCommand(ctx, sb.ID, &client.CommandRequest{Name: "hog", Cmd: "exec python3 -c 'b = bytearray(900 << 20)'"}); err != nil {
				t.Fatal(err)
			}
			eventually(t, 2*time.Minute, "the hog ended", func() error {
				cmds, err := s.c.Commands(ctx, sb.ID)
				if err != nil {
					return err
				}
				for _, c := range cmds {
					if c.Name == "hog" && c.State == "exited" {
						if c.ExitCode == nil || *c.ExitCode != 137 || !c.OOMKilled {
							t.Fatalf("background command: %+v", c)
						}
						return nil
					}
				}
				return errorf("hog still running: %+v", cmds)
			})

			// Everything else carried on.
			got, err := s.c.GetSandbox(ctx, sb.ID)
			if err != nil || got.State != "running" || got.Memory == nil || got.Memory.OOMKills < 4 || got.Memory.LimitMB != 512 {
				t.Fatalf("after the OOM kills: %+v %v", got, err)
			}
			resp, err := http.Get("http://" + sb.Address + ":8000/")
			if err != nil {
				t.Fatalf("the background server is gone: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(body)) != "up" {
				t.Fatalf("the background server answers %q", body)
			}
			for _, id := range []string{sb.ID, neighbour.ID} {
				if r := s.exec(t, id, client.ExecRequest{Cmd: "echo fine"}); r.Stdout != "fine\n" {
					t.Fatalf("%s after the OOM kills: %+v", id, r)
				}
			}
			if m := metricsText(t, s); !strings.Contains(m, fmt.Sprintf(`warren_sandbox_oom_kills_total{sandbox=%q}`, sb.ID)) {
				t.Fatalf("/metrics has no OOM kills for %s", sb.ID)
			}
		})
	}
}

func metricsText(t *testing.T, s *server) string {
	t.Helper()
	req, _ := http.NewRequest("GET", s.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+s.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestDeadSandboxAnswers: when a sandbox dies (its runtime killed, as the
// host's OOM killer or a crash would), calls on it answer 409 with the
// reason at once, never a 500 or a long wait.
func TestDeadSandboxAnswers(t *testing.T) {
	s := startServer(t, "")
	sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "gvisor"})
	if err := exec.Command("pkill", "-9", "-f", "runsc-sandbox.*"+sb.ID).Run(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		start := time.Now()
		status, body := s.raw(t, "POST", "/v1/sandboxes/"+sb.ID+"/exec", s.key, `{"cmd":"echo hi"}`)
		took := time.Since(start)
		msg, _ := body["error"].(map[string]any)
		if status != 409 || !strings.Contains(fmt.Sprint(msg["message"]), "failed") || took > 3*time.Second {
			t.Fatalf("exec on a dead sandbox: %d %v after %s", status, body, took)
		}
	}
	got, _ := s.c.GetSandbox(context.Background(), sb.ID)
	if got.State != "failed" || got.Reason == "" {
		t.Fatalf("the dead sandbox: %+v", got)
	}
}
