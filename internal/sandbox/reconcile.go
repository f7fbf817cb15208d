package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/warrenhq/warren/internal/overlay"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/store"
)

// How often the background loops run.
const (
	deadlineEvery  = time.Second
	reconcileEvery = 15 * time.Second
	flushIdleEvery = 30 * time.Second
	// reattachWait bounds how long a surviving sandbox's agent may take to
	// dial a restarted warren.
	reattachWait = 10 * time.Second
)

// Reconcile makes the store and the host agree. At start-up it adopts the
// sandboxes that survived a restart, fails the creates a crash
// interrupted, finishes deletes, and frees whatever no row accounts for:
// runtime containers, cgroups, mounts and sandbox directories.
func (m *Manager) Reconcile(ctx context.Context) error {
	rows, err := m.cfg.Store.ListSandboxes(ctx, store.Filter{States: []string{StateCreating, StateRunning, StatePaused, StatePooled, StateDeleting,
		StatePausing, StateResuming, StateForking}, Node: m.cfg.Node})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	keep := map[string]bool{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, row := range rows {
		m.mu.Lock()
		inFlight := m.creating[row.ID] || m.ending[row.ID]
		_, isLive := m.live[row.ID]
		m.mu.Unlock()
		keep[row.ID] = true
		if inFlight {
			continue
		}
		rt := m.cfg.Runtimes[row.Runtime]
		switch row.State {
		case StatePooled:
			if !isLive {
				// A pool of a previous run: nobody can claim it now.
				m.removePooled(ctx, row)
				mu.Lock()
				delete(keep, row.ID)
				mu.Unlock()
			}
		case StatePaused:
			// Nothing runs; its files, network and checkpoint are kept.
		case StatePausing, StateForking, StateResuming:
			// A pause, fork or resume that a crash interrupted: finish
			// it or roll it back, never throwing files away.
			wg.Add(1)
			go func(row *store.Sandbox) {
				defer wg.Done()
				if !m.settle(ctx, row, rt) {
					mu.Lock()
					delete(keep, row.ID)
					mu.Unlock()
				}
			}(row)
		case StateCreating:
			m.failRow(ctx, row, rt, "create interrupted: warren stopped before the sandbox was ready")
		case StateDeleting:
			if _, err := m.end(ctx, row, "deleted by request"); err != nil {
				m.log.Error("reconcile: finish delete", "sandbox.id", row.ID, "err", err)
			}
		case StateRunning:
			if isLive {
				m.checkLive(ctx, row, rt)
				continue
			}
			wg.Add(1)
			go func(row *store.Sandbox) {
				defer wg.Done()
				if err := m.reattach(ctx, row, rt); err != nil {
					reason := "lost after restart: " + err.Error()
					if m.cfg.HostRestarted {
						reason = "lost: the host restarted, and a running sandbox's processes do not survive that (a paused one does)"
					}
					m.failRow(ctx, row, rt, reason)
					mu.Lock()
					delete(keep, row.ID)
					mu.Unlock()
				}
			}(row)
		}
	}
	wg.Wait()
	m.dropEnded(ctx, keep)
	m.cfg.HostRestarted = false
	m.SweepVolumes(ctx)
	m.sweep(ctx, func(id string) bool {
		mu.Lock()
		kept := keep[id]
		mu.Unlock()
		// Asked at the moment of each removal, not from a snapshot: a
		// create that began while this pass ran is not an orphan. Its id
		// is registered before it builds anything on the host.
		m.mu.Lock()
		defer m.mu.Unlock()
		return kept || m.creating[id] || m.live[id] != nil || m.ending[id]
	})
	return nil
}

// dropEnded lets go of live sandboxes whose rows ended without this node:
// in a cluster, the sandboxes of a node that was forgotten while it was
// away. The sweep that follows removes what they still hold.
func (m *Manager) dropEnded(ctx context.Context, listed map[string]bool) {
	m.mu.Lock()
	var ids []string
	for id := range m.live {
		if !listed[id] && !m.creating[id] && !m.ending[id] {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	for _, id := range ids {
		row, err := m.cfg.Store.GetSandbox(ctx, "", id)
		if err == nil && (row.State == StateFailed || row.State == StateDeleted) {
			m.log.Warn("reconcile: a sandbox ended while this node was away; removing it", "sandbox.id", id, "reason", row.Reason)
			m.detach(id)
		}
	}
}

// settle decides what a sandbox left pausing, forking or resuming by a
// crash is now, and reports whether it still exists. If its runtime still
// runs it (the checkpoint never began, or the restore finished), it is
// taken back as running. Otherwise, if a checkpoint was saved (the
// sandbox only stops after a complete one), it is paused. Only a sandbox
// that neither runs nor was saved is lost.
func (m *Manager) settle(ctx context.Context, row *store.Sandbox, rt runtime.Runtime) bool {
	if rt == nil {
		m.failRow(ctx, row, rt, fmt.Sprintf("runtime %s is not available on this node", row.Runtime))
		return false
	}
	// A checkpoint the crashed warren started may still be writing.
	waitForRuntimeCommand(ctx, row.ID, "checkpoint", 2*time.Minute)
	st, err := rt.Status(ctx, row.ID)
	if err != nil {
		m.log.Error("reconcile: runtime state", "sandbox.id", row.ID, "err", err)
		return true // ask again on the next pass
	}
	if st == runtime.StatusRunning {
		if err := m.reattach(ctx, row, rt); err == nil {
			if _, err := m.cfg.Store.Transition(ctx, row.ID, []string{row.State}, StateRunning, store.Change{Unchecked: true}); err == nil {
				_ = os.RemoveAll(m.checkpointDir(row.ID))
				m.log.Info("reconcile: interrupted "+row.State+" rolled back; the sandbox runs", "sandbox.id", row.ID)
				return true
			}
			m.detach(row.ID)
		}
		_ = rt.Stop(ctx, row.ID)
	}
	if hasCheckpoint(m.checkpointDir(row.ID)) {
		_ = rt.Stop(ctx, row.ID)
		reason := "interrupted while " + row.State + "; paused with what was saved"
		if _, err := m.cfg.Store.Transition(ctx, row.ID, []string{row.State}, StatePaused, store.Change{Reason: &reason, Unchecked: true}); err == nil {
			m.log.Warn("reconcile: interrupted "+row.State+"; the sandbox is paused", "sandbox.id", row.ID)
			return true
		}
	}
	m.failRow(ctx, row, rt, "lost: warren stopped while the sandbox was "+row.State+" and no checkpoint was saved")
	return false
}

// hasCheckpoint says whether dir holds a saved checkpoint.
func hasCheckpoint(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) > 0
}

// waitForRuntimeCommand waits, up to limit, while a runtime command (a
// checkpoint a crashed warren started) still runs for a sandbox.
func waitForRuntimeCommand(ctx context.Context, id, sub string, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if !runtimeCommandRuns(id, sub) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// runtimeCommandRuns looks for a process whose arguments include both the
// subcommand and the sandbox id.
func runtimeCommandRuns(id, sub string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		hasID, hasSub := false, false
		for _, a := range args {
			hasID = hasID || a == id
			hasSub = hasSub || a == sub
		}
		if hasID && hasSub {
			return true
		}
	}
	return false
}

// failRow records why a sandbox failed and tears it down. The guarded
// transition comes first: if the row moved on meanwhile (a create that
// finished while a reconcile pass looked at an old copy), nothing is torn
// down.
func (m *Manager) failRow(ctx context.Context, row *store.Sandbox, rt runtime.Runtime, reason string) {
	reason = redact(reason)
	_, err := m.cfg.Store.Transition(ctx, row.ID, []string{row.State}, StateFailed, store.Change{Reason: &reason, Ended: true})
	if errors.Is(err, store.ErrConflict) {
		return
	}
	if err != nil {
		m.log.Error("record failure", "sandbox.id", row.ID, "err", err)
		return
	}
	m.log.Warn("sandbox failed", "sandbox.id", row.ID, "reason", reason)
	if err := m.teardown(ctx, row.ID, rt); err != nil {
		m.log.Error("tear down failed sandbox", "sandbox.id", row.ID, "err", err)
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	m.releaseVolumes(ctx, &sp)
}

// checkLive fails a sandbox whose agent has gone and whose runtime says it
// is no longer running (its init crashed, the OOM killer took it).
// It reports whether the question is settled (connected, or failed).
func (m *Manager) checkLive(ctx context.Context, row *store.Sandbox, rt runtime.Runtime) bool {
	m.mu.Lock()
	l := m.live[row.ID]
	m.mu.Unlock()
	if l == nil || l.agent.Connected() {
		return true
	}
	st, err := rt.Status(ctx, row.ID)
	if err != nil || st == runtime.StatusRunning {
		return false
	}
	reason := "sandbox exited unexpectedly" + m.initLogTail(row.ID)
	if oom, ok := rt.(runtime.OOMReporter); ok && oom.OOMKilled(row.ID) {
		var sp spec
		_ = json.Unmarshal(row.Spec, &sp)
		reason = fmt.Sprintf("out of memory: the sandbox exceeded memory_mb=%d and the kernel killed it", sp.Resources.MemoryMB)
	}
	m.failRow(ctx, row, rt, reason)
	return true
}

// agentLost returns the callback for a dropped agent connection: it checks
// at once whether the sandbox is still there, instead of waiting for the
// next reconcile, so callers learn of a dead sandbox in milliseconds.
func (m *Manager) agentLost(id string) func() {
	return func() {
		m.cfg.Metrics.AgentReconnect()
		// One check at a time per sandbox: an agent that connects and
		// drops in a loop must not become a storm of runtime calls.
		m.mu.Lock()
		if m.checking[id] {
			m.mu.Unlock()
			return
		}
		m.checking[id] = true
		m.mu.Unlock()
		go func() {
			defer func() {
				m.mu.Lock()
				delete(m.checking, id)
				m.mu.Unlock()
			}()
			ctx := context.Background()
			// The runtime may take a moment to notice its sandbox died.
			for _, wait := range []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond,
				400 * time.Millisecond, time.Second, 2 * time.Second, 3 * time.Second} {
				time.Sleep(wait)
				row, err := m.cfg.Store.GetSandbox(ctx, "", id)
				if err != nil || row.State != StateRunning {
					return
				}
				if m.checkLive(ctx, row, m.cfg.Runtimes[row.Runtime]) {
					return
				}
			}
		}()
	}
}

// reattach adopts a sandbox that kept running while warren was down: it
// listens on the sandbox's socket again and waits for the agent to dial.
func (m *Manager) reattach(ctx context.Context, row *store.Sandbox, rt runtime.Runtime) error {
	if rt == nil {
		return fmt.Errorf("runtime %s is not available on this node", row.Runtime)
	}
	st, err := rt.Status(ctx, row.ID)
	if err != nil {
		return fmt.Errorf("check runtime state: %w", err)
	}
	if st != runtime.StatusRunning {
		return fmt.Errorf("sandbox is %s", st)
	}
	// A warren that died mid-snapshot left the sandbox frozen.
	if f, ok := rt.(runtime.Freezer); ok {
		if err := f.Thaw(ctx, row.ID); err != nil {
			m.log.Warn("thaw an adopted sandbox", "sandbox.id", row.ID, "err", err)
		}
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	agent, err := m.listenAgent(row.ID, owner(userNS(rt, &sp)))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, reattachWait)
	defer cancel()
	if err := agent.WaitReady(wctx); err != nil {
		agent.Close()
		return fmt.Errorf("agent did not reconnect: %w", err)
	}
	last := row.LastActiveAt
	if last.IsZero() {
		last = time.Now()
	}
	// It may have booted with CPU to spare and warren stopped before it
	// was held to its own.
	if err := m.limitCPU(rt, row.ID, &sp); err != nil {
		agent.Close()
		return err
	}
	l := newLive(row.ID, rt, agent, &sp, last)
	l.expiresAt = row.ExpiresAt
	if _, err := m.applySecrets(ctx, l, row.Org, &sp); err != nil {
		// A secret deleted since: the sandbox runs on without it.
		m.log.Warn("open the secrets of an adopted sandbox", "sandbox.id", row.ID, "err", err)
	}
	m.guardMemory(l, &sp)
	m.goLive(l, row.Org)
	m.log.Info("reattached sandbox", "sandbox.id", row.ID)
	return nil
}

// sweep frees host resources that belong to no sandbox keep accepts.
func (m *Manager) sweep(ctx context.Context, keep func(id string) bool) {
	for name, rt := range m.cfg.Runtimes {
		ids, err := rt.List(ctx)
		if err != nil {
			m.log.Error("sweep: list runtime", "runtime", name, "err", err)
			continue
		}
		for _, id := range ids {
			if !keep(id) {
				m.log.Warn("sweep: stopping orphan", "runtime", name, "sandbox.id", id)
				if err := rt.Stop(ctx, id); err != nil {
					m.log.Error("sweep: stop orphan", "sandbox.id", id, "err", err)
				}
			}
		}
	}
	dir := filepath.Join(m.cfg.DataDir, "sandboxes")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if keep(e.Name()) {
			continue
		}
		m.log.Warn("sweep: removing orphan sandbox dir", "sandbox.id", e.Name())
		if err := m.teardown(ctx, e.Name(), nil); err != nil {
			m.log.Error("sweep: remove orphan dir", "sandbox.id", e.Name(), "err", err)
		}
	}
	if m.cfg.Network != nil {
		m.cfg.Network.Sweep(keep)
	}
	// Mounts whose directory went away first.
	points, _ := overlay.MountPoints(dir)
	for _, p := range points {
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			continue
		}
		id, _, _ := strings.Cut(rel, string(filepath.Separator))
		if !keep(id) {
			_ = overlay.UnmountAll(m.sandboxDir(id))
		}
	}
}

