package guest

import (
	"context"
	"testing"

	"github.com/warrenhq/warren/wire"
)

// BenchmarkExec times a synchronous exec of true through the real agent
// over the real transport, without a sandbox around it.
func BenchmarkExec(b *testing.B) {
	c := startAgent(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.Exec(ctx, &wire.ExecRequest{Argv: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
	}
}
