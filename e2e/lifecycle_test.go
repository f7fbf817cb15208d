package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

func TestErrors(t *testing.T) {
	s := startServer(t, "")
	count := func() int {
		list, err := s.c.ListSandboxes(context.Background(), client.ListOptions{States: []client.State{"creating", "running", "failed", "deleting", "deleted"}})
		if err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	before := count()
	bad := []struct{ body, field string }{
		{`{"image":"no-such-image"}`, "image"},
		{`{"runtime":"vmware"}`, "runtime"},
		{`{"resources":{"cpu":1000}}`, "resources.cpu"},
		{`{"resources":{"memory_mb":1}}`, "resources.memory_mb"},
		{`{"resources":{"pids":2}}`, "resources.pids"},
		{`{"timeout_seconds":-5}`, "timeout_seconds"},
		{`{"idle_timeout_seconds":-1}`, "idle_timeout_seconds"},
		{`{"env":{"A=B":"c"}}`, "env"},
		{`{"colour":"blue"}`, "colour"},
		{`{"resources":{"cpu":"lots"}}`, "resources.cpu"},
		{`{"image":`, ""},
	}
	for _, b := range bad {
		status, body := s.raw(t, "POST", "/v1/sandboxes", s.key, b.body)
		e, _ := body["error"].(map[string]any)
		if status != 400 || e["code"] != "bad_request" || field(body) != b.field || e["message"] == "" {
			t.Errorf("create %s: %d %v; want 400 naming field %q", b.body, status, body, b.field)
		}
	}
	if after := count(); after != before {
		t.Fatalf("bad creates left %d sandboxes behind", after-before)
	}

	for _, key := range []string{"", "wrong-key-wrong-key-wrong"} {
		if status, body := s.raw(t, "GET", "/v1/sandboxes", key, ""); status != 401 || body["error"] == nil {
			t.Errorf("key %q: %d %v, want 401", key, status, body)
		}
	}
	if status, _ := s.raw(t, "GET", "/healthz", "", ""); status != 200 {
		t.Errorf("healthz without a key: %d", status)
	}

	ghost := "sbx_aaaaaaaaaaaaaaaaaaaa"
	for _, r := range [][2]string{{"GET", ""}, {"DELETE", ""}, {"POST", "/exec"}, {"GET", "/files?path=/etc/hostname"}, {"GET", "/files/list?path=/"}} {
		body := ""
		if r[1] == "/exec" {
			body = `{"cmd":"true"}`
		}
		if status, resp := s.raw(t, r[0], "/v1/sandboxes/"+ghost+r[1], s.key, body); status != 404 {
			t.Errorf("%s %s on unknown sandbox: %d %v, want 404", r[0], r[1], status, resp)
		}
	}

	sb := s.create(t, client.CreateRequest{Image: "busybox"})
	for _, b := range []struct{ body, field string }{
		{`{}`, "cmd"}, {`{"cmd":"x","argv":["y"]}`, "cmd"}, {`{"cmd":"pwd","cwd":"relative"}`, "cwd"}, {`{"cmd":"x","timeout_seconds":-1}`, "timeout_seconds"},
	} {
		if status, body := s.raw(t, "POST", "/v1/sandboxes/"+sb.ID+"/exec", s.key, b.body); status != 400 || field(body) != b.field {
			t.Errorf("exec %s: %d %v, want 400 naming %q", b.body, status, body, b.field)
		}
	}
	if _, err := s.c.DeleteSandbox(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if status, body := s.raw(t, "POST", "/v1/sandboxes/"+sb.ID+"/exec", s.key, `{"cmd":"true"}`); status != 409 {
		t.Errorf("exec on a deleted sandbox: %d %v, want 409", status, body)
	}
	got, err := s.c.GetSandbox(context.Background(), sb.ID)
	if err != nil || got.State != "deleted" || got.EndedAt == nil {
		t.Errorf("deleted sandbox reads %+v %v", got, err)
	}
}

func TestDeleteRemovesEveryTrace(t *testing.T) {
	s := startServer(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
			s.exec(t, sb.ID, client.ExecRequest{Cmd: "sleep 1000 & echo started > /tmp/marker"})
			if tr := traces(t, s, sb.ID); len(tr) == 0 {
				t.Fatal("a running sandbox shows no traces: the check itself is broken")
			}
			if _, err := s.c.DeleteSandbox(context.Background(), sb.ID); err != nil {
				t.Fatal(err)
			}
			if tr := traces(t, s, sb.ID); len(tr) > 0 {
				t.Fatalf("after delete the host still holds:\n%s", strings.Join(tr, "\n"))
			}
		})
	}
}

