//! The NetSuite simulator (reference B10): one account on one loopback port with the real REST
//! paths, TBA and OAuth 2.0 checks, error bodies and the account concurrency limit.
//!
//! | area | what |
//! |---|---|
//! | `POST /services/rest/auth/oauth2/v1/token` | client credentials with an ES256 JWT assertion (kid, iss, aud, exp checked); tokens live `token_ttl` |
//! | every other `/services/rest/…` | TBA (signature rebuilt from the request line and ALL `oauth_*` header params, realm, clock skew ≤ 300 s, nonce replay) or `Bearer`; failures 401 `INVALID_LOGIN` |
//! | `GET record/v1/{type}?q&limit&offset` | ids only, by id, `links` previous/first/next/last/self, `hasMore`; `q` per [`record_query`]; limit 1..=1000 |
//! | `GET record/v1/{type}/{id}[?expandSubResources=true]` | sublists collapsed to links unless expanded; 404 `NONEXISTENT_ID` with `o:errorUrl` |
//! | `POST record/v1/{type}` | 204 + `Location` with the new id; with `X-NetSuite-PropertyNameValidation: error` an unknown body field is 400 `INVALID_CONTENT` at `o:errorPath` |
//! | `DELETE record/v1/{type}/{id}` | 204 (fires the `delete` user event) |
//! | `POST record/v1/salesOrder/{id}/!transform/itemFulfillment` | a fulfillment of the order's lines (the body's `orderLine`s pick and override them); 204 + `Location` |
//! | other real record types (`customer`, `vendor`, `vendorBill`, …) | 400 `USER_ERROR`: the simulated role has no permission (the fixture); unknown types 404 `INVALID_ID` |
//! | `PATCH record/v1/{type}/{id}[?replace=item]` | merge by `line` or replace; approvalStatus only 1 → 2/3 (else 400 `USER_ERROR` "no longer pending approval"), which also moves `status` (requisition: Pending Order / Rejected; order: Pending Receipt B / Rejected by Supervisor C); stamps `lastModifiedDate`; 204 |
//! | `POST query/v1/suiteql?limit&offset` | the grammar of [`suiteql`] over `transaction`, `item` and `employee`; `Prefer: transient` required; limit ≤ 1000 |
//! | concurrency | more than `concurrency_limit` requests in flight: 429 `CONCURRENCY_LIMIT_EXCEEDED` (the fixture body) |
//!
//! `lastModifiedDate` is the simulator clock truncated to the minute. Control
//! (`POST /_sim/records/{entity}`):
//!
//! | entity | what |
//! |---|---|
//! | a record type (`purchaseOrder`, `itemFulfillment`, …) | upserts a record by `id` (merge like PATCH), stamps `lastModifiedDate` (unless the body gives it: staleness tests) and fires the user-event webhook |
//! | `webhook` | `{"url": …, "suppressed": bool}`: where user events go (`"url": null` stops them); `{"suppressed": true}` alone keeps the url. While suppressed (a fault: the script does not run) changes are made and visible to reads and SuiteQL, but no event is posted; each skipped event counts in `webhooks_suppressed` (`/_sim/info`, [`NetSuiteSim::webhooks_suppressed`]) |
//! | `employee` | upserts an employee by `id` (fields as in [`seed::employees`]: `entityId`, `firstName`, `lastName`, `email`, `mobilePhone`, `externalId`, `isInactive`) |
//! | `limits` | `{"concurrency": n, "delay_ms": m}`: the concurrency limit and a per-request delay (to make requests overlap in tests) |
//!
//! Host routing (B10 item 1) is not simulated: the simulator serves one account on its port
//! whatever the Host. A TBA signature may cover the simulator's URL or the account's real
//! `https://1234567.suitetalk.api.netsuite.com` URL (a client re-routed by a transport adapter).

pub mod keys;
pub mod record_query;
pub mod seed;
pub mod suiteql;

pub use keys::{TEST_EC_PRIVATE_KEY_PEM, TEST_EC_PUBLIC_KEY_PEM};

use super::auth::{hmac_sha256_base64, parse_authorization_header, signature_base_string, signing_key};
use super::client::RecordType;
use super::source::{sign_payload, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::Router;
use connect::Clock;
use jiff::{SignedDuration, Timestamp};
use rand::Rng;
use serde_json::{json, Map, Value};
use sim::{SimError, Simulator};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use url::Url;

/// Content type of error answers.
const ERROR_TYPE: &str = "application/vnd.oracle.resource+json; type=error";

/// Settings of one simulated account.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Concurrent requests the account allows (Standard tier: 5).
    pub concurrency_limit: usize,
    /// Held inside every data request before answering, so tests can make requests overlap.
    pub delay: Duration,
    /// Access-token lifetime (NetSuite: 60 minutes).
    pub token_ttl: Duration,
    /// Allowed TBA clock skew.
    pub max_skew: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            concurrency_limit: 5,
            delay: Duration::ZERO,
            token_ttl: Duration::from_secs(3600),
            max_skew: Duration::from_secs(300),
        }
    }
}

#[derive(Debug)]
struct Account {
    records: BTreeMap<(RecordType, String), Value>,
    /// Employees (SuiteQL `FROM employee`), by id order.
    employees: Vec<Value>,
    next_id: u64,
    /// Nonce → timestamp, pruned past the skew window.
    nonces: BTreeMap<String, i64>,
    /// Access token → expiry.
    tokens: BTreeMap<String, Timestamp>,
    webhook_url: Option<String>,
    /// Fault: user events are not posted (counted in `webhooks_suppressed`).
    webhook_suppressed: bool,
    concurrency_limit: usize,
    delay: Duration,
}

