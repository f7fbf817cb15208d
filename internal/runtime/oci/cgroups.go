package oci

import (
	"path/filepath"

	"github.com/warrenhq/warren/internal/cgroups"
)

// cgroup is a sandbox's cgroup path, relative to the hierarchy's root.
func (r *Runtime) cgroup(id string) string { return filepath.Join(r.cfg.CgroupParent, id) }

// removeCgroups removes a stopped sandbox's cgroups. The runtime normally
// does this itself; this catches what a crash mid-create leaves.
func (r *Runtime) removeCgroups(id string) error {
	return cgroups.Remove(r.cfg.CgroupRoot, r.cgroup(id))
}

// CgroupIDs lists the sandbox ids that have a cgroup under this runtime's
// parent.
func (r *Runtime) CgroupIDs() []string {
	return cgroups.Children(r.cfg.CgroupRoot, r.cfg.CgroupParent)
}

// OOMKilled reports whether the OOM killer has killed anything in the
// sandbox's memory cgroup.
func (r *Runtime) OOMKilled(id string) bool {
	return cgroups.MemoryOf(r.cfg.CgroupRoot, r.cgroup(id)).OOMKills() > 0
}
