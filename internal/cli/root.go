// Package cli is the warren command line: the server, the guest agent's
// entry points, and a client for everything the API does.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/idmap"
)

// Main runs the command line and returns the process exit code.
func Main(args []string) int {
	// The guest agent's entry points come first and touch nothing else:
	// they run inside sandboxes.
	if code, ok := guest.Main(args); ok {
		return code
	}
	if len(args) > 1 && args[1] == idmap.HoldCommand {
		return idmap.Hold()
	}
	root := newRoot()
	root.SetArgs(args[1:])
	if err := root.Execute(); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			return int(ec)
		}
		fmt.Fprintln(os.Stderr, "warren:", err)
		return 1
	}
	return 0
}

// exitCode carries a remote command's exit code out of a command.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit code %d", int(e)) }

// globals are the flags every client command shares.
type globals struct {
	url    string
	apiKey string
	json   bool
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "warren",
		Short:         "Self-hosted sandboxes for AI agents",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.url, "url", envOr("WARREN_URL", "http://127.0.0.1:7070"), "warren API URL (WARREN_URL)")
	// Not the environment variable as the default: --help prints defaults.
	root.PersistentFlags().StringVar(&g.apiKey, "api-key", "", "API key (WARREN_API_KEY; default: the local server's admin.key)")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON")
	root.AddCommand(
		newServeCmd(g),
		newSandboxCmd(g),
		newExecCmd(g),
		newShellCmd(g),
		newFilesCmd(g),
		newImageCmd(g),
		newOrgCmd(g),
		newKeyCmd(g),
		newSecretCmd(g),
		newVolumeCmd(g),
		newNodeCmd(g),
		newUsageCmd(g),
		newBenchCmd(g),
		newStartCmd(g),
		newStopCmd(g),
		newDaemonCmd(g),
		newWorkspaceCmd(g),
		newInstanceCmd(g),
		newApprovalsCmd(g),
		newBridgeCmd(g),
		newDoctorCmd(g),
		newVersionCmd(g),
	)
	return root
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// DefaultDataDir is where warren keeps state when not told otherwise.
func DefaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/warren"
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(filepath.Dir(d), ".local", "share", "warren")
	}
	return ".warren"
}

// client builds an API client. Without a key, it falls back to the admin
// key a local server wrote, so the CLI works on the server's own machine.
func (g *globals) client() *client.Client {
	key := g.apiKey
	if key == "" {
		key = os.Getenv("WARREN_API_KEY")
	}
	if key == "" {
		dir := envOr("WARREN_DATA_DIR", DefaultDataDir())
		if b, err := os.ReadFile(filepath.Join(dir, "admin.key")); err == nil {
			key = strings.TrimSpace(string(b))
		}
	}
	return client.New(g.url, key)
}

// print writes v as JSON when --json is set, else calls human.
func (g *globals) print(w io.Writer, v any, human func()) {
	if g.json {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return
	}
	human()
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print warren's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			g.print(cmd.OutOrStdout(), map[string]string{"version": Version}, func() {
				fmt.Fprintln(cmd.OutOrStdout(), "warren", Version)
			})
		},
	}
}

// Version is set at build time.
var Version = "dev"
