//! Every background task of the gateway runs under one supervisor, which names it and holds what
//! happens when it fails: restarted with backoff (a poller, a folder watch, a sync loop: work
//! that is redone from its stored cursor), the gateway stopped (a listener: without it the
//! gateway cannot do its job, and an operator's process manager should restart the whole), or
//! abandoned with an error in the log (a one-off whose work is redone elsewhere).
//!
//! A task "fails" when it returns an error or panics; a task that returns `Ok` has finished (it
//! saw the cancellation, or had nothing to do) and is not restarted.

use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Restart delays double from this ...
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// ... up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A task that ran this long before failing starts its backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(300);

/// What the supervisor does when a task fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Start it again after a backoff (1 s doubling to 60 s), until the gateway stops.
    Restart,
    /// Stop the gateway: [`Supervisor::failed`] fires and `dingbridge run` exits non-zero.
    StopGateway,
    /// Log it and let it go: the task was a one-off whose work is redone elsewhere.
    Abandon,
}

/// Why a background task gave up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TaskError(pub String);

impl TaskError {
    pub fn new(reason: impl std::fmt::Display) -> Self {
        TaskError(reason.to_string())
    }
}

/// Runs the gateway's background tasks (see the module docs).
#[derive(Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    /// Cancelled at shutdown: every task's own token is a child of it.
    stop: CancellationToken,
    /// Cancelled when a [`OnFailure::StopGateway`] task fails.
    failed: CancellationToken,
    metrics: crate::metrics::Metrics,
    /// Runs [`Supervisor::spawn_singleton`] tasks under a store lease; without it (unit tests)
    /// they run as plain tasks.
    singletons: Option<crate::leader::Singletons>,
}

impl Supervisor {
    pub fn new(metrics: crate::metrics::Metrics) -> Self {
        Supervisor {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            failed: CancellationToken::new(),
            metrics,
            singletons: None,
        }
    }

    /// Singleton tasks of this supervisor run under `singletons`' leases.
    pub fn with_singletons(mut self, singletons: crate::leader::Singletons) -> Self {
        self.singletons = Some(singletons);
        self
    }

