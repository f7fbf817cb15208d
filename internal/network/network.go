package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultSubnet holds every sandbox's /30.
var DefaultSubnet = netip.MustParsePrefix("10.88.0.0/16")

// Config configures the network manager.
type Config struct {
	// StateDir keeps one small file per sandbox network, so a restarted
	// warren knows which addresses are taken.
	StateDir string
	Subnet   netip.Prefix
	// Upstream is the DNS server sandboxes' queries are forwarded to
	// (host:port); by default the host's first nameserver.
	Upstream string
	Log      *slog.Logger
	// InterceptPort, if set, is where the egress proxy listens: the HTTPS
	// of sandboxes marked by Intercept is redirected there.
	InterceptPort uint16
}

// Info is what a sandbox's network looks like.
type Info struct {
	Slot    int        `json:"slot"`
	Address netip.Addr `json:"address"`
	Gateway netip.Addr `json:"gateway"`
	Policy  Policy     `json:"policy"`
	// Intercept sends the sandbox's HTTPS through the egress proxy.
	Intercept bool `json:"intercept,omitempty"`
}

// Manager owns sandbox networks on this host.
type Manager struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	nets      map[string]*Info
	fw        map[string]*sandboxRules
	resolvers map[string]*resolver
}

// New prepares the host (IP forwarding), loads the networks a previous run
// left, and programs the firewall for them.
func New(cfg Config) (*Manager, error) {
	if !cfg.Subnet.IsValid() {
		cfg.Subnet = DefaultSubnet
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Upstream == "" {
		cfg.Upstream = hostNameserver()
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create network state dir: %w", err)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return nil, fmt.Errorf("enable IP forwarding: %w", err)
	}
	m := &Manager{cfg: cfg, log: cfg.Log, nets: map[string]*Info{}, fw: map[string]*sandboxRules{}, resolvers: map[string]*resolver{}}
	entries, _ := os.ReadDir(cfg.StateDir)
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		b, err := os.ReadFile(filepath.Join(cfg.StateDir, e.Name()))
		var info Info
		if err != nil || json.Unmarshal(b, &info) != nil {
			continue
		}
		r, err := compile(&info.Policy)
		if err != nil {
			continue
		}
		m.nets[id] = &info
		m.fw[id] = &sandboxRules{slot: info.Slot, info: &info, rules: r, resolved: map[netip.Addr]time.Time{}}
		if _, err := os.Stat(NSPath(id)); err == nil {
			if res, err := m.startResolver(id, &info); err == nil {
				m.resolvers[id] = res
			} else {
				m.log.Warn("restart sandbox resolver", "sandbox.id", id, "err", err)
			}
		}
	}
	if err := program(cfg.Subnet, cfg.InterceptPort, m.fw); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) statePath(id string) string { return filepath.Join(m.cfg.StateDir, id+".json") }

// Setup creates a sandbox's namespace, wires it, applies its policy and
// starts its resolver. On error it leaves nothing behind. Only the address
// choice holds the manager's lock, so creates set up their networks in
// parallel.
func (m *Manager) Setup(id string, p *Policy) (info *Info, err error) {
	pol, err := Normalize(p)
	if err != nil {
		return nil, err
	}
	r, _ := compile(pol)
	m.mu.Lock()
	slot, err := m.freeSlotLocked()
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	gw, addr := slotAddrs(m.cfg.Subnet, slot)
	info = &Info{Slot: slot, Address: addr, Gateway: gw, Policy: *pol}
	// Record first: a crash from here on leaves a file the sweep finds.
	if err := m.save(id, info); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	m.nets[id] = info
	fw := &sandboxRules{slot: slot, info: info, rules: r, resolved: map[netip.Addr]time.Time{}}
	m.fw[id] = fw
	m.mu.Unlock()
	defer func() {
		if err != nil {
			_ = m.Teardown(id)
		}
	}()
	if err := createNamespace(id); err != nil {
		return nil, err
	}
	if err := plumb(id, slot, gw, addr); err != nil {
		return nil, err
	}
	if err := installSandbox(id, fw, false); err != nil {
		return nil, err
	}
	res, err := m.startResolver(id, info)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.resolvers[id] = res
	m.mu.Unlock()
	return info, nil
}

