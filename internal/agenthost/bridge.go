package agenthost

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The chat bridge runs as a child process of the agent host (`warren
// bridge run`): a crash in it, or in the chat clients it uses, cannot take
// the agent host down. It is a client of the workspace server with the
// host token; what it must remember (paired chats, their sessions) the
// host keeps, in bridge.json beside state.json, so the console, the CLI
// and a restarted bridge all see the same chats.

// Chat roles: a host chat may answer approvals; a collaborator chat may
// drive the agent but never sees an approval.
const (
	ChatHost         = "host"
	ChatCollaborator = "collaborator"
)

// BridgeConfig is what the host gives the bridge process on its stdin.
// It holds the platforms' tokens: they reach the child through a pipe,
// never its command line or environment.
type BridgeConfig struct {
	URL       string `json:"url"`
	HostToken string `json:"host_token"`
	RunID     string `json:"run_id"`
	LogFormat string `json:"log_format"`
	Version   string `json:"version"`

	TelegramToken  string `json:"telegram_token,omitempty"`
	TelegramAPIURL string `json:"telegram_api_url,omitempty"`
	SlackBotToken  string `json:"slack_bot_token,omitempty"`
	SlackAppToken  string `json:"slack_app_token,omitempty"`
	SlackAPIURL    string `json:"slack_api_url,omitempty"`
}

// Platforms names the chat platforms a config enables.
func (c *BridgeConfig) Platforms() []string {
	var out []string
	if c.TelegramToken != "" {
		out = append(out, "telegram")
	}
	if c.SlackBotToken != "" || c.SlackAppToken != "" {
		out = append(out, "slack")
	}
	return out
}

// Check says what is missing from a bridge config, naming the flag.
func (c *BridgeConfig) Check() error {
	if (c.SlackBotToken == "") != (c.SlackAppToken == "") {
		return errors.New("--slack-bot-token and --slack-app-token go together (Socket Mode needs the app-level token too)")
	}
	return nil
}

// ChatRecord is a chat the bridge has heard from: paired with a role, or
// refused once.
type ChatRecord struct {
	// Key names the conversation: telegram:CHAT[:THREAD] or
	// slack:CHANNEL[:THREAD_TS].
	Key      string    `json:"key"`
	Platform string    `json:"platform"`
	Title    string    `json:"title,omitempty"`
	Role     string    `json:"role,omitempty"`
	PairedBy string    `json:"pairedBy,omitempty"`
	PairedAt time.Time `json:"pairedAt,omitzero"`
	// Refused is when an unpaired chat was told so, once.
	Refused time.Time `json:"refused,omitzero"`
	// Workspace is the chat's active workspace ("" for the first one).
	Workspace string `json:"workspace,omitempty"`
	// Sessions maps a workspace id to the chat's OpenCode session there.
	Sessions map[string]string `json:"sessions,omitempty"`
}

type pairCode struct {
	Hash      string    `json:"hash"`
	Role      string    `json:"role"`
	ExpiresAt time.Time `json:"expiresAt"`
}

type bridgeFile struct {
	Chats map[string]*ChatRecord `json:"chats"`
	Codes []pairCode             `json:"codes"`
}

