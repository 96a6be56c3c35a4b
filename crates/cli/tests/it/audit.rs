//! `dingbridge audit verify|export` as an operator runs it: against a real store file (and
//! Postgres), before and after someone edits a row behind the store's back.

use crate::common::*;
use std::path::Path;
use std::process::Output;
use store::{AuditEntry, NewAuditEntry, Store};

/// 2026-11-01T09:00:00+08:00 in ms.
const BASE_MS: i64 = 1_793_494_800_000;
/// Rows sharing BASE_MS: more than one page (1000), so the exporter must not loop on them.
const SAME_AT: i64 = 1_200;
const ROWS: i64 = 2_040;
const MINUTE: i64 = 60_000;

/// `dingbridge audit ARGS` as a process.
async fn audit(args: &[&str]) -> Output {
    tokio::process::Command::new(exe()).arg("audit").args(args).env("DINGBRIDGE_LOG", "warn").output().await.unwrap()
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
    let chain = {
        let store = store::open(&url).await.unwrap();
        let chain = append_rows(store.as_ref(), ROWS).await;
        // Closing checkpoints the WAL into the database file, where the tampering below edits
        // the rows (the CLI runs in between only read, so they leave the WAL empty).
        store.close().await;
        chain
    };

    // Intact: exit 0, row count and time span in Hong Kong time.
    let out = audit(&["verify", "--store", &url]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "verify: {stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        format!("audit chain intact: {ROWS} rows (2026-11-01 09:00:00 … 2026-11-01 23:00:00, HKT)"),
        "{stderr}"
    );

    // CSV with an RFC 3339 window: [12:00, 18:00) HKT is seqs SAME_AT+180 .. SAME_AT+540.
    let csv_file = dir.path().join("window.csv");
    let out = audit(&[
        "export",
        "--store",
        &url,
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
    let out = audit(&["export", "--store", &url, "--since", "2026-11-01", "--format", "json"]).await;
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
    let out = audit(&["export", "--store", &url, "--since", "2026-11-02", "--format", "json"]).await;
    assert!(out.status.success());
    assert_eq!(serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap().len(), 0);
    let out =
        audit(&["export", "--store", &url, "--since", "2026-11-02", "--until", "2026-11-01", "--format", "csv"]).await;
    assert!(!out.status.success());

    // Someone edits row 1500 in the file: verify names it and fails.
    tamper_sqlite_file(&db, 1_500);
    let out = audit(&["verify", "--store", &url]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "verify after tampering: {stdout}{stderr}");
    assert!(stdout.contains("audit chain BROKEN at row 1500:"), "{stdout}");
    assert!(stdout.contains("edited, removed, inserted or reordered"), "{stdout}");

    // Export still hands the rows over (the edited one as it now reads), warns and exits 1.
    let out = audit(&["export", "--store", &url, "--since", "2026-11-01T09:00:00+08:00", "--format", "csv"]).await;
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
        let store = store::open(&url).await.unwrap();
        append_rows(store.as_ref(), 5).await;
        store.close().await;
    }
    let out = audit(&["verify", "--store", &url]).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("audit chain intact: 5 rows (2026-11-01 09:00:00 … 2026-11-01 09:00:00, HKT)"),
        "{stdout}"
    );

    psql(format!("UPDATE {schema}.audit_log SET detail = replace(detail, 'approved', 'rejected') WHERE seq = 3"));
    let out = audit(&["verify", "--store", &url]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("audit chain BROKEN at row 3:"), "{stdout}");
    psql(format!("DROP SCHEMA {schema} CASCADE"));
}
