//! DingTalk Stream mode client (reference §7).
//!
//! The client registers for a single-use ticket (`POST /v1.0/gateway/connections/open`), holds one
//! WebSocket to the endpoint it is given, answers SYSTEM pings, and hands EVENT and CALLBACK frames
//! to a [`StreamHandler`]. Each frame is ACKed only after its handler returned: the handler is where
//! the gateway persists, so a crash before the ACK means DingTalk redelivers (persist first, ACK
//! second). Handlers run concurrently (at most [`MAX_IN_FLIGHT`] per connection) so a slow one never
//! stalls pings or other frames.
//!
//! On SYSTEM `disconnect` a new connection (fresh ticket) is opened at once and the old one drains
//! until the server closes it. Any other loss reconnects with exponential backoff and jitter, always
//! with a fresh ticket.
//!
//! TLS: `tokio-tungstenite` is built without TLS features, so the WebSocket handshake is an HTTP/1.1
//! upgrade sent through the shared reqwest client (rustls, OS and webpki roots) and tungstenite runs on the
//! upgraded connection. `ws://` and `wss://` endpoints therefore both work with no extra crate.

use async_trait::async_trait;
use connect::http::{read_body_capped, redact_url, HttpClient, HttpSettings, Outbound};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Registration path under the new-API host (§7.1).
pub const REGISTER_PATH: &str = "/v1.0/gateway/connections/open";
/// CALLBACK topic of robot messages (§7.6).
pub const TOPIC_ROBOT_MESSAGE: &str = "/v1.0/im/bot/messages/get";
/// CALLBACK topic of interactive card actions (§7.6).
pub const TOPIC_CARD_CALLBACK: &str = "/v1.0/card/instances/callback";
/// Handlers running at once per connection; the read loop waits for a free slot beyond that.
pub const MAX_IN_FLIGHT: usize = 16;
/// Largest frame accepted (the Java SDK caps payloads at 256 KiB; leave headroom).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// After `disconnect` the server closes about 10 s later; the client gives it a bit longer so the
/// server, not the client, ends the old socket.
const DISCONNECT_DRAIN: Duration = Duration::from_secs(15);
/// How long a closing connection waits for running handlers so their ACKs still go out.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
const MAX_REGISTER_BODY: usize = 64 * 1024;
const OUTBOUND_CAPACITY: usize = 64;

// ---------------------------------------------------------------------------------------------
// Frames (§7.3, §7.4)
// ---------------------------------------------------------------------------------------------

/// `type` of a downstream frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FrameType {
    System,
    Event,
    Callback,
}

impl FrameType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "SYSTEM",
            Self::Event => "EVENT",
            Self::Callback => "CALLBACK",
        }
    }
}

/// One server → client frame. Unknown headers are kept; `data` is the JSON **string** as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    #[serde(rename = "specVersion", default)]
    pub spec_version: String,
    #[serde(rename = "type")]
    pub kind: FrameType,
    #[serde(default, deserialize_with = "string_map")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub data: String,
}

impl Frame {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and a map of strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    pub fn topic(&self) -> Option<&str> {
        self.header("topic")
    }

    pub fn message_id(&self) -> Option<&str> {
        self.header("messageId")
    }

    /// EVENT frames: the id to dedupe on (DingTalk may deliver an event more than once).
    pub fn event_id(&self) -> Option<&str> {
        self.header("eventId")
    }

    /// EVENT frames: route on this, never on `topic` (§7.3).
    pub fn event_type(&self) -> Option<&str> {
        self.header("eventType")
    }

    /// `data` decoded (it is JSON inside a JSON string).
    pub fn data_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.data)
    }
}

/// What an EVENT handler tells DingTalk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAck {
    /// Stored; do not redeliver.
    Success,
    /// Not taken; redeliver later.
    Later,
}

impl EventAck {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "SUCCESS",
            Self::Later => "LATER",
        }
    }
}

/// One client → server ACK (§7.4). `data` is a JSON string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub code: u16,
    #[serde(default, deserialize_with = "string_map")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub data: String,
}

// Structs, not `json!`, so the field order is the documented one whatever serde_json features are on.
#[derive(Serialize)]
struct EventAckData<'a> {
    status: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct CallbackAckData<'a> {
    response: Option<&'a Value>,
}

