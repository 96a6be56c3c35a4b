//! The Dynamics 365 simulator (reference C10): a Microsoft identity token endpoint, one Dataverse
//! environment and one Business Central company on one loopback port.
//!
//! | area | what |
//! |---|---|
//! | `POST /{tenant}/oauth2/v2.0/token` | client credentials; scope `<resource>/.default`; bad secret → 401 `invalid_client` (AADSTS7000215); a token is valid for its resource only |
//! | `/api/data/v9.2/{set}` | `salesorders`, `opportunities`, `accounts`, `products`, `transactioncurrencies`: `$select`, `$filter` (`and` of `field op literal`), `$orderby` (one key), `Prefer: odata.maxpagesize` with opaque `$skiptoken` nextLinks, annotations on request, change tracking (`odata.track-changes`, `$deltatoken` answers paged by `odata.maxpagesize` too, tombstones; `$filter` refused) |
//! | `/api/data/v9.2/{set}({id})` | GET; PATCH upsert with `If-Match` (stale → 412 `0x80060882`, `*` on a missing row → 404) and `If-None-Match: *` (existing → 412 `0x80040237`); DELETE |
//! | `POST /api/data/v9.2/$batch` | multipart operations (no change sets), counted as one request |
//! | service protection | sliding 300 s window per user: request count, combined execution time (the configured latency), concurrency; 429 + `Retry-After` + the vendor's bodies |
//! | `/v2.0/{tenant}/{env}/api/v2.0/…` | `companies`, `companies({id})/purchaseOrders[({id})]` (`$expand=purchaseOrderLines`, `$filter`), `items`, `salesShipments`, `employees` (the DingTalk seed's people, `number` = job number, one `Inactive`); PATCH requires `If-Match`; request limit → 429 `Application_TooManyRequests` |
//! | `/v2.0/{tenant}/{env}/api/dingbridge/approvals/v1.0/companies({id})/purchaseOrderApprovals({id})` | the dingbridge approvals extension ([`approvals`]): GET `{@odata.etag, id, number, status, lastDecisionKey, lastDecisionComment, lastModifiedDateTime}` (etag = the purchase order's); `POST …/Microsoft.NAV.approve` / `…/Microsoft.NAV.reject` with `If-Match` and `{"comment", "decisionKey"}` → 204, status `Open` / `Draft`, key and comment recorded, `lastModifiedDateTime` and the etag bumped; stale etag → 412 `Request_EntityChanged`; not `In Review` → 400 `Application_DialogException` ("Status must be equal to 'Pending Approval' …"); not rate-limited |
//!
//! Control (`POST /_sim/records/{entity}`):
//!
//! | entity | what |
//! |---|---|
//! | a Dataverse set (`salesorders`, …) | upsert by its key (`{"@delete": true, key}` deletes); stamps `modifiedon` unless the body gives it (staleness tests). Every Dataverse change, through the API or here, bumps the row version and POSTs a `RemoteExecutionContext` to the webhook |
//! | a BC set (`purchaseOrders`, `items`, `salesShipments`, `employees`) | upsert by `id` (stamps `lastModifiedDateTime`, bumps the etag) |
//! | `webhook` | `{"url": …, "headers": {"name": "value"}, "suppressed": bool}`: where changes go (`"url": null` stops them) and the headers sent with every POST (service endpoint auth type HttpHeader). `{"suppressed": true}` alone keeps url and headers. While suppressed (a fault: the step does not fire) changes are made and visible to reads and change tracking, but nothing is posted; each skipped POST counts in `webhooks_suppressed` (`/_sim/info`, [`DynamicsSim::webhooks_suppressed`]) |
//! | `limits` | see [`Limits`] |

mod approvals;
mod identity;
pub mod schema;
pub mod seed;

pub use approvals::APPROVALS_API;

use super::{BC_RESOURCE, DATAVERSE_API_PATH};
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use connect::odata::batch::BatchFormatError;
use connect::Clock;
use jiff::{SignedDuration, Timestamp};
use percent_encoding::NON_ALPHANUMERIC;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sim::odata::batch::{request_body, request_headers, BatchOperation, BatchResponse};
use sim::odata::{
    answer_batch, compare_rows, if_match, if_none_match_any, max_page_size, next_link, prefers, weak_etag,
    BatchHandler, Filter, IfMatch, PageWindow, QueryOptions, ResourcePath,
};
use sim::{SimError, Simulator};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Service-protection window (reference C7).
pub const WINDOW: SignedDuration = SignedDuration::from_secs(300);

/// Service-protection and behaviour settings; change them at run time with
/// `POST /_sim/records/limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Dataverse requests per user per window (real: 6,000).
    pub requests: usize,
    /// Combined execution time per window, ms (real: 1,200,000).
    pub execution_ms: u64,
    /// Concurrent Dataverse requests per user (real: 52).
    pub concurrency: usize,
    /// `Retry-After` seconds sent with every 429.
    pub retry_after_s: u64,
    /// Artificial time each Dataverse request takes, ms (counts as execution time).
    pub latency_ms: u64,
    /// Business Central requests per window (real: 600/min production, UNVERIFIED).
    pub bc_requests: usize,
    /// Business Central server page size (real: 20,000).
    pub bc_page_size: usize,
    /// Access-token lifetime in seconds.
    pub token_ttl_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests: 6000,
            execution_ms: 1_200_000,
            concurrency: 52,
            retry_after_s: 37,
            latency_ms: 0,
            bc_requests: 3000,
            bc_page_size: 20_000,
            token_ttl_s: 3599,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Dataverse,
    BusinessCentral,
}

#[derive(Debug, Clone)]
struct Row {
    data: Map<String, Value>,
    version: u64,
}

#[derive(Debug, Default)]
struct State {
    tokens: BTreeMap<String, (Resource, Timestamp)>,
    tables: BTreeMap<String, BTreeMap<String, Row>>,
    /// `(set, id)` → version at which the row was deleted.
    tombstones: BTreeMap<(String, String), u64>,
    bc: BTreeMap<String, BTreeMap<String, Row>>,
    /// Purchase order id → the last decision the approvals extension recorded on it.
    bc_decisions: BTreeMap<String, approvals::LastDecision>,
    version: u64,
    /// `(at, execution ms)` of Dataverse requests inside the window.
    window: VecDeque<(Timestamp, u64)>,
    bc_window: VecDeque<Timestamp>,
    limits: Limits,
    webhook_url: Option<String>,
    /// Sent with every webhook POST (Dataverse service endpoint auth type HttpHeader).
    webhook_headers: BTreeMap<String, String>,
    /// Fault: changes are not posted (counted in `webhooks_suppressed`).
    webhook_suppressed: bool,
}

/// Why the `webhook` control body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum WebhookError {
    #[error("\"suppressed\" must be true or false")]
    SuppressedNotAFlag,
    #[error("header {0} must have a string value")]
    HeaderNotText(String),
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
    #[error("the value of header {0} is not valid")]
    HeaderValue(String),
    #[error("\"headers\" must be an object of name: value, not {0}")]
    HeadersNotAnObject(Value),
}

/// Where one webhook POST goes.
#[derive(Debug, Clone)]
struct WebhookTarget {
    url: String,
    headers: BTreeMap<String, String>,
}

/// One answer of the Dataverse dispatcher (also used for `$batch` parts).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body: Some(body) }
    }

    fn empty(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: None }
    }

    fn error(status: u16, code: &str, message: &str) -> Self {
        Self::json(status, json!({"error": {"code": code, "message": message}}))
    }

    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = match self.body {
            Some(body) => (status, axum::Json(body)).into_response(),
            None => status.into_response(),
        };
        for (k, v) in self.headers {
            if let (Ok(name), Ok(value)) = (axum::http::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v))
            {
                resp.headers_mut().insert(name, value);
            }
        }
        resp.headers_mut().insert("OData-Version", HeaderValue::from_static("4.0"));
        resp
    }
}

/// A change that fires the webhook.
#[derive(Debug, Clone)]
struct Fired {
    message: &'static str,
    logical: &'static str,
    id: String,
    changed: Map<String, Value>,
    post: Map<String, Value>,
    version: u64,
}

