package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// StatePooled: booted and waiting in a warm pool; no org owns it yet.
const StatePooled = "pooled"

// BootHotPool is the boot path of a sandbox taken from a warm pool.
const BootHotPool = wire.BootPool

// PoolSpec asks for Size booted sandboxes of one image, in the node's
// default shape (runtime, resources, network policy).
type PoolSpec struct {
	Image string `json:"image"`
	Size  int    `json:"size"`
}

// ParsePools reads "busybox:6,base:2".
func ParsePools(s string) ([]PoolSpec, error) {
	var out []PoolSpec
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		img, n, ok := strings.Cut(part, ":")
		size, err := strconv.Atoi(n)
		if !ok || err != nil || size < 0 || img == "" {
			return nil, fmt.Errorf("pool %q: want IMAGE:SIZE, like busybox:6", part)
		}
		out = append(out, PoolSpec{Image: img, Size: size})
	}
	return out, nil
}

// pool keeps Size sandboxes of one image booted.
type pool struct {
	spec  PoolSpec
	shape spec
	mu    sync.Mutex
	ready []string // ids, oldest first
	kick  chan struct{}
}

// defaultShape is the spec of a create that asks for nothing but an image.
func (m *Manager) defaultShape() spec {
	if m.cfg.DefaultRuntime == "process" {
		return spec{Resources: DefaultResources}
	}
	pol, _ := network.Normalize(nil)
	return spec{Resources: DefaultResources, Network: pol}
}

// StartPools begins keeping the configured pools full, until ctx ends.
func (m *Manager) StartPools(ctx context.Context, specs []PoolSpec) error {
	for _, ps := range specs {
		if !m.cfg.Images.Known(ps.Image) {
			return fmt.Errorf("pool image %q is unknown", ps.Image)
		}
		p := &pool{spec: ps, shape: m.defaultShape(), kick: make(chan struct{}, 1)}
		m.imageDefaults(ps.Image, &p.shape)
		m.mu.Lock()
		m.pools = append(m.pools, p)
		m.mu.Unlock()
		m.fillers.Add(1)
		go func() {
			defer m.fillers.Done()
			m.fill(ctx, p)
		}()
	}
	return nil
}

// fill boots one sandbox at a time until the pool is full, then waits for
// a claim. One at a time keeps refills from starving real creates.
func (m *Manager) fill(ctx context.Context, p *pool) {
	backoff := time.Second
	for ctx.Err() == nil {
		p.mu.Lock()
		short := len(p.ready) < p.spec.Size
		p.mu.Unlock()
		if !short {
			select {
			case <-p.kick:
				continue
			case <-ctx.Done():
				return
			}
		}
		id, err := m.bootPooled(ctx, p)
		if err != nil {
			m.log.Error("refill pool", "image", p.spec.Image, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, time.Minute)
			continue
		}
		backoff = time.Second
		p.mu.Lock()
		p.ready = append(p.ready, id)
		p.mu.Unlock()
	}
}

func (m *Manager) bootPooled(ctx context.Context, p *pool) (string, error) {
	rtName := m.cfg.DefaultRuntime
	specJSON, _ := json.Marshal(p.shape)
	now := time.Now().UTC()
	row := &store.Sandbox{ID: newID(), Org: "", State: StateCreating, Runtime: rtName, Image: p.spec.Image,
		Spec: specJSON, Metadata: map[string]string{}, CreatedAt: now, UpdatedAt: now,
		CPU: p.shape.Resources.CPU, MemoryMB: p.shape.Resources.MemoryMB, DiskMB: p.shape.Resources.DiskMB}
	done, err := m.beginCreate(ctx, row)
	if err != nil {
		return "", err
	}
	defer done()
	sp := p.shape
	// A boot is not cut short when warren stops: killing a runtime
	// mid-create can leave its processes and cgroups behind. It finishes,
	// joins the pool, and is drained with it.
	ctx = context.WithoutCancel(ctx)
	timings, l, err := m.boot(ctx, row.ID, p.spec.Image, m.cfg.Runtimes[rtName], &sp)
	if err != nil {
		m.teardown(context.WithoutCancel(ctx), row.ID, m.cfg.Runtimes[rtName])
		reason := "pool boot failed: " + err.Error()
		_, _ = m.cfg.Store.Transition(context.WithoutCancel(ctx), row.ID, []string{StateCreating}, StateFailed, store.Change{Reason: &reason, Ended: true})
		return "", err
	}
	// Start one shell before anyone waits on it: the runtime's first
	// process start in a sandbox pays for cold caches (the binary, its
	// directory entries), and that belongs to the refill, not the claim.
	if _, err := l.agent.Exec(ctx, &wire.ExecRequest{Argv: []string{"/bin/sh", "-c", ":"}, TimeoutSeconds: 10}); err != nil {
		m.log.Warn("warm pool sandbox", "sandbox.id", row.ID, "err", err)
	}
	boot := BootHotPool
	if _, err := m.cfg.Store.Transition(ctx, row.ID, []string{StateCreating}, StatePooled, store.Change{BootPath: &boot, Timings: timings}); err != nil {
		l.close()
		m.teardown(context.WithoutCancel(ctx), row.ID, m.cfg.Runtimes[rtName])
		return "", err
	}
	m.goLive(l, "")
	return row.ID, nil
}

