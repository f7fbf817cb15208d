package wire

import "time"

// Node states.
const (
	// NodeReady takes new sandboxes.
	NodeReady = "ready"
	// NodeDraining takes no new sandboxes; those it has run on.
	NodeDraining = "draining"
	// NodeLost stopped renewing its lease; its sandboxes show StateLost
	// until it returns.
	NodeLost = "lost"
)

// Node is a node of a cluster: one warren serve sharing a PostgreSQL
// store with the others (GET /v1/nodes).
type Node struct {
	ID string `json:"id"`
	// URL is where the other nodes reach it (--advertise-url).
	URL      string            `json:"url"`
	State    string            `json:"state"`
	Capacity NodeCapacity      `json:"capacity"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Allocated is what its sandboxes that hold resources ask for.
	Allocated   NodeAllocation `json:"allocated"`
	StartedAt   time.Time      `json:"started_at"`
	HeartbeatAt time.Time      `json:"heartbeat_at"`
	LeaseUntil  time.Time      `json:"lease_until"`
}

// NodeCapacity is what a node offers. CPU and memory are what the
// sandboxes placed on it may ask for in total (their limits, not their
// use); 0 is no limit.
type NodeCapacity struct {
	CPU      float64  `json:"cpu"`
	MemoryMB int      `json:"memory_mb"`
	DiskMB   int      `json:"disk_mb,omitempty"`
	Runtimes []string `json:"runtimes"`
	// DefaultRuntime is what a create that names none gets there.
	DefaultRuntime string   `json:"default_runtime"`
	Images         []string `json:"images"`
	// Pools are the warm sandboxes ready now, by image.
	Pools map[string]int `json:"pools,omitempty"`
	// Host is the machine itself.
	Host NodeHost `json:"host"`
}

// NodeHost is what a node's machine has.
type NodeHost struct {
	Cores    int `json:"cores"`
	MemoryMB int `json:"memory_mb"`
	// DiskFreeMB is free on the filesystem of its data dir.
	DiskFreeMB int `json:"disk_free_mb"`
}

// NodeAllocation is what a node's sandboxes hold.
type NodeAllocation struct {
	Sandboxes int     `json:"sandboxes"`
	CPU       float64 `json:"cpu"`
	MemoryMB  int     `json:"memory_mb"`
	DiskMB    int     `json:"disk_mb"`
}

// NodeList is the body of GET /v1/nodes.
type NodeList struct {
	Nodes []Node `json:"nodes"`
}

// NodeForgotten is the answer to DELETE /v1/nodes/{id}.
type NodeForgotten struct {
	ID string `json:"id"`
	// SandboxesFailed is how many of its sandboxes that had not ended
	// were failed with it.
	SandboxesFailed int `json:"sandboxes_failed"`
}
