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
// connection without the right token. The token reaches the agent in
// TokenEnv of the sandbox's init, which hands it to the agent over a pipe;
// both are non-dumpable, so other processes in the sandbox (without
// CAP_SYS_PTRACE) cannot read it from their memory or environment.
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
	MaxFrame = 1 << 20
	// MaxAnswer bounds a small JSON answer (file info, a command's state,
	// a ready check).
	MaxAnswer = 1 << 20
	// MaxListAnswer bounds a directory listing or the list of commands.
	MaxListAnswer = 64 << 20
)

// NDJSON is the content type of streamed exec answers.
const NDJSON = "application/x-ndjson"

// ExecRequest runs one command. Exactly one of Argv or Cmd is set; Cmd runs
// under /bin/sh -c.
type ExecRequest struct {
	Argv           []string          `json:"argv,omitempty"`
	Cmd            string            `json:"cmd,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Cwd            string            `json:"cwd,omitempty"`
	Stdin          string            `json:"stdin,omitempty"`
	TimeoutSeconds float64           `json:"timeout_seconds,omitempty"`
}

// ExecResult is the outcome of a command run to completion.
type ExecResult struct {
	ExitCode int    `json:"exit_code"`
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	// TimedOut is set when the command was killed at its timeout.
	TimedOut bool `json:"timed_out,omitempty"`
	// Truncated is set when output beyond MaxCapturedOutput was dropped.
	Truncated bool `json:"truncated,omitempty"`
	// OOMKilled is set when the sandbox ran out of memory and a process
	// of this command was killed for it.
	OOMKilled  bool  `json:"oom_killed,omitempty"`
	DurationMs int64 `json:"duration_ms"`
}

// MaxCapturedOutput bounds what a synchronous exec keeps per stream; larger
// outputs belong on the streaming variant. The host enforces it too, and
// never buffers more.
const MaxCapturedOutput = 16 << 20

// MaxListEntries bounds a directory listing; a longer one is cut and
// marked truncated.
const MaxListEntries = 20000

// Frame is one message of a streaming exec or PTY session, in either
// direction.
type Frame struct {
	// Type is stdout, stderr, exit or error (agent to caller), or stdin,
	// stdin_close, kill or resize (caller to agent).
	Type     string `json:"type"`
	Data     string `json:"data,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
	// OOMKilled (exit frames): a process of the command was killed
	// because the sandbox ran out of memory.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// Truncated and DurationMs close a synchronous exec (exit frames).
	Truncated  bool   `json:"truncated,omitempty"`
	DurationMs int64  `json:"duration_ms,omitempty"`
	Message    string `json:"message,omitempty"`
	Cols       uint16 `json:"cols,omitempty"`
	Rows       uint16 `json:"rows,omitempty"`
}

// FileInfo describes one file or directory.
type FileInfo struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`
	Type    string    `json:"type"` // file, dir, symlink or other
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"`
	ModTime time.Time `json:"mtime"`
}

// Error is the body of every non-2xx answer from the agent.
type Error struct {
	Code    string `json:"code"` // not_found, bad_request, internal
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }
