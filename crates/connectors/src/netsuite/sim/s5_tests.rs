//! Simulator features of the shipment-freshness scenario: suppressed user events, explicit change
//! times, and the fulfillment / requisition seeds answering the poll queries.

use super::{seed, NetSuiteSim, SimConfig};
use crate::netsuite::account::AccountId;
use crate::netsuite::auth::{Authorizer, TbaCredentials, TbaSigner};
use crate::netsuite::client::{NetSuiteClient, RecordType};
use crate::netsuite::source::{poll_changes, receive, PollCursor};
use connect::http::{HttpClient, HttpSettings};
use connect::Clock;
use jiff::Timestamp;
use serde_json::{json, Value};
use sim::{RunningSim, Simulator};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Debug)]
struct FixedClock(Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

struct Rig {
    sim: Arc<NetSuiteSim>,
    server: RunningSim,
    clock: Arc<FixedClock>,
}

async fn rig() -> Rig {
    let clock = Arc::new(FixedClock("2024-03-15T03:30:00Z".parse().unwrap()));
    let sim = Arc::new(NetSuiteSim::new(SimConfig::default(), clock.clone()));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    Rig { sim, server, clock }
}

impl Rig {
    fn client(&self) -> NetSuiteClient {
        let creds = TbaCredentials {
            consumer_key: seed::CONSUMER_KEY.to_owned(),
            consumer_secret: seed::CONSUMER_SECRET.to_owned().into(),
            token_id: seed::TOKEN_ID.to_owned(),
            token_secret: seed::TOKEN_SECRET.to_owned().into(),
        };
        let signer = TbaSigner::new(AccountId::parse(seed::ACCOUNT).unwrap(), creds, self.clock.clone());
        let http = HttpClient::new(HttpSettings::loopback()).unwrap();
        let base = format!("{}/services/rest", self.server.url());
        NetSuiteClient::new(http, &base, Authorizer::Tba(signer), 2, self.clock.clone()).unwrap()
    }
}

/// A local listener standing in for dingbridge's intake; yields (headers, body) per POST.
async fn receiver() -> (String, UnboundedReceiver<(http::HeaderMap, Vec<u8>)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/intake",
        axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body.to_vec()));
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/intake", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn a_suppressed_webhook_skips_the_event_but_the_change_is_readable() {
    let rig = rig().await;
    let (url, mut rx) = receiver().await;
    rig.sim.put_record("webhook", json!({"url": url, "suppressed": true})).await.unwrap();
    rig.sim.put_record("itemFulfillment", json!({"id": "5141", "shipStatus": {"id": "C"}})).await.unwrap();
    assert_eq!(rig.sim.webhooks_suppressed(), 1);
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err(), "nothing was posted");

    let client = rig.client();
    let fulfillment = client.get_record(RecordType::ItemFulfillment, "5141", true).await.unwrap();
    assert_eq!(fulfillment["shipStatus"]["id"], "C");
    assert_eq!(fulfillment["lastModifiedDate"], "2024-03-15T03:30:00Z");
    let info = rig.sim.info();
    assert_eq!((info["webhook_suppressed"].clone(), info["webhooks_suppressed"].clone()), (json!(true), json!(1)));
    assert_eq!(info["webhook_url"], url.as_str(), "the url is kept while suppressed");

    // `{"suppressed": false}` alone keeps the url and events flow again, signed as before.
    rig.sim.put_record("webhook", json!({"suppressed": false})).await.unwrap();
    rig.sim.put_record("itemFulfillment", json!({"id": "5141", "memo": "loaded"})).await.unwrap();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let event = receive(seed::WEBHOOK_SECRET.as_bytes(), &headers, &body, jiff::Timestamp::now()).unwrap();
    assert_eq!((event.record_type, event.record_id.as_str()), (Some(RecordType::ItemFulfillment), "5141"));
    assert_eq!(rig.sim.webhooks_suppressed(), 1);

    assert!(rig.sim.put_record("webhook", json!({"suppressed": "yes"})).await.is_err());
    rig.sim.put_record("webhook", json!({"url": null})).await.unwrap();
    assert_eq!(rig.sim.info()["webhook_url"], Value::Null);
}

