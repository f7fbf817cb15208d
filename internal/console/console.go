// Package console serves warren's web console: a few static files
// embedded in the binary (the page, its script and styles, and xterm.js,
// which make console copies in from its pinned npm package). It talks to
// the API of the server that serves it, same origin, with the key in a
// header; nothing here touches a sandbox.
package console

import (
	"bytes"
	"compress/gzip"
	"embed"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
)

//go:embed static
var files embed.FS

// Policy keeps the console to its own origin: scripts only from it, no
// frames, no plugins. xterm.js writes its own style elements, hence the
// inline styles.
const Policy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; " +
	"connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the console: the page at / and its files under
// /console/.
type Handler struct {
	// AgentHost makes it the agent host's page, on the workspace
	// server: workspaces, tokens and approvals, signed in with the host
	// token.
	AgentHost bool
	mu        sync.Mutex
	gzip      map[string][]byte
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := "index.html"
	if rest, ok := strings.CutPrefix(r.URL.Path, "/console/"); ok {
		name = path.Clean(rest)
	}
	b, err := files.ReadFile("static/" + name)
	if err != nil || strings.HasPrefix(name, "..") {
		http.NotFound(w, r)
		return
	}
	if name == "index.html" && h.AgentHost {
		// The page asks its meta tag which server it is on.
		name = "index-agenthost.html"
		b = bytes.Replace(b, []byte(`content="api"`), []byte(`content="agenthost"`), 1)
	}
	hd := w.Header()
	hd.Set("Content-Security-Policy", Policy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	ct := mime.TypeByExtension(path.Ext(name))
	if strings.HasSuffix(name, ".mjs") || strings.HasSuffix(name, ".js") {
		ct = "text/javascript; charset=utf-8"
	}
	hd.Set("Content-Type", ct)
	// The page is small and changes with the binary: revalidate it.
	hd.Set("Cache-Control", "no-cache")
	hd.Set("Vary", "Accept-Encoding")
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		hd.Set("Content-Encoding", "gzip")
		b = h.compressed(name, b)
	}
	_, _ = w.Write(b)
}

// compressed is b gzipped, made once per file.
func (h *Handler) compressed(name string, b []byte) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gzip == nil {
		h.gzip = map[string][]byte{}
	}
	if z, ok := h.gzip[name]; ok {
		return z
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	h.gzip[name] = buf.Bytes()
	return buf.Bytes()
}
