package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/wire"
)

// peer is a stand-in for the internet: a network namespace with
// public-style addresses (and one private one) serving HTTP.
type peer struct{ ns, dir string }

const (
	publicA = "198.51.100.10" // answered for allowed.test
	publicB = "198.51.100.11" // answered for blocked.test
	publicC = "198.51.100.12" // allowed by CIDR in the allowlist test
	private = "192.168.77.10" // an RFC1918 server the host can reach
)

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

func startPeer(t *testing.T) *peer {
	t.Helper()
	p := &peer{ns: "wtest-peer"}
	exec.Command("ip", "netns", "del", p.ns).Run()
	exec.Command("ip", "link", "del", "wtpeer0").Run()
	run(t, "ip", "netns", "add", p.ns)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "pids", p.ns).Run()
		if out, err := exec.Command("ip", "netns", "pids", p.ns).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
		exec.Command("ip", "link", "del", "wtpeer0").Run()
		exec.Command("ip", "netns", "del", p.ns).Run()
	})
	run(t, "ip", "link", "add", "wtpeer0", "type", "veth", "peer", "name", "wtpeer1")
	run(t, "ip", "link", "set", "wtpeer1", "netns", p.ns)
	run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "wtpeer0")
	run(t, "ip", "addr", "add", "192.168.77.1/24", "dev", "wtpeer0")
	run(t, "ip", "link", "set", "wtpeer0", "up")
	for _, a := range []string{publicA + "/24", publicB + "/24", publicC + "/24", private + "/24"} {
		run(t, "ip", "-n", p.ns, "addr", "add", a, "dev", "wtpeer1")
	}
	run(t, "ip", "-n", p.ns, "link", "set", "wtpeer1", "up")
	run(t, "ip", "-n", p.ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", p.ns, "route", "add", "default", "via", "198.51.100.1")
	dir := t.TempDir()
	p.dir = dir
	os.WriteFile(dir+"/index.html", []byte("hello from the internet\n"), 0o644)
	httpd := exec.Command("ip", "netns", "exec", p.ns, "busybox", "httpd", "-f", "-p", "80", "-h", dir)
	if err := httpd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { httpd.Process.Kill(); httpd.Wait() })
	waitTCP(t, publicA+":80")
	return p
}

// startDNS serves the test zone on loopback, as warren's upstream.
func startDNS(t *testing.T) string {
	t.Helper()
	zone := map[string]string{"allowed.test.": publicA, "blocked.test.": publicB, "sub.wild.test.": publicC,
		// The egress injection test's HTTPS hosts.
		"api.test.": publicA, "other.test.": publicA,
		// A name whose owner points it at the host's network too, for
		// a week.
		"rebind.test.": "169.254.169.254," + private + "," + publicA}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		resp := new(dns.Msg)
		resp.SetReply(req)
		q := req.Question[0]
		if ips, ok := zone[strings.ToLower(q.Name)]; ok && q.Qtype == dns.TypeA {
			ttl := 5
			if strings.Contains(ips, ",") {
				ttl = 604800
			}
			for _, ip := range strings.Split(ips, ",") {
				rr, _ := dns.NewRR(fmt.Sprintf("%s %d IN A %s", q.Name, ttl, ip))
				resp.Answer = append(resp.Answer, rr)
			}
		} else if !ok {
			resp.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(resp)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// reach reports whether a sandbox can fetch url within two seconds.
func reach(t *testing.T, s *server, id, url string) bool {
	t.Helper()
	res := s.exec(t, id, client.ExecRequest{Argv: []string{"curl", "-sS", "-m", "2", "-o", "/dev/null", url}, TimeoutSeconds: 10})
	return res.ExitCode == 0
}

func hostAddress(t *testing.T) string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !strings.HasPrefix(n.IP.String(), "10.88.") && !strings.HasPrefix(n.IP.String(), "198.51.100.") && !strings.HasPrefix(n.IP.String(), "192.168.77.") {
			return n.IP.String()
		}
	}
	t.Fatal("no host address to test against")
	return ""
}

