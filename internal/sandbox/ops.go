package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

var readFile = os.ReadFile

// MaxOperations bounds the agent calls (execs, streams, terminals, file
// transfers, log follows) one sandbox may have in flight; more answer
// 429. It bounds what one sandbox can make the host hold.
const MaxOperations = 32

// use returns the agent of a running sandbox of org, with one of its
// operation slots taken until done is called, recording the use for the
// idle timeout.
func (m *Manager) use(ctx context.Context, org, id string) (l *live, done func(), err error) {
	l, err = m.agentFor(ctx, org, id)
	if err != nil {
		return nil, nil, err
	}
	done, err = l.acquire()
	if err != nil {
		return nil, nil, err
	}
	return l, done, nil
}

// acquire takes one of the sandbox's operation slots.
func (l *live) acquire() (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ops >= MaxOperations {
		return nil, &Error{Kind: KindTooMany, Message: fmt.Sprintf("sandbox %s already has %d operations in progress; try again when some finish", l.id, MaxOperations)}
	}
	l.ops++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.ops--
			l.mu.Unlock()
		})
	}, nil
}

// agentFor returns the agent of a running sandbox of org, recording the
// use for the idle timeout.
func (m *Manager) agentFor(ctx context.Context, org, id string) (*live, error) {
	m.mu.Lock()
	l := m.live[id]
	m.mu.Unlock()
	if l != nil && org != "" && l.owner() != org {
		l = nil // not this org's: answered like a missing one below
	}
	// The hot path (exec, files on a running sandbox) ends here, without a
	// store read.
	if l == nil {
		row, err := m.row(ctx, org, id)
		if err != nil {
			return nil, err
		}
		switch row.State {
		case StateRunning, StatePausing, StateResuming, StateForking:
			return nil, conflict("sandbox %s is busy (%s); try again", id, row.State)
		}
		if row.State != StatePaused {
			return nil, gone(row)
		}
		// Using a paused sandbox wakes it.
		if _, err := m.Resume(ctx, org, id); err != nil {
			return nil, err
		}
		m.mu.Lock()
		l = m.live[id]
		m.mu.Unlock()
		if l == nil {
			return nil, conflict("sandbox %s did not come back from pause", id)
		}
	}
	l.touch()
	return l, nil
}

// withEnv merges the sandbox's env under a request's own.
func (l *live) withEnv(env map[string]string) map[string]string {
	l.mu.Lock()
	base := l.env
	l.mu.Unlock()
	if len(base) == 0 {
		return env
	}
	out := maps.Clone(base)
	maps.Copy(out, env)
	return out
}

// fill gives a command the image's working directory and user where it
// names none.
func (l *live) fill(cwd, user *string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if *cwd == "" {
		*cwd = l.workdir
	}
	if *user == "" {
		*user = l.user
	}
}

// Exec runs a command to completion in a sandbox.
func (m *Manager) Exec(ctx context.Context, org, id string, req *wire.ExecRequest) (*wire.ExecResult, error) {
	if err := validateExec(req); err != nil {
		return nil, err
	}
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	start := time.Now()
	r := *req
	r.Env = l.withEnv(req.Env)
	l.fill(&r.Cwd, &r.User)
	res, err := l.agent.Exec(ctx, &r)
	if err == nil {
		m.cfg.Metrics.Executed(time.Since(start))
	}
	return res, m.callFailed(ctx, l, err)
}

func validateExec(req *wire.ExecRequest) error {
	switch {
	case len(req.Argv) > 0 && req.Cmd != "":
		return badRequest("cmd", "give cmd or argv, not both")
	case len(req.Argv) == 0 && req.Cmd == "":
		return badRequest("cmd", "cmd or argv is required")
	case len(req.Argv) > 0 && req.Argv[0] == "":
		return badRequest("argv", "argv[0] must not be empty")
	case req.TimeoutSeconds < 0:
		return badRequest("timeout_seconds", "timeout_seconds must not be negative")
	case req.Cwd != "" && req.Cwd[0] != '/':
		return badRequest("cwd", "cwd %q must be absolute", req.Cwd)
	}
	for k := range req.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return badRequest("env", "env name %q is not valid", k)
		}
	}
	return nil
}

