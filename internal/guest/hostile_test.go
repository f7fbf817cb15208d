package guest

// The hostile-guest suite: the host end of the agent transport against
// everything root inside a sandbox could send it — impostors on the
// socket, connect storms, and a compromised agent answering garbage,
// endless or huge bodies, malformed and missing fields. The host must
// stay up, keep serving the real agent, and stay bounded in memory and
// goroutines. No sandbox or root is needed: real sockets, real yamux,
// real HTTP.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"
	"github.com/warrenhq/warren/wire"
)

// listen opens a host end with a fresh token.
func listen(t *testing.T, token string) (*Client, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), SocketName)
	c, err := Listen(sock, Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, sock
}

// realAgent runs the real agent against sock until the test ends.
func realAgent(t *testing.T, c *Client, sock, token string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = (&Agent{Socket: sock, Token: token, Logf: t.Logf}).Run(ctx) }()
	t.Cleanup(func() { cancel(); c.Close(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := c.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}
}

// mustServe checks the real agent still answers through c.
func mustServe(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Exec(ctx, &wire.ExecRequest{Cmd: "echo still-here"})
	if err != nil || res.Stdout != "still-here\n" {
		t.Fatalf("the real agent no longer answers: %v %+v", err, res)
	}
}

// dial connects to the socket as anything in the sandbox could.
func dial(t *testing.T, sock string) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// closedByHost reports whether the host hangs up on conn within d.
func closedByHost(conn net.Conn, d time.Duration) bool {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func waitRefused(t *testing.T, c *Client, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Refused() < n {
		if time.Now().After(deadline) {
			t.Fatalf("refused %d connections, want at least %d", c.Refused(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSecondConnectionRefused is the crash this suite began with: a
// second connection while the agent was up closed a closed channel and
// ended warren, and the newest connection took the agent's place.
func TestSecondConnectionRefused(t *testing.T) {
	for _, mode := range []string{"token", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			token := ""
			if mode == "token" {
				token = NewToken()
			}
			c, sock := listen(t, token)
			realAgent(t, c, sock, token)
			// An impostor that speaks the protocol, greeting and all.
			for i := 0; i < 3; i++ {
				conn := dial(t, sock)
				if token != "" {
					conn.Write(Greeting(token))
				}
				s, err := yamux.Server(conn, sessionConfig())
				if err != nil {
					t.Fatal(err)
				}
				go http.Serve(s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					t.Errorf("the host sent %s %s to an impostor", r.Method, r.URL.Path)
				}))
				mustServe(t, c)
				if !closedByHost(conn, 5*time.Second) {
					t.Fatal("the host kept the second connection open")
				}
				s.Close()
			}
			waitRefused(t, c, 3)
			mustServe(t, c)
		})
	}
}

// TestEarlyAndWrongGreetings: connections that do not greet with the
// token are refused whether or not the agent is connected yet, and the
// agent connects afterwards as usual.
func TestEarlyAndWrongGreetings(t *testing.T) {
	defer shorten(&greetingWait, 300*time.Millisecond)()
	token := NewToken()
	c, sock := listen(t, token)
	attacks := map[string][]byte{
		"wrong token":         Greeting(NewToken()),
		"empty token":         []byte(GreetingPrefix + "\n"),
		"no prefix":           []byte(token + "\n"),
		"yamux at once":       {0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
		"garbage":             bytes.Repeat([]byte{0xff}, 64),
		"endless line":        bytes.Repeat([]byte("A"), 1<<20),
		"prefix of the token": []byte(GreetingPrefix + token[:10] + "\n"),
		"token and more":      []byte(GreetingPrefix + token + "x\n"),
		"silence":             nil,
	}
	n := int64(0)
	for name, b := range attacks {
		conn := dial(t, sock)
		go conn.Write(b)
		if !closedByHost(conn, 5*time.Second) {
			t.Fatalf("%s: the host kept the connection", name)
		}
		conn.Close()
		n++
	}
	waitRefused(t, c, n)
	if c.Connected() {
		t.Fatal("an impostor became the agent")
	}
	realAgent(t, c, sock, token)
	mustServe(t, c)
}

func shorten(v *time.Duration, d time.Duration) func() {
	old := *v
	*v = d
	return func() { *v = old }
}

// TestConnectStorm: hundreds of connections at once, silent, garbage or
// closed at once, cost a bounded number of goroutines and leave the agent
// served.
func TestConnectStorm(t *testing.T) {
	defer shorten(&greetingWait, 200*time.Millisecond)()
	token := NewToken()
	c, sock := listen(t, token)
	realAgent(t, c, sock, token)
	base := runtime.NumGoroutine()
	var peak atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := int64(runtime.NumGoroutine()); n > peak.Load() {
				peak.Store(n)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conn, err := net.Dial("unix", sock)
			if err != nil {
				return
			}
			defer conn.Close()
			switch i % 3 {
			case 0: // hang up at once
			case 1:
				conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
				closedByHost(conn, 2*time.Second)
			case 2: // silent until refused
				closedByHost(conn, 2*time.Second)
			}
		}(i)
	}
	wg.Wait()
	close(stop)
	mustServe(t, c)
	// The dialers themselves are up to 300 goroutines; the host may add
	// only its few greeters on top.
	if extra := peak.Load() - int64(base); extra > 300+maxGreeting+20 {
		t.Fatalf("goroutines grew by %d during the storm", extra)
	}
	// Nothing per connection is left (300 connections; a leak shows).
	eventually(t, func() bool { return runtime.NumGoroutine() <= base+30 }, "goroutines back to normal")
}

func eventually(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// impostor connects to sock with the right greeting and speaks the
// transport: a compromised agent, or root in the sandbox that read the
// token.
func impostor(t *testing.T, sock, token string) *yamux.Session {
	t.Helper()
	conn := dial(t, sock)
	conn.Write(Greeting(token))
	s, err := yamux.Server(conn, sessionConfig())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hostileAgent is a compromised agent: it has the token and speaks the
// transport, but answers with whatever handler says.
func hostileAgent(t *testing.T, handler http.Handler) *Client {
	t.Helper()
	token := NewToken()
	c, sock := listen(t, token)
	s := impostor(t, sock, token)
	srv := &http.Server{Handler: handler}
	go srv.Serve(s)
	t.Cleanup(func() { srv.Close(); s.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// Cases that read next to nothing are allowed 8 MiB: what the runtime
// itself allocates meanwhile (yamux, HTTP, the sampler). Small answers are
// allowed 24 MiB: the answer's limit, what yamux buffers
// for one stream (its 4 MiB window, in a buffer that grows by doubling)
// and the decoder's own buffer.

// heapPeak runs f and reports how far the heap grew while it ran. The
// collector runs often meanwhile, so what it reports is close to what f
// holds rather than garbage not yet collected.
func heapPeak(f func()) uint64 {
	defer debug.SetGCPercent(debug.SetGCPercent(5))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-done
	if peak.Load() < base {
		return 0
	}
	return peak.Load() - base
}

// endless writes n bytes of one repeated frame.
func endless(w http.ResponseWriter, frame []byte, n int) {
	w.Header().Set("Content-Type", NDJSON)
	for sent := 0; sent < n; sent += len(frame) {
		if _, err := w.Write(frame); err != nil {
			return
		}
	}
}

func TestHostileAgentAnswers(t *testing.T) {
	ctx := context.Background()
	chunk, _ := json.Marshal(wire.Frame{Type: "stdout", Data: strings.Repeat("x", 32<<10)})
	chunk = append(chunk, '\n')
	cases := []struct {
		name    string
		handler http.HandlerFunc
		call    func(c *Client) error
		wantErr string
		maxHeap uint64
	}{
		{"endless stdout", func(w http.ResponseWriter, r *http.Request) {
			endless(w, chunk, 256<<20) // far more than the cap, and no exit frame
		}, func(c *Client) error {
			_, err := c.Exec(ctx, &wire.ExecRequest{Cmd: "x"})
			return err
		}, "before the command's exit", 2*MaxCapturedOutput + 16<<20},
		{"huge output then exit", func(w http.ResponseWriter, r *http.Request) {
			endless(w, chunk, 64<<20)
			w.Write([]byte(`{"type":"exit","exit_code":0}` + "\n"))
		}, func(c *Client) error {
			res, err := c.Exec(ctx, &wire.ExecRequest{Cmd: "x"})
			if err == nil && (!res.Truncated || len(res.Stdout) != MaxCapturedOutput) {
				return fmt.Errorf("kept %d bytes, truncated=%v", len(res.Stdout), res.Truncated)
			}
			return err
		}, "", 2*MaxCapturedOutput + 16<<20},
		// The heap measured is this whole process's, the fake agent's
		// writes in flight (a 4 MiB stream window) included; under the
		// race detector it reached 16 MiB once. The point is that 1 GiB
		// sent is not 1 GiB held.
		{"one endless line", func(w http.ResponseWriter, r *http.Request) {
			endless(w, bytes.Repeat([]byte("a"), 64<<10), 1<<30)
		}, func(c *Client) error {
			_, err := c.Exec(ctx, &wire.ExecRequest{Cmd: "x"})
			return err
		}, "longer than", 32 << 20},
		{"exit without a code", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", NDJSON)
			w.Write([]byte(`{"type":"exit"}` + "\n"))
		}, func(c *Client) error {
			_, err := c.Exec(ctx, &wire.ExecRequest{Cmd: "x"})
			return err
		}, "without exit_code", 8 << 20},
		{"malformed frames", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", NDJSON)
			w.Write([]byte("{\"type\":\"stdout\",\"data\":\n"))
		}, func(c *Client) error {
			_, err := c.Exec(ctx, &wire.ExecRequest{Cmd: "x"})
			return err
		}, "malformed frame", 8 << 20},
		{"wrong types", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", NDJSON)
			w.Write([]byte(`{"type":["exit"],"exit_code":"zero"}` + "\n"))
		}, func(c *Client) error {
			_, err := c.Exec(ctx, &wire.ExecRequest{Cmd: "x"})
			return err
		}, "malformed frame", 8 << 20},
		{"endless legacy JSON", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"exit_code":0,"stdout":"`))
			endless(w, bytes.Repeat([]byte("y"), 64<<10), 256<<20)
		}, func(c *Client) error {
			_, err := c.Exec(ctx, &wire.ExecRequest{Cmd: "x"})
			return err
		}, "larger than", 128 << 20},
		{"a GiB of file info", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"name":"`))
			endless(w, bytes.Repeat([]byte("n"), 64<<10), 1<<30)
		}, func(c *Client) error {
			_, err := c.Stat(ctx, "/x")
			return err
		}, "larger than", 24 << 20},
		{"a GiB of listing", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"entries":[`))
			endless(w, []byte(`{"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},`), 1<<30)
		}, func(c *Client) error {
			_, err := c.List(ctx, "/")
			return err
		}, "larger than", 4 * MaxListAnswer},
		{"a GiB error message", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusTeapot)
			w.Write([]byte(`{"error":{"code":"x","message":"`))
			endless(w, bytes.Repeat([]byte("e"), 64<<10), 1<<30)
		}, func(c *Client) error {
			_, err := c.Mkdir(ctx, "/x")
			var ae *AgentError
			if !errors.As(err, &ae) || len(ae.Message) > 1<<20 {
				return fmt.Errorf("got %v", err)
			}
			return errors.New("refused")
		}, "refused", 24 << 20},
		{"huge headers", func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < 2000; i++ {
				w.Header().Add("X-Junk", strings.Repeat("h", 1000))
			}
			w.WriteHeader(http.StatusOK)
		}, func(c *Client) error {
			_, err := c.Stat(ctx, "/x")
			return err
		}, "header", 24 << 20},
		{"nil and odd fields", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"state":"exited","exit_code":null,"name":null}`))
		}, func(c *Client) error {
			cmd, err := c.StartCommand(ctx, &wire.CommandRequest{Name: "a", Cmd: "b"})
			if err == nil && cmd.ExitCode != nil {
				return errors.New("made up an exit code")
			}
			return err
		}, "", 8 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := hostileAgent(t, tc.handler)
			var err error
			grew := heapPeak(func() { err = tc.call(c) })
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
			if grew > tc.maxHeap {
				t.Fatalf("the host's heap grew by %d MiB (at most %d MiB allowed)", grew>>20, tc.maxHeap>>20)
			}
		})
	}
}

// TestHostileAgentStreams: a WebSocket message larger than MaxFrame ends
// the stream with an error, not an allocation of its size.
func TestHostileAgentStreams(t *testing.T) {
	c := hostileAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		w2, err := conn.Writer(r.Context(), websocket.MessageText)
		if err != nil {
			return
		}
		piece := bytes.Repeat([]byte("z"), 64<<10)
		for i := 0; i < 1024; i++ {
			if _, err := w2.Write(piece); err != nil {
				return
			}
		}
		w2.Close()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var readErr error
	grew := heapPeak(func() {
		conn, err := c.ExecStream(ctx)
		if err != nil {
			readErr = err
			return
		}
		defer conn.CloseNow()
		_, _, readErr = conn.Read(ctx)
	})
	if readErr == nil {
		t.Fatal("a 64 MiB message was read whole")
	}
	if grew > 16<<20 {
		t.Fatalf("heap grew by %d MiB", grew>>20)
	}
}

// TestAgentOpensStream: the host opens every stream; an agent that opens
// one toward the host loses its connection.
func TestAgentOpensStream(t *testing.T) {
	token := NewToken()
	c, sock := listen(t, token)
	s := impostor(t, sock, token)
	defer s.Close()
	eventually(t, c.Connected, "connected")
	st, err := s.Open()
	if err == nil {
		st.Write(bytes.Repeat([]byte("s"), 1<<20))
	}
	eventually(t, func() bool { return s.IsClosed() }, "dropped")
}

// TestConnectDisconnectStorm: a compromised agent that connects and drops
// over and over gets no more than one liveness check at a time.
func TestConnectDisconnectStorm(t *testing.T) {
	token := NewToken()
	sock := filepath.Join(t.TempDir(), SocketName)
	var disconnects atomic.Int64
	c, err := Listen(sock, Options{Token: token, OnDisconnect: func() { disconnects.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := int64(1); i <= 200; i++ {
		s := impostor(t, sock, token)
		eventually(t, c.Connected, "connected")
		s.Close()
		eventually(t, func() bool { return disconnects.Load() == i }, "the disconnect reported")
	}
	realAgent(t, c, sock, token)
	mustServe(t, c)
}
