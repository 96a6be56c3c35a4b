//! Batch dispatch for sinks that write many records per vendor call (Salesforce collections,
//! Zoho batches): gather due jobs, each ordering key's whole due run at once, until the batch
//! holds `max_records` keys or the oldest job has waited `linger`; hand them to the sink in one
//! `deliver_batch`; settle each job by its own result.
//!
//! One batch is in flight per destination at a time, so a key's jobs are never split across
//! concurrent vendor calls; per-key order holds because a batch claim takes a key's due run in
//! id order and the sink merges it in that order.

use super::{
    breaker_on_failure, complete_retrying, count_delivered, gate, idle, on_failure_pinned, release_all, store_error,
    Gate, LeaseKeeper, Shared,
};
use connect::{Batching, Delivery, DeliveryError, Disposition};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use store::{Completion, Job};
use tracing::{debug, info, info_span, warn, Instrument};

/// Jobs one batch may hold per record it writes (several updates of one record merge into one).
const RUN_JOBS_PER_RECORD: usize = 8;

/// A batch never waits longer than this fraction of the lease (its jobs stay leased meanwhile).
const LINGER_SHARE_OF_LEASE: u32 = 3;

pub(super) async fn dispatch_batches(sh: Arc<Shared>, batching: Batching) {
    let max_records = batching.max_records.max(1);
    let linger = batching.linger.min(sh.settings.lease / LINGER_SHARE_OF_LEASE);
    let lease_ms = i64::try_from(sh.settings.lease.as_millis()).unwrap_or(i64::MAX);
    info!(destination = %sh.destination, max_records, linger_ms = linger.as_millis() as u64, "Batch delivery worker started.");
    loop {
        match gate(&sh).await {
            Gate::Stop => break,
            Gate::Paused => continue,
            // An open breaker's probe is one batch.
            Gate::Open | Gate::Probe => {}
        }
        let mut batch: Vec<Job> = Vec::new();
        let mut keys: HashSet<String> = HashSet::new();
        let mut first_claimed_at: Option<i64> = None;
        loop {
            let now = sh.clock.now_millis();
            let room = max_records - keys.len();
            let max_jobs = max_records.saturating_mul(RUN_JOBS_PER_RECORD).saturating_sub(batch.len()).max(room);
            match sh.store.claim_runs(&sh.destination, &sh.settings.owner, room, max_jobs, lease_ms, now).await {
                Ok(jobs) => {
                    for job in jobs {
                        keys.insert(job.ordering_key.clone());
                        batch.push(job);
                    }
                }
                Err(e) => warn!(destination = %sh.destination, error = %e, "Claiming jobs failed; will poll again."),
            }
            if keys.len() >= max_records || sh.shutdown.is_cancelled() {
                break;
            }
            if batch.is_empty() {
                idle(&sh).await;
                if sh.shutdown.is_cancelled() || sh.paused_for().is_some() {
                    break;
                }
                continue;
            }
            let started = *first_claimed_at.get_or_insert(now);
            let waited = Duration::from_millis(u64::try_from(now - started).unwrap_or(0));
            if waited >= linger {
                break;
            }
            // Wait for more work (a nudge after an intake commit) or the end of the linger.
            tokio::select! {
                _ = sh.notify.notified() => {}
                _ = tokio::time::sleep((linger - waited).min(sh.settings.poll_interval)) => {}
                _ = sh.shutdown.cancelled() => {}
            }
        }
        if batch.is_empty() {
            continue;
        }
        if sh.shutdown.is_cancelled() || sh.paused_for().is_some() {
            release_all(&sh, batch).await;
            continue;
        }
        batch.sort_by_key(|j| j.id);
        deliver_batch(&sh, batch, max_records).await;
    }
    info!(destination = %sh.destination, "Batch delivery worker stopped claiming.");
}

