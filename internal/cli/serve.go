package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/internal/api"
	"github.com/warrenhq/warren/internal/serve"
)

func newServeCmd(g *globals) *cobra.Command {
	o := serve.Options{}
	var logFormat, logLevel, workspace string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the API, scheduler and a local node on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if workspace != "" {
				// The agent host's log-only mode: warren start --no-tui.
				start := newStartCmd(g)
				start.SetArgs([]string{"--workspace", workspace, "--no-tui", "--data-dir", o.DataDir, "--log-format", logFormat, "--log-level", logLevel})
				return start.ExecuteContext(cmd.Context())
			}
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			o.Log = log
			o.AdminKey = os.Getenv("WARREN_ADMIN_KEY")
			api.Version = Version
			o.Ready = func(url, key string, isNew bool) {
				out := cmd.OutOrStdout()
				if g.json {
					g.print(out, map[string]any{"url": url, "admin_key": key, "admin_key_new": isNew, "data_dir": o.DataDir}, nil)
					return
				}
				fmt.Fprintf(out, "\nwarren is serving at %s\n", url)
				if isNew {
					fmt.Fprintf(out, "admin API key (shown once, also in %s/admin.key):\n  %s\n", o.DataDir, key)
				} else {
					fmt.Fprintf(out, "admin API key: %s/admin.key\n", o.DataDir)
				}
				fmt.Fprintf(out, "\n  export WARREN_URL=%s WARREN_API_KEY=$(cat %s/admin.key)\n  warren sandbox create --image base\n\n", url, o.DataDir)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return serve.Run(ctx, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Listen, "listen", envOr("WARREN_LISTEN", "127.0.0.1:7070"), "address to serve the API on (WARREN_LISTEN)")
	f.StringVar(&o.DataDir, "data-dir", envOr("WARREN_DATA_DIR", DefaultDataDir()), "state directory (WARREN_DATA_DIR)")
	f.StringVar(&o.ImageDir, "image-dir", os.Getenv("WARREN_IMAGE_DIR"), "image cache directory (WARREN_IMAGE_DIR; default DATA_DIR/images)")
	f.StringVar(&o.Runtime, "runtime", envOr("WARREN_RUNTIME", "auto"), "sandbox runtime: auto, gvisor, runc or process (WARREN_RUNTIME)")
	f.StringVar(&o.Runsc, "runsc", os.Getenv("WARREN_RUNSC"), "path of runsc (WARREN_RUNSC; default: PATH)")
	f.StringVar(&o.Runc, "runc", os.Getenv("WARREN_RUNC"), "path of runc (WARREN_RUNC; default: PATH)")
	f.StringVar(&o.DebianMirror, "debian-mirror", os.Getenv("WARREN_DEBIAN_MIRROR"), "Debian mirror for building the base image (WARREN_DEBIAN_MIRROR)")
	f.StringVar(&o.DNSUpstream, "dns-upstream", os.Getenv("WARREN_DNS_UPSTREAM"), "DNS server for sandboxes' lookups, host:port (WARREN_DNS_UPSTREAM; default: the host's)")
	f.StringVar(&o.PublicURL, "public-url", os.Getenv("WARREN_PUBLIC_URL"), "URL clients reach this server at, for preview links (WARREN_PUBLIC_URL; default http://LISTEN)")
	f.StringVar(&o.PreviewDomain, "preview-domain", os.Getenv("WARREN_PREVIEW_DOMAIN"), "serve previews at PORT-ID.DOMAIN too (WARREN_PREVIEW_DOMAIN)")
	f.StringVar(&workspace, "workspace", "", "host OpenCode for this directory instead of serving the API (warren start --no-tui; see warren start --help for its flags)")
	f.StringVar(&o.Pools, "pool", os.Getenv("WARREN_POOL"), "warm pools to keep booted, IMAGE:SIZE,... like busybox:6,base:2 (WARREN_POOL)")
	f.StringVar(&logFormat, "log-format", envOr("WARREN_LOG_FORMAT", "text"), "log format: text or json (WARREN_LOG_FORMAT)")
	f.StringVar(&logLevel, "log-level", envOr("WARREN_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	return cmd
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		// OpenTelemetry's log data model names: time, severity, body, and
		// the attributes beside them.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 {
				switch a.Key {
				case slog.LevelKey:
					a.Key = "severity"
				case slog.MessageKey:
					a.Key = "body"
				}
			}
			return a
		}
		h := serviceName{slog.NewJSONHandler(os.Stderr, opts)}
		return slog.New(h).With("pid", os.Getpid()), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, got %q", format)
}

// serviceName marks records that name no service as warren's own.
type serviceName struct{ slog.Handler }

func (s serviceName) Handle(ctx context.Context, r slog.Record) error {
	named := false
	r.Attrs(func(a slog.Attr) bool {
		named = a.Key == "service.name"
		return !named
	})
	if !named {
		r.AddAttrs(slog.String("service.name", "warren"))
	}
	return s.Handler.Handle(ctx, r)
}

func (s serviceName) WithAttrs(attrs []slog.Attr) slog.Handler {
	return serviceName{s.Handler.WithAttrs(attrs)}
}

func (s serviceName) WithGroup(name string) slog.Handler {
	return serviceName{s.Handler.WithGroup(name)}
}
