-- The schema of warren's first releases, which had no schema versions: IF
-- NOT EXISTS lets a data dir they made adopt it unchanged.

-- +goose Up
CREATE TABLE IF NOT EXISTS api_keys (
	id TEXT PRIMARY KEY,
	org TEXT NOT NULL,
	name TEXT NOT NULL,
	hash TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sandboxes (
	id TEXT PRIMARY KEY,
	org TEXT NOT NULL,
	state TEXT NOT NULL,
	runtime TEXT NOT NULL,
	image TEXT NOT NULL,
	spec TEXT NOT NULL,
	metadata TEXT NOT NULL,
	boot_path TEXT NOT NULL DEFAULT '',
	timings TEXT NOT NULL DEFAULT '{}',
	reason TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL DEFAULT 0,
	last_active_at INTEGER NOT NULL DEFAULT 0,
	ended_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sandboxes_org_state ON sandboxes(org, state);

-- +goose Down
DROP INDEX sandboxes_org_state;
DROP TABLE sandboxes;
DROP TABLE api_keys;
