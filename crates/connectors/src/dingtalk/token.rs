//! DingTalk's two token endpoints as [`TokenFetcher`]s (reference §1). Both issue the same
//! internal-app access token (7200 s); which one a deployment uses is a setting
//! (`openapi::TokenEndpoint`).
//!
//! The old endpoint carries the app secret in the query string. `connect::http` errors and logs
//! show URLs through `redact_url`, which drops the whole query, so the secret never reaches an
//! error or a log line; this module never logs a URL itself.

use super::errors::{new_api_failure, old_api_answer};
use super::VENDOR;
use connect::http::{read_body_capped, HttpClient};
use connect::retry_after::parse_retry_after;
use connect::token::{FetchedToken, TokenFetcher};
use connect::{Clock, DeliveryError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// DingTalk's token lifetime, used when an answer leaves it out.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// Refresh this long before expiry, as DingTalk's official SDK does.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Path of the new-API token endpoint.
pub const NEW_TOKEN_PATH: &str = "/v1.0/oauth2/accessToken";
/// Path of the old-API token endpoint.
pub const OLD_TOKEN_PATH: &str = "/gettoken";

/// Token answers are tiny; anything bigger is not DingTalk.
const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;

fn endpoint_url(base: &str, path: &str) -> Result<Url, DeliveryError> {
    let joined = format!("{}{path}", base.trim_end_matches('/'));
    Url::parse(&joined).map_err(|err| DeliveryError::Rejected {
        vendor: VENDOR,
        detail: format!(
            "the DingTalk API base URL `{base}` is not a URL ({err}); configure e.g. https://api.dingtalk.com"
        ),
    })
}

fn retry_after_of(resp: &reqwest::Response, clock: &dyn Clock) -> Option<Duration> {
    resp.headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, clock.now()))
}

fn lifetime(seconds: Option<i64>) -> Duration {
    match seconds {
        Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs()),
        _ => DEFAULT_TOKEN_LIFETIME,
    }
}

fn missing_token(api: &str) -> DeliveryError {
    DeliveryError::Server { vendor: VENDOR, status: 200, detail: format!("{api}: the answer carried no access token") }
}

/// What both token endpoints need: the endpoint URL and the app's credentials.
struct AppTokenRequest {
    http: HttpClient,
    url: Url,
    app_key: String,
    app_secret: SecretString,
    clock: Arc<dyn Clock>,
}

impl AppTokenRequest {
    fn new(
        http: HttpClient,
        base: &str,
        path: &str,
        app_key: &str,
        app_secret: SecretString,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeliveryError> {
        Ok(Self { http, url: endpoint_url(base, path)?, app_key: app_key.to_owned(), app_secret, clock })
    }

    /// Sends `request`; the status, the Retry-After and the (capped) body.
    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<std::time::Duration>, Vec<u8>), DeliveryError> {
        let resp = self.http.send(request.header(http::header::ACCEPT, "application/json")).await?;
        let status = resp.status().as_u16();
        let retry_after = retry_after_of(&resp, self.clock.as_ref());
        Ok((status, retry_after, read_body_capped(resp, MAX_TOKEN_ANSWER_BYTES).await?.to_vec()))
    }
}

// The secret is never shown; the URL and app key are not secret.
impl std::fmt::Debug for AppTokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTokenRequest").field("url", &self.url.as_str()).field("app_key", &self.app_key).finish()
    }
}

/// `POST {new_api_base}/v1.0/oauth2/accessToken` with `{appKey, appSecret}` → `{accessToken, expireIn}`.
#[derive(Debug)]
pub struct NewApiTokenFetcher(AppTokenRequest);