impl Ack {
    fn reply(frame: &Frame, code: u16, message: &str, data: String) -> Self {
        let mut headers = BTreeMap::new();
        headers.insert("contentType".to_owned(), "application/json".to_owned());
        headers.insert("messageId".to_owned(), frame.message_id().unwrap_or_default().to_owned());
        Self { code, headers, message: message.to_owned(), data }
    }

    /// SYSTEM `ping`: code 200 echoing `data` (`{"opaque": …}`) unchanged.
    pub fn ping(frame: &Frame) -> Self {
        Self::reply(frame, 200, "OK", frame.data.clone())
    }

    /// EVENT: `{"status":"SUCCESS"|"LATER","message":…}` with code 200.
    pub fn event(frame: &Frame, outcome: EventAck) -> Self {
        let message = match outcome {
            EventAck::Success => "OK",
            EventAck::Later => "retry later",
        };
        let data = serde_json::to_string(&EventAckData { status: outcome.as_str(), message }).unwrap_or_default();
        Self::reply(frame, 200, "OK", data)
    }

    /// CALLBACK: `{"response": R}` (R may be null) with code 200.
    pub fn callback(frame: &Frame, response: Option<&Value>) -> Self {
        let data = serde_json::to_string(&CallbackAckData { response }).unwrap_or_default();
        Self::reply(frame, 200, "OK", data)
    }

    /// CALLBACK whose handler failed: code 500, `{"response":null}`.
    pub fn callback_error(frame: &Frame, detail: &str) -> Self {
        let data = serde_json::to_string(&CallbackAckData { response: None }).unwrap_or_default();
        Self::reply(frame, 500, detail, data)
    }

    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn message_id(&self) -> Option<&str> {
        self.headers.get("messageId").map(String::as_str)
    }

    pub fn data_json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.data)
    }
}

/// Header values are strings on the wire (§7.3); a number or bool slipping through is kept as its
/// JSON text rather than failing the whole frame, and `null` headers count as none.
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw: Option<BTreeMap<String, Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Settings, handler, errors
// ---------------------------------------------------------------------------------------------

pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// One app's Stream connection.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// New-API host, e.g. `https://api.dingtalk.com` (or `.io`, or a simulator).
    pub new_api_base: String,
    pub client_id: String,
    pub client_secret: SecretString,
    /// `(EVENT, "*")`, `(CALLBACK, topic)`; SYSTEM is implicit.
    pub subscriptions: Vec<(FrameType, String)>,
    /// The `ua` field of the registration body.
    pub ua: String,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Private hosts that may be reached (a simulator) and extra TLS trust; public hosts only
    /// by default.
    pub outbound: Outbound,
}

impl StreamSettings {
    /// Defaults: all events, robot messages and card callbacks; ping 30 s, pong 10 s, backoff 1–60 s.
    pub fn new(new_api_base: impl Into<String>, client_id: impl Into<String>, client_secret: SecretString) -> Self {
        Self {
            new_api_base: new_api_base.into(),
            client_id: client_id.into(),
            client_secret,
            subscriptions: vec![
                (FrameType::Event, "*".to_owned()),
                (FrameType::Callback, TOPIC_ROBOT_MESSAGE.to_owned()),
                (FrameType::Callback, TOPIC_CARD_CALLBACK.to_owned()),
            ],
            ua: format!("dingbridge/{}", env!("CARGO_PKG_VERSION")),
            ping_interval: DEFAULT_PING_INTERVAL,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            outbound: Outbound::default(),
        }
    }
}

/// Where frames go. Persist inside these calls: the ACK is sent only after they return.
#[async_trait]
pub trait StreamHandler: Send + Sync + 'static {
    /// An EVENT frame; dedupe on [`Frame::event_id`], DingTalk delivers at least once.
    async fn on_event(&self, frame: &Frame) -> EventAck;
    /// A CALLBACK frame; `Ok(R)` becomes the ACK's `{"response": R}`, `Err` an ACK with code 500
    /// whose `message` is the error text (it goes to DingTalk: keep it free of personal data).
    async fn on_callback(&self, frame: &Frame) -> Result<Option<Value>, CallbackRefused>;
}

