package network

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// tableName is warren's nftables table (family ip). warren owns it whole.
var tableName = "warren"

// sandboxRules is what the firewall needs to know of one sandbox.
type sandboxRules struct {
	slot  int
	info  *Info // its addresses
	rules *rules
	// resolved holds addresses the DNS resolver answered for allowed
	// domains, with their expiry; at most maxResolved of them.
	resolved map[netip.Addr]time.Time
}

// remember records answered addresses, forgetting expired ones first and
// the soonest to expire when there are too many.
func (sb *sandboxRules) remember(addrs []netip.Addr, until time.Time) {
	now := time.Now()
	for a, exp := range sb.resolved {
		if exp.Before(now) {
			delete(sb.resolved, a)
		}
	}
	for _, a := range addrs {
		sb.resolved[a] = until
	}
	for len(sb.resolved) > maxResolved {
		var oldest netip.Addr
		var first time.Time
		for a, exp := range sb.resolved {
			if first.IsZero() || exp.Before(first) {
				oldest, first = a, exp
			}
		}
		delete(sb.resolved, oldest)
	}
}

// ifname matches an interface name exactly, or as a prefix when prefix.
func ifname(key expr.MetaKey, name string, op expr.CmpOp, prefix bool) []expr.Any {
	data := []byte(name)
	if !prefix {
		data = append(data, 0) // names are NUL-padded; match the whole
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: data},
	}
}

func ctEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: le32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: le32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: le32(0)},
	}
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }

func daddrIn(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
	}
}

func l4dport(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(port >> 8), byte(port)}},
	}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// intervalElements turns prefixes into interval-set elements.
func intervalElements(pfxs []netip.Prefix) []nftables.SetElement {
	var els []nftables.SetElement
	for _, p := range pfxs {
		start := p.Masked().Addr().As4()
		n := uint32(start[0])<<24 | uint32(start[1])<<16 | uint32(start[2])<<8 | uint32(start[3])
		end := uint64(n) + (uint64(1) << (32 - p.Bits()))
		els = append(els, nftables.SetElement{Key: start[:]})
		if end <= 0xffffffff {
			e := uint32(end)
			els = append(els, nftables.SetElement{Key: []byte{byte(e >> 24), byte(e >> 16), byte(e >> 8), byte(e)}, IntervalEnd: true})
		}
	}
	return els
}

// nlBuffer is the netlink receive buffer for nftables batches. The whole
// table is one batch and the kernel acknowledges every message in it; the
// default buffer overflows (ENOBUFS) at a few dozen sandboxes.
const nlBuffer = 64 << 20

// bigBuffers raises the socket's buffers past the system default; as
// root, SO_RCVBUFFORCE ignores net.core.rmem_max.
func bigBuffers(c *netlink.Conn) error {
	_ = c.SetOption(netlink.CapAcknowledge, true)
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, nlBuffer)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, nlBuffer)
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return c.SetReadBuffer(nlBuffer)
	}
	return nil
}

func newConn() (*nftables.Conn, error) {
	return nftables.New(nftables.WithSockOptions(bigBuffers))
}

// The table's shape: base chains that send each sandbox's traffic, by the
// host end of its veth, through a verdict map to that sandbox's own chain.
// A sandbox's chain and sets change in a batch of their own, so creating,
// changing or removing one sandbox costs the same with 1 or 1,000 others.
var (
	table   = &nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4}
	blocked = &nftables.Set{Table: table, Name: "blocked", KeyType: nftables.TypeIPAddr, Interval: true}
	routes  = &nftables.Set{Table: table, Name: "sandboxes", KeyType: nftables.TypeIFName, DataType: nftables.TypeVerdict, IsMap: true}
	// sources pairs each sandbox's interface with its one address:
	// anything else arriving on that interface is spoofed.
	sources = &nftables.Set{Table: table, Name: "sources", KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr), Concatenation: true}
	// resolvers pairs each sandbox's interface with its gateway, where
	// its own DNS resolver listens; no other host address is open to it.
	resolvers = &nftables.Set{Table: table, Name: "resolvers", KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr), Concatenation: true}
	// intercepted holds the interfaces of sandboxes whose HTTPS goes
	// through warren's egress proxy (they hold secrets with allowed
	// hosts).
	intercepted = &nftables.Set{Table: table, Name: "intercepted", KeyType: nftables.TypeIFName}
	// table6 drops all IPv6 from and to sandboxes. Sandboxes have no IPv6
	// (it is disabled on both ends of their links); this is the backstop.
	table6 = &nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv6}
)

