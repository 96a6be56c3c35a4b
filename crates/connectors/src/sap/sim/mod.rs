//! A stateful SAP Gateway simulator on one port (reference A10): the four A2X OData v2 services
//! and the Task Gateway service at their real paths, Basic/bearer auth, session cookies with the
//! CSRF-token protocol, `d`/`d.results` envelopes with `__metadata`, `__deferred`, `__count` and
//! `__next` server paging, `$filter`/`$select`/`$expand`/`$orderby`/`$top`/`$skip`/`$skiptoken`,
//! ETags with 412/428, `$batch` with atomic changesets, `TASKPROCESSING` decisions, a generated
//! `$metadata`, and IDoc-XML pushes.
//!
//! Control (`POST /_sim/records/{entity}`):
//!
//! | entity | what |
//! |---|---|
//! | an entity set (`A_PurchaseOrder`, …) | upserts a row by its keys and stamps its change field (`LastChangeDateTime` now, or `LastChangeDate` today's midnight UTC) unless the body gives it (staleness tests); a delivery whose `OverallGoodsMovementStatus` becomes `C` without `ActualGoodsMovementDate`/`Time` gets the current Hong Kong date/time |
//! | `idoc_target` | `{"url", "user", "password", "on_change": bool, "suppressed": bool}`: where IDocs go, as an XML-HTTP port (`Content-Type: text/xml`, HTTP Basic when `user` and `password` are given; a new `url` without them sends no auth). `on_change` is ECC output determination: an upsert of `A_OutbDeliveryHeader` POSTs its DESADV, of `A_PurchaseOrder` its ORDERS05. `{"suppressed": true}` alone keeps the rest; while suppressed (a fault) changes are made and readable but no IDoc is posted, each skipped one counts in `idocs_suppressed` |
//! | `idoc` | `{"type": "ORDERS05"\|"DESADV", "document": "…"}` POSTs one now (unless suppressed) |
//! | `csrf` | `{"expire": true}` invalidates every issued token |
//! | `page_size` | `{"value": n}` sets the server page size |
//!
//! Counters (`/_sim/info`, [`SapSim::idocs_sent`], [`SapSim::idocs_suppressed`]): IDocs answered
//! 2xx by the target, IDocs skipped while suppressed.
//!
//! Workflow (`TASKPROCESSING;mo;v=2`):
//!
//! | route | what |
//! |---|---|
//! | `GET TaskCollection[?$filter=Status eq 'READY'&$expand=TaskObjects]` | seeded READY release tasks: PO 4500000123 ([`seed::TASK_ID`]), PRs 10000045 and 10000046 ([`seed::PR_TASK_IDS`]) |
//! | `GET TaskCollection(SAP__Origin='LOCAL',InstanceID='…')/TaskObjects` | the document of the task: `ObjectID` (document number), `ObjectType` (`BUS2012` PO, `BUS2105` PR), `ObjectName` |
//! | `GET TaskCollection(…)/Comments` | `Comment` rows (`ID`, `Text`, `CreatedBy`, `CreatedAt`) written by decisions |
//! | `GET DecisionOptions?SAP__Origin&InstanceID` | `0001` Release (POSITIVE), `0002` Reject (NEGATIVE, comment mandatory) |
//! | `POST Decision?SAP__Origin&InstanceID&DecisionKey&Comments` | stores the comment, completes the task (`COMPLETED`, `CompletedOn`, `Processor` = the Basic user); POSITIVE completes the document's release (`ReleaseIsNotCompleted` false, status 05, `LastChangeDateTime` now), NEGATIVE rejects it (status 08; requisition items no longer wait for release); a task not READY answers 400 `/IWWRK/WF/002` "already completed" |
//!
//! Navigation paths (`A_PurchaseOrder('…')/to_PurchaseOrderItem`, `TaskCollection(…)/Comments`)
//! are answered one level deep, without query options.
//! Not simulated: `$expand` beyond one level, `/$count`, `$filter` functions and parentheses, XML
//! error bodies.

mod idoc_out;
mod metadata;
pub mod seed;

use crate::sap::client::{service_root, TASK_PROCESSING_ROOT};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;
use jiff::Timestamp;
use percent_encoding::{AsciiSet, CONTROLS};
use serde_json::{json, Map, Value};
use sim::odata::batch::{request_body, request_headers, BatchOperation, BatchResponse};
use sim::odata::{
    answer_batch, compare_rows, date_millis, embedded_response, if_match, key_values, next_link, BatchHandler, IfMatch,
    PageWindow, QueryOptions, ResourcePath,
};
use sim::{SimError, Simulator};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Query values in `__next` keep OData syntax (`$`, quotes, parentheses) readable, as Gateway does.
const QUERY_VALUE: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'&').add(b'+').add(b'<').add(b'>');

/// A navigation property: (name, target set, foreign-key pairs (own field, target field)).
pub(crate) type Nav = (&'static str, &'static str, &'static [(&'static str, &'static str)]);

/// One simulated entity set.
pub(crate) struct SetDef {
    pub service: &'static str,
    pub set: &'static str,
    pub type_name: &'static str,
    pub keys: &'static [&'static str],
    /// Property the weak ETag is derived from; `None`: no ETag, no If-Match needed.
    pub etag_field: Option<&'static str>,
    pub writable: bool,
    pub navs: &'static [Nav],
}

const PO: &str = "API_PURCHASEORDER_PROCESS_SRV";
const PR: &str = "API_PURCHASEREQ_PROCESS_SRV";
const STOCK: &str = "API_MATERIAL_STOCK_SRV";
const DLV: &str = "API_OUTBOUND_DELIVERY_SRV;v=0002";
const TASKS: &str = "TASKPROCESSING";