/// The simulator.
pub struct DynamicsSim {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    webhooks_sent: AtomicU64,
    webhooks_suppressed: AtomicU64,
    http: reqwest::Client,
}

impl std::fmt::Debug for DynamicsSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamicsSim").finish_non_exhaustive()
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn etag(version: u64) -> String {
    weak_etag(&version.to_string())
}

fn bc_etag(version: u64) -> String {
    use base64::Engine;
    weak_etag(&base64::engine::general_purpose::STANDARD.encode(format!("19;{version};00;")))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `set` or `set(id)` (an id quoted or not); `None` for a navigation path, which is not simulated.
fn split_key(path: &str) -> Option<(String, Option<String>)> {
    let path = ResourcePath::parse(path);
    if path.navigation.is_some() {
        return None;
    }
    Some((path.set.to_owned(), path.key.map(|k| k.trim_matches('\'').to_owned())))
}

/// Rows of `rows` that pass the request's `$filter` (all of them without one).
fn filtered<'a, T>(
    rows: impl Iterator<Item = T>,
    filter: Option<&Filter>,
    fields: impl Fn(&T) -> &'a Map<String, Value>,
) -> Vec<T> {
    rows.filter(|row| filter.is_none_or(|f| f.matches(fields(row)))).collect()
}

/// The row as the client asked for it: `$select`ed columns (plus key and etag), annotations
/// only when requested.
fn shape(data: &Map<String, Value>, key: &str, tag: String, select: Option<&str>, annotations: bool) -> Value {
    let wanted: Option<Vec<&str>> = select.map(|s| s.split(',').map(str::trim).collect());
    let mut out = Map::new();
    out.insert("@odata.etag".to_owned(), json!(tag));
    for (k, v) in data {
        let base = k.split('@').next().unwrap_or(k);
        let is_annotation = k.contains('@');
        let selected = base == key || wanted.as_ref().is_none_or(|w| w.contains(&base));
        if selected && (!is_annotation || annotations) {
            out.insert(k.clone(), v.clone());
        }
    }
    // A selected column the row has no value for is sent as null, as Dataverse does.
    for name in wanted.into_iter().flatten() {
        out.entry(name.to_owned()).or_insert(Value::Null);
    }
    Value::Object(out)
}

