//! ERP end to end over loopback: an in-process gateway between the NetSuite, Dynamics 365 and SAP
//! simulators and the DingTalk simulator.
//!
//! - S5: a delivery status change in each ERP reaches the order's group with "as of <ERP time>"
//!   in Hong Kong time, once, whether the push or the reconciliation poll brought it; with the
//!   push suppressed (a simulator fault) the poll delivers it within its interval; a status older
//!   than `stale_after` raises a staleness alert in the ops group.
//! - S8: an ORDERS05 dropped into the folder and a DESADV posted over HTTP give the same messages
//!   as the OData path; a malformed IDoc file ends in failed/ with its reason and a dead letter,
//!   and the good file beside it is not lost.
//! - A dropped file larger than the source's `max_file_bytes` is not read: it ends in failed/
//!   with its reason and a dead letter, and a good file beside it is stored.
//! - Purchase requisitions pending approval are read from all three ERPs as `purchase_request`.

use connectors::dingtalk::sim::org::{SEED_APP_KEY, SEED_APP_SECRET};
use connectors::dynamics::sim::seed as dv_seed;
use connectors::netsuite::sim::seed as ns_seed;
use connectors::sap::sim::seed as sap_seed;
use dingbridge_server::gateway::{Gateway, Overrides};
use serde_json::{json, Value};
use sim::Simulator;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::dingtalk::DingTalkHarness;
use testkit::wait::{wait_for, wait_for_settled};

const ORDERS: &str = "cid7Hk2PqRsTuVwXyZ0aBcDe+Q==";
const OPS: &str = "cidAbCdEfGhIjKlMnOpQrStUv==";
const PURCHASING: &str = "cidF1nAnCe9zYxWvUt8sRqPo/A==";
const DV_KEY: &str = "dv-webhook-key-e2e";
const IDOC_USER: &str = "ECCIDOC";
const IDOC_PASSWORD: &str = "idoc-port-password";
const POLL_SECS: u64 = 2;

fn shipment_flow(name: &str, sources: &str) -> String {
    format!(
        r#"
[[flows]]
name = "{name}"
on = {{ source = {sources}, entity = "shipment" }}
[[flows.deliver]]
destination = "app"
message = {{ type = "group_message", group = "{ORDERS}", title = "Shipment {{{{ event.data.number }}}}", text = "Shipment {{{{ event.data.number }}}} for order {{{{ event.data.order }}}}: {{{{ event.data.status }}}} ({{{{ event.data.status_text }}}}){{% for l in event.data.lines %}}, {{{{ l.quantity.value }}}} {{{{ l.quantity.unit }}}} {{{{ l.item }}}}{{% endfor %}} - as of {{{{ event.source_time_hk }}}}" }}
[[flows.deliver]]
destination = "app"
when = 'event.data.stale'
message = {{ type = "group_message", group = "{OPS}", title = "Stale shipment status", text = "STALE: shipment {{{{ event.data.number }}}} status {{{{ event.data.status }}}} is {{{{ event.data.age_seconds }}}} s old (as of {{{{ event.source_time_hk }}}})" }}
"#
    )
}

fn po_flow(name: &str, sources: &str) -> String {
    format!(
        r#"
[[flows]]
name = "{name}"
on = {{ source = {sources}, entity = "purchase_order" }}
[[flows.deliver]]
destination = "app"
message = {{ type = "group_message", group = "{PURCHASING}", title = "PO {{{{ event.data.number }}}}", text = "PO {{{{ event.data.number }}}} from {{{{ event.data.supplier.id }}}}: {{{{ event.data.amount.currency }}}} {{{{ event.data.amount.amount }}}}{{% for l in event.data.lines %}}; {{{{ l.line }}}} {{{{ l.item }}}} {{{{ l.quantity.value }}}} {{{{ l.quantity.unit }}}}{{% endfor %}}" }}
"#
    )
}

