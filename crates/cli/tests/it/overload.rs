//! R26 overload: measure what the gateway accepts closed-loop, then offer 5 × that open-loop for
//! 30 s. It must shed with 503 + `Retry-After` (its concurrency limit and intake queue) instead
//! of growing: peak RSS under 256 MB, every 2xx delivered (lost 0, corrupted 0), and it accepts
//! again afterwards. On a fast machine the overload ends early, once 70,000 events were accepted
//! (what the robot simulator can keep for the check). The test client shares the machine's cores with the gateway: what it offers
//! but cannot put on the wire (past its own in-flight limit) is counted and printed, so the rate
//! actually sent is reported beside the rate offered.

use crate::common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONVERSATIONS: u64 = 2_000;
const OVERLOAD: Duration = Duration::from_secs(30);
/// The listener's concurrency limit for this test (well under the process's file limit).
const MAX_CONCURRENT: usize = 256;
/// Requests the test itself keeps in flight at most; offered requests past it are counted as
/// not sent (the client's own limit, not the gateway's).
const CLIENT_IN_FLIGHT: usize = 2_048;
/// The overload ends early once this many events were accepted in all: the robot simulator keeps
/// the last 100,000 messages, and every accepted event must still be there to be checked.
const ACCEPTED_CAP: usize = 70_000;

#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<u64>>,
    shed: AtomicU64,
    shed_without_retry_after: AtomicU64,
    other_status: AtomicU64,
    errors: AtomicU64,
}

struct Client {
    http: reqwest::Client,
    url: String,
    secret: connect::webhook::WebhookSecret,
    next_id: AtomicU64,
    issued: Mutex<Vec<u64>>,
}

