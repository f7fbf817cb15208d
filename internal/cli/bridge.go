package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/internal/agenthost"
	"github.com/warrenhq/warren/internal/bridge"
)

// bridgeFlags are start's chat bridge settings. The tokens are secrets:
// their environment variables are the way to give them (a command line
// is visible to every user of the host), and a detached start passes
// them on in its environment, never its arguments.
type bridgeFlags struct {
	cfg      agenthost.BridgeConfig
	required bool
}

// bridgeSecretFlags are the flags a detached start moves into the
// environment of its child.
var bridgeSecretFlags = map[string]string{
	"telegram-token":  "WARREN_TELEGRAM_TOKEN",
	"slack-bot-token": "WARREN_SLACK_BOT_TOKEN",
	"slack-app-token": "WARREN_SLACK_APP_TOKEN",
}

func (b *bridgeFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	c := &b.cfg
	// Better given in the environment: a command line is visible to every
	// user of the host.
	envString(f, &c.TelegramToken, "telegram-token", "WARREN_TELEGRAM_TOKEN", "", "run the chat bridge with this Telegram bot token")
	envString(f, &c.TelegramAPIURL, "telegram-api-url", "WARREN_TELEGRAM_API_URL", "", "Telegram Bot API server (default Telegram's own)")
	envString(f, &c.SlackBotToken, "slack-bot-token", "WARREN_SLACK_BOT_TOKEN", "", "run the chat bridge with this Slack bot token, xoxb-…")
	envString(f, &c.SlackAppToken, "slack-app-token", "WARREN_SLACK_APP_TOKEN", "", "the Slack app-level token for Socket Mode, xapp-…")
	envString(f, &c.SlackAPIURL, "slack-api-url", "WARREN_SLACK_API_URL", "", "Slack Web API base URL (default Slack's own)")
	f.BoolVar(&b.required, "bridge-required", false, "stop the agent host when the chat bridge exits (by default it keeps running and the bridge is started again)")
}

func (b *bridgeFlags) enabled() bool { return len(b.cfg.Platforms()) > 0 }

// check says what is wrong with the bridge's settings.
func (b *bridgeFlags) check() error {
	for _, u := range []struct{ flag, v string }{{"--telegram-api-url", b.cfg.TelegramAPIURL}, {"--slack-api-url", b.cfg.SlackAPIURL}} {
		if u.v == "" {
			continue
		}
		if p, err := url.Parse(u.v); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("%s %q: want an http(s) URL", u.flag, u.v)
		}
	}
	if b.required && !b.enabled() {
		return fmt.Errorf("--bridge-required needs a bridge: --telegram-token, or --slack-bot-token and --slack-app-token")
	}
	return b.cfg.Check()
}

func newBridgeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "bridge", Short: "Pair chats with the agent host's chat bridge (Telegram, Slack)"}
	dc := daemonClient{anyRun: true}
	var role string
	pair := &cobra.Command{
		Use:   "pair [--role host|collaborator]",
		Short: "Make a one-time code a chat sends as /pair CODE (valid 10 minutes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Code      string    `json:"code"`
				Role      string    `json:"role"`
				ExpiresAt time.Time `json:"expiresAt"`
			}
			if err := dc.call(cmd.Context(), "POST", "/bridge/codes", map[string]string{"role": role}, &out); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), out, func() {
				fmt.Fprintf(cmd.OutOrStdout(), "send this in the chat to pair it as a %s chat (until %s):\n\n  /pair %s\n\n(in Slack: !pair %s, or /pair if the app has that command)\n",
					out.Role, out.ExpiresAt.Local().Format("15:04:05"), out.Code, out.Code)
			})
			return nil
		},
	}
	pair.Flags().StringVar(&role, "role", agenthost.ChatHost, "host (sees and answers approvals) or collaborator (drives the agent only)")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the bridge process and the paired chats",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Bridge agenthost.BridgeStatus  `json:"bridge"`
				Chats  []*agenthost.ChatRecord `json:"chats"`
			}
			if err := dc.call(cmd.Context(), "GET", "/bridge", nil, &out); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), out, func() { printBridge(cmd.OutOrStdout(), out.Bridge, out.Chats) })
			return nil
		},
	}
	unpair := &cobra.Command{
		Use:   "unpair KEY",
		Short: "Forget a chat (its key as bridge status lists it); it must pair again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return dc.simple(cmd, g, "DELETE", "/bridge/chats/"+url.PathEscape(args[0]), "unpaired "+args[0])
		},
	}
	run := &cobra.Command{
		Use:    "run",
		Short:  "Run the chat bridge (the agent host starts it; its config arrives on stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(cmd *cobra.Command, _ []string) error { return runBridge(cmd.Context(), os.Stdin) },
	}
	for _, c := range []*cobra.Command{pair, status, unpair} {
		dc.flags(c)
		cmd.AddCommand(c)
	}
	cmd.AddCommand(run)
	return cmd
}

func printBridge(w io.Writer, b agenthost.BridgeStatus, chats []*agenthost.ChatRecord) {
	if !b.Enabled {
		fmt.Fprintln(w, "no chat bridge (start with --telegram-token, or --slack-bot-token and --slack-app-token)")
	} else {
		fmt.Fprintf(w, "bridge %s (%v), pid %d, restarts %d\n", b.State, b.Platforms, b.PID, b.Restarts)
		if b.LastError != "" {
			fmt.Fprintf(w, "last exit: %s\n", b.LastError)
		}
	}
	for _, c := range chats {
		role := c.Role
		if role == "" {
			role = "refused"
		}
		fmt.Fprintf(w, "  %-32s %-12s %s\n", c.Key, role, c.Title)
	}
}

// runBridge is the bridge process: it reads its config from stdin, then
// runs until it is told to stop or stdin closes (the agent host is gone).
func runBridge(ctx context.Context, stdin io.Reader) error {
	cfg, err := bridge.ReadConfig(stdin)
	if err != nil {
		return err
	}
	base, err := newLogger(cfg.LogFormat, "info")
	if err != nil {
		return err
	}
	log := slog.New(bridge.Redact(base.Handler(), cfg.TelegramToken, cfg.SlackBotToken, cfg.SlackAppToken, cfg.HostToken)).
		With("run.id", cfg.RunID, "service.name", "bridge")
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()
	if err := bridge.Serve(ctx, cfg, log); err != nil {
		// The log record is the one that is redacted: the error goes no
		// further as it is.
		log.Error("chat bridge stopped", "err", err)
		return errors.New("chat bridge stopped (see the log)")
	}
	return nil
}
