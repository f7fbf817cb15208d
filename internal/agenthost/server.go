package agenthost

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/console"
)

// HostTokenHeader carries the host token, as OpenWork's server expects.
const HostTokenHeader = "X-OpenWork-Host-Token"

// roleHost is the caller holding the host token: above every scope.
const roleHost = "host"

type roleKey struct{}

func roleOf(r *http.Request) string { s, _ := r.Context().Value(roleKey{}).(string); return s }

func (h *Host) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", h.handleHealth)
	mux.HandleFunc("GET /status", h.auth(ScopeViewer, h.handleStatus))
	mux.HandleFunc("GET /workspaces", h.auth(ScopeViewer, h.handleWorkspaces))
	mux.HandleFunc("POST /workspaces", h.auth(roleHost, h.handleAddWorkspace))
	mux.HandleFunc("DELETE /workspaces/{id}", h.auth(roleHost, h.handleRemoveWorkspace))
	mux.HandleFunc("POST /workspaces/{id}/dispose", h.auth(roleHost, h.handleDispose))
	mux.HandleFunc("GET /approvals", h.auth(roleHost, h.handleApprovals))
	mux.HandleFunc("POST /approvals/{id}", h.auth(roleHost, h.handleReply))
	mux.HandleFunc("GET /tokens", h.auth(roleHost, h.handleTokens))
	mux.HandleFunc("POST /tokens", h.auth(roleHost, h.handleMint))
	mux.HandleFunc("DELETE /tokens/{id}", h.auth(roleHost, h.handleRevoke))
	mux.HandleFunc("GET /bridge", h.auth(roleHost, h.handleBridge))
	mux.HandleFunc("POST /bridge/codes", h.auth(roleHost, h.handlePairCode))
	mux.HandleFunc("POST /bridge/claim", h.auth(roleHost, h.handleClaim))
	mux.HandleFunc("POST /bridge/refused", h.auth(roleHost, h.handleRefuse))
	mux.HandleFunc("GET /bridge/chats/{key}", h.auth(roleHost, h.handleChat))
	mux.HandleFunc("PATCH /bridge/chats/{key}", h.auth(roleHost, h.handleUpdateChat))
	mux.HandleFunc("DELETE /bridge/chats/{key}", h.auth(roleHost, h.handleUnpair))
	mux.HandleFunc("/w/{id}/opencode/{rest...}", h.auth(ScopeViewer, h.handleProxy))
	mux.HandleFunc("/opencode/{rest...}", h.auth(ScopeViewer, h.handleProxy))
	// The console's agent-host page (it signs in with the host token).
	page := &console.Handler{AgentHost: true}
	mux.Handle("GET /{$}", page)
	mux.Handle("GET /console/", page)
	return h.logRequests(mux)
}

// rank orders roles: a caller may do what its rank or a lower one allows.
var rank = map[string]int{ScopeViewer: 1, ScopeCollaborator: 2, ScopeOwner: 3, roleHost: 4}

// auth admits callers whose token carries at least the scope need.
func (h *Host) auth(need string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		role := ""
		if t := r.Header.Get(HostTokenHeader); t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(h.st.f.HostToken)) == 1 {
			role = roleHost
		} else if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			role = h.st.scopeOf(strings.TrimSpace(t))
		} else if _, pass, ok := r.BasicAuth(); ok {
			// OpenCode's own clients (opencode attach --password) speak
			// basic auth: the token is the password, any user name.
			role = h.st.scopeOf(pass)
		}
		if role == "" {
			writeJSONError(w, http.StatusUnauthorized, "unauthorized", "send Authorization: Bearer <token>, or the token as a basic-auth password (or the host token in "+HostTokenHeader+")")
			return
		}
		if rank[role] < rank[need] {
			writeJSONError(w, http.StatusForbidden, "forbidden", "a "+role+" token cannot do this")
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), roleKey{}, role)))
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeJSONError(w http.ResponseWriter, code int, kind, msg string) {
	writeJSON(w, code, map[string]any{"ok": false, "error": map[string]string{"code": kind, "message": msg}})
}

func (h *Host) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "version": h.cfg.Version, "uptimeMs": time.Since(h.started).Milliseconds()})
}