pub(crate) const SETS: &[SetDef] = &[
    SetDef {
        service: PO,
        set: "A_PurchaseOrder",
        type_name: "A_PurchaseOrderType",
        keys: &["PurchaseOrder"],
        etag_field: Some("LastChangeDateTime"),
        writable: true,
        navs: &[("to_PurchaseOrderItem", "A_PurchaseOrderItem", &[("PurchaseOrder", "PurchaseOrder")])],
    },
    SetDef {
        service: PO,
        set: "A_PurchaseOrderItem",
        type_name: "A_PurchaseOrderItemType",
        keys: &["PurchaseOrder", "PurchaseOrderItem"],
        etag_field: None,
        writable: true,
        navs: &[],
    },
    SetDef {
        service: PR,
        set: "A_PurchaseRequisitionItem",
        type_name: "A_PurchaseRequisitionItemType",
        keys: &["PurchaseRequisition", "PurchaseRequisitionItem"],
        etag_field: Some("LastChangeDateTime"),
        writable: true,
        navs: &[],
    },
    SetDef {
        service: STOCK,
        set: "A_MatlStkInAcctMod",
        type_name: "A_MatlStkInAcctModType",
        keys: &[
            "Material",
            "Plant",
            "StorageLocation",
            "Batch",
            "Supplier",
            "Customer",
            "WBSElementInternalID",
            "SDDocument",
            "SDDocumentItem",
            "InventorySpecialStockType",
            "InventoryStockType",
        ],
        etag_field: None,
        writable: false,
        navs: &[],
    },
    SetDef {
        service: DLV,
        set: "A_OutbDeliveryHeader",
        type_name: "A_OutbDeliveryHeaderType",
        keys: &["DeliveryDocument"],
        etag_field: Some("LastChangeDate"),
        writable: true,
        navs: &[("to_DeliveryDocumentItem", "A_OutbDeliveryItem", &[("DeliveryDocument", "DeliveryDocument")])],
    },
    SetDef {
        service: DLV,
        set: "A_OutbDeliveryItem",
        type_name: "A_OutbDeliveryItemType",
        keys: &["DeliveryDocument", "DeliveryDocumentItem"],
        etag_field: None,
        writable: true,
        navs: &[],
    },
    SetDef {
        service: TASKS,
        set: "TaskCollection",
        type_name: "Task",
        keys: &["SAP__Origin", "InstanceID"],
        etag_field: None,
        writable: false,
        navs: &[
            ("TaskObjects", "TaskObjectCollection", &[("SAP__Origin", "SAP__Origin"), ("InstanceID", "InstanceID")]),
            ("Comments", "CommentCollection", &[("SAP__Origin", "SAP__Origin"), ("InstanceID", "InstanceID")]),
        ],
    },
    // The documents a work item is about (`TaskCollection(…)/TaskObjects`).
    SetDef {
        service: TASKS,
        set: "TaskObjectCollection",
        type_name: "TaskObject",
        keys: &["SAP__Origin", "InstanceID", "ObjectID"],
        etag_field: None,
        writable: false,
        navs: &[],
    },
    // Comments written with decisions (`TaskCollection(…)/Comments`).
    SetDef {
        service: TASKS,
        set: "CommentCollection",
        type_name: "Comment",
        keys: &["SAP__Origin", "InstanceID", "ID"],
        etag_field: None,
        writable: false,
        navs: &[],
    },
];

fn set_def(set: &str) -> Option<&'static SetDef> {
    SETS.iter().find(|d| d.set == set)
}

#[derive(Debug)]
struct Data {
    rows: BTreeMap<&'static str, Vec<Value>>,
    /// session id → CSRF token issued to it.
    sessions: HashMap<String, Option<String>>,
    page_size: usize,
    idoc_target: Option<String>,
    /// Basic auth (user, password) for IDoc POSTs.
    idoc_auth: Option<(String, String)>,
    /// Output determination: control upserts of deliveries and POs send their IDoc.
    idoc_on_change: bool,
    /// Fault: no IDoc is posted (counted in `idocs_suppressed`).
    idoc_suppressed: bool,
    idocs_sent: u64,
    idocs_suppressed: u64,
    next_docnum: u64,
    next_po: u64,
    /// Strictly increasing change times even within one millisecond.
    last_change_ms: i64,
}

impl Data {
    fn seeded() -> Self {
        let mut rows = BTreeMap::new();
        rows.insert("A_PurchaseOrder", seed::purchase_orders());
        rows.insert("A_PurchaseOrderItem", seed::purchase_order_items());
        rows.insert("A_PurchaseRequisitionItem", seed::purchase_requisition_items());
        rows.insert("A_MatlStkInAcctMod", seed::material_stock());
        rows.insert("A_OutbDeliveryHeader", seed::outbound_deliveries());
        rows.insert("A_OutbDeliveryItem", seed::outbound_delivery_items());
        rows.insert("TaskCollection", seed::tasks());
        rows.insert("TaskObjectCollection", seed::task_objects());
        rows.insert("CommentCollection", Vec::new());
        Self {
            rows,
            sessions: HashMap::new(),
            page_size: seed::DEFAULT_PAGE_SIZE,
            idoc_target: None,
            idoc_auth: None,
            idoc_on_change: false,
            idoc_suppressed: false,
            idocs_sent: 0,
            idocs_suppressed: 0,
            next_docnum: 481_900,
            next_po: 4_500_000_125,
            last_change_ms: 0,
        }
    }

    fn change_stamp(&mut self) -> i64 {
        let now = Timestamp::now().as_millisecond();
        self.last_change_ms = now.max(self.last_change_ms + 1);
        self.last_change_ms
    }

    /// Sets the change field of a row to "now" (DateTimeOffset or date-only).
    fn touch(&mut self, def: &SetDef, row: &mut Value) {
        let ms = self.change_stamp();
        match def.etag_field {
            Some("LastChangeDate") => {
                row["LastChangeDate"] = json!(format!("/Date({})/", ms - ms.rem_euclid(86_400_000)))
            }
            Some(field) => row[field] = json!(format!("/Date({ms}+0000)/")),
            None => {}
        }
    }

    /// Where the next IDoc goes; `Ok(None)` (and counted) while suppressed.
    fn idoc_destination(&mut self) -> Result<Option<IdocDestination>, IdocError> {
        let url = self.idoc_target.clone().ok_or(IdocError::NoTarget)?;
        if self.idoc_suppressed {
            self.idocs_suppressed += 1;
            return Ok(None);
        }
        Ok(Some(IdocDestination { url, auth: self.idoc_auth.clone() }))
    }

    /// Generates one IDoc of `kind` for `document` under a new DOCNUM.
    fn build_idoc(&mut self, kind: &str, document: &str) -> Result<(u64, String), IdocError> {
        let now = Timestamp::now();
        let xml = match kind {
            "ORDERS05" | "ORDERS" => {
                let po = self.rows["A_PurchaseOrder"]
                    .iter()
                    .find(|r| r["PurchaseOrder"] == document)
                    .ok_or_else(|| IdocError::NoPurchaseOrder(document.to_owned()))?;
                let items: Vec<&Value> =
                    self.rows["A_PurchaseOrderItem"].iter().filter(|i| i["PurchaseOrder"] == document).collect();
                idoc_out::orders05(self.next_docnum + 1, po, &items, now)
            }
            "DESADV" | "DELVRY07" => {
                let d = self.rows["A_OutbDeliveryHeader"]
                    .iter()
                    .find(|r| r["DeliveryDocument"] == document)
                    .ok_or_else(|| IdocError::NoDelivery(document.to_owned()))?;
                let items: Vec<&Value> =
                    self.rows["A_OutbDeliveryItem"].iter().filter(|i| i["DeliveryDocument"] == document).collect();
                idoc_out::desadv(self.next_docnum + 1, d, &items, now)
            }
            other => return Err(IdocError::UnknownType(other.to_owned())),
        };
        self.next_docnum += 1;
        Ok((self.next_docnum, xml))
    }
}

