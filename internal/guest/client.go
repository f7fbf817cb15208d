package guest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
	"github.com/warrenhq/warren/wire"
)

// Client talks to one sandbox's agent. It owns the host end of the agent's
// socket: it accepts the agent's connection, and accepts it again whenever
// the agent re-dials.
//
// Everything on the other end may be hostile: root inside the sandbox can
// connect to the socket, and a compromised agent can answer anything. So
// only a connection that greets with the sandbox's token is served, only
// one at a time, every read is bounded, and no input can panic the host.
type Client struct {
	listener net.Listener
	http     *http.Client
	opts     Options

	mu      sync.Mutex
	session *yamux.Session
	ready   chan struct{} // closed while a session is up; replaced when it drops
	closed  bool

	// greeting bounds the connections being greeted at once.
	greeting  chan struct{}
	greetWait time.Duration
	refused   atomic.Int64
	lastLog   atomic.Int64 // unix nanos of the last refusal logged
}

// Options configure a Client.
type Options struct {
	// Token is what the agent must greet with. Empty accepts an agent
	// that does not greet: one started by a warren from before greetings,
	// still running and adopted after an upgrade.
	Token string
	// OnDisconnect, if set, is called whenever the agent's session drops,
	// so the owner can check at once whether the sandbox died.
	OnDisconnect func()
	// Log receives refusals and protocol violations.
	Log *slog.Logger
}

// reconnectWait bounds how long a call waits for a disconnected agent to
// dial again before failing.
const reconnectWait = 10 * time.Second

// greetingWait is GreetingTimeout; tests shorten it.
var greetingWait = GreetingTimeout

// maxGreeting is how many connections may be greeted at once; more are
// refused at once, so a connect storm costs a few goroutines at most.
const maxGreeting = 4

// Listen creates the host socket at path and returns a client that serves
// agents dialing it.
func Listen(path string, o Options) (*Client, error) {
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen for agent on %s: %w", path, err)
	}
	// Removing the socket file on close would race a successor listening at
	// the same path, so leave that to whoever owns the directory.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &Client{listener: l, opts: o, ready: make(chan struct{}), greeting: make(chan struct{}, maxGreeting), greetWait: greetingWait}
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
		// Bounds what the agent may send before its status line.
		MaxResponseHeaderBytes: 64 << 10,
	}}
	go c.acceptLoop()
	return c, nil
}

// Refused counts the connections refused so far: wrong or missing
// greetings, extra connections while the agent is connected, storms.
func (c *Client) Refused() int64 { return c.refused.Load() }

func (c *Client) acceptLoop() {
	defer c.recoverPanic("accept loop", nil)
	for {
		conn, err := c.listener.Accept()
		if err != nil {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or the like: wait, never spin.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case c.greeting <- struct{}{}:
			go c.admit(conn)
		default:
			c.refuse(conn, "too many connections waiting to greet")
		}
	}
}

// admit greets a new connection and, if it is the agent, makes it the
// session.
func (c *Client) admit(conn net.Conn) {
	defer func() { <-c.greeting }()
	defer c.recoverPanic("agent greeting", conn)
	if c.opts.Token != "" {
		if err := readGreeting(conn, c.opts.Token, c.greetWait); err != nil {
			c.refuse(conn, err.Error())
			return
		}
	}
	if c.current() != nil {
		c.refuse(conn, "the agent is already connected")
		return
	}
	s, err := yamux.Client(conn, sessionConfig())
	if err != nil {
		conn.Close()
		return
	}
	c.mu.Lock()
	if c.closed || (c.session != nil && !c.session.IsClosed()) {
		c.mu.Unlock()
		s.Close()
		if !c.isClosed() {
			c.countRefusal("the agent is already connected")
		}
		return
	}
	c.session = s
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
	c.mu.Unlock()
	go c.watch(s)
	go c.refuseStreams(s)
}

