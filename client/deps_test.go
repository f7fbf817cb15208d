package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNothingOfTheServer keeps the SDK light: neither it nor the
// wire contract may reach warren's internal packages or the server's
// dependencies, and the wire package is the standard library only.
func TestImportsNothingOfTheServer(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("needs the go command")
	}
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	for _, d := range deps("github.com/warrenhq/warren/client") {
		switch {
		case strings.HasPrefix(d, "github.com/warrenhq/warren/") &&
			d != "github.com/warrenhq/warren/client" && d != "github.com/warrenhq/warren/wire" && d != "github.com/warrenhq/warren/dirtar":
			t.Errorf("the SDK imports %s", d)
		case !strings.HasPrefix(d, "github.com/warrenhq/warren/") && !strings.HasPrefix(d, "github.com/coder/websocket"):
			t.Errorf("the SDK depends on %s; only coder/websocket is allowed", d)
		}
	}
	for _, pkg := range []string{"github.com/warrenhq/warren/wire", "github.com/warrenhq/warren/dirtar"} {
		if d := deps(pkg); len(d) != 1 {
			t.Errorf("%s must use the standard library only; it imports %v", pkg, d)
		}
	}
}