impl DynamicsSim {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default();
        Self {
            state: Mutex::new(Self::seeded(Limits::default())),
            clock,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            webhooks_sent: AtomicU64::new(0),
            webhooks_suppressed: AtomicU64::new(0),
            http,
        }
    }

    fn seeded(limits: Limits) -> State {
        let mut state = State { limits, ..State::default() };
        for (set, version, row) in seed::dataverse() {
            let key = schema::by_set(set).map_or("", |t| t.key);
            let id = row[key].as_str().unwrap_or_default().to_owned();
            let data = row.as_object().cloned().unwrap_or_default();
            state.tables.entry(set.to_owned()).or_default().insert(id, Row { data, version });
            state.version = state.version.max(version);
        }
        for (set, row) in seed::business_central() {
            state.version += 1;
            let id = row["id"].as_str().unwrap_or_default().to_owned();
            let data = row.as_object().cloned().unwrap_or_default();
            state.bc.entry(set.to_owned()).or_default().insert(id, Row { data, version: state.version });
        }
        state
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Highest number of Dataverse requests that were in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Webhook POSTs answered 2xx.
    pub fn webhooks_sent(&self) -> u64 {
        self.webhooks_sent.load(Ordering::SeqCst)
    }

    /// Webhook POSTs skipped because the webhook is suppressed.
    pub fn webhooks_suppressed(&self) -> u64 {
        self.webhooks_suppressed.load(Ordering::SeqCst)
    }

    /// The target of `changes` webhook POSTs; `None` when no url is set or the webhook is
    /// suppressed (then the skipped POSTs are counted).
    fn webhook_target(&self, changes: usize) -> Option<WebhookTarget> {
        let state = self.lock();
        let url = state.webhook_url.clone()?;
        if state.webhook_suppressed {
            self.webhooks_suppressed.fetch_add(u64::try_from(changes).unwrap_or(u64::MAX), Ordering::SeqCst);
            return None;
        }
        Some(WebhookTarget { url, headers: state.webhook_headers.clone() })
    }

    /// Applies the `webhook` control body.
    fn set_webhook(&self, value: &Value) -> Result<Value, WebhookError> {
        let suppressed = match value.get("suppressed") {
            None => None,
            Some(v) => Some(v.as_bool().ok_or(WebhookError::SuppressedNotAFlag)?),
        };
        let headers = match value.get("headers") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(map)) => {
                let mut headers = BTreeMap::new();
                for (name, v) in map {
                    let text = v.as_str().ok_or_else(|| WebhookError::HeaderNotText(name.clone()))?;
                    axum::http::HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| WebhookError::HeaderName(name.clone()))?;
                    HeaderValue::from_str(text).map_err(|_| WebhookError::HeaderValue(name.clone()))?;
                    headers.insert(name.clone(), text.to_owned());
                }
                headers
            }
            Some(other) => return Err(WebhookError::HeadersNotAnObject(other.clone())),
        };
        let mut state = self.lock();
        // `{"suppressed": …}` alone keeps url and headers; anything else sets both.
        if value.get("url").is_some() || value.get("headers").is_some() || suppressed.is_none() {
            state.webhook_url = value["url"].as_str().map(str::to_owned);
            state.webhook_headers = headers;
        }
        if let Some(suppressed) = suppressed {
            state.webhook_suppressed = suppressed;
        }
        Ok(json!({"url": state.webhook_url, "headers": state.webhook_headers, "suppressed": state.webhook_suppressed}))
    }

    pub fn set_limits(&self, limits: Limits) {
        self.lock().limits = limits;
    }

    /// Makes every issued token invalid (as if revoked), so clients see 401.
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// The tokens issued and still known (a leak check looks for them in what the gateway wrote).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// Tokens issued and still known.
    pub fn token_count(&self) -> usize {
        self.lock().tokens.len()
    }

    /// A row by set and id, as stored.
    pub fn row(&self, set: &str, id: &str) -> Option<Value> {
        self.lock().tables.get(set).and_then(|t| t.get(id)).map(|r| Value::Object(r.data.clone()))
    }

    async fn token(self: Arc<Self>, tenant: String, body: Bytes) -> Response {
        if !identity::known_tenant(&tenant) {
            return identity::unknown_tenant(&tenant);
        }
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        if field("grant_type") != "client_credentials" {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "unsupported_grant_type", "error_description": "AADSTS70003: The app requested an unsupported grant type.", "error_codes": [70003]}))).into_response();
        }
        if field("client_id") != seed::CLIENT_ID || field("client_secret") != seed::CLIENT_SECRET {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.\r\nTrace ID: {}", field("client_id"), uuid::Uuid::new_v4()),
                "error_codes": [7000215],
                "error_uri": "https://login.microsoftonline.com/error?code=7000215"
            }))).into_response();
        }
        let Some(resource) = field("scope").strip_suffix("/.default") else {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": "invalid_scope", "error_description": "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.", "error_codes": [1002012]}))).into_response();
        };
        let kind =
            if resource.trim_end_matches('/') == BC_RESOURCE { Resource::BusinessCentral } else { Resource::Dataverse };
        let token = format!("sim.{}", uuid::Uuid::new_v4().simple());
        let mut state = self.lock();
        let ttl = state.limits.token_ttl_s;
        let expires = self.clock.now() + SignedDuration::from_secs(i64::try_from(ttl).unwrap_or(i64::MAX / 2));
        state.tokens.insert(token.clone(), (kind, expires));
        axum::Json(json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": token}))
            .into_response()
    }

    fn authorized(&self, headers: &HeaderMap, want: Resource) -> bool {
        let Some(token) = header(headers, "authorization").and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let now = self.clock.now();
        self.lock().tokens.get(token).is_some_and(|(kind, expires)| *kind == want && now < *expires)
    }

    /// Service protection; `Some` is the 429 to send.
    fn protect(&self, latency_ms: u64) -> Option<Answer> {
        let now = self.clock.now();
        let mut state = self.lock();
        while state.window.front().is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW) {
            state.window.pop_front();
        }
        let limits = state.limits.clone();
        let throttled = |code: &str, message: &str| {
            let mut answer = Answer::error(429, code, message);
            answer.headers.push(("Retry-After".to_owned(), limits.retry_after_s.to_string()));
            Some(answer)
        };
        if self.in_flight.load(Ordering::SeqCst) > limits.concurrency {
            return throttled(
                super::errors::CODE_CONCURRENCY,
                &format!("Number of concurrent requests exceeded the limit of {}.", limits.concurrency),
            );
        }
        if state.window.len() >= limits.requests {
            return throttled(
                super::errors::CODE_REQUEST_COUNT,
                &format!(
                    "Number of requests exceeded the limit of {} over time window of 300 seconds.",
                    limits.requests
                ),
            );
        }
        if state.window.iter().map(|(_, ms)| ms).sum::<u64>() + latency_ms > limits.execution_ms {
            return throttled(super::errors::CODE_EXECUTION_TIME, &format!("Combined execution time of incoming requests exceeded limit of {} milliseconds over time window of 300 seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.", limits.execution_ms));
        }
        state.window.push_back((now, latency_ms));
        None
    }

    async fn dataverse(self: Arc<Self>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        if !self.authorized(&headers, Resource::Dataverse) {
            return Answer::error(
                401,
                "0x8006088a",
                "The user is not authenticated: the bearer token is missing, expired or for another resource.",
            )
            .into_response();
        }
        let current = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        self.max_in_flight.fetch_max(current, Ordering::SeqCst);
        let latency = self.lock().limits.latency_ms;
        if let Some(throttled) = self.protect(latency) {
            return throttled.into_response();
        }
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let host = header(&headers, "host").unwrap_or("127.0.0.1").to_owned();
        let rest = uri.path().strip_prefix(DATAVERSE_API_PATH).unwrap_or_default().trim_start_matches('/').to_owned();
        if rest == "$metadata" && method == Method::GET {
            let xml = [(axum::http::header::CONTENT_TYPE, "application/xml")];
            return (StatusCode::OK, xml, schema::csdl()).into_response();
        }
        if rest == "$batch" && method == Method::POST {
            // A batch counts as one request for service protection, as in Dataverse.
            return self.batch(&headers, &body, &host).await;
        }
        let mut fired = Vec::new();
        let answer =
            self.dispatch(&method, &rest, &QueryOptions::parse(uri.query()), &headers, &body, &host, &mut fired);
        self.fire(fired);
        answer.into_response()
    }

    /// `$batch` on the OData chassis: every operation through [`Self::dispatch`] (the client
    /// sends no change sets; if one comes it is all-or-nothing), webhooks fired after the batch.
    async fn batch(self: &Arc<Self>, headers: &HeaderMap, body: &[u8], host: &str) -> Response {
        let handler = DataverseBatch { sim: self, host, fired: Mutex::new(Vec::new()) };
        let answer = answer_batch(&handler, header(headers, "content-type").unwrap_or_default(), body).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(BatchFormatError::NoBoundary(_)) => {
                return Answer::error(400, "0x80048d19", "The batch request must be multipart/mixed with a boundary.")
                    .into_response()
            }
            Err(err) => return Answer::error(400, "0x80048d19", &err.to_string()).into_response(),
        };
        self.fire(handler.fired.into_inner().unwrap_or_else(PoisonError::into_inner));
        let mut resp =
            (StatusCode::OK, [(axum::http::header::CONTENT_TYPE, answer.content_type)], answer.body).into_response();
        resp.headers_mut().insert("OData-Version", HeaderValue::from_static("4.0"));
        resp
    }

    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        method: &Method,
        path: &str,
        query: &QueryOptions,
        headers: &HeaderMap,
        body: &[u8],
        host: &str,
        fired: &mut Vec<Fired>,
    ) -> Answer {
        let base = format!("{}{DATAVERSE_API_PATH}", sim::origin(host));
        if path.starts_with("EntityDefinitions") {
            return metadata(path, query, method, &base);
        }
        if let Some((set, action)) = path.split_once("/Microsoft.Dynamics.CRM.") {
            if let (Some(table), "POST") = (schema::by_set(set), method.as_str()) {
                return self.bulk(table, action, body, fired);
            }
        }
        let Some((set, id)) = split_key(path) else {
            return Answer::error(404, "0x80060888", &format!("Resource not found for the segment '{path}'."));
        };
        let Some(table) = schema::by_set(&set) else {
            return Answer::error(404, "0x80060888", &format!("Resource not found for the segment '{set}'."));
        };
        let (logical, key) = (table.logical, table.key);
        if let Err(refused) = check_query(table, query) {
            return refused;
        }
        let now = self.clock.now();
        let mut state = self.lock();
        match (method.as_str(), id) {
            ("GET", None) => self.collection(&state, &set, key, query, headers, &base),
            ("GET", Some(id)) => match state.tables.get(&set).and_then(|t| t.get(&id)) {
                Some(row) => {
                    let annotations = prefers(headers, "odata.include-annotations");
                    let mut shaped = shape(&row.data, key, etag(row.version), query.get("$select"), annotations);
                    expand_row(&state, &row.data, &mut shaped, &expansions(table, query).unwrap_or_default());
                    Answer::json(200, shaped)
                }
                None => not_found(logical, &id),
            },
            ("POST", None) => {
                let mut data = match write_body(table, body) {
                    Ok(data) => data,
                    Err(refused) => return refused,
                };
                let id = data
                    .get(key)
                    .and_then(Value::as_str)
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
                data.insert(key.to_owned(), json!(id));
                data.insert("modifiedon".to_owned(), json!(now.to_string()));
                let version = store(&mut state, &set, &id, data.clone());
                fired.push(Fired {
                    message: "Create",
                    logical,
                    id: id.clone(),
                    changed: data.clone(),
                    post: data.clone(),
                    version,
                });
                created(&base, &set, &id, key, version, &data, prefers(headers, "return=representation"))
            }
            ("PATCH", Some(id)) => {
                let changes = match write_body(table, body) {
                    Ok(changes) => changes,
                    Err(refused) => return refused,
                };
                let existing = state.tables.get(&set).and_then(|t| t.get(&id)).cloned();
                let current = existing.as_ref().map(|row| etag(row.version));
                // PATCH is an upsert: `If-None-Match: *` makes it create-only, `If-Match` update-only.
                match (if_none_match_any(headers) && existing.is_some(), if_match(headers, current.as_deref())) {
                    (true, _) => Answer::error(412, "0x80040237", "A record with matching key values already exists."),
                    (false, IfMatch::Stale) => Answer::error(
                        412,
                        super::errors::CODE_VERSION_MISMATCH,
                        "The version of the existing record doesn't match the RowVersion property provided.",
                    ),
                    (false, IfMatch::NoEntity) => not_found(logical, &id),
                    (false, IfMatch::Absent | IfMatch::Matches) => {
                        let is_new = existing.is_none();
                        let mut data = existing.map(|r| r.data).unwrap_or_default();
                        data.extend(changes.clone());
                        data.insert(key.to_owned(), json!(id));
                        data.insert("modifiedon".to_owned(), json!(now.to_string()));
                        let version = store(&mut state, &set, &id, data.clone());
                        fired.push(Fired {
                            message: if is_new { "Create" } else { "Update" },
                            logical,
                            id: id.clone(),
                            changed: changes,
                            post: data,
                            version,
                        });
                        let mut answer = Answer::empty(204);
                        answer.headers.push(("OData-EntityId".to_owned(), format!("{base}/{set}({id})")));
                        answer
                    }
                }
            }
            ("DELETE", Some(id)) => {
                if state.tables.get_mut(&set).and_then(|t| t.remove(&id)).is_none() {
                    return not_found(logical, &id);
                }
                state.version += 1;
                let version = state.version;
                state.tombstones.insert((set.clone(), id.clone()), version);
                fired.push(Fired { message: "Delete", logical, id, changed: Map::new(), post: Map::new(), version });
                Answer::empty(204)
            }
            _ => {
                Answer::error(405, "0x80060888", &format!("The HTTP method {method} is not allowed on this resource."))
            }
        }
    }

    /// The bulk actions bound to a table (`CreateMultiple`, `UpdateMultiple`, `UpsertMultiple`):
    /// `{"Targets": [...]}`, each target checked like a single write, all or nothing.
    fn bulk(&self, table: &schema::Table, action: &str, body: &[u8], fired: &mut Vec<Fired>) -> Answer {
        let Some(kind) = BulkAction::parse(action) else {
            return Answer::error(
                404,
                "0x80060888",
                &format!("Resource not found for the segment 'Microsoft.Dynamics.CRM.{action}'."),
            );
        };
        let targets = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut body)) => match body.remove("Targets") {
                Some(Value::Array(targets)) => targets,
                _ => return Answer::error(400, "0x80048d19", "Targets: a collection of entities is required."),
            },
            _ => return Answer::error(400, "0x80048d19", "The payload is not a JSON object."),
        };
        let mut rows = Vec::with_capacity(targets.len());
        for target in targets {
            let Value::Object(target) = target else {
                return Answer::error(400, "0x80048d19", "Each of Targets must be an entity object.");
            };
            // `@odata.id` (`accounts(<id>)`) names the row of an upsert or update.
            let named = match target.get("@odata.id").and_then(Value::as_str) {
                None => None,
                Some(reference) => {
                    let key = split_key(reference.rsplit('/').next().unwrap_or(reference)).and_then(|(_, id)| id);
                    // Only the primary key names a row here (no alternate keys are defined).
                    match key.filter(|id| is_guid(id)) {
                        Some(id) => Some(id),
                        None => {
                            return Answer::error(
                                400,
                                "0x80060888",
                                &format!("'{reference}' does not name a row of {} by its key.", table.set),
                            )
                        }
                    }
                }
            };
            let data = match write_fields(table, target) {
                Ok(data) => data,
                Err(refused) => return refused,
            };
            let id = data.get(table.key).and_then(Value::as_str).map(str::to_owned).or(named);
            if id.is_none() && kind == BulkAction::Update {
                return Answer::error(400, "0x80040203", &format!("{} is required for UpdateMultiple.", table.key));
            }
            rows.push((id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()), data));
        }
        let now = self.clock.now();
        let mut state = self.lock();
        if kind != BulkAction::Upsert {
            let exists = |id: &String| state.tables.get(table.set).is_some_and(|t| t.contains_key(id));
            if let Some((id, _)) = rows.iter().find(|(id, _)| exists(id) == (kind == BulkAction::Create)) {
                return match kind {
                    BulkAction::Create => {
                        Answer::error(412, "0x80040237", "A record with matching key values already exists.")
                    }
                    _ => not_found(table.logical, id),
                };
            }
        }
        let mut ids = Vec::with_capacity(rows.len());
        for (id, changes) in rows {
            let existing = state.tables.get(table.set).and_then(|t| t.get(&id)).map(|r| r.data.clone());
            let is_new = existing.is_none();
            let mut data = existing.unwrap_or_default();
            data.extend(changes.clone());
            data.insert(table.key.to_owned(), json!(id));
            data.insert("modifiedon".to_owned(), json!(now.to_string()));
            let version = store(&mut state, table.set, &id, data.clone());
            let message = if is_new { "Create" } else { "Update" };
            fired.push(Fired {
                message,
                logical: table.logical,
                id: id.clone(),
                changed: changes,
                post: data,
                version,
            });
            ids.push(id);
        }
        match kind {
            BulkAction::Create => Answer::json(
                200,
                json!({"@odata.context": "$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse", "Ids": ids}),
            ),
            BulkAction::Update | BulkAction::Upsert => Answer::empty(204),
        }
    }

    fn collection(
        &self,
        state: &State,
        set: &str,
        key: &str,
        query: &QueryOptions,
        headers: &HeaderMap,
        base: &str,
    ) -> Answer {
        let tracking = prefers(headers, "odata.track-changes") || query.contains("$deltatoken");
        if tracking {
            for option in ["$filter", "$orderby", "$expand", "$top"] {
                if query.contains(option) {
                    return Answer::error(
                        400,
                        "0x80040203",
                        &format!("The \"{option}\" query parameter isn't supported when Change Tracking is enabled."),
                    );
                }
            }
        }
        let select = query.get("$select");
        let annotations = prefers(headers, "odata.include-annotations");
        let expanded =
            schema::by_set(set).map(|table| expansions(table, query).unwrap_or_default()).unwrap_or_default();
        let empty = BTreeMap::new();
        let table = state.tables.get(set).unwrap_or(&empty);
        let page_size = max_page_size(headers).unwrap_or(5000).max(1);
        let delta_link = |version: u64| {
            let mut pairs: Vec<(String, String)> = query.without(&["$skiptoken", "$deltatoken"]);
            pairs.push(("$deltatoken".to_owned(), format!("{version}!{}", self.clock.now())));
            next_link(&format!("{base}/{set}"), &pairs, NON_ALPHANUMERIC)
        };
        if let Some(token) = query.get("$deltatoken") {
            let since: u64 = token.split('!').next().and_then(|v| v.parse().ok()).unwrap_or(0);
            // Paged like any tracked read: `$skiptoken` carries the version of the last change
            // sent and the snapshot the pages belong to; a row changed again meanwhile leaves
            // this answer and comes with the next delta.
            let cookie = query.get("$skiptoken").map(|token| {
                let attr = |name: &str| {
                    token
                        .split(&format!("{name}=\""))
                        .nth(1)
                        .and_then(|r| r.split('"').next())
                        .and_then(|v| v.parse::<u64>().ok())
                };
                (attr("after"), attr("v"))
            });
            let after = cookie.and_then(|c| c.0).unwrap_or(since);
            let snapshot = cookie.and_then(|c| c.1).unwrap_or(state.version);
            let within = |version: u64| version > after && version <= snapshot;
            let mut changes: Vec<(u64, Value)> = table
                .values()
                .filter(|r| within(r.version))
                .map(|r| (r.version, shape(&r.data, key, etag(r.version), select, annotations)))
                .collect();
            for ((s, id), version) in &state.tombstones {
                if s == set && within(*version) && !table.contains_key(id) {
                    let gone = json!({"@odata.context": format!("{base}/$metadata#{set}/$deletedEntity"), "id": id, "reason": "deleted"});
                    changes.push((*version, gone));
                }
            }
            changes.sort_by_key(|(version, _)| *version);
            let window = PageWindow::new(changes.len(), 0, page_size);
            let last = window.end.checked_sub(1).and_then(|i| changes.get(i)).map(|(version, _)| *version);
            let value: Vec<Value> = changes.drain(window.start..window.end).map(|(_, row)| row).collect();
            let mut body = json!({"@odata.context": format!("{base}/$metadata#{set}/$delta"), "value": value});
            match last.filter(|_| window.more) {
                Some(last) => {
                    let mut pairs = query.without(&["$skiptoken"]);
                    pairs.push(("$skiptoken".to_owned(), format!("<cookie after=\"{last}\" v=\"{snapshot}\" />")));
                    body["@odata.nextLink"] = json!(next_link(&format!("{base}/{set}"), &pairs, NON_ALPHANUMERIC));
                }
                None => body["@odata.deltaLink"] = json!(delta_link(snapshot)),
            }
            let mut answer = Answer::json(200, body);
            answer.headers.push(("Preference-Applied".to_owned(), "odata.track-changes".to_owned()));
            return answer;
        }
        // Keyset paging: `$skiptoken` carries the last key and, when tracking, the snapshot version,
        // so rows changed between pages are not skipped (they come with the next delta).
        let (after, snapshot) = match query.get("$skiptoken") {
            Some(token) => {
                let attr = |name: &str| {
                    token.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).map(str::to_owned)
                };
                (attr("last"), attr("v").and_then(|v| v.parse::<u64>().ok()))
            }
            None => (None, None),
        };
        let snapshot = snapshot.unwrap_or(state.version);
        let filter = match query.filter() {
            Ok(filter) => filter,
            Err(err) => return Answer::error(400, "0x80060888", &err.to_string()),
        };
        let current = table.iter().filter(|(_, row)| !tracking || row.version <= snapshot);
        let mut rows: Vec<(&String, &Row)> = filtered(current, filter.as_ref(), |(_, row)| &row.data);
        let order = query.order_by();
        if !order.is_empty() {
            // Stable: ties keep key order, as Dataverse's primary-key tiebreak does.
            rows.sort_by(|a, b| compare_rows(&a.1.data, &b.1.data, &order));
        }
        if let Some(top) = query.number("$top") {
            // `$top` bounds the whole result; pages of it still follow odata.maxpagesize.
            rows.truncate(top);
        }
        let start =
            after.as_ref().and_then(|last| rows.iter().position(|(id, _)| *id == last).map(|p| p + 1)).unwrap_or(0);
        let window = PageWindow::new(rows.len(), start, page_size);
        let page: Vec<Value> = rows[window.start..window.end]
            .iter()
            .map(|(_, r)| {
                let mut shaped = shape(&r.data, key, etag(r.version), select, annotations);
                expand_row(state, &r.data, &mut shaped, &expanded);
                shaped
            })
            .collect();
        let mut body = json!({"@odata.context": format!("{base}/$metadata#{set}"), "value": page});
        if window.more {
            let last = rows[window.end - 1].0;
            let cookie = format!(
                "<cookie pagenumber=\"{}\" last=\"{last}\" v=\"{snapshot}\" istracking=\"{}\" />",
                start / page_size + 2,
                if tracking { "True" } else { "False" }
            );
            let mut pairs = query.without(&["$skiptoken"]);
            pairs.push(("$skiptoken".to_owned(), cookie));
            body["@odata.nextLink"] = json!(next_link(&format!("{base}/{set}"), &pairs, NON_ALPHANUMERIC));
        } else if tracking {
            body["@odata.deltaLink"] = json!(delta_link(snapshot));
        }
        let mut answer = Answer::json(200, body);
        if let Some(prefer) = header(headers, "prefer") {
            answer.headers.push(("Preference-Applied".to_owned(), prefer.to_owned()));
        }
        answer
    }

    /// Sends the RemoteExecutionContext of each change, in the background.
    fn fire(self: &Arc<Self>, fired: Vec<Fired>) {
        if fired.is_empty() {
            return;
        }
        let Some(target) = self.webhook_target(fired.len()) else { return };
        for change in fired {
            let sim = self.clone();
            let target = target.clone();
            tokio::spawn(async move { sim.post_webhook(&target, &change).await });
        }
    }

    async fn post_webhook(&self, target: &WebhookTarget, change: &Fired) {
        let body = remote_execution_context(change, self.clock.now());
        let correlation = body["CorrelationId"].as_str().unwrap_or_default().to_owned();
        // Dataverse retries once, and only on 502/503/504 (reference C8).
        for attempt in 0..2 {
            let mut request = self.http.post(&target.url);
            for (name, value) in &target.headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let sent = request
                .header("x-ms-dynamics-organization", seed::ORGANIZATION)
                .header("x-ms-dynamics-entity-name", change.logical)
                .header("x-ms-dynamics-request-name", change.message)
                .header("x-ms-correlation-request-id", &correlation)
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(resp) if resp.status().is_success() => {
                    self.webhooks_sent.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(resp) if attempt == 0 && matches!(resp.status().as_u16(), 502..=504) => continue,
                Ok(resp) => {
                    tracing::info!(status = resp.status().as_u16(), "Simulated Dataverse webhook was refused.");
                    return;
                }
                Err(err) => {
                    tracing::info!(error = %err, "Simulated Dataverse webhook could not be delivered.");
                    return;
                }
            }
        }
    }

    async fn business_central(
        self: Arc<Self>,
        Path((_tenant, _env, rest)): Path<(String, String, String)>,
        method: Method,
        uri: Uri,
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
        let now = self.clock.now();
        let host = header(&headers, "host").unwrap_or("127.0.0.1").to_owned();
        let base = format!(
            "{}{}",
            sim::origin(&host),
            uri.path().strip_suffix(&rest).unwrap_or_default().trim_end_matches('/')
        );
        let query = QueryOptions::parse(uri.query());
        let mut state = self.lock();
        while state.bc_window.front().is_some_and(|at| now.duration_since(*at) >= WINDOW) {
            state.bc_window.pop_front();
        }
        if state.bc_window.len() >= state.limits.bc_requests {
            let mut answer = Answer::error(
                429,
                super::errors::BC_TOO_MANY_REQUESTS,
                &format!(
                    "Too many requests reached. Actual ({}). Maximum ({}).  CorrelationId:  {}.",
                    state.bc_window.len() + 1,
                    state.limits.bc_requests,
                    uuid::Uuid::new_v4()
                ),
            );
            answer.headers.push(("Retry-After".to_owned(), state.limits.retry_after_s.to_string()));
            return answer.into_response();
        }
        state.bc_window.push_back(now);
        if rest == "companies" {
            return Answer::json(200, json!({"value": [{"id": seed::COMPANY_ID, "systemVersion": "23.5", "name": "HK Trading Ltd", "displayName": "HK Trading Ltd"}]})).into_response();
        }
        let Some(inner) = rest.strip_prefix(&format!("companies({})/", seed::COMPANY_ID)) else {
            return Answer::error(404, "Internal_CompanyNotFound", "The company does not exist.").into_response();
        };
        let Some((set, id)) = split_key(inner) else {
            return Answer::error(
                404,
                "BadRequest_NotFound",
                &format!("No HTTP resource was found that matches the request URI '{inner}'."),
            )
            .into_response();
        };
        let Some(table) = state.bc.get(&set) else {
            return Answer::error(
                404,
                "BadRequest_NotFound",
                &format!("No HTTP resource was found that matches the request URI '{set}'."),
            )
            .into_response();
        };
        let expand = query.list("$expand").contains(&"purchaseOrderLines");
        let show = |row: &Row| {
            let mut data = row.data.clone();
            if !expand {
                data.remove("purchaseOrderLines");
            }
            data.insert("@odata.etag".to_owned(), json!(bc_etag(row.version)));
            Value::Object(data)
        };
        match (method.as_str(), id) {
            ("GET", None) => {
                let filter = match query.filter() {
                    Ok(filter) => filter,
                    Err(err) => {
                        return Answer::error(400, "BadRequest_InvalidFilter", &err.to_string()).into_response()
                    }
                };
                let rows: Vec<&Row> = filtered(table.values(), filter.as_ref(), |row| &row.data);
                // Keyset paging: `$skiptoken` is the id of the last row of the previous page.
                let start = query
                    .get("$skiptoken")
                    .and_then(|t| rows.iter().position(|r| r.data["id"] == json!(t)).map(|p| p + 1))
                    .unwrap_or(0);
                let window = PageWindow::new(rows.len(), start, state.limits.bc_page_size.max(1));
                let page: Vec<Value> = rows[window.start..window.end].iter().map(|r| show(r)).collect();
                let mut body = json!({"@odata.context": format!("{base}/$metadata#companies({})/{set}", seed::COMPANY_ID), "value": page});
                if window.more {
                    let last = rows[window.end - 1].data["id"].as_str().unwrap_or_default();
                    let mut pairs = query.without(&["$skiptoken"]);
                    pairs.push(("$skiptoken".to_owned(), last.to_owned()));
                    body["@odata.nextLink"] = json!(next_link(&format!("{base}/{rest}"), &pairs, NON_ALPHANUMERIC));
                }
                Answer::json(200, body).into_response()
            }
            ("GET", Some(id)) => match table.get(&id) {
                Some(row) => Answer::json(200, show(row)).into_response(),
                None => Answer::error(
                    404,
                    "Internal_RecordNotFound",
                    &format!(
                        "The {set} does not exist. Identification fields and values: Id='{id}'  CorrelationId:  {}.",
                        uuid::Uuid::new_v4()
                    ),
                )
                .into_response(),
            },
            ("PATCH", Some(id)) => {
                if if_match(&headers, None) == IfMatch::Absent {
                    // UNVERIFIED: the exact code BC sends for a PATCH without If-Match.
                    return Answer::error(
                        400,
                        "BadRequest_MissingIfMatch",
                        "The If-Match header is required for PATCH.",
                    )
                    .into_response();
                }
                let Some(row) = table.get(&id).cloned() else {
                    return Answer::error(404, "Internal_RecordNotFound", "The record does not exist.").into_response();
                };
                if if_match(&headers, Some(&bc_etag(row.version))) == IfMatch::Stale {
                    // UNVERIFIED: BC's exact 412 code/message.
                    return Answer::error(412, "Request_EntityChanged", "Another user has already changed the record.")
                        .into_response();
                }
                let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(&body) else {
                    return Answer::error(
                        400,
                        "BadRequest_InvalidRequestBody",
                        "The request body is not a JSON object.",
                    )
                    .into_response();
                };
                state.version += 1;
                let version = state.version;
                let mut data = row.data;
                data.extend(changes);
                data.insert("lastModifiedDateTime".to_owned(), json!(now.to_string()));
                let stored = Row { data, version };
                let shown = show(&stored);
                state.bc.entry(set).or_default().insert(id, stored);
                Answer::json(200, shown).into_response()
            }
            _ => Answer::error(
                405,
                "BadRequest_MethodNotAllowed",
                &format!("'{method}' is not allowed on this resource."),
            )
            .into_response(),
        }
    }
}

