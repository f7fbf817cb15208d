package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/wire"
)

func newOrg(t *testing.T, s *Store, id string, q wire.Quotas) {
	t.Helper()
	if err := s.InsertOrg(context.Background(), Org{ID: id, Name: id, Quotas: q, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func sized(id, org, state string, cpu float64, mem, disk int) *Sandbox {
	now := time.Now()
	return &Sandbox{ID: id, Org: org, State: state, Runtime: "runc", Image: "busybox", Spec: []byte(`{}`),
		CreatedAt: now, UpdatedAt: now, CPU: cpu, MemoryMB: mem, DiskMB: disk}
}

// Twenty creates at once against a quota of five: exactly five pass,
// whatever the interleaving.
func TestQuotaRaceDoesNotOvershoot(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		newOrg(t, s, "acme", wire.Quotas{MaxSandboxes: 5})
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.InsertSandbox(ctx, sized(fmt.Sprintf("sbx_%02d", i), "acme", "creating", 1, 64, 100))
			}()
		}
		wg.Wait()
		close(errs)
		ok, refused := 0, 0
		for err := range errs {
			var qe *QuotaError
			switch {
			case err == nil:
				ok++
			case errors.As(err, &qe) && qe.Field == "max_sandboxes":
				refused++
			default:
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if ok != 5 || refused != 15 {
			t.Fatalf("%d admitted, %d refused; want 5 and 15", ok, refused)
		}
		if u, _ := s.Use(ctx, "acme"); u.Sandboxes != 5 {
			t.Fatalf("use = %+v", u)
		}
	})
}

func TestQuotaFields(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		newOrg(t, s, "acme", wire.Quotas{MaxCPU: 2, MaxMemoryMB: 1024, MaxDiskMB: 1000})
		if err := s.InsertSandbox(ctx, sized("sbx_1", "acme", "creating", 1.5, 512, 500)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			sb    *Sandbox
			field string
		}{
			{sized("sbx_2", "acme", "creating", 1, 64, 100), "max_cpu"},
			{sized("sbx_3", "acme", "creating", 0.5, 600, 100), "max_memory_mb"},
			{sized("sbx_4", "acme", "creating", 0.5, 64, 600), "max_disk_mb"},
		} {
			var qe *QuotaError
			if err := s.InsertSandbox(ctx, c.sb); !errors.As(err, &qe) || qe.Field != c.field {
				t.Errorf("%s: %v; want a refusal by %s", c.sb.ID, err, c.field)
			}
			if _, err := s.GetSandbox(ctx, "", c.sb.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("a refused create left a row: %v", err)
			}
		}
		// Paused, it holds only its disk; resuming is checked again.
		if _, err := s.Transition(ctx, "sbx_1", nil, "paused", Change{}); err != nil {
			t.Fatal(err)
		}
		if err := s.InsertSandbox(ctx, sized("sbx_5", "acme", "creating", 1.5, 512, 400)); err != nil {
			t.Fatalf("a create while the other is paused: %v", err)
		}
		var qe *QuotaError
		if _, err := s.Transition(ctx, "sbx_1", []string{"paused"}, "resuming", Change{}); !errors.As(err, &qe) || qe.Field != "max_cpu" {
			t.Fatalf("resume over the quota: %v", err)
		}
		if sb, _ := s.GetSandbox(ctx, "", "sbx_1"); sb.State != "paused" {
			t.Fatalf("a refused resume changed the state to %s", sb.State)
		}
		// The reconciler records what is, quotas or not.
		if _, err := s.Transition(ctx, "sbx_1", nil, "running", Change{Unchecked: true}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestCreatesPerMinute(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		newOrg(t, s, "acme", wire.Quotas{CreatesPerMinute: 2})
		for i := range 2 {
			sb := sized(fmt.Sprintf("sbx_%d", i), "acme", "creating", 1, 64, 0)
			if err := s.InsertSandbox(ctx, sb); err != nil {
				t.Fatal(err)
			}
			// Ended ones still count: the quota is on the rate.
			if _, err := s.Transition(ctx, sb.ID, nil, "deleted", Change{}); err != nil {
				t.Fatal(err)
			}
		}
		var qe *QuotaError
		if err := s.InsertSandbox(ctx, sized("sbx_x", "acme", "creating", 1, 64, 0)); !errors.As(err, &qe) || qe.Field != "creates_per_minute" {
			t.Fatalf("third create in a minute: %v", err)
		}
	})
}

// A usage period is open exactly while a sandbox runs, and moves with it
// in the same transaction.
func TestUsagePeriods(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		start := time.Now()
		if err := s.InsertSandbox(ctx, sized("sbx_u", "default", "creating", 2, 1024, 2048)); err != nil {
			t.Fatal(err)
		}
		open := func(want int) {
			t.Helper()
			if n, err := s.OpenPeriods(ctx, "sbx_u"); err != nil || n != want {
				t.Fatalf("open periods = %d, %v; want %d", n, err, want)
			}
		}
		open(0)
		for _, step := range []struct {
			to   string
			open int
		}{{"running", 1}, {"pausing", 1}, {"paused", 0}, {"resuming", 0}, {"running", 1}, {"forking", 1}, {"running", 1}, {"deleting", 0}, {"deleted", 0}} {
			if _, err := s.Transition(ctx, "sbx_u", nil, step.to, Change{}); err != nil {
				t.Fatal(err)
			}
			open(step.open)
		}
		ps, err := s.Periods(ctx, "default", start.Add(-time.Second), time.Now().Add(time.Second))
		if err != nil || len(ps) != 2 {
			t.Fatalf("periods = %+v, %v; want two", ps, err)
		}
		for _, p := range ps {
			if p.End.IsZero() || p.End.Before(p.Start) || p.CPU != 2 || p.MemoryMB != 1024 || p.DiskMB != 2048 {
				t.Fatalf("period %+v", p)
			}
		}
		// A pool's sandbox belongs to no one: not metered until claimed.
		if err := s.InsertSandbox(ctx, sized("sbx_p", "", "creating", 1, 64, 0)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Transition(ctx, "sbx_p", nil, "pooled", Change{}); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.OpenPeriods(ctx, "sbx_p"); n != 0 {
			t.Fatalf("a pooled sandbox is metered")
		}
		if _, err := s.Claim(ctx, "sbx_p", "default", nil, []byte(`{}`), time.Time{}); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.OpenPeriods(ctx, "sbx_p"); n != 1 {
			t.Fatalf("a claimed sandbox is not metered")
		}
	})
}

