package serve

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	goruntime "runtime"
	"strings"

	"github.com/warrenhq/warren/internal/cluster"
	"github.com/warrenhq/warren/internal/sandbox"
	"github.com/warrenhq/warren/internal/store"
	"github.com/warrenhq/warren/wire"
)

// clusterNode is this node's part in a cluster: nil for a node alone.
type clusterNode struct {
	cluster  *cluster.Cluster
	self     string
	capacity struct {
		cpu            float64
		memoryMB, disk int
	}
}

func (n *clusterNode) id() string {
	if n == nil {
		return ""
	}
	return n.self
}

// state is nil for a node alone: nothing is ever lost there.
func (n *clusterNode) state() func(string) string {
	if n == nil {
		return nil
	}
	return n.cluster.NodeState
}

// NodeTag is the name a node with an explicit id gives what it makes on
// its host ("" for none): the id, which must be short and plain.
func NodeTag(id string) (string, error) {
	if id == "" {
		return "", nil
	}
	if len(id) > 24 {
		return "", fmt.Errorf("--node-id: %q is longer than 24 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return "", fmt.Errorf("--node-id: %q may hold only a-z, 0-9 and -", id)
		}
	}
	if id[0] == '-' {
		return "", fmt.Errorf("--node-id: %q must not start with -", id)
	}
	return id, nil
}

// nodeID is this node's id in a cluster: the one given, or the hostname.
func nodeID(o Options) string {
	if o.NodeID != "" {
		return o.NodeID
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "node"
	}
	return strings.ToLower(h)
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label: %q is not KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}

// advertiseURL is where the other nodes reach this one. A loopback
// address would send them to themselves, so it is refused.
func advertiseURL(given string, ln net.Listener) (string, error) {
	if given == "" {
		if ln == nil {
			return "", fmt.Errorf("--advertise-url: a node that shares its store must serve the API (--listen) and say where the others reach it")
		}
		addr := ln.Addr().(*net.TCPAddr)
		if addr.IP.IsUnspecified() {
			return "", fmt.Errorf("--advertise-url: warren listens on %s, every address; say which one the other nodes reach it at, like http://10.0.0.5:7070", addr)
		}
		given = "http://" + addr.String()
	}
	u, err := url.Parse(given)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--advertise-url: %q is not an http(s) URL", given)
	}
	host := u.Hostname()
	if host == "localhost" {
		return "", fmt.Errorf("--advertise-url: %q is loopback; the other nodes would reach themselves, not this one", given)
	}
	if ip := net.ParseIP(host); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		return "", fmt.Errorf("--advertise-url: %q is loopback; the other nodes would reach themselves, not this one", given)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

func newClusterNode(ctx context.Context, o Options, st *store.Store, ln net.Listener, labels map[string]string, log *slog.Logger) (*clusterNode, error) {
	adv, err := advertiseURL(o.AdvertiseURL, ln)
	if err != nil {
		return nil, err
	}
	key, err := st.Setting(ctx, "node_key", store.RandomHex(32))
	if err != nil {
		return nil, err
	}
	n := &clusterNode{self: nodeID(o)}
	n.capacity.cpu, n.capacity.memoryMB, n.capacity.disk = o.CapacityCPU, o.CapacityMemoryMB, o.CapacityDiskMB
	if n.capacity.cpu == 0 {
		n.capacity.cpu = 4 * float64(goruntime.NumCPU())
	}
	if n.capacity.memoryMB == 0 {
		n.capacity.memoryMB = 2 * sandbox.HostMemoryMB()
	}
	n.cluster = cluster.New(cluster.Config{Store: st, Self: n.self, URL: adv, Key: key, Labels: labels, Lease: o.NodeLease, Log: log})
	return n, nil
}

// join registers the node with what mgr offers, and keeps offering it.
func (n *clusterNode) join(ctx context.Context, mgr *sandbox.Manager) error {
	n.cluster.SetOffer(func(context.Context) wire.NodeCapacity {
		return mgr.Offer(n.capacity.cpu, n.capacity.memoryMB, n.capacity.disk)
	})
	return n.cluster.Join(ctx)
}
