//! R16: random tampering with the keyed audit chain (edit, delete, insert, reorder one row, done
//! with raw SQL) is always detected, and so is an attacker who rewrites rows and hashes the chain
//! again with plain SHA-256 or with a key of their own; a wrong key is told apart from tampering;
//! an anchor catches the removal of the last rows. The 100 000-row verify timing is an ignored
//! [long] check.

use crate::harness::{other_key, test_key, Backend};
use store::{AnchorCheck, AuditEntry, AuditHead, AuditKey, AuditVerification, NewAuditEntry, StoreError};

crate::contract_tests!(
    tamper_cases_are_all_detected,
    rewritten_and_rehashed_chains_are_detected,
    a_wrong_key_is_told_apart_from_tampering,
    an_unkeyed_chain_stays_unkeyed,
    the_gateway_binds_its_key_before_the_first_row,
    many_rows_append_in_order_and_the_head_follows,
    an_anchor_catches_a_truncated_chain,
    admin_rows_name_the_action_and_the_id,
);

const ROWS: i64 = 24;
const CASES: usize = 1_000;
/// Rewrite cases per backend: each rewrites the whole table, so fewer than the row-level cases.
const REWRITES: usize = 400;

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

fn entry(i: i64) -> NewAuditEntry {
    NewAuditEntry {
        at: 1_700_000_000_000 + i * 1_000,
        actor: format!("dingtalk:user{}", i % 5),
        action: ["approve", "reject", "replay", "config.reload"][(i % 4) as usize].into(),
        subject: format!("PR-{}", 1000 + i),
        detail: format!("{{\"amount\":\"{}.00 HKD\"}}", 100 * i),
    }
}

/// Rows of the untouched chain, appended one at a time through the store.
async fn build_chain(b: &mut Backend) -> Vec<AuditEntry> {
    let mut rows = Vec::new();
    for i in 0..ROWS {
        rows.push(b.store.audit_append(&entry(i)).await.unwrap());
    }
    rows
}

fn insert_sql(e: &AuditEntry) -> String {
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

/// A forged row at `seq` over `prev_hash`, hashed as well as someone without the audit key can:
/// with plain SHA-256 or a key of their own.
fn forged(seq: i64, prev_hash: &str, key: Option<&AuditKey>) -> AuditEntry {
    let mut e = AuditEntry {
        seq,
        at: 1_700_000_000_500,
        actor: "mallory".into(),
        action: "approve".into(),
        subject: "PR-666".into(),
        detail: "{}".into(),
        prev_hash: prev_hash.into(),
        hash: String::new(),
    };
    e.hash = e.chain_hash(key);
    e
}

/// The keys an attacker may hash with: none (plain SHA-256) or their own.
fn attacker_key(rng: &mut Rng) -> Option<AuditKey> {
    (rng.below(2) == 0).then(other_key)
}

fn tamper_sql(rng: &mut Rng, chain: &[AuditEntry]) -> String {
    let n = chain.len() as i64;
    let k = 1 + rng.below(n as u64) as i64;
    let attacker = attacker_key(rng);
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
                // The row's hash recomputed over its own (unchanged) contents without the key.
                _ => format!("hash = {}", q(&chain[(k - 1) as usize].chain_hash(attacker.as_ref()))),
            };
            format!("UPDATE audit_log SET {set} WHERE seq = {k};")
        }
        1 => format!("DELETE FROM audit_log WHERE seq = {k};"),
        2 => {
            if rng.below(3) == 0 {
                // Append a well-formed row after the last one.
                insert_sql(&forged(n + 1, &chain[(n - 1) as usize].hash, attacker.as_ref()))
            } else {
                // Shift rows k.. up by one and slip a well-formed row in at k.
                let prev = if k == 1 { store::ZERO_HASH.to_owned() } else { chain[(k - 2) as usize].hash.clone() };
                format!(
                    "UPDATE audit_log SET seq = -seq WHERE seq >= {k}; \
                     UPDATE audit_log SET seq = 1 - seq WHERE seq < 0; {}",
                    insert_sql(&forged(k, &prev, attacker.as_ref()))
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
                let set = |e: &AuditEntry, seq: i64| {
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

const RESTORE: &str = "DELETE FROM audit_log; INSERT INTO audit_log SELECT * FROM audit_pristine;";

async fn tamper_cases_are_all_detected(b: &mut Backend) {
    let chain = build_chain(b).await;
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: ROWS as u64 });
    b.exec("CREATE TABLE audit_pristine AS SELECT * FROM audit_log").await;
    let mut rng = Rng::new(0x5eed_a0d1);
    for case in 0..CASES {
        let sql = tamper_sql(&mut rng, &chain);
        b.exec(&format!("BEGIN; {RESTORE} {sql} COMMIT;")).await;
        match b.store.audit_verify().await.unwrap() {
            AuditVerification::Broken { at_seq, reason } => {
                assert!((1..=ROWS + 1).contains(&at_seq), "case {case}: at_seq {at_seq} ({reason})");
            }
            other => panic!("case {case}: tamper not detected ({other:?}): {sql}"),
        }
    }
    b.exec(&format!("BEGIN; {RESTORE} COMMIT;")).await;
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: ROWS as u64 });
}

