package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

type poolInfo struct {
	Pools []struct {
		Image string `json:"image"`
		Size  int    `json:"size"`
		Ready int    `json:"ready"`
	} `json:"pools"`
}

func (s *server) poolReady(t *testing.T, image string) int {
	t.Helper()
	_, body := s.raw(t, "GET", "/v1/info", s.key, "")
	b, _ := json.Marshal(body)
	var info poolInfo
	_ = json.Unmarshal(b, &info)
	for _, p := range info.Pools {
		if p.Image == image {
			return p.Ready
		}
	}
	return -1
}

func warrenNamespaces(t *testing.T) []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "warren-") {
			ns = append(ns, f[0])
		}
	}
	return ns
}

// TestWarmPool checks pool hits and misses both give working sandboxes with
// the right boot_path, a claimed sandbox is the caller's own, the pool
// refills, and pool sandboxes go away on shutdown and after a crash.
func TestWarmPool(t *testing.T) {
	dataDir := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, dataDir) })
	s := startServer(t, dataDir, "WARREN_POOL=busybox:2")
	ctx := context.Background()
	full := func(s *server) {
		eventually(t, 60*time.Second, "pool full", func() error {
			if n := s.poolReady(t, "busybox"); n != 2 {
				return fmt.Errorf("%d ready", n)
			}
			return nil
		})
	}
	full(s)
	hot := s.create(t, client.CreateRequest{Image: "busybox", Env: map[string]string{"WHO": "me"}, Metadata: map[string]string{"k": "v"},
		Startup: &client.Startup{Files: []client.File{{Path: "/root/hello", Content: "hi"}}}})
	if hot.BootPath != "hot_pool" || hot.Metadata["k"] != "v" {
		t.Fatalf("pool hit: %+v", hot)
	}
	if _, ok := hot.Timings["claim_ms"]; !ok {
		t.Fatalf("pool hit timings %v", hot.Timings)
	}
	res := s.exec(t, hot.ID, client.ExecRequest{Cmd: "echo $WHO; hostname; cat /root/hello; ls /tmp | wc -l"})
	if res.Stdout != "me\n"+strings.ReplaceAll(hot.ID, "_", "-")+"\nhi0\n" {
		t.Fatalf("claimed sandbox: %q", res.Stdout)
	}
	if list, _ := s.c.ListSandboxes(ctx, client.ListOptions{}); len(list) != 1 || list[0].ID != hot.ID {
		t.Fatalf("pooled sandboxes show in the list: %+v", list)
	}
	cold := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "runc"})
	if cold.BootPath != "cold_boot" {
		t.Fatalf("a shape the pool lacks: %s", cold.BootPath)
	}
	if r := s.exec(t, cold.ID, client.ExecRequest{Cmd: "echo ok"}); r.Stdout != "ok\n" {
		t.Fatalf("cold sandbox: %+v", r)
	}
	full(s) // refilled after the claim
	allow := s.create(t, client.CreateRequest{Image: "busybox", Network: &client.NetworkPolicy{Egress: "none"}})
	if allow.BootPath != "hot_pool" || allow.Network.Egress != "none" {
		t.Fatalf("pool hit with a policy: %+v", allow)
	}

	// Shutdown removes pool sandboxes but keeps users'.
	s.stopKeepingSandboxes()
	s2 := startServer(t, dataDir)
	if n := len(warrenNamespaces(t)); n != 3 {
		t.Fatalf("after a clean stop and restart without pools: %d namespaces, want the 3 claimed sandboxes'", n)
	}
	for _, id := range []string{hot.ID, cold.ID, allow.ID} {
		if got, err := s2.c.GetSandbox(ctx, id); err != nil || got.State != "running" {
			t.Fatalf("user sandbox %s after restart: %+v %v", id, got, err)
		}
	}
	// After a crash, the pool's sandboxes are removed on the next start.
	s2.kill9()
	s3 := startServer(t, dataDir, "WARREN_POOL=busybox:2")
	full(s3)
	s3.kill9()
	s4 := startServer(t, dataDir)
	if n := len(warrenNamespaces(t)); n != 3 {
		t.Fatalf("after a crash with a full pool: %d namespaces, want 3", n)
	}
	_ = s4
}
