package e2e

import (
	"context"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/warrenhq/warren/client"
)

// gitServer serves a repository with two branches over git:// from the
// peer namespace.
func gitServer(t *testing.T, p *peer) string {
	t.Helper()
	work := t.TempDir()
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(work, "README"), []byte("on main\n"), 0o644)
	git("add", ".")
	git("commit", "-q", "-m", "one")
	os.WriteFile(filepath.Join(work, "README"), []byte("on main, later\n"), 0o644)
	git("commit", "-q", "-am", "two")
	git("checkout", "-q", "-b", "feature")
	os.WriteFile(filepath.Join(work, "FEATURE"), []byte("feature file\n"), 0o644)
	git("add", ".")
	git("commit", "-q", "-m", "three")
	base := t.TempDir()
	run(t, "git", "clone", "-q", "--bare", work, filepath.Join(base, "repo.git"))
	d := exec.Command("ip", "netns", "exec", p.ns, "git", "daemon", "--reuseaddr", "--export-all",
		"--base-path="+base, "--listen="+publicA, "--port=9418", base)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Process.Kill(); d.Wait() })
	waitTCP(t, publicA+":9418")
	return "git://" + publicA + "/repo.git"
}

func TestStartup(t *testing.T) {
	p := startPeer(t)
	repo := gitServer(t, p)
	s := startServer(t, "")
	ctx := context.Background()

	sb, err := s.c.CreateSandbox(ctx, &client.CreateRequest{
		Image: "base",
		Files: []client.File{{Path: "/srv/top.txt", Content: "dG9w", Encoding: "base64"}},
		Startup: &client.Startup{
			Git:   &client.Git{URL: repo, Ref: "feature", Depth: 1},
			Files: []client.File{{Path: "/srv/site/index.html", Content: "site for $TEAM\n"}},
			Env:   map[string]string{"TEAM": "blue"},
			Commands: []client.StartupCmd{
				{Name: "prepare", Run: "cat FEATURE > /srv/site/feature.txt && echo $TEAM > /srv/site/team.txt"},
				{Name: "web", Run: "cd /srv/site && exec python3 -m http.server 8000", Background: true},
				{Name: "ticker", Run: "for i in 1 2 3; do echo tick$i; sleep 0.3; done", Background: true},
			},
			Ports: []int{8000},
			Ready: &client.ReadyCheck{HTTP: "http://127.0.0.1:8000/index.html", TimeoutSeconds: 20},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"git_ms", "startup_ms", "ready_ms"} {
		if _, ok := sb.Timings[k]; !ok {
			t.Errorf("timings lack %s: %v", k, sb.Timings)
		}
	}
	if len(sb.Ports) != 1 || sb.Ports[0].Port != 8000 {
		t.Fatalf("startup ports not exposed: %+v", sb.Ports)
	}
	res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "cat /workspace/FEATURE /srv/top.txt; echo; git -C /workspace rev-list --count HEAD; echo $TEAM"})
	if res.Stdout != "feature file\ntop\n1\nblue\n" {
		t.Fatalf("clone (ref feature, depth 1), files and env: %q %q", res.Stdout, res.Stderr)
	}
	code, body, _ := get(t, s.url+"/preview/"+sb.ID+"/8000/team.txt", "", s.key)
	if code != 200 || body != "blue\n" {
		t.Fatalf("the startup web app through the preview: %d %q", code, body)
	}
	tok, err := s.c.PreviewToken(ctx, sb.ID, 8000, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The server is reached on loopback, so its previews are host-based
	// under localhost; this client resolves no *.localhost, so it visits
	// with the Host header.
	if !strings.HasPrefix(tok.URL, "http://8000-"+sb.ID+".localhost:") {
		t.Fatalf("preview link %q is not host-based under localhost", tok.URL)
	}
	u, _ := url.Parse(tok.URL)
	if code, body, _ := tokenVisit(t, s.url+u.RequestURI(), u.Host); code != 200 || !strings.Contains(body, "site for") {
		t.Fatalf("with a signed token: %d %q", code, body)
	}
	if code, _, _ := get(t, s.url+"/preview/"+sb.ID+"/8000/", "", ""); code != 404 {
		t.Fatalf("without credentials: %d", code)
	}

	// Background commands: listed, and their logs follow to the end.
	rc, err := s.c.CommandLogs(ctx, sb.ID, "ticker", true)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	if string(logs) != "tick1\ntick2\ntick3\n" {
		t.Fatalf("followed logs %q", logs)
	}
	cmds, err := s.c.Commands(ctx, sb.ID)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, c := range cmds {
		states[c.Name] = c.State
		if c.Name == "ticker" && (c.ExitCode == nil || *c.ExitCode != 0) {
			t.Errorf("ticker exit %v", c.ExitCode)
		}
	}
	if states["web"] != "running" || states["ticker"] != "exited" {
		t.Fatalf("commands %+v", cmds)
	}
	if _, err := s.c.StartCommand(ctx, sb.ID, &client.CommandRequest{Name: "web", Cmd: "true"}); !isAPIError(err, 409) {
		t.Fatalf("starting a running command's name again: %v, want 409", err)
	}

	// A command ready check passes once a background command has done
	// its work, and the create waits for it.
	status, resp := s.raw(t, "POST", "/v1/sandboxes", s.key,
		`{"image":"busybox","startup":{"commands":[{"name":"slow","run":"sleep 1; touch /tmp/ok","background":true}],"ready":{"command":"test -f /tmp/ok","timeout_seconds":20}}}`)
	timings, _ := resp["timings"].(map[string]any)
	if ms, _ := timings["ready_ms"].(float64); status != 201 || ms < 800 {
		t.Fatalf("command ready check: %d %v", status, resp)
	}
	// A failing foreground command fails the create, shows its output,
	// and leaves nothing behind.
	linksBefore := sandboxLinks(t)
	status, resp = s.raw(t, "POST", "/v1/sandboxes", s.key,
		`{"image":"busybox","startup":{"commands":[{"name":"bad","run":"echo doom-output; exit 3"}]}}`)
	if e, _ := resp["error"].(map[string]any); status != 400 || field(resp) != "startup.commands[0]" || !strings.Contains(e["message"].(string), "doom-output") {
		t.Fatalf("failing startup command: %d %v", status, resp)
	}
	// A ready check that never passes does the same.
	status, resp = s.raw(t, "POST", "/v1/sandboxes", s.key,
		`{"image":"busybox","startup":{"ready":{"tcp":"127.0.0.1:9","timeout_seconds":2}}}`)
	if status != 400 || field(resp) != "startup.ready" {
		t.Fatalf("ready timeout: %d %v", status, resp)
	}
	failed, _ := s.c.ListSandboxes(ctx, client.ListOptions{States: []client.State{"failed"}})
	if len(failed) != 2 {
		t.Fatalf("want the 2 failed creates on record, got %d", len(failed))
	}
	for _, f := range failed {
		if tr := traces(t, s, f.ID); len(tr) > 0 {
			t.Fatalf("failed create %s left:\n%s", f.ID, strings.Join(tr, "\n"))
		}
	}
	if after := sandboxLinks(t); after != linksBefore {
		t.Fatalf("failed creates left veths: %d before, %d after", linksBefore, after)
	}
	for _, b := range []struct{ body, field string }{
		{`{"startup":{"git":{"url":""}}}`, "startup.git.url"},
		{`{"startup":{"commands":[{"name":"a b","run":"x"}]}}`, "startup.commands[0].name"},
		{`{"startup":{"commands":[{"name":"a","run":""}]}}`, "startup.commands[0].run"},
		{`{"startup":{"ports":[70000]}}`, "startup.ports[0]"},
		{`{"startup":{"ready":{"http":"http://x","tcp":"y:1"}}}`, "startup.ready"},
		{`{"files":[{"path":"rel","content":"x"}]}`, "files[0].path"},
		{`{"files":[{"path":"/a","content":"!!","encoding":"base64"}]}`, "files[0].content"},
	} {
		if status, body := s.raw(t, "POST", "/v1/sandboxes", s.key, b.body); status != 400 || field(body) != b.field {
			t.Errorf("create %s: %d %v, want 400 naming %s", b.body, status, body, b.field)
		}
	}
}

// sandboxLinks counts warren's host-side veths.
func sandboxLinks(t *testing.T) int {
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "wh") && l.Type() == "veth" {
			n++
		}
	}
	return n
}
