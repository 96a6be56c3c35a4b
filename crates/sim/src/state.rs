//! Chassis state shared by the layer and the control API: the request journal and the fault plan.

use crate::error::SimError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// How many requests the journal keeps; older ones are evicted first. Indexes keep counting,
/// so `?since=N` stays meaningful after eviction.
pub const JOURNAL_CAPACITY: usize = 100_000;

/// One request as the simulator received it (nothing redacted: simulators are test tools).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// 0-based arrival index since start or the last reset.
    pub index: u64,
    /// Arrival time, RFC 3339 (UTC).
    pub time: String,
    pub method: String,
    pub path: String,
    /// Raw query string without `?`, as received.
    pub query: Option<String>,
    /// Header names lower-case; repeated headers joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// Body as UTF-8 (invalid bytes replaced).
    pub body: String,
    /// Status answered; `None` while in flight or when the connection was dropped.
    pub status: Option<u16>,
    /// The fault plan dropped this request (never answered).
    pub dropped: bool,
    /// The fault plan touched this request (latency, forced status, drop or slow answer).
    pub faulted: bool,
    /// The fault plan held this request's answer (`slow_ratio`): the vendor handler had run, so
    /// its effect is applied, and the answer left `slow_ms` later, if the client still waited.
    #[serde(default)]
    pub slow: bool,
}

