// Package sidecar finds the helper binaries warren runs beside a
// workspace (OpenCode): a path the user gives, one on PATH, or a pinned
// release warren downloads itself. Every binary warren downloads is checked
// against a SHA-256 manifest before it runs; a mismatch deletes the file
// and fails.
package sidecar

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"time"
)

// Manifest lists the binaries warren may download, and their hashes.
type Manifest struct {
	Sidecars []Sidecar `json:"sidecars"`
}

// Sidecar is one pinned release of one binary.
type Sidecar struct {
	Name      string           `json:"name"`
	Version   string           `json:"version"`
	Platforms map[string]Asset `json:"platforms"`
}

// Asset is what to download for one platform, and how to check it.
type Asset struct {
	Asset  string `json:"asset"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Path is the binary inside the asset (a gzipped tarball); empty when
	// the asset is the binary itself.
	Path         string `json:"path,omitempty"`
	BinarySHA256 string `json:"binary_sha256"`
	BinarySize   int64  `json:"binary_size"`
}

//go:embed manifest.json
var builtinManifest []byte

// Builtin is the manifest warren ships with.
func Builtin() (*Manifest, error) { return parseManifest(builtinManifest, "built-in manifest") }

// LoadManifest reads a manifest file.
func LoadManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read sidecar manifest: %w", err)
	}
	return parseManifest(b, path)
}

func parseManifest(b []byte, where string) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parse %s: %w", where, err)
	}
	for i, s := range m.Sidecars {
		for p, a := range s.Platforms {
			if len(a.SHA256) != 64 || len(a.BinarySHA256) != 64 || a.URL == "" {
				return nil, fmt.Errorf("%s: sidecars[%d].platforms.%s needs url, sha256 and binary_sha256", where, i, p)
			}
		}
	}
	return &m, nil
}

// Find returns the manifest's entry for a binary.
func (m *Manifest) Find(name string) (*Sidecar, error) {
	for i := range m.Sidecars {
		if m.Sidecars[i].Name == name {
			return &m.Sidecars[i], nil
		}
	}
	return nil, fmt.Errorf("the sidecar manifest has no %s", name)
}

// Platform names this machine as the manifest does: linux-amd64.
func Platform() string { return goruntime.GOOS + "-" + goruntime.GOARCH }

// Sources a binary can come from.
const (
	SourceAuto       = "auto"
	SourceExternal   = "external"
	SourceDownloaded = "downloaded"
)

// Options says where to look for a binary.
type Options struct {
	Name string
	// Source is auto, external (PATH) or downloaded.
	Source string
	// Bin, when set, is the binary to use, whatever Source says.
	Bin string
	// PreferPath lets auto use a binary on PATH before downloading.
	PreferPath bool
	// Dir keeps downloaded binaries: Dir/NAME/VERSION/NAME.
	Dir      string
	Manifest *Manifest
	HTTP     *http.Client
	// Progress hears about long steps (a download).
	Progress func(msg string)
}

// Binary is a resolved binary.
type Binary struct {
	Name    string `json:"name"`
	Path    string `json:"path"`
	Version string `json:"version"`
	// Source is how it was found: given, path or downloaded.
	Source string `json:"source"`
	SHA256 string `json:"sha256,omitempty"`
	size   int64
}

// Resolve finds the binary as the options ask, downloading and verifying
// it when that is the way.
func Resolve(ctx context.Context, o Options) (*Binary, error) {
	switch o.Source {
	case "", SourceAuto, SourceExternal, SourceDownloaded:
	default:
		return nil, fmt.Errorf("--%s-source %q: want auto, external or downloaded", o.Name, o.Source)
	}
	if o.Bin != "" {
		p, err := filepath.Abs(o.Bin)
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("--%s-bin %s: not an executable file", o.Name, o.Bin)
		}
		return &Binary{Name: o.Name, Path: p, Version: version(ctx, p), Source: "given"}, nil
	}
	if o.Source == SourceExternal || (o.Source != SourceDownloaded && o.PreferPath) {
		if p, err := exec.LookPath(o.Name); err == nil {
			return &Binary{Name: o.Name, Path: p, Version: version(ctx, p), Source: "path"}, nil
		} else if o.Source == SourceExternal {
			return nil, fmt.Errorf("--%s-source external: no %s on PATH", o.Name, o.Name)
		}
	}
	return download(ctx, o)
}

// version asks a binary for its version, briefly.
func version(ctx context.Context, path string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// download returns the pinned binary from the cache, fetching and checking
// it first if needed. A cached file is checked by Verify, which the caller
// runs before every start, so it is hashed once per run, not twice.
func download(ctx context.Context, o Options) (*Binary, error) {
	m := o.Manifest
	if m == nil {
		var err error
		if m, err = Builtin(); err != nil {
			return nil, err
		}
	}
	sc, err := m.Find(o.Name)
	if err != nil {
		return nil, err
	}
	a, ok := sc.Platforms[Platform()]
	if !ok {
		return nil, fmt.Errorf("no %s %s build for %s in the sidecar manifest; give one with --%s-bin", o.Name, sc.Version, Platform(), o.Name)
	}
	dir := filepath.Join(o.Dir, o.Name, sc.Version)
	bin := filepath.Join(dir, o.Name)
	b := &Binary{Name: o.Name, Path: bin, Version: sc.Version, Source: "downloaded", SHA256: a.BinarySHA256, size: a.BinarySize}
	if _, err := os.Stat(bin); err == nil {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create sidecar dir: %w", err)
	}
	asset := filepath.Join(dir, a.Asset+".part")
	defer os.Remove(asset)
	if err := fetch(ctx, o, a.URL, asset); err != nil {
		return nil, err
	}
	if err := verify(asset, a.SHA256, a.Size); err != nil {
		return nil, fmt.Errorf("downloaded %s: %w", a.Asset, err)
	}
	tmp := bin + ".part"
	defer os.Remove(tmp)
	if a.Path == "" {
		if err := os.Rename(asset, tmp); err != nil {
			return nil, err
		}
	} else if err := extract(asset, a.Path, tmp); err != nil {
		return nil, fmt.Errorf("unpack %s from %s: %w", a.Path, a.Asset, err)
	}
	if err := verify(tmp, a.BinarySHA256, a.BinarySize); err != nil {
		return nil, fmt.Errorf("%s in %s: %w", a.Path, a.Asset, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return nil, fmt.Errorf("install %s: %w", bin, err)
	}
	return b, nil
}

// ErrMismatch is a file whose hash or size is not the manifest's.
var ErrMismatch = errors.New("does not match the sidecar manifest")

// verify checks a file's size and SHA-256, deleting it when they are wrong.
func verify(path, want string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		return fmt.Errorf("hash %s: %w", path, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != want || (size > 0 && n != size) {
		_ = os.Remove(path)
		return fmt.Errorf("%s %w (sha256 %s, %d bytes; want %s, %d bytes); it was deleted", path, ErrMismatch, got, n, want, size)
	}
	return nil
}

// fetch downloads url to path, reporting progress now and then.
func fetch(ctx context.Context, o Options, url, path string) error {
	hc := o.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("download %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := io.Writer(f)
	if o.Progress != nil {
		w = &progressWriter{w: f, total: resp.ContentLength, report: o.Progress, name: filepath.Base(url)}
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("download %s: %w", url, err)
	}
	return f.Close()
}

type progressWriter struct {
	w      io.Writer
	n      int64
	total  int64
	name   string
	last   time.Time
	report func(string)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	if time.Since(p.last) > time.Second || (p.total > 0 && p.n == p.total) {
		p.last = time.Now()
		if p.total > 0 {
			p.report(fmt.Sprintf("downloading %s: %d of %d MB", p.name, p.n>>20, p.total>>20))
		} else {
			p.report(fmt.Sprintf("downloading %s: %d MB", p.name, p.n>>20))
		}
	}
	return n, err
}

// extract copies one file out of a gzipped tarball.
func extract(tgz, name, to string) error {
	f, err := os.Open(tgz)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return fmt.Errorf("no %s in the archive", name)
		}
		if err != nil {
			return err
		}
		if filepath.Clean(h.Name) != filepath.Clean(name) || h.Typeflag != tar.TypeReg {
			continue
		}
		out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o700)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, tr); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
}

// Verify checks a downloaded binary's size and hash against the manifest,
// deleting it on a mismatch; run it before every start (a cached file can
// change between runs). Binaries the user gave are the user's to trust.
func (b *Binary) Verify() error {
	if b.SHA256 == "" {
		return nil
	}
	return verify(b.Path, b.SHA256, b.size)
}
