package secrets

import (
	"context"
	"encoding/hex"
	"errors"
	"path/filepath"
	"testing"

	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

func TestSealBindsOrgAndID(t *testing.T) {
	k, err := Load(t.TempDir(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	keyID, nonce, ct, err := k.Seal(kind, "acme", "sec_1", []byte("value"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := k.Open(kind, "acme", "sec_1", keyID, nonce, ct); err != nil || string(pt) != "value" {
		t.Fatalf("open: %q %v", pt, err)
	}
	// Moved to another org or row, it does not open.
	for _, c := range [][2]string{{"other", "sec_1"}, {"acme", "sec_2"}} {
		if _, err := k.Open(kind, c[0], c[1], keyID, nonce, ct); err == nil {
			t.Fatalf("opened as %v", c)
		}
	}
	if _, err := k.Open(kind, "acme", "sec_1", "0000000000000000", nonce, ct); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("unknown key: %v", err)
	}
}

func TestBadMasterKeys(t *testing.T) {
	for _, bad := range []string{"short", hex.EncodeToString(make([]byte, 31)), "zz" + hex.EncodeToString(make([]byte, 31))} {
		if _, err := Load(t.TempDir(), bad, ""); err == nil {
			t.Errorf("%q was taken as a master key", bad)
		}
	}
}

// A new master key takes over: what the old one sealed is resealed at
// start, and opens without the old key afterwards.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "warren.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old := hex.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	k1, err := Load(dir, old, "")
	if err != nil {
		t.Fatal(err)
	}
	v1 := &Vault{Store: st, Keys: k1, NewID: func() string { return "sec_1" }}
	if _, err := v1.Create(ctx, wire.DefaultOrgID, wire.SecretRequest{Name: "s", Value: "the value"}); err != nil {
		t.Fatal(err)
	}
	// Without the old key, the secret cannot be opened.
	fresh := hex.EncodeToString([]byte("fedcba9876543210fedcba9876543210"))
	k2, _ := Load(t.TempDir(), fresh, "")
	if _, err := (&Vault{Store: st, Keys: k2}).Resolve(ctx, wire.DefaultOrgID, []string{"s"}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("opened without its key: %v", err)
	}
	k3, err := Load(t.TempDir(), fresh, old)
	if err != nil {
		t.Fatal(err)
	}
	v3 := &Vault{Store: st, Keys: k3}
	if n, err := v3.Rotate(ctx); err != nil || n != 1 {
		t.Fatalf("rotate: %d %v", n, err)
	}
	vals, err := (&Vault{Store: st, Keys: k2}).Resolve(ctx, wire.DefaultOrgID, []string{"s"})
	if err != nil || vals["s"].Value != "the value" {
		t.Fatalf("after rotation, the new key alone: %+v %v", vals, err)
	}
	if _, err := v3.Resolve(ctx, wire.DefaultOrgID, []string{"nope"}); !errors.Is(err, ErrNoSecret) {
		t.Fatalf("a missing secret: %v", err)
	}
}
