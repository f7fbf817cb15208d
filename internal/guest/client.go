package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
)

// Client talks to one sandbox's agent. It owns the host end of the agent's
// socket: it accepts the agent's connection, and accepts it again whenever
// the agent re-dials.
type Client struct {
	listener net.Listener
	http     *http.Client

	mu      sync.Mutex
	session *yamux.Session
	ready   chan struct{} // closed when a session is up; replaced when it drops
	closed  bool

	onDisconnect func()
}

// reconnectWait bounds how long a call waits for a disconnected agent to
// dial again before failing.
const reconnectWait = 10 * time.Second

// Listen creates the host socket at path and returns a client that serves
// agents dialing it. onDisconnect, if not nil, is called whenever the
// agent's connection drops, so the owner can check at once whether the
// sandbox died.
func Listen(path string, onDisconnect func()) (*Client, error) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for agent on %s: %w", path, err)
	}
	// Removing the socket file on close would race a successor listening at
	// the same path, so leave that to whoever owns the directory.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	c := &Client{listener: l, ready: make(chan struct{}), onDisconnect: onDisconnect}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, reconnectWait)
			defer cancel()
			s, err := c.waitSession(ctx)
			if err != nil {
				return nil, err
			}
			return s.Open()
		},
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}}
	go c.acceptLoop()
	return c, nil
}

func (c *Client) acceptLoop() {
	for {
		conn, err := c.listener.Accept()
		if err != nil {
			return
		}
		s, err := yamux.Client(conn, sessionConfig())
		if err != nil {
			conn.Close()
			continue
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			s.Close()
			return
		}
		if c.session != nil {
			c.session.Close()
		}
		c.session = s
		close(c.ready)
		c.mu.Unlock()
		go c.watch(s)
	}
}

// watch marks the client not ready once a session ends, so later calls wait
// for the agent to dial again instead of failing.
func (c *Client) watch(s *yamux.Session) {
	<-s.CloseChan()
	c.mu.Lock()
	dropped := c.session == s && !c.closed
	if dropped {
		c.session = nil
		c.ready = make(chan struct{})
		c.http.Transport.(*http.Transport).CloseIdleConnections()
	}
	c.mu.Unlock()
	if dropped && c.onDisconnect != nil {
		c.onDisconnect()
	}
}

func (c *Client) waitSession(ctx context.Context) (*yamux.Session, error) {
	for {
		c.mu.Lock()
		s, ready, closed := c.session, c.ready, c.closed
		c.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("agent client closed")
		}
		if s != nil && !s.IsClosed() {
			return s, nil
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for agent to connect: %w", ctx.Err())
		}
	}
}

// Connected reports whether the agent is connected now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session != nil && !c.session.IsClosed()
}

// WaitReady blocks until the agent has connected.
func (c *Client) WaitReady(ctx context.Context) error {
	_, err := c.waitSession(ctx)
	return err
}

// Close stops accepting agents and drops the current session.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	s := c.session
	c.session = nil
	c.mu.Unlock()
	if s != nil {
		s.Close()
	}
	return c.listener.Close()
}

