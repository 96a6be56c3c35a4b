//! A destination's circuit breaker: when every recent attempt to a destination failed for a
//! transient reason (connection refused, timeout, 5xx), the vendor is down, not this job. Each job
//! retrying on its own schedule would then send a storm that grows with the backlog; instead the
//! breaker opens and the dispatcher sends one probe per [`PROBE_INTERVAL`] until one succeeds.
//!
//! A batch is one attempt: its call failing counts once, whatever the number of records.
//! Only transient failures count. A success or a permanent refusal (the vendor answered, it is
//! up) resets the count; a throttle has its own pause; a credentials failure is the job's.

use connect::Disposition;
use std::sync::Mutex;
use std::time::Duration;
use tracing::{info, warn};

/// Transient failures in a row that open the breaker.
pub(super) const OPEN_AFTER: u32 = 5;
/// While open: at most one attempt per this interval.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Gauge per destination: 1 while its breaker is open, else 0.
pub const METRIC_BREAKER_OPEN: &str = "dingbridge_destination_breaker_open";

#[derive(Debug, Default)]
struct State {
    failures_in_a_row: u32,
    open: bool,
    /// Clock millis before which no probe is sent while open.
    next_probe_at: i64,
}

/// What the breaker allows the dispatcher now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Allowance {
    /// Closed: claim as usual.
    All,
    /// Open, and a probe is due: claim one job (the probe).
    Probe,
    /// Open: nothing before this long from now.
    Wait(Duration),
}

#[derive(Debug, Default)]
pub(super) struct Breaker {
    state: Mutex<State>,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What may be claimed now; a granted probe moves the next one an interval on.
    pub(super) fn allowance(&self, now: i64) -> Allowance {
        let mut st = self.lock();
        if !st.open {
            return Allowance::All;
        }
        if now < st.next_probe_at {
            return Allowance::Wait(Duration::from_millis(u64::try_from(st.next_probe_at - now).unwrap_or(0)));
        }
        st.next_probe_at = now.saturating_add(interval_ms());
        Allowance::Probe
    }

    /// Whether the breaker is open (claimed work not yet sent is handed back).
    pub(super) fn is_open(&self) -> bool {
        self.lock().open
    }

    /// A delivery succeeded: the vendor is up. True when this closed an open breaker.
    pub(super) fn on_success(&self, destination: &str) -> bool {
        let mut st = self.lock();
        st.failures_in_a_row = 0;
        if !st.open {
            return false;
        }
        st.open = false;
        drop(st);
        metrics::gauge!(METRIC_BREAKER_OPEN, "destination" => destination.to_owned()).set(0.0);
        info!(destination, "Destination answered again; breaker closed, delivering at full rate.");
        true
    }

    /// An attempt failed with `disposition`.
    pub(super) fn on_failure(&self, destination: &str, disposition: Disposition, now: i64) {
        let mut st = self.lock();
        match disposition {
            Disposition::Retry => {
                st.failures_in_a_row = st.failures_in_a_row.saturating_add(1);
                if st.open {
                    st.next_probe_at = st.next_probe_at.max(now.saturating_add(interval_ms()));
                } else if st.failures_in_a_row >= OPEN_AFTER {
                    st.open = true;
                    st.next_probe_at = now.saturating_add(interval_ms());
                    let failures = st.failures_in_a_row;
                    drop(st);
                    metrics::gauge!(METRIC_BREAKER_OPEN, "destination" => destination.to_owned()).set(1.0);
                    warn!(
                        destination,
                        failures,
                        probe_interval_ms = interval_ms(),
                        "Destination failing on every attempt; breaker open, probing with one delivery per interval."
                    );
                }
            }
            // The vendor answered: it is up, this request was wrong.
            Disposition::Permanent => st.failures_in_a_row = 0,
            Disposition::RetryAfter(_) | Disposition::Auth => {}
        }
    }
}

fn interval_ms() -> i64 {
    i64::try_from(PROBE_INTERVAL.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_transient_failures_in_a_row_and_probes_once_per_interval() {
        let b = Breaker::default();
        for _ in 0..OPEN_AFTER - 1 {
            b.on_failure("d", Disposition::Retry, 0);
        }
        b.on_failure("d", Disposition::Permanent, 0);
        b.on_failure("d", Disposition::Retry, 0);
        assert_eq!(b.allowance(0), Allowance::All, "a permanent refusal means the vendor is up");
        for _ in 0..OPEN_AFTER {
            b.on_failure("d", Disposition::Retry, 10);
        }
        assert!(b.is_open());
        assert_eq!(b.allowance(500), Allowance::Wait(Duration::from_millis(510)));
        assert_eq!(b.allowance(1_010), Allowance::Probe);
        assert_eq!(b.allowance(1_500), Allowance::Wait(Duration::from_millis(510)), "one probe per interval");
        b.on_failure("d", Disposition::Retry, 1_600);
        assert_eq!(b.allowance(2_100), Allowance::Wait(Duration::from_millis(500)));
        assert!(b.on_success("d"), "this success closed the breaker");
        assert_eq!(b.allowance(2_100), Allowance::All);
        assert!(!b.is_open());
        assert!(!b.on_success("d"), "it was closed already");
    }
}
