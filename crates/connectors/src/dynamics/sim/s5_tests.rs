//! Simulator features of the shipment-freshness scenario: suppressed webhooks, the HttpHeader
//! webhook auth, explicit change times and the sales order / purchase order seeds.

use super::{seed, DynamicsSim};
use crate::dynamics::auth::{token_cache, AadTokenFetcher, AppCredentials};
use crate::dynamics::bc::{BcClient, BC_CONCURRENCY};
use crate::dynamics::client::{DataverseClient, IfMatch, ODataTransport, SalesOrder};
use crate::dynamics::source::{parse_webhook, AttrValue};
use crate::dynamics::BC_RESOURCE;
use connect::http::{HttpClient, HttpSettings};
use connect::token::TokenCache;
use connect::{Clock, SystemClock};
use secrecy::SecretString;
use serde_json::{json, Value};
use sim::{RunningSim, Simulator};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

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
    fn tokens(&self, resource: &str) -> Arc<TokenCache> {
        let creds = AppCredentials {
            tenant_id: seed::TENANT_ID.to_owned(),
            client_id: seed::CLIENT_ID.to_owned(),
            client_secret: SecretString::from(seed::CLIENT_SECRET.to_owned()),
        };
        token_cache(AadTokenFetcher::new(http(), &self.server.url(), &creds, resource, clock()).unwrap(), clock())
    }

    fn dataverse(&self) -> DataverseClient {
        let transport = ODataTransport::new(http(), self.tokens(&self.server.url()), clock(), 4);
        DataverseClient::new(transport, &self.server.url()).unwrap()
    }

    fn bc(&self) -> BcClient {
        let transport = ODataTransport::new(http(), self.tokens(BC_RESOURCE), clock(), BC_CONCURRENCY);
        BcClient::new(transport, &self.server.url(), seed::TENANT_ID, seed::ENVIRONMENT).unwrap()
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

fn fulfilled() -> Value {
    json!({"salesorderid": seed::ORDER_MONGKOK, "statecode": 3, "statuscode": 100001})
}

#[tokio::test]
async fn a_suppressed_webhook_posts_nothing_but_the_change_is_readable() {
    let rig = rig().await;
    let (url, mut rx) = receiver().await;
    let headers = json!({"x-dingbridge-key": "dv-shared-secret"});
    rig.sim.put_record("webhook", json!({"url": url, "headers": headers, "suppressed": true})).await.unwrap();
    rig.sim.put_record("salesorders", fulfilled()).await.unwrap();
    // Through the API too: a PATCH while suppressed is stored but not posted.
    let client = rig.dataverse();
    let body = json!({"name": "Mong Kok pop-up (shipped)"});
    client.update("salesorders", seed::ORDER_MONGKOK, &body, &IfMatch::Exists).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err(), "nothing was posted");
    assert_eq!((rig.sim.webhooks_suppressed(), rig.sim.webhooks_sent()), (2, 0));

    let row = client.get("salesorders", seed::ORDER_MONGKOK, SalesOrder::SELECT).await.unwrap();
    let order = SalesOrder::from_row(&row).unwrap();
    assert_eq!((order.state_code, order.status_code), (Some(3), Some(100_001)));
    let info = rig.sim.info();
    assert_eq!(info["webhooks_suppressed"], 2);
    assert_eq!(info["webhook_url"], url.as_str());
    assert_eq!(info["webhook_headers"], headers, "`suppressed` alone keeps url and headers");

    // Back on: each POST carries the configured header next to the Dataverse ones.
    rig.sim.put_record("webhook", json!({"suppressed": false})).await.unwrap();
    rig.sim.put_record("salesorders", json!({"salesorderid": seed::ORDER_MONGKOK, "name": "again"})).await.unwrap();
    let (got, body) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    assert_eq!(got.get("x-dingbridge-key").unwrap(), "dv-shared-secret");
    assert_eq!(got.get("x-ms-dynamics-entity-name").unwrap(), "salesorder");
    let event = parse_webhook(&body).unwrap();
    assert_eq!(event.post_images["PostImage"].attributes["statuscode"], AttrValue::OptionSet(100_001));
    assert_eq!((rig.sim.webhooks_suppressed(), rig.sim.webhooks_sent()), (2, 1));
}

