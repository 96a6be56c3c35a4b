//! R9: timeouts. The DingTalk simulator holds 30 % of its answers for 2 × the gateway's request
//! timeout *after* it created and delivered the card, so the gateway gives up on calls whose
//! effect was applied. Every timed-out call must be retried with the same idempotency key (the
//! card's `outTrackId`, by default the job's idempotency key), and the simulator applies each key
//! once, as DingTalk does. Effects are counted from the simulator's cards, wire attempts from its
//! request journal: duplicate effects 0, wire duplicates reported (and > 0: the fault hit).
//!
//! The same fault on the Salesforce simulator: record upserts by external id, written in batches
//! (collections), so one slow answer times out every job of its batch; one Account per external
//! id however often its upsert arrived.

use crate::common::*;
use connect::webhook::WebhookSecret;
use connectors::dingtalk::sim::org::{SEED_APP_KEY, SEED_APP_SECRET};
use connectors::salesforce::sim::{seed, SalesforceSim, SimConfig};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::dingtalk::DingTalkHarness;
use testkit::process::{Gateway, GatewayCommand};
use testkit::sender::{SenderSettings, WebhookSender};

const EVENTS: u64 = 300;
/// `delivery.request_timeout`, shortened for CI (the default is 10 s).
const TIMEOUT_MS: u64 = 500;
const SLOW_RATIO: f64 = 0.3;
/// The card API every delivery calls; the one path the test counts.
const CREATE: &str = "/v1.0/card/instances/createAndDeliver";
const FINANCE: &str = "cidF1nAnCe9zYxWvUt8sRqPo/A==";
const FLOW: &str = "r9-cards";
/// DingTalk's standard per-app, per-API limit, on both sides (simulator and client). The outbox
/// paces the app's deliveries before each attempt's timeout starts, so no attempt times out
/// waiting for the window: every timeout is a call the vendor applied but answered too late.
const QPS: u32 = 20;

/// One card per event into the finance group, `out_track_id` left to its default (the job's
/// idempotency key), each event its own ordering key so the destination runs at full concurrency.
/// No directory sync: its calls would share the fault plan and are not what is measured.
fn config(port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"

[delivery]
concurrency_per_destination = 16
lease = "5s"
request_timeout = "{TIMEOUT_MS}ms"
retry_schedule = ["100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]
jitter = 0.2

[dingtalk.apps.hk]
app_key = "{SEED_APP_KEY}"
app_secret = {{ env = "R9_APP_SECRET" }}
agent_id = 3120001
qps_per_api = {QPS}
sync_directory = false

[sources.e2e]
type = "webhook"
system = "test"
secret = {{ env = "E2E_WEBHOOK_SECRET" }}

[destinations.cards]
type = "dingtalk_app"
app = "hk"

[[flows]]
name = "{FLOW}"
on = {{ source = "e2e" }}

[[flows.deliver]]
destination = "cards"
ordering_key = "{{{{ event.data.id }}}}"
message = {{ type = "card", template_id = "dingbridge-notice.schema", group = "{FINANCE}", params = {{ event_id = "{{{{ event.id }}}}", seq = "{{{{ event.data.id }}}}", note = "{{{{ event.data.note }}}}" }} }}
"#
    )
}

/// One `createAndDeliver` request as the simulator journaled it.
#[derive(Debug)]
struct WireCall {
    out_track_id: String,
    event_id: String,
    slow: bool,
    status: Option<u16>,
}

impl WireCall {
    fn from_journal(entry: &sim::JournalEntry) -> Self {
        let body: Value = serde_json::from_str(&entry.body).unwrap_or(Value::Null);
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
        WireCall {
            out_track_id: text(body.get("outTrackId")),
            event_id: text(body.pointer("/cardData/cardParamMap/event_id")),
            slow: entry.slow,
            status: entry.status,
        }
    }
}

