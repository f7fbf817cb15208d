package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/wire"
)

// warren org, key, secret, volume and usage: tenancy from a terminal.

func table(w io.Writer, header string, rows func(tw io.Writer)) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw)
	tw.Flush()
}

func newOrgCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "org", Aliases: []string{"orgs"}, Short: "Manage organizations and their quotas (admin keys)"}
	create := &cobra.Command{
		Use: "create NAME", Short: "Create an organization", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := g.client().CreateOrg(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), o, func() { fmt.Fprintln(cmd.OutOrStdout(), o.ID) })
			return nil
		},
	}
	list := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List organizations", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			orgs, err := g.client().Orgs(cmd.Context())
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"orgs": orgs}, func() {
				table(cmd.OutOrStdout(), "ID\tNAME\tQUOTAS", func(tw io.Writer) {
					for _, o := range orgs {
						fmt.Fprintf(tw, "%s\t%s\t%s\n", o.ID, o.Name, quotaSummary(o.Quotas))
					}
				})
			})
			return nil
		},
	}
	rm := &cobra.Command{
		Use: "rm ID", Short: "Delete an organization with its keys and secrets (refused while it has sandboxes or volumes)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().DeleteOrg(cmd.Context(), args[0]); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]string{"deleted": args[0]}, func() { fmt.Fprintln(cmd.OutOrStdout(), "deleted", args[0]) })
			return nil
		},
	}
	var set []string
	quotas := &cobra.Command{
		Use:   "quotas ID",
		Short: "Show an organization's quotas and use; --set QUOTA=N changes them (0: unlimited)",
		Long: "Quotas: max_sandboxes, max_cpu, max_memory_mb, max_disk_mb, max_volumes, max_volume_mb, max_lifetime_seconds, creates_per_minute.\n" +
			"--set replaces every quota: the ones not given become unlimited.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := g.client()
			var q *client.OrgQuotas
			var err error
			if cmd.Flags().Changed("set") {
				var want client.Quotas
				if want, err = parseQuotas(set); err != nil {
					return err
				}
				q, err = c.SetQuotas(cmd.Context(), args[0], want)
			} else {
				q, err = c.OrgQuotas(cmd.Context(), args[0])
			}
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), q, func() { printQuotas(cmd.OutOrStdout(), q) })
			return nil
		},
	}
	quotas.Flags().StringArrayVar(&set, "set", nil, "QUOTA=N (repeatable)")
	cmd.AddCommand(create, list, rm, quotas)
	return cmd
}

func parseQuotas(set []string) (client.Quotas, error) {
	var q client.Quotas
	for _, kv := range set {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || n < 0 {
			return q, fmt.Errorf("--set %q: expected QUOTA=N with N ≥ 0", kv)
		}
		switch k {
		case "max_sandboxes":
			q.MaxSandboxes = int(n)
		case "max_cpu":
			q.MaxCPU = n
		case "max_memory_mb":
			q.MaxMemoryMB = int(n)
		case "max_disk_mb":
			q.MaxDiskMB = int(n)
		case "max_volumes":
			q.MaxVolumes = int(n)
		case "max_volume_mb":
			q.MaxVolumeMB = int(n)
		case "max_lifetime_seconds":
			q.MaxLifetimeSeconds = int64(n)
		case "creates_per_minute":
			q.CreatesPerMinute = int(n)
		default:
			return q, fmt.Errorf("--set %q: unknown quota %q", kv, k)
		}
	}
	return q, nil
}