func TestVolumeMounts(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		newOrg(t, s, "acme", wire.Quotas{MaxVolumes: 1, MaxVolumeMB: 100})
		if err := s.InsertVolume(ctx, Volume{ID: "vol_1", Org: "acme", Name: "cache", SizeMB: 100}); err != nil {
			t.Fatal(err)
		}
		var qe *QuotaError
		if err := s.InsertVolume(ctx, Volume{ID: "vol_2", Org: "acme", Name: "more", SizeMB: 1}); !errors.As(err, &qe) || qe.Field != "max_volumes" {
			t.Fatalf("a second volume: %v", err)
		}
		writer := sized("sbx_w", "acme", "creating", 1, 64, 0)
		writer.Mounts = []Mount{{VolumeID: "vol_1"}}
		if err := s.InsertSandbox(ctx, writer); err != nil {
			t.Fatal(err)
		}
		second := sized("sbx_w2", "acme", "creating", 1, 64, 0)
		second.Mounts = []Mount{{VolumeID: "vol_1"}}
		if err := s.InsertSandbox(ctx, second); !errors.Is(err, ErrInUse) {
			t.Fatalf("a second writer: %v; want ErrInUse", err)
		}
		reader := sized("sbx_r", "acme", "creating", 1, 64, 0)
		reader.Mounts = []Mount{{VolumeID: "vol_1", ReadOnly: true}}
		if err := s.InsertSandbox(ctx, reader); err != nil {
			t.Fatalf("a reader beside the writer: %v", err)
		}
		// Another org's volume does not exist for this one.
		newOrg(t, s, "other", wire.Quotas{})
		thief := sized("sbx_t", "other", "creating", 1, 64, 0)
		thief.Mounts = []Mount{{VolumeID: "vol_1", ReadOnly: true}}
		if err := s.InsertSandbox(ctx, thief); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another org's volume: %v; want ErrNotFound", err)
		}
		if err := s.DeleteVolume(ctx, "acme", "vol_1"); !errors.Is(err, ErrInUse) {
			t.Fatalf("delete while mounted: %v", err)
		}
		if err := s.DeleteOrg(ctx, "acme"); !errors.Is(err, ErrInUse) {
			t.Fatalf("delete an org with sandboxes: %v", err)
		}
		for _, id := range []string{"sbx_w", "sbx_r"} {
			if _, err := s.Transition(ctx, id, nil, "deleted", Change{}); err != nil {
				t.Fatal(err)
			}
		}
		if v, err := s.GetVolume(ctx, "acme", "cache"); err != nil || len(v.MountedBy) != 0 {
			t.Fatalf("mounts after the sandboxes ended: %+v, %v", v, err)
		}
		if err := s.DeleteVolume(ctx, "other", "vol_1"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another org deletes the volume: %v", err)
		}
		if err := s.DeleteVolume(ctx, "acme", "vol_1"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteOrg(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestKeys(t *testing.T) {
	backends(t, func(t *testing.T) {
		s, _ := open(t)
		ctx := context.Background()
		if err := s.InsertAPIKey(ctx, APIKey{ID: "key_1", Org: "nope", Name: "x", Hash: "h1"}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a key for a missing org: %v", err)
		}
		exp := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
		k := APIKey{ID: "key_2", Org: "default", Name: "ci", Hash: "h2", Prefix: "wrn_ab", Scopes: []string{"sandboxes:read"}, ExpiresAt: exp}
		if err := s.InsertAPIKey(ctx, k); err != nil {
			t.Fatal(err)
		}
		got, err := s.APIKeyByHash(ctx, "h2")
		if err != nil || got.Scopes[0] != "sandboxes:read" || !got.ExpiresAt.Equal(exp) || got.Prefix != "wrn_ab" || got.Bootstrap {
			t.Fatalf("key = %+v, %v", got, err)
		}
		if err := s.DeleteAPIKey(ctx, "other", "key_2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("another org revokes the key: %v", err)
		}
		if err := s.DeleteAPIKey(ctx, "default", "key_2"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.APIKeyByHash(ctx, "h2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a revoked key is found: %v", err)
		}
	})
}
