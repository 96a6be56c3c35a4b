//! Singleton tasks: work that one instance of several sharing a store does for all of them
//! (pollers, drop-folder watchers, approval timers, directory and user syncs, push-channel
//! renewal, the retention sweep) runs only where the store's lease named after the task is held.
//!
//! Each singleton loops: take the lease (TTL [`LeaseTimes::ttl`]); while it is held, run the task
//! with a child token, renewing every [`LeaseTimes::renew_every`]; when a renewal is refused (the
//! lease lapsed or changed hands) or the lease runs out without one, cancel the task at once; when
//! another instance holds it, try again every [`LeaseTimes::retry_every`]. A graceful stop
//! releases the lease, so another instance takes over at its next try; after a crash it takes
//! over once the lease expires: within `ttl + retry_every` (18 s by default). The task resumes
//! from what the store holds (poll cursors, pending approvals), like a restart.
//!
//! Lease times are compared by the store against each instance's clock, so instances sharing a
//! store need clocks within a few seconds of each other (NTP).

use async_trait::async_trait;
use connect::clock::pause;
use connect::Clock;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use store::{Millis, Store, StoreError, TaskLease};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a task keeps running after its lease is lost, to stop at its own next check, before
/// it is dropped where it waits.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How a singleton's lease is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    /// How long one take or renewal holds the lease.
    pub ttl: Duration,
    /// How often the holder renews it (a third of the TTL: two renewals may fail in a row).
    pub renew_every: Duration,
    /// How often an instance that does not hold it tries to take it.
    pub retry_every: Duration,
}

impl Default for LeaseTimes {
    fn default() -> Self {
        LeaseTimes {
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(3),
        }
    }
}

/// The store operations a singleton needs (a seam for paused-time tests).
#[async_trait]
pub trait LeaseStore: Send + Sync {
    async fn acquire(&self, name: &str, owner: &str, ttl_ms: i64, now: Millis)
        -> Result<Option<TaskLease>, StoreError>;
    async fn renew(&self, lease: &TaskLease, ttl_ms: i64, now: Millis) -> Result<Option<TaskLease>, StoreError>;
    async fn release(&self, lease: &TaskLease, now: Millis) -> Result<bool, StoreError>;
}

/// The store's task leases as a [`LeaseStore`].
struct StoreLeases(Arc<dyn Store>);

#[async_trait]
impl LeaseStore for StoreLeases {
    async fn acquire(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<TaskLease>, StoreError> {
        self.0.acquire_task_lease(name, owner, ttl_ms, now).await
    }
    async fn renew(&self, lease: &TaskLease, ttl_ms: i64, now: Millis) -> Result<Option<TaskLease>, StoreError> {
        self.0.renew_task_lease(lease, ttl_ms, now).await
    }
    async fn release(&self, lease: &TaskLease, now: Millis) -> Result<bool, StoreError> {
        self.0.release_task_lease(lease, now).await
    }
}

/// Runs singleton tasks for one instance (`owner`, unique per process).
#[derive(Clone)]
pub struct Singletons {
    leases: Arc<dyn LeaseStore>,
    clock: Arc<dyn Clock>,
    owner: Arc<str>,
    times: LeaseTimes,
}

/// Why a tenure ended.
enum Ended<E> {
    /// The task returned (it saw the stop, had nothing to do, or failed).
    Returned(Result<(), E>),
    /// The lease was lost; the task was cancelled.
    Lost(&'static str),
}

impl Singletons {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, owner: &str) -> Self {
        Self::with_leases(Arc::new(StoreLeases(store)), clock, owner, LeaseTimes::default())
    }

