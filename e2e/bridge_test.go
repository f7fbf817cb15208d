package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// bridgeState is GET /bridge.
type bridgeState struct {
	Bridge struct {
		Enabled   bool
		State     string
		PID       int
		Restarts  int
		LastError string
		Platforms []string
	}
	Chats []struct {
		Key, Role string
		Sessions  map[string]string
	}
}

// TestChatBridge drives OpenCode (runc, the fake model, manual approvals)
// from Telegram and Slack, through fakes of both that speak their wire
// protocols: pairing, refusals, streamed replies with the files changed,
// approvals allowed, denied and timed out from chats, collaborators kept
// away from approvals, the bridge crashing and coming back, and a restart
// keeping each chat's session.
func TestChatBridge(t *testing.T) {
	ws := t.TempDir()
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	writeFakeModel(ws)
	tgToken := "4242:telegram-secret-token-" + fmt.Sprint(time.Now().UnixNano())
	slackBot, slackApp := "xoxb-slack-bot-secret-token", "xapp-slack-app-secret-token"
	tg := newFakeTelegram(t, tgToken)
	sl := newFakeSlack(t, slackBot, slackApp)
	env := []string{"WARREN_TELEGRAM_TOKEN=" + tgToken, "WARREN_TELEGRAM_API_URL=" + tg.srv.URL,
		"WARREN_SLACK_BOT_TOKEN=" + slackBot, "WARREN_SLACK_APP_TOKEN=" + slackApp, "WARREN_SLACK_API_URL=" + sl.srv.URL + "/api/"}
	args := []string{"--sandbox", "runc", "--approval", "manual", "--approval-timeout", "8s"}
	h := startAgentHostEnv(t, ws, data, env, args...)
	p := &h.pairing
	if strings.Join(p.Bridge, ",") != "telegram,slack" {
		t.Fatalf("the pairing names the bridge's platforms as %q", p.Bridge)
	}
	tok := bearer(p.ClientToken)
	host := map[string]string{"X-OpenWork-Host-Token": p.HostToken}
	proxy := "/w/" + p.Workspaces[0].ID + "/opencode"
	h.startFakeModel(t, ws, proxy, tok)

	pair := func(role string) string {
		t.Helper()
		out, err := exec.Command(warrenBin, "bridge", "pair", "--role", role, "--json", "--url", p.URL, "--host-token", p.HostToken).Output()
		var got struct{ Code, Role string }
		if err != nil || json.Unmarshal(out, &got) != nil || got.Code == "" || got.Role != role {
			t.Fatalf("warren bridge pair --role %s: %v %s", role, err, out)
		}
		return got.Code
	}
	exists := func(name string) bool { _, err := os.Stat(filepath.Join(ws, name)); return err == nil }
	const alice, bob = int64(111), int64(222)

	// An unpaired chat is refused once, then hears nothing.
	tg.say(bob, "bob", "hello")
	tg.wait(t, "222", 30*time.Second, "not paired")
	tg.say(bob, "bob", "hello again")
	time.Sleep(2 * time.Second)
	if n := len(tg.in("222")); n != 1 {
		t.Fatalf("an unpaired chat got %d messages, want the one refusal: %+v", n, tg.in("222"))
	}

	// Pairing: a wrong code is refused, the right one pairs, and it is
	// used up.
	tg.say(alice, "alice", "/pair WRONGCODE")
	tg.wait(t, "111", 30*time.Second, "not valid")
	code := pair("host")
	tg.say(alice, "alice", "/pair "+code)
	tg.wait(t, "111", 30*time.Second, "Paired", "host chat")
	tg.say(bob, "bob", "/pair "+code)
	tg.wait(t, "222", 30*time.Second, "not valid")

	// A message becomes a prompt; its tool call waits for Allow in the
	// host chat, runs after it, and the reply says what changed.
	tg.say(alice, "alice", "allowed")
	ap := tg.wait(t, "111", 90*time.Second, "asks to run bash", "allowed.txt")
	if len(ap.Buttons) != 2 || !strings.HasPrefix(ap.Buttons[0], "allow:") || !strings.HasPrefix(ap.Buttons[1], "deny:") {
		t.Fatalf("approval buttons: %q", ap.Buttons)
	}
	if exists("allowed.txt") {
		t.Fatal("allowed.txt was written before anyone approved")
	}
	tg.press(alice, "alice", ap, ap.Buttons[0])
	eventually(t, 30*time.Second, "allowed.txt", func() error {
		if !exists("allowed.txt") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if r := tg.wait(t, "111", 60*time.Second, "done", "Files changed", "+ allowed.txt"); r.Edits < 1 {
		t.Fatalf("the reply was sent whole, not edited in place as it grew: %+v", r)
	}
	tg.wait(t, "111", 10*time.Second, "allowed by @alice")

	// Deny from the chat: the tool never runs.
	tg.say(alice, "alice", "/new")
	tg.wait(t, "111", 30*time.Second, "New session")
	tg.say(alice, "alice", "denied")
	ap = tg.wait(t, "111", 90*time.Second, "asks to run bash", "denied.txt")
	tg.press(alice, "alice", ap, ap.Buttons[1])
	tg.wait(t, "111", 30*time.Second, "denied.txt", "denied by @alice")

	// Nobody answers: the timeout denies, and the message says so.
	tg.say(alice, "alice", "/new")
	tg.say(alice, "alice", "timedout")
	tg.wait(t, "111", 90*time.Second, "asks to run bash", "timedout.txt")
	tg.wait(t, "111", 30*time.Second, "timedout.txt", "timed out")
	time.Sleep(2 * time.Second)
	for _, f := range []string{"denied.txt", "timedout.txt"} {
		if exists(f) {
			t.Fatalf("%s was written although it was denied", f)
		}
	}

	// Slack: a direct message pairs as a host chat by slash command, a
	// channel as a collaborator by mention. The collaborator's tool call
	// is asked in the host chats (Slack and Telegram) and never in the
	// collaborator's channel; Allow in Slack lets it run.
	sl.slash(t, "D1", "U1", "/pair", pair("host"))
	sl.wait(t, "D1", 30*time.Second, "Paired", "host chat")
	sl.mention(t, "C2", "U2", "!pair "+pair("collaborator"))
	sl.wait(t, "C2", 30*time.Second, "Paired", "collaborator chat")
	sl.mention(t, "C2", "U2", "slacked")
	sap := sl.wait(t, "D1", 90*time.Second, "asks to run bash", "slacked.txt")
	tg.wait(t, "111", 30*time.Second, "asks to run bash", "slacked.txt")
	// A button press from the collaborators' channel is refused.
	sl.click(t, "C2", "U2", sap, sap.Buttons[0])
	sl.wait(t, "ephemeral:C2", 30*time.Second, "Only host chats")
	if exists("slacked.txt") {
		t.Fatal("a collaborator's press answered an approval")
	}
	sl.click(t, "D1", "U1", sap, sap.Buttons[0])
	sl.wait(t, "C2", 90*time.Second, "done", "+ slacked.txt")
	// The Telegram host chat hears who answered, in Slack.
	tg.wait(t, "111", 30*time.Second, "slacked.txt", "allowed by U1")
	// Deny and the timeout from Slack, and an unpaired Slack chat.
	sl.mention(t, "C2", "U2", "!new")
	sl.mention(t, "C2", "U2", "slackdenied")
	sap = sl.wait(t, "D1", 90*time.Second, "asks to run bash", "slackdenied.txt")
	sl.click(t, "D1", "U1", sap, sap.Buttons[1])
	sl.wait(t, "D1", 30*time.Second, "slackdenied.txt", "denied by U1")
	sl.mention(t, "C2", "U2", "!new")
	sl.mention(t, "C2", "U2", "slacklate")
	sl.wait(t, "D1", 90*time.Second, "asks to run bash", "slacklate.txt")
	sl.wait(t, "D1", 30*time.Second, "slacklate.txt", "timed out")
	for _, f := range []string{"slackdenied.txt", "slacklate.txt"} {
		if exists(f) {
			t.Fatalf("%s was written although it was denied", f)
		}
	}
	sl.dm(t, "D9", "U9", "hello")
	sl.wait(t, "D9", 30*time.Second, "not paired")
	sl.dm(t, "D9", "U9", "anyone?")
	time.Sleep(2 * time.Second)
	if n := len(sl.in("D9")); n != 1 {
		t.Fatalf("an unpaired Slack chat got %d messages, want the one refusal", n)
	}
	for _, m := range sl.in("C2") {
		if strings.Contains(m.Text, "asks to run") || len(m.Buttons) > 0 {
			t.Fatalf("the collaborators' channel saw an approval: %+v", m)
		}
	}

	// /status and /workspace answer.
	tg.say(alice, "alice", "/status")
	tg.wait(t, "111", 30*time.Second, "approval: manual", "bridge: telegram and slack")
	tg.say(alice, "alice", "/workspace")
	tg.wait(t, "111", 30*time.Second, "Workspaces:", filepath.Base(ws))

	// The console's agent-host page shows the bridge and its chats, makes
	// a pairing code that a chat can use, and unpairs.
	pg, _ := openBrowser(t, p.URL+"/")
	pg.run("sign in", chromedp.WaitVisible(chromedp.ID("key")), chromedp.SetValue(chromedp.ID("key"), p.HostToken),
		chromedp.Click(chromedp.Search("//button[text()='Sign in']")))
	pg.waitText("#bridge-state", "telegram and slack: running")
	pg.waitText("#chats", "telegram:111")
	pg.run("make a code", chromedp.SetValue(chromedp.ID("pair-role"), "collaborator"), chromedp.Click(chromedp.Search("//button[text()='Make a pairing code']")))
	pg.waitText("#pair-code", "/pair ")
	shown, err := chromedp.Run(pg.ctx, chromedp.TextContent(chromedp.ID("pair-code")))
	if err != nil {
		t.Fatal(err)
	}
	tg.say(333, "dave", shown)
	tg.wait(t, "333", 30*time.Second, "Paired", "collaborator chat")
	pg.waitText("#chats", "telegram:333")
	pg.screenshot("agent-host-bridge")
	pg.run("unpair", chromedp.Click(chromedp.CSS(`#chats tr[data-key="telegram:333"] button`)))
	eventually(t, 10*time.Second, "the chat unpaired", func() error {
		var now bridgeState
		h.call(t, "GET", "/bridge", host, nil, &now)
		for _, c := range now.Chats {
			if c.Key == "telegram:333" {
				return fmt.Errorf("still there: %+v", c)
			}
		}
		return nil
	})
	// The page would go on polling a host the test stops later.
	pg.run("leave", chromedp.Navigate("about:blank"))

	var st bridgeState
	if code := h.call(t, "GET", "/bridge", host, nil, &st); code != 200 || st.Bridge.State != "running" || len(st.Chats) < 4 {
		t.Fatalf("GET /bridge: %d %+v", code, st)
	}
	if code := h.call(t, "GET", "/bridge", tok, nil, nil); code != 403 {
		t.Fatalf("a client token read the bridge: %d", code)
	}
	sessions := map[string]string{}
	for _, c := range st.Chats {
		sessions[c.Key] = c.Sessions[p.Workspaces[0].ID]
	}
	if sessions["telegram:111"] == "" || sessions["slack:C2"] == "" {
		t.Fatalf("the chats have no sessions: %+v", st.Chats)
	}

	// The bridge crashes: the agent host keeps running and starts it again.
	if err := syscall.Kill(st.Bridge.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the bridge back", func() error {
		var now bridgeState
		h.call(t, "GET", "/bridge", host, nil, &now)
		if now.Bridge.State != "running" || now.Bridge.Restarts < 1 || now.Bridge.PID == st.Bridge.PID {
			return fmt.Errorf("bridge %+v", now.Bridge)
		}
		return nil
	})
	if code := h.call(t, "GET", "/health", nil, nil, nil); code != 200 {
		t.Fatalf("the agent host after the bridge crashed: %d", code)
	}
	before := len(tg.in("111"))
	tg.say(alice, "alice", "/status")
	eventually(t, 30*time.Second, "an answer after the crash", func() error {
		if len(tg.in("111")) == before {
			return fmt.Errorf("no answer")
		}
		return nil
	})

	// The tokens never reach the log.
	for _, secret := range []string{tgToken, slackBot, slackApp} {
		if strings.Contains(h.logs.String(), secret) {
			t.Fatalf("the log holds a chat token")
		}
	}
	if !strings.Contains(h.logs.String(), "service.name=bridge") || !strings.Contains(h.logs.String(), "run.id="+p.RunID) {
		t.Fatal("the bridge's log lines do not carry the service and run id")
	}

	// A restart keeps the chat's session: the next message continues it.
	// Stopping the agent host stops its bridge too.
	var last bridgeState
	h.call(t, "GET", "/bridge", host, nil, &last)
	h.stop()
	if last.Bridge.PID == 0 || syscall.Kill(last.Bridge.PID, 0) == nil {
		t.Fatalf("the bridge (pid %d) outlived the agent host", last.Bridge.PID)
	}
	h = startAgentHostEnv(t, ws, data, env, args...)
	h.startFakeModel(t, ws, proxy, tok)
	tg.say(alice, "alice", "continued")
	sl.mention(t, "C2", "U2", "slackcontinued")
	for key, text := range map[string]string{"telegram:111": "continued", "slack:C2": "slackcontinued"} {
		eventually(t, 90*time.Second, "the prompt in the same session", func() error {
			var msgs []struct {
				Parts []struct{ Text string }
			}
			h.call(t, "GET", proxy+"/session/"+sessions[key]+"/message", tok, nil, &msgs)
			for _, m := range msgs {
				for _, part := range m.Parts {
					if part.Text == text {
						return nil
					}
				}
			}
			return fmt.Errorf("%s: %d messages, none says %s", key, len(msgs), text)
		})
	}
	// Unpairing takes the chat away; it is refused again, once.
	if out, err := exec.Command(warrenBin, "bridge", "unpair", "telegram:111", "--url", h.pairing.URL, "--host-token", h.pairing.HostToken).CombinedOutput(); err != nil {
		t.Fatalf("warren bridge unpair: %v %s", err, out)
	}
	tg.say(alice, "alice", "still there?")
	tg.wait(t, "111", 30*time.Second, "not paired")
	if out, err := exec.Command(warrenBin, "bridge", "status", "--url", h.pairing.URL, "--host-token", h.pairing.HostToken).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "bridge running") || !strings.Contains(string(out), "slack:C2") {
		t.Fatalf("warren bridge status: %v %s", err, out)
	}
}

