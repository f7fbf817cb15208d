package api

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/warrenhq/warren/internal/guest"
	"github.com/warrenhq/warren/internal/image"
	"github.com/warrenhq/warren/internal/network"
	"github.com/warrenhq/warren/internal/sandbox"
)

type docShape struct {
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]json.RawMessage `json:"properties"`
		} `json:"schemas"`
	} `json:"components"`
}

// TestOpenAPIMatchesRouter keeps the document true: every route the server
// registers is documented and every documented route is registered.
func TestOpenAPIMatchesRouter(t *testing.T) {
	var doc docShape
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	srv := New(nil, nil, nil, nil)
	registered := srv.Patterns()
	sort.Strings(documented)
	sort.Strings(registered)
	if !reflect.DeepEqual(documented, registered) {
		t.Fatalf("openapi.json and the router disagree\n documented: %v\n registered: %v", documented, registered)
	}
}

// TestOpenAPISchemasMatchTypes checks each documented schema lists exactly
// the JSON fields of the Go type the server encodes.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	var doc docShape
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	types := map[string]any{
		"CreateRequest": sandbox.CreateRequest{}, "Resources": sandbox.Resources{}, "Sandbox": sandbox.Sandbox{}, "Memory": sandbox.Memory{},
		"ExecRequest": guest.ExecRequest{}, "ExecResult": guest.ExecResult{}, "Frame": guest.Frame{},
		"FileInfo": guest.FileInfo{}, "Image": image.Image{}, "ImageEvent": image.Event{},
		"ErrorBody": ErrorBody{}, "ErrorDetail": ErrorDetail{}, "NetworkPolicy": network.Policy{}, "Port": sandbox.Port{}, "PortToken": PortToken{},
		"File": sandbox.File{}, "Git": sandbox.Git{}, "StartupCommand": sandbox.StartupCommand{}, "Startup": sandbox.Startup{},
		"ReadyCheck": guest.ReadyCheck{}, "CommandRequest": guest.CommandRequest{}, "Command": guest.Command{},
	}
	if len(types) != len(doc.Components.Schemas) {
		t.Errorf("openapi.json has %d schemas, the test knows %d: keep them in step", len(doc.Components.Schemas), len(types))
	}
	for name, v := range types {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			continue
		}
		var want, got []string
		rt := reflect.TypeOf(v)
		for i := 0; i < rt.NumField(); i++ {
			tag := strings.Split(rt.Field(i).Tag.Get("json"), ",")[0]
			if tag != "" && tag != "-" {
				want = append(want, tag)
			}
		}
		for p := range schema.Properties {
			got = append(got, p)
		}
		sort.Strings(want)
		sort.Strings(got)
		if !reflect.DeepEqual(want, got) {
			t.Errorf("schema %s documents %v; the Go type has %v", name, got, want)
		}
	}
}
