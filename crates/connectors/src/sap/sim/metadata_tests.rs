//! The simulator answers what SAP's `$metadata` documents declare and refuses the rest the way
//! Gateway does (the gaps the pyodata conformance script found).

use super::catalog::{self, DLV, PO, PR, STOCK, TASKS};
use super::{seed, SapSim};
use crate::sap::client::{service_root, TASK_PROCESSING_ROOT};
use serde_json::Value;
use std::sync::Arc;

struct Setup {
    _sim: Arc<SapSim>,
    running: sim::RunningSim,
    http: reqwest::Client,
}

async fn start() -> Setup {
    let sim = Arc::new(SapSim::new());
    let running = sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    Setup { _sim: sim, running, http: reqwest::Client::new() }
}

fn root(service: &str) -> String {
    if service == TASKS {
        TASK_PROCESSING_ROOT.to_owned()
    } else {
        service_root(service)
    }
}

impl Setup {
    /// GET `path` below `service`'s root: (status, JSON body or the text as a JSON string).
    async fn get(&self, service: &str, path: &str) -> (u16, Value) {
        let url = format!("{}{}{path}", self.running.url().trim_end_matches('/'), root(service));
        let answer = self
            .http
            .get(url)
            .basic_auth(seed::USER, Some(seed::PASSWORD))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

fn message(body: &Value) -> &str {
    body["error"]["message"]["value"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn metadata_is_the_fixture_and_every_declared_set_answers() {
    let s = start().await;
    for service in [PO, PR, STOCK, DLV] {
        let (status, body) = s.get(service, "$metadata").await;
        assert_eq!(status, 200);
        let name = service.split(';').next().unwrap();
        assert_eq!(body, Value::String(fixtures::read_fixture(format!("sap/{name}.metadata.xml"))));
    }
    for def in catalog::sets() {
        let (status, body) = s.get(def.service, &format!("{}?$top=1&$inlinecount=allpages", def.set)).await;
        assert_eq!(status, 200, "{} {body}", def.set);
        assert!(body["d"]["results"].is_array(), "{}", def.set);
        let (status, _) = s.get(def.service, &format!("{}/$count", def.set)).await;
        assert_eq!(status, 200, "{}", def.set);
    }
}

#[tokio::test]
async fn undeclared_sets_navigations_and_missing_keys_are_gateway_404s() {
    let s = start().await;
    let fixture = fixtures::read_json("sap/error_404_resource_not_found.v2.json");
    let (status, body) = s.get(PO, "A_NoSuchSet").await;
    assert_eq!(status, 404);
    assert_eq!(message(&body), "Resource not found for the segment 'A_NoSuchSet'.");
    assert_eq!(body["error"]["code"], fixture["error"]["code"]);
    let keys = |v: &Value| v["error"]["innererror"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&body), keys(&fixture));
    let (status, body) = s.get(PO, "A_PurchaseOrder('9999999999')").await;
    assert_eq!((status, message(&body)), (404, "Resource not found for the segment 'A_PurchaseOrder'."));
    let (status, body) = s.get(PO, "A_PurchaseOrder('4500000123')/to_Nothing").await;
    assert_eq!((status, message(&body)), (404, "Resource not found for the segment 'to_Nothing'."));
    // A set of another service is not this service's.
    let (status, _) = s.get(PO, "A_PurchaseRequisitionItem").await;
    assert_eq!(status, 404);
    let (status, _) = s.get(PO, "A_PurchaseOrderItem(PurchaseOrder='4500000123')").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn undeclared_or_incapable_properties_are_refused() {
    let s = start().await;
    for query in [
        "A_PurchaseOrder?$filter=NoSuchField eq 'x'",
        "A_PurchaseOrder?$select=PurchaseOrder,NoSuchField",
        "A_PurchaseOrder?$orderby=NoSuchField desc",
        "A_PurchaseOrder('4500000123')?$select=NoSuchField",
    ] {
        let (status, body) = s.get(PO, query).await;
        assert_eq!(status, 400, "{query}");
        assert!(message(&body).starts_with("Property 'NoSuchField' is invalid"), "{body}");
    }
    // A property SAP declares sap:filterable="false".
    let (def, unfilterable) = catalog::sets()
        .iter()
        .find_map(|d| d.properties.iter().find(|p| !p.filterable && p.edm_type == "Edm.String").map(|p| (d, p)))
        .unwrap();
    let (status, body) = s.get(def.service, &format!("{}?$filter={} eq 'x'", def.set, unfilterable.name)).await;
    assert_eq!(status, 400);
    assert!(message(&body).contains("not filterable"), "{body}");
    let (status, body) = s.get(PO, "A_PurchaseOrder?$expand=to_Nothing").await;
    assert_eq!((status, message(&body)), (404, "Resource not found for the segment 'to_Nothing'."));
    let (status, _) = s.get(PO, "A_PurchaseOrder?$top=many").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn filter_grammar_and_refusals() {
    let s = start().await;
    let found = |body: &Value| -> Vec<String> {
        body["d"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["PurchaseOrder"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, body) = s
        .get(PO, "A_PurchaseOrder?$filter=not (Supplier eq '10000123') or startswith(AddressName, 'Kowloon') eq false")
        .await;
    assert_eq!((status, found(&body)), (200, vec!["4500000122".to_owned()]));
    let (_, body) =
        s.get(PO, "A_PurchaseOrder?$filter=substringof('Bay',AddressName) and PurchasingGroup eq '001'").await;
    assert_eq!(found(&body), vec!["4500000123", "4500000124"]);
    for (query, text) in [
        ("tolower(Supplier) eq 'x'", "unsupported function 'tolower'"),
        ("contains(Supplier,'1')", "unsupported function 'contains'"),
        ("Supplier in ('1')", "unsupported operator 'in'"),
        ("Supplier eq 'open", "cannot parse"),
    ] {
        let (status, body) = s.get(PO, &format!("A_PurchaseOrder?$filter={query}")).await;
        assert_eq!(status, 400, "{query}");
        assert!(message(&body).contains(text), "{body}");
    }
}

#[tokio::test]
async fn navigation_expand_count_and_properties() {
    let s = start().await;
    let (_, body) = s.get(PO, "A_PurchaseOrder('4500000123')/to_PurchaseOrderItem?$filter=Material eq 'RM-2040'").await;
    assert_eq!(body["d"]["results"].as_array().unwrap().len(), 1);
    let (_, body) = s.get(PO, "A_PurchaseOrder('4500000123')/to_PurchaseOrderItem/$count").await;
    assert_eq!(body, Value::from(2));
    let (_, body) =
        s.get(PO, "A_PurchaseOrderItem(PurchaseOrder='4500000123',PurchaseOrderItem='10')/to_PurchaseOrder").await;
    assert_eq!(body["d"]["PurchaseOrder"], "4500000123");
    let (_, body) = s
        .get(PO, "A_PurchaseOrder('4500000123')?$expand=to_PurchaseOrderItem/to_ScheduleLine,to_PurchaseOrderNote")
        .await;
    let items = body["d"]["to_PurchaseOrderItem"]["results"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["to_ScheduleLine"]["results"], Value::Array(Vec::new()));
    assert!(items[0]["to_PurchaseOrder"]["__deferred"].is_object());
    let (_, body) = s.get(PO, "A_PurchaseOrder('4500000123')/Supplier").await;
    assert_eq!(body["d"]["Supplier"], "10000123");
    // Every declared property is present, with SAP's empty value where the seed has none.
    let (_, body) = s.get(PO, "A_PurchaseOrder('4500000123')").await;
    assert_eq!(body["d"]["PurchaseOrderSubtype"], "");
    assert_eq!(body["d"]["__metadata"]["type"], "API_PURCHASEORDER_PROCESS_SRV.A_PurchaseOrderType");
}

#[tokio::test]
async fn function_imports() {
    let s = start().await;
    let (status, body) = s.get(PO, "GetPDF?PurchaseOrder='4500000123'").await;
    assert_eq!(status, 200);
    assert!(body["d"]["GetPDF"]["PurchaseOrderBinary"].is_string());
    let (status, _) = s.get(PO, "GetPDF").await;
    assert_eq!(status, 400);
    // Declared POST: a GET is not allowed.
    let (status, _) = s.get(PR, "EnableForPurchasing").await;
    assert_eq!(status, 405);
    let (status, body) = s.get(PR, "Validate?PurchaseRequisition='10000045'&PurchaseRequisitionItem='10'").await;
    assert_eq!(status, 501, "{body}");
    // A declared POST needs the CSRF token like any write; then the delivery is goods-issued once.
    let url = |path: &str| format!("{}{}{path}", s.running.url().trim_end_matches('/'), root(DLV));
    let fetch = s
        .http
        .get(url(""))
        .basic_auth(seed::USER, Some(seed::PASSWORD))
        .header("x-csrf-token", "Fetch")
        .send()
        .await
        .unwrap();
    let token = fetch.headers()["x-csrf-token"].to_str().unwrap().to_owned();
    let cookies: Vec<String> = fetch
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let post = |path: &'static str| {
        s.http
            .post(url(path))
            .basic_auth(seed::USER, Some(seed::PASSWORD))
            .header("x-csrf-token", &token)
            .header("cookie", cookies.join("; "))
            .header("accept", "application/json")
            .send()
    };
    assert_eq!(post("PostGoodsIssue?DeliveryDocument='80001235'").await.unwrap().status(), 200);
    let (_, body) = s.get(DLV, "A_OutbDeliveryHeader('80001235')").await;
    assert_eq!(body["d"]["OverallGoodsMovementStatus"], "C");
    assert!(body["d"]["ActualGoodsMovementDate"].is_string());
    assert_eq!(post("PostGoodsIssue?DeliveryDocument='80001235'").await.unwrap().status(), 400);
    let (status, body) = s.get(TASKS, "DecisionOptions?SAP__Origin='LOCAL'&InstanceID='000001129172'").await;
    assert_eq!(status, 200);
    assert_eq!(body["d"]["results"].as_array().unwrap().len(), 2);
}

/// The SAP Cloud SDK fetches its CSRF token with a HEAD on the entity it is about to change;
/// Gateway answers 200 with the token, and that token then passes a write.
#[tokio::test]
async fn a_head_fetches_the_csrf_token_a_write_then_uses() {
    let s = start().await;
    let entity = format!("{}{}A_PurchaseOrder('4500000124')", s.running.url().trim_end_matches('/'), root(PO));
    let head = s
        .http
        .head(format!("{entity}/"))
        .basic_auth(seed::USER, Some(seed::PASSWORD))
        .header("x-csrf-token", "Fetch")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let token = head.headers()["x-csrf-token"].to_str().unwrap().to_owned();
    let cookies: Vec<String> = head
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    let write = s
        .http
        .patch(&entity)
        .basic_auth(seed::USER, Some(seed::PASSWORD))
        .header("x-csrf-token", token)
        .header("cookie", cookies.join("; "))
        .header("if-match", "*")
        .json(&serde_json::json!({"PurchasingGroup": "P02"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status().as_u16(), 204);
}
