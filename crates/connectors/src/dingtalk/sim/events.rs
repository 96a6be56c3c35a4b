//! Where the simulated DingTalk sends what happens (reference §4.2, §5.3, §6, §7): app events go
//! to the app's Stream connections or to its encrypted HTTP callback, card clicks go to the
//! card's callback route. Every published event is kept in a bounded log for tests and the page.

use super::http_push::{CallbackTarget, HttpPusher, PushError, PushSettings};
use super::stream::{StreamGateway, StreamPushError};
use crate::dingtalk::stream::{TOPIC_CARD_CALLBACK, TOPIC_ROBOT_MESSAGE};
use connect::Clock;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// Published events kept for inspection; older ones are evicted.
pub const EVENT_LOG_CAPACITY: usize = 10_000;
/// HTTP pushes waiting for the pusher; past this, publishing waits (backpressure, not loss).
const HTTP_QUEUE_CAPACITY: usize = 1_024;
/// How long a card click waits for the subscriber's ACK (DingTalk's callback timeout is a few
/// seconds; the clicker sees a spinner meanwhile).
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a simulated event, ping or card callback did not reach the app.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("no Stream gateway in this simulator")]
    NoStreamGateway,
    #[error(transparent)]
    Stream(#[from] StreamPushError),
    #[error("no callback URL registered for route key `{0}`")]
    NoCardRoute(String),
    #[error("the simulator has no HTTP client")]
    NoHttpClient,
    #[error(transparent)]
    Http(#[from] PushError),
}

/// How a card's button clicks come back (reference §4.1 `callbackType`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CardCallbackRoute {
    Stream,
    Http { route_key: String },
}

/// How an app hears its events: the developer console's choice in real DingTalk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum EventSubscription {
    /// Over the app's Stream connections; queued while none is connected.
    Stream,
    /// Encrypted HTTP callback to `url` (reference §6).
    Http { url: String, token: String, encoding_aes_key: String },
}

/// One event as published, with where it went.
#[derive(Debug, Clone, Serialize)]
pub struct PublishedEvent {
    pub seq: u64,
    pub time_ms: i64,
    pub app_key: String,
    pub event_type: String,
    pub event_id: String,
    pub payload: Value,
    /// `stream`, `http` or `none`.
    pub transport: &'static str,
    /// What the transport said (queued, delivered, or why it failed).
    pub outcome: String,
}

#[derive(Debug, Clone)]
struct CardRoute {
    url: String,
    #[allow(dead_code)] // Registered like DingTalk does; how it signs requests is UNVERIFIED (§4.2).
    api_secret: String,
}

#[derive(Debug, Default)]
struct Inner {
    subscriptions: BTreeMap<String, EventSubscription>,
    card_routes: BTreeMap<(String, String), CardRoute>,
    log: VecDeque<PublishedEvent>,
}

/// One queued HTTP push.
struct HttpJob {
    seq: u64,
    target: CallbackTarget,
    plaintext: Value,
}

/// The simulator's event dispatcher.
pub struct EventRouter {
    clock: Arc<dyn Clock>,
    corp_id: String,
    inner: Mutex<Inner>,
    next_seq: AtomicU64,
    /// `None` only if the HTTP client could not be built (then HTTP pushes fail with a reason).
    pusher: Option<HttpPusher>,
    /// One sequential lane, so a subscriber sees events in the order they happened.
    http_lane: Mutex<Option<tokio::sync::mpsc::Sender<HttpJob>>>,
    /// The simulator's Stream gateway, once composed.
    stream: OnceLock<Arc<StreamGateway>>,
}

impl std::fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRouter").field("corp_id", &self.corp_id).finish_non_exhaustive()
    }
}

/// The Stream `data` of an approval event carries `resource`,
/// `/v1.0/event/<eventType>/processCode/<processCode>/type/<type>` (reference §5.3, fixtures
/// `events/stream_data_bpms_*.json`); HTTP plaintexts do not. Other events are left as they are:
/// their `resource` shape is not in the fixtures.
fn with_resource(event_type: &str, payload: &Value) -> Value {
    let mut data = payload.clone();
    if !event_type.starts_with("bpms_") {
        return data;
    }
    let text = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
    if let (Some(code), Some(kind), Some(obj)) = (text("processCode"), text("type"), data.as_object_mut()) {
        let resource = format!("/v1.0/event/{event_type}/processCode/{code}/type/{kind}");
        obj.insert("resource".into(), Value::String(resource));
    }
    data
}

