//! The client against the simulator on loopback, feature by feature.

use super::account::AccountId;
use super::auth::{Authorizer, ClientCredentials, OAuth2TokenFetcher, TbaCredentials, TbaSigner};
use super::client::{NetSuiteClient, RecordType};
use super::errors::CONCURRENCY_BACKOFF;
use super::sim::{seed, NetSuiteSim, SimConfig, TEST_EC_PRIVATE_KEY_PEM};
use super::source::{poll_changes, receive, PollCursor};
use connect::http::{HttpClient, HttpSettings};
use connect::token::TokenCache;
use connect::{Clock, DeliveryError, Disposition};
use jiff::Timestamp;
use serde_json::{json, Value};
use sim::{RunningSim, Simulator};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A clock tests move by hand; shared by the simulator and the TBA signer.
#[derive(Debug)]
struct ManualClock(AtomicI64);

impl ManualClock {
    fn at(text: &str) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(text.parse::<Timestamp>().unwrap().as_millisecond())))
    }

    fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

struct Rig {
    sim: Arc<NetSuiteSim>,
    server: RunningSim,
    clock: Arc<ManualClock>,
}

async fn rig(config: SimConfig) -> Rig {
    let clock = ManualClock::at("2024-03-15T03:00:00Z");
    let sim = Arc::new(NetSuiteSim::new(config, clock.clone()));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    Rig { sim, server, clock }
}

fn creds(token_secret: &str) -> TbaCredentials {
    TbaCredentials {
        consumer_key: seed::CONSUMER_KEY.to_owned(),
        consumer_secret: seed::CONSUMER_SECRET.to_owned().into(),
        token_id: seed::TOKEN_ID.to_owned(),
        token_secret: token_secret.to_owned().into(),
    }
}

impl Rig {
    fn base(&self) -> String {
        format!("{}/services/rest", self.server.url())
    }

    fn client_with(&self, auth: Authorizer, concurrency: usize) -> NetSuiteClient {
        let http = HttpClient::new(HttpSettings::loopback()).unwrap();
        NetSuiteClient::new(http, &self.base(), auth, concurrency, self.clock.clone()).unwrap()
    }

    fn tba(&self, concurrency: usize) -> NetSuiteClient {
        let signer =
            TbaSigner::new(AccountId::parse(seed::ACCOUNT).unwrap(), creds(seed::TOKEN_SECRET), self.clock.clone());
        self.client_with(Authorizer::Tba(signer), concurrency)
    }

    fn oauth2(&self) -> (NetSuiteClient, Arc<TokenCache>) {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(TEST_EC_PRIVATE_KEY_PEM.as_bytes()).unwrap();
        let config = ClientCredentials::new(
            &self.base(),
            seed::CLIENT_ID,
            seed::CERTIFICATE_ID,
            jsonwebtoken::Algorithm::ES256,
            key,
        )
        .unwrap();
        let http = HttpClient::new(HttpSettings::loopback()).unwrap();
        let fetcher = OAuth2TokenFetcher::new(http, config, self.clock.clone());
        let cache = Arc::new(TokenCache::new(Arc::new(fetcher), Duration::from_secs(300), self.clock.clone()));
        (self.client_with(Authorizer::OAuth2(cache.clone()), 2), cache)
    }
}

fn calls(sim: &NetSuiteSim) -> u64 {
    sim.counters.data_calls.load(Ordering::SeqCst)
}

