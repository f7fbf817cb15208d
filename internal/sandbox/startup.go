package sandbox

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/wire"
)

// Bounds on startup work.
const (
	maxReadyTimeout   = 10 * time.Minute
	startupCmdTimeout = 30 * time.Minute
	gitTimeout        = 15 * time.Minute
)

// validateStartup checks files and the startup spec, naming the field at
// fault, and merges startup env into the sandbox's.
func validateStartup(req *CreateRequest, sp *spec) error {
	check := func(files []wire.File, field string) error {
		for i, f := range files {
			fld := fmt.Sprintf("%s[%d]", field, i)
			if !strings.HasPrefix(f.Path, "/") {
				return badRequest(fld+".path", "path %q must be absolute", f.Path)
			}
			switch f.Encoding {
			case "", "utf8", "utf-8":
			case "base64":
				if _, err := base64.StdEncoding.DecodeString(f.Content); err != nil {
					return badRequest(fld+".content", "content is not valid base64: %v", err)
				}
			default:
				return badRequest(fld+".encoding", "encoding must be utf8 or base64, got %q", f.Encoding)
			}
			if f.Mode != "" {
				if v, err := strconv.ParseUint(f.Mode, 8, 32); err != nil || v > 0o7777 {
					return badRequest(fld+".mode", "mode %q is not an octal permission", f.Mode)
				}
			}
		}
		return nil
	}
	if err := check(req.Files, "files"); err != nil {
		return err
	}
	st := req.Startup
	if st == nil {
		return nil
	}
	if err := check(st.Files, "startup.files"); err != nil {
		return err
	}
	if g := st.Git; g != nil {
		if g.URL == "" {
			return badRequest("startup.git.url", "git url is required")
		}
		if g.Depth < 0 {
			return badRequest("startup.git.depth", "depth must be 0 (full history) or positive")
		}
		if strings.HasPrefix(g.Ref, "-") || strings.HasPrefix(g.URL, "-") {
			return badRequest("startup.git", "url and ref may not start with -")
		}
	}
	for k := range st.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return badRequest("startup.env", "env name %q is not valid", k)
		}
	}
	seen := map[string]bool{}
	for i, c := range st.Commands {
		fld := fmt.Sprintf("startup.commands[%d]", i)
		if !guest.ValidCommandName(c.Name) {
			return badRequest(fld+".name", "name %q must be letters, digits, _ . - (up to 64)", c.Name)
		}
		if seen[c.Name] {
			return badRequest(fld+".name", "command name %q is used twice", c.Name)
		}
		seen[c.Name] = true
		if strings.TrimSpace(c.Run) == "" {
			return badRequest(fld+".run", "run is required")
		}
	}
	for i, p := range st.Ports {
		if p < 1 || p > 65535 {
			return badRequest(fmt.Sprintf("startup.ports[%d]", i), "port must be between 1 and 65535, got %d", p)
		}
	}
	if r := st.Ready; r != nil {
		n := 0
		for _, v := range []string{r.HTTP, r.TCP, r.Command} {
			if v != "" {
				n++
			}
		}
		if n != 1 {
			return badRequest("startup.ready", "give exactly one of http, tcp or command")
		}
		if r.TimeoutSeconds < 0 || time.Duration(r.TimeoutSeconds*float64(time.Second)) > maxReadyTimeout {
			return badRequest("startup.ready.timeout_seconds", "timeout_seconds must be between 0 and %d", int(maxReadyTimeout.Seconds()))
		}
	}
	if len(st.Env) > 0 {
		if sp.Env == nil {
			sp.Env = map[string]string{}
		}
		for k, v := range st.Env {
			sp.Env[k] = v
		}
	}
	for _, p := range st.Ports {
		if !slices.Contains(sp.Ports, p) {
			sp.Ports = append(sp.Ports, p)
		}
	}
	slices.Sort(sp.Ports)
	return nil
}