/// Why a handler could not take a CALLBACK frame; its text is the ACK's `message` and goes to
/// DingTalk, so it names what failed, never personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CallbackRefused(pub String);

impl From<String> for CallbackRefused {
    fn from(reason: String) -> Self {
        CallbackRefused(reason)
    }
}

/// Why a registration or a connection failed. All of them are retried with backoff; the variants
/// say what a person should look at.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "DingTalk refused the Stream registration of clientId `{client_id}`: HTTP {status}, code `{code}` ({message}), \
         requestid `{request_id}`; check the app's clientId/clientSecret and that Stream mode is enabled for it"
    )]
    BadCredentials { client_id: String, status: u16, code: String, message: String, request_id: String },
    #[error("the Stream registration at {endpoint} answered HTTP {status}: {detail}")]
    RegistrationFailed { endpoint: String, status: u16, detail: String },
    #[error("the Stream registration at {endpoint} answered 200 with an unusable body: {detail}")]
    BadRegistrationAnswer { endpoint: String, detail: String },
    #[error(
        "the Stream gateway {endpoint} refused the WebSocket upgrade with HTTP {status} (ticket unknown, used or \
         expired); the next attempt registers for a fresh ticket"
    )]
    HandshakeRefused { endpoint: String, status: u16 },
    #[error("the Stream endpoint `{endpoint}` is unusable: {detail}")]
    BadEndpoint { endpoint: String, detail: String },
    #[error("Stream transport failure with {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("no WebSocket pong from {endpoint} within {timeout:?}; treating the connection as dead")]
    PongTimeout { endpoint: String, timeout: Duration },
    #[error("the Stream connection to {endpoint} was lost: {reason}")]
    ConnectionLost { endpoint: String, reason: String },
    #[error("could not build the HTTP client for Stream mode: {0}")]
    Client(String),
}

impl StreamError {
    /// Registration answered 4xx for the credentials: retrying helps only once someone fixes them.
    pub fn is_bad_credentials(&self) -> bool {
        matches!(self, Self::BadCredentials { .. })
    }
}

/// The answer of a successful registration. `Debug` hides the ticket (it grants a connection).
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    pub endpoint: String,
    pub ticket: String,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("endpoint", &self.endpoint).field("ticket", &"[redacted]").finish()
    }
}

/// `base * 2^attempt` capped at `max`, then "equal jitter" (a random point in the upper half), never
/// below `min`: spreads reconnecting gateways apart while still growing.
pub fn backoff_delay(attempt: u32, min: Duration, max: Duration) -> Duration {
    let max = max.max(min);
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    let ceiling = min.saturating_mul(factor).min(max);
    let half = ceiling / 2;
    let half_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = Duration::from_nanos(rand::thread_rng().gen_range(0..=half_nanos));
    (half + jitter).clamp(min, max)
}

// ---------------------------------------------------------------------------------------------
// Registration and handshake
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RegisterBody<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    subscriptions: Vec<Subscription<'a>>,
    ua: &'a str,
}

#[derive(Serialize)]
struct Subscription<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    topic: &'a str,
}

#[derive(Deserialize)]
struct RegisterAnswer {
    endpoint: Option<String>,
    ticket: Option<String>,
}

#[derive(Deserialize, Default)]
struct NewApiError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    requestid: String,
}

