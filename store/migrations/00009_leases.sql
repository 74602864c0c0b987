-- Leases for the jobs that run once per cluster (the open-issues gauge, the
-- reconcile schedule's upsert): one row per job, naming the replica that
-- holds it until expires_at. The holder renews it; when it lapses, another
-- replica takes it over.

-- +goose Up
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,      -- host, pid and a random part
    expires_at TIMESTAMP NOT NULL
);

-- +goose Down
DROP TABLE leases;
