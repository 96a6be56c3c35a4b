//! The store contract: every case runs against SQLite and Postgres.

use crate::harness::{intake, job, Backend, DEST};
use store::{
    AuditVerification, Completion, CursorUpdate, IdLink, IntakeOutcome, JobState, Lease, NewAuditEntry, NewDeadLetter,
    StoreError,
};

crate::contract_tests!(
    dedup,
    jobs_and_dead_letter_commit_together,
    claim_respects_due_destination_and_limit,
    per_key_fifo,
    lease_expiry_and_fencing,
    retry_later_counts_and_schedules,
    dead_letter_and_replay,
    replay_many_in_one_transaction,
    release_does_not_count,
    early_probe_and_waking_after_an_outage,
    drop_dead_letter,
    cursors,
    a_poll_page_and_its_cursor_commit_together,
    links,
    audit_chain,
    stats,
    survives_reopen,
    empty_batches,
    coalescing_jobs_join_a_waiting_one,
    batch_claim_takes_runs_per_key,
    a_crashed_batch_is_reclaimed_whole_in_order,
);

fn lost(r: Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::LeaseLost { .. }))
}

async fn dedup(b: &mut Backend) {
    let s = &b.store;
    let a = intake("src:1", "e1", vec![job("k", "e1-a", 0), job("k", "e1-b", 0)]);
    let out = s.ingest(&[a.clone(), a.clone()]).await.unwrap();
    assert_eq!(out, vec![IntakeOutcome::Accepted, IntakeOutcome::Duplicate]);
    let out = s.ingest(std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(out, vec![IntakeOutcome::Duplicate]);
    assert_eq!(s.jobs_for_event("e1").await.unwrap().len(), 2);
    let st = s.stats(1_000).await.unwrap();
    assert_eq!((st.events, st.pending), (1, 2));
    // A duplicate with a dead letter adds no dead letter either.
    let mut d = a.clone();
    d.dead_letter = Some(NewDeadLetter { reason: "bad".into() });
    assert_eq!(s.ingest(&[d]).await.unwrap(), vec![IntakeOutcome::Duplicate]);
    assert!(s.list_dead(10).await.unwrap().is_empty());
}

async fn jobs_and_dead_letter_commit_together(b: &mut Backend) {
    let s = &b.store;
    let mut bad = intake("src:bad", "e-bad", vec![]);
    bad.dead_letter = Some(NewDeadLetter { reason: "amount `one hundred` is not a number".into() });
    let good = intake("src:good", "e-good", vec![job("k1", "g-1", 0)]);
    let out = s.ingest(&[bad, good]).await.unwrap();
    assert_eq!(out, vec![IntakeOutcome::Accepted; 2]);
    let dead = s.list_dead(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job_id, None);
    assert_eq!(dead[0].event_id, "e-bad");
    assert_eq!(dead[0].destination, None);
    assert!(dead[0].reason.contains("one hundred"));
    // Parse failures are not replayable (no job): NotFound.
    assert!(matches!(s.replay_dead(-1, 2_000).await, Err(StoreError::NotFound { .. })));
    let jobs = s.jobs_for_event("e-good").await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Pending);
    assert_eq!(jobs[0].attempts, 0);
    assert_eq!(jobs[0].lease_version, 0);
    assert_eq!(jobs[0].created_at, 1_000);
    assert_eq!(s.get_job(jobs[0].id).await.unwrap().as_ref(), Some(&jobs[0]));
    assert_eq!(s.get_job(jobs[0].id + 1000).await.unwrap(), None);
}

async fn claim_respects_due_destination_and_limit(b: &mut Backend) {
    let s = &b.store;
    let mut other = job("o1", "o-1", 0);
    other.destination = "netsuite".into();
    let jobs = vec![job("k1", "a", 100), job("k2", "b", 200), job("k3", "c", 5_000), job("k4", "d", 100), other];
    s.ingest(&[intake("d1", "e1", jobs)]).await.unwrap();
    assert!(s.claim(DEST, "w1", 10, 100_000, 50).await.unwrap().is_empty());
    let got = s.claim(DEST, "w1", 1, 100_000, 300).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].idempotency_key, "a");
    assert_eq!(got[0].state, JobState::Leased);
    assert_eq!(got[0].lease_owner.as_deref(), Some("w1"));
    assert_eq!(got[0].lease_expires_at, Some(100_300));
    assert_eq!(got[0].lease_version, 1);
    let got = s.claim(DEST, "w1", 10, 100_000, 300).await.unwrap();
    let keys: Vec<_> = got.iter().map(|j| j.idempotency_key.as_str()).collect();
    assert_eq!(keys, vec!["b", "d"]);
    assert!(s.claim(DEST, "w1", 10, 100_000, 300).await.unwrap().is_empty());
    let ns = s.claim("netsuite", "w2", 10, 100_000, 300).await.unwrap();
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0].idempotency_key, "o-1");
    assert!(s.claim(DEST, "w1", 0, 1_000, 10_000).await.unwrap().is_empty());
    let late = s.claim(DEST, "w1", 10, 100_000, 5_000).await.unwrap();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].idempotency_key, "c");
}

