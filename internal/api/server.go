// Package api serves warren's REST API under /v1.
package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/apikey"
	"github.com/warrenhq/warren/internal/cluster"
	"github.com/warrenhq/warren/internal/console"
	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/internal/metrics"
	"github.com/warrenhq/warren/internal/preview"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/internal/secrets"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/internal/volume"
	"github.com/warrenhq/warren/wire"
)

// Version is warren's version, set by the build.
var Version = "dev"

// Server is the HTTP API.
type Server struct {
	store    *store.Store
	sandbox  *sandbox.Manager
	images   *image.Store
	log      *slog.Logger
	mux      *http.ServeMux
	started  time.Time
	patterns []string
	// Preview serves exposed ports; nil disables previews.
	Preview *preview.Proxy
	// CORS, if set, lets pages from its origins call the API.
	CORS *CORS
	// E2B, if set, serves the requests of E2B's SDKs it matches.
	E2B interface {
		Match(r *http.Request) bool
		SandboxOf(r *http.Request) (string, bool)
		http.Handler
	}
	// Cluster, if set, places creates and routes each sandbox's requests
	// to the node it lives on.
	Cluster *cluster.Cluster
	// Secrets stores orgs' secrets; nil turns the secret routes off.
	Secrets *secrets.Vault
	// Volumes keeps volumes' storage; nil turns the volume routes off.
	Volumes *volume.Manager
	// limiter slows down clients that keep failing to authenticate.
	limiter *limiter
	// Metrics counts what the API does (may be nil).
	Metrics *metrics.Metrics
}

// New builds the API server.
func New(st *store.Store, mgr *sandbox.Manager, images *image.Store, log *slog.Logger) *Server {
	s := &Server{store: st, sandbox: mgr, images: images, log: log, mux: http.NewServeMux(), started: time.Now(), limiter: newLimiter()}
	for _, r := range slices.Concat(s.routes(), s.tenancyRoutes(), s.nodeRoutes()) {
		h := r.handler
		if r.scopes != nil {
			h = s.authenticate(r.scopes, h)
		}
		s.mux.Handle(r.pattern, h)
		s.patterns = append(s.patterns, r.pattern)
	}
	// The web console: pages, not API, so not in the OpenAPI document.
	page := &console.Handler{}
	s.mux.Handle("GET /{$}", page)
	s.mux.Handle("GET /console/", page)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, wire.CodeNotFound, "no route for "+r.Method+" "+r.URL.Path, "")
	})
	return s
}

type route struct {
	pattern string // "METHOD /path"
	handler http.HandlerFunc
	// scopes the caller's key must all have; nil: no key needed,
	// anyKey: any valid key.
	scopes []string
}

// Scopes of routes.
var (
	anyKey   = []string{}
	read     = []string{wire.ScopeSandboxesRead}
	write    = []string{wire.ScopeSandboxesWrite}
	images   = []string{wire.ScopeImagesWrite}
	snapshot = []string{wire.ScopeSandboxesWrite, wire.ScopeImagesWrite}
	admin    = []string{wire.ScopeAdmin}
)

