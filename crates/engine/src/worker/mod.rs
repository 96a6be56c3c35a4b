//! Outbox delivery workers: one dispatcher per destination claims due jobs with a lease and
//! delivers them — at most `concurrency` in flight, never two of one ordering key at once, and
//! in id order per key — then completes, reschedules or dead-letters each one by the error's
//! [`connect::Disposition`].
//!
//! A throttle answer (`Disposition::RetryAfter`) pauses the whole destination, every ordering
//! key, until the vendor's own signal has passed: the dispatcher claims nothing and claimed jobs
//! not yet sent are released without an attempt. The pause is per process (each gateway instance
//! learns it from its own throttled call); for a sink with [`connect::Pacing`] the vendor's block
//! is also written to the store's pacing ledger, so every instance honours it.
//!
//! A paced sink (a DingTalk robot: 20 per minute) gets one permit from the store's pacing ledger
//! per attempt, taken before the attempt's timeout starts: waiting for the window never counts
//! against the attempt and never cancels a request already sent. The ledger is shared by every
//! instance on the store and survives a restart. A wait longer than [`PACING_SLEEP`] hands the
//! job back without an attempt and holds the destination until the window has room.

use connect::{Clock, Delivery, DeliveryError, Disposition, RetrySchedule, Sink};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Completion, CompletionBatcher, Job, Store, StoreError};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Metric names (documented in docs/specs/instrumentation.md).
pub const METRIC_DELIVERIES: &str = "dingbridge_deliveries_total";
pub const METRIC_LATENCY: &str = "dingbridge_delivery_latency_seconds";
pub const METRIC_ERRORS: &str = "dingbridge_delivery_errors_total";
pub const METRIC_LEASE_LOST: &str = "dingbridge_lease_lost_total";
/// Gauge per destination: 1 while deliveries are paused by a vendor throttle, else 0.
pub const METRIC_PAUSED: &str = "dingbridge_destination_paused";

/// Kind label of the stored error (`[<code>] <kind>: <error>`) of an attempt the vendor refused
/// for credentials; a second one in a row dead-letters the job.
const AUTH_PREFIX: &str = "auth: ";

/// The error stored with a job that will be retried: `[<code>] <kind>: <error>`. The code leads so
/// an operator reading `last_error` finds the page `docs/errors/<code>.md`; the kind after it is
/// what [`refused_credentials`] recognises on the next attempt.
fn stored_error(err: &DeliveryError) -> String {
    format!("[{}] {}: {err}", err.code(), err.kind())
}

/// Whether a job's stored error is a credentials failure. Jobs retried by a version before the
/// codes have `<kind>: <error>` without the leading `[<code>] `; they are still recognised, so an
/// upgrade in the middle of a back-off keeps the one second chance rather than granting another.
fn refused_credentials(last_error: &str) -> bool {
    let without_code =
        last_error.strip_prefix('[').and_then(|rest| rest.split_once("] ")).map_or(last_error, |(_code, rest)| rest);
    without_code.starts_with(AUTH_PREFIX)
}

/// Completions committed per transaction, and how many may queue.
const COMPLETION_BATCH: usize = 256;
const COMPLETION_QUEUE: usize = 4096;

/// The longest wait for a pacing permit spent holding a job's lease; a longer one releases the
/// job and holds the destination instead (the window can be a minute, the lease 30 s).
const PACING_SLEEP: Duration = Duration::from_secs(1);

/// A permit is recorded at the time read before asking the ledger; one that took longer than this
/// to come back (the store's writer was busy) is not used: the send could land later than the
/// window's margin allows (DingTalk: 61 s counted for its 60 s, so 1 s from grant to arrival).
/// The job goes back unattempted and the permit is left to expire.
const PACING_STALE: Duration = Duration::from_millis(500);

/// How long the destination is held when the pacing ledger cannot be read (store down): nothing
/// is sent unpaced.
const PACING_UNAVAILABLE_HOLD: Duration = Duration::from_secs(1);

