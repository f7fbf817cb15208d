package client

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/warrenhq/warren/wire"
)

// These tests need no warren: they pin the SDK's side of the contract
// against a stand-in server, on any OS. The SDK against a real warren is
// tested in e2e.

func TestErrorsCarryCodeAndField(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/sandboxes":
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(wire.ErrorBody{Error: wire.Error{Code: wire.CodeBadRequest, Message: "memory_mb must be at least 64", Field: "resources.memory_mb"}})
		case "/v1/sandboxes/sbx_gone":
			w.WriteHeader(404)
			json.NewEncoder(w).Encode(wire.ErrorBody{Error: wire.Error{Code: wire.CodeNotFound, Message: "sandbox sbx_gone not found"}})
		default:
			// A proxy's answer, not the API's.
			http.Error(w, "bad gateway", 502)
		}
	}))
	defer srv.Close()
	c := New(srv.URL, "k")
	c.Retries = 0
	ctx := context.Background()

	_, err := c.CreateSandbox(ctx, &CreateRequest{Resources: &Resources{MemoryMB: 1}})
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || !IsBadRequest(err) || Field(err) != "resources.memory_mb" {
		t.Fatalf("bad request: %#v", err)
	}
	if !strings.Contains(err.Error(), "resources.memory_mb") {
		t.Errorf("the message does not name the field: %v", err)
	}
	if _, err := c.GetSandbox(ctx, "sbx_gone"); !IsNotFound(err) {
		t.Fatalf("not found: %#v", err)
	}
	if _, err := c.Info(ctx); Code(err) != wire.CodeInternal || !strings.Contains(err.Error(), "bad gateway") {
		t.Fatalf("a proxy's 502: %#v", err)
	}
	if IsNotFound(errors.New("plain")) || Code(nil) != "" {
		t.Fatal("plain errors have no code")
	}
}

func TestRetriesOnlyWhatChangesNothing(t *testing.T) {
	var gets, posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := gets.Add(0)
		if r.Method == "GET" {
			n = gets.Add(1)
		} else {
			posts.Add(1)
		}
		if n < 3 || r.Method != "GET" {
			w.WriteHeader(503)
			return
		}
		json.NewEncoder(w).Encode(wire.Info{Version: "v"})
	}))
	defer srv.Close()
	c := New(srv.URL, "")
	info, err := c.Info(context.Background())
	if err != nil || info.Version != "v" || gets.Load() != 3 {
		t.Fatalf("GET after two 503s: %v %v (%d tries)", info, err, gets.Load())
	}
	if _, err := c.Pause(context.Background(), "sbx_x"); Code(err) != wire.CodeUnavailable || posts.Load() != 1 {
		t.Fatalf("a POST was retried (%d tries) or mislabelled: %v", posts.Load(), err)
	}
}

func TestExecFrames(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer key" {
			w.WriteHeader(401)
			return
		}
		var req wire.ExecRequest
		json.NewDecoder(r.Body).Decode(&req)
		enc := json.NewEncoder(w)
		code := 3
		enc.Encode(wire.Frame{Type: wire.FrameStdout, Data: "a"})
		enc.Encode(wire.Frame{Type: wire.FrameStderr, Data: "b"})
		if req.Cmd == "cut" {
			return // the connection ends without an exit
		}
		if req.Cmd == "fail" {
			enc.Encode(wire.Frame{Type: wire.FrameError, Message: "lost the agent"})
			return
		}
		enc.Encode(wire.Frame{Type: wire.FrameStdout, Data: "c"})
		enc.Encode(wire.Frame{Type: wire.FrameExit, ExitCode: &code, DurationMs: 7})
	}))
	defer srv.Close()
	c := New(srv.URL, "key")
	var order []string
	res, err := c.ExecStream(context.Background(), "sbx_x", &ExecRequest{Cmd: "ok"}, ExecHandlers{
		OnStdout: func(s string) { order = append(order, "out:"+s) },
		OnStderr: func(s string) { order = append(order, "err:"+s) },
	})
	if err != nil || res.ExitCode != 3 || res.DurationMs != 7 || strings.Join(order, ",") != "out:a,err:b,out:c" {
		t.Fatalf("stream: %+v %v %v", res, err, order)
	}
	for _, cmd := range []string{"cut", "fail"} {
		if _, err := c.ExecStream(context.Background(), "sbx_x", &ExecRequest{Cmd: cmd}, ExecHandlers{}); err == nil {
			t.Fatalf("%s: a stream without an exit passed", cmd)
		}
	}
	// Breaking out of the loop early is allowed.
	for f, err := range c.ExecFrames(context.Background(), "sbx_x", &ExecRequest{Cmd: "ok"}) {
		if err != nil || f.Data != "a" {
			t.Fatalf("%+v %v", f, err)
		}
		break
	}
}

// TestDownloadDirRefusesEscapes: a sandbox controls the tar stream it
// sends; the SDK writes nothing outside the target directory.
func TestDownloadDirRefusesEscapes(t *testing.T) {
	base := t.TempDir()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := tar.NewWriter(w)
		tw.WriteHeader(&tar.Header{Name: "ok.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
		tw.Write([]byte("ok"))
		switch r.URL.Query().Get("path") {
		case "/climb":
			tw.WriteHeader(&tar.Header{Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
			tw.Write([]byte("x"))
		case "/link":
			tw.WriteHeader(&tar.Header{Name: "l", Linkname: base, Typeflag: tar.TypeSymlink})
			tw.WriteHeader(&tar.Header{Name: "l/escaped", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1})
			tw.Write([]byte("x"))
		case "/big":
			tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 20})
			tw.Write(make([]byte, 1<<20))
		}
		tw.Close()
	}))
	defer srv.Close()
	c := New(srv.URL, "")
	ctx := context.Background()
	for _, p := range []string{"/climb", "/link", "/big"} {
		dst := filepath.Join(base, "dl"+strings.TrimPrefix(p, "/"))
		err := c.DownloadDir(ctx, "sbx_x", p, dst, DownloadOptions{MaxBytes: 1000})
		if err == nil {
			t.Errorf("%s: downloaded without an error", p)
		}
	}
	if _, err := os.Stat(filepath.Join(base, "escaped")); err == nil {
		t.Fatal("a download wrote outside its directory")
	}
	if err := c.DownloadDir(ctx, "sbx_x", "/plain", filepath.Join(base, "plain")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(base, "plain", "ok.txt")); string(b) != "ok" {
		t.Fatalf("plain download: %q", b)
	}
}

func TestNewFromEnv(t *testing.T) {
	t.Setenv("WARREN_URL", "http://example.test:1/")
	t.Setenv("WARREN_API_KEY", "wrn_x")
	c := NewFromEnv()
	if c.BaseURL != "http://example.test:1" || c.APIKey != "wrn_x" {
		t.Fatalf("%+v", c)
	}
	var _ io.ReadWriteCloser = (*PTYSession)(nil)
}