// Exec runs a command to completion.
func (c *Client) Exec(ctx context.Context, req *ExecRequest) (*ExecResult, error) {
	body, _ := json.Marshal(req)
	var res ExecResult
	if err := c.do(ctx, http.MethodPost, "/exec", nil, bytes.NewReader(body), &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// ReadFile opens a file for streaming. The caller closes it.
func (c *Client) ReadFile(ctx context.Context, path string) (io.ReadCloser, int64, error) {
	resp, err := c.request(ctx, http.MethodGet, "/files", url.Values{"path": {path}}, nil)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// WriteFile streams r into path, creating parent directories.
func (c *Client) WriteFile(ctx context.Context, path string, mode string, r io.Reader) (*FileInfo, error) {
	q := url.Values{"path": {path}}
	if mode != "" {
		q.Set("mode", mode)
	}
	var fi FileInfo
	if err := c.do(ctx, http.MethodPut, "/files", q, r, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// List lists a directory.
func (c *Client) List(ctx context.Context, path string) ([]FileInfo, error) {
	var out struct {
		Entries []FileInfo `json:"entries"`
	}
	if err := c.do(ctx, http.MethodGet, "/files/list", url.Values{"path": {path}}, nil, &out); err != nil {
		return nil, err
	}
	return out.Entries, nil
}

// Stat describes one path.
func (c *Client) Stat(ctx context.Context, path string) (*FileInfo, error) {
	var fi FileInfo
	if err := c.do(ctx, http.MethodGet, "/files/stat", url.Values{"path": {path}}, nil, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// Mkdir creates a directory and its parents.
func (c *Client) Mkdir(ctx context.Context, path string) (*FileInfo, error) {
	var fi FileInfo
	if err := c.do(ctx, http.MethodPost, "/files/mkdir", url.Values{"path": {path}}, nil, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// Remove removes a path, recursively if asked.
func (c *Client) Remove(ctx context.Context, path string, recursive bool) error {
	return c.do(ctx, http.MethodDelete, "/files", url.Values{"path": {path}, "recursive": {strconv.FormatBool(recursive)}}, nil, nil)
}

// ExecStream opens a streaming exec. The caller writes the ExecRequest as
// the first message, then reads Frames until an exit frame.
func (c *Client) ExecStream(ctx context.Context) (*websocket.Conn, error) {
	return c.dialWS(ctx, "/exec/stream", nil)
}

// PTY opens a terminal session; see the agent's handlePTY for framing.
func (c *Client) PTY(ctx context.Context, q url.Values) (*websocket.Conn, error) {
	return c.dialWS(ctx, "/pty", q)
}

func (c *Client) dialWS(ctx context.Context, path string, q url.Values) (*websocket.Conn, error) {
	u := "ws://agent" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.http})
	if err != nil {
		if resp != nil && resp.Body != nil {
			if aerr := decodeError(resp); aerr != nil {
				return nil, aerr
			}
		}
		return nil, fmt.Errorf("open %s on agent: %w", path, err)
	}
	conn.SetReadLimit(MaxCapturedOutput)
	return conn, nil
}

func (c *Client) request(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	u := "http://agent" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, out any) error {
	resp, err := c.request(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode agent answer to %s %s: %w", method, path, err)
	}
	return nil
}

// AgentError is an error the agent answered with, carrying its HTTP status.
type AgentError struct {
	Status  int
	Code    string
	Message string
}

func (e *AgentError) Error() string { return e.Message }

func decodeError(resp *http.Response) error {
	var body struct {
		Error Error `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if json.Unmarshal(b, &body) != nil || body.Error.Message == "" {
		body.Error = Error{Code: "internal", Message: fmt.Sprintf("agent answered %s: %s", resp.Status, bytes.TrimSpace(b))}
	}
	return &AgentError{Status: resp.StatusCode, Code: body.Error.Code, Message: body.Error.Message}
}

// StartCommand starts a named background command.
func (c *Client) StartCommand(ctx context.Context, req *CommandRequest) (*Command, error) {
	body, _ := json.Marshal(req)
	var out Command
	if err := c.do(ctx, http.MethodPost, "/commands", nil, bytes.NewReader(body), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Commands lists background commands.
func (c *Client) Commands(ctx context.Context) ([]Command, error) {
	var out struct {
		Commands []Command `json:"commands"`
	}
	if err := c.do(ctx, http.MethodGet, "/commands", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Commands, nil
}

// CommandLogs streams a background command's output. The caller closes it.
func (c *Client) CommandLogs(ctx context.Context, name string, follow bool) (io.ReadCloser, error) {
	resp, err := c.request(ctx, http.MethodGet, "/commands/"+url.PathEscape(name)+"/logs", url.Values{"follow": {strconv.FormatBool(follow)}}, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// ReadyResult is the outcome of a ready check.
type ReadyResult struct {
	Ready     bool   `json:"ready"`
	ElapsedMs int64  `json:"elapsed_ms"`
	Last      string `json:"last,omitempty"`
}

// Ready waits, inside the sandbox, for the check to pass or time out.
func (c *Client) Ready(ctx context.Context, rc *ReadyCheck) (*ReadyResult, error) {
	body, _ := json.Marshal(rc)
	var out ReadyResult
	if err := c.do(ctx, http.MethodPost, "/ready", nil, bytes.NewReader(body), &out); err != nil {
		return nil, err
	}
	return &out, nil
}