func (m *Manager) freeSlotLocked() (int, error) {
	used := map[int]bool{}
	for _, n := range m.nets {
		used[n.Slot] = true
	}
	max := 1 << (32 - m.cfg.Subnet.Bits()) / 4
	for s := 0; s < max; s++ {
		if !used[s] {
			return s, nil
		}
	}
	return 0, errors.New("no free sandbox addresses left in " + m.cfg.Subnet.String())
}

// Get returns a sandbox's network, or nil.
func (m *Manager) Get(id string) *Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.nets[id]; n != nil {
		cp := *n
		return &cp
	}
	return nil
}

// Rewire gives a sandbox's namespace a fresh veth pair with its same
// addresses. gVisor takes the addresses off the interface it adopts, so a
// sandbox restored from a checkpoint needs the interface set up again.
func (m *Manager) Rewire(id string) error {
	m.mu.Lock()
	info := m.nets[id]
	m.mu.Unlock()
	if info == nil {
		return fmt.Errorf("sandbox %s has no network", id)
	}
	// Links that survived (a pause on this boot) need only their address
	// and route back, which gVisor took: a few netlink calls, not a new
	// pair and a new resolver.
	if readdress(id, info.Slot, info.Gateway, info.Address) == nil {
		m.mu.Lock()
		running := m.resolvers[id] != nil
		m.mu.Unlock()
		if running {
			return nil
		}
	}
	m.mu.Lock()
	old := m.resolvers[id]
	delete(m.resolvers, id)
	m.mu.Unlock()
	// The resolver listened on the old host address; it starts again.
	if old != nil {
		old.close()
	}
	if err := deleteLink(hostLink(info.Slot)); err != nil {
		return fmt.Errorf("remove old veth: %w", err)
	}
	// After the host restarts, the namespace is gone too.
	if _, err := os.Stat(NSPath(id)); err != nil {
		if err := createNamespace(id); err != nil {
			return err
		}
	}
	if err := plumb(id, info.Slot, info.Gateway, info.Address); err != nil {
		return err
	}
	res, err := m.startResolver(id, info)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.resolvers[id] = res
	m.mu.Unlock()
	return nil
}

// SetPolicy changes a running sandbox's policy at once.
func (m *Manager) SetPolicy(id string, p *Policy) (*Policy, error) {
	pol, err := Normalize(p)
	if err != nil {
		return nil, err
	}
	r, _ := compile(pol)
	m.mu.Lock()
	defer m.mu.Unlock()
	info := m.nets[id]
	if info == nil {
		return nil, fmt.Errorf("sandbox %s has no network", id)
	}
	fw := &sandboxRules{slot: info.Slot, info: info, rules: r, resolved: map[netip.Addr]time.Time{}}
	if err := installSandbox(id, fw, true); err != nil {
		return nil, err
	}
	info.Policy = *pol
	m.fw[id] = fw
	if err := m.save(id, info); err != nil {
		return nil, err
	}
	// Connections opened under the old policy would ride on as
	// established; forget them, so their next packet meets the new rules.
	if err := forgetConnections(info.Address); err != nil {
		m.log.Warn("flush connections after a policy change", "sandbox.id", id, "err", err)
	}
	return pol, nil
}

// Intercept sends a sandbox's HTTPS connections through the egress proxy,
// or stops; new connections only.
func (m *Manager) Intercept(id string, on bool) error {
	if m.cfg.InterceptPort == 0 {
		return errors.New("this node has no egress proxy")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	info := m.nets[id]
	if info == nil {
		return fmt.Errorf("sandbox %s has no network", id)
	}
	if info.Intercept == on {
		return nil
	}
	c, err := newConn()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	key := []nftables.SetElement{{Key: ifnameKey(hostLink(info.Slot))}}
	if on {
		err = c.SetAddElements(intercepted, key)
	} else {
		err = c.SetDeleteElements(intercepted, key)
	}
	if err == nil {
		err = c.Flush()
	}
	if err != nil {
		return fmt.Errorf("intercept the HTTPS of %s: %w", id, err)
	}
	info.Intercept = on
	return m.save(id, info)
}

// Owner is the sandbox whose address src is.
func (m *Manager) Owner(src netip.Addr) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, n := range m.nets {
		if n.Address == src {
			return id, true
		}
	}
	return "", false
}

