package guest

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/creack/pty"
	"github.com/warrenhq/warren/wire"
	"golang.org/x/sys/unix"
)

// handlePTY runs a shell on a pseudo-terminal. Binary frames carry terminal
// bytes both ways; text frames carry JSON control messages (resize from the
// caller, exit from the agent).
func (a *Agent) handlePTY(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	cols, rows := parseSize(q.Get("cols"), 80), parseSize(q.Get("rows"), 24)
	var env map[string]string
	if e := q.Get("env"); e != "" {
		if err := json.Unmarshal([]byte(e), &env); err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "env must be a JSON object")
			return
		}
	}
	argv := q["argv"]
	if len(argv) == 0 {
		argv = []string{defaultShell()}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["TERM"]; !ok {
		env["TERM"] = "xterm-256color"
	}
	cmd.Env = environ(env)
	cmd.Dir = q.Get("cwd")
	if cmd.Dir == "" {
		cmd.Dir = "/root"
		if unix.Access(cmd.Dir, unix.X_OK) != nil {
			cmd.Dir = "/"
		}
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()

	var tty *os.File
	err = children.start(cmd, func() (err error) {
		tty, err = pty.StartWithSize(cmd, &pty.Winsize{Cols: cols, Rows: rows})
		return err
	})
	if err != nil {
		_ = writeControl(ctx, conn, wire.Frame{Type: "error", Message: "start shell: " + err.Error()})
		conn.Close(websocket.StatusInternalError, "start shell")
		return
	}
	defer tty.Close()

	go func() { // caller -> terminal
		defer cancel()
		for {
			typ, data, err := conn.Read(ctx)
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				if _, err := tty.Write(data); err != nil {
					return
				}
				continue
			}
			var f wire.Frame
			if json.Unmarshal(data, &f) != nil {
				continue
			}
			switch f.Type {
			case "resize":
				if f.Cols > 0 && f.Rows > 0 {
					_ = pty.Setsize(tty, &pty.Winsize{Cols: f.Cols, Rows: f.Rows})
				}
			case "stdin":
				_, _ = tty.Write([]byte(f.Data))
			case "kill":
				_ = cmd.Process.Signal(syscall.SIGKILL)
			}
		}
	}()

	outDone := make(chan struct{})
	go func() { // terminal -> caller
		defer close(outDone)
		buf := make([]byte, 32<<10)
		for {
			n, err := tty.Read(buf)
			if n > 0 {
				if conn.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()

	waitDone := make(chan error, 1)
	go func() { waitDone <- children.wait(cmd) }()
	select {
	case err := <-waitDone:
		// The terminal reads EIO once the shell and its children are gone;
		// don't wait forever on a background child holding it open.
		select {
		case <-outDone:
		case <-time.After(lingerForOutput):
		}
		code, _ := exitCode(err)
		_ = writeControl(ctx, conn, wire.Frame{Type: "exit", ExitCode: &code})
		conn.Close(websocket.StatusNormalClosure, "")
	case <-ctx.Done():
		// The caller left: hang up the terminal like a closed ssh session.
		_ = cmd.Process.Signal(syscall.SIGHUP)
		select {
		case <-waitDone:
		case <-time.After(2 * time.Second):
			_ = cmd.Process.Kill()
			<-waitDone
		}
	}
}

func writeControl(ctx context.Context, conn *websocket.Conn, f wire.Frame) error {
	b, _ := json.Marshal(f)
	return conn.Write(ctx, websocket.MessageText, b)
}

func parseSize(s string, def uint16) uint16 {
	v, err := strconv.ParseUint(s, 10, 16)
	if err != nil || v == 0 {
		return def
	}
	return uint16(v)
}

func defaultShell() string {
	for _, sh := range []string{"/bin/bash", "/bin/sh"} {
		if _, err := os.Stat(sh); err == nil {
			return sh
		}
	}
	return "/bin/sh"
}