func (h *Host) handleStatus(w http.ResponseWriter, r *http.Request) {
	var services []map[string]any
	for _, ws := range h.Workspaces() {
		services = append(services, map[string]any{
			"name": "opencode", "workspaceId": ws.ID, "healthy": ws.Healthy(), "url": ws.OpenCodeURL,
			"sandbox": ws.Runtime, "sandboxId": ws.SandboxID, "uptimeMs": time.Since(ws.StartedAt).Milliseconds(),
			// Any token reads this: the command names no token.
			"attach": ws.attach(h.ConnectURL(), "<your token>"),
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"ok": true, "version": h.cfg.Version, "uptimeMs": time.Since(h.started).Milliseconds(), "runId": h.cfg.RunID,
		"approval":   map[string]any{"mode": h.cfg.Approval, "timeoutMs": h.cfg.ApprovalTimeout.Milliseconds()},
		"workspaces": len(services), "services": services, "warnings": h.Warnings(), "bridge": h.Bridge(),
	})
}

// workspaceView is a workspace as /workspaces lists it, in the shape of
// OpenWork's server (path, name, workspaceType, baseUrl, directory).
type workspaceView struct {
	ID            string       `json:"id"`
	Name          string       `json:"name"`
	Path          string       `json:"path"`
	WorkspaceType string       `json:"workspaceType"`
	BaseURL       string       `json:"baseUrl"`
	Directory     string       `json:"directory"`
	OpenCode      openCodeView `json:"opencode"`
	Sandbox       string       `json:"sandbox"`
}

type openCodeView struct {
	BaseURL   string `json:"baseUrl"`
	Directory string `json:"directory"`
	Username  string `json:"username,omitempty"`
	Password  string `json:"password,omitempty"`
}

func (h *Host) handleWorkspaces(w http.ResponseWriter, r *http.Request) {
	items := []workspaceView{}
	activeID := ""
	for i, ws := range h.Workspaces() {
		if i == 0 {
			activeID = ws.ID
		}
		// Owners may also reach OpenCode directly.
		items = append(items, h.viewOf(ws, rank[roleOf(r)] >= rank[ScopeOwner]))
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "activeId": activeID})
}

func (h *Host) viewOf(ws *Workspace, owner bool) workspaceView {
	oc := openCodeView{BaseURL: h.ConnectURL() + "/w/" + ws.ID + "/opencode", Directory: ws.Directory()}
	if owner {
		oc.Username, oc.Password = ws.Username, ws.Password
	}
	return workspaceView{ID: ws.ID, Name: ws.Name, Path: ws.Path, WorkspaceType: "local",
		BaseURL: oc.BaseURL, Directory: oc.Directory, OpenCode: oc, Sandbox: ws.Runtime}
}

func (h *Host) handleAddWorkspace(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Path string `json:"path"`
		Name string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Path == "" {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "path: a workspace directory is required")
		return
	}
	// Whoever holds the host token may be remote: the directories they
	// can hand an agent are the ones the mount allowlist names.
	list := h.cfg.Allowlist
	if list == nil {
		list = &Allowlist{path: "the mount allowlist"}
	}
	if _, err := list.CheckWorkspace(req.Path); err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	// A client that hangs up does not leave a half-made workspace.
	ws, err := h.Add(context.WithoutCancel(r.Context()), req.Path, req.Name)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, h.viewOf(ws, true))
}

func (h *Host) handleRemoveWorkspace(w http.ResponseWriter, r *http.Request) {
	h.workspaceOp(w, r, h.Remove)
}

func (h *Host) handleDispose(w http.ResponseWriter, r *http.Request) {
	h.workspaceOp(w, r, h.Dispose)
}

func (h *Host) workspaceOp(w http.ResponseWriter, r *http.Request, op func(context.Context, string) error) {
	err := op(context.WithoutCancel(r.Context()), r.PathValue("id"))
	switch {
	case errors.Is(err, ErrNoWorkspace):
		writeJSONError(w, http.StatusNotFound, "not_found", err.Error())
	case err != nil:
		writeJSONError(w, http.StatusInternalServerError, "internal", err.Error())
	default:
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "id": r.PathValue("id")})
	}
}

// handleApprovals lists the pending approvals. With ?wait=DURATION and
// ?version=N (the version of the list the caller has) it answers when the
// list changes, or after the wait: the chat bridge follows it that way.
func (h *Host) handleApprovals(w http.ResponseWriter, r *http.Request) {
	if ws := r.URL.Query().Get("wait"); ws != "" {
		wait, err := time.ParseDuration(ws)
		if err != nil || wait < 0 {
			writeJSONError(w, http.StatusBadRequest, "bad_request", "wait: want a duration like 30s")
			return
		}
		version, err := strconv.ParseUint(r.URL.Query().Get("version"), 10, 64)
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "bad_request", "version: want the version of the list you have")
			return
		}
		h.approvals.wait(r.Context(), version, wait)
	}
	items, version := h.approvalsVersion()
	writeJSON(w, http.StatusOK, map[string]any{"items": items, "mode": h.cfg.Approval, "version": version})
}

