package wire

import "time"

// ExecRequest runs one command: the body of POST .../exec and
// .../exec/stream, and the first message of .../exec/ws. Exactly one of
// Argv or Cmd is set; Cmd runs under /bin/sh -c.
type ExecRequest struct {
	Argv []string          `json:"argv,omitempty"`
	Cmd  string            `json:"cmd,omitempty"`
	Env  map[string]string `json:"env,omitempty"`
	Cwd  string            `json:"cwd,omitempty"`
	// User runs the command as a user of the sandbox: a name from its
	// /etc/passwd, or uid[:gid]. Default the image's user, else root.
	User  string `json:"user,omitempty"`
	Stdin string `json:"stdin,omitempty"`
	// TimeoutSeconds kills the command and everything it started after
	// that long; 0 lets it run as long as the request lasts.
	TimeoutSeconds float64 `json:"timeout_seconds,omitempty"`
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
// outputs belong on the streaming variants.
const MaxCapturedOutput = 16 << 20

// MaxFrame bounds one streamed frame (an NDJSON line or a WebSocket
// message) that the server sends.
const MaxFrame = 1 << 20

// NDJSON is the content type of streamed answers: one JSON value a line.
const NDJSON = "application/x-ndjson"

// Frame types. The server sends stdout, stderr, exit and error; a client
// sends stdin, stdin_close, kill and resize.
const (
	FrameStdout     = "stdout"
	FrameStderr     = "stderr"
	FrameExit       = "exit"
	FrameError      = "error"
	FrameStdin      = "stdin"
	FrameStdinClose = "stdin_close"
	FrameKill       = "kill"
	FrameResize     = "resize"
)

// Frame is one message of a streaming exec or a PTY's control channel,
// in either direction. Data is UTF-8 text; output that is not valid UTF-8
// arrives with each invalid byte as U+FFFD on the JSON streams, whereas the
// PTY's binary messages carry raw bytes.
type Frame struct {
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

// File types in FileInfo.Type.
const (
	FileTypeFile    = "file"
	FileTypeDir     = "dir"
	FileTypeSymlink = "symlink"
	FileTypeOther   = "other"
)

// FileInfo describes one file or directory in a sandbox.
type FileInfo struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`
	Type    string    `json:"type"`
	Size    int64     `json:"size"`
	Mode    string    `json:"mode"`
	ModTime time.Time `json:"mtime"`
}

// FileList is the answer to GET .../files/list.
type FileList struct {
	Path    string     `json:"path"`
	Entries []FileInfo `json:"entries"`
	// Truncated is set when the directory held more than MaxListEntries.
	Truncated bool `json:"truncated,omitempty"`
}

// MaxListEntries bounds a directory listing.
const MaxListEntries = 20000

// ArchiveContentType is the content type of a directory as a tar stream
// (GET and PUT .../files/archive).
const ArchiveContentType = "application/x-tar"

// CommandRequest starts a named background command: the body of POST
// .../commands.
type CommandRequest struct {
	// Name is required: letters, digits, "_", "." and "-", up to 64.
	Name string `json:"name"`
	// Cmd is required and runs under /bin/sh -c.
	Cmd string            `json:"cmd"`
	Env map[string]string `json:"env,omitempty"`
	Cwd string            `json:"cwd,omitempty"`
	// User is as in ExecRequest.
	User string `json:"user,omitempty"`
}

// States of a background command.
const (
	CommandRunning = "running"
	CommandExited  = "exited"
)

// Command is a background command's state.
type Command struct {
	Name     string `json:"name"`
	Cmd      string `json:"cmd"`
	State    string `json:"state"`
	ExitCode *int   `json:"exit_code,omitempty"`
	// OOMKilled: a process of the command was killed because the
	// sandbox ran out of memory.
	OOMKilled bool       `json:"oom_killed,omitempty"`
	PID       int        `json:"pid"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
}

// CommandList is the answer to GET .../commands.
type CommandList struct {
	Commands []Command `json:"commands"`
}
