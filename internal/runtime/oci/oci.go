// Package oci runs sandboxes with an OCI runtime binary: runc, or runsc for
// gVisor. Both take the same bundle and the same commands; they differ only
// in a few flags, so one backend serves both.
package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/warrenhq/warren/internal/cgroups"
	"github.com/warrenhq/warren/internal/runtime"
)

// Config selects and configures the OCI runtime binary.
type Config struct {
	// Name is the backend name users see (gvisor, runc).
	Name string
	// Binary is the path of runsc or runc.
	Binary string
	// StateDir is the runtime's --root: where it keeps container state.
	StateDir string
	// GlobalFlags go before the subcommand (runsc --platform=systrap ...).
	GlobalFlags []string
	// Seccomp installs warren's seccomp filter. gVisor filters the
	// sentry's own syscalls and ignores an OCI profile, so it is off there.
	Seccomp bool
	// CgroupParent is the cgroup under which every sandbox gets its own.
	CgroupParent string
	// CgroupRoot is where the cgroup hierarchy is mounted (default
	// /sys/fs/cgroup; tests give a tree of their own).
	CgroupRoot string
	// PIDsInSandbox enforces the process limit inside the sandbox's own
	// kernel (gVisor) rather than only in the host cgroup.
	PIDsInSandbox bool
	// NoCheckpoint, when set, says why this runtime cannot checkpoint.
	NoCheckpoint string
	// CgroupInside mounts the sandbox's own cgroup, read-only, at
	// /sys/fs/cgroup (runc: its kernel is the host's).
	CgroupInside bool
	// GuardMemory: the sandbox's kernel has no OOM killer for its
	// workload (gVisor); see runtime.MemoryGuarded.
	GuardMemory bool
	// ProcFiles, when set, is a directory of files to bind over their
	// /proc counterparts (LXCFS's proc/, runc: so /proc/meminfo tells the
	// sandbox's limit).
	ProcFiles map[string]string
	// UserNS, when set, is the user namespace sandboxes may run in;
	// NoUserNS says why there is none.
	UserNS   *runtime.IDRange
	NoUserNS string
	// BootCPU, when set, is the least CPU a sandbox boots and restores
	// with (see runtime.CPUHeadroom); LimitCPU then holds it to its own.
	BootCPU float64
}

// CgroupParent is where sandboxes' cgroups go unless a Config names
// another: "warren", or "warren-TAG" for a node that shares its host with
// others (each sweeps only its own).
var CgroupParent = "warren"

// Runtime is an OCI-runtime backend.
type Runtime struct{ cfg Config }

// nullNetNS is where runsc pins the empty network namespace its gofers
// join: a bind mount in its --root, made again whenever it is missing.
const nullNetNS = "null-netns"

// Close unmounts runsc's pinned namespace (see runtime.Closer); runsc may
// have stacked several, so until none is left.
func (r *Runtime) Close() error {
	path := filepath.Join(r.cfg.StateDir, nullNetNS)
	for range 64 {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			break
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: remove %s: %w", r.cfg.Name, path, err)
	}
	return nil
}

// New checks the binary and returns the backend.
func New(cfg Config) (*Runtime, error) {
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = CgroupParent
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = cgroups.Root
	}
	if _, err := os.Stat(cfg.Binary); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", cfg.Name, runtime.ErrUnavailable, err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s state dir: %w", cfg.Name, err)
	}
	return &Runtime{cfg: cfg}, nil
}

// GVisor returns the gVisor backend using runsc at binary.
func GVisor(binary, stateDir string) (*Runtime, error) {
	return New(Config{
		Name:     "gvisor",
		Binary:   binary,
		StateDir: stateDir,
		GlobalFlags: []string{
			"--platform=systrap",
			// The agent dials the host socket; it never binds one, which
			// keeps the sandbox checkpointable.
			"--host-uds=open",
			// Writes go to the host overlay's upper directory, so files
			// are visible to the host and survive the sandbox process.
			"--overlay2=none",
			// gVisor's own network stack, on the veth warren put in the
			// sandbox's namespace.
			"--network=sandbox",
		},
		PIDsInSandbox: true,
		GuardMemory:   true,
		// Held to one CPU, gVisor's kernel takes a third longer to
		// boot and restore; with two it sees the same CPU count (it
		// never shows fewer than two) and boots as fast as unlimited.
		BootCPU: 2,
	})
}

