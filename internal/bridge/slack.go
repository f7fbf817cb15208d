package bridge

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"regexp"
	"strings"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"
)

// Slack is a Slack app on Socket Mode: events arrive over a WebSocket the
// app opens, so the host needs no public address.
type Slack struct {
	botToken, appToken, apiURL string
	log                        *slog.Logger
	api                        *slack.Client
}

// NewSlack makes the Slack client; apiURL "" is Slack's own.
func NewSlack(botToken, appToken, apiURL string, log *slog.Logger) *Slack {
	opts := []slack.Option{slack.OptionAppLevelToken(appToken)}
	if apiURL != "" {
		if !strings.HasSuffix(apiURL, "/") {
			apiURL += "/"
		}
		opts = append(opts, slack.OptionAPIURL(apiURL))
	}
	return &Slack{botToken: botToken, appToken: appToken, apiURL: apiURL, log: log, api: slack.New(botToken, opts...)}
}

func (s *Slack) Name() string { return "slack" }

// Limit keeps a message under the 4000 characters Slack asks for.
func (s *Slack) Limit() int { return 3900 }

// maxEnvelope bounds one Socket Mode message.
const maxEnvelope = 1 << 20

func (s *Slack) Run(ctx context.Context, on func(context.Context, Event)) error {
	auth, err := s.api.AuthTestContext(ctx)
	if err != nil {
		return fmt.Errorf("auth.test: %w", err)
	}
	s.log.Info("slack connected", "team", auth.Team, "bot", auth.User)
	sm := socketmode.New(s.api, socketmode.OptionReadLimit(maxEnvelope), socketmode.OptionLog(slogPrinter{s.log}))
	runErr := make(chan error, 1)
	go func() { runErr <- sm.RunContext(ctx) }()
	for {
		select {
		case err := <-runErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("socket mode: %w", err)
		case <-ctx.Done():
			return nil
		case ev := <-sm.Events:
			if err := s.event(ctx, sm, ev, auth.UserID, on); err != nil {
				return err
			}
		}
	}
}

type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Output(_ int, s string) error { p.log.Debug(s); return nil }

// mention is a user mention at the start of a message ("<@U123> ").
var mention = regexp.MustCompile(`^\s*<@[A-Z0-9]+>\s*`)

func (s *Slack) event(ctx context.Context, sm *socketmode.Client, ev socketmode.Event, self string, on func(context.Context, Event)) error {
	switch ev.Type {
	case socketmode.EventTypeInvalidAuth:
		return errors.New("the app-level token was refused")
	case socketmode.EventTypeConnectionError:
		if e, ok := ev.Data.(*slack.ConnectionErrorEvent); ok {
			s.log.Warn("slack: connection error; retrying", "attempt", e.Attempt, "in", e.Backoff.String(), "err", e.ErrorObj)
		}
	case socketmode.EventTypeEventsAPI:
		sm.Ack(*ev.Request)
		// Retries come when an ack was late; the first one was handled.
		if ev.Request.RetryAttempt > 0 {
			return nil
		}
		outer, ok := ev.Data.(slackevents.EventsAPIEvent)
		if !ok {
			return nil
		}
		switch e := outer.InnerEvent.Data.(type) {
		case *slackevents.MessageEvent:
			// Direct messages only: in channels the app answers when
			// mentioned. Its own messages and edits are not prompts.
			if e.ChannelType != "im" || e.User == "" || e.User == self || e.BotID != "" || e.SubType != "" {
				return nil
			}
			on(ctx, Event{Conv: Conv{Platform: "slack", Chat: e.Channel, Thread: e.ThreadTimeStamp, Title: "direct message"},
				User: e.User, Text: html.UnescapeString(e.Text)})
		case *slackevents.AppMentionEvent:
			if e.User == self || e.BotID != "" {
				return nil
			}
			on(ctx, Event{Conv: Conv{Platform: "slack", Chat: e.Channel, Thread: e.ThreadTimeStamp, Title: e.Channel},
				User: e.User, Text: html.UnescapeString(mention.ReplaceAllString(e.Text, ""))})
		}
	case socketmode.EventTypeInteractive:
		sm.Ack(*ev.Request)
		cb, ok := ev.Data.(slack.InteractionCallback)
		if !ok || cb.Type != slack.InteractionTypeBlockActions {
			return nil
		}
		for _, a := range cb.ActionCallback.BlockActions {
			if a.ActionID != "approval" {
				continue
			}
			conv := Conv{Platform: "slack", Chat: cb.Channel.ID, Thread: cb.Container.ThreadTs}
			user := cb.User.Name
			if user == "" {
				user = cb.User.ID
			}
			on(ctx, Event{Conv: conv, User: user, Pressed: a.Value, Answer: func(ctx context.Context, text string) {
				// The message itself is edited; an ephemeral note tells
				// the presser what happened.
				if _, err := s.api.PostEphemeralContext(ctx, conv.Chat, cb.User.ID, slack.MsgOptionText(text, true), slack.MsgOptionTS(conv.Thread)); err != nil {
					s.log.Warn("slack: answer a button", "err", err)
				}
			}})
		}
	case socketmode.EventTypeSlashCommand:
		sm.Ack(*ev.Request)
		cmd, ok := ev.Data.(slack.SlashCommand)
		if !ok {
			return nil
		}
		// /pair, /new, /status, /workspace, when the app registers them.
		on(ctx, Event{Conv: Conv{Platform: "slack", Chat: cmd.ChannelID, Title: cmd.ChannelName},
			User: cmd.UserName, Text: cmd.Command + " " + cmd.Text})
	}
	return nil
}

func blocks(text string, buttons []Button) slack.MsgOption {
	if len(buttons) == 0 {
		return slack.MsgOptionBlocks() // none (an edit takes them away)
	}
	var els []slack.BlockElement
	for _, b := range buttons {
		el := slack.NewButtonBlockElement("approval", b.Value, slack.NewTextBlockObject(slack.PlainTextType, b.Label, false, false))
		el.Style = slack.StylePrimary
		if b.Danger {
			el.Style = slack.StyleDanger
		}
		els = append(els, el)
	}
	return slack.MsgOptionBlocks(
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.PlainTextType, truncateUnits(text, 3000), false, false), nil, nil),
		slack.NewActionBlock("", els...))
}

func (s *Slack) Send(ctx context.Context, to Conv, text string, buttons []Button) (Ref, error) {
	opts := []slack.MsgOption{slack.MsgOptionText(text, true)}
	if len(buttons) > 0 {
		opts = append(opts, blocks(text, buttons))
	}
	if to.Thread != "" {
		opts = append(opts, slack.MsgOptionTS(to.Thread))
	}
	_, ts, err := s.api.PostMessageContext(ctx, to.Chat, opts...)
	if err != nil {
		return Ref{}, fmt.Errorf("slack: chat.postMessage: %w", err)
	}
	return Ref{Conv: to, ID: ts}, nil
}

func (s *Slack) Edit(ctx context.Context, ref Ref, text string, buttons []Button) error {
	_, _, _, err := s.api.UpdateMessageContext(ctx, ref.Conv.Chat, ref.ID, slack.MsgOptionText(text, true), blocks(text, buttons))
	if err != nil {
		return fmt.Errorf("slack: chat.update: %w", err)
	}
	return nil
}