func TestLimits(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	for _, rt := range runtimes {
		t.Run(rt+"/memory", func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "base", Runtime: rt, Resources: &client.Resources{MemoryMB: 128}})
			res, err := s.c.Exec(ctx, sb.ID, &client.ExecRequest{Cmd: "python3 -c 'b = bytearray(600 * 1024 * 1024); print(len(b))'"})
			if err == nil && res.ExitCode == 0 {
				t.Fatalf("a 600 MB allocation succeeded under a 128 MB limit: %+v", res)
			}
			if status, _ := s.raw(t, "GET", "/healthz", "", ""); status != 200 {
				t.Fatal("the host stopped answering")
			}
			// The sandbox either survives (the kernel killed the process
			// inside, as with runc) or ends with the reason on record
			// (gVisor's kernel lives in the same memory cgroup).
			eventually(t, 15*time.Second, "sandbox outcome after OOM", func() error {
				cur, err := s.c.GetSandbox(ctx, sb.ID)
				if err != nil {
					return err
				}
				if cur.State == "failed" {
					if !strings.Contains(cur.Reason, "out of memory") {
						return fmt.Errorf("failed without an OOM reason: %q", cur.Reason)
					}
					return nil
				}
				r, err := s.c.Exec(ctx, sb.ID, &client.ExecRequest{Cmd: "echo alive"})
				if err != nil || r.Stdout != "alive\n" {
					return fmt.Errorf("sandbox %s but exec gives %+v %v", cur.State, r, err)
				}
				return nil
			})
			if rt == "runc" {
				if res == nil || res.ExitCode != 137 {
					t.Fatalf("runc: the allocating process should be OOM-killed (137), got %+v %v", res, err)
				}
			}
		})
		t.Run(rt+"/pids", func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt, Resources: &client.Resources{PIDs: 64}})
			neighbour := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
			// Under runc the agent is kept busy while the bomb runs: each
			// request may need a thread of its own, and the agent (PID 1,
			// a Go program) dies if it cannot make one. (gVisor's kernel
			// is slow enough at forking that busy requests starve the
			// bomb of CPU, and its agent has been outside the limit all
			// along.)
			if rt == "runc" {
				// The limit is set before the command's first instruction
				// (through the agent's nproc-exec), not just after it.
				if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "ulimit -u"}); r.Stdout != "64\n" {
					t.Fatalf("the command's process limit: %+v", r)
				}
			}
			busy, stopBusy := context.WithCancel(ctx)
			var wg sync.WaitGroup
			workers := 16
			if rt == "gvisor" {
				workers = 0
			}
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for busy.Err() == nil {
						_, _ = s.c.ListFiles(busy, sb.ID, "/proc")
					}
				}()
			}
			res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "bomb() { bomb | bomb & }; bomb; sleep 30", TimeoutSeconds: bombSeconds()})
			stopBusy()
			wg.Wait()
			if !res.TimedOut {
				t.Fatalf("fork bomb run: %+v", res)
			}
			if !strings.Contains(res.Stderr, "fork") {
				t.Fatalf("the bomb never hit the limit (stderr %q)", truncate(res.Stderr))
			}
			if r := s.exec(t, neighbour.ID, client.ExecRequest{Cmd: "echo fine"}); r.Stdout != "fine\n" {
				t.Fatalf("neighbour affected: %+v", r)
			}
			eventually(t, 20*time.Second, "sandbox usable after the bomb is killed", func() error {
				r, err := s.c.Exec(ctx, sb.ID, &client.ExecRequest{Cmd: "echo alive $(ps | wc -l)"})
				if err != nil || !strings.HasPrefix(r.Stdout, "alive") {
					return fmt.Errorf("%+v %v", r, err)
				}
				return nil
			})
		})
		t.Run(rt+"/cpu", func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt, Resources: &client.Resources{CPU: 0.5}})
			usage := func() time.Duration {
				d, err := cpuUsage(sb.ID)
				if err != nil {
					t.Fatalf("read cpu usage: %v", err)
				}
				return d
			}
			before := usage()
			start := time.Now()
			// Two busy loops would use two cores for 2 s unthrottled.
			s.exec(t, sb.ID, client.ExecRequest{Cmd: "(while :; do :; done) & (while :; do :; done) & sleep 2; kill %1 %2"})
			used, wall := usage()-before, time.Since(start)
			if limit := time.Duration(float64(wall) * 0.5 * 1.3); used > limit {
				t.Fatalf("used %v of CPU in %v of wall time; a 0.5 CPU limit allows about %v", used, wall, limit)
			}
			if used < 200*time.Millisecond {
				t.Fatalf("used only %v of CPU: the busy loops did not run", used)
			}
		})
	}
}