async fn until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `config(port)` and the simulators' endpoint map into a fresh directory and starts the
/// gateway on them; returns the directory (kept alive), the running gateway and a sender.
async fn start_gateway(
    config: fn(u16) -> String,
    store_url: &str,
    endpoints: &BTreeMap<String, String>,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Gateway, WebhookSender) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sims.json"), serde_json::to_string(endpoints).unwrap()).unwrap();
    let port = testkit::process::free_port().unwrap();
    std::fs::write(dir.path().join("r9.toml"), config(port)).unwrap();
    let mut command = GatewayCommand::new(exe())
        .arg("run")
        .arg("-c")
        .arg(dir.path().join("r9.toml"))
        .arg("--store")
        .arg(store_url)
        .arg("--sim-endpoints")
        .arg(dir.path().join("sims.json"))
        .env("E2E_WEBHOOK_SECRET", SECRET)
        .env("DINGBRIDGE_LOG", "warn");
    for (key, value) in env {
        command = command.env(key, value);
    }
    let mut gateway = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    let settings = SenderSettings { deadline: Duration::from_secs(30), ..SenderSettings::default() };
    let sender =
        WebhookSender::new(&format!("{base}/hooks/e2e"), WebhookSecret::parse(SECRET).unwrap(), settings).unwrap();
    (dir, gateway, sender)
}

/// The R9 fault on the simulator at `sim_url`, then events 1..=EVENTS at `rate` per second;
/// waits until every job (the warm-up's included) is done, or one is dead, then clears the
/// fault. Asserts nothing was dead-lettered: a timed-out call is transient, never permanent.
async fn send_under_slow_answers(
    sim_url: &str,
    sender: WebhookSender,
    rate: u64,
    store_url: &str,
) -> Arc<dyn store::Store> {
    let client = reqwest::Client::new();
    let faults = format!("{sim_url}/_sim/faults");
    let plan = serde_json::json!({"slow_ratio": SLOW_RATIO, "slow_ms": 2 * TIMEOUT_MS});
    let resp = client.post(&faults).json(&plan).send().await.unwrap();
    assert_eq!(resp.status(), 200, "fault plan refused: {}", resp.text().await.unwrap_or_default());

    let acked = produce(sender, EVENTS, 1..EVENTS + 1, rate, 10).await;
    assert_eq!(acked.len() as u64, EVENTS, "the sender gave up on some events");
    let store = store::open(store_url).await.unwrap();
    let jobs = EVENTS + 1;
    until("every job done (or one dead)", Duration::from_secs(45), async || {
        let stats = store.stats(0).await.unwrap();
        stats.dead > 0 || (stats.done == jobs && stats.pending == 0 && stats.leased == 0)
    })
    .await;
    client.delete(&faults).send().await.unwrap();
    let stats = store.stats(0).await.unwrap();
    assert_eq!((stats.dead, stats.dead_letters), (0, 0), "dead letters: {:?}", store.list_dead(10).await.unwrap());
    assert_eq!(stats.done, jobs);
    store
}

async fn timeouts(store_url: String) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let dingtalk = DingTalkHarness::start().await.unwrap();
    let sim = dingtalk.sim().clone();
    sim.org.set_qps(QPS);
    let (_dir, mut gateway, sender) =
        start_gateway(config, &store_url, &dingtalk.endpoint_map(), &[("R9_APP_SECRET", SEED_APP_SECRET)]).await;
    // Warm-up before the fault: the app's access token is fetched and cached, so every slow
    // answer below is a card create and nothing else.
    let warm = testkit::sender::envelope("item.created", jiff::Timestamp::now(), testkit::oracle::payload_for(0, 1));
    sender.send("evt-0", &warm).await.unwrap();
    until("the warm-up card", Duration::from_secs(20), async || sim.cards.cards().len() == 1).await;

    let since = dingtalk.journal().request_count();
    let store = send_under_slow_answers(&dingtalk.url(), sender, 300, &store_url).await;
    let delivered_after = started.elapsed();

    // The wire, from the journal: every create since the plan was installed, in arrival order.
    let calls: Vec<WireCall> =
        dingtalk.journal().requests(since, Some(CREATE)).iter().map(WireCall::from_journal).collect();
    let mut by_event: BTreeMap<&str, Vec<&WireCall>> = BTreeMap::new();
    for call in &calls {
        assert_eq!(call.status, Some(200), "the simulator answered every create: {call:?}");
        by_event.entry(call.event_id.as_str()).or_default().push(call);
    }
    assert_eq!(by_event.len() as u64, EVENTS, "one event per sent webhook on the wire");

    // Every attempt of a job carried the job's idempotency key, and the wire never saw more
    // calls for a job than the attempts the store recorded.
    let mut retried_jobs = 0_u64;
    let mut max_attempts = 0_u32;
    let mut before_wire = 0_u64;
    for (event_id, attempts) in &by_event {
        let job = match store.jobs_for_event(event_id).await.unwrap().as_slice() {
            [job] => job.clone(),
            other => panic!("event {event_id}: expected one job, found {other:?}"),
        };
        assert_eq!(job.idempotency_key, format!("{event_id}:{FLOW}:0"));
        for call in attempts {
            assert_eq!(call.out_track_id, job.idempotency_key, "event {event_id}: a retry changed the key");
        }
        // An attempt whose timeout fires before its request is on the wire (queued for the
        // client's QPS window, or a starved CPU) counts in the store but not in the journal; one
        // that reached the wire always counts.
        let made = u64::from(job.attempts) + 1;
        assert!(
            attempts.len() as u64 <= made,
            "event {event_id}: {} calls on the wire, {made} attempts",
            attempts.len()
        );
        before_wire += made - attempts.len() as u64;
        if job.attempts > 0 {
            retried_jobs += 1;
            let error = job.last_error.clone().unwrap_or_default();
            assert!(error.contains("timeout"), "event {event_id}: retried for `{error}`, not a timeout");
        }
        max_attempts = max_attempts.max(job.attempts + 1);
    }
    // Every slow (timed-out) call was followed by a call with the same key.
    for (i, call) in calls.iter().enumerate().filter(|(_, c)| c.slow) {
        assert!(
            calls[i + 1..].iter().any(|later| later.out_track_id == call.out_track_id),
            "slow call {i} for {} was never retried",
            call.out_track_id
        );
    }

    // The effects, from the simulator's state: one card per event, created and delivered once.
    let cards = sim.cards.cards();
    let mut cards_per_event: BTreeMap<String, u64> = BTreeMap::new();
    let mut extra_applies = 0_u64;
    for card in &cards {
        let event = card.card_data.get("event_id").cloned().unwrap_or_default();
        *cards_per_event.entry(event).or_default() += 1;
        let creates = card.history.iter().filter(|c| c.source == "create").count() as u64;
        let delivers = card.history.iter().filter(|c| c.source == "deliver").count() as u64;
        extra_applies += creates.saturating_sub(1) + delivers.saturating_sub(1);
        assert_eq!(card.spaces.len(), 1, "card {} reached one group once", card.out_track_id);
    }
    let duplicate_effects = cards_per_event.values().map(|n| n - 1).sum::<u64>() + extra_applies;
    let seqs: BTreeSet<u64> = cards.iter().filter_map(|c| c.card_data.get("seq")?.parse().ok()).collect();
    assert_eq!(seqs, (0..=EVENTS).collect(), "every event has its card");

    let slow_calls = calls.iter().filter(|c| c.slow).count() as u64;
    let keys: BTreeSet<&str> = calls.iter().map(|c| c.out_track_id.as_str()).collect();
    let wire_duplicates = calls.len() as u64 - keys.len() as u64;
    eprintln!(
        "R9 ({store_url}): {} create calls, {slow_calls} slow (held {} ms, timeout {TIMEOUT_MS} ms), \
         {wire_duplicates} wire duplicates, {duplicate_effects} duplicate effects, {retried_jobs} jobs retried, \
         at most {max_attempts} attempts, {before_wire} attempts timed out before reaching the wire; \
         all delivered after {delivered_after:?}",
        calls.len(),
        2 * TIMEOUT_MS,
    );
    assert_eq!(duplicate_effects, 0, "the simulator applied a key twice, or the gateway used two keys");
    assert_eq!(before_wire, 0, "attempts timed out waiting for the app's QPS window instead of on the wire");
    assert!(slow_calls > 0, "the fault never hit");
    assert!(wire_duplicates >= slow_calls, "every slow call is followed by a retry on the wire");
    assert_eq!(keys.len() as u64, EVENTS, "one key per job, whatever its number of attempts");

    gateway.sigterm().unwrap();
    let status = gateway.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status:?}");
    // Reported, not asserted: clumps of timeouts can open the destination's breaker (R6), which
    // then sends one probe per second until a success, and that is most of the run time.
    let breaker_opens = gateway.stderr().matches("breaker open").count();
    eprintln!("R9 ({store_url}): breaker opened {breaker_opens} times; test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_timed_out_calls_are_retried_with_the_same_key_and_applied_once_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    timeouts(format!("sqlite://{}/r9.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_timed_out_calls_are_retried_with_the_same_key_and_applied_once_postgres() {
    let Some(url) = postgres_url(&unique("r9")).await else { return };
    timeouts(url).await;
}

