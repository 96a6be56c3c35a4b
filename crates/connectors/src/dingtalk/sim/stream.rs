//! DingTalk simulator, Stream gateway part (reference §7, §10 item 10).
//!
//! - `POST /v1.0/gateway/connections/open` checks clientId/clientSecret through the closure given
//!   to [`StreamGateway::new`] and answers `{endpoint, ticket}`; the endpoint is
//!   `ws://<Host header>/connect`, the ticket is single use and valid 90 s by the simulator clock.
//!   Bad credentials (and a body without them) answer HTTP 400
//!   `{"code":"invalidClientIdOrSecret","message":"无效的clientId或者clientSecret","requestid":…}`,
//!   the body DingTalk gives for bad credentials on the new-API token endpoint (§1.1, §8.2);
//!   that the gateway uses the same code is UNVERIFIED.
//! - `GET /connect?ticket=` upgrades to a WebSocket: a missing or unknown ticket answers 401, a
//!   used or expired one 403, both before the upgrade.
//! - Each connection gets SYSTEM `ping` frames; the echoed `opaque` is checked ([`PingStats`]).
//! - EVENTs go to one randomly chosen live connection of the app and stay pending until an ACK
//!   with status `SUCCESS`. No ACK within `ack_timeout`, or `LATER`/code 500 (after
//!   `later_delay`), means redelivery to any live connection; events wait while none is connected.
//!   When a connection is lost, its un-ACKed events are requeued at once. With
//!   [`StreamGateway::inject_duplicate`] every delivery is sent twice.
//! - CALLBACKs go to one connection subscribed to the topic and are never redelivered.
//!
//! Time: ticket validity follows the injected clock; the socket timers (pings, ACK timeout,
//! disconnect grace) use tokio time so tests can shorten them with [`GatewayTimings`].

use crate::dingtalk::stream::{Ack, Frame, FrameType, REGISTER_PATH};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use connect::Clock;
use rand::seq::SliceRandom;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Ticket lifetime (§7.1).
pub const TICKET_TTL_MS: i64 = 90_000;
/// Events kept for introspection; the oldest ACKed ones are forgotten beyond this.
pub const MAX_EVENTS_KEPT: usize = 10_000;
const CONNECTION_QUEUE: usize = 256;
const BAD_CREDENTIALS_CODE: &str = "invalidClientIdOrSecret";
const BAD_CREDENTIALS_MESSAGE: &str = "无效的clientId或者clientSecret";

/// Socket timers of the gateway. Changes apply to connections opened afterwards (the ACK timeout
/// and LATER delay apply to the next delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayTimings {
    /// SYSTEM ping per connection (the real interval is undocumented).
    pub ping_interval: Duration,
    /// From SYSTEM `disconnect` to closing the socket (§7.4: about 10 s).
    pub disconnect_grace: Duration,
    /// An EVENT without ACK for this long is redelivered (≈60 s per an SDK comment, UNVERIFIED).
    pub ack_timeout: Duration,
    /// An EVENT answered `LATER` or code 500 is redelivered after this long (UNVERIFIED).
    pub later_delay: Duration,
}

impl Default for GatewayTimings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(30),
            disconnect_grace: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(60),
            later_delay: Duration::from_secs(60),
        }
    }
}

/// SYSTEM ping bookkeeping across all connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PingStats {
    pub sent: u64,
    /// ACKed with code 200 and the same `opaque`.
    pub answered: u64,
    /// ACKed, but not with code 200 and the same `opaque`.
    pub mismatched: u64,
}

