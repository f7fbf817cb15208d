package sandbox

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket/wsjson"

	"github.com/warrenhq/warren/internal/dockerfile"
	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/wire"
)

// BuildRequest is a Dockerfile build.
type BuildRequest struct {
	// Name is the image to make.
	Name string
	// ContextDir is the build context on the host (unpacked from the
	// upload; it came from the client and is read as untrusted).
	ContextDir string
	// Dockerfile is its path in the context; default "Dockerfile".
	Dockerfile string
	// Args are build arguments (ARG).
	Args map[string]string
	// Runtime is where RUN steps run; default the node's (gVisor):
	// building an untrusted Dockerfile must not run it on the host.
	Runtime string
}

// build is one Dockerfile build under way.
type build struct {
	m      *Manager
	org    string
	req    BuildRequest
	report func(step, msg string)
	root   *os.Root // the context

	base   string // the image the next step starts from
	key    string // the cache key of everything so far
	cfg    wire.ImageConfig
	args   dockerfile.Env
	shell  []string
	sb     string // the build sandbox, once one runs
	sbBase string // the image it was created from
	fsDone int
	cached int
}

// BuildDockerfile makes the image req.Name from a Dockerfile. RUN steps
// run in a sandbox of the image so far; each step that changes files is
// kept as a cache image keyed by the step and its inputs (the base image,
// the instruction with its variables expanded, the files it copies), so
// an unchanged rebuild runs nothing. A failing step fails the build and
// leaves no image of that name; the build sandbox is always deleted.
func (m *Manager) BuildDockerfile(ctx context.Context, org string, req BuildRequest, report func(step, msg string)) (*wire.Image, error) {
	if err := m.cfg.Images.CheckName(req.Name); err != nil {
		return nil, err
	}
	if req.Dockerfile == "" {
		req.Dockerfile = "Dockerfile"
	}
	root, err := os.OpenRoot(req.ContextDir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(path.Clean(req.Dockerfile))
	if err != nil {
		return nil, badRequest("dockerfile", "%s is not in the build context: %v", req.Dockerfile, err)
	}
	ins, err := dockerfile.Parse(f)
	f.Close()
	if err != nil {
		return nil, badRequest("dockerfile", "%s", err.Error())
	}
	b := &build{m: m, org: org, req: req, report: report, root: root, args: dockerfile.Env{}, shell: []string{"/bin/sh", "-c"}}
	defer b.dropSandbox()
	start := time.Now()
	for i, in := range ins {
		step := fmt.Sprintf("step %d/%d", i+1, len(ins))
		report(step, in.Original)
		if err := b.do(ctx, step, in); err != nil {
			var e *Error
			if errors.As(err, &e) && e.Kind == KindBadRequest {
				return nil, badRequest("dockerfile", "line %d (%s): %s", in.Line, in.Cmd, e.Message)
			}
			return nil, fmt.Errorf("line %d (%s): %w", in.Line, in.Cmd, err)
		}
	}
	// The working directory exists in the image, as docker makes it.
	if wd := b.cfg.WorkingDir; wd != "" && !b.exists(wd) {
		if err := b.fsStep(ctx, "workdir", []string{"WORKDIR-MKDIR", wd}, func(ctx context.Context) error {
			_, err := b.m.Mkdir(ctx, b.org, b.sb, wd)
			return err
		}); err != nil {
			return nil, err
		}
	}
	report("image", fmt.Sprintf("%d of %d file steps cached; writing image %s", b.cached, b.fsDone, req.Name))
	cfg := b.cfg
	img, err := m.cfg.Images.Clone(ctx, req.Name, b.base, wire.ImageDockerfile, "Dockerfile "+req.Dockerfile, &cfg)
	if err != nil {
		return nil, err
	}
	report("done", fmt.Sprintf("built %s in %.1fs (%d of %d file steps cached)", req.Name, time.Since(start).Seconds(), b.cached, b.fsDone))
	return img, nil
}

// env is what variables expand against: build args and the env so far.
func (b *build) env() dockerfile.Env {
	e := dockerfile.Env{}
	for k, v := range b.args {
		e[k] = v
	}
	for _, kv := range b.cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			e[k] = v
		}
	}
	return e
}

