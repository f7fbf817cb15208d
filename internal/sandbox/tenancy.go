package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/egress"
	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/idmap"
	"github.com/warrenhq/warren/internal/overlay"
	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/secrets"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// What a sandbox gets of its org: volumes mounted at boot, secrets as
// environment variables and as files on a memory-backed filesystem,
// quotas on what it holds and how long it lives.

// SecretsDir is the tmpfs secret files live on.
const SecretsDir = "/run/secrets"

// volumeSpec is a volume as a sandbox mounts it.
type volumeSpec struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Secrets opens an org's secrets for the sandboxes that name them.
type Secrets interface {
	Resolve(ctx context.Context, org string, names []string) (map[string]secrets.Value, error)
}

// reservedPath says whether p is where warren's own mounts live.
func reservedPath(p string) bool {
	for _, r := range []string{"/proc", "/sys", "/dev", "/.warren", SecretsDir} {
		if p == r || strings.HasPrefix(p, r+"/") {
			return true
		}
	}
	return false
}

// validateTenancy checks what a create asks of its org (volumes,
// secrets, the lifetime quota) and records it in the spec.
func (m *Manager) validateTenancy(ctx context.Context, org, rt string, req *CreateRequest, sp *spec) error {
	if len(req.Volumes)+len(req.Secrets)+len(req.SecretFiles) > 0 && rt == "process" {
		return badRequest("volumes", "the process runtime cannot mount volumes or secrets")
	}
	if len(req.Volumes) > 16 {
		return badRequest("volumes", "at most 16 volumes")
	}
	seen := map[string]bool{}
	for i, v := range req.Volumes {
		field := fmt.Sprintf("volumes[%d]", i)
		p := path.Clean(v.Path)
		if !path.IsAbs(v.Path) || p == "/" || reservedPath(p) {
			return badRequest(field+".path", "volume path %q must be absolute, not / and not under /proc, /sys, /dev, /.warren or %s", v.Path, SecretsDir)
		}
		if seen[p] {
			return badRequest(field+".path", "two volumes at %s", p)
		}
		seen[p] = true
		if m.cfg.Volumes == nil {
			return badRequest(field, "this node has no volumes")
		}
		vol, err := m.cfg.Store.GetVolume(ctx, org, v.Name)
		if errors.Is(err, store.ErrNotFound) || err == nil && vol.Name != v.Name {
			return badRequest(field+".name", "no volume named %q", v.Name)
		}
		if err != nil {
			return err
		}
		for _, o := range sp.Volumes {
			if o.ID == vol.ID {
				return badRequest(field+".name", "volume %q is mounted twice", v.Name)
			}
		}
		sp.Volumes = append(sp.Volumes, volumeSpec{ID: vol.ID, Name: vol.Name, Path: p, ReadOnly: v.ReadOnly})
	}
	for name := range req.Secrets {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return badRequest("secrets", "env name %q is not valid", name)
		}
		if _, ok := req.Env[name]; ok {
			return badRequest("secrets."+name, "%s is set by env too", name)
		}
	}
	for p := range req.SecretFiles {
		clean := path.Clean(p)
		if !strings.HasPrefix(clean, SecretsDir+"/") || clean != p || strings.Count(strings.TrimPrefix(clean, SecretsDir+"/"), "/") > 0 {
			return badRequest("secret_files", "secret file %q must be a file directly in %s", p, SecretsDir)
		}
	}
	if len(req.Secrets)+len(req.SecretFiles) > 0 {
		if m.cfg.Secrets == nil {
			return badRequest("secrets", "this node has no secrets")
		}
		vals, err := m.openSecrets(ctx, org, req.Secrets, req.SecretFiles)
		if err != nil {
			return err
		}
		for _, v := range vals {
			if len(v.AllowedHosts) > 0 && m.cfg.Egress == nil {
				return badRequest("secrets", "secret %q has allowed_hosts, and this node has no egress proxy to inject it", v.Name)
			}
			if sp.IdleAction == wire.IdlePause && len(v.AllowedHosts) == 0 {
				return badRequest("idle_action", "a sandbox holding the value of secret %q cannot be paused (its memory would be written to disk); use idle_action stop, or give the secret allowed_hosts", v.Name)
			}
		}
		sp.Secrets, sp.SecretFiles = maps.Clone(req.Secrets), maps.Clone(req.SecretFiles)
	}
	return m.checkLifetime(ctx, org, sp)
}