/// Why an IDoc was not generated or sent, or the `idoc_target` control was refused.
#[derive(Debug, thiserror::Error)]
enum IdocError {
    #[error("set /_sim/records/idoc_target first")]
    NoTarget,
    #[error("no purchase order {0}")]
    NoPurchaseOrder(String),
    #[error("no outbound delivery {0}")]
    NoDelivery(String),
    #[error("type must be ORDERS05 or DESADV, not {0:?}")]
    UnknownType(String),
    #[error("POST to the IDoc target failed: {0}")]
    Post(#[source] reqwest::Error),
    #[error("\"{0}\" must be true or false")]
    NotAFlag(String),
    #[error("\"{name}\" must be a string, not {value}")]
    NotText { name: String, value: Value },
    #[error("expected {{\"url\": \"http://…\"}} and/or \"on_change\", \"suppressed\"")]
    NothingToSet,
    #[error("give both \"user\" and \"password\"")]
    HalfCredentials,
    #[error("url {url:?}: {source}")]
    BadUrl { url: String, source: url::ParseError },
}

/// Where one IDoc POST goes.
#[derive(Debug, Clone)]
struct IdocDestination {
    url: String,
    auth: Option<(String, String)>,
}

/// `/Date(ms)/` of a goods-issue date and `PTnnHnnMnnS` of its time, in Hong Kong local time
/// (the simulated system's zone, as in the IDoc control record).
fn goods_issue_now() -> (String, String) {
    let hk = Timestamp::now().to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)));
    let midnight = hk.date().to_zoned(jiff::tz::TimeZone::UTC).map_or(0, |z| z.timestamp().as_millisecond());
    (format!("/Date({midnight})/"), hk.strftime("PT%HH%MM%SS").to_string())
}

/// The weak ETag of a row, in Gateway's format: `W/"datetimeoffset'2024-03-15T02%3A31%3A07.0000000Z'"`.
fn etag_of(def: &SetDef, row: &Value) -> Option<String> {
    let field = def.etag_field?;
    let ms = date_millis(row.get(field)?.as_str()?)?;
    let ts = Timestamp::from_millisecond(ms).ok()?;
    let (kind, text) = if field == "LastChangeDate" {
        ("datetime", ts.strftime("%Y-%m-%dT%H:%M:%S").to_string())
    } else {
        ("datetimeoffset", format!("{}{:03}0000Z", ts.strftime("%Y-%m-%dT%H:%M:%S."), ts.subsec_millisecond()))
    };
    Some(format!("W/\"{kind}'{}'\"", text.replace(':', "%3A")))
}

fn key_matches(def: &SetDef, row: &Value, keys: &[(String, String)]) -> bool {
    if keys.len() == 1 && def.keys.len() == 1 {
        return row.get(def.keys[0]).and_then(Value::as_str) == Some(keys[0].1.as_str());
    }
    keys.len() == def.keys.len()
        && keys
            .iter()
            .all(|(k, v)| def.keys.contains(&k.as_str()) && row.get(k).and_then(Value::as_str) == Some(v.as_str()))
}

/// The key predicate of `def` (`'v'` or `K='v',K2='v2'`); Gateway keys are strings, so every
/// value must be quoted.
fn parse_keys(inner: &str, def: &SetDef) -> Option<Vec<(String, String)>> {
    key_values(inner)?
        .into_iter()
        .map(|k| {
            let name = match k.name {
                Some(name) => name,
                None => def.keys.first()?.to_string(),
            };
            k.quoted.then_some((name, k.value))
        })
        .collect()
}

fn odata_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": {"lang": "en", "value": message},
        "innererror": {"transactionid": "5153494D0000000000000000000000", "timestamp": "20240315090000.0000000", "errordetails": []}}});
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json; charset=utf-8")], value.to_string()).into_response()
}

fn unquote(text: &str) -> String {
    text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')).map_or_else(|| text.to_owned(), |t| t.replace("''", "'"))
}

/// The SAP Gateway simulator.
pub struct SapSim {
    data: Mutex<Data>,
    http: reqwest::Client,
}

impl std::fmt::Debug for SapSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SapSim")
    }
}

impl Default for SapSim {
    fn default() -> Self {
        Self::new()
    }
}

/// What one request resolved to after auth and session handling.
struct Ctx {
    origin: String,
    session: String,
    new_session: bool,
}

