package e2e

import (
	"fmt"
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
	// The pane stays a while after warren exits, so its last words can be read.
	line := "env WARREN_IMAGE_DIR=" + quote(imageDir) + " " + quote(warrenBin) + " " + strings.Join(args, " ") + "; sleep 60"
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
		if healthy.MatchString(screen) && strings.Contains(screen, "workspace-server   healthy") {
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