func TestEgress(t *testing.T) {
	startPeer(t)
	upstream := startDNS(t)
	s := startServer(t, "", "WARREN_DNS_UPSTREAM="+upstream)
	hostPort := strings.TrimPrefix(s.url, "http://127.0.0.1")
	hostIP := hostAddress(t)
	ctx := context.Background()
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "base", Runtime: rt})
			if sb.Network == nil || sb.Network.Egress != "default" || sb.Address == "" {
				t.Fatalf("view lacks the network: %+v", sb)
			}
			neighbour := s.create(t, client.CreateRequest{Image: "base", Runtime: rt})
			s.exec(t, neighbour.ID, client.ExecRequest{Cmd: "cd /tmp && (python3 -m http.server 8080 >/dev/null 2>&1 &)"})
			// The host can reach the neighbour: the refusal below is the policy's.
			waitTCP(t, neighbour.Address+":8080")
			if !reach(t, s, sb.ID, "http://"+publicA+"/") {
				t.Error("default: a public address is unreachable")
			}
			if !reach(t, s, sb.ID, "http://allowed.test/") {
				t.Error("default: DNS through warren's resolver does not work")
			}
			gw := gateway(sb.Address)
			for what, url := range map[string]string{
				"the host's gateway address": "http://" + gw + hostPort + "/healthz",
				"the host's own address":     "http://" + hostIP + hostPort + "/healthz",
				"the metadata address":       "http://169.254.169.254/",
				"a neighbour sandbox":        "http://" + neighbour.Address + ":8080/",
				"an RFC1918 address":         "http://" + private + "/",
			} {
				if reach(t, s, sb.ID, url) {
					t.Errorf("default: %s (%s) is reachable", what, url)
				}
			}
			// none: nothing leaves, but exec, files and PTY still work.
			none := s.create(t, client.CreateRequest{Image: "base", Runtime: rt, Network: &wire.NetworkPolicy{Egress: "none"}})
			if reach(t, s, none.ID, "http://"+publicA+"/") || reach(t, s, none.ID, "http://allowed.test/") {
				t.Error("none: traffic left the sandbox")
			}
			if _, err := s.c.WriteFile(ctx, none.ID, "/tmp/x", strings.NewReader("ok")); err != nil {
				t.Errorf("none: files broke: %v", err)
			}
			// allowlist: only the listed CIDR and the names it allows.
			al := s.create(t, client.CreateRequest{Image: "base", Runtime: rt, Network: &wire.NetworkPolicy{
				Egress: "allowlist", Allow: []string{publicC + "/32", "allowed.test", "*.wild.test"}}})
			if reach(t, s, al.ID, "http://"+publicA+"/") {
				t.Error("allowlist: an address nobody resolved is reachable")
			}
			if !reach(t, s, al.ID, "http://"+publicC+"/") {
				t.Error("allowlist: the listed CIDR is unreachable")
			}
			if !reach(t, s, al.ID, "http://allowed.test/") {
				t.Error("allowlist: the listed domain is unreachable")
			}
			if !reach(t, s, al.ID, "http://sub.wild.test/") {
				t.Error("allowlist: a wildcard domain is unreachable")
			}
			if r := s.exec(t, al.ID, client.ExecRequest{Cmd: "getent hosts blocked.test"}); r.ExitCode == 0 || strings.Contains(r.Stdout, publicB) {
				t.Errorf("allowlist: an unlisted name resolved: %s", r.Stdout)
			}
			if reach(t, s, al.ID, "http://"+publicB+"/") {
				t.Error("allowlist: an unlisted address is reachable")
			}
			// A policy change on a running sandbox takes effect at once.
			if _, err := s.c.SetNetwork(ctx, sb.ID, &wire.NetworkPolicy{Egress: "none"}); err != nil {
				t.Fatal(err)
			}
			if reach(t, s, sb.ID, "http://"+publicA+"/") {
				t.Error("after switching to none the sandbox still reaches out")
			}
			if _, err := s.c.SetNetwork(ctx, sb.ID, &wire.NetworkPolicy{Egress: "default", Deny: []string{publicA}}); err != nil {
				t.Fatal(err)
			}
			if reach(t, s, sb.ID, "http://"+publicA+"/") || !reach(t, s, sb.ID, "http://"+publicC+"/") {
				t.Error("deny rule in default mode not applied")
			}
			got, _ := s.c.GetSandbox(ctx, sb.ID)
			if got.Network == nil || len(got.Network.Deny) != 1 {
				t.Errorf("view does not show the new policy: %+v", got.Network)
			}
		})
	}
	for _, b := range []struct{ body, field string }{
		{`{"network":{"egress":"sometimes"}}`, "network.egress"},
		{`{"network":{"egress":"allowlist","allow":["not a rule!"]}}`, "network.allow[0]"},
		{`{"network":{"egress":"default","deny":["10.0.0.0/33"]}}`, "network.deny[0]"},
		{`{"network":{"egress":"default","allow":["1.2.3.4"]}}`, "network.allow"},
	} {
		if status, body := s.raw(t, "POST", "/v1/sandboxes", s.key, b.body); status != 400 || field(body) != b.field {
			t.Errorf("create %s: %d %v, want 400 naming %s", b.body, status, body, b.field)
		}
	}
}

// gateway is the host side of a sandbox's /30.
func gateway(addr string) string {
	ip := net.ParseIP(addr).To4()
	ip[3]--
	return ip.String()
}
