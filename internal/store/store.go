// Package store keeps warren's durable state: sandboxes, nodes, orgs, keys,
// secrets, volumes and usage. Every state change is one SQL statement or
// transaction, so a crash leaves each row in a state it really passed
// through. One node keeps it in an embedded SQLite file; several share one
// PostgreSQL database.
package store

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	neturl "net/url"
	"os"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	_ "modernc.org/sqlite"
)

// ErrNotFound is returned for a missing row.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a row is not in a state the change allows.
var ErrConflict = errors.New("state conflict")

// Store is warren's database.
type Store struct{ db *conn }

// migrations hold the schema, one numbered file per change and dialect
// (the same version is the same schema in both); Open applies the ones a
// database lacks. PostgreSQL's start at the version that first ran on it.
//
//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrations embed.FS

// ErrNewerSchema is returned for a database that a newer warren has
// migrated past what this one knows.
var ErrNewerSchema = errors.New("database schema is newer than this warren")

// Open opens the database target names: a postgres:// URL, or the path of
// a SQLite file (created if needed). Its schema is brought up to date.
func Open(ctx context.Context, target string) (*Store, error) {
	if IsPostgres(target) {
		return openPostgres(ctx, target)
	}
	return openSQLite(ctx, target)
}

func openPostgres(ctx context.Context, url string) (*Store, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", Redact(url), err)
	}
	db.SetMaxOpenConns(16)
	db.SetConnMaxIdleTime(time.Minute)
	c := &conn{DB: db, d: postgres}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to the store %s: %w", Redact(url), err)
	}
	if err := migrate(ctx, c, Redact(url)); err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: c}, nil
}

// Redact is url with its password, if any, replaced, for messages.
func Redact(target string) string {
	u, err := neturl.Parse(target)
	if err != nil || u.User == nil {
		return target
	}
	if _, ok := u.User.Password(); ok {
		u.User = neturl.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Dialect is "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.db.d.name }

func openSQLite(ctx context.Context, path string) (*Store, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// One writer at a time is SQLite's rule; one connection keeps
	// transactions from tripping over each other's locks.
	db.SetMaxOpenConns(1)
	c := &conn{DB: db, d: sqlite}
	if err := migrate(ctx, c, path); err != nil {
		db.Close()
		return nil, err
	}
	// Only warren reads its database.
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(f, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			db.Close()
			return nil, fmt.Errorf("restrict %s: %w", f, err)
		}
	}
	return &Store{db: c}, nil
}

// migrate brings the schema up to date, and refuses a database that a
// newer warren has changed: this one would misread it.
func migrate(ctx context.Context, db *conn, path string) error {
	p, err := provider(db)
	if err != nil {
		return err
	}
	sources := p.ListSources()
	latest := sources[len(sources)-1].Version
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("read the schema version of %s: %w", path, err)
	}
	if current > latest {
		return fmt.Errorf("%w: %s is at schema version %d, and this warren knows up to %d; run the warren that wrote it (or a newer one), or restore a backup from before the upgrade",
			ErrNewerSchema, path, current, latest)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate %s from schema version %d to %d: %w", path, current, latest, err)
	}
	return nil
}

