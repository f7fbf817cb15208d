package e2e

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/warrenhq/warren/internal/envd/spec/filesystem"
	"github.com/warrenhq/warren/internal/envd/spec/filesystem/filesystemconnect"
	"github.com/warrenhq/warren/internal/envd/spec/process"
	"github.com/warrenhq/warren/internal/envd/spec/process/processconnect"
)

// TestE2BWatchers drives envd's directory watching over Connect as E2B's
// SDKs do: the stream (with keepalives and a deadline) and the watcher
// calls that keep changes until asked (E2B's Python SDK uses those).
func TestE2BWatchers(t *testing.T) {
	s := startServer(t, "", "WARREN_RUNTIME=runc")
	var sb struct {
		SandboxID       string `json:"sandboxID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	if st, body := e2bCall(t, "POST", s.url+"/v2/sandboxes", map[string]string{"X-API-KEY": s.key}, `{"templateID":"base"}`, &sb); st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	defer e2bCall(t, "DELETE", s.url+"/sandboxes/"+sb.SandboxID, map[string]string{"X-API-KEY": s.key}, "", nil)
	auth := func(h http.Header) {
		h.Set("E2b-Sandbox-Id", sb.SandboxID)
		h.Set("X-Access-Token", sb.EnvdAccessToken)
		h.Set("Authorization", "Basic cm9vdDo=") // user "root"
	}
	fs := filesystemconnect.NewFilesystemClient(http.DefaultClient, s.url, connect.WithProtoJSON())
	procs := processconnect.NewProcessClient(http.DefaultClient, s.url, connect.WithProtoJSON())
	ctx := context.Background()
	sh := func(script string) {
		t.Helper()
		req := connect.NewRequest(&process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sh", Args: []string{"-c", script}}})
		auth(req.Header())
		stream, err := procs.Start(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		defer stream.Close()
		for stream.Receive() {
			if end := stream.Msg().GetEvent().GetEnd(); end != nil {
				if end.GetExitCode() != 0 {
					t.Fatalf("%s: exit %d %s", script, end.GetExitCode(), end.GetStatus())
				}
				return
			}
		}
		t.Fatalf("%s: no end event: %v", script, stream.Err())
	}
	sh("mkdir -p /tmp/watched /tmp/polled")

	// The stream: a start event, changes with names relative to the
	// directory, keepalives at the interval asked for, and an end at the
	// caller's deadline.
	wctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	wreq := connect.NewRequest(&filesystem.WatchDirRequest{Path: "/tmp/watched", Recursive: true})
	auth(wreq.Header())
	wreq.Header().Set("Keepalive-Ping-Interval", "1")
	stream, err := fs.WatchDir(wctx, wreq)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() || stream.Msg().GetStart() == nil {
		t.Fatalf("first message is not a start: %v %v", stream.Msg(), stream.Err())
	}
	sh("mkdir /tmp/watched/sub && sleep 0.3 && echo x > /tmp/watched/sub/f.txt")
	var creates []string
	keepalives := 0
	for stream.Receive() {
		m := stream.Msg()
		if m.GetKeepalive() != nil {
			keepalives++
		}
		if ev := m.GetFilesystem(); ev != nil && ev.GetType() == filesystem.EventType_EVENT_TYPE_CREATE {
			creates = append(creates, ev.GetName())
		}
	}
	var ce *connect.Error
	if !errors.As(stream.Err(), &ce) || ce.Code() != connect.CodeDeadlineExceeded {
		t.Errorf("the stream ended with %v; want deadline_exceeded", stream.Err())
	}
	if len(creates) != 2 || creates[0] != "sub" || creates[1] != "sub/f.txt" {
		t.Errorf("created = %q; want sub, sub/f.txt", creates)
	}
	if keepalives < 2 {
		t.Errorf("%d keepalives in 4 s at an interval of 1 s", keepalives)
	}

	// Watchers keep changes until read.
	creq := connect.NewRequest(&filesystem.CreateWatcherRequest{Path: "/tmp/polled"})
	auth(creq.Header())
	w, err := fs.CreateWatcher(ctx, creq)
	if err != nil {
		t.Fatal(err)
	}
	id := w.Msg.GetWatcherId()
	sh("echo a > /tmp/polled/a && rm /tmp/polled/a")
	events := func() ([]*filesystem.FilesystemEvent, error) {
		req := connect.NewRequest(&filesystem.GetWatcherEventsRequest{WatcherId: id})
		auth(req.Header())
		resp, err := fs.GetWatcherEvents(ctx, req)
		if err != nil {
			return nil, err
		}
		return resp.Msg.GetEvents(), nil
	}
	var kinds []filesystem.EventType
	eventually(t, 10*time.Second, "the watcher to see the file come and go", func() error {
		evs, err := events()
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.GetName() != "a" {
				return errorf("event for %q", ev.GetName())
			}
			kinds = append(kinds, ev.GetType())
		}
		if len(kinds) == 0 || kinds[len(kinds)-1] != filesystem.EventType_EVENT_TYPE_REMOVE {
			return errorf("events so far: %v", kinds)
		}
		return nil
	})
	if kinds[0] != filesystem.EventType_EVENT_TYPE_CREATE {
		t.Errorf("first event %v; want create", kinds[0])
	}
	rreq := connect.NewRequest(&filesystem.RemoveWatcherRequest{WatcherId: id})
	auth(rreq.Header())
	if _, err := fs.RemoveWatcher(ctx, rreq); err != nil {
		t.Fatal(err)
	}
	if _, err := events(); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("events of a removed watcher: %v; want not_found", err)
	}
	// A file is not a directory to watch; a missing one is not found.
	for path, code := range map[string]connect.Code{"/etc/passwd": connect.CodeInvalidArgument, "/no/such": connect.CodeNotFound} {
		req := connect.NewRequest(&filesystem.CreateWatcherRequest{Path: path})
		auth(req.Header())
		if _, err := fs.CreateWatcher(ctx, req); connect.CodeOf(err) != code {
			t.Errorf("watch %s: %v; want %v", path, err, code)
		}
	}
}
