package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/warrenhq/warren/wire"
)

// Processes are commands that outlive the request that started them: a
// caller watches one's output on a stream of events, may leave and come
// back (Connect), write to its stdin or terminal, resize the terminal and
// signal it. They back the E2B-compatible process service; warren's own
// API keeps its simpler exec and named commands.

// ProcStart is the body of POST /procs.
type ProcStart struct {
	Argv  []string          `json:"argv"`
	Env   map[string]string `json:"env,omitempty"`
	Cwd   string            `json:"cwd,omitempty"`
	User  string            `json:"user,omitempty"`
	Tag   string            `json:"tag,omitempty"`
	Stdin bool              `json:"stdin,omitempty"`
	// PTY, if set, runs the process on a terminal of that size; its
	// output then arrives as "pty" events and its input goes there too.
	PTY *TermSize `json:"pty,omitempty"`
}

// TermSize is a terminal's size.
type TermSize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// ProcInfo describes a running process.
type ProcInfo struct {
	PID  int               `json:"pid"`
	Tag  string            `json:"tag,omitempty"`
	Argv []string          `json:"argv"`
	Env  map[string]string `json:"env,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`
}

// ProcList is the answer to GET /procs.
type ProcList struct {
	Procs []ProcInfo `json:"procs"`
}

// Event types of a process's stream.
const (
	ProcStarted = "start"
	ProcStdout  = "stdout"
	ProcStderr  = "stderr"
	ProcPTY     = "pty"
	ProcEnded   = "end"
)

// ProcEvent is one NDJSON line of a process's stream: ProcStarted first,
// then output, then ProcEnded once it has exited and its output is in.
type ProcEvent struct {
	Type string `json:"type"`
	PID  int    `json:"pid,omitempty"`
	Data []byte `json:"data,omitempty"`
	// For ProcEnded: the shell-style exit code (128+n for signal n, -1 if
	// it could not be waited for), whether it exited by itself, the
	// status as a sentence, and why it could not start.
	ExitCode int    `json:"exit_code"`
	Exited   bool   `json:"exited,omitempty"`
	Status   string `json:"status,omitempty"`
	Error    string `json:"error,omitempty"`
}

// ProcInput is the body of POST /procs/{pid}/input: bytes for the
// process's terminal or stdin, whichever it has.
type ProcInput struct {
	Data []byte `json:"data"`
}

// ProcSignal is the body of POST /procs/{pid}/signal.
type ProcSignal struct {
	Signal int `json:"signal"`
}

// maxProcs bounds the processes one sandbox's agent tracks at once.
const maxProcs = 1024

type procTable struct {
	mu    sync.Mutex
	procs map[int]*proc
}

type proc struct {
	info  ProcInfo
	cmd   *exec.Cmd
	stdin io.WriteCloser // nil without stdin
	tty   *os.File       // nil without a terminal
	// ttyRead is closed when the terminal's output has all been read.
	ttyRead chan struct{}

	mu    sync.Mutex
	subs  map[*procSub]struct{}
	ended bool
}

// procSub is one caller watching a process. Output waits for every
// watcher to take it (as a pipe would), so a watcher that stops reading
// slows the process down rather than losing its output; a watcher that
// leaves stops counting at once.
type procSub struct {
	events chan ProcEvent
	gone   <-chan struct{}
}

func (a *Agent) procs() *procTable {
	a.procsOnce.Do(func() { a.procTable = &procTable{procs: map[int]*proc{}} })
	return a.procTable
}

func (t *procTable) get(r *http.Request) (*proc, error) {
	pid, err := strconv.Atoi(r.PathValue("pid"))
	if err != nil {
		return nil, fmt.Errorf("%w: pid %q is not a number", errBadRequest, r.PathValue("pid"))
	}
	t.mu.Lock()
	p := t.procs[pid]
	t.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("process %d: %w", pid, os.ErrNotExist)
	}
	return p, nil
}

// publish hands an event to every watcher.
func (p *proc) publish(ev ProcEvent) {
	p.mu.Lock()
	subs := make([]*procSub, 0, len(p.subs))
	for s := range p.subs {
		subs = append(subs, s)
	}
	p.mu.Unlock()
	for _, s := range subs {
		select {
		case s.events <- ev:
		case <-s.gone:
		}
	}
}

// subscribe adds a watcher, or fails if the process has ended.
func (p *proc) subscribe(gone <-chan struct{}) (*procSub, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return nil, false
	}
	s := &procSub{events: make(chan ProcEvent, 16), gone: gone}
	p.subs[s] = struct{}{}
	return s, true
}

