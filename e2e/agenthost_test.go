package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sidecarDir is where the tests keep the OpenCode that warren downloads
// and verifies, so each machine fetches it once.
func sidecarDir() string {
	if d := os.Getenv("WARREN_SIDECAR_DIR"); d != "" {
		return d
	}
	root, _ := filepath.Abs("..")
	return filepath.Join(root, ".cache/sidecars")
}

// agentHost is one `warren start` process.
type agentHost struct {
	cmd     *exec.Cmd
	logs    *syncBuffer
	pairing struct {
		URL         string   `json:"url"`
		ClientToken string   `json:"client_token"`
		HostToken   string   `json:"host_token"`
		RunID       string   `json:"run_id"`
		Bridge      []string `json:"bridge"`
		Workspaces  []struct {
			ID        string `json:"id"`
			Path      string `json:"path"`
			Sandbox   string `json:"sandbox"`
			SandboxID string `json:"sandbox_id"`
			Attach    string `json:"attach"`
			Password  string `json:"opencode_password"`
			ProxyURL  string `json:"proxy_url"`
		} `json:"workspaces"`
	}
}

func startArgs(ws, data string, extra ...string) []string {
	return append([]string{"start", "--workspace", ws, "--sandbox", "gvisor", "--port", "0", "--data-dir", data,
		"--sidecar-dir", sidecarDir(), "--runsc", runscBin}, extra...)
}

func startEnv() []string { return append(os.Environ(), "WARREN_IMAGE_DIR="+imageDir) }

// startAgentHost runs `warren start --json` and waits for its pairing.
func startAgentHost(t *testing.T, ws, data string, extra ...string) *agentHost {
	t.Helper()
	return startAgentHostEnv(t, ws, data, nil, extra...)
}

// startAgentHostEnv is startAgentHost with more environment variables.
func startAgentHostEnv(t *testing.T, ws, data string, env []string, extra ...string) *agentHost {
	t.Helper()
	h := &agentHost{logs: &syncBuffer{}}
	h.cmd = exec.Command(warrenBin, append(startArgs(ws, data, extra...), "--json")...)
	h.cmd.Env = append(startEnv(), env...)
	h.cmd.Stderr = h.logs
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan error, 1)
	go func() {
		err := json.NewDecoder(bufio.NewReader(out)).Decode(&h.pairing)
		ready <- err
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case err := <-ready:
		if err != nil || len(h.pairing.Workspaces) != 1 {
			t.Fatalf("warren start did not pair: %v %+v\n%s", err, h.pairing, h.logs.String())
		}
	case <-time.After(5 * time.Minute):
		t.Fatalf("warren start did not pair in 5 minutes\n%s", h.logs.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("warren start log:\n%s", h.logs.String())
		}
	})
	t.Cleanup(h.stop)
	return h
}

// stop interrupts warren start and waits for it to finish stopping.
func (h *agentHost) stop() {
	if h.cmd.ProcessState != nil {
		return
	}
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
}

