package e2e

// The escape suite: what root inside a real sandbox can try against the
// host, on both runtimes. Each test attacks one boundary and then checks
// that the host is untouched and warren still serves every sandbox.

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
# The host may drop a refused connection before the junk is sent: the
# attacker carries on either way.
for i in range(60):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        s.send([b'\x00' * 12, b'warren-agent/1 ' + b'A' * 43 + b'\n', b'GET / HTTP/1.1\r\n\r\n'][i % 3])
    except OSError:
        pass
    s.close()
held = []
for i in range(20):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
    except OSError:
        pass
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

// canaryDir is a host directory a sandbox must never change, with a
// file it must never read.
func canaryDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hosts"), []byte("the host's own\n"), 0o644)
	return dir
}

func canaryUntouched(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	b, _ := os.ReadFile(filepath.Join(dir, "hosts"))
	if len(entries) != 1 || string(b) != "the host's own\n" {
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("the host's canary directory changed: %v, hosts=%q", names, b)
	}
}

// TestSymlinkEscapes: root plants symlinks to a host directory all over
// its tree — at /etc, at files the host rewrites, across /tmp — and then
// the host forks it, pauses and resumes it, and serves files from it.
// The host directory never changes and is never read.
func TestSymlinkEscapes(t *testing.T) {
	s := startServer(t, "", "WARREN_POOL=busybox:1")
	ctx := context.Background()
	canary := canaryDir(t)
	plant := strings.Join([]string{
		"ln -sf " + canary + "/hosts /etc/hosts",
		"ln -sf " + canary + "/hosts /etc/hostname",
		"ln -sf ../../../../../../.." + canary + "/hosts /etc/resolv.conf",
		"ln -s " + canary + " /tmp/canary",
		"ln -s / /tmp/root",
		"mkdir -p /.warren/logs && ln -s " + canary + " /.warren/logs/host",
	}, " && ")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
			if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: plant}); r.ExitCode != 0 {
				t.Fatalf("plant: %+v", r)
			}
			// Files calls follow the sandbox's own paths, never the host's.
			for _, p := range []string{"/tmp/canary/hosts", "/etc/hosts", "/tmp/root" + canary + "/hosts"} {
				rc, err := s.c.ReadFile(ctx, sb.ID, p)
				if err == nil {
					b, _ := io.ReadAll(rc)
					rc.Close()
					if strings.Contains(string(b), "the host's own") {
						t.Fatalf("read the host's file through %s", p)
					}
				}
			}
			for _, p := range []string{"/tmp/canary/planted", "/etc/hosts", "/tmp/root" + canary + "/planted"} {
				_, _ = s.c.WriteFile(ctx, sb.ID, p, strings.NewReader("from the sandbox"))
			}
			_ = s.c.RemoveFile(ctx, sb.ID, "/tmp/canary/hosts", false)
			canaryUntouched(t, canary)
			if rt != "gvisor" {
				return
			}
			// Pause and resume, then fork: the host rewrites the copy's
			// /etc/hosts, /etc/hostname and /etc/resolv.conf.
			s.pauseResume(t, sb.ID)
			canaryUntouched(t, canary)
			copies, err := s.c.Fork(ctx, sb.ID, 1)
			if err != nil {
				t.Fatalf("fork: %v", err)
			}
			canaryUntouched(t, canary)
			if r := s.exec(t, copies[0].ID, client.ExecRequest{Cmd: "cat /etc/hostname"}); !strings.Contains(r.Stdout, strings.ReplaceAll(copies[0].ID, "_", "-")) {
				t.Fatalf("the copy's own hostname: %q", r.Stdout)
			}
			// And /etc itself a symlink to the host directory.
			if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "rm -rf /etc && ln -s " + canary + " /etc"}); r.ExitCode != 0 {
				t.Fatalf("replace /etc: %+v", r)
			}
			_, err = s.c.Fork(ctx, sb.ID, 1)
			canaryUntouched(t, canary)
			if err == nil {
				t.Log("fork with /etc pointing outside wrote its files inside the copy")
			}
			if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "echo alive"}); r.Stdout != "alive\n" {
				t.Fatalf("the source after the fork: %+v", r)
			}
		})
	}
	// A pooled sandbox claimed with files written through symlinked paths.
	sb := s.create(t, client.CreateRequest{Image: "busybox", Files: []client.File{{Path: "/etc/motd", Content: "hi"}}})
	if sb.BootPath != "hot_pool" {
		t.Logf("not from the pool (%s)", sb.BootPath)
	}
	s.exec(t, sb.ID, client.ExecRequest{Cmd: "ln -s " + canary + " /tmp/c"})
	_, _ = s.c.WriteFile(ctx, sb.ID, "/tmp/c/x", strings.NewReader("x"))
	canaryUntouched(t, canary)
}

