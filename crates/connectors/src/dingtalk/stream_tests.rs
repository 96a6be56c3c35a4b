//! Stream mode: fixture frames and ACKs, then the client against the simulator's gateway on loopback.

use super::*;
use crate::dingtalk::sim::stream::{GatewayTimings, StreamGateway, StreamPushError};
use axum::routing::post;
use axum::Router;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64};
use tokio::sync::Notify;

const APP: &str = "dingappkey0000000001";
const SECRET: &str = "app-secret-for-local-mock-only";

fn fixture(name: &str) -> Value {
    fixtures::read_json(format!("dingtalk/{name}"))
}

fn fixture_frame(name: &str) -> (Frame, Value) {
    let fx = fixture(name);
    let frame: Frame = serde_json::from_value(fx["server_frame"].clone()).unwrap();
    (frame, fx)
}

fn fixture_ack(fx: &Value, which: &str) -> Ack {
    serde_json::from_value(fx[which].clone()).unwrap()
}

// -------------------------------------------------------------------------------------------
// Frames and ACKs against the captured fixtures
// -------------------------------------------------------------------------------------------

#[test]
fn every_fixture_frame_parses_and_round_trips() {
    let cases = [
        ("stream/01_system_ping.json", FrameType::System, "ping"),
        ("stream/02_event_bpms_instance_change.json", FrameType::Event, "*"),
        ("stream/03_callback_robot_message.json", FrameType::Callback, TOPIC_ROBOT_MESSAGE),
        ("stream/04_callback_card_action.json", FrameType::Callback, TOPIC_CARD_CALLBACK),
        ("stream/05_system_disconnect.json", FrameType::System, "disconnect"),
    ];
    for (name, kind, topic) in cases {
        let (frame, fx) = fixture_frame(name);
        let text = serde_json::to_string(&fx["server_frame"]).unwrap();
        assert_eq!(Frame::parse(&text).unwrap(), frame, "{name}");
        assert_eq!(frame.spec_version, "1.0", "{name}");
        assert_eq!(frame.kind, kind, "{name}");
        assert_eq!(frame.topic(), Some(topic), "{name}");
        assert!(frame.message_id().is_some_and(|m| m.starts_with("212ca9d7_974_")), "{name}");
        assert_eq!(frame.data_json().unwrap(), fx["server_frame_data_decoded"], "{name}");
        assert_eq!(Frame::parse(&frame.to_json()).unwrap(), frame, "{name}");
    }
}

#[test]
fn event_frame_keeps_every_header_including_unknown_ones() {
    let (frame, fx) = fixture_frame("stream/02_event_bpms_instance_change.json");
    let wire = fx["server_frame"]["headers"].as_object().unwrap();
    assert_eq!(frame.headers.len(), wire.len());
    assert_eq!(frame.header("eventUnifiedAppId"), Some("bbb381b6-0000-4000-8000-00000058daac"));
    assert_eq!(frame.event_type(), Some("bpms_instance_change"));
    assert_eq!(frame.event_id(), Some("5b9e0f3a8c2d4e6f8a0b1c2d3e4f5a6b"));
    let reparsed: Value = serde_json::from_str(&frame.to_json()).unwrap();
    assert_eq!(reparsed["headers"], fx["server_frame"]["headers"]);
}

