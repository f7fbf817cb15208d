package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// Telegram and Slack cannot be reached from here, so these servers speak
// their wire protocols on loopback: Telegram's Bot API (multipart form
// requests, getUpdates long polling) and Slack's Web API with Socket Mode
// (apps.connections.open, then envelopes over a WebSocket, each acked).

// chatMessage is a message a bot sent, as it reads now.
type chatMessage struct {
	Chat, ID, Thread, Text string
	Buttons                []string // button values
	Edits                  int
}

// chatLog keeps what a bot sent, for both fakes.
type chatLog struct {
	mu   sync.Mutex
	msgs []*chatMessage
}

func (l *chatLog) add(m *chatMessage) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, m)
}

func (l *chatLog) edit(chat, id, text string, buttons []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if m.Chat == chat && m.ID == id {
			m.Text, m.Buttons = text, buttons
			m.Edits++
			return true
		}
	}
	return false
}

// in lists copies of a chat's messages, oldest first.
func (l *chatLog) in(chat string) []chatMessage {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []chatMessage
	for _, m := range l.msgs {
		if m.Chat == chat {
			out = append(out, *m)
		}
	}
	return out
}

// wait returns the first message in chat whose text has all of want.
func (l *chatLog) wait(t *testing.T, chat string, timeout time.Duration, want ...string) chatMessage {
	t.Helper()
	var got chatMessage
	eventually(t, timeout, fmt.Sprintf("a message in %s with %q", chat, want), func() error {
		msgs := l.in(chat)
	next:
		for _, m := range msgs {
			for _, w := range want {
				if !strings.Contains(m.Text, w) {
					continue next
				}
			}
			got = m
			return nil
		}
		var texts []string
		for _, m := range msgs {
			texts = append(texts, m.Text)
		}
		return fmt.Errorf("messages: %q", texts)
	})
	return got
}

// fakeTelegram is Telegram's Bot API for one bot token.
type fakeTelegram struct {
	chatLog
	srv      *httptest.Server
	token    string
	mu       sync.Mutex
	updates  []map[string]any
	nextID   int64
	nextMsg  int
	wake     chan struct{}
	answers  []string
	getMeErr bool
}

func newFakeTelegram(t *testing.T, token string) *fakeTelegram {
	f := &fakeTelegram{token: token, wake: make(chan struct{}, 1), nextID: 100, nextMsg: 1000}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func tgAnswer(w http.ResponseWriter, result any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": result})
}

func tgError(w http.ResponseWriter, code int, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error_code": code, "description": desc})
}

func (f *fakeTelegram) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/bot"+f.token+"/")
	if !ok {
		tgError(w, 401, "Unauthorized")
		return
	}
	// The Bot API takes form fields; the client sends multipart (with no
	// part at all for a method without parameters).
	_ = r.ParseMultipartForm(1 << 20)
	chat := r.FormValue("chat_id")
	switch rest {
	case "getMe":
		if f.getMeErr {
			tgError(w, 401, "Unauthorized")
			return
		}
		tgAnswer(w, map[string]any{"id": 42, "is_bot": true, "first_name": "warren", "username": "warren_bot"})
	case "getUpdates":
		offset, _ := strconv.ParseInt(r.FormValue("offset"), 10, 64)
		wait, _ := strconv.Atoi(r.FormValue("timeout"))
		deadline := time.After(time.Duration(min(wait, 20)) * time.Second)
		for {
			f.mu.Lock()
			var out []map[string]any
			kept := f.updates[:0]
			for _, u := range f.updates {
				if u["update_id"].(int64) >= offset {
					kept = append(kept, u)
					out = append(out, u)
				}
			}
			f.updates = kept
			f.mu.Unlock()
			if len(out) > 0 {
				tgAnswer(w, out)
				return
			}
			select {
			case <-f.wake:
			case <-deadline:
				tgAnswer(w, []any{})
				return
			case <-r.Context().Done():
				return
			}
		}
	case "sendMessage":
		f.mu.Lock()
		f.nextMsg++
		id := f.nextMsg
		f.mu.Unlock()
		f.add(&chatMessage{Chat: chat, ID: strconv.Itoa(id), Thread: r.FormValue("message_thread_id"), Text: r.FormValue("text"), Buttons: tgButtons(r.FormValue("reply_markup"))})
		cid, _ := strconv.ParseInt(chat, 10, 64)
		tgAnswer(w, map[string]any{"message_id": id, "date": time.Now().Unix(), "chat": map[string]any{"id": cid, "type": "private"}, "text": r.FormValue("text")})
	case "editMessageText":
		id := r.FormValue("message_id")
		for _, m := range f.in(chat) {
			if m.ID == id && m.Text == r.FormValue("text") && len(m.Buttons) == len(tgButtons(r.FormValue("reply_markup"))) {
				tgError(w, 400, "Bad Request: message is not modified")
				return
			}
		}
		if !f.edit(chat, id, r.FormValue("text"), tgButtons(r.FormValue("reply_markup"))) {
			tgError(w, 400, "Bad Request: message to edit not found")
			return
		}
		n, _ := strconv.Atoi(id)
		cid, _ := strconv.ParseInt(chat, 10, 64)
		tgAnswer(w, map[string]any{"message_id": n, "date": time.Now().Unix(), "chat": map[string]any{"id": cid, "type": "private"}, "text": r.FormValue("text")})
	case "answerCallbackQuery":
		f.mu.Lock()
		f.answers = append(f.answers, r.FormValue("text"))
		f.mu.Unlock()
		tgAnswer(w, true)
	default:
		tgError(w, 404, "Not Found: method "+rest)
	}
}