func (p *proc) unsubscribe(s *procSub) {
	p.mu.Lock()
	delete(p.subs, s)
	p.mu.Unlock()
}

// outputWriter publishes what a process writes; exec's copier reuses its
// buffer, so the bytes are copied.
type outputWriter struct {
	p    *proc
	kind string
}

func (w outputWriter) Write(b []byte) (int, error) {
	w.p.publish(ProcEvent{Type: w.kind, Data: append([]byte(nil), b...)})
	return len(b), nil
}

// handleStartProc starts a process and streams its events until it ends
// or the caller leaves; leaving does not stop the process.
func (a *Agent) handleStartProc(w http.ResponseWriter, r *http.Request) {
	var req ProcStart
	if err := json.NewDecoder(io.LimitReader(r.Body, MaxAnswer)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "decode process request: "+err.Error())
		return
	}
	t := a.procs()
	t.mu.Lock()
	n := len(t.procs)
	t.mu.Unlock()
	if n >= maxProcs {
		writeError(w, http.StatusTooManyRequests, "too_many_requests", fmt.Sprintf("%d processes are running; end some first", n))
		return
	}
	cmd, err := command(&wire.ExecRequest{Argv: req.Argv, Env: req.Env, Cwd: req.Cwd, User: req.User})
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	p := &proc{cmd: cmd, subs: map[*procSub]struct{}{}, info: ProcInfo{Tag: req.Tag, Argv: req.Argv, Env: req.Env, Cwd: req.Cwd}}
	sub, _ := p.subscribe(r.Context().Done())
	defer p.unsubscribe(sub)

	if err := p.start(&req); err != nil {
		// The stream has the same shape as for a process that ran: the
		// reason on stderr, then the shell's exit code for it.
		code, msg := startError(err)
		w.Header().Set("Content-Type", NDJSON)
		enc := json.NewEncoder(w)
		_ = enc.Encode(ProcEvent{Type: ProcStarted})
		_ = enc.Encode(ProcEvent{Type: ProcStderr, Data: []byte(msg)})
		_ = enc.Encode(ProcEvent{Type: ProcEnded, ExitCode: code, Exited: true, Status: "not started", Error: msg})
		return
	}
	p.info.PID = cmd.Process.Pid
	t.mu.Lock()
	t.procs[p.info.PID] = p
	t.mu.Unlock()
	go a.reap(t, p)
	streamProc(w, r, p, sub)
}

// start starts the process, on a terminal or with pipes.
func (p *proc) start(req *ProcStart) error {
	cmd := p.cmd
	if req.PTY != nil {
		// A terminal's process leads a session of its own (which also
		// makes it a process group leader, for signals to the group).
		cmd.SysProcAttr.Setpgid = false
		if cmd.Env != nil && !hasEnv(cmd.Env, "TERM") {
			cmd.Env = append(cmd.Env, "TERM=xterm-256color")
		}
		size := &pty.Winsize{Cols: max(req.PTY.Cols, 1), Rows: max(req.PTY.Rows, 1)}
		var tty *os.File
		err := children.start(cmd, func() (err error) {
			tty, err = pty.StartWithSize(cmd, size)
			return err
		})
		if err != nil {
			return err
		}
		p.tty = tty
		p.ttyRead = make(chan struct{})
		go func() {
			defer close(p.ttyRead)
			buf := make([]byte, 32<<10)
			for {
				n, err := tty.Read(buf)
				if n > 0 {
					p.publish(ProcEvent{Type: ProcPTY, Data: append([]byte(nil), buf[:n]...)})
				}
				if err != nil {
					return
				}
			}
		}()
		return nil
	}
	cmd.Stdout = outputWriter{p, ProcStdout}
	cmd.Stderr = outputWriter{p, ProcStderr}
	if req.Stdin {
		in, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		p.stdin = in
	}
	return children.start(cmd, cmd.Start)
}

func hasEnv(env []string, name string) bool {
	for _, kv := range env {
		if len(kv) > len(name) && kv[:len(name)+1] == name+"=" {
			return true
		}
	}
	return false
}

