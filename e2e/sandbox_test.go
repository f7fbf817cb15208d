package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/client"
)

func TestExec(t *testing.T) {
	s := startServer(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt, Env: map[string]string{"FROM_SANDBOX": "yes", "SHADOWED": "sandbox"}})
			if sb.Runtime != rt || sb.BootPath != "cold_boot" || len(sb.ID) != 24 || !strings.HasPrefix(sb.ID, "sbx_") {
				t.Fatalf("sandbox view %+v", sb)
			}
			for _, k := range []string{"image_ms", "boot_ms", "agent_ms", "total_ms"} {
				if _, ok := sb.Timings[k]; !ok {
					t.Fatalf("timings lack %s: %v", k, sb.Timings)
				}
			}
			cases := []struct {
				name           string
				req            client.ExecRequest
				code           int
				stdout, stderr string
			}{
				{"cmd", client.ExecRequest{Cmd: "echo hi"}, 0, "hi\n", ""},
				{"argv", client.ExecRequest{Argv: []string{"echo", "a b", "c"}}, 0, "a b c\n", ""},
				{"exit code", client.ExecRequest{Cmd: "exit 42"}, 42, "", ""},
				{"stderr", client.ExecRequest{Cmd: "echo oops >&2; exit 1"}, 1, "", "oops\n"},
				{"stdin", client.ExecRequest{Cmd: "wc -c", Stdin: "12345"}, 0, "5\n", ""},
				{"env", client.ExecRequest{Cmd: "echo $FROM_SANDBOX $SHADOWED $FROM_REQUEST", Env: map[string]string{"SHADOWED": "request", "FROM_REQUEST": "r"}}, 0, "yes request r\n", ""},
				{"cwd", client.ExecRequest{Cmd: "pwd", Cwd: "/tmp"}, 0, "/tmp\n", ""},
				{"missing command", client.ExecRequest{Argv: []string{"/nope"}}, 127, "", ""},
				{"timeout", client.ExecRequest{Cmd: "echo started; sleep 30", TimeoutSeconds: 1}, 124, "started\n", ""},
				{"isolated hostname", client.ExecRequest{Cmd: "hostname"}, 0, strings.ReplaceAll(sb.ID, "_", "-") + "\n", ""},
			}
			for _, tc := range cases {
				res := s.exec(t, sb.ID, tc.req)
				stderrOK := res.Stderr == tc.stderr || (tc.name == "missing command" && res.Stderr != "")
				if res.ExitCode != tc.code || res.Stdout != tc.stdout || !stderrOK {
					t.Errorf("%s: got exit=%d stdout=%q stderr=%q; want exit=%d stdout=%q stderr=%q",
						tc.name, res.ExitCode, res.Stdout, res.Stderr, tc.code, tc.stdout, tc.stderr)
				}
				if tc.name == "timeout" && (!res.TimedOut || res.DurationMs > 5000) {
					t.Errorf("timeout: %+v", res)
				}
			}
		})
	}
}

