package oci

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const cgroupRoot = "/sys/fs/cgroup"

// cgroupDirs lists where a sandbox's cgroup can live: one directory per v1
// controller hierarchy, or one in the v2 unified tree.
func cgroupDirs(parent, id string) []string {
	dirs := []string{filepath.Join(cgroupRoot, parent, id)}
	entries, _ := os.ReadDir(cgroupRoot)
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(cgroupRoot, e.Name(), parent, id))
		}
	}
	return dirs
}

// removeCgroups removes a stopped sandbox's cgroups. The runtime normally
// does this itself; this catches what a crash mid-create leaves.
func removeCgroups(parent, id string) error {
	var errs []error
	for _, d := range cgroupDirs(parent, id) {
		if err := os.Remove(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// CgroupIDs lists the sandbox ids that have a cgroup under parent.
func CgroupIDs(parent string) []string {
	seen := map[string]bool{}
	var ids []string
	for _, d := range cgroupDirs(parent, "") {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				ids = append(ids, e.Name())
			}
		}
	}
	return ids
}

// RemoveCgroups frees the cgroups of a sandbox no backend holds any more.
func RemoveCgroups(parent, id string) error { return removeCgroups(parent, id) }

// OOMKilled reports whether the OOM killer has killed anything in the
// sandbox's memory cgroup.
func (r *Runtime) OOMKilled(id string) bool {
	for _, f := range []string{
		filepath.Join(cgroupRoot, "memory", r.cfg.CgroupParent, id, "memory.oom_control"), // v1
		filepath.Join(cgroupRoot, r.cfg.CgroupParent, id, "memory.events"),                // v2
	} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if n, ok := strings.CutPrefix(line, "oom_kill "); ok && strings.TrimSpace(n) != "0" {
				return true
			}
		}
	}
	return false
}
