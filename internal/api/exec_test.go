package api

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/warrenhq/warren/wire"
)

// FuzzWriteJSONString: the piecewise escaper says exactly what
// encoding/json says of the whole string, for any bytes.
func FuzzWriteJSONString(f *testing.F) {
	f.Add("plain", 1)
	f.Add("h\xe2\x82\xacllo \x00 \"quoted\" <tag> \xff\xfe", 3)
	f.Add(strings.Repeat("€", 2000), 12)
	f.Fuzz(func(t *testing.T, s string, repeat int) {
		// Repeats cross the 32 KiB pieces; small inputs keep every run
		// quick (large ones stall the fuzzing engine, not the escaper).
		if len(s) > 4096 {
			s = s[:4096]
		}
		if repeat < 1 || repeat > 40 {
			repeat = 1
		}
		s = strings.Repeat(s, repeat)
		var b bytes.Buffer
		writeJSONString(&b, s)
		var got, want string
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		whole, _ := json.Marshal(s)
		_ = json.Unmarshal(whole, &want)
		if got != want {
			t.Fatalf("decoded differently from json.Marshal")
		}
	})
}

func TestWriteExecResult(t *testing.T) {
	for _, res := range []wire.ExecResult{
		{ExitCode: 3, Stdout: "out\n", Stderr: "err \xff", DurationMs: 12},
		{ExitCode: 124, TimedOut: true, Truncated: true, Stdout: strings.Repeat("\x01é", 70000)},
		{ExitCode: 137, OOMKilled: true},
	} {
		rec := httptest.NewRecorder()
		writeExecResult(rec, &res)
		var got wire.ExecResult
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		want := res
		b, _ := json.Marshal(res)
		_ = json.Unmarshal(b, &want)
		if got != want {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	}
}

func TestProtocolKey(t *testing.T) {
	r := httptest.NewRequest("GET", "/v1/sandboxes/x/pty", nil)
	r.Header.Set("Sec-WebSocket-Protocol", "warren.v1, warren.key.wrn_abc")
	if _, ok := protocolKey(r); ok {
		t.Fatal("a key was taken from a request that is not a WebSocket upgrade")
	}
	r.Header.Set("Upgrade", "websocket")
	if key, ok := protocolKey(r); !ok || key != "wrn_abc" {
		t.Fatalf("key %q %v", key, ok)
	}
	r.Header.Set("Sec-WebSocket-Protocol", "warren.v1")
	if _, ok := protocolKey(r); ok {
		t.Fatal("a key was found where none was offered")
	}
}

func TestCORS(t *testing.T) {
	if _, err := ParseCORS("https://app.example.com/path"); err == nil {
		t.Fatal("an origin with a path was accepted")
	}
	if c, err := ParseCORS(" , "); c != nil || err != nil {
		t.Fatalf("an empty list: %v %v", c, err)
	}
	c, err := ParseCORS("https://app.example.com, http://127.0.0.1:3000")
	if err != nil {
		t.Fatal(err)
	}
	preflight := func(origin, path string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("OPTIONS", path, nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Access-Control-Request-Method", "POST")
		w := httptest.NewRecorder()
		c.handle(w, r)
		return w
	}
	w := preflight("http://127.0.0.1:3000", "/v1/sandboxes")
	if w.Code != 204 || w.Header().Get("Access-Control-Allow-Origin") != "http://127.0.0.1:3000" ||
		!strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Fatalf("preflight from an allowed origin: %d %v", w.Code, w.Header())
	}
	if w.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Fatal("credentials are allowed")
	}
	for _, bad := range []struct{ origin, path string }{{"https://evil.example", "/v1/sandboxes"}, {"https://app.example.com", "/preview/x/1/"}} {
		if w := preflight(bad.origin, bad.path); w.Header().Get("Access-Control-Allow-Origin") != "" {
			t.Fatalf("%s %s was allowed", bad.origin, bad.path)
		}
	}
}