// bombSeconds is how long the fork bomb runs: long enough to reach the
// limit on an emulated machine too (WARREN_TEST_SLOW).
func bombSeconds() float64 {
	if os.Getenv("WARREN_TEST_SLOW") != "" {
		return 20
	}
	return 3
}

// cpuUsage is the CPU time a sandbox's host cgroup has used, on cgroup v1
// (cpuacct.usage, nanoseconds) or v2 (cpu.stat usage_usec).
func cpuUsage(id string) (time.Duration, error) {
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/warren", id, "cpu.stat")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				return time.Duration(n) * time.Microsecond, err
			}
		}
		return 0, fmt.Errorf("no usage_usec in cpu.stat of %s", id)
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuacct/warren", id, "cpuacct.usage"))
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(n), err
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

func TestTimeouts(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	hard := int64(2)
	idle := int64(2)
	lifetime := s.create(t, client.CreateRequest{Image: "busybox", TimeoutSeconds: &hard})
	if lifetime.ExpiresAt == nil {
		t.Fatal("a sandbox with timeout_seconds shows no expires_at")
	}
	idler := s.create(t, client.CreateRequest{Image: "busybox", IdleTimeoutSeconds: &idle})
	busy := s.create(t, client.CreateRequest{Image: "busybox", IdleTimeoutSeconds: &idle})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // keep one sandbox in use
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(500 * time.Millisecond):
				_, _ = s.c.Exec(ctx, busy.ID, &client.ExecRequest{Cmd: "true"})
			}
		}
	}()
	for _, c := range []struct {
		id, reason string
	}{{lifetime.ID, "timeout"}, {idler.ID, "idle"}} {
		eventually(t, 15*time.Second, c.reason+" ends the sandbox", func() error {
			sb, err := s.c.GetSandbox(ctx, c.id)
			if err != nil {
				return err
			}
			if sb.State != "deleted" || !strings.Contains(sb.Reason, c.reason) {
				return fmt.Errorf("state %s reason %q", sb.State, sb.Reason)
			}
			return nil
		})
		if tr := traces(t, s, c.id); len(tr) > 0 {
			t.Fatalf("ended sandbox left:\n%s", strings.Join(tr, "\n"))
		}
	}
	close(stop)
	wg.Wait()
	if sb, _ := s.c.GetSandbox(ctx, busy.ID); sb.State != "running" {
		t.Fatalf("a sandbox in use was ended: %+v", sb)
	}
}

// TestCrashMidCreate kills warren with SIGKILL while a sandbox is booting,
// restarts it, and checks nothing of that sandbox is left and its row
// says what happened.
func TestCrashMidCreate(t *testing.T) {
	dataDir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dataDir) })
	s := startServer(t, dataDir)
	// Warm the image so the create gets to the runtime quickly.
	s.create(t, client.CreateRequest{Image: "busybox"})
	go func() {
		_, _ = s.c.CreateSandbox(context.Background(), &client.CreateRequest{Image: "busybox"})
	}()
	var id string
	eventually(t, 20*time.Second, "the create reaches the runtime", func() error {
		matches, _ := filepath.Glob(filepath.Join(dataDir, "sandboxes", "*", "bundle", "config.json"))
		for _, m := range matches {
			cand := filepath.Base(filepath.Dir(filepath.Dir(m)))
			sb, err := s.c.GetSandbox(context.Background(), cand)
			if err == nil && sb.State == "creating" {
				id = cand
				return nil
			}
		}
		return fmt.Errorf("no sandbox in creating with a bundle yet")
	})
	s.kill9()
	// The runtime carries on without warren: let it get the sandbox up.
	time.Sleep(time.Second)
	s2 := startServer(t, dataDir)
	sb, err := s2.c.GetSandbox(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if sb.State != "failed" || !strings.Contains(sb.Reason, "interrupted") {
		t.Fatalf("interrupted create reads %s %q", sb.State, sb.Reason)
	}
	if tr := traces(t, s2, id); len(tr) > 0 {
		t.Fatalf("after restart the interrupted sandbox still holds:\n%s", strings.Join(tr, "\n"))
	}
}