#[tokio::test]
async fn tba_get_collapses_sublists_unless_expanded_like_the_fixtures() {
    let rig = rig(SimConfig::default()).await;
    let client = rig.tba(2);
    let collapsed = client.get_record(RecordType::PurchaseOrder, "4711", false).await.unwrap();
    let fixture = fixtures::read_json("netsuite/purchaseOrder_get_default.json");
    for field in ["tranId", "tranDate", "lastModifiedDate", "total", "exchangeRate", "memo"] {
        assert_eq!(collapsed[field], fixture[field], "{field}");
    }
    assert_eq!(collapsed["approvalStatus"], fixture["approvalStatus"]);
    assert!(collapsed["item"].get("items").is_none());
    assert!(collapsed["item"]["links"][0]["href"].as_str().unwrap().ends_with("/purchaseorder/4711/item"));

    let expanded = client.get_record(RecordType::PurchaseOrder, "4711", true).await.unwrap();
    let fixture = fixtures::read_json("netsuite/purchaseOrder_get_expanded.json");
    assert_eq!(expanded["item"]["totalResults"], 2);
    for (ours, theirs) in
        expanded["item"]["items"].as_array().unwrap().iter().zip(fixture["item"]["items"].as_array().unwrap())
    {
        for field in ["line", "quantity", "units", "rate", "amount", "expectedReceiptDate"] {
            assert_eq!(ours[field], theirs[field], "{field}");
        }
        assert_eq!(ours["item"]["id"], theirs["item"]["id"]);
    }
    assert_eq!(calls(&rig.sim), 2);
    assert_eq!(client.call_count(), 2);
}

#[tokio::test]
async fn create_takes_the_id_from_location_and_patch_merges_lines_and_guards_approval() {
    let rig = rig(SimConfig::default()).await;
    let client = rig.tba(2);
    let body = json!({
        "entity": {"id": "1335"},
        "subsidiary": {"id": "2"},
        "currency": {"id": "5"},
        "tranId": "PO000900",
        "item": {"items": [{"item": {"id": "501"}, "quantity": 100.0, "units": "1", "rate": 0.85}]}
    });
    let id = client
        .create_record(RecordType::PurchaseOrder, &body, Some("7b1e6c2a-4f0d-4a8e-9d55-0c3f1b2e9a71"))
        .await
        .unwrap();
    assert_eq!(id, (seed::FIRST_NEW_ID + 1).to_string());
    let created = client.get_record(RecordType::PurchaseOrder, &id, true).await.unwrap();
    assert_eq!(created["tranId"], "PO000900");
    assert_eq!(created["approvalStatus"]["id"], "1");
    assert_eq!(created["lastModifiedDate"], "2024-03-15T03:00:00Z");

    rig.clock.advance(Duration::from_secs(95));
    let patch = json!({"item": {"items": [{"line": 1, "quantity": 120.0}, {"item": {"id": "502"}, "quantity": 5.0}]}});
    client.update_record(RecordType::PurchaseOrder, &id, &patch, &[]).await.unwrap();
    let merged = rig.sim.record(RecordType::PurchaseOrder, &id).unwrap();
    let lines = merged["item"]["items"].as_array().unwrap();
    assert_eq!(
        (lines.len(), &lines[0]["quantity"], &lines[0]["rate"], &lines[1]["line"]),
        (2, &json!(120.0), &json!(0.85), &json!(2))
    );
    assert_eq!(merged["lastModifiedDate"], "2024-03-15T03:01:00Z", "truncated to the minute");

    let replace = json!({"item": {"items": [{"item": {"id": "502"}, "quantity": 9.0}]}});
    client.update_record(RecordType::PurchaseOrder, &id, &replace, &["item"]).await.unwrap();
    assert_eq!(rig.sim.record(RecordType::PurchaseOrder, &id).unwrap()["item"]["items"].as_array().unwrap().len(), 1);

    let approve = json!({"approvalStatus": {"id": "2"}, "memo": "Approved in DingTalk by Lee Po Yee"});
    client.update_record(RecordType::PurchaseOrder, &id, &approve, &[]).await.unwrap();
    assert_eq!(rig.sim.record(RecordType::PurchaseOrder, &id).unwrap()["approvalStatus"]["refName"], "Approved");
    let reject = json!({"approvalStatus": {"id": "3"}});
    let err = client.update_record(RecordType::PurchaseOrder, &id, &reject, &[]).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("USER_ERROR"), "{err}");
}

#[tokio::test]
async fn missing_records_are_none_and_bad_queries_name_the_parameter() {
    let rig = rig(SimConfig::default()).await;
    let client = rig.tba(2);
    assert_eq!(client.find_record(RecordType::SalesOrder, "999999", false).await.unwrap(), None);
    assert_eq!(client.find_record(RecordType::SalesOrder, "5120", false).await.unwrap().unwrap()["tranId"], "SO001204");
    let err = client.suiteql("SELECT subsidiary FROM transaction", 10).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Rejected { .. }), "{err:?}");
    assert!(err.to_string().contains("INVALID_PARAMETER") && err.to_string().contains("(at q)"), "{err}");
}

