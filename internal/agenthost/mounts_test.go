package agenthost

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMountAllowlist(t *testing.T) {
	base := t.TempDir()
	ro := filepath.Join(base, "datasets")
	rw := filepath.Join(base, "scratch")
	outside := filepath.Join(base, "private")
	for _, d := range []string{ro + "/images", rw + "/out", outside, ro + "/.ssh", ro + "/proj/.aws", ro + "/keys"} {
		os.MkdirAll(d, 0o755)
	}
	os.WriteFile(ro+"/keys/id_rsa", []byte("x"), 0o600)
	os.Symlink(outside, ro+"/escape")
	os.Symlink(ro+"/images", base+"/link-to-images")
	list := filepath.Join(base, "mount-allowlist.json")
	b, _ := json.Marshal(map[string]any{
		"allowedRoots":    []map[string]any{{"path": ro}, {"path": rw, "allowReadWrite": true}},
		"blockedPatterns": []string{"secret*"},
	})
	os.WriteFile(list, b, 0o600)
	os.MkdirAll(ro+"/secrets-2026", 0o755)
	a, err := LoadAllowlist(list)
	if err != nil {
		t.Fatal(err)
	}

	accept := []struct {
		spec, source, target string
		readOnly             bool
	}{
		{ro + "/images:imgs", ro + "/images", "/workspace/extra/imgs", true},
		{ro + "/images:imgs:ro", ro + "/images", "/workspace/extra/imgs", true},
		{rw + "/out:out:rw", rw + "/out", "/workspace/extra/out", false},
		{rw + ":all:rw", rw, "/workspace/extra/all", false},
		// A symlink that lands inside a root is judged by where it lands.
		{base + "/link-to-images:via-link", ro + "/images", "/workspace/extra/via-link", true},
	}
	for _, c := range accept {
		m, err := a.Resolve(c.spec)
		if err != nil {
			t.Errorf("%s: refused: %v", c.spec, err)
			continue
		}
		if m.Source != c.source || m.Target != c.target || m.ReadOnly != c.readOnly {
			t.Errorf("%s: got %+v", c.spec, m)
		}
	}

	refuse := map[string]string{
		ro + "/images:imgs:rw":         "read-only",
		outside + ":p":                 "not under any allowed root",
		ro + "/escape:e":               "not under any allowed root",
		ro + "/images/../../private:p": "not under any allowed root",
		ro + "/.ssh:ssh":               `blocked pattern ".ssh"`,
		ro + "/proj/.aws:aws":          `blocked pattern ".aws"`,
		ro + "/keys/id_rsa:key":        `blocked pattern "id_rsa*"`,
		ro + "/secrets-2026:s":         `blocked pattern "secret*"`,
		ro + "/images:../x":            "name",
		ro + "/images:.hidden":         "name",
		ro + "/images":                 "HOSTPATH:NAME",
		ro + "/images:imgs:rwx":        "must be ro or rw",
		filepath.Join(base, "nope:n"):  "no such file",
		":n":                           "HOSTPATH:NAME",
	}
	for spec, want := range refuse {
		if _, err := a.Resolve(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want a refusal mentioning %q, got %v", spec, want, err)
		}
	}

	empty, err := LoadAllowlist(filepath.Join(base, "missing.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := empty.Resolve(ro + "/images:imgs"); err == nil || !strings.Contains(err.Error(), "missing.json") {
		t.Fatalf("without an allowlist file: %v", err)
	}
	os.WriteFile(list, []byte(`{"allowedRoots":[{"path":"relative"}]}`), 0o600)
	if _, err := LoadAllowlist(list); err == nil || !strings.Contains(err.Error(), "allowedRoots[0].path") {
		t.Fatalf("relative root: %v", err)
	}
}
