package image

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/warrenhq/warren/wire"
)

// ErrBusy: the image is being made.
var ErrBusy = errors.New("the image is being made")

// Delete removes an image's tree and the layer blobs no other image uses.
// The caller has checked no sandbox or pool uses it. A built-in image can
// be deleted too; it is built again when next needed.
func (s *Store) Delete(name string) error {
	if !ValidName(name) || !s.Known(name) {
		return fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	s.mu.Lock()
	_, busy := s.building[name]
	s.mu.Unlock()
	if busy {
		return fmt.Errorf("delete image %s: %w", name, ErrBusy)
	}
	lock, err := os.OpenFile(filepath.Join(s.dir, ".lock-"+name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock image %s: %w", name, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("delete image %s: %w", name, ErrBusy)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	// Out of the way in one step, then removed: a crash in between leaves
	// a .old- tree that Prune clears, never a half image.
	gone := filepath.Join(s.dir, ".old-delete-"+name)
	if err := os.RemoveAll(gone); err != nil {
		return err
	}
	if err := os.Rename(s.imageDir(name), gone); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete image %s: %w", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("delete image %s: %w", name, err)
	}
	// A version it replaced, kept while sandboxes might have used it: no
	// sandbox uses the name now.
	if err := os.RemoveAll(filepath.Join(s.dir, ".old-"+name)); err != nil {
		return fmt.Errorf("delete image %s: %w", name, err)
	}
	return s.pruneBlobs()
}

// all lists every image, caches included.
func (s *Store) all() []*Image {
	var out []*Image
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if ValidName(e.Name()) {
			if img, err := s.readMeta(e.Name()); err == nil {
				out = append(out, img)
			}
		}
	}
	return out
}

// Prune removes Dockerfile build caches (those inUse does not claim), the
// layer blobs no image uses, and what interrupted builds, pulls and
// deletes left behind; it says what went.
func (s *Store) Prune(inUse func(name string) bool) (wire.PruneResult, error) {
	var res wire.PruneResult
	for _, img := range s.all() {
		if img.Kind == wire.ImageCache && (inUse == nil || !inUse(img.Name)) {
			if err := s.Delete(img.Name); err == nil {
				res.RemovedCaches++
				res.FreedBytes += img.SizeBytes
			}
		}
	}
	// Versions that pulls, builds and rebuilds replaced, kept while
	// sandboxes of the name might still run on them.
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if img, ok := strings.CutPrefix(e.Name(), ".old-"); ok && ValidName(img) && (inUse == nil || !inUse(img)) {
			p := filepath.Join(s.dir, e.Name())
			res.FreedBytes += treeSize(p)
			if err := os.RemoveAll(p); err != nil {
				return res, err
			}
		}
	}
	n, f, err := s.sweep()
	res.RemovedBlobs, res.FreedBytes = n, res.FreedBytes+f
	return res, err
}

// pruneBlobs removes what no image uses, after a delete.
func (s *Store) pruneBlobs() error {
	_, _, err := s.sweep()
	return err
}

// sweep removes layer blobs no image uses and leftovers of interrupted
// work.
func (s *Store) sweep() (blobs int, freed int64, err error) {
	used := map[string]bool{}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, 0, err
	}
	s.mu.Lock()
	building := len(s.building) > 0
	s.mu.Unlock()
	for _, e := range entries {
		n := e.Name()
		if ValidName(n) {
			if m, err := s.readFullMeta(n); err == nil {
				for _, l := range m.Layers {
					used[l] = true
				}
			}
			continue
		}
		// Leftovers of interrupted work, unless some is under way. (A
		// replaced image, .old-NAME, may still be under running sandboxes
		// and stays until the next replacement.)
		if img, ok := strings.CutPrefix(n, ".lock-"); ok && !building && !s.Builtin(img) {
			// The lock of an image that is gone.
			if _, err := os.Stat(s.imageDir(img)); errors.Is(err, fs.ErrNotExist) {
				os.Remove(filepath.Join(s.dir, n))
			}
			continue
		}
		if !building && (strings.HasPrefix(n, ".old-delete-") || strings.HasPrefix(n, ".build-") || stale(filepath.Join(s.dir, n), ".import-")) {
			freed += treeSize(filepath.Join(s.dir, n))
			if err := os.RemoveAll(filepath.Join(s.dir, n)); err != nil {
				return blobs, freed, err
			}
		}
	}
	if building {
		return blobs, freed, nil // a pull may be fetching blobs no image names yet
	}
	algos, _ := os.ReadDir(filepath.Join(s.dir, ".blobs"))
	for _, a := range algos {
		files, _ := os.ReadDir(filepath.Join(s.dir, ".blobs", a.Name()))
		for _, f := range files {
			d := v1.Hash{Algorithm: a.Name(), Hex: f.Name()}
			if used[d.String()] {
				continue
			}
			p := filepath.Join(s.dir, ".blobs", a.Name(), f.Name())
			if fi, err := os.Stat(p); err == nil {
				freed += fi.Size()
			}
			if err := os.Remove(p); err != nil {
				return blobs, freed, err
			}
			blobs++
		}
	}
	return blobs, freed, nil
}

// stale reports whether path is an import's leftover (named with prefix)
// untouched for an hour: an upload may still be arriving into a newer one.
func stale(path, prefix string) bool {
	fi, err := os.Stat(path)
	return strings.HasPrefix(filepath.Base(path), prefix) && err == nil && time.Since(fi.ModTime()) > time.Hour
}

// TempFile is a file in the image directory (on its filesystem, so an
// upload lands where the image will), for an import's upload.
func (s *Store) TempFile() (*os.File, error) {
	return os.CreateTemp(s.dir, ".import-upload-")
}

// TempDir is a directory in the image directory, for a build's context.
func (s *Store) TempDir() (string, error) {
	return os.MkdirTemp(s.dir, ".import-context-")
}
