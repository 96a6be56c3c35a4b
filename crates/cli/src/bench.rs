//! `dingbridge bench`: signed webhooks through a real gateway process into the DingTalk robot
//! simulator on loopback. Measures delivered events/s, webhook-to-simulator latency, lost and
//! duplicated deliveries, and the gateway's peak RSS.
//!
//! Benchmarking switch: the bench robot is created in the simulator with `per_minute = 0` and the
//! destination with `per_minute = 0`, which lifts DingTalk's 20-per-minute robot limit on both
//! sides. It measures the gateway, not DingTalk's quota.

use crate::sims::{self, DingTalkHarness};
use anyhow::{bail, Context};
use clap::Args;
use connect::webhook::WebhookSecret;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::sender::{SenderSettings, WebhookSender};
use tokio::sync::Semaphore;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Number of events to send.
    #[arg(long, default_value_t = 10_000)]
    pub events: u64,
    /// Offer a fixed rate (events/s) instead of as fast as possible.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Store URL for the gateway (default: SQLite in a temporary folder).
    #[arg(long)]
    pub store: Option<String>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Webhook requests in flight at once (also the bound in `--rate` mode).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Distinct conversations (ordering keys) the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub conversations: u64,
}

#[derive(Debug, serde::Serialize)]
pub struct BenchReport {
    pub events: u64,
    pub events_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub peak_rss_mb: f64,
    pub store: String,
    pub accepted: u64,
    /// Webhook attempts the sender had to repeat (503 under load, connection errors).
    pub retries: u64,
    pub offered_rate: Option<u64>,
    pub elapsed_secs: f64,
}

