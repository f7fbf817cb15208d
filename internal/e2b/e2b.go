// Package e2b lets code written for E2B's SDKs run against warren. It
// serves, on warren's own listener, the two services those SDKs call:
// E2B's control plane (create, list, kill, pause, connect, timeouts) and
// the in-sandbox daemon "envd" (processes and files over Connect RPC and
// HTTP), both mapped onto warren's sandboxes. docs/E2B.md lists every
// SDK call with what it does here.
//
// Requests are told apart without a prefix, as the SDKs send them:
// envd's carry an E2b-Sandbox-Id header (or come for a host named
// {port}-{id}.{domain}), the control plane's are under /sandboxes and
// /v2/sandboxes, which warren's own API (under /v1) never uses.
package e2b

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// EnvdPort is the port E2B's SDKs address envd at.
const EnvdPort = 49983

// EnvdVersion is the envd version warren reports: the SDKs turn features
// on by it, and every feature up to this one is implemented (closing
// stdin 0.5.2, octet-stream uploads 0.5.7). File metadata (0.6.2) is not.
const EnvdVersion = "0.5.7"

// PublicKey is the metadata key marking a sandbox whose ports anyone may
// reach under E2B host names, as E2B's allowPublicTraffic (its default)
// does. The E2B layer sets it on the sandboxes it creates; it is not
// shown to E2B's SDKs.
const PublicKey = "e2b.public_traffic"

// Sandboxes is what the E2B layer needs of warren's sandbox manager. An
// org of "" means the caller proved access to the sandbox by its envd
// token, not by an API key.
type Sandboxes interface {
	Create(ctx context.Context, org string, req *sandbox.CreateRequest) (*wire.Sandbox, error)
	Get(ctx context.Context, org, id string) (*wire.Sandbox, error)
	StateOf(ctx context.Context, org, id string) (wire.State, error)
	List(ctx context.Context, f store.Filter) ([]*wire.Sandbox, error)
	Delete(ctx context.Context, org, id string) (*wire.Sandbox, error)
	Pause(ctx context.Context, org, id string) (*wire.Sandbox, error)
	Resume(ctx context.Context, org, id string) (*wire.Sandbox, error)
	SetTimeout(ctx context.Context, org, id string, seconds int64) (*wire.Sandbox, error)
	Fork(ctx context.Context, org, id string, count int) ([]*wire.Sandbox, error)
	Snapshot(ctx context.Context, org, id, name string) (*wire.Image, error)
	PortTarget(ctx context.Context, org, id string, port int) (netip.AddrPort, error)

	StartProcess(ctx context.Context, org, id string, req *guest.ProcStart) (*sandbox.ProcStream, error)
	ConnectProcess(ctx context.Context, org, id string, pid int) (*sandbox.ProcStream, error)
	Processes(ctx context.Context, org, id string) ([]guest.ProcInfo, error)
	ProcessInput(ctx context.Context, org, id string, pid int, data []byte) error
	CloseProcessStdin(ctx context.Context, org, id string, pid int) error
	SignalProcess(ctx context.Context, org, id string, pid, signal int) error
	ResizeProcess(ctx context.Context, org, id string, pid int, size guest.TermSize) error

	ReadFile(ctx context.Context, org, id, path string) (io.ReadCloser, int64, error)
	WriteFile(ctx context.Context, org, id, path, mode string, r io.Reader) (*wire.FileInfo, error)
	ListFiles(ctx context.Context, org, id, path string) (*wire.FileList, error)
	StatFile(ctx context.Context, org, id, path string) (*wire.FileInfo, error)
	Mkdir(ctx context.Context, org, id, path string) (*wire.FileInfo, error)
	RemoveFile(ctx context.Context, org, id, path string, recursive bool) error
	MoveFile(ctx context.Context, org, id, from, to string) (*wire.FileInfo, error)

	WatchDir(ctx context.Context, org, id string, req guest.WatchRequest) (*sandbox.WatchStream, error)
	CreateWatcher(ctx context.Context, org, id string, req guest.WatchRequest) (string, error)
	WatcherEvents(ctx context.Context, org, id, watcher string) ([]guest.WatchEvent, error)
	RemoveWatcher(ctx context.Context, org, id, watcher string) error
}

