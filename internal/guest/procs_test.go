package guest

import (
	"context"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
)

// collect reads a process stream to its end event.
func collect(t *testing.T, s *ProcStream) (out map[string]string, end *ProcEvent) {
	t.Helper()
	out = map[string]string{}
	for {
		ev, err := s.Next()
		if err != nil {
			t.Fatalf("stream ended without an end event: %v (so far %q)", err, out)
		}
		switch ev.Type {
		case ProcEnded:
			return out, ev
		case ProcStdout, ProcStderr, ProcPTY:
			out[ev.Type] += string(ev.Data)
		}
	}
}

func startProc(t *testing.T, c *Client, req *ProcStart) (*ProcStream, int) {
	t.Helper()
	s, err := c.StartProc(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := s.Next()
	if err != nil || ev.Type != ProcStarted {
		t.Fatalf("first event = %+v, %v; want start", ev, err)
	}
	return s, ev.PID
}

func TestProcRunsToTheEnd(t *testing.T) {
	c := startAgent(t)
	s, pid := startProc(t, c, &ProcStart{Argv: []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}})
	defer s.Close()
	if pid <= 0 {
		t.Fatalf("pid = %d", pid)
	}
	out, end := collect(t, s)
	if out[ProcStdout] != "out\n" || out[ProcStderr] != "err\n" || end.ExitCode != 3 || !end.Exited || end.Status != "exit status 3" {
		t.Fatalf("out=%q end=%+v", out, end)
	}
	// A command that cannot start ends the same way, with the shell's code.
	s2, _ := startProc(t, c, &ProcStart{Argv: []string{"/no/such/binary"}})
	defer s2.Close()
	out, end = collect(t, s2)
	if end.ExitCode != 127 || !strings.Contains(out[ProcStderr], "no such file") {
		t.Fatalf("missing binary: out=%q end=%+v", out, end)
	}
}

// A process outlives the stream that started it; another stream can
// watch it, write to it, and see it end; a signal ends its whole group.
func TestProcOutlivesItsStream(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	s, pid := startProc(t, c, &ProcStart{Argv: []string{"/bin/sh", "-c", "while read l; do echo got $l; done; echo eof"}, Stdin: true, Tag: "reader"})
	s.Close() // the caller leaves; the process stays

	procs, err := c.Procs(ctx)
	if err != nil || len(procs) != 1 || procs[0].PID != pid || procs[0].Tag != "reader" {
		t.Fatalf("procs = %+v, %v", procs, err)
	}
	w, err := c.ConnectProc(ctx, pid)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if ev, err := w.Next(); err != nil || ev.Type != ProcStarted || ev.PID != pid {
		t.Fatalf("connect's first event = %+v, %v", ev, err)
	}
	if err := c.ProcInput(ctx, pid, []byte("one\n")); err != nil {
		t.Fatal(err)
	}
	if ev, err := w.Next(); err != nil || string(ev.Data) != "got one\n" {
		t.Fatalf("after input: %+v, %v", ev, err)
	}
	if err := c.ProcCloseStdin(ctx, pid); err != nil {
		t.Fatal(err)
	}
	out, end := collect(t, w)
	if out[ProcStdout] != "eof\n" || end.ExitCode != 0 {
		t.Fatalf("after close: out=%q end=%+v", out, end)
	}
	// Gone once ended: the calls about it answer not found.
	var ae *AgentError
	if err := c.ProcInput(ctx, pid, []byte("x")); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("input to an ended process: %v", err)
	}
	if _, err := c.ConnectProc(ctx, pid); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("connect to an ended process: %v", err)
	}

	// SIGKILL reaches what the process started too.
	s3, pid3 := startProc(t, c, &ProcStart{Argv: []string{"/bin/sh", "-c", "sleep 100 & echo $!; wait"}})
	defer s3.Close()
	ev, err := s3.Next()
	if err != nil || ev.Type != ProcStdout {
		t.Fatalf("child pid: %+v %v", ev, err)
	}
	child := strings.TrimSpace(string(ev.Data))
	if err := c.ProcSignal(ctx, pid3, int(syscall.SIGKILL)); err != nil {
		t.Fatal(err)
	}
	_, end = collect(t, s3)
	if end.ExitCode != 137 || end.Exited || !strings.Contains(end.Status, "killed") {
		t.Fatalf("killed: %+v", end)
	}
	deadline := time.Now().Add(5 * time.Second)
	for exists("/proc/"+child) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if exists("/proc/" + child) {
		t.Fatalf("the killed process's child %s is still running", child)
	}
	if err := c.ProcSignal(ctx, pid3, 99); !errors.As(err, &ae) || (ae.Status != 404 && ae.Status != 400) {
		t.Fatalf("bad signal: %v", err)
	}
}

func exists(p string) bool {
	var st syscall.Stat_t
	return syscall.Stat(p, &st) == nil
}

func TestProcTerminal(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	s, pid := startProc(t, c, &ProcStart{Argv: []string{"/bin/sh"}, PTY: &TermSize{Cols: 80, Rows: 24}})
	defer s.Close()
	if err := c.ProcResize(ctx, pid, TermSize{Cols: 123, Rows: 45}); err != nil {
		t.Fatal(err)
	}
	if err := c.ProcInput(ctx, pid, []byte("stty size; exit 7\n")); err != nil {
		t.Fatal(err)
	}
	out, end := collect(t, s)
	if !strings.Contains(out[ProcPTY], "45 123") || end.ExitCode != 7 {
		t.Fatalf("terminal: out=%q end=%+v", out[ProcPTY], end)
	}
	if out[ProcStdout] != "" {
		t.Fatalf("a terminal's output came as stdout: %q", out[ProcStdout])
	}
}

// A stream that stops being read does not lose output for a reader that
// comes and goes, and a caller that leaves mid-output frees the process.
func TestProcSlowWatcherLeaves(t *testing.T) {
	c := startAgent(t)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.StartProc(ctx, &ProcStart{Argv: []string{"/bin/sh", "-c", "yes | head -c 50000000; echo done >&2"}})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := s.Next(); err != nil || ev.Type != ProcStarted {
		t.Fatalf("%+v %v", ev, err)
	}
	pid := 0
	procs, _ := c.Procs(context.Background())
	for _, p := range procs {
		pid = p.PID
	}
	cancel() // leave without reading the rest
	s.Close()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		procs, _ = c.Procs(context.Background())
		if len(procs) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("process %d still running after its only watcher left: %+v", pid, procs)
}

func TestProcStreamBounded(t *testing.T) {
	// A line longer than MaxFrame from a hostile agent is refused, not
	// buffered.
	long := strings.Repeat("a", MaxFrame+10)
	s := &ProcStream{body: io.NopCloser(strings.NewReader(`{"type":"stdout","data":"` + long + `"}` + "\n")), fr: NewFrameReader(strings.NewReader(`{"type":"stdout","data":"` + long + `"}` + "\n"))}
	if _, err := s.Next(); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("err = %v", err)
	}
}
