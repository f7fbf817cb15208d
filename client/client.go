// Package client is the Go SDK for warren's REST API.
//
//	c := client.New("http://127.0.0.1:7070", os.Getenv("WARREN_API_KEY"))
//	sb, _ := c.CreateSandbox(ctx, &client.CreateRequest{Image: "base"})
//	res, _ := c.Exec(ctx, sb.ID, &client.ExecRequest{Cmd: "echo hi"})
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/warrenhq/warren/internal/api"
	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/sandbox"
)

// The API's shapes.
type (
	CreateRequest  = sandbox.CreateRequest
	Resources      = sandbox.Resources
	Sandbox        = sandbox.Sandbox
	ExecRequest    = guest.ExecRequest
	ExecResult     = guest.ExecResult
	Frame          = guest.Frame
	FileInfo       = guest.FileInfo
	Image          = image.Image
	ImageEvent     = image.Event
	NetworkPolicy  = network.Policy
	Port           = sandbox.Port
	Startup        = sandbox.Startup
	StartupCmd     = sandbox.StartupCommand
	Git            = sandbox.Git
	File           = sandbox.File
	ReadyCheck     = guest.ReadyCheck
	Command        = guest.Command
	CommandRequest = guest.CommandRequest
	PoolStatus     = sandbox.PoolStatus
)

// Info is what a server says about itself.
type Info struct {
	Version        string       `json:"version"`
	Runtimes       []string     `json:"runtimes"`
	DefaultRuntime string       `json:"default_runtime"`
	Pools          []PoolStatus `json:"pools"`
	Org            string       `json:"org"`
	// Warnings say where the node's isolation is weaker than its
	// default (runc without a user namespace, the process runtime).
	Warnings []string `json:"warnings"`
}

// Client calls one warren server.
type Client struct {
	BaseURL string
	APIKey  string
	HTTP    *http.Client
}

// New returns a client for the server at baseURL.
func New(baseURL, apiKey string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apiKey, HTTP: &http.Client{}}
}

// Error is an error answer from the server.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s (%s, field %s)", e.Message, e.Code, e.Field)
	}
	return fmt.Sprintf("%s (%s)", e.Message, e.Code)
}

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := c.BaseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	return req, nil
}

// send performs a request and returns the response if it succeeded.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string) (*http.Response, error) {
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body struct {
		Error Error `json:"error"`
	}
	if json.Unmarshal(b, &body) != nil || body.Error.Message == "" {
		body.Error = Error{Code: "http_" + strconv.Itoa(resp.StatusCode), Message: strings.TrimSpace(string(b))}
	}
	body.Error.Status = resp.StatusCode
	return &body.Error
}

func (c *Client) call(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.send(ctx, method, path, q, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

func sandboxPath(id string, rest ...string) string {
	return "/v1/sandboxes/" + url.PathEscape(id) + strings.Join(rest, "")
}

// CreateSandbox creates a sandbox and returns it running.
func (c *Client) CreateSandbox(ctx context.Context, req *CreateRequest) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodPost, "/v1/sandboxes", nil, req, &sb)
}

// GetSandbox returns one sandbox.
func (c *Client) GetSandbox(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodGet, sandboxPath(id), nil, nil, &sb)
}

// ListOptions filters ListSandboxes.
type ListOptions struct {
	States   []string
	Metadata map[string]string
}

// ListSandboxes lists sandboxes.
func (c *Client) ListSandboxes(ctx context.Context, opts ListOptions) ([]*Sandbox, error) {
	q := url.Values{}
	if len(opts.States) > 0 {
		q.Set("state", strings.Join(opts.States, ","))
	}
	for k, v := range opts.Metadata {
		q.Set("metadata."+k, v)
	}
	var out struct {
		Sandboxes []*Sandbox `json:"sandboxes"`
	}
	return out.Sandboxes, c.call(ctx, http.MethodGet, "/v1/sandboxes", q, nil, &out)
}

// DeleteSandbox ends a sandbox.
func (c *Client) DeleteSandbox(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodDelete, sandboxPath(id), nil, nil, &sb)
}

// SetNetwork changes a running sandbox's egress policy.
func (c *Client) SetNetwork(ctx context.Context, id string, p *NetworkPolicy) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodPut, sandboxPath(id, "/network"), nil, p, &sb)
}

// ExposePort makes a port reachable through the preview proxy.
func (c *Client) ExposePort(ctx context.Context, id string, port int) (*Port, error) {
	var p Port
	return &p, c.call(ctx, http.MethodPost, sandboxPath(id, "/ports/"+strconv.Itoa(port)), nil, nil, &p)
}

