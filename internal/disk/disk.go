// Package disk gives each sandbox a filesystem of its own, of the size it
// asked for: a sparse ext4 image, loop-mounted, that holds the sandbox's
// writable layer. A sandbox that fills it gets ENOSPC inside; the host's
// disk, warren's database and the other sandboxes carry on.
package disk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Create makes a sparse image of sizeMB at path with an empty ext4 on it.
// Only metadata is written (a few MB); the rest takes space as it is used.
func Create(ctx context.Context, path string, sizeMB int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	err = f.Truncate(int64(sizeMB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("size disk image: %w", err)
	}
	// Lazy init keeps this to milliseconds; no reserved blocks, since
	// the sandbox's root is the only user.
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0",
		"-E", "lazy_itable_init=1,lazy_journal_init=1", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(path)
		return fmt.Errorf("make a filesystem on the disk image: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Mount attaches the image to a free loop device and mounts it at target.
// The loop device goes away by itself when the filesystem is unmounted,
// so nothing is left behind but the image.
func Mount(image, target string) error {
	if err := os.MkdirAll(target, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", target, err)
	}
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open disk image: %w", err)
	}
	defer img.Close()
	dev, err := attach(img)
	if err != nil {
		return err
	}
	defer dev.Close()
	// nodev and nosuid: whatever the sandbox makes on its disk never acts
	// as a device or a setuid program on the host.
	if err := unix.Mount(dev.Name(), target, "ext4", unix.MS_NODEV|unix.MS_NOSUID|unix.MS_NOATIME, ""); err != nil {
		return fmt.Errorf("mount disk %s at %s: %w", image, target, err)
	}
	return nil
}

// attach binds img to a free loop device, retrying when another process
// takes the device first.
func attach(img *os.File) (*os.File, error) {
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open loop control: %w", err)
	}
	defer ctl.Close()
	for attempt := 0; attempt < 20; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("find a free loop device: %w", err)
		}
		dev, err := openLoop(fmt.Sprintf("/dev/loop%d", n))
		if err != nil {
			return nil, err
		}
		cfg := &unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		err = unix.IoctlLoopConfigure(int(dev.Fd()), cfg)
		if err == nil {
			return dev, nil
		}
		dev.Close()
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("attach disk image to %s: %w", dev.Name(), err)
		}
	}
	return nil, errors.New("attach disk image: every free loop device was taken first")
}

// openLoop opens a loop device, waiting a moment for its node to appear.
func openLoop(path string) (*os.File, error) {
	for i := 0; ; i++ {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err == nil || !errors.Is(err, os.ErrNotExist) || i == 50 {
			if err != nil {
				return nil, fmt.Errorf("open %s: %w", path, err)
			}
			return f, nil
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Available is how many MB the filesystem holding dir has free.
func Available(dir string) (int, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("read free space of %s: %w", dir, err)
	}
	return int(st.Bavail * uint64(st.Bsize) >> 20), nil
}