/// A bulk action bound to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkAction {
    Create,
    Update,
    Upsert,
}

impl BulkAction {
    fn parse(action: &str) -> Option<Self> {
        match action {
            "CreateMultiple" => Some(Self::Create),
            "UpdateMultiple" => Some(Self::Update),
            "UpsertMultiple" => Some(Self::Upsert),
            _ => None,
        }
    }
}

/// `Could not find a property named 'x' on type 'Microsoft.Dynamics.CRM.account'.`: what
/// Dataverse answers a query option naming a column the table does not have.
fn no_such_property(table: &schema::Table, name: &str) -> Answer {
    Answer::error(
        400,
        "0x80060888",
        &format!("Could not find a property named '{name}' on type '{}'.", table.type_name()),
    )
}

/// `$select`, `$orderby` and `$filter` may only name the table's properties.
fn check_query(table: &schema::Table, query: &QueryOptions) -> Result<(), Answer> {
    let selected = query.get("$select").into_iter().flat_map(|s| s.split(',')).map(str::trim);
    let ordered = query.order_by().into_iter().map(|key| key.field);
    for name in selected.map(str::to_owned).chain(ordered) {
        if !table.has_property(&name) {
            return Err(no_such_property(table, &name));
        }
    }
    expansions(table, query)?;
    let filter = query.filter().map_err(|err| Answer::error(400, "0x80060888", &err.to_string()))?;
    if let Some(filter) = filter {
        if let Some(name) = filter.fields().into_iter().find(|name| !table.has_property(name)) {
            return Err(no_such_property(table, name));
        }
    }
    Ok(())
}

