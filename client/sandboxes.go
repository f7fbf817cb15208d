package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/warrenhq/warren/wire"
)

// CreateSandbox creates a sandbox and returns it running, its startup
// (files, clone, commands, ready check) done.
func (c *Client) CreateSandbox(ctx context.Context, req *CreateRequest) (*Sandbox, error) {
	if req == nil {
		req = &CreateRequest{}
	}
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodPost, "/v1/sandboxes", nil, req, &sb)
}

// GetSandbox returns one sandbox, with its memory use when it runs.
func (c *Client) GetSandbox(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodGet, sandboxPath(id), nil, nil, &sb)
}

// ListOptions filters ListSandboxes.
type ListOptions struct {
	// States keeps sandboxes in any of these states.
	States []State
	// Metadata keeps sandboxes whose metadata has all these pairs.
	Metadata map[string]string
	// Limit caps the answer; 0 means the server's default.
	Limit int
}

// ListSandboxes lists the sandboxes the API key's organization owns,
// newest first.
func (c *Client) ListSandboxes(ctx context.Context, opts ListOptions) ([]*Sandbox, error) {
	q := url.Values{}
	if len(opts.States) > 0 {
		s := make([]string, len(opts.States))
		for i, st := range opts.States {
			s[i] = string(st)
		}
		q.Set("state", strings.Join(s, ","))
	}
	for k, v := range opts.Metadata {
		q.Set("metadata."+k, v)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	var out wire.SandboxList
	return out.Sandboxes, c.call(ctx, http.MethodGet, "/v1/sandboxes", q, nil, &out)
}

// DeleteSandbox ends a sandbox and removes everything it left on the host.
// It returns the sandbox as it ended.
func (c *Client) DeleteSandbox(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodDelete, sandboxPath(id), nil, nil, &sb)
}

// Pause saves a running sandbox's memory and files and stops it.
func (c *Client) Pause(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodPost, sandboxPath(id, "/pause"), nil, nil, &sb)
}

// Resume brings a paused sandbox back where it was.
func (c *Client) Resume(ctx context.Context, id string) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodPost, sandboxPath(id, "/resume"), nil, nil, &sb)
}

// Fork copies a running sandbox, memory and files, into count new ones.
func (c *Client) Fork(ctx context.Context, id string, count int) ([]*Sandbox, error) {
	var out wire.SandboxList
	return out.Sandboxes, c.call(ctx, http.MethodPost, sandboxPath(id, "/fork"), nil, wire.ForkRequest{Count: count}, &out)
}

// SetNetwork changes a running sandbox's egress policy; connections the
// new policy forbids are cut.
func (c *Client) SetNetwork(ctx context.Context, id string, p *NetworkPolicy) (*Sandbox, error) {
	var sb Sandbox
	return &sb, c.call(ctx, http.MethodPut, sandboxPath(id, "/network"), nil, p, &sb)
}

func portPath(id string, port int, rest ...string) string {
	return sandboxPath(id, append([]string{"/ports/" + strconv.Itoa(port)}, rest...)...)
}

// ExposePort makes a port reachable through the preview proxy.
func (c *Client) ExposePort(ctx context.Context, id string, port int) (*Port, error) {
	var p Port
	return &p, c.call(ctx, http.MethodPost, portPath(id, port), nil, nil, &p)
}

// UnexposePort stops previewing a port and revokes its tokens.
func (c *Client) UnexposePort(ctx context.Context, id string, port int) error {
	return c.call(ctx, http.MethodDelete, portPath(id, port), nil, nil, nil)
}

// PreviewToken signs a link to an exposed port, valid for ttl (at most a
// week).
func (c *Client) PreviewToken(ctx context.Context, id string, port int, ttl time.Duration) (*PortToken, error) {
	var t PortToken
	return &t, c.call(ctx, http.MethodPost, portPath(id, port, "/token"), nil, wire.TokenRequest{TTLSeconds: int64(ttl / time.Second)}, &t)
}

// RevokePreviewTokens revokes one preview token of a port (by its
// TokenID), or all of them when tokenID is "".
func (c *Client) RevokePreviewTokens(ctx context.Context, id string, port int, tokenID string) error {
	p := portPath(id, port, "/tokens")
	if tokenID != "" {
		p += "/" + url.PathEscape(tokenID)
	}
	return c.call(ctx, http.MethodDelete, p, nil, nil, nil)
}

// Snapshot makes the image name from the sandbox's files as they are (its
// image, its writable layer, its env, working directory and user); later
// creates can name it.
func (c *Client) Snapshot(ctx context.Context, id, name string) (*Image, error) {
	var img Image
	return &img, c.call(ctx, http.MethodPost, sandboxPath(id, "/snapshot"), nil, wire.SnapshotRequest{Name: name}, &img)
}
