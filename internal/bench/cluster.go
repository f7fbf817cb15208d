package bench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/warrenhq/warren/client"
)

// clusterFigures measures what going through a node other than a
// sandbox's own costs: creates (to first output) and exec round trips on
// one node, sent to that node and sent to another, interleaved sample by
// sample in the same run.
func (o *Options) clusterFigures(ctx context.Context, rep *Report) error {
	nodes, err := o.Client.ListNodes(ctx)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	var ready []client.Node
	for _, n := range nodes {
		if n.State == "ready" {
			ready = append(ready, n)
		}
	}
	if len(ready) < 2 {
		return fmt.Errorf("--cluster needs two ready nodes sharing a store; the server lists %d", len(ready))
	}
	// The entry is the node the client talks to; the owner another.
	entry, owner := ready[0], ready[1]
	for i, n := range ready {
		if strings.TrimSuffix(n.URL, "/") == strings.TrimSuffix(o.Client.BaseURL, "/") {
			entry, owner = n, ready[(i+1)%len(ready)]
		}
	}
	direct := client.New(owner.URL, o.Client.APIKey)
	through := client.New(o.Client.BaseURL, o.Client.APIKey)
	rt := o.Runtimes[0]
	o.logf("cluster: sandboxes on node %s, reached at %s and through node %s at %s", owner.ID, owner.URL, entry.ID, o.Client.BaseURL)
	req := &client.CreateRequest{Image: o.Image, Runtime: rt, Metadata: map[string]string{"warren-bench": "1"},
		Placement: &client.Placement{Node: owner.ID}}
	createToOutput := func(c *client.Client) (time.Duration, error) {
		start := time.Now()
		sb, err := c.CreateSandbox(ctx, req)
		if err != nil {
			return 0, err
		}
		res, err := c.Exec(ctx, sb.ID, &client.ExecRequest{Argv: []string{"echo", "hi"}})
		took := time.Since(start)
		_, _ = c.DeleteSandbox(context.Background(), sb.ID)
		if err != nil || res.Stdout != "hi\n" {
			return 0, fmt.Errorf("first exec: %v %+v", err, res)
		}
		return took, nil
	}
	creates, err := o.measure(func() ([][]time.Duration, error) {
		var viaOwner, viaOther []time.Duration
		for range o.Runs {
			d, err := createToOutput(direct)
			if err != nil {
				return nil, err
			}
			e, err := createToOutput(through)
			if err != nil {
				return nil, err
			}
			viaOwner, viaOther = append(viaOwner, d), append(viaOther, e)
		}
		return [][]time.Duration{viaOther, viaOwner}, nil
	})
	if err != nil {
		return err
	}
	sb, err := direct.CreateSandbox(ctx, req)
	if err != nil {
		return err
	}
	defer direct.DeleteSandbox(context.Background(), sb.ID)
	execs, err := o.measure(func() ([][]time.Duration, error) {
		var viaOwner, viaOther []time.Duration
		for range o.Runs * 5 {
			for _, c := range []*client.Client{direct, through} {
				start := time.Now()
				if _, err := c.Exec(ctx, sb.ID, &client.ExecRequest{Argv: []string{"true"}}); err != nil {
					return nil, err
				}
				if c == direct {
					viaOwner = append(viaOwner, time.Since(start))
				} else {
					viaOther = append(viaOther, time.Since(start))
				}
			}
		}
		return [][]time.Duration{viaOther, viaOwner}, nil
	})
	if err != nil {
		return err
	}
	note := fmt.Sprintf("on node %s, sent through node %s", owner.ID, entry.ID)
	for _, f := range []struct {
		metric string
		st     []Stat
	}{{rt + " cluster create→first output", creates}, {rt + " cluster exec round trip", execs}} {
		row := Row{Metric: f.metric, Warren: f.st[0], Note: note}
		row.addPeer("sent to the owning node", f.st[1])
		rep.Rows = append(rep.Rows, row)
	}
	return nil
}