impl EventRouter {
    pub fn new(clock: Arc<dyn Clock>, corp_id: &str) -> Self {
        Self::with_push_settings(clock, corp_id, PushSettings::default())
    }

    pub fn with_push_settings(clock: Arc<dyn Clock>, corp_id: &str, push: PushSettings) -> Self {
        let pusher = match HttpPusher::new(push) {
            Ok(p) => Some(p.with_clock(clock.clone())),
            Err(err) => {
                tracing::error!("DingTalk simulator: HTTP callbacks disabled: {err}");
                None
            }
        };
        Self {
            clock,
            corp_id: corp_id.to_owned(),
            inner: Mutex::new(Inner::default()),
            next_seq: AtomicU64::new(0),
            pusher,
            http_lane: Mutex::new(None),
            stream: OnceLock::new(),
        }
    }

    /// Routes Stream-subscribed events and Stream card callbacks through `gateway`.
    pub fn attach_stream(&self, gateway: Arc<StreamGateway>) {
        let _already = self.stream.set(gateway);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn corp_id(&self) -> &str {
        &self.corp_id
    }

    /// Back to no subscriptions, no card routes, an empty log.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
        self.next_seq.store(0, Ordering::SeqCst);
    }

    pub fn set_subscription(&self, app_key: &str, subscription: EventSubscription) {
        self.lock().subscriptions.insert(app_key.to_owned(), subscription);
    }

    /// The app's subscription; Stream when none was set.
    pub fn subscription(&self, app_key: &str) -> EventSubscription {
        self.lock().subscriptions.get(app_key).cloned().unwrap_or(EventSubscription::Stream)
    }

    /// `POST /v1.0/card/callbacks/register` stores this.
    pub fn register_card_route(&self, app_key: &str, route_key: &str, url: &str, api_secret: &str) {
        let route = CardRoute { url: url.to_owned(), api_secret: api_secret.to_owned() };
        self.lock().card_routes.insert((app_key.to_owned(), route_key.to_owned()), route);
    }

    pub fn card_route_url(&self, app_key: &str, route_key: &str) -> Option<String> {
        self.lock().card_routes.get(&(app_key.to_owned(), route_key.to_owned())).map(|r| r.url.clone())
    }

    /// Events published since start or the last reset, oldest first.
    pub fn published(&self) -> Vec<PublishedEvent> {
        self.lock().log.iter().cloned().collect()
    }

    /// An app event (e.g. `bpms_task_change`). `payload` is the event body without `EventType` and
    /// `corpId`; each transport adds what it needs. Returns at once: delivery happens in order
    /// in the background and its outcome is written to the log.
    pub async fn publish(self: &Arc<Self>, app_key: &str, event_type: &str, payload: Value) {
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        let subscription = self.subscription(app_key);
        let (transport, event_id, outcome) = match (&subscription, self.stream.get()) {
            (EventSubscription::Stream, Some(gateway)) => {
                // The gateway keeps it until an ACK says SUCCESS, redelivering as DingTalk does.
                let event_id =
                    gateway.push_event(app_key, event_type, &self.corp_id, with_resource(event_type, &payload));
                ("stream", event_id, "handed to the Stream gateway".to_owned())
            }
            (EventSubscription::Stream, None) => {
                ("none", format!("simevt{seq:08x}"), "no Stream gateway in this simulator".to_owned())
            }
            (EventSubscription::Http { .. }, _) => ("http", format!("simevt{seq:08x}"), "queued".to_owned()),
        };
        self.log(PublishedEvent {
            seq,
            time_ms: self.clock.now_millis(),
            app_key: app_key.to_owned(),
            event_type: event_type.to_owned(),
            event_id,
            payload: payload.clone(),
            transport,
            outcome,
        });
        if let EventSubscription::Http { url, token, encoding_aes_key } = subscription {
            // The HTTP plaintext carries the type and the corp inside (reference §5.3).
            let mut plaintext = payload;
            if let Some(obj) = plaintext.as_object_mut() {
                obj.insert("EventType".into(), Value::String(event_type.to_owned()));
                obj.insert("corpId".into(), Value::String(self.corp_id.clone()));
            }
            let target = CallbackTarget { url, token, encoding_aes_key, owner_key: app_key.to_owned() };
            let lane = self.http_lane();
            if lane.send(HttpJob { seq, target, plaintext }).await.is_err() {
                self.set_outcome(seq, "the HTTP push lane stopped".to_owned());
            }
        }
    }

