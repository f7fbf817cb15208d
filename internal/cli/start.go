package cli

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/warrenhq/warren/internal/agenthost"
	"github.com/warrenhq/warren/internal/api"
	"github.com/warrenhq/warren/internal/dashboard"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/internal/serve"
	"github.com/warrenhq/warren/internal/sidecar"
)

// startOptions are the flags of `warren start`.
type startOptions struct {
	workspace, name       string
	approval              string
	approvalTimeout       time.Duration
	sandbox               string
	port                  int
	connectHost, runID    string
	check, checkEvents    bool
	detach                bool
	daemon                bool
	noTUI                 bool
	mounts                []string
	allowlist             string
	openCodeSource, ocBin string
	manifest, sidecarDir  string
	verbose               bool
	dataDir, imageDir     string
	runsc, runc           string
	logFormat, logLevel   string
	config                string
	bridge                bridgeFlags
}

func newStartCmd(g *globals) *cobra.Command {
	var o startOptions
	cmd := &cobra.Command{
		Use:   "start --workspace DIR",
		Short: "Run OpenCode for a workspace in a sandbox, with a workspace server to pair with",
		Long: "Starts, for one workspace: a sandbox with DIR at /workspace and a persistent\n" +
			"/persist (OpenCode's HOME), OpenCode serving inside it, and the workspace\n" +
			"server on this host (port 8787). Prints the pairing details and serves until\n" +
			"interrupted; the sandbox is removed on the way out, the files stay.\n" +
			"--check starts everything, verifies it end to end and exits 0 or 1.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runStart(cmd, g, &o) },
	}
	addStartFlags(cmd, &o)
	f := cmd.Flags()
	f.StringVar(&o.workspace, "workspace", "", "the workspace directory (required)")
	f.BoolVar(&o.detach, "detach", false, "leave everything running in the background, print how to reach and stop it, and exit")
	f.BoolVar(&o.check, "check", false, "start, verify health, workspaces and a session through the proxy, stop, and exit 0 or 1")
	f.BoolVar(&o.checkEvents, "check-events", false, "with --check, also wait for an event on OpenCode's event stream")
	f.BoolVar(&o.noTUI, "no-tui", false, "no dashboard: print the pairing details and the merged log (what a non-terminal gets)")
	f.BoolVar(&o.daemon, "daemon", false, "host every recorded workspace and take more over the API (what warren daemon start runs)")
	_ = f.MarkHidden("daemon")
	return cmd
}

