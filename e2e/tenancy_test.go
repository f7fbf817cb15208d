package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vishvananda/netns"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/wire"
)

// org makes an org and a key of it with scopes, and a client for it
// that deletes the org's sandboxes when the test ends.
func (s *server) org(t *testing.T, name string, scopes ...string) (*client.Org, *client.Client, string) {
	t.Helper()
	ctx := context.Background()
	o, err := s.c.CreateOrg(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.c.CreateAPIKey(ctx, &client.APIKeyRequest{Name: name, OrgID: o.ID, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(s.url, k.Key)
	t.Cleanup(func() {
		list, _ := c.ListSandboxes(context.Background(), client.ListOptions{States: []client.State{"running", "paused", "failed"}})
		for _, sb := range list {
			_, _ = c.DeleteSandbox(context.Background(), sb.ID)
		}
	})
	return o, c, k.Key
}

// TestTenancyIsolation: an org cannot see or touch another org's
// sandboxes, secrets or volumes (404 on every route); keys act by their
// scopes; a revoked or expired key is refused at once.
func TestTenancyIsolation(t *testing.T) {
	s := startServer(t, "", "WARREN_RUNTIME=runc")
	ctx := context.Background()
	all := []string{wire.ScopeSandboxesWrite, wire.ScopeSecretsWrite, wire.ScopeVolumesWrite, wire.ScopeImagesWrite, wire.ScopeUsageRead}
	a, ca, _ := s.org(t, "alpha", all...)
	_, cb, kb := s.org(t, "beta", all...)
	sb, err := ca.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CreateSecret(ctx, &client.SecretRequest{Name: "tok", Value: "alpha-secret-value"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.CreateVolume(ctx, "vol", 32); err != nil {
		t.Fatal(err)
	}
	id := sb.ID
	routes := []struct{ method, path, body string }{
		{"GET", "/v1/sandboxes/" + id, ""},
		{"DELETE", "/v1/sandboxes/" + id, ""},
		{"PUT", "/v1/sandboxes/" + id + "/network", `{"egress":"none"}`},
		{"POST", "/v1/sandboxes/" + id + "/pause", ""},
		{"POST", "/v1/sandboxes/" + id + "/resume", ""},
		{"POST", "/v1/sandboxes/" + id + "/fork", `{"count":1}`},
		{"POST", "/v1/sandboxes/" + id + "/snapshot", `{"name":"stolen"}`},
		{"POST", "/v1/sandboxes/" + id + "/ports/8080", ""},
		{"DELETE", "/v1/sandboxes/" + id + "/ports/8080", ""},
		{"POST", "/v1/sandboxes/" + id + "/ports/8080/token", `{"ttl_seconds":60}`},
		{"DELETE", "/v1/sandboxes/" + id + "/ports/8080/tokens", ""},
		{"POST", "/v1/sandboxes/" + id + "/exec", `{"cmd":"id"}`},
		{"POST", "/v1/sandboxes/" + id + "/exec/stream", `{"cmd":"id"}`},
		{"GET", "/v1/sandboxes/" + id + "/files?path=/etc/passwd", ""},
		{"PUT", "/v1/sandboxes/" + id + "/files?path=/tmp/x", "x"},
		{"DELETE", "/v1/sandboxes/" + id + "/files?path=/tmp", ""},
		{"GET", "/v1/sandboxes/" + id + "/files/list?path=/", ""},
		{"GET", "/v1/sandboxes/" + id + "/files/stat?path=/", ""},
		{"POST", "/v1/sandboxes/" + id + "/files/mkdir?path=/tmp/y", ""},
		{"GET", "/v1/sandboxes/" + id + "/files/archive?path=/etc", ""},
		{"POST", "/v1/sandboxes/" + id + "/commands", `{"name":"x","cmd":"id"}`},
		{"GET", "/v1/sandboxes/" + id + "/commands", ""},
		{"GET", "/v1/sandboxes/" + id + "/commands/x/logs", ""},
		{"GET", "/v1/secrets/tok", ""},
		{"DELETE", "/v1/secrets/tok", ""},
		{"GET", "/v1/volumes/vol", ""},
		{"DELETE", "/v1/volumes/vol", ""},
		{"GET", "/v1/orgs/" + a.ID, ""},
		{"GET", "/v1/orgs/" + a.ID + "/quotas", ""},
		// E2B's API with the other org's key.
		{"GET", "/sandboxes/" + strings.TrimPrefix(id, "sbx_"), ""},
		{"DELETE", "/sandboxes/" + strings.TrimPrefix(id, "sbx_"), ""},
	}
	for _, r := range routes {
		if st, body := s.raw(t, r.method, r.path, kb, r.body); st != 404 {
			t.Errorf("%s %s with another org's key: %d %v; want 404", r.method, r.path, st, body)
		}
	}
	// The terminal too.
	req, _ := http.NewRequest("GET", s.url+"/v1/sandboxes/"+id+"/pty", nil)
	req.Header.Set("Authorization", "Bearer "+kb)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Errorf("the terminal with another org's key: %v %v", resp, err)
	}
	// Lists show nothing of the other org, and its names are free.
	if l, _ := cb.ListSandboxes(ctx, client.ListOptions{}); len(l) != 0 {
		t.Errorf("beta lists %d sandboxes", len(l))
	}
	if l, _ := cb.Secrets(ctx); len(l) != 0 {
		t.Errorf("beta lists secrets: %+v", l)
	}
	if l, _ := cb.Volumes(ctx); len(l) != 0 {
		t.Errorf("beta lists volumes: %+v", l)
	}
	if _, err := cb.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Volumes: []client.VolumeMount{{Name: "vol", Path: "/data"}}}); !client.IsBadRequest(err) || client.Field(err) != "volumes[0].name" {
		t.Errorf("beta mounts alpha's volume: %v", err)
	}
	if _, err := cb.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Secrets: map[string]string{"T": "tok"}}); !client.IsBadRequest(err) || client.Field(err) != "secrets.T" {
		t.Errorf("beta uses alpha's secret: %v", err)
	}
	// Alpha's things are untouched by all that.
	if got, err := ca.GetSandbox(ctx, id); err != nil || got.State != "running" || got.Network.Egress != "default" {
		t.Fatalf("alpha's sandbox after beta's tries: %+v %v", got, err)
	}

	// Scopes: a read-only key reads and cannot create.
	ro, err := s.c.CreateAPIKey(ctx, &client.APIKeyRequest{Name: "ro", OrgID: a.ID, Scopes: []string{wire.ScopeSandboxesRead}})
	if err != nil {
		t.Fatal(err)
	}
	cro := client.New(s.url, ro.Key)
	if l, err := cro.ListSandboxes(ctx, client.ListOptions{}); err != nil || len(l) != 1 {
		t.Fatalf("the read-only key lists: %v %v", l, err)
	}
	if _, err := cro.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox"}); !client.IsForbidden(err) {
		t.Fatalf("the read-only key creates: %v", err)
	}
	if _, err := cro.Exec(ctx, id, &client.ExecRequest{Cmd: "id"}); !client.IsForbidden(err) {
		t.Fatalf("the read-only key execs: %v", err)
	}
	// Revoked: refused on the next request.
	if err := s.c.RevokeAPIKey(ctx, ro.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cro.ListSandboxes(ctx, client.ListOptions{}); !client.IsUnauthorized(err) {
		t.Fatalf("a revoked key: %v", err)
	}
	// Expired: refused.
	short, err := s.c.CreateAPIKey(ctx, &client.APIKeyRequest{Name: "short", OrgID: a.ID, Scopes: []string{wire.ScopeSandboxesRead}, ExpiresInSeconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.New(s.url, short.Key).ListSandboxes(ctx, client.ListOptions{}); err != nil {
		t.Fatalf("a fresh key: %v", err)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := client.New(s.url, short.Key).ListSandboxes(ctx, client.ListOptions{}); !client.IsUnauthorized(err) {
		t.Fatalf("an expired key: %v", err)
	}
	// An org with sandboxes or volumes is not deleted.
	if err := s.c.DeleteOrg(ctx, a.ID); !client.IsConflict(err) {
		t.Fatalf("delete an org with a sandbox: %v", err)
	}
	if _, err := ca.DeleteSandbox(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := ca.DeleteVolume(ctx, "vol"); err != nil {
		t.Fatal(err)
	}
	if err := s.c.DeleteOrg(ctx, a.ID); err != nil {
		t.Fatalf("delete an emptied org: %v", err)
	}
	if _, err := ca.Secrets(ctx); !client.IsUnauthorized(err) {
		t.Fatalf("a deleted org's key: %v", err)
	}
}

// TestQuotaRace: twenty creates at once against max_sandboxes 5 — five
// run, fifteen are refused with the quota named, none overshoots.
func TestQuotaRace(t *testing.T) {
	s := startServer(t, "", "WARREN_RUNTIME=runc")
	ctx := context.Background()
	o, c, _ := s.org(t, "racers", wire.ScopeSandboxesWrite)
	if _, err := s.c.SetQuotas(ctx, o.ID, client.Quotas{MaxSandboxes: 5}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Resources: &client.Resources{MemoryMB: 64}})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	ok, refused := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case client.IsQuotaExceeded(err) && client.Field(err) == "max_sandboxes":
			refused++
		default:
			t.Errorf("unexpected: %v", err)
		}
	}
	if ok != 5 || refused != 15 {
		t.Fatalf("%d created, %d refused; want 5 and 15", ok, refused)
	}
	q, err := c.OrgQuotas(ctx, o.ID)
	if err != nil || q.Use.Sandboxes != 5 {
		t.Fatalf("use: %+v %v", q, err)
	}
	// Other quotas name themselves too; and a lifetime quota bounds timeouts.
	if _, err := s.c.SetQuotas(ctx, o.ID, client.Quotas{MaxMemoryMB: 100, MaxLifetimeSeconds: 60}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Resources: &client.Resources{MemoryMB: 64}}); !client.IsQuotaExceeded(err) || client.Field(err) != "max_memory_mb" {
		t.Fatalf("over the memory quota: %v", err)
	}
	list, _ := c.ListSandboxes(ctx, client.ListOptions{})
	for _, sb := range list {
		c.DeleteSandbox(ctx, sb.ID)
	}
	long := int64(3600)
	if _, err := c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Resources: &client.Resources{MemoryMB: 64}, TimeoutSeconds: &long}); !client.IsQuotaExceeded(err) || client.Field(err) != "max_lifetime_seconds" {
		t.Fatalf("over the lifetime quota: %v", err)
	}
	sb, err := c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Resources: &client.Resources{MemoryMB: 64}})
	if err != nil || sb.TimeoutSeconds != 60 {
		t.Fatalf("a create without a timeout gets the maximum: %+v %v", sb, err)
	}
}

