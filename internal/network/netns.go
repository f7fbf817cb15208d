package network

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nsDir is where named network namespaces live, as with `ip netns`.
const nsDir = "/var/run/netns"

// nsPrefix names warren's namespaces; hostPrefix its host-side veths.
// A node with an id of its own (UseNode) has its own, so that nodes
// sharing a host never take each other's for orphans.
var (
	nsPrefix   = "warren-"
	hostPrefix = "wh"
)

// UseNode names this process's namespaces, veths and firewall table
// after node tag, so that several nodes can share one host (each with a
// subnet of its own). Call it before New; "" keeps the names of a node
// alone on its host.
func UseNode(tag string) {
	nsPrefix, hostPrefix, tableName = "warren-", "wh", "warren"
	if tag != "" {
		sum := sha256.Sum256([]byte(tag))
		nsPrefix = "warren." + tag + "."
		// Interface names hold 15 bytes: "wx", 4 of the tag's hash, 5
		// of the slot.
		hostPrefix = "wx" + hex.EncodeToString(sum[:2])
		tableName = "warren-" + tag
	}
	table.Name, table6.Name = tableName, tableName
}

// slotAddrs returns the /30 of a slot: the host side (the sandbox's
// gateway) and the sandbox's address.
func slotAddrs(subnet netip.Prefix, slot int) (gateway, addr netip.Addr) {
	base := subnet.Addr().As4()
	n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	n += uint32(slot) * 4
	gw := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n + 1)})
	sb := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n + 2)})
	return gw, sb
}

func hostLink(slot int) string { return fmt.Sprintf("%s%05x", hostPrefix, slot) }

// NSPath is the path of a sandbox's network namespace.
func NSPath(id string) string { return filepath.Join(nsDir, nsPrefix+id) }

// createNamespace makes a named, empty network namespace without switching
// the caller's: the work happens on a locked thread that is thrown away.
func createNamespace(id string) error {
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", nsDir, err)
	}
	errc := make(chan error, 1)
	go func() {
		// This thread's namespace changes; never give it back to the
		// scheduler.
		goruntime.LockOSThread()
		h, err := netns.NewNamed(nsPrefix + id)
		if err == nil {
			h.Close()
			// Sandboxes have no IPv6: interfaces that arrive in this
			// namespace get none, so no link-local address reaches the
			// host. Loopback keeps ::1, which stays inside.
			err = disableIPv6("default")
			if err == nil {
				err = rootlessSockets()
			}
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		return fmt.Errorf("create network namespace for %s: %w", id, err)
	}
	return nil
}