func (s *Server) routes() []route {
	return []route{
		{"GET /healthz", s.handleHealth, nil},
		{"GET /metrics", s.handleMetrics, []string{wire.ScopeMetricsRead}},
		{"GET /v1/openapi.json", s.handleOpenAPI, nil},
		{"GET /v1/info", s.handleInfo, anyKey},
		{"POST /v1/sandboxes", s.handleCreate, write},
		{"GET /v1/sandboxes", s.handleList, read},
		{"GET /v1/sandboxes/{id}", s.handleGet, read},
		{"DELETE /v1/sandboxes/{id}", s.handleDelete, write},
		{"PUT /v1/sandboxes/{id}/network", s.handleSetNetwork, write},
		{"POST /v1/sandboxes/{id}/pause", s.handlePause, write},
		{"POST /v1/sandboxes/{id}/resume", s.handleResume, write},
		{"POST /v1/sandboxes/{id}/fork", s.handleFork, write},
		{"POST /v1/sandboxes/{id}/snapshot", s.handleSnapshot, snapshot},
		{"POST /v1/sandboxes/{id}/ports/{port}", s.handleExposePort, write},
		{"DELETE /v1/sandboxes/{id}/ports/{port}", s.handleUnexposePort, write},
		{"POST /v1/sandboxes/{id}/ports/{port}/token", s.handlePortToken, write},
		{"DELETE /v1/sandboxes/{id}/ports/{port}/tokens", s.handleRevokeTokens, write},
		{"DELETE /v1/sandboxes/{id}/ports/{port}/tokens/{token_id}", s.handleRevokeTokens, write},
		{"POST /v1/sandboxes/{id}/exec", s.handleExec, write},
		{"POST /v1/sandboxes/{id}/exec/stream", s.handleExecStream, write},
		{"GET /v1/sandboxes/{id}/exec/ws", s.handleExecWS, write},
		{"GET /v1/sandboxes/{id}/files", s.handleReadFile, read},
		{"PUT /v1/sandboxes/{id}/files", s.fileRoute(s.writeFile), write},
		{"DELETE /v1/sandboxes/{id}/files", s.fileRoute(s.removeFile), write},
		{"GET /v1/sandboxes/{id}/files/list", s.fileRoute(s.listFiles), read},
		{"GET /v1/sandboxes/{id}/files/stat", s.fileRoute(s.statFile), read},
		{"POST /v1/sandboxes/{id}/files/mkdir", s.fileRoute(s.mkdir), write},
		{"GET /v1/sandboxes/{id}/files/archive", s.handleReadArchive, read},
		{"PUT /v1/sandboxes/{id}/files/archive", s.fileRoute(s.writeArchive), write},
		{"GET /v1/sandboxes/{id}/pty", s.handlePTY, write},
		{"POST /v1/sandboxes/{id}/commands", s.handleStartCommand, write},
		{"GET /v1/sandboxes/{id}/commands", s.handleListCommands, read},
		{"GET /v1/sandboxes/{id}/commands/{name}/logs", s.handleCommandLogs, read},
		{"GET /v1/images", s.handleListImages, read},
		{"POST /v1/images", s.handlePullImage, images},
		{"POST /v1/images/import", s.handleImportImage, images},
		{"POST /v1/images/build", s.handleDockerfileBuild, images},
		{"POST /v1/images/prune", s.handlePruneImages, images},
		{"GET /v1/images/{name}", s.handleGetImage, read},
		{"DELETE /v1/images/{name}", s.handleDeleteImage, images},
		{"POST /v1/images/{name}/build", s.handleBuildImage, images},
	}
}

// Patterns lists the routes the server registers, "METHOD /path".
func (s *Server) Patterns() []string { return append([]string(nil), s.patterns...) }

// ServeHTTP logs every request and serves it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	if s.Cluster != nil && s.route(rec, r) {
		// served by the node the sandbox lives on, or placed
	} else if _, _, _, ok := s.previewMatch(r); ok {
		s.Preview.ServeHTTP(rec, r)
	} else if s.E2B != nil && s.E2B.Match(r) {
		s.E2B.ServeHTTP(rec, r)
	} else if s.CORS.handle(rec, r) {
		// a preflight, answered
	} else {
		s.mux.ServeHTTP(rec, r)
	}
	level := slog.LevelInfo
	if rec.status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request", "http.method", r.Method, "http.path", r.URL.Path,
		"http.status", rec.status, "duration_ms", float64(time.Since(start).Microseconds())/1000)
}

// recorder remembers the status; it passes Flush and Hijack through for
// streams and WebSockets.
type recorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("connection cannot be hijacked")
	}
	r.status = http.StatusSwitchingProtocols
	return h.Hijack()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

type ctxKey struct{}

// Caller is who made a request: the org its key acts in, the key, and
// what the key may do.
type Caller struct {
	Org    string
	KeyID  string
	Scopes []string
}

// Can says whether the caller's key has scope: admin has every scope,
// and a write scope includes its read scope.
func (c Caller) Can(scope string) bool {
	for _, have := range c.Scopes {
		if have == wire.ScopeAdmin || have == scope {
			return true
		}
		if family, ok := strings.CutSuffix(scope, ":read"); ok && have == family+":write" {
			return true
		}
	}
	return false
}