// secretValue is what the secret tests look for everywhere.
const secretValue = "sk-test-9f8e7d6c5b4a39281706"

// TestSecrets: a secret reaches the sandbox as env and as a file on a
// tmpfs, and nothing warren writes or answers holds its value: not the
// data directory, the logs, or any API answer. Pause, fork and snapshot
// are refused while it is in the sandbox.
func TestSecrets(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	if _, err := s.c.CreateSecret(ctx, &client.SecretRequest{Name: "token", Value: secretValue}); err != nil {
		t.Fatal(err)
	}
	var answers bytes.Buffer
	record := func(v any) {
		b, _ := json.Marshal(v)
		answers.Write(b)
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt, Secrets: map[string]string{"TOKEN": "token"},
				SecretFiles: map[string]string{"/run/secrets/token": "token"},
				Startup:     &client.Startup{Commands: []client.StartupCmd{{Name: "uses-it", Run: `test -n "$TOKEN"`}}}})
			record(sb)
			res := s.exec(t, sb.ID, client.ExecRequest{Cmd: `echo "$TOKEN"; cat /run/secrets/token; echo; stat -c %a /run/secrets/token; grep ' /run/secrets ' /proc/mounts | cut -d' ' -f3`})
			want := secretValue + "\n" + secretValue + "\n444\ntmpfs\n"
			if res.ExitCode != 0 || res.Stdout != want {
				t.Fatalf("in the sandbox: %+v; want %q", res, want)
			}
			got, err := s.c.GetSandbox(ctx, sb.ID)
			if err != nil || got.Secrets["TOKEN"] != "token" || got.SecretFiles["/run/secrets/token"] != "token" {
				t.Fatalf("the view names its secrets: %+v %v", got, err)
			}
			record(got)
			list, _ := s.c.ListSandboxes(ctx, client.ListOptions{})
			record(list)
			cmds, _ := s.c.Commands(ctx, sb.ID)
			record(cmds)
			if _, err := s.c.Snapshot(ctx, sb.ID, "with-secret"); !client.IsConflict(err) {
				t.Errorf("snapshot: %v; want 409", err)
			}
			if rt == "gvisor" {
				if _, err := s.c.Pause(ctx, sb.ID); !client.IsConflict(err) || !strings.Contains(err.Error(), "secret") {
					t.Errorf("pause: %v; want 409 naming the secret", err)
				}
				if _, err := s.c.Fork(ctx, sb.ID, 1); !client.IsConflict(err) {
					t.Errorf("fork: %v; want 409", err)
				}
			}
			// A failing startup that prints the secret: its error and the
			// stored reason say [secret] instead.
			_, err = s.c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Runtime: rt, Secrets: map[string]string{"TOKEN": "token"},
				Startup: &client.Startup{Commands: []client.StartupCmd{{Name: "leaks", Run: `echo "$TOKEN"; exit 3`}}}})
			if err == nil || strings.Contains(err.Error(), secretValue) || !strings.Contains(err.Error(), "[secret]") {
				t.Errorf("a failing create's error: %v", err)
			}
			failed, _ := s.c.ListSandboxes(ctx, client.ListOptions{States: []client.State{"failed"}})
			record(failed)
			for _, f := range failed {
				s.c.DeleteSandbox(ctx, f.ID)
			}
			if _, err := s.c.DeleteSandbox(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
			// idle_action pause cannot be asked of a sandbox with a secret.
			idle := int64(60)
			_, err = s.c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Runtime: rt, Secrets: map[string]string{"T": "token"},
				IdleTimeoutSeconds: &idle, IdleAction: "pause"})
			if rt == "gvisor" && (!client.IsBadRequest(err) || client.Field(err) != "idle_action") {
				t.Errorf("idle pause with a secret: %v", err)
			}
		})
	}
	secrets, _ := s.c.Secrets(ctx)
	record(secrets)
	if strings.Contains(answers.String(), secretValue) {
		t.Fatal("an API answer holds the secret's value")
	}
	s.stop()
	if strings.Contains(s.logs.String(), secretValue) {
		t.Fatal("warren's log holds the secret's value")
	}
	err := filepath.WalkDir(s.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte(secretValue)) {
			return errors.New(p + " holds the secret's value")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testCA makes a CA and a certificate it signs for names, written as
// PEM files in dir.
func testCA(t *testing.T, dir string, names ...string) (caFile string, cert tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "warren e2e CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	ca, _ := x509.ParseCertificate(der)
	lkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ltmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	lder, err := x509.CreateCertificate(rand.Reader, ltmpl, ca, &lkey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{lder, der}, PrivateKey: lkey}
}

// listenIn opens a listener inside the named network namespace: the
// socket belongs to it wherever it is served from. The thread that
// switched is switched back before it is let go; if it cannot be, it
// stays locked and ends with its goroutine (or, were it the main thread,
// stays parked), never serving other goroutines from the wrong namespace.
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ch <- result{nil, err}
			return
		}
		ln, err := net.Listen("tcp", addr)
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listen in %s: %v", ns, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}

