//! R4 extended: two gateway processes on one PostgreSQL schema run each singleton task once. A
//! NetSuite source polled every second: the simulator's journal shows one SuiteQL poll per
//! interval with one instance and still one with two (not two); SIGKILL the leader and the other
//! instance resumes polling within 30 s (lease TTL 15 s + one 3 s retry).

use crate::common::*;
use connectors::netsuite::sim::seed as ns_seed;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::erp::ErpSims;
use testkit::process::{Gateway, GatewayCommand};

const POLL: Duration = Duration::from_secs(1);
/// How long each phase counts polls.
const WINDOW: Duration = Duration::from_secs(12);
const SUITEQL: &str = "/services/rest/query/v1/suiteql";

fn config(port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"

[netsuite.accounts.main]
account_id = "{account}"
consumer_key = "{ck}"
consumer_secret = {{ env = "SINGLE_NS_CONSUMER_SECRET" }}
token_id = "{token}"
token_secret = {{ env = "SINGLE_NS_TOKEN_SECRET" }}
time_zone = "UTC"

[sources.ns]
type = "netsuite"
account = "main"
objects = ["itemFulfillment"]
poll = "1s"
"#,
        account = ns_seed::ACCOUNT,
        ck = ns_seed::CONSUMER_KEY,
        token = ns_seed::TOKEN_ID,
    )
}

fn spawn(dir: &Path, name: &str, port: u16, store: &str) -> Gateway {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config(port)).unwrap();
    GatewayCommand::new(exe())
        .arg("run")
        .arg("-c")
        .arg(&path)
        .arg("--store")
        .arg(store)
        .arg("--sim-endpoints")
        .arg(dir.join("sims.json"))
        .env("SINGLE_NS_CONSUMER_SECRET", ns_seed::CONSUMER_SECRET)
        .env("SINGLE_NS_TOKEN_SECRET", ns_seed::TOKEN_SECRET)
        .env("DINGBRIDGE_LOG", "info")
        .spawn()
        .unwrap()
}

/// SuiteQL polls the simulator has answered so far.
fn polls(sims: &ErpSims) -> usize {
    sims.state("netsuite").requests(0, Some(SUITEQL)).len()
}

/// Polls per interval over `WINDOW`, from now.
async fn polls_per_interval(sims: &ErpSims) -> f64 {
    let before = polls(sims);
    tokio::time::sleep(WINDOW).await;
    (polls(sims) - before) as f64 / (WINDOW.as_secs_f64() / POLL.as_secs_f64())
}

/// Whether `gateway` logged that it took the lease of the `poll:ns` task.
fn leads(gateway: &Gateway) -> bool {
    gateway.stderr().lines().any(|l| l.contains("Leadership gained") && l.contains("poll:ns"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_two_instances_poll_once_per_interval_and_the_survivor_takes_over_a_killed_leader() {
    let Some(url) = postgres_url(&unique("r4single")).await else { return };
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sims = ErpSims::start().await.unwrap();
    let mut endpoints = std::collections::BTreeMap::new();
    sims.endpoints(&mut endpoints);
    std::fs::write(dir.path().join("sims.json"), serde_json::to_string(&endpoints).unwrap()).unwrap();

    let (port_a, port_b) = (testkit::process::free_port().unwrap(), testkit::process::free_port().unwrap());
    let mut a = spawn(dir.path(), "a", port_a, &url);
    a.wait_healthy(&format!("http://127.0.0.1:{port_a}"), Duration::from_secs(30)).await.unwrap();
    // The first poll only records where to start; wait for the polls with a cursor.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let one = polls_per_interval(&sims).await;
    eprintln!("R4 singletons: one instance: {one:.2} polls per {POLL:?} interval");

    let mut b = spawn(dir.path(), "b", port_b, &url);
    b.wait_healthy(&format!("http://127.0.0.1:{port_b}"), Duration::from_secs(30)).await.unwrap();
    let two = polls_per_interval(&sims).await;
    eprintln!("R4 singletons: two instances: {two:.2} polls per {POLL:?} interval");
    assert!(leads(&a), "the first instance took the poller's lease:\n{}", a.stderr());
    assert!(!leads(&b), "the second instance waits while the first holds it:\n{}", b.stderr());
    assert!((0.75..=1.25).contains(&one), "one instance: {one:.2} polls per interval");
    assert!((0.75..=1.25).contains(&two), "two instances still poll once per interval, not twice: {two:.2}");

    // The leader dies without releasing its lease: the survivor takes over once it expires.
    a.sigkill().unwrap();
    let killed = Instant::now();
    a.wait_exit(Duration::from_secs(5)).await.expect("the leader did not die");
    let at_kill = polls(&sims);
    while polls(&sims) == at_kill {
        assert!(killed.elapsed() < Duration::from_secs(30), "no poll within 30 s of the leader's SIGKILL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = killed.elapsed();
    eprintln!("R4 singletons: polls resumed {:.1} s after SIGKILL of the leader", takeover.as_secs_f64());
    assert!(leads(&b), "the survivor took the lease:\n{}", b.stderr());
    let after = polls_per_interval(&sims).await;
    eprintln!("R4 singletons: survivor alone: {after:.2} polls per {POLL:?} interval");
    assert!((0.75..=1.25).contains(&after), "the survivor polls once per interval: {after:.2}");
    assert!(takeover <= Duration::from_secs(30), "takeover took {takeover:?}");

    b.sigterm().unwrap();
    b.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
}
