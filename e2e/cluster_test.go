package e2e

// Many nodes, one warren: three warren serves share a throw-away
// PostgreSQL, each in a network namespace of its own (joined by a bridge,
// as machines on a LAN are) with its own subnet, firewall table, lock and
// data dir. Sandboxes use runc: nothing here needs gVisor.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
	"github.com/warrenhq/warren/internal/pgtest"
)

const clusterMasterKey = "5151515151515151515151515151515151515151515151515151515151515151"

// lan is a bridge in this namespace and one namespace per node on it.
type lan struct {
	t      *testing.T
	bridge string
}

func newLAN(t *testing.T, names ...string) *lan {
	t.Helper()
	l := &lan{t: t, bridge: "wclbr0"}
	l.cleanup(names)
	t.Cleanup(func() { l.cleanup(names) })
	l.ip("link", "add", l.bridge, "type", "bridge")
	l.ip("addr", "add", "10.250.0.1/24", "dev", l.bridge)
	l.ip("link", "set", l.bridge, "up")
	for i, n := range names {
		ns, host := "wcl-"+n, "wclh-"+n
		l.ip("netns", "add", ns)
		l.ip("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.ip("link", "set", host, "master", l.bridge, "up")
		l.ip("-n", ns, "addr", "add", fmt.Sprintf("10.250.0.%d/24", i+2), "dev", "eth0")
		l.ip("-n", ns, "link", "set", "eth0", "up")
		l.ip("-n", ns, "link", "set", "lo", "up")
	}
	return l
}

func (l *lan) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (l *lan) cleanup(names []string) {
	for _, n := range names {
		_ = exec.Command("ip", "link", "del", "wclh-"+n).Run()
		_ = exec.Command("ip", "netns", "del", "wcl-"+n).Run()
	}
	_ = exec.Command("ip", "link", "del", l.bridge).Run()
}

// startNode runs warren serve as node name of the cluster whose store is
// url, inside the node's namespace, on dataDir ("" for a fresh one).
func startNode(t *testing.T, store, name string, i int, dataDir string, args []string, env ...string) *server {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
		t.Cleanup(func() { cleanDataDir(t, dataDir) })
	}
	addr := fmt.Sprintf("10.250.0.%d:7070", i+2)
	cmd := exec.Command("nsenter", append([]string{"--net=/var/run/netns/wcl-" + name, warrenBin, "serve", "--json",
		"--listen", addr, "--data-dir", dataDir, "--store", store, "--node-id", name,
		"--subnet", fmt.Sprintf("10.%d.0.0/16", 120+i), "--runsc", runscBin, "--runtime", "runc", "--node-lease", "3s"}, args...)...)
	return launch(t, dataDir, cmd, append([]string{"WARREN_MASTER_KEY=" + clusterMasterKey, "WARREN_PREVIEW_DOMAIN=preview.test"}, env...)...)
}

func nodeOf(t *testing.T, s *server, id string) string {
	t.Helper()
	sb, err := s.c.GetSandbox(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return sb.Node
}

func nodeStates(t *testing.T, s *server) map[string]client.Node {
	t.Helper()
	nodes, err := s.c.ListNodes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]client.Node{}
	for _, n := range nodes {
		out[n.ID] = n
	}
	return out
}

