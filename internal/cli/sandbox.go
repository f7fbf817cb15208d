package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/client"
)

func newSandboxCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "sandbox", Aliases: []string{"sandboxes", "sb"}, Short: "Create, list, inspect and delete sandboxes"}
	cmd.AddCommand(newCreateCmd(g), newListCmd(g), newGetCmd(g), newRmCmd(g), newSnapshotCmd(g),
		newStateCmd(g, "pause", "Save a running sandbox's memory and files and stop it (gVisor)", (*client.Client).Pause),
		newStateCmd(g, "resume", "Bring a paused sandbox back where it was", (*client.Client).Resume),
		newForkCmd(g))
	return cmd
}

// keyValues parses repeated K=V flags.
func keyValues(flag string, in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: expected KEY=VALUE", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

func newCreateCmd(g *globals) *cobra.Command {
	var req client.CreateRequest
	var res client.Resources
	var env, md, vols, secretEnv, secretFiles, nodeLabels []string
	var node string
	var timeout, idle time.Duration
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and print it once it is running",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if req.Env, err = keyValues("env", env); err != nil {
				return err
			}
			if req.Metadata, err = keyValues("metadata", md); err != nil {
				return err
			}
			if req.Secrets, err = keyValues("secret", secretEnv); err != nil {
				return err
			}
			if req.SecretFiles, err = keyValues("secret-file", secretFiles); err != nil {
				return err
			}
			for _, v := range vols {
				name, path, ok := strings.Cut(v, ":")
				path, mode, _ := strings.Cut(path, ":")
				if !ok || name == "" || path == "" || mode != "" && mode != "ro" && mode != "rw" {
					return fmt.Errorf("--volume %q: expected NAME:PATH[:ro]", v)
				}
				req.Volumes = append(req.Volumes, client.VolumeMount{Name: name, Path: path, ReadOnly: mode == "ro"})
			}
			if res != (client.Resources{}) {
				req.Resources = &res
			}
			nl, err := keyValues("node-label", nodeLabels)
			if err != nil {
				return err
			}
			if node != "" || len(nl) > 0 {
				req.Placement = &client.Placement{Node: node, Labels: nl}
			}
			if cmd.Flags().Changed("timeout") {
				s := int64(timeout.Seconds())
				req.TimeoutSeconds = &s
			}
			if cmd.Flags().Changed("idle-timeout") {
				s := int64(idle.Seconds())
				req.IdleTimeoutSeconds = &s
			}
			c := g.client()
			ctx := cmd.Context()
			if err := ensureImage(ctx, g, c, req.Image, cmd.ErrOrStderr()); err != nil {
				return err
			}
			sb, err := c.CreateSandbox(ctx, &req)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), sb, func() {
				fmt.Fprintln(cmd.OutOrStdout(), sb.ID)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s %s on %s (%s, %s)\n", sb.State, sb.Image, sb.Runtime, sb.BootPath, timingSummary(sb.Timings))
			})
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Image, "image", "", "image (default base)")
	f.StringVar(&req.Runtime, "runtime", "", "runtime: gvisor or runc (default: the node's)")
	f.StringVar(&node, "node", "", "in a cluster, the node to make it on")
	f.StringArrayVar(&nodeLabels, "node-label", nil, "in a cluster, a label KEY=VALUE its node must carry (repeatable)")
	f.Float64Var(&res.CPU, "cpu", 0, "CPU cores (default 1)")
	f.IntVar(&res.MemoryMB, "memory", 0, "memory limit in MiB (default 1024)")
	f.IntVar(&res.PIDs, "pids", 0, "process limit (default 512)")
	f.StringArrayVarP(&env, "env", "e", nil, "environment KEY=VALUE (repeatable)")
	f.StringArrayVarP(&md, "metadata", "m", nil, "metadata KEY=VALUE (repeatable)")
	f.StringArrayVar(&vols, "volume", nil, "mount a volume NAME:PATH[:ro] (repeatable)")
	f.StringArrayVar(&secretEnv, "secret", nil, "set ENV to the value of the org's secret: ENV=SECRET (repeatable)")
	f.StringArrayVar(&secretFiles, "secret-file", nil, "write a secret to a file on a memory-backed /run/secrets: /run/secrets/FILE=SECRET (repeatable)")
	f.DurationVar(&timeout, "timeout", 0, "hard lifetime, e.g. 1h (0: none)")
	f.DurationVar(&idle, "idle-timeout", 0, "end the sandbox after this long without use (0: never)")
	return cmd
}