// openSecrets opens the secrets a sandbox names, answering a missing one
// with the field that names it.
func (m *Manager) openSecrets(ctx context.Context, org string, env, files map[string]string) (map[string]secrets.Value, error) {
	var names []string
	for _, n := range env {
		names = append(names, n)
	}
	for _, n := range files {
		names = append(names, n)
	}
	vals, err := m.cfg.Secrets.Resolve(ctx, org, names)
	if errors.Is(err, secrets.ErrNoSecret) {
		field := "secrets"
		for k, n := range env {
			if strings.Contains(err.Error(), fmt.Sprintf("%q", n)) {
				field = "secrets." + k
			}
		}
		for k, n := range files {
			if strings.Contains(err.Error(), fmt.Sprintf("%q", n)) {
				field = "secret_files." + k
			}
		}
		return nil, badRequest(field, "%v", err)
	}
	if err != nil {
		return nil, fmt.Errorf("open secrets: %w", err)
	}
	return vals, nil
}

// checkLifetime holds a sandbox's timeout to its org's max_lifetime_seconds:
// one that asks for none gets the maximum, one that asks for more (or
// for none explicitly) is refused.
func (m *Manager) checkLifetime(ctx context.Context, org string, sp *spec) error {
	if org == "" {
		return nil
	}
	o, err := m.cfg.Store.GetOrg(ctx, org)
	if err != nil || o.Quotas.MaxLifetimeSeconds == 0 {
		return nil
	}
	max := o.Quotas.MaxLifetimeSeconds
	if sp.TimeoutSeconds == 0 {
		sp.TimeoutSeconds = max
	}
	if sp.TimeoutSeconds > max {
		return &store.QuotaError{Field: "max_lifetime_seconds", Message: fmt.Sprintf("org %s's quota max_lifetime_seconds is %d; timeout_seconds %d is longer", org, max, sp.TimeoutSeconds)}
	}
	return nil
}

// openedSecrets are a sandbox's secrets as it gets them: the environment
// they add, the files to write, the substitutions its egress makes, and
// the values, for redaction.
type openedSecrets struct {
	env    map[string]string
	files  map[string]string
	subs   []egress.Substitution
	values []string
	// plain says whether any value itself is in the sandbox.
	plain bool
}

func (m *Manager) secretsFor(ctx context.Context, org, id string, sp *spec) (*openedSecrets, error) {
	out := &openedSecrets{env: map[string]string{}, files: map[string]string{}}
	if len(sp.Secrets)+len(sp.SecretFiles) == 0 {
		return out, nil
	}
	vals, err := m.openSecrets(ctx, org, sp.Secrets, sp.SecretFiles)
	if err != nil {
		return nil, err
	}
	given := map[string]string{}
	give := func(v secrets.Value) (string, error) {
		if len(v.AllowedHosts) == 0 {
			out.plain = true
			return v.Value, nil
		}
		if ph, ok := given[v.ID]; ok {
			return ph, nil
		}
		if m.cfg.Egress == nil {
			return "", badRequest("secrets", "secret %q has allowed_hosts, and this node has no egress proxy to inject it", v.Name)
		}
		ph, err := m.cfg.Egress.Placeholder(id, v.ID)
		if err != nil {
			return "", err
		}
		given[v.ID] = ph
		out.subs = append(out.subs, egress.Substitution{Placeholder: ph, Value: v.Value, Hosts: v.AllowedHosts})
		return ph, nil
	}
	for k, n := range sp.Secrets {
		if out.env[k], err = give(vals[n]); err != nil {
			return nil, err
		}
	}
	for p, n := range sp.SecretFiles {
		if out.files[p], err = give(vals[n]); err != nil {
			return nil, err
		}
	}
	for _, v := range vals {
		out.values = append(out.values, v.Value)
	}
	return out, nil
}

