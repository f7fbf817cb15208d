// Package overlay gives each sandbox its own writable root on top of a
// shared read-only image, with overlayfs.
package overlay

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Layout names the directories of one sandbox's overlay under dir.
type Layout struct{ Dir string }

func (l Layout) Upper() string  { return filepath.Join(l.Dir, "upper") }
func (l Layout) Work() string   { return filepath.Join(l.Dir, "work") }
func (l Layout) Merged() string { return filepath.Join(l.Dir, "rootfs") }

// Mount stacks a fresh writable layer on lower and mounts it at Merged.
func Mount(lower string, l Layout) error {
	for _, d := range []string{l.Upper(), l.Work(), l.Merged()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create overlay dir: %w", err)
		}
	}
	if mounted, _ := IsMounted(l.Merged()); mounted {
		return nil
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, l.Upper(), l.Work())
	if err := unix.Mount("overlay", l.Merged(), "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay at %s: %w", l.Merged(), err)
	}
	return nil
}

// Unmount unmounts Merged if it is mounted. A busy mount is detached so it
// disappears once the last user lets go.
func Unmount(l Layout) error {
	mounted, err := IsMounted(l.Merged())
	if err != nil || !mounted {
		return err
	}
	if err := unix.Unmount(l.Merged(), 0); err != nil {
		if err2 := unix.Unmount(l.Merged(), unix.MNT_DETACH); err2 != nil {
			return fmt.Errorf("unmount %s: %w", l.Merged(), errors.Join(err, err2))
		}
	}
	return nil
}

// IsMounted reports whether path is a mount point.
func IsMounted(path string) (bool, error) {
	points, err := MountPoints(filepath.Dir(path))
	if err != nil {
		return false, err
	}
	for _, p := range points {
		if p == path {
			return true, nil
		}
	}
	return false, nil
}

// MountPoints lists the mount points at or below prefix.
func MountPoints(prefix string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	prefix = filepath.Clean(prefix)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescape(fields[4])
		if mp == prefix || strings.HasPrefix(mp, prefix+"/") {
			out = append(out, mp)
		}
	}
	return out, sc.Err()
}

// unescape decodes the octal escapes mountinfo uses for spaces and the like.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