// addStartFlags registers the flags start and daemon start share.
func addStartFlags(cmd *cobra.Command, o *startOptions) {
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "the workspace's name (default: the directory's)")
	f.StringVar(&o.approval, "approval", envOr("WARREN_APPROVAL", "auto"), "approval mode: auto or manual")
	f.DurationVar(&o.approvalTimeout, "approval-timeout", 30*time.Second, "how long an approval waits before it is denied")
	f.StringVar(&o.sandbox, "sandbox", envOr("WARREN_SANDBOX", "auto"), "where OpenCode runs: auto, gvisor, runc, or none (on this host)")
	f.IntVar(&o.port, "port", 8787, "workspace server port (0 picks one)")
	f.StringVar(&o.connectHost, "connect-host", "", "host name remote clients should use (default: the listen address)")
	f.StringVar(&o.runID, "run-id", os.Getenv("WARREN_RUN_ID"), "id carried by every log record (default: random)")
	f.StringArrayVar(&o.mounts, "mount", nil, "extra host path at /workspace/extra/NAME: HOSTPATH:NAME[:ro|rw], as the mount allowlist allows")
	f.StringVar(&o.allowlist, "mount-allowlist", envOr("WARREN_MOUNT_ALLOWLIST", defaultAllowlist()), "the mount allowlist (WARREN_MOUNT_ALLOWLIST)")
	f.StringVar(&o.openCodeSource, "opencode-source", envOr("WARREN_OPENCODE_SOURCE", "auto"), "where OpenCode comes from: auto, external (PATH) or downloaded")
	f.StringVar(&o.ocBin, "opencode-bin", os.Getenv("WARREN_OPENCODE_BIN"), "the OpenCode binary to run")
	f.StringVar(&o.manifest, "sidecar-manifest", os.Getenv("WARREN_SIDECAR_MANIFEST"), "sidecar manifest to verify downloads against (default: the built-in one)")
	f.StringVar(&o.sidecarDir, "sidecar-dir", os.Getenv("WARREN_SIDECAR_DIR"), "where downloaded sidecars are kept (WARREN_SIDECAR_DIR; default DATA_DIR/sidecars)")
	f.BoolVar(&o.verbose, "verbose", false, "say which OpenCode binary runs, from where, and its version")
	f.StringVar(&o.dataDir, "data-dir", envOr("WARREN_DATA_DIR", DefaultDataDir()), "state directory (WARREN_DATA_DIR)")
	f.StringVar(&o.imageDir, "image-dir", os.Getenv("WARREN_IMAGE_DIR"), "image cache directory (WARREN_IMAGE_DIR)")
	f.StringVar(&o.runsc, "runsc", os.Getenv("WARREN_RUNSC"), "path of runsc (WARREN_RUNSC)")
	f.StringVar(&o.runc, "runc", os.Getenv("WARREN_RUNC"), "path of runc (WARREN_RUNC)")
	f.StringVar(&o.logFormat, "log-format", envOr("WARREN_LOG_FORMAT", "text"), "log format: text or json")
	f.StringVar(&o.logLevel, "log-level", envOr("WARREN_LOG_LEVEL", "info"), "log level")
	o.bridge.register(cmd)
	f.StringVar(&o.config, "config", os.Getenv("WARREN_START_CONFIG"), "a TOML file setting any of these flags by name, the chat bridge's tokens say (WARREN_START_CONFIG); flags and environment variables override it")
}

