// Package preview serves sandboxes' exposed ports to browsers and tools:
// path-based (/preview/{id}/{port}/...) and host-based
// ({port}-{id}.{domain}), for HTTP, streaming responses and WebSockets.
// Callers authenticate with an API key or a signed, expiring token; every
// refusal looks the same, so nothing can be learned by probing.
package preview

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// TokenParam carries a signed token in a URL; the proxy removes it before
// forwarding.
const TokenParam = "warren_token"

// cookieName holds the token after the first request, so the pages a
// preview loads (scripts, images) are allowed too.
const cookieName = "warren_preview"

// Targets finds where an exposed port is served.
type Targets interface {
	// PreviewTarget returns the address of a running sandbox's exposed
	// port; org "" means the caller proved access with a token.
	PreviewTarget(ctx context.Context, org, id string, port int) (netip.AddrPort, error)
	HoldPreview(id string) func()
	// TokenRevoked says whether a token (by its id and when it was
	// issued) for a sandbox's port has been revoked.
	TokenRevoked(ctx context.Context, id string, port int, tokenID string, issued time.Time) bool
}

// Proxy serves previews.
type Proxy struct {
	Targets Targets
	// Org authenticates a request by API key and returns its org.
	Org func(r *http.Request) (string, bool)
	// Secret signs tokens.
	Secret []byte
	// Domain enables host-based previews: {port}-{id}.{Domain}.
	Domain string
	// Base is the public URL of the API listener, for path-based URLs.
	Base string
}

// URL is where a port is previewed: host-based when a domain is set.
func (p *Proxy) URL(id string, port int) string {
	if p.Domain != "" {
		scheme := "http"
		if strings.HasPrefix(p.Base, "https:") {
			scheme = "https"
		}
		host := fmt.Sprintf("%d-%s.%s", port, id, p.Domain)
		if u, err := url.Parse(p.Base); err == nil && u.Port() != "" {
			host += ":" + u.Port()
		}
		return scheme + "://" + host + "/"
	}
	return p.PathURL(id, port)
}

// PathURL is where a port is previewed under the API's own address.
func (p *Proxy) PathURL(id string, port int) string {
	return fmt.Sprintf("%s/preview/%s/%d/", strings.TrimRight(p.Base, "/"), id, port)
}

// Sign makes a token for one sandbox port, valid until exp, and returns
// it with its id (for revoking it). A token carries its expiry, when it
// was issued and a random id, under an HMAC of the sandbox, the port and
// all three.
func (p *Proxy) Sign(id string, port int, exp time.Time) (token, tokenID string) {
	var payload [24]byte
	binary.BigEndian.PutUint64(payload[0:8], uint64(exp.Unix()))
	binary.BigEndian.PutUint64(payload[8:16], uint64(time.Now().UnixMilli()))
	_, _ = rand.Read(payload[16:24])
	tokenID = hex.EncodeToString(payload[16:24])
	return base64.RawURLEncoding.EncodeToString(payload[:]) + "." + base64.RawURLEncoding.EncodeToString(p.mac(id, port, payload[:])), tokenID
}

func (p *Proxy) mac(id string, port int, payload []byte) []byte {
	h := hmac.New(sha256.New, p.Secret)
	fmt.Fprintf(h, "%s\x00%d\x00", id, port)
	h.Write(payload)
	return h.Sum(nil)
}

// claims are what a verified token says.
type claims struct {
	id     string
	issued time.Time
}