/// Why [`StreamGateway::push_callback`] produced no response.
#[derive(Debug, thiserror::Error)]
pub enum StreamPushError {
    #[error("no live Stream connection of app `{app_key}` subscribes to CALLBACK `{topic}`; connect a client first")]
    NoConnection { app_key: String, topic: String },
    #[error("the client did not ACK the callback within {after:?}")]
    Timeout { after: Duration },
    #[error("the Stream connection closed before the client ACKed the callback")]
    ConnectionLost,
    #[error("the client ACKed the callback with code {code}: {message}")]
    Rejected { code: u16, message: String },
    #[error("the client's ACK data is not `{{\"response\": …}}`: {detail}")]
    BadAck { detail: String },
    #[error("the connection's send queue is full; the client is not reading")]
    Busy,
}

/// Credential check supplied by the owner of the app registry: `(clientId, clientSecret) -> ok`.
pub type CredentialCheck = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

#[derive(Debug)]
struct Ticket {
    app_key: String,
    subscriptions: Vec<(String, String)>,
    issued_ms: i64,
    used: bool,
}

/// What a valid ticket lets in.
#[derive(Debug)]
struct Admitted {
    app_key: String,
    subscriptions: Vec<(String, String)>,
}

#[derive(Debug)]
struct Conn {
    app_key: String,
    connection_id: String,
    subscriptions: Vec<(String, String)>,
    tx: mpsc::Sender<String>,
    abort: CancellationToken,
    disconnect: CancellationToken,
    /// `disconnect` sent: no new deliveries, ACKs still count.
    draining: bool,
}

impl Conn {
    fn subscribes(&self, kind: FrameType, topic: &str) -> bool {
        self.subscriptions.iter().any(|(k, t)| k == kind.as_str() && (kind == FrameType::Event || t == topic))
    }
}

#[derive(Debug, Clone, Copy)]
enum EventState {
    Waiting { due: Instant },
    InFlight { conn: u64, deadline: Instant },
    Acked,
}

#[derive(Debug)]
struct EventRecord {
    event_id: String,
    app_key: String,
    event_type: String,
    corp_id: String,
    born_ms: i64,
    data: String,
    deliveries: u32,
    message_ids: Vec<String>,
    state: EventState,
}

#[derive(Debug)]
struct PendingCallback {
    conn: u64,
    reply: oneshot::Sender<Ack>,
}

#[derive(Debug, Default)]
struct Inner {
    timings: GatewayTimings,
    duplicate: bool,
    tickets: HashMap<String, Ticket>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    next_msg: u64,
    next_seq: u64,
    /// Push order → event.
    events: BTreeMap<u64, EventRecord>,
    event_by_msg: HashMap<String, u64>,
    callbacks: HashMap<String, PendingCallback>,
    /// messageId → (connection, opaque).
    pings: HashMap<String, (u64, String)>,
    ping_stats: PingStats,
    app_ids: HashMap<String, String>,
    invalid_acks: u64,
    tickets_issued: u64,
}

/// The Stream gateway DingTalk runs, for one simulator (all apps).
pub struct StreamGateway {
    clock: Arc<dyn Clock>,
    credentials: CredentialCheck,
    /// Random per gateway, the first part of every messageId.
    instance: String,
    inner: Mutex<Inner>,
    journal: std::sync::OnceLock<sim::SimState>,
}

impl std::fmt::Debug for StreamGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGateway").field("instance", &self.instance).finish_non_exhaustive()
    }
}