// Permits says whether a sandbox's policy lets it reach dst now, as its
// firewall chain would: for connections warren makes on its behalf.
func (m *Manager) Permits(id string, dst netip.Addr) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	fw := m.fw[id]
	if fw == nil {
		return false
	}
	r := fw.rules
	for _, p := range r.denyNets {
		if p.Contains(dst) {
			return false
		}
	}
	switch r.egress {
	case EgressDefault:
		for _, p := range blockedByDefault {
			if p.Contains(dst) {
				return false
			}
		}
		return true
	case EgressAllowlist:
		for _, p := range r.allowNets {
			if p.Contains(dst) {
				return true
			}
		}
		exp, ok := fw.resolved[dst]
		return ok && time.Now().Before(exp)
	}
	return false
}

// forgetConnections drops the connection-tracking entries a sandbox
// address started.
func forgetConnections(addr netip.Addr) error {
	f := &netlink.ConntrackFilter{}
	if err := f.AddIP(netlink.ConntrackOrigSrcIP, net.IP(addr.AsSlice())); err != nil {
		return err
	}
	_, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, f)
	return err
}

// save records a sandbox's network so a restarted warren knows it.
func (m *Manager) save(id string, info *Info) error {
	b, _ := json.Marshal(info)
	if err := os.WriteFile(m.statePath(id), b, 0o600); err != nil {
		return fmt.Errorf("record network of %s: %w", id, err)
	}
	return nil
}

// Teardown removes a sandbox's network: resolver, rules, veth, namespace
// and state file. It is idempotent; until it succeeds the sandbox keeps its
// address, so a later sweep finishes what it could not.
func (m *Manager) Teardown(id string) error {
	m.mu.Lock()
	res := m.resolvers[id]
	delete(m.resolvers, id)
	info := m.nets[id]
	delete(m.fw, id)
	m.mu.Unlock()
	if res != nil {
		res.close()
	}
	var errs []error
	if info != nil {
		if err := uninstallSandbox(id, info.Slot); err != nil {
			errs = append(errs, err)
		}
		if err := deleteLink(hostLink(info.Slot)); err != nil {
			errs = append(errs, fmt.Errorf("delete veth: %w", err))
		}
	}
	if err := deleteNamespace(id); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	m.mu.Lock()
	if m.nets[id] == info {
		delete(m.nets, id)
	}
	m.mu.Unlock()
	if err := os.Remove(m.statePath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Sweep removes networks, namespaces and veths that belong to no sandbox
// keep accepts.
func (m *Manager) Sweep(keep func(id string) bool) {
	m.mu.Lock()
	ids := make([]string, 0, len(m.nets))
	for id := range m.nets {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	for _, id := range ids {
		if !keep(id) {
			m.log.Warn("sweep: removing orphan network", "sandbox.id", id)
			_ = m.Teardown(id)
		}
	}
	namespaces, links := leftovers()
	for _, id := range namespaces {
		if !keep(id) {
			m.log.Warn("sweep: removing orphan namespace", "sandbox.id", id)
			_ = deleteNamespace(id)
		}
	}
	m.mu.Lock()
	owned := map[string]bool{}
	for _, n := range m.nets {
		owned[hostLink(n.Slot)] = true
	}
	m.mu.Unlock()
	for _, l := range links {
		if !owned[l] {
			m.log.Warn("sweep: removing orphan veth", "link", l)
			_ = deleteLink(l)
		}
	}
}

// Close stops the resolvers; namespaces and rules stay for the sandboxes,
// which keep running.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, r := range m.resolvers {
		r.close()
		delete(m.resolvers, id)
	}
}

// hostNameserver reads the first nameserver of the host's resolv.conf.
func hostNameserver() string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "nameserver" {
				if a, err := netip.ParseAddr(f[1]); err == nil {
					return netip.AddrPortFrom(a, 53).String()
				}
			}
		}
	}
	return "1.1.1.1:53"
}
