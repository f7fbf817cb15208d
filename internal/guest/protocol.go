// Package guest is warren's in-sandbox agent and the host's client for it.
//
// The agent runs as the sandbox's init. It dials the host over a Unix socket
// that the runtime bind-mounts into the sandbox, so the transport is the same
// for every backend and needs no network inside the sandbox. Dialing out
// (rather than listening) keeps the sandbox checkpointable: gVisor cannot save
// a bound host socket, but it can drop and later re-dial a connected one.
// Over that one connection the host opens multiplexed streams, each carrying
// one HTTP request to the agent.
package guest

import (
	"crypto/rand"
	"encoding/base64"
	"time"

	"github.com/warrenhq/warren/wire"
)

// Paths inside every sandbox.
const (
	// Dir holds warren's files inside a sandbox.
	Dir = "/.warren"
	// AgentPath is where the runtime places the agent binary.
	AgentPath = Dir + "/agent"
	// LibDir holds the ELF loader and libraries of a dynamically linked
	// agent, which runs as "LoaderPath --library-path LibDir AgentPath".
	LibDir = Dir + "/lib"
	// LoaderPath is the loader in LibDir.
	LoaderPath = LibDir + "/ld.so"
	// RunDir is bind-mounted from the host and holds the host's socket.
	RunDir = Dir + "/run"
	// SocketName is the host socket's name in RunDir.
	SocketName = "host.sock"
)

// The greeting. Root inside a sandbox can connect to the host socket too,
// so the real agent proves itself first: the first bytes it sends on every
// connection are one line, GreetingPrefix followed by the sandbox's agent
// token and "\n", before any multiplexing starts. The host reads at most
// MaxGreeting bytes for it, for at most GreetingTimeout, and refuses a
// connection without the right token. The token reaches the agent, the
// sandbox's PID 1, in TokenEnv; it makes itself non-dumpable and clears
// the variable first, so other processes in the sandbox (without
// CAP_SYS_PTRACE) cannot read it from its memory or environment.
const (
	GreetingPrefix  = "warren-agent/1 "
	MaxGreeting     = 128
	GreetingTimeout = 5 * time.Second
	TokenEnv        = "WARREN_AGENT_TOKEN"
)

// NewToken returns a fresh agent token.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Greeting is the line the agent sends first.
func Greeting(token string) []byte { return []byte(GreetingPrefix + token + "\n") }

// Bounds on what the host reads from an agent. A sandbox may run hostile
// code as root, so nothing it sends is read without a limit.
const (
	// MaxFrame bounds one streamed frame (NDJSON line or WebSocket
	// message) from an agent. The agent sends at most 32 KiB of output
	// per frame, which JSON escaping can grow six-fold.
	MaxFrame = wire.MaxFrame
	// MaxAnswer bounds a small JSON answer (file info, a command's state,
	// a ready check).
	MaxAnswer = 1 << 20
	// MaxListAnswer bounds a directory listing or the list of commands.
	MaxListAnswer = 64 << 20
)

// The API's shapes that the agent speaks too: exec requests and results,
// frames, file info, background commands and ready checks are the public
// wire types, so the host relays them unchanged.
const (
	NDJSON            = wire.NDJSON
	MaxCapturedOutput = wire.MaxCapturedOutput
	MaxListEntries    = wire.MaxListEntries
)

// Error is the body of every non-2xx answer from the agent.
type Error struct {
	Code    string `json:"code"` // not_found, bad_request, internal
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }
