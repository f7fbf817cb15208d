package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/warrenhq/warren/wire"
)

// Orgs, API keys, quotas, secrets, volumes and usage.
type (
	Org           = wire.Org
	Quotas        = wire.Quotas
	OrgQuotas     = wire.OrgQuotas
	APIKey        = wire.APIKey
	APIKeyRequest = wire.APIKeyRequest
	APIKeyCreated = wire.APIKeyCreated
	Secret        = wire.Secret
	SecretRequest = wire.SecretRequest
	Volume        = wire.Volume
	VolumeMount   = wire.VolumeMount
	Usage         = wire.Usage
	UsageRow      = wire.UsageRow
)

// IsQuotaExceeded reports whether the org's quota refused the call; Field
// names the quota.
func IsQuotaExceeded(err error) bool { return Code(err) == wire.CodeQuotaExceeded }

// IsForbidden reports whether the API key lacks the scope the call needs.
func IsForbidden(err error) bool { return Code(err) == wire.CodeForbidden }

// CreateOrg makes an organization (node admin keys only).
func (c *Client) CreateOrg(ctx context.Context, name string) (*Org, error) {
	var o Org
	return &o, c.call(ctx, http.MethodPost, "/v1/orgs", nil, wire.OrgRequest{Name: name}, &o)
}

// Orgs lists the orgs the key may see: every org for a node admin, its
// own otherwise.
func (c *Client) Orgs(ctx context.Context) ([]*Org, error) {
	var out wire.OrgList
	return out.Orgs, c.call(ctx, http.MethodGet, "/v1/orgs", nil, nil, &out)
}

// GetOrg returns an org.
func (c *Client) GetOrg(ctx context.Context, id string) (*Org, error) {
	var o Org
	return &o, c.call(ctx, http.MethodGet, "/v1/orgs/"+url.PathEscape(id), nil, nil, &o)
}

// DeleteOrg deletes an org with its keys and secrets; refused while it
// has sandboxes or volumes.
func (c *Client) DeleteOrg(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/v1/orgs/"+url.PathEscape(id), nil, nil, nil)
}

// OrgQuotas returns an org's quotas and what it holds.
func (c *Client) OrgQuotas(ctx context.Context, id string) (*OrgQuotas, error) {
	var q OrgQuotas
	return &q, c.call(ctx, http.MethodGet, "/v1/orgs/"+url.PathEscape(id)+"/quotas", nil, nil, &q)
}

// SetQuotas replaces an org's quotas (node admin keys only).
func (c *Client) SetQuotas(ctx context.Context, id string, q Quotas) (*OrgQuotas, error) {
	var out OrgQuotas
	return &out, c.call(ctx, http.MethodPut, "/v1/orgs/"+url.PathEscape(id)+"/quotas", nil, q, &out)
}

// CreateAPIKey issues a key; the answer holds the key itself, once.
func (c *Client) CreateAPIKey(ctx context.Context, req *APIKeyRequest) (*APIKeyCreated, error) {
	var out APIKeyCreated
	return &out, c.call(ctx, http.MethodPost, "/v1/api-keys", nil, req, &out)
}

// APIKeys lists keys (never their secrets): the key's org's, or every
// org's for a node admin (orgID narrows it).
func (c *Client) APIKeys(ctx context.Context, orgID string) ([]*APIKey, error) {
	q := url.Values{}
	if orgID != "" {
		q.Set("org_id", orgID)
	}
	var out wire.APIKeyList
	return out.Keys, c.call(ctx, http.MethodGet, "/v1/api-keys", q, nil, &out)
}

// RevokeAPIKey revokes a key at once.
func (c *Client) RevokeAPIKey(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/v1/api-keys/"+url.PathEscape(id), nil, nil, nil)
}

// CreateSecret stores a secret; its value is never shown again.
func (c *Client) CreateSecret(ctx context.Context, req *SecretRequest) (*Secret, error) {
	var out Secret
	return &out, c.call(ctx, http.MethodPost, "/v1/secrets", nil, req, &out)
}

// Secrets lists the org's secrets, without values.
func (c *Client) Secrets(ctx context.Context) ([]*Secret, error) {
	var out wire.SecretList
	return out.Secrets, c.call(ctx, http.MethodGet, "/v1/secrets", nil, nil, &out)
}

// DeleteSecret deletes a secret by name or id.
func (c *Client) DeleteSecret(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/secrets/"+url.PathEscape(name), nil, nil, nil)
}

// CreateVolume makes a volume of sizeMB.
func (c *Client) CreateVolume(ctx context.Context, name string, sizeMB int) (*Volume, error) {
	var out Volume
	return &out, c.call(ctx, http.MethodPost, "/v1/volumes", nil, wire.VolumeRequest{Name: name, SizeMB: sizeMB}, &out)
}

// Volumes lists the org's volumes.
func (c *Client) Volumes(ctx context.Context) ([]*Volume, error) {
	var out wire.VolumeList
	return out.Volumes, c.call(ctx, http.MethodGet, "/v1/volumes", nil, nil, &out)
}

// GetVolume returns a volume by name or id.
func (c *Client) GetVolume(ctx context.Context, name string) (*Volume, error) {
	var out Volume
	return &out, c.call(ctx, http.MethodGet, "/v1/volumes/"+url.PathEscape(name), nil, nil, &out)
}

// DeleteVolume deletes a volume and its data; refused while mounted.
func (c *Client) DeleteVolume(ctx context.Context, name string) error {
	return c.call(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name), nil, nil, nil)
}

// UsageOptions select usage.
type UsageOptions struct {
	From, To time.Time // zero: the last 24 hours
	// GroupBy is "sandbox" (the default) or "day".
	GroupBy string
	// OrgID is another org's, for a node admin.
	OrgID string
}

// Usage adds up the org's sandbox time, CPU, memory and disk.
func (c *Client) Usage(ctx context.Context, opts UsageOptions) (*Usage, error) {
	q := url.Values{}
	if !opts.From.IsZero() {
		q.Set("from", opts.From.UTC().Format(time.RFC3339))
	}
	if !opts.To.IsZero() {
		q.Set("to", opts.To.UTC().Format(time.RFC3339))
	}
	if opts.GroupBy != "" {
		q.Set("group_by", opts.GroupBy)
	}
	if opts.OrgID != "" {
		q.Set("org_id", opts.OrgID)
	}
	var out Usage
	return &out, c.call(ctx, http.MethodGet, "/v1/usage", q, nil, &out)
}
