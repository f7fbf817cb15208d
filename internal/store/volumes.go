package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Volume is a stored volume: storage that outlives the sandboxes that
// mount it.
type Volume struct {
	ID        string
	Org       string
	Name      string
	SizeMB    int
	CreatedAt time.Time
	// Node is the node whose disk holds it ("" on a lone node).
	Node string
	// MountedBy are the sandboxes that mount it now.
	MountedBy []Mounter
}

// Mounter is a sandbox that mounts a volume.
type Mounter struct {
	SandboxID string
	ReadOnly  bool
}

// InsertVolume stores a new volume after checking its org's quotas.
func (s *Store) InsertVolume(ctx context.Context, v Volume) error {
	return s.tx(ctx, func(tx *txn) error {
		if err := admit(ctx, tx, v.Org, Demand{Volumes: 1, VolumeMB: v.SizeMB}); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO volumes(id, org, name, size_mb, created_at, node) VALUES(?,?,?,?,?,?)`,
			v.ID, v.Org, v.Name, v.SizeMB, millis(v.CreatedAt), v.Node)
		if isUnique(err) {
			return fmt.Errorf("volume %q: %w", v.Name, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("insert volume: %w", err)
		}
		return nil
	})
}

func (s *Store) mounters(ctx context.Context, v *Volume) error {
	rows, err := s.db.QueryContext(ctx, `SELECT sandbox_id, read_only FROM volume_mounts WHERE volume_id = ? ORDER BY sandbox_id`, v.ID)
	if err != nil {
		return fmt.Errorf("list the mounts of volume %s: %w", v.ID, err)
	}
	defer rows.Close()
	v.MountedBy = []Mounter{}
	for rows.Next() {
		var m Mounter
		if err := rows.Scan(&m.SandboxID, &m.ReadOnly); err != nil {
			return err
		}
		v.MountedBy = append(v.MountedBy, m)
	}
	return rows.Err()
}

const volumeColumns = `id, org, name, size_mb, created_at, node`

func scanVolume(r scanner) (*Volume, error) {
	var v Volume
	var created int64
	if err := r.Scan(&v.ID, &v.Org, &v.Name, &v.SizeMB, &created, &v.Node); err != nil {
		return nil, err
	}
	v.CreatedAt = fromMillis(created)
	return &v, nil
}

// GetVolume returns a volume of org by name or id.
func (s *Store) GetVolume(ctx context.Context, org, nameOrID string) (*Volume, error) {
	v, err := scanVolume(s.db.QueryRowContext(ctx, `SELECT `+volumeColumns+` FROM volumes WHERE org = ? AND (name = ? OR id = ?)`,
		org, nameOrID, nameOrID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get volume %s: %w", nameOrID, err)
	}
	return v, s.mounters(ctx, v)
}

// ListVolumes lists org's volumes ("" for every org's), by name.
func (s *Store) ListVolumes(ctx context.Context, org string) ([]*Volume, error) {
	out, err := listOf(ctx, s.db, "volumes", volumeColumns, "org, name", org, scanVolume)
	if err != nil {
		return nil, err
	}
	for _, v := range out {
		if err := s.mounters(ctx, v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DeleteVolume removes a volume of org that no sandbox mounts (ErrInUse
// otherwise). The caller removes its data once this succeeds.
func (s *Store) DeleteVolume(ctx context.Context, org, id string) error {
	return s.tx(ctx, func(tx *txn) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM volume_mounts WHERE volume_id = ?`, id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: volume %s is mounted by %d sandboxes", ErrInUse, id, n)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM volumes WHERE id = ? AND org = ?`, id, org)
		if err != nil {
			return fmt.Errorf("delete volume %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// mountVolume records a sandbox's mount of a volume of its org. Only one
// sandbox at a time may mount it writable.
func mountVolume(ctx context.Context, tx *txn, org, sandboxID string, m Mount) error {
	var name string
	err := tx.QueryRowContext(ctx, `SELECT name FROM volumes WHERE id = ? AND org = ?`, m.VolumeID, org).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("volume %s: %w", m.VolumeID, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read volume %s: %w", m.VolumeID, err)
	}
	if !m.ReadOnly {
		var writer string
		err := tx.QueryRowContext(ctx, `SELECT sandbox_id FROM volume_mounts WHERE volume_id = ? AND read_only = 0`, m.VolumeID).Scan(&writer)
		if err == nil {
			return fmt.Errorf("%w: volume %s is mounted writable by sandbox %s; mount it read-only, or end that sandbox first", ErrInUse, name, writer)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO volume_mounts(volume_id, sandbox_id, read_only) VALUES(?,?,?)`, m.VolumeID, sandboxID, m.ReadOnly); err != nil {
		return fmt.Errorf("record the mount of volume %s: %w", name, err)
	}
	return nil
}

// VolumeMounts lists the volumes a sandbox mounts.
func (s *Store) VolumeMounts(ctx context.Context, sandboxID string) ([]Mount, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT volume_id, read_only FROM volume_mounts WHERE sandbox_id = ?`, sandboxID)
	if err != nil {
		return nil, fmt.Errorf("list the volumes of %s: %w", sandboxID, err)
	}
	defer rows.Close()
	var out []Mount
	for rows.Next() {
		var m Mount
		if err := rows.Scan(&m.VolumeID, &m.ReadOnly); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// VolumeInUse says whether any sandbox mounts a volume.
func (s *Store) VolumeInUse(ctx context.Context, volumeID string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM volume_mounts WHERE volume_id = ?`, volumeID).Scan(&n); err != nil {
		return false, fmt.Errorf("count the mounts of volume %s: %w", volumeID, err)
	}
	return n > 0, nil
}
