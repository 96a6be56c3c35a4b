//! A Standard Webhooks sender that behaves like a real one (Svix): it signs each attempt, and
//! retries any non-2xx answer or connection error with the SAME `webhook-id` (re-signed with a
//! fresh timestamp) until a 2xx or a deadline. The gateway dedupes on that id, which is what the
//! crash tests (R1) exercise.

use connect::http::{HttpClient, HttpSettings};
use connect::webhook::{sign, WebhookSecret, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use connect::{Clock, SystemClock};
use http::{HeaderMap, HeaderValue};
use jiff::Timestamp;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How hard the sender tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderSettings {
    /// Give up when the next attempt would start after this long since the first one.
    pub deadline: Duration,
    /// First back-off; doubled after each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Result of a send that got a 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOutcome {
    pub status: u16,
    /// Attempts after the first one.
    pub retries: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("webhook {id} not accepted after {attempts} attempts within {deadline:?}; last answer: {last}")]
    GaveUp {
        id: String,
        attempts: u32,
        deadline: Duration,
        /// The last HTTP status, if any answer came back.
        last_status: Option<u16>,
        last: String,
    },
    #[error("the webhook target {url} is not a valid URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("could not build the sender's HTTP client: {0}")]
    Client(#[from] connect::http::HttpClientError),
    #[error("could not serialise the webhook body: {0}")]
    Body(#[from] serde_json::Error),
}

/// Sends signed webhooks to one URL. Cheap to clone; clones share the retry counter.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: HttpClient,
    url: url::Url,
    secret: WebhookSecret,
    settings: SenderSettings,
    clock: Arc<dyn Clock>,
    retries: Arc<AtomicU64>,
}

/// The Standard Webhooks payload shape: `{"type", "timestamp" (RFC 3339), "data"}`.
pub fn envelope(event_type: &str, timestamp: Timestamp, data: Value) -> Value {
    json!({ "type": event_type, "timestamp": timestamp.to_string(), "data": data })
}

/// The three Standard Webhooks headers for `body` signed at `timestamp` (unix seconds); for tests
/// that craft requests by hand (replays, tampering).
pub fn signed_headers(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // Ids and signatures built here are ASCII; an id with control characters is a test bug that
    // the gateway's missing-header answer will make visible.
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(HEADER_ID, v);
    }
    headers.insert(HEADER_TIMESTAMP, HeaderValue::from(timestamp));
    if let Ok(v) = HeaderValue::from_str(&sign(secret, id, timestamp, body)) {
        headers.insert(HEADER_SIGNATURE, v);
    }
    headers
}

impl WebhookSender {
    pub fn new(url: &str, secret: WebhookSecret, settings: SenderSettings) -> Result<Self, SendError> {
        let url = url::Url::parse(url).map_err(|e| SendError::BadUrl { url: url.to_owned(), reason: e.to_string() })?;
        let client = HttpClient::new(HttpSettings {
            timeout: settings.request_timeout,
            connect_timeout: settings.request_timeout,
            user_agent: "dingbridge-testkit-sender".to_owned(),
            // The gateway under test runs on this machine.
            ..HttpSettings::loopback()
        })?;
        Ok(Self { client, url, secret, settings, clock: Arc::new(SystemClock), retries: Arc::new(AtomicU64::new(0)) })
    }

    /// Signs with `clock`'s time instead of the system's (replay tests with an injected clock).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// Total retries made by this sender and its clones.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Sends `body` as JSON with retries; returns the 2xx status.
    pub async fn send(&self, id: &str, body: &Value) -> Result<u16, SendError> {
        Ok(self.send_counted(id, body).await?.status)
    }

    /// Like [`WebhookSender::send`], also telling how many retries this message took.
    pub async fn send_counted(&self, id: &str, body: &Value) -> Result<SendOutcome, SendError> {
        let bytes = serde_json::to_vec(body)?;
        self.send_bytes(id, bytes).await
    }

