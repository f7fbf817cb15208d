package egress

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenhq/warren/internal/secrets"
)

// network is every sandbox at 127.0.0.1, allowed anywhere.
type network struct{ intercepted map[string]bool }

func (n *network) Owner(src netip.Addr) (string, bool) { return "sbx_test", src.IsLoopback() }
func (n *network) Permits(string, netip.Addr) bool     { return true }
func (n *network) Intercept(id string, on bool) error {
	n.intercepted[id] = on
	return nil
}

// testCA makes a CA and a server certificate it signs for names.
func testCA(t *testing.T, names ...string) (*x509.CertPool, tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	caCert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	lkey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ltmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	lder, err := x509.CreateCertificate(rand.Reader, ltmpl, caCert, &lkey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pool, tls.Certificate{Certificate: [][]byte{lder}, PrivateKey: lkey}
}

// upstream serves HTTPS for names, echoing the Authorization header it
// got, and counts requests.
func upstream(t *testing.T, cert tls.Certificate) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		io.WriteString(w, r.Host+" got "+r.Header.Get("Authorization"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String()), &n
}

func startProxy(t *testing.T, roots *x509.CertPool, dst netip.AddrPort) (*Proxy, string) {
	t.Helper()
	keys, err := secrets.Load(t.TempDir(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Dir: t.TempDir(), Keys: keys, Network: &network{intercepted: map[string]bool{}}, Roots: roots,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		dst: func(*net.TCPConn) (netip.AddrPort, error) { return dst, nil }}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(ln)
	t.Cleanup(func() { ln.Close() })
	return p, ln.Addr().String()
}

// get sends one request over TLS to the proxy as a sandbox would, for
// host, trusting roots.
func get(t *testing.T, proxy, host string, roots *x509.CertPool, auth string) (string, error) {
	t.Helper()
	c, err := tls.Dial("tcp", proxy, &tls.Config{ServerName: host, RootCAs: roots})
	if err != nil {
		return "", err
	}
	defer c.Close()
	req, _ := http.NewRequest("GET", "https://"+host+"/", nil)
	req.Header.Set("Authorization", auth)
	if err := req.Write(c); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestInjectionOnlyForAllowedHosts(t *testing.T) {
	roots, cert := testCA(t, "api.test", "other.test")
	dst, served := upstream(t, cert)
	p, addr := startProxy(t, roots, dst)
	ph, err := p.Placeholder("sbx_test", "sec_1")
	if err != nil || !strings.HasPrefix(ph, placeholderTo) {
		t.Fatalf("placeholder %q %v", ph, err)
	}
	if again, _ := p.Placeholder("sbx_test", "sec_1"); again != ph {
		t.Fatal("placeholders change")
	}
	caPEM, err := p.Attach("sbx_test", []Substitution{{Placeholder: ph, Value: "THE-REAL-VALUE", Hosts: []string{"api.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	sandboxRoots := x509.NewCertPool()
	if !sandboxRoots.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	// The allowed host gets the value.
	body, err := get(t, addr, "api.test", sandboxRoots, "Bearer "+ph)
	if err != nil || body != "api.test got Bearer THE-REAL-VALUE" {
		t.Fatalf("allowed host: %q %v", body, err)
	}
	// Another host is passed through untouched: the sandbox talks TLS
	// with the real server (its own CA is not involved) and the server
	// gets the placeholder.
	body, err = get(t, addr, "other.test", roots, "Bearer "+ph)
	if err != nil || body != "other.test got Bearer "+ph {
		t.Fatalf("other host: %q %v", body, err)
	}
	// The sandbox's CA signs for allowed hosts only.
	if _, err := get(t, addr, "other.test", sandboxRoots, "x"); err == nil {
		t.Fatal("the sandbox CA vouched for a host it injects nothing into")
	}
	if n := served.Load(); n != 2 {
		t.Fatalf("upstream served %d requests; want 2", n)
	}
}

// A server that cannot prove it is the allowed host never sees the
// value: the proxy verifies upstream before sending anything.
func TestNoInjectionToAnImpostor(t *testing.T) {
	roots, _ := testCA(t, "x.test")
	_, impostorCert := testCA(t, "api.test") // signed by a CA nobody trusts
	dst, served := upstream(t, impostorCert)
	p, addr := startProxy(t, roots, dst)
	ph, _ := p.Placeholder("sbx_test", "sec_1")
	caPEM, err := p.Attach("sbx_test", []Substitution{{Placeholder: ph, Value: "THE-REAL-VALUE", Hosts: []string{"*.test"}}})
	if err != nil {
		t.Fatal(err)
	}
	sandboxRoots := x509.NewCertPool()
	sandboxRoots.AppendCertsFromPEM(caPEM)
	if body, err := get(t, addr, "api.test", sandboxRoots, "Bearer "+ph); err == nil {
		t.Fatalf("an impostor answered: %q", body)
	}
	if n := served.Load(); n != 0 {
		t.Fatalf("the impostor was sent %d requests", n)
	}
}

// Junk instead of a TLS hello is passed through as it came, never a
// reason to fail.
func TestNonTLSPassesThrough(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 64)
		n, _ := io.ReadAtLeast(c, b, 11)
		got <- string(b[:n])
	}()
	p, addr := startProxy(t, nil, netip.MustParseAddrPort(ln.Addr().String()))
	if _, err := p.Attach("sbx_test", nil); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "hello there")
	select {
	case s := <-got:
		if s != "hello there" {
			t.Fatalf("upstream got %q", s)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("nothing reached upstream")
	}
}

func TestHostMatches(t *testing.T) {
	for _, c := range []struct {
		host string
		pats []string
		want bool
	}{
		{"api.openai.com", []string{"api.openai.com"}, true},
		{"API.openai.com.", []string{"api.openai.com"}, true},
		{"evil-api.openai.com", []string{"api.openai.com"}, false},
		{"a.b.example.com", []string{"*.example.com"}, true},
		{"example.com", []string{"*.example.com"}, false},
		{"example.com.evil", []string{"*.example.com"}, false},
	} {
		if hostMatches(c.host, c.pats) != c.want {
			t.Errorf("hostMatches(%q, %v) = %v", c.host, c.pats, !c.want)
		}
	}
}
