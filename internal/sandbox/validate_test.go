package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/internal/runtime"
)

// idleRuntime is a runtime for validation only: nothing is ever started.
type idleRuntime struct{}

func (idleRuntime) Name() string                              { return "runc" }
func (idleRuntime) Start(context.Context, runtime.Spec) error { return errors.New("not here") }
func (idleRuntime) Stop(context.Context, string) error        { return nil }
func (idleRuntime) Status(context.Context, string) (runtime.Status, error) {
	return runtime.StatusMissing, nil
}
func (idleRuntime) List(context.Context) ([]string, error) { return nil, nil }

func validator(t testing.TB) *Manager {
	t.Helper()
	dir := t.TempDir()
	images, err := image.NewStore(dir+"/images", image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{DataDir: dir, Images: images, Runtimes: map[string]runtime.Runtime{"runc": idleRuntime{}}, DefaultRuntime: "runc"})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// FuzzCreateRequest: any create body is either accepted with limits in
// bounds, or refused as bad input naming a field; never a panic.
func FuzzCreateRequest(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"image":"busybox","resources":{"cpu":0.5,"memory_mb":64,"pids":32,"disk_mb":64}}`,
		`{"env":{"A":"b"},"metadata":{"k":"v"},"timeout_seconds":10,"idle_timeout_seconds":5,"idle_action":"stop"}`,
		`{"network":{"egress":"allowlist","allow":["*.example.com","10.0.0.0/8"]}}`,
		`{"files":[{"path":"/a","content":"aGk=","encoding":"base64","mode":"0755"}]}`,
		`{"startup":{"git":{"url":"https://x/y.git","ref":"main","depth":1},"commands":[{"name":"a","run":"true","background":true}],"ports":[8000],"ready":{"http":"http://localhost:8000/","timeout_seconds":5}}}`,
		`{"resources":{"memory_mb":-1}}`,
		`{"startup":{"ready":{"tcp":"x","command":"y"}}}`,
	} {
		f.Add([]byte(seed))
	}
	m := validator(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var req CreateRequest
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if dec.Decode(&req) != nil {
			return
		}
		sp, _, _, err := m.validate(&req)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Kind != KindBadRequest || e.Field == "" {
				t.Fatalf("refused without naming a field: %v", err)
			}
			return
		}
		r := sp.Resources
		if r.CPU <= 0 || r.MemoryMB < minMemoryMB || r.PIDs < minPIDs || r.DiskMB < minDiskMB || sp.TimeoutSeconds < 0 || sp.IdleTimeoutSeconds < 0 {
			t.Fatalf("accepted out-of-bounds limits: %+v", sp)
		}
		for _, p := range sp.Ports {
			if p < 1 || p > 65535 {
				t.Fatalf("accepted port %d", p)
			}
		}
	})
}