// Handler serves E2B's APIs.
type Handler struct {
	sandboxes Sandboxes
	// authorize authenticates a control-plane request by API key and
	// checks the key's scopes: the org, or the status to refuse with.
	authorize func(r *http.Request, scopes ...string) (org string, status int, msg string)
	secret    []byte
	// domain is what E2B's SDKs build hosts under: {port}-{id}.{domain};
	// "" turns host-based routing off.
	domain string
	log    *slog.Logger
	envd   http.Handler
	api    http.Handler
}

// Config configures a Handler.
type Config struct {
	Sandboxes Sandboxes
	Authorize func(r *http.Request, scopes ...string) (org string, status int, msg string)
	// Secret signs envd access tokens; keep it across restarts.
	Secret []byte
	// Domain is returned to the SDKs as the sandboxes' domain (it may
	// carry a port: "localhost:8080").
	Domain string
	Log    *slog.Logger
}

// New builds the handler.
func New(c Config) *Handler {
	h := &Handler{sandboxes: c.Sandboxes, authorize: c.Authorize, secret: c.Secret, domain: strings.ToLower(c.Domain), log: c.Log}
	h.envd = h.envdRoutes()
	h.api = h.apiRoutes()
	return h
}

// Match says whether a request is for the E2B layer.
func (h *Handler) Match(r *http.Request) bool {
	if r.Header.Get("E2b-Sandbox-Id") != "" {
		return true
	}
	if _, _, ok := h.hostTarget(r); ok {
		return true
	}
	p := r.URL.Path
	return p == "/sandboxes" || strings.HasPrefix(p, "/sandboxes/") || strings.HasPrefix(p, "/v2/sandboxes") ||
		strings.HasPrefix(p, "/templates") || strings.HasPrefix(p, "/v2/templates") || strings.HasPrefix(p, "/v3/templates")
}

// ServeHTTP serves a matched request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if id, port, ok := h.sandboxTarget(r); ok {
		h.serveSandbox(w, r, id, port)
		return
	}
	h.api.ServeHTTP(w, r)
}

// sandboxTarget finds the sandbox and port a request is for: by E2B's
// headers, or by a {port}-{id}.{domain} host.
func (h *Handler) sandboxTarget(r *http.Request) (id string, port int, ok bool) {
	if sid := r.Header.Get("E2b-Sandbox-Id"); sid != "" {
		port := EnvdPort
		if p := r.Header.Get("E2b-Sandbox-Port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 65535 {
				return sid, 0, true // refused below, as a bad port
			}
			port = n
		}
		return sid, port, true
	}
	return h.hostTarget(r)
}

func (h *Handler) hostTarget(r *http.Request) (id string, port int, ok bool) {
	if h.domain == "" {
		return "", 0, false
	}
	host := strings.ToLower(r.Host)
	label, found := strings.CutSuffix(host, "."+h.domain)
	if !found {
		// The domain may name the port the server is reached on; the
		// host may carry it or not.
		if hh, _, err := net.SplitHostPort(host); err == nil {
			d := h.domain
			if dh, _, err := net.SplitHostPort(d); err == nil {
				d = dh
			}
			label, found = strings.CutSuffix(hh, "."+d)
		}
	}
	if !found {
		return "", 0, false
	}
	p, sid, cut := strings.Cut(label, "-")
	n, err := strconv.Atoi(p)
	if !cut || err != nil || n < 1 || n > 65535 || !validE2BID(sid) {
		return "", 0, false
	}
	return sid, n, true
}

