package e2e

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/warrenhq/warren/client"
)

// echoServer is a small app for the sandbox: it answers with what it was
// asked (path, query, whether credentials reached it), serves a large body
// at /big, and echoes WebSocket messages at /ws. Standard library only.
const echoServer = `
import base64, hashlib, http.server, socketserver, struct

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/ws":
            return self.websocket()
        if self.path == "/big":
            body = b"x" * (5 * 1024 * 1024)
        else:
            body = ("path=%s auth=%s cookie=%s" % (self.path, self.headers.get("Authorization"), self.headers.get("Cookie"))).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        # An app that would let a Service Worker control the whole origin.
        self.send_header("Service-Worker-Allowed", "/")
        self.end_headers()
        self.wfile.write(body)
    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        while True:
            hdr = self.rfile.read(2)
            if len(hdr) < 2: return
            op, n = hdr[0] & 15, hdr[1] & 127
            if n == 126: n = struct.unpack(">H", self.rfile.read(2))[0]
            elif n == 127: n = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if op == 8: return
            reply = b"echo:" + data
            self.wfile.write(bytes([0x80 | op]) + (bytes([len(reply)]) if len(reply) < 126 else b"\x7e" + struct.pack(">H", len(reply))) + reply)
            self.wfile.flush()

class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

S(("0.0.0.0", 8000), H).serve_forever()
`

