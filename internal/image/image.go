// Package image keeps the root filesystems sandboxes boot from. An image is
// a directory tree, built once, shared read-only by every sandbox that uses
// it; each sandbox writes to its own overlay on top.
package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/warrenhq/warren/wire"
)

// formatVersion changes when the layout warren needs inside an image
// changes; images built under an older version are rebuilt, and ones a
// newer warren built are left alone (refused, not rebuilt under it).
const formatVersion = 1

// newerFormat says an image was built by a newer warren.
func newerFormat(img *Image) error {
	return fmt.Errorf("image %s was built by a newer warren (image format %d; this warren knows up to %d): run that warren, or remove the image to rebuild it", img.Name, img.Format, formatVersion)
}

// Image is an image and its state, as the API shows it.
type Image = wire.Image

// Event reports progress of a build.
type Event = wire.ImageEvent

// builder makes an image's root filesystem in dir, reporting as it goes.
type builder func(ctx context.Context, dir string, report func(step, msg string)) error

// ErrUnknown is returned for an image name warren cannot build.
var ErrUnknown = errors.New("unknown image")

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// Store builds and finds images under one directory.
type Store struct {
	dir      string
	builders map[string]builder
	sources  map[string]string

	// dockerConfig is the directory of a docker config.json with
	// registry credentials ("" for the environment's).
	dockerConfig string

	mu       sync.Mutex
	building map[string]*build
}

type build struct {
	done     chan struct{}
	err      error
	mu       sync.Mutex
	progress string
	watchers []chan Event
}

// Options configures a Store.
type Options struct {
	// DebianMirror is where debootstrap fetches packages.
	DebianMirror string
	// Suite is the Debian release of the base image.
	Suite string
	// DockerConfig is the directory of a docker config.json whose
	// credentials pulls use when a request brings none.
	DockerConfig string
}

// NewStore returns a store rooted at dir with the built-in images.
func NewStore(dir string, opts Options) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create image dir: %w", err)
	}
	if opts.DebianMirror == "" {
		opts.DebianMirror = "http://deb.debian.org/debian"
	}
	if opts.Suite == "" {
		opts.Suite = "bookworm"
	}
	s := &Store{dir: dir, building: map[string]*build{}, dockerConfig: opts.DockerConfig}
	s.builders = map[string]builder{
		"busybox": buildBusybox,
		"base":    debootstrapBuilder(opts.Suite, opts.DebianMirror, baseIncludes),
	}
	s.sources = map[string]string{
		"busybox": "busybox-static from the host",
		"base":    "debootstrap " + opts.Suite + " minbase + " + strings.Join(baseIncludes, ","),
	}
	return s, nil
}

// ValidName reports whether name can name an image.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// CheckName says what is wrong with name for an image to be made under
// it (a pull, import, build or snapshot), as bad input naming "name".
func (s *Store) CheckName(name string) error { return s.checkName(name, wire.ImageRegistry) }

// checkName is CheckName for an image of kind: only build caches are
// named cache-*.
func (s *Store) checkName(name, kind string) error {
	switch {
	case !ValidName(name):
		return badInput("name", "image name %q must be lowercase letters, digits, '.', '_' or '-' (up to 63)", name)
	case s.Builtin(name):
		return badInput("name", "%q is a built-in image; choose another name", name)
	case strings.HasPrefix(name, "cache-") != (kind == wire.ImageCache):
		return badInput("name", "%q: names starting cache- are Dockerfile build caches', and only theirs", name)
	}
	return nil
}

// Builtin reports whether name is one of warren's own images.
func (s *Store) Builtin(name string) bool {
	_, ok := s.builders[name]
	return ok
}

// Known reports whether the store can build or has built name.
func (s *Store) Known(name string) bool {
	if _, ok := s.builders[name]; ok {
		return true
	}
	_, err := os.Stat(s.metaPath(name))
	return err == nil
}

func (s *Store) imageDir(name string) string { return filepath.Join(s.dir, name) }
func (s *Store) metaPath(name string) string { return filepath.Join(s.dir, name, "image.json") }

// RootfsPath is where a ready image's tree lives.
func (s *Store) RootfsPath(name string) string { return filepath.Join(s.dir, name, "rootfs") }

// meta is what image.json holds: the image as the API shows it, and the
// layer blobs it was made from (for garbage collection).
type meta struct {
	Image
	Layers []string `json:"layers,omitempty"`
}

