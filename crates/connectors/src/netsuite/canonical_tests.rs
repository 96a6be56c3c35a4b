use super::*;
use crate::erp::assert_error_names;
use crate::netsuite::account::AccountId;
use crate::netsuite::auth::{Authorizer, TbaCredentials, TbaSigner};
use crate::netsuite::sim::{seed, NetSuiteSim, SimConfig};
use connect::http::{HttpClient, HttpSettings};
use connect::Clock;
use jiff::Timestamp;
use serde_json::json;
use sim::{RunningSim, Simulator};
use std::sync::Arc;

fn seeded(record: RecordType, id: &str) -> Value {
    seed::records()
        .into_iter()
        .find(|(t, v)| *t == record && v["id"] == id)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no seeded {record:?} {id}"))
}

#[test]
fn the_expanded_purchase_order_fixture_maps_exactly() {
    let record = purchase_order(&fixtures::read_json("netsuite/purchaseOrder_get_expanded.json")).unwrap();
    assert_eq!(
        (record.entity, record.entity_id.as_str(), record.object.as_str()),
        (PURCHASE_ORDER, "4711", "purchaseOrder")
    );
    assert_eq!(record.source_time_ms, Some(1_710_469_860_000));
    assert_eq!(record.version, "1710469860000");
    let d = &record.data;
    assert_eq!(d["system"], "netsuite");
    assert_eq!(d["number"], "PO000812");
    assert_eq!(d["status"], "pending_approval");
    assert_eq!(d["status_text"], "Pending Supervisor Approval");
    assert_eq!(d["supplier"], json!({"id": "1335", "name": "Kowloon Bay Trading Ltd"}));
    assert_eq!(d["order_date"], "2024-03-15");
    assert_eq!(d["amount"], json!({"amount": "1710.00", "currency": "HKD"}));
    assert_eq!(d["as_of"], "2024-03-15T02:31:00Z");
    assert_eq!(d["lines"].as_array().unwrap().len(), 2);
    assert_eq!(
        d["lines"][0],
        json!({"line": "1", "item": "TG-1001 Stainless bolt M8x40", "description": "TG-1001 Stainless bolt M8x40",
               "quantity": {"value": "1200", "unit": "1"}, "unit_price": {"amount": "0.85", "currency": "HKD"},
               "amount": {"amount": "1020.00", "currency": "HKD"}})
    );
    assert_eq!(d["lines"][1]["quantity"], json!({"value": "37.5", "unit": "3"}));
    let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 9, "{keys:?}");
}

#[test]
fn the_picked_fulfillment_maps_to_a_picked_shipment() {
    let record = shipment(&seeded(RecordType::ItemFulfillment, "5141")).unwrap();
    assert_eq!(record.entity_id, "5141");
    assert_eq!(record.version, "picked@1710472800000");
    assert_eq!(record.dedup_key(), "shipment:5141:picked@1710472800000");
    let d = &record.data;
    assert_eq!(d["number"], "IF000878");
    assert_eq!(d["order"], "SO-001205");
    assert_eq!(d["customer"], "HK Trading Ltd");
    assert_eq!((d["status"].as_str(), d["status_text"].as_str()), (Some("picked"), Some("Picked")));
    assert_eq!(d["as_of"], "2024-03-15T03:20:00Z");
    assert_eq!(d["tracking"], json!(["SF1403015566HK"]));
    assert_eq!(d["lines"].as_array().unwrap().len(), 2);
    assert_eq!(
        d["lines"][1],
        json!({"line": "2", "item": "RM-2040 PP resin (kg)", "description": "RM-2040 PP resin (kg)",
               "quantity": {"value": "50", "unit": "3"}})
    );

    let shipped = shipment(&seeded(RecordType::ItemFulfillment, "5130")).unwrap();
    assert_eq!(shipped.data["status"], "shipped");
    assert_eq!(shipped.data["order"], "SO001204");
    assert_eq!(shipped.data["customer"], Value::Null);
    assert_eq!(shipped.data["lines"][0]["quantity"], json!({"value": "3000", "unit": null}));
}

