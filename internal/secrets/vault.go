package secrets

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// Bounds on a secret.
const (
	MaxValue        = 64 << 10
	maxAllowedHosts = 32
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidName says whether s can name a secret (or a volume).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// kind is what secrets' ciphertexts are bound to.
const kind = "secret"

// Vault stores and opens secrets.
type Vault struct {
	Store *store.Store
	Keys  *Keyring
	// NewID makes a secret's id.
	NewID func() string
}

// FieldError is bad input, naming the field.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Message }

// Value is an opened secret.
type Value struct {
	ID    string
	Name  string
	Value string
	// AllowedHosts, if any, are the only hosts the value may reach, by
	// egress injection; sandboxes see a placeholder.
	AllowedHosts []string
}

// validHost says whether h names a host or, with "*.", its subdomains.
func validHost(h string) bool {
	h = strings.TrimPrefix(h, "*.")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Create seals and stores a new secret of org.
func (v *Vault) Create(ctx context.Context, org string, req wire.SecretRequest) (*wire.Secret, error) {
	if !ValidName(req.Name) {
		return nil, &FieldError{"name", fmt.Sprintf("secret name %q must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", req.Name)}
	}
	if req.Value == "" || len(req.Value) > MaxValue {
		return nil, &FieldError{"value", fmt.Sprintf("value must be 1 to %d bytes", MaxValue)}
	}
	if strings.ContainsRune(req.Value, 0) {
		return nil, &FieldError{"value", "value may not contain NUL"}
	}
	if len(req.AllowedHosts) > maxAllowedHosts {
		return nil, &FieldError{"allowed_hosts", fmt.Sprintf("at most %d allowed hosts", maxAllowedHosts)}
	}
	hosts := make([]string, 0, len(req.AllowedHosts))
	for i, h := range req.AllowedHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if !validHost(h) {
			return nil, &FieldError{fmt.Sprintf("allowed_hosts[%d]", i), fmt.Sprintf("%q is not a host name (or *.domain)", req.AllowedHosts[i])}
		}
		hosts = append(hosts, h)
	}
	id := v.NewID()
	keyID, nonce, ct, err := v.Keys.Seal(kind, org, id, []byte(req.Value))
	if err != nil {
		return nil, fmt.Errorf("seal secret: %w", err)
	}
	now := time.Now().UTC()
	sc := &store.Secret{ID: id, Org: org, Name: req.Name, KeyID: keyID, Nonce: nonce, Ciphertext: ct, AllowedHosts: hosts, CreatedAt: now, UpdatedAt: now}
	if err := v.Store.InsertSecret(ctx, sc); err != nil {
		return nil, err
	}
	return View(sc), nil
}

// View is what the API shows of a secret: never its value.
func View(sc *store.Secret) *wire.Secret {
	out := &wire.Secret{ID: sc.ID, Name: sc.Name, CreatedAt: sc.CreatedAt, UpdatedAt: sc.UpdatedAt}
	if len(sc.AllowedHosts) > 0 {
		out.AllowedHosts = sc.AllowedHosts
	}
	return out
}

// ErrNoSecret is returned by Resolve for a name org has no secret of.
var ErrNoSecret = errors.New("no such secret")

// Resolve opens org's secrets by name.
func (v *Vault) Resolve(ctx context.Context, org string, names []string) (map[string]Value, error) {
	out := map[string]Value{}
	for _, name := range names {
		if _, ok := out[name]; ok {
			continue
		}
		sc, err := v.Store.GetSecret(ctx, org, name)
		if errors.Is(err, store.ErrNotFound) || err == nil && sc.Name != name {
			return nil, fmt.Errorf("%w: %q", ErrNoSecret, name)
		}
		if err != nil {
			return nil, err
		}
		pt, err := v.Keys.Open(kind, org, sc.ID, sc.KeyID, sc.Nonce, sc.Ciphertext)
		if err != nil {
			return nil, err
		}
		out[name] = Value{ID: sc.ID, Name: name, Value: string(pt), AllowedHosts: sc.AllowedHosts}
	}
	return out, nil
}

// Rotate reseals every secret sealed under an older master key with the
// current one; it returns how many it moved.
func (v *Vault) Rotate(ctx context.Context) (int, error) {
	all, err := v.Store.ListSecrets(ctx, "")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sc := range all {
		if sc.KeyID == v.Keys.CurrentID() {
			continue
		}
		pt, err := v.Keys.Open(kind, sc.Org, sc.ID, sc.KeyID, sc.Nonce, sc.Ciphertext)
		if err != nil {
			return n, err
		}
		keyID, nonce, ct, err := v.Keys.Seal(kind, sc.Org, sc.ID, pt)
		if err != nil {
			return n, err
		}
		if err := v.Store.Reseal(ctx, sc.ID, sc.KeyID, keyID, nonce, ct); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
