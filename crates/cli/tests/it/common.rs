//! Shared harness: an in-process DingTalk simulator, a config, the gateway as a child process,
//! and an oracle-driven sender.

use connect::webhook::WebhookSecret;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The robot destination's `per_minute`; 0 turns pacing off (the benchmarking switch).
    pub per_minute: u32,
    /// `delivery.retry_schedule` as a TOML list; `None` keeps the gateway's default (hours long).
    pub retry_schedule: Option<&'static str>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lease: "30s",
            concurrency: 8,
            per_minute: 0,
            // Short, so the CI tests see retries and dead letters within seconds.
            retry_schedule: Some(r#"["200ms", "500ms", "1s", "2s", "2s", "2s", "2s", "2s", "2s", "2s"]"#),
        }
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
{retry_schedule}jitter = 0.2

[sources.e2e]
type = "webhook"
system = "test"
secret = {{ env = "E2E_WEBHOOK_SECRET" }}

[destinations.e2e]
type = "dingtalk_robot"
access_token = {{ env = "E2E_ROBOT_TOKEN" }}
secret = {{ env = "E2E_ROBOT_SECRET" }}
per_minute = {per_minute}

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
        per_minute = settings.per_minute,
        retry_schedule = settings.retry_schedule.map(|list| format!("retry_schedule = {list}\n")).unwrap_or_default(),
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
    /// A simulator whose robot `e2e` takes any rate.
    pub async fn new() -> Env {
        Env::with_robot_limit(0).await
    }

    /// A simulator whose robot `e2e` accepts `per_minute` messages per rolling minute (0: any).
    pub async fn with_robot_limit(per_minute: u32) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let dingtalk = DingTalkHarness::start().await.unwrap();
        let robot = dingtalk.add_robot("e2e", per_minute).await.unwrap();
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
            feed(&oracle, &message.body);
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

/// Feeds one robot message body into `oracle` (key = the event's id); returns the id it carried.
fn feed(oracle: &Oracle, robot_body: &serde_json::Value) -> Option<u64> {
    let content = robot_body.pointer("/text/content").and_then(|v| v.as_str())?;
    let Ok(body) = serde_json::from_str::<serde_json::Value>(content) else {
        oracle.delivered("unparseable", &serde_json::Value::Null);
        return None;
    };
    let key = body.get("id").and_then(|v| v.as_str()).unwrap_or("missing").to_string();
    oracle.delivered(&key, &body);
    key.parse().ok()
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
    let accepted = std::sync::Arc::new(AtomicU64::new(0));
    let acked = produce_timed(sender, conversations, ids, rate as f64, producers, accepted).await;
    acked.into_iter().map(|a| a.id).collect()
}

/// One event the gateway acknowledged, with wall-clock times (ms since the epoch, comparable with
/// the simulator's acceptance times).
#[derive(Debug, Clone, Copy)]
pub struct Acked {
    pub id: u64,
    /// When the first attempt was sent.
    pub offered_ms: i64,
    /// When the 2xx came back (after the sender's retries, if any).
    pub acked_ms: i64,
}

