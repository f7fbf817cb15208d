package e2b

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// defaultTimeout is a sandbox's lifetime when a create names none, as
// E2B's SDKs document (5 minutes).
const defaultTimeout = 300

// clientID is what E2B calls the node a sandbox runs on.
const clientID = "warren"

func (h *Handler) apiRoutes() http.Handler {
	mux := http.NewServeMux()
	read, write := []string{wire.ScopeSandboxesRead}, []string{wire.ScopeSandboxesWrite}
	for _, r := range []struct {
		pattern string
		handler func(w http.ResponseWriter, r *http.Request, org string)
		scopes  []string
	}{
		{"POST /sandboxes", h.create, write},
		{"POST /v2/sandboxes", h.create, write},
		{"GET /sandboxes", h.list, read},
		{"GET /v2/sandboxes", h.list, read},
		{"GET /sandboxes/{id}", h.get, read},
		{"DELETE /sandboxes/{id}", h.kill, write},
		{"POST /sandboxes/{id}/timeout", h.setTimeout, write},
		{"POST /sandboxes/{id}/pause", h.pause, write},
		{"POST /sandboxes/{id}/resume", h.connect, write},
		{"POST /sandboxes/{id}/connect", h.connect, write},
		{"POST /v2/sandboxes/{id}/connect", h.connect, write},
		{"POST /sandboxes/{id}/refreshes", h.refresh, write},
		{"POST /sandboxes/{id}/fork", h.fork, write},
		{"POST /sandboxes/{id}/snapshots", h.snapshot, []string{wire.ScopeSandboxesWrite, wire.ScopeImagesWrite}},
		{"GET /sandboxes/{id}/metrics", h.metrics, read},
	} {
		mux.HandleFunc(r.pattern, h.authenticated(r.scopes, r.handler))
	}
	mux.HandleFunc("/", h.authenticated(nil, func(w http.ResponseWriter, r *http.Request, _ string) {
		if strings.Contains(r.URL.Path, "templates") {
			apiFail(w, http.StatusNotImplemented, "warren does not build E2B templates: build an image with warren's API (POST /v1/images/build takes a Dockerfile) and pass its name as the template")
			return
		}
		apiFail(w, http.StatusNotImplemented, "warren does not implement "+r.Method+" "+r.URL.Path+" of E2B's API; see docs/E2B.md")
	}))
	return mux
}

// authenticated checks the API key in X-API-KEY (or warren's own
// Authorization header) and its scopes.
func (h *Handler) authenticated(scopes []string, next func(w http.ResponseWriter, r *http.Request, org string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		org, status, msg := h.authorize(r, scopes...)
		if status != 0 {
			if status == http.StatusUnauthorized {
				msg += ": send it in X-API-KEY"
			}
			apiFail(w, status, msg)
			return
		}
		next(w, r, org)
	}
}

// createBody is what E2B's SDKs send to create a sandbox. Fields warren
// has no counterpart for are accepted and ignored (docs/E2B.md).
type createBody struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int64            `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	AutoPause           *bool             `json:"autoPause"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Secure              *bool             `json:"secure"`
	Network             *struct {
		AllowPublicTraffic *bool    `json:"allowPublicTraffic"`
		AllowOut           []string `json:"allowOut"`
		DenyOut            []string `json:"denyOut"`
	} `json:"network"`
}

// sandboxAnswer is E2B's Sandbox: the answer to a create or connect.
type sandboxAnswer struct {
	SandboxID          string  `json:"sandboxID"`
	TemplateID         string  `json:"templateID"`
	ClientID           string  `json:"clientID"`
	EnvdVersion        string  `json:"envdVersion"`
	EnvdAccessToken    string  `json:"envdAccessToken"`
	TrafficAccessToken *string `json:"trafficAccessToken"`
	Domain             *string `json:"domain"`
}

