package inroot

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// tree makes a sandbox-like tree next to a canary directory of the
// host's, and returns both.
func tree(t *testing.T) (root, canary string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "rootfs")
	canary = filepath.Join(base, "canary")
	for _, d := range []string{root, canary, filepath.Join(root, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(canary, "hosts"), []byte("host's own\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, canary
}

func untouched(t *testing.T, canary string) {
	t.Helper()
	entries, _ := os.ReadDir(canary)
	if len(entries) != 1 {
		t.Fatalf("canary dir now holds %d entries", len(entries))
	}
	b, _ := os.ReadFile(filepath.Join(canary, "hosts"))
	if string(b) != "host's own\n" {
		t.Fatalf("canary file changed: %q", b)
	}
}

// The attacks a sandbox can plant before the host writes etc/hosts.
func TestWriteFileStaysInside(t *testing.T) {
	attacks := map[string]func(root, canary string) error{
		"etc is an absolute symlink to the host": func(root, canary string) error {
			return os.Symlink(canary, filepath.Join(root, "etc"))
		},
		"etc climbs out with ..": func(root, canary string) error {
			return os.Symlink("../../../../../../"+canary, filepath.Join(root, "etc"))
		},
		"the file is a symlink to the host's": func(root, canary string) error {
			os.Mkdir(filepath.Join(root, "etc"), 0o755)
			return os.Symlink(filepath.Join(canary, "hosts"), filepath.Join(root, "etc", "hosts"))
		},
		"a chain of symlinks": func(root, canary string) error {
			os.Symlink("/b", filepath.Join(root, "a"))
			os.Symlink(canary, filepath.Join(root, "b"))
			return os.Symlink("/a", filepath.Join(root, "etc"))
		},
		"a magic link": func(root, canary string) error {
			return os.Symlink("/proc/self/root"+canary, filepath.Join(root, "etc"))
		},
	}
	for name, plant := range attacks {
		t.Run(name, func(t *testing.T) {
			root, canary := tree(t)
			if err := plant(root, canary); err != nil {
				t.Fatal(err)
			}
			// Either it lands inside the tree or it fails; the host's
			// directory never changes.
			_ = MkdirAll(root, "etc", 0o755)
			err := WriteFile(root, "etc/hosts", []byte("sandbox's\n"), 0o644)
			untouched(t, canary)
			if err == nil {
				f, err := Open(root, "etc/hosts")
				if err != nil {
					t.Fatalf("written but cannot be read back inside: %v", err)
				}
				b, _ := io.ReadAll(f)
				f.Close()
				if string(b) != "sandbox's\n" {
					t.Fatalf("read back %q", b)
				}
			}
		})
	}
}

func TestWriteFileReplacesSymlinkAtomically(t *testing.T) {
	root, canary := tree(t)
	os.Mkdir(filepath.Join(root, "etc"), 0o755)
	os.Symlink(filepath.Join(canary, "hosts"), filepath.Join(root, "etc", "resolv.conf"))
	if err := WriteFile(root, "etc/resolv.conf", []byte("nameserver 10.88.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(root, "etc", "resolv.conf"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("not a plain 0644 file: %v %v", fi, err)
	}
	untouched(t, canary)
	entries, _ := os.ReadDir(filepath.Join(root, "etc"))
	if len(entries) != 1 {
		t.Fatalf("left temporary files: %v", entries)
	}
}

func TestMkdirAllFollowsOnlyInside(t *testing.T) {
	root, canary := tree(t)
	os.Symlink(canary, filepath.Join(root, "workspace"))
	// The link's target does not exist inside the tree: refused, as
	// mkdir -p in the sandbox would be.
	if err := MkdirAll(root, "workspace/extra/data", 0o755); err == nil {
		t.Fatal("made directories through a dangling link")
	}
	untouched(t, canary)
	os.MkdirAll(filepath.Join(root, canary), 0o755)
	if err := MkdirAll(root, "workspace/extra/data", 0o755); err != nil {
		t.Fatal(err)
	}
	untouched(t, canary)
	// The absolute symlink led to /<canary> inside the tree.
	if _, err := os.Stat(filepath.Join(root, canary, "extra", "data")); err != nil {
		t.Fatalf("not created inside the tree: %v", err)
	}
}

func TestOpenStaysInside(t *testing.T) {
	root, canary := tree(t)
	os.Symlink(filepath.Join(canary, "hosts"), filepath.Join(root, "leak"))
	if f, err := Open(root, "leak"); err == nil {
		f.Close()
		t.Fatal("read a host file through a symlink")
	}
	if f, err := Open(root, "../../canary/hosts"); err == nil {
		f.Close()
		t.Fatal("read a host file through ..")
	}
}

func TestPlainRefusesSymlinks(t *testing.T) {
	root, canary := tree(t)
	os.MkdirAll(filepath.Join(root, ".git", "hooks"), 0o755)
	os.Symlink(canary, filepath.Join(root, "alias"))
	os.Symlink(canary, filepath.Join(root, ".git", "info"))
	if fi, err := Plain(root, ".git/hooks"); err != nil || !fi.IsDir() {
		t.Fatalf("a plain directory: %v %v", fi, err)
	}
	for _, name := range []string{"alias", "alias/hosts", ".git/info", "missing", "../canary"} {
		if _, err := Plain(root, name); err == nil {
			t.Fatalf("%s passed", name)
		}
	}
	if _, err := Plain(root, "alias"); !errors.Is(err, os.ErrNotExist) && err == nil {
		t.Fatal("no error")
	}
}