// verify checks that token is a live token for this sandbox port (its
// revocation is checked apart) and returns what it says.
func (p *Proxy) verify(token, id string, port int) (claims, bool) {
	payloadPart, macPart, ok := strings.Cut(token, ".")
	if !ok || len(token) > 128 {
		return claims{}, false
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(payloadPart)
	mac, err2 := base64.RawURLEncoding.DecodeString(macPart)
	if err1 != nil || err2 != nil || len(payload) != 24 {
		return claims{}, false
	}
	if !hmac.Equal(mac, p.mac(id, port, payload)) {
		return claims{}, false
	}
	if time.Now().Unix() >= int64(binary.BigEndian.Uint64(payload[0:8])) {
		return claims{}, false
	}
	return claims{id: hex.EncodeToString(payload[16:24]), issued: time.UnixMilli(int64(binary.BigEndian.Uint64(payload[8:16])))}, true
}

// Match finds the preview a request is for: host-based first, then
// path-based. rest is the path to forward. Only a well-formed sandbox id
// and a port from 1 to 65535 match.
func (p *Proxy) Match(r *http.Request) (id string, port int, rest string, ok bool) {
	if p.Domain != "" {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if label, found := strings.CutSuffix(strings.ToLower(host), "."+p.Domain); found {
			portStr, sid, cut := strings.Cut(label, "-")
			if n, ok := parsePort(portStr); cut && ok && validID(sid) {
				rest := r.URL.Path
				if !strings.HasPrefix(rest, "/") {
					rest = "/" + rest
				}
				return sid, n, rest, true
			}
		}
	}
	if rest, found := strings.CutPrefix(r.URL.Path, "/preview/"); found {
		parts := strings.SplitN(rest, "/", 3)
		if len(parts) >= 2 {
			if n, ok := parsePort(parts[1]); ok && validID(parts[0]) {
				fwd := "/"
				if len(parts) == 3 {
					fwd += parts[2]
				}
				return parts[0], n, fwd, true
			}
		}
	}
	return "", 0, "", false
}

func parsePort(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 1 && n <= 65535 && s == strconv.Itoa(n)
}

// validID matches the shape of sandbox ids: "sbx_" and 20 base32 letters.
func validID(id string) bool {
	rest, ok := strings.CutPrefix(id, "sbx_")
	if !ok || len(rest) != 20 {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

var errNoPreview = errors.New("no such preview")

// hostBased says whether a request came for a preview by host name: the
// preview then has an origin of its own. Path-based previews share the
// API's origin, so they are fenced in more (see ServeHTTP).
func (p *Proxy) hostBased(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return p.Domain != "" && strings.HasSuffix(strings.ToLower(host), "."+p.Domain)
}

// sandboxCSP puts a path-based preview's pages in an opaque origin of
// their own: they run scripts, but cannot read the API origin's
// cookies, storage or other previews, nor register a Service Worker.
const sandboxCSP = "sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox allow-modals allow-downloads allow-pointer-lock allow-presentation"

// ServeHTTP proxies a matched request, or answers 404.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, port, rest, ok := p.Match(r)
	if !ok {
		notFound(w)
		return
	}
	pathBased := !p.hostBased(r)
	// A Service Worker registered from a path-based preview would control
	// everything under the API's origin: its script is never served.
	if pathBased && r.Header.Get("Service-Worker") != "" {
		notFound(w)
		return
	}
	target, viaToken, err := p.authorize(w, r, id, port)
	if err != nil {
		notFound(w)
		return
	}
	q := r.URL.Query()
	q.Del(TokenParam)
	if viaToken && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		// The cookie is set; take the token out of the address bar (and
		// out of the history, logs and Referer headers it would reach).
		u := *r.URL
		u.RawQuery = q.Encode()
		u.Scheme, u.Host = "", ""
		http.Redirect(w, r, u.RequestURI(), http.StatusFound)
		return
	}
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		defer p.Targets.HoldPreview(id)()
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = target.String()
			pr.Out.URL.Path = rest
			pr.Out.URL.RawPath = ""
			pr.Out.URL.RawQuery = q.Encode()
			pr.Out.Host = r.Host
			// The sandbox never sees warren's credentials.
			pr.Out.Header.Del("Authorization")
			removeCookie(pr.Out.Header, cookieName)
			pr.SetXForwarded()
		},
		ModifyResponse: func(resp *http.Response) error {
			if pathBased {
				resp.Header.Del("Service-Worker-Allowed")
				resp.Header.Add("Content-Security-Policy", sandboxCSP)
			}
			return nil
		},
		// Stream: server-sent events and long downloads pass as they come.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "the sandbox's server did not answer: "+err.Error(), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

// authorize checks the caller may see this preview and returns where it
// is served. A valid token in the URL becomes a cookie for the pages the
// preview loads next; viaToken says so.
func (p *Proxy) authorize(w http.ResponseWriter, r *http.Request, id string, port int) (target netip.AddrPort, viaToken bool, err error) {
	ctx := r.Context()
	if org, ok := p.Org(r); ok {
		t, err := p.Targets.PreviewTarget(ctx, org, id, port)
		return t, false, err
	}
	live := func(tok string) bool {
		c, ok := p.verify(tok, id, port)
		return ok && !p.Targets.TokenRevoked(ctx, id, port, c.id, c.issued)
	}
	if tok := r.URL.Query().Get(TokenParam); tok != "" && live(tok) {
		t, err := p.Targets.PreviewTarget(ctx, "", id, port)
		if err == nil {
			cookiePath := "/"
			if !p.hostBased(r) {
				cookiePath = fmt.Sprintf("/preview/%s/%d/", id, port)
			}
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: cookiePath, HttpOnly: true,
				SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil || strings.HasPrefix(p.Base, "https:")})
		}
		return t, err == nil, err
	}
	if c, err := r.Cookie(cookieName); err == nil && live(c.Value) {
		t, err := p.Targets.PreviewTarget(ctx, "", id, port)
		return t, false, err
	}
	return netip.AddrPort{}, false, errNoPreview
}

func notFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no such preview"}}` + "\n"))
}

// removeCookie drops one cookie from a Cookie header, keeping the others
// for the sandbox's own app.
func removeCookie(h http.Header, name string) {
	var keep []string
	for _, line := range h.Values("Cookie") {
		for _, c := range strings.Split(line, ";") {
			if k, _, _ := strings.Cut(strings.TrimSpace(c), "="); k != name && strings.TrimSpace(c) != "" {
				keep = append(keep, strings.TrimSpace(c))
			}
		}
	}
	h.Del("Cookie")
	if len(keep) > 0 {
		h.Set("Cookie", strings.Join(keep, "; "))
	}
}
