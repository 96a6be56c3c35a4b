//! The DingTalk OpenAPI transport (reference §0.1, §1, §8): one app's credentials, its cached
//! access token, and the two calling conventions.
//!
//! - New API (`api.dingtalk.com/v1.0/...`): token in the `x-acs-dingtalk-access-token` header,
//!   camelCase JSON, failures as HTTP 4xx/5xx `{code, message, requestid}`.
//! - Old API (`oapi.dingtalk.com/topapi/...`): token as `?access_token=`, snake_case JSON,
//!   failures as HTTP 200 with `errcode != 0`.
//!
//! Every call is paced per API path at `qps_per_api` in any 1 s window (DingTalk's per-app,
//! per-API limit, §8.1), so a burst from the outbox queues here instead of earning 90018 / 403
//! answers. A rejected token is dropped, fetched again once and the call retried once; concurrent
//! calls that all saw the same rejected token share that single refresh
//! ([`TokenCache::invalidate`] only drops the token it was given).

use super::errors::{ip_ban, new_api_failure, old_api_answer, ApiClass, ApiFailure};
use super::token::{NewApiTokenFetcher, OldApiTokenFetcher, TOKEN_REFRESH_MARGIN};
use super::VENDOR;
use connect::http::{read_body_capped, HttpClient, HttpSettings, Outbound};
use connect::ratelimit::RollingWindow;
use connect::retry_after::parse_retry_after;
use connect::token::{TokenCache, TokenFetcher};
use connect::{Clock, DeliveryError};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use url::Url;

pub const MAINLAND_OLD_API_BASE: &str = "https://oapi.dingtalk.com";
pub const MAINLAND_NEW_API_BASE: &str = "https://api.dingtalk.com";
pub const OVERSEAS_OLD_API_BASE: &str = "https://oapi.dingtalk.io";
pub const OVERSEAS_NEW_API_BASE: &str = "https://api.dingtalk.io";
/// DingTalk's per-app, per-API limit for a standard-edition org (reference §8.1).
pub const DEFAULT_QPS_PER_API: u32 = 20;
/// DingTalk answers within 3 s or reports a timeout itself; 10 s leaves room for the network.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The new-API token header (sent raw, no quotes or `Bearer`).
pub const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

/// QPS windows are 1 s (reference §8.1).
const QPS_WINDOW: Duration = Duration::from_secs(1);
/// After DingTalk itself says a QPS window is full, that API is paused this long for everyone.
const QPS_PENALTY: Duration = Duration::from_secs(1);
/// Largest answer read; approval instances with long forms are the biggest (tens of KiB).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Distinct API paths with their own limiter. Paths carrying ids (e.g. a unionId) would grow the
/// map without bound, so past this size idle limiters are dropped.
const MAX_LIMITERS: usize = 1024;

/// The `{success, result}` answer of several new-API calls (cards, workflow): `success` is a
/// bool or a string depending on the API, and some answers leave it out.
#[derive(Debug, serde::Deserialize)]
pub struct Envelope<R> {
    #[serde(default)]
    pub success: Option<serde_json::Value>,
    pub result: Option<R>,
}

impl<R> Envelope<R> {
    pub fn succeeded(&self) -> bool {
        use serde_json::Value;
        match &self.success {
            None | Some(Value::Null) => true,
            Some(Value::Bool(ok)) => *ok,
            Some(Value::String(text)) => text.eq_ignore_ascii_case("true"),
            Some(_) => false,
        }
    }

    /// The result, or `Rejected` when DingTalk answered `success: false` to `api`.
    pub fn into_result(self, api: &str) -> Result<Option<R>, DeliveryError> {
        if self.succeeded() {
            Ok(self.result)
        } else {
            Err(DeliveryError::Rejected { vendor: VENDOR, detail: format!("{api}: DingTalk answered success=false") })
        }
    }
}

