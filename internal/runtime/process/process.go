// Package process runs a sandbox's agent as a plain host process. There is
// no isolation at all: it exists for development on machines with neither
// runsc nor runc, and refuses to start unless explicitly allowed.
package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/runtime"
)

// AllowEnv must be "1", together with choosing this runtime by name, before
// it will run anything.
const AllowEnv = "WARREN_ALLOW_INSECURE_RUNTIME"

// Runtime is the process backend.
type Runtime struct{ stateDir string }

// New returns the backend if the environment allows it.
func New(stateDir string) (*Runtime, error) {
	if os.Getenv(AllowEnv) != "1" {
		return nil, fmt.Errorf("the process runtime gives no isolation; set %s=1 to use it for development", AllowEnv)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create process state dir: %w", err)
	}
	return &Runtime{stateDir: stateDir}, nil
}

func (r *Runtime) Name() string { return "process" }

func (r *Runtime) pidFile(id string) string { return filepath.Join(r.stateDir, id+".pid") }

func (r *Runtime) Start(ctx context.Context, spec runtime.Spec) error {
	logf, err := os.OpenFile(filepath.Join(spec.Dir, runtime.InitLogName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open agent log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(spec.Agent, "agent", "--socket", filepath.Join(spec.RunDir, guest.SocketName), "--sandbox-id", spec.ID)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), guest.TokenEnv+"="+spec.AgentToken)
	cmd.Dir = spec.Rootfs
	// Its own session, so the agent outlives a warren restart and Stop can
	// find everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent process: %w", err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	if err := os.WriteFile(r.pidFile(spec.ID), []byte(strconv.Itoa(pid)), 0o600); err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return fmt.Errorf("record agent pid: %w", err)
	}
	go reap(pid)
	return nil
}

// reap collects the agent's exit status so it does not linger as a zombie.
func reap(pid int) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, 0, nil)
}

// alive reports whether pid is this sandbox's agent.
func alive(pid int, id string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return false
		}
	}
	return bytes.Contains(b, []byte(id))
}

func (r *Runtime) pid(id string) int {
	b, err := os.ReadFile(r.pidFile(id))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func (r *Runtime) Stop(ctx context.Context, id string) error {
	pid := r.pid(id)
	if pid > 0 && alive(pid, id) {
		// Everything the agent started shares its session.
		for _, p := range sessionMembers(pid) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid, id) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := os.Remove(r.pidFile(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pid file: %w", err)
	}
	return nil
}

// sessionMembers lists the processes in session sid.
func sessionMembers(sid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name: state ppid pgrp session ...
		f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func (r *Runtime) Status(ctx context.Context, id string) (runtime.Status, error) {
	pid := r.pid(id)
	if pid == 0 {
		return runtime.StatusMissing, nil
	}
	if alive(pid, id) {
		return runtime.StatusRunning, nil
	}
	return runtime.StatusStopped, nil
}

func (r *Runtime) List(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(r.stateDir)
	if err != nil {
		return nil, fmt.Errorf("list process sandboxes: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".pid"); ok {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
