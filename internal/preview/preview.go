// Package preview serves sandboxes' exposed ports to browsers and tools:
// path-based (/preview/{id}/{port}/...) and host-based
// ({port}-{id}.{domain}), for HTTP, streaming responses and WebSockets.
// Callers authenticate with an API key or a signed, expiring token; every
// refusal looks the same, so nothing can be learned by probing.
package preview

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
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
	return fmt.Sprintf("%s/preview/%s/%d/", strings.TrimRight(p.Base, "/"), id, port)
}

// Sign makes a token for one sandbox port, valid until exp.
func (p *Proxy) Sign(id string, port int, exp time.Time) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(exp.Unix()))
	return base64.RawURLEncoding.EncodeToString(b[:]) + "." + base64.RawURLEncoding.EncodeToString(p.mac(id, port, b[:]))
}

func (p *Proxy) mac(id string, port int, exp []byte) []byte {
	h := hmac.New(sha256.New, p.Secret)
	fmt.Fprintf(h, "%s\x00%d\x00", id, port)
	h.Write(exp)
	return h.Sum(nil)
}

// verify reports whether token is a live token for this sandbox port.
func (p *Proxy) verify(token, id string, port int) bool {
	expPart, macPart, ok := strings.Cut(token, ".")
	if !ok {
		return false
	}
	exp, err1 := base64.RawURLEncoding.DecodeString(expPart)
	mac, err2 := base64.RawURLEncoding.DecodeString(macPart)
	if err1 != nil || err2 != nil || len(exp) != 8 {
		return false
	}
	if !hmac.Equal(mac, p.mac(id, port, exp)) {
		return false
	}
	return time.Now().Unix() < int64(binary.BigEndian.Uint64(exp))
}

// Match finds the preview a request is for: host-based first, then
// path-based. rest is the path to forward.
func (p *Proxy) Match(r *http.Request) (id string, port int, rest string, ok bool) {
	if p.Domain != "" {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if label, found := strings.CutSuffix(strings.ToLower(host), "."+p.Domain); found {
			portStr, sid, cut := strings.Cut(label, "-")
			if n, err := strconv.Atoi(portStr); cut && err == nil {
				return sid, n, r.URL.Path, true
			}
		}
	}
	if rest, found := strings.CutPrefix(r.URL.Path, "/preview/"); found {
		parts := strings.SplitN(rest, "/", 3)
		if len(parts) >= 2 {
			if n, err := strconv.Atoi(parts[1]); err == nil {
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

var errNoPreview = errors.New("no such preview")

// ServeHTTP proxies a matched request, or answers 404.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, port, rest, ok := p.Match(r)
	if !ok {
		notFound(w)
		return
	}
	target, err := p.authorize(w, r, id, port)
	if err != nil {
		notFound(w)
		return
	}
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		defer p.Targets.HoldPreview(id)()
	}
	q := r.URL.Query()
	q.Del(TokenParam)
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
// preview loads next.
func (p *Proxy) authorize(w http.ResponseWriter, r *http.Request, id string, port int) (netip.AddrPort, error) {
	ctx := r.Context()
	if org, ok := p.Org(r); ok {
		return p.Targets.PreviewTarget(ctx, org, id, port)
	}
	cookiePath := "/"
	if p.Domain == "" || !strings.HasSuffix(strings.Split(r.Host, ":")[0], "."+p.Domain) {
		cookiePath = fmt.Sprintf("/preview/%s/%d/", id, port)
	}
	if tok := r.URL.Query().Get(TokenParam); tok != "" && p.verify(tok, id, port) {
		t, err := p.Targets.PreviewTarget(ctx, "", id, port)
		if err == nil {
			http.SetCookie(w, &http.Cookie{Name: cookieName, Value: tok, Path: cookiePath, HttpOnly: true, SameSite: http.SameSiteLaxMode})
		}
		return t, err
	}
	if c, err := r.Cookie(cookieName); err == nil && p.verify(c.Value, id, port) {
		return p.Targets.PreviewTarget(ctx, "", id, port)
	}
	return netip.AddrPort{}, errNoPreview
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
