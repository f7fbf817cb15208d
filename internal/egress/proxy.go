// Package egress puts secrets into sandboxes' outgoing requests without
// the sandboxes ever holding them. A sandbox given a secret with allowed
// hosts sees a placeholder; its HTTPS connections are redirected to this
// proxy, which lets every other host through untouched and, for an
// allowed host, terminates TLS with a certificate from the sandbox's own
// CA (installed in its trust store), verifies the real server, and
// replaces the placeholder with the value in the request headers on the
// way out. A leaked environment leaks only placeholders.
package egress

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Sealer keeps the CAs' keys sealed at rest (the master keyring).
type Sealer interface {
	Seal(kind, org, id string, plaintext []byte) (keyID string, nonce, ciphertext []byte, err error)
	Open(kind, org, id, keyID string, nonce, ciphertext []byte) ([]byte, error)
}

// Network is what the proxy needs of the sandboxes' network.
type Network interface {
	// Owner is the sandbox with address src.
	Owner(src netip.Addr) (string, bool)
	// Permits says whether a sandbox may reach dst by its policy.
	Permits(id string, dst netip.Addr) bool
	// Intercept sends a sandbox's HTTPS here, or stops.
	Intercept(id string, on bool) error
}

// Substitution is a secret a sandbox may send: its placeholder is
// replaced by its value in the headers of requests to these hosts only
// ("api.example.com", or "*.example.com" for subdomains).
type Substitution struct {
	Placeholder string
	Value       string
	Hosts       []string
}

// Proxy is the egress proxy of one node.
type Proxy struct {
	// Dir keeps each sandbox's placeholder seed and CA.
	Dir     string
	Keys    Sealer
	Network Network
	// Roots are what upstream servers are verified against; nil: the
	// host's.
	Roots *x509.CertPool
	Log   *slog.Logger

	mu        sync.Mutex
	sandboxes map[string]*tenant
	// dst finds where a connection was headed (originalDst; tests
	// without NAT set their own).
	dst func(*net.TCPConn) (netip.AddrPort, error)
}

type tenant struct {
	ca   *ca
	subs []Substitution
}

// Bounds on what a sandbox can make the proxy hold.
const (
	helloTimeout  = 10 * time.Second
	maxHello      = 64 << 10
	maxHeader     = 64 << 10
	idleTimeout   = 5 * time.Minute
	dialTimeout   = 10 * time.Second
	caKind        = "egress-ca"
	placeholderTo = "warren-secret-"
)

func (p *Proxy) dir(id string) (string, error) {
	if id == "" || strings.ContainsAny(id, "/.\x00") {
		return "", fmt.Errorf("bad sandbox id %q", id)
	}
	return filepath.Join(p.Dir, id), nil
}

// seed is a sandbox's placeholder seed, made on first use; placeholders
// stay the same across restarts and master key rotations.
func (p *Proxy) seed(id string) ([]byte, error) {
	dir, err := p.dir(id)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "seed")
	if b, err := os.ReadFile(path); err == nil && len(b) == 32 {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("record placeholder seed: %w", err)
	}
	return b, nil
}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Placeholder is what sandbox id sees instead of secret secretID's value:
// unguessable, and the same every time.
func (p *Proxy) Placeholder(id, secretID string) (string, error) {
	seed, err := p.seed(id)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, seed)
	m.Write([]byte(secretID))
	return placeholderTo + b32.EncodeToString(m.Sum(nil)[:20]), nil
}

