package network

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// minAllowTTL keeps a resolved address open a little longer than a very
// short DNS TTL, so the connection that follows the lookup gets through.
const minAllowTTL = 60 * time.Second

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
	if fw != nil {
		r, slot = fw.rules, fw.slot
	}
	m.mu.Unlock()
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
	if r.egress == EgressAllowlist {
		var addrs []netip.Addr
		ttl := minAllowTTL
		for _, rr := range resp.Answer {
			if a, ok := rr.(*dns.A); ok {
				if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
					addrs = append(addrs, ip)
				}
				if t := time.Duration(a.Hdr.Ttl) * time.Second; t > ttl {
					ttl = t
				}
			}
		}
		if len(addrs) > 0 {
			// Open the firewall before the sandbox hears the answer.
			if err := addResolved(slot, addrs, ttl); err != nil {
				m.log.Error("allow resolved addresses", "sandbox.id", id, "err", err)
				refuse(dns.RcodeServerFailure)
				return
			}
			m.mu.Lock()
			if fw := m.fw[id]; fw != nil {
				for _, a := range addrs {
					fw.resolved[a] = time.Now().Add(ttl)
				}
			}
			m.mu.Unlock()
		}
	}
	_ = w.WriteMsg(resp)
}
