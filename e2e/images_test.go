package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/wire"
)

// testRegistry is go-containerregistry's registry on loopback, behind the
// token flow Docker Hub uses: every request needs a bearer token from
// /token; an anonymous token reads any repository but private/*, a token
// got with the right user and password reads everything.
type testRegistry struct {
	host string
	// basic: the registry asks for Basic credentials on every request
	// (no token service), as some private registries do.
	basic       bool
	authedPulls atomic.Int32
	corrupt     atomic.Bool // serve altered blobs for corrupt/*
}

const regUser, regPass = "ada", "s3cret-registry-pass"

func startRegistry(t *testing.T) *testRegistry { return startRegistryWith(t, false) }

func startRegistryWith(t *testing.T, basic bool) *testRegistry {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &testRegistry{host: ln.Addr().String(), basic: basic}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	mux := http.NewServeMux()
	mux.HandleFunc("/token", func(w http.ResponseWriter, req *http.Request) {
		tok := "anon"
		if u, p, ok := req.BasicAuth(); ok {
			if u != regUser || p != regPass {
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`, http.StatusUnauthorized)
				return
			}
			tok = "authed"
		}
		fmt.Fprintf(w, `{"token":%q,"access_token":%q}`, tok, tok)
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, req *http.Request) {
		if r.basic {
			if u, p, ok := req.BasicAuth(); !ok || u != regUser || p != regPass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
				return
			}
			if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
				r.authedPulls.Add(1)
			}
			reg.ServeHTTP(w, req)
			return
		}
		tok := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
		private := strings.HasPrefix(req.URL.Path, "/v2/private/")
		if tok != "authed" && (tok != "anon" || private) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, r.host))
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		if private && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") {
			r.authedPulls.Add(1)
		}
		if r.corrupt.Load() && strings.HasPrefix(req.URL.Path, "/v2/corrupt/") && strings.Contains(req.URL.Path, "/blobs/") && req.Method == http.MethodGet {
			rec := &capture{header: http.Header{}}
			reg.ServeHTTP(rec, req)
			body := rec.body.Bytes()
			if len(body) > 100 {
				body[len(body)/2] ^= 0xff // one byte flipped, same size
			}
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			w.Write(body)
			return
		}
		reg.ServeHTTP(w, req)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

type capture struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *capture) Header() http.Header { return c.header }
func (c *capture) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = 200
	}
	return c.body.Write(b)
}
func (c *capture) WriteHeader(s int) { c.status = s }

func (r *testRegistry) push(t *testing.T, repo string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: regUser, Password: regPass})); err != nil {
		t.Fatalf("push %s: %v", repo, err)
	}
	d, _ := img.Digest()
	return d.String()
}

// layer is a layer made from tar entries.
type entry struct {
	name, body, link string
	flag             byte
	mode             int64
}

func layerOf(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if e.mode == 0 {
			e.mode = 0o644
		}
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: e.flag, Mode: e.mode, Size: int64(len(e.body)), Linkname: e.link}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(e.body))
	}
	tw.Close()
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// busyboxLayer is the busybox image warren built, as one layer.
func busyboxLayer(t *testing.T) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	if err := dirtar.Pack(&buf, filepath.Join(imageDir, "busybox", "rootfs")); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func imageOf(t *testing.T, cfg v1.Config, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", "amd64", cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// imageServer is a warren with its own image directory (busybox linked
// from the shared cache), so these tests' images and deletes stay theirs.
func imageServer(t *testing.T, imgDir string) *server {
	t.Helper()
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(imageDir, "busybox"), filepath.Join(imgDir, "busybox")); err != nil {
		t.Fatal(err)
	}
	return startServer(t, "", "WARREN_IMAGE_DIR="+imgDir)
}

func pullErr(t *testing.T, s *server, req wire.ImagePullRequest) (int, string, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	status, resp := s.raw(t, "POST", "/v1/images", s.key, string(body))
	e, _ := resp["error"].(map[string]any)
	msg, _ := e["message"].(string)
	fld, _ := e["field"].(string)
	return status, fld, msg
}

func TestImagePull(t *testing.T) {
	reg := startRegistry(t)
	imgDir := filepath.Join(t.TempDir(), "images")
	s := imageServer(t, imgDir)
	ctx := context.Background()

	app := layerOf(t, entry{name: "srv/", flag: tar.TypeDir, mode: 0o777}, entry{name: "srv/app/", flag: tar.TypeDir, mode: 0o777},
		entry{name: "srv/app/hello.txt", body: "from the app layer\n", flag: tar.TypeReg})
	cfg := v1.Config{Env: []string{"GREETING=from-image", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, WorkingDir: "/srv/app", User: "nobody", Cmd: []string{"sh"}}
	bb := imageOf(t, cfg, busyboxLayer(t), app)
	digest := reg.push(t, "team/bb:1", bb)

	// By tag, anonymously, with progress.
	var steps []string
	img, err := s.c.PullImage(ctx, &wire.ImagePullRequest{Name: "bb", Ref: reg.host + "/team/bb:1"}, func(ev client.ImageEvent) { steps = append(steps, ev.Step) })
	if err != nil {
		t.Fatal(err)
	}
	if img.State != "ready" || img.Kind != "registry" || img.Digest != digest || img.Config == nil || img.Config.User != "nobody" {
		t.Fatalf("pulled: %+v", img)
	}
	if !strings.Contains(strings.Join(steps, " "), "layer 2/2") {
		t.Fatalf("no layer progress: %v", steps)
	}
	// The image's env, working directory and user apply; a request's own win.
	for _, rt := range runtimes {
		sb := s.create(t, client.CreateRequest{Image: "bb", Runtime: rt, Env: map[string]string{"EXTRA": "sandbox"}})
		r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "echo $GREETING $EXTRA; pwd; id -u; cat hello.txt"})
		if r.Stdout != "from-image sandbox\n/srv/app\n65534\nfrom the app layer\n" {
			t.Fatalf("%s: a sandbox of the pulled image: %+v", rt, r)
		}
		r = s.exec(t, sb.ID, client.ExecRequest{Cmd: "id -u; pwd", User: "root", Cwd: "/tmp", Env: map[string]string{"GREETING": "x"}})
		if r.Stdout != "0\n/tmp\n" {
			t.Fatalf("%s: the request's own user and cwd: %+v", rt, r)
		}
	}
	// By digest, the same blobs: nothing fetched again.
	steps = nil
	img2, err := s.c.PullImage(ctx, &wire.ImagePullRequest{Name: "bb-pinned", Ref: reg.host + "/team/bb@" + digest}, func(ev client.ImageEvent) { steps = append(steps, ev.Message) })
	if err != nil || img2.Digest != digest {
		t.Fatalf("by digest: %+v %v", img2, err)
	}
	if !strings.Contains(strings.Join(steps, "\n"), "already here") {
		t.Fatalf("the blobs were fetched again: %v", steps)
	}

	// A multi-arch index resolves to this node's platform.
	arm := imageOf(t, v1.Config{}, layerOf(t, entry{name: "arch", body: "arm64", flag: tar.TypeReg}))
	amd := imageOf(t, v1.Config{}, busyboxLayer(t), layerOf(t, entry{name: "arch", body: "amd64", flag: tar.TypeReg}))
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
	iref, _ := name.ParseReference(reg.host + "/multi:1")
	if err := remote.WriteIndex(iref, idx, remote.WithAuth(&authn.Basic{Username: regUser, Password: regPass})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.PullImage(ctx, &wire.ImagePullRequest{Name: "multi", Ref: reg.host + "/multi:1"}, nil); err != nil {
		t.Fatal(err)
	}
	sb := s.create(t, client.CreateRequest{Image: "multi", Runtime: "runc"})
	if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "cat /arch"}); r.Stdout != "amd64" {
		t.Fatalf("index resolved to %q", r.Stdout)
	}

	// Layers: whiteouts, opaque directories, links, setuid bits.
	lower := layerOf(t, entry{name: "data/", flag: tar.TypeDir, mode: 0o755}, entry{name: "data/gone", body: "x", flag: tar.TypeReg},
		entry{name: "data/opq/", flag: tar.TypeDir, mode: 0o755}, entry{name: "data/opq/old", body: "old", flag: tar.TypeReg},
		entry{name: "data/file", body: "linked", flag: tar.TypeReg})
	upper := layerOf(t, entry{name: "data/.wh.gone", flag: tar.TypeReg}, entry{name: "data/opq/.wh..wh..opq", flag: tar.TypeReg},
		entry{name: "data/opq/new", body: "new", flag: tar.TypeReg}, entry{name: "data/link", link: "/data/file", flag: tar.TypeSymlink},
		entry{name: "data/hard", link: "data/file", flag: tar.TypeLink}, entry{name: "data/suid", body: "#!/bin/sh\n", flag: tar.TypeReg, mode: 0o4755})
	reg.push(t, "layers:1", imageOf(t, v1.Config{}, busyboxLayer(t), lower, upper))
	if _, err := s.c.PullImage(ctx, &wire.ImagePullRequest{Name: "layers", Ref: reg.host + "/layers:1"}, nil); err != nil {
		t.Fatal(err)
	}
	sb = s.create(t, client.CreateRequest{Image: "layers", Runtime: "gvisor"})
	r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "ls /data /data/opq | tr '\\n' ' '; cat /data/link /data/hard; stat -c %A /data/suid; stat -c %h /data/file"})
	if r.Stdout != "/data: file hard link opq suid  /data/opq: new linkedlinked-rwsr-xr-x\n2\n" {
		t.Fatalf("layers applied wrong: %q %q", r.Stdout, r.Stderr)
	}

	// A private repository: refused without credentials (field auth),
	// with wrong ones, and pulled with the right ones, per request.
	reg.push(t, "private/bb:1", bb)
	if status, fld, _ := pullErr(t, s, wire.ImagePullRequest{Name: "priv", Ref: reg.host + "/private/bb:1"}); status != 400 || fld != "auth" {
		t.Fatalf("private without credentials: %d %s", status, fld)
	}
	status, fld, msg := pullErr(t, s, wire.ImagePullRequest{Name: "priv", Ref: reg.host + "/private/bb:1", Auth: &wire.RegistryAuth{Username: regUser, Password: "wrong-pass"}})
	if status != 400 || fld != "auth" || strings.Contains(msg, "wrong-pass") {
		t.Fatalf("wrong credentials: %d %s %q", status, fld, msg)
	}
	if _, err := s.c.PullImage(ctx, &wire.ImagePullRequest{Name: "priv", Ref: reg.host + "/private/bb:1", Auth: &wire.RegistryAuth{Username: regUser, Password: regPass}}, nil); err != nil {
		t.Fatal(err)
	}
	if reg.authedPulls.Load() == 0 {
		t.Fatal("the private pull did not go through the token flow")
	}
	out, errOut, code := s.cli(t, regPass+"\n", "image", "pull", reg.host+"/private/bb:1", "--name", "cli-priv", "--username", regUser, "--password-stdin")
	if code != 0 || !strings.Contains(out, "pulled cli-priv sha256:") || !strings.Contains(errOut, "layer 2/2") {
		t.Fatalf("warren image pull: %d %s %s", code, out, errOut)
	}
	// A registry that asks for Basic credentials on every request.
	breg := startRegistryWith(t, true)
	breg.push(t, "team/bb:1", bb)
	if status, fld, _ := pullErr(t, s, wire.ImagePullRequest{Name: "basic", Ref: breg.host + "/team/bb:1"}); status != 400 || fld != "auth" {
		t.Fatalf("basic registry without credentials: %d %s", status, fld)
	}
	if _, err := s.c.PullImage(ctx, &wire.ImagePullRequest{Name: "basic", Ref: breg.host + "/team/bb:1", Auth: &wire.RegistryAuth{Username: regUser, Password: regPass}}, nil); err != nil || breg.authedPulls.Load() == 0 {
		t.Fatalf("basic registry with credentials: %v", err)
	}
	// The credentials are kept nowhere: not in the data dir, images, or log.
	assertNowhere(t, regPass, s.dataDir, imgDir)
	if strings.Contains(s.logs.String(), regPass) || strings.Contains(s.logs.String(), base64.StdEncoding.EncodeToString([]byte(regUser+":"+regPass))) {
		t.Fatal("the registry password is in warren's log")
	}

	// Bad input: an unknown tag or repository names the ref, a bad ref,
	// a digest mismatch; none leaves anything behind.
	for _, c := range []struct{ ref, field string }{
		{reg.host + "/team/bb:nope", "ref"}, {reg.host + "/nothing/here:1", "ref"}, {"UPPER CASE::", "ref"},
	} {
		if status, fld, msg := pullErr(t, s, wire.ImagePullRequest{Name: "bad", Ref: c.ref}); status != 400 || fld != c.field {
			t.Errorf("%s: %d %s %s", c.ref, status, fld, msg)
		}
	}
	if status, fld, _ := pullErr(t, s, wire.ImagePullRequest{Name: "Bad Name", Ref: reg.host + "/team/bb:1"}); status != 400 || fld != "name" {
		t.Errorf("a bad name: %d %s", status, fld)
	}
	big := make([]byte, 1<<20)
	rand.Read(big)
	reg.push(t, "corrupt/x:1", imageOf(t, v1.Config{}, layerOf(t, entry{name: "big", body: string(big), flag: tar.TypeReg})))
	reg.corrupt.Store(true)
	status, fld, msg = pullErr(t, s, wire.ImagePullRequest{Name: "corrupt", Ref: reg.host + "/corrupt/x:1"})
	reg.corrupt.Store(false)
	if status != 400 || fld != "ref" || !strings.Contains(msg, "verifying") {
		t.Fatalf("a corrupted blob: %d %s %s", status, fld, msg)
	}
	// Hostile layers: a name climbing out, a write through a symlink to
	// /, a device node; nothing lands outside the image directory.
	canary := filepath.Join(filepath.Dir(imgDir), "escaped")
	for i, l := range []v1.Layer{
		layerOf(t, entry{name: "../../escaped", body: "x", flag: tar.TypeReg}),
		layerOf(t, entry{name: "up", link: "/", flag: tar.TypeSymlink}, entry{name: "up/" + strings.TrimPrefix(canary, "/"), body: "x", flag: tar.TypeReg}),
		layerOf(t, entry{name: "rel", link: "../../../..", flag: tar.TypeSymlink}, entry{name: "rel/tmp/escaped", body: "x", flag: tar.TypeReg}),
	} {
		reg.push(t, fmt.Sprintf("evil:%d", i), imageOf(t, v1.Config{}, busyboxLayer(t), l))
		if status, fld, msg := pullErr(t, s, wire.ImagePullRequest{Name: fmt.Sprintf("evil%d", i), Ref: fmt.Sprintf("%s/evil:%d", reg.host, i)}); status != 400 || fld != "ref" {
			t.Errorf("hostile layer %d: %d %s %s", i, status, fld, msg)
		}
	}
	if _, err := os.Stat(canary); err == nil {
		t.Fatal("a layer wrote outside the image directory")
	}
	if _, err := os.Stat("/tmp/escaped"); err == nil {
		t.Fatal("a layer wrote to the host's /tmp")
	}
	leftovers(t, imgDir)
	imgs, _ := s.c.Images(ctx)
	for _, i := range imgs {
		if strings.HasPrefix(i.Name, "evil") || i.Name == "bad" || i.Name == "corrupt" {
			t.Fatalf("a failed pull left image %s", i.Name)
		}
	}
	// From a docker config.json instead (docker login's file).
	cfgDir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(regUser + ":" + regPass))
	os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(`{"auths":{"`+reg.host+`":{"auth":"`+auth+`"}}}`), 0o600)
	s.stop() // one node per host
	s2 := startServer(t, "", "WARREN_IMAGE_DIR="+filepath.Join(t.TempDir(), "img2"), "WARREN_DOCKER_CONFIG="+cfgDir)
	if _, err := s2.c.PullImage(ctx, &wire.ImagePullRequest{Name: "priv", Ref: reg.host + "/private/bb:1"}, nil); err != nil {
		t.Fatalf("with the node's docker config: %v", err)
	}
	s2.stop()

	// Warm pools take any image: a pool of the pulled image serves
	// creates, and the image cannot be deleted from under it.
	s3 := startServer(t, "", "WARREN_IMAGE_DIR="+imgDir, "WARREN_POOL=bb:1")
	eventually(t, time.Minute, "the pool of bb ready", func() error {
		info, err := s3.c.Info(ctx)
		if err != nil || len(info.Pools) != 1 || info.Pools[0].Ready != 1 {
			return fmt.Errorf("pools %+v %v", info, err)
		}
		return nil
	})
	pooled := s3.create(t, client.CreateRequest{Image: "bb"})
	if pooled.BootPath != "hot_pool" {
		t.Fatalf("a create of bb did not come from its pool: %s", pooled.BootPath)
	}
	if r := s3.exec(t, pooled.ID, client.ExecRequest{Cmd: "echo $GREETING; id -u"}); r.Stdout != "from-image\n65534\n" {
		t.Fatalf("a pooled sandbox of bb: %+v", r)
	}
	if status, body := s3.raw(t, "DELETE", "/v1/images/bb", s3.key, ""); status != 409 || !strings.Contains(fmt.Sprint(body["error"]), "the warm pool of bb") {
		t.Fatalf("deleting a pool's image: %d %v", status, body)
	}
}

// leftovers fails if an image directory holds half-made work.
func leftovers(t *testing.T, imgDir string) {
	t.Helper()
	entries, _ := os.ReadDir(imgDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".build-") || strings.HasPrefix(e.Name(), ".import-") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	parts, _ := filepath.Glob(filepath.Join(imgDir, ".blobs", "*", ".part-*"))
	if len(parts) > 0 {
		t.Errorf("partial blobs left: %v", parts)
	}
}

// assertNowhere fails if s is in any file under the dirs.
func assertNowhere(t *testing.T, s string, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err != nil || !fi.Mode().IsRegular() || fi.Size() > 8<<20 || strings.Contains(p, "/rootfs/") {
				return nil
			}
			if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds the secret", p)
			}
			return nil
		})
	}
}

func TestImageImportDeletePrune(t *testing.T) {
	imgDir := filepath.Join(t.TempDir(), "images")
	s := imageServer(t, imgDir)
	ctx := context.Background()
	img := imageOf(t, v1.Config{Env: []string{"FROM_IMPORT=yes"}}, busyboxLayer(t), layerOf(t, entry{name: "marker", body: "imported\n", flag: tar.TypeReg}))

	// docker save's format.
	saved := filepath.Join(t.TempDir(), "saved.tar")
	tag, _ := name.NewTag("example.com/app:1")
	if err := tarball.WriteToFile(saved, tag, img); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(saved)
	got, err := s.c.ImportImage(ctx, "saved", f, nil)
	f.Close()
	if err != nil || got.Kind != "import" || got.State != "ready" {
		t.Fatalf("import docker save: %+v %v", got, err)
	}
	// An OCI layout, as a tarball.
	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"})); err != nil {
		t.Fatal(err)
	}
	var ociTar bytes.Buffer
	if err := dirtar.Pack(&ociTar, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.ImportImage(ctx, "oci", bytes.NewReader(ociTar.Bytes()), nil); err != nil {
		t.Fatalf("import OCI layout: %v", err)
	}
	for _, n := range []string{"saved", "oci"} {
		for _, rt := range runtimes {
			sb := s.create(t, client.CreateRequest{Image: n, Runtime: rt})
			if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "cat /marker; echo $FROM_IMPORT"}); r.Stdout != "imported\nyes\n" {
				t.Fatalf("%s on %s: %+v", n, rt, r)
			}
			if n == "oci" && rt == "gvisor" {
				// In use: delete and replace are refused, naming the sandbox.
				status, body := s.raw(t, "DELETE", "/v1/images/oci", s.key, "")
				if msg := fmt.Sprint(body["error"]); status != 409 || !strings.Contains(msg, sb.ID) {
					t.Fatalf("deleting an image in use: %d %v", status, body)
				}
				if _, err := s.c.ImportImage(ctx, "oci", bytes.NewReader(ociTar.Bytes()), nil); !client.IsConflict(err) {
					t.Fatalf("replacing an image in use: %v", err)
				}
			}
			if _, err := s.c.DeleteSandbox(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Not images.
	for _, bad := range [][]byte{[]byte("plain text"), tarOf(t, entry{name: "hello.txt", body: "hi", flag: tar.TypeReg})} {
		status, body := s.raw(t, "POST", "/v1/images/import?name=junk", s.key, string(bad))
		if e, _ := body["error"].(map[string]any); status != 400 || e["field"] != "file" {
			t.Fatalf("importing a non-image: %d %v", status, body)
		}
	}
	leftovers(t, imgDir)
	// The same from the CLI.
	if out, errOut, code := s.cli(t, "", "image", "import", saved, "--name", "cli-imp"); code != 0 || !strings.Contains(out, "imported cli-imp sha256:") {
		t.Fatalf("warren image import: %d %s %s", code, out, errOut)
	}
	if out, errOut, code := s.cli(t, "", "image", "import", dir, "--name", "cli-oci", "--json"); code != 0 || !strings.Contains(out, `"kind": "import"`) {
		t.Fatalf("warren image import of an OCI layout directory: %d %s %s", code, out, errOut)
	}
	if out, _, code := s.cli(t, "", "image", "ls"); code != 0 || !strings.Contains(out, "cli-imp") || !strings.Contains(out, "import") {
		t.Fatalf("warren image ls: %s", out)
	}
	for _, n := range []string{"cli-imp", "cli-oci"} {
		if out, errOut, code := s.cli(t, "", "image", "rm", n, "--json"); code != 0 || !strings.Contains(out, `"deleted"`) {
			t.Fatalf("warren image rm: %d %s %s", code, out, errOut)
		}
	}

	// Delete frees the image; prune frees the blobs no image uses.
	if err := s.c.DeleteImage(ctx, "saved"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Image(ctx, "saved"); !client.IsNotFound(err) {
		t.Fatalf("a deleted image: %v", err)
	}
	if err := s.c.DeleteImage(ctx, "oci"); err != nil {
		t.Fatal(err)
	}
	blobs, _ := filepath.Glob(filepath.Join(imgDir, ".blobs", "sha256", "*"))
	if len(blobs) != 0 {
		t.Fatalf("blobs no image uses are still there: %d", len(blobs))
	}
	if res, err := s.c.PruneImages(ctx); err != nil || res.RemovedBlobs != 0 {
		t.Fatalf("prune after deletes: %+v %v", res, err)
	}
	if out, errOut, code := s.cli(t, "", "image", "prune"); code != 0 || !strings.Contains(out, "removed 0 blobs") {
		t.Fatalf("warren image prune: %d %s %s", code, out, errOut)
	}
}

func tarOf(t *testing.T, entries ...entry) []byte {
	t.Helper()
	l := layerOf(t, entries...)
	rc, _ := l.Uncompressed()
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return b
}

// TestImagePullDiskFull: a pull that fills the disk fails with 507 and
// leaves nothing behind.
func TestImagePullDiskFull(t *testing.T) {
	reg := startRegistry(t)
	imgDir := filepath.Join(t.TempDir(), "images")
	os.MkdirAll(imgDir, 0o755)
	if err := syscall.Mount("tmpfs", imgDir, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(imgDir, syscall.MNT_DETACH) })
	s := imageServer(t, imgDir)
	big := make([]byte, 12<<20)
	rand.Read(big)
	reg.push(t, "big:1", imageOf(t, v1.Config{}, layerOf(t, entry{name: "big", body: string(big), flag: tar.TypeReg})))
	body, _ := json.Marshal(wire.ImagePullRequest{Name: "big", Ref: reg.host + "/big:1"})
	status, resp := s.raw(t, "POST", "/v1/images", s.key, string(body))
	if e, _ := resp["error"].(map[string]any); status != 507 || e["code"] != "insufficient_storage" {
		t.Fatalf("pull onto a full disk: %d %v", status, resp)
	}
	leftovers(t, imgDir)
	var st syscall.Statfs_t
	syscall.Statfs(imgDir, &st)
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 1<<20 {
		t.Fatalf("%d bytes still used on the image disk after the failed pull", used)
	}
}

// TestImageSnapshot: set a sandbox up, snapshot it, and create from the
// snapshot on both runtimes: files, owners, modes and env carry over, and
// the source runs on.
func TestImageSnapshot(t *testing.T) {
	imgDir := filepath.Join(t.TempDir(), "images")
	s := imageServer(t, imgDir)
	ctx := context.Background()
	for _, rt := range runtimes {
		src := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt, Env: map[string]string{"TEMPLATE": "yes"}})
		setup := "mkdir -p /opt/tool && echo v1 > /opt/tool/version && chown 1000:1000 /opt/tool/version && " +
			"cp /bin/busybox /opt/tool/suid && chmod 4755 /opt/tool/suid && rm /bin/ls && ln -s /opt/tool/version /opt/link"
		if r := s.exec(t, src.ID, client.ExecRequest{Cmd: setup}); r.ExitCode != 0 {
			t.Fatalf("%s setup: %+v", rt, r)
		}
		// Something writes while the snapshot is taken.
		s.exec(t, src.ID, client.ExecRequest{Cmd: "(while :; do date > /tmp/busy; done) >/dev/null 2>&1 &"})
		name := "snap-" + rt
		out, errOut, code := s.cli(t, "", "sandbox", "snapshot", src.ID, name)
		if code != 0 || !strings.Contains(out, "snapshot "+name) {
			t.Fatalf("%s: warren sandbox snapshot: %d %s %s", rt, code, out, errOut)
		}
		img, err := s.c.Image(ctx, name)
		if err != nil || img.Kind != "snapshot" || !strings.Contains(img.Source, src.ID) || img.Config == nil || !strings.Contains(strings.Join(img.Config.Env, " "), "TEMPLATE=yes") {
			t.Fatalf("%s: the snapshot: %+v %v", rt, img, err)
		}
		if r := s.exec(t, src.ID, client.ExecRequest{Cmd: "cat /opt/tool/version"}); r.Stdout != "v1\n" {
			t.Fatalf("%s: the source after its snapshot: %+v", rt, r)
		}
		// In use by a sandbox of it: a second snapshot under its name is refused.
		for _, to := range runtimes {
			sb := s.create(t, client.CreateRequest{Image: name, Runtime: to})
			r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "cat /opt/link; stat -c '%u:%g %A' /opt/tool/version /opt/tool/suid; echo $TEMPLATE; ls /bin/ls 2>&1 | grep -c 'No such'"})
			want := "v1\n1000:1000 -rw-r--r--\n0:0 -rwsr-xr-x\nyes\n1\n"
			if r.Stdout != want {
				t.Fatalf("snapshot of %s, run on %s:\n got %q\nwant %q (%s)", rt, to, r.Stdout, want, r.Stderr)
			}
			if to == "runc" {
				if _, err := s.c.Snapshot(ctx, src.ID, name); !client.IsConflict(err) {
					t.Fatalf("a snapshot over an image in use: %v", err)
				}
			}
			s.c.DeleteSandbox(ctx, sb.ID)
		}
	}
	if _, err := s.c.Snapshot(ctx, "sbx_aaaaaaaaaaaaaaaaaaaa", "x"); !client.IsNotFound(err) {
		t.Fatalf("snapshot of no sandbox: %v", err)
	}
	sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "runc"})
	for _, bad := range []string{"", "Bad Name", "busybox"} {
		if _, err := s.c.Snapshot(ctx, sb.ID, bad); !client.IsBadRequest(err) || client.Field(err) != "name" {
			t.Errorf("snapshot named %q: %v", bad, err)
		}
	}
	leftovers(t, imgDir)
}

// TestDockerfileBuild builds from a Dockerfile through the CLI and the API:
// RUN in a gVisor sandbox, COPY, ADD, ENV, WORKDIR, USER, ARG; sandboxes of
// the image on both runtimes; an unchanged rebuild entirely from cache;
// failures that name their line and leave nothing.
func TestDockerfileBuild(t *testing.T) {
	reg := startRegistry(t)
	imgDir := filepath.Join(t.TempDir(), "images")
	s := imageServer(t, imgDir)
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("app/hello.sh", "#!/bin/sh\necho hello from the app\n", 0o755)
	write("conf.txt", "setting=1\n", 0o644)
	var tgz bytes.Buffer
	gz := gzipWriter(&tgz)
	tw := tar.NewWriter(gz)
	tw.WriteHeader(&tar.Header{Name: "inner.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 6})
	tw.Write([]byte("inner\n"))
	tw.Close()
	gz.Close()
	write("data.tar.gz", tgz.String(), 0o644)
	write("Dockerfile", `# a test image
ARG GREETING=hello
FROM busybox
ENV APP_HOME=/opt/app GREETING2="${GREETING} world"
WORKDIR $APP_HOME
COPY app/ ./
COPY --chown=1000:1000 conf.txt /etc/app.conf
ADD data.tar.gz /opt/data/
RUN echo "built with $GREETING" > built.txt && echo app:x:1000:1000::/opt/app:/bin/sh >> /etc/passwd && chown 1000 built.txt && \
    (dmesg 2>/dev/null | grep -q gVisor && echo gvisor || echo other) > /built-under && echo run-output-line
USER app
CMD ["sh"]
`, 0o644)
	out, errOut, code := s.cli(t, "", "image", "build", "--name", "app", dir)
	if code != 0 || !strings.Contains(out, "built app") {
		t.Fatalf("warren image build: %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"step 8/10: RUN", "step 8/10: run-output-line", "0 of 4 file steps cached"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the build's progress lacks %q:\n%s", want, errOut)
		}
	}
	img, err := s.c.Image(ctx, "app")
	if err != nil || img.Kind != "dockerfile" || img.Config.User != "app" || img.Config.WorkingDir != "/opt/app" || strings.Join(img.Config.Cmd, " ") != "sh" {
		t.Fatalf("the built image: %+v %v", img, err)
	}
	for _, rt := range runtimes {
		sb := s.create(t, client.CreateRequest{Image: "app", Runtime: rt})
		r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "pwd; id -un; cat built.txt /built-under; echo $GREETING2; ./hello.sh; stat -c %u /etc/app.conf; cat /opt/data/inner.txt"})
		want := "/opt/app\napp\nbuilt with hello\ngvisor\nhello world\nhello from the app\n1000\ninner\n"
		if r.Stdout != want {
			t.Fatalf("a %s sandbox of the built image:\n got %q\nwant %q\n%s", rt, r.Stdout, want, r.Stderr)
		}
		s.c.DeleteSandbox(ctx, sb.ID)
	}

	// Unchanged: every file step from cache, nothing run.
	var events []string
	if _, err := s.c.BuildDir(ctx, client.BuildOptions{Name: "app"}, dir, func(ev client.ImageEvent) { events = append(events, ev.Step+": "+ev.Message) }); err != nil {
		t.Fatal(err)
	}
	all := strings.Join(events, "\n")
	if strings.Count(all, ": CACHED") != 4 || strings.Contains(all, ": run-output-line") || !strings.Contains(all, "4 of 4 file steps cached") {
		t.Fatalf("an unchanged rebuild ran something:\n%s", all)
	}
	// One input changed: the steps before it stay cached.
	write("conf.txt", "setting=2\n", 0o644)
	events = nil
	if _, err := s.c.BuildDir(ctx, client.BuildOptions{Name: "app"}, dir, func(ev client.ImageEvent) { events = append(events, ev.Step+": "+ev.Message) }); err != nil {
		t.Fatal(err)
	}
	if all := strings.Join(events, "\n"); !strings.Contains(all, "1 of 4 file steps cached") || !strings.Contains(all, "step 8/10: run-output-line") {
		t.Fatalf("a rebuild after conf.txt changed:\n%s", all)
	}
	// A build argument changes what RUN does.
	if _, err := s.c.BuildDir(ctx, client.BuildOptions{Name: "app-hi", Args: map[string]string{"GREETING": "hi"}}, dir, nil); err != nil {
		t.Fatal(err)
	}
	sb := s.create(t, client.CreateRequest{Image: "app-hi", Runtime: "runc"})
	if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "cat built.txt"}); r.Stdout != "built with hi\n" {
		t.Fatalf("--build-arg: %+v", r)
	}
	s.c.DeleteSandbox(ctx, sb.ID)

	// SHELL, ENTRYPOINT and COPY --chmod.
	write("Dockerfile.more", "FROM busybox\nSHELL [\"/bin/sh\", \"-xc\"]\nCOPY --chmod=0700 conf.txt /secret.conf\nRUN echo traced\nENTRYPOINT [\"/bin/sh\"]\n", 0o644)
	events = nil
	more, err := s.c.BuildDir(ctx, client.BuildOptions{Name: "more", Dockerfile: "Dockerfile.more"}, dir, func(ev client.ImageEvent) { events = append(events, ev.Message) })
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(events, "+ echo traced") || strings.Join(more.Config.Entrypoint, " ") != "/bin/sh" {
		t.Fatalf("SHELL or ENTRYPOINT: %v %+v", events, more.Config)
	}
	sb = s.create(t, client.CreateRequest{Image: "more", Runtime: "runc"})
	if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "stat -c %a /secret.conf"}); r.Stdout != "700\n" {
		t.Fatalf("COPY --chmod: %+v", r)
	}
	s.c.DeleteSandbox(ctx, sb.ID)

	// FROM a registry ref.
	reg.push(t, "team/bb:1", imageOf(t, v1.Config{Env: []string{"FROM_REGISTRY=1"}}, busyboxLayer(t)))
	write("Dockerfile.reg", "FROM "+reg.host+"/team/bb:1\nRUN echo $FROM_REGISTRY > /reg.txt\n", 0o644)
	if _, err := s.c.BuildDir(ctx, client.BuildOptions{Name: "fromreg", Dockerfile: "Dockerfile.reg"}, dir, nil); err != nil {
		t.Fatal(err)
	}
	sb = s.create(t, client.CreateRequest{Image: "fromreg", Runtime: "gvisor"})
	if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "cat /reg.txt"}); r.Stdout != "1\n" {
		t.Fatalf("FROM a registry ref: %+v", r)
	}
	s.c.DeleteSandbox(ctx, sb.ID)

	// Failures name the line and leave no image and no build sandbox.
	for df, want := range map[string][]string{
		"FROM busybox\nRUN echo out-before-fail; exit 3\n": {"line 2", "exited 3", "out-before-fail"},
		"FROM busybox\nRUN true\nFETCH x\n":                {"line 3", "unknown instruction FETCH"},
		"FROM busybox\nCOPY missing.txt /x\n":              {"line 2", "missing.txt: not in the build context"},
		"FROM " + reg.host + "/team/nothing:1\nRUN true\n": {"line 1", "not found"},
		"FROM busybox\nUSER nosuchuser\nRUN true\n":        {"line 3", "nosuchuser"},
	} {
		write("Dockerfile.bad", df, 0o644)
		_, err := s.c.BuildDir(ctx, client.BuildOptions{Name: "bad", Dockerfile: "Dockerfile.bad"}, dir, nil)
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%q: %v, want %q", df, err, w)
			}
		}
	}
	if _, err := s.c.Image(ctx, "bad"); !client.IsNotFound(err) {
		t.Fatalf("a failed build left an image: %v", err)
	}
	left, _ := s.c.ListSandboxes(ctx, client.ListOptions{States: []client.State{"creating", "running", "paused"}})
	if len(left) != 0 {
		t.Fatalf("builds left %d sandboxes", len(left))
	}
	// The API answers a bad Dockerfile with 400, field dockerfile.
	var ctxTar bytes.Buffer
	write("Dockerfile", "FROM busybox\nBOGUS\n", 0o644)
	dirtar.Pack(&ctxTar, dir)
	status, body := s.raw(t, "POST", "/v1/images/build?name=x", s.key, ctxTar.String())
	if e, _ := body["error"].(map[string]any); status != 400 || e["field"] != "dockerfile" || !strings.Contains(fmt.Sprint(e["message"]), "line 2") {
		t.Fatalf("a bad Dockerfile over the API: %d %v", status, body)
	}
	// Prune removes the build cache; list never shows it.
	imgs, _ := s.c.Images(ctx)
	for _, i := range imgs {
		if strings.HasPrefix(i.Name, "cache-") {
			t.Fatalf("the image list shows a build cache: %s", i.Name)
		}
	}
	res, err := s.c.PruneImages(ctx)
	if err != nil || res.RemovedCaches == 0 {
		t.Fatalf("prune: %+v %v", res, err)
	}
	leftovers(t, imgDir)
}

func gzipWriter(w io.Writer) *gzip.Writer { return gzip.NewWriter(w) }
