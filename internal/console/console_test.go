package console

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http/httptest"
	"strings"
	"testing"
)

// The whole console, terminal included, loads in under 300 KB compressed.
func TestFirstLoadIsSmall(t *testing.T) {
	total := 0
	err := fs.WalkDir(files, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := files.ReadFile(p)
		var z bytes.Buffer
		w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
		w.Write(b)
		w.Close()
		total += z.Len()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total > 300<<10 {
		t.Fatalf("the console is %d bytes compressed; it must load in under 300 KB", total)
	}
	t.Logf("%d bytes compressed", total)
}

func TestServes(t *testing.T) {
	h := &Handler{}
	for _, c := range []struct{ path, want, ctype string }{
		{"/", "/console/app.js", "text/html"},
		{"/console/app.js", "textContent", "text/javascript"},
		{"/console/app.css", "--accent", "text/css"},
	} {
		r := httptest.NewRequest("GET", c.path, nil)
		r.Header.Set("Accept-Encoding", "gzip")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 || w.Header().Get("Content-Encoding") != "gzip" || !strings.HasPrefix(w.Header().Get("Content-Type"), c.ctype) {
			t.Fatalf("%s: %d %v", c.path, w.Code, w.Header())
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self';") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Fatalf("%s: CSP %q", c.path, csp)
		}
		zr, err := gzip.NewReader(w.Body)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(zr)
		if !strings.Contains(string(body), c.want) {
			t.Fatalf("%s lacks %q", c.path, c.want)
		}
	}
	for _, p := range []string{"/console/../console.go", "/console/nope.js", "/console/"} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", p, nil))
		if w.Code != 404 {
			t.Fatalf("%s: %d, want 404", p, w.Code)
		}
	}
}
