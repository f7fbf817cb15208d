package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/warrenhq/warren/wire"
	"golang.org/x/sys/unix"
)

// defaultPath is used when neither the request nor the agent has PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// command builds the process for a request. Each command gets its own
// process group so a timeout or kill ends everything it started.
func command(req *wire.ExecRequest) (*exec.Cmd, error) {
	var argv []string
	switch {
	case len(req.Argv) > 0 && req.Cmd != "":
		return nil, fmt.Errorf("%w: give argv or cmd, not both", errBadRequest)
	case len(req.Argv) > 0:
		argv = req.Argv
	case req.Cmd != "":
		argv = []string{"/bin/sh", "-c", req.Cmd}
	default:
		return nil, fmt.Errorf("%w: argv or cmd is required", errBadRequest)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	env := req.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if req.User != "" && req.User != "root" && req.User != "0" {
		a, err := lookupUser(req.User)
		if err != nil {
			return nil, err
		}
		cmd.SysProcAttr.Credential = a.credential()
		if _, set := env["HOME"]; !set {
			env = maps.Clone(env)
			if env == nil {
				env = map[string]string{}
			}
			env["HOME"] = a.home
		}
	}
	cmd.Env = environ(env)
	if req.Cwd != "" {
		cmd.Dir = req.Cwd
	} else {
		cmd.Dir = "/"
	}
	cmd.WaitDelay = lingerForOutput
	return cmd, nil
}

func environ(extra map[string]string) []string {
	env := map[string]string{"PATH": defaultPath, "HOME": "/root", "LANG": "C.UTF-8"}
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// NprocEnv carries the sandbox's process limit to the agent, which applies
// it to every process it starts (RLIMIT_NPROC) but not to itself.
const NprocEnv = "WARREN_NPROC"

var nprocLimit = func() uint64 {
	n, _ := strconv.ParseUint(os.Getenv(NprocEnv), 10, 64)
	return n
}()

// NprocExecEnv, when set, has every process the agent starts go through
// the agent binary first ("nproc-exec"), which sets RLIMIT_NPROC and
// then execs the command: the limit is in place before the command's
// first instruction. Without it the limit is applied just after the
// start, and a fork bomb can fork in between with no limit (runc, where
// a full pids cgroup would leave the agent, PID 1, without threads). It
// costs an exec per process, which gVisor, whose kernel keeps its own
// headroom, does not pay.
const NprocExecEnv = "WARREN_NPROC_EXEC"

var nprocExec = os.Getenv(NprocExecEnv) != ""

// limitBeforeExec routes cmd through "nproc-exec" (see NprocExecEnv) and
// says whether it did.
func limitBeforeExec(cmd *exec.Cmd) bool {
	if nprocLimit == 0 || !nprocExec || cmd.Err != nil {
		return false
	}
	prefix := selfPrefix()
	args := append(slices.Clip(prefix), "nproc-exec", strconv.FormatUint(nprocLimit, 10), cmd.Path)
	cmd.Args = append(args, cmd.Args...)
	cmd.Path = prefix[0]
	return true
}

// selfPrefix is the argv that starts the agent binary again: itself, or
// the loader a dynamically linked agent runs through. Looked up once.
var selfPrefix = sync.OnceValue(func() []string {
	if exe, _ := os.Readlink("/proc/self/exe"); exe == LoaderPath {
		return []string{LoaderPath, "--library-path", LibDir, AgentPath}
	}
	return []string{AgentPath}
})

// RunNprocExec is "nproc-exec N PATH ARGV...": RLIMIT_NPROC N, then exec.
func RunNprocExec(args []string) int {
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: nproc-exec N PATH ARGV0 [ARG...]")
		return 127
	}
	n, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nproc-exec:", err)
		return 127
	}
	if err := unix.Setrlimit(unix.RLIMIT_NPROC, &unix.Rlimit{Cur: n, Max: n}); err != nil {
		fmt.Fprintln(os.Stderr, "nproc-exec: set the process limit:", err)
		return 126
	}
	err = unix.Exec(args[1], args[2:], os.Environ())
	fmt.Fprintf(os.Stderr, "%s: %v\n", args[1], err)
	if errors.Is(err, unix.ENOENT) {
		return 127
	}
	return 126
}

// limitChild applies the sandbox's process limit to a started command;
// its children inherit it.
func limitChild(pid int) {
	if nprocLimit == 0 {
		return
	}
	lim := unix.Rlimit{Cur: nprocLimit, Max: nprocLimit}
	_ = unix.Prlimit(pid, unix.RLIMIT_NPROC, &lim, nil)
}