// TestExecStreaming checks both streaming variants deliver output as it is
// produced, in order, and that the WebSocket one takes stdin.
func TestExecStreaming(t *testing.T) {
	s := startServer(t, "")
	sb := s.create(t, client.CreateRequest{Image: "busybox"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var lines []string
	var times []time.Time
	var exit *int
	for f, err := range s.c.ExecFrames(ctx, sb.ID, &client.ExecRequest{Cmd: "for i in 1 2 3 4; do echo n$i; sleep 0.25; done; exit 3"}) {
		if err != nil {
			t.Fatal(err)
		}
		switch f.Type {
		case "stdout":
			lines = append(lines, f.Data)
			times = append(times, time.Now())
		case "exit":
			exit = f.ExitCode
		}
	}
	if strings.Join(lines, "") != "n1\nn2\nn3\nn4\n" || exit == nil || *exit != 3 {
		t.Fatalf("ndjson frames %q exit %v", lines, exit)
	}
	if spread := times[len(times)-1].Sub(times[0]); spread < 500*time.Millisecond {
		t.Fatalf("ndjson output arrived all at once (spread %v): not streamed", spread)
	}

	sess, err := s.c.ExecInteractive(ctx, sb.ID, &client.ExecRequest{Cmd: "while read l; do echo got:$l; done; echo done >&2"})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var out, errOut strings.Builder
	for i := 1; i <= 3; i++ {
		if err := sess.Stdin(ctx, []byte(fmt.Sprintf("line%d\n", i))); err != nil {
			t.Fatal(err)
		}
		f, err := sess.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Each line comes back before the next is sent: interactive.
		if f.Type != "stdout" || f.Data != fmt.Sprintf("got:line%d\n", i) {
			t.Fatalf("frame %d: %+v", i, f)
		}
		out.WriteString(f.Data)
	}
	_ = sess.CloseStdin(ctx)
	for {
		f, err := sess.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == "stderr" {
			errOut.WriteString(f.Data)
		}
		if f.Type == "exit" {
			if *f.ExitCode != 0 || errOut.String() != "done\n" {
				t.Fatalf("exit %d stderr %q", *f.ExitCode, errOut.String())
			}
			break
		}
	}
}

func TestFiles(t *testing.T) {
	s := startServer(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
			ctx := context.Background()
			// A directory up and back down with the Go SDK, as tar.
			src := t.TempDir()
			os.MkdirAll(filepath.Join(src, "a/b"), 0o755)
			os.WriteFile(filepath.Join(src, "a/b/f.txt"), []byte("deep\n"), 0o640)
			os.Symlink("a/b/f.txt", filepath.Join(src, "link"))
			if _, err := s.c.UploadDir(ctx, sb.ID, src, "/up"); err != nil {
				t.Fatal(err)
			}
			if r := s.exec(t, sb.ID, client.ExecRequest{Cmd: "cat /up/link; stat -c %a /up/a/b/f.txt"}); r.Stdout != "deep\n640\n" {
				t.Fatalf("uploaded dir: %+v", r)
			}
			dst := filepath.Join(t.TempDir(), "down")
			if err := s.c.DownloadDir(ctx, sb.ID, "/up", dst); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(dst, "link")); string(b) != "deep\n" {
				t.Fatalf("downloaded dir: %q", b)
			}
			data := make([]byte, 10<<20)
			_, _ = rand.Read(data)
			fi, err := s.c.WriteFile(ctx, sb.ID, "/data/blobs/big.bin", bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size != int64(len(data)) {
				t.Fatalf("wrote %d bytes, view says %d", len(data), fi.Size)
			}
			rc, err := s.c.ReadFile(ctx, sb.ID, "/data/blobs/big.bin")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("10 MB round trip: %d bytes back, equal=%v, err=%v", len(got), bytes.Equal(got, data), err)
			}
			// The sandbox sees the same bytes.
			res := s.exec(t, sb.ID, client.ExecRequest{Cmd: "wc -c < /data/blobs/big.bin"})
			if strings.TrimSpace(res.Stdout) != fmt.Sprint(len(data)) {
				t.Fatalf("inside the sandbox the file has %q bytes", res.Stdout)
			}
			if _, err := s.c.Mkdir(ctx, sb.ID, "/data/empty/dir"); err != nil {
				t.Fatal(err)
			}
			entries, err := s.c.ListFiles(ctx, sb.ID, "/data")
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 2 || entries[0].Name != "blobs" || entries[1].Name != "empty" || entries[0].Type != "dir" {
				t.Fatalf("list /data: %+v", entries)
			}
			st, err := s.c.StatFile(ctx, sb.ID, "/data/blobs/big.bin")
			if err != nil || st.Type != "file" || st.Size != int64(len(data)) {
				t.Fatalf("stat: %+v %v", st, err)
			}
			if err := s.c.RemoveFile(ctx, sb.ID, "/data", true); err != nil {
				t.Fatal(err)
			}
			if _, err := s.c.ReadFile(ctx, sb.ID, "/data/blobs/big.bin"); !isAPIError(err, 404) {
				t.Fatalf("read after remove: %v, want 404", err)
			}
			if status, body := s.raw(t, "GET", "/v1/sandboxes/"+sb.ID+"/files?path=relative", s.key, ""); status != 400 || field(body) != "path" {
				t.Fatalf("relative path: %d %v", status, body)
			}
		})
	}
}

func isAPIError(err error, status int) bool {
	e, ok := err.(*client.Error)
	return ok && e.Status == status
}

func field(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	f, _ := e["field"].(string)
	return f
}

func TestPTY(t *testing.T) {
	s := startServer(t, "")
	for _, rt := range runtimes {
		t.Run(rt, func(t *testing.T) {
			sb := s.create(t, client.CreateRequest{Image: "busybox", Runtime: rt})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			pty, err := s.c.PTY(ctx, sb.ID, 90, 20)
			if err != nil {
				t.Fatal(err)
			}
			defer pty.Close()
			var screen bytes.Buffer
			expect := func(want string) {
				t.Helper()
				buf := make([]byte, 4096)
				for !strings.Contains(screen.String(), want) {
					n, err := pty.Read(buf)
					if err != nil {
						t.Fatalf("waiting for %q: %v; screen: %q", want, err, screen.String())
					}
					screen.Write(buf[:n])
				}
			}
			write := func(s string) {
				if _, err := pty.Write([]byte(s)); err != nil {
					t.Fatal(err)
				}
			}
			write("tty; stty size; echo echo-$((40+2))\n")
			expect("/dev/pts/")
			expect("20 90")
			expect("echo-42")
			if err := pty.Resize(120, 40); err != nil {
				t.Fatal(err)
			}
			write("stty size\n")
			expect("40 120")
		})
	}
	if status, _ := s.raw(t, "GET", "/v1/sandboxes/sbx_aaaaaaaaaaaaaaaaaaaa/pty", s.key, ""); status != 404 {
		t.Fatalf("pty on unknown sandbox: %d, want 404", status)
	}
}
