//! R4: two gateway processes share one PostgreSQL store. Every job is executed by exactly one
//! lease owner; when one process is SIGKILLed its leased jobs are taken over by the other within
//! lease TTL + poll interval (TTL shortened to 3 s here).

use crate::common::*;
use std::time::{Duration, Instant};

const CONVERSATIONS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_two_instances_share_postgres() {
    let Some(url) = postgres_url(&unique("r4")).await else { return };
    let _serial = SERIAL.lock().await;
    let env = Env::new().await;
    let settings = Settings { lease: "3s", concurrency: 8, ..Settings::default() };
    let (port_a, port_b) = (testkit::process::free_port().unwrap(), testkit::process::free_port().unwrap());
    let config_a = write_config(env.dir.path(), port_a, &settings);
    let mut a = env.spawn(&config_a, &url);
    a.wait_healthy(&format!("http://127.0.0.1:{port_a}"), Duration::from_secs(30)).await.unwrap();
    let dir_b = env.dir.path().join("b");
    std::fs::create_dir_all(&dir_b).unwrap();
    let config_b = write_config(&dir_b, port_b, &settings);
    let mut b = env.spawn(&config_b, &url);
    b.wait_healthy(&format!("http://127.0.0.1:{port_b}"), Duration::from_secs(30)).await.unwrap();

    // Phase 1: 10 000 events split over both gateways; no faults: every effect exactly once.
    let first_half = produce(env.sender(port_a), CONVERSATIONS, 0..5_000, 2_000, 50);
    let second_half = produce(env.sender(port_b), CONVERSATIONS, 5_000..10_000, 2_000, 50);
    let (mut acked, acked_b) = tokio::join!(first_half, second_half);
    acked.extend(acked_b);
    acked.sort_unstable();
    assert_eq!(acked.len(), 10_000);
    let issued: Vec<u64> = (0..10_000).collect();
    let report = env.wait_delivered(CONVERSATIONS, &issued, &acked, Duration::from_secs(120)).await;
    eprintln!("R4 phase 1: {report:?}");
    // The oracle's per-conversation order is by id; two senders interleave ids of one conversation
    // across gateways, so only loss, corruption and double execution are judged here.
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.corrupted, 0, "{report:?}");
    assert_eq!(report.duplicates, 0, "a job was executed by two lease owners: {report:?}");

    // Phase 2: a backlog behind a slow DingTalk, then SIGKILL one instance.
    env.dingtalk.set_latency(Duration::from_millis(50)).await.unwrap();
    let more = produce(env.sender(port_b), CONVERSATIONS, 10_000..12_000, 4_000, 50).await;
    assert_eq!(more.len(), 2_000);
    b.sigkill().unwrap();
    let killed = Instant::now();
    env.dingtalk.clear_faults().await.unwrap();
    acked.extend(more);
    let issued: Vec<u64> = (0..12_000).collect();
    let report = env.wait_delivered(CONVERSATIONS, &issued, &acked, Duration::from_secs(60)).await;
    let takeover = killed.elapsed();
    eprintln!("R4 phase 2: {report:?}; backlog drained {takeover:?} after the kill");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.corrupted, 0, "{report:?}");
    assert!(report.duplicates <= settings.concurrency as u64, "duplicates above the in-flight bound: {report:?}");
    assert!(takeover <= Duration::from_secs(35), "takeover took {takeover:?}");
    a.sigterm().unwrap();
    a.wait_exit(Duration::from_secs(15)).await;
}