    /// Sends raw bytes (for malformed-body tests) with retries.
    pub async fn send_bytes(&self, id: &str, body: Vec<u8>) -> Result<SendOutcome, SendError> {
        let started = Instant::now();
        let mut backoff = self.settings.initial_backoff;
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let (status, last) = match self.attempt(id, &body).await {
                Ok(status) if (200..300).contains(&status) => {
                    return Ok(SendOutcome { status, retries: attempts - 1 });
                }
                Ok(status) => (Some(status), format!("HTTP {status}")),
                Err(e) => (None, e.to_string()),
            };
            // Stop if the next attempt would start past the deadline, like a sender's retry window.
            if started.elapsed() + backoff > self.settings.deadline {
                return Err(SendError::GaveUp {
                    id: id.to_owned(),
                    attempts,
                    deadline: self.settings.deadline,
                    last_status: status,
                    last,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.settings.max_backoff);
            self.retries.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One signed attempt without retries: the status, or the connection error as text.
    pub async fn send_once(&self, id: &str, body: &Value) -> Result<u16, SendError> {
        let bytes = serde_json::to_vec(body)?;
        self.attempt(id, &bytes).await.map_err(|e| SendError::GaveUp {
            id: id.to_owned(),
            attempts: 1,
            deadline: Duration::ZERO,
            last_status: None,
            last: e.to_string(),
        })
    }

    /// The answer's status, or why no answer came (connection refused, timeout, ...).
    async fn attempt(&self, id: &str, body: &[u8]) -> Result<u16, connect::DeliveryError> {
        // A fresh timestamp per attempt, as real senders re-sign retries.
        let ts = self.clock.now().as_second();
        let request = self
            .client
            .post(self.url.clone())
            .headers(signed_headers(&self.secret, id, ts, body))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        let resp = self.client.send(request).await?;
        Ok(resp.status().as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use axum::routing::post;
    use axum::Router;
    use connect::webhook::{WebhookError, WebhookVerifier};
    use std::sync::Mutex;

    /// Each request's webhook-id and whether its signature verified.
    type Seen = Arc<Mutex<Vec<(String, Result<(), WebhookError>)>>>;

    #[derive(Clone)]
    struct Server {
        verifier: WebhookVerifier,
        seen: Seen,
        fail_first: usize,
    }

    async fn hook(State(s): State<Server>, headers: HeaderMap, body: axum::body::Bytes) -> http::StatusCode {
        let id = headers.get(HEADER_ID).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let verdict = s.verifier.verify(&headers, &body, Timestamp::now()).map(|_| ());
        let mut seen = s.seen.lock().unwrap();
        seen.push((id, verdict));
        if seen.len() <= s.fail_first {
            http::StatusCode::SERVICE_UNAVAILABLE
        } else {
            http::StatusCode::NO_CONTENT
        }
    }

    async fn serve(fail_first: usize, secret: &WebhookSecret) -> (String, Server) {
        let server =
            Server { verifier: WebhookVerifier::new([secret.clone()]).unwrap(), seen: Arc::default(), fail_first };
        let app = Router::new().route("/hooks/test", post(hook)).with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hooks/test"), server)
    }

    fn secret() -> WebhookSecret {
        WebhookSecret::parse("whsec_dGVzdGtpdC1zZW5kZXItc2VjcmV0").unwrap()
    }

    #[tokio::test]
    async fn retries_503_with_the_same_webhook_id_then_succeeds() {
        let (url, server) = serve(2, &secret()).await;
        let sender = WebhookSender::new(&url, secret(), SenderSettings::default()).unwrap();
        let body = envelope("test.created", Timestamp::now(), json!({"id": "1"}));
        let out = sender.send_counted("msg_42", &body).await.unwrap();
        assert_eq!(out, SendOutcome { status: 204, retries: 2 });
        assert_eq!(sender.retries(), 2);
        let seen = server.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        for (id, verdict) in &seen {
            assert_eq!(id, "msg_42");
            assert_eq!(verdict, &Ok(()), "every attempt is validly signed");
        }
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline_and_reports_the_last_status() {
        let (url, server) = serve(usize::MAX, &secret()).await;
        let settings = SenderSettings {
            deadline: Duration::from_millis(300),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(100),
            ..SenderSettings::default()
        };
        let sender = WebhookSender::new(&url, secret(), settings).unwrap();
        let err = sender.send("msg_1", &json!({})).await.unwrap_err();
        match err {
            SendError::GaveUp { attempts, last_status, .. } => {
                assert!(attempts >= 2, "{attempts}");
                assert_eq!(last_status, Some(503));
                assert_eq!(server.seen.lock().unwrap().len(), attempts as usize);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn connection_errors_are_retried() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let settings = SenderSettings { deadline: Duration::from_millis(200), ..SenderSettings::default() };
        let sender = WebhookSender::new(&format!("http://127.0.0.1:{port}/x"), secret(), settings).unwrap();
        let err = sender.send("msg_1", &json!({})).await.unwrap_err();
        assert!(matches!(err, SendError::GaveUp { last_status: None, attempts, .. } if attempts >= 2), "{err:?}");
    }

    #[tokio::test]
    async fn send_once_does_not_retry() {
        let (url, server) = serve(1, &secret()).await;
        let sender = WebhookSender::new(&url, secret(), SenderSettings::default()).unwrap();
        assert_eq!(sender.send_once("msg_1", &json!({})).await.unwrap(), 503);
        assert_eq!(server.seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn signed_headers_verify() {
        let body = br#"{"a":1}"#;
        let h = signed_headers(&secret(), "msg_9", 1_700_000_000, body);
        let v = WebhookVerifier::new([secret()]).unwrap();
        let ok = v.verify(&h, body, Timestamp::from_second(1_700_000_010).unwrap()).unwrap();
        assert_eq!(ok.id, "msg_9");
    }

    #[test]
    fn bad_url_is_an_error() {
        assert!(matches!(
            WebhookSender::new("not a url", secret(), SenderSettings::default()),
            Err(SendError::BadUrl { .. })
        ));
    }
}
