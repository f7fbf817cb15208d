package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

// TestE2BSDK runs E2B's own JavaScript SDK (the npm package "e2b",
// pinned in e2e/e2b/package-lock.json, installed by make test) against
// warren on each runtime, configured only by E2B's environment variables.
func TestE2BSDK(t *testing.T) {
	dir, _ := filepath.Abs("e2b")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "e2b", "package.json")); err != nil {
		t.Fatalf("the e2b npm package is not installed: run make e2b-sdk (make test does): %v", err)
	}
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			// Its own image directory: the suite snapshots images.
			imgs := filepath.Join(t.TempDir(), "images")
			if err := os.MkdirAll(imgs, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"base", "busybox"} {
				if err := os.Symlink(filepath.Join(imageDir, name), filepath.Join(imgs, name)); err != nil {
					t.Fatal(err)
				}
			}
			s := startServer(t, "", "WARREN_RUNTIME="+rt, "WARREN_IMAGE_DIR="+imgs)
			cmd := exec.Command("node", "--test", "--test-reporter=spec", "e2b.test.mjs")
			cmd.Dir = dir
			cmd.Env = append(environWithout("E2B_API_KEY", "E2B_DOMAIN", "E2B_DEBUG"),
				"E2B_API_URL="+s.url, "E2B_SANDBOX_URL="+s.url, "E2B_API_KEY="+s.key, "WARREN_TEST_RUNTIME="+rt)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("node --test e2b.test.mjs: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "ℹ fail 0") || !strings.Contains(string(out), "ℹ skipped 0") {
				t.Fatalf("unexpected summary:\n%s", out)
			}
			t.Logf("the e2b SDK suite passed on %s in %v", rt, time.Since(start).Round(time.Second))
			readmeE2BExample(t, dir, cmd.Env)
			left, err := s.c.ListSandboxes(context.Background(), client.ListOptions{States: []client.State{"running", "paused"}})
			if err != nil {
				t.Fatal(err)
			}
			for _, sb := range left {
				t.Errorf("the suite left sandbox %s %s", sb.ID, sb.State)
			}
		})
	}
}

// readmeE2BExample runs the README's E2B example as written.
func readmeE2BExample(t *testing.T, dir string, env []string) {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "## Already on E2B?")
	_, code, ok2 := strings.Cut(sec, "```js\n")
	code, _, ok3 := strings.Cut(code, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("the README has no E2B example under \"## Already on E2B?\"")
	}
	f := filepath.Join(dir, "readme-example.mjs")
	if err := os.WriteFile(f, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f)
	cmd := exec.Command("node", f)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "hello from e2b on warren\n\nkept in the sandbox\n" {
		t.Fatalf("the README's E2B example: %v\n%s", err, out)
	}
}
