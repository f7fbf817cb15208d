package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/internal/bench"
)

func newBenchCmd(g *globals) *cobra.Command {
	o := bench.Options{}
	var runtimes, imageDir string
	var short bool
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure warren against raw runsc and runc on this host, in one run",
		Long: "Measures, on the same image: create to first output, exec round trip, a\n" +
			"request that starts no process, concurrent creates, pause and resume (and\n" +
			"the checkpoint's size), idle density (load and memory), image pulls\n" +
			"and Dockerfile builds, for warren (against a running server) and for\n" +
			"runsc/runc (and docker, when its engine answers) driven directly.\n" +
			"Run it on the server's host, as root. --short is the quick run CI uses.\n" +
			"--cluster measures instead a cluster's creates and execs sent through\n" +
			"another node against sent to the sandbox's own, in the same run.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if short {
				o.Runs, o.Repeat, o.Concurrent, o.Idle, o.IdleFor = 3, 1, 4, 5, 2*time.Second
			}
			o.Client = g.client()
			o.Runtimes = strings.Split(runtimes, ",")
			if !o.Cluster {
				if err := localPeers(cmd, g, &o, imageDir); err != nil {
					return err
				}
			}
			if !g.json {
				o.Progress = cmd.ErrOrStderr()
			}
			rep, err := bench.Run(cmd.Context(), o)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), rep, func() { bench.Table(cmd.OutOrStdout(), rep) })
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Image, "image", "busybox", "image to measure")
	f.StringVar(&runtimes, "runtime", "gvisor,runc", "runtimes to measure, comma-separated")
	f.IntVar(&o.Runs, "runs", 20, "samples per figure (0: only the idle figure and images)")
	f.IntVar(&o.Repeat, "repeat", 3, "measure each figure this many times; p50 is the median of the medians")
	f.IntVar(&o.Concurrent, "concurrent", 20, "creates started at once")
	f.IntVar(&o.Idle, "idle", 50, "sandboxes for the idle-density figure (0 to skip)")
	f.DurationVar(&o.IdleFor, "idle-for", time.Minute, "how long the idle sandboxes sit before the load and memory are read")
	f.BoolVar(&o.Cluster, "cluster", false, "measure only creates and execs of a cluster's sandbox sent through another node, against sent to its own (needs two nodes; the server's key must be admin)")
	f.BoolVar(&short, "short", false, "a quick run: 3 samples, measured once, 4 concurrent, 5 idle for 2 s")
	f.BoolVar(&o.Images, "images", true, "also measure image pulls (from a registry on loopback) and Dockerfile builds")
	f.StringVar(&o.Runsc, "runsc", envOr("WARREN_RUNSC", "runsc"), "runsc to compare with (WARREN_RUNSC)")
	f.StringVar(&o.Runc, "runc", envOr("WARREN_RUNC", "runc"), "runc to compare with (WARREN_RUNC)")
	f.StringVar(&o.Docker, "docker", "docker", "docker CLI to compare with when its engine answers (empty to skip)")
	f.StringVar(&imageDir, "image-dir", os.Getenv("WARREN_IMAGE_DIR"), "where the server keeps images (WARREN_IMAGE_DIR; default DATA_DIR/images)")
	return cmd
}

// localPeers readies what the raw runtimes the figures compare with need:
// the image's tree on this host and the binaries' paths.
func localPeers(cmd *cobra.Command, g *globals, o *bench.Options, imageDir string) error {
	if imageDir == "" {
		imageDir = filepath.Join(envOr("WARREN_DATA_DIR", DefaultDataDir()), "images")
	}
	if err := ensureImage(cmd.Context(), g, o.Client, o.Image, cmd.ErrOrStderr()); err != nil {
		return err
	}
	o.Rootfs = filepath.Join(imageDir, o.Image, "rootfs")
	if _, err := os.Stat(o.Rootfs); err != nil {
		return fmt.Errorf("image %s is not built in %s (build it with warren image build %s, or set --image-dir): %w", o.Image, imageDir, o.Image, err)
	}
	for _, p := range []*string{&o.Runsc, &o.Runc, &o.Docker} {
		if *p == "" {
			continue
		}
		if abs, err := exec.LookPath(*p); err == nil {
			*p = abs
		}
	}
	return nil
}
