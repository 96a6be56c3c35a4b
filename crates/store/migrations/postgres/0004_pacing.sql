-- The pacing ledger: sends granted per vendor window (e.g. one DingTalk robot, 20 per minute),
-- shared by every gateway instance on this store and kept across a restart, so N instances
-- together, and one instance before and after a crash, stay under the vendor's limit.
CREATE TABLE pacing_windows (
    key TEXT PRIMARY KEY,
    -- No grant before this time (a vendor's block, e.g. DingTalk's 130101); 0 when none.
    blocked_until BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE pacing_grants (
    key TEXT NOT NULL,
    granted_at BIGINT NOT NULL
);
CREATE INDEX pacing_grants_by_key ON pacing_grants (key, granted_at);
