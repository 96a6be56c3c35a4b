//! The Zoho CRM simulator (reference B8): one org on one port with the accounts server's token
//! endpoint (refresh grant, `invalid_code`/`invalid_client` with HTTP 200, throttle after 10
//! refreshes in 10 min, revoke), `/crm/{version}/` records (paging, `page_token` past 2,000,
//! 204 when empty, `If-Modified-Since` → 304), related lists (`Notes`, `Calls`/`Tasks`/`Events`,
//! open and closed activities `Activities_Chronological_View[_History]` tagged `$module`,
//! `Contact_Roles`), COQL (a `winnow` grammar, see `coql`), insert/update/upsert/
//! delete (100-record cap, per-record results, 207, `If-Unmodified-Since` → 412; also
//! `PUT`/`DELETE /{Module}/{id}`; an unknown field is a per-record `INVALID_DATA`), the metadata
//! the official SDKs read first (`users?type=CurrentUser`, `org`, `settings/modules`,
//! `settings/fields?module=`, `settings/related_lists?module=`, see `metadata`), `{Module}/search` (a `winnow` criteria grammar,
//! see `search`) and `{Module}/actions/count`,
//! `__composite_requests`, notification channels that really call back, API credits with
//! `X-API-CREDITS-REMAINING` past half, and enforced concurrency (org limit, heavy sub-limit 10,
//! composite = 5 units) answering 429.
//!
//! Records (`POST /_sim/records/{entity}`): a module name (`Deals`, `Accounts`, `Contacts`,
//! `Notes`, `Calls`, `Tasks`, `Events`) creates or merges a record by `id` and notifies the
//! enabled channels; `Contact_Roles` (`{"deal_id", "contact_id", "role"}`) puts a contact on a
//! deal in a role; `limits` sets `{daily_credits, concurrency, delay_ms}`; `tokens` with
//! `{"expire_all": true}` kills every issued access token.

mod coql;
mod metadata;
mod notifications;
mod search;
mod seed;
mod writes;

use seed::seed_data;
use writes::WriteKind;

use connect::{Clock, SystemClock};
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use sim::{SimError, Simulator};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;

pub const SIM_CLIENT_ID: &str = "1000.SIMZOHOHKTRADING0001";
pub const SIM_CLIENT_SECRET: &str = "sim-zoho-client-secret-0001";
pub const SIM_REFRESH_TOKEN: &str = "1000.simrefresh.hktrading0001";
pub const DEFAULT_DAILY_CREDITS: u64 = 70_000;
/// Enterprise edition.
pub const DEFAULT_CONCURRENCY: usize = 20;
const TOKEN_LIFETIME_S: i64 = 3600;
const HEAVY_CONCURRENCY: usize = 10;
const ORG_PREFIX: &str = "5843104000";
const MODULES: [&str; 7] = ["Deals", "Accounts", "Contacts", "Notes", "Calls", "Tasks", "Events"];
const DEAL_STAGES: [&str; 6] =
    ["Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost"];

#[derive(Debug)]
struct Data {
    records: BTreeMap<String, Vec<Value>>,
    /// Deleted records per module, as `/{Module}/deleted` lists them.
    deleted: BTreeMap<String, Vec<Value>>,
    /// Contacts on deals: `{"deal", "contact", "role": {name, id}}`.
    contact_roles: Vec<Value>,
    tokens: HashMap<String, Timestamp>,
    refreshes: Vec<Timestamp>,
    channels: Vec<(Value, Timestamp)>,
    page_tokens: HashMap<String, (String, usize)>,
    daily_credits: u64,
    credits_used: u64,
    concurrency: usize,
    delay_ms: u64,
    next_id: u64,
}

/// The Zoho CRM simulator.
pub struct ZohoSim {
    clock: Arc<dyn Clock>,
    data: Mutex<Data>,
    in_flight: AtomicUsize,
    heavy_in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: AtomicU64,
    callbacks: reqwest::Client,
}

impl std::fmt::Debug for ZohoSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZohoSim").finish_non_exhaustive()
    }
}