func provider(db *conn) (*goose.Provider, error) {
	fsys, err := fs.Sub(migrations, "migrations/"+db.d.name)
	if err != nil {
		return nil, err
	}
	opts := []goose.ProviderOption{goose.WithTableName("schema_versions"), goose.WithDisableGlobalRegistry(true)}
	if db.d.postgres {
		// Nodes starting together migrate one at a time.
		locker, err := lock.NewPostgresSessionLocker(lock.WithLockTimeout(1, 300))
		if err != nil {
			return nil, err
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	return goose.NewProvider(db.d.goose, db.DB, fsys, opts...)
}

// SchemaVersion is the database's schema version.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	p, err := provider(s.db)
	if err != nil {
		return 0, err
	}
	return p.GetDBVersion(ctx)
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// RevokeToken records a preview token as revoked until it would have
// expired anyway; expired records are dropped.
func (s *Store) RevokeToken(ctx context.Context, tokenID, sandboxID string, expires time.Time) error {
	now := time.Now().UnixMilli()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM revoked_tokens WHERE expires_at < ?`, now); err != nil {
		return fmt.Errorf("prune revoked tokens: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO revoked_tokens(id, sandbox_id, expires_at) VALUES(?,?,?)
		ON CONFLICT (id) DO UPDATE SET sandbox_id = excluded.sandbox_id, expires_at = excluded.expires_at`,
		tokenID, sandboxID, expires.UnixMilli()); err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}

// TokenRevoked says whether a preview token id was revoked.
func (s *Store) TokenRevoked(ctx context.Context, tokenID string) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM revoked_tokens WHERE id = ?`, tokenID).Scan(&n); err != nil {
		return false, fmt.Errorf("look up revoked token: %w", err)
	}
	return n > 0, nil
}

// CountByState counts a node's sandboxes ("" for every node's) by state
// and runtime, deleted ones left out.
func (s *Store) CountByState(ctx context.Context, node string) (map[[2]string]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, runtime, COUNT(*) FROM sandboxes WHERE state != 'deleted' AND (? = '' OR node IN (?, ''))
		GROUP BY state, runtime`, node, node)
	if err != nil {
		return nil, fmt.Errorf("count sandboxes: %w", err)
	}
	defer rows.Close()
	out := map[[2]string]int{}
	for rows.Next() {
		var st, rt string
		var n int
		if err := rows.Scan(&st, &rt, &n); err != nil {
			return nil, err
		}
		out[[2]string{st, rt}] = n
	}
	return out, rows.Err()
}

// CountAPIKeys counts stored keys.
func (s *Store) CountAPIKeys(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count api keys: %w", err)
	}
	return n, nil
}

// Sandbox is a stored sandbox.
type Sandbox struct {
	ID      string
	Org     string
	State   string
	Runtime string
	Image   string
	// Spec is the create request as accepted, JSON.
	Spec     json.RawMessage
	Metadata map[string]string
	BootPath string
	Timings  map[string]int64
	// Reason says why a sandbox failed or ended.
	Reason       string
	CreatedAt    time.Time
	UpdatedAt    time.Time
	ExpiresAt    time.Time // zero: no deadline
	LastActiveAt time.Time
	EndedAt      time.Time
	// What it holds, for quotas and usage.
	CPU      float64
	MemoryMB int
	DiskMB   int
	// Mounts are the volumes it mounts, recorded with it (insert only).
	Mounts []Mount
	// Node is the node it lives on; "" where a node shares its database
	// with no other.
	Node string
}

// Mount is a sandbox's use of a volume.
type Mount struct {
	VolumeID string
	ReadOnly bool
}

const sandboxColumns = `id, org, state, runtime, image, spec, metadata, boot_path, timings, reason, created_at, updated_at, expires_at, last_active_at, ended_at, cpu, memory_mb, disk_mb, node`

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// InsertSandbox stores a new sandbox, with its volume mounts. If its
// state holds resources, its org's quotas are checked in the same
// transaction (a *QuotaError if they do not allow it); a volume another
// sandbox mounts writable is ErrInUse.
func (s *Store) InsertSandbox(ctx context.Context, sb *Sandbox) error {
	md, _ := json.Marshal(sb.Metadata)
	tm, _ := json.Marshal(sb.Timings)
	if sb.Timings == nil {
		tm = []byte("{}")
	}
	return s.tx(ctx, func(tx *txn) error {
		if in(sb.State, computeStates) {
			if err := admit(ctx, tx, sb.Org, Demand{Sandboxes: 1, CPU: sb.CPU, MemoryMB: sb.MemoryMB, DiskMB: sb.DiskMB, Creates: 1}); err != nil {
				return err
			}
			if err := fits(ctx, tx, sb.Node, true, sb.CPU, sb.MemoryMB, sb.DiskMB); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO sandboxes(`+sandboxColumns+`) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			sb.ID, sb.Org, sb.State, sb.Runtime, sb.Image, string(sb.Spec), string(md), sb.BootPath, string(tm), sb.Reason,
			millis(sb.CreatedAt), millis(sb.UpdatedAt), millis(sb.ExpiresAt), millis(sb.LastActiveAt), millis(sb.EndedAt),
			sb.CPU, sb.MemoryMB, sb.DiskMB, sb.Node)
		if err != nil {
			return fmt.Errorf("insert sandbox %s: %w", sb.ID, err)
		}
		for _, mt := range sb.Mounts {
			if err := mountVolume(ctx, tx, sb.Org, sb.ID, mt); err != nil {
				return err
			}
		}
		if in(sb.State, billedStates) {
			return openPeriod(ctx, tx, sb.ID, time.Now())
		}
		return nil
	})
}