    /// Runs `task` as `name` under `policy`, like [`Supervisor::spawn`], but only while this
    /// instance holds the store's lease named `name`: of several instances sharing a store, one
    /// runs it (see [`crate::leader`]).
    pub fn spawn_singleton<F, Fut>(&self, name: impl Into<String>, policy: OnFailure, task: F)
    where
        F: Fn(CancellationToken) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let name = name.into();
        let Some(singletons) = self.singletons.clone() else {
            return self.spawn(name, policy, task);
        };
        let lease = name.clone();
        self.spawn(name, policy, move |cancel| {
            let (singletons, lease, task) = (singletons.clone(), lease.clone(), task.clone());
            async move { singletons.lead(&lease, cancel, task).await }
        });
    }

    /// Runs `task` as `name` under `policy`. `task` is called again for each restart with a
    /// token that is cancelled when the gateway stops; it should return `Ok(())` then.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, policy: OnFailure, mut task: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        self.supervise(name.into(), policy, move |token| Some(task(token)));
    }

    /// Runs one future that cannot be started again (it owns a listener, say) as `name`: a
    /// failure stops the gateway or is abandoned as `policy` says; `Restart` abandons it too.
    pub fn spawn_once<Fut>(&self, name: impl Into<String>, policy: OnFailure, task: Fut)
    where
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let mut task = Some(task);
        self.supervise(name.into(), policy, move |_| task.take());
    }

    /// The supervision loop: `next` gives the task's next run, or `None` when it has no more.
    fn supervise<F, Fut>(&self, name: String, policy: OnFailure, mut next: F)
    where
        F: FnMut(CancellationToken) -> Option<Fut> + Send + 'static,
        Fut: Future<Output = Result<(), TaskError>> + Send + 'static,
    {
        let stop = self.stop.clone();
        let failed = self.failed.clone();
        let metrics = self.metrics.clone();
        self.tracker.spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            while let Some(run) = next(stop.child_token()) {
                let started = Instant::now();
                // Its own task, so a panic is caught as a JoinError instead of ending this loop.
                let reason = match tokio::spawn(run).await {
                    Ok(Ok(())) => return,
                    Ok(Err(err)) => err.0,
                    Err(join) if join.is_panic() => format!("panicked: {}", panic_message(join.into_panic())),
                    Err(_) => return,
                };
                if stop.is_cancelled() {
                    return;
                }
                metrics.task_failed(&name);
                match policy {
                    OnFailure::Abandon => {
                        tracing::error!(task = %name, "Background task failed and is not retried: {reason}");
                        return;
                    }
                    OnFailure::StopGateway => {
                        tracing::error!(task = %name, "Background task failed; stopping the gateway: {reason}");
                        failed.cancel();
                        return;
                    }
                    OnFailure::Restart => {
                        if started.elapsed() >= HEALTHY_RUN {
                            backoff = FIRST_BACKOFF;
                        }
                        tracing::error!(task = %name, restart_in = ?backoff, "Background task failed; restarting: {reason}");
                        if !pause(&stop, backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        });
    }

    /// A supervisor for another stage of the gateway, stopped on its own (the listeners outlive
    /// the pollers at shutdown) but reporting to the same [`Supervisor::failed`].
    pub fn sibling(&self) -> Supervisor {
        Supervisor {
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            failed: self.failed.clone(),
            metrics: self.metrics.clone(),
            singletons: self.singletons.clone(),
        }
    }

    /// The token every task of this supervisor sees cancelled when it stops (for a one-off
    /// that must watch it itself, like a listener's graceful shutdown).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Fires when a task that the gateway cannot run without has failed.
    pub async fn failed(&self) {
        self.failed.cancelled().await;
    }

    pub fn has_failed(&self) -> bool {
        self.failed.is_cancelled()
    }

    /// Cancels every task and waits up to `within` for them to return; true if they all did.
    pub async fn stop(&self, within: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait()).await.is_ok()
    }
}

pub use connect::clock::pause;

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(|| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn supervisor() -> Supervisor {
        Supervisor::new(crate::metrics::Metrics::install())
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_is_restarted_with_backoff_until_stopped() {
        let sup = supervisor();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        sup.spawn("flaky", OnFailure::Restart, move |_| {
            let counted = counted.clone();
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 1 {
                    panic!("second run panics");
                }
                Err(TaskError::new("boom"))
            }
        });
        // Runs at 0 s, 1 s (panics), 3 s, 7 s: the delays double.
        tokio::time::sleep(Duration::from_millis(7_500)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert!(!sup.has_failed(), "a restarted task does not stop the gateway");
        assert!(sup.stop(Duration::from_secs(1)).await);
        let after_stop = runs.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(runs.load(Ordering::SeqCst), after_stop, "nothing restarts after stop");
    }

    #[tokio::test]
    async fn a_task_the_gateway_needs_stops_it_when_it_fails() {
        let sup = supervisor();
        sup.spawn("listener", OnFailure::StopGateway, |_| async { Err(TaskError::new("socket closed")) });
        tokio::time::timeout(Duration::from_secs(5), sup.failed()).await.expect("the failure is reported");
        assert!(sup.has_failed());
    }

    #[tokio::test]
    async fn a_task_that_returns_after_cancellation_is_not_restarted() {
        let sup = supervisor();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        sup.spawn("poller", OnFailure::Restart, move |cancel| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                cancel.cancelled().await;
                Ok(())
            }
        });
        assert!(sup.stop(Duration::from_secs(5)).await, "the task returns when cancelled");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_abandoned_task_runs_once() {
        let sup = supervisor();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        sup.spawn("one-off", OnFailure::Abandon, move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Err(TaskError::new("no")) }
        });
        assert!(sup.stop(Duration::from_secs(5)).await);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!sup.has_failed());
    }
}
