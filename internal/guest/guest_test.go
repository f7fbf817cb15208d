package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/warrenhq/warren/wire"
)

// startAgent runs a real agent on the host, dialing a real client's socket.
func startAgent(t testing.TB) *Client {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, SocketName)
	token := NewToken()
	c, err := Listen(sock, Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{Socket: sock, Token: token, Logf: t.Logf}
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); c.Close(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := c.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func run(t *testing.T, c *Client, req wire.ExecRequest) *wire.ExecResult {
	t.Helper()
	res, err := c.Exec(context.Background(), &req)
	if err != nil {
		t.Fatalf("exec %+v: %v", req, err)
	}
	return res
}

func TestExec(t *testing.T) {
	c := startAgent(t)
	cwd := t.TempDir()
	cases := []struct {
		name   string
		req    wire.ExecRequest
		code   int
		stdout string
		stderr string
	}{
		{"argv", wire.ExecRequest{Argv: []string{"echo", "hi"}}, 0, "hi\n", ""},
		{"shell", wire.ExecRequest{Cmd: "echo out; echo err >&2; exit 3"}, 3, "out\n", "err\n"},
		{"stdin", wire.ExecRequest{Cmd: "tr a-z A-Z", Stdin: "shout\n"}, 0, "SHOUT\n", ""},
		{"env", wire.ExecRequest{Cmd: `echo "$GREETING $HOME"`, Env: map[string]string{"GREETING": "hello"}}, 0, "hello /root\n", ""},
		{"cwd", wire.ExecRequest{Cmd: "pwd", Cwd: cwd}, 0, cwd + "\n", ""},
		{"signal", wire.ExecRequest{Cmd: "kill -9 $$"}, 137, "", ""},
		{"missing binary", wire.ExecRequest{Argv: []string{"/no/such/binary"}}, 127, "", "fork/exec /no/such/binary: no such file or directory\n"},
		{"timeout", wire.ExecRequest{Cmd: "echo before; sleep 5; echo after", TimeoutSeconds: 0.3}, 124, "before\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, c, tc.req)
			if res.ExitCode != tc.code || res.Stdout != tc.stdout || res.Stderr != tc.stderr {
				t.Fatalf("got code=%d stdout=%q stderr=%q; want code=%d stdout=%q stderr=%q",
					res.ExitCode, res.Stdout, res.Stderr, tc.code, tc.stdout, tc.stderr)
			}
			if tc.name == "timeout" && (!res.TimedOut || res.DurationMs > 3000) {
				t.Fatalf("timeout not enforced: %+v", res)
			}
		})
	}
}

func TestExecRejectsBadRequest(t *testing.T) {
	c := startAgent(t)
	_, err := c.Exec(context.Background(), &wire.ExecRequest{})
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Status != 400 {
		t.Fatalf("empty request: got %v, want a 400", err)
	}
}

// TestExecStreamOrder checks output arrives as produced, in order, and that
// stdin sent mid-run reaches the command.
func TestExecStreamOrder(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	conn, err := c.ExecStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	req := wire.ExecRequest{Cmd: "for i in 1 2 3; do echo line$i; sleep 0.2; done; read x; echo got:$x; echo bye >&2"}
	if err := wsjson.Write(ctx, conn, req); err != nil {
		t.Fatal(err)
	}
	var stdout []string
	var arrivals []time.Time
	for {
		var f wire.Frame
		if err := wsjson.Read(ctx, conn, &f); err != nil {
			t.Fatalf("read frame: %v (so far %q)", err, stdout)
		}
		switch f.Type {
		case "stdout":
			stdout = append(stdout, f.Data)
			arrivals = append(arrivals, time.Now())
			if f.Data == "line3\n" {
				if err := wsjson.Write(ctx, conn, wire.Frame{Type: "stdin", Data: "ping\n"}); err != nil {
					t.Fatal(err)
				}
			}
		case "stderr":
			if f.Data != "bye\n" {
				t.Fatalf("stderr %q", f.Data)
			}
		case "exit":
			want := []string{"line1\n", "line2\n", "line3\n", "got:ping\n"}
			if strings.Join(stdout, "") != strings.Join(want, "") {
				t.Fatalf("stdout frames %q, want %q", stdout, want)
			}
			// Streamed, not buffered: line1 came well before line3.
			if arrivals[2].Sub(arrivals[0]) < 300*time.Millisecond {
				t.Fatalf("output was not streamed: frames arrived %v apart", arrivals[2].Sub(arrivals[0]))
			}
			if *f.ExitCode != 0 {
				t.Fatalf("exit %d", *f.ExitCode)
			}
			return
		}
	}
}

