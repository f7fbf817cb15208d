package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/warrenhq/warren/internal/agenthost"
)

// editEvery is how often a streaming reply is edited: the platforms
// throttle bots that edit faster.
const editEvery = time.Second

// openCodeMessage is a message as OpenCode lists it.
type openCodeMessage struct {
	Info struct {
		ID    string `json:"id"`
		Role  string `json:"role"`
		Error *struct {
			Name string `json:"name"`
			Data struct {
				Message string `json:"message"`
			} `json:"data"`
		} `json:"error"`
	} `json:"info"`
	Parts []struct {
		Type  string `json:"type"`
		Text  string `json:"text"`
		Tool  string `json:"tool"`
		State struct {
			Status string         `json:"status"`
			Title  string         `json:"title"`
			Input  map[string]any `json:"input"`
		} `json:"state"`
	} `json:"parts"`
}

// prompt sends a chat's message to its session and streams the answer
// back, then sums up the files that changed. It returns once the prompt
// is sent; the answer streams on in the background, and the chat's next
// message (a /new, say) is handled meanwhile.
func (b *Bridge) prompt(ctx context.Context, ev Event, chat *agenthost.ChatRecord) {
	key := ev.Conv.Key()
	ctx, cancel := context.WithCancel(ctx)
	b.mu.Lock()
	if b.busy[key] != nil {
		b.mu.Unlock()
		cancel()
		b.say(ctx, ev.Conv, "The agent is still on your last message; wait for it, or /new to start over.")
		return
	}
	run := &running{cancel: cancel}
	b.busy[key] = run
	b.mu.Unlock()
	streaming := false
	defer func() {
		if !streaming {
			b.idle(key, run)
		}
	}()

	ws, err := b.active(ctx, chat)
	if err != nil {
		b.say(ctx, ev.Conv, err.Error())
		return
	}
	oc := "/w/" + ws.ID + "/opencode"
	session := chat.Sessions[ws.ID]
	var before []openCodeMessage
	if session != "" {
		_, err := b.call(ctx, "GET", oc+"/session/"+session+"/message", nil, &before)
		var se *agenthost.StatusError
		if errors.As(err, &se) && se.Status == 404 {
			// OpenCode no longer has it (its data was removed): start
			// another rather than fail every message.
			b.log.Warn("a chat's session is gone; starting another", "chat", key, "session", session)
			session = ""
		} else if err != nil {
			b.say(ctx, ev.Conv, fmt.Sprintf("The session does not answer (%v); /new starts another.", err))
			return
		}
	}
	if session == "" {
		var s struct {
			ID string `json:"id"`
		}
		if _, err := b.call(ctx, "POST", oc+"/session", map[string]any{"title": "chat " + ev.Conv.Title}, &s); err != nil || s.ID == "" {
			b.say(ctx, ev.Conv, fmt.Sprintf("Could not start a session: %v", err))
			return
		}
		session, before = s.ID, nil
		if _, err := b.call(ctx, "PATCH", chatPath(ev.Conv), map[string]any{"session": map[string]string{"workspace": ws.ID, "id": session}}, nil); err != nil {
			b.log.Warn("record a chat's session", "chat", key, "err", err)
		}
		b.log.Info("session started for a chat", "chat", key, "workspace.id", ws.ID, "session", session)
	}
	seen := map[string]bool{}
	for _, m := range before {
		seen[m.Info.ID] = true
	}
	snap := snapshot(ws.Path)

	r := &reply{p: b.platforms[ev.Conv.Platform], to: ev.Conv}
	r.update(ctx, "…")
	streaming = true
	go func() {
		defer b.idle(key, run)
		b.stream(ctx, ev, oc, session, seen, snap, r)
	}()
}

// running is a conversation's prompt in progress.
type running struct{ cancel context.CancelFunc }

// idle marks a conversation as no longer running this prompt (a /new may
// have started the next one already).
func (b *Bridge) idle(key string, run *running) {
	run.cancel()
	b.mu.Lock()
	if b.busy[key] == run {
		delete(b.busy, key)
	}
	b.mu.Unlock()
}

