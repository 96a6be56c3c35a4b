use super::*;
use crate::dynamics::auth::{token_cache, AadTokenFetcher, AppCredentials};
use crate::dynamics::bc::BC_CONCURRENCY;
use crate::dynamics::client::ODataTransport;
use crate::dynamics::sim::{seed, DynamicsSim};
use crate::dynamics::source::{Change, DeltaCursor};
use crate::dynamics::BC_RESOURCE;
use crate::erp::assert_error_names;
use connect::http::{HttpClient, HttpSettings};
use connect::{Clock, SystemClock};
use secrecy::SecretString;
use sim::{RunningSim, Simulator};
use std::sync::Arc;

fn page_row(index: usize) -> Value {
    fixtures::read_json("dynamics/dataverse_salesorders_page_nextlink.json")["value"][index].clone()
}

#[test]
fn the_sales_order_page_fixture_maps_to_not_started_shipments() {
    let record = shipment_from_sales_order(&page_row(0)).unwrap();
    assert_eq!((record.entity, record.object.as_str()), (SHIPMENT, "salesorder"));
    assert_eq!(record.entity_id, "3f9a1c2e-7b2d-ee11-8179-000d3a0a1c01");
    assert_eq!(record.source_time_ms, Some(1_710_469_867_000));
    assert_eq!(record.version, "not_started@1710469867000");
    assert_eq!(
        record.data,
        json!({"system": "dynamics", "number": "ORD-01001-X7Y2Z3", "order": "ORD-01001-X7Y2Z3",
               "customer": "Harbour City Retail Ltd", "status": "not_started", "status_text": "New",
               "as_of": "2024-03-15T02:31:07Z", "tracking": [], "lines": []})
    );
    let second = shipment_from_sales_order(&page_row(1)).unwrap();
    assert_eq!(
        (second.data["status"].as_str(), second.data["status_text"].as_str()),
        (Some("not_started"), Some("In Progress"))
    );
}

#[test]
fn fulfilment_states_map_per_the_documented_table() {
    let mut row = page_row(0);
    for key in [
        "statuscode@OData.Community.Display.V1.FormattedValue",
        "_customerid_value@OData.Community.Display.V1.FormattedValue",
    ] {
        row.as_object_mut().unwrap().remove(key);
    }
    let with = |state: i64, status: i64, fulfilled: Option<&str>| {
        let mut r = row.clone();
        r["statecode"] = json!(state);
        r["statuscode"] = json!(status);
        if let Some(f) = fulfilled {
            r["datefulfilled"] = json!(f);
        }
        shipment_from_sales_order(&r).unwrap()
    };
    let complete = with(3, 100001, Some("2024-03-18T00:00:00Z"));
    assert_eq!(complete.data["status"], "shipped");
    assert_eq!(complete.data["status_text"], "Complete");
    assert_eq!(complete.data["as_of"], "2024-03-18T00:00:00Z");
    assert_eq!(complete.version, "shipped@1710720000000");
    assert_eq!(complete.data["customer"], "a1b2c3d4-0000-ee11-8179-000d3a0a1c22", "GUID without annotations");
    let partial = with(3, 100002, Some("2024-03-18"));
    assert_eq!(
        (partial.data["status"].as_str(), partial.source_time_ms),
        (Some("partially_shipped"), Some(1_710_720_000_000))
    );
    assert_eq!(with(2, 4, None).data["status"], "cancelled");
    assert_eq!(with(4, 100003, None).data["status"], "not_started");
    assert_eq!(with(4, 100003, Some("2024-03-18")).data["status"], "shipped");
    assert_eq!(with(3, 100001, None).source_time_ms, Some(1_710_469_867_000), "no datefulfilled: modifiedon");
}