#[tokio::test]
async fn suiteql_follows_has_more_page_by_page() {
    let rig = rig(SimConfig::default()).await;
    let client = rig.tba(2);
    let q = "SELECT id, tranid, status, approvalstatus, foreigntotal, lastmodifieddate FROM transaction \
             WHERE type = 'PurchOrd'";
    let rows = client.suiteql(q, 1).await.unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["4705", "4709", "4711", "4712"]);
    assert_eq!(calls(&rig.sim), 4, "one call per page of one row");
    assert_eq!(rows[2], fixtures::read_json("netsuite/suiteql_page.json")["items"][1]);
    let page = client.suiteql_page(q, 3, 0).await.unwrap();
    assert!(page.has_more && page.count == 3 && page.total_results == Some(4));
    let all = client.suiteql(q, 1000).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(calls(&rig.sim), 6);
}

#[tokio::test]
async fn tba_failures_are_auth_errors() {
    let rig = rig(SimConfig::default()).await;
    let signer = TbaSigner::new(AccountId::parse(seed::ACCOUNT).unwrap(), creds("wrong-secret"), rig.clock.clone());
    let err = rig
        .client_with(Authorizer::Tba(signer), 1)
        .get_record(RecordType::PurchaseOrder, "4711", false)
        .await
        .unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);
    assert!(err.to_string().contains("INVALID_LOGIN"));

    // Wrong realm form (hostname spelling) is refused too.
    let sandbox =
        TbaSigner::new(AccountId::parse("1234567_SB1").unwrap(), creds(seed::TOKEN_SECRET), rig.clock.clone());
    let err = rig
        .client_with(Authorizer::Tba(sandbox), 1)
        .get_record(RecordType::PurchaseOrder, "4711", false)
        .await
        .unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);

    // A replayed nonce and a stale timestamp are refused.
    let good = TbaSigner::new(AccountId::parse(seed::ACCOUNT).unwrap(), creds(seed::TOKEN_SECRET), rig.clock.clone());
    let url = url::Url::parse(&format!("{}/record/v1/purchaseOrder/4711", rig.base())).unwrap();
    let now = rig.clock.now().as_second().to_string();
    let header = good.authorize_with("GET", &url, "nonce0000000000000001", &now);
    let http = reqwest::Client::new();
    let first = http.get(url.clone()).header("Authorization", &header).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let replay = http.get(url.clone()).header("Authorization", &header).send().await.unwrap();
    assert_eq!(replay.status(), 401);
    let stale =
        good.authorize_with("GET", &url, "nonce0000000000000002", &(rig.clock.now().as_second() - 301).to_string());
    assert_eq!(http.get(url).header("Authorization", stale).send().await.unwrap().status(), 401);
    assert_eq!(rig.sim.counters.auth_failures.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn oauth2_tokens_are_cached_and_refreshed_once_after_a_401() {
    let rig = rig(SimConfig::default()).await;
    let (client, cache) = rig.oauth2();
    for id in ["4711", "4709", "4705"] {
        client.get_record(RecordType::PurchaseOrder, id, false).await.unwrap();
    }
    assert_eq!(cache.fetch_count(), 1);
    assert_eq!(rig.sim.counters.token_calls.load(Ordering::SeqCst), 1);
    rig.sim.expire_tokens();
    let po = client.get_record(RecordType::PurchaseOrder, "4711", false).await.unwrap();
    assert_eq!(po["tranId"], "PO000812");
    assert_eq!(cache.fetch_count(), 2, "one refetch after the 401");
    assert_eq!(client.call_count(), 5, "three calls, then the rejected one and its replay");
    // After an hour minus the margin, the cache refreshes before NetSuite would refuse.
    rig.clock.advance(Duration::from_secs(3300));
    client.get_record(RecordType::PurchaseOrder, "4711", false).await.unwrap();
    assert_eq!(cache.fetch_count(), 3);
}

#[tokio::test]
async fn oauth2_with_an_unknown_certificate_is_an_auth_error() {
    let rig = rig(SimConfig::default()).await;
    let key = jsonwebtoken::EncodingKey::from_ec_pem(TEST_EC_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let config =
        ClientCredentials::new(&rig.base(), seed::CLIENT_ID, "c.other", jsonwebtoken::Algorithm::ES256, key).unwrap();
    let fetcher =
        OAuth2TokenFetcher::new(HttpClient::new(HttpSettings::loopback()).unwrap(), config, rig.clock.clone());
    let cache = Arc::new(TokenCache::new(Arc::new(fetcher), Duration::from_secs(300), rig.clock.clone()));
    let client = rig.client_with(Authorizer::OAuth2(cache), 1);
    let err = client.get_record(RecordType::PurchaseOrder, "4711", false).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth, "{err}");
    assert_eq!(calls(&rig.sim), 0);
}

#[tokio::test]
async fn the_client_semaphore_keeps_under_the_account_limit_and_429_is_throttled() {
    let config = SimConfig { concurrency_limit: 2, delay: Duration::from_millis(150), ..SimConfig::default() };
    let rig = rig(config).await;
    let polite = Arc::new(rig.tba(2));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = polite.clone();
            tokio::spawn(async move { client.get_record(RecordType::InventoryItem, "501", false).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap()["itemId"], "TG-1001");
    }
    assert_eq!(rig.sim.counters.throttled.load(Ordering::SeqCst), 0);
    assert_eq!(rig.sim.counters.peak_in_flight.load(Ordering::SeqCst), 2);

    let greedy = Arc::new(rig.tba(5));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let client = greedy.clone();
            tokio::spawn(async move { client.get_record(RecordType::InventoryItem, "502", false).await })
        })
        .collect();
    let mut throttled = 0;
    for task in tasks {
        if let Err(err) = task.await.unwrap() {
            assert_eq!(err.disposition(), Disposition::RetryAfter(CONCURRENCY_BACKOFF));
            assert!(err.to_string().contains("CONCURRENCY_LIMIT_EXCEEDED"));
            throttled += 1;
        }
    }
    assert_eq!(throttled, 3, "two fit under the account limit of 2");
    assert_eq!(rig.sim.counters.throttled.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn the_throttle_body_is_the_fixture() {
    let blocked = rig(SimConfig { concurrency_limit: 0, ..SimConfig::default() }).await;
    let resp = reqwest::get(format!("{}/record/v1/purchaseOrder/4711", blocked.base())).await.unwrap();
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, fixtures::read_json("netsuite/error_429_concurrency_limit.json"));
    let open = rig(SimConfig::default()).await;
    let resp = reqwest::get(format!("{}/record/v1/purchaseOrder/4711", open.base())).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap(), fixtures::read_json("netsuite/error_401_invalid_login.json"));
}

