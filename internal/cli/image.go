package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Aliases: []string{"images"}, Short: "List and build images"}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			imgs, err := g.client().Images(cmd.Context())
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"images": imgs}, func() {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSTATE\tSIZE\tSOURCE")
				for _, i := range imgs {
					fmt.Fprintf(tw, "%s\t%s\t%.1f MB\t%s\n", i.Name, i.State, float64(i.SizeBytes)/1e6, i.Source)
				}
				tw.Flush()
			})
			return nil
		},
	}
	build := &cobra.Command{
		Use:   "build NAME",
		Short: "Build an image now, showing progress (otherwise it is built on first use)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			start := time.Now()
			if err := ensureImage(cmd.Context(), g, c, args[0], cmd.ErrOrStderr()); err != nil {
				return err
			}
			img, err := c.Image(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), img, func() {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%.1f MB) in %.1fs\n", img.Name, img.State, float64(img.SizeBytes)/1e6, time.Since(start).Seconds())
			})
			return nil
		},
	}
	cmd.AddCommand(ls, build)
	return cmd
}
