//! Simulator features of the shipment-freshness and legacy-IDoc scenarios: IDocs pushed on change
//! with Basic auth, suppressed pushes, explicit change times and the delivery seeds.

use super::{seed, SapSim};
use crate::sap::auth::SapAuth;
use crate::sap::client::{service_root, Query, SapClient, SapConfig, OUTBOUND_DELIVERY_SERVICE};
use crate::sap::idoc::{Idoc, IdocParser};
use crate::sap::uom::UomTable;
use base64::Engine as _;
use connect::http::{HttpClient, HttpSettings};
use connect::SystemClock;
use model::{Decimal, Quantity, Uom};
use secrecy::SecretString;
use serde_json::json;
use sim::Simulator;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
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

/// dingbridge's IDoc receiver stand-in: yields (headers, body) per POST.
async fn receiver() -> (String, UnboundedReceiver<(http::HeaderMap, String)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/idoc",
        axum::routing::post(move |headers: http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/idoc", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

fn parser() -> IdocParser {
    IdocParser::new(jiff::tz::TimeZone::get("Asia/Hong_Kong").unwrap(), UomTable::default())
}

fn goods_issue(date: &str, time: &str) -> serde_json::Value {
    json!({"DeliveryDocument": "80001235", "OverallGoodsMovementStatus": "C",
        "ActualGoodsMovementDate": date, "ActualGoodsMovementTime": time})
}

#[tokio::test]
async fn on_change_a_delivery_upsert_posts_its_desadv_with_basic_auth_and_the_goods_issue_time() {
    let s = start().await;
    let (url, mut rx) = receiver().await;
    let target = json!({"url": url, "user": "SAPPORT", "password": "p0rt", "on_change": true});
    s.sim.put_record("idoc_target", target).await.unwrap();
    s.sim.put_record("A_OutbDeliveryHeader", goods_issue("/Date(1710892800000)/", "PT09H15M30S")).await.unwrap();

    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert!(headers.get("content-type").unwrap().to_str().unwrap().starts_with("text/xml"));
    let basic = base64::engine::general_purpose::STANDARD.encode("SAPPORT:p0rt");
    assert_eq!(headers.get("authorization").unwrap().to_str().unwrap(), format!("Basic {basic}"));
    assert!(body.contains(
        "<QUALF>006</QUALF><NTANF>20240320</NTANF><NTANZ>000000</NTANZ><ISDD>20240320</ISDD><ISDZ>091530</ISDZ>"
    ));
    let Idoc::Delivery(delivery) = parser().parse(&body).unwrap().remove(0) else { panic!("not a delivery") };
    assert_eq!(delivery.delivery, "0080001235");
    let issue = delivery.dates.iter().find(|d| d.qualifier == "006").unwrap();
    assert_eq!(issue.actual.as_ref().unwrap().timestamp().to_string(), "2024-03-20T01:15:30Z");
    assert_eq!(delivery.items[0].sales_unit, "ST", "DELVRY carries the internal unit of PC");
    assert_eq!(delivery.items[0].base_quantity, Quantity::new(Decimal::from(2400), Uom::PCE));
    assert_eq!(s.sim.idocs_sent(), 1);

    // A PO upsert sends ORDERS05; other sets send nothing.
    s.sim.put_record("A_PurchaseOrder", json!({"PurchaseOrder": "4500000124", "PaymentTerms": "0002"})).await.unwrap();
    let (_, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let Idoc::Order(order) = parser().parse(&body).unwrap().remove(0) else { panic!("not an order") };
    assert_eq!(order.document, "4500000124");
    s.sim
        .put_record("A_OutbDeliveryItem", json!({"DeliveryDocument": "80001235", "DeliveryDocumentItem": "10"}))
        .await
        .unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err());
    assert_eq!(s.sim.info()["idocs_sent"], 2);
}

#[tokio::test]
async fn a_delivery_not_yet_issued_carries_no_actual_date_and_issuing_stamps_one() {
    let s = start().await;
    let (url, mut rx) = receiver().await;
    s.sim.put_record("idoc_target", json!({"url": url, "on_change": true})).await.unwrap();
    s.sim
        .put_record("A_OutbDeliveryHeader", json!({"DeliveryDocument": "80001235", "BillOfLading": "B1"}))
        .await
        .unwrap();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert!(headers.get("authorization").is_none(), "no user given: no auth");
    assert!(!body.contains("<ISDD>"), "goods issue not complete: no actual date");

    let issued = s
        .sim
        .put_record("A_OutbDeliveryHeader", json!({"DeliveryDocument": "80001235", "OverallGoodsMovementStatus": "C"}))
        .await
        .unwrap();
    let hk = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)));
    let midnight = hk.date().to_zoned(jiff::tz::TimeZone::UTC).unwrap().timestamp().as_millisecond();
    assert_eq!(issued["ActualGoodsMovementDate"], format!("/Date({midnight})/"));
    assert!(issued["ActualGoodsMovementTime"].as_str().unwrap().starts_with(&hk.strftime("PT%HH").to_string()));
    let (_, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert!(body.contains(&format!("<ISDD>{}</ISDD>", hk.strftime("%Y%m%d"))), "{body}");
}

