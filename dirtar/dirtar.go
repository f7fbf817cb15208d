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
// pipes are left out.
func Pack(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while walking
			}
			return err
		}
		link := ""
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case !fi.Mode().IsRegular() && !fi.IsDir():
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("pack %s: %w", rel, err)
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		// Owners by number only: names mean nothing on the other side.
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// The header promised Size bytes: a file that grew or shrank
		// since its stat is cut or padded to that.
		n, err := io.Copy(tw, io.LimitReader(f, hdr.Size))
		if err == nil && n < hdr.Size {
			_, err = io.CopyN(tw, zeros{}, hdr.Size-n)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return tw.Close()
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
}

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
		if err := unpackOne(root, tr, hdr, name, opts, &written); err != nil {
			return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
	}
}

func unpackOne(root *os.Root, tr *tar.Reader, hdr *tar.Header, name string, opts Options, written *int64) error {
	mode := fs.FileMode(hdr.Mode).Perm()
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
		if err := root.Chmod(name, mode); err != nil {
			return err
		}
	case tar.TypeReg:
		if opts.MaxBytes > 0 && *written+hdr.Size > opts.MaxBytes {
			return fmt.Errorf("the tree is larger than %d bytes", opts.MaxBytes)
		}
		if err := replace(root, name); err != nil {
			return err
		}
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
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
		// The file was created under the umask.
		if err := root.Chmod(name, mode); err != nil {
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
		if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeSymlink && !hdr.ModTime.IsZero() {
		_ = root.Chtimes(name, hdr.ModTime, hdr.ModTime)
	}
	return nil
}

// replace removes whatever is at name, unless it is a directory (a file
// cannot replace a directory that has contents).
func replace(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("a directory is in the way")
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
