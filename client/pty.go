package client

import (
	"context"
	"encoding/json"
	"io"
	"net/url"
	"strconv"
	"sync"

	"github.com/coder/websocket"

	"github.com/warrenhq/warren/wire"
)

// PTYSession is a shell on a terminal in a sandbox. Read and Write carry
// the terminal's raw bytes; it is an io.ReadWriteCloser.
type PTYSession struct {
	conn *websocket.Conn
	ctx  context.Context

	mu       sync.Mutex
	pending  []byte
	exitCode *int
}

// PTY opens a login shell on a cols x rows terminal. The context bounds
// the whole session.
func (c *Client) PTY(ctx context.Context, id string, cols, rows int) (*PTYSession, error) {
	q := url.Values{"cols": {strconv.Itoa(cols)}, "rows": {strconv.Itoa(rows)}}
	conn, err := c.dialWS(ctx, sandboxPath(id, "/pty"), q)
	if err != nil {
		return nil, err
	}
	return &PTYSession{conn: conn, ctx: ctx}, nil
}

// Read returns terminal output. After the shell exits it returns io.EOF;
// ExitCode then says how it ended.
func (p *PTYSession) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.pending) == 0 {
		typ, data, err := p.conn.Read(p.ctx)
		if err != nil {
			if p.exitCode != nil || websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return 0, io.EOF
			}
			return 0, err
		}
		if typ == websocket.MessageBinary {
			p.pending = data
			break
		}
		f, err := decodeFrame(data)
		if err != nil {
			return 0, err
		}
		if f.Type == wire.FrameExit {
			p.exitCode = f.ExitCode
		}
	}
	n := copy(b, p.pending)
	p.pending = p.pending[n:]
	return n, nil
}

// Write sends keystrokes (or any bytes) to the terminal.
func (p *PTYSession) Write(b []byte) (int, error) {
	if err := p.conn.Write(p.ctx, websocket.MessageBinary, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// Resize changes the terminal's size.
func (p *PTYSession) Resize(cols, rows int) error {
	b, _ := json.Marshal(Frame{Type: wire.FrameResize, Cols: uint16(cols), Rows: uint16(rows)})
	return p.conn.Write(p.ctx, websocket.MessageText, b)
}

// ExitCode is the shell's exit code once Read has returned io.EOF.
func (p *PTYSession) ExitCode() (int, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exitCode == nil {
		return 0, false
	}
	return *p.exitCode, true
}

// Close ends the session and the shell.
func (p *PTYSession) Close() error { return p.conn.CloseNow() }