/// [`produce`] with the times of each event, counting acknowledgements in `accepted` as they
/// come (for tests that sample the store against the accepted count). Sorted by id.
pub async fn produce_timed(
    sender: WebhookSender,
    conversations: u64,
    ids: std::ops::Range<u64>,
    rate: f64,
    producers: u64,
    accepted: std::sync::Arc<AtomicU64>,
) -> Vec<Acked> {
    assert_eq!(conversations % producers, 0, "a conversation must belong to one producer");
    let start = tokio::time::Instant::now();
    let first = ids.start;
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..producers {
        let sender = sender.clone();
        let ids = ids.clone();
        let accepted = accepted.clone();
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for id in ids.filter(|id| id % producers == p) {
                let due = start + Duration::from_secs_f64((id - first) as f64 / rate);
                tokio::time::sleep_until(due).await;
                let body = testkit::sender::envelope(
                    "item.created",
                    jiff::Timestamp::now(),
                    testkit::oracle::payload_for(id, conversations),
                );
                let offered_ms = jiff::Timestamp::now().as_millisecond();
                match sender.send(&format!("evt-{id}"), &body).await {
                    Ok(_) => {
                        acked.push(Acked { id, offered_ms, acked_ms: jiff::Timestamp::now().as_millisecond() });
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
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
    acked.sort_unstable_by_key(|a| a.id);
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

// ---------------------------------------------------------------- long tier (R3, R12)

/// The long tier's scale, `DINGBRIDGE_LONG_SCALE` (default 1: the full R-item figures). It
/// multiplies event counts and the run / outage durations, so a run can be checked in minutes.
pub fn long_scale() -> f64 {
    let Ok(text) = std::env::var("DINGBRIDGE_LONG_SCALE") else { return 1.0 };
    let scale: f64 = text.trim().parse().unwrap_or_else(|_| panic!("DINGBRIDGE_LONG_SCALE `{text}` is not a number"));
    assert!(scale > 0.0 && scale <= 1.0, "DINGBRIDGE_LONG_SCALE must be in (0, 1], not {scale}");
    scale
}

/// `full` × `scale`, rounded, at least `floor`.
pub fn scaled_count(full: u64, scale: f64, floor: u64) -> u64 {
    ((full as f64 * scale).round() as u64).max(floor)
}

/// The `q`-quantile (0..=1) of `values` by the nearest-rank method; 0 when empty.
pub fn quantile(values: &mut [i64], q: f64) -> i64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// One robot message as the long tests keep it.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The event id it carried (None: not one of ours, counted by the oracle as unexpected).
    pub id: Option<u64>,
    /// Acceptance time by the simulator (ms since the epoch).
    pub at_ms: i64,
}

/// Collects the robot's messages while a long test runs: the simulator keeps the last 100 000
/// per robot, fewer than a long run delivers, so each message is fed to the oracle as it arrives
/// (only what is newer than the last one seen is copied).
pub struct Collector {
    pub oracle: Oracle,
    after: Option<u64>,
    pub arrivals: Vec<Arrival>,
}

impl Collector {
    /// Issues every id in `ids` up front: only acknowledged ones become obligations.
    pub fn new(conversations: u64, ids: std::ops::Range<u64>) -> Collector {
        let oracle = Oracle::new(conversations);
        for id in ids {
            oracle.issue(id);
        }
        Collector { oracle, after: None, arrivals: Vec::new() }
    }

    /// Feeds what arrived since the last call; returns how many messages that was.
    pub fn collect(&mut self, dingtalk: &DingTalkHarness) -> usize {
        let new = dingtalk.messages_after("e2e", self.after);
        for message in &new {
            let id = feed(&self.oracle, &message.body);
            self.arrivals.push(Arrival { id, at_ms: message.at.as_millisecond() });
            self.after = Some(message.seq);
        }
        new.len()
    }

    /// Collects every 100 ms for `how_long`.
    pub async fn collect_for(&mut self, dingtalk: &DingTalkHarness, how_long: Duration) {
        let until = tokio::time::Instant::now() + how_long;
        loop {
            self.collect(dingtalk);
            let now = tokio::time::Instant::now();
            if now >= until {
                return;
            }
            tokio::time::sleep((until - now).min(Duration::from_millis(100))).await;
        }
    }

    /// Collects until every id in `acked` was delivered, or `timeout`; returns the report.
    pub async fn wait_delivered(
        &mut self,
        dingtalk: &DingTalkHarness,
        acked: &[u64],
        timeout: Duration,
    ) -> OracleReport {
        for id in acked {
            self.oracle.ack(*id);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.collect(dingtalk);
            let report = self.oracle.report();
            if report.lost == 0 || tokio::time::Instant::now() > deadline {
                return report;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads how much space the store takes: the SQLite database's logical size (page count × page
/// size, WAL pages included, so checkpoints do not make it jump) or the total size of the
/// Postgres schema's tables with their indexes and TOAST.
pub enum StoreProbe {
    Sqlite(sqlx::SqlitePool),
    Postgres { pool: sqlx::PgPool, schema: String },
}

impl StoreProbe {
    /// `store_url` as given to `dingbridge run --store`, after the gateway created the schema.
    pub async fn connect(store_url: &str) -> StoreProbe {
        if let Some(path) = store_url.strip_prefix("sqlite://") {
            // Read-only, one connection: it must not take the gateway's write lock.
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
            let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
            return StoreProbe::Sqlite(pool);
        }
        // The gateway's `schema=` parameter is not a libpq one: connect without it.
        let mut url = url::Url::parse(store_url).unwrap();
        let schema = url.query_pairs().find(|(k, _)| k == "schema").map(|(_, v)| v.into_owned()).unwrap_or_default();
        let rest: Vec<(String, String)> =
            url.query_pairs().filter(|(k, _)| k != "schema").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        url.set_query(None);
        if !rest.is_empty() {
            url.query_pairs_mut().extend_pairs(rest);
        }
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(url.as_str()).await.unwrap();
        StoreProbe::Postgres { pool, schema }
    }

    pub async fn bytes(&self) -> u64 {
        let bytes: i64 = match self {
            StoreProbe::Sqlite(pool) => {
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(pool).await.unwrap();
                let size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(pool).await.unwrap();
                pages * size
            }
            StoreProbe::Postgres { pool, schema } => sqlx::query_scalar(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
            )
            .bind(schema)
            .fetch_one(pool)
            .await
            .unwrap(),
        };
        u64::try_from(bytes).unwrap_or(0)
    }
}
