package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/pressly/goose/v3"
)

// dialect is what differs between the two databases warren keeps its
// state in. The queries are written once, in SQLite's spelling with ?
// placeholders; for PostgreSQL they are rebound to $n as they are sent.
type dialect struct {
	name     string // "sqlite" or "postgres"
	goose    goose.Dialect
	postgres bool
}

var (
	sqlite   = dialect{name: "sqlite", goose: goose.DialectSQLite3}
	postgres = dialect{name: "postgres", goose: goose.DialectPostgres, postgres: true}
)

// IsPostgres says whether target names a PostgreSQL database rather than
// a SQLite file.
func IsPostgres(target string) bool {
	return strings.HasPrefix(target, "postgres://") || strings.HasPrefix(target, "postgresql://")
}

// rebind turns ? placeholders into $1, $2, ... outside quoted strings.
func (d dialect) rebind(q string) string {
	if !d.postgres || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\'':
			quoted = !quoted
		case c == '?' && !quoted:
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// args adapts arguments: PostgreSQL's INTEGER columns take no Go bool, so
// flags travel as 0 and 1 on both (and scan back into bool on both).
func (d dialect) args(args []any) []any {
	if !d.postgres {
		return args
	}
	for i, a := range args {
		if b, ok := a.(bool); ok {
			if b {
				args[i] = 1
			} else {
				args[i] = 0
			}
		}
	}
	return args
}

// jsonField is an expression for the string value of key in the JSON
// object in column, and the argument that names the key.
func (d dialect) jsonField(column, key string) (string, any) {
	if d.postgres {
		return "(" + column + "::jsonb ->> ?)", key
	}
	return "json_extract(" + column + ", ?)", `$."` + strings.ReplaceAll(key, `"`, `\"`) + `"`
}

// conn is a database handle that speaks the store's dialect.
type conn struct {
	*sql.DB
	d dialect
}

func (c *conn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return c.DB.ExecContext(ctx, c.d.rebind(q), c.d.args(args)...)
}

func (c *conn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return c.DB.QueryContext(ctx, c.d.rebind(q), c.d.args(args)...)
}

func (c *conn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return c.DB.QueryRowContext(ctx, c.d.rebind(q), c.d.args(args)...)
}

// txn is a transaction that speaks the store's dialect.
type txn struct {
	*sql.Tx
	d dialect
}

func (t *txn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

func (t *txn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

func (t *txn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.d.rebind(q), t.d.args(args)...)
}

// querier is what a read needs, in or out of a transaction.
type querier interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}

// isUnique says whether err is a uniqueness violation.
func isUnique(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// retryable says whether a transaction failed only because a concurrent
// one won: PostgreSQL's serializable isolation aborts the loser, which
// may simply run again.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// tx runs fn in a transaction, committing if it returns nil. SQLite has
// one connection, so its transactions run one at a time; PostgreSQL's
// run serializable, so a check-then-write (a quota, a node's capacity)
// never passes twice on the same headroom, and one aborted by a
// concurrent winner runs again.
func (s *Store) tx(ctx context.Context, fn func(*txn) error) error {
	opts := &sql.TxOptions{}
	if s.db.d.postgres {
		opts.Isolation = sql.LevelSerializable
	}
	for attempt := 0; ; attempt++ {
		err := s.once(ctx, opts, fn)
		if err == nil || !retryable(err) || attempt >= 30 {
			return err
		}
		wait := time.Duration(1+rand.IntN(5<<min(attempt, 5))) * time.Millisecond
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

func (s *Store) once(ctx context.Context, opts *sql.TxOptions, fn func(*txn) error) error {
	tx, err := s.db.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(&txn{Tx: tx, d: s.db.d}); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}