// TestChatBridgeRequired: a bridge that cannot start (Telegram refuses
// the token) restarts beside a running agent host, unless
// --bridge-required, which stops the agent host with it.
func TestChatBridgeRequired(t *testing.T) {
	ws := t.TempDir()
	data := t.TempDir()
	t.Cleanup(func() { cleanDataDir(t, data) })
	tg := newFakeTelegram(t, "1:refused-token-secret")
	tg.getMeErr = true
	env := []string{"WARREN_TELEGRAM_TOKEN=1:refused-token-secret", "WARREN_TELEGRAM_API_URL=" + tg.srv.URL}

	h := startAgentHostEnv(t, ws, data, env, "--sandbox", "runc")
	host := map[string]string{"X-OpenWork-Host-Token": h.pairing.HostToken}
	eventually(t, 60*time.Second, "the bridge restarting", func() error {
		var st bridgeState
		h.call(t, "GET", "/bridge", host, nil, &st)
		if st.Bridge.Restarts < 1 || st.Bridge.LastError == "" {
			return fmt.Errorf("bridge %+v", st.Bridge)
		}
		return nil
	})
	if code := h.call(t, "GET", "/health", nil, nil, nil); code != 200 {
		t.Fatalf("the agent host with a failing bridge: %d", code)
	}
	h.stop()

	h = startAgentHostEnv(t, ws, data, env, "--sandbox", "runc", "--bridge-required")
	done := make(chan error, 1)
	go func() { done <- h.cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(h.logs.String(), "--bridge-required") {
			t.Fatalf("warren start ended with %v; log:\n%s", err, h.logs.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("warren start kept running although its required bridge exited")
	}
	if strings.Contains(h.logs.String(), "refused-token-secret") {
		t.Fatal("the log holds the token")
	}
}
