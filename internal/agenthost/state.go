// Package agenthost runs coding agents (OpenCode) headlessly for
// workspaces: each workspace gets its own sandbox with the directory
// mounted at /workspace and a persistent /persist, OpenCode serving inside
// it, and a token-protected workspace server on the host whose API has the
// shape of OpenWork's server, so its clients can pair.
package agenthost

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Scopes a client token can have. The host token is above all of them.
const (
	ScopeOwner        = "owner"
	ScopeCollaborator = "collaborator"
	ScopeViewer       = "viewer"
)

// WorkspaceRecord is what survives a restart of a workspace.
type WorkspaceRecord struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Path string `json:"path"`
	// Persist is the host directory mounted at /persist (OpenCode's HOME).
	Persist string    `json:"persist"`
	AddedAt time.Time `json:"added_at"`
}

// TokenRecord is a minted client token; only its hash is kept.
type TokenRecord struct {
	ID        string    `json:"id"`
	Hash      string    `json:"hash"`
	Scope     string    `json:"scope"`
	Label     string    `json:"label,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// stateFile is the agent host's state on disk.
type stateFile struct {
	// ClientToken (owner scope) and HostToken are printed at every start
	// for pairing, so they are kept as they are, in a 0600 file.
	ClientToken string            `json:"client_token"`
	HostToken   string            `json:"host_token"`
	Workspaces  []WorkspaceRecord `json:"workspaces"`
	Tokens      []TokenRecord     `json:"tokens"`
}

// state is the loaded state file; every change is written back at once.
type state struct {
	path string
	mu   sync.Mutex
	f    stateFile
}

func loadState(dir string) (*state, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create agent host dir: %w", err)
	}
	s := &state{path: filepath.Join(dir, "state.json")}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read agent host state: %w", err)
	default:
		if err := json.Unmarshal(b, &s.f); err != nil {
			return nil, fmt.Errorf("parse %s: %w", s.path, err)
		}
	}
	if s.f.ClientToken == "" || s.f.HostToken == "" {
		s.f.ClientToken, s.f.HostToken = newToken("wct"), newToken("wht")
		if err := s.saveLocked(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// saveLocked writes the state atomically: a crash leaves the old file or
// the new one, never half of one.
func (s *state) saveLocked() error {
	return writeFileAtomic(s.path, &s.f)
}

// workspace returns the record for a path, adding it if new.
func (s *state) workspace(path, name, persistRoot string) (WorkspaceRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := workspaceID(path)
	for _, w := range s.f.Workspaces {
		if w.ID == id {
			return w, nil
		}
	}
	if name == "" {
		name = filepath.Base(path)
	}
	w := WorkspaceRecord{ID: id, Name: name, Path: path, Persist: filepath.Join(persistRoot, id), AddedAt: time.Now().UTC()}
	if err := os.MkdirAll(w.Persist, 0o700); err != nil {
		return w, fmt.Errorf("create persist dir: %w", err)
	}
	s.f.Workspaces = append(s.f.Workspaces, w)
	return w, s.saveLocked()
}

// workspaceID names a workspace by its real path, so the same directory
// keeps its id (and its persist dir) across restarts.
func workspaceID(path string) string {
	h := sha256.Sum256([]byte(path))
	return "ws_" + hex.EncodeToString(h[:])[:12]
}

func hashToken(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func newToken(prefix string) string {
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the system's randomness failing is not recoverable
	}
	return prefix + "_" + strings.ToLower(tokenEncoding.EncodeToString(b))
}

// mint makes a client token with a scope, keeping only its hash.
func (s *state) mint(scope, label string) (TokenRecord, string, error) {
	switch scope {
	case ScopeOwner, ScopeCollaborator, ScopeViewer:
	default:
		return TokenRecord{}, "", fmt.Errorf("scope %q: want owner, collaborator or viewer", scope)
	}
	tok := newToken("wct")
	rec := TokenRecord{ID: "tok_" + hashToken(tok)[:12], Hash: hashToken(tok), Scope: scope, Label: label, CreatedAt: time.Now().UTC()}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f.Tokens = append(s.f.Tokens, rec)
	return rec, tok, s.saveLocked()
}

// revoke removes a minted token; it reports whether there was one.
func (s *state) revoke(id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range s.f.Tokens {
		if t.ID == id {
			s.f.Tokens = append(s.f.Tokens[:i], s.f.Tokens[i+1:]...)
			return true, s.saveLocked()
		}
	}
	return false, nil
}

// scopeOf says what a bearer token may do: its scope, or "" if unknown.
func (s *state) scopeOf(token string) string {
	if token == "" {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Constant-time comparisons throughout: how long a refusal takes
	// says nothing about how close a guess was.
	scope := ""
	if subtle.ConstantTimeCompare([]byte(token), []byte(s.f.ClientToken)) == 1 {
		scope = ScopeOwner
	}
	h := []byte(hashToken(token))
	for _, t := range s.f.Tokens {
		if subtle.ConstantTimeCompare(h, []byte(t.Hash)) == 1 && scope == "" {
			scope = t.Scope
		}
	}
	return scope
}

func (s *state) tokens() []TokenRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]TokenRecord(nil), s.f.Tokens...)
}

// records lists the recorded workspaces.
func (s *state) records() []WorkspaceRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]WorkspaceRecord(nil), s.f.Workspaces...)
}

// forget removes a workspace's record; its files and persist dir stay.
func (s *state) forget(id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, w := range s.f.Workspaces {
		if w.ID == id {
			s.f.Workspaces = append(s.f.Workspaces[:i], s.f.Workspaces[i+1:]...)
			return true, s.saveLocked()
		}
	}
	return false, nil
}
