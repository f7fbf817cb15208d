-- A node's drain is what its operator asked for, kept apart from its
-- state: a draining node that is lost for a while (stopped, partitioned)
-- comes back draining, not ready.

-- +goose Up
ALTER TABLE nodes ADD COLUMN drain INTEGER NOT NULL DEFAULT 0;
UPDATE nodes SET drain = 1 WHERE state = 'draining';

-- +goose Down
ALTER TABLE nodes DROP COLUMN drain;