// ensureImage builds the image first if the server lacks it, showing the
// build's progress, so a create never sits silent for minutes.
func ensureImage(ctx context.Context, g *globals, c *client.Client, name string, progress io.Writer) error {
	if name == "" {
		name = "base"
	}
	img, err := c.Image(ctx, name)
	if err != nil || img.State == "ready" {
		return nil // the create reports a bad image name itself
	}
	start := time.Now()
	fmt.Fprintf(progress, "building image %s (%s); this happens once\n", name, img.Source)
	_, err = c.BuildImage(ctx, name, func(ev client.ImageEvent) {
		if !g.json {
			fmt.Fprintf(progress, "  [%5.1fs] %s\n", time.Since(start).Seconds(), ev.Message)
		}
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "image %s ready in %.1fs\n", name, time.Since(start).Seconds())
	return nil
}

func timingSummary(t map[string]int64) string {
	keys := make([]string, 0, len(t))
	for k := range t {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", strings.TrimSuffix(k, "_ms"), t[k]))
	}
	return strings.Join(parts, " ") + " ms"
}

func newListCmd(g *globals) *cobra.Command {
	var states, md []string
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List sandboxes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			meta, err := keyValues("metadata", md)
			if err != nil {
				return err
			}
			list, err := g.client().ListSandboxes(cmd.Context(), client.ListOptions{States: toStates(states), Metadata: meta})
			if err != nil {
				return err
			}
			if list == nil {
				list = []*client.Sandbox{}
			}
			g.print(cmd.OutOrStdout(), map[string]any{"sandboxes": list}, func() {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				// A cluster's sandboxes say where they live.
				nodes := slices.ContainsFunc(list, func(sb *client.Sandbox) bool { return sb.Node != "" })
				node := func(sb *client.Sandbox) string {
					if nodes {
						return sb.Node + "\t"
					}
					return ""
				}
				header := "ID\tSTATE\tRUNTIME\tIMAGE\tAGE\tMETADATA"
				if nodes {
					header = "ID\tSTATE\tNODE\tRUNTIME\tIMAGE\tAGE\tMETADATA"
				}
				fmt.Fprintln(tw, header)
				for _, sb := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s%s\t%s\t%s\t%s\n", sb.ID, sb.State, node(sb), sb.Runtime, sb.Image,
						time.Since(sb.CreatedAt).Round(time.Second), formatMap(sb.Metadata))
				}
				tw.Flush()
			})
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&states, "state", nil, "only these states (creating, running, failed, deleted, ...)")
	cmd.Flags().StringArrayVarP(&md, "metadata", "m", nil, "only sandboxes with metadata KEY=VALUE")
	return cmd
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

func newGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a sandbox",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sb, err := g.client().GetSandbox(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), sb, func() { printSandbox(cmd.OutOrStdout(), sb) })
			return nil
		},
	}
}

func printSandbox(w io.Writer, sb *client.Sandbox) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\nstate\t%s\nruntime\t%s\nimage\t%s\n", sb.ID, sb.State, sb.Runtime, sb.Image)
	fmt.Fprintf(tw, "resources\tcpu=%g memory_mb=%d pids=%d\n", sb.Resources.CPU, sb.Resources.MemoryMB, sb.Resources.PIDs)
	fmt.Fprintf(tw, "created\t%s\n", sb.CreatedAt.Local().Format(time.RFC3339))
	if sb.ExpiresAt != nil {
		fmt.Fprintf(tw, "expires\t%s\n", sb.ExpiresAt.Local().Format(time.RFC3339))
	}
	if sb.BootPath != "" {
		fmt.Fprintf(tw, "boot\t%s (%s)\n", sb.BootPath, timingSummary(sb.Timings))
	}
	if len(sb.Metadata) > 0 {
		fmt.Fprintf(tw, "metadata\t%s\n", formatMap(sb.Metadata))
	}
	if sb.Reason != "" {
		fmt.Fprintf(tw, "reason\t%s\n", sb.Reason)
	}
	tw.Flush()
}

func newRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"delete"},
		Short:   "Delete sandboxes",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			var out []*client.Sandbox
			var failed bool
			for _, id := range args {
				sb, err := c.DeleteSandbox(cmd.Context(), id)
				if err != nil {
					fmt.Fprintf(os.Stderr, "warren: delete %s: %v\n", id, err)
					failed = true
					continue
				}
				out = append(out, sb)
				if !g.json {
					fmt.Fprintln(cmd.OutOrStdout(), sb.ID)
				}
			}
			if g.json {
				g.print(cmd.OutOrStdout(), map[string]any{"sandboxes": out}, nil)
			}
			if failed {
				return exitCode(1)
			}
			return nil
		},
	}
}

func toStates(s []string) []client.State {
	out := make([]client.State, len(s))
	for i, v := range s {
		out[i] = client.State(v)
	}
	return out
}

func newSnapshotCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "snapshot ID IMAGE",
		Short: "Make an image from a sandbox's files as they are (create from base, set up, snapshot: a template)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			start := time.Now()
			img, err := g.client().Snapshot(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			printImage(g, cmd, img, "snapshot", start)
			return nil
		},
	}
}

// newStateCmd is a command that moves one sandbox to another state and
// prints it with the step's timings.
func newStateCmd(g *globals, use, short string, do func(*client.Client, context.Context, string) (*client.Sandbox, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sb, err := do(g.client(), cmd.Context(), args[0])
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), sb, func() {
				if len(sb.Timings) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", sb.ID, sb.State)
					return
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s)\n", sb.ID, sb.State, timingSummary(sb.Timings))
			})
			return nil
		},
	}
}

func newForkCmd(g *globals) *cobra.Command {
	var count int
	cmd := &cobra.Command{
		Use:   "fork ID",
		Short: "Copy a running sandbox, memory and files, into new ones (gVisor)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out, err := g.client().Fork(cmd.Context(), args[0], count)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"sandboxes": out}, func() {
				for _, sb := range out {
					fmt.Fprintln(cmd.OutOrStdout(), sb.ID)
				}
			})
			return nil
		},
	}
	cmd.Flags().IntVar(&count, "count", 1, "how many copies")
	return cmd
}
