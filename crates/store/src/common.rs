//! Pieces shared by both backends: row mapping and SQL text.

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

/// Placeholder style of a backend.
#[derive(Clone, Copy)]
pub(crate) enum Ph {
    Sqlite,
    Pg,
}

/// `(p, p, 'lit', p), (...)`: `rows` tuples from a template where `?` is a parameter, numbered
/// for Postgres (`$n`, starting after `offset` parameters).
pub(crate) fn values(rows: usize, template: &str, ph: Ph, offset: usize) -> String {
    let mut out = String::with_capacity(rows * (template.len() + 8));
    let mut n = offset;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for ch in template.chars() {
            if ch == '?' {
                match ph {
                    Ph::Sqlite => out.push('?'),
                    Ph::Pg => {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    }
                }
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

pub(crate) fn insert_inbox_sql(rows: usize, ph: Ph) -> String {
    format!(
        "INSERT INTO inbox (dedup_key, event_id, source, received_at, event_json) VALUES {} \
         ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key",
        values(rows, "?, ?, ?, ?, ?", ph, 0)
    )
}

pub(crate) fn insert_jobs_sql(rows: usize, ph: Ph) -> String {
    format!(
        "INSERT INTO jobs (event_id, flow, destination, ordering_key, idempotency_key, payload, \
         state, attempts, next_attempt_at, due_at, lease_version, created_at) VALUES {} \
         ON CONFLICT (idempotency_key) DO NOTHING",
        values(rows, "?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, 0, ?", ph, 0)
    )
}

/// One coalescing job: inserted unless a pending job of the same destination and ordering key
/// waits already. Parameters as [`insert_jobs_sql`], then destination and ordering key again.
pub(crate) fn insert_coalesced_job_sql(ph: Ph) -> String {
    let sql = "INSERT INTO jobs (event_id, flow, destination, ordering_key, idempotency_key, payload, \
         state, attempts, next_attempt_at, due_at, lease_version, created_at) \
         SELECT ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, 0, ? \
         WHERE NOT EXISTS (SELECT 1 FROM jobs w WHERE w.destination = ? AND w.ordering_key = ? \
           AND w.state = 'pending') \
         ON CONFLICT (idempotency_key) DO NOTHING";
    match ph {
        Ph::Sqlite => sql.to_string(),
        Ph::Pg => numbered(sql, 0),
    }
}

/// Followers of freshly claimed heads (batch claims): every due pending job of the heads'
/// ordering keys that is not stuck behind an earlier job not due yet, in id order, leased in the
/// same transaction as the heads. Parameters: owner, lease expiry (twice), destination, now
/// (twice), the `heads` job ids, limit.
pub(crate) fn claim_followers_sql(heads: usize, ph: Ph) -> String {
    let list = vec!["?"; heads].join(", ");
    let pick = format!(
        "SELECT j.id FROM jobs j \
         WHERE j.destination = ? AND j.state = 'pending' AND j.due_at <= ? \
           AND NOT EXISTS ( \
             SELECT 1 FROM jobs b \
             WHERE b.ordering_key = j.ordering_key AND b.state = 'pending' AND b.id < j.id AND b.due_at > ?) \
           AND j.ordering_key IN (SELECT h.ordering_key FROM jobs h WHERE h.id IN ({list})) \
         ORDER BY j.id LIMIT ?"
    );
    match ph {
        Ph::Sqlite => format!(
            "UPDATE jobs SET state = 'leased', lease_owner = ?, lease_expires_at = ?, due_at = ?, \
             lease_version = lease_version + 1 WHERE id IN ({pick}) RETURNING {JOB_COLS}"
        ),
        // Rows another claimer holds are skipped, as in the head claim. The pick's parameters
        // follow the three of the SET clause.
        Ph::Pg => format!(
            "WITH c AS MATERIALIZED ({} FOR UPDATE OF j SKIP LOCKED) \
             UPDATE jobs SET state = 'leased', lease_owner = $1, lease_expires_at = $2, due_at = $3, \
             lease_version = lease_version + 1 FROM c WHERE jobs.id = c.id RETURNING {}",
            numbered(&pick, 3),
            JOB_COLS.split(", ").map(|c| format!("jobs.{}", c.trim())).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `?` placeholders numbered `$n` for Postgres, starting after `offset` parameters.
fn numbered(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = offset;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

pub(crate) fn insert_parse_dead_sql(rows: usize, ph: Ph) -> String {
    format!(
        "INSERT INTO dead_letters (job_id, event_id, destination, reason, attempts, created_at) \
         VALUES {}",
        values(rows, "NULL, ?, NULL, ?, 0, ?", ph, 0)
    )
}

/// Fenced completion of many leases in one statement; returns the ids it completed.
/// Parameters: `now`, then (job_id, version, receipt) per row.
pub(crate) fn complete_sql(rows: usize, ph: Ph) -> String {
    let now = match ph {
        Ph::Sqlite => "?",
        Ph::Pg => "$1",
    };
    format!(
        "UPDATE jobs SET state = 'done', due_at = NULL, lease_expires_at = NULL, \
         finished_at = {now}, receipt = c.column3 \
         FROM (VALUES {}) AS c \
         WHERE jobs.id = c.column1 AND jobs.lease_version = c.column2 AND jobs.state = 'leased' \
         RETURNING jobs.id",
        values(rows, "?, ?, ?", ph, 1)
    )
}

/// True when a completion batch names one job twice (then slots are applied one by one, so
/// each gets the result it would get alone, in order).
pub(crate) fn has_repeated_job(done: &[crate::Completion]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(done.len());
    !done.iter().all(|c| seen.insert(c.lease.job_id))
}
