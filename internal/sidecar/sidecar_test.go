package sidecar

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// release builds a tarball holding one executable script, as npm's
// platform packages hold the OpenCode binary.
func release(t *testing.T) (tgz, bin []byte) {
	t.Helper()
	bin = []byte("#!/bin/sh\necho tool 9.9.9\n")
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range []struct {
		name string
		body []byte
	}{{"package/package.json", []byte(`{}`)}, {"package/bin/tool", bin}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o755, Size: int64(len(f.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.body)
	}
	tw.Close()
	gz.Close()
	return buf.Bytes(), bin
}

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func serve(t *testing.T, body []byte) (url string, hits *int) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/tool-9.9.9.tgz", &n
}

func manifestFor(url string, tgz, bin []byte) *Manifest {
	return &Manifest{Sidecars: []Sidecar{{Name: "tool", Version: "9.9.9", Platforms: map[string]Asset{
		Platform(): {Asset: "tool-9.9.9.tgz", URL: url, SHA256: sum(tgz), Size: int64(len(tgz)), Path: "package/bin/tool",
			BinarySHA256: sum(bin), BinarySize: int64(len(bin))},
	}}}}
}

func TestDownloadVerifiesAndCaches(t *testing.T) {
	tgz, bin := release(t)
	url, hits := serve(t, tgz)
	dir := t.TempDir()
	var progress []string
	o := Options{Name: "tool", Source: SourceDownloaded, Dir: dir, Manifest: manifestFor(url, tgz, bin), Progress: func(s string) { progress = append(progress, s) }}
	b, err := Resolve(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if b.Source != "downloaded" || b.Version != "9.9.9" || b.Path != filepath.Join(dir, "tool", "9.9.9", "tool") {
		t.Fatalf("resolved %+v", b)
	}
	got, _ := os.ReadFile(b.Path)
	if !bytes.Equal(got, bin) {
		t.Fatalf("installed binary differs from the release's")
	}
	if len(progress) == 0 {
		t.Fatal("no download progress reported")
	}
	// The second resolve uses the cache.
	if _, err := Resolve(context.Background(), o); err != nil || *hits != 1 {
		t.Fatalf("second resolve: %v, %d downloads", err, *hits)
	}
	// A cached file that changed is refused and deleted.
	os.WriteFile(b.Path, []byte("#!/bin/sh\necho evil\n"), 0o755)
	if err := b.Verify(); !errors.Is(err, ErrMismatch) {
		t.Fatalf("tampered cache: %v", err)
	}
	if _, err := os.Stat(b.Path); !os.IsNotExist(err) {
		t.Fatal("tampered binary was not deleted")
	}
}

func TestDownloadMismatchIsRefused(t *testing.T) {
	tgz, bin := release(t)
	url, _ := serve(t, tgz)
	for name, edit := range map[string]func(*Asset){
		"asset hash":  func(a *Asset) { a.SHA256 = strings.Repeat("0", 64) },
		"asset size":  func(a *Asset) { a.Size++ },
		"binary hash": func(a *Asset) { a.BinarySHA256 = strings.Repeat("1", 64) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			m := manifestFor(url, tgz, bin)
			a := m.Sidecars[0].Platforms[Platform()]
			edit(&a)
			m.Sidecars[0].Platforms[Platform()] = a
			_, err := Resolve(context.Background(), Options{Name: "tool", Source: SourceDownloaded, Dir: dir, Manifest: m})
			if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "deleted") {
				t.Fatalf("want a mismatch error, got %v", err)
			}
			left, _ := filepath.Glob(filepath.Join(dir, "tool", "9.9.9", "*"))
			if len(left) != 0 {
				t.Fatalf("files left after a mismatch: %v", left)
			}
		})
	}
}

func TestResolveGivenAndPath(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tool")
	os.WriteFile(p, []byte("#!/bin/sh\necho tool 1.2.3\n"), 0o755)
	b, err := Resolve(context.Background(), Options{Name: "tool", Bin: p})
	if err != nil || b.Source != "given" || b.Version != "tool 1.2.3" {
		t.Fatalf("given: %+v %v", b, err)
	}
	if _, err := Resolve(context.Background(), Options{Name: "tool", Bin: filepath.Join(dir, "missing")}); err == nil || !strings.Contains(err.Error(), "--tool-bin") {
		t.Fatalf("missing --tool-bin: %v", err)
	}
	t.Setenv("PATH", dir)
	b, err = Resolve(context.Background(), Options{Name: "tool", Source: SourceExternal})
	if err != nil || b.Source != "path" || b.Path != p {
		t.Fatalf("external: %+v %v", b, err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := Resolve(context.Background(), Options{Name: "tool", Source: SourceExternal}); err == nil || !strings.Contains(err.Error(), "no tool on PATH") {
		t.Fatalf("external without PATH: %v", err)
	}
	if _, err := Resolve(context.Background(), Options{Name: "tool", Source: "bundled"}); err == nil || !strings.Contains(err.Error(), "--tool-source") {
		t.Fatalf("bad source: %v", err)
	}
}

func TestBuiltinManifest(t *testing.T) {
	m, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := m.Find("opencode")
	if err != nil || sc.Platforms["linux-amd64"].URL == "" {
		t.Fatalf("built-in manifest: %+v %v", sc, err)
	}
}
