//! Time comes from a `Clock` so schedules can be tested with a fake or paused clock.

use jiff::Timestamp;

/// Wall-clock source. Sleeps use `tokio::time` so paused-time tests stay fast.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;

    /// Unix epoch milliseconds, the unit the store uses.
    fn now_millis(&self) -> i64 {
        self.now().as_millisecond()
    }
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Sleeps `period` unless `cancel` fires first; false once cancelled. The one wait of every
/// background loop (pollers, folder scans, channel renewals), so each stops at shutdown.
pub async fn pause(cancel: &tokio_util::sync::CancellationToken, period: std::time::Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(period) => true,
    }
}
