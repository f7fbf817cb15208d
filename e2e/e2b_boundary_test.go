package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/warrenhq/warren/internal/envd/spec/process"
	"github.com/warrenhq/warren/internal/envd/spec/process/processconnect"
)

// e2bCall makes one request the way E2B's SDKs do and decodes a JSON
// answer into out.
func e2bCall(t *testing.T, method, url string, header map[string]string, body string, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if body != "" && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, url, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// TestE2BBoundaries attacks the E2B layer's checks: envd without the
// sandbox's own token, ports of a sandbox created without public
// traffic, malformed routing headers, a gone sandbox, missing keys.
func TestE2BBoundaries(t *testing.T) {
	s := startServer(t, "", "WARREN_RUNTIME=runc")
	key := map[string]string{"X-API-KEY": s.key}
	type created struct {
		SandboxID          string  `json:"sandboxID"`
		EnvdAccessToken    string  `json:"envdAccessToken"`
		TrafficAccessToken *string `json:"trafficAccessToken"`
		Domain             string  `json:"domain"`
	}
	var pub, priv created
	if st, body := e2bCall(t, "POST", s.url+"/v2/sandboxes", key, `{"templateID":"base","timeout":300}`, &pub); st != 201 {
		t.Fatalf("create: %d %s", st, body)
	}
	// The client cannot make its ports public through the metadata the
	// layer uses for it.
	if st, body := e2bCall(t, "POST", s.url+"/v2/sandboxes", key,
		`{"templateID":"base","metadata":{"e2b.public_traffic":"true"},"network":{"allowPublicTraffic":false}}`, &priv); st != 201 {
		t.Fatalf("create private: %d %s", st, body)
	}
	if pub.TrafficAccessToken != nil || priv.TrafficAccessToken == nil {
		t.Fatalf("traffic tokens: public %v, private %v", pub.TrafficAccessToken, priv.TrafficAccessToken)
	}
	envd := func(id, token, path, body string) (int, string) {
		h := map[string]string{"E2b-Sandbox-Id": id, "E2b-Sandbox-Port": "49983", "Content-Type": "application/json"}
		if token != "" {
			h["X-Access-Token"] = token
		}
		return e2bCall(t, "POST", s.url+path, h, body, nil)
	}
	list := "/process.Process/List"
	if st, body := envd(pub.SandboxID, pub.EnvdAccessToken, list, `{}`); st != 200 {
		t.Fatalf("envd with its token: %d %s", st, body)
	}
	for name, c := range map[string][2]string{
		"no token":               {pub.SandboxID, ""},
		"another sandbox's":      {pub.SandboxID, priv.EnvdAccessToken},
		"a token made up":        {pub.SandboxID, strings.Repeat("A", 43)},
		"warren's key as token":  {pub.SandboxID, s.key},
		"sbx_ form, wrong token": {"sbx_" + pub.SandboxID, "x"},
	} {
		if st, body := envd(c[0], c[1], list, `{}`); st != 401 {
			t.Errorf("%s: %d %s, want 401", name, st, body)
		}
	}
	for _, bad := range []string{"../../etc", "SBX_UPPER", strings.Repeat("a", 4096), "a b"} {
		if st, _ := envd(bad, pub.EnvdAccessToken, list, `{}`); st != 400 {
			t.Errorf("sandbox id %q: %d, want 400", bad, st)
		}
	}
	for _, port := range []string{"0", "65536", "-1", "http"} {
		st, _ := e2bCall(t, "GET", s.url+"/", map[string]string{"E2b-Sandbox-Id": pub.SandboxID, "E2b-Sandbox-Port": port}, "", nil)
		if st != 400 {
			t.Errorf("port %q: %d, want 400", port, st)
		}
	}
	// The health probe needs no token and tells nothing more.
	if st, _ := e2bCall(t, "GET", s.url+"/health", map[string]string{"E2b-Sandbox-Id": pub.SandboxID}, "", nil); st != 204 {
		t.Errorf("health: %d", st)
	}

	// A sandbox's own port: public ones answer anyone, others only with
	// the traffic token.
	for _, sb := range []created{pub, priv} {
		startServerIn(t, s.url, sb.SandboxID, sb.EnvdAccessToken)
	}
	port := func(sb created, token string) (int, string) {
		h := map[string]string{"E2b-Sandbox-Id": sb.SandboxID, "E2b-Sandbox-Port": "8000"}
		if token != "" {
			h["E2b-Traffic-Access-Token"] = token
		}
		return e2bCall(t, "GET", s.url+"/x", h, "", nil)
	}
	eventually(t, 10*time.Second, "the public port to answer", func() error {
		if st, body := port(pub, ""); st != 200 || body != "hi\n" {
			return errorf("%d %s", st, body)
		}
		return nil
	})
	if st, body := port(priv, ""); st != 403 {
		t.Errorf("private port without token: %d %s", st, body)
	}
	if st, body := port(priv, priv.EnvdAccessToken); st != 403 {
		t.Errorf("private port with the envd token: %d %s", st, body)
	}
	eventually(t, 10*time.Second, "the private port to answer its token", func() error {
		if st, body := port(priv, *priv.TrafficAccessToken); st != 200 || body != "hi\n" {
			return errorf("%d %s", st, body)
		}
		return nil
	})
	// By host name too ({port}-{id}.{domain}).
	if st, body := e2bCall(t, "GET", s.url+"/x", map[string]string{"Host": "8000-" + pub.SandboxID + "." + pub.Domain}, "", nil); st != 200 || body != "hi\n" {
		t.Errorf("host-based port: %d %s", st, body)
	}

	// The control plane wants a key.
	for _, h := range []map[string]string{nil, {"X-API-KEY": "e2b_" + strings.Repeat("0", 40)}} {
		if st, body := e2bCall(t, "GET", s.url+"/v2/sandboxes", h, "", nil); st != 401 || !strings.Contains(body, `"code":401`) {
			t.Errorf("list with %v: %d %s", h, st, body)
		}
	}
	if st, body := e2bCall(t, "POST", s.url+"/v3/templates", key, `{}`, nil); st != 501 || !strings.Contains(body, "Dockerfile") {
		t.Errorf("template build: %d %s", st, body)
	}
	if st, body := e2bCall(t, "POST", s.url+"/v2/sandboxes", key, `{"templateID":"no-such-image"}`, nil); st != 404 || !strings.Contains(body, "no-such-image") {
		t.Errorf("unknown template: %d %s", st, body)
	}
	if st, body := e2bCall(t, "DELETE", s.url+"/sandboxes/"+strings.Repeat("z", 20), key, "", nil); st != 404 || !strings.Contains(body, `"code":404`) {
		t.Errorf("kill unknown: %d %s", st, body)
	}

	// A gone sandbox is envd's 502 (the SDKs: the sandbox timed out).
	for _, sb := range []created{pub, priv} {
		if st, body := e2bCall(t, "DELETE", s.url+"/sandboxes/"+sb.SandboxID, key, "", nil); st != 204 {
			t.Fatalf("kill: %d %s", st, body)
		}
	}
	if st, body := envd(pub.SandboxID, pub.EnvdAccessToken, list, `{}`); st != 502 {
		t.Errorf("envd of a killed sandbox: %d %s", st, body)
	}
	if st, _ := port(pub, ""); st != 502 {
		t.Errorf("port of a killed sandbox: %d", st)
	}
}

// startServerIn starts a web server on port 8000 of a sandbox through
// envd's Start, with a Connect client of its own, and leaves it running.
func startServerIn(t *testing.T, url, id, token string) {
	t.Helper()
	c := processconnect.NewProcessClient(http.DefaultClient, url, connect.WithProtoJSON())
	req := connect.NewRequest(&process.StartRequest{Process: &process.ProcessConfig{Cmd: "/bin/sh",
		Args: []string{"-c", "mkdir -p /srv && echo hi > /srv/x && cd /srv && exec python3 -m http.server 8000"}}})
	req.Header().Set("E2b-Sandbox-Id", id)
	req.Header().Set("X-Access-Token", token)
	stream, err := c.Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() || stream.Msg().GetEvent().GetStart().GetPid() == 0 {
		t.Fatalf("no start event: %v", stream.Err())
	}
	stream.Close() // the server goes on
}
