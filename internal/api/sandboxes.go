package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/warrenhq/warren/internal/preview"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

func org(r *http.Request) string { return callerFrom(r.Context()).Org }

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req sandbox.CreateRequest
	if err := decode(r, &req.CreateRequest); err != nil {
		s.fail(w, r, err)
		return
	}
	sb, err := s.sandbox.Create(r.Context(), org(r), &req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, sb)
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	f := store.Filter{Org: org(r), Metadata: map[string]string{}}
	for k, vs := range r.URL.Query() {
		switch {
		case k == "state":
			for _, v := range vs {
				for _, st := range strings.Split(v, ",") {
					if !wire.State(st).Valid() {
						writeError(w, wire.CodeBadRequest, "unknown state "+strconv.Quote(st), "state")
						return
					}
					f.States = append(f.States, st)
				}
			}
		case strings.HasPrefix(k, "metadata."):
			f.Metadata[strings.TrimPrefix(k, "metadata.")] = vs[0]
		case k == "limit":
			n, err := strconv.Atoi(vs[0])
			if err != nil || n < 1 {
				writeError(w, wire.CodeBadRequest, "limit must be a positive number", "limit")
				return
			}
			f.Limit = n
		default:
			writeError(w, wire.CodeBadRequest, "unknown query parameter "+strconv.Quote(k), k)
			return
		}
	}
	list, err := s.sandbox.List(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.SandboxList{Sandboxes: list})
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	sb, err := s.sandbox.Get(r.Context(), org(r), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	sb, err := s.sandbox.Delete(r.Context(), org(r), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

func (s *Server) handleSetNetwork(w http.ResponseWriter, r *http.Request) {
	var p wire.NetworkPolicy
	if err := decode(r, &p); err != nil {
		s.fail(w, r, err)
		return
	}
	sb, err := s.sandbox.SetNetwork(r.Context(), org(r), r.PathValue("id"), &p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

func portParam(r *http.Request) (int, error) {
	n, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || n < 1 || n > 65535 {
		return 0, &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "port", Message: "port must be a number from 1 to 65535"}
	}
	return n, nil
}

func (s *Server) handleExposePort(w http.ResponseWriter, r *http.Request) {
	port, err := portParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := s.sandbox.ExposePort(r.Context(), org(r), r.PathValue("id"), port)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) handleUnexposePort(w http.ResponseWriter, r *http.Request) {
	port, err := portParam(r)
	if err == nil {
		err = s.sandbox.UnexposePort(r.Context(), org(r), r.PathValue("id"), port)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// maxTokenTTL bounds a preview token's life.
const maxTokenTTL = wire.MaxTokenTTLSeconds * time.Second

func (s *Server) handlePortToken(w http.ResponseWriter, r *http.Request) {
	port, err := portParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req wire.TokenRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if ttl <= 0 || ttl > maxTokenTTL {
		writeError(w, wire.CodeBadRequest, fmt.Sprintf("ttl_seconds must be between 1 and %d", int64(maxTokenTTL.Seconds())), "ttl_seconds")
		return
	}
	id := r.PathValue("id")
	if _, err := s.sandbox.PreviewTarget(r.Context(), org(r), id, port); err != nil {
		writeError(w, wire.CodeNotFound, "sandbox "+id+" has no exposed port "+strconv.Itoa(port), "")
		return
	}
	exp := time.Now().Add(ttl).UTC().Truncate(time.Second)
	tok, tokID := s.Preview.Sign(id, port, exp)
	u := s.Preview.URL(id, port) + "?" + preview.TokenParam + "=" + tok
	writeJSON(w, http.StatusOK, wire.PortToken{URL: u, Token: tok, TokenID: tokID, ExpiresAt: exp})
}

// handleRevokeTokens revokes one preview token of a port, or all of them.
func (s *Server) handleRevokeTokens(w http.ResponseWriter, r *http.Request) {
	port, err := portParam(r)
	if err == nil {
		tokID := r.PathValue("token_id")
		if tokID != "" && !validTokenID(tokID) {
			err = &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "token_id", Message: "token_id must be the 16 hex digits a token request answered"}
		} else {
			err = s.sandbox.RevokePreviewTokens(r.Context(), org(r), r.PathValue("id"), port, tokID, time.Now().Add(maxTokenTTL))
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func validTokenID(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func (s *Server) handleStartCommand(w http.ResponseWriter, r *http.Request) {
	var req wire.CommandRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	c, err := s.sandbox.StartCommand(r.Context(), org(r), r.PathValue("id"), &req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, c)
}

func (s *Server) handleListCommands(w http.ResponseWriter, r *http.Request) {
	cmds, err := s.sandbox.Commands(r.Context(), org(r), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if cmds == nil {
		cmds = []wire.Command{}
	}
	writeJSON(w, http.StatusOK, wire.CommandList{Commands: cmds})
}

// handleCommandLogs streams a background command's output as text; with
// follow=true until the command exits.
func (s *Server) handleCommandLogs(w http.ResponseWriter, r *http.Request) {
	follow := r.URL.Query().Get("follow") == "true"
	rc, release, err := s.sandbox.CommandLogs(r.Context(), org(r), r.PathValue("id"), r.PathValue("name"), follow)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer release()
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func (s *Server) handlePause(w http.ResponseWriter, r *http.Request) {
	sb, err := s.sandbox.Pause(r.Context(), org(r), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

func (s *Server) handleResume(w http.ResponseWriter, r *http.Request) {
	sb, err := s.sandbox.Resume(r.Context(), org(r), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb)
}

func (s *Server) handleFork(w http.ResponseWriter, r *http.Request) {
	var req wire.ForkRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	list, err := s.sandbox.Fork(r.Context(), org(r), r.PathValue("id"), req.Count)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wire.SandboxList{Sandboxes: list})
}

func (s *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	var req wire.ExecRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.sandbox.Exec(r.Context(), org(r), r.PathValue("id"), &req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeExecResult(w, res)
}

// writeExecResult writes an exec's result as writeJSON would, but escapes
// the output in pieces straight to the client: a result holds up to
// 2 x 16 MiB of output, which JSON escaping can grow six-fold.
func writeExecResult(w http.ResponseWriter, res *wire.ExecResult) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	fmt.Fprintf(bw, "{\n  \"exit_code\": %d,\n  \"stdout\": ", res.ExitCode)
	writeJSONString(bw, res.Stdout)
	bw.WriteString(",\n  \"stderr\": ")
	writeJSONString(bw, res.Stderr)
	if res.TimedOut {
		bw.WriteString(",\n  \"timed_out\": true")
	}
	if res.Truncated {
		bw.WriteString(",\n  \"truncated\": true")
	}
	if res.OOMKilled {
		bw.WriteString(",\n  \"oom_killed\": true")
	}
	fmt.Fprintf(bw, ",\n  \"duration_ms\": %d\n}\n", res.DurationMs)
	_ = bw.Flush()
}

// writeJSONString writes s as a JSON string, escaping 32 KiB at a time
// (cut between characters, so each piece escapes as it would whole).
func writeJSONString(w io.Writer, s string) {
	io.WriteString(w, `"`)
	for len(s) > 0 {
		n := min(len(s), 32<<10)
		// Only a valid rune straddling the cut must stay whole: invalid
		// bytes become U+FFFD one at a time wherever the cut falls.
		for back := 1; n < len(s) && back < utf8.UTFMax && back <= n; back++ {
			if utf8.RuneStart(s[n-back]) {
				if _, size := utf8.DecodeRuneInString(s[n-back:]); size > back {
					n -= back
				}
				break
			}
		}
		b, _ := json.Marshal(s[:n])
		w.Write(b[1 : len(b)-1])
		s = s[n:]
	}
	io.WriteString(w, `"`)
}

// handleExecStream answers with NDJSON frames, one per line, flushed as the
// command produces output, ending with an exit frame.
func (s *Server) handleExecStream(w http.ResponseWriter, r *http.Request) {
	var req wire.ExecRequest
	if err := decode(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	agent, release, err := s.sandbox.ExecStream(r.Context(), org(r), r.PathValue("id"), &req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer release()
	defer agent.CloseNow()
	// Closing stdin at once: this variant takes its stdin in the request.
	_ = wsjson.Write(r.Context(), agent, wire.Frame{Type: wire.FrameStdinClose})
	w.Header().Set("Content-Type", wire.NDJSON)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		var f wire.Frame
		if err := wsjson.Read(r.Context(), agent, &f); err != nil {
			if r.Context().Err() == nil {
				_ = enc.Encode(wire.Frame{Type: wire.FrameError, Message: "lost the sandbox's agent: " + err.Error()})
			}
			return
		}
		if enc.Encode(f) != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		if f.Type == wire.FrameExit {
			return
		}
	}
}

// acceptWS upgrades a request for a WebSocket, checking nothing about the
// origin: callers authenticate with an API key, not a cookie.
func acceptWS(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	// A client that offered its key as a subprotocol must see one of its
	// offers selected, or a browser fails the handshake.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true, Subprotocols: []string{wire.Protocol}})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(wire.MaxCapturedOutput)
	return c, nil
}

// closeWithError ends a WebSocket with an error frame a client can show.
func closeWithError(ctx context.Context, c *websocket.Conn, err error) {
	e := errorOf(err)
	b, _ := json.Marshal(wire.ErrorFrame{Type: wire.FrameError, Error: e})
	_ = c.Write(ctx, websocket.MessageText, b)
	c.Close(websocket.StatusPolicyViolation, string(e.Code))
}

// handleExecWS runs a command over a WebSocket: the client's first text
// message is the exec request; then it may send stdin, stdin_close and kill
// frames, and receives stdout, stderr and exit frames.
func (s *Server) handleExecWS(w http.ResponseWriter, r *http.Request) {
	client, err := acceptWS(w, r)
	if err != nil {
		return
	}
	defer client.CloseNow()
	ctx := r.Context()
	var req wire.ExecRequest
	if err := wsjson.Read(ctx, client, &req); err != nil {
		closeWithError(ctx, client, &sandbox.Error{Kind: sandbox.KindBadRequest, Message: "first message must be the exec request: " + err.Error()})
		return
	}
	agent, release, err := s.sandbox.ExecStream(ctx, org(r), r.PathValue("id"), &req)
	if err != nil {
		closeWithError(ctx, client, err)
		return
	}
	defer release()
	defer agent.CloseNow()
	relay(ctx, client, agent)
}

// relay copies messages both ways between a client and an agent WebSocket
// until either side closes, then closes the other the same way.
func relay(ctx context.Context, client, agent *websocket.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type ended struct {
		agentSide bool
		err       error
	}
	done := make(chan ended, 2)
	pipe := func(dst, src *websocket.Conn, agentSide bool) {
		for {
			typ, data, err := src.Read(ctx)
			if err == nil {
				err = dst.Write(ctx, typ, data)
			}
			if err != nil {
				done <- ended{agentSide, err}
				return
			}
		}
	}
	go pipe(agent, client, false)
	go pipe(client, agent, true)
	e := <-done
	status := websocket.CloseStatus(e.err)
	if status == -1 {
		status = websocket.StatusInternalError
		if e.agentSide {
			// Most likely the sandbox went away: say so, rather than
			// leave the client with a bare disconnect.
			b, _ := json.Marshal(wire.Frame{Type: wire.FrameError, Message: "lost the connection to the sandbox: " + e.err.Error()})
			_ = client.Write(ctx, websocket.MessageText, b)
		}
	}
	client.Close(status, "")
	agent.Close(status, "")
}

func (s *Server) handlePTY(w http.ResponseWriter, r *http.Request) {
	cols, _ := strconv.Atoi(r.URL.Query().Get("cols"))
	rows, _ := strconv.Atoi(r.URL.Query().Get("rows"))
	if cols < 0 || rows < 0 || cols > 1000 || rows > 1000 {
		writeError(w, wire.CodeBadRequest, "cols and rows must be between 1 and 1000", "cols")
		return
	}
	// Open the sandbox side first so a missing sandbox is a plain 404, not
	// a WebSocket that closes at once.
	agent, release, err := s.sandbox.PTY(r.Context(), org(r), r.PathValue("id"), cols, rows, nil)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer release()
	defer agent.CloseNow()
	client, err := acceptWS(w, r)
	if err != nil {
		return
	}
	defer client.CloseNow()
	relay(r.Context(), client, agent)
}

func pathParam(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" {
		return "", &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "path", Message: "query parameter path is required"}
	}
	if !strings.HasPrefix(p, "/") {
		return "", &sandbox.Error{Kind: sandbox.KindBadRequest, Field: "path", Message: "path " + strconv.Quote(p) + " must be absolute"}
	}
	return p, nil
}

func (s *Server) handleReadFile(w http.ResponseWriter, r *http.Request) {
	p, err := pathParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rc, size, err := s.sandbox.ReadFile(r.Context(), org(r), r.PathValue("id"), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
}

// fileRoute serves a files request about one path: fn answers a JSON
// value, or nil for 204 No Content.
func (s *Server) fileRoute(fn func(r *http.Request, org, id, path string) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := pathParam(r)
		var v any
		if err == nil {
			v, err = fn(r, org(r), r.PathValue("id"), p)
		}
		switch {
		case err != nil:
			s.fail(w, r, err)
		case v == nil:
			w.WriteHeader(http.StatusNoContent)
		default:
			writeJSON(w, http.StatusOK, v)
		}
	}
}

func (s *Server) writeFile(r *http.Request, org, id, p string) (any, error) {
	return s.sandbox.WriteFile(r.Context(), org, id, p, r.URL.Query().Get("mode"), r.Body)
}

// handleReadArchive streams a directory as tar.
func (s *Server) handleReadArchive(w http.ResponseWriter, r *http.Request) {
	p, err := pathParam(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rc, err := s.sandbox.ReadArchive(r.Context(), org(r), r.PathValue("id"), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", wire.ArchiveContentType)
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
}

func (s *Server) writeArchive(r *http.Request, org, id, p string) (any, error) {
	return s.sandbox.WriteArchive(r.Context(), org, id, p, r.Body)
}

func (s *Server) removeFile(r *http.Request, org, id, p string) (any, error) {
	return nil, s.sandbox.RemoveFile(r.Context(), org, id, p, r.URL.Query().Get("recursive") == "true")
}

func (s *Server) listFiles(r *http.Request, org, id, p string) (any, error) {
	list, err := s.sandbox.ListFiles(r.Context(), org, id, p)
	if err != nil {
		return nil, err
	}
	list.Path = p
	if list.Entries == nil {
		list.Entries = []wire.FileInfo{}
	}
	return list, nil
}

func (s *Server) statFile(r *http.Request, org, id, p string) (any, error) {
	return s.sandbox.StatFile(r.Context(), org, id, p)
}

func (s *Server) mkdir(r *http.Request, org, id, p string) (any, error) {
	return s.sandbox.Mkdir(r.Context(), org, id, p)
}
