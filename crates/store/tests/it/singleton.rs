//! Task leases (one instance runs each singleton task) and the retention sweep, against both
//! backends.

use crate::harness::{intake, job, Backend, DEST};
use store::{Completion, IntakeOutcome, JobState, NewDeadLetter, Pruned};

crate::contract_tests!(
    two_owners_contend_for_a_task_lease,
    an_expired_task_lease_changes_hands,
    a_released_task_lease_changes_hands_at_once,
    a_stale_owner_cannot_renew,
    task_leases_are_per_task,
    concurrent_acquirers_elect_one,
    retention_prunes_old_done_jobs_and_their_inbox_rows_in_bounded_batches,
);

async fn two_owners_contend_for_a_task_lease(b: &mut Backend) {
    let s = &b.store;
    let a = s.acquire_task_lease("poll:crm", "a", 1_000, 0).await.unwrap().expect("a free lease is taken");
    assert_eq!((a.owner.as_str(), a.version, a.expires_at), ("a", 1, 1_000));
    assert_eq!(s.acquire_task_lease("poll:crm", "b", 1_000, 10).await.unwrap(), None, "a live lease is a's");
    // Its holder takes it again: the same tenure, extended.
    let again = s.acquire_task_lease("poll:crm", "a", 1_000, 500).await.unwrap().expect("a keeps it");
    assert_eq!((again.version, again.expires_at), (1, 1_500));
    let renewed = s.renew_task_lease(&again, 1_000, 900).await.unwrap().expect("renewed");
    assert_eq!((renewed.version, renewed.expires_at), (1, 1_900));
    assert_eq!(s.acquire_task_lease("poll:crm", "b", 1_000, 1_899).await.unwrap(), None);
}

async fn an_expired_task_lease_changes_hands(b: &mut Backend) {
    let s = &b.store;
    let a = s.acquire_task_lease("poll:erp", "a", 1_000, 0).await.unwrap().expect("a");
    assert_eq!(s.acquire_task_lease("poll:erp", "b", 1_000, 999).await.unwrap(), None);
    let b_lease = s.acquire_task_lease("poll:erp", "b", 1_000, 1_000).await.unwrap().expect("expired: b takes it");
    assert_eq!((b_lease.owner.as_str(), b_lease.version), ("b", a.version + 1));
    // a, back from a pause, is fenced out and cannot take it back while b's is live.
    assert_eq!(s.renew_task_lease(&a, 1_000, 1_001).await.unwrap(), None);
    assert_eq!(s.acquire_task_lease("poll:erp", "a", 1_000, 1_001).await.unwrap(), None);
    assert!(!s.release_task_lease(&a, 1_002).await.unwrap(), "a cannot release b's lease");
    assert!(s.renew_task_lease(&b_lease, 1_000, 1_500).await.unwrap().is_some(), "b's lease is intact");
}

async fn a_released_task_lease_changes_hands_at_once(b: &mut Backend) {
    let s = &b.store;
    let a = s.acquire_task_lease("retention", "a", 15_000, 0).await.unwrap().expect("a");
    assert!(s.release_task_lease(&a, 100).await.unwrap());
    assert!(!s.release_task_lease(&a, 100).await.unwrap(), "released once");
    let b_lease = s.acquire_task_lease("retention", "b", 15_000, 100).await.unwrap().expect("b at once");
    assert_eq!(b_lease.version, a.version + 1, "the row (and its version) outlives the release");
    assert_eq!(s.renew_task_lease(&a, 15_000, 200).await.unwrap(), None);
}

async fn a_stale_owner_cannot_renew(b: &mut Backend) {
    let s = &b.store;
    let a = s.acquire_task_lease("approval-timer", "a", 1_000, 0).await.unwrap().expect("a");
    // Lapsed, but nobody took it: still a's tenure (nobody else ran the task), so it renews.
    let late = s.renew_task_lease(&a, 1_000, 1_500).await.unwrap().expect("nobody took it");
    assert_eq!((late.version, late.expires_at), (a.version, 2_500));
    // Lapsed again and taken by b: a's tenure is over, for renewal and release alike.
    let b_lease = s.acquire_task_lease("approval-timer", "b", 1_000, 2_500).await.unwrap().expect("b");
    assert_eq!(b_lease.version, a.version + 1);
    assert_eq!(s.renew_task_lease(&late, 1_000, 2_600).await.unwrap(), None);
    assert!(!s.release_task_lease(&late, 2_600).await.unwrap());
    // a takes it again once b's lapses: a new tenure, and the old one stays fenced.
    let next = s.acquire_task_lease("approval-timer", "a", 1_000, 3_500).await.unwrap().expect("a again");
    assert_eq!(next.version, b_lease.version + 1, "each tenure has its own version");
    assert_eq!(s.renew_task_lease(&a, 1_000, 3_600).await.unwrap(), None, "the old tenure stays fenced");
    assert_eq!(s.renew_task_lease(&b_lease, 1_000, 3_600).await.unwrap(), None);
    assert!(s.renew_task_lease(&next, 1_000, 3_600).await.unwrap().is_some());
}

async fn task_leases_are_per_task(b: &mut Backend) {
    let s = &b.store;
    assert!(s.acquire_task_lease("poll:one", "a", 1_000, 0).await.unwrap().is_some());
    assert!(s.acquire_task_lease("poll:two", "b", 1_000, 0).await.unwrap().is_some());
    assert_eq!(s.acquire_task_lease("poll:one", "b", 1_000, 1).await.unwrap(), None);
    assert_eq!(s.acquire_task_lease("poll:two", "a", 1_000, 1).await.unwrap(), None);
}

