// Package cgroups reads and sets the few cgroup files warren uses itself
// (runc and runsc set the limits of the OCI spec), on either hierarchy:
// v1, a directory per controller, or v2, one unified tree. It is used on
// the host and inside runc sandboxes, whose cgroup namespace shows their
// own cgroup as the root.
package cgroups

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Root is where the hierarchy is mounted.
const Root = "/sys/fs/cgroup"

// Unified reports whether the hierarchy at root is cgroup v2. (A hybrid
// host, v1 controllers with a v2 tree beside them, counts as v1: the
// controllers are v1's.)
func Unified(root string) bool {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return err == nil
}

// Memory is one memory cgroup.
type Memory struct {
	Dir string
	V1  bool
}

// MemoryOf is the memory cgroup at rel ("warren/sbx_…", or "" for the
// root a cgroup namespace shows) in the hierarchy at root.
func MemoryOf(root, rel string) Memory {
	if Unified(root) {
		return Memory{Dir: filepath.Join(root, rel)}
	}
	return Memory{Dir: filepath.Join(root, "memory", rel), V1: true}
}

// file names the file holding what v1 and v2 call differently.
func (m Memory) file(v1, v2 string) string {
	if m.V1 {
		return filepath.Join(m.Dir, v1)
	}
	return filepath.Join(m.Dir, v2)
}

// UsageFile holds the memory charged now.
func (m Memory) UsageFile() string { return m.file("memory.usage_in_bytes", "memory.current") }

// Usage is the memory charged now.
func (m Memory) Usage() (int64, error) { return readInt(m.UsageFile()) }

// Peak is the most ever charged (v2 needs Linux 5.19 for it).
func (m Memory) Peak() (int64, error) {
	return readInt(m.file("memory.max_usage_in_bytes", "memory.peak"))
}

// OOMKills counts the processes the kernel's OOM killer took here.
func (m Memory) OOMKills() int64 {
	return readKey(m.file("memory.oom_control", "memory.events"), "oom_kill")
}

// Limit is the memory limit; v2's "max" (none) reads as -1.
func (m Memory) Limit() (int64, error) {
	b, err := os.ReadFile(m.file("memory.limit_in_bytes", "memory.max"))
	if err != nil {
		return 0, err
	}
	if s := strings.TrimSpace(string(b)); s == "max" {
		return -1, nil
	}
	return parseInt(b)
}

// SetLimit sets the memory limit. On v1 the memory+swap limit moves with
// it (it must never be below the memory limit: it goes first when the
// limit rises, last when it falls); v2 limits swap on its own.
func (m Memory) SetLimit(bytes int64) error {
	if !m.V1 {
		return write(m.Dir, "memory.max", bytes)
	}
	memsw := filepath.Join(m.Dir, "memory.memsw.limit_in_bytes")
	if _, err := os.Stat(memsw); err != nil {
		return write(m.Dir, "memory.limit_in_bytes", bytes) // no swap accounting
	}
	cur, err := m.Limit()
	if err != nil {
		return err
	}
	order := []string{"memory.memsw.limit_in_bytes", "memory.limit_in_bytes"}
	if bytes < cur {
		order[0], order[1] = order[1], order[0]
	}
	for _, f := range order {
		if err := write(m.Dir, f, bytes); err != nil {
			return err
		}
	}
	return nil
}

// Dirs lists where the cgroup at rel can be: one directory per v1
// controller hierarchy, or one in the v2 tree. Not all need exist.
func Dirs(root, rel string) []string {
	if Unified(root) {
		return []string{filepath.Join(root, rel)}
	}
	var dirs []string
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(root, e.Name(), rel))
		}
	}
	return dirs
}

// Remove removes the cgroup at rel from every hierarchy. A cgroup that
// still has processes stays, with an error.
func Remove(root, rel string) error {
	var errs []error
	for _, d := range Dirs(root, rel) {
		if err := removeDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// removeDir removes a cgroup, waiting a little while it is busy: the
// processes of a sandbox just killed take a moment to leave it.
func removeDir(d string) error {
	var err error
	for i := 0; i < 20; i++ {
		if err = os.Remove(d); !errors.Is(err, syscall.EBUSY) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// Children lists the names of the cgroups under rel, in any hierarchy.
func Children(root, rel string) []string {
	seen := map[string]bool{}
	var names []string
	for _, d := range Dirs(root, rel) {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				names = append(names, e.Name())
			}
		}
	}
	return names
}

func write(dir, file string, v int64) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(v, 10)), 0); err != nil {
		return fmt.Errorf("set %s: %w", file, err)
	}
	return nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseInt(b)
}

func parseInt(b []byte) (int64, error) {
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readKey reads "key N" from a file of such lines; 0 if it is not there.
func readKey(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte(key+" ")); ok {
			n, _ := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}

// SetCPU sets the cgroup at rel to quota microseconds of CPU time per
// period (v1: cpu.cfs_quota_us and cpu.cfs_period_us; v2: cpu.max).
func SetCPU(root, rel string, quota, period int64) error {
	if Unified(root) {
		dir := filepath.Join(root, rel)
		if err := os.WriteFile(filepath.Join(dir, "cpu.max"), []byte(fmt.Sprintf("%d %d", quota, period)), 0); err != nil {
			return fmt.Errorf("set cpu.max: %w", err)
		}
		return nil
	}
	dir := filepath.Join(root, "cpu", rel)
	if err := write(dir, "cpu.cfs_period_us", period); err != nil {
		return err
	}
	return write(dir, "cpu.cfs_quota_us", quota)
}

// CPU reads the quota and period SetCPU sets; a quota of -1 is none.
func CPU(root, rel string) (quota, period int64, err error) {
	if Unified(root) {
		b, err := os.ReadFile(filepath.Join(root, rel, "cpu.max"))
		if err != nil {
			return 0, 0, err
		}
		f := strings.Fields(string(b))
		if len(f) != 2 {
			return 0, 0, fmt.Errorf("cpu.max reads %q", b)
		}
		if f[0] == "max" {
			quota = -1
		} else if quota, err = strconv.ParseInt(f[0], 10, 64); err != nil {
			return 0, 0, err
		}
		period, err = strconv.ParseInt(f[1], 10, 64)
		return quota, period, err
	}
	dir := filepath.Join(root, "cpu", rel)
	if quota, err = readInt(filepath.Join(dir, "cpu.cfs_quota_us")); err != nil {
		return 0, 0, err
	}
	period, err = readInt(filepath.Join(dir, "cpu.cfs_period_us"))
	return quota, period, err
}
