//! The demo's ERP scenarios against the NetSuite, Dynamics 365 and SAP simulators: S5 (shipment
//! freshness) and S8 (legacy SAP ECC IDocs).

use super::{until, ScenarioResult, Timeline};
use crate::gateway::Gateway;
use crate::sims::DingTalkHarness;
use anyhow::Context;
use connectors::dynamics::sim::seed as dv_seed;
use connectors::netsuite::sim::seed as ns_seed;
use connectors::sap::sim::seed as sap_seed;
use serde_json::json;
use sim::Simulator;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ORDERS: &str = "cid7Hk2PqRsTuVwXyZ0aBcDe+Q==";
const PURCHASING: &str = "cidF1nAnCe9zYxWvUt8sRqPo/A==";
const DATAVERSE_KEY: &str = "demo-dataverse-webhook-key";
const IDOC_USER: &str = "ECCIDOC";
const IDOC_PASSWORD: &str = "demo-idoc-port-password";

pub use testkit::erp::ErpSims;

/// Point each ERP's push at the gateway, as its administrator would.
pub async fn connect(sims: &ErpSims, base: &str) -> anyhow::Result<()> {
    sims.netsuite.put_record("webhook", json!({"url": format!("{base}/intake/netsuite/netsuite")})).await?;
    sims.dynamics
        .put_record(
            "webhook",
            json!({"url": format!("{base}/intake/dynamics/dynamics"), "headers": {"x-dingbridge-key": DATAVERSE_KEY}}),
        )
        .await?;
    sims.sap
        .put_record(
            "idoc_target",
            json!({"url": format!("{base}/intake/sap/ecc/idoc"), "user": IDOC_USER, "password": IDOC_PASSWORD, "on_change": true}),
        )
        .await?;
    Ok(())
}

/// How many workflow decisions the SAP simulator has received.
pub fn sap_decisions(sims: &ErpSims) -> usize {
    sims.state("sap").requests(0, None).iter().filter(|r| r.path.ends_with("/Decision")).count()
}

/// The ERP secrets of `examples/hk-trading.toml`, set to the simulators' seeded values.
pub fn set_env() {
    std::env::set_var("DINGBRIDGE_NETSUITE_CONSUMER_SECRET", ns_seed::CONSUMER_SECRET);
    std::env::set_var("DINGBRIDGE_NETSUITE_TOKEN_SECRET", ns_seed::TOKEN_SECRET);
    std::env::set_var("DINGBRIDGE_NETSUITE_HOOK_SECRET", ns_seed::WEBHOOK_SECRET);
    std::env::set_var("DINGBRIDGE_AAD_SECRET", dv_seed::CLIENT_SECRET);
    std::env::set_var("DINGBRIDGE_DATAVERSE_KEY", DATAVERSE_KEY);
    std::env::set_var("DINGBRIDGE_SAP_PASSWORD", sap_seed::PASSWORD);
    std::env::set_var("DINGBRIDGE_IDOC_PASSWORD", IDOC_PASSWORD);
}

fn group_texts(dingtalk: &DingTalkHarness, group: &str, needle: &str) -> Vec<String> {
    dingtalk
        .sim()
        .messages
        .group_messages(group)
        .into_iter()
        .filter_map(|m| m.msg_param["text"].as_str().map(str::to_owned))
        .filter(|t| t.contains(needle))
        .collect()
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim_start_matches('#').trim().to_owned()
}

fn as_of_line(text: &str) -> String {
    text.lines().find(|l| l.contains("As of")).unwrap_or_default().trim_start_matches("- ").to_owned()
}

/// Runs one reconciliation poll of a source's object now (the demo does not wait a minute).
pub(super) async fn reconcile(gateway: &Gateway, source: &str, object: &str) -> anyhow::Result<()> {
    let erp = gateway.state.erp.get(source).with_context(|| format!("no ERP source `{source}`"))?;
    server::poll::poll_object(&gateway.state, erp.as_ref(), object).await.map_err(|e| anyhow::anyhow!(e))
}

pub async fn scenario_freshness(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
    sims: &ErpSims,
) -> ScenarioResult {
    ScenarioResult::of("S5", "shipment status -> order group \"as of\" ERP time (HKT); missed webhook caught by the poll; stale status -> ops", freshness_steps(timeline, dingtalk, gateway, sims)).await
}

