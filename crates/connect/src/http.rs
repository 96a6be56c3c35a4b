//! The one shared outbound HTTP client.
//!
//! Every connector sends through [`HttpClient`] so timeouts, TLS (rustls), the no-redirect rule and
//! redaction are decided once. Redirects are never followed: a 3xx could point a delivery (and its
//! credentials) at a host nobody configured, so it is returned as is and [`reject_redirect`] turns it
//! into a permanent failure. Endpoints in errors and logs go through [`redact_url`] because DingTalk
//! robot access tokens travel in the query string.

use crate::error::DeliveryError;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use std::error::Error as _;
use std::time::Duration;
use url::Url;

/// Placeholder for redacted values in logs, errors and the dashboard.
pub const REDACTED: &str = "[redacted]";

/// Header names always redacted (lower case, as `http` stores them).
const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-acs-dingtalk-access-token",
    "webhook-signature",
];
/// Any header whose name contains one of these is redacted too (vendor-specific auth headers).
const SENSITIVE_FRAGMENTS: &[&str] = &["token", "secret", "key", "signature", "password", "auth", "session"];

/// Client settings; durations are bounds on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Whole request, from connect to the last body byte.
    pub timeout: Duration,
    /// TCP + TLS handshake.
    pub connect_timeout: Duration,
    pub user_agent: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: format!("dingbridge/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// The client could not be built; a local setup problem, not a delivery failure.
#[derive(Debug, thiserror::Error)]
#[error("could not build the HTTP client ({reason}); check the TLS setup and the user agent setting")]
pub struct HttpClientError {
    reason: String,
}

/// A `reqwest::Client` with dingbridge's policy baked in. Cheap to clone (shares the pool).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    settings: HttpSettings,
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Result<Self, HttpClientError> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .user_agent(settings.user_agent.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| HttpClientError { reason: error_chain(&e.without_url()) })?;
        Ok(Self { client, settings })
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// The underlying client, for building requests; send them with [`HttpClient::send`] so errors
    /// are mapped and redacted.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn request(&self, method: http::Method, url: Url) -> reqwest::RequestBuilder {
        self.client.request(method, url)
    }

    pub fn get(&self, url: Url) -> reqwest::RequestBuilder {
        self.client.get(url)
    }

    pub fn post(&self, url: Url) -> reqwest::RequestBuilder {
        self.client.post(url)
    }

    /// Sends a request; any answer (including 3xx/4xx/5xx) is `Ok`, failures before an answer are
    /// `Timeout` or `Transport` naming the redacted endpoint.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, DeliveryError> {
        let request = request.build().map_err(|e| DeliveryError::BadPayload {
            destination: e.url().map_or_else(|| "unknown endpoint".to_owned(), redact_url),
            detail: error_chain(&e.without_url()),
        })?;
        let url = request.url().clone();
        self.client.execute(request).await.map_err(|e| self.map_error(e, &url))
    }

    /// Maps a reqwest failure to the delivery error the outbox understands.
    pub fn map_error(&self, err: reqwest::Error, url: &Url) -> DeliveryError {
        map_reqwest_error(err, url, &self.settings)
    }
}

/// `Timeout` when reqwest gave up on time (connect or whole request), `Transport` otherwise. The
/// reason never contains the URL, whose query may hold a token.
pub fn map_reqwest_error(err: reqwest::Error, url: &Url, settings: &HttpSettings) -> DeliveryError {
    let endpoint = redact_url(url);
    if err.is_timeout() {
        let after = if err.is_connect() { settings.connect_timeout } else { settings.timeout };
        return DeliveryError::Timeout { endpoint, after };
    }
    DeliveryError::Transport { endpoint, reason: error_chain(&err.without_url()) }
}

