package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/warrenhq/warren/internal/cluster"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// maxCreateBody bounds a create request held for placement (files ride
// in it).
const maxCreateBody = 32 << 20

// route serves r if it belongs to another node of the cluster: a request
// for a sandbox goes to the node it lives on, and a create to the node
// placement picks (which may be this one, served here). It reports
// whether r was served. A request another node sent is never routed
// again: that node already decided.
func (s *Server) route(w http.ResponseWriter, r *http.Request) bool {
	if s.Cluster.FromNode(r) {
		// The client's address, for the auth-failure limiter.
		if a := r.Header.Get(cluster.HeaderClient); a != "" {
			r.RemoteAddr = a
		}
		return false
	}
	r.Header.Del(cluster.HeaderKey)
	r.Header.Del(cluster.HeaderPlaced)
	if isCreate(r) {
		s.place(w, r)
		return true
	}
	if name, node, ok := s.volumeNode(r); ok {
		return s.forwardTo(w, r, node, "volume "+name, false)
	}
	id, ok := s.sandboxOf(r)
	if !ok || s.sandbox.Serves(id) {
		return false // none, or one this node runs: no lookup on the way
	}
	node, err := s.store.SandboxNode(r.Context(), id)
	if err != nil {
		return false // unknown: 404 here
	}
	// A lost node's sandbox still has its record here to read.
	readable := r.Method == http.MethodGet && strings.TrimPrefix(r.URL.Path, "/v1/sandboxes/") == id
	return s.forwardTo(w, r, node, "sandbox "+id, readable)
}

// volumeNode is the node whose disk holds the volume a delete is for. A
// key that does not check out is left to the route to refuse (and count).
func (s *Server) volumeNode(r *http.Request) (name, node string, ok bool) {
	name, ok = strings.CutPrefix(r.URL.Path, "/v1/volumes/")
	if !ok || r.Method != http.MethodDelete || name == "" || strings.Contains(name, "/") {
		return "", "", false
	}
	k, err := s.keyOf(r)
	if err != nil {
		return "", "", false
	}
	v, err := s.store.GetVolume(r.Context(), k.Org, name)
	if err != nil {
		return "", "", false
	}
	return name, v.Node, true
}

// forwardTo sends r to node, unless it is this one (or none); it reports
// whether r was served. A request for what a lost node holds is refused,
// or (readable) answered here from the store.
func (s *Server) forwardTo(w http.ResponseWriter, r *http.Request, node, what string, readable bool) bool {
	if node == "" || node == s.Cluster.Self() {
		return false
	}
	n, err := s.Cluster.Peer(r.Context(), node)
	if errors.Is(err, store.ErrNotFound) {
		return false // a forgotten node's: its record is here
	}
	if err != nil {
		writeError(w, wire.CodeInternal, "look up node "+node+": "+err.Error(), "")
		return true
	}
	if n.State == wire.NodeLost {
		if readable {
			return false
		}
		writeError(w, wire.CodeUnavailable, fmt.Sprintf("%s lives on node %s, which is lost (no heartbeat since %s); it is reachable again when the node returns",
			what, node, n.HeartbeatAt.Format("15:04:05Z07:00")), "")
		return true
	}
	s.Cluster.Forward(w, r, n)
	return true
}

func isCreate(r *http.Request) bool {
	return r.Method == http.MethodPost && (r.URL.Path == "/v1/sandboxes" || r.URL.Path == "/sandboxes" || r.URL.Path == "/v2/sandboxes")
}

