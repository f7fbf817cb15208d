package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/warrenhq/warren/internal/agenthost"
)

// ReadConfig reads the config the agent host writes to the bridge's
// stdin (one JSON object).
func ReadConfig(r io.Reader) (*agenthost.BridgeConfig, error) {
	var cfg agenthost.BridgeConfig
	if err := decode(r, &cfg); err != nil {
		return nil, fmt.Errorf("read the bridge config from stdin: %w", err)
	}
	if cfg.URL == "" || cfg.HostToken == "" {
		return nil, errors.New("the bridge config names no workspace server (url, host_token)")
	}
	if len(cfg.Platforms()) == 0 {
		return nil, errors.New("no chat platform: give --telegram-token, or --slack-bot-token and --slack-app-token")
	}
	return &cfg, cfg.Check()
}

// Serve runs the bridge for cfg until ctx ends or a platform fails for
// good.
func Serve(ctx context.Context, cfg *agenthost.BridgeConfig, log *slog.Logger) error {
	var ps []Platform
	if cfg.TelegramToken != "" {
		ps = append(ps, NewTelegram(cfg.TelegramToken, cfg.TelegramAPIURL, log))
	}
	if cfg.SlackBotToken != "" {
		ps = append(ps, NewSlack(cfg.SlackBotToken, cfg.SlackAppToken, cfg.SlackAPIURL, log))
	}
	return New(*cfg, log, ps...).Run(ctx)
}

// Redact wraps a log handler so no record carries one of the secrets
// (the platforms' tokens, the host token), whatever a library puts in
// an error.
func Redact(h slog.Handler, secrets ...string) slog.Handler {
	var keep []string
	for _, s := range secrets {
		if len(s) >= 8 {
			keep = append(keep, s)
		}
	}
	return &redactor{h: h, secrets: keep}
}

type redactor struct {
	h       slog.Handler
	secrets []string
}

func (r *redactor) clean(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

func (r *redactor) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r *redactor) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, r.clean(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(r.attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r *redactor) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, r.clean(v.String()))
	case slog.KindGroup:
		var as []any
		for _, g := range v.Group() {
			as = append(as, r.attr(g))
		}
		return slog.Group(a.Key, as...)
	case slog.KindAny:
		// Errors and anything else print as text: clean that text.
		return slog.String(a.Key, r.clean(fmt.Sprint(v.Any())))
	}
	return a
}

func (r *redactor) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = r.attr(a)
	}
	return &redactor{h: r.h.WithAttrs(clean), secrets: r.secrets}
}

func (r *redactor) WithGroup(name string) slog.Handler {
	return &redactor{h: r.h.WithGroup(name), secrets: r.secrets}
}