// current returns the live session, or nil. A session whose agent stopped
// answering (its end broke, say in a restore) is closed and not counted,
// so the real agent's new connection replaces it.
func (c *Client) current() *yamux.Session {
	c.mu.Lock()
	s := c.session
	c.mu.Unlock()
	if s == nil || s.IsClosed() {
		return nil
	}
	alive := make(chan bool, 1)
	go func() {
		defer c.recoverPanic("agent ping", nil)
		_, err := s.Ping()
		alive <- err == nil
	}()
	select {
	case ok := <-alive:
		if ok {
			return s
		}
	case <-time.After(2 * time.Second):
	}
	s.Close()
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// readGreeting reads the agent's greeting, a byte at a time so nothing of
// what follows is consumed, and checks its token.
func readGreeting(conn net.Conn, token string, wait time.Duration) error {
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	defer conn.SetReadDeadline(time.Time{})
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := conn.Read(b); err != nil {
			return fmt.Errorf("no greeting: %v", err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
		if len(line) >= MaxGreeting {
			return errors.New("greeting too long")
		}
	}
	got, ok := bytes.CutPrefix(line, []byte(GreetingPrefix))
	if !ok {
		return errors.New("malformed greeting")
	}
	if subtle.ConstantTimeCompare(got, []byte(token)) != 1 {
		return errors.New("wrong agent token")
	}
	return nil
}

// refuse closes a connection that is not (or not now) the agent.
func (c *Client) refuse(conn net.Conn, why string) {
	conn.Close()
	c.countRefusal(why)
}

func (c *Client) countRefusal(why string) {
	n := c.refused.Add(1)
	// Logged at most once a second per sandbox: a storm must not flood
	// the log either.
	now := time.Now().UnixNano()
	last := c.lastLog.Load()
	if now-last > int64(time.Second) && c.lastLog.CompareAndSwap(last, now) {
		c.opts.Log.Warn("refused a connection to the agent socket", "reason", why, "refused_total", n)
	}
}

// refuseStreams drops the session if the other end opens a stream: the
// host opens every stream, so this is not the agent behaving.
func (c *Client) refuseStreams(s *yamux.Session) {
	defer c.recoverPanic("agent streams", nil)
	st, err := s.AcceptStream()
	if err != nil {
		return
	}
	st.Close()
	c.opts.Log.Warn("agent opened a stream to the host; dropping its connection")
	s.Close()
}

// recoverPanic keeps a panic caused by what an agent sent from ending
// warren: the connection at hand is dropped instead.
func (c *Client) recoverPanic(what string, conn io.Closer) {
	if r := recover(); r != nil {
		c.opts.Log.Error("recovered from a panic serving an agent connection", "in", what, "panic", fmt.Sprint(r))
		if conn != nil {
			conn.Close()
		}
	}
}

// watch marks the client not ready once a session ends, so later calls wait
// for the agent to dial again instead of failing.
func (c *Client) watch(s *yamux.Session) {
	defer c.recoverPanic("agent session watch", nil)
	<-s.CloseChan()
	c.mu.Lock()
	dropped := c.session == s && !c.closed
	if dropped {
		c.session = nil
		c.ready = make(chan struct{})
		c.http.Transport.(*http.Transport).CloseIdleConnections()
	}
	c.mu.Unlock()
	if dropped && c.opts.OnDisconnect != nil {
		c.opts.OnDisconnect()
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
		if s != nil {
			// Closed but not yet noticed by watch: wait a moment for it.
			select {
			case <-s.CloseChan():
			case <-ctx.Done():
				return nil, fmt.Errorf("wait for agent to connect: %w", ctx.Err())
			}
			time.Sleep(time.Millisecond)
			continue
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

// Close stops accepting agents and drops the current session. Calls
// waiting for the agent to dial again fail at once.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	s := c.session
	c.session = nil
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
	c.mu.Unlock()
	if s != nil {
		s.Close()
	}
	return c.listener.Close()
}

// Exec runs a command to completion. The agent streams the command's
// output as frames; the host keeps at most MaxCapturedOutput of each
// stream, whatever the agent sends, and marks the result truncated.
func (c *Client) Exec(ctx context.Context, req *wire.ExecRequest) (*wire.ExecResult, error) {
	body, _ := json.Marshal(req)
	resp, err := c.requestWith(ctx, http.MethodPost, "/exec", nil, bytes.NewReader(body), map[string]string{"Accept": NDJSON})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), NDJSON) {
		// An agent from before streamed answers: one JSON object.
		var res wire.ExecResult
		if err := decodeLimited(resp.Body, &res, 2*MaxCapturedOutput+MaxAnswer); err != nil {
			return nil, fmt.Errorf("decode agent answer to exec: %w", err)
		}
		return &res, nil
	}
	return CollectExec(resp.Body)
}

// CollectExec reads a synchronous exec's frames into its result, keeping
// at most MaxCapturedOutput per stream.
func CollectExec(r io.Reader) (*wire.ExecResult, error) {
	stdout := &outputBuffer{max: MaxCapturedOutput}
	stderr := &outputBuffer{max: MaxCapturedOutput}
	fr := NewFrameReader(r)
	for {
		f, err := fr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the agent ended the answer before the command's exit")
			}
			return nil, fmt.Errorf("read exec output: %w", err)
		}
		switch f.Type {
		case "stdout":
			stdout.Write([]byte(f.Data))
		case "stderr":
			stderr.Write([]byte(f.Data))
		case "error":
			return nil, fmt.Errorf("agent: %s", truncateMessage(f.Message))
		case "exit":
			if f.ExitCode == nil {
				return nil, errors.New("read exec output: exit frame without exit_code")
			}
			return &wire.ExecResult{
				ExitCode:   *f.ExitCode,
				Stdout:     stdout.String(),
				Stderr:     stderr.String(),
				TimedOut:   f.TimedOut,
				OOMKilled:  f.OOMKilled,
				Truncated:  f.Truncated || stdout.truncated || stderr.truncated,
				DurationMs: max(f.DurationMs, 0),
			}, nil
		}
	}
}

