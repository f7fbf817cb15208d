package api

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/warrenhq/warren/wire"
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

// wireTypes are the wire package's types by schema name.
var wireTypes = map[string]any{
	"CreateRequest": wire.CreateRequest{}, "Resources": wire.Resources{}, "Sandbox": wire.Sandbox{}, "Memory": wire.Memory{},
	"SandboxList": wire.SandboxList{}, "ForkRequest": wire.ForkRequest{}, "TokenRequest": wire.TokenRequest{},
	"ExecRequest": wire.ExecRequest{}, "ExecResult": wire.ExecResult{}, "Frame": wire.Frame{},
	"FileInfo": wire.FileInfo{}, "FileList": wire.FileList{}, "Image": wire.Image{}, "ImageEvent": wire.ImageEvent{},
	"ImageList": wire.ImageList{}, "ImageBuildEnd": wire.ImageBuildEnd{},
	"ErrorBody": wire.ErrorBody{}, "Error": wire.Error{}, "ErrorFrame": wire.ErrorFrame{},
	"NetworkPolicy": wire.NetworkPolicy{}, "Port": wire.Port{}, "PortToken": wire.PortToken{},
	"File": wire.File{}, "Git": wire.Git{}, "StartupCommand": wire.StartupCommand{}, "Startup": wire.Startup{},
	"ReadyCheck": wire.ReadyCheck{}, "CommandRequest": wire.CommandRequest{}, "Command": wire.Command{},
	"CommandList": wire.CommandList{}, "Info": wire.Info{}, "PoolStatus": wire.PoolStatus{},
	"ImageConfig": wire.ImageConfig{}, "ImagePullRequest": wire.ImagePullRequest{}, "RegistryAuth": wire.RegistryAuth{},
	"PruneResult": wire.PruneResult{}, "SnapshotRequest": wire.SnapshotRequest{},
	"Quotas": wire.Quotas{}, "QuotaUse": wire.QuotaUse{}, "OrgQuotas": wire.OrgQuotas{}, "OrgRequest": wire.OrgRequest{},
	"Org": wire.Org{}, "OrgList": wire.OrgList{}, "APIKeyRequest": wire.APIKeyRequest{}, "APIKey": wire.APIKey{},
	"APIKeyCreated": wire.APIKeyCreated{}, "APIKeyList": wire.APIKeyList{}, "SecretRequest": wire.SecretRequest{},
	"Secret": wire.Secret{}, "SecretList": wire.SecretList{}, "VolumeRequest": wire.VolumeRequest{}, "Volume": wire.Volume{},
	"VolumeList": wire.VolumeList{}, "VolumeMount": wire.VolumeMount{}, "Usage": wire.Usage{}, "UsageRow": wire.UsageRow{},
	"Node": wire.Node{}, "NodeCapacity": wire.NodeCapacity{}, "NodeAllocation": wire.NodeAllocation{}, "NodeList": wire.NodeList{},
	"Placement": wire.Placement{}, "NodeHost": wire.NodeHost{}, "NodeForgotten": wire.NodeForgotten{},
}

// TestWireTypesDocumented: every struct the wire package declares is a
// schema of the document (the list above is checked against the source).
func TestWireTypesDocumented(t *testing.T) {
	pkgs, err := parser.ParseDir(token.NewFileSet(), "../../wire", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, decl := range f.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok {
					continue
				}
				for _, spec := range gd.Specs {
					ts, ok := spec.(*ast.TypeSpec)
					if !ok || !ts.Name.IsExported() {
						continue
					}
					if _, isStruct := ts.Type.(*ast.StructType); isStruct {
						if _, known := wireTypes[ts.Name.Name]; !known {
							t.Errorf("wire.%s has no schema in openapi.json (add it there and to wireTypes)", ts.Name.Name)
						}
					}
				}
			}
		}
	}
}

// TestOpenAPISchemasMatchTypes checks each documented schema lists exactly
// the JSON fields of the Go type the server encodes.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	var doc docShape
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatal(err)
	}
	types := wireTypes
	if len(types) != len(doc.Components.Schemas) {
		t.Errorf("openapi.json has %d schemas, the test knows %d: keep them in step", len(doc.Components.Schemas), len(types))
	}
	for name, v := range types {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			continue
		}
		want, got := jsonFields(reflect.TypeOf(v)), []string{}
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

// jsonFields are the names encoding/json gives a struct's fields, an
// embedded struct's included.
func jsonFields(rt reflect.Type) []string {
	var out []string
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct {
			out = append(out, jsonFields(f.Type)...)
			continue
		}
		if tag != "" && tag != "-" {
			out = append(out, tag)
		}
	}
	return out
}
