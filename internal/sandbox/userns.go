package sandbox

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/warrenhq/warren/internal/idmap"
	"github.com/warrenhq/warren/internal/overlay"
	"github.com/warrenhq/warren/internal/runtime"
)

// userNS is the user namespace a sandbox runs in, or nil. Sandboxes with
// host directories mounted (the agent host's workspaces) run without
// one: their files must keep the host user's ownership.
func userNS(rt runtime.Runtime, sp *spec) *runtime.IDRange {
	un, ok := rt.(runtime.UserNamespaced)
	if !ok || len(sp.Mounts) > 0 {
		return nil
	}
	r, _ := un.UserNamespace()
	return r
}

// owner is the host uid that is root inside a sandbox, or -1.
func owner(r *runtime.IDRange) int {
	if r == nil {
		return -1
	}
	return int(r.HostID)
}

// idmappedImage returns a view of an image's root filesystem in which
// the files appear owned by the sandbox's user namespace: one idmapped
// mount per image, shared by every sandbox that uses it.
func (m *Manager) idmappedImage(img, lower string, r *runtime.IDRange) (string, error) {
	m.idmapMu.Lock()
	defer m.idmapMu.Unlock()
	view := filepath.Join(m.cfg.DataDir, "idmap", fmt.Sprintf("%s@%d", img, r.HostID))
	if mounted, _ := overlay.IsMounted(view); mounted {
		return view, nil
	}
	if err := m.ensureUserns(r); err != nil {
		return "", err
	}
	if err := idmap.Mount(lower, view, m.userns, false); err != nil {
		return "", err
	}
	return view, nil
}

// ensureUserns makes the user namespace idmapped mounts are made for,
// once; the caller holds idmapMu.
func (m *Manager) ensureUserns(r *runtime.IDRange) error {
	if m.userns != nil {
		return nil
	}
	f, err := idmap.Range{HostID: r.HostID, Size: r.Size}.Userns()
	if err != nil {
		return err
	}
	m.userns = f
	return nil
}

// prepareUserNS gives a sandbox's run directory to the uid that is root
// inside it (its writable layer is already its, see mountFiles), and lets
// its group search the sandbox's directory (runc mounts the root
// filesystem as that user).
func (m *Manager) prepareUserNS(id string, r *runtime.IDRange) error {
	uid := owner(r)
	if err := os.Chown(m.runDir(id), uid, uid); err != nil {
		return fmt.Errorf("give the run directory to the sandbox's root: %w", err)
	}
	dir := m.sandboxDir(id)
	if err := os.Chown(dir, 0, uid); err != nil {
		return fmt.Errorf("open %s to the sandbox's root group: %w", dir, err)
	}
	return os.Chmod(dir, 0o710)
}
