//! The REST record service answers of the simulator, called directly (no HTTP): list pages,
//! `q`, delete, transform, and the refusals for unknown fields, missing permission and unknown
//! records.

use super::{NetSuiteSim, SimConfig};
use axum::http::HeaderMap;
use axum::response::Response;
use connect::SystemClock;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

const BASE: &str = "http://sim/services/rest";

fn sim() -> NetSuiteSim {
    NetSuiteSim::new(SimConfig::default(), Arc::new(SystemClock))
}

async fn read(resp: Response) -> (u16, Option<String>, Value) {
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|l| l.to_str().ok()).map(str::to_owned);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, location, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn strict() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-netsuite-propertynamevalidation", "error".parse().unwrap());
    h
}

#[tokio::test]
async fn list_pages_carry_links_to_the_end_and_q_filters() {
    let sim = sim();
    let (status, _, page) = read(sim.list(BASE, "purchaseOrder", &query(&[("limit", "3")]))).await;
    assert_eq!(status, 200);
    assert_eq!(
        (page["count"].as_u64(), page["hasMore"].as_bool(), page["totalResults"].as_u64()),
        (Some(3), Some(true), Some(4))
    );
    let next = page["links"].as_array().unwrap().iter().find(|l| l["rel"] == "next").unwrap()["href"].clone();
    assert_eq!(next, "http://sim/services/rest/record/v1/purchaseorder?limit=3&offset=3");
    let (_, _, last) = read(sim.list(BASE, "purchaseOrder", &query(&[("limit", "3"), ("offset", "3")]))).await;
    assert_eq!(last["items"][0]["id"], "4712");
    assert!(last["links"].as_array().unwrap().iter().all(|l| l["rel"] != "next"));
    let (_, _, pending) = read(sim.list(BASE, "purchaseOrder", &query(&[("q", "approvalStatus ANY_OF [1]")]))).await;
    assert_eq!(pending["totalResults"], 2);
    let (status, _, bad) = read(sim.list(BASE, "purchaseOrder", &query(&[("q", "nope IS 1")]))).await;
    assert_eq!(status, 400);
    assert_eq!(bad["o:errorDetails"][0]["o:errorQueryParam"], "q");
    let (status, _, _) = read(sim.list(BASE, "purchaseOrder", &query(&[("limit", "1001")]))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn unknown_fields_permissions_and_missing_records_are_refused_like_netsuite() {
    let sim = sim();
    let body = json!({"memo": "x", "bogusField": 1}).to_string();
    let (status, _, err) = read(sim.create(BASE, "purchaseOrder", &strict(), body.as_bytes())).await;
    assert_eq!(status, 400);
    assert_eq!(err["o:errorDetails"][0]["o:errorPath"], "bogusField");
    let (status, _, _) = read(sim.create(BASE, "purchaseOrder", &HeaderMap::new(), body.as_bytes())).await;
    assert_eq!(status, 204, "without the header unknown fields are ignored");
    let (status, _, err) = read(sim.get(BASE, "customer", "1", &BTreeMap::new())).await;
    assert_eq!(status, 400);
    assert_eq!(err, fixtures::read_json("netsuite/error_400_user_error_permission.json"));
    let (status, _, err) = read(sim.get(BASE, "purchaseOrder", "999999", &BTreeMap::new())).await;
    assert_eq!(status, 404);
    assert_eq!(err, fixtures::read_json("netsuite/error_404_nonexistent_id.json"));
    let (status, _, _) = read(sim.delete("purchaseOrder", "4705")).await;
    assert_eq!(status, 204);
    let (status, _, _) = read(sim.delete("purchaseOrder", "4705")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_sales_order_transforms_into_a_fulfillment_of_the_picked_lines() {
    let sim = sim();
    let body = json!({"shipStatus": {"id": "C"}, "item": {"items": [{"orderLine": 2, "quantity": 5}]}}).to_string();
    let resp = sim.transform(BASE, "salesOrder", "5140", "itemFulfillment", &strict(), body.as_bytes());
    let (status, location, _) = read(resp).await;
    assert_eq!(status, 204);
    let id = location.unwrap().rsplit('/').next().unwrap().to_owned();
    let created = sim.record(crate::netsuite::client::RecordType::ItemFulfillment, &id).unwrap();
    assert_eq!(created["createdFrom"]["id"], "5140");
    assert_eq!(created["shipStatus"]["id"], "C");
    let lines = created["item"]["items"].as_array().unwrap();
    assert_eq!((lines.len(), &lines[0]["orderLine"], &lines[0]["quantity"]), (1, &json!(2), &json!(5)));
    let resp = sim.transform(BASE, "purchaseOrder", "4711", "salesOrder", &strict(), b"");
    assert_eq!(read(resp).await.0, 400);
}

#[tokio::test]
async fn tba_signs_the_url_the_client_addressed() {
    use crate::netsuite::account::AccountId;
    use crate::netsuite::auth::{TbaCredentials, TbaSigner};
    use axum::http::{Method, Uri};
    let sim = sim();
    let creds = TbaCredentials {
        consumer_key: super::seed::CONSUMER_KEY.to_owned(),
        consumer_secret: super::seed::CONSUMER_SECRET.to_owned().into(),
        token_id: super::seed::TOKEN_ID.to_owned(),
        token_secret: super::seed::TOKEN_SECRET.to_owned().into(),
    };
    let signer = TbaSigner::new(AccountId::parse(super::seed::ACCOUNT).unwrap(), creds, Arc::new(SystemClock));
    let uri: Uri = "/services/rest/record/v1/purchaseOrder/4711".parse().unwrap();
    let signed = |origin: &str| signer.authorize("GET", &url::Url::parse(&format!("{origin}{uri}")).unwrap());
    let host = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("host", value.parse().unwrap());
        headers
    };
    // Addressed directly: the simulator's own address is what was signed.
    let direct = host("127.0.0.1:4000");
    assert_eq!(sim.verify_tba(&Method::GET, &uri, &direct, &signed("http://127.0.0.1:4000")), Ok(()));
    // Mapped here by a transport adapter that keeps the account's real host.
    let mapped = host("1234567.suitetalk.api.netsuite.com");
    let real = signed("https://1234567.suitetalk.api.netsuite.com");
    assert_eq!(sim.verify_tba(&Method::GET, &uri, &mapped, &real), Ok(()));
    // A signature over another URL than the one addressed is refused, as NetSuite refuses it.
    assert!(sim.verify_tba(&Method::GET, &uri, &direct, &real).is_err());
    let other_account = signed("https://7654321.suitetalk.api.netsuite.com");
    assert!(sim.verify_tba(&Method::GET, &uri, &mapped, &other_account).is_err());
}
