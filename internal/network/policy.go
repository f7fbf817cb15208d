// Package network gives every sandbox its own network namespace, wired to
// the host by a routed veth pair with NAT, and enforces its egress policy:
// nftables rules for addresses, and a DNS resolver warren runs for
// sandboxes so that domain rules hold.
package network

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/warrenhq/warren/wire"
)

// Egress modes.
const (
	EgressDefault   = wire.EgressDefault
	EgressNone      = wire.EgressNone
	EgressAllowlist = wire.EgressAllowlist
)

// Policy is a sandbox's egress policy as the API carries it.
type Policy = wire.NetworkPolicy

// rules is a validated policy.
type rules struct {
	egress       string
	allowNets    []netip.Prefix
	allowDomains []string
	denyNets     []netip.Prefix
	denyDomains  []string
}

var domainRE = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// FieldError names the policy field at fault.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Message }

// Normalize fills defaults and validates a policy.
func Normalize(p *Policy) (*Policy, error) {
	out := &Policy{Egress: EgressDefault}
	if p != nil {
		*out = *p
	}
	if out.Egress == "" {
		out.Egress = EgressDefault
	}
	_, err := compile(out)
	return out, err
}

func compile(p *Policy) (*rules, error) {
	r := &rules{egress: p.Egress}
	switch p.Egress {
	case EgressDefault, EgressNone, EgressAllowlist:
	default:
		return nil, &FieldError{"network.egress", fmt.Sprintf("egress must be default, none or allowlist, got %q", p.Egress)}
	}
	if p.Egress != EgressAllowlist && len(p.Allow) > 0 {
		return nil, &FieldError{"network.allow", "allow rules need egress allowlist"}
	}
	parse := func(list []string, field string, nets *[]netip.Prefix, domains *[]string) error {
		for i, rule := range list {
			f := fmt.Sprintf("network.%s[%d]", field, i)
			rule = strings.ToLower(strings.TrimSpace(rule))
			if pfx, err := netip.ParsePrefix(rule); err == nil {
				if !pfx.Addr().Is4() {
					return &FieldError{f, fmt.Sprintf("%q: only IPv4 ranges are supported", rule)}
				}
				*nets = append(*nets, pfx.Masked())
				continue
			}
			if addr, err := netip.ParseAddr(rule); err == nil {
				if !addr.Is4() {
					return &FieldError{f, fmt.Sprintf("%q: only IPv4 addresses are supported", rule)}
				}
				*nets = append(*nets, netip.PrefixFrom(addr, 32))
				continue
			}
			if len(rule) > 253 || !domainRE.MatchString(rule) || !strings.Contains(rule, ".") {
				return &FieldError{f, fmt.Sprintf("%q is neither a CIDR, an IPv4 address nor a domain (like example.com or *.example.com)", list[i])}
			}
			*domains = append(*domains, rule)
		}
		return nil
	}
	if err := parse(p.Allow, "allow", &r.allowNets, &r.allowDomains); err != nil {
		return nil, err
	}
	if err := parse(p.Deny, "deny", &r.denyNets, &r.denyDomains); err != nil {
		return nil, err
	}
	return r, nil
}

// matchDomain reports whether name (no trailing dot, lower case) matches a
// rule: "example.com" matches itself; "*.example.com" matches its
// subdomains at any depth, not the bare domain.
func matchDomain(rule, name string) bool {
	if suffix, ok := strings.CutPrefix(rule, "*."); ok {
		return strings.HasSuffix(name, "."+suffix)
	}
	return name == rule
}

func matchAny(rules []string, name string) bool {
	for _, r := range rules {
		if matchDomain(r, name) {
			return true
		}
	}
	return false
}

// blockedByDefault are the destinations egress default refuses: private,
// shared, loopback, link-local (cloud metadata lives there), multicast and
// reserved ranges.
var blockedByDefault = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
}
