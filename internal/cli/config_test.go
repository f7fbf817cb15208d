package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func writeConfig(t *testing.T, body string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "warren.toml")
	if err := os.WriteFile(path, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigPrecedence(t *testing.T) {
	t.Setenv("WARREN_LISTEN", "")
	t.Setenv("WARREN_DATA_DIR", "")
	t.Setenv("WARREN_POOL", "")
	t.Setenv("WARREN_ADMIN_KEY", "")
	t.Setenv("WARREN_LOG_LEVEL", "warn")
	path := writeConfig(t, `
listen = "127.0.0.1:9999"
data-dir = "/srv/warren"
pool = ["busybox:2", "base:1"]
log-level = "debug"
runtime = "runc"
admin-key = "a-key-of-sixteen-chars"
`, 0o600)
	cmd := newServeCmd(&globals{})
	if err := cmd.ParseFlags([]string{"--runtime", "gvisor"}); err != nil {
		t.Fatal(err)
	}
	// As load does: the environment, then the file.
	if err := applyEnv(cmd.Flags()); err != nil {
		t.Fatal(err)
	}
	extras, err := applyConfig(cmd, path)
	if err != nil {
		t.Fatal(err)
	}
	f := cmd.Flags()
	for name, want := range map[string]string{
		"listen":    "127.0.0.1:9999",   // from the file
		"data-dir":  "/srv/warren",      // from the file
		"pool":      "busybox:2,base:1", // a list, as the flag takes it
		"runtime":   "gvisor",           // the command line wins
		"log-level": "warn",             // the environment wins
	} {
		if got := f.Lookup(name).Value.String(); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if extras["admin-key"] != "a-key-of-sixteen-chars" {
		t.Errorf("admin-key not returned: %v", extras)
	}
}

func TestConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		mode       os.FileMode
		want       string
	}{
		{"unknown key", `listn = "x"`, 0o600, `unknown setting "listn"`},
		{"not TOML", `listen = `, 0o600, "warren.toml"},
		{"wrong type", "listen = { a = 1 }", 0o600, "listen: want a string"},
		{"readable secret", `admin-key = "a-key-of-sixteen-chars"`, 0o644, "chmod 600"},
		{"the config names itself", `config = "/etc/other.toml"`, 0o600, `unknown setting "config"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body, tc.mode)
			cmd := newServeCmd(&globals{})
			before := cmd.Flags().Lookup("listen").Value.String()
			_, err := applyConfig(cmd, path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want an error containing %q", err, tc.want)
			}
			if got := cmd.Flags().Lookup("listen").Value.String(); got != before {
				t.Fatalf("a refused config changed listen to %q", got)
			}
		})
	}
}

// Every flag of warren serve can be set from the file (the docs say so).
func TestConfigCoversEveryFlag(t *testing.T) {
	cmd := newServeCmd(&globals{})
	keys := configKeys(cmd)
	for _, want := range []string{"listen", "data-dir", "runtime", "runsc", "runc", "pool", "admin-key", "log-format"} {
		found := false
		for _, k := range keys {
			found = found || k == want
		}
		if !found {
			t.Errorf("%s cannot be set from a config file (keys: %v)", want, keys)
		}
	}
	doc, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k == "workspace" {
			continue
		}
		if !strings.Contains(string(doc), "`"+k+"`") && !strings.Contains(string(doc), "`--"+k+"`") {
			t.Errorf("docs/OPERATIONS.md does not mention the setting %s", k)
		}
	}
}

// TestStartConfig: start takes the chat bridge's tokens from a config
// file, which must then be private.
func TestStartConfig(t *testing.T) {
	t.Setenv("WARREN_TELEGRAM_TOKEN", "")
	t.Setenv("WARREN_SLACK_BOT_TOKEN", "")
	body := "telegram-token = \"1:from-the-file\"\napproval = \"manual\"\n"
	cmd := newStartCmd(&globals{})
	if err := cmd.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := applyConfig(cmd, writeConfig(t, body, 0o644)); err == nil || !strings.Contains(err.Error(), "telegram-token") {
		t.Fatalf("a readable config with a token: %v", err)
	}
	if _, err := applyConfig(cmd, writeConfig(t, body, 0o600)); err != nil {
		t.Fatal(err)
	}
	if got := cmd.Flags().Lookup("telegram-token").Value.String(); got != "1:from-the-file" {
		t.Fatalf("telegram-token = %q", got)
	}
	if got := cmd.Flags().Lookup("approval").Value.String(); got != "manual" {
		t.Fatalf("approval = %q", got)
	}
}

// TestHelpShowsNoSecrets: flags whose environment variables hold secrets
// do not take them as defaults, which --help would print; the values still
// arrive.
func TestHelpShowsNoSecrets(t *testing.T) {
	secrets := map[string]string{
		"WARREN_API_KEY": "api-key-SEKRIT", "WARREN_STORE": "postgres://u:pg-SEKRIT@h/db",
		"WARREN_TELEGRAM_TOKEN": "1:tg-SEKRIT", "WARREN_SLACK_BOT_TOKEN": "xoxb-SEKRIT", "WARREN_SLACK_APP_TOKEN": "xapp-SEKRIT",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"start", "--help"}, {"daemon", "start", "--help"}} {
		root := newRoot()
		var out strings.Builder
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "SEKRIT") {
			t.Errorf("warren %s prints a secret:\n%s", strings.Join(args, " "), out.String())
		}
	}
	var n nodeFlags
	cmd := &cobra.Command{Use: "serve"}
	n.register(cmd)
	if err := cmd.ParseFlags(nil); err != nil {
		t.Fatal(err)
	}
	if err := n.load(cmd); err != nil || n.Store != secrets["WARREN_STORE"] {
		t.Fatalf("WARREN_STORE did not arrive: %q %v", n.Store, err)
	}
	var b bridgeFlags
	start := &cobra.Command{Use: "start"}
	b.register(start)
	if err := applyEnv(start.Flags()); err != nil || b.check() != nil || b.cfg.TelegramToken != secrets["WARREN_TELEGRAM_TOKEN"] || b.cfg.SlackAppToken != secrets["WARREN_SLACK_APP_TOKEN"] {
		t.Fatalf("the chat tokens did not arrive: %+v %v", b.cfg, err)
	}
}