/// One internal app's credentials.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    /// AppKey = ClientID = robotCode of the app's robot.
    pub app_key: String,
    pub app_secret: SecretString,
    /// Needed by work notifications (old API).
    pub agent_id: Option<i64>,
    pub corp_id: Option<String>,
}

/// Which endpoint issues the token; both give the same internal-app token (reference §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenEndpoint {
    /// `POST {new_api_base}/v1.0/oauth2/accessToken`.
    #[default]
    NewApi,
    /// `GET {old_api_base}/gettoken`.
    OldApi,
}

/// Where and how to call DingTalk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenApiSettings {
    /// Scheme and host of the old API, no path (`https://oapi.dingtalk.com`).
    pub old_api_base: String,
    /// Scheme and host of the new API, no path (`https://api.dingtalk.com`).
    pub new_api_base: String,
    pub token_endpoint: TokenEndpoint,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Calls per API path in any 1 s window; 0 = unpaced (benchmarks against the simulator).
    pub qps_per_api: u32,
    /// Private hosts that may be reached and extra TLS trust (public hosts only by default).
    pub outbound: Outbound,
}

impl OpenApiSettings {
    /// Mainland DingTalk (`*.dingtalk.com`).
    pub fn mainland() -> Self {
        Self::with_bases(MAINLAND_OLD_API_BASE, MAINLAND_NEW_API_BASE)
    }

    /// The overseas build (`*.dingtalk.io`).
    pub fn overseas() -> Self {
        Self::with_bases(OVERSEAS_OLD_API_BASE, OVERSEAS_NEW_API_BASE)
    }

    /// Both APIs at `base` (a simulator URL). Its host is reachable even when it is loopback or
    /// private: exactly that host, nothing else.
    pub fn with_base(base: &str) -> Self {
        let mut settings = Self::with_bases(base, base);
        if let Ok(url) = Url::parse(base) {
            settings.outbound.private_hosts.allow_url_host(&url);
        }
        settings
    }

    fn with_bases(old: &str, new: &str) -> Self {
        Self {
            old_api_base: old.to_owned(),
            new_api_base: new.to_owned(),
            token_endpoint: TokenEndpoint::NewApi,
            timeout: DEFAULT_TIMEOUT,
            qps_per_api: DEFAULT_QPS_PER_API,
            outbound: Outbound::default(),
        }
    }
}

struct Inner {
    credentials: AppCredentials,
    old_base: Url,
    new_base: Url,
    http: HttpClient,
    tokens: TokenCache,
    qps_per_api: u32,
    limiters: Mutex<HashMap<String, Arc<RollingWindow>>>,
    clock: Arc<dyn Clock>,
}

/// One app's OpenAPI client. Cheap to clone; clones share the token and the pacing.
#[derive(Clone)]
pub struct OpenApi {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OpenApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenApi")
            .field("app_key", &self.inner.credentials.app_key)
            .field("old_api_base", &self.inner.old_base.as_str())
            .field("new_api_base", &self.inner.new_base.as_str())
            .finish_non_exhaustive()
    }
}

fn invalid_settings(detail: String) -> DeliveryError {
    DeliveryError::Rejected { vendor: VENDOR, detail: format!("DingTalk app settings are invalid: {detail}") }
}

