package cli

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newFilesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "files", Short: "Read, write and list files in a sandbox"}
	get := &cobra.Command{
		Use:   "get ID PATH [LOCAL]",
		Short: "Copy a file out of a sandbox (to stdout without LOCAL, or with -)",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			rc, err := g.client().ReadFile(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			defer rc.Close()
			var w io.Writer = cmd.OutOrStdout()
			if len(args) == 3 && args[2] != "-" {
				f, err := os.Create(args[2])
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			n, err := io.Copy(w, rc)
			if err != nil {
				return fmt.Errorf("copy %s: %w", args[1], err)
			}
			if len(args) == 3 && args[2] != "-" {
				g.print(cmd.OutOrStdout(), map[string]any{"path": args[1], "local": args[2], "bytes": n}, func() {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d bytes -> %s\n", n, args[2])
				})
			}
			return nil
		},
	}
	put := &cobra.Command{
		Use:   "put ID LOCAL PATH",
		Short: "Copy a local file (or - for stdin) into a sandbox",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r io.Reader = os.Stdin
			if args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			fi, err := g.client().WriteFile(cmd.Context(), args[0], args[2], r)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), fi, func() { fmt.Fprintf(cmd.OutOrStdout(), "%s %d bytes\n", fi.Path, fi.Size) })
			return nil
		},
	}
	ls := &cobra.Command{
		Use:   "ls ID PATH",
		Short: "List a directory in a sandbox",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			entries, err := g.client().ListFiles(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"path": args[1], "entries": entries}, func() {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				for _, e := range entries {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", e.Mode, e.Type, e.Size, e.ModTime.Local().Format("2006-01-02 15:04"), e.Name)
				}
				tw.Flush()
			})
			return nil
		},
	}
	cmd.AddCommand(get, put, ls)
	return cmd
}