// TestDiskLimit: a sandbox fills its disk and gets ENOSPC; uploads past
// it answer 507; the host and a neighbour carry on; the limit holds after
// pause/resume and in a fork.
func TestDiskLimit(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt, Resources: &client.Resources{DiskMB: 128}})
			if sb.Resources.DiskMB != 128 {
				t.Fatalf("view: %+v", sb.Resources)
			}
			neighbour := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
			fill := func(id string) {
				t.Helper()
				r := s.exec(t, id, client.ExecRequest{Cmd: "dd if=/dev/zero of=/fill bs=1M count=300 2>&1; echo exit=$?; rm -f /fill"})
				if !strings.Contains(r.Stdout, "No space left on device") || strings.Contains(r.Stdout, "exit=0") {
					t.Fatalf("writing 300 MB to a 128 MB disk: %q", r.Stdout)
				}
			}
			fill(sb.ID)
			_, err := s.c.WriteFile(ctx, sb.ID, "/upload", io.LimitReader(zeros{}, 200<<20))
			if !isAPIError(err, 507) {
				t.Fatalf("a 200 MB upload to a 128 MB disk: %v, want 507", err)
			}
			for _, id := range []string{sb.ID, neighbour.ID} {
				if r := s.exec(t, id, client.ExecRequest{Cmd: "echo ok > /after && cat /after"}); r.Stdout != "ok\n" {
					t.Fatalf("%s after the full disk: %+v", id, r)
				}
			}
			if rt != "gvisor" {
				return
			}
			s.pauseResume(t, sb.ID)
			fill(sb.ID)
			copies, err := s.c.Fork(ctx, sb.ID, 1)
			if err != nil {
				t.Fatal(err)
			}
			if copies[0].Resources.DiskMB != 128 {
				t.Fatalf("fork view: %+v", copies[0].Resources)
			}
			fill(copies[0].ID)
			if r := s.exec(t, copies[0].ID, client.ExecRequest{Cmd: "cat /after"}); r.Stdout != "ok\n" {
				t.Fatalf("the fork's files: %+v", r)
			}
		})
	}
	if status, body := s.raw(t, "POST", "/v1/sandboxes", s.key, `{"resources":{"disk_mb":100000000}}`); status != 400 || field(body) != "resources.disk_mb" {
		t.Fatalf("a disk larger than the node: %d %v", status, body)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestCredentialsNotKept: a git URL's credentials reach neither the
// stored reason nor the log; a rotated admin key revokes the old one.
func TestCredentialsNotKept(t *testing.T) {
	dataDir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dataDir) })
	s := startServer(t, dataDir)
	ctx := context.Background()
	_, err := s.c.CreateSandbox(ctx, &client.CreateRequest{Image: "base", Startup: &client.Startup{
		Git: &client.Git{URL: "http://robot:hunter2-secret@127.0.0.1:1/repo.git"}}})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("create with a failing clone: %v", err)
	}
	list, _ := s.c.ListSandboxes(ctx, client.ListOptions{States: []client.State{"failed"}})
	if len(list) != 1 || !strings.Contains(list[0].Reason, "git clone") {
		t.Fatalf("failed sandboxes: %+v", list)
	}
	if strings.Contains(list[0].Reason, "hunter2") || strings.Contains(s.logs.String(), "hunter2") {
		t.Fatal("the credentials were stored or logged")
	}
	// Rotate the admin key: the old one stops working.
	s.stopKeepingSandboxes()
	const rotated = "e2e-rotated-admin-key-9876543210"
	s2 := startServer(t, dataDir, "WARREN_ADMIN_KEY="+rotated)
	if status, _ := s2.raw(t, "GET", "/v1/info", adminKey, ""); status != 401 {
		t.Fatalf("the old admin key after rotation: %d, want 401", status)
	}
	if status, _ := s2.raw(t, "GET", "/v1/info", rotated, ""); status != 200 {
		t.Fatalf("the new admin key: %d", status)
	}
	s2.key = rotated
	s2.c = client.New(s2.url, rotated)
}

// pauseResume pauses a sandbox and resumes it.
func (s *server) pauseResume(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.c.Pause(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.c.Resume(ctx, id); err != nil {
		t.Fatal(err)
	}
}