fn parse_base(name: &str, base: &str) -> Result<Url, DeliveryError> {
    let url = Url::parse(base).map_err(|err| invalid_settings(format!("{name} `{base}` is not a URL ({err})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid_settings(format!("{name} `{base}` must be http(s)://host")));
    }
    if url.query().is_some() || !url.path().trim_end_matches('/').is_empty() {
        return Err(invalid_settings(format!("{name} `{base}` must have no path or query")));
    }
    Ok(url)
}

/// The outcome of one attempt, before the token-refresh decision.
enum Attempt<R> {
    Done(R),
    Failed(ApiFailure),
}

impl OpenApi {
    pub fn new(
        credentials: AppCredentials,
        settings: OpenApiSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeliveryError> {
        if credentials.app_key.trim().is_empty() {
            return Err(invalid_settings("app_key is empty; copy the AppKey (Client ID) of the app".to_owned()));
        }
        if credentials.app_secret.expose_secret().trim().is_empty() {
            return Err(invalid_settings("app_secret is empty; copy the AppSecret (Client Secret)".to_owned()));
        }
        if settings.timeout.is_zero() {
            return Err(invalid_settings("timeout must be greater than zero".to_owned()));
        }
        let old_base = parse_base("old_api_base", &settings.old_api_base)?;
        let new_base = parse_base("new_api_base", &settings.new_api_base)?;
        let http = HttpClient::new(HttpSettings {
            timeout: settings.timeout,
            connect_timeout: settings.timeout.min(HttpSettings::default().connect_timeout),
            outbound: settings.outbound.clone(),
            ..HttpSettings::default()
        })
        .map_err(|err| invalid_settings(err.to_string()))?;
        let fetcher: Arc<dyn TokenFetcher> = match settings.token_endpoint {
            TokenEndpoint::NewApi => Arc::new(NewApiTokenFetcher::new(
                http.clone(),
                &settings.new_api_base,
                &credentials.app_key,
                credentials.app_secret.clone(),
                clock.clone(),
            )?),
            TokenEndpoint::OldApi => Arc::new(OldApiTokenFetcher::new(
                http.clone(),
                &settings.old_api_base,
                &credentials.app_key,
                credentials.app_secret.clone(),
                clock.clone(),
            )?),
        };
        let tokens = TokenCache::new(fetcher, TOKEN_REFRESH_MARGIN, clock.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                credentials,
                old_base,
                new_base,
                http,
                tokens,
                qps_per_api: settings.qps_per_api,
                limiters: Mutex::new(HashMap::new()),
                clock,
            }),
        })
    }

    pub fn app_key(&self) -> &str {
        &self.inner.credentials.app_key
    }

    /// Calls each API of the app may take in any second (`qps_per_api`).
    pub fn qps_per_api(&self) -> u32 {
        self.inner.qps_per_api
    }

    pub fn agent_id(&self) -> Option<i64> {
        self.inner.credentials.agent_id
    }

    pub fn corp_id(&self) -> Option<&str> {
        self.inner.credentials.corp_id.as_deref()
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.inner.tokens
    }

    /// The pacing limiter of one API path (created on first use).
    pub fn limiter(&self, path: &str) -> Arc<RollingWindow> {
        let mut limiters = self.lock_limiters();
        if let Some(limiter) = limiters.get(path) {
            return limiter.clone();
        }
        if limiters.len() >= MAX_LIMITERS {
            // Only limiters nobody holds right now; their windows are at most 1 s of history.
            limiters.retain(|_, l| Arc::strong_count(l) > 1);
        }
        let limiter = Arc::new(RollingWindow::new(self.inner.qps_per_api, QPS_WINDOW));
        limiters.insert(path.to_owned(), limiter.clone());
        limiter
    }

    fn lock_limiters(&self) -> MutexGuard<'_, HashMap<String, Arc<RollingWindow>>> {
        // Inserts and removals are single map operations, so a poisoned map is still whole.
        self.inner.limiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn url(&self, base: &Url, path: &str) -> Result<Url, DeliveryError> {
        if !path.starts_with('/') {
            return Err(DeliveryError::BadPayload {
                destination: format!("DingTalk {path}"),
                detail: "the API path must start with `/`".to_owned(),
            });
        }
        base.join(path).map_err(|err| DeliveryError::BadPayload {
            destination: format!("DingTalk {path}"),
            detail: format!("the API path is not valid in a URL ({err})"),
        })
    }

    fn retry_after(&self, resp: &reqwest::Response) -> Option<Duration> {
        resp.headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.inner.clock.now()))
    }

    /// Runs `attempt` with a token; on a rejected token drops it, fetches once and runs once more.
    async fn with_token<R, F, Fut>(&self, path: &str, attempt: F) -> Result<R, DeliveryError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: std::future::Future<Output = Result<Attempt<R>, DeliveryError>>,
    {
        let limiter = self.limiter(path);
        let mut refreshed = false;
        loop {
            limiter.acquire().await;
            let token = self.inner.tokens.get().await?;
            let failure = match attempt(token.clone()).await? {
                Attempt::Done(value) => return Ok(value),
                Attempt::Failed(failure) => failure,
            };
            match failure.class {
                ApiClass::TokenRejected if !refreshed => {
                    tracing::info!(app_key = %self.app_key(), api = path, "DingTalk rejected the access token; refreshing once.");
                    self.inner.tokens.invalidate(&token).await;
                    refreshed = true;
                }
                ApiClass::Qps => {
                    // DingTalk counts differently from us (other processes, clock skew): pause
                    // this API for everyone, not only this delivery.
                    limiter.block_until(tokio::time::Instant::now() + QPS_PENALTY);
                    return Err(failure.error);
                }
                _ => return Err(failure.error),
            }
        }
    }

    /// New API call: `method {new_api_base}{path}?query` with the token header and an optional
    /// JSON body; the 2xx body is deserialised into `R` (an empty body reads as `null`, so `R`
    /// may be `()` or `Option<_>`).
    pub async fn call_new<B: Serialize + ?Sized + Sync, R: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&B>,
    ) -> Result<R, DeliveryError> {
        let mut url = self.url(&self.inner.new_base, path)?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let api = format!("{method} {path}");
        let body = body.map(serde_json::to_vec).transpose().map_err(|err| DeliveryError::BadPayload {
            destination: format!("DingTalk {api}"),
            detail: err.to_string(),
        })?;
        self.with_token(path, |token| {
            let (url, api, method, body) = (url.clone(), api.as_str(), method.clone(), body.clone());
            async move {
                let mut request = self
                    .inner
                    .http
                    .request(method, url)
                    .header(TOKEN_HEADER, token.expose_secret())
                    .header(http::header::ACCEPT, "application/json");
                if let Some(body) = body {
                    request = request.header(http::header::CONTENT_TYPE, "application/json; charset=utf-8").body(body);
                }
                let resp = self.inner.http.send(request).await?;
                let status = resp.status().as_u16();
                let retry_after = self.retry_after(&resp);
                let bytes = read_body_capped(resp, MAX_ANSWER_BYTES).await?;
                if !(200..300).contains(&status) {
                    return Ok(Attempt::Failed(new_api_failure(api, status, retry_after, &bytes)));
                }
                if let Some(ban) = ip_ban(api, status, &bytes) {
                    return Ok(Attempt::Failed(ban));
                }
                let slice: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { &bytes };
                decode(api, status, slice).map(Attempt::Done)
            }
        })
        .await
    }

    /// Old API call: `POST {old_api_base}{path}?access_token=` with a JSON body. `errcode != 0`
    /// is a classified error; on success the whole body (errcode, errmsg, result, …) is
    /// deserialised into `R`.
    pub async fn call_old<B: Serialize + ?Sized + Sync, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, DeliveryError> {
        let url = self.url(&self.inner.old_base, path)?;
        let api = format!("POST {path}");
        let body = serde_json::to_vec(body).map_err(|err| DeliveryError::BadPayload {
            destination: format!("DingTalk {api}"),
            detail: err.to_string(),
        })?;
        self.with_token(path, |token| {
            let (mut url, api, body) = (url.clone(), api.as_str(), body.clone());
            async move {
                url.query_pairs_mut().append_pair("access_token", token.expose_secret());
                let request = self
                    .inner
                    .http
                    .post(url)
                    .header(http::header::ACCEPT, "application/json")
                    .header(http::header::CONTENT_TYPE, "application/json; charset=utf-8")
                    .body(body);
                let resp = self.inner.http.send(request).await?;
                let status = resp.status().as_u16();
                let retry_after = self.retry_after(&resp);
                let bytes = read_body_capped(resp, MAX_ANSWER_BYTES).await?;
                match old_api_answer(api, status, retry_after, &bytes) {
                    Ok(value) => serde_json::from_value(value).map(Attempt::Done).map_err(|err| shape_error(api, &err)),
                    Err(failure) => Ok(Attempt::Failed(failure)),
                }
            }
        })
        .await
    }
}

