// Package runtime is the seam between warren and the things that isolate a
// sandbox. Every backend (gVisor, runc, a plain process) implements Runtime;
// nothing outside a backend's package knows how it works.
package runtime

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
)

// Spec is what a backend needs to boot one sandbox. The caller has already
// prepared the root filesystem and the run directory.
type Spec struct {
	// ID is the sandbox id; every id has the same length, because runsc
	// matches container ids by prefix.
	ID string
	// Dir is the sandbox's private host directory; a backend keeps its
	// bundle and logs here.
	Dir string
	// Rootfs is the writable root filesystem (an overlay mount).
	Rootfs string
	// RunDir is the host directory that appears at /.warren/run inside the
	// sandbox; it holds the host socket the agent dials.
	RunDir string
	// Agent is the host path of the agent binary.
	Agent string
	// AgentLibs, for a dynamically linked agent, is the host directory
	// holding the ELF loader and the libraries it needs (see agentbin);
	// a backend binds it at guest.LibDir and starts the agent through
	// that loader. Empty for a static agent.
	AgentLibs string
	// AgentToken is what the agent greets the host with. A backend hands
	// it to the agent so that nothing else in the sandbox can read it
	// (guest.TokenEnv of the sandbox's init, which is non-dumpable).
	AgentToken string
	// NetNS is the network namespace to join; empty for a new, empty one.
	NetNS string
	// Hostname inside the sandbox.
	Hostname  string
	Resources Resources
	// Mounts are host directories bound into the sandbox.
	Mounts []Mount
	// UserNS, when set, runs the sandbox in a user namespace with this
	// mapping. The caller has prepared Rootfs and RunDir for it (see
	// UserNamespaced).
	UserNS *IDRange
	// Sysfs, when set, is a host path holding a sysfs mounted for the
	// sandbox, to bind at /sys instead of mounting one (a user namespace
	// cannot mount sysfs for a network namespace it does not own).
	Sysfs string
}

// IDRange maps a sandbox's uids and gids 0..Size-1 to the host's
// HostID..HostID+Size-1.
type IDRange struct {
	HostID uint32
	Size   uint32
}

// UserNamespaced is implemented by backends that can run a sandbox in a
// user namespace, so that root inside is an unprivileged user of the
// host. The caller decides per sandbox and then prepares for it: the
// root filesystem must show the image as owned by HostID (an idmapped
// mount), and the run directory must belong to HostID.
type UserNamespaced interface {
	// UserNamespace is the mapping, or nil where user namespaces cannot
	// be used (and why, for the log).
	UserNamespace() (*IDRange, string)
}

// Mount binds a host directory into a sandbox, or, with Tmpfs, puts an
// empty memory-backed filesystem of its own at Target (Source unused).
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Tmpfs    bool   `json:"tmpfs,omitempty"`
}

// Resources are hard limits. Zero means the backend's default.
type Resources struct {
	CPU      float64 `json:"cpu"`
	MemoryMB int     `json:"memory_mb"`
	PIDs     int     `json:"pids"`
}

// Status is what a backend knows about a sandbox.
type Status string

const (
	StatusRunning Status = "running"
	// StatusStopped: the backend still holds the sandbox but its init has
	// exited (crashed, killed by the OOM killer).
	StatusStopped Status = "stopped"
	// StatusMissing: the backend holds nothing for this id.
	StatusMissing Status = "missing"
)

// Runtime boots and ends sandboxes.
type Runtime interface {
	// Name is the backend's name as users see it: gvisor, runc, process.
	Name() string
	// Start boots the sandbox and returns once its init is running. On
	// error, Start leaves nothing behind.
	Start(ctx context.Context, spec Spec) error
	// Stop kills the sandbox and frees everything the backend holds for it
	// (processes, cgroups, state). Stopping a missing sandbox succeeds.
	Stop(ctx context.Context, id string) error
	// Status reports whether the sandbox is running.
	Status(ctx context.Context, id string) (Status, error)
	// List returns the ids of every sandbox the backend holds, so the
	// reconciler can find ones the store has forgotten.
	List(ctx context.Context) ([]string, error)
}

// ErrUnavailable is returned when a backend cannot run on this host.
var ErrUnavailable = errors.New("runtime unavailable on this host")