// BridgeStatus is the bridge process as the host sees it.
type BridgeStatus struct {
	Enabled   bool      `json:"enabled"`
	Required  bool      `json:"required"`
	Platforms []string  `json:"platforms"`
	State     string    `json:"state"` // off, starting, running, restarting, exited
	PID       int       `json:"pid,omitempty"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	Restarts  int       `json:"restarts"`
	LastError string    `json:"lastError,omitempty"`
	Chats     int       `json:"chats"`
}

// bridgeState is the host's side of the bridge: its file and its process.
type bridgeState struct {
	path string
	mu   sync.Mutex
	f    bridgeFile
	// failures counts wrong codes per chat, so codes cannot be guessed.
	failures map[string][]time.Time
	status   BridgeStatus
}

// pairCodeTTL is how long a pairing code works; maxCodeFailures wrong
// codes in pairCodeTTL lock a chat out for that long.
const (
	pairCodeTTL     = 10 * time.Minute
	maxCodeFailures = 5
)

func loadBridge(dir string) (*bridgeState, error) {
	b := &bridgeState{path: filepath.Join(dir, "bridge.json"), failures: map[string][]time.Time{}, status: BridgeStatus{State: "off"}}
	raw, err := os.ReadFile(b.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read bridge state: %w", err)
	default:
		if err := json.Unmarshal(raw, &b.f); err != nil {
			return nil, fmt.Errorf("parse %s: %w", b.path, err)
		}
	}
	if b.f.Chats == nil {
		b.f.Chats = map[string]*ChatRecord{}
	}
	return b, nil
}

func (b *bridgeState) saveLocked() error {
	return writeFileAtomic(b.path, &b.f)
}

// writeFileAtomic writes v as JSON, 0600, atomically.
func writeFileAtomic(path string, v any) error {
	raw, _ := json.MarshalIndent(v, "", "  ")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// newCode makes a single-use pairing code for a role.
func (b *bridgeState) newCode(role string) (string, time.Time, error) {
	if role != ChatHost && role != ChatCollaborator {
		return "", time.Time{}, fmt.Errorf("role %q: want host or collaborator", role)
	}
	// 8 characters of base32: 40 bits, for ten minutes, five tries a chat.
	code := strings.ToUpper(newToken("x")[2:10])
	exp := time.Now().Add(pairCodeTTL).UTC()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pruneLocked()
	b.f.Codes = append(b.f.Codes, pairCode{Hash: hashToken(code), Role: role, ExpiresAt: exp})
	return code, exp, b.saveLocked()
}

func (b *bridgeState) pruneLocked() {
	now := time.Now()
	kept := b.f.Codes[:0]
	for _, c := range b.f.Codes {
		if now.Before(c.ExpiresAt) {
			kept = append(kept, c)
		}
	}
	b.f.Codes = kept
}

// errBadCode is a pairing code that is wrong, used or expired;
// errLockedOut a chat that guessed too often.
var (
	errBadCode   = errors.New("that pairing code is not valid (wrong, used or expired)")
	errLockedOut = errors.New("too many wrong pairing codes from this chat; try again later")
)

// claim pairs a chat with the role of a valid code, which is used up.
func (b *bridgeState) claim(key, platform, title, user, code string) (*ChatRecord, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	recent := b.failures[key][:0]
	for _, t := range b.failures[key] {
		if now.Sub(t) < pairCodeTTL {
			recent = append(recent, t)
		}
	}
	b.failures[key] = recent
	if len(recent) >= maxCodeFailures {
		return nil, errLockedOut
	}
	b.pruneLocked()
	h := []byte(hashToken(strings.ToUpper(strings.TrimSpace(code))))
	found := -1
	for i, c := range b.f.Codes {
		if subtle.ConstantTimeCompare(h, []byte(c.Hash)) == 1 {
			found = i
		}
	}
	if found < 0 {
		b.failures[key] = append(b.failures[key], now)
		return nil, errBadCode
	}
	role := b.f.Codes[found].Role
	b.f.Codes = append(b.f.Codes[:found], b.f.Codes[found+1:]...)
	c := b.f.Chats[key]
	if c == nil {
		c = &ChatRecord{Key: key}
		b.f.Chats[key] = c
	}
	c.Platform, c.Title, c.Role, c.PairedBy, c.PairedAt = platform, title, role, user, now.UTC()
	delete(b.failures, key)
	return c.copy(), b.saveLocked()
}

func (c *ChatRecord) copy() *ChatRecord {
	out := *c
	out.Sessions = map[string]string{}
	for k, v := range c.Sessions {
		out.Sessions[k] = v
	}
	return &out
}

func (b *bridgeState) chat(key string) *ChatRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c := b.f.Chats[key]; c != nil {
		return c.copy()
	}
	return nil
}

func (b *bridgeState) chats() []*ChatRecord {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*ChatRecord, 0, len(b.f.Chats))
	for _, c := range b.f.Chats {
		out = append(out, c.copy())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// refuse records that an unpaired chat was refused; it reports whether
// this is the first time (only the first refusal is sent).
func (b *bridgeState) refuse(key, platform, title string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.f.Chats[key]
	if c != nil && (c.Role != "" || !c.Refused.IsZero()) {
		return false, nil
	}
	if c == nil && len(b.f.Chats) >= maxChats {
		return false, nil // a flood of strangers is not remembered
	}
	b.f.Chats[key] = &ChatRecord{Key: key, Platform: platform, Title: title, Refused: time.Now().UTC()}
	return true, b.saveLocked()
}

// maxChats bounds the chats remembered (paired or refused).
const maxChats = 10000

// update changes a paired chat's workspace or one of its sessions.
func (b *bridgeState) update(key string, workspace *string, sessionWS, sessionID string) (*ChatRecord, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.f.Chats[key]
	if c == nil || c.Role == "" {
		return nil, fmt.Errorf("chat %s is not paired", key)
	}
	if workspace != nil {
		c.Workspace = *workspace
	}
	if sessionWS != "" {
		if c.Sessions == nil {
			c.Sessions = map[string]string{}
		}
		if sessionID == "" {
			delete(c.Sessions, sessionWS)
		} else {
			c.Sessions[sessionWS] = sessionID
		}
	}
	return c.copy(), b.saveLocked()
}

func (b *bridgeState) unpair(key string) (bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.f.Chats[key]; !ok {
		return false, nil
	}
	delete(b.f.Chats, key)
	return true, b.saveLocked()
}

// Bridge reports the bridge's state.
func (h *Host) Bridge() BridgeStatus {
	b := h.bridge
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.status
	st.Platforms = append([]string(nil), st.Platforms...)
	for _, c := range b.f.Chats {
		if c.Role != "" {
			st.Chats++
		}
	}
	return st
}

func (h *Host) setBridge(f func(*BridgeStatus)) {
	h.bridge.mu.Lock()
	defer h.bridge.mu.Unlock()
	f(&h.bridge.status)
}

// RunBridge runs the bridge process until ctx ends, starting it again
// (with a growing pause) whenever it exits. With required, its first exit
// ends RunBridge with an error instead, and with it the agent host.
func (h *Host) RunBridge(ctx context.Context, cfg BridgeConfig, required bool) error {
	if err := cfg.Check(); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("chat bridge: %w", err)
	}
	cfg.URL, cfg.HostToken, cfg.RunID, cfg.Version = h.URL(), h.st.f.HostToken, h.cfg.RunID, h.cfg.Version
	h.setBridge(func(s *BridgeStatus) {
		s.Enabled, s.Required, s.Platforms, s.State = true, required, cfg.Platforms(), "starting"
	})
	log := h.log.With("service.name", "bridge")
	pause := time.Second
	for {
		started := time.Now()
		err := h.runBridgeOnce(ctx, exe, cfg)
		if ctx.Err() != nil {
			h.setBridge(func(s *BridgeStatus) { s.State, s.PID = "off", 0 })
			return nil
		}
		msg := "exited"
		if err != nil {
			msg = err.Error()
		}
		if required {
			h.setBridge(func(s *BridgeStatus) { s.State, s.PID, s.LastError = "exited", 0, msg })
			return fmt.Errorf("the chat bridge exited (%s) and --bridge-required is set", msg)
		}
		if time.Since(started) > time.Minute {
			pause = time.Second
		}
		log.Warn("chat bridge exited; the agent host keeps running and starts it again", "err", msg, "in", pause.String())
		h.setBridge(func(s *BridgeStatus) { s.State, s.PID, s.LastError = "restarting", 0, msg; s.Restarts++ })
		select {
		case <-ctx.Done():
			h.setBridge(func(s *BridgeStatus) { s.State = "off" })
			return nil
		case <-time.After(pause):
		}
		pause = min(pause*2, 30*time.Second)
	}
}

func (h *Host) runBridgeOnce(ctx context.Context, exe string, cfg BridgeConfig) error {
	cmd := exec.Command(exe, "bridge", "run")
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	// Its records join the merged log as they are (they carry the run id).
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the chat bridge: %w", err)
	}
	h.setBridge(func(s *BridgeStatus) { s.State, s.PID, s.StartedAt = "running", cmd.Process.Pid, time.Now().UTC() })
	_ = json.NewEncoder(in).Encode(&cfg)
	// Closing stdin is not the end: the bridge reads its config, then
	// watches stdin only to notice the host is gone.
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		in.Close()
		if err != nil {
			return fmt.Errorf("chat bridge: %w", err)
		}
		return errors.New("chat bridge exited")
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		in.Close()
		return nil
	}
}

// The bridge's endpoints, host token only.

func (h *Host) handleBridge(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"bridge": h.Bridge(), "chats": h.bridge.chats()})
}

func (h *Host) handlePairCode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Role string `json:"role"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "decode body: "+err.Error())
		return
	}
	if req.Role == "" {
		req.Role = ChatHost
	}
	code, exp, err := h.bridge.newCode(req.Role)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	h.log.Info("pairing code made", "service.name", "bridge", "role", req.Role, "expires", exp)
	writeJSON(w, http.StatusCreated, map[string]any{"code": code, "role": req.Role, "expiresAt": exp})
}

