package agenthost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/internal/sidecar"
)

// Config configures an agent host.
type Config struct {
	// DataDir keeps the host's state and the workspaces' persist dirs.
	DataDir string
	// Manager runs the sandboxes; nil when they run nowhere (--sandbox none).
	Manager *sandbox.Manager
	Org     string
	// Sandbox is auto, gvisor, runc or none (OpenCode on the host).
	Sandbox string
	Image   string
	// OpenCode is the binary to run, already resolved and verified.
	OpenCode *sidecar.Binary
	// Mounts are extra host paths for every workspace sandbox, already
	// checked against the allowlist (see Allowlist.Resolve).
	Mounts []runtime.Mount
	// Allowlist decides which directories POST /workspaces may add; nil
	// refuses every one.
	Allowlist *Allowlist
	// Approval is auto or manual; ApprovalTimeout denies what waits longer.
	Approval        string
	ApprovalTimeout time.Duration
	// Listen is the workspace server's address; ConnectHost the host name
	// clients are told to use.
	Listen      string
	ConnectHost string
	RunID       string
	Version     string
	// Log is warren's log; records should already carry the run id.
	Log *slog.Logger
}

// Host runs workspaces and serves them.
type Host struct {
	cfg     Config
	log     *slog.Logger
	st      *state
	started time.Time
	ln      net.Listener

	approvals approvals
	bridge    *bridgeState

	mu         sync.Mutex
	starting   map[string]bool
	workspaces map[string]*Workspace
	order      []string // ids, the first is the active workspace
}

// New loads the host's state; nothing starts until Add and Serve.
func New(cfg Config) (*Host, error) {
	switch cfg.Approval {
	case "", "auto":
		cfg.Approval = "auto"
	case "manual":
	default:
		return nil, fmt.Errorf("--approval %q: want auto or manual", cfg.Approval)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Image == "" {
		cfg.Image = "base"
	}
	if cfg.ApprovalTimeout <= 0 {
		cfg.ApprovalTimeout = 30 * time.Second
	}
	st, err := loadState(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	br, err := loadBridge(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	return &Host{cfg: cfg, log: cfg.Log, st: st, started: time.Now(), workspaces: map[string]*Workspace{}, starting: map[string]bool{},
		approvals: approvals{pending: map[string]*Approval{}}, bridge: br}, nil
}

// Add starts OpenCode for the workspace at path (a directory).
func (h *Host) Add(ctx context.Context, path, name string) (*Workspace, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("--workspace %s: %w", path, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("--workspace %s: %w", path, err)
	}
	if st, err := os.Stat(real); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--workspace %s: not a directory", path)
	}
	rec, err := h.st.workspace(real, name, filepath.Join(h.cfg.DataDir, "persist"))
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	if w := h.workspaces[rec.ID]; w != nil {
		h.mu.Unlock()
		return w, nil
	}
	// Two adds of one workspace at once would start two sandboxes and
	// lose one; the second is told to wait.
	if h.starting[rec.ID] {
		h.mu.Unlock()
		return nil, fmt.Errorf("workspace %s is starting; try again", rec.Path)
	}
	h.starting[rec.ID] = true
	h.mu.Unlock()
	h.log.Info("starting workspace", "workspace.id", rec.ID, "path", rec.Path, "sandbox", h.cfg.Sandbox)
	w, err := h.start(ctx, rec)
	h.mu.Lock()
	delete(h.starting, rec.ID)
	if err == nil {
		h.workspaces[w.ID] = w
		h.order = append(h.order, w.ID)
	}
	h.mu.Unlock()
	return w, err
}

// Resume starts every recorded workspace again (a daemon's restart). A
// workspace whose directory is gone is skipped with a warning.
func (h *Host) Resume(ctx context.Context) error {
	for _, rec := range h.st.records() {
		if _, err := h.Add(ctx, rec.Path, rec.Name); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			h.log.Warn("workspace not started", "workspace.id", rec.ID, "path", rec.Path, "err", err)
		}
	}
	return nil
}

// ErrNoWorkspace is an unknown workspace id.
var ErrNoWorkspace = errors.New("no such workspace")

// Dispose stops a workspace's OpenCode and removes its sandbox; the
// workspace stays recorded, and adding it again starts it afresh.
func (h *Host) Dispose(ctx context.Context, id string) error {
	h.mu.Lock()
	w := h.workspaces[id]
	delete(h.workspaces, id)
	for i, o := range h.order {
		if o == id {
			h.order = append(h.order[:i], h.order[i+1:]...)
			break
		}
	}
	h.mu.Unlock()
	if w == nil {
		for _, rec := range h.st.records() {
			if rec.ID == id {
				return nil // recorded, not running: nothing to stop
			}
		}
		return fmt.Errorf("%w: %s", ErrNoWorkspace, id)
	}
	h.log.Info("disposing workspace", "workspace.id", id)
	return w.stop(ctx)
}

// Remove disposes a workspace and forgets it. Its files and persist dir
// stay on disk.
func (h *Host) Remove(ctx context.Context, id string) error {
	if err := h.Dispose(ctx, id); err != nil {
		return err
	}
	_, err := h.st.forget(id)
	return err
}

// Workspaces lists the running workspaces, the active one first.
func (h *Host) Workspaces() []*Workspace {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Workspace, 0, len(h.order))
	for _, id := range h.order {
		out = append(out, h.workspaces[id])
	}
	return out
}