impl NewApiTokenFetcher {
    pub fn new(
        http: HttpClient,
        new_api_base: &str,
        app_key: &str,
        app_secret: SecretString,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeliveryError> {
        AppTokenRequest::new(http, new_api_base, NEW_TOKEN_PATH, app_key, app_secret, clock).map(Self)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewTokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expire_in: Option<i64>,
}

#[async_trait::async_trait]
impl TokenFetcher for NewApiTokenFetcher {
    async fn fetch(&self) -> Result<FetchedToken, DeliveryError> {
        let api = format!("POST {NEW_TOKEN_PATH}");
        let req = &self.0;
        let body = serde_json::json!({ "appKey": req.app_key, "appSecret": req.app_secret.expose_secret() });
        let (status, retry_after, bytes) = req.answer(req.http.post(req.url.clone()).json(&body)).await?;
        if !(200..300).contains(&status) {
            return Err(new_api_failure(&api, status, retry_after, &bytes).error);
        }
        let answer: NewTokenAnswer = serde_json::from_slice(&bytes).map_err(|err| DeliveryError::Server {
            vendor: VENDOR,
            status,
            detail: format!("{api}: unreadable token answer ({err})"),
        })?;
        let value = answer.access_token.filter(|t| !t.is_empty()).ok_or_else(|| missing_token(&api))?;
        Ok(FetchedToken { value: value.into(), lifetime: lifetime(answer.expire_in) })
    }
}

/// `GET {old_api_base}/gettoken?appkey=&appsecret=` → `{errcode, access_token, expires_in}`.
#[derive(Debug)]
pub struct OldApiTokenFetcher(AppTokenRequest);

impl OldApiTokenFetcher {
    pub fn new(
        http: HttpClient,
        old_api_base: &str,
        app_key: &str,
        app_secret: SecretString,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeliveryError> {
        AppTokenRequest::new(http, old_api_base, OLD_TOKEN_PATH, app_key, app_secret, clock).map(Self)
    }
}

#[derive(Deserialize)]
struct OldTokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[async_trait::async_trait]
impl TokenFetcher for OldApiTokenFetcher {
    async fn fetch(&self) -> Result<FetchedToken, DeliveryError> {
        let api = format!("GET {OLD_TOKEN_PATH}");
        let req = &self.0;
        let mut url = req.url.clone();
        url.query_pairs_mut()
            .append_pair("appkey", &req.app_key)
            .append_pair("appsecret", req.app_secret.expose_secret());
        let (status, retry_after, bytes) = req.answer(req.http.get(url)).await?;
        let value = old_api_answer(&api, status, retry_after, &bytes).map_err(|failure| failure.error)?;
        let answer: OldTokenAnswer = serde_json::from_value(value).map_err(|err| DeliveryError::Server {
            vendor: VENDOR,
            status,
            detail: format!("{api}: unreadable token answer ({err})"),
        })?;
        let value = answer.access_token.filter(|t| !t.is_empty()).ok_or_else(|| missing_token(&api))?;
        Ok(FetchedToken { value: value.into(), lifetime: lifetime(answer.expires_in) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::sim::org::{Org, SEED_APP_KEY, SEED_APP_SECRET};
    use axum::routing::post;
    use connect::http::HttpSettings;
    use connect::{Disposition, SystemClock};
    use serde_json::{json, Value};

    fn http() -> HttpClient {
        HttpClient::new(HttpSettings { timeout: Duration::from_secs(5), ..HttpSettings::loopback() }).unwrap()
    }

    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        base
    }

    async fn sim_base() -> String {
        serve(Org::seeded(Arc::new(SystemClock)).router()).await
    }

    fn new_fetcher(base: &str, secret: &str) -> NewApiTokenFetcher {
        NewApiTokenFetcher::new(http(), base, SEED_APP_KEY, secret.to_owned().into(), Arc::new(SystemClock)).unwrap()
    }

    fn old_fetcher(base: &str, secret: &str) -> OldApiTokenFetcher {
        OldApiTokenFetcher::new(http(), base, SEED_APP_KEY, secret.to_owned().into(), Arc::new(SystemClock)).unwrap()
    }

    #[tokio::test]
    async fn both_endpoints_issue_the_same_app_token() {
        let base = sim_base().await;
        let new = new_fetcher(&base, SEED_APP_SECRET).fetch().await.unwrap();
        let old = old_fetcher(&base, SEED_APP_SECRET).fetch().await.unwrap();
        assert_eq!(new.lifetime, Duration::from_secs(7200));
        assert_eq!(old.lifetime, Duration::from_secs(7200));
        assert!(!new.value.expose_secret().is_empty());
        assert_eq!(new.value.expose_secret(), old.value.expose_secret());
    }

    #[tokio::test]
    async fn bad_credentials_are_auth_errors_without_the_secret() {
        let base = sim_base().await;
        let secret = "wrong-secret-value-0123456789";
        let err = new_fetcher(&base, secret).fetch().await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Auth, "{err}");
        assert!(err.to_string().contains("invalidClientIdOrSecret"), "{err}");
        assert!(!err.to_string().contains(secret));
        let err = old_fetcher(&base, secret).fetch().await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Auth, "{err}");
        assert!(err.to_string().contains("40096"), "{err}");
        assert!(!err.to_string().contains(secret), "{err}");
    }

    #[tokio::test]
    async fn a_transport_failure_does_not_leak_the_secret_in_the_query() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let secret = "secret-in-the-query-0123456789";
        let err = old_fetcher(&base, secret).fetch().await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Retry, "{err}");
        let text = format!("{err} {err:?}");
        assert!(text.contains("/gettoken") && !text.contains(secret), "{text}");
    }

    #[tokio::test]
    async fn the_new_api_request_matches_the_sdk_capture() {
        let capture = fixtures::read_json("dingtalk/openapi/sdk_wire_requests.json");
        let sdk = capture["requests"].as_array().unwrap().iter().find(|r| r["path"] == NEW_TOKEN_PATH).unwrap().clone();
        let seen = Arc::new(std::sync::Mutex::new(None::<(String, Value)>));
        let record = seen.clone();
        let router = axum::Router::new().route(
            NEW_TOKEN_PATH,
            post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let record = record.clone();
                async move {
                    let content_type = headers.get("content-type").unwrap().to_str().unwrap().to_owned();
                    *record.lock().unwrap() = Some((content_type, serde_json::from_slice(&body).unwrap()));
                    axum::Json(json!({ "accessToken": "t0k", "expireIn": 100 }))
                }
            }),
        );
        let base = serve(router).await;
        let secret = sdk["body"]["appSecret"].as_str().unwrap();
        let fetcher = NewApiTokenFetcher::new(
            http(),
            &base,
            sdk["body"]["appKey"].as_str().unwrap(),
            secret.to_owned().into(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let token = fetcher.fetch().await.unwrap();
        assert_eq!((token.value.expose_secret(), token.lifetime), ("t0k", Duration::from_secs(100)));
        let (content_type, body) = seen.lock().unwrap().take().unwrap();
        assert!(content_type.starts_with("application/json"), "{content_type}");
        assert_eq!(body, sdk["body"]);
    }

    #[tokio::test]
    async fn a_token_answer_without_a_token_is_retried() {
        let router = axum::Router::new()
            .route(NEW_TOKEN_PATH, post(|| async { axum::Json(json!({ "expireIn": 7200 })) }))
            .route(
                OLD_TOKEN_PATH,
                axum::routing::get(|| async { axum::Json(json!({ "errcode": 0, "errmsg": "ok" })) }),
            );
        let base = serve(router).await;
        for err in
            [new_fetcher(&base, "s").fetch().await.unwrap_err(), old_fetcher(&base, "s").fetch().await.unwrap_err()]
        {
            assert_eq!(err.disposition(), Disposition::Retry, "{err}");
            assert!(err.to_string().contains("no access token"), "{err}");
        }
    }

    #[test]
    fn a_bad_base_url_is_refused_up_front() {
        let err = NewApiTokenFetcher::new(http(), "not a url", "k", "s".to_owned().into(), Arc::new(SystemClock))
            .unwrap_err();
        assert_eq!(err.disposition(), Disposition::Permanent);
    }
}
