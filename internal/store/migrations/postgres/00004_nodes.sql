-- Nodes: each warren serve sharing this database, with what it can hold
-- and the lease its heartbeats renew. A sandbox and a volume record the
-- node they live on ('' on a node that shares its database with none).
-- Settings hold what every node must agree on (the preview signing key,
-- the node-to-node key).

-- +goose Up
CREATE TABLE nodes (
	id TEXT PRIMARY KEY,
	url TEXT NOT NULL,
	state TEXT NOT NULL,
	capacity TEXT NOT NULL DEFAULT '{}',
	labels TEXT NOT NULL DEFAULT '{}',
	started_at BIGINT NOT NULL,
	heartbeat_at BIGINT NOT NULL,
	lease_until BIGINT NOT NULL
);
ALTER TABLE sandboxes ADD COLUMN node TEXT NOT NULL DEFAULT '';
CREATE INDEX sandboxes_node_state ON sandboxes(node, state);
ALTER TABLE volumes ADD COLUMN node TEXT NOT NULL DEFAULT '';
CREATE TABLE settings (
	name TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

-- +goose Down
DROP TABLE settings;
ALTER TABLE volumes DROP COLUMN node;
DROP INDEX sandboxes_node_state;
ALTER TABLE sandboxes DROP COLUMN node;
DROP TABLE nodes;