/// One rewrite of the chain by someone who can write to the database but has no audit key.
struct Rewrite {
    /// The rows as the attacker leaves them.
    rows: Vec<AuditEntry>,
    /// The first seq whose row differs from the original chain (`None`: only rows were removed
    /// from the end).
    first_changed: Option<i64>,
    /// The head's key id as the attacker leaves it.
    key_id: Option<String>,
    /// Whether the head still names the real key.
    kept_key_id: bool,
}

fn rewrite(rng: &mut Rng, chain: &[AuditEntry], real: &AuditKey) -> Rewrite {
    let n = chain.len();
    let attacker = attacker_key(rng);
    let mut rows: Vec<AuditEntry> = chain.to_vec();
    // The index (0-based) from which rows are renumbered and hashed again.
    let from = match rng.below(5) {
        0 => {
            // Edit one field of one row.
            let i = rng.below(n as u64) as usize;
            let r = &mut rows[i];
            match rng.below(5) {
                0 => r.at += 1,
                1 => r.actor = "mallory".into(),
                2 => r.action = "reject".into(),
                3 => r.subject = "PR-9".into(),
                _ => r.detail = r.detail.replace(".00", ".01"),
            }
            i
        }
        1 => {
            // Remove one row (the last one too: a plain truncation).
            let i = rng.below(n as u64) as usize;
            rows.remove(i);
            i
        }
        2 => {
            // Slip a row in (after the last one too).
            let i = rng.below(n as u64 + 1) as usize;
            rows.insert(i, forged(0, "", None));
            i
        }
        3 => {
            // Move one row elsewhere.
            let (i, j) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
            let j = if i == j { (j + 1) % n } else { j };
            let moved = rows.remove(i);
            rows.insert(j, moved);
            i.min(j)
        }
        _ => 0, // Hash the untouched rows again from the first one: a re-keyed copy.
    };
    // Renumber and hash again from `from` on, as the store would have.
    for i in from..rows.len() {
        let prev = if i == 0 { store::ZERO_HASH.to_owned() } else { rows[i - 1].hash.clone() };
        let r = &mut rows[i];
        r.seq = i as i64 + 1;
        r.prev_hash = prev;
        r.hash = r.chain_hash(attacker.as_ref());
    }
    let first_changed = rows.iter().zip(chain).find(|(a, b)| a != b).map(|(a, _)| a.seq).or_else(|| {
        // Same prefix: a row was added at the end, or rows removed from it.
        (rows.len() > chain.len()).then_some(chain.len() as i64 + 1)
    });
    let kept_key_id = rng.below(2) == 0;
    let key_id = if kept_key_id { Some(real.id().to_owned()) } else { attacker.as_ref().map(|k| k.id().to_owned()) };
    Rewrite { rows, first_changed, key_id, kept_key_id }
}

fn rewrite_sql(w: &Rewrite) -> String {
    let mut sql = String::from("BEGIN; DELETE FROM audit_log; ");
    for r in &w.rows {
        sql.push_str(&insert_sql(r));
    }
    let (seq, hash) = w.rows.last().map_or((0, store::ZERO_HASH.to_owned()), |r| (r.seq, r.hash.clone()));
    let key_id = w.key_id.as_deref().map_or("NULL".to_owned(), q);
    sql.push_str(&format!(
        "UPDATE audit_head SET seq = {seq}, hash = {}, key_id = {key_id} WHERE id = 1; COMMIT;",
        q(&hash)
    ));
    sql
}

