// Package dirtar moves a directory tree as a tar stream: Pack writes one,
// Unpack extracts one into a directory and never outside it, whatever the
// stream says. Both the in-sandbox agent and the Go SDK use it, so a
// directory uploaded to a sandbox or downloaded from one is read and
// written the same way at both ends. It depends on the standard library
// only.
package dirtar

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Pack writes the tree under dir to w as a tar stream of relative names.
// Symbolic links are stored as links, never followed; sockets, devices and
// pipes are left out. Every open is resolved inside dir, so a tree that
// changes while it is packed (a symlink swapped in for a file or a
// directory) cannot make Pack read anything outside it.
func Pack(w io.Writer, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	defer root.Close()
	tw := tar.NewWriter(w)
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		if p == "." {
			return nil
		}
		return packOne(tw, root, p)
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return tw.Close()
}

func packOne(tw *tar.Writer, root *os.Root, p string) error {
	fi, err := root.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	link := ""
	var f *os.File
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		if link, err = root.Readlink(p); err != nil {
			return err
		}
	case fi.Mode().IsRegular():
		// Opened, then described by what was opened: the name may have
		// become something else since the walk saw it.
		var skip bool
		if f, skip, err = openFile(root, p); skip || err != nil {
			return err
		}
		defer f.Close()
		if fi, err = f.Stat(); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
	case !fi.IsDir():
		return nil
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return fmt.Errorf("pack %s: %w", p, err)
	}
	hdr.Name = p
	if fi.IsDir() {
		hdr.Name += "/"
	}
	// Owners by number only: names mean nothing on the other side.
	hdr.Uname, hdr.Gname = "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if f == nil {
		return nil
	}
	// The header promised Size bytes: a file that grew or shrank since
	// its stat is cut or padded to that.
	n, err := io.Copy(tw, io.LimitReader(f, hdr.Size))
	if err == nil && n < hdr.Size {
		_, err = io.CopyN(tw, zeros{}, hdr.Size-n)
	}
	return err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Options bound what Unpack writes.
type Options struct {
	// MaxBytes bounds the total size of the files written; 0 means no
	// bound.
	MaxBytes int64
	// LocalLinks refuses symbolic links whose target lies outside dir
	// (absolute, or climbing out with ".."): a tree from an untrusted
	// source cannot then point its reader elsewhere.
	LocalLinks bool
	// Owners keeps the stream's numeric owners (when running as root).
	Owners bool
	// SpecialBits keeps setuid, setgid and sticky bits.
	SpecialBits bool
	// MapOwner, if set, changes each entry's owner (with Owners), as
	// from a user namespace's ids to the image's.
	MapOwner func(uid, gid int) (int, int)
	// Layer applies the stream as an OCI image layer over what dir
	// already holds: an entry ".wh.NAME" removes NAME, an opaque marker
	// ".wh..wh..opq" empties its directory of what earlier layers put
	// there, and an entry replaces whatever is at its name, a directory
	// included.
	Layer bool
}

// OCI whiteouts.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Unpack extracts a tar stream into dir, creating it. Every name is
// resolved inside dir: an entry that is absolute or climbs out with ".."
// is an error naming it, as is a write through a symbolic link that leads
// out. Existing files are replaced, never written through.
func Unpack(r io.Reader, dir string, opts Options) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	var written int64
	// What this stream wrote: an opaque marker keeps those.
	mine := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar stream: %w", err)
		}
		name := strings.TrimSuffix(path.Clean(hdr.Name), "/")
		if name == "." {
			continue
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("tar entry %q: the name leaves the directory", hdr.Name)
		}
		if opts.Layer {
			if done, err := whiteout(root, name, mine); done || err != nil {
				if err != nil {
					return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
				}
				continue
			}
		}
		if err := unpackOne(root, tr, hdr, name, opts, &written); err != nil {
			return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
		mine[name] = true
	}
}

