//! Shared harness: an in-process DingTalk simulator, a config, the gateway as a child process,
//! and an oracle-driven sender.

use connect::webhook::WebhookSecret;
use std::path::{Path, PathBuf};
use std::time::Duration;
use testkit::dingtalk::DingTalkHarness;
use testkit::oracle::{Oracle, OracleReport};
use testkit::process::{Gateway, GatewayCommand};
use testkit::sender::{SenderSettings, WebhookSender};

pub const SECRET: &str = "whsec_ZGluZ2JyaWRnZS10ZXN0LXdlYmhvb2stc2VjcmV0LTAx";

/// Process-level tests own ports and CPU: run them one at a time inside this binary.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dingbridge"))
}

pub struct Settings {
    pub lease: &'static str,
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self { lease: "30s", concurrency: 8 }
    }
}

/// A gateway config posting one text message per event to robot `e2e`, ordered per conversation.
pub fn write_config(dir: &Path, port: u16, settings: &Settings) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"

[delivery]
concurrency_per_destination = {concurrency}
lease = "{lease}"
request_timeout = "1s"
retry_schedule = ["200ms", "500ms", "1s", "2s", "2s", "2s", "2s", "2s", "2s", "2s"]
jitter = 0.2

[sources.e2e]
type = "webhook"
system = "test"
secret = {{ env = "E2E_WEBHOOK_SECRET" }}

[destinations.e2e]
type = "dingtalk_robot"
access_token = {{ env = "E2E_ROBOT_TOKEN" }}
secret = {{ env = "E2E_ROBOT_SECRET" }}
per_minute = 0

[[flows]]
name = "e2e"
on = {{ source = "e2e" }}

[[flows.deliver]]
destination = "e2e"
ordering_key = "{{{{ event.data.conversation }}}}"
message = {{ type = "text", content = "{{{{ event.data | tojson }}}}" }}
"#,
        concurrency = settings.concurrency,
        lease = settings.lease,
    );
    let path = dir.join("e2e.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub dingtalk: DingTalkHarness,
    pub token: String,
    pub secret: String,
}

impl Env {
    pub async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let dingtalk = DingTalkHarness::start().await.unwrap();
        let robot = dingtalk.add_unlimited_robot("e2e").await.unwrap();
        std::fs::write(dir.path().join("sims.json"), serde_json::to_string(&dingtalk.endpoint_map()).unwrap()).unwrap();
        Env { dir, dingtalk, token: robot.access_token, secret: robot.secret }
    }

    pub fn spawn(&self, config: &Path, store_url: &str) -> Gateway {
        GatewayCommand::new(exe())
            .arg("run")
            .arg("-c")
            .arg(config)
            .arg("--store")
            .arg(store_url)
            .arg("--sim-endpoints")
            .arg(self.dir.path().join("sims.json"))
            .env("E2E_WEBHOOK_SECRET", SECRET)
            .env("E2E_ROBOT_TOKEN", &self.token)
            .env("E2E_ROBOT_SECRET", &self.secret)
            .env("DINGBRIDGE_LOG", "warn")
            .spawn()
            .unwrap()
    }

    pub fn sender(&self, port: u16) -> WebhookSender {
        let settings = SenderSettings { deadline: Duration::from_secs(60), ..SenderSettings::default() };
        WebhookSender::new(
            &format!("http://127.0.0.1:{port}/hooks/e2e"),
            WebhookSecret::parse(SECRET).unwrap(),
            settings,
        )
        .unwrap()
    }

    /// Feed every robot message seen so far into the oracle (key = the event's id).
    /// A fresh oracle fed with every robot message seen so far (key = the event's id).
    pub fn report(&self, oracle_conversations: u64, issued: &[u64], acked: &[u64]) -> OracleReport {
        let oracle = Oracle::new(oracle_conversations);
        for id in issued {
            oracle.issue(*id);
        }
        for id in acked {
            oracle.ack(*id);
        }
        for message in self.dingtalk.messages("e2e") {
            let Some(content) = message.body.pointer("/text/content").and_then(|v| v.as_str()) else { continue };
            let Ok(body) = serde_json::from_str::<serde_json::Value>(content) else {
                oracle.delivered("unparseable", &serde_json::Value::Null);
                continue;
            };
            let key = body.get("id").and_then(|v| v.as_str()).unwrap_or("missing").to_string();
            oracle.delivered(&key, &body);
        }
        oracle.report()
    }

    /// Wait until every acked id is delivered (or `timeout`); returns the final report.
    pub async fn wait_delivered(
        &self,
        conversations: u64,
        issued: &[u64],
        acked: &[u64],
        timeout: Duration,
    ) -> OracleReport {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let report = self.report(conversations, issued, acked);
            if report.lost == 0 || tokio::time::Instant::now() > deadline {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The Postgres URL for tests, or None (skip) when unreachable outside CI.
pub async fn postgres_url(schema: &str) -> Option<String> {
    let base =
        std::env::var("DINGBRIDGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let reachable = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect("127.0.0.1:5432"))
        .await
        .map(|r| r.is_ok())
        .unwrap_or(false);
    if !reachable && !base.contains("127.0.0.1:5432") {
        // A custom URL: let the store report reachability.
    } else if !reachable {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PostgreSQL at {base} is unreachable and CI=true: the Postgres half of the suite must run");
        }
        eprintln!("skipping: PostgreSQL at {base} is unreachable");
        return None;
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}schema={schema}"))
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), jiff::Timestamp::now().as_nanosecond() % 1_000_000_000)
}

/// Send `ids` as signed webhooks at `rate` events/s from `producers` tasks. Conversation c is
/// always sent by producer c % producers, one event at a time, so the sender's order per
/// conversation is the id order. Returns the ids the gateway acknowledged.
pub async fn produce(
    sender: WebhookSender,
    conversations: u64,
    ids: std::ops::Range<u64>,
    rate: u64,
    producers: u64,
) -> Vec<u64> {
    assert_eq!(conversations % producers, 0, "a conversation must belong to one producer");
    let start = tokio::time::Instant::now();
    let first = ids.start;
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let sender = sender.clone();
        let ids = ids.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for id in ids.filter(|id| id % producers == p) {
                let due = start + Duration::from_secs_f64((id - first) as f64 / rate as f64);
                tokio::time::sleep_until(due).await;
                let body = testkit::sender::envelope(
                    "item.created",
                    jiff::Timestamp::now(),
                    testkit::oracle::payload_for(id, conversations),
                );
                match sender.send(&format!("evt-{id}"), &body).await {
                    Ok(_) => acked.push(id),
                    Err(err) => eprintln!("producer {p}: {err}"),
                }
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(result) = tasks.join_next().await {
        acked.extend(result.unwrap());
    }
    acked.sort_unstable();
    acked
}

pub fn assert_clean_except_duplicates(report: &OracleReport, max_duplicates: u64) {
    assert_eq!(report.lost, 0, "lost events: {report:?}");
    assert_eq!(report.corrupted, 0, "corrupted deliveries: {report:?}");
    assert_eq!(report.order_inversions, 0, "per-conversation order inversions: {report:?}");
    assert_eq!(report.unexpected, 0, "unexpected deliveries: {report:?}");
    assert!(
        report.duplicates <= max_duplicates,
        "duplicates {} above the in-flight bound {max_duplicates}: {report:?}",
        report.duplicates
    );
}