// call makes a request to the workspace server and decodes a JSON answer.
func (h *agentHost) call(t *testing.T, method, path string, headers map[string]string, body any, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.pairing.URL+path, r)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func TestAgentHost(t *testing.T) {
	ws := t.TempDir()
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	os.WriteFile(filepath.Join(ws, "README.md"), []byte("# a workspace\n"), 0o644)
	// The workspace is a git repository: the agent must not be able to
	// plant what git on the host would run.
	for _, args := range [][]string{{"init", "-q"}, {"-c", "user.email=e@x", "-c", "user.name=e", "commit", "-q", "--allow-empty", "-m", "first"}} {
		if out, err := exec.Command("git", append([]string{"-C", ws}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	configBefore, _ := os.ReadFile(filepath.Join(ws, ".git", "config"))

	t.Run("check", func(t *testing.T) {
		cmd := exec.Command(warrenBin, startArgs(ws, data, "--check", "--check-events", "--log-format", "json", "--run-id", "run_checktest", "--verbose")...)
		cmd.Env = startEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("start --check --check-events: %v\n%s", err, stderr.String())
		}
		if !strings.Contains(stderr.String(), "(downloaded, version 1.18.33)") {
			t.Fatalf("--verbose does not say which OpenCode runs:\n%s", stderr.String())
		}
		// JSON logs: every record parses and carries the run id.
		checks := map[string]bool{}
		for _, line := range strings.Split(stderr.String(), "\n") {
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line is not JSON: %q", line)
			}
			for _, k := range []string{"time", "severity", "body", "service.name", "pid"} {
				if _, ok := rec[k]; !ok {
					t.Fatalf("log record without %s: %q", k, line)
				}
			}
			if rec["run.id"] != "run_checktest" {
				t.Fatalf("log record without the run id: %q", line)
			}
			if c, ok := rec["check"].(string); ok && rec["body"] == "check passed" {
				checks[c] = true
			}
		}
		for _, want := range []string{"health", "workspaces without a token", "workspaces with the client token", "session create through the proxy", "session messages through the proxy", "events"} {
			if !checks[want] {
				t.Fatalf("check %q did not pass (passed: %v)", want, checks)
			}
		}
	})

	var sessionID string
	t.Run("serve", func(t *testing.T) {
		h := startAgentHost(t, ws, data)
		p := &h.pairing
		w := p.Workspaces[0]
		if w.Sandbox != "gvisor" || w.SandboxID == "" || w.Path == "" {
			t.Fatalf("pairing: %+v", p)
		}
		var health map[string]any
		if code := h.call(t, "GET", "/health", nil, nil, &health); code != 200 || health["ok"] != true {
			t.Fatalf("/health: %d %v", code, health)
		}
		if code := h.call(t, "GET", "/workspaces", nil, nil, nil); code != 401 {
			t.Fatalf("/workspaces without a token: %d", code)
		}
		if code := h.call(t, "GET", "/workspaces", bearer("wct_wrong"), nil, nil); code != 401 {
			t.Fatalf("/workspaces with a wrong token: %d", code)
		}
		var list struct {
			Items []struct {
				ID, Path, BaseURL string
			} `json:"items"`
			ActiveID string `json:"activeId"`
		}
		if code := h.call(t, "GET", "/workspaces", bearer(p.ClientToken), nil, &list); code != 200 || len(list.Items) != 1 || list.ActiveID != w.ID {
			t.Fatalf("/workspaces: %d %+v", code, list)
		}

		proxy := "/w/" + w.ID + "/opencode"
		var session struct{ ID string }
		if code := h.call(t, "POST", proxy+"/session", bearer(p.ClientToken), map[string]any{"title": "e2e"}, &session); code != 200 || session.ID == "" {
			t.Fatalf("create session: %d %+v", code, session)
		}
		sessionID = session.ID
		var got struct{ ID, Directory string }
		if code := h.call(t, "GET", proxy+"/session/"+session.ID, bearer(p.ClientToken), nil, &got); code != 200 || got.ID != session.ID || got.Directory != "/workspace" {
			t.Fatalf("get session: %d %+v", code, got)
		}
		// A shell command through the proxy runs in the gVisor sandbox and
		// writes into the host's workspace.
		cmd := "echo made-in-sandbox > /workspace/agent.txt; dmesg | head -1 > /workspace/kernel.txt"
		if code := h.call(t, "POST", proxy+"/session/"+session.ID+"/shell", bearer(p.ClientToken), map[string]any{"agent": "build", "command": cmd}, nil); code != 200 {
			t.Fatalf("shell through the proxy: %d", code)
		}
		if b, err := os.ReadFile(filepath.Join(ws, "agent.txt")); err != nil || string(b) != "made-in-sandbox\n" {
			t.Fatalf("agent.txt in the host workspace: %q %v", b, err)
		}
		if b, _ := os.ReadFile(filepath.Join(ws, "kernel.txt")); !strings.Contains(string(b), "gVisor") {
			t.Fatalf("the shell did not run under gVisor: dmesg says %q", b)
		}
		// The agent plants hooks and git config, and tries to swap .git
		// for its own; commits still work.
		// (OpenCode evals the command inside double quotes, one line: no
		// variables, no double quotes, no newlines.)
		plant := strings.Join([]string{
			"cd /workspace; : > git-attack.txt",
			"printf '#!/bin/sh\\ntouch /tmp/pwned\\n' > .git/hooks/pre-commit && echo hook-written >> git-attack.txt",
			"git config core.fsmonitor 'touch /tmp/pwned' && echo config-written >> git-attack.txt",
			"mv .git .git-old && echo git-moved >> git-attack.txt",
			"rm -rf .git/hooks; test -d .git/hooks || echo hooks-removed >> git-attack.txt",
			"git -c user.email=a@x -c user.name=agent commit -q --allow-empty -m from-the-agent && echo committed >> git-attack.txt",
		}, "; ")
		if code := h.call(t, "POST", proxy+"/session/"+session.ID+"/shell", bearer(p.ClientToken), map[string]any{"agent": "build", "command": plant}, nil); code != 200 {
			t.Fatalf("shell through the proxy: %d", code)
		}
		if b, _ := os.ReadFile(filepath.Join(ws, "git-attack.txt")); strings.TrimSpace(string(b)) != "committed" {
			t.Fatalf("git attack: %q, want only the commit to succeed", b)
		}
		if _, err := os.Stat(filepath.Join(ws, ".git", "hooks", "pre-commit")); err == nil {
			t.Fatal("the agent planted a hook in the host's repository")
		}
		if after, _ := os.ReadFile(filepath.Join(ws, ".git", "config")); string(after) != string(configBefore) {
			t.Fatalf("the agent changed the repository's config:\n%s", after)
		}
		if out, _ := exec.Command("git", "-C", ws, "log", "--format=%s").Output(); !strings.Contains(string(out), "from-the-agent") {
			t.Fatalf("the agent's commit is not in the host's repository: %q", out)
		}
		var messages []json.RawMessage
		if code := h.call(t, "GET", proxy+"/session/"+session.ID+"/message", bearer(p.ClientToken), nil, &messages); code != 200 || len(messages) == 0 {
			t.Fatalf("messages: %d, %d messages", code, len(messages))
		}
		// The active workspace is also at /opencode.
		if code := h.call(t, "GET", "/opencode/session/"+session.ID, bearer(p.ClientToken), nil, nil); code != 200 {
			t.Fatalf("/opencode/session: %d", code)
		}

		// Scoped tokens: only the host mints them; a viewer reads, never writes.
		host := map[string]string{"X-OpenWork-Host-Token": p.HostToken}
		if code := h.call(t, "POST", "/tokens", bearer(p.ClientToken), map[string]string{"scope": "viewer"}, nil); code != 401 && code != 403 {
			t.Fatalf("client token minting a token: %d", code)
		}
		if code := h.call(t, "POST", "/tokens", host, map[string]string{"scope": "admin"}, nil); code != 400 {
			t.Fatalf("minting an unknown scope: %d", code)
		}
		var minted struct{ Token, ID, Scope string }
		if code := h.call(t, "POST", "/tokens", host, map[string]string{"scope": "viewer", "label": "e2e"}, &minted); code != 201 || minted.Token == "" {
			t.Fatalf("mint viewer: %d %+v", code, minted)
		}
		if code := h.call(t, "GET", proxy+"/session/"+session.ID, bearer(minted.Token), nil, nil); code != 200 {
			t.Fatalf("viewer GET: %d", code)
		}
		if code := h.call(t, "POST", proxy+"/session", bearer(minted.Token), map[string]any{}, nil); code != 403 {
			t.Fatalf("viewer POST: %d, want 403", code)
		}
		// A viewer cannot open a terminal: no WebSocket that takes input.
		if code := h.call(t, "GET", proxy+"/pty/pty_x/connect", map[string]string{"Authorization": "Bearer " + minted.Token, "Upgrade": "websocket", "Connection": "Upgrade"}, nil, nil); code != 403 {
			t.Fatalf("viewer opening a terminal: %d, want 403", code)
		}
		var tokens struct {
			Items []map[string]any `json:"items"`
		}
		if code := h.call(t, "GET", "/tokens", host, nil, &tokens); code != 200 || len(tokens.Items) != 1 {
			t.Fatalf("list tokens: %d %+v", code, tokens)
		}
		_, hasHash := tokens.Items[0]["hash"]
		if _, ok := tokens.Items[0]["token"]; ok || hasHash || strings.Contains(h.logs.String(), minted.Token) {
			t.Fatal("a minted token is listed or logged in the clear")
		}
		// Only owners and the host answer permission requests.
		var collab struct{ Token string }
		if code := h.call(t, "POST", "/tokens", host, map[string]string{"scope": "collaborator"}, &collab); code != 201 {
			t.Fatalf("mint collaborator: %d", code)
		}
		if code := h.call(t, "POST", proxy+"/session", bearer(collab.Token), map[string]any{}, nil); code != 200 {
			t.Fatalf("collaborator POST: %d", code)
		}
		// In auto mode a collaborator may run commands, but never change
		// OpenCode's config (its permission rules) or credentials.
		if code := h.call(t, "POST", proxy+"/session/"+session.ID+"/shell", bearer(collab.Token), map[string]any{"agent": "build", "command": "true"}, nil); code != 200 {
			t.Fatalf("collaborator shell in auto mode: %d", code)
		}
		for _, r := range []struct{ method, path string }{{"PATCH", "/config"}, {"PUT", "/auth/openai"}, {"POST", "/mcp"}, {"POST", "/global/upgrade"}} {
			if code := h.call(t, r.method, proxy+r.path, bearer(collab.Token), map[string]any{"permission": map[string]string{"bash": "allow"}}, nil); code != 403 {
				t.Fatalf("collaborator %s %s: %d, want 403", r.method, r.path, code)
			}
		}
		for _, path := range []string{"/permission/per_x/reply", "/session/" + session.ID + "/permissions/per_x"} {
			if code := h.call(t, "POST", proxy+path, bearer(collab.Token), map[string]string{"reply": "once", "response": "once"}, nil); code != 403 {
				t.Fatalf("collaborator answering a permission at %s: %d, want 403", path, code)
			}
		}
		if code := h.call(t, "DELETE", "/tokens/"+minted.ID, host, nil, nil); code != 200 {
			t.Fatalf("revoke: %d", code)
		}
		if code := h.call(t, "GET", proxy+"/session/"+session.ID, bearer(minted.Token), nil, nil); code != 401 {
			t.Fatalf("revoked token: %d, want 401", code)
		}

		// Events stream through the proxy unbuffered.
		req, _ := http.NewRequest("GET", h.pairing.URL+proxy+"/event", nil)
		req.Header.Set("Authorization", "Bearer "+p.ClientToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		line := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "data:") {
					line <- sc.Text()
					return
				}
			}
		}()
		select {
		case l := <-line:
			if !strings.Contains(l, `"type"`) {
				t.Fatalf("event: %q", l)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no event through the proxy in 20s")
		}
		resp.Body.Close()

		// Every request is logged with method, path, status and duration.
		if !strings.Contains(h.logs.String(), "http.path=/w/"+w.ID+"/opencode/session") || !strings.Contains(h.logs.String(), "http.status=403") {
			t.Fatalf("requests not logged:\n%s", h.logs.String())
		}

		h.stop()
		if h.cmd.ProcessState.ExitCode() != 0 {
			t.Fatalf("warren start exited %d after SIGTERM", h.cmd.ProcessState.ExitCode())
		}
		if left := traces(t, &server{dataDir: data}, w.SandboxID); len(left) > 0 {
			t.Fatalf("the workspace sandbox left traces: %v", left)
		}
		if b, err := os.ReadFile(filepath.Join(ws, "agent.txt")); err != nil || len(b) == 0 {
			t.Fatal("workspace files did not survive the stop")
		}
	})

	t.Run("restart keeps the workspace and its sessions", func(t *testing.T) {
		if sessionID == "" {
			t.Fatal("the serve subtest made no session to look for")
		}
		h := startAgentHost(t, ws, data, "--connect-host", "agents.example.test")
		// Remote clients are pointed at the connect host.
		var list struct {
			Items []struct{ BaseURL string } `json:"items"`
		}
		if code := h.call(t, "GET", "/workspaces", bearer(h.pairing.ClientToken), nil, &list); code != 200 || len(list.Items) != 1 ||
			!strings.HasPrefix(list.Items[0].BaseURL, "http://agents.example.test:") {
			t.Fatalf("workspaces with --connect-host: %d %+v", code, list)
		}
		var sessions []struct{ ID string }
		if code := h.call(t, "GET", "/w/"+h.pairing.Workspaces[0].ID+"/opencode/session", bearer(h.pairing.ClientToken), nil, &sessions); code != 200 {
			t.Fatalf("list sessions: %d", code)
		}
		found := false
		for _, s := range sessions {
			found = found || s.ID == sessionID
		}
		if !found {
			t.Fatalf("session %s from before the restart is gone: %+v", sessionID, sessions)
		}
	})
}

