//! The SAP client against the simulator over loopback.

use super::auth::SapAuth;
use super::batch::{BatchPart, Change};
use super::client::{service_root, Query, SapClient, SapConfig, UpdateOutcome, PURCHASE_ORDER_SERVICE};
use super::idoc::{Idoc, IdocParser};
use super::sim::{seed, SapSim};
use super::source::{poll_purchase_orders, ChangeCursor};
use super::uom::UomTable;
use super::wire;
use connect::http::{HttpClient, HttpSettings};
use connect::{Disposition, SystemClock};
use model::{Decimal, Quantity, Uom};
use secrecy::SecretString;
use serde_json::json;
use sim::Simulator;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use url::Url;

struct Setup {
    sim: Arc<SapSim>,
    running: sim::RunningSim,
}

async fn start() -> Setup {
    let sim = Arc::new(SapSim::new());
    let running = sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    Setup { sim, running }
}

fn client_with(url: &str, password: &str) -> SapClient {
    let mut config = SapConfig::new(Url::parse(url).unwrap());
    config.sap_client = Some("100".to_owned());
    SapClient::new(
        HttpClient::new(HttpSettings { timeout: Duration::from_secs(10), ..HttpSettings::loopback() }).unwrap(),
        SapAuth::Basic { user: seed::USER.to_owned(), password: SecretString::from(password.to_owned()) },
        config,
        UomTable::default(),
        Arc::new(SystemClock),
    )
}

fn client(s: &Setup) -> SapClient {
    client_with(&s.running.url(), seed::PASSWORD)
}

#[tokio::test]
async fn reads_typed_entities_with_expanded_items() {
    let s = start().await;
    let c = client(&s);
    let po = c.purchase_order("4500000123").await.unwrap();
    assert_eq!(po.items.len(), 2);
    assert_eq!(po.items[1].quantity, Quantity::new(Decimal::new(37_500, 3), Uom::KGM));
    assert!(po.release_not_completed);
    assert_eq!(po.etag.as_deref(), Some("W/\"datetimeoffset'2024-03-15T02%3A31%3A07.0000000Z'\""));
    let stock = c.material_stock("TG-1001", "HK10").await.unwrap();
    assert_eq!(stock.len(), 2);
    assert_eq!(stock[0].quantity, Quantity::new(Decimal::from(5400), Uom::PCE));
    let d = c.outbound_delivery("80001234").await.unwrap();
    assert_eq!(d.bill_of_lading.as_deref(), Some("HKG-BL-77812"));
    let prs = c.purchase_requisition_items(&Query::default().filter("ReleaseIsNotCompleted eq true")).await.unwrap();
    assert_eq!(prs.len(), 2);
    assert_eq!(c.call_count(), 4);
    // Every request carried sap-client.
    let journal = s.running.state.requests(0, None);
    assert!(journal.iter().all(|e| e.query.as_deref().unwrap_or_default().contains("sap-client=100")));
}

#[tokio::test]
async fn server_paging_follows_next_until_absent() {
    let s = start().await;
    s.sim.put_record("page_size", json!({"value": 2})).await.unwrap();
    let c = client(&s);
    let root = service_root(PURCHASE_ORDER_SERVICE);
    let page =
        c.get_page(&root, "A_PurchaseOrder", &Query::default().inline_count().orderby("PurchaseOrder")).await.unwrap();
    assert_eq!(page.count, Some(3));
    assert_eq!(page.results.len(), 2);
    assert!(page.next.as_deref().unwrap().contains("$skiptoken=2"), "{:?}", page.next);
    let before = c.call_count();
    let all = c.purchase_orders(&Query::default().orderby("PurchaseOrder")).await.unwrap();
    let numbers: Vec<&str> = all.iter().map(|p| p.number.as_str()).collect();
    assert_eq!(numbers, ["4500000122", "4500000123", "4500000124"]);
    assert_eq!(c.call_count() - before, 2, "two pages, two requests");
    let top = c
        .get_page(&root, "A_PurchaseOrder", &Query::default().top(1).skip(1).select(&["PurchaseOrder"]))
        .await
        .unwrap();
    assert_eq!(top.results.len(), 1);
    assert!(top.next.is_none());
    assert_eq!(top.results[0]["PurchaseOrder"], "4500000123");
    assert!(top.results[0].get("Supplier").is_none(), "$select drops other fields");
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_not_followed() {
    let s = start().await;
    let c = client(&s);
    let root = service_root(PURCHASE_ORDER_SERVICE);
    let err = c
        .checked_next("https://evil.example.com/sap/opu/odata/sap/API_PURCHASEORDER_PROCESS_SRV/A_PurchaseOrder", &root)
        .unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("evil.example.com"), "{err}");
    let other_service = format!("{}/sap/opu/odata/sap/OTHER_SRV/X", s.running.url());
    assert!(c.checked_next(&other_service, &root).is_err());
    let ok = format!("{}{root}A_PurchaseOrder?$skiptoken=2", s.running.url());
    assert!(c.checked_next(&ok, &root).is_ok());
}