type scanner interface{ Scan(...any) error }

func scanSandbox(r scanner) (*Sandbox, error) {
	var sb Sandbox
	var spec, md, tm string
	var created, updated, expires, active, ended int64
	if err := r.Scan(&sb.ID, &sb.Org, &sb.State, &sb.Runtime, &sb.Image, &spec, &md, &sb.BootPath, &tm, &sb.Reason,
		&created, &updated, &expires, &active, &ended, &sb.CPU, &sb.MemoryMB, &sb.DiskMB, &sb.Node); err != nil {
		return nil, err
	}
	sb.Spec = json.RawMessage(spec)
	if err := json.Unmarshal([]byte(md), &sb.Metadata); err != nil {
		return nil, fmt.Errorf("decode metadata of %s: %w", sb.ID, err)
	}
	if err := json.Unmarshal([]byte(tm), &sb.Timings); err != nil {
		return nil, fmt.Errorf("decode timings of %s: %w", sb.ID, err)
	}
	sb.CreatedAt, sb.UpdatedAt = fromMillis(created), fromMillis(updated)
	sb.ExpiresAt, sb.LastActiveAt, sb.EndedAt = fromMillis(expires), fromMillis(active), fromMillis(ended)
	return &sb, nil
}

// GetSandbox returns one sandbox. An org other than "" must match.
func (s *Store) GetSandbox(ctx context.Context, org, id string) (*Sandbox, error) {
	q := `SELECT ` + sandboxColumns + ` FROM sandboxes WHERE id = ?`
	args := []any{id}
	if org != "" {
		q += ` AND org = ?`
		args = append(args, org)
	}
	sb, err := scanSandbox(s.db.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get sandbox %s: %w", id, err)
	}
	return sb, nil
}

// SandboxNode returns the node a sandbox lives on ("" for a lone
// node's).
func (s *Store) SandboxNode(ctx context.Context, id string) (string, error) {
	var node string
	err := s.db.QueryRowContext(ctx, `SELECT node FROM sandboxes WHERE id = ?`, id).Scan(&node)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("find the node of sandbox %s: %w", id, err)
	}
	return node, nil
}

// Filter selects sandboxes to list.
type Filter struct {
	Org      string   // "" for every org
	States   []string // empty: every state but deleted
	Metadata map[string]string
	// Node, if set, keeps to the sandboxes of that node (and of no node).
	Node  string
	Limit int
}

