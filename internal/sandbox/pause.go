package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/warrenhq/warren/internal/failpoint"
	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// States of pausing and resuming. The in-between states are recorded
// before the work starts, so a crash at any step leaves a row the
// reconciler can finish or roll back without losing a file.
const (
	// StatePaused: memory, processes and files are saved; nothing runs.
	StatePaused = string(wire.StatePaused)
	// StatePausing: a checkpoint is being taken.
	StatePausing = string(wire.StatePausing)
	// StateResuming: a checkpoint is being restored.
	StateResuming = string(wire.StateResuming)
	// StateForking: a checkpoint is being taken to fork from.
	StateForking = string(wire.StateForking)
)

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
func (m *Manager) Pause(ctx context.Context, org, id string) (*wire.Sandbox, error) {
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
	if m.holdsPlainSecrets(ctx, row) {
		return nil, conflict("sandbox %s holds the value of a secret; pausing would write it to disk with its memory, so it is refused (secrets with allowed_hosts do not stop a pause)", id)
	}
	release, err := m.claim(id)
	if err != nil {
		return nil, err
	}
	defer release()
	ctx = context.WithoutCancel(ctx)
	start := time.Now()
	if err := m.checkpoint(ctx, row, rt, cp, StatePausing, "pause"); err != nil {
		return nil, err
	}
	failpoint.Hit("pause.checkpointed")
	out, err := m.cfg.Store.Transition(ctx, id, []string{StatePausing}, StatePaused, store.Change{})
	if err != nil {
		return nil, err
	}
	v := m.view(out)
	v.Timings = map[string]int64{"pause_ms": time.Since(start).Milliseconds()}
	v.CheckpointBytes = dirSize(m.checkpointDir(id))
	m.log.Info("sandbox paused", "sandbox.id", id, "pause_ms", v.Timings["pause_ms"])
	return v, nil
}

// checkpoint records the sandbox as going through state (pausing or
// forking), lets go of its agent and saves it into its checkpoint
// directory; the runtime stops it. If the checkpoint fails while the
// sandbox still runs, it is taken back as it was.
func (m *Manager) checkpoint(ctx context.Context, row *store.Sandbox, rt runtime.Runtime, cp runtime.Checkpointer, state, op string) error {
	id := row.ID
	if _, err := m.cfg.Store.Transition(ctx, id, []string{StateRunning}, state, store.Change{}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return conflict("sandbox %s changed state; try again", id)
		}
		return err
	}
	failpoint.Hit(op + "." + state)
	// Its connection drops at the checkpoint and must not read as a dead
	// sandbox.
	m.detach(id)
	dir := m.checkpointDir(id)
	_ = os.RemoveAll(dir)
	err := cp.Checkpoint(ctx, id, dir)
	if err == nil {
		return nil
	}
	row.State = state
	if st, serr := rt.Status(ctx, id); serr == nil && st == runtime.StatusRunning {
		_ = os.RemoveAll(dir)
		if rerr := m.reattach(ctx, row, rt); rerr == nil {
			if _, terr := m.cfg.Store.Transition(ctx, id, []string{state}, StateRunning, store.Change{}); terr == nil {
				return fmt.Errorf("%s sandbox %s: %w (it keeps running)", op, id, err)
			}
		}
	}
	m.failRow(ctx, row, rt, op+" failed: "+err.Error())
	return fmt.Errorf("%s sandbox %s: %w", op, id, err)
}

// Resume restores a paused sandbox: its processes continue where they
// were, with every file it had.
func (m *Manager) Resume(ctx context.Context, org, id string) (*wire.Sandbox, error) {
	start := time.Now()
	sb, err := m.resume(ctx, org, id)
	m.countRefusal(err)
	m.cfg.Metrics.Resumed(outcome(err), time.Since(start))
	return sb, err
}

