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
    // Every replayed job has its audit row, written by the CLI (this gateway has no audit key,
    // so neither has the chain).
    let audited = store.audit_list(i64::MIN, 0, 20_000).await.unwrap();
    let replayed: BTreeSet<i64> = audited
        .iter()
        .filter(|r| r.actor == "cli" && r.action == "dlq.replayed")
        .map(|r| r.subject.parse().unwrap())
        .collect();
    assert_eq!(audited.len() as u64, EVENTS);
    assert_eq!(replayed, jobs);
    assert_eq!(store.audit_verify().await.unwrap(), store::AuditVerification::Intact { rows: EVENTS });
    let (stdout, _) = dlq(&store_url, &["retry", "--all"]).await;
    assert!(stdout.contains("replayed 0 job(s)"), "{stdout}");
    assert_eq!(
        store.audit_list(i64::MIN, 0, 20_000).await.unwrap().len() as u64,
        EVENTS,
        "nothing replayed, nothing audited"
    );
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

/// `dlq retry` and `dlq drop` write one audit row per job / dead letter (actor `cli`), and on a
/// keyed chain they need its key: without it (or with another) they change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_retry_and_drop_are_audited_with_the_key() {
    const KEY: &str = "dlq-cli-audit-key-0123456789abcdef-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/dlq.db", dir.path().display());
    let key = store::AuditKey::new(KEY).unwrap();
    let (job_id, letter_id) = {
        let store = store::open_with_audit_key(&url, Some(key.clone())).await.unwrap();
        store.audit_bind_key().await.unwrap();
        let job = store::NewJob {
            flow: "f".into(),
            destination: "parked".into(),
            ordering_key: "k".into(),
            idempotency_key: "dlq-audit-1".into(),
            payload: "{}".into(),
            next_attempt_at: 0,
            coalesce: false,
        };
        let intake = |dedup: &str, jobs: Vec<store::NewJob>, dead: Option<&str>| store::Intake {
            dedup_key: dedup.into(),
            event_id: dedup.into(),
            source: "erp".into(),
            received_at: 0,
            event_json: "{}".into(),
            jobs,
            dead_letter: dead.map(|reason| store::NewDeadLetter { reason: reason.into() }),
        };
        store.ingest(&[intake("d1", vec![job], None), intake("d2", vec![], Some("unreadable"))]).await.unwrap();
        let claimed = store.claim("parked", "test", 1, 60_000, 1).await.unwrap();
        store.dead_letter(claimed[0].lease(), "HTTP 400", 2).await.unwrap();
        let letter = store.list_dead(10).await.unwrap().into_iter().find(|d| d.job_id.is_none()).unwrap();
        store.close().await;
        (claimed[0].id, letter.id)
    };
    let run = |args: Vec<String>, env_key: Option<&'static str>| {
        let mut command = std::process::Command::new(exe());
        command.arg("dlq").args(args).env("DINGBRIDGE_LOG", "warn");
        match env_key {
            Some(k) => command.env("DINGBRIDGE_AUDIT_KEY", k),
            None => command.env_remove("DINGBRIDGE_AUDIT_KEY"),
        };
        let out = command.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let args = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let job = job_id.to_string();
    let letter = letter_id.to_string();

    // Without the key, or with another one: refused before anything changes.
    let (code, text) = run(args(&["retry", &job, "--store", &url]), None);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("no audit key was given") && text.contains("--key-file PATH"), "{text}");
    let (code, text) = run(args(&["drop", &letter, "--store", &url]), Some("some-other-audit-key-0123456789abcdef-01"));
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("wrong audit key"), "{text}");
    let reader = store::open(&url).await.unwrap();
    assert_eq!(reader.list_dead(10).await.unwrap().len(), 2, "nothing replayed or dropped");
    assert_eq!(reader.audit_head().await.unwrap().seq, 0, "nothing audited");
    // `dlq list` reads only, and needs no key.
    let (code, text) = run(args(&["list", "--store", &url]), None);
    assert_eq!(code, Some(0), "{text}");

    // With the key (a file, then a config naming it): done and audited.
    let key_path = dir.path().join("audit.key");
    std::fs::write(&key_path, format!("{KEY}\n")).unwrap();
    let (code, text) = run(args(&["retry", &job, "--store", &url, "--key-file", key_path.to_str().unwrap()]), None);
    assert_eq!(code, Some(0), "{text}");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!("[store]\nurl = \"{url}\"\n\n[audit]\nkey = {{ env = \"DINGBRIDGE_AUDIT_KEY\" }}\n"),
    )
    .unwrap();
    // Listing reads no key: it works where the key's variable is not set.
    let (code, text) = run(args(&["list", "-c", config.to_str().unwrap()]), None);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(args(&["drop", &letter, "-c", config.to_str().unwrap()]), Some(KEY));
    assert_eq!(code, Some(0), "{text}");

    let keyed = store::open_with_audit_key(&url, Some(key)).await.unwrap();
    assert!(keyed.list_dead(10).await.unwrap().is_empty());
    let rows = keyed.audit_list(i64::MIN, 0, 10).await.unwrap();
    let shown: Vec<_> = rows.iter().map(|r| (r.actor.as_str(), r.action.as_str(), r.subject.as_str())).collect();
    assert_eq!(shown, [("cli", "dlq.replayed", job.as_str()), ("cli", "dlq.dropped", letter.as_str())]);
    assert_eq!(keyed.audit_verify().await.unwrap(), store::AuditVerification::Intact { rows: 2 });
}
