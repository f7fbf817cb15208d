package e2e

// The web console in a real browser (Debian's chromium through the
// DevTools protocol): sign in, create, a terminal, files, a preview, pause
// and resume, delete. Screenshots of each page go to the artifacts folder
// (WARREN_TEST_ARTIFACTS, default a temporary one, kept).

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	cdpinput "github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

type page struct {
	t         *testing.T
	ctx       context.Context
	artifacts string
	shot      int
}

// run runs browser actions with a deadline.
func (p *page) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	var err error
	for range 3 {
		// A page that refreshes may replace the node between the query
		// and the click: ask again.
		if err = chromedp.Do(ctx, actions...); err == nil || !strings.Contains(err.Error(), "Could not find node") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		p.fail(what, err)
	}
}

func (p *page) fail(what string, err error) {
	p.t.Helper()
	text, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string]("document.body.innerText"))
	html, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string]("(document.getElementById('panel') || document.body).innerHTML"))
	p.t.Logf("panel: %s", html)
	p.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
	p.t.Fatalf("%s: %v\npage text: %s", what, err, text)
}

// until waits for a JavaScript expression to be true.
func (p *page) until(what, expr string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 60*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(45*time.Second))); err != nil {
		p.fail(what, err)
	}
}

// waitText waits until the element matching sel shows want.
func (p *page) waitText(sel, want string) {
	p.t.Helper()
	p.until("wait for "+want+" in "+sel, fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, want))
}

// attr reads an attribute of the element matching sel.
func (p *page) attr(sel, name string) string {
	p.t.Helper()
	r, err := chromedp.Run(p.ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil || !r.Exists {
		p.fail("read "+name+" of "+sel, err)
	}
	return r.Value
}

func (p *page) screenshot(name string) {
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return
	}
	p.shot++
	path := filepath.Join(p.artifacts, fmt.Sprintf("%02d-%s.png", p.shot, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
	}
	// Every page of the console worth a picture is checked for
	// accessibility (not the previewed app, nor a failure's screen).
	if name != "preview" && !strings.HasPrefix(name, "failed-") {
		p.accessible(name)
	}
}

// screen is the terminal's visible text, one line per row.
func (p *page) screen() string {
	s, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`[...document.querySelectorAll(".xterm-rows > div")].map(d => d.textContent).join("\n")`))
	return s
}

// typeIn types into the terminal and waits for a line that is exactly want.
func (p *page) typeIn(input, want string) {
	p.t.Helper()
	p.typeText(input)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.screen(), "\n") {
			if strings.TrimSpace(line) == want {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("the terminal never showed the line %q; it shows:\n%s", want, p.screen())
}

// typeText types into the terminal: text as the browser's own insertion
// (as a paste or an input method would), each newline as an Enter key.
func (p *page) typeText(input string) {
	p.t.Helper()
	steps := []chromedp.Action[chromedp.Void]{chromedp.Focus(chromedp.CSS(".xterm-helper-textarea"))}
	for i, part := range strings.Split(input, "\n") {
		if i > 0 {
			steps = append(steps, chromedp.KeyEvent("\r"))
		}
		if part != "" {
			text := part
			steps = append(steps, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
				_, err := chromedp.Call(ctx, cdpinput.InsertText, cdpinput.InsertTextParams{Text: text})
				return err
			}))
		}
	}
	p.run("type "+input, steps...)
}

// sttySize types stty size and returns the last "ROWS COLS" line.
func (p *page) sttySize(marker string) string {
	p.t.Helper()
	p.typeText("echo " + marker + "-$(stty size | tr ' ' x)\n")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(p.screen(), "\n") {
			if got, ok := strings.CutPrefix(strings.TrimSpace(line), marker+"-"); ok && !strings.Contains(got, "$") {
				return got
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("no stty size after %s:\n%s", marker, p.screen())
	return ""
}

// accessible runs axe-core, the accessibility checker (pinned in the
// console's package.json, installed by make console), on the page as it
// is, and fails the test on serious or critical WCAG 2 A/AA violations.
func (p *page) accessible(what string) {
	p.t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "internal", "console", "web", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		p.t.Fatalf("axe-core: %v (make console installs it)", err)
	}
	if _, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](string(src)+";true")); err != nil {
		p.t.Fatalf("load axe-core: %v", err)
	}
	out, err := chromedp.Run(p.ctx, chromedp.Evaluate[string](`axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa"]}}).then(r =>
		JSON.stringify(r.violations.filter(v => v.impact === "serious" || v.impact === "critical")
			.map(v => ({id: v.id, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))))`, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("run axe-core on %s: %v", what, err)
	}
	if out != "[]" {
		p.t.Errorf("%s: accessibility violations: %s", what, out)
	}
}

