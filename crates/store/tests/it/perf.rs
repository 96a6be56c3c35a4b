//! Batch timings (ignored; run with `cargo test -p dingbridge-store --release -- --ignored
//! --nocapture batch_timings`).

use crate::harness::{intake, job, Backend, Kind, DEST};
use std::time::{Duration, Instant};
use store::Completion;

async fn timings(kind: Kind) {
    let Some(b) = Backend::new(kind).await else { return };
    const BATCH: usize = 256;
    const ROUNDS: usize = 40;
    let (mut ti, mut tc, mut td) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for r in 0..ROUNDS {
        let batch: Vec<_> = (0..BATCH)
            .map(|i| {
                let n = r * BATCH + i;
                intake(
                    &format!("src:{n}"),
                    &format!("e{n}"),
                    vec![job(&format!("k{}", n % 2_000), &format!("i{n}"), 0)],
                )
            })
            .collect();
        let t = Instant::now();
        b.store.ingest(&batch).await.unwrap();
        ti += t.elapsed();
        let t = Instant::now();
        let jobs = b.store.claim(DEST, "w", BATCH, 60_000, 1).await.unwrap();
        tc += t.elapsed();
        assert_eq!(jobs.len(), BATCH);
        let c: Vec<_> = jobs.iter().map(|j| Completion { lease: j.lease(), receipt: Some("m".into()) }).collect();
        let t = Instant::now();
        b.store.complete(&c, 2).await.unwrap();
        td += t.elapsed();
    }
    let per = |d: Duration| d / ROUNDS as u32;
    eprintln!(
        "{kind:?}: per {BATCH}-batch: ingest {:?}, claim {:?}, complete {:?} => {:.0} events/s store-bound",
        per(ti),
        per(tc),
        per(td),
        (BATCH * ROUNDS) as f64 / (ti + tc + td).as_secs_f64()
    );
    b.teardown().await;
}

#[tokio::test]
#[ignore = "timing report"]
async fn batch_timings_sqlite() {
    timings(Kind::Sqlite).await;
}

#[tokio::test]
#[ignore = "timing report"]
async fn batch_timings_postgres() {
    timings(Kind::Postgres).await;
}
