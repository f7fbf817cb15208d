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

// The TypeScript and Python SDKs' own suites, run against a real warren
// with both runtimes. make test installs what they need (the npm packages,
// Debian's python3-httpx, -websockets and -pytest) and builds the
// TypeScript SDK first; here a missing piece is a failure, not a skip.

func TestTypeScriptSDK(t *testing.T) {
	dir, _ := filepath.Abs("../sdk/typescript")
	for _, need := range []string{"node_modules/ws", "dist/esm/index.js", "dist/cjs/index.js"} {
		if _, err := os.Stat(filepath.Join(dir, need)); err != nil {
			t.Fatalf("the TypeScript SDK is not built (%s missing): run make sdk-typescript (make test does)", need)
		}
	}
	runSDKSuite(t, dir, "npm", "test")
}

func TestPythonSDK(t *testing.T) {
	dir, _ := filepath.Abs("../sdk/python")
	// Debian's python3, which has the packages make test installs.
	runSDKSuite(t, dir, "/usr/bin/python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
}

func runSDKSuite(t *testing.T, dir string, argv ...string) {
	// Its own image directory: the suites make and delete images.
	s := imageServer(t, filepath.Join(t.TempDir(), "images"))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WARREN_URL="+s.url, "WARREN_API_KEY="+s.key, "WARREN_TEST_RUNTIMES="+strings.Join(runtimes, ","),
		"PYTHONPATH="+dir, "PYTHONDONTWRITEBYTECODE=1")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	t.Logf("%s passed in %v", filepath.Base(dir), time.Since(start).Round(time.Second))
	// Every sandbox a suite made, it deleted.
	left, err := s.c.ListSandboxes(context.Background(), client.ListOptions{States: []client.State{"running", "paused"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range left {
		{
			t.Errorf("the suite left sandbox %s %s", sb.ID, sb.State)
		}
	}
}

// TestSDKHelloExamples runs the first example of each SDK's README, as
// written there, against a real warren, and checks the main README shows
// the same code.
func TestSDKHelloExamples(t *testing.T) {
	root, _ := filepath.Abs("..")
	mainReadme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "")
	env := append(os.Environ(), "WARREN_URL="+s.url, "WARREN_API_KEY="+s.key)
	for _, ex := range []struct{ readme, lang, file string }{
		{"sdk/python/README.md", "python", "hello.py"},
		{"sdk/typescript/README.md", "ts", "hello.mjs"},
		{"client/README.md", "go", "main.go"},
	} {
		t.Run(ex.lang, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(root, ex.readme))
			if err != nil {
				t.Fatal(err)
			}
			code := firstBlock(string(b), ex.lang)
			if code == "" {
				t.Fatalf("%s has no %s example", ex.readme, ex.lang)
			}
			if !strings.Contains(string(mainReadme), "```"+ex.lang+"\n"+code+"```") {
				t.Errorf("README.md does not show %s's example as written there", ex.readme)
			}
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, ex.file), []byte(code), 0o644); err != nil {
				t.Fatal(err)
			}
			var cmd *exec.Cmd
			switch ex.lang {
			case "python":
				cmd = exec.Command("/usr/bin/python3", ex.file)
				cmd.Env = append(env, "PYTHONPATH="+filepath.Join(root, "sdk/python"), "PYTHONDONTWRITEBYTECODE=1")
			case "ts":
				// As an installed package: node_modules/@warrenhq/warren.
				pkg := filepath.Join(dir, "node_modules/@warrenhq")
				if err := os.MkdirAll(pkg, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(filepath.Join(root, "sdk/typescript"), filepath.Join(pkg, "warren")); err != nil {
					t.Fatal(err)
				}
				cmd = exec.Command("node", ex.file)
				cmd.Env = env
			case "go":
				mod := "module hello\n\ngo 1.26\n\nrequire github.com/warrenhq/warren v0.0.0\n\nreplace github.com/warrenhq/warren => " + root + "\n"
				if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644); err != nil {
					t.Fatal(err)
				}
				tidy := exec.Command("go", "mod", "tidy")
				tidy.Dir = dir
				if out, err := tidy.CombinedOutput(); err != nil {
					t.Fatalf("go mod tidy: %v\n%s", err, out)
				}
				cmd = exec.Command("go", "run", ".")
				cmd.Env = env
			}
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "hello from ") {
				t.Fatalf("the %s example: %v\n%s", ex.lang, err, out)
			}
		})
	}
	// Each example deleted its sandbox.
	left, err := s.c.ListSandboxes(context.Background(), client.ListOptions{States: []client.State{"running"}})
	if err != nil || len(left) != 0 {
		t.Fatalf("examples left %d sandboxes running (%v)", len(left), err)
	}
}

// firstBlock is the first fenced code block in lang.
func firstBlock(md, lang string) string {
	_, rest, ok := strings.Cut(md, "```"+lang+"\n")
	if !ok {
		return ""
	}
	code, _, _ := strings.Cut(rest, "```")
	return code
}