// serveSandbox serves envd (its port) or a sandbox's own port.
func (h *Handler) serveSandbox(w http.ResponseWriter, r *http.Request, e2bID string, port int) {
	id, ok := warrenID(e2bID)
	if !ok || port == 0 {
		envdError(w, http.StatusBadRequest, "the E2b-Sandbox-Id or E2b-Sandbox-Port header is not valid")
		return
	}
	if port != EnvdPort {
		h.servePort(w, r, id, port)
		return
	}
	tok := r.Header.Get("X-Access-Token")
	// The health probe needs no token, as envd's does not.
	health := r.URL.Path == "/health" && tok == ""
	if !health && !hmac.Equal([]byte(tok), []byte(h.accessToken(id))) {
		envdError(w, http.StatusUnauthorized, "invalid or missing X-Access-Token for sandbox "+e2bID)
		return
	}
	// A sandbox that is gone is envd's 502, which the SDKs report as the
	// sandbox having timed out.
	if st, err := h.sandboxes.StateOf(r.Context(), "", id); err != nil || st != wire.StateRunning && st != wire.StatePaused {
		envdError(w, http.StatusBadGateway, "sandbox "+e2bID+" is not running")
		return
	}
	h.envd.ServeHTTP(w, r.WithContext(withSandbox(r.Context(), id)))
}

// accessToken is a sandbox's envd token: an HMAC of its id, so a
// restart needs nothing stored.
func (h *Handler) accessToken(id string) string {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte("e2b-envd\x00" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// trafficToken guards the ports of a sandbox created without public
// traffic.
func (h *Handler) trafficToken(id string) string {
	m := hmac.New(sha256.New, h.secret)
	m.Write([]byte("e2b-traffic\x00" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

type sandboxKey struct{}

func withSandbox(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, sandboxKey{}, id)
}

func sandboxOf(ctx context.Context) string {
	id, _ := ctx.Value(sandboxKey{}).(string)
	return id
}

// E2B's sandbox ids are lowercase letters and digits; warren's are
// "sbx_" and 20 base32 letters, so the E2B id is warren's without its
// prefix. Both forms are accepted.
const idPrefix = "sbx_"

func e2bID(id string) string { return strings.TrimPrefix(id, idPrefix) }

func warrenID(s string) (string, bool) {
	s = strings.TrimPrefix(s, idPrefix)
	if !validE2BID(s) {
		return "", false
	}
	return idPrefix + s, true
}

func validE2BID(s string) bool {
	if len(s) != 20 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// apiError is E2B's control-plane error body.
type apiError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiFail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Code: status, Message: msg})
}

// envdError is envd's HTTP error body.
func envdError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Code: status, Message: msg})
}

// statusOf maps a sandbox manager error to the HTTP status E2B's SDKs
// expect for it. A sandbox that is not running is envd's 502, which the
// SDKs report as the sandbox having timed out.
func statusOf(err error) int {
	kind, _ := sandbox.KindOf(err)
	switch kind {
	case sandbox.KindBadRequest:
		return http.StatusBadRequest
	case sandbox.KindNotFound:
		return http.StatusNotFound
	case sandbox.KindConflict:
		return http.StatusConflict
	case sandbox.KindTooMany:
		return http.StatusTooManyRequests
	case sandbox.KindNoSpace:
		return http.StatusInsufficientStorage
	case sandbox.KindTooLarge:
		return http.StatusRequestEntityTooLarge
	case sandbox.KindUnavailable:
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

// SandboxOf names the warren sandbox a matched request is for, if it is
// for one: by E2B's headers or host, or by the control plane's
// /sandboxes/{id} and /v2/sandboxes/{id} paths. A cluster routes by it.
func (h *Handler) SandboxOf(r *http.Request) (string, bool) {
	if e2bID, _, ok := h.sandboxTarget(r); ok {
		return warrenID(e2bID)
	}
	p := strings.TrimPrefix(r.URL.Path, "/v2")
	rest, ok := strings.CutPrefix(p, "/sandboxes/")
	if !ok {
		return "", false
	}
	e2bID, _, _ := strings.Cut(rest, "/")
	return warrenID(e2bID)
}
