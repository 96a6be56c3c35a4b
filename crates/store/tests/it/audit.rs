//! R16: random tampering with the audit chain (edit, delete, insert, reorder one row, done with
//! raw SQL) is always detected; the 100 000-row verify timing is an ignored [long] check.

use crate::harness::Backend;
use store::{AuditVerification, NewAuditEntry};

crate::contract_tests!(tamper_cases_are_all_detected);

const ROWS: i64 = 24;
const CASES: usize = 1_000;

/// xorshift64*: deterministic, no extra dependency.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Rows of the untouched chain: (seq, at, actor, action, subject, detail, prev_hash, hash).
async fn build_chain(b: &mut Backend) -> Vec<store::AuditEntry> {
    let mut rows = Vec::new();
    for i in 0..ROWS {
        rows.push(
            b.store
                .audit_append(&NewAuditEntry {
                    at: 1_700_000_000_000 + i * 1_000,
                    actor: format!("dingtalk:user{}", i % 5),
                    action: ["approve", "reject", "replay", "config.reload"][(i % 4) as usize].into(),
                    subject: format!("PR-{}", 1000 + i),
                    detail: format!("{{\"amount\":\"{}.00 HKD\"}}", 100 * i),
                })
                .await
                .unwrap(),
        );
    }
    rows
}

fn insert_sql(e: &store::AuditEntry) -> String {
    format!(
        "INSERT INTO audit_log (seq, at, actor, action, subject, detail, prev_hash, hash) \
         VALUES ({}, {}, {}, {}, {}, {}, {}, {});",
        e.seq,
        e.at,
        q(&e.actor),
        q(&e.action),
        q(&e.subject),
        q(&e.detail),
        q(&e.prev_hash),
        q(&e.hash)
    )
}

/// A forged row at `seq` that hashes correctly over `prev_hash` (the strongest insert).
fn forged(seq: i64, prev_hash: &str) -> store::AuditEntry {
    let (at, actor, action, subject, detail) = (1_700_000_000_500, "mallory", "approve", "PR-666", "{}");
    store::AuditEntry {
        seq,
        at,
        actor: actor.into(),
        action: action.into(),
        subject: subject.into(),
        detail: detail.into(),
        prev_hash: prev_hash.into(),
        hash: store::audit_hash(prev_hash, seq, at, actor, action, subject, detail),
    }
}

fn tamper_sql(rng: &mut Rng, chain: &[store::AuditEntry]) -> String {
    let n = chain.len() as i64;
    let k = 1 + rng.below(n as u64) as i64;
    match rng.below(4) {
        0 => {
            let set = match rng.below(7) {
                0 => "at = at + 1".to_owned(),
                1 => "actor = actor || 'x'".to_owned(),
                2 => "action = 'reject'  || action".to_owned(),
                3 => "subject = 'PR-9'".to_owned(),
                4 => "detail = replace(detail, '.00', '.01') || ' '".to_owned(),
                5 => "prev_hash = CASE WHEN substr(prev_hash, 1, 1) = 'f' THEN 'e' ELSE 'f' END \
                      || substr(prev_hash, 2)"
                    .to_owned(),
                _ => format!("hash = {}", q(&store::audit_hash("x", k, 0, "", "", "", ""))),
            };
            format!("UPDATE audit_log SET {set} WHERE seq = {k};")
        }
        1 => format!("DELETE FROM audit_log WHERE seq = {k};"),
        2 => {
            if rng.below(3) == 0 {
                // Append a well-formed row after the last one.
                insert_sql(&forged(n + 1, &chain[(n - 1) as usize].hash))
            } else {
                // Shift rows k.. up by one and slip a well-formed row in at k.
                let prev = if k == 1 { store::ZERO_HASH.to_owned() } else { chain[(k - 2) as usize].hash.clone() };
                format!(
                    "UPDATE audit_log SET seq = -seq WHERE seq >= {k}; \
                     UPDATE audit_log SET seq = 1 - seq WHERE seq < 0; {}",
                    insert_sql(&forged(k, &prev))
                )
            }
        }
        _ => {
            let mut j = 1 + rng.below(n as u64) as i64;
            if j == k {
                j = if k == n { k - 1 } else { k + 1 };
            }
            if rng.below(2) == 0 {
                // Swap two rows' positions (seq values).
                format!(
                    "UPDATE audit_log SET seq = -1 WHERE seq = {k}; \
                     UPDATE audit_log SET seq = {k} WHERE seq = {j}; \
                     UPDATE audit_log SET seq = {j} WHERE seq = -1;"
                )
            } else {
                // Swap two rows' contents but keep seq, prev_hash and hash in place.
                let (a, c) = (&chain[(k - 1) as usize], &chain[(j - 1) as usize]);
                let set = |e: &store::AuditEntry, seq: i64| {
                    format!(
                        "UPDATE audit_log SET at = {}, actor = {}, action = {}, subject = {}, \
                         detail = {} WHERE seq = {seq};",
                        e.at,
                        q(&e.actor),
                        q(&e.action),
                        q(&e.subject),
                        q(&e.detail)
                    )
                };
                format!("{}{}", set(c, k), set(a, j))
            }
        }
    }
}

