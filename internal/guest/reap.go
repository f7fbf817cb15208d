package guest

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The agent is its sandbox's PID 1, so every orphan in the sandbox
// becomes its child and must be reaped. os/exec waits for the processes
// the agent starts itself; a reaper that took any exited child would
// steal their exit statuses. So every start is registered, and the
// reaper collects only the exited children it did not start.

// children is the agent's record of the processes it started.
var children = &reaper{owned: map[int]struct{}{}, poke: make(chan struct{}, 1)}

type reaper struct {
	// gate: starts share it, the reaper takes it alone, so a process
	// that exits before its start is recorded is never taken for an
	// orphan.
	gate  sync.RWMutex
	mu    sync.Mutex
	owned map[int]struct{}
	poke  chan struct{}
}

// start starts cmd with start (cmd.Start, or a terminal's start) and
// records it.
func (r *reaper) start(cmd *exec.Cmd, start func() error) error {
	r.gate.RLock()
	defer r.gate.RUnlock()
	// Every process the agent starts gets the sandbox's process limit:
	// set before its exec where the sandbox asks for that, else just
	// after the start.
	before := limitBeforeExec(cmd)
	if err := start(); err != nil {
		return err
	}
	if !before {
		limitChild(cmd.Process.Pid)
	}
	r.mu.Lock()
	r.owned[cmd.Process.Pid] = struct{}{}
	r.mu.Unlock()
	return nil
}

// wait waits for a process the agent started, forgets it, and has the
// reaper look again: an orphan may have exited behind it.
func (r *reaper) wait(cmd *exec.Cmd) error {
	err := cmd.Wait()
	r.mu.Lock()
	delete(r.owned, cmd.Process.Pid)
	r.mu.Unlock()
	select {
	case r.poke <- struct{}{}:
	default:
	}
	return err
}

// reapOrphans collects every exited child the agent did not start. It
// looks at the next exited child without collecting it first; when that
// is one of the agent's own, os/exec will collect it, and the reaper
// looks again once it has.
func (r *reaper) reapOrphans() {
	r.gate.Lock()
	defer r.gate.Unlock()
	for {
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil {
			return
		}
		pid := siginfoPID(&info)
		if pid <= 0 {
			return
		}
		r.mu.Lock()
		_, mine := r.owned[pid]
		r.mu.Unlock()
		if mine {
			return
		}
		var ws unix.WaitStatus
		if _, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != nil {
			return
		}
	}
}

// siginfoPID reads si_pid, which follows signo, errno, code and padding
// (four 32-bit words) in the kernel's siginfo for SIGCHLD.
func siginfoPID(info *unix.Siginfo) int {
	b := (*[24]byte)(unsafe.Pointer(info))
	return int(int32(binary.NativeEndian.Uint32(b[16:20])))
}

// run reaps orphans whenever a child exits, until ctx ends.
func (r *reaper) run(ctx context.Context) {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	defer signal.Stop(sigs)
	r.reapOrphans()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sigs:
		case <-r.poke:
		}
		r.reapOrphans()
	}
}