/// A loopback receiver for the user-event webhook.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, axum::body::Bytes)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hooks/netsuite",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/netsuite", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn changes_post_signed_user_events_to_the_webhook() {
    let rig = rig(SimConfig::default()).await;
    let (url, mut rx) = receiver().await;
    let control = reqwest::Client::new();
    let set = control
        .post(format!("{}/_sim/records/webhook", rig.server.url()))
        .json(&json!({"url": url}))
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());

    let client = rig.tba(2);
    client
        .update_record(RecordType::PurchaseOrder, "4711", &json!({"approvalStatus": {"id": "2"}}), &[])
        .await
        .unwrap();
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let event = receive(seed::WEBHOOK_SECRET.as_bytes(), &headers, &body, jiff::Timestamp::now()).unwrap();
    assert_eq!(event.record_type, Some(RecordType::PurchaseOrder));
    assert_eq!(event.record_id, "4711");
    assert_eq!(event.event_id, "1234567:purchaseorder:4711:2024-03-15T03:00:00Z:edit");
    assert_eq!(event.fields["approvalstatus"], "2");
    assert_eq!(event.fields["total"], 1710.0);
    assert!(receive(b"wrong", &headers, &body, jiff::Timestamp::now()).is_err());
    // The same signed post later than the tolerance is refused as a replay.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(6);
    let stale = receive(seed::WEBHOOK_SECRET.as_bytes(), &headers, &body, later).unwrap_err();
    assert!(matches!(stale, super::source::InboundError::Stale { .. }), "{stale:?}");
    assert_eq!(stale.status(), 401);

    // A change through the control API fires too, as a create for a new id.
    let put = control
        .post(format!("{}/_sim/records/salesOrder", rig.server.url()))
        .json(&json!({"id": "5121", "tranId": "SO001205", "total": 480.0}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let event = receive(seed::WEBHOOK_SECRET.as_bytes(), &headers, &body, jiff::Timestamp::now()).unwrap();
    assert_eq!((event.record_id.as_str(), event.fields["tranid"].as_str()), ("5121", Some("SO001205")));
    assert_eq!(event.event_type, super::source::EventType::Create);
}

#[tokio::test]
async fn the_poll_cursor_sees_every_change_once() {
    let rig = rig(SimConfig::default()).await;
    let client = rig.tba(2);
    let mut cursor =
        PollCursor::new(RecordType::PurchaseOrder, "2024-03-15T00:00:00Z".parse().unwrap(), jiff::tz::TimeZone::UTC);
    let first = poll_changes(&client, &mut cursor).await.unwrap().0;
    let ids: Vec<&str> = first.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["4711", "4712"], "both in the same minute, ordered by id");
    assert!(poll_changes(&client, &mut cursor).await.unwrap().0.is_empty(), "the overlap does not repeat them");

    rig.clock.advance(Duration::from_secs(60));
    rig.sim.put_record("purchaseOrder", json!({"id": "4709", "memo": "Split delivery"})).await.unwrap();
    rig.sim.put_record("purchaseOrder", json!({"id": "4705", "memo": "Price check"})).await.unwrap();
    let second = poll_changes(&client, &mut cursor).await.unwrap().0;
    let ids: Vec<&str> = second.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["4705", "4709"]);
    assert_eq!(second[0].last_modified.0.to_string(), "2024-03-15T03:01:00Z");
    assert_eq!(cursor.watermark().to_string(), "2024-03-15T03:01:00Z");
    // Other record types are not mixed in.
    rig.sim.put_record("salesOrder", json!({"id": "5120", "memo": "x"})).await.unwrap();
    assert!(poll_changes(&client, &mut cursor).await.unwrap().0.is_empty());
}