// UnexposePort stops previewing a port.
func (c *Client) UnexposePort(ctx context.Context, id string, port int) error {
	return c.call(ctx, http.MethodDelete, sandboxPath(id, "/ports/"+strconv.Itoa(port)), nil, nil, nil)
}

// PortToken is a signed, expiring preview link.
type PortToken = api.PortToken

// PreviewToken signs a preview URL valid for ttl.
func (c *Client) PreviewToken(ctx context.Context, id string, port int, ttl time.Duration) (*PortToken, error) {
	var t PortToken
	body := map[string]int64{"ttl_seconds": int64(ttl.Seconds())}
	return &t, c.call(ctx, http.MethodPost, sandboxPath(id, "/ports/"+strconv.Itoa(port)+"/token"), nil, body, &t)
}

// StartCommand starts a named background command.
func (c *Client) StartCommand(ctx context.Context, id string, req *CommandRequest) (*Command, error) {
	var out Command
	return &out, c.call(ctx, http.MethodPost, sandboxPath(id, "/commands"), nil, req, &out)
}

// Commands lists a sandbox's background commands.
func (c *Client) Commands(ctx context.Context, id string) ([]Command, error) {
	var out struct {
		Commands []Command `json:"commands"`
	}
	return out.Commands, c.call(ctx, http.MethodGet, sandboxPath(id, "/commands"), nil, nil, &out)
}

// CommandLogs streams a background command's output; with follow, until it
// exits. The caller closes it.
func (c *Client) CommandLogs(ctx context.Context, id, name string, follow bool) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, sandboxPath(id, "/commands/"+url.PathEscape(name)+"/logs"), url.Values{"follow": {strconv.FormatBool(follow)}}, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Pause saves a running sandbox's memory and files and stops it.
func (c *Client) Pause(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodPost, sandboxPath(id, "/pause"), nil, nil, &sb)
}

// Resume brings a paused sandbox back where it was.
func (c *Client) Resume(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodPost, sandboxPath(id, "/resume"), nil, nil, &sb)
}

// Fork copies a running sandbox into count new ones.
func (c *Client) Fork(ctx context.Context, id string, count int) ([]*Sandbox, error) {
	var out struct {
		Sandboxes []*Sandbox `json:"sandboxes"`
	}
	return out.Sandboxes, c.call(ctx, http.MethodPost, sandboxPath(id, "/fork"), nil, map[string]int{"count": count}, &out)
}

// Exec runs a command to completion.
func (c *Client) Exec(ctx context.Context, id string, req *ExecRequest) (*ExecResult, error) {
	var res ExecResult
	return &res, c.call(ctx, http.MethodPost, sandboxPath(id, "/exec"), nil, req, &res)
}

// ExecNDJSON runs a command and calls fn with each frame as it arrives,
// over the chunked-HTTP streaming variant.
func (c *Client) ExecNDJSON(ctx context.Context, id string, req *ExecRequest, fn func(Frame)) error {
	b, _ := json.Marshal(req)
	resp, err := c.send(ctx, http.MethodPost, sandboxPath(id, "/exec/stream"), nil, bytes.NewReader(b), "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), guest.MaxCapturedOutput)
	for sc.Scan() {
		var f Frame
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			return fmt.Errorf("decode exec frame: %w", err)
		}
		fn(f)
	}
	return sc.Err()
}

// ExecSession is a command running over a WebSocket.
type ExecSession struct{ conn *websocket.Conn }

// ExecStream starts a command whose stdin and output stream both ways.
func (c *Client) ExecStream(ctx context.Context, id string, req *ExecRequest) (*ExecSession, error) {
	conn, err := c.dialWS(ctx, sandboxPath(id, "/exec/ws"), nil)
	if err != nil {
		return nil, err
	}
	if err := wsjson.Write(ctx, conn, req); err != nil {
		conn.CloseNow()
		return nil, err
	}
	return &ExecSession{conn: conn}, nil
}

// Stdin sends input to the command.
func (s *ExecSession) Stdin(ctx context.Context, data []byte) error {
	return wsjson.Write(ctx, s.conn, Frame{Type: "stdin", Data: string(data)})
}

// CloseStdin signals end of input.
func (s *ExecSession) CloseStdin(ctx context.Context) error {
	return wsjson.Write(ctx, s.conn, Frame{Type: "stdin_close"})
}

// Kill ends the command and everything it started.
func (s *ExecSession) Kill(ctx context.Context) error {
	return wsjson.Write(ctx, s.conn, Frame{Type: "kill"})
}

