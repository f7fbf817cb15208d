package image

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeMeta(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, name, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name, "image.json"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// An image a newer warren built is refused, never rebuilt over; one from
// an older format is rebuilt.
func TestImageFormats(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeMeta(t, dir, "base", `{"name":"base","state":"ready","format":99}`)
	img, err := s.Get("base")
	if err != nil || img.State != "failed" || !strings.Contains(img.Error, "newer warren (image format 99") {
		t.Fatalf("newer image: %+v, %v", img, err)
	}
	if _, err := s.Ensure(context.Background(), "base", nil); err == nil || !strings.Contains(err.Error(), "newer warren") {
		t.Fatalf("Ensure on a newer image: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "base", "image.json")); !strings.Contains(string(b), `"format":99`) {
		t.Fatalf("the newer image was touched: %s", b)
	}

	writeMeta(t, dir, "busybox", `{"name":"busybox","state":"ready"}`) // before formats
	if img, err := s.Get("busybox"); err != nil || img.State != "missing" {
		t.Fatalf("older image: %+v, %v; want missing (to be rebuilt)", img, err)
	}
}
