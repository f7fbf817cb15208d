package network

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// How long an answered address stays open. A very short TTL is raised so
// the connection that follows the lookup gets through; a long one is cut,
// and the answer the sandbox caches says so too, so it never holds an
// address longer than its firewall does.
const (
	minAllowTTL  = 60 * time.Second
	maxAnswerTTL = 10 * time.Minute
	// allowGrace keeps an address open a little past the TTL the sandbox
	// was told.
	allowGrace = 30 * time.Second
	// maxAnswerAddrs bounds the addresses one answer may open.
	maxAnswerAddrs = 64
)

// resolver is the DNS server of one sandbox, listening on its gateway.
// Knowing which sandbox asks (by address) lets it answer by that
// sandbox's policy and open the firewall for exactly what it answered.
type resolver struct {
	servers []*dns.Server
}

func (m *Manager) startResolver(id string, info *Info) (*resolver, error) {
	h := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) { m.answer(id, w, req) })
	addr := netip.AddrPortFrom(info.Gateway, 53).String()
	res := &resolver{}
	for _, proto := range []string{"udp", "tcp"} {
		started := make(chan error, 1)
		srv := &dns.Server{Addr: addr, Net: proto, Handler: h, NotifyStartedFunc: func() { started <- nil }}
		go func() {
			if err := srv.ListenAndServe(); err != nil {
				select {
				case started <- err:
				default:
				}
			}
		}()
		select {
		case err := <-started:
			if err != nil {
				res.close()
				return nil, fmt.Errorf("start DNS for %s on %s/%s: %w", id, addr, proto, err)
			}
		case <-time.After(5 * time.Second):
			res.close()
			return nil, fmt.Errorf("start DNS for %s on %s/%s: timed out", id, addr, proto)
		}
		res.servers = append(res.servers, srv)
	}
	return res, nil
}

func (r *resolver) close() {
	for _, s := range r.servers {
		_ = s.Shutdown()
	}
}

func (m *Manager) answer(id string, w dns.ResponseWriter, req *dns.Msg) {
	defer w.Close()
	refuse := func(code int) {
		resp := new(dns.Msg)
		resp.SetRcode(req, code)
		_ = w.WriteMsg(resp)
	}
	if len(req.Question) != 1 {
		refuse(dns.RcodeFormatError)
		return
	}
	name := strings.TrimSuffix(strings.ToLower(req.Question[0].Name), ".")
	m.mu.Lock()
	fw := m.fw[id]
	var r *rules
	var slot int
	var self netip.Addr
	if fw != nil {
		r, slot, self = fw.rules, fw.slot, fw.info.Address
	}
	m.mu.Unlock()
	// Only the sandbox this resolver serves may ask it; the firewall sees
	// to that too.
	if from, ok := remoteAddr(w); !ok || from != self {
		refuse(dns.RcodeRefused)
		return
	}
	if r == nil || r.egress == EgressNone || matchAny(r.denyDomains, name) ||
		(r.egress == EgressAllowlist && !matchAny(r.allowDomains, name)) {
		// Names the policy does not allow do not exist, as far as the
		// sandbox can tell.
		refuse(dns.RcodeNameError)
		return
	}
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	resp, _, err := c.Exchange(req, m.cfg.Upstream)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.Exchange(req, m.cfg.Upstream)
	}
	if err != nil {
		refuse(dns.RcodeServerFailure)
		return
	}
	addrs, ttl := screenAnswer(resp, r)
	if r.egress == EgressAllowlist && len(addrs) > 0 {
		// Open the firewall before the sandbox hears the answer.
		open := ttl + allowGrace
		if err := addResolved(slot, addrs, open); err != nil {
			m.log.Error("allow resolved addresses", "sandbox.id", id, "err", err)
			refuse(dns.RcodeServerFailure)
			return
		}
		m.mu.Lock()
		if fw := m.fw[id]; fw != nil {
			fw.remember(addrs, time.Now().Add(open))
		}
		m.mu.Unlock()
	}
	_ = w.WriteMsg(resp)
}

// screenAnswer makes an upstream answer safe to hand a sandbox, in place:
// A records for addresses the sandbox may never reach (private, loopback,
// link-local and metadata ranges, its deny rules) are dropped unless an
// allow rule names them, so a name cannot rebind a sandbox onto the
// host's network; AAAA records go (sandboxes have no IPv6); every TTL is
// cut to maxAnswerTTL. It returns the addresses left and how long to
// keep them open.
func screenAnswer(resp *dns.Msg, r *rules) ([]netip.Addr, time.Duration) {
	var addrs []netip.Addr
	ttl := minAllowTTL
	keep := resp.Answer[:0]
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h == nil {
			continue
		}
		h.Ttl = min(h.Ttl, uint32(maxAnswerTTL/time.Second))
		switch rec := rr.(type) {
		case *dns.AAAA:
			continue
		case *dns.A:
			ip, ok := netip.AddrFromSlice(rec.A.To4())
			if !ok || !reachable(ip, r) || len(addrs) >= maxAnswerAddrs {
				continue
			}
			addrs = append(addrs, ip)
			ttl = max(ttl, time.Duration(h.Ttl)*time.Second)
		}
		keep = append(keep, rr)
	}
	resp.Answer = keep
	for _, sec := range [][]dns.RR{resp.Ns, resp.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h != nil {
				h.Ttl = min(h.Ttl, uint32(maxAnswerTTL/time.Second))
			}
		}
	}
	return addrs, min(ttl, maxAnswerTTL)
}

// reachable says whether a sandbox with these rules may be told of ip.
func reachable(ip netip.Addr, r *rules) bool {
	for _, p := range r.allowNets {
		if p.Contains(ip) {
			return true
		}
	}
	for _, set := range [][]netip.Prefix{blockedByDefault, r.denyNets} {
		for _, p := range set {
			if p.Contains(ip) {
				return false
			}
		}
	}
	return true
}

// remoteAddr is the address a query came from.
func remoteAddr(w dns.ResponseWriter) (netip.Addr, bool) {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	}
	return netip.Addr{}, false
}