fn new_api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let requestid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
    (status, Json(json!({ "code": code, "message": message, "requestid": requestid }))).into_response()
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl StreamGateway {
    pub fn new(clock: Arc<dyn Clock>, credentials: CredentialCheck) -> Self {
        let instance = format!("{:08x}", rand::random::<u32>());
        Self { clock, credentials, instance, inner: Mutex::new(Inner::default()), journal: std::sync::OnceLock::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a complete assignment under the lock, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every frame sent and received from now on also appears in `/_sim/requests` (method
    /// `WS-SEND` / `WS-RECV`, path `/connect`), next to the HTTP requests (DESIGN.md).
    pub fn attach_journal(&self, journal: sim::SimState) {
        let _already = self.journal.set(journal);
    }

    fn journal(&self, direction: &str, frame: &str) {
        if let Some(journal) = self.journal.get() {
            journal.record_message(direction, "/connect", frame);
        }
    }

    pub fn set_timings(&self, timings: GatewayTimings) {
        self.lock().timings = timings;
    }

    pub fn timings(&self) -> GatewayTimings {
        self.lock().timings
    }

    /// Send every EVENT delivery twice (§10 item 10): clients must dedupe on eventId.
    pub fn inject_duplicate(&self, on: bool) {
        self.lock().duplicate = on;
    }

    /// `POST /v1.0/gateway/connections/open` and `GET /connect`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().route(REGISTER_PATH, post(open_handler)).route("/connect", get(connect_handler)).with_state(self)
    }

    // -- introspection ----------------------------------------------------------------------

    /// Open sockets of the app, draining ones included.
    pub fn connections(&self, app_key: &str) -> usize {
        self.lock().conns.values().filter(|c| c.app_key == app_key).count()
    }

    /// Events of the app not ACKed with SUCCESS yet.
    pub fn pending_events(&self, app_key: &str) -> usize {
        self.lock().events.values().filter(|e| e.app_key == app_key && !matches!(e.state, EventState::Acked)).count()
    }

    /// `(eventId, deliveries, acked)` in push order.
    pub fn delivered_events(&self) -> Vec<(String, u32, bool)> {
        self.lock()
            .events
            .values()
            .map(|e| (e.event_id.clone(), e.deliveries, matches!(e.state, EventState::Acked)))
            .collect()
    }

    pub fn ping_stats(&self) -> PingStats {
        self.lock().ping_stats
    }

    /// Tickets handed out by the registration endpoint since start or reset.
    pub fn tickets_issued(&self) -> u64 {
        self.lock().tickets_issued
    }

    /// ACKs that could not be parsed, or EVENT ACKs without a `status` (§11 gotcha 5).
    pub fn invalid_acks(&self) -> u64 {
        self.lock().invalid_acks
    }

    /// A summary for `GET /_sim/info`.
    pub fn info(&self) -> Value {
        let inner = self.lock();
        let mut apps: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for c in inner.conns.values() {
            apps.entry(c.app_key.as_str()).or_default().0 += 1;
        }
        for e in inner.events.values().filter(|e| !matches!(e.state, EventState::Acked)) {
            apps.entry(e.app_key.as_str()).or_default().1 += 1;
        }
        let apps: BTreeMap<&str, Value> =
            apps.into_iter().map(|(k, (c, p))| (k, json!({ "connections": c, "pending_events": p }))).collect();
        json!({
            "register_path": REGISTER_PATH,
            "connect_path": "/connect",
            "ticket_ttl_ms": TICKET_TTL_MS,
            "ping_interval_ms": inner.timings.ping_interval.as_millis(),
            "disconnect_grace_ms": inner.timings.disconnect_grace.as_millis(),
            "ack_timeout_ms": inner.timings.ack_timeout.as_millis(),
            "later_delay_ms": inner.timings.later_delay.as_millis(),
            "duplicate_delivery": inner.duplicate,
            "apps": apps,
            "pings": { "sent": inner.ping_stats.sent, "answered": inner.ping_stats.answered,
                       "mismatched": inner.ping_stats.mismatched },
            "invalid_acks": inner.invalid_acks,
            "tickets_issued": inner.tickets_issued,
        })
    }

    /// Forgets tickets, events and counters and drops every connection (timings stay).
    pub fn reset(&self) {
        let mut inner = self.lock();
        for conn in inner.conns.values() {
            conn.abort.cancel();
        }
        // Id counters keep counting: a socket task still winding down must not remove a new
        // connection that reused its id.
        let (timings, next_conn, next_msg, next_seq) = (inner.timings, inner.next_conn, inner.next_msg, inner.next_seq);
        *inner = Inner { timings, next_conn, next_msg, next_seq, ..Inner::default() };
    }

    // -- control ----------------------------------------------------------------------------

    /// SYSTEM `disconnect` to every connection of the app; each socket closes `disconnect_grace`
    /// later. Returns how many connections were told.
    pub fn disconnect_all(&self, app_key: &str) -> usize {
        let mut inner = self.lock();
        let mut told = 0;
        for conn in inner.conns.values_mut().filter(|c| c.app_key == app_key && !c.draining) {
            conn.draining = true;
            conn.disconnect.cancel();
            told += 1;
        }
        told
    }

    /// Closes the app's sockets abruptly, without a disconnect frame or close handshake (a network drop).
    pub fn drop_connections(&self, app_key: &str) {
        let ids: Vec<u64> = self.lock().conns.iter().filter(|(_, c)| c.app_key == app_key).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some(conn) = self.lock().conns.get(&id) {
                conn.abort.cancel();
            }
            self.remove_conn(id);
        }
    }

    /// Sends a SYSTEM ping to every connection of the app now (besides the periodic ones);
    /// returns how many were pinged. The echo is checked like any other ping ([`Self::ping_stats`]).
    pub fn ping_now(&self, app_key: &str) -> usize {
        let ids: Vec<u64> = self.lock().conns.iter().filter(|(_, c)| c.app_key == app_key).map(|(id, _)| *id).collect();
        let mut pinged = 0;
        for id in ids {
            let frame = self.ping_frame(id);
            if self.lock().conns.get(&id).is_some_and(|c| c.tx.try_send(frame).is_ok()) {
                pinged += 1;
            }
        }
        pinged
    }

    /// Queues an EVENT for the app and returns its eventId. `data` goes out as given plus `eventId`.
    pub fn push_event(&self, app_key: &str, event_type: &str, corp_id: &str, data: Value) -> String {
        let event_id = uuid::Uuid::new_v4().simple().to_string();
        let data = match data {
            Value::Object(mut map) => {
                map.insert("eventId".to_owned(), Value::String(event_id.clone()));
                Value::Object(map)
            }
            other => other,
        };
        let now_ms = self.clock.now_millis();
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.events.insert(
            seq,
            EventRecord {
                event_id: event_id.clone(),
                app_key: app_key.to_owned(),
                event_type: event_type.to_owned(),
                corp_id: corp_id.to_owned(),
                born_ms: now_ms,
                data: data.to_string(),
                deliveries: 0,
                message_ids: Vec::new(),
                state: EventState::Waiting { due: Instant::now() },
            },
        );
        evict_acked(&mut inner);
        self.dispatch(&mut inner, seq);
        event_id
    }

    /// Sends a CALLBACK to one connection subscribed to `topic` and returns the `response` of its ACK.
    pub async fn push_callback(
        &self,
        app_key: &str,
        topic: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<Option<Value>, StreamPushError> {
        let (reply, answer) = oneshot::channel();
        let message_id = {
            let mut inner = self.lock();
            let candidates: Vec<u64> = inner
                .conns
                .iter()
                .filter(|(_, c)| c.app_key == app_key && !c.draining && c.subscribes(FrameType::Callback, topic))
                .map(|(id, _)| *id)
                .collect();
            let Some(&conn_id) = candidates.choose(&mut rand::thread_rng()) else {
                return Err(StreamPushError::NoConnection { app_key: app_key.to_owned(), topic: topic.to_owned() });
            };
            let message_id = self.next_message_id(&mut inner);
            let mut headers = self.base_headers(&message_id);
            headers.insert("topic".to_owned(), topic.to_owned());
            self.add_app_headers(&mut inner, &mut headers, app_key, conn_id);
            let frame = frame_json(FrameType::Callback, headers, data.to_string());
            let sent = inner.conns.get(&conn_id).is_some_and(|c| c.tx.try_send(frame).is_ok());
            if !sent {
                return Err(StreamPushError::Busy);
            }
            inner.callbacks.insert(message_id.clone(), PendingCallback { conn: conn_id, reply });
            message_id
        };
        let ack = match tokio::time::timeout(timeout, answer).await {
            Err(_) => {
                self.lock().callbacks.remove(&message_id);
                return Err(StreamPushError::Timeout { after: timeout });
            }
            Ok(Err(_)) => return Err(StreamPushError::ConnectionLost),
            Ok(Ok(ack)) => ack,
        };
        if ack.code != 200 {
            return Err(StreamPushError::Rejected { code: ack.code, message: ack.message });
        }
        let data = ack.data_json().map_err(|e| StreamPushError::BadAck { detail: e.to_string() })?;
        match data.get("response") {
            None => Err(StreamPushError::BadAck { detail: "no `response` field".to_owned() }),
            Some(Value::Null) => Ok(None),
            Some(response) => Ok(Some(response.clone())),
        }
    }

    // -- internals --------------------------------------------------------------------------

    fn next_message_id(&self, inner: &mut Inner) -> String {
        inner.next_msg += 1;
        // Shape of the captured ids: `212ca9d7_974_1898c159aa6_0001`.
        format!("{}_{}_{:x}_{:04x}", self.instance, std::process::id() % 1000, self.clock.now_millis(), inner.next_msg)
    }

    fn base_headers(&self, message_id: &str) -> BTreeMap<String, String> {
        let mut headers = BTreeMap::new();
        headers.insert("messageId".to_owned(), message_id.to_owned());
        headers.insert("contentType".to_owned(), "application/json".to_owned());
        headers.insert("time".to_owned(), self.clock.now_millis().to_string());
        headers
    }

    fn add_app_headers(&self, inner: &mut Inner, headers: &mut BTreeMap<String, String>, app_key: &str, conn: u64) {
        let app_id =
            inner.app_ids.entry(app_key.to_owned()).or_insert_with(|| uuid::Uuid::new_v4().to_string()).clone();
        headers.insert("appId".to_owned(), app_id);
        if let Some(c) = inner.conns.get(&conn) {
            headers.insert("connectionId".to_owned(), c.connection_id.clone());
        }
    }

    /// Sends the event to a random live connection (twice with duplicate injection); leaves it
    /// waiting when the app has none.
    fn dispatch(&self, inner: &mut Inner, seq: u64) {
        let Some(record) = inner.events.get(&seq) else { return };
        if matches!(record.state, EventState::Acked) {
            return;
        }
        let app_key = record.app_key.clone();
        let candidates: Vec<u64> = inner
            .conns
            .iter()
            .filter(|(_, c)| c.app_key == app_key && !c.draining && c.subscribes(FrameType::Event, "*"))
            .map(|(id, _)| *id)
            .collect();
        let copies = if inner.duplicate { 2 } else { 1 };
        let mut last_conn = None;
        for _ in 0..copies {
            let Some(&conn_id) = candidates.choose(&mut rand::thread_rng()) else { return };
            let message_id = self.next_message_id(inner);
            let mut headers = self.base_headers(&message_id);
            self.add_app_headers(inner, &mut headers, &app_key, conn_id);
            let Some(record) = inner.events.get(&seq) else { return };
            headers.insert("topic".to_owned(), "*".to_owned());
            headers.insert("eventType".to_owned(), record.event_type.clone());
            headers.insert("eventId".to_owned(), record.event_id.clone());
            headers.insert("eventCorpId".to_owned(), record.corp_id.clone());
            headers.insert("eventBornTime".to_owned(), record.born_ms.to_string());
            let frame = frame_json(FrameType::Event, headers, record.data.clone());
            let sent = inner.conns.get(&conn_id).is_some_and(|c| c.tx.try_send(frame).is_ok());
            if !sent {
                tracing::debug!(connection = conn_id, "Stream simulator: connection queue full; event stays pending.");
                continue;
            }
            inner.event_by_msg.insert(message_id.clone(), seq);
            if let Some(record) = inner.events.get_mut(&seq) {
                record.deliveries += 1;
                record.message_ids.push(message_id);
            }
            last_conn = Some(conn_id);
        }
        if let (Some(conn), Some(record)) = (last_conn, inner.events.get_mut(&seq)) {
            record.state = EventState::InFlight { conn, deadline: Instant::now() + inner.timings.ack_timeout };
        }
    }

    /// Timed-out deliveries become due again; due events are (re)delivered.
    fn sweep(&self) {
        let now = Instant::now();
        let mut inner = self.lock();
        let mut due = Vec::new();
        for (seq, record) in &mut inner.events {
            match record.state {
                EventState::InFlight { deadline, .. } if deadline <= now => {
                    tracing::debug!(event_id = %record.event_id, "Stream simulator: no ACK in time; redelivering.");
                    record.state = EventState::Waiting { due: now };
                    due.push(*seq);
                }
                EventState::Waiting { due: at } if at <= now => due.push(*seq),
                _ => {}
            }
        }
        for seq in due {
            self.dispatch(&mut inner, seq);
        }
    }

    fn take_ticket(&self, ticket: &str) -> Result<Admitted, (StatusCode, &'static str)> {
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        let Some(t) = inner.tickets.get_mut(ticket) else {
            return Err((StatusCode::UNAUTHORIZED, "unknown ticket; register at /v1.0/gateway/connections/open"));
        };
        if t.used {
            return Err((StatusCode::FORBIDDEN, "ticket already used; each ticket opens one connection"));
        }
        if now - t.issued_ms > TICKET_TTL_MS {
            return Err((StatusCode::FORBIDDEN, "ticket expired; tickets are valid for 90 s"));
        }
        t.used = true;
        Ok(Admitted { app_key: t.app_key.clone(), subscriptions: t.subscriptions.clone() })
    }

    fn add_conn(
        &self,
        app_key: String,
        subscriptions: Vec<(String, String)>,
    ) -> (u64, mpsc::Receiver<String>, ConnControl) {
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        let abort = CancellationToken::new();
        let disconnect = CancellationToken::new();
        let mut inner = self.lock();
        let id = inner.next_conn;
        inner.next_conn += 1;
        let timings = inner.timings;
        inner.conns.insert(
            id,
            Conn {
                app_key: app_key.clone(),
                connection_id: uuid::Uuid::new_v4().to_string(),
                subscriptions,
                tx,
                abort: abort.clone(),
                disconnect: disconnect.clone(),
                draining: false,
            },
        );
        tracing::debug!(connection = id, app_key = %app_key, "Stream simulator: connection open.");
        (id, rx, ConnControl { abort, disconnect, timings })
    }

    /// Forgets a connection: its un-ACKed events are requeued at once, its callbacks fail.
    fn remove_conn(&self, id: u64) {
        let mut inner = self.lock();
        if inner.conns.remove(&id).is_none() {
            return;
        }
        inner.callbacks.retain(|_, cb| cb.conn != id);
        inner.pings.retain(|_, (conn, _)| *conn != id);
        let now = Instant::now();
        let mut requeue = Vec::new();
        for (seq, record) in &mut inner.events {
            if let EventState::InFlight { conn, .. } = record.state {
                if conn == id {
                    record.state = EventState::Waiting { due: now };
                    requeue.push(*seq);
                }
            }
        }
        for seq in requeue {
            self.dispatch(&mut inner, seq);
        }
    }

    fn ping_frame(&self, conn: u64) -> String {
        let mut inner = self.lock();
        let message_id = self.next_message_id(&mut inner);
        let opaque = uuid::Uuid::new_v4().to_string();
        let mut headers = self.base_headers(&message_id);
        headers.insert("topic".to_owned(), "ping".to_owned());
        inner.pings.insert(message_id, (conn, opaque.clone()));
        inner.ping_stats.sent += 1;
        frame_json(FrameType::System, headers, json!({ "opaque": opaque }).to_string())
    }

    fn disconnect_frame(&self) -> String {
        let mut inner = self.lock();
        let message_id = self.next_message_id(&mut inner);
        let mut headers = self.base_headers(&message_id);
        headers.insert("topic".to_owned(), "disconnect".to_owned());
        frame_json(FrameType::System, headers, json!({ "reason": "connection is expired" }).to_string())
    }

    /// An ACK from the client: a ping echo, a callback answer or an event outcome.
    fn on_ack(&self, conn: u64, text: &str) {
        let mut inner = self.lock();
        let Ok(ack) = Ack::parse(text) else {
            inner.invalid_acks += 1;
            tracing::warn!(connection = conn, bytes = text.len(), "Stream simulator: client sent a non-ACK frame.");
            return;
        };
        let message_id = ack.message_id().unwrap_or_default().to_owned();
        if let Some((_, opaque)) = inner.pings.remove(&message_id) {
            let echoed = ack.data_json().ok().and_then(|v| v.get("opaque").and_then(Value::as_str).map(str::to_owned));
            if ack.code == 200 && echoed.as_deref() == Some(opaque.as_str()) {
                inner.ping_stats.answered += 1;
            } else {
                inner.ping_stats.mismatched += 1;
                tracing::warn!(connection = conn, "Stream simulator: ping ACK did not echo the opaque.");
            }
            return;
        }
        if let Some(pending) = inner.callbacks.remove(&message_id) {
            let _ = pending.reply.send(ack);
            return;
        }
        let Some(&seq) = inner.event_by_msg.get(&message_id) else {
            tracing::debug!(connection = conn, "Stream simulator: ACK for an unknown messageId ignored.");
            return;
        };
        let status = ack.data_json().ok().and_then(|v| v.get("status").and_then(Value::as_str).map(str::to_owned));
        let later_delay = inner.timings.later_delay;
        let Some(record) = inner.events.get_mut(&seq) else { return };
        match (ack.code, status.as_deref()) {
            (200, Some("SUCCESS")) => record.state = EventState::Acked,
            (_, Some("LATER")) | (500, _) => {
                if !matches!(record.state, EventState::Acked) {
                    record.state = EventState::Waiting { due: Instant::now() + later_delay };
                }
            }
            _ => {
                // §11 gotcha 5: an EVENT ACK must carry `status`; without it the event comes back.
                inner.invalid_acks += 1;
                tracing::warn!(connection = conn, code = ack.code, "Stream simulator: EVENT ACK without a status.");
            }
        }
    }

    async fn run_socket(self: Arc<Self>, mut socket: WebSocket, app_key: String, subs: Vec<(String, String)>) {
        let (id, mut rx, control) = self.add_conn(app_key, subs);
        self.sweep();
        let timings = control.timings;
        let ping_every = timings.ping_interval.max(Duration::from_millis(1));
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        let sweep_every =
            (timings.ack_timeout.min(timings.later_delay) / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(sweep_every);
        let mut close_at: Option<Instant> = None;
        loop {
            tokio::select! {
                () = control.abort.cancelled() => {
                    // Dropping the socket without a close frame is the network drop.
                    drop(socket);
                    self.remove_conn(id);
                    return;
                }
                () = control.disconnect.cancelled(), if close_at.is_none() => {
                    close_at = Some(Instant::now() + timings.disconnect_grace);
                    let frame = self.disconnect_frame();
                    self.journal("WS-SEND", &frame);
                    if socket.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                }
                () = sleep_until_opt(close_at), if close_at.is_some() => {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
                out = rx.recv() => match out {
                    Some(text) => {
                        self.journal("WS-SEND", &text);
                        if socket.send(Message::text(text)).await.is_err() { break }
                    }
                    None => break,
                },
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        self.journal("WS-RECV", text.as_str());
                        self.on_ack(id, text.as_str());
                    }
                    Some(Ok(Message::Close(_))) => {
                        // The socket queued the close reply when it read the client's Close;
                        // flush it, or a client that closes after `disconnect` (the Python SDK)
                        // sees "no close frame received" and waits before it reconnects.
                        let _ = futures::SinkExt::flush(&mut socket).await;
                        break;
                    }
                    Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                _ = ping.tick() => {
                    let frame = self.ping_frame(id);
                    self.journal("WS-SEND", &frame);
                    if socket.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
        self.remove_conn(id);
        tracing::debug!(connection = id, "Stream simulator: connection closed.");
    }
}

/// Per-connection control signals handed to the socket task.
struct ConnControl {
    abort: CancellationToken,
    disconnect: CancellationToken,
    timings: GatewayTimings,
}

fn frame_json(kind: FrameType, headers: BTreeMap<String, String>, data: String) -> String {
    Frame { spec_version: "1.0".to_owned(), kind, headers, data }.to_json()
}

/// Keeps the event table bounded by forgetting the oldest ACKed events.
fn evict_acked(inner: &mut Inner) {
    while inner.events.len() > MAX_EVENTS_KEPT {
        let Some(seq) = inner.events.iter().find(|(_, e)| matches!(e.state, EventState::Acked)).map(|(seq, _)| *seq)
        else {
            return;
        };
        if let Some(record) = inner.events.remove(&seq) {
            for id in record.message_ids {
                inner.event_by_msg.remove(&id);
            }
        }
    }
}

async fn open_handler(State(gw): State<Arc<StreamGateway>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let client_id = body.get("clientId").and_then(Value::as_str).unwrap_or_default();
    let client_secret = body.get("clientSecret").and_then(Value::as_str).unwrap_or_default();
    if client_id.is_empty() || !(gw.credentials)(client_id, client_secret) {
        return new_api_error(StatusCode::BAD_REQUEST, BAD_CREDENTIALS_CODE, BAD_CREDENTIALS_MESSAGE);
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return new_api_error(StatusCode::BAD_REQUEST, "MissingHost", "the simulator needs a Host header");
    };
    let subscriptions: Vec<(String, String)> = body
        .get("subscriptions")
        .and_then(Value::as_array)
        .map(|subs| {
            subs.iter()
                .filter_map(|s| {
                    let kind = s.get("type")?.as_str()?.to_owned();
                    let topic = s.get("topic")?.as_str()?.to_owned();
                    Some((kind, topic))
                })
                .collect()
        })
        .unwrap_or_default();
    let ticket = uuid::Uuid::new_v4().to_string();
    let issued_ms = gw.clock.now_millis();
    {
        let mut inner = gw.lock();
        // Forget long-expired tickets so registration loops cannot grow the table without bound; used
        // and just-expired ones stay a while so reusing them answers 403, not 401.
        inner.tickets.retain(|_, t| issued_ms - t.issued_ms <= 2 * TICKET_TTL_MS);
        inner.tickets_issued += 1;
        inner
            .tickets
            .insert(ticket.clone(), Ticket { app_key: client_id.to_owned(), subscriptions, issued_ms, used: false });
    }
    Json(json!({ "endpoint": format!("ws://{host}/connect"), "ticket": ticket })).into_response()
}

async fn connect_handler(
    State(gw): State<Arc<StreamGateway>>,
    Query(query): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(ticket) = query.get("ticket") else {
        return (StatusCode::UNAUTHORIZED, "missing ticket query parameter").into_response();
    };
    match gw.take_ticket(ticket) {
        Ok(admitted) => ws.on_upgrade(move |socket| gw.run_socket(socket, admitted.app_key, admitted.subscriptions)),
        Err((status, message)) => (status, message).into_response(),
    }
}
