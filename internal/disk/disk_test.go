package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFullDiskStaysInside fills a small disk: the writer gets ENOSPC, the
// image takes no more than its size, and unmounting frees the loop device.
func TestFullDiskStaysInside(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk")
	if err := Create(context.Background(), img, 64); err != nil {
		t.Fatal(err)
	}
	if err := Mount(img, mnt); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mnt, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = f.Write(buf)
	}
	if werr == nil {
		werr = f.Sync()
	}
	f.Close()
	if !errors.Is(werr, unix.ENOSPC) {
		t.Fatalf("filling a 64 MB disk with 100 MB: %v, want ENOSPC", werr)
	}
	var st unix.Stat_t
	unix.Stat(img, &st)
	if used := st.Blocks * 512; used > 64<<20+1<<20 {
		t.Fatalf("the image uses %d bytes on the host", used)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	// The loop device detached itself.
	loops, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, l := range loops {
		if back, _ := os.ReadFile(l); string(back) == img+"\n" {
			t.Fatalf("%s still backs a loop device", img)
		}
	}
}
