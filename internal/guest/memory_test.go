package guest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/internal/cgroups"
)

func TestMeminfo(t *testing.T) {
	b := []byte("MemTotal:         524288 kB\nMemFree:           1024 kB\nMemAvailable:      1024 kB\n")
	if meminfoKB(b, "MemTotal:") != 524288 || meminfoKB(b, "MemFree:") != 1024 || meminfoKB(b, "Nope:") != 0 {
		t.Fatal("meminfo parsing")
	}
}

func TestProcessMemory(t *testing.T) {
	rss, group, ok := processMemory(os.Getpid())
	if !ok || rss <= 0 || group != syscall.Getpgrp() {
		t.Fatalf("own process: rss %d, group %d (want %d), ok %v", rss, group, syscall.Getpgrp(), ok)
	}
	if _, _, ok := processMemory(1 << 30); ok {
		t.Fatal("a process that does not exist")
	}
}

// TestLostToOOM: a command is marked only for a kill in its own process
// group after it started.
func TestLostToOOM(t *testing.T) {
	g := &memoryGuard{enforce: true, killed: map[int]time.Time{}}
	before := g.mark()
	time.Sleep(time.Millisecond)
	g.killed[42] = time.Now()
	if !g.lostToOOM(before, 42, 137) {
		t.Fatal("the killed group's command is not marked")
	}
	if g.lostToOOM(before, 42, 137) {
		t.Fatal("marked twice")
	}
	g.killed[7] = time.Now()
	if g.lostToOOM(before, 8, 137) {
		t.Fatal("another group's command is marked")
	}
	later := g.mark()
	g.killed[9] = before.start
	if g.lostToOOM(later, 9, 137) {
		t.Fatal("a kill from before the command started marks it")
	}
}

// Kernel mode (runc) reads the sandbox's own cgroup, v1 or v2, as its
// cgroup namespace shows it: a fake of each.
func TestKernelModeCgroups(t *testing.T) {
	v2 := t.TempDir()
	putFile(t, v2+"/cgroup.controllers", "memory pids\n")
	putFile(t, v2+"/memory.current", "3145728\n")
	putFile(t, v2+"/memory.peak", "4194304\n")
	putFile(t, v2+"/memory.events", "oom 1\noom_kill 1\n")
	v1 := t.TempDir()
	putFile(t, v1+"/memory/memory.usage_in_bytes", "3145728\n")
	putFile(t, v1+"/memory/memory.max_usage_in_bytes", "4194304\n")
	putFile(t, v1+"/memory/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
	for name, root := range map[string]string{"v1": v1, "v2": v2} {
		g := &memoryGuard{limit: 8 << 20, cgroup: cgroups.MemoryOf(root, ""), killed: map[int]time.Time{}}
		st := g.state()
		if st.UsedBytes != 3<<20 || st.PeakBytes != 4<<20 || st.OOMKills != 1 || st.Enforced {
			t.Errorf("%s: %+v", name, st)
		}
		mark := oomMark{oomKills: 0}
		if !g.lostToOOM(mark, 1, 137) {
			t.Errorf("%s: a SIGKILLed command after an OOM kill is not marked", name)
		}
		if g.lostToOOM(oomMark{oomKills: 1}, 1, 137) {
			t.Errorf("%s: marked with no new OOM kill", name)
		}
	}
}

func putFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
