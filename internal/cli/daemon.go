package cli

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/internal/agenthost"
)

// daemonRunID names the daemon's run record.
const daemonRunID = "daemon"

func newDaemonCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "daemon", Short: "Run the agent host in the background for many workspaces"}
	var o startOptions
	start := &cobra.Command{
		Use:   "start",
		Short: "Start the background agent host; it brings back every recorded workspace",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if r, _ := agenthost.ReadRun(filepath.Join(o.dataDir, "agenthost"), daemonRunID); r != nil && agenthost.Alive(r.PID) {
				return fmt.Errorf("the daemon already runs (pid %d, %s)", r.PID, r.Pairing.URL)
			}
			o.daemon, o.detach, o.runID = true, true, daemonRunID
			return runStart(cmd, g, &o)
		},
	}
	addStartFlags(start, &o)
	var dataDir string
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop the daemon and every workspace's sandbox",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			n, err := stopRuns(filepath.Join(dataDir, "agenthost"), "", daemonRunID, 2*time.Minute)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"stopped": n}, func() { fmt.Fprintln(cmd.OutOrStdout(), "daemon stopped") })
			return nil
		},
	}
	var dc daemonClient
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether the daemon runs, and its workspaces' health",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st map[string]any
			if err := dc.call(cmd.Context(), "GET", "/status", nil, &st); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), st, func() {
				fmt.Fprintf(cmd.OutOrStdout(), "daemon running at %s, up %v ms, %v workspaces\n", dc.url, st["uptimeMs"], st["workspaces"])
				if svcs, ok := st["services"].([]any); ok {
					for _, s := range svcs {
						m, _ := s.(map[string]any)
						fmt.Fprintf(cmd.OutOrStdout(), "  %v  healthy=%v  %v %v\n", m["workspaceId"], m["healthy"], m["sandbox"], m["sandboxId"])
					}
				}
			})
			return nil
		},
	}
	stop.Flags().StringVar(&dataDir, "data-dir", envOr("WARREN_DATA_DIR", DefaultDataDir()), "state directory (WARREN_DATA_DIR)")
	dc.flags(status)
	cmd.AddCommand(start, stop, status)
	return cmd
}

// daemonClient talks to the daemon's workspace server with the host token,
// found in the daemon's run record unless given.
type daemonClient struct {
	url, token, dataDir string
	anyRun              bool
}

func (d *daemonClient) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&d.url, "url", "", "the workspace server (default: the one running here)")
	f.StringVar(&d.token, "host-token", "", "its host token (default: the one running here)")
	f.StringVar(&d.dataDir, "data-dir", envOr("WARREN_DATA_DIR", DefaultDataDir()), "state directory (WARREN_DATA_DIR)")
}

func (d *daemonClient) call(ctx context.Context, method, path string, body, out any) error {
	if d.url == "" || d.token == "" {
		r, err := d.localRun()
		if err != nil {
			return err
		}
		if d.url == "" {
			d.url = r.Pairing.URL
		}
		if d.token == "" {
			d.token = r.Pairing.HostToken
		}
	}
	_, err := agenthost.HostClient(d.url, d.token).Call(ctx, method, path, body, out)
	return err
}

// localRun finds the host to talk to on this machine: the daemon, or the
// one warren start running when several are not. anyRun says a plain start
// will do; otherwise only the daemon counts.
func (d *daemonClient) localRun() (*agenthost.Run, error) {
	hostDir := filepath.Join(d.dataDir, "agenthost")
	if r, err := agenthost.ReadRun(hostDir, daemonRunID); err == nil && r != nil && agenthost.Alive(r.PID) {
		return r, nil
	}
	if !d.anyRun {
		return nil, fmt.Errorf("the daemon is not running (start it with warren daemon start)")
	}
	runs, err := agenthost.Runs(hostDir)
	if err != nil {
		return nil, err
	}
	switch len(runs) {
	case 0:
		return nil, fmt.Errorf("nothing is running in %s; give --url and --host-token", d.dataDir)
	case 1:
		return runs[0], nil
	}
	return nil, fmt.Errorf("%d runs in %s; give --url and --host-token to pick one", len(runs), d.dataDir)
}

type workspaceItem struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Path    string `json:"path"`
	BaseURL string `json:"baseUrl"`
	Sandbox string `json:"sandbox"`
}

func newWorkspaceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "workspace", Short: "Add, list and remove the daemon's workspaces"}
	var dc daemonClient
	var name string
	add := &cobra.Command{
		Use:   "add PATH",
		Short: "Host a workspace: its own sandbox and OpenCode",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			abs, err := filepath.Abs(args[0])
			if err != nil {
				return err
			}
			var w workspaceItem
			fmt.Fprintf(cmd.ErrOrStderr(), "starting %s (a sandbox and OpenCode; a few seconds)\n", abs)
			if err := dc.call(cmd.Context(), "POST", "/workspaces", map[string]string{"path": abs, "name": name}, &w); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), w, func() { fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", w.ID, w.Path, w.BaseURL) })
			return nil
		},
	}
	add.Flags().StringVar(&name, "name", "", "the workspace's name (default: the directory's)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the running workspaces",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			items, err := dc.list(cmd.Context())
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"items": items}, func() {
				for _, w := range items {
					fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\t%s\n", w.ID, w.Name, w.Path, w.Sandbox)
				}
			})
			return nil
		},
	}
	path := &cobra.Command{
		Use:   "path ID",
		Short: "Print a workspace's directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			items, err := dc.list(cmd.Context())
			if err != nil {
				return err
			}
			for _, w := range items {
				if w.ID == args[0] {
					g.print(cmd.OutOrStdout(), map[string]string{"id": w.ID, "path": w.Path}, func() { fmt.Fprintln(cmd.OutOrStdout(), w.Path) })
					return nil
				}
			}
			return fmt.Errorf("no running workspace %s", args[0])
		},
	}
	rm := &cobra.Command{
		Use:   "rm ID",
		Short: "Stop a workspace's sandbox and forget it (its files stay)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return dc.simple(cmd, g, "DELETE", "/workspaces/"+args[0], "removed "+args[0])
		},
	}
	for _, c := range []*cobra.Command{add, list, path, rm} {
		dc.flags(c)
		cmd.AddCommand(c)
	}
	return cmd
}

func (d *daemonClient) list(ctx context.Context) ([]workspaceItem, error) {
	var out struct {
		Items []workspaceItem `json:"items"`
	}
	return out.Items, d.call(ctx, "GET", "/workspaces", nil, &out)
}

func (d *daemonClient) simple(cmd *cobra.Command, g *globals, method, path, done string) error {
	var out map[string]any
	if err := d.call(cmd.Context(), method, path, nil, &out); err != nil {
		return err
	}
	g.print(cmd.OutOrStdout(), out, func() { fmt.Fprintln(cmd.OutOrStdout(), done) })
	return nil
}

func newApprovalsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "approvals", Short: "List and answer OpenCode's permission requests (--approval manual)"}
	dc := daemonClient{anyRun: true}
	list := &cobra.Command{
		Use:   "list",
		Short: "List pending approvals",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Items []agenthost.Approval `json:"items"`
				Mode  string               `json:"mode"`
			}
			if err := dc.call(cmd.Context(), "GET", "/approvals", nil, &out); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), out, func() {
				if len(out.Items) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "no pending approvals (mode %s)\n", out.Mode)
				}
				for _, a := range out.Items {
					fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\t%s\texpires in %s\n", a.ID, a.WorkspaceID, a.Permission,
						strings.Join(a.Patterns, " "), time.Until(a.ExpiresAt).Round(time.Second))
				}
			})
			return nil
		},
	}
	var allow, deny bool
	reply := &cobra.Command{
		Use:   "reply ID (--allow | --deny)",
		Short: "Allow or deny a pending approval",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if allow == deny {
				return fmt.Errorf("give --allow or --deny")
			}
			answer := "deny"
			if allow {
				answer = "allow"
			}
			var out map[string]any
			if err := dc.call(cmd.Context(), "POST", "/approvals/"+args[0], map[string]string{"reply": answer}, &out); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), out, func() { fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", args[0], answer) })
			return nil
		},
	}
	reply.Flags().BoolVar(&allow, "allow", false, "let the tool call run")
	reply.Flags().BoolVar(&deny, "deny", false, "reject it")
	for _, c := range []*cobra.Command{list, reply} {
		dc.flags(c)
		cmd.AddCommand(c)
	}
	return cmd
}

func newInstanceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "instance", Short: "Manage the daemon's OpenCode instances"}
	var dc daemonClient
	dispose := &cobra.Command{
		Use:   "dispose ID",
		Short: "Stop a workspace's OpenCode and its sandbox; the workspace stays recorded",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return dc.simple(cmd, g, "POST", "/workspaces/"+args[0]+"/dispose", "disposed "+args[0])
		},
	}
	dc.flags(dispose)
	cmd.AddCommand(dispose)
	return cmd
}