func TestCluster(t *testing.T) {
	pg, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Stop)
	store, err := pg.Database(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	newLAN(t, "a", "b", "c")
	top := t
	a := startNode(t, store, "a", 0, "", nil)
	bDir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, bDir) })
	b := startNode(t, store, "b", 1, bDir, []string{"--label", "disk=ssd"})
	// c is small: room for four sandboxes of half a CPU.
	c := startNode(t, store, "c", 2, "", []string{"--capacity-cpu", "2"})
	ctx := context.Background()

	eventually(t, 10*time.Second, "three ready nodes", func() error {
		n := nodeStates(t, a)
		for _, id := range []string{"a", "b", "c"} {
			if n[id].State != "ready" {
				return errorf("node %s is %q", id, n[id].State)
			}
		}
		return nil
	})
	small := &client.Resources{CPU: 0.5, MemoryMB: 128}

	t.Run("creates spread", func(t *testing.T) {
		seen := map[string]int{}
		for range 9 {
			sb := a.create(t, client.CreateRequest{Image: "busybox", Resources: small})
			seen[sb.Node]++
			if _, err := a.c.DeleteSandbox(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) < 2 {
			t.Fatalf("nine creates through node a all went to %v", seen)
		}
		t.Logf("nine creates through a: %v", seen)
	})

	t.Run("everything through another node", func(t *testing.T) {
		sb := a.create(t, client.CreateRequest{Image: "busybox", Resources: small, Placement: &client.Placement{Labels: map[string]string{"disk": "ssd"}}})
		if sb.Node != "b" {
			t.Fatalf("placed on %q, want b (the only node labelled disk=ssd)", sb.Node)
		}
		if res := a.exec(t, sb.ID, client.ExecRequest{Cmd: "echo exec-$((40+2))"}); res.Stdout != "exec-42\n" {
			t.Fatalf("exec through a: %+v", res)
		}
		var streamed strings.Builder
		if _, err := c.c.ExecStream(ctx, sb.ID, &client.ExecRequest{Cmd: "for i in 1 2 3; do echo line$i; done"},
			client.ExecHandlers{OnStdout: func(s string) { streamed.WriteString(s) }}); err != nil || streamed.String() != "line1\nline2\nline3\n" {
			t.Fatalf("streamed exec through c: %q %v", streamed.String(), err)
		}
		if _, err := a.c.WriteFile(ctx, sb.ID, "/www/index.html", strings.NewReader("served-from-b")); err != nil {
			t.Fatal(err)
		}
		if got, err := c.c.ReadFileBytes(ctx, sb.ID, "/www/index.html", 1<<20); err != nil || string(got) != "served-from-b" {
			t.Fatalf("file written through a, read through c: %q %v", got, err)
		}
		// A terminal, over a WebSocket forwarded by a.
		pty, err := a.c.PTY(ctx, sb.ID, 80, 24)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pty.Write([]byte("stty size; echo pty-$((6*7))\n")); err != nil {
			t.Fatal(err)
		}
		var screen strings.Builder
		buf := make([]byte, 4096)
		for !strings.Contains(screen.String(), "pty-42") || !strings.Contains(screen.String(), "24 80") {
			n, err := pty.Read(buf)
			if err != nil {
				t.Fatalf("pty through a: %v; screen %q", err, screen.String())
			}
			screen.Write(buf[:n])
		}
		pty.Close()
		// Previews, by path and by host, through a.
		a.exec(t, sb.ID, client.ExecRequest{Cmd: "(busybox httpd -p 8000 -h /www &)"})
		if _, err := a.c.ExposePort(ctx, sb.ID, 8000); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, "the preview answers through a", func() error {
			if code, body, _ := get(t, a.url+"/preview/"+sb.ID+"/8000/", "", a.key); code != 200 || body != "served-from-b" {
				return errorf("path preview: %d %q", code, body)
			}
			if code, body, _ := get(t, a.url+"/", "8000-"+sb.ID+".preview.test", a.key); code != 200 || body != "served-from-b" {
				return errorf("host preview: %d %q", code, body)
			}
			return nil
		})
		// Pause, resume and fork (gVisor checkpoints) through c: all on b,
		// where its files are.
		gv := a.create(t, client.CreateRequest{Image: "busybox", Runtime: "gvisor", Resources: small, Placement: &client.Placement{Node: "b"}})
		a.exec(t, gv.ID, client.ExecRequest{Cmd: "echo kept-in-memory > /tmp/m"})
		if p, err := c.c.Pause(ctx, gv.ID); err != nil || p.State != "paused" {
			t.Fatalf("pause through c: %+v %v", p, err)
		}
		if r, err := c.c.Resume(ctx, gv.ID); err != nil || r.State != "running" || r.Node != "b" {
			t.Fatalf("resume through c: %+v %v", r, err)
		}
		forks, err := a.c.Fork(ctx, gv.ID, 1)
		if err != nil || len(forks) != 1 || forks[0].Node != "b" {
			t.Fatalf("fork through a: %+v %v", forks, err)
		}
		if res := c.exec(t, forks[0].ID, client.ExecRequest{Cmd: "cat /tmp/m"}); res.Stdout != "kept-in-memory\n" {
			t.Fatalf("the fork's file: %+v", res)
		}
		for _, id := range []string{forks[0].ID, gv.ID, sb.ID} {
			if _, err := c.c.DeleteSandbox(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("E2B's API and envd through another node", func(t *testing.T) {
		key := map[string]string{"X-API-Key": a.key}
		var made struct {
			SandboxID       string `json:"sandboxID"`
			EnvdAccessToken string `json:"envdAccessToken"`
		}
		// E2B's create names no node: with a and c drained for a moment
		// it can only go to b, and it is sent through c.
		for _, n := range []string{"a", "c"} {
			if _, err := b.c.DrainNode(ctx, n, true); err != nil {
				t.Fatal(err)
			}
		}
		st, body := e2bCall(t, "POST", c.url+"/sandboxes", key, `{"templateID":"busybox","timeout":300}`, &made)
		for _, n := range []string{"a", "c"} {
			if _, err := b.c.DrainNode(ctx, n, false); err != nil {
				t.Fatal(err)
			}
		}
		if st != 201 {
			t.Fatalf("E2B create through c: %d %s", st, body)
		}
		id := "sbx_" + made.SandboxID
		if n := nodeOf(t, a, id); n != "b" {
			t.Fatalf("E2B's sandbox is on %q, want b", n)
		}
		if st, body := e2bCall(t, "GET", a.url+"/sandboxes/"+made.SandboxID, key, "", nil); st != 200 || !strings.Contains(body, made.SandboxID) {
			t.Fatalf("E2B get through a: %d %s", st, body)
		}
		envd := map[string]string{"E2b-Sandbox-Id": made.SandboxID, "E2b-Sandbox-Port": "49983", "X-Access-Token": made.EnvdAccessToken, "Content-Type": "application/json"}
		if st, body := e2bCall(t, "POST", a.url+"/process.Process/List", envd, `{}`, nil); st != 200 {
			t.Fatalf("envd through a: %d %s", st, body)
		}
		if st, body := e2bCall(t, "DELETE", c.url+"/sandboxes/"+made.SandboxID, key, "", nil); st != 204 {
			t.Fatalf("E2B kill through c: %d %s", st, body)
		}
	})

	t.Run("a volume keeps its sandboxes on its node", func(t *testing.T) {
		if _, err := c.c.CreateVolume(ctx, "cache-on-c", 64); err != nil {
			t.Fatal(err)
		}
		deleted := false
		defer func() {
			if !deleted {
				_ = c.c.DeleteVolume(ctx, "cache-on-c")
			}
		}()
		sb := a.create(t, client.CreateRequest{Image: "busybox", Resources: small, Volumes: []client.VolumeMount{{Name: "cache-on-c", Path: "/cache"}}})
		if sb.Node != "c" {
			t.Fatalf("a sandbox mounting c's volume went to %q", sb.Node)
		}
		if res := a.exec(t, sb.ID, client.ExecRequest{Cmd: "echo kept > /cache/f && cat /cache/f"}); res.Stdout != "kept\n" {
			t.Fatalf("the volume: %+v", res)
		}
		if v, err := a.c.GetVolume(ctx, "cache-on-c"); err != nil || len(v.MountedBy) != 1 {
			t.Fatalf("the volume seen through a: %+v %v", v, err)
		}
		if _, err := a.c.DeleteSandbox(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
		_, err := a.c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Resources: small, Placement: &client.Placement{Node: "a"},
			Volumes: []client.VolumeMount{{Name: "cache-on-c", Path: "/cache"}}})
		var apiErr *client.Error
		if !errors.As(err, &apiErr) || apiErr.Status != 400 || !strings.Contains(apiErr.Message, "node-local") {
			t.Fatalf("a sandbox on a mounting c's volume: %v", err)
		}
		// Deleted through a, it is deleted on c, where its data is.
		if err := a.c.DeleteVolume(ctx, "cache-on-c"); err != nil {
			t.Fatal(err)
		}
		deleted = true
		if m, _ := filepath.Glob(filepath.Join(c.dataDir, "volumes", "vol_*")); len(m) != 0 {
			t.Fatalf("c still holds the deleted volume's files: %v", m)
		}
	})

	t.Run("routing headers from a client", func(t *testing.T) {
		sb := a.create(t, client.CreateRequest{Image: "busybox", Resources: small, Placement: &client.Placement{Node: "b"}})
		defer a.c.DeleteSandbox(ctx, sb.ID)
		send := func(method, path, key string, headers map[string]string) int {
			req, _ := http.NewRequest(method, a.url+path, strings.NewReader(`{"image":"busybox"}`))
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		forged := map[string]string{"X-Warren-Node-Key": "guessed-0123456789", "X-Warren-Placed": "a", "X-Warren-Client-Addr": "10.250.0.99:1"}
		// A forged node key is ignored: the request is routed to b as any
		// other (a would have answered 404 had it served it itself).
		if code := send("GET", "/v1/sandboxes/"+sb.ID+"/files/stat?path=/", a.key, forged); code != 200 {
			t.Fatalf("a stat with a forged node key: %d, want 200 from b", code)
		}
		// No key, or a wrong one, is refused whatever the headers say.
		if code := send("GET", "/v1/sandboxes/"+sb.ID+"/files/stat?path=/", "", forged); code != 401 {
			t.Fatalf("a forwarded-looking request without a key: %d", code)
		}
		if code := send("POST", "/v1/sandboxes", "wrong-key-0123456789", forged); code != 401 {
			t.Fatalf("a create with a wrong key and forged placement: %d", code)
		}
		if code := send("POST", "/v1/sandboxes/"+sb.ID+"/exec", "wrong-key-0123456789", forged); code != 401 {
			t.Fatalf("an exec with a wrong key: %d", code)
		}
	})

	t.Run("no overcommit", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var made []string
		refused := 0
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				via := []*server{a, b, c}[i%3]
				sb, err := via.c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Resources: small, Placement: &client.Placement{Node: "c"}})
				mu.Lock()
				defer mu.Unlock()
				var apiErr *client.Error
				switch {
				case err == nil:
					made = append(made, sb.ID)
				case errors.As(err, &apiErr) && apiErr.Status == http.StatusServiceUnavailable:
					refused++
				default:
					t.Errorf("create %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if len(made) != 4 || refused != 16 {
			t.Fatalf("%d made and %d refused on a node with room for 4", len(made), refused)
		}
		if n := nodeStates(t, b)["c"]; n.Allocated.CPU != 2 || n.Allocated.Sandboxes != 4 {
			t.Fatalf("node c holds %+v of %+v", n.Allocated, n.Capacity)
		}
		for _, id := range made {
			if _, err := a.c.DeleteSandbox(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("an org's quota counts every node", func(t *testing.T) {
		org, err := a.c.CreateOrg(ctx, "cluster-quota")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.c.SetQuotas(ctx, org.ID, client.Quotas{MaxSandboxes: 2}); err != nil {
			t.Fatal(err)
		}
		k, err := a.c.CreateAPIKey(ctx, &client.APIKeyRequest{Name: "q", OrgID: org.ID, Scopes: []string{"sandboxes:write"}})
		if err != nil {
			t.Fatal(err)
		}
		var made []string
		for i, n := range []string{"a", "b", "c"} {
			via := client.New([]*server{a, b, c}[i].url, k.Key)
			sb, err := via.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Resources: small, Placement: &client.Placement{Node: n}})
			var apiErr *client.Error
			switch {
			case i < 2 && err != nil:
				t.Fatalf("create %d of a quota of 2 (on %s): %v", i+1, n, err)
			case i < 2:
				made = append(made, sb.ID)
			case !errors.As(err, &apiErr) || apiErr.Code != "quota_exceeded":
				t.Fatalf("a third create, on a third node, against a quota of 2: %v", err)
			}
		}
		owner := client.New(a.url, k.Key)
		for _, id := range made {
			if _, err := owner.DeleteSandbox(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("drain", func(t *testing.T) {
		if n, err := a.c.DrainNode(ctx, "a", true); err != nil || n.State != "draining" {
			t.Fatalf("drain: %+v %v", n, err)
		}
		for range 4 {
			sb := a.create(t, client.CreateRequest{Image: "busybox", Resources: small})
			if sb.Node == "a" {
				t.Fatalf("a create went to the draining node a")
			}
			if _, err := a.c.DeleteSandbox(ctx, sb.ID); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := b.c.DrainNode(ctx, "a", false); err != nil || n.State != "ready" {
			t.Fatalf("undrain: %+v %v", n, err)
		}
	})

	t.Run("a lost node and its return", func(t *testing.T) {
		sb := a.create(t, client.CreateRequest{Image: "busybox", Resources: small, Placement: &client.Placement{Node: "b"}})
		a.exec(t, sb.ID, client.ExecRequest{Cmd: "echo before > /tmp/kept"})
		if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped := true
		defer func() {
			if stopped {
				_ = b.cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		eventually(t, 15*time.Second, "node b marked lost", func() error {
			if st := nodeStates(t, a)["b"].State; st != "lost" {
				return errorf("b is %q", st)
			}
			return nil
		})
		if got, err := a.c.GetSandbox(ctx, sb.ID); err != nil || got.State != "lost" {
			t.Fatalf("b's sandbox seen through a: %+v %v", got, err)
		}
		if _, err := a.c.Exec(ctx, sb.ID, &client.ExecRequest{Cmd: "true"}); err == nil || !strings.Contains(err.Error(), "lost") {
			t.Fatalf("exec in a lost node's sandbox: %v", err)
		}
		for range 3 {
			other := a.create(t, client.CreateRequest{Image: "busybox", Resources: small})
			if other.Node == "b" {
				t.Fatal("a create went to the lost node b")
			}
			if _, err := a.c.DeleteSandbox(ctx, other.ID); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		stopped = false
		eventually(t, 15*time.Second, "node b back", func() error {
			if st := nodeStates(t, a)["b"].State; st != "ready" {
				return errorf("b is %q", st)
			}
			return nil
		})
		if got, err := a.c.GetSandbox(ctx, sb.ID); err != nil || got.State != "running" {
			t.Fatalf("b's sandbox after b returned: %+v %v", got, err)
		}
		if res := a.exec(t, sb.ID, client.ExecRequest{Cmd: "cat /tmp/kept"}); res.Stdout != "before\n" {
			t.Fatalf("after b returned: %+v", res)
		}
		if _, err := a.c.DeleteSandbox(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a node killed mid-create leaves nothing reserved", func(t *testing.T) {
		before := nodeStates(t, a)["b"].Allocated
		b.stopKeepingSandboxes()
		// A node that stops on purpose leaves at once, not when its lease
		// runs out.
		if got := nodeStates(t, a)["b"].State; got != "lost" || !strings.Contains(b.logs.String(), "left the cluster") {
			t.Fatalf("b stopped and is %s", got)
		}
		// b again, set to die the moment a create is recorded.
		// Started on the whole test's t: a subtest's would stop them when
		// it ends.
		doomed := startNode(top, store, "b", 1, bDir, []string{"--label", "disk=ssd"}, "WARREN_FAILPOINT=create.recorded")
		_, err := a.c.CreateSandbox(ctx, &client.CreateRequest{Image: "busybox", Resources: small, Placement: &client.Placement{Node: "b"}})
		if err == nil {
			t.Fatal("the create succeeded; the failpoint never fired")
		}
		_ = doomed.cmd.Wait()
		if ws, ok := doomed.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("b ended with %v, not at its failpoint", doomed.cmd.ProcessState)
		}
		// The create is recorded, holding b's room, until b is back.
		var interrupted string
		list, err := a.c.ListSandboxes(ctx, client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range list {
			if sb.Node == "b" && (sb.State == "creating" || sb.State == "lost") {
				interrupted = sb.ID
			}
		}
		if interrupted == "" {
			t.Fatalf("no interrupted create on b among %d sandboxes", len(list))
		}
		b = startNode(top, store, "b", 1, bDir, []string{"--label", "disk=ssd"})
		eventually(t, 15*time.Second, "b's interrupted create failed and its room freed", func() error {
			got, err := a.c.GetSandbox(ctx, interrupted)
			if err != nil {
				return err
			}
			if got.State != "failed" {
				return errorf("the interrupted create is %s", got.State)
			}
			if after := nodeStates(t, a)["b"]; after.State != "ready" || after.Allocated != before {
				return errorf("b is %s holding %+v; before the crash %+v", after.State, after.Allocated, before)
			}
			return nil
		})
	})

	t.Run("bench through another node", func(t *testing.T) {
		cmd := exec.Command(warrenBin, "bench", "--cluster", "--runs", "3", "--repeat", "1", "--runtime", "runc", "--json",
			"--url", a.url, "--api-key", a.key)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("warren bench --cluster: %v\n%s%s", err, out, stderr.String())
		}
		var rep struct {
			Rows []struct {
				Metric string                     `json:"metric"`
				Warren struct{ N int }            `json:"warren"`
				Peers  map[string]struct{ N int } `json:"peers"`
				Ratio  map[string]float64         `json:"ratio"`
			} `json:"rows"`
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		want := []string{"runc cluster create→first output", "runc cluster exec round trip"}
		if len(rep.Rows) != len(want) {
			t.Fatalf("rows %+v, want %v", rep.Rows, want)
		}
		for i, r := range rep.Rows {
			owner := r.Peers["sent to the owning node"]
			if r.Metric != want[i] || r.Warren.N == 0 || owner.N != r.Warren.N || r.Ratio["sent to the owning node"] <= 0 {
				t.Fatalf("row %d: %+v", i, r)
			}
		}
	})

	t.Run("nodes listed by the CLI", func(t *testing.T) {
		out, err := exec.Command(warrenBin, "node", "ls", "--url", a.url, "--api-key", a.key).CombinedOutput()
		if err != nil {
			t.Fatalf("warren node ls: %v\n%s", err, out)
		}
		for _, want := range []string{"ID", "STATE", "a ", "b ", "c ", "ready", "http://10.250.0.3:7070", "disk=ssd"} {
			if !strings.Contains(string(out), want) {
				t.Fatalf("warren node ls lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("a node that does not come back is forgotten", func(t *testing.T) {
		sb := a.create(t, client.CreateRequest{Image: "busybox", Resources: small, Placement: &client.Placement{Node: "c"}})
		if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		stopped := true
		defer func() {
			if stopped {
				_ = c.cmd.Process.Signal(syscall.SIGCONT)
			}
		}()
		out, err := exec.Command(warrenBin, "node", "forget", "c", "--url", a.url, "--api-key", a.key).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "not lost") {
			t.Fatalf("forgetting a node that is not lost yet: %v %s", err, out)
		}
		eventually(t, 15*time.Second, "node c lost", func() error {
			if st := nodeStates(t, a)["c"].State; st != "lost" {
				return errorf("c is %q", st)
			}
			return nil
		})
		out, err = exec.Command(warrenBin, "node", "forget", "c", "--url", a.url, "--api-key", a.key).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "1 of its sandboxes failed") {
			t.Fatalf("warren node forget c: %v %s", err, out)
		}
		if got, err := a.c.GetSandbox(ctx, sb.ID); err != nil || got.State != "failed" || !strings.Contains(got.Reason, "forgotten") {
			t.Fatalf("the forgotten node's sandbox: %+v %v", got, err)
		}
		if _, ok := nodeStates(t, a)["c"]; ok {
			t.Fatal("node c is still listed")
		}
		// It comes back after all: it joins again, and its reconciler
		// removes the sandbox that failed while it was away.
		if err := c.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		stopped = false
		eventually(t, 15*time.Second, "node c registered again", func() error {
			if st := nodeStates(t, a)["c"].State; st != "ready" {
				return errorf("c is %q", st)
			}
			return nil
		})
		eventually(t, 40*time.Second, "the failed sandbox's cgroup gone from c", func() error {
			if m, _ := filepath.Glob("/sys/fs/cgroup/*/warren-c/" + sb.ID); len(m) > 0 {
				return errorf("still there: %v", m)
			}
			return nil
		})
	})

	t.Run("a create served from another node's warm pool", func(t *testing.T) {
		c.stopKeepingSandboxes()
		if got := nodeStates(t, a)["c"].State; got != "lost" {
			t.Fatalf("c stopped and is %s", got)
		}
		c = startNode(top, store, "c", 2, c.dataDir, []string{"--capacity-cpu", "2", "--pool", "busybox:1"})
		eventually(t, 30*time.Second, "c ready with a warm sandbox", func() error {
			if n := nodeStates(t, a)["c"]; n.State != "ready" || n.Capacity.Pools["busybox"] < 1 {
				return errorf("c: %s, pools %v", n.State, n.Capacity.Pools)
			}
			return nil
		})
		// Sent to a, which has no pool: placement prefers the node whose
		// warm sandbox can take it.
		sb := a.create(t, client.CreateRequest{Image: "busybox"})
		if sb.Node != "c" || sb.BootPath != "hot_pool" {
			t.Fatalf("the create went to %s by %s, want c's warm pool", sb.Node, sb.BootPath)
		}
		if res := a.exec(t, sb.ID, client.ExecRequest{Cmd: "echo warm"}); res.Stdout != "warm\n" {
			t.Fatalf("exec through a: %+v", res)
		}
		if _, err := a.c.DeleteSandbox(ctx, sb.ID); err != nil {
			t.Fatal(err)
		}
	})

	// Each node's own names: its firewall table and cgroup parent.
	for _, n := range []string{"a", "b", "c"} {
		if out, err := exec.Command("ip", "netns", "exec", "wcl-"+n, "nft", "list", "table", "ip", "warren-"+n).CombinedOutput(); err != nil {
			t.Errorf("node %s's table: %v %s", n, err, out)
		}
	}
	if m, _ := filepath.Glob("/sys/fs/cgroup/*/warren-a"); len(m) == 0 {
		t.Error("node a made no cgroup parent of its own")
	}
}
