//! The clients against the simulator on loopback, feature by feature.

use super::auth::{token_cache, AadTokenFetcher, AppCredentials};
use super::bc::{BcClient, BC_CONCURRENCY};
use super::client::{BatchOp, DataverseClient, IfMatch, ODataTransport, Prefer, SalesOrder, WriteError};
use super::sim::{seed, DynamicsSim, Limits};
use super::source::{parse_webhook, AttrValue, Change, DeltaCursor};
use super::BC_RESOURCE;
use connect::http::{HttpClient, HttpSettings};
use connect::token::TokenCache;
use connect::{Clock, DeliveryError, Disposition, SystemClock};
use secrecy::SecretString;
use serde_json::{json, Value};
use sim::{RunningSim, Simulator};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Rig {
    sim: Arc<DynamicsSim>,
    server: RunningSim,
}

async fn rig() -> Rig {
    let sim = Arc::new(DynamicsSim::new(Arc::new(SystemClock)));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    Rig { sim, server }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

fn http() -> HttpClient {
    HttpClient::new(HttpSettings::loopback()).unwrap()
}

impl Rig {
    fn tokens(&self, resource: &str, secret: &str) -> Arc<TokenCache> {
        let creds = AppCredentials {
            tenant_id: seed::TENANT_ID.to_owned(),
            client_id: seed::CLIENT_ID.to_owned(),
            client_secret: SecretString::from(secret.to_owned()),
        };
        token_cache(AadTokenFetcher::new(http(), &self.server.url(), &creds, resource, clock()).unwrap(), clock())
    }

    fn dataverse_with(&self, tokens: Arc<TokenCache>, concurrency: usize) -> DataverseClient {
        DataverseClient::new(ODataTransport::new(http(), tokens, clock(), concurrency), &self.server.url()).unwrap()
    }

    fn dataverse(&self) -> (DataverseClient, Arc<TokenCache>) {
        let tokens = self.tokens(&self.server.url(), seed::CLIENT_SECRET);
        (self.dataverse_with(tokens.clone(), 8), tokens)
    }

    fn bc_with(&self, tokens: Arc<TokenCache>) -> BcClient {
        let transport = ODataTransport::new(http(), tokens, clock(), BC_CONCURRENCY);
        BcClient::new(transport, &self.server.url(), seed::TENANT_ID, seed::ENVIRONMENT).unwrap()
    }

    fn bc(&self) -> (BcClient, Arc<TokenCache>) {
        let tokens = self.tokens(BC_RESOURCE, seed::CLIENT_SECRET);
        (self.bc_with(tokens.clone()), tokens)
    }

    async fn limits(&self, limits: Limits) {
        self.sim.put_record("limits", serde_json::to_value(limits).unwrap()).await.unwrap();
    }
}

#[tokio::test]
async fn one_cached_token_per_resource_and_no_cross_use() {
    let rig = rig().await;
    let (dv, dv_tokens) = rig.dataverse();
    let (bc, bc_tokens) = rig.bc();
    assert_eq!(dv.accounts(50).await.unwrap().len(), 3);
    assert_eq!(dv.products(50).await.unwrap().len(), 3);
    assert_eq!(bc.companies().await.unwrap()[0].id, seed::COMPANY_ID);
    assert_eq!(bc.items(seed::COMPANY_ID).await.unwrap().len(), 3);
    assert_eq!((dv_tokens.fetch_count(), bc_tokens.fetch_count()), (1, 1));
    // A Dataverse token is refused by Business Central, even after the one refresh.
    let wrong = rig.bc_with(dv_tokens.clone());
    let err = wrong.companies().await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);
    assert_eq!(dv_tokens.fetch_count(), 2);
    assert_eq!(wrong.transport().call_count(), 2);
}

#[tokio::test]
async fn bad_secret_is_an_auth_error_with_the_aadsts_code() {
    let rig = rig().await;
    let client = rig.dataverse_with(rig.tokens(&rig.server.url(), "wrong"), 8);
    let err = client.accounts(10).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);
    assert!(err.to_string().contains("AADSTS7000215"), "{err}");
    assert_eq!(client.transport().call_count(), 0);
}