// ListSandboxes lists sandboxes, newest first.
func (s *Store) ListSandboxes(ctx context.Context, f Filter) ([]*Sandbox, error) {
	var where []string
	var args []any
	if f.Org != "" {
		where = append(where, "org = ?")
		args = append(args, f.Org)
	}
	if f.Node != "" {
		where = append(where, "node IN (?, '')")
		args = append(args, f.Node)
	}
	if len(f.States) > 0 {
		where = append(where, "state IN ("+strings.TrimSuffix(strings.Repeat("?,", len(f.States)), ",")+")")
		for _, st := range f.States {
			args = append(args, st)
		}
	} else {
		where = append(where, "state != 'deleted'")
	}
	for k, v := range f.Metadata {
		expr, key := s.db.d.jsonField("metadata", k)
		where = append(where, expr+" = ?")
		args = append(args, key, v)
	}
	q := `SELECT ` + sandboxColumns + ` FROM sandboxes`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	defer rows.Close()
	var out []*Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, fmt.Errorf("list sandboxes: %w", err)
		}
		out = append(out, sb)
	}
	return out, rows.Err()
}

// Change is applied by Transition along with the new state.
type Change struct {
	BootPath  *string
	Timings   map[string]int64
	Reason    *string
	ExpiresAt *time.Time
	Ended     bool
	// Unchecked skips the quota check: the reconciler records what is
	// so, whatever the quotas say.
	Unchecked bool
}

