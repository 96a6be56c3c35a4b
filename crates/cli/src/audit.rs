//! `dingbridge audit verify|export`: prove the hash-chained audit log untouched, and hand it to
//! auditors as CSV or JSON.

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use jiff::Timestamp;
use model::ZonedTime;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::{AuditEntry, AuditVerification, Store};

/// Rows read per `audit_list` call.
const PAGE: usize = 1_000;

/// What a broken chain means, for the operator reading the message.
const BROKEN_MEANS: &str = "a row was edited, removed, inserted or reordered after it was written; \
     treat the audit log as tampered and compare it with a backup";

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check the hash chain from the first row to the head. Exit 1 if it is broken.
    Verify,
    /// Write audit rows as CSV or JSON (the chain is verified first; exit 1 if it is broken).
    Export {
        /// First instant: RFC 3339 (`2026-11-01T09:00:00+08:00`), a date (`2026-11-01`, midnight
        /// Hong Kong time) or a time ago (`7d`, `24h`, `30m`). Inclusive.
        #[arg(long)]
        since: String,
        /// End instant in the same forms. Exclusive; default: no end.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

pub async fn run(action: AuditAction, config: Option<PathBuf>, store: Option<String>) -> anyhow::Result<ExitCode> {
    let store = crate::dlq::open_store(config, store).await?;
    match action {
        AuditAction::Verify => verify(store.as_ref()).await,
        AuditAction::Export { since, until, format, output } => {
            let now = Timestamp::now();
            let since = parse_when(&since, now).with_context(|| format!("--since {since}"))?;
            let until = until.map(|u| parse_when(&u, now).with_context(|| format!("--until {u}"))).transpose()?;
            if let Some(until) = until {
                anyhow::ensure!(until > since, "--until must be later than --since");
            }
            export(store.as_ref(), since, until, format, output.as_deref()).await
        }
    }
}

async fn verify(store: &dyn Store) -> anyhow::Result<ExitCode> {
    match store.audit_verify().await.context("verifying the audit chain")? {
        AuditVerification::Intact { rows: 0 } => {
            println!("audit chain intact: 0 rows");
            Ok(ExitCode::SUCCESS)
        }
        AuditVerification::Intact { rows } => {
            let (first, last) = first_and_last(store).await?;
            println!("audit chain intact: {rows} rows ({} … {}, HKT)", hk(first), hk(last));
            Ok(ExitCode::SUCCESS)
        }
        AuditVerification::Broken { at_seq, reason } => {
            println!("audit chain BROKEN at row {at_seq}: {reason}");
            println!("this means {BROKEN_MEANS}");
            Ok(ExitCode::FAILURE)
        }
        AuditVerification::WrongKey { chain_key_id, given_key_id } => {
            println!("wrong audit key: the chain is keyed with {chain_key_id:?}, the key given is {given_key_id:?}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `at` of the first and the last row by seq (the store has no "last row" query, so page).
async fn first_and_last(store: &dyn Store) -> anyhow::Result<(i64, i64)> {
    let mut first = None;
    let mut last = 0;
    let mut pager = Pager::new(i64::MIN);
    while let Some(page) = pager.next(store).await? {
        if let Some(row) = page.first() {
            first.get_or_insert(row.at);
        }
        if let Some(row) = page.last() {
            last = row.at;
        }
    }
    Ok((first.unwrap_or(last), last))
}

/// `2026-11-01 09:30:00` in Hong Kong (the caller says HKT once).
fn hk(ms: i64) -> String {
    match ZonedTime::from_millis("at", ms) {
        Ok(t) => t.to_hk_string().trim_end_matches(" HKT").to_owned(),
        Err(_) => ms.to_string(),
    }
}

/// Pages through the rows with `at >= since` in seq order.
struct Pager {
    since: i64,
    after_seq: i64,
    done: bool,
}

impl Pager {
    fn new(since: i64) -> Self {
        Self { since, after_seq: 0, done: false }
    }

    /// The next rows, ascending seq; `None` at the end.
    async fn next(&mut self, store: &dyn Store) -> anyhow::Result<Option<Vec<AuditEntry>>> {
        if self.done {
            return Ok(None);
        }
        let page = store.audit_list(self.since, self.after_seq, PAGE).await.context("reading the audit log")?;
        self.done = page.len() < PAGE;
        let Some(last) = page.last() else { return Ok(None) };
        self.after_seq = last.seq;
        Ok(Some(page))
    }
}

async fn export(
    store: &dyn Store,
    since: Timestamp,
    until: Option<Timestamp>,
    format: ExportFormat,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    // Verify first so a tampered log is never handed over silently; export anyway, since the
    // rows are the evidence of what happened.
    let broken = match store.audit_verify().await.context("verifying the audit chain")? {
        AuditVerification::Intact { .. } => false,
        AuditVerification::WrongKey { chain_key_id, given_key_id } => {
            eprintln!("warning: wrong audit key (chain {chain_key_id:?}, given {given_key_id:?}). Exporting anyway.");
            true
        }
        AuditVerification::Broken { at_seq, reason } => {
            eprintln!("warning: audit chain BROKEN at row {at_seq}: {reason}; {BROKEN_MEANS}. Exporting anyway.");
            true
        }
    };
    let sink: Box<dyn Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut writer = match format {
        ExportFormat::Csv => RowWriter::csv(sink)?,
        ExportFormat::Json => RowWriter::json(sink)?,
    };
    let (since_ms, until_ms) = (since.as_millisecond(), until.map(|u| u.as_millisecond()));
    let mut pager = Pager::new(since_ms);
    let mut written = 0u64;
    while let Some(page) = pager.next(store).await? {
        for entry in page {
            // `until` is exclusive.
            if until_ms.is_some_and(|u| entry.at >= u) {
                continue;
            }
            writer.write(&ExportRow::from(entry))?;
            written += 1;
        }
    }
    writer.finish()?;
    match output {
        Some(path) => eprintln!("exported {written} audit rows to {}", path.display()),
        None => eprintln!("exported {written} audit rows"),
    }
    Ok(if broken { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// One exported row; the same keys in CSV (detail as JSON text) and JSON (detail parsed).
#[derive(serde::Serialize)]
struct ExportRow {
    seq: i64,
    at: String,
    at_hkt: String,
    actor: String,
    action: String,
    subject: String,
    detail: String,
    prev_hash: String,
    hash: String,
}

impl From<AuditEntry> for ExportRow {
    fn from(e: AuditEntry) -> Self {
        let (at, at_hkt) = match Timestamp::from_millisecond(e.at) {
            Ok(t) => (t.to_string(), ZonedTime::from_timestamp(t).to_rfc3339()),
            // Out of jiff's range: only a hand-edited row can be; keep the raw number visible.
            Err(_) => (e.at.to_string(), e.at.to_string()),
        };
        Self {
            seq: e.seq,
            at,
            at_hkt,
            actor: e.actor,
            action: e.action,
            subject: e.subject,
            detail: e.detail,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

impl ExportRow {
    fn to_json(&self) -> serde_json::Value {
        // Detail is JSON by contract; a row that is not (written by hand) is kept as a string.
        let detail =
            serde_json::from_str(&self.detail).unwrap_or_else(|_| serde_json::Value::String(self.detail.clone()));
        serde_json::json!({
            "seq": self.seq,
            "at": self.at,
            "at_hkt": self.at_hkt,
            "actor": self.actor,
            "action": self.action,
            "subject": self.subject,
            "detail": detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        })
    }
}

/// Streams rows out, so an export of a large log does not hold it in memory.
enum RowWriter {
    // Boxed: the CSV writer's state is much larger than the JSON variant's.
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Json { out: Box<dyn Write>, first: bool },
}

impl RowWriter {
    fn csv(out: Box<dyn Write>) -> anyhow::Result<Self> {
        // The header comes from the struct's field names on the first row; an empty export
        // still gets it so a reader sees the columns.
        let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(out);
        w.write_record(["seq", "at", "at_hkt", "actor", "action", "subject", "detail", "prev_hash", "hash"])?;
        Ok(RowWriter::Csv(Box::new(w)))
    }

    fn json(mut out: Box<dyn Write>) -> anyhow::Result<Self> {
        out.write_all(b"[")?;
        Ok(RowWriter::Json { out, first: true })
    }

    fn write(&mut self, row: &ExportRow) -> anyhow::Result<()> {
        match self {
            RowWriter::Csv(w) => w.serialize(row)?,
            RowWriter::Json { out, first } => {
                out.write_all(if *first { &b"\n"[..] } else { &b",\n"[..] })?;
                serde_json::to_writer(&mut *out, &row.to_json())?;
                *first = false;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            RowWriter::Csv(mut w) => w.flush().context("writing the export")?,
            RowWriter::Json { mut out, first } => {
                out.write_all(if first { &b"]\n"[..] } else { &b"\n]\n"[..] })?;
                out.flush().context("writing the export")?;
            }
        }
        Ok(())
    }
}

/// `--since`/`--until`: RFC 3339, a date (midnight Hong Kong time) or a time ago (`7d`, `24h`,
/// `30m`) from `now`.
pub fn parse_when(text: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    // Exactly `YYYY-MM-DD`: a date-time without an offset is ambiguous and refused.
    if text.len() == 10 {
        if let Ok(date) = text.parse::<jiff::civil::Date>() {
            let hk = jiff::tz::TimeZone::fixed(jiff::tz::offset(8));
            return Ok(date.to_zoned(hk).context("date out of range")?.timestamp());
        }
    }
    let unit_ms = match text.chars().last() {
        Some('d') => 24 * 60 * 60 * 1_000,
        Some('h') => 60 * 60 * 1_000,
        Some('m') => 60 * 1_000,
        _ => 0,
    };
    let amount = text.get(..text.len().saturating_sub(1)).and_then(|n| n.parse::<i64>().ok());
    match amount {
        Some(n) if unit_ms > 0 && n >= 0 => {
            let ms = now.as_millisecond().saturating_sub(n.saturating_mul(unit_ms));
            Timestamp::from_millisecond(ms).context("too far back")
        }
        _ => anyhow::bail!(
            "expected an RFC 3339 timestamp (2026-11-01T09:00:00+08:00), a date (2026-11-01, midnight \
             Hong Kong time) or a time ago (7d, 24h, 30m), got {text:?}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_when;
    use jiff::Timestamp;

    #[test]
    fn when_forms() {
        let now: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
        let at = |s: &str| parse_when(s, now).unwrap().to_string();
        assert_eq!(at("2026-11-01T09:00:00+08:00"), "2026-11-01T01:00:00Z");
        assert_eq!(at("2026-11-01"), "2026-10-31T16:00:00Z");
        assert_eq!(at("7d"), "2026-11-21T10:00:00Z");
        assert_eq!(at("24h"), "2026-11-27T10:00:00Z");
        assert_eq!(at("30m"), "2026-11-28T09:30:00Z");
        for bad in ["", "d", "7w", "-3d", "yesterday", "2026-13-01", "2026-11-01T09:00:00"] {
            assert!(parse_when(bad, now).is_err(), "{bad:?} accepted");
        }
    }
}
