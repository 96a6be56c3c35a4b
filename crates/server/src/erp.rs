//! ERP change intake: what an ERP pushes (to its system's push route, checked and read by the
//! source's [`PushIntake`]), documents left in a drop folder, and the reconciliation polls behind
//! them.
//!
//! Most pushes carry too little to build a message from (a script's few fields, a webhook's
//! changed columns), so they are stored as change notices with a coalescing
//! read job (see [`crate::reads`]); [`ErpReadSink`] reads the record and commits its canonical
//! event. Poll rows and documents that carry whole records become events directly.
//!
//! Every event of a record state is stored under the state's dedup key (entity, id, version), so
//! the same status reported by a push and again by the reconciliation poll gives one event and
//! one message.

use crate::error::ApiError;
use crate::push::unreadable_document;
use crate::reads::{commit_all, commit_read, Notices, ReadRequest, RecordSource};
use crate::sources::{read_destination, ErpSource};
use crate::state::AppState;
use crate::supervisor::{pause, TaskError};
use async_trait::async_trait;
use connect::{Delivery, DeliveryError, Idempotency, Receipt, Sink};
use connectors::erp::ErpRecord;
use connectors::push::PushIntake;
use connectors::reader::{Polled, ReadError};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a drop folder is scanned, and how long a file must have been left alone before it
/// is read (a file still being written is not taken half-way).
const FOLDER_SCAN: Duration = Duration::from_secs(1);
const FOLDER_SETTLE: Duration = Duration::from_millis(500);

#[async_trait]
impl RecordSource for ErpSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn system(&self) -> &'static str {
        self.system.as_str()
    }

    fn objects(&self) -> &[String] {
        &self.objects
    }

    fn notices(&self) -> Notices<'_> {
        Notices {
            source: &self.name,
            system: self.system.as_str(),
            destination: read_destination(&self.name),
            coalesce: self.coalesce,
        }
    }

    fn push_intake(&self) -> &dyn PushIntake {
        self.push.as_ref()
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.poll
    }

    async fn poll(&self, object: &str, cursor: Option<&str>, now: jiff::Timestamp) -> Result<Polled, ReadError> {
        self.reader.poll(object, cursor, now).await
    }

    fn plan_records(&self, state: &AppState, records: &[ErpRecord]) -> Result<Vec<crate::Planned>, ApiError> {
        let now = state.clock.now();
        records
            .iter()
            .map(|record| state.intake.inbound(&self.name, &self.inbound(record, "updated", now.as_millisecond()), now))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Drop folder
// ---------------------------------------------------------------------------------------------

/// Watches a source's drop folder (where an ERP's file port writes documents): every document
/// is committed, then moved to `done/`; an unreadable one is kept as a dead letter and moved to
/// `failed/` beside a `.reason.txt`. A file is never deleted, and is moved only after its events
/// (or dead letter) are stored.
pub async fn drop_folder_loop(
    state: AppState,
    source: Arc<ErpSource>,
    cancel: CancellationToken,
) -> Result<(), TaskError> {
    let Some(folder) = source.drop_folder.clone() else { return Ok(()) };
    for sub in ["done", "failed"] {
        if let Err(err) = tokio::fs::create_dir_all(folder.join(sub)).await {
            tracing::error!(source = %source.name, folder = %folder.display(), "Cannot create the drop folder's {sub}/: {err}");
        }
    }
    loop {
        if let Err(err) = scan_folder(&state, &source, &folder).await {
            tracing::warn!(source = %source.name, folder = %folder.display(), "Drop folder scan failed; will retry: {err}");
        }
        if !pause(&cancel, FOLDER_SCAN).await {
            return Ok(());
        }
    }
}

async fn scan_folder(state: &AppState, source: &ErpSource, folder: &FsPath) -> Result<(), std::io::Error> {
    let mut entries = tokio::fs::read_dir(folder).await?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await? {
        let meta = entry.metadata().await?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let settled = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_some_and(|age| age >= FOLDER_SETTLE);
        if meta.is_file() && settled && !name.starts_with('.') && name.to_ascii_lowercase().ends_with(".xml") {
            files.push(entry.path());
        }
    }
    files.sort();
    for path in files {
        if !state.is_accepting() {
            break;
        }
        take_file(state, source, folder, &path).await?;
    }
    Ok(())
}

async fn take_file(state: &AppState, source: &ErpSource, folder: &FsPath, path: &FsPath) -> Result<(), std::io::Error> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Sized before it is read: a file past the cap is never held in memory.
    let meta = tokio::fs::metadata(path).await?;
    let stored = if meta.len() > source.max_file_bytes {
        let reason = format!(
            "{FILE_TOO_LARGE}: the file has {} bytes, more than max_file_bytes ({}); it was not read",
            meta.len(),
            source.max_file_bytes
        );
        let modified = meta.modified().ok().and_then(|m| jiff::Timestamp::try_from(m).ok());
        let dedup_key =
            format!("document-too-large:{name}:{}:{}", meta.len(), modified.map_or(0, |m| m.as_millisecond()));
        let raw = serde_json::json!({ "via": name, "file_bytes": meta.len(), "max_file_bytes": source.max_file_bytes });
        match state.intake.unreadable(&source.name, &dedup_key, raw, reason.clone(), state.clock.now()) {
            Ok(intake) => commit_all(state, &source.name, vec![intake]).await.map(|()| (false, 0, Some(reason))),
            Err(err) => Err(err),
        }
    } else {
        let body = read_capped(path, source.max_file_bytes).await?;
        match source.push.decode_document(&body).map_err(|err| err.0) {
            Ok(records) => source.commit_records(state, &records).await.map(|()| (true, records.len(), None)),
            Err(reason) => match unreadable_document(state, &source.name, &body, &reason, &name) {
                Ok(intake) => commit_all(state, &source.name, vec![intake]).await.map(|()| (false, 0, Some(reason))),
                Err(err) => Err(err),
            },
        }
    };
    match stored {
        Ok((true, count, _)) => {
            move_aside(path, &folder.join("done").join(&name)).await?;
            tracing::info!(source = %source.name, file = %name, records = count, "Dropped file stored and moved to done/.");
        }
        Ok((false, _, reason)) => {
            let reason = reason.unwrap_or_default();
            // The reason first: whoever sees the file in failed/ finds why beside it.
            let target = folder.join("failed").join(&name);
            let mut note = target.clone().into_os_string();
            note.push(".reason.txt");
            tokio::fs::write(&note, format!("{reason}\n")).await?;
            move_aside(path, &target).await?;
            tracing::error!(source = %source.name, file = %name, "Unreadable dropped file dead-lettered and moved to failed/: {reason}");
        }
        // Not stored: the file stays where it is and is tried again on the next scan.
        Err(err) => tracing::warn!(source = %source.name, file = %name, "Dropped file not stored yet: {}", err.message),
    }
    Ok(())
}