func (h *Host) workspace(id string) *Workspace {
	h.mu.Lock()
	defer h.mu.Unlock()
	if id == "" && len(h.order) > 0 {
		id = h.order[0]
	}
	return h.workspaces[id]
}

// Listen opens the workspace server's socket, so its URL is known before
// serving starts.
func (h *Host) Listen() error {
	ln, err := net.Listen("tcp", h.cfg.Listen)
	if err != nil {
		return fmt.Errorf("workspace server: listen on %s: %w", h.cfg.Listen, err)
	}
	h.ln = ln
	return nil
}

// URL is where the workspace server listens.
func (h *Host) URL() string { return "http://" + h.ln.Addr().String() }

// ConnectURL is the URL to give remote clients.
func (h *Host) ConnectURL() string {
	if h.cfg.ConnectHost == "" {
		return h.URL()
	}
	_, port, _ := net.SplitHostPort(h.ln.Addr().String())
	return "http://" + net.JoinHostPort(h.cfg.ConnectHost, port)
}

// Serve answers the workspace server's API until ctx ends.
func (h *Host) Serve(ctx context.Context) error {
	srv := &http.Server{Handler: h.handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(h.ln) }()
	go h.watch(ctx)
	select {
	case err := <-errc:
		return fmt.Errorf("workspace server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// watch probes every workspace's OpenCode now and then, for /status and
// the dashboard.
func (h *Host) watch(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, w := range h.Workspaces() {
				if !h.probe(ctx, w) {
					h.log.Warn("opencode is not answering", "workspace.id", w.ID, "service.name", "opencode")
				}
			}
		}
	}
}

// Close stops every workspace's OpenCode and removes its sandbox. The
// workspace files and persist dirs stay.
func (h *Host) Close(ctx context.Context) error {
	var errs []error
	for _, w := range h.Workspaces() {
		if err := w.stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop workspace %s: %w", w.ID, err))
		}
		h.log.Info("workspace stopped", "workspace.id", w.ID)
	}
	h.mu.Lock()
	h.workspaces, h.order = map[string]*Workspace{}, nil
	h.mu.Unlock()
	return errors.Join(errs...)
}

// Pairing is what a client needs to connect.
type Pairing struct {
	RunID       string             `json:"run_id"`
	URL         string             `json:"url"`
	ConnectURL  string             `json:"connect_url"`
	ClientToken string             `json:"client_token"`
	HostToken   string             `json:"host_token"`
	Approval    string             `json:"approval"`
	Workspaces  []WorkspacePairing `json:"workspaces"`
	// Warnings say where isolation is weaker than a gVisor sandbox.
	Warnings []string `json:"warnings,omitempty"`
	// Bridge names the chat platforms the bridge serves, if any.
	Bridge []string `json:"bridge,omitempty"`
}

// WorkspacePairing is one workspace's part of the pairing details.
type WorkspacePairing struct {
	ID               string `json:"id"`
	Name             string `json:"name"`
	Path             string `json:"path"`
	Sandbox          string `json:"sandbox"`
	SandboxID        string `json:"sandbox_id,omitempty"`
	ProxyURL         string `json:"proxy_url"`
	OpenCodeURL      string `json:"opencode_url"`
	OpenCodeUsername string `json:"opencode_username"`
	OpenCodePassword string `json:"opencode_password"`
	Attach           string `json:"attach"`
}

// Warnings say where this host's isolation is weaker than a gVisor
// sandbox: the node's own warnings, and workspaces run with no sandbox.
func (h *Host) Warnings() []string {
	var out []string
	if h.cfg.Manager != nil {
		out = h.cfg.Manager.Warnings()
	}
	for _, w := range h.Workspaces() {
		if w.Runtime == "none" {
			out = append(out, fmt.Sprintf("workspace %s: OpenCode runs directly on this host, with no sandbox (--sandbox none)", w.Name))
		}
	}
	return out
}

// attach is the command that attaches OpenCode's TUI to w through the
// workspace server at url, with token as its password.
func (w *Workspace) attach(url, token string) string {
	return fmt.Sprintf("opencode attach %s/w/%s/opencode --dir %s --password %s", url, w.ID, w.Directory(), token)
}

// Pairing returns the connect details.
func (h *Host) Pairing() *Pairing {
	p := &Pairing{RunID: h.cfg.RunID, URL: h.URL(), ConnectURL: h.ConnectURL(),
		ClientToken: h.st.f.ClientToken, HostToken: h.st.f.HostToken, Approval: h.cfg.Approval, Warnings: h.Warnings()}
	for _, w := range h.Workspaces() {
		p.Workspaces = append(p.Workspaces, WorkspacePairing{
			ID: w.ID, Name: w.Name, Path: w.Path, Sandbox: w.Runtime, SandboxID: w.SandboxID,
			ProxyURL:    p.ConnectURL + "/w/" + w.ID + "/opencode",
			OpenCodeURL: w.OpenCodeURL, OpenCodeUsername: w.Username, OpenCodePassword: w.Password,
			// Through the workspace server, with the client token: it works
			// from another machine, and OpenCode's own password stays here.
			Attach: w.attach(p.ConnectURL, p.ClientToken),
		})
	}
	return p
}