/// R27 on NetSuite: 1,500 purchase orders (a SuiteQL page is 1,000 rows) changed three times
/// each while the poll runs, `lastmodifieddate` to the minute (300 changes share each minute), in
/// bursts of 1,200 (more than a page between polls), every third page lost before its commit:
/// every last change arrives, none twice, each record's changes in order.
#[tokio::test]
async fn r27_polls_see_every_change_once_while_records_change() {
    use crate::reader::ErpReader;
    // The test's clock jumps minutes while a signed request is on its way.
    let rig = rig(SimConfig { max_skew: Duration::from_secs(3600), ..SimConfig::default() }).await;
    let reader =
        Arc::new(super::reader::NetSuiteReader { client: Arc::new(rig.tba(4)), zone: jiff::tz::TimeZone::UTC });
    let start = PollCursor::new(RecordType::PurchaseOrder, rig.clock.now(), jiff::tz::TimeZone::UTC);
    let start = Some(serde_json::to_string(start.state()).unwrap());
    let poll = |cursor: Option<String>| {
        let reader = reader.clone();
        async move { reader.poll("purchaseOrder", cursor.as_deref(), Timestamp::now()).await }
    };
    let (sim, clock) = (rig.sim.clone(), rig.clock.clone());
    let writer = tokio::spawn(async move {
        for k in 0..4500u64 {
            let (round, n) = (k / 1500, k % 1500);
            let i = (n * 7919 + round * 13) % 1500;
            sim.put_record("purchaseOrder", json!({"id": format!("{}", 90_000 + i), "memo": format!("round {round}")}))
                .await
                .unwrap();
            if k % 300 == 299 {
                clock.advance(Duration::from_secs(60));
            }
            if k % 1200 == 1199 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let outcome = crate::poll_tests::poll_while_changing(start.clone(), poll, writer, 3).await;
    let last = crate::poll_tests::last_changes(start, poll).await;
    crate::poll_tests::check("NetSuite", &outcome, &last, 1500, true);
}