/// A 3xx answer as a permanent failure: the configured URL is wrong (or something tries to send us
/// elsewhere), and retrying will not change that.
pub fn reject_redirect(vendor: &'static str, resp: &reqwest::Response) -> Result<(), DeliveryError> {
    let status = resp.status();
    if !status.is_redirection() {
        return Ok(());
    }
    let target = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|loc| resp.url().join(loc).map_or_else(|_| REDACTED.to_owned(), |u| redact_url(&u)))
        .unwrap_or_else(|| "no Location".to_owned());
    Err(DeliveryError::Rejected {
        vendor,
        detail: format!(
            "{} answered HTTP {} redirecting to {target}; redirects are never followed, configure the final URL",
            redact_url(resp.url()),
            status.as_u16()
        ),
    })
}

/// Reads the whole body, refusing more than `max_bytes` (checked against `Content-Length` first, so
/// an announced oversize body is not read at all).
pub async fn read_body_capped(mut resp: reqwest::Response, max_bytes: usize) -> Result<Bytes, DeliveryError> {
    let url = resp.url().clone();
    let too_large = |endpoint: String| DeliveryError::Transport {
        endpoint,
        reason: format!("the response body exceeds the {max_bytes}-byte limit; the answer was not read"),
    };
    if resp.content_length().is_some_and(|len| len > max_bytes as u64) {
        return Err(too_large(redact_url(&url)));
    }
    let mut buf = BytesMut::new();
    loop {
        // A timeout here is reported as Transport: the response does not carry the client's
        // configured duration, and both variants retry the same way.
        let chunk = resp.chunk().await.map_err(|e| DeliveryError::Transport {
            endpoint: redact_url(&url),
            reason: format!("reading the response body failed: {}", error_chain(&e.without_url())),
        })?;
        let Some(chunk) = chunk else { break };
        if buf.len().saturating_add(chunk.len()) > max_bytes {
            return Err(too_large(redact_url(&url)));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Scheme, host, port and path: never the query (DingTalk robot tokens), fragment or userinfo.
pub fn redact_url(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    out.push_str(url.path());
    out
}

/// Headers as printable pairs with credentials replaced by `[redacted]`; the only way headers may
/// reach a log line, an error, the request journal or the dashboard.
pub fn redact_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str();
            let value = if is_sensitive(name) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.to_owned(), value)
        })
        .collect()
}

fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SENSITIVE_HEADERS.contains(&name.as_str()) || SENSITIVE_FRAGMENTS.iter().any(|f| name.contains(f))
}