/// The Salesforce variant: the dedupe key is the external id of an upsert. Records are written in
/// batches (collections of ≤ 200 per call), so one slow answer times out every job of its batch.
fn salesforce_config(port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"

[delivery]
concurrency_per_destination = 16
lease = "5s"
request_timeout = "{TIMEOUT_MS}ms"
retry_schedule = ["100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms", "100ms"]
jitter = 0.2

[salesforce.orgs.hk]
login_url = "https://login.salesforce.com"
client_id = "{client_id}"
client_secret = {{ env = "R9_SF_SECRET" }}

[sources.e2e]
type = "webhook"
system = "test"
secret = {{ env = "E2E_WEBHOOK_SECRET" }}

[destinations.accounts]
type = "salesforce"
org = "hk"
linger = "10ms"

[[flows]]
name = "{SF_FLOW}"
on = {{ source = "e2e" }}

[[flows.deliver]]
destination = "accounts"
ordering_key = "{{{{ event.data.id }}}}"
message = {{ type = "record", object = "Account", op = "upsert", external_id_field = "{EXT_FIELD}", external_id = "R9-{{{{ event.data.id }}}}", fields = {{ Name = "R9 {{{{ event.data.id }}}}", Description = "{{{{ event.id }}}}" }} }}
"#,
        client_id = seed::CLIENT_ID,
    )
}

const SF_FLOW: &str = "r9-accounts";
const EXT_FIELD: &str = "ERP_Customer_No__c";

