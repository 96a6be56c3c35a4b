//! The durable store: inbox (dedup by key), outbox jobs with leases, dead letters, cursors,
//! id links and a hash-chained audit log (HMAC-SHA256 keyed with the operator's audit key; see
//! [`AuditKey`]). One `Store` trait, one implementation ([`SqlStore`]) over two backends
//! (SQLite, PostgreSQL), one contract test suite.
//!
//! Times are Unix epoch milliseconds (`Millis`) passed in by the caller, never read from the
//! system clock here, so schedules can be tested with a fake clock.

pub type Millis = i64;

mod types;
pub use types::*;

mod audit;
mod claim;
mod common;
mod credential;
mod error;
mod group;
mod open;
mod pacing;
mod postgres;
mod sql_store;
mod sqlite;
mod task_lease;

pub use audit::{AnchorCheck, AuditHead, AuditKey, AuditKeyError, MIN_AUDIT_KEY_BYTES, ZERO_HASH};
pub use credential::StoredCredential;
pub use error::StoreError;
pub use group::{intake_bytes, CompletionBatcher, GroupCommitter};
pub use open::{open, open_postgres, open_sqlite, open_with_audit_key};
pub use pacing::PacingAnswer;
pub use postgres::{PgPools, PgStore};
pub use sql_store::SqlStore;
pub use sqlite::{SqlitePools, SqliteStore};
pub use task_lease::{Pruned, TaskLease};