async fn per_key_fifo(b: &mut Backend) {
    let s = &b.store;
    s.ingest(&[intake("d1", "e1", vec![job("k", "k-1", 0), job("k", "k-2", 0), job("x", "x-1", 0)])]).await.unwrap();
    let ids: Vec<i64> = s.jobs_for_event("e1").await.unwrap().iter().map(|j| j.id).collect();
    // Only the head of each key is claimable.
    let got = s.claim(DEST, "w", 10, 1_000, 10).await.unwrap();
    let keys: Vec<_> = got.iter().map(|j| j.idempotency_key.as_str()).collect();
    assert_eq!(keys, vec!["k-1", "x-1"]);
    s.complete(&[Completion { lease: got[1].lease(), receipt: None }], 15).await.unwrap();
    // Job 1 leased: job 2 blocked.
    assert!(s.claim(DEST, "w", 10, 1_000, 20).await.unwrap().is_empty());
    // Job 1 pending with a future retry: job 2 still blocked.
    s.retry_later(got[0].lease(), 10_000, "503", 30).await.unwrap();
    assert!(s.claim(DEST, "w", 10, 1_000, 40).await.unwrap().is_empty());
    // Job 1's lease expired (not yet reclaimed): still blocks job 2; job 1 itself is claimable.
    let again = s.claim(DEST, "w", 10, 100, 10_000).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, ids[0]);
    assert!(s.claim(DEST, "w", 10, 100, 10_050).await.unwrap().is_empty());
    let re = s.claim(DEST, "w2", 10, 100, 10_200).await.unwrap();
    assert_eq!(re.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[0]]);
    assert_eq!(re[0].lease_version, again[0].lease_version + 1);
    // Job 1 done: job 2 claimable.
    let r = s.complete(&[Completion { lease: re[0].lease(), receipt: None }], 10_300).await.unwrap();
    assert!(r[0].is_ok());
    let next = s.claim(DEST, "w", 10, 1_000, 10_400).await.unwrap();
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[1]]);
    s.complete(&[Completion { lease: next[0].lease(), receipt: None }], 10_500).await.unwrap();

    // Dead also unblocks.
    s.ingest(&[intake("d2", "e2", vec![job("m", "m-1", 0), job("m", "m-2", 0)])]).await.unwrap();
    let m: Vec<i64> = s.jobs_for_event("e2").await.unwrap().iter().map(|j| j.id).collect();
    let got = s.claim(DEST, "w", 10, 1_000, 20_000).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![m[0]]);
    s.dead_letter(got[0].lease(), "400 bad request", 20_001).await.unwrap();
    let got = s.claim(DEST, "w", 10, 1_000, 20_002).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![m[1]]);
    // Replaying m-1 while m-2 is leased must not lease two jobs of key m at once.
    s.replay_dead(m[0], 20_003).await.unwrap();
    assert!(s.claim(DEST, "w", 10, 1_000, 20_004).await.unwrap().is_empty());
    s.complete(&[Completion { lease: got[0].lease(), receipt: None }], 20_005).await.unwrap();
    let got = s.claim(DEST, "w", 10, 1_000, 20_006).await.unwrap();
    assert_eq!(got.iter().map(|j| j.id).collect::<Vec<_>>(), vec![m[0]]);
}

async fn lease_expiry_and_fencing(b: &mut Backend) {
    let s = &b.store;
    s.ingest(&[intake("d1", "e1", vec![job("k", "a", 0)])]).await.unwrap();
    let first = s.claim(DEST, "w1", 1, 1_000, 0).await.unwrap().remove(0);
    assert!(s.claim(DEST, "w2", 1, 1_000, 999).await.unwrap().is_empty());
    let second = s.claim(DEST, "w2", 1, 1_000, 1_000).await.unwrap().remove(0);
    assert_eq!(second.id, first.id);
    assert_eq!(second.lease_version, first.lease_version + 1);
    assert_eq!(second.lease_owner.as_deref(), Some("w2"));
    // The stale holder is fenced out of every transition.
    let r = s.complete(&[Completion { lease: first.lease(), receipt: None }], 1_001).await.unwrap();
    assert!(lost(r.into_iter().next().unwrap()));
    assert!(lost(s.retry_later(first.lease(), 5_000, "x", 1_001).await));
    assert!(lost(s.dead_letter(first.lease(), "x", 1_001).await));
    assert!(lost(s.release(first.lease(), 1_001).await));
    // Mixed batch: each slot gets its own result.
    let r = s
        .complete(
            &[
                Completion { lease: first.lease(), receipt: None },
                Completion { lease: second.lease(), receipt: Some("msg-1".into()) },
                Completion { lease: Lease { job_id: 999_999, version: 1 }, receipt: None },
            ],
            1_002,
        )
        .await
        .unwrap();
    assert!(lost(r[0].clone()));
    assert!(r[1].is_ok());
    assert!(lost(r[2].clone()));
    let j = s.get_job(first.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Done);
    assert_eq!(j.attempts, 0);
    // Completing twice is also a lost lease.
    let r = s.complete(&[Completion { lease: second.lease(), receipt: None }], 1_003).await.unwrap();
    assert!(lost(r[0].clone()));
    // An expired lease that nobody took over may still complete.
    s.ingest(&[intake("d2", "e2", vec![job("k2", "b", 0)])]).await.unwrap();
    let l = s.claim(DEST, "w1", 1, 100, 0).await.unwrap().remove(0);
    let r = s.complete(&[Completion { lease: l.lease(), receipt: None }], 5_000).await.unwrap();
    assert!(r[0].is_ok());
}

