//! A stateful SAP Gateway simulator on one port (reference A10): the four A2X OData v2 services
//! and the Task Gateway service at their real paths, Basic/bearer auth, session cookies with the
//! CSRF-token protocol, `d`/`d.results` envelopes with `__metadata`, `__deferred`, `__count` and
//! `__next` server paging, `$filter`/`$select`/`$expand`/`$orderby`/`$top`/`$skip`/`$skiptoken`,
//! ETags with 412/428, `$batch` with atomic changesets, `TASKPROCESSING` decisions, and IDoc-XML
//! pushes.
//!
//! What each service serves is derived from its `$metadata` (`catalog.rs`): SAP's real documents
//! (the shared fixtures, embedded at build time and served as they are) and a generated one for
//! TASKPROCESSING. Every declared entity set answers (empty where nothing is seeded), with every
//! declared property (SAP's empty value where the row has none) and navigation (deferred, or
//! expanded to any depth); creates, updates and deletes follow the sets' `sap:creatable` /
//! `sap:updatable` / `sap:deletable`; undeclared sets, navigations and properties (in the path,
//! `$filter`, `$select`, `$orderby`, `$expand` or a body) and non-filterable / non-sortable
//! properties are refused with Gateway's error body. Declared function imports answer (PO
//! `GetPDF` / `GetOutputBinaryData`, TASKPROCESSING's) or, when not simulated, 501.
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
//! take the query options of a collection; `/$count` and `Set(key)/Property` are answered.
//! `$filter` is the grammar of [`sim::odata::filter`] (OData v2 functions). Not simulated: XML
//! error bodies, `$value` streams. Assumptions: `conformance/UNVERIFIED-sap.md`.

mod catalog;
mod edmx;
mod idoc_out;
pub mod seed;

use catalog::{set_def, set_in, sets, Nav, SetDef, DLV, PO, PR, STOCK, TASKS};
use edmx::Property;

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
    answer_batch, compare_rows, date_millis, embedded_response, if_match, key_values, next_link, BatchHandler, Dialect,
    Filter, IfMatch, OrderKey, PageWindow, QueryOptions, ResourcePath,
};
use sim::{SimError, Simulator};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Query values in `__next` keep OData syntax (`$`, quotes, parentheses) readable, as Gateway does.
const QUERY_VALUE: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'&').add(b'+').add(b'<').add(b'>');

/// A set the simulator's own logic names (seeds, decisions, deep insert); every one of them is
/// declared in the embedded documents (`catalog::tests` proves it), so a miss is a broken build.
fn builtin(set: &str) -> &'static SetDef {
    set_def(set).unwrap_or_else(|| panic!("entity set {set} is not declared in the embedded $metadata"))
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
        let mut rows: BTreeMap<&'static str, Vec<Value>> = sets().iter().map(|d| (d.set, Vec::new())).collect();
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
    let mut body = json!({"error": {"code": code, "message": {"lang": "en", "value": message},
        "innererror": {"transactionid": "5153494D0000000000000000000000", "timestamp": "20240315090000.0000000", "errordetails": []}}});
    // Gateway's own refusals (URI parser, business errors) carry the error-log hint; the ETag
    // refusals do not (fixtures `error_404_…`, `error_400_…` vs `error_412_…`, `error_428_…`).
    if !code.starts_with("/IWBEP/CM_MGW_RT/02") {
        body["error"]["innererror"]["Error_Resolution"] = json!({
            "SAP_Transaction": "For backend administrators: use ADT feed reader \"SAP Gateway Error Log\" or run transaction /IWFND/ERROR_LOG on SAP Gateway hub system and search for entries with the timestamp above for more details",
            "SAP_Note": "See SAP Note 1797736 for error analysis (https://service.sap.com/sap/support/notes/1797736)"});
    }
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json; charset=utf-8")], value.to_string()).into_response()
}

fn unquote(text: &str) -> String {
    text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')).map_or_else(|| text.to_owned(), |t| t.replace("''", "'"))
}

/// Gateway's code for URI-parser refusals (fixture `error_404_resource_not_found.v2.json`).
const URI_ERROR_CODE: &str = "005056A509B11EE1B9A8FEC11C21D78E";

/// A set, key, navigation or property the service does not have (fixture shape).
fn segment_not_found(segment: &str) -> Response {
    Refusal::SegmentNotFound(segment.to_owned()).response()
}

