package agenthost

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/warrenhq/warren/internal/inroot"
	"github.com/warrenhq/warren/internal/runtime"
)

// gitMounts keeps the agent from planting code that git on the host
// would run. The workspace is mounted read-write, and git executes hooks
// and commands named in a repository's config (core.fsmonitor,
// core.hooksPath, core.sshCommand, filters, aliases) the next time the
// user runs it on the host. So the repository's .git becomes a mount
// point of its own (it cannot be renamed or replaced from inside), and
// its hooks, config and submodule repositories are mounted read-only on
// top. Commits, branches and the index stay writable; `git config` and
// new hooks do not.
//
// A .git that is a file (a worktree or submodule pointer) is mounted
// read-only. A .git that is a symlink is refused: where it leads is the
// host's business, not something to mount.
func gitMounts(workspace string) ([]runtime.Mount, error) {
	fi, err := os.Lstat(filepath.Join(workspace, ".git"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inspect %s/.git: %w", workspace, err)
	}
	target := func(name string) string { return filepath.Join(workspaceMount, name) }
	source := func(name string) string { return filepath.Join(workspace, name) }
	switch {
	case fi.Mode()&os.ModeSymlink != 0:
		return nil, fmt.Errorf("%s/.git is a symlink; warren will not mount a workspace whose repository lives elsewhere (use the repository's own directory)", workspace)
	case fi.Mode().IsRegular():
		return []runtime.Mount{{Source: source(".git"), Target: target(".git"), ReadOnly: true}}, nil
	case !fi.IsDir():
		return nil, fmt.Errorf("%s/.git is neither a directory nor a file", workspace)
	}
	// A hooks directory always exists, so the agent cannot create one.
	// It is made inside the workspace's tree: a symlink an earlier
	// session left in .git cannot lead the host elsewhere.
	if err := inroot.MkdirAll(workspace, ".git/hooks", 0o755); err != nil {
		return nil, fmt.Errorf("prepare %s/.git/hooks: %w", workspace, err)
	}
	mounts := []runtime.Mount{{Source: source(".git"), Target: target(".git")}}
	for _, name := range []string{".git/hooks", ".git/config", ".git/config.worktree", ".git/modules"} {
		fi, err := inroot.Plain(workspace, name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			// A symlink here was planted: mounting it would follow it on
			// the host.
			return nil, fmt.Errorf("%s/%s is not a plain file or directory (%v); remove it before starting the workspace", workspace, name, err)
		}
		if !fi.IsDir() && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s/%s is not a plain file or directory", workspace, name)
		}
		mounts = append(mounts, runtime.Mount{Source: source(name), Target: target(name), ReadOnly: true})
	}
	return mounts, nil
}