#[tokio::test]
async fn webhook_control_refuses_bad_headers_and_a_new_url_replaces_them() {
    let rig = rig().await;
    for bad in [json!({"url": "http://x/", "headers": {"bad name": "v"}}), json!({"headers": ["x"]})] {
        let err = rig.sim.put_record("webhook", bad).await.unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
    }
    assert!(rig.sim.put_record("webhook", json!({"suppressed": 1})).await.is_err());
    rig.sim.put_record("webhook", json!({"url": "http://a/", "headers": {"authorization": "Key a"}})).await.unwrap();
    rig.sim.put_record("webhook", json!({"url": "http://b/"})).await.unwrap();
    assert_eq!(rig.sim.info()["webhook_headers"], json!({}));
}

#[tokio::test]
async fn an_explicit_modifiedon_is_kept_and_filtered_on() {
    let rig = rig().await;
    let stale = json!({"salesorderid": seed::ORDER_MONGKOK, "statecode": 3, "modifiedon": "2024-03-10T01:00:00Z"});
    let stored = rig.sim.put_record("salesorders", stale).await.unwrap();
    assert_eq!(stored["modifiedon"], "2024-03-10T01:00:00Z");
    let err = rig.sim.put_record("salesorders", json!({"salesorderid": seed::ORDER_HCR, "modifiedon": 5})).await;
    assert!(err.unwrap_err().to_string().contains("modifiedon"));
    let now = rig.sim.put_record("salesorders", json!({"salesorderid": seed::ORDER_HCR, "name": "x"})).await.unwrap();
    let stamped: jiff::Timestamp = now["modifiedon"].as_str().unwrap().parse().unwrap();
    assert!(jiff::Timestamp::now().duration_since(stamped).as_secs() < 60);

    let client = rig.dataverse();
    let since = model::ZonedTime::parse("t", "2024-03-15T00:00:00Z").unwrap();
    let mut numbers: Vec<String> =
        client.sales_orders_since(since, 50).await.unwrap().into_iter().filter_map(|o| o.order_number).collect();
    numbers.sort();
    assert_eq!(numbers, ["ORD-01001-X7Y2Z3", "ORD-01003-P4Q5R6"], "the back-dated order is older than the window");
}

#[tokio::test]
async fn seeds_hold_a_submitted_order_and_a_purchase_order_in_review() {
    let rig = rig().await;
    let client = rig.dataverse();
    let row = client.get("salesorders", seed::ORDER_MONGKOK, SalesOrder::SELECT).await.unwrap();
    let order = SalesOrder::from_row(&row).unwrap();
    assert_eq!(order.order_number.as_deref(), Some("ORD-01002-K8L9M0"));
    assert_eq!((order.state_code, order.status_code), (Some(1), Some(3)));
    assert_eq!(order.customer_id.as_deref(), Some(seed::MONG_KOK_ID));
    let code = client.currency_code(order.currency_id.as_deref().unwrap()).await.unwrap();
    assert_eq!(order.total(&code).unwrap().unwrap().to_string(), "HKD 8,800.50");
    let stored = rig.sim.row("salesorders", seed::ORDER_MONGKOK).unwrap();
    assert_eq!(stored["_customerid_value@OData.Community.Display.V1.FormattedValue"], "Mong Kok Gadgets Co.");
    assert_eq!(stored["statuscode@OData.Community.Display.V1.FormattedValue"], "In Progress");
    let other = rig.sim.row("salesorders", seed::ORDER_HCR).unwrap();
    assert_eq!(
        (other["statecode"].clone(), other["_customerid_value"].clone()),
        (json!(0), json!(seed::HARBOUR_CITY_ID))
    );

    let orders = rig.bc().purchase_orders(seed::COMPANY_ID, None).await.unwrap();
    let in_review = orders.iter().find(|p| p.status.as_deref() == Some("In Review")).unwrap();
    assert_eq!(in_review.id, seed::PO_106021);
    let lines: Vec<(&str, String)> = in_review
        .lines
        .iter()
        .map(|l| (l.line_object_number.as_deref().unwrap(), l.quantity.unwrap().to_string()))
        .collect();
    assert_eq!(lines, [("TG-1001", "1200".to_owned()), ("TG-1002", "3000".to_owned())]);
}
