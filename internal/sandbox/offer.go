package sandbox

import (
	goruntime "runtime"

	"github.com/warrenhq/warren/internal/disk"
	"github.com/warrenhq/warren/wire"
)

// Offer is what this node offers a cluster now: the limits given (0 for
// none), its runtimes, the images it has or can build, and its warm
// sandboxes ready by image.
func (m *Manager) Offer(cpu float64, memoryMB, diskMB int) wire.NodeCapacity {
	c := wire.NodeCapacity{CPU: cpu, MemoryMB: memoryMB, DiskMB: diskMB, Runtimes: m.Runtimes(), DefaultRuntime: m.cfg.DefaultRuntime,
		Images: m.imageNames(), Pools: map[string]int{},
		Host: wire.NodeHost{Cores: goruntime.NumCPU(), MemoryMB: hostMemoryMB()}}
	if free, err := disk.Available(m.cfg.DataDir); err == nil {
		c.Host.DiskFreeMB = free
	}
	for _, p := range m.Pools() {
		c.Pools[p.Image] += p.Ready
	}
	return c
}
