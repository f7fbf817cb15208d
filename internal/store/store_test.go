package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	pgtest.StopShared()
	os.Exit(code)
}

// backends runs test once on each database warren can keep its state in;
// open opens the one the subtest is named after.
func backends(t *testing.T, test func(t *testing.T)) {
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, test)
	}
}

func open(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "warren.db")
	if strings.HasSuffix(t.Name(), "/postgres") {
		path = pgtest.Database(t)
	}
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func insert(t *testing.T, s *Store, id, org string, md map[string]string) {
	t.Helper()
	now := time.Now()
	err := s.InsertSandbox(context.Background(), &Sandbox{ID: id, Org: org, State: "creating", Runtime: "runc", Image: "busybox",
		Spec: []byte(`{}`), Metadata: md, CreatedAt: now, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTransitionIsGuarded(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		insert(t, s, "sbx_1", "default", nil)
		if _, err := s.Transition(ctx, "sbx_1", []string{"running"}, "deleting", Change{}); !errors.Is(err, ErrConflict) {
			t.Fatalf("transition from the wrong state: %v, want ErrConflict", err)
		}
		if _, err := s.Transition(ctx, "sbx_nope", []string{"creating"}, "running", Change{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("transition of a missing row: %v, want ErrNotFound", err)
		}
		boot := "cold_boot"
		sb, err := s.Transition(ctx, "sbx_1", []string{"creating"}, "running", Change{BootPath: &boot, Timings: map[string]int64{"total_ms": 5}})
		if err != nil || sb.State != "running" || sb.BootPath != "cold_boot" || sb.Timings["total_ms"] != 5 {
			t.Fatalf("transition: %+v %v", sb, err)
		}
		// Two racing deletes: exactly one wins.
		var wg sync.WaitGroup
		wins := make(chan bool, 8)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Transition(ctx, "sbx_1", []string{"running"}, "deleting", Change{})
				wins <- err == nil
			}()
		}
		wg.Wait()
		close(wins)
		n := 0
		for w := range wins {
			if w {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d racing transitions won, want exactly 1", n)
		}
	})
}

func TestStateSurvivesReopen(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, path := open(t)
		ctx := context.Background()
		insert(t, s, "sbx_2", "default", map[string]string{"team": "a"})
		reason := "kept"
		if _, err := s.Transition(ctx, "sbx_2", nil, "failed", Change{Reason: &reason, Ended: true}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s2, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		sb, err := s2.GetSandbox(ctx, "default", "sbx_2")
		if err != nil || sb.State != "failed" || sb.Reason != "kept" || sb.EndedAt.IsZero() || sb.Metadata["team"] != "a" {
			t.Fatalf("after reopen: %+v %v", sb, err)
		}
		if _, err := s2.GetSandbox(ctx, "other-org", "sbx_2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another org's sandbox: %v, want ErrNotFound", err)
		}
	})
}

func TestListFilters(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		insert(t, s, "sbx_a", "default", map[string]string{"team": "a", "odd \"key\"": "x"})
		insert(t, s, "sbx_b", "default", map[string]string{"team": "b"})
		if err := s.InsertOrg(ctx, Org{ID: "other", Name: "other"}); err != nil {
			t.Fatal(err)
		}
		insert(t, s, "sbx_c", "other", map[string]string{"team": "a"})
		if _, err := s.Transition(ctx, "sbx_b", nil, "deleted", Change{}); err != nil {
			t.Fatal(err)
		}
		list, _ := s.ListSandboxes(ctx, Filter{Org: "default"})
		if len(list) != 1 || list[0].ID != "sbx_a" {
			t.Fatalf("default list hides deleted and other orgs: %+v", list)
		}
		list, _ = s.ListSandboxes(ctx, Filter{Org: "default", States: []string{"deleted"}})
		if len(list) != 1 || list[0].ID != "sbx_b" {
			t.Fatalf("state filter: %+v", list)
		}
		list, _ = s.ListSandboxes(ctx, Filter{Metadata: map[string]string{"team": "a"}})
		if len(list) != 2 {
			t.Fatalf("metadata filter across orgs: %+v", list)
		}
		list, _ = s.ListSandboxes(ctx, Filter{Metadata: map[string]string{`odd "key"`: "x"}})
		if len(list) != 1 || list[0].ID != "sbx_a" {
			t.Fatalf("metadata key with quotes: %+v", list)
		}
	})
}

// A database written by a release from before schema versions is
// migrated in place, and keeps every row.
func TestUpgradeFromFirstReleases(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "warren.db")
	dump, err := os.ReadFile("testdata/release-ba52a1e.sql")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, string(dump)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	st, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := st.SchemaVersion(ctx); err != nil || v != 5 {
		t.Fatalf("schema version %d, %v; want 5, the latest", v, err)
	}
	running, err := st.GetSandbox(ctx, "default", "sbx_626jfsa7xd3757s6zsmq")
	if err != nil || running.State != "running" || running.Metadata["purpose"] != "upgrade-fixture" {
		t.Fatalf("the old running sandbox: %+v, %v", running, err)
	}
	deleted, err := st.GetSandbox(ctx, "default", "sbx_2y5nim35m46ewbk7bksa")
	if err != nil || deleted.State != "deleted" || deleted.Reason != "deleted by request" {
		t.Fatalf("the old deleted sandbox: %+v, %v", deleted, err)
	}
	if k, err := st.APIKeyByHash(ctx, "1e892d96dc68b7eb4b64abf192c519685e980c97cc7692f8dae17907b266beee"); err != nil || k.Name != "admin (WARREN_ADMIN_KEY)" ||
		!k.Bootstrap || len(k.Scopes) != 1 || k.Scopes[0] != "admin" || k.Org != "default" {
		t.Fatalf("the old admin key: %+v, %v", k, err)
	}
	// Tenancy: the old sandboxes' org exists, what they hold is read from
	// their specs, and the running one is being metered from now.
	if o, err := st.GetOrg(ctx, "default"); err != nil || o.Name != "default" {
		t.Fatalf("the default org: %+v, %v", o, err)
	}
	if running.CPU <= 0 || running.MemoryMB <= 0 {
		t.Fatalf("the old running sandbox holds cpu %g, memory %d", running.CPU, running.MemoryMB)
	}
	if n, err := st.OpenPeriods(ctx, running.ID); err != nil || n != 1 {
		t.Fatalf("open usage periods of the running sandbox: %d, %v; want 1", n, err)
	}
	// What the new schema added works on the old data.
	if err := st.RevokeToken(ctx, "tok_1", running.ID, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// Opening again migrates nothing and loses nothing.
	st, err = Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ok, err := st.TokenRevoked(ctx, "tok_1"); err != nil || !ok {
		t.Fatalf("revocation lost on reopen: %v %v", ok, err)
	}
}

// A database a newer warren migrated is refused, and left as it was.
func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "warren.db")
	st, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, _ := sql.Open("sqlite", "file:"+path)
	if _, err := db.ExecContext(ctx, `INSERT INTO schema_versions(version_id, is_applied) VALUES(99, 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, _ := os.ReadFile(path)
	_, err = Open(ctx, path)
	if !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "version 99") || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v; want ErrNewerSchema naming the file and version 99", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a refused open changed the database")
	}
}
