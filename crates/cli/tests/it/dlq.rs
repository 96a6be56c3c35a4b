//! R10: permanent errors go to the dead-letter store after one attempt with the vendor's text,
//! and a bulk replay of 5 000 dead letters (`dlq retry --all`, a separate process, while the
//! gateway runs) reports progress and delivers every event exactly once, in per-key order.

use crate::common::*;
use connectors::dingtalk::sim::SimRobot;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const EVENTS: u64 = 5_000;
const CONVERSATIONS: u64 = 500;

/// The `e2e` robot with `secret` and no rate limit (as `Env::new` made it).
fn robot(env: &Env, secret: &str) -> SimRobot {
    let mut robot = SimRobot::new("e2e", &env.token, Some(secret));
    robot.per_minute = 0;
    robot
}

/// `dingbridge dlq ARGS --store URL` as a process; (stdout, stderr), panics on failure.
async fn dlq(store_url: &str, args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new(exe())
        .arg("dlq")
        .args(args)
        .arg("--store")
        .arg(store_url)
        .env("DINGBRIDGE_LOG", "warn")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "dlq {args:?} failed: {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status);
    (stdout, stderr)
}

async fn bulk_replay(store_url: String) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let env = Env::new().await;
    // DingTalk refuses every message for good: the gateway signs with a secret the robot does
    // not have (errcode 310000 "sign not match").
    env.dingtalk.sim().upsert_robot(robot(&env, "SECnot-the-robots-secret"));
    let port = testkit::process::free_port().unwrap();
    let config = write_config(env.dir.path(), port, &Settings::default());
    let mut gateway = env.spawn(&config, &store_url);
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();

    let acked = produce(env.sender(port), CONVERSATIONS, 0..EVENTS, 5_000, 50).await;
    assert_eq!(acked.len() as u64, EVENTS);
    let store = store::open(&store_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = store.list_dead(usize::try_from(EVENTS).unwrap() * 2).await.unwrap();
        if dead.len() as u64 >= EVENTS || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dead_after = started.elapsed();
    assert_eq!(dead.len() as u64, EVENTS, "dead letters");
    for d in &dead {
        assert_eq!(d.attempts, 1, "dead after exactly one attempt: {d:?}");
        assert!(d.reason.contains("sign not match"), "the vendor's text is kept: {}", d.reason);
    }
    let jobs: BTreeSet<i64> = dead.iter().filter_map(|d| d.job_id).collect();
    assert_eq!(jobs.len() as u64, EVENTS, "one dead letter per job");
    // The wire agrees: one refused request per event, nothing accepted.
    assert_eq!(env.dingtalk.sim().answer_counts().get(&310_000).copied(), Some(EVENTS));
    assert_eq!(env.dingtalk.message_count("e2e"), 0);
    // The CLI shows the same (as an operator would see it).
    let (listed, _) = dlq(&store_url, &["list", "--json", "--limit", "10000"]).await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len() as u64, EVENTS);
    assert!(listed.iter().all(|d| d["attempts"] == 1 && d["reason"].as_str().unwrap().contains("sign not match")));

    // Fix the robot, then replay everything while the gateway runs.
    env.dingtalk.sim().upsert_robot(robot(&env, &env.secret));
    let replay_started = Instant::now();
    let (stdout, stderr) = dlq(&store_url, &["retry", "--all"]).await;
    let replay_took = replay_started.elapsed();
    assert!(stdout.contains(&format!("replayed {EVENTS} job(s)")), "stdout: {stdout}");
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("replayed ")).collect();
    let expected: Vec<String> = (1..=EVENTS / 500).map(|i| format!("replayed {} of {EVENTS}", i * 500)).collect();
    assert_eq!(progress, expected, "progress on stderr: {stderr}");

    let issued: Vec<u64> = (0..EVENTS).collect();
    let report = env.wait_delivered(CONVERSATIONS, &issued, &acked, Duration::from_secs(30)).await;
    let delivered_after = replay_started.elapsed();
    eprintln!(
        "R10 bulk replay ({}): dead-lettered after {dead_after:?}, replay command {replay_took:?}, \
         all delivered {delivered_after:?} after the replay started; {report:?}",
        store_url.split(':').next().unwrap_or_default()
    );
    assert_clean_except_duplicates(&report, 0);
    assert_eq!(report.delivered_unique, EVENTS);
    assert_eq!(env.dingtalk.sim().answer_counts().get(&0).copied(), Some(EVENTS), "one accepted request per event");
    // Replay did not double the jobs, and nothing is dead any more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.list_dead(10).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "dead letters left after the replay");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stdout, _) = dlq(&store_url, &["retry", "--all"]).await;
    assert!(stdout.contains("replayed 0 job(s)"), "{stdout}");
    gateway.sigterm().unwrap();
    gateway.wait_exit(Duration::from_secs(15)).await;
    eprintln!("R10 bulk replay test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_bulk_replay_of_5000_dead_letters_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    bulk_replay(format!("sqlite://{}/r10.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r10_bulk_replay_of_5000_dead_letters_postgres() {
    let Some(url) = postgres_url(&unique("r10")).await else { return };
    bulk_replay(url).await;
}
