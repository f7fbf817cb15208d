package oci

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/warrenhq/warren/internal/runtime"
)

func put(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The memory guard, stats and OOM report on a cgroup v2 host, against a
// fake cgroupfs: v2 raises memory.max for the runtime's headroom and has
// no threshold events, so the agent is told to watch by itself.
func TestMemoryOnCgroupV2(t *testing.T) {
	root := t.TempDir()
	put(t, root+"/cgroup.controllers", "cpu memory pids\n")
	dir := filepath.Join(root, "warren", "sbx_a")
	put(t, dir+"/memory.max", "536870912\n")
	put(t, dir+"/memory.current", "104857600\n")
	put(t, dir+"/memory.peak", "209715200\n")
	put(t, dir+"/memory.events", "oom 0\noom_kill 0\n")
	os.MkdirAll(filepath.Join(root, "warren", "sbx_b"), 0o755)
	r, err := New(Config{Name: "gvisor", Binary: "/bin/true", StateDir: t.TempDir(), CgroupRoot: root, GuardMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	limit := int64(512 << 20)
	err = r.GuardMemory(context.Background(), "sbx_a", limit, func() { t.Error("no pressure events on v2") })
	if !errors.Is(err, runtime.ErrNoPressureEvents) {
		t.Fatalf("GuardMemory on v2: %v; want ErrNoPressureEvents", err)
	}
	b, _ := os.ReadFile(dir + "/memory.max")
	if want := limit + runtime.MemoryHeadroom(limit); strings.TrimSpace(string(b)) != itoa(want) {
		t.Fatalf("memory.max %s, want %d", b, want)
	}
	st, err := r.MemoryStats("sbx_a")
	if err != nil || st.CurrentBytes != 100<<20 || st.PeakBytes != 200<<20 || st.OOMKills != 0 {
		t.Fatalf("stats %+v %v", st, err)
	}
	if r.OOMKilled("sbx_a") {
		t.Fatal("no OOM kill yet")
	}
	put(t, dir+"/memory.events", "oom 1\noom_kill 1\n")
	if !r.OOMKilled("sbx_a") {
		t.Fatal("the OOM kill in memory.events went unseen")
	}
	ids := r.CgroupIDs()
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"sbx_a", "sbx_b"}) {
		t.Fatalf("cgroup ids %v", ids)
	}
	if err := r.removeCgroups("sbx_b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "warren", "sbx_b")); err == nil {
		t.Fatal("sbx_b's cgroup was not removed")
	}
}

// On v1 the guard raises memory+swap with the limit and registers for
// threshold events (a regular file stands in for cgroup.event_control).
func TestMemoryOnCgroupV1(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "memory", "warren", "sbx_a")
	put(t, dir+"/memory.limit_in_bytes", "536870912\n")
	put(t, dir+"/memory.memsw.limit_in_bytes", "536870912\n")
	put(t, dir+"/memory.usage_in_bytes", "1024\n")
	put(t, dir+"/cgroup.event_control", "")
	r, err := New(Config{Name: "gvisor", Binary: "/bin/true", StateDir: t.TempDir(), CgroupRoot: root, GuardMemory: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limit := int64(512 << 20)
	if err := r.GuardMemory(ctx, "sbx_a", limit, func() {}); err != nil {
		t.Fatal(err)
	}
	want := itoa(limit + runtime.MemoryHeadroom(limit))
	for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(b)) != want {
			t.Fatalf("%s = %s, want %s", f, b, want)
		}
	}
	// "<eventfd> <usage fd> <threshold>", the threshold half the limit.
	b, _ := os.ReadFile(dir + "/cgroup.event_control")
	if f := strings.Fields(string(b)); len(f) != 3 || f[2] != itoa(limit/2) {
		t.Fatalf("event_control %q", b)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