/// One single-valued navigation of `$expand`: `customerid_account($select=name)`.
struct Expansion {
    navigation: &'static str,
    column: &'static str,
    target: &'static schema::Table,
    select: Option<String>,
}

/// `$expand`'s items, split at the commas outside parentheses, each naming a lookup's
/// navigation property of the table (with an optional nested `$select` of the target's columns).
fn expansions(table: &schema::Table, query: &QueryOptions) -> Result<Vec<Expansion>, Answer> {
    let Some(expand) = query.get("$expand") else { return Ok(Vec::new()) };
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in expand.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&expand[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&expand[start..]);
    let mut out = Vec::new();
    for item in items.into_iter().map(str::trim) {
        let (name, options) = match item.split_once('(') {
            Some((name, rest)) => (name, Some(rest.strip_suffix(')').unwrap_or(rest))),
            None => (item, None),
        };
        let found = table.columns.iter().find_map(|c| match c.kind {
            schema::Kind::Lookup(navs) => navs.iter().find(|n| n.name == name).map(|n| (n.name, c.name, n.target_set)),
            _ => None,
        });
        let Some((navigation, column, target)) = found else { return Err(no_such_property(table, name)) };
        let Some(target) = schema::by_set(target) else {
            // A table the simulator does not serve (contacts, systemusers): nothing to expand into.
            return Err(no_such_property(table, name));
        };
        let select = match options {
            None => None,
            Some(options) => match options.strip_prefix("$select=") {
                Some(select) => {
                    if let Some(bad) = select.split(',').map(str::trim).find(|c| !target.has_property(c)) {
                        return Err(no_such_property(target, bad));
                    }
                    Some(select.to_owned())
                }
                None => {
                    return Err(Answer::error(
                        400,
                        "0x80060888",
                        &format!("The query option '{options}' is not supported inside $expand by this service."),
                    ))
                }
            },
        };
        out.push(Expansion { navigation, column, target, select });
    }
    Ok(out)
}

