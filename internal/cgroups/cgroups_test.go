package cgroups

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeV1 and fakeV2 lay out cgroupfs as each version mounts it, with
// the files warren reads for one cgroup, warren/sbx_a.

func put(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func fakeV1(t *testing.T, memsw bool) string {
	root := t.TempDir()
	for _, c := range []string{"cpu,cpuacct", "pids", "blkio"} {
		os.MkdirAll(filepath.Join(root, c, "warren", "sbx_a"), 0o755)
	}
	os.Symlink("cpu,cpuacct", filepath.Join(root, "cpu"))
	d := filepath.Join(root, "memory", "warren", "sbx_a")
	put(t, d+"/memory.usage_in_bytes", "1048576\n")
	put(t, d+"/memory.max_usage_in_bytes", "2097152\n")
	put(t, d+"/memory.limit_in_bytes", "536870912\n")
	put(t, d+"/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
	if memsw {
		put(t, d+"/memory.memsw.limit_in_bytes", "536870912\n")
	}
	return root
}

func fakeV2(t *testing.T) string {
	root := t.TempDir()
	put(t, root+"/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
	os.MkdirAll(filepath.Join(root, "system.slice"), 0o755)
	d := filepath.Join(root, "warren", "sbx_a")
	put(t, d+"/memory.current", "1048576\n")
	put(t, d+"/memory.peak", "2097152\n")
	put(t, d+"/memory.max", "max\n")
	put(t, d+"/memory.events", "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n")
	return root
}

func TestMemoryV2(t *testing.T) {
	root := fakeV2(t)
	if !Unified(root) {
		t.Fatal("a tree with cgroup.controllers is v2")
	}
	m := MemoryOf(root, "warren/sbx_a")
	if m.V1 || m.Dir != filepath.Join(root, "warren/sbx_a") {
		t.Fatalf("%+v", m)
	}
	if u, err := m.Usage(); err != nil || u != 1<<20 {
		t.Fatalf("usage %d %v", u, err)
	}
	if p, err := m.Peak(); err != nil || p != 2<<20 {
		t.Fatalf("peak %d %v", p, err)
	}
	if n := m.OOMKills(); n != 2 {
		t.Fatalf("oom kills %d (want oom_kill, not oom or oom_group_kill)", n)
	}
	if l, err := m.Limit(); err != nil || l != -1 {
		t.Fatalf("limit %d %v; want -1 for max", l, err)
	}
	if err := m.SetLimit(800 << 20); err != nil {
		t.Fatal(err)
	}
	if got := read(t, m.Dir+"/memory.max"); got != "838860800" {
		t.Fatalf("memory.max %s", got)
	}
	if m.UsageFile() != m.Dir+"/memory.current" {
		t.Fatal(m.UsageFile())
	}
	// Inside a runc sandbox its cgroup namespace shows its own cgroup as
	// the root of a v2 mount.
	ns := t.TempDir()
	put(t, ns+"/cgroup.controllers", "memory pids\n")
	put(t, ns+"/memory.current", "4096\n")
	put(t, ns+"/memory.events", "oom_kill 1\n")
	inside := MemoryOf(ns, "")
	if u, _ := inside.Usage(); inside.V1 || u != 4096 || inside.OOMKills() != 1 {
		t.Fatalf("inside: %+v usage %d kills %d", inside, u, inside.OOMKills())
	}
}

func TestMemoryV1(t *testing.T) {
	root := fakeV1(t, true)
	m := MemoryOf(root, "warren/sbx_a")
	if !m.V1 || m.Dir != filepath.Join(root, "memory/warren/sbx_a") {
		t.Fatalf("%+v", m)
	}
	if u, _ := m.Usage(); u != 1<<20 {
		t.Fatalf("usage %d", u)
	}
	if p, _ := m.Peak(); p != 2<<20 {
		t.Fatalf("peak %d", p)
	}
	if n := m.OOMKills(); n != 3 {
		t.Fatalf("oom kills %d", n)
	}
	if err := m.SetLimit(800 << 20); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
		if got := read(t, m.Dir+"/"+f); got != "838860800" {
			t.Fatalf("%s %s", f, got)
		}
	}
	// Lowering works too (the kernel refuses memsw below the limit; the
	// order is what makes both writes valid, checked by the e2e tests).
	if err := m.SetLimit(300 << 20); err != nil {
		t.Fatal(err)
	}
	if got := read(t, m.Dir+"/memory.memsw.limit_in_bytes"); got != "314572800" {
		t.Fatalf("memsw %s", got)
	}
	// Without swap accounting only the limit is set.
	root = fakeV1(t, false)
	m = MemoryOf(root, "warren/sbx_a")
	if err := m.SetLimit(700 << 20); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(m.Dir + "/memory.memsw.limit_in_bytes"); err == nil {
		t.Fatal("SetLimit made a memsw file on a host without swap accounting")
	}
}

func TestDirsRemoveChildren(t *testing.T) {
	t.Run("v2", func(t *testing.T) {
		root := t.TempDir()
		put(t, root+"/cgroup.controllers", "cpu memory pids\n")
		for _, id := range []string{"sbx_a", "sbx_b"} {
			os.MkdirAll(filepath.Join(root, "warren", id), 0o755)
		}
		if got := Dirs(root, "warren/sbx_a"); !slices.Equal(got, []string{filepath.Join(root, "warren/sbx_a")}) {
			t.Fatalf("dirs %v", got)
		}
		kids := Children(root, "warren")
		slices.Sort(kids)
		if !slices.Equal(kids, []string{"sbx_a", "sbx_b"}) {
			t.Fatalf("children %v", kids)
		}
		if err := Remove(root, "warren/sbx_a"); err != nil {
			t.Fatal(err)
		}
		if err := Remove(root, "warren/sbx_gone"); err != nil {
			t.Fatalf("removing what is not there: %v", err)
		}
		if kids := Children(root, "warren"); !slices.Equal(kids, []string{"sbx_b"}) {
			t.Fatalf("after remove: %v", kids)
		}
	})
	t.Run("v1", func(t *testing.T) {
		root := t.TempDir()
		for _, c := range []string{"memory", "pids", "cpu,cpuacct"} {
			os.MkdirAll(filepath.Join(root, c, "warren", "sbx_a"), 0o755)
		}
		os.MkdirAll(filepath.Join(root, "pids", "warren", "sbx_only_pids"), 0o755)
		os.Symlink("cpu,cpuacct", filepath.Join(root, "cpu")) // listed once
		if got := Dirs(root, "warren/sbx_a"); len(got) != 3 {
			t.Fatalf("dirs %v", got)
		}
		kids := Children(root, "warren")
		slices.Sort(kids)
		if !slices.Equal(kids, []string{"sbx_a", "sbx_only_pids"}) {
			t.Fatalf("children %v", kids)
		}
		if err := Remove(root, "warren/sbx_a"); err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"memory", "pids", "cpu,cpuacct"} {
			if _, err := os.Stat(filepath.Join(root, c, "warren", "sbx_a")); err == nil {
				t.Fatalf("%s/warren/sbx_a was not removed", c)
			}
		}
	})
	t.Run("busy", func(t *testing.T) {
		root := t.TempDir()
		put(t, root+"/cgroup.controllers", "memory\n")
		put(t, root+"/warren/sbx_a/cgroup.procs", "123\n") // a plain dir with a file cannot go: as a busy cgroup cannot
		if err := Remove(root, "warren/sbx_a"); err == nil || !strings.Contains(err.Error(), "sbx_a") {
			t.Fatalf("got %v; want an error naming the cgroup", err)
		}
	})
}

func TestCPU(t *testing.T) {
	v1 := fakeV1(t, false)
	put(t, v1+"/cpu/warren/sbx_a/cpu.cfs_quota_us", "200000\n")
	put(t, v1+"/cpu/warren/sbx_a/cpu.cfs_period_us", "100000\n")
	v2 := fakeV2(t)
	put(t, v2+"/warren/sbx_a/cpu.max", "max 100000\n")
	for name, root := range map[string]string{"v1": v1, "v2": v2} {
		if name == "v2" {
			if q, p, err := CPU(root, "warren/sbx_a"); err != nil || q != -1 || p != 100000 {
				t.Fatalf("%s: unlimited reads %d %d %v", name, q, p, err)
			}
		}
		if err := SetCPU(root, "warren/sbx_a", 50000, 100000); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if q, p, err := CPU(root, "warren/sbx_a"); err != nil || q != 50000 || p != 100000 {
			t.Fatalf("%s: after SetCPU: %d %d %v", name, q, p, err)
		}
	}
	if got := read(t, v2+"/warren/sbx_a/cpu.max"); got != "50000 100000" {
		t.Fatalf("v2 cpu.max = %q", got)
	}
}
