package dirtar

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	must(t, os.MkdirAll(filepath.Join(src, "a/b"), 0o750))
	must(t, os.WriteFile(filepath.Join(src, "a/b/blob"), blob, 0o600))
	must(t, os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(t, os.Symlink("a/b/blob", filepath.Join(src, "link")))
	must(t, os.Symlink("/etc/passwd", filepath.Join(src, "abs")))
	var buf bytes.Buffer
	must(t, Pack(&buf, src))

	dst := filepath.Join(t.TempDir(), "new")
	must(t, Unpack(bytes.NewReader(buf.Bytes()), dst, Options{}))
	got, err := os.ReadFile(filepath.Join(dst, "link"))
	must(t, err)
	if !bytes.Equal(got, blob) {
		t.Fatal("the blob differs after a round trip through its link")
	}
	for name, want := range map[string]os.FileMode{"a/b/blob": 0o600, "run.sh": 0o755, "a": 0o750} {
		fi, err := os.Stat(filepath.Join(dst, name))
		must(t, err)
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	if l, _ := os.Readlink(filepath.Join(dst, "abs")); l != "/etc/passwd" {
		t.Errorf("absolute link came back as %q", l)
	}
	// The same stream, refusing links that leave the tree.
	err = Unpack(bytes.NewReader(buf.Bytes()), t.TempDir(), Options{LocalLinks: true})
	if err == nil || !strings.Contains(err.Error(), `"abs"`) {
		t.Fatalf("an absolute link was accepted with LocalLinks: %v", err)
	}
}

// TestHostileStreams: whatever a tar stream from a sandbox says, nothing is
// written outside the directory it is unpacked into.
func TestHostileStreams(t *testing.T) {
	type entry struct {
		name, link string
		flag       byte
		body       string
	}
	cases := map[string][]entry{
		"climbs out":            {{name: "../escaped", flag: tar.TypeReg, body: "x"}},
		"absolute name":         {{name: "/tmp/escaped", flag: tar.TypeReg, body: "x"}},
		"through a symlink":     {{name: "out", link: "OUTSIDE", flag: tar.TypeSymlink}, {name: "out/escaped", flag: tar.TypeReg, body: "x"}},
		"over a symlink":        {{name: "f", link: "OUTSIDE/escaped", flag: tar.TypeSymlink}, {name: "f", flag: tar.TypeReg, body: "x"}},
		"hard link out":         {{name: "h", link: "../../etc/passwd", flag: tar.TypeLink}},
		"relative link climbs":  {{name: "d/up", link: "../../OUTSIDE", flag: tar.TypeSymlink}, {name: "d/up/escaped", flag: tar.TypeReg, body: "x"}},
		"dir over outside link": {{name: "x", link: "OUTSIDE", flag: tar.TypeSymlink}, {name: "x/y/", flag: tar.TypeDir}},
	}
	for name, entries := range cases {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			must(t, os.Mkdir(outside, 0o755))
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, e := range entries {
				link := strings.ReplaceAll(e.link, "OUTSIDE", outside)
				must(t, tw.WriteHeader(&tar.Header{Name: e.name, Linkname: link, Typeflag: e.flag, Mode: 0o644, Size: int64(len(e.body))}))
				tw.Write([]byte(e.body))
			}
			tw.Close()
			dir := filepath.Join(base, "in")
			err := Unpack(&buf, dir, Options{})
			if err == nil && name != "over a symlink" {
				t.Errorf("unpacked without an error")
			}
			left, _ := os.ReadDir(outside)
			if len(left) > 0 {
				t.Fatalf("wrote outside the directory: %v", left)
			}
			if _, err := os.Stat(filepath.Join(base, "escaped")); err == nil {
				t.Fatal("wrote beside the directory")
			}
		})
	}
}