async fn retry_later_counts_and_schedules(b: &mut Backend) {
    let s = &b.store;
    s.ingest(&[intake("d1", "e1", vec![job("k", "a", 0)])]).await.unwrap();
    let j = s.claim(DEST, "w", 1, 1_000, 100).await.unwrap().remove(0);
    s.retry_later(j.lease(), 5_000, "HTTP 503", 200).await.unwrap();
    let after = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(after.state, JobState::Pending);
    assert_eq!(after.attempts, 1);
    assert_eq!(after.next_attempt_at, 5_000);
    assert_eq!(after.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(after.lease_owner, None);
    assert_eq!(after.lease_expires_at, None);
    assert!(s.claim(DEST, "w", 1, 1_000, 4_999).await.unwrap().is_empty());
    let j = s.claim(DEST, "w", 1, 1_000, 5_000).await.unwrap().remove(0);
    assert_eq!(j.attempts, 1);
    // A retry time in the past is clamped to now.
    s.retry_later(j.lease(), 10, "again", 6_000).await.unwrap();
    let after = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!((after.attempts, after.next_attempt_at), (2, 6_000));
}

async fn dead_letter_and_replay(b: &mut Backend) {
    let s = &b.store;
    s.ingest(&[intake("d1", "e1", vec![job("k", "idem-1", 0)])]).await.unwrap();
    let j = s.claim(DEST, "w", 1, 1_000, 100).await.unwrap().remove(0);
    s.retry_later(j.lease(), 200, "503", 150).await.unwrap();
    let j = s.claim(DEST, "w", 1, 1_000, 200).await.unwrap().remove(0);
    s.dead_letter(j.lease(), "HTTP 400: invalid user id", 300).await.unwrap();
    let dead_job = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(dead_job.state, JobState::Dead);
    assert_eq!(dead_job.attempts, 2);
    let dl = s.list_dead(10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].job_id, Some(j.id));
    assert_eq!(dl[0].event_id, "e1");
    assert_eq!(dl[0].destination.as_deref(), Some(DEST));
    assert_eq!(dl[0].reason, "HTTP 400: invalid user id");
    assert_eq!(dl[0].attempts, 2);
    assert_eq!(dl[0].created_at, 300);
    assert!(s.claim(DEST, "w", 1, 1_000, 10_000).await.unwrap().is_empty());
    // Replay: pending, due now, same idempotency key, attempts kept, lease cleared,
    // dead-letter row removed.
    s.replay_dead(j.id, 400).await.unwrap();
    let r = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!(r.state, JobState::Pending);
    assert_eq!(r.idempotency_key, "idem-1");
    assert_eq!(r.attempts, 2);
    assert_eq!(r.next_attempt_at, 400);
    assert_eq!(r.lease_owner, None);
    assert!(s.list_dead(10).await.unwrap().is_empty());
    assert!(matches!(s.replay_dead(j.id, 500).await, Err(StoreError::NotFound { .. })));
    let again = s.claim(DEST, "w", 1, 1_000, 400).await.unwrap().remove(0);
    assert_eq!(again.id, j.id);
    assert_eq!(again.idempotency_key, "idem-1");
    assert!(again.lease_version > j.lease_version);
    // Newest first.
    s.dead_letter(again.lease(), "second", 600).await.unwrap();
    let mut bad = intake("d2", "e2", vec![]);
    bad.dead_letter = Some(NewDeadLetter { reason: "parse".into() });
    s.ingest(&[bad]).await.unwrap();
    let dl = s.list_dead(10).await.unwrap();
    assert_eq!(dl.iter().map(|d| d.reason.as_str()).collect::<Vec<_>>(), vec!["parse", "second"]);
    assert_eq!(s.list_dead(1).await.unwrap().len(), 1);
}

