//! Pieces shared by both backends: row mapping, SQL text and the few places their SQL differs.

use crate::{AuditEntry, AuditHead, DeadLetter, IdLink, Job, JobState, StoreError};
use sqlx::{ColumnIndex, Decode, Row, Type};

/// Columns selected for a [`Job`], in the order [`job_from_row`] reads them by name.
pub(crate) const JOB_COLS: &str = "id, event_id, flow, destination, ordering_key, idempotency_key, \
     payload, state, attempts, next_attempt_at, lease_owner, lease_expires_at, lease_version, \
     created_at, last_error";

pub(crate) const DEAD_COLS: &str = "id, job_id, event_id, destination, reason, attempts, created_at";

pub(crate) const AUDIT_COLS: &str = "seq, at, actor, action, subject, detail, prev_hash, hash";

/// The audit head with the time of its row, for [`audit_head_from_row`].
pub(crate) const AUDIT_HEAD_SQL: &str = "SELECT h.seq, h.hash, h.key_id, l.at FROM audit_head h \
     LEFT JOIN audit_log l ON l.seq = h.seq WHERE h.id = 1";

/// The audit head without the row's time, for appends (Postgres adds `FOR UPDATE`).
pub(crate) const AUDIT_HEAD_FOR_APPEND_SQL: &str =
    "SELECT seq, hash, key_id, CAST(NULL AS BIGINT) AS at FROM audit_head WHERE id = 1";

pub(crate) fn parse_state(s: &str) -> Result<JobState, StoreError> {
    Ok(match s {
        "pending" => JobState::Pending,
        "leased" => JobState::Leased,
        "done" => JobState::Done,
        "dead" => JobState::Dead,
        other => return Err(StoreError::Corrupt(format!("unknown job state `{other}`"))),
    })
}

fn attempts(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("attempts out of range: {v}")))
}

pub(crate) fn job_from_row<R>(r: &R) -> Result<Job, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    let state: String = r.try_get("state")?;
    Ok(Job {
        id: r.try_get("id")?,
        event_id: r.try_get("event_id")?,
        flow: r.try_get("flow")?,
        destination: r.try_get("destination")?,
        ordering_key: r.try_get("ordering_key")?,
        idempotency_key: r.try_get("idempotency_key")?,
        payload: r.try_get("payload")?,
        state: parse_state(&state)?,
        attempts: attempts(r.try_get("attempts")?)?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        lease_owner: r.try_get("lease_owner")?,
        lease_expires_at: r.try_get("lease_expires_at")?,
        lease_version: r.try_get("lease_version")?,
        created_at: r.try_get("created_at")?,
        last_error: r.try_get("last_error")?,
    })
}

pub(crate) fn dead_from_row<R>(r: &R) -> Result<DeadLetter, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    Ok(DeadLetter {
        id: r.try_get("id")?,
        job_id: r.try_get("job_id")?,
        event_id: r.try_get("event_id")?,
        destination: r.try_get("destination")?,
        reason: r.try_get("reason")?,
        attempts: attempts(r.try_get("attempts")?)?,
        created_at: r.try_get("created_at")?,
    })
}