// sandboxOf names the sandbox a request is for, if any.
func (s *Server) sandboxOf(r *http.Request) (string, bool) {
	if id, _, _, ok := s.previewMatch(r); ok {
		return id, true
	}
	if s.E2B != nil && s.E2B.Match(r) {
		return s.E2B.SandboxOf(r)
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/sandboxes/")
	if !ok {
		return "", false
	}
	id, _, _ := strings.Cut(rest, "/")
	return id, id != ""
}

// placement is the part of a create request (warren's or E2B's) that
// placement reads.
type placement struct {
	Image     string          `json:"image"`
	Template  string          `json:"templateID"`
	Runtime   string          `json:"runtime"`
	Resources *wire.Resources `json:"resources"`
	CPUCount  float64         `json:"cpuCount"`
	MemoryMB  int             `json:"memoryMB"`
	Volumes   []struct {
		Name string `json:"name"`
	} `json:"volumes"`
	Placement *wire.Placement `json:"placement"`
}

// place picks the node for a create and has it made there, trying the
// next candidate when one has no room after all (another create took it
// first); the store's reservation is what decides.
func (s *Server) place(w http.ResponseWriter, r *http.Request) {
	c, e := s.caller(r, write)
	if e != nil {
		writeError(w, e.Code, e.Message, "")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxCreateBody+1))
	if err != nil {
		writeError(w, wire.CodeBadRequest, "read request body: "+err.Error(), "")
		return
	}
	if len(body) > maxCreateBody {
		writeError(w, wire.CodeTooLarge, fmt.Sprintf("request body is larger than %d bytes", maxCreateBody), "")
		return
	}
	want, field, err := s.wantOf(r, c.Org, body)
	if err != nil {
		writeError(w, wire.CodeBadRequest, err.Error(), field)
		return
	}
	nodes, err := s.Cluster.Candidates(r.Context(), want)
	if err != nil {
		writeError(w, wire.CodeUnavailable, err.Error(), "")
		return
	}
	var last *http.Response
	for i, n := range nodes {
		if i == 5 {
			break
		}
		var resp *http.Response
		if n.ID == s.Cluster.Self() {
			resp = s.serveHere(r, body)
		} else if resp, err = s.Cluster.Send(r.Context(), r, body, n); err != nil {
			s.log.Warn("place on node", "node.id", n.ID, "err", err)
			continue
		}
		if resp.StatusCode != http.StatusServiceUnavailable {
			copyResponse(w, resp)
			return
		}
		if last != nil {
			last.Body.Close()
		}
		last = resp
	}
	if last != nil {
		copyResponse(w, last)
		return
	}
	writeError(w, wire.CodeUnavailable, "no node could take the sandbox: every candidate refused or did not answer", "")
}

// wantOf reads what a create needs of its node. A volume pins it to the
// node whose disk holds the volume.
func (s *Server) wantOf(r *http.Request, org string, body []byte) (cluster.Want, string, error) {
	var p placement
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &p); err != nil {
			return cluster.Want{}, "", fmt.Errorf("invalid JSON: %v", err)
		}
	}
	w := cluster.Want{Image: p.Image, Runtime: p.Runtime}
	if r.URL.Path != "/v1/sandboxes" {
		w.Image, w.CPU, w.MemoryMB = p.Template, p.CPUCount, p.MemoryMB
	}
	if w.Image == "" {
		w.Image = "base"
	}
	res := s.sandbox.Defaults()
	if p.Resources != nil {
		if p.Resources.CPU > 0 {
			res.CPU = p.Resources.CPU
		}
		if p.Resources.MemoryMB > 0 {
			res.MemoryMB = p.Resources.MemoryMB
		}
		if p.Resources.DiskMB > 0 {
			res.DiskMB = p.Resources.DiskMB
		}
	}
	if w.CPU == 0 {
		w.CPU = res.CPU
	}
	if w.MemoryMB == 0 {
		w.MemoryMB = res.MemoryMB
	}
	w.DiskMB = res.DiskMB
	if p.Placement != nil {
		w.Node, w.Labels = p.Placement.Node, p.Placement.Labels
	}
	for i, v := range p.Volumes {
		vol, err := s.store.GetVolume(r.Context(), org, v.Name)
		if errors.Is(err, store.ErrNotFound) {
			return w, fmt.Sprintf("volumes[%d].name", i), fmt.Errorf("no volume %q", v.Name)
		}
		if err != nil {
			return w, "", err
		}
		if vol.Node == "" {
			continue
		}
		if w.Node != "" && w.Node != vol.Node {
			return w, fmt.Sprintf("volumes[%d].name", i), fmt.Errorf("volume %q is on node %s, and the sandbox must be on node %s: volumes are node-local", v.Name, vol.Node, w.Node)
		}
		w.Node = vol.Node
	}
	return w, "", nil
}

