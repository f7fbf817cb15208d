package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/warrenhq/warren/internal/failpoint"
	"github.com/warrenhq/warren/internal/overlay"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// BootFork is the boot path of a sandbox forked from another.
const BootFork = wire.BootFork

// maxFork bounds one fork call.
const maxFork = 16

// Fork copies a running gVisor sandbox into count new ones, each restored
// from one checkpoint of it — processes, memory and files — with its own
// copy-on-write files and network identity. The source is checkpointed
// and restored too, so every copy starts from the same instant.
func (m *Manager) Fork(ctx context.Context, org, id string, count int) ([]*wire.Sandbox, error) {
	if count < 1 || count > maxFork {
		return nil, badRequest("count", "count must be between 1 and %d, got %d", maxFork, count)
	}
	row, err := m.row(ctx, org, id)
	if err != nil {
		return nil, err
	}
	if row.State == StatePaused {
		if _, err := m.Resume(ctx, org, id); err != nil {
			return nil, err
		}
		row.State = StateRunning
	}
	if row.State != StateRunning {
		return nil, conflict("sandbox %s is %s, not running", id, row.State)
	}
	rt, cp, err := m.checkpointerFor(row, "fork")
	if err != nil {
		return nil, err
	}
	var src spec
	_ = json.Unmarshal(row.Spec, &src)
	if len(src.Secrets)+len(src.SecretFiles) > 0 {
		return nil, conflict("sandbox %s holds secrets; forking would copy them, so it is refused", id)
	}
	if len(src.Volumes) > 0 {
		return nil, conflict("sandbox %s mounts volumes, which a copy could not share; it cannot be forked", id)
	}
	// Checked again, atomically, as each copy is recorded; this spares
	// the source a checkpoint when the copies cannot all fit.
	if err := m.cfg.Store.Admits(ctx, row.Org, store.Demand{Sandboxes: count, CPU: float64(count) * row.CPU,
		MemoryMB: count * row.MemoryMB, DiskMB: count * row.DiskMB, Creates: count}); err != nil {
		return nil, err
	}
	release, err := m.claim(id)
	if err != nil {
		return nil, err
	}
	defer release()
	ctx = context.WithoutCancel(ctx)
	start := time.Now()
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	sp.Ports = nil // a fork starts with nothing exposed

	// Checkpoint the source; it is restored below like the copies.
	if err := m.checkpoint(ctx, row, rt, cp, StateForking, "fork"); err != nil {
		return nil, err
	}
	failpoint.Hit("fork.checkpointed")
	// The copies stay creating until the whole fork is done: a crash
	// before then leaves them for the reconciler to end, all or nothing.
	var copies []*forkCopy
	var firstErr error
	for i := 0; i < count; i++ {
		c, err := m.forkOne(ctx, row, &sp, rt, cp, start)
		if err != nil {
			firstErr = err
			break
		}
		copies = append(copies, c)
		failpoint.Hit("fork.copy-restored")
	}
	// Bring the source back whatever happened to the copies. If it cannot
	// come back, it stays paused with its checkpoint, to resume later.
	if err := m.bringBack(ctx, row, rt, cp, "restore after fork", map[string]int64{}); err != nil {
		m.keepPaused(ctx, row, rt, StateForking, "restore after fork failed: "+err.Error())
		firstErr = errors.Join(firstErr, err)
	} else if _, err := m.cfg.Store.Transition(ctx, id, []string{StateForking}, StateRunning, store.Change{}); err != nil {
		firstErr = errors.Join(firstErr, err)
	}
	failpoint.Hit("fork.source-back")
	var out []*wire.Sandbox
	for _, c := range copies {
		if firstErr == nil {
			sb, err := c.finish(ctx)
			out = append(out, sb)
			firstErr = err
		}
	}
	if firstErr != nil {
		// All or nothing: the caller never learns the ids of partial copies.
		for _, c := range copies {
			c.abandon(ctx, "fork failed part way")
		}
		return nil, firstErr
	}
	return out, nil
}

// forkCopy is a restored copy waiting for its fork to finish.
type forkCopy struct {
	m      *Manager
	row    *store.Sandbox
	l      *live
	rt     runtime.Runtime
	change store.Change
	done   func() // clears the create-under-way mark
}

