//! R1's named crash points: the gateway aborts (as SIGKILL would) exactly in each classic
//! loss/duplicate window; a fresh gateway on the same store must then deliver every acknowledged
//! event, once in effect, in order per conversation. Built with `--features crashpoints`.
#![cfg(feature = "crashpoints")]

use crate::common::*;
use std::time::Duration;
use testkit::process::GatewayCommand;

const EVENTS: u64 = 2_000;
const CONVERSATIONS: u64 = 200;

async fn crash_at(point: &str, nth: u64, store_url: String) {
    let _serial = SERIAL.lock().await;
    let env = Env::new().await;
    let port = testkit::process::free_port().unwrap();
    let settings = Settings { lease: "2s", concurrency: 8 };
    let config = write_config(env.dir.path(), port, &settings);
    let base = format!("http://127.0.0.1:{port}");
    let command = |crash: Option<String>| {
        let mut command = GatewayCommand::new(exe())
            .arg("run")
            .arg("-c")
            .arg(&config)
            .arg("--store")
            .arg(&store_url)
            .arg("--sim-endpoints")
            .arg(env.dir.path().join("sims.json"))
            .env("E2E_WEBHOOK_SECRET", SECRET)
            .env("E2E_ROBOT_TOKEN", &env.token)
            .env("E2E_ROBOT_SECRET", &env.secret)
            .env("DINGBRIDGE_LOG", "warn");
        if let Some(crash) = crash {
            command = command.env("DINGBRIDGE_CRASHPOINT", crash);
        }
        command
    };
    let mut doomed = command(Some(format!("{point}:{nth}"))).spawn().unwrap();
    doomed.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();

    let producing = tokio::spawn(produce(env.sender(port), CONVERSATIONS, 0..EVENTS, 1_000, 20));
    let status = doomed.wait_exit(Duration::from_secs(20)).await.expect("the crash point was never reached");
    assert!(!status.success(), "{point}: expected an abort, got {status:?}");
    assert!(doomed.stderr().contains("crash point"), "{point}: {}", doomed.stderr());

    let mut survivor = command(None).spawn().unwrap();
    survivor.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    let acked = producing.await.unwrap();
    assert_eq!(acked.len() as u64, EVENTS, "{point}: the sender gave up on some events");
    let issued: Vec<u64> = (0..EVENTS).collect();
    let report = env.wait_delivered(CONVERSATIONS, &issued, &acked, Duration::from_secs(60)).await;
    eprintln!("crash at {point} ({store_url}): {report:?}");
    assert_clean_except_duplicates(&report, settings.concurrency as u64);
    if point == crashpoint::AFTER_DELIVERY {
        // The delivery that crashed before being marked done is re-sent: the robot has no dedupe
        // key, so exactly this window shows up as a counted wire duplicate.
        assert!(report.duplicates >= 1, "the after-delivery window produced no duplicate: {report:?}");
    }
    survivor.sigterm().unwrap();
    survivor.wait_exit(Duration::from_secs(15)).await;
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/crash.db", dir.path().display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_intake_commit_before_2xx_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_at(crashpoint::AFTER_INTAKE_COMMIT, 300, sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_group_commit_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_at(crashpoint::MID_GROUP_COMMIT, 40, sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_group_commit_postgres() {
    let Some(url) = postgres_url(&unique("crash_gc")).await else { return };
    crash_at(crashpoint::MID_GROUP_COMMIT, 40, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_delivery_before_done_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    crash_at(crashpoint::AFTER_DELIVERY, 300, sqlite_url(&dir)).await;
}
