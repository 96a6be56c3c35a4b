-- dingbridge store schema (PostgreSQL). Times are Unix epoch milliseconds.
CREATE TABLE inbox (
    id          BIGSERIAL PRIMARY KEY,
    dedup_key   TEXT    NOT NULL UNIQUE,
    event_id    TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    received_at BIGINT NOT NULL,
    event_json  TEXT    NOT NULL
);

-- state: pending | leased | done | dead.
-- due_at is internal: next_attempt_at while pending, lease_expires_at while leased, NULL when
-- finished, so one partial index answers "what is claimable now" for both cases.
CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    event_id         TEXT    NOT NULL,
    flow             TEXT    NOT NULL,
    destination      TEXT    NOT NULL,
    ordering_key     TEXT    NOT NULL,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    due_at           BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    lease_version    BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    last_error       TEXT,
    receipt          TEXT
);
CREATE INDEX jobs_claim ON jobs (destination, due_at, id) WHERE state IN ('pending', 'leased');
CREATE INDEX jobs_fifo ON jobs (ordering_key, id) WHERE state IN ('pending', 'leased');
CREATE INDEX jobs_event ON jobs (event_id);

CREATE TABLE dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    job_id      BIGINT REFERENCES jobs (id),
    event_id    TEXT    NOT NULL,
    destination TEXT,
    reason      TEXT    NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);
CREATE INDEX dead_letters_job ON dead_letters (job_id);

CREATE TABLE cursors (
    name       TEXT PRIMARY KEY,
    value      TEXT    NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE id_links (
    kind       TEXT    NOT NULL,
    left_id    TEXT    NOT NULL,
    right_id   TEXT    NOT NULL,
    data       TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, left_id)
);

-- Append-only, hash-chained. audit_head holds the last seq and hash (the chain anchor), so a
-- deleted or forged last row is detected too.
CREATE TABLE audit_log (
    seq       BIGINT PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