/// A property the entity type does not declare, in `$filter`, `$select`, `$orderby` or a body.
fn invalid_property(name: &str, def: &SetDef) -> Response {
    Refusal::invalid_property(name, def).response()
}

fn method_not_allowed() -> Response {
    odata_error(StatusCode::METHOD_NOT_ALLOWED, "/IWBEP/CM_MGW_RT/025", "Method not allowed for this resource")
}

fn malformed_key() -> Response {
    odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/004", "Malformed key predicate")
}

fn body_not_an_object() -> Response {
    odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/001", "The request body is not a JSON object")
}

/// Every key property named once (or the short form for a single key), nothing else.
fn key_is_complete(def: &SetDef, keys: &[(String, String)]) -> bool {
    keys.len() == def.keys.len() && def.keys.iter().all(|k| keys.iter().any(|(name, _)| name == k))
}

/// What Gateway sends for a property that has no value: empty text, zero, false, null dates.
fn default_value(property: &Property) -> Value {
    match property.edm_type.as_str() {
        "Edm.Boolean" => json!(false),
        "Edm.Decimal" | "Edm.Int64" => json!("0"),
        "Edm.Int16" | "Edm.Int32" | "Edm.Byte" | "Edm.SByte" | "Edm.Double" | "Edm.Single" => json!(0),
        "Edm.Time" => json!("PT00H00M00S"),
        "Edm.Guid" => json!("00000000-0000-0000-0000-000000000000"),
        "Edm.DateTime" | "Edm.DateTimeOffset" | "Edm.Binary" => Value::Null,
        _ if property.nullable => json!(""),
        _ => json!(""),
    }
}

/// The row as the service shows it: every declared property, the row's value or its default.
fn complete_row(def: &SetDef, row: &Value) -> Map<String, Value> {
    def.properties
        .iter()
        .map(|p| (p.name.clone(), row.get(&p.name).cloned().unwrap_or_else(|| default_value(p))))
        .collect()
}

/// The rows of `tdef` that `nav` of `row` leads to.
fn related<'a>(data: &'a Data, nav: &Nav, tdef: &SetDef, row: &Value) -> Vec<&'a Value> {
    let own = |name: &str| row.get(name).filter(|v| !v.is_null());
    data.rows[tdef.set]
        .iter()
        .filter(|c| nav.pairs.iter().all(|(mine, theirs)| own(mine).is_some() && c.get(*theirs) == own(mine)))
        .collect()
}

/// The system query options of one read, checked against the entity type: every property in
/// `$filter`, `$select` and `$orderby` and every navigation in `$expand` must be declared (and
/// filterable / sortable where SAP says it is not).
struct Plan<'q> {
    filter: Option<Filter>,
    order: Vec<OrderKey>,
    select: Vec<&'q str>,
    expand: Vec<&'q str>,
}

impl<'q> Plan<'q> {
    fn of(def: &SetDef, query: &'q QueryOptions) -> Result<Self, Refusal> {
        for option in ["$top", "$skip", "$skiptoken"] {
            if query.contains(option) && query.number(option).is_none() {
                let value = query.get(option).unwrap_or_default().to_owned();
                return Err(Refusal::BadNumber { option, value });
            }
        }
        let filter =
            query.get("$filter").map(|f| Filter::parse_dialect(f, Dialect::V2)).transpose().map_err(Refusal::Filter)?;
        if let Some(filter) = &filter {
            for field in filter.fields() {
                match def.property(field) {
                    None => return Err(Refusal::invalid_property(field, def)),
                    Some(p) if !p.filterable => return Err(Refusal::NotFilterable(field.to_owned())),
                    Some(_) => {}
                }
            }
        }
        let order = query.order_by();
        for key in &order {
            match def.property(&key.field) {
                None => return Err(Refusal::invalid_property(&key.field, def)),
                Some(p) if !p.sortable => return Err(Refusal::NotSortable(key.field.clone())),
                Some(_) => {}
            }
        }
        let expand = query.list("$expand");
        for path in &expand {
            Self::check_expand(def, path)?;
        }
        let select = query.list("$select");
        for item in &select {
            Self::check_select(def, item, &expand)?;
        }
        Ok(Plan { filter, order, select, expand })
    }

