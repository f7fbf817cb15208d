package network

import (
	"errors"
	"net/netip"
	"testing"
)

func TestNormalizeNamesTheFaultyRule(t *testing.T) {
	cases := []struct {
		p     Policy
		field string
	}{
		{Policy{Egress: "sometimes"}, "network.egress"},
		{Policy{Egress: "default", Allow: []string{"1.2.3.4"}}, "network.allow"},
		{Policy{Egress: "allowlist", Allow: []string{"example.com", "not a rule"}}, "network.allow[1]"},
		{Policy{Egress: "allowlist", Allow: []string{"10.0.0.0/33"}}, "network.allow[0]"},
		{Policy{Egress: "none", Deny: []string{"::1"}}, "network.deny[0]"},
		{Policy{Egress: "default", Deny: []string{"localhost"}}, "network.deny[0]"},
	}
	for _, c := range cases {
		_, err := Normalize(&c.p)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%+v: got %v, want an error naming %s", c.p, err, c.field)
		}
	}
	p, err := Normalize(nil)
	if err != nil || p.Egress != EgressDefault {
		t.Fatalf("empty policy: %+v %v", p, err)
	}
	r, err := compile(&Policy{Egress: "allowlist", Allow: []string{"203.0.113.7", "198.51.100.0/24", "*.PyPI.org", "example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.allowNets) != 2 || r.allowNets[0] != netip.MustParsePrefix("203.0.113.7/32") || len(r.allowDomains) != 2 || r.allowDomains[0] != "*.pypi.org" {
		t.Fatalf("compiled %+v", r)
	}
}

func TestMatchDomain(t *testing.T) {
	for _, c := range []struct {
		rule, name string
		want       bool
	}{
		{"example.com", "example.com", true},
		{"example.com", "www.example.com", false},
		{"*.example.com", "www.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "badexample.com", false},
	} {
		if got := matchDomain(c.rule, c.name); got != c.want {
			t.Errorf("matchDomain(%q, %q) = %v", c.rule, c.name, got)
		}
	}
}

func TestIntervalElements(t *testing.T) {
	els := intervalElements([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("255.255.255.255/32")})
	// 10.0.0.0 up to (not including) 11.0.0.0; the last address has no
	// end past it.
	if len(els) != 3 || string(els[0].Key) != "\x0a\x00\x00\x00" || string(els[1].Key) != "\x0b\x00\x00\x00" || !els[1].IntervalEnd {
		t.Fatalf("elements %+v", els)
	}
}

func TestSlotAddrs(t *testing.T) {
	gw, addr := slotAddrs(DefaultSubnet, 65)
	if gw.String() != "10.88.1.5" || addr.String() != "10.88.1.6" {
		t.Fatalf("slot 65: %s %s", gw, addr)
	}
}
