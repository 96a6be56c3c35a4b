-- The id of the key the audit chain is written with (HMAC-SHA256 keyed with `[audit] key`), so
-- verifying with another key answers "wrong audit key" instead of "tampered at row 1". NULL: the
-- chain is not keyed (rows were written without a key), or it has no rows and no key yet.
ALTER TABLE audit_head ADD COLUMN key_id TEXT;