/// Step 1 (§7.1): trade the app credentials for a WebSocket endpoint and a single-use ticket.
pub async fn register(http: &HttpClient, settings: &StreamSettings) -> Result<Ticket, StreamError> {
    let raw = format!("{}{REGISTER_PATH}", settings.new_api_base.trim_end_matches('/'));
    let url =
        Url::parse(&raw).map_err(|e| StreamError::BadEndpoint { endpoint: raw.clone(), detail: e.to_string() })?;
    let endpoint = redact_url(&url);
    let body = RegisterBody {
        client_id: &settings.client_id,
        client_secret: settings.client_secret.expose_secret(),
        subscriptions: settings
            .subscriptions
            .iter()
            .map(|(kind, topic)| Subscription { kind: kind.as_str(), topic })
            .collect(),
        ua: &settings.ua,
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let request = http
        .post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(body);
    let resp = http
        .send(request)
        .await
        .map_err(|e| StreamError::Transport { endpoint: endpoint.clone(), reason: e.to_string() })?;
    let status = resp.status().as_u16();
    let bytes = read_body_capped(resp, MAX_REGISTER_BODY)
        .await
        .map_err(|e| StreamError::Transport { endpoint: endpoint.clone(), reason: e.to_string() })?;

    if (400..500).contains(&status) {
        let err: NewApiError = serde_json::from_slice(&bytes).unwrap_or_default();
        // Throttling is also a 4xx on the new API (§8.1) but says nothing about the credentials.
        if status != 429 && !err.code.contains("Limit") {
            return Err(StreamError::BadCredentials {
                client_id: settings.client_id.clone(),
                status,
                code: err.code,
                message: err.message,
                request_id: err.requestid,
            });
        }
    }
    if status != 200 {
        return Err(StreamError::RegistrationFailed { endpoint, status, detail: snippet(&bytes) });
    }
    let answer: RegisterAnswer = serde_json::from_slice(&bytes)
        .map_err(|e| StreamError::BadRegistrationAnswer { endpoint: endpoint.clone(), detail: e.to_string() })?;
    match (answer.endpoint, answer.ticket) {
        (Some(ws), Some(ticket)) if !ws.is_empty() && !ticket.is_empty() => Ok(Ticket { endpoint: ws, ticket }),
        _ => Err(StreamError::BadRegistrationAnswer {
            endpoint,
            detail: "`endpoint` or `ticket` is missing or empty".to_owned(),
        }),
    }
}

/// The first bytes of an error body, for the log (new-API error bodies carry no secrets).
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

type WsStream = WebSocketStream<reqwest::Upgraded>;

/// Step 2 (§7.2): `GET <endpoint>?ticket=…` as a WebSocket upgrade. Returns the socket and the
/// endpoint without its query (the ticket) for logs.
async fn connect_ws(http: &HttpClient, ticket: &Ticket) -> Result<(WsStream, String), StreamError> {
    let bad = |detail: String| StreamError::BadEndpoint { endpoint: ticket.endpoint.clone(), detail };
    let mut url = Url::parse(&ticket.endpoint).map_err(|e| bad(e.to_string()))?;
    let shown = redact_url(&url);
    let scheme = match url.scheme() {
        "ws" => "http",
        "wss" => "https",
        other => return Err(bad(format!("scheme `{other}` is neither ws nor wss"))),
    };
    url.set_scheme(scheme).map_err(|()| bad("cannot switch the scheme to HTTP".to_owned()))?;
    url.query_pairs_mut().append_pair("ticket", &ticket.ticket);

    let key = generate_key();
    let request = http
        .get(url)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::SEC_WEBSOCKET_VERSION, "13")
        .header(http::header::SEC_WEBSOCKET_KEY, key.as_str());
    let resp = http
        .send(request)
        .await
        .map_err(|e| StreamError::Transport { endpoint: shown.clone(), reason: e.to_string() })?;
    if resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return Err(StreamError::HandshakeRefused { endpoint: shown, status: resp.status().as_u16() });
    }
    let accept = resp.headers().get(http::header::SEC_WEBSOCKET_ACCEPT).and_then(|v| v.to_str().ok());
    if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(StreamError::Transport {
            endpoint: shown,
            reason: "the upgrade answer carries a wrong Sec-WebSocket-Accept; not a WebSocket server".to_owned(),
        });
    }
    let upgraded = resp.upgrade().await.map_err(|e| StreamError::Transport {
        endpoint: shown.clone(),
        reason: format!("the HTTP upgrade failed: {}", e.without_url()),
    })?;
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_FRAME_BYTES)).max_frame_size(Some(MAX_FRAME_BYTES));
    let ws = WebSocketStream::from_raw_socket(upgraded, Role::Client, Some(config)).await;
    Ok((ws, shown))
}

// ---------------------------------------------------------------------------------------------
// Client task
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Shared {
    live: AtomicUsize,
    opened: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn set_error(&self, err: Option<String>) {
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = err;
    }
}

/// Counts a connection as live for as long as it exists.
struct LiveGuard(Arc<Shared>);