async fn rewritten_and_rehashed_chains_are_detected(b: &mut Backend) {
    let real = b.audit_key.clone().expect("the suite's stores are keyed");
    let chain = build_chain(b).await;
    let anchor = b.store.audit_head().await.unwrap();
    let original = rewrite_sql(&Rewrite {
        rows: chain.clone(),
        first_changed: None,
        key_id: Some(real.id().to_owned()),
        kept_key_id: true,
    });
    let mut rng = Rng::new(0x0bad_c0de);
    let (mut truncations, mut wrong_keys, mut broken) = (0, 0, 0);
    for case in 0..REWRITES {
        let w = rewrite(&mut rng, &chain, &real);
        b.exec(&rewrite_sql(&w)).await;
        let verdict = b.store.audit_verify().await.unwrap();
        let held = anchor.check_anchor(b.store.as_ref()).await.unwrap();
        match (&verdict, w.first_changed) {
            // Rows removed from the end and the head moved back: the chain alone is intact, and
            // only the anchor kept elsewhere shows it.
            (AuditVerification::Intact { .. }, None) if w.kept_key_id => {
                assert!(matches!(held, AnchorCheck::Lost { .. }), "case {case}: truncation missed by the anchor");
                truncations += 1;
            }
            (AuditVerification::Broken { at_seq, .. }, Some(first)) if w.kept_key_id => {
                assert_eq!(*at_seq, first, "case {case}: {verdict:?}");
                broken += 1;
            }
            (AuditVerification::WrongKey { chain_key_id, given_key_id }, _) if !w.kept_key_id => {
                assert_eq!(chain_key_id, &w.key_id, "case {case}");
                assert_eq!(given_key_id.as_deref(), Some(real.id()), "case {case}");
                wrong_keys += 1;
            }
            _ => panic!(
                "case {case}: rewrite not detected as expected: {verdict:?} (first changed {:?})",
                w.first_changed
            ),
        }
        // Whatever the verdict, a rewrite that touched the anchored row or before loses it.
        if w.first_changed.is_some_and(|first| first <= anchor.seq) || !w.kept_key_id {
            assert!(matches!(held, AnchorCheck::Lost { .. }), "case {case}: anchor still held: {held:?}");
        }
    }
    assert!(truncations > 0 && wrong_keys > 0 && broken > 0, "{truncations} {wrong_keys} {broken}");
    b.exec(&original).await;
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: ROWS as u64 });
    assert_eq!(anchor.check_anchor(b.store.as_ref()).await.unwrap(), AnchorCheck::Held);
}

async fn a_wrong_key_is_told_apart_from_tampering(b: &mut Backend) {
    let real = b.audit_key.clone().expect("keyed");
    let chain = build_chain(b).await;
    let wrong = other_key();
    let with_wrong = b.open_with_key(Some(wrong.clone())).await;
    assert_eq!(
        with_wrong.audit_verify().await.unwrap(),
        AuditVerification::WrongKey { chain_key_id: Some(real.id().into()), given_key_id: Some(wrong.id().into()) }
    );
    let without = b.open_with_key(None).await;
    assert_eq!(
        without.audit_verify().await.unwrap(),
        AuditVerification::WrongKey { chain_key_id: Some(real.id().into()), given_key_id: None }
    );
    // Neither can append: nothing is written and the chain stays intact.
    for (handle, given) in [(&with_wrong, Some(wrong.id())), (&without, None)] {
        match handle.audit_append(&entry(99)).await {
            Err(StoreError::AuditKeyMismatch { chain, given: g, rows }) => {
                assert_eq!((chain.as_deref(), g.as_deref(), rows), (Some(real.id()), given, ROWS));
            }
            other => panic!("appended with the wrong key: {other:?}"),
        }
        assert!(matches!(handle.audit_bind_key().await, Err(StoreError::AuditKeyMismatch { .. })));
    }
    let err = with_wrong.audit_append(&entry(99)).await.unwrap_err();
    assert!(err.to_string().starts_with("wrong audit key"), "{err}");
    let head = b.store.audit_head().await.unwrap();
    assert_eq!(head.seq, ROWS);
    assert_eq!(head.hash, chain[chain.len() - 1].hash);
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: ROWS as u64 });
    with_wrong.close().await;
    without.close().await;
}

