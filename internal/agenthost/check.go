package agenthost

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Check verifies a started host end to end through its own server, as a
// client would: health, workspaces with and without a token, a session
// created and read through the proxy, and with events an event on
// OpenCode's stream. The error names the step that failed.
func (h *Host) Check(ctx context.Context, events bool) error {
	base, token := h.URL(), h.st.f.ClientToken
	client, anonymous := BearerClient(base, token), BearerClient(base, "")
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	step := func(name string, err error) error {
		if err != nil {
			h.log.Error("check failed", "check", name, "err", err)
			return fmt.Errorf("check %s: %w", name, err)
		}
		h.log.Info("check passed", "check", name)
		return nil
	}

	var health struct {
		OK bool `json:"ok"`
	}
	_, err := anonymous.Call(ctx, "GET", "/health", nil, &health)
	if err == nil && !health.OK {
		err = fmt.Errorf("ok=%v", health.OK)
	}
	if err := step("health", err); err != nil {
		return err
	}
	code, err := anonymous.Call(ctx, "GET", "/workspaces", nil, nil)
	if code == 401 {
		err = nil
	} else if err == nil {
		err = fmt.Errorf("without a token: status %d, want 401", code)
	}
	if err := step("workspaces without a token", err); err != nil {
		return err
	}
	var list struct {
		Items []workspaceView `json:"items"`
	}
	_, err = client.Call(ctx, "GET", "/workspaces", nil, &list)
	if err == nil && len(list.Items) == 0 {
		err = fmt.Errorf("with the client token: no workspaces")
	}
	if err := step("workspaces with the client token", err); err != nil {
		return err
	}
	proxy := "/w/" + list.Items[0].ID + "/opencode"
	var session struct {
		ID string `json:"id"`
	}
	_, err = client.Call(ctx, "POST", proxy+"/session", map[string]any{"title": "warren check"}, &session)
	if err == nil && session.ID == "" {
		err = fmt.Errorf("no session id")
	}
	if err := step("session create through the proxy", err); err != nil {
		return err
	}
	var messages []json.RawMessage
	_, err = client.Call(ctx, "GET", proxy+"/session/"+session.ID+"/message", nil, &messages)
	if err := step("session messages through the proxy", err); err != nil {
		return err
	}
	if events {
		if err := step("events", h.checkEvents(ctx, base+proxy+"/event", token)); err != nil {
			return err
		}
	}
	return nil
}

// checkEvents waits for one event on OpenCode's SSE stream.
func (h *Host) checkEvents(ctx context.Context, url, token string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("event stream: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
			var ev struct {
				Type string `json:"type"`
			}
			if json.Unmarshal([]byte(strings.TrimSpace(data)), &ev) == nil && ev.Type != "" {
				h.log.Info("event seen", "type", ev.Type)
				return nil
			}
		}
	}
	return fmt.Errorf("no event within 20s: %v", sc.Err())
}
