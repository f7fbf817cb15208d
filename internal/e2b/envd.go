package e2b

import (
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"

	"github.com/warrenhq/warren/internal/envd/spec/filesystem/filesystemconnect"
	"github.com/warrenhq/warren/internal/envd/spec/process/processconnect"
	"github.com/warrenhq/warren/wire"
)

func (h *Handler) envdRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", h.serveHealth)
	mux.HandleFunc("GET /files", h.readFile)
	mux.HandleFunc("POST /files", h.writeFiles)
	mux.Handle(processconnect.NewProcessHandler(&processService{h: h}))
	mux.Handle(filesystemconnect.NewFilesystemHandler(&filesystemService{h: h}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		envdError(w, http.StatusNotFound, "warren's envd has no "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func (h *Handler) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusNoContent)
}

// userOf is the user a request acts as: envd's basic-auth user name, or
// the username parameter of the files calls; "" is the image's user.
func userOf(h http.Header, q url.Values) string {
	if u := q.Get("username"); u != "" {
		return u
	}
	if v, ok := strings.CutPrefix(h.Get("Authorization"), "Basic "); ok {
		if b, err := base64.StdEncoding.DecodeString(v); err == nil {
			name, _, _ := strings.Cut(string(b), ":")
			return name
		}
	}
	return ""
}

// resolve makes a path absolute the way envd does: relative to the
// user's home. A user other than root has its home in /home.
func resolve(p, user string) string {
	if p == "" || path.IsAbs(p) {
		return path.Clean(p)
	}
	home := "/root"
	if user != "" && user != "root" {
		home = "/home/" + user
	}
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		p = rest
	}
	return path.Join(home, p)
}

func (h *Handler) readFile(w http.ResponseWriter, r *http.Request) {
	p := resolve(r.URL.Query().Get("path"), userOf(r.Header, r.URL.Query()))
	if p == "" {
		envdError(w, http.StatusBadRequest, "path is required")
		return
	}
	rc, n, err := h.sandboxes.ReadFile(r.Context(), "", sandboxOf(r.Context()), p)
	if err != nil {
		envdError(w, statusOf(err), err.Error())
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	if n >= 0 {
		w.Header().Set("Content-Length", fmt.Sprint(n))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
}

// entry is envd's EntryInfo of an upload's answer.
type entry struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// writeFiles takes one file as the body (application/octet-stream) or
// several as multipart parts named "file", each going to the path
// parameter or, without one, to its part's file name.
func (h *Handler) writeFiles(w http.ResponseWriter, r *http.Request) {
	ctx, id, user := r.Context(), sandboxOf(r.Context()), userOf(r.Header, r.URL.Query())
	target := r.URL.Query().Get("path")
	var out []entry
	put := func(p string, body io.Reader) bool {
		p = resolve(p, user)
		if p == "" {
			envdError(w, http.StatusBadRequest, "a file needs a path: the path parameter or its part's file name")
			return false
		}
		fi, err := h.sandboxes.WriteFile(ctx, "", id, p, "", body)
		if err != nil {
			envdError(w, statusOf(err), err.Error())
			return false
		}
		out = append(out, entry{Path: fi.Path, Name: fi.Name, Type: "file"})
		return true
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "multipart/form-data" {
		var body io.Reader = r.Body
		if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				envdError(w, http.StatusBadRequest, "the body is not gzip: "+err.Error())
				return
			}
			body = zr
		}
		if put(target, body) {
			writeJSON(w, http.StatusOK, out)
		}
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		envdError(w, http.StatusBadRequest, "read multipart body: "+err.Error())
		return
	}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			envdError(w, http.StatusBadRequest, "read multipart body: "+err.Error())
			return
		}
		if part.FormName() != "file" {
			continue
		}
		p := target
		if p == "" {
			// The part's own file name is a path here; Part.FileName
			// would keep only its last element.
			_, params, _ := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
			p = params["filename"]
		}
		if !put(p, part) {
			return
		}
	}
	if len(out) == 0 {
		envdError(w, http.StatusBadRequest, "the body has no part named file")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// servePort proxies a request for a sandbox's own port: anyone may reach
// a sandbox created with public traffic (E2B's default); others need its
// traffic token.
func (h *Handler) servePort(w http.ResponseWriter, r *http.Request, id string, port int) {
	ctx := r.Context()
	sb, err := h.sandboxes.Get(ctx, "", id)
	if err != nil || sb.State != wire.StateRunning && sb.State != wire.StatePaused {
		envdError(w, http.StatusBadGateway, "sandbox "+e2bID(id)+" is not running")
		return
	}
	if sb.Metadata[PublicKey] != "true" && r.Header.Get("E2b-Traffic-Access-Token") != h.trafficToken(id) {
		envdError(w, http.StatusForbidden, "this sandbox's ports need its traffic access token in e2b-traffic-access-token")
		return
	}
	target, err := h.sandboxes.PortTarget(ctx, "", id, port)
	if err != nil {
		envdError(w, http.StatusBadGateway, fmt.Sprintf("port %d of sandbox %s cannot be reached", port, e2bID(id)))
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", target.String()
			pr.Out.Host = r.Host
			for _, k := range []string{"E2b-Sandbox-Id", "E2b-Sandbox-Port", "E2b-Traffic-Access-Token", "X-Access-Token"} {
				pr.Out.Header.Del(k)
			}
			pr.SetXForwarded()
		},
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// E2B answers 502 for a port nothing listens on.
			envdError(w, http.StatusBadGateway, fmt.Sprintf("nothing answered on port %d of sandbox %s: %v", port, e2bID(id), err))
		},
	}
	rp.ServeHTTP(w, r)
}
