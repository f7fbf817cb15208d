package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/client"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Aliases: []string{"nodes"}, Short: "The nodes of a cluster: warren serves sharing one PostgreSQL store"}
	list := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List the nodes with their state, capacity and what their sandboxes hold", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nodes, err := g.client().ListNodes(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			g.print(out, map[string]any{"nodes": nodes}, func() {
				if len(nodes) == 0 {
					fmt.Fprintln(out, "no nodes: this warren keeps its state to itself (serve --store postgres://... to share it)")
					return
				}
				table(out, "ID\tSTATE\tSANDBOXES\tCPU\tMEMORY\tHEARTBEAT\tURL\tLABELS", func(tw io.Writer) {
					for _, n := range nodes {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s ago\t%s\t%s\n", n.ID, n.State, n.Allocated.Sandboxes,
							ofCapacity(n.Allocated.CPU, n.Capacity.CPU, ""), ofCapacity(float64(n.Allocated.MemoryMB), float64(n.Capacity.MemoryMB), " MB"),
							time.Since(n.HeartbeatAt).Round(time.Second), n.URL, formatMap(n.Labels))
					}
				})
			})
			return nil
		},
	}
	get := &cobra.Command{
		Use: "get ID", Short: "Show one node", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := g.client().GetNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			printNode(g, cmd, n)
			return nil
		},
	}
	drain := func(use, short string, on bool) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				n, err := g.client().DrainNode(cmd.Context(), args[0], on)
				if err != nil {
					return err
				}
				printNode(g, cmd, n)
				return nil
			},
		}
	}
	forget := &cobra.Command{
		Use: "forget ID", Short: "Remove a lost node for good; its sandboxes that had not ended fail", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := g.client().ForgetNode(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), out, func() {
				fmt.Fprintf(cmd.OutOrStdout(), "forgot node %s; %d of its sandboxes failed with it\n", out.ID, out.SandboxesFailed)
			})
			return nil
		},
	}
	cmd.AddCommand(list, get, forget, drain("drain", "Place no new sandboxes on a node; those it has run on", true),
		drain("undrain", "Make a draining node take new sandboxes again", false))
	return cmd
}

func printNode(g *globals, cmd *cobra.Command, n *client.Node) {
	out := cmd.OutOrStdout()
	g.print(out, n, func() {
		fmt.Fprintf(out, "%s  %s  %s\n", n.ID, n.State, n.URL)
		fmt.Fprintf(out, "  sandboxes %d, CPU %s, memory %s\n", n.Allocated.Sandboxes,
			ofCapacity(n.Allocated.CPU, n.Capacity.CPU, ""), ofCapacity(float64(n.Allocated.MemoryMB), float64(n.Capacity.MemoryMB), " MB"))
		fmt.Fprintf(out, "  runtimes %s (default %s), images %s\n", strings.Join(n.Capacity.Runtimes, ","), n.Capacity.DefaultRuntime, strings.Join(n.Capacity.Images, ","))
		fmt.Fprintf(out, "  heartbeat %s ago, lease until %s\n", time.Since(n.HeartbeatAt).Round(time.Second), n.LeaseUntil.Format(time.RFC3339))
	})
}

// ofCapacity is "used/of" ("used/-" when there is no limit).
func ofCapacity(used, of float64, unit string) string {
	if of == 0 {
		return fmt.Sprintf("%g/-%s", used, unit)
	}
	return fmt.Sprintf("%g/%g%s", used, of, unit)
}