func (b *build) word(w string) (string, error) {
	s, err := dockerfile.Word(w, b.env())
	if err != nil {
		return "", badRequest("dockerfile", "%v", err)
	}
	return s, nil
}

// chain adds parts to the cache key.
func (b *build) chain(parts ...string) {
	h := sha256.New()
	h.Write([]byte(b.key))
	for _, p := range parts {
		binary.Write(h, binary.BigEndian, uint64(len(p)))
		h.Write([]byte(p))
	}
	b.key = hex.EncodeToString(h.Sum(nil))
}

func (b *build) do(ctx context.Context, step string, in dockerfile.Instruction) error {
	switch in.Cmd {
	case "ARG":
		for _, a := range in.Args {
			name, def, hasDef := strings.Cut(a, "=")
			if hasDef {
				v, err := b.word(def)
				if err != nil {
					return err
				}
				def = v
			}
			if v, ok := b.req.Args[name]; ok {
				def = v
			}
			b.args[name] = def
			b.chain("ARG", name, def)
		}
	case "FROM":
		return b.from(ctx, in)
	case "ENV":
		pairs, err := dockerfile.Pairs(in, b.env())
		if err != nil {
			return badRequest("dockerfile", "%v", err)
		}
		for _, p := range pairs {
			b.cfg.Env = slices.DeleteFunc(b.cfg.Env, func(kv string) bool { return strings.HasPrefix(kv, p[0]+"=") })
			b.cfg.Env = append(b.cfg.Env, p[0]+"="+p[1])
			b.chain("ENV", p[0], p[1])
		}
	case "WORKDIR":
		wd, err := b.word(in.Args[0])
		if err != nil {
			return err
		}
		if !path.IsAbs(wd) {
			wd = path.Join("/", b.cfg.WorkingDir, wd)
		}
		b.cfg.WorkingDir = path.Clean(wd)
		b.chain("WORKDIR", b.cfg.WorkingDir)
	case "USER":
		u, err := b.word(in.Args[0])
		if err != nil {
			return err
		}
		b.cfg.User = u
		b.chain("USER", u)
	case "CMD", "ENTRYPOINT":
		argv := in.Args
		if !in.JSON {
			argv = append(slices.Clone(b.shell), strings.Join(in.Args, " "))
		}
		if in.Cmd == "CMD" {
			b.cfg.Cmd = argv
		} else {
			b.cfg.Entrypoint = argv
		}
		j, _ := json.Marshal(argv)
		b.chain(in.Cmd, string(j))
	case "SHELL":
		if !in.JSON {
			return badRequest("dockerfile", "SHELL takes the JSON form: SHELL [\"/bin/bash\", \"-c\"]")
		}
		b.shell = in.Args
		b.chain("SHELL", strings.Join(in.Args, "\x00"))
	case "RUN":
		return b.run(ctx, step, in)
	case "COPY", "ADD":
		return b.copy(ctx, step, in)
	default:
		// LABEL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK: recorded in
		// the cache key only; warren runs no images' services.
		b.chain(in.Cmd, in.Original)
	}
	return nil
}

// from starts the build at a warren image or a registry ref (pulled once
// into an image named from-<hash of the ref>).
func (b *build) from(ctx context.Context, in dockerfile.Instruction) error {
	ref, err := b.word(in.Args[0])
	if err != nil {
		return err
	}
	base := ref
	if !image.ValidName(ref) || !b.m.cfg.Images.Known(ref) {
		sum := sha256.Sum256([]byte(ref))
		base = "from-" + hex.EncodeToString(sum[:8])
		if img, err := b.m.cfg.Images.Get(base); err != nil || img.State != wire.ImageReady {
			if _, err := b.m.cfg.Images.Pull(ctx, base, ref, nil, func(ev wire.ImageEvent) { b.report("pull", ev.Message) }); err != nil {
				var in *image.InputError
				if errors.As(err, &in) {
					return badRequest("dockerfile", "FROM %s: %v", ref, err)
				}
				return err
			}
		}
	} else if _, err := b.m.cfg.Images.Ensure(ctx, base, func(ev wire.ImageEvent) { b.report("base", ev.Message) }); err != nil {
		return err
	}
	img, err := b.m.cfg.Images.Get(base)
	if err != nil {
		return err
	}
	if img.Config != nil {
		b.cfg = *img.Config
		b.cfg.Env = slices.Clone(img.Config.Env)
	}
	b.base = base
	b.chain("FROM", base, img.Digest, img.BuiltAt.String())
	return nil
}

