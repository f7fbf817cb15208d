package sandbox

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/wire"
)

// close lets go of a sandbox: its agent connection and its memory guard.
// The sandbox itself runs on.
func (l *live) close() {
	l.agent.Close()
	l.mu.Lock()
	stop := l.stopGuard
	l.stopGuard = nil
	l.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// guardMemory gives a running sandbox whose kernel has no OOM killer of
// its own (gVisor) headroom above its requested memory, and has its agent
// watch closely whenever the host's charge for it crosses half of that
// (see runtime.MemoryGuarded). Called once its agent is connected.
func (m *Manager) guardMemory(l *live, sp *spec) {
	mg, ok := l.rt.(runtime.MemoryGuarded)
	if !ok || sp.Resources.MemoryMB <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.mu.Lock()
	if l.stopGuard != nil {
		l.stopGuard()
	}
	l.stopGuard = cancel
	l.mu.Unlock()
	var poking atomic.Bool
	poke := func(always bool) {
		// One poke at a time: a burst of crossings is one message.
		if !poking.CompareAndSwap(false, true) {
			return
		}
		go func() {
			defer poking.Store(false)
			pctx, done := context.WithTimeout(ctx, 5*time.Second)
			defer done()
			_ = l.agent.Pressure(pctx, always)
		}()
	}
	err := mg.GuardMemory(ctx, l.id, int64(sp.Resources.MemoryMB)<<20, func() { poke(false) })
	switch {
	case errors.Is(err, runtime.ErrNoPressureEvents):
		// The host cannot say when memory gets tight: the agent looks
		// by itself.
		poke(true)
	case err != nil:
		m.log.Warn("cannot guard the sandbox's memory: an allocation over its limit ends the whole sandbox", "sandbox.id", l.id, "err", err)
	}
}

// memory reports a running sandbox's memory: the host's charge from its
// runtime, and what its processes use and the OOM kills from its agent.
// A part that cannot be read is left out; nil if neither can.
func (m *Manager) memory(ctx context.Context, id string) *wire.Memory {
	m.mu.Lock()
	l := m.live[id]
	m.mu.Unlock()
	if l == nil {
		return nil
	}
	out := &wire.Memory{}
	got := false
	if mr, ok := l.rt.(runtime.MemoryReporter); ok {
		if st, err := mr.MemoryStats(id); err == nil {
			out.HostMB, out.HostPeakMB, out.OOMKills = mb(st.CurrentBytes), mb(st.PeakBytes), st.OOMKills
			got = true
		}
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if st, err := l.agent.Memory(actx); err == nil {
		out.LimitMB, out.UsedMB = int(st.LimitBytes>>20), mb(st.UsedBytes)
		// The agent's own kills (gVisor) add to the host's; under runc
		// the agent only repeats the kernel's count.
		if st.Enforced {
			out.OOMKills += st.OOMKills
		}
		got = true
	}
	if !got {
		return nil
	}
	return out
}

func mb(b int64) float64 { return float64(b*10>>20) / 10 }

// RunningMemory reports the memory of every sandbox running on this node
// (a few at a time), for metrics.
func (m *Manager) RunningMemory(ctx context.Context) map[string]*wire.Memory {
	m.mu.Lock()
	ids := make([]string, 0, len(m.live))
	for id, l := range m.live {
		if l.owner() != "" {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	out := map[string]*wire.Memory{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func(id string) {
			defer wg.Done()
			defer func() { <-sem }()
			if mem := m.memory(ctx, id); mem != nil {
				mu.Lock()
				out[id] = mem
				mu.Unlock()
			}
		}(id)
	}
	wg.Wait()
	return out
}

// CountByState counts this node's sandboxes by state and runtime,
// deleted ones left out.
func (m *Manager) CountByState(ctx context.Context) (map[[2]string]int, error) {
	return m.cfg.Store.CountByState(ctx, m.cfg.Node)
}