impl SapSim {
    pub fn new() -> Self {
        Self { data: Mutex::new(Data::seeded()), http: reqwest::Client::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authorized(headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        if let Some(token) = value.strip_prefix("Bearer ") {
            return token == seed::BEARER_TOKEN;
        }
        let expected = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", seed::USER, seed::PASSWORD));
        value.strip_prefix("Basic ") == Some(expected.as_str())
    }

    fn session_of(&self, headers: &HeaderMap) -> (String, bool) {
        let cookies = headers.get(axum::http::header::COOKIE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let id = cookies
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(n, _)| *n == seed::SESSION_COOKIE)
            .map(|(_, v)| v.to_owned());
        let mut data = self.lock();
        match id {
            Some(id) if data.sessions.contains_key(&id) => (id, false),
            _ => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                data.sessions.insert(id.clone(), None);
                (id, true)
            }
        }
    }

    async fn handle(self: Arc<Self>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        if !Self::authorized(&headers) {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Basic realm=\"SAP NetWeaver Application Server\"")],
                "<html><body>Logon failed</body></html>",
            )
                .into_response();
        }
        let (session, new_session) = self.session_of(&headers);
        let host = headers.get(axum::http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
        let ctx = Ctx { origin: format!("http://{host}"), session, new_session };
        let mut response = self.route(&method, &uri, &headers, &body, &ctx).await;
        if ctx.new_session {
            let cookies = [
                format!("sap-usercontext=sap-client={}; path=/", seed::SAP_CLIENT),
                format!("{}={}; path=/; HttpOnly", seed::SESSION_COOKIE, ctx.session),
            ];
            for c in cookies {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    response.headers_mut().append(axum::http::header::SET_COOKIE, v);
                }
            }
        }
        response.headers_mut().insert("dataserviceversion", HeaderValue::from_static("2.0"));
        response
    }

    async fn route(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes, ctx: &Ctx) -> Response {
        let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy().into_owned();
        let (service, root, rest) = if let Some(rest) = path.strip_prefix(TASK_PROCESSING_ROOT) {
            (TASKS, TASK_PROCESSING_ROOT.to_owned(), rest.to_owned())
        } else {
            let Some(found) = [PO, PR, STOCK, DLV].into_iter().find(|s| path.starts_with(&service_root(s))) else {
                return odata_error(
                    StatusCode::NOT_FOUND,
                    "/IWFND/MED/170",
                    &format!("No service found for namespace '', name '{path}'"),
                );
            };
            (found, service_root(found), path[service_root(found).len()..].to_owned())
        };
        // CSRF: a fetch on any safe request issues a token bound to this session.
        let fetch =
            headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("fetch"));
        let mut token_header = None;
        if (method == Method::GET || method == Method::HEAD) && fetch {
            let token = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
            self.lock().sessions.insert(ctx.session.clone(), Some(token.clone()));
            token_header = Some(token);
        }
        if method != Method::GET && method != Method::HEAD {
            let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
            let valid = !ctx.new_session
                && sent.is_some()
                && self.lock().sessions.get(&ctx.session).cloned().flatten().as_deref() == sent;
            if !valid {
                return (
                    StatusCode::FORBIDDEN,
                    [("x-csrf-token", "Required"), ("content-type", "text/plain; charset=utf-8")],
                    "CSRF token validation failed",
                )
                    .into_response();
            }
        }
        let mut response = if rest == "$batch" && method == Method::POST {
            self.batch(headers, body, ctx, service, &root).await
        } else {
            self.dispatch(method, uri, headers, body, ctx, service, &root, &rest)
        };
        if let Some(token) = token_header {
            if let Ok(v) = HeaderValue::from_str(&token) {
                response.headers_mut().insert("x-csrf-token", v);
            }
        }
        response
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
        ctx: &Ctx,
        service: &str,
        root: &str,
        rest: &str,
    ) -> Response {
        let query = QueryOptions::parse(uri.query());
        let base = format!("{}{root}", ctx.origin);
        if rest.is_empty() {
            let sets: Vec<&str> = SETS.iter().filter(|d| d.service == service).map(|d| d.set).collect();
            return json_response(StatusCode::OK, &json!({"d": {"EntitySets": sets}}));
        }
        if rest == "$metadata" {
            let data = self.lock();
            let xml = metadata::document(service, |set| data.rows.get(set).and_then(|r| r.first()).cloned());
            return ([(axum::http::header::CONTENT_TYPE, "application/xml")], xml).into_response();
        }
        if service == TASKS && rest == "DecisionOptions" {
            let p = |k: &str| query.get(k).map(unquote).unwrap_or_default();
            let results = seed::decision_options(&p("SAP__Origin"), &p("InstanceID"));
            return json_response(StatusCode::OK, &json!({"d": {"results": results}}));
        }
        if service == TASKS && rest == "Decision" && method == Method::POST {
            return self.decision(&query, &base);
        }
        let path = ResourcePath::parse(rest);
        if let (Some(key), Some(nav)) = (path.key, path.navigation) {
            if method != Method::GET {
                return odata_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "/IWBEP/CM_MGW_RT/025",
                    "Method not allowed for this resource",
                );
            }
            return self.navigation(service, path.set, key, nav, &base);
        }
        let (set, keys) = (path.set, path.key);
        let Some(def) = set_def(set).filter(|d| d.service == service) else {
            return odata_error(
                StatusCode::NOT_FOUND,
                "005056A509B11EE1B9A8FEC11C21D78E",
                &format!("Resource not found for the segment '{set}'."),
            );
        };
        let keys = match keys.map(|k| parse_keys(k, def)) {
            Some(None) => {
                return odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/004", "Malformed key predicate")
            }
            Some(Some(k)) => Some(k),
            None => None,
        };
        match (method.clone(), keys) {
            (Method::GET, None) => self.collection(def, &query, &base, uri),
            (Method::GET, Some(k)) => self.single(def, &k, &query, &base),
            (Method::POST, None) if def.set == "A_PurchaseOrder" => self.create_po(body, &base),
            (m, Some(k)) if m == Method::PATCH || m.as_str() == "MERGE" => self.update(def, &k, headers, body),
            _ => odata_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "/IWBEP/CM_MGW_RT/025",
                "Method not allowed for this resource",
            ),
        }
    }

    /// `$batch` on the OData chassis: reads answered one by one, each changeset applied
    /// all-or-nothing (see [`SapBatch`]).
    async fn batch(&self, headers: &HeaderMap, body: &Bytes, ctx: &Ctx, service: &str, root: &str) -> Response {
        let content_type =
            headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let handler = SapBatch { sim: self, ctx, service, root };
        match answer_batch(&handler, content_type, body).await {
            Ok(answer) => {
                (StatusCode::ACCEPTED, [(axum::http::header::CONTENT_TYPE, answer.content_type)], answer.body)
                    .into_response()
            }
            Err(connect::odata::batch::BatchFormatError::NoBoundary(_)) => {
                odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/030", "$batch needs a multipart/mixed boundary")
            }
            Err(err) => odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/030", &err.to_string()),
        }
    }

    /// `__metadata` + navigation properties (deferred, or expanded one level).
    fn render(&self, data: &Data, def: &SetDef, row: &Value, base: &str, expand: &[&str], select: &[&str]) -> Value {
        let keys: Vec<(&str, &str)> =
            def.keys.iter().map(|k| (*k, row.get(*k).and_then(Value::as_str).unwrap_or_default())).collect();
        let uri = format!("{base}{}", crate::sap::wire::key_path(def.set, &keys));
        let mut meta = json!({"id": uri, "uri": uri, "type": format!("{}.{}", def.service.split(';').next().unwrap_or(def.service), def.type_name)});
        if let Some(etag) = etag_of(def, row) {
            meta["etag"] = json!(etag);
        }
        let mut out = Map::new();
        out.insert("__metadata".to_owned(), meta);
        if let Value::Object(map) = row {
            for (k, v) in map {
                if select.is_empty() || select.contains(&k.as_str()) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        for (nav, target, fks) in def.navs {
            if !select.is_empty() && !select.contains(nav) && !expand.contains(nav) {
                continue;
            }
            let value = match (expand.contains(nav), set_def(target)) {
                (true, Some(tdef)) => {
                    let children: Vec<Value> = data.rows[target]
                        .iter()
                        .filter(|c| fks.iter().all(|(own, theirs)| c.get(*theirs) == row.get(*own)))
                        .map(|c| self.render(data, tdef, c, base, &[], &[]))
                        .collect();
                    json!({"results": children})
                }
                _ => json!({"__deferred": {"uri": format!("{uri}/{nav}")}}),
            };
            out.insert((*nav).to_owned(), value);
        }
        Value::Object(out)
    }

    fn collection(&self, def: &SetDef, query: &QueryOptions, base: &str, uri: &Uri) -> Response {
        let data = self.lock();
        let mut rows: Vec<&Value> = data.rows[def.set].iter().collect();
        let filter = match query.filter() {
            Ok(filter) => filter,
            Err(e) => {
                return odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/021", &format!("Invalid filter: {e}"))
            }
        };
        if let Some(filter) = filter {
            let sample = data.rows[def.set].first();
            if let Some(bad) = filter.fields().into_iter().find(|f| sample.is_some_and(|s| s.get(*f).is_none())) {
                return odata_error(
                    StatusCode::BAD_REQUEST,
                    "/IWBEP/CM_MGW_RT/022",
                    &format!("Property '{bad}' is invalid"),
                );
            }
            rows.retain(|r| r.as_object().is_some_and(|fields| filter.matches(fields)));
        }
        let order = query.order_by();
        if !order.is_empty() {
            rows.sort_by(|a, b| match (a.as_object(), b.as_object()) {
                (Some(a), Some(b)) => compare_rows(a, b, &order),
                _ => std::cmp::Ordering::Equal,
            });
        }
        let count = rows.len();
        let skip = query.number("$skip").unwrap_or(0) + query.number("$skiptoken").unwrap_or(0);
        let top = query.number("$top");
        let wanted = top.map_or(count.saturating_sub(skip), |t| t.min(count.saturating_sub(skip)));
        // The server page is at most `page_size` of the rows the client wants.
        let page = PageWindow::new(skip + wanted, skip, data.page_size);
        let expand = query.list("$expand");
        let select = query.list("$select");
        let results: Vec<Value> =
            rows[page.start..page.end].iter().map(|r| self.render(&data, def, r, base, &expand, &select)).collect();
        let mut d = json!({"results": results});
        if query.wants_count() {
            d["__count"] = json!(count.to_string());
        }
        if page.more {
            // Server paging: $skiptoken counts rows already returned (after the client's $skip).
            let mut next = query.without(&["$skiptoken", "$skip"]);
            if let Some(t) = top {
                next.retain(|(k, _)| k != "$top");
                next.push(("$top".to_owned(), (t - page.len()).to_string()));
            }
            next.push(("$skiptoken".to_owned(), (skip + page.len()).to_string()));
            let path = format!("{base}{}", uri.path().rsplit('/').next().unwrap_or(def.set));
            d["__next"] = json!(next_link(&path, &next, QUERY_VALUE));
        }
        json_response(StatusCode::OK, &json!({ "d": d }))
    }

    /// `Set(keys)/Nav`: the related rows of one entity, one level (`A_PurchaseOrder('…')/to_PurchaseOrderItem`,
    /// `TaskCollection(…)/TaskObjects`).
    fn navigation(&self, service: &str, set: &str, key: &str, nav: &str, base: &str) -> Response {
        let not_found = |segment: &str| {
            odata_error(
                StatusCode::NOT_FOUND,
                "005056A509B11EE1B9A8FEC11C21D78E",
                &format!("Resource not found for the segment '{segment}'."),
            )
        };
        let Some(def) = set_def(set).filter(|d| d.service == service) else {
            return not_found(set);
        };
        let Some(keys) = parse_keys(key, def) else {
            return odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/004", "Malformed key predicate");
        };
        let Some((_, target, fks)) = def.navs.iter().find(|(name, _, _)| *name == nav) else { return not_found(nav) };
        let Some(tdef) = set_def(target) else { return not_found(nav) };
        let data = self.lock();
        let Some(row) = data.rows[def.set].iter().find(|r| key_matches(def, r, &keys)) else {
            return not_found(def.set);
        };
        let results: Vec<Value> = data.rows[tdef.set]
            .iter()
            .filter(|c| fks.iter().all(|(own, theirs)| c.get(*theirs) == row.get(*own)))
            .map(|c| self.render(&data, tdef, c, base, &[], &[]))
            .collect();
        json_response(StatusCode::OK, &json!({"d": {"results": results}}))
    }

    fn single(&self, def: &SetDef, keys: &[(String, String)], query: &QueryOptions, base: &str) -> Response {
        let data = self.lock();
        let Some(row) = data.rows[def.set].iter().find(|r| key_matches(def, r, keys)) else {
            return odata_error(
                StatusCode::NOT_FOUND,
                "/IWBEP/CM_MGW_RT/020",
                &format!("Resource not found for the segment '{}'.", def.set),
            );
        };
        let entity = self.render(&data, def, row, base, &query.list("$expand"), &query.list("$select"));
        let mut resp = json_response(StatusCode::OK, &json!({ "d": entity }));
        if let Some(etag) = etag_of(def, row).and_then(|e| HeaderValue::from_str(&e).ok()) {
            resp.headers_mut().insert(axum::http::header::ETAG, etag);
        }
        resp
    }

    fn update(&self, def: &SetDef, keys: &[(String, String)], headers: &HeaderMap, body: &Bytes) -> Response {
        if !def.writable {
            return odata_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "/IWBEP/CM_MGW_RT/025",
                &format!("{} is read-only", def.set),
            );
        }
        let changes: Map<String, Value> = match serde_json::from_slice(body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return odata_error(
                    StatusCode::BAD_REQUEST,
                    "/IWBEP/CM_MGW_RT/001",
                    "The request body is not a JSON object",
                )
            }
        };
        let mut data = self.lock();
        let Some(index) = data.rows[def.set].iter().position(|r| key_matches(def, r, keys)) else {
            return odata_error(
                StatusCode::NOT_FOUND,
                "/IWBEP/CM_MGW_RT/020",
                &format!("Resource not found for the segment '{}'.", def.set),
            );
        };
        let mut row = data.rows[def.set][index].clone();
        if def.etag_field.is_some() {
            // Gateway requires If-Match where the entity has an ETag: 428 without, 412 when stale.
            match if_match(headers, etag_of(def, &row).as_deref()) {
                IfMatch::Matches => {}
                IfMatch::Absent => {
                    return odata_error(
                        StatusCode::PRECONDITION_REQUIRED,
                        "/IWBEP/CM_MGW_RT/021",
                        "Precondition required",
                    )
                }
                IfMatch::Stale | IfMatch::NoEntity => {
                    return odata_error(StatusCode::PRECONDITION_FAILED, "/IWBEP/CM_MGW_RT/022", "Precondition failed")
                }
            }
        }
        for (k, v) in changes {
            if def.keys.contains(&k.as_str()) || k.starts_with("__") {
                continue;
            }
            if row.get(&k).is_none() {
                return odata_error(
                    StatusCode::BAD_REQUEST,
                    "/IWBEP/CM_MGW_RT/022",
                    &format!("Property '{k}' is invalid"),
                );
            }
            row[&k] = v;
        }
        data.touch(def, &mut row);
        let etag = etag_of(def, &row);
        if let Some(rows) = data.rows.get_mut(def.set) {
            rows[index] = row;
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
            resp.headers_mut().insert(axum::http::header::ETAG, v);
        }
        resp
    }

    fn create_po(&self, body: &Bytes, base: &str) -> Response {
        let Ok(Value::Object(mut header)) = serde_json::from_slice::<Value>(body) else {
            return odata_error(
                StatusCode::BAD_REQUEST,
                "/IWBEP/CM_MGW_RT/001",
                "The request body is not a JSON object",
            );
        };
        let items = header.remove("to_PurchaseOrderItem").and_then(|i| i.get("results").cloned()).unwrap_or(json!([]));
        let items = items.as_array().cloned().unwrap_or_default();
        if items.iter().any(|i| {
            i.get("OrderQuantity").and_then(Value::as_str).and_then(|q| q.parse::<f64>().ok()).unwrap_or(0.0) <= 0.0
        }) {
            return odata_error(StatusCode::BAD_REQUEST, "ME/083", "Enter a quantity greater than zero");
        }
        let mut data = self.lock();
        let number = data.next_po.to_string();
        data.next_po += 1;
        header.insert("PurchaseOrder".to_owned(), json!(number));
        header.entry("ReleaseIsNotCompleted").or_insert(json!(true));
        header.entry("PurchasingProcessingStatus").or_insert(json!("02"));
        header.entry("CorrespncInternalReference").or_insert(json!(""));
        let currency = header.get("DocumentCurrency").cloned().unwrap_or(json!("HKD"));
        let mut row = Value::Object(header);
        let def = set_def("A_PurchaseOrder").unwrap_or(&SETS[0]);
        data.touch(def, &mut row);
        for mut item in items {
            item["PurchaseOrder"] = json!(number);
            item["DocumentCurrency"] = currency.clone();
            if let Some(rows) = data.rows.get_mut("A_PurchaseOrderItem") {
                rows.push(item);
            }
        }
        if let Some(rows) = data.rows.get_mut("A_PurchaseOrder") {
            rows.push(row.clone());
        }
        let entity = self.render(&data, def, &row, base, &[], &[]);
        let location = format!("{base}A_PurchaseOrder('{number}')");
        let mut resp = json_response(StatusCode::CREATED, &json!({ "d": entity }));
        let message = json!({"code": "06/017", "message": format!("Standard PO created under the number {number}"),
            "target": "", "severity": "success", "transition": false, "details": []});
        for (name, value) in [("location", location), ("sap-message", message.to_string())] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        if let Some(v) = etag_of(def, &row).and_then(|e| HeaderValue::from_str(&e).ok()) {
            resp.headers_mut().insert(axum::http::header::ETAG, v);
        }
        resp
    }

    fn decision(&self, query: &QueryOptions, base: &str) -> Response {
        let p = |k: &str| query.get(k).map(unquote);
        let (Some(origin), Some(instance), Some(key), Some(comments)) =
            (p("SAP__Origin"), p("InstanceID"), p("DecisionKey"), p("Comments"))
        else {
            return odata_error(
                StatusCode::BAD_REQUEST,
                "/IWBEP/CM_MGW_RT/010",
                "Parameters SAP__Origin, InstanceID, DecisionKey and Comments are mandatory",
            );
        };
        let options = seed::decision_options(&origin, &instance);
        let Some(option) = options.iter().find(|o| o["DecisionKey"] == key.as_str()) else {
            return odata_error(
                StatusCode::BAD_REQUEST,
                "/IWWRK/WF/011",
                &format!("Decision key {key} is not valid for this task"),
            );
        };
        if option["CommentMandatory"] == true && comments.trim().is_empty() {
            return odata_error(StatusCode::BAD_REQUEST, "/IWWRK/WF/012", "A comment is mandatory for this decision");
        }
        let mut data = self.lock();
        let def = set_def("TaskCollection").unwrap_or(&SETS[0]);
        let Some(index) = data.rows["TaskCollection"]
            .iter()
            .position(|t| t["InstanceID"] == instance.as_str() && t["SAP__Origin"] == origin.as_str())
        else {
            return odata_error(StatusCode::NOT_FOUND, "/IWWRK/WF/001", &format!("Task {instance} not found"));
        };
        if data.rows["TaskCollection"][index]["Status"] != "READY" {
            // Gateway's OData v2 error for a decision on a work item someone already completed.
            return odata_error(
                StatusCode::BAD_REQUEST,
                "/IWWRK/WF/002",
                &format!("Work item {instance} is already completed; no further decision is possible"),
            );
        }
        let ms = data.change_stamp();
        let positive = option["Nature"] == "POSITIVE";
        let mut task = data.rows["TaskCollection"][index].clone();
        task["Status"] = json!("COMPLETED");
        task["Processor"] = json!(seed::USER);
        task["CompletedOn"] = json!(format!("/Date({ms}+0000)/"));
        task["HasComments"] = json!(!comments.is_empty());
        if let Some(rows) = data.rows.get_mut("TaskCollection") {
            rows[index] = task.clone();
        }
        if !comments.is_empty() {
            let id = format!("{:010}", data.rows["CommentCollection"].len() + 1);
            let comment = json!({"SAP__Origin": origin, "InstanceID": instance, "ID": id, "Text": comments,
                "CreatedBy": seed::USER, "CreatedAt": format!("/Date({ms}+0000)/")});
            if let Some(rows) = data.rows.get_mut("CommentCollection") {
                rows.push(comment);
            }
        }
        match seed::TASK_DOCUMENTS.iter().find(|(t, _, _)| *t == instance) {
            Some((_, kind, po)) if *kind == seed::OBJECT_TYPE_PO => {
                let po_def = set_def("A_PurchaseOrder").unwrap_or(&SETS[0]);
                if let Some(pos) = data.rows["A_PurchaseOrder"].iter().position(|r| r["PurchaseOrder"] == *po) {
                    let mut row = data.rows["A_PurchaseOrder"][pos].clone();
                    row["ReleaseIsNotCompleted"] = json!(!positive);
                    row["PurchasingProcessingStatus"] = json!(if positive { "05" } else { "08" });
                    data.touch(po_def, &mut row);
                    if let Some(rows) = data.rows.get_mut("A_PurchaseOrder") {
                        rows[pos] = row;
                    }
                }
            }
            Some((_, _, pr)) => {
                // Every item of the requisition: released (05) or rejected (08); neither waits any more.
                let pr_def = set_def("A_PurchaseRequisitionItem").unwrap_or(&SETS[0]);
                let positions: Vec<usize> = data.rows["A_PurchaseRequisitionItem"]
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r["PurchaseRequisition"] == *pr)
                    .map(|(i, _)| i)
                    .collect();
                for pos in positions {
                    let mut row = data.rows["A_PurchaseRequisitionItem"][pos].clone();
                    row["ReleaseIsNotCompleted"] = json!(false);
                    row["PurReqnReleaseStatus"] = json!(if positive { "05" } else { "08" });
                    data.touch(pr_def, &mut row);
                    if let Some(rows) = data.rows.get_mut("A_PurchaseRequisitionItem") {
                        rows[pos] = row;
                    }
                }
            }
            None => {}
        }
        let entity = self.render(&data, def, &task, base, &[], &[]);
        json_response(StatusCode::OK, &json!({ "d": entity }))
    }

    /// IDocs the target answered 2xx.
    pub fn idocs_sent(&self) -> u64 {
        self.lock().idocs_sent
    }

    /// IDocs not posted because the target is suppressed.
    pub fn idocs_suppressed(&self) -> u64 {
        self.lock().idocs_suppressed
    }

    /// The `idoc` control: generates and POSTs one IDoc to the configured target.
    async fn send_idoc(&self, value: &Value) -> Result<Value, SimError> {
        let invalid = |detail: String| SimError::InvalidRecord { entity: "idoc".to_owned(), detail };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or_default();
        let document = value.get("document").and_then(Value::as_str).unwrap_or_default();
        let (destination, docnum, xml) = {
            let mut data = self.lock();
            let destination = data.idoc_destination().map_err(|e| invalid(e.to_string()))?;
            let (docnum, xml) = data.build_idoc(kind, document).map_err(|e| invalid(e.to_string()))?;
            (destination, docnum, xml)
        };
        let Some(destination) = destination else {
            return Ok(json!({"docnum": format!("{docnum:016}"), "suppressed": true}));
        };
        let status = self.post_idoc(&destination, xml).await.map_err(|e| invalid(e.to_string()))?;
        Ok(json!({"docnum": format!("{docnum:016}"), "status": status}))
    }

    /// POSTs IDoc-XML like an XML-HTTP port; counts 2xx answers in `idocs_sent`.
    async fn post_idoc(&self, destination: &IdocDestination, xml: String) -> Result<u16, IdocError> {
        let mut request =
            self.http.post(&destination.url).header(axum::http::header::CONTENT_TYPE, "text/xml; charset=utf-8");
        if let Some((user, password)) = &destination.auth {
            request = request.basic_auth(user, Some(password));
        }
        let resp = request.body(xml).send().await.map_err(|e| IdocError::Post(e.without_url()))?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            self.lock().idocs_sent += 1;
        }
        Ok(status)
    }

    /// The `idoc_target` control.
    fn set_idoc_target(&self, value: &Value) -> Result<Value, IdocError> {
        let flag = |name: &str| match value.get(name) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| IdocError::NotAFlag(name.to_owned())),
        };
        let (on_change, suppressed) = (flag("on_change")?, flag("suppressed")?);
        let text = |name: &str| match value.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(IdocError::NotText { name: name.to_owned(), value: other.clone() }),
        };
        let (url, user, password) = (text("url")?, text("user")?, text("password")?);
        if url.is_none() && on_change.is_none() && suppressed.is_none() && user.is_none() {
            return Err(IdocError::NothingToSet);
        }
        let auth = match (user, password) {
            (Some(user), Some(password)) => Some(Some((user, password))),
            (Some(_), None) | (None, Some(_)) => return Err(IdocError::HalfCredentials),
            (None, None) if url.is_some() => Some(None),
            (None, None) => None,
        };
        if let Some(url) = &url {
            url::Url::parse(url).map_err(|source| IdocError::BadUrl { url: url.clone(), source })?;
        }
        let mut data = self.lock();
        if url.is_some() {
            data.idoc_target = url;
        }
        if let Some(auth) = auth {
            data.idoc_auth = auth;
        }
        if let Some(on_change) = on_change {
            data.idoc_on_change = on_change;
        }
        if let Some(suppressed) = suppressed {
            data.idoc_suppressed = suppressed;
        }
        Ok(json!({"url": data.idoc_target, "user": data.idoc_auth.as_ref().map(|(u, _)| u.clone()),
            "on_change": data.idoc_on_change, "suppressed": data.idoc_suppressed}))
    }
}