// TestEgressInjection: a secret with allowed hosts is a placeholder in
// the sandbox; the allowed HTTPS host receives the real value in the
// header, another host receives the placeholder, and the proxy never
// takes a sandbox where its policy does not let it go.
func TestEgressInjection(t *testing.T) {
	p := startPeer(t)
	upstream := startDNS(t)
	caFile, cert := testCA(t, t.TempDir(), "api.test", "other.test")
	// An HTTPS server for both names in the peer namespace, saying what
	// Authorization header it got.
	ln := listenIn(t, p.ns, publicA+":443")
	var mu sync.Mutex
	var seen []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Host+" "+r.Header.Get("Authorization"))
		mu.Unlock()
		io.WriteString(w, r.Header.Get("Authorization"))
	})}
	go srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}}))
	t.Cleanup(func() { srv.Close() })
	s := startServer(t, "", "WARREN_DNS_UPSTREAM="+upstream, "WARREN_EGRESS_CA_FILE="+caFile)
	ctx := context.Background()
	if _, err := s.c.CreateSecret(ctx, &client.SecretRequest{Name: "openai", Value: secretValue, AllowedHosts: []string{"api.test"}}); err != nil {
		t.Fatal(err)
	}
	testCAPEM, _ := os.ReadFile(caFile)
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "base", Runtime: rt, Secrets: map[string]string{"OPENAI_API_KEY": "openai"}})
			res := s.exec(t, sb.ID, client.ExecRequest{Cmd: `printf %s "$OPENAI_API_KEY"`})
			placeholder := res.Stdout
			if !strings.HasPrefix(placeholder, "warren-secret-") || strings.Contains(placeholder, secretValue) {
				t.Fatalf("the sandbox sees %q; want a placeholder", placeholder)
			}
			curl := func(host string, extra string) *client.ExecResult {
				return s.exec(t, sb.ID, client.ExecRequest{Cmd: `curl -sS -m 10 ` + extra + ` -H "Authorization: Bearer $OPENAI_API_KEY" https://` + host + `/`, TimeoutSeconds: 30})
			}
			// The allowed host gets the value; the sandbox's curl trusts the
			// proxy's certificate through the system store warren added to.
			if res := curl("api.test", ""); res.ExitCode != 0 || res.Stdout != "Bearer "+secretValue {
				t.Fatalf("the allowed host: %+v", res)
			}
			// Another host (trusted with the test CA) gets the placeholder.
			if _, err := s.c.WriteFile(ctx, sb.ID, "/tmp/test-ca.pem", bytes.NewReader(testCAPEM)); err != nil {
				t.Fatal(err)
			}
			if res := curl("other.test", "--cacert /tmp/test-ca.pem"); res.ExitCode != 0 || res.Stdout != "Bearer "+placeholder {
				t.Fatalf("another host: %+v", res)
			}
			// The proxy keeps to the sandbox's policy: with egress none, no
			// connection leaves through it either.
			if _, err := s.c.SetNetwork(ctx, sb.ID, &client.NetworkPolicy{Egress: "none"}); err != nil {
				t.Fatal(err)
			}
			if res := s.exec(t, sb.ID, client.ExecRequest{Cmd: `curl -sS -m 5 --resolve api.test:443:` + publicA + ` -H "Authorization: Bearer $OPENAI_API_KEY" https://api.test/`, TimeoutSeconds: 30}); res.ExitCode == 0 {
				t.Fatalf("egress none, through the proxy: %+v", res)
			}
			// A sandbox with such a secret may be paused: only the
			// placeholder is inside it.
			if rt == "gvisor" {
				if _, err := s.c.Pause(ctx, sb.ID); err != nil {
					t.Fatalf("pause with a placeholder: %v", err)
				}
				if _, err := s.c.Resume(ctx, sb.ID); err != nil {
					t.Fatal(err)
				}
				if _, err := s.c.SetNetwork(ctx, sb.ID, &client.NetworkPolicy{Egress: "default"}); err != nil {
					t.Fatal(err)
				}
				if res := curl("api.test", ""); res.ExitCode != 0 || res.Stdout != "Bearer "+secretValue {
					t.Fatalf("after resume: %+v", res)
				}
			}
			s.c.DeleteSandbox(ctx, sb.ID)
		})
	}
	mu.Lock()
	defer mu.Unlock()
	for _, line := range seen {
		if strings.Contains(line, secretValue) && !strings.HasPrefix(line, "api.test ") {
			t.Errorf("a host other than api.test got the value: %q", line)
		}
	}
	if strings.Contains(s.logs.String(), secretValue) {
		t.Error("warren's log holds the value")
	}
}

