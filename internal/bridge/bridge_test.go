package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/warrenhq/warren/internal/agenthost"
)

func TestCommand(t *testing.T) {
	for _, c := range []struct{ in, cmd, arg string }{
		{"/pair ABCD1234", "pair", "ABCD1234"},
		{"/pair@warren_bot  abcd ", "pair", "abcd"},
		{"!new", "new", ""},
		{"/STATUS", "status", ""},
		{"/tmp/x is empty, why?", "", ""},
		{"hello /new", "", ""},
		{"/", "", ""},
		{"", "", ""},
	} {
		cmd, arg := command(c.in)
		if cmd != c.cmd || arg != c.arg {
			t.Errorf("command(%q) = %q %q, want %q %q", c.in, cmd, arg, c.cmd, c.arg)
		}
	}
}

func TestChunks(t *testing.T) {
	text := strings.Repeat("line of text\n", 50) + strings.Repeat("🙂", 30)
	parts := chunks(text, 100)
	if strings.Join(parts, "") != text {
		t.Fatal("the chunks do not add up to the text")
	}
	for _, p := range parts {
		if units(p) > 100 {
			t.Fatalf("a chunk of %d units, limit 100", units(p))
		}
	}
	// Breaks fall on line ends where there are some.
	if !strings.HasSuffix(parts[0], "\n") {
		t.Fatalf("first chunk %q does not end a line", parts[0])
	}
	if got := truncateUnits(strings.Repeat("x", 50), 10); units(got) > 10 || !strings.HasSuffix(got, "…") {
		t.Fatalf("truncateUnits: %q", got)
	}
}

// fakePlatform records what the bridge sends.
type fakePlatform struct {
	mu    sync.Mutex
	limit int
	msgs  map[string]string // id → text
	order []string
	edits int
}

func newFakePlatform(limit int) *fakePlatform {
	return &fakePlatform{limit: limit, msgs: map[string]string{}}
}

func (f *fakePlatform) Name() string { return "fake" }
func (f *fakePlatform) Limit() int   { return f.limit }
func (f *fakePlatform) Run(ctx context.Context, on func(context.Context, Event)) error {
	<-ctx.Done()
	return nil
}

func (f *fakePlatform) Send(_ context.Context, to Conv, text string, _ []Button) (Ref, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if units(text) > f.limit {
		return Ref{}, fmt.Errorf("message too long: %d", units(text))
	}
	id := fmt.Sprint(len(f.order) + 1)
	f.msgs[id] = text
	f.order = append(f.order, id)
	return Ref{Conv: to, ID: id}, nil
}

func (f *fakePlatform) Edit(_ context.Context, ref Ref, text string, _ []Button) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if units(text) > f.limit {
		return fmt.Errorf("message too long: %d", units(text))
	}
	f.msgs[ref.ID] = text
	f.edits++
	return nil
}

func (f *fakePlatform) texts() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, id := range f.order {
		out = append(out, f.msgs[id])
	}
	return out
}

func TestReplyGrowsIntoMessages(t *testing.T) {
	p := newFakePlatform(40)
	r := &reply{p: p, to: Conv{Platform: "fake", Chat: "1"}}
	ctx := context.Background()
	r.update(ctx, "…")
	r.update(ctx, "short answer …")
	long := strings.Repeat("word ", 30) // 150 units
	r.update(ctx, long)
	if got := strings.Join(p.texts(), ""); got != long {
		t.Fatalf("the messages read %q, want %q", got, long)
	}
	if len(p.texts()) != 4 || p.edits < 2 {
		t.Fatalf("%d messages, %d edits: want the first edited in place and the rest added", len(p.texts()), p.edits)
	}
	// The same text again changes nothing (platforms refuse no-op edits).
	edits := p.edits
	r.update(ctx, long)
	if p.edits != edits {
		t.Fatal("an unchanged reply was edited")
	}
}

func TestRedact(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Redact(slog.NewJSONHandler(&buf, nil), "1234:SECRET-TOKEN", "xoxb-another-secret", "short"))
	log.With("ctx", "xoxb-another-secret").Warn("failed for 1234:SECRET-TOKEN", "err", errors.New(`Post "https://x/bot1234:SECRET-TOKEN/getMe": refused`),
		slog.Group("g", "token", "xoxb-another-secret"), "n", 3)
	out := buf.String()
	if strings.Contains(out, "SECRET-TOKEN") || strings.Contains(out, "another-secret") {
		t.Fatalf("a secret in the log: %s", out)
	}
	if !strings.Contains(out, "[redacted]") || !strings.Contains(out, `"n":3`) {
		t.Fatalf("the record lost more than the secrets: %s", out)
	}
}

