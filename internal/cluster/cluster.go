// Package cluster makes the nodes that share one store act as one warren.
// Each node renews a lease in the store; any node can place a new sandbox
// on the node with the most room that can run it, and forward a request
// for a sandbox to the node it lives on. The store is the only shared
// state and the only judge: a node's capacity is reserved in the same
// transaction that records a sandbox, so placement here is advice that
// the store confirms or refuses.
package cluster

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// Store is what the cluster keeps in the shared store.
type Store interface {
	RegisterNode(ctx context.Context, n store.Node) error
	Heartbeat(ctx context.Context, id string, c wire.NodeCapacity, now, leaseUntil time.Time) (string, error)
	ExpireNodes(ctx context.Context, now time.Time) ([]string, error)
	LeaveNode(ctx context.Context, id string, now time.Time) error
	ListNodes(ctx context.Context) ([]*store.Node, error)
	GetNode(ctx context.Context, id string) (*store.Node, error)
	Allocations(ctx context.Context) (map[string]wire.NodeAllocation, error)
}

// Headers between nodes. A request that carries the node key was sent by
// another node, which already authenticated and placed or routed it.
const (
	HeaderKey    = "X-Warren-Node-Key"
	HeaderPlaced = "X-Warren-Placed"
	HeaderClient = "X-Warren-Client-Addr"
)

// DefaultLease is how long a node's heartbeat holds; it renews it three
// times within.
const DefaultLease = 15 * time.Second

// Config configures a node's part in the cluster.
type Config struct {
	Store Store
	// Self is this node's id; URL is where the others reach it.
	Self string
	URL  string
	// Key is the node-to-node credential every node shares.
	Key    string
	Labels map[string]string
	Lease  time.Duration
	// Offer says what this node offers now.
	Offer func(ctx context.Context) wire.NodeCapacity
	Log   *slog.Logger
}

// Cluster is this node's view of the cluster.
type Cluster struct {
	cfg     Config
	started time.Time
	mu      sync.Mutex
	states  map[string]string
	proxies map[string]*httputil.ReverseProxy
	client  *http.Client
}

// New returns the cluster view of a node; Join registers it.
func New(cfg Config) *Cluster {
	if cfg.Lease <= 0 {
		cfg.Lease = DefaultLease
	}
	return &Cluster{cfg: cfg, states: map[string]string{}, proxies: map[string]*httputil.ReverseProxy{},
		client: &http.Client{Timeout: 10 * time.Minute}}
}

// SetOffer sets what the node offers, before Join.
func (c *Cluster) SetOffer(offer func(ctx context.Context) wire.NodeCapacity) { c.cfg.Offer = offer }

// Self is this node's id.
func (c *Cluster) Self() string { return c.cfg.Self }

// Join registers this node with its first lease.
func (c *Cluster) Join(ctx context.Context) error {
	now := time.Now()
	c.started = now
	if err := c.cfg.Store.RegisterNode(ctx, store.Node{ID: c.cfg.Self, URL: c.cfg.URL, Capacity: c.cfg.Offer(ctx), Labels: c.cfg.Labels,
		StartedAt: now, HeartbeatAt: now, LeaseUntil: now.Add(c.cfg.Lease)}); err != nil {
		return err
	}
	return c.refresh(ctx)
}

// Run renews the lease, marks lost the nodes whose leases ended, and
// keeps the view of node states fresh, until ctx ends.
func (c *Cluster) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.beat(ctx)
	}
}

// Leave tells the cluster this node is stopping: it is lost from now
// until it starts again, so no create waits on it meanwhile.
func (c *Cluster) Leave(ctx context.Context) {
	if err := c.cfg.Store.LeaveNode(ctx, c.cfg.Self, time.Now()); err != nil {
		c.cfg.Log.Error("leave the cluster", "node.id", c.cfg.Self, "err", err)
		return
	}
	c.cfg.Log.Info("left the cluster until this node starts again", "node.id", c.cfg.Self)
}