/// A 2xx body: not JSON at all means a damaged answer (retry); JSON of the wrong shape means the
/// call ran but we cannot read its result, and retrying could repeat a write (dead-letter).
fn decode<R: DeserializeOwned>(api: &str, status: u16, body: &[u8]) -> Result<R, DeliveryError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Err(err) => {
            Err(DeliveryError::Server { vendor: VENDOR, status, detail: format!("{api}: unreadable answer ({err})") })
        }
        Ok(value) => serde_json::from_value(value).map_err(|err| shape_error(api, &err)),
    }
}

fn shape_error(api: &str, err: &serde_json::Error) -> DeliveryError {
    DeliveryError::Rejected {
        vendor: VENDOR,
        detail: format!("{api}: DingTalk accepted the call but its answer has an unexpected shape ({err})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::sim::org::{Org, SEED_APP_KEY, SEED_APP_SECRET};
    use axum::extract::{RawQuery, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use connect::{Disposition, SystemClock};
    use serde_json::{json, Value};
    use std::sync::atomic::{AtomicU64, Ordering};

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        base
    }

    fn credentials() -> AppCredentials {
        AppCredentials {
            app_key: SEED_APP_KEY.to_owned(),
            app_secret: SEED_APP_SECRET.to_owned().into(),
            agent_id: Some(3_120_001),
            corp_id: None,
        }
    }

    fn client(base: &str, endpoint: TokenEndpoint) -> OpenApi {
        let settings = OpenApiSettings { token_endpoint: endpoint, ..OpenApiSettings::with_base(base) };
        OpenApi::new(credentials(), settings, Arc::new(SystemClock)).unwrap()
    }

    /// A DingTalk stand-in: tokens are `token-1`, `token-2`, … per fetch; business calls accept
    /// only tokens numbered `accept_from` or later and answer InvalidAuthentication (new) or
    /// 88/40014 (old) otherwise.
    struct Stub {
        fetches: AtomicU64,
        calls: AtomicU64,
        accept_from: u64,
        last_query: std::sync::Mutex<Option<String>>,
    }

    impl Stub {
        fn accepts(&self, token: &str) -> bool {
            token.strip_prefix("token-").and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= self.accept_from)
        }
    }

    async fn stub(accept_from: u64) -> (Arc<Stub>, String) {
        let state = Arc::new(Stub {
            fetches: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            accept_from,
            last_query: std::sync::Mutex::new(None),
        });
        async fn issue(State(s): State<Arc<Stub>>) -> Json<Value> {
            let n = s.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Json(json!({ "accessToken": format!("token-{n}"), "expireIn": 7200 }))
        }
        async fn issue_old(State(s): State<Arc<Stub>>) -> Json<Value> {
            let n = s.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Json(json!({ "errcode": 0, "errmsg": "ok", "access_token": format!("token-{n}"), "expires_in": 7200 }))
        }
        async fn business(
            State(s): State<Arc<Stub>>,
            headers: http::HeaderMap,
            RawQuery(query): RawQuery,
            body: axum::body::Bytes,
        ) -> Response {
            s.calls.fetch_add(1, Ordering::SeqCst);
            *s.last_query.lock().unwrap() = query;
            // Let concurrent calls overlap at the server.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !s.accepts(token) {
                let body =
                    json!({"code": "InvalidAuthentication", "requestid": "REQ-1", "message": "不合法的access_token"});
                return (http::StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
            let echo: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            Json(json!({ "ok": true, "echo": echo })).into_response()
        }
        async fn business_old(
            State(s): State<Arc<Stub>>,
            RawQuery(query): RawQuery,
            body: axum::body::Bytes,
        ) -> Response {
            s.calls.fetch_add(1, Ordering::SeqCst);
            let token = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .find(|(k, _)| k == "access_token")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if !s.accepts(&token) {
                return Json(json!({"errcode": 88, "sub_code": "40014", "sub_msg": "不合法的access_token",
                    "errmsg": "ding talk error[subcode=40014,submsg=不合法的access_token]", "request_id": "abc123"}))
                .into_response();
            }
            let echo: Value = serde_json::from_slice(&body).unwrap();
            Json(json!({ "errcode": 0, "errmsg": "ok", "result": echo, "request_id": "def456" })).into_response()
        }
        let router = Router::new()
            .route("/v1.0/oauth2/accessToken", post(issue))
            .route("/gettoken", get(issue_old))
            .route("/v1.0/test/thing", post(business).get(business))
            .route("/topapi/test/thing", post(business_old))
            .route("/v1.0/test/empty", get(|| async { "" }))
            .route("/v1.0/test/html", get(|| async { "<html>proxy</html>" }))
            .route(
                "/v1.0/test/qps",
                get(|| async {
                    let body = json!({"code": "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "requestid": "Q1", "message": "qps"});
                    (http::StatusCode::FORBIDDEN, Json(body))
                }),
            )
            .with_state(state.clone());
        let base = serve(router).await;
        (state, base)
    }

    #[derive(Debug, serde::Deserialize)]
    struct Thing {
        ok: bool,
        echo: Value,
    }

    #[tokio::test]
    async fn a_rejected_token_is_refetched_once_and_the_call_retried_once() {
        let (stub, base) = stub(2).await;
        let api = client(&base, TokenEndpoint::NewApi);
        let thing: Thing =
            api.call_new(http::Method::POST, "/v1.0/test/thing", &[], Some(&json!({"a": 1}))).await.unwrap();
        assert!(thing.ok);
        assert_eq!(thing.echo, json!({"a": 1}));
        assert_eq!(stub.fetches.load(Ordering::SeqCst), 2, "one initial fetch, one refresh");
        assert_eq!(stub.calls.load(Ordering::SeqCst), 2, "one call, one retry");
        assert_eq!(api.tokens().fetch_count(), 2);
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_refresh() {
        let (stub, base) = stub(2).await;
        let api = client(&base, TokenEndpoint::NewApi);
        let calls = (0..15).map(|i| {
            let api = api.clone();
            async move {
                api.call_new::<_, Thing>(http::Method::POST, "/v1.0/test/thing", &[], Some(&json!({"i": i}))).await
            }
        });
        let results = futures::future::join_all(calls).await;
        for (i, result) in results.into_iter().enumerate() {
            assert_eq!(result.unwrap().echo, json!({"i": i}));
        }
        assert_eq!(stub.fetches.load(Ordering::SeqCst), 2, "15 rejected calls cause a single refresh");
        assert!(stub.calls.load(Ordering::SeqCst) <= 30);
    }

    #[tokio::test]
    async fn a_token_rejected_after_the_refresh_is_an_auth_error() {
        let (stub, base) = stub(u64::MAX).await;
        let api = client(&base, TokenEndpoint::NewApi);
        let err = api.call_new::<Value, Value>(http::Method::GET, "/v1.0/test/thing", &[], None).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Auth, "{err}");
        let text = err.to_string();
        assert!(text.contains("InvalidAuthentication") && text.contains("REQ-1"), "{text}");
        assert!(!text.contains("token-"), "the token must not appear: {text}");
        assert_eq!(stub.calls.load(Ordering::SeqCst), 2, "never more than one retry");
        assert_eq!(stub.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn old_api_calls_carry_the_query_token_and_refresh_on_40014() {
        let (stub, base) = stub(2).await;
        let api = client(&base, TokenEndpoint::OldApi);
        #[derive(serde::Deserialize)]
        struct Answer {
            errcode: i64,
            result: Value,
            request_id: String,
        }
        let answer: Answer = api.call_old("/topapi/test/thing", &json!({"userid": "manager4711"})).await.unwrap();
        assert_eq!((answer.errcode, answer.request_id.as_str()), (0, "def456"));
        assert_eq!(answer.result, json!({"userid": "manager4711"}));
        assert_eq!(stub.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(stub.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn query_empty_bodies_and_damaged_answers() {
        let (stub, base) = stub(1).await;
        let api = client(&base, TokenEndpoint::NewApi);
        let query = [("robotCode", "dingbridgehk0001apps"), ("processQueryKey", "a b&c")];
        let _: Thing = api.call_new::<Value, _>(http::Method::GET, "/v1.0/test/thing", &query, None).await.unwrap();
        let seen = stub.last_query.lock().unwrap().clone().unwrap();
        assert_eq!(seen, "robotCode=dingbridgehk0001apps&processQueryKey=a+b%26c");
        api.call_new::<Value, ()>(http::Method::GET, "/v1.0/test/empty", &[], None).await.unwrap();
        let err = api.call_new::<Value, Value>(http::Method::GET, "/v1.0/test/html", &[], None).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Retry, "{err}");
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)] // Only the failure to read it matters.
        struct Other {
            missing: String,
        }
        let err = api.call_new::<Value, Other>(http::Method::GET, "/v1.0/test/thing", &[], None).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Permanent, "{err}");
        assert!(err.to_string().contains("unexpected shape"), "{err}");
    }

    #[tokio::test]
    async fn a_qps_answer_throttles_and_pauses_that_api() {
        let (_stub, base) = stub(1).await;
        let api = client(&base, TokenEndpoint::NewApi);
        let err = api.call_new::<Value, Value>(http::Method::GET, "/v1.0/test/qps", &[], None).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(1)), "{err}");
        assert!(err.to_string().contains("Q1"), "{err}");
        assert!(api.limiter("/v1.0/test/qps").blocked_until().is_some());
        assert!(api.limiter("/v1.0/test/thing").blocked_until().is_none());
    }

    #[tokio::test]
    async fn calls_are_paced_per_api_path() {
        let (_stub, base) = stub(1).await;
        let settings = OpenApiSettings { qps_per_api: 2, ..OpenApiSettings::with_base(&base) };
        let api = OpenApi::new(credentials(), settings, Arc::new(SystemClock)).unwrap();
        for _ in 0..2 {
            let _: Thing = api.call_new::<Value, _>(http::Method::GET, "/v1.0/test/thing", &[], None).await.unwrap();
        }
        let limiter = api.limiter("/v1.0/test/thing");
        assert_eq!(limiter.max(), Some(2));
        assert_eq!(limiter.window(), Duration::from_secs(1));
        assert!(limiter.try_acquire().is_err(), "the 1 s window of this API is full");
        assert!(api.limiter("/v1.0/test/empty").try_acquire().is_ok(), "another API has its own window");
        assert!(Arc::ptr_eq(&limiter, &api.limiter("/v1.0/test/thing")));
        assert_eq!(client(&base, TokenEndpoint::NewApi).limiter("/x").max(), Some(DEFAULT_QPS_PER_API));
    }

    /// The client against the simulated organisation: real token endpoints, placement checks
    /// and expiry, through a test route that only authorises.
    #[tokio::test]
    async fn end_to_end_against_the_simulated_org() {
        let org = Org::seeded(Arc::new(SystemClock));
        let new_route = |State(org): State<Arc<Org>>, headers: http::HeaderMap| async move {
            match org.authorize_new(&headers, "test.whoami") {
                Ok(app) => Json(json!({ "appKey": app.app_key, "agentId": app.agent_id })).into_response(),
                Err(resp) => resp,
            }
        };
        let old_route = |State(org): State<Arc<Org>>, RawQuery(query): RawQuery| async move {
            match org.authorize_old(query.as_deref(), "test.whoami") {
                Ok(app) => Json(json!({ "errcode": 0, "errmsg": "ok", "result": { "agent_id": app.agent_id } }))
                    .into_response(),
                Err(resp) => resp,
            }
        };
        let router = org.clone().router().merge(
            Router::new()
                .route("/v1.0/test/whoami", get(new_route))
                .route("/topapi/test/whoami", post(old_route))
                .with_state(org.clone()),
        );
        let base = serve(router).await;
        for endpoint in [TokenEndpoint::NewApi, TokenEndpoint::OldApi] {
            org.reset();
            let api = client(&base, endpoint);
            let me: Value = api.call_new::<Value, _>(http::Method::GET, "/v1.0/test/whoami", &[], None).await.unwrap();
            assert_eq!(me, json!({ "appKey": SEED_APP_KEY, "agentId": 3_120_001 }));
            let old: Value = api.call_old("/topapi/test/whoami", &json!({})).await.unwrap();
            assert_eq!(old["result"]["agent_id"], 3_120_001);
            assert_eq!(api.tokens().fetch_count(), 1, "{endpoint:?}: one token serves both generations");

            org.expire_tokens();
            let _: Value = api.call_new::<Value, _>(http::Method::GET, "/v1.0/test/whoami", &[], None).await.unwrap();
            org.expire_tokens();
            let _: Value = api.call_old("/topapi/test/whoami", &json!({})).await.unwrap();
            assert_eq!(api.tokens().fetch_count(), 3, "{endpoint:?}: each expiry costs exactly one refresh");
            assert_eq!(org.tokens_issued(), 3);
        }
        // Wrong credentials surface as Auth on the first call.
        let bad = AppCredentials { app_secret: "nope".to_owned().into(), ..credentials() };
        let api = OpenApi::new(bad, OpenApiSettings::with_base(&base), Arc::new(SystemClock)).unwrap();
        let err = api.call_new::<Value, Value>(http::Method::GET, "/v1.0/test/whoami", &[], None).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Auth, "{err}");
    }

    #[test]
    fn settings_are_validated() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        assert_eq!(OpenApiSettings::mainland().new_api_base, "https://api.dingtalk.com");
        assert_eq!(OpenApiSettings::overseas().old_api_base, "https://oapi.dingtalk.io");
        assert!(OpenApi::new(credentials(), OpenApiSettings::mainland(), clock.clone()).is_ok());
        let bad_settings = [
            OpenApiSettings::with_base("http://127.0.0.1:1/v1.0"),
            OpenApiSettings::with_base("127.0.0.1:1"),
            OpenApiSettings { timeout: Duration::ZERO, ..OpenApiSettings::mainland() },
        ];
        for settings in bad_settings {
            let err = OpenApi::new(credentials(), settings, clock.clone()).unwrap_err();
            assert_eq!(err.disposition(), Disposition::Permanent, "{err}");
        }
        for creds in [
            AppCredentials { app_key: " ".to_owned(), ..credentials() },
            AppCredentials { app_secret: String::new().into(), ..credentials() },
        ] {
            let err = OpenApi::new(creds, OpenApiSettings::mainland(), clock.clone()).unwrap_err();
            assert!(err.to_string().contains("invalid"), "{err}");
            assert!(!err.to_string().contains(SEED_APP_SECRET));
        }
        let api = OpenApi::new(credentials(), OpenApiSettings::mainland(), clock).unwrap();
        assert_eq!((api.app_key(), api.agent_id()), (SEED_APP_KEY, Some(3_120_001)));
        assert!(!format!("{api:?}").contains(SEED_APP_SECRET));
    }
}
