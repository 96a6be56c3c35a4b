use super::*;
use crate::erp::assert_error_names;
use crate::sap::auth::SapAuth;
use crate::sap::client::SapConfig;
use crate::sap::idoc::{Idoc, IdocParser};
use crate::sap::sim::{seed, SapSim};
use connect::http::{HttpClient, HttpSettings};
use connect::SystemClock;
use secrecy::SecretString;
use sim::{RunningSim, Simulator};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use url::Url;

/// 2024-03-19 15:40:00 Hong Kong time: the goods issue of delivery 80001234 in the OData
/// fixture, the simulator seed and the DESADV fixture (ISDD/ISDZ).
const GOODS_ISSUE_MS: i64 = 1_710_834_000_000;

fn parser() -> IdocParser {
    IdocParser::new(TimeZone::get("Asia/Hong_Kong").unwrap(), UomTable::default())
}

fn parse_one(xml: &str) -> Idoc {
    let mut idocs = parser().parse(xml).unwrap();
    assert_eq!(idocs.len(), 1);
    idocs.remove(0)
}

fn delivery_idoc(xml: &str) -> DeliveryIdoc {
    match parse_one(xml) {
        Idoc::Delivery(d) => d,
        other => panic!("not a delivery: {other:?}"),
    }
}

fn order_idoc(xml: &str) -> OrderIdoc {
    match parse_one(xml) {
        Idoc::Order(o) => o,
        other => panic!("not an order: {other:?}"),
    }
}

fn fixture_entity(name: &str) -> Value {
    fixtures::read_json(format!("sap/{name}"))["d"].clone()
}

/// A seeded delivery header with its seeded items expanded, as the OData service returns it.
fn seeded_delivery(number: &str) -> Value {
    let mut header = seed::outbound_deliveries().into_iter().find(|d| d["DeliveryDocument"] == number).unwrap();
    let items: Vec<Value> =
        seed::outbound_delivery_items().into_iter().filter(|i| i["DeliveryDocument"] == number).collect();
    header[DELIVERY_EXPAND] = json!({"results": items});
    header
}

#[test]
fn the_delivery_header_fixture_maps_to_a_shipped_shipment() {
    let record =
        shipment_from_delivery(&fixture_entity("outbound_delivery_header.v2.json"), &UomTable::default()).unwrap();
    assert_eq!(
        (record.entity, record.entity_id.as_str(), record.object.as_str()),
        (SHIPMENT, "80001234", DELIVERY_SET)
    );
    assert_eq!(record.source_time_ms, Some(GOODS_ISSUE_MS));
    assert_eq!(record.version, format!("shipped@{GOODS_ISSUE_MS}"));
    assert_eq!(
        record.data,
        json!({"system": "sap", "number": "80001234", "order": null, "customer": "20000077", "status": "shipped",
               "status_text": "Goods issue completed", "as_of": "2024-03-19T07:40:00Z",
               "tracking": ["HKG-BL-77812"], "lines": []}),
        "to_DeliveryDocumentItem is deferred in the fixture: no lines"
    );
}