/// A fault plan, as posted to `POST /_sim/faults`. Every field is optional.
///
/// - `status`: answer this status instead of running the vendor handler (`null`: no forced status).
/// - `latency_ms`: delay before answering (or before running the handler).
/// - `drop_ratio`: fraction of requests that are never answered. The request is journaled with
///   `dropped: true` and its connection then stalls until the client gives up (its timeout), the
///   simulator shuts down, or 10 minutes pass — what a client sees from a vendor whose load
///   balancer swallowed the request.
/// - `slow_ratio` / `slow_ms`: fraction of requests whose answer is held `slow_ms` after the
///   vendor handler ran. Unlike `latency_ms` the effect is applied first: a client that times out
///   meanwhile sees a failure although the vendor did the work, so its retry must carry the same
///   idempotency key. The request is journaled with `slow: true` and its status as soon as the
///   handler answered. `slow_ratio > 0` needs `slow_ms > 0`.
/// - `duration_ms` / `count`: the plan ends after this long, or after this many requests
///   (whichever comes first); with neither it lasts until `DELETE /_sim/faults` or a reset.
/// - `body`: body for the forced status (a JSON string is sent as text, anything else as JSON);
///   default `{"error":"fault injected by simulator","status":N}`.
/// - `headers`: extra headers on the forced response, e.g. `{"Retry-After": "30"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub drop_ratio: f64,
    #[serde(default)]
    pub slow_ratio: f64,
    #[serde(default)]
    pub slow_ms: u64,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub count: Option<u64>,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl FaultSpec {
    fn validate(&self) -> Result<(), SimError> {
        let bad = |detail: String| Err(SimError::InvalidFault { detail });
        if let Some(status) = self.status {
            if axum::http::StatusCode::from_u16(status).is_err() || status < 200 {
                return bad(format!("status {status} is not an HTTP status between 200 and 999"));
            }
        }
        if !(0.0..=1.0).contains(&self.drop_ratio) {
            return bad(format!("drop_ratio {} must be between 0.0 and 1.0", self.drop_ratio));
        }
        if !(0.0..=1.0).contains(&self.slow_ratio) {
            return bad(format!("slow_ratio {} must be between 0.0 and 1.0", self.slow_ratio));
        }
        if self.slow_ratio > 0.0 && self.slow_ms == 0 {
            return bad(format!("slow_ratio {} needs slow_ms above 0 (how long to hold the answer)", self.slow_ratio));
        }
        for (name, value) in &self.headers {
            if axum::http::HeaderName::try_from(name.as_str()).is_err() {
                return bad(format!("header name `{name}` is not a valid HTTP header name"));
            }
            if axum::http::HeaderValue::try_from(value.as_str()).is_err() {
                return bad(format!("header `{name}` has a value that is not valid in HTTP"));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct ActiveFault {
    spec: FaultSpec,
    until: Option<Instant>,
    remaining: Option<u64>,
}

/// What the layer does to one request.
#[derive(Debug, Clone)]
pub(crate) struct FaultDecision {
    pub latency: Duration,
    pub drop: bool,
    /// Hold the answer this long after the handler ran (`slow_ratio` picked this request).
    pub slow: Option<Duration>,
    pub status: Option<u16>,
    pub body: Option<serde_json::Value>,
    pub headers: BTreeMap<String, String>,
}

/// How a journaled request ended, as [`SimState::finish`] records it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome {
    pub status: Option<u16>,
    pub dropped: bool,
    pub faulted: bool,
    pub slow: bool,
}

#[derive(Debug, Default)]
struct Inner {
    journal: VecDeque<JournalEntry>,
    next_index: u64,
    fault: Option<ActiveFault>,
}

/// Shared chassis state of one simulator; cheap to clone.
#[derive(Debug, Clone)]
pub struct SimState {
    inner: Arc<Mutex<Inner>>,
    shutdown: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for SimState {
    fn default() -> Self {
        Self::new()
    }
}

impl SimState {
    pub fn new() -> Self {
        let (tx, _rx) = tokio::sync::watch::channel(false);
        Self { inner: Arc::new(Mutex::new(Inner::default())), shutdown: Arc::new(tx) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Journal and fault plan stay consistent under a panic (each update is one assignment
        // or push), so a poisoned lock is safe to reuse.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs a fault plan, replacing any current one. Its duration starts now.
    pub fn set_faults(&self, spec: FaultSpec) -> Result<(), SimError> {
        spec.validate()?;
        let until = spec.duration_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
        let remaining = spec.count;
        self.lock().fault = Some(ActiveFault { spec, until, remaining });
        Ok(())
    }

    /// Removes the fault plan.
    pub fn clear_faults(&self) {
        self.lock().fault = None;
    }

    /// The fault plan in force, if any (expired plans are removed).
    pub fn faults(&self) -> Option<FaultSpec> {
        let mut inner = self.lock();
        Self::expire(&mut inner, Instant::now());
        inner.fault.as_ref().map(|f| f.spec.clone())
    }

    fn expire(inner: &mut Inner, now: Instant) {
        let expired =
            inner.fault.as_ref().is_some_and(|f| f.until.is_some_and(|until| now >= until) || f.remaining == Some(0));
        if expired {
            inner.fault = None;
        }
    }

    /// Consumes one request's worth of the fault plan.
    pub(crate) fn next_fault(&self) -> Option<FaultDecision> {
        let mut inner = self.lock();
        Self::expire(&mut inner, Instant::now());
        let fault = inner.fault.as_mut()?;
        if let Some(remaining) = fault.remaining.as_mut() {
            *remaining = remaining.saturating_sub(1);
        }
        let spec = &fault.spec;
        let drop = spec.drop_ratio > 0.0 && rand::random::<f64>() < spec.drop_ratio;
        let slow = (spec.slow_ratio > 0.0 && rand::random::<f64>() < spec.slow_ratio)
            .then(|| Duration::from_millis(spec.slow_ms));
        Some(FaultDecision {
            latency: Duration::from_millis(spec.latency_ms),
            drop,
            slow,
            status: spec.status,
            body: spec.body.clone(),
            headers: spec.headers.clone(),
        })
    }

    /// Journals an arriving request and returns its index.
    pub(crate) fn begin(&self, mut entry: JournalEntry) -> u64 {
        let mut inner = self.lock();
        entry.index = inner.next_index;
        inner.next_index += 1;
        if inner.journal.len() >= JOURNAL_CAPACITY {
            inner.journal.pop_front();
        }
        let index = entry.index;
        inner.journal.push_back(entry);
        index
    }

    /// Journals a message that is not an HTTP request of its own, e.g. a WebSocket frame the
    /// simulator sent (`method` `"WS-SEND"`) or received (`"WS-RECV"`) on the connection at `path`.
    pub fn record_message(&self, method: &str, path: &str, body: &str) -> u64 {
        let time = jiff::Timestamp::now().to_string();
        self.begin(JournalEntry {
            index: 0,
            time,
            method: method.to_owned(),
            path: path.to_owned(),
            query: None,
            headers: BTreeMap::new(),
            body: body.to_owned(),
            status: None,
            dropped: false,
            faulted: false,
            slow: false,
        })
    }

    /// Records the outcome of journaled request `index`.
    pub(crate) fn finish(&self, index: u64, outcome: Outcome) {
        let mut inner = self.lock();
        let Some(first) = inner.journal.front().map(|e| e.index) else {
            return;
        };
        let Some(pos) = index.checked_sub(first).and_then(|p| usize::try_from(p).ok()) else {
            return;
        };
        if let Some(entry) = inner.journal.get_mut(pos).filter(|e| e.index == index) {
            entry.status = outcome.status;
            entry.dropped = outcome.dropped;
            entry.faulted = outcome.faulted;
            entry.slow = outcome.slow;
        }
    }

    /// Journaled requests with `index >= since` whose path starts with `path_prefix`.
    pub fn requests(&self, since: u64, path_prefix: Option<&str>) -> Vec<JournalEntry> {
        let inner = self.lock();
        inner
            .journal
            .iter()
            .filter(|e| e.index >= since)
            .filter(|e| path_prefix.is_none_or(|p| e.path.starts_with(p)))
            .cloned()
            .collect()
    }

    /// How many requests arrived since start or the last reset (evicted ones included).
    pub fn request_count(&self) -> u64 {
        self.lock().next_index
    }

    /// Clears the journal (indexes restart at 0) and the fault plan. The vendor state is reset
    /// separately by [`crate::Simulator::reset`].
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.journal.clear();
        inner.next_index = 0;
        inner.fault = None;
    }

    /// Ends stalled (dropped) requests; called when the server shuts down.
    pub(crate) fn signal_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once the server is shutting down.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        // An error means the sender is gone, which also means shutdown.
        let _closed = rx.wait_for(|down| *down).await;
    }
}
