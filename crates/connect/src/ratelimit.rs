//! Rolling-window rate limiting for vendors that state their limit as "N per window".
//!
//! DingTalk's custom robot allows 20 messages per minute and punishes the 21st with errcode
//! 130101 and a block of several minutes. A GCRA / token bucket with a burst of 20 and a refill
//! of 20 per minute would let a burst of 20 through, then refill one token every 3 s, which
//! allows about 39 sends in some 60 s window — exactly what DingTalk refuses. This limiter
//! keeps a sliding log of the last `max` grant instants instead, so at most `max` permits are
//! granted in ANY window of length `window`.
//!
//! Time is `tokio::time::Instant`, so tests with `#[tokio::test(start_paused = true)]` run in
//! virtual time. The lock is a `std::sync::Mutex` held only for bookkeeping, never across an
//! `.await`.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// At most `max` permits in any rolling window of `window`, plus vendor-imposed blocks.
#[derive(Debug)]
pub struct RollingWindow {
    /// `None` = unlimited (the benchmarking switch); blocks are still honoured.
    max: Option<u32>,
    window: Duration,
    state: Mutex<WindowState>,
}

#[derive(Debug, Default)]
struct WindowState {
    /// Grant instants, oldest first; never longer than `max`.
    grants: VecDeque<Instant>,
    /// No permit is granted before this instant (a vendor penalty such as DingTalk's block).
    blocked_until: Option<Instant>,
}

impl RollingWindow {
    /// At most `max` permits in any rolling `window`. `max == 0` means unlimited (see
    /// [`RollingWindow::unlimited`]), so a configured `per_minute = 0` disables pacing.
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max: (max > 0).then_some(max), window, state: Mutex::new(WindowState::default()) }
    }

    /// No pacing at all (benchmarks); `block_until` is still honoured.
    pub fn unlimited() -> Self {
        Self::new(0, Duration::ZERO)
    }

    /// The configured maximum per window, `None` when unlimited.
    pub fn max(&self) -> Option<u32> {
        self.max
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    fn lock(&self) -> MutexGuard<'_, WindowState> {
        // The state is a plain log of instants: a panic while holding the lock cannot leave it
        // inconsistent, so a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a permit now, or tells how long to wait before one may be free.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        let mut st = self.lock();
        if let Some(until) = st.blocked_until {
            if until > now {
                return Err(until - now);
            }
            st.blocked_until = None;
        }
        let Some(max) = self.max else {
            return Ok(());
        };
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        // A grant at `t` occupies the half-open window [t, t + window).
        while let Some(&front) = st.grants.front() {
            if front + self.window <= now {
                st.grants.pop_front();
            } else {
                break;
            }
        }
        if st.grants.len() < max {
            st.grants.push_back(now);
            return Ok(());
        }
        match st.grants.front() {
            Some(&front) => Err((front + self.window).saturating_duration_since(now)),
            None => Ok(()),
        }
    }

    /// Waits until a permit is free and takes it.
    pub async fn acquire(&self) {
        loop {
            let now = Instant::now();
            match self.try_acquire_at(now) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep_until(now + wait).await,
            }
        }
    }

    /// Grants nothing before `until` (a vendor penalty). A later block extends an earlier
    /// one; an earlier one never shortens it.
    pub fn block_until(&self, until: Instant) {
        let mut st = self.lock();
        st.blocked_until = Some(match st.blocked_until {
            Some(existing) if existing > until => existing,
            _ => until,
        });
    }

    /// The instant the current block ends, if one is in force.
    pub fn blocked_until(&self) -> Option<Instant> {
        let st = self.lock();
        st.blocked_until.filter(|u| *u > Instant::now())
    }
}

// The paused-time tests of this limiter live in `dingbridge-connectors`
// (`src/dingtalk/tests.rs`, module `rolling_window`): they need tokio's `test-util` feature,
// which this crate does not enable as a dev-dependency.