impl LiveGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.live.fetch_add(1, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The Stream client of one app.
#[derive(Debug)]
pub struct StreamClient;

impl StreamClient {
    /// Starts the client in the background. It runs until `cancel` fires or the handle is shut
    /// down (or dropped).
    pub fn spawn(
        settings: StreamSettings,
        handler: Arc<dyn StreamHandler>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> StreamHandle {
        let cancel = cancel.child_token();
        let shared = Arc::new(Shared::default());
        let supervisor = Supervisor { settings: Arc::new(settings), handler, shared: shared.clone() };
        let task = tokio::spawn(supervisor.run(cancel.clone()));
        StreamHandle { shared, cancel, task: Some(task) }
    }
}

/// Observes and stops a running [`StreamClient`].
#[derive(Debug)]
pub struct StreamHandle {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl StreamHandle {
    /// At least one WebSocket is open.
    pub fn connected(&self) -> bool {
        self.shared.live.load(Ordering::SeqCst) > 0
    }

    /// WebSockets opened since start (each with its own ticket).
    pub fn connections_opened(&self) -> u64 {
        self.shared.opened.load(Ordering::SeqCst)
    }

    /// The last registration or connection failure, cleared by the next successful connection.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Stops reading, lets running handlers finish and ACK (bounded), closes the sockets.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "DingTalk Stream client task failed while shutting down.");
            }
        }
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

enum ConnEvent {
    /// SYSTEM `disconnect` arrived on this connection.
    Disconnect(u64),
}

struct Supervisor {
    settings: Arc<StreamSettings>,
    handler: Arc<dyn StreamHandler>,
    shared: Arc<Shared>,
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    /// Keeps one primary connection open. A draining connection (after `disconnect`) keeps running
    /// beside the new primary until the server closes it.
    async fn run(self, cancel: CancellationToken) {
        let http =
            HttpClient::new(HttpSettings { outbound: self.settings.outbound.clone(), ..HttpSettings::default() });
        let http = match http {
            Ok(http) => http,
            Err(err) => {
                let err = StreamError::Client(err.to_string());
                tracing::error!(error = %err, "DingTalk Stream client cannot start.");
                self.shared.set_error(Some(err.to_string()));
                return;
            }
        };
        let settings = &self.settings;
        let (events_tx, mut events_rx) = mpsc::channel::<ConnEvent>(16);
        let mut conns: JoinSet<Result<(), StreamError>> = JoinSet::new();
        let mut conn_ids: HashMap<tokio::task::Id, (u64, Instant)> = HashMap::new();
        let mut primary: Option<u64> = None;
        let mut next_id: u64 = 0;
        let mut attempt: u32 = 0;
        let mut reconnect_at: Option<Instant> = Some(Instant::now());

        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(ConnEvent::Disconnect(id)) = events_rx.recv() => {
                    if primary == Some(id) {
                        tracing::info!(client_id = %settings.client_id, "DingTalk asked the Stream connection to \
                            move; opening a new one while the old one drains.");
                        primary = None;
                        reconnect_at = Some(Instant::now());
                    }
                }
                Some(joined) = conns.join_next_with_id(), if !conns.is_empty() => {
                    let (task_id, result) = match joined {
                        Ok((task_id, result)) => (task_id, result),
                        Err(err) => (err.id(), Err(StreamError::ConnectionLost {
                            endpoint: "the Stream endpoint".to_owned(),
                            reason: format!("the connection task failed: {err}"),
                        })),
                    };
                    let Some((id, started)) = conn_ids.remove(&task_id) else { continue };
                    if let Err(err) = &result {
                        tracing::warn!(client_id = %settings.client_id, error = %err, "DingTalk Stream connection ended.");
                        self.shared.set_error(Some(err.to_string()));
                    }
                    if primary == Some(id) {
                        primary = None;
                        // A connection that stayed up a while starts the backoff over; one that dies at
                        // once keeps growing it, so a flapping gateway is not hammered.
                        if started.elapsed() >= settings.backoff_max {
                            attempt = 0;
                        }
                        let delay = backoff_delay(attempt, settings.backoff_min, settings.backoff_max);
                        attempt = attempt.saturating_add(1);
                        reconnect_at = Some(Instant::now() + delay);
                    }
                }
                () = sleep_until_opt(reconnect_at), if reconnect_at.is_some() => {
                    reconnect_at = None;
                    let opened = tokio::select! {
                        () = cancel.cancelled() => break,
                        opened = open(&http, settings) => opened,
                    };
                    match opened {
                        Ok((ws, endpoint)) => {
                            let id = next_id;
                            next_id += 1;
                            self.shared.opened.fetch_add(1, Ordering::SeqCst);
                            self.shared.set_error(None);
                            tracing::info!(client_id = %settings.client_id, %endpoint, connection = id,
                                "DingTalk Stream connected.");
                            let conn = Connection {
                                id,
                                endpoint,
                                settings: settings.clone(),
                                handler: self.handler.clone(),
                                events: events_tx.clone(),
                                live: LiveGuard::new(&self.shared),
                            };
                            let handle = conns.spawn(conn.run(ws, cancel.child_token()));
                            conn_ids.insert(handle.id(), (id, Instant::now()));
                            primary = Some(id);
                        }
                        Err(err) => {
                            let delay = backoff_delay(attempt, settings.backoff_min, settings.backoff_max);
                            attempt = attempt.saturating_add(1);
                            if err.is_bad_credentials() {
                                tracing::error!(client_id = %settings.client_id, error = %err, retry_in = ?delay,
                                    "DingTalk Stream registration refused: the credentials look wrong.");
                            } else {
                                tracing::warn!(client_id = %settings.client_id, error = %err, retry_in = ?delay,
                                    "DingTalk Stream connection attempt failed.");
                            }
                            self.shared.set_error(Some(err.to_string()));
                            reconnect_at = Some(Instant::now() + delay);
                        }
                    }
                }
            }
        }
        // Connections see the same cancellation and close themselves (bounded by CLOSE_GRACE).
        while conns.join_next().await.is_some() {}
    }
}

