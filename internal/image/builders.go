package image

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// baseIncludes are the packages of the curated base image.
var baseIncludes = []string{"bash", "coreutils", "python3", "git", "curl", "ca-certificates", "procps", "iproute2"}

// buildBusybox makes a tiny image from the host's static busybox.
func buildBusybox(ctx context.Context, dir string, report func(step, msg string)) error {
	src, err := exec.LookPath("busybox")
	if err != nil {
		return fmt.Errorf("busybox not found (install busybox-static): %w", err)
	}
	report("copy", "copying "+src)
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := copyFile(src, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, src, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("list busybox applets: %w", err)
	}
	report("link", "linking applets")
	for _, applet := range strings.Fields(string(out)) {
		link := filepath.Join(dir, applet)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", link); err != nil {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// debootstrapBuilder builds a Debian minbase root with extra packages.
func debootstrapBuilder(suite, mirror string, include []string) builder {
	return func(ctx context.Context, dir string, report func(step, msg string)) error {
		bin, err := exec.LookPath("debootstrap")
		if err != nil {
			return fmt.Errorf("debootstrap not found (install debootstrap): %w", err)
		}
		report("debootstrap", fmt.Sprintf("debootstrap %s from %s", suite, mirror))
		cmd := exec.CommandContext(ctx, bin, "--variant=minbase", "--include="+strings.Join(include, ","), suite, dir, mirror)
		pr, pw := io.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		var tail []string
		done := make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if line == "" {
					continue
				}
				tail = append(tail, line)
				if len(tail) > 8 {
					tail = tail[1:]
				}
				// debootstrap says "I: Retrieving foo", "I: Unpacking foo"...
				if msg, ok := strings.CutPrefix(line, "I: "); ok {
					step := strings.ToLower(strings.Fields(msg)[0])
					report(step, msg)
				}
			}
		}()
		err = cmd.Run()
		pw.Close()
		<-done
		if err != nil {
			return fmt.Errorf("debootstrap: %w: %s", err, strings.Join(tail, "; "))
		}
		report("clean", "removing package caches")
		for _, d := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
			matches, _ := filepath.Glob(filepath.Join(dir, d, "*"))
			for _, m := range matches {
				if fi, err := os.Lstat(m); err == nil && fi.Mode().IsRegular() {
					os.Remove(m)
				}
			}
		}
		return nil
	}
}