// cacheName is the image that holds the result of the steps so far.
func (b *build) cacheName() string { return "cache-" + b.key[:24] }

// fsStep runs a step that changes files, unless its result is cached,
// and keeps its result for the next build.
func (b *build) fsStep(ctx context.Context, step string, key []string, run func(ctx context.Context) error) error {
	b.chain(key...)
	b.fsDone++
	name := b.cacheName()
	if img, err := b.m.cfg.Images.Get(name); err == nil && img.State == wire.ImageReady {
		b.cached++
		b.report(step, "CACHED")
		b.base = name
		return nil
	}
	if err := b.ensureSandbox(ctx); err != nil {
		return err
	}
	t := time.Now()
	if err := run(ctx); err != nil {
		return err
	}
	l, done, err := b.m.use(ctx, b.org, b.sb)
	if err != nil {
		return err
	}
	defer done()
	row, err := b.m.cfg.Store.GetSandbox(ctx, b.org, b.sb)
	if err != nil {
		return err
	}
	var sp spec
	_ = json.Unmarshal(row.Spec, &sp)
	cfg := b.cfg
	if _, err := b.m.snapshot(ctx, l, &sp, name, wire.ImageCache, "build step of "+b.req.Name, &cfg); err != nil {
		return fmt.Errorf("keep the step's result: %w", err)
	}
	// The sandbox now holds what the image so far holds: the next step
	// runs on in it.
	b.base, b.sbBase = name, name
	b.report(step, fmt.Sprintf("done in %.1fs", time.Since(t).Seconds()))
	return nil
}

// ensureSandbox has a build sandbox on the image so far: the one running
// goes on when the steps before were its own, else a new one starts.
func (b *build) ensureSandbox(ctx context.Context) error {
	if b.sb != "" && b.sbBase == b.base {
		return nil
	}
	b.dropSandbox()
	sb, err := b.m.Create(ctx, b.org, &CreateRequest{CreateRequest: wire.CreateRequest{
		Image: b.base, Runtime: b.req.Runtime, Metadata: map[string]string{"warren.build": b.req.Name},
	}})
	if err != nil {
		return fmt.Errorf("start the build sandbox: %w", err)
	}
	b.sb, b.sbBase = sb.ID, b.base
	return nil
}

func (b *build) dropSandbox() {
	if b.sb == "" {
		return
	}
	if _, err := b.m.Delete(context.Background(), b.org, b.sb); err != nil {
		b.m.log.Error("delete the build sandbox", "sandbox.id", b.sb, "err", err)
	}
	b.sb = ""
}

// exists says whether p is in the image so far.
func (b *build) exists(p string) bool {
	r, err := os.OpenRoot(b.m.cfg.Images.RootfsPath(b.base))
	if err != nil {
		return false
	}
	defer r.Close()
	_, err = r.Stat(strings.TrimPrefix(path.Clean(p), "/"))
	return err == nil
}

func (b *build) run(ctx context.Context, step string, in dockerfile.Instruction) error {
	argv := in.Args
	if !in.JSON {
		argv = append(slices.Clone(b.shell), strings.Join(in.Args, " "))
	}
	env := map[string]string(b.env())
	var envKey strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		envKey.WriteString(k + "=" + env[k] + "\x00")
	}
	j, _ := json.Marshal(argv)
	err := b.fsStep(ctx, step, []string{"RUN", string(j), envKey.String(), b.cfg.WorkingDir, b.cfg.User}, func(ctx context.Context) error {
		if wd := b.cfg.WorkingDir; wd != "" {
			if _, err := b.m.Mkdir(ctx, b.org, b.sb, wd); err != nil {
				return err
			}
		}
		return b.exec(ctx, step, &wire.ExecRequest{Argv: argv, Env: env, Cwd: b.cfg.WorkingDir, User: b.cfg.User})
	})
	return err
}