/// Several handles (gateway processes) race for one lease, round after round: one wins each.
async fn concurrent_acquirers_elect_one(b: &mut Backend) {
    let mut handles = vec![b.store.clone()];
    for _ in 0..3 {
        handles.push(b.open_again().await);
    }
    for round in 0..10_i64 {
        let now = round * 1_000;
        let attempts = handles.iter().enumerate().map(|(i, s)| {
            let s = s.clone();
            async move { s.acquire_task_lease("poll:race", &format!("owner-{i}"), 1_000, now).await }
        });
        let won: Vec<_> =
            futures::future::join_all(attempts).await.into_iter().filter_map(|r| r.expect("acquire")).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one owner, got {won:?}");
    }
}

async fn retention_prunes_old_done_jobs_and_their_inbox_rows_in_bounded_batches(b: &mut Backend) {
    let s = &b.store;
    let old = |dedup: &str, event: &str, jobs| {
        let mut it = intake(dedup, event, jobs);
        it.received_at = 1_000;
        it
    };
    // Seven old events whose one job each gets done, one old event that made no job.
    let mut batch: Vec<_> = (0..7)
        .map(|n| old(&format!("d{n}"), &format!("e{n}"), vec![job(&format!("k{n}"), &format!("i{n}"), 0)]))
        .collect();
    batch.push(old("none", "e-none", vec![]));
    // Old events whose jobs are not done: pending, leased, dead; an old parse failure.
    batch.push(old("pend", "e-pend", vec![job("kp", "ip", 1_000_000)]));
    batch.push(old("lease", "e-lease", vec![job("kl", "il", 0)]));
    batch.push(old("dead", "e-dead", vec![job("kd", "id", 0)]));
    let mut parse = old("parse", "e-parse", vec![]);
    parse.dead_letter = Some(NewDeadLetter { reason: "not a number".into() });
    batch.push(parse);
    assert!(s.ingest(&batch).await.unwrap().iter().all(|o| *o == IntakeOutcome::Accepted));
    let claimed = s.claim(DEST, "w", 100, 1_000_000, 2_000).await.unwrap();
    assert_eq!(claimed.len(), 9);
    let done: Vec<_> = claimed
        .iter()
        .filter(|j| j.event_id.starts_with('e') && j.event_id[1..].parse::<u32>().is_ok())
        .map(|j| Completion { lease: j.lease(), receipt: None })
        .collect();
    assert_eq!(done.len(), 7);
    assert!(s.complete(&done, 3_000).await.unwrap().iter().all(Result::is_ok));
    let dead = claimed.iter().find(|j| j.event_id == "e-dead").expect("dead job");
    s.dead_letter(dead.lease(), "gave up", 3_000).await.unwrap();
    // A recent event, done recently: inside retention.
    let mut recent = intake("recent", "e-recent", vec![job("kr", "ir", 0)]);
    recent.received_at = 50_000;
    s.ingest(&[recent]).await.unwrap();
    let r = s.claim(DEST, "w", 10, 1_000, 50_000).await.unwrap();
    assert_eq!(r.len(), 1);
    s.complete(&[Completion { lease: r[0].lease(), receipt: None }], 50_001).await.unwrap();

    let cutoff = 10_000;
    let mut total = Pruned::default();
    let mut calls = 0;
    loop {
        let p = s.prune(cutoff, 3).await.unwrap();
        assert!(p.jobs <= 3 && p.inbox <= 3, "a step is bounded: {p:?}");
        total.jobs += p.jobs;
        total.inbox += p.inbox;
        calls += 1;
        if p.jobs < 3 && p.inbox < 3 {
            break;
        }
        assert!(calls < 10, "the sweep ends");
    }
    assert!(calls >= 3, "seven jobs in steps of three take three steps");
    assert_eq!(total, Pruned { jobs: 7, inbox: 8 }, "the seven done events and the one that made no job");
    assert_eq!(s.prune(cutoff, 3).await.unwrap(), Pruned::default(), "nothing left to prune");

    for n in 0..7 {
        assert!(s.jobs_for_event(&format!("e{n}")).await.unwrap().is_empty());
    }
    let state =
        |e: &'static str| async move { s.jobs_for_event(e).await.unwrap().iter().map(|j| j.state).collect::<Vec<_>>() };
    assert_eq!(state("e-pend").await, vec![JobState::Pending]);
    assert_eq!(state("e-lease").await, vec![JobState::Leased]);
    assert_eq!(state("e-dead").await, vec![JobState::Dead]);
    assert_eq!(state("e-recent").await, vec![JobState::Done]);
    assert_eq!(s.list_dead(10).await.unwrap().len(), 2, "dead letters are kept");
    let st = s.stats(60_000).await.unwrap();
    assert_eq!(st.events, 5, "inbox rows kept: pending, leased, dead, parse failure, recent");
    // A kept row still deduplicates; a pruned one is gone (retention outlives every replay
    // tolerance, so a sender cannot replay it any more).
    assert_eq!(s.ingest(&[old("pend", "e-pend-2", vec![])]).await.unwrap(), vec![IntakeOutcome::Duplicate]);
    assert_eq!(s.ingest(&[old("d0", "e0-again", vec![])]).await.unwrap(), vec![IntakeOutcome::Accepted]);
}
