package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// browserPage runs the TypeScript SDK's ESM build in a page of another
// origin than the API's, as a web app would: fetch for calls, the
// browser's WebSocket (the key as a subprotocol) for a terminal and stdin.
const browserPage = `<!doctype html>
<script type="module">
import { Warren, NotFoundError } from "/sdk/index.js";
const w = new Warren({ url: %q, apiKey: %q });
const out = {};
try {
  for (const runtime of %s) {
    await w.withSandbox({ image: "busybox", runtime }, async (sb) => {
      const r = await sb.exec("echo from-browser; exit 5");
      let frames = "";
      for await (const f of sb.execStream("echo s1; echo s2")) frames += f.type === "exit" ? "exit:" + f.exit_code : f.data;
      await sb.writeFile("/b.bin", new Uint8Array([0, 1, 2, 255]));
      const back = Array.from(await sb.readFile("/b.bin"));
      const term = await sb.pty({ cols: 50, rows: 10 });
      let screen = "";
      term.write("stty size; echo pty-$((6*7))\n");
      while (!screen.includes("pty-42")) screen += new TextDecoder().decode(await term.read());
      term.resize(60, 12);
      term.write("stty size\n");
      while (!screen.includes("12 60")) screen += new TextDecoder().decode(await term.read());
      term.close();
      const s = await sb.execInteractive("read l; echo got:$l");
      s.sendStdin("hi\n");
      const f = await s.recv();
      s.close();
      out[runtime] = { exit: r.exit_code, stdout: r.stdout, frames, back, size: screen.includes("10 50"), interactive: f.data };
    });
  }
  try { await w.getSandbox("sbx_aaaaaaaaaaaaaaaaaaaa"); } catch (e) { out.notFound = e instanceof NotFoundError; }
} catch (e) { out.error = String(e) + " " + (e.stack || ""); }
window.__result = JSON.stringify(out);
</script>`

// TestTypeScriptSDKInBrowser drives Debian's chromium through the SDK's
// browser path, against a warren that allows the page's origin (CORS).
func TestTypeScriptSDKInBrowser(t *testing.T) {
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("no %s: make test installs it (scripts/deps.sh)", chromium)
	}
	dist, _ := filepath.Abs("../sdk/typescript/dist/esm")
	if _, err := os.Stat(filepath.Join(dist, "index.js")); err != nil {
		t.Fatal("the TypeScript SDK is not built: run make sdk-typescript (make test does)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := "http://" + ln.Addr().String()
	s := startServer(t, "", "WARREN_CORS_ORIGIN="+origin)
	rts, _ := json.Marshal(runtimes)
	page := fmt.Sprintf(browserPage, s.url, s.key, rts)
	mux := http.NewServeMux()
	mux.Handle("/sdk/", http.StripPrefix("/sdk/", http.FileServer(http.Dir(dist))))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(page))
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()))...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first call starts the browser: no timeout on its context.
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/")); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	pollCtx, cancelPoll := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelPoll()
	result, err := chromedp.Run(pollCtx, chromedp.Poll[string]("window.__result", chromedp.WithPollingTimeout(150*time.Second)))
	if err != nil {
		t.Fatalf("the page gave no result: %v", err)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(result), &out); err != nil {
		t.Fatalf("the page's result %q: %v", result, err)
	}
	if e, ok := out["error"]; ok {
		t.Fatalf("the SDK failed in the browser: %v", e)
	}
	for _, rt := range runtimes {
		got, _ := json.Marshal(out[rt])
		want := `{"back":[0,1,2,255],"exit":5,"frames":"s1\ns2\nexit:0","interactive":"got:hi\n","size":true,"stdout":"from-browser\n"}`
		if string(got) != want {
			t.Errorf("%s in the browser:\n got %s\nwant %s", rt, got, want)
		}
	}
	if out["notFound"] != true {
		t.Errorf("a 404 in the browser was not a NotFoundError: %v", out["notFound"])
	}
	if !strings.Contains(s.logs.String(), "/pty") {
		t.Error("the terminal never reached warren")
	}
}
