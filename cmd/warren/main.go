// Command warren runs and drives self-hosted sandboxes for AI agents.
package main

import (
	"os"

	"github.com/warrenhq/warren/internal/cli"
)

func main() { os.Exit(cli.Main(os.Args)) }
