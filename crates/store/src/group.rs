//! Group commit: many concurrent callers, one transaction (one fsync) per batch.
//!
//! A bounded queue feeds one task; the task drains up to `max_batch` queued items, commits them
//! with one store call and answers every caller through its own oneshot. A full queue is
//! backpressure: `submit` fails at once with [`StoreError::Overloaded`]. A failed commit fails
//! every caller of that batch (never a 2xx without a commit). The task ends when every handle
//! has been dropped.

use crate::{Completion, Intake, IntakeOutcome, Millis, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

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
    tx: mpsc::Sender<(Intake, Reply<IntakeOutcome>)>,
}

impl GroupCommitter {
    /// Spawn the commit task on the current Tokio runtime.
    pub fn spawn(store: Arc<dyn Store>, max_batch: usize, queue_capacity: usize) -> Self {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<(Intake, Reply<IntakeOutcome>)>(queue_capacity.max(1));
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut buf, max_batch).await > 0 {
                let (intakes, replies): (Vec<Intake>, Vec<Reply<IntakeOutcome>>) = buf.drain(..).unzip();
                match store.ingest(&intakes).await {
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
        Self { tx }
    }

    /// Queue one intake and wait until its batch is durably committed.
    pub async fn submit(&self, intake: Intake) -> Result<IntakeOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        enqueue(&self.tx, (intake, reply))?;
        rx.await.map_err(|_| stopped())?
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