/// Counters tests assert on.
#[derive(Debug, Default)]
pub struct Counters {
    /// Data requests that passed the concurrency gate and authentication.
    pub data_calls: AtomicU64,
    pub token_calls: AtomicU64,
    pub throttled: AtomicU64,
    pub auth_failures: AtomicU64,
    pub webhooks_sent: AtomicU64,
    /// User events not posted because the webhook is suppressed.
    pub webhooks_suppressed: AtomicU64,
    /// Highest number of data requests in flight at once.
    pub peak_in_flight: AtomicUsize,
}

/// The simulated NetSuite account.
pub struct NetSuiteSim {
    config: SimConfig,
    clock: Arc<dyn Clock>,
    account: Mutex<Account>,
    in_flight: AtomicUsize,
    pub counters: Arc<Counters>,
    http: reqwest::Client,
}

impl std::fmt::Debug for NetSuiteSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetSuiteSim").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A REST error answer shaped like the fixtures.
pub fn error_body(status: u16, code: &str, detail: &str) -> Value {
    let (section, title) = match status {
        400 => ("rfc9110.html#section-15.5.1", "Bad Request"),
        401 => ("rfc9110.html#section-15.5.2", "Unauthorized"),
        404 => ("rfc9110.html#section-15.5.5", "Not Found"),
        429 => ("rfc6585.html#section-4", "Too Many Requests"),
        _ => ("rfc9110.html#section-15.6.1", "Internal Server Error"),
    };
    json!({
        "type": format!("https://www.rfc-editor.org/rfc/{section}"),
        "title": title,
        "status": status,
        "o:errorDetails": [{"detail": detail, "o:errorCode": code}]
    })
}

fn error(status: u16, code: &str, detail: &str) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(error_body(status, code, detail)),
    )
        .into_response();
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(ERROR_TYPE));
    resp
}

/// An error answer not yet rendered (keeps `Result`s small).
struct Failure {
    status: u16,
    code: &'static str,
    detail: String,
    /// Where the fault is: (`o:errorPath`, body field) or (`o:errorUrl`, request path).
    path: Option<(&'static str, String)>,
}

impl Failure {
    fn at(mut self, key: &'static str, value: &str) -> Self {
        self.path = Some((key, value.to_owned()));
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = error_body(self.status, self.code, &self.detail);
        if let Some((key, value)) = self.path {
            body["o:errorDetails"][0][key] = json!(value);
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(ERROR_TYPE));
        resp
    }
}

/// Record types of a real account that the simulated integration role may not use.
const NO_PERMISSION: &[&str] = &[
    "customer",
    "vendor",
    "employee",
    "vendorBill",
    "vendorPayment",
    "invoice",
    "journalEntry",
    "itemReceipt",
    "subsidiary",
];

/// The fixture `error_400_user_error_permission.json`.
const NO_PERMISSION_DETAIL: &str =
    "Your current role does not have permission to perform this action. Please contact your account administrator.";

/// A 400 `INVALID_PARAMETER` naming the query parameter at fault (`o:errorQueryParam`).
fn query_error(param: &str, detail: &str) -> Response {
    let mut body = error_body(400, "INVALID_PARAMETER", detail);
    body["o:errorDetails"][0]["o:errorQueryParam"] = json!(param);
    let mut resp = (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(ERROR_TYPE));
    resp
}

/// 404 `NONEXISTENT_ID` of the record at `/services/rest/record/v1/{kind}/{id}` (the fixture).
fn nonexistent(kind: &str, id: &str) -> Failure {
    Failure {
        status: 404,
        code: "NONEXISTENT_ID",
        detail: "The record instance does not exist. Provide a valid record instance ID.".to_owned(),
        path: None,
    }
    .at("o:errorUrl", &format!("/services/rest/record/v1/{kind}/{id}"))
}

/// A success answer with NetSuite's content type (`singular` or `collection`).
fn resource(value: Value, kind: &'static str) -> Response {
    let mut resp = axum::Json(value).into_response();
    let content_type = if kind == "collection" {
        "application/vnd.oracle.resource+json; type=collection"
    } else {
        "application/vnd.oracle.resource+json; type=singular"
    };
    resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn invalid_login() -> Response {
    error(
        401,
        "INVALID_LOGIN",
        "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at Setup > Users/Roles > User Management > View Login Audit Trail.",
    )
}

fn random_token(len: usize) -> String {
    rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(len).map(char::from).collect()
}

fn minute(now: Timestamp) -> String {
    let s = now.as_second();
    Timestamp::from_second(s - s.rem_euclid(60)).unwrap_or(now).to_string()
}

/// Why a TBA header does not authenticate its request (logged, never sent: NetSuite answers
/// every refused login with the same `INVALID_LOGIN`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TbaError {
    #[error("malformed OAuth header")]
    MalformedHeader,
    #[error("missing {0}")]
    Missing(String),
    #[error("realm is not the account id")]
    WrongRealm,
    #[error("unknown consumer key or token")]
    UnknownConsumer,
    #[error("unsupported signature method")]
    SignatureMethod,
    #[error("bad timestamp")]
    BadTimestamp,
    #[error("timestamp outside the allowed skew")]
    Skew,
    #[error("no Host header")]
    NoHost,
    #[error("{0}")]
    Url(#[source] url::ParseError),
    #[error("signature mismatch")]
    SignatureMismatch,
    #[error("nonce replayed")]
    NonceReplayed,
}

/// Why a data request's login was refused (logged, never sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum AuthError {
    #[error("no Authorization header")]
    NoAuthorization,
    #[error("unknown or expired access token")]
    UnknownToken,
    #[error(transparent)]
    Tba(#[from] TbaError),
}

/// Why a client-credentials assertion was refused (logged; the answer is `invalid_grant`).
#[derive(Debug, thiserror::Error)]
enum AssertionError {
    #[error("{0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("unknown certificate id")]
    UnknownCertificate,
    #[error("assertion expired or lives longer than an hour")]
    TooLong,
    #[error("scope lacks rest_webservices")]
    Scope,
}

/// Sublist fields of a record: objects holding `items`.
fn is_sublist(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.contains_key("items"))
}

/// Why a record body was refused; the text is NetSuite's `USER_ERROR` detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum MergeError {
    #[error("approvalStatus must be written as {{\"id\": \"2\"}}")]
    ApprovalNotAReference,
    #[error("Invalid approvalStatus reference key {0}.")]
    UnknownApproval(String),
    #[error(
        "This transaction is no longer pending approval (its approval status is {was}); \
         you cannot change the approval status from {was} to {wanted}."
    )]
    NoLongerPending { was: &'static str, wanted: &'static str },
    #[error("sublist without items")]
    SublistWithoutItems,
}

