package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/warrenhq/warren/wire"
)

// The nodes of a cluster.
type (
	Node           = wire.Node
	NodeCapacity   = wire.NodeCapacity
	NodeAllocation = wire.NodeAllocation
	Placement      = wire.Placement
)

// ListNodes lists the nodes sharing the server's store (admin; none for a
// server alone).
func (c *Client) ListNodes(ctx context.Context) ([]Node, error) {
	var out wire.NodeList
	if err := c.call(ctx, http.MethodGet, "/v1/nodes", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Nodes, nil
}

// GetNode returns one node (admin).
func (c *Client) GetNode(ctx context.Context, id string) (*Node, error) {
	var out Node
	return &out, c.call(ctx, http.MethodGet, "/v1/nodes/"+url.PathEscape(id), nil, nil, &out)
}

// DrainNode stops new sandboxes going to a node, whose own run on; with
// drain false it makes the node ready again (admin).
func (c *Client) DrainNode(ctx context.Context, id string, drain bool) (*Node, error) {
	method := http.MethodPost
	if !drain {
		method = http.MethodDelete
	}
	var out Node
	return &out, c.call(ctx, method, "/v1/nodes/"+url.PathEscape(id)+"/drain", nil, nil, &out)
}

// ForgetNode removes a lost node for good; its sandboxes that had not
// ended fail (admin).
func (c *Client) ForgetNode(ctx context.Context, id string) (*wire.NodeForgotten, error) {
	var out wire.NodeForgotten
	return &out, c.call(ctx, http.MethodDelete, "/v1/nodes/"+url.PathEscape(id), nil, nil, &out)
}