func (c *Cluster) beat(ctx context.Context) {
	now := time.Now()
	was, err := c.cfg.Store.Heartbeat(ctx, c.cfg.Self, c.cfg.Offer(ctx), now, now.Add(c.cfg.Lease))
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Forgotten while it was away (its sandboxes failed then): it
		// joins again, and its reconciler clears what it still runs.
		c.cfg.Log.Warn("this node was forgotten by the cluster; registering again", "node.id", c.cfg.Self)
		if err := c.Join(ctx); err != nil {
			c.cfg.Log.Error("register node", "node.id", c.cfg.Self, "err", err)
		}
	case err != nil:
		c.cfg.Log.Error("renew node lease", "node.id", c.cfg.Self, "err", err)
	case was == wire.NodeLost:
		// Its sandboxes' rows were left as they were; the periodic
		// reconcile checks them against the host as ever.
		c.cfg.Log.Warn("this node was marked lost and is back; its sandboxes show again", "node.id", c.cfg.Self)
	}
	lost, err := c.cfg.Store.ExpireNodes(ctx, now)
	if err != nil {
		c.cfg.Log.Error("expire node leases", "err", err)
	}
	for _, id := range lost {
		c.cfg.Log.Warn("node lost: its lease ended; its sandboxes show as lost until it returns", "node.id", id)
	}
	if err := c.refresh(ctx); err != nil {
		c.cfg.Log.Error("read nodes", "err", err)
	}
}

func (c *Cluster) refresh(ctx context.Context) error {
	nodes, err := c.cfg.Store.ListNodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range nodes {
		c.saw(n)
	}
	return nil
}

// NodeState is the state of a node as last read ("" if unknown).
func (c *Cluster) NodeState(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.states[id]
}

// Nodes lists the nodes with what their sandboxes hold.
func (c *Cluster) Nodes(ctx context.Context) ([]wire.Node, error) {
	nodes, err := c.cfg.Store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	alloc, err := c.cfg.Store.Allocations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]wire.Node, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, view(n, alloc[n.ID]))
		c.saw(n)
	}
	return out, nil
}

// Node returns one node.
func (c *Cluster) Node(ctx context.Context, id string) (wire.Node, error) {
	n, err := c.cfg.Store.GetNode(ctx, id)
	if err != nil {
		return wire.Node{}, err
	}
	alloc, err := c.cfg.Store.Allocations(ctx)
	if err != nil {
		return wire.Node{}, err
	}
	c.saw(n)
	return view(n, alloc[n.ID]), nil
}

// saw keeps the state of a node just read, so that views agree with it.
func (c *Cluster) saw(n *store.Node) {
	c.mu.Lock()
	c.states[n.ID] = n.State
	c.mu.Unlock()
}

func view(n *store.Node, a wire.NodeAllocation) wire.Node {
	return wire.Node{ID: n.ID, URL: n.URL, State: n.State, Capacity: n.Capacity, Labels: n.Labels, Allocated: a,
		StartedAt: n.StartedAt, HeartbeatAt: n.HeartbeatAt, LeaseUntil: n.LeaseUntil}
}

// Want is what a new sandbox needs of its node.
type Want struct {
	Image, Runtime string
	CPU            float64
	MemoryMB       int
	DiskMB         int
	// Node, if set, is the only node allowed (a volume's, or asked for).
	Node   string
	Labels map[string]string
}

// ErrNoNode is returned when no node can take a sandbox.
var ErrNoNode = errors.New("no node can take the sandbox")

// Candidates lists the nodes that can take a sandbox, best first: those
// with a warm sandbox of its image, then the least loaded, with a random
// one of the best few first so that concurrent creates spread out.
func (c *Cluster) Candidates(ctx context.Context, w Want) ([]wire.Node, error) {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var fit []wire.Node
	var why []string
	for _, n := range nodes {
		if reason := refuse(n, w, now); reason != "" {
			why = append(why, n.ID+": "+reason)
			continue
		}
		fit = append(fit, n)
	}
	if len(fit) == 0 {
		if len(nodes) == 0 {
			why = append(why, "no node has registered")
		}
		return nil, fmt.Errorf("%w: %v", ErrNoNode, why)
	}
	pooled := func(n wire.Node) bool { return n.Capacity.Pools[w.Image] > 0 }
	sort.SliceStable(fit, func(i, j int) bool {
		if pi, pj := pooled(fit[i]), pooled(fit[j]); pi != pj {
			return pi
		}
		return load(fit[i]) < load(fit[j])
	})
	// Among the best few of equal standing, any one first.
	best := 1
	for best < len(fit) && best < 3 && pooled(fit[best]) == pooled(fit[0]) && load(fit[best]) < load(fit[0])+0.25 {
		best++
	}
	k := rand.IntN(best)
	fit[0], fit[k] = fit[k], fit[0]
	return fit, nil
}

