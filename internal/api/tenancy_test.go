package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/internal/apikey"
	"github.com/warrenhq/warren/internal/secrets"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// tenancyServer is the API over a real SQLite store and vault, with no
// sandbox manager: the tenancy routes need none.
type tenancyServer struct {
	t     *testing.T
	srv   *Server
	st    *store.Store
	dir   string
	admin string
}

func newTenancyServer(t *testing.T) *tenancyServer {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "warren.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keys, err := secrets.Load(dir, "", "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	vault := &secrets.Vault{Store: st, Keys: keys, NewID: func() string { n++; return "sec_" + strings.Repeat("a", 19) + string(rune('a'+n)) }}
	srv := New(st, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.Secrets = vault
	admin, _ := apikey.New()
	if err := st.InsertAPIKey(ctx, store.APIKey{ID: apikey.ID(admin), Org: wire.DefaultOrgID, Name: "admin", Hash: apikey.Hash(admin),
		Scopes: []string{wire.ScopeAdmin}, Bootstrap: true, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	return &tenancyServer{t: t, srv: srv, st: st, dir: dir, admin: admin}
}

// do makes a request with key (in Authorization, or X-API-Key when it
// starts with "x:") and decodes a 2xx answer into out.
func (ts *tenancyServer) do(method, path, key string, body any, out any) (int, wire.Error) {
	ts.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = "192.0.2.1:1234"
	if k, ok := strings.CutPrefix(key, "x:"); ok {
		req.Header.Set("X-API-Key", k)
	} else if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	rec := httptest.NewRecorder()
	ts.srv.ServeHTTP(rec, req)
	var e wire.ErrorBody
	if rec.Code >= 300 {
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
	} else if out != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			ts.t.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
		}
	}
	return rec.Code, e.Error
}

func (ts *tenancyServer) key(orgID string, scopes ...string) string {
	ts.t.Helper()
	var k wire.APIKeyCreated
	if st, e := ts.do("POST", "/v1/api-keys", ts.admin, wire.APIKeyRequest{Name: "k", OrgID: orgID, Scopes: scopes}, &k); st != 201 {
		ts.t.Fatalf("create key: %d %+v", st, e)
	}
	return k.Key
}

func TestOrgsAndKeys(t *testing.T) {
	ts := newTenancyServer(t)
	var acme wire.Org
	if st, e := ts.do("POST", "/v1/orgs", ts.admin, wire.OrgRequest{Name: "acme"}, &acme); st != 201 {
		t.Fatalf("create org: %d %+v", st, e)
	}
	if st, e := ts.do("POST", "/v1/orgs", ts.admin, wire.OrgRequest{Name: "acme"}, nil); st != 409 {
		t.Fatalf("a taken name: %d %+v", st, e)
	}
	if st, e := ts.do("POST", "/v1/orgs", ts.admin, wire.OrgRequest{Name: "../x"}, nil); st != 400 || e.Field != "name" {
		t.Fatalf("a bad name: %d %+v", st, e)
	}
	orgAdmin := ts.key(acme.ID, wire.ScopeAdmin)
	reader := ts.key(acme.ID, wire.ScopeSandboxesRead)

	// An org's admin administers only its org.
	if st, _ := ts.do("POST", "/v1/orgs", orgAdmin, wire.OrgRequest{Name: "mine"}, nil); st != 403 {
		t.Fatalf("an org admin creates an org: %d", st)
	}
	if st, _ := ts.do("PUT", "/v1/orgs/"+acme.ID+"/quotas", orgAdmin, wire.Quotas{MaxSandboxes: 1000}, nil); st != 403 {
		t.Fatalf("an org admin raises its own quotas: %d", st)
	}
	if st, _ := ts.do("GET", "/v1/orgs/"+wire.DefaultOrgID, orgAdmin, nil, nil); st != 404 {
		t.Fatalf("an org admin reads another org: %d", st)
	}
	var list wire.OrgList
	ts.do("GET", "/v1/orgs", orgAdmin, nil, &list)
	if len(list.Orgs) != 1 || list.Orgs[0].ID != acme.ID {
		t.Fatalf("an org admin's org list: %+v", list)
	}
	if st, e := ts.do("POST", "/v1/api-keys", orgAdmin, wire.APIKeyRequest{Name: "x", Scopes: []string{wire.ScopeMetricsRead}}, nil); st != 403 {
		t.Fatalf("an org admin grants metrics:read: %d %+v", st, e)
	}
	if st, _ := ts.do("POST", "/v1/api-keys", orgAdmin, wire.APIKeyRequest{Name: "x", OrgID: wire.DefaultOrgID, Scopes: []string{wire.ScopeAdmin}}, nil); st != 404 {
		t.Fatalf("an org admin makes a key for another org: %d", st)
	}
	// Bad key requests name their field and store nothing.
	for _, c := range []struct {
		req   wire.APIKeyRequest
		field string
	}{
		{wire.APIKeyRequest{Name: "x"}, "scopes"},
		{wire.APIKeyRequest{Name: "x", Scopes: []string{"root"}}, "scopes[0]"},
		{wire.APIKeyRequest{Scopes: []string{"admin"}}, "name"},
		{wire.APIKeyRequest{Name: "x", Scopes: []string{"admin"}, ExpiresInSeconds: -1}, "expires_in_seconds"},
		{wire.APIKeyRequest{Name: "x", Scopes: []string{"admin"}, Format: "aws"}, "format"},
	} {
		before, _ := ts.st.ListAPIKeys(context.Background(), "")
		if st, e := ts.do("POST", "/v1/api-keys", ts.admin, c.req, nil); st != 400 || e.Field != c.field {
			t.Errorf("%+v: %d %+v; want 400 naming %s", c.req, st, e, c.field)
		}
		if after, _ := ts.st.ListAPIKeys(context.Background(), ""); len(after) != len(before) {
			t.Errorf("a refused key was stored")
		}
	}
	// The listing never shows a key, only its prefix.
	var keys wire.APIKeyList
	ts.do("GET", "/v1/api-keys?org_id="+acme.ID, ts.admin, nil, &keys)
	if len(keys.Keys) != 2 {
		t.Fatalf("keys of acme: %+v", keys)
	}
	raw, _ := json.Marshal(keys)
	if strings.Contains(string(raw), orgAdmin) || strings.Contains(string(raw), reader) ||
		!strings.HasPrefix(orgAdmin, keys.Keys[0].Prefix) && !strings.HasPrefix(orgAdmin, keys.Keys[1].Prefix) {
		t.Fatalf("the listing shows a key: %s", raw)
	}

	// A read-only key reads and cannot write; X-API-Key works as well.
	if st, _ := ts.do("GET", "/v1/orgs/"+acme.ID+"/quotas", "x:"+reader, nil, nil); st != 200 {
		t.Fatalf("a reader reads its quotas: %d", st)
	}
	if st, e := ts.do("POST", "/v1/secrets", reader, wire.SecretRequest{Name: "s", Value: "v"}, nil); st != 403 {
		t.Fatalf("a reader writes a secret: %d %+v", st, e)
	}
	// Revoked: refused at once.
	var mine wire.APIKeyList
	ts.do("GET", "/v1/api-keys", orgAdmin, nil, &mine)
	var readerID string
	for _, k := range mine.Keys {
		if strings.HasPrefix(reader, k.Prefix) && k.Scopes[0] == wire.ScopeSandboxesRead {
			readerID = k.ID
		}
	}
	if st, e := ts.do("DELETE", "/v1/api-keys/"+readerID, orgAdmin, nil, nil); st != 204 {
		t.Fatalf("revoke: %d %+v", st, e)
	}
	if st, _ := ts.do("GET", "/v1/orgs/"+acme.ID, reader, nil, nil); st != 401 {
		t.Fatalf("a revoked key: %d", st)
	}
	// Expired: refused.
	short := ts.key(acme.ID, wire.ScopeSandboxesRead)
	if err := ts.st.DeleteAPIKey(context.Background(), "", apikey.ID(short)); err != nil {
		t.Fatal(err)
	}
	if err := ts.st.InsertAPIKey(context.Background(), store.APIKey{ID: apikey.ID(short), Org: acme.ID, Name: "old", Hash: apikey.Hash(short),
		Scopes: []string{wire.ScopeSandboxesRead}, CreatedAt: time.Now().Add(-time.Hour), ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if st, e := ts.do("GET", "/v1/orgs/"+acme.ID, short, nil, nil); st != 401 || !strings.Contains(e.Message, "expired") {
		t.Fatalf("an expired key: %d %+v", st, e)
	}
	// An E2B-shaped key.
	var e2bKey wire.APIKeyCreated
	ts.do("POST", "/v1/api-keys", ts.admin, wire.APIKeyRequest{Name: "e2b", Scopes: []string{"sandboxes:write"}, Format: "e2b"}, &e2bKey)
	if !strings.HasPrefix(e2bKey.Key, "e2b_") || len(e2bKey.Key) != 44 {
		t.Fatalf("e2b key %q", e2bKey.Key)
	}
	// The org goes with its keys; the default org stays.
	if st, e := ts.do("DELETE", "/v1/orgs/"+acme.ID, ts.admin, nil, nil); st != 204 {
		t.Fatalf("delete org: %d %+v", st, e)
	}
	if st, _ := ts.do("GET", "/v1/orgs/"+acme.ID, orgAdmin, nil, nil); st != 401 {
		t.Fatalf("a deleted org's key: %d", st)
	}
	if st, _ := ts.do("DELETE", "/v1/orgs/"+wire.DefaultOrgID, ts.admin, nil, nil); st != 409 {
		t.Fatalf("delete the default org: %d", st)
	}
}

func TestSecretsStayInTheirOrgAndSealed(t *testing.T) {
	ts := newTenancyServer(t)
	var a, b wire.Org
	ts.do("POST", "/v1/orgs", ts.admin, wire.OrgRequest{Name: "a"}, &a)
	ts.do("POST", "/v1/orgs", ts.admin, wire.OrgRequest{Name: "b"}, &b)
	ka, kb := ts.key(a.ID, wire.ScopeSecretsWrite), ts.key(b.ID, wire.ScopeSecretsWrite)
	const value = "sk-live-THE-VALUE-0123456789"
	var sec wire.Secret
	if st, e := ts.do("POST", "/v1/secrets", ka, wire.SecretRequest{Name: "openai", Value: value, AllowedHosts: []string{"API.openai.com", "*.example.com"}}, &sec); st != 201 {
		t.Fatalf("create secret: %d %+v", st, e)
	}
	if sec.AllowedHosts[0] != "api.openai.com" {
		t.Fatalf("hosts are not normalised: %+v", sec)
	}
	for _, bad := range []struct {
		req   wire.SecretRequest
		field string
	}{
		{wire.SecretRequest{Name: "", Value: "v"}, "name"},
		{wire.SecretRequest{Name: "x", Value: ""}, "value"},
		{wire.SecretRequest{Name: "x", Value: "v", AllowedHosts: []string{"http://x"}}, "allowed_hosts[0]"},
	} {
		if st, e := ts.do("POST", "/v1/secrets", ka, bad.req, nil); st != 400 || e.Field != bad.field {
			t.Errorf("%+v: %d %+v", bad.req, st, e)
		}
	}
	// The other org sees nothing of it, and may use the name itself.
	for _, c := range []struct{ method, path string }{{"GET", "/v1/secrets/openai"}, {"GET", "/v1/secrets/" + sec.ID}, {"DELETE", "/v1/secrets/openai"}} {
		if st, _ := ts.do(c.method, c.path, kb, nil, nil); st != 404 {
			t.Errorf("%s %s by another org: %d", c.method, c.path, st)
		}
	}
	var bl wire.SecretList
	ts.do("GET", "/v1/secrets", kb, nil, &bl)
	if len(bl.Secrets) != 0 {
		t.Fatalf("another org lists %+v", bl)
	}
	if st, _ := ts.do("POST", "/v1/secrets", kb, wire.SecretRequest{Name: "openai", Value: "other"}, nil); st != 201 {
		t.Fatalf("the same name in another org: %d", st)
	}
	if st, _ := ts.do("POST", "/v1/secrets", ka, wire.SecretRequest{Name: "openai", Value: "again"}, nil); st != 409 {
		t.Fatalf("a taken name: %d", st)
	}
	// No answer and no byte of the database holds the value.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/secrets", nil)
	req.Header.Set("Authorization", "Bearer "+ka)
	ts.srv.ServeHTTP(rec, req)
	if strings.Contains(rec.Body.String(), value) {
		t.Fatal("the list shows the value")
	}
	ts.st.Close()
	files, _ := filepath.Glob(filepath.Join(ts.dir, "warren.db*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte(value)) {
			t.Fatalf("%s holds the value in plain text", f)
		}
	}
	if fi, err := os.Stat(filepath.Join(ts.dir, secrets.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key file: %v %v", fi, err)
	}
}

func TestQuotasAPI(t *testing.T) {
	ts := newTenancyServer(t)
	var q wire.OrgQuotas
	if st, e := ts.do("PUT", "/v1/orgs/default/quotas", ts.admin, map[string]any{"max_sandboxes": 5, "max_cpu": 2.5}, &q); st != 200 || q.Quotas.MaxSandboxes != 5 {
		t.Fatalf("set quotas: %d %+v %+v", st, e, q)
	}
	if st, e := ts.do("PUT", "/v1/orgs/default/quotas", ts.admin, map[string]any{"max_memory_mb": -1}, nil); st != 400 || e.Field != "max_memory_mb" {
		t.Fatalf("negative quota: %d %+v", st, e)
	}
	if st, e := ts.do("PUT", "/v1/orgs/default/quotas", ts.admin, map[string]any{"max_pizza": 1}, nil); st != 400 || e.Field != "max_pizza" {
		t.Fatalf("unknown quota: %d %+v", st, e)
	}
	ts.do("GET", "/v1/orgs/default/quotas", ts.admin, nil, &q)
	if q.Quotas.MaxCPU != 2.5 || q.Quotas.MaxMemoryMB != 0 {
		t.Fatalf("a refused change changed the quotas: %+v", q)
	}
}

// Keys cannot be guessed at speed: after a burst of failures from one
// address, its requests are refused before any key is looked at, even a
// good one; other addresses are not affected.
func TestAuthFailuresAreRateLimited(t *testing.T) {
	ts := newTenancyServer(t)
	for range failBurst {
		if st, _ := ts.do("GET", "/v1/orgs", "wrn_wrongwrongwrongwrong", nil, nil); st != 401 {
			t.Fatalf("a wrong key: %d", st)
		}
	}
	if st, e := ts.do("GET", "/v1/orgs", "wrn_wrongwrongwrongwrong", nil, nil); st != 429 {
		t.Fatalf("past the burst: %d %+v", st, e)
	}
	if st, _ := ts.do("GET", "/v1/orgs", ts.admin, nil, nil); st != 429 {
		t.Fatalf("a good key from a blocked address: %d", st)
	}
	req := httptest.NewRequest("GET", "/v1/orgs", nil)
	req.RemoteAddr = "198.51.100.7:999"
	req.Header.Set("Authorization", "Bearer "+ts.admin)
	rec := httptest.NewRecorder()
	ts.srv.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("another address: %d", rec.Code)
	}
}

func TestTally(t *testing.T) {
	day := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ps := []store.Period{
		// 23:00 to 01:00 across midnight: an hour on each day.
		{SandboxID: "a", Start: day.Add(-time.Hour), End: day.Add(time.Hour), CPU: 2, MemoryMB: 1024, DiskMB: 2048},
		// Still open: runs to now.
		{SandboxID: "b", Start: day.Add(10 * time.Hour), CPU: 1, MemoryMB: 512},
	}
	now := day.Add(11 * time.Hour)
	u := tally(ps, day.Add(-24*time.Hour), day.Add(24*time.Hour), now, "day")
	if len(u.Rows) != 2 || u.Rows[0].Day != "2026-02-28" || u.Rows[0].SandboxSeconds != 3600 || u.Rows[1].SandboxSeconds != 3600+3600 {
		t.Fatalf("by day: %+v", u.Rows)
	}
	if u.Total.CPUSeconds != 2*7200+3600 || u.Total.MemoryGiBSeconds != 7200+1800 || u.Total.DiskGiBSeconds != 2*7200 {
		t.Fatalf("total: %+v", u.Total)
	}
	// A window cuts periods at its edges.
	u = tally(ps, day, day.Add(30*time.Minute), now, "sandbox")
	if len(u.Rows) != 1 || u.Rows[0].SandboxID != "a" || u.Rows[0].SandboxSeconds != 1800 {
		t.Fatalf("window: %+v", u.Rows)
	}
}
