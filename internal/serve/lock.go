package serve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// nodeLock is held by the one warren node on a host. Sandbox networks,
// the firewall table and the reconciler's sweep are host-wide, so a second
// node would tear down the first one's sandboxes; a node with an id of
// its own (--node-id) names all of those after it, and has a lock of its
// own.
// lockFor is the lock of the node with tag ("" for a node alone).
func lockFor(tag string) string {
	if tag == "" {
		return "/run/warren/node.lock"
	}
	return "/run/warren/node-" + tag + ".lock"
}

// lockHost takes the host's node lock, or says who holds it. The lock
// goes when the process does, however it ends.
func lockHost(dataDir, tag string) (release func(), err error) {
	nodeLock := lockFor(tag)
	if err := os.MkdirAll(filepath.Dir(nodeLock), 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", filepath.Dir(nodeLock), err)
	}
	f, err := os.OpenFile(nodeLock, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", nodeLock, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(nodeLock)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another warren node runs on this host (%s); warren runs one node per host, because sandbox networks and the firewall are host-wide: stop it, or use its API", strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("lock %s: %w", nodeLock, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d, data dir %s\n", os.Getpid(), dataDir)), 0)
	return func() { f.Close() }, nil
}

// NodeLockHolder says which node holds the node lock of tag ("pid N, data
// dir D"), or "" when none does.
func NodeLockHolder(tag string) (string, error) {
	nodeLock := lockFor(tag)
	f, err := os.Open(nodeLock)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("open %s: %w", nodeLock, err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder, _ := os.ReadFile(nodeLock)
			if h := strings.TrimSpace(string(holder)); h != "" {
				return h, nil
			}
			return "holder unknown", nil
		}
		return "", fmt.Errorf("lock %s: %w", nodeLock, err)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return "", nil
}
