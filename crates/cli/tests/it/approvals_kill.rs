//! S1 under a crash: the gateway is SIGKILLed after an approver's click was taken and while
//! NetSuite is down, before the decision reached NetSuite. After the restart the decision is
//! written once and the card and requester are updated.

use crate::common::*;
use connectors::dingtalk::sim::org::{SEED_APP_KEY, SEED_APP_SECRET};
use connectors::netsuite::client::RecordType;
use connectors::netsuite::sim::seed as ns_seed;
use serde_json::json;
use std::time::{Duration, Instant};
use testkit::dingtalk::DingTalkHarness;
use testkit::process::GatewayCommand;

const FINANCE: &str = "cidF1nAnCe9zYxWvUt8sRqPo/A==";
const CARD: &str = "approval:ns:purchase_request:4691";

fn config(port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"

[audit]
key = {{ env = "KILL_AUDIT_KEY" }}

[delivery]
retry_schedule = ["300ms", "600ms", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s", "1s"]
lease = "3s"
request_timeout = "2s"

[dingtalk.apps.hk]
app_key = "{SEED_APP_KEY}"
app_secret = {{ env = "KILL_APP_SECRET" }}
agent_id = 3120001

[sources.dt]
type = "dingtalk"
app = "hk"
mode = "stream"

[netsuite.accounts.main]
account_id = "{account}"
consumer_key = "{ck}"
consumer_secret = {{ env = "KILL_NS_CONSUMER_SECRET" }}
token_id = "{token}"
token_secret = {{ env = "KILL_NS_TOKEN_SECRET" }}
time_zone = "UTC"

[sources.ns]
type = "netsuite"
account = "main"
objects = ["purchaseRequisition"]
poll = "1h"

[destinations.app]
type = "dingtalk_app"
app = "hk"

[roles.approvers]
users = ["finance0001", "pay0002"]

[identity.ns]
match = ["email", "job_number"]

[approvals.fx]
base = "HKD"

[[approvals.policies]]
name = "requisitions"
sources = ["ns"]
entity = "purchase_request"
currency = "HKD"
deliver = {{ card = "app", group = "{FINANCE}" }}

[[approvals.policies.bands]]
min = "0"
steps = [{{ roles = ["approvers"] }}]
"#,
        account = ns_seed::ACCOUNT,
        ck = ns_seed::CONSUMER_KEY,
        token = ns_seed::TOKEN_ID,
    )
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_between_click_and_write_back_writes_the_decision_once_after_restart() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let dingtalk = DingTalkHarness::start().await.unwrap();
    let sims = testkit::erp::ErpSims::start().await.unwrap();
    let netsuite = sims.netsuite.clone();
    let journal = sims.state("netsuite");
    let mut endpoints = dingtalk.endpoint_map();
    sims.endpoints(&mut endpoints);
    std::fs::write(dir.path().join("sims.json"), serde_json::to_string(&endpoints).unwrap()).unwrap();
    let port = testkit::process::free_port().unwrap();
    std::fs::write(dir.path().join("kill.toml"), config(port)).unwrap();
    let mut gateway = GatewayCommand::new(exe())
        .arg("run")
        .arg("-c")
        .arg(dir.path().join("kill.toml"))
        .arg("--store")
        .arg(format!("sqlite://{}/kill.db", dir.path().display()))
        .arg("--sim-endpoints")
        .arg(dir.path().join("sims.json"))
        .env("KILL_APP_SECRET", SEED_APP_SECRET)
        .env("KILL_AUDIT_KEY", "approvals-kill-audit-key-0123456789abcdef")
        .env("KILL_NS_CONSUMER_SECRET", ns_seed::CONSUMER_SECRET)
        .env("KILL_NS_TOKEN_SECRET", ns_seed::TOKEN_SECRET)
        .env("DINGBRIDGE_LOG", "info")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    let sim = dingtalk.sim().clone();
    until("the approval card", Duration::from_secs(30), || {
        sim.cards.card(CARD).is_some_and(|c| c.params.get("canApprove").map(String::as_str) == Some("true"))
    })
    .await;

    // NetSuite goes down; the approver clicks; the decision is taken and its write-back fails.
    let faults = format!("{}/_sim/faults", sims.url("netsuite"));
    let client = reqwest::Client::new();
    client.post(&faults).json(&json!({"status": 503, "duration_ms": 120_000})).send().await.unwrap();
    let journal_before = journal.request_count();
    sim.cards.click(CARD, "finance0001", "approve", json!({})).await.unwrap();
    until("the decision's first write-back attempt", Duration::from_secs(20), || {
        journal
            .requests(journal_before, Some("/services/rest/record/v1/purchaseRequisition/4691"))
            .iter()
            .any(|r| r.faulted)
    })
    .await;
    gateway.sigkill().unwrap();
    gateway.wait_exit(Duration::from_secs(5)).await.expect("the gateway did not die");
    assert_eq!(
        netsuite.record(RecordType::PurchaseRequisition, "4691").unwrap()["approvalStatus"]["id"],
        "1",
        "still pending in NetSuite when the gateway died"
    );

    // NetSuite is back; the gateway restarts and finishes what it had committed.
    client.delete(&faults).send().await.unwrap();
    gateway.restart().unwrap();
    gateway.wait_healthy(&base, Duration::from_secs(30)).await.unwrap();
    until("NetSuite to show the approval", Duration::from_secs(30), || {
        netsuite.record(RecordType::PurchaseRequisition, "4691").unwrap()["approvalStatus"]["id"] == "2"
    })
    .await;
    until("the card to say approved", Duration::from_secs(20), || {
        sim.cards
            .card(CARD)
            .and_then(|c| c.params.get("status").cloned())
            .is_some_and(|s| s.starts_with("Approved by Cheung Mei Ling"))
    })
    .await;
    let writes = journal
        .requests(0, Some("/services/rest/record/v1/purchaseRequisition/4691"))
        .into_iter()
        .filter(|r| r.method == "PATCH" && !r.faulted)
        .count();
    assert_eq!(writes, 1, "one approval write reached NetSuite");
    let memo = netsuite.record(RecordType::PurchaseRequisition, "4691").unwrap()["memo"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(memo.matches("[dingbridge:").count(), 1, "{memo}");
    gateway.sigterm().unwrap();
    gateway.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
    let _ = FINANCE;
}