// killGroup ends the command and everything in its process group. A
// fork bomb can add members while the signal lands, so it keeps sweeping
// the group until it is empty (or a few seconds pass).
func killGroup(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if syscall.Kill(-pgid, syscall.SIGKILL) == syscall.ESRCH {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
}

// exitCode maps a finished process to a shell-style exit code.
func exitCode(err error) (int, error) {
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		// ErrWaitDelay means the process exited 0 but left its output
		// pipes open in a background child.
		return 0, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	return -1, err
}

// startError turns a failure to start into the code a shell would give.
func startError(err error) (int, string) {
	msg := err.Error()
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return 127, msg + "\n"
	}
	return 126, msg + "\n"
}

// cappedBuffer keeps at most max bytes and remembers whether it dropped any.
type cappedBuffer struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	room := c.max - c.buf.Len()
	if room < len(p) {
		c.truncated = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

// handleExec runs a command to completion, answering with NDJSON frames
// as its output arrives: stdout and stderr (at most MaxCapturedOutput of
// each), then exit with the duration and whether output was dropped.
// Streaming keeps the agent from holding the output and lets the host
// bound what it reads.
func (a *Agent) handleExec(w http.ResponseWriter, r *http.Request) {
	var req wire.ExecRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "decode exec request: "+err.Error())
		return
	}
	cmd, err := command(&req)
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	w.Header().Set("Content-Type", NDJSON)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	var mu sync.Mutex
	sent := map[string]int{}
	truncated := false
	send := func(f wire.Frame) {
		mu.Lock()
		defer mu.Unlock()
		if f.Type == "stdout" || f.Type == "stderr" {
			room := MaxCapturedOutput - sent[f.Type]
			if len(f.Data) > room {
				truncated = true
				f.Data = f.Data[:max(room, 0)]
			}
			if f.Data == "" {
				return
			}
			sent[f.Type] += len(f.Data)
		}
		_ = enc.Encode(f)
		if flusher != nil {
			flusher.Flush()
		}
	}
	start := time.Now()
	code, timedOut, oom, err := a.streamCommand(r.Context(), cmd, &req, send, func(stdin io.WriteCloser) {
		if req.Stdin != "" {
			_, _ = io.WriteString(stdin, req.Stdin)
		}
		_ = stdin.Close()
	})
	if err != nil {
		send(wire.Frame{Type: "error", Message: err.Error()})
		return
	}
	mu.Lock()
	cut := truncated
	mu.Unlock()
	send(wire.Frame{Type: "exit", ExitCode: &code, TimedOut: timedOut, OOMKilled: oom, Truncated: cut, DurationMs: time.Since(start).Milliseconds()})
}

// streamCommand starts cmd with its output sent as frames, hands its
// stdin to withStdin, and waits for it to end (or its timeout, or ctx).
// It returns the shell-style exit code, and whether a process of the
// command was killed because the sandbox ran out of memory; a command
// that cannot start answers 127 or 126 with the reason on stderr.
func (a *Agent) streamCommand(ctx context.Context, cmd *exec.Cmd, req *wire.ExecRequest, send func(wire.Frame), withStdin func(io.WriteCloser)) (code int, timedOut, oom bool, err error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, false, false, err
	}
	var pumps sync.WaitGroup
	var writers []*io.PipeWriter
	for _, s := range []struct {
		name string
		dst  *io.Writer
	}{{"stdout", &cmd.Stdout}, {"stderr", &cmd.Stderr}} {
		pr, pw := io.Pipe()
		*s.dst = pw
		writers = append(writers, pw)
		pumps.Add(1)
		go func(name string) {
			defer pumps.Done()
			pumpFrames(pr, name, send)
		}(s.name)
	}
	closeWriters := func() {
		for _, w := range writers {
			w.Close()
		}
	}
	mark := a.memory.mark()
	if err := children.start(cmd, cmd.Start); err != nil {
		closeWriters()
		pumps.Wait()
		code, msg := startError(err)
		send(wire.Frame{Type: "stderr", Data: msg})
		return code, false, false, nil
	}
	withStdin(stdin)
	timedOut, waitErr := waitWithDeadline(ctx, cmd, req.TimeoutSeconds)
	code, err = exitCode(waitErr)
	// cmd.Wait has closed the pipes' write ends it owned; close ours so the
	// pumps drain and finish before the exit frame.
	closeWriters()
	pumps.Wait()
	if err != nil {
		return 0, false, false, err
	}
	oom = a.memory.lostToOOM(mark, cmd.Process.Pid, code)
	if timedOut {
		code = 124
	}
	return code, timedOut, oom, nil
}