/// How a dispatcher with few free delivery slots waits for more before claiming, so claims
/// stay batched under load (a claim is a store write transaction).
const CLAIM_GATHER: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Lease owner name (unique per process), e.g. `host:pid:uuid`.
    pub owner: String,
    pub lease: Duration,
    pub concurrency_per_destination: usize,
    /// Per-destination overrides of `concurrency_per_destination`.
    pub concurrency_overrides: BTreeMap<String, usize>,
    pub claim_batch: usize,
    /// Fallback polling when no nudge arrives (default 200 ms).
    pub poll_interval: Duration,
    pub schedule: RetrySchedule,
    /// Upper bound of one sink call (the sink has its own timeout too); bounds a graceful stop.
    pub request_timeout: Duration,
    /// The longest pause a vendor's `Retry-After` can impose (`delivery.max_retry_after`).
    pub max_retry_after: Duration,
}

impl WorkerSettings {
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

    /// Settings from a validated config.
    pub fn from_config(config: &crate::config::Config, owner: impl Into<String>) -> Self {
        let d = &config.delivery;
        Self {
            owner: owner.into(),
            lease: d.lease,
            concurrency_per_destination: d.concurrency_per_destination,
            concurrency_overrides: config
                .destinations
                .iter()
                .filter_map(|(name, dst)| dst.concurrency.map(|c| (name.clone(), c)))
                .collect(),
            claim_batch: d.claim_batch,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            schedule: d.schedule.clone(),
            request_timeout: d.request_timeout,
            max_retry_after: d.max_retry_after,
        }
    }

    fn concurrency(&self, destination: &str) -> usize {
        self.concurrency_overrides.get(destination).copied().unwrap_or(self.concurrency_per_destination).max(1)
    }
}

/// Handle to the running workers.
#[derive(Debug, Clone)]
pub struct DeliveryWorkers {
    wakeups: Wakeups,
}

/// The wake-up bell of each destination's dispatcher. It exists before the workers do, so what
/// commits jobs (intake, and the sinks that commit events they read) can hold it from the start;
/// a ring before the dispatcher listens is kept and wakes it at once.
#[derive(Debug, Clone, Default)]
pub struct Wakeups {
    bells: Arc<std::sync::Mutex<BTreeMap<String, Arc<Notify>>>>,
}

impl Wakeups {
    /// The bell of `destination`, made on first use.
    fn bell(&self, destination: &str) -> Arc<Notify> {
        let mut bells = self.bells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        bells.entry(destination.to_owned()).or_default().clone()
    }

    /// Wake every dispatcher now (call after an intake commit).
    pub fn nudge(&self) {
        let bells = self.bells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for bell in bells.values() {
            bell.notify_one();
        }
    }

    /// Wake the dispatcher of one destination, if it has one (an unknown name makes no bell).
    pub fn nudge_destination(&self, destination: &str) {
        let bells = self.bells.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bell) = bells.get(destination) {
            bell.notify_one();
        }
    }
}

impl DeliveryWorkers {
    /// Start one dispatcher per destination on `tracker`. They stop when `shutdown` is
    /// cancelled: no new claims, in-flight deliveries finish (bounded by the request timeout),
    /// claimed-but-not-started jobs are released without counting an attempt.
    pub fn spawn(
        store: Arc<dyn Store>,
        sinks: BTreeMap<String, Arc<dyn Sink>>,
        settings: WorkerSettings,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        Self::spawn_with_wakeups(store, sinks, settings, clock, shutdown, tracker, Wakeups::default())
    }