// TestVolumes: a volume's files outlive the sandbox that wrote them and
// warren's restart, on both runtimes and across them; one writer at a
// time; writing past its size is ENOSPC inside.
func TestVolumes(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dir) })
	s := startServer(t, dir)
	ctx := context.Background()
	v, err := s.c.CreateVolume(ctx, "data", 64)
	if err != nil {
		t.Fatal(err)
	}
	if v.SizeMB != 64 || len(v.MountedBy) != 0 {
		t.Fatalf("volume %+v", v)
	}
	mount := func(ro bool) []client.VolumeMount {
		return []client.VolumeMount{{Name: "data", Path: "/data", ReadOnly: ro}}
	}
	w := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "gvisor", Volumes: mount(false)})
	if res := s.exec(t, w.ID, client.ExecRequest{Cmd: "echo from-gvisor > /data/note && mkdir -p /data/d && sync"}); res.ExitCode != 0 {
		t.Fatalf("write: %+v", res)
	}
	// Through a pause and resume, the volume stays mounted and writable.
	if _, err := s.c.Pause(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Resume(ctx, w.ID); err != nil {
		t.Fatal(err)
	}
	if res := s.exec(t, w.ID, client.ExecRequest{Cmd: "cat /data/note && echo deep > /data/d/f && sync"}); res.ExitCode != 0 || res.Stdout != "from-gvisor\n" {
		t.Fatalf("after resume: %+v", res)
	}
	// One writer at a time; readers beside it.
	if _, err := s.c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Runtime: "runc", Volumes: mount(false)}); !client.IsConflict(err) {
		t.Fatalf("a second writer: %v", err)
	}
	r := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "runc", Volumes: mount(true)})
	if res := s.exec(t, r.ID, client.ExecRequest{Cmd: "cat /data/note; echo x > /data/other"}); res.Stdout != "from-gvisor\n" || res.ExitCode == 0 {
		t.Fatalf("a reader: %+v", res)
	}
	if err := s.c.DeleteVolume(ctx, "data"); !client.IsConflict(err) {
		t.Fatalf("delete while mounted: %v", err)
	}
	got, _ := s.c.GetVolume(ctx, "data")
	if len(got.MountedBy) != 2 {
		t.Fatalf("mounted by %v", got.MountedBy)
	}
	for _, sb := range []string{w.ID, r.ID} {
		if _, err := s.c.DeleteSandbox(ctx, sb); err != nil {
			t.Fatal(err)
		}
	}
	// The next sandbox, on the other runtime, has the files, and writes
	// as its own root (a user namespace, through an idmapped view).
	n := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "runc", Volumes: mount(false)})
	if res := s.exec(t, n.ID, client.ExecRequest{Cmd: "cat /data/note /data/d/f && echo from-runc >> /data/note && stat -c %u /data/note"}); res.Stdout != "from-gvisor\ndeep\n0\n" {
		t.Fatalf("the next sandbox: %+v", res)
	}
	// Past its size: ENOSPC inside, nothing else.
	res := s.exec(t, n.ID, client.ExecRequest{Cmd: "dd if=/dev/zero of=/data/big bs=1M count=100", TimeoutSeconds: 60})
	if res.ExitCode == 0 || !strings.Contains(res.Stderr, "No space left") {
		t.Fatalf("dd past the size: %+v", res)
	}
	if res := s.exec(t, n.ID, client.ExecRequest{Cmd: "rm /data/big && echo ok > /tmp/x && cat /tmp/x"}); res.Stdout != "ok\n" {
		t.Fatalf("after ENOSPC: %+v", res)
	}
	if _, err := s.c.DeleteSandbox(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	// A restart keeps the volume and its files.
	s.stop()
	s = startServer(t, dir)
	g := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "gvisor", Volumes: mount(true)})
	if res := s.exec(t, g.ID, client.ExecRequest{Cmd: "cat /data/note"}); res.Stdout != "from-gvisor\nfrom-runc\n" {
		t.Fatalf("after a restart: %+v", res)
	}
	s.c.DeleteSandbox(ctx, g.ID)
	if err := s.c.DeleteVolume(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "volumes", v.ID+".img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the deleted volume's image: %v", err)
	}
}

