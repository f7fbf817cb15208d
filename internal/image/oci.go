package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"

	"github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	gname "github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/klauspost/compress/zstd"

	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/wire"
)

// InputError is bad input to a pull or import: the field it names is at
// fault (the ref, the file), not warren.
type InputError struct {
	Field string
	Err   error
}

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func badInput(field string, format string, args ...any) error {
	return &InputError{Field: field, Err: fmt.Errorf(format, args...)}
}

// platform is the node's: what a multi-arch index resolves to.
var platform = v1.Platform{OS: "linux", Architecture: goruntime.GOARCH}

// blobPath is where a layer blob is kept, once, by its digest.
func (s *Store) blobPath(d v1.Hash) string {
	return filepath.Join(s.dir, ".blobs", d.Algorithm, d.Hex)
}

// Pull fetches ref from its registry as the image name, replacing an
// image of that name once the new one is complete. Credentials come from
// auth if given, else from the docker config.json the Store was given (or
// the environment's); they are used for this pull only.
func (s *Store) Pull(ctx context.Context, name, ref string, auth *wire.RegistryAuth, watch func(Event)) (*Image, error) {
	if err := s.CheckName(name); err != nil {
		return nil, err
	}
	r, err := gname.ParseReference(ref)
	if err != nil {
		return nil, badInput("ref", "ref %q: %v", ref, err)
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithPlatform(platform), remote.WithUserAgent("warren")}
	switch {
	case auth != nil && auth.Token != "":
		opts = append(opts, remote.WithAuth(authn.FromConfig(authn.AuthConfig{RegistryToken: auth.Token})))
	case auth != nil:
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: auth.Username, Password: auth.Password}))
	default:
		opts = append(opts, remote.WithAuthFromKeychain(s.keychain()))
	}
	m := &meta{Image: Image{Kind: wire.ImageRegistry, Ref: r.String(), Source: "registry " + r.Context().RegistryStr()}}
	return s.installOCI(ctx, name, m, watch, func(report func(step, msg string)) (v1.Image, error) {
		report("resolve", "resolving "+r.String())
		desc, err := remote.Get(r, opts...)
		if err != nil {
			return nil, registryError(ref, err)
		}
		img, err := desc.Image()
		if err != nil {
			return nil, fmt.Errorf("%s: no image for %s/%s: %w", ref, platform.OS, platform.Architecture, err)
		}
		return img, nil
	})
}

// registryError says what a registry's refusal means for the ref.
func registryError(ref string, err error) error {
	var te *transport.Error
	if errors.As(err, &te) {
		switch te.StatusCode {
		case http.StatusNotFound:
			return badInput("ref", "%s: not found in its registry", ref)
		case http.StatusUnauthorized, http.StatusForbidden:
			return badInput("auth", "%s: the registry refused the credentials (or needs some): %v", ref, redactAuth(te))
		}
	}
	return fmt.Errorf("pull %s: %w", ref, err)
}

// redactAuth keeps a registry's error text but none of the request's
// headers.
func redactAuth(te *transport.Error) string {
	var parts []string
	for _, d := range te.Errors {
		parts = append(parts, string(d.Code)+": "+d.Message)
	}
	if len(parts) == 0 {
		return http.StatusText(te.StatusCode)
	}
	return strings.Join(parts, "; ")
}

func (s *Store) keychain() authn.Keychain {
	if s.dockerConfig != "" {
		// DOCKER_CONFIG names the directory of config.json.
		return dockerConfigKeychain{dir: s.dockerConfig}
	}
	return authn.DefaultKeychain
}

// dockerConfigKeychain reads one docker config.json (and the credential
// helpers it names), as docker login wrote it.
type dockerConfigKeychain struct{ dir string }

func (k dockerConfigKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	cf, err := config.Load(k.dir)
	if err != nil {
		return nil, fmt.Errorf("read docker config in %s: %w", k.dir, err)
	}
	key := r.RegistryStr()
	if key == gname.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	ac, err := cf.GetCredentialsStore(key).Get(key)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", r.RegistryStr(), err)
	}
	if ac.Username == "" && ac.Password == "" && ac.Auth == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}), nil
}