#[test]
fn seeded_deliveries_map_lines_in_iso_units_and_picking_states() {
    let uoms = UomTable::default();
    let shipped = shipment_from_delivery(&seeded_delivery("80001234"), &uoms).unwrap();
    assert_eq!(shipped.data["order"], "12345");
    assert_eq!(
        shipped.data["lines"],
        json!([
            {"line": "10", "item": "TG-1001", "description": "Stainless bolt M8x40",
             "quantity": {"value": "1200", "unit": "PCE"}},
            {"line": "20", "item": "RM-2040", "description": "Polypropylene resin 25kg bag",
             "quantity": {"value": "875", "unit": "KGM"}}
        ])
    );
    let picked = shipment_from_delivery(&seeded_delivery("80001235"), &uoms).unwrap();
    assert_eq!(
        (picked.data["status"].as_str(), picked.data["status_text"].as_str()),
        (Some("picked"), Some("Picking completed"))
    );
    assert_eq!((picked.data["as_of"].clone(), picked.version.as_str()), (Value::Null, "picked@0"));

    let mut header = seeded_delivery("80001235");
    header["OverallProofOfDeliveryStatus"] = json!("C");
    header["OverallGoodsMovementStatus"] = json!("C");
    header["ActualGoodsMovementDate"] = json!("/Date(1710806400000)/");
    header["ActualGoodsMovementTime"] = json!("PT15H40M00S");
    let delivered = shipment_from_delivery(&header, &uoms).unwrap();
    assert_eq!(delivered.version, format!("delivered@{GOODS_ISSUE_MS}"));
    header["OverallProofOfDeliveryStatus"] = json!("");
    header["OverallGoodsMovementStatus"] = json!("B");
    assert_eq!(shipment_from_delivery(&header, &uoms).unwrap().data["status"], "partially_shipped");
    // Another system zone moves the instant of the same local time.
    let utc = shipment_from_delivery_in(&header, &uoms, &TimeZone::UTC).unwrap();
    assert_eq!(utc.source_time_ms, Some(GOODS_ISSUE_MS + 8 * 3_600_000));
}

#[test]
fn the_desadv_fixture_maps_like_the_odata_delivery() {
    let record = shipment_from_idoc(
        &delivery_idoc(&fixtures::read_fixture("sap/idoc_DELVRY07_DESADV_shipment.xml")),
        &UomTable::default(),
    )
    .unwrap();
    assert_eq!((record.entity_id.as_str(), record.object.as_str()), ("80001234", "DESADV"));
    assert_eq!(record.version, format!("shipped@{GOODS_ISSUE_MS}"));
    let d = &record.data;
    assert_eq!(
        (d["number"].as_str(), d["order"].as_str(), d["customer"].as_str()),
        (Some("80001234"), Some("12345"), Some("20000077"))
    );
    assert_eq!(d["as_of"], "2024-03-19T07:40:00Z");
    assert_eq!(d["tracking"], json!(["HKG-BL-77812"]));
    assert_eq!(d["lines"].as_array().unwrap().len(), 2);
    assert_eq!(
        d["lines"][0],
        json!({"line": "10", "item": "101001", "description": "Stainless bolt M8x40",
               "quantity": {"value": "1200", "unit": "PCE"}})
    );
    // 35 BAG: the bag has no ISO unit, so the base quantity (875 KG) is used.
    assert_eq!(d["lines"][1]["quantity"], json!({"value": "875", "unit": "KGM"}));
    // Same header facts as the OData fixture of the same delivery.
    let odata =
        shipment_from_delivery(&fixture_entity("outbound_delivery_header.v2.json"), &UomTable::default()).unwrap();
    for key in ["number", "customer", "status", "status_text", "as_of", "tracking"] {
        assert_eq!(d[key], odata.data[key], "{key}");
    }
}