func (s *Store) readMeta(name string) (*Image, error) {
	m, err := s.readFullMeta(name)
	if err != nil {
		return nil, err
	}
	return &m.Image, nil
}

func (s *Store) readFullMeta(name string) (*meta, error) {
	b, err := os.ReadFile(s.metaPath(name))
	if err != nil {
		return nil, err
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("decode image %s: %w", name, err)
	}
	return &m, nil
}

// Get describes an image, whether or not it is built.
func (s *Store) Get(name string) (*Image, error) {
	if !ValidName(name) || !s.Known(name) {
		return nil, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	s.mu.Lock()
	b := s.building[name]
	s.mu.Unlock()
	if b != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		return &Image{Name: name, State: wire.ImageBuilding, Source: s.sources[name], Progress: b.progress}, nil
	}
	img, err := s.readMeta(name)
	if err == nil && img.Format > formatVersion {
		return &Image{Name: name, State: wire.ImageFailed, Source: s.sources[name], Format: img.Format, Error: newerFormat(img).Error()}, nil
	}
	if err != nil || img.Format != formatVersion {
		return &Image{Name: name, State: wire.ImageMissing, Source: s.sources[name]}, nil
	}
	return img, nil
}

// List describes every image the store knows.
func (s *Store) List() []*Image {
	names := map[string]bool{}
	for n := range s.builders {
		names[n] = true
	}
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if e.IsDir() && ValidName(e.Name()) && s.Known(e.Name()) {
			names[e.Name()] = true
		}
	}
	var out []*Image
	for n := range names {
		if img, err := s.Get(n); err == nil && img.Kind != wire.ImageCache {
			out = append(out, img)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Ensure returns the rootfs path of name, building it first if needed.
// Concurrent callers share one build. watch, if not nil, receives progress
// until Ensure returns.
func (s *Store) Ensure(ctx context.Context, name string, watch func(Event)) (string, error) {
	if img, err := s.Get(name); err != nil {
		return "", err
	} else if img.State == wire.ImageReady {
		return s.RootfsPath(name), nil
	} else if img.Format > formatVersion {
		return "", newerFormat(img)
	}
	b, leader := s.join(name)
	ch := b.watch(watch)
	if leader {
		// The build belongs to the store, not to the caller that happened
		// to start it: other callers may be waiting on it.
		go s.runBuild(context.WithoutCancel(ctx), name, b)
	}
	if err := b.wait(ctx, ch, watch); err != nil {
		return "", err
	}
	return s.RootfsPath(name), nil
}

// watch subscribes watch (if not nil) to the build's progress.
func (b *build) watch(watch func(Event)) chan Event {
	if watch == nil {
		return nil
	}
	ch := make(chan Event, 256)
	b.mu.Lock()
	b.watchers = append(b.watchers, ch)
	b.mu.Unlock()
	return ch
}

// wait passes progress to watch until the build ends, and returns its
// error. Only the caller's context ending stops it early; the build goes
// on.
func (b *build) wait(ctx context.Context, ch chan Event, watch func(Event)) error {
	for {
		select {
		case ev := <-ch:
			watch(ev)
		case <-b.done:
			for drained := false; !drained && ch != nil; {
				select {
				case ev := <-ch:
					watch(ev)
				default:
					drained = true
				}
			}
			return b.err
		case <-ctx.Done():
			return fmt.Errorf("wait for image: %w", ctx.Err())
		}
	}
}

func (s *Store) join(name string) (*build, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.building[name]; ok {
		return b, false
	}
	b := &build{done: make(chan struct{})}
	s.building[name] = b
	return b, true
}

func (s *Store) runBuild(ctx context.Context, name string, b *build) {
	s.runInstall(ctx, name, b, func(ctx context.Context, report func(step, msg string)) error {
		return s.build(ctx, name, report)
	})
}

// runInstall runs one install of name (a build, pull or import) for the
// waiters on b, reporting progress to them.
func (s *Store) runInstall(ctx context.Context, name string, b *build, install func(ctx context.Context, report func(step, msg string)) error) {
	report := func(step, msg string) {
		ev := Event{Image: name, Step: step, Message: msg}
		b.mu.Lock()
		b.progress = step + ": " + msg
		for _, w := range b.watchers {
			select {
			case w <- ev:
			default: // a slow watcher misses progress, never the result
			}
		}
		b.mu.Unlock()
	}
	b.err = install(ctx, report)
	if b.err != nil {
		report("failed", b.err.Error())
	} else {
		report("ready", "image "+name+" is ready")
	}
	s.mu.Lock()
	delete(s.building, name)
	s.mu.Unlock()
	close(b.done)
}

// build makes a built-in image.
func (s *Store) build(ctx context.Context, name string, report func(step, msg string)) error {
	bld, ok := s.builders[name]
	if !ok {
		return fmt.Errorf("%w: %q has no builder", ErrUnknown, name)
	}
	m := &meta{Image: Image{Kind: wire.ImageBuiltin, Source: s.sources[name]}}
	return s.install(ctx, name, m, false, func(ctx context.Context, rootfs string) error { return bld(ctx, rootfs, report) })
}

// install makes an image in a scratch directory and renames it into
// place, so a crash mid-way never leaves a half image that looks ready.
// m describes it (fill fills in more as it goes); replace says whether an
// image already there is replaced (a pull) or kept (a build).
func (s *Store) install(ctx context.Context, name string, m *meta, replace bool, fill func(ctx context.Context, rootfs string) error) error {
	// Another warren process may share this image dir: one builds, the
	// others wait and then find the image ready.
	lock, err := os.OpenFile(filepath.Join(s.dir, ".lock-"+name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock image %s: %w", name, err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock image %s: %w", name, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if img, err := s.readMeta(name); err == nil && img.Format == formatVersion && !replace {
		return nil
	} else if err == nil && img.Format > formatVersion {
		return newerFormat(img)
	}
	start := time.Now()
	scratch := filepath.Join(s.dir, ".build-"+name)
	if err := os.RemoveAll(scratch); err != nil {
		return fmt.Errorf("clear old build of %s: %w", name, err)
	}
	rootfs := filepath.Join(scratch, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	if err := fill(ctx, rootfs); err != nil {
		os.RemoveAll(scratch)
		return fmt.Errorf("make image %s: %w", name, err)
	}
	if err := prepareForWarren(rootfs); err != nil {
		os.RemoveAll(scratch)
		return fmt.Errorf("prepare image %s: %w", name, err)
	}
	m.Name, m.State, m.SizeBytes, m.Format = name, wire.ImageReady, treeSize(rootfs), formatVersion
	m.BuiltAt, m.BuildMs = time.Now().UTC(), time.Since(start).Milliseconds()
	mb, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(filepath.Join(scratch, "image.json"), mb, 0o644); err != nil {
		os.RemoveAll(scratch)
		return fmt.Errorf("write image metadata: %w", err)
	}
	final := s.imageDir(name)
	old := filepath.Join(s.dir, ".old-"+name)
	if err := os.RemoveAll(old); err != nil {
		os.RemoveAll(scratch)
		return fmt.Errorf("remove the previous %s: %w", name, err)
	}
	if _, err := os.Stat(final); err == nil {
		// An outdated image may still be the lower layer of running
		// sandboxes; move it aside rather than deleting under them.
		if err := os.Rename(final, old); err != nil {
			return fmt.Errorf("replace image %s: %w", name, err)
		}
	}
	if err := os.Rename(scratch, final); err != nil {
		return fmt.Errorf("install image %s: %w", name, err)
	}
	return nil
}

// prepareForWarren adds what every sandbox needs in its root: mount points
// for the agent and its socket directory, and the usual pseudo-filesystems.
// The tree may come from anyone (a registry, an upload): every path is
// resolved inside it, and warren's own mount points are made real
// directories whatever the image put there.
func prepareForWarren(rootfs string) error {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return err
	}
	defer root.Close()
	// /.warren is warren's alone: whatever the image had there goes.
	if err := root.RemoveAll(".warren"); err != nil {
		return err
	}
	for _, d := range []string{".warren", ".warren/run", "proc", "sys", "dev"} {
		if fi, err := root.Lstat(d); err == nil && !fi.IsDir() {
			if err := root.Remove(d); err != nil {
				return err
			}
		}
		if err := root.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	for _, d := range []string{"tmp", "root", "etc", "workspace"} {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("%s: %w", d, err)
		}
	}
	if err := root.Chmod("tmp", 0o777|os.ModeSticky); err != nil {
		return err
	}
	f, err := root.OpenFile(".warren/agent", os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	f.Close()
	for _, name := range []string{"hosts", "resolv.conf", "hostname"} {
		p := "etc/" + name
		if _, err := root.Lstat(p); errors.Is(err, os.ErrNotExist) {
			content := ""
			if name == "hosts" {
				content = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
			}
			if err := root.WriteFile(p, []byte(content), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func treeSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
