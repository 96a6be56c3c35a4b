//! The pacing ledger (a vendor's "N per rolling window" shared by every instance on the store),
//! against SQLite and Postgres.

use crate::harness::Backend;
use store::PacingAnswer::{Granted, Wait};

crate::contract_tests!(
    grants_up_to_the_limit_then_answers_the_wait,
    two_handles_share_one_window_and_it_survives_a_reopen,
    a_vendor_block_holds_every_handle_and_is_never_shortened,
    concurrent_takers_never_exceed_the_limit,
    a_caller_with_an_older_time_is_judged_at_the_latest_grant,
);

const KEY: &str = "dingtalk-robot:0123456789abcdef";

async fn grants_up_to_the_limit_then_answers_the_wait(b: &mut Backend) {
    let s = &b.store;
    for now in [0, 10, 20] {
        assert_eq!(s.take_pacing_permit(KEY, 3, 1_000, now).await.unwrap(), Granted);
    }
    assert_eq!(s.take_pacing_permit(KEY, 3, 1_000, 30).await.unwrap(), Wait(970));
    // A refusal takes nothing: the oldest grant still decides.
    assert_eq!(s.take_pacing_permit(KEY, 3, 1_000, 999).await.unwrap(), Wait(1));
    // The grant at 0 occupies [0, 1000): at 1000 it has left.
    assert_eq!(s.take_pacing_permit(KEY, 3, 1_000, 1_000).await.unwrap(), Granted);
    assert_eq!(s.take_pacing_permit(KEY, 3, 1_000, 1_001).await.unwrap(), Wait(9));
    // Another key has its own window.
    assert_eq!(s.take_pacing_permit("dingtalk-robot:other", 3, 1_000, 1_001).await.unwrap(), Granted);
}

async fn two_handles_share_one_window_and_it_survives_a_reopen(b: &mut Backend) {
    let other = b.open_again().await;
    assert_eq!(b.store.take_pacing_permit(KEY, 3, 60_000, 100).await.unwrap(), Granted);
    assert_eq!(other.take_pacing_permit(KEY, 3, 60_000, 200).await.unwrap(), Granted);
    assert_eq!(b.store.take_pacing_permit(KEY, 3, 60_000, 300).await.unwrap(), Granted);
    assert_eq!(other.take_pacing_permit(KEY, 3, 60_000, 400).await.unwrap(), Wait(59_700));
    other.close().await;
    // A restarted gateway (after a crash, say) still sees the minute's grants.
    b.reopen().await;
    assert_eq!(b.store.take_pacing_permit(KEY, 3, 60_000, 500).await.unwrap(), Wait(59_600));
    assert_eq!(b.store.take_pacing_permit(KEY, 3, 60_000, 60_100).await.unwrap(), Granted);
}

async fn a_vendor_block_holds_every_handle_and_is_never_shortened(b: &mut Backend) {
    let other = b.open_again().await;
    b.store.block_pacing(KEY, 600_000).await.unwrap();
    b.store.block_pacing(KEY, 5_000).await.unwrap();
    assert_eq!(other.take_pacing_permit(KEY, 20, 61_000, 100).await.unwrap(), Wait(599_900));
    assert_eq!(b.store.take_pacing_permit(KEY, 20, 61_000, 599_999).await.unwrap(), Wait(1));
    assert_eq!(other.take_pacing_permit(KEY, 20, 61_000, 600_000).await.unwrap(), Granted);
    other.close().await;
}

async fn concurrent_takers_never_exceed_the_limit(b: &mut Backend) {
    let other = b.open_again().await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = if i % 2 == 0 { b.store.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move { store.take_pacing_permit(KEY, 5, 60_000, 1_000 + i).await.unwrap() }));
    }
    let mut granted = 0;
    for t in tasks {
        if t.await.unwrap() == Granted {
            granted += 1;
        }
    }
    assert_eq!(granted, 5, "two instances together take exactly the window's permits");
    other.close().await;
}

/// Callers read their clock before waiting for the writer: one can come with a time older than a
/// grant already committed, whose caller has forgotten grants still inside the late caller's
/// window. Judged at its own time it would be granted on top of them (3 grants in [0, 100) with a
/// limit of 2); judged at the latest grant time it is granted there, and that grant holds the
/// window as long as it should.
async fn a_caller_with_an_older_time_is_judged_at_the_latest_grant(b: &mut Backend) {
    let s = &b.store;
    assert_eq!(s.take_pacing_permit(KEY, 2, 100, 0).await.unwrap(), Granted);
    assert_eq!(s.take_pacing_permit(KEY, 2, 100, 3).await.unwrap(), Granted);
    // At 104 both have left the window (and are forgotten).
    assert_eq!(s.take_pacing_permit(KEY, 2, 100, 104).await.unwrap(), Granted);
    // A caller that read 50 before waiting for the writer: granted, but recorded at 104.
    assert_eq!(s.take_pacing_permit(KEY, 2, 100, 50).await.unwrap(), Granted);
    // Recorded at 50 it would leave at 150 (a wait of 40 at 110); at 104 it leaves at 204.
    assert_eq!(s.take_pacing_permit(KEY, 2, 100, 110).await.unwrap(), Wait(94));
}
