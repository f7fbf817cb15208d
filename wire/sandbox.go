package wire

import "time"

// State is where a sandbox is in its life.
type State string

// The states a sandbox passes through. A create answers running or fails;
// deleted and failed are final.
const (
	StateCreating State = "creating"
	StateRunning  State = "running"
	StatePausing  State = "pausing"
	StatePaused   State = "paused"
	StateResuming State = "resuming"
	StateForking  State = "forking"
	StateDeleting State = "deleting"
	StateDeleted  State = "deleted"
	StateFailed   State = "failed"
	// StateLost is shown for a sandbox whose node stopped renewing its
	// lease: it may still run, but nobody can reach it until the node
	// returns (its stored state is kept and shown again then).
	StateLost State = "lost"
)

// States lists every state a client can see or filter by.
var States = []State{StateCreating, StateRunning, StatePausing, StatePaused, StateResuming, StateForking, StateDeleting, StateDeleted, StateFailed}

// Valid reports whether s is one of States.
func (s State) Valid() bool {
	for _, v := range States {
		if s == v {
			return true
		}
	}
	return false
}

// What an idle timeout does.
const (
	IdleStop  = "stop"
	IdlePause = "pause"
)

// Boot paths a create reports in Sandbox.BootPath.
const (
	BootCold = "cold_boot"
	BootPool = "hot_pool"
	BootFork = "fork"
)

// CreateRequest is the body of POST /v1/sandboxes.
type CreateRequest struct {
	// Image names the root filesystem; default "base".
	Image string `json:"image,omitempty"`
	// Runtime is gvisor, runc or auto (the node's default).
	Runtime   string            `json:"runtime,omitempty"`
	Resources *Resources        `json:"resources,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
	// TimeoutSeconds ends the sandbox that long after its create; 0 never.
	TimeoutSeconds *int64 `json:"timeout_seconds,omitempty"`
	// IdleTimeoutSeconds applies IdleAction after that long without a
	// request; 0 never.
	IdleTimeoutSeconds *int64 `json:"idle_timeout_seconds,omitempty"`
	// IdleAction is IdleStop (delete, the default) or IdlePause.
	IdleAction string         `json:"idle_action,omitempty"`
	Network    *NetworkPolicy `json:"network,omitempty"`
	Files      []File         `json:"files,omitempty"`
	Startup    *Startup       `json:"startup,omitempty"`
	// Volumes are mounted before the sandbox starts.
	Volumes []VolumeMount `json:"volumes,omitempty"`
	// Secrets name the org's secrets to inject as environment variables:
	// {"OPENAI_API_KEY": "openai"}.
	Secrets map[string]string `json:"secrets,omitempty"`
	// SecretFiles name secrets to write as files under /run/secrets, a
	// memory-backed filesystem: {"/run/secrets/openai": "openai"}.
	SecretFiles map[string]string `json:"secret_files,omitempty"`
	// Placement chooses among the nodes of a cluster.
	Placement *Placement `json:"placement,omitempty"`
}

// Placement constrains which node of a cluster a sandbox is made on.
type Placement struct {
	// Node, if set, is the only node the sandbox may be made on.
	Node string `json:"node,omitempty"`
	// Labels a node must all carry (warren serve --label KEY=VALUE).
	Labels map[string]string `json:"labels,omitempty"`
}

// Resources are a sandbox's hard limits.
type Resources struct {
	CPU      float64 `json:"cpu"`
	MemoryMB int     `json:"memory_mb"`
	PIDs     int     `json:"pids"`
	// DiskMB is the size of the sandbox's writable filesystem; 0 in
	// sandboxes from before disks, whose files share the host's.
	DiskMB int `json:"disk_mb,omitempty"`
}

// File is written into a sandbox before its startup commands run.
type File struct {
	Path    string `json:"path"`
	Content string `json:"content"`
	// Encoding is utf8 (the default) or base64.
	Encoding string `json:"encoding,omitempty"`
	// Mode is octal, default 0644.
	Mode string `json:"mode,omitempty"`
}

// Startup prepares a sandbox during its create: the create answers once
// all of it is done, or fails and leaves nothing behind.
type Startup struct {
	Git      *Git              `json:"git,omitempty"`
	Files    []File            `json:"files,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Commands []StartupCommand  `json:"commands,omitempty"`
	Ports    []int             `json:"ports,omitempty"`
	Ready    *ReadyCheck       `json:"ready,omitempty"`
}

// Git is a repository cloned into /workspace.
type Git struct {
	URL   string `json:"url"`
	Ref   string `json:"ref,omitempty"`
	Depth int    `json:"depth,omitempty"`
}

// StartupCommand runs in order; a background one keeps running and is
// visible under /commands.
type StartupCommand struct {
	Name       string `json:"name"`
	Run        string `json:"run"`
	Background bool   `json:"background,omitempty"`
}

// ReadyCheck waits for a sandbox's app: an HTTP URL answering below 500, a
// TCP address accepting, or a command exiting 0. It runs inside the
// sandbox, so localhost means the sandbox and its egress policy applies.
type ReadyCheck struct {
	HTTP           string  `json:"http,omitempty"`
	TCP            string  `json:"tcp,omitempty"`
	Command        string  `json:"command,omitempty"`
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
}