// reap waits for the process, lets the last of its output through, tells
// every watcher how it ended and forgets it.
func (a *Agent) reap(t *procTable, p *proc) {
	err := children.wait(p.cmd)
	if p.tty != nil {
		// The terminal's reader ends on EIO once nothing holds the
		// terminal; a background child may, so don't wait long for that.
		select {
		case <-p.ttyRead:
		case <-time.After(lingerForOutput):
		}
		p.tty.Close()
	}
	ev := ProcEvent{Type: ProcEnded, Exited: true, Status: "exit status 0"}
	code, werr := exitCode(err)
	ev.ExitCode = code
	var ee *exec.ExitError
	switch {
	case werr != nil:
		ev.ExitCode, ev.Exited, ev.Status, ev.Error = -1, false, "unknown", werr.Error()
	case errors.As(err, &ee):
		ev.Status = ee.ProcessState.String()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			ev.Exited = false
		}
	}
	t.mu.Lock()
	delete(t.procs, p.info.PID)
	t.mu.Unlock()
	p.mu.Lock()
	p.ended = true
	p.mu.Unlock()
	p.publish(ev)
}

// streamProc writes a process's events as NDJSON until it ends or the
// caller leaves.
func streamProc(w http.ResponseWriter, r *http.Request, p *proc, sub *procSub) {
	w.Header().Set("Content-Type", NDJSON)
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(ev ProcEvent) bool {
		if enc.Encode(ev) != nil {
			return false
		}
		if flusher != nil {
			flusher.Flush()
		}
		return true
	}
	if !send(ProcEvent{Type: ProcStarted, PID: p.info.PID}) {
		return
	}
	for {
		select {
		case ev := <-sub.events:
			if !send(ev) || ev.Type == ProcEnded {
				return
			}
		case <-r.Context().Done():
			return
		}
	}
}

// handleConnectProc streams a running process's events from now on.
func (a *Agent) handleConnectProc(w http.ResponseWriter, r *http.Request) {
	p, err := a.procs().get(r)
	if err != nil {
		fsError(w, err)
		return
	}
	sub, ok := p.subscribe(r.Context().Done())
	if !ok {
		fsError(w, fmt.Errorf("process %d has ended: %w", p.info.PID, os.ErrNotExist))
		return
	}
	defer p.unsubscribe(sub)
	streamProc(w, r, p, sub)
}

func (a *Agent) handleListProcs(w http.ResponseWriter, r *http.Request) {
	t := a.procs()
	t.mu.Lock()
	out := make([]ProcInfo, 0, len(t.procs))
	for _, p := range t.procs {
		info := p.info
		info.Env = maps.Clone(info.Env)
		out = append(out, info)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	writeJSON(w, http.StatusOK, ProcList{Procs: out})
}

// procHandler serves a request about one running process.
func (a *Agent) procHandler(fn func(p *proc, body []byte) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := a.procs().get(r)
		if err == nil {
			var body []byte
			if body, err = io.ReadAll(io.LimitReader(r.Body, MaxAnswer)); err == nil {
				err = fn(p, body)
			}
		}
		if err != nil {
			fsError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func procInput(p *proc, body []byte) error {
	var in ProcInput
	if err := json.Unmarshal(body, &in); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	var err error
	switch {
	case p.tty != nil:
		_, err = p.tty.Write(in.Data)
	case p.stdin != nil:
		_, err = p.stdin.Write(in.Data)
	default:
		return fmt.Errorf("%w: process %d was started without stdin", errBadRequest, p.info.PID)
	}
	if err != nil {
		return fmt.Errorf("%w: write to process %d: %v", errBadRequest, p.info.PID, err)
	}
	return nil
}

func procCloseStdin(p *proc, _ []byte) error {
	switch {
	case p.stdin != nil:
		return p.stdin.Close()
	case p.tty != nil:
		// End of input on a terminal is its EOF character.
		_, err := p.tty.Write([]byte{4})
		return err
	}
	return fmt.Errorf("%w: process %d was started without stdin", errBadRequest, p.info.PID)
}

// procSignal signals the process's whole group, so what it started goes
// too.
func procSignal(p *proc, body []byte) error {
	var s ProcSignal
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if s.Signal < 1 || s.Signal > 64 {
		return fmt.Errorf("%w: signal %d is not a signal", errBadRequest, s.Signal)
	}
	if s.Signal == int(syscall.SIGKILL) {
		killGroup(p.cmd)
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.Signal(s.Signal)); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

func procResize(p *proc, body []byte) error {
	var s TermSize
	if err := json.Unmarshal(body, &s); err != nil {
		return fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if p.tty == nil {
		return fmt.Errorf("%w: process %d has no terminal", errBadRequest, p.info.PID)
	}
	if s.Cols == 0 || s.Rows == 0 {
		return fmt.Errorf("%w: a terminal needs at least one column and one row", errBadRequest)
	}
	return pty.Setsize(p.tty, &pty.Winsize{Cols: s.Cols, Rows: s.Rows})
}