// TestAgentHostOnHost: --sandbox none runs OpenCode directly on the host.
func TestAgentHostOnHost(t *testing.T) {
	ws := t.TempDir()
	data := t.TempDir()
	cmd := exec.Command(warrenBin, "start", "--workspace", ws, "--sandbox", "none", "--opencode-source", "downloaded", "--port", "0",
		"--data-dir", data, "--sidecar-dir", sidecarDir(), "--check", "--check-events")
	cmd.Env = startEnv()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "check passed") || !strings.Contains(string(out), "sandbox=none") {
		t.Fatalf("start --sandbox none --check: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(data, "sandboxes")); err == nil {
		t.Fatal("--sandbox none made sandboxes")
	}
}

// TestAgentHostDetach: --detach leaves everything running and returns;
// warren stop ends it and leaves nothing behind.
func TestAgentHostDetach(t *testing.T) {
	ws := t.TempDir()
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	// An extra read-only mount, as the allowlist allows.
	shared := t.TempDir()
	os.WriteFile(filepath.Join(shared, "hello.txt"), []byte("from the host\n"), 0o644)
	allow := filepath.Join(t.TempDir(), "mount-allowlist.json")
	ab, _ := json.Marshal(map[string]any{"allowedRoots": []map[string]any{{"path": shared}}})
	os.WriteFile(allow, ab, 0o600)
	cmd := exec.Command(warrenBin, append(startArgs(ws, data), "--detach", "--json", "--mount", shared+":shared", "--mount-allowlist", allow)...)
	cmd.Env = startEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("start --detach: %v\n%s", err, stderr.String())
	}
	var run struct {
		RunID   string `json:"run_id"`
		PID     int    `json:"pid"`
		LogPath string `json:"log_path"`
		Pairing struct {
			URL         string `json:"url"`
			ClientToken string `json:"client_token"`
			Workspaces  []struct {
				ID        string `json:"id"`
				SandboxID string `json:"sandbox_id"`
			} `json:"workspaces"`
		} `json:"pairing"`
	}
	if err := json.Unmarshal(out, &run); err != nil || run.PID == 0 || len(run.Pairing.Workspaces) != 1 {
		t.Fatalf("detach answer %q: %v", out, err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			syscall.Kill(run.PID, syscall.SIGTERM)
		}
	})
	if syscall.Kill(run.PID, 0) != nil {
		t.Fatalf("the background warren (pid %d) is not running", run.PID)
	}
	resp, err := http.Get(run.Pairing.URL + "/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health of the detached server: %v %v", err, resp)
	}
	resp.Body.Close()

	// The extra mount is there, read-only.
	h := &agentHost{}
	h.pairing.URL = run.Pairing.URL
	proxy := "/w/" + run.Pairing.Workspaces[0].ID + "/opencode"
	var session struct{ ID string }
	if code := h.call(t, "POST", proxy+"/session", bearer(run.Pairing.ClientToken), map[string]any{}, &session); code != 200 {
		t.Fatalf("create session: %d", code)
	}
	shell := "cat /workspace/extra/shared/hello.txt > /workspace/seen.txt; touch /workspace/extra/shared/new 2>/dev/null && echo writable > /workspace/ro.txt || echo read-only > /workspace/ro.txt"
	if code := h.call(t, "POST", proxy+"/session/"+session.ID+"/shell", bearer(run.Pairing.ClientToken), map[string]any{"agent": "build", "command": shell}, nil); code != 200 {
		t.Fatalf("shell: %d", code)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "seen.txt")); string(b) != "from the host\n" {
		t.Fatalf("the extra mount's file read %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "ro.txt")); string(b) != "read-only\n" {
		t.Fatalf("the read-only mount was %q", b)
	}
	if _, err := os.Stat(filepath.Join(shared, "new")); err == nil {
		t.Fatal("a write reached the read-only mount's host directory")
	}

	stop := exec.Command(warrenBin, "stop", "--workspace", ws, "--data-dir", data, "--json")
	b, err := stop.CombinedOutput()
	if err != nil || !strings.Contains(string(b), run.RunID) {
		log, _ := os.ReadFile(run.LogPath)
		t.Fatalf("warren stop: %v %s\nlog:\n%s", err, b, log)
	}
	stopped = true
	if syscall.Kill(run.PID, 0) == nil {
		t.Fatalf("pid %d still runs after warren stop", run.PID)
	}
	if left := traces(t, &server{dataDir: data}, run.Pairing.Workspaces[0].SandboxID); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	if b, err := exec.Command(warrenBin, "stop", "--workspace", ws, "--data-dir", data).CombinedOutput(); err == nil {
		t.Fatalf("a second stop should say nothing runs: %s", b)
	}
}