// detail is E2B's SandboxDetail and ListedSandbox.
type detail struct {
	SandboxID       string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	ClientID        string            `json:"clientID"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	State           string            `json:"state"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int               `json:"memoryMB"`
	DiskSizeMB      int               `json:"diskSizeMB"`
	Metadata        map[string]string `json:"metadata"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain"`
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request, org string) {
	var b createBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&b); err != nil {
		apiFail(w, http.StatusBadRequest, "invalid request body: "+err.Error())
		return
	}
	req := &sandbox.CreateRequest{}
	req.Image = b.TemplateID
	if req.Image == "" {
		req.Image = "base"
	}
	timeout := int64(defaultTimeout)
	if b.Timeout != nil {
		timeout = *b.Timeout
	}
	if timeout < 0 {
		apiFail(w, http.StatusBadRequest, "timeout must not be negative")
		return
	}
	if b.AutoPause != nil && *b.AutoPause {
		// warren pauses on an idle timeout, not at a deadline: the
		// sandbox pauses once it has been unused for the timeout.
		req.IdleTimeoutSeconds, req.IdleAction = &timeout, wire.IdlePause
	} else {
		req.TimeoutSeconds = &timeout
	}
	req.Env = b.EnvVars
	req.Metadata = maps.Clone(b.Metadata)
	delete(req.Metadata, PublicKey)
	public := b.Network == nil || b.Network.AllowPublicTraffic == nil || *b.Network.AllowPublicTraffic
	if public {
		if req.Metadata == nil {
			req.Metadata = map[string]string{}
		}
		req.Metadata[PublicKey] = "true"
	}
	if b.AllowInternetAccess != nil && !*b.AllowInternetAccess {
		req.Network = &wire.NetworkPolicy{Egress: "deny"}
	}
	if b.Network != nil && (len(b.Network.AllowOut) > 0 || len(b.Network.DenyOut) > 0) {
		req.Network = &wire.NetworkPolicy{Egress: "allow", Allow: b.Network.AllowOut, Deny: b.Network.DenyOut}
		if len(b.Network.AllowOut) > 0 {
			req.Network.Egress = "deny"
		}
	}
	sb, err := h.sandboxes.Create(r.Context(), org, req)
	if err != nil {
		// An unknown template is E2B's 404 (the SDKs' NotFoundError).
		if kind, field := sandbox.KindOf(err); kind == sandbox.KindBadRequest && field == "image" {
			apiFail(w, http.StatusNotFound, err.Error())
			return
		}
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, h.answer(sb))
}

func (h *Handler) answer(sb *wire.Sandbox) sandboxAnswer {
	a := sandboxAnswer{SandboxID: e2bID(sb.ID), TemplateID: sb.Image, ClientID: clientID,
		EnvdVersion: EnvdVersion, EnvdAccessToken: h.accessToken(sb.ID)}
	if sb.Metadata[PublicKey] != "true" {
		t := h.trafficToken(sb.ID)
		a.TrafficAccessToken = &t
	}
	if h.domain != "" {
		a.Domain = &h.domain
	}
	return a
}

func (h *Handler) detail(sb *wire.Sandbox) detail {
	d := detail{SandboxID: e2bID(sb.ID), TemplateID: sb.Image, ClientID: clientID, StartedAt: sb.CreatedAt,
		State: string(sb.State), CPUCount: max(int(sb.Resources.CPU+0.999), 1), MemoryMB: sb.Resources.MemoryMB,
		DiskSizeMB: sb.Resources.DiskMB, Metadata: maps.Clone(sb.Metadata), EnvdVersion: EnvdVersion}
	delete(d.Metadata, PublicKey)
	if d.Metadata == nil {
		d.Metadata = map[string]string{}
	}
	if sb.ExpiresAt != nil {
		d.EndAt = *sb.ExpiresAt
	}
	if h.domain != "" {
		d.Domain = &h.domain
	}
	return d
}

// lookup finds a live (running or paused) sandbox of org by E2B id;
// anything else is E2B's 404.
func (h *Handler) lookup(w http.ResponseWriter, r *http.Request, org string) (*wire.Sandbox, bool) {
	id, ok := warrenID(r.PathValue("id"))
	if ok {
		sb, err := h.sandboxes.Get(r.Context(), org, id)
		if err == nil && sb.State != wire.StateDeleted && sb.State != wire.StateFailed && sb.State != wire.StateDeleting {
			return sb, true
		}
		if err != nil && statusOf(err) != http.StatusNotFound {
			h.fail(w, err)
			return nil, false
		}
	}
	apiFail(w, http.StatusNotFound, fmt.Sprintf("sandbox %q not found", r.PathValue("id")))
	return nil, false
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request, org string) {
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	d := h.detail(sb)
	d.EnvdAccessToken = h.accessToken(sb.ID)
	writeJSON(w, http.StatusOK, d)
}

