package store

import (
	"context"
	"fmt"
	"time"
)

// Period is a stretch of time a sandbox ran, with what it held.
type Period struct {
	SandboxID string
	Org       string
	Start     time.Time
	End       time.Time // zero while open
	CPU       float64
	MemoryMB  int
	DiskMB    int
}

// Periods lists org's usage periods that overlap [from, to), oldest
// first.
func (s *Store) Periods(ctx context.Context, org string, from, to time.Time) ([]Period, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT sandbox_id, org, started_at, ended_at, cpu, memory_mb, disk_mb FROM usage_periods
		WHERE org = ? AND started_at < ? AND (ended_at = 0 OR ended_at > ?) ORDER BY started_at, id`,
		org, to.UnixMilli(), from.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("read usage of org %s: %w", org, err)
	}
	defer rows.Close()
	var out []Period
	for rows.Next() {
		var p Period
		var start, end int64
		if err := rows.Scan(&p.SandboxID, &p.Org, &start, &end, &p.CPU, &p.MemoryMB, &p.DiskMB); err != nil {
			return nil, err
		}
		p.Start, p.End = fromMillis(start), fromMillis(end)
		out = append(out, p)
	}
	return out, rows.Err()
}

// OpenPeriods counts the usage periods still open, for a sandbox or
// ("") for all.
func (s *Store) OpenPeriods(ctx context.Context, sandboxID string) (int, error) {
	q := `SELECT COUNT(*) FROM usage_periods WHERE ended_at = 0`
	var args []any
	if sandboxID != "" {
		q += ` AND sandbox_id = ?`
		args = append(args, sandboxID)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count open usage periods: %w", err)
	}
	return n, nil
}
