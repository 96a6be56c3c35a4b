//! Prometheus metrics: one recorder per process, rendered at `GET /metrics`.
//!
//! Queue depth and oldest pending age are read from the store, so they are true across several
//! gateway instances sharing one database; at most once per [`STATS_MAX_AGE`], however often
//! `/metrics` is scraped, so a scraper cannot make the store count its tables in a loop.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use connect::Clock;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// How old the store statistics behind `/metrics` may be.
pub const STATS_MAX_AGE: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from a fast loopback delivery to a long retry.
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// When the store statistics were last read (one reader at a time).
    stats_read_at: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl Metrics {
    /// Install the process-wide recorder once; later calls share it (tests start many gateways).
    pub fn install() -> Self {
        let handle = HANDLE
            .get_or_init(|| {
                let builder = PrometheusBuilder::new()
                    .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
                    .unwrap_or_else(|_| PrometheusBuilder::new());
                match builder.install_recorder() {
                    Ok(handle) => handle,
                    // Another recorder is already installed (embedding); keep a private one.
                    Err(_) => PrometheusBuilder::new().build_recorder().handle(),
                }
            })
            .clone();
        Self { handle, stats_read_at: Arc::new(tokio::sync::Mutex::new(None)) }
    }

    pub fn webhook_accepted(&self, source: &str, duplicate: bool, dead_lettered: bool) {
        let outcome = match (duplicate, dead_lettered) {
            (true, _) => "duplicate",
            (false, true) => "dead_lettered",
            (false, false) => "accepted",
        };
        metrics::counter!("dingbridge_events_received_total", "source" => source.to_string(), "outcome" => outcome)
            .increment(1);
    }

    pub fn webhook_refused(&self, source: &str, code: &'static str) {
        metrics::counter!("dingbridge_webhooks_refused_total", "source" => source.to_string(), "reason" => code)
            .increment(1);
    }

    /// An intake could not be committed (disk full, I/O error, store down): the sender got 503.
    /// Alert on any increase: the gateway is refusing events.
    pub fn commit_failed(&self, code: &'static str) {
        metrics::counter!("dingbridge_intake_commit_failures_total", "code" => code).increment(1);
    }

    /// A supervised background task failed (and was restarted, abandoned, or stopped the gateway).
    pub fn task_failed(&self, task: &str) {
        metrics::counter!("dingbridge_task_failures_total", "task" => task.to_string()).increment(1);
    }
}

impl Metrics {
    /// The Prometheus text of every metric, with the store's gauges fresh.
    pub async fn render(&self, store: &dyn store::Store, clock: &dyn Clock) -> Response {
        self.refresh_store_gauges(store, clock).await;
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], self.handle.render())
            .into_response()
    }

    /// Reads the store statistics into the gauges, unless that was done less than
    /// [`STATS_MAX_AGE`] ago; concurrent scrapes wait for one read.
    async fn refresh_store_gauges(&self, store: &dyn store::Store, clock: &dyn Clock) {
        let mut read_at = self.stats_read_at.lock().await;
        if read_at.is_some_and(|at| at.elapsed() < STATS_MAX_AGE) {
            return;
        }
        *read_at = Some(Instant::now());
        let now = clock.now_millis();
        match store.stats(now).await {
            Ok(stats) => {
                metrics::gauge!("dingbridge_queue_depth", "state" => "pending").set(stats.pending as f64);
                metrics::gauge!("dingbridge_queue_depth", "state" => "leased").set(stats.leased as f64);
                metrics::gauge!("dingbridge_queue_depth", "state" => "dead").set(stats.dead as f64);
                metrics::gauge!("dingbridge_leases_expired").set(stats.lease_expired as f64);
                metrics::gauge!("dingbridge_dead_letters").set(stats.dead_letters as f64);
                metrics::gauge!("dingbridge_oldest_pending_age_seconds")
                    .set(stats.oldest_pending_age_ms as f64 / 1000.0);
                metrics::gauge!("dingbridge_store_up").set(1.0);
            }
            Err(err) => {
                tracing::warn!("Store stats unavailable for /metrics: {err}");
                metrics::gauge!("dingbridge_store_up").set(0.0);
            }
        }
    }
}