type chatRequest struct {
	Key       string  `json:"key"`
	Platform  string  `json:"platform"`
	Title     string  `json:"title"`
	User      string  `json:"user"`
	Code      string  `json:"code"`
	Workspace *string `json:"workspace"`
	Session   *struct {
		Workspace string `json:"workspace"`
		ID        string `json:"id"`
	} `json:"session"`
}

func decodeChat(w http.ResponseWriter, r *http.Request) (*chatRequest, bool) {
	var req chatRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "decode body: "+err.Error())
		return nil, false
	}
	if k := r.PathValue("key"); k != "" {
		req.Key = k
	}
	if req.Key == "" || len(req.Key) > 256 {
		writeJSONError(w, http.StatusBadRequest, "bad_request", "key: a chat key of at most 256 bytes is required")
		return nil, false
	}
	req.Title = truncate(req.Title, 200)
	req.User = truncate(req.User, 200)
	return &req, true
}

func (h *Host) handleClaim(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeChat(w, r)
	if !ok {
		return
	}
	c, err := h.bridge.claim(req.Key, req.Platform, req.Title, req.User, req.Code)
	switch {
	case errors.Is(err, errBadCode), errors.Is(err, errLockedOut):
		h.log.Warn("pairing refused", "service.name", "bridge", "chat", req.Key, "err", err)
		writeJSONError(w, http.StatusForbidden, "forbidden", err.Error())
	case err != nil:
		writeJSONError(w, http.StatusInternalServerError, "internal", err.Error())
	default:
		h.log.Info("chat paired", "service.name", "bridge", "chat", c.Key, "role", c.Role, "by", c.PairedBy)
		writeJSON(w, http.StatusOK, c)
	}
}