#[test]
fn non_string_header_values_are_kept_as_text_and_unknown_types_rejected() {
    let frame =
        Frame::parse(r#"{"specVersion":"1.0","type":"EVENT","headers":{"time":1767220100000,"x":true},"data":"{}"}"#)
            .unwrap();
    assert_eq!(frame.header("time"), Some("1767220100000"));
    assert_eq!(frame.header("x"), Some("true"));
    assert!(Frame::parse(r#"{"specVersion":"1.0","type":"PUSH","headers":{},"data":"{}"}"#).is_err());
}

#[test]
fn ping_ack_matches_the_python_sdk_capture_exactly() {
    let (frame, fx) = fixture_frame("stream/01_system_ping.json");
    assert_eq!(Ack::ping(&frame), fixture_ack(&fx, "ack_from_official_python_sdk"));
}

#[test]
fn event_ack_matches_the_node_sdk_capture_exactly() {
    let (frame, fx) = fixture_frame("stream/02_event_bpms_instance_change.json");
    let ack = Ack::event(&frame, EventAck::Success);
    assert_eq!(ack, fixture_ack(&fx, "ack_from_official_node_sdk"));
    assert_eq!(ack.data, r#"{"status":"SUCCESS","message":"OK"}"#);

    let later = Ack::event(&frame, EventAck::Later);
    assert_eq!(later.code, 200);
    assert_eq!(later.message_id(), Some("212ca9d7_974_1898c159aa6_0002"));
    assert_eq!(later.data_json().unwrap()["status"], "LATER");
}

#[test]
fn callback_acks_match_the_node_sdk_captures() {
    let (frame, fx) = fixture_frame("stream/03_callback_robot_message.json");
    assert_eq!(Ack::callback(&frame, None), fixture_ack(&fx, "ack_from_official_node_sdk"));

    let (frame, fx) = fixture_frame("stream/04_callback_card_action.json");
    let response = &fx["ack_from_official_node_sdk_data_decoded"]["response"];
    let ack = Ack::callback(&frame, Some(response));
    assert_eq!(ack, fixture_ack(&fx, "ack_from_official_node_sdk"));

    // The documented card response becomes `{"response": …}` in the ACK data.
    let card = fixture("events/card_callback_response.json");
    let ack = Ack::callback(&frame, Some(&card["response"]));
    assert_eq!(ack.data_json().unwrap(), json_response(&card["response"]));
}

fn json_response(r: &Value) -> Value {
    serde_json::json!({ "response": r })
}

#[test]
fn a_failed_callback_acks_with_code_500() {
    let (frame, _) = fixture_frame("stream/04_callback_card_action.json");
    let ack = Ack::callback_error(&frame, "database unavailable");
    assert_eq!(ack.code, 500);
    assert_eq!(ack.message, "database unavailable");
    assert_eq!(ack.message_id(), Some("212ca9d7_974_1898c159aa6_0004"));
    assert_eq!(ack.data, r#"{"response":null}"#);
    assert_eq!(Ack::parse(&ack.to_json()).unwrap(), ack);
}

#[test]
fn backoff_grows_with_jitter_inside_the_bounds() {
    let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
    for attempt in 0..64 {
        for _ in 0..20 {
            let d = backoff_delay(attempt, min, max);
            assert!(d >= min && d <= max, "attempt {attempt}: {d:?}");
        }
    }
    assert_eq!(backoff_delay(0, min, max), min);
    for _ in 0..50 {
        let d = backoff_delay(3, min, max);
        assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(8), "{d:?}");
        let d = backoff_delay(10, min, max);
        assert!(d >= Duration::from_secs(30), "{d:?}");
    }
    let spread: HashSet<Duration> = (0..20).map(|_| backoff_delay(5, min, max)).collect();
    assert!(spread.len() > 1, "jitter must vary the delay");
}

#[test]
fn ticket_debug_hides_the_ticket() {
    let t = Ticket { endpoint: "wss://x/connect".to_owned(), ticket: "7724109a-secret".to_owned() };
    assert!(!format!("{t:?}").contains("7724109a"));
}

// -------------------------------------------------------------------------------------------
// Loopback: client against the gateway
// -------------------------------------------------------------------------------------------

#[derive(Debug)]
struct ManualClock(AtomicI64);

impl connect::Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

struct Sim {
    gw: Arc<StreamGateway>,
    base: String,
    clock: Arc<ManualClock>,
}

fn test_timings() -> GatewayTimings {
    GatewayTimings {
        ping_interval: Duration::from_millis(100),
        disconnect_grace: Duration::from_millis(800),
        ack_timeout: Duration::from_millis(400),
        later_delay: Duration::from_millis(100),
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn start_sim() -> Sim {
    let clock = Arc::new(ManualClock(AtomicI64::new(1_767_220_000_000)));
    let gw =
        Arc::new(StreamGateway::new(clock.clone(), Arc::new(|id: &str, secret: &str| id == APP && secret == SECRET)));
    gw.set_timings(test_timings());
    let base = serve(gw.clone().router()).await;
    Sim { gw, base, clock }
}

fn settings(base: &str) -> StreamSettings {
    let mut s = StreamSettings::new(base, APP, SecretString::from(SECRET));
    s.outbound = Outbound::loopback();
    s.ping_interval = Duration::from_millis(100);
    s.pong_timeout = Duration::from_millis(500);
    s.backoff_min = Duration::from_millis(20);
    s.backoff_max = Duration::from_millis(200);
    s
}

fn http() -> HttpClient {
    HttpClient::new(HttpSettings::loopback()).unwrap()
}

/// Dedupes on eventId like the real gateway does; can hold the first call of an event open.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Frame>>,
    processed: Mutex<HashSet<String>>,
    later_first: AtomicBool,
    gate_first: AtomicBool,
    gate: Notify,
    callback_response: Mutex<Option<Result<Option<Value>, CallbackRefused>>>,
}

impl Recorder {
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    fn processed(&self) -> usize {
        self.processed.lock().unwrap().len()
    }
}

#[async_trait]
impl StreamHandler for Recorder {
    async fn on_event(&self, frame: &Frame) -> EventAck {
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(frame.clone());
            calls.len() == 1
        };
        if first && self.gate_first.load(Ordering::SeqCst) {
            self.gate.notified().await;
        }
        if first && self.later_first.load(Ordering::SeqCst) {
            return EventAck::Later;
        }
        self.processed.lock().unwrap().insert(frame.event_id().unwrap_or_default().to_owned());
        EventAck::Success
    }

    async fn on_callback(&self, frame: &Frame) -> Result<Option<Value>, CallbackRefused> {
        self.calls.lock().unwrap().push(frame.clone());
        self.callback_response.lock().unwrap().clone().unwrap_or(Ok(None))
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(4);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connected_client(sim: &Sim, handler: Arc<Recorder>) -> StreamHandle {
    let handle = StreamClient::spawn(settings(&sim.base), handler, CancellationToken::new());
    wait_until("client connected", || handle.connected() && sim.gw.connections(APP) == 1).await;
    handle
}

fn bpms_data() -> Value {
    let mut data = fixture("events/stream_data_bpms_instance_change_finish.json");
    let map = data.as_object_mut().unwrap();
    map.remove("_headers_for_this_event");
    map.remove("eventId");
    data
}

#[tokio::test]
async fn registers_connects_and_answers_pings_with_the_opaque() {
    let sim = start_sim().await;
    let handle = connected_client(&sim, Arc::new(Recorder::default())).await;
    assert_eq!(handle.connections_opened(), 1);
    assert_eq!(sim.gw.tickets_issued(), 1);
    wait_until("two pings answered", || sim.gw.ping_stats().answered >= 2).await;
    assert_eq!(sim.gw.ping_stats().mismatched, 0);
    assert_eq!(sim.gw.invalid_acks(), 0);
    assert!(handle.last_error().is_none());
    handle.shutdown().await;
    wait_until("socket closed after shutdown", || sim.gw.connections(APP) == 0).await;
}

#[tokio::test]
async fn an_acked_event_is_handled_once_and_not_redelivered() {
    let sim = start_sim().await;
    let rec = Arc::new(Recorder::default());
    let handle = connected_client(&sim, rec.clone()).await;

    let event_id = sim.gw.push_event(APP, "bpms_instance_change", "dingcorp0123456789abcdef", bpms_data());
    wait_until("event acked", || sim.gw.pending_events(APP) == 0).await;
    {
        let calls = rec.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        let frame = &calls[0];
        assert_eq!(frame.kind, FrameType::Event);
        assert_eq!(frame.topic(), Some("*"));
        assert_eq!(frame.event_id(), Some(event_id.as_str()));
        assert_eq!(frame.event_type(), Some("bpms_instance_change"));
        assert_eq!(frame.header("eventCorpId"), Some("dingcorp0123456789abcdef"));
        for h in ["eventBornTime", "messageId", "time", "appId", "connectionId", "contentType"] {
            assert!(frame.header(h).is_some_and(|v| !v.is_empty()), "header {h}");
        }
        let data = frame.data_json().unwrap();
        assert_eq!(data["eventId"], event_id.as_str());
        assert_eq!(data["processInstanceId"], "a1B2c3D4e5F6g7H8i9J0kLmN01761700000");
        assert!(data["resource"].as_str().unwrap().starts_with("/v1.0/event/bpms_instance_change/"));
    }
    // Well past the ACK timeout: nothing comes back.
    tokio::time::sleep(test_timings().ack_timeout * 2).await;
    assert_eq!(rec.calls(), 1);
    assert_eq!(sim.gw.delivered_events(), vec![(event_id, 1, true)]);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_later_answer_gets_the_event_redelivered() {
    let sim = start_sim().await;
    let rec = Arc::new(Recorder::default());
    rec.later_first.store(true, Ordering::SeqCst);
    let handle = connected_client(&sim, rec.clone()).await;

    let event_id = sim.gw.push_event(APP, "bpms_task_change", "dingcorp0123456789abcdef", serde_json::json!({}));
    wait_until("event acked after LATER", || sim.gw.pending_events(APP) == 0).await;
    assert_eq!(rec.calls(), 2);
    assert_eq!(rec.processed(), 1);
    assert_eq!(sim.gw.delivered_events(), vec![(event_id, 2, true)]);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_reconnects_with_a_fresh_ticket_and_the_event_arrives_once() {
    let sim = start_sim().await;
    let rec = Arc::new(Recorder::default());
    rec.gate_first.store(true, Ordering::SeqCst);
    let handle = connected_client(&sim, rec.clone()).await;

    let event_id = sim.gw.push_event(APP, "bpms_instance_change", "dingcorp0123456789abcdef", bpms_data());
    wait_until("handler running (un-ACKed)", || rec.calls() == 1).await;
    assert_eq!(sim.gw.pending_events(APP), 1);

    sim.gw.drop_connections(APP);
    wait_until("reconnected", || handle.connections_opened() == 2 && sim.gw.connections(APP) == 1).await;
    assert_eq!(sim.gw.tickets_issued(), 2, "a reconnect registers for a fresh ticket");
    wait_until("event redelivered and acked", || sim.gw.pending_events(APP) == 0).await;
    assert_eq!(rec.calls(), 2, "at least once: the redelivery reached the handler");

    // The first handler finishes late; its ACK has no connection to go to.
    rec.gate.notify_one();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rec.processed(), 1, "deduplicated on eventId: one distinct event");
    let events = sim.gw.delivered_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, event_id);
    assert!(events[0].1 >= 2 && events[0].2, "{events:?}");
    assert!(handle.connected());
    handle.shutdown().await;
}

#[tokio::test]
async fn a_slow_handler_does_not_hold_up_other_frames() {
    let sim = start_sim().await;
    let rec = Arc::new(Recorder::default());
    rec.gate_first.store(true, Ordering::SeqCst);
    let handle = connected_client(&sim, rec.clone()).await;

    sim.gw.push_event(APP, "user_add_org", "dingcorp0123456789abcdef", serde_json::json!({}));
    wait_until("first handler blocked", || rec.calls() == 1).await;
    let second = sim.gw.push_event(APP, "user_add_org", "dingcorp0123456789abcdef", serde_json::json!({}));
    wait_until("second event acked", || sim.gw.delivered_events().iter().any(|(id, _, acked)| *id == second && *acked))
        .await;
    assert_eq!(sim.gw.pending_events(APP), 1);
    let answered = sim.gw.ping_stats().answered;
    wait_until("pings still answered", || sim.gw.ping_stats().answered > answered).await;

    rec.gate.notify_one();
    wait_until("first acked once released", || sim.gw.pending_events(APP) == 0).await;
    handle.shutdown().await;
}

#[tokio::test]
async fn disconnect_opens_a_new_connection_before_the_old_one_closes() {
    let sim = start_sim().await;
    let rec = Arc::new(Recorder::default());
    let handle = connected_client(&sim, rec.clone()).await;

    sim.gw.disconnect_all(APP);
    // The grace is 800 ms: both sockets must be open at the same time before the old one goes.
    wait_until("new connection beside the draining one", || {
        handle.connections_opened() == 2 && sim.gw.connections(APP) == 2
    })
    .await;
    assert_eq!(sim.gw.tickets_issued(), 2);

    // New events go to the new connection while the old one drains.
    let event_id = sim.gw.push_event(APP, "bpms_task_change", "dingcorp0123456789abcdef", serde_json::json!({}));
    wait_until("event acked on the new connection", || sim.gw.pending_events(APP) == 0).await;
    assert_eq!(sim.gw.delivered_events(), vec![(event_id, 1, true)]);

    wait_until("old connection closed by the gateway", || sim.gw.connections(APP) == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(handle.connected());
    assert_eq!(handle.connections_opened(), 2, "the server's close of a draining socket is not a failure");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_callback_round_trip_returns_the_handlers_response() {
    let sim = start_sim().await;
    let rec = Arc::new(Recorder::default());
    let card_response = fixture("events/card_callback_response.json")["response"].clone();
    *rec.callback_response.lock().unwrap() = Some(Ok(Some(card_response.clone())));
    let handle = connected_client(&sim, rec.clone()).await;

    let request = fixture("events/card_callback_request.json")["raw"].clone();
    let got = sim.gw.push_callback(APP, TOPIC_CARD_CALLBACK, request.clone(), Duration::from_secs(2)).await.unwrap();
    assert_eq!(got, Some(card_response));
    {
        let calls = rec.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].kind, FrameType::Callback);
        assert_eq!(calls[0].topic(), Some(TOPIC_CARD_CALLBACK));
        assert_eq!(calls[0].data_json().unwrap(), request);
    }

    *rec.callback_response.lock().unwrap() = Some(Err(CallbackRefused("database unavailable".to_owned())));
    let err =
        sim.gw.push_callback(APP, TOPIC_ROBOT_MESSAGE, request.clone(), Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(&err, StreamPushError::Rejected { code: 500, .. }), "{err:?}");

    let err = sim.gw.push_callback(APP, "/v1.0/graph/api/invoke", request.clone(), Duration::from_secs(2)).await;
    assert!(matches!(err, Err(StreamPushError::NoConnection { .. })), "topic not subscribed: {err:?}");
    let err = sim.gw.push_callback("someotherapp", TOPIC_CARD_CALLBACK, request, Duration::from_secs(2)).await;
    assert!(matches!(err, Err(StreamPushError::NoConnection { .. })), "{err:?}");
    handle.shutdown().await;
}

#[tokio::test]
async fn duplicate_injection_delivers_twice_and_the_handler_dedupes() {
    let sim = start_sim().await;
    let rec = Arc::new(Recorder::default());
    let handle = connected_client(&sim, rec.clone()).await;
    sim.gw.inject_duplicate(true);

    let event_id = sim.gw.push_event(APP, "bpms_instance_change", "dingcorp0123456789abcdef", bpms_data());
    wait_until("both copies handled", || rec.calls() == 2).await;
    wait_until("acked", || sim.gw.pending_events(APP) == 0).await;
    assert_eq!(rec.processed(), 1);
    let calls = rec.calls.lock().unwrap().clone();
    assert_eq!(calls[0].event_id(), calls[1].event_id());
    assert_ne!(calls[0].message_id(), calls[1].message_id());
    assert_eq!(sim.gw.delivered_events(), vec![(event_id, 2, true)]);
    handle.shutdown().await;
}

#[tokio::test]
async fn events_pushed_while_nobody_is_connected_wait_for_a_connection() {
    let sim = start_sim().await;
    let event_id = sim.gw.push_event(APP, "bpms_task_change", "dingcorp0123456789abcdef", serde_json::json!({}));
    assert_eq!(sim.gw.pending_events(APP), 1);
    assert_eq!(sim.gw.delivered_events(), vec![(event_id.clone(), 0, false)]);

    let rec = Arc::new(Recorder::default());
    let handle = connected_client(&sim, rec.clone()).await;
    wait_until("queued event delivered", || sim.gw.pending_events(APP) == 0).await;
    assert_eq!(sim.gw.delivered_events(), vec![(event_id, 1, true)]);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_ticket_opens_one_connection_only_and_expires_after_90_s() {
    let sim = start_sim().await;
    let http = http();
    let ticket = register(&http, &settings(&sim.base)).await.unwrap();
    let host = sim.base.trim_start_matches("http://");
    assert_eq!(ticket.endpoint, format!("ws://{host}/connect"));

    let (ws, _) = connect_ws(&http, &ticket).await.unwrap();
    wait_until("first use accepted", || sim.gw.connections(APP) == 1).await;
    let again = connect_ws(&http, &ticket).await;
    assert!(matches!(again, Err(StreamError::HandshakeRefused { status: 403, .. })), "{again:?}");

    let unknown = Ticket { endpoint: ticket.endpoint.clone(), ticket: "not-a-ticket".to_owned() };
    let err = connect_ws(&http, &unknown).await;
    assert!(matches!(err, Err(StreamError::HandshakeRefused { status: 401, .. })), "{err:?}");

    let late = register(&http, &settings(&sim.base)).await.unwrap();
    sim.clock.0.fetch_add(TICKET_TTL_PLUS_ONE, Ordering::SeqCst);
    let err = connect_ws(&http, &late).await;
    assert!(matches!(err, Err(StreamError::HandshakeRefused { status: 403, .. })), "{err:?}");
    drop(ws);
}

const TICKET_TTL_PLUS_ONE: i64 = crate::dingtalk::sim::stream::TICKET_TTL_MS + 1;

#[tokio::test]
async fn bad_credentials_are_refused_with_the_dingtalk_error_body() {
    let sim = start_sim().await;
    let mut wrong = settings(&sim.base);
    wrong.client_secret = SecretString::from("wrong-secret");

    // The raw answer.
    let resp = reqwest::Client::new()
        .post(format!("{}{REGISTER_PATH}", sim.base))
        .json(&serde_json::json!({"clientId": APP, "clientSecret": "wrong-secret", "subscriptions": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalidClientIdOrSecret");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["requestid"].as_str().is_some_and(|r| !r.is_empty()));

    // What the client makes of it.
    let err = register(&http(), &wrong).await.unwrap_err();
    assert!(err.is_bad_credentials(), "{err:?}");
    match &err {
        StreamError::BadCredentials { status, code, request_id, .. } => {
            assert_eq!(*status, 400);
            assert_eq!(code, "invalidClientIdOrSecret");
            assert!(!request_id.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("wrong-secret"));

    // The running client keeps retrying, reports why, and never connects.
    let handle = StreamClient::spawn(wrong, Arc::new(Recorder::default()), CancellationToken::new());
    wait_until("error reported", || handle.last_error().is_some()).await;
    assert!(handle.last_error().unwrap().contains("clientSecret"));
    assert!(!handle.connected());
    assert_eq!(handle.connections_opened(), 0);
    handle.shutdown().await;
}

#[tokio::test]
async fn the_registration_request_has_the_documented_shape() {
    let seen: Arc<Mutex<Option<(http::HeaderMap, Value)>>> = Arc::default();
    let store = seen.clone();
    let router = Router::new().route(
        REGISTER_PATH,
        post(move |headers: http::HeaderMap, body: axum::Json<Value>| {
            *store.lock().unwrap() = Some((headers, body.0));
            async { axum::Json(serde_json::json!({"endpoint": "ws://127.0.0.1:9/connect", "ticket": "t"})) }
        }),
    );
    let base = serve(router).await;
    let ticket = register(&http(), &settings(&format!("{base}/"))).await.unwrap();
    assert_eq!(ticket, Ticket { endpoint: "ws://127.0.0.1:9/connect".to_owned(), ticket: "t".to_owned() });

    let (headers, body) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["accept"], "application/json");
    let captured = &fixture("stream/connections_open.json")["request_python_sdk"]["body"];
    assert_eq!(body["clientId"], captured["clientId"]);
    assert_eq!(body["clientSecret"], captured["clientSecret"]);
    assert_eq!(body["subscriptions"], captured["subscriptions"]);
    assert!(body["ua"].as_str().is_some_and(|ua| ua.starts_with("dingbridge/")));
}

#[tokio::test]
async fn a_missing_pong_drops_the_connection_and_reconnects() {
    // A WebSocket server that accepts and then never reads, so it never answers pings.
    let raw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_addr = raw.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = raw.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                keep.lock().unwrap().push(ws);
            }
        }
    });
    let endpoint = format!("ws://{raw_addr}/connect");
    let router = Router::new().route(
        REGISTER_PATH,
        post(move || {
            let endpoint = endpoint.clone();
            async move { axum::Json(serde_json::json!({"endpoint": endpoint, "ticket": "t"})) }
        }),
    );
    let base = serve(router).await;
    let mut s = settings(&base);
    s.pong_timeout = Duration::from_millis(200);
    let handle = StreamClient::spawn(s, Arc::new(Recorder::default()), CancellationToken::new());
    // Nothing else ends the first connection: the server keeps it open and sends nothing.
    wait_until("reconnected after a pong timeout", || handle.connections_opened() >= 2).await;
    assert!(held.lock().unwrap().len() >= 2);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_wss_endpoint_goes_through_rustls() {
    // Nothing listens with TLS here; the point is that wss:// is attempted (a TLS/connect error),
    // not refused for lack of TLS support.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t = Ticket { endpoint: format!("wss://127.0.0.1:{port}/connect"), ticket: "secret-ticket".to_owned() };
    let err = connect_ws(&http(), &t).await.unwrap_err();
    assert!(matches!(err, StreamError::Transport { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("wss://127.0.0.1") && !msg.contains("secret-ticket"), "{msg}");

    let t = Ticket { endpoint: "ftp://127.0.0.1/connect".to_owned(), ticket: "x".to_owned() };
    assert!(matches!(connect_ws(&http(), &t).await, Err(StreamError::BadEndpoint { .. })));
}

/// Next EVENT frame on a raw socket, skipping SYSTEM pings.
async fn next_event(ws: &mut WsStream) -> Frame {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(3), ws.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(text) = msg {
            let frame = Frame::parse(text.as_str()).unwrap();
            if frame.kind == FrameType::Event {
                return frame;
            }
        }
    }
}

#[tokio::test]
async fn an_event_ack_without_status_does_not_count_and_the_event_comes_back() {
    let sim = start_sim().await;
    let http = http();
    let ticket = register(&http, &settings(&sim.base)).await.unwrap();
    let (mut ws, _) = connect_ws(&http, &ticket).await.unwrap();
    let event_id = sim.gw.push_event(APP, "bpms_instance_change", "dingcorp0123456789abcdef", bpms_data());

    // The Python SDK's style: code 200 echoing the event data, no `status` (§7.4, §11 gotcha 5).
    let first = next_event(&mut ws).await;
    let python_style = Ack::reply(&first, 200, "OK", first.data.clone());
    ws.send(Message::text(python_style.to_json())).await.unwrap();

    let again = next_event(&mut ws).await;
    assert_eq!(again.event_id(), Some(event_id.as_str()));
    assert_ne!(again.message_id(), first.message_id());
    assert_eq!(sim.gw.invalid_acks(), 1);
    assert_eq!(sim.gw.pending_events(APP), 1);

    ws.send(Message::text(Ack::event(&again, EventAck::Success).to_json())).await.unwrap();
    wait_until("acked", || sim.gw.pending_events(APP) == 0).await;
    assert_eq!(sim.gw.delivered_events(), vec![(event_id, 2, true)]);
}

#[tokio::test]
async fn reset_drops_connections_and_forgets_events() {
    let sim = start_sim().await;
    let handle = connected_client(&sim, Arc::new(Recorder::default())).await;
    sim.gw.inject_duplicate(true);
    sim.gw.push_event(APP, "bpms_task_change", "dingcorp0123456789abcdef", serde_json::json!({}));
    wait_until("acked", || sim.gw.pending_events(APP) == 0).await;

    sim.gw.reset();
    assert!(sim.gw.delivered_events().is_empty());
    assert_eq!(sim.gw.tickets_issued(), 0);
    wait_until("client back", || handle.connections_opened() == 2 && sim.gw.connections(APP) == 1).await;
    let event_id = sim.gw.push_event(APP, "bpms_task_change", "dingcorp0123456789abcdef", serde_json::json!({}));
    wait_until("acked after reset", || sim.gw.pending_events(APP) == 0).await;
    assert_eq!(sim.gw.delivered_events(), vec![(event_id, 1, true)], "duplicate injection is off again");
    assert_eq!(sim.gw.timings(), test_timings(), "timings survive a reset");
    handle.shutdown().await;
}

/// A client that closes after a `disconnect` (the official Python SDK does) gets the close
/// handshake answered at once, not after the disconnect grace, so it reconnects without delay.
#[tokio::test]
async fn a_client_close_is_answered_at_once() {
    let sim = start_sim().await;
    let http = http();
    let ticket = register(&http, &settings(&sim.base)).await.unwrap();
    let (mut ws, _) = connect_ws(&http, &ticket).await.unwrap();
    wait_until("connected", || sim.gw.connections(APP) == 1).await;
    ws.send(Message::Close(None)).await.unwrap();
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(answered.is_ok(), "the simulator did not answer the close handshake");
    wait_until("gone", || sim.gw.connections(APP) == 0).await;
}
