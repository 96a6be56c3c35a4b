//! The one [`Store`] implementation, over either backend. A [`Backend`] owns the connections
//! (which pool serves a read, a synced write, an unsynced write), how a write transaction
//! starts, and its own locks; [`Dialect`] names the few statements whose SQL differs (the claim
//! queries in `claim.rs`, row locks). Every other statement is written once, with `$n`
//! parameters.

use crate::audit::{extend_chain, ChainVerifier};
use crate::claim;
use crate::common::{
    audit_from_row, audit_head_from_row, complete_sql, dead_from_row, first_occurrences, has_repeated_job,
    insert_inbox_sql, insert_jobs_sql, insert_parse_dead_sql, job_from_row, link_from_row, params, values, Dialect,
    AUDIT_COLS, AUDIT_HEAD_FOR_APPEND_SQL, AUDIT_HEAD_SQL, CHUNK, DEAD_COLS, INSERT_COALESCED_JOB_SQL, JOB_COLS,
};
use crate::pacing;
use crate::{
    AuditEntry, AuditHead, AuditKey, AuditVerification, Completion, CursorUpdate, DeadLetter, IdLink, Intake,
    IntakeOutcome, Job, Lease, Millis, NewAuditEntry, PacingAnswer, Pruned, Store, StoreError, StoreStats,
    StoredCredential, TaskLease,
};
use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::{ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};
use std::future::Future;

/// How durable a write must be when the machine (not just the process) fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed on commit: intake before its 2xx, replays, cursors, links, the audit chain.
    Synced,
    /// Not flushed on commit of its own (the next synced commit flushes it): leases,
    /// completions, retries. Losing one to a power cut or a database crash only repeats a
    /// delivery, which at-least-once already allows, and it keeps a flush out of every event's
    /// path.
    Unsynced,
}

/// The connections of one backend and what its transactions need. Implemented by
/// [`crate::SqlitePools`] and [`crate::PgPools`].
pub trait Backend: Send + Sync + 'static {
    type Db: Database;

    /// Which SQL this backend speaks where the two differ.
    const DIALECT: Dialect;

    /// Starts every write transaction.
    const BEGIN_WRITE: &'static str;

    /// Starts a read-only transaction whose statements all see one snapshot.
    const BEGIN_SNAPSHOT: &'static str;

    /// Run first in every ingest transaction, when the backend needs ingests serialised.
    const INGEST_LOCK: Option<&'static str>;

    /// A connection for a write as durable as `durability` asks.
    fn write_conn(
        &self,
        durability: Durability,
    ) -> impl Future<Output = Result<PoolConnection<Self::Db>, StoreError>> + Send;

    /// The pool reads go to.
    fn read_pool(&self) -> &Pool<Self::Db>;

    /// Rows a statement changed (sqlx has no trait for it).
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// Close every pool.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A store on one backend: [`crate::SqliteStore`] or [`crate::PgStore`].
pub struct SqlStore<B> {
    pub(crate) backend: B,
    /// Hashes the audit rows this handle appends and verifies; `None`: an unkeyed chain.
    audit_key: Option<AuditKey>,
}

impl<B> SqlStore<B> {
    pub(crate) fn new(backend: B) -> Self {
        Self { backend, audit_key: None }
    }

    /// This handle appends and verifies audit rows with `key` (see [`crate::open_with_audit_key`]).
    pub fn with_audit_key(mut self, key: Option<AuditKey>) -> Self {
        self.audit_key = key;
        self
    }
}

fn lease_lost(lease: Lease) -> StoreError {
    StoreError::LeaseLost { job_id: lease.job_id, version: lease.version }
}