func (h *Host) handleRefuse(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeChat(w, r)
	if !ok {
		return
	}
	first, err := h.bridge.refuse(req.Key, req.Platform, req.Title)
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"first": first})
}

func (h *Host) handleChat(w http.ResponseWriter, r *http.Request) {
	c := h.bridge.chat(r.PathValue("key"))
	if c == nil {
		writeJSONError(w, http.StatusNotFound, "not_found", "no chat "+r.PathValue("key"))
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (h *Host) handleUpdateChat(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeChat(w, r)
	if !ok {
		return
	}
	ws, id := "", ""
	if req.Session != nil {
		ws, id = req.Session.Workspace, req.Session.ID
		if ws == "" {
			writeJSONError(w, http.StatusBadRequest, "bad_request", "session.workspace: required")
			return
		}
	}
	c, err := h.bridge.update(req.Key, req.Workspace, ws, id)
	if err != nil {
		writeJSONError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (h *Host) handleUnpair(w http.ResponseWriter, r *http.Request) {
	ok, err := h.bridge.unpair(r.PathValue("key"))
	switch {
	case err != nil:
		writeJSONError(w, http.StatusInternalServerError, "internal", err.Error())
	case !ok:
		writeJSONError(w, http.StatusNotFound, "not_found", "no chat "+r.PathValue("key"))
	default:
		h.log.Info("chat unpaired", "service.name", "bridge", "chat", r.PathValue("key"))
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	}
}