// stream runs the prompt and edits the reply as the answer grows.
func (b *Bridge) stream(ctx context.Context, ev Event, oc, session string, seen map[string]bool, snap *tree, r *reply) {
	done := make(chan error, 1)
	go func() {
		_, err := b.call(ctx, "POST", oc+"/session/"+session+"/message",
			map[string]any{"parts": []map[string]string{{"type": "text", "text": ev.Text}}}, nil)
		done <- err
	}()
	render := func() string {
		var msgs []openCodeMessage
		if _, err := b.call(ctx, "GET", oc+"/session/"+session+"/message", nil, &msgs); err != nil {
			return ""
		}
		return renderAnswer(msgs, seen)
	}
	t := time.NewTicker(editEvery)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			text := render()
			if err != nil && ctx.Err() == nil {
				text += "\n⚠ " + err.Error()
			}
			if ctx.Err() != nil {
				text += "\n(stopped)"
			}
			if strings.TrimSpace(text) == "" {
				text = "(no answer)"
			}
			if changes := snap.changes(); changes != "" {
				text += "\n\n" + changes
			}
			r.update(context.WithoutCancel(ctx), text)
			return
		case <-t.C:
			if text := render(); strings.TrimSpace(text) != "" {
				r.update(ctx, text+" …")
			}
		}
	}
}

// renderAnswer writes the assistant's messages that are not in seen as
// chat text: what it said, and a line for each tool it ran.
func renderAnswer(msgs []openCodeMessage, seen map[string]bool) string {
	var sb strings.Builder
	for _, m := range msgs {
		if seen[m.Info.ID] || m.Info.Role != "assistant" {
			continue
		}
		for _, p := range m.Parts {
			switch p.Type {
			case "text":
				if t := strings.TrimSpace(p.Text); t != "" {
					sb.WriteString(t + "\n")
				}
			case "tool":
				what := p.State.Title
				if what == "" {
					for _, k := range []string{"description", "command", "filePath", "url"} {
						if s, ok := p.State.Input[k].(string); ok && s != "" {
							what = s
							break
						}
					}
				}
				fmt.Fprintf(&sb, "⚙ %s: %s (%s)\n", p.Tool, truncateUnits(what, 200), p.State.Status)
			}
		}
		if e := m.Info.Error; e != nil {
			msg := e.Data.Message
			if msg == "" {
				msg = e.Name
			}
			sb.WriteString("⚠ " + msg + "\n")
		}
	}
	return strings.TrimRight(sb.String(), "\n")
}

// reply is an answer that grows: its text is split into messages no
// longer than the platform takes, each edited in place as it changes.
type reply struct {
	p    Platform
	to   Conv
	sent []Ref
	text []string
}

func (r *reply) update(ctx context.Context, text string) {
	if r.p == nil {
		return
	}
	for i, part := range chunks(text, r.p.Limit()) {
		switch {
		case i >= len(r.sent):
			ref, err := r.p.Send(ctx, r.to, part, nil)
			if err != nil {
				return
			}
			r.sent, r.text = append(r.sent, ref), append(r.text, part)
		case r.text[i] != part:
			if r.p.Edit(ctx, r.sent[i], part, nil) == nil {
				r.text[i] = part
			}
		}
	}
}

// units is a string's length as the platforms count it (UTF-16 units).
func units(s string) int { return len(utf16.Encode([]rune(s))) }

// chunks splits text into pieces of at most limit units, at a line break
// where there is one in the second half of a piece.
func chunks(text string, limit int) []string {
	var out []string
	for units(text) > limit {
		cut, n := 0, 0
		for i, r := range text {
			w := 1
			if r > 0xFFFF {
				w = 2
			}
			if n+w > limit {
				cut = i
				break
			}
			n += w
		}
		if nl := strings.LastIndexByte(text[:cut], '\n'); nl > cut/2 {
			cut = nl + 1
		}
		out = append(out, text[:cut])
		text = text[cut:]
	}
	return append(out, text)
}

// truncateUnits shortens text to at most limit units.
func truncateUnits(text string, limit int) string {
	if units(text) <= limit {
		return text
	}
	return chunks(text, limit-1)[0] + "…"
}