#[test]
fn broken_sales_orders_name_the_field() {
    let mut row = page_row(0);
    row.as_object_mut().unwrap().remove("statecode");
    assert_error_names(&shipment_from_sales_order(&row).unwrap_err(), "salesorder", "3f9a1c2e", "statecode");
    let mut row = page_row(0);
    row["modifiedon"] = json!("yesterday");
    assert_error_names(&shipment_from_sales_order(&row).unwrap_err(), "salesorder", "3f9a1c2e", "modifiedon");
    let mut row = page_row(0);
    row.as_object_mut().unwrap().remove("salesorderid");
    assert_error_names(&shipment_from_sales_order(&row).unwrap_err(), "salesorder", "?", "salesorderid");
}

#[test]
fn the_bc_purchase_order_fixtures_map_to_purchase_requests() {
    let row = fixtures::read_json("dynamics/bc_purchaseOrders_page_expand_lines.json")["value"][0].clone();
    let record = purchase_request_from_bc(&row).unwrap();
    assert_eq!((record.entity, record.entity_id.as_str()), (PURCHASE_REQUEST, "9b0e7d11-1a2d-ee11-8179-000d3a0a1c51"));
    assert_eq!(record.version, "1710469867433");
    let d = &record.data;
    assert_eq!(d["number"], "106021");
    assert_eq!((d["status"].as_str(), d["status_text"].as_str()), (Some("pending_approval"), Some("In Review")));
    assert_eq!(d["pending_approval"], true);
    assert_eq!(d["amount"], json!({"amount": "1710.00", "currency": "HKD"}));
    assert_eq!(d["as_of"], "2024-03-15T02:31:07.433Z");
    assert_eq!(d["version"], "1710469867433");
    assert_eq!(d["lines"].as_array().unwrap().len(), 1);
    assert_eq!(
        d["lines"][0],
        json!({"line": "10000", "item": "TG-1001", "description": "Stainless bolt M8x40",
               "quantity": {"value": "1200", "unit": "PCS"}, "unit_price": {"amount": "0.85", "currency": "HKD"},
               "amount": {"amount": "1020.00", "currency": "HKD"}})
    );
    assert_eq!(d["approval"]["etag"], "W/\"JzE5OzgwNTQ1MTIzNTQ1NzE0NDI5MzMxOzAwOyc=\"");

    // The documentation sample: a date-only change time and no ETag.
    let single = purchase_request_from_bc(&fixtures::read_json("dynamics/bc_purchaseOrder_get.json")).unwrap();
    assert_eq!(single.data["number"], "108001");
    assert_eq!(single.data["amount"], json!({"amount": "3310.17", "currency": "USD"}));
    assert_eq!(single.data["as_of"], Value::Null);
    assert_eq!(single.data["lines"], json!([]));
    assert!(single.version.starts_with("sha256:"), "{}", single.version);
    assert_eq!(
        single.version,
        purchase_request_from_bc(&fixtures::read_json("dynamics/bc_purchaseOrder_get.json")).unwrap().version
    );

    let mut no_number = row.clone();
    no_number.as_object_mut().unwrap().remove("number");
    assert_error_names(&purchase_request_from_bc(&no_number).unwrap_err(), "purchaseOrders", "9b0e7d11", "number");
    let mut bad_currency = row;
    bad_currency["currencyCode"] = json!("hkd");
    assert_error_names(
        &purchase_request_from_bc(&bad_currency).unwrap_err(),
        "purchaseOrders",
        "9b0e7d11",
        "currencyCode",
    );
}

struct Rig {
    sim: Arc<DynamicsSim>,
    server: RunningSim,
}