async fn freshness_steps(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
    sims: &ErpSims,
) -> anyhow::Result<()> {
    // NetSuite: the warehouse ships fulfilment IF000878; the user-event script pushes the save.
    let changed = Instant::now();
    sims.netsuite
        .put_record("itemFulfillment", json!({"id": "5141", "shipStatus": {"id": "C", "refName": "Shipped"}}))
        .await?;
    timeline.line("NS", "warehouse marks item fulfilment IF000878 (order SO-001205) Shipped; the script pushes it");
    let text = until("the NetSuite shipment message", Duration::from_secs(15), || {
        group_texts(dingtalk, ORDERS, "IF000878").into_iter().next()
    })
    .await?;
    timeline.line(
        "OUT",
        format!(
            "sales-hk group: {} | {} ({} ms after the save)",
            first_line(&text),
            as_of_line(&text),
            changed.elapsed().as_millis()
        ),
    );

    // Dynamics: the webhook is lost (simulator fault); the reconciliation poll still finds it.
    sims.dynamics.put_record("webhook", json!({"suppressed": true})).await?;
    sims.dynamics
        .put_record(
            "salesorders",
            json!({"salesorderid": dv_seed::ORDER_MONGKOK, "statecode": 3, "statuscode": 100001}),
        )
        .await?;
    timeline.line("D365", "sales order ORD-01002 fulfilled; its Dataverse webhook is lost (fault: suppressed)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    anyhow::ensure!(group_texts(dingtalk, ORDERS, "ORD-01002").is_empty(), "a suppressed webhook still delivered");
    reconcile(gateway, "dynamics", "salesorder").await?;
    timeline.line("POLL", "reconciliation poll of Dataverse change tracking (every 1m; run now): 1 change");
    let text = until("the Dynamics shipment message", Duration::from_secs(15), || {
        group_texts(dingtalk, ORDERS, "ORD-01002").into_iter().next()
    })
    .await?;
    timeline.line("OUT", format!("sales-hk group: {} | {}", first_line(&text), as_of_line(&text)));
    sims.dynamics.put_record("webhook", json!({"suppressed": false})).await?;

    // The NetSuite poll finds the state the script already pushed: nothing new is sent.
    reconcile(gateway, "netsuite", "itemFulfillment").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ns = group_texts(dingtalk, ORDERS, "IF000878");
    anyhow::ensure!(ns.len() == 1, "the NetSuite status was sent {} times", ns.len());
    timeline.line("POLL", "NetSuite reconciliation poll sees IF000878 again: same state, no second message");

    // A status shipped three hours ago that reaches us only now: the group gets it with its true
    // time, and ops is told the status is stale.
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3);
    let ops_before = dingtalk.message_count("ops");
    sims.netsuite
        .put_record(
            "itemFulfillment",
            json!({"id": "5141", "shipStatus": {"id": "B", "refName": "Packed"}, "lastModifiedDate": old.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}),
        )
        .await?;
    timeline.line("NS", "a status change made 3 h ago (script was down) arrives only now");
    until("the staleness alert", Duration::from_secs(15), || {
        (dingtalk.message_count("ops") > ops_before).then_some(())
    })
    .await?;
    let alert = dingtalk.messages("ops").last().map(|m| m.body.to_string()).unwrap_or_default();
    anyhow::ensure!(alert.contains("Stale"), "ops got something else: {alert}");
    timeline.line("OUT", "ops robot: Stale: shipment IF000878 (netsuite), status Packed is 180 minutes old");
    Ok(())
}

pub async fn scenario_legacy(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
    sims: &ErpSims,
    folder: &Path,
) -> ScenarioResult {
    ScenarioResult::of(
        "S8",
        "SAP ECC: ORDERS05 file + DESADV over HTTP = the OData messages; bad IDoc -> failed/ + dead letter",
        legacy_steps(timeline, dingtalk, gateway, sims, folder),
    )
    .await
}

