package e2e

// Network attacks from inside a sandbox, on both runtimes: IPv6 to the
// host, DNS through a neighbour's resolver, spoofed source addresses, DNS
// answers that point at the host's network or would outlive the
// firewall, and a connection that tries to outlive a tightened policy.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/wire"
)

// dnsQuery asks a DNS server for NAME's A records from inside a sandbox,
// printing "got <ip> <ttl>" per record, "rcode N", or "silent".
const dnsQuery = `
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0)
for part in name.split('.'):
    q += bytes([len(part)]) + part.encode()
q += b'\x00' + struct.pack('>HH', 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
try:
    s.sendto(q, (server, 53))
    r, _ = s.recvfrom(4096)
except OSError as e:
    print('silent', e)
    sys.exit(0)
rcode = r[3] & 15
ancount = struct.unpack('>H', r[6:8])[0]
print('rcode', rcode)
i = 12
while r[i] != 0:
    i += r[i] + 1
i += 5
for _ in range(ancount):
    if r[i] & 0xc0 == 0xc0:
        i += 2
    else:
        while r[i] != 0:
            i += r[i] + 1
        i += 1
    typ, cls, ttl, ln = struct.unpack('>HHIH', r[i:i+10])
    i += 10
    if typ == 1:
        print('got', socket.inet_ntoa(r[i:i+4]), ttl)
    i += ln
`

// spoof sends one UDP datagram to DST:PORT with a forged source address,
// and one with the sandbox's own, saying which it could send.
const spoof = `
import socket, struct, sys
src, dst, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
except OSError as e:
    print('no raw socket', e.errno)
    sys.exit(0)
udp = struct.pack('>HHHH', 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
try:
    s.sendto(ip + udp, (dst, 0))
    print('sent')
except OSError as e:
    print('send refused', e.errno)
`

// spoofFrame sends one UDP datagram with a forged source as a raw
// Ethernet frame on eth0, as a sandbox's own network stack (gVisor's
// sentry, or a kernel with raw sockets) would put it on the wire.
const spoofFrame = `
import socket, struct, sys
src, dst, port, payload, gwmac = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode(), bytes.fromhex(sys.argv[5].replace(':', ''))
mymac = bytes.fromhex(open('/sys/class/net/eth0/address').read().strip().replace(':', ''))
udp = struct.pack('>HHHH', 40000, port, 8 + len(payload), 0) + payload
hdr = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
s = sum(struct.unpack('>10H', hdr))
s = (s >> 16) + (s & 0xffff)
s += s >> 16
hdr = hdr[:10] + struct.pack('>H', ~s & 0xffff) + hdr[12:]
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(('eth0', 0))
sock.send(gwmac + mymac + b'\x08\x00' + hdr + udp)
print('sent')
`

// ipv6Probe tries to reach the host over IPv6 link-local and reports the
// sandbox's IPv6 addresses on eth0.
const ipv6Probe = `
import socket, sys
target, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((target + '%eth0', port), timeout=2)
    print('connected')
except OSError as e:
    print('refused', e.errno)
try:
    print('addresses', [l for l in open('/proc/net/if_inet6') if 'eth0' in l])
except OSError:
    print('addresses none')
`

// ticker keeps one TCP connection open, sending a line a quarter second
// and logging each echo (or silence) with the time.
const ticker = `
import socket, time
s = socket.create_connection(('PEER', 7000), timeout=3)
s.settimeout(0.5)
log = open('/tmp/ticker.log', 'w', buffering=1)
for i in range(160):
    try:
        s.sendall(b'x\n')
        s.recv(16)
        log.write('ok %f\n' % time.time())
    except OSError:
        log.write('fail %f\n' % time.time())
    time.sleep(0.25)
`

func hostLinkOf(t *testing.T, sandboxAddr string) netlink.Link {
	t.Helper()
	gw := net.ParseIP(gateway(sandboxAddr))
	links, _ := netlink.LinkList()
	for _, l := range links {
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		for _, a := range addrs {
			if a.IP.Equal(gw) {
				return l
			}
		}
	}
	t.Fatalf("no host link holds %s", gw)
	return nil
}

