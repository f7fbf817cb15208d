package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// APIKey is a stored key; only its hash is kept.
type APIKey struct {
	ID     string
	Org    string
	Name   string
	Hash   string
	Prefix string
	Scopes []string
	// Bootstrap marks the key warren made or WARREN_ADMIN_KEY set.
	Bootstrap bool
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
}

const keyColumns = `id, org, name, hash, prefix, scopes, bootstrap, created_at, expires_at`

func scanKey(r scanner) (*APIKey, error) {
	var k APIKey
	var scopes string
	var created, expires int64
	if err := r.Scan(&k.ID, &k.Org, &k.Name, &k.Hash, &k.Prefix, &scopes, &k.Bootstrap, &created, &expires); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(scopes), &k.Scopes); err != nil {
		return nil, fmt.Errorf("decode scopes of key %s: %w", k.ID, err)
	}
	k.CreatedAt, k.ExpiresAt = fromMillis(created), fromMillis(expires)
	return &k, nil
}

// InsertAPIKey stores a key. Its org must exist.
func (s *Store) InsertAPIKey(ctx context.Context, k APIKey) error {
	scopes, _ := json.Marshal(k.Scopes)
	if k.Scopes == nil {
		scopes = []byte("[]")
	}
	res, err := s.db.ExecContext(ctx, `INSERT INTO api_keys(`+keyColumns+`)
		SELECT ?,?,?,?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM orgs WHERE id = ?)`,
		k.ID, k.Org, k.Name, k.Hash, k.Prefix, string(scopes), k.Bootstrap, millis(k.CreatedAt), millis(k.ExpiresAt), k.Org)
	if err != nil {
		return fmt.Errorf("insert api key: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("org %s: %w", k.Org, ErrNotFound)
	}
	return nil
}

// APIKeyByHash finds the key with this hash, expired or not.
func (s *Store) APIKeyByHash(ctx context.Context, hash string) (*APIKey, error) {
	k, err := scanKey(s.db.QueryRowContext(ctx, `SELECT `+keyColumns+` FROM api_keys WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("look up api key: %w", err)
	}
	return k, nil
}

// ListAPIKeys lists the keys of org ("" for every org), oldest first.
func (s *Store) ListAPIKeys(ctx context.Context, org string) ([]*APIKey, error) {
	return listOf(ctx, s.db, "api_keys", keyColumns, "created_at, id", org, scanKey)
}

// DeleteAPIKey revokes a key of org ("" for any org).
func (s *Store) DeleteAPIKey(ctx context.Context, org, id string) error {
	return deleteOf(ctx, s.db, "api_keys", org, id)
}

// DeleteBootstrapKeysExcept removes the bootstrap keys but for the one
// with hash keep: a rotated WARREN_ADMIN_KEY replaces the ones before it.
func (s *Store) DeleteBootstrapKeysExcept(ctx context.Context, keep string) (int64, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM api_keys WHERE bootstrap = 1 AND hash != ?`, keep)
	if err != nil {
		return 0, fmt.Errorf("delete api keys: %w", err)
	}
	return res.RowsAffected()
}
