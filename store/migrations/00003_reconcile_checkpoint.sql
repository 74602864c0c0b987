-- How far reconciliation has read Stripe's Events API: the newest event it
-- has seen, so the next run lists from there (less an overlap) instead of
-- from the start of Stripe's 30 days. Ids and times only.

-- +goose Up
CREATE TABLE reconcile_checkpoints (
    name          TEXT PRIMARY KEY,         -- what is read: 'stripe_identity_events'
    event_created BIGINT NOT NULL,          -- Stripe `created` (Unix seconds) of the newest event seen
    event_id      TEXT NOT NULL,            -- that event
    resume_after  TEXT NOT NULL DEFAULT '', -- set when a run stopped at its page bound: the next run continues after this event
    updated_at    TIMESTAMP NOT NULL
);

-- +goose Down
DROP TABLE reconcile_checkpoints;