#[test]
fn the_requisition_maps_with_requester_and_approver() {
    let record = purchase_request(&seeded(RecordType::PurchaseRequisition, "4691")).unwrap();
    assert_eq!(record.version, "1710471900000");
    let d = &record.data;
    assert_eq!(d["number"], "PR000232");
    assert_eq!(d["status"], "pending_approval");
    assert_eq!(d["status_text"], "Pending Approval");
    assert_eq!(d["pending_approval"], true);
    assert_eq!(d["requester"], json!({"id": "159", "name": "Chan Tai Man"}));
    assert_eq!(d["amount"], json!({"amount": "1531.20", "currency": "HKD"}));
    assert_eq!(d["lines"].as_array().unwrap().len(), 2);
    assert_eq!(d["lines"][1]["quantity"], json!({"value": "55.5", "unit": "3"}));
    assert_eq!(d["lines"][1]["amount"], json!({"amount": "1021.20", "currency": "HKD"}));
    assert_eq!(d["as_of"], "2024-03-15T03:05:00Z");
    assert_eq!(d["version"], "1710471900000");
    assert_eq!(
        d["approval"],
        json!({"record_type": "purchaseRequisition", "id": "4691", "approval_status": "1",
               "next_approver": {"id": "201", "name": "Lee Po Yee"}})
    );
}

#[test]
fn missing_and_invalid_fields_are_named() {
    let mut pr = seeded(RecordType::PurchaseRequisition, "4690");
    pr.as_object_mut().unwrap().remove("tranId");
    assert_error_names(&purchase_request(&pr).unwrap_err(), "purchaseRequisition", "4690", "tranId");

    let mut fulfillment = seeded(RecordType::ItemFulfillment, "5141");
    fulfillment["shipStatus"] = json!({"id": "Z", "refName": "?"});
    assert_error_names(&shipment(&fulfillment).unwrap_err(), "itemFulfillment", "5141", "shipStatus");

    let mut po = fixtures::read_json("netsuite/purchaseOrder_get_expanded.json");
    po["currency"] = json!({"id": "9", "refName": "Klingon Darsek"});
    let err = purchase_order(&po).unwrap_err();
    assert_error_names(&err, "purchaseOrder", "4711", "currency");
    assert!(err.to_string().contains("Klingon Darsek"), "{err}");

    let collapsed = purchase_order(&fixtures::read_json("netsuite/purchaseOrder_get_default.json")).unwrap_err();
    assert!(collapsed.to_string().contains("expandSubResources"), "{collapsed}");

    let err = from_record(RecordType::SalesOrder, &seeded(RecordType::SalesOrder, "5140")).unwrap_err();
    assert!(matches!(err, MapError::Unsupported { .. }), "{err}");
    assert_error_names(&MapError::missing("itemFulfillment", "?", "id"), "itemFulfillment", "?", "id");
    assert!(matches!(shipment(&json!({"tranId": "x"})), Err(MapError::Missing { field, .. }) if field == "id"));
}

#[derive(Debug)]
struct FixedClock(Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

async fn start() -> (Arc<NetSuiteSim>, RunningSim, NetSuiteClient) {
    let clock = Arc::new(FixedClock("2024-03-15T03:30:00Z".parse().unwrap()));
    let sim = Arc::new(NetSuiteSim::new(SimConfig::default(), clock.clone()));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let creds = TbaCredentials {
        consumer_key: seed::CONSUMER_KEY.to_owned(),
        consumer_secret: seed::CONSUMER_SECRET.to_owned().into(),
        token_id: seed::TOKEN_ID.to_owned(),
        token_secret: seed::TOKEN_SECRET.to_owned().into(),
    };
    let signer = TbaSigner::new(AccountId::parse(seed::ACCOUNT).unwrap(), creds, clock.clone());
    let base = format!("{}/services/rest", server.url());
    let http = HttpClient::new(HttpSettings::loopback()).unwrap();
    let client = NetSuiteClient::new(http, &base, Authorizer::Tba(signer), 2, clock).unwrap();
    (sim, server, client)
}

#[tokio::test]
async fn reads_map_the_simulated_records_and_a_gone_record_is_none() {
    let (sim, _server, client) = start().await;
    let record = read(&client, RecordType::ItemFulfillment, "5141").await.unwrap().unwrap();
    assert_eq!(client.call_count(), 1);
    assert_eq!(record, shipment(&seeded(RecordType::ItemFulfillment, "5141")).unwrap());

    let po = read(&client, RecordType::PurchaseOrder, "4711").await.unwrap().unwrap();
    assert_eq!(po.data, purchase_order(&fixtures::read_json("netsuite/purchaseOrder_get_expanded.json")).unwrap().data);

    assert_eq!(read(&client, RecordType::PurchaseOrder, "999999").await.unwrap(), None);
    assert_eq!(client.call_count(), 3);

    // A record the mapping refuses is a permanent rejection naming the record and field.
    sim.put_record("itemFulfillment", json!({"id": "5141", "shipStatus": {"id": "Q"}})).await.unwrap();
    let err = read(&client, RecordType::ItemFulfillment, "5141").await.unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Rejected { vendor: "netsuite", detail } if detail.contains("shipStatus")),
        "{err}"
    );
}