func tgButtons(markup string) []string {
	var m struct {
		InlineKeyboard [][]struct {
			CallbackData string `json:"callback_data"`
		} `json:"inline_keyboard"`
	}
	_ = json.Unmarshal([]byte(markup), &m)
	var out []string
	for _, row := range m.InlineKeyboard {
		for _, b := range row {
			out = append(out, b.CallbackData)
		}
	}
	return out
}

func (f *fakeTelegram) push(u map[string]any) {
	f.mu.Lock()
	f.nextID++
	u["update_id"] = f.nextID
	f.updates = append(f.updates, u)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// say is a person writing to the bot in a private chat.
func (f *fakeTelegram) say(chat int64, user, text string) {
	f.push(map[string]any{"message": map[string]any{"message_id": 1, "date": time.Now().Unix(), "text": text,
		"chat": map[string]any{"id": chat, "type": "private", "username": user}, "from": map[string]any{"id": chat, "is_bot": false, "first_name": user, "username": user}}})
}

// press is a person pressing a button under one of the bot's messages.
func (f *fakeTelegram) press(chat int64, user string, m chatMessage, data string) {
	id, _ := strconv.Atoi(m.ID)
	f.push(map[string]any{"callback_query": map[string]any{"id": fmt.Sprint("cb", id, data), "data": data, "chat_instance": "1",
		"from":    map[string]any{"id": chat, "is_bot": false, "first_name": user, "username": user},
		"message": map[string]any{"message_id": id, "date": time.Now().Unix(), "chat": map[string]any{"id": chat, "type": "private"}, "text": m.Text}}})
}

// fakeSlack is Slack's Web API and Socket Mode for one app.
type fakeSlack struct {
	chatLog
	srv                *httptest.Server
	botToken, appToken string
	mu                 sync.Mutex
	conns              []*websocket.Conn
	acked              map[string]bool
	nextTS             int
	nextEnv            int
}

func newFakeSlack(t *testing.T, botToken, appToken string) *fakeSlack {
	f := &fakeSlack{botToken: botToken, appToken: appToken, acked: map[string]bool{}, nextTS: 100}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func slackAnswer(w http.ResponseWriter, v map[string]any) {
	w.Header().Set("Content-Type", "application/json")
	v["ok"] = true
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeSlack) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/link" {
		f.socket(w, r)
		return
	}
	_ = r.ParseForm()
	auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if auth == "" {
		auth = r.FormValue("token")
	}
	method := strings.TrimPrefix(r.URL.Path, "/api/")
	want := f.botToken
	if method == "apps.connections.open" {
		want = f.appToken
	}
	if auth != want {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "invalid_auth"})
		return
	}
	switch method {
	case "auth.test":
		slackAnswer(w, map[string]any{"url": "https://t.example/", "team": "Team", "user": "warren", "team_id": "T1", "user_id": "UBOT", "bot_id": "B1"})
	case "apps.connections.open":
		slackAnswer(w, map[string]any{"url": "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/link"})
	case "chat.postMessage", "chat.postEphemeral":
		f.mu.Lock()
		f.nextTS++
		ts := fmt.Sprintf("1700000000.%06d", f.nextTS)
		f.mu.Unlock()
		chat := r.FormValue("channel")
		if method == "chat.postEphemeral" {
			chat = "ephemeral:" + chat
		}
		f.add(&chatMessage{Chat: chat, ID: ts, Thread: r.FormValue("thread_ts"), Text: r.FormValue("text"), Buttons: slackButtons(r.FormValue("blocks"))})
		slackAnswer(w, map[string]any{"channel": r.FormValue("channel"), "ts": ts, "message_ts": ts})
	case "chat.update":
		if !f.edit(r.FormValue("channel"), r.FormValue("ts"), r.FormValue("text"), slackButtons(r.FormValue("blocks"))) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "message_not_found"})
			return
		}
		slackAnswer(w, map[string]any{"channel": r.FormValue("channel"), "ts": r.FormValue("ts"), "text": r.FormValue("text")})
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": false, "error": "unknown_method"})
	}
}