async fn tamper_cases_are_all_detected(b: &mut Backend) {
    let chain = build_chain(b).await;
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: ROWS as u64 });
    b.exec("CREATE TABLE audit_pristine AS SELECT * FROM audit_log").await;
    let restore = "DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM audit_pristine;";
    let mut rng = Rng::new(0x5eed_a0d1);
    for case in 0..CASES {
        let sql = tamper_sql(&mut rng, &chain);
        b.exec(&format!("BEGIN; {restore} {sql} COMMIT;")).await;
        match b.store.audit_verify().await.unwrap() {
            AuditVerification::Broken { at_seq, reason } => {
                assert!((1..=ROWS + 1).contains(&at_seq), "case {case}: at_seq {at_seq} ({reason})");
            }
            AuditVerification::Intact { .. } => panic!("case {case}: tamper not detected: {sql}"),
        }
    }
    b.exec(&format!("BEGIN; {restore} COMMIT;")).await;
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: ROWS as u64 });
}

/// [long] R16: an untouched chain of 100 000 rows verifies in < 2 s (SQLite).
#[tokio::test]
#[ignore = "long: cargo test -p dingbridge-store -- --ignored"]
async fn sqlite_verify_100k_under_2s() {
    let mut b = Backend::sqlite_in(Some("/dev/shm")).await;
    fill_chain(&mut b, 100_000).await;
    let t = std::time::Instant::now();
    let v = b.store.audit_verify().await.unwrap();
    let took = t.elapsed();
    eprintln!("sqlite: verified 100 000 audit rows in {took:?}");
    assert_eq!(v, AuditVerification::Intact { rows: 100_000 });
    assert!(took < std::time::Duration::from_secs(2), "verify took {took:?}");
    b.teardown().await;
}

/// [long] R16 on Postgres.
#[tokio::test]
#[ignore = "long: cargo test -p dingbridge-store -- --ignored"]
async fn postgres_verify_100k_under_2s() {
    let Some(mut b) = Backend::postgres().await else { return };
    fill_chain(&mut b, 100_000).await;
    let t = std::time::Instant::now();
    let v = b.store.audit_verify().await.unwrap();
    let took = t.elapsed();
    eprintln!("postgres: verified 100 000 audit rows in {took:?}");
    assert_eq!(v, AuditVerification::Intact { rows: 100_000 });
    assert!(took < std::time::Duration::from_secs(2), "verify took {took:?}");
    b.teardown().await;
}

/// Write a valid chain with raw SQL in big transactions (appending 100 000 rows one commit at a
/// time would measure fsync, not the verifier).
async fn fill_chain(b: &mut Backend, n: i64) {
    let mut prev = store::ZERO_HASH.to_owned();
    let mut sql = String::from("BEGIN;");
    for seq in 1..=n {
        let (at, actor, action, subject) = (1_700_000_000_000 + seq, "dingtalk:user1", "approve", format!("PR-{seq}"));
        let detail = format!("{{\"before\":\"pending\",\"after\":\"approved\",\"n\":{seq}}}");
        let hash = store::audit_hash(&prev, seq, at, actor, action, &subject, &detail);
        sql.push_str(&insert_sql(&store::AuditEntry {
            seq,
            at,
            actor: actor.into(),
            action: action.into(),
            subject,
            detail,
            prev_hash: prev.clone(),
            hash: hash.clone(),
        }));
        prev = hash;
        if seq % 5_000 == 0 {
            sql.push_str("COMMIT;");
            b.exec(&sql).await;
            sql = String::from("BEGIN;");
        }
    }
    sql.push_str(&format!("UPDATE audit_head SET seq = {n}, hash = {} WHERE id = 1; COMMIT;", q(&prev)));
    b.exec(&sql).await;
}
