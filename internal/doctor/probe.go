package doctor

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// probeRunsc boots a one-command sandbox with gVisor's own network stack:
// what every warren sandbox needs, and what an old or cgo-built runsc
// cannot do.
func probeRunsc(ctx context.Context, runsc string) error {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return errors.New("no busybox to boot (apt-get install busybox-static)")
	}
	if f, err := elf.Open(busybox); err == nil {
		dynamic := false
		for _, p := range f.Progs {
			dynamic = dynamic || p.Type == elf.PT_INTERP
		}
		f.Close()
		if dynamic {
			return fmt.Errorf("%s is dynamically linked; the probe needs busybox-static", busybox)
		}
	}
	dir, err := os.MkdirTemp("", "warren-doctor-")
	if err != nil {
		return err
	}
	state := filepath.Join(dir, "state")
	defer func() {
		_ = unix.Unmount(filepath.Join(state, "null-netns"), unix.MNT_DETACH)
		os.RemoveAll(dir)
	}()
	for _, d := range []string{"rootfs/bin", "rootfs/proc", "rootfs/dev", "rootfs/sys"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyExecutable(busybox, filepath.Join(dir, "rootfs/bin/busybox")); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	spec := exec.CommandContext(ctx, runsc, "spec", "--", "/bin/busybox", "true")
	spec.Dir = dir
	if out, err := spec.CombinedOutput(); err != nil {
		return fmt.Errorf("runsc spec: %v: %s", err, bytes.TrimSpace(out))
	}
	cfg := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(b), `"terminal": true`, `"terminal": false`, 1)), 0o644); err != nil {
		return err
	}
	id := fmt.Sprintf("warren-doctor-%d", os.Getpid())
	run := exec.CommandContext(ctx, runsc, "--root", state, "--platform=systrap", "--network=sandbox", "run", "--bundle", dir, id)
	out, err := run.CombinedOutput()
	if err != nil {
		_ = exec.Command(runsc, "--root", state, "delete", "--force", id).Run()
		msg := strings.TrimSpace(string(out))
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		return fmt.Errorf("%v: %s", err, msg)
	}
	return nil
}

func copyExecutable(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