// exec runs a RUN step's command, reporting its output line by line.
func (b *build) exec(ctx context.Context, step string, req *wire.ExecRequest) error {
	conn, release, err := b.m.ExecStream(ctx, b.org, b.sb, req)
	if err != nil {
		return err
	}
	defer release()
	defer conn.CloseNow()
	_ = wsjson.Write(ctx, conn, wire.Frame{Type: wire.FrameStdinClose})
	// Each stream is split into lines of its own: a line the command
	// writes to stdout is never cut by one it writes to stderr.
	partial := map[string]string{}
	var out string
	flush := func(stream, s string, all bool) {
		p := partial[stream] + s
		for {
			i := strings.IndexByte(p, '\n')
			if i < 0 {
				break
			}
			b.report(step, p[:i])
			p = p[i+1:]
		}
		if all && p != "" {
			b.report(step, p)
			p = ""
		}
		partial[stream] = p
	}
	for {
		var f wire.Frame
		if err := wsjson.Read(ctx, conn, &f); err != nil {
			return fmt.Errorf("the RUN step's output: %w", err)
		}
		switch f.Type {
		case wire.FrameStdout, wire.FrameStderr:
			flush(f.Type, f.Data, false)
			out += f.Data
			if len(out) > 8192 {
				out = out[len(out)-4096:]
			}
		case wire.FrameError:
			return errors.New(f.Message)
		case wire.FrameExit:
			flush(wire.FrameStdout, "", true)
			flush(wire.FrameStderr, "", true)
			if f.ExitCode != nil && *f.ExitCode != 0 {
				return badRequest("dockerfile", "the command exited %d; its output ends: %s", *f.ExitCode, tail(out))
			}
			return nil
		}
	}
}

// copy runs COPY and ADD from the build context: sources (globs allowed)
// resolved inside the context, sent to the sandbox as a tar stream whose
// names are their destinations. ADD also unpacks local tar archives.
func (b *build) copy(ctx context.Context, step string, in dockerfile.Instruction) error {
	words, err := dockerfile.Words(in.Args, b.env())
	if err != nil {
		return badRequest("dockerfile", "%v", err)
	}
	srcs, dest := words[:len(words)-1], words[len(words)-1]
	uid, gid, mode := 0, 0, fs.FileMode(0)
	for _, fl := range in.Flags {
		if v, ok := strings.CutPrefix(fl, "--chown="); ok {
			if uid, gid, err = numericOwner(v); err != nil {
				return err
			}
		}
		if v, ok := strings.CutPrefix(fl, "--chmod="); ok {
			n, err := strconv.ParseUint(v, 8, 32)
			if err != nil || n > 0o7777 {
				return badRequest("dockerfile", "--chmod=%s is not an octal mode", v)
			}
			mode = fs.FileMode(n)
		}
	}
	if !path.IsAbs(dest) {
		dest = path.Join("/", b.cfg.WorkingDir, dest)
		if strings.HasSuffix(words[len(words)-1], "/") {
			dest += "/"
		}
	}
	var files []string
	for _, s := range srcs {
		matches, err := fs.Glob(b.root.FS(), strings.TrimPrefix(path.Clean(s), "/"))
		if err != nil || len(matches) == 0 {
			return badRequest("dockerfile", "%s %s: not in the build context", in.Cmd, s)
		}
		files = append(files, matches...)
	}
	intoDir := strings.HasSuffix(dest, "/") || len(files) > 1
	sum := sha256.New()
	for _, f := range files {
		if err := hashTree(b.root, f, sum); err != nil {
			return err
		}
	}
	key := []string{in.Cmd, strings.Join(in.Flags, " "), dest, strings.Join(files, "\x00"), hex.EncodeToString(sum.Sum(nil))}
	err = b.fsStep(ctx, step, key, func(ctx context.Context) error {
		pr, pw := io.Pipe()
		go func() {
			tw := tar.NewWriter(pw)
			err := func() error {
				for _, f := range files {
					if err := b.addSource(tw, in.Cmd == "ADD", f, dest, intoDir, uid, gid, mode); err != nil {
						return err
					}
				}
				return tw.Close()
			}()
			pw.CloseWithError(err)
		}()
		_, err := b.m.WriteArchive(ctx, b.org, b.sb, "/", pr)
		pr.CloseWithError(err)
		return err
	})
	return err
}