impl Client {
    /// One attempt for a fresh id; records the answer in `tally`. True on 2xx.
    async fn send_one(&self, tally: &Tally) -> bool {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.issued.lock().unwrap().push(id);
        let body = testkit::sender::envelope(
            "item.created",
            jiff::Timestamp::now(),
            testkit::oracle::payload_for(id, CONVERSATIONS),
        );
        let bytes = serde_json::to_vec(&body).unwrap();
        let headers = testkit::sender::signed_headers(
            &self.secret,
            &format!("evt-{id}"),
            jiff::Timestamp::now().as_second(),
            &bytes,
        );
        match self.http.post(&self.url).headers(headers).body(bytes).send().await {
            Ok(resp) if resp.status().is_success() => {
                tally.acked.lock().unwrap().push(id);
                true
            }
            Ok(resp) if resp.status().as_u16() == 503 => {
                tally.shed.fetch_add(1, Ordering::Relaxed);
                if !resp.headers().contains_key("retry-after") {
                    tally.shed_without_retry_after.fetch_add(1, Ordering::Relaxed);
                }
                false
            }
            Ok(_) => {
                tally.other_status.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(_) => {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Accepted events per second with `workers` senders each waiting for its answer.
    async fn closed_loop(self: &Arc<Self>, tally: &Arc<Tally>, workers: usize, for_how_long: Duration) -> f64 {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (client, tally) = (self.clone(), tally.clone());
            tasks.spawn(async move {
                let mut accepted = 0u64;
                while started.elapsed() < for_how_long {
                    if client.send_one(&tally).await {
                        accepted += 1;
                    }
                }
                accepted
            });
        }
        let mut accepted = 0;
        while let Some(n) = tasks.join_next().await {
            accepted += n.unwrap();
        }
        accepted as f64 / started.elapsed().as_secs_f64()
    }
}

async fn overload(store_url: String) {
    let _serial = SERIAL.lock().await;
    let env = Env::new().await;
    let port = testkit::process::free_port().unwrap();
    let config = write_config(env.dir.path(), port, &Settings::default());
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "admin_listen = \"127.0.0.1:0\"\n",
        &format!("admin_listen = \"127.0.0.1:0\"\nmax_concurrent_requests = {MAX_CONCURRENT}\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let mut gateway = env.spawn(&config, &store_url);
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();

    let client = Arc::new(Client {
        http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap(),
        url: format!("{base}/hooks/e2e"),
        secret: connect::webhook::WebhookSecret::parse(SECRET).unwrap(),
        next_id: AtomicU64::new(0),
        issued: Mutex::new(Vec::new()),
    });
    let tally = Arc::new(Tally::default());
    let capacity = client.closed_loop(&tally, 32, Duration::from_secs(3)).await;
    assert!(capacity > 0.0, "nothing accepted while measuring");

    // Open loop: requests start on schedule whether or not earlier ones were answered.
    let offered_rate = 5.0 * capacity;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(CLIENT_IN_FLIGHT));
    let not_sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut offered = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while started.elapsed() < OVERLOAD && tally.acked.lock().unwrap().len() < ACCEPTED_CAP {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * offered_rate) as u64;
        while offered < due {
            offered += 1;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                not_sent.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (client, tally) = (client.clone(), tally.clone());
            tokio::spawn(async move {
                client.send_one(&tally).await;
                drop(permit);
            });
        }
    }
    // Let the last answers come in.
    let _all = in_flight.acquire_many(CLIENT_IN_FLIGHT as u32).await.unwrap();
    // The high-water mark of the gateway's resident memory so far.
    let peak_rss_kb = gateway.peak_rss_kb().unwrap_or(0);
    let overload_secs = started.elapsed().as_secs_f64();
    let acked_during = tally.acked.lock().unwrap().len();

    // Afterwards it accepts at its normal rate again.
    let after = client.closed_loop(&tally, 32, Duration::from_secs(2)).await;
    let shed = tally.shed.load(Ordering::Relaxed);
    eprintln!(
        "R26 ({}): capacity {capacity:.0}/s; offered {offered} in {overload_secs:.1} s ({:.0}/s, {} not sent by \
         the client's own limit); {acked_during} accepted in all so far, {shed} shed with 503, {} other statuses, {} \
         connection errors; peak RSS {} MB; {after:.0}/s accepted afterwards",
        store_url.split(':').next().unwrap_or_default(),
        offered as f64 / overload_secs,
        not_sent.load(Ordering::Relaxed),
        tally.other_status.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
        peak_rss_kb / 1024,
    );
    assert!(shed > 0, "5 × capacity was never shed");
    assert_eq!(tally.shed_without_retry_after.load(Ordering::Relaxed), 0, "a 503 without Retry-After");
    assert_eq!(tally.other_status.load(Ordering::Relaxed), 0, "answers other than 2xx and 503");
    assert!(peak_rss_kb > 0 && peak_rss_kb < 256 * 1024, "peak RSS {peak_rss_kb} kB");
    assert!(after >= 0.25 * capacity, "after the overload {after:.0}/s against {capacity:.0}/s before");

    // Every acknowledged event is delivered, once, as issued.
    let issued = client.issued.lock().unwrap().clone();
    let mut acked = tally.acked.lock().unwrap().clone();
    acked.sort_unstable();
    let report = env.wait_delivered(CONVERSATIONS, &issued, &acked, Duration::from_secs(240)).await;
    eprintln!("R26 ({store_url}): {} acked; {report:?}", acked.len());
    assert_eq!(report.lost, 0, "lost events: {report:?}");
    assert_eq!(report.corrupted, 0, "corrupted deliveries: {report:?}");
    assert_eq!(report.unexpected, 0, "unexpected deliveries: {report:?}");
    gateway.sigterm().unwrap();
    gateway.wait_exit(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r26_overload_sheds_with_503_and_loses_nothing_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    overload(format!("sqlite://{}/r26.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r26_overload_sheds_with_503_and_loses_nothing_postgres() {
    let Some(url) = postgres_url(&unique("r26")).await else { return };
    overload(url).await;
}
