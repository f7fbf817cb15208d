package wire

import "time"

// Scopes an API key may hold. A key acts only within its own org; admin
// may do everything, and manage orgs and every org's keys. A write scope
// includes its read scope.
const (
	ScopeAdmin          = "admin"
	ScopeSandboxesRead  = "sandboxes:read"
	ScopeSandboxesWrite = "sandboxes:write"
	ScopeImagesWrite    = "images:write"
	ScopeSecretsRead    = "secrets:read"
	ScopeSecretsWrite   = "secrets:write"
	ScopeVolumesRead    = "volumes:read"
	ScopeVolumesWrite   = "volumes:write"
	ScopeUsageRead      = "usage:read"
	ScopeMetricsRead    = "metrics:read"
)

// DefaultOrgID is the org that exists from the start: the bootstrap admin
// key's, and every sandbox's from before orgs.
const DefaultOrgID = "default"

// Formats of a new API key.
const (
	KeyFormatWarren = "warren"
	KeyFormatE2B    = "e2b"
)

// Scopes lists every scope.
var Scopes = []string{ScopeAdmin, ScopeSandboxesRead, ScopeSandboxesWrite, ScopeImagesWrite, ScopeSecretsRead,
	ScopeSecretsWrite, ScopeVolumesRead, ScopeVolumesWrite, ScopeUsageRead, ScopeMetricsRead}

// Quotas bound what an org may hold at once; 0 (or absent) is unlimited.
// Running, starting, pausing and resuming sandboxes count towards
// sandboxes, CPU and memory; paused ones hold only their disk.
type Quotas struct {
	MaxSandboxes int     `json:"max_sandboxes,omitempty"`
	MaxCPU       float64 `json:"max_cpu,omitempty"`
	MaxMemoryMB  int     `json:"max_memory_mb,omitempty"`
	MaxDiskMB    int     `json:"max_disk_mb,omitempty"`
	MaxVolumes   int     `json:"max_volumes,omitempty"`
	// MaxVolumeMB bounds the org's volumes' sizes added up.
	MaxVolumeMB int `json:"max_volume_mb,omitempty"`
	// MaxLifetimeSeconds bounds a sandbox's timeout: a create without one
	// gets this, and none may ask for more (or for none).
	MaxLifetimeSeconds int64 `json:"max_lifetime_seconds,omitempty"`
	// CreatesPerMinute bounds creates and fork copies in any 60 seconds.
	CreatesPerMinute int `json:"creates_per_minute,omitempty"`
}

// QuotaUse is what an org holds now, in the terms of Quotas.
type QuotaUse struct {
	Sandboxes         int     `json:"sandboxes"`
	CPU               float64 `json:"cpu"`
	MemoryMB          int     `json:"memory_mb"`
	DiskMB            int     `json:"disk_mb"`
	Volumes           int     `json:"volumes"`
	VolumeMB          int     `json:"volume_mb"`
	CreatesLastMinute int     `json:"creates_last_minute"`
}

// OrgQuotas is the answer to GET and PUT /v1/orgs/{id}/quotas.
type OrgQuotas struct {
	Quotas Quotas   `json:"quotas"`
	Use    QuotaUse `json:"use"`
}

// OrgRequest is the body of POST /v1/orgs.
type OrgRequest struct {
	Name string `json:"name"`
}

// Org is an organization: what owns sandboxes, keys, secrets and volumes.
type Org struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Quotas    Quotas    `json:"quotas"`
	CreatedAt time.Time `json:"created_at"`
}

// OrgList is the answer to GET /v1/orgs.
type OrgList struct {
	Orgs []*Org `json:"orgs"`
}

// APIKeyRequest is the body of POST /v1/api-keys.
type APIKeyRequest struct {
	Name string `json:"name"`
	// OrgID is the org the key acts in; default the caller's. Only admin
	// keys may name another.
	OrgID  string   `json:"org_id,omitempty"`
	Scopes []string `json:"scopes"`
	// ExpiresInSeconds ends the key that long from now; 0 never.
	ExpiresInSeconds int64 `json:"expires_in_seconds,omitempty"`
	// Format is KeyFormatWarren ("wrn_…", the default) or KeyFormatE2B
	// ("e2b_" and 40 hex digits, the shape E2B's Python SDK insists on).
	Format string `json:"format,omitempty"`
}

// APIKey describes a key; its secret part is never shown again.
type APIKey struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	OrgID  string   `json:"org_id"`
	Scopes []string `json:"scopes"`
	// Prefix is the key's first characters, to recognise it by.
	Prefix    string     `json:"prefix"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// APIKeyCreated is the answer to POST /v1/api-keys: the key, once.
type APIKeyCreated struct {
	APIKey
	Key string `json:"key"`
}

// APIKeyList is the answer to GET /v1/api-keys.
type APIKeyList struct {
	Keys []*APIKey `json:"keys"`
}

// SecretRequest is the body of POST /v1/secrets.
type SecretRequest struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	// AllowedHosts, if set, keep the value out of sandboxes: they see a
	// placeholder, which warren's egress path replaces with the value in
	// the headers of HTTPS requests to these hosts ("api.example.com",
	// "*.example.com") and no others.
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
}

// Secret describes a secret; its value is never shown.
type Secret struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	AllowedHosts []string  `json:"allowed_hosts,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// SecretList is the answer to GET /v1/secrets.
type SecretList struct {
	Secrets []*Secret `json:"secrets"`
}

// VolumeRequest is the body of POST /v1/volumes.
type VolumeRequest struct {
	Name   string `json:"name"`
	SizeMB int    `json:"size_mb"`
}

// Volume is storage that outlives sandboxes.
type Volume struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	SizeMB    int       `json:"size_mb"`
	CreatedAt time.Time `json:"created_at"`
	// MountedBy lists the sandboxes that have it mounted now.
	MountedBy []string `json:"mounted_by"`
}

// VolumeList is the answer to GET /v1/volumes.
type VolumeList struct {
	Volumes []*Volume `json:"volumes"`
}

// VolumeMount mounts a volume into a sandbox at its create. One sandbox
// at a time may mount a volume writable; any number read-only.
type VolumeMount struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Usage is what an org's sandboxes used between two times: the sums of
// every second each ran (paused time excluded), of what it reserved.
type Usage struct {
	From time.Time  `json:"from"`
	To   time.Time  `json:"to"`
	Rows []UsageRow `json:"rows"`
	// Total adds up the rows.
	Total UsageRow `json:"total"`
}

// UsageRow is one group of usage: a sandbox, or a day (UTC).
type UsageRow struct {
	SandboxID        string  `json:"sandbox_id,omitempty"`
	Day              string  `json:"day,omitempty"`
	SandboxSeconds   float64 `json:"sandbox_seconds"`
	CPUSeconds       float64 `json:"cpu_seconds"`
	MemoryGiBSeconds float64 `json:"memory_gib_seconds"`
	DiskGiBSeconds   float64 `json:"disk_gib_seconds"`
}