// deleteNamespace unmounts and removes a named namespace.
func deleteNamespace(id string) error {
	p := NSPath(id)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// plumb creates the veth pair for a slot, moves one end into the
// namespace as eth0, and addresses and routes both ends.
func plumb(id string, slot int, gw, addr netip.Addr) error {
	ns, err := netns.GetFromPath(NSPath(id))
	if err != nil {
		return fmt.Errorf("open namespace of %s: %w", id, err)
	}
	defer ns.Close()
	host := hostLink(slot)
	peer := "wp" + host[2:]
	_ = deleteLink(host) // a leftover from a crash
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: 1500}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", host, err)
	}
	peerLink, err := netlink.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("find veth peer %s: %w", peer, err)
	}
	if err := netlink.LinkSetNsFd(peerLink, int(ns)); err != nil {
		return fmt.Errorf("move veth into namespace: %w", err)
	}
	hostL, err := netlink.LinkByName(host)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", host, err)
	}
	if err := disableIPv6(host); err != nil {
		return err
	}
	if err := netlink.AddrAdd(hostL, &netlink.Addr{IPNet: ipNet(gw, 30)}); err != nil {
		return fmt.Errorf("address %s: %w", host, err)
	}
	if err := netlink.LinkSetUp(hostL); err != nil {
		return fmt.Errorf("bring up %s: %w", host, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netlink in namespace: %w", err)
	}
	defer h.Close()
	inner, err := h.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("find %s in namespace: %w", peer, err)
	}
	if err := h.LinkSetName(inner, "eth0"); err != nil {
		return fmt.Errorf("rename %s: %w", peer, err)
	}
	if err := inNamespace(id, func() error { return disableIPv6("eth0") }); err != nil {
		return err
	}
	if err := h.AddrAdd(inner, &netlink.Addr{IPNet: ipNet(addr, 30)}); err != nil {
		return fmt.Errorf("address eth0: %w", err)
	}
	if err := h.LinkSetUp(inner); err != nil {
		return fmt.Errorf("bring up eth0: %w", err)
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: inner.Attrs().Index, Gw: net.IP(gw.AsSlice())}); err != nil {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// readdress gives a sandbox's surviving links back the address and route
// gVisor took from eth0 when it adopted it. It fails, changing nothing
// that matters, when the links or namespace are not there to reuse.
func readdress(id string, slot int, gw, addr netip.Addr) error {
	hostL, err := netlink.LinkByName(hostLink(slot))
	if err != nil || hostL.Attrs().OperState == netlink.OperDown {
		return fmt.Errorf("no host link to reuse")
	}
	ns, err := netns.GetFromPath(NSPath(id))
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	inner, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := h.AddrAdd(inner, &netlink.Addr{IPNet: ipNet(addr, 30)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("address eth0: %w", err)
	}
	if err := h.LinkSetUp(inner); err != nil {
		return err
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: inner.Attrs().Index, Gw: net.IP(gw.AsSlice())}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("default route: %w", err)
	}
	return nil
}

// rootlessSockets lets every user of the calling thread's namespace bind
// low ports and ping. Root of a runc sandbox's user namespace holds no
// capability over a namespace the host created, so this is how it still
// serves on port 80 and pings.
func rootlessSockets() error {
	for file, value := range map[string]string{
		"/proc/sys/net/ipv4/ip_unprivileged_port_start": "0",
		"/proc/sys/net/ipv4/ping_group_range":           "0 2147483647",
	} {
		if err := os.WriteFile(file, []byte(value), 0o644); err != nil {
			return fmt.Errorf("set %s: %w", file, err)
		}
	}
	return nil
}

// MountSysfs mounts at target a read-only sysfs that shows the sandbox's
// own network namespace, for a sandbox that cannot mount one itself (in
// a user namespace that does not own its network namespace).
func MountSysfs(id, target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", target, err)
	}
	return inNamespace(id, func() error {
		if err := unix.Mount("sysfs", target, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount sysfs for %s: %w", id, err)
		}
		return nil
	})
}

// disableIPv6 turns IPv6 off for an interface (or "default", for those
// created later) in the calling thread's network namespace.
func disableIPv6(iface string) error {
	p := filepath.Join("/proc/sys/net/ipv6/conf", iface, "disable_ipv6")
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("disable IPv6 on %s: %w", iface, err)
	}
	return nil
}

// inNamespace runs fn on a thread inside a sandbox's network namespace.
// The thread is never given back to the scheduler.
func inNamespace(id string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		ns, err := netns.GetFromPath(NSPath(id))
		if err != nil {
			errc <- fmt.Errorf("open namespace of %s: %w", id, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter namespace of %s: %w", id, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, 32)}
}

func deleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	return netlink.LinkDel(l)
}

// leftovers lists warren's namespaces and host veths on this machine.
func leftovers() (namespaces []string, links []string) {
	entries, _ := os.ReadDir(nsDir)
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), nsPrefix); ok {
			namespaces = append(namespaces, id)
		}
	}
	all, _ := netlink.LinkList()
	for _, l := range all {
		if strings.HasPrefix(l.Attrs().Name, hostPrefix) && l.Type() == "veth" {
			links = append(links, l.Attrs().Name)
		}
	}
	return namespaces, links
}
