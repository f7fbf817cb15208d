package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/store"
)

// StatePaused: memory, processes and files are saved; nothing runs.
const StatePaused = "paused"

func (m *Manager) checkpointDir(id string) string {
	return filepath.Join(m.sandboxDir(id), "checkpoint")
}

// claim marks a sandbox as being changed by one operation (pause, resume,
// delete) so two never overlap.
func (m *Manager) claim(id string) (release func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ending[id] {
		return nil, conflict("sandbox %s is busy; try again", id)
	}
	m.ending[id] = true
	return func() {
		m.mu.Lock()
		delete(m.ending, id)
		m.mu.Unlock()
	}, nil
}

// checkpointer returns a runtime's checkpoint support, or why it has none.
func checkpointer(rt runtime.Runtime) (runtime.Checkpointer, error) {
	cp, ok := rt.(runtime.Checkpointer)
	if !ok {
		return nil, runtime.ErrNoCheckpoint
	}
	return cp, cp.CanCheckpoint()
}

// checkpointerFor is a sandbox's runtime and its checkpoint support, or
// the API's 409 saying why op (pause, resume, fork) cannot be done.
func (m *Manager) checkpointerFor(row *store.Sandbox, op string) (runtime.Runtime, runtime.Checkpointer, error) {
	rt := m.cfg.Runtimes[row.Runtime]
	cp, err := checkpointer(rt)
	if err != nil {
		return nil, nil, &Error{Kind: KindConflict, Message: fmt.Sprintf("cannot %s %s: %v", op, row.ID, err), Err: err}
	}
	return rt, cp, nil
}

// Pause saves a running sandbox's memory, processes and files and stops
// it. Nothing of it runs until Resume; its files and network stay.
func (m *Manager) Pause(ctx context.Context, org, id string) (*Sandbox, error) {
	row, err := m.row(ctx, org, id)
	if err != nil {
		return nil, err
	}
	if row.State == StatePaused {
		return m.view(row), nil
	}
	if row.State != StateRunning {
		return nil, conflict("sandbox %s is %s, not running", id, row.State)
	}
	rt, cp, err := m.checkpointerFor(row, "pause")
	if err != nil {
		return nil, err
	}
	release, err := m.claim(id)
	if err != nil {
		return nil, err
	}
	defer release()
	ctx = context.WithoutCancel(ctx)
	start := time.Now()
	// Let go of the agent first: its connection drops at the checkpoint
	// and must not read as a dead sandbox.
	m.detach(id)
	dir := m.checkpointDir(id)
	_ = os.RemoveAll(dir)
	if err := cp.Checkpoint(ctx, id, dir); err != nil {
		m.failRow(ctx, row, rt, "pause failed: "+err.Error())
		return nil, fmt.Errorf("pause sandbox %s: %w", id, err)
	}
	out, err := m.cfg.Store.Transition(ctx, id, []string{StateRunning}, StatePaused, store.Change{})
	if err != nil {
		return nil, err
	}
	v := m.view(out)
	v.Timings = map[string]int64{"pause_ms": time.Since(start).Milliseconds()}
	m.log.Info("sandbox paused", "sandbox.id", id, "pause_ms", v.Timings["pause_ms"])
	return v, nil
}

// Resume restores a paused sandbox: its processes continue where they
// were, with every file it had.
func (m *Manager) Resume(ctx context.Context, org, id string) (*Sandbox, error) {
	row, err := m.row(ctx, org, id)
	if err != nil {
		return nil, err
	}
	if row.State == StateRunning {
		return m.view(row), nil
	}
	if row.State != StatePaused {
		return nil, conflict("sandbox %s is %s, not paused", id, row.State)
	}
	rt, cp, err := m.checkpointerFor(row, "resume")
	if err != nil {
		return nil, err
	}
	release, err := m.claim(id)
	if err != nil {
		return nil, err
	}
	defer release()
	ctx = context.WithoutCancel(ctx)
	start := time.Now()
	phases := map[string]int64{}
	if err := m.bringBack(ctx, row, rt, cp, "resume", phases); err != nil {
		return nil, err
	}
	out, err := m.cfg.Store.Transition(ctx, id, []string{StatePaused}, StateRunning, store.Change{})
	if err != nil {
		return nil, err
	}
	phases["resume_ms"] = time.Since(start).Milliseconds()
	m.log.Info("sandbox resumed", "sandbox.id", id, "resume_ms", phases["resume_ms"])
	v := m.view(out)
	v.Timings = phases
	return v, nil
}

// bringBack restores a checkpointed sandbox and takes it live again,
// recording its steps' times in phases; if it cannot, the sandbox is failed
// with the reason.
func (m *Manager) bringBack(ctx context.Context, row *store.Sandbox, rt runtime.Runtime, cp runtime.Checkpointer, during string, phases map[string]int64) error {
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	l, err := m.restore(ctx, row.ID, rt, cp, &sp, phases)
	if err != nil {
		m.failRow(ctx, row, rt, during+" failed: "+err.Error())
		return fmt.Errorf("%s sandbox %s: %w", during, row.ID, err)
	}
	l.expiresAt = row.ExpiresAt
	m.goLive(l, row.Org)
	return nil
}

func (m *Manager) restore(ctx context.Context, id string, rt runtime.Runtime, cp runtime.Checkpointer, sp *spec, phases map[string]int64) (*live, error) {
	var netns string
	if sp.Network != nil {
		start := time.Now()
		if err := m.cfg.Network.Rewire(id); err != nil {
			return nil, fmt.Errorf("rewire network: %w", err)
		}
		phases["network_ms"] = time.Since(start).Milliseconds()
		netns = network.NSPath(id)
	}
	l, err := m.restoreInto(ctx, id, rt, cp, sp, m.runtimeSpec(id, m.layout(id), netns, sp), m.checkpointDir(id), phases)
	if err != nil {
		return nil, err
	}
	_ = os.RemoveAll(m.checkpointDir(id))
	return l, nil
}

// restoreInto restores a checkpoint from dir as sandbox id and waits for
// its agent to dial in.
func (m *Manager) restoreInto(ctx context.Context, id string, rt runtime.Runtime, cp runtime.Checkpointer, sp *spec, rs runtime.Spec, dir string, phases map[string]int64) (*live, error) {
	agent, err := m.listenAgent(id)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	l := newLive(id, rt, agent, sp, start)
	err = cp.Restore(ctx, rs, dir)
	if err == nil {
		phases["runtime_restore_ms"] = time.Since(start).Milliseconds()
		start = time.Now()
		err = m.waitAgent(ctx, l)
		phases["agent_ms"] = time.Since(start).Milliseconds()
	}
	if err != nil {
		agent.Close()
		return nil, err
	}
	return l, nil
}
