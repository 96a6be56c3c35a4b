//! Group commit: one transaction per batch, bounded queue, errors reach every caller.

use crate::harness::{intake, job, Backend, DEST};
use async_trait::async_trait;
use futures::FutureExt;
use std::sync::Arc;
use store::{
    AuditEntry, AuditHead, AuditVerification, Completion, CompletionBatcher, CursorUpdate, DeadLetter, GroupCommitter,
    IdLink, Intake, IntakeOutcome, Job, Lease, Millis, NewAuditEntry, PacingAnswer, Pruned, Store, StoreError,
    StoreStats, StoredCredential, TaskLease,
};

crate::contract_tests!(committer_batches_and_dedups, completion_batcher_fences_each_slot);

async fn committer_batches_and_dedups(b: &mut Backend) {
    let gc = GroupCommitter::spawn(b.store.clone(), 256, 2_048);
    let mk = |i: usize| {
        intake(&format!("src:{i}"), &format!("e{i}"), vec![job(&format!("k{}", i % 50), &format!("i{i}"), 0)])
    };
    let mut set = tokio::task::JoinSet::new();
    for i in 0..1_000 {
        let gc = gc.clone();
        let it = mk(i);
        set.spawn(async move { gc.submit(it).await });
    }
    let mut accepted = 0;
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().unwrap(), IntakeOutcome::Accepted);
        accepted += 1;
    }
    assert_eq!(accepted, 1_000);
    for i in (0..1_000).step_by(10) {
        let gc = gc.clone();
        let it = mk(i);
        set.spawn(async move { gc.submit(it).await });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap().unwrap(), IntakeOutcome::Duplicate);
    }
    let st = b.store.stats(0).await.unwrap();
    assert_eq!((st.events, st.pending), (1_000, 1_000));
    // The task ends (and lets go of the store) once every handle is gone.
    drop(gc);
    for _ in 0..100 {
        if Arc::strong_count(&b.store) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(Arc::strong_count(&b.store), 1, "group-commit task still holds the store");
}

async fn completion_batcher_fences_each_slot(b: &mut Backend) {
    let jobs: Vec<_> = (0..300).map(|i| job(&format!("k{i}"), &format!("i{i}"), 0)).collect();
    b.store.ingest(&[intake("d", "e", jobs)]).await.unwrap();
    let leased = b.store.claim(DEST, "w", 300, 60_000, 0).await.unwrap();
    assert_eq!(leased.len(), 300);
    let cb = CompletionBatcher::spawn(b.store.clone(), 64, 1_024);
    let mut set = tokio::task::JoinSet::new();
    for (i, j) in leased.iter().enumerate() {
        let cb = cb.clone();
        // Every third completion carries a stale version.
        let lease = if i % 3 == 0 { Lease { version: j.lease_version + 7, ..j.lease() } } else { j.lease() };
        set.spawn(async move { (i, cb.submit(Completion { lease, receipt: None }, 10).await) });
    }
    while let Some(r) = set.join_next().await {
        let (i, r) = r.unwrap();
        if i % 3 == 0 {
            assert!(matches!(r, Err(StoreError::LeaseLost { .. })), "slot {i}: {r:?}");
        } else {
            assert!(r.is_ok(), "slot {i}: {r:?}");
        }
    }
    let st = b.store.stats(10).await.unwrap();
    assert_eq!((st.done, st.leased), (200, 100));
}

#[tokio::test]
async fn full_queue_is_overloaded() {
    let b = Backend::sqlite_in(None).await;
    let gc = GroupCommitter::spawn(b.store.clone(), 1, 2);
    // Current-thread runtime: the commit task does not run until we yield, so the first two
    // submits sit in the queue and the third finds it full.
    assert!(gc.submit(intake("a", "a", vec![])).now_or_never().is_none());
    assert!(gc.submit(intake("b", "b", vec![])).now_or_never().is_none());
    let third = gc.submit(intake("c", "c", vec![])).now_or_never();
    assert!(matches!(third, Some(Err(StoreError::Overloaded))), "{third:?}");
    // Once drained, submits go through again.
    let mut out = Err(StoreError::Overloaded);
    for _ in 0..200 {
        out = gc.submit(intake("d", "d", vec![])).await;
        if !matches!(out, Err(StoreError::Overloaded)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(out.unwrap(), IntakeOutcome::Accepted);
    assert_eq!(b.store.stats(0).await.unwrap().events, 3);
    let cb = CompletionBatcher::spawn(b.store.clone(), 1, 1);
    let c = || Completion { lease: Lease { job_id: 1, version: 1 }, receipt: None };
    assert!(cb.submit(c(), 0).now_or_never().is_none());
    assert!(matches!(cb.submit(c(), 0).now_or_never(), Some(Err(StoreError::Overloaded))));
    b.teardown().await;
}

#[tokio::test]
async fn byte_budget_sheds_and_is_given_back_after_the_commit() {
    let b = Backend::sqlite_in(None).await;
    let sized = |name: &str, bytes: usize| {
        let mut it = intake(name, name, vec![]);
        it.event_json.clear();
        // A JSON string filling the rest.
        it.event_json = format!("\"{}\"", "x".repeat(bytes - store::intake_bytes(&it) - 2));
        assert_eq!(store::intake_bytes(&it), bytes);
        it
    };
    let gc = GroupCommitter::spawn_with_byte_budget(b.store.clone(), 1, 1_000, 10_000);
    assert_eq!(gc.bytes_available(), Some(10_000));
    // Current-thread runtime: nothing commits until we yield. The callers give up at once, yet
    // their intakes stay queued and keep holding their bytes.
    assert!(gc.submit(sized("a", 6_000)).now_or_never().is_none());
    assert_eq!(gc.bytes_available(), Some(4_000));
    let over = gc.submit(sized("b", 4_001)).now_or_never();
    assert!(matches!(over, Some(Err(StoreError::Overloaded))), "{over:?}");
    assert!(gc.submit(sized("c", 4_000)).now_or_never().is_none(), "an exact fit is queued");
    let full = gc.submit(sized("d", 100)).now_or_never();
    assert!(matches!(full, Some(Err(StoreError::Overloaded))), "{full:?}");
    // Once the queued intakes are committed their bytes come back.
    for _ in 0..200 {
        if gc.bytes_available() == Some(10_000) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(gc.bytes_available(), Some(10_000));
    assert_eq!(b.store.stats(0).await.unwrap().events, 2, "a and c committed, b and d refused");
    // An intake larger than the whole budget goes through alone, and gives it all back.
    assert_eq!(gc.submit(sized("huge", 50_000)).await.unwrap(), IntakeOutcome::Accepted);
    assert_eq!(gc.bytes_available(), Some(10_000));
    // A refused intake was not stored: the sender's retry is its first commit.
    assert_eq!(gc.submit(sized("b", 4_001)).await.unwrap(), IntakeOutcome::Accepted);
    b.teardown().await;
}

#[tokio::test]
async fn failed_commit_fails_every_caller() {
    let gc = GroupCommitter::spawn(Arc::new(Down), 64, 256);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let gc = gc.clone();
        set.spawn(async move { gc.submit(intake(&format!("x{i}"), "e", vec![])).await });
    }
    while let Some(r) = set.join_next().await {
        assert!(matches!(r.unwrap(), Err(StoreError::Unavailable(_))));
    }
    let cb = CompletionBatcher::spawn(Arc::new(Down), 64, 256);
    let r = cb.submit(Completion { lease: Lease { job_id: 1, version: 1 }, receipt: None }, 0).await;
    assert!(matches!(r, Err(StoreError::Unavailable(_))));
}

/// A store whose every call fails, like a database that went away.
struct Down;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable("database is down".into()))
}