async fn release_does_not_count(b: &mut Backend) {
    let s = &b.store;
    s.ingest(&[intake("d1", "e1", vec![job("k", "a", 0)])]).await.unwrap();
    let j = s.claim(DEST, "w", 1, 60_000, 100).await.unwrap().remove(0);
    s.release(j.lease(), 150).await.unwrap();
    let r = s.get_job(j.id).await.unwrap().unwrap();
    assert_eq!((r.state, r.attempts, r.lease_owner.clone()), (JobState::Pending, 0, None));
    // Claimable again at once, not only after the lease would have expired.
    let j2 = s.claim(DEST, "w", 1, 60_000, 200).await.unwrap().remove(0);
    assert_eq!(j2.id, j.id);
    assert_eq!(j2.lease_version, j.lease_version + 1);
    assert!(lost(s.release(j.lease(), 250).await));
}

/// While a destination is down (breaker open): an early probe makes the job whose back-off ends
/// first claimable, keeping its schedule, only while never-tried jobs wait; once the vendor
/// answers, every back-off of the destination ends now.
async fn early_probe_and_waking_after_an_outage(b: &mut Backend) {
    let s = &b.store;
    s.ingest(&[intake("d1", "e1", vec![job("k", "a", 0)])]).await.unwrap();
    let a = s.claim(DEST, "w", 1, 1_000, 100).await.unwrap().remove(0);
    s.retry_later(a.lease(), 10_000, "HTTP 503", 100).await.unwrap();
    assert!(!s.probe_early(DEST, 200).await.unwrap(), "one job failing on its own is not probed early");

    // A never-tried job waits behind it, and another key's head waits out a shorter back-off.
    s.ingest(&[intake("d2", "e2", vec![job("k", "b", 0), job("m", "c", 0)])]).await.unwrap();
    let c = s.claim(DEST, "w", 1, 1_000, 200).await.unwrap().remove(0);
    s.retry_later(c.lease(), 5_000, "HTTP 503", 200).await.unwrap();
    assert!(s.claim(DEST, "w", 10, 1_000, 300).await.unwrap().is_empty(), "nothing due");
    assert!(s.probe_early(DEST, 300).await.unwrap());
    let early = s.claim(DEST, "w", 10, 1_000, 300).await.unwrap();
    assert_eq!(early.iter().map(|j| j.id).collect::<Vec<_>>(), [c.id], "the soonest back-off, alone");
    assert_eq!((early[0].attempts, early[0].next_attempt_at), (1, 5_000), "its schedule is kept");
    // Still down: handed back on its schedule, no attempt counted.
    s.release(early[0].lease(), 310).await.unwrap();
    assert!(s.claim(DEST, "w", 10, 1_000, 4_999).await.unwrap().is_empty());
    let back = s.get_job(c.id).await.unwrap().unwrap();
    assert_eq!((back.state, back.attempts, back.next_attempt_at), (JobState::Pending, 1, 5_000));

    // The vendor answers again: both back-offs end now; FIFO still holds b behind a.
    assert_eq!(s.retry_waiting_now(DEST, 400).await.unwrap(), 2);
    let mut now_due: Vec<i64> = s.claim(DEST, "w", 10, 1_000, 400).await.unwrap().iter().map(|j| j.id).collect();
    now_due.sort_unstable();
    assert_eq!(now_due, [a.id, c.id]);
    let woken = s.get_job(a.id).await.unwrap().unwrap();
    assert_eq!((woken.attempts, woken.next_attempt_at), (1, 400), "attempts are kept");
    assert_eq!(s.retry_waiting_now(DEST, 500).await.unwrap(), 0, "leased jobs are not touched");
}

async fn drop_dead_letter(b: &mut Backend) {
    let s = &b.store;
    s.ingest(&[intake("d1", "e1", vec![job("k", "a", 0)])]).await.unwrap();
    let j = s.claim(DEST, "w", 1, 1_000, 0).await.unwrap().remove(0);
    s.dead_letter(j.lease(), "gone", 1).await.unwrap();
    let dl = s.list_dead(10).await.unwrap();
    s.drop_dead(dl[0].id).await.unwrap();
    assert!(s.list_dead(10).await.unwrap().is_empty());
    assert_eq!(s.get_job(j.id).await.unwrap().unwrap().state, JobState::Dead);
    assert!(matches!(s.drop_dead(dl[0].id).await, Err(StoreError::NotFound { .. })));
}