// OOMReporter is implemented by backends that can tell whether the kernel's
// OOM killer fired inside a sandbox, so a death can be explained.
type OOMReporter interface {
	OOMKilled(id string) bool
}

// CPUHeadroom is implemented by backends that boot (and restore) a
// sandbox with more CPU than it asked for, because a sandbox held to a
// small quota boots much slower (gVisor's kernel starts several threads
// at once), and hold it to its quota afterwards. The caller calls
// LimitCPU once the sandbox is up, and again when it adopts one after a
// restart (it may have stopped in between).
type CPUHeadroom interface {
	LimitCPU(id string, cpu float64) error
}

// Closer is implemented by backends that keep something on the host
// between sandboxes, for the sandboxes to come (gVisor pins an empty
// network namespace for its gofers with a bind mount in its state
// directory). Close lets go of it when warren stops, so the data dir can
// be removed; sandboxes still running are not affected, and the backend
// takes it again when it next needs it.
type Closer interface {
	Close() error
}

// Freezer is implemented by backends that can stop a sandbox's processes
// in place for a moment (cgroup freezer, gVisor's pause) and let them go
// on, so its files can be read at rest. A frozen sandbox still counts as
// running.
type Freezer interface {
	Freeze(ctx context.Context, id string) error
	Thaw(ctx context.Context, id string) error
}

// Checkpointer is implemented by backends that can save a sandbox's
// memory, processes and files and bring them back later.
type Checkpointer interface {
	// CanCheckpoint says why checkpoints are not possible here, or nil.
	CanCheckpoint() error
	// Checkpoint saves the sandbox into dir and stops it.
	Checkpoint(ctx context.Context, id, dir string) error
	// Restore starts the sandbox again from dir.
	Restore(ctx context.Context, spec Spec, dir string) error
}

// ErrNoCheckpoint is returned by a backend that cannot checkpoint here.
var ErrNoCheckpoint = errors.New("this runtime cannot checkpoint sandboxes")

// InitLogName is the file in a sandbox's Dir where backends put what its
// init printed while booting. The sandbox's processes cannot write to it
// once the agent is up (see guest.DetachStdio).
const InitLogName = "init.log"

// LogTail returns the last lines of a log file, reading at most its last
// 64 KiB: logs are written by, or about, sandboxes, and are never read
// whole.
func LogTail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const window = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > window {
		_, _ = f.Seek(fi.Size()-window, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, window))
	all := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	out := strings.Join(all, "; ")
	if len(out) > 2000 {
		out = out[len(out)-2000:]
	}
	return out
}

// MemoryGuarded is implemented by backends whose sandbox kernel has no
// OOM killer of its own. gVisor's kernel shares the host cgroup with the
// workload, so an allocation over the limit would make the host kill the
// whole sandbox. Start and Restore leave the host limit at the requested
// memory (what the sandbox sees as its total); GuardMemory then raises it
// by MemoryHeadroom, so the host never kills the sandbox for its
// workload's sake, and calls pressure when the host's charge for the
// sandbox crosses half the requested memory, so that the agent inside can
// watch closely and kill the workload's biggest process at the limit. It
// returns once the watch is set; the watch ends with ctx or the sandbox.
// ErrNoPressureEvents says the host cannot signal pressure (cgroup v2):
// the agent must watch on its own.
type MemoryGuarded interface {
	GuardMemory(ctx context.Context, id string, limitBytes int64, pressure func()) error
}

// ErrNoPressureEvents: the host cannot signal memory pressure here.
var ErrNoPressureEvents = errors.New("this host cannot signal memory pressure")

// MemoryHeadroom is how far above a gVisor sandbox's requested memory its
// host cgroup limit is set: room for the sandbox's kernel and gofer, and
// for what the workload allocates between the agent's looks.
func MemoryHeadroom(limitBytes int64) int64 { return 256<<20 + limitBytes/16 }

// MemoryStats is what the host charges a sandbox for memory.
type MemoryStats struct {
	CurrentBytes int64
	PeakBytes    int64
	// OOMKills counts processes the host kernel's OOM killer ended in
	// the sandbox's cgroup.
	OOMKills int64
}

// MemoryReporter is implemented by backends that can say what a sandbox
// costs in memory.
type MemoryReporter interface {
	MemoryStats(id string) (MemoryStats, error)
}