fn pr_flow(name: &str, sources: &str) -> String {
    format!(
        r#"
[[flows]]
name = "{name}"
on = {{ source = {sources}, entity = "purchase_request" }}
when = 'event.data.pending_approval'
[[flows.deliver]]
destination = "app"
message = {{ type = "group_message", group = "{PURCHASING}", title = "PR {{{{ event.data.number }}}}", text = "PR {{{{ event.data.number }}}} pending approval ({{{{ event.source }}}})" }}
"#
    )
}

fn config(folder: &std::path::Path) -> String {
    let mut text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[delivery]
retry_schedule = ["200ms", "500ms", "1s"]

[dingtalk.apps.hk]
app_key = "{SEED_APP_KEY}"
app_secret = {{ env = "ERPE2E_APP_SECRET" }}
agent_id = 3120001
sync_directory = false

[netsuite.accounts.main]
account_id = "{ns_account}"
consumer_key = "{ns_ck}"
consumer_secret = {{ env = "ERPE2E_NS_CONSUMER_SECRET" }}
token_id = "{ns_token}"
token_secret = {{ env = "ERPE2E_NS_TOKEN_SECRET" }}
time_zone = "UTC"

[dynamics.orgs.main]
tenant_id = "{dv_tenant}"
client_id = "{dv_client}"
client_secret = {{ env = "ERPE2E_DV_SECRET" }}
dataverse_url = "https://{dv_org}"
bc_environment = "{dv_env}"
bc_company = "{dv_company}"

[sap.systems.s4]
base_url = "https://s4.example.com.hk:44300"
sap_client = "{sap_client}"
user = "{sap_user}"
password = {{ env = "ERPE2E_SAP_PASSWORD" }}

[sources.ns]
type = "netsuite"
account = "main"
objects = ["itemFulfillment", "purchaseRequisition"]
webhook_secret = {{ env = "ERPE2E_NS_HOOK" }}
poll = "{POLL_SECS}s"
stale_after = "2h"
coalesce = "300ms"

[sources.dv]
type = "dynamics"
org = "main"
objects = ["salesorder", "purchaseOrders"]
webhook_secret = {{ env = "ERPE2E_DV_KEY" }}
poll = "{POLL_SECS}s"
stale_after = "2h"
coalesce = "300ms"

[sources.s4]
type = "sap"
system = "s4"
objects = ["A_OutbDeliveryHeader", "A_PurchaseOrder", "A_PurchaseRequisitionHeader"]
poll = "{POLL_SECS}s"
stale_after = "2h"

[sources.ecc]
type = "sap"
system = "s4"
objects = ["A_OutbDeliveryHeader", "A_PurchaseOrder"]
idoc_folder = "{folder}"
idoc_user = "{IDOC_USER}"
idoc_password = {{ env = "ERPE2E_IDOC_PASSWORD" }}
stale_after = "2h"

[destinations.app]
type = "dingtalk_app"
app = "hk"
"#,
        ns_account = ns_seed::ACCOUNT,
        ns_ck = ns_seed::CONSUMER_KEY,
        ns_token = ns_seed::TOKEN_ID,
        dv_tenant = dv_seed::TENANT_ID,
        dv_client = dv_seed::CLIENT_ID,
        dv_org = dv_seed::ORGANIZATION,
        dv_env = dv_seed::ENVIRONMENT,
        dv_company = dv_seed::COMPANY_ID,
        sap_client = sap_seed::SAP_CLIENT,
        sap_user = sap_seed::USER,
        folder = folder.display(),
    );
    // One flow per entity over every source that reports it (`on.source` takes a list).
    text.push_str(&shipment_flow("shipment", r#"["ns", "dv", "s4", "ecc"]"#));
    text.push_str(&po_flow("po", r#"["s4", "ecc"]"#));
    text.push_str(&pr_flow("pr", r#"["ns", "dv", "s4"]"#));
    text
}

struct E2e {
    _dir: tempfile::TempDir,
    folder: PathBuf,
    dingtalk: DingTalkHarness,
    sims: testkit::erp::ErpSims,
    gateway: Gateway,
    base: String,
}

impl E2e {
    async fn start() -> E2e {
        Self::start_with(|text| text).await
    }

    /// Starts with the config `edit` makes of the usual one.
    async fn start_with(edit: impl FnOnce(String) -> String) -> E2e {
        std::env::set_var("ERPE2E_APP_SECRET", SEED_APP_SECRET);
        std::env::set_var("ERPE2E_NS_CONSUMER_SECRET", ns_seed::CONSUMER_SECRET);
        std::env::set_var("ERPE2E_NS_TOKEN_SECRET", ns_seed::TOKEN_SECRET);
        std::env::set_var("ERPE2E_NS_HOOK", ns_seed::WEBHOOK_SECRET);
        std::env::set_var("ERPE2E_DV_SECRET", dv_seed::CLIENT_SECRET);
        std::env::set_var("ERPE2E_DV_KEY", DV_KEY);
        std::env::set_var("ERPE2E_SAP_PASSWORD", sap_seed::PASSWORD);
        std::env::set_var("ERPE2E_IDOC_PASSWORD", IDOC_PASSWORD);
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("idoc-in");
        let path = dir.path().join("erp.toml");
        std::fs::write(&path, edit(config(&folder))).unwrap();
        let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
        let dingtalk = DingTalkHarness::start().await.unwrap();
        let sims = testkit::erp::ErpSims::start().await.unwrap();
        let mut endpoints = dingtalk.endpoint_map();
        sims.endpoints(&mut endpoints);
        let overrides = Overrides {
            store_url: Some(format!("sqlite://{}/erp.db", dir.path().display())),
            sim_endpoints: Some(endpoints),
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            clock: None,
        };
        let gateway = Gateway::start(config, overrides).await.unwrap();
        let base = format!("http://{}", gateway.addr);
        let h = E2e { _dir: dir, folder, dingtalk, sims, gateway, base };
        h.control(&*h.sims.netsuite.clone(), "webhook", json!({"url": format!("{}/intake/netsuite/ns", h.base)})).await;
        h.control(
            &*h.sims.dynamics.clone(),
            "webhook",
            json!({"url": format!("{}/intake/dynamics/dv", h.base), "headers": {"x-dingbridge-key": DV_KEY}}),
        )
        .await;
        h.control(
            &*h.sims.sap.clone(),
            "idoc_target",
            json!({"url": format!("{}/intake/sap/ecc/idoc", h.base), "user": IDOC_USER, "password": IDOC_PASSWORD, "on_change": true}),
        )
        .await;
        h.wait_for_first_polls().await;
        h
    }

    async fn control(&self, sim: &dyn Simulator, entity: &str, value: Value) -> Value {
        sim.put_record(entity, value).await.unwrap_or_else(|e| panic!("{entity}: {e}"))
    }

    /// The pollers' first round only records where each object starts; changes made before it
    /// are history, not news.
    async fn wait_for_first_polls(&self) {
        let cursors = [
            "netsuite.poll.ns.itemFulfillment",
            "dynamics.poll.dv.salesorder",
            "sap.poll.s4.A_OutbDeliveryHeader",
            "sap.poll.s4.A_PurchaseOrder",
        ];
        let started = Instant::now();
        for name in cursors {
            while self.gateway.store.get_cursor(name).await.unwrap().is_none() {
                assert!(started.elapsed() < Duration::from_secs(20), "the first poll of {name} never ran");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Waits until each simulator named in `probes` has answered `rounds` more poll requests
    /// (journal entries mentioning the probe's text in the path, query, headers or body), then
    /// until the deliveries they planned have settled. Only after both can a test say that
    /// nothing more is coming.
    async fn wait_for_more_polls(&self, rounds: usize, probes: &[(&str, &str)]) {
        let starts: Vec<u64> = probes.iter().map(|(system, _)| self.sims.state(system).request_count()).collect();
        let polls = |(system, needle): &(&str, &str), since: u64| {
            let mentions = |e: &sim::JournalEntry| {
                e.path.contains(needle)
                    || e.query.as_deref().is_some_and(|q| q.contains(needle))
                    || e.body.contains(needle)
                    || e.headers.values().any(|v| v.contains(needle))
            };
            self.sims.state(system).requests(since, None).iter().filter(|e| mentions(e)).count()
        };
        let limit = Duration::from_secs(POLL_SECS * (rounds as u64 + 2) + 10);
        wait_for(&format!("{rounds} more poll rounds"), limit, || {
            probes.iter().zip(&starts).all(|(probe, since)| polls(probe, *since) >= rounds)
        })
        .await;
        wait_for_settled(self.gateway.store.as_ref(), Duration::from_secs(20)).await;
    }

    fn texts(&self, group: &str) -> Vec<String> {
        self.dingtalk
            .sim()
            .messages
            .group_messages(group)
            .into_iter()
            .map(|m| m.msg_param["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn texts_with(&self, group: &str, needle: &str) -> Vec<String> {
        self.texts(group).into_iter().filter(|t| t.contains(needle)).collect()
    }
}

/// "2024-03-20 09:15:30 HKT"-style text of an epoch time.
fn hk(ms: i64) -> String {
    let zoned =
        jiff::Timestamp::from_millisecond(ms).unwrap().to_zoned(jiff::tz::TimeZone::get("Asia/Hong_Kong").unwrap());
    zoned.strftime("%Y-%m-%d %H:%M").to_string()
}

#[tokio::test]
async fn s5_status_changes_reach_the_order_group_once_as_of_erp_time_push_or_poll() {
    let h = E2e::start().await;

    // NetSuite: the fulfilment is packed, then shipped; the user-event script pushes each save.
    let ns = h.sims.netsuite.clone();
    let started = Instant::now();
    h.control(&*ns, "itemFulfillment", json!({"id": "5141", "shipStatus": {"id": "C", "refName": "Shipped"}})).await;
    let ns_latency = wait_for("the NetSuite shipment message", Duration::from_secs(10), || {
        !h.texts_with(ORDERS, "IF000878").is_empty()
    })
    .await;
    let record = h.sims.netsuite.record(connectors::netsuite::client::RecordType::ItemFulfillment, "5141").unwrap();
    let modified = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%#z", record["lastModifiedDate"].as_str().unwrap())
        .or_else(|_| record["lastModifiedDate"].as_str().unwrap().parse::<jiff::Timestamp>())
        .unwrap();

    // Dynamics: the sales order is fulfilled; the Dataverse webhook pushes it.
    let dv = h.sims.dynamics.clone();
    h.control(
        &*dv,
        "salesorders",
        json!({"salesorderid": dv_seed::ORDER_MONGKOK, "statecode": 3, "statuscode": 100001}),
    )
    .await;
    let dv_latency = wait_for("the Dynamics shipment message", Duration::from_secs(10), || {
        !h.texts_with(ORDERS, "ORD-01002").is_empty()
    })
    .await;

    // SAP: goods issue is posted for the picked delivery; ECC-style output pushes DESADV to
    // `ecc`, and the S/4 OData poll finds the same state.
    let sap = h.sims.sap.clone();
    h.control(
        &*sap,
        "A_OutbDeliveryHeader",
        json!({"DeliveryDocument": "80001235", "OverallGoodsMovementStatus": "C"}),
    )
    .await;
    let sap_latency =
        wait_for("the SAP shipment message", Duration::from_secs(10), || !h.texts_with(ORDERS, "80001235").is_empty())
            .await;
    eprintln!(
        "S5 push: change -> DingTalk group NetSuite {} ms, Dynamics {} ms, SAP (IDoc) {} ms (coalesce 300 ms); total {} ms",
        ns_latency.as_millis(),
        dv_latency.as_millis(),
        sap_latency.as_millis(),
        started.elapsed().as_millis()
    );

    // Two poll rounds later the polls have seen every change: still one message per source.
    h.wait_for_more_polls(
        2,
        &[("netsuite", "suiteql"), ("dynamics", "track-changes"), ("sap", "A_OutbDeliveryHeader")],
    )
    .await;
    let ns_texts = h.texts_with(ORDERS, "IF000878");
    assert_eq!(ns_texts.len(), 1, "push and poll of one state give one message: {ns_texts:#?}");
    assert!(ns_texts[0].contains("shipped (Shipped)"), "{}", ns_texts[0]);
    assert!(ns_texts[0].contains(&format!("as of {}", hk(modified.as_millisecond()))), "{} vs {modified}", ns_texts[0]);
    assert!(ns_texts[0].contains("HKT"), "{}", ns_texts[0]);
    assert!(ns_texts[0].contains("SO-001205"), "the order it fulfils: {}", ns_texts[0]);
    let dv_texts = h.texts_with(ORDERS, "ORD-01002");
    assert_eq!(dv_texts.len(), 1, "{dv_texts:#?}");
    assert!(dv_texts[0].contains("shipped"), "{}", dv_texts[0]);
    // SAP: the IDoc (ecc) and the OData poll (s4) each report it once to their own flow, with
    // the same words.
    let sap_texts = h.texts_with(ORDERS, "80001235");
    assert_eq!(sap_texts.len(), 2, "one per source, never repeated: {sap_texts:#?}");
    assert_eq!(sap_texts[0], sap_texts[1], "IDoc and OData give the same message");
    assert!(sap_texts[0].contains("shipped") && sap_texts[0].contains("PCE"), "ISO units: {}", sap_texts[0]);
    assert!(h.texts(OPS).is_empty(), "fresh statuses raise no alert: {:?}", h.texts(OPS));

    let stats = h.gateway.store.stats(0).await.unwrap();
    assert_eq!(stats.dead_letters, 0);
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn s5_with_the_push_suppressed_the_reconciliation_poll_delivers_within_its_interval() {
    let h = E2e::start().await;
    let ns = h.sims.netsuite.clone();
    let dv = h.sims.dynamics.clone();
    h.control(&*ns, "webhook", json!({"suppressed": true})).await;
    h.control(&*dv, "webhook", json!({"suppressed": true})).await;

    let started = Instant::now();
    h.control(&*ns, "itemFulfillment", json!({"id": "5141", "shipStatus": {"id": "B", "refName": "Packed"}})).await;
    h.control(
        &*dv,
        "salesorders",
        json!({"salesorderid": dv_seed::ORDER_MONGKOK, "statecode": 3, "statuscode": 100001}),
    )
    .await;
    // Within one interval (plus the read and the send).
    let limit = Duration::from_secs(POLL_SECS) + Duration::from_millis(2500);
    let ns_latency =
        wait_for("the polled NetSuite status", limit, || !h.texts_with(ORDERS, "IF000878").is_empty()).await;
    let dv_latency =
        wait_for("the polled Dynamics status", limit, || !h.texts_with(ORDERS, "ORD-01002").is_empty()).await;
    assert!(h.sims.netsuite.webhooks_suppressed() >= 1 && h.sims.dynamics.webhooks_suppressed() >= 1);
    assert!(h.texts_with(ORDERS, "IF000878")[0].contains("packed (Packed)"));
    eprintln!(
        "S5 poll ({POLL_SECS} s interval, push suppressed): NetSuite {} ms, Dynamics {} ms after the change (total {} ms)",
        ns_latency.as_millis(),
        dv_latency.as_millis(),
        started.elapsed().as_millis()
    );
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn s5_a_status_older_than_its_threshold_raises_a_staleness_alert_in_ops() {
    let h = E2e::start().await;
    let ns = h.sims.netsuite.clone();
    // Shipped three hours ago, reported only now (a script that was down, say).
    let three_hours_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3);
    let stamp = three_hours_ago.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    h.control(
        &*ns,
        "itemFulfillment",
        json!({"id": "5141", "shipStatus": {"id": "C", "refName": "Shipped"}, "lastModifiedDate": stamp}),
    )
    .await;
    wait_for("the staleness alert", Duration::from_secs(10), || !h.texts(OPS).is_empty()).await;
    let alerts = h.texts(OPS);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert!(alerts[0].contains("STALE: shipment IF000878"), "{}", alerts[0]);
    assert!(alerts[0].contains(&hk(three_hours_ago.as_millisecond())), "{}", alerts[0]);
    // The order group still gets the status, with its true (old) time.
    let texts = h.texts_with(ORDERS, "IF000878");
    assert_eq!(texts.len(), 1);
    assert!(texts[0].contains(&hk(three_hours_ago.as_millisecond())), "{}", texts[0]);
    h.gateway.shutdown().await;
}

/// Catches what an ECC XML-HTTP port would send, so the test can drop it into the folder as a
/// file port would have written it.
async fn idoc_catcher() -> (String, Arc<Mutex<Vec<String>>>) {
    let caught = Arc::new(Mutex::new(Vec::new()));
    let store = caught.clone();
    let app = axum::Router::new().route(
        "/idoc",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/idoc", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, caught)
}

#[tokio::test]
async fn s8_idocs_from_the_folder_and_over_http_give_the_odata_messages_and_bad_files_fail_aside() {
    let h = E2e::start().await;
    let sap = h.sims.sap.clone();

    // ORDERS05 of PO 4500000123, as ECC writes it to a file port.
    let (catcher, caught) = idoc_catcher().await;
    h.control(&*sap, "idoc_target", json!({"url": catcher, "on_change": false})).await;
    h.control(&*sap, "idoc", json!({"type": "ORDERS05", "document": "4500000123"})).await;
    let orders05 = caught.lock().unwrap().pop().expect("the simulator sent ORDERS05");
    std::fs::write(h.folder.join("ORDERS05_4500000123.xml"), &orders05).unwrap();
    // A malformed one beside it, and a file that is not XML at all.
    std::fs::write(h.folder.join("ORDERS05_broken.xml"), &orders05[..orders05.len() / 2]).unwrap();

    let from_file = wait_for("the PO message from the folder", Duration::from_secs(10), || {
        !h.texts_with(PURCHASING, "PO 4500000123").is_empty()
    })
    .await;
    wait_for("the files moved aside", Duration::from_secs(10), || {
        h.folder.join("done/ORDERS05_4500000123.xml").exists() && h.folder.join("failed/ORDERS05_broken.xml").exists()
    })
    .await;
    let reason = std::fs::read_to_string(h.folder.join("failed/ORDERS05_broken.xml.reason.txt")).unwrap();
    assert!(!reason.trim().is_empty(), "the reason is written beside the failed file");
    assert!(!h.folder.join("ORDERS05_4500000123.xml").exists() && !h.folder.join("ORDERS05_broken.xml").exists());
    let dead = h.gateway.store.stats(0).await.unwrap().dead_letters;
    assert_eq!(dead, 1, "the malformed IDoc is a dead letter");

    // The same PO changed in S/4 and found by the OData poll: the same message.
    h.control(&*sap, "A_PurchaseOrder", json!({"PurchaseOrder": "4500000123", "PurchasingGroup": "002"})).await;
    wait_for("the PO message from OData", Duration::from_secs(POLL_SECS + 8), || {
        h.texts_with(PURCHASING, "PO 4500000123").len() >= 2
    })
    .await;
    let po = h.texts_with(PURCHASING, "PO 4500000123");
    assert_eq!(po.len(), 2, "{po:#?}");
    assert_eq!(po[0], po[1], "ORDERS05 and OData give the same message");
    assert!(po[0].contains("PCE") && po[0].contains("KGM"), "ISO units on both paths: {}", po[0]);

    // DESADV over HTTP (ECC output on goods issue) and the OData poll of the same delivery.
    h.control(
        &*sap,
        "idoc_target",
        json!({"url": format!("{}/intake/sap/ecc/idoc", h.base), "user": IDOC_USER, "password": IDOC_PASSWORD, "on_change": true}),
    )
    .await;
    h.control(
        &*sap,
        "A_OutbDeliveryHeader",
        json!({"DeliveryDocument": "80001235", "OverallGoodsMovementStatus": "C"}),
    )
    .await;
    wait_for("both delivery messages", Duration::from_secs(POLL_SECS + 8), || {
        h.texts_with(ORDERS, "80001235").len() >= 2
    })
    .await;
    let shipment = h.texts_with(ORDERS, "80001235");
    assert_eq!(shipment[0], shipment[1], "DESADV and OData give the same message");
    assert!(sap.idocs_sent() >= 1);

    // A wrong port password is refused and stores nothing.
    let refused = reqwest::Client::new()
        .post(format!("{}/intake/sap/ecc/idoc", h.base))
        .basic_auth(IDOC_USER, Some("wrong"))
        .header("content-type", "text/xml")
        .body(orders05.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    // A malformed IDoc over HTTP: 400 (ECC marks it 02) and a dead letter.
    let bad = reqwest::Client::new()
        .post(format!("{}/intake/sap/ecc/idoc", h.base))
        .basic_auth(IDOC_USER, Some(IDOC_PASSWORD))
        .header("content-type", "text/xml")
        .body("<ORDERS05><IDOC BEGIN=\"1\"><EDI_DC40")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(h.gateway.store.stats(0).await.unwrap().dead_letters, 2);
    eprintln!("S8: ORDERS05 file -> DingTalk message in {} ms", from_file.as_millis());
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn a_dropped_file_past_max_file_bytes_fails_aside_unread() {
    const MAX: usize = 64 * 1024;
    let h = E2e::start_with(|text| {
        text.replace("idoc_user = \"ECCIDOC\"", &format!("max_file_bytes = {MAX}\nidoc_user = \"ECCIDOC\""))
    })
    .await;
    let sap = h.sims.sap.clone();
    let (catcher, caught) = idoc_catcher().await;
    h.control(&*sap, "idoc_target", json!({"url": catcher, "on_change": false})).await;
    h.control(&*sap, "idoc", json!({"type": "ORDERS05", "document": "4500000123"})).await;
    let orders05 = caught.lock().unwrap().pop().expect("the simulator sent ORDERS05");
    assert!(orders05.len() < MAX, "the good file fits under the cap");
    // A well-formed document one byte past the cap: refused on its size alone.
    let padding = " ".repeat(MAX + 1 - orders05.len());
    let big = format!("{orders05}{padding}");
    assert_eq!(big.len(), MAX + 1);
    std::fs::write(h.folder.join("ORDERS05_big.xml"), &big).unwrap();
    std::fs::write(h.folder.join("ORDERS05_4500000123.xml"), &orders05).unwrap();

    wait_for("the files moved aside", Duration::from_secs(10), || {
        h.folder.join("done/ORDERS05_4500000123.xml").exists() && h.folder.join("failed/ORDERS05_big.xml").exists()
    })
    .await;
    let reason = std::fs::read_to_string(h.folder.join("failed/ORDERS05_big.xml.reason.txt")).unwrap();
    assert!(reason.contains("file_too_large") && reason.contains(&format!("{}", MAX + 1)), "{reason}");
    assert_eq!(std::fs::read(h.folder.join("failed/ORDERS05_big.xml")).unwrap().len(), MAX + 1, "moved untouched");
    let dead = h.gateway.store.list_dead(10).await.unwrap();
    assert_eq!(dead.len(), 1, "the big file is one dead letter: {dead:?}");
    assert!(dead[0].reason.contains("file_too_large"), "{:?}", dead[0].reason);
    wait_for("the PO message from the good file", Duration::from_secs(10), || {
        !h.texts_with(PURCHASING, "PO 4500000123").is_empty()
    })
    .await;
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn purchase_requisitions_pending_approval_are_read_from_all_three_erps() {
    let h = E2e::start().await;
    // The pending requests are news on the first poll after they appear; the seeds hold one
    // per ERP (NetSuite PR000232, Business Central PO 106021 in review, SAP 10000045/46).
    wait_for("a pending request from each ERP", Duration::from_secs(POLL_SECS * 3 + 5), || {
        let texts = h.texts(PURCHASING);
        ["(ns)", "(dv)", "(s4)"].iter().all(|s| texts.iter().any(|t| t.contains(s)))
    })
    .await;
    // Later polls find the same states: no repeats.
    h.wait_for_more_polls(
        2,
        &[("netsuite", "PurchReq"), ("dynamics", "purchaseOrders"), ("sap", "A_PurchaseRequisition")],
    )
    .await;
    let texts = h.texts(PURCHASING);
    for number in ["PR000232", "106021", "10000045", "10000046"] {
        let found = texts.iter().filter(|t| t.contains(number)).count();
        assert_eq!(found, 1, "{number} once: {texts:#?}");
    }
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn erp_pushes_are_authenticated_and_malformed_ones_refused() {
    let h = E2e::start().await;
    let http = reqwest::Client::new();
    // NetSuite: unsigned and wrongly signed posts get 401, nothing stored.
    let body = br#"{"eventId":"e1","account":"1234567","recordType":"itemfulfillment","recordId":"5141","eventType":"edit","occurredAt":"2026-01-01T00:00:00Z"}"#;
    let unsigned = http.post(format!("{}/intake/netsuite/ns", h.base)).body(&body[..]).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let now = jiff::Timestamp::now().as_second();
    let post_signed = |secret: &'static [u8], signed_at: i64, body: &'static [u8]| {
        http.post(format!("{}/intake/netsuite/ns", h.base))
            .header("x-dingbridge-signature", connectors::netsuite::source::sign_payload(secret, signed_at, body))
            .header("x-dingbridge-timestamp", signed_at.to_string())
            .body(body)
            .send()
    };
    assert_eq!(post_signed(b"wrong", now, body).await.unwrap().status(), 401);
    let secret = ns_seed::WEBHOOK_SECRET.as_bytes();
    assert_eq!(post_signed(secret, now, b"{}").await.unwrap().status(), 400, "signed junk");
    // A genuine post captured and sent again six minutes later is a replay.
    assert_eq!(post_signed(secret, now - 360, body).await.unwrap().status(), 401, "replayed");
    // Dataverse: no key, wrong key → 401; right key, not a RemoteExecutionContext → 400.
    let dv = format!("{}/intake/dynamics/dv", h.base);
    assert_eq!(http.post(&dv).body("{}").send().await.unwrap().status(), 401);
    assert_eq!(http.post(&dv).header("x-dingbridge-key", "nope").body("{}").send().await.unwrap().status(), 401);
    assert_eq!(http.post(&dv).header("x-dingbridge-key", DV_KEY).body("[1]").send().await.unwrap().status(), 400);
    // The right key on a genuine context from 2024: a captured webhook sent again is refused.
    let old = testkit::fixtures::read_fixture("dynamics/webhook_remoteexecutioncontext_salesorder_update.json");
    let resp = http.post(&dv).header("x-dingbridge-key", DV_KEY).body(old).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("stale_notification"));
    // A source of another ERP type is not found under this one.
    assert_eq!(http.post(format!("{}/intake/netsuite/dv", h.base)).body("{}").send().await.unwrap().status(), 404);
    let stats = h.gateway.store.stats(0).await.unwrap();
    assert_eq!(stats.dead_letters, 0);
    assert!(h.texts(ORDERS).is_empty());
    h.gateway.shutdown().await;
}
