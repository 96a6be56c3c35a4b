//! Singletons under paused time, with an in-memory lease table that follows the store's
//! contract (free, expired or ours live: taken; version grows per tenure; renew fenced).

use super::*;
use crate::supervisor::TaskError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Debug)]
struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> jiff::Timestamp {
        let ms = 1_700_000_000_000 + i64::try_from(self.start.elapsed().as_millis()).unwrap();
        jiff::Timestamp::from_millisecond(ms).unwrap()
    }
}

#[derive(Default)]
struct MemLeases {
    rows: Mutex<HashMap<String, TaskLease>>,
    /// While set, every call fails as if the store were down.
    down: AtomicBool,
}

impl MemLeases {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("down".into()));
        }
        Ok(())
    }

    /// Someone else writes the row (an operator, a clock far ahead): the holder is fenced out.
    fn steal(&self, name: &str) {
        let mut rows = self.rows.lock().unwrap();
        let row = rows.get_mut(name).unwrap();
        row.owner = "thief".into();
        row.version += 1;
    }
}

#[async_trait]
impl LeaseStore for MemLeases {
    async fn acquire(
        &self,
        name: &str,
        owner: &str,
        ttl_ms: i64,
        now: Millis,
    ) -> Result<Option<TaskLease>, StoreError> {
        self.check()?;
        let mut rows = self.rows.lock().unwrap();
        let version = match rows.get(name) {
            None => 1,
            Some(row) if row.owner == owner && row.expires_at > now => row.version,
            Some(row) if row.expires_at <= now => row.version + 1,
            Some(_) => return Ok(None),
        };
        let lease = TaskLease { name: name.into(), owner: owner.into(), version, expires_at: now + ttl_ms };
        rows.insert(name.into(), lease.clone());
        Ok(Some(lease))
    }
    async fn renew(&self, lease: &TaskLease, ttl_ms: i64, now: Millis) -> Result<Option<TaskLease>, StoreError> {
        self.check()?;
        let mut rows = self.rows.lock().unwrap();
        let row = rows.get_mut(&lease.name).unwrap();
        if row.owner != lease.owner || row.version != lease.version {
            return Ok(None);
        }
        row.expires_at = now + ttl_ms;
        Ok(Some(row.clone()))
    }
    async fn release(&self, lease: &TaskLease, now: Millis) -> Result<bool, StoreError> {
        self.check()?;
        let mut rows = self.rows.lock().unwrap();
        let row = rows.get_mut(&lease.name).unwrap();
        if row.owner != lease.owner || row.version != lease.version || row.expires_at <= now {
            return Ok(false);
        }
        row.expires_at = now;
        Ok(true)
    }
}

fn instance(leases: &Arc<MemLeases>, owner: &str) -> Singletons {
    let clock = Arc::new(TokioClock { start: Instant::now() });
    Singletons::with_leases(leases.clone(), clock, owner, LeaseTimes::default())
}

/// What the test task saw: which owner ran each one-second tick, and how many runs were live.
#[derive(Default)]
struct Ticks {
    by: Mutex<Vec<(String, Instant)>>,
    live: AtomicUsize,
    most_live: AtomicUsize,
}

