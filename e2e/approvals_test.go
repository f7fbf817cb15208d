package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// fakeModel is a tiny OpenAI-compatible chat server, written for the tests
// because no model provider exists here. Its first answer in a session asks
// for the bash tool to write /workspace/<the prompt>.txt; once the tool has
// answered, it says done.
const fakeModel = `import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, body, ctype="application/json"):
        self.send_response(code); self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        self.reply(200, json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode())
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        msgs = req.get("messages", [])
        prompt = ""
        for m in msgs:
            if m.get("role") == "user":
                c = m.get("content")
                prompt = c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if isinstance(p, dict))
        name = "".join(ch for ch in prompt.strip() if ch.isalnum()) or "none"
        if any(m.get("role") == "tool" for m in msgs):
            delta, finish = {"role": "assistant", "content": "done"}, "stop"
        else:
            args = json.dumps({"command": "echo ran > /workspace/%s.txt" % name, "description": "write a file"})
            delta = {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_" + name, "type": "function", "function": {"name": "bash", "arguments": args}}]}
            finish = "tool_calls"
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if not req.get("stream"):
            msg = dict(delta); msg.pop("index", None)
            self.reply(200, json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [{"index": 0, "message": msg, "finish_reason": finish}], "usage": usage}).encode())
            return
        self.send_response(200); self.send_header("Content-Type", "text/event-stream"); self.end_headers()
        for d, f in ((delta, None), ({}, finish)):
            chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": f}]}
            if f: chunk["usage"] = usage
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n"); self.wfile.flush()

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
`

// writeFakeModel puts the fake model and an OpenCode config that uses it
// into a workspace; the model runs inside the sandbox next to OpenCode.
func writeFakeModel(ws string) {
	os.WriteFile(filepath.Join(ws, "fake_model.py"), []byte(fakeModel), 0o644)
	cfg := `{"provider":{"fake":{"npm":"@ai-sdk/openai-compatible","name":"Fake","options":{"baseURL":"http://127.0.0.1:18999/v1","apiKey":"x"},"models":{"m":{"name":"m","tool_call":true}}}},"model":"fake/m"}`
	os.WriteFile(filepath.Join(ws, "opencode.json"), []byte(cfg), 0o644)
}

func (h *agentHost) newSession(t *testing.T, proxy string, tok map[string]string) string {
	t.Helper()
	var s struct{ ID string }
	if code := h.call(t, "POST", proxy+"/session", tok, map[string]any{}, &s); code != 200 || s.ID == "" {
		t.Fatalf("create session: %d", code)
	}
	return s.ID
}

// startFakeModel starts the fake model inside the sandbox, in its own
// session so it outlives the shell command, and returns that session.
func (h *agentHost) startFakeModel(t *testing.T, ws, proxy string, tok map[string]string) string {
	t.Helper()
	setup := h.newSession(t, proxy, tok)
	start := "setsid -f python3 /workspace/fake_model.py 18999 > /tmp/fake_model.log 2>&1; sleep 1; curl -s http://127.0.0.1:18999/v1/models > /workspace/models.json"
	if code := h.call(t, "POST", proxy+"/session/"+setup+"/shell", tok, map[string]any{"agent": "build", "command": start}, nil); code != 200 {
		t.Fatalf("start the fake model: %d", code)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "models.json")); !strings.Contains(string(b), `"m"`) {
		t.Fatalf("the fake model does not answer in the sandbox: %q", b)
	}
	return setup
}

