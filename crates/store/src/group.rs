//! Group commit: many concurrent callers, one transaction (one fsync) per batch.
//!
//! A bounded queue feeds one task; the task drains up to `max_batch` queued items, commits them
//! with one store call and answers every caller through its own oneshot. A full queue is
//! backpressure: `submit` fails at once with [`StoreError::Overloaded`]. The queue is bounded by
//! count and, with [`GroupCommitter::spawn_with_byte_budget`], by the bytes of the intakes it
//! holds: an intake that does not fit in what is left of the budget is refused the same way,
//! never waited for. A failed commit fails every caller of that batch (never a 2xx without a
//! commit). The task ends when every handle has been dropped.

use crate::{Completion, Intake, IntakeOutcome, Millis, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
/// One queued intake, its caller's answer, and its share of the byte budget, given back when
/// its batch's commit has returned (whether or not the caller still waits).
type Queued = (Intake, Reply<IntakeOutcome>, Option<OwnedSemaphorePermit>);

fn stopped() -> StoreError {
    StoreError::Unavailable("the group-commit task has stopped".into())
}

fn enqueue<T>(tx: &mpsc::Sender<T>, item: T) -> Result<(), StoreError> {
    tx.try_send(item).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
        mpsc::error::TrySendError::Closed(_) => stopped(),
    })
}

/// Batches [`Store::ingest`] calls.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Queued>,
    /// Bytes of intakes queued or being committed; `None`: bounded by count only.
    budget: Option<(Arc<Semaphore>, u32)>,
}

/// How many bytes an intake holds while it waits for its commit: its strings and its jobs'.
pub fn intake_bytes(intake: &Intake) -> usize {
    let jobs: usize = intake
        .jobs
        .iter()
        .map(|j| j.flow.len() + j.destination.len() + j.ordering_key.len() + j.idempotency_key.len() + j.payload.len())
        .sum();
    let dead = intake.dead_letter.as_ref().map_or(0, |d| d.reason.len());
    intake.dedup_key.len() + intake.event_id.len() + intake.source.len() + intake.event_json.len() + jobs + dead
}

impl GroupCommitter {
    /// Spawn the commit task on the current Tokio runtime; the queue is bounded by count.
    pub fn spawn(store: Arc<dyn Store>, max_batch: usize, queue_capacity: usize) -> Self {
        Self::spawn_inner(store, max_batch, queue_capacity, None)
    }

    /// Like [`GroupCommitter::spawn`], and the intakes queued or being committed hold at most
    /// `max_bytes` (as [`intake_bytes`] counts them) together. An intake larger than the whole
    /// budget is admitted only when nothing else holds any of it.
    pub fn spawn_with_byte_budget(
        store: Arc<dyn Store>,
        max_batch: usize,
        queue_capacity: usize,
        max_bytes: usize,
    ) -> Self {
        // Permits are counted in u32 (and the semaphore caps its total): budgets past 4 GiB are
        // the same as 4 GiB.
        let permits = u32::try_from(max_bytes).unwrap_or(u32::MAX).clamp(1, u32::MAX);
        let permits = permits.min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        let budget = (Arc::new(Semaphore::new(permits as usize)), permits);
        Self::spawn_inner(store, max_batch, queue_capacity, Some(budget))
    }

    fn spawn_inner(
        store: Arc<dyn Store>,
        max_batch: usize,
        queue_capacity: usize,
        budget: Option<(Arc<Semaphore>, u32)>,
    ) -> Self {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<Queued>(queue_capacity.max(1));
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut buf, max_batch).await > 0 {
                let mut intakes = Vec::with_capacity(buf.len());
                let mut replies = Vec::with_capacity(buf.len());
                // Held until the commit below has returned: until then the intakes are in memory.
                let mut permits = Vec::with_capacity(buf.len());
                for (intake, reply, permit) in buf.drain(..) {
                    intakes.push(intake);
                    replies.push(reply);
                    permits.push(permit);
                }
                let ingested = store.ingest(&intakes).await;
                // Given back before the callers hear: a caller that retries at once finds them.
                drop(permits);
                match ingested {
                    Ok(outcomes) if outcomes.len() == replies.len() => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Ok(outcomes) => {
                        let e = StoreError::Corrupt(format!(
                            "ingest returned {} outcomes for {} intakes",
                            outcomes.len(),
                            replies.len()
                        ));
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(code = e.code(), error = %e, batch = replies.len(), "Group commit failed.");
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx, budget }
    }

    /// Queue one intake and wait until its batch is durably committed. Fails at once with
    /// [`StoreError::Overloaded`] when the queue is full or the intake does not fit in what is
    /// left of the byte budget.
    pub async fn submit(&self, intake: Intake) -> Result<IntakeOutcome, StoreError> {
        let permit = match &self.budget {
            Some((semaphore, total)) => {
                let wanted = u32::try_from(intake_bytes(&intake)).unwrap_or(u32::MAX).clamp(1, *total);
                match semaphore.clone().try_acquire_many_owned(wanted) {
                    Ok(permit) => Some(permit),
                    Err(TryAcquireError::NoPermits) => return Err(StoreError::Overloaded),
                    Err(TryAcquireError::Closed) => return Err(stopped()),
                }
            }
            None => None,
        };
        let (reply, rx) = oneshot::channel();
        enqueue(&self.tx, (intake, reply, permit))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Bytes of the budget not held by queued or committing intakes (`None`: no byte budget).
    pub fn bytes_available(&self) -> Option<usize> {
        self.budget.as_ref().map(|(semaphore, _)| semaphore.available_permits())
    }
}

/// Batches [`Store::complete`] calls so workers do not pay one fsync per finished job.
#[derive(Clone)]
pub struct CompletionBatcher {
    tx: mpsc::Sender<(Completion, Millis, Reply<()>)>,
}

impl CompletionBatcher {
    /// Spawn the commit task on the current Tokio runtime.
    pub fn spawn(store: Arc<dyn Store>, max_batch: usize, queue_capacity: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<(Completion, Millis, Reply<()>)>(queue_capacity.max(1));
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut buf, max_batch).await > 0 {
                let now = buf.iter().map(|(_, now, _)| *now).max().unwrap_or_default();
                let mut done = Vec::with_capacity(buf.len());
                let mut replies = Vec::with_capacity(buf.len());
                for (c, _, r) in buf.drain(..) {
                    done.push(c);
                    replies.push(r);
                }
                match store.complete(&done, now).await {
                    Ok(results) if results.len() == replies.len() => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(result);
                        }
                    }
                    Ok(results) => {
                        let e = StoreError::Corrupt(format!(
                            "complete returned {} results for {} completions",
                            results.len(),
                            replies.len()
                        ));
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(code = e.code(), error = %e, batch = replies.len(), "Completion batch failed.");
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Queue one completion (finished at `now`) and wait for its own slot's result
    /// (`LeaseLost` when the lease is stale).
    pub async fn submit(&self, completion: Completion, now: Millis) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        enqueue(&self.tx, (completion, now, reply))?;
        rx.await.map_err(|_| stopped())?
    }
}
