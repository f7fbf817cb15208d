package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func basic(token string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("opencode:"+token))}
}

// TestOpenCodeAttach pairs OpenCode's own TUI (opencode attach, the client
// most OpenCode users have) through the workspace server's proxy, as from
// another machine: the token is its basic-auth password, and OpenCode's own
// password never leaves the host.
func TestOpenCodeAttach(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is needed for this test; make test installs it")
	}
	bins, _ := filepath.Glob(filepath.Join(sidecarDir(), "opencode", "*", "opencode"))
	if len(bins) == 0 {
		t.Fatalf("no OpenCode in %s: make test downloads it", sidecarDir())
	}
	ws := t.TempDir()
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	os.WriteFile(filepath.Join(ws, "NOTES.md"), []byte("# attach me\n"), 0o644)
	h := startAgentHost(t, ws, data)
	p := &h.pairing
	w := p.Workspaces[0]
	proxy := p.URL + "/w/" + w.ID + "/opencode"
	want := fmt.Sprintf("opencode attach %s --dir /workspace --password %s", proxy, p.ClientToken)
	if w.Attach != want || strings.Contains(w.Attach, w.Password) {
		t.Fatalf("the attach command is %q, want %q", w.Attach, want)
	}

	// /status shows the command to every token, with no token in it.
	var st struct {
		Services []struct{ Attach string }
	}
	if code := h.call(t, "GET", "/status", bearer(p.ClientToken), nil, &st); code != 200 || len(st.Services) != 1 ||
		st.Services[0].Attach != fmt.Sprintf("opencode attach %s --dir /workspace --password <your token>", proxy) {
		t.Fatalf("/status: %d %+v", code, st)
	}

	// Basic auth with a token as the password, any user name; the same
	// scopes as a bearer token.
	path := "/w/" + w.ID + "/opencode/config/providers"
	if code := h.call(t, "GET", path, basic(p.ClientToken), nil, nil); code != 200 {
		t.Fatalf("the client token as a basic-auth password: %d", code)
	}
	var viewer struct{ Token, ID string }
	if code := h.call(t, "POST", "/tokens", map[string]string{"X-OpenWork-Host-Token": p.HostToken}, map[string]string{"scope": "viewer"}, &viewer); code != 201 {
		t.Fatalf("mint a viewer: %d", code)
	}
	if code := h.call(t, "GET", path, basic(viewer.Token), nil, nil); code != 200 {
		t.Fatalf("a viewer reads: %d", code)
	}
	if code := h.call(t, "POST", "/w/"+w.ID+"/opencode/session", basic(viewer.Token), map[string]any{}, nil); code != 403 {
		t.Fatalf("a viewer made a session: %d, want 403", code)
	}
	if code := h.call(t, "DELETE", "/tokens/"+viewer.ID, map[string]string{"X-OpenWork-Host-Token": p.HostToken}, nil, nil); code != 200 && code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	for name, hd := range map[string]map[string]string{"a revoked token": basic(viewer.Token), "a made-up one": basic("not-a-token-0123456789"),
		"OpenCode's own password": basic(w.Password)} {
		if code := h.call(t, "GET", path, hd, nil, nil); code != 401 {
			t.Fatalf("%s as a basic-auth password: %d, want 401", name, code)
		}
	}

	// OpenCode's event stream, through the proxy with basic auth, as the
	// TUI reads it: the first event arrives while the stream stays open.
	req, _ := http.NewRequest("GET", proxy+"/event", nil)
	for k, v := range basic(p.ClientToken) {
		req.Header.Set(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || !strings.HasPrefix(first, "data:") {
		t.Fatalf("the event stream through the proxy: %d %q %q %v", resp.StatusCode, resp.Header.Get("Content-Type"), first, err)
	}

	// The real TUI, in a real terminal, through the proxy.
	session := fmt.Sprintf("warren-attach-%d", time.Now().UnixNano())
	line := fmt.Sprintf("HOME=%s %s attach %s --dir /workspace --password %s; sleep 60", t.TempDir(), bins[0], proxy, p.ClientToken)
	if out, err := exec.Command("tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "45", line).CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", session).Run() })
	var screen string
	eventually(t, 90*time.Second, "OpenCode's TUI through the proxy", func() error {
		out, _ := exec.Command("tmux", "capture-pane", "-p", "-t", session).Output()
		screen = string(out)
		if strings.Contains(screen, "Ask anything") && strings.Contains(screen, "Build") {
			return nil
		}
		return fmt.Errorf("screen:\n%s", screen)
	})
	t.Logf("the attached TUI:\n%s", screen)
	for _, refused := range []string{"401", "Unauthorized", "unauthorized"} {
		if strings.Contains(screen, refused) {
			t.Fatalf("the TUI shows %q:\n%s", refused, screen)
		}
	}
}
