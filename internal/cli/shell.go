package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newShellCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "shell ID",
		Short: "Open an interactive terminal in a sandbox",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fd := int(os.Stdin.Fd())
			cols, rows := 80, 24
			if term.IsTerminal(fd) {
				if w, h, err := term.GetSize(fd); err == nil {
					cols, rows = w, h
				}
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			conn, err := g.client().PTY(ctx, args[0], cols, rows)
			if err != nil {
				return err
			}
			defer conn.CloseNow()
			if term.IsTerminal(fd) {
				old, err := term.MakeRaw(fd)
				if err != nil {
					return fmt.Errorf("set terminal raw: %w", err)
				}
				defer term.Restore(fd, old)
				winch := make(chan os.Signal, 1)
				signal.Notify(winch, syscall.SIGWINCH)
				defer signal.Stop(winch)
				go func() {
					for range winch {
						if w, h, err := term.GetSize(fd); err == nil {
							b, _ := json.Marshal(map[string]any{"type": "resize", "cols": w, "rows": h})
							_ = conn.Write(ctx, websocket.MessageText, b)
						}
					}
				}()
			}
			go func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := os.Stdin.Read(buf)
					if n > 0 && conn.Write(ctx, websocket.MessageBinary, buf[:n]) != nil {
						return
					}
					if err != nil {
						return
					}
				}
			}()
			code := 0
			for {
				typ, data, err := conn.Read(ctx)
				if err != nil {
					return exitCodeOrNil(code)
				}
				if typ == websocket.MessageBinary {
					os.Stdout.Write(data)
					continue
				}
				var f struct {
					Type     string `json:"type"`
					ExitCode *int   `json:"exit_code"`
					Message  string `json:"message"`
				}
				if json.Unmarshal(data, &f) == nil {
					switch f.Type {
					case "exit":
						if f.ExitCode != nil {
							code = *f.ExitCode
						}
					case "error":
						return fmt.Errorf("shell: %s", f.Message)
					}
				}
			}
		},
	}
}