/// Merges `patch` into `record`: body fields replace, sublist lines merge by `line` (new lines
/// appended and numbered) unless the sublist is named in `replace`.
fn merge(record: &mut Value, patch: &Map<String, Value>, replace: &[String]) -> Result<(), MergeError> {
    for (field, value) in patch {
        if field == "id" || field == "links" {
            continue;
        }
        if field == "approvalStatus" {
            let wanted = value["id"].as_str().ok_or(MergeError::ApprovalNotAReference)?;
            let name = seed::approval_name(wanted).ok_or_else(|| MergeError::UnknownApproval(wanted.to_owned()))?;
            let current = record["approvalStatus"]["id"].as_str().unwrap_or("1").to_owned();
            if current != wanted && !(current == "1" && (wanted == "2" || wanted == "3")) {
                // What the UI and REST answer once a transaction left Pending Approval.
                let was = seed::approval_name(&current).unwrap_or("decided");
                return Err(MergeError::NoLongerPending { was, wanted: name });
            }
            if current == "1" && wanted != "1" {
                let is_order = record.get("orderStatus").is_some();
                if let Some((status, order_status)) = seed::decided_status(is_order, wanted) {
                    record["status"] = json!({"id": status, "refName": status});
                    if let Some(code) = order_status {
                        record["orderStatus"] = json!({"id": code, "refName": code});
                    }
                }
            }
            record["approvalStatus"] = json!({"id": wanted, "refName": name});
            continue;
        }
        let Some(items) = value.get("items").and_then(Value::as_array).filter(|_| is_sublist(value)) else {
            record[field.as_str()] = value.clone();
            continue;
        };
        if replace.iter().any(|r| r.eq_ignore_ascii_case(field)) || !is_sublist(&record[field.as_str()]) {
            let numbered = items.iter().enumerate().map(|(i, line)| {
                let mut line = line.clone();
                line["line"] = json!(i + 1);
                line
            });
            record[field.as_str()] = json!({"items": numbered.collect::<Vec<_>>()});
            continue;
        }
        let existing = record[field.as_str()]["items"].as_array_mut().ok_or(MergeError::SublistWithoutItems)?;
        for line in items {
            match line["line"].as_u64().and_then(|n| existing.iter_mut().find(|l| l["line"].as_u64() == Some(n))) {
                Some(target) => {
                    for (k, v) in line.as_object().into_iter().flatten() {
                        target[k.as_str()] = v.clone();
                    }
                }
                None => {
                    let next = existing.iter().filter_map(|l| l["line"].as_u64()).max().unwrap_or(0) + 1;
                    let mut line = line.clone();
                    line["line"] = json!(next);
                    existing.push(line);
                }
            }
        }
    }
    Ok(())
}

impl NetSuiteSim {
    pub fn new(config: SimConfig, clock: Arc<dyn Clock>) -> Self {
        let account = Self::seeded(&config);
        Self {
            config,
            clock,
            account: Mutex::new(account),
            in_flight: AtomicUsize::new(0),
            counters: Arc::new(Counters::default()),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
        }
    }