fn reply(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

fn error(status: u16, code: &str, message: &str, details: Value) -> Response {
    reply(status, json!({"code": code, "details": details, "message": message, "status": "error"}))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn item_error(code: &str, message: &str, details: Value) -> Value {
    json!({"code": code, "details": details, "message": message, "status": "error"})
}

/// Zoho refuses `…Z` and fractions on datetime input.
fn bad_datetime(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() >= 19 && s.as_bytes().get(10) == Some(&b'T') && (s.ends_with('Z') || s.contains('.')))
}

/// Concurrency units held by one call; released when the call is answered.
/// The conditional headers of a request.
#[derive(Debug, Clone, Copy, Default)]
struct Conditions {
    /// `If-Modified-Since` (lists).
    since: Option<Timestamp>,
    /// `If-Unmodified-Since` (updates).
    unmodified_since: Option<Timestamp>,
}

/// Whether an activity is done: closed, completed, or a call that took place.
fn is_closed(row: &Value) -> bool {
    !row["Closed_Time"].is_null() || row["Status"] == "Completed" || row["Outbound_Call_Status"] == "Completed"
}

/// Whether `row` changed after `since` (for `If-Unmodified-Since`).
fn modified_after(row: &Value, since: Option<Timestamp>) -> bool {
    let modified = row["Modified_Time"].as_str().and_then(|t| t.parse::<Timestamp>().ok());
    matches!((modified, since), (Some(m), Some(s)) if m > s)
}

struct InFlight<'a>(&'a AtomicUsize, usize);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

impl Default for ZohoSim {
    fn default() -> Self {
        Self::new()
    }
}

