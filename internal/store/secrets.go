package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Secret is a stored secret: its value only as ciphertext, sealed under
// the master key KeyID names. Opening it is the caller's (package
// secrets); the store never sees a value.
type Secret struct {
	ID           string
	Org          string
	Name         string
	KeyID        string
	Nonce        []byte
	Ciphertext   []byte
	AllowedHosts []string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

const secretColumns = `id, org, name, key_id, nonce, ciphertext, allowed_hosts, created_at, updated_at`

func scanSecret(r scanner) (*Secret, error) {
	var sc Secret
	var hosts string
	var created, updated int64
	if err := r.Scan(&sc.ID, &sc.Org, &sc.Name, &sc.KeyID, &sc.Nonce, &sc.Ciphertext, &hosts, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(hosts), &sc.AllowedHosts); err != nil {
		return nil, fmt.Errorf("decode allowed hosts of secret %s: %w", sc.ID, err)
	}
	sc.CreatedAt, sc.UpdatedAt = fromMillis(created), fromMillis(updated)
	return &sc, nil
}

// InsertSecret stores a new secret; a name its org uses is ErrExists.
func (s *Store) InsertSecret(ctx context.Context, sc *Secret) error {
	hosts, _ := json.Marshal(sc.AllowedHosts)
	if sc.AllowedHosts == nil {
		hosts = []byte("[]")
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO secrets(`+secretColumns+`) VALUES(?,?,?,?,?,?,?,?,?)`,
		sc.ID, sc.Org, sc.Name, sc.KeyID, sc.Nonce, sc.Ciphertext, string(hosts), millis(sc.CreatedAt), millis(sc.UpdatedAt))
	if isUnique(err) {
		return fmt.Errorf("secret %q: %w", sc.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("insert secret: %w", err)
	}
	return nil
}

// GetSecret returns a secret of org by name or id.
func (s *Store) GetSecret(ctx context.Context, org, nameOrID string) (*Secret, error) {
	sc, err := scanSecret(s.db.QueryRowContext(ctx, `SELECT `+secretColumns+` FROM secrets WHERE org = ? AND (name = ? OR id = ?)`, org, nameOrID, nameOrID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get secret %s: %w", nameOrID, err)
	}
	return sc, nil
}

// ListSecrets lists org's secrets ("" for every org's), by name.
func (s *Store) ListSecrets(ctx context.Context, org string) ([]*Secret, error) {
	return listOf(ctx, s.db, "secrets", secretColumns, "org, name", org, scanSecret)
}

// DeleteSecret removes a secret of org.
func (s *Store) DeleteSecret(ctx context.Context, org, id string) error {
	return deleteOf(ctx, s.db, "secrets", org, id)
}

// Reseal replaces a secret's ciphertext (master key rotation), if it is
// still sealed under the key it was read with.
func (s *Store) Reseal(ctx context.Context, id, oldKeyID, keyID string, nonce, ciphertext []byte) error {
	_, err := s.db.ExecContext(ctx, `UPDATE secrets SET key_id = ?, nonce = ?, ciphertext = ? WHERE id = ? AND key_id = ?`,
		keyID, nonce, ciphertext, id, oldKeyID)
	if err != nil {
		return fmt.Errorf("reseal secret %s: %w", id, err)
	}
	return nil
}