func runStart(cmd *cobra.Command, g *globals, o *startOptions) error {
	if err := applyEnv(cmd.Flags()); err != nil {
		return err
	}
	if o.config != "" {
		if _, err := applyConfig(cmd, o.config); err != nil {
			return err
		}
	}
	if o.workspace == "" && !o.daemon {
		return fmt.Errorf("--workspace is required")
	}
	switch o.sandbox {
	case "auto", "gvisor", "runc", "none":
	default:
		return fmt.Errorf("--sandbox %q: want auto, gvisor, runc or none", o.sandbox)
	}
	if o.checkEvents && !o.check {
		return fmt.Errorf("--check-events goes with --check")
	}
	if o.detach && o.check {
		return fmt.Errorf("--detach and --check do not go together")
	}
	if err := o.bridge.check(); err != nil {
		return err
	}
	if o.runID == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		o.runID = "run_" + hex.EncodeToString(b)
	}
	// Bad mounts and workspaces are refused before anything starts.
	list, err := agenthost.LoadAllowlist(o.allowlist)
	if err != nil {
		return err
	}
	if o.workspace != "" {
		if _, err := list.CheckBlocked(o.workspace); err != nil {
			return fmt.Errorf("--workspace: %w", err)
		}
	}
	var mounts []runtime.Mount
	if len(o.mounts) > 0 {
		if o.sandbox == "none" {
			return fmt.Errorf("--mount needs a sandbox; --sandbox none runs OpenCode on this host, where it sees the host's files anyway")
		}
		for _, spec := range o.mounts {
			m, err := list.Resolve(spec)
			if err != nil {
				return err
			}
			mounts = append(mounts, m)
		}
	}
	if o.detach {
		r, err := detachStart(cmd, o)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		g.print(out, r, func() { printDetached(out, r, o.dataDir) })
		return nil
	}
	if !o.noTUI && !o.check && !o.daemon && !g.json && term.IsTerminal(int(os.Stdout.Fd())) && term.IsTerminal(int(os.Stdin.Fd())) {
		return withDashboard(cmd, o)
	}
	log, err := newLogger(o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	log = log.With("run.id", o.runID)
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	manifest, err := sidecar.Builtin()
	if o.manifest != "" {
		manifest, err = sidecar.LoadManifest(o.manifest)
	}
	if err != nil {
		return err
	}
	if o.sidecarDir == "" {
		o.sidecarDir = filepath.Join(o.dataDir, "sidecars")
	}
	errOut := cmd.ErrOrStderr()
	bin, err := sidecar.Resolve(ctx, sidecar.Options{
		Name: "opencode", Source: o.openCodeSource, Bin: o.ocBin, Dir: o.sidecarDir, Manifest: manifest,
		// On the host, an installed OpenCode will do; a sandbox needs the
		// Linux build warren verifies.
		PreferPath: o.sandbox == "none",
		Progress:   func(msg string) { fmt.Fprintln(errOut, msg) },
	})
	if err != nil {
		return err
	}
	if o.verbose {
		fmt.Fprintf(errOut, "opencode: %s (%s, version %s)\n", bin.Path, bin.Source, bin.Version)
	}
	cfg := agenthost.Config{
		DataDir: filepath.Join(o.dataDir, "agenthost"), Org: serve.DefaultOrg, Sandbox: o.sandbox, OpenCode: bin, Mounts: mounts, Allowlist: list,
		Approval: o.approval, ApprovalTimeout: o.approvalTimeout, Listen: fmt.Sprintf("127.0.0.1:%d", o.port),
		ConnectHost: o.connectHost, RunID: o.runID, Version: Version, Log: log,
	}
	run := func(ctx context.Context, mgr *sandbox.Manager) error {
		cfg.Manager = mgr
		return hostWorkspace(ctx, cmd.OutOrStdout(), g, o, cfg)
	}
	if o.sandbox == "none" {
		return run(ctx, nil)
	}
	api.Version = Version
	return serve.Run(ctx, serve.Options{
		DataDir: o.dataDir, ImageDir: o.imageDir, Runtime: o.sandbox, Runsc: o.runsc, Runc: o.runc,
		AdminKey: os.Getenv("WARREN_ADMIN_KEY"), Log: log, Alongside: run,
	})
}

// hostWorkspace starts the workspace, prints the pairing details, and
// serves (or checks) until ctx ends.
func hostWorkspace(ctx context.Context, out io.Writer, g *globals, o *startOptions, cfg agenthost.Config) error {
	h, err := agenthost.New(cfg)
	if err != nil {
		return err
	}
	if err := h.Listen(); err != nil {
		return err
	}
	// Whatever happens next, the workspace's sandbox goes with this run.
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := h.Close(cctx); err != nil {
			cfg.Log.Error("stop workspaces", "err", err)
		}
	}()
	serveCtx, stopServe := context.WithCancel(ctx)
	defer stopServe()
	served := make(chan error, 1)
	go func() { served <- h.Serve(serveCtx) }()
	if o.daemon {
		if err := h.Resume(ctx); err != nil {
			return err
		}
	}
	workspace := ""
	if o.workspace != "" {
		w, err := h.Add(ctx, o.workspace, o.name)
		if err != nil {
			return err
		}
		workspace = w.Path
	}
	p := h.Pairing()
	p.Bridge = o.bridge.cfg.Platforms()
	// The run record lets `warren stop` (and a detaching parent) find us.
	run := &agenthost.Run{RunID: cfg.RunID, PID: os.Getpid(), Workspace: workspace,
		LogPath: os.Getenv(runLogEnv), StartedAt: time.Now().UTC(), Pairing: p}
	if err := agenthost.WriteRun(cfg.DataDir, run); err != nil {
		return err
	}
	defer agenthost.RemoveRun(cfg.DataDir, cfg.RunID)
	g.print(out, p, func() { printPairing(out, p) })
	bridgeDone := make(chan error, 1)
	if o.bridge.enabled() {
		bc := o.bridge.cfg
		bc.LogFormat = o.logFormat
		var bridged sync.WaitGroup
		bridged.Go(func() { bridgeDone <- h.RunBridge(serveCtx, bc, o.bridge.required) })
		// On the way out the bridge process is stopped and waited for.
		defer func() {
			stopServe()
			bridged.Wait()
		}()
	}
	if o.check {
		err := h.Check(ctx, o.checkEvents)
		if err == nil {
			fmt.Fprintln(os.Stderr, "check passed")
		}
		return err
	}
	select {
	case err := <-served:
		return err
	case err := <-bridgeDone:
		// Only a required bridge ends the agent host.
		if err != nil {
			return err
		}
		<-ctx.Done()
		return nil
	case <-ctx.Done():
		return nil
	}
}

