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

// Layout names the directories of one sandbox's overlay under Dir.
type Layout struct {
	Dir string
	// Disk says the writable layer lives on the sandbox's own filesystem,
	// DiskImage mounted at DiskDir (see package disk).
	Disk bool
}

func (l Layout) DiskImage() string { return filepath.Join(l.Dir, "disk.img") }
func (l Layout) DiskDir() string   { return filepath.Join(l.Dir, "disk") }

func (l Layout) layer() string {
	if l.Disk {
		return l.DiskDir()
	}
	return l.Dir
}

func (l Layout) Upper() string  { return filepath.Join(l.layer(), "upper") }
func (l Layout) Work() string   { return filepath.Join(l.layer(), "work") }
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
	return MountDirs(lower, l.Upper(), l.Work(), l.Merged())
}

// MountDirs mounts an overlay of upper on lower at merged.
func MountDirs(lower, upper, work, merged string) error {
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay at %s: %w", merged, err)
	}
	return nil
}

// UnmountDir unmounts an overlay mounted with MountDirs.
func UnmountDir(merged string) error { return unix.Unmount(merged, unix.MNT_DETACH) }

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

// UnmountAll unmounts every mount at or below dir (a sandbox's overlay
// and whatever else was mounted for it), deepest first.
func UnmountAll(dir string) error {
	points, err := MountPoints(dir)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(points) - 1; i >= 0; i-- {
		p := points[i]
		if err := unix.Unmount(p, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			if err2 := unix.Unmount(p, unix.MNT_DETACH); err2 != nil && !errors.Is(err2, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", p, errors.Join(err, err2)))
			}
		}
	}
	return errors.Join(errs...)
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