// maxResolved bounds how many answered addresses one sandbox's firewall
// holds open at once.
const maxResolved = 4096

// Registers for concatenated lookups: 32-bit registers, the first at 8.
const (
	reg32Iface = 8  // an interface name takes four of them
	reg32Addr  = 12 // the address follows it
)

// ifaceAnd loads the input interface and an IPv4 header field (offset 12
// source, 16 destination) for a lookup in a concatenated set.
func ifaceAnd(offset uint32, set *nftables.Set, invert bool) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg32Iface},
		&expr.Payload{DestRegister: reg32Addr, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4},
		&expr.Lookup{SourceRegister: reg32Iface, SetName: set.Name, SetID: set.ID, Invert: invert},
	}
}

// pairKey is a concatenated (interface, address) key.
func pairKey(iface string, a netip.Addr) []byte {
	b := a.As4()
	return append(ifnameKey(iface), b[:]...)
}

func sandboxChain(id string) *nftables.Chain { return &nftables.Chain{Name: "sb_" + id, Table: table} }

func denySet(slot int) *nftables.Set {
	return &nftables.Set{Table: table, Name: fmt.Sprintf("deny_%05x", slot), KeyType: nftables.TypeIPAddr, Interval: true}
}

func allowSet(slot int) *nftables.Set {
	return &nftables.Set{Table: table, Name: fmt.Sprintf("allow_%05x", slot), KeyType: nftables.TypeIPAddr, Interval: true}
}

func resolvedSet(slot int) *nftables.Set {
	return &nftables.Set{Table: table, Name: fmt.Sprintf("dyn_%05x", slot), KeyType: nftables.TypeIPAddr, HasTimeout: true, Size: maxResolved}
}

// ifnameKey is an interface name as the kernel keys it: NUL-padded.
func ifnameKey(name string) []byte {
	k := make([]byte, 16)
	copy(k, name)
	return k
}

// program writes the whole table, with every given sandbox, in one batch.
// It runs at startup; later changes touch one sandbox at a time.
func program(subnet netip.Prefix, interceptPort uint16, sandboxes map[string]*sandboxRules) error {
	c, err := newConn()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	// Add-then-delete clears an old table whether or not one exists.
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	if err := c.AddSet(blocked, intervalElements(blockedByDefault)); err != nil {
		return fmt.Errorf("add blocked set: %w", err)
	}
	if err := c.AddSet(routes, nil); err != nil {
		return fmt.Errorf("add sandbox map: %w", err)
	}
	for _, set := range []*nftables.Set{sources, resolvers, intercepted} {
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("add %s set: %w", set.Name, err)
		}
	}

	accept := nftables.ChainPolicyAccept
	// Before connection tracking sees it, a packet from a sandbox must
	// come from that sandbox's own address: a spoofed one could slip into
	// another's connections or reach what the other may.
	pre := c.AddChain(&nftables.Chain{Name: "antispoof", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	in := c.AddChain(&nftables.Chain{Name: "input", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	nat := c.AddChain(&nftables.Chain{Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	rule := func(ch *nftables.Chain, e []expr.Any) { c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: e}) }

	// Replies to what a sandbox (or the host) started pass.
	rule(fwd, cat(ifname(expr.MetaKeyIIFNAME, hostPrefix, expr.CmpOpEq, true), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)}))
	rule(fwd, cat(ifname(expr.MetaKeyOIFNAME, hostPrefix, expr.CmpOpEq, true), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)}))
	// New traffic from a sandbox: its own chain, found by its interface.
	rule(fwd, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: routes.Name, SetID: routes.ID, IsDestRegSet: true, DestRegister: 0},
	})
	// Anything else from or to a sandbox interface: refused. This covers
	// one sandbox opening a connection to another.
	rule(fwd, cat(ifname(expr.MetaKeyIIFNAME, hostPrefix, expr.CmpOpEq, true), []expr.Any{verdict(expr.VerdictDrop)}))
	rule(fwd, cat(ifname(expr.MetaKeyOIFNAME, hostPrefix, expr.CmpOpEq, true), []expr.Any{verdict(expr.VerdictDrop)}))

	rule(pre, cat(ifname(expr.MetaKeyIIFNAME, hostPrefix, expr.CmpOpEq, true), ifaceAnd(12, sources, true), []expr.Any{verdict(expr.VerdictDrop)}))

	// The host itself: only the sandbox's own DNS resolver, and replies.
	rule(in, cat(ifname(expr.MetaKeyIIFNAME, hostPrefix, expr.CmpOpEq, true), ctEstablished(), []expr.Any{verdict(expr.VerdictAccept)}))
	for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rule(in, cat(ifname(expr.MetaKeyIIFNAME, hostPrefix, expr.CmpOpEq, true), l4dport(proto, 53), ifaceAnd(16, resolvers, false), []expr.Any{verdict(expr.VerdictAccept)}))
	}
	if interceptPort != 0 {
		// An intercepted sandbox's HTTPS goes to the egress proxy, at
		// its gateway: the only other host port open to it.
		pre := c.AddChain(&nftables.Chain{Name: "intercept", Table: table, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
		rule(pre, cat(
			[]expr.Any{
				&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
				&expr.Lookup{SourceRegister: 1, SetName: intercepted.Name, SetID: intercepted.ID},
			},
			l4dport(unix.IPPROTO_TCP, 443),
			[]expr.Any{
				&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(interceptPort)},
				&expr.Redir{RegisterProtoMin: 1},
			}))
		rule(in, cat(ifname(expr.MetaKeyIIFNAME, hostPrefix, expr.CmpOpEq, true), l4dport(unix.IPPROTO_TCP, interceptPort),
			ifaceAnd(16, resolvers, false), []expr.Any{verdict(expr.VerdictAccept)}))
	}
	rule(in, cat(ifname(expr.MetaKeyIIFNAME, hostPrefix, expr.CmpOpEq, true), []expr.Any{verdict(expr.VerdictDrop)}))

	// Sandboxes reach the world from the host's address.
	sub := subnet.Addr().As4()
	mask := net4Mask(subnet.Bits())
	rule(nat, cat(
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: sub[:]},
		},
		ifname(expr.MetaKeyOIFNAME, hostPrefix, expr.CmpOpNeq, true),
		[]expr.Any{&expr.Masq{}},
	))
	for id, sb := range sandboxes {
		if err := addSandbox(c, id, sb); err != nil {
			return err
		}
	}
	programIPv6(c)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("program nftables: %w", err)
	}
	return nil
}

