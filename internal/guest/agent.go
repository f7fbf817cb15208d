package guest

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// Agent serves exec, files and PTY inside a sandbox.
type Agent struct {
	// Socket is the host's Unix socket the agent dials.
	Socket string
	Logf   func(format string, args ...any)

	bgOnce     sync.Once
	background *background
}

// Run dials the host and serves its requests until ctx ends, dialing again
// whenever the connection drops (a host restart, a checkpoint).
func (a *Agent) Run(ctx context.Context) error {
	if a.Logf == nil {
		a.Logf = log.Printf
	}
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
		session, err := yamux.Server(conn, sessionConfig())
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
	cfg.EnableKeepAlive = true
	cfg.KeepAliveInterval = 10 * time.Second
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
	mux.HandleFunc("GET /pty", a.handlePTY)
	mux.HandleFunc("POST /commands", a.handleStartCommand)
	mux.HandleFunc("GET /commands", a.handleListCommands)
	mux.HandleFunc("GET /commands/{name}/logs", a.handleCommandLogs)
	mux.HandleFunc("POST /ready", a.handleReady)
	return mux
}

// RunInit is the sandbox's PID 1. It starts the agent as its child and reaps
// every orphan, so the agent's own os/exec waits never race a reaper.
func RunInit(args []string) int {
	self, err := os.Executable()
	if err != nil {
		self = AgentPath
	}
	cmd := exec.Command(self, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		log.Printf("warren init: start agent: %v", err)
		return 1
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			_ = cmd.Process.Signal(sig)
			continue
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
			if pid == cmd.Process.Pid {
				if ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ws.ExitStatus()
			}
		}
	}
	return 0
}

// SocketPath is the host socket's path as seen inside the sandbox.
func SocketPath() string { return filepath.Join(RunDir, SocketName) }

var errBadRequest = errors.New("bad request")