// eui64 is the link-local address an interface would have.
func eui64(mac net.HardwareAddr) string {
	b := []byte{mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]}
	return fmt.Sprintf("fe80::%02x%02x:%02x%02x:%02x%02x:%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7])
}

// peerListen runs a python3 UDP listener in the peer namespace that
// appends every payload it gets to a file.
func peerListen(t *testing.T, p *peer, port int) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "received")
	os.WriteFile(out, nil, 0o644)
	prog := fmt.Sprintf(`
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', %d))
while True:
    d, a = s.recvfrom(2048)
    open(%q, 'a').write(d.decode() + '\n')
`, port, out)
	cmd := exec.Command("ip", "netns", "exec", p.ns, "python3", "-c", prog)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.Sleep(300 * time.Millisecond)
	return out
}

func TestNetworkAttacks(t *testing.T) {
	p := startPeer(t)
	upstream := startDNS(t)
	s := startServer(t, "", "WARREN_DNS_UPSTREAM="+upstream)
	ctx := context.Background()
	received := peerListen(t, p, 9999)
	echo := exec.Command("ip", "netns", "exec", p.ns, "python3", "-c", `
import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('0.0.0.0', 7000), H).serve_forever()`)
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Process.Kill(); echo.Wait() })
	waitTCP(t, publicA+":7000")
	// A host service on every IPv6 address.
	l6, err := net.Listen("tcp6", "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l6.Close()
	go func() {
		for {
			c, err := l6.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port6 := l6.Addr().(*net.TCPAddr).Port

	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			py := func(id, prog string, args ...string) string {
				t.Helper()
				r := s.exec(t, id, client.ExecRequest{Argv: append([]string{"python3", "-c", prog}, args...), TimeoutSeconds: 60})
				return r.Stdout + r.Stderr
			}
			sb := s.create(t, client.CreateRequest{Runtime: rt})
			neighbour := s.create(t, client.CreateRequest{Runtime: rt})

			t.Run("ipv6", func(t *testing.T) {
				link := hostLinkOf(t, sb.Address)
				if addrs, _ := netlink.AddrList(link, netlink.FAMILY_V6); len(addrs) != 0 {
					t.Fatalf("the host end of the sandbox's link has IPv6 addresses: %v", addrs)
				}
				out := py(sb.ID, ipv6Probe, eui64(link.Attrs().HardwareAddr), fmt.Sprint(port6))
				if strings.Contains(out, "connected") || strings.Contains(out, "fe80") {
					t.Fatalf("IPv6 from inside the sandbox: %s", out)
				}
			})

			t.Run("dns only through its own resolver", func(t *testing.T) {
				none := s.create(t, client.CreateRequest{Runtime: rt, Network: &wire.NetworkPolicy{Egress: "none"}})
				if out := py(sb.ID, dnsQuery, gateway(sb.Address), "allowed.test"); !strings.Contains(out, "got "+publicA) {
					t.Fatalf("its own resolver: %s", out)
				}
				for _, gw := range []string{gateway(neighbour.Address), gateway(sb.Address)} {
					if out := py(none.ID, dnsQuery, gw, "allowed.test"); strings.Contains(out, "got ") {
						t.Fatalf("egress none resolved through %s: %s", gw, out)
					}
				}
				if out := py(sb.ID, dnsQuery, gateway(neighbour.Address), "allowed.test"); strings.Contains(out, "got ") {
					t.Fatalf("resolved through a neighbour's resolver: %s", out)
				}
			})

			t.Run("spoofed sources", func(t *testing.T) {
				// Root in either runtime cannot open a raw socket at all
				// (gVisor has none; runc's user namespace does not own
				// the network namespace).
				if out := py(sb.ID, spoof, neighbour.Address, publicA, "9999", "from-inside"); !strings.Contains(out, "no raw socket") {
					t.Fatalf("root in the sandbox opened a raw socket: %s", out)
				}
				// Whatever could (a sandbox without a user namespace, an
				// escape into the namespace): the same packets sent from
				// the sandbox's network namespace by the host's root.
				gwMAC := hostLinkOf(t, sb.Address).Attrs().HardwareAddr.String()
				nsSpoof := func(src, payload string) {
					cmd := exec.Command("ip", "netns", "exec", "warren-"+sb.ID, "python3", "-c", spoofFrame, src, publicA, "9999", payload, gwMAC)
					if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "sent") {
						t.Fatalf("send from the sandbox's namespace: %v %s", err, out)
					}
				}
				tag := rt + "-" + sb.ID
				nsSpoof(sb.Address, "legit-"+tag)
				nsSpoof(neighbour.Address, "spoofed-neighbour-"+tag)
				nsSpoof("203.0.113.5", "spoofed-public-"+tag)
				nsSpoof(gateway(sb.Address), "spoofed-gateway-"+tag)
				time.Sleep(time.Second)
				got, _ := os.ReadFile(received)
				if strings.Contains(string(got), "spoofed") {
					t.Fatalf("a spoofed packet left the sandbox: %s", got)
				}
				if !strings.Contains(string(got), "legit-"+tag) {
					t.Fatalf("the control packet did not arrive (the test proves nothing): %q", got)
				}
			})

			t.Run("dns answers are screened", func(t *testing.T) {
				al := s.create(t, client.CreateRequest{Runtime: rt, Network: &wire.NetworkPolicy{Egress: "allowlist", Allow: []string{"rebind.test"}}})
				out := py(al.ID, dnsQuery, gateway(al.Address), "rebind.test")
				if !strings.Contains(out, "got "+publicA) || strings.Contains(out, "169.254") || strings.Contains(out, private) {
					t.Fatalf("answer not screened: %s", out)
				}
				for _, line := range strings.Split(out, "\n") {
					var ip string
					var ttl int
					if n, _ := fmt.Sscanf(line, "got %s %d", &ip, &ttl); n == 2 && ttl > 600 {
						t.Fatalf("TTL %d passed through (cap 600): %s", ttl, out)
					}
				}
				if reach(t, s, al.ID, "http://"+private+"/") {
					t.Fatal("a private address behind an allowed name is reachable")
				}
				if !reach(t, s, al.ID, "http://rebind.test/") {
					t.Fatal("the name's public address is unreachable")
				}
			})

			t.Run("a tightened policy ends open connections", func(t *testing.T) {
				open := s.create(t, client.CreateRequest{Runtime: rt})
				if _, err := s.c.WriteFile(ctx, open.ID, "/tmp/ticker.py", strings.NewReader(strings.Replace(ticker, "PEER", publicA, 1))); err != nil {
					t.Fatal(err)
				}
				if _, err := s.c.StartCommand(ctx, open.ID, &client.CommandRequest{Name: "ticker", Cmd: "python3 /tmp/ticker.py"}); err != nil {
					t.Fatal(err)
				}
				eventually(t, 15*time.Second, "the connection carrying data", func() error {
					r := s.exec(t, open.ID, client.ExecRequest{Cmd: "grep -c ok /tmp/ticker.log"})
					if n, _ := strconv.Atoi(strings.TrimSpace(r.Stdout)); n < 3 {
						return errorf("ok lines: %q", r.Stdout)
					}
					return nil
				})
				if _, err := s.c.SetNetwork(ctx, open.ID, &wire.NetworkPolicy{Egress: "none"}); err != nil {
					t.Fatal(err)
				}
				changed := float64(time.Now().UnixNano()) / 1e9
				time.Sleep(4 * time.Second)
				log := s.exec(t, open.ID, client.ExecRequest{Cmd: "cat /tmp/ticker.log"}).Stdout
				late := 0
				for _, line := range strings.Split(log, "\n") {
					var what string
					var at float64
					if n, _ := fmt.Sscanf(line, "%s %f", &what, &at); n == 2 && what == "ok" && at > changed+1 {
						late++
					}
				}
				if late > 0 {
					t.Fatalf("the connection carried %d echoes after the policy became none:\n%s", late, log)
				}
			})
		})
	}
}
