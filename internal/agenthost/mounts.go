package agenthost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/warrenhq/warren/internal/runtime"
)

// ExtraMountDir is where extra mounts appear inside a workspace sandbox.
const ExtraMountDir = workspaceMount + "/extra"

// DefaultBlockedPatterns are refused whatever an allowlist says: places
// that hold credentials.
var DefaultBlockedPatterns = []string{
	".ssh", ".gnupg", ".aws", ".kube", ".docker", ".azure", ".config/gcloud", ".netrc", ".npmrc", ".pypirc",
	".env", ".env.*", "id_rsa*", "id_ed25519*", "id_ecdsa*", "*.pem", "*.key", "credentials", "credentials.*", ".git-credentials",
}

// Allowlist says which host paths may be mounted into workspaces.
type Allowlist struct {
	AllowedRoots []AllowedRoot `json:"allowedRoots"`
	// BlockedPatterns match any component of a path (shell patterns, or a
	// two-part pattern like .config/gcloud); they add to the defaults.
	BlockedPatterns []string `json:"blockedPatterns"`
	path            string
}

// AllowedRoot is a directory under which mounts are allowed.
type AllowedRoot struct {
	Path           string `json:"path"`
	AllowReadWrite bool   `json:"allowReadWrite"`
}

// LoadAllowlist reads the allowlist file. A missing file is an empty
// allowlist: every mount is refused, saying where the file should be.
func LoadAllowlist(path string) (*Allowlist, error) {
	a := &Allowlist{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read mount allowlist: %w", err)
	}
	if err := json.Unmarshal(b, a); err != nil {
		return nil, fmt.Errorf("parse mount allowlist %s: %w", path, err)
	}
	for i, r := range a.AllowedRoots {
		if !filepath.IsAbs(r.Path) {
			return nil, fmt.Errorf("mount allowlist %s: allowedRoots[%d].path %q must be absolute", path, i, r.Path)
		}
	}
	return a, nil
}

var mountNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Resolve checks a --mount HOSTPATH:NAME[:ro|rw] against the allowlist
// and returns the mount to make: the path's real location (symlinks and
// .. resolved first), read-only unless rw is asked and allowed.
func (a *Allowlist) Resolve(spec string) (runtime.Mount, error) {
	var m runtime.Mount
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" {
		return m, fmt.Errorf("--mount %q: want HOSTPATH:NAME[:ro|rw]", spec)
	}
	source, name := parts[0], parts[1]
	rw := false
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
		case "rw":
			rw = true
		default:
			return m, fmt.Errorf("--mount %q: mode %q must be ro or rw", spec, parts[2])
		}
	}
	if !mountNameRE.MatchString(name) {
		return m, fmt.Errorf("--mount %q: name %q must be letters, digits, . _ - (not starting with . or -)", spec, name)
	}
	abs, err := filepath.Abs(source)
	if err != nil {
		return m, fmt.Errorf("--mount %q: %w", spec, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return m, fmt.Errorf("--mount %q: %w", spec, err)
	}
	if pat := a.blocked(real); pat != "" {
		return m, fmt.Errorf("--mount %q: %s is refused: it matches the blocked pattern %q", spec, real, pat)
	}
	if len(a.AllowedRoots) == 0 {
		return m, fmt.Errorf("--mount %q: no allowed roots; list them in %s", spec, a.path)
	}
	for _, r := range a.AllowedRoots {
		root, err := filepath.EvalSymlinks(r.Path)
		if err != nil {
			continue
		}
		if real != root && !strings.HasPrefix(real, strings.TrimSuffix(root, "/")+"/") {
			continue
		}
		if rw && !r.AllowReadWrite {
			return m, fmt.Errorf("--mount %q: %s is under %s, which the allowlist allows read-only", spec, real, r.Path)
		}
		return runtime.Mount{Source: real, Target: ExtraMountDir + "/" + name, ReadOnly: !rw}, nil
	}
	return m, fmt.Errorf("--mount %q: %s is not under any allowed root in %s", spec, real, a.path)
}

// CheckWorkspace decides whether a directory may become a workspace
// through the API (POST /workspaces): its real path must be under an
// allowed root that allows read-write, since a workspace is mounted
// read-write, and match no blocked pattern. It returns the real path.
func (a *Allowlist) CheckWorkspace(path string) (string, error) {
	real, err := a.realPath(path)
	if err != nil {
		return "", err
	}
	if len(a.AllowedRoots) == 0 {
		return "", fmt.Errorf("path %s: adding workspaces through the API needs an allowed root in %s", real, a.path)
	}
	for _, r := range a.AllowedRoots {
		root, err := filepath.EvalSymlinks(r.Path)
		if err != nil || (real != root && !strings.HasPrefix(real, strings.TrimSuffix(root, "/")+"/")) {
			continue
		}
		if !r.AllowReadWrite {
			return "", fmt.Errorf("path %s: it is under %s, which %s allows read-only; a workspace is mounted read-write", real, r.Path, a.path)
		}
		return real, nil
	}
	return "", fmt.Errorf("path %s is not under any allowed root in %s", real, a.path)
}

// CheckBlocked refuses a path that matches a blocked pattern (a
// workspace named on the command line), returning its real path.
func (a *Allowlist) CheckBlocked(path string) (string, error) {
	return a.realPath(path)
}

// realPath resolves a path and refuses it if it is blocked.
func (a *Allowlist) realPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("path %s: %w", path, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("path %s: %w", path, err)
	}
	if pat := a.blocked(real); pat != "" {
		return "", fmt.Errorf("path %s is refused: it matches the blocked pattern %q", real, pat)
	}
	return real, nil
}

// blocked returns the pattern a path matches, or "".
func (a *Allowlist) blocked(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for _, pat := range append(append([]string(nil), DefaultBlockedPatterns...), a.BlockedPatterns...) {
		pp := strings.Split(strings.Trim(pat, "/"), "/")
		for i := 0; i+len(pp) <= len(parts); i++ {
			match := true
			for j, p := range pp {
				if ok, _ := filepath.Match(p, parts[i+j]); !ok {
					match = false
					break
				}
			}
			if match {
				return pat
			}
		}
	}
	return ""
}
