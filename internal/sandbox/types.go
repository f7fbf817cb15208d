// Package sandbox is warren's node-side core: it turns create requests into
// running sandboxes (image, overlay, runtime, agent), routes exec, files and
// PTY to each sandbox's agent, ends sandboxes at their deadlines, and
// reconciles the store with what the host really holds after a crash.
package sandbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/runtime"
)

// States a sandbox passes through.
const (
	StateCreating = "creating"
	StateRunning  = "running"
	StateDeleting = "deleting"
	StateDeleted  = "deleted"
	StateFailed   = "failed"
)

// Boot paths reported on create.
const BootCold = "cold_boot"

// CreateRequest is the body of POST /v1/sandboxes. Every field is optional.
type CreateRequest struct {
	Image              string            `json:"image,omitempty"`
	Runtime            string            `json:"runtime,omitempty"`
	Resources          *Resources        `json:"resources,omitempty"`
	Env                map[string]string `json:"env,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
	TimeoutSeconds     *int64            `json:"timeout_seconds,omitempty"`
	IdleTimeoutSeconds *int64            `json:"idle_timeout_seconds,omitempty"`
	// IdleAction is what the idle timeout does: stop (delete, the
	// default) or pause.
	IdleAction string          `json:"idle_action,omitempty"`
	Network    *network.Policy `json:"network,omitempty"`
	Files      []File          `json:"files,omitempty"`
	Startup    *Startup        `json:"startup,omitempty"`
	// HostMounts bind host directories into the sandbox. Only warren's own
	// components set them (the agent host mounts a workspace); the API
	// never reads them from a request.
	HostMounts []runtime.Mount `json:"-"`
}

// File is written into a sandbox before its startup commands run.
type File struct {
	Path     string `json:"path"`
	Content  string `json:"content"`
	Encoding string `json:"encoding,omitempty"` // utf8 (default) or base64
	Mode     string `json:"mode,omitempty"`     // octal, default 0644
}

// Startup prepares a sandbox during its create: the create answers once
// all of it is done, or fails and leaves nothing behind.
type Startup struct {
	Git      *Git              `json:"git,omitempty"`
	Files    []File            `json:"files,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Commands []StartupCommand  `json:"commands,omitempty"`
	Ports    []int             `json:"ports,omitempty"`
	Ready    *guest.ReadyCheck `json:"ready,omitempty"`
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

// Resources are a sandbox's hard limits.
type Resources struct {
	CPU      float64 `json:"cpu"`
	MemoryMB int     `json:"memory_mb"`
	PIDs     int     `json:"pids"`
	// DiskMB is the size of the sandbox's writable filesystem; 0 in
	// sandboxes from before disks, whose files share the host's.
	DiskMB int `json:"disk_mb,omitempty"`
}

func (r Resources) runtime() runtime.Resources {
	return runtime.Resources{CPU: r.CPU, MemoryMB: r.MemoryMB, PIDs: r.PIDs}
}

// Defaults for a request that leaves them out.
var DefaultResources = Resources{CPU: 1, MemoryMB: 1024, PIDs: 512, DiskMB: 10240}

// DefaultImage is used when a request names none.
const DefaultImage = "base"

// spec is what is stored for a sandbox: the request with defaults filled.
type spec struct {
	Resources          Resources         `json:"resources"`
	Env                map[string]string `json:"env,omitempty"`
	TimeoutSeconds     int64             `json:"timeout_seconds"`
	IdleTimeoutSeconds int64             `json:"idle_timeout_seconds"`
	IdleAction         string            `json:"idle_action,omitempty"`
	Network            *network.Policy   `json:"network,omitempty"`
	Ports              []int             `json:"ports,omitempty"`
	Mounts             []runtime.Mount   `json:"mounts,omitempty"`
	// PreviewNotBefore revokes, per port, the preview tokens issued
	// before a time (unix milliseconds): a revoke-all or an unexpose.
	PreviewNotBefore map[int]int64 `json:"preview_not_before,omitempty"`
}

// Sandbox is the view of a sandbox the API returns.
type Sandbox struct {
	ID                 string            `json:"id"`
	State              string            `json:"state"`
	Runtime            string            `json:"runtime"`
	Image              string            `json:"image"`
	Resources          Resources         `json:"resources"`
	Metadata           map[string]string `json:"metadata"`
	TimeoutSeconds     int64             `json:"timeout_seconds"`
	IdleTimeoutSeconds int64             `json:"idle_timeout_seconds"`
	IdleAction         string            `json:"idle_action,omitempty"`
	Network            *network.Policy   `json:"network,omitempty"`
	// Address is the sandbox's own IPv4 address on this node.
	Address string `json:"address,omitempty"`
	// Ports are the exposed ports and the URLs they are previewed at.
	Ports     []Port           `json:"ports,omitempty"`
	CreatedAt time.Time        `json:"created_at"`
	ExpiresAt *time.Time       `json:"expires_at,omitempty"`
	EndedAt   *time.Time       `json:"ended_at,omitempty"`
	BootPath  string           `json:"boot_path,omitempty"`
	Timings   map[string]int64 `json:"timings,omitempty"`
	// Reason says why a sandbox failed or was ended by warren.
	Reason string `json:"reason,omitempty"`
	// Memory is what a running sandbox uses (GET of one sandbox only).
	Memory *Memory `json:"memory,omitempty"`
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

// Kind classifies an Error for the API.
type Kind int

const (
	KindInternal Kind = iota
	KindBadRequest
	KindNotFound
	KindConflict
	KindUnavailable
	// KindTooMany: a limit on work in flight was reached; try later.
	KindTooMany
	// KindNoSpace: the sandbox's disk is full.
	KindNoSpace
)

// Error is an error a caller can act on.
type Error struct {
	Kind    Kind
	Field   string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Message == "" {
		return e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

func badRequest(field, format string, args ...any) error {
	return &Error{Kind: KindBadRequest, Field: field, Message: fmt.Sprintf(format, args...)}
}

func notFound(id string) error {
	return &Error{Kind: KindNotFound, Message: fmt.Sprintf("sandbox %s not found", id)}
}

func conflict(format string, args ...any) error {
	return &Error{Kind: KindConflict, Message: fmt.Sprintf(format, args...)}
}

// KindOf returns the kind of err, KindInternal for plain errors.
func KindOf(err error) (Kind, string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind, e.Field
	}
	return KindInternal, ""
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