async fn cursors(b: &mut Backend) {
    let s = &b.store;
    assert_eq!(s.get_cursor("salesforce:opps").await.unwrap(), None);
    s.put_cursor("salesforce:opps", "2024-01-01T00:00:00Z#1", 1).await.unwrap();
    s.put_cursor("salesforce:opps", "2024-01-02T00:00:00Z#7", 2).await.unwrap();
    s.put_cursor("zoho:deals", "42", 3).await.unwrap();
    assert_eq!(s.get_cursor("salesforce:opps").await.unwrap().as_deref(), Some("2024-01-02T00:00:00Z#7"));
    assert_eq!(s.get_cursor("zoho:deals").await.unwrap().as_deref(), Some("42"));
}

async fn a_poll_page_and_its_cursor_commit_together(b: &mut Backend) {
    let s = &b.store;
    let cursor = |value: &str, at| CursorUpdate {
        name: "salesforce.poll.crm.Account".into(),
        value: value.into(),
        updated_at: at,
    };
    let page = [intake("crm:poll:A1", "p1", vec![job("A1", "p1-a", 0)]), intake("crm:poll:A2", "p2", vec![])];
    let out = s.ingest_with_cursor(&page, Some(&cursor("t1|A2", 1))).await.unwrap();
    assert_eq!(out, vec![IntakeOutcome::Accepted; 2]);
    assert_eq!(s.get_cursor("salesforce.poll.crm.Account").await.unwrap().as_deref(), Some("t1|A2"));
    assert_eq!(s.jobs_for_event("p1").await.unwrap().len(), 1);
    // A page polled again after a crash finds its events stored; the cursor still moves on.
    let out = s.ingest_with_cursor(&page[..1], Some(&cursor("t2|A1", 2))).await.unwrap();
    assert_eq!(out, vec![IntakeOutcome::Duplicate]);
    assert_eq!(s.get_cursor("salesforce.poll.crm.Account").await.unwrap().as_deref(), Some("t2|A1"));
    // An empty page moves only the cursor; no cursor and no intakes write nothing.
    assert!(s.ingest_with_cursor(&[], Some(&cursor("t3|", 3))).await.unwrap().is_empty());
    assert_eq!(s.get_cursor("salesforce.poll.crm.Account").await.unwrap().as_deref(), Some("t3|"));
    assert!(s.ingest_with_cursor(&[], None).await.unwrap().is_empty());
    assert_eq!(s.stats(10).await.unwrap().events, 2);
}

async fn links(b: &mut Backend) {
    let s = &b.store;
    let l = IdLink {
        kind: "pr_card".into(),
        left: "PR-1001".into(),
        right: "card-abc".into(),
        data: Some("{\"approver\":\"u1\"}".into()),
        updated_at: 5,
    };
    assert_eq!(s.get_link("pr_card", "PR-1001").await.unwrap(), None);
    s.put_link(&l).await.unwrap();
    assert_eq!(s.get_link("pr_card", "PR-1001").await.unwrap(), Some(l.clone()));
    let l2 = IdLink { right: "card-def".into(), data: None, updated_at: 6, ..l.clone() };
    s.put_link(&l2).await.unwrap();
    assert_eq!(s.get_link("pr_card", "PR-1001").await.unwrap(), Some(l2));
    assert_eq!(s.get_link("other", "PR-1001").await.unwrap(), None);

    // Listing: by kind, in left order, paged, optionally only one `right` value.
    for (left, right) in [("b", "pending"), ("a", "pending"), ("c", "approved"), ("d", "pending")] {
        let link =
            IdLink { kind: "approval".into(), left: left.into(), right: right.into(), data: None, updated_at: 7 };
        s.put_link(&link).await.unwrap();
    }
    let lefts = |links: Vec<IdLink>| links.into_iter().map(|l| l.left).collect::<Vec<_>>();
    assert_eq!(lefts(s.list_links("approval", None, "", 10).await.unwrap()), ["a", "b", "c", "d"]);
    assert_eq!(lefts(s.list_links("approval", Some("pending"), "", 10).await.unwrap()), ["a", "b", "d"]);
    assert_eq!(lefts(s.list_links("approval", Some("pending"), "a", 1).await.unwrap()), ["b"]);
    assert_eq!(lefts(s.list_links("approval", Some("approved"), "c", 10).await.unwrap()), Vec::<String>::new());
    assert_eq!(lefts(s.list_links("pr_card", None, "", 10).await.unwrap()), ["PR-1001"]);
}