/// One `deliver_batch` call and the settlement of every job in it.
async fn deliver_batch(sh: &Shared, jobs: Vec<Job>, max_records: usize) {
    let span = info_span!("deliver_batch", destination = %sh.destination, jobs = jobs.len());
    async {
        let mut deliveries = Vec::with_capacity(jobs.len());
        let mut sendable = Vec::with_capacity(jobs.len());
        for job in jobs {
            let attempt = job.attempts.saturating_add(1);
            match serde_json::from_str::<serde_json::Value>(&job.payload) {
                Ok(payload) => {
                    deliveries.push(Delivery {
                        idempotency_key: job.idempotency_key.clone(),
                        event_id: job.event_id.clone(),
                        flow: job.flow.clone(),
                        destination: job.destination.clone(),
                        payload,
                        attempt,
                    });
                    sendable.push(job);
                }
                Err(e) => {
                    let err = DeliveryError::BadPayload { destination: job.destination.clone(), detail: e.to_string() };
                    settle_failure(sh, &job, attempt, &err, None).await;
                }
            }
        }
        // The batch may have lingered, and may take several vendor calls: its leases are
        // renewed before the send and kept alive during it. A job whose lease is gone is not
        // sent (another worker has it).
        let keeper = LeaseKeeper::new(sh, &sendable);
        keeper.renew_due(sh).await;
        let mut kept = Vec::with_capacity(sendable.len());
        let mut kept_deliveries = Vec::with_capacity(deliveries.len());
        let mut handed_back = Vec::new();
        // Later jobs of a key whose earlier job cannot be sent wait for it (per-key order).
        let mut held_keys: HashSet<String> = HashSet::new();
        for (job, delivery) in sendable.into_iter().zip(deliveries) {
            if !held_keys.contains(&job.ordering_key) && keeper.ready_to_send(sh, &job).await {
                kept.push(job);
                kept_deliveries.push(delivery);
                continue;
            }
            held_keys.insert(job.ordering_key.clone());
            if !keeper.lost(&job) {
                handed_back.push(job);
            }
        }
        keeper.forget(&handed_back);
        release_all(sh, handed_back).await;
        let (sendable, deliveries) = (kept, kept_deliveries);
        if sendable.is_empty() {
            return;
        }
        // Several vendor calls may be needed (one per object, one per `max_records`); each may
        // take up to the request timeout.
        let calls = u32::try_from(deliveries.len().div_ceil(max_records)).unwrap_or(u32::MAX).saturating_add(1);
        let after = sh.settings.request_timeout.saturating_mul(calls);
        let sent = keeper.keep_while(sh, tokio::time::timeout(after, sh.sink.deliver_batch(&deliveries))).await;
        keeper.forget(&sendable);
        let results = match sent {
            Ok(results) if results.len() == deliveries.len() => results,
            Ok(results) => {
                let err = DeliveryError::Server {
                    vendor: "dingbridge",
                    status: 0,
                    detail: format!("the sink answered {} results for {} deliveries", results.len(), deliveries.len()),
                };
                vec![Err(err); deliveries.len()]
            }
            Err(_) => vec![Err(DeliveryError::Timeout { endpoint: sh.destination.clone(), after }); deliveries.len()],
        };
        let delivered = results.iter().filter(|r| r.is_ok()).count();
        debug!(delivered, failed = results.len() - delivered, "Batch answered.");
        // The breaker judges vendor calls, not jobs: a batch whose call timed out is one failure,
        // not one per record (a single slow answer to a batch of five opened it). A batch with a
        // record delivered shows the vendor up; `complete_all` tells the breaker so.
        if delivered == 0 {
            // A payload the sink could not build says nothing about the vendor.
            let errors: Vec<&DeliveryError> = results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .filter(|e| !matches!(e, DeliveryError::BadPayload { .. }))
                .collect();
            // A record the vendor refused for good is an answer: the vendor is up.
            let telling =
                errors.iter().find(|e| matches!(e.disposition(), Disposition::Permanent)).or_else(|| errors.first());
            if let Some(err) = telling {
                breaker_on_failure(sh, err, sh.clock.now_millis());
            }
        }
        // A key's failed jobs retry at one time, so the retry claims them as one run again.
        let mut retry_at: HashMap<String, i64> = HashMap::new();
        let mut delivered: Vec<(Job, Completion)> = Vec::new();
        for (job, result) in sendable.into_iter().zip(results) {
            let attempt = job.attempts.saturating_add(1);
            match result {
                Ok(receipt) => {
                    let completion = Completion { lease: job.lease(), receipt: receipt.vendor_id.or(receipt.detail) };
                    delivered.push((job, completion));
                }
                Err(err) => {
                    let pinned = retry_at.get(&job.ordering_key).copied();
                    if let Some(at) = settle_failure(sh, &job, attempt, &err, pinned).await {
                        retry_at.entry(job.ordering_key.clone()).or_insert(at);
                    }
                }
            }
        }
        complete_all(sh, delivered).await;
    }
    .instrument(span)
    .await
}

/// One transaction completes every delivered job of the batch (hundreds of single commits would
/// take longer than the vendor call).
async fn complete_all(sh: &Shared, delivered: Vec<(Job, Completion)>) {
    if delivered.is_empty() {
        return;
    }
    crashpoint::hit(crashpoint::AFTER_DELIVERY);
    let now = sh.clock.now_millis();
    let completions: Vec<Completion> = delivered.iter().map(|(_, c)| c.clone()).collect();
    match complete_retrying(sh, &completions).await {
        Ok(results) => {
            if sh.breaker.on_success(&sh.destination) {
                super::retry_waiting_now(sh).await;
            }
            for ((job, _), result) in delivered.iter().zip(results) {
                if let Err(e) = result {
                    store_error(sh, job, "complete", &e);
                }
                count_delivered(sh, job, now);
            }
        }
        Err(e) => {
            // The leases expire and the jobs are delivered again: a repeated write of the same
            // values, which record sinks make harmless.
            for (job, _) in &delivered {
                store_error(sh, job, "complete", &e);
            }
        }
    }
    debug!(delivered = delivered.len(), "Batch completed.");
}

async fn settle_failure(sh: &Shared, job: &Job, attempt: u32, err: &DeliveryError, pinned: Option<i64>) -> Option<i64> {
    let span = info_span!("deliver", event_id = %job.event_id, flow = %job.flow, attempt, job_id = job.id);
    let now = sh.clock.now_millis();
    on_failure_pinned(sh, job, attempt, err, now, pinned).instrument(span).await
}