    /// [`DeliveryWorkers::spawn`], woken through `wakeups` (made before the sinks that need it).
    pub fn spawn_with_wakeups(
        store: Arc<dyn Store>,
        sinks: BTreeMap<String, Arc<dyn Sink>>,
        settings: WorkerSettings,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
        wakeups: Wakeups,
    ) -> Self {
        let settings = Arc::new(settings);
        // One group-commit task for all destinations; it ends when the last worker drops it.
        let completer = CompletionBatcher::spawn(store.clone(), COMPLETION_BATCH, COMPLETION_QUEUE);
        for (destination, sink) in sinks {
            let notify = wakeups.bell(&destination);
            let shared = Arc::new(Shared {
                sem: Arc::new(Semaphore::new(settings.concurrency(&destination))),
                destination,
                store: store.clone(),
                completer: completer.clone(),
                sink,
                settings: settings.clone(),
                clock: clock.clone(),
                shutdown: shutdown.clone(),
                notify,
                in_flight: Mutex::new(HashSet::new()),
                paused_until: Mutex::new(None),
                paced_until: Mutex::new(None),
                breaker: Breaker::default(),
                tracker: tracker.clone(),
            });
            match shared.sink.batching() {
                Some(batching) => tracker.spawn(batch::dispatch_batches(shared, batching)),
                None => tracker.spawn(dispatch(shared)),
            };
        }
        Self { wakeups }
    }

    /// Wake every dispatcher now (call after an intake commit).
    pub fn nudge(&self) {
        self.wakeups.nudge();
    }

    /// Wake the dispatcher of one destination.
    pub fn nudge_destination(&self, destination: &str) {
        self.wakeups.nudge_destination(destination);
    }
}

struct Shared {
    destination: String,
    store: Arc<dyn Store>,
    completer: CompletionBatcher,
    sink: Arc<dyn Sink>,
    settings: Arc<WorkerSettings>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    notify: Arc<Notify>,
    sem: Arc<Semaphore>,
    /// Ordering keys with a delivery task running in this process.
    in_flight: Mutex<HashSet<String>>,
    /// Clock millis before which nothing is claimed or sent (a vendor throttle), if any.
    paused_until: Mutex<Option<i64>>,
    /// Clock millis before which nothing is claimed: the pacing window is full (our own limit,
    /// not a vendor's signal, so it is neither logged as a throttle nor shown as a pause).
    paced_until: Mutex<Option<i64>>,
    /// Opens when the destination fails on every attempt (see [`Breaker`]).
    breaker: Breaker,
    tracker: TaskTracker,
}

impl Shared {
    fn key_busy(&self, key: &str) -> bool {
        self.in_flight.lock().map(|s| s.contains(key)).unwrap_or(true)
    }
    fn set_key(&self, key: &str, busy: bool) {
        if let Ok(mut s) = self.in_flight.lock() {
            if busy {
                s.insert(key.to_string());
            } else {
                s.remove(key);
            }
        }
    }

    /// Stop claiming and sending for `after` from now (the vendor's throttle signal). A pause
    /// already running longer is kept; a zero duration pauses nothing.
    fn pause(&self, after: Duration) {
        if after.is_zero() {
            return;
        }
        let now = self.clock.now_millis();
        let until = now.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
        let Ok(mut paused) = self.paused_until.lock() else { return };
        if paused.is_some_and(|p| p >= until) {
            return;
        }
        let extended = paused.is_some();
        *paused = Some(until);
        drop(paused);
        metrics::gauge!(METRIC_PAUSED, "destination" => self.destination.clone()).set(1.0);
        let resume_at = jiff::Timestamp::from_millisecond(until).map(|t| t.to_string()).unwrap_or_default();
        warn!(
            destination = %self.destination,
            resume_at = %resume_at,
            pause_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            extended,
            "Destination throttled by the vendor; pausing every delivery to it until the resume time."
        );
    }

    /// How long the destination stays paused from now, or `None` when it is not paused (an
    /// expired pause is cleared here: gauge back to 0 and an INFO line).
    fn paused_for(&self) -> Option<Duration> {
        let now = self.clock.now_millis();
        let Ok(mut paused) = self.paused_until.lock() else { return None };
        let until = (*paused)?;
        if until > now {
            return Some(Duration::from_millis(u64::try_from(until - now).unwrap_or(u64::MAX)));
        }
        *paused = None;
        drop(paused);
        metrics::gauge!(METRIC_PAUSED, "destination" => self.destination.clone()).set(0.0);
        info!(destination = %self.destination, "Destination throttle pause is over; delivering again.");
        None
    }
}