/// Register, then connect with the fresh ticket.
async fn open(http: &HttpClient, settings: &StreamSettings) -> Result<(WsStream, String), StreamError> {
    let ticket = register(http, settings).await?;
    connect_ws(http, &ticket).await
}

/// One WebSocket: a read loop here, a writer task for everything outbound, one task per frame.
struct Connection {
    id: u64,
    endpoint: String,
    settings: Arc<StreamSettings>,
    handler: Arc<dyn StreamHandler>,
    events: mpsc::Sender<ConnEvent>,
    live: LiveGuard,
}

impl Connection {
    async fn run(self, ws: WsStream, cancel: CancellationToken) -> Result<(), StreamError> {
        let (sink, mut stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel::<Message>(OUTBOUND_CAPACITY);
        let writer_stop = CancellationToken::new();
        let writer = tokio::spawn(write_loop(sink, out_rx, writer_stop.clone()));
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let ping_every = self.settings.ping_interval.max(Duration::from_millis(1));
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pong_deadline: Option<Instant> = None;
        let mut drain_deadline: Option<Instant> = None;
        let lost = |reason: String| StreamError::ConnectionLost { endpoint: self.endpoint.clone(), reason };

        let result = loop {
            tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                _ = ping.tick() => {
                    if pong_deadline.is_none() {
                        pong_deadline = Some(Instant::now() + self.settings.pong_timeout);
                    }
                    // A full queue means the socket is stuck; the pong deadline will notice.
                    let _ = out_tx.try_send(Message::Ping(Default::default()));
                }
                () = sleep_until_opt(pong_deadline), if pong_deadline.is_some() => {
                    break Err(StreamError::PongTimeout {
                        endpoint: self.endpoint.clone(),
                        timeout: self.settings.pong_timeout,
                    });
                }
                () = sleep_until_opt(drain_deadline), if drain_deadline.is_some() => break Ok(()),
                msg = stream.next() => match msg {
                    None => break Err(lost("the socket closed without a close frame".to_owned())),
                    Some(Err(err)) => break Err(lost(err.to_string())),
                    Some(Ok(Message::Pong(_))) => pong_deadline = None,
                    Some(Ok(Message::Close(frame))) => {
                        if drain_deadline.is_some() {
                            break Ok(());
                        }
                        let reason = frame.map_or_else(|| "no reason".to_owned(), |f| format!("{} {}", f.code, f.reason));
                        break Err(lost(format!("the server closed the connection ({reason})")));
                    }
                    Some(Ok(Message::Text(text))) => {
                        let Ok(frame) = Frame::parse(text.as_str()) else {
                            tracing::warn!(connection = self.id, bytes = text.len(),
                                "DingTalk Stream frame is not valid JSON of the documented shape; ignored.");
                            continue;
                        };
                        match frame.kind {
                            FrameType::System => {
                                if self.on_system(&frame, &out_tx).await {
                                    drain_deadline.get_or_insert_with(|| Instant::now() + DISCONNECT_DRAIN);
                                }
                            }
                            FrameType::Event | FrameType::Callback => {
                                // Waiting here is the bound on concurrent handlers; cancellation still wins.
                                let permit = tokio::select! {
                                    () = cancel.cancelled() => break Ok(()),
                                    permit = in_flight.clone().acquire_owned() => permit,
                                };
                                let Ok(permit) = permit else { break Ok(()) };
                                tokio::spawn(handle_frame(self.handler.clone(), frame, out_tx.clone(), permit));
                            }
                        }
                    }
                    // Pings are answered by tungstenite itself; binary frames are not part of the protocol.
                    Some(Ok(_)) => {}
                },
            }
        };

        if result.is_ok() {
            // We chose to close: give running handlers the chance to ACK first.
            let all = u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX);
            if tokio::time::timeout(CLOSE_GRACE, in_flight.acquire_many(all)).await.is_err() {
                tracing::warn!(
                    connection = self.id,
                    "DingTalk Stream handlers still running at close; their \
                    events will be redelivered and must be deduplicated."
                );
            }
        }
        writer_stop.cancel();
        let _ = writer.await;
        drop(self.live);
        tracing::debug!(connection = self.id, "DingTalk Stream connection closed.");
        result
    }

    /// Returns true when the server asked us to move (`disconnect`).
    async fn on_system(&self, frame: &Frame, out: &mpsc::Sender<Message>) -> bool {
        match frame.topic().unwrap_or_default() {
            "ping" => {
                let _ = out.send(Message::text(Ack::ping(frame).to_json())).await;
                false
            }
            "disconnect" => {
                if self.events.try_send(ConnEvent::Disconnect(self.id)).is_err() {
                    tracing::warn!(connection = self.id, "DingTalk Stream supervisor is gone; not reconnecting.");
                }
                true
            }
            // Undocumented topics the Node SDK knows (§7.4): nothing to answer.
            topic => {
                tracing::debug!(connection = self.id, topic, "DingTalk Stream SYSTEM frame ignored.");
                false
            }
        }
    }
}

