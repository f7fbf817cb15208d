package preview

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestTokens(t *testing.T) {
	p := &Proxy{Secret: []byte("0123456789abcdef0123456789abcdef")}
	id := "sbx_aaaaaaaaaaaaaaaaaaaa"
	tok := p.Sign(id, 3000, time.Now().Add(time.Minute))
	if !p.verify(tok, id, 3000) {
		t.Fatal("a fresh token does not verify")
	}
	if p.verify(tok, id, 3001) || p.verify(tok, "sbx_bbbbbbbbbbbbbbbbbbbb", 3000) {
		t.Fatal("a token verifies for another port or sandbox")
	}
	later := p.Sign(id, 3000, time.Now().Add(time.Hour))
	forged := strings.Split(later, ".")[0] + "." + strings.Split(tok, ".")[1]
	if forged == later || p.verify(forged, id, 3000) {
		t.Fatal("a token with a changed expiry verifies")
	}
	other := &Proxy{Secret: []byte("another secret, another server!!")}
	if other.verify(tok, id, 3000) {
		t.Fatal("a token verifies under another secret")
	}
	if p.verify(p.Sign(id, 3000, time.Now().Add(-time.Second)), id, 3000) {
		t.Fatal("an expired token verifies")
	}
}

func TestMatch(t *testing.T) {
	p := &Proxy{Domain: "preview.test", Base: "http://127.0.0.1:7070"}
	r := httptest.NewRequest("GET", "http://x/preview/sbx_a/8000/app/x.js?q=1", nil)
	if id, port, rest, ok := p.Match(r); !ok || id != "sbx_a" || port != 8000 || rest != "/app/x.js" {
		t.Fatalf("path-based: %s %d %s %v", id, port, rest, ok)
	}
	r = httptest.NewRequest("GET", "http://3000-sbx_b.preview.test:7070/index.html", nil)
	if id, port, rest, ok := p.Match(r); !ok || id != "sbx_b" || port != 3000 || rest != "/index.html" {
		t.Fatalf("host-based: %s %d %s %v", id, port, rest, ok)
	}
	for _, u := range []string{"http://x/v1/sandboxes", "http://x/preview/sbx_a/notaport/", "http://evil.test/"} {
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