    fn log(&self, event: PublishedEvent) {
        let mut inner = self.lock();
        if inner.log.len() >= EVENT_LOG_CAPACITY {
            inner.log.pop_front();
        }
        inner.log.push_back(event);
    }

    fn set_outcome(&self, seq: u64, outcome: String) {
        if let Some(event) = self.lock().log.iter_mut().find(|e| e.seq == seq) {
            event.outcome = outcome;
        }
    }

    /// The sender of the HTTP lane, starting its worker on first use.
    fn http_lane(self: &Arc<Self>) -> tokio::sync::mpsc::Sender<HttpJob> {
        let mut lane = self.http_lane.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = lane.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<HttpJob>(HTTP_QUEUE_CAPACITY);
        let router = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let Some(router) = router.upgrade() else { break };
                let outcome = match &router.pusher {
                    Some(pusher) => match pusher.push_event(&job.target, &job.plaintext).await {
                        Ok(done) => format!("delivered after {} attempt(s)", done.attempts),
                        Err(err) => err.to_string(),
                    },
                    None => "the simulator has no HTTP client".to_owned(),
                };
                router.set_outcome(job.seq, outcome);
            }
        });
        *lane = Some(tx.clone());
        tx
    }

    /// `POST /_sim/actions/stream_ping`: a SYSTEM ping to each of the app's Stream connections now.
    pub fn stream_ping(&self, app_key: &str) -> Result<usize, EventError> {
        let gateway = self.stream.get().ok_or(EventError::NoStreamGateway)?;
        Ok(gateway.ping_now(app_key))
    }

    /// `POST /_sim/actions/stream_disconnect`: a SYSTEM `disconnect` to each of the app's Stream
    /// connections (what DingTalk sends before it rotates a connection, §7.4).
    pub fn stream_disconnect(&self, app_key: &str) -> Result<usize, EventError> {
        let gateway = self.stream.get().ok_or(EventError::NoStreamGateway)?;
        Ok(gateway.disconnect_all(app_key))
    }

    /// A message a user sent to the app robot (Stream topic `/v1.0/im/bot/messages/get`, §7.7).
    /// Fire-and-forget in DingTalk: no redelivery.
    pub async fn robot_message(&self, app_key: &str, data: Value) -> Result<(), EventError> {
        let gateway = self.stream.get().ok_or(EventError::NoStreamGateway)?;
        gateway.push_callback(app_key, TOPIC_ROBOT_MESSAGE, data, CALLBACK_TIMEOUT).await?;
        Ok(())
    }

    /// A card button click, sent over the card's route; returns the subscriber's card update R.
    pub async fn card_callback(
        &self,
        app_key: &str,
        route: &CardCallbackRoute,
        data: Value,
    ) -> Result<Option<Value>, EventError> {
        match route {
            CardCallbackRoute::Stream => {
                let gateway = self.stream.get().ok_or(EventError::NoStreamGateway)?;
                Ok(gateway.push_callback(app_key, TOPIC_CARD_CALLBACK, data, CALLBACK_TIMEOUT).await?)
            }
            CardCallbackRoute::Http { route_key } => {
                let url = self
                    .card_route_url(app_key, route_key)
                    .ok_or_else(|| EventError::NoCardRoute(route_key.clone()))?;
                let pusher = self.pusher.as_ref().ok_or(EventError::NoHttpClient)?;
                Ok(pusher.post_card_callback(&url, &data).await?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_resource;
    use serde_json::{json, Value};

    /// The fixtures' Stream data without `resource` gets back exactly the fixtures' `resource`.
    #[test]
    fn approval_events_on_stream_carry_their_resource() {
        for (name, event_type) in [
            ("stream_data_bpms_instance_change_finish.json", "bpms_instance_change"),
            ("stream_data_bpms_task_change_finish.json", "bpms_task_change"),
        ] {
            let fixture: Value = fixtures::read_json(format!("dingtalk/events/{name}"));
            let mut payload = fixture.clone();
            let obj = payload.as_object_mut().unwrap();
            obj.remove("resource");
            obj.remove("_headers_for_this_event");
            assert_eq!(with_resource(event_type, &payload)["resource"], fixture["resource"], "{name}");
        }
        let other = json!({"UserId": ["u1"], "type": "x"});
        assert_eq!(with_resource("user_add_org", &other), other, "no guessed resource for other events");
    }
}