#[tokio::test]
async fn revoked_token_is_refetched_and_the_call_replayed_once() {
    let rig = rig().await;
    let (client, tokens) = rig.dataverse();
    client.accounts(10).await.unwrap();
    rig.sim.expire_tokens();
    assert_eq!(client.opportunities(10).await.unwrap().len(), 2);
    assert_eq!(tokens.fetch_count(), 2);
    assert_eq!(client.transport().call_count(), 3);
}

#[tokio::test]
async fn paging_follows_next_links_and_resends_prefer() {
    let rig = rig().await;
    let (client, _) = rig.dataverse();
    let since = model::ZonedTime::parse("t", "2024-03-15T00:00:00Z").unwrap();
    let orders = client.sales_orders_since(since, 1).await.unwrap();
    let numbers: Vec<_> = orders.iter().map(|o| o.order_number.clone().unwrap()).collect();
    assert_eq!(numbers, ["ORD-01001-X7Y2Z3", "ORD-01002-K8L9M0", "ORD-01003-P4Q5R6"]);
    assert_eq!(client.transport().call_count(), 3);
    assert_eq!(orders[0].customer_type.as_deref(), Some("account"));
    for entry in rig.server.state.requests(0, Some("/api/data")) {
        let prefer = entry.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("prefer")).map(|(_, v)| v.as_str());
        assert_eq!(prefer, Some("odata.maxpagesize=1,odata.include-annotations=\"*\""));
        assert!(entry.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("odata-version") && v == "4.0"));
    }
    let later = model::ZonedTime::parse("t", "2024-03-15T06:03:00Z").unwrap();
    let recent = client.sales_orders_since(later, 50).await.unwrap();
    assert_eq!(recent.len(), 1);
    let code = client.currency_code(recent[0].currency_id.as_deref().unwrap()).await.unwrap();
    assert_eq!(recent[0].total(&code).unwrap().unwrap().to_string(), "HKD 3,150.00");
}

#[tokio::test]
async fn etag_update_succeeds_then_a_stale_etag_is_a_conflict() {
    let rig = rig().await;
    let (client, _) = rig.dataverse();
    let row = client.get(SalesOrder::SET, seed::ORDER_HCR, SalesOrder::SELECT).await.unwrap();
    let order = SalesOrder::from_row(&row).unwrap();
    assert_eq!(order.etag.as_deref(), Some("W/\"5561023\""));
    let stale = IfMatch::Etag(order.etag.clone().unwrap());
    let change = json!({"description": "Approved in DingTalk by Lee Po Yee"});
    client.update(SalesOrder::SET, seed::ORDER_HCR, &change, &stale).await.unwrap();
    let err = client.update(SalesOrder::SET, seed::ORDER_HCR, &change, &stale).await.unwrap_err();
    assert!(matches!(&err, WriteError::Conflict { code, .. } if code == "0x80060882"), "{err}");
    assert_eq!(DeliveryError::from(err).disposition(), Disposition::Permanent);
    let missing =
        client.update(SalesOrder::SET, "00000000-0000-0000-0000-000000000001", &change, &IfMatch::Exists).await;
    let missing = DeliveryError::from(missing.unwrap_err());
    assert!(missing.to_string().contains("0x80040217"), "{missing}");
    assert!(rig.sim.row(SalesOrder::SET, "00000000-0000-0000-0000-000000000001").is_none());
}