/// Adds the expanded navigations to a shaped row: the target row (its own `$select`) or null.
fn expand_row(state: &State, row: &Map<String, Value>, shaped: &mut Value, expansions: &[Expansion]) {
    for expansion in expansions {
        let target_id = row.get(&format!("_{}_value", expansion.column)).and_then(Value::as_str);
        let target = target_id.and_then(|id| state.tables.get(expansion.target.set).and_then(|t| t.get(id)));
        shaped[expansion.navigation] = match target {
            Some(found) => {
                shape(&found.data, expansion.target.key, etag(found.version), expansion.select.as_deref(), false)
            }
            None => Value::Null,
        };
    }
}

/// The columns a create or update body sets, refused as Dataverse refuses a property the type
/// does not declare, a lookup written directly, or a bind to the wrong table. A bind
/// (`customerid_account@odata.bind: "/accounts(<id>)"`) is stored as the lookup's
/// `_<column>_value`, as Dataverse reads it back.
fn write_body(table: &schema::Table, body: &[u8]) -> Result<Map<String, Value>, Answer> {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
        return Err(payload_error(table, "The payload is not a JSON object."));
    };
    write_fields(table, body)
}

/// [`write_body`] of a body already parsed (each target of a `CreateMultiple`).
/// Dataverse's answer to a payload it cannot read as the entity type.
fn payload_error(table: &schema::Table, detail: &str) -> Answer {
    Answer::error(
        400,
        "0x80048d19",
        &format!(
            "Error identified in Payload provided by the user for Entity :'{}', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ---->  InnerException : Microsoft.OData.ODataException: {detail}",
            table.set
        ),
    )
}

fn is_guid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok()
}

fn write_fields(table: &schema::Table, body: Map<String, Value>) -> Result<Map<String, Value>, Answer> {
    let mut data = Map::new();
    for (name, value) in body {
        if name.starts_with('@') {
            continue; // instance annotations (`@odata.type`)
        }
        match table.writable(&name) {
            Some(schema::Write::Property(column)) => {
                if table.is_guid(column) && !value.as_str().is_some_and(is_guid) {
                    return Err(payload_error(
                        table,
                        &format!("Cannot convert the literal '{value}' to the expected type 'Edm.Guid'."),
                    ));
                }
                data.insert(column.to_owned(), value);
            }
            Some(schema::Write::Bind { column, target }) => {
                let bound = value.as_str().unwrap_or_default();
                let id = bound
                    .rsplit_once(&format!("{target}("))
                    .and_then(|(_, rest)| rest.strip_suffix(')'))
                    .map(|id| id.trim_matches('\''));
                let Some(id) = id.filter(|id| is_guid(id)) else {
                    return Err(Answer::error(
                        400,
                        "0x80060891",
                        &format!("A reference to '{bound}' is not a URL of the entity set '{target}'."),
                    ));
                };
                data.insert(format!("_{column}_value"), json!(id));
                let logical = schema::by_set(target).map_or(target.trim_end_matches('s'), |t| t.logical);
                data.insert(format!("_{column}_value@Microsoft.Dynamics.CRM.lookuplogicalname"), json!(logical));
            }
            None if table.has_property(&name) => {
                return Err(Answer::error(
                    400,
                    "0x80060888",
                    "CRM do not support direct update of Entity Reference properties, Use Navigation properties instead.",
                ));
            }
            None if name.ends_with("@odata.bind") => {
                let navigation = name.trim_end_matches("@odata.bind");
                return Err(payload_error(table, &format!("An undeclared property '{navigation}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values.")));
            }
            None => {
                return Err(payload_error(
                    table,
                    &format!(
                    "The property '{name}' does not exist on type '{}'. Make sure to only use property names that are defined by the type or mark the type as open type.",
                    table.type_name()
                )));
            }
        }
    }
    Ok(data)
}

