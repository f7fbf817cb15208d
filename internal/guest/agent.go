package guest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"
)

// Agent serves exec, files and PTY inside a sandbox.
type Agent struct {
	// Socket is the host's Unix socket the agent dials.
	Socket string
	// Token is sent in the greeting on every connection; empty sends none.
	Token string
	Logf  func(format string, args ...any)
	// OnConnect, if set, runs after the first connection is made.
	OnConnect func()

	bgOnce     sync.Once
	background *background
	procsOnce  sync.Once
	procTable  *procTable
	watchOnce  sync.Once
	watches    *watches
	memory     *memoryGuard
}

// Run dials the host and serves its requests until ctx ends, dialing again
// whenever the connection drops (a host restart, a checkpoint).
func (a *Agent) Run(ctx context.Context) error {
	if a.Logf == nil {
		a.Logf = log.Printf
	}
	if a.memory == nil {
		a.memory = newMemoryGuard()
	}
	go a.memory.run(ctx)
	handler := a.handler()
	backoff := time.Millisecond
	for ctx.Err() == nil {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", a.Socket)
		if err != nil {
			// The host may be restarting; retry quickly at first so a fresh
			// sandbox is ready as soon as the host listens.
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 250*time.Millisecond)
			continue
		}
		backoff = time.Millisecond
		if a.Token != "" {
			_ = conn.SetWriteDeadline(time.Now().Add(GreetingTimeout))
			_, err := conn.Write(Greeting(a.Token))
			_ = conn.SetWriteDeadline(time.Time{})
			if err != nil {
				conn.Close()
				continue
			}
		}
		if a.OnConnect != nil {
			a.OnConnect()
			a.OnConnect = nil
		}
		// Only the host pings: every wakeup of an idle sandbox costs its
		// kernel a round of work, and a host that goes away closes the
		// socket, which the agent sees without pinging.
		cfg := sessionConfig()
		cfg.EnableKeepAlive = false
		session, err := yamux.Server(conn, cfg)
		if err != nil {
			conn.Close()
			continue
		}
		srv := &http.Server{Handler: handler, ErrorLog: log.New(devNull{}, "", 0)}
		go func() {
			select {
			case <-ctx.Done():
			case <-session.CloseChan():
			}
			session.Close()
		}()
		_ = srv.Serve(session)
		session.Close()
	}
	return ctx.Err()
}

type devNull struct{}

func (devNull) Write(p []byte) (int, error) { return len(p), nil }

func sessionConfig() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = devNull{}
	// The host's ping finds a hung agent; the process watch finds a dead
	// sandbox sooner, so the ping can be rare.
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = 30 * time.Second
	cfg.ConnectionWriteTimeout = 30 * time.Second
	// Large windows keep big file transfers from stalling on acks.
	cfg.MaxStreamWindowSize = 4 << 20
	return cfg
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "pid": os.Getpid()})
	})
	mux.HandleFunc("POST /exec", a.handleExec)
	mux.HandleFunc("GET /exec/stream", a.handleExecStream)
	mux.HandleFunc("GET /files", a.handleReadFile)
	mux.HandleFunc("PUT /files", pathHandler(writeFile))
	mux.HandleFunc("DELETE /files", pathHandler(remove))
	mux.HandleFunc("GET /files/list", pathHandler(listDir))
	mux.HandleFunc("GET /files/stat", pathHandler(func(p string, _ *http.Request) (any, error) { return statPath(p) }))
	mux.HandleFunc("POST /files/mkdir", pathHandler(mkdir))
	mux.HandleFunc("GET /files/archive", a.handleReadArchive)
	mux.HandleFunc("PUT /files/archive", pathHandler(writeArchive))
	mux.HandleFunc("GET /pty", a.handlePTY)
	mux.HandleFunc("POST /commands", a.handleStartCommand)
	mux.HandleFunc("GET /commands", a.handleListCommands)
	mux.HandleFunc("GET /commands/{name}/logs", a.handleCommandLogs)
	mux.HandleFunc("POST /procs", a.handleStartProc)
	mux.HandleFunc("GET /procs", a.handleListProcs)
	mux.HandleFunc("GET /procs/{pid}/events", a.handleConnectProc)
	mux.HandleFunc("POST /procs/{pid}/input", a.procHandler(procInput))
	mux.HandleFunc("POST /procs/{pid}/close-stdin", a.procHandler(procCloseStdin))
	mux.HandleFunc("POST /procs/{pid}/signal", a.procHandler(procSignal))
	mux.HandleFunc("POST /procs/{pid}/resize", a.procHandler(procResize))
	mux.HandleFunc("POST /files/move", pathHandler(move))
	mux.HandleFunc("GET /files/watch", a.handleWatch)
	mux.HandleFunc("POST /watchers", a.handleCreateWatcher)
	mux.HandleFunc("GET /watchers/{id}/events", a.handleWatcherEvents)
	mux.HandleFunc("DELETE /watchers/{id}", a.handleRemoveWatcher)
	mux.HandleFunc("POST /ready", a.handleReady)
	mux.HandleFunc("GET /memory", a.handleMemory)
	mux.HandleFunc("POST /memory/pressure", a.handlePressure)
	return mux
}