pub(crate) fn link_from_row<R>(r: &R) -> Result<IdLink, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    Option<String>: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    Ok(IdLink {
        kind: r.try_get("kind")?,
        left: r.try_get("left_id")?,
        right: r.try_get("right_id")?,
        data: r.try_get("data")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(crate) fn audit_from_row<R>(r: &R) -> Result<AuditEntry, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    Ok(AuditEntry {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        actor: r.try_get("actor")?,
        action: r.try_get("action")?,
        subject: r.try_get("subject")?,
        detail: r.try_get("detail")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

pub(crate) fn audit_head_from_row<R>(r: &R) -> Result<AuditHead, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    i64: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    String: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    Option<String>: Type<R::Database> + for<'r> Decode<'r, R::Database>,
    Option<i64>: Type<R::Database> + for<'r> Decode<'r, R::Database>,
{
    Ok(AuditHead {
        seq: r.try_get("seq")?,
        hash: r.try_get("hash")?,
        at: r.try_get("at")?,
        key_id: r.try_get("key_id")?,
    })
}

/// The SQL the two backends speak differently. Everything else is written once, with `$n`
/// parameters, which both PostgreSQL and sqlx's SQLite driver bind by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The clause that locks the rows a `SELECT` reads until the write transaction ends, so
    /// concurrent writers queue on them. SQLite has none and needs none: a write transaction
    /// holds the database's one write lock from its `BEGIN IMMEDIATE`.
    pub(crate) fn row_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("FOR UPDATE"),
        }
    }
}

/// `$offset+1, $offset+2, ...`: `n` numbered placeholders.
pub(crate) fn params(n: usize, offset: usize) -> String {
    (offset + 1..=offset + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `(p, p, 'lit', p), (...)`: `rows` tuples from a template where `?` is a parameter, numbered
/// `$n` starting after `offset` parameters.
pub(crate) fn values(rows: usize, template: &str, offset: usize) -> String {
    let mut out = String::with_capacity(rows * (template.len() + 8));
    let mut n = offset;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for ch in template.chars() {
            if ch == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(ch);
            }
        }
        out.push(')');
    }
    out
}

/// Rows per multi-row statement (well under SQLite's 32 766 bound parameters).
pub(crate) const CHUNK: usize = 128;

/// Which intakes of a batch are first occurrences of their dedup key within the batch.
pub(crate) fn first_occurrences(batch: &[crate::Intake]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    batch.iter().map(|i| seen.insert(i.dedup_key.as_str())).collect()
}

pub(crate) fn insert_inbox_sql(rows: usize) -> String {
    format!(
        "INSERT INTO inbox (dedup_key, event_id, source, received_at, event_json) VALUES {} \
         ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key",
        values(rows, "?, ?, ?, ?, ?", 0)
    )
}

pub(crate) fn insert_jobs_sql(rows: usize) -> String {
    format!(
        "INSERT INTO jobs (event_id, flow, destination, ordering_key, idempotency_key, payload, \
         state, attempts, next_attempt_at, due_at, lease_version, created_at) VALUES {} \
         ON CONFLICT (idempotency_key) DO NOTHING",
        values(rows, "?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, 0, ?", 0)
    )
}

/// One coalescing job: inserted unless a pending job of the same destination and ordering key
/// waits already. Parameters as [`insert_jobs_sql`], then destination and ordering key again.
pub(crate) const INSERT_COALESCED_JOB_SQL: &str = "INSERT INTO jobs (event_id, flow, destination, ordering_key, \
     idempotency_key, payload, state, attempts, next_attempt_at, due_at, lease_version, created_at) \
     SELECT $1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8, 0, $9 \
     WHERE NOT EXISTS (SELECT 1 FROM jobs w WHERE w.destination = $10 AND w.ordering_key = $11 \
       AND w.state = 'pending') \
     ON CONFLICT (idempotency_key) DO NOTHING";

pub(crate) fn insert_parse_dead_sql(rows: usize) -> String {
    format!(
        "INSERT INTO dead_letters (job_id, event_id, destination, reason, attempts, created_at) \
         VALUES {}",
        values(rows, "NULL, ?, NULL, ?, 0, ?", 0)
    )
}

/// Fenced completion of many leases in one statement; returns the ids it completed.
/// Parameters: `now`, then (job_id, version, receipt) per row.
pub(crate) fn complete_sql(rows: usize) -> String {
    format!(
        "UPDATE jobs SET state = 'done', due_at = NULL, lease_expires_at = NULL, \
         finished_at = $1, receipt = c.column3 \
         FROM (VALUES {}) AS c \
         WHERE jobs.id = c.column1 AND jobs.lease_version = c.column2 AND jobs.state = 'leased' \
         RETURNING jobs.id",
        values(rows, "?, ?, ?", 1)
    )
}

/// True when a completion batch names one job twice (then slots are applied one by one, so
/// each gets the result it would get alone, in order).
pub(crate) fn has_repeated_job(done: &[crate::Completion]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(done.len());
    !done.iter().all(|c| seen.insert(c.lease.job_id))
}
