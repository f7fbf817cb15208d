package e2e

// Crash safety: warren killed (SIGKILL, through its failpoints) at every
// step of create, pause, resume, fork and delete, and a simulated host
// reboot. After a restart nothing is leaked, and nothing paused or
// running loses a file or a process.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

// busy makes a gVisor sandbox with a counting process and 300 files.
func busy(t *testing.T, s *server) string {
	t.Helper()
	sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "gvisor"})
	s.exec(t, sb.ID, client.ExecRequest{Cmd: "(i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done) >/dev/null 2>&1 &"})
	s.exec(t, sb.ID, client.ExecRequest{Cmd: "mkdir /data && for i in $(seq 300); do echo file-$i > /data/f$i; done"})
	time.Sleep(200 * time.Millisecond)
	return sb.ID
}

// intact checks a busy sandbox still has its process and every file,
// resuming it if it is paused.
func intact(t *testing.T, s *server, id string) {
	t.Helper()
	ctx := context.Background()
	sb, err := s.c.GetSandbox(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	switch sb.State {
	case "paused":
		if _, err := s.c.Resume(ctx, id); err != nil {
			t.Fatalf("resume after the crash: %v", err)
		}
	case "running":
	default:
		t.Fatalf("after the crash the sandbox is %s (%s)", sb.State, sb.Reason)
	}
	a := counter(t, s, id)
	time.Sleep(300 * time.Millisecond)
	if b := counter(t, s, id); b <= a {
		t.Fatalf("the sandbox's process does not run: %d then %d", a, b)
	}
	if r := s.exec(t, id, client.ExecRequest{Cmd: "ls /data | wc -l; cat /data/f300"}); r.Stdout != "300\nfile-300\n" {
		t.Fatalf("files after the crash: %q", r.Stdout)
	}
}

// clean checks that a sandbox that ended left nothing on the host.
func clean(t *testing.T, s *server, id string) {
	t.Helper()
	eventually(t, 30*time.Second, "no traces of "+id, func() error {
		if left := traces(t, s, id); len(left) > 0 {
			return errorf("%v", left)
		}
		return nil
	})
}

// dies waits for a server a failpoint killed.
func (s *server) dies(t *testing.T) {
	t.Helper()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("warren did not die at its failpoint")
	}
	if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("warren ended with %v, not at its failpoint", s.cmd.ProcessState)
	}
}

func ids(t *testing.T, s *server) map[string]*client.Sandbox {
	t.Helper()
	list, err := s.c.ListSandboxes(context.Background(), client.ListOptions{States: []client.State{"creating", "running", "paused", "pausing", "resuming", "forking", "deleting", "deleted", "failed"}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*client.Sandbox{}
	for _, sb := range list {
		out[sb.ID] = sb
	}
	return out
}

func TestCrashAtEveryStep(t *testing.T) {
	dataDir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dataDir) })
	ctx := context.Background()
	steps := []struct{ op, point string }{
		{"create", "create.recorded"}, {"create", "create.files-mounted"}, {"create", "create.network"},
		{"create", "create.runtime-started"}, {"create", "create.before-running"},
		{"pause", "pause.pausing"}, {"pause", "pause.checkpointed"},
		{"resume", "resume.resuming"}, {"resume", "resume.restored"}, {"resume", "resume.before-running"},
		{"fork", "fork.forking"}, {"fork", "fork.checkpointed"}, {"fork", "fork.copy-restored"}, {"fork", "fork.source-back"},
		{"delete", "delete.deleting"}, {"delete", "delete.torn-down"},
	}
	for _, step := range steps {
		t.Run(step.point, func(t *testing.T) {
			s := startServer(t, dataDir)
			before := ids(t, s)
			id := ""
			if step.op != "create" {
				id = busy(t, s)
				if step.op == "resume" {
					if _, err := s.c.Pause(ctx, id); err != nil {
						t.Fatal(err)
					}
				}
				before = ids(t, s)
			}
			s.stopKeepingSandboxes()

			crashing := startServer(t, dataDir, "WARREN_FAILPOINT="+step.point)
			var err error
			switch step.op {
			case "create":
				_, err = crashing.c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Runtime: "gvisor"})
			case "pause":
				_, err = crashing.c.Pause(ctx, id)
			case "resume":
				_, err = crashing.c.Resume(ctx, id)
			case "fork":
				_, err = crashing.c.Fork(ctx, id, 2)
			case "delete":
				_, err = crashing.c.DeleteSandbox(ctx, id)
			}
			if err == nil {
				t.Fatalf("%s succeeded; the failpoint never fired", step.op)
			}
			crashing.dies(t)

			s = startServer(t, dataDir)
			after := ids(t, s)
			for newID, sb := range after {
				if before[newID] != nil {
					continue
				}
				// What the interrupted call was making: ended, and gone.
				if sb.State != "failed" {
					t.Fatalf("a sandbox the crash interrupted is %s, want failed", sb.State)
				}
				clean(t, s, newID)
			}
			switch step.op {
			case "pause", "resume", "fork":
				intact(t, s, id)
			case "delete":
				if sb := after[id]; sb.State != "deleted" {
					t.Fatalf("after the crash the deleted sandbox is %s", sb.State)
				}
				clean(t, s, id)
			}
			if id != "" {
				_, _ = s.c.DeleteSandbox(ctx, id)
				clean(t, s, id)
			}
			s.stop()
		})
	}
}