// outputBuffer keeps up to max bytes of a stream in pieces, joined once
// at the end, so a stream costs at most twice what it keeps.
type outputBuffer struct {
	parts     []string
	n, max    int
	truncated bool
}

func (b *outputBuffer) Write(p []byte) {
	if room := b.max - b.n; len(p) > room {
		b.truncated = true
		p = p[:max(room, 0)]
	}
	if len(p) > 0 {
		b.parts = append(b.parts, string(p))
		b.n += len(p)
	}
}

func (b *outputBuffer) String() string {
	s := strings.Join(b.parts, "")
	b.parts = nil
	return s
}

// FrameReader reads NDJSON frames, refusing any line over MaxFrame. Its
// buffer starts small: most frames are a few bytes, and an exec must not
// pay for clearing a megabyte.
type FrameReader struct {
	r    *bufio.Reader
	line []byte
}

// NewFrameReader reads frames from r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, 32<<10)}
}

// Next returns the next frame; io.EOF at a clean end.
func (fr *FrameReader) Next() (*wire.Frame, error) {
	var f wire.Frame
	if err := fr.NextInto(&f); err != nil {
		return nil, err
	}
	return &f, nil
}

// NextInto decodes the next non-empty line into v; io.EOF at a clean end.
func (fr *FrameReader) NextInto(v any) error {
	for {
		fr.line = fr.line[:0]
		var err error
		for {
			var chunk []byte
			chunk, err = fr.r.ReadSlice('\n')
			if len(fr.line)+len(chunk) > MaxFrame {
				return fmt.Errorf("a frame is longer than %d bytes", MaxFrame)
			}
			fr.line = append(fr.line, chunk...)
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if err != nil && (len(fr.line) == 0 || !errors.Is(err, io.EOF)) {
			return err
		}
		line := bytes.TrimSpace(fr.line)
		if len(line) == 0 {
			if err != nil {
				return err
			}
			continue
		}
		if jerr := json.Unmarshal(line, v); jerr != nil {
			return fmt.Errorf("malformed frame: %v", jerr)
		}
		return nil
	}
}

// truncateMessage keeps an agent's message short enough to log and show.
func truncateMessage(s string) string {
	if len(s) > 4096 {
		return s[:4096] + "..."
	}
	return s
}

// decodeLimited decodes one JSON value of at most limit bytes.
func decodeLimited(r io.Reader, out any, limit int64) error {
	lr := &io.LimitedReader{R: r, N: limit + 1}
	err := json.NewDecoder(lr).Decode(out)
	if lr.N <= 0 {
		return fmt.Errorf("answer is larger than %d bytes", limit)
	}
	return err
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
func (c *Client) WriteFile(ctx context.Context, path string, mode string, r io.Reader) (*wire.FileInfo, error) {
	q := url.Values{"path": {path}}
	if mode != "" {
		q.Set("mode", mode)
	}
	var fi wire.FileInfo
	if err := c.do(ctx, http.MethodPut, "/files", q, r, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// ReadArchive streams the tree under a directory as tar. The caller
// closes it.
func (c *Client) ReadArchive(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, err := c.request(ctx, http.MethodGet, "/files/archive", url.Values{"path": {path}}, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// WriteArchive unpacks the tar stream r into a directory, creating it.
func (c *Client) WriteArchive(ctx context.Context, path string, r io.Reader) (*wire.FileInfo, error) {
	var fi wire.FileInfo
	if err := c.do(ctx, http.MethodPut, "/files/archive", url.Values{"path": {path}}, r, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// List lists a directory.
func (c *Client) List(ctx context.Context, path string) (*wire.FileList, error) {
	var out wire.FileList
	if err := c.doLimited(ctx, http.MethodGet, "/files/list", url.Values{"path": {path}}, nil, &out, MaxListAnswer); err != nil {
		return nil, err
	}
	return &out, nil
}

// Stat describes one path.
func (c *Client) Stat(ctx context.Context, path string) (*wire.FileInfo, error) {
	var fi wire.FileInfo
	if err := c.do(ctx, http.MethodGet, "/files/stat", url.Values{"path": {path}}, nil, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// Mkdir creates a directory and its parents.
func (c *Client) Mkdir(ctx context.Context, path string) (*wire.FileInfo, error) {
	var fi wire.FileInfo
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
	conn.SetReadLimit(MaxFrame)
	return conn, nil
}

func (c *Client) request(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	return c.requestWith(ctx, method, path, q, body, nil)
}

func (c *Client) requestWith(ctx context.Context, method, path string, q url.Values, body io.Reader, header map[string]string) (*http.Response, error) {
	u := "http://agent" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header.Set(k, v)
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
	return c.doLimited(ctx, method, path, q, body, out, MaxAnswer)
}

// doLimited makes a request and decodes an answer of at most limit bytes.
func (c *Client) doLimited(ctx context.Context, method, path string, q url.Values, body io.Reader, out any, limit int64) error {
	resp, err := c.request(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, limit))
		return nil
	}
	if err := decodeLimited(resp.Body, out, limit); err != nil {
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
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer))
	if json.Unmarshal(b, &body) != nil || body.Error.Message == "" {
		body.Error = Error{Code: "internal", Message: fmt.Sprintf("agent answered %s: %s", resp.Status, bytes.TrimSpace(b))}
	}
	return &AgentError{Status: resp.StatusCode, Code: truncateMessage(body.Error.Code), Message: truncateMessage(body.Error.Message)}
}

// StartCommand starts a named background command.
func (c *Client) StartCommand(ctx context.Context, req *wire.CommandRequest) (*wire.Command, error) {
	body, _ := json.Marshal(req)
	var out wire.Command
	if err := c.do(ctx, http.MethodPost, "/commands", nil, bytes.NewReader(body), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Commands lists background commands.
func (c *Client) Commands(ctx context.Context) ([]wire.Command, error) {
	var out struct {
		Commands []wire.Command `json:"commands"`
	}
	if err := c.doLimited(ctx, http.MethodGet, "/commands", nil, nil, &out, MaxListAnswer); err != nil {
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

// Memory reports the sandbox's memory as its agent sees it.
func (c *Client) Memory(ctx context.Context) (*MemoryState, error) {
	var st MemoryState
	if err := c.do(ctx, http.MethodGet, "/memory", nil, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Pressure tells the agent memory is getting tight; with always, that the
// host cannot say so and the agent must look by itself.
func (c *Client) Pressure(ctx context.Context, always bool) error {
	return c.do(ctx, http.MethodPost, "/memory/pressure", url.Values{"always": {strconv.FormatBool(always)}}, nil, nil)
}

// ReadyResult is the outcome of a ready check.
type ReadyResult struct {
	Ready     bool   `json:"ready"`
	ElapsedMs int64  `json:"elapsed_ms"`
	Last      string `json:"last,omitempty"`
}

// Ready waits, inside the sandbox, for the check to pass or time out.
func (c *Client) Ready(ctx context.Context, rc *wire.ReadyCheck) (*ReadyResult, error) {
	body, _ := json.Marshal(rc)
	var out ReadyResult
	if err := c.do(ctx, http.MethodPost, "/ready", nil, bytes.NewReader(body), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ProcStream is a process's events, read from the agent.
type ProcStream struct {
	body io.ReadCloser
	fr   *FrameReader
}

// Next returns the next event; io.EOF once the stream ends.
func (s *ProcStream) Next() (*ProcEvent, error) {
	var ev ProcEvent
	if err := s.fr.NextInto(&ev); err != nil {
		return nil, err
	}
	return &ev, nil
}

// Close stops watching; the process goes on.
func (s *ProcStream) Close() error { return s.body.Close() }

func (c *Client) procStream(ctx context.Context, method, path string, body io.Reader) (*ProcStream, error) {
	resp, err := c.request(ctx, method, path, nil, body)
	if err != nil {
		return nil, err
	}
	return &ProcStream{body: resp.Body, fr: NewFrameReader(resp.Body)}, nil
}

// StartProc starts a process that outlives the returned stream of its
// events (ProcStarted first).
func (c *Client) StartProc(ctx context.Context, req *ProcStart) (*ProcStream, error) {
	body, _ := json.Marshal(req)
	return c.procStream(ctx, http.MethodPost, "/procs", bytes.NewReader(body))
}

// ConnectProc watches a running process's events from now on.
func (c *Client) ConnectProc(ctx context.Context, pid int) (*ProcStream, error) {
	return c.procStream(ctx, http.MethodGet, "/procs/"+strconv.Itoa(pid)+"/events", nil)
}

// Procs lists the running processes.
func (c *Client) Procs(ctx context.Context) ([]ProcInfo, error) {
	var out ProcList
	if err := c.doLimited(ctx, http.MethodGet, "/procs", nil, nil, &out, MaxListAnswer); err != nil {
		return nil, err
	}
	return out.Procs, nil
}

// ProcInput writes to a process's terminal or stdin.
func (c *Client) ProcInput(ctx context.Context, pid int, data []byte) error {
	return c.procCall(ctx, pid, "input", ProcInput{Data: data})
}

// ProcCloseStdin ends a process's input.
func (c *Client) ProcCloseStdin(ctx context.Context, pid int) error {
	return c.procCall(ctx, pid, "close-stdin", struct{}{})
}

// ProcSignal signals a process and its group.
func (c *Client) ProcSignal(ctx context.Context, pid, signal int) error {
	return c.procCall(ctx, pid, "signal", ProcSignal{Signal: signal})
}

// ProcResize resizes a process's terminal.
func (c *Client) ProcResize(ctx context.Context, pid int, size TermSize) error {
	return c.procCall(ctx, pid, "resize", size)
}

func (c *Client) procCall(ctx context.Context, pid int, what string, v any) error {
	body, _ := json.Marshal(v)
	return c.do(ctx, http.MethodPost, "/procs/"+strconv.Itoa(pid)+"/"+what, nil, bytes.NewReader(body), nil)
}

// Move renames a path inside the sandbox, creating the destination's
// parents, and describes the moved entry.
func (c *Client) Move(ctx context.Context, from, to string) (*wire.FileInfo, error) {
	var fi wire.FileInfo
	if err := c.do(ctx, http.MethodPost, "/files/move", url.Values{"path": {from}, "to": {to}}, nil, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

// WatchStream is a directory's changes, read from the agent.
type WatchStream struct {
	body io.ReadCloser
	fr   *FrameReader
}

// Next returns the next event (WatchStarted first); io.EOF once the
// stream ends.
func (s *WatchStream) Next() (*WatchEvent, error) {
	var ev WatchEvent
	if err := s.fr.NextInto(&ev); err != nil {
		return nil, err
	}
	return &ev, nil
}

// Close stops watching.
func (s *WatchStream) Close() error { return s.body.Close() }

// Watch streams a directory's changes until the stream is closed.
func (c *Client) Watch(ctx context.Context, req WatchRequest) (*WatchStream, error) {
	q := url.Values{"path": {req.Path}}
	if req.Recursive {
		q.Set("recursive", "1")
	}
	if req.Entry {
		q.Set("entry", "1")
	}
	resp, err := c.request(ctx, http.MethodGet, "/files/watch", q, nil)
	if err != nil {
		return nil, err
	}
	return &WatchStream{body: resp.Body, fr: NewFrameReader(resp.Body)}, nil
}

// CreateWatcher starts a watcher that keeps a directory's changes until
// they are read.
func (c *Client) CreateWatcher(ctx context.Context, req WatchRequest) (string, error) {
	body, _ := json.Marshal(req)
	var out WatcherID
	if err := c.do(ctx, http.MethodPost, "/watchers", nil, bytes.NewReader(body), &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// WatcherEvents takes the changes a watcher has seen since the last call.
func (c *Client) WatcherEvents(ctx context.Context, id string) ([]WatchEvent, error) {
	var out WatcherEvents
	if err := c.doLimited(ctx, http.MethodGet, "/watchers/"+url.PathEscape(id)+"/events", nil, nil, &out, MaxListAnswer); err != nil {
		return nil, err
	}
	return out.Events, nil
}

// RemoveWatcher stops a watcher.
func (c *Client) RemoveWatcher(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/watchers/"+url.PathEscape(id), nil, nil, nil)
}
