package doctor

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKernelVersion(t *testing.T) {
	for rel, want := range map[string][2]int{
		"6.1.0-26-amd64": {6, 1}, "5.15.0": {5, 15}, "4.19+": {4, 19}, "5.4rc1.x": {5, 4}, "garbage": {0, 0},
	} {
		if ma, mi := kernelVersion(rel); ma != want[0] || mi != want[1] {
			t.Errorf("%s: %d.%d, want %d.%d", rel, ma, mi, want[0], want[1])
		}
	}
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The cgroup check against fake cgroupfs trees of both versions.
func TestCheckCgroups(t *testing.T) {
	t.Run("v2 complete", func(t *testing.T) {
		root := t.TempDir()
		write(t, root+"/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
		if c := CheckCgroups(root, "/nonexistent"); c.Status != OK || !strings.Contains(c.Detail, "v2") {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("v2 without memory", func(t *testing.T) {
		root := t.TempDir()
		write(t, root+"/cgroup.controllers", "cpu io pids\n")
		if c := CheckCgroups(root, "/nonexistent"); c.Status != Fail || !strings.Contains(c.Detail, "memory") {
			t.Fatalf("%+v", c)
		}
	})
	v1 := func(t *testing.T, memsw bool, enabledPids string) (string, string) {
		root := t.TempDir()
		for _, c := range []string{"cpu", "memory", "pids"} {
			os.MkdirAll(filepath.Join(root, c), 0o755)
		}
		if memsw {
			write(t, root+"/memory/memory.memsw.limit_in_bytes", "9223372036854771712\n")
		}
		proc := filepath.Join(t.TempDir(), "cgroups")
		write(t, proc, "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t3\t1\t1\nmemory\t5\t1\t1\npids\t7\t1\t"+enabledPids+"\n")
		return root, proc
	}
	t.Run("v1 complete", func(t *testing.T) {
		root, proc := v1(t, true, "1")
		if c := CheckCgroups(root, proc); c.Status != OK {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("v1 without swap accounting", func(t *testing.T) {
		root, proc := v1(t, false, "1")
		if c := CheckCgroups(root, proc); c.Status != Warn || !strings.Contains(c.Detail, "swap") {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("v1 with pids disabled", func(t *testing.T) {
		root, proc := v1(t, true, "0")
		if c := CheckCgroups(root, proc); c.Status != Fail || !strings.Contains(c.Detail, "pids") {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("neither", func(t *testing.T) {
		if c := CheckCgroups(t.TempDir(), "/nonexistent"); c.Status != Fail {
			t.Fatalf("%+v", c)
		}
	})
}

// auto never settles for runc; runc chosen by name is a warning.
func TestCheckDefault(t *testing.T) {
	ok, fail := Check{Status: OK}, Check{Status: Fail}
	for _, tc := range []struct {
		choice       string
		gvisor, runc Check
		want         Status
	}{
		{"auto", ok, ok, OK},
		{"auto", fail, ok, Fail},
		{"gvisor", fail, ok, Fail},
		{"runc", fail, ok, Warn},
		{"runc", ok, fail, Fail},
		{"process", fail, fail, Warn},
		{"kvm", ok, ok, Fail},
	} {
		if c := checkDefault(tc.choice, tc.gvisor, tc.runc); c.Status != tc.want {
			t.Errorf("%s (gvisor %s, runc %s): %s, want %s: %s", tc.choice, tc.gvisor.Status, tc.runc.Status, c.Status, tc.want, c.Detail)
		}
	}
}

func TestCheckListen(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if c := checkListen(ctx, addr); c.Status != OK {
		t.Fatalf("free port: %+v", c)
	}
	// A warren answering there is named as one.
	ln, _ = net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true,"version":"v9"}`))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	if c := checkListen(ctx, ln.Addr().String()); c.Status != Fail || !strings.Contains(c.Detail, "a warren (version v9)") {
		t.Fatalf("port held by a warren: %+v", c)
	}
	// Anything else there is just in use.
	other, _ := net.Listen("tcp", "127.0.0.1:0")
	defer other.Close()
	if c := checkListen(ctx, other.Addr().String()); c.Status != Fail || strings.Contains(c.Detail, "warren") {
		t.Fatalf("port held by something else: %+v", c)
	}
}

// Run answers on any host, as any user, with every check named.
func TestRunAnswers(t *testing.T) {
	checks := Run(context.Background(), Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Runtime: "auto", NoProbe: true})
	names := map[string]bool{}
	for _, c := range checks {
		if c.Status != OK && c.Status != Warn && c.Status != Fail {
			t.Errorf("%s: status %q", c.Name, c.Status)
		}
		if c.Detail == "" {
			t.Errorf("%s: no detail", c.Name)
		}
		if c.Status == Fail && c.Fix == "" && c.Name != "data dir" {
			t.Errorf("%s fails without saying how to fix it: %s", c.Name, c.Detail)
		}
		names[c.Name] = true
	}
	for _, want := range []string{"root", "kernel", "cgroups", "runsc (gVisor)", "runc", "default runtime", "data dir", "listen address", "other warren"} {
		if !names[want] {
			t.Errorf("no %q check", want)
		}
	}
	if os.Geteuid() != 0 && !Failed(checks) {
		t.Errorf("not root, yet nothing failed")
	}
}
