use super::*;
use crate::state::Outcome;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower::ServiceExt;

/// A minimal vendor: `POST /echo` answers the body; `POST /count` applies an effect (counts);
/// records are counted.
#[derive(Default)]
struct EchoSim {
    records: AtomicU64,
    effects: AtomicU64,
}

#[async_trait::async_trait]
impl Simulator for EchoSim {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn router(self: Arc<Self>) -> axum::Router {
        axum::Router::new().route("/echo", post(|body: String| async move { body })).route(
            "/count",
            post(move || async move { self.effects.fetch_add(1, Ordering::SeqCst).saturating_add(1).to_string() }),
        )
    }
    fn info(&self) -> Value {
        json!({"records": self.records.load(Ordering::SeqCst)})
    }
    fn reset(&self) {
        self.records.store(0, Ordering::SeqCst);
        self.effects.store(0, Ordering::SeqCst);
    }
    async fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        if entity != "thing" {
            return Err(SimError::UnknownEntity {
                simulator: "echo",
                entity: entity.to_owned(),
                known: "thing".to_owned(),
            });
        }
        self.records.fetch_add(1, Ordering::SeqCst);
        Ok(value)
    }
}

fn setup() -> (axum::Router, SimState, Arc<EchoSim>) {
    let sim = Arc::new(EchoSim::default());
    let state = SimState::new();
    let dyn_sim: Arc<dyn Simulator> = sim.clone();
    (app(dyn_sim, state.clone()), state, sim)
}

async fn call(app: &axum::Router, method: Method, uri: &str, body: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn journal_records_vendor_requests_only() {
    let (app, state, _) = setup();
    let (status, body) = call(&app, Method::POST, "/echo?a=1&token=x", "hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    call(&app, Method::GET, "/missing", "").await;
    call(&app, Method::GET, "/_sim/info", "").await;

    let (_, journal) = call(&app, Method::GET, "/_sim/requests", "").await;
    let entries: Vec<JournalEntry> = serde_json::from_str(&journal).unwrap();
    assert_eq!(entries.len(), 2, "control requests are not journaled");
    let first = &entries[0];
    assert_eq!(first.index, 0);
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/echo");
    assert_eq!(first.query.as_deref(), Some("a=1&token=x"));
    assert_eq!(first.body, "hello");
    assert_eq!(first.headers.get("content-type").map(String::as_str), Some("application/json"));
    assert_eq!(first.status, Some(200));
    assert!(first.time.parse::<jiff::Timestamp>().is_ok(), "{}", first.time);
    assert_eq!(entries[1].status, Some(404));

    let (_, filtered) = call(&app, Method::GET, "/_sim/requests?since=1", "").await;
    let filtered: Vec<JournalEntry> = serde_json::from_str(&filtered).unwrap();
    assert_eq!(filtered.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1]);
    let (_, by_path) = call(&app, Method::GET, "/_sim/requests?path_prefix=/ec", "").await;
    let by_path: Vec<JournalEntry> = serde_json::from_str(&by_path).unwrap();
    assert_eq!(by_path.len(), 1);
    assert_eq!(state.request_count(), 2);
}

#[tokio::test]
async fn forced_status_applies_for_count_requests() {
    let (app, state, _) = setup();
    let plan = json!({"status": 503, "count": 2, "headers": {"Retry-After": "7"}, "body": "busy"});
    let (status, _) = call(&app, Method::POST, "/_sim/faults", &plan.to_string()).await;
    assert_eq!(status, StatusCode::OK);

    let req = Request::post("/echo").body(Body::from("x")).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "7");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "busy");

    assert_eq!(call(&app, Method::POST, "/echo", "x").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(call(&app, Method::POST, "/echo", "x").await, (StatusCode::OK, "x".to_owned()));
    assert_eq!(state.faults(), None, "the plan ends after `count` requests");
    let statuses: Vec<_> = state.requests(0, None).iter().map(|e| (e.status, e.faulted)).collect();
    assert_eq!(statuses, vec![(Some(503), true), (Some(503), true), (Some(200), false)]);
}

