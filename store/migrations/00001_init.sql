-- One schema for PostgreSQL and SQLite: portable types, no auto-increment,
-- timestamps in UTC. Columns marked PII are purged on redaction.

-- +goose Up
CREATE TABLE sessions (
    session_id          TEXT PRIMARY KEY,
    status              TEXT NOT NULL DEFAULT 'new',
    stripe_status       TEXT NOT NULL DEFAULT '',
    session_type        TEXT NOT NULL DEFAULT '',
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_error_code     TEXT NOT NULL DEFAULT '',
    last_error_reason   TEXT NOT NULL DEFAULT '',
    escalation          TEXT NOT NULL DEFAULT 'none',
    -- seq orders the workflow's transitions so a late retry never regresses a row.
    seq                 BIGINT NOT NULL DEFAULT 0,
    client_reference_id TEXT,
    contact_email       TEXT, -- PII
    expected_first_name TEXT, -- PII
    expected_last_name  TEXT, -- PII
    expected_dob        TEXT, -- PII, YYYY-MM-DD
    redacted_at         TIMESTAMP,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL
);

-- The ledger of Stripe events that took effect, per session.
CREATE TABLE processed_events (
    session_id   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    processed_at TIMESTAMP NOT NULL,
    PRIMARY KEY (session_id, event_id)
);

-- The audit trail: every status transition, keyed so a retried write is a no-op.
CREATE TABLE status_transitions (
    session_id      TEXT NOT NULL,
    transition_key  TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    event_id        TEXT NOT NULL DEFAULT '',
    from_status     TEXT NOT NULL,
    to_status       TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    last_error_code TEXT NOT NULL DEFAULT '',
    escalation      TEXT NOT NULL,
    note            TEXT NOT NULL DEFAULT '',
    recorded_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (session_id, transition_key)
);

-- The ledger of emails by idempotency key (session, kind, attempt).
CREATE TABLE emails (
    idempotency_key TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL, -- sent, skipped, refused
    detail          TEXT NOT NULL DEFAULT '',
    recorded_at     TIMESTAMP NOT NULL
);
CREATE INDEX emails_session ON emails (session_id);

-- Manual review cases: one per session.
CREATE TABLE review_cases (
    session_id        TEXT PRIMARY KEY,
    reason            TEXT NOT NULL,
    mismatched_fields TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL, -- open, approved, rejected, closed
    reviewer          TEXT NOT NULL DEFAULT '',
    note              TEXT NOT NULL DEFAULT '',
    opened_at         TIMESTAMP NOT NULL,
    decided_at        TIMESTAMP
);

-- +goose Down
DROP TABLE review_cases;
DROP INDEX emails_session;
DROP TABLE emails;
DROP TABLE status_transitions;
DROP TABLE processed_events;
DROP TABLE sessions;