#[async_trait]
impl Store for Down {
    async fn ingest_with_cursor(
        &self,
        _: &[Intake],
        _: Option<&CursorUpdate>,
    ) -> Result<Vec<IntakeOutcome>, StoreError> {
        down()
    }
    async fn claim(&self, _: &str, _: &str, _: usize, _: i64, _: Millis) -> Result<Vec<Job>, StoreError> {
        down()
    }
    async fn complete(&self, _: &[Completion], _: Millis) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        down()
    }
    async fn retry_later(&self, _: Lease, _: Millis, _: &str, _: Millis) -> Result<(), StoreError> {
        down()
    }
    async fn dead_letter(&self, _: Lease, _: &str, _: Millis) -> Result<(), StoreError> {
        down()
    }
    async fn renew(&self, _: &[Lease], _: i64, _: Millis) -> Result<Vec<bool>, StoreError> {
        down()
    }
    async fn release(&self, _: Lease, _: Millis) -> Result<(), StoreError> {
        down()
    }
    async fn retry_waiting_now(&self, _: &str, _: Millis) -> Result<u64, StoreError> {
        down()
    }
    async fn probe_early(&self, _: &str, _: Millis) -> Result<bool, StoreError> {
        down()
    }
    async fn list_dead(&self, _: usize) -> Result<Vec<DeadLetter>, StoreError> {
        down()
    }
    async fn replay_dead(&self, _: i64, _: Millis) -> Result<(), StoreError> {
        down()
    }
    async fn replay_dead_many(&self, _: &[i64], _: Millis) -> Result<Vec<i64>, StoreError> {
        down()
    }
    async fn drop_dead(&self, _: i64) -> Result<(), StoreError> {
        down()
    }
    async fn take_pacing_permit(&self, _: &str, _: u32, _: i64, _: Millis) -> Result<PacingAnswer, StoreError> {
        down()
    }
    async fn block_pacing(&self, _: &str, _: Millis) -> Result<(), StoreError> {
        down()
    }
    async fn get_cursor(&self, _: &str) -> Result<Option<String>, StoreError> {
        down()
    }
    async fn put_cursor(&self, _: &str, _: &str, _: Millis) -> Result<(), StoreError> {
        down()
    }
    async fn put_link(&self, _: &IdLink) -> Result<(), StoreError> {
        down()
    }
    async fn get_link(&self, _: &str, _: &str) -> Result<Option<IdLink>, StoreError> {
        down()
    }
    async fn list_links(&self, _: &str, _: Option<&str>, _: &str, _: usize) -> Result<Vec<IdLink>, StoreError> {
        down()
    }
    async fn audit_append_many(&self, _: &[NewAuditEntry]) -> Result<Vec<AuditEntry>, StoreError> {
        down()
    }
    async fn audit_bind_key(&self) -> Result<AuditHead, StoreError> {
        down()
    }
    async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        down()
    }
    async fn audit_list(&self, _: Millis, _: i64, _: usize) -> Result<Vec<AuditEntry>, StoreError> {
        down()
    }
    async fn audit_verify(&self) -> Result<AuditVerification, StoreError> {
        down()
    }
    async fn stats(&self, _: Millis) -> Result<StoreStats, StoreError> {
        down()
    }
    async fn get_job(&self, _: i64) -> Result<Option<Job>, StoreError> {
        down()
    }
    async fn jobs_for_event(&self, _: &str) -> Result<Vec<Job>, StoreError> {
        down()
    }
    async fn acquire_task_lease(&self, _: &str, _: &str, _: i64, _: Millis) -> Result<Option<TaskLease>, StoreError> {
        down()
    }
    async fn renew_task_lease(&self, _: &TaskLease, _: i64, _: Millis) -> Result<Option<TaskLease>, StoreError> {
        down()
    }
    async fn release_task_lease(&self, _: &TaskLease, _: Millis) -> Result<bool, StoreError> {
        down()
    }
    async fn prune(&self, _: Millis, _: usize) -> Result<Pruned, StoreError> {
        down()
    }
    async fn load_credential(&self, _: &str, _: &str) -> Result<Option<StoredCredential>, StoreError> {
        down()
    }
    async fn save_credential(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: Option<i64>,
        _: Millis,
    ) -> Result<Option<i64>, StoreError> {
        down()
    }
}