// TestRestartAdoptsSandboxes kills warren with SIGKILL and checks running
// sandboxes keep their processes and files and answer after a restart.
func TestRestartAdoptsSandboxes(t *testing.T) {
	dataDir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dataDir) })
	s := startServer(t, dataDir)
	var ids []string
	for _, rt := range runtimes {
		sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
		s.exec(t, sb.ID, client.ExecRequest{Cmd: "echo kept > /root/file; (sleep 1000 &) ; true"})
		ids = append(ids, sb.ID)
	}
	s.kill9()
	s2 := startServer(t, dataDir)
	for _, id := range ids {
		sb, err := s2.c.GetSandbox(context.Background(), id)
		if err != nil || sb.State != "running" {
			t.Fatalf("%s after restart: %+v %v", id, sb, err)
		}
		res := s2.exec(t, id, client.ExecRequest{Cmd: "cat /root/file; ps | grep -q '[s]leep 1000' && echo sleeper"})
		if res.Stdout != "kept\nsleeper\n" {
			t.Fatalf("%s after restart: %+v", id, res)
		}
	}
}

func TestProcessRuntimeRefusesWithoutOptIn(t *testing.T) {
	cmd := exec.Command(warrenBin, "serve", "--runtime", "process", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "WARREN_ALLOW_INSECURE_RUNTIME=")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "WARREN_ALLOW_INSECURE_RUNTIME=1") {
		t.Fatalf("process runtime without opt-in: err=%v output=%s", err, out)
	}
}

func TestListFilters(t *testing.T) {
	s := startServer(t, "")
	a := s.create(t, client.CreateRequest{Image: "busybox", Metadata: map[string]string{"team": "a"}})
	s.create(t, client.CreateRequest{Image: "busybox", Metadata: map[string]string{"team": "b"}})
	list, err := s.c.ListSandboxes(context.Background(), client.ListOptions{Metadata: map[string]string{"team": "a"}})
	if err != nil || len(list) != 1 || list[0].ID != a.ID {
		t.Fatalf("metadata filter: %+v %v", list, err)
	}
	if _, err := s.c.DeleteSandbox(context.Background(), a.ID); err != nil {
		t.Fatal(err)
	}
	list, _ = s.c.ListSandboxes(context.Background(), client.ListOptions{States: []client.State{"deleted"}})
	if len(list) != 1 || list[0].ID != a.ID {
		t.Fatalf("state filter: %+v", list)
	}
	if status, body := s.raw(t, http.MethodGet, "/v1/sandboxes?state=sleeping", s.key, ""); status != 400 || field(body) != "state" {
		t.Fatalf("bad state filter: %d %v", status, body)
	}
}

// TestProcessRuntimeWithOptIn runs the development-only backend: no
// isolation, but the same API, and a loud warning.
func TestProcessRuntimeWithOptIn(t *testing.T) {
	s := startServer(t, "", "WARREN_ALLOW_INSECURE_RUNTIME=1", "WARREN_RUNTIME=process")
	if !strings.Contains(s.logs.String(), "NO ISOLATION") {
		t.Fatalf("no warning in the log:\n%s", s.logs.String())
	}
	sb := s.create(t, client.CreateRequest{Image: "busybox"})
	if sb.Runtime != "process" {
		t.Fatalf("runtime %s", sb.Runtime)
	}
	if res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "echo $((6*7))", Env: map[string]string{"X": "1"}}); res.Stdout != "42\n" {
		t.Fatalf("exec: %+v", res)
	}
	if _, err := s.c.DeleteSandbox(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if tr := traces(t, s, sb.ID); len(tr) > 0 {
		t.Fatalf("after delete:\n%s", strings.Join(tr, "\n"))
	}
}

// TestOneNodePerHost: a second node on the host is refused with who holds
// it, and the first one is untouched.
func TestOneNodePerHost(t *testing.T) {
	s := startServer(t, "")
	sb := s.create(t, client.CreateRequest{Image: "busybox"})
	for _, args := range [][]string{
		{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--runsc", runscBin},
		{"start", "--workspace", t.TempDir(), "--no-tui", "--port", "0", "--data-dir", t.TempDir(), "--sidecar-dir", sidecarDir(), "--runsc", runscBin},
	} {
		cmd := exec.Command(warrenBin, args...)
		cmd.Env = append(os.Environ(), "WARREN_IMAGE_DIR="+imageDir)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "another warren node runs on this host") || !strings.Contains(string(out), s.dataDir) {
			t.Fatalf("warren %s beside a running node: %v\n%s", args[0], err, out)
		}
	}
	if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "echo still"}); r.Stdout != "still\n" {
		t.Fatalf("the first node's sandbox: %+v", r)
	}
}
