-- Identity and access: who did what (the audit log), the machines' API keys,
-- the review desk's sign-ins and sessions, failure counters shared by every
-- replica, and the marker that freezes a session's expected values.

-- +goose Up
-- The audit log: append-only (no update or delete path in the service; a
-- trigger refuses both, migration 00006). No personal data of the users
-- verified: ids, actions, results.
CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,  -- time-ordered: the row's time and a random tail
    at         TIMESTAMP NOT NULL,
    actor      TEXT NOT NULL,     -- oidc:<sub>, key:<id>, token:admin; '' for an unknown caller
    actor_name TEXT NOT NULL DEFAULT '', -- the person's verified email, or the key's name
    action     TEXT NOT NULL,     -- session.register, review.decide, desk.sign_in, ...
    session_id TEXT NOT NULL DEFAULT '',
    source     TEXT NOT NULL DEFAULT '', -- the caller's address
    result     TEXT NOT NULL,     -- ok, denied, refused, failed
    detail     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_session ON audit_log (session_id, at);
CREATE INDEX audit_log_at ON audit_log (at);

-- API keys of machines: only a hash of the secret is kept.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    scopes      TEXT NOT NULL,    -- comma-separated
    secret_hash TEXT NOT NULL,    -- hex SHA-256 of the whole key
    created_at  TIMESTAMP NOT NULL,
    revoked_at  TIMESTAMP
);

-- Review desk sign-ins under way (state, nonce and PKCE verifier between
-- the redirect to the provider and its callback) and signed-in sessions,
-- each keyed by the SHA-256 of its cookie's value.
CREATE TABLE desk_logins (
    id_hash    TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    verifier   TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE TABLE desk_sessions (
    id_hash    TEXT PRIMARY KEY,
    subject    TEXT NOT NULL,     -- oidc:<sub>
    email      TEXT NOT NULL,     -- as the provider verified it
    roles      TEXT NOT NULL,     -- comma-separated: reviewer, admin
    csrf       TEXT NOT NULL,
    flash      TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX desk_sessions_expiry ON desk_sessions (expires_at);

-- Fixed-window counters (sign-in failures per source and per account,
-- failed bearer authentications): in the database, so replicas share them.
CREATE TABLE rate_limits (
    bucket       TEXT NOT NULL,
    window_start TIMESTAMP NOT NULL,
    hits         INTEGER NOT NULL,
    PRIMARY KEY (bucket, window_start)
);

-- Set by the first transition that leaves new/created/requires_input, or
-- that starts a comparison: from then on the expected values are frozen.
ALTER TABLE sessions ADD COLUMN expected_frozen_at TIMESTAMP;

-- +goose Down
ALTER TABLE sessions DROP COLUMN expected_frozen_at;
DROP TABLE rate_limits;
DROP INDEX desk_sessions_expiry;
DROP TABLE desk_sessions;
DROP TABLE desk_logins;
DROP TABLE api_keys;
DROP INDEX audit_log_at;
DROP INDEX audit_log_session;
DROP TABLE audit_log;
