package bridge

import (
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"
)

// The files a reply changed are found by comparing the workspace before
// and after it. The agent controls the workspace: the walk stays inside
// it (os.Root: no symlink or ".." leads out, and symlinks are listed, not
// followed) and is bounded in entries and time.
const (
	maxWalk     = 20000
	walkTime    = 2 * time.Second
	listChanged = 15
)

type stamp struct {
	size  int64
	mtime time.Time
	mode  fs.FileMode
}

type tree struct {
	files    map[string]stamp
	complete bool
	root     string
}

// snapshot records the workspace's files; "" (no path) records nothing.
func snapshot(root string) *tree {
	t := &tree{files: map[string]stamp{}, root: root}
	if root == "" {
		return t
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return t
	}
	defer r.Close()
	deadline := time.Now().Add(walkTime)
	t.complete = true
	_ = fs.WalkDir(r.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if len(t.files) >= maxWalk || time.Now().After(deadline) {
			t.complete = false
			return fs.SkipAll
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return fs.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		t.files[p] = stamp{size: info.Size(), mtime: info.ModTime(), mode: info.Mode()}
		return nil
	})
	return t
}

// changes says which files were added, changed or removed since the
// snapshot, in a line or a few; "" when none were.
func (t *tree) changes() string {
	if t.root == "" {
		return ""
	}
	after := snapshot(t.root)
	var added, changed, removed []string
	for p, s := range after.files {
		old, ok := t.files[p]
		switch {
		case !ok:
			added = append(added, p)
		case old != s:
			changed = append(changed, p)
		}
	}
	if t.complete && after.complete {
		for p := range t.files {
			if _, ok := after.files[p]; !ok {
				removed = append(removed, p)
			}
		}
	}
	n := len(added) + len(changed) + len(removed)
	if n == 0 {
		return ""
	}
	var lines []string
	for _, g := range []struct {
		mark  string
		paths []string
	}{{"+", added}, {"~", changed}, {"-", removed}} {
		sort.Strings(g.paths)
		for _, p := range g.paths {
			lines = append(lines, g.mark+" "+truncateUnits(p, 200))
		}
	}
	more := ""
	if len(lines) > listChanged {
		more = fmt.Sprintf("\n… and %d more", len(lines)-listChanged)
		lines = lines[:listChanged]
	}
	head := fmt.Sprintf("Files changed (%d):", n)
	if !t.complete || !after.complete {
		head = fmt.Sprintf("Files changed (%d, of the first %d looked at):", n, maxWalk)
	}
	return head + "\n" + strings.Join(lines, "\n") + more
}
