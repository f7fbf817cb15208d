package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

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
			pty, err := g.client().PTY(ctx, args[0], cols, rows)
			if err != nil {
				return err
			}
			defer pty.Close()
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
							_ = pty.Resize(w, h)
						}
					}
				}()
			}
			go func() { _, _ = io.Copy(pty, os.Stdin) }()
			if _, err := io.Copy(os.Stdout, pty); err != nil && ctx.Err() == nil {
				return fmt.Errorf("shell: %w", err)
			}
			code, _ := pty.ExitCode()
			return exitCodeOrNil(code)
		},
	}
}