// list answers GET /sandboxes (every running one) and GET /v2/sandboxes
// (filtered by state and metadata, paginated with X-Next-Token).
func (h *Handler) list(w http.ResponseWriter, r *http.Request, org string) {
	q := r.URL.Query()
	f := store.Filter{Org: org, States: []string{string(wire.StateRunning), string(wire.StatePaused)}}
	if r.URL.Path == "/sandboxes" {
		f.States = []string{string(wire.StateRunning)}
	}
	if s := q.Get("state"); s != "" {
		f.States = nil
		for _, st := range strings.Split(s, ",") {
			if st != "running" && st != "paused" {
				apiFail(w, http.StatusBadRequest, fmt.Sprintf("state %q is not running or paused", st))
				return
			}
			f.States = append(f.States, st)
		}
	}
	if md := q.Get("metadata"); md != "" {
		// The SDKs send the filter as one query-encoded string of
		// query-encoded pairs.
		pairs, err := url.ParseQuery(md)
		if err != nil {
			apiFail(w, http.StatusBadRequest, "metadata filter: "+err.Error())
			return
		}
		f.Metadata = map[string]string{}
		for k, v := range pairs {
			f.Metadata[k] = v[0]
		}
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 100 {
			apiFail(w, http.StatusBadRequest, "limit must be from 1 to 100")
			return
		}
		limit = n
	}
	all, err := h.sandboxes.List(r.Context(), f)
	if err != nil {
		h.fail(w, err)
		return
	}
	// Newest first; the next token is the id after which the next page
	// starts.
	start := 0
	if tok := q.Get("nextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		i := slices.IndexFunc(all, func(sb *wire.Sandbox) bool { return sb.ID == string(b) })
		if err != nil || i < 0 {
			apiFail(w, http.StatusBadRequest, "nextToken is not valid (or its sandbox is gone)")
			return
		}
		start = i + 1
	}
	page := all[start:]
	if len(page) > limit {
		page = page[:limit]
		w.Header().Set("X-Next-Token", base64.RawURLEncoding.EncodeToString([]byte(page[len(page)-1].ID)))
	}
	out := make([]detail, 0, len(page))
	for _, sb := range page {
		out = append(out, h.detail(sb))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) kill(w http.ResponseWriter, r *http.Request, org string) {
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	if _, err := h.sandboxes.Delete(r.Context(), org, sb.ID); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// timeoutBody is the body of the timeout, connect and resume calls.
type timeoutBody struct {
	Timeout *int64 `json:"timeout"`
}

func decodeTimeout(w http.ResponseWriter, r *http.Request) (*int64, bool) {
	var b timeoutBody
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&b)
	if err != nil && !errors.Is(err, io.EOF) {
		apiFail(w, http.StatusBadRequest, "invalid request body: "+err.Error())
		return nil, false
	}
	if b.Timeout != nil && *b.Timeout < 0 {
		apiFail(w, http.StatusBadRequest, "timeout must not be negative")
		return nil, false
	}
	return b.Timeout, true
}

func (h *Handler) setTimeout(w http.ResponseWriter, r *http.Request, org string) {
	t, ok := decodeTimeout(w, r)
	if !ok {
		return
	}
	if t == nil {
		apiFail(w, http.StatusBadRequest, "timeout is required")
		return
	}
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	if _, err := h.sandboxes.SetTimeout(r.Context(), org, sb.ID, *t); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// forkResult is one entry of a fork's answer.
type forkResult struct {
	Sandbox *sandboxAnswer `json:"sandbox,omitempty"`
	Error   *apiError      `json:"error,omitempty"`
}

// fork copies a running sandbox into count new ones (gVisor only). warren
// makes all copies or none, so every entry succeeds or the call fails.
func (h *Handler) fork(w http.ResponseWriter, r *http.Request, org string) {
	var b struct {
		Timeout *int64 `json:"timeout"`
		Count   *int   `json:"count"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&b); err != nil && !errors.Is(err, io.EOF) {
		apiFail(w, http.StatusBadRequest, "invalid request body: "+err.Error())
		return
	}
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	count := 1
	if b.Count != nil {
		count = *b.Count
	}
	copies, err := h.sandboxes.Fork(r.Context(), org, sb.ID, count)
	if err != nil {
		h.fail(w, err)
		return
	}
	out := make([]forkResult, 0, len(copies))
	for _, c := range copies {
		if b.Timeout != nil {
			if _, err := h.sandboxes.SetTimeout(r.Context(), org, c.ID, *b.Timeout); err != nil {
				out = append(out, forkResult{Error: &apiError{Code: statusOf(err), Message: err.Error()}})
				continue
			}
		}
		a := h.answer(c)
		out = append(out, forkResult{Sandbox: &a})
	}
	writeJSON(w, http.StatusOK, out)
}

// snapshot saves a sandbox's files as an image, which later creates take
// as their template. (E2B's snapshots keep memory too; warren's image
// snapshots keep files: see docs/E2B.md.)
func (h *Handler) snapshot(w http.ResponseWriter, r *http.Request, org string) {
	var b struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&b); err != nil && !errors.Is(err, io.EOF) {
		apiFail(w, http.StatusBadRequest, "invalid request body: "+err.Error())
		return
	}
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	name := b.Name
	if name == "" {
		name = fmt.Sprintf("snapshot-%s-%d", e2bID(sb.ID), time.Now().Unix())
	}
	img, err := h.sandboxes.Snapshot(r.Context(), org, sb.ID, name)
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"snapshotID": img.Name, "names": []string{img.Name}})
}

// refresh extends a sandbox's life, as E2B's keep-alive does.
func (h *Handler) refresh(w http.ResponseWriter, r *http.Request, org string) {
	var b struct {
		Duration *int64 `json:"duration"`
	}
	_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&b)
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	d := int64(defaultTimeout)
	if b.Duration != nil && *b.Duration > 0 {
		d = *b.Duration
	}
	if _, err := h.sandboxes.SetTimeout(r.Context(), org, sb.ID, d); err != nil {
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) pause(w http.ResponseWriter, r *http.Request, org string) {
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	if sb.State == wire.StatePaused {
		apiFail(w, http.StatusConflict, fmt.Sprintf("sandbox %s is already paused", e2bID(sb.ID)))
		return
	}
	if _, err := h.sandboxes.Pause(r.Context(), org, sb.ID); err != nil {
		// E2B's SDKs read a 409 as "already paused"; a sandbox whose
		// runtime cannot pause (runc) is told so instead.
		if statusOf(err) == http.StatusConflict {
			apiFail(w, http.StatusBadRequest, err.Error())
			return
		}
		h.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// connect answers a running sandbox (200) or resumes a paused one (201);
// a timeout given restarts its clock.
func (h *Handler) connect(w http.ResponseWriter, r *http.Request, org string) {
	t, ok := decodeTimeout(w, r)
	if !ok {
		return
	}
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	status := http.StatusOK
	if sb.State == wire.StatePaused {
		var err error
		if sb, err = h.sandboxes.Resume(r.Context(), org, sb.ID); err != nil {
			h.fail(w, err)
			return
		}
		status = http.StatusCreated
	}
	if t != nil && sb.IdleAction != wire.IdlePause {
		if _, err := h.sandboxes.SetTimeout(r.Context(), org, sb.ID, *t); err != nil {
			h.fail(w, err)
			return
		}
	}
	writeJSON(w, status, h.answer(sb))
}

// metric is E2B's SandboxMetric. warren reports the sandbox's memory as
// one sample of now; CPU and disk use are not measured per sandbox.
type metric struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	MemUsed       int64     `json:"memUsed"`
	MemTotal      int64     `json:"memTotal"`
}

func (h *Handler) metrics(w http.ResponseWriter, r *http.Request, org string) {
	sb, ok := h.lookup(w, r, org)
	if !ok {
		return
	}
	out := []metric{}
	if sb.Memory != nil {
		now := time.Now().UTC()
		out = append(out, metric{Timestamp: now, TimestampUnix: now.Unix(), CPUCount: max(int(sb.Resources.CPU+0.999), 1),
			MemUsed: int64(sb.Memory.UsedMB * (1 << 20)), MemTotal: int64(sb.Memory.LimitMB) << 20})
	}
	writeJSON(w, http.StatusOK, out)
}

// fail answers a manager error in E2B's shape.
func (h *Handler) fail(w http.ResponseWriter, err error) {
	status := statusOf(err)
	if status == http.StatusInternalServerError && h.log != nil {
		h.log.Error("e2b request failed", "err", err)
	}
	if status == http.StatusBadGateway {
		status = http.StatusServiceUnavailable
	}
	apiFail(w, status, err.Error())
}