use async_trait::async_trait;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commit a batch of intakes in ONE transaction (group commit). For each intake, in order:
    /// insert the inbox row unless its `dedup_key` exists (then `Duplicate`, no jobs, no dead
    /// letter); otherwise insert its jobs and its optional dead letter. Returns after the commit
    /// is durable.
    async fn ingest(&self, batch: &[Intake]) -> Result<Vec<IntakeOutcome>, StoreError> {
        self.ingest_with_cursor(batch, None).await
    }

    /// [`Store::ingest`] that also writes `cursor` in the same transaction (a poll page and where
    /// the poll got to); with an empty batch only the cursor is written.
    async fn ingest_with_cursor(
        &self,
        batch: &[Intake],
        cursor: Option<&CursorUpdate>,
    ) -> Result<Vec<IntakeOutcome>, StoreError>;

    /// Lease up to `limit` due jobs of one destination for `lease_ms`. A job is claimable when it
    /// is pending with `next_attempt_at <= now`, or leased with an expired lease, AND no earlier
    /// job (lower id) with the same ordering key is pending or leased (per-key FIFO). Each claim
    /// increments `lease_version` (the fencing token). Postgres uses `FOR UPDATE SKIP LOCKED`.
    async fn claim(
        &self,
        destination: &str,
        owner: &str,
        limit: usize,
        lease_ms: i64,
        now: Millis,
    ) -> Result<Vec<Job>, StoreError>;

    /// Batch claim (record writes merged per record): up to `heads` heads as [`Store::claim`]
    /// does, plus, in the same transaction, due pending jobs queued behind those heads under the
    /// same ordering keys (in id order, none behind a job not yet due), `max_jobs` in all, so
    /// one batch can merge several changes to one record while order per key holds. The default
    /// claims heads only.
    async fn claim_runs(
        &self,
        destination: &str,
        owner: &str,
        heads: usize,
        max_jobs: usize,
        lease_ms: i64,
        now: Millis,
    ) -> Result<Vec<Job>, StoreError> {
        let _ = max_jobs;
        self.claim(destination, owner, heads, lease_ms, now).await
    }

    /// Mark leased jobs done. Each lease is fenced: a stale lease yields `LeaseLost` in its slot.
    async fn complete(&self, done: &[Completion], now: Millis) -> Result<Vec<Result<(), StoreError>>, StoreError>;

    /// Failed attempt: attempts += 1, back to pending at `next_attempt_at`, keep `error`.
    async fn retry_later(
        &self,
        lease: Lease,
        next_attempt_at: Millis,
        error: &str,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Give up: attempts += 1, state dead, a dead-letter row with the reason.
    async fn dead_letter(&self, lease: Lease, reason: &str, now: Millis) -> Result<(), StoreError>;

    /// Extend leases still held to `now + lease_ms`, each fenced by its version (the version does
    /// not change: the holder keeps its fencing token). One flag per lease, in order: false
    /// when the lease was lost (the job was reclaimed or settled meanwhile).
    async fn renew(&self, leases: &[Lease], lease_ms: i64, now: Millis) -> Result<Vec<bool>, StoreError>;

    /// Graceful stop: give the job back without counting an attempt.
    async fn release(&self, lease: Lease, now: Millis) -> Result<(), StoreError>;

    /// The destination answers again after an outage: its pending jobs waiting out a back-off
    /// (due after `now`) become due at `now`, attempts kept. Returns how many.
    async fn retry_waiting_now(&self, destination: &str, now: Millis) -> Result<u64, StoreError>;

    /// The destination's breaker is open and nothing is due: make the job whose back-off ends
    /// soonest claimable now (its `next_attempt_at` is kept, so the worker knows the attempt is
    /// early), but only while jobs never tried are waiting (an outage holds work back, not one
    /// job failing on its own). True when one was.
    async fn probe_early(&self, destination: &str, now: Millis) -> Result<bool, StoreError>;

    /// Dead letters, newest first.
    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// Put a dead job back to pending (same idempotency key, attempts kept, due now). Dead letters
    /// of events that never produced a job (parse failures) are not replayable and give NotFound.
    async fn replay_dead(&self, job_id: i64, now: Millis) -> Result<(), StoreError>;

    /// Replay many dead jobs in one transaction (`dlq retry --all`): like `replay_dead` for each id
    /// that is still dead; ids that are not (replayed or dropped meanwhile) are skipped. Returns
    /// the ids replayed, ascending (each gets its own audit row).
    async fn replay_dead_many(&self, job_ids: &[i64], now: Millis) -> Result<Vec<i64>, StoreError>;

    /// Drop a dead letter (the job stays dead, the dead-letter row is removed).
    async fn drop_dead(&self, dead_letter_id: i64) -> Result<(), StoreError>;

    /// Take one send permit of the pacing window `key` (at most `max` grants in any rolling
    /// `window_ms`) at `now`, or learn how long until one is free. Shared by every instance on
    /// this store and kept across restarts; see [`PacingAnswer`].
    async fn take_pacing_permit(
        &self,
        key: &str,
        max: u32,
        window_ms: i64,
        now: Millis,
    ) -> Result<PacingAnswer, StoreError>;

    /// The vendor blocked the key (DingTalk 130101, a 429): grant nothing before `until`, in any
    /// instance. A shorter block never shortens a longer one.
    async fn block_pacing(&self, key: &str, until: Millis) -> Result<(), StoreError>;

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn put_cursor(&self, name: &str, value: &str, now: Millis) -> Result<(), StoreError>;

    /// Links between ids in two systems (e.g. ERP record <-> DingTalk card).
    async fn put_link(&self, link: &IdLink) -> Result<(), StoreError>;
    async fn get_link(&self, kind: &str, left: &str) -> Result<Option<IdLink>, StoreError>;
    /// Links of one kind in `left` order after `after` (exclusive), optionally only those whose
    /// `right` equals `right`: a page of at most `limit`.
    async fn list_links(
        &self,
        kind: &str,
        right: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<Vec<IdLink>, StoreError>;

    /// Append one audit row; its hash covers the previous row's hash (a chain), keyed with this
    /// handle's audit key. See [`Store::audit_append_many`].
    async fn audit_append(&self, entry: &NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let mut rows = self.audit_append_many(std::slice::from_ref(entry)).await?;
        rows.pop().ok_or_else(|| StoreError::Corrupt("appending one audit row returned none".into()))
    }
    /// Append audit rows in order, in one transaction. Rows are hashed with this handle's audit
    /// key (HMAC-SHA256), or plain SHA-256 without one; the first keyed append to an empty chain
    /// binds the key. `AuditKeyMismatch` (nothing written) when the chain is someone else's: a
    /// keyed chain and another key or none, or an unkeyed chain with rows and a key.
    async fn audit_append_many(&self, entries: &[NewAuditEntry]) -> Result<Vec<AuditEntry>, StoreError>;
    /// Bind this handle's audit key to the chain when it has neither rows nor a key yet, so no
    /// writer without the key can start it unkeyed; the gateway does this when it starts. Returns
    /// the head; `AuditKeyMismatch` when the chain belongs to another key (or to none). Without a
    /// key this only checks.
    async fn audit_bind_key(&self) -> Result<AuditHead, StoreError>;
    /// The chain's head: last seq, hash and time, and the id of the key it is written with.
    async fn audit_head(&self) -> Result<AuditHead, StoreError>;
    /// Rows with `at >= since` and `seq > after_seq`, in seq order, at most `limit`: page by
    /// passing the last seq of the previous page.
    async fn audit_list(&self, since: Millis, after_seq: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// Recompute the whole chain with this handle's audit key; report the first row where it
    /// breaks, or `WrongKey` when the chain is written with another key (or none).
    async fn audit_verify(&self) -> Result<AuditVerification, StoreError>;

    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError>;

    /// Look up one job (admin views, tests).
    async fn get_job(&self, job_id: i64) -> Result<Option<Job>, StoreError>;
    /// Jobs of one event, for tests and the admin API.
    async fn jobs_for_event(&self, event_id: &str) -> Result<Vec<Job>, StoreError>;

    /// Take the lease on singleton task `name` for `owner` until `now + ttl_ms`: when the lease
    /// is free, expired, or `owner`'s and still live (then it is extended, same version).
    /// `None` while another owner holds it live. The version grows with each new tenure
    /// (another owner, or `owner` again after its lease lapsed).
    async fn acquire_task_lease(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<TaskLease>, StoreError>;

    /// Extend `lease` to `now + ttl_ms`, fenced: only while the row is still of this tenure
    /// (owner and version; a lapsed lease nobody took since still is). `None` when it changed
    /// hands (or was released): stop the task.
    async fn renew_task_lease(
        &self,
        lease: &TaskLease,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<TaskLease>, StoreError>;

    /// Let `lease` go at once (graceful stop), if it is still this tenure's; true if it was.
    async fn release_task_lease(&self, lease: &TaskLease, now: Millis) -> Result<bool, StoreError>;

    /// Retention, one bounded step in one transaction: delete up to `limit` done jobs finished
    /// before `cutoff`, then up to `limit` inbox rows received before `cutoff` whose event has no
    /// job left and no dead letter. Pending, leased and dead jobs, dead letters and the audit
    /// log are never touched. Call again while a count equals `limit`.
    async fn prune(&self, cutoff: Millis, limit: usize) -> Result<Pruned, StoreError>;

    /// The rotating vendor credential `name` of `connection` (sealed by the gateway), if one was
    /// saved.
    async fn load_credential(&self, connection: &str, name: &str) -> Result<Option<StoredCredential>, StoreError>;

    /// Compare-and-swap save of a rotating vendor credential: with `expected` `None` only if no
    /// row exists yet (version 1), else only if the row is still at version `expected` (then
    /// `expected + 1`). The new version, or `None` when another writer got there first (the
    /// caller reloads; its value is never written over a newer one).
    async fn save_credential(
        &self,
        connection: &str,
        name: &str,
        sealed: &str,
        expected: Option<i64>,
        now: Millis,
    ) -> Result<Option<i64>, StoreError>;

    /// Close the connection pools (graceful shutdown; SQLite checkpoints its WAL). Later calls
    /// fail with `Unavailable`. The default does nothing.
    async fn close(&self) {}
}
