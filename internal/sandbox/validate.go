package sandbox

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/warrenhq/warren/internal/disk"
	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/internal/network"
)

// Bounds on what a request may ask for.
const (
	minMemoryMB    = 32
	minPIDs        = 16
	minDiskMB      = 64
	maxPIDs        = 1 << 20
	maxMetadataKey = 64
	maxMetadataVal = 1024
	maxMetadata    = 64
)

// validate checks a create request and fills defaults. Every error names
// the field at fault.
func (m *Manager) validate(req *CreateRequest) (*spec, string, string, error) {
	img := req.Image
	if img == "" {
		img = DefaultImage
	}
	if !image.ValidName(img) || !m.cfg.Images.Known(img) {
		return nil, "", "", badRequest("image", "unknown image %q; available: %s", img, strings.Join(m.imageNames(), ", "))
	}
	rt := req.Runtime
	if rt == "" {
		rt = m.cfg.DefaultRuntime
	}
	if _, ok := m.cfg.Runtimes[rt]; !ok {
		return nil, "", "", badRequest("runtime", "runtime %q is not available on this node; available: %s", rt, strings.Join(m.Runtimes(), ", "))
	}
	if p := req.Placement; p != nil {
		if p.Node != "" && p.Node != m.cfg.Node {
			if m.cfg.Node == "" {
				return nil, "", "", badRequest("placement.node", "no node %q: this warren shares its store with no other node", p.Node)
			}
			return nil, "", "", badRequest("placement.node", "this is node %q, not %q", m.cfg.Node, p.Node)
		}
		for k, v := range p.Labels {
			if m.cfg.Labels[k] != v {
				return nil, "", "", badRequest("placement.labels", "this node's label %s is %q, not %q", k, m.cfg.Labels[k], v)
			}
		}
	}
	res := DefaultResources
	if r := req.Resources; r != nil {
		if r.CPU != 0 {
			res.CPU = r.CPU
		}
		if r.MemoryMB != 0 {
			res.MemoryMB = r.MemoryMB
		}
		if r.PIDs != 0 {
			res.PIDs = r.PIDs
		}
		if r.DiskMB != 0 {
			res.DiskMB = r.DiskMB
		}
	}
	if cores := float64(goruntime.NumCPU()); res.CPU < 0.01 || res.CPU > cores {
		return nil, "", "", badRequest("resources.cpu", "cpu must be between 0.01 and %g (this node's cores), got %g", cores, res.CPU)
	}
	if total := hostMemoryMB(); res.MemoryMB < minMemoryMB || (total > 0 && res.MemoryMB > total) {
		return nil, "", "", badRequest("resources.memory_mb", "memory_mb must be between %d and %d, got %d", minMemoryMB, total, res.MemoryMB)
	}
	if res.PIDs < minPIDs || res.PIDs > maxPIDs {
		return nil, "", "", badRequest("resources.pids", "pids must be between %d and %d, got %d", minPIDs, maxPIDs, res.PIDs)
	}
	// A sandbox's disk is a ceiling, not a reservation, but never more
	// than the node has free now.
	if free, err := disk.Available(m.cfg.DataDir); err == nil && (res.DiskMB < minDiskMB || res.DiskMB > free) {
		return nil, "", "", badRequest("resources.disk_mb", "disk_mb must be between %d and %d (free on this node), got %d", minDiskMB, free, res.DiskMB)
	}
	for k := range req.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, "", "", badRequest("env", "env name %q is not valid", k)
		}
	}
	for k, v := range req.Env {
		if strings.ContainsRune(v, 0) {
			return nil, "", "", badRequest("env."+k, "env value may not contain NUL")
		}
	}
	if len(req.Metadata) > maxMetadata {
		return nil, "", "", badRequest("metadata", "at most %d metadata entries", maxMetadata)
	}
	for k, v := range req.Metadata {
		if k == "" || len(k) > maxMetadataKey {
			return nil, "", "", badRequest("metadata", "metadata key %q must be 1 to %d characters", k, maxMetadataKey)
		}
		if len(v) > maxMetadataVal {
			return nil, "", "", badRequest("metadata."+k, "metadata value longer than %d characters", maxMetadataVal)
		}
	}
	sp := &spec{Resources: res, Env: req.Env, Mounts: req.HostMounts}
	m.imageDefaults(img, sp)
	for i, hm := range req.HostMounts {
		if !filepath.IsAbs(hm.Source) || !filepath.IsAbs(hm.Target) || hm.Target == "/" {
			return nil, "", "", badRequest(fmt.Sprintf("host_mounts[%d]", i), "mounts need absolute source and target paths other than /")
		}
		if st, err := os.Stat(hm.Source); err != nil || !(st.IsDir() || st.Mode().IsRegular()) {
			return nil, "", "", badRequest(fmt.Sprintf("host_mounts[%d].source", i), "%s is not a directory or a file", hm.Source)
		}
	}
	if rt != "process" {
		pol, err := network.Normalize(req.Network)
		var fe *network.FieldError
		if errors.As(err, &fe) {
			return nil, "", "", badRequest(fe.Field, "%s", fe.Message)
		}
		sp.Network = pol
	} else if req.Network != nil {
		return nil, "", "", badRequest("network", "the process runtime has no network isolation to configure")
	}
	if err := validateStartup(req, sp); err != nil {
		return nil, "", "", err
	}
	if len(sp.Ports) > 0 && sp.Network == nil {
		return nil, "", "", badRequest("startup.ports", "the process runtime cannot expose ports")
	}
	if t := req.TimeoutSeconds; t != nil {
		if *t < 0 {
			return nil, "", "", badRequest("timeout_seconds", "timeout_seconds must be 0 (no limit) or positive, got %d", *t)
		}
		sp.TimeoutSeconds = *t
	}
	switch req.IdleAction {
	case "", "stop":
	case "pause":
		if _, err := checkpointer(m.cfg.Runtimes[rt]); err != nil {
			return nil, "", "", badRequest("idle_action", "%v; use idle_action stop", err)
		}
		sp.IdleAction = "pause"
	default:
		return nil, "", "", badRequest("idle_action", "idle_action must be stop or pause, got %q", req.IdleAction)
	}
	if t := req.IdleTimeoutSeconds; t != nil {
		if *t < 0 {
			return nil, "", "", badRequest("idle_timeout_seconds", "idle_timeout_seconds must be 0 (never) or positive, got %d", *t)
		}
		sp.IdleTimeoutSeconds = *t
	}
	return sp, img, rt, nil
}

func (m *Manager) imageNames() []string {
	var names []string
	for _, i := range m.cfg.Images.List() {
		names = append(names, i.Name)
	}
	return names
}

// HostMemoryMB is the host's memory in MB (0 if it cannot tell).
func HostMemoryMB() int { return hostMemoryMB() }

// hostMemoryMB reads MemTotal, or 0 if it cannot.
func hostMemoryMB() int {
	var kb int
	b, err := readFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &kb)
		}
	}
	return kb / 1024
}

// imageDefaults applies what an image's config says about running it: its
// env under the sandbox's own, its working directory and user as the
// defaults of every exec and command.
func (m *Manager) imageDefaults(img string, sp *spec) {
	i, err := m.cfg.Images.Get(img)
	if err != nil || i.Config == nil {
		return
	}
	c := i.Config
	if len(c.Env) > 0 {
		env := map[string]string{}
		for _, kv := range c.Env {
			if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
				env[k] = v
			}
		}
		maps.Copy(env, sp.Env)
		sp.Env = env
	}
	sp.Workdir, sp.User = c.WorkingDir, c.User
}
