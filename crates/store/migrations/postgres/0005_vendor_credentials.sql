-- Vendor credentials that rotate (a Salesforce refresh token with rotation on): one row per
-- connection and credential name, sealed with AES-256-GCM under `[store] token_key` by the
-- gateway (the store never sees the key or the value), shared by every instance and kept across a
-- restart. `version` grows with each write; writes are compare-and-swap on it, so an instance
-- never overwrites a newer credential with the older one it read.
CREATE TABLE vendor_credentials (
    connection TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (connection, name)
);
