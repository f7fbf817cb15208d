package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

func counter(t *testing.T, s *server, id string) int {
	t.Helper()
	res := s.exec(t, id, client.ExecRequest{Cmd: "cat /tmp/counter"})
	n, err := strconv.Atoi(strings.TrimSpace(res.Stdout))
	if err != nil {
		t.Fatalf("counter: %q %q", res.Stdout, res.Stderr)
	}
	return n
}

// TestPauseResume checks a paused gVisor sandbox keeps a running process
// and a few hundred files, frees its processes while paused, survives a
// warren restart, and wakes on use.
func TestPauseResume(t *testing.T) {
	dataDir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dataDir) })
	s := startServer(t, dataDir)
	ctx := context.Background()
	sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "gvisor"})
	s.exec(t, sb.ID, client.ExecRequest{Cmd: "(i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done) >/dev/null 2>&1 &"})
	s.exec(t, sb.ID, client.ExecRequest{Cmd: "mkdir /data && for i in $(seq 300); do echo file-$i > /data/f$i; done"})
	// 48 MB in the sandbox's memory (a tmpfs is its kernel's memory): a
	// restore returns before such pages are loaded, and warren removes
	// the checkpoint's files right after; they must arrive intact.
	sum := s.exec(t, sb.ID, client.ExecRequest{Cmd: "mkdir -p /dev/shm && head -c 48000000 /dev/urandom > /dev/shm/blob && md5sum /dev/shm/blob"})
	if sum.ExitCode != 0 || len(sum.Stdout) < 32 {
		t.Fatalf("memory blob: %+v", sum)
	}
	time.Sleep(300 * time.Millisecond)
	before := counter(t, s, sb.ID)

	paused, err := s.c.Pause(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if paused.State != "paused" {
		t.Fatalf("after pause: %+v", paused)
	}
	for _, tr := range traces(t, s, sb.ID) {
		if strings.HasPrefix(tr, "process") {
			t.Fatalf("a paused sandbox still runs: %s", tr)
		}
	}
	time.Sleep(500 * time.Millisecond)
	resumed, err := s.c.Resume(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	if resumed.State != "running" || resumed.Timings["resume_ms"] == 0 || resumed.Timings["runtime_restore_ms"] == 0 {
		t.Fatalf("after resume: %+v", resumed)
	}
	// The parts add up to no more than the whole.
	if tm := resumed.Timings; tm["network_ms"]+tm["runtime_restore_ms"]+tm["agent_ms"] > tm["resume_ms"] {
		t.Fatalf("resume timings: %v", tm)
	}
	after := counter(t, s, sb.ID)
	// The loop went on from where it was, not from zero, and the half
	// second of pause did not count.
	if after < before || after > before+8 {
		t.Fatalf("counter %d before pause, %d right after resume", before, after)
	}
	time.Sleep(300 * time.Millisecond)
	if later := counter(t, s, sb.ID); later <= after {
		t.Fatalf("the process stopped after resume: %d then %d", after, later)
	}
	res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "ls /data | wc -l; cat /data/f150"})
	if res.Stdout != "300\nfile-150\n" {
		t.Fatalf("files after resume: %q", res.Stdout)
	}
	if again := s.exec(t, sb.ID, client.ExecRequest{Cmd: "md5sum /dev/shm/blob"}); again.Stdout != sum.Stdout {
		t.Fatalf("memory after resume: %q, before pause: %q", again.Stdout, sum.Stdout)
	}

	// Paused across a warren crash, then woken by an exec.
	if _, err := s.c.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	mark := counter(t, s, sb.ID)                     // wakes it...
	if _, err := s.c.Pause(ctx, sb.ID); err != nil { // ...so pause again
		t.Fatal(err)
	}
	s.kill9()
	s2 := startServer(t, dataDir)
	got, err := s2.c.GetSandbox(ctx, sb.ID)
	if err != nil || got.State != "paused" {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	if n := counter(t, s2, sb.ID); n < mark {
		t.Fatalf("counter went back after restart: %d < %d", n, mark)
	}
	if got, _ := s2.c.GetSandbox(ctx, sb.ID); got.State != "running" {
		t.Fatalf("exec did not wake the sandbox: %s", got.State)
	}
	res = s2.exec(t, sb.ID, client.ExecRequest{Cmd: "ls /data | wc -l"})
	if res.Stdout != "300\n" {
		t.Fatalf("files after restart and resume: %q", res.Stdout)
	}

	// runc cannot checkpoint here: a clear 409.
	rc := s2.create(t, client.CreateRequest{Image: "busybox", Runtime: "runc"})
	if _, err := s2.c.Pause(ctx, rc.ID); !isAPIError(err, 409) || !strings.Contains(err.Error(), "CRIU") {
		t.Fatalf("pausing runc: %v, want 409 with the reason", err)
	}
	if r := s2.exec(t, rc.ID, client.ExecRequest{Cmd: "echo still"}); r.Stdout != "still\n" {
		t.Fatalf("runc sandbox after a refused pause: %+v", r)
	}

	// idle_action pause: idles into paused, wakes on use.
	idle := int64(2)
	ib := s2.create(t, client.CreateRequest{Image: "busybox", Runtime: "gvisor", IdleTimeoutSeconds: &idle, IdleAction: "pause"})
	eventually(t, 20*time.Second, "idle sandbox pauses", func() error {
		got, err := s2.c.GetSandbox(ctx, ib.ID)
		if err != nil || got.State != "paused" {
			return fmt.Errorf("%+v %v", got, err)
		}
		return nil
	})
	if r := s2.exec(t, ib.ID, client.ExecRequest{Cmd: "echo awake"}); r.Stdout != "awake\n" {
		t.Fatalf("paused-by-idle sandbox on exec: %+v", r)
	}
	if status, body := s2.raw(t, "POST", "/v1/sandboxes", s2.key, `{"runtime":"runc","idle_timeout_seconds":5,"idle_action":"pause"}`); status != 400 || field(body) != "idle_action" {
		t.Fatalf("idle_action pause on runc: %d %v", status, body)
	}
	// A preview visit wakes a paused sandbox too.
	s2.exec(t, sb.ID, client.ExecRequest{Cmd: "httpd -p 8080 -h /data"})
	if _, err := s2.c.ExposePort(ctx, sb.ID, 8080); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.c.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get(t, s2.url+"/preview/"+sb.ID+"/8080/f7", "", s2.key); code != 200 || body != "file-7\n" {
		t.Fatalf("preview of a paused sandbox: %d %q", code, body)
	}
	// Deleting a paused sandbox frees everything, checkpoint included.
	if _, err := s2.c.Pause(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.c.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if tr := traces(t, s2, sb.ID); len(tr) > 0 {
		t.Fatalf("deleted paused sandbox left:\n%s", strings.Join(tr, "\n"))
	}
}