    /// `to_A/to_B`: each step a navigation of the type before it.
    fn check_expand(def: &SetDef, path: &str) -> Result<(), Refusal> {
        let (first, rest) = path.split_once('/').map_or((path, None), |(a, b)| (a, Some(b)));
        let nav = def.nav(first).ok_or_else(|| Refusal::SegmentNotFound(first.to_owned()))?;
        match (rest, set_in(def.service, nav.target)) {
            (Some(rest), Some(tdef)) => Self::check_expand(tdef, rest),
            _ => Ok(()),
        }
    }

    /// `*`, a property, a navigation, or `to_A/Property` of an expanded navigation.
    fn check_select(def: &SetDef, item: &str, expand: &[&str]) -> Result<(), Refusal> {
        if item == "*" || def.property(item).is_some() || def.nav(item).is_some() {
            return Ok(());
        }
        if let Some((first, rest)) = item.split_once('/') {
            if let (Some(nav), true) = (def.nav(first), expand.iter().any(|e| e.split('/').next() == Some(first))) {
                if let Some(tdef) = set_in(def.service, nav.target) {
                    let below: Vec<&str> =
                        expand.iter().filter_map(|e| e.strip_prefix(first)?.strip_prefix('/')).collect();
                    return Self::check_select(tdef, rest, &below);
                }
            }
        }
        Err(Refusal::invalid_property(item, def))
    }
}

