package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/warrenhq/warren/internal/overlay"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/store"
)

// BootFork is the boot path of a sandbox forked from another.
const BootFork = "fork"

// maxFork bounds one fork call.
const maxFork = 16

// Fork copies a running gVisor sandbox into count new ones, each restored
// from one checkpoint of it — processes, memory and files — with its own
// copy-on-write files and network identity. The source is checkpointed
// and restored too, so every copy starts from the same instant.
func (m *Manager) Fork(ctx context.Context, org, id string, count int) ([]*Sandbox, error) {
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
	m.detach(id)
	if err := cp.Checkpoint(ctx, id, m.checkpointDir(id)); err != nil {
		m.failRow(ctx, row, rt, "fork failed: "+err.Error())
		return nil, fmt.Errorf("checkpoint %s for fork: %w", id, err)
	}
	var out []*Sandbox
	var firstErr error
	for i := 0; i < count; i++ {
		sb, err := m.forkOne(ctx, row, &sp, rt, cp, start)
		if err != nil {
			firstErr = err
			break
		}
		out = append(out, sb)
	}
	// Bring the source back whatever happened to the copies.
	if err := m.bringBack(ctx, row, rt, cp, "restore after fork", map[string]int64{}); err != nil {
		return out, err
	}
	if firstErr != nil {
		// All or nothing: the caller never learns the ids of partial copies.
		for _, sb := range out {
			if r, err := m.cfg.Store.GetSandbox(ctx, "", sb.ID); err == nil {
				_, _ = m.end(ctx, r, "fork failed part way")
			}
		}
		return nil, firstErr
	}
	return out, nil
}

// forkOne makes one copy of a checkpointed sandbox.
func (m *Manager) forkOne(ctx context.Context, src *store.Sandbox, sp *spec, rt runtime.Runtime, cp runtime.Checkpointer, start time.Time) (*Sandbox, error) {
	specJSON, _ := json.Marshal(sp)
	now := time.Now().UTC()
	md := map[string]string{}
	for k, v := range src.Metadata {
		md[k] = v
	}
	row := &store.Sandbox{ID: newID(), Org: src.Org, State: StateCreating, Runtime: src.Runtime, Image: src.Image,
		Spec: specJSON, Metadata: md, CreatedAt: now, UpdatedAt: now, LastActiveAt: now}
	done, err := m.beginCreate(ctx, row)
	if err != nil {
		return nil, err
	}
	defer done()
	l, err := m.bootFork(ctx, src, row.ID, sp, rt, cp)
	if err != nil {
		m.teardown(ctx, row.ID, rt)
		reason := "fork failed: " + err.Error()
		_, _ = m.cfg.Store.Transition(ctx, row.ID, []string{StateCreating}, StateFailed, store.Change{Reason: &reason, Ended: true})
		return nil, fmt.Errorf("fork %s: %w", src.ID, err)
	}
	boot := BootFork
	change := store.Change{BootPath: &boot, Timings: map[string]int64{"total_ms": time.Since(start).Milliseconds()}}
	if sp.TimeoutSeconds > 0 {
		exp := time.Now().Add(time.Duration(sp.TimeoutSeconds) * time.Second).UTC()
		change.ExpiresAt, l.expiresAt = &exp, exp
	}
	m.goLive(l, src.Org)
	out, err := m.cfg.Store.Transition(ctx, row.ID, []string{StateCreating}, StateRunning, change)
	if err != nil {
		m.teardown(ctx, row.ID, rt)
		return nil, err
	}
	m.log.Info("sandbox forked", "sandbox.id", row.ID, "from", src.ID)
	return m.view(out), nil
}

// bootFork gives a copy its own files (a copy of the source's writable
// layer on the same image), network and socket, and restores the
// checkpoint into it.
func (m *Manager) bootFork(ctx context.Context, src *store.Sandbox, id string, sp *spec, rt runtime.Runtime, cp runtime.Checkpointer) (*live, error) {
	lower := m.cfg.Images.RootfsPath(src.Image)
	lay := m.layout(id)
	if err := os.MkdirAll(lay.Dir, 0o755); err != nil {
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
	netns, err := m.setupNetwork(id, lay, sp)
	if err != nil {
		return nil, err
	}
	return m.restoreInto(ctx, id, rt, cp, sp, m.runtimeSpec(id, lay, netns, sp), m.checkpointDir(src.ID), map[string]int64{})
}