// Egress modes of a NetworkPolicy.
const (
	// EgressDefault: the internet, never the host, neighbours or private
	// ranges.
	EgressDefault = "default"
	// EgressNone: nothing leaves.
	EgressNone = "none"
	// EgressAllowlist: only the CIDRs and domains in Allow.
	EgressAllowlist = "allowlist"
)

// NetworkPolicy is a sandbox's egress policy: the body of PUT
// /v1/sandboxes/{id}/network and CreateRequest.Network. Allow and Deny hold
// IP addresses, CIDRs and domain names ("*.example.com" for subdomains);
// Deny applies on top of any mode.
type NetworkPolicy struct {
	Egress string   `json:"egress"`
	Allow  []string `json:"allow,omitempty"`
	Deny   []string `json:"deny,omitempty"`
}

// Sandbox is a sandbox as the API shows it.
type Sandbox struct {
	ID                 string            `json:"id"`
	State              State             `json:"state"`
	Runtime            string            `json:"runtime"`
	Image              string            `json:"image"`
	Resources          Resources         `json:"resources"`
	Metadata           map[string]string `json:"metadata"`
	TimeoutSeconds     int64             `json:"timeout_seconds"`
	IdleTimeoutSeconds int64             `json:"idle_timeout_seconds"`
	IdleAction         string            `json:"idle_action,omitempty"`
	Network            *NetworkPolicy    `json:"network,omitempty"`
	// Node is the node the sandbox lives on (a cluster's; "" on a node
	// that is alone).
	Node string `json:"node,omitempty"`
	// Address is the sandbox's own IPv4 address on its node.
	Address string `json:"address,omitempty"`
	// Ports are the exposed ports and the URLs they are previewed at.
	Ports     []Port     `json:"ports,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// BootPath says how a sandbox was made: BootCold, BootPool or BootFork.
	BootPath string `json:"boot_path,omitempty"`
	// Timings are a create's steps in milliseconds.
	Timings map[string]int64 `json:"timings,omitempty"`
	// Reason says why a sandbox failed or was ended by warren.
	Reason string `json:"reason,omitempty"`
	// Memory is what a running sandbox uses (GET of one sandbox only).
	Memory *Memory `json:"memory,omitempty"`
	// CheckpointBytes is the size of a paused sandbox's saved memory and
	// state (GET of one sandbox and the pause's answer).
	CheckpointBytes int64 `json:"checkpoint_bytes,omitempty"`
	// Volumes, Secrets and SecretFiles are as the create asked: names,
	// never values.
	Volumes     []VolumeMount     `json:"volumes,omitempty"`
	Secrets     map[string]string `json:"secrets,omitempty"`
	SecretFiles map[string]string `json:"secret_files,omitempty"`
}

// Memory is a running sandbox's memory use.
type Memory struct {
	// LimitMB is the requested memory: what the sandbox sees as its total.
	LimitMB int `json:"limit_mb"`
	// UsedMB is what its processes use, as its own kernel accounts it.
	UsedMB float64 `json:"used_mb"`
	// HostMB and HostPeakMB are what the host charges for the sandbox,
	// its runtime included (gVisor's kernel and gofer), now and at most.
	HostMB     float64 `json:"host_mb"`
	HostPeakMB float64 `json:"host_peak_mb"`
	// OOMKills counts processes killed because the sandbox ran out of
	// memory.
	OOMKills int64 `json:"oom_kills"`
}

// SandboxList is the answer to GET /v1/sandboxes and POST .../fork.
type SandboxList struct {
	Sandboxes []*Sandbox `json:"sandboxes"`
}

// ForkRequest is the body of POST /v1/sandboxes/{id}/fork.
type ForkRequest struct {
	// Count is how many copies to make; default 1.
	Count int `json:"count,omitempty"`
}

// Port is an exposed port and the URL it is previewed at.
type Port struct {
	Port int    `json:"port"`
	URL  string `json:"url"`
	// PathURL is the same preview under the API's own address, for
	// clients that cannot resolve the preview domain. Its pages run in a
	// sandboxed, opaque origin.
	PathURL string `json:"path_url,omitempty"`
}

// TokenRequest is the body of POST /v1/sandboxes/{id}/ports/{port}/token.
type TokenRequest struct {
	TTLSeconds int64 `json:"ttl_seconds"`
}

// MaxTokenTTLSeconds bounds a preview token's life (a week).
const MaxTokenTTLSeconds = 7 * 24 * 3600

// PortToken is a signed, expiring preview link.
type PortToken struct {
	URL   string `json:"url"`
	Token string `json:"token"`
	// TokenID names the token for DELETE .../tokens/{token_id}.
	TokenID   string    `json:"token_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Info is the answer to GET /v1/info: what a server says about itself.
type Info struct {
	Version        string       `json:"version"`
	Runtimes       []string     `json:"runtimes"`
	DefaultRuntime string       `json:"default_runtime"`
	Pools          []PoolStatus `json:"pools"`
	Org            string       `json:"org"`
	// Warnings say where the node's isolation is weaker than its
	// default (runc without a user namespace, the process runtime).
	Warnings []string `json:"warnings"`
}

// PoolStatus is one warm pool.
type PoolStatus struct {
	Image   string `json:"image"`
	Runtime string `json:"runtime"`
	Size    int    `json:"size"`
	Ready   int    `json:"ready"`
}
