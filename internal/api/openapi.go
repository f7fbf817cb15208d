package api

import (
	_ "embed"
	"net/http"
)

// openapiDoc describes every route. It is written by hand, for readers;
// a test keeps it equal to the routes the server registers and to the
// shapes of the Go types it serves.
//
//go:embed openapi.json
var openapiDoc []byte

// OpenAPI returns the OpenAPI document.
func OpenAPI() []byte { return openapiDoc }

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiDoc)
}
