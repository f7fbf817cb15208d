// Package lxcfs gives runc sandboxes a /proc/meminfo that tells their own
// memory limit, not the host's, so that `free`, and runtimes that size
// themselves from MemTotal, see what they may use. It relies on LXCFS, the
// FUSE filesystem LXC and LXD use for this: one instance per host, at its
// usual place, started by warren when none runs and left running (the
// sandboxes read through it, and they outlive warren).
package lxcfs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is where LXCFS is mounted, as Debian's service mounts it.
const Dir = "/var/lib/lxcfs"

// Files are what runc sandboxes get from LXCFS in place of their /proc
// counterparts.
var Files = []string{"meminfo", "swaps"}

// Ensure makes sure LXCFS serves at Dir, starting it if it is installed
// and not running. It returns Dir, or why it cannot.
func Ensure() (string, error) {
	if serving() {
		return Dir, nil
	}
	bin, err := exec.LookPath("lxcfs")
	if err != nil {
		return "", errors.New("lxcfs is not installed (apt-get install lxcfs)")
	}
	// A mount whose daemon died answers ENOTCONN: clear it first.
	_ = unix.Unmount(Dir, unix.MNT_DETACH)
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return "", err
	}
	log, err := os.OpenFile(filepath.Join(os.TempDir(), "warren-lxcfs.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return "", err
	}
	defer log.Close()
	cmd := exec.Command(bin, "--foreground", "--pidfile", "/run/warren-lxcfs.pid", Dir)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own session: it serves sandboxes that outlive this warren.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start lxcfs: %w", err)
	}
	_ = cmd.Process.Release()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if serving() {
			return Dir, nil
		}
	}
	return "", errors.New("lxcfs started but did not serve within 10s")
}

// serving says whether LXCFS answers at Dir.
func serving() bool {
	b := make([]byte, 64)
	f, err := os.Open(filepath.Join(Dir, "proc", "meminfo"))
	if err != nil {
		return false
	}
	defer f.Close()
	n, err := f.Read(b)
	return err == nil && n > 0
}
