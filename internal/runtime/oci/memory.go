package oci

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/warrenhq/warren/internal/runtime"
)

// memoryDir is a sandbox's memory cgroup: v1's controller directory, or
// the v2 unified one.
func (r *Runtime) memoryDir(id string) (dir string, v1 bool) {
	v1dir := filepath.Join(cgroupRoot, "memory", r.cfg.CgroupParent, id)
	if _, err := os.Stat(v1dir); err == nil {
		return v1dir, true
	}
	return filepath.Join(cgroupRoot, r.cfg.CgroupParent, id), false
}

// GuardMemory gives a sandbox's runtime headroom above its requested
// memory and reports pressure (see runtime.MemoryGuarded).
func (r *Runtime) GuardMemory(ctx context.Context, id string, limitBytes int64, pressure func()) error {
	if !r.cfg.GuardMemory {
		return nil
	}
	dir, v1 := r.memoryDir(id)
	host := limitBytes + runtime.MemoryHeadroom(limitBytes)
	if !v1 {
		if err := writeCgroup(dir, "memory.max", host); err != nil {
			return err
		}
		return runtime.ErrNoPressureEvents
	}
	// The swap limit includes memory and must never be below it: raise
	// it first.
	if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
		if err := writeCgroup(dir, "memory.memsw.limit_in_bytes", host); err != nil {
			return err
		}
	}
	if err := writeCgroup(dir, "memory.limit_in_bytes", host); err != nil {
		return err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("memory pressure events: %w", err)
	}
	usage, err := os.Open(filepath.Join(dir, "memory.usage_in_bytes"))
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
	dir, v1 := r.memoryDir(id)
	var st runtime.MemoryStats
	var err error
	if v1 {
		if st.CurrentBytes, err = readCgroupInt(dir, "memory.usage_in_bytes"); err != nil {
			return st, err
		}
		st.PeakBytes, _ = readCgroupInt(dir, "memory.max_usage_in_bytes")
		st.OOMKills = readCgroupKey(dir, "memory.oom_control", "oom_kill")
		return st, nil
	}
	if st.CurrentBytes, err = readCgroupInt(dir, "memory.current"); err != nil {
		return st, err
	}
	st.PeakBytes, _ = readCgroupInt(dir, "memory.peak")
	st.OOMKills = readCgroupKey(dir, "memory.events", "oom_kill")
	return st, nil
}

func writeCgroup(dir, file string, v int64) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(v, 10)), 0); err != nil {
		return fmt.Errorf("set %s: %w", file, err)
	}
	return nil
}

func readCgroupInt(dir, file string) (int64, error) {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readCgroupKey reads "key N" from a cgroup file of such lines.
func readCgroupKey(dir, file, key string) int64 {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
