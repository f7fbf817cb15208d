package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warrenhq/warren/internal/agenthost"
)

// approvalWait is how long one request for changed approvals waits.
const approvalWait = 25 * time.Second

// watchApprovals shows every pending approval in the host chats, with
// Allow and Deny, and marks it once it is no longer pending. The host
// answers each request when its list changes (a long poll).
func (b *Bridge) watchApprovals(ctx context.Context) error {
	version := ^uint64(0) // none yet: the first answer comes at once
	for ctx.Err() == nil {
		var out struct {
			Items   []agenthost.Approval `json:"items"`
			Version uint64               `json:"version"`
		}
		if _, err := b.call(ctx, "GET", fmt.Sprintf("/approvals?wait=%s&version=%d", approvalWait, version), nil, &out); err != nil {
			if ctx.Err() == nil {
				b.log.Warn("list approvals", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		version = out.Version
		pending := map[string]bool{}
		for _, a := range out.Items {
			pending[a.ID] = true
			b.mu.Lock()
			_, known := b.announced[a.ID]
			if !known {
				b.announced[a.ID] = &announcement{approval: a}
			}
			b.mu.Unlock()
			if !known {
				b.announce(ctx, a)
			}
		}
		b.mu.Lock()
		var gone []*announcement
		for id, an := range b.announced {
			if !pending[id] {
				gone = append(gone, an)
				delete(b.announced, id)
			}
		}
		b.mu.Unlock()
		for _, an := range gone {
			if an.answered {
				continue
			}
			note := "no longer waiting: answered elsewhere"
			if !time.Now().Before(an.approval.ExpiresAt) {
				note = "⏱ timed out: denied"
			}
			b.settle(ctx, an, note)
		}
	}
	return nil
}

func approvalText(a agenthost.Approval, names map[string]string) string {
	ws := names[a.WorkspaceID]
	if ws == "" {
		ws = a.WorkspaceID
	}
	return fmt.Sprintf("🔐 The agent in %s asks to run %s:\n%s\n(denied if nobody answers by %s)", ws, a.Permission,
		truncateUnits(strings.Join(a.Patterns, "\n"), 2000), a.ExpiresAt.Local().Format("15:04:05"))
}

// announce sends an approval to every host chat.
func (b *Bridge) announce(ctx context.Context, a agenthost.Approval) {
	var out struct {
		Chats []agenthost.ChatRecord `json:"chats"`
	}
	if _, err := b.call(ctx, "GET", "/bridge", nil, &out); err != nil {
		b.log.Warn("list chats", "err", err)
		return
	}
	names := map[string]string{}
	if list, err := b.workspaces(ctx); err == nil {
		for _, w := range list {
			names[w.ID] = w.Name
		}
	}
	text := approvalText(a, names)
	b.mu.Lock()
	if an := b.announced[a.ID]; an != nil {
		an.text = text
	}
	b.mu.Unlock()
	buttons := []Button{{Label: "Allow", Value: "allow:" + a.ID}, {Label: "Deny", Value: "deny:" + a.ID, Danger: true}}
	var refs []Ref
	for _, c := range out.Chats {
		if c.Role != agenthost.ChatHost {
			continue // collaborators never see approvals
		}
		conv, ok := parseKey(c.Key)
		p := b.platforms[conv.Platform]
		if !ok || p == nil {
			continue
		}
		ref, err := p.Send(ctx, conv, text, buttons)
		if err != nil {
			b.log.Warn("show an approval", "chat", c.Key, "approval.id", a.ID, "err", err)
			continue
		}
		refs = append(refs, ref)
	}
	b.mu.Lock()
	if an := b.announced[a.ID]; an != nil {
		an.refs = refs
	}
	b.mu.Unlock()
	b.log.Info("approval shown in chats", "approval.id", a.ID, "chats", len(refs))
}

// parseKey turns a chat key back into a conversation.
func parseKey(key string) (Conv, bool) {
	parts := strings.SplitN(key, ":", 3)
	if len(parts) < 2 {
		return Conv{}, false
	}
	c := Conv{Platform: parts[0], Chat: parts[1]}
	if len(parts) == 3 {
		c.Thread = parts[2]
	}
	return c, true
}

// settle replaces an approval's messages with how it ended.
func (b *Bridge) settle(ctx context.Context, an *announcement, note string) {
	b.mu.Lock()
	text, refs := an.text, an.refs
	b.mu.Unlock()
	if i := strings.LastIndex(text, "\n("); i > 0 {
		text = text[:i]
	}
	text += "\n" + note
	for _, ref := range refs {
		if p := b.platforms[ref.Conv.Platform]; p != nil {
			if err := p.Edit(ctx, ref, text, nil); err != nil {
				b.log.Warn("update an approval message", "chat", ref.Conv.Key(), "err", err)
			}
		}
	}
}

// pressed answers Allow or Deny, if the chat is a host chat.
func (b *Bridge) pressed(ctx context.Context, ev Event) {
	answer := func(text string) {
		if ev.Answer != nil {
			ev.Answer(ctx, text)
		}
	}
	verb, id, ok := strings.Cut(ev.Pressed, ":")
	if !ok || (verb != "allow" && verb != "deny") {
		answer("unknown button")
		return
	}
	var chat agenthost.ChatRecord
	if _, err := b.call(ctx, "GET", chatPath(ev.Conv), nil, &chat); err != nil || chat.Role != agenthost.ChatHost {
		b.log.Warn("approval button from a chat that is not a host chat", "chat", ev.Conv.Key(), "approval.id", id)
		answer("Only host chats answer approvals.")
		return
	}
	// Marked before the answer goes: the list changes at once, and the
	// watcher must not call it answered elsewhere.
	b.mu.Lock()
	an := b.announced[id]
	if an != nil {
		an.answered = true
	}
	b.mu.Unlock()
	_, err := b.call(ctx, "POST", "/approvals/"+id, map[string]string{"reply": verb}, nil)
	var se *agenthost.StatusError
	switch {
	case errors.As(err, &se) && se.Status == 404:
		answer("No longer waiting (answered or timed out).")
		if an != nil {
			b.settle(ctx, an, "no longer waiting: answered elsewhere or timed out")
		}
		return
	case err != nil:
		b.mu.Lock()
		if an != nil {
			an.answered = false
		}
		b.mu.Unlock()
		b.log.Warn("answer an approval", "approval.id", id, "err", err)
		answer("Could not answer: " + err.Error())
		return
	}
	b.log.Info("approval answered from a chat", "approval.id", id, "reply", verb, "chat", ev.Conv.Key(), "by", ev.User)
	who := ev.User
	if who == "" {
		who = "someone"
	}
	note := "✅ allowed by " + who
	if verb == "deny" {
		note = "❌ denied by " + who
	}
	answer(note)
	if an != nil {
		b.settle(ctx, an, note)
	}
}
