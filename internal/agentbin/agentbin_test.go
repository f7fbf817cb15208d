package agentbin

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A dynamically linked program runs from its installed copy with the
// loader and libraries beside it, and loads none of the host's.
func TestInstallDynamic(t *testing.T) {
	src := dynamicProgram(t)
	dir := t.TempDir()
	a, err := Install(context.Background(), src, dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Libs == "" {
		t.Fatalf("%s is dynamic, but no libraries were installed", src)
	}
	entries, _ := os.ReadDir(a.Libs)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !contains(names, Loader) || !contains(names, "libc.so.6") {
		t.Fatalf("libraries installed: %v; want the loader and libc.so.6", names)
	}
	cmd := exec.Command(filepath.Join(a.Libs, Loader), "--library-path", a.Libs, a.Path, "--version")
	cmd.Env = []string{"LD_DEBUG=libs", "LC_ALL=C"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("run through the installed loader: %v\n%s", err, out)
	}
	// LD_DEBUG names every library as it is initialised.
	inits := 0
	for _, line := range strings.Split(string(out), "\n") {
		_, lib, ok := strings.Cut(line, "calling init: ")
		if !ok {
			continue
		}
		inits++
		if !strings.HasPrefix(lib, a.Libs+"/") {
			t.Errorf("loaded %s from outside the installed libraries", lib)
		}
	}
	if inits == 0 {
		t.Fatalf("no library was loaded at all:\n%s", out)
	}

	// Installing again changes nothing: the names are the content's.
	b, err := Install(context.Background(), src, dir)
	if err != nil || b != a {
		t.Fatalf("second install: %+v, %v; want %+v", b, err, a)
	}
}

func TestInstallStatic(t *testing.T) {
	src, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox-static, a static binary to install")
	}
	if interp, _ := interpreter(src); interp != "" {
		t.Skipf("%s is dynamically linked", src)
	}
	a, err := Install(context.Background(), src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if a.Libs != "" {
		t.Fatalf("a static binary got libraries: %s", a.Libs)
	}
	cmd := exec.Command(a.Path, "true")
	cmd.Args[0] = "busybox" // it picks its applet by argv[0] otherwise
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("installed copy does not run: %v %s", err, out)
	}
}

func TestInstallNotELF(t *testing.T) {
	src := filepath.Join(t.TempDir(), "script")
	os.WriteFile(src, []byte("#!/bin/sh\n"), 0o755)
	if _, err := Install(context.Background(), src, t.TempDir()); err == nil || !strings.Contains(err.Error(), src) {
		t.Fatalf("got %v; want an error naming %s", err, src)
	}
}

// dynamicProgram finds a dynamically linked program of this host.
func dynamicProgram(t *testing.T) string {
	for _, name := range []string{"ls", "cat", "true"} {
		p, err := exec.LookPath(name)
		if err != nil {
			continue
		}
		if interp, _ := interpreter(p); interp != "" {
			return p
		}
	}
	t.Skip("no dynamically linked program on this host")
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