// refuse says why node n cannot take w now ("" if it can).
func refuse(n wire.Node, w Want, now time.Time) string {
	c, a := n.Capacity, n.Allocated
	rt := w.Runtime
	if rt == "" {
		rt = c.DefaultRuntime
	}
	switch {
	case n.State != wire.NodeReady:
		return "it is " + n.State
	case n.LeaseUntil.Before(now):
		return "its lease ended"
	case w.Node != "" && n.ID != w.Node:
		return "not node " + w.Node
	case !slices.Contains(c.Runtimes, rt):
		return "no runtime " + rt
	case w.Image != "" && !slices.Contains(c.Images, w.Image):
		return "no image " + w.Image
	}
	if why := store.Short(c, a, w.CPU, w.MemoryMB, w.DiskMB); why != "" {
		return why
	}
	for k, v := range w.Labels {
		if n.Labels[k] != v {
			return fmt.Sprintf("label %s is not %q", k, v)
		}
	}
	return ""
}

// load is how full a node is: its fullest resource, 0 to 1.
func load(n wire.Node) float64 {
	l := 0.0
	if n.Capacity.CPU > 0 {
		l = max(l, n.Allocated.CPU/n.Capacity.CPU)
	}
	if n.Capacity.MemoryMB > 0 {
		l = max(l, float64(n.Allocated.MemoryMB)/float64(n.Capacity.MemoryMB))
	}
	return l
}

// FromNode says whether r was sent by another node of this cluster.
func (c *Cluster) FromNode(r *http.Request) bool {
	k := r.Header.Get(HeaderKey)
	return k != "" && subtle.ConstantTimeCompare([]byte(k), []byte(c.cfg.Key)) == 1
}

// Forward sends r to node n and its answer back to w: any method,
// streams and WebSockets included. The client's address travels along.
func (c *Cluster) Forward(w http.ResponseWriter, r *http.Request, n *store.Node) {
	c.proxy(n).ServeHTTP(w, r)
}

// Peer reads one node, without what its sandboxes hold: what forwarding
// needs, on the path of every request for another node's sandbox.
func (c *Cluster) Peer(ctx context.Context, id string) (*store.Node, error) {
	n, err := c.cfg.Store.GetNode(ctx, id)
	if err == nil {
		c.saw(n)
	}
	return n, err
}

func (c *Cluster) proxy(n *store.Node) *httputil.ReverseProxy {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.proxies[n.ID+" "+n.URL]; p != nil {
		return p
	}
	target, err := url.Parse(n.URL)
	p := &httputil.ReverseProxy{
		// Exec streams and logs flow as they come.
		FlushInterval: -1,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(HeaderKey, c.cfg.Key)
			pr.Out.Header.Set(HeaderClient, pr.In.RemoteAddr)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			c.cfg.Log.Warn("forward to node", "node.id", n.ID, "err", err)
			writeError(w, http.StatusBadGateway, wire.CodeUnavailable, fmt.Sprintf("node %s, where this sandbox lives, did not answer: %v", n.ID, err))
		},
	}
	if err != nil {
		p.Rewrite = func(pr *httputil.ProxyRequest) {}
	}
	c.proxies[n.ID+" "+n.URL] = p
	return p
}

// Send sends a copy of r with body to node n, marked as placed there, and
// returns the answer unread.
func (c *Cluster) Send(ctx context.Context, r *http.Request, body []byte, n wire.Node) (*http.Response, error) {
	u, err := url.Parse(n.URL)
	if err != nil {
		return nil, fmt.Errorf("node %s's URL %q: %w", n.ID, n.URL, err)
	}
	out := r.Clone(ctx)
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = u.Scheme, u.Host
	out.Body = http.NoBody
	if len(body) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(body))
	}
	out.ContentLength = int64(len(body))
	out.Header.Set(HeaderKey, c.cfg.Key)
	out.Header.Set(HeaderPlaced, n.ID)
	out.Header.Set(HeaderClient, r.RemoteAddr)
	return c.client.Do(out)
}

func writeError(w http.ResponseWriter, status int, code wire.ErrorCode, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(wire.ErrorBody{Error: wire.Error{Code: code, Message: msg}})
}
