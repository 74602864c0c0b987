-- A desk session ends when it has not been used for a while (the desk's
-- idle timeout), as well as at its expiry: when it was last used is kept
-- here, so that every replica agrees.

-- +goose Up
ALTER TABLE desk_sessions ADD COLUMN last_used_at TIMESTAMP;
UPDATE desk_sessions SET last_used_at = created_at;

-- +goose Down
ALTER TABLE desk_sessions DROP COLUMN last_used_at;