impl Shared {
    /// Claim nothing for `after` from now: the pacing window has no room before then.
    fn hold(&self, after: Duration) {
        let until = self.clock.now_millis().saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
        if let Ok(mut paced) = self.paced_until.lock() {
            if paced.is_none_or(|p| p < until) {
                *paced = Some(until);
            }
        }
    }

    /// How long the pacing hold lasts from now, if one is in force.
    fn held_for(&self) -> Option<Duration> {
        let now = self.clock.now_millis();
        let Ok(mut paced) = self.paced_until.lock() else { return None };
        match *paced {
            Some(until) if until > now => Some(Duration::from_millis(u64::try_from(until - now).unwrap_or(u64::MAX))),
            Some(_) => {
                *paced = None;
                None
            }
            None => None,
        }
    }

    /// Paused by a vendor or held by pacing: how long from now.
    fn stopped_for(&self) -> Option<Duration> {
        match (self.paused_for(), self.held_for()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

async fn idle(sh: &Shared) {
    tokio::select! {
        _ = sh.notify.notified() => {}
        _ = tokio::time::sleep(sh.settings.poll_interval) => {}
        _ = sh.shutdown.cancelled() => {}
    }
}

/// What a dispatcher may do at the top of its loop.
enum Gate {
    Stop,
    /// A vendor throttle, pacing hold or open breaker is running: the dispatcher slept a while
    /// and should look again.
    Paused,
    Open,
    /// The breaker is open and a probe is due: claim one job.
    Probe,
}

/// Stopping, or paused by a vendor throttle, a pacing hold or an open breaker (then sleeps until
/// it ends, or at most a poll interval: nudges are ignored meanwhile, and an injected clock may
/// move independently of tokio's timers).
async fn gate(sh: &Shared) -> Gate {
    if sh.shutdown.is_cancelled() {
        return Gate::Stop;
    }
    let left = match (sh.stopped_for(), sh.breaker.allowance(sh.clock.now_millis())) {
        (None, Allowance::All) => return Gate::Open,
        (None, Allowance::Probe) => return Gate::Probe,
        (Some(left), _) | (None, Allowance::Wait(left)) => left,
    };
    tokio::select! {
        _ = sh.shutdown.cancelled() => Gate::Stop,
        _ = tokio::time::sleep(left.min(sh.settings.poll_interval)) => Gate::Paused,
    }
}

async fn dispatch(sh: Arc<Shared>) {
    info!(destination = %sh.destination, "Delivery worker started.");
    let lease_ms = i64::try_from(sh.settings.lease.as_millis()).unwrap_or(i64::MAX);
    loop {
        let probing = match gate(&sh).await {
            Gate::Stop => break,
            Gate::Paused => continue,
            Gate::Open => false,
            Gate::Probe => true,
        };
        let free = sh.sem.available_permits();
        if free == 0 {
            tokio::select! {
                _ = sh.shutdown.cancelled() => break,
                p = sh.sem.clone().acquire_owned() => drop(p),
            }
            continue;
        }
        let low_water = (sh.settings.concurrency(&sh.destination) / 4).max(1);
        if free < low_water {
            // Deliveries are finishing one by one; let a few more permits come back so one claim
            // (one store transaction) fetches many jobs rather than one each time.
            tokio::select! {
                _ = sh.shutdown.cancelled() => break,
                _ = tokio::time::sleep(CLAIM_GATHER) => {}
            }
        }
        let free = sh.sem.available_permits().max(1);
        let limit = if probing { 1 } else { free.min(sh.settings.claim_batch.max(1)) };
        let now = sh.clock.now_millis();
        let mut claimed = sh.store.claim(&sh.destination, &sh.settings.owner, limit, lease_ms, now).await;
        if probing && claimed.as_ref().is_ok_and(Vec::is_empty) {
            claimed = claim_early_probe(&sh, lease_ms, now).await;
        }
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(e) => {
                warn!(destination = %sh.destination, error = %e, "Claiming jobs failed; will poll again.");
                idle(&sh).await;
                continue;
            }
        };
        if jobs.is_empty() {
            idle(&sh).await;
            continue;
        }
        debug!(destination = %sh.destination, claimed = jobs.len(), "Claimed jobs.");
        let mut started = 0;
        for (key, group) in group_by_key(jobs) {
            // Never two deliveries of one key at once (a re-claim after an expired lease).
            if sh.key_busy(&key) {
                release_all(&sh, group).await;
                continue;
            }
            let Ok(permit) = sh.sem.clone().try_acquire_owned() else {
                release_all(&sh, group).await;
                continue;
            };
            sh.set_key(&key, true);
            sh.tracker.spawn(run_group(sh.clone(), key, group, permit));
            started += 1;
        }
        if started == 0 {
            // Everything claimed was handed back (its keys are still being sent here): claiming
            // again at once would only spin on the same jobs.
            idle(&sh).await;
        }
    }
    info!(destination = %sh.destination, "Delivery worker stopped claiming.");
}

/// The breaker is open, a probe is due and no job is: the outage has pushed every waiting job's
/// back-off out (to 30 minutes by the default schedule), and without a probe nobody would look
/// whether the vendor is back before the soonest of them ends. The job whose back-off ends first
/// is claimed early; if the vendor is still down it is handed back on its schedule without
/// counting the attempt (see [`on_failure_pinned`]), so an outage does not use up its attempts.
async fn claim_early_probe(sh: &Shared, lease_ms: i64, now: i64) -> Result<Vec<Job>, StoreError> {
    if !sh.store.probe_early(&sh.destination, now).await? {
        return Ok(Vec::new());
    }
    sh.store.claim(&sh.destination, &sh.settings.owner, 1, lease_ms, now).await
}

/// Jobs grouped by ordering key, each group in id order; groups in order of their first job.
fn group_by_key(mut jobs: Vec<Job>) -> Vec<(String, Vec<Job>)> {
    jobs.sort_by_key(|j| j.id);
    // Index by key: a claim of hundreds of jobs, nearly all of different keys, stays linear.
    let mut index: HashMap<String, usize> = HashMap::with_capacity(jobs.len());
    let mut groups: Vec<(String, Vec<Job>)> = Vec::new();
    for job in jobs {
        match index.get(&job.ordering_key) {
            Some(&i) => groups[i].1.push(job),
            None => {
                index.insert(job.ordering_key.clone(), groups.len());
                groups.push((job.ordering_key.clone(), vec![job]));
            }
        }
    }
    groups
}

async fn release_all(sh: &Shared, jobs: impl IntoIterator<Item = Job>) {
    for job in jobs {
        let now = sh.clock.now_millis();
        if let Err(e) = sh.store.release(job.lease(), now).await {
            store_error(sh, &job, "release", &e);
        }
    }
}

async fn run_group(sh: Arc<Shared>, key: String, jobs: Vec<Job>, permit: OwnedSemaphorePermit) {
    // A key's jobs are sent one after another: the later ones' leases are kept alive meanwhile.
    let keeper = LeaseKeeper::new(&sh, &jobs);
    keeper.keep_while(&sh, run_jobs(&sh, &keeper, jobs)).await;
    sh.set_key(&key, false);
    drop(permit);
    sh.notify.notify_one();
}

async fn run_jobs(sh: &Shared, keeper: &LeaseKeeper, jobs: Vec<Job>) {
    let mut rest = jobs.into_iter();
    let mut first = true;
    while let Some(job) = rest.next() {
        // Stopping, or the destination was throttled or found down meanwhile (by this key or
        // another): hand the rest back without an attempt. The first job was claimed with the
        // breaker's leave (it may be the probe).
        let found_down = !first && sh.breaker.is_open();
        first = false;
        if sh.shutdown.is_cancelled() || sh.stopped_for().is_some() || found_down {
            let rest: Vec<Job> = std::iter::once(job).chain(rest.by_ref()).collect();
            keeper.forget(&rest);
            release_all(sh, rest).await;
            break;
        }
        let delivered = deliver_one(sh, keeper, job).await;
        if !delivered {
            // A failed job blocks its key: later jobs of the key wait for it.
            let rest: Vec<Job> = rest.by_ref().collect();
            keeper.forget(&rest);
            release_all(sh, rest).await;
            break;
        }
    }
}

fn store_error(sh: &Shared, job: &Job, op: &str, e: &StoreError) {
    if let StoreError::LeaseLost { .. } = e {
        metrics::counter!(METRIC_LEASE_LOST, "destination" => sh.destination.clone()).increment(1);
        warn!(job_id = job.id, op, code = e.code(), error = %e, "Lease lost; another worker owns the job now.");
    } else {
        error!(
            job_id = job.id,
            op,
            code = e.code(),
            error = %e,
            "Store call failed; the lease will expire and the job will be retried."
        );
    }
}

/// Whether the job may be attempted now by the sink's pacing window (always, for a sink without
/// one). Waits up to [`PACING_SLEEP`] holding the lease; beyond that, or when the ledger cannot
/// be read, holds the destination and answers false: the caller hands the job back unattempted.
async fn paced(sh: &Shared) -> bool {
    let Some(pacing) = sh.sink.pacing() else { return true };
    let window_ms = i64::try_from(pacing.window.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = sh.clock.now_millis();
        match sh.store.take_pacing_permit(&pacing.key, pacing.max, window_ms, now).await {
            Ok(store::PacingAnswer::Granted) => {
                let late = sh.clock.now_millis().saturating_sub(now);
                if late > i64::try_from(PACING_STALE.as_millis()).unwrap_or(i64::MAX) {
                    debug!(late_ms = late, "Pacing permit came back late; not sending on it.");
                    return false;
                }
                return true;
            }
            Ok(store::PacingAnswer::Wait(ms)) => {
                let wait = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
                if wait > PACING_SLEEP {
                    debug!(wait_ms = ms, "Pacing window full; holding the destination.");
                    sh.hold(wait);
                    return false;
                }
                tokio::select! {
                    _ = sh.shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(e) => {
                warn!(code = e.code(), error = %e, "The pacing ledger cannot be read; nothing is sent unpaced.");
                sh.hold(PACING_UNAVAILABLE_HOLD);
                return false;
            }
        }
    }
}

/// Deliver one job; true when it was delivered (completed). Its lease is settled (or handed
/// back) here, and `keeper` stops renewing it.
async fn deliver_one(sh: &Shared, keeper: &LeaseKeeper, job: Job) -> bool {
    let delivered = attempt_one(sh, keeper, &job).await;
    keeper.forget([&job]);
    delivered
}

async fn attempt_one(sh: &Shared, keeper: &LeaseKeeper, job: &Job) -> bool {
    let attempt = job.attempts.saturating_add(1);
    let span = info_span!(
        "deliver",
        event_id = %job.event_id,
        flow = %job.flow,
        destination = %job.destination,
        attempt,
        job_id = job.id,
    );
    async {
        // Before the attempt's timeout starts: the wait for the window is not the attempt's.
        if !paced(sh).await {
            keeper.forget([job]);
            release_all(sh, std::iter::once(job.clone())).await;
            return false;
        }
        // Never send on a lease that is gone or about to go: another worker may send it too.
        if !keeper.ready_to_send(sh, job).await {
            let lost = keeper.lost(job);
            keeper.forget([job]);
            if !lost {
                release_all(sh, std::iter::once(job.clone())).await;
            }
            return false;
        }
        let result = match serde_json::from_str::<serde_json::Value>(&job.payload) {
            Ok(payload) => {
                let delivery = Delivery {
                    idempotency_key: job.idempotency_key.clone(),
                    event_id: job.event_id.clone(),
                    flow: job.flow.clone(),
                    destination: job.destination.clone(),
                    payload,
                    attempt,
                };
                let after = sh.settings.request_timeout;
                match tokio::time::timeout(after, sh.sink.deliver(&delivery)).await {
                    Ok(r) => r,
                    Err(_) => Err(DeliveryError::Timeout { endpoint: job.destination.clone(), after }),
                }
            }
            Err(e) => Err(DeliveryError::BadPayload { destination: job.destination.clone(), detail: e.to_string() }),
        };
        // Answered: the lease is settled now, not renewed.
        keeper.forget([job]);
        let now = sh.clock.now_millis();
        match result {
            Ok(receipt) => {
                settle_success(sh, job, receipt).await;
                true
            }
            Err(err) => {
                on_failure(sh, job, attempt, &err, now).await;
                false
            }
        }
    }
    .instrument(span)
    .await
}

/// Commit a delivered job (group commit) and count it. While the store is unavailable (a
/// database restart) the commit is retried for up to one lease duration: giving up at once hands
/// the job to lease expiry, which sends it again, a duplicate effect (R13). The lease version
/// keeps a late retry safe: once another worker holds the job, the commit fails with `LeaseLost`.
async fn settle_success(sh: &Shared, job: &Job, receipt: connect::Receipt) {
    crashpoint::hit(crashpoint::AFTER_DELIVERY);
    let now = sh.clock.now_millis();
    let c = Completion { lease: job.lease(), receipt: receipt.vendor_id.or(receipt.detail) };
    let done = match sh.completer.submit(c.clone(), now).await {
        // The batcher's queue is full, or the store failed the group's commit: commit this one
        // directly, retrying while the store is unavailable.
        Err(StoreError::Overloaded | StoreError::Unavailable(_)) => {
            match complete_retrying(sh, std::slice::from_ref(&c)).await {
                Ok(results) => results.into_iter().next().unwrap_or(Ok(())),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    if let Err(e) = done {
        store_error(sh, job, "complete", &e);
    }
    if sh.breaker.on_success(&sh.destination) {
        retry_waiting_now(sh).await;
    }
    count_delivered(sh, job, now);
    debug!("Delivered.");
}

/// The destination answered again after its breaker was open. The back-offs its jobs took
/// meanwhile were the outage's, not theirs: left alone, each holds its whole ordering key for up
/// to the longest step reached (30 minutes by the default schedule) after the vendor is back.
/// They are made due now; pacing and the breaker still bound the rate, attempts are kept.
async fn retry_waiting_now(sh: &Shared) {
    match sh.store.retry_waiting_now(&sh.destination, sh.clock.now_millis()).await {
        Ok(jobs) => {
            info!(destination = %sh.destination, jobs, "Jobs backing off through the outage are due now.");
            sh.notify.notify_one();
        }
        Err(e) => warn!(
            destination = %sh.destination,
            code = e.code(),
            error = %e,
            "Could not make the jobs backing off through the outage due now; they keep their schedule."
        ),
    }
}

/// Commits completions of delivered jobs, retrying while the store is unavailable for up to one
/// lease: the vendor already has these writes, and a job left to its lease's expiry would be
/// sent again. Past the lease another worker may own the jobs; their fences decide then.
async fn complete_retrying(sh: &Shared, completions: &[Completion]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let give_up = tokio::time::Instant::now() + sh.settings.lease;
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = sh.store.complete(completions, sh.clock.now_millis()).await;
        match &result {
            Err(StoreError::Unavailable(reason)) if tokio::time::Instant::now() + backoff <= give_up => {
                warn!(jobs = completions.len(), error = %reason, "Completing delivered jobs failed; retrying.");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            _ => return result,
        }
    }
}

fn count_delivered(sh: &Shared, job: &Job, now: i64) {
    metrics::counter!(METRIC_DELIVERIES, "destination" => sh.destination.clone(), "outcome" => "delivered")
        .increment(1);
    #[allow(clippy::cast_precision_loss)]
    let latency = (now - job.created_at).max(0) as f64 / 1000.0;
    metrics::histogram!(METRIC_LATENCY, "destination" => sh.destination.clone()).record(latency);
}

enum Next {
    Retry(Duration),
    Dead(String),
}

/// A failed attempt of one job: one vendor call, so one piece of evidence for the breaker.
async fn on_failure(sh: &Shared, job: &Job, attempts_made: u32, err: &DeliveryError, now: i64) {
    breaker_on_failure(sh, err, now);
    on_failure_pinned(sh, job, attempts_made, err, now, None).await;
}

/// Tells the breaker a vendor call failed with `err`. A payload the sink could not even build
/// says nothing about the vendor.
fn breaker_on_failure(sh: &Shared, err: &DeliveryError, now: i64) {
    if !matches!(err, DeliveryError::BadPayload { .. }) {
        sh.breaker.on_failure(&sh.destination, err.disposition(), now);
    }
}

/// As [`on_failure`] without telling the breaker (a batch tells it once per batch, not once
/// per job); a retry happens at `pinned` when given (the jobs of one record in one batch retry
/// together, so they can merge again). Returns the retry time, if retried.
async fn on_failure_pinned(
    sh: &Shared,
    job: &Job,
    attempts_made: u32,
    err: &DeliveryError,
    now: i64,
    pinned: Option<i64>,
) -> Option<i64> {
    metrics::counter!(METRIC_ERRORS, "destination" => sh.destination.clone(), "kind" => err.kind()).increment(1);
    if job.next_attempt_at > now && err.disposition() == Disposition::Retry {
        // An early probe (claimed before its back-off ended) found the vendor still down: the
        // job goes back on its schedule, this attempt was the breaker's, not the job's.
        debug!(code = err.code(), error = %err, "Early probe failed; the destination is still down.");
        if let Err(e) = sh.store.release(job.lease(), now).await {
            store_error(sh, job, "release", &e);
        }
        return None;
    }
    let schedule = &sh.settings.schedule;
    // A dead letter's reason carries the code just before the error it names.
    let code = err.code();
    let exhausted = || Next::Dead(format!("gave up after {attempts_made} attempts: [{code}] {err}"));
    let next = match err.disposition() {
        Disposition::Permanent => Next::Dead(format!("[{code}] {err}")),
        Disposition::Retry => schedule.next_delay(attempts_made, None).map_or_else(exhausted, Next::Retry),
        Disposition::RetryAfter(asked) => {
            let after = asked.min(sh.settings.max_retry_after);
            if after < asked {
                warn!(
                    asked_s = asked.as_secs(),
                    max_retry_after_s = after.as_secs(),
                    "The vendor asked to wait longer than delivery.max_retry_after; waiting that long instead."
                );
            }
            // The vendor's signal holds for the whole destination, not only this job; for a
            // paced sink it holds for every instance sending to the same vendor endpoint.
            sh.pause(after);
            if let Some(pacing) = sh.sink.pacing() {
                let until = now.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
                if let Err(e) = sh.store.block_pacing(&pacing.key, until).await {
                    warn!(code = e.code(), error = %e, "Could not share the vendor's block through the store.");
                }
            }
            schedule.next_delay(attempts_made, Some(after)).map_or_else(exhausted, Next::Retry)
        }
        Disposition::Auth => {
            if job.last_error.as_deref().is_some_and(refused_credentials) {
                Next::Dead(format!("credentials rejected twice in a row: [{code}] {err}"))
            } else {
                schedule.next_delay(attempts_made, None).map_or_else(exhausted, Next::Retry)
            }
        }
    };
    match next {
        Next::Retry(delay) => {
            let at = pinned.unwrap_or_else(|| now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)));
            let stored = stored_error(err);
            warn!(retry_in_ms = delay.as_millis() as u64, code, error = %err, "Delivery failed; will retry.");
            if let Err(e) = sh.store.retry_later(job.lease(), at, &stored, now).await {
                store_error(sh, job, "retry_later", &e);
            }
            metrics::counter!(METRIC_DELIVERIES, "destination" => sh.destination.clone(), "outcome" => "retried")
                .increment(1);
            Some(at)
        }
        Next::Dead(reason) => {
            error!(code, reason = %reason, "Delivery failed for good; dead-lettered.");
            if let Err(e) = sh.store.dead_letter(job.lease(), &reason, now).await {
                store_error(sh, job, "dead_letter", &e);
            }
            metrics::counter!(METRIC_DELIVERIES, "destination" => sh.destination.clone(), "outcome" => "dead")
                .increment(1);
            None
        }
    }
}

mod batch;
mod breaker;
mod lease;
pub use breaker::METRIC_BREAKER_OPEN;
use breaker::{Allowance, Breaker};
use lease::LeaseKeeper;

#[cfg(test)]
mod tests;
