package guest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nextChange reads a watch stream until an event of that type and name.
func nextChange(t *testing.T, s *WatchStream, kind, name string) *WatchEvent {
	t.Helper()
	var seen []string
	for {
		ev, err := s.Next()
		if err != nil {
			t.Fatalf("waiting for %s %s: %v (seen %q)", kind, name, err, seen)
		}
		if ev.Type == kind && ev.Name == name {
			return ev
		}
		seen = append(seen, ev.Type+" "+ev.Name)
	}
}

func TestWatchStreamsChanges(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	dir := t.TempDir()
	s, err := c.Watch(ctx, WatchRequest{Path: dir, Recursive: true, Entry: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ev, err := s.Next(); err != nil || ev.Type != WatchStarted {
		t.Fatalf("first event = %+v, %v; want start", ev, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ev := nextChange(t, s, WatchCreate, "a.txt")
	if ev.Entry == nil || ev.Entry.Path != filepath.Join(dir, "a.txt") {
		t.Fatalf("create without its entry: %+v", ev)
	}
	nextChange(t, s, WatchWrite, "a.txt")
	// A directory made after the watch began is followed too.
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	nextChange(t, s, WatchCreate, "sub")
	if err := os.WriteFile(filepath.Join(dir, "sub", "b.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	nextChange(t, s, WatchCreate, "sub/b.txt")
	if err := os.Rename(filepath.Join(dir, "a.txt"), filepath.Join(dir, "c.txt")); err != nil {
		t.Fatal(err)
	}
	nextChange(t, s, WatchRename, "a.txt")
	nextChange(t, s, WatchCreate, "c.txt")
	if err := os.Chmod(filepath.Join(dir, "c.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	nextChange(t, s, WatchChmod, "c.txt")
	if err := os.Remove(filepath.Join(dir, "c.txt")); err != nil {
		t.Fatal(err)
	}
	nextChange(t, s, WatchRemove, "c.txt")
}

func TestWatchNotRecursive(t *testing.T) {
	c := startAgent(t)
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := c.Watch(context.Background(), WatchRequest{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "sub", "deep.txt"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "top.txt"), nil, 0o644)
	ev, err := s.Next()
	// The change in sub is to sub's contents; a plain watch of dir sees
	// only its own entries.
	if err != nil || ev.Name != "top.txt" {
		t.Fatalf("event = %+v, %v; want top.txt first", ev, err)
	}
}

func TestWatchRefusals(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		path   string
		status int
	}{{"relative/dir", 400}, {file, 400}, {"/no/such/dir", 404}} {
		_, err := c.Watch(ctx, WatchRequest{Path: tc.path})
		var ae *AgentError
		if !errors.As(err, &ae) || ae.Status != tc.status {
			t.Errorf("watch %q: %v; want %d", tc.path, err, tc.status)
		}
		_, err = c.CreateWatcher(ctx, WatchRequest{Path: tc.path})
		if !errors.As(err, &ae) || ae.Status != tc.status {
			t.Errorf("watcher %q: %v; want %d", tc.path, err, tc.status)
		}
	}
	if _, err := c.WatcherEvents(ctx, "w999"); !isStatus(err, 404) {
		t.Errorf("events of an unknown watcher: %v", err)
	}
	if err := c.RemoveWatcher(ctx, "w999"); !isStatus(err, 404) {
		t.Errorf("remove an unknown watcher: %v", err)
	}
	// The number of watches is bounded, and a freed one can be reused.
	dir := t.TempDir()
	var ids []string
	for {
		id, err := c.CreateWatcher(ctx, WatchRequest{Path: dir})
		if err != nil {
			if !isStatus(err, 429) {
				t.Fatalf("watcher %d: %v; want 429 at the limit", len(ids), err)
			}
			break
		}
		ids = append(ids, id)
		if len(ids) > maxWatches {
			t.Fatalf("more than %d watchers were created", maxWatches)
		}
	}
	if len(ids) != maxWatches {
		t.Fatalf("%d watchers before the limit; want %d", len(ids), maxWatches)
	}
	if err := c.RemoveWatcher(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateWatcher(ctx, WatchRequest{Path: dir}); err != nil {
		t.Fatalf("a watcher after one was removed: %v", err)
	}
}

func TestWatcherKeepsEventsUntilRead(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	dir := t.TempDir()
	id, err := c.CreateWatcher(ctx, WatchRequest{Path: dir, Recursive: true})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "one"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "two"), nil, 0o644)
	var names []string
	deadline := time.Now().Add(5 * time.Second)
	for len(names) < 2 && time.Now().Before(deadline) {
		evs, err := c.WatcherEvents(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Type == WatchCreate {
				names = append(names, ev.Name)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Equal(names, []string{"one", "two"}) {
		t.Fatalf("created = %q", names)
	}
	// Read events are gone.
	if evs, err := c.WatcherEvents(ctx, id); err != nil || len(evs) != 0 {
		t.Fatalf("second read = %+v, %v; want none", evs, err)
	}
	if err := c.RemoveWatcher(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WatcherEvents(ctx, id); !isStatus(err, 404) {
		t.Fatalf("events of a removed watcher: %v", err)
	}
}

// A watcher nobody reads stops at its limit and says so, rather than
// growing without bound or dropping changes silently.
func TestWatcherOverflowIsTold(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	dir := t.TempDir()
	id, err := c.CreateWatcher(ctx, WatchRequest{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	// More unread changes than a watcher holds, in rounds until one
	// round outpaces the reader. Distinct names: the kernel merges
	// identical unread events.
	deadline := time.Now().Add(30 * time.Second)
	n := 0
	for time.Now().Before(deadline) {
		for range maxHeldEvents + 500 {
			n++
			if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(n)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		_, err := c.WatcherEvents(ctx, id)
		if isStatus(err, 429) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("the watcher never reported its overflow")
}

// A file written through the agent shows as created under its own name;
// the temporary file it went through does not show.
func TestWatchLeavesOutTheAgentsTemporaryFiles(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	dir := t.TempDir()
	s, err := c.Watch(ctx, WatchRequest{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteFile(ctx, filepath.Join(dir, "written.txt"), "", strings.NewReader("data")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "marker"), nil, 0o644)
	var names []string
	for {
		ev, err := s.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Name == "marker" {
			break
		}
		names = append(names, ev.Type+" "+ev.Name)
	}
	if !slices.Equal(names, []string{"create written.txt"}) {
		t.Fatalf("events before the marker: %q", names)
	}
	for name, want := range map[string]bool{".a.warren-123": true, ".a.warren-": false, "a.warren-1": false, ".a.warren-12x": false} {
		if isAgentTemp(name) != want {
			t.Errorf("isAgentTemp(%q) = %v", name, !want)
		}
	}
}