// TestApprovals drives OpenCode in a gVisor sandbox, with the fake model,
// into tool calls that need approval: allow lets one run, deny stops one,
// and the timeout denies one.
func TestApprovals(t *testing.T) {
	ws := t.TempDir()
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	writeFakeModel(ws)

	h := startAgentHost(t, ws, data, "--approval", "manual", "--approval-timeout", "6s")
	p := &h.pairing
	tok := bearer(p.ClientToken)
	host := map[string]string{"X-OpenWork-Host-Token": p.HostToken}
	proxy := "/w/" + p.Workspaces[0].ID + "/opencode"

	newSession := func() string { return h.newSession(t, proxy, tok) }
	setup := h.startFakeModel(t, ws, proxy, tok)

	type approval struct {
		ID, Permission string
		Patterns       []string
	}
	list := func() []approval {
		var out struct{ Items []approval }
		if code := h.call(t, "GET", "/approvals", host, nil, &out); code != 200 {
			t.Fatalf("GET /approvals: %d", code)
		}
		return out.Items
	}
	// prompt asks the model to write NAME.txt and waits for the approval.
	prompt := func(name string) approval {
		t.Helper()
		s := newSession()
		body := map[string]any{"parts": []map[string]string{{"type": "text", "text": name}}, "model": map[string]string{"providerID": "fake", "modelID": "m"}}
		if code := h.call(t, "POST", proxy+"/session/"+s+"/prompt_async", tok, body, nil); code >= 300 {
			t.Fatalf("prompt: %d", code)
		}
		var got approval
		eventually(t, 60*time.Second, "an approval for "+name, func() error {
			for _, a := range list() {
				if strings.Contains(strings.Join(a.Patterns, " "), name+".txt") {
					got = a
					return nil
				}
			}
			return fmt.Errorf("approvals: %+v", list())
		})
		if got.Permission != "bash" {
			t.Fatalf("approval %+v, want a bash permission", got)
		}
		if _, err := os.Stat(filepath.Join(ws, name+".txt")); err == nil {
			t.Fatalf("%s.txt was written before anyone approved", name)
		}
		return got
	}

	// Allowed from the terminal: the list shows it, the reply lets it run.
	a := prompt("allowed")
	out, err := exec.Command(warrenBin, "approvals", "list", "--url", p.URL, "--host-token", p.HostToken, "--json").Output()
	if err != nil || !strings.Contains(string(out), a.ID) {
		t.Fatalf("warren approvals list: %v %s", err, out)
	}
	if code := h.call(t, "POST", "/approvals/"+a.ID, tok, map[string]string{"reply": "allow"}, nil); code != 401 && code != 403 {
		t.Fatalf("a client token answered an approval: %d", code)
	}
	if out, err := exec.Command(warrenBin, "approvals", "reply", a.ID, "--allow", "--url", p.URL, "--host-token", p.HostToken).CombinedOutput(); err != nil {
		t.Fatalf("warren approvals reply --allow: %v %s", err, out)
	}
	eventually(t, 30*time.Second, "allowed.txt", func() error {
		_, err := os.Stat(filepath.Join(ws, "allowed.txt"))
		return err
	})

	// From the console's agent-host page: the approval waits there, Allow
	// lets it run; a token minted there works until it is revoked there.
	c := prompt("consoled")
	pg, _ := openBrowser(t, p.URL+"/")
	pg.run("sign in", chromedp.WaitVisible(chromedp.ID("key")), chromedp.SetValue(chromedp.ID("key"), p.HostToken),
		chromedp.Click(chromedp.Search("//button[text()='Sign in']")))
	pg.waitText("#approvals", "consoled.txt")
	pg.waitText("#workspaces", ws)
	pg.screenshot("agent-host")
	pg.run("allow", chromedp.Click(chromedp.CSS(`#approvals tr[data-id="`+c.ID+`"] button.primary`)))
	eventually(t, 30*time.Second, "consoled.txt", func() error {
		_, err := os.Stat(filepath.Join(ws, "consoled.txt"))
		return err
	})
	pg.run("mint", chromedp.SetValue(chromedp.ID("t-label"), "from-console"), chromedp.Click(chromedp.Search("//button[text()='Mint a token']")))
	pg.waitText("#tokens", "from-console")
	minted, err := chromedp.Run(pg.ctx, chromedp.TextContent(chromedp.ID("minted")))
	if err != nil || minted == "" {
		t.Fatalf("the minted token: %q %v", minted, err)
	}
	if code := h.call(t, "GET", "/status", bearer(minted), nil, nil); code != 200 {
		t.Fatalf("the token minted in the console: %d", code)
	}
	pg.run("revoke", chromedp.Click(chromedp.Search("//tr[td[text()='from-console']]//button[text()='Revoke']")))
	eventually(t, 10*time.Second, "the revoked token refused", func() error {
		if code := h.call(t, "GET", "/status", bearer(minted), nil, nil); code != 401 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})

	// Denied over HTTP: the tool never runs.
	d := prompt("denied")
	if code := h.call(t, "POST", "/approvals/"+d.ID, host, map[string]string{"reply": "maybe"}, nil); code != 400 {
		t.Fatalf("a bad reply: %d", code)
	}
	if code := h.call(t, "POST", "/approvals/"+d.ID, host, map[string]string{"reply": "deny"}, nil); code != 200 {
		t.Fatalf("deny: %d", code)
	}
	if code := h.call(t, "POST", "/approvals/"+d.ID, host, map[string]string{"reply": "allow"}, nil); code != 404 {
		t.Fatalf("answering twice: %d, want 404", code)
	}

	// Nobody answers: the timeout denies.
	o := prompt("timedout")
	eventually(t, 20*time.Second, "the timeout to deny", func() error {
		for _, a := range list() {
			if a.ID == o.ID {
				return fmt.Errorf("still pending")
			}
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	for _, name := range []string{"denied", "timedout"} {
		if _, err := os.Stat(filepath.Join(ws, name+".txt")); err == nil {
			t.Fatalf("%s.txt was written although the request was denied", name)
		}
	}
	if !strings.Contains(h.logs.String(), "by=timeout") {
		t.Fatal("the log does not say the timeout denied")
	}
	// A collaborator's shell command bypasses OpenCode's permissions, so
	// in manual mode the workspace server holds it for the host.
	var collab struct{ Token string }
	if code := h.call(t, "POST", "/tokens", host, map[string]string{"scope": "collaborator"}, &collab); code != 201 {
		t.Fatalf("mint collaborator: %d", code)
	}
	shell := func(file string) chan int {
		done := make(chan int, 1)
		go func() {
			done <- h.call(t, "POST", proxy+"/session/"+setup+"/shell", bearer(collab.Token),
				map[string]any{"agent": "build", "command": "touch /workspace/" + file}, nil)
		}()
		return done
	}
	held := func(file string) approval {
		var got approval
		eventually(t, 20*time.Second, "a held shell command", func() error {
			for _, a := range list() {
				if a.Permission == "direct" && strings.Contains(strings.Join(a.Patterns, " "), file) {
					got = a
					return nil
				}
			}
			return fmt.Errorf("approvals: %+v", list())
		})
		if _, err := os.Stat(filepath.Join(ws, file)); err == nil {
			t.Fatalf("%s exists before the host answered", file)
		}
		return got
	}
	done := shell("collab-denied")
	a = held("collab-denied")
	h.call(t, "POST", "/approvals/"+a.ID, host, map[string]string{"reply": "deny"}, nil)
	if code := <-done; code != 403 {
		t.Fatalf("denied shell: %d, want 403", code)
	}
	done = shell("collab-allowed")
	a = held("collab-allowed")
	h.call(t, "POST", "/approvals/"+a.ID, host, map[string]string{"reply": "allow"}, nil)
	if code := <-done; code != 200 {
		t.Fatalf("allowed shell: %d", code)
	}
	if _, err := os.Stat(filepath.Join(ws, "collab-denied")); err == nil {
		t.Fatal("the denied command ran")
	}
	if _, err := os.Stat(filepath.Join(ws, "collab-allowed")); err != nil {
		t.Fatal("the allowed command did not run")
	}

	var status map[string]any
	h.call(t, "GET", "/status", tok, nil, &status)
	if m, _ := status["approval"].(map[string]any); m["mode"] != "manual" {
		t.Fatalf("status: %v", status)
	}
}
