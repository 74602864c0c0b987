-- Vouchers for review decisions: the admin API and the review desk, having
-- authenticated who decides, write one before they send the decision to the
-- session's workflow, which checks it. A decision sent to Temporal by
-- anyone else (the Temporal UI or CLI) names a principal nobody
-- authenticated, and the workflow refuses it. Ids and principals only.

-- +goose Up
CREATE TABLE decision_vouchers (
    id         TEXT PRIMARY KEY, -- random, 128 bits
    session_id TEXT NOT NULL,
    subject    TEXT NOT NULL,    -- oidc:<sub>, key:<id>, token:admin
    decision   TEXT NOT NULL,    -- approve or reject
    created_at TIMESTAMP NOT NULL,
    -- The review it was taken for (its opening time, as the workflow has
    -- it): a voucher decides one review, never a later one of the session.
    redeemed_for TEXT
);

-- +goose Down
DROP TABLE decision_vouchers;