/// `EntityDefinitions…`: the tables' metadata, read-only (creating tables or columns is an
/// administrator's action the simulator does not offer: 405).
fn metadata(path: &str, query: &QueryOptions, method: &Method, base: &str) -> Answer {
    if method != Method::GET {
        return Answer::error(405, "0x80060888", &format!("The HTTP method {method} is not allowed on this resource."));
    }
    let parsed = match schema::metadata_path(path) {
        Ok(parsed) => parsed,
        Err(err @ schema::MetadataPathError::Segment(_)) => return Answer::error(404, "0x80060888", &err.to_string()),
        Err(err) => return Answer::error(404, super::errors::CODE_NOT_FOUND, &err.to_string()),
    };
    let filter = match query.filter() {
        Ok(filter) => filter,
        Err(err) => return Answer::error(400, "0x80060888", &err.to_string()),
    };
    let select: Option<Vec<&str>> = query.get("$select").map(|s| s.split(',').map(str::trim).collect());
    let project = |mut entry: Map<String, Value>| {
        if let Some(wanted) = &select {
            entry.retain(|k, _| {
                k.starts_with('@') || k == "MetadataId" || k == "OptionSet" || wanted.contains(&k.as_str())
            });
        }
        Value::Object(entry)
    };
    let expand_options = query.get("$expand").is_some_and(|e| e.starts_with("OptionSet"));
    let keep = |entry: &Map<String, Value>| filter.as_ref().is_none_or(|f| f.matches(entry));
    let context = format!("{base}/$metadata#EntityDefinitions");
    match parsed {
        schema::MetadataPath::Tables => {
            let value: Vec<Value> =
                schema::TABLES.iter().map(schema::Table::definition).filter(keep).map(project).collect();
            Answer::json(200, json!({"@odata.context": context, "value": value}))
        }
        schema::MetadataPath::Table(table) => {
            let mut entry = project(table.definition());
            entry["@odata.context"] = json!(format!("{context}/$entity"));
            Answer::json(200, entry)
        }
        schema::MetadataPath::Attributes(table, cast) => {
            let value: Vec<Value> = table
                .columns
                .iter()
                .filter(|c| cast.is_none_or(|cast| c.kind.metadata_type() == cast))
                .map(|c| schema::attribute_entry(table, c, expand_options))
                .filter(keep)
                .map(project)
                .collect();
            Answer::json(
                200,
                json!({"@odata.context": format!("{context}({})/Attributes", table.metadata_id), "value": value}),
            )
        }
        schema::MetadataPath::Attribute(table, column) => {
            Answer::json(200, project(schema::attribute_entry(table, column, expand_options)))
        }
        schema::MetadataPath::Keys(table) => {
            Answer::json(200, json!({"@odata.context": format!("{context}({})/Keys", table.metadata_id), "value": []}))
        }
    }
}

fn not_found(logical: &str, id: &str) -> Answer {
    Answer::error(404, super::errors::CODE_NOT_FOUND, &format!("Entity '{logical}' With Id = {id} Does Not Exist"))
}

fn store(state: &mut State, set: &str, id: &str, data: Map<String, Value>) -> u64 {
    state.version += 1;
    let version = state.version;
    state.tombstones.remove(&(set.to_owned(), id.to_owned()));
    state.tables.entry(set.to_owned()).or_default().insert(id.to_owned(), Row { data, version });
    version
}

fn created(
    base: &str,
    set: &str,
    id: &str,
    key: &str,
    version: u64,
    data: &Map<String, Value>,
    representation: bool,
) -> Answer {
    let mut answer = if representation {
        Answer::json(201, shape(data, key, etag(version), None, false))
    } else {
        Answer::empty(204)
    };
    answer.headers.push(("OData-EntityId".to_owned(), format!("{base}/{set}({id})")));
    answer
}

/// WCF date form `\/Date(ms)\/` (serde writes `/Date(ms)/`; both decode the same).
fn wcf_date(at: Timestamp) -> String {
    format!("/Date({})/", at.as_millisecond())
}