#[tokio::test]
async fn csrf_token_is_fetched_once_reused_and_refetched_once_after_expiry() {
    let s = start().await;
    let c = client(&s);
    let root = service_root(PURCHASE_ORDER_SERVICE);
    let path = wire::key_path("A_PurchaseOrder", &[("PurchaseOrder", "4500000123")]);
    let po = c.purchase_order("4500000123").await.unwrap();
    let changes = json!({"CorrespncInternalReference": "DT-APPR-8812"});
    let outcome = c.update(&root, &path, po.etag.as_deref().unwrap(), &changes).await.unwrap();
    let UpdateOutcome::Updated { etag: Some(new_etag) } = outcome else { panic!("{outcome:?}") };
    assert_eq!(c.csrf_fetch_count(), 1);
    assert_eq!(c.call_count(), 3, "read, fetch, patch");

    // Token reused: no second fetch.
    let outcome = c.update(&root, &path, &new_etag, &json!({"CorrespncInternalReference": "x"})).await.unwrap();
    let UpdateOutcome::Updated { etag: Some(newer) } = outcome else { panic!("{outcome:?}") };
    assert_eq!(c.csrf_fetch_count(), 1);
    assert_eq!(c.call_count(), 4);

    // Token expires server-side: 403 Required → one refetch → one replay.
    s.sim.put_record("csrf", json!({"expire": true})).await.unwrap();
    let outcome = c.update(&root, &path, &newer, &json!({"CorrespncInternalReference": "y"})).await.unwrap();
    assert!(matches!(outcome, UpdateOutcome::Updated { .. }), "{outcome:?}");
    assert_eq!(c.csrf_fetch_count(), 2);
    assert_eq!(c.call_count(), 7, "403, fetch, replay");

    let journal = s.running.state.requests(0, None);
    let patches: Vec<_> = journal.iter().filter(|e| e.method == "PATCH").collect();
    assert_eq!(patches.len(), 4);
    assert_eq!(patches[2].status, Some(403));
    for p in &patches {
        assert!(p.headers["cookie"].contains(seed::SESSION_COOKIE), "cookies travel with the token");
        assert!(p.headers.contains_key("if-match"));
    }
    assert_eq!(c.purchase_order("4500000123").await.unwrap().items.len(), 2);
}

