//! R1: SIGKILL conservation. 10 000 signed events at 1 000/s over 2 000 conversations; the
//! gateway is SIGKILLed three times and restarted within 1 s; the sender retries with the same
//! webhook-id. Lost 0, corrupted 0, order inversions 0; the robot has no dedupe field, so wire
//! duplicates are reported and must stay within the in-flight bound.

use crate::common::*;
use std::time::Duration;

const EVENTS: u64 = 10_000;
const RATE: u64 = 1_000;
const CONVERSATIONS: u64 = 2_000;
const PRODUCERS: u64 = 50;
const KILLS: u64 = 3;

async fn sigkill_conservation(store_url: String) {
    let _serial = SERIAL.lock().await;
    let env = Env::new().await;
    let port = testkit::process::free_port().unwrap();
    let settings = Settings { lease: "2s", concurrency: 8, ..Settings::default() };
    let config = write_config(env.dir.path(), port, &settings);
    let mut gateway = env.spawn(&config, &store_url);
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();

    let sender = env.sender(port);
    let producing = tokio::spawn(produce(sender.clone(), CONVERSATIONS, 0..EVENTS, RATE, PRODUCERS));
    for kill in 1..=KILLS {
        // Kills at ~2.5 s, 5 s, 7.5 s: during intake bursts, delivery bursts and back-offs.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        gateway.sigkill().unwrap();
        gateway.wait_exit(Duration::from_secs(5)).await.expect("the gateway did not die");
        gateway.restart().unwrap();
        gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("restart {kill}: {e}"));
    }
    let acked = producing.await.unwrap();
    let issued: Vec<u64> = (0..EVENTS).collect();
    assert_eq!(acked.len() as u64, EVENTS, "the sender gave up on some events");
    let report = env.wait_delivered(CONVERSATIONS, &issued, &acked, Duration::from_secs(90)).await;
    // In-flight bound: at each kill at most `concurrency` deliveries were on the wire unrecorded.
    let bound = KILLS * settings.concurrency as u64;
    eprintln!("R1 ({store_url}): {report:?}; sender retries {}", sender.retries());
    assert_clean_except_duplicates(&report, bound);

    // Liveness: a fresh event after the last fault is delivered within 10 s.
    let fresh = EVENTS + 1;
    let body = testkit::sender::envelope(
        "item.created",
        jiff::Timestamp::now(),
        testkit::oracle::payload_for(fresh, CONVERSATIONS),
    );
    let sent = tokio::time::Instant::now();
    sender.send(&format!("evt-{fresh}"), &body).await.unwrap();
    let mut all = issued.clone();
    all.push(fresh);
    let mut acked_all = acked.clone();
    acked_all.push(fresh);
    let report = env.wait_delivered(CONVERSATIONS, &all, &acked_all, Duration::from_secs(10)).await;
    assert_eq!(report.lost, 0, "liveness: the fresh event was not delivered within 10 s");
    assert!(sent.elapsed() <= Duration::from_secs(10));
    gateway.sigterm().unwrap();
    let status = gateway.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_sigkill_conservation_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sigkill_conservation(format!("sqlite://{}/r1.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r1_sigkill_conservation_postgres() {
    let Some(url) = postgres_url(&unique("r1")).await else { return };
    sigkill_conservation(url).await;
}
