//! R8 across a SIGKILL, with processes: the robot takes 5 messages per rolling minute (the
//! simulator and the gateway's `per_minute` alike). The gateway sends the first 5 of 8 events at
//! once, is SIGKILLed while the other 3 wait for the window, and a fresh gateway on the same store
//! sends them only when the window has room again, because the permits the first one took are in
//! the store's pacing ledger: no 130101 from the simulator, no rolling minute with more than 5,
//! every message once and in order.

use crate::common::*;
use std::time::Duration;

const PER_MINUTE: u32 = 5;
const EVENTS: u64 = 8;

async fn robot_pacing_survives_a_sigkill(store_url: String) {
    let _serial = SERIAL.lock().await;
    let env = Env::with_robot_limit(PER_MINUTE).await;
    let port = testkit::process::free_port().unwrap();
    let settings = Settings { per_minute: PER_MINUTE, ..Settings::default() };
    let config = write_config(env.dir.path(), port, &settings);
    let base = format!("http://127.0.0.1:{port}");
    let mut gateway = env.spawn(&config, &store_url);
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();

    // One conversation: the order of the eight is the order they must arrive in.
    let acked = produce(env.sender(port), 1, 0..EVENTS, 50, 1).await;
    assert_eq!(acked.len() as u64, EVENTS, "the sender gave up on some events");
    let started = std::time::Instant::now();
    while env.dingtalk.message_count("e2e") < u64::from(PER_MINUTE) {
        assert!(started.elapsed() < Duration::from_secs(20), "the first window's messages never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mid-minute: the window is full and the other three wait in the store for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.dingtalk.message_count("e2e"), u64::from(PER_MINUTE), "a sixth message went out within the minute");
    gateway.sigkill().unwrap();
    gateway.wait_exit(Duration::from_secs(5)).await.expect("the gateway did not die");
    gateway.restart().unwrap();
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();

    let issued: Vec<u64> = (0..EVENTS).collect();
    let report = env.wait_delivered(1, &issued, &acked, Duration::from_secs(120)).await;
    let times: Vec<i64> = env.dingtalk.messages("e2e").iter().map(|m| m.at.as_millisecond()).collect();
    let busiest_minute = (0..times.len())
        .map(|end| times[..=end].iter().filter(|t| times[end] - **t < 60_000).count())
        .max()
        .unwrap_or(0);
    let throttled = env.dingtalk.sim().answer_counts().get(&130_101).copied().unwrap_or(0);
    let gap = times.get(PER_MINUTE as usize).zip(times.first()).map(|(sixth, first)| sixth - first);
    eprintln!(
        "R8 across a SIGKILL ({}): {} messages, busiest rolling minute {busiest_minute}, 130101 answers {throttled}, \
         sixth message {gap:?} ms after the first; {report:?}",
        store_url.split(':').next().unwrap_or_default(),
        times.len(),
    );
    assert_clean_except_duplicates(&report, 0);
    assert_eq!(throttled, 0, "the restarted gateway sent into a full window");
    assert!(busiest_minute <= PER_MINUTE as usize, "{busiest_minute} messages in one rolling minute");
    assert!(gap.is_some_and(|ms| ms >= 60_000), "the sixth message did not wait for the window: {gap:?}");
    gateway.sigterm().unwrap();
    gateway.wait_exit(Duration::from_secs(15)).await;
}

#[tokio::test]
async fn robot_pacing_survives_a_sigkill_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    robot_pacing_survives_a_sigkill(format!("sqlite://{}/pacing.db", dir.path().display())).await;
}

#[tokio::test]
async fn robot_pacing_survives_a_sigkill_postgres() {
    let Some(url) = postgres_url(&unique("pacing_kill")).await else { return };
    robot_pacing_survives_a_sigkill(url).await;
}
