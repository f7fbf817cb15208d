package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

// TestFork checks a fork gives independent sandboxes that carry on the
// source's running process and files, each with its own files and address.
func TestFork(t *testing.T) {
	s := startServer(t, "")
	ctx := context.Background()
	src := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "gvisor", Metadata: map[string]string{"team": "x"}})
	s.exec(t, src.ID, client.ExecRequest{Cmd: "(i=0; while :; do i=$((i+1)); echo $i > /tmp/counter.new; mv /tmp/counter.new /tmp/counter; sleep 0.05; done) >/dev/null 2>&1 &"})
	s.exec(t, src.ID, client.ExecRequest{Cmd: "mkdir /data && for i in $(seq 50); do echo f$i > /data/f$i; done"})
	time.Sleep(300 * time.Millisecond)
	at := counter(t, s, src.ID)
	forks, err := s.c.Fork(ctx, src.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(forks) != 2 {
		t.Fatalf("forks: %+v", forks)
	}
	ids := []string{src.ID}
	addrs := map[string]bool{}
	for _, f := range forks {
		if f.BootPath != "fork" || f.State != "running" || f.Metadata["team"] != "x" || f.ID == src.ID {
			t.Fatalf("fork view %+v", f)
		}
		if addrs[f.Address] || f.Address == "" {
			t.Fatalf("fork address %q not its own", f.Address)
		}
		addrs[f.Address] = true
		if n := counter(t, s, f.ID); n < at {
			t.Fatalf("fork's counter %d is behind the source's %d: the process did not carry over", n, at)
		}
		if r := s.exec(t, f.ID, client.ExecRequest{Cmd: "cat /data/f42"}); r.Stdout != "f42\n" {
			t.Fatalf("fork's files: %q", r.Stdout)
		}
		ids = append(ids, f.ID)
	}
	// Each writes its own copy.
	for _, id := range ids {
		s.exec(t, id, client.ExecRequest{Cmd: "echo " + id + " > /data/who"})
	}
	time.Sleep(200 * time.Millisecond)
	for _, id := range ids {
		if r := s.exec(t, id, client.ExecRequest{Cmd: "cat /data/who"}); strings.TrimSpace(r.Stdout) != id {
			t.Fatalf("%s sees %q: files are shared", id, r.Stdout)
		}
		before := counter(t, s, id)
		time.Sleep(200 * time.Millisecond)
		if counter(t, s, id) <= before {
			t.Fatalf("%s: the process is not running", id)
		}
	}
	if _, err := s.c.Fork(ctx, src.ID, 0); !isAPIError(err, 400) {
		t.Fatalf("fork count 0: %v", err)
	}
	rc := s.create(t, client.CreateRequest{Image: "busybox", Runtime: "runc"})
	if _, err := s.c.Fork(ctx, rc.ID, 1); !isAPIError(err, 409) {
		t.Fatalf("forking runc: %v, want 409", err)
	}
	for _, f := range forks {
		if _, err := s.c.DeleteSandbox(ctx, f.ID); err != nil {
			t.Fatal(err)
		}
		if tr := traces(t, s, f.ID); len(tr) > 0 {
			t.Fatalf("deleted fork left:\n%s", strings.Join(tr, "\n"))
		}
	}
}