// reboot does to warren's sandboxes what a host restart does: every
// process gone, every mount, network namespace, link, cgroup and
// firewall rule gone; only the data dir's files stay.
func reboot(t *testing.T, dataDir string, sandboxes []string) {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), dataDir) {
			pid := filepath.Base(filepath.Dir(p))
			exec.Command("kill", "-9", pid).Run()
		}
	}
	for _, id := range sandboxes {
		for _, f := range []string{"/sys/fs/cgroup/pids/warren/" + id + "/cgroup.procs", "/sys/fs/cgroup/memory/warren/" + id + "/cgroup.procs"} {
			b, _ := os.ReadFile(f)
			for _, pid := range strings.Fields(string(b)) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	cleanDataDir(t, dataDir)
	for _, id := range sandboxes {
		ns := "/var/run/netns/warren-" + id
		syscall.Unmount(ns, syscall.MNT_DETACH)
		os.Remove(ns)
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/warren/" + id)
		for _, d := range dirs {
			os.Remove(d)
		}
	}
	out, _ := exec.Command("ip", "-o", "link", "show", "type", "veth").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], "wh") {
			exec.Command("ip", "link", "del", strings.Split(strings.TrimSuffix(f[1], ":"), "@")[0]).Run()
		}
	}
	exec.Command("nft", "delete", "table", "ip", "warren").Run()
	exec.Command("nft", "delete", "table", "ip6", "warren").Run()
}

func TestSimulatedReboot(t *testing.T) {
	dataDir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dataDir) })
	ctx := context.Background()
	s := startServer(t, dataDir)
	paused := busy(t, s)
	before := counter(t, s, paused)
	if _, err := s.c.Pause(ctx, paused); err != nil {
		t.Fatal(err)
	}
	runningG := busy(t, s)
	runningR := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "runc"}).ID
	s.kill9()
	reboot(t, dataDir, []string{paused, runningG, runningR})

	s = startServer(t, dataDir)
	for _, id := range []string{runningG, runningR} {
		sb, err := s.c.GetSandbox(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if sb.State != "failed" || !strings.Contains(sb.Reason, "lost") {
			t.Fatalf("a sandbox that was running before the reboot is %s (%q), want failed saying it was lost", sb.State, sb.Reason)
		}
		clean(t, s, id)
	}
	sb, _ := s.c.GetSandbox(ctx, paused)
	if sb.State != "paused" {
		t.Fatalf("the paused sandbox is %s after the reboot", sb.State)
	}
	intact(t, s, paused)
	if now := counter(t, s, paused); now < before {
		t.Fatalf("the counter went back from %d to %d", before, now)
	}
}
