package network

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func answer(t *testing.T, records ...string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatal(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	return m
}

// TestScreenAnswer: what an upstream (or whoever controls a domain's
// records) answers cannot point a sandbox at the host's network, last
// longer than the firewall, or carry IPv6.
func TestScreenAnswer(t *testing.T) {
	r, _ := compile(&Policy{Egress: "allowlist", Allow: []string{"*.example.com", "192.168.77.0/24"}})
	m := answer(t,
		"a.example.com. 604800 IN CNAME b.example.com.",
		"b.example.com. 604800 IN A 203.0.113.9",
		"b.example.com. 30 IN A 169.254.169.254",
		"b.example.com. 30 IN A 10.1.2.3",
		"b.example.com. 30 IN A 127.0.0.1",
		"b.example.com. 30 IN A 192.168.77.10",
		"b.example.com. 30 IN AAAA ::1",
	)
	addrs, ttl := screenAnswer(m, r)
	want := []netip.Addr{netip.MustParseAddr("203.0.113.9"), netip.MustParseAddr("192.168.77.10")}
	if len(addrs) != 2 || addrs[0] != want[0] || addrs[1] != want[1] {
		t.Fatalf("kept %v, want %v", addrs, want)
	}
	if ttl != maxAnswerTTL {
		t.Fatalf("firewall ttl %s, want the cap %s", ttl, maxAnswerTTL)
	}
	if len(m.Answer) != 3 {
		t.Fatalf("answer now %v", m.Answer)
	}
	for _, rr := range m.Answer {
		if rr.Header().Ttl > uint32(maxAnswerTTL.Seconds()) {
			t.Fatalf("ttl not capped: %v", rr)
		}
		if strings.Contains(rr.String(), "169.254") || strings.Contains(rr.String(), "AAAA") {
			t.Fatalf("kept %v", rr)
		}
	}
	// A flood of records opens at most maxAnswerAddrs addresses.
	flood := new(dns.Msg)
	for i := 0; i < 1000; i++ {
		flood.Answer = append(flood.Answer, &dns.A{Hdr: dns.RR_Header{Name: "x.example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
			A: net.IPv4(203, 0, byte(i>>8), byte(i))})
	}
	addrs, ttl = screenAnswer(flood, r)
	if len(addrs) != maxAnswerAddrs || ttl != minAllowTTL {
		t.Fatalf("flood kept %d addresses for %s", len(addrs), ttl)
	}
}

func TestRememberIsBounded(t *testing.T) {
	sb := &sandboxRules{resolved: map[netip.Addr]time.Time{}}
	now := time.Now()
	for i := 0; i < maxResolved+500; i++ {
		a := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		sb.remember([]netip.Addr{a}, now.Add(time.Duration(i)*time.Second))
	}
	if len(sb.resolved) != maxResolved {
		t.Fatalf("holds %d addresses", len(sb.resolved))
	}
	if _, ok := sb.resolved[netip.AddrFrom4([4]byte{203, 0, 0, 0})]; ok {
		t.Fatal("kept the soonest to expire")
	}
}

// FuzzPolicy: any policy either compiles or names the field at fault;
// a compiled one matches names without panicking.
func FuzzPolicy(f *testing.F) {
	f.Add("allowlist", "*.example.com", "10.0.0.0/8", "a.example.com")
	f.Add("default", "", "1.2.3.4", "x")
	f.Add("none", "::1", "", "")
	f.Fuzz(func(t *testing.T, egress, allow, deny, name string) {
		p := &Policy{Egress: egress}
		if allow != "" {
			p.Allow = strings.Split(allow, ",")
		}
		if deny != "" {
			p.Deny = strings.Split(deny, ",")
		}
		r, err := compile(p)
		if err != nil {
			fe, ok := err.(*FieldError)
			if !ok || !strings.HasPrefix(fe.Field, "network.") {
				t.Fatalf("error %v names no field", err)
			}
			return
		}
		_ = matchAny(r.allowDomains, name)
		_ = matchAny(r.denyDomains, name)
		for _, pfx := range append(r.allowNets, r.denyNets...) {
			if !pfx.Addr().Is4() {
				t.Fatalf("compiled a non-IPv4 rule %v", pfx)
			}
		}
	})
}