func printPairing(w io.Writer, p *agenthost.Pairing) {
	fmt.Fprintf(w, "\nworkspace server  %s\n", p.URL)
	if p.ConnectURL != p.URL {
		fmt.Fprintf(w, "connect URL       %s\n", p.ConnectURL)
	}
	fmt.Fprintf(w, "client token      %s\nhost token        %s\nrun id            %s\napproval          %s\n", p.ClientToken, p.HostToken, p.RunID, p.Approval)
	if len(p.Bridge) > 0 {
		fmt.Fprintf(w, "chat bridge       %s (pair a chat: warren bridge pair)\n", strings.Join(p.Bridge, ", "))
	}
	printWarnings(w, p.Warnings)
	for _, ws := range p.Workspaces {
		fmt.Fprintf(w, "\nworkspace %s (%s) in %s %s\n  proxy     %s\n  opencode  %s (user %s, password %s)\n  attach    %s\n",
			ws.ID, ws.Path, ws.Sandbox, ws.SandboxID, ws.ProxyURL, ws.OpenCodeURL, ws.OpenCodeUsername, ws.OpenCodePassword, ws.Attach)
	}
	fmt.Fprintln(w)
}

// runLogEnv tells a detached child where its output goes, for its record.
const runLogEnv = "WARREN_RUN_LOG"