async fn an_unkeyed_chain_stays_unkeyed(b: &mut Backend) {
    // A store written without a key (a gateway without `[audit] key`, or rows from before keys).
    let unkeyed = b.open_with_key(None).await;
    for i in 0..3 {
        let e = unkeyed.audit_append(&entry(i)).await.unwrap();
        assert_eq!(e.hash, e.chain_hash(None));
    }
    assert_eq!(unkeyed.audit_verify().await.unwrap(), AuditVerification::Intact { rows: 3 });
    assert_eq!(unkeyed.audit_head().await.unwrap().key_id, None);
    // A keyed handle can neither verify nor continue it, nor bind its key to it.
    let real = test_key();
    assert_eq!(
        b.store.audit_verify().await.unwrap(),
        AuditVerification::WrongKey { chain_key_id: None, given_key_id: Some(real.id().into()) }
    );
    assert!(matches!(b.store.audit_append(&entry(3)).await, Err(StoreError::AuditKeyMismatch { rows: 3, .. })));
    assert!(matches!(b.store.audit_bind_key().await, Err(StoreError::AuditKeyMismatch { .. })));
    assert_eq!(unkeyed.audit_verify().await.unwrap(), AuditVerification::Intact { rows: 3 });
    unkeyed.close().await;
}

async fn the_gateway_binds_its_key_before_the_first_row(b: &mut Backend) {
    let real = test_key();
    let fresh = AuditHead { seq: 0, hash: store::ZERO_HASH.into(), at: None, key_id: None };
    assert_eq!(b.store.audit_head().await.unwrap(), fresh);
    let bound = b.store.audit_bind_key().await.unwrap();
    assert_eq!(bound, AuditHead { key_id: Some(real.id().into()), ..fresh.clone() });
    assert_eq!(b.store.audit_bind_key().await.unwrap(), bound, "binding twice changes nothing");
    // A writer without the key can no longer start the chain unkeyed.
    let unkeyed = b.open_with_key(None).await;
    assert!(matches!(unkeyed.audit_append(&entry(0)).await, Err(StoreError::AuditKeyMismatch { rows: 0, .. })));
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: 0 });
    // Without a key, binding only checks.
    let other = b.open_with_key(None).await;
    b.exec("UPDATE audit_head SET key_id = NULL WHERE id = 1").await;
    assert_eq!(other.audit_bind_key().await.unwrap(), fresh);
    unkeyed.close().await;
    other.close().await;
}

async fn many_rows_append_in_order_and_the_head_follows(b: &mut Backend) {
    let key = b.audit_key.clone();
    let first = b.store.audit_append(&entry(0)).await.unwrap();
    let batch: Vec<NewAuditEntry> = (1..300).map(entry).collect();
    let rows = b.store.audit_append_many(&batch).await.unwrap();
    assert_eq!(rows.len(), 299);
    let mut prev = first.hash.clone();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.seq, i as i64 + 2);
        assert_eq!((r.at, &r.subject), (batch[i].at, &batch[i].subject));
        assert_eq!(r.prev_hash, prev);
        assert_eq!(r.hash, r.chain_hash(key.as_ref()));
        prev = r.hash.clone();
    }
    assert!(b.store.audit_append_many(&[]).await.unwrap().is_empty());
    let head = b.store.audit_head().await.unwrap();
    let last = &rows[rows.len() - 1];
    assert_eq!(
        head,
        AuditHead { seq: 300, hash: last.hash.clone(), at: Some(last.at), key_id: Some(test_key().id().into()) }
    );
    assert_eq!(b.store.audit_list(i64::MIN, 0, 1_000).await.unwrap().len(), 300);
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: 300 });
}

