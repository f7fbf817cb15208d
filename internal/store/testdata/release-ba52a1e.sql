-- A database written by warren at ba52a1e (before schema versions):
-- an admin key, a running gVisor sandbox and a deleted runc one.
BEGIN TRANSACTION;
CREATE TABLE api_keys (
	id TEXT PRIMARY KEY,
	org TEXT NOT NULL,
	name TEXT NOT NULL,
	hash TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
);
INSERT INTO "api_keys" VALUES('key_1e892d96dc68','default','admin (WARREN_ADMIN_KEY)','1e892d96dc68b7eb4b64abf192c519685e980c97cc7692f8dae17907b266beee',1795590154049);
CREATE TABLE sandboxes (
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
INSERT INTO "sandboxes" VALUES('sbx_626jfsa7xd3757s6zsmq','default','running','gvisor','busybox','{"resources":{"cpu":1,"memory_mb":1024,"pids":512},"timeout_seconds":0,"idle_timeout_seconds":0,"network":{"egress":"default"}}','{"purpose":"upgrade-fixture"}','cold_boot','{"agent_ms":26,"boot_ms":134,"image_ms":0,"total_ms":161}','',1795590157055,1795590157216,0,1795590157056,0);
INSERT INTO "sandboxes" VALUES('sbx_2y5nim35m46ewbk7bksa','default','deleted','runc','busybox','{"resources":{"cpu":1,"memory_mb":1024,"pids":512},"timeout_seconds":0,"idle_timeout_seconds":0,"network":{"egress":"default"}}','{}','cold_boot','{"agent_ms":10,"boot_ms":63,"image_ms":0,"total_ms":73}','deleted by request',1795590157230,1795590157535,0,1795590157230,1795590157535);
CREATE INDEX sandboxes_org_state ON sandboxes(org, state);
COMMIT;