// detachStart runs the same start in a new session with its output in a
// log file, waits until it has recorded its pairing, prints how to reach
// and stop it, and returns.
func detachStart(cmd *cobra.Command, o *startOptions) (*agenthost.Run, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	// The child is the same start, from the flags given, without --detach;
	// secrets go in its environment.
	args := []string{"start"}
	var secrets []string
	visit := func(f *pflag.Flag) {
		switch f.Name {
		case "detach", "run-id", "daemon", "no-tui":
			return
		}
		if env, ok := bridgeSecretFlags[f.Name]; ok {
			secrets = append(secrets, env+"="+f.Value.String())
			return
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				args = append(args, "--"+f.Name+"="+v)
			}
			return
		}
		args = append(args, "--"+f.Name+"="+f.Value.String())
	}
	cmd.Flags().Visit(visit) // after parsing, this includes inherited flags
	args = append(args, "--run-id", o.runID)
	args = append(args, "--no-tui")
	if o.daemon {
		args = append(args, "--daemon")
	}
	hostDir := filepath.Join(o.dataDir, "agenthost")
	if err := os.MkdirAll(filepath.Join(hostDir, "runs"), 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(hostDir, "runs", o.runID+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	child := exec.Command(exe, args...)
	child.Stdout, child.Stderr = logf, logf
	child.Env = append(append(os.Environ(), secrets...), runLogEnv+"="+logPath)
	// Its own session: no terminal's hangup or Ctrl-C reaches it.
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		return nil, fmt.Errorf("start in the background: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	fmt.Fprintf(cmd.ErrOrStderr(), "starting in the background (log: %s)\n", logPath)
	deadline := time.After(10 * time.Minute)
	for {
		if r, err := agenthost.ReadRun(hostDir, o.runID); err == nil && r != nil {
			return r, nil
		}
		select {
		case err := <-exited:
			tail, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("the background start exited (%v) before it was ready:\n%s", err, lastLines(string(tail), 15))
		case <-deadline:
			_ = child.Process.Signal(syscall.SIGTERM)
			return nil, fmt.Errorf("the background start was not ready in 10 minutes; see %s", logPath)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func printDetached(out io.Writer, r *agenthost.Run, dataDir string) {
	printPairing(out, r.Pairing)
	fmt.Fprintf(out, "running in the background as pid %d; log %s\nstop it with: warren stop --run-id %s --data-dir %s\n", r.PID, r.LogPath, r.RunID, dataDir)
}

// withDashboard runs the services in the background and shows the
// dashboard; quitting it stops them, detaching leaves them running.
func withDashboard(cmd *cobra.Command, o *startOptions) error {
	r, err := detachStart(cmd, o)
	if err != nil {
		return err
	}
	outcome, err := dashboard.Run(cmd.Context(), r, os.Stdin, os.Stdout)
	out := cmd.OutOrStdout()
	if err != nil || outcome == dashboard.Quit {
		fmt.Fprintln(out, "stopping…")
		if _, serr := stopRuns(filepath.Join(o.dataDir, "agenthost"), "", r.RunID, 2*time.Minute); serr != nil {
			return serr
		}
		fmt.Fprintln(out, "stopped; the workspace's files and sessions stay")
		return err
	}
	printDetached(out, r, o.dataDir)
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func newStopCmd(g *globals) *cobra.Command {
	var workspace, runID, dataDir string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "stop (--workspace DIR | --run-id ID)",
		Short: "Stop a running warren start and its sandbox",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (workspace == "") == (runID == "") {
				return fmt.Errorf("give --workspace or --run-id")
			}
			if workspace != "" {
				abs, err := filepath.Abs(workspace)
				if err == nil {
					abs, err = filepath.EvalSymlinks(abs)
				}
				if err != nil {
					return fmt.Errorf("--workspace %s: %w", workspace, err)
				}
				workspace = abs
			}
			stopped, err := stopRuns(filepath.Join(dataDir, "agenthost"), workspace, runID, wait)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"stopped": stopped}, func() {
				fmt.Fprintf(cmd.OutOrStdout(), "stopped %s\n", strings.Join(stopped, ", "))
			})
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&workspace, "workspace", "", "the workspace a warren start serves")
	f.StringVar(&runID, "run-id", "", "the run to stop")
	f.StringVar(&dataDir, "data-dir", envOr("WARREN_DATA_DIR", DefaultDataDir()), "state directory (WARREN_DATA_DIR)")
	f.DurationVar(&wait, "wait", 2*time.Minute, "how long to wait for it to finish stopping")
	return cmd
}

// defaultAllowlist is ~/.config/warren/mount-allowlist.json.
func defaultAllowlist() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "warren", "mount-allowlist.json")
	}
	return "mount-allowlist.json"
}

// stopRuns ends the recorded runs that match a workspace or a run id and
// waits until each has exited; it fails when none matches.
func stopRuns(hostDir, workspace, runID string, wait time.Duration) ([]string, error) {
	runs, err := agenthost.Runs(hostDir)
	if err != nil {
		return nil, err
	}
	var stopped []string
	for _, r := range runs {
		if (runID != "" && r.RunID != runID) || (workspace != "" && r.Workspace != workspace) {
			continue
		}
		if err := syscall.Kill(r.PID, syscall.SIGTERM); err != nil {
			return stopped, fmt.Errorf("stop run %s (pid %d): %w", r.RunID, r.PID, err)
		}
		gone := time.After(wait)
		for agenthost.Alive(r.PID) {
			select {
			case <-gone:
				return stopped, fmt.Errorf("run %s (pid %d) is still stopping after %s", r.RunID, r.PID, wait)
			case <-time.After(100 * time.Millisecond):
			}
		}
		_ = agenthost.RemoveRun(hostDir, r.RunID)
		stopped = append(stopped, r.RunID)
	}
	if len(stopped) == 0 {
		return nil, fmt.Errorf("nothing is running for %s%s in %s", workspace, runID, filepath.Dir(hostDir))
	}
	return stopped, nil
}
