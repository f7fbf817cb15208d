package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// CORS lets web pages from other origins call the API (the TypeScript SDK
// in a browser). Keys travel as bearer headers, never cookies, so nothing
// is ever sent with credentials.
type CORS struct {
	origins map[string]bool
	any     bool
}

// ParseCORS reads a comma-separated list of origins ("https://app.example.com")
// or "*" for any.
func ParseCORS(list string) (*CORS, error) {
	c := &CORS{origins: map[string]bool{}}
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimSpace(o)
		switch {
		case o == "":
		case o == "*":
			c.any = true
		default:
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				return nil, fmt.Errorf("cors-origin %q: want an origin like https://app.example.com, or *", o)
			}
			c.origins[u.Scheme+"://"+u.Host] = true
		}
	}
	if !c.any && len(c.origins) == 0 {
		return nil, nil
	}
	return c, nil
}

// handle adds the CORS headers an allowed origin gets, and answers its
// preflight requests; it reports whether it answered.
func (c *CORS) handle(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if c == nil || origin == "" || !strings.HasPrefix(r.URL.Path, "/v1/") || !(c.any || c.origins[origin]) {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE")
		h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		h.Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Type")
	return false
}
