-- Workflow runs, so that a run started later (an operator's reset, a
-- restore after a run was terminated) supersedes what earlier runs wrote,
-- whatever its seq: a reset run numbers its transitions again from the
-- reset point. A run is "later" when its first write came later; a session's
-- runs are numbered in that order. Ids only.

-- +goose Up
CREATE TABLE session_runs (
    session_id    TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    ordinal       BIGINT NOT NULL, -- 1, 2, ... in the order of the runs' first writes
    first_seen_at TIMESTAMP NOT NULL,
    PRIMARY KEY (session_id, run_id)
);
CREATE UNIQUE INDEX session_runs_ordinal ON session_runs (session_id, ordinal);

-- The run whose transition the row holds (0: written before runs were kept).
ALTER TABLE sessions ADD COLUMN run_ordinal BIGINT NOT NULL DEFAULT 0;

-- The audit trail keeps each run's transitions: a reset run records the
-- same event ids and keys again, as its own.
CREATE TABLE status_transitions_v2 (
    session_id      TEXT NOT NULL,
    transition_key  TEXT NOT NULL,
    run_id          TEXT NOT NULL DEFAULT '',
    seq             BIGINT NOT NULL,
    event_id        TEXT NOT NULL DEFAULT '',
    from_status     TEXT NOT NULL,
    to_status       TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    last_error_code TEXT NOT NULL DEFAULT '',
    escalation      TEXT NOT NULL,
    note            TEXT NOT NULL DEFAULT '',
    recorded_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (session_id, transition_key, run_id)
);
INSERT INTO status_transitions_v2 (session_id, transition_key, run_id, seq, event_id, from_status, to_status,
                                   attempts, last_error_code, escalation, note, recorded_at)
SELECT session_id, transition_key, '', seq, event_id, from_status, to_status,
       attempts, last_error_code, escalation, note, recorded_at
FROM status_transitions;
DROP TABLE status_transitions;
ALTER TABLE status_transitions_v2 RENAME TO status_transitions;

-- +goose Down
CREATE TABLE status_transitions_v1 (
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
INSERT INTO status_transitions_v1 (session_id, transition_key, seq, event_id, from_status, to_status,
                                   attempts, last_error_code, escalation, note, recorded_at)
SELECT session_id, transition_key, MAX(seq), MAX(event_id), MAX(from_status), MAX(to_status),
       MAX(attempts), MAX(last_error_code), MAX(escalation), MAX(note), MIN(recorded_at)
FROM status_transitions GROUP BY session_id, transition_key;
DROP TABLE status_transitions;
ALTER TABLE status_transitions_v1 RENAME TO status_transitions;
ALTER TABLE sessions DROP COLUMN run_ordinal;
DROP INDEX session_runs_ordinal;
DROP TABLE session_runs;
