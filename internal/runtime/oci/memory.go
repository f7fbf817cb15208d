package oci

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/warrenhq/warren/internal/cgroups"
	"github.com/warrenhq/warren/internal/runtime"
)

// GuardMemory gives a sandbox's runtime headroom above its requested
// memory and reports pressure (see runtime.MemoryGuarded).
func (r *Runtime) GuardMemory(ctx context.Context, id string, limitBytes int64, pressure func()) error {
	if !r.cfg.GuardMemory {
		return nil
	}
	mem := cgroups.MemoryOf(r.cfg.CgroupRoot, r.cgroup(id))
	host := limitBytes + runtime.MemoryHeadroom(limitBytes)
	if err := mem.SetLimit(host); err != nil {
		return err
	}
	if !mem.V1 {
		// v2 has no usage threshold to wait on.
		return runtime.ErrNoPressureEvents
	}
	dir := mem.Dir
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("memory pressure events: %w", err)
	}
	usage, err := os.Open(mem.UsageFile())
	if err != nil {
		unix.Close(efd)
		return fmt.Errorf("memory pressure events: %w", err)
	}
	ctl := fmt.Sprintf("%d %d %d", efd, usage.Fd(), limitBytes/2)
	err = os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(ctl), 0)
	usage.Close()
	if err != nil {
		unix.Close(efd)
		return fmt.Errorf("memory pressure events: %w", err)
	}
	ev := os.NewFile(uintptr(efd), "memory-pressure")
	go func() {
		<-ctx.Done()
		ev.Close()
	}()
	go func() {
		defer ev.Close()
		buf := make([]byte, 8)
		for {
			// The kernel signals each crossing, up or down, and once
			// more when the cgroup goes away.
			if _, err := ev.Read(buf); err != nil || binary.LittleEndian.Uint64(buf) == 0 {
				return
			}
			if ctx.Err() != nil {
				return
			}
			if _, err := os.Stat(dir); err != nil {
				return
			}
			pressure()
		}
	}()
	return nil
}

// MemoryStats reads what the host charges a sandbox for memory.
func (r *Runtime) MemoryStats(id string) (runtime.MemoryStats, error) {
	mem := cgroups.MemoryOf(r.cfg.CgroupRoot, r.cgroup(id))
	cur, err := mem.Usage()
	if err != nil {
		return runtime.MemoryStats{}, err
	}
	st := runtime.MemoryStats{CurrentBytes: cur, OOMKills: mem.OOMKills()}
	st.PeakBytes, _ = mem.Peak()
	return st, nil
}
