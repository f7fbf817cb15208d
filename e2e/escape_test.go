package e2e

// The escape suite: what root inside a real sandbox can try against the
// host, on both runtimes. Each test attacks one boundary and then checks
// that the host is untouched and warren still serves every sandbox.

import (
	"context"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

// socketAttack runs as root inside a sandbox against the agent's socket:
// look for the agent token in every process's environment, connect
// again and again with junk and forged greetings, hold connections open,
// and try to replace the socket or write beside it.
const socketAttack = `
import glob, os, socket
seen = []
for p in glob.glob('/proc/[0-9]*/environ'):
    try:
        if b'WARREN_AGENT_TOKEN' in open(p, 'rb').read():
            seen.append(p)
    except OSError:
        pass
print('token visible in', seen if seen else 'no process')
path = '/.warren/run/host.sock'
for i in range(60):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.send([b'\x00' * 12, b'warren-agent/1 ' + b'A' * 43 + b'\n', b'GET / HTTP/1.1\r\n\r\n'][i % 3])
    s.close()
held = []
for i in range(20):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    held.append(s)
for what, f in [('remove socket', lambda: os.remove(path)), ('write beside it', lambda: open('/.warren/run/fill', 'wb').write(b'x'))]:
    try:
        f()
        print(what, 'succeeded')
    except OSError as e:
        print(what, 'refused', e.errno)
print('attack done')
`

func TestAgentSocketAttack(t *testing.T) {
	s := startServer(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			victim := s.create(t, client.CreateRequest{Runtime: rt})
			bystander := s.create(t, client.CreateRequest{Runtime: rt, Image: "busybox"})
			res := s.exec(t, victim.ID, client.ExecRequest{Argv: []string{"python3", "-c", socketAttack}})
			out := res.Stdout + res.Stderr
			t.Logf("attack output:\n%s", out)
			for _, want := range []string{"token visible in no process", "remove socket refused", "write beside it refused", "attack done"} {
				if !strings.Contains(out, want) {
					t.Fatalf("attack output lacks %q:\n%s", want, out)
				}
			}
			if res := s.exec(t, victim.ID, client.ExecRequest{Cmd: "cat /proc/1/environ"}); res.ExitCode == 0 {
				t.Fatalf("root in the sandbox read init's environment: %q", res.Stdout)
			}
			// warren is up and serves both sandboxes.
			resp, err := http.Get(s.url + "/healthz")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("warren is down after the attack: %v", err)
			}
			resp.Body.Close()
			for _, id := range []string{victim.ID, bystander.ID} {
				if r := s.exec(t, id, client.ExecRequest{Cmd: "echo alive"}); r.Stdout != "alive\n" {
					t.Fatalf("%s no longer serves: %+v", id, r)
				}
			}
			eventually(t, 10*time.Second, "refusals logged", func() error {
				if !strings.Contains(s.logs.String(), "refused a connection to the agent socket") {
					return errorf("no refusal in the log")
				}
				return nil
			})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, id := range []string{victim.ID, bystander.ID} {
				if _, err := s.c.DeleteSandbox(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// ioURing tries to set up an io_uring: the syscall must be refused.
const ioURing = `
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)
print('io_uring', 'refused' if fd < 0 else 'allowed', os.strerror(ctypes.get_errno()) if fd < 0 else fd)
`

// TestRuncHardening: runc sandboxes run in a user namespace (root inside
// is an unprivileged uid of the host) under an allow-list seccomp filter
// that refuses namespaces and io_uring, while ordinary root work inside
// still works.
func TestRuncHardening(t *testing.T) {
	s := startServer(t, "")
	sb := s.create(t, client.CreateRequest{Runtime: "runc"})
	for cmd, want := range map[string]string{
		"unshare -Urn true; echo exit=$?":                               "exit=1",
		"unshare -m true; echo exit=$?":                                 "exit=1",
		"mount -t tmpfs none /mnt 2>&1; echo exit=$?":                   "exit=32",
		"python3 -c \"" + strings.ReplaceAll(ioURing, `"`, `\"`) + "\"": "io_uring refused",
		"cat /proc/self/uid_map":                                        "0    1048576      65536",
		// Root inside still owns its files and can do root's work.
		"echo x > /etc/written && mkdir -p /opt/new && chown 1000:1000 /opt/new && stat -c %u /opt/new && id -u":                                        "1000\n0",
		"python3 -c 'import threading,subprocess; t=threading.Thread(target=print); t.start(); t.join(); print(subprocess.run([\"true\"]).returncode)'": "0",
	} {
		r := s.exec(t, sb.ID, client.ExecRequest{Cmd: cmd})
		if !strings.Contains(r.Stdout+r.Stderr, want) {
			t.Errorf("%s: got %q, want %q", cmd, r.Stdout+r.Stderr, want)
		}
	}
	// From the host, the sandbox's processes run as that unprivileged uid.
	procs, err := os.ReadFile("/sys/fs/cgroup/pids/warren/" + sb.ID + "/cgroup.procs")
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range strings.Fields(string(procs)) {
		status, _ := os.ReadFile("/proc/" + pid + "/status")
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "Uid:") && !strings.Contains(line, "1048576") {
				t.Fatalf("process %s runs as %q on the host", pid, line)
			}
		}
	}
}
