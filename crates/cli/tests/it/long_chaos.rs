//! R3 random signal chaos [long]: 100 000 signed events over 10 minutes at a steady rate over
//! 2 000 conversations, while the gateway gets a SIGKILL or a SIGTERM, chosen at random, every
//! 15–45 s (Restate's `cluster_chaos_test` pattern), and is restarted on the same store at once.
//!
//! Pass, as R1: lost 0, corrupted 0, order inversions 0; the robot has no dedupe field, so wire
//! duplicates are reported and attributed to the fault that preceded them: at most the in-flight
//! bound (concurrency × batch size 1) per SIGKILL, 0 per SIGTERM, 0 outside any fault. Besides:
//! delivery throughput is back to ≥ 80 % of the steady rate within 5 s of every restart, a fresh
//! event after the last fault is delivered within 10 s, and the report gives the end-to-end
//! latency (first send → robot) with its p99.
//!
//! `DINGBRIDGE_LONG_SCALE` scales the events and the run time, not the fault interval (faults
//! closer than the 5 s recovery window would measure something else); `DINGBRIDGE_LONG_SEED`
//! replays a run's fault sequence.

use crate::common::*;
use rand::{Rng, SeedableRng};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

const FULL_EVENTS: u64 = 100_000;
const FULL_RUN: Duration = Duration::from_secs(600);
const CONVERSATIONS: u64 = 2_000;
const PRODUCERS: u64 = 50;
const CONCURRENCY: usize = 8;
/// A fault every 15–45 s.
const FAULT_GAP_MS: std::ops::RangeInclusive<u64> = 15_000..=45_000;
/// Throughput must be back to this share of the steady rate ...
const RECOVERED_SHARE: f64 = 0.8;
/// ... within this long of the restart.
const RECOVERY_LIMIT_MS: i64 = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Kill,
    Term,
}