func runToCompletion(ctx context.Context, req *wire.ExecRequest) (*wire.ExecResult, error) {
	cmd, err := command(req)
	if err != nil {
		return nil, err
	}
	stdout := &cappedBuffer{max: MaxCapturedOutput}
	stderr := &cappedBuffer{max: MaxCapturedOutput}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if req.Stdin != "" {
		cmd.Stdin = strings.NewReader(req.Stdin)
	}
	start := time.Now()
	if err := children.start(cmd, cmd.Start); err != nil {
		code, msg := startError(err)
		return &wire.ExecResult{ExitCode: code, Stderr: msg}, nil
	}
	timedOut, waitErr := waitWithDeadline(ctx, cmd, req.TimeoutSeconds)
	code, err := exitCode(waitErr)
	if err != nil {
		return nil, fmt.Errorf("wait for command: %w", err)
	}
	if timedOut {
		code = 124
	}
	return &wire.ExecResult{
		ExitCode:   code,
		Stdout:     stdout.buf.String(),
		Stderr:     stderr.buf.String(),
		TimedOut:   timedOut,
		Truncated:  stdout.truncated || stderr.truncated,
		DurationMs: time.Since(start).Milliseconds(),
	}, nil
}

// lingerForOutput bounds how long a finished command's output pipes may stay
// open, held by something it left running in the background.
const lingerForOutput = 250 * time.Millisecond

// waitWithDeadline waits for a started command, killing its process group
// when the timeout passes or ctx ends. It reports Wait's error and whether
// the timeout fired.
func waitWithDeadline(ctx context.Context, cmd *exec.Cmd, timeoutSeconds float64) (timedOut bool, err error) {
	var deadline <-chan time.Time
	if timeoutSeconds > 0 {
		t := time.NewTimer(time.Duration(timeoutSeconds * float64(time.Second)))
		defer t.Stop()
		deadline = t.C
	}
	done := make(chan error, 1)
	go func() { done <- children.wait(cmd) }()
	select {
	case err := <-done:
		return false, err
	case <-deadline:
		killGroup(cmd)
		return true, <-done
	case <-ctx.Done():
		killGroup(cmd)
		return false, <-done
	}
}

func (a *Agent) handleExecStream(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(MaxCapturedOutput)
	ctx := r.Context()
	var req wire.ExecRequest
	if err := wsjson.Read(ctx, conn, &req); err != nil {
		conn.Close(websocket.StatusPolicyViolation, "first message must be the exec request")
		return
	}
	var mu sync.Mutex
	send := func(f wire.Frame) {
		mu.Lock()
		defer mu.Unlock()
		_ = wsjson.Write(ctx, conn, f)
	}
	cmd, err := command(&req)
	if err != nil {
		send(wire.Frame{Type: "error", Message: err.Error()})
		conn.Close(websocket.StatusNormalClosure, "")
		return
	}
	code, timedOut, oom, err := a.streamCommand(ctx, cmd, &req, send, func(stdin io.WriteCloser) {
		if req.Stdin != "" {
			_, _ = io.WriteString(stdin, req.Stdin)
		}
		go func() {
			for {
				var f wire.Frame
				if err := wsjson.Read(ctx, conn, &f); err != nil {
					return
				}
				switch f.Type {
				case "stdin":
					_, _ = io.WriteString(stdin, f.Data)
				case "stdin_close":
					_ = stdin.Close()
				case "kill":
					killGroup(cmd)
					return
				}
			}
		}()
	})
	if err != nil {
		send(wire.Frame{Type: "error", Message: err.Error()})
	}
	send(wire.Frame{Type: "exit", ExitCode: &code, TimedOut: timedOut, OOMKilled: oom})
	conn.Close(websocket.StatusNormalClosure, "")
}

// frameBuffers are the pumps' read buffers, reused across commands.
var frameBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// pumpFrames sends what r produces as frames, never splitting a UTF-8
// sequence across two frames.
func pumpFrames(r io.Reader, stream string, send func(wire.Frame)) {
	bp := frameBuffers.Get().(*[]byte)
	defer frameBuffers.Put(bp)
	buf := *bp
	carry := 0
	for {
		n, err := r.Read(buf[carry:])
		n += carry
		cut := utf8Boundary(buf[:n])
		if err != nil {
			cut = n
		}
		if cut > 0 {
			send(wire.Frame{Type: stream, Data: string(buf[:cut])})
		}
		carry = copy(buf, buf[cut:n])
		if err != nil {
			return
		}
	}
}

// utf8Boundary returns the length of p without a trailing incomplete UTF-8
// sequence.
func utf8Boundary(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		c := p[i]
		if c < 0x80 {
			return len(p)
		}
		if c >= 0xC0 { // a leading byte: is its sequence complete?
			need := 2
			if c >= 0xE0 {
				need = 3
			}
			if c >= 0xF0 {
				need = 4
			}
			if len(p)-i < need {
				return i
			}
			return len(p)
		}
	}
	return len(p)
}