// redactSecrets takes a sandbox's secret values out of a message (an
// error a startup command's output went into, say).
func redactSecrets(msg string, values []string) string {
	sorted := slices.Clone(values)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, v := range sorted {
		if len(v) >= 4 {
			msg = strings.ReplaceAll(msg, v, "[secret]")
		}
	}
	return msg
}

// holdsPlainSecrets says whether a sandbox has a secret's value inside
// it, which rules out writing its memory or files anywhere (pause, fork,
// snapshot).
func (m *Manager) holdsPlainSecrets(ctx context.Context, row *store.Sandbox) bool {
	var sp spec
	if err := json.Unmarshal(row.Spec, &sp); err != nil || len(sp.Secrets)+len(sp.SecretFiles) == 0 {
		return false
	}
	if m.cfg.Egress == nil {
		return true
	}
	o, err := m.secretsFor(ctx, row.Org, row.ID, &sp)
	return err != nil || o.plain
}

// volumeMounts attaches a sandbox's volumes on the host and returns how
// the runtime mounts them (through an idmapped view in a user
// namespace, so the volume's files keep their ids).
func (m *Manager) volumeMounts(sp *spec, userns *runtime.IDRange) ([]runtime.Mount, error) {
	var out []runtime.Mount
	for _, v := range sp.Volumes {
		src, err := m.cfg.Volumes.Attach(v.ID)
		if err != nil {
			return nil, err
		}
		if userns != nil {
			if src, err = m.idmappedVolume(v.ID, src, userns); err != nil {
				return nil, err
			}
		}
		out = append(out, runtime.Mount{Source: src, Target: v.Path, ReadOnly: v.ReadOnly})
	}
	if len(sp.SecretFiles) > 0 {
		out = append(out, runtime.Mount{Target: SecretsDir, Tmpfs: true})
	}
	return out, nil
}

// idmappedVolume is a view of a mounted volume for a user namespace.
func (m *Manager) idmappedVolume(id, src string, r *runtime.IDRange) (string, error) {
	m.idmapMu.Lock()
	defer m.idmapMu.Unlock()
	view := filepath.Join(m.cfg.DataDir, "idmap", fmt.Sprintf("volume-%s@%d", id, r.HostID))
	if mounted, _ := overlay.IsMounted(view); mounted {
		return view, nil
	}
	if err := m.ensureUserns(r); err != nil {
		return "", err
	}
	if err := idmap.Mount(src, view, m.userns, true); err != nil {
		return "", fmt.Errorf("map volume %s into the user namespace: %w", id, err)
	}
	return view, nil
}

// releaseVolumes unmounts a sandbox's volumes that no other sandbox
// uses once it has ended.
func (m *Manager) releaseVolumes(ctx context.Context, sp *spec) {
	for _, v := range sp.Volumes {
		m.releaseVolume(ctx, v.ID)
	}
}

func (m *Manager) releaseVolume(ctx context.Context, id string) {
	if m.cfg.Volumes == nil {
		return
	}
	if used, err := m.cfg.Store.VolumeInUse(ctx, id); err != nil || used {
		return
	}
	views, _ := filepath.Glob(filepath.Join(m.cfg.DataDir, "idmap", "volume-"+id+"@*"))
	for _, v := range views {
		if err := idmap.Unmount(v); err != nil {
			m.log.Warn("unmount a volume's idmapped view", "volume.id", id, "err", err)
		}
	}
	if err := m.cfg.Volumes.Detach(id); err != nil {
		m.log.Warn("unmount a volume", "volume.id", id, "err", err)
	}
}

// SweepVolumes unmounts the volumes no sandbox uses (after a crash
// between a sandbox's end and its volumes' release).
func (m *Manager) SweepVolumes(ctx context.Context) {
	if m.cfg.Volumes == nil {
		return
	}
	for _, id := range m.cfg.Volumes.Mounted() {
		m.releaseVolume(ctx, id)
	}
}

// writeSecretFiles puts a sandbox's secret files on its tmpfs, readable
// by every user in it (as Docker's secrets are).
func (m *Manager) writeSecretFiles(ctx context.Context, l *live, files map[string]string) error {
	for _, p := range slices.Sorted(maps.Keys(files)) {
		if _, err := l.agent.WriteFile(ctx, p, "0444", strings.NewReader(files[p])); err != nil {
			return fmt.Errorf("write secret file %s: %w", p, err)
		}
	}
	return nil
}