async fn webhook_receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<(axum::http::HeaderMap, Vec<u8>)>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hooks/dataverse",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((headers, body.to_vec()));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/dataverse", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn writes_fire_the_webhook_with_a_parseable_context() {
    let rig = rig().await;
    let (url, mut rx) = webhook_receiver().await;
    rig.sim.put_record("webhook", json!({"url": url})).await.unwrap();
    let (client, _) = rig.dataverse();
    let id = client
        .create("accounts", &json!({"name": "Causeway Bay Florist", "accountnumber": "C20000080"}))
        .await
        .unwrap();
    assert_eq!(rig.sim.row("accounts", &id).unwrap()["name"], "Causeway Bay Florist");
    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let parsed = super::source::WebhookHeaders::from_headers(&headers);
    assert_eq!(parsed.request_name.as_deref(), Some("Create"));
    let event = parse_webhook(&body).unwrap();
    assert_eq!(
        (event.entity.as_str(), event.id.as_str(), event.message_name.as_str()),
        ("account", id.as_str(), "Create")
    );

    rig.sim
        .put_record("salesorders", json!({"salesorderid": seed::ORDER_HCR, "statuscode": 3, "totalamount": 21512.0}))
        .await
        .unwrap();
    let (_, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let event = parse_webhook(&body).unwrap();
    let target = event.target.unwrap();
    assert_eq!(target.attributes["statuscode"], AttrValue::OptionSet(3));
    assert_eq!(target.attributes["totalamount"], AttrValue::Money("21512".parse().unwrap()));
    assert_eq!(event.post_images["PostImage"].attributes["ordernumber"], AttrValue::Text("ORD-01001-X7Y2Z3".into()));
    assert_eq!(rig.sim.webhooks_sent(), 2);
}

#[tokio::test]
async fn batch_is_one_request_with_an_answer_per_operation() {
    let rig = rig().await;
    let (client, _) = rig.dataverse();
    let ops = vec![
        BatchOp {
            method: http::Method::POST,
            path: "accounts".into(),
            body: Some(json!({"name": "Tai Po Hardware"})),
            if_match: None,
        },
        BatchOp {
            method: http::Method::POST,
            path: "accounts".into(),
            body: Some(json!({"name": "Yuen Long Rice"})),
            if_match: None,
        },
        BatchOp {
            method: http::Method::PATCH,
            path: format!("salesorders({})", seed::ORDER_MONGKOK),
            body: Some(json!({"name": "x"})),
            if_match: Some(IfMatch::Etag("W/\"1\"".into())),
        },
    ];
    let items = client.batch(&ops).await.unwrap();
    assert_eq!(items.iter().map(|i| i.status).collect::<Vec<_>>(), [204, 204, 412]);
    assert_eq!(items[2].error.as_ref().unwrap().code, "0x80060882");
    let id = super::client::id_from_entity_url(items[0].entity_id.as_deref().unwrap()).unwrap();
    assert_eq!(rig.sim.row("accounts", &id).unwrap()["name"], "Tai Po Hardware");
    assert_eq!(client.transport().call_count(), 1);
    assert_eq!(client.accounts(50).await.unwrap().len(), 5);
}

#[tokio::test]
async fn delta_cursor_has_no_gaps_and_no_repeats() {
    let rig = rig().await;
    let (client, _) = rig.dataverse();
    let cursor = DeltaCursor::new("salesorders", "name,totalamount,statuscode", "salesorderid");
    let first = cursor.poll_all(&client, 1).await.unwrap();
    assert!(first.initial);
    assert_eq!(first.changes.len(), 3);
    assert_eq!(client.transport().call_count(), 3);
    // A change between the initial read and the next poll comes exactly once.
    rig.sim.put_record("salesorders", json!({"salesorderid": seed::ORDER_HCR, "statuscode": 3})).await.unwrap();
    rig.sim.put_record("salesorders", json!({"salesorderid": seed::ORDER_SHEUNG_WAN, "@delete": true})).await.unwrap();
    let second = first.next.poll_all(&client, 100).await.unwrap();
    assert!(!second.initial);
    assert_eq!(second.changes.len(), 2);
    assert!(second
        .changes
        .iter()
        .any(|c| matches!(c, Change::Upsert { id, row, .. } if id == seed::ORDER_HCR && row["statuscode"] == 3)));
    assert!(second.changes.contains(&Change::Removed { id: seed::ORDER_SHEUNG_WAN.into(), reason: "deleted".into() }));
    let third = second.next.poll_all(&client, 100).await.unwrap();
    assert!(third.changes.is_empty());
    // Re-polling from the old cursor (a crash before saving) repeats rather than loses.
    assert_eq!(first.next.poll_all(&client, 100).await.unwrap().changes.len(), 2);
}

#[tokio::test]
async fn change_tracking_refuses_filter() {
    let rig = rig().await;
    let (client, _) = rig.dataverse();
    let prefer = Prefer { track_changes: true, ..Prefer::default() };
    let err = client.query("salesorders", &[("$filter", "statuscode eq 1")], &prefer).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("isn't supported when Change Tracking is enabled"), "{err}");
}