func (h *Host) handleReply(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reply string `json:"reply"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || (req.Reply != "allow" && req.Reply != "deny") {
		writeJSONError(w, http.StatusBadRequest, "bad_request", `reply: want "allow" or "deny"`)
		return
	}
	err := h.Decide(context.WithoutCancel(r.Context()), r.PathValue("id"), req.Reply == "allow", "host")
	switch {
	case errors.Is(err, ErrNoApproval):
		writeJSONError(w, http.StatusNotFound, "not_found", err.Error())
	case err != nil:
		writeJSONError(w, http.StatusBadGateway, "bad_gateway", err.Error())
	default:
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "id": r.PathValue("id"), "reply": req.Reply})
	}
}

func (h *Host) handleTokens(w http.ResponseWriter, r *http.Request) {
	items := []map[string]any{}
	for _, t := range h.st.tokens() {
		// The hash stays in the state file; clients have no use for it.
		items = append(items, map[string]any{"id": t.ID, "scope": t.Scope, "label": t.Label, "createdAt": t.CreatedAt})
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": items})
}

func (h *Host) handleMint(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Scope string `json:"scope"`
		Label string `json:"label"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "decode body: "+err.Error())
		return
	}
	rec, tok, err := h.st.mint(req.Scope, req.Label)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "scope: "+err.Error())
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"token": tok, "id": rec.ID, "scope": rec.Scope, "label": rec.Label, "createdAt": rec.CreatedAt})
}

func (h *Host) handleRevoke(w http.ResponseWriter, r *http.Request) {
	ok, err := h.st.revoke(r.PathValue("id"))
	switch {
	case err != nil:
		writeJSONError(w, http.StatusInternalServerError, "internal", err.Error())
	case !ok:
		writeJSONError(w, http.StatusNotFound, "not_found", "no token "+r.PathValue("id"))
	default:
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	}
}

// handleProxy passes a request to the workspace's OpenCode with its basic
// auth, streaming both ways (SSE included).
func (h *Host) handleProxy(w http.ResponseWriter, r *http.Request) {
	ws := h.workspace(r.PathValue("id"))
	if ws == nil {
		writeJSONError(w, http.StatusNotFound, "not_found", "no workspace "+r.PathValue("id"))
		return
	}
	rest := "/" + r.PathValue("rest")
	allow, hold, why := h.mayProxy(roleOf(r), classify(r, rest))
	if hold {
		// A direct command from a collaborator in manual mode waits for
		// the host, like a tool call would.
		allowed, err := h.holdRequest(r, ws, rest)
		if err != nil {
			writeJSONError(w, http.StatusTooManyRequests, "too_many_requests", err.Error())
			return
		}
		if !allowed {
			writeJSONError(w, http.StatusForbidden, "forbidden", "the host denied "+r.Method+" "+rest+" (or did not answer in time)")
			return
		}
		allow = true
	}
	if !allow {
		writeJSONError(w, http.StatusForbidden, "forbidden", why)
		return
	}
	target, err := url.Parse(ws.OpenCodeURL)
	if err != nil {
		writeJSONError(w, http.StatusBadGateway, "bad_gateway", err.Error())
		return
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = rest
			pr.Out.URL.RawPath = ""
			pr.Out.Header.Del(HostTokenHeader)
			pr.Out.SetBasicAuth(ws.Username, ws.Password)
		},
		// Flush at once: event streams must not wait in a buffer.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeJSONError(w, http.StatusBadGateway, "bad_gateway", "opencode: "+err.Error())
		},
	}
	proxy.ServeHTTP(w, r)
}

// answersPermission says whether a request to OpenCode answers a
// permission request (both its current and its older endpoint).
func answersPermission(method, path string) bool {
	if method != http.MethodPost {
		return false
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	return (len(parts) == 3 && parts[0] == "permission" && parts[2] == "reply") ||
		(len(parts) == 4 && parts[0] == "session" && parts[2] == "permissions") ||
		(len(parts) == 6 && parts[0] == "api" && parts[1] == "session" && parts[3] == "permission" && parts[5] == "reply")
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// logRequests logs every request with method, path, status and duration.
func (h *Host) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		h.log.Info("request", "service.name", "workspace-server", "http.method", r.Method, "http.path", r.URL.Path,
			"http.status", rec.status, "duration_ms", float64(time.Since(start).Microseconds())/1000)
	})
}