// serveHere serves a create on this node, holding the answer so that a
// refusal for want of room can be tried on another node instead.
func (s *Server) serveHere(r *http.Request, body []byte) *http.Response {
	rec := &heldResponse{header: http.Header{}, status: http.StatusOK}
	in := r.Clone(r.Context())
	in.Body = io.NopCloser(bytes.NewReader(body))
	in.ContentLength = int64(len(body))
	if s.E2B != nil && s.E2B.Match(in) {
		s.E2B.ServeHTTP(rec, in)
	} else {
		s.mux.ServeHTTP(rec, in)
	}
	return &http.Response{StatusCode: rec.status, Header: rec.header, Body: io.NopCloser(&rec.body)}
}

type heldResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldResponse) Header() http.Header         { return h.header }
func (h *heldResponse) Write(b []byte) (int, error) { return h.body.Write(b) }
func (h *heldResponse) WriteHeader(code int)        { h.status = code }

func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func (s *Server) nodeRoutes() []route {
	return []route{
		{"GET /v1/nodes", s.handleListNodes, admin},
		{"GET /v1/nodes/{id}", s.handleGetNode, admin},
		{"POST /v1/nodes/{id}/drain", s.handleDrain(true), admin},
		{"DELETE /v1/nodes/{id}/drain", s.handleDrain(false), admin},
		{"DELETE /v1/nodes/{id}", s.handleForgetNode, admin},
	}
}

// handleForgetNode removes a lost node for good, failing its sandboxes.
func (s *Server) handleForgetNode(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	n, err := s.store.ForgetNode(r.Context(), id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, wire.CodeNotFound, "no node "+id, "")
	case errors.Is(err, store.ErrConflict):
		writeError(w, wire.CodeConflict, err.Error()+"; only a lost node can be forgotten", "")
	case err != nil:
		s.fail(w, r, err)
	default:
		writeJSON(w, http.StatusOK, wire.NodeForgotten{ID: id, SandboxesFailed: n})
	}
}

func (s *Server) handleListNodes(w http.ResponseWriter, r *http.Request) {
	out := wire.NodeList{Nodes: []wire.Node{}}
	if s.Cluster != nil {
		nodes, err := s.Cluster.Nodes(r.Context())
		if err != nil {
			s.fail(w, r, err)
			return
		}
		out.Nodes = nodes
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetNode(w http.ResponseWriter, r *http.Request) {
	if s.Cluster == nil {
		writeError(w, wire.CodeNotFound, "no node "+r.PathValue("id")+": this warren shares its store with no other node", "")
		return
	}
	n, err := s.Cluster.Node(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, wire.CodeNotFound, "no node "+r.PathValue("id"), "")
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

// handleDrain drains a node (no new sandboxes; those it has run on) or
// makes it ready again.
func (s *Server) handleDrain(drain bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if s.Cluster == nil {
			writeError(w, wire.CodeNotFound, "no node "+id+": this warren shares its store with no other node", "")
			return
		}
		if _, err := s.store.SetNodeDraining(r.Context(), id, drain); errors.Is(err, store.ErrNotFound) {
			writeError(w, wire.CodeNotFound, "no node "+id, "")
			return
		} else if err != nil {
			s.fail(w, r, err)
			return
		}
		s.handleGetNode(w, r)
	}
}