// runStartup writes files, clones, runs commands and waits for readiness,
// adding git_ms, startup_ms and ready_ms to timings.
func (m *Manager) runStartup(ctx context.Context, l *live, req *CreateRequest, timings map[string]int64) error {
	files := append([]wire.File(nil), req.Files...)
	if req.Startup != nil {
		files = append(files, req.Startup.Files...)
	}
	for i, f := range files {
		content := []byte(f.Content)
		if f.Encoding == "base64" {
			content, _ = base64.StdEncoding.DecodeString(f.Content)
		}
		if _, err := l.agent.WriteFile(ctx, f.Path, f.Mode, strings.NewReader(string(content))); err != nil {
			return badRequest(fmt.Sprintf("files[%d].path", i), "write %s: %v", f.Path, err)
		}
	}
	st := req.Startup
	if st == nil {
		return nil
	}
	cwd := "/"
	if g := st.Git; g != nil {
		t := time.Now()
		argv := []string{"git", "clone", "--quiet"}
		if g.Depth > 0 {
			argv = append(argv, "--depth", strconv.Itoa(g.Depth))
		}
		if g.Ref != "" {
			argv = append(argv, "--branch", g.Ref)
		}
		argv = append(argv, "--", g.URL, "/workspace")
		// /workspace exists empty in warren's images; git wants it absent
		// or empty, which it is.
		res, err := l.agent.Exec(ctx, &wire.ExecRequest{Argv: argv, Env: l.withEnv(map[string]string{"GIT_TERMINAL_PROMPT": "0"}), TimeoutSeconds: gitTimeout.Seconds()})
		if err != nil {
			return fmt.Errorf("git clone: %w", err)
		}
		if res.ExitCode != 0 {
			// The URL may carry credentials, and git may repeat it.
			return badRequest("startup.git", "%s", redact(fmt.Sprintf("git clone %s failed (exit %d): %s", g.URL, res.ExitCode, tail(res.Stderr+res.Stdout))))
		}
		timings["git_ms"] = time.Since(t).Milliseconds()
		cwd = "/workspace"
	}
	t := time.Now()
	user := ""
	l.fill(&cwd, &user)
	for i, c := range st.Commands {
		fld := fmt.Sprintf("startup.commands[%d]", i)
		if c.Background {
			cmd, err := l.agent.StartCommand(ctx, &wire.CommandRequest{Name: c.Name, Cmd: c.Run, Env: l.withEnv(nil), Cwd: cwd, User: user})
			if err != nil {
				return fmt.Errorf("start %s: %w", c.Name, err)
			}
			if cmd.State != "running" {
				code := "unknown"
				if cmd.ExitCode != nil {
					code = strconv.Itoa(*cmd.ExitCode)
				}
				return badRequest(fld, "background command %q did not start (exit %s)", c.Name, code)
			}
			continue
		}
		res, err := l.agent.Exec(ctx, &wire.ExecRequest{Cmd: c.Run, Env: l.withEnv(nil), Cwd: cwd, User: user, TimeoutSeconds: startupCmdTimeout.Seconds()})
		if err != nil {
			return fmt.Errorf("run %s: %w", c.Name, err)
		}
		if res.ExitCode != 0 {
			return badRequest(fld, "startup command %q exited %d: %s", c.Name, res.ExitCode, tail(res.Stdout+res.Stderr))
		}
	}
	timings["startup_ms"] = time.Since(t).Milliseconds()
	if r := st.Ready; r != nil {
		t := time.Now()
		res, err := l.agent.Ready(ctx, r)
		if err != nil {
			return fmt.Errorf("ready check: %w", err)
		}
		if !res.Ready {
			timeout := r.TimeoutSeconds
			if timeout == 0 {
				timeout = 30
			}
			return badRequest("startup.ready", "the sandbox was not ready within %gs (last attempt: %s)", timeout, tail(res.Last))
		}
		timings["ready_ms"] = time.Since(t).Milliseconds()
	}
	return nil
}

// credentialsInURL matches the user[:password]@ part of a URL.
var credentialsInURL = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@`)

// redact hides credentials in URLs, for what is stored and logged.
func redact(s string) string { return credentialsInURL.ReplaceAllString(s, "${1}***@") }

// tail keeps the end of a command's output for an error message.
func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// StartCommand starts a named background command in a sandbox.
func (m *Manager) StartCommand(ctx context.Context, org, id string, req *wire.CommandRequest) (*wire.Command, error) {
	if !guest.ValidCommandName(req.Name) {
		return nil, badRequest("name", "name %q must be letters, digits, _ . - (up to 64)", req.Name)
	}
	if strings.TrimSpace(req.Cmd) == "" {
		return nil, badRequest("cmd", "cmd is required")
	}
	if req.Cwd != "" && !strings.HasPrefix(req.Cwd, "/") {
		return nil, badRequest("cwd", "cwd %q must be absolute", req.Cwd)
	}
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	r := *req
	r.Env = l.withEnv(req.Env)
	l.fill(&r.Cwd, &r.User)
	c, err := l.agent.StartCommand(ctx, &r)
	return c, m.callFailed(ctx, l, err)
}

// Commands lists a sandbox's background commands.
func (m *Manager) Commands(ctx context.Context, org, id string) ([]wire.Command, error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, err
	}
	defer done()
	out, err := l.agent.Commands(ctx)
	return out, m.callFailed(ctx, l, err)
}

// CommandLogs streams a background command's output; with follow it
// lasts until the command exits, and the sandbox counts as in use.
func (m *Manager) CommandLogs(ctx context.Context, org, id, name string, follow bool) (io.ReadCloser, func(), error) {
	l, done, err := m.use(ctx, org, id)
	if err != nil {
		return nil, nil, err
	}
	rc, err := l.agent.CommandLogs(ctx, name, follow)
	if err != nil {
		done()
		return nil, nil, m.callFailed(ctx, l, err)
	}
	return rc, both(l.hold(), done), nil
}