// ExecStream starts a streaming exec and returns the agent connection,
// the request already sent; the caller relays frames both ways.
// The sandbox counts as busy until release is called.
func (m *Manager) ExecStream(ctx context.Context, org, id string, req *wire.ExecRequest) (conn *websocket.Conn, release func(), err error) {
	if err := validateExec(req); err != nil {
		return nil, nil, err
	}
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, nil, err
	}
	conn, err = l.agent.ExecStream(ctx)
	if err != nil {
		done()
		return nil, nil, m.callFailed(ctx, l, err)
	}
	r := *req
	r.Env = l.withEnv(req.Env)
	l.fill(&r.Cwd, &r.User)
	if err := wsjson.Write(ctx, conn, &r); err != nil {
		done()
		conn.CloseNow()
		return nil, nil, fmt.Errorf("send exec request to agent: %w", err)
	}
	return conn, both(l.hold(), done), nil
}

// PTY opens a terminal in a sandbox. The sandbox counts as busy until
// release is called.
func (m *Manager) PTY(ctx context.Context, org, id string, cols, rows int, env map[string]string) (conn *websocket.Conn, release func(), err error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, nil, err
	}
	q := url.Values{}
	if cols > 0 && rows > 0 {
		q.Set("cols", strconv.Itoa(cols))
		q.Set("rows", strconv.Itoa(rows))
	}
	if e := l.withEnv(env); len(e) > 0 {
		b, _ := json.Marshal(e)
		q.Set("env", string(b))
	}
	conn, err = l.agent.PTY(ctx, q)
	if err != nil {
		done()
		return nil, nil, m.callFailed(ctx, l, err)
	}
	return conn, both(l.hold(), done), nil
}

// ReadFile streams a file out of a sandbox.
func (m *Manager) ReadFile(ctx context.Context, org, id, path string) (io.ReadCloser, int64, error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, 0, err
	}
	rc, n, err := l.agent.ReadFile(ctx, path)
	if err != nil {
		done()
		return nil, 0, m.callFailed(ctx, l, err)
	}
	return &closeHook{ReadCloser: rc, hook: done}, n, nil
}

// WriteFile streams r into a file in a sandbox.
func (m *Manager) WriteFile(ctx context.Context, org, id, path, mode string, r io.Reader) (*wire.FileInfo, error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	fi, err := l.agent.WriteFile(ctx, path, mode, r)
	return fi, m.callFailed(ctx, l, err)
}

// ReadArchive streams a directory of a sandbox as tar. The caller closes
// it.
func (m *Manager) ReadArchive(ctx context.Context, org, id, path string) (io.ReadCloser, error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	rc, err := l.agent.ReadArchive(ctx, path)
	if err != nil {
		done()
		return nil, m.callFailed(ctx, l, err)
	}
	return &closeHook{ReadCloser: rc, hook: done}, nil
}

// WriteArchive unpacks a tar stream into a directory of a sandbox.
func (m *Manager) WriteArchive(ctx context.Context, org, id, path string, r io.Reader) (*wire.FileInfo, error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	fi, err := l.agent.WriteArchive(ctx, path, r)
	return fi, m.callFailed(ctx, l, err)
}

// ListFiles lists a directory in a sandbox.
func (m *Manager) ListFiles(ctx context.Context, org, id, path string) (*wire.FileList, error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	out, err := l.agent.List(ctx, path)
	return out, m.callFailed(ctx, l, err)
}

// StatFile describes a path in a sandbox.
func (m *Manager) StatFile(ctx context.Context, org, id, path string) (*wire.FileInfo, error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	fi, err := l.agent.Stat(ctx, path)
	return fi, m.callFailed(ctx, l, err)
}