// programIPv6 queues the IPv6 table: nothing from or to a sandbox.
func programIPv6(c *nftables.Conn) {
	c.AddTable(table6)
	c.DelTable(table6)
	c.AddTable(table6)
	accept := nftables.ChainPolicyAccept
	drop := func(ch *nftables.Chain, key expr.MetaKey) {
		c.AddRule(&nftables.Rule{Table: table6, Chain: ch, Exprs: cat(ifname(key, hostPrefix, expr.CmpOpEq, true), []expr.Any{verdict(expr.VerdictDrop)})})
	}
	for _, hook := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"input", nftables.ChainHookInput}, {"forward", nftables.ChainHookForward}, {"prerouting", nftables.ChainHookPrerouting}} {
		ch := c.AddChain(&nftables.Chain{Name: hook.name, Table: table6, Type: nftables.ChainTypeFilter,
			Hooknum: hook.hook, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		drop(ch, expr.MetaKeyIIFNAME)
		if hook.name == "forward" {
			drop(ch, expr.MetaKeyOIFNAME)
		}
	}
}

// addSandbox queues a sandbox's chain, its sets and its map entry.
func addSandbox(c *nftables.Conn, id string, sb *sandboxRules) error {
	chain := c.AddChain(sandboxChain(id))
	rule := func(e []expr.Any) { c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: e}) }
	r := sb.rules
	if len(r.denyNets) > 0 {
		deny := denySet(sb.slot)
		if err := c.AddSet(deny, intervalElements(r.denyNets)); err != nil {
			return fmt.Errorf("add deny set: %w", err)
		}
		rule(cat(daddrIn(deny), []expr.Any{verdict(expr.VerdictDrop)}))
	}
	switch r.egress {
	case EgressNone:
	case EgressDefault:
		rule(cat(daddrIn(blocked), []expr.Any{verdict(expr.VerdictDrop)}))
		rule([]expr.Any{verdict(expr.VerdictAccept)})
	case EgressAllowlist:
		if len(r.allowNets) > 0 {
			allow := allowSet(sb.slot)
			if err := c.AddSet(allow, intervalElements(r.allowNets)); err != nil {
				return fmt.Errorf("add allow set: %w", err)
			}
			rule(cat(daddrIn(allow), []expr.Any{verdict(expr.VerdictAccept)}))
		}
		dyn := resolvedSet(sb.slot)
		var els []nftables.SetElement
		now := time.Now()
		for addr, exp := range sb.resolved {
			if left := exp.Sub(now); left > time.Second {
				a := addr.As4()
				els = append(els, nftables.SetElement{Key: a[:], Timeout: left})
			}
		}
		if err := c.AddSet(dyn, els); err != nil {
			return fmt.Errorf("add resolved set: %w", err)
		}
		rule(cat(daddrIn(dyn), []expr.Any{verdict(expr.VerdictAccept)}))
	}
	rule([]expr.Any{verdict(expr.VerdictDrop)})
	link := hostLink(sb.slot)
	if err := c.SetAddElements(sources, []nftables.SetElement{{Key: pairKey(link, sb.info.Address)}}); err != nil {
		return err
	}
	if err := c.SetAddElements(resolvers, []nftables.SetElement{{Key: pairKey(link, sb.info.Gateway)}}); err != nil {
		return err
	}
	if sb.info.Intercept {
		if err := c.SetAddElements(intercepted, []nftables.SetElement{{Key: ifnameKey(link)}}); err != nil {
			return err
		}
	}
	return c.SetAddElements(routes, []nftables.SetElement{{
		Key:         ifnameKey(link),
		VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: chain.Name},
	}})
}