func TestExecStreamKill(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	conn, err := c.ExecStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	_ = wsjson.Write(ctx, conn, wire.ExecRequest{Cmd: "echo started; sleep 30"})
	for {
		var f wire.Frame
		if err := wsjson.Read(ctx, conn, &f); err != nil {
			t.Fatal(err)
		}
		if f.Type == "stdout" {
			_ = wsjson.Write(ctx, conn, wire.Frame{Type: "kill"})
		}
		if f.Type == "exit" {
			if *f.ExitCode != 137 {
				t.Fatalf("killed command exit %d, want 137", *f.ExitCode)
			}
			return
		}
	}
}

func TestUTF8NotSplitAcrossFrames(t *testing.T) {
	p := []byte("ab\xe2\x82") // first two bytes of the euro sign
	if got := utf8Boundary(p); got != 2 {
		t.Fatalf("boundary %d, want 2", got)
	}
	if got := utf8Boundary([]byte("ab\xe2\x82\xac")); got != 5 {
		t.Fatalf("boundary of complete text %d, want 5", got)
	}
}

func TestFilesRoundTrip(t *testing.T) {
	c := startAgent(t)
	ctx := context.Background()
	dir := t.TempDir()
	data := make([]byte, 10<<20)
	_, _ = rand.Read(data)
	path := filepath.Join(dir, "deep/er/blob.bin")
	fi, err := c.WriteFile(ctx, path, "0600", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size != int64(len(data)) || fi.Mode != "0600" || fi.Type != "file" {
		t.Fatalf("write answered %+v", fi)
	}
	rc, n, err := c.ReadFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || n != int64(len(data)) || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (content-length %d), equal=%v, err=%v", len(got), n, bytes.Equal(got, data), err)
	}
	if _, err := c.Mkdir(ctx, filepath.Join(dir, "sub/dir")); err != nil {
		t.Fatal(err)
	}
	list, err := c.List(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	entries := list.Entries
	if len(entries) != 2 || entries[0].Name != "deep" || entries[1].Name != "sub" || entries[0].Type != "dir" {
		t.Fatalf("list %+v", entries)
	}
	if err := c.Remove(ctx, filepath.Join(dir, "deep"), false); !isStatus(err, 409) {
		t.Fatalf("removing a non-empty dir without recursive: %v, want 409", err)
	}
	if err := c.Remove(ctx, filepath.Join(dir, "deep"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, path); !isStatus(err, 404) {
		t.Fatalf("stat after remove: %v, want 404", err)
	}
	if _, _, err := c.ReadFile(ctx, "relative/path"); !isStatus(err, 400) {
		t.Fatalf("relative path: %v, want 400", err)
	}
	if _, _, err := c.ReadFile(ctx, dir); !isStatus(err, 400) {
		t.Fatalf("reading a directory: %v, want 400", err)
	}
}

func isStatus(err error, status int) bool {
	var ae *AgentError
	return errors.As(err, &ae) && ae.Status == status
}

func TestPTYEchoAndResize(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Fatal("no /bin/sh on this host")
	}
	c := startAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.PTY(ctx, url.Values{"cols": {"100"}, "rows": {"30"}, "argv": {"/bin/sh"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	var screen bytes.Buffer
	expect := func(want string) {
		t.Helper()
		for !strings.Contains(screen.String(), want) {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				t.Fatalf("waiting for %q: %v; screen so far %q", want, err, screen.String())
			}
			if typ == websocket.MessageBinary {
				screen.Write(data)
			}
		}
	}
	send := func(s string) {
		if err := conn.Write(ctx, websocket.MessageBinary, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	send("stty size; echo mark-$((6*7))\n")
	expect("30 100")
	expect("mark-42")
	b, _ := json.Marshal(wire.Frame{Type: "resize", Cols: 132, Rows: 43})
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
	send("stty size\n")
	expect("43 132")
	send("exit 5\n")
	for {
		typ, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("no exit message: %v", err)
		}
		if typ == websocket.MessageText {
			var f wire.Frame
			_ = json.Unmarshal(data, &f)
			if f.Type == "exit" {
				if *f.ExitCode != 5 {
					t.Fatalf("shell exit %d, want 5", *f.ExitCode)
				}
				return
			}
		}
	}
}

// TestReconnect checks the agent dials again after its connection drops,
// as it must after a host restart or a checkpoint.
func TestReconnect(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, SocketName)
	token := NewToken()
	c1, err := Listen(sock, Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go (&Agent{Socket: sock, Token: token}).Run(ctx)
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := c1.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
	c1.Close()
	os.Remove(sock)
	c2, err := Listen(sock, Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.WaitReady(wctx); err != nil {
		t.Fatalf("agent did not reconnect: %v", err)
	}
	if res := run(t, c2, wire.ExecRequest{Argv: []string{"true"}}); res.ExitCode != 0 {
		t.Fatalf("exec after reconnect: %+v", res)
	}
}