#[tokio::test]
async fn stale_and_missing_etags() {
    let s = start().await;
    let c = client(&s);
    let root = service_root(PURCHASE_ORDER_SERVICE);
    let path = wire::key_path("A_PurchaseOrder", &[("PurchaseOrder", "4500000123")]);
    let po = c.purchase_order("4500000123").await.unwrap();
    // Somebody else changes the PO in between.
    s.sim
        .put_record("A_PurchaseOrder", json!({"PurchaseOrder": "4500000123", "PurchasingGroup": "002"}))
        .await
        .unwrap();
    let outcome =
        c.update(&root, &path, po.etag.as_deref().unwrap(), &json!({"CorrespncInternalReference": "z"})).await.unwrap();
    let UpdateOutcome::Stale { detail } = outcome else { panic!("{outcome:?}") };
    assert!(detail.contains("Precondition failed"), "{detail}");
    // `*` disables the check.
    let outcome = c.update(&root, &path, "*", &json!({"CorrespncInternalReference": "z"})).await.unwrap();
    assert!(matches!(outcome, UpdateOutcome::Updated { .. }));
    // No If-Match at all: 428, a permanent rejection.
    let url = c.url(&root, &path, &[]).unwrap();
    let answer = c
        .modify(
            http::Method::PATCH,
            &root,
            &url,
            &[],
            Some(("application/json", b"{\"PurchasingGroup\":\"003\"}".to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, 428);
    assert!(super::errors::describe(&answer.body).contains("Precondition required"));
}

#[tokio::test]
async fn workflow_decision_releases_the_purchase_order_once() {
    let s = start().await;
    let c = client(&s);
    let options = c.decision_options("LOCAL", seed::TASK_ID).await.unwrap();
    assert_eq!(options.len(), 2);
    let release = options.iter().find(|o| o.nature == "POSITIVE").unwrap();
    let task = c.decide("LOCAL", seed::TASK_ID, &release.key, "Approved in DingTalk by LEE PY").await.unwrap();
    assert_eq!(task.status, "COMPLETED");
    assert!(task.completed_on.is_some());
    assert!(!c.purchase_order("4500000123").await.unwrap().release_not_completed);
    let journal = s.running.state.requests(0, Some("/sap/opu/odata/IWPGW"));
    let decision = journal.iter().find(|e| e.method == "POST").unwrap();
    let query = decision.query.as_deref().unwrap();
    assert!(query.contains("DecisionKey=%270001%27") || query.contains("DecisionKey='0001'"), "{query}");
    // A second decision on a completed task surfaces as a permanent rejection.
    let err = c.decide("LOCAL", seed::TASK_ID, "0001", "").await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("already completed"), "{err}");
    // Reject needs a comment.
    let err = c.decide("LOCAL", "000000000001", "0002", "").await.unwrap_err();
    assert!(err.to_string().contains("comment is mandatory"), "{err}");
}

#[tokio::test]
async fn create_deep_insert_and_business_error() {
    let s = start().await;
    let c = client(&s);
    let root = service_root(PURCHASE_ORDER_SERVICE);
    let body = json!({"CompanyCode": "HK01", "PurchaseOrderType": "NB", "Supplier": "10000123", "PurchasingOrganization": "HK01",
        "PurchasingGroup": "001", "DocumentCurrency": "HKD", "to_PurchaseOrderItem": {"results": [
        {"PurchaseOrderItem": "10", "Material": "TG-1001", "Plant": "HK10", "OrderQuantity": "1200",
         "PurchaseOrderQuantityUnit": "PC", "NetPriceAmount": "0.85", "NetPriceQuantity": "1"}]}});
    let created = c.create(&root, "A_PurchaseOrder", &body).await.unwrap();
    assert_eq!(created["PurchaseOrder"], "4500000125");
    assert!(wire::etag(&created).is_some());
    let po = c.purchase_order("4500000125").await.unwrap();
    assert_eq!(po.items[0].quantity, Quantity::new(Decimal::from(1200), Uom::PCE));
    let mut zero = body.clone();
    zero["to_PurchaseOrderItem"]["results"][0]["OrderQuantity"] = json!("0");
    let err = c.create(&root, "A_PurchaseOrder", &zero).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("ME/083"), "{err}");
}

#[tokio::test]
async fn wrong_password_is_an_auth_failure() {
    let s = start().await;
    let c = client_with(&s.running.url(), "wrong");
    let err = c.purchase_order("4500000123").await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);
    assert_eq!(c.call_count(), 1, "Basic credentials are not retried");
}