const BENCH_SECRET: &str = "whsec_ZGluZ2JyaWRnZS1iZW5jaC1zZWNyZXQta2V5LTAwMQ==";

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.events == 0 {
        bail!("--events must be at least 1");
    }
    let report = bench(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("events          {}", report.events);
        println!("store           {}", report.store);
        println!("offered rate    {}", report.offered_rate.map(|r| format!("{r}/s")).unwrap_or_else(|| "max".into()));
        println!("delivered/s     {:.0}", report.events_per_sec);
        println!("latency p50     {:.2} ms", report.p50_ms);
        println!("latency p99     {:.2} ms", report.p99_ms);
        println!("lost            {}", report.lost);
        println!("duplicated      {}", report.duplicated);
        println!("peak RSS        {:.1} MB (gateway process)", report.peak_rss_mb);
    }
    Ok(if report.lost == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn bench(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let dir = tempfile::tempdir().context("creating a temporary folder")?;
    let dingtalk = DingTalkHarness::start().await?;
    let robot = dingtalk.add_unlimited_robot("bench").await?;
    let port = testkit::process::free_port()?;
    let store_url = args.store.clone().unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.path().display()));
    let config_path = dir.path().join("bench.toml");
    std::fs::write(&config_path, bench_config(port))?;
    let endpoints_path = dir.path().join("sims.json");
    std::fs::write(&endpoints_path, serde_json::to_string(&dingtalk.endpoint_map())?)?;

    let exe = std::env::current_exe().context("locating the dingbridge binary")?;
    let mut gateway = testkit::process::GatewayCommand::new(exe)
        .arg("run")
        .arg("-c")
        .arg(&config_path)
        .arg("--store")
        .arg(&store_url)
        .arg("--sim-endpoints")
        .arg(&endpoints_path)
        .env("DINGBRIDGE_BENCH_SECRET", BENCH_SECRET)
        .env("DINGBRIDGE_BENCH_ROBOT_TOKEN", &robot.access_token)
        .env("DINGBRIDGE_BENCH_ROBOT_SECRET", &robot.secret)
        .env("DINGBRIDGE_LOG", "warn")
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    gateway.wait_healthy(&base, Duration::from_secs(30)).await?;

    // The testkit sender signs each attempt and retries non-2xx with the same webhook-id, as a
    // real sender does; the gateway sheds load with 503 under overload.
    let sender_settings = SenderSettings {
        deadline: Duration::from_secs(120),
        request_timeout: Duration::from_secs(10),
        ..SenderSettings::default()
    };
    let sender =
        WebhookSender::new(&format!("{base}/hooks/bench"), WebhookSecret::parse(BENCH_SECRET)?, sender_settings)?;
    let limiter = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let first_sent = jiff::Timestamp::now();
    let mut tasks = tokio::task::JoinSet::new();
    for seq in 0..args.events {
        if let Some(rate) = args.rate {
            // Open-loop pacing: event `seq` leaves at seq/rate seconds, whatever the answers do.
            let due = started + Duration::from_secs_f64(seq as f64 / rate.max(1) as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = limiter.clone().acquire_owned().await?;
        let sender = sender.clone();
        let conversation = seq % args.conversations.max(1);
        tasks.spawn(async move {
            let _permit = permit;
            let data = serde_json::json!({"id": format!("B-{seq}"), "seq": seq, "conversation": conversation});
            let sent_at = jiff::Timestamp::now();
            let body = testkit::sender::envelope("bench_item.created", sent_at, data);
            // Latency is measured from the first attempt, so retries count against the gateway.
            sender.send(&format!("bench-{seq}"), &body).await.ok().map(|_| (seq, sent_at))
        });
    }
    let mut sent_at: HashMap<u64, jiff::Timestamp> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Some((seq, at)) = joined? {
            sent_at.insert(seq, at);
        }
    }
    let accepted = sent_at.len() as u64;

    // Wait until every accepted event reached the simulator (or nothing moves for 30 s).
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let count = dingtalk.message_count("bench");
        if count >= accepted {
            break;
        }
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peak_rss_kb = gateway.peak_rss_kb().unwrap_or(0);
    let _ = gateway.sigterm();
    let _ = gateway.wait_exit(Duration::from_secs(15)).await;

    let messages = dingtalk.messages("bench");
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut last_delivery = first_sent;
    for message in &messages {
        let Some(seq) = sims::extract_seq(&message.body) else { continue };
        let count = seen.entry(seq).or_insert(0);
        *count += 1;
        if *count == 1 {
            if let Some(sent) = sent_at.get(&seq) {
                let micros = message.at.duration_since(*sent).as_micros().max(1);
                histogram.record(u64::try_from(micros).unwrap_or(u64::MAX).min(600_000_000))?;
            }
            if message.at > last_delivery {
                last_delivery = message.at;
            }
        }
    }
    let delivered = seen.len() as u64;
    let duplicated: u64 = seen.values().map(|c| u64::from(c.saturating_sub(1))).sum();
    let lost = accepted.saturating_sub(delivered);
    let span = last_delivery.duration_since(first_sent).as_secs_f64().max(1e-6);
    dingtalk.shutdown().await;
    Ok(BenchReport {
        events: args.events,
        events_per_sec: delivered as f64 / span,
        p50_ms: histogram.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        lost,
        duplicated,
        peak_rss_mb: peak_rss_kb as f64 / 1024.0,
        store: if store_url.starts_with("postgres") { "postgres".into() } else { "sqlite".into() },
        accepted,
        retries: sender.retries(),
        offered_rate: args.rate,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

fn bench_config(port: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:0"

[delivery]
concurrency_per_destination = 1024
claim_batch = 512
retry_schedule = ["100ms", "500ms", "1s", "5s"]

[sources.bench]
type = "webhook"
system = "bench"
secret = {{ env = "DINGBRIDGE_BENCH_SECRET" }}

[destinations.bench]
type = "dingtalk_robot"
access_token = {{ env = "DINGBRIDGE_BENCH_ROBOT_TOKEN" }}
secret = {{ env = "DINGBRIDGE_BENCH_ROBOT_SECRET" }}
per_minute = 0

[[flows]]
name = "bench"
on = {{ source = "bench" }}

[[flows.deliver]]
destination = "bench"
ordering_key = "conv-{{{{ event.data.conversation }}}}"
message = {{ type = "text", content = "seq={{{{ event.data.seq }}}} conv={{{{ event.data.conversation }}}}" }}
"#
    )
}