impl ZohoSim {
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            data: Mutex::new(seed_data()),
            in_flight: AtomicUsize::new(0),
            heavy_in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            callbacks: reqwest::Client::new(),
        }
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// API calls received under `/crm/` (rejected ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn credits_used(&self) -> u64 {
        self.data().credits_used
    }

    /// The most API calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn set_limits(&self, daily_credits: u64, concurrency: usize, delay: Duration) {
        let mut d = self.data();
        d.daily_credits = daily_credits;
        d.concurrency = concurrency;
        d.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    }

    /// Every issued access token becomes invalid (the next call gets 401 INVALID_TOKEN).
    pub fn expire_tokens(&self) {
        self.data().tokens.clear();
    }

    pub fn refresh_count(&self) -> usize {
        self.data().refreshes.len()
    }

    /// A stored record (tests).
    pub fn record(&self, module: &str, id: &str) -> Option<Value> {
        self.data().records.get(module)?.iter().find(|r| r["id"] == id).cloned()
    }

    async fn token(self: Arc<Self>, headers: HeaderMap, uri: Uri, body: Bytes) -> Response {
        let mut form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
        if let Some(q) = uri.query() {
            form.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let now = self.clock.now();
        let mut d = self.data();
        let window_start = now.saturating_sub(SignedDuration::from_mins(10)).unwrap_or(now);
        d.refreshes.retain(|t| *t > window_start);
        if d.refreshes.len() >= 10 {
            return reply(
                400,
                json!({"error_description": "You have made too many requests continuously. Please try again after some time.", "error": "Access Denied", "status": "failure"}),
            );
        }
        if get("client_id") != SIM_CLIENT_ID || get("client_secret") != SIM_CLIENT_SECRET {
            return reply(200, json!({"error": "invalid_client"}));
        }
        // Zoho answers a bad grant with HTTP 200 and an `error` key.
        if get("grant_type") != "refresh_token" || get("refresh_token") != SIM_REFRESH_TOKEN {
            return reply(200, json!({"error": "invalid_code"}));
        }
        d.refreshes.push(now);
        d.next_id += 1;
        let token = format!("1000.simaccess{}.{}", d.next_id, uuid::Uuid::new_v4().simple());
        let expiry = now.saturating_add(SignedDuration::from_secs(TOKEN_LIFETIME_S)).unwrap_or(now);
        d.tokens.insert(token.clone(), expiry);
        let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
        reply(
            200,
            json!({"access_token": token, "scope": "ZohoCRM.modules.ALL ZohoCRM.coql.READ ZohoCRM.notifications.ALL",
                   "api_domain": sim::origin(host), "token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S}),
        )
    }

    async fn api(
        self: Arc<Self>,
        method: Method,
        path: Vec<String>,
        headers: HeaderMap,
        uri: Uri,
        body: Bytes,
    ) -> Response {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.clock.now();
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Zoho-oauthtoken "))
            .unwrap_or("");
        let (limit, delay_ms) = {
            let d = self.data();
            if d.tokens.get(token).is_none_or(|exp| *exp <= now) {
                return error(401, "INVALID_TOKEN", "invalid oauth token", json!({}));
            }
            (d.concurrency, d.delay_ms)
        };
        // A composite takes 5 units of concurrency (reference B2).
        let units = if path.first().map(String::as_str) == Some("__composite_requests") { 5 } else { 1 };
        let count = self.in_flight.fetch_add(units, Ordering::SeqCst) + units;
        let _guard = InFlight(&self.in_flight, units);
        if count > limit {
            return error(429, "TOO_MANY_REQUESTS", "too many requests. please try again after some time", json!({}));
        }
        // Heavy APIs (COQL, writes of more than 10 records) share a sub-limit of 10 (reference B5).
        let heavy = (path.len() == 1 && path[0] == "coql")
            || (method != Method::GET
                && serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|b| b.get("data").and_then(Value::as_array).map(Vec::len))
                    .is_some_and(|n| n > 10));
        let heavy_units = usize::from(heavy);
        let heavy_count = self.heavy_in_flight.fetch_add(heavy_units, Ordering::SeqCst) + heavy_units;
        let _heavy_guard = InFlight(&self.heavy_in_flight, heavy_units);
        if heavy && heavy_count > HEAVY_CONCURRENCY {
            return error(429, "TOO_MANY_REQUESTS", "too many requests. please try again after some time", json!({}));
        }
        self.max_in_flight.fetch_max(count, Ordering::SeqCst);
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let query: HashMap<String, String> =
            uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let body: Value =
            if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
        let segs: Vec<&str> = path.iter().map(String::as_str).collect();
        let cost = match (&method, segs.as_slice()) {
            (&Method::POST, ["coql"]) => {
                super::client::coql_cost(body.get("select_query").and_then(Value::as_str).unwrap_or(""))
            }
            _ => 1,
        };
        let remaining = {
            let mut d = self.data();
            if d.credits_used + cost > d.daily_credits {
                return error(
                    429,
                    "TOO_MANY_REQUESTS",
                    "too many requests. please try again after some time",
                    json!({}),
                );
            }
            d.credits_used += cost;
            // The header appears only once half the day's credits are spent.
            (d.credits_used * 2 >= d.daily_credits).then(|| d.daily_credits - d.credits_used)
        };
        let since =
            headers.get("if-modified-since").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Timestamp>().ok());
        let unmodified_since =
            headers.get("if-unmodified-since").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Timestamp>().ok());
        let (mut response, notify) = if method == Method::POST && segs == ["__composite_requests"] {
            (self.composite(&body, now).await, Vec::new())
        } else {
            self.dispatch(&method, &segs, &query, &body, now, Conditions { since, unmodified_since })
        };
        if let Some(n) = remaining {
            if let Ok(v) = n.to_string().parse() {
                response.headers_mut().insert("x-api-credits-remaining", v);
            }
        }
        // When the access token used expires, as Zoho reports it.
        if let Some(exp) = self.data().tokens.get(token).copied() {
            let shown = exp
                .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string();
            if let Ok(v) = shown.parse() {
                response.headers_mut().insert("x-accesstoken-reset", v);
            }
        }
        self.send_notifications(notify);
        response
    }

    fn dispatch(
        &self,
        method: &Method,
        segs: &[&str],
        query: &HashMap<String, String>,
        body: &Value,
        now: Timestamp,
        cond: Conditions,
    ) -> (Response, Vec<(String, Value)>) {
        let Conditions { since, unmodified_since } = cond;
        let nothing = Vec::new();
        match (method, segs) {
            (&Method::POST, ["coql"]) => (self.coql(body), nothing),
            (&Method::GET, ["users"]) => (self.current_user(), nothing),
            (&Method::GET, ["org"]) => (self.org(), nothing),
            (&Method::GET, ["settings", "modules"]) => (self.modules(), nothing),
            (&Method::GET, ["settings", "fields"]) => (self.fields(query.get("module").map(String::as_str)), nothing),
            (&Method::GET, ["settings", "related_lists"]) => {
                (self.related_lists(query.get("module").map(String::as_str)), nothing)
            }
            (&Method::GET, ["actions", "watch"]) => {
                let list: Vec<Value> = self.data().channels.iter().map(|(c, _)| c.clone()).collect();
                (reply(200, json!({"watch": list, "info": {"count": list.len(), "more_records": false}})), nothing)
            }
            (&Method::POST | &Method::PATCH, ["actions", "watch"]) => (self.watch(method, body, now), nothing),
            (&Method::DELETE, ["actions", "watch"]) => {
                let ids: Vec<String> =
                    query.get("channel_ids").map(|q| q.split(',').map(str::to_owned).collect()).unwrap_or_default();
                self.data().channels.retain(|(c, _)| !ids.iter().any(|id| c["channel_id"] == id.as_str()));
                let out: Vec<Value> = ids
                    .iter()
                    .map(|id| json!({"code": "SUCCESS", "details": {"channel_id": id}, "message": "Successfully unsubscribed from actions-watch", "status": "success"}))
                    .collect();
                (reply(200, json!({ "watch": out })), nothing)
            }
            (&Method::GET, [module]) if MODULES.contains(module) => {
                let mut rows = self.data().records.get(*module).cloned().unwrap_or_default();
                if let Some(since) = since {
                    rows.retain(|r| {
                        r["Modified_Time"].as_str().and_then(|t| t.parse::<Timestamp>().ok()).is_some_and(|t| t > since)
                    });
                    rows.sort_by_key(|r| r["Modified_Time"].as_str().and_then(|t| t.parse::<Timestamp>().ok()));
                    if rows.is_empty() {
                        return (StatusCode::NOT_MODIFIED.into_response(), nothing);
                    }
                }
                (self.page(rows, query, format!("{module}?{}", query.get("fields").map_or("", |f| f))), nothing)
            }
            (&Method::GET, [module, "deleted"]) if MODULES.contains(module) => {
                let mut rows = self.data().deleted.get(*module).cloned().unwrap_or_default();
                if let Some(since) = since {
                    rows.retain(|r| {
                        r["deleted_time"].as_str().and_then(|t| t.parse::<Timestamp>().ok()).is_some_and(|t| t > since)
                    });
                }
                if rows.is_empty() {
                    return (no_content(), nothing);
                }
                let count = rows.len();
                (
                    reply(
                        200,
                        json!({"data": rows, "info": {"per_page": 200, "count": count, "page": 1, "more_records": false}}),
                    ),
                    nothing,
                )
            }
            (&Method::GET, [module, "search"]) if MODULES.contains(module) => (self.search(module, query), nothing),
            (&Method::GET, [module, "actions", "count"]) if MODULES.contains(module) => {
                let count = self.data().records.get(*module).map_or(0, Vec::len);
                (reply(200, json!({ "count": count })), nothing)
            }
            (&Method::DELETE, [module]) if MODULES.contains(module) => self.delete(module, query, now),
            (&Method::GET, [module, id]) if MODULES.contains(module) => match self.record(module, id) {
                Some(r) => (reply(200, json!({"data": [r]})), nothing),
                None => (no_content(), nothing),
            },
            (&Method::GET, [module, id, related]) if MODULES.contains(module) => {
                let rows = self.related_rows(related, id);
                (self.page(rows, query, format!("{module}/{id}/{related}")), nothing)
            }
            (&Method::PUT, [module, id]) if MODULES.contains(module) => {
                // `PUT /{Module}/{id}`: the one record of `data` is that id.
                let mut body = body.clone();
                if let Some(first) = body.get_mut("data").and_then(Value::as_array_mut).and_then(|a| a.first_mut()) {
                    first["id"] = json!(id);
                }
                self.write(module, &body, WriteKind::Update(unmodified_since), now)
            }
            (&Method::DELETE, [module, id]) if MODULES.contains(module) => {
                let mut query = query.clone();
                query.insert("ids".to_owned(), (*id).to_owned());
                self.delete(module, &query, now)
            }
            (&Method::PUT, [module]) if MODULES.contains(module) => {
                self.write(module, body, WriteKind::Update(unmodified_since), now)
            }
            (&Method::POST, [module]) if MODULES.contains(module) => self.write(module, body, WriteKind::Insert, now),
            (&Method::POST, [module, "upsert"]) if MODULES.contains(module) => {
                self.write(module, body, WriteKind::Upsert, now)
            }
            (_, [module, ..])
                if !MODULES.contains(module) && !["actions", "coql", "settings", "users", "org"].contains(module) =>
            {
                (error(400, "INVALID_MODULE", "the module name given seems to be invalid", json!({})), nothing)
            }
            _ => (
                error(
                    404,
                    "INVALID_URL_PATTERN",
                    "Please check if the URL trying to access is a correct one",
                    json!({}),
                ),
                nothing,
            ),
        }
    }

    /// `__composite_requests`: up to 5 GET sub-requests answered in order, one credit in all.
    async fn composite(&self, body: &Value, now: Timestamp) -> Response {
        let subs = body.get("__composite_requests").and_then(Value::as_array).cloned().unwrap_or_default();
        if subs.is_empty() || subs.len() > 5 {
            return error(400, "LIMIT_EXCEEDED", "a composite request takes 1 to 5 sub-requests", json!({"limit": 5}));
        }
        if body["rollback_on_fail"] == true && body["parallel_execution"] == true {
            return error(
                400,
                "INVALID_DATA",
                "rollback_on_fail and parallel_execution cannot both be true",
                json!({}),
            );
        }
        let mut out = Vec::new();
        for sub in subs {
            let uri = sub["uri"].as_str().unwrap_or("");
            let segs: Vec<&str> = uri.split('/').filter(|s| !s.is_empty()).skip(2).collect();
            let query: HashMap<String, String> = sub["params"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                        .collect()
                })
                .unwrap_or_default();
            let method = if sub["method"].as_str().unwrap_or("GET").eq_ignore_ascii_case("GET") {
                Method::GET
            } else {
                Method::OPTIONS
            };
            let (response, _) = self.dispatch(&method, &segs, &query, &Value::Null, now, Conditions::default());
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), sim::MAX_BODY_BYTES).await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            out.push(
                json!({"code": "SUCCESS", "details": {"response": {"headers": {}, "status_code": status, "body": body}},
                "message": "composite sub request executed successfully", "status": "success"}),
            );
        }
        reply(200, json!({ "__composite_requests": out }))
    }

    fn related_rows(&self, related: &str, id: &str) -> Vec<Value> {
        let d = self.data();
        let of = |module: &str, link: &str| -> Vec<Value> {
            d.records
                .get(module)
                .map_or_else(Vec::new, |rows| rows.iter().filter(|r| r[link]["id"] == id).cloned().collect())
        };
        let activities = |closed: bool| -> Vec<Value> {
            ["Calls", "Tasks", "Events"]
                .iter()
                .flat_map(|m| {
                    of(m, "What_Id").into_iter().filter(|r| is_closed(r) == closed).map(move |mut r| {
                        r["$module"] = json!(m);
                        r
                    })
                })
                .collect()
        };
        match related {
            "Notes" => of("Notes", "Parent_Id"),
            "Calls" | "Tasks" | "Events" => of(related, "What_Id"),
            "Activities_Chronological_View" => activities(false),
            "Activities_Chronological_View_History" => activities(true),
            // The deal's contacts, each with its `Contact_Role` lookup.
            "Contact_Roles" => d
                .contact_roles
                .iter()
                .filter(|r| r["deal"] == id)
                .filter_map(|r| {
                    let contact = d.records.get("Contacts")?.iter().find(|c| c["id"] == r["contact"])?;
                    let mut row = contact.clone();
                    row["Contact_Role"] = r["role"].clone();
                    Some(row)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Paging as Zoho does it: `fields` required, `per_page` ≤ 200, `page` only for the first
    /// 2,000 records, then `page_token` (bound to the query).
    fn page(&self, rows: Vec<Value>, q: &HashMap<String, String>, key: String) -> Response {
        let Some(fields) = q.get("fields").filter(|f| !f.is_empty()) else {
            return error(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                json!({"param": "fields"}),
            );
        };
        if q.contains_key("page") && q.contains_key("page_token") {
            return error(
                400,
                "AMBIGUITY_DURING_PROCESSING",
                "page and page_token cannot be given together",
                json!({}),
            );
        }
        let per_page = q.get("per_page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(200).clamp(1, 200);
        let mut d = self.data();
        let (offset, by_token) = match q.get("page_token") {
            Some(t) => match d.page_tokens.get(t) {
                Some((k, off)) if *k == key => (*off, true),
                Some(_) => {
                    return error(
                        400,
                        "TOKEN_BOUND_DATA_MISMATCH",
                        "the page token does not match the request",
                        json!({}),
                    )
                }
                None => return error(400, "INVALID_DATA", "invalid page token", json!({"param": "page_token"})),
            },
            None => {
                let page = q.get("page").and_then(|p| p.parse::<usize>().ok()).unwrap_or(1).max(1);
                if page * per_page > 2000 {
                    return error(
                        400,
                        "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                        "use page_token to fetch more than 2000 records",
                        json!({"limit": 2000}),
                    );
                }
                ((page - 1) * per_page, false)
            }
        };
        let wanted: Vec<&str> = fields.split(',').map(str::trim).collect();
        let slice: Vec<Value> = rows
            .iter()
            .skip(offset)
            .take(per_page)
            .map(|r| {
                let mut out = Map::new();
                for f in wanted.iter().copied().chain(["id", "$module"]) {
                    if let Some(v) = r.get(f) {
                        out.insert(f.to_owned(), v.clone());
                    }
                }
                Value::Object(out)
            })
            .collect();
        if slice.is_empty() {
            return no_content();
        }
        let more = offset + per_page < rows.len();
        let next_token = (more && (by_token || offset + 2 * per_page > 2000)).then(|| {
            d.next_id += 1;
            let token = format!("simpt{}", d.next_id);
            d.page_tokens.insert(token.clone(), (key, offset + per_page));
            token
        });
        let page = if by_token { Value::Null } else { json!(offset / per_page + 1) };
        reply(
            200,
            json!({"data": slice, "info": {"per_page": per_page, "count": slice.len(), "page": page, "more_records": more,
            "next_page_token": next_token, "previous_page_token": null, "page_token_expiry": null, "call": false, "email": false}}),
        )
    }
}

#[async_trait::async_trait]
impl Simulator for ZohoSim {
    fn name(&self) -> &'static str {
        "zoho"
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/oauth/v2/token/revoke",
                post(|State(sim): State<Arc<ZohoSim>>, uri: Uri| async move {
                    let token: Option<String> = uri.query().and_then(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .find(|(k, _)| k == "token")
                            .map(|(_, v)| v.into_owned())
                    });
                    // The sim's refresh token is fixed; revoking it drops the access tokens it issued.
                    if token.as_deref() == Some(SIM_REFRESH_TOKEN) {
                        sim.expire_tokens();
                    }
                    reply(200, json!({"status": "success"}))
                }),
            )
            .route(
                "/oauth/v2/token",
                post(|State(sim): State<Arc<ZohoSim>>, headers: HeaderMap, uri: Uri, body: Bytes| {
                    sim.token(headers, uri, body)
                }),
            )
            .route(
                "/crm/{version}/{*rest}",
                any(
                    |State(sim): State<Arc<ZohoSim>>,
                     Path((_version, rest)): Path<(String, String)>,
                     method: Method,
                     headers: HeaderMap,
                     uri: Uri,
                     body: Bytes| async move {
                        let path = rest.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect();
                        sim.api(method, path, headers, uri, body).await
                    },
                ),
            )
            .with_state(self)
    }

    fn info(&self) -> Value {
        let d = self.data();
        json!({
            "client_id": SIM_CLIENT_ID,
            "client_secret": SIM_CLIENT_SECRET,
            "refresh_token": SIM_REFRESH_TOKEN,
            "token_path": "/oauth/v2/token",
            "api_base_path": "/crm/v8",
            "daily_credits": d.daily_credits,
            "credits_used": d.credits_used,
            "concurrency": d.concurrency,
            "delay_ms": d.delay_ms,
            "modules": MODULES,
            "deal_stages": DEAL_STAGES,
            "channels": d.channels.len(),
        })
    }

    fn reset(&self) {
        *self.data() = seed_data();
        self.calls.store(0, Ordering::SeqCst);
        self.max_in_flight.store(0, Ordering::SeqCst);
    }

    async fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        let invalid = |detail: &str| SimError::InvalidRecord { entity: entity.to_owned(), detail: detail.to_owned() };
        match entity {
            "limits" => {
                let mut d = self.data();
                if let Some(n) = value.get("daily_credits").and_then(Value::as_u64) {
                    d.daily_credits = n;
                }
                if let Some(n) = value.get("concurrency").and_then(Value::as_u64) {
                    d.concurrency = usize::try_from(n).unwrap_or(usize::MAX);
                }
                if let Some(n) = value.get("delay_ms").and_then(Value::as_u64) {
                    d.delay_ms = n;
                }
                Ok(json!({"daily_credits": d.daily_credits, "concurrency": d.concurrency, "delay_ms": d.delay_ms}))
            }
            "Contact_Roles" => {
                let text = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
                let (Some(deal), Some(contact), Some(role)) = (text("deal_id"), text("contact_id"), text("role"))
                else {
                    return Err(invalid("expected {\"deal_id\": \"…\", \"contact_id\": \"…\", \"role\": \"…\"}"));
                };
                let mut d = self.data();
                d.next_id += 1;
                let entry = json!({"deal": deal, "contact": contact,
                    "role": {"name": role, "id": format!("{ORG_PREFIX}{:09}", d.next_id)}});
                d.contact_roles.retain(|r| !(r["deal"] == deal.as_str() && r["contact"] == contact.as_str()));
                d.contact_roles.push(entry.clone());
                Ok(entry)
            }
            "tokens" => {
                if value.get("expire_all") == Some(&json!(true)) {
                    self.expire_tokens();
                }
                Ok(json!({"tokens": self.data().tokens.len()}))
            }
            module if MODULES.contains(&module) => {
                let Some(fields) = value.as_object() else { return Err(invalid("expected a JSON object")) };
                let now = self.clock.now();
                let stamp = now
                    .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string();
                let (stored, notify) = {
                    let mut d = self.data();
                    let id = match fields.get("id") {
                        Some(Value::String(id)) => id.clone(),
                        Some(_) => return Err(invalid("`id` must be a string (Zoho ids exceed 2^53)")),
                        None => {
                            d.next_id += 1;
                            format!("{ORG_PREFIX}{:09}", d.next_id)
                        }
                    };
                    let rows = d.records.entry(module.to_owned()).or_default();
                    let (stored, operation) = match rows.iter_mut().find(|r| r["id"] == id.as_str()) {
                        Some(row) => {
                            for (k, v) in fields {
                                row[k.as_str()] = v.clone();
                            }
                            if fields.get("Modified_Time").is_none() {
                                row["Modified_Time"] = json!(stamp);
                            }
                            (row.clone(), "update")
                        }
                        None => {
                            let mut row = value.clone();
                            row["id"] = json!(id);
                            for k in ["Created_Time", "Modified_Time"] {
                                if row.get(k).is_none() {
                                    row[k] = json!(stamp);
                                }
                            }
                            rows.push(row.clone());
                            (row, "insert")
                        }
                    };
                    let affected: Map<String, Value> =
                        fields.iter().filter(|(k, _)| *k != "id").map(|(k, v)| (k.clone(), v.clone())).collect();
                    let notify = Self::notifications_for(&d, module, &[(id, operation, affected)], now);
                    (stored, notify)
                };
                self.send_notifications(notify);
                Ok(stored)
            }
            other => Err(SimError::UnknownEntity {
                simulator: "zoho",
                entity: other.to_owned(),
                known: format!("{}, Contact_Roles, limits, tokens", MODULES.join(", ")),
            }),
        }
    }
}
