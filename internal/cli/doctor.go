package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/internal/doctor"
)

func newDoctorCmd(g *globals) *cobra.Command {
	n := &nodeFlags{}
	var brief, noProbe bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check that this host can run warren, and say what to fix",
		Long: "Checks what warren serve needs: root and capabilities, the kernel and its\n" +
			"features, cgroups, runsc (booting a networked sandbox) and runc, the tools\n" +
			"images and disks need, the data dir, the listen address and other warren\n" +
			"nodes. Takes serve's flags and --config, to check the node they describe.\n" +
			"Exits 1 if anything would stop warren serve or its sandboxes.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := n.load(cmd); err != nil {
				return err
			}
			checks := doctor.Run(cmd.Context(), doctor.Options{
				NodeID: n.NodeID, DataDir: n.DataDir, Listen: n.Listen, Runtime: n.Runtime, Runsc: n.Runsc, Runc: n.Runc, NoProbe: noProbe,
			})
			failed := doctor.Failed(checks)
			out := cmd.OutOrStdout()
			g.print(out, map[string]any{"ok": !failed, "checks": checks}, func() { printChecks(out, checks, brief) })
			if failed {
				return exitCode(1)
			}
			return nil
		},
	}
	n.register(cmd)
	cmd.Flags().BoolVar(&brief, "brief", false, "print only what needs attention, and a one-line summary")
	cmd.Flags().BoolVar(&noProbe, "no-probe", false, "do not boot a sandbox with runsc")
	return cmd
}

func printChecks(w io.Writer, checks []doctor.Check, brief bool) {
	counts := map[doctor.Status]int{}
	for _, c := range checks {
		counts[c.Status]++
		if brief && c.Status == doctor.OK {
			continue
		}
		mark := map[doctor.Status]string{doctor.OK: "ok  ", doctor.Warn: "WARN", doctor.Fail: "FAIL"}[c.Status]
		fmt.Fprintf(w, "%s  %-20s %s\n", mark, c.Name, c.Detail)
		if c.Fix != "" && c.Status != doctor.OK {
			fmt.Fprintf(w, "      %-20s fix: %s\n", "", c.Fix)
		}
	}
	switch {
	case counts[doctor.Fail] > 0:
		fmt.Fprintf(w, "warren doctor: %d problem(s) to fix before warren can serve, %d warning(s)\n", counts[doctor.Fail], counts[doctor.Warn])
	case counts[doctor.Warn] > 0:
		fmt.Fprintf(w, "warren doctor: ready to serve, with %d warning(s)\n", counts[doctor.Warn])
	default:
		fmt.Fprintln(w, "warren doctor: ready to serve")
	}
}
