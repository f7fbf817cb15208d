package e2e

import (
	"context"
	"database/sql"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"

	_ "modernc.org/sqlite"
)

// previousRelease is the last warren before schema versions, whose data
// dirs every later warren must take over.
const previousRelease = "ba52a1e5d2b0e9fd7a0555914f390aefc38ab5e2"

// buildRelease builds warren as it was at commit into a temporary
// directory, from this repository's history.
func buildRelease(t *testing.T, commit string) string {
	t.Helper()
	root, _ := filepath.Abs("..")
	if err := exec.Command("git", "-C", root, "cat-file", "-e", commit+"^{commit}").Run(); err != nil {
		t.Skipf("the repository has no commit %s (a shallow clone?): cannot build the release to upgrade from", commit[:7])
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", "git -C \"$1\" archive \"$2\" | tar -x -C \"$3\"", "sh", root, commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("git archive %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "warren-"+commit[:7])
	build := exec.Command("go", "build", "-o", bin, "./cmd/warren")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build warren %s: %v\n%s", commit[:7], err, out)
	}
	return bin
}

// A node upgraded in place: sandboxes the previous release started keep
// running, with their files and processes, are adopted, and answer —
// and pause and resume under the new warren; its database is migrated.
// A data dir a newer warren migrated is refused.
func TestUpgrade(t *testing.T) {
	old := buildRelease(t, previousRelease)
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	s := startServerWith(t, data, old, []string{"--runsc", runscBin})
	var ids []string
	for _, rt := range runtimes {
		sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt, Metadata: map[string]string{"from": "previous release"}})
		if res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "echo kept > /root/file; sleep 1000 >/dev/null 2>&1 & echo $! > /root/pid"}); res.ExitCode != 0 {
			t.Fatalf("%s: %+v", rt, res)
		}
		ids = append(ids, sb.ID)
	}
	s.stopKeepingSandboxes()

	s = startServer(t, data)
	for _, id := range ids {
		sb, err := s.c.GetSandbox(context.Background(), id)
		if err != nil || sb.State != "running" || sb.Metadata["from"] != "previous release" {
			t.Fatalf("%s after the upgrade: %+v, %v", id, sb, err)
		}
		if res := s.exec(t, id, client.ExecRequest{Cmd: "cat /root/file; kill -0 $(cat /root/pid) && echo alive"}); res.Stdout != "kept\nalive\n" {
			t.Fatalf("%s after the upgrade: %+v", id, res)
		}
		if sb.Runtime != "gvisor" {
			continue
		}
		// A checkpoint of a sandbox the previous release booted restores.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if _, err := s.c.Pause(ctx, id); err != nil {
			t.Fatalf("pause %s: %v", id, err)
		}
		if _, err := s.c.Resume(ctx, id); err != nil {
			t.Fatalf("resume %s: %v", id, err)
		}
		cancel()
		if res := s.exec(t, id, client.ExecRequest{Cmd: "kill -0 $(cat /root/pid) && echo alive"}); res.Stdout != "alive\n" {
			t.Fatalf("%s after pause and resume: %+v", id, res)
		}
	}
	s.stop()

	db, err := sql.Open("sqlite", filepath.Join(data, "warren.db"))
	if err != nil {
		t.Fatal(err)
	}
	var version int
	if err := db.QueryRow(`SELECT MAX(version_id) FROM schema_versions`).Scan(&version); err != nil || version < 2 {
		t.Fatalf("schema version %d, %v: the upgrade did not migrate", version, err)
	}
	// Pretend a newer warren ran here since.
	if _, err := db.Exec(`INSERT INTO schema_versions(version_id, is_applied) VALUES(?, 1)`, version+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	cmd := exec.Command(warrenBin, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--runsc", runscBin)
	cmd.Env = append(os.Environ(), "WARREN_IMAGE_DIR="+imageDir)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "newer than this warren") {
		t.Fatalf("serve on a data dir a newer warren migrated: %v\n%s", err, out)
	}
}