// Runc returns the runc backend. With userNS, sandboxes run in a user
// namespace with that mapping; otherwise noUserNS says why not.
// procFiles, when not empty, replace their /proc counterparts (see
// Config.ProcFiles).
func Runc(binary, stateDir string, userNS *runtime.IDRange, noUserNS string, procFiles map[string]string) (*Runtime, error) {
	return New(Config{Name: "runc", Binary: binary, StateDir: stateDir, Seccomp: true, UserNS: userNS, NoUserNS: noUserNS, CgroupInside: true, ProcFiles: procFiles,
		NoCheckpoint: "runc checkpoints with CRIU, which is not installed or does not work on this kernel; use the gvisor runtime to pause"})
}

// UserNamespace says whether sandboxes can run in a user namespace.
func (r *Runtime) UserNamespace() (*runtime.IDRange, string) {
	if r.cfg.UserNS == nil {
		reason := r.cfg.NoUserNS
		if reason == "" {
			reason = r.cfg.Name + " runs sandboxes without user namespaces"
		}
		return nil, reason
	}
	return r.cfg.UserNS, ""
}

func (r *Runtime) Name() string { return r.cfg.Name }

// command runs the runtime. Leading "--flag value" pairs in args are
// global flags and go before the subcommand with the configured ones.
func (r *Runtime) command(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--root", r.cfg.StateDir}, r.cfg.GlobalFlags...)
	return exec.CommandContext(ctx, r.cfg.Binary, append(full, args...)...)
}

func (r *Runtime) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := r.command(ctx, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w: %s", r.cfg.Name, args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func (r *Runtime) Start(ctx context.Context, spec runtime.Spec) error {
	bundle, err := r.writeBundle(spec)
	if err != nil {
		return err
	}
	return r.launch(ctx, spec, "run", "--detach", "--bundle", bundle, spec.ID)
}

// launch runs a start-like subcommand (run, restore), cleaning up and
// explaining on failure.
func (r *Runtime) launch(ctx context.Context, spec runtime.Spec, args ...string) error {
	logf, err := os.OpenFile(filepath.Join(spec.Dir, runtime.InitLogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open init log: %w", err)
	}
	defer logf.Close()
	// The runtime's own error log goes beside the init log, so a failed
	// start can say why even when the runtime printed nothing else.
	runtimeLog := filepath.Join(spec.Dir, "runtime.log")
	cmd := r.command(ctx, append([]string{"--log", runtimeLog}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		// It may have got as far as creating the container.
		_ = r.Stop(context.WithoutCancel(ctx), spec.ID)
		return fmt.Errorf("%s %s %s: %w: %s %s", r.cfg.Name, args[0], spec.ID, err,
			runtime.LogTail(filepath.Join(spec.Dir, runtime.InitLogName), 5), runtime.LogTail(runtimeLog, 5))
	}
	return nil
}

// writeBundle writes the OCI bundle for a sandbox and returns its path.
func (r *Runtime) writeBundle(spec runtime.Spec) (string, error) {
	bundle := filepath.Join(spec.Dir, "bundle")
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return "", fmt.Errorf("create bundle dir: %w", err)
	}
	b, err := json.MarshalIndent(r.ociSpec(spec), "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode OCI spec: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return "", fmt.Errorf("write OCI spec: %w", err)
	}
	return bundle, nil
}

// CanCheckpoint says why this runtime cannot checkpoint, or nil.
func (r *Runtime) CanCheckpoint() error {
	if r.cfg.NoCheckpoint != "" {
		return fmt.Errorf("%w: %s", runtime.ErrNoCheckpoint, r.cfg.NoCheckpoint)
	}
	return nil
}

// Checkpoint saves the sandbox's memory and processes into dir; the
// sandbox stops.
func (r *Runtime) Checkpoint(ctx context.Context, id, dir string) error {
	if err := r.CanCheckpoint(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create checkpoint dir: %w", err)
	}
	if _, err := r.run(ctx, "checkpoint", "--image-path", dir, id); err != nil {
		return err
	}
	// The checkpointed sandbox has exited; free its runtime state and
	// cgroups. Its files, network and the image stay for the restore.
	return r.Stop(ctx, id)
}

// Restore starts the sandbox again from a checkpoint in dir.
func (r *Runtime) Restore(ctx context.Context, spec runtime.Spec, dir string) error {
	if err := r.CanCheckpoint(); err != nil {
		return err
	}
	// A sandbox resumes with the spec it booted with: the checkpoint
	// holds its mounts as they were, and a warren upgraded since may
	// write another spec. A fork's new sandbox has no bundle yet.
	bundle := filepath.Join(spec.Dir, "bundle")
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); err != nil {
		if bundle, err = r.writeBundle(spec); err != nil {
			return err
		}
	}
	// --background: the restore returns before every page is loaded;
	// the sandbox's kernel loads the rest from the descriptors it holds,
	// so the checkpoint's files may go once this returns.
	return r.launch(ctx, spec, "restore", "--background", "--image-path", dir, "--detach", "--bundle", bundle, spec.ID)
}

