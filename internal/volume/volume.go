// Package volume keeps the storage behind warren's volumes: each volume is
// a sparse ext4 image of its size, so a volume that fills up gets ENOSPC
// and nothing else does. A volume is loop-mounted on the host while any
// sandbox uses it; sandboxes bind that mount.
package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/warrenhq/warren/internal/disk"
	"github.com/warrenhq/warren/internal/overlay"
	"golang.org/x/sys/unix"
)

// Manager owns the volumes under Dir: <id>.img and, while mounted,
// <id>/.
type Manager struct {
	Dir string
	mu  sync.Mutex
}

func (m *Manager) image(id string) string { return filepath.Join(m.Dir, id+".img") }

// Path is where a volume is mounted on the host while in use.
func (m *Manager) Path(id string) string { return filepath.Join(m.Dir, id) }

// validID guards every path built from an id.
func validID(id string) error {
	if id == "" || strings.ContainsAny(id, "/.\x00") || len(id) > 64 {
		return fmt.Errorf("bad volume id %q", id)
	}
	return nil
}

// Create makes a volume's image: an empty ext4 of sizeMB.
func (m *Manager) Create(ctx context.Context, id string, sizeMB int) error {
	if err := validID(id); err != nil {
		return err
	}
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return fmt.Errorf("create volume dir: %w", err)
	}
	return disk.Create(ctx, m.image(id), sizeMB)
}

// Attach mounts a volume on the host, if it is not already, and returns
// the mount's path.
func (m *Manager) Attach(id string) (string, error) {
	if err := validID(id); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.Path(id)
	if mounted, _ := overlay.IsMounted(p); mounted {
		return p, nil
	}
	if err := disk.Mount(m.image(id), p); err != nil {
		return "", fmt.Errorf("mount volume %s: %w", id, err)
	}
	return p, nil
}

// Detach unmounts a volume no sandbox uses any more.
func (m *Manager) Detach(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unmount(id)
}

func (m *Manager) unmount(id string) error {
	p := m.Path(id)
	if mounted, _ := overlay.IsMounted(p); mounted {
		if err := unix.Unmount(p, 0); err != nil {
			// A sandbox's mount namespace may still hold it while the
			// sandbox dies; detach it, and the kernel finishes when the
			// last user goes.
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount volume %s: %w", id, err)
			}
		}
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove volume mount point %s: %w", id, err)
	}
	return nil
}

// Remove deletes a volume's data; it must not be in use.
func (m *Manager) Remove(id string) error {
	if err := validID(id); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.unmount(id); err != nil {
		return err
	}
	if err := os.Remove(m.image(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove volume %s: %w", id, err)
	}
	return nil
}

// Mounted lists the volumes mounted now.
func (m *Manager) Mounted() []string {
	entries, _ := os.ReadDir(m.Dir)
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			if mounted, _ := overlay.IsMounted(m.Path(e.Name())); mounted {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// Reconcile makes the volumes on disk match the store's after a crash
// between a volume's row and its image: a row without an image gets an
// empty one of its size; an image no row names is removed.
func (m *Manager) Reconcile(ctx context.Context, rows map[string]int) error {
	for id, size := range rows {
		if _, err := os.Stat(m.image(id)); errors.Is(err, os.ErrNotExist) {
			if err := m.Create(ctx, id, size); err != nil {
				return fmt.Errorf("make the missing image of volume %s: %w", id, err)
			}
		}
	}
	images, _ := filepath.Glob(filepath.Join(m.Dir, "*.img"))
	for _, img := range images {
		id := strings.TrimSuffix(filepath.Base(img), ".img")
		if _, ok := rows[id]; !ok {
			if err := m.Remove(id); err != nil {
				return err
			}
		}
	}
	return nil
}