fn http() -> HttpClient {
    HttpClient::new(HttpSettings::loopback()).unwrap()
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

impl Rig {
    async fn start() -> Rig {
        let sim = Arc::new(DynamicsSim::new(clock()));
        let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        Rig { sim, server }
    }

    fn transport(&self, resource: &str, concurrency: usize) -> ODataTransport {
        let creds = AppCredentials {
            tenant_id: seed::TENANT_ID.to_owned(),
            client_id: seed::CLIENT_ID.to_owned(),
            client_secret: SecretString::from(seed::CLIENT_SECRET.to_owned()),
        };
        let fetcher = AadTokenFetcher::new(http(), &self.server.url(), &creds, resource, clock()).unwrap();
        ODataTransport::new(http(), token_cache(fetcher, clock()), clock(), concurrency)
    }

    fn dataverse(&self) -> DataverseClient {
        DataverseClient::new(self.transport(&self.server.url(), 8), &self.server.url()).unwrap()
    }

    fn bc(&self) -> BcClient {
        BcClient::new(
            self.transport(BC_RESOURCE, BC_CONCURRENCY),
            &self.server.url(),
            seed::TENANT_ID,
            seed::ENVIRONMENT,
        )
        .unwrap()
    }
}

#[tokio::test]
async fn a_read_and_the_delta_poll_give_the_same_record() {
    let rig = Rig::start().await;
    let dv = rig.dataverse();
    let read = read_sales_order(&dv, seed::ORDER_HCR).await.unwrap().unwrap();
    assert_eq!(read.data["number"], "ORD-01001-X7Y2Z3");
    assert_eq!(read.data["status"], "not_started");
    assert_eq!(read.data["as_of"], "2024-03-15T02:31:07Z");

    let cursor = DeltaCursor::new("salesorders", SALES_ORDER_SELECT, "salesorderid");
    let poll = cursor.poll_all(&dv, 100).await.unwrap();
    let polled = poll
        .changes
        .iter()
        .find_map(|c| match c {
            Change::Upsert { id, row, .. } if id == seed::ORDER_HCR => Some(shipment_from_sales_order(row).unwrap()),
            _ => None,
        })
        .unwrap();
    assert_eq!(polled, read);

    // Fulfilled: the next poll and a webhook-triggered read agree on the new version.
    let fulfilled = json!({"salesorderid": seed::ORDER_HCR, "statecode": 3, "statuscode": 100001,
                           "datefulfilled": "2024-03-18T00:00:00Z", "modifiedon": "2024-03-18T01:00:00Z"});
    rig.sim.put_record("salesorders", fulfilled).await.unwrap();
    let next = poll.next.poll_all(&dv, 100).await.unwrap();
    let [Change::Upsert { row, .. }] = next.changes.as_slice() else { panic!("{:?}", next.changes) };
    let polled = shipment_from_sales_order(row).unwrap();
    let read = read_sales_order(&dv, seed::ORDER_HCR).await.unwrap().unwrap();
    assert_eq!(polled, read);
    assert_eq!(read.dedup_key(), format!("shipment:{}:shipped@1710720000000", seed::ORDER_HCR));

    let calls = dv.transport().call_count();
    assert_eq!(read_sales_order(&dv, "00000000-0000-0000-0000-000000000000").await.unwrap(), None);
    assert_eq!(dv.transport().call_count(), calls + 1);
    let err = read_sales_order(&dv, "x' or 1 eq 1").await.unwrap_err();
    assert!(matches!(err, DeliveryError::Rejected { .. }), "{err}");
    assert_eq!(dv.transport().call_count(), calls + 1, "a bad id is refused before any request");
}

#[tokio::test]
async fn only_purchase_orders_in_review_are_pending_requests() {
    let rig = Rig::start().await;
    let bc = rig.bc();
    let pending = pending_purchase_requests(&bc, seed::COMPANY_ID).await.unwrap();
    let numbers: Vec<&str> = pending.iter().map(|r| r.data["number"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["106021"]);
    assert_eq!(pending[0].data["lines"].as_array().unwrap().len(), 2);
    assert_eq!(pending[0].data["lines"][1]["amount"], json!({"amount": "690.00", "currency": "HKD"}));
    assert_eq!(bc.transport().call_count(), 1);

    rig.sim
        .put_record(
            "purchaseOrders",
            json!({"id": "9b0e7d12-1a2d-ee11-8179-000d3a0a1c52", "status": "Pending Approval"}),
        )
        .await
        .unwrap();
    let pending = pending_purchase_requests(&bc, seed::COMPANY_ID).await.unwrap();
    assert_eq!(pending.len(), 2);
    let tea = pending.iter().find(|r| r.data["number"] == "106022").unwrap();
    assert_eq!(tea.data["lines"][0]["quantity"], json!({"value": "120", "unit": "BAG"}));
}

/// API cost of reconciliation: 1,000 changed sales orders found by one change-tracking poll.
#[tokio::test]
async fn a_thousand_changed_orders_cost_one_delta_call_and_no_reads() {
    let rig = Rig::start().await;
    let dv = rig.dataverse();
    let cursor = DeltaCursor::new("salesorders", SALES_ORDER_SELECT, "salesorderid");
    let initial = cursor.poll_all(&dv, 1000).await.unwrap();
    for i in 0..1000u32 {
        let id = format!("00000000-0000-0000-0000-{i:012}");
        let row = json!({"salesorderid": id, "name": format!("Bulk {i}"), "ordernumber": format!("ORD-9{i:04}"),
            "statecode": 3, "statuscode": 100001, "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({})", seed::HKD_ID)});
        rig.sim.put_record("salesorders", row).await.unwrap();
    }
    let before = dv.transport().call_count();
    let poll = initial.next.poll_all(&dv, 1000).await.unwrap();
    let calls = dv.transport().call_count() - before;
    let records: Vec<_> = poll
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Upsert { row, .. } => Some(shipment_from_sales_order(row).unwrap()),
            Change::Removed { .. } => None,
        })
        .collect();
    assert_eq!(records.len(), 1000);
    assert!(records.iter().all(|r| r.data["status"] == "shipped"));
    eprintln!("Dynamics: {calls} API call(s) to poll 1,000 changed sales orders (page size 1,000), 0 reads");
    assert!(calls <= 2, "{calls} calls");
}