func numericOwner(v string) (int, int, error) {
	u, g, hasG := strings.Cut(v, ":")
	uid, err := strconv.Atoi(u)
	if err != nil || uid < 0 {
		return 0, 0, badRequest("dockerfile", "--chown=%s: give numeric ids (uid:gid)", v)
	}
	gid := uid
	if hasG {
		if gid, err = strconv.Atoi(g); err != nil || gid < 0 {
			return 0, 0, badRequest("dockerfile", "--chown=%s: give numeric ids (uid:gid)", v)
		}
	}
	return uid, gid, nil
}

// hashTree adds a source's names, modes, links and contents to a hash.
func hashTree(root *os.Root, src string, h io.Writer) error {
	return fs.WalkDir(root.FS(), src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := root.Lstat(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%o\x00", p, fi.Mode())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := root.Readlink(p)
			io.WriteString(h, l)
		case fi.Mode().IsRegular():
			f, err := root.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(h, f); err != nil {
				return err
			}
		}
		return nil
	})
}

// addSource writes one source into the tar stream under its destination.
func (b *build) addSource(tw *tar.Writer, add bool, src, dest string, intoDir bool, uid, gid int, mode fs.FileMode) error {
	fi, err := b.root.Lstat(src)
	if err != nil {
		return err
	}
	target := dest
	if !fi.IsDir() && (intoDir || strings.HasSuffix(dest, "/")) {
		target = path.Join(dest, path.Base(src))
	}
	if add && fi.Mode().IsRegular() && isArchive(src) {
		return b.addArchive(tw, src, dest, uid, gid)
	}
	return fs.WalkDir(b.root.FS(), src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := b.root.Lstat(p)
		if err != nil {
			return err
		}
		name := target
		if rel := strings.TrimPrefix(strings.TrimPrefix(p, src), "/"); rel != "" {
			name = path.Join(target, rel)
		}
		name = strings.TrimPrefix(path.Clean(name), "/")
		if name == "" || name == "." {
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = b.root.Readlink(p); err != nil {
				return err
			}
		} else if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = name, uid, gid, "", ""
		if mode != 0 && fi.Mode()&fs.ModeSymlink == 0 {
			hdr.Mode = int64(mode)
		}
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := b.root.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, io.LimitReader(f, hdr.Size))
		return err
	})
}

func isArchive(name string) bool {
	for _, s := range []string{".tar", ".tar.gz", ".tgz"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// addArchive copies a local tar archive's entries under dest (ADD's
// unpacking); the agent unpacks them inside the sandbox.
func (b *build) addArchive(tw *tar.Writer, src, dest string, uid, gid int) error {
	f, err := b.root.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	var r io.Reader = f
	if !strings.HasSuffix(src, ".tar") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return badRequest("dockerfile", "ADD %s: %v", src, err)
		}
		defer gz.Close()
		r = gz
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return badRequest("dockerfile", "ADD %s: %v", src, err)
		}
		clean := path.Clean("/" + hdr.Name)
		hdr.Name = strings.TrimPrefix(path.Join(dest, clean), "/")
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = strings.TrimPrefix(path.Join(dest, path.Clean("/"+hdr.Linkname)), "/")
		}
		if uid != 0 || gid != 0 {
			hdr.Uid, hdr.Gid = uid, gid
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
	}
}