// whiteout applies a whiteout entry; it reports whether name was one.
func whiteout(root *os.Root, name string, mine map[string]bool) (bool, error) {
	dir, base := path.Dir(name), path.Base(name)
	switch {
	case base == opaqueMarker:
		d, err := root.Open(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return true, nil
		}
		if err != nil {
			return true, err
		}
		entries, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return true, err
		}
		for _, e := range entries {
			if child := path.Join(dir, e.Name()); !mine[child] {
				if err := root.RemoveAll(child); err != nil {
					return true, err
				}
			}
		}
		return true, nil
	case strings.HasPrefix(base, whiteoutPrefix):
		gone := strings.TrimPrefix(base, whiteoutPrefix)
		target := path.Join(dir, gone)
		if gone == "" || gone == "." || gone == ".." || !filepath.IsLocal(target) {
			return true, fmt.Errorf("a whiteout of %q is not a name in its directory", gone)
		}
		return true, root.RemoveAll(target)
	}
	return false, nil
}

// modeOf is an entry's permission bits, and its special bits if kept.
func modeOf(hdr *tar.Header, special bool) fs.FileMode {
	mode := fs.FileMode(hdr.Mode).Perm()
	if special {
		for bit, m := range map[int64]fs.FileMode{0o4000: fs.ModeSetuid, 0o2000: fs.ModeSetgid, 0o1000: fs.ModeSticky} {
			if hdr.Mode&bit != 0 {
				mode |= m
			}
		}
	}
	return mode
}

func unpackOne(root *os.Root, tr *tar.Reader, hdr *tar.Header, name string, opts Options, written *int64) error {
	mode := modeOf(hdr, opts.SpecialBits)
	replace := func(root *os.Root, name string) error { return replace(root, name, opts.Layer) }
	if parent := path.Dir(name); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
			if err := root.Remove(name); err != nil {
				return err
			}
		}
		if err := root.MkdirAll(name, 0o755); err != nil {
			return err
		}
	case tar.TypeReg:
		if opts.MaxBytes > 0 && *written+hdr.Size > opts.MaxBytes {
			return fmt.Errorf("the tree is larger than %d bytes", opts.MaxBytes)
		}
		if err := replace(root, name); err != nil {
			return err
		}
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode.Perm())
		if err != nil {
			return err
		}
		n, err := io.Copy(f, tr)
		*written += n
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if opts.LocalLinks && !localLink(name, hdr.Linkname) {
			return fmt.Errorf("symbolic link to %q leaves the directory", hdr.Linkname)
		}
		if err := replace(root, name); err != nil {
			return err
		}
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
	case tar.TypeLink:
		target := path.Clean(hdr.Linkname)
		if !filepath.IsLocal(target) {
			return fmt.Errorf("hard link to %q leaves the directory", hdr.Linkname)
		}
		if err := replace(root, name); err != nil {
			return err
		}
		if err := root.Link(target, name); err != nil {
			return err
		}
	default:
		return nil // devices, pipes: not for a sandbox's files
	}
	if opts.Owners && os.Geteuid() == 0 {
		uid, gid := hdr.Uid, hdr.Gid
		if opts.MapOwner != nil {
			uid, gid = opts.MapOwner(uid, gid)
		}
		if err := root.Lchown(name, uid, gid); err != nil {
			return err
		}
	}
	// After the owner (a chown clears setuid bits), and for files after
	// their creation under the umask.
	if hdr.Typeflag != tar.TypeSymlink && hdr.Typeflag != tar.TypeLink {
		if err := root.Chmod(name, mode); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeSymlink && !hdr.ModTime.IsZero() {
		_ = root.Chtimes(name, hdr.ModTime, hdr.ModTime)
	}
	return nil
}

// replace removes whatever is at name. A directory goes only when a layer
// replaces it; otherwise it is in the way.
func replace(root *os.Root, name string, layer bool) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if !layer {
			return fmt.Errorf("a directory is in the way")
		}
		return root.RemoveAll(name)
	}
	return root.Remove(name)
}

// localLink reports whether a link at name pointing to target stays
// inside the tree.
func localLink(name, target string) bool {
	if path.IsAbs(target) {
		return false
	}
	return filepath.IsLocal(path.Join(path.Dir(name), target))
}