// RunInit is the sandbox's PID 1: the agent itself, which also reaps
// the orphans every PID 1 inherits (see reap.go). One process, one Go
// runtime: a sandbox boots faster, and idles and checkpoints smaller.
//
// The agent token arrives in PID 1's environment. It makes itself
// non-dumpable first, so no other process in the sandbox can read that
// environment or its memory, and once it reaches the host it stops
// writing to the runtime's log: nothing in the sandbox then holds a file
// of the host's.
func RunInit() int {
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	// One P: a request then never hands work between threads, and each
	// such handoff is a host futex round through gVisor's kernel (a
	// request that starts no process: 2.5 ms with two, 1.9 with one).
	// The agent's work waits on I/O; it needs no parallelism.
	goruntime.GOMAXPROCS(1)
	token := os.Getenv(TokenEnv)
	_ = os.Unsetenv(TokenEnv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	go children.run(ctx)
	a := &Agent{Socket: SocketPath(), Token: token, OnConnect: DetachStdio}
	if err := a.Run(ctx); err != nil && ctx.Err() == nil {
		log.Printf("warren agent: %v", err)
		return 1
	}
	return 0
}

// Main runs the agent's entry points: "agent-init" (PID 1 of a sandbox)
// and "agent" (beside its sandbox, for the process runtime). It answers
// ok false for any other command.
func Main(args []string) (code int, ok bool) {
	if len(args) < 2 {
		return 0, false
	}
	switch args[1] {
	case "agent-init":
		return RunInit(), true
	case "agent":
		return RunAgent(args[2:]), true
	case "nproc-exec":
		return RunNprocExec(args[2:]), true
	}
	return 0, false
}

// RunAgent serves the host until told to stop (the process runtime runs
// the agent this way, not as PID 1).
func RunAgent(args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	socket := fs.String("socket", SocketPath(), "host socket to dial")
	_ = fs.String("sandbox-id", "", "sandbox id (marks the process on hosts without isolation)")
	tokenFD := fs.Int("token-fd", -1, "descriptor to read the agent token from")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	token := os.Getenv(TokenEnv)
	_ = os.Unsetenv(TokenEnv)
	if *tokenFD >= 0 {
		t, err := ReadToken(*tokenFD)
		if err != nil {
			fmt.Fprintln(os.Stderr, "warren agent:", err)
			return 1
		}
		token = t
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a := &Agent{Socket: *socket, Token: token, OnConnect: DetachStdio}
	if err := a.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "warren agent:", err)
		return 1
	}
	return 0
}

// ReadToken reads the agent token from the pipe init handed over and
// makes the agent non-dumpable, so the sandbox's other processes cannot
// read it from the agent's memory.
func ReadToken(fd int) (string, error) {
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	f := os.NewFile(uintptr(fd), "agent-token")
	if f == nil {
		return "", errors.New("no token descriptor")
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxGreeting))
	if err != nil {
		return "", fmt.Errorf("read agent token: %w", err)
	}
	return string(b), nil
}

// DetachStdio points stdout and stderr at /dev/null. They are the
// runtime's log file on the host: a process that held them could fill
// the host's disk. The agent calls it once it has reached the host.
func DetachStdio() {
	null, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer null.Close()
	_ = unix.Dup2(int(null.Fd()), 1)
	_ = unix.Dup2(int(null.Fd()), 2)
}

// SocketPath is the host socket's path as seen inside the sandbox.
func SocketPath() string { return filepath.Join(RunDir, SocketName) }

var errBadRequest = errors.New("bad request")