async fn an_anchor_catches_a_truncated_chain(b: &mut Backend) {
    let chain = build_chain(b).await;
    let empty = AuditHead { seq: 0, hash: store::ZERO_HASH.into(), at: None, key_id: None };
    assert_eq!(empty.check_anchor(b.store.as_ref()).await.unwrap(), AnchorCheck::Held);
    let anchor = b.store.audit_head().await.unwrap();
    assert_eq!(anchor.at, Some(chain[chain.len() - 1].at));
    assert_eq!(anchor.check_anchor(b.store.as_ref()).await.unwrap(), AnchorCheck::Held);
    // Later rows do not disturb an earlier anchor.
    b.store.audit_append(&entry(ROWS)).await.unwrap();
    assert_eq!(anchor.check_anchor(b.store.as_ref()).await.unwrap(), AnchorCheck::Held);
    // The last three rows removed and the head moved back: the chain verifies, the anchor fails.
    let keep = &chain[(ROWS - 3) as usize];
    b.exec(&format!(
        "DELETE FROM audit_log WHERE seq > {}; UPDATE audit_head SET seq = {}, hash = {} WHERE id = 1;",
        keep.seq,
        keep.seq,
        q(&keep.hash)
    ))
    .await;
    assert_eq!(b.store.audit_verify().await.unwrap(), AuditVerification::Intact { rows: keep.seq as u64 });
    match anchor.check_anchor(b.store.as_ref()).await.unwrap() {
        AnchorCheck::Lost { reason } => assert!(reason.contains("rows were removed"), "{reason}"),
        AnchorCheck::Held => panic!("truncation not caught"),
    }
    // An anchor of a row that no longer matches.
    let mut stale = anchor.clone();
    stale.seq = 5;
    assert!(matches!(stale.check_anchor(b.store.as_ref()).await.unwrap(), AnchorCheck::Lost { .. }));
    stale.hash = chain[4].hash.clone();
    stale.at = Some(chain[4].at);
    assert_eq!(stale.check_anchor(b.store.as_ref()).await.unwrap(), AnchorCheck::Held);
}

async fn admin_rows_name_the_action_and_the_id(b: &mut Backend) {
    let rows = b
        .store
        .audit_append_many(&[NewAuditEntry::dlq_replayed("cli", 42, 5), NewAuditEntry::dlq_dropped("admin-api", 7, 6)])
        .await
        .unwrap();
    let shown: Vec<_> = rows.iter().map(|r| (r.actor.as_str(), r.action.as_str(), r.subject.as_str())).collect();
    assert_eq!(shown, [("cli", "dlq.replayed", "42"), ("admin-api", "dlq.dropped", "7")]);
    let detail: serde_json::Value = serde_json::from_str(&rows[0].detail).unwrap();
    assert_eq!(detail["job_id"], 42);
    let detail: serde_json::Value = serde_json::from_str(&rows[1].detail).unwrap();
    assert_eq!(detail["dead_letter_id"], 7);
}

/// [long] R16: an untouched keyed chain of 100 000 rows verifies in < 2 s (SQLite).
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

/// Write a valid keyed chain with raw SQL in big transactions (appending 100 000 rows one commit
/// at a time would measure fsync, not the verifier).
async fn fill_chain(b: &mut Backend, n: i64) {
    let key = b.audit_key.clone().expect("keyed");
    let mut prev = store::ZERO_HASH.to_owned();
    let mut sql = String::from("BEGIN;");
    for seq in 1..=n {
        let mut e = AuditEntry {
            seq,
            at: 1_700_000_000_000 + seq,
            actor: "dingtalk:user1".into(),
            action: "approve".into(),
            subject: format!("PR-{seq}"),
            detail: format!("{{\"before\":\"pending\",\"after\":\"approved\",\"n\":{seq}}}"),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        e.hash = e.chain_hash(Some(&key));
        sql.push_str(&insert_sql(&e));
        prev = e.hash;
        if seq % 5_000 == 0 {
            sql.push_str("COMMIT;");
            b.exec(&sql).await;
            sql = String::from("BEGIN;");
        }
    }
    sql.push_str(&format!(
        "UPDATE audit_head SET seq = {n}, hash = {}, key_id = {} WHERE id = 1; COMMIT;",
        q(&prev),
        q(key.id())
    ));
    b.exec(&sql).await;
}