/// R27 on Dataverse: 1,500 sales orders (a delta page is 1,000 rows) created and then changed
/// twice while the change-tracking poll runs, in bursts of 1,200 (more than a page between
/// polls), every third page lost before its commit: every order's last version arrives, none
/// twice.
#[tokio::test]
async fn r27_polls_see_every_change_once_while_records_change() {
    use crate::reader::ErpReader;
    let rig = Rig::start().await;
    let clients = crate::dynamics::config::DynamicsClients {
        dataverse: Some(Arc::new(rig.dataverse())),
        bc: None,
        bc_company: None,
    };
    let reader = Arc::new(crate::dynamics::reader::DynamicsReader { clients });
    let poll = |cursor: Option<String>| {
        let reader = reader.clone();
        async move { reader.poll("salesorder", cursor.as_deref(), jiff::Timestamp::now()).await }
    };
    // The initial tracked read only says where changes start.
    let start = crate::poll_tests::last_changes(None, poll).await;
    assert!(start.is_empty());
    let mut cursor = None;
    loop {
        let polled = poll(cursor.clone()).await.unwrap();
        cursor = polled.cursor;
        if !polled.more {
            break;
        }
    }
    let sim = rig.sim.clone();
    let writer = tokio::spawn(async move {
        for k in 0..4500u64 {
            let (round, n) = (k / 1500, k % 1500);
            let i = (n * 7919 + round * 13) % 1500;
            let row = json!({"salesorderid": format!("00000000-0000-0000-0027-{i:012}"), "name": format!("R27 {i}"),
                "ordernumber": format!("ORD-27{i:04}"), "statecode": 3, "statuscode": 100001,
                "modifiedon": format!("2024-04-0{}T{:02}:{:02}:00Z", round + 1, i / 60 % 24, i % 60),
                "transactioncurrencyid@odata.bind": format!("/transactioncurrencies({})", seed::HKD_ID)});
            sim.put_record("salesorders", row).await.unwrap();
            if k % 1200 == 1199 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    });
    let outcome = crate::poll_tests::poll_while_changing(cursor.clone(), poll, writer, 3).await;
    let last = crate::poll_tests::last_changes(cursor, poll).await;
    crate::poll_tests::check("Dataverse", &outcome, &last, 1500, false);
}
