// Package idmap gives runc sandboxes a user namespace: root inside is an
// unprivileged user of the host. Root filesystems stay owned by the
// host's root; an idmapped mount of each image shows them to the
// sandbox's user namespace as its own, so nothing is copied or chowned.
package idmap

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Range maps a sandbox's ids 0..Size-1 to the host's HostID..HostID+Size-1.
type Range struct {
	HostID uint32
	Size   uint32
}

// Default is the range runc sandboxes get: far above any real user, and
// the size of a whole 16-bit id space, as Docker's userns-remap uses.
var Default = Range{HostID: 1 << 20, Size: 1 << 16}

// Root is the host uid (and gid) that is root inside.
func (r Range) Root() int { return int(r.HostID) }

// Userns returns a user namespace with the mapping, for idmapped mounts.
// It is made by a short-lived child; the namespace outlives it while the
// returned file is open.
func (r Range) Userns() (*os.File, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own binary: %w", err)
	}
	// The child does nothing but wait for its stdin to close; Go writes
	// the mapping before it runs.
	cmd := exec.Command(self, HoldCommand)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.HostID), Size: int(r.Size)}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: int(r.HostID), Size: int(r.Size)}},
		Pdeathsig:   syscall.SIGKILL,
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start a process in a new user namespace: %w", err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("open the user namespace: %w", err)
	}
	return f, nil
}

// HoldCommand is the hidden entry point of the process that holds a new
// user namespace open while Userns takes it.
const HoldCommand = "idmap-hold"

// Hold waits for stdin to close.
func Hold() int {
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// Mount makes an idmapped view of the directory src at dst: files the
// host's uid N owns appear owned by N+HostID. The view is read-only
// unless writable (a volume's; an image's never is).
func Mount(src, dst string, userns *os.File, writable bool) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dst, err)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("clone the mount of %s: %w", src, err)
	}
	defer unix.Close(fd)
	set := uint64(unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV)
	if !writable {
		set |= unix.MOUNT_ATTR_RDONLY
	}
	attr := &unix.MountAttr{Attr_set: set, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("idmap the mount of %s: %w", src, err)
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach the idmapped mount at %s: %w", dst, err)
	}
	return nil
}

// Unmount removes an idmapped view.
func Unmount(dst string) error {
	if err := unix.Unmount(dst, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", dst, err)
	}
	return os.Remove(filepath.Clean(dst))
}