// TestChangesStayInside: the workspace is the agent's; a symlink in it
// must not make the bridge list (or time) files outside it.
func TestChangesStayInside(t *testing.T) {
	ws, outside := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(ws, "kept.txt"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(ws, "gone.txt"), []byte("a"), 0o644)
	os.WriteFile(filepath.Join(ws, "edited.txt"), []byte("a"), 0o644)
	os.MkdirAll(filepath.Join(ws, ".git"), 0o755)
	os.Symlink(outside, filepath.Join(ws, "escape"))
	snap := snapshot(ws)
	if !snap.complete {
		t.Fatal("a small tree was not walked whole")
	}
	os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(ws, ".git", "index"), []byte("x"), 0o644)
	os.Remove(filepath.Join(ws, "gone.txt"))
	os.WriteFile(filepath.Join(ws, "edited.txt"), []byte("longer"), 0o644)
	os.MkdirAll(filepath.Join(ws, "src"), 0o755)
	os.WriteFile(filepath.Join(ws, "src", "new.go"), []byte("package x"), 0o644)
	got := snap.changes()
	for _, want := range []string{"Files changed (3)", "+ src/new.go", "~ edited.txt", "- gone.txt"} {
		if !strings.Contains(got, want) {
			t.Errorf("changes lack %q:\n%s", want, got)
		}
	}
	for _, never := range []string{"secret.txt", ".git", "kept.txt"} {
		if strings.Contains(got, never) {
			t.Errorf("changes name %q:\n%s", never, got)
		}
	}
	if (&tree{}).changes() != "" || snapshot("").complete {
		t.Fatal("no workspace path should mean no summary")
	}
}

// TestPairingOverTheHost runs the bridge's chat handling against a real
// workspace server (no workspaces, nothing that needs root): refusals,
// wrong codes, the lockout, pairing and the commands.
func TestPairingOverTheHost(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := agenthost.New(agenthost.Config{DataDir: t.TempDir(), Sandbox: "none", Listen: "127.0.0.1:0", RunID: "run_test", Version: "test", Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Listen(); err != nil {
		t.Fatal(err)
	}
	go h.Serve(ctx)
	host := agenthost.HostClient(h.URL(), h.Pairing().HostToken)
	p := newFakePlatform(4096)
	b := New(agenthost.BridgeConfig{URL: h.URL(), HostToken: h.Pairing().HostToken, Version: "test"}, log, p)
	say := func(chat, text string) string {
		t.Helper()
		before := len(p.texts())
		b.handle(ctx, Event{Conv: Conv{Platform: "fake", Chat: chat, Title: "t"}, User: "u", Text: text})
		if texts := p.texts(); len(texts) > before {
			return texts[len(texts)-1]
		}
		return ""
	}
	if got := say("1", "hello"); !strings.Contains(got, "not paired") {
		t.Fatalf("first message from a stranger: %q", got)
	}
	if got := say("1", "hello?"); got != "" {
		t.Fatalf("a second refusal: %q", got)
	}
	for i := range 5 {
		if got := say("2", "/pair WRONG"); !strings.Contains(got, "not valid") {
			t.Fatalf("wrong code %d: %q", i, got)
		}
	}
	var code struct{ Code string }
	if _, err := host.Call(ctx, "POST", "/bridge/codes", map[string]string{"role": "collaborator"}, &code); err != nil {
		t.Fatal(err)
	}
	// Five wrong guesses lock the chat out, even for the right code.
	if got := say("2", "/pair "+code.Code); !strings.Contains(got, "too many") {
		t.Fatalf("after five wrong codes: %q", got)
	}
	if got := say("1", "/pair "+strings.ToLower(code.Code)); !strings.Contains(got, "collaborator chat") {
		t.Fatalf("pairing: %q", got)
	}
	if got := say("3", "/pair "+code.Code); !strings.Contains(got, "not valid") {
		t.Fatalf("a used code: %q", got)
	}
	if got := say("1", "/status"); !strings.Contains(got, "run run_test") || !strings.Contains(got, "collaborator chat") {
		t.Fatalf("/status: %q", got)
	}
	if got := say("1", "/nonsense"); !strings.Contains(got, "Unknown command") {
		t.Fatalf("/nonsense: %q", got)
	}
	if got := say("1", "write a poem"); !strings.Contains(got, "no workspace") {
		t.Fatalf("a prompt with no workspace: %q", got)
	}
	if _, err := host.Call(ctx, "POST", "/bridge/codes", map[string]string{"role": "admin"}, nil); err == nil {
		t.Fatal("a code for a role that does not exist")
	}
	if st := h.Bridge(); st.Chats != 1 {
		t.Fatalf("bridge status: %+v", st)
	}
}
