// Package secrets keeps an org's secrets: sealed with AES-256-GCM under a
// master key before they reach the store, opened only to hand a value to
// the sandbox that names it. The store never sees a value.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KeyFile is the master key warren makes in its data dir when none is
// given.
const KeyFile = "master.key"

// Keyring holds the master keys: the current one seals; it and any
// previous ones open.
type Keyring struct {
	current   []byte
	currentID string
	keys      map[string][]byte
}

// KeyID names a master key without revealing it.
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("warren-master-key\x00"), key...))
	return hex.EncodeToString(sum[:8])
}

// ParseKey reads a 32-byte key written as 64 hex digits or base64.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == 32 {
			return b, nil
		}
	}
	return nil, errors.New("a master key is 32 bytes, written as 64 hex digits or in base64")
}

// Load makes the keyring: the given key (WARREN_MASTER_KEY) if any, else
// the data dir's key file, made (0600) on first use. previous keys
// (WARREN_MASTER_KEY_PREVIOUS, comma-separated) and the key file, when a
// key is given, still open what they sealed; Rotate moves it all to the
// current key.
func Load(dataDir, given, previous string) (*Keyring, error) {
	k := &Keyring{keys: map[string][]byte{}}
	path := filepath.Join(dataDir, KeyFile)
	fileKey, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	switch {
	case given != "":
		key, err := ParseKey(given)
		if err != nil {
			return nil, fmt.Errorf("WARREN_MASTER_KEY: %w", err)
		}
		k.current = key
	case fileKey != nil:
		k.current = fileKey
	default:
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("write master key: %w", err)
		}
		k.current = key
	}
	k.currentID = KeyID(k.current)
	k.keys[k.currentID] = k.current
	if fileKey != nil {
		k.keys[KeyID(fileKey)] = fileKey
	}
	for _, p := range strings.Split(previous, ",") {
		if strings.TrimSpace(p) == "" {
			continue
		}
		key, err := ParseKey(p)
		if err != nil {
			return nil, fmt.Errorf("WARREN_MASTER_KEY_PREVIOUS: %w", err)
		}
		k.keys[KeyID(key)] = key
	}
	return k, nil
}

func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read master key: %w", err)
	}
	key, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// CurrentID names the key Seal uses.
func (k *Keyring) CurrentID() string { return k.currentID }

// aad binds a ciphertext to what it is: a value moved to another row (or
// org) does not open.
func aad(kind, org, id string) []byte {
	return []byte("warren\x00" + kind + "\x00" + org + "\x00" + id)
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext under the current key, bound to kind, org and
// id.
func (k *Keyring) Seal(kind, org, id string, plaintext []byte) (keyID string, nonce, ciphertext []byte, err error) {
	a, err := gcm(k.current)
	if err != nil {
		return "", nil, nil, err
	}
	nonce = make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, nil, err
	}
	return k.currentID, nonce, a.Seal(nil, nonce, plaintext, aad(kind, org, id)), nil
}

// ErrUnknownKey is returned for a value sealed under a master key this
// warren was not given.
var ErrUnknownKey = errors.New("sealed under a master key this warren does not have")

// Open decrypts what Seal made.
func (k *Keyring) Open(kind, org, id, keyID string, nonce, ciphertext []byte) ([]byte, error) {
	key, ok := k.keys[keyID]
	if !ok {
		return nil, fmt.Errorf("%s %s: %w (key %s; set WARREN_MASTER_KEY_PREVIOUS to it)", kind, id, ErrUnknownKey, keyID)
	}
	a, err := gcm(key)
	if err != nil {
		return nil, err
	}
	if len(nonce) != a.NonceSize() {
		return nil, fmt.Errorf("%s %s: bad nonce", kind, id)
	}
	pt, err := a.Open(nil, nonce, ciphertext, aad(kind, org, id))
	if err != nil {
		return nil, fmt.Errorf("%s %s does not open: %w", kind, id, err)
	}
	return pt, nil
}