// openBrowser starts Debian's chromium on url, downloads going to the
// returned directory and the page's console to the test's log.
func openBrowser(t *testing.T, url string) (*page, string) {
	t.Helper()
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("no %s: make test installs it (scripts/deps.sh)", chromium)
	}
	artifacts := os.Getenv("WARREN_TEST_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(os.TempDir(), "warren-console-artifacts")
	}
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	downloads := t.TempDir()
	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 800))...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	p := &page{t: t, ctx: ctx, artifacts: artifacts}
	// The first call starts the browser: no timeout on its context.
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: downloads})
		return err
	})); err != nil {
		t.Fatalf("open the console: %v", err)
	}
	t.Logf("screenshots in %s", artifacts)
	// What the page says to its console (errors above all) goes to the
	// test's log.
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			t.Logf("browser console: %v", m)
		}
	}()
	return p, downloads
}

func TestConsole(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "library/from-console:1", imageOf(t, v1.Config{Env: []string{"FROM_CONSOLE=1"}}, busyboxLayer(t)))
	ref := reg.host + "/library/from-console:1"
	s := imageServer(t, filepath.Join(t.TempDir(), "images"))
	p, downloads := openBrowser(t, s.url+"/")

	// A wrong key: a clear refusal, and no way in.
	p.run("sign in wrong", chromedp.WaitVisible(chromedp.ID("key")), chromedp.SendKeys(chromedp.ID("key"), "wrong-key-0123456789"),
		chromedp.Click(chromedp.Search("//button[text()='Sign in']")))
	p.waitText("[role=alert]", "Sign-in refused")
	p.screenshot("signin-refused")
	p.run("sign in", chromedp.SetValue(chromedp.ID("key"), s.key), chromedp.Click(chromedp.Search("//button[text()='Sign in']")),
		chromedp.WaitVisible(chromedp.ID("nav")))
	p.waitText("#who", "org default")

	// Create from the form: gVisor, so that pause works.
	p.run("open the form", chromedp.Click(chromedp.Search("//button[text()='New sandbox']")), chromedp.WaitVisible(chromedp.ID("c-image")),
		chromedp.SetValue(chromedp.ID("c-image"), "busybox"), chromedp.SetValue(chromedp.ID("c-runtime"), "gvisor"),
		chromedp.SendKeys(chromedp.ID("c-metadata"), "from=console"))
	p.screenshot("create-form")
	p.run("create", chromedp.Click(chromedp.Search("//button[text()='Create']")))
	p.waitText("#created", "Created sbx_")
	id := p.attr("#created", "data-id")
	p.waitText("table tbody", id)
	p.screenshot("sandboxes")

	// The terminal.
	p.run("open the sandbox", chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="#/sandboxes/%s"]`, id))), chromedp.WaitVisible(chromedp.CSS(".xterm-rows")))
	p.waitText("[role=status]", "Connected")
	p.typeIn("echo console-ok\n", "console-ok")
	before := p.sttySize("size1")
	p.screenshot("terminal")
	p.run("resize", chromedp.EmulateViewport(900, 600))
	deadline := time.Now().Add(20 * time.Second)
	after := before
	for i := 2; after == before && time.Now().Before(deadline); i++ {
		time.Sleep(300 * time.Millisecond)
		after = p.sttySize(fmt.Sprintf("size%d", i))
	}
	if after == before {
		t.Fatalf("the terminal kept %s after the window shrank", before)
	}
	t.Logf("stty size %s, then %s after the resize", before, after)
	p.run("restore the size", chromedp.EmulateViewport(1280, 800))

	// Files: upload, list, download byte-identical.
	blob := make([]byte, 300<<10)
	rand.Read(blob)
	local := filepath.Join(t.TempDir(), "upload.bin")
	if err := os.WriteFile(local, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	p.run("files tab", chromedp.Click(chromedp.Search("//button[@role='tab'][text()='Files']")), chromedp.WaitVisible(chromedp.ID("upload")),
		chromedp.SetValue(chromedp.ID("path"), "/tmp"), chromedp.Click(chromedp.Search("//button[text()='Open']")))
	p.until("the folder listed", `document.querySelector("#files")?.dataset.path === "/tmp"`)
	p.run("upload", chromedp.SetUploadFiles(chromedp.ID("upload"), []string{local}))
	p.waitText("#files", "upload.bin")
	p.screenshot("files")
	p.run("download", chromedp.Click(chromedp.CSS(`button[aria-label="Download upload.bin"]`)))
	got := waitFile(t, filepath.Join(downloads, "upload.bin"), len(blob))
	if !bytes.Equal(got, blob) {
		t.Fatalf("downloaded %d bytes, not the %d uploaded", len(got), len(blob))
	}

	// A web server, and its preview link.
	p.run("commands tab", chromedp.Click(chromedp.Search("//button[@role='tab'][text()='Commands']")), chromedp.WaitVisible(chromedp.ID("command")),
		chromedp.SendKeys(chromedp.ID("command"), "mkdir -p /tmp/www && echo preview-ok > /tmp/www/index.html && echo ready"),
		chromedp.Click(chromedp.Search("//button[text()='Run']")))
	p.waitText("#output", "[exit 0]")
	p.run("background server", chromedp.SetValue(chromedp.ID("command"), "busybox httpd -f -p 8000 -h /tmp/www"), chromedp.Click(chromedp.ID("background")),
		chromedp.SendKeys(chromedp.ID("command-name"), "web"), chromedp.Click(chromedp.Search("//button[text()='Run']")))
	p.waitText("main table", "busybox httpd")
	p.screenshot("commands")
	p.run("ports tab", chromedp.Click(chromedp.Search("//button[@role='tab'][text()='Ports']")), chromedp.WaitVisible(chromedp.ID("port")),
		chromedp.SendKeys(chromedp.ID("port"), "8000"), chromedp.Click(chromedp.Search("//button[text()='Expose']")))
	p.waitText("#ports", "8000")
	p.run("make a link", chromedp.Click(chromedp.Search("//button[text()='Make a link']")), chromedp.WaitVisible(chromedp.CSS("a.preview-link")))
	p.screenshot("ports")
	link := p.attr("a.preview-link", "href")
	p.run("open the preview", chromedp.Navigate(link))
	p.waitText("body", "preview-ok")
	p.screenshot("preview")

	// Back, still signed in (the tab's session): pause, resume, delete.
	p.run("back", chromedp.Navigate(s.url+"/#/sandboxes/"+id))
	p.waitText("#state", "running")
	p.run("pause", chromedp.Click(chromedp.Search("//button[text()='Pause']")))
	p.waitText("#state", "paused")
	p.waitText("#panel", "comes back when it resumes")
	p.screenshot("paused")
	p.run("resume", chromedp.Click(chromedp.Search("//button[text()='Resume']")))
	p.waitText("#state", "running")
	// The terminal comes back by itself, with a new shell.
	p.waitText("#panel [role=status]", "Connected")
	p.typeIn("echo after-resume\n", "after-resume")

	// The network policy, changed in place.
	p.run("network tab", chromedp.Click(chromedp.Search("//button[@role='tab'][text()='Network']")), chromedp.WaitVisible(chromedp.ID("n-egress")),
		chromedp.SetValue(chromedp.ID("n-egress"), "none"), chromedp.Click(chromedp.Search("//button[text()='Save policy']")))
	p.waitText("#facts", "Networknone")

	// A fork: its own page, running, then deleted.
	p.run("fork", chromedp.Click(chromedp.Search("//button[text()='Fork']")))
	p.until("the fork's page", fmt.Sprintf(`location.hash.startsWith("#/sandboxes/sbx_") && location.hash !== "#/sandboxes/%s"`, id))
	p.waitText("#state", "running")
	p.run("delete the fork", chromedp.Click(chromedp.Search("//button[text()='Delete']")), chromedp.Click(chromedp.Search("//button[text()='Confirm delete']")))
	p.waitText("h1", "Sandboxes")
	p.run("back to the first", chromedp.Navigate(s.url+"/#/sandboxes/"+id))
	p.waitText("#state", "running")
	p.run("delete", chromedp.Click(chromedp.Search("//button[text()='Delete']")), chromedp.Click(chromedp.Search("//button[text()='Confirm delete']")))
	p.waitText("h1", "Sandboxes")
	p.until("gone from the list", fmt.Sprintf(`(() => { const b = document.querySelector("table tbody"); return !!b && b.textContent.length > 0 && !b.textContent.includes(%q); })()`, id))

	// An image pulled from a registry, with its progress, then deleted.
	p.run("images", chromedp.Navigate(s.url+"/#/images"), chromedp.WaitVisible(chromedp.ID("i-ref")),
		chromedp.SetValue(chromedp.ID("i-name"), "from-console"), chromedp.SetValue(chromedp.ID("i-ref"), ref),
		chromedp.Click(chromedp.Search("//button[text()='Pull']")))
	p.waitText("#image-progress", "done in")
	p.waitText("main table", "from-console")
	p.screenshot("images-pulled")
	p.run("delete the image", chromedp.Click(chromedp.Search("//tr[td[text()='from-console']]//button[text()='Delete']")))
	p.until("the image gone", `!document.querySelector("main table").textContent.includes("from-console")`)

	// The other pages render, and at a phone's size too.
	for _, pg := range []string{"usage", "nodes"} {
		p.run("open "+pg, chromedp.Navigate(s.url+"/#/"+pg), chromedp.WaitVisible(chromedp.CSS("main h1")))
		p.screenshot(pg)
	}
	p.run("phone", chromedp.EmulateViewport(390, 844), chromedp.Navigate(s.url+"/#/sandboxes"), chromedp.WaitVisible(chromedp.CSS("main h1")))
	p.screenshot("phone")

	// The page's own rules.
	status, body, resp := get(t, s.url+"/", "", "")
	if status != 200 || !strings.Contains(body, "/console/app.js") || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("the console page: %d, CSP %q", status, resp.Header.Get("Content-Security-Policy"))
	}
}

// waitFile waits for a download to be complete and returns its bytes.
func waitFile(t *testing.T, path string, n int) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) >= n {
			return b
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no download at %s", path)
	return nil
}
