package cluster

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// nodes is the store's view of a few nodes, for placement without a
// database (the store's own tests cover the SQL).
type nodes struct {
	list  []*store.Node
	alloc map[string]wire.NodeAllocation
}

func (n *nodes) RegisterNode(context.Context, store.Node) error { return nil }
func (n *nodes) Heartbeat(context.Context, string, wire.NodeCapacity, time.Time, time.Time) (string, error) {
	return wire.NodeReady, nil
}
func (n *nodes) ExpireNodes(context.Context, time.Time) ([]string, error) { return nil, nil }
func (n *nodes) LeaveNode(context.Context, string, time.Time) error       { return nil }
func (n *nodes) ListNodes(context.Context) ([]*store.Node, error)         { return n.list, nil }
func (n *nodes) GetNode(_ context.Context, id string) (*store.Node, error) {
	for _, x := range n.list {
		if x.ID == id {
			return x, nil
		}
	}
	return nil, store.ErrNotFound
}
func (n *nodes) Allocations(context.Context) (map[string]wire.NodeAllocation, error) {
	return n.alloc, nil
}

func node(id string, cpu float64, pools map[string]int, labels map[string]string) *store.Node {
	return &store.Node{ID: id, State: wire.NodeReady, LeaseUntil: time.Now().Add(time.Minute), Labels: labels,
		Capacity: wire.NodeCapacity{CPU: cpu, MemoryMB: 8192, Runtimes: []string{"gvisor", "runc"}, DefaultRuntime: "gvisor",
			Images: []string{"base", "busybox"}, Pools: pools}}
}

func TestCandidates(t *testing.T) {
	st := &nodes{
		list: []*store.Node{
			node("full", 2, nil, nil),
			node("busy", 8, nil, map[string]string{"zone": "a"}),
			node("idle", 8, nil, map[string]string{"zone": "b"}),
			node("pooled", 8, map[string]int{"busybox": 2}, map[string]string{"zone": "b"}),
		},
		alloc: map[string]wire.NodeAllocation{"full": {CPU: 2}, "busy": {CPU: 6}},
	}
	st.list = append(st.list, &store.Node{ID: "gone", State: wire.NodeLost, Capacity: st.list[2].Capacity})
	c := New(Config{Store: st, Self: "idle"})
	ctx := context.Background()

	got, err := c.Candidates(ctx, Want{Image: "busybox", CPU: 1})
	if err != nil || got[0].ID != "pooled" || len(got) != 3 {
		t.Fatalf("a warm sandbox first, and never the full or lost node: %v %v", ids(got), err)
	}
	if _, err := c.Candidates(ctx, Want{Image: "base", CPU: 1, Node: "full"}); err == nil || !strings.Contains(err.Error(), "full: it offers 2 CPUs, its sandboxes ask for 2") {
		t.Fatalf("a full node: %v", err)
	}
	got, _ = c.Candidates(ctx, Want{Image: "base", CPU: 1, Labels: map[string]string{"zone": "a"}})
	if len(got) != 1 || got[0].ID != "busy" {
		t.Fatalf("labels: %v", ids(got))
	}
	got, _ = c.Candidates(ctx, Want{Image: "base", CPU: 1, Node: "idle"})
	if len(got) != 1 || got[0].ID != "idle" {
		t.Fatalf("a named node: %v", ids(got))
	}
	// Nothing fits: every node says why.
	_, err = c.Candidates(ctx, Want{Image: "nope", CPU: 1})
	if !errors.Is(err, ErrNoNode) || !strings.Contains(err.Error(), "idle: no image nope") || !strings.Contains(err.Error(), "gone: it is lost") {
		t.Fatalf("no node: %v", err)
	}
	if _, err := c.Candidates(ctx, Want{Image: "base", Runtime: "kata"}); !errors.Is(err, ErrNoNode) || !strings.Contains(err.Error(), "no runtime kata") {
		t.Fatalf("unknown runtime: %v", err)
	}
	// The least loaded of several equal ones is not always first: creates
	// at once spread.
	first := map[string]int{}
	for range 200 {
		got, _ := c.Candidates(ctx, Want{Image: "base", CPU: 1, Labels: map[string]string{"zone": "b"}})
		first[got[0].ID]++
	}
	if first["idle"] == 0 || first["pooled"] == 0 {
		t.Fatalf("equal nodes never took turns: %v", first)
	}
}

func ids(ns []wire.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.ID)
	}
	return out
}

func TestFromNodeNeedsTheKey(t *testing.T) {
	c := New(Config{Key: "k-0123456789abcdef"})
	r := httptest.NewRequest("GET", "/v1/sandboxes/x", nil)
	if c.FromNode(r) {
		t.Fatal("a request without the key came from a node")
	}
	r.Header.Set(HeaderKey, "k-0123456789abcdeX")
	if c.FromNode(r) {
		t.Fatal("a wrong key passed")
	}
	r.Header.Set(HeaderKey, "k-0123456789abcdef")
	if !c.FromNode(r) {
		t.Fatal("the key did not pass")
	}
	if New(Config{}).FromNode(httptest.NewRequest("GET", "/", nil)) {
		t.Fatal("an empty key matched an empty header")
	}
}
