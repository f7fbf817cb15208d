package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/warrenhq/warren/wire"
)

// Node is a stored node.
type Node struct {
	ID          string
	URL         string
	State       string
	Capacity    wire.NodeCapacity
	Labels      map[string]string
	StartedAt   time.Time
	HeartbeatAt time.Time
	LeaseUntil  time.Time
}

// ErrNoRoom is returned when a node's capacity cannot take a sandbox.
var ErrNoRoom = errors.New("no room on the node")

const nodeColumns = `id, url, state, capacity, labels, started_at, heartbeat_at, lease_until`

func scanNode(r scanner) (*Node, error) {
	var n Node
	var capacity, labels string
	var started, beat, lease int64
	if err := r.Scan(&n.ID, &n.URL, &n.State, &capacity, &labels, &started, &beat, &lease); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(capacity), &n.Capacity); err != nil {
		return nil, fmt.Errorf("decode capacity of node %s: %w", n.ID, err)
	}
	if err := json.Unmarshal([]byte(labels), &n.Labels); err != nil {
		return nil, fmt.Errorf("decode labels of node %s: %w", n.ID, err)
	}
	n.StartedAt, n.HeartbeatAt, n.LeaseUntil = fromMillis(started), fromMillis(beat), fromMillis(lease)
	return &n, nil
}

// RegisterNode records a node starting: its address, capacity, labels and
// first lease. A node told to drain is draining again; any other becomes
// ready.
func (s *Store) RegisterNode(ctx context.Context, n Node) error {
	c, _ := json.Marshal(n.Capacity)
	l, _ := json.Marshal(n.Labels)
	if n.Labels == nil {
		l = []byte("{}")
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO nodes(`+nodeColumns+`) VALUES(?,?,?,?,?,?,?,?)
		ON CONFLICT (id) DO UPDATE SET url = excluded.url, capacity = excluded.capacity, labels = excluded.labels,
			started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until,
			state = CASE WHEN nodes.drain = 1 THEN 'draining' ELSE 'ready' END`,
		n.ID, n.URL, wire.NodeReady, string(c), string(l), millis(n.StartedAt), millis(n.HeartbeatAt), millis(n.LeaseUntil))
	if err != nil {
		return fmt.Errorf("register node %s: %w", n.ID, err)
	}
	return nil
}

// Heartbeat renews a node's lease until leaseUntil and refreshes what it
// offers. It returns the state the node was in: a node that was lost is
// ready again from here on (or draining, if it was told to drain).
func (s *Store) Heartbeat(ctx context.Context, id string, capacity wire.NodeCapacity, now, leaseUntil time.Time) (was string, err error) {
	c, _ := json.Marshal(capacity)
	err = s.tx(ctx, func(tx *txn) error {
		if err := tx.QueryRowContext(ctx, `SELECT state FROM nodes WHERE id = ?`, id).Scan(&was); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("node %s: %w", id, ErrNotFound)
		} else if err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE nodes SET heartbeat_at = ?, lease_until = ?, capacity = ?,
			state = CASE WHEN state != 'lost' THEN state WHEN drain = 1 THEN 'draining' ELSE 'ready' END WHERE id = ?`,
			millis(now), millis(leaseUntil), string(c), id)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("renew the lease of node %s: %w", id, err)
	}
	return was, nil
}