// Recv returns the next frame: stdout, stderr, then exit (or error).
func (s *ExecSession) Recv(ctx context.Context) (Frame, error) {
	_, data, err := s.conn.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	var f Frame
	var e struct {
		Error *Error `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != nil {
		return Frame{}, e.Error
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return Frame{}, fmt.Errorf("decode exec frame: %w", err)
	}
	return f, nil
}

// Close ends the session.
func (s *ExecSession) Close() error { return s.conn.CloseNow() }

// PTY opens a terminal. Binary messages carry terminal bytes both ways;
// send {"type":"resize","cols":C,"rows":R} as a text message to resize.
func (c *Client) PTY(ctx context.Context, id string, cols, rows int) (*websocket.Conn, error) {
	q := url.Values{"cols": {strconv.Itoa(cols)}, "rows": {strconv.Itoa(rows)}}
	return c.dialWS(ctx, sandboxPath(id, "/pty"), q)
}

func (c *Client) dialWS(ctx context.Context, path string, q url.Values) (*websocket.Conn, error) {
	u := c.BaseURL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	h := http.Header{}
	if c.APIKey != "" {
		h.Set("Authorization", "Bearer "+c.APIKey)
	}
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h, HTTPClient: c.HTTP})
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 {
			return nil, decodeError(resp)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	conn.SetReadLimit(guest.MaxCapturedOutput)
	return conn, nil
}

// ReadFile streams a file out of a sandbox. The caller closes it.
func (c *Client) ReadFile(ctx context.Context, id, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, sandboxPath(id, "/files"), url.Values{"path": {path}}, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteFile streams r into a file, creating parent directories.
func (c *Client) WriteFile(ctx context.Context, id, path string, r io.Reader) (*FileInfo, error) {
	resp, err := c.send(ctx, http.MethodPut, sandboxPath(id, "/files"), url.Values{"path": {path}}, r, "application/octet-stream")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var fi FileInfo
	return &fi, json.NewDecoder(resp.Body).Decode(&fi)
}

// ListFiles lists a directory.
func (c *Client) ListFiles(ctx context.Context, id, path string) ([]FileInfo, error) {
	var out struct {
		Entries []FileInfo `json:"entries"`
	}
	return out.Entries, c.call(ctx, http.MethodGet, sandboxPath(id, "/files/list"), url.Values{"path": {path}}, nil, &out)
}

// StatFile describes a path.
func (c *Client) StatFile(ctx context.Context, id, path string) (*FileInfo, error) {
	var fi FileInfo
	return &fi, c.call(ctx, http.MethodGet, sandboxPath(id, "/files/stat"), url.Values{"path": {path}}, nil, &fi)
}

// Mkdir creates a directory and its parents.
func (c *Client) Mkdir(ctx context.Context, id, path string) (*FileInfo, error) {
	var fi FileInfo
	return &fi, c.call(ctx, http.MethodPost, sandboxPath(id, "/files/mkdir"), url.Values{"path": {path}}, nil, &fi)
}

// RemoveFile removes a path.
func (c *Client) RemoveFile(ctx context.Context, id, path string, recursive bool) error {
	return c.call(ctx, http.MethodDelete, sandboxPath(id, "/files"), url.Values{"path": {path}, "recursive": {strconv.FormatBool(recursive)}}, nil, nil)
}

// Info describes the server: version, runtimes and warm pools.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	var out Info
	return &out, c.call(ctx, http.MethodGet, "/v1/info", nil, nil, &out)
}

// Images lists images and their state.
func (c *Client) Images(ctx context.Context) ([]*Image, error) {
	var out struct {
		Images []*Image `json:"images"`
	}
	return out.Images, c.call(ctx, http.MethodGet, "/v1/images", nil, nil, &out)
}

// Image describes one image.
func (c *Client) Image(ctx context.Context, name string) (*Image, error) {
	var img Image
	return &img, c.call(ctx, http.MethodGet, "/v1/images/"+url.PathEscape(name), nil, nil, &img)
}

// BuildImage builds an image if needed, calling progress with each step.
func (c *Client) BuildImage(ctx context.Context, name string, progress func(ImageEvent)) (*Image, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/images/"+url.PathEscape(name)+"/build", nil, nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		// Progress lines are events; the last line is {"done":true,"image":{...}}.
		var end struct {
			Done  bool            `json:"done"`
			Image json.RawMessage `json:"image"`
		}
		if err := json.Unmarshal(sc.Bytes(), &end); err != nil {
			return nil, fmt.Errorf("decode build progress: %w", err)
		}
		if end.Done && len(end.Image) > 0 && end.Image[0] == '{' {
			var img Image
			return &img, json.Unmarshal(end.Image, &img)
		}
		var ev ImageEvent
		_ = json.Unmarshal(sc.Bytes(), &ev)
		if ev.Error != "" {
			return nil, fmt.Errorf("build image %s: %s", name, ev.Error)
		}
		if progress != nil {
			progress(ev)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("build image %s: the server ended the stream early", name)
}
