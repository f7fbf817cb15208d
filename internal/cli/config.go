package cli

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/warrenhq/warren/internal/runtime/process"
)

// envAnnotation records which environment variable sets a flag, so a
// config file knows to give way to it.
const envAnnotation = "warren.env"

// envString registers a string flag set by the environment variable env
// (applyEnv reads it) unless given, else def. The variable is not the
// flag's default: --help prints defaults, and some hold secrets (a
// PostgreSQL URL's password, a bot token).
func envString(f *pflag.FlagSet, p *string, name, env, def, usage string) {
	f.StringVar(p, name, def, usage+" ("+env+")")
	_ = f.SetAnnotation(name, envAnnotation, []string{env})
}

// envFloat, envInt and envDuration register flags like envString; applyEnv
// says when a variable is malformed.
func envFloat(f *pflag.FlagSet, p *float64, name, env string, def float64, usage string) {
	f.Float64Var(p, name, def, usage+" ("+env+")")
	_ = f.SetAnnotation(name, envAnnotation, []string{env})
}

func envInt(f *pflag.FlagSet, p *int, name, env string, def int, usage string) {
	f.IntVar(p, name, def, usage+" ("+env+")")
	_ = f.SetAnnotation(name, envAnnotation, []string{env})
}

func envDuration(f *pflag.FlagSet, p *time.Duration, name, env string, def time.Duration, usage string) {
	f.DurationVar(p, name, def, usage+" ("+env+")")
	_ = f.SetAnnotation(name, envAnnotation, []string{env})
}

// applyEnv sets the flags registered with an environment variable from
// it, unless the command line set them.
func applyEnv(f *pflag.FlagSet) error {
	var err error
	f.VisitAll(func(fl *pflag.Flag) {
		env := fl.Annotations[envAnnotation]
		if err != nil || fl.Changed || len(env) != 1 {
			return
		}
		if v := os.Getenv(env[0]); v != "" {
			if e := fl.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env[0], v, e)
			}
		}
	})
	return err
}

// configOnly are settings that have an environment variable but no flag
// (a secret on a command line is visible to every user of the host).
var configOnly = map[string]string{
	"admin-key":              "WARREN_ADMIN_KEY",
	"master-key":             "WARREN_MASTER_KEY",
	"master-key-previous":    "WARREN_MASTER_KEY_PREVIOUS",
	"allow-insecure-runtime": process.AllowEnv,
}

// applyConfig sets cmd's flags from the TOML file at path, where each key
// is a flag's name. A flag given on the command line wins, then its
// environment variable, then the file, then the default. It returns the
// settings that are not flags (configOnly) that the environment leaves
// unset. An unknown key or a bad value is an error naming it.
func applyConfig(cmd *cobra.Command, path string) (map[string]string, error) {
	raw := map[string]any{}
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	for _, secret := range []string{"admin-key", "master-key", "master-key-previous", "telegram-token", "slack-bot-token", "slack-app-token"} {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o004 != 0 && raw[secret] != nil {
			return nil, fmt.Errorf("config %s holds %s but every user of this host can read it: chmod 600 it", path, secret)
		}
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	extras := map[string]string{}
	sets := map[*pflag.Flag]string{}
	for _, key := range keys {
		val, err := configValue(raw[key])
		if err != nil {
			return nil, fmt.Errorf("config %s: %s: %w", path, key, err)
		}
		if env, ok := configOnly[key]; ok {
			if os.Getenv(env) == "" {
				extras[key] = val
			}
			continue
		}
		f := cmd.Flags().Lookup(key)
		if f == nil || key == "config" || key == "help" {
			return nil, fmt.Errorf("config %s: unknown setting %q; the settings are: %s", path, key, strings.Join(configKeys(cmd), ", "))
		}
		if f.Changed {
			continue
		}
		if env := f.Annotations[envAnnotation]; len(env) == 1 && os.Getenv(env[0]) != "" {
			continue
		}
		sets[f] = val
	}
	// A bad value fails the command before anything starts.
	for f, val := range sets {
		if err := cmd.Flags().Set(f.Name, val); err != nil {
			return nil, fmt.Errorf("config %s: %s = %q: %w", path, f.Name, val, err)
		}
	}
	return extras, nil
}

// configValue turns a TOML value into what the flag would be given: a
// list becomes comma-separated, like --pool a:1,b:2.
func configValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, err := configValue(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a string, number, boolean or list, got %T", v)
}

// configKeys lists what a config file may set.
func configKeys(cmd *cobra.Command) []string {
	var keys []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "config" && f.Name != "help" && !f.Hidden {
			keys = append(keys, f.Name)
		}
	})
	for k := range configOnly {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
