// Command warren-agent is the guest agent alone: what runs inside every
// sandbox. warren is its own agent too; this smaller binary, installed
// beside warren, starts faster inside gVisor and takes less of each
// sandbox's memory and checkpoint (docs/PERFORMANCE.md).
package main

import (
	"fmt"
	"os"

	"github.com/warrenhq/warren/internal/guest"
)

// Version is set at build time, as warren's is; warren uses this agent
// only when the two match.
var Version = "dev"

func main() {
	if code, ok := guest.Main(os.Args); ok {
		os.Exit(code)
	}
	if len(os.Args) == 2 && os.Args[1] == "version" {
		fmt.Println(Version)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: warren-agent agent-init | agent [--socket PATH] | version")
	os.Exit(2)
}
