//! Retention: done jobs and inbox rows older than `[store] retention` are pruned, a batch per
//! transaction, by one instance at a time (the singleton task `retention`). Pending, leased and
//! dead jobs, dead letters, inbox rows an unfinished or dead job still needs, and the audit log
//! are kept (see [`store::Store::prune`]).

use crate::supervisor::{pause, TaskError};
use connect::Clock;
use std::sync::Arc;
use std::time::Duration;
use store::{Pruned, Store, StoreError};
use tokio_util::sync::CancellationToken;

/// How often the sweep runs (the first right after this instance takes the lease).
pub const SWEEP_EVERY: Duration = Duration::from_secs(300);
/// Rows of each table deleted per transaction: short transactions that never hold intake back
/// for long.
pub const BATCH: usize = 500;
/// The breath between two batches, for the intake's commits.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// Sweeps every [`SWEEP_EVERY`] until `cancel`.
pub async fn sweep_loop(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    cancel: CancellationToken,
) -> Result<(), TaskError> {
    loop {
        match sweep(store.as_ref(), clock.as_ref(), retention, BATCH, &cancel).await {
            Ok(p) if p.jobs + p.inbox > 0 => {
                tracing::info!(
                    jobs = p.jobs,
                    inbox = p.inbox,
                    retention_s = retention.as_secs(),
                    "Retention sweep pruned old rows."
                );
            }
            Ok(_) => tracing::debug!("Retention sweep: nothing older than the retention."),
            Err(err) => tracing::warn!("Retention sweep failed; will try again: {err}"),
        }
        if !pause(&cancel, SWEEP_EVERY).await {
            return Ok(());
        }
    }
}

/// One sweep: prunes rows older than `retention`, `batch` per transaction, until none is left
/// or `cancel`. Returns what it pruned.
pub async fn sweep(
    store: &dyn Store,
    clock: &dyn Clock,
    retention: Duration,
    batch: usize,
    cancel: &CancellationToken,
) -> Result<Pruned, StoreError> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let cutoff = clock.now_millis().saturating_sub(retention_ms);
    let mut total = Pruned::default();
    loop {
        let step = store.prune(cutoff, batch).await?;
        pruned_metric("jobs", step.jobs);
        pruned_metric("inbox", step.inbox);
        total.jobs += step.jobs;
        total.inbox += step.inbox;
        let full = usize::try_from(step.jobs.max(step.inbox)).unwrap_or(usize::MAX) >= batch;
        if !full || !pause(cancel, BETWEEN_BATCHES).await {
            return Ok(total);
        }
    }
}

/// `dingbridge_retention_pruned_total{table}`: rows the retention sweep deleted.
fn pruned_metric(table: &'static str, rows: u64) {
    if rows > 0 {
        metrics::counter!("dingbridge_retention_pruned_total", "table" => table).increment(rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::{Completion, Intake, NewJob};

    #[derive(Debug)]
    struct At(i64);
    impl Clock for At {
        fn now(&self) -> jiff::Timestamp {
            jiff::Timestamp::from_millisecond(self.0).unwrap()
        }
    }

    fn intake(n: usize, received_at: i64) -> Intake {
        Intake {
            dedup_key: format!("src:{n}"),
            event_id: format!("e{n}"),
            source: "src".into(),
            received_at,
            event_json: "{}".into(),
            jobs: vec![NewJob {
                flow: "f".into(),
                destination: "d".into(),
                ordering_key: format!("k{n}"),
                idempotency_key: format!("i{n}"),
                payload: "{}".into(),
                next_attempt_at: 0,
                coalesce: false,
            }],
            dead_letter: None,
        }
    }

    #[tokio::test]
    async fn a_sweep_prunes_everything_old_in_batches_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&format!("sqlite://{}", dir.path().join("s.db").display())).await.unwrap();
        let day = 86_400_000;
        let old: Vec<_> = (0..25).map(|n| intake(n, day)).collect();
        store.ingest(&old).await.unwrap();
        let jobs = store.claim("d", "w", 100, 1_000, day).await.unwrap();
        let done: Vec<_> = jobs.iter().map(|j| Completion { lease: j.lease(), receipt: None }).collect();
        store.complete(&done, day + 1).await.unwrap();
        store.ingest(&[intake(99, 40 * day)]).await.unwrap();

        let clock = At(40 * day);
        let pruned = sweep(store.as_ref(), &clock, Duration::from_secs(30 * 86_400), 10, &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(pruned, Pruned { jobs: 25, inbox: 25 });
        let stats = store.stats(40 * day).await.unwrap();
        assert_eq!((stats.events, stats.done, stats.pending), (1, 0, 1), "the recent event and its job stay");
    }
}
