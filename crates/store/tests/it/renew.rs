//! Lease renewal: work that outlives half its lease extends it, fenced by the lease version, so
//! no other claimer takes a job still being sent, and a holder whose lease was taken learns it.

use crate::harness::{intake, job, Backend, DEST};
use store::{Completion, JobState};

crate::contract_tests!(a_renewed_lease_is_not_reclaimed_and_a_taken_one_cannot_be_renewed);

async fn a_renewed_lease_is_not_reclaimed_and_a_taken_one_cannot_be_renewed(b: &mut Backend) {
    let s = &b.store;
    s.ingest(&[intake("d1", "e1", vec![job("k", "a", 0), job("k", "b", 0)])]).await.unwrap();
    let held = s.claim_runs(DEST, "w1", 1, 8, 1_000, 0).await.unwrap();
    assert_eq!(held.len(), 2, "the head and its follower");
    let leases: Vec<_> = held.iter().map(|j| j.lease()).collect();
    assert_eq!(s.renew(&leases, 1_000, 800).await.unwrap(), [true, true]);
    // Past the first expiry, the renewed leases still hold: no other claimer takes the run.
    assert!(s.claim_runs(DEST, "w2", 1, 8, 1_000, 1_500).await.unwrap().is_empty());
    let job = s.get_job(held[0].id).await.unwrap().unwrap();
    assert_eq!((job.lease_expires_at, job.lease_version), (Some(1_800), held[0].lease_version));
    // Once it lapses, another worker reclaims the whole run; the old holder's renewal is refused.
    let taken = s.claim_runs(DEST, "w2", 1, 8, 1_000, 1_800).await.unwrap();
    assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), held.iter().map(|j| j.id).collect::<Vec<_>>());
    assert_eq!(s.renew(&leases, 1_000, 1_900).await.unwrap(), [false, false]);
    // The new holder's renewal works, and a settled job's lease renews no more.
    let new_leases: Vec<_> = taken.iter().map(|j| j.lease()).collect();
    s.complete(&[Completion { lease: new_leases[0], receipt: None }], 2_000).await.unwrap();
    assert_eq!(s.renew(&new_leases, 1_000, 2_100).await.unwrap(), [false, true]);
    assert_eq!(s.get_job(taken[0].id).await.unwrap().unwrap().state, JobState::Done);
    assert!(s.renew(&[], 1_000, 2_100).await.unwrap().is_empty());
}