func TestMaxBytes(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range []string{"a", "b"} {
		must(t, tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: 600}))
		tw.Write(make([]byte, 600))
	}
	tw.Close()
	err := Unpack(&buf, t.TempDir(), Options{MaxBytes: 1000})
	if err == nil || !strings.Contains(err.Error(), "larger than 1000") {
		t.Fatalf("a 1200-byte tree passed a 1000-byte bound: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestLayers applies OCI layers in order: whiteouts remove what lower
// layers put there, an opaque directory keeps only its own layer's
// entries, and special bits survive when asked for.
func TestLayers(t *testing.T) {
	type e struct {
		name string
		flag byte
		body string
		mode int64
		link string
	}
	layer := func(entries ...e) *bytes.Buffer {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, x := range entries {
			if x.mode == 0 {
				x.mode = 0o644
			}
			must(t, tw.WriteHeader(&tar.Header{Name: x.name, Typeflag: x.flag, Mode: x.mode, Size: int64(len(x.body)), Linkname: x.link}))
			tw.Write([]byte(x.body))
		}
		tw.Close()
		return &buf
	}
	dir := t.TempDir()
	opts := Options{Layer: true, SpecialBits: true}
	must(t, Unpack(layer(
		e{name: "etc/", flag: tar.TypeDir, mode: 0o755},
		e{name: "etc/keep", flag: tar.TypeReg, body: "keep"},
		e{name: "etc/gone", flag: tar.TypeReg, body: "gone"},
		e{name: "opq/", flag: tar.TypeDir, mode: 0o755},
		e{name: "opq/old", flag: tar.TypeReg, body: "old"},
		e{name: "was-dir/", flag: tar.TypeDir, mode: 0o755},
		e{name: "was-dir/inside", flag: tar.TypeReg, body: "x"},
		e{name: "bin/su", flag: tar.TypeReg, body: "su", mode: 0o4755},
		e{name: "tmp/", flag: tar.TypeDir, mode: 0o1777},
	), dir, opts))
	must(t, Unpack(layer(
		e{name: "etc/.wh.gone", flag: tar.TypeReg},
		e{name: "opq/new", flag: tar.TypeReg, body: "new"},
		e{name: "opq/.wh..wh..opq", flag: tar.TypeReg},
		e{name: "was-dir", flag: tar.TypeReg, body: "now a file"},
		e{name: "bin/su-link", flag: tar.TypeLink, link: "bin/su"},
	), dir, opts))
	exists := func(p string) bool { _, err := os.Lstat(filepath.Join(dir, p)); return err == nil }
	for p, want := range map[string]bool{"etc/keep": true, "etc/gone": false, "etc/.wh.gone": false, "opq/old": false, "opq/new": true, "opq/.wh..wh..opq": false, "bin/su-link": true} {
		if exists(p) != want {
			t.Errorf("%s exists: %v, want %v", p, !want, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "was-dir")); string(b) != "now a file" {
		t.Errorf("a file did not replace a lower directory: %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "bin/su")); fi.Mode()&os.ModeSetuid == 0 {
		t.Errorf("setuid lost: %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(dir, "tmp")); fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("sticky bit lost: %v", fi.Mode())
	}
	// Device nodes and fifos are never made.
	must(t, Unpack(layer(e{name: "dev/", flag: tar.TypeDir, mode: 0o755}, e{name: "dev/sda", flag: tar.TypeBlock}, e{name: "dev/mem", flag: tar.TypeChar}, e{name: "fifo", flag: tar.TypeFifo}), dir, opts))
	for _, p := range []string{"dev/sda", "dev/mem", "fifo"} {
		if exists(p) {
			t.Errorf("%s was made", p)
		}
	}
	// A whiteout cannot reach out of the tree.
	err := Unpack(layer(e{name: "etc/.wh..", flag: tar.TypeReg}), dir, opts)
	if err == nil {
		t.Error("a whiteout of the directory itself was applied")
	}
	if !exists("etc/keep") {
		t.Fatal("a whiteout removed what it should not")
	}
}
