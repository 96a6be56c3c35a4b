//! Pieces shared by both backends: row mapping, the audit hash and the chain verifier.

use crate::{AuditEntry, AuditVerification, DeadLetter, IdLink, Job, JobState, StoreError};
use sha2::{Digest, Sha256};
use sqlx::{ColumnIndex, Decode, Row, Type};

/// `prev_hash` of the first audit row.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Columns selected for a [`Job`], in the order [`job_from_row`] reads them by name.
pub(crate) const JOB_COLS: &str = "id, event_id, flow, destination, ordering_key, idempotency_key, \
     payload, state, attempts, next_attempt_at, lease_owner, lease_expires_at, lease_version, \
     created_at, last_error";

pub(crate) const DEAD_COLS: &str = "id, job_id, event_id, destination, reason, attempts, created_at";

pub(crate) const AUDIT_COLS: &str = "seq, at, actor, action, subject, detail, prev_hash, hash";

/// Hex SHA-256 over `prev_hash, seq, at, actor, action, subject, detail`, each field
/// length-prefixed (u64 big-endian byte length, then the bytes; `seq` and `at` as 8-byte
/// big-endian two's complement), so no two different rows can hash the same input.
pub fn audit_hash(
    prev_hash: &str,
    seq: i64,
    at: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    field(&mut h, prev_hash.as_bytes());
    field(&mut h, &seq.to_be_bytes());
    field(&mut h, &at.to_be_bytes());
    field(&mut h, actor.as_bytes());
    field(&mut h, action.as_bytes());
    field(&mut h, subject.as_bytes());
    field(&mut h, detail.as_bytes());
    hex::encode(h.finalize())
}

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

/// Walks the audit chain in seq order; the first break wins.
pub(crate) struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    rows: u64,
}

impl ChainVerifier {
    pub(crate) fn new() -> Self {
        Self { expected_seq: 1, prev_hash: ZERO_HASH.to_owned(), rows: 0 }
    }

    /// Feed the next row (ascending seq); `Some` is the first break found.
    pub(crate) fn feed(&mut self, e: &AuditEntry) -> Option<AuditVerification> {
        if e.seq != self.expected_seq {
            return Some(AuditVerification::Broken {
                at_seq: self.expected_seq,
                reason: format!(
                    "row {} is missing or out of place (next row found has seq {})",
                    self.expected_seq, e.seq
                ),
            });
        }
        if e.prev_hash != self.prev_hash {
            return Some(AuditVerification::Broken {
                at_seq: e.seq,
                reason: "prev_hash does not match the previous row's hash".into(),
            });
        }
        let h = audit_hash(&e.prev_hash, e.seq, e.at, &e.actor, &e.action, &e.subject, &e.detail);
        if h != e.hash {
            return Some(AuditVerification::Broken {
                at_seq: e.seq,
                reason: "hash does not match the row's contents (row edited)".into(),
            });
        }
        self.prev_hash = h;
        self.expected_seq += 1;
        self.rows += 1;
        None
    }

    /// Compare the end of the chain with the head anchor (last seq and hash).
    pub(crate) fn finish(self, head_seq: i64, head_hash: &str) -> AuditVerification {
        let last = self.expected_seq - 1;
        if last < head_seq {
            return AuditVerification::Broken {
                at_seq: last + 1,
                reason: format!("rows {}..={head_seq} are missing at the end of the chain", last + 1),
            };
        }
        if last > head_seq {
            return AuditVerification::Broken {
                at_seq: head_seq + 1,
                reason: format!("rows after the chain head (seq {head_seq}) were added outside the store"),
            };
        }
        if self.prev_hash != head_hash {
            return AuditVerification::Broken {
                at_seq: last,
                reason: "last row's hash does not match the chain head".into(),
            };
        }
        AuditVerification::Intact { rows: self.rows }
    }
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
