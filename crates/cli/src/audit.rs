//! `dingbridge audit verify|anchor|export`: prove the keyed hash-chained audit log untouched
//! (and, with an anchor kept elsewhere, not cut short), and hand it to auditors as CSV or JSON.

use crate::store_access::{KeyUse, StoreArgs, HOW_TO_GIVE_THE_KEY};
use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use jiff::Timestamp;
use model::ZonedTime;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use store::{AnchorCheck, AuditEntry, AuditHead, AuditVerification, Store};

/// Rows read per `audit_list` call.
const PAGE: usize = 1_000;

/// What a broken chain means, for the operator reading the message.
const BROKEN_MEANS: &str = "a row was edited, removed, inserted or reordered after it was written; \
     treat the audit log as tampered and compare it with a backup";

/// What a wrong key means, for the operator reading the message.
const WRONG_KEY_MEANS: &str = "if the given key is the one the gateway runs with, the chain's head was \
     rewritten: treat the audit log as tampered and compare it with a backup";

#[derive(Subcommand)]
pub enum AuditAction {
    /// Check the keyed hash chain from the first row to the head, with the audit key. Exit 1 if
    /// it is broken, the key is wrong, or the anchor is no longer in the chain.
    Verify {
        /// A line printed by `dingbridge audit anchor` earlier: also check that the chain still
        /// holds that row unchanged (catches rows removed from the end, or a rewrite since).
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Print the chain's head (row, time, hash, key id) as one line to keep where the store's
    /// writers cannot reach it (a ticket, an e-mail to the auditors, write-once storage); give it
    /// back to `audit verify --anchor` later. Needs no key.
    Anchor,
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

pub async fn run(action: AuditAction, target: &StoreArgs) -> anyhow::Result<ExitCode> {
    // A malformed anchor is refused before anything is opened.
    let anchor = match &action {
        AuditAction::Verify { anchor: Some(text) } => Some(parse_anchor(text)?),
        _ => None,
    };
    let key_use = if matches!(action, AuditAction::Anchor) { KeyUse::NotNeeded } else { KeyUse::Needed };
    let opened = crate::store_access::open(target, key_use).await?;
    let store = opened.store;
    match action {
        AuditAction::Verify { .. } => {
            let head = store.audit_head().await.context("reading the audit chain's head")?;
            if let (Some(chain), None) = (&head.key_id, &opened.key) {
                anyhow::bail!(
                    "the audit chain is keyed (key {chain}); verifying it needs the audit key: {HOW_TO_GIVE_THE_KEY}"
                );
            }
            let code = verify(store.as_ref(), opened.key_source.as_deref()).await?;
            match anchor {
                Some(anchor) if code == ExitCode::SUCCESS => check_anchor(store.as_ref(), &anchor).await,
                _ => Ok(code),
            }
        }
        AuditAction::Anchor => {
            let head = store.audit_head().await.context("reading the audit chain's head")?;
            println!("{}", format_anchor(&head));
            let at = head.at.map_or_else(|| "no rows yet".to_owned(), |at| format!("written {} HKT", hk(at)));
            eprintln!(
                "audit chain head: row {} ({at}). Keep the line above where the store's writers cannot reach it; \
                 `dingbridge audit verify --anchor '<line>'` proves the chain still holds that row. Run \
                 `audit verify` first: an anchor vouches only for a chain that was intact when it was taken.",
                head.seq
            );
            Ok(ExitCode::SUCCESS)
        }
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

async fn verify(store: &dyn Store, key_source: Option<&str>) -> anyhow::Result<ExitCode> {
    let keyed = match key_source {
        Some(source) => format!("keyed, key from {source}"),
        None => "NOT keyed: the hashes show damage and edits by someone who did not hash the chain \
                 again, not a deliberate rewrite; set [audit] key for new stores"
            .to_owned(),
    };
    match store.audit_verify().await.context("verifying the audit chain")? {
        AuditVerification::Intact { rows: 0 } => {
            println!("audit chain intact: 0 rows ({keyed})");
            Ok(ExitCode::SUCCESS)
        }
        AuditVerification::Intact { rows } => {
            let (first, last) = first_and_last(store).await?;
            println!("audit chain intact: {rows} rows ({} … {}, HKT; {keyed})", hk(first), hk(last));
            Ok(ExitCode::SUCCESS)
        }
        AuditVerification::Broken { at_seq, reason } => {
            println!("audit chain BROKEN at row {at_seq}: {reason}");
            println!("this means {BROKEN_MEANS}");
            Ok(ExitCode::FAILURE)
        }
        AuditVerification::WrongKey { chain_key_id, given_key_id } => {
            println!("{}", wrong_key(chain_key_id.as_deref(), given_key_id.as_deref()));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What a `WrongKey` verification says.
fn wrong_key(chain: Option<&str>, given: Option<&str>) -> String {
    match (chain, given) {
        (Some(chain), Some(given)) => format!(
            "wrong audit key: the chain is written with key {chain}, the key given is {given}; {WRONG_KEY_MEANS}"
        ),
        (None, Some(given)) => format!(
            "wrong audit key: the chain is not keyed (its rows were written without an audit key), but key \
             {given} was given; either the gateway ran without [audit] key, or the chain was rewritten \
             without the key: {WRONG_KEY_MEANS}"
        ),
        (Some(chain), None) => {
            format!("the audit chain is keyed (key {chain}) and no key was given: {HOW_TO_GIVE_THE_KEY}")
        }
        (None, None) => "the audit chain is not keyed".to_owned(),
    }
}

/// The first word of an anchor line, and its format version.
const ANCHOR_TAG: &str = "dingbridge-audit-anchor";
const ANCHOR_VERSION: &str = "v1";

/// `dingbridge-audit-anchor v1 seq=42 at=2026-11-28T10:00:00.123Z hash=<64 hex> key=<16 hex>|none`:
/// one line, no secret, safe to paste into a ticket or an e-mail.
fn format_anchor(head: &AuditHead) -> String {
    let at = match head.at {
        None => "-".to_owned(),
        // A time out of jiff's range can only be hand-edited; keep its number.
        Some(ms) => Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string()),
    };
    let key = head.key_id.as_deref().unwrap_or("none");
    format!("{ANCHOR_TAG} {ANCHOR_VERSION} seq={} at={at} hash={} key={key}", head.seq, head.hash)
}

/// The head an anchor line recorded.
fn parse_anchor(text: &str) -> anyhow::Result<AuditHead> {
    let expected = || {
        format!(
            "expected the line `dingbridge audit anchor` printed: `{ANCHOR_TAG} {ANCHOR_VERSION} seq=N at=TIME \
             hash=HEX key=ID`, got {text:?}"
        )
    };
    let mut words = text.split_whitespace();
    anyhow::ensure!(words.next() == Some(ANCHOR_TAG) && words.next() == Some(ANCHOR_VERSION), expected());
    let (mut seq, mut at, mut hash, mut key) = (None, None, None, None);
    for word in words {
        let Some((name, value)) = word.split_once('=') else { anyhow::bail!(expected()) };
        match name {
            "seq" => seq = Some(value.parse::<i64>().ok().filter(|n| *n >= 0).with_context(expected)?),
            "at" => {
                at = Some(match value {
                    "-" => None,
                    v => Some(match v.parse::<Timestamp>() {
                        Ok(t) => t.as_millisecond(),
                        Err(_) => v.parse::<i64>().ok().with_context(expected)?,
                    }),
                })
            }
            "hash" if value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()) => {
                hash = Some(value.to_ascii_lowercase())
            }
            "key" => key = Some((value != "none").then(|| value.to_owned())),
            _ => anyhow::bail!(expected()),
        }
    }
    match (seq, at, hash, key) {
        (Some(seq), Some(at), Some(hash), Some(key_id)) => Ok(AuditHead { seq, hash, at, key_id }),
        _ => anyhow::bail!(expected()),
    }
}

async fn check_anchor(store: &dyn Store, anchor: &AuditHead) -> anyhow::Result<ExitCode> {
    match anchor.check_anchor(store).await.context("checking the anchor")? {
        AnchorCheck::Held => {
            println!("anchor held: the chain still holds row {} as anchored", anchor.seq);
            Ok(ExitCode::SUCCESS)
        }
        AnchorCheck::Lost { reason } => {
            println!("anchor LOST: {reason}");
            println!("this means {BROKEN_MEANS}");
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
            let why = wrong_key(chain_key_id.as_deref(), given_key_id.as_deref());
            eprintln!("warning: the chain could not be verified: {why}. Exporting anyway.");
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
    /// The CSV cells, each made inert for spreadsheets: see [`csv_safe`].
    fn csv_cells(&self) -> [String; 9] {
        [
            self.seq.to_string(),
            csv_safe(&self.at),
            csv_safe(&self.at_hkt),
            csv_safe(&self.actor),
            csv_safe(&self.action),
            csv_safe(&self.subject),
            csv_safe(&self.detail),
            csv_safe(&self.prev_hash),
            csv_safe(&self.hash),
        ]
    }

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

/// A cell a spreadsheet would read as a formula (OWASP CSV injection: one beginning with `=`,
/// `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, so Excel and LibreOffice show
/// it as text. Actors, subjects and details come from outside (DingTalk users, ERP records), so
/// any of them may carry `=HYPERLINK(...)`.
fn csv_safe(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
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
            RowWriter::Csv(w) => w.write_record(row.csv_cells())?,
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
    use super::*;

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

    #[test]
    fn formula_prefixes_are_neutralised_and_nothing_else() {
        for (cell, want) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("finance0001", "finance0001"),
            ("a=b", "a=b"),
            ("", ""),
            ("'quoted", "'quoted"),
        ] {
            assert_eq!(csv_safe(cell), want, "{cell:?}");
        }
    }

    #[test]
    fn an_anchor_line_round_trips() {
        let head = AuditHead {
            seq: 42,
            hash: "ab".repeat(32),
            at: Some(1_764_324_000_123),
            key_id: Some("0123456789abcdef".into()),
        };
        let line = format_anchor(&head);
        assert_eq!(
            line,
            format!(
                "dingbridge-audit-anchor v1 seq=42 at=2025-11-28T10:00:00.123Z hash={} key=0123456789abcdef",
                "ab".repeat(32)
            )
        );
        assert_eq!(parse_anchor(&line).unwrap(), head);
        assert_eq!(parse_anchor(&format!("  {line}\n")).unwrap(), head, "pasted with spaces and a newline");
        let empty = AuditHead { seq: 0, hash: store::ZERO_HASH.into(), at: None, key_id: None };
        assert_eq!(parse_anchor(&format_anchor(&empty)).unwrap(), empty);
        for bad in [
            "",
            "dingbridge-audit-anchor v2 seq=1 at=- hash=00 key=none",
            &line.replace("seq=42", "seq=-1"),
            &line.replace("seq=42 ", ""),
            &line.replace(&"ab".repeat(32), "abc"),
            &format!("{line} extra"),
        ] {
            assert!(parse_anchor(bad).is_err(), "{bad:?} accepted");
        }
    }
}