#[tokio::test]
async fn pending_requisitions_are_queried_then_read() {
    let (sim, _server, client) = start().await;
    let pending = pending_purchase_requests(&client).await.unwrap();
    let numbers: Vec<&str> = pending.iter().map(|r| r.data["number"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["PR000231", "PR000232"]);
    assert_eq!(client.call_count(), 3, "one SuiteQL page and one read per requisition");
    assert!(pending.iter().all(|r| r.data["pending_approval"] == true));

    // Once approved, a requisition drops out; the same state read twice keeps its version.
    let before = read(&client, RecordType::PurchaseRequisition, "4691").await.unwrap().unwrap();
    let again = read(&client, RecordType::PurchaseRequisition, "4691").await.unwrap().unwrap();
    assert_eq!(before.dedup_key(), again.dedup_key());
    sim.put_record("purchaseRequisition", json!({"id": "4690", "approvalStatus": {"id": "2", "refName": "Approved"}}))
        .await
        .unwrap();
    let pending = pending_purchase_requests(&client).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].entity_id, "4691");
}

/// API cost of reconciliation: 1,000 changed fulfilments found by one SuiteQL poll and read.
#[tokio::test]
async fn a_thousand_changed_fulfilments_cost_one_suiteql_page_and_a_read_each() {
    let (sim, _server, client) = start().await;
    let mut cursor = crate::netsuite::source::PollCursor::new(
        RecordType::ItemFulfillment,
        "2024-03-15T03:00:00Z".parse().unwrap(),
        jiff::tz::TimeZone::UTC,
    );
    for i in 0..1000u32 {
        let row = json!({"id": format!("{}", 70000 + i), "tranId": format!("IF9{i:05}"), "shipStatus": {"id": "C", "refName": "Shipped"},
            "createdFrom": {"id": "5140", "refName": "Sales Order #SO-001205"}});
        sim.put_record("itemFulfillment", row).await.unwrap();
    }
    // Page by page: 1,001 rows changed in the window make two pages of 1,000.
    let mut rows = Vec::new();
    loop {
        let (page, more) = crate::netsuite::source::poll_changes(&client, &mut cursor).await.unwrap();
        rows.extend(page);
        if !more {
            break;
        }
    }
    let poll_calls = client.call_count();
    // The seeded fulfilment changed inside the window too; count only the thousand.
    let rows: Vec<_> = rows.into_iter().filter(|r| r.id.parse::<u32>().unwrap_or(0) >= 70000).collect();
    assert_eq!(rows.len(), 1000);
    for row in &rows {
        read(&client, RecordType::ItemFulfillment, &row.id).await.unwrap().unwrap();
    }
    let total = client.call_count();
    eprintln!(
        "NetSuite: {poll_calls} SuiteQL call(s) + {} reads = {total} API calls for 1,000 changed fulfilments",
        total - poll_calls
    );
    assert!(poll_calls <= 2 && total - poll_calls == 1000, "{poll_calls} + {}", total - poll_calls);
}
