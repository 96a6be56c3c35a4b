//! Waiting in tests for something the system does in the background.

use std::time::{Duration, Instant};

/// How long [`wait_for`] waits unless told otherwise.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(15);

/// Polls `done` every 20 ms until it holds, and returns how long that took; panics naming `what`
/// after `limit`. A test that then asserts "nothing more happened" waits for a positive marker
/// with this first (the duplicate counted, N more polls in a simulator's journal), never only a
/// fixed sleep.
pub async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Waits until the store holds no pending or leased job: every delivery planned so far has
/// been made (or dead-lettered), so nothing more is on its way. The positive marker a "nothing
/// more arrived" assertion waits for, after whatever produced the work has been seen to run.
pub async fn wait_for_settled(store: &dyn store::Store, limit: Duration) {
    let started = Instant::now();
    loop {
        let stats = store.stats(0).await.expect("the store answers its statistics");
        if stats.pending == 0 && stats.leased == 0 {
            return;
        }
        assert!(started.elapsed() < limit, "deliveries did not settle within {limit:?}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