// Transition moves a sandbox from one of the states in from to state to,
// atomically: if the sandbox is in none of them, nothing changes and
// ErrConflict is returned (ErrNotFound if it does not exist). In the same
// transaction it checks its org's quotas when the sandbox starts holding
// resources again (a resume; *QuotaError), opens or closes its usage
// period, and releases its volumes when it ends.
func (s *Store) Transition(ctx context.Context, id string, from []string, to string, c Change) (*Sandbox, error) {
	var out *Sandbox
	err := s.tx(ctx, func(tx *txn) error {
		row, err := scanSandbox(tx.QueryRowContext(ctx, `SELECT `+sandboxColumns+` FROM sandboxes WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("read sandbox %s: %w", id, err)
		}
		if len(from) > 0 && !in(row.State, from) {
			return ErrConflict
		}
		now := time.Now().UTC()
		if !c.Unchecked && in(to, computeStates) && !in(row.State, computeStates) {
			d := Demand{Sandboxes: 1, CPU: row.CPU, MemoryMB: row.MemoryMB}
			if !in(row.State, diskStates) {
				d.DiskMB = row.DiskMB
			}
			if err := admit(ctx, tx, row.Org, d); err != nil {
				return err
			}
			if err := fits(ctx, tx, row.Node, false, row.CPU, row.MemoryMB, d.DiskMB); err != nil {
				return err
			}
		}
		sets := []string{"state = ?", "updated_at = ?"}
		args := []any{to, now.UnixMilli()}
		if c.BootPath != nil {
			sets = append(sets, "boot_path = ?")
			args = append(args, *c.BootPath)
		}
		if c.Timings != nil {
			tm, _ := json.Marshal(c.Timings)
			sets = append(sets, "timings = ?")
			args = append(args, string(tm))
		}
		if c.Reason != nil {
			sets = append(sets, "reason = ?")
			args = append(args, *c.Reason)
		}
		if c.ExpiresAt != nil {
			sets = append(sets, "expires_at = ?")
			args = append(args, millis(*c.ExpiresAt))
		}
		if c.Ended {
			sets = append(sets, "ended_at = ?")
			args = append(args, now.UnixMilli())
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sandboxes SET `+strings.Join(sets, ", ")+` WHERE id = ?`, append(args, id)...); err != nil {
			return fmt.Errorf("move sandbox %s to %s: %w", id, to, err)
		}
		if err := s.settle(ctx, tx, row, to, now); err != nil {
			return err
		}
		out, err = scanSandbox(tx.QueryRowContext(ctx, `SELECT `+sandboxColumns+` FROM sandboxes WHERE id = ?`, id))
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// settle keeps what follows from a sandbox's state in step with it: its
// usage period is open exactly while it runs, and its volumes are free
// once it has ended.
func (s *Store) settle(ctx context.Context, tx *txn, row *Sandbox, to string, now time.Time) error {
	was, is := in(row.State, billedStates) && row.Org != "", in(to, billedStates) && row.Org != ""
	switch {
	case is && !was:
		if err := openPeriod(ctx, tx, row.ID, now); err != nil {
			return err
		}
	case was && !is:
		if _, err := tx.ExecContext(ctx, `UPDATE usage_periods SET ended_at = ? WHERE sandbox_id = ? AND ended_at = 0`, now.UnixMilli(), row.ID); err != nil {
			return fmt.Errorf("close the usage period of %s: %w", row.ID, err)
		}
	}
	if to == "deleted" || to == "failed" {
		if _, err := tx.ExecContext(ctx, `DELETE FROM volume_mounts WHERE sandbox_id = ?`, row.ID); err != nil {
			return fmt.Errorf("release the volumes of %s: %w", row.ID, err)
		}
	}
	return nil
}

// openPeriod opens a usage period for a sandbox, with what it holds.
func openPeriod(ctx context.Context, tx *txn, id string, at time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO usage_periods(sandbox_id, org, started_at, cpu, memory_mb, disk_mb)
		SELECT id, org, ?, cpu, memory_mb, disk_mb FROM sandboxes WHERE id = ? AND org != ''`, at.UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("open a usage period for %s: %w", id, err)
	}
	return nil
}

// Touch records activity on a sandbox, for the idle timeout.
func (s *Store) Touch(ctx context.Context, id string, at time.Time) error {
	_, err := s.db.ExecContext(ctx, `UPDATE sandboxes SET last_active_at = ? WHERE id = ? AND last_active_at < ?`,
		at.UnixMilli(), id, at.UnixMilli())
	if err != nil {
		return fmt.Errorf("touch sandbox %s: %w", id, err)
	}
	return nil
}

// UpdateSpec replaces a sandbox's stored spec.
func (s *Store) UpdateSpec(ctx context.Context, id string, spec json.RawMessage) error {
	_, err := s.db.ExecContext(ctx, `UPDATE sandboxes SET spec = ?, updated_at = ? WHERE id = ?`, string(spec), time.Now().UnixMilli(), id)
	if err != nil {
		return fmt.Errorf("update sandbox %s: %w", id, err)
	}
	return nil
}

// Claim hands a pooled sandbox to org as a new sandbox: one guarded
// update, so two creates never get the same one, in a transaction that
// checks org's quotas (*QuotaError) and opens its usage period.
func (s *Store) Claim(ctx context.Context, id, org string, metadata map[string]string, spec json.RawMessage, expiresAt time.Time) (*Sandbox, error) {
	md, _ := json.Marshal(metadata)
	var out *Sandbox
	err := s.tx(ctx, func(tx *txn) error {
		var cpu float64
		var mem, disk int
		err := tx.QueryRowContext(ctx, `SELECT cpu, memory_mb, disk_mb FROM sandboxes WHERE id = ? AND state = 'pooled'`, id).Scan(&cpu, &mem, &disk)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("claim pooled sandbox %s: %w", id, err)
		}
		if err := admit(ctx, tx, org, Demand{Sandboxes: 1, CPU: cpu, MemoryMB: mem, DiskMB: disk, Creates: 1}); err != nil {
			return err
		}
		now := time.Now().UTC()
		res, err := tx.ExecContext(ctx, `UPDATE sandboxes SET org = ?, state = 'running', metadata = ?, spec = ?, boot_path = 'hot_pool',
			created_at = ?, updated_at = ?, last_active_at = ?, expires_at = ? WHERE id = ? AND state = 'pooled'`,
			org, string(md), string(spec), now.UnixMilli(), now.UnixMilli(), now.UnixMilli(), millis(expiresAt), id)
		if err != nil {
			return fmt.Errorf("claim pooled sandbox %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrConflict
		}
		if err := openPeriod(ctx, tx, id, now); err != nil {
			return err
		}
		out, err = scanSandbox(tx.QueryRowContext(ctx, `SELECT `+sandboxColumns+` FROM sandboxes WHERE id = ?`, id))
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
