// Package client is the Go SDK for warren's HTTP API. It builds on every
// OS Go does and pulls in nothing of the server: only the wire contract
// (package wire), a directory tar helper and a WebSocket library.
//
//	c := client.New("http://127.0.0.1:7070", os.Getenv("WARREN_API_KEY"))
//	sb, err := c.CreateSandbox(ctx, &client.CreateRequest{Image: "base"})
//	if err != nil { ... }
//	defer c.DeleteSandbox(context.WithoutCancel(ctx), sb.ID)
//	res, err := c.Exec(ctx, sb.ID, &client.ExecRequest{Cmd: "echo hi"})
//
// Every method takes a context: cancelling it abandons the call (and, for
// a streaming exec or a PTY, ends the command's connection). Errors from
// the server are *Error values carrying the API's code and the field at
// fault; IsNotFound and the other Is functions classify them. Requests
// that change nothing are retried on a dropped connection or a 502, 503 or
// 504; nothing else is retried.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/warrenhq/warren/wire"
)

// The API's shapes, from package wire.
type (
	CreateRequest  = wire.CreateRequest
	Resources      = wire.Resources
	Sandbox        = wire.Sandbox
	State          = wire.State
	Memory         = wire.Memory
	ExecRequest    = wire.ExecRequest
	ExecResult     = wire.ExecResult
	Frame          = wire.Frame
	FileInfo       = wire.FileInfo
	Image          = wire.Image
	ImageEvent     = wire.ImageEvent
	NetworkPolicy  = wire.NetworkPolicy
	Port           = wire.Port
	PortToken      = wire.PortToken
	Startup        = wire.Startup
	StartupCmd     = wire.StartupCommand
	Git            = wire.Git
	File           = wire.File
	ReadyCheck     = wire.ReadyCheck
	Command        = wire.Command
	CommandRequest = wire.CommandRequest
	PoolStatus     = wire.PoolStatus
	Info           = wire.Info
)

// Client calls one warren server. Its fields may be set before first use.
type Client struct {
	// BaseURL is the server's address, e.g. http://127.0.0.1:7070.
	BaseURL string
	// APIKey is sent as a bearer token.
	APIKey string
	// HTTP carries every request; the default has no overall timeout,
	// since streams last as long as their commands (use contexts).
	HTTP *http.Client
	// Retries is how many times a request that changes nothing is tried
	// again after a dropped connection or a 502/503/504. Default 2.
	Retries int
}

// New returns a client for the server at baseURL.
func New(baseURL, apiKey string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), APIKey: apiKey, HTTP: &http.Client{}, Retries: 2}
}

// DefaultURL is where a local warren listens.
const DefaultURL = "http://127.0.0.1:7070"

// NewFromEnv returns a client for WARREN_URL (default DefaultURL) with
// WARREN_API_KEY, the variables the warren CLI reads too.
func NewFromEnv() *Client {
	u := os.Getenv("WARREN_URL")
	if u == "" {
		u = DefaultURL
	}
	return New(u, os.Getenv("WARREN_API_KEY"))
}

// Error is an error answer from the server.
type Error struct {
	// Status is the HTTP status (0 for an error frame on a WebSocket).
	Status int
	// Code says what kind of failure it is; branch on it.
	Code    wire.ErrorCode
	Message string
	// Field names the request field, query parameter or path at fault.
	Field string
}

func (e *Error) Error() string {
	w := wire.Error{Code: e.Code, Message: e.Message, Field: e.Field}
	return w.Error()
}

func newError(status int, e wire.Error) *Error {
	return &Error{Status: status, Code: e.Code, Message: e.Message, Field: e.Field}
}

// Code is the API's error code of err, or "" if err did not come from the
// server.
func Code(err error) wire.ErrorCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// Field is the request field the server named as wrong, if any.
func Field(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Field
	}
	return ""
}

// IsNotFound reports whether the sandbox, file, command or image does not
// exist.
func IsNotFound(err error) bool { return Code(err) == wire.CodeNotFound }

// IsBadRequest reports whether the request was refused as invalid; Field
// says which input.
func IsBadRequest(err error) bool { return Code(err) == wire.CodeBadRequest }

// IsConflict reports whether the sandbox's state does not allow the call
// (exec in a paused sandbox, pausing a paused one).
func IsConflict(err error) bool { return Code(err) == wire.CodeConflict }

// IsUnauthorized reports whether the API key was missing or wrong.
func IsUnauthorized(err error) bool { return Code(err) == wire.CodeUnauthorized }

// IsTooManyRequests reports whether a limit on work in flight was reached;
// try again later.
func IsTooManyRequests(err error) bool { return Code(err) == wire.CodeTooManyRequests }

func (c *Client) url(path string, q url.Values) string {
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

// send performs a request and returns the response if it succeeded. A
// body is read from a fresh reader on each try: retries happen only for
// requests without one.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string) (*http.Response, error) {
	return c.sendWith(ctx, method, path, q, body, contentType, nil)
}

func (c *Client) sendWith(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string, headers map[string]string) (*http.Response, error) {
	tries := 1
	if body == nil && (method == http.MethodGet || method == http.MethodHead) {
		tries += max(c.Retries, 0)
	}
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if c.APIKey != "" {
			req.Header.Set("Authorization", "Bearer "+c.APIKey)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := c.httpClient().Do(req)
		retry := attempt < tries && ctx.Err() == nil
		if err != nil {
			if retry {
				backoff(ctx, attempt)
				continue
			}
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		if resp.StatusCode < 300 {
			return resp, nil
		}
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			if retry {
				resp.Body.Close()
				backoff(ctx, attempt)
				continue
			}
		}
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
}

func backoff(ctx context.Context, attempt int) {
	t := time.NewTimer(time.Duration(attempt) * 200 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// decodeError reads an error answer; one without the API's body (from a
// proxy, say) gets the code its status implies.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body wire.ErrorBody
	if json.Unmarshal(b, &body) != nil || body.Error.Code == "" {
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = resp.Status
		}
		body.Error = wire.Error{Code: wire.CodeForStatus(resp.StatusCode), Message: msg}
	}
	return newError(resp.StatusCode, body.Error)
}

// call sends in as JSON (if not nil) and decodes the answer into out (if
// not nil).
func (c *Client) call(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	resp, err := c.send(ctx, method, path, q, body, ct)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

func sandboxPath(id string, rest ...string) string {
	return "/v1/sandboxes/" + url.PathEscape(id) + strings.Join(rest, "")
}

// Info describes the server: version, runtimes, warm pools and isolation
// warnings.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	var out Info
	return &out, c.call(ctx, http.MethodGet, "/v1/info", nil, nil, &out)
}