#[tokio::test]
async fn service_protection_429_carries_the_exact_retry_after() {
    let rig = rig().await;
    let (client, _) = rig.dataverse();
    rig.limits(Limits { requests: 2, retry_after_s: 37, ..Limits::default() }).await;
    client.accounts(50).await.unwrap();
    client.accounts(50).await.unwrap();
    let err = client.accounts(50).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(37)));
    assert!(err.to_string().contains("0x80072322"), "{err}");
    assert_eq!(client.transport().throttled_count(), 1);

    rig.sim.reset();
    let (client, _) = rig.dataverse();
    rig.limits(Limits { execution_ms: 10, latency_ms: 20, retry_after_s: 12, ..Limits::default() }).await;
    let err = client.accounts(50).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(12)));
    assert!(err.to_string().contains("0x80072321"), "{err}");
}

#[tokio::test]
async fn throttled_calls_wait_retry_after_then_succeed() {
    let rig = rig().await;
    let tokens = rig.tokens(&rig.server.url(), seed::CLIENT_SECRET);
    let transport = ODataTransport::new(http(), tokens, clock(), 8).with_throttle_retries(1);
    let client = DataverseClient::new(transport, &rig.server.url()).unwrap();
    rig.limits(Limits { requests: 0, retry_after_s: 1, ..Limits::default() }).await;
    let sim = rig.sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim.set_limits(Limits::default());
    });
    let started = Instant::now();
    assert_eq!(client.accounts(50).await.unwrap().len(), 3);
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(client.transport().call_count(), 2);
    assert_eq!(client.transport().throttled_count(), 1);
}

#[tokio::test]
async fn client_semaphore_bounds_concurrency_and_server_limit_is_throttling() {
    let rig = rig().await;
    rig.limits(Limits { latency_ms: 40, ..Limits::default() }).await;
    let tokens = rig.tokens(&rig.server.url(), seed::CLIENT_SECRET);
    let client = rig.dataverse_with(tokens.clone(), 2);
    let calls: Vec<_> = (0..8).map(|_| client.accounts(50)).collect();
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.unwrap().len(), 3);
    }
    assert_eq!(rig.sim.max_in_flight(), 2);

    rig.limits(Limits { latency_ms: 40, concurrency: 2, retry_after_s: 3, ..Limits::default() }).await;
    let wide = rig.dataverse_with(tokens, 8);
    let calls: Vec<_> = (0..8).map(|_| wide.accounts(50)).collect();
    let results = futures::future::join_all(calls).await;
    let throttled: Vec<&DeliveryError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!throttled.is_empty());
    for err in throttled {
        assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(3)));
        assert!(err.to_string().contains("0x80072326"), "{err}");
    }
}