#[tokio::test(start_paused = true)]
async fn fault_duration_expires() {
    let (app, _state, _) = setup();
    let plan = json!({"status": 500, "duration_ms": 20000});
    call(&app, Method::POST, "/_sim/faults", &plan.to_string()).await;
    let (status, body) = call(&app, Method::POST, "/echo", "x").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], 500);
    tokio::time::advance(Duration::from_millis(19_999)).await;
    assert_eq!(call(&app, Method::POST, "/echo", "x").await.0, StatusCode::INTERNAL_SERVER_ERROR);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(call(&app, Method::POST, "/echo", "x").await.0, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_the_answer() {
    let (app, _state, _) = setup();
    call(&app, Method::POST, "/_sim/faults", r#"{"latency_ms": 1500}"#).await;
    let start = tokio::time::Instant::now();
    assert_eq!(call(&app, Method::POST, "/echo", "x").await, (StatusCode::OK, "x".to_owned()));
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn dropped_requests_are_never_answered() {
    let (app, state, _) = setup();
    call(&app, Method::POST, "/_sim/faults", r#"{"drop_ratio": 1.0, "count": 1}"#).await;
    let req = Request::post("/echo").body(Body::from("x")).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(req)).await;
    assert!(answer.is_err(), "a dropped request must stall");
    let entries = state.requests(0, None);
    assert_eq!((entries[0].status, entries[0].dropped), (None, true));
    assert_eq!(call(&app, Method::POST, "/echo", "y").await.0, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn slow_answers_are_held_after_the_handler_applied_the_effect() {
    let (app, state, sim) = setup();
    let plan = json!({"slow_ratio": 1.0, "slow_ms": 4000, "count": 1});
    assert_eq!(call(&app, Method::POST, "/_sim/faults", &plan.to_string()).await.0, StatusCode::OK);

    // A client that gives up before the answer: the effect is applied all the same.
    let req = Request::post("/count").body(Body::from("")).unwrap();
    let answer = tokio::time::timeout(Duration::from_millis(2000), app.clone().oneshot(req)).await;
    assert!(answer.is_err(), "a slow answer must not arrive before slow_ms");
    assert_eq!(sim.effects.load(Ordering::SeqCst), 1, "the handler ran before the hold");
    let entries = state.requests(0, None);
    assert_eq!(
        (entries[0].status, entries[0].slow, entries[0].faulted, entries[0].dropped),
        (Some(200), true, true, false),
        "journaled with the handler's status before the hold"
    );

    // The plan has ended (`count`): the next call is answered at once and not marked slow.
    let start = tokio::time::Instant::now();
    assert_eq!(call(&app, Method::POST, "/count", "").await, (StatusCode::OK, "2".to_owned()));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(!state.requests(1, None)[0].slow);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_waits_gets_the_slow_answer_after_slow_ms() {
    let (app, state, _) = setup();
    call(&app, Method::POST, "/_sim/faults", r#"{"slow_ratio": 1.0, "slow_ms": 1500}"#).await;
    let start = tokio::time::Instant::now();
    assert_eq!(call(&app, Method::POST, "/echo", "x").await, (StatusCode::OK, "x".to_owned()));
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
    assert!(state.requests(0, None)[0].slow);
}

#[tokio::test(start_paused = true)]
async fn slow_ratio_picks_about_that_fraction_of_requests() {
    let (app, state, sim) = setup();
    call(&app, Method::POST, "/_sim/faults", r#"{"slow_ratio": 0.3, "slow_ms": 10}"#).await;
    for _ in 0..1000 {
        assert_eq!(call(&app, Method::POST, "/count", "").await.0, StatusCode::OK);
    }
    assert_eq!(sim.effects.load(Ordering::SeqCst), 1000, "a slow answer still applies its effect once");
    let slow = state.requests(0, None).iter().filter(|e| e.slow).count();
    // 1000 draws at p = 0.3: sd ≈ 14.5, so [200, 400] is about 7 sd either side.
    assert!((200..=400).contains(&slow), "{slow} slow answers out of 1000 at slow_ratio 0.3");
}

#[tokio::test]
async fn delete_clears_faults_and_bad_plans_are_refused() {
    let (app, _state, _) = setup();
    call(&app, Method::POST, "/_sim/faults", r#"{"status": 500}"#).await;
    let (_, plan) = call(&app, Method::GET, "/_sim/faults", "").await;
    assert_eq!(serde_json::from_str::<Value>(&plan).unwrap()["status"], 500);
    assert_eq!(call(&app, Method::DELETE, "/_sim/faults", "").await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&app, Method::POST, "/echo", "x").await.0, StatusCode::OK);

    for bad in [
        r#"{"drop_ratio": 2}"#,
        r#"{"slow_ratio": -0.1, "slow_ms": 10}"#,
        r#"{"slow_ratio": 0.5}"#,
        r#"{"status": 42}"#,
        r#"{"stauts": 500}"#,
        "nope",
    ] {
        let (status, body) = call(&app, Method::POST, "/_sim/faults", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.contains("invalid fault plan"), "{body}");
    }
}

#[tokio::test]
async fn reset_clears_journal_faults_and_simulator() {
    let (app, state, sim) = setup();
    call(&app, Method::POST, "/echo", "x").await;
    let (status, body) = call(&app, Method::POST, "/_sim/records/thing", r#"{"id":1}"#).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"id":1}"#));
    assert_eq!(call(&app, Method::POST, "/_sim/records/other", "{}").await.0, StatusCode::NOT_FOUND);
    let (_, info) = call(&app, Method::GET, "/_sim/info", "").await;
    assert_eq!(serde_json::from_str::<Value>(&info).unwrap(), json!({"simulator": "echo", "info": {"records": 1}}));
    call(&app, Method::POST, "/_sim/faults", r#"{"status": 500}"#).await;

    assert_eq!(call(&app, Method::POST, "/_sim/reset", "").await.0, StatusCode::NO_CONTENT);
    assert!(state.requests(0, None).is_empty());
    assert_eq!(state.request_count(), 0);
    assert_eq!(state.faults(), None);
    assert_eq!(sim.records.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn journal_is_bounded() {
    let state = SimState::new();
    let blank = JournalEntry {
        index: 0,
        time: String::new(),
        method: "GET".into(),
        path: "/".into(),
        query: None,
        headers: Default::default(),
        body: String::new(),
        status: None,
        dropped: false,
        faulted: false,
        slow: false,
    };
    for _ in 0..JOURNAL_CAPACITY + 5 {
        state.begin(blank.clone());
    }
    let entries = state.requests(0, None);
    assert_eq!(entries.len(), JOURNAL_CAPACITY);
    assert_eq!(entries[0].index, 5);
    state.finish(5, Outcome { status: Some(201), ..Outcome::default() });
    assert_eq!(state.requests(5, None)[0].status, Some(201));
}

#[tokio::test]
async fn serve_all_gives_each_simulator_a_port_and_shuts_down() {
    let sims: Vec<Arc<dyn Simulator>> = vec![Arc::new(EchoSim::default())];
    let fleet = serve_all(sims, "127.0.0.1".parse().unwrap()).await.unwrap();
    let urls = fleet.urls();
    let url = urls.get("echo").unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let addr = fleet.servers[0].addr;
    let stream = tokio::net::TcpStream::connect(addr).await;
    assert!(stream.is_ok());
    drop(stream);
    fleet.shutdown().await.unwrap();
}
