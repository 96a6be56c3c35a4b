-- dingbridge store schema (SQLite). Times are Unix epoch milliseconds.
CREATE TABLE inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key   TEXT    NOT NULL UNIQUE,
    event_id    TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    event_json  TEXT    NOT NULL
);

-- state: pending | leased | done | dead.
-- due_at is internal: next_attempt_at while pending, lease_expires_at while leased, NULL when
-- finished, so one partial index answers "what is claimable now" for both cases.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT    NOT NULL,
    flow             TEXT    NOT NULL,
    destination      TEXT    NOT NULL,
    ordering_key     TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    due_at           INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    lease_version    INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    last_error       TEXT,
    receipt          TEXT
);
CREATE INDEX jobs_claim ON jobs (destination, due_at, id) WHERE state IN ('pending', 'leased');
CREATE INDEX jobs_fifo ON jobs (ordering_key, id) WHERE state IN ('pending', 'leased');
CREATE INDEX jobs_event ON jobs (event_id);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER REFERENCES jobs (id),
    event_id    TEXT    NOT NULL,
    destination TEXT,
    reason      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE INDEX dead_letters_job ON dead_letters (job_id);

CREATE TABLE cursors (
    name       TEXT PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE id_links (
    kind       TEXT    NOT NULL,
    left_id    TEXT    NOT NULL,
    right_id   TEXT    NOT NULL,
    data       TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (kind, left_id)
);

-- Append-only, hash-chained. audit_head holds the last seq and hash (the chain anchor), so a
-- deleted or forged last row is detected too.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