func limit(v float64) string {
	if v == 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func quotaSummary(q client.Quotas) string {
	if q == (client.Quotas{}) {
		return "unlimited"
	}
	var parts []string
	for _, f := range quotaFields(q, wire.QuotaUse{}) {
		if f.limit != 0 {
			parts = append(parts, fmt.Sprintf("%s=%g", f.name, f.limit))
		}
	}
	return strings.Join(parts, " ")
}

type quotaField struct {
	name       string
	limit, use float64
}

func quotaFields(q client.Quotas, u wire.QuotaUse) []quotaField {
	return []quotaField{
		{"max_sandboxes", float64(q.MaxSandboxes), float64(u.Sandboxes)},
		{"max_cpu", q.MaxCPU, u.CPU},
		{"max_memory_mb", float64(q.MaxMemoryMB), float64(u.MemoryMB)},
		{"max_disk_mb", float64(q.MaxDiskMB), float64(u.DiskMB)},
		{"max_volumes", float64(q.MaxVolumes), float64(u.Volumes)},
		{"max_volume_mb", float64(q.MaxVolumeMB), float64(u.VolumeMB)},
		{"max_lifetime_seconds", float64(q.MaxLifetimeSeconds), 0},
		{"creates_per_minute", float64(q.CreatesPerMinute), float64(u.CreatesLastMinute)},
	}
}

// printQuotas shows each quota with its use as a bar.
func printQuotas(w io.Writer, q *client.OrgQuotas) {
	table(w, "QUOTA\tLIMIT\tUSE\t", func(tw io.Writer) {
		for _, f := range quotaFields(q.Quotas, q.Use) {
			bar := ""
			if f.limit > 0 && f.name != "max_lifetime_seconds" {
				n := min(20, int(f.use/f.limit*20+0.5))
				bar = "[" + strings.Repeat("#", n) + strings.Repeat(".", 20-n) + "]"
			}
			use := strconv.FormatFloat(f.use, 'f', -1, 64)
			if f.name == "max_lifetime_seconds" {
				use = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.name, limit(f.limit), use, bar)
		}
	})
}

func newKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "key", Aliases: []string{"keys"}, Short: "Issue, list and revoke API keys (admin keys)"}
	var req client.APIKeyRequest
	var expires time.Duration
	create := &cobra.Command{
		Use: "create NAME", Short: "Issue a key; it is printed once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			req.ExpiresInSeconds = int64(expires.Seconds())
			k, err := g.client().CreateAPIKey(cmd.Context(), &req)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), k, func() {
				fmt.Fprintln(cmd.OutOrStdout(), k.Key)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s in org %s with %s (shown once; warren keeps only its hash)\n", k.ID, k.OrgID, strings.Join(k.Scopes, ", "))
			})
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&req.OrgID, "org", "", "the org the key acts in (default: yours)")
	f.StringSliceVar(&req.Scopes, "scope", nil, "scopes, comma-separated or repeated: "+strings.Join(wire.Scopes, ", "))
	f.DurationVar(&expires, "expires", 0, "the key stops working this long from now, e.g. 720h (0: never)")
	f.StringVar(&req.Format, "format", "", "warren (wrn_…, the default) or e2b (e2b_ and 40 hex digits, for E2B's Python SDK)")
	var org string
	list := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List keys (never their secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := g.client().APIKeys(cmd.Context(), org)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"keys": keys}, func() {
				table(cmd.OutOrStdout(), "ID\tNAME\tORG\tPREFIX\tSCOPES\tEXPIRES", func(tw io.Writer) {
					for _, k := range keys {
						exp := "never"
						if k.ExpiresAt != nil {
							exp = k.ExpiresAt.Format(time.RFC3339)
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s…\t%s\t%s\n", k.ID, k.Name, k.OrgID, k.Prefix, strings.Join(k.Scopes, ","), exp)
					}
				})
			})
			return nil
		},
	}
	list.Flags().StringVar(&org, "org", "", "only this org's keys")
	rm := &cobra.Command{
		Use: "rm ID", Aliases: []string{"revoke"}, Short: "Revoke a key at once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().RevokeAPIKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]string{"revoked": args[0]}, func() { fmt.Fprintln(cmd.OutOrStdout(), "revoked", args[0]) })
			return nil
		},
	}
	cmd.AddCommand(create, list, rm)
	return cmd
}

func newSecretCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "secret", Aliases: []string{"secrets"}, Short: "Store secrets for sandboxes; their values are never shown again"}
	var hosts []string
	var fromFile string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Store a secret, its value read from standard input (or --from-file), never from the command line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var in io.Reader = cmd.InOrStdin()
			if fromFile != "" {
				f, err := os.Open(fromFile)
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			b, err := io.ReadAll(io.LimitReader(in, 64<<10+1))
			if err != nil {
				return err
			}
			value := strings.TrimRight(string(b), "\r\n")
			s, err := g.client().CreateSecret(cmd.Context(), &client.SecretRequest{Name: args[0], Value: value, AllowedHosts: hosts})
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), s, func() { fmt.Fprintln(cmd.OutOrStdout(), s.ID) })
			return nil
		},
	}
	create.Flags().StringSliceVar(&hosts, "allowed-host", nil, "sandboxes see a placeholder; the value goes only into HTTPS request headers to these hosts (repeatable; *.domain for subdomains)")
	create.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file")
	list := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List secrets (names only)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := g.client().Secrets(cmd.Context())
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"secrets": list}, func() {
				table(cmd.OutOrStdout(), "NAME\tID\tALLOWED HOSTS\tCREATED", func(tw io.Writer) {
					for _, s := range list {
						hosts := strings.Join(s.AllowedHosts, ",")
						if hosts == "" {
							hosts = "(in the sandbox)"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Name, s.ID, hosts, s.CreatedAt.Format(time.RFC3339))
					}
				})
			})
			return nil
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Delete a secret (sandboxes that have it keep it until they end)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().DeleteSecret(cmd.Context(), args[0]); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]string{"deleted": args[0]}, func() { fmt.Fprintln(cmd.OutOrStdout(), "deleted", args[0]) })
			return nil
		},
	}
	cmd.AddCommand(create, list, rm)
	return cmd
}

func newVolumeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "volume", Aliases: []string{"volumes", "vol"}, Short: "Volumes: storage that outlives sandboxes"}
	var size int
	create := &cobra.Command{
		Use: "create NAME", Short: "Make a volume of --size MB", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := g.client().CreateVolume(cmd.Context(), args[0], size)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), v, func() { fmt.Fprintln(cmd.OutOrStdout(), v.ID) })
			return nil
		},
	}
	create.Flags().IntVar(&size, "size", 1024, "size in MB; writing past it is ENOSPC inside the sandbox")
	list := &cobra.Command{
		Use: "ls", Aliases: []string{"list"}, Short: "List volumes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			list, err := g.client().Volumes(cmd.Context())
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]any{"volumes": list}, func() {
				table(cmd.OutOrStdout(), "NAME\tID\tSIZE\tMOUNTED BY", func(tw io.Writer) {
					for _, v := range list {
						fmt.Fprintf(tw, "%s\t%s\t%d MB\t%s\n", v.Name, v.ID, v.SizeMB, strings.Join(v.MountedBy, ","))
					}
				})
			})
			return nil
		},
	}
	rm := &cobra.Command{
		Use: "rm NAME", Short: "Delete a volume and its data (refused while mounted)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.client().DeleteVolume(cmd.Context(), args[0]); err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), map[string]string{"deleted": args[0]}, func() { fmt.Fprintln(cmd.OutOrStdout(), "deleted", args[0]) })
			return nil
		},
	}
	cmd.AddCommand(create, list, rm)
	return cmd
}

func newUsageCmd(g *globals) *cobra.Command {
	var opts client.UsageOptions
	var from, to string
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "usage",
		Short: "Show what the org's sandboxes used: sandbox-, vCPU-, and GiB-seconds of memory and disk",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if since > 0 {
				opts.From = time.Now().Add(-since)
			}
			if from != "" {
				if opts.From, err = time.Parse(time.RFC3339, from); err != nil {
					return fmt.Errorf("--from: %w", err)
				}
			}
			if to != "" {
				if opts.To, err = time.Parse(time.RFC3339, to); err != nil {
					return fmt.Errorf("--to: %w", err)
				}
			}
			u, err := g.client().Usage(cmd.Context(), opts)
			if err != nil {
				return err
			}
			g.print(cmd.OutOrStdout(), u, func() { printUsage(cmd.OutOrStdout(), u, opts.GroupBy == "day") })
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "start, RFC 3339 (default 24 hours ago)")
	f.StringVar(&to, "to", "", "end, RFC 3339 (default now)")
	f.DurationVar(&since, "since", 0, "start this long ago, e.g. 720h")
	f.StringVar(&opts.GroupBy, "group-by", "sandbox", "sandbox or day")
	f.StringVar(&opts.OrgID, "org", "", "another org's usage (admin keys of the default org)")
	return cmd
}

func printUsage(w io.Writer, u *client.Usage, byDay bool) {
	first := "SANDBOX"
	if byDay {
		first = "DAY"
	}
	table(w, first+"\tSANDBOX-S\tVCPU-S\tMEM GIB-S\tDISK GIB-S", func(tw io.Writer) {
		row := func(name string, r client.UsageRow) {
			fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\n", name, r.SandboxSeconds, r.CPUSeconds, r.MemoryGiBSeconds, r.DiskGiBSeconds)
		}
		for _, r := range u.Rows {
			name := r.SandboxID
			if byDay {
				name = r.Day
			}
			row(name, r)
		}
		row("total", u.Total)
	})
}