/// Catches what an ECC XML-HTTP port sends, so the demo can drop it as a file port writes it.
async fn idoc_catcher() -> anyhow::Result<(String, Arc<Mutex<Vec<String>>>)> {
    let caught = Arc::new(Mutex::new(Vec::new()));
    let keep = caught.clone();
    let app = axum::Router::new().route(
        "/idoc",
        axum::routing::post(move |body: String| {
            let keep = keep.clone();
            async move {
                if let Ok(mut k) = keep.lock() {
                    k.push(body);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/idoc", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    Ok((url, caught))
}

async fn legacy_steps(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
    sims: &ErpSims,
    folder: &Path,
) -> anyhow::Result<()> {
    let base = format!("http://{}", gateway.addr);
    let (catcher, caught) = idoc_catcher().await?;
    sims.sap.put_record("idoc_target", json!({"url": catcher, "on_change": false})).await?;
    sims.sap.put_record("idoc", json!({"type": "ORDERS05", "document": "4500000123"})).await?;
    let orders05 = caught.lock().ok().and_then(|mut c| c.pop()).context("the SAP simulator sent no ORDERS05")?;
    let file: PathBuf = folder.join("ORDERS05_4500000123.xml");
    tokio::fs::create_dir_all(folder).await?;
    tokio::fs::write(&file, &orders05).await?;
    tokio::fs::write(folder.join("ORDERS05_truncated.xml"), &orders05[..orders05.len() / 2]).await?;
    timeline.line("ECC", format!("ORDERS05 for PO 4500000123 and a truncated IDoc dropped into {}", folder.display()));
    let from_file = until("the PO message from the IDoc file", Duration::from_secs(15), || {
        group_texts(dingtalk, PURCHASING, "4500000123 (ecc)").into_iter().next()
    })
    .await?;
    timeline.line("OUT", format!("finance group: {}", first_line(&from_file)));
    until("the files moved aside", Duration::from_secs(10), || {
        (folder.join("done/ORDERS05_4500000123.xml").exists() && folder.join("failed/ORDERS05_truncated.xml").exists())
            .then_some(())
    })
    .await?;
    let reason = tokio::fs::read_to_string(folder.join("failed/ORDERS05_truncated.xml.reason.txt")).await?;
    timeline.line("FILE", format!("done/ORDERS05_4500000123.xml; failed/ORDERS05_truncated.xml: {}", reason.trim()));

    // The same PO changed in S/4HANA and read over OData.
    sims.sap.put_record("A_PurchaseOrder", json!({"PurchaseOrder": "4500000123", "PurchasingGroup": "002"})).await?;
    reconcile(gateway, "s4", "A_PurchaseOrder").await?;
    let from_odata = until("the PO message from OData", Duration::from_secs(15), || {
        group_texts(dingtalk, PURCHASING, "4500000123 (s4)").into_iter().next()
    })
    .await?;
    let body = |t: &str| t.lines().skip(1).collect::<Vec<_>>().join("\n");
    anyhow::ensure!(
        body(&from_file) == body(&from_odata),
        "IDoc and OData messages differ:\n{from_file}\n---\n{from_odata}"
    );
    timeline.line("OUT", "finance group: the OData read of PO 4500000123 gives the same lines (PCE, KGM)");

    // DESADV over HTTP when goods issue is posted, and the OData poll of the same delivery.
    sims.sap
        .put_record(
            "idoc_target",
            json!({"url": format!("{base}/intake/sap/ecc/idoc"), "user": IDOC_USER, "password": IDOC_PASSWORD, "on_change": true}),
        )
        .await?;
    sims.sap
        .put_record("A_OutbDeliveryHeader", json!({"DeliveryDocument": "80001235", "OverallGoodsMovementStatus": "C"}))
        .await?;
    timeline.line("ECC", "goods issue for delivery 80001235: DESADV posted to /intake/sap/ecc/idoc (Basic auth)");
    reconcile(gateway, "s4", "A_OutbDeliveryHeader").await?;
    let both = until("the two delivery messages", Duration::from_secs(15), || {
        let texts = group_texts(dingtalk, ORDERS, "80001235");
        (texts.len() >= 2).then_some(texts)
    })
    .await?;
    let strip = |t: &str| t.replace("(sap)", "");
    anyhow::ensure!(
        strip(&both[0]) == strip(&both[1]),
        "DESADV and OData messages differ:\n{}\n---\n{}",
        both[0],
        both[1]
    );
    timeline.line(
        "OUT",
        format!("sales-hk group (DESADV and OData alike): {} | {}", first_line(&both[0]), as_of_line(&both[0])),
    );
    let dead = gateway.store.stats(0).await?.dead_letters;
    anyhow::ensure!(dead >= 1, "the truncated IDoc is not a dead letter");
    timeline.line(
        "DLQ",
        format!("{dead} dead letters in the store, the truncated IDoc among them (its text and the reason kept)"),
    );
    Ok(())
}
