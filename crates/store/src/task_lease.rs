//! Leases on singleton tasks and the retention sweep: the SQL behind
//! [`crate::Store::acquire_task_lease`], [`crate::Store::renew_task_lease`],
//! [`crate::Store::release_task_lease`] and [`crate::Store::prune`], written once for both
//! backends.
//!
//! A task lease is one row per task name. Taking it is one upsert whose `WHERE` admits a free
//! row, an expired one or one the caller holds live, so two instances racing for it cannot both
//! win: PostgreSQL locks the conflicting row and re-checks the condition on the committed
//! version, SQLite has one writer. `version` grows with each new tenure (another owner, or the
//! same owner after its lease lapsed); renewal and release are fenced by it.

use crate::sql_store::{Backend, Durability, SqlStore};
use crate::{Millis, StoreError};
use sqlx::{ColumnIndex, Connection, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

/// A lease on one singleton task, held by `owner` until `expires_at` (epoch ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLease {
    pub name: String,
    pub owner: String,
    /// The tenure: grows each time the lease changes hands or is taken again after it lapsed.
    pub version: i64,
    pub expires_at: Millis,
}

/// What one [`crate::Store::prune`] call deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub jobs: u64,
    pub inbox: u64,
}

/// Take or keep the lease. Parameters: $1 name, $2 owner, $3 expiry, $4 now.
const ACQUIRE_SQL: &str = "INSERT INTO task_leases (name, owner, version, expires_at) VALUES ($1, $2, 1, $3) \
     ON CONFLICT (name) DO UPDATE SET \
       version = CASE WHEN task_leases.owner = excluded.owner AND task_leases.expires_at > $4 \
                      THEN task_leases.version ELSE task_leases.version + 1 END, \
       owner = excluded.owner, expires_at = excluded.expires_at \
     WHERE task_leases.owner = excluded.owner OR task_leases.expires_at <= $4 \
     RETURNING version, expires_at";

/// Extend the lease of this tenure. A lease that lapsed but that nobody took since is still this
/// tenure's (nobody else ran the task meanwhile), as an expired job lease nobody reclaimed may
/// still complete; this keeps a holder whose clock jumps from losing its lease to itself.
/// Parameters: $1 expiry, $2 name, $3 owner, $4 version.
const RENEW_SQL: &str = "UPDATE task_leases SET expires_at = $1 \
     WHERE name = $2 AND owner = $3 AND version = $4";

/// Let the lease go at once (graceful stop): it expires now, and the row (with its version)
/// stays so the next tenure's version is higher. Parameters: $1 now, $2 name, $3 owner,
/// $4 version.
const RELEASE_SQL: &str = "UPDATE task_leases SET expires_at = $1 \
     WHERE name = $2 AND owner = $3 AND version = $4 AND expires_at > $1";

/// Up to $2 done jobs finished before $1 that no dead letter names (a replayed job's letter is
/// gone; this only guards against one kept by mistake).
const PRUNE_JOBS_SQL: &str = "DELETE FROM jobs WHERE id IN ( \
       SELECT j.id FROM jobs j \
       WHERE j.state = 'done' AND j.finished_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.job_id = j.id) \
       ORDER BY j.finished_at LIMIT $2)";

/// Up to $2 inbox rows received before $1 whose event has no job left (its done jobs pruned, or
/// it made none) and no dead letter: nothing can need the event again, and its dedup key has
/// outlived every replay tolerance (retention is at least that long; see the config).
const PRUNE_INBOX_SQL: &str = "DELETE FROM inbox WHERE id IN ( \
       SELECT i.id FROM inbox i \
       WHERE i.received_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.event_id = i.event_id) \
         AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.event_id = i.event_id) \
       ORDER BY i.received_at LIMIT $2)";

impl<B> SqlStore<B>
where
    B: Backend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'a> &'a str: ColumnIndex<<B::Db as Database>::Row>,
    for<'q> &'q str: Type<B::Db> + Encode<'q, B::Db>,
    for<'q, 'r> i64: Type<B::Db> + Encode<'q, B::Db> + Decode<'r, B::Db>,
{
    pub(crate) async fn acquire_task_lease_sql(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<TaskLease>, StoreError> {
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let row = sqlx::query(ACQUIRE_SQL)
            .bind(name)
            .bind(owner)
            .bind(now.saturating_add(ttl_ms))
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(TaskLease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            version: row.try_get("version")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    pub(crate) async fn renew_task_lease_sql(
        &self,
        lease: &TaskLease,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<TaskLease>, StoreError> {
        let expires_at = now.saturating_add(ttl_ms);
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let r = sqlx::query(RENEW_SQL)
            .bind(expires_at)
            .bind(lease.name.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.version)
            .execute(&mut *conn)
            .await?;
        Ok((B::rows_affected(&r) == 1).then(|| TaskLease { expires_at, ..lease.clone() }))
    }

    pub(crate) async fn release_task_lease_sql(&self, lease: &TaskLease, now: Millis) -> Result<bool, StoreError> {
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let r = sqlx::query(RELEASE_SQL)
            .bind(now)
            .bind(lease.name.as_str())
            .bind(lease.owner.as_str())
            .bind(lease.version)
            .execute(&mut *conn)
            .await?;
        Ok(B::rows_affected(&r) == 1)
    }

    pub(crate) async fn prune_sql(&self, cutoff: Millis, limit: usize) -> Result<Pruned, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if limit == 0 {
            return Ok(Pruned::default());
        }
        let mut conn = self.backend.write_conn(Durability::Unsynced).await?;
        let mut tx = conn.begin_with(B::BEGIN_WRITE).await?;
        let jobs = B::rows_affected(&sqlx::query(PRUNE_JOBS_SQL).bind(cutoff).bind(limit).execute(&mut *tx).await?);
        let inbox = B::rows_affected(&sqlx::query(PRUNE_INBOX_SQL).bind(cutoff).bind(limit).execute(&mut *tx).await?);
        tx.commit().await?;
        Ok(Pruned { jobs, inbox })
    }
}
