package guest

import (
	"os"
	"syscall"
	"testing"
	"time"
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