func get(t *testing.T, url, host, key string, cookies ...*http.Cookie) (int, string, *http.Response) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if host != "" {
		req.Host = host
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for _, c := range cookies {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// tokenVisit opens a signed preview link as a browser would: the token
// sets a cookie and redirects to the same address without it, which is
// then loaded with the cookie. It returns the final status, body and the
// cookie.
func tokenVisit(t *testing.T, link, host string) (int, string, []*http.Cookie) {
	t.Helper()
	req, _ := http.NewRequest("GET", link, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return resp.StatusCode, "", nil
	}
	loc := resp.Header.Get("Location")
	if strings.Contains(loc, "warren_token") {
		t.Fatalf("the redirect keeps the token: %s", loc)
	}
	u, _ := url.Parse(link)
	code, body, _ := get(t, u.Scheme+"://"+u.Host+loc, host, "", resp.Cookies()...)
	return code, body, resp.Cookies()
}

func TestPreview(t *testing.T) {
	s := startServer(t, "", "WARREN_PREVIEW_DOMAIN=preview.test")
	ctx := context.Background()
	sb := s.create(t, client.CreateRequest{Image: "base"})
	if _, err := s.c.WriteFile(ctx, sb.ID, "/srv/echo.py", strings.NewReader(echoServer)); err != nil {
		t.Fatal(err)
	}
	s.exec(t, sb.ID, client.ExecRequest{Cmd: "(python3 /srv/echo.py >/tmp/echo.log 2>&1 &)"})
	port, err := s.c.ExposePort(ctx, sb.ID, 8000)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(port.URL, "http://8000-"+sb.ID+".preview.test:") {
		t.Fatalf("preview URL %q is not host-based", port.URL)
	}
	pathURL := s.url + "/preview/" + sb.ID + "/8000"
	eventually(t, 20*time.Second, "the app answers through the proxy", func() error {
		if code, body, _ := get(t, pathURL+"/hello?x=1", "", s.key); code != 200 || !strings.HasPrefix(body, "path=/hello?x=1 auth=None") {
			return errorf("%d %q", code, body)
		}
		return nil
	})
	if got, _ := s.c.GetSandbox(ctx, sb.ID); len(got.Ports) != 1 || got.Ports[0].Port != 8000 {
		t.Fatalf("view lists ports %+v", got.Ports)
	}
	// Host-based, with the key; the key never reaches the app.
	if code, body, _ := get(t, s.url+"/a", "8000-"+sb.ID+".preview.test", s.key); code != 200 || body != "path=/a auth=None cookie=None" {
		t.Fatalf("host-based: %d %q", code, body)
	}
	// A large body streams through whole.
	if code, body, _ := get(t, pathURL+"/big", "", s.key); code != 200 || len(body) != 5<<20 {
		t.Fatalf("large body: %d, %d bytes", code, len(body))
	}
	// Refused alike: no key, wrong key, unexposed port, unknown sandbox.
	for what, c := range map[string][2]string{
		"no key":          {pathURL + "/", ""},
		"wrong key":       {pathURL + "/", "not-a-valid-key-at-all"},
		"unexposed port":  {s.url + "/preview/" + sb.ID + "/9000/", s.key},
		"unknown sandbox": {s.url + "/preview/sbx_aaaaaaaaaaaaaaaaaaaa/8000/", s.key},
	} {
		if code, body, _ := get(t, c[0], "", c[1]); code != 404 || !strings.Contains(body, "no such preview") {
			t.Errorf("%s: %d %q, want the same 404", what, code, body)
		}
	}
	// Path-based pages share the API's origin: they run sandboxed in an
	// opaque origin, and no Service Worker can claim the origin.
	_, _, resp := get(t, pathURL+"/page", "", s.key)
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox ") || strings.Contains(csp, "allow-same-origin") {
		t.Fatalf("path-based preview CSP %q", csp)
	}
	if resp.Header.Get("Service-Worker-Allowed") != "" {
		t.Fatal("path-based preview passed Service-Worker-Allowed through")
	}
	swReq, _ := http.NewRequest("GET", pathURL+"/sw.js", nil)
	swReq.Header.Set("Authorization", "Bearer "+s.key)
	swReq.Header.Set("Service-Worker", "script")
	if r, err := http.DefaultClient.Do(swReq); err != nil || r.StatusCode != 404 {
		t.Fatalf("a service worker script through a path-based preview: %v %v", r.StatusCode, err)
	}
	// Host-based previews have their own origin and are left alone.
	if _, _, resp := get(t, s.url+"/page", "8000-"+sb.ID+".preview.test", s.key); resp.Header.Get("Content-Security-Policy") != "" {
		t.Fatal("host-based preview got a sandbox CSP")
	}
	// A signed token: works without a key, is stripped before the app,
	// leaves a cookie and redirects away from the URL that carried it,
	// and expires.
	tok, err := s.c.PreviewToken(ctx, sb.ID, 8000, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tokURL := strings.Replace(tok.URL, port.URL, pathURL+"/", 1)
	code, body, cookies := tokenVisit(t, tokURL, "")
	if code != 200 || body != "path=/ auth=None cookie=None" {
		t.Fatalf("with token: %d %q", code, body)
	}
	if len(cookies) != 1 || cookies[0].Path != "/preview/"+sb.ID+"/8000/" || !cookies[0].HttpOnly {
		t.Fatalf("token cookie: %+v", cookies)
	}
	if code, body, _ := get(t, pathURL+"/next", "", "", cookies...); code != 200 || body != "path=/next auth=None cookie=None" {
		t.Fatalf("with the cookie: %d %q", code, body)
	}
	time.Sleep(2500 * time.Millisecond)
	if code, _, _ := tokenVisit(t, tokURL, ""); code != 404 {
		t.Fatalf("expired token: %d, want 404", code)
	}
	if code, _, _ := get(t, pathURL+"/next", "", "", cookies...); code != 404 {
		t.Fatalf("expired cookie: %d, want 404", code)
	}
	// WebSocket through the proxy.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	h := http.Header{"Authorization": {"Bearer " + s.key}}
	conn, _, err := websocket.Dial(wctx, strings.Replace(pathURL, "http", "ws", 1)+"/ws", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("websocket through the proxy: %v", err)
	}
	defer conn.CloseNow()
	if err := conn.Write(wctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, data, err := conn.Read(wctx); err != nil || string(data) != "echo:ping" {
		t.Fatalf("websocket echo: %q %v", data, err)
	}
	// Revoked tokens stop working at once, in links and in cookies: one
	// by its id, or all of a port's.
	visit := func(tok *client.PortToken) (int, []*http.Cookie) {
		code, _, c := tokenVisit(t, strings.Replace(tok.URL, port.URL, pathURL+"/", 1), "")
		return code, c
	}
	one, _ := s.c.PreviewToken(ctx, sb.ID, 8000, time.Hour)
	two, _ := s.c.PreviewToken(ctx, sb.ID, 8000, time.Hour)
	_, oneCookies := visit(one)
	if code, _ := visit(two); code != 200 || len(oneCookies) != 1 || one.TokenID == "" {
		t.Fatalf("fresh tokens: %d %+v", code, one)
	}
	if status, _ := s.raw(t, "DELETE", "/v1/sandboxes/"+sb.ID+"/ports/8000/tokens/"+one.TokenID, s.key, ""); status != 204 {
		t.Fatalf("revoke one: %d", status)
	}
	if code, _ := visit(one); code != 404 {
		t.Fatalf("a revoked token: %d", code)
	}
	if code, _, _ := get(t, pathURL+"/", "", "", oneCookies...); code != 404 {
		t.Fatalf("the cookie of a revoked token: %d", code)
	}
	if code, _ := visit(two); code != 200 {
		t.Fatalf("revoking one token revoked another: %d", code)
	}
	if status, body := s.raw(t, "DELETE", "/v1/sandboxes/"+sb.ID+"/ports/8000/tokens/nothex", s.key, ""); status != 400 || field(body) != "token_id" {
		t.Fatalf("revoke a malformed id: %d %v", status, body)
	}
	if status, _ := s.raw(t, "DELETE", "/v1/sandboxes/"+sb.ID+"/ports/8000/tokens", s.key, ""); status != 204 {
		t.Fatalf("revoke all: %d", status)
	}
	if code, _ := visit(two); code != 404 {
		t.Fatalf("a token after revoke-all: %d", code)
	}
	time.Sleep(5 * time.Millisecond)
	three, _ := s.c.PreviewToken(ctx, sb.ID, 8000, time.Hour)
	if code, _ := visit(three); code != 200 {
		t.Fatalf("a token made after revoke-all: %d", code)
	}
	// Unexposed: gone, and exposing again does not bring old links back.
	if err := s.c.UnexposePort(ctx, sb.ID, 8000); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := get(t, pathURL+"/", "", s.key); code != 404 {
		t.Fatalf("after unexpose: %d, want 404", code)
	}
	if _, err := s.c.ExposePort(ctx, sb.ID, 8000); err != nil {
		t.Fatal(err)
	}
	if code, _ := visit(three); code != 404 {
		t.Fatalf("a token from before unexpose works again: %d", code)
	}
}