/// The reason code of a dropped file larger than the source's `max_file_bytes`.
pub const FILE_TOO_LARGE: &str = "file_too_large";

/// Reads `path`, at most `max` bytes and one more: a file that grew past the cap after it was
/// sized is still not read whole, and its decoding fails on the truncated document.
async fn read_capped(path: &FsPath, max: u64) -> Result<Vec<u8>, std::io::Error> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let mut body = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut body).await?;
    Ok(body)
}

/// Renames `from` to `to`, or to `to` with a timestamp suffix when a file of that name was
/// already moved there (file ports reuse file names).
async fn move_aside(from: &FsPath, to: &FsPath) -> Result<(), std::io::Error> {
    let target = if tokio::fs::try_exists(to).await? {
        let stamp = jiff::Timestamp::now().as_millisecond();
        let mut name = to.as_os_str().to_owned();
        name.push(format!(".{stamp}"));
        PathBuf::from(name)
    } else {
        to.to_path_buf()
    };
    tokio::fs::rename(from, target).await
}

// ---------------------------------------------------------------------------------------------
// Reads
// ---------------------------------------------------------------------------------------------

/// The sink of an ERP source's read jobs: read the record, commit its canonical event.
pub struct ErpReadSink {
    pub source: Arc<ErpSource>,
    /// The event is committed through the same intake path as every other event.
    pub state: AppState,
}

#[async_trait]
impl Sink for ErpReadSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let request = ReadRequest::from_delivery(delivery)?;
        let ReadRequest { object, id, change } = &request;
        let now = self.state.clock.now_millis();
        let read = self.source.reader.read(object, id).await;
        let inbound = match read.map_err(|err| err.into_delivery(&read_destination(&self.source.name)))? {
            Some(record) => {
                let mut inbound = self.source.inbound(&record, change, now);
                if change == "deleted" {
                    inbound.change = "updated".into();
                }
                inbound
            }
            None => request.gone(self.source.system.as_str(), &delivery.idempotency_key),
        };
        commit_read(&self.state, &self.source.name, &inbound).await
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Honoured
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
}

/// The purchase requests waiting for approval in the source's ERP, in the canonical shape.
pub async fn pending_purchase_requests(source: &ErpSource) -> Result<Vec<ErpRecord>, DeliveryError> {
    source.reader.pending_purchase_requests().await.map_err(|err| err.into_delivery(&read_destination(&source.name)))
}