// removeSandbox queues the removal of whatever of a sandbox's chain, sets
// and map entry exist now. It reads the table first, so it also cleans up
// after a batch that never landed.
func removeSandbox(c *nftables.Conn, id string, slot int) error {
	key := ifnameKey(hostLink(slot))
	for _, set := range []*nftables.Set{routes, sources, resolvers, intercepted} {
		els, err := c.GetSetElements(set)
		if err != nil {
			return fmt.Errorf("read %s: %w", set.Name, err)
		}
		for _, e := range els {
			// Map entries are keyed by the interface; the pair sets by
			// the interface and an address.
			if len(e.Key) >= len(key) && string(e.Key[:len(key)]) == string(key) {
				if err := c.SetDeleteElements(set, []nftables.SetElement{{Key: e.Key}}); err != nil {
					return err
				}
			}
		}
	}
	// Listing is the way to ask whether one chain exists: a lookup of a
	// missing chain fails with an error that cannot be told apart.
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return fmt.Errorf("list chains: %w", err)
	}
	for _, ch := range chains {
		if ch.Table.Name == tableName && ch.Name == sandboxChain(id).Name {
			c.FlushChain(ch)
			c.DelChain(ch)
		}
	}
	sets, err := c.GetSets(table)
	if err != nil {
		return fmt.Errorf("list sets: %w", err)
	}
	mine := map[string]bool{denySet(slot).Name: true, allowSet(slot).Name: true, resolvedSet(slot).Name: true}
	for _, s := range sets {
		if mine[s.Name] {
			c.DelSet(s)
		}
	}
	return nil
}

// installSandbox puts a sandbox's rules in place in one batch, replacing
// any it had when replace is set. A new sandbox has none: its slot was
// freed only once its previous owner's rules were gone, so a create skips
// reading the table.
func installSandbox(id string, sb *sandboxRules, replace bool) error {
	c, err := newConn()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	if replace {
		if err := removeSandbox(c, id, sb.slot); err != nil {
			return err
		}
	}
	if err := addSandbox(c, id, sb); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("program firewall for %s: %w", id, err)
	}
	return nil
}

// uninstallSandbox removes a sandbox's rules, if it has any.
func uninstallSandbox(id string, slot int) error {
	c, err := newConn()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	if err := removeSandbox(c, id, slot); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove firewall of %s: %w", id, err)
	}
	return nil
}

func net4Mask(bits int) []byte {
	m := ^uint32(0) << (32 - bits)
	return []byte{byte(m >> 24), byte(m >> 16), byte(m >> 8), byte(m)}
}

// addResolved lets a sandbox reach addresses its resolver just answered.
func addResolved(slot int, addrs []netip.Addr, ttl time.Duration) error {
	c, err := newConn()
	if err != nil {
		return err
	}
	set := resolvedSet(slot)
	var els []nftables.SetElement
	for _, a := range addrs {
		b := a.As4()
		els = append(els, nftables.SetElement{Key: b[:], Timeout: ttl})
	}
	if err := c.SetAddElements(set, els); err != nil {
		return err
	}
	return c.Flush()
}