// LeaveNode is a node stopping on purpose: its lease ends now and it is
// lost at once, as it would be once its lease ran out, so placement and
// requests for its sandboxes stop trying it without waiting for that. A
// drain it was told is kept for its return.
func (s *Store) LeaveNode(ctx context.Context, id string, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE nodes SET lease_until = ?, state = 'lost' WHERE id = ?`, millis(now), id); err != nil {
		return fmt.Errorf("node %s leaves: %w", id, err)
	}
	return nil
}

// ExpireNodes marks lost every node whose lease ended before now, and
// returns their ids. Their sandboxes are left as they are: the node may
// still run them, and shows them again when it returns.
func (s *Store) ExpireNodes(ctx context.Context, now time.Time) ([]string, error) {
	var lost []string
	err := s.tx(ctx, func(tx *txn) error {
		lost = nil
		rows, err := tx.QueryContext(ctx, `SELECT id FROM nodes WHERE state != 'lost' AND lease_until < ?`, millis(now))
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			lost = append(lost, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range lost {
			if _, err := tx.ExecContext(ctx, `UPDATE nodes SET state = 'lost' WHERE id = ? AND lease_until < ?`, id, millis(now)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("expire node leases: %w", err)
	}
	return lost, nil
}

// ListNodes lists the nodes, by id.
func (s *Store) ListNodes(ctx context.Context) ([]*Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+nodeColumns+` FROM nodes ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []*Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// GetNode returns a node by id.
func (s *Store) GetNode(ctx context.Context, id string) (*Node, error) {
	n, err := scanNode(s.db.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get node %s: %w", id, err)
	}
	return n, nil
}

// SetNodeDraining drains a node (no new sandboxes; those it has run on)
// or, with false, makes a draining node ready again. A lost node stays
// lost until its heartbeat returns, and returns drained or not as it was
// last told.
func (s *Store) SetNodeDraining(ctx context.Context, id string, draining bool) (*Node, error) {
	drain, state := 0, wire.NodeReady
	if draining {
		drain, state = 1, wire.NodeDraining
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE nodes SET drain = ?, state = CASE WHEN state = 'lost' THEN 'lost' ELSE ? END WHERE id = ?`,
		drain, state, id); err != nil {
		return nil, fmt.Errorf("set the state of node %s: %w", id, err)
	}
	return s.GetNode(ctx, id)
}

// Allocations sums, by node, what the sandboxes that hold resources ask
// for.
func (s *Store) Allocations(ctx context.Context) (map[string]wire.NodeAllocation, error) {
	return allocations(ctx, s.db, "")
}

// allocations is Allocations of one node ("" for every node), in or out
// of a transaction: the sums a node's reservation and placement use.
func allocations(ctx context.Context, q querier, node string) (map[string]wire.NodeAllocation, error) {
	out := map[string]wire.NodeAllocation{}
	rows, err := q.QueryContext(ctx, `SELECT node, COUNT(*), COALESCE(SUM(cpu), 0), COALESCE(SUM(memory_mb), 0) FROM sandboxes
		WHERE (? = '' OR node = ?) AND state IN (`+placeholders(len(computeStates))+`) GROUP BY node`,
		append([]any{node, node}, stateArgs(computeStates)...)...)
	if err != nil {
		return nil, fmt.Errorf("sum node allocations: %w", err)
	}
	for rows.Next() {
		var id string
		var a wire.NodeAllocation
		if err := rows.Scan(&id, &a.Sandboxes, &a.CPU, &a.MemoryMB); err != nil {
			rows.Close()
			return nil, err
		}
		out[id] = a
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	disk, err := q.QueryContext(ctx, `SELECT node, COALESCE(SUM(disk_mb), 0) FROM sandboxes
		WHERE (? = '' OR node = ?) AND state IN (`+placeholders(len(diskStates))+`) GROUP BY node`,
		append([]any{node, node}, stateArgs(diskStates)...)...)
	if err != nil {
		return nil, fmt.Errorf("sum node disk allocations: %w", err)
	}
	defer disk.Close()
	for disk.Next() {
		var id string
		var mb int
		if err := disk.Scan(&id, &mb); err != nil {
			return nil, err
		}
		a := out[id]
		a.DiskMB = mb
		out[id] = a
	}
	return out, disk.Err()
}

// fits checks, inside the transaction that places a sandbox on node, that
// the node has room for it (and, for a new sandbox, that it is ready): two
// creates never both take the same headroom. A sandbox of no node (a lone
// node's) always fits.
func fits(ctx context.Context, tx *txn, node string, isNew bool, cpu float64, memoryMB, diskMB int) error {
	if node == "" {
		return nil
	}
	n, err := scanNode(tx.QueryRowContext(ctx, `SELECT `+nodeColumns+` FROM nodes WHERE id = ?`, node))
	if errors.Is(err, sql.ErrNoRows) {
		return nil // not registered yet: it is starting, and alone so far
	}
	if err != nil {
		return fmt.Errorf("read node %s: %w", node, err)
	}
	if isNew && n.State != wire.NodeReady {
		return fmt.Errorf("%w: node %s is %s", ErrNoRoom, node, n.State)
	}
	all, err := allocations(ctx, tx, node)
	if err != nil {
		return err
	}
	have := all[node]
	if why := Short(n.Capacity, have, cpu, memoryMB, diskMB); why != "" {
		return fmt.Errorf("%w: node %s: %s", ErrNoRoom, node, why)
	}
	return nil
}

// Short says what a node offering c, whose sandboxes ask for have, lacks
// to take one more asking for cpu, memoryMB and diskMB ("" if nothing).
// The store's reservation and the cluster's placement both judge by it.
func Short(c wire.NodeCapacity, have wire.NodeAllocation, cpu float64, memoryMB, diskMB int) string {
	switch {
	case c.CPU > 0 && have.CPU+cpu > c.CPU+1e-9:
		return fmt.Sprintf("it offers %g CPUs, its sandboxes ask for %g and this one %g", c.CPU, have.CPU, cpu)
	case c.MemoryMB > 0 && have.MemoryMB+memoryMB > c.MemoryMB:
		return fmt.Sprintf("it offers %d MB of memory, its sandboxes ask for %d and this one %d", c.MemoryMB, have.MemoryMB, memoryMB)
	case c.DiskMB > 0 && have.DiskMB+diskMB > c.DiskMB:
		return fmt.Sprintf("it offers %d MB of disk, its sandboxes ask for %d and this one %d", c.DiskMB, have.DiskMB, diskMB)
	}
	return ""
}

// Setting returns the value of a setting every node shares, making it
// with create if no node has yet: the first node to start decides, and the
// others read what it wrote.
func (s *Store) Setting(ctx context.Context, name string, create func() (string, error)) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = ?`, name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("read setting %s: %w", name, err)
	}
	if v, err = create(); err != nil {
		return "", err
	}
	if _, err := s.db.ExecContext(ctx, `INSERT INTO settings(name, value) VALUES(?, ?) ON CONFLICT (name) DO NOTHING`, name, v); err != nil {
		return "", fmt.Errorf("write setting %s: %w", name, err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = ?`, name).Scan(&v); err != nil {
		return "", fmt.Errorf("read setting %s: %w", name, err)
	}
	return v, nil
}

// RandomHex is n random bytes in hex, for a Setting's create.
func RandomHex(n int) func() (string, error) {
	return func() (string, error) {
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		return hex.EncodeToString(b), nil
	}
}

// ForgetNode removes a lost node for good: each of its sandboxes that has
// not ended fails (they were on its disk), freeing what they held, and its
// row goes. A node that is not lost is ErrConflict: drain it first, and
// forget it once its lease has ended.
func (s *Store) ForgetNode(ctx context.Context, id string) (failed int, err error) {
	n, err := s.GetNode(ctx, id)
	if err != nil {
		return 0, err
	}
	if n.State != wire.NodeLost {
		return 0, fmt.Errorf("%w: node %s is %s, not lost", ErrConflict, id, n.State)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM sandboxes WHERE node = ? AND state NOT IN ('deleted', 'failed')`, id)
	if err != nil {
		return 0, fmt.Errorf("list the sandboxes of node %s: %w", id, err)
	}
	var ids []string
	for rows.Next() {
		var sid string
		if err := rows.Scan(&sid); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, sid)
	}
	rows.Close()
	reason := "lost: its node " + id + " was forgotten, and its files were on that node"
	for _, sid := range ids {
		if _, err := s.Transition(ctx, sid, nil, "failed", Change{Reason: &reason, Ended: true, Unchecked: true}); err != nil && !errors.Is(err, ErrNotFound) {
			return failed, fmt.Errorf("fail sandbox %s of node %s: %w", sid, id, err)
		}
		failed++
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM nodes WHERE id = ? AND state = 'lost'`, id); err != nil {
		return failed, fmt.Errorf("forget node %s: %w", id, err)
	}
	return failed, nil
}
