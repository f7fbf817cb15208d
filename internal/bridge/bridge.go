// Package bridge lets people drive the agent host's OpenCode from a chat
// (Telegram, Slack). It runs as its own process (`warren bridge run`),
// started and watched by the agent host, and is a client of the workspace
// server with the host token: chats pair with a code the host makes,
// messages become prompts in an OpenCode session per chat, replies are
// edited in place as they stream, and approvals reach host chats as
// buttons.
package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/warrenhq/warren/internal/agenthost"
)

// Conv is a conversation: a chat, or a thread in one.
type Conv struct {
	Platform string
	Chat     string
	Thread   string
	Title    string
}

// Key names the conversation for the host's records.
func (c Conv) Key() string {
	k := c.Platform + ":" + c.Chat
	if c.Thread != "" {
		k += ":" + c.Thread
	}
	return k
}

// Ref is a message the bridge sent, so it can be edited.
type Ref struct {
	Conv Conv
	ID   string
}

// Button is one button under a message; Value comes back when pressed.
type Button struct {
	Label, Value string
	Danger       bool
}

// Event is what a platform hears: a message, or a button pressed.
type Event struct {
	Conv Conv
	User string
	Text string
	// Pressed is a button's value; Answer (if set) acknowledges the press
	// to the person who pressed it.
	Pressed string
	Answer  func(ctx context.Context, text string)
}

// Platform is one chat service's client.
type Platform interface {
	Name() string
	// Run receives events until ctx ends or the connection fails for
	// good (a refused token).
	Run(ctx context.Context, on func(context.Context, Event)) error
	Send(ctx context.Context, to Conv, text string, buttons []Button) (Ref, error)
	// Edit replaces a message's text; its buttons go unless given again.
	Edit(ctx context.Context, ref Ref, text string, buttons []Button) error
	// Limit is the longest message the platform takes, in UTF-16 units.
	Limit() int
}

// Bridge connects chats to the agent host.
type Bridge struct {
	host      *agenthost.Client
	log       *slog.Logger
	version   string
	platforms map[string]Platform

	mu   sync.Mutex
	busy map[string]*running // conversations with a prompt running
	// queues hold each conversation's messages, handled in order.
	queues map[string]chan Event
	// announced are the approvals shown in host chats, by id.
	announced map[string]*announcement
}

type announcement struct {
	approval agenthost.Approval
	text     string
	refs     []Ref
	answered bool
}

// New makes a bridge for the platforms over the host's workspace server.
func New(cfg agenthost.BridgeConfig, log *slog.Logger, platforms ...Platform) *Bridge {
	b := &Bridge{host: agenthost.HostClient(cfg.URL, cfg.HostToken), log: log, version: cfg.Version,
		platforms: map[string]Platform{}, busy: map[string]*running{}, queues: map[string]chan Event{}, announced: map[string]*announcement{}}
	for _, p := range platforms {
		b.platforms[p.Name()] = p
	}
	return b
}

// Run serves every platform until ctx ends or one fails for good.
func (b *Bridge) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(b.platforms)+1)
	for _, p := range b.platforms {
		go func() {
			err := p.Run(ctx, b.dispatch)
			if err == nil && ctx.Err() == nil {
				err = errors.New("stopped")
			}
			errc <- fmt.Errorf("%s: %w", p.Name(), err)
		}()
	}
	go func() { errc <- b.watchApprovals(ctx) }()
	b.log.Info("chat bridge running", "platforms", strings.Join(b.names(), ","))
	select {
	case err := <-errc:
		if ctx.Err() != nil {
			return nil
		}
		return err
	case <-ctx.Done():
		return nil
	}
}

func (b *Bridge) names() []string {
	var out []string
	for n := range b.platforms {
		out = append(out, n)
	}
	return out
}

