// Package sandbox is warren's node-side core: it turns create requests into
// running sandboxes (image, overlay, runtime, agent), routes exec, files and
// PTY to each sandbox's agent, ends sandboxes at their deadlines, and
// reconciles the store with what the host really holds after a crash.
package sandbox

import (
	"errors"
	"fmt"

	"github.com/warrenhq/warren/internal/runtime"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// States as the store records them: the wire's states, and pooled, which
// no client ever sees.
const (
	StateCreating = string(wire.StateCreating)
	StateRunning  = string(wire.StateRunning)
	StateDeleting = string(wire.StateDeleting)
	StateDeleted  = string(wire.StateDeleted)
	StateFailed   = string(wire.StateFailed)
)

// BootCold is the boot path of a sandbox booted for its create.
const BootCold = wire.BootCold

// CreateRequest is a create: the API's request, and what only warren's own
// components may ask for.
type CreateRequest struct {
	wire.CreateRequest
	// HostMounts bind host directories into the sandbox (the agent host
	// mounts a workspace). No API request can carry them.
	HostMounts []runtime.Mount
}

func runtimeResources(r wire.Resources) runtime.Resources {
	return runtime.Resources{CPU: r.CPU, MemoryMB: r.MemoryMB, PIDs: r.PIDs}
}

// Defaults for a request that leaves them out.
var DefaultResources = wire.Resources{CPU: 1, MemoryMB: 1024, PIDs: 512, DiskMB: 10240}

// DefaultImage is used when a request names none.
const DefaultImage = "base"

// spec is what is stored for a sandbox: the request with defaults filled.
type spec struct {
	Resources          wire.Resources      `json:"resources"`
	Env                map[string]string   `json:"env,omitempty"`
	TimeoutSeconds     int64               `json:"timeout_seconds"`
	IdleTimeoutSeconds int64               `json:"idle_timeout_seconds"`
	IdleAction         string              `json:"idle_action,omitempty"`
	Network            *wire.NetworkPolicy `json:"network,omitempty"`
	Ports              []int               `json:"ports,omitempty"`
	Mounts             []runtime.Mount     `json:"mounts,omitempty"`
	// Workdir and User are the image's defaults for execs and commands.
	Workdir string `json:"workdir,omitempty"`
	User    string `json:"user,omitempty"`
	// PreviewNotBefore revokes, per port, the preview tokens issued
	// before a time (unix milliseconds): a revoke-all or an unexpose.
	PreviewNotBefore map[int]int64 `json:"preview_not_before,omitempty"`
	// Volumes are mounted at boot; Secrets and SecretFiles name the
	// org's secrets (never their values) for env and /run/secrets.
	Volumes     []volumeSpec      `json:"volumes,omitempty"`
	Secrets     map[string]string `json:"secrets,omitempty"`
	SecretFiles map[string]string `json:"secret_files,omitempty"`
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
	// KindTooLarge: a request body is over its limit.
	KindTooLarge
	// KindQuota: the org's quota (Field) does not allow it.
	KindQuota
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
	var qe *store.QuotaError
	if errors.As(err, &qe) {
		return KindQuota, qe.Field
	}
	return KindInternal, ""
}
