// Package apikey makes API keys and the hashes warren stores instead of
// them.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"strings"
)

// Prefix starts every key warren issues, so leaked keys are easy to spot.
const Prefix = "wrn_"

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// New returns a fresh random key (160 bits) and its id, which is safe to
// show and log.
func New() (key, id string) {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	key = Prefix + enc.EncodeToString(b)
	return key, ID(key)
}

// E2BPrefix starts keys in the shape E2B's SDKs check for: "e2b_" and 40
// hex digits.
const E2BPrefix = "e2b_"

// NewE2B returns a fresh random key in E2B's shape (160 bits).
func NewE2B() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return E2BPrefix + hex.EncodeToString(b)
}

// VisiblePrefix is the part of a key shown to recognise it by: its
// prefix and four more characters.
func VisiblePrefix(key string) string {
	n := 8
	if strings.HasPrefix(key, E2BPrefix) {
		n = len(E2BPrefix) + 4
	}
	return key[:min(n, len(key))]
}

// Hash is what the store keeps. Keys are random and long, so a fast hash
// is enough: there is nothing to brute-force.
func Hash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ID is a short public handle derived from the key's hash.
func ID(key string) string { return "key_" + Hash(key)[:12] }

// Valid reports whether s has the shape of a key.
func Valid(s string) bool {
	return len(s) >= 16 && len(s) <= 256 && !strings.ContainsAny(s, " \t\r\n")
}
