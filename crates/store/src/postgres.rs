//! PostgreSQL backend (scale-out): several gateway processes share one database. Claims use
//! `FOR UPDATE SKIP LOCKED`; ingests are serialised per schema by an advisory transaction lock
//! so job ids of one ordering key are committed in id order (per-key FIFO across instances);
//! audit appends serialise on the `audit_head` row lock, so the chain never forks.

use crate::audit::{extend_chain, ChainVerifier};
use crate::common::{
    audit_from_row, audit_head_from_row, claim_followers_sql, complete_sql, dead_from_row, first_occurrences,
    has_repeated_job, insert_coalesced_job_sql, insert_inbox_sql, insert_jobs_sql, insert_parse_dead_sql, job_from_row,
    link_from_row, values, Ph, AUDIT_COLS, AUDIT_HEAD_FOR_APPEND_SQL, AUDIT_HEAD_SQL, CHUNK, DEAD_COLS, JOB_COLS,
};
use crate::{
    AuditEntry, AuditHead, AuditKey, AuditVerification, Completion, DeadLetter, IdLink, Intake, IntakeOutcome, Job,
    Lease, Millis, NewAuditEntry, Store, StoreError, StoreStats,
};
use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, Row};
use std::str::FromStr;
use std::time::Duration;

const PH: Ph = Ph::Pg;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const BEGIN_WRITE: &str = "BEGIN";

pub struct PgStore {
    pool: PgPool,
    /// Same database with `synchronous_commit = off`, for leases, completions and retries:
    /// losing one of those to a database crash only repeats a delivery (at-least-once), and it
    /// keeps a WAL flush out of every event's path. Intake, replays, cursors, links and the audit
    /// chain stay on the synchronous pool.
    unsynced: PgPool,
    /// Hashes the audit rows this handle appends and verifies; `None`: an unkeyed chain.
    audit_key: Option<AuditKey>,
}

impl PgStore {
    /// Connect, create `schema` if given and missing, use it as `search_path` on every pooled
    /// connection, and migrate (`_sqlx_migrations` lands in that schema too).
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl { url: url.to_owned(), reason };
        let mut opts = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
        if let Some(schema) = schema {
            let valid = !schema.is_empty()
                && schema.len() <= 63
                && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !schema.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(bad(format!("schema `{schema}` must match [a-z_][a-z0-9_]* (at most 63 characters)")));
            }
            let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
            let created = conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await;
            if let Err(e) = created {
                // Two openers racing on CREATE SCHEMA IF NOT EXISTS: the loser sees a unique
                // violation although the schema now exists.
                let exists = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
                    .bind(schema)
                    .fetch_optional(&mut conn)
                    .await?
                    .is_some();
                if !exists {
                    return Err(e.into());
                }
            }
            conn.close().await?;
            opts = opts.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        let unsynced = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.options([("synchronous_commit", "off")]))
            .await?;
        Ok(Self { pool, unsynced, audit_key: None })
    }

    /// This handle appends and verifies audit rows with `key` (see [`crate::open_with_audit_key`]).
    pub fn with_audit_key(mut self, key: Option<AuditKey>) -> Self {
        self.audit_key = key;
        self
    }

    /// The connection pool, for tests and admin tooling.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Leases the claimable heads: see [`Store::claim`]. Parameters $1 owner, $2 lease expiry,
/// $3 destination, $4 now, $5 limit.
fn head_claim_sql() -> String {
    format!(
        "WITH c AS MATERIALIZED ( \
           SELECT j.id AS cid FROM jobs j \
           WHERE j.destination = $3 AND j.state IN ('pending', 'leased') AND j.due_at <= $4 \
             AND NOT EXISTS ( \
               SELECT 1 FROM jobs b \
               WHERE b.ordering_key = j.ordering_key AND b.state IN ('pending', 'leased') \
                 AND b.id <> j.id \
                 AND (b.state = 'leased' OR (b.id < j.id AND j.state = 'pending'))) \
           ORDER BY j.due_at, j.id LIMIT $5 \
           FOR UPDATE OF j SKIP LOCKED) \
         UPDATE jobs SET state = 'leased', lease_owner = $1, lease_expires_at = $2, \
         due_at = $2, lease_version = lease_version + 1 \
         FROM c WHERE jobs.id = c.cid \
         RETURNING {JOB_COLS}"
    )
}