// say sends a plain message, logging a failure.
func (b *Bridge) say(ctx context.Context, to Conv, text string) {
	p := b.platforms[to.Platform]
	if p == nil {
		return
	}
	if _, err := p.Send(ctx, to, truncateUnits(text, p.Limit()), nil); err != nil {
		b.log.Warn("send a message", "chat", to.Key(), "err", err)
	}
}

func (b *Bridge) call(ctx context.Context, method, path string, body, out any) (int, error) {
	return b.host.Call(ctx, method, path, body, out)
}

func chatPath(c Conv) string { return "/bridge/chats/" + url.PathEscape(c.Key()) }

// maxQueued bounds the messages waiting in one conversation; a flood
// beyond it is dropped.
const maxQueued = 32

// dispatch takes an event from a platform, which calls it in the order
// events arrive and must not be held up: a button press is answered at
// once, a message joins its conversation's queue, whose messages are
// handled one after another (so "/new" then a prompt happen in that order).
func (b *Bridge) dispatch(ctx context.Context, ev Event) {
	if ev.Pressed != "" {
		go b.handle(ctx, ev)
		return
	}
	key := ev.Conv.Key()
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queues[key]
	if q == nil {
		q = make(chan Event, maxQueued)
		b.queues[key] = q
		go b.work(ctx, key, q)
	}
	select {
	case q <- ev:
	default:
		b.log.Warn("too many messages waiting in a chat; dropped one", "chat", key)
	}
}

// work handles a conversation's queue until it has been idle a while.
func (b *Bridge) work(ctx context.Context, key string, q chan Event) {
	for {
		select {
		case ev := <-q:
			b.handle(ctx, ev)
		case <-ctx.Done():
			return
		case <-time.After(time.Minute):
			b.mu.Lock()
			if len(q) == 0 {
				delete(b.queues, key)
				b.mu.Unlock()
				return
			}
			b.mu.Unlock()
		}
	}
}

// handle answers one event.
func (b *Bridge) handle(ctx context.Context, ev Event) {
	defer func() {
		// A message nobody expected must not end the bridge.
		if r := recover(); r != nil {
			b.log.Error("handling a chat event panicked", "chat", ev.Conv.Key(), "panic", fmt.Sprint(r))
		}
	}()
	if ev.Pressed != "" {
		b.pressed(ctx, ev)
		return
	}
	var chat agenthost.ChatRecord
	code, err := b.call(ctx, "GET", chatPath(ev.Conv), nil, &chat)
	if err != nil && code != 404 {
		b.log.Warn("look up a chat", "chat", ev.Conv.Key(), "err", err)
		return
	}
	cmd, arg := command(ev.Text)
	if cmd == "pair" {
		b.pair(ctx, ev, arg)
		return
	}
	if chat.Role == "" {
		b.refuse(ctx, ev)
		return
	}
	switch cmd {
	case "":
		b.prompt(ctx, ev, &chat)
	case "new":
		b.fresh(ctx, ev, &chat)
	case "status":
		b.status(ctx, ev, &chat)
	case "workspace", "workspaces":
		b.switchWorkspace(ctx, ev, &chat, arg)
	case "help", "start":
		b.say(ctx, ev.Conv, help(chat.Role))
	default:
		b.say(ctx, ev.Conv, "Unknown command /"+cmd+".\n\n"+help(chat.Role))
	}
}

// command splits "/cmd@bot arg" (or Slack's "!cmd arg") into its parts;
// text that is not a command gives "".
func command(text string) (string, string) {
	text = strings.TrimSpace(text)
	if len(text) < 2 || (text[0] != '/' && text[0] != '!') {
		return "", ""
	}
	word, arg, _ := strings.Cut(text[1:], " ")
	word, _, _ = strings.Cut(word, "@")
	word = strings.ToLower(word)
	for _, r := range word {
		if (r < 'a' || r > 'z') && r != '_' {
			return "", "" // "/tmp/x is empty": a path, not a command
		}
	}
	return word, strings.TrimSpace(arg)
}

