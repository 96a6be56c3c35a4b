use connect::webhook::{sign, WebhookSecret};
use connect::Clock;
use dingbridge_server::gateway::{Gateway, Overrides};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec_aW50YWtlLXRlc3Qtc2VjcmV0LWtleS1mb3ItcjE3LXIxOQ==";
const OTHER_SECRET: &str = "whsec_c29tZWJvZHktZWxzZXMtc2VjcmV0LWtleS0wMDAwMDAwMA==";

#[derive(Debug)]
struct FakeClock(Mutex<jiff::Timestamp>);

impl FakeClock {
    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        *now += jiff::SignedDuration::try_from(by).unwrap();
    }
}

impl Clock for FakeClock {
    fn now(&self) -> jiff::Timestamp {
        *self.0.lock().unwrap()
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    db: String,
    config: std::path::PathBuf,
    clock: Arc<FakeClock>,
    gateway: Option<Gateway>,
    base: String,
    client: reqwest::Client,
}

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 1048576

[sources.erp]
type = "webhook"
system = "erp"
secret = { env = "INTAKE_TEST_SECRET" }

[sources.erp.fields]
amount = { path = "/data/amount", type = "money", required = false }

# A second source so the signature test reads its own refusal counter (metrics are per process).
[sources.sigtest]
type = "webhook"
system = "erp"
secret = { env = "INTAKE_TEST_SECRET" }

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "INTAKE_TEST_ROBOT_TOKEN" }
base_url = "https://127.0.0.1:9"

[[flows]]
name = "all"
on = { source = "erp" }

[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "{{ event.entity_id }}" }
"#;

