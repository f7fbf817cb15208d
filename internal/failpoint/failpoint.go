// Package failpoint kills warren at a named step of its work, so tests
// can prove that a crash at any step loses nothing and leaks nothing.
// It is compiled into every build and does nothing unless the
// WARREN_FAILPOINT environment variable names a step.
package failpoint

import (
	"os"
	"syscall"
)

// Env names the step at which to die.
const Env = "WARREN_FAILPOINT"

var armed = os.Getenv(Env)

// Hit kills this process with SIGKILL, as a crash would, if name is the
// step the environment names.
func Hit(name string) {
	if armed != "" && armed == name {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
