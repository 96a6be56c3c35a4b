//! The pacing ledger: sends granted per vendor window, shared by every instance on the store.
//!
//! A window key names one vendor endpoint with a "N per rolling window" limit (a DingTalk robot:
//! 20 per minute). A grant is a row with its time; a permit is granted when fewer than `max`
//! grants fall inside the window ending now and no vendor block is in force. Grants are written
//! before the send, so a process that dies after taking one still counts it: the ledger errs on
//! the side of sending later, never of sending one too many.

use crate::Millis;

/// What the ledger answers a request for a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacingAnswer {
    /// Taken: send now.
    Granted,
    /// The window is full or the vendor blocked the key: no permit for this many ms.
    Wait(Millis),
}

/// Creates the key's row, so the row lock below has something to lock on first use.
pub(crate) const ENSURE_WINDOW_SQL: &str =
    "INSERT INTO pacing_windows (key, blocked_until) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING";

/// The key's block; read under the row lock (Postgres appends `FOR UPDATE`), which serialises
/// every permit of one key across instances. SQLite serialises all writers anyway.
pub(crate) const WINDOW_SQL: &str = "SELECT blocked_until FROM pacing_windows WHERE key = $1";

/// The key's latest grant time (0 when none).
pub(crate) const LATEST_SQL: &str = "SELECT COALESCE(MAX(granted_at), 0) AS latest FROM pacing_grants WHERE key = $1";

/// Grants that have left the window (`granted_at + window <= now`).
pub(crate) const FORGET_SQL: &str = "DELETE FROM pacing_grants WHERE key = $1 AND granted_at <= $2";

/// The grants inside the window: how many, and when the oldest leaves it.
pub(crate) const COUNT_SQL: &str =
    "SELECT COUNT(*) AS n, COALESCE(MIN(granted_at), 0) AS oldest FROM pacing_grants WHERE key = $1";

pub(crate) const GRANT_SQL: &str = "INSERT INTO pacing_grants (key, granted_at) VALUES ($1, $2)";

/// Extends a key's block; a shorter block never shortens a longer one.
pub(crate) const BLOCK_SQL: &str = "INSERT INTO pacing_windows (key, blocked_until) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET blocked_until = \
     CASE WHEN pacing_windows.blocked_until > excluded.blocked_until \
     THEN pacing_windows.blocked_until ELSE excluded.blocked_until END";

/// The answer for a key with `count` grants in the window (the oldest at `oldest`) and its
/// block, at `now`.
pub(crate) fn decide(
    max: u32,
    window_ms: Millis,
    count: i64,
    oldest: Millis,
    blocked_until: Millis,
    now: Millis,
) -> PacingAnswer {
    if blocked_until > now {
        return PacingAnswer::Wait(blocked_until - now);
    }
    if count < i64::from(max) {
        return PacingAnswer::Granted;
    }
    // The oldest grant leaves the window at `oldest + window`; at least 1 ms so a caller that
    // sleeps the answer always makes progress.
    PacingAnswer::Wait(oldest.saturating_add(window_ms).saturating_sub(now).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_until_full_then_waits_for_the_oldest_to_leave() {
        assert_eq!(decide(20, 60_000, 19, 1_000, 0, 30_000), PacingAnswer::Granted);
        assert_eq!(decide(20, 60_000, 20, 1_000, 0, 30_000), PacingAnswer::Wait(31_000));
        assert_eq!(decide(20, 60_000, 20, 1_000, 0, 61_000), PacingAnswer::Wait(1));
    }

    #[test]
    fn a_block_wins_over_free_room() {
        assert_eq!(decide(20, 60_000, 0, 0, 700_000, 100_000), PacingAnswer::Wait(600_000));
        assert_eq!(decide(20, 60_000, 0, 0, 100_000, 100_000), PacingAnswer::Granted);
    }
}