    pub fn with_leases(leases: Arc<dyn LeaseStore>, clock: Arc<dyn Clock>, owner: &str, times: LeaseTimes) -> Self {
        Singletons { leases, clock, owner: owner.into(), times }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs `task` whenever this instance holds the lease `name`, until `cancel`. Returns `Ok`
    /// at stop (the lease released), or the task's error (the lease released first, so another
    /// instance may take over while the supervisor backs off).
    pub async fn lead<F, Fut, E>(&self, name: &str, cancel: CancellationToken, task: F) -> Result<(), E>
    where
        F: Fn(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let ttl_ms = i64::try_from(self.times.ttl.as_millis()).unwrap_or(i64::MAX);
        leader_gauge(name, false);
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let asked_at = Instant::now();
            match self.leases.acquire(name, &self.owner, ttl_ms, self.clock.now_millis()).await {
                Ok(Some(lease)) => {
                    tracing::info!(task = name, owner = %self.owner, lease_version = lease.version, "Leadership gained; running the singleton task here.");
                    leader_gauge(name, true);
                    let child = cancel.child_token();
                    let ended = self.hold(lease.clone(), asked_at + self.times.ttl, task(child.clone()), &child).await;
                    leader_gauge(name, false);
                    match ended {
                        Ended::Returned(result) => {
                            self.release(&lease).await;
                            if cancel.is_cancelled() {
                                tracing::info!(task = name, "Leadership released at stop.");
                            } else if result.is_ok() {
                                tracing::info!(task = name, "Singleton task finished; leadership released.");
                            }
                            return result;
                        }
                        Ended::Lost(why) => {
                            tracing::warn!(task = name, owner = %self.owner, lease_version = lease.version, "Leadership lost ({why}); the singleton task was stopped here.");
                        }
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(task = name, "Taking the singleton lease failed; will try again: {err}"),
            }
            if !pause(&cancel, self.times.retry_every).await {
                return Ok(());
            }
        }
    }

    /// Runs `run` while renewing `lease` (held locally until `deadline`); cancels `child` and
    /// ends when a renewal is refused or the deadline passes without one.
    async fn hold<Fut, E>(&self, lease: TaskLease, deadline: Instant, run: Fut, child: &CancellationToken) -> Ended<E>
    where
        Fut: Future<Output = Result<(), E>>,
    {
        let mut run = std::pin::pin!(run);
        let keep = self.keep(lease, deadline);
        let why = tokio::select! {
            result = &mut run => return Ended::Returned(result),
            why = keep => why,
        };
        child.cancel();
        if tokio::time::timeout(STOP_GRACE, &mut run).await.is_err() {
            tracing::warn!("A singleton task did not stop within {STOP_GRACE:?} of losing its lease; dropped.");
        }
        Ended::Lost(why)
    }

    /// Renews `lease` every `renew_every` until a renewal is refused or the lease runs out.
    async fn keep(&self, mut lease: TaskLease, mut deadline: Instant) -> &'static str {
        let ttl_ms = i64::try_from(self.times.ttl.as_millis()).unwrap_or(i64::MAX);
        let mut next = Instant::now() + self.times.renew_every;
        loop {
            tokio::time::sleep_until(next.min(deadline)).await;
            if Instant::now() >= deadline {
                return "the lease ran out before it could be renewed";
            }
            let asked_at = Instant::now();
            let renewal = self.leases.renew(&lease, ttl_ms, self.clock.now_millis());
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(Some(renewed))) => {
                    lease = renewed;
                    deadline = asked_at + self.times.ttl;
                    next = asked_at + self.times.renew_every;
                }
                Ok(Ok(None)) => return "another instance holds the lease, or it lapsed",
                Ok(Err(err)) => {
                    tracing::warn!(task = %lease.name, "Renewing the singleton lease failed; will try again: {err}");
                    next = Instant::now() + Duration::from_secs(1).min(self.times.renew_every);
                }
                Err(_) => return "the lease ran out while renewing it",
            }
        }
    }

    async fn release(&self, lease: &TaskLease) {
        if let Err(err) = self.leases.release(lease, self.clock.now_millis()).await {
            tracing::warn!(task = %lease.name, "Releasing the singleton lease failed; it will expire: {err}");
        }
    }
}

/// `dingbridge_singleton_leader{task}`: 1 while this instance holds the task's lease.
fn leader_gauge(task: &str, held: bool) {
    metrics::gauge!("dingbridge_singleton_leader", "task" => task.to_owned()).set(if held { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests;