func help(role string) string {
	s := "Write to the agent and it answers here.\n/new starts a fresh session\n/workspace lists the workspaces; /workspace NAME switches\n/status says how things are\n/pair CODE pairs again with another code"
	if role == agenthost.ChatHost {
		s += "\nThis is a host chat: approvals the agent asks for appear here with Allow and Deny."
	}
	return s
}

func (b *Bridge) pair(ctx context.Context, ev Event, code string) {
	if code == "" {
		b.say(ctx, ev.Conv, "Send /pair CODE with the code from warren (warren bridge pair, the dashboard or the console).")
		return
	}
	var chat agenthost.ChatRecord
	_, err := b.call(ctx, "POST", "/bridge/claim", map[string]string{
		"key": ev.Conv.Key(), "platform": ev.Conv.Platform, "title": ev.Conv.Title, "user": ev.User, "code": code,
	}, &chat)
	var se *agenthost.StatusError
	switch {
	case errors.As(err, &se) && se.Status == 403:
		b.say(ctx, ev.Conv, "Not paired: "+se.Message+".")
	case err != nil:
		b.log.Warn("pair a chat", "chat", ev.Conv.Key(), "err", err)
		b.say(ctx, ev.Conv, "Pairing failed; try again.")
	default:
		b.log.Info("chat paired", "chat", chat.Key, "role", chat.Role)
		msg := "Paired: this is a " + chat.Role + " chat."
		if chat.Role == agenthost.ChatHost {
			msg += " Approvals the agent asks for appear here."
		}
		b.say(ctx, ev.Conv, msg+"\n\n"+help(chat.Role))
	}
}

// refuse tells an unpaired chat, once, how to pair; after that it hears
// nothing.
func (b *Bridge) refuse(ctx context.Context, ev Event) {
	var out struct {
		First bool `json:"first"`
	}
	if _, err := b.call(ctx, "POST", "/bridge/refused", map[string]string{
		"key": ev.Conv.Key(), "platform": ev.Conv.Platform, "title": ev.Conv.Title,
	}, &out); err != nil {
		b.log.Warn("record a refused chat", "chat", ev.Conv.Key(), "err", err)
		return
	}
	b.log.Info("unpaired chat refused", "chat", ev.Conv.Key(), "first", out.First)
	if out.First {
		b.say(ctx, ev.Conv, "This chat is not paired with warren. Ask whoever runs it for a pairing code (warren bridge pair) and send /pair CODE.")
	}
}

type workspaceView struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Path string `json:"path"`
}

func (b *Bridge) workspaces(ctx context.Context) ([]workspaceView, error) {
	var out struct {
		Items []workspaceView `json:"items"`
	}
	_, err := b.call(ctx, "GET", "/workspaces", nil, &out)
	return out.Items, err
}

// active is the chat's workspace: the one it chose, or the first.
func (b *Bridge) active(ctx context.Context, chat *agenthost.ChatRecord) (*workspaceView, error) {
	list, err := b.workspaces(ctx)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, errors.New("no workspace is running")
	}
	for i := range list {
		if list[i].ID == chat.Workspace {
			return &list[i], nil
		}
	}
	return &list[0], nil
}

func (b *Bridge) switchWorkspace(ctx context.Context, ev Event, chat *agenthost.ChatRecord, arg string) {
	list, err := b.workspaces(ctx)
	if err != nil {
		b.say(ctx, ev.Conv, "Could not list the workspaces: "+err.Error())
		return
	}
	cur, _ := b.active(ctx, chat)
	if arg == "" {
		var sb strings.Builder
		sb.WriteString("Workspaces:\n")
		for i, w := range list {
			mark := "  "
			if cur != nil && w.ID == cur.ID {
				mark = "▸ "
			}
			fmt.Fprintf(&sb, "%s%d. %s (%s)\n", mark, i+1, w.Name, w.ID)
		}
		sb.WriteString("Switch with /workspace NAME (or its number).")
		b.say(ctx, ev.Conv, sb.String())
		return
	}
	for i, w := range list {
		if arg == w.ID || strings.EqualFold(arg, w.Name) || arg == fmt.Sprint(i+1) {
			id := w.ID
			if _, err := b.call(ctx, "PATCH", chatPath(ev.Conv), map[string]any{"workspace": id}, nil); err != nil {
				b.say(ctx, ev.Conv, "Could not switch: "+err.Error())
				return
			}
			b.say(ctx, ev.Conv, "Now working in "+w.Name+".")
			return
		}
	}
	b.say(ctx, ev.Conv, "No workspace "+arg+"; /workspace lists them.")
}

