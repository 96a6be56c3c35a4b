//! The dingbridge approvals extension of the simulated Business Central company: the custom API
//! page `purchaseOrderApprovals` (publisher `dingbridge`, group `approvals`, version `v1.0`) over
//! the same Purchase Header rows as the standard `purchaseOrders`, with the bound actions
//! `Microsoft.NAV.approve` and `Microsoft.NAV.reject`.
//!
//! The entity's etag is the purchase order's (one table row in BC), so a change through either
//! API makes the other's etag stale.

use super::{seed, Answer, DynamicsSim, Resource, Row};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use sim::odata::{if_match, IfMatch};
use std::sync::Arc;

/// Path of the custom API below `/v2.0/{tenant}/{env}/api/`.
pub const APPROVALS_API: &str = "dingbridge/approvals/v1.0";

/// The BC status of a purchase order waiting for approval (the UI calls it "Pending Approval").
const IN_REVIEW: &str = "In Review";

/// The decision recorded on a purchase order by the extension.
#[derive(Debug, Clone, Default)]
pub(super) struct LastDecision {
    pub key: String,
    pub comment: String,
}

fn entity(row: &Row, decision: Option<&LastDecision>) -> Value {
    let field = |name: &str| row.data.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "@odata.etag": super::bc_etag(row.version),
        "id": field("id"),
        "number": field("number"),
        "status": field("status"),
        "lastDecisionKey": decision.map_or("", |d| d.key.as_str()),
        "lastDecisionComment": decision.map_or("", |d| d.comment.as_str()),
        "lastModifiedDateTime": field("lastModifiedDateTime"),
    })
}

impl DynamicsSim {
    pub(super) async fn approvals(
        self: Arc<Self>,
        Path((_tenant, _env, rest)): Path<(String, String, String)>,
        method: Method,
        _uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if !self.authorized(&headers, Resource::BusinessCentral) {
            return Answer::error(
                401,
                "Authentication_InvalidCredentials",
                "The server has rejected the client credentials.",
            )
            .into_response();
        }
        let Some(inner) = rest.strip_prefix(&format!("companies({})/purchaseOrderApprovals(", seed::COMPANY_ID)) else {
            return Answer::error(
                404,
                "BadRequest_NotFound",
                &format!("No HTTP resource was found that matches the request URI '{rest}'."),
            )
            .into_response();
        };
        let Some((id, action)) = inner.split_once(')') else {
            return Answer::error(400, "BadRequest_InvalidKey", "The key of purchaseOrderApprovals is malformed.")
                .into_response();
        };
        let id = id.trim_matches('\'').to_owned();
        let now = self.clock.now();
        let mut state = self.lock();
        let Some(row) = state.bc.get("purchaseOrders").and_then(|t| t.get(&id)).cloned() else {
            return Answer::error(
                404,
                "Internal_RecordNotFound",
                &format!(
                    "The purchaseOrderApprovals does not exist. Identification fields and values: Id='{id}'  \
                     CorrelationId:  {}.",
                    uuid::Uuid::new_v4()
                ),
            )
            .into_response();
        };
        let approve = match (method.as_str(), action) {
            ("GET", "") => return Answer::json(200, entity(&row, state.bc_decisions.get(&id))).into_response(),
            ("POST", "/Microsoft.NAV.approve") => true,
            ("POST", "/Microsoft.NAV.reject") => false,
            _ => {
                return Answer::error(
                    405,
                    "BadRequest_MethodNotAllowed",
                    &format!("'{method}' is not allowed on this resource."),
                )
                .into_response()
            }
        };
        let current = super::bc_etag(row.version);
        let check = if_match(&headers, Some(&current));
        if check == IfMatch::Absent {
            return Answer::error(400, "BadRequest_MissingIfMatch", "The If-Match header is required.").into_response();
        }
        if check == IfMatch::Stale {
            return Answer::error(
                412,
                "Request_EntityChanged",
                &format!("Another user has already changed the record.  CorrelationId:  {}.", uuid::Uuid::new_v4()),
            )
            .into_response();
        }
        let status = row.data.get("status").and_then(Value::as_str).unwrap_or_default().to_owned();
        if status != IN_REVIEW {
            let number = row.data.get("number").and_then(Value::as_str).unwrap_or_default();
            // What BC's approval codeunit raises, shown in the UI as a dialog.
            return Answer::error(
                400,
                "Application_DialogException",
                &format!(
                    "Status must be equal to 'Pending Approval'  in Purchase Header: Document Type=Order, \
                     No.={number}. Current value is '{status}'. CorrelationId: {}.",
                    uuid::Uuid::new_v4()
                ),
            )
            .into_response();
        }
        let args: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = |name: &str| args.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        state.version += 1;
        let version = state.version;
        let mut data = row.data;
        data.insert("status".to_owned(), json!(if approve { "Open" } else { "Draft" }));
        data.insert("lastModifiedDateTime".to_owned(), json!(now.to_string()));
        state.bc.entry("purchaseOrders".to_owned()).or_default().insert(id.clone(), Row { data, version });
        state.bc_decisions.insert(id, LastDecision { key: text("decisionKey"), comment: text("comment") });
        Answer { status: 204, headers: Vec::new(), body: None }.into_response()
    }
}