// TestAgentHostDaemon: one background host, many workspaces, each in its
// own sandbox; workspaces survive a daemon restart.
func TestAgentHostDaemon(t *testing.T) {
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	// Workspaces added through the API must be under an allowed root.
	roots := t.TempDir()
	ws1, ws2 := filepath.Join(roots, "one"), filepath.Join(roots, "two")
	outside, blocked := t.TempDir(), filepath.Join(roots, ".aws")
	for _, d := range []string{ws1, ws2, blocked} {
		os.MkdirAll(d, 0o755)
	}
	allowlist := filepath.Join(t.TempDir(), "mount-allowlist.json")
	os.WriteFile(allowlist, []byte(`{"allowedRoots":[{"path":"`+roots+`","allowReadWrite":true}]}`), 0o644)
	// The daemon runs a chat bridge too, to a fake Telegram.
	tg := newFakeTelegram(t, "9:daemon-telegram-token")
	warren := func(args ...string) (string, error) {
		cmd := exec.Command(warrenBin, args...)
		cmd.Env = append(startEnv(), "WARREN_MOUNT_ALLOWLIST="+allowlist, "WARREN_TELEGRAM_TOKEN=9:daemon-telegram-token", "WARREN_TELEGRAM_API_URL="+tg.srv.URL)
		out, err := cmd.Output()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), fmt.Errorf("%v: %s", err, ee.Stderr)
		}
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := warren(args...)
		if err != nil {
			t.Fatalf("warren %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	startDaemon := func() {
		t.Helper()
		must("daemon", "start", "--sandbox", "gvisor", "--port", "0", "--data-dir", data, "--sidecar-dir", sidecarDir(), "--runsc", runscBin, "--json")
	}
	t.Cleanup(func() { warren("daemon", "stop", "--data-dir", data) })
	list := func() map[string]string {
		t.Helper()
		var out struct {
			Items []struct{ ID, Path, Sandbox string } `json:"items"`
		}
		if err := json.Unmarshal([]byte(must("workspace", "list", "--json", "--data-dir", data)), &out); err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, w := range out.Items {
			m[w.ID] = w.Path
		}
		return m
	}
	startDaemon()
	if _, err := warren("daemon", "start", "--data-dir", data, "--port", "0"); err == nil || !strings.Contains(err.Error(), "already runs") {
		t.Fatalf("a second daemon start: %v", err)
	}
	for dir, why := range map[string]string{outside: "not under any allowed root", blocked: "blocked pattern"} {
		if _, err := warren("workspace", "add", dir, "--data-dir", data); err == nil || !strings.Contains(err.Error(), why) {
			t.Fatalf("workspace add %s: %v, want it refused (%s)", dir, err, why)
		}
	}
	var w1, w2 struct{ ID, Path string }
	json.Unmarshal([]byte(must("workspace", "add", ws1, "--json", "--data-dir", data)), &w1)
	json.Unmarshal([]byte(must("workspace", "add", ws2, "--name", "second", "--json", "--data-dir", data)), &w2)
	if got := list(); len(got) != 2 || w1.ID == "" || w2.ID == "" || w1.ID == w2.ID {
		t.Fatalf("workspaces: %v (%+v %+v)", got, w1, w2)
	}
	if p := strings.TrimSpace(must("workspace", "path", w2.ID, "--data-dir", data)); p != w2.Path {
		t.Fatalf("workspace path: %q, want %q", p, w2.Path)
	}
	// A chat lists the daemon's workspaces and switches to the second.
	var code struct{ Code string }
	json.Unmarshal([]byte(must("bridge", "pair", "--json", "--data-dir", data)), &code)
	tg.say(7, "erin", "/pair "+code.Code)
	tg.wait(t, "7", 30*time.Second, "Paired")
	tg.say(7, "erin", "/workspace")
	tg.wait(t, "7", 30*time.Second, "1. one", "2. second")
	tg.say(7, "erin", "/workspace second")
	tg.wait(t, "7", 30*time.Second, "Now working in second")
	var bridge struct {
		Chats []struct{ Key, Workspace string }
	}
	json.Unmarshal([]byte(must("bridge", "status", "--json", "--data-dir", data)), &bridge)
	if len(bridge.Chats) != 1 || bridge.Chats[0].Workspace != w2.ID {
		t.Fatalf("the chat's workspace: %+v, want %s", bridge.Chats, w2.ID)
	}
	var status struct {
		Services []struct {
			WorkspaceID string `json:"workspaceId"`
			SandboxID   string `json:"sandboxId"`
		} `json:"services"`
	}
	json.Unmarshal([]byte(must("daemon", "status", "--json", "--data-dir", data)), &status)
	if len(status.Services) != 2 || status.Services[0].SandboxID == status.Services[1].SandboxID {
		t.Fatalf("each workspace needs its own sandbox: %+v", status)
	}
	var first string
	for _, svc := range status.Services {
		if svc.WorkspaceID == w1.ID {
			first = svc.SandboxID
		}
	}
	// Dispose stops one instance; the other keeps running.
	must("instance", "dispose", w1.ID, "--data-dir", data)
	if got := list(); len(got) != 1 || got[w2.ID] == "" {
		t.Fatalf("after dispose: %v", got)
	}
	if left := traces(t, &server{dataDir: data}, first); first == "" || len(left) > 0 {
		t.Fatalf("the disposed sandbox left: %v", left)
	}
	// A restart brings back every recorded workspace.
	must("daemon", "stop", "--data-dir", data)
	startDaemon()
	if got := list(); len(got) != 2 {
		t.Fatalf("after a daemon restart: %v", got)
	}
	must("workspace", "rm", w1.ID, "--data-dir", data)
	if _, err := warren("workspace", "rm", "ws_nosuchthing", "--data-dir", data); err == nil || !strings.Contains(err.Error(), "no such workspace") {
		t.Fatalf("removing an unknown workspace: %v", err)
	}
	must("daemon", "stop", "--data-dir", data)
	startDaemon()
	if got := list(); len(got) != 1 || got[w2.ID] == "" {
		t.Fatalf("a removed workspace came back: %v", got)
	}
	must("daemon", "stop", "--data-dir", data)
	if _, err := warren("daemon", "status", "--data-dir", data); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("status of a stopped daemon: %v", err)
	}
}