// TestUsage: usage adds up to the lifetimes the client measured, within
// a second each, paused time left out; a kill -9 and restart neither
// loses a period nor leaves one open.
func TestUsage(t *testing.T) {
	dir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dir) })
	s := startServer(t, dir)
	ctx := context.Background()
	start := time.Now().Add(-time.Minute)
	type lived struct {
		id   string
		secs float64
	}
	var measured []lived
	run := func(rt string, pause bool) {
		sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt, Resources: &client.Resources{CPU: 0.5, MemoryMB: 256}})
		born := time.Now()
		time.Sleep(2 * time.Second)
		paused := time.Duration(0)
		if pause {
			if _, err := s.c.Pause(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
			p := time.Now()
			time.Sleep(3 * time.Second)
			if _, err := s.c.Resume(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
			paused = time.Since(p)
			time.Sleep(time.Second)
		}
		if _, err := s.c.DeleteSandbox(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
		measured = append(measured, lived{sb.ID, (time.Since(born) - paused).Seconds()})
	}
	run("runc", false)
	run("gvisor", true)
	// Across a crash: the sandbox runs on while warren is down, and is
	// metered for it.
	sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "runc", Resources: &client.Resources{CPU: 0.5, MemoryMB: 256}})
	born := time.Now()
	s.kill9()
	time.Sleep(2 * time.Second)
	s = startServer(t, dir)
	if _, err := s.c.DeleteSandbox(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	measured = append(measured, lived{sb.ID, time.Since(born).Seconds()})

	u, err := s.c.Usage(ctx, client.UsageOptions{From: start, To: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]client.UsageRow{}
	for _, r := range u.Rows {
		byID[r.SandboxID] = r
	}
	for _, m := range measured {
		r := byID[m.id]
		if d := r.SandboxSeconds - m.secs; d > 1 || d < -1 {
			t.Errorf("sandbox %s: metered %.2f s, measured %.2f s", m.id, r.SandboxSeconds, m.secs)
		}
		if d := r.CPUSeconds - 0.5*r.SandboxSeconds; d > 0.01 || d < -0.01 {
			t.Errorf("sandbox %s: %.2f vCPU-seconds for %.2f s at 0.5 CPU", m.id, r.CPUSeconds, r.SandboxSeconds)
		}
		if d := r.MemoryGiBSeconds - 0.25*r.SandboxSeconds; d > 0.01 || d < -0.01 {
			t.Errorf("sandbox %s: %.2f GiB-seconds for %.2f s at 256 MB", m.id, r.MemoryGiBSeconds, r.SandboxSeconds)
		}
	}
	// Nothing is left open: asked again later, the total is the same.
	time.Sleep(1500 * time.Millisecond)
	again, _ := s.c.Usage(ctx, client.UsageOptions{From: start, To: time.Now().Add(time.Minute)})
	if again.Total.SandboxSeconds != u.Total.SandboxSeconds {
		t.Fatalf("usage grows after every sandbox ended: %.3f then %.3f", u.Total.SandboxSeconds, again.Total.SandboxSeconds)
	}
	days, _ := s.c.Usage(ctx, client.UsageOptions{From: start, To: time.Now().Add(time.Minute), GroupBy: "day"})
	if d := days.Total.SandboxSeconds - u.Total.SandboxSeconds; d > 0.001 || d < -0.001 {
		t.Fatalf("by day %.3f, by sandbox %.3f", days.Total.SandboxSeconds, u.Total.SandboxSeconds)
	}
}

// TestMetrics: /metrics parses as Prometheus text and moves when
// sandboxes are made; it wants a key of the default org, or its own
// listener.
func TestMetrics(t *testing.T) {
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := mln.Addr().String()
	mln.Close()
	s := startServer(t, "", "WARREN_RUNTIME=runc", "WARREN_METRICS_LISTEN="+maddr)
	ctx := context.Background()
	scrape := func(url, key string) map[string]float64 {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", url, resp.StatusCode)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("/metrics does not parse: %v", err)
		}
		out := map[string]float64{}
		for name, f := range fams {
			for _, m := range f.GetMetric() {
				key := name
				for _, l := range m.GetLabel() {
					key += "," + l.GetName() + "=" + l.GetValue()
				}
				switch {
				case m.Counter != nil:
					out[key] = m.GetCounter().GetValue()
				case m.Gauge != nil:
					out[key] = m.GetGauge().GetValue()
				case m.Histogram != nil:
					out[key] = float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		return out
	}
	before := scrape(s.url+"/metrics", s.key)
	sb := s.create(t, client.CreateRequest{Image: "busybox"})
	s.exec(t, sb.ID, client.ExecRequest{Cmd: "true"})
	_, _ = client.New(s.url, "wrn_notakeynotakeynotakey").ListSandboxes(ctx, client.ListOptions{})
	after := scrape(s.url+"/metrics", s.key)
	for _, k := range []string{"warren_sandbox_creates_total,boot_path=cold_boot,outcome=ok", "warren_sandbox_create_seconds,boot_path=cold_boot",
		"warren_exec_seconds", "warren_auth_failures_total,reason=invalid API key"} {
		if after[k] != before[k]+1 {
			t.Errorf("%s went from %v to %v; want one more", k, before[k], after[k])
		}
	}
	if after["warren_sandboxes,runtime=runc,state=running"] < 1 {
		t.Errorf("no running sandbox counted: %v", after)
	}
	// The metrics listener needs no key; a key of another org is refused.
	if m := scrape("http://"+maddr+"/metrics", ""); m["warren_sandbox_creates_total,boot_path=cold_boot,outcome=ok"] < 1 {
		t.Errorf("the metrics listener: %v", m)
	}
	_, _, key := s.org(t, "tenant", wire.ScopeAdmin)
	if st, _ := s.raw(t, "GET", "/metrics", key, ""); st != 403 {
		t.Errorf("another org's admin key: %d", st)
	}
}

// TestTenancyCLI: warren org, key, secret, volume and usage, human and
// --json, with a secret's value read from stdin and never printed.
func TestTenancyCLI(t *testing.T) {
	s := startServer(t, "", "WARREN_RUNTIME=runc")
	jsonOut := func(v any, args ...string) {
		t.Helper()
		out, errOut, code := s.cli(t, "", append(args, "--json")...)
		if code != 0 {
			t.Fatalf("warren %v: %d %s", args, code, errOut)
		}
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("warren %v --json printed %q: %v", args, out, err)
		}
	}
	var org client.Org
	jsonOut(&org, "org", "create", "cli-team")
	var q client.OrgQuotas
	jsonOut(&q, "org", "quotas", org.ID, "--set", "max_sandboxes=3", "--set", "max_memory_mb=2048")
	if q.Quotas.MaxSandboxes != 3 || q.Quotas.MaxMemoryMB != 2048 {
		t.Fatalf("quotas: %+v", q)
	}
	if out, _, code := s.cli(t, "", "org", "quotas", org.ID); code != 0 || !strings.Contains(out, "max_sandboxes") || !strings.Contains(out, "unlimited") {
		t.Fatalf("quotas table: %q", out)
	}
	if _, errOut, code := s.cli(t, "", "org", "quotas", org.ID, "--set", "max_pizza=1"); code == 0 || !strings.Contains(errOut, "max_pizza") {
		t.Fatalf("a bad quota: %d %q", code, errOut)
	}
	var key client.APIKeyCreated
	jsonOut(&key, "key", "create", "ci", "--org", org.ID, "--scope", "sandboxes:write,secrets:write,volumes:write,usage:read")
	if !strings.HasPrefix(key.Key, "wrn_") || key.OrgID != org.ID {
		t.Fatalf("key: %+v", key)
	}
	as := func(stdin string, args ...string) (string, string, int) { return s.cliAs(t, key.Key, stdin, args...) }
	if out, errOut, code := as(secretValue+"\n", "secret", "create", "tok"); code != 0 || strings.Contains(out+errOut, secretValue) {
		t.Fatalf("secret create: %d %q %q", code, out, errOut)
	}
	if out, _, code := as("", "secret", "ls"); code != 0 || !strings.Contains(out, "tok") || strings.Contains(out, secretValue) {
		t.Fatalf("secret ls: %q", out)
	}
	if _, errOut, code := as("", "volume", "create", "cache", "--size", "32"); code != 0 {
		t.Fatalf("volume create: %s", errOut)
	}
	out, errOut, code := as("", "sandbox", "create", "--image", "busybox", "--volume", "cache:/cache", "--secret", "TOKEN=tok", "--secret-file", "/run/secrets/tok=tok", "--json")
	if code != 0 {
		t.Fatalf("create with a volume and secrets: %s", errOut)
	}
	var sb client.Sandbox
	json.Unmarshal([]byte(out), &sb)
	if out, _, _ := as("", "exec", sb.ID, "--", "sh", "-c", `test "$TOKEN" = "$(cat /run/secrets/tok)" && echo same > /cache/x && cat /cache/x`); out != "same\n" {
		t.Fatalf("in the sandbox: %q", out)
	}
	if out, _, _ := as("", "volume", "ls"); !strings.Contains(out, sb.ID) {
		t.Fatalf("volume ls shows who mounts it: %q", out)
	}
	if _, _, code := as("", "volume", "rm", "cache"); code == 0 {
		t.Fatal("a mounted volume was deleted")
	}
	as("", "sandbox", "rm", sb.ID)
	var u client.Usage
	out, errOut, code = as("", "usage", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &u) != nil || len(u.Rows) != 1 || u.Rows[0].SandboxID != sb.ID || u.Total.SandboxSeconds <= 0 {
		t.Fatalf("usage: %d %q %q", code, out, errOut)
	}
	if out, _, _ := as("", "usage", "--group-by", "day"); !strings.Contains(out, time.Now().UTC().Format("2006-01-02")) || !strings.Contains(out, "total") {
		t.Fatalf("usage by day: %q", out)
	}
	var keys struct{ Keys []client.APIKey }
	jsonOut(&keys, "key", "ls", "--org", org.ID)
	if len(keys.Keys) != 1 || strings.Contains(fmt.Sprint(keys), key.Key) {
		t.Fatalf("key ls: %+v", keys)
	}
	if _, errOut, code := s.cli(t, "", "key", "rm", key.ID); code != 0 {
		t.Fatalf("key rm: %s", errOut)
	}
	if _, errOut, code := as("", "secret", "ls"); code == 0 || !strings.Contains(errOut, "invalid API key") {
		t.Fatalf("a revoked key: %d %q", code, errOut)
	}
	var orgs struct{ Orgs []client.Org }
	jsonOut(&orgs, "org", "ls")
	if len(orgs.Orgs) != 2 {
		t.Fatalf("org ls: %+v", orgs)
	}
}
