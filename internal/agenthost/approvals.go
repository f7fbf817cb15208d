package agenthost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Approval is an OpenCode permission request (a tool call that needs
// one: an edit, a shell command) waiting for the host's decision.
type Approval struct {
	ID          string         `json:"id"`
	WorkspaceID string         `json:"workspaceId"`
	SessionID   string         `json:"sessionId"`
	Permission  string         `json:"permission"`
	Patterns    []string       `json:"patterns"`
	Metadata    map[string]any `json:"metadata,omitempty"`
	CreatedAt   time.Time      `json:"createdAt"`
	ExpiresAt   time.Time      `json:"expiresAt"`

	ws    *Workspace
	timer *time.Timer
	// decided, for a request the proxy holds, hears the host's answer;
	// OpenCode's own requests are answered through OpenCode instead.
	decided chan bool
}

// maxPending bounds the approvals waiting at once: what an agent (or a
// collaborator) asks for past it is denied at once.
const maxPending = 256

// ErrNoApproval is an approval that is not (or no longer) pending.
var ErrNoApproval = errors.New("no such pending approval")

// approvals holds the pending requests of every workspace.
type approvals struct {
	mu      sync.Mutex
	pending map[string]*Approval
	// version counts changes to pending; changed is closed (and
	// replaced) at each, so a client can wait for the next one.
	version uint64
	changed chan struct{}
}

func (a *approvals) bumpLocked() {
	a.version++
	if a.changed != nil {
		close(a.changed)
	}
	a.changed = make(chan struct{})
}

// maxApprovalWait bounds how long GET /approvals?wait= holds a request.
const maxApprovalWait = 60 * time.Second

// waitApprovals returns once pending differs from version, or after wait.
func (a *approvals) wait(ctx context.Context, version uint64, wait time.Duration) {
	a.mu.Lock()
	if a.version != version {
		a.mu.Unlock()
		return
	}
	if a.changed == nil {
		a.changed = make(chan struct{})
	}
	ch := a.changed
	a.mu.Unlock()
	t := time.NewTimer(min(wait, maxApprovalWait))
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

// openCodeConfig is the permission part of OpenCode's config for a mode:
// manual asks for everything that changes something; auto allows it.
func openCodeConfig(mode string) string {
	action := "allow"
	if mode == "manual" {
		action = "ask"
	}
	b, _ := json.Marshal(map[string]any{"permission": map[string]string{
		"edit": action, "bash": action, "webfetch": action, "external_directory": action,
	}})
	return string(b)
}

// openCodeRequest is a request to a workspace's OpenCode with its auth.
func (w *Workspace) openCodeRequest(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var r *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	} else {
		r = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.OpenCodeURL+path, r)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(w.Username, w.Password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return http.DefaultClient.Do(req)
}

type permissionRequest struct {
	ID         string         `json:"id"`
	SessionID  string         `json:"sessionID"`
	Permission string         `json:"permission"`
	Patterns   []string       `json:"patterns"`
	Metadata   map[string]any `json:"metadata"`
}

// watchPermissions follows a workspace's OpenCode events for permission
// requests until ctx ends, reconnecting when the stream drops.
func (h *Host) watchPermissions(ctx context.Context, w *Workspace) {
	for ctx.Err() == nil {
		if err := h.followEvents(ctx, w); err != nil && ctx.Err() == nil {
			h.log.Warn("opencode event stream", "workspace.id", w.ID, "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (h *Host) followEvents(ctx context.Context, w *Workspace) error {
	resp, err := w.openCodeRequest(ctx, http.MethodGet, "/event", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	// Requests made before the stream was open are listed, not announced.
	if lr, err := w.openCodeRequest(ctx, http.MethodGet, "/permission", nil); err == nil {
		var pending []permissionRequest
		if json.NewDecoder(io.LimitReader(lr.Body, 8<<20)).Decode(&pending) == nil {
			for _, p := range pending {
				h.requested(ctx, w, p)
			}
		}
		lr.Body.Close()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 8<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data:")
		if !ok {
			continue
		}
		var ev struct {
			Type       string          `json:"type"`
			Properties json.RawMessage `json:"properties"`
		}
		if json.Unmarshal([]byte(data), &ev) != nil {
			continue
		}
		switch ev.Type {
		case "permission.asked":
			var p permissionRequest
			if json.Unmarshal(ev.Properties, &p) == nil && p.ID != "" {
				h.requested(ctx, w, p)
			}
		case "permission.replied":
			var p struct {
				RequestID string `json:"requestID"`
			}
			if json.Unmarshal(ev.Properties, &p) == nil {
				h.forgetApproval(p.RequestID)
			}
		}
	}
	return sc.Err()
}

// requested handles a new permission request by the approval mode.
func (h *Host) requested(ctx context.Context, w *Workspace, p permissionRequest) {
	if h.cfg.Approval != "manual" {
		if err := w.replyPermission(ctx, p.ID, true); err != nil {
			h.log.Error("allow permission", "workspace.id", w.ID, "approval.id", p.ID, "err", err)
		}
		return
	}
	now := time.Now().UTC()
	a := &Approval{ID: p.ID, WorkspaceID: w.ID, SessionID: p.SessionID, Permission: p.Permission, Patterns: p.Patterns,
		Metadata: p.Metadata, CreatedAt: now, ExpiresAt: now.Add(h.cfg.ApprovalTimeout), ws: w}
	h.approvals.mu.Lock()
	if _, ok := h.approvals.pending[a.ID]; ok {
		h.approvals.mu.Unlock()
		return
	}
	if len(h.approvals.pending) >= maxPending {
		h.approvals.mu.Unlock()
		h.log.Warn("too many approvals waiting; denying", "approval.id", a.ID, "workspace.id", w.ID, "pending", maxPending)
		if err := w.replyPermission(ctx, p.ID, false); err != nil {
			h.log.Error("deny permission", "workspace.id", w.ID, "approval.id", p.ID, "err", err)
		}
		return
	}
	h.approvals.pending[a.ID] = a
	h.approvals.bumpLocked()
	a.timer = time.AfterFunc(h.cfg.ApprovalTimeout, func() {
		if err := h.Decide(context.Background(), a.ID, false, "timeout"); err != nil && !errors.Is(err, ErrNoApproval) {
			h.log.Error("deny on timeout", "approval.id", a.ID, "err", err)
		}
	})
	h.approvals.mu.Unlock()
	h.log.Info("approval requested", "approval.id", a.ID, "workspace.id", w.ID, "permission", a.Permission,
		"patterns", strings.Join(a.Patterns, " "), "timeout", h.cfg.ApprovalTimeout.String())
}

func (h *Host) forgetApproval(id string) {
	h.approvals.mu.Lock()
	defer h.approvals.mu.Unlock()
	if a := h.approvals.pending[id]; a != nil {
		a.timer.Stop()
		delete(h.approvals.pending, id)
		h.approvals.bumpLocked()
	}
}

// Approvals lists the pending approvals, oldest first.
func (h *Host) Approvals() []*Approval {
	list, _ := h.approvalsVersion()
	return list
}

// approvalsVersion lists the pending approvals with the version they are.
func (h *Host) approvalsVersion() ([]*Approval, uint64) {
	h.approvals.mu.Lock()
	defer h.approvals.mu.Unlock()
	out := make([]*Approval, 0, len(h.approvals.pending))
	for _, a := range h.approvals.pending {
		out = append(out, a)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].CreatedAt.Before(out[j-1].CreatedAt); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, h.approvals.version
}

// Decide answers a pending approval: allow lets the tool call run once,
// deny rejects it. by says who decided (host, timeout), for the log.
func (h *Host) Decide(ctx context.Context, id string, allow bool, by string) error {
	h.approvals.mu.Lock()
	a := h.approvals.pending[id]
	if a != nil {
		a.timer.Stop()
		delete(h.approvals.pending, id)
		h.approvals.bumpLocked()
	}
	h.approvals.mu.Unlock()
	if a == nil {
		return fmt.Errorf("%w: %s", ErrNoApproval, id)
	}
	h.log.Info("approval answered", "approval.id", id, "workspace.id", a.WorkspaceID, "allow", allow, "by", by)
	if a.decided != nil {
		a.decided <- allow
		return nil
	}
	return a.ws.replyPermission(ctx, id, allow)
}

// maxHeldBody bounds the body of a request held for approval; the host
// sees what it would run.
const maxHeldBody = 1 << 20

// holdRequest asks the host whether a direct request may go through, and
// waits for the answer (a timeout denies). The body is read so the host
// can see it, and put back for the proxy.
func (h *Host) holdRequest(r *http.Request, ws *Workspace, path string) (bool, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHeldBody+1))
	if err != nil {
		return false, fmt.Errorf("read the request: %w", err)
	}
	if len(body) > maxHeldBody {
		return false, fmt.Errorf("a request held for approval may carry at most %d bytes", maxHeldBody)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	patterns := []string{r.Method + " " + path}
	var fields struct {
		Command   string `json:"command"`
		Arguments string `json:"arguments"`
	}
	if json.Unmarshal(body, &fields) == nil {
		for _, f := range []string{fields.Command, fields.Arguments} {
			if f != "" {
				patterns = append(patterns, truncate(f, 500))
			}
		}
	}
	now := time.Now().UTC()
	a := &Approval{ID: newToken("req"), WorkspaceID: ws.ID, Permission: "direct", Patterns: patterns,
		Metadata: map[string]any{"role": roleOf(r)}, CreatedAt: now, ExpiresAt: now.Add(h.cfg.ApprovalTimeout),
		ws: ws, decided: make(chan bool, 1)}
	h.approvals.mu.Lock()
	if len(h.approvals.pending) >= maxPending {
		h.approvals.mu.Unlock()
		return false, fmt.Errorf("%d approvals are already waiting; try again later", maxPending)
	}
	h.approvals.pending[a.ID] = a
	h.approvals.bumpLocked()
	a.timer = time.AfterFunc(h.cfg.ApprovalTimeout, func() {
		_ = h.Decide(context.Background(), a.ID, false, "timeout")
	})
	h.approvals.mu.Unlock()
	h.log.Info("approval requested", "approval.id", a.ID, "workspace.id", ws.ID, "permission", a.Permission,
		"patterns", strings.Join(a.Patterns, " | "), "timeout", h.cfg.ApprovalTimeout.String())
	select {
	case allow := <-a.decided:
		return allow, nil
	case <-r.Context().Done():
		h.forgetApproval(a.ID)
		return false, nil
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// replyPermission answers OpenCode's permission request.
func (w *Workspace) replyPermission(ctx context.Context, id string, allow bool) error {
	reply := "reject"
	if allow {
		reply = "once"
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := w.openCodeRequest(ctx, http.MethodPost, "/permission/"+id+"/reply", map[string]string{"reply": reply})
	if err != nil {
		return fmt.Errorf("answer permission %s: %w", id, err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("answer permission %s: opencode said %d", id, resp.StatusCode)
	}
	return nil
}