func slackButtons(blocks string) []string {
	var bs []struct {
		Type     string `json:"type"`
		Elements []struct {
			Value string `json:"value"`
		} `json:"elements"`
	}
	_ = json.Unmarshal([]byte(blocks), &bs)
	var out []string
	for _, b := range bs {
		if b.Type == "actions" {
			for _, e := range b.Elements {
				out = append(out, e.Value)
			}
		}
	}
	return out
}

// socket is the Socket Mode WebSocket: hello, then envelopes; acks are
// recorded; pings keep the client's dead-connection timer happy.
func (f *fakeSlack) socket(w http.ResponseWriter, r *http.Request) {
	// Slack's client sends Origin https://api.slack.com.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return
	}
	ctx := r.Context()
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
	// A connection that ends (the app restarted) takes no more envelopes.
	defer func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for i, o := range f.conns {
			if o == c {
				f.conns = append(f.conns[:i], f.conns[i+1:]...)
				break
			}
		}
	}()
	_ = wsjson.Write(ctx, c, map[string]any{"type": "hello", "num_connections": 1, "connection_info": map[string]any{"app_id": "A1"},
		"debug_info": map[string]any{"host": "fake"}})
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_ = c.Ping(pctx)
				cancel()
			}
		}
	}()
	for {
		var ack struct {
			EnvelopeID string `json:"envelope_id"`
		}
		if err := wsjson.Read(ctx, c, &ack); err != nil {
			return
		}
		f.mu.Lock()
		f.acked[ack.EnvelopeID] = true
		f.mu.Unlock()
	}
}

// envelope sends one Socket Mode envelope to the connected app and waits
// for its ack.
func (f *fakeSlack) envelope(t *testing.T, kind string, payload map[string]any) {
	t.Helper()
	var c *websocket.Conn
	eventually(t, 30*time.Second, "the slack app connected", func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.conns) == 0 {
			return fmt.Errorf("no socket mode connection")
		}
		c = f.conns[len(f.conns)-1]
		return nil
	})
	f.mu.Lock()
	f.nextEnv++
	id := fmt.Sprintf("env-%d", f.nextEnv)
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := wsjson.Write(ctx, c, map[string]any{"envelope_id": id, "type": kind, "payload": payload, "accepts_response_payload": false, "retry_attempt": 0}); err != nil {
		t.Fatalf("send a slack envelope: %v", err)
	}
	eventually(t, 10*time.Second, "the ack of "+id, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.acked[id] {
			return fmt.Errorf("not acked")
		}
		return nil
	})
}

// dm is a person writing to the app in a direct message.
func (f *fakeSlack) dm(t *testing.T, channel, user, text string) {
	f.event(t, map[string]any{"type": "message", "channel": channel, "user": user, "text": text, "channel_type": "im"})
}

// mention is a person mentioning the app in a channel.
func (f *fakeSlack) mention(t *testing.T, channel, user, text string) {
	f.event(t, map[string]any{"type": "app_mention", "channel": channel, "user": user, "text": "<@UBOT> " + text})
}

func (f *fakeSlack) event(t *testing.T, ev map[string]any) {
	f.mu.Lock()
	f.nextTS++
	ts := fmt.Sprintf("1600000000.%06d", f.nextTS)
	f.mu.Unlock()
	ev["ts"], ev["event_ts"] = ts, ts
	f.envelope(t, "events_api", map[string]any{"token": "x", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
		"event_id": "Ev" + ts, "event_time": time.Now().Unix(), "event": ev})
}

// slash is a slash command the app registered.
func (f *fakeSlack) slash(t *testing.T, channel, user, command, text string) {
	f.envelope(t, "slash_commands", map[string]any{"command": command, "text": text, "channel_id": channel, "channel_name": "directmessage",
		"user_id": user, "user_name": user, "team_id": "T1", "trigger_id": "t1"})
}

// click is a person pressing a button of one of the app's messages.
func (f *fakeSlack) click(t *testing.T, channel, user string, m chatMessage, value string) {
	f.envelope(t, "interactive", map[string]any{"type": "block_actions", "trigger_id": "t2",
		"user": map[string]any{"id": user, "name": user}, "channel": map[string]any{"id": channel, "name": "directmessage"},
		"container": map[string]any{"type": "message", "message_ts": m.ID, "channel_id": channel},
		"actions":   []map[string]any{{"action_id": "approval", "block_id": "b1", "type": "button", "value": value, "action_ts": "1"}}})
}
