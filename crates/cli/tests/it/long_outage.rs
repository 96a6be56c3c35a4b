//! R12 long outage [long]: the DingTalk robot is down (the simulator answers 503 to every call)
//! for 30 minutes while 50 000 signed events over 100 conversations are accepted at a steady
//! rate. Then it comes back, with a known allowed rate: 3 000 messages per rolling minute (the
//! simulator answers 130101 and blocks the robot for 10 minutes past it; the gateway's robot
//! destination is configured with the same `per_minute`).
//!
//! Pass: intake answers 2xx to every event at the first attempt throughout the outage; the
//! gateway's peak RSS stays under 256 MB; the store grows linearly in accepted events (bytes per
//! event of the last quarter within a factor 2 of the first quarter); after recovery the backlog
//! drains at the allowed rate (no 130101 answer, no rolling minute above the limit, done within
//! the minutes the limit needs plus 30 s) with lost 0, corrupted 0, order inversions 0 and no
//! wire duplicate. The gateway runs its default retry schedule (hours long), as it would in
//! production: with it, no event may be dead-lettered by a 30-minute outage.
//!
//! `DINGBRIDGE_LONG_SCALE` scales the events and the outage, not the allowed rate, so the drain
//! scales with them.

use crate::common::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const FULL_EVENTS: u64 = 50_000;
const FULL_OUTAGE: Duration = Duration::from_secs(30 * 60);
const CONVERSATIONS: u64 = 100;
const PRODUCERS: u64 = 20;
/// The robot's allowed rate after the outage, per rolling 60 s.
const PER_MINUTE: u32 = 3_000;
const RSS_LIMIT_KB: u64 = 256 * 1024;
/// How far the last quarter's bytes per event may be from the first quarter's.
const LINEARITY_FACTOR: f64 = 2.0;

