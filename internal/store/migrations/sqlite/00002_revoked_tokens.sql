-- Revoked preview tokens, until they would have expired anyway. (Builds
-- between the first releases and schema versions may have made it.)

-- +goose Up
CREATE TABLE IF NOT EXISTS revoked_tokens (
	id TEXT PRIMARY KEY,
	sandbox_id TEXT NOT NULL,
	expires_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE revoked_tokens;
