// Package inroot does the host's file work inside trees a sandbox
// controls — its writable layer, a fork's copy, a workspace it writes
// to. Every path is resolved as if the tree's top were "/": ".." stops
// there and a symlink, even an absolute one, leads somewhere inside the
// tree, as it would for the sandbox. Nothing a sandbox plants can make
// the host read or write outside the tree. It is built on openat2(2)
// with RESOLVE_IN_ROOT.
package inroot

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// resolve is how every lookup inside a tree resolves: within the tree,
// never through magic links (/proc/self/root and the like), and never
// onto another mount.
const resolve = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// openIn opens name inside the tree at root.
func openIn(root, name string, flags uint64, mode uint64, how uint64) (int, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(rfd)
	fd, err := openat2(rfd, name, flags|unix.O_CLOEXEC, mode, how)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: filepath.Join(root, name), Err: err}
	}
	return fd, nil
}

func openat2(dirfd int, name string, flags, mode, how uint64) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{Flags: flags, Mode: mode, Resolve: how})
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		return fd, err
	}
}

// split cleans name to a path relative to the tree's top and returns its
// directory and final element.
func split(name string) (dir, base string, err error) {
	clean := filepath.Clean("/" + name)
	if clean == "/" {
		return "", "", fmt.Errorf("%q names the tree's top, not a file in it", name)
	}
	return strings.TrimPrefix(filepath.Dir(clean), "/"), filepath.Base(clean), nil
}

// openParent opens the directory holding name inside root, and returns
// it with name's last element.
func openParent(root, name string) (dfd int, base string, err error) {
	dir, base, err := split(name)
	if err != nil {
		return -1, "", err
	}
	if dir == "" {
		dir = "."
	}
	dfd, err = openIn(root, dir, unix.O_PATH|unix.O_DIRECTORY, 0, resolve)
	return dfd, base, err
}

// WriteFile writes data to name inside root, replacing what is there —
// a symlink is replaced, never followed — in one rename, so readers see
// the old file or the new one. The directory must exist.
func WriteFile(root, name string, data []byte, perm os.FileMode) error {
	dfd, base, err := openParent(root, name)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	tmp := "." + base + ".warren-" + randomSuffix()
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return &os.PathError{Op: "create", Path: filepath.Join(root, filepath.Dir(name), tmp), Err: err}
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.Write(data)
	if err == nil {
		// Creation is subject to the umask; say exactly what was asked.
		err = f.Chmod(perm.Perm())
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, base)
	}
	if err != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return &os.PathError{Op: "write", Path: filepath.Join(root, name), Err: err}
	}
	return nil
}

// Chown changes the owner of name inside root; a symlink there is
// changed itself, never followed.
func Chown(root, name string, uid, gid int) error {
	dfd, base, err := openParent(root, name)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := unix.Fchownat(dfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chown", Path: filepath.Join(root, name), Err: err}
	}
	return nil
}

// MkdirAll creates name and any missing parents inside root.
func MkdirAll(root, name string, perm os.FileMode) error {
	clean := strings.TrimPrefix(filepath.Clean("/"+name), "/")
	if clean == "" {
		return nil
	}
	dfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer func() { unix.Close(dfd) }()
	done := ""
	for _, part := range strings.Split(clean, "/") {
		done = filepath.Join(done, part)
		if err := unix.Mkdirat(dfd, part, uint32(perm.Perm())); err != nil && !errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "mkdir", Path: filepath.Join(root, done), Err: err}
		}
		// Step in the way the sandbox would: a symlink planted here is
		// followed, but only ever within the tree.
		next, err := openIn(root, done, unix.O_PATH|unix.O_DIRECTORY, 0, resolve)
		if err != nil {
			return err
		}
		unix.Close(dfd)
		dfd = next
	}
	return nil
}

// Open opens name inside root for reading.
func Open(root, name string) (*os.File, error) {
	fd, err := openIn(root, name, unix.O_RDONLY, 0, resolve)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), filepath.Join(root, name)), nil
}

// Plain reports whether name exists inside root with no symlink on the
// way, and what it is. Host paths that will be bind-mounted must pass
// this: a mount source is resolved by the host's rules, not the tree's.
func Plain(root, name string) (os.FileInfo, error) {
	fd, err := openIn(root, name, unix.O_PATH|unix.O_NOFOLLOW, 0, resolve|unix.RESOLVE_NO_SYMLINKS)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), filepath.Join(root, name))
	defer f.Close()
	fi, err := f.Stat()
	if err == nil && fi.Mode()&os.ModeSymlink != 0 {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(root, name), Err: unix.ELOOP}
	}
	return fi, err
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
