//! R4 extended: two gateway processes on one PostgreSQL schema run each singleton task once. An
//! ERP source (NetSuite, polled every second) and a CRM source (Salesforce, polled every 10 s,
//! its shortest interval): the simulators' journals show one poll per interval with one instance
//! and still one with two (not two); SIGKILL the leader and the other instance resumes polling
//! within 30 s (lease TTL 15 s + one 3 s retry), from the cursors the leader stored.

use crate::common::*;
use connectors::netsuite::sim::seed as ns_seed;
use connectors::salesforce::sim::{seed as sf_seed, SalesforceSim, SimConfig};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::erp::ErpSims;
use testkit::process::{Gateway, GatewayCommand};

const POLL: Duration = Duration::from_secs(1);
const CRM_POLL: Duration = Duration::from_secs(10);
/// How long the one- and two-instance phases count polls: three CRM intervals.
const WINDOW: Duration = Duration::from_secs(30);
/// How long the survivor's polls are counted.
const SURVIVOR_WINDOW: Duration = Duration::from_secs(12);
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

[salesforce.orgs.hk]
login_url = "https://login.salesforce.com"
client_id = "{sf_client}"
client_secret = {{ env = "SINGLE_SF_SECRET" }}
organization_id = "{sf_org}"

[sources.crm]
type = "salesforce"
org = "hk"
objects = ["Opportunity"]
intake = "poll"
poll_interval = "10s"
"#,
        account = ns_seed::ACCOUNT,
        ck = ns_seed::CONSUMER_KEY,
        token = ns_seed::TOKEN_ID,
        sf_client = sf_seed::CLIENT_ID,
        sf_org = sf_seed::ORG_ID,
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
        .env("SINGLE_SF_SECRET", sf_seed::CLIENT_SECRET)
        .env("DINGBRIDGE_LOG", "info")
        .spawn()
        .unwrap()
}

/// Polls each simulator has answered so far: (NetSuite SuiteQL, Salesforce API calls). Nothing
/// changes in either, so every Salesforce API call is a poll.
struct Sims {
    erp: ErpSims,
    salesforce: Arc<SalesforceSim>,
}

impl Sims {
    fn polls(&self) -> (usize, u64) {
        (self.erp.state("netsuite").requests(0, Some(SUITEQL)).len(), self.salesforce.api_calls())
    }

    /// (ERP polls per ERP interval, CRM polls per CRM interval) over `window`, from now.
    async fn per_interval(&self, window: Duration) -> (f64, f64) {
        let (erp, crm) = self.polls();
        tokio::time::sleep(window).await;
        let (erp_after, crm_after) = self.polls();
        (
            (erp_after - erp) as f64 / (window.as_secs_f64() / POLL.as_secs_f64()),
            (crm_after - crm) as f64 / (window.as_secs_f64() / CRM_POLL.as_secs_f64()),
        )
    }
}

/// Whether `gateway` logged that it took the lease of the `task`.
fn leads(gateway: &Gateway, task: &str) -> bool {
    gateway.stderr().lines().any(|l| l.contains("Leadership gained") && l.contains(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r4_two_instances_poll_once_per_interval_and_the_survivor_takes_over_a_killed_leader() {
    let Some(url) = postgres_url(&unique("r4single")).await else { return };
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let salesforce = Arc::new(SalesforceSim::new(SimConfig::default(), Arc::new(connect::SystemClock)));
    let sf_running = sim::serve(salesforce.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let sims = Sims { erp: ErpSims::start().await.unwrap(), salesforce };
    let mut endpoints = std::collections::BTreeMap::new();
    sims.erp.endpoints(&mut endpoints);
    endpoints.insert("salesforce".to_owned(), sf_running.url());
    std::fs::write(dir.path().join("sims.json"), serde_json::to_string(&endpoints).unwrap()).unwrap();

    let (port_a, port_b) = (testkit::process::free_port().unwrap(), testkit::process::free_port().unwrap());
    let mut a = spawn(dir.path(), "a", port_a, &url);
    a.wait_healthy(&format!("http://127.0.0.1:{port_a}"), Duration::from_secs(30)).await.unwrap();
    // The first poll only records where to start; wait for the polls with a cursor.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (erp_one, crm_one) = sims.per_interval(WINDOW).await;
    eprintln!("R4 singletons: one instance: ERP {erp_one:.2} polls per {POLL:?}, CRM {crm_one:.2} per {CRM_POLL:?}");

    let mut b = spawn(dir.path(), "b", port_b, &url);
    b.wait_healthy(&format!("http://127.0.0.1:{port_b}"), Duration::from_secs(30)).await.unwrap();
    let (erp_two, crm_two) = sims.per_interval(WINDOW).await;
    eprintln!("R4 singletons: two instances: ERP {erp_two:.2} polls per {POLL:?}, CRM {crm_two:.2} per {CRM_POLL:?}");
    for task in ["poll:ns", "poll:crm"] {
        assert!(leads(&a, task), "the first instance took the lease of {task}:\n{}", a.stderr());
        assert!(!leads(&b, task), "the second instance waits while the first holds {task}:\n{}", b.stderr());
    }
    assert!((0.75..=1.25).contains(&erp_one), "one instance: ERP {erp_one:.2} polls per interval");
    assert!(
        (0.75..=1.25).contains(&erp_two),
        "two instances still poll the ERP once per interval, not twice: {erp_two:.2}"
    );
    // Three CRM intervals per window: 3 polls, 4 at most when the window catches both ends.
    assert!((0.6..=1.34).contains(&crm_one), "one instance: CRM {crm_one:.2} polls per interval");
    assert!(
        (0.6..=1.34).contains(&crm_two),
        "two instances still poll the CRM once per interval, not twice: {crm_two:.2}"
    );

    // The leader dies without releasing its leases: the survivor takes over once they expire.
    a.sigkill().unwrap();
    let killed = Instant::now();
    a.wait_exit(Duration::from_secs(5)).await.expect("the leader did not die");
    let (erp_at_kill, crm_at_kill) = sims.polls();
    let (mut erp_back, mut crm_back) = (None, None);
    while erp_back.is_none() || crm_back.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "polls did not resume within 30 s of the leader's SIGKILL (ERP {erp_back:?}, CRM {crm_back:?})"
        );
        let (erp, crm) = sims.polls();
        if erp_back.is_none() && erp > erp_at_kill {
            erp_back = Some(killed.elapsed());
        }
        if crm_back.is_none() && crm > crm_at_kill {
            crm_back = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (erp_back, crm_back) = (erp_back.unwrap_or_default(), crm_back.unwrap_or_default());
    eprintln!(
        "R4 singletons: polls resumed {:.1} s (ERP) and {:.1} s (CRM) after SIGKILL of the leader",
        erp_back.as_secs_f64(),
        crm_back.as_secs_f64()
    );
    for task in ["poll:ns", "poll:crm"] {
        assert!(leads(&b, task), "the survivor took the lease of {task}:\n{}", b.stderr());
    }
    let (erp_after, _) = sims.per_interval(SURVIVOR_WINDOW).await;
    eprintln!("R4 singletons: survivor alone: ERP {erp_after:.2} polls per {POLL:?}");
    assert!((0.75..=1.25).contains(&erp_after), "the survivor polls once per interval: {erp_after:.2}");

    b.sigterm().unwrap();
    b.wait_exit(Duration::from_secs(15)).await.expect("no exit after SIGTERM");
}
