package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/wire"
)

func newExecCmd(g *globals) *cobra.Command {
	var env []string
	var cwd string
	var timeout time.Duration
	var shell bool
	cmd := &cobra.Command{
		Use:   "exec ID -- CMD [ARG...]",
		Short: "Run a command in a sandbox, streaming its output",
		Long: "Run a command in a sandbox. Output streams as it is produced and warren exits\n" +
			"with the command's exit code. Piped stdin is forwarded. With --json the command\n" +
			"runs to completion and the result is printed as one JSON object.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, argv := args[0], args[1:]
			req := &client.ExecRequest{Argv: argv, Cwd: cwd, TimeoutSeconds: timeout.Seconds()}
			if shell {
				req = &client.ExecRequest{Cmd: strings.Join(argv, " "), Cwd: cwd, TimeoutSeconds: timeout.Seconds()}
			}
			var err error
			if req.Env, err = keyValues("env", env); err != nil {
				return err
			}
			c := g.client()
			if g.json {
				if !term.IsTerminal(int(os.Stdin.Fd())) {
					b, err := io.ReadAll(os.Stdin)
					if err != nil {
						return fmt.Errorf("read stdin: %w", err)
					}
					req.Stdin = string(b)
				}
				res, err := c.Exec(cmd.Context(), id, req)
				if err != nil {
					return err
				}
				g.print(cmd.OutOrStdout(), res, nil)
				return exitCodeOrNil(res.ExitCode)
			}
			return streamExec(cmd.Context(), c, id, req, os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&env, "env", "e", nil, "environment KEY=VALUE (repeatable)")
	f.StringVarP(&cwd, "cwd", "w", "", "working directory inside the sandbox")
	f.DurationVar(&timeout, "timeout", 0, "kill the command after this long (exit code 124)")
	f.BoolVar(&shell, "sh", false, "join the arguments and run them with /bin/sh -c")
	return cmd
}

func exitCodeOrNil(code int) error {
	if code == 0 {
		return nil
	}
	return exitCode(code)
}

// streamExec runs a command over the WebSocket exec, forwarding piped stdin.
func streamExec(ctx context.Context, c *client.Client, id string, req *client.ExecRequest, stdin *os.File, stdout, stderr io.Writer) error {
	sess, err := c.ExecInteractive(ctx, id, req)
	if err != nil {
		return err
	}
	defer sess.Close()
	if stdin != nil && !term.IsTerminal(int(stdin.Fd())) {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := stdin.Read(buf)
				if n > 0 && sess.Stdin(ctx, buf[:n]) != nil {
					return
				}
				if err != nil {
					_ = sess.CloseStdin(ctx)
					return
				}
			}
		}()
	} else {
		_ = sess.CloseStdin(ctx)
	}
	for {
		f, err := sess.Recv(ctx)
		if err != nil {
			return fmt.Errorf("exec stream: %w", err)
		}
		switch f.Type {
		case wire.FrameStdout:
			io.WriteString(stdout, f.Data)
		case wire.FrameStderr:
			io.WriteString(stderr, f.Data)
		case wire.FrameExit:
			if f.TimedOut {
				fmt.Fprintln(stderr, "warren: command timed out")
			}
			if f.ExitCode == nil {
				return exitCode(1)
			}
			return exitCodeOrNil(*f.ExitCode)
		}
	}
}
