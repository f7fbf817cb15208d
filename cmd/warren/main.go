// Command warren runs and drives self-hosted sandboxes for AI agents.
//
// It uses Go's own DNS resolver whatever the build: a warren built with
// cgo runs inside sandboxes too (as their agent), where the C library's
// resolver would load the sandbox's own libraries.
//
//go:debug netdns=go
package main

import (
	"os"

	"github.com/warrenhq/warren/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args)) }
