package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/dirtar"
	"github.com/warrenhq/warren/wire"
)

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Aliases: []string{"images"}, Short: "List, pull, import, build and delete images"}
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
				fmt.Fprintln(tw, "NAME\tSTATE\tKIND\tSIZE\tSOURCE")
				for _, i := range imgs {
					src := i.Source
					if i.Ref != "" {
						src = i.Ref + "@" + i.Digest
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f MB\t%s\n", i.Name, i.State, i.Kind, float64(i.SizeBytes)/1e6, src)
				}
				tw.Flush()
			})
			return nil
		},
	}
	var name, file, runtime string
	var buildArgs []string
	build := &cobra.Command{
		Use:   "build [NAME | --name N [-f Dockerfile] [CONTEXT]]",
		Short: "Build an image from a Dockerfile (--name), or build a built-in image now",
		Long: "With --name, build the image N from a Dockerfile in CONTEXT (default .): RUN steps run in a sandbox\n" +
			"(gVisor by default), each step is cached, and progress shows line by line.\n" +
			"Without --name, build the built-in image NAME now (otherwise it is built on first use).",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			start := time.Now()
			if name == "" && file == "" {
				if len(args) != 1 {
					return fmt.Errorf("give a built-in image's NAME, or --name with a Dockerfile")
				}
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
			}
			if name == "" {
				return fmt.Errorf("--name is required: the image to build")
			}
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			opts := client.BuildOptions{Name: name, Runtime: runtime, Args: map[string]string{}}
			if file != "" {
				rel, err := filepath.Rel(dir, file)
				if err != nil || strings.HasPrefix(rel, "..") {
					return fmt.Errorf("-f %s: the Dockerfile must be inside the context %s", file, dir)
				}
				opts.Dockerfile = filepath.ToSlash(rel)
			}
			for _, a := range buildArgs {
				k, v, ok := strings.Cut(a, "=")
				if !ok {
					return fmt.Errorf("--build-arg %q: want NAME=VALUE", a)
				}
				opts.Args[k] = v
			}
			img, err := c.BuildDir(cmd.Context(), opts, dir, func(ev client.ImageEvent) {
				if !g.json {
					fmt.Fprintf(cmd.ErrOrStderr(), "  [%5.1fs] %s: %s\n", time.Since(start).Seconds(), ev.Step, ev.Message)
				}
			})
			if err != nil {
				return err
			}
			printImage(g, cmd, img, "built", start)
			return nil
		},
	}
	build.Flags().StringVar(&name, "name", "", "the image to build from a Dockerfile")
	build.Flags().StringVarP(&file, "file", "f", "", "the Dockerfile (default CONTEXT/Dockerfile); it must be inside the context")
	build.Flags().StringArrayVar(&buildArgs, "build-arg", nil, "a build argument NAME=VALUE (repeatable)")
	build.Flags().StringVar(&runtime, "runtime", "", "where RUN steps run (default the server's: gvisor)")
	cmd.AddCommand(ls, build, newPullCmd(g), newImportCmd(g), newImageRmCmd(g), newPruneCmd(g))
	return cmd
}

// imageProgress prints each step of a pull or import under way.
func imageProgress(g *globals, w io.Writer, start time.Time) func(client.ImageEvent) {
	return func(ev client.ImageEvent) {
		if !g.json {
			fmt.Fprintf(w, "  [%5.1fs] %s: %s\n", time.Since(start).Seconds(), ev.Step, ev.Message)
		}
	}
}

func printImage(g *globals, cmd *cobra.Command, img *client.Image, verb string, start time.Time) {
	g.print(cmd.OutOrStdout(), img, func() {
		id := img.Name
		if img.Digest != "" {
			id += " " + img.Digest
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%.1f MB) in %.1fs\n", verb, id, float64(img.SizeBytes)/1e6, time.Since(start).Seconds())
	})
}

func newPullCmd(g *globals) *cobra.Command {
	var name, user string
	var passStdin bool
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Pull an image from an OCI registry (credentials: --username with --password-stdin, else the server's docker config.json)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &wire.ImagePullRequest{Ref: args[0], Name: name}
			if req.Name == "" {
				req.Name = defaultImageName(args[0])
			}
			if user != "" || passStdin {
				pass, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), 64<<10))
				if err != nil {
					return err
				}
				req.Auth = &wire.RegistryAuth{Username: user, Password: strings.TrimRight(string(pass), "\r\n")}
			}
			start := time.Now()
			img, err := g.client().PullImage(cmd.Context(), req, imageProgress(g, cmd.ErrOrStderr(), start))
			if err != nil {
				return err
			}
			printImage(g, cmd, img, "pulled", start)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the image's name in warren (default: the ref's last path element)")
	cmd.Flags().StringVar(&user, "username", "", "registry user name; the password comes on stdin")
	cmd.Flags().BoolVar(&passStdin, "password-stdin", false, "read the registry password (or token) from stdin")
	return cmd
}

// defaultImageName makes a warren image name from a ref:
// "ghcr.io/team/Py:3.12" -> "py".
func defaultImageName(ref string) string {
	base := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.IndexAny(base, ":@"); i >= 0 {
		base = base[:i]
	}
	return strings.ToLower(base)
}

func newImportCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Import an image from a docker save tarball, an OCI layout directory or tarball (- for stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return fmt.Errorf("--name is required: the image's name in warren")
			}
			var r io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				fi, err := os.Stat(args[0])
				if err != nil {
					return err
				}
				if fi.IsDir() {
					// An OCI layout directory travels as a tar stream.
					pr, pw := io.Pipe()
					go func() { pw.CloseWithError(dirtar.Pack(pw, args[0])) }()
					defer pr.Close()
					r = pr
				} else {
					f, err := os.Open(args[0])
					if err != nil {
						return err
					}
					defer f.Close()
					r = f
				}
			}
			start := time.Now()
			img, err := g.client().ImportImage(cmd.Context(), name, r, imageProgress(g, cmd.ErrOrStderr(), start))
			if err != nil {
				return err
			}
			printImage(g, cmd, img, "imported", start)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the image's name in warren")
	return cmd
}

func newImageRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Delete an image (refused while a sandbox or pool uses it)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().DeleteImage(cmd.Context(), args[0]); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"deleted": args[0]}, func() {
				fmt.Fprintf(cmd.OutOrStdout(), "deleted %s\n", args[0])
			})
			return nil
		},
	}
}

func newPruneCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "prune",
		Short: "Remove layer blobs no image uses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := g.client().PruneImages(cmd.Context())
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), res, func() {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %d blobs and %d build caches, freed %.1f MB\n", res.RemovedBlobs, res.RemovedCaches, float64(res.FreedBytes)/1e6)
			})
			return nil
		},
	}
}
