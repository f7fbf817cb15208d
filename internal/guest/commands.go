package guest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/warrenhq/warren/wire"
)

// logDir holds background commands' combined output inside the sandbox.
const logDir = Dir + "/logs"

var commandName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidCommandName reports whether name can name a background command.
func ValidCommandName(name string) bool { return commandName.MatchString(name) }

type background struct {
	mu   sync.Mutex
	cmds map[string]*bgCommand
}

type bgCommand struct {
	mu      sync.Mutex
	info    wire.Command
	changed chan struct{} // closed and replaced on every write and at exit
}

func (c *bgCommand) notify() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// notifyWriter appends to the log file and wakes followers.
type notifyWriter struct {
	f *os.File
	c *bgCommand
}

func (w notifyWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.c.notify()
	return n, err
}

func (a *Agent) bg() *background {
	a.bgOnce.Do(func() { a.background = &background{cmds: map[string]*bgCommand{}} })
	return a.background
}

func (a *Agent) handleStartCommand(w http.ResponseWriter, r *http.Request) {
	var req wire.CommandRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || !ValidCommandName(req.Name) || req.Cmd == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "a command needs a name (letters, digits, _ . -) and cmd")
		return
	}
	b := a.bg()
	b.mu.Lock()
	if old := b.cmds[req.Name]; old != nil {
		old.mu.Lock()
		running := old.info.State == wire.CommandRunning
		old.mu.Unlock()
		if running {
			b.mu.Unlock()
			writeError(w, http.StatusConflict, "conflict", fmt.Sprintf("command %s is already running", req.Name))
			return
		}
	}
	c := &bgCommand{changed: make(chan struct{})}
	b.cmds[req.Name] = c
	b.mu.Unlock()

	cmd, err := command(&wire.ExecRequest{Cmd: req.Cmd, Env: req.Env, Cwd: req.Cwd, User: req.User})
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	f, err := os.Create(filepath.Join(logDir, req.Name+".log"))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	cmd.Stdout = notifyWriter{f, c}
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = 0
	c.info = wire.Command{Name: req.Name, Cmd: req.Cmd, State: wire.CommandRunning, StartedAt: time.Now().UTC()}
	mark := a.memory.mark()
	if err := children.start(cmd, cmd.Start); err != nil {
		code, msg := startError(err)
		f.WriteString(msg)
		f.Close()
		now := time.Now().UTC()
		c.info.State, c.info.ExitCode, c.info.EndedAt = wire.CommandExited, &code, &now
		writeJSON(w, http.StatusOK, c.info)
		return
	}
	c.info.PID = cmd.Process.Pid
	go func() {
		code, _ := exitCode(children.wait(cmd))
		f.Close()
		now := time.Now().UTC()
		oom := a.memory.lostToOOM(mark, cmd.Process.Pid, code)
		c.mu.Lock()
		c.info.State, c.info.ExitCode, c.info.EndedAt, c.info.OOMKilled = wire.CommandExited, &code, &now, oom
		c.mu.Unlock()
		c.notify()
	}()
	writeJSON(w, http.StatusOK, c.info)
}

func (a *Agent) handleListCommands(w http.ResponseWriter, r *http.Request) {
	b := a.bg()
	b.mu.Lock()
	out := make([]wire.Command, 0, len(b.cmds))
	for _, c := range b.cmds {
		c.mu.Lock()
		out = append(out, c.info)
		c.mu.Unlock()
	}
	b.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	writeJSON(w, http.StatusOK, map[string]any{"commands": out})
}

// handleCommandLogs streams a command's output; with follow=true it keeps
// streaming until the command exits or the caller leaves.
func (a *Agent) handleCommandLogs(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	b := a.bg()
	b.mu.Lock()
	c := b.cmds[name]
	b.mu.Unlock()
	if c == nil {
		writeError(w, http.StatusNotFound, "not_found", "no command named "+name)
		return
	}
	f, err := os.Open(filepath.Join(logDir, name+".log"))
	if err != nil {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	defer f.Close()
	follow := r.URL.Query().Get("follow") == "true"
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	for {
		// Snapshot before copying: once a command has exited its log is
		// complete, and a write after the snapshot closes changed.
		c.mu.Lock()
		changed, running := c.changed, c.info.State == wire.CommandRunning
		c.mu.Unlock()
		if _, err := io.Copy(w, f); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		if !follow || !running {
			return
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		}
	}
}

func (a *Agent) handleReady(w http.ResponseWriter, r *http.Request) {
	var rc wire.ReadyCheck
	if err := json.NewDecoder(r.Body).Decode(&rc); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	timeout := time.Duration(rc.TimeoutSeconds * float64(time.Second))
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	var last string
	probe := func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		switch {
		case rc.HTTP != "":
			req, err := http.NewRequestWithContext(pctx, http.MethodGet, rc.HTTP, nil)
			if err != nil {
				last = err.Error()
				return false
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				last = err.Error()
				return false
			}
			resp.Body.Close()
			last = resp.Status
			return resp.StatusCode < 500
		case rc.TCP != "":
			c, err := (&net.Dialer{}).DialContext(pctx, "tcp", rc.TCP)
			if err != nil {
				last = err.Error()
				return false
			}
			c.Close()
			return true
		default:
			res, err := runToCompletion(pctx, &wire.ExecRequest{Cmd: rc.Command})
			if err != nil {
				last = err.Error()
				return false
			}
			last = fmt.Sprintf("exit %d: %s%s", res.ExitCode, res.Stdout, res.Stderr)
			return res.ExitCode == 0
		}
	}
	start := time.Now()
	for {
		if probe() {
			writeJSON(w, http.StatusOK, map[string]any{"ready": true, "elapsed_ms": time.Since(start).Milliseconds()})
			return
		}
		select {
		case <-ctx.Done():
			writeJSON(w, http.StatusOK, map[string]any{"ready": false, "elapsed_ms": time.Since(start).Milliseconds(), "last": last})
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