/// reqwest's top-level message ("error sending request") says little; the sources say why
/// ("connection refused", "dns error").
fn error_chain(err: &reqwest::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use axum::Router;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    }

    fn client(timeout: Duration) -> HttpClient {
        HttpClient::new(HttpSettings { timeout, connect_timeout: timeout, ..HttpSettings::default() }).unwrap()
    }

    #[test]
    fn redact_url_drops_query_fragment_and_userinfo() {
        let url = Url::parse("https://user:pw@oapi.dingtalk.com:8443/robot/send?access_token=abc123&x=1#frag").unwrap();
        let s = redact_url(&url);
        assert_eq!(s, "https://oapi.dingtalk.com:8443/robot/send");
        assert!(!s.contains("abc123") && !s.contains("pw"));
    }

    #[test]
    fn redact_headers_hides_credentials_and_keeps_the_rest() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer s3cret"),
            ("cookie", "sid=s3cret"),
            ("x-acs-dingtalk-access-token", "s3cret"),
            ("webhook-signature", "v1,s3cret"),
            ("x-refresh-token", "s3cret"),
            ("client-secret", "s3cret"),
            ("x-api-key", "s3cret"),
            ("content-type", "application/json"),
            ("webhook-id", "msg_1"),
        ] {
            h.insert(http::HeaderName::from_static(k), http::HeaderValue::from_static(v));
        }
        let out = redact_headers(&h);
        assert_eq!(out.len(), 9);
        for (k, v) in &out {
            match k.as_str() {
                "content-type" => assert_eq!(v, "application/json"),
                "webhook-id" => assert_eq!(v, "msg_1"),
                _ => assert_eq!(v, REDACTED, "{k}"),
            }
        }
        assert!(!format!("{out:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn a_3xx_is_not_followed() {
        let hits = Arc::new(AtomicUsize::new(0));
        let target_hits = hits.clone();
        let router = Router::new()
            .route(
                "/start",
                get(|| async { (http::StatusCode::FOUND, [(http::header::LOCATION, "/target?token=t0p")]) }),
            )
            .route(
                "/target",
                get(move || {
                    target_hits.fetch_add(1, Ordering::SeqCst);
                    async { "reached" }
                }),
            );
        let base = serve(router).await;
        let c = client(Duration::from_secs(5));
        let resp = c.send(c.get(Url::parse(&format!("{base}/start?access_token=abc")).unwrap())).await.unwrap();
        assert_eq!(resp.status().as_u16(), 302);
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect target must never be requested");
        let err = reject_redirect("dingtalk", &resp).unwrap_err();
        assert_eq!(err.disposition(), crate::Disposition::Permanent);
        let msg = err.to_string();
        assert!(msg.contains("302") && msg.contains("/target"), "{msg}");
        assert!(!msg.contains("abc") && !msg.contains("t0p"), "{msg}");
    }

    #[tokio::test]
    async fn a_2xx_is_not_a_redirect() {
        let base = serve(Router::new().route("/ok", get(|| async { "ok" }))).await;
        let c = client(Duration::from_secs(5));
        let resp = c.send(c.get(Url::parse(&format!("{base}/ok")).unwrap())).await.unwrap();
        assert!(reject_redirect("x", &resp).is_ok());
        assert_eq!(read_body_capped(resp, 2).await.unwrap(), Bytes::from_static(b"ok"));
    }

    #[tokio::test]
    async fn timeout_maps_to_timeout_without_the_query() {
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let base = serve(router).await;
        let c = client(Duration::from_millis(200));
        let err = c.send(c.get(Url::parse(&format!("{base}/slow?access_token=abc")).unwrap())).await.unwrap_err();
        match &err {
            DeliveryError::Timeout { endpoint, after } => {
                assert_eq!(endpoint, &format!("{base}/slow"));
                assert_eq!(*after, Duration::from_millis(200));
            }
            other => panic!("expected timeout, got {other:?}"),
        }
        assert!(!err.to_string().contains("abc"));
    }

    #[tokio::test]
    async fn connection_refused_maps_to_transport_without_the_query() {
        // Bind and drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = client(Duration::from_secs(2));
        let url = Url::parse(&format!("http://127.0.0.1:{port}/robot/send?access_token=abc")).unwrap();
        let err = c.send(c.post(url)).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Transport { .. }), "{err:?}");
        assert_eq!(err.disposition(), crate::Disposition::Retry);
        let msg = err.to_string();
        assert!(msg.contains("/robot/send") && !msg.contains("abc"), "{msg}");
    }

    #[tokio::test]
    async fn body_cap_refuses_oversize_bodies() {
        let router = Router::new().route("/big", get(|| async { "x".repeat(10_000) })).route(
            "/chunked",
            get(|| async {
                // No Content-Length: the cap must hold while streaming.
                let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'y'; 1000])));
                axum::body::Body::from_stream(futures::stream::iter(chunks)).into_response()
            }),
        );
        let base = serve(router).await;
        let c = client(Duration::from_secs(5));
        for path in ["big", "chunked"] {
            let resp = c.send(c.get(Url::parse(&format!("{base}/{path}?k=secretval")).unwrap())).await.unwrap();
            let err = read_body_capped(resp, 4096).await.unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("4096") && !msg.contains("secretval"), "{path}: {msg}");
            let resp = c.send(c.get(Url::parse(&format!("{base}/{path}")).unwrap())).await.unwrap();
            assert_eq!(read_body_capped(resp, 10_000).await.unwrap().len(), 10_000, "{path}");
        }
    }

    #[test]
    fn default_settings_are_bounded() {
        let s = HttpSettings::default();
        assert!(s.timeout > Duration::ZERO && s.connect_timeout <= s.timeout);
        assert!(s.user_agent.starts_with("dingbridge/"));
        assert!(HttpClient::new(s).is_ok());
    }
}