// NodeAdmin says whether the caller administers the whole node: an admin
// key of the default org. Admin keys of other orgs administer only
// their own org.
func (c Caller) NodeAdmin() bool {
	return c.Org == wire.DefaultOrgID && c.Can(wire.ScopeAdmin)
}

func callerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(ctxKey{}).(Caller)
	return c
}

func (s *Server) previewMatch(r *http.Request) (string, int, string, bool) {
	if s.Preview == nil {
		return "", 0, "", false
	}
	return s.Preview.Match(r)
}

var (
	errNoKey      = errors.New("missing or malformed API key: send Authorization: Bearer <key> (or X-API-Key: <key>)")
	errBadKey     = errors.New("invalid API key")
	errExpiredKey = errors.New("API key expired")
)

// keyOf looks up the request's API key; an unknown, expired or revoked
// key is errBadKey or errExpiredKey.
func (s *Server) keyOf(r *http.Request) (*store.APIKey, error) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		// E2B's SDKs send their key this way.
		key = r.Header.Get("X-API-Key")
		ok = key != ""
	}
	if !ok {
		key, ok = protocolKey(r)
	}
	key = strings.TrimSpace(key)
	if !ok || !apikey.Valid(key) {
		return nil, errNoKey
	}
	k, err := s.store.APIKeyByHash(r.Context(), apikey.Hash(key))
	if errors.Is(err, store.ErrNotFound) {
		return nil, errBadKey
	}
	if err != nil {
		return nil, err
	}
	if !k.ExpiresAt.IsZero() && time.Now().After(k.ExpiresAt) {
		return nil, errExpiredKey
	}
	return k, nil
}

// protocolKey finds an API key offered as a WebSocket subprotocol
// (wire.ProtocolKeyPrefix + key): a browser cannot set headers on a
// WebSocket, and a URL would leak the key into logs and history.
func protocolKey(r *http.Request) (string, bool) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return "", false
	}
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if key, ok := strings.CutPrefix(strings.TrimSpace(p), wire.ProtocolKeyPrefix); ok {
				return key, true
			}
		}
	}
	return "", false
}

// Authorize authenticates a request by API key for another front (the
// preview proxy, the E2B layer) and checks that the key has scope. It
// answers the caller, or the status and message to refuse with.
func (s *Server) Authorize(r *http.Request, scopes ...string) (Caller, int, string) {
	c, e := s.caller(r, scopes)
	if e != nil {
		return Caller{}, e.Code.Status(), e.Message
	}
	return c, 0, ""
}

// OrgOf authenticates a request by API key with read access to
// sandboxes, for the preview proxy.
func (s *Server) OrgOf(r *http.Request) (string, bool) {
	c, status, _ := s.Authorize(r, wire.ScopeSandboxesRead)
	return c.Org, status == 0
}

// caller authenticates a request and checks its key's scopes. Clients
// that keep failing are slowed down per address.
func (s *Server) caller(r *http.Request, scopes []string) (Caller, *wire.Error) {
	addr := clientAddr(r)
	if wait := s.limiter.blocked(addr); wait > 0 {
		return Caller{}, &wire.Error{Code: wire.CodeTooManyRequests, Message: fmt.Sprintf("too many failed authentications from %s; try again in %d s", addr, int(wait.Seconds())+1)}
	}
	k, err := s.keyOf(r)
	if err != nil {
		if errors.Is(err, errNoKey) || errors.Is(err, errBadKey) || errors.Is(err, errExpiredKey) {
			s.limiter.fail(addr)
			if s.Metrics != nil {
				s.Metrics.AuthFailure(err.Error())
			}
			return Caller{}, &wire.Error{Code: wire.CodeUnauthorized, Message: err.Error()}
		}
		return Caller{}, &wire.Error{Code: wire.CodeInternal, Message: err.Error()}
	}
	c := Caller{Org: k.Org, KeyID: k.ID, Scopes: k.Scopes}
	for _, sc := range scopes {
		if !c.Can(sc) {
			return Caller{}, &wire.Error{Code: wire.CodeForbidden, Message: fmt.Sprintf("API key %s lacks the scope %s", k.ID, sc)}
		}
	}
	return c, nil
}