// Run drives deadlines, idle timeouts and periodic reconciliation until
// ctx ends.
func (m *Manager) Run(ctx context.Context) {
	deadlines := time.NewTicker(deadlineEvery)
	defer deadlines.Stop()
	reconcile := time.NewTicker(reconcileEvery)
	defer reconcile.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadlines.C:
			m.enforceDeadlines(ctx)
		case <-reconcile.C:
			if err := m.Reconcile(ctx); err != nil {
				m.log.Error("reconcile", "err", err)
			}
		}
	}
}

func (m *Manager) enforceDeadlines(ctx context.Context) {
	now := time.Now()
	m.mu.Lock()
	lives := make([]*live, 0, len(m.live))
	for _, l := range m.live {
		lives = append(lives, l)
	}
	m.mu.Unlock()
	for _, l := range lives {
		l.mu.Lock()
		last, streams := l.lastUse, l.streams
		expiresAt, idle, idlePause := l.expiresAt, l.idle, l.idlePause
		// Activity reaches the store now and then, not on every call, so a
		// restart keeps the idle clock roughly right at no cost per exec.
		flush := last.After(l.flushed) && now.Sub(l.flushed) > flushIdleEvery
		if flush {
			l.flushed = last
		}
		l.mu.Unlock()
		if flush {
			_ = m.cfg.Store.Touch(ctx, l.id, last)
		}
		var reason string
		switch {
		case !expiresAt.IsZero() && now.After(expiresAt):
			reason = "timeout: the sandbox reached its timeout_seconds"
		case idle > 0 && streams == 0 && now.Sub(last) > idle && idlePause:
			if _, err := m.Pause(ctx, "", l.id); err != nil {
				m.log.Error("pause idle sandbox", "sandbox.id", l.id, "err", err)
			}
			continue
		case idle > 0 && streams == 0 && now.Sub(last) > idle:
			reason = fmt.Sprintf("idle timeout: no activity for %s", idle)
		default:
			continue
		}
		row, err := m.cfg.Store.GetSandbox(ctx, "", l.id)
		if err != nil {
			continue
		}
		if _, err := m.end(ctx, row, reason); err != nil {
			m.log.Error("end sandbox at deadline", "sandbox.id", l.id, "err", err)
		}
	}
}

// Shutdown lets go of the sandboxes without stopping them: they keep
// running and a later warren adopts them.
func (m *Manager) Shutdown() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.live {
		l.mu.Lock()
		last := l.lastUse
		l.mu.Unlock()
		_ = m.cfg.Store.Touch(context.Background(), l.id, last)
		l.close()
	}
	for name, rt := range m.cfg.Runtimes {
		if c, ok := rt.(runtime.Closer); ok {
			if err := c.Close(); err != nil {
				m.log.Warn("close runtime", "runtime", name, "err", err)
			}
		}
	}
}