#[tokio::test]
async fn unknown_entity_and_bad_filter_are_rejections() {
    let s = start().await;
    let c = client(&s);
    let err = c.outbound_delivery("99999999").await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    let err = c.purchase_orders(&Query::default().filter("NoSuchField eq 'x'")).await.unwrap_err();
    assert!(err.to_string().contains("NoSuchField"), "{err}");
}

#[tokio::test]
async fn polling_cursor_delivers_each_change_once() {
    let s = start().await;
    let c = client(&s);
    let mut cursor = ChangeCursor::new(None, Duration::from_secs(300));
    assert_eq!(poll_purchase_orders(&c, &mut cursor).await.unwrap().len(), 3);
    assert!(poll_purchase_orders(&c, &mut cursor).await.unwrap().is_empty(), "no repeats");
    s.sim
        .put_record("A_PurchaseOrder", json!({"PurchaseOrder": "4500000122", "PurchasingGroup": "003"}))
        .await
        .unwrap();
    let changed = poll_purchase_orders(&c, &mut cursor).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].purchasing_group, "003");
    let journal = s.running.state.requests(0, None);
    assert!(journal.last().unwrap().query.as_deref().unwrap().contains("LastChangeDateTime%20ge%20datetimeoffset"));
}

#[tokio::test]
async fn metadata_and_service_document_are_served() {
    let s = start().await;
    let c = client(&s);
    let root = service_root(PURCHASE_ORDER_SERVICE);
    let doc = c.get_json(&c.url(&root, "", &[]).unwrap(), "service document").await.unwrap();
    // Every set SAP's document declares (the order of the fixture exchange `csrf_fetch_exchange.http`).
    assert_eq!(
        doc["d"]["EntitySets"],
        json!([
            "A_POSubcontractingComponent",
            "A_PurchaseOrder",
            "A_PurchaseOrderItem",
            "A_PurchaseOrderItemNote",
            "A_PurchaseOrderNote",
            "A_PurchaseOrderScheduleLine",
            "A_PurOrdAccountAssignment",
            "A_PurOrdPricingElement",
            "A_ValAddedSrvcMM_2"
        ])
    );
    let url = c.url(&root, "$metadata", &[]).unwrap();
    let answer = c.send(http::Method::GET, &url, &[], None).await.unwrap();
    let xml = String::from_utf8(answer.body).unwrap();
    // SAP's own document, served as it is.
    assert_eq!(xml, fixtures::read_fixture("sap/API_PURCHASEORDER_PROCESS_SRV.metadata.xml"));
    assert!(xml.contains("<EntitySet Name=\"A_PurchaseOrder\""), "{xml}");
    assert!(xml.contains("<Property Name=\"OrderQuantity\" Type=\"Edm.Decimal\""), "{xml}");
    assert!(xml.contains("<PropertyRef Name=\"PurchaseOrderItem\"/>"));
    let mut reader = quick_xml::Reader::from_str(&xml);
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Eof => break,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn idocs_are_pushed_to_the_target_and_parse() {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    let router = axum::Router::new().route(
        "/idoc",
        axum::routing::post(move |body: String| {
            sink.lock().unwrap().push(body);
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/idoc", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let s = start().await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/_sim/records/idoc_target", s.running.url()))
        .json(&json!({"url": target}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let sent = s.sim.put_record("idoc", json!({"type": "ORDERS05", "document": "4500000123"})).await.unwrap();
    assert_eq!(sent["status"], 200);
    s.sim.put_record("idoc", json!({"type": "DESADV", "document": "80001234"})).await.unwrap();
    assert!(s.sim.put_record("idoc", json!({"type": "INVOIC", "document": "1"})).await.is_err());

    let bodies = received.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    let parser = IdocParser::new(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)), UomTable::default());
    let Idoc::Order(order) = parser.parse(&bodies[0]).unwrap().remove(0) else { panic!("not an order") };
    assert_eq!(order.document, "4500000123");
    assert_eq!(order.items[1].quantity, Quantity::new(Decimal::new(37_500, 3), Uom::KGM));
    assert_eq!(order.total.unwrap().amount, Decimal::new(171_000, 2));
    assert_eq!(order.vendor(), Some("0010000123"));
    let Idoc::Delivery(delivery) = parser.parse(&bodies[1]).unwrap().remove(0) else { panic!("not a delivery") };
    assert_eq!(delivery.delivery, "0080001234");
    assert_eq!(delivery.items[0].base_quantity, Quantity::new(Decimal::from(1200), Uom::PCE));
    assert_eq!(delivery.items[0].sales_unit, "ST");
    assert_ne!(order.control.docnum, delivery.control.docnum);
}

#[tokio::test]
async fn batch_read_and_atomic_changesets() {
    let s = start().await;
    let c = client(&s);
    let root = service_root(PURCHASE_ORDER_SERVICE);
    let item = "A_PurchaseOrderItem(PurchaseOrder='4500000123',PurchaseOrderItem='10')";
    let change = |body: serde_json::Value| Change {
        method: http::Method::PATCH,
        path: item.to_owned(),
        if_match: Some("*".to_owned()),
        body: Some(body),
    };
    let parts = vec![
        BatchPart::Read("A_PurchaseOrder('4500000123')?$select=PurchaseOrder,ReleaseIsNotCompleted".to_owned()),
        BatchPart::ChangeSet(vec![change(json!({"OrderQuantity": "1300"}))]),
    ];
    let responses = c.batch(&root, &parts).await.unwrap();
    assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 204]);
    let read: serde_json::Value = serde_json::from_str(&responses[0].body).unwrap();
    assert_eq!(read["d"]["ReleaseIsNotCompleted"], true);
    assert!(read["d"].get("Supplier").is_none());
    let po = c.purchase_order("4500000123").await.unwrap();
    assert_eq!(po.items[0].quantity.value, Decimal::from(1300));
    assert_eq!(c.csrf_fetch_count(), 1, "the outer POST needs the token");

    // A failing change rolls back the whole changeset and answers one error.
    let parts =
        vec![BatchPart::ChangeSet(vec![change(json!({"OrderQuantity": "1400"})), change(json!({"NoSuchField": "x"}))])];
    let responses = c.batch(&root, &parts).await.unwrap();
    assert_eq!(responses.len(), 1);
    assert_eq!(responses[0].status, 400);
    assert!(responses[0].body.contains("NoSuchField"));
    let po = c.purchase_order("4500000123").await.unwrap();
    assert_eq!(po.items[0].quantity.value, Decimal::from(1300), "first change rolled back");
}

