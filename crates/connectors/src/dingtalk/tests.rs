//! DingTalk robot: signing vectors, wire bodies, error table, and the sink against the
//! simulator over real loopback HTTP.

use super::errors::{classify_robot_response, ROBOT_THROTTLE_PENALTY};
use super::sim::{DingTalkSim, SimRobot, SEED_ROBOTS};
use super::*;
use connect::http::Outbound;
use connect::{Clock, Delivery, DeliveryError, Disposition, Idempotency, Sink, SystemClock};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn fixture(name: &str) -> Value {
    fixtures::read_json(format!("dingtalk/{name}"))
}

/// Wall clock shifted by a settable offset.
#[derive(Debug, Default)]
struct ShiftedClock {
    offset_ms: AtomicI64,
}

impl ShiftedClock {
    fn shifted(offset_ms: i64) -> Arc<Self> {
        Arc::new(Self { offset_ms: AtomicI64::new(offset_ms) })
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> jiff::Timestamp {
        let ms = jiff::Timestamp::now().as_millisecond() + self.offset_ms.load(Ordering::SeqCst);
        jiff::Timestamp::from_millisecond(ms).unwrap()
    }
}

mod rolling_window {
    //! Paused-time tests of `connect::ratelimit::RollingWindow` (they need tokio's `test-util`,
    //! which `dingbridge-connect` does not enable).
    use connect::ratelimit::RollingWindow;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    fn assert_window(grants: &[Instant], max: usize, window: Duration) {
        for (i, start) in grants.iter().enumerate() {
            let in_window = grants[i..].iter().take_while(|t| **t < *start + window).count();
            assert!(in_window <= max, "{in_window} grants in the window starting at grant {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hundred_acquisitions_respect_twenty_per_minute() {
        let limiter = RollingWindow::new(20, Duration::from_secs(60));
        let start = Instant::now();
        let mut grants = Vec::new();
        for _ in 0..100 {
            limiter.acquire().await;
            grants.push(Instant::now());
        }
        assert_window(&grants, 20, Duration::from_secs(60));
        assert_eq!(grants[19] - start, Duration::ZERO);
        assert_eq!(grants[20] - start, Duration::from_secs(60));
        assert_eq!(grants[99] - start, Duration::from_secs(240), "R8: 5 windows of 20");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_acquirers_never_exceed_the_window() {
        let limiter = Arc::new(RollingWindow::new(5, Duration::from_secs(1)));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let l = Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            }));
        }
        let mut grants = Vec::new();
        for t in tasks {
            grants.push(t.await.unwrap());
        }
        grants.sort();
        assert_window(&grants, 5, Duration::from_secs(1));
        assert_eq!(grants[29] - start, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn try_acquire_reports_the_wait() {
        let limiter = RollingWindow::new(2, Duration::from_secs(10));
        assert!(limiter.try_acquire().is_ok());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(limiter.try_acquire().is_ok());
        assert_eq!(limiter.try_acquire(), Err(Duration::from_secs(7)));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert!(limiter.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn block_is_honoured() {
        let limiter = RollingWindow::new(20, Duration::from_secs(60));
        let start = Instant::now();
        limiter.block_until(start + Duration::from_secs(600));
        limiter.block_until(start + Duration::from_secs(5)); // never shortens a longer block
        assert_eq!(limiter.try_acquire(), Err(Duration::from_secs(600)));
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(600));
        assert!(limiter.blocked_until().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_grants_at_once_but_honours_blocks() {
        let limiter = RollingWindow::unlimited();
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert_eq!(Instant::now(), start);
        limiter.block_until(start + Duration::from_secs(1));
        limiter.acquire().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
        assert_eq!(limiter.max(), None);
        assert_eq!(RollingWindow::new(0, Duration::from_secs(60)).max(), None);
    }
}

// ---------------------------------------------------------------- signing, bodies, errors

#[test]
fn every_sign_vector_is_reproduced() {
    let vectors = fixture("robot_sign_vectors.json");
    let vectors = vectors["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 5);
    for v in vectors {
        let id = v["id"].as_str().unwrap();
        let secret = v["secret"].as_str().unwrap();
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(robot_signature_base64(secret, ts), v["hmac_sha256_base64"].as_str().unwrap(), "{id}");
        assert_eq!(robot_sign(secret, ts.parse().unwrap()), v["sign"].as_str().unwrap(), "{id}");
    }
}

#[test]
fn every_fixture_body_round_trips_through_robot_message() {
    let fixtures = fixture("robot_webhook/message_bodies.json");
    let bodies = fixtures["bodies"].as_object().unwrap();
    assert_eq!(bodies.len(), 6);
    for (name, body) in bodies {
        let message = RobotMessage::from_value(body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&serde_json::to_value(&message).unwrap(), body, "{name}");
        assert_eq!(message.msgtype(), body["msgtype"], "{name}");
    }
}

#[test]
fn builders_produce_the_fixture_bodies() {
    let fixtures = fixture("robot_webhook/message_bodies.json");
    let b = &fixtures["bodies"];
    let markdown = RobotMessage::markdown(
        "PO-2024-0042",
        "#### PO-2024-0042\n> Amount: **HK$12,800**\n\n- Vendor: ACME HK Ltd\n- [Open in ERP](https://erp.example.com/po/42)\n\n@manager4711",
    )
    .with_at(At { at_user_ids: Some(vec!["manager4711".into()]), is_at_all: Some(false), ..At::default() });
    assert_eq!(serde_json::to_value(&markdown).unwrap(), b["markdown"]);

    let multi = RobotMessage::action_card_buttons(
        "PO-2024-0042",
        "### PO-2024-0042\nAmount HK$12,800",
        vec![
            ActionButton { title: "Approve in ERP".into(), action_url: "https://erp.example.com/po/42/approve".into() },
            ActionButton { title: "Reject in ERP".into(), action_url: "https://erp.example.com/po/42/reject".into() },
        ],
        true,
    );
    assert_eq!(serde_json::to_value(&multi).unwrap(), b["actionCard_multi_button"]);
    let link = RobotMessage::link(
        "New opportunity: ACME HK Ltd",
        "Est. HK$250,000, owner Chan Tai Man",
        "https://crm.example.com/opp/123",
        Some(String::new()),
    );
    assert_eq!(serde_json::to_value(&link).unwrap(), b["link"]);
    let text = RobotMessage::text("hi").with_at(At::default());
    assert_eq!(serde_json::to_value(&text).unwrap(), json!({"msgtype": "text", "text": {"content": "hi"}, "at": {}}));
}

#[test]
fn invalid_payloads_name_the_problem() {
    let cases = [
        (json!("text"), "JSON object"),
        (json!({"text": {"content": "x"}}), "`msgtype` is missing"),
        (json!({"msgtype": "image", "image": {}}), "unsupported msgtype `image`"),
        (json!({"msgtype": "markdown", "markdown": {"title": "t"}}), "missing field `text`"),
        (json!({"msgtype": "markdown", "markdown": {"title": "", "text": "x"}}), "markdown.title"),
        (json!({"msgtype": "text", "text": {"content": " "}}), "text.content"),
        (json!({"msgtype": "actionCard", "actionCard": {"title": "t", "text": "x"}}), "singleTitle"),
        (
            json!({"msgtype": "actionCard", "actionCard": {"title": "t", "text": "x", "btns": []}}),
            "at least one button",
        ),
        (
            json!({"msgtype": "actionCard", "actionCard": {"title": "t", "text": "x", "singleTitle": "a", "singleURL": "u", "btnOrientation": "2"}}),
            "btnOrientation",
        ),
        (json!({"msgtype": "feedCard", "feedCard": {"links": []}}), "feedCard.links"),
        (json!({"msgtype": "link", "link": {"title": "t", "text": "x"}}), "messageUrl"),
    ];
    for (payload, expected) in cases {
        let err = RobotMessage::from_value(&payload).unwrap_err().to_string();
        assert!(err.contains(expected), "{payload}: {err}");
    }
}

#[test]
fn robot_answers_are_classified_from_the_body() {
    use Disposition::*;
    let penalty = RetryAfter(ROBOT_THROTTLE_PENALTY);
    // (http status, Retry-After, body, expected disposition or None for Ok, error kind, detail contains)
    type Row = (u16, Option<u64>, &'static str, Option<Disposition>, &'static str, &'static str);
    let rows: &[Row] = &[
        (200, None, r#"{"errcode":0,"errmsg":"ok"}"#, None, "", ""),
        (
            200,
            None,
            r#"{"errcode":130101,"errmsg":"send too fast, exceed 20 times per minute"}"#,
            Some(penalty),
            "throttled",
            "130101",
        ),
        (
            200,
            None,
            r#"{"errcode":660026,"errmsg":"sending too many messages per minute"}"#,
            Some(penalty),
            "throttled",
            "660026",
        ),
        (200, None, r#"{"errcode":310000,"errmsg":"sign not match"}"#, Some(Permanent), "rejected", "sign not match"),
        (
            200,
            None,
            r#"{"errcode":310000,"errmsg":"description:机器人发送签名不匹配;solution:请确认签名和生成签名的时间戳必须都要传递"}"#,
            Some(Permanent),
            "rejected",
            "机器人发送签名不匹配",
        ),
        (
            200,
            None,
            r#"{"errcode":310000,"errmsg":"invalid timestamp"}"#,
            Some(Permanent),
            "rejected",
            "invalid timestamp",
        ),
        (
            200,
            None,
            r#"{"errcode":310000,"errmsg":"keywords not in content"}"#,
            Some(Permanent),
            "rejected",
            "keywords not in content",
        ),
        (
            200,
            None,
            r#"{"errcode":310000,"errmsg":"ip 203.0.113.7 not in whitelist"}"#,
            Some(Permanent),
            "rejected",
            "whitelist",
        ),
        (
            200,
            None,
            r#"{"errcode":300005,"errmsg":"token is not exist"}"#,
            Some(Permanent),
            "rejected",
            "robot token does not exist",
        ),
        (200, None, r#"{"errcode":-1,"errmsg":"系统繁忙"}"#, Some(Retry), "server", "errcode -1"),
        (
            200,
            None,
            r#"{"errcode":15,"errmsg":"Remote service error","sub_code":"isp.top-remote-connection-timeout"}"#,
            Some(Retry),
            "server",
            "errcode 15",
        ),
        (
            200,
            None,
            r#"{"errcode":88,"errmsg":"Remote service error","sub_code":""}"#,
            Some(Retry),
            "server",
            "errcode 88",
        ),
        (
            200,
            None,
            r#"{"errcode":88,"errmsg":"Remote service error","sub_code":"40014","sub_msg":"不合法的access_token"}"#,
            Some(Permanent),
            "rejected",
            "40014",
        ),
        (
            200,
            None,
            r#"{"errcode":90018,"errmsg":"qps limit"}"#,
            Some(RetryAfter(Duration::from_secs(1))),
            "throttled",
            "90018",
        ),
        (200, None, r#"{"errcode":40035,"errmsg":"缺少参数 json"}"#, Some(Permanent), "rejected", "40035"),
        (200, None, r#"{"errcode":12345,"errmsg":"something new"}"#, Some(Permanent), "rejected", "something new"),
        (200, None, "<html>gateway</html>", Some(Retry), "server", "unreadable answer"),
        (200, None, "", Some(Retry), "server", "empty body"),
        (500, None, r#"{"errcode":-1}"#, Some(Retry), "server", ""),
        (502, None, "<html>Bad Gateway</html>", Some(Retry), "server", "Bad Gateway"),
        (503, Some(30), "", Some(Retry), "server", ""),
        (429, Some(30), "", Some(RetryAfter(Duration::from_secs(30))), "throttled", "HTTP 429"),
        (429, None, "", Some(RetryAfter(Duration::from_secs(60))), "throttled", "HTTP 429"),
        (400, None, r#"{"code":"InvalidParameter"}"#, Some(Permanent), "rejected", "HTTP 400"),
        (401, None, "", Some(Permanent), "rejected", "HTTP 401"),
        (403, None, "", Some(Permanent), "rejected", "HTTP 403"),
        (404, None, "", Some(Permanent), "rejected", "HTTP 404"),
        (302, None, "", Some(Permanent), "rejected", "base_url"),
    ];
    for (status, retry_after, body, expected, kind, detail) in rows {
        let result = classify_robot_response(*status, retry_after.map(Duration::from_secs), body.as_bytes());
        match (expected, result) {
            (None, Ok(())) => {}
            (Some(disposition), Err(err)) => {
                assert_eq!(err.disposition(), *disposition, "{status} {body}: {err}");
                assert_eq!(err.kind(), *kind, "{status} {body}: {err}");
                assert!(err.to_string().contains(detail), "{status} {body}: {err}");
            }
            (expected, got) => panic!("{status} {body}: expected {expected:?}, got {got:?}"),
        }
    }
}

#[test]
fn settings_are_validated_without_io() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ok = RobotSettings::new("abc123".into());
    assert!(RobotSink::new(ok.clone(), clock.clone()).is_ok());
    let bad = [
        RobotSettings { base_url: "oapi.dingtalk.com".into(), ..ok.clone() },
        RobotSettings { base_url: "https://oapi.dingtalk.com/robot/send".into(), ..ok.clone() },
        RobotSettings { access_token: "".into(), ..ok.clone() },
        RobotSettings { access_token: "https://x/robot/send?access_token=abc".into(), ..ok.clone() },
        RobotSettings { secret: Some("".into()), ..ok.clone() },
        RobotSettings { timeout: Duration::ZERO, ..ok.clone() },
    ];
    for settings in bad {
        let err = RobotSink::new(settings, clock.clone()).unwrap_err();
        assert_eq!(err.disposition(), Disposition::Permanent, "{err}");
        assert!(err.to_string().contains("robot settings are invalid"), "{err}");
        assert!(!err.to_string().contains("abc"), "the token must not be echoed: {err}");
    }
}

// ---------------------------------------------------------------- sink <-> simulator over HTTP

struct Harness {
    server: ::sim::RunningSim,
    dingtalk: Arc<DingTalkSim>,
}

impl Harness {
    async fn start(sim_clock: Arc<dyn Clock>) -> Self {
        let dingtalk = Arc::new(DingTalkSim::new(sim_clock));
        let server = ::sim::serve(dingtalk.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
        Self { server, dingtalk }
    }

    /// Settings for a seeded robot, pacing off unless the test sets it.
    fn settings(&self, robot: usize) -> RobotSettings {
        let (_, token, secret) = SEED_ROBOTS[robot];
        RobotSettings {
            base_url: self.server.url(),
            secret: Some(secret.into()),
            per_minute: 0,
            timeout: Duration::from_secs(5),
            outbound: Outbound::loopback(),
            ..RobotSettings::new(token.into())
        }
    }

    fn sink(&self, settings: RobotSettings, clock: Arc<dyn Clock>) -> RobotSink {
        RobotSink::new(settings, clock).unwrap()
    }

    async fn journal(&self) -> Vec<::sim::JournalEntry> {
        let url = format!("{}/_sim/requests?path_prefix=/robot/send", self.server.url());
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    async fn set_robot(&self, patch: Value) {
        let url = format!("{}/_sim/records/robot", self.server.url());
        let resp = reqwest::Client::new().post(url).json(&patch).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
}

fn delivery(payload: Value) -> Delivery {
    Delivery {
        idempotency_key: "k-1".into(),
        event_id: "ev-1".into(),
        flow: "po-approval".into(),
        destination: "ops-group".into(),
        payload,
        attempt: 1,
    }
}

fn markdown(n: usize) -> Value {
    json!({"msgtype": "markdown", "markdown": {"title": format!("PO-{n}"), "text": format!("#### PO-{n}\nAmount **HK$12,800**")}})
}

fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[tokio::test]
async fn markdown_is_delivered_signed_and_recorded() {
    let h = Harness::start(system()).await;
    let sink = h.sink(h.settings(0), system());
    assert_eq!(sink.idempotency(), Idempotency::None);
    sink.healthcheck().await.unwrap();
    assert!(h.journal().await.is_empty(), "healthcheck sends nothing");

    let receipt = sink.deliver(&delivery(markdown(1))).await.unwrap();
    assert_eq!(receipt.detail.as_deref(), Some("errcode 0: ok"));

    let messages = h.dingtalk.messages("ops");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].msgtype, "markdown");
    assert_eq!(messages[0].body, markdown(1));
    assert_eq!(h.dingtalk.accepted(), 1);

    let journal = h.journal().await;
    assert_eq!(journal.len(), 1);
    let entry = &journal[0];
    assert_eq!((entry.method.as_str(), entry.path.as_str()), ("POST", "/robot/send"));
    assert_eq!(entry.headers.get("content-type").map(String::as_str), Some("application/json;charset=utf-8"));
    let query = entry.query.as_deref().unwrap();
    assert!(query.starts_with(&format!("access_token={}&timestamp=", SEED_ROBOTS[0].1)), "{query}");
    assert!(query.contains("&sign="), "{query}");
    assert_eq!(sink.endpoint(), format!("{}/robot/send", h.server.url()));

    let url = format!("{}/_sim/messages?robot=ops", h.server.url());
    let listed: Vec<RecordedMessage> = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(listed, messages);
}

#[tokio::test]
async fn each_request_is_signed_with_a_fresh_timestamp() {
    let h = Harness::start(system()).await;
    let clock = ShiftedClock::shifted(0);
    let sink = h.sink(h.settings(1), clock.clone());
    sink.deliver(&delivery(markdown(1))).await.unwrap();
    // Two hours later, the same sink still signs correctly: nothing was computed at start-up.
    clock.offset_ms.store(2 * 3_600_000, Ordering::SeqCst);
    let sim_later = ShiftedClock::shifted(2 * 3_600_000);
    let h2 = Harness::start(sim_later).await;
    let sink2 = h2.sink(RobotSettings { base_url: h2.server.url(), ..h.settings(1) }, clock.clone());
    sink2.deliver(&delivery(markdown(2))).await.unwrap();
    let stamps: Vec<i64> = [h.journal().await, h2.journal().await]
        .iter()
        .map(|j| {
            let q = j[0].query.clone().unwrap();
            let ts = q.split('&').find_map(|p| p.strip_prefix("timestamp=")).unwrap().to_owned();
            ts.parse().unwrap()
        })
        .collect();
    assert!(stamps[1] - stamps[0] >= 2 * 3_600_000, "{stamps:?}");
}

#[tokio::test]
async fn wrong_secret_is_rejected_after_one_attempt() {
    let h = Harness::start(system()).await;
    let settings = RobotSettings { secret: Some("SECwrong".into()), ..h.settings(0) };
    let err = h.sink(settings, system()).deliver(&delivery(markdown(1))).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent, "{err}");
    assert!(err.to_string().contains("sign not match"), "{err}");
    assert!(!err.to_string().contains(SEED_ROBOTS[0].1), "no token in errors: {err}");
    assert_eq!(h.journal().await.len(), 1, "one attempt, no retry inside the sink");
    assert!(h.dingtalk.messages("ops").is_empty());
}

#[tokio::test]
async fn unknown_token_is_rejected_permanently() {
    let h = Harness::start(system()).await;
    let settings = RobotSettings { access_token: "00ff".into(), ..h.settings(0) };
    let err = h.sink(settings, system()).deliver(&delivery(markdown(1))).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("robot token does not exist"), "{err}");
}

#[tokio::test]
async fn twenty_first_message_in_a_minute_is_throttled_and_blocks_the_sink() {
    let h = Harness::start(system()).await;
    let sink = h.sink(h.settings(2), system()); // sink pacing off, simulator at DingTalk's 20/min
    for n in 0..20 {
        sink.deliver(&delivery(markdown(n))).await.unwrap();
    }
    let err = sink.deliver(&delivery(markdown(21))).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::RetryAfter(ROBOT_THROTTLE_PENALTY), "{err}");
    assert_eq!(err.kind(), "throttled");
    assert!(err.to_string().contains("130101"), "{err}");
    let until = sink.limiter().blocked_until().expect("the sink honours the block");
    assert!(until >= tokio::time::Instant::now() + Duration::from_secs(590));
    assert_eq!(sink.limiter().try_acquire().map_err(|w| w > Duration::from_secs(590)), Err(true));
    assert_eq!(h.dingtalk.messages("finance").len(), 20);
    assert_eq!(h.dingtalk.answer_counts().get(&130_101), Some(&1));
}

#[tokio::test]
async fn simulator_block_lasts_block_ms_by_its_clock() {
    let clock = ShiftedClock::shifted(0);
    let h = Harness::start(clock.clone()).await;
    h.set_robot(json!({"name": "ops", "blocked_for_ms": 600_000})).await;
    // Sign with the simulator's (shifted) clock so only the block decides.
    let sink = h.sink(h.settings(0), clock.clone());
    let err = sink.deliver(&delivery(markdown(1))).await.unwrap_err();
    assert!(err.to_string().contains("130101"), "{err}");
    clock.offset_ms.store(599_000, Ordering::SeqCst);
    let sink = h.sink(h.settings(0), clock.clone());
    assert!(sink.deliver(&delivery(markdown(2))).await.is_err());
    clock.offset_ms.store(600_001, Ordering::SeqCst);
    let sink = h.sink(h.settings(0), clock.clone());
    sink.deliver(&delivery(markdown(3))).await.unwrap();
}

#[tokio::test]
async fn simulator_fault_500_is_a_retryable_server_error() {
    let h = Harness::start(system()).await;
    let url = format!("{}/_sim/faults", h.server.url());
    let plan = json!({"status": 500, "count": 1});
    reqwest::Client::new().post(url).json(&plan).send().await.unwrap().error_for_status().unwrap();
    let sink = h.sink(h.settings(0), system());
    let err = sink.deliver(&delivery(markdown(1))).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Retry, "{err}");
    assert_eq!(err.kind(), "server");
    sink.deliver(&delivery(markdown(1))).await.unwrap();
    assert_eq!(h.dingtalk.messages("ops").len(), 1);
}

#[tokio::test]
async fn simulator_fault_429_retry_after_is_honoured() {
    let h = Harness::start(system()).await;
    let url = format!("{}/_sim/faults", h.server.url());
    let plan = json!({"status": 429, "count": 1, "headers": {"Retry-After": "45"}});
    reqwest::Client::new().post(url).json(&plan).send().await.unwrap().error_for_status().unwrap();
    let sink = h.sink(h.settings(0), system());
    let err = sink.deliver(&delivery(markdown(1))).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(45)), "{err}");
    assert!(sink.limiter().blocked_until().is_some());
}

#[tokio::test]
async fn dropped_request_times_out_as_retryable() {
    let h = Harness::start(system()).await;
    let url = format!("{}/_sim/faults", h.server.url());
    reqwest::Client::new().post(url).json(&json!({"drop_ratio": 1.0})).send().await.unwrap();
    let settings = RobotSettings { timeout: Duration::from_millis(300), ..h.settings(0) };
    let err = h.sink(settings, system()).deliver(&delivery(markdown(1))).await.unwrap_err();
    assert_eq!(err.kind(), "timeout", "{err}");
    assert_eq!(err.disposition(), Disposition::Retry);
    assert!(!err.to_string().contains("access_token"), "{err}");
    let Harness { server, .. } = h;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connection_refused_is_a_transport_error_without_the_token() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut settings = RobotSettings::new(SEED_ROBOTS[0].1.into());
    settings.base_url = format!("http://{addr}");
    settings.outbound = Outbound::loopback();
    let err = RobotSink::new(settings, system()).unwrap().deliver(&delivery(markdown(1))).await.unwrap_err();
    assert_eq!(err.kind(), "transport", "{err}");
    assert!(!err.to_string().contains(SEED_ROBOTS[0].1), "{err}");
}

#[tokio::test]
async fn two_hour_old_timestamp_is_rejected() {
    let h = Harness::start(system()).await;
    let sink = h.sink(h.settings(0), ShiftedClock::shifted(-2 * 3_600_000));
    let err = sink.deliver(&delivery(markdown(1))).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("invalid timestamp"), "{err}");
    // 59 minutes of skew is still inside DingTalk's 1 h window.
    let sink = h.sink(h.settings(0), ShiftedClock::shifted(-59 * 60_000));
    sink.deliver(&delivery(markdown(2))).await.unwrap();
}

#[tokio::test]
async fn bad_payload_is_refused_before_any_request() {
    let h = Harness::start(system()).await;
    let sink = h.sink(h.settings(0), system());
    let err = sink.deliver(&delivery(json!({"msgtype": "markdown", "markdown": {"title": "x"}}))).await.unwrap_err();
    assert!(matches!(err, DeliveryError::BadPayload { .. }), "{err}");
    assert!(err.to_string().contains("ops-group"), "{err}");
    assert!(h.journal().await.is_empty());
}

/// The robot's window is the outbox's to keep (in the store, shared by every instance): the sink
/// declares it, keyed by a digest of its token, and does not wait for it itself. The real-time
/// twin of R8 through the outbox is `engine/tests/pacing.rs`.
#[tokio::test]
async fn the_sink_declares_its_window_and_leaves_the_waiting_to_the_outbox() {
    let h = Harness::start(system()).await;
    let settings = RobotSettings { per_minute: 5, window: Duration::from_millis(1100), ..h.settings(1) };
    let token = settings.access_token.expose_secret().to_owned();
    let sink = h.sink(settings.clone(), system());
    let pacing = sink.pacing().expect("a robot is paced");
    assert_eq!((pacing.max, pacing.window), (5, Duration::from_millis(1100)));
    assert!(pacing.key.starts_with("dingtalk-robot:") && !pacing.key.contains(&token), "{}", pacing.key);
    assert_eq!(h.sink(settings.clone(), system()).pacing(), Some(pacing.clone()), "one window per robot");
    let other = h.sink(h.settings(2), system());
    assert_eq!(other.pacing(), None, "per_minute = 0: not paced (benchmarks)");
    let other = RobotSettings { per_minute: 5, ..h.settings(2) };
    assert_ne!(h.sink(other, system()).pacing().unwrap().key, pacing.key, "another robot, another window");
}

#[tokio::test]
async fn unlimited_robot_and_sink_for_benchmarks() {
    let h = Harness::start(system()).await;
    h.set_robot(json!({"name": "ops", "per_minute": 0})).await;
    let sink = h.sink(h.settings(0), system());
    for n in 0..30 {
        sink.deliver(&delivery(markdown(n))).await.unwrap();
    }
    assert_eq!(h.dingtalk.accepted(), 30);
}

#[tokio::test]
async fn messages_after_returns_only_what_is_newer_than_a_sequence_number() {
    let h = Harness::start(system()).await;
    h.set_robot(json!({"name": "ops", "per_minute": 0})).await;
    let sink = h.sink(h.settings(0), system());
    for n in 0..5 {
        sink.deliver(&delivery(markdown(n))).await.unwrap();
    }
    let all = h.dingtalk.messages_after("ops", None);
    assert_eq!(all, h.dingtalk.messages("ops"));
    let newer = h.dingtalk.messages_after("ops", Some(all[2].seq));
    assert_eq!(newer, all[3..].to_vec());
    assert!(h.dingtalk.messages_after("ops", Some(all[4].seq)).is_empty());
    assert!(h.dingtalk.messages_after("no-such-robot", None).is_empty());
}

// ---------------------------------------------------------------- simulator fidelity

async fn raw_send(h: &Harness, query: &str, body: &str) -> Value {
    let url = format!("{}/robot/send?{query}", h.server.url());
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json;charset=utf-8")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn signed_query(robot: usize, ts: i64) -> String {
    let (_, token, secret) = SEED_ROBOTS[robot];
    format!("access_token={token}&timestamp={ts}&sign={}", robot_sign(secret, ts))
}

#[tokio::test]
async fn simulator_answers_like_dingtalk() {
    let h = Harness::start(system()).await;
    let now = SystemClock.now_millis();
    let body = markdown(1).to_string();
    let errcode = |v: &Value| (v["errcode"].as_i64().unwrap(), v["errmsg"].as_str().unwrap().to_owned());

    assert_eq!(errcode(&raw_send(&h, &signed_query(0, now), &body).await), (0, "ok".into()));
    assert_eq!(errcode(&raw_send(&h, "access_token=nope", &body).await), (300_005, "token is not exist".into()));
    assert_eq!(errcode(&raw_send(&h, "", &body).await), (300_005, "token is not exist".into()));

    // Double URL-encoding of the sign fails, as on DingTalk (vector 2 has `/` and `+`).
    let (_, token, secret) = SEED_ROBOTS[0];
    let sign = robot_sign(secret, now);
    assert!(sign.contains('%'));
    let double = sign.replace('%', "%25");
    let q = format!("access_token={token}&timestamp={now}&sign={double}");
    assert_eq!(errcode(&raw_send(&h, &q, &body).await), (310_000, "sign not match".into()));
    let q = format!("access_token={token}&timestamp={now}");
    assert_eq!(errcode(&raw_send(&h, &q, &body).await).0, 310_000);
    let q = format!("access_token={token}&sign={sign}");
    assert_eq!(errcode(&raw_send(&h, &q, &body).await), (310_000, "invalid timestamp".into()));
    let late = now + 3_600_000 + 60_000;
    assert_eq!(errcode(&raw_send(&h, &signed_query(0, late), &body).await), (310_000, "invalid timestamp".into()));

    let not_json = raw_send(&h, &signed_query(0, now), "hello").await;
    assert_eq!(errcode(&not_json).0, 40_035);
    let missing = raw_send(&h, &signed_query(0, now), r#"{"msgtype":"text","text":{}}"#).await;
    assert_eq!(errcode(&missing).0, 40_035);
    assert!(errcode(&missing).1.contains("content"), "{missing}");

    // Keywords.
    h.set_robot(json!({"name": "ops", "keywords": ["PO-", "报警"]})).await;
    let no_kw = json!({"msgtype": "text", "text": {"content": "hello"}}).to_string();
    assert_eq!(
        errcode(&raw_send(&h, &signed_query(0, now), &no_kw).await),
        (310_000, "keywords not in content".into())
    );
    assert_eq!(errcode(&raw_send(&h, &signed_query(0, now), &body).await).0, 0);

    // A robot without signing ignores timestamp/sign.
    h.set_robot(json!({"name": "plain", "access_token": "ab12"})).await;
    assert_eq!(errcode(&raw_send(&h, "access_token=ab12", &body).await).0, 0);
    h.set_robot(json!({"name": "ops", "secret": null, "keywords": []})).await;
    assert_eq!(errcode(&raw_send(&h, &format!("access_token={token}"), &body).await).0, 0);

    assert_eq!(h.dingtalk.messages("ops").len(), 3);
    assert_eq!(h.dingtalk.messages("plain").len(), 1);
    let seqs: Vec<u64> = h.dingtalk.messages("ops").iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![0, 1, 3]);
}

#[tokio::test]
async fn every_fixture_body_is_accepted_by_the_simulator() {
    let h = Harness::start(system()).await;
    h.set_robot(json!({"name": "ops", "per_minute": 0})).await;
    let fixtures = fixture("robot_webhook/message_bodies.json");
    let sink = h.sink(h.settings(0), system());
    for (name, body) in fixtures["bodies"].as_object().unwrap() {
        sink.deliver(&delivery(body.clone())).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let recorded: Vec<Value> = h.dingtalk.messages("ops").into_iter().map(|m| m.body).collect();
    let expected: Vec<Value> = fixtures["bodies"].as_object().unwrap().values().cloned().collect();
    assert_eq!(recorded, expected);
}

#[tokio::test]
async fn info_records_and_reset() {
    let h = Harness::start(system()).await;
    let url = h.server.url();
    let info: Value = reqwest::get(format!("{url}/_sim/info")).await.unwrap().json().await.unwrap();
    assert_eq!(info["simulator"], "dingtalk");
    let robots = info["info"]["robots"].as_array().unwrap();
    let names: Vec<&str> = robots.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["finance", "ops", "sales-hk"]);
    for (name, token, secret) in SEED_ROBOTS {
        let r = robots.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!((r["access_token"].as_str(), r["secret"].as_str()), (Some(token), Some(secret)));
        assert_eq!(token.len(), 64);
        assert!(secret.starts_with("SEC") && secret.len() == 67);
        assert_eq!(r["per_minute"], 20);
        assert_eq!(r["block_ms"], 600_000);
    }

    let client = reqwest::Client::new();
    let bad = client.post(format!("{url}/_sim/records/robot")).json(&json!({"name": "new"})).send().await.unwrap();
    assert_eq!(bad.status(), 400, "a new robot needs a token");
    let taken = json!({"name": "new", "access_token": SEED_ROBOTS[0].1});
    let bad = client.post(format!("{url}/_sim/records/robot")).json(&taken).send().await.unwrap();
    assert_eq!(bad.status(), 400, "tokens are unique");
    let unknown = client.post(format!("{url}/_sim/records/fax")).json(&json!({})).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let invalid_group = client.post(format!("{url}/_sim/records/group")).json(&json!({})).send().await.unwrap();
    assert_eq!(invalid_group.status(), 400, "a group record is validated, not ignored");
    h.set_robot(json!({"name": "extra", "access_token": "cafe", "secret": "SECx", "per_minute": 3})).await;
    assert_eq!(h.dingtalk.robot("extra").unwrap().per_minute, 3);

    h.sink(h.settings(0), system()).deliver(&delivery(markdown(1))).await.unwrap();
    assert_eq!(h.dingtalk.accepted(), 1);
    let resp = client.post(format!("{url}/_sim/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(h.dingtalk.accepted(), 0);
    assert!(h.dingtalk.messages("ops").is_empty());
    assert!(h.dingtalk.robot("extra").is_none());
    assert!(h.journal().await.is_empty());
    let mut seeded = SimRobot::seeded();
    seeded.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(h.dingtalk.robots(), seeded, "robots are listed by name");
}
