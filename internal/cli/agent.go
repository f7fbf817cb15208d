package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/warrenhq/warren/internal/guest"
)

// runAgentInit is PID 1 inside a sandbox.
func runAgentInit() int {
	return guest.RunInit([]string{"agent"})
}

// runAgent serves the host until told to stop.
func runAgent(args []string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	socket := fs.String("socket", guest.SocketPath(), "host socket to dial")
	_ = fs.String("sandbox-id", "", "sandbox id (marks the process on hosts without isolation)")
	tokenFD := fs.Int("token-fd", -1, "descriptor to read the agent token from")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	token := os.Getenv(guest.TokenEnv)
	_ = os.Unsetenv(guest.TokenEnv)
	if *tokenFD >= 0 {
		t, err := guest.ReadToken(*tokenFD)
		if err != nil {
			fmt.Fprintln(os.Stderr, "warren agent:", err)
			return 1
		}
		token = t
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a := &guest.Agent{Socket: *socket, Token: token, OnConnect: guest.DetachStdio}
	if err := a.Run(ctx); err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "warren agent:", err)
		return 1
	}
	return 0
}