func (m *Manager) resume(ctx context.Context, org, id string) (*wire.Sandbox, error) {
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
	if _, err := m.cfg.Store.Transition(ctx, id, []string{StatePaused}, StateResuming, store.Change{}); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil, conflict("sandbox %s changed state; try again", id)
		}
		return nil, err
	}
	failpoint.Hit("resume.resuming")
	phases := map[string]int64{}
	if err := m.bringBack(ctx, row, rt, cp, "resume", phases); err != nil {
		m.keepPaused(ctx, row, rt, StateResuming, "resume failed: "+err.Error())
		return nil, fmt.Errorf("resume sandbox %s (it stays paused, with its files and checkpoint): %w", id, err)
	}
	failpoint.Hit("resume.before-running")
	out, err := m.cfg.Store.Transition(ctx, id, []string{StateResuming}, StateRunning, store.Change{})
	if err != nil {
		return nil, err
	}
	phases["resume_ms"] = time.Since(start).Milliseconds()
	m.log.Info("sandbox resumed", "sandbox.id", id, "resume_ms", phases["resume_ms"])
	v := m.view(out)
	v.Timings = phases
	return v, nil
}

// keepPaused puts a sandbox whose restore failed back in paused, with
// why: its files and checkpoint stay, and a later resume can try again.
func (m *Manager) keepPaused(ctx context.Context, row *store.Sandbox, rt runtime.Runtime, from, reason string) {
	m.detach(row.ID)
	if err := rt.Stop(ctx, row.ID); err != nil {
		m.log.Error("stop a sandbox whose restore failed", "sandbox.id", row.ID, "err", err)
	}
	if _, err := m.cfg.Store.Transition(ctx, row.ID, []string{from}, StatePaused, store.Change{Reason: &reason}); err != nil {
		m.log.Error("keep sandbox paused", "sandbox.id", row.ID, "err", err)
	}
	m.log.Warn("sandbox stays paused", "sandbox.id", row.ID, "reason", reason)
}

// bringBack restores a checkpointed sandbox and takes it live again,
// recording its steps' times in phases. On failure nothing of it runs;
// its files and checkpoint stay, and the caller decides what it becomes.
func (m *Manager) bringBack(ctx context.Context, row *store.Sandbox, rt runtime.Runtime, cp runtime.Checkpointer, during string, phases map[string]int64) error {
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	l, err := m.restore(ctx, row, rt, cp, &sp, phases)
	if err != nil {
		return fmt.Errorf("%s sandbox %s: %w", during, row.ID, err)
	}
	l.expiresAt = row.ExpiresAt
	if _, err := m.applySecrets(ctx, l, row.Org, &sp); err != nil {
		m.log.Warn("open the secrets of a restored sandbox", "sandbox.id", row.ID, "err", err)
	}
	m.goLive(l, row.Org)
	return nil
}

// restore brings a paused sandbox's host side back — its disk and
// overlay, its network namespace and links (all gone after the host
// restarts) — and restores its checkpoint into it.
func (m *Manager) restore(ctx context.Context, row *store.Sandbox, rt runtime.Runtime, cp runtime.Checkpointer, sp *spec, phases map[string]int64) (*live, error) {
	id := row.ID
	lay, err := m.mountFiles(ctx, id, m.cfg.Images.RootfsPath(row.Image), sp, false, -1)
	if err != nil {
		return nil, fmt.Errorf("mount its files: %w", err)
	}
	var netns string
	if sp.Network != nil {
		start := time.Now()
		if err := m.cfg.Network.Rewire(id); err != nil {
			return nil, fmt.Errorf("rewire network: %w", err)
		}
		phases["network_ms"] = time.Since(start).Milliseconds()
		netns = network.NSPath(id)
	}
	rs := m.runtimeSpec(id, lay, netns, sp)
	vols, err := m.volumeMounts(sp, nil) // only gVisor restores; it has no user namespace
	if err != nil {
		return nil, err
	}
	rs.Mounts = append(rs.Mounts, vols...)
	l, err := m.restoreInto(ctx, id, rt, cp, sp, rs, m.checkpointDir(id), phases)
	if err != nil {
		return nil, err
	}
	failpoint.Hit("resume.restored")
	_ = os.RemoveAll(m.checkpointDir(id))
	return l, nil
}

// restoreInto restores a checkpoint from dir as sandbox id and waits for
// its agent to dial in.
func (m *Manager) restoreInto(ctx context.Context, id string, rt runtime.Runtime, cp runtime.Checkpointer, sp *spec, rs runtime.Spec, dir string, phases map[string]int64) (*live, error) {
	agent, err := m.listenAgent(id, -1) // only gVisor checkpoints; it has no user namespace
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
	if err == nil {
		err = m.limitCPU(rt, id, sp)
	}
	if err != nil {
		agent.Close()
		return nil, err
	}
	m.guardMemory(l, sp)
	return l, nil
}

// dirSize adds up the sizes of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
