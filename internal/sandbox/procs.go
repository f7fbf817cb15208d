package sandbox

import (
	"context"
	"time"

	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// Processes that outlive the request that started them (see guest's
// procs.go); they serve the E2B-compatible process service.

// ProcStream is a process's events; Close stops watching (the process
// goes on) and gives back the sandbox's operation slot.
type ProcStream struct {
	*guest.ProcStream
	release func()
}

// Close stops watching.
func (s *ProcStream) Close() error {
	err := s.ProcStream.Close()
	s.release()
	return err
}

// StartProcess starts a process in a sandbox with the sandbox's env and
// the image's working directory and user as defaults, and returns the
// stream of its events.
func (m *Manager) StartProcess(ctx context.Context, org, id string, req *guest.ProcStart) (*ProcStream, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, badRequest("cmd", "a process needs a command")
	}
	if err := validateExec(&wire.ExecRequest{Argv: req.Argv, Env: req.Env, Cwd: req.Cwd}); err != nil {
		return nil, err
	}
	return m.procStream(ctx, org, id, func(l *live) (*guest.ProcStream, error) {
		r := *req
		r.Env = l.withEnv(req.Env)
		l.fill(&r.Cwd, &r.User)
		return l.agent.StartProc(ctx, &r)
	})
}

// ConnectProcess watches a running process's events from now on.
func (m *Manager) ConnectProcess(ctx context.Context, org, id string, pid int) (*ProcStream, error) {
	return m.procStream(ctx, org, id, func(l *live) (*guest.ProcStream, error) {
		return l.agent.ConnectProc(ctx, pid)
	})
}

func (m *Manager) procStream(ctx context.Context, org, id string, open func(*live) (*guest.ProcStream, error)) (*ProcStream, error) {
	s, release, err := openStream(ctx, m, org, id, open)
	if err != nil {
		return nil, err
	}
	return &ProcStream{ProcStream: s, release: release}, nil
}

// openStream opens a stream from a running sandbox's agent; release
// gives back the operation slot and the stream's hold on the sandbox.
func openStream[S any](ctx context.Context, m *Manager, org, id string, open func(*live) (S, error)) (s S, release func(), err error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return s, nil, err
	}
	s, err = open(l)
	if err != nil {
		done()
		return s, nil, m.callFailed(ctx, l, err)
	}
	return s, both(l.hold(), done), nil
}

// WatchStream is a directory's changes; Close stops watching and gives
// back the sandbox's operation slot.
type WatchStream struct {
	*guest.WatchStream
	release func()
}

// Close stops watching.
func (s *WatchStream) Close() error {
	err := s.WatchStream.Close()
	s.release()
	return err
}

// WatchDir streams the changes under a directory of a sandbox.
func (m *Manager) WatchDir(ctx context.Context, org, id string, req guest.WatchRequest) (*WatchStream, error) {
	s, release, err := openStream(ctx, m, org, id, func(l *live) (*guest.WatchStream, error) { return l.agent.Watch(ctx, req) })
	if err != nil {
		return nil, err
	}
	return &WatchStream{WatchStream: s, release: release}, nil
}

// CreateWatcher starts a watcher in a sandbox that keeps a directory's
// changes until they are read.
func (m *Manager) CreateWatcher(ctx context.Context, org, id string, req guest.WatchRequest) (wid string, err error) {
	err = m.withAgent(ctx, org, id, func(a *guest.Client) error {
		wid, err = a.CreateWatcher(ctx, req)
		return err
	})
	return wid, err
}

// WatcherEvents takes the changes a watcher has seen since the last call.
func (m *Manager) WatcherEvents(ctx context.Context, org, id, wid string) (evs []guest.WatchEvent, err error) {
	err = m.withAgent(ctx, org, id, func(a *guest.Client) error {
		evs, err = a.WatcherEvents(ctx, wid)
		return err
	})
	return evs, err
}

// RemoveWatcher stops a watcher.
func (m *Manager) RemoveWatcher(ctx context.Context, org, id, wid string) error {
	return m.withAgent(ctx, org, id, func(a *guest.Client) error { return a.RemoveWatcher(ctx, wid) })
}

// withAgent runs one call to a running sandbox's agent.
func (m *Manager) withAgent(ctx context.Context, org, id string, call func(*guest.Client) error) error {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return err
	}
	defer done()
	return m.callFailed(ctx, l, call(l.agent))
}

// Processes lists a sandbox's running processes.
func (m *Manager) Processes(ctx context.Context, org, id string) (out []guest.ProcInfo, err error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	out, err = l.agent.Procs(ctx)
	for i := range out {
		out[i].Env = l.hideSecretEnv(out[i].Env)
	}
	return out, m.callFailed(ctx, l, err)
}

// ProcessInput writes to a process's stdin or terminal.
func (m *Manager) ProcessInput(ctx context.Context, org, id string, pid int, data []byte) error {
	return m.withAgent(ctx, org, id, func(a *guest.Client) error { return a.ProcInput(ctx, pid, data) })
}

// CloseProcessStdin ends a process's input.
func (m *Manager) CloseProcessStdin(ctx context.Context, org, id string, pid int) error {
	return m.withAgent(ctx, org, id, func(a *guest.Client) error { return a.ProcCloseStdin(ctx, pid) })
}

// SignalProcess signals a process and everything in its group.
func (m *Manager) SignalProcess(ctx context.Context, org, id string, pid, signal int) error {
	return m.withAgent(ctx, org, id, func(a *guest.Client) error { return a.ProcSignal(ctx, pid, signal) })
}

// ResizeProcess resizes a process's terminal.
func (m *Manager) ResizeProcess(ctx context.Context, org, id string, pid int, size guest.TermSize) error {
	return m.withAgent(ctx, org, id, func(a *guest.Client) error { return a.ProcResize(ctx, pid, size) })
}

// MoveFile renames a path in a sandbox.
func (m *Manager) MoveFile(ctx context.Context, org, id, from, to string) (fi *wire.FileInfo, err error) {
	err = m.withAgent(ctx, org, id, func(a *guest.Client) error {
		fi, err = a.Move(ctx, from, to)
		return err
	})
	return fi, err
}

// SetTimeout makes a running or paused sandbox end seconds from now (0:
// never), whatever its timeout was.
func (m *Manager) SetTimeout(ctx context.Context, org, id string, seconds int64) (*wire.Sandbox, error) {
	if seconds < 0 {
		return nil, badRequest("timeout_seconds", "timeout_seconds must not be negative")
	}
	row, err := m.row(ctx, org, id)
	if err != nil {
		return nil, err
	}
	if row.State != StateRunning && row.State != StatePaused {
		return nil, gone(row)
	}
	var exp time.Time
	if seconds > 0 {
		exp = time.Now().Add(time.Duration(seconds) * time.Second).UTC()
	}
	if err := m.lifetimeAllows(ctx, row, exp); err != nil {
		return nil, err
	}
	row, err = m.cfg.Store.Transition(ctx, id, []string{row.State}, row.State, store.Change{ExpiresAt: &exp})
	if err != nil {
		return nil, conflict("sandbox %s changed state while its timeout was set; try again", id)
	}
	m.mu.Lock()
	if l := m.live[id]; l != nil {
		l.mu.Lock()
		l.expiresAt = exp
		l.mu.Unlock()
	}
	m.mu.Unlock()
	return m.view(row), nil
}

// StateOf returns a sandbox's state, without asking its agent anything.
func (m *Manager) StateOf(ctx context.Context, org, id string) (wire.State, error) {
	row, err := m.row(ctx, org, id)
	if err != nil {
		return "", err
	}
	return wire.State(row.State), nil
}