// Import reads an image from a file: a docker save tarball, an OCI layout
// directory, or an OCI layout as a tarball.
func (s *Store) Import(ctx context.Context, name, path string, watch func(Event)) (*Image, error) {
	if err := s.CheckName(name); err != nil {
		return nil, err
	}
	m := &meta{Image: Image{Kind: wire.ImageImport, Source: "import " + filepath.Base(path)}}
	var cleanup func()
	defer func() {
		if cleanup != nil {
			cleanup()
		}
	}()
	return s.installOCI(ctx, name, m, watch, func(report func(step, msg string)) (v1.Image, error) {
		report("read", "reading "+filepath.Base(path))
		img, done, err := s.openImageFile(path)
		cleanup = done
		return img, err
	})
}

// blame is the input a bad image's content is blamed on: what a pull was
// given (its ref) or an import (its file).
func blame(m *meta) string {
	if m.Kind == wire.ImageImport {
		return "file"
	}
	return "ref"
}

// openImageFile opens an image in a file or directory; done removes what
// it unpacked to read it.
func (s *Store) openImageFile(path string) (v1.Image, func(), error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, badInput("file", "%v", err)
	}
	if fi.IsDir() {
		img, err := fromLayout(path)
		return img, nil, err
	}
	names, err := tarNames(path)
	if err != nil {
		return nil, nil, badInput("file", "%s is not an image (a docker save tarball or an OCI layout): %v", filepath.Base(path), err)
	}
	switch {
	case names["manifest.json"]:
		img, err := tarball.ImageFromPath(path, nil)
		if err != nil {
			return nil, nil, badInput("file", "%s: %v", filepath.Base(path), err)
		}
		return img, nil, nil
	case names["index.json"] && names["oci-layout"]:
		dir, err := os.MkdirTemp(s.dir, ".import-")
		if err != nil {
			return nil, nil, err
		}
		done := func() { os.RemoveAll(dir) }
		f, err := os.Open(path)
		if err != nil {
			return nil, done, err
		}
		defer f.Close()
		if err := dirtar.Unpack(f, dir, dirtar.Options{LocalLinks: true}); err != nil {
			return nil, done, badInput("file", "%s: %v", filepath.Base(path), err)
		}
		img, err := fromLayout(dir)
		return img, done, err
	}
	return nil, nil, badInput("file", "%s is not an image: it has neither manifest.json (docker save) nor index.json and oci-layout (OCI)", filepath.Base(path))
}

// tarNames lists the top-level names in a tar file.
func tarNames(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(bufio.NewReader(f))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if len(names) == 0 {
				return nil, errors.New("an empty tar stream")
			}
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		names[strings.TrimPrefix(filepath.Clean(hdr.Name), "./")] = true
	}
}

// fromLayout picks the node's platform's image from an OCI layout.
func fromLayout(dir string) (v1.Image, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, badInput("file", "not an OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, badInput("file", "OCI layout index: %v", err)
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && !d.Platform.Satisfies(platform) {
			continue
		}
		if d.MediaType.IsIndex() {
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, badInput("file", "OCI layout: %v", err)
			}
			return pickPlatform(child)
		}
		return idx.Image(d.Digest)
	}
	return nil, badInput("file", "the OCI layout has no image for %s/%s", platform.OS, platform.Architecture)
}

func pickPlatform(idx v1.ImageIndex) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.Platform == nil || d.Platform.Satisfies(platform) {
			return idx.Image(d.Digest)
		}
	}
	return nil, badInput("file", "no image for %s/%s", platform.OS, platform.Architecture)
}

// installOCI installs the image open returns: its layers kept once by
// digest (each verified), applied in order, its config recorded.
func (s *Store) installOCI(ctx context.Context, name string, m *meta, watch func(Event), open func(report func(step, msg string)) (v1.Image, error)) (*Image, error) {
	return s.make(ctx, name, watch, func(ctx context.Context, report func(step, msg string)) error {
		img, err := open(report)
		if err != nil {
			return err
		}
		return s.install(ctx, name, m, true, func(ctx context.Context, rootfs string) error {
			return s.unpackImage(ctx, img, m, rootfs, report)
		})
	})
}

// Snapshot makes the image name, of kind, from a tree fill writes into an
// empty root filesystem, with cfg as its config.
func (s *Store) Snapshot(ctx context.Context, name, kind, source string, cfg *wire.ImageConfig, fill func(ctx context.Context, rootfs string) error) (*Image, error) {
	if err := s.checkName(name, kind); err != nil {
		return nil, err
	}
	m := &meta{Image: Image{Kind: kind, Source: source, Config: cfg}}
	return s.make(ctx, name, nil, func(ctx context.Context, report func(step, msg string)) error {
		return s.install(ctx, name, m, true, fill)
	})
}