/// Runs one handler and queues its ACK; the permit is held until then.
async fn handle_frame(
    handler: Arc<dyn StreamHandler>,
    frame: Frame,
    out: mpsc::Sender<Message>,
    _permit: OwnedSemaphorePermit,
) {
    let ack = match frame.kind {
        FrameType::Event => Ack::event(&frame, handler.on_event(&frame).await),
        FrameType::Callback => match handler.on_callback(&frame).await {
            Ok(response) => Ack::callback(&frame, response.as_ref()),
            Err(err) => {
                tracing::warn!(topic = frame.topic().unwrap_or_default(), message_id = frame.message_id().unwrap_or_default(),
                    error = %err, "DingTalk Stream callback handler failed; answering code 500.");
                Ack::callback_error(&frame, &err.0)
            }
        },
        FrameType::System => return,
    };
    if out.send(Message::text(ack.to_json())).await.is_err() {
        tracing::debug!(
            message_id = frame.message_id().unwrap_or_default(),
            "DingTalk Stream connection closed before the ACK; DingTalk redelivers un-ACKed events."
        );
    }
}

type WsSink = futures::stream::SplitSink<WsStream, Message>;

/// Sends queued messages in order; on stop, flushes what is queued and closes the socket.
async fn write_loop(mut sink: WsSink, mut rx: mpsc::Receiver<Message>, stop: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            msg = rx.recv() => match msg {
                Some(msg) => {
                    if let Err(err) = sink.send(msg).await {
                        tracing::debug!(error = %err, "DingTalk Stream write failed; the reader will notice the loss.");
                        return;
                    }
                }
                None => break,
            },
            () = stop.cancelled() => break,
        }
    }
    while let Ok(msg) = rx.try_recv() {
        if sink.send(msg).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
