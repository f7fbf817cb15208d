package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/internal/api"
	"github.com/warrenhq/warren/internal/runtime/process"
	"github.com/warrenhq/warren/internal/serve"
)

// nodeFlags are the settings of a node: warren serve's flags, which
// warren doctor takes too, so that it checks the node serve would run.
type nodeFlags struct {
	serve.Options
	config, logFormat, logLevel, workspace string
}

func (n *nodeFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	o := &n.Options
	envString(f, &n.config, "config", "WARREN_CONFIG", "", "a TOML file setting any of these flags by name, and admin-key; flags and environment variables override it")
	envString(f, &o.Listen, "listen", "WARREN_LISTEN", "127.0.0.1:7070", "address to serve the API on")
	envString(f, &o.DataDir, "data-dir", "WARREN_DATA_DIR", DefaultDataDir(), "state directory")
	envString(f, &o.Store, "store", "WARREN_STORE", "", "where state is kept: empty for SQLite in the data dir, or postgres://USER:PASSWORD@HOST/DB to share one PostgreSQL database between nodes")
	envString(f, &o.ImageDir, "image-dir", "WARREN_IMAGE_DIR", "", "image cache directory (default DATA_DIR/images)")
	envString(f, &o.Runtime, "runtime", "WARREN_RUNTIME", "auto", "sandbox runtime: auto (gvisor, never a weaker one by itself), gvisor, runc or process")
	envString(f, &o.Runsc, "runsc", "WARREN_RUNSC", "", "path of runsc (default: beside warren, then PATH)")
	envString(f, &o.Runc, "runc", "WARREN_RUNC", "", "path of runc (default: beside warren, then PATH)")
	envString(f, &o.DockerConfig, "docker-config", "WARREN_DOCKER_CONFIG", "", "directory of a docker config.json with registry credentials for pulls (default: the environment's, as docker finds it)")
	envString(f, &o.DebianMirror, "debian-mirror", "WARREN_DEBIAN_MIRROR", "", "Debian mirror for building the base image")
	envString(f, &o.DNSUpstream, "dns-upstream", "WARREN_DNS_UPSTREAM", "", "DNS server for sandboxes' lookups, host:port (default: the host's)")
	envString(f, &o.PublicURL, "public-url", "WARREN_PUBLIC_URL", "", "URL clients reach this server at, for preview links (default http://LISTEN)")
	envString(f, &o.PreviewDomain, "preview-domain", "WARREN_PREVIEW_DOMAIN", "", "serve previews at PORT-ID.DOMAIN too")
	f.StringVar(&n.workspace, "workspace", "", "host OpenCode for this directory instead of serving the API (warren start --no-tui; see warren start --help for its flags)")
	envString(f, &o.Pools, "pool", "WARREN_POOL", "", "warm pools to keep booted, IMAGE:SIZE,... like busybox:6,base:2")
	envString(f, &o.NodeID, "node-id", "WARREN_NODE_ID", "", "this node's id among those sharing a PostgreSQL store (default: the hostname); given, it also names the node's lock, firewall table, namespaces, veths and cgroups, so several nodes can share a host")
	envString(f, &o.AdvertiseURL, "advertise-url", "WARREN_ADVERTISE_URL", "", "URL the other nodes of a cluster reach this one at (default http://LISTEN when that is one non-loopback address)")
	envString(f, &o.Labels, "label", "WARREN_LABELS", "", "this node's labels, KEY=VALUE,... (a create's placement.labels picks nodes by them)")
	envFloat(f, &o.CapacityCPU, "capacity-cpu", "WARREN_CAPACITY_CPU", 0, "CPUs the sandboxes placed on this node may ask for in total, in a cluster (default: 4 per core)")
	envInt(f, &o.CapacityMemoryMB, "capacity-memory-mb", "WARREN_CAPACITY_MEMORY_MB", 0, "MB of memory the sandboxes placed on this node may ask for in total, in a cluster (default: twice the host's)")
	envInt(f, &o.CapacityDiskMB, "capacity-disk-mb", "WARREN_CAPACITY_DISK_MB", 0, "MB of disk the sandboxes placed on this node may ask for in total, in a cluster (default: no limit)")
	envDuration(f, &o.NodeLease, "node-lease", "WARREN_NODE_LEASE", 0, "how long a cluster node's heartbeat holds before the others mark it lost (default 15s)")
	envString(f, &o.Subnet, "subnet", "WARREN_SUBNET", "", "IPv4 prefix sandboxes' addresses come from (default 10.88.0.0/16); nodes sharing a host or network need different ones")
	envString(f, &o.EgressCAFile, "egress-ca-file", "WARREN_EGRESS_CA_FILE", "", "PEM file of CAs to trust, beside the host's, when verifying the servers secrets are injected into")
	envString(f, &o.MetricsListen, "metrics-listen", "WARREN_METRICS_LISTEN", "", "also serve Prometheus metrics at http://ADDR/metrics, without a key (keep it private); /metrics on the API needs a key of the default org")
	envString(f, &o.CORSOrigins, "cors-origin", "WARREN_CORS_ORIGIN", "", "let web pages from these origins call the API (the TypeScript SDK in a browser): ORIGIN,... or *")
	envString(f, &n.logFormat, "log-format", "WARREN_LOG_FORMAT", "text", "log format: text or json")
	envString(f, &n.logLevel, "log-level", "WARREN_LOG_LEVEL", "info", "log level: debug, info, warn, error")
}