/// Hands out a refused token first, then the simulator's.
struct RotatingFetcher {
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl connect::token::TokenFetcher for RotatingFetcher {
    async fn fetch(&self) -> Result<connect::token::FetchedToken, connect::DeliveryError> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let value = if n == 0 { "revoked-token" } else { seed::BEARER_TOKEN };
        Ok(connect::token::FetchedToken {
            value: SecretString::from(value.to_owned()),
            lifetime: Duration::from_secs(3600),
        })
    }
}

#[tokio::test]
async fn a_refused_bearer_token_is_refreshed_once() {
    let s = start().await;
    let fetcher = Arc::new(RotatingFetcher { calls: std::sync::atomic::AtomicUsize::new(0) });
    let cache =
        Arc::new(connect::token::TokenCache::new(fetcher.clone(), Duration::from_secs(60), Arc::new(SystemClock)));
    let c = SapClient::new(
        HttpClient::new(HttpSettings::loopback()).unwrap(),
        SapAuth::Bearer(cache.clone()),
        SapConfig::new(Url::parse(&s.running.url()).unwrap()),
        UomTable::default(),
        Arc::new(SystemClock),
    );
    let po = c.purchase_order("4500000123").await.unwrap();
    assert_eq!(po.number, "4500000123");
    assert_eq!(c.call_count(), 2, "401, then the replay with a fresh token");
    assert_eq!(cache.fetch_count(), 2);
    let journal = s.running.state.requests(0, None);
    assert_eq!(journal[1].headers["authorization"], format!("Bearer {}", seed::BEARER_TOKEN));
}