/// One `$batch` request of the SAP simulator: every embedded request runs through
/// [`SapSim::dispatch`] with the batch's session and service.
struct SapBatch<'a> {
    sim: &'a SapSim,
    ctx: &'a Ctx,
    service: &'a str,
    root: &'a str,
}

#[async_trait::async_trait]
impl BatchHandler for SapBatch<'_> {
    type Savepoint = BTreeMap<&'static str, Vec<Value>>;

    async fn answer(&self, operation: &BatchOperation, in_changeset: bool) -> BatchResponse {
        let refuse = |body: String| BatchResponse { status: 400, headers: Vec::new(), body };
        // OData v2: reads are top-level parts, writes live in changesets.
        if in_changeset == (operation.method == Method::GET) {
            return refuse("GET belongs outside changesets, writes inside".to_owned());
        }
        let Ok(uri) = format!("{}{}", self.root, operation.target).parse::<Uri>() else {
            return refuse(format!("bad target {}", operation.target));
        };
        let path = percent_encoding::percent_decode_str(uri.path()).decode_utf8_lossy().into_owned();
        let rest = path.strip_prefix(self.root).unwrap_or_default().to_owned();
        let headers = request_headers(operation);
        let body = request_body(operation);
        let response =
            self.sim.dispatch(&operation.method, &uri, &headers, &body, self.ctx, self.service, self.root, &rest);
        embedded_response(response).await
    }

    fn savepoint(&self) -> Self::Savepoint {
        self.sim.lock().rows.clone()
    }

    fn rollback(&self, savepoint: Self::Savepoint) {
        self.sim.lock().rows = savepoint;
    }
}