impl Harness {
    async fn start() -> Harness {
        std::env::set_var("INTAKE_TEST_SECRET", SECRET);
        std::env::set_var(
            "INTAKE_TEST_ROBOT_TOKEN",
            "0000000000000000000000000000000000000000000000000000000000000000",
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("intake.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let db = format!("sqlite://{}/intake.db", dir.path().display());
        let clock = Arc::new(FakeClock(Mutex::new(jiff::Timestamp::now())));
        let mut h = Harness {
            _dir: dir,
            db,
            config,
            clock,
            gateway: None,
            base: String::new(),
            client: reqwest::Client::new(),
        };
        h.boot().await;
        h
    }

    async fn boot(&mut self) {
        let (config, _) = engine::config::load_and_validate(&self.config).unwrap();
        let overrides = Overrides {
            store_url: Some(self.db.clone()),
            sim_endpoints: None,
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            clock: Some(self.clock.clone()),
        };
        let gateway = Gateway::start(config, overrides).await.unwrap();
        self.base = format!("http://{}", gateway.addr);
        self.gateway = Some(gateway);
    }

    async fn restart(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
        self.boot().await;
    }

    async fn events(&self) -> u64 {
        let gateway = self.gateway.as_ref().unwrap();
        gateway.store.stats(0).await.unwrap().events
    }

    fn body(id: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": "purchase_order.created",
            "timestamp": "2026-11-27T10:00:00+08:00",
            "data": {"id": id, "amount": {"amount": "12.50", "currency": "HKD"}}
        }))
        .unwrap()
    }

    fn signed(&self, id: &str, body: &[u8]) -> Vec<(String, String)> {
        let ts = self.clock.now().as_second();
        let secret = WebhookSecret::parse(SECRET).unwrap();
        vec![
            ("webhook-id".into(), id.into()),
            ("webhook-timestamp".into(), ts.to_string()),
            ("webhook-signature".into(), sign(&secret, id, ts, body)),
        ]
    }

    async fn post(
        &self,
        source: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
        let mut request =
            self.client.post(format!("{}/hooks/{source}", self.base)).header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request.body(body).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let json = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, json, headers)
    }

    async fn refused_total(&self) -> u64 {
        let admin = self.gateway.as_ref().unwrap().admin_addr;
        let text = self.client.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines()
            .filter(|l| l.starts_with("dingbridge_webhooks_refused_total") && l.contains("source=\"sigtest\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// (name, headers, body, expected status)
type Case = (&'static str, Vec<(String, String)>, Vec<u8>, u16);

fn set(headers: &mut [(String, String)], name: &str, value: String) {
    for (k, v) in headers.iter_mut() {
        if k == name {
            *v = value.clone();
        }
    }
}

fn flip_last_char(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let i = chars.len() - 2; // before the '=' padding
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r17_signature_refusals_store_nothing_and_are_counted() {
    let h = Harness::start().await;
    let body = Harness::body("PO-1");
    let good = h.signed("msg-good", &body);

    let mut cases: Vec<Case> = Vec::new();
    let other = WebhookSecret::parse(OTHER_SECRET).unwrap();
    let ts = h.clock.now().as_second();
    let mut wrong_secret = good.clone();
    set(&mut wrong_secret, "webhook-signature", sign(&other, "msg-good", ts, &body));
    cases.push(("wrong secret", wrong_secret, body.clone(), 401));
    let mut flipped_body = body.clone();
    flipped_body[10] ^= 0x01;
    cases.push(("flipped body byte", good.clone(), flipped_body, 401));
    let mut flipped_sig = good.clone();
    let sig = good[2].1.clone();
    set(&mut flipped_sig, "webhook-signature", flip_last_char(&sig));
    cases.push(("flipped signature byte", flipped_sig, body.clone(), 401));
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let headers: Vec<_> = good.iter().filter(|(k, _)| k != missing).cloned().collect();
        cases.push(("missing header", headers, body.clone(), 400));
    }
    let mut bad_ts = good.clone();
    set(&mut bad_ts, "webhook-timestamp", "soon".into());
    cases.push(("non-numeric timestamp", bad_ts, body.clone(), 400));
    let secret = WebhookSecret::parse(SECRET).unwrap();
    for offset in [-301i64, 301] {
        let ts = h.clock.now().as_second() + offset;
        let headers = vec![
            ("webhook-id".to_string(), "msg-skew".to_string()),
            ("webhook-timestamp".to_string(), ts.to_string()),
            ("webhook-signature".to_string(), sign(&secret, "msg-skew", ts, &body)),
        ];
        cases.push(("timestamp 301 s off", headers, body.clone(), 401));
    }
    let mut only_v1a = good.clone();
    set(&mut only_v1a, "webhook-signature", format!("v1a,{}", &sig[3..]));
    cases.push(("only v1a", only_v1a, body.clone(), 401));

    for (i, (name, headers, body, expected)) in cases.into_iter().enumerate() {
        let before = h.refused_total().await;
        let (status, json, _) = h.post("sigtest", &headers, body).await;
        assert_eq!(status, expected, "case {name}: {json}");
        assert!(json.pointer("/error/code").and_then(|c| c.as_str()).is_some(), "case {name}: no JSON error: {json}");
        assert_eq!(h.refused_total().await, before + 1, "case {name} (#{i}) not counted");
        assert_eq!(h.events().await, 0, "case {name} stored something");
    }

    // Rotation: one invalid and one valid v1 signature in one header is accepted.
    let mut rotated = good.clone();
    set(&mut rotated, "webhook-signature", format!("{} {}", flip_last_char(&sig), sig));
    let (status, json, _) = h.post("sigtest", &rotated, body.clone()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(h.events().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r18_replays_are_one_event_and_survive_restart() {
    let mut h = Harness::start().await;
    let body = Harness::body("PO-2");
    let original = h.signed("msg-replay", &body);
    let (status, json, _) = h.post("erp", &original, body.clone()).await;
    assert_eq!((status, json["status"].as_str()), (200, Some("accepted")));

    // Verbatim resend after 1 s and 4 min: inside the window, idempotent 2xx.
    for after in [1u64, 239] {
        h.clock.advance(Duration::from_secs(after));
        let (status, json, _) = h.post("erp", &original, body.clone()).await;
        assert_eq!((status, json["status"].as_str()), (200, Some("duplicate")), "{json}");
    }
    // The original replayed verbatim after 6 min is outside the timestamp window.
    h.clock.advance(Duration::from_secs(120));
    let (status, _, _) = h.post("erp", &original, body.clone()).await;
    assert_eq!(status, 401);
    // A sender's retry re-signs with a fresh timestamp: after 1 h and 48 h, still one event.
    for after_secs in [3_600u64, 47 * 3_600] {
        h.clock.advance(Duration::from_secs(after_secs));
        let resigned = h.signed("msg-replay", &body);
        let (status, json, _) = h.post("erp", &resigned, body.clone()).await;
        assert_eq!((status, json["status"].as_str()), (200, Some("duplicate")), "{json}");
    }
    assert_eq!(h.events().await, 1);
    // The seen-id record survives a restart.
    h.restart().await;
    let resigned = h.signed("msg-replay", &body);
    let (status, json, _) = h.post("erp", &resigned, body.clone()).await;
    assert_eq!((status, json["status"].as_str()), (200, Some("duplicate")), "{json}");
    assert_eq!(h.events().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r19_size_and_shape() {
    let h = Harness::start().await;
    // 1 MiB + 1 byte: 413 without reading further.
    let big = vec![b' '; 1024 * 1024 + 1];
    let headers = h.signed("msg-big", &big);
    let (status, _, _) = h.post("erp", &headers, big).await;
    assert_eq!(status, 413);

    // A gzip body that inflates past the cap: 413, never inflated in full.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![b' '; 8 * 1024 * 1024]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 64 * 1024);
    let mut headers = h.signed("msg-bomb", &bomb);
    headers.push(("content-encoding".into(), "gzip".into()));
    let (status, _, _) = h.post("erp", &headers, bomb).await;
    assert_eq!(status, 413);

    // A small gzip body is decoded and verified over the decoded bytes.
    let body = Harness::body("PO-GZ");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&body).unwrap();
    let mut headers = h.signed("msg-gz", &body);
    headers.push(("content-encoding".into(), "gzip".into()));
    let (status, json, _) = h.post("erp", &headers, encoder.finish().unwrap()).await;
    assert_eq!(status, 200, "{json}");

    let shapes: [(&str, &[u8], u16); 4] = [
        ("malformed json", b"{\"type\": \"purchase_order.created\", \"data\": {", 400),
        ("duplicate keys", b"{\"type\": \"a.created\", \"type\": \"b.created\", \"data\": {\"id\": \"X\"}}", 400),
        ("no type", b"{\"data\": {\"id\": \"X\"}}", 400),
        ("not an object", b"[1, 2, 3]", 400),
    ];
    for (i, (name, body, expected)) in shapes.iter().enumerate() {
        let id = format!("msg-shape-{i}");
        let headers = h.signed(&id, body);
        let (status, json, _) = h.post("erp", &headers, body.to_vec()).await;
        assert_eq!(status, *expected, "{name}: {json}");
    }
    let events_before = h.events().await;

    // A typed field the sender got wrong is kept as a dead letter (2xx: a retry cannot fix it).
    let cases = [
        ("three decimals for HKD", serde_json::json!({"amount": "12.345", "currency": "HKD"})),
        (
            "beyond decimal precision",
            serde_json::json!({"amount": "123456789012345678901234567890123.5", "currency": "HKD"}),
        ),
        ("a word", serde_json::json!({"amount": "one hundred", "currency": "HKD"})),
    ];
    for (i, (name, amount)) in cases.iter().enumerate() {
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "purchase_order.created", "timestamp": "2026-11-27T10:00:00+08:00",
            "data": {"id": format!("PO-BAD-{i}"), "amount": amount}
        }))
        .unwrap();
        let headers = h.signed(&format!("msg-bad-{i}"), &body);
        let (status, json, _) = h.post("erp", &headers, body).await;
        assert_eq!((status, json["status"].as_str()), (200, Some("dead_lettered")), "{name}: {json}");
    }
    // (Deliveries to the unreachable robot are dead letters too, with a job; these three have none.)
    let dead: Vec<_> = h
        .gateway
        .as_ref()
        .unwrap()
        .store
        .list_dead(50)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.job_id.is_none())
        .collect();
    assert_eq!(dead.len(), 3, "{dead:?}");
    assert!(dead.iter().any(|d| d.reason.contains("12.345")), "{dead:?}");
    assert!(h.events().await >= events_before);

    // Unknown source: 404 with a JSON error.
    let body = Harness::body("PO-3");
    let headers = h.signed("msg-unknown", &body);
    let (status, json, _) = h.post("nope", &headers, body).await;
    assert_eq!(status, 404, "{json}");
}