// claimPooled hands a pooled sandbox to a create whose image and shape
// match, or returns nil. A quota that refuses the claim is the create's
// answer: a cold boot would be refused the same way.
func (m *Manager) claimPooled(ctx context.Context, org, img, rtName string, sp *spec, req *CreateRequest) (*store.Sandbox, *live, error) {
	want := m.defaultShape()
	m.imageDefaults(img, &want)
	want.Network, want.Env, want.TimeoutSeconds, want.IdleTimeoutSeconds, want.IdleAction, want.Ports = nil, nil, 0, 0, "", nil
	got := *sp
	// Secrets as env are given per process, so a warm sandbox serves
	// them; volumes and secret files are mounted at boot, so it cannot.
	got.Network, got.Env, got.TimeoutSeconds, got.IdleTimeoutSeconds, got.IdleAction, got.Ports, got.Secrets = nil, nil, 0, 0, "", nil, nil
	if rtName != m.cfg.DefaultRuntime || !reflect.DeepEqual(want, got) {
		return nil, nil, nil
	}
	m.mu.Lock()
	pools := append([]*pool(nil), m.pools...)
	m.mu.Unlock()
	for _, p := range pools {
		if p.spec.Image != img {
			continue
		}
		for {
			p.mu.Lock()
			if len(p.ready) == 0 {
				p.mu.Unlock()
				return nil, nil, nil
			}
			id := p.ready[0]
			p.ready = p.ready[1:]
			p.mu.Unlock()
			select {
			case p.kick <- struct{}{}:
			default:
			}
			row, l, err := m.takePooled(ctx, org, id, sp, req)
			var qe *store.QuotaError
			if errors.As(err, &qe) {
				// Still pooled: back it goes.
				p.mu.Lock()
				p.ready = append([]string{id}, p.ready...)
				p.mu.Unlock()
				return nil, nil, err
			}
			if row != nil {
				return row, l, nil
			}
		}
	}
	return nil, nil, nil
}

// takePooled turns one pooled sandbox into the caller's: its row, its
// env, its network policy and its deadlines.
func (m *Manager) takePooled(ctx context.Context, org, id string, sp *spec, req *CreateRequest) (*store.Sandbox, *live, error) {
	m.mu.Lock()
	l := m.live[id]
	m.mu.Unlock()
	if l == nil || !l.agent.Connected() {
		return nil, nil, nil
	}
	if sp.Network != nil && !reflect.DeepEqual(sp.Network, m.defaultShape().Network) {
		if _, err := m.cfg.Network.SetPolicy(id, sp.Network); err != nil {
			return nil, nil, nil
		}
	}
	var exp time.Time
	if sp.TimeoutSeconds > 0 {
		exp = time.Now().Add(time.Duration(sp.TimeoutSeconds) * time.Second).UTC()
	}
	b, _ := json.Marshal(sp)
	md := req.Metadata
	if md == nil {
		md = map[string]string{}
	}
	row, err := m.cfg.Store.Claim(ctx, id, org, md, b, exp)
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	l.org = org
	l.env, l.workdir, l.user = sp.Env, sp.Workdir, sp.User
	l.expiresAt = exp
	l.idle = time.Duration(sp.IdleTimeoutSeconds) * time.Second
	l.idlePause = sp.IdleAction == wire.IdlePause
	l.lastUse = time.Now()
	l.mu.Unlock()
	return row, l, nil
}

// hasPool says whether a warm pool keeps sandboxes of img.
func (m *Manager) hasPool(img string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pools {
		if p.spec.Image == img {
			return true
		}
	}
	return false
}

// Pools reports the warm pools.
func (m *Manager) Pools() []wire.PoolStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]wire.PoolStatus, 0, len(m.pools))
	for _, p := range m.pools {
		p.mu.Lock()
		out = append(out, wire.PoolStatus{Image: p.spec.Image, Runtime: m.cfg.DefaultRuntime, Size: p.spec.Size, Ready: len(p.ready)})
		p.mu.Unlock()
	}
	return out
}

// DrainPools removes every pooled sandbox, for shutdown.
func (m *Manager) DrainPools(ctx context.Context) {
	// The refill loops end with the context StartPools was given; a boot
	// they had under way either joins the pool (drained below) or tears
	// itself down.
	m.fillers.Wait()
	rows, err := m.cfg.Store.ListSandboxes(ctx, store.Filter{States: []string{StatePooled}, Node: m.cfg.Node})
	if err != nil {
		return
	}
	for _, r := range rows {
		m.removePooled(ctx, r)
	}
}

func (m *Manager) removePooled(ctx context.Context, r *store.Sandbox) {
	_ = m.teardown(ctx, r.ID, m.cfg.Runtimes[r.Runtime])
	reason := "warm pool sandbox removed"
	_, _ = m.cfg.Store.Transition(ctx, r.ID, []string{StatePooled}, StateDeleted, store.Change{Reason: &reason, Ended: true})
}