async fn salesforce_timeouts(store_url: String) {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let salesforce = Arc::new(SalesforceSim::new(SimConfig::default(), Arc::new(connect::SystemClock)));
    let running = sim::serve(salesforce.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let endpoints = BTreeMap::from([("salesforce".to_owned(), running.url())]);
    let (_dir, mut gateway, sender) =
        start_gateway(salesforce_config, &store_url, &endpoints, &[("R9_SF_SECRET", seed::CLIENT_SECRET)]).await;
    // Warm-up before the fault: the access token is fetched and cached, so every slow answer
    // below is a collections upsert.
    let warm = testkit::sender::envelope("item.created", jiff::Timestamp::now(), testkit::oracle::payload_for(0, 1));
    sender.send("evt-0", &warm).await.unwrap();
    until("the warm-up account", Duration::from_secs(20), async || {
        salesforce.find("Account", EXT_FIELD, "R9-0").is_some()
    })
    .await;

    let since = running.state.request_count();
    // Slower, with a short linger, so the records spread over enough calls (20 to 50 measured)
    // that the fault hitting none of them is out of the question (0.7^20 < 0.1 %).
    let store = send_under_slow_answers(&running.url(), sender, 60, &store_url).await;
    let delivered_after = started.elapsed();

    // The wire: every record of every collections call since the plan was installed.
    let upserts = format!("/composite/sobjects/Account/{EXT_FIELD}");
    let calls: Vec<sim::JournalEntry> =
        running.state.requests(since, None).into_iter().filter(|e| e.path.ends_with(&upserts)).collect();
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    let mut event_of: BTreeMap<String, String> = BTreeMap::new();
    let (mut slow_calls, mut slow_records) = (0_u64, 0_u64);
    for call in &calls {
        assert_eq!(call.status, Some(200), "the simulator answered every collections call: {call:?}");
        let body: Value = serde_json::from_str(&call.body).unwrap();
        let records = body["records"].as_array().cloned().unwrap_or_default();
        if call.slow {
            slow_calls += 1;
            slow_records += records.len() as u64;
        }
        for record in records {
            let key = record[EXT_FIELD].as_str().unwrap_or_default().to_owned();
            event_of.insert(key.clone(), record["Description"].as_str().unwrap_or_default().to_owned());
            *sent.entry(key).or_default() += 1;
        }
    }
    assert_eq!(sent.len() as u64, EVENTS, "one external id per sent webhook on the wire");

    // Per job: the wire never carried it more often than the store counted attempts, and a
    // retried job failed for a timeout.
    let mut retried_jobs = 0_u64;
    for (key, times) in &sent {
        let event_id = &event_of[key];
        let job = match store.jobs_for_event(event_id).await.unwrap().as_slice() {
            [job] => job.clone(),
            other => panic!("event {event_id}: expected one job, found {other:?}"),
        };
        assert_eq!(job.idempotency_key, format!("{event_id}:{SF_FLOW}:0"));
        let made = u64::from(job.attempts) + 1;
        assert!(*times <= made, "{key}: {times} times on the wire, {made} attempts");
        if job.attempts > 0 {
            retried_jobs += 1;
            let error = job.last_error.clone().unwrap_or_default();
            assert!(error.contains("timeout"), "{key}: retried for `{error}`, not a timeout");
        }
    }

    // The effects, from the simulator's records: one Account per external id, however often
    // its upsert arrived.
    let mut duplicate_effects = 0_u64;
    for id in 0..=EVENTS {
        let accounts = salesforce.find_all("Account", EXT_FIELD, &format!("R9-{id}"));
        assert!(!accounts.is_empty(), "account R9-{id} was never written");
        duplicate_effects += accounts.len() as u64 - 1;
    }
    let records_sent: u64 = sent.values().sum();
    let wire_duplicates = records_sent - sent.len() as u64;
    eprintln!(
        "R9 salesforce ({store_url}): {} collections calls carrying {records_sent} records, {slow_calls} slow calls \
         ({slow_records} records; held {} ms, timeout {TIMEOUT_MS} ms), {wire_duplicates} wire duplicates, \
         {duplicate_effects} duplicate effects, {retried_jobs} jobs retried; all delivered after {delivered_after:?}",
        calls.len(),
        2 * TIMEOUT_MS,
    );
    assert_eq!(duplicate_effects, 0, "an upsert created a second record for one external id");
    assert!(slow_calls > 0, "the fault never hit");
    assert!(wire_duplicates >= slow_records, "every record of a slow call is sent again");

    gateway.sigterm().unwrap();
    let status = gateway.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
    assert!(status.success(), "SIGTERM exit status {status:?}");
    let breaker_opens = gateway.stderr().matches("breaker open").count();
    eprintln!("R9 salesforce ({store_url}): breaker opened {breaker_opens} times; test took {:?}", started.elapsed());
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_timed_out_record_batches_are_retried_and_upserted_once_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    salesforce_timeouts(format!("sqlite://{}/r9-sf.db", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r9_timed_out_record_batches_are_retried_and_upserted_once_postgres() {
    let Some(url) = postgres_url(&unique("r9sf")).await else { return };
    salesforce_timeouts(url).await;
}