// Clone makes the image name from the tree of the image from, sharing its
// files (hard links: image trees are never written once made).
func (s *Store) Clone(ctx context.Context, name, from, kind, source string, cfg *wire.ImageConfig) (*Image, error) {
	src := s.RootfsPath(from)
	return s.Snapshot(ctx, name, kind, source, cfg, func(ctx context.Context, rootfs string) error {
		if out, err := exec.CommandContext(ctx, "cp", "-al", src+"/.", rootfs+"/").CombinedOutput(); err != nil {
			return fmt.Errorf("copy image %s: %v: %s", from, err, bytes.TrimSpace(out))
		}
		return nil
	})
}

// make runs one making of name (no other at the same time), reporting to
// watch, and returns the image made.
func (s *Store) make(ctx context.Context, name string, watch func(Event), do func(ctx context.Context, report func(step, msg string)) error) (*Image, error) {
	b, leader := s.join(name)
	if !leader {
		return nil, fmt.Errorf("image %s: %w; try when it is done", name, ErrBusy)
	}
	ch := b.watch(watch)
	// The work belongs to the store once begun: a client that hangs up
	// must not leave half an image.
	go s.runInstall(context.WithoutCancel(ctx), name, b, do)
	if err := b.wait(ctx, ch, watch); err != nil {
		return nil, err
	}
	return s.Get(name)
}

func (s *Store) unpackImage(ctx context.Context, img v1.Image, m *meta, rootfs string, report func(step, msg string)) error {
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	m.Digest = digest.String()
	cf, err := img.ConfigFile()
	if err != nil {
		return tampered(blame(m), fmt.Errorf("read the image's config: %w", err))
	}
	if cf.OS != "" && cf.OS != "linux" {
		return badInput(blame(m), "the image is for %s, not linux", cf.OS)
	}
	c := cf.Config
	m.Config = &wire.ImageConfig{Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, Entrypoint: c.Entrypoint, Cmd: c.Cmd}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("list layers: %w", err)
	}
	m.Layers = nil
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		step := fmt.Sprintf("layer %d/%d", i+1, len(layers))
		if err := s.fetchBlob(ctx, l, d, blame(m), step, report); err != nil {
			return err
		}
		m.Layers = append(m.Layers, d.String())
		report(step, "unpacking "+short(d))
		if err := applyBlob(s.blobPath(d), rootfs); err != nil {
			if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EIO) {
				return fmt.Errorf("%s (%s): %w", step, short(d), err)
			}
			// The layer itself is at fault: a name or link leading out,
			// a broken stream.
			return &InputError{Field: blame(m), Err: fmt.Errorf("%s (%s) cannot be applied: %w", step, short(d), err)}
		}
	}
	return nil
}

func short(d v1.Hash) string { return d.Algorithm + ":" + d.Hex[:min(12, len(d.Hex))] }

// fetchBlob keeps a layer's compressed blob under its digest, verified,
// unless it is there already.
func (s *Store) fetchBlob(ctx context.Context, l v1.Layer, d v1.Hash, field, step string, report func(step, msg string)) error {
	if d.Algorithm != "sha256" {
		return fmt.Errorf("layer %s: unsupported digest algorithm", d)
	}
	dst := s.blobPath(d)
	if _, err := os.Stat(dst); err == nil {
		report(step, short(d)+" already here")
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	size, _ := l.Size()
	report(step, fmt.Sprintf("fetching %s (%d MB)", short(d), size>>20))
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("fetch layer %s: %w", short(d), err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".part-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, h), &ctxReader{ctx: ctx, r: rc})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return tampered(field, fmt.Errorf("fetch layer %s: %w", short(d), err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return badInput(field, "layer %s: its content has digest sha256:%s; refusing it", short(d), got)
	}
	return os.Rename(tmp.Name(), dst)
}

// tampered marks a content mismatch (what a registry or file sent is not
// what its digest promised) as the input's fault, not warren's.
func tampered(field string, err error) error {
	if strings.Contains(err.Error(), "error verifying") {
		return badInput(field, "%v; refusing it", err)
	}
	return err
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// applyBlob unpacks a layer blob (gzip, zstd or plain tar) over rootfs.
func applyBlob(path, rootfs string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	magic, _ := br.Peek(4)
	var r io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		gz, err := gzip.NewReader(br)
		if err != nil {
			return err
		}
		defer gz.Close()
		r = gz
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	return dirtar.Unpack(r, rootfs, dirtar.Options{Layer: true, Owners: true, SpecialBits: true})
}