#[tokio::test]
async fn an_explicit_last_modified_date_is_kept_and_polled_as_given() {
    let rig = rig().await;
    let stale = rig
        .sim
        .put_record(
            "itemFulfillment",
            json!({"id": "5141", "shipStatus": {"id": "C", "refName": "Shipped"}, "lastModifiedDate": "2024-03-14T22:05:00Z"}),
        )
        .await
        .unwrap();
    assert_eq!(stale["lastModifiedDate"], "2024-03-14T22:05:00Z");
    let fresh = rig.sim.put_record("salesOrder", json!({"id": "5140", "memo": "rush"})).await.unwrap();
    assert_eq!(fresh["lastModifiedDate"], "2024-03-15T03:30:00Z", "no explicit time: the clock's minute");
    let err = rig.sim.put_record("salesOrder", json!({"id": "5140", "lastModifiedDate": "yesterday"})).await;
    assert!(err.unwrap_err().to_string().contains("lastModifiedDate"));

    let client = rig.client();
    let since = "2024-03-14T22:00:00Z".parse().unwrap();
    let mut cursor = PollCursor::new(RecordType::ItemFulfillment, since, jiff::tz::TimeZone::UTC);
    let rows = poll_changes(&client, &mut cursor).await.unwrap().0;
    let seen: Vec<(&str, String)> = rows.iter().map(|r| (r.id.as_str(), r.last_modified.0.to_string())).collect();
    assert_eq!(seen, [("5141", "2024-03-14T22:05:00Z".to_owned())], "seeded 5130 (08:45) is older than the window");
}

#[tokio::test]
async fn the_seeded_fulfillment_and_requisitions_answer_the_poll_queries() {
    let rig = rig().await;
    let client = rig.client();
    let since = "2024-03-14T00:00:00Z".parse().unwrap();
    let mut cursor = PollCursor::new(RecordType::ItemFulfillment, since, jiff::tz::TimeZone::UTC);
    let ids: Vec<String> = poll_changes(&client, &mut cursor).await.unwrap().0.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["5130", "5141"]);
    let mut cursor = PollCursor::new(RecordType::PurchaseRequisition, since, jiff::tz::TimeZone::UTC);
    let rows = poll_changes(&client, &mut cursor).await.unwrap().0;
    assert_eq!(rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["4691"], "4690 changed before the window");
    assert_eq!(rows[0].row["lastmodified"], "2024-03-15T03:05:00");

    let pending = client
        .suiteql("SELECT id, tranid FROM transaction WHERE type = 'PurchReq' AND approvalstatus = 1", 100)
        .await
        .unwrap();
    let pending: Vec<(&str, &str)> =
        pending.iter().map(|r| (r["id"].as_str().unwrap(), r["tranid"].as_str().unwrap())).collect();
    assert_eq!(pending, [("4690", "PR000231"), ("4691", "PR000232")]);
    let approved = client
        .suiteql("SELECT id FROM transaction WHERE type = 'PurchOrd' AND approvalstatus = '2'", 100)
        .await
        .unwrap();
    assert_eq!(approved.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), ["4705", "4709"]);
    let status = client.suiteql("SELECT id, status FROM transaction WHERE type = 'ItemShip'", 100).await.unwrap();
    assert_eq!(status[1], json!({"links": [], "id": "5141", "status": "A"}));

    let fulfillment = client.get_record(RecordType::ItemFulfillment, "5141", true).await.unwrap();
    assert_eq!(fulfillment["createdFrom"]["id"], "5140");
    assert_eq!(fulfillment["shipStatus"], json!({"id": "A", "refName": "Picked"}));
    let lines = &fulfillment["item"]["items"];
    assert_eq!((lines[0]["quantity"].clone(), lines[0]["units"].clone()), (json!(240.0), json!("1")));
    assert_eq!((lines[1]["quantity"].clone(), lines[1]["units"].clone()), (json!(50.0), json!("3")));
    assert_eq!(fulfillment["package"]["items"][0]["packageTrackingNumber"], "SF1403015566HK");
    let order = client.get_record(RecordType::SalesOrder, "5140", false).await.unwrap();
    assert_eq!(
        (order["tranId"].as_str(), order["entity"]["refName"].as_str()),
        (Some("SO-001205"), Some("HK Trading Ltd"))
    );
    let requisition = client.get_record(RecordType::PurchaseRequisition, "4691", true).await.unwrap();
    assert_eq!(requisition["requester"]["refName"], "Chan Tai Man");
    assert_eq!(requisition["item"]["totalResults"], 2);
}
