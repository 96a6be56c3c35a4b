//! The claim queries: which jobs a worker leases, for both dialects, side by side. This is the
//! one place that decides claim order, per-key FIFO and how concurrent claimers keep out of each
//! other's way; see [`crate::Store::claim`] and [`crate::Store::claim_runs`].

use crate::common::{params, Dialect, JOB_COLS};

/// The claimable heads of a destination, in claim order: due pending jobs, and leased jobs
/// whose lease expired, that no other job of their ordering key holds back (per-key FIFO). A job
/// is held back by an earlier job of its key that is still to be done, or by a live lease on its
/// key. An expired lease holds nothing back: after a crash with a batch in flight, its head and
/// followers are all leased with expired leases, and the head is reclaimable. Shared by both
/// dialects so the rule cannot drift. Parameters $3 destination, $4 now, $5 limit.
const HEADS: &str = "FROM jobs j \
     WHERE j.destination = $3 AND j.state IN ('pending', 'leased') AND j.due_at <= $4 \
       AND NOT EXISTS ( \
         SELECT 1 FROM jobs b \
         WHERE b.ordering_key = j.ordering_key AND b.state IN ('pending', 'leased') \
           AND b.id <> j.id \
           AND (b.id < j.id OR (b.state = 'leased' AND b.lease_expires_at > $4))) \
     ORDER BY j.due_at, j.id LIMIT $5";

/// Leases the claimable heads: see [`crate::Store::claim`]. Parameters $1 owner, $2 lease
/// expiry, $3 destination, $4 now, $5 limit.
pub(crate) fn heads_sql(dialect: Dialect) -> String {
    match dialect {
        // One statement on the single writer connection: no other claimer can interleave.
        Dialect::Sqlite => format!(
            "UPDATE jobs SET state = 'leased', lease_owner = $1, lease_expires_at = $2, \
             due_at = $2, lease_version = lease_version + 1 \
             WHERE id IN (SELECT j.id {HEADS}) \
             RETURNING {JOB_COLS}"
        ),
        // Candidates are locked with SKIP LOCKED (another claimer holding a row lock skips it;
        // a row changed by a committed claimer is re-checked against the new version), then
        // leased.
        Dialect::Postgres => format!(
            "WITH c AS MATERIALIZED (SELECT j.id AS cid {HEADS} FOR UPDATE OF j SKIP LOCKED) \
             UPDATE jobs SET state = 'leased', lease_owner = $1, lease_expires_at = $2, \
             due_at = $2, lease_version = lease_version + 1 \
             FROM c WHERE jobs.id = c.cid \
             RETURNING {JOB_COLS}"
        ),
    }
}

/// Followers of freshly claimed heads (batch claims): every due pending job of the heads'
/// ordering keys, and every job of them whose lease expired (a batch that crashed is reclaimed
/// whole), that is not stuck behind an earlier job not due yet, in id order, leased in the same
/// transaction as the heads. Parameters: $1 owner, $2 lease expiry, $3 lease expiry again
/// (as `due_at`), $4 destination, $5 now, $6 now again, then the `heads` job ids, then the limit.
pub(crate) fn followers_sql(heads: usize, dialect: Dialect) -> String {
    let pick = format!(
        "SELECT j.id FROM jobs j \
         WHERE j.destination = $4 AND j.due_at <= $5 \
           AND (j.state = 'pending' OR (j.state = 'leased' AND j.lease_expires_at <= $5)) \
           AND NOT EXISTS ( \
             SELECT 1 FROM jobs b \
             WHERE b.ordering_key = j.ordering_key AND b.state = 'pending' AND b.id < j.id AND b.due_at > $6) \
           AND j.ordering_key IN (SELECT h.ordering_key FROM jobs h WHERE h.id IN ({})) \
         ORDER BY j.id LIMIT ${}",
        params(heads, 6),
        heads + 7
    );
    match dialect {
        Dialect::Sqlite => format!(
            "UPDATE jobs SET state = 'leased', lease_owner = $1, lease_expires_at = $2, due_at = $3, \
             lease_version = lease_version + 1 WHERE id IN ({pick}) RETURNING {JOB_COLS}"
        ),
        // Rows another claimer holds are skipped, as in the head claim.
        Dialect::Postgres => format!(
            "WITH c AS MATERIALIZED ({pick} FOR UPDATE OF j SKIP LOCKED) \
             UPDATE jobs SET state = 'leased', lease_owner = $1, lease_expires_at = $2, due_at = $3, \
             lease_version = lease_version + 1 FROM c WHERE jobs.id = c.id RETURNING {}",
            JOB_COLS.split(", ").map(|c| format!("jobs.{}", c.trim())).collect::<Vec<_>>().join(", ")
        ),
    }
}
