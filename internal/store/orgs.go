package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warrenhq/warren/wire"
)

// Org is a stored organization.
type Org struct {
	ID        string
	Name      string
	Quotas    wire.Quotas
	CreatedAt time.Time
}

// ErrExists is returned for a name an org (or one of its secrets or
// volumes) already uses.
var ErrExists = errors.New("already exists")

// ErrInUse is returned for a delete of something still in use.
var ErrInUse = errors.New("in use")

func scanOrg(r scanner) (*Org, error) {
	var o Org
	var quotas string
	var created int64
	if err := r.Scan(&o.ID, &o.Name, &quotas, &created); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(quotas), &o.Quotas); err != nil {
		return nil, fmt.Errorf("decode quotas of org %s: %w", o.ID, err)
	}
	o.CreatedAt = fromMillis(created)
	return &o, nil
}

// InsertOrg stores a new org.
func (s *Store) InsertOrg(ctx context.Context, o Org) error {
	q, _ := json.Marshal(o.Quotas)
	_, err := s.db.ExecContext(ctx, `INSERT INTO orgs(id, name, quotas, created_at) VALUES(?,?,?,?)`, o.ID, o.Name, string(q), millis(o.CreatedAt))
	if isUnique(err) {
		return fmt.Errorf("org %q: %w", o.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("insert org: %w", err)
	}
	return nil
}

// GetOrg returns an org by id.
func (s *Store) GetOrg(ctx context.Context, id string) (*Org, error) {
	o, err := scanOrg(s.db.QueryRowContext(ctx, `SELECT id, name, quotas, created_at FROM orgs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get org %s: %w", id, err)
	}
	return o, nil
}

// ListOrgs lists every org, oldest first.
func (s *Store) ListOrgs(ctx context.Context) ([]*Org, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, name, quotas, created_at FROM orgs ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list orgs: %w", err)
	}
	defer rows.Close()
	var out []*Org
	for rows.Next() {
		o, err := scanOrg(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// SetQuotas replaces an org's quotas. What it already holds stays, even
// above the new limits; new work is refused until it is under them.
func (s *Store) SetQuotas(ctx context.Context, id string, q wire.Quotas) error {
	b, _ := json.Marshal(q)
	res, err := s.db.ExecContext(ctx, `UPDATE orgs SET quotas = ? WHERE id = ?`, string(b), id)
	if err != nil {
		return fmt.Errorf("set quotas of org %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteOrg removes an org with its keys and secrets, in one transaction.
// It is refused (ErrInUse) while the org has sandboxes that have not
// ended or volumes: deleting those is the caller's choice to make.
func (s *Store) DeleteOrg(ctx context.Context, id string) error {
	return s.tx(ctx, func(tx *txn) error {
		if _, err := scanOrg(tx.QueryRowContext(ctx, `SELECT id, name, quotas, created_at FROM orgs WHERE id = ?`, id)); errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return err
		}
		var live, vols int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM sandboxes WHERE org = ? AND state NOT IN ('deleted', 'failed')`, id).Scan(&live); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM volumes WHERE org = ?`, id).Scan(&vols); err != nil {
			return err
		}
		if live > 0 || vols > 0 {
			return fmt.Errorf("%w: org %s has %d sandboxes that have not ended and %d volumes; delete them first", ErrInUse, id, live, vols)
		}
		for _, q := range []string{`DELETE FROM api_keys WHERE org = ?`, `DELETE FROM secrets WHERE org = ?`, `DELETE FROM orgs WHERE id = ?`} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return fmt.Errorf("delete org %s: %w", id, err)
			}
		}
		return nil
	})
}

// States in which a sandbox holds CPU and memory (and counts towards an
// org's sandboxes), and those in which it holds its disk.
var (
	computeStates = []string{"creating", "running", "pausing", "resuming", "forking"}
	diskStates    = append([]string{"paused"}, computeStates...)
	// billedStates are those a usage period is open in: the sandbox runs.
	billedStates = []string{"running", "pausing", "forking"}
)

func in(s string, set []string) bool {
	for _, v := range set {
		if v == s {
			return true
		}
	}
	return false
}

func placeholders(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

func stateArgs(states []string) []any {
	out := make([]any, len(states))
	for i, s := range states {
		out[i] = s
	}
	return out
}

// QuotaError is a refusal by an org's quota; Field names the quota.
type QuotaError struct {
	Field   string
	Message string
}

func (e *QuotaError) Error() string { return e.Message }

// use reads what an org holds now.
func use(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, org string, now time.Time) (wire.QuotaUse, error) {
	var u wire.QuotaUse
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(cpu), 0), COALESCE(SUM(memory_mb), 0) FROM sandboxes
		WHERE org = ? AND state IN (`+placeholders(len(computeStates))+`)`, append([]any{org}, stateArgs(computeStates)...)...).
		Scan(&u.Sandboxes, &u.CPU, &u.MemoryMB); err != nil {
		return u, fmt.Errorf("count what org %s holds: %w", org, err)
	}
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(SUM(disk_mb), 0) FROM sandboxes WHERE org = ? AND state IN (`+placeholders(len(diskStates))+`)`,
		append([]any{org}, stateArgs(diskStates)...)...).Scan(&u.DiskMB); err != nil {
		return u, fmt.Errorf("count the disk org %s holds: %w", org, err)
	}
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(size_mb), 0) FROM volumes WHERE org = ?`, org).Scan(&u.Volumes, &u.VolumeMB); err != nil {
		return u, fmt.Errorf("count the volumes of org %s: %w", org, err)
	}
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM sandboxes WHERE org = ? AND created_at > ?`, org, now.Add(-time.Minute).UnixMilli()).
		Scan(&u.CreatesLastMinute); err != nil {
		return u, fmt.Errorf("count the creates of org %s: %w", org, err)
	}
	return u, nil
}

// Use is what an org holds now.
func (s *Store) Use(ctx context.Context, org string) (wire.QuotaUse, error) {
	return use(ctx, s.db, org, time.Now())
}

// Demand is what a change adds to an org's holdings.
type Demand struct {
	Sandboxes int
	CPU       float64
	MemoryMB  int
	DiskMB    int
	Creates   int
	Volumes   int
	VolumeMB  int
}

// admit checks, inside tx, that org's quotas allow d on top of what it
// holds. Inside the transaction that makes the change, two changes can
// never both pass on the same headroom.
func admit(ctx context.Context, tx *txn, org string, d Demand) error {
	if org == "" {
		return nil // a warm-pool sandbox belongs to no one yet
	}
	var quotas string
	err := tx.QueryRowContext(ctx, `SELECT quotas FROM orgs WHERE id = ?`, org).Scan(&quotas)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("org %s: %w", org, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("read quotas of org %s: %w", org, err)
	}
	var q wire.Quotas
	if err := json.Unmarshal([]byte(quotas), &q); err != nil {
		return fmt.Errorf("decode quotas of org %s: %w", org, err)
	}
	if q == (wire.Quotas{}) {
		return nil
	}
	u, err := use(ctx, tx, org, time.Now())
	if err != nil {
		return err
	}
	for _, c := range []struct {
		field       string
		limit, have float64
		add         float64
		unit        string
	}{
		{"max_sandboxes", float64(q.MaxSandboxes), float64(u.Sandboxes), float64(d.Sandboxes), "sandboxes"},
		{"max_cpu", q.MaxCPU, u.CPU, d.CPU, "CPUs"},
		{"max_memory_mb", float64(q.MaxMemoryMB), float64(u.MemoryMB), float64(d.MemoryMB), "MB of memory"},
		{"max_disk_mb", float64(q.MaxDiskMB), float64(u.DiskMB), float64(d.DiskMB), "MB of disk"},
		{"creates_per_minute", float64(q.CreatesPerMinute), float64(u.CreatesLastMinute), float64(d.Creates), "creates in the last minute"},
		{"max_volumes", float64(q.MaxVolumes), float64(u.Volumes), float64(d.Volumes), "volumes"},
		{"max_volume_mb", float64(q.MaxVolumeMB), float64(u.VolumeMB), float64(d.VolumeMB), "MB of volumes"},
	} {
		if c.add > 0 && c.limit > 0 && c.have+c.add > c.limit+1e-9 {
			return &QuotaError{Field: c.field, Message: fmt.Sprintf("org %s's quota %s is %g; it holds %g %s and this needs %g more",
				org, c.field, c.limit, c.have, c.unit, c.add)}
		}
	}
	return nil
}

// Admits checks, without changing anything, that org's quotas allow d
// now; the change itself is checked again when it is made.
func (s *Store) Admits(ctx context.Context, org string, d Demand) error {
	return s.tx(ctx, func(tx *txn) error { return admit(ctx, tx, org, d) })
}

// listOf lists the rows of table that belong to org ("" for every org's),
// in order, scanned by scan.
func listOf[T any](ctx context.Context, db *conn, table, columns, order, org string, scan func(scanner) (*T, error)) ([]*T, error) {
	q := `SELECT ` + columns + ` FROM ` + table
	var args []any
	if org != "" {
		q += ` WHERE org = ?`
		args = append(args, org)
	}
	rows, err := db.QueryContext(ctx, q+` ORDER BY `+order, args...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", table, err)
	}
	defer rows.Close()
	var out []*T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", table, err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// deleteOf deletes the row id of table that belongs to org ("" for any
// org's); ErrNotFound if there is none.
func deleteOf(ctx context.Context, db *conn, table, org, id string) error {
	q := `DELETE FROM ` + table + ` WHERE id = ?`
	args := []any{id}
	if org != "" {
		q += ` AND org = ?`
		args = append(args, org)
	}
	res, err := db.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("delete %s from %s: %w", id, table, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}
