package agenthost

import (
	"errors"
	"os"
	"testing"
	"time"
)

func TestBridgeState(t *testing.T) {
	dir := t.TempDir()
	b, err := loadBridge(dir)
	if err != nil {
		t.Fatal(err)
	}
	code, _, err := b.newCode(ChatHost)
	if err != nil {
		t.Fatal(err)
	}
	// An expired code pairs nothing.
	b.mu.Lock()
	b.f.Codes[0].ExpiresAt = time.Now().Add(-time.Second)
	b.mu.Unlock()
	if _, err := b.claim("telegram:1", "telegram", "", "", code); !errors.Is(err, errBadCode) {
		t.Fatalf("an expired code: %v", err)
	}
	code, _, _ = b.newCode(ChatHost)
	c, err := b.claim("telegram:1", "telegram", "t", "@a", code)
	if err != nil || c.Role != ChatHost {
		t.Fatalf("claim: %+v %v", c, err)
	}
	ws := "ws_1"
	if _, err := b.update("telegram:1", &ws, "ws_1", "ses_1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.update("telegram:9", &ws, "", ""); err == nil {
		t.Fatal("an unpaired chat was updated")
	}
	// A refused chat is refused once; a paired one never.
	if first, _ := b.refuse("slack:C1", "slack", ""); !first {
		t.Fatal("the first refusal")
	}
	if first, _ := b.refuse("slack:C1", "slack", ""); first {
		t.Fatal("a second refusal")
	}
	if first, _ := b.refuse("telegram:1", "telegram", ""); first {
		t.Fatal("a paired chat refused")
	}
	// What a restart reads back: the chat, its workspace and session; the
	// file is the owner's alone.
	again, err := loadBridge(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := again.chat("telegram:1")
	if got == nil || got.Role != ChatHost || got.Workspace != "ws_1" || got.Sessions["ws_1"] != "ses_1" {
		t.Fatalf("after a reload: %+v", got)
	}
	if st, err := os.Stat(again.path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("bridge.json: %v %v", st.Mode(), err)
	}
	if ok, _ := again.unpair("telegram:1"); !ok || again.chat("telegram:1") != nil {
		t.Fatal("unpair")
	}
}
