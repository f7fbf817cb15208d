-- Tenancy: organizations with quotas, API keys with scopes and expiry,
-- encrypted secrets, volumes and who mounts them, per-second usage.

-- +goose Up
CREATE TABLE orgs (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	quotas TEXT NOT NULL DEFAULT '{}',
	created_at INTEGER NOT NULL
);
-- Every org that owns something already, and the default one.
INSERT INTO orgs(id, name, created_at)
	SELECT org, org, 0 FROM (SELECT org FROM api_keys UNION SELECT org FROM sandboxes WHERE org != '') WHERE true
	ON CONFLICT DO NOTHING;
INSERT INTO orgs(id, name, created_at) VALUES ('default', 'default', 0) ON CONFLICT DO NOTHING;

ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '["admin"]';
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;
-- bootstrap: the key warren made or WARREN_ADMIN_KEY set; a new one
-- replaces the ones before it.
ALTER TABLE api_keys ADD COLUMN bootstrap INTEGER NOT NULL DEFAULT 0;
UPDATE api_keys SET bootstrap = 1 WHERE org = 'default' AND substr(name, 1, 5) = 'admin';

-- What a sandbox holds, for quotas and usage without reading its spec.
ALTER TABLE sandboxes ADD COLUMN cpu REAL NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN memory_mb INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sandboxes ADD COLUMN disk_mb INTEGER NOT NULL DEFAULT 0;
UPDATE sandboxes SET
	cpu = COALESCE(json_extract(spec, '$.resources.cpu'), 0),
	memory_mb = COALESCE(json_extract(spec, '$.resources.memory_mb'), 0),
	disk_mb = COALESCE(json_extract(spec, '$.resources.disk_mb'), 0);
CREATE INDEX sandboxes_org_created ON sandboxes(org, created_at);

-- A secret's value exists only as AES-256-GCM ciphertext under the
-- master key named by key_id.
CREATE TABLE secrets (
	id TEXT PRIMARY KEY,
	org TEXT NOT NULL,
	name TEXT NOT NULL,
	key_id TEXT NOT NULL,
	nonce BLOB NOT NULL,
	ciphertext BLOB NOT NULL,
	allowed_hosts TEXT NOT NULL DEFAULT '[]',
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,
	UNIQUE (org, name)
);

CREATE TABLE volumes (
	id TEXT PRIMARY KEY,
	org TEXT NOT NULL,
	name TEXT NOT NULL,
	size_mb INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	UNIQUE (org, name)
);
-- A row for each sandbox that mounts a volume, from its create until it
-- ends.
CREATE TABLE volume_mounts (
	volume_id TEXT NOT NULL,
	sandbox_id TEXT NOT NULL,
	read_only INTEGER NOT NULL,
	PRIMARY KEY (volume_id, sandbox_id)
);
CREATE INDEX volume_mounts_sandbox ON volume_mounts(sandbox_id);

-- A period is open (ended_at 0) while its sandbox holds CPU and memory:
-- opened when it starts, resumes or is claimed from a pool, closed in the
-- same transaction that pauses, ends or fails it.
CREATE TABLE usage_periods (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	sandbox_id TEXT NOT NULL,
	org TEXT NOT NULL,
	started_at INTEGER NOT NULL,
	ended_at INTEGER NOT NULL DEFAULT 0,
	cpu REAL NOT NULL,
	memory_mb INTEGER NOT NULL,
	disk_mb INTEGER NOT NULL
);
CREATE INDEX usage_periods_org ON usage_periods(org, started_at);
CREATE INDEX usage_periods_sandbox ON usage_periods(sandbox_id, ended_at);
INSERT INTO usage_periods(sandbox_id, org, started_at, cpu, memory_mb, disk_mb)
	SELECT id, org, CAST(strftime('%s', 'now') AS INTEGER) * 1000, cpu, memory_mb, disk_mb
	FROM sandboxes WHERE state IN ('running', 'pausing', 'forking') AND org != '';

-- +goose Down
DROP TABLE usage_periods;
DROP TABLE volume_mounts;
DROP TABLE volumes;
DROP TABLE secrets;
DROP INDEX sandboxes_org_created;
ALTER TABLE sandboxes DROP COLUMN disk_mb;
ALTER TABLE sandboxes DROP COLUMN memory_mb;
ALTER TABLE sandboxes DROP COLUMN cpu;
ALTER TABLE api_keys DROP COLUMN bootstrap;
ALTER TABLE api_keys DROP COLUMN expires_at;
ALTER TABLE api_keys DROP COLUMN prefix;
ALTER TABLE api_keys DROP COLUMN scopes;
DROP TABLE orgs;