async fn audit_chain(b: &mut Backend) {
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: 0 });
    let mut prev = store::ZERO_HASH.to_owned();
    for i in 0..10 {
        let e = b
            .store
            .audit_append(&NewAuditEntry {
                at: 100 + i,
                actor: format!("user{i}"),
                action: "approve".into(),
                subject: format!("PR-{i}"),
                detail: "{\"before\":\"pending\"}".into(),
            })
            .await
            .unwrap();
        assert_eq!(e.seq, i + 1);
        assert_eq!(e.prev_hash, prev);
        assert_eq!(e.hash, e.chain_hash(b.audit_key.as_ref()));
        prev = e.hash.clone();
    }
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: 10 });
    let listed = b.store.audit_list(105, 0, 3).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6, 7, 8]);
    assert_eq!(listed[2].hash, b.store.audit_list(107, 0, 1).await.unwrap()[0].hash);
    // Paging by seq: the rows after the previous page's last seq.
    let next = b.store.audit_list(105, 8, 3).await.unwrap();
    assert_eq!(next.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![9, 10]);
    b.exec("UPDATE audit_log SET detail = '{\"before\":\"approved\"}' WHERE seq = 4").await;
    match b.store.audit_verify().await.unwrap() {
        AuditVerification::Broken { at_seq, .. } => assert_eq!(at_seq, 4),
        other => panic!("tamper not detected: {other:?}"),
    }
}

async fn stats(b: &mut Backend) {
    let s = &b.store;
    assert_eq!(s.stats(0).await.unwrap(), store::StoreStats::default());
    let mut i1 = intake("d1", "e1", vec![job("k1", "a", 0), job("k2", "b", 0), job("k3", "c", 0)]);
    i1.received_at = 1_000;
    let mut i2 = intake("d2", "e2", vec![job("k4", "d", 0)]);
    i2.received_at = 3_000;
    s.ingest(&[i1, i2]).await.unwrap();
    let st = s.stats(10_000).await.unwrap();
    assert_eq!((st.events, st.pending, st.leased, st.done, st.dead), (2, 4, 0, 0, 0));
    assert_eq!(st.oldest_pending_age_ms, 9_000);
    let got = s.claim(DEST, "w", 3, 1_000, 10_000).await.unwrap();
    s.complete(&[Completion { lease: got[0].lease(), receipt: None }], 10_001).await.unwrap();
    s.dead_letter(got[1].lease(), "x", 10_001).await.unwrap();
    let st = s.stats(10_000).await.unwrap();
    assert_eq!((st.pending, st.leased, st.done, st.dead), (1, 1, 1, 1));
    assert_eq!(st.oldest_pending_age_ms, 9_000);
    assert_eq!(st.lease_expired, 0, "the lease runs to 11 000");
    assert_eq!(s.stats(11_000).await.unwrap().lease_expired, 1, "its holder is gone: stalled until reclaimed");
    let got = s.claim(DEST, "w", 3, 1_000, 20_000).await.unwrap();
    let c: Vec<_> = got.iter().map(|j| Completion { lease: j.lease(), receipt: None }).collect();
    s.complete(&c, 20_000).await.unwrap();
    let st = s.stats(20_000).await.unwrap();
    assert_eq!((st.pending, st.leased, st.done, st.dead, st.oldest_pending_age_ms), (0, 0, 3, 1, 0));
}

async fn survives_reopen(b: &mut Backend) {
    b.store.ingest(&[intake("d1", "e1", vec![job("k", "a", 0), job("k", "b", 0)])]).await.unwrap();
    let j = b.store.claim(DEST, "w", 1, 1_000, 0).await.unwrap().remove(0);
    b.store.put_cursor("c", "v", 1).await.unwrap();
    b.store
        .audit_append(&NewAuditEntry {
            at: 1,
            actor: "a".into(),
            action: "b".into(),
            subject: "c".into(),
            detail: "{}".into(),
        })
        .await
        .unwrap();
    b.reopen().await;
    let s = &b.store;
    assert_eq!(s.ingest(&[intake("d1", "e1", vec![])]).await.unwrap(), vec![IntakeOutcome::Duplicate]);
    let jobs = s.jobs_for_event("e1").await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].state, JobState::Leased);
    assert_eq!(s.get_cursor("c").await.unwrap().as_deref(), Some("v"));
    assert_eq!(s.audit_verify().await.unwrap(), AuditVerification::Intact { rows: 1 });
    // The lease survives the restart and is still fenced.
    let r = s.complete(&[Completion { lease: j.lease(), receipt: None }], 5).await.unwrap();
    assert!(r[0].is_ok());
    assert_eq!(s.claim(DEST, "w", 5, 1_000, 6).await.unwrap().len(), 1);
}

async fn empty_batches(b: &mut Backend) {
    assert!(b.store.ingest(&[]).await.unwrap().is_empty());
    assert!(b.store.complete(&[], 0).await.unwrap().is_empty());
}

