package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/warrenhq/warren/wire"
)

// Exec runs a command to completion and returns its exit code and output
// (each stream capped at wire.MaxCapturedOutput; use ExecStream for more).
// A non-zero exit is a result, not an error.
func (c *Client) Exec(ctx context.Context, id string, req *ExecRequest) (*ExecResult, error) {
	var res ExecResult
	return &res, c.call(ctx, http.MethodPost, sandboxPath(id, "/exec"), nil, req, &res)
}

// ExecHandlers receive a streaming exec's output as it arrives. Either may
// be nil.
type ExecHandlers struct {
	OnStdout func(data string)
	OnStderr func(data string)
}

// ExecStream runs a command, calling the handlers with its output in the
// order the command wrote it, and returns its result once it exits. The
// result's Stdout and Stderr are empty: the output went to the handlers.
func (c *Client) ExecStream(ctx context.Context, id string, req *ExecRequest, h ExecHandlers) (*ExecResult, error) {
	for f, err := range c.ExecFrames(ctx, id, req) {
		if err != nil {
			return nil, err
		}
		switch f.Type {
		case wire.FrameStdout:
			if h.OnStdout != nil {
				h.OnStdout(f.Data)
			}
		case wire.FrameStderr:
			if h.OnStderr != nil {
				h.OnStderr(f.Data)
			}
		case wire.FrameExit:
			res := &ExecResult{TimedOut: f.TimedOut, OOMKilled: f.OOMKilled, Truncated: f.Truncated, DurationMs: f.DurationMs}
			if f.ExitCode != nil {
				res.ExitCode = *f.ExitCode
			}
			return res, nil
		}
	}
	return nil, errors.New("exec stream ended without an exit")
}

// ExecFrames runs a command and yields its frames as they arrive: stdout
// and stderr, then one exit. A failure (the sandbox ended, the connection
// dropped, an error frame) is yielded as the error of the last pair.
//
//	for f, err := range c.ExecFrames(ctx, id, req) { ... }
func (c *Client) ExecFrames(ctx context.Context, id string, req *ExecRequest) iter.Seq2[Frame, error] {
	return func(yield func(Frame, error) bool) {
		b, err := json.Marshal(req)
		if err != nil {
			yield(Frame{}, err)
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		resp, err := c.send(ctx, http.MethodPost, sandboxPath(id, "/exec/stream"), nil, bytes.NewReader(b), "application/json")
		if err != nil {
			yield(Frame{}, err)
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), wire.MaxFrame)
		for sc.Scan() {
			var f Frame
			if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
				yield(Frame{}, fmt.Errorf("decode exec frame: %w", err))
				return
			}
			if f.Type == wire.FrameError {
				yield(Frame{}, newError(0, wire.Error{Code: wire.CodeInternal, Message: f.Message}))
				return
			}
			if !yield(f, nil) || f.Type == wire.FrameExit {
				return
			}
		}
		err = sc.Err()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		yield(Frame{}, fmt.Errorf("exec stream: %w", err))
	}
}

// ExecSession is a command running over a WebSocket, with stdin.
type ExecSession struct{ conn *websocket.Conn }

// ExecInteractive starts a command whose stdin and output stream both
// ways. Send input with Stdin, end it with CloseStdin, read frames with
// Recv until the exit frame, then Close.
func (c *Client) ExecInteractive(ctx context.Context, id string, req *ExecRequest) (*ExecSession, error) {
	conn, err := c.dialWS(ctx, sandboxPath(id, "/exec/ws"), nil)
	if err != nil {
		return nil, err
	}
	if err := wsjson.Write(ctx, conn, req); err != nil {
		conn.CloseNow()
		return nil, fmt.Errorf("send exec request: %w", err)
	}
	return &ExecSession{conn: conn}, nil
}

// Stdin sends input to the command.
func (s *ExecSession) Stdin(ctx context.Context, data []byte) error {
	return wsjson.Write(ctx, s.conn, Frame{Type: wire.FrameStdin, Data: string(data)})
}

// CloseStdin ends the command's input.
func (s *ExecSession) CloseStdin(ctx context.Context) error {
	return wsjson.Write(ctx, s.conn, Frame{Type: wire.FrameStdinClose})
}

// Kill ends the command and everything it started.
func (s *ExecSession) Kill(ctx context.Context) error {
	return wsjson.Write(ctx, s.conn, Frame{Type: wire.FrameKill})
}

// Recv returns the next frame: stdout and stderr, then exit. An error
// frame from the server is returned as an *Error.
func (s *ExecSession) Recv(ctx context.Context) (Frame, error) {
	_, data, err := s.conn.Read(ctx)
	if err != nil {
		return Frame{}, err
	}
	return decodeFrame(data)
}

// decodeFrame reads a frame, turning the server's error frames into errors.
func decodeFrame(data []byte) (Frame, error) {
	var e struct {
		Type  string      `json:"type"`
		Error *wire.Error `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != nil {
		return Frame{}, newError(0, *e.Error)
	}
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return Frame{}, fmt.Errorf("decode frame: %w", err)
	}
	if f.Type == wire.FrameError {
		return Frame{}, newError(0, wire.Error{Code: wire.CodeInternal, Message: f.Message})
	}
	return f, nil
}

// Close ends the session (and the command, if it still runs).
func (s *ExecSession) Close() error { return s.conn.CloseNow() }

func (c *Client) dialWS(ctx context.Context, path string, q url.Values) (*websocket.Conn, error) {
	h := http.Header{}
	if c.APIKey != "" {
		h.Set("Authorization", "Bearer "+c.APIKey)
	}
	conn, resp, err := websocket.Dial(ctx, c.url(path, q), &websocket.DialOptions{HTTPHeader: h, HTTPClient: c.httpClient()})
	if err != nil {
		if resp != nil && resp.StatusCode >= 300 {
			return nil, decodeError(resp)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	conn.SetReadLimit(wire.MaxFrame)
	return conn, nil
}

// StartCommand starts a named background command; it keeps running after
// the call returns.
func (c *Client) StartCommand(ctx context.Context, id string, req *CommandRequest) (*Command, error) {
	var out Command
	return &out, c.call(ctx, http.MethodPost, sandboxPath(id, "/commands"), nil, req, &out)
}

// Commands lists a sandbox's background commands.
func (c *Client) Commands(ctx context.Context, id string) ([]Command, error) {
	var out wire.CommandList
	return out.Commands, c.call(ctx, http.MethodGet, sandboxPath(id, "/commands"), nil, nil, &out)
}

// CommandLogs streams a background command's combined output from its
// start; with follow, until it exits. The caller closes it.
func (c *Client) CommandLogs(ctx context.Context, id, name string, follow bool) (io.ReadCloser, error) {
	q := url.Values{"follow": {strconv.FormatBool(follow)}}
	resp, err := c.send(ctx, http.MethodGet, sandboxPath(id, "/commands/"+url.PathEscape(name)+"/logs"), q, nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
