// Package agentbin installs the binary that runs inside every sandbox as
// its guest agent. warren is its own agent. A static build goes in as it
// is. A dynamically linked one — what a plain `go build` makes wherever a
// C compiler is installed — goes in with this host's ELF loader and the
// shared libraries it links, because a sandbox's image may have no libc,
// or another one.
package agentbin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Agent is an installed agent.
type Agent struct {
	// Path is the host path of the agent binary.
	Path string
	// Libs is the host directory holding the ELF loader (as Loader) and
	// the shared libraries of a dynamically linked agent, by the names it
	// links them by; empty for a static agent.
	Libs string
}

// Loader is the name the ELF loader has in Libs. Inside a sandbox the
// agent runs as "LIBS/ld.so --library-path LIBS AGENT", so nothing of the
// sandbox's own libraries is loaded in its place.
const Loader = "ld.so"

// Install places src in dir as the agent. Every file is named by content,
// so sandboxes still running an older agent keep theirs.
func Install(ctx context.Context, src, dir string) (Agent, error) {
	interp, err := interpreter(src)
	if err != nil {
		return Agent{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Agent{}, fmt.Errorf("create agent dir: %w", err)
	}
	path, err := copyNamed(src, dir, "warren-agent-", 0o755)
	if err != nil {
		return Agent{}, err
	}
	if interp == "" {
		return Agent{Path: path}, nil
	}
	libs, err := Libraries(ctx, interp, src)
	if err != nil {
		return Agent{}, err
	}
	libDir, err := installLibs(dir, interp, libs)
	if err != nil {
		return Agent{}, err
	}
	return Agent{Path: path, Libs: libDir}, nil
}

// interpreter returns the ELF loader a binary asks for, or "" for a
// static one.
func interpreter(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("read agent binary %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(p.Open(), 4096))
		if err != nil {
			return "", fmt.Errorf("read the loader %s names: %w", path, err)
		}
		return string(bytes.TrimRight(b, "\x00")), nil
	}
	return "", nil
}

// Libraries asks the loader which shared libraries bin loads (by the name
// it links each by) and where this host has them. The loader's own answer
// covers its cache, its configured directories and hardware-specific
// subdirectories, which a search of our own would have to imitate.
func Libraries(ctx context.Context, loader, bin string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, loader, "--list", bin)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list the shared libraries of %s with %s: %w", bin, loader, err)
	}
	libs := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f...)"; the
		// vDSO and the loader itself have no "=>".
		name, rest, ok := strings.Cut(strings.TrimSpace(sc.Text()), " => ")
		if !ok {
			continue
		}
		path, _, _ := strings.Cut(rest, " (")
		if path == "not found" || !filepath.IsAbs(path) {
			return nil, fmt.Errorf("%s needs %s, which this host does not have", bin, name)
		}
		if strings.Contains(name, "/") {
			return nil, fmt.Errorf("%s links a library by path (%s); build warren with CGO_ENABLED=0", bin, name)
		}
		libs[name] = path
	}
	return libs, nil
}

// installLibs copies the loader and libs into a directory named by their
// content and returns it.
func installLibs(dir, loader string, libs map[string]string) (string, error) {
	files := map[string]string{Loader: loader}
	for name, path := range libs {
		files[name] = path
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		if err := hashFile(h, files[n]); err != nil {
			return "", err
		}
		fmt.Fprintf(h, "\x00%s\x00", n)
	}
	dst := filepath.Join(dir, fmt.Sprintf("lib-%x", h.Sum(nil)[:8]))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	tmp, err := os.MkdirTemp(dir, ".lib-*")
	if err != nil {
		return "", fmt.Errorf("copy agent libraries: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, n := range names {
		mode := os.FileMode(0o644)
		if n == Loader {
			mode = 0o755
		}
		if err := copyFile(files[n], filepath.Join(tmp, n), mode); err != nil {
			return "", err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		if _, serr := os.Stat(dst); serr == nil {
			return dst, nil // another start installed the same set
		}
		return "", fmt.Errorf("install agent libraries: %w", err)
	}
	return dst, nil
}

// copyNamed copies src into dir as prefix plus a hash of its content.
func copyNamed(src, dir, prefix string, mode os.FileMode) (string, error) {
	h := sha256.New()
	if err := hashFile(h, src); err != nil {
		return "", err
	}
	dst := filepath.Join(dir, fmt.Sprintf("%s%x", prefix, h.Sum(nil)[:8]))
	if _, err := os.Stat(dst); err == nil {
		return dst, nil
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".%s%d", prefix, os.Getpid()))
	if err := copyFile(src, tmp, mode); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("install agent: %w", err)
	}
	return dst, nil
}

func hashFile(h io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// copyFile copies src (following symlinks: the loader usually is one) to
// a new file dst.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Chmod(mode); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
