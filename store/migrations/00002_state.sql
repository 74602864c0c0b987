-- The workflow's complete state, as JSON, kept on the session row so a
-- workflow can be restored exactly. No personal data: redaction keeps it.
-- Written with the rest of the row, under the same seq rule.

-- +goose Up
ALTER TABLE sessions ADD COLUMN state TEXT NOT NULL DEFAULT '';

-- +goose Down
-- SQLite has DROP COLUMN since 3.35 (modernc.org/sqlite bundles a newer one).
ALTER TABLE sessions DROP COLUMN state;