#[tokio::test]
async fn business_central_purchase_orders_items_shipments_and_if_match() {
    let rig = rig().await;
    let (bc, _) = rig.bc();
    rig.limits(Limits { bc_page_size: 1, ..Limits::default() }).await;
    let orders = bc.purchase_orders(seed::COMPANY_ID, None).await.unwrap();
    assert_eq!(orders.len(), 2);
    assert_eq!(bc.transport().call_count(), 2);
    let po = orders.iter().find(|p| p.id == seed::PO_106021).unwrap();
    assert_eq!(po.lines.len(), 2);
    assert_eq!(po.total_including_tax.unwrap().to_string(), "HKD 1,710.00");
    assert_eq!(po.status.as_deref(), Some("In Review"));
    let since = model::ZonedTime::parse("t", "2024-03-16T00:00:00Z").unwrap();
    let recent = bc.purchase_orders(seed::COMPANY_ID, Some(since)).await.unwrap();
    assert_eq!(recent.iter().map(|p| p.number.clone().unwrap()).collect::<Vec<_>>(), ["106022"]);
    assert_eq!(bc.sales_shipments(seed::COMPANY_ID).await.unwrap().len(), 2);

    let etag = IfMatch::Etag(po.etag.clone().unwrap());
    bc.update_purchase_order(seed::COMPANY_ID, &po.id, &json!({"requestedReceiptDate": "2024-04-05"}), &etag)
        .await
        .unwrap();
    let again = bc.update_purchase_order(seed::COMPANY_ID, &po.id, &json!({}), &etag).await.unwrap_err();
    assert!(matches!(again, WriteError::Conflict { .. }), "{again}");
    let fresh = bc.purchase_order(seed::COMPANY_ID, &po.id).await.unwrap();
    assert_eq!(fresh.lines.len(), 2);
    assert_ne!(fresh.etag, po.etag);

    rig.limits(Limits { bc_requests: 0, retry_after_s: 9, ..Limits::default() }).await;
    let err = bc.items(seed::COMPANY_ID).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(9)));
    assert!(err.to_string().contains("Application_TooManyRequests"), "{err}");
}

#[tokio::test]
async fn sim_records_reject_unknown_entities_and_info_names_credentials() {
    let rig = rig().await;
    assert!(rig.sim.put_record("invoices", json!({})).await.is_err());
    let info: Value = rig.sim.info();
    assert_eq!(info["client_id"], seed::CLIENT_ID);
    assert_eq!(info["bc_company_id"], seed::COMPANY_ID);
}

#[tokio::test]
async fn sim_orders_by_numbers_and_text() {
    let rig = rig().await;
    let (client, _) = rig.dataverse();
    let rows = client
        .query_all(
            "salesorders",
            &[("$select", "name,totalamount"), ("$orderby", "totalamount desc")],
            &Prefer::page(2),
        )
        .await
        .unwrap();
    let totals: Vec<f64> = rows.iter().map(|r| r["totalamount"].as_f64().unwrap()).collect();
    assert_eq!(totals, [20712.0, 8800.5, 3150.0]);
    let rows =
        client.query_all("accounts", &[("$select", "name"), ("$orderby", "name asc")], &Prefer::page(1)).await.unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Harbour City Retail Ltd", "Mong Kok Gadgets Co.", "Sheung Wan Dried Seafood Ltd"]);
}

/// A receiver answering the given statuses in turn (then 204), counting the POSTs.
async fn scripted_receiver(statuses: Vec<u16>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let status = statuses.get(n).copied().unwrap_or(204);
            async move { axum::http::StatusCode::from_u16(status).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

#[tokio::test]
async fn webhook_is_retried_once_only_on_502_503_504() {
    let rig = rig().await;
    let change = json!({"salesorderid": seed::ORDER_MONGKOK, "statuscode": 4});
    let (url, hits) = scripted_receiver(vec![503]).await;
    rig.sim.put_record("webhook", json!({"url": url})).await.unwrap();
    rig.sim.put_record("salesorders", change.clone()).await.unwrap();
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(rig.sim.webhooks_sent(), 1);

    let (url, hits) = scripted_receiver(vec![500]).await;
    rig.sim.put_record("webhook", json!({"url": url})).await.unwrap();
    rig.sim.put_record("salesorders", change.clone()).await.unwrap();
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    let (url, hits) = scripted_receiver(vec![502, 504]).await;
    rig.sim.put_record("webhook", json!({"url": url})).await.unwrap();
    rig.sim.put_record("salesorders", change).await.unwrap();
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(rig.sim.webhooks_sent(), 1);
}