/// Why a read's path or query options are refused, as Gateway's URI parser refuses them.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("Resource not found for the segment '{0}'.")]
    SegmentNotFound(String),
    #[error("Property '{name}' is invalid for entity type '{entity_type}'.")]
    InvalidProperty { name: String, entity_type: String },
    #[error("Property '{0}' is not filterable.")]
    NotFilterable(String),
    #[error("Property '{0}' is not sortable.")]
    NotSortable(String),
    #[error("Invalid filter expression: {0}.")]
    Filter(#[source] sim::odata::FilterError),
    #[error("Invalid value '{value}' for system query option '{option}'.")]
    BadNumber { option: &'static str, value: String },
}

impl Refusal {
    fn invalid_property(name: &str, def: &SetDef) -> Self {
        Refusal::InvalidProperty { name: name.to_owned(), entity_type: format!("{}.{}", def.namespace, def.type_name) }
    }

    fn response(&self) -> Response {
        let status =
            if matches!(self, Refusal::SegmentNotFound(_)) { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
        odata_error(status, URI_ERROR_CODE, &self.to_string())
    }
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
        // HEAD is answered as GET without the body (the SAP Cloud SDK fetches its CSRF token
        // with a HEAD on the resource it is about to change; Gateway answers it 200).
        let method = if method == Method::HEAD { &Method::GET } else { method };
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
        let Some(declared) = catalog::service(service) else { return segment_not_found(service) };
        if rest.is_empty() {
            let sets: Vec<&str> = declared.model.entity_sets.iter().map(|s| s.name.as_str()).collect();
            return json_response(StatusCode::OK, &json!({"d": {"EntitySets": sets}}));
        }
        if rest == "$metadata" {
            // SAP's own document, byte for byte (TASKPROCESSING: the generated one).
            return ([(axum::http::header::CONTENT_TYPE, "application/xml")], declared.document).into_response();
        }
        if let Some(function) = declared.model.function_import(rest) {
            if !function.http_method.eq_ignore_ascii_case(method.as_str()) {
                return method_not_allowed();
            }
            return self.function(service, &function.name, &function.parameters, &query, &base);
        }
        // pyodata asks for a property as `Set(key)/Property/`; Gateway ignores the trailing slash.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (rest, count_only) = match rest.strip_suffix("/$count") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        let path = ResourcePath::parse(rest);
        let Some(def) = set_in(service, path.set) else { return segment_not_found(path.set) };
        let keys = match path.key.map(|k| parse_keys(k, def)) {
            Some(Some(k)) if key_is_complete(def, &k) => Some(k),
            Some(_) => return malformed_key(),
            None => None,
        };
        match (keys, path.navigation) {
            (Some(keys), Some(segment)) if *method == Method::GET => {
                self.below_entity(def, &keys, segment, &query, &base, rest, count_only)
            }
            (None, None) if *method == Method::GET => {
                let plan = match Plan::of(def, &query) {
                    Ok(plan) => plan,
                    Err(refusal) => return refusal.response(),
                };
                let data = self.lock();
                let rows: Vec<&Value> = data.rows[def.set].iter().collect();
                self.collection(&data, def, rows, &plan, &query, &base, rest, count_only)
            }
            (None, None) if *method == Method::POST => self.create(def, body, &base),
            (Some(keys), None) if !count_only => match method.as_str() {
                "GET" => self.single(def, &keys, &query, &base),
                "PATCH" | "MERGE" | "PUT" => self.update(def, &keys, headers, body),
                "DELETE" => self.delete(def, &keys, headers),
                _ => method_not_allowed(),
            },
            _ => method_not_allowed(),
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

    /// `__metadata`, the declared properties (`$select`) and the navigation properties
    /// (deferred, or expanded as deep as `$expand` says).
    fn render(&self, data: &Data, def: &SetDef, row: &Value, base: &str, expand: &[&str], select: &[&str]) -> Value {
        let keys: Vec<(&str, &str)> =
            def.keys.iter().map(|k| (*k, row.get(*k).and_then(Value::as_str).unwrap_or_default())).collect();
        let uri = format!("{base}{}", crate::sap::wire::key_path(def.set, &keys));
        let mut meta = json!({"id": uri, "uri": uri, "type": format!("{}.{}", def.namespace, def.type_name)});
        if let Some(etag) = etag_of(def, row) {
            meta["etag"] = json!(etag);
        }
        let all = select.is_empty() || select.contains(&"*");
        let mut out = Map::new();
        out.insert("__metadata".to_owned(), meta);
        for property in def.properties {
            if all || select.contains(&property.name.as_str()) {
                let value = row.get(&property.name).cloned().unwrap_or_else(|| default_value(property));
                out.insert(property.name.clone(), value);
            }
        }
        for nav in &def.navs {
            let below = |list: &[&'_ str]| -> Vec<String> {
                list.iter().filter_map(|e| e.strip_prefix(nav.name)?.strip_prefix('/').map(str::to_owned)).collect()
            };
            let expanded = expand.iter().any(|e| *e == nav.name || e.starts_with(&format!("{}/", nav.name)));
            if !all && !select.contains(&nav.name) && !expanded {
                continue;
            }
            let value = match (expanded, set_in(def.service, nav.target)) {
                (true, Some(tdef)) => {
                    let sub_expand = below(expand);
                    let sub_select = below(select);
                    let sub_expand: Vec<&str> = sub_expand.iter().map(String::as_str).collect();
                    let sub_select: Vec<&str> = sub_select.iter().map(String::as_str).collect();
                    let children: Vec<Value> = related(data, nav, tdef, row)
                        .into_iter()
                        .map(|c| self.render(data, tdef, c, base, &sub_expand, &sub_select))
                        .collect();
                    if nav.many {
                        json!({"results": children})
                    } else {
                        children.into_iter().next().unwrap_or(Value::Null)
                    }
                }
                _ => json!({"__deferred": {"uri": format!("{uri}/{}", nav.name)}}),
            };
            out.insert(nav.name.to_owned(), value);
        }
        Value::Object(out)
    }

    /// One page of `rows` (a set, or the targets of a navigation) after `$filter`, `$orderby`,
    /// `$skip`, `$top` and server paging; `/$count` answers the filtered count as plain text.
    #[allow(clippy::too_many_arguments)]
    fn collection(
        &self,
        data: &Data,
        def: &SetDef,
        mut rows: Vec<&Value>,
        plan: &Plan<'_>,
        query: &QueryOptions,
        base: &str,
        path: &str,
        count_only: bool,
    ) -> Response {
        // Filter and sort on complete rows: a declared property the row lacks has its default.
        let complete: Vec<Map<String, Value>> = rows.iter().map(|r| complete_row(def, r)).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if let Some(filter) = &plan.filter {
            order.retain(|i| filter.matches(&complete[*i]));
        }
        if !plan.order.is_empty() {
            order.sort_by(|a, b| compare_rows(&complete[*a], &complete[*b], &plan.order));
        }
        rows = order.into_iter().map(|i| rows[i]).collect();
        let count = rows.len();
        if count_only {
            return (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "text/plain")], count.to_string())
                .into_response();
        }
        let skip = query.number("$skip").unwrap_or(0) + query.number("$skiptoken").unwrap_or(0);
        let top = query.number("$top");
        let wanted = top.map_or(count.saturating_sub(skip), |t| t.min(count.saturating_sub(skip)));
        // The server page is at most `page_size` of the rows the client wants.
        let page = PageWindow::new(skip + wanted, skip, data.page_size);
        let results: Vec<Value> = rows[page.start..page.end]
            .iter()
            .map(|r| self.render(data, def, r, base, &plan.expand, &plan.select))
            .collect();
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
            d["__next"] = json!(next_link(&format!("{base}{path}"), &next, QUERY_VALUE));
        }
        json_response(StatusCode::OK, &json!({ "d": d }))
    }

    /// `Set(keys)/X`: a navigation property (its targets, with query options) or a property.
    #[allow(clippy::too_many_arguments)]
    fn below_entity(
        &self,
        def: &SetDef,
        keys: &[(String, String)],
        segment: &str,
        query: &QueryOptions,
        base: &str,
        path: &str,
        count_only: bool,
    ) -> Response {
        let data = self.lock();
        let Some(row) = data.rows[def.set].iter().find(|r| key_matches(def, r, keys)) else {
            return segment_not_found(def.set);
        };
        if let Some(nav) = def.nav(segment) {
            let Some(tdef) = set_in(def.service, nav.target) else { return segment_not_found(segment) };
            let plan = match Plan::of(tdef, query) {
                Ok(plan) => plan,
                Err(refusal) => return refusal.response(),
            };
            let targets = related(&data, nav, tdef, row);
            if nav.many || count_only {
                return self.collection(&data, tdef, targets, &plan, query, base, path, count_only);
            }
            return match targets.first() {
                Some(target) => {
                    let entity = self.render(&data, tdef, target, base, &plan.expand, &plan.select);
                    json_response(StatusCode::OK, &json!({ "d": entity }))
                }
                None => segment_not_found(segment),
            };
        }
        match def.property(segment) {
            Some(property) if !count_only => {
                let value = row.get(segment).cloned().unwrap_or_else(|| default_value(property));
                json_response(StatusCode::OK, &json!({"d": {segment: value}}))
            }
            _ => segment_not_found(segment),
        }
    }

    fn single(&self, def: &SetDef, keys: &[(String, String)], query: &QueryOptions, base: &str) -> Response {
        let plan = match Plan::of(def, query) {
            Ok(plan) => plan,
            Err(refusal) => return refusal.response(),
        };
        let data = self.lock();
        let Some(row) = data.rows[def.set].iter().find(|r| key_matches(def, r, keys)) else {
            return segment_not_found(def.set);
        };
        let entity = self.render(&data, def, row, base, &plan.expand, &plan.select);
        let mut resp = json_response(StatusCode::OK, &json!({ "d": entity }));
        if let Some(etag) = etag_of(def, row).and_then(|e| HeaderValue::from_str(&e).ok()) {
            resp.headers_mut().insert(axum::http::header::ETAG, etag);
        }
        resp
    }

    /// Gateway requires If-Match where the entity has an ETag: 428 without, 412 when stale.
    fn precondition(def: &SetDef, row: &Value, headers: &HeaderMap) -> Option<Response> {
        def.etag_field?;
        match if_match(headers, etag_of(def, row).as_deref()) {
            IfMatch::Matches => None,
            IfMatch::Absent => {
                Some(odata_error(StatusCode::PRECONDITION_REQUIRED, "/IWBEP/CM_MGW_RT/021", "Precondition required"))
            }
            IfMatch::Stale | IfMatch::NoEntity => {
                Some(odata_error(StatusCode::PRECONDITION_FAILED, "/IWBEP/CM_MGW_RT/022", "Precondition failed"))
            }
        }
    }

    fn update(&self, def: &SetDef, keys: &[(String, String)], headers: &HeaderMap, body: &Bytes) -> Response {
        if !def.updatable {
            return method_not_allowed();
        }
        let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(body) else { return body_not_an_object() };
        if let Some(bad) = changes.keys().find(|k| !k.starts_with("__") && def.property(k).is_none()) {
            return invalid_property(bad, def);
        }
        let mut data = self.lock();
        let Some(index) = data.rows[def.set].iter().position(|r| key_matches(def, r, keys)) else {
            return segment_not_found(def.set);
        };
        let mut row = data.rows[def.set][index].clone();
        if let Some(refusal) = Self::precondition(def, &row, headers) {
            return refusal;
        }
        for (k, v) in changes {
            if !def.is_key(&k) && !k.starts_with("__") {
                row[&k] = v;
            }
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

    fn delete(&self, def: &SetDef, keys: &[(String, String)], headers: &HeaderMap) -> Response {
        if !def.deletable {
            return method_not_allowed();
        }
        let mut data = self.lock();
        let Some(index) = data.rows[def.set].iter().position(|r| key_matches(def, r, keys)) else {
            return segment_not_found(def.set);
        };
        if let Some(refusal) = Self::precondition(def, &data.rows[def.set][index], headers) {
            return refusal;
        }
        if let Some(rows) = data.rows.get_mut(def.set) {
            rows.remove(index);
        }
        StatusCode::NO_CONTENT.into_response()
    }

    /// `POST Set`: a new entity with deep insert of its 1:n navigations (`to_PurchaseOrderItem:
    /// {results: […]}`). A purchase order gets the next number; other sets need their keys.
    fn create(&self, def: &SetDef, body: &Bytes, base: &str) -> Response {
        if !def.creatable {
            return method_not_allowed();
        }
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
            return body_not_an_object();
        };
        fields.retain(|k, _| !k.starts_with("__"));
        let mut deep = Vec::new();
        for nav in &def.navs {
            if let Some(value) = fields.remove(nav.name) {
                let children = value.get("results").cloned().unwrap_or(value);
                deep.push((nav, children.as_array().cloned().unwrap_or_default()));
            }
        }
        if let Some(bad) = fields.keys().find(|k| def.property(k).is_none()) {
            return invalid_property(bad, def);
        }
        for (nav, children) in &deep {
            let Some(tdef) = set_in(def.service, nav.target) else { continue };
            for child in children {
                let Some(child) = child.as_object() else { return body_not_an_object() };
                if let Some(bad) = child.keys().find(|k| !k.starts_with("__") && tdef.property(k).is_none()) {
                    return invalid_property(bad, tdef);
                }
            }
        }
        let is_po = def.set == "A_PurchaseOrder";
        if is_po
            && deep.iter().flat_map(|(_, c)| c).any(|i| {
                i.get("OrderQuantity").and_then(Value::as_str).and_then(|q| q.parse::<f64>().ok()).unwrap_or(0.0) <= 0.0
            })
        {
            return odata_error(StatusCode::BAD_REQUEST, "ME/083", "Enter a quantity greater than zero");
        }
        let mut data = self.lock();
        if is_po {
            let number = data.next_po.to_string();
            data.next_po += 1;
            fields.insert("PurchaseOrder".to_owned(), json!(number));
            fields.entry("ReleaseIsNotCompleted").or_insert(json!(true));
            fields.entry("PurchasingProcessingStatus").or_insert(json!("02"));
            fields.entry("CorrespncInternalReference").or_insert(json!(""));
        }
        let keys: Option<Vec<(String, String)>> = def
            .keys
            .iter()
            .map(|k| {
                fields
                    .get(*k)
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                    .map(|v| ((*k).to_owned(), v.to_owned()))
            })
            .collect();
        let Some(keys) = keys else {
            return odata_error(
                StatusCode::BAD_REQUEST,
                "/IWBEP/CM_MGW_RT/001",
                &format!("Key fields {} are mandatory", def.keys.join(", ")),
            );
        };
        if data.rows[def.set].iter().any(|r| key_matches(def, r, &keys)) {
            return odata_error(
                StatusCode::CONFLICT,
                "/IWBEP/CM_MGW_RT/002",
                &format!(
                    "Entity {} already exists",
                    crate::sap::wire::key_path(
                        def.set,
                        &keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>()
                    )
                ),
            );
        }
        let currency = fields.get("DocumentCurrency").cloned().unwrap_or(json!("HKD"));
        let mut row = Value::Object(fields);
        data.touch(def, &mut row);
        for (nav, children) in deep {
            let Some(tdef) = set_in(def.service, nav.target) else { continue };
            for mut child in children {
                for (own, theirs) in &nav.pairs {
                    child[*theirs] = row.get(*own).cloned().unwrap_or(Value::Null);
                }
                if is_po {
                    child["DocumentCurrency"] = currency.clone();
                }
                if let Some(rows) = data.rows.get_mut(tdef.set) {
                    rows.push(child);
                }
            }
        }
        if let Some(rows) = data.rows.get_mut(def.set) {
            rows.push(row.clone());
        }
        let entity = self.render(&data, def, &row, base, &[], &[]);
        let location = entity["__metadata"]["uri"].as_str().unwrap_or_default().to_owned();
        let mut resp = json_response(StatusCode::CREATED, &json!({ "d": entity }));
        let mut headers = vec![("location", location)];
        if is_po {
            let number = row["PurchaseOrder"].as_str().unwrap_or_default();
            let message = json!({"code": "06/017", "message": format!("Standard PO created under the number {number}"),
                "target": "", "severity": "success", "transition": false, "details": []});
            headers.push(("sap-message", message.to_string()));
        }
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        if let Some(v) = etag_of(def, &row).and_then(|e| HeaderValue::from_str(&e).ok()) {
            resp.headers_mut().insert(axum::http::header::ETAG, v);
        }
        resp
    }

    /// A declared function import: TASKPROCESSING's `DecisionOptions` / `Decision`, the PO's
    /// `GetPDF` / `GetOutputBinaryData`; the others are declared but not simulated (501).
    fn function(
        &self,
        service: &str,
        name: &str,
        parameters: &[(String, String)],
        query: &QueryOptions,
        base: &str,
    ) -> Response {
        if let Some((missing, _)) = parameters.iter().find(|(p, _)| query.get(p).is_none()) {
            return odata_error(
                StatusCode::BAD_REQUEST,
                "/IWBEP/CM_MGW_RT/010",
                &format!("Parameter '{missing}' of function import '{name}' is missing"),
            );
        }
        let p = |k: &str| query.get(k).map(unquote).unwrap_or_default();
        match (service, name) {
            (TASKS, "DecisionOptions") => {
                let results = seed::decision_options(&p("SAP__Origin"), &p("InstanceID"));
                json_response(StatusCode::OK, &json!({"d": {"results": results}}))
            }
            (TASKS, "Decision") => self.decision(query, base),
            (PO, "GetPDF" | "GetOutputBinaryData") => {
                let po = p("PurchaseOrder");
                if !self.lock().rows["A_PurchaseOrder"].iter().any(|r| r["PurchaseOrder"] == po.as_str()) {
                    return segment_not_found(name);
                }
                let pdf = format!("%PDF-1.4\n% dingbridge simulated output of purchase order {po}\n%%EOF\n");
                let binary = base64::engine::general_purpose::STANDARD.encode(pdf);
                json_response(
                    StatusCode::OK,
                    &json!({"d": {name: {"__metadata": {"type": format!("{PO}.GetPDFResult")}, "PurchaseOrderBinary": binary}}}),
                )
            }
            (DLV, "PostGoodsIssue") => self.post_goods_issue(&p("DeliveryDocument")),
            _ => odata_error(
                StatusCode::NOT_IMPLEMENTED,
                "/IWBEP/CM_MGW_RT/016",
                &format!("Function import '{name}' is declared but not simulated"),
            ),
        }
    }

    /// `POST PostGoodsIssue?DeliveryDocument='…'`: the delivery's goods movement is complete,
    /// dated now (Hong Kong); the answer is its (empty) collection of picking messages.
    fn post_goods_issue(&self, delivery: &str) -> Response {
        let def = builtin("A_OutbDeliveryHeader");
        let mut data = self.lock();
        let Some(index) = data.rows[def.set].iter().position(|r| r["DeliveryDocument"] == delivery) else {
            return segment_not_found(def.set);
        };
        let mut row = data.rows[def.set][index].clone();
        if row["OverallGoodsMovementStatus"] == "C" {
            return odata_error(
                StatusCode::BAD_REQUEST,
                "VL/602",
                &format!("Delivery {delivery} has already been posted for goods issue"),
            );
        }
        let (date, time) = goods_issue_now();
        row["OverallGoodsMovementStatus"] = json!("C");
        row["ActualGoodsMovementDate"] = json!(date);
        row["ActualGoodsMovementTime"] = json!(time);
        data.touch(def, &mut row);
        if let Some(rows) = data.rows.get_mut(def.set) {
            rows[index] = row;
        }
        json_response(StatusCode::OK, &json!({"d": {"results": []}}))
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
        let def = builtin("TaskCollection");
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
                let po_def = builtin("A_PurchaseOrder");
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
                let pr_def = builtin("A_PurchaseRequisitionItem");
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
                        sets().iter().map(|d| d.set).collect::<Vec<_>>().join(", ")
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

#[cfg(test)]
mod metadata_tests;