    fn seeded(config: &SimConfig) -> Account {
        Account {
            records: seed::records()
                .into_iter()
                .map(|(t, v)| ((t, v["id"].as_str().unwrap_or_default().to_owned()), v))
                .collect(),
            employees: seed::employees(),
            next_id: seed::FIRST_NEW_ID,
            nonces: BTreeMap::new(),
            tokens: BTreeMap::new(),
            webhook_url: None,
            webhook_suppressed: false,
            concurrency_limit: config.concurrency_limit,
            delay: config.delay,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Account> {
        // Every mutation is a whole-value insert, so a poisoned lock still holds a consistent state.
        self.account.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored (expanded) record.
    pub fn record(&self, record: RecordType, id: &str) -> Option<Value> {
        self.lock().records.get(&(record, id.to_owned())).cloned()
    }

    /// User events skipped because the webhook is suppressed.
    pub fn webhooks_suppressed(&self) -> u64 {
        self.counters.webhooks_suppressed.load(Ordering::SeqCst)
    }

    /// Makes every issued access token invalid (the next bearer call answers 401).
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    /// Checks the TBA header against the request; `Err` is the reason (logged, never sent).
    fn verify_tba(&self, method: &Method, uri: &Uri, headers: &HeaderMap, header: &str) -> Result<(), TbaError> {
        let params = parse_authorization_header(header).ok_or(TbaError::MalformedHeader)?;
        let get = |k: &str| params.get(k).map(String::as_str).ok_or_else(|| TbaError::Missing(k.to_owned()));
        if get("realm")? != seed::ACCOUNT {
            return Err(TbaError::WrongRealm);
        }
        if get("oauth_consumer_key")? != seed::CONSUMER_KEY || get("oauth_token")? != seed::TOKEN_ID {
            return Err(TbaError::UnknownConsumer);
        }
        if get("oauth_signature_method")? != "HMAC-SHA256" {
            return Err(TbaError::SignatureMethod);
        }
        let ts: i64 = get("oauth_timestamp")?.parse().map_err(|_| TbaError::BadTimestamp)?;
        let now = self.clock.now().as_second();
        let skew = i64::try_from(self.config.max_skew.as_secs()).unwrap_or(i64::MAX);
        if (now - ts).abs() > skew {
            return Err(TbaError::Skew);
        }
        // All oauth_* parameters are signed (some clients add oauth_body_hash), never realm or
        // the signature itself.
        let signed: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k.starts_with("oauth_") && k.as_str() != "oauth_signature")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).ok_or(TbaError::NoHost)?;
        // The client signed the URL it addressed: the simulator's own address, or the account's
        // real `https://{acct}.suitetalk.api.netsuite.com` URL when a transport adapter maps
        // that host here and keeps its `Host` ([`sim::origin`] rebuilds either).
        let key = signing_key(seed::CONSUMER_SECRET, seed::TOKEN_SECRET);
        let given = get("oauth_signature")?;
        let url = Url::parse(&format!("{}{uri}", sim::origin(host))).map_err(TbaError::Url)?;
        let matched = hmac_sha256_base64(&key, &signature_base_string(method.as_str(), &url, &signed)) == given;
        if !matched {
            return Err(TbaError::SignatureMismatch);
        }
        let nonce = get("oauth_nonce")?.to_owned();
        let mut account = self.lock();
        account.nonces.retain(|_, seen| (now - *seen).abs() <= skew);
        if account.nonces.insert(nonce, ts).is_some() {
            return Err(TbaError::NonceReplayed);
        }
        Ok(())
    }

    fn authenticate(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), AuthError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or(AuthError::NoAuthorization)?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            let now = self.clock.now();
            return match self.lock().tokens.get(token) {
                Some(expiry) if now < *expiry => Ok(()),
                _ => Err(AuthError::UnknownToken),
            };
        }
        Ok(self.verify_tba(method, uri, headers, header)?)
    }

    async fn token(self: Arc<Self>, headers: HeaderMap, body: Bytes) -> Response {
        self.counters.token_calls.fetch_add(1, Ordering::SeqCst);
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
        let refuse = |code: &str| (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code}))).into_response();
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return refuse("unsupported_grant_type");
        }
        if form.get("client_assertion_type").map(String::as_str) != Some(super::auth::JWT_ASSERTION_TYPE) {
            return refuse("invalid_request");
        }
        let Some(assertion) = form.get("client_assertion") else { return refuse("invalid_request") };
        let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        match self
            .check_assertion(assertion, &format!("{}/services/rest{}", sim::origin(host), super::auth::TOKEN_PATH))
        {
            Ok(()) => {}
            Err(reason) => {
                tracing::debug!(%reason, "Simulated NetSuite refused a client credentials assertion.");
                return refuse("invalid_grant");
            }
        }
        let token = random_token(40);
        let ttl = SignedDuration::try_from(self.config.token_ttl).unwrap_or(SignedDuration::from_hours(1));
        let expiry = self.clock.now().checked_add(ttl).unwrap_or(Timestamp::MAX);
        self.lock().tokens.insert(token.clone(), expiry);
        // expires_in as a string, like the fixture.
        axum::Json(json!({"access_token": token, "token_type": "bearer", "expires_in": self.config.token_ttl.as_secs().to_string()}))
            .into_response()
    }

    fn check_assertion(&self, assertion: &str, audience: &str) -> Result<(), AssertionError> {
        let header = jsonwebtoken::decode_header(assertion)?;
        if header.kid.as_deref() != Some(seed::CERTIFICATE_ID) {
            return Err(AssertionError::UnknownCertificate);
        }
        let key = jsonwebtoken::DecodingKey::from_ec_pem(TEST_EC_PUBLIC_KEY_PEM.as_bytes())?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        // Expiry is judged by the simulator clock below.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[seed::CLIENT_ID]);
        let claims = jsonwebtoken::decode::<super::auth::AssertionClaims>(assertion, &key, &validation)?.claims;
        let now = self.clock.now().as_second();
        if claims.exp <= now || claims.exp - claims.iat > 3600 {
            return Err(AssertionError::TooLong);
        }
        if !claims.scope.iter().any(|s| s == "rest_webservices") {
            return Err(AssertionError::Scope);
        }
        Ok(())
    }

    async fn data(self: Arc<Self>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let _guard = InFlight(&self.in_flight);
        let (limit, delay) = {
            let account = self.lock();
            (account.concurrency_limit, account.delay)
        };
        if now_in_flight > limit {
            self.counters.throttled.fetch_add(1, Ordering::SeqCst);
            return error(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.");
        }
        self.counters.peak_in_flight.fetch_max(now_in_flight, Ordering::SeqCst);
        if let Err(reason) = self.authenticate(&method, &uri, &headers) {
            tracing::debug!(%reason, "Simulated NetSuite refused a login.");
            self.counters.auth_failures.fetch_add(1, Ordering::SeqCst);
            return invalid_login();
        }
        self.counters.data_calls.fetch_add(1, Ordering::SeqCst);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
        let base = format!("{}/services/rest", sim::origin(host));
        let query: BTreeMap<String, String> =
            url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
        let path = uri.path().trim_start_matches("/services/rest/");
        let segments: Vec<&str> = path.split('/').collect();
        match (&method, segments.as_slice()) {
            (&Method::POST, ["query", "v1", "suiteql"]) => self.suiteql(&base, &headers, &query, &body),
            (&Method::GET, ["record", "v1", kind]) => self.list(&base, kind, &query),
            (&Method::GET, ["record", "v1", kind, id]) => self.get(&base, kind, id, &query),
            (&Method::POST, ["record", "v1", kind]) => self.create(&base, kind, &headers, &body),
            (&Method::PATCH, ["record", "v1", kind, id]) => self.patch(kind, id, &headers, &query, &body),
            (&Method::DELETE, ["record", "v1", kind, id]) => self.delete(kind, id),
            (&Method::POST, ["record", "v1", kind, id, "!transform", target]) => {
                self.transform(&base, kind, id, target, &headers, &body)
            }
            _ => error(404, "INVALID_ID", &format!("The resource {method} /services/rest/{path} does not exist.")),
        }
    }

    fn record_type(kind: &str) -> Result<RecordType, Failure> {
        if let Some(record) = RecordType::parse(kind) {
            return Ok(record);
        }
        // Real record types the simulated integration role has no permission for: NetSuite
        // answers those 400 USER_ERROR (the fixture), not 403.
        if NO_PERMISSION.iter().any(|t| t.eq_ignore_ascii_case(kind)) {
            return Err(Failure {
                status: 400,
                code: "USER_ERROR",
                detail: NO_PERMISSION_DETAIL.to_owned(),
                path: None,
            });
        }
        Err(Failure {
            status: 404,
            code: "INVALID_ID",
            detail: format!("The record type {kind} is invalid or not supported."),
            path: None,
        })
    }

    /// Refuses body fields the record type does not have when the client asked for it
    /// (`X-NetSuite-PropertyNameValidation: error`, which the gateway always sends on writes).
    fn check_field_names(record: RecordType, headers: &HeaderMap, fields: &Map<String, Value>) -> Result<(), Failure> {
        let strict = headers
            .get("x-netsuite-propertynamevalidation")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("error"));
        if !strict {
            return Ok(());
        }
        match fields.keys().find(|name| !seed::is_known_field(record, name)) {
            None => Ok(()),
            Some(name) => Err(Failure {
                status: 400,
                code: "INVALID_CONTENT",
                detail: format!("Error while accessing a resource. Invalid field name: '{name}'."),
                path: None,
            }
            .at("o:errorPath", name)),
        }
    }

    /// `GET record/v1/{type}?q=…&limit=…&offset=…`: ids only, ordered by id, with the links.
    fn list(&self, base: &str, kind: &str, query: &BTreeMap<String, String>) -> Response {
        let record = match Self::record_type(kind) {
            Ok(r) => r,
            Err(failure) => return failure.into_response(),
        };
        let number = |name: &str, default: usize| match query.get(name) {
            None => Ok(default),
            Some(text) => text.parse::<usize>().map_err(|_| name.to_owned()),
        };
        let (limit, offset) = match (number("limit", 1000), number("offset", 0)) {
            (Ok(l), Ok(o)) if (1..=1000).contains(&l) => (l, o),
            (Err(name), _) | (_, Err(name)) => {
                return query_error(&name, &format!("Invalid value for the {name} query parameter."))
            }
            _ => return query_error("limit", "The limit must be between 1 and 1000."),
        };
        let filter = match query.get("q").map(|q| record_query::parse(q)) {
            None => None,
            Some(Ok(filter)) => {
                if let Err(e) = record_query::check(&filter, &|f| seed::is_known_field(record, f)) {
                    return query_error("q", &e.to_string());
                }
                Some(filter)
            }
            Some(Err(e)) => return query_error("q", &e.to_string()),
        };
        let mut ids: Vec<String> = self
            .lock()
            .records
            .iter()
            .filter(|((t, _), v)| *t == record && filter.as_ref().is_none_or(|f| record_query::matches(f, v)))
            .map(|((_, id), _)| id.clone())
            .collect();
        ids.sort_by_key(|id| (id.len(), id.clone()));
        let total = ids.len();
        let lower = record.as_str().to_ascii_lowercase();
        let q_part = query.get("q").map(|q| format!("&q={}", super::auth::encode(q))).unwrap_or_default();
        let link = |rel: &str, off: usize| json!({"rel": rel, "href": format!("{base}/record/v1/{lower}?limit={limit}&offset={off}{q_part}")});
        let items: Vec<Value> = ids
            .iter()
            .skip(offset)
            .take(limit)
            .map(|id| json!({"links": [{"rel": "self", "href": format!("{base}/record/v1/{lower}/{id}")}], "id": id}))
            .collect();
        let has_more = offset + items.len() < total;
        let mut links = Vec::new();
        if offset > 0 {
            links.push(link("previous", offset.saturating_sub(limit)));
        }
        links.push(link("first", 0));
        if has_more {
            links.push(link("next", offset + limit));
        }
        links.push(link("last", total.saturating_sub(1) / limit * limit));
        links.push(link("self", offset));
        resource(
            json!({"links": links, "count": items.len(), "hasMore": has_more, "items": items, "offset": offset, "totalResults": total}),
            "collection",
        )
    }

    /// `POST record/v1/salesOrder/{id}/!transform/itemFulfillment` (reference B5): a new
    /// fulfillment created from the order (entity, currency, one line per order line with
    /// `orderLine`), the body's fields merged over it; 204 + `Location`. Other pairs are refused
    /// with `USER_ERROR` (the simulator serves no item receipts or vendor bills).
    fn transform(&self, base: &str, kind: &str, id: &str, target: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let (source, target_type) = match (Self::record_type(kind), Self::record_type(target)) {
            (Ok(s), Ok(t)) => (s, t),
            (Err(failure), _) | (_, Err(failure)) => return failure.into_response(),
        };
        if (source, target_type) != (RecordType::SalesOrder, RecordType::ItemFulfillment) {
            return error(
                400,
                "USER_ERROR",
                &format!("You cannot transform a {} into a {}.", source.as_str(), target_type.as_str()),
            );
        }
        let fields = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => fields,
            _ if body.is_empty() => Map::new(),
            _ => return error(400, "INVALID_PARAMETER", "The request body is not a JSON object."),
        };
        if let Err(failure) = Self::check_field_names(target_type, headers, &fields) {
            return failure.into_response();
        }
        let Some(order) = self.record(source, id) else {
            return nonexistent(kind, id).into_response();
        };
        let now = minute(self.clock.now());
        let new_id = {
            let mut account = self.lock();
            account.next_id += 1;
            account.next_id.to_string()
        };
        let lines: Vec<Value> = order["item"]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|line| {
                json!({"orderLine": line["line"], "item": line["item"], "quantity": line["quantity"],
                       "units": line["units"], "itemReceive": true})
            })
            .collect();
        let tran_id = order["tranId"].as_str().unwrap_or_default();
        let mut value = json!({
            "id": new_id, "createdDate": now, "lastModifiedDate": now, "tranDate": &now[..10],
            "entity": order["entity"], "createdFrom": {"id": id, "refName": format!("Sales Order #{tran_id}")},
            "shipStatus": {"id": "A", "refName": "Picked"}
        });
        // The body's lines pick order lines by `orderLine` and override them; without any, every
        // order line is fulfilled.
        let picked: Vec<Value> = match fields.get("item").and_then(|i| i["items"].as_array()) {
            None => lines,
            Some(wanted) => {
                let mut picked = Vec::new();
                for w in wanted {
                    let Some(mut line) = lines.iter().find(|l| l["orderLine"] == w["orderLine"]).cloned() else {
                        return error(400, "USER_ERROR", &format!("The order has no line {}.", w["orderLine"]));
                    };
                    for (k, v) in w.as_object().into_iter().flatten() {
                        line[k.as_str()] = v.clone();
                    }
                    picked.push(line);
                }
                picked
            }
        };
        let numbered: Vec<Value> = picked
            .into_iter()
            .enumerate()
            .map(|(i, mut l)| {
                l["line"] = json!(i + 1);
                l
            })
            .collect();
        value["item"] = json!({"items": numbered});
        let rest: Map<String, Value> = fields.into_iter().filter(|(k, _)| k != "item").collect();
        if let Err(e) = merge(&mut value, &rest, &[]) {
            return error(400, "USER_ERROR", &e.to_string());
        }
        self.lock().records.insert((target_type, new_id.clone()), value.clone());
        self.fire_webhook(target_type, &value, "create");
        let location = format!("{base}/record/v1/{}/{new_id}", target_type.as_str().to_ascii_lowercase());
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Ok(header) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(axum::http::header::LOCATION, header);
        }
        resp
    }

    /// `DELETE record/v1/{type}/{id}` → 204.
    fn delete(&self, kind: &str, id: &str) -> Response {
        let record = match Self::record_type(kind) {
            Ok(r) => r,
            Err(failure) => return failure.into_response(),
        };
        let removed = self.lock().records.remove(&(record, id.to_owned()));
        match removed {
            Some(value) => {
                self.fire_webhook(record, &value, "delete");
                StatusCode::NO_CONTENT.into_response()
            }
            None => nonexistent(kind, id).into_response(),
        }
    }

    fn get(&self, base: &str, kind: &str, id: &str, query: &BTreeMap<String, String>) -> Response {
        let record = match Self::record_type(kind) {
            Ok(r) => r,
            Err(failure) => return failure.into_response(),
        };
        let Some(mut value) = self.record(record, id) else {
            return nonexistent(kind, id).into_response();
        };
        let self_href = format!("{base}/record/v1/{}/{id}", record.as_str().to_ascii_lowercase());
        let expand = query.get("expandSubResources").is_some_and(|v| v == "true");
        if let Some(map) = value.as_object_mut() {
            for (field, sub) in map.iter_mut() {
                if is_sublist(sub) {
                    let links = json!([{"rel": "self", "href": format!("{self_href}/{field}")}]);
                    let items = sub["items"].clone();
                    let total = items.as_array().map_or(0, Vec::len);
                    *sub = if expand {
                        json!({"links": links, "items": items, "totalResults": total})
                    } else {
                        json!({"links": links})
                    };
                }
            }
            let href = if expand { format!("{self_href}?expandSubResources=true") } else { self_href };
            map.insert("links".to_owned(), json!([{"rel": "self", "href": href}]));
        }
        resource(value, "singular")
    }

    fn create(&self, base: &str, kind: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let record = match Self::record_type(kind) {
            Ok(r) => r,
            Err(failure) => return failure.into_response(),
        };
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return error(400, "INVALID_PARAMETER", "The request body is not a JSON object.");
        };
        if let Err(failure) = Self::check_field_names(record, headers, &fields) {
            return failure.into_response();
        }
        let id = {
            let mut account = self.lock();
            account.next_id += 1;
            account.next_id.to_string()
        };
        let now = minute(self.clock.now());
        let mut value = json!({"id": id, "createdDate": now, "lastModifiedDate": now});
        if record == RecordType::PurchaseOrder || record == RecordType::PurchaseRequisition {
            value["approvalStatus"] = json!({"id": "1", "refName": "Pending Approval"});
        }
        if let Err(e) = merge(&mut value, &fields, &[]) {
            return error(400, "USER_ERROR", &e.to_string());
        }
        self.lock().records.insert((record, id.clone()), value.clone());
        self.fire_webhook(record, &value, "create");
        let location = format!("{base}/record/v1/{}/{id}", record.as_str().to_ascii_lowercase());
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Ok(header) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(axum::http::header::LOCATION, header);
        }
        resp
    }

    fn patch(
        &self,
        kind: &str,
        id: &str,
        headers: &HeaderMap,
        query: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Response {
        let record = match Self::record_type(kind) {
            Ok(r) => r,
            Err(failure) => return failure.into_response(),
        };
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return error(400, "INVALID_PARAMETER", "The request body is not a JSON object.");
        };
        if let Err(failure) = Self::check_field_names(record, headers, &fields) {
            return failure.into_response();
        }
        let replace: Vec<String> =
            query.get("replace").map(|r| r.split(',').map(str::to_owned).collect()).unwrap_or_default();
        match self.update(kind, record, id, &fields, &replace) {
            Ok(value) => {
                self.fire_webhook(record, &value, "edit");
                StatusCode::NO_CONTENT.into_response()
            }
            Err(failure) => failure.into_response(),
        }
    }

    fn update(
        &self,
        kind: &str,
        record: RecordType,
        id: &str,
        fields: &Map<String, Value>,
        replace: &[String],
    ) -> Result<Value, Failure> {
        let now = minute(self.clock.now());
        let mut account = self.lock();
        let Some(value) = account.records.get_mut(&(record, id.to_owned())) else {
            return Err(nonexistent(kind, id));
        };
        let mut changed = value.clone();
        merge(&mut changed, fields, replace).map_err(|e| Failure {
            status: 400,
            code: "USER_ERROR",
            detail: e.to_string(),
            path: None,
        })?;
        changed["lastModifiedDate"] = json!(now);
        *value = changed.clone();
        Ok(changed)
    }

    fn suiteql(&self, base: &str, headers: &HeaderMap, query: &BTreeMap<String, String>, body: &[u8]) -> Response {
        if headers.get("prefer").and_then(|v| v.to_str().ok()) != Some("transient") {
            return error(400, "INVALID_PARAMETER", "The Prefer: transient header is required for SuiteQL.");
        }
        let limit: usize = query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(1000);
        let offset: usize = query.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
        if limit == 0 || limit > 1000 {
            return error(400, "INVALID_PARAMETER", "The limit must be between 1 and 1000.");
        }
        let Some(q) = serde_json::from_slice::<Value>(body).ok().and_then(|v| v["q"].as_str().map(str::to_owned))
        else {
            return error(400, "INVALID_PARAMETER", "The request body must be {\"q\": \"SELECT …\"}.");
        };
        let rows = {
            let account = self.lock();
            suiteql::run(&q, account.records.iter().map(|((t, _), v)| (*t, v)), &account.employees)
        };
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => return query_error("q", &e.to_string()),
        };
        let total = rows.len();
        let items: Vec<Value> = rows.into_iter().skip(offset).take(limit).collect();
        let has_more = offset + items.len() < total;
        let link = |rel: &str, off: usize| json!({"rel": rel, "href": format!("{base}/query/v1/suiteql?limit={limit}&offset={off}")});
        let mut links = Vec::new();
        if has_more {
            links.push(link("next", offset + limit));
        }
        links.push(link("last", total.saturating_sub(1) / limit * limit));
        links.push(link("self", offset));
        resource(
            json!({
                "links": links,
                "count": items.len(),
                "hasMore": has_more,
                "items": items,
                "offset": offset,
                "totalResults": total
            }),
            "collection",
        )
    }

    /// POSTs the user-event payload of `value` to the configured webhook, signed like the
    /// dingbridge SuiteScript (see `netsuite::source`). Fire and forget, like `N/https.post`
    /// errors that the script ignores.
    fn fire_webhook(&self, record: RecordType, value: &Value, event: &str) {
        let url = {
            let account = self.lock();
            match (&account.webhook_url, account.webhook_suppressed) {
                (None, _) => return,
                (Some(_), true) => {
                    self.counters.webhooks_suppressed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                (Some(url), false) => url.clone(),
            }
        };
        let kind = record.as_str().to_ascii_lowercase();
        let id = value["id"].as_str().unwrap_or_default();
        let modified = value["lastModifiedDate"].as_str().unwrap_or_default();
        let text = |v: &Value| match v {
            Value::Object(o) => o.get("id").cloned().unwrap_or(Value::Null),
            other => other.clone(),
        };
        let payload = json!({
            "eventId": format!("{}:{kind}:{id}:{modified}:{event}", seed::ACCOUNT),
            "account": seed::ACCOUNT,
            "recordType": kind,
            "recordId": id,
            "eventType": event,
            "userId": "159",
            "role": "1031",
            "executionContext": "USERINTERFACE",
            "occurredAt": self.clock.now().to_string(),
            "fields": {
                "tranid": text(&value["tranId"]),
                "approvalstatus": text(&value["approvalStatus"]),
                "nextapprover": text(&value["nextApprover"]),
                "total": value["total"].clone(),
                "currency": text(&value["currency"]),
            }
        });
        let body = payload.to_string().into_bytes();
        // Signed with the wall clock, as the script's Date.now(): the gateway checks it against its own.
        let signed_at = jiff::Timestamp::now().as_second();
        let signature = sign_payload(seed::WEBHOOK_SECRET.as_bytes(), signed_at, &body);
        let (http, counters) = (self.http.clone(), self.counters.clone());
        tokio::spawn(async move {
            let sent = http
                .post(&url)
                .header(axum::http::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .header(TIMESTAMP_HEADER, signed_at.to_string())
                .body(body)
                .send()
                .await;
            match sent {
                Ok(_) => {
                    counters.webhooks_sent.fetch_add(1, Ordering::SeqCst);
                }
                Err(err) => tracing::debug!(error = %err.without_url(), "Simulated user-event webhook failed."),
            }
        });
    }
}

#[async_trait::async_trait]
impl Simulator for NetSuiteSim {
    fn name(&self) -> &'static str {
        "netsuite"
    }

    fn router(self: Arc<Self>) -> Router {
        let token_sim = self.clone();
        let data_sim = self.clone();
        Router::new()
            .route(
                "/services/rest/auth/oauth2/v1/token",
                post(move |headers: HeaderMap, body: Bytes| token_sim.clone().token(headers, body)),
            )
            .route(
                "/services/rest/{*rest}",
                any(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    data_sim.clone().data(method, uri, headers, body)
                }),
            )
    }

    fn info(&self) -> Value {
        let account = self.lock();
        json!({
            "account": seed::ACCOUNT,
            "consumer_key": seed::CONSUMER_KEY,
            "consumer_secret": seed::CONSUMER_SECRET,
            "token_id": seed::TOKEN_ID,
            "token_secret": seed::TOKEN_SECRET,
            "client_id": seed::CLIENT_ID,
            "certificate_id": seed::CERTIFICATE_ID,
            "jwt_private_key_pem": TEST_EC_PRIVATE_KEY_PEM,
            "jwt_public_key_pem": TEST_EC_PUBLIC_KEY_PEM,
            "webhook_secret": seed::WEBHOOK_SECRET,
            "webhook_url": account.webhook_url,
            "webhook_suppressed": account.webhook_suppressed,
            "webhooks_sent": self.counters.webhooks_sent.load(Ordering::SeqCst),
            "webhooks_suppressed": self.counters.webhooks_suppressed.load(Ordering::SeqCst),
            "concurrency_limit": account.concurrency_limit,
            "delay_ms": u64::try_from(account.delay.as_millis()).unwrap_or(u64::MAX),
            "token_ttl_s": self.config.token_ttl.as_secs(),
        })
    }

    fn reset(&self) {
        *self.lock() = Self::seeded(&self.config);
    }

    async fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        let invalid = |detail: &str| SimError::InvalidRecord { entity: entity.to_owned(), detail: detail.to_owned() };
        match entity {
            "webhook" => {
                let suppressed = match value.get("suppressed") {
                    None => None,
                    Some(v) => Some(v.as_bool().ok_or_else(|| invalid("\"suppressed\" must be true or false"))?),
                };
                let mut account = self.lock();
                // `{"suppressed": …}` alone keeps the url; anything else sets it (null or absent stops events).
                if value.get("url").is_some() || suppressed.is_none() {
                    account.webhook_url = value["url"].as_str().map(str::to_owned);
                }
                if let Some(suppressed) = suppressed {
                    account.webhook_suppressed = suppressed;
                }
                return Ok(json!({"url": account.webhook_url, "suppressed": account.webhook_suppressed}));
            }
            "employee" => {
                let id = value["id"].as_str().ok_or_else(|| invalid("expected an \"id\""))?.to_owned();
                let Value::Object(fields) = &value else { return Err(invalid("expected a JSON object")) };
                let mut account = self.lock();
                let stored = match account.employees.iter_mut().find(|e| e["id"] == id.as_str()) {
                    Some(existing) => {
                        for (k, v) in fields {
                            existing[k.as_str()] = v.clone();
                        }
                        existing.clone()
                    }
                    None => {
                        account.employees.push(value.clone());
                        value.clone()
                    }
                };
                return Ok(stored);
            }
            "limits" => {
                let mut account = self.lock();
                if let Some(n) = value["concurrency"].as_u64() {
                    account.concurrency_limit = usize::try_from(n).map_err(|_| invalid("concurrency too large"))?;
                }
                if let Some(ms) = value["delay_ms"].as_u64() {
                    account.delay = Duration::from_millis(ms);
                }
                return Ok(value);
            }
            _ => {}
        }
        let record = RecordType::parse(entity).ok_or_else(|| SimError::UnknownEntity {
            simulator: "netsuite",
            entity: entity.to_owned(),
            known: "webhook, limits, employee, purchaseRequisition, purchaseOrder, salesOrder, inventoryItem, itemFulfillment"
                .to_owned(),
        })?;
        let Value::Object(fields) = &value else { return Err(invalid("expected a JSON object")) };
        let id = fields.get("id").and_then(Value::as_str).ok_or_else(|| invalid("expected an \"id\""))?.to_owned();
        // An explicit change time is kept (staleness tests); otherwise the upsert is "now".
        let modified = match fields.get("lastModifiedDate") {
            Some(Value::String(text)) => {
                text.parse::<Timestamp>().map_err(|e| {
                    invalid(&format!(
                        "lastModifiedDate {text:?} is not an RFC 3339 instant like 2024-03-15T02:31:00Z ({e})"
                    ))
                })?;
                text.clone()
            }
            Some(other) => return Err(invalid(&format!("lastModifiedDate must be a string, not {other}"))),
            None => minute(self.clock.now()),
        };
        let now = minute(self.clock.now());
        let (stored, event) = {
            let mut account = self.lock();
            let existing = account.records.get(&(record, id.clone())).cloned();
            let event = if existing.is_some() { "edit" } else { "create" };
            let mut stored = existing.unwrap_or_else(|| json!({"id": id, "createdDate": now}));
            merge(&mut stored, fields, &[]).map_err(|e| invalid(&e.to_string()))?;
            stored["lastModifiedDate"] = json!(modified);
            account.records.insert((record, id), stored.clone());
            (stored, event)
        };
        self.fire_webhook(record, &stored, event);
        Ok(stored)
    }
}

#[cfg(test)]
mod rest_tests;
#[cfg(test)]
mod s5_tests;