#[async_trait::async_trait]
impl Simulator for SapSim {
    fn name(&self) -> &'static str {
        "sap"
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new().route(
            "/sap/opu/odata/{*rest}",
            any(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                self.clone().handle(method, uri, headers, body)
            }),
        )
    }

    fn info(&self) -> Value {
        let data = self.lock();
        json!({
            "user": seed::USER,
            "password": seed::PASSWORD,
            "bearer_token": seed::BEARER_TOKEN,
            "sap_client": seed::SAP_CLIENT,
            "services": [service_root(PO), service_root(PR), service_root(STOCK), service_root(DLV), TASK_PROCESSING_ROOT],
            "page_size": data.page_size,
            "idoc_target": data.idoc_target,
            "idoc_on_change": data.idoc_on_change,
            "idoc_suppressed": data.idoc_suppressed,
            "idocs_sent": data.idocs_sent,
            "idocs_suppressed": data.idocs_suppressed,
            "task_instance_id": seed::TASK_ID,
        })
    }

    fn reset(&self) {
        *self.lock() = Data::seeded();
    }

    async fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        let invalid = |detail: &str| SimError::InvalidRecord { entity: entity.to_owned(), detail: detail.to_owned() };
        match entity {
            "idoc_target" => self.set_idoc_target(&value).map_err(|e| invalid(&e.to_string())),
            "idoc" => self.send_idoc(&value).await,
            "csrf" => {
                let mut data = self.lock();
                for token in data.sessions.values_mut() {
                    *token = None;
                }
                Ok(json!({"expired": true}))
            }
            "page_size" => {
                let n = value
                    .get("value")
                    .and_then(Value::as_u64)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("expected {\"value\": n > 0}"))?;
                self.lock().page_size = usize::try_from(n).unwrap_or(usize::MAX);
                Ok(json!({"value": n}))
            }
            set => {
                let def = set_def(set).ok_or_else(|| SimError::UnknownEntity {
                    simulator: "sap",
                    entity: set.to_owned(),
                    known: format!(
                        "idoc_target, idoc, csrf, page_size, {}",
                        SETS.iter().map(|d| d.set).collect::<Vec<_>>().join(", ")
                    ),
                })?;
                let Value::Object(fields) = value else { return Err(invalid("expected a JSON object")) };
                let keys: Vec<(String, String)> = def
                    .keys
                    .iter()
                    .map(|k| fields.get(*k).and_then(Value::as_str).map(|v| ((*k).to_owned(), v.to_owned())))
                    .collect::<Option<_>>()
                    .ok_or_else(|| invalid(&format!("every key field is required: {}", def.keys.join(", "))))?;
                // An explicit change time is kept (staleness tests); otherwise the upsert is "now".
                let explicit = def.etag_field.filter(|f| fields.contains_key(*f));
                if let Some(field) = explicit {
                    let text = fields[field].as_str().unwrap_or_default();
                    if date_millis(text).is_none() {
                        return Err(invalid(&format!(
                            "{field} must look like /Date(1710806400000)/, not {}",
                            fields[field]
                        )));
                    }
                }
                let key = keys.first().map(|(_, v)| v.clone()).unwrap_or_default();
                let (row, push) = {
                    let mut data = self.lock();
                    let existing = data.rows[def.set].iter().position(|r| key_matches(def, r, &keys));
                    let mut row = existing.map_or_else(|| json!({}), |i| data.rows[def.set][i].clone());
                    let was_issued = row["OverallGoodsMovementStatus"] == "C";
                    let gives_issue_time = fields.contains_key("ActualGoodsMovementDate");
                    for (k, v) in fields {
                        row[&k] = v;
                    }
                    if def.set == "A_OutbDeliveryHeader"
                        && !was_issued
                        && !gives_issue_time
                        && row["OverallGoodsMovementStatus"] == "C"
                    {
                        let (date, time) = goods_issue_now();
                        row["ActualGoodsMovementDate"] = json!(date);
                        row["ActualGoodsMovementTime"] = json!(time);
                    }
                    if explicit.is_none() {
                        data.touch(def, &mut row);
                    }
                    if let Some(rows) = data.rows.get_mut(def.set) {
                        match existing {
                            Some(i) => rows[i] = row.clone(),
                            None => rows.push(row.clone()),
                        }
                    }
                    // ECC output determination: the changed document goes out as an IDoc.
                    let kind = match def.set {
                        "A_OutbDeliveryHeader" => Some("DESADV"),
                        "A_PurchaseOrder" => Some("ORDERS05"),
                        _ => None,
                    };
                    let push = match kind.filter(|_| data.idoc_on_change && data.idoc_target.is_some()) {
                        Some(kind) => match data.idoc_destination() {
                            Ok(Some(destination)) => {
                                data.build_idoc(kind, &key).ok().map(|(docnum, xml)| (destination, docnum, xml))
                            }
                            _ => None,
                        },
                        None => None,
                    };
                    (row, push)
                };
                if let Some((destination, docnum, xml)) = push {
                    match self.post_idoc(&destination, xml).await {
                        Ok(status) if (200..300).contains(&status) => {}
                        Ok(status) => tracing::info!(docnum, status, "Simulated SAP IDoc was refused by its target."),
                        Err(e) => tracing::info!(docnum, detail = %e, "Simulated SAP IDoc could not be delivered."),
                    }
                }
                Ok(row)
            }
        }
    }
}

