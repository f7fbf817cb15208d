package agenthost

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/wire"
)

// Paths inside a workspace sandbox.
const (
	workspaceMount = "/workspace"
	persistMount   = "/persist"
	sidecarMount   = "/.warren/sidecars/opencode"
	openCodePort   = 4096
	openCodeUser   = "opencode"
)

// Workspace is a workspace with its OpenCode running.
type Workspace struct {
	WorkspaceRecord
	// SandboxID is empty when OpenCode runs on the host (--sandbox none).
	SandboxID string
	Runtime   string
	// OpenCodeURL is where warren reaches OpenCode; the credentials are
	// OpenCode's basic auth, which the proxy adds.
	OpenCodeURL string
	Username    string
	Password    string
	StartedAt   time.Time

	stop func(ctx context.Context) error
	mu   sync.Mutex
	// healthy is the last health probe's answer.
	healthy bool
}

// Directory is the workspace as OpenCode sees it.
func (w *Workspace) Directory() string {
	if w.SandboxID != "" {
		return workspaceMount
	}
	return w.Path
}

// start runs OpenCode for a workspace, in a sandbox or on the host.
func (h *Host) start(ctx context.Context, rec WorkspaceRecord) (*Workspace, error) {
	if err := h.cfg.OpenCode.Verify(); err != nil {
		return nil, fmt.Errorf("opencode binary: %w", err)
	}
	w := &Workspace{WorkspaceRecord: rec, Username: openCodeUser, Password: newToken("ocp"), StartedAt: time.Now()}
	var err error
	if h.cfg.Sandbox == "none" {
		err = h.startOnHost(ctx, w)
	} else {
		err = h.startInSandbox(ctx, w)
	}
	if err != nil {
		return nil, err
	}
	if err := h.waitHealthy(ctx, w, 90*time.Second); err != nil {
		_ = w.stop(context.WithoutCancel(ctx))
		return nil, err
	}
	// Permission requests are followed for as long as OpenCode runs.
	watchCtx, stopWatching := context.WithCancel(context.Background())
	go h.watchPermissions(watchCtx, w)
	stop := w.stop
	w.stop = func(ctx context.Context) error {
		stopWatching()
		return stop(ctx)
	}
	h.log.Info("opencode ready", "workspace.id", w.ID, "url", w.OpenCodeURL, "sandbox.id", w.SandboxID, "service.name", "opencode")
	return w, nil
}

func (h *Host) startInSandbox(ctx context.Context, w *Workspace) error {
	mgr := h.cfg.Manager
	if mgr == nil {
		return errors.New("no sandbox runtime is available; use --sandbox none")
	}
	rt := h.cfg.Sandbox
	if rt == "auto" {
		rt = ""
	}
	git, err := gitMounts(w.Path)
	if err != nil {
		return err
	}
	mounts := append([]runtime.Mount{
		{Source: w.Path, Target: workspaceMount},
		{Source: w.Persist, Target: persistMount},
		{Source: filepath.Dir(h.cfg.OpenCode.Path), Target: sidecarMount, ReadOnly: true},
	}, git...)
	sb, err := mgr.Create(ctx, h.cfg.Org, &sandbox.CreateRequest{
		CreateRequest: wire.CreateRequest{
			Image:     h.cfg.Image,
			Runtime:   rt,
			Resources: &wire.Resources{CPU: 2, MemoryMB: 4096},
			Metadata:  map[string]string{"warren.workspace": w.ID, "warren.run": h.cfg.RunID},
		},
		HostMounts: append(mounts, h.cfg.Mounts...),
	})
	if err != nil {
		return fmt.Errorf("create sandbox for workspace %s: %w", w.Path, err)
	}
	w.SandboxID, w.Runtime = sb.ID, sb.Runtime
	w.stop = func(ctx context.Context) error {
		_, err := mgr.Delete(ctx, h.cfg.Org, sb.ID)
		return err
	}
	bin := sidecarMount + "/" + filepath.Base(h.cfg.OpenCode.Path)
	_, err = mgr.StartCommand(ctx, h.cfg.Org, sb.ID, &wire.CommandRequest{
		Name: "opencode",
		Cmd:  fmt.Sprintf("exec %s serve --hostname 0.0.0.0 --port %d --print-logs", bin, openCodePort),
		Cwd:  workspaceMount,
		// The password goes to the command only: the sandbox's own env is
		// stored with its spec.
		Env: map[string]string{"HOME": persistMount, "OPENCODE_SERVER_USERNAME": w.Username, "OPENCODE_SERVER_PASSWORD": w.Password,
			"OPENCODE_CONFIG_CONTENT": openCodeConfig(h.cfg.Approval)},
	})
	if err != nil {
		_ = w.stop(context.WithoutCancel(ctx))
		return fmt.Errorf("start opencode in %s: %w", sb.ID, err)
	}
	w.OpenCodeURL = "http://" + net.JoinHostPort(sb.Address, strconv.Itoa(openCodePort))
	// OpenCode's log joins warren's.
	logs, release, err := mgr.CommandLogs(context.WithoutCancel(ctx), h.cfg.Org, sb.ID, "opencode", true)
	if err == nil {
		go func() {
			defer release()
			defer logs.Close()
			h.pipeLog(logs, w.ID, "opencode")
		}()
	}
	return nil
}

func (h *Host) startOnHost(ctx context.Context, w *Workspace) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	// Not tied to ctx: OpenCode lives until the workspace stops.
	cmd := exec.Command(h.cfg.OpenCode.Path, "serve", "--hostname", "127.0.0.1", "--port", strconv.Itoa(port), "--print-logs")
	cmd.Dir = w.Path
	cmd.Env = append(os.Environ(), "HOME="+w.Persist, "OPENCODE_SERVER_USERNAME="+w.Username, "OPENCODE_SERVER_PASSWORD="+w.Password,
		"OPENCODE_CONFIG_CONTENT="+openCodeConfig(h.cfg.Approval))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start opencode: %w", err)
	}
	go h.pipeLog(out, w.ID, "opencode")
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	w.Runtime = "none"
	w.OpenCodeURL = "http://127.0.0.1:" + strconv.Itoa(port)
	w.stop = func(ctx context.Context) error {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		return nil
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// pipeLog copies a service's output into warren's log, one record a line.
func (h *Host) pipeLog(r io.Reader, workspace, service string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		h.log.Info(sc.Text(), "service.name", service, "workspace.id", workspace)
	}
}

// probe asks OpenCode for its health once.
func (h *Host) probe(ctx context.Context, w *Workspace) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.OpenCodeURL+"/global/health", nil)
	req.SetBasicAuth(w.Username, w.Password)
	resp, err := http.DefaultClient.Do(req)
	ok := err == nil && resp.StatusCode == http.StatusOK
	if err == nil {
		resp.Body.Close()
	}
	w.mu.Lock()
	w.healthy = ok
	w.mu.Unlock()
	return ok
}

// waitHealthy waits for OpenCode to answer its health check. It starts in
// a few seconds; this is off every request's path.
func (h *Host) waitHealthy(ctx context.Context, w *Workspace, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if h.probe(ctx, w) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return fmt.Errorf("opencode for %s did not answer %s/global/health within %s", w.Path, w.OpenCodeURL, limit)
}

// Healthy is the last health probe's answer.
func (w *Workspace) Healthy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.healthy
}