#[tokio::test]
async fn a_suppressed_target_posts_nothing_but_the_change_is_readable() {
    let s = start().await;
    let (url, mut rx) = receiver().await;
    s.sim.put_record("idoc_target", json!({"url": url, "on_change": true, "suppressed": true})).await.unwrap();
    s.sim.put_record("A_OutbDeliveryHeader", goods_issue("/Date(1710892800000)/", "PT09H15M30S")).await.unwrap();
    let sent = s.sim.put_record("idoc", json!({"type": "DESADV", "document": "80001234"})).await.unwrap();
    assert_eq!(sent["suppressed"], true);
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err(), "nothing was posted");
    assert_eq!((s.sim.idocs_suppressed(), s.sim.idocs_sent()), (2, 0));
    let delivery = client(&s).outbound_delivery("80001235").await.unwrap();
    assert_eq!(delivery.goods_movement_status, "C");
    assert_eq!(delivery.actual_goods_movement_date.unwrap().to_string(), "2024-03-20");

    // `{"suppressed": false}` alone keeps url and on_change.
    s.sim.put_record("idoc_target", json!({"suppressed": false})).await.unwrap();
    assert_eq!(s.sim.info()["idoc_on_change"], true);
    s.sim.put_record("A_OutbDeliveryHeader", json!({"DeliveryDocument": "80001235"})).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().is_some());
    assert_eq!((s.sim.idocs_suppressed(), s.sim.idocs_sent()), (2, 1));

    for bad in [json!({}), json!({"user": "only"}), json!({"suppressed": "yes"}), json!({"url": "not a url"})] {
        assert!(s.sim.put_record("idoc_target", bad.clone()).await.is_err(), "{bad}");
    }
}

#[tokio::test]
async fn an_explicit_last_change_date_is_kept_and_the_seeds_answer_the_delivery_poll() {
    let s = start().await;
    let stale = json!({"DeliveryDocument": "80001235", "LastChangeDate": "/Date(1710460800000)/"});
    let row = s.sim.put_record("A_OutbDeliveryHeader", stale).await.unwrap();
    assert_eq!(row["LastChangeDate"], "/Date(1710460800000)/");
    let bad = json!({"DeliveryDocument": "80001235", "LastChangeDate": "2024-03-15"});
    assert!(s.sim.put_record("A_OutbDeliveryHeader", bad).await.unwrap_err().to_string().contains("LastChangeDate"));
    let row = s.sim.put_record("A_OutbDeliveryHeader", json!({"DeliveryDocument": "80001234"})).await.unwrap();
    let today = jiff::Timestamp::now().as_millisecond();
    assert_eq!(row["LastChangeDate"], format!("/Date({})/", today - today.rem_euclid(86_400_000)));

    // Seeded 80001235 back-dated to 2024-03-15: a poll from 2024-03-16 sees only 80001234.
    let c = client(&s);
    let root = service_root(OUTBOUND_DELIVERY_SERVICE);
    let poll = |since: &str| {
        Query::default()
            .filter(format!("LastChangeDate ge datetime'{since}'"))
            .expand(&["to_DeliveryDocumentItem"])
            .orderby("DeliveryDocument")
    };
    let page = c.get_page(&root, "A_OutbDeliveryHeader", &poll("2024-03-16T00:00:00")).await.unwrap();
    let numbers: Vec<&str> = page.results.iter().map(|r| r["DeliveryDocument"].as_str().unwrap()).collect();
    assert_eq!(numbers, ["80001234"]);
    let page = c.get_page(&root, "A_OutbDeliveryHeader", &poll("2024-03-15T00:00:00")).await.unwrap();
    let pending = &page.results[1];
    assert_eq!(pending["DeliveryDocument"], "80001235");
    assert_eq!((&pending["OverallPickingStatus"], &pending["OverallGoodsMovementStatus"]), (&json!("C"), &json!("A")));
    assert!(pending["ActualGoodsMovementDate"].is_null());
    let items = pending["to_DeliveryDocumentItem"]["results"].as_array().unwrap();
    let lines: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|i| {
            let field = |f: &str| i[f].as_str().unwrap();
            (field("ReferenceSDDocument"), field("ActualDeliveryQuantity"), field("DeliveryQuantityUnit"))
        })
        .collect();
    assert_eq!(lines, [("12346", "2400", "PC"), ("12346", "100", "KG")]);
    let typed = c.outbound_delivery("80001235").await.unwrap();
    assert_eq!((typed.actual_goods_movement_date, typed.picking_status.as_str()), (None, "C"));
}