// sealedKey is a CA key at rest.
type sealedKey struct {
	KeyID      string `json:"key_id"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// loadCA reads a sandbox's CA, or makes and records one.
func (p *Proxy) loadCA(id string) (*ca, error) {
	dir, err := p.dir(id)
	if err != nil {
		return nil, err
	}
	certPath, keyPath := filepath.Join(dir, "ca.der"), filepath.Join(dir, "ca.key")
	der, derr := os.ReadFile(certPath)
	raw, kerr := os.ReadFile(keyPath)
	if derr == nil && kerr == nil {
		var sk sealedKey
		if err := json.Unmarshal(raw, &sk); err == nil {
			if pk, err := p.Keys.Open(caKind, "", id, sk.KeyID, sk.Nonce, sk.Ciphertext); err == nil {
				if key, err := x509.ParseECPrivateKey(pk); err == nil {
					if c, err := parseCA(der, key); err == nil && time.Now().Before(c.cert.NotAfter) {
						return c, nil
					}
				}
			}
		}
		p.Log.Warn("egress: a sandbox's CA could not be read; making another", "sandbox.id", id)
	}
	c, err := newCA(id)
	if err != nil {
		return nil, err
	}
	pk, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		return nil, err
	}
	keyID, nonce, ct, err := p.Keys.Seal(caKind, "", id, pk)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(sealedKey{KeyID: keyID, Nonce: nonce, Ciphertext: ct})
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, b, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, c.cert.Raw, 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// Attach routes a sandbox's HTTPS through the proxy with these
// substitutions, and returns the PEM of the CA the sandbox must trust.
func (p *Proxy) Attach(id string, subs []Substitution) ([]byte, error) {
	c, err := p.loadCA(id)
	if err != nil {
		return nil, fmt.Errorf("egress CA for %s: %w", id, err)
	}
	p.mu.Lock()
	if p.sandboxes == nil {
		p.sandboxes = map[string]*tenant{}
	}
	p.sandboxes[id] = &tenant{ca: c, subs: subs}
	p.mu.Unlock()
	if err := p.Network.Intercept(id, true); err != nil {
		p.mu.Lock()
		delete(p.sandboxes, id)
		p.mu.Unlock()
		return nil, err
	}
	return c.pem, nil
}

// Detach forgets a sandbox that has ended, with its seed and CA.
func (p *Proxy) Detach(id string) {
	p.mu.Lock()
	_, had := p.sandboxes[id]
	delete(p.sandboxes, id)
	p.mu.Unlock()
	if had {
		_ = p.Network.Intercept(id, false)
	}
	if dir, err := p.dir(id); err == nil {
		_ = os.RemoveAll(dir)
	}
}

func (p *Proxy) tenant(id string) *tenant {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sandboxes[id]
}

// Serve accepts redirected connections until ln closes.
func (p *Proxy) Serve(ln net.Listener) error {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer conn.Close()
			// Nothing a sandbox sends can take the host down.
			defer func() {
				if r := recover(); r != nil {
					p.Log.Error("egress: connection handler panicked", "panic", r)
				}
			}()
			p.handle(conn.(*net.TCPConn))
		}()
	}
}

// originalDst is where a redirected connection was headed.
func originalDst(c *net.TCPConn) (netip.AddrPort, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var addr netip.AddrPort
	var serr error
	err = raw.Control(func(fd uintptr) {
		// SO_ORIGINAL_DST answers a sockaddr_in, which fits the
		// 16-byte multiaddr of this call's struct.
		m, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			serr = err
			return
		}
		port := uint16(m.Multiaddr[2])<<8 | uint16(m.Multiaddr[3])
		addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.Multiaddr[4:8])), port)
	})
	if err == nil {
		err = serr
	}
	return addr, err
}

// hostMatches says whether host is one of the patterns.
func hostMatches(host string, patterns []string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, pat := range patterns {
		if sub, ok := strings.CutPrefix(pat, "*."); ok {
			if strings.HasSuffix(host, "."+sub) {
				return true
			}
		} else if host == pat {
			return true
		}
	}
	return false
}

func (t *tenant) subsFor(host string) []Substitution {
	var out []Substitution
	for _, s := range t.subs {
		if hostMatches(host, s.Hosts) {
			out = append(out, s)
		}
	}
	return out
}

// hello records what the client sends before the proxy decides, and
// holds back what crypto/tls would answer until it has: a connection
// passed through must reach its server as the client sent it.
type hello struct {
	net.Conn
	seen   []byte
	record bool
	speak  bool
}

func (h *hello) Read(b []byte) (int, error) {
	n, err := h.Conn.Read(b)
	if h.record && n > 0 {
		if len(h.seen)+n > maxHello {
			return 0, errors.New("client hello too long")
		}
		h.seen = append(h.seen, b[:n]...)
	}
	return n, err
}

func (h *hello) Write(b []byte) (int, error) {
	if !h.speak {
		return len(b), nil
	}
	return h.Conn.Write(b)
}

var errPass = errors.New("not a host to inject into")

func (p *Proxy) handle(conn *net.TCPConn) {
	src, ok := netip.AddrFromSlice(conn.RemoteAddr().(*net.TCPAddr).IP)
	if !ok {
		return
	}
	id, ok := p.Network.Owner(src.Unmap())
	if !ok {
		return // not from a sandbox
	}
	t := p.tenant(id)
	find := p.dst
	if find == nil {
		find = originalDst
	}
	dst, err := find(conn)
	if t == nil || err != nil || !p.Network.Permits(id, dst.Addr()) {
		return // the sandbox's policy does not let it reach dst
	}
	_ = conn.SetDeadline(time.Now().Add(helloTimeout))
	h := &hello{Conn: conn, record: true}
	var host string
	var subs []Substitution
	srv := tls.Server(h, &tls.Config{GetConfigForClient: func(ch *tls.ClientHelloInfo) (*tls.Config, error) {
		host = ch.ServerName
		if host == "" {
			return nil, errPass
		}
		if subs = t.subsFor(host); len(subs) == 0 {
			return nil, errPass
		}
		leaf, err := t.ca.leaf(strings.ToLower(host))
		if err != nil {
			return nil, err
		}
		h.record, h.speak = false, true
		return &tls.Config{Certificates: []tls.Certificate{*leaf}, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}, nil
	}})
	err = srv.Handshake()
	if !h.speak {
		// Not ours to touch (or not TLS): through as it came.
		_ = conn.SetDeadline(time.Time{})
		p.pass(conn, dst, h.seen)
		return
	}
	if err != nil {
		return
	}
	_ = conn.SetDeadline(time.Time{})
	p.inject(srv, id, dst, host, subs)
}

// pass connects the client to where it was going and copies both ways,
// starting with what it already sent.
func (p *Proxy) pass(conn net.Conn, dst netip.AddrPort, seen []byte) {
	up, err := net.DialTimeout("tcp", dst.String(), dialTimeout)
	if err != nil {
		return
	}
	defer up.Close()
	if _, err := up.Write(seen); err != nil {
		return
	}
	splice(conn, up)
}

// splice copies both ways until either side is done.
func splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}

// limitedReader lets a request's head be read only up to maxHeader.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(b []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("request head too long")
	}
	if int64(len(b)) > l.n {
		b = b[:l.n]
	}
	n, err := l.r.Read(b)
	l.n -= int64(n)
	return n, err
}

// inject relays HTTP/1.1 requests from the client to the verified
// upstream, with the placeholders in their headers replaced.
func (p *Proxy) inject(client *tls.Conn, id string, dst netip.AddrPort, host string, subs []Substitution) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return
	}
	up := tls.Client(raw, &tls.Config{ServerName: host, RootCAs: p.Roots, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12})
	defer up.Close()
	if err := up.HandshakeContext(ctx); err != nil {
		// The server did not prove it is host: the secret does not go.
		p.Log.Warn("egress: upstream failed verification; nothing sent", "sandbox.id", id, "host", host, "addr", dst.String(), "err", err)
		return
	}
	lr := &limitedReader{r: client}
	cr := bufio.NewReader(lr)
	ur := bufio.NewReader(&limitedReader{r: up, n: math.MaxInt64})
	for {
		_ = client.SetReadDeadline(time.Now().Add(idleTimeout))
		lr.n = maxHeader
		req, err := http.ReadRequest(cr)
		if err != nil {
			return
		}
		lr.n = math.MaxInt64 // the body streams
		_ = client.SetReadDeadline(time.Time{})
		for name, vals := range req.Header {
			for i, v := range vals {
				for _, s := range subs {
					v = strings.ReplaceAll(v, s.Placeholder, s.Value)
				}
				req.Header[name][i] = v
			}
		}
		if err := req.Write(up); err != nil {
			return
		}
		resp, err := http.ReadResponse(ur, req)
		if err != nil {
			return
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// A WebSocket or other upgrade: raw both ways from here.
			if err := resp.Write(client); err != nil {
				return
			}
			if n := cr.Buffered(); n > 0 {
				b, _ := cr.Peek(n)
				if _, err := up.Write(b); err != nil {
					return
				}
			}
			if n := ur.Buffered(); n > 0 {
				b, _ := ur.Peek(n)
				if _, err := client.Write(b); err != nil {
					return
				}
			}
			splice(client, up)
			return
		}
		err = resp.Write(client)
		resp.Body.Close()
		if err != nil || req.Close || resp.Close {
			return
		}
	}
}
