//! R2: SIGTERM drain. Events are queued behind a slow DingTalk; SIGTERM makes the gateway refuse
//! new webhooks with 503 + Retry-After, finish or release its in-flight deliveries and exit 0
//! within 10 s. After a restart everything is delivered and nothing was sent twice.

use crate::common::*;
use std::time::{Duration, Instant};

const EVENTS: u64 = 5_000;
const CONVERSATIONS: u64 = 500;

async fn sigterm_drain(store_url: String) {
    let _serial = SERIAL.lock().await;
    let env = Env::new().await;
    let port = testkit::process::free_port().unwrap();
    let settings = Settings { lease: "30s", concurrency: 8, ..Settings::default() };
    let config = write_config(env.dir.path(), port, &settings);
    let mut gateway = env.spawn(&config, &store_url);
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();

    // A slow DingTalk keeps deliveries in flight and a backlog queued.
    env.dingtalk.set_latency(Duration::from_millis(100)).await.unwrap();
    let sender = env.sender(port);
    let acked = produce(sender.clone(), CONVERSATIONS, 0..EVENTS, 5_000, 50).await;
    assert_eq!(acked.len() as u64, EVENTS);

    let stopping = Instant::now();
    gateway.sigterm().unwrap();
    // The signal is handled asynchronously: a request that lands before the gateway has seen it
    // is legitimately accepted. Once /healthz says it is draining (within 1 s), nothing may be.
    let client = reqwest::Client::new();
    while gateway.is_running() {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(resp) if resp.status().as_u16() == 503 => break,
            Err(_) => break,
            Ok(_) => {}
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(1),
            "the gateway did not start draining within 1 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Hammer the intake while it drains: nothing may be accepted.
    let mut refused_503 = 0;
    let mut accepted_after = 0;
    while stopping.elapsed() < Duration::from_secs(12) && gateway.is_running() {
        let body = testkit::sender::envelope(
            "item.created",
            jiff::Timestamp::now(),
            testkit::oracle::payload_for(EVENTS + 7, CONVERSATIONS),
        );
        let bytes = serde_json::to_vec(&body).unwrap();
        let headers = testkit::sender::signed_headers(
            &connect::webhook::WebhookSecret::parse(SECRET).unwrap(),
            "late-1",
            jiff::Timestamp::now().as_second(),
            &bytes,
        );
        if let Ok(resp) = client.post(format!("{base}/hooks/e2e")).headers(headers).body(bytes).send().await {
            if resp.status().is_success() {
                accepted_after += 1;
            } else if resp.status().as_u16() == 503 {
                assert!(resp.headers().contains_key("retry-after"), "503 without Retry-After");
                refused_503 += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status =
        gateway.wait_exit(Duration::from_secs(10)).await.expect("the gateway did not exit within 10 s of SIGTERM");
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    assert!(stopping.elapsed() <= Duration::from_secs(11), "drain took {:?}", stopping.elapsed());
    assert_eq!(accepted_after, 0, "a webhook was accepted after SIGTERM");
    eprintln!("R2: {refused_503} requests refused with 503 while draining");

    env.dingtalk.clear_faults().await.unwrap();
    gateway.restart().unwrap();
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    let issued: Vec<u64> = (0..EVENTS).collect();
    let report = env.wait_delivered(CONVERSATIONS, &issued, &acked, Duration::from_secs(90)).await;
    eprintln!("R2 ({store_url}): {report:?}");
    // A graceful stop must not re-send anything: zero wire duplicates.
    assert_clean_except_duplicates(&report, 0);
    gateway.sigterm().unwrap();
    gateway.wait_exit(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_sigterm_drain_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    sigterm_drain(format!("sqlite://{}/r2.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r2_sigterm_drain_postgres() {
    let Some(url) = postgres_url(&unique("r2")).await else { return };
    sigterm_drain(url).await;
}
