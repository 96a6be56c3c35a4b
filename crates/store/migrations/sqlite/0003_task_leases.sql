-- Leases on singleton tasks (pollers, folder watchers, timers, syncs, the retention sweeper):
-- one instance of several sharing this store runs each. `version` grows with each new tenure
-- (another owner, or the same one after its lease lapsed), so a stale holder's renewal fails.
-- Times are Unix epoch milliseconds.
CREATE TABLE task_leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Retention: the sweeper finds old done jobs and old inbox rows by these, and checks that no
-- dead letter still names an event before pruning its inbox row.
CREATE INDEX jobs_done ON jobs (finished_at) WHERE state = 'done';
CREATE INDEX inbox_received ON inbox (received_at);
CREATE INDEX dead_letters_event ON dead_letters (event_id);