func (s *Server) authenticate(scopes []string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, e := s.caller(r, scopes)
		if e != nil {
			if e.Code == wire.CodeTooManyRequests {
				w.Header().Set("Retry-After", "60")
			}
			writeError(w, e.Code, e.Message, "")
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, c)))
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code wire.ErrorCode, msg, field string) {
	writeJSON(w, code.Status(), wire.ErrorBody{Error: wire.Error{Code: code, Message: msg, Field: field}})
}

// codeOf maps the kinds of error the sandbox manager returns to the API's
// codes: the one place both HTTP answers and WebSocket error frames take
// theirs from.
var codeOf = map[sandbox.Kind]wire.ErrorCode{
	sandbox.KindInternal:    wire.CodeInternal,
	sandbox.KindBadRequest:  wire.CodeBadRequest,
	sandbox.KindNotFound:    wire.CodeNotFound,
	sandbox.KindConflict:    wire.CodeConflict,
	sandbox.KindUnavailable: wire.CodeUnavailable,
	sandbox.KindTooMany:     wire.CodeTooManyRequests,
	sandbox.KindNoSpace:     wire.CodeInsufficientStorage,
	sandbox.KindTooLarge:    wire.CodeTooLarge,
	sandbox.KindQuota:       wire.CodeQuotaExceeded,
}

// errorOf is what the API says about err.
func errorOf(err error) wire.Error {
	kind, field := sandbox.KindOf(err)
	code, ok := codeOf[kind]
	if !ok {
		code = wire.CodeInternal
	}
	e := wire.Error{Code: code, Message: err.Error()}
	if code == wire.CodeBadRequest || code == wire.CodeQuotaExceeded {
		e.Field = field
	}
	return e
}

// fail answers err with the status its kind calls for.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := errorOf(err)
	if e.Code == wire.CodeInternal {
		s.log.Error("request failed", "http.method", r.Method, "http.path", r.URL.Path, "err", err)
	}
	writeJSON(w, e.Code.Status(), wire.ErrorBody{Error: e})
}

// decode reads a JSON body strictly; errors name the offending field.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 8<<20))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return &sandbox.Error{Kind: sandbox.KindTooLarge, Message: fmt.Sprintf("request body is larger than %d bytes", tooBig.Limit)}
	}
	if err == nil {
		if dec.More() {
			return &sandbox.Error{Kind: sandbox.KindBadRequest, Message: "body has data after the JSON object"}
		}
		return nil
	}
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		return &sandbox.Error{Kind: sandbox.KindBadRequest, Field: te.Field,
			Message: fmt.Sprintf("field %s: expected %s, got %s", te.Field, te.Type, te.Value)}
	case errors.As(err, &se):
		return &sandbox.Error{Kind: sandbox.KindBadRequest, Message: fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, err)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &sandbox.Error{Kind: sandbox.KindBadRequest, Field: field, Message: fmt.Sprintf("unknown field %q", field)}
	case err.Error() == "EOF":
		return &sandbox.Error{Kind: sandbox.KindBadRequest, Message: "request body is empty; send a JSON object"}
	}
	return &sandbox.Error{Kind: sandbox.KindBadRequest, Message: "invalid request body: " + err.Error()}
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	// The node's metrics name every org's sandboxes.
	if c := callerFrom(r.Context()); !c.NodeAdmin() && c.Org != wire.DefaultOrgID {
		writeError(w, wire.CodeForbidden, "metrics are for keys of the default org", "")
		return
	}
	if s.Metrics == nil {
		writeError(w, wire.CodeNotFound, "metrics are off", "")
		return
	}
	s.Metrics.Handler().ServeHTTP(w, r)
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "version": Version, "uptime_ms": time.Since(s.started).Milliseconds()})
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, wire.Info{
		Version:        Version,
		Runtimes:       s.sandbox.Runtimes(),
		DefaultRuntime: s.sandbox.DefaultRuntime(),
		Warnings:       s.sandbox.Warnings(),
		Pools:          s.sandbox.Pools(),
		Org:            callerFrom(r.Context()).Org,
	})
}
