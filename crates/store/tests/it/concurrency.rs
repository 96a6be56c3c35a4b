//! R4-style: two store handles (two gateway processes) claim and complete concurrently on the
//! same database: every job completed exactly once, never two leases on one ordering key at
//! once, per-key order kept, and a stale completion is rejected.

use crate::harness::{intake, job, Backend, DEST};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use store::{Completion, JobState, Store, StoreError};

const JOBS: usize = 2_000;
const KEYS: usize = 100;

#[derive(Default)]
struct Observed {
    /// ordering key -> job currently leased by some claimer.
    held: HashMap<String, i64>,
    /// ordering key -> job ids in the order they were leased.
    order: HashMap<String, Vec<i64>>,
    completions: HashMap<i64, u32>,
    violations: Vec<String>,
}

async fn claimer(store: Arc<dyn Store>, owner: &'static str, obs: Arc<Mutex<Observed>>) -> usize {
    let mut done = 0;
    let mut idle = 0;
    loop {
        let jobs = store.claim(DEST, owner, 8, 600_000, 1_000_000).await.unwrap();
        if jobs.is_empty() {
            idle += 1;
            let remaining = store.stats(1_000_000).await.unwrap();
            if remaining.pending + remaining.leased == 0 || idle > 2_000 {
                return done;
            }
            tokio::task::yield_now().await;
            continue;
        }
        idle = 0;
        {
            let mut o = obs.lock().unwrap();
            for j in &jobs {
                if let Some(other) = o.held.insert(j.ordering_key.clone(), j.id) {
                    o.violations
                        .push(format!("{owner}: key {} leased job {} while {other} held", j.ordering_key, j.id));
                }
                o.order.entry(j.ordering_key.clone()).or_default().push(j.id);
            }
        }
        // Let the other claimer interleave between claim and completion.
        tokio::task::yield_now().await;
        let c: Vec<_> = jobs.iter().map(|j| Completion { lease: j.lease(), receipt: Some(owner.into()) }).collect();
        {
            // Give the keys back before the completion commits (after it, the other claimer may
            // legitimately lease the next job of the key).
            let mut o = obs.lock().unwrap();
            for j in &jobs {
                o.held.remove(&j.ordering_key);
            }
        }
        let results = store.complete(&c, 1_000_001).await.unwrap();
        let mut o = obs.lock().unwrap();
        for (j, r) in jobs.iter().zip(results) {
            match r {
                Ok(()) => {
                    *o.completions.entry(j.id).or_default() += 1;
                    done += 1;
                }
                Err(e) => o.violations.push(format!("{owner}: completion of job {} failed: {e}", j.id)),
            }
        }
    }
}

async fn two_claimers_share_the_work(b: &mut Backend) {
    let other = b.open_again().await;
    // Keys interleaved across events so one key's jobs are spread over many ids.
    let batch: Vec<_> = (0..JOBS)
        .map(|i| {
            intake(&format!("d{i}"), &format!("e{i}"), vec![job(&format!("key{}", i % KEYS), &format!("i{i}"), 0)])
        })
        .collect();
    for chunk in batch.chunks(256) {
        b.store.ingest(chunk).await.unwrap();
    }
    let obs = Arc::new(Mutex::new(Observed::default()));
    let a = tokio::spawn(claimer(b.store.clone(), "gw-a", obs.clone()));
    let c = tokio::spawn(claimer(other.clone(), "gw-b", obs.clone()));
    let (na, nc) = (a.await.unwrap(), c.await.unwrap());
    eprintln!("gw-a completed {na}, gw-b completed {nc}");
    {
        let o = obs.lock().unwrap();
        assert!(o.violations.is_empty(), "{:#?}", &o.violations[..o.violations.len().min(10)]);
        assert_eq!(na + nc, JOBS);
        assert_eq!(o.completions.len(), JOBS);
        assert!(o.completions.values().all(|&n| n == 1));
        for (key, ids) in &o.order {
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "key {key} leased out of order: {ids:?}");
            assert_eq!(ids.len(), JOBS / KEYS);
        }
    }
    let st = b.store.stats(0).await.unwrap();
    assert_eq!((st.done, st.pending, st.leased), (JOBS as u64, 0, 0));

    // Fencing across handles: gw-a's lease expires, gw-b takes the job over, gw-a's late
    // completion is rejected and gw-b's counts.
    b.store.ingest(&[intake("late", "late", vec![job("late", "late-1", 0)])]).await.unwrap();
    let mine = b.store.claim(DEST, "gw-a", 1, 1_000, 2_000_000).await.unwrap().remove(0);
    let theirs = other.claim(DEST, "gw-b", 1, 1_000, 2_001_000).await.unwrap().remove(0);
    assert_eq!((theirs.id, theirs.lease_version), (mine.id, mine.lease_version + 1));
    let r = b.store.complete(&[Completion { lease: mine.lease(), receipt: None }], 2_001_001).await.unwrap();
    assert!(matches!(r[0], Err(StoreError::LeaseLost { .. })));
    let r = other.complete(&[Completion { lease: theirs.lease(), receipt: None }], 2_001_002).await.unwrap();
    assert!(r[0].is_ok());
    assert_eq!(b.store.get_job(mine.id).await.unwrap().unwrap().state, JobState::Done);
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_claimers_share_the_work() {
    let Some(mut b) = Backend::postgres().await else { return };
    two_claimers_share_the_work(&mut b).await;
    b.teardown().await;
}

/// The same on SQLite with two handles on one file (two write pools: exercises busy_timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_claimers_share_the_work() {
    let mut b = Backend::sqlite_in(None).await;
    two_claimers_share_the_work(&mut b).await;
    b.teardown().await;
}
