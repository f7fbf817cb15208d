package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"
)

// Telegram is a bot on Telegram's Bot API, by long polling.
type Telegram struct {
	token, apiURL string
	log           *slog.Logger
	b             *bot.Bot
}

// NewTelegram makes the Telegram client; apiURL "" is Telegram's own.
func NewTelegram(token, apiURL string, log *slog.Logger) *Telegram {
	return &Telegram{token: token, apiURL: apiURL, log: log}
}

func (t *Telegram) Name() string { return "telegram" }

// Limit is Telegram's longest message text.
func (t *Telegram) Limit() int { return 4096 }

// pollWait is how long one getUpdates call waits for news.
const pollWait = 30 * time.Second

func (t *Telegram) Run(ctx context.Context, on func(context.Context, Event)) error {
	opts := []bot.Option{
		bot.WithDefaultHandler(func(ctx context.Context, _ *bot.Bot, u *models.Update) { t.update(ctx, u, on) }),
		// The library's errors name the method, never the token (it
		// takes the token out of URLs in errors itself).
		bot.WithErrorsHandler(func(err error) { t.log.Warn("telegram", "err", err) }),
		bot.WithHTTPClient(pollWait+5*time.Second, &http.Client{Timeout: pollWait + 5*time.Second}),
		bot.WithCheckInitTimeout(15 * time.Second),
		// Updates reach the bridge in order; it queues them per chat.
		bot.WithNotAsyncHandlers(),
		bot.WithAllowedUpdates(bot.AllowedUpdates{"message", "callback_query"}),
	}
	if t.apiURL != "" {
		opts = append(opts, bot.WithServerURL(t.apiURL))
	}
	b, err := bot.New(t.token, opts...)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	t.b = b
	me, _ := b.GetMe(ctx)
	if me != nil {
		t.log.Info("telegram connected", "bot", me.Username)
	}
	b.Start(ctx)
	return nil
}

func chatTitle(c models.Chat) string {
	switch {
	case c.Title != "":
		return c.Title
	case c.Username != "":
		return "@" + c.Username
	}
	return c.FirstName
}

func userName(u *models.User) string {
	if u == nil {
		return ""
	}
	if u.Username != "" {
		return "@" + u.Username
	}
	return u.FirstName
}

func (t *Telegram) update(ctx context.Context, u *models.Update, on func(context.Context, Event)) {
	switch {
	case u.Message != nil && u.Message.Text != "":
		m := u.Message
		on(ctx, Event{Conv: t.conv(m), User: userName(m.From), Text: m.Text})
	case u.CallbackQuery != nil && u.CallbackQuery.Message.Message != nil:
		q := u.CallbackQuery
		on(ctx, Event{Conv: t.conv(q.Message.Message), User: userName(&q.From), Pressed: q.Data,
			Answer: func(ctx context.Context, text string) {
				if _, err := t.b.AnswerCallbackQuery(ctx, &bot.AnswerCallbackQueryParams{CallbackQueryID: q.ID, Text: truncateUnits(text, 200)}); err != nil {
					t.log.Warn("telegram: answer a button", "err", err)
				}
			}})
	}
}

func (t *Telegram) conv(m *models.Message) Conv {
	c := Conv{Platform: "telegram", Chat: strconv.FormatInt(m.Chat.ID, 10), Title: chatTitle(m.Chat)}
	// In a forum, each topic is a conversation of its own.
	if m.IsTopicMessage && m.MessageThreadID != 0 {
		c.Thread = strconv.Itoa(m.MessageThreadID)
	}
	return c
}

func keyboard(buttons []Button) models.ReplyMarkup {
	if len(buttons) == 0 {
		return nil
	}
	row := make([]models.InlineKeyboardButton, 0, len(buttons))
	for _, b := range buttons {
		row = append(row, models.InlineKeyboardButton{Text: b.Label, CallbackData: b.Value})
	}
	return models.InlineKeyboardMarkup{InlineKeyboard: [][]models.InlineKeyboardButton{row}}
}

func (t *Telegram) Send(ctx context.Context, to Conv, text string, buttons []Button) (Ref, error) {
	if t.b == nil {
		return Ref{}, fmt.Errorf("telegram is not connected")
	}
	chat, err := strconv.ParseInt(to.Chat, 10, 64)
	if err != nil {
		return Ref{}, fmt.Errorf("telegram chat %q: %w", to.Chat, err)
	}
	thread, _ := strconv.Atoi(to.Thread)
	m, err := t.b.SendMessage(ctx, &bot.SendMessageParams{ChatID: chat, MessageThreadID: thread, Text: text, ReplyMarkup: keyboard(buttons)})
	if err != nil {
		return Ref{}, fmt.Errorf("telegram: send: %w", err)
	}
	return Ref{Conv: to, ID: strconv.Itoa(m.ID)}, nil
}

func (t *Telegram) Edit(ctx context.Context, ref Ref, text string, buttons []Button) error {
	if t.b == nil {
		return fmt.Errorf("telegram is not connected")
	}
	chat, err := strconv.ParseInt(ref.Conv.Chat, 10, 64)
	if err != nil {
		return fmt.Errorf("telegram chat %q: %w", ref.Conv.Chat, err)
	}
	id, _ := strconv.Atoi(ref.ID)
	// Without reply_markup the edit also takes the buttons away.
	_, err = t.b.EditMessageText(ctx, &bot.EditMessageTextParams{ChatID: chat, MessageID: id, Text: text, ReplyMarkup: keyboard(buttons)})
	if err != nil {
		return fmt.Errorf("telegram: edit: %w", err)
	}
	return nil
}