fn lease_lost(lease: Lease) -> StoreError {
    StoreError::LeaseLost { job_id: lease.job_id, version: lease.version }
}

fn lim(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl Store for PgStore {
    async fn ingest(&self, batch: &[Intake]) -> Result<Vec<IntakeOutcome>, StoreError> {
        let mut out = Vec::with_capacity(batch.len());
        if batch.is_empty() {
            return Ok(out);
        }
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        // Serialise ingests of this schema: ids are then committed in id order, so a claimer
        // never sees job n+1 of a key before job n exists.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1)").execute(&mut *tx).await?;
        // Multi-row statements: a 256-intake batch is a handful of statements, one commit.
        let first = first_occurrences(batch);
        let mut accepted = std::collections::HashSet::new();
        let fresh: Vec<&Intake> = batch.iter().zip(&first).filter(|(_, f)| **f).map(|(i, _)| i).collect();
        for chunk in fresh.chunks(CHUNK) {
            let sql = insert_inbox_sql(chunk.len(), PH);
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
            sqlx::query(&insert_coalesced_job_sql(PH))
                .bind(&it.event_id)
                .bind(&j.flow)
                .bind(&j.destination)
                .bind(&j.ordering_key)
                .bind(&j.idempotency_key)
                .bind(&j.payload)
                .bind(j.next_attempt_at)
                .bind(j.next_attempt_at)
                .bind(it.received_at)
                .bind(&j.destination)
                .bind(&j.ordering_key)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in jobs.chunks(CHUNK) {
            let sql = insert_jobs_sql(chunk.len(), PH);
            let mut q = sqlx::query(&sql);
            for (it, j) in chunk {
                q = q
                    .bind(&it.event_id)
                    .bind(&j.flow)
                    .bind(&j.destination)
                    .bind(&j.ordering_key)
                    .bind(&j.idempotency_key)
                    .bind(&j.payload)
                    .bind(j.next_attempt_at)
                    .bind(j.next_attempt_at)
                    .bind(it.received_at);
            }
            let r = q.execute(&mut *tx).await?;
            if r.rows_affected() < chunk.len() as u64 {
                tracing::warn!(
                    skipped = chunk.len() as u64 - r.rows_affected(),
                    "Jobs skipped: a job with the same idempotency key already exists."
                );
            }
        }
        for chunk in dead.chunks(CHUNK) {
            let sql = insert_parse_dead_sql(chunk.len(), PH);
            let mut q = sqlx::query(&sql);
            for (it, dl) in chunk {
                q = q.bind(&it.event_id).bind(&dl.reason).bind(it.received_at);
            }
            q.execute(&mut *tx).await?;
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
        // One statement: candidates are locked with SKIP LOCKED (another claimer holding a row
        // lock skips it; a row changed by a committed claimer is re-checked against the new
        // version), then leased.
        let sql = head_claim_sql();
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(now.saturating_add(lease_ms))
            .bind(destination)
            .bind(now)
            .bind(lim(limit))
            .fetch_all(&self.unsynced)
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
        let mut tx = self.unsynced.begin_with(BEGIN_WRITE).await?;
        let rows = sqlx::query(&head_claim_sql())
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
            let sql = claim_followers_sql(heads.len(), PH);
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
        let mut tx = self.unsynced.begin_with(BEGIN_WRITE).await?;
        if has_repeated_job(done) {
            // Rare: apply slot by slot so each gets the result it would get in order.
            for c in done {
                let sql = complete_sql(1, PH);
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
                let sql = complete_sql(chunk.len(), PH);
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
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempts = attempts + 1, next_attempt_at = $1, \
             due_at = $1, last_error = $2, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $3 AND state = 'leased' AND lease_version = $4",
        )
        .bind(next)
        .bind(error)
        .bind(lease.job_id)
        .bind(lease.version)
        .execute(&self.unsynced)
        .await?;
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err(lease_lost(lease))
        }
    }

    async fn dead_letter(&self, lease: Lease, reason: &str, now: Millis) -> Result<(), StoreError> {
        let mut tx = self.unsynced.begin_with(BEGIN_WRITE).await?;
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

    async fn release(&self, lease: Lease, _now: Millis) -> Result<(), StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', due_at = next_attempt_at, lease_owner = NULL, \
             lease_expires_at = NULL \
             WHERE id = $1 AND state = 'leased' AND lease_version = $2",
        )
        .bind(lease.job_id)
        .bind(lease.version)
        .execute(&self.unsynced)
        .await?;
        if r.rows_affected() == 1 {
            Ok(())
        } else {
            Err(lease_lost(lease))
        }
    }

    async fn list_dead(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {DEAD_COLS} FROM dead_letters ORDER BY id DESC LIMIT $1"))
            .bind(lim(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(dead_from_row).collect()
    }

    async fn replay_dead(&self, job_id: i64, now: Millis) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'pending', next_attempt_at = $1, due_at = $1, \
             lease_owner = NULL, lease_expires_at = NULL, finished_at = NULL \
             WHERE id = $2 AND state = 'dead'",
        )
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
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
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        let mut ids: Vec<i64> = sqlx::query(
            "UPDATE jobs SET state = 'pending', next_attempt_at = $1, due_at = $1, \
             lease_owner = NULL, lease_expires_at = NULL, finished_at = NULL \
             WHERE state = 'dead' AND id = ANY($2) RETURNING id",
        )
        .bind(now)
        .bind(job_ids)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        if !ids.is_empty() {
            sqlx::query("DELETE FROM dead_letters WHERE job_id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        ids.sort_unstable();
        Ok(ids)
    }

    async fn drop_dead(&self, dead_letter_id: i64) -> Result<(), StoreError> {
        let r = sqlx::query("DELETE FROM dead_letters WHERE id = $1").bind(dead_letter_id).execute(&self.pool).await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound { what: "dead letter", id: dead_letter_id.to_string() });
        }
        Ok(())
    }

    async fn get_cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        let row =
            sqlx::query("SELECT value FROM cursors WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some(r.try_get("value")?),
            None => None,
        })
    }

    async fn put_cursor(&self, name: &str, value: &str, now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn put_link(&self, link: &IdLink) -> Result<(), StoreError> {
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
        .execute(&self.pool)
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
        .fetch_optional(&self.pool)
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
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(link_from_row).collect()
    }

    async fn audit_append_many(&self, entries: &[NewAuditEntry]) -> Result<Vec<AuditEntry>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.audit_key.as_ref();
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        // The row lock on the head serialises appends: the chain never forks.
        let sql = format!("{AUDIT_HEAD_FOR_APPEND_SQL} FOR UPDATE");
        let head = audit_head_from_row(&sqlx::query(&sql).fetch_one(&mut *tx).await?)?;
        head.check_key(key)?;
        let rows = extend_chain(&head, entries, key);
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) VALUES {}",
                values(chunk.len(), "?, ?, ?, ?, ?, ?, ?, ?", PH, 0)
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
        let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
        // Lock the head row first (the join's nullable side cannot be locked), then read it whole.
        sqlx::query("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE").execute(&mut *tx).await?;
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
        audit_head_from_row(&sqlx::query(AUDIT_HEAD_SQL).fetch_one(&self.pool).await?)
    }

    async fn audit_list(&self, since: Millis, after_seq: i64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLS} FROM audit_log WHERE at >= $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(since)
        .bind(after_seq)
        .bind(lim(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_verify(&self) -> Result<AuditVerification, StoreError> {
        // One snapshot for the head and the rows.
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
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
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
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
        tx.rollback().await?;
        s.oldest_pending_age_ms = oldest.map_or(0, |m| (now - m).max(0));
        Ok(s)
    }

    async fn get_job(&self, job_id: i64) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1"))
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn jobs_for_event(&self, event_id: &str) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs WHERE event_id = $1 ORDER BY id"))
            .bind(event_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn close(&self) {
        self.unsynced.close().await;
        self.pool.close().await;
    }
}