/// A poller that ticks every second until cancelled.
fn ticking(
    ticks: Arc<Ticks>,
    owner: &'static str,
) -> impl Fn(CancellationToken) -> futures::future::BoxFuture<'static, Result<(), TaskError>> + Clone + Send + Sync {
    move |cancel: CancellationToken| {
        let ticks = ticks.clone();
        Box::pin(async move {
            let live = ticks.live.fetch_add(1, Ordering::SeqCst) + 1;
            ticks.most_live.fetch_max(live, Ordering::SeqCst);
            loop {
                ticks.by.lock().unwrap().push((owner.to_owned(), Instant::now()));
                if !pause(&cancel, Duration::from_secs(1)).await {
                    break;
                }
            }
            ticks.live.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

fn spawn_lead(
    s: &Singletons,
    name: &'static str,
    cancel: &CancellationToken,
    task: impl Fn(CancellationToken) -> futures::future::BoxFuture<'static, Result<(), TaskError>> + Send + Sync + 'static,
) -> tokio::task::JoinHandle<Result<(), TaskError>> {
    let (s, cancel) = (s.clone(), cancel.clone());
    tokio::spawn(async move { s.lead(name, cancel, task).await })
}

#[tokio::test(start_paused = true)]
async fn two_instances_run_a_singleton_once_and_the_survivor_takes_over_after_a_crash() {
    let leases = Arc::new(MemLeases::default());
    let ticks = Arc::new(Ticks::default());
    let (a, b) = (instance(&leases, "a"), instance(&leases, "b"));
    let stop = CancellationToken::new();
    let run_a = spawn_lead(&a, "poll:crm", &stop, ticking(ticks.clone(), "a"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let run_b = spawn_lead(&b, "poll:crm", &stop, ticking(ticks.clone(), "b"));
    tokio::time::sleep(Duration::from_secs(60)).await;
    {
        let by = ticks.by.lock().unwrap();
        assert!(by.iter().all(|(o, _)| o == "a"), "only the first instance runs it");
        assert!((60..=62).contains(&by.len()), "one tick a second, not two: {}", by.len());
    }
    // `a` dies without releasing (SIGKILL): `b` takes over once the lease expires.
    run_a.abort();
    ticks.live.fetch_sub(1, Ordering::SeqCst);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let first_b = ticks.by.lock().unwrap().iter().find(|(o, _)| o == "b").map(|(_, at)| *at).expect("b took over");
    let takeover = first_b - killed;
    assert!(takeover <= LeaseTimes::default().ttl + LeaseTimes::default().retry_every, "took {takeover:?}");
    assert_eq!(ticks.most_live.load(Ordering::SeqCst), 1, "never two at once");
    stop.cancel();
    assert!(run_b.await.unwrap().is_ok());
    let row = leases.rows.lock().unwrap()["poll:crm"].clone();
    assert_eq!((row.owner.as_str(), row.version), ("b", 2));
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_hands_over_at_the_next_try() {
    let leases = Arc::new(MemLeases::default());
    let ticks = Arc::new(Ticks::default());
    let (a, b) = (instance(&leases, "a"), instance(&leases, "b"));
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let run_a = spawn_lead(&a, "retention", &stop_a, ticking(ticks.clone(), "a"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let _run_b = spawn_lead(&b, "retention", &stop_b, ticking(ticks.clone(), "b"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop_a.cancel();
    assert!(run_a.await.unwrap().is_ok());
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first_b = ticks.by.lock().unwrap().iter().find(|(o, _)| o == "b").map(|(_, at)| *at).expect("b took over");
    assert!(first_b - stopped <= LeaseTimes::default().retry_every, "released, so no wait for expiry");
    stop_b.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_stops_the_task_at_the_next_renewal() {
    let leases = Arc::new(MemLeases::default());
    let ticks = Arc::new(Ticks::default());
    let a = instance(&leases, "a");
    let stop = CancellationToken::new();
    let _run = spawn_lead(&a, "approval-timer", &stop, ticking(ticks.clone(), "a"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ticks.live.load(Ordering::SeqCst), 1);
    leases.steal("approval-timer");
    tokio::time::sleep(LeaseTimes::default().renew_every).await;
    assert_eq!(ticks.live.load(Ordering::SeqCst), 0, "refused renewal: the task is stopped");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_store_outage_longer_than_the_lease_stops_the_task_and_it_resumes_after() {
    let leases = Arc::new(MemLeases::default());
    let ticks = Arc::new(Ticks::default());
    let a = instance(&leases, "a");
    let stop = CancellationToken::new();
    let _run = spawn_lead(&a, "poll:erp", &stop, ticking(ticks.clone(), "a"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    leases.down.store(true, Ordering::SeqCst);
    // Renewals fail; the lease runs out 15 s after it was last taken, and the task stops then.
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert_eq!(ticks.live.load(Ordering::SeqCst), 1, "still within the lease");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ticks.live.load(Ordering::SeqCst), 0, "the lease ran out: stopped");
    leases.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(ticks.live.load(Ordering::SeqCst), 1, "taken again once the store is back");
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_failing_task_releases_its_lease_and_returns_the_error() {
    let leases = Arc::new(MemLeases::default());
    let a = instance(&leases, "a");
    let stop = CancellationToken::new();
    let result = a.lead("poll:bad", stop.clone(), |_| async { Err(TaskError::new("boom")) }).await;
    assert_eq!(result.unwrap_err().0, "boom");
    let b = instance(&leases, "b");
    let ran = Arc::new(AtomicBool::new(false));
    let seen = ran.clone();
    let result = b
        .lead("poll:bad", stop, move |_| {
            let seen = seen.clone();
            async move {
                seen.store(true, Ordering::SeqCst);
                Ok::<(), TaskError>(())
            }
        })
        .await;
    assert!(result.is_ok());
    assert!(ran.load(Ordering::SeqCst), "the failed holder released: b took it at once");
}