// TestAgentHostMountRefused: a mount the allowlist does not allow stops
// the start before anything is created.
func TestAgentHostMountRefused(t *testing.T) {
	base := t.TempDir()
	secret := filepath.Join(base, "home", ".ssh")
	outside := filepath.Join(base, "elsewhere")
	os.MkdirAll(secret, 0o700)
	os.MkdirAll(outside, 0o755)
	os.Symlink(outside, filepath.Join(base, "home", "link"))
	allow := filepath.Join(base, "mount-allowlist.json")
	ab, _ := json.Marshal(map[string]any{"allowedRoots": []map[string]any{{"path": filepath.Join(base, "home"), "allowReadWrite": false}}})
	os.WriteFile(allow, ab, 0o600)
	for spec, want := range map[string]string{
		secret + ":keys": `blocked pattern ".ssh"`,
		filepath.Join(base, "home", "link") + ":l": "not under any allowed root",
		filepath.Join(base, "home") + ":h:rw":      "read-only",
	} {
		data := filepath.Join(t.TempDir(), "data")
		cmd := exec.Command(warrenBin, append(startArgs(t.TempDir(), data), "--mount", spec, "--mount-allowlist", allow)...)
		cmd.Env = startEnv()
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Fatalf("--mount %s: want a refusal mentioning %q, got %v:\n%s", spec, want, err, out)
		}
		if _, err := os.Stat(data); !os.IsNotExist(err) {
			t.Fatalf("--mount %s: the refused start created %s", spec, data)
		}
	}
}