async fn replay_many_in_one_transaction(b: &mut Backend) {
    let s = &b.store;
    let jobs = (0..5).map(|i| job(&format!("k{i}"), &format!("many-{i}"), 0)).collect();
    s.ingest(&[intake("m1", "e-many", jobs)]).await.unwrap();
    let claimed = s.claim(DEST, "w", 5, 1_000, 100).await.unwrap();
    assert_eq!(claimed.len(), 5);
    for j in &claimed {
        s.dead_letter(j.lease(), "HTTP 400", 200).await.unwrap();
    }
    let mut ids: Vec<i64> = claimed.iter().map(|j| j.id).collect();
    // One id replayed on its own first, and one that never existed: both are skipped.
    s.replay_dead(ids[0], 250).await.unwrap();
    ids.push(i64::MAX);
    let mut rest: Vec<i64> = ids[1..ids.len() - 1].to_vec();
    rest.sort_unstable();
    assert_eq!(s.replay_dead_many(&ids, 300).await.unwrap(), rest, "the ids replayed, ascending");
    assert!(s.list_dead(10).await.unwrap().is_empty());
    for j in &claimed[1..] {
        let r = s.get_job(j.id).await.unwrap().unwrap();
        assert_eq!((r.state, r.next_attempt_at, r.attempts), (JobState::Pending, 300, 1));
        assert_eq!(r.idempotency_key, j.idempotency_key);
    }
    assert!(s.replay_dead_many(&ids, 400).await.unwrap().is_empty());
    assert!(s.replay_dead_many(&[], 400).await.unwrap().is_empty());

    // More ids than one statement's chunk: every one is replayed (a regression: one id per
    // chunk was once lost to mixed `?1` / `?` placeholders).
    let many: Vec<_> = (0..300).map(|i| job(&format!("m{i}"), &format!("bulk-{i}"), 0)).collect();
    s.ingest(&[intake("m2", "e-bulk", many)]).await.unwrap();
    let claimed = s.claim(DEST, "w", 300, 1_000, 500).await.unwrap();
    assert_eq!(claimed.len(), 300);
    for j in &claimed {
        s.dead_letter(j.lease(), "HTTP 400", 600).await.unwrap();
    }
    let ids: Vec<i64> = claimed.iter().map(|j| j.id).collect();
    assert_eq!(s.replay_dead_many(&ids, 700).await.unwrap().len(), 300);
    assert!(s.list_dead(1_000).await.unwrap().is_empty());
}

/// A coalescing job is not inserted while a pending job of the same destination and key waits;
/// once that one is leased, the next change gets a job of its own.
async fn coalescing_jobs_join_a_waiting_one(b: &mut Backend) {
    let s = &b.store;
    let coalesced = |idem: &str| store::NewJob { coalesce: true, ..job("rec-1", idem, 5_000) };
    s.ingest(&[intake("n:1", "e1", vec![coalesced("r-1")])]).await.unwrap();
    // Same batch and a later batch: both join the waiting job; another key does not.
    let out = s
        .ingest(&[
            intake("n:2", "e2", vec![coalesced("r-2")]),
            intake("n:3", "e3", vec![coalesced("r-3"), store::NewJob { coalesce: true, ..job("rec-2", "r-4", 5_000) }]),
        ])
        .await
        .unwrap();
    assert_eq!(out, vec![IntakeOutcome::Accepted; 2], "the events themselves are kept");
    assert_eq!(s.stats(0).await.unwrap().pending, 2);
    assert_eq!(s.stats(0).await.unwrap().events, 3);
    let claimed = s.claim(DEST, "w", 10, 30_000, 5_000).await.unwrap();
    assert_eq!(claimed.iter().map(|j| j.idempotency_key.as_str()).collect::<Vec<_>>(), ["r-1", "r-4"]);
    // rec-1 is being read now: a change after that read starts needs a read of its own.
    s.ingest(&[intake("n:4", "e4", vec![coalesced("r-5")])]).await.unwrap();
    assert_eq!(s.stats(5_000).await.unwrap().pending, 1);
    // A job without the flag is always inserted.
    s.ingest(&[intake("n:5", "e5", vec![job("rec-1", "plain", 5_000)])]).await.unwrap();
    assert_eq!(s.stats(5_000).await.unwrap().pending, 2);
}