fn attributes(map: &Map<String, Value>) -> Vec<Value> {
    map.iter()
        .filter(|(k, _)| !k.contains('@'))
        .map(|(k, v)| {
            let value = match (k.as_str(), v) {
                ("statuscode" | "statecode", Value::Number(_)) => {
                    json!({"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v})
                }
                ("totalamount" | "estimatedvalue", Value::Number(_)) => {
                    json!({"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v})
                }
                ("modifiedon", Value::String(s)) => {
                    s.parse::<Timestamp>().map_or_else(|_| v.clone(), |t| json!(wcf_date(t)))
                }
                _ => v.clone(),
            };
            json!({"key": k, "value": value})
        })
        .collect()
}

fn remote_execution_context(change: &Fired, now: Timestamp) -> Value {
    let entity = |attrs: &Map<String, Value>, with_type: bool| {
        let mut e = json!({"Attributes": attributes(attrs), "EntityState": null, "FormattedValues": [], "Id": change.id, "KeyAttributes": [], "LogicalName": change.logical, "RelatedEntities": [], "RowVersion": change.version.to_string()});
        if with_type {
            e["__type"] = json!("Entity:http://schemas.microsoft.com/xrm/2011/Contracts");
        }
        e
    };
    let target = if change.message == "Delete" {
        json!({"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": change.id, "KeyAttributes": [], "LogicalName": change.logical, "Name": null, "RowVersion": null})
    } else {
        entity(&change.changed, true)
    };
    let post = if change.message == "Delete" {
        json!([])
    } else {
        json!([{"key": "PostImage", "value": entity(&change.post, false)}])
    };
    json!({
        "BusinessUnitId": "e2b9dd85-e89e-e711-8122-000d3aa2331c",
        "CorrelationId": uuid::Uuid::new_v4().to_string(),
        "Depth": 1,
        "InitiatingUserId": "75c2dd85-e89e-e711-8122-000d3aa2331c",
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": false, "IsInTransaction": false, "IsOfflinePlayback": false, "IsolationMode": 1,
        "MessageName": change.message,
        "Mode": 1,
        "OperationCreatedOn": format!("/Date({}+0000)/", now.as_millisecond()),
        "OperationId": uuid::Uuid::new_v4().to_string(),
        "OrganizationId": "4ef5b371-e89e-e711-8122-000d3aa2331c",
        "OrganizationName": "dingbridge-demo",
        "OutputParameters": [],
        "OwningExtension": {"Id": "75417616-4ea2-e711-8122-000d3aa2331e", "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep", "Name": format!("dingbridge: {} {}", change.logical, change.message), "RowVersion": null},
        "ParentContext": null,
        "PostEntityImages": post,
        "PreEntityImages": [],
        "PrimaryEntityId": change.id,
        "PrimaryEntityName": change.logical,
        "RequestId": uuid::Uuid::new_v4().to_string(),
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 40,
        "UserId": "75c2dd85-e89e-e711-8122-000d3aa2331c"
    })
}

#[async_trait::async_trait]
impl Simulator for DynamicsSim {
    fn name(&self) -> &'static str {
        "dynamics"
    }

    fn router(self: Arc<Self>) -> Router {
        let token_sim = self.clone();
        let dv_sim = self.clone();
        let bc_sim = self.clone();
        let approvals_sim = self.clone();
        Router::new()
            .route(
                "/common/discovery/instance",
                get(|headers: HeaderMap| async move { identity::instance_discovery(&headers) }),
            )
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(|Path(tenant): Path<String>, headers: HeaderMap| async move {
                    identity::openid_configuration(&tenant, &headers)
                }),
            )
            .route(
                "/{tenant}/oauth2/v2.0/token",
                post(move |Path(tenant): Path<String>, body: Bytes| token_sim.clone().token(tenant, body)),
            )
            .route(
                &format!("{DATAVERSE_API_PATH}/{{*rest}}"),
                any(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    dv_sim.clone().dataverse(method, uri, headers, body)
                }),
            )
            .route(
                "/v2.0/{tenant}/{env}/api/v2.0/{*rest}",
                any(
                    move |path: Path<(String, String, String)>,
                          method: Method,
                          uri: Uri,
                          headers: HeaderMap,
                          body: Bytes| {
                        bc_sim.clone().business_central(path, method, uri, headers, body)
                    },
                ),
            )
            .route(
                &format!("/v2.0/{{tenant}}/{{env}}/api/{APPROVALS_API}/{{*rest}}"),
                any(
                    move |path: Path<(String, String, String)>,
                          method: Method,
                          uri: Uri,
                          headers: HeaderMap,
                          body: Bytes| {
                        approvals_sim.clone().approvals(path, method, uri, headers, body)
                    },
                ),
            )
    }

    fn info(&self) -> Value {
        let state = self.lock();
        json!({
            "tenant_id": seed::TENANT_ID,
            "client_id": seed::CLIENT_ID,
            "client_secret": seed::CLIENT_SECRET,
            "dataverse_resource": "the simulator's own base URL (any scope other than Business Central's)",
            "bc_resource": BC_RESOURCE,
            "bc_environment": seed::ENVIRONMENT,
            "bc_company_id": seed::COMPANY_ID,
            "limits": state.limits,
            "webhook_url": state.webhook_url,
            "webhook_headers": state.webhook_headers,
            "webhook_suppressed": state.webhook_suppressed,
            "webhooks_sent": self.webhooks_sent.load(Ordering::SeqCst),
            "webhooks_suppressed": self.webhooks_suppressed.load(Ordering::SeqCst),
        })
    }

    fn reset(&self) {
        let mut state = self.lock();
        *state = Self::seeded(Limits::default());
        self.max_in_flight.store(0, Ordering::SeqCst);
        self.webhooks_sent.store(0, Ordering::SeqCst);
        self.webhooks_suppressed.store(0, Ordering::SeqCst);
    }

    async fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        let invalid = |detail: &str| SimError::InvalidRecord { entity: entity.to_owned(), detail: detail.to_owned() };
        match entity {
            "webhook" => return self.set_webhook(&value).map_err(|e| invalid(&e.to_string())),
            "limits" => {
                let limits: Limits = serde_json::from_value(value.clone()).map_err(|e| invalid(&e.to_string()))?;
                self.set_limits(limits);
                return Ok(value);
            }
            _ => {}
        }
        let Value::Object(mut data) = value else { return Err(invalid("expected a JSON object")) };
        if seed::BC_SETS.contains(&entity) {
            let id =
                data.get("id").and_then(Value::as_str).map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
            data.insert("id".to_owned(), json!(id));
            data.insert("lastModifiedDateTime".to_owned(), json!(self.clock.now().to_string()));
            let mut state = self.lock();
            state.version += 1;
            let version = state.version;
            let table = state.bc.entry(entity.to_owned()).or_default();
            let mut merged = table.get(&id).map(|r| r.data.clone()).unwrap_or_default();
            merged.extend(data);
            table.insert(id, Row { data: merged.clone(), version });
            return Ok(Value::Object(merged));
        }
        let Some(&schema::Table { logical, key, .. }) = schema::by_set(entity) else {
            let mut known: Vec<&str> =
                schema::TABLES.iter().map(|t| t.set).chain(seed::BC_SETS.iter().copied()).collect();
            known.extend(["webhook", "limits"]);
            return Err(SimError::UnknownEntity {
                simulator: "dynamics",
                entity: entity.to_owned(),
                known: known.join(", "),
            });
        };
        let delete = data.remove("@delete").and_then(|v| v.as_bool()).unwrap_or(false);
        // An explicit change time is kept (staleness tests); otherwise the upsert is "now".
        let modified = match data.get("modifiedon") {
            Some(Value::String(text)) => {
                text.parse::<Timestamp>().map_err(|e| {
                    invalid(&format!("modifiedon {text:?} is not an RFC 3339 instant like 2024-03-15T02:31:07Z ({e})"))
                })?;
                text.clone()
            }
            Some(other) => return Err(invalid(&format!("modifiedon must be a string, not {other}"))),
            None => self.clock.now().to_string(),
        };
        let id = data.get(key).and_then(Value::as_str).map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let fired = {
            let mut state = self.lock();
            if delete {
                if state.tables.get_mut(entity).and_then(|t| t.remove(&id)).is_none() {
                    return Err(invalid(&format!("no {entity} row {id} to delete")));
                }
                state.version += 1;
                let version = state.version;
                state.tombstones.insert((entity.to_owned(), id.clone()), version);
                Fired { message: "Delete", logical, id: id.clone(), changed: Map::new(), post: Map::new(), version }
            } else {
                let existing = state.tables.get(entity).and_then(|t| t.get(&id)).map(|r| r.data.clone());
                let is_new = existing.is_none();
                let mut merged = existing.unwrap_or_default();
                merged.extend(data.clone());
                merged.insert(key.to_owned(), json!(id));
                merged.insert("modifiedon".to_owned(), json!(modified));
                let version = store(&mut state, entity, &id, merged.clone());
                Fired {
                    message: if is_new { "Create" } else { "Update" },
                    logical,
                    id: id.clone(),
                    changed: data,
                    post: merged,
                    version,
                }
            }
        };
        if let Some(target) = self.webhook_target(1) {
            self.post_webhook(&target, &fired).await;
        }
        Ok(self.row(entity, &id).unwrap_or_else(|| json!({key: id, "@deleted": true})))
    }
}

/// One `$batch` request of the Dataverse simulator: operations run through
/// [`DynamicsSim::dispatch`]; the changes they make fire their webhooks after the batch.
struct DataverseBatch<'a> {
    sim: &'a DynamicsSim,
    host: &'a str,
    fired: Mutex<Vec<Fired>>,
}

#[async_trait::async_trait]
impl BatchHandler for DataverseBatch<'_> {
    /// Rows, tombstones and version before the change set, and how many changes had fired.
    type Savepoint = (BTreeMap<String, BTreeMap<String, Row>>, BTreeMap<(String, String), u64>, u64, usize);

    async fn answer(&self, operation: &BatchOperation, _in_changeset: bool) -> BatchResponse {
        let target = operation.target.split(&format!("{DATAVERSE_API_PATH}/")).last().unwrap_or(&operation.target);
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = QueryOptions::parse(Some(query));
        let mut fired = Vec::new();
        let answer = self.sim.dispatch(
            &operation.method,
            path,
            &query,
            &request_headers(operation),
            &request_body(operation),
            self.host,
            &mut fired,
        );
        self.fired.lock().unwrap_or_else(PoisonError::into_inner).append(&mut fired);
        let mut headers = answer.headers;
        let body = match answer.body {
            Some(body) => {
                headers.push(("Content-Type".to_owned(), "application/json; odata.metadata=minimal".to_owned()));
                body.to_string()
            }
            None => String::new(),
        };
        BatchResponse { status: answer.status, headers, body }
    }

    fn savepoint(&self) -> Self::Savepoint {
        let state = self.sim.lock();
        let fired = self.fired.lock().unwrap_or_else(PoisonError::into_inner).len();
        (state.tables.clone(), state.tombstones.clone(), state.version, fired)
    }

    fn rollback(&self, (tables, tombstones, version, fired): Self::Savepoint) {
        let mut state = self.sim.lock();
        state.tables = tables;
        state.tombstones = tombstones;
        state.version = version;
        self.fired.lock().unwrap_or_else(PoisonError::into_inner).truncate(fired);
    }
}

#[cfg(test)]
mod s5_tests;
#[cfg(test)]
mod schema_tests;
