package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/internal/pgtest"
	"github.com/warrenhq/warren/wire"
)

func TestNodeLeases(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		now := time.Now()
		for _, id := range []string{"a", "b"} {
			if err := s.RegisterNode(ctx, Node{ID: id, URL: "http://" + id, StartedAt: now, HeartbeatAt: now, LeaseUntil: now.Add(5 * time.Second),
				Capacity: wire.NodeCapacity{CPU: 4}, Labels: map[string]string{"zone": id}}); err != nil {
				t.Fatal(err)
			}
		}
		// b stops renewing: at a's next sweep after its lease, it is lost.
		if was, err := s.Heartbeat(ctx, "a", wire.NodeCapacity{CPU: 4}, now, now.Add(20*time.Second)); err != nil || was != wire.NodeReady {
			t.Fatalf("heartbeat: %q %v", was, err)
		}
		lost, err := s.ExpireNodes(ctx, now.Add(10*time.Second))
		if err != nil || len(lost) != 1 || lost[0] != "b" {
			t.Fatalf("expire: %v %v, want [b]", lost, err)
		}
		if again, _ := s.ExpireNodes(ctx, now.Add(10*time.Second)); len(again) != 0 {
			t.Fatalf("a lost node was expired twice: %v", again)
		}
		// It comes back: ready again, and told it was lost.
		if was, err := s.Heartbeat(ctx, "b", wire.NodeCapacity{CPU: 4}, now.Add(11*time.Second), now.Add(30*time.Second)); err != nil || was != wire.NodeLost {
			t.Fatalf("return: %q %v", was, err)
		}
		n, err := s.GetNode(ctx, "b")
		if err != nil || n.State != wire.NodeReady || n.Labels["zone"] != "b" {
			t.Fatalf("after return: %+v %v", n, err)
		}
		// A node that stops on purpose is lost at once, and ready again
		// when it registers.
		if err := s.LeaveNode(ctx, "b", now.Add(12*time.Second)); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.GetNode(ctx, "b"); n.State != wire.NodeLost {
			t.Fatalf("after leaving: %+v", n)
		}
		if err := s.RegisterNode(ctx, Node{ID: "b", URL: "http://b", Labels: map[string]string{"zone": "b"}, StartedAt: now, HeartbeatAt: now, LeaseUntil: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.GetNode(ctx, "b"); n.State != wire.NodeReady {
			t.Fatalf("registered after leaving: %+v", n)
		}
		// Drained, it stays drained across a restart (leaving included),
		// and takes nothing.
		if n, err := s.SetNodeDraining(ctx, "b", true); err != nil || n.State != wire.NodeDraining {
			t.Fatalf("drain: %+v %v", n, err)
		}
		if err := s.LeaveNode(ctx, "b", now.Add(13*time.Second)); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.GetNode(ctx, "b"); n.State != wire.NodeLost {
			t.Fatalf("a draining node after leaving: %+v", n)
		}
		// Lost longer than its lease, then back by heartbeat: still
		// draining, as it was told.
		if _, err := s.ExpireNodes(ctx, now.Add(14*time.Second)); err != nil {
			t.Fatal(err)
		}
		if was, err := s.Heartbeat(ctx, "b", wire.NodeCapacity{CPU: 4}, now.Add(15*time.Second), now.Add(time.Minute)); err != nil || was != wire.NodeLost {
			t.Fatalf("heartbeat after leaving: %q %v", was, err)
		}
		if n, _ := s.GetNode(ctx, "b"); n.State != wire.NodeDraining {
			t.Fatalf("a drained node back by heartbeat: %+v", n)
		}
		// Told to drain or not while lost, it returns as it was last told.
		if err := s.LeaveNode(ctx, "b", now.Add(16*time.Second)); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.SetNodeDraining(ctx, "b", false); n.State != wire.NodeLost {
			t.Fatalf("undrain a lost node: %+v", n)
		}
		if err := s.RegisterNode(ctx, Node{ID: "b", URL: "http://b", StartedAt: now, HeartbeatAt: now, LeaseUntil: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.GetNode(ctx, "b"); n.State != wire.NodeReady {
			t.Fatalf("undrained while lost, then back: %+v", n)
		}
		if n, err := s.SetNodeDraining(ctx, "b", true); err != nil || n.State != wire.NodeDraining {
			t.Fatalf("drain again: %+v %v", n, err)
		}
		if err := s.RegisterNode(ctx, Node{ID: "b", URL: "http://b2", StartedAt: now, HeartbeatAt: now, LeaseUntil: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.GetNode(ctx, "b"); n.State != wire.NodeDraining || n.URL != "http://b2" {
			t.Fatalf("drained node after restart: %+v", n)
		}
		sb := sized("sbx_d", "default", "creating", 1, 64, 10)
		sb.Node = "b"
		if err := s.InsertSandbox(ctx, sb); !errors.Is(err, ErrNoRoom) {
			t.Fatalf("create on a draining node: %v, want ErrNoRoom", err)
		}
		if n, err := s.SetNodeDraining(ctx, "b", false); err != nil || n.State != wire.NodeReady {
			t.Fatalf("undrain: %+v %v", n, err)
		}
		if _, err := s.GetNode(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing node: %v", err)
		}
		// Forgetting: only a lost node; its sandboxes fail, its row goes.
		on := sized("sbx_on_b", "default", "creating", 1, 64, 10)
		on.Node = "b"
		if err := s.InsertSandbox(ctx, on); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ForgetNode(ctx, "b"); !errors.Is(err, ErrConflict) {
			t.Fatalf("forget a ready node: %v, want ErrConflict", err)
		}
		if _, err := s.ExpireNodes(ctx, now.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
		if n, err := s.ForgetNode(ctx, "b"); err != nil || n != 1 {
			t.Fatalf("forget: %d %v", n, err)
		}
		if sb, _ := s.GetSandbox(ctx, "", "sbx_on_b"); sb.State != "failed" || sb.EndedAt.IsZero() || !strings.Contains(sb.Reason, "forgotten") {
			t.Fatalf("the forgotten node's sandbox: %+v", sb)
		}
		if _, err := s.GetNode(ctx, "b"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("the forgotten node: %v", err)
		}
	})
}

// Twenty creates at once on a node with room for four: exactly four are
// placed, and its allocation never passes its capacity.
func TestNodeCapacityRace(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		now := time.Now()
		if err := s.RegisterNode(ctx, Node{ID: "small", URL: "http://small", StartedAt: now, HeartbeatAt: now, LeaseUntil: now.Add(time.Minute),
			Capacity: wire.NodeCapacity{CPU: 2, MemoryMB: 8192}}); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sb := sized(fmt.Sprintf("sbx_%02d", i), "default", "creating", 0.5, 256, 100)
				sb.Node = "small"
				errs <- s.InsertSandbox(ctx, sb)
			}()
		}
		wg.Wait()
		close(errs)
		ok := 0
		for err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, ErrNoRoom):
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if ok != 4 {
			t.Fatalf("%d placed on a node with room for 4", ok)
		}
		a, err := s.Allocations(ctx)
		if err != nil || a["small"].CPU != 2 || a["small"].Sandboxes != 4 || a["small"].MemoryMB != 1024 || a["small"].DiskMB != 400 {
			t.Fatalf("allocations: %+v %v", a, err)
		}
		// An ended sandbox gives its room back.
		placed, err := s.ListSandboxes(ctx, Filter{Node: "small"})
		if err != nil || len(placed) != 4 {
			t.Fatalf("sandboxes on the node: %d %v", len(placed), err)
		}
		if _, err := s.Transition(ctx, placed[0].ID, nil, "failed", Change{Ended: true}); err != nil {
			t.Fatal(err)
		}
		sb := sized("sbx_late", "default", "creating", 0.5, 256, 100)
		sb.Node = "small"
		if err := s.InsertSandbox(ctx, sb); err != nil {
			t.Fatalf("create after one ended: %v", err)
		}
	})
}

func TestSharedSetting(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		first, err := s.Setting(ctx, "k", RandomHex(16))
		if err != nil || len(first) != 32 {
			t.Fatalf("setting: %q %v", first, err)
		}
		second, err := s.Setting(ctx, "k", RandomHex(16))
		if err != nil || second != first {
			t.Fatalf("a second node read %q, the first wrote %q", second, first)
		}
	})
}

// Nodes starting at once migrate one at a time: every one opens.
func TestConcurrentMigrations(t *testing.T) {
	url := pgtest.Database(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(context.Background(), url)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