// finish records the copy running.
func (c *forkCopy) finish(ctx context.Context) (*wire.Sandbox, error) {
	defer c.done()
	c.m.goLive(c.l, c.row.Org)
	out, err := c.m.cfg.Store.Transition(ctx, c.row.ID, []string{StateCreating}, StateRunning, c.change)
	if err != nil {
		return nil, err
	}
	c.m.log.Info("sandbox forked", "sandbox.id", c.row.ID)
	return c.m.view(out), nil
}

// abandon ends a copy of a fork that failed.
func (c *forkCopy) abandon(ctx context.Context, reason string) {
	defer c.done()
	if r, err := c.m.cfg.Store.GetSandbox(ctx, "", c.row.ID); err == nil && r.State == StateRunning {
		_, _ = c.m.end(ctx, r, reason)
		return
	}
	c.m.teardown(ctx, c.row.ID, c.rt)
	_, _ = c.m.cfg.Store.Transition(ctx, c.row.ID, []string{StateCreating}, StateFailed, store.Change{Reason: &reason, Ended: true})
}

// forkOne restores one copy of a checkpointed sandbox, left creating.
func (m *Manager) forkOne(ctx context.Context, src *store.Sandbox, sp *spec, rt runtime.Runtime, cp runtime.Checkpointer, start time.Time) (*forkCopy, error) {
	specJSON, _ := json.Marshal(sp)
	now := time.Now().UTC()
	md := map[string]string{}
	for k, v := range src.Metadata {
		md[k] = v
	}
	row := &store.Sandbox{ID: newID(), Org: src.Org, State: StateCreating, Runtime: src.Runtime, Image: src.Image,
		Spec: specJSON, Metadata: md, CreatedAt: now, UpdatedAt: now, LastActiveAt: now,
		CPU: sp.Resources.CPU, MemoryMB: sp.Resources.MemoryMB, DiskMB: sp.Resources.DiskMB}
	done, err := m.beginCreate(ctx, row)
	if err != nil {
		return nil, err
	}
	l, err := m.bootFork(ctx, src, row.ID, sp, rt, cp)
	if err != nil {
		m.teardown(ctx, row.ID, rt)
		reason := "fork failed: " + err.Error()
		_, _ = m.cfg.Store.Transition(ctx, row.ID, []string{StateCreating}, StateFailed, store.Change{Reason: &reason, Ended: true})
		done()
		return nil, fmt.Errorf("fork %s: %w", src.ID, err)
	}
	boot := BootFork
	change := store.Change{BootPath: &boot, Timings: map[string]int64{"total_ms": time.Since(start).Milliseconds()}}
	if sp.TimeoutSeconds > 0 {
		exp := time.Now().Add(time.Duration(sp.TimeoutSeconds) * time.Second).UTC()
		change.ExpiresAt, l.expiresAt = &exp, exp
	}
	return &forkCopy{m: m, row: row, l: l, rt: rt, change: change, done: done}, nil
}

// bootFork gives a copy its own files (a copy of the source's writable
// layer on the same image), network and socket, and restores the
// checkpoint into it.
func (m *Manager) bootFork(ctx context.Context, src *store.Sandbox, id string, sp *spec, rt runtime.Runtime, cp runtime.Checkpointer) (*live, error) {
	lower := m.cfg.Images.RootfsPath(src.Image)
	// A disk of the source's size, mounted before the copy lands on it.
	lay, err := m.mountFiles(ctx, id, "", sp, true, -1)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(lay.Dir, 0o700); err != nil {
		return nil, err
	}
	// The copy's agent is the source's, restored: it greets with the
	// source's token.
	if tok, err := m.agentToken(src.ID); err != nil {
		return nil, err
	} else if tok != "" {
		if err := os.WriteFile(m.tokenFile(id), []byte(tok), 0o600); err != nil {
			return nil, fmt.Errorf("record agent token: %w", err)
		}
	}
	// cp -a keeps what an overlay upper layer is made of: whiteout
	// devices, opaque-directory xattrs, owners and modes.
	if out, err := exec.CommandContext(ctx, "cp", "-a", m.layout(src.ID).Upper(), lay.Upper()).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("copy files: %v: %s", err, out)
	}
	if err := overlay.Mount(lower, lay); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(m.runDir(id), 0o700); err != nil {
		return nil, err
	}
	netns, err := m.setupNetwork(id, lay, sp, -1)
	if err != nil {
		return nil, err
	}
	return m.restoreInto(ctx, id, rt, cp, sp, m.runtimeSpec(id, lay, netns, sp), m.checkpointDir(src.ID), map[string]int64{})
}