// lifetimeAllows checks a new deadline against the org's lifetime quota.
func (m *Manager) lifetimeAllows(ctx context.Context, row *store.Sandbox, exp time.Time) error {
	o, err := m.cfg.Store.GetOrg(ctx, row.Org)
	if err != nil || o.Quotas.MaxLifetimeSeconds == 0 {
		return nil
	}
	limit := row.CreatedAt.Add(time.Duration(o.Quotas.MaxLifetimeSeconds) * time.Second)
	if exp.IsZero() || exp.After(limit.Add(time.Second)) {
		return &store.QuotaError{Field: "max_lifetime_seconds", Message: fmt.Sprintf("org %s's quota max_lifetime_seconds is %d: sandbox %s must end by %s",
			row.Org, o.Quotas.MaxLifetimeSeconds, row.ID, limit.Format(time.RFC3339))}
	}
	return nil
}

// applySecrets opens a sandbox's secrets into its live state: the
// environment every process it starts gets, and, for secrets with
// allowed hosts, the egress proxy's substitutions and the CA the sandbox
// trusts for them. Nothing of the values is stored.
func (m *Manager) applySecrets(ctx context.Context, l *live, org string, sp *spec) (*openedSecrets, error) {
	sec, err := m.secretsFor(ctx, org, l.id, sp)
	if err != nil {
		return nil, err
	}
	env := maps.Clone(sp.Env)
	if env == nil {
		env = map[string]string{}
	}
	maps.Copy(env, sec.env)
	if len(sec.subs) > 0 {
		caPEM, err := m.cfg.Egress.Attach(l.id, sec.subs)
		if err != nil {
			return sec, fmt.Errorf("route the sandbox's HTTPS through the egress proxy: %w", err)
		}
		bundle, err := trustCA(ctx, l.agent, caPEM)
		if err != nil {
			return sec, err
		}
		// Runtimes that keep their own trust store look here.
		env["NODE_EXTRA_CA_CERTS"] = egressCAPath
		if bundle != "" {
			env["SSL_CERT_FILE"], env["REQUESTS_CA_BUNDLE"] = bundle, bundle
		}
	}
	l.mu.Lock()
	l.env = env
	l.secretEnv = slices.Collect(maps.Keys(sec.env))
	l.mu.Unlock()
	return sec, nil
}

// egressCAPath is where a sandbox finds the CA of its egress proxy.
const egressCAPath = "/usr/local/share/ca-certificates/warren-egress.crt"

// caBundles are the system trust stores warren adds the CA to: Debian's
// and Alpine's, then Fedora's.
var caBundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"}

// trustCA installs a sandbox's egress CA in its trust store (once), and
// answers the bundle it went into, if the image has one.
func trustCA(ctx context.Context, a *guest.Client, caPEM []byte) (string, error) {
	if _, err := a.WriteFile(ctx, egressCAPath, "0644", bytes.NewReader(caPEM)); err != nil {
		return "", fmt.Errorf("install the egress CA: %w", err)
	}
	for _, bundle := range caBundles {
		rc, _, err := a.ReadFile(ctx, bundle)
		if err != nil {
			continue
		}
		have, err := io.ReadAll(io.LimitReader(rc, 16<<20))
		rc.Close()
		if err != nil {
			continue
		}
		if !bytes.Contains(have, caPEM) {
			if len(have) > 0 && have[len(have)-1] != '\n' {
				have = append(have, '\n')
			}
			if _, err := a.WriteFile(ctx, bundle, "0644", bytes.NewReader(append(have, caPEM...))); err != nil {
				return "", fmt.Errorf("add the egress CA to %s: %w", bundle, err)
			}
		}
		return bundle, nil
	}
	return "", nil
}

// hideSecretEnv takes a sandbox's secret variables out of an
// environment shown to a client (a process or command listing).
func (l *live) hideSecretEnv(env map[string]string) map[string]string {
	l.mu.Lock()
	names := l.secretEnv
	l.mu.Unlock()
	if len(names) == 0 || len(env) == 0 {
		return env
	}
	out := maps.Clone(env)
	for _, n := range names {
		delete(out, n)
	}
	return out
}
