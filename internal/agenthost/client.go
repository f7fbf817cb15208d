package agenthost

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Client calls a workspace server's API: the CLI, the dashboard and
// --check use it.
type Client struct {
	URL string
	// header and value authenticate the calls; empty for none.
	header, value string
}

// HostClient calls with the host token.
func HostClient(url, hostToken string) *Client {
	return &Client{URL: url, header: HostTokenHeader, value: hostToken}
}

// BearerClient calls with a client token ("" for none).
func BearerClient(url, token string) *Client {
	c := &Client{URL: url}
	if token != "" {
		c.header, c.value = "Authorization", "Bearer "+token
	}
	return c
}

// maxAnswer bounds an answer the client reads.
const maxAnswer = 64 << 20

// StatusError is an answer other than 2xx, with the server's message.
type StatusError struct {
	Method, Path string
	Status       int
	Message      string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %s (%d)", e.Method, e.Path, e.Message, e.Status)
}

// Call sends body (if any) as JSON and decodes a 2xx answer into out (if
// any). It returns the status; any other status is also a *StatusError.
func (c *Client) Call(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, rd)
	if err != nil {
		return 0, err
	}
	if c.header != "" {
		req.Header.Set(c.header, c.value)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reach the workspace server at %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	// Answers proxied from OpenCode come from inside a sandbox: bounded.
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err == nil && len(b) > maxAnswer {
		err = fmt.Errorf("the answer is larger than %d bytes", maxAnswer)
	}
	if err != nil {
		return resp.StatusCode, fmt.Errorf("read %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, &StatusError{Method: method, Path: path, Status: resp.StatusCode, Message: e.Error.Message}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s: %w: %.200s", method, path, err, b)
		}
	}
	return resp.StatusCode, nil
}