#[cfg(test)]
mod s8_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_have_gateway_format() {
        let def = set_def("A_PurchaseOrder").unwrap();
        let row = json!({"LastChangeDateTime": "/Date(1710469867000+0000)/"});
        assert_eq!(etag_of(def, &row).unwrap(), "W/\"datetimeoffset'2024-03-15T02%3A31%3A07.0000000Z'\"");
        let def = set_def("A_OutbDeliveryHeader").unwrap();
        let row = json!({"LastChangeDate": "/Date(1710720000000)/"});
        assert_eq!(etag_of(def, &row).unwrap(), "W/\"datetime'2024-03-18T00%3A00%3A00'\"");
    }

    #[test]
    fn key_predicates() {
        let def = set_def("A_PurchaseOrderItem").unwrap();
        let keys = parse_keys("PurchaseOrder='4500000123',PurchaseOrderItem='10'", def).unwrap();
        assert_eq!(
            keys,
            vec![("PurchaseOrder".into(), "4500000123".into()), ("PurchaseOrderItem".into(), "10".into())]
        );
        let def = set_def("A_PurchaseOrder").unwrap();
        assert_eq!(parse_keys("'O''1'", def).unwrap(), vec![("PurchaseOrder".into(), "O'1".into())]);
        assert!(parse_keys("PurchaseOrder=4500000123", def).is_none());
    }
}
