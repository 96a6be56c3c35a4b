//! R1's named crash points: the gateway aborts (as SIGKILL would) exactly in each classic
//! loss/duplicate window; a fresh gateway on the same store must then deliver every acknowledged
//! event, once in effect, in order per conversation. Built with `--features crashpoints`.
#![cfg(feature = "crashpoints")]

use crate::common::*;
use connect::Clock as _;
use std::time::Duration;
use testkit::process::GatewayCommand;

const EVENTS: u64 = 2_000;
const CONVERSATIONS: u64 = 200;

async fn crash_at(point: &str, nth: u64, store_url: String) {
    let _serial = SERIAL.lock().await;
    let env = Env::new().await;
    let port = testkit::process::free_port().unwrap();
    let settings = Settings { lease: "2s", concurrency: 8, ..Settings::default() };
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

// ---------------------------------------------------------------------------------------------
// A Salesforce batch in flight (issue 15, Reclaim)
// ---------------------------------------------------------------------------------------------

const ACCOUNTS: u64 = 40;
const ROUNDS: u64 = 10;
const SF_LEASE_MS: u64 = 2_000;

/// A gateway writing each `customer.updated` webhook to its Salesforce Account (upsert by
/// external id) through batched sObject Collections, ordered per account.
fn write_salesforce_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    use connectors::salesforce::sim::seed;
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"

[delivery]
concurrency_per_destination = 4
lease = "{SF_LEASE_MS}ms"
request_timeout = "1s"
retry_schedule = ["200ms", "500ms", "1s", "2s", "2s", "2s", "2s", "2s", "2s", "2s"]
jitter = 0.2

[salesforce.orgs.hk]
login_url = "https://login.salesforce.com"
client_id = "{client_id}"
client_secret = {{ env = "E2E_SF_SECRET" }}
organization_id = "{org_id}"

[sources.erp]
type = "webhook"
system = "erp"
secret = {{ env = "E2E_WEBHOOK_SECRET" }}
entity_id = "/data/customer_no"

[destinations.sf-accounts]
type = "salesforce"
org = "hk"
linger = "100ms"

[[flows]]
name = "credit-to-salesforce"
on = {{ source = "erp", entity = "customer", change = ["updated"] }}
[[flows.deliver]]
destination = "sf-accounts"
ordering_key = "{{{{ event.entity_id }}}}"
message = {{ type = "record", object = "Account", op = "upsert", external_id_field = "ERP_Customer_No__c", external_id = "{{{{ event.entity_id }}}}", fields = {{ Credit_Status__c = "{{{{ event.data.credit_status }}}}" }} }}
"#,
        client_id = seed::CLIENT_ID,
        org_id = seed::ORG_ID,
    );
    let path = dir.join("salesforce.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The Salesforce simulator on loopback, named in a `--sim-endpoints` file in `dir`.
async fn salesforce_sim(
    dir: &std::path::Path,
    clock: std::sync::Arc<dyn connect::Clock>,
) -> (std::sync::Arc<connectors::salesforce::sim::SalesforceSim>, sim::RunningSim) {
    use connectors::salesforce::sim::{SalesforceSim, SimConfig};
    let config = SimConfig { daily_limit: 1_000_000, ..SimConfig::default() };
    let salesforce = std::sync::Arc::new(SalesforceSim::new(config, clock));
    let running = sim::serve(salesforce.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let endpoints = std::collections::BTreeMap::from([("salesforce".to_owned(), running.url())]);
    std::fs::write(dir.join("sims.json"), serde_json::to_string(&endpoints).unwrap()).unwrap();
    (salesforce, running)
}

/// `dingbridge run` on `config` and `store_url` against the simulators of `dir`, with the
/// Salesforce and webhook secrets of these tests, aborting at `crash` when one is given.
fn salesforce_gateway(
    dir: &std::path::Path,
    config: &std::path::Path,
    store_url: &str,
    crash: Option<&str>,
) -> GatewayCommand {
    let mut command = GatewayCommand::new(exe())
        .arg("run")
        .arg("-c")
        .arg(config)
        .arg("--store")
        .arg(store_url)
        .arg("--sim-endpoints")
        .arg(dir.join("sims.json"))
        .env("E2E_WEBHOOK_SECRET", SECRET)
        .env("E2E_SF_SECRET", connectors::salesforce::sim::seed::CLIENT_SECRET)
        .env("DINGBRIDGE_LOG", "warn");
    if let Some(crash) = crash {
        command = command.env("DINGBRIDGE_CRASHPOINT", crash);
    }
    command
}

fn customer(account: u64) -> String {
    format!("C-{account:05}")
}

/// Every account updated `ROUNDS` times, round by round: an account's round r+1 is sent only
/// after its round r was acknowledged, so the sender's order per account is the round order.
/// Rounds sent after the crash wait for the restarted gateway (the sender retries), and queue
/// behind the stranded run of their account.
async fn produce_rounds(sender: testkit::sender::WebhookSender) {
    for round in 0..ROUNDS {
        let mut tasks = tokio::task::JoinSet::new();
        for account in 0..ACCOUNTS {
            let sender = sender.clone();
            tasks.spawn(async move {
                let body = testkit::sender::envelope(
                    "customer.updated",
                    jiff::Timestamp::now(),
                    serde_json::json!({"customer_no": customer(account), "credit_status": format!("round-{round}")}),
                );
                sender.send(&format!("credit-{account}-{round}"), &body).await.unwrap_or_else(|e| panic!("{e}"))
            });
        }
        while let Some(sent) = tasks.join_next().await {
            sent.unwrap();
        }
        // Longer than the destination's linger: each round is at least one batch of its own, so
        // the crash finds later rounds still coming.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The jobs in `ids` that are in `state`.
async fn jobs_in(store: &dyn store::Store, ids: impl Iterator<Item = i64>, state: store::JobState) -> Vec<i64> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(job) = store.get_job(id).await.unwrap() {
            if job.state == state {
                out.push(id);
            }
        }
    }
    out
}

/// The gateway aborts right after Salesforce accepted a batch, before the batch's jobs are
/// marked done: the run's head and followers are left leased. After a restart on the same
/// store the expired leases must hold nothing back: the run is claimed again whole and in
/// order, every account ends at its last value, no write for an account goes back to an older
/// value, and no job stays leased or pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_with_a_salesforce_batch_in_flight_is_reclaimed_whole_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    salesforce_batch_crash(sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_with_a_salesforce_batch_in_flight_is_reclaimed_whole_postgres() {
    let Some(url) = postgres_url(&unique("crash_sf")).await else { return };
    salesforce_batch_crash(url).await;
}

async fn salesforce_batch_crash(store_url: String) {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (salesforce, running) = salesforce_sim(dir.path(), Arc::new(connect::SystemClock)).await;
    let port = testkit::process::free_port().unwrap();
    let config = write_salesforce_config(dir.path(), port);
    let base = format!("http://127.0.0.1:{port}");
    let command = |crash: Option<&str>| salesforce_gateway(dir.path(), &config, &store_url, crash);
    // The third batch Salesforce accepts is never marked done.
    let point = format!("{}:3", crashpoint::AFTER_DELIVERY);
    let mut doomed = command(Some(&point)).spawn().unwrap();
    doomed.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    let sender = testkit::sender::WebhookSender::new(
        &format!("{base}/hooks/erp"),
        connect::webhook::WebhookSecret::parse(SECRET).unwrap(),
        testkit::sender::SenderSettings { deadline: Duration::from_secs(60), ..Default::default() },
    )
    .unwrap();
    let producing = tokio::spawn(produce_rounds(sender));
    let status = doomed.wait_exit(Duration::from_secs(30)).await.expect("the crash point was never reached");
    assert!(!status.success(), "expected an abort, got {status:?}");
    assert!(doomed.stderr().contains("crash point"), "{}", doomed.stderr());

    // What the crash left: the jobs of the batch Salesforce accepted, still leased.
    let store = store::open(&store_url).await.unwrap();
    let all_ids = || 1..=(ACCOUNTS * ROUNDS) as i64;
    let stranded = jobs_in(store.as_ref(), all_ids(), store::JobState::Leased).await;
    assert!(!stranded.is_empty(), "the batch in flight left no leased job: {:?}", store.stats(0).await.unwrap());

    let restarted = std::time::Instant::now();
    let mut survivor = command(None).spawn().unwrap();
    survivor.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    let healthy_after = restarted.elapsed();
    // Reclaim: every job the crash left leased is done again, under a new lease.
    let reclaimed_after = loop {
        let done = jobs_in(store.as_ref(), stranded.iter().copied(), store::JobState::Done).await;
        if done.len() == stranded.len() {
            break restarted.elapsed();
        }
        assert!(restarted.elapsed() < Duration::from_secs(30), "stranded jobs never reclaimed: {stranded:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "reclaim after SIGKILL with a Salesforce batch in flight ({}): {} jobs leased at the crash, all done {} ms \
         after the restart (healthy after {} ms, lease {SF_LEASE_MS} ms)",
        store_url.split(':').next().unwrap_or_default(),
        stranded.len(),
        reclaimed_after.as_millis(),
        healthy_after.as_millis()
    );

    tokio::time::timeout(Duration::from_secs(90), producing).await.expect("the sender finished").unwrap();
    let total = ACCOUNTS * ROUNDS;
    let started = std::time::Instant::now();
    let stats = loop {
        let stats = store.stats(connect::SystemClock.now_millis()).await.unwrap();
        if stats.done >= total && stats.pending == 0 && stats.leased == 0 {
            break stats;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not all delivered: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // 0 stalled: nothing leased or pending is left, nothing dead, every update done once.
    assert_eq!((stats.events, stats.done, stats.dead, stats.dead_letters), (total, total, 0, 0), "{stats:?}");
    assert_eq!(stats.lease_expired, 0, "none leased past expiry: {stats:?}");
    assert!(jobs_in(store.as_ref(), all_ids(), store::JobState::Leased).await.is_empty());

    // Every account holds its last value.
    let last = format!("round-{}", ROUNDS - 1);
    for account in 0..ACCOUNTS {
        let record = salesforce.find("Account", "ERP_Customer_No__c", &customer(account)).expect("account upserted");
        assert_eq!(record["Credit_Status__c"], serde_json::json!(last), "{}", customer(account));
    }
    // Per-record order on the wire: the rounds each account was written with never go back.
    let mut writes: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for entry in running.state.requests(0, None) {
        if !entry.path.contains("/composite/sobjects/Account/") || entry.status != Some(200) {
            continue;
        }
        let body: serde_json::Value = serde_json::from_str(&entry.body).unwrap();
        for record in body["records"].as_array().into_iter().flatten() {
            let account = record["ERP_Customer_No__c"].as_str().unwrap_or_default().to_owned();
            let status = record["Credit_Status__c"].as_str().unwrap_or_default();
            let round = status.trim_start_matches("round-").parse::<u64>().unwrap();
            writes.entry(account).or_default().push(round);
        }
    }
    assert_eq!(writes.len() as u64, ACCOUNTS, "every account was written");
    let mut repeated = 0;
    for (account, rounds) in &writes {
        assert!(rounds.windows(2).all(|w| w[0] <= w[1]), "{account} written out of order: {rounds:?}");
        repeated += rounds.windows(2).filter(|w| w[0] == w[1]).count();
    }
    let calls: usize = writes.values().map(Vec::len).sum();
    eprintln!(
        "Salesforce batch crash: {total} updates of {ACCOUNTS} accounts in {calls} record writes, {repeated} of \
         them repeating a value already written (a re-sent run, harmless for upserts; the reclaimed run is \
         merged with the updates queued behind it), {} API calls",
        salesforce.api_calls()
    );
    survivor.sigterm().unwrap();
    survivor.wait_exit(Duration::from_secs(15)).await;
    store.close().await;
    running.shutdown().await.unwrap();
}

/// Salesforce's clock to the second: the opportunities changed within one second share a
/// `SystemModstamp`, so the poll's pages end inside ties.
#[derive(Debug)]
struct SecondClock;

impl connect::Clock for SecondClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap()
    }
}

const POLLED: u64 = 1_200;

/// R27 with a real process: a polling Salesforce source finds 1,200 opportunities changed
/// (ties on the second) between two polls; the gateway aborts right after the first page of
/// the poll and its cursor committed (as a SIGKILL would), and a fresh gateway on the same store
/// polls on from the stored cursor. Every change becomes exactly one notice and one read.
#[tokio::test]
async fn crash_between_poll_pages_resumes_from_the_stored_cursor_sqlite() {
    use connectors::salesforce::sim::seed;
    use sim::Simulator;
    use std::sync::Arc;

    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store_url = sqlite_url(&dir);
    let (salesforce, running) = salesforce_sim(dir.path(), Arc::new(SecondClock)).await;
    let port = testkit::process::free_port().unwrap();
    let config = dir.path().join("poll.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"

[salesforce.orgs.hk]
login_url = "https://login.salesforce.com"
client_id = "{client_id}"
client_secret = {{ env = "E2E_SF_SECRET" }}
organization_id = "{org_id}"

[sources.crm]
type = "salesforce"
org = "hk"
objects = ["Opportunity"]
intake = "poll"
poll_interval = "10s"
coalesce = "0s"
"#,
            client_id = seed::CLIENT_ID,
            org_id = seed::ORG_ID,
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let command = |crash: Option<&str>| salesforce_gateway(dir.path(), &config, &store_url, crash);
    // Hit 1 is the first poll, which only stores where to start; hit 2 the first page after it.
    let point = format!("{}:2", crashpoint::AFTER_POLL_PAGE_COMMIT);
    let mut doomed = command(Some(&point)).spawn().unwrap();
    doomed.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    let store = store::open(&store_url).await.unwrap();
    let cursor = "salesforce.poll.crm.Opportunity";
    let started = std::time::Instant::now();
    while store.get_cursor(cursor).await.unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(15), "no first poll");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the first poll's second, then every change before the next poll (10 s later).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for i in 0..POLLED {
        let opportunity = serde_json::json!({"Id": format!("006R27{i:09}AAA"), "Name": format!("R27 {i}"), "StageName": "Prospecting"});
        salesforce.put_record("Opportunity", opportunity).await.unwrap();
    }
    let status = doomed.wait_exit(Duration::from_secs(30)).await.expect("the crash point was never reached");
    assert!(!status.success(), "expected an abort, got {status:?}");
    assert!(doomed.stderr().contains("crash point"), "{}", doomed.stderr());
    let at_crash = store.stats(connect::SystemClock.now_millis()).await.unwrap();
    assert!(at_crash.events > 0 && at_crash.events < POLLED, "one page stored before the crash: {at_crash:?}");

    let mut survivor = command(None).spawn().unwrap();
    survivor.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    // Each change: one notice event and, once read, one event of the record.
    let started = std::time::Instant::now();
    let stats = loop {
        let stats = store.stats(connect::SystemClock.now_millis()).await.unwrap();
        if stats.events >= 2 * POLLED && stats.pending == 0 && stats.leased == 0 {
            break stats;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not every change was read: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "R27 SIGKILL between poll pages: {} events stored before the crash, {} after (notices and reads of {POLLED} \
         changes), {} read jobs done",
        at_crash.events, stats.events, stats.done
    );
    assert_eq!((stats.events, stats.done, stats.dead, stats.dead_letters), (2 * POLLED, POLLED, 0, 0), "{stats:?}");
    survivor.sigterm().unwrap();
    survivor.wait_exit(Duration::from_secs(15)).await;
    store.close().await;
    running.shutdown().await.unwrap();
}