// load applies the config file, if one is given, and the settings that
// have no flag.
func (n *nodeFlags) load(cmd *cobra.Command) error {
	n.AdminKey = os.Getenv("WARREN_ADMIN_KEY")
	n.MasterKey = os.Getenv("WARREN_MASTER_KEY")
	n.PreviousMasterKeys = os.Getenv("WARREN_MASTER_KEY_PREVIOUS")
	if err := applyEnv(cmd.Flags()); err != nil {
		return err
	}
	if n.config == "" {
		return nil
	}
	extras, err := applyConfig(cmd, n.config)
	if err != nil {
		return err
	}
	if k, ok := extras["admin-key"]; ok {
		n.AdminKey = k
	}
	if k, ok := extras["master-key"]; ok {
		n.MasterKey = k
	}
	if k, ok := extras["master-key-previous"]; ok {
		n.PreviousMasterKeys = k
	}
	if v, ok := extras["allow-insecure-runtime"]; ok && (v == "true" || v == "1") {
		// The process runtime reads its consent from the environment,
		// wherever it was given.
		os.Setenv(process.AllowEnv, "1")
	}
	return nil
}

func newServeCmd(g *globals) *cobra.Command {
	n := &nodeFlags{}
	o := &n.Options
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the API, scheduler and a local node on this machine",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := n.load(cmd); err != nil {
				return err
			}
			if n.workspace != "" {
				// The agent host's log-only mode: warren start --no-tui.
				start := newStartCmd(g)
				start.SetArgs([]string{"--workspace", n.workspace, "--no-tui", "--data-dir", o.DataDir, "--log-format", n.logFormat, "--log-level", n.logLevel})
				return start.ExecuteContext(cmd.Context())
			}
			log, err := newLogger(n.logFormat, n.logLevel)
			if err != nil {
				return err
			}
			o.Log = log
			api.Version = Version
			o.Ready = func(url, key string, isNew bool, warnings []string) {
				out := cmd.OutOrStdout()
				if g.json {
					g.print(out, map[string]any{"url": url, "admin_key": key, "admin_key_new": isNew, "data_dir": o.DataDir, "warnings": warnings}, nil)
					return
				}
				fmt.Fprintf(out, "\nwarren is serving at %s\n", url)
				printWarnings(out, warnings)
				if isNew {
					fmt.Fprintf(out, "admin API key (shown once, also in %s/admin.key):\n  %s\n", o.DataDir, key)
				} else {
					fmt.Fprintf(out, "admin API key: %s/admin.key\n", o.DataDir)
				}
				fmt.Fprintf(out, "\n  export WARREN_URL=%s WARREN_API_KEY=$(cat %s/admin.key)\n  warren sandbox create --image base\n\n", url, o.DataDir)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return serve.Run(ctx, *o)
		},
	}
	n.register(cmd)
	return cmd
}

// printWarnings shows isolation warnings where a user cannot miss them.
func printWarnings(w io.Writer, warnings []string) {
	for _, msg := range warnings {
		fmt.Fprintf(w, "WARNING: %s\n", msg)
	}
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