#[test]
fn the_purchase_order_fixture_and_the_orders05_fixture_map() {
    let uoms = UomTable::default();
    let record = purchase_order_from_odata(&fixture_entity("purchaseorder_single_expanded.v2.json"), &uoms).unwrap();
    assert_eq!((record.entity, record.entity_id.as_str()), (PURCHASE_ORDER, "4500000123"));
    assert_eq!(record.version, "1710469867000");
    let d = &record.data;
    assert_eq!(
        (d["status"].as_str(), d["status_text"].as_str()),
        (Some("pending_approval"), Some("Release not completed"))
    );
    assert_eq!(d["supplier"], json!({"id": "10000123", "name": "Kowloon Bay Trading Ltd"}));
    assert_eq!(d["order_date"], "2024-03-15");
    assert_eq!(d["amount"], json!({"amount": "1710.00", "currency": "HKD"}));
    assert_eq!(d["as_of"], "2024-03-15T02:31:07Z");
    assert_eq!(d["lines"].as_array().unwrap().len(), 2);
    assert_eq!(
        d["lines"][1],
        json!({"line": "20", "item": "RM-2040", "description": "Polypropylene resin 25kg bag",
               "quantity": {"value": "37.5", "unit": "KGM"}, "unit_price": {"amount": "18.40", "currency": "HKD"},
               "amount": {"amount": "690.00", "currency": "HKD"}})
    );

    let idoc =
        purchase_order_from_idoc(&order_idoc(&fixtures::read_fixture("sap/idoc_ORDERS05_purchase_order.xml")), &uoms)
            .unwrap();
    assert_eq!((idoc.entity_id.as_str(), idoc.object.as_str()), ("4500000123", "ORDERS05"));
    assert_eq!(idoc.version, "idoc:0000000000481516/PRDCLNT100");
    assert_eq!(idoc.data["supplier"], json!({"id": "100131", "name": null}));
    assert_eq!(idoc.data["status"], "approved");
    assert_eq!(idoc.data["amount"], d["amount"]);
    assert_eq!(idoc.data["order_date"], d["order_date"]);
    assert_eq!(idoc.data["as_of"], Value::Null);
    assert_eq!(idoc.data["lines"][0]["item"], "101001");
    assert_eq!(idoc.data["lines"][1]["quantity"], d["lines"][1]["quantity"]);
    assert_eq!(idoc.data["lines"][1]["amount"], d["lines"][1]["amount"]);
}

#[test]
fn requisition_items_group_into_pending_requests() {
    let page = fixtures::read_json("sap/purchaserequisition_items_page.v2.json");
    let items = page["d"]["results"].as_array().unwrap();
    let records = purchase_requests_from_items(items, &UomTable::default()).unwrap();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(
        (record.entity, record.entity_id.as_str(), record.version.as_str()),
        (PURCHASE_REQUEST, "10000045", "1710407700000")
    );
    let d = &record.data;
    assert_eq!((d["status"].as_str(), d["pending_approval"].as_bool()), (Some("pending_approval"), Some(true)));
    assert_eq!(d["requester"], json!({"id": "CHANTM", "name": "CHAN TM"}));
    assert_eq!(d["amount"], json!({"amount": "1020.00", "currency": "HKD"}));
    assert_eq!(d["as_of"], "2024-03-14T09:15:00Z");
    assert_eq!(d["version"], "1710407700000");
    assert_eq!(
        d["lines"],
        json!([{"line": "10", "item": "TG-1001", "description": "Stainless bolt M8x40",
                "quantity": {"value": "1200", "unit": "PCE"}, "unit_price": {"amount": "0.85", "currency": "HKD"},
                "amount": {"amount": "1020.00", "currency": "HKD"}}])
    );
    assert_eq!(d["approval"]["release_strategy"], "Z1");

    // A second, released item of the same requisition joins it; the newest change wins.
    let mut second = items[0].clone();
    second["PurchaseRequisitionItem"] = json!("20");
    second["ReleaseIsNotCompleted"] = json!(false);
    second["LastChangeDateTime"] = json!("/Date(1710500000000+0000)/");
    let grouped = purchase_requests_from_items(&[items[0].clone(), second], &UomTable::default()).unwrap();
    assert_eq!(grouped.len(), 1);
    assert_eq!(grouped[0].data["amount"], json!({"amount": "2040.00", "currency": "HKD"}));
    assert_eq!(
        (grouped[0].version.as_str(), grouped[0].data["pending_approval"].as_bool()),
        ("1710500000000", Some(true))
    );
}