func (b *Bridge) fresh(ctx context.Context, ev Event, chat *agenthost.ChatRecord) {
	ws, err := b.active(ctx, chat)
	if err != nil {
		b.say(ctx, ev.Conv, err.Error())
		return
	}
	b.mu.Lock()
	if run := b.busy[ev.Conv.Key()]; run != nil {
		run.cancel()
		delete(b.busy, ev.Conv.Key())
	}
	b.mu.Unlock()
	if old := chat.Sessions[ws.ID]; old != "" {
		// The old session stops working on anything still running.
		_, _ = b.call(ctx, "POST", "/w/"+ws.ID+"/opencode/session/"+old+"/abort", map[string]any{}, nil)
	}
	if _, err := b.call(ctx, "PATCH", chatPath(ev.Conv), map[string]any{"session": map[string]string{"workspace": ws.ID, "id": ""}}, nil); err != nil {
		b.say(ctx, ev.Conv, "Could not start a new session: "+err.Error())
		return
	}
	b.say(ctx, ev.Conv, "New session: the next message starts it, in "+ws.Name+".")
}

func (b *Bridge) status(ctx context.Context, ev Event, chat *agenthost.ChatRecord) {
	var st struct {
		Version  string `json:"version"`
		UptimeMs int64  `json:"uptimeMs"`
		RunID    string `json:"runId"`
		Approval struct {
			Mode      string `json:"mode"`
			TimeoutMs int64  `json:"timeoutMs"`
		} `json:"approval"`
		Services []struct {
			WorkspaceID string `json:"workspaceId"`
			Healthy     bool   `json:"healthy"`
			Sandbox     string `json:"sandbox"`
		} `json:"services"`
		Bridge agenthost.BridgeStatus `json:"bridge"`
	}
	if _, err := b.call(ctx, "GET", "/status", nil, &st); err != nil {
		b.say(ctx, ev.Conv, "The agent host does not answer: "+err.Error())
		return
	}
	names := map[string]string{}
	if list, err := b.workspaces(ctx); err == nil {
		for _, w := range list {
			names[w.ID] = w.Name
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "warren %s, run %s, up %s\napproval: %s", st.Version, st.RunID, (time.Duration(st.UptimeMs) * time.Millisecond).Round(time.Second), st.Approval.Mode)
	if st.Approval.Mode == "manual" {
		fmt.Fprintf(&sb, " (%s to answer)", time.Duration(st.Approval.TimeoutMs)*time.Millisecond)
	}
	for _, s := range st.Services {
		health := "healthy"
		if !s.Healthy {
			health = "NOT answering"
		}
		fmt.Fprintf(&sb, "\n%s: OpenCode %s (%s)", names[s.WorkspaceID], health, s.Sandbox)
	}
	fmt.Fprintf(&sb, "\nbridge: %s, %d paired chats, this one a %s chat", strings.Join(st.Bridge.Platforms, " and "), st.Bridge.Chats, chat.Role)
	b.say(ctx, ev.Conv, sb.String())
}

// decode reads a bounded JSON body.
func decode(r io.Reader, v any) error {
	return json.NewDecoder(io.LimitReader(r, 8<<20)).Decode(v)
}