#[derive(Debug, Clone, Copy)]
struct Sample {
    accepted: u64,
    store_bytes: u64,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Bytes per event between the samples at the `from` and `to` fractions of `events` (the first
/// sample at or past each mark).
fn bytes_per_event(samples: &[Sample], events: u64, from: f64, to: f64) -> f64 {
    let at = |fraction: f64| {
        let mark = (events as f64 * fraction) as u64;
        *samples.iter().find(|s| s.accepted >= mark).unwrap_or(samples.last().unwrap())
    };
    let (a, b) = (at(from), at(to));
    (b.store_bytes as f64 - a.store_bytes as f64) / (b.accepted.saturating_sub(a.accepted)).max(1) as f64
}

async fn long_outage(store_url: String) {
    let _serial = SERIAL.lock().await;
    let scale = long_scale();
    let events = scaled_count(FULL_EVENTS, scale, 1_000);
    let outage = FULL_OUTAGE.mul_f64(scale);
    let rate = events as f64 / outage.as_secs_f64();
    eprintln!(
        "R12 ({store_url}): scale {scale}: {events} events during a {:.0} s outage ({rate:.1}/s), then {PER_MINUTE} \
         per minute allowed",
        outage.as_secs_f64()
    );

    let env = Env::with_robot_limit(PER_MINUTE).await;
    let port = testkit::process::free_port().unwrap();
    let settings = Settings { per_minute: PER_MINUTE, retry_schedule: None, ..Settings::default() };
    let config = write_config(env.dir.path(), port, &settings);
    let mut gateway = env.spawn(&config, &store_url);
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    let probe = StoreProbe::connect(&store_url).await;

    env.dingtalk.set_faults(sim::FaultSpec { status: Some(503), ..sim::FaultSpec::default() }).await.unwrap();
    let mut collector = Collector::new(CONVERSATIONS, 0..events);
    let mut samples = vec![Sample { accepted: 0, store_bytes: probe.bytes().await }];
    let sender = env.sender(port);
    let accepted = Arc::new(AtomicU64::new(0));
    let down = tokio::time::Instant::now();
    let requests_before = env.dingtalk.request_count();
    let producing =
        tokio::spawn(produce_timed(sender.clone(), CONVERSATIONS, 0..events, rate, PRODUCERS, accepted.clone()));
    while !producing.is_finished() || down.elapsed() < outage {
        collector.collect_for(&env.dingtalk, Duration::from_secs(1)).await;
        samples.push(Sample { accepted: accepted.load(Ordering::Relaxed), store_bytes: probe.bytes().await });
    }
    let acked = producing.await.unwrap();
    let outage_secs = down.elapsed().as_secs_f64();
    let requests_in_outage = env.dingtalk.request_count() - requests_before;
    let rss_in_outage_kb = gateway.peak_rss_kb().unwrap_or(0);
    // Positive marker that the robot really was down: it was called, and it accepted nothing.
    assert!(requests_in_outage > 0, "the gateway never tried the robot during the outage");
    assert_eq!(env.dingtalk.sim().accepted(), 0, "the robot accepted messages while down");
    samples.push(Sample { accepted: accepted.load(Ordering::Relaxed), store_bytes: probe.bytes().await });

    env.dingtalk.clear_faults().await.unwrap();
    let back_ms = now_ms();
    // The limit lets `PER_MINUTE` through per rolling minute; the gateway counts 61 s for the
    // vendor's 60 (its margin), so the backlog needs `events / PER_MINUTE` such windows; 30 s slack.
    let drain_allowed_s = events * 61 / u64::from(PER_MINUTE) + 30;
    let acked_ids: Vec<u64> = acked.iter().map(|a| a.id).collect();
    let report = collector.wait_delivered(&env.dingtalk, &acked_ids, Duration::from_secs(drain_allowed_s + 120)).await;
    let drained_ms = collector.arrivals.iter().map(|a| a.at_ms).max().unwrap_or(back_ms);
    collector.collect(&env.dingtalk);
    assert_eq!(collector.arrivals.len() as u64, env.dingtalk.sim().accepted(), "robot messages missed");
    let peak_rss_kb = gateway.peak_rss_kb().unwrap_or(0);

    // The most messages in any rolling 60 s (two pointers over the sorted acceptance times).
    let mut times: Vec<i64> = collector.arrivals.iter().map(|a| a.at_ms).collect();
    times.sort_unstable();
    let mut busiest_minute = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= 60_000 {
            start += 1;
        }
        busiest_minute = busiest_minute.max(end + 1 - start);
    }
    let throttled = env.dingtalk.sim().answer_counts().get(&130_101).copied().unwrap_or(0);
    let drain_s = (drained_ms - back_ms) as f64 / 1_000.0;
    let first_after_ms = times.first().map(|t| t - back_ms).unwrap_or(-1);

    let first_quarter = bytes_per_event(&samples, events, 0.0, 0.25);
    let last_quarter = bytes_per_event(&samples, events, 0.75, 1.0);
    let overall = bytes_per_event(&samples, events, 0.0, 1.0);
    let final_bytes = samples.last().map_or(0, |s| s.store_bytes);
    eprintln!(
        "R12 ({store_url}) report: {} of {events} events accepted in {outage_secs:.0} s of outage, sender retries {}; \
         {requests_in_outage} robot calls during the outage ({:.2}/s); store {:.1} MB after the outage, {overall:.0} \
         bytes/event (first quarter {first_quarter:.0}, last quarter {last_quarter:.0}, {} samples); peak RSS {} MB \
         ({} MB at the end of the outage); first delivery {first_after_ms} ms after recovery, drained in {drain_s:.1} \
         s ({:.1}/s; allowed {PER_MINUTE}/min = {:.1}/s, budget {drain_allowed_s} s), busiest minute {busiest_minute}, \
         130101 answers {throttled}; {report}",
        acked.len(),
        sender.retries(),
        requests_in_outage as f64 / outage_secs,
        final_bytes as f64 / 1e6,
        samples.len(),
        peak_rss_kb / 1024,
        rss_in_outage_kb / 1024,
        collector.arrivals.len() as f64 / drain_s.max(0.001),
        f64::from(PER_MINUTE) / 60.0,
    );

    assert_eq!(acked.len() as u64, events, "intake stopped accepting during the outage");
    assert_eq!(sender.retries(), 0, "intake answered something other than 2xx during the outage");
    assert!(peak_rss_kb > 0 && peak_rss_kb < RSS_LIMIT_KB, "peak RSS {peak_rss_kb} kB");
    assert!(first_quarter > 0.0 && last_quarter > 0.0, "the store did not grow: {samples:?}");
    let ratio = last_quarter / first_quarter;
    assert!(
        (1.0 / LINEARITY_FACTOR..=LINEARITY_FACTOR).contains(&ratio),
        "store growth is not linear: {last_quarter:.0} bytes/event in the last quarter, {first_quarter:.0} in the first"
    );
    assert_clean_except_duplicates(&report, 0);
    assert_eq!(throttled, 0, "the backlog was sent faster than the robot allows");
    assert!(busiest_minute <= PER_MINUTE as usize, "{busiest_minute} messages in one minute");
    assert!(
        drain_s <= drain_allowed_s as f64,
        "the backlog took {drain_s:.0} s to drain; {PER_MINUTE}/min allows it in {drain_allowed_s} s"
    );
    gateway.sigterm().unwrap();
    let status = gateway.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long tier: R12, 30 minutes of outage and a 17-minute drain at full scale (DINGBRIDGE_LONG_SCALE)"]
async fn long_r12_outage_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    long_outage(format!("sqlite://{}/r12.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long tier: R12, 30 minutes of outage and a 17-minute drain at full scale (DINGBRIDGE_LONG_SCALE)"]
async fn long_r12_outage_postgres() {
    let Some(url) = postgres_url(&unique("r12")).await else { return };
    long_outage(url).await;
}