#[test]
fn missing_key_fields_are_named() {
    let uoms = UomTable::default();
    let mut header = fixture_entity("outbound_delivery_header.v2.json");
    header.as_object_mut().unwrap().remove("DeliveryDocument");
    assert_error_names(&shipment_from_delivery(&header, &uoms).unwrap_err(), DELIVERY_SET, "?", "DeliveryDocument");

    let mut header = seeded_delivery("80001234");
    header[DELIVERY_EXPAND]["results"][1]["DeliveryQuantityUnit"] = json!("XYZ");
    header[DELIVERY_EXPAND]["results"][1]["BaseUnit"] = json!("XYZ");
    assert_error_names(&shipment_from_delivery(&header, &uoms).unwrap_err(), DELIVERY_SET, "80001234", "XYZ");

    let mut po = fixture_entity("purchaseorder_single_expanded.v2.json");
    po.as_object_mut().unwrap().remove("DocumentCurrency");
    assert_error_names(
        &purchase_order_from_odata(&po, &uoms).unwrap_err(),
        PURCHASE_ORDER_SET,
        "4500000123",
        "DocumentCurrency",
    );

    let mut item = fixtures::read_json("sap/purchaserequisition_items_page.v2.json")["d"]["results"][0].clone();
    item.as_object_mut().unwrap().remove("RequestedQuantity");
    assert_error_names(
        &purchase_requests_from_items(&[item], &uoms).unwrap_err(),
        REQUISITION_ITEM_SET,
        "10000045",
        "RequestedQuantity",
    );
}

struct Setup {
    sim: Arc<SapSim>,
    running: RunningSim,
}

async fn start() -> Setup {
    let sim = Arc::new(SapSim::new());
    let running = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    Setup { sim, running }
}

fn client(s: &Setup) -> SapClient {
    let mut config = SapConfig::new(Url::parse(&s.running.url()).unwrap());
    config.sap_client = Some(seed::SAP_CLIENT.to_owned());
    SapClient::new(
        HttpClient::new(HttpSettings { timeout: Duration::from_secs(10), ..HttpSettings::loopback() }).unwrap(),
        SapAuth::Basic { user: seed::USER.to_owned(), password: SecretString::from(seed::PASSWORD.to_owned()) },
        config,
        UomTable::default(),
        Arc::new(SystemClock),
    )
}