// LimitCPU holds a sandbox booted with BootCPU to its own CPU limit.
func (r *Runtime) LimitCPU(id string, cpu float64) error {
	if r.cfg.BootCPU == 0 || cpu <= 0 {
		return nil
	}
	if err := cgroups.SetCPU(r.cfg.CgroupRoot, r.cgroup(id), int64(cpu*cpuPeriodUs), cpuPeriodUs); err != nil {
		return fmt.Errorf("limit the CPU of %s: %w", id, err)
	}
	return nil
}

// Freeze stops every process of the sandbox where it is.
func (r *Runtime) Freeze(ctx context.Context, id string) error {
	_, err := r.run(ctx, "pause", id)
	return err
}

// Thaw lets a frozen sandbox run on; thawing one that is not frozen is
// harmless.
func (r *Runtime) Thaw(ctx context.Context, id string) error {
	_, err := r.run(ctx, "resume", id)
	// runc: "container not paused"; runsc: "cannot resume ... in state running".
	if err != nil && (strings.Contains(err.Error(), "not paused") || strings.Contains(err.Error(), "in state running")) {
		return nil
	}
	return err
}

func (r *Runtime) Stop(ctx context.Context, id string) error {
	_, err := r.run(ctx, "delete", "--force", id)
	if err != nil && !isNotExist(err) {
		// Check again: a concurrent delete may have won.
		if st, serr := r.Status(ctx, id); serr == nil && st == runtime.StatusMissing {
			return r.removeCgroups(id)
		}
		return err
	}
	return r.removeCgroups(id)
}

type stateJSON struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Pid    int    `json:"pid"`
}

func (r *Runtime) Status(ctx context.Context, id string) (runtime.Status, error) {
	out, err := r.run(ctx, "state", id)
	if err != nil {
		if isNotExist(err) {
			return runtime.StatusMissing, nil
		}
		return "", err
	}
	var st stateJSON
	if err := json.Unmarshal(out, &st); err != nil {
		return "", fmt.Errorf("decode %s state: %w", r.cfg.Name, err)
	}
	// The runtime's own state lags a sandbox process that was killed
	// (seconds, for runsc): its process says at once.
	if (st.Status == "running" || st.Status == "paused") && processAlive(st.Pid) {
		return runtime.StatusRunning, nil
	}
	return runtime.StatusStopped, nil
}

// processAlive says whether pid runs (and is not a zombie).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	rest := b[bytes.LastIndexByte(b, ')')+1:]
	f := bytes.Fields(rest)
	return len(f) > 0 && string(f[0]) != "Z" && string(f[0]) != "X"
}

func (r *Runtime) List(ctx context.Context) ([]string, error) {
	out, err := r.run(ctx, "list", "--format", "json")
	if err != nil {
		return nil, err
	}
	var list []stateJSON
	if len(bytes.TrimSpace(out)) > 0 && !bytes.Equal(bytes.TrimSpace(out), []byte("null")) {
		if err := json.Unmarshal(out, &list); err != nil {
			return nil, fmt.Errorf("decode %s list: %w", r.cfg.Name, err)
		}
	}
	ids := make([]string, 0, len(list))
	for _, c := range list {
		ids = append(ids, c.ID)
	}
	return ids, nil
}

func isNotExist(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "does not exist") || strings.Contains(msg, "not found") ||
		strings.Contains(msg, "no such file") || errors.Is(err, os.ErrNotExist)
}