// Mkdir creates a directory in a sandbox.
func (m *Manager) Mkdir(ctx context.Context, org, id, path string) (*wire.FileInfo, error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	fi, err := l.agent.Mkdir(ctx, path)
	return fi, m.callFailed(ctx, l, err)
}

// RemoveFile removes a path in a sandbox.
func (m *Manager) RemoveFile(ctx context.Context, org, id, path string, recursive bool) error {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return err
	}
	defer done()
	return m.callFailed(ctx, l, l.agent.Remove(ctx, path, recursive))
}

// callFailed turns a failed call to a sandbox's agent into what the
// caller should hear. An agent that answered gets its answer mapped. A
// lost connection may mean the sandbox died (out of memory, a crash): the
// runtime is asked at once, and a dead sandbox is recorded failed and
// answered as a 409 with the reason, never a 500 or a wait.
func (m *Manager) callFailed(ctx context.Context, l *live, err error) error {
	if err == nil {
		return nil
	}
	var ae *guest.AgentError
	if errors.As(err, &ae) || ctx.Err() != nil {
		return agentError(err)
	}
	bg := context.WithoutCancel(ctx)
	for try := 0; try < 10; try++ {
		row, gerr := m.cfg.Store.GetSandbox(bg, "", l.id)
		if gerr != nil {
			break
		}
		if row.State != StateRunning {
			return gone(row)
		}
		// The runtime may take a moment to see its sandbox gone.
		if m.checkLive(bg, row, l.rt) && l.agent.Connected() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &Error{Kind: KindUnavailable, Message: "lost the connection to the sandbox's agent; try again: " + err.Error(), Err: err}
}

// gone is the answer for a sandbox that is no longer running.
func gone(row *store.Sandbox) error {
	if row.Reason != "" {
		return conflict("sandbox %s is not running: it is %s (%s)", row.ID, row.State, row.Reason)
	}
	return conflict("sandbox %s is %s, not running", row.ID, row.State)
}

// agentError turns the agent's answers into errors the API can classify.
func agentError(err error) error {
	var ae *guest.AgentError
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.Status {
	case 400:
		return &Error{Kind: KindBadRequest, Field: "path", Message: ae.Message}
	case 404:
		return &Error{Kind: KindNotFound, Message: ae.Message}
	case 409:
		return &Error{Kind: KindConflict, Message: ae.Message}
	case 403:
		return &Error{Kind: KindBadRequest, Field: "path", Message: ae.Message}
	case 507:
		return &Error{Kind: KindNoSpace, Message: "the sandbox's disk is full (resources.disk_mb): " + ae.Message}
	}
	return err
}

// SetNetwork changes a running sandbox's egress policy; it applies to new
// connections and lookups at once.
func (m *Manager) SetNetwork(ctx context.Context, org, id string, p *wire.NetworkPolicy) (*wire.Sandbox, error) {
	return m.updateSpec(ctx, org, id, func(sp *spec) error {
		if m.cfg.Network == nil || m.cfg.Network.Get(id) == nil {
			return conflict("sandbox %s has no network to configure", id)
		}
		pol, err := m.cfg.Network.SetPolicy(id, p)
		var fe *network.FieldError
		if errors.As(err, &fe) {
			return badRequest(strings.TrimPrefix(fe.Field, "network."), "%s", fe.Message)
		}
		if err != nil {
			return err
		}
		sp.Network = pol
		return nil
	})
}

// both returns a func that calls f and g once.
func both(f, g func()) func() {
	var once sync.Once
	return func() { once.Do(func() { f(); g() }) }
}

// closeHook runs hook once when the reader is closed.
type closeHook struct {
	io.ReadCloser
	hook func()
	once sync.Once
}

func (c *closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(c.hook)
	return err
}