/// dingbridge's IDoc receiver stand-in: yields each POSTed body.
async fn receiver() -> (String, UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/idoc",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/idoc", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// Asks the simulator for the IDoc of `document` (built by its `idoc_out` from its OData rows).
async fn pushed(s: &Setup, rx: &mut UnboundedReceiver<String>, kind: &str, document: &str) -> String {
    s.sim.put_record("idoc", json!({"type": kind, "document": document})).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap()
}

fn without(mut data: Value, pointers: &[&str]) -> Value {
    for pointer in pointers {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        if let Some(map) = data.pointer_mut(parent).and_then(Value::as_object_mut) {
            map.remove(key);
        }
    }
    data
}

#[tokio::test]
async fn s8_the_idoc_and_the_odata_read_of_a_document_give_the_same_data() {
    let s = start().await;
    let c = client(&s);
    let (url, mut rx) = receiver().await;
    s.sim.put_record("idoc_target", json!({"url": url})).await.unwrap();
    let uoms = UomTable::default();

    // A goods-issued delivery: everything is equal, version included.
    let odata = read_delivery(&c, "80001234").await.unwrap().unwrap();
    assert_eq!(c.call_count(), 1);
    let idoc = shipment_from_idoc(&delivery_idoc(&pushed(&s, &mut rx, "DESADV", "80001234").await), &uoms).unwrap();
    assert_eq!(idoc.data, odata.data);
    assert_eq!((idoc.entity_id.as_str(), idoc.version.as_str()), (odata.entity_id.as_str(), odata.version.as_str()));
    assert_eq!(odata.data["lines"].as_array().unwrap().len(), 2);

    // Picked, not issued: DESADV carries no picking status (gap reported; idoc_out should add it).
    let odata = read_delivery(&c, "80001235").await.unwrap().unwrap();
    let idoc = shipment_from_idoc(&delivery_idoc(&pushed(&s, &mut rx, "DESADV", "80001235").await), &uoms).unwrap();
    assert_eq!((odata.data["status"].as_str(), idoc.data["status"].as_str()), (Some("picked"), Some("not_started")));
    assert_eq!(without(idoc.data, &["/status", "/status_text"]), without(odata.data, &["/status", "/status_text"]));

    // After goods issue the two paths agree again, on data and version.
    s.sim
        .put_record(
            DELIVERY_SET,
            json!({"DeliveryDocument": "80001235", "OverallGoodsMovementStatus": "C",
            "ActualGoodsMovementDate": "/Date(1710892800000)/", "ActualGoodsMovementTime": "PT09H15M30S"}),
        )
        .await
        .unwrap();
    let odata = read_delivery(&c, "80001235").await.unwrap().unwrap();
    let idoc = shipment_from_idoc(&delivery_idoc(&pushed(&s, &mut rx, "DESADV", "80001235").await), &uoms).unwrap();
    assert_eq!(idoc.data, odata.data);
    assert_eq!(idoc.dedup_key(), "shipment:80001235:shipped@1710897330000");
    assert_eq!(odata.dedup_key(), idoc.dedup_key());

    // A released purchase order: equal except what ORDERS05 lacks (supplier name, change time).
    let odata = read_purchase_order(&c, "4500000122").await.unwrap().unwrap();
    let idoc =
        purchase_order_from_idoc(&order_idoc(&pushed(&s, &mut rx, "ORDERS05", "4500000122").await), &uoms).unwrap();
    assert_eq!(odata.data["supplier"]["name"], "Tsuen Wan Packaging Co");
    assert_eq!(odata.data["as_of"], "2024-03-13T03:20:00Z");
    assert_eq!(without(idoc.data, &["/supplier/name", "/as_of"]), without(odata.data, &["/supplier/name", "/as_of"]));
}

#[tokio::test]
async fn reads_polls_and_pending_requests_against_the_simulator() {
    let s = start().await;
    let c = client(&s);
    assert_eq!(read_delivery(&c, "80009999").await.unwrap(), None);
    assert_eq!(read_purchase_order(&c, "4599999999").await.unwrap(), None);
    let po = read_purchase_order(&c, "4500000123").await.unwrap().unwrap();
    assert_eq!(po.data["amount"], json!({"amount": "1710.00", "currency": "HKD"}));
    assert_eq!(po.data["status"], "pending_approval");
    assert_eq!(c.call_count(), 3);

    let pending = pending_purchase_requests(&c).await.unwrap();
    let numbers: Vec<&str> = pending.iter().map(|r| r.entity_id.as_str()).collect();
    assert_eq!(numbers, ["10000045", "10000046"]);
    assert_eq!(pending[1].data["amount"], json!({"amount": "510.00", "currency": "HKD"}));
    assert_eq!(c.call_count(), 5, "one query for pending items, one for their requisitions");

    // Deliveries: the first poll returns both, the next (same data) none, a change one.
    let mut cursor = ChangeCursor::new(None, Duration::from_secs(300));
    let first = all_deliveries(&c, &mut cursor).await;
    assert_eq!(
        first.iter().map(|r| r.version.as_str()).collect::<Vec<_>>(),
        [format!("shipped@{GOODS_ISSUE_MS}").as_str(), "picked@0"]
    );
    assert_eq!(first[0], read_delivery(&c, "80001234").await.unwrap().unwrap(), "a poll and a read agree");
    let calls = c.call_count();
    assert!(all_deliveries(&c, &mut cursor).await.is_empty());
    assert_eq!(c.call_count(), calls + 1, "one query per poll");
    s.sim
        .put_record(DELIVERY_SET, json!({"DeliveryDocument": "80001235", "OverallGoodsMovementStatus": "C"}))
        .await
        .unwrap();
    let changed = all_deliveries(&c, &mut cursor).await;
    assert_eq!(changed.len(), 1);
    assert_eq!((changed[0].entity_id.as_str(), changed[0].data["status"].as_str()), ("80001235", Some("shipped")));

    let mut po_cursor = ChangeCursor::new(None, Duration::from_secs(300));
    let orders = poll_purchase_orders_canonical(&c, &mut po_cursor).await.unwrap().0;
    assert_eq!(orders.len(), 3);
    assert_eq!(orders.iter().find(|o| o.entity_id == "4500000123").unwrap().data, po.data);
    assert!(poll_purchase_orders_canonical(&c, &mut po_cursor).await.unwrap().0.is_empty());
}

/// Every page of one delivery poll.
async fn all_deliveries(c: &SapClient, cursor: &mut ChangeCursor) -> Vec<ErpRecord> {
    let mut all = Vec::new();
    loop {
        let (page, more) = poll_deliveries(c, cursor).await.unwrap();
        assert!(page.len() <= crate::sap::canonical::POLL_PAGE_SIZE as usize);
        all.extend(page);
        if !more {
            return all;
        }
    }
}

/// API cost of reconciliation: 1,000 changed deliveries found by one OData poll, page by page.
#[tokio::test]
async fn a_thousand_changed_deliveries_cost_one_call_per_server_page() {
    let s = start().await;
    let c = client(&s);
    let mut cursor = ChangeCursor::new(None, Duration::from_secs(300));
    all_deliveries(&c, &mut cursor).await;
    for i in 0..1000u32 {
        let row = json!({"DeliveryDocument": format!("81{i:06}"), "SoldToParty": "20000077", "OverallPickingStatus": "C",
            "OverallGoodsMovementStatus": "C", "ActualGoodsMovementDate": "/Date(1710806400000)/", "ActualGoodsMovementTime": "PT15H40M00S"});
        s.sim.put_record(DELIVERY_SET, row).await.unwrap();
    }
    let before = c.call_count();
    let found = all_deliveries(&c, &mut cursor).await;
    let calls = c.call_count() - before;
    assert_eq!(found.len(), 1000);
    eprintln!(
        "SAP: {calls} API calls to poll 1,000 changed deliveries (items expanded, server page size {}), 0 reads",
        seed::DEFAULT_PAGE_SIZE
    );
    assert_eq!(
        calls as usize,
        1000_usize.div_ceil(seed::DEFAULT_PAGE_SIZE) + 1,
        "one call per server page (+ the last, short one): the poll's pages of 200 add none"
    );
}

/// R27 on SAP: 1,000 outbound deliveries changed three times each while the poll runs; their
/// `LastChangeDate` is a date, so all tie and only the key orders them; pages of 200, every third
/// page lost before its commit: every delivery's last version arrives, none twice.
#[tokio::test]
async fn r27_polls_see_every_change_once_while_records_change() {
    use crate::reader::ErpReader;
    let s = start().await;
    let reader = Arc::new(crate::sap::reader::SapReader { client: Arc::new(client(&s)) });
    let poll = |cursor: Option<String>| {
        let reader = reader.clone();
        async move { reader.poll(DELIVERY_SET, cursor.as_deref(), jiff::Timestamp::now()).await }
    };
    let start = poll(None).await.unwrap().cursor;
    let sim = s.sim.clone();
    let writer = tokio::spawn(async move {
        for k in 0..3000u64 {
            let (round, n) = (k / 1000, k % 1000);
            let i = (n * 7919 + round * 13) % 1000;
            let (picking, movement) = [("A", "A"), ("C", "A"), ("C", "C")][round as usize];
            let row = json!({"DeliveryDocument": format!("82{i:06}"), "SoldToParty": "20000077",
                "OverallPickingStatus": picking, "OverallGoodsMovementStatus": movement,
                "ActualGoodsMovementDate": "/Date(1710806400000)/", "ActualGoodsMovementTime": "PT15H40M00S"});
            sim.put_record(DELIVERY_SET, row).await.unwrap();
            if k % 700 == 699 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let outcome = crate::poll_tests::poll_while_changing(start.clone(), poll, writer, 3).await;
    let last = crate::poll_tests::last_changes(start, poll).await;
    // The seeded deliveries changed today too: count only the thousand.
    let last: std::collections::BTreeMap<String, String> =
        last.into_iter().filter(|(id, _)| id.starts_with("82")).collect();
    crate::poll_tests::check("SAP", &outcome, &last, 1000, false);
}