/// A batch claim leases each key's due run at once (head and followers, id order), stops at a
/// job not yet due, and leaves keys another worker holds alone.
async fn batch_claim_takes_runs_per_key(b: &mut Backend) {
    let s = &b.store;
    let jobs = vec![
        job("a", "a1", 0),
        job("b", "b1", 0),
        job("a", "a2", 0),
        job("a", "a3", 9_000),
        job("a", "a4", 0),
        job("c", "c1", 0),
        job("c", "c2", 0),
    ];
    s.ingest(&[intake("src:1", "e1", jobs)]).await.unwrap();
    // A released head is claimable again, with its run.
    let first = s.claim(DEST, "other", 1, 30_000, 1_000).await.unwrap();
    assert_eq!(first[0].idempotency_key, "a1");
    s.release(first[0].lease(), 1_000).await.unwrap();
    let held = s.claim_runs(DEST, "other", 10, 100, 30_000, 1_000).await.unwrap();
    let keys: Vec<&str> = held.iter().map(|j| j.idempotency_key.as_str()).collect();
    // a3 is not due: a2 comes along, a3 and a4 wait behind it.
    assert_eq!(keys, ["a1", "b1", "a2", "c1", "c2"]);
    assert!(held.iter().all(|j| j.state == JobState::Leased && j.lease_owner.as_deref() == Some("other")));
    assert!(s.claim_runs(DEST, "w", 10, 100, 30_000, 1_000).await.unwrap().is_empty(), "every key is held");
    for j in &held {
        s.complete(&[Completion { lease: j.lease(), receipt: None }], 2_000).await.unwrap();
    }
    assert!(s.claim_runs(DEST, "w", 10, 100, 30_000, 2_000).await.unwrap().is_empty(), "a3 is not due");
    // `max_jobs` bounds heads and followers together; the cut keeps a prefix of the run.
    let rest = s.claim_runs(DEST, "w", 10, 1, 30_000, 9_000).await.unwrap();
    assert_eq!(rest.iter().map(|j| j.idempotency_key.as_str()).collect::<Vec<_>>(), ["a3"]);
    s.complete(&[Completion { lease: rest[0].lease(), receipt: None }], 9_000).await.unwrap();
    let rest = s.claim_runs(DEST, "w", 10, 100, 30_000, 9_000).await.unwrap();
    assert_eq!(rest.iter().map(|j| j.idempotency_key.as_str()).collect::<Vec<_>>(), ["a4"]);
}

/// A batch whose worker died (head and followers leased, leases expired, never settled) blocks
/// nothing: once the lease expires the whole run is claimed again, in order, and not before.
async fn a_crashed_batch_is_reclaimed_whole_in_order(b: &mut Backend) {
    let s = &b.store;
    let jobs = vec![job("acct-1", "v1", 0), job("acct-1", "v2", 0), job("acct-1", "v3", 0), job("acct-2", "w1", 0)];
    s.ingest(&[intake("src:1", "e1", jobs)]).await.unwrap();
    let mut crashed = s.claim_runs(DEST, "dead-worker", 10, 100, 30_000, 1_000).await.unwrap();
    crashed.sort_by_key(|j| j.id);
    assert_eq!(crashed.len(), 4);
    // The worker dies here: nothing is settled. While its lease lives, nobody takes the runs.
    assert!(s.claim_runs(DEST, "w", 10, 100, 30_000, 30_000).await.unwrap().is_empty());
    assert!(s.claim(DEST, "w", 10, 30_000, 30_000).await.unwrap().is_empty());
    // Past the lease: both runs come back whole, with new lease versions.
    let mut reclaimed = s.claim_runs(DEST, "w", 10, 100, 30_000, 31_001).await.unwrap();
    reclaimed.sort_by_key(|j| j.id);
    let keys: Vec<&str> = reclaimed.iter().map(|j| j.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["v1", "v2", "v3", "w1"]);
    assert!(reclaimed.iter().all(|j| j.lease_owner.as_deref() == Some("w")));
    for (old, new) in crashed.iter().zip(&reclaimed) {
        assert_eq!(new.lease_version, old.lease_version + 1, "{}", new.idempotency_key);
    }
    // The dead worker's settlement is refused (fenced); the new one's is taken.
    let late = s.complete(&[Completion { lease: crashed[0].lease(), receipt: None }], 31_500).await.unwrap();
    assert!(lost(late.into_iter().next().unwrap()));
    let done: Vec<Completion> = reclaimed.iter().map(|j| Completion { lease: j.lease(), receipt: None }).collect();
    assert!(s.complete(&done, 32_000).await.unwrap().iter().all(Result::is_ok));
    let st = s.stats(32_000).await.unwrap();
    assert_eq!((st.pending, st.leased), (0, 0), "{st:?}");

    // A single claim after a crash takes the head alone; the expired followers wait behind it.
    let jobs = vec![job("acct-3", "x1", 0), job("acct-3", "x2", 0)];
    s.ingest(&[intake("src:2", "e2", jobs)]).await.unwrap();
    let crashed = s.claim_runs(DEST, "dead-worker", 10, 100, 1_000, 40_000).await.unwrap();
    assert_eq!(crashed.len(), 2);
    let head = s.claim(DEST, "w", 10, 1_000, 41_001).await.unwrap();
    assert_eq!(head.iter().map(|j| j.idempotency_key.as_str()).collect::<Vec<_>>(), ["x1"]);
    s.complete(&[Completion { lease: head[0].lease(), receipt: None }], 41_100).await.unwrap();
    let next = s.claim(DEST, "w", 10, 1_000, 41_200).await.unwrap();
    assert_eq!(next.iter().map(|j| j.idempotency_key.as_str()).collect::<Vec<_>>(), ["x2"]);
}
