package agenthost

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	call := func(method, path, tok string, body any, out any) (int, error) {
		var r io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			r = strings.NewReader(string(b))
		}
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, base+path, r)
		if err != nil {
			return 0, err
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil && resp.StatusCode < 300 {
			if err := json.Unmarshal(b, out); err != nil {
				return resp.StatusCode, fmt.Errorf("decode %s: %w: %.200s", path, err, b)
			}
		}
		return resp.StatusCode, nil
	}
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
	code, err := call("GET", "/health", "", nil, &health)
	if err == nil && (code != 200 || !health.OK) {
		err = fmt.Errorf("status %d, ok=%v", code, health.OK)
	}
	if err := step("health", err); err != nil {
		return err
	}
	code, err = call("GET", "/workspaces", "", nil, nil)
	if err == nil && code != 401 {
		err = fmt.Errorf("without a token: status %d, want 401", code)
	}
	if err := step("workspaces without a token", err); err != nil {
		return err
	}
	var list struct {
		Items []workspaceView `json:"items"`
	}
	code, err = call("GET", "/workspaces", token, nil, &list)
	if err == nil && (code != 200 || len(list.Items) == 0) {
		err = fmt.Errorf("with the client token: status %d, %d workspaces", code, len(list.Items))
	}
	if err := step("workspaces with the client token", err); err != nil {
		return err
	}
	proxy := "/w/" + list.Items[0].ID + "/opencode"
	var session struct {
		ID string `json:"id"`
	}
	code, err = call("POST", proxy+"/session", token, map[string]any{"title": "warren check"}, &session)
	if err == nil && (code != 200 || session.ID == "") {
		err = fmt.Errorf("status %d, session %q", code, session.ID)
	}
	if err := step("session create through the proxy", err); err != nil {
		return err
	}
	var messages []json.RawMessage
	code, err = call("GET", proxy+"/session/"+session.ID+"/message", token, nil, &messages)
	if err == nil && code != 200 {
		err = fmt.Errorf("status %d", code)
	}
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
