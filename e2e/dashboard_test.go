package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warrenhq/warren/internal/agenthost"
)

// TestDashboard runs warren start in a real terminal (tmux): the dashboard
// shows each service's health and the connect details, and q stops
// everything.
func TestDashboard(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is needed for this test; make test installs it")
	}
	ws := t.TempDir()
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	session := fmt.Sprintf("warren-e2e-%d", time.Now().UnixNano())
	quote := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	var args []string
	for _, a := range startArgs(ws, data) {
		args = append(args, quote(a))
	}
	// A chat bridge too, to a fake Telegram: the dashboard shows it and
	// makes pairing codes.
	tgToken := "77:dashboard-telegram-secret"
	tg := newFakeTelegram(t, tgToken)
	bridgeEnv := " WARREN_TELEGRAM_TOKEN=" + quote(tgToken) + " WARREN_TELEGRAM_API_URL=" + quote(tg.srv.URL)
	// The pane stays a while after warren exits, so its last words can be read.
	line := "env WARREN_IMAGE_DIR=" + quote(imageDir) + bridgeEnv + " " + quote(warrenBin) + " " + strings.Join(args, " ") + "; sleep 60"
	if out, err := exec.Command("tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "60", line).CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "kill-session", "-t", session).Run() })
	capture := func() string {
		out, _ := exec.Command("tmux", "capture-pane", "-p", "-t", session).Output()
		return string(out)
	}
	healthy := regexp.MustCompile(`(?m)^opencode\s+healthy\s+gvisor sbx_`)
	var screen string
	eventually(t, 4*time.Minute, "the dashboard to show a healthy OpenCode", func() error {
		screen = capture()
		if healthy.MatchString(screen) && strings.Contains(screen, "workspace-server   healthy") && strings.Contains(screen, "bridge             running") {
			return nil
		}
		return fmt.Errorf("screen:\n%s", screen)
	})
	runs, err := agenthost.Runs(filepath.Join(data, "agenthost"))
	if err != nil || len(runs) != 1 {
		t.Fatalf("run records: %v %v", runs, err)
	}
	r := runs[0]
	for _, want := range []string{r.Pairing.URL, r.Pairing.ClientToken, r.Pairing.HostToken, "opencode attach", "[q] quit", "[d] detach", "approvals     auto"} {
		if !strings.Contains(screen, want) {
			t.Fatalf("the dashboard does not show %q:\n%s", want, screen)
		}
	}
	// The background start got the bridge's token in its environment,
	// not on its command line where every user of the host can read it.
	if cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", r.PID)); err != nil || strings.Contains(string(cmdline), tgToken) {
		t.Fatalf("the detached start's command line: %q %v", cmdline, err)
	}
	if out, err := exec.Command("tmux", "send-keys", "-t", session, "p").CombinedOutput(); err != nil {
		t.Fatalf("send p: %v %s", err, out)
	}
	pairing := regexp.MustCompile(`/pair ([A-Z0-9]{8}) \(host chat`)
	var code string
	eventually(t, 30*time.Second, "a pairing code on the dashboard", func() error {
		m := pairing.FindStringSubmatch(capture())
		if m == nil {
			return fmt.Errorf("screen:\n%s", capture())
		}
		code = m[1]
		return nil
	})
	tg.say(5, "carol", "/pair "+code)
	tg.wait(t, "5", 30*time.Second, "Paired", "host chat")
	eventually(t, 30*time.Second, "the dashboard to count the chat", func() error {
		if !strings.Contains(capture(), "telegram, 1 chats") {
			return fmt.Errorf("screen:\n%s", capture())
		}
		return nil
	})
	sandboxID := r.Pairing.Workspaces[0].SandboxID
	if out, err := exec.Command("tmux", "send-keys", "-t", session, "q").CombinedOutput(); err != nil {
		t.Fatalf("send q: %v %s", err, out)
	}
	eventually(t, 2*time.Minute, "q to stop everything", func() error {
		if syscall.Kill(r.PID, 0) == nil {
			return fmt.Errorf("pid %d still runs", r.PID)
		}
		if !strings.Contains(capture(), "stopped") {
			return fmt.Errorf("screen:\n%s", capture())
		}
		return nil
	})
	if left := traces(t, &server{dataDir: data}, sandboxID); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}
