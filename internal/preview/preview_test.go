package preview

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	p := &Proxy{Secret: []byte("0123456789abcdef0123456789abcdef")}
	id := "sbx_aaaaaaaaaaaaaaaaaaaa"
	ok := func(tok, id string, port int) bool { _, ok := p.verify(tok, id, port); return ok }
	tok, tokID := p.Sign(id, 3000, time.Now().Add(time.Minute))
	if c, good := p.verify(tok, id, 3000); !good || c.id != tokID || time.Since(c.issued) > 2*time.Second {
		t.Fatalf("a fresh token does not verify: %+v %v", c, good)
	}
	if ok(tok, id, 3001) || ok(tok, "sbx_bbbbbbbbbbbbbbbbbbbb", 3000) {
		t.Fatal("a token verifies for another port or sandbox")
	}
	later, _ := p.Sign(id, 3000, time.Now().Add(time.Hour))
	forged := strings.Split(later, ".")[0] + "." + strings.Split(tok, ".")[1]
	if forged == later || ok(forged, id, 3000) {
		t.Fatal("a token with a changed expiry verifies")
	}
	other := &Proxy{Secret: []byte("another secret, another server!!")}
	if _, good := other.verify(tok, id, 3000); good {
		t.Fatal("a token verifies under another secret")
	}
	expired, _ := p.Sign(id, 3000, time.Now().Add(-time.Second))
	if ok(expired, id, 3000) {
		t.Fatal("an expired token verifies")
	}
}

func TestMatch(t *testing.T) {
	p := &Proxy{Domain: "preview.test", Base: "http://127.0.0.1:7070"}
	a, b := "sbx_aaaaaaaaaaaaaaaaaaaa", "sbx_bbbbbbbbbbbbbbbbbbbb"
	r := httptest.NewRequest("GET", "http://x/preview/"+a+"/8000/app/x.js?q=1", nil)
	if id, port, rest, ok := p.Match(r); !ok || id != a || port != 8000 || rest != "/app/x.js" {
		t.Fatalf("path-based: %s %d %s %v", id, port, rest, ok)
	}
	r = httptest.NewRequest("GET", "http://3000-"+b+".preview.test:7070/index.html", nil)
	if id, port, rest, ok := p.Match(r); !ok || id != b || port != 3000 || rest != "/index.html" {
		t.Fatalf("host-based: %s %d %s %v", id, port, rest, ok)
	}
	for _, u := range []string{"http://x/v1/sandboxes", "http://x/preview/" + a + "/notaport/", "http://evil.test/",
		"http://x/preview/" + a + "/0/", "http://x/preview/" + a + "/65536/", "http://x/preview/sbx_a/80/", "http://0-" + a + ".preview.test/"} {
		if _, _, _, ok := p.Match(httptest.NewRequest("GET", u, nil)); ok {
			t.Errorf("%s matched a preview", u)
		}
	}
	if got := p.URL("sbx_b", 3000); got != "http://3000-sbx_b.preview.test:7070/" {
		t.Fatalf("host-based URL %q", got)
	}
	p.Domain = ""
	if got := p.URL("sbx_b", 3000); got != "http://127.0.0.1:7070/preview/sbx_b/3000/" {
		t.Fatalf("path-based URL %q", got)
	}
}

// FuzzVerify: no token text verifies without the secret, nor panics.
func FuzzVerify(f *testing.F) {
	p := &Proxy{Secret: []byte("0123456789abcdef0123456789abcdef")}
	// Well-formed tokens signed under another secret: the fuzzer starts
	// from the right shape and never holds a right MAC.
	other := &Proxy{Secret: []byte("not the server's secret, a guess")}
	near, _ := other.Sign("sbx_aaaaaaaaaaaaaaaaaaaa", 3000, time.Now().Add(time.Hour))
	f.Add(near)
	f.Add("AAAA.BBBB")
	f.Add(".")
	f.Fuzz(func(t *testing.T, tok string) {
		if _, ok := p.verify(tok, "sbx_aaaaaaaaaaaaaaaaaaaa", 3000); ok {
			t.Fatalf("a token nobody signed verifies: %q", tok)
		}
	})
}

// FuzzMatch: any request either matches a preview with a sane port and
// a path to forward, or does not match; never a panic.
func FuzzMatch(f *testing.F) {
	p := &Proxy{Domain: "preview.test", Base: "http://127.0.0.1:7070"}
	f.Add("/preview/sbx_a/8000/x", "3000-sbx_b.preview.test")
	f.Add("/preview//-1/", "preview.test")
	f.Add("/v1/sandboxes", "x-y-z.preview.test:99")
	f.Fuzz(func(t *testing.T, path, host string) {
		r := httptest.NewRequest("GET", "http://x/", nil)
		r.URL.Path, r.Host = path, host
		id, port, rest, ok := p.Match(r)
		if ok && (!validID(id) || port < 1 || port > 65535 || !strings.HasPrefix(rest, "/")) {
			t.Fatalf("matched %q %d %q", id, port, rest)
		}
	})
}

// fakeTargets serves every preview from one address and revokes nothing.
type fakeTargets struct{ addr netip.AddrPort }

func (f fakeTargets) PreviewTarget(context.Context, string, string, int) (netip.AddrPort, error) {
	return f.addr, nil
}
func (fakeTargets) HoldPreview(string) func() { return func() {} }
func (fakeTargets) TokenRevoked(context.Context, string, int, string, time.Time) bool {
	return false
}

// TestTokenCookieOverTLS: a token visit over TLS sets a Secure cookie and
// redirects to the address without the token.
func TestTokenCookieOverTLS(t *testing.T) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer app.Close()
	addr := netip.MustParseAddrPort(strings.TrimPrefix(app.URL, "http://"))
	id := "sbx_aaaaaaaaaaaaaaaaaaaa"
	p := &Proxy{Secret: []byte("0123456789abcdef0123456789abcdef"), Domain: "preview.test", Base: "https://warren.test",
		Targets: fakeTargets{addr}, Org: func(*http.Request) (string, bool) { return "", false }}
	tok, _ := p.Sign(id, 3000, time.Now().Add(time.Minute))
	r := httptest.NewRequest("GET", "https://3000-"+id+".preview.test/app?x=1&"+TokenParam+"="+tok, nil)
	w := httptest.NewRecorder()
	p.ServeHTTP(w, r)
	resp := w.Result()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/app?x=1" {
		t.Fatalf("token visit: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := resp.Cookies()
	if len(c) != 1 || !c[0].Secure || !c[0].HttpOnly || c[0].Path != "/" {
		t.Fatalf("cookie: %+v", c)
	}
}
