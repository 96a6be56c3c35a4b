//! Keeping claimed jobs leased while work on them outlives the lease: a batch of several vendor
//! calls, or a key's run of slow sends one after another. Every held lease with less than half
//! its time left is renewed (fenced by its version) while the work runs, and once more right
//! before each send; a job whose renewal is refused is not sent, since another worker owns it now.

use super::{Shared, METRIC_LEASE_LOST};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use store::{Job, Lease};
use tracing::warn;

/// How often held leases are looked at while work runs, as a fraction of the lease.
const CHECKS_PER_LEASE: u32 = 4;

#[derive(Debug, Clone, Copy)]
struct Held {
    lease: Lease,
    expires_at: i64,
    lost: bool,
}

/// The leases one delivery task holds.
pub(super) struct LeaseKeeper {
    lease_ms: i64,
    held: Mutex<HashMap<i64, Held>>,
}

impl LeaseKeeper {
    pub(super) fn new<'a>(sh: &Shared, jobs: impl IntoIterator<Item = &'a Job>) -> Self {
        let lease_ms = i64::try_from(sh.settings.lease.as_millis()).unwrap_or(i64::MAX);
        let now = sh.clock.now_millis();
        let held = jobs
            .into_iter()
            .map(|job| {
                let expires_at = job.lease_expires_at.unwrap_or(now);
                (job.id, Held { lease: job.lease(), expires_at, lost: false })
            })
            .collect();
        Self { lease_ms, held: Mutex::new(held) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Held>> {
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews every held lease with less than half its time left. A refused one is lost: its
    /// job is never sent from here. A store that cannot be reached renews nothing; the lease
    /// then runs out, and [`LeaseKeeper::ready_to_send`] stops sending before it does.
    pub(super) async fn renew_due(&self, sh: &Shared) {
        let now = sh.clock.now_millis();
        let due: Vec<Lease> = self
            .lock()
            .values()
            .filter(|h| !h.lost && h.expires_at.saturating_sub(now) < self.lease_ms / 2)
            .map(|h| h.lease)
            .collect();
        if due.is_empty() {
            return;
        }
        match sh.store.renew(&due, self.lease_ms, now).await {
            Ok(renewed) => {
                let mut held = self.lock();
                for (lease, ok) in due.iter().zip(renewed) {
                    let Some(h) = held.get_mut(&lease.job_id) else { continue };
                    if ok {
                        h.expires_at = now.saturating_add(self.lease_ms);
                    } else {
                        h.lost = true;
                        metrics::counter!(METRIC_LEASE_LOST, "destination" => sh.destination.clone()).increment(1);
                        warn!(job_id = lease.job_id, "Lease lost before the send; another worker owns the job now.");
                    }
                }
            }
            Err(e) => warn!(code = e.code(), error = %e, "Renewing leases failed; they may run out."),
        }
    }

    /// Whether `job` may be sent now: its lease renewed if due, still ours, with at least half
    /// a lease left.
    pub(super) async fn ready_to_send(&self, sh: &Shared, job: &Job) -> bool {
        self.renew_due(sh).await;
        let now = sh.clock.now_millis();
        self.lock().get(&job.id).is_some_and(|h| !h.lost && h.expires_at.saturating_sub(now) >= self.lease_ms / 2)
    }

    /// Stops renewing the leases of these jobs (settled or handed back).
    pub(super) fn forget<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) {
        let mut held = self.lock();
        for job in jobs {
            held.remove(&job.id);
        }
    }

    /// Whether the lease of `job` was lost (its settlement would be refused anyway).
    pub(super) fn lost(&self, job: &Job) -> bool {
        self.lock().get(&job.id).is_none_or(|h| h.lost)
    }

    /// Runs `work`, renewing the held leases as they come due until it finishes.
    pub(super) async fn keep_while<F: Future>(&self, sh: &Shared, work: F) -> F::Output {
        let period = (sh.settings.lease / CHECKS_PER_LEASE).max(Duration::from_millis(10));
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(period) => self.renew_due(sh).await,
            }
        }
    }
}