/// Binds one job's row in the column order `insert_jobs_sql` and `INSERT_COALESCED_JOB_SQL`
/// share: event, flow, destination, ordering key, idempotency key, payload, next attempt and
/// due (both the job's first due time), created.
fn bind_job<'q, DB>(
    q: sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>,
    it: &'q Intake,
    j: &'q crate::NewJob,
) -> sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>
where
    DB: Database,
    String: Type<DB> + Encode<'q, DB>,
    i64: Type<DB> + Encode<'q, DB>,
{
    q.bind(&it.event_id)
        .bind(&j.flow)
        .bind(&j.destination)
        .bind(&j.ordering_key)
        .bind(&j.idempotency_key)
        .bind(&j.payload)
        .bind(j.next_attempt_at)
        .bind(j.next_attempt_at)
        .bind(it.received_at)
}

fn lim(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

const PUT_CURSOR_SQL: &str = "INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at";

// The bounds say what sqlx must do for the backend's database: run queries on a connection,
// bind and decode the types the store uses, and find columns by name.
#[async_trait]
impl<B> Store for SqlStore<B>
where
    B: Backend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'a> &'a str: ColumnIndex<<B::Db as Database>::Row>,
    for<'q> &'q str: Type<B::Db> + Encode<'q, B::Db>,
    for<'q, 'r> String: Type<B::Db> + Encode<'q, B::Db> + Decode<'r, B::Db>,
    for<'q, 'r> i64: Type<B::Db> + Encode<'q, B::Db> + Decode<'r, B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db>,
{
    async fn ingest_with_cursor(
        &self,
        batch: &[Intake],
        cursor: Option<&CursorUpdate>,
    ) -> Result<Vec<IntakeOutcome>, StoreError> {
        let mut out = Vec::with_capacity(batch.len());
        if batch.is_empty() && cursor.is_none() {
            return Ok(out);
        }
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        if let Some(lock) = B::INGEST_LOCK {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        // Multi-row statements: a 256-intake batch is a handful of statements, one commit.
        let first = first_occurrences(batch);
        let mut accepted = std::collections::HashSet::new();
        let fresh: Vec<&Intake> = batch.iter().zip(&first).filter(|(_, f)| **f).map(|(i, _)| i).collect();
        for chunk in fresh.chunks(CHUNK) {
            let sql = insert_inbox_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for it in chunk {
                q = q.bind(&it.dedup_key).bind(&it.event_id).bind(&it.source).bind(it.received_at).bind(&it.event_json);
            }
            for row in q.fetch_all(&mut *tx).await? {
                accepted.insert(row.try_get::<String, _>("dedup_key")?);
            }
        }
        let mut jobs = Vec::new();
        let mut dead = Vec::new();
        for (it, first) in batch.iter().zip(&first) {
            if *first && accepted.contains(&it.dedup_key) {
                out.push(IntakeOutcome::Accepted);
                jobs.extend(it.jobs.iter().map(|j| (it, j)));
                if let Some(dl) = &it.dead_letter {
                    dead.push((it, dl));
                }
            } else {
                out.push(IntakeOutcome::Duplicate);
            }
        }
        let (coalesced, jobs): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|(_, j)| j.coalesce);
        for (it, j) in &coalesced {
            bind_job(sqlx::query(INSERT_COALESCED_JOB_SQL), it, j)
                .bind(&j.destination)
                .bind(&j.ordering_key)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in jobs.chunks(CHUNK) {
            let sql = insert_jobs_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for (it, j) in chunk {
                q = bind_job(q, it, j);
            }
            let inserted = B::rows_affected(&q.execute(&mut *tx).await?);
            if inserted < chunk.len() as u64 {
                tracing::warn!(
                    skipped = chunk.len() as u64 - inserted,
                    "Jobs skipped: a job with the same idempotency key already exists."
                );
            }
        }
        for chunk in dead.chunks(CHUNK) {
            let sql = insert_parse_dead_sql(chunk.len());
            let mut q = sqlx::query(&sql);
            for (it, dl) in chunk {
                q = q.bind(&it.event_id).bind(&dl.reason).bind(it.received_at);
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(cursor) = cursor {
            sqlx::query(PUT_CURSOR_SQL)
                .bind(&cursor.name)
                .bind(&cursor.value)
                .bind(cursor.updated_at)
                .execute(&mut *tx)
                .await?;
        }
        crashpoint::hit(crashpoint::MID_GROUP_COMMIT);
        tx.commit().await?;
        Ok(out)
    }

    async fn claim(
        &self,
        destination: &str,
        owner: &str,
        limit: usize,
        lease_ms: i64,
        now: Millis,
    ) -> Result<Vec<Job>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One statement, its own implicit transaction.
        let sql = claim::heads_sql(B::DIALECT);
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(destination)
            .bind(now)
            .bind(lim(limit))
            .fetch_all(&mut *conn)
            .await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    async fn claim_runs(
        &self,
        destination: &str,
        owner: &str,
        heads: usize,
        max_jobs: usize,
        lease_ms: i64,
        now: Millis,
    ) -> Result<Vec<Job>, StoreError> {
        let limit = heads.min(max_jobs);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let expires = now.saturating_add(lease_ms);
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        let rows = sqlx::query(&claim::heads_sql(B::DIALECT))
            .bind(owner)
            .bind(expires)
            .bind(destination)
            .bind(now)
            .bind(lim(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>, _>>()?;
        let head_ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        for heads in head_ids.chunks(CHUNK) {
            let room = max_jobs.saturating_sub(jobs.len());
            if room == 0 {
                break;
            }
            let sql = claim::followers_sql(heads.len(), B::DIALECT);
            let mut q = sqlx::query(&sql).bind(owner).bind(expires).bind(expires).bind(destination).bind(now).bind(now);
            for id in heads {
                q = q.bind(id);
            }
            for row in q.bind(lim(room)).fetch_all(&mut *tx).await? {
                jobs.push(job_from_row(&row)?);
            }
        }
        tx.commit().await?;
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    async fn complete(&self, done: &[Completion], now: Millis) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(done.len());
        if done.is_empty() {
            return Ok(out);
        }
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        if has_repeated_job(done) {
            // Rare: apply slot by slot so each gets the result it would get in order.
            for c in done {
                let sql = complete_sql(1);
                let r = sqlx::query(&sql)
                    .bind(now)
                    .bind(c.lease.job_id)
                    .bind(c.lease.version)
                    .bind(&c.receipt)
                    .fetch_optional(&mut *tx)
                    .await?;
                out.push(if r.is_some() { Ok(()) } else { Err(lease_lost(c.lease)) });
            }
        } else {
            let mut completed = std::collections::HashSet::with_capacity(done.len());
            for chunk in done.chunks(CHUNK) {
                let sql = complete_sql(chunk.len());
                let mut q = sqlx::query(&sql).bind(now);
                for c in chunk {
                    q = q.bind(c.lease.job_id).bind(c.lease.version).bind(&c.receipt);
                }
                for row in q.fetch_all(&mut *tx).await? {
                    completed.insert(row.try_get::<i64, _>("id")?);
                }
            }
            out.extend(done.iter().map(|c| {
                if completed.contains(&c.lease.job_id) {
                    Ok(())
                } else {
                    Err(lease_lost(c.lease))
                }
            }));
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn retry_later(
        &self,
        lease: Lease,
        next_attempt_at: Millis,
        error: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let next = next_attempt_at.max(now);
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempts = attempts + 1, next_attempt_at = $1, \
             due_at = $1, last_error = $2, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $3 AND state = 'leased' AND lease_version = $4",
        )
        .bind(next)
        .bind(error)
        .bind(lease.job_id)
        .bind(lease.version)
        .execute(&mut *conn)
        .await?;
        if B::rows_affected(&r) == 1 {
            Ok(())
        } else {
            Err(lease_lost(lease))
        }
    }

    async fn dead_letter(&self, lease: Lease, reason: &str, now: Millis) -> Result<(), StoreError> {
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        let row = sqlx::query(
            "UPDATE jobs SET state = 'dead', attempts = attempts + 1, last_error = $1, \
             due_at = NULL, lease_expires_at = NULL, finished_at = $2 \
             WHERE id = $3 AND state = 'leased' AND lease_version = $4 \
             RETURNING event_id, destination, attempts",
        )
        .bind(reason)
        .bind(now)
        .bind(lease.job_id)
        .bind(lease.version)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Err(lease_lost(lease));
        };
        let event_id: String = row.try_get("event_id")?;
        let destination: String = row.try_get("destination")?;
        let attempts: i64 = row.try_get("attempts")?;
        sqlx::query(
            "INSERT INTO dead_letters (job_id, event_id, destination, reason, attempts, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(lease.job_id)
        .bind(event_id)
        .bind(destination)
        .bind(reason)
        .bind(attempts)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn renew(&self, leases: &[Lease], lease_ms: i64, now: Millis) -> Result<Vec<bool>, StoreError> {
        let mut out = Vec::with_capacity(leases.len());
        if leases.is_empty() {
            return Ok(out);
        }
        let expires = now.saturating_add(lease_ms);
        // Not flushed on its own, like the lease it extends: a renewal lost to a database crash
        // only lets the job be delivered again.
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        for lease in leases {
            let r = sqlx::query(
                "UPDATE jobs SET lease_expires_at = $1, due_at = $1 \
                 WHERE id = $2 AND state = 'leased' AND lease_version = $3",
            )
            .bind(expires)
            .bind(lease.job_id)
            .bind(lease.version)
            .execute(&mut *tx)
            .await?;
            out.push(B::rows_affected(&r) == 1);
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn release(&self, lease: Lease, _now: Millis) -> Result<(), StoreError> {
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', due_at = next_attempt_at, lease_owner = NULL, \
             lease_expires_at = NULL \
             WHERE id = $1 AND state = 'leased' AND lease_version = $2",
        )
        .bind(lease.job_id)
        .bind(lease.version)
        .execute(&mut *conn)
        .await?;
        if B::rows_affected(&r) == 1 {
            Ok(())
        } else {
            Err(lease_lost(lease))
        }
    }

    async fn retry_waiting_now(&self, destination: &str, now: Millis) -> Result<u64, StoreError> {
        // Losing this on a crash only leaves the back-offs as they were: no fsync needed.
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let r = sqlx::query(
            "UPDATE jobs SET next_attempt_at = $1, due_at = $1 \
             WHERE destination = $2 AND state = 'pending' AND due_at > $1",
        )
        .bind(now)
        .bind(destination)
        .execute(&mut *conn)
        .await?;
        Ok(B::rows_affected(&r))
    }

    async fn probe_early(&self, destination: &str, now: Millis) -> Result<bool, StoreError> {
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let r = sqlx::query(
            "UPDATE jobs SET due_at = $1 WHERE id = ( \
               SELECT j.id FROM jobs j WHERE j.destination = $2 AND j.state = 'pending' AND j.due_at > $1 \
               AND EXISTS (SELECT 1 FROM jobs w WHERE w.destination = $2 AND w.state = 'pending' AND w.attempts = 0) \
               ORDER BY j.due_at, j.id LIMIT 1)",
        )
        .bind(now)
        .bind(destination)
        .execute(&mut *conn)
        .await?;
        Ok(B::rows_affected(&r) == 1)
    }

    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {DEAD_COLS} FROM dead_letters ORDER BY id DESC LIMIT $1"))
            .bind(lim(limit))
            .fetch_all(self.backend.read_pool())
            .await?;
        rows.iter().map(dead_from_row).collect()
    }

    async fn replay_dead(&self, job_id: i64, now: Millis) -> Result<(), StoreError> {
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', next_attempt_at = $1, due_at = $1, \
             lease_owner = NULL, lease_expires_at = NULL, finished_at = NULL \
             WHERE id = $2 AND state = 'dead'",
        )
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if B::rows_affected(&r) == 0 {
            return Err(StoreError::NotFound { what: "dead job", id: job_id.to_string() });
        }
        sqlx::query("DELETE FROM dead_letters WHERE job_id = $1").bind(job_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn replay_dead_many(&self, job_ids: &[i64], now: Millis) -> Result<Vec<i64>, StoreError> {
        if job_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        let mut replayed = Vec::new();
        // Id lists in chunks (SQLite has no arrays): one transaction all the same.
        for chunk in job_ids.chunks(CHUNK) {
            let sql = format!(
                "UPDATE jobs SET state = 'pending', next_attempt_at = $1, due_at = $1, \
                 lease_owner = NULL, lease_expires_at = NULL, finished_at = NULL \
                 WHERE state = 'dead' AND id IN ({}) RETURNING id",
                params(chunk.len(), 1)
            );
            let mut q = sqlx::query(&sql).bind(now);
            for id in chunk {
                q = q.bind(id);
            }
            let ids: Vec<i64> =
                q.fetch_all(&mut *tx).await?.iter().map(|r| r.try_get("id")).collect::<Result<_, _>>()?;
            if ids.is_empty() {
                continue;
            }
            let sql = format!("DELETE FROM dead_letters WHERE job_id IN ({})", params(ids.len(), 0));
            let mut q = sqlx::query(&sql);
            for id in &ids {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await?;
            replayed.extend(ids);
        }
        tx.commit().await?;
        replayed.sort_unstable();
        Ok(replayed)
    }

    async fn drop_dead(&self, dead_letter_id: i64) -> Result<(), StoreError> {
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        let r = sqlx::query("DELETE FROM dead_letters WHERE id = $1").bind(dead_letter_id).execute(&mut *conn).await?;
        if B::rows_affected(&r) == 0 {
            return Err(StoreError::NotFound { what: "dead letter", id: dead_letter_id.to_string() });
        }
        Ok(())
    }

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(self.backend.read_pool())
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("value")?),
            None => None,
        })
    }

    async fn take_pacing_permit(
        &self,
        key: &str,
        max: u32,
        window_ms: i64,
        now: Millis,
    ) -> Result<PacingAnswer, StoreError> {
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        sqlx::query(pacing::ENSURE_WINDOW_SQL).bind(key).execute(&mut *tx).await?;
        let window_sql = match B::DIALECT.row_lock() {
            Some(lock) => format!("{} {lock}", pacing::WINDOW_SQL),
            None => pacing::WINDOW_SQL.to_owned(),
        };
        let blocked_until: i64 =
            sqlx::query(&window_sql).bind(key).fetch_one(&mut *tx).await?.try_get("blocked_until")?;
        // Callers read their clock before they wait for the writer, so one can arrive with a time
        // older than a grant already committed (whose caller forgot grants this one still counts
        // in its window). The window is judged, and the grant recorded, at the latest grant time
        // then: grant times follow commit order and no grant leaves the window early.
        let latest: i64 = sqlx::query(pacing::LATEST_SQL).bind(key).fetch_one(&mut *tx).await?.try_get("latest")?;
        let now = now.max(latest);
        sqlx::query(pacing::FORGET_SQL).bind(key).bind(now.saturating_sub(window_ms)).execute(&mut *tx).await?;
        let row = sqlx::query(pacing::COUNT_SQL).bind(key).fetch_one(&mut *tx).await?;
        let (count, oldest): (i64, i64) = (row.try_get("n")?, row.try_get("oldest")?);
        let answer = pacing::decide(max, window_ms, count, oldest, blocked_until, now);
        if answer == PacingAnswer::Granted {
            sqlx::query(pacing::GRANT_SQL).bind(key).bind(now).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(answer)
    }

    async fn block_pacing(&self, key: &str, until: Millis) -> Result<(), StoreError> {
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        sqlx::query(pacing::BLOCK_SQL).bind(key).bind(until).execute(&mut *conn).await?;
        Ok(())
    }

    async fn put_cursor(&self, name: &str, value: &str, now: Millis) -> Result<(), StoreError> {
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        sqlx::query(PUT_CURSOR_SQL).bind(name).bind(value).bind(now).execute(&mut *conn).await?;
        Ok(())
    }

    async fn put_link(&self, link: &IdLink) -> Result<(), StoreError> {
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        sqlx::query(
            "INSERT INTO id_links (kind, left_id, right_id, data, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (kind, left_id) DO UPDATE SET right_id = excluded.right_id, \
             data = excluded.data, updated_at = excluded.updated_at",
        )
        .bind(&link.kind)
        .bind(&link.left)
        .bind(&link.right)
        .bind(&link.data)
        .bind(link.updated_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn get_link(&self, kind: &str, left: &str) -> Result<Option<IdLink>, StoreError> {
        let row = sqlx::query(
            "SELECT kind, left_id, right_id, data, updated_at FROM id_links \
             WHERE kind = $1 AND left_id = $2",
        )
        .bind(kind)
        .bind(left)
        .fetch_optional(self.backend.read_pool())
        .await?;
        row.as_ref().map(link_from_row).transpose()
    }

    async fn list_links(
        &self,
        kind: &str,
        right: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<Vec<IdLink>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, left_id, right_id, data, updated_at FROM id_links \
             WHERE kind = $1 AND ($2 IS NULL OR right_id = $3) AND left_id > $4 \
             ORDER BY left_id LIMIT $5",
        )
        .bind(kind)
        .bind(right)
        .bind(right)
        .bind(after)
        .bind(lim(limit))
        .fetch_all(self.backend.read_pool())
        .await?;
        rows.iter().map(link_from_row).collect()
    }

    async fn audit_append_many(&self, entries: &[NewAuditEntry]) -> Result<Vec<AuditEntry>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.audit_key.as_ref();
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        // Appends serialise on the head (its row lock, or SQLite's one writer): the chain never
        // forks.
        let sql = match B::DIALECT.row_lock() {
            Some(lock) => format!("{AUDIT_HEAD_FOR_APPEND_SQL} {lock}"),
            None => AUDIT_HEAD_FOR_APPEND_SQL.to_owned(),
        };
        let head = audit_head_from_row(&sqlx::query(&sql).fetch_one(&mut *tx).await?)?;
        head.check_key(key)?;
        let rows = extend_chain(&head, entries, key);
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES {}",
                values(chunk.len(), "?, ?, ?, ?, ?, ?, ?, ?", 0)
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.seq)
                    .bind(r.at)
                    .bind(&r.actor)
                    .bind(&r.action)
                    .bind(&r.subject)
                    .bind(&r.detail)
                    .bind(&r.prev_hash)
                    .bind(&r.hash);
            }
            q.execute(&mut *tx).await?;
        }
        let last = rows.last().ok_or_else(|| StoreError::Corrupt("no audit rows to append".into()))?;
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2, key_id = $3 WHERE id = 1")
            .bind(last.seq)
            .bind(&last.hash)
            .bind(head.bound_key_id(key))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn audit_bind_key(&self) -> Result<AuditHead, StoreError> {
        let key = self.audit_key.as_ref();
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        if let Some(lock) = B::DIALECT.row_lock() {
            // Lock the head row first (the join's nullable side cannot be locked), then read it whole.
            sqlx::query(&format!("SELECT 1 FROM audit_head WHERE id = 1 {lock}")).execute(&mut *tx).await?;
        }
        let mut head = audit_head_from_row(&sqlx::query(AUDIT_HEAD_SQL).fetch_one(&mut *tx).await?)?;
        head.check_key(key)?;
        if let (None, Some(key)) = (&head.key_id, key) {
            sqlx::query("UPDATE audit_head SET key_id = $1 WHERE id = 1").bind(key.id()).execute(&mut *tx).await?;
            head.key_id = Some(key.id().to_owned());
        }
        tx.commit().await?;
        Ok(head)
    }

    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        audit_head_from_row(&sqlx::query(AUDIT_HEAD_SQL).fetch_one(self.backend.read_pool()).await?)
    }

    async fn audit_list(&self, since: Millis, after_seq: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE at >= $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(since)
        .bind(after_seq)
        .bind(lim(limit))
        .fetch_all(self.backend.read_pool())
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_verify(&self) -> Result<AuditVerification, StoreError> {
        // One read transaction: the head and the rows come from the same snapshot.
        let mut tx = self.backend.read_pool().begin_with(B::BEGIN_SNAPSHOT).await?;
        let head = audit_head_from_row(&sqlx::query(AUDIT_HEAD_SQL).fetch_one(&mut *tx).await?)?;
        let mut v = match ChainVerifier::start(&head, self.audit_key.as_ref()) {
            Ok(v) => v,
            Err(wrong_key) => {
                tx.rollback().await?;
                return Ok(wrong_key);
            }
        };
        let sql = format!("SELECT {AUDIT_COLS} FROM audit_log ORDER BY seq");
        let mut broken = None;
        {
            let mut rows = sqlx::query(&sql).fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                if let Some(b) = v.feed(&audit_from_row(&row)?) {
                    broken = Some(b);
                    break;
                }
            }
        }
        tx.rollback().await?;
        Ok(broken.unwrap_or_else(|| v.finish(&head)))
    }

    async fn stats(&self, now: Millis) -> Result<StoreStats, StoreError> {
        let mut tx = self.backend.read_pool().begin_with(B::BEGIN_SNAPSHOT).await?;
        let events: i64 = sqlx::query("SELECT count(*) AS n FROM inbox").fetch_one(&mut *tx).await?.try_get("n")?;
        let dead_letters: i64 =
            sqlx::query("SELECT count(*) AS n FROM dead_letters").fetch_one(&mut *tx).await?.try_get("n")?;
        let mut s =
            StoreStats { events: events.max(0) as u64, dead_letters: dead_letters.max(0) as u64, ..Default::default() };
        let rows = sqlx::query("SELECT state, count(*) AS n FROM jobs GROUP BY state").fetch_all(&mut *tx).await?;
        for r in rows {
            let state: String = r.try_get("state")?;
            let n = r.try_get::<i64, _>("n")?.max(0) as u64;
            match crate::common::parse_state(&state)? {
                crate::JobState::Pending => s.pending = n,
                crate::JobState::Leased => s.leased = n,
                crate::JobState::Done => s.done = n,
                crate::JobState::Dead => s.dead = n,
            }
        }
        let oldest: Option<i64> =
            sqlx::query("SELECT min(created_at) AS m FROM jobs WHERE state IN ('pending', 'leased')")
                .fetch_one(&mut *tx)
                .await?
                .try_get("m")?;
        let expired: i64 =
            sqlx::query("SELECT count(*) AS n FROM jobs WHERE state = 'leased' AND lease_expires_at <= $1")
                .bind(now)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
        tx.rollback().await?;
        s.oldest_pending_age_ms = oldest.map_or(0, |m| (now - m).max(0));
        s.lease_expired = expired.max(0) as u64;
        Ok(s)
    }

    async fn get_job(&self, job_id: i64) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))
            .bind(job_id)
            .fetch_optional(self.backend.read_pool())
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs_for_event(&self, event_id: &str) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE event_id = $1 ORDER BY id"))
            .bind(event_id)
            .fetch_all(self.backend.read_pool())
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn acquire_task_lease(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<TaskLease>, StoreError> {
        self.acquire_task_lease_sql(name, owner, ttl_ms, now).await
    }

    async fn renew_task_lease(
        &self,
        lease: &TaskLease,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<TaskLease>, StoreError> {
        self.renew_task_lease_sql(lease, ttl_ms, now).await
    }

    async fn release_task_lease(&self, lease: &TaskLease, now: Millis) -> Result<bool, StoreError> {
        self.release_task_lease_sql(lease, now).await
    }

    async fn prune(&self, cutoff: Millis, limit: usize) -> Result<Pruned, StoreError> {
        self.prune_sql(cutoff, limit).await
    }

    async fn load_credential(&self, connection: &str, name: &str) -> Result<Option<StoredCredential>, StoreError> {
        self.load_credential_sql(connection, name).await
    }

    async fn save_credential(
        &self,
        connection: &str,
        name: &str,
        sealed: &str,
        expected: Option<i64>,
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        self.save_credential_sql(connection, name, sealed, expected, now).await
    }

    async fn close(&self) {
        self.backend.close().await;
    }
}