// TestSidecarMismatch: a cached OpenCode whose hash is not the manifest's
// is refused and deleted, and nothing starts.
func TestSidecarMismatch(t *testing.T) {
	root, _ := filepath.Abs("..")
	b, err := os.ReadFile(filepath.Join(root, "internal/sidecar/manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	sc := m["sidecars"].([]any)[0].(map[string]any)
	version := sc["version"].(string)
	asset := sc["platforms"].(map[string]any)["linux-amd64"].(map[string]any)
	asset["binary_sha256"] = strings.Repeat("0", 64)
	dir := t.TempDir()
	manifest := filepath.Join(dir, "manifest.json")
	b, _ = json.Marshal(m)
	os.WriteFile(manifest, b, 0o644)
	bin := filepath.Join(dir, "sidecars", "opencode", version, "opencode")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	os.WriteFile(bin, []byte("#!/bin/sh\necho not opencode\n"), 0o755)

	ws := t.TempDir()
	cmd := exec.Command(warrenBin, "start", "--workspace", ws, "--sandbox", "none", "--opencode-source", "downloaded",
		"--port", "0", "--data-dir", filepath.Join(dir, "data"), "--sidecar-dir", filepath.Join(dir, "sidecars"), "--sidecar-manifest", manifest)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "does not match the sidecar manifest") {
		t.Fatalf("want a refusal naming the manifest, got %v:\n%s", err, out)
	}
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Fatal("the mismatching binary was not deleted")
	}
}
