//! R15: the outbox as a proptest state machine against an in-memory model, 1 000 cases per
//! backend. Ops: ingest (with duplicates), claim, batch claim (heads and their runs), complete
//! (fresh or stale lease), retry_later, dead_letter, release, lease expiry (the fake clock
//! advances; a worker that never settles its claim is a crash), replay, reopen.

use crate::harness::{Backend, Kind};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use store::{Completion, Intake, IntakeOutcome, JobState, Lease, NewJob, StoreError};

const LEASE_MS: i64 = 100;
const KEYS: u8 = 3;
const EVENT: &str = "ev";

#[derive(Debug, Clone)]
enum Op {
    Ingest { keys: Vec<u8>, dup: Option<usize>, delay: u8 },
    Claim { dest: u8, limit: u8 },
    ClaimRuns { dest: u8, heads: u8, max: u8 },
    Complete { pick: usize },
    Retry { pick: usize, delay: i16 },
    Dead { pick: usize },
    Release { pick: usize },
    Advance { ms: u16 },
    Replay { pick: usize },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::collection::vec(0..KEYS, 0..3), proptest::option::weighted(0.2, any::<usize>()), 0..60u8)
            .prop_map(|(keys, dup, delay)| Op::Ingest { keys, dup, delay }),
        4 => (0..2u8, 1..4u8).prop_map(|(dest, limit)| Op::Claim { dest, limit }),
        3 => (0..2u8, 1..4u8, 1..7u8).prop_map(|(dest, heads, max)| Op::ClaimRuns { dest, heads, max }),
        3 => any::<usize>().prop_map(|pick| Op::Complete { pick }),
        2 => (any::<usize>(), -50..200i16).prop_map(|(pick, delay)| Op::Retry { pick, delay }),
        1 => any::<usize>().prop_map(|pick| Op::Dead { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        2 => (0..250u16).prop_map(|ms| Op::Advance { ms }),
        1 => any::<usize>().prop_map(|pick| Op::Replay { pick }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct MJob {
    id: i64,
    key: String,
    dest: String,
    state: JobState,
    attempts: u32,
    next_attempt_at: i64,
    lease_expires_at: Option<i64>,
    version: i64,
    dead_reason: Option<String>,
}

#[derive(Default)]
struct Model {
    /// idempotency key -> job
    jobs: BTreeMap<String, MJob>,
    dedups: Vec<String>,
    leases: Vec<Lease>,
    now: i64,
    n: u64,
}

impl Model {
    fn by_id(&mut self, id: i64) -> Option<&mut MJob> {
        self.jobs.values_mut().find(|j| j.id == id)
    }

    fn holds(&self, l: Lease) -> bool {
        self.jobs.values().any(|j| j.id == l.job_id && j.state == JobState::Leased && j.version == l.version)
    }

    fn claimable(&self, dest: &str) -> Vec<(i64, i64)> {
        let mut c: Vec<(i64, i64)> = self
            .jobs
            .values()
            .filter(|j| j.dest == dest)
            .filter_map(|j| {
                let due = match j.state {
                    JobState::Pending => j.next_attempt_at,
                    JobState::Leased => j.lease_expires_at.expect("leased job has an expiry"),
                    _ => return None,
                };
                // Held back by an earlier job of the key still to be done, or by a live lease on
                // the key; an expired lease holds nothing back.
                let blocked = self.jobs.values().any(|b| {
                    b.key == j.key
                        && b.id != j.id
                        && matches!(b.state, JobState::Pending | JobState::Leased)
                        && (b.id < j.id
                            || (b.state == JobState::Leased && b.lease_expires_at.is_some_and(|t| t > self.now)))
                });
                (due <= self.now && !blocked).then_some((due, j.id))
            })
            .collect();
        c.sort();
        c
    }
}

impl Model {
    /// Records jobs the store just leased to us, checking each lease version moved on by one.
    fn leased(&mut self, got: Vec<store::Job>, ctx: &str) {
        let now = self.now;
        for j in got {
            let mj = self.by_id(j.id).expect("model job");
            mj.state = JobState::Leased;
            mj.lease_expires_at = Some(now + LEASE_MS);
            mj.version += 1;
            assert_eq!(j.lease_version, mj.version, "{ctx}");
            self.leases.push(j.lease());
        }
    }

    /// What a batch claim takes after its `heads`: each head key's due pending jobs and jobs
    /// with expired leases, not stuck behind an earlier pending job not due yet, in id order,
    /// `room` at most.
    fn followers(&self, dest: &str, heads: &[i64], room: usize) -> Vec<i64> {
        let keys: Vec<&str> = self.jobs.values().filter(|j| heads.contains(&j.id)).map(|j| j.key.as_str()).collect();
        let mut f: Vec<i64> = self
            .jobs
            .values()
            .filter(|j| j.dest == dest && keys.contains(&j.key.as_str()) && !heads.contains(&j.id))
            .filter(|j| match j.state {
                JobState::Pending => j.next_attempt_at <= self.now,
                JobState::Leased => j.lease_expires_at.is_some_and(|t| t <= self.now),
                _ => false,
            })
            .filter(|j| {
                !self.jobs.values().any(|b| {
                    b.key == j.key && b.state == JobState::Pending && b.id < j.id && b.next_attempt_at > self.now
                })
            })
            .map(|j| j.id)
            .collect();
        f.sort();
        f.truncate(room);
        f
    }
}

fn lost(r: &Result<(), StoreError>) -> bool {
    matches!(r, Err(StoreError::LeaseLost { .. }))
}

async fn run_case(b: &mut Backend, ops: &[Op]) {
    b.reset().await;
    let mut m = Model { now: 10_000, ..Model::default() };
    for (step, op) in ops.iter().enumerate() {
        let ctx = format!("step {step}: {op:?}");
        let now = m.now;
        match op.clone() {
            Op::Ingest { keys, dup, delay } => {
                m.n += 1;
                let dedup = match dup {
                    Some(i) if !m.dedups.is_empty() => m.dedups[i % m.dedups.len()].clone(),
                    _ => format!("dk{}", m.n),
                };
                let is_dup = m.dedups.contains(&dedup);
                let jobs: Vec<NewJob> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| NewJob {
                        flow: "f".into(),
                        destination: format!("d{}", k % 2),
                        ordering_key: format!("k{k}"),
                        idempotency_key: format!("idem{}-{i}", m.n),
                        payload: "{}".into(),
                        next_attempt_at: now + i64::from(delay),
                        coalesce: false,
                    })
                    .collect();
                let it = Intake {
                    dedup_key: dedup.clone(),
                    event_id: EVENT.into(),
                    source: "s".into(),
                    received_at: now,
                    event_json: "{}".into(),
                    jobs: jobs.clone(),
                    dead_letter: None,
                };
                let out = b.store.ingest(&[it]).await.unwrap();
                if is_dup {
                    assert_eq!(out, vec![IntakeOutcome::Duplicate], "{ctx}");
                } else {
                    assert_eq!(out, vec![IntakeOutcome::Accepted], "{ctx}");
                    m.dedups.push(dedup);
                    let stored = b.store.jobs_for_event(EVENT).await.unwrap();
                    for j in jobs {
                        let s = stored.iter().find(|s| s.idempotency_key == j.idempotency_key).expect("ingested job");
                        m.jobs.insert(
                            j.idempotency_key.clone(),
                            MJob {
                                id: s.id,
                                key: j.ordering_key,
                                dest: j.destination,
                                state: JobState::Pending,
                                attempts: 0,
                                next_attempt_at: j.next_attempt_at,
                                lease_expires_at: None,
                                version: 0,
                                dead_reason: None,
                            },
                        );
                    }
                }
            }
            Op::Claim { dest, limit } => {
                let dest = format!("d{dest}");
                let mut want: Vec<i64> =
                    m.claimable(&dest).into_iter().take(usize::from(limit)).map(|(_, id)| id).collect();
                let got = b.store.claim(&dest, "w", usize::from(limit), LEASE_MS, now).await.unwrap();
                let got_ids: Vec<i64> = got.iter().map(|j| j.id).collect();
                want.sort();
                assert_eq!(got_ids, want, "{ctx}");
                m.leased(got, &ctx);
            }
            Op::ClaimRuns { dest, heads, max } => {
                let dest = format!("d{dest}");
                let limit = usize::from(heads.min(max));
                let head_ids: Vec<i64> = m.claimable(&dest).into_iter().take(limit).map(|(_, id)| id).collect();
                // The heads are leased before their followers are picked (their live leases keep
                // them out of the runs).
                for id in &head_ids {
                    let mj = m.by_id(*id).expect("model job");
                    mj.state = JobState::Leased;
                    mj.lease_expires_at = Some(now + LEASE_MS);
                }
                let room = usize::from(max).saturating_sub(head_ids.len());
                let mut want = head_ids.clone();
                want.extend(m.followers(&dest, &head_ids, room));
                want.sort();
                let got =
                    b.store.claim_runs(&dest, "w", usize::from(heads), usize::from(max), LEASE_MS, now).await.unwrap();
                let got_ids: Vec<i64> = got.iter().map(|j| j.id).collect();
                assert_eq!(got_ids, want, "{ctx}");
                m.leased(got, &ctx);
            }
            Op::Complete { pick } | Op::Retry { pick, .. } | Op::Dead { pick } | Op::Release { pick }
                if m.leases.is_empty() =>
            {
                let _ = pick;
            }
            Op::Complete { pick } => {
                let l = m.leases[pick % m.leases.len()];
                let ok = m.holds(l);
                let r = b.store.complete(&[Completion { lease: l, receipt: None }], now).await.unwrap();
                assert_eq!(r.len(), 1);
                assert!(if ok { r[0].is_ok() } else { lost(&r[0]) }, "{ctx}: {:?}", r[0]);
                if ok {
                    let j = m.by_id(l.job_id).expect("model job");
                    j.state = JobState::Done;
                    j.lease_expires_at = None;
                }
            }
            Op::Retry { pick, delay } => {
                let l = m.leases[pick % m.leases.len()];
                let ok = m.holds(l);
                let r = b.store.retry_later(l, now + i64::from(delay), "503", now).await;
                assert!(if ok { r.is_ok() } else { lost(&r) }, "{ctx}: {r:?}");
                if ok {
                    let j = m.by_id(l.job_id).expect("model job");
                    j.state = JobState::Pending;
                    j.attempts += 1;
                    j.next_attempt_at = (now + i64::from(delay)).max(now);
                    j.lease_expires_at = None;
                }
            }
            Op::Dead { pick } => {
                let l = m.leases[pick % m.leases.len()];
                let ok = m.holds(l);
                let reason = format!("reason {step}");
                let r = b.store.dead_letter(l, &reason, now).await;
                assert!(if ok { r.is_ok() } else { lost(&r) }, "{ctx}: {r:?}");
                if ok {
                    let j = m.by_id(l.job_id).expect("model job");
                    j.state = JobState::Dead;
                    j.attempts += 1;
                    j.lease_expires_at = None;
                    j.dead_reason = Some(reason);
                }
            }
            Op::Release { pick } => {
                let l = m.leases[pick % m.leases.len()];
                let ok = m.holds(l);
                let r = b.store.release(l, now).await;
                assert!(if ok { r.is_ok() } else { lost(&r) }, "{ctx}: {r:?}");
                if ok {
                    let j = m.by_id(l.job_id).expect("model job");
                    j.state = JobState::Pending;
                    j.lease_expires_at = None;
                }
            }
            Op::Advance { ms } => m.now += i64::from(ms),
            Op::Replay { pick } => {
                let all: Vec<(i64, bool)> = m.jobs.values().map(|j| (j.id, j.state == JobState::Dead)).collect();
                if all.is_empty() {
                    continue;
                }
                let (id, dead) = all[pick % all.len()];
                let r = b.store.replay_dead(id, now).await;
                if dead {
                    assert!(r.is_ok(), "{ctx}: {r:?}");
                    let j = m.by_id(id).expect("model job");
                    j.state = JobState::Pending;
                    j.next_attempt_at = now;
                    j.dead_reason = None;
                } else {
                    assert!(matches!(r, Err(StoreError::NotFound { .. })), "{ctx}: {r:?}");
                }
            }
            Op::Reopen => b.reopen().await,
        }
        check(b, &m, &ctx).await;
    }
}

async fn check(b: &Backend, m: &Model, ctx: &str) {
    let stored = b.store.jobs_for_event(EVENT).await.unwrap();
    assert_eq!(stored.len(), m.jobs.len(), "{ctx}");
    let dead: HashMap<i64, String> = b
        .store
        .list_dead(10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.job_id.expect("job dead letter"), d.reason))
        .collect();
    let mut leased_keys = HashMap::new();
    for s in &stored {
        let mj = m.jobs.get(&s.idempotency_key).unwrap_or_else(|| panic!("{ctx}: unknown job {s:?}"));
        // Exactly one state, the model's; the idempotency key never changes (replay included).
        assert_eq!(s.id, mj.id, "{ctx}");
        assert_eq!(s.state, mj.state, "{ctx}: job {}", s.id);
        assert_eq!(s.attempts, mj.attempts, "{ctx}: attempts of job {}", s.id);
        assert_eq!(s.lease_version, mj.version, "{ctx}");
        assert_eq!(s.next_attempt_at, mj.next_attempt_at, "{ctx}");
        assert_eq!(s.ordering_key, mj.key, "{ctx}");
        match s.state {
            JobState::Leased => {
                assert_eq!(s.lease_expires_at, mj.lease_expires_at, "{ctx}");
                // One claim at a time works on a key: every live lease of a key is the same
                // claim's (a batch leases a run together; expired leases are anyone's to take).
                let expiry = s.lease_expires_at.expect("leased job has an expiry");
                if expiry > m.now {
                    if let Some((other, at)) = leased_keys.insert(s.ordering_key.clone(), (s.id, expiry)) {
                        assert_eq!(
                            at, expiry,
                            "{ctx}: key {} has live leases of two claims: {other} and {}",
                            s.ordering_key, s.id
                        );
                    }
                }
            }
            JobState::Pending => {
                assert_eq!(s.lease_owner, None, "{ctx}");
                if s.attempts > 0 {
                    // After a failure the next attempt was never scheduled in the past.
                    assert!(s.last_error.is_some(), "{ctx}");
                }
            }
            JobState::Dead => {
                let reason = dead.get(&s.id).unwrap_or_else(|| panic!("{ctx}: dead job {} has no dead letter", s.id));
                assert_eq!(Some(reason), mj.dead_reason.as_ref(), "{ctx}");
            }
            JobState::Done => {}
        }
        if s.state != JobState::Dead {
            assert!(!dead.contains_key(&s.id), "{ctx}: job {} not dead but has a dead letter", s.id);
        }
    }
}

fn run(kind: Kind) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let backend = match kind {
        Kind::Sqlite => Some(rt.block_on(Backend::sqlite_in(Some("/dev/shm")))),
        Kind::Postgres => rt.block_on(Backend::postgres()),
    };
    let Some(backend) = backend else { return };
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let cell = RefCell::new(backend);
    let started = std::time::Instant::now();
    let result = runner.run(&proptest::collection::vec(op(), 1..25), |ops| {
        rt.block_on(run_case(&mut cell.borrow_mut(), &ops));
        Ok(())
    });
    eprintln!("{kind:?}: {cases} model cases in {:?}", started.elapsed());
    rt.block_on(cell.into_inner().teardown());
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn sqlite_outbox_model() {
    run(Kind::Sqlite);
}

#[test]
fn postgres_outbox_model() {
    run(Kind::Postgres);
}