#[derive(Debug)]
struct Fault {
    kind: Kind,
    /// Wall-clock ms of the signal and of the new process's spawn.
    signalled_ms: i64,
    restarted_ms: i64,
    /// From the signal to the old process's exit.
    exit_ms: i64,
    /// From the spawn to `/healthz` answering 2xx.
    boot_ms: i64,
    /// Peak RSS of the run that was stopped (kB).
    peak_rss_kb: u64,
    /// From the spawn to the end of the first whole second after it delivering ≥ 80 % of the
    /// steady rate (None: not within 20 s).
    recovery_ms: Option<i64>,
    /// Wire duplicates first seen after this restart (and before the next fault).
    duplicates: u64,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Messages accepted by the robot in `[from, to)` (`times` sorted).
fn arrivals_between(times: &[i64], from: i64, to: i64) -> usize {
    times.partition_point(|t| *t < to) - times.partition_point(|t| *t < from)
}

async fn random_signal_chaos(store_url: String) {
    let _serial = SERIAL.lock().await;
    let scale = long_scale();
    let events = scaled_count(FULL_EVENTS, scale, 1_000);
    let run = FULL_RUN.mul_f64(scale);
    let rate = events as f64 / run.as_secs_f64();
    let seed = std::env::var("DINGBRIDGE_LONG_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| u64::try_from(now_ms()).unwrap_or(0));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    eprintln!(
        "R3 ({store_url}): scale {scale}: {events} events over {:.0} s ({rate:.0}/s), seed {seed}",
        run.as_secs_f64()
    );

    let env = Env::new().await;
    let port = testkit::process::free_port().unwrap();
    let settings = Settings { lease: "2s", concurrency: CONCURRENCY, ..Settings::default() };
    let config = write_config(env.dir.path(), port, &settings);
    let mut gateway = env.spawn(&config, &store_url);
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();

    // One id past the stream is the liveness event sent after the last fault.
    let fresh = events;
    let mut collector = Collector::new(CONVERSATIONS, 0..events + 1);
    let sender = env.sender(port);
    let accepted = Arc::new(AtomicU64::new(0));
    let started_ms = now_ms();
    let started = tokio::time::Instant::now();
    let producing =
        tokio::spawn(produce_timed(sender.clone(), CONVERSATIONS, 0..events, rate, PRODUCERS, accepted.clone()));

    let mut faults: Vec<Fault> = Vec::new();
    loop {
        let gap = Duration::from_millis(rng.gen_range(FAULT_GAP_MS));
        // The last restart needs the stream still running behind it to measure its recovery.
        if started.elapsed() + gap + Duration::from_secs(10) >= run {
            break;
        }
        collector.collect_for(&env.dingtalk, gap).await;
        let kind = if rng.gen_bool(0.5) { Kind::Kill } else { Kind::Term };
        let peak_rss_kb = gateway.peak_rss_kb().unwrap_or(0);
        let signalled_ms = now_ms();
        match kind {
            Kind::Kill => {
                gateway.sigkill().unwrap();
                gateway.wait_exit(Duration::from_secs(5)).await.expect("the gateway did not die on SIGKILL");
            }
            Kind::Term => {
                gateway.sigterm().unwrap();
                let status = gateway.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
                assert!(status.success(), "exit status after SIGTERM: {status:?}");
            }
        }
        let exit_ms = now_ms() - signalled_ms;
        if kind == Kind::Term {
            assert!(exit_ms <= 10_500, "the SIGTERM drain took {exit_ms} ms");
        }
        gateway.restart().unwrap();
        let restarted_ms = now_ms();
        gateway
            .wait_healthy(&base, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("restart {} ({kind:?}): {e}", faults.len() + 1));
        let boot_ms = now_ms() - restarted_ms;
        faults.push(Fault {
            kind,
            signalled_ms,
            restarted_ms,
            exit_ms,
            boot_ms,
            peak_rss_kb,
            recovery_ms: None,
            duplicates: 0,
        });
    }
    let last_fault_ms = now_ms();
    // Keep collecting while the producers finish (the simulator keeps only the last 100 000).
    while !producing.is_finished() {
        collector.collect_for(&env.dingtalk, Duration::from_millis(500)).await;
    }
    let acked = producing.await.unwrap();
    let produced_ms = now_ms();
    assert_eq!(acked.len() as u64, events, "the sender gave up on some events");
    let acked_ids: Vec<u64> = acked.iter().map(|a| a.id).collect();
    let report = collector.wait_delivered(&env.dingtalk, &acked_ids, Duration::from_secs(120)).await;

    // Liveness: a fresh event after the last fault is delivered within 10 s.
    let body = testkit::sender::envelope(
        "item.created",
        jiff::Timestamp::now(),
        testkit::oracle::payload_for(fresh, CONVERSATIONS),
    );
    let sent = tokio::time::Instant::now();
    sender.send(&format!("evt-{fresh}"), &body).await.unwrap();
    let mut with_fresh = acked_ids.clone();
    with_fresh.push(fresh);
    let live = collector.wait_delivered(&env.dingtalk, &with_fresh, Duration::from_secs(10)).await;
    let liveness = sent.elapsed();
    // Nothing arrived that the collector did not see (it reads only what is new).
    collector.collect(&env.dingtalk);
    assert_eq!(collector.arrivals.len() as u64, env.dingtalk.sim().accepted(), "robot messages missed");

    // Steady rate: the median whole second of deliveries while the stream ran. Faults take a
    // few seconds of every 15–45, so the median is a second of normal running.
    let mut times: Vec<i64> = collector.arrivals.iter().map(|a| a.at_ms).collect();
    times.sort_unstable();
    let first_delivery = times.first().copied().unwrap_or(started_ms);
    let mut per_second: Vec<i64> = (0..)
        .map(|s| first_delivery + s * 1_000)
        .take_while(|from| from + 1_000 <= produced_ms)
        .map(|from| arrivals_between(&times, from, from + 1_000) as i64)
        .collect();
    let steady = quantile(&mut per_second, 0.5) as f64;
    for fault in &mut faults {
        // The first whole second after the spawn (none of it before) at ≥ 80 % of steady.
        fault.recovery_ms = (1_000..=20_000).step_by(100).find(|end| {
            let window_end = fault.restarted_ms + end;
            arrivals_between(&times, window_end - 1_000, window_end) as f64 >= RECOVERED_SHARE * steady
        });
    }

    // Wire duplicates, each charged to the restart that preceded its re-delivery; one whose first
    // delivery came after that restart too happened inside one run, with no fault to explain it.
    let mut deliveries: std::collections::HashMap<u64, Vec<i64>> = std::collections::HashMap::new();
    for arrival in &collector.arrivals {
        if let Some(id) = arrival.id {
            deliveries.entry(id).or_default().push(arrival.at_ms);
        }
    }
    let mut unexplained = 0u64;
    for at in deliveries.values_mut().filter(|at| at.len() > 1) {
        at.sort_unstable();
        for again in &at[1..] {
            match faults.iter().rposition(|f| f.restarted_ms <= *again) {
                Some(i) if at[0] < faults[i].restarted_ms => faults[i].duplicates += 1,
                _ => unexplained += 1,
            }
        }
    }

    // End-to-end latency: first send of an event → its first delivery; and 2xx → delivery.
    let mut from_offer = Vec::with_capacity(acked.len());
    let mut from_ack = Vec::with_capacity(acked.len());
    for a in &acked {
        if let Some(first) = deliveries.get(&a.id).and_then(|at| at.iter().min()) {
            from_offer.push(first - a.offered_ms);
            from_ack.push(first - a.acked_ms);
        }
    }
    let kills = faults.iter().filter(|f| f.kind == Kind::Kill).count();
    let terms = faults.len() - kills;
    let peak_rss_kb = faults.iter().map(|f| f.peak_rss_kb).chain(gateway.peak_rss_kb()).max().unwrap_or(0);
    eprintln!(
        "R3 ({store_url}) report: {events} events in {:.0} s, {} faults ({kills} SIGKILL, {terms} SIGTERM), \
         faults until {:.0} s; {report}; sender retries {}; steady {steady:.0} deliveries/s; latency offer→robot \
         p50 {} ms p99 {} ms max {} ms, 2xx→robot p99 {} ms; liveness {} ms; peak RSS {} MB",
        (produced_ms - started_ms) as f64 / 1_000.0,
        faults.len(),
        (last_fault_ms - started_ms) as f64 / 1_000.0,
        sender.retries(),
        quantile(&mut from_offer, 0.5),
        quantile(&mut from_offer, 0.99),
        quantile(&mut from_offer, 1.0),
        quantile(&mut from_ack, 0.99),
        liveness.as_millis(),
        peak_rss_kb / 1024,
    );
    for (i, f) in faults.iter().enumerate() {
        eprintln!(
            "R3   fault {}: {:?} at {:.1} s, exit {} ms, boot {} ms, throughput ≥ 80 % after {}, wire duplicates {}, \
             run peak RSS {} MB",
            i + 1,
            f.kind,
            (f.signalled_ms - started_ms) as f64 / 1_000.0,
            f.exit_ms,
            f.boot_ms,
            f.recovery_ms.map_or("never (20 s)".to_string(), |ms| format!("{ms} ms")),
            f.duplicates,
            f.peak_rss_kb / 1024,
        );
    }
    eprintln!("R3   wire duplicates outside any fault: {unexplained}");

    assert!(!faults.is_empty(), "the run was too short for a single fault");
    assert_clean_except_duplicates(&report, kills as u64 * CONCURRENCY as u64);
    assert_eq!(live.lost, 0, "liveness: the fresh event was not delivered within 10 s");
    assert_eq!(unexplained, 0, "wire duplicates with no fault before them");
    for (i, f) in faults.iter().enumerate() {
        match f.kind {
            Kind::Kill => assert!(
                f.duplicates <= CONCURRENCY as u64,
                "fault {}: {} wire duplicates after a SIGKILL, above the in-flight bound {CONCURRENCY}",
                i + 1,
                f.duplicates
            ),
            Kind::Term => assert_eq!(f.duplicates, 0, "fault {}: a graceful stop sent something twice", i + 1),
        }
        let recovered = f.recovery_ms.unwrap_or(i64::MAX);
        assert!(
            recovered <= RECOVERY_LIMIT_MS,
            "fault {} ({:?}): throughput below 80 % of {steady:.0}/s for {recovered} ms after the restart",
            i + 1,
            f.kind
        );
    }
    gateway.sigterm().unwrap();
    let status = gateway.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long tier: R3, 10 minutes at full scale (DINGBRIDGE_LONG_SCALE)"]
async fn long_r3_random_signal_chaos_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    random_signal_chaos(format!("sqlite://{}/r3.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long tier: R3, 10 minutes at full scale (DINGBRIDGE_LONG_SCALE)"]
async fn long_r3_random_signal_chaos_postgres() {
    let Some(url) = postgres_url(&unique("r3")).await else { return };
    random_signal_chaos(url).await;
}
