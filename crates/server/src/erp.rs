//! ERP change intake: NetSuite user-event webhooks, Dataverse webhooks, SAP IDoc-XML (over HTTP
//! and from a drop folder) and the reconciliation polls behind them.
//!
//! Pushes carry too little to build a message from (a NetSuite script sends a few fields, a
//! Dataverse webhook the changed columns), so they are stored as change notices with a coalescing
//! read job (see [`crate::reads`]); [`ErpReadSink`] reads the record and commits its canonical
//! event. Poll rows and IDocs that carry the whole record become events directly.
//!
//! Every event of a record state is stored under the state's dedup key (entity, id, version), so
//! the same status reported by the webhook and again by the reconciliation poll, or by an IDoc and
//! the OData poll, gives one event and one message.

use crate::error::ApiError;
use crate::hooks::refuse;
use crate::reads::{commit_all, commit_read, Notices, ReadRequest};
use crate::state::AppState;
use crate::supervisor::{pause, TaskError};
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use connect::{Delivery, DeliveryError, Idempotency, Receipt, Sink};
use connectors::erp::{self, ErpRecord};
use connectors::netsuite::source as ns_source;
use connectors::reader::{ApprovalWriteBack, ErpReader, Found, ReadError};
use engine::config::{ErpSystem, Secret};
use model::InboundChange;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The outbox destination of an ERP source's read jobs.
pub fn read_destination(source: &str) -> String {
    format!("erp-read:{source}")
}

/// The Dataverse webhook header carrying the source's shared key (serviceendpoint authtype
/// HttpHeader); authtype WebhookKey sends it as the `code` query parameter instead.
pub const DATAVERSE_KEY_HEADER: &str = "x-dingbridge-key";

/// How often a drop folder is scanned, and how long a file must have been left alone before it
/// is read (a file still being written is not taken half-way).
const FOLDER_SCAN: Duration = Duration::from_secs(1);
const FOLDER_SETTLE: Duration = Duration::from_millis(500);

/// One configured ERP source, as the gateway runs it.
pub struct ErpSource {
    pub name: String,
    pub system: ErpSystem,
    /// Polls and reads the ERP's records.
    pub reader: Arc<dyn ErpReader>,
    /// Writes approval decisions to the ERP and lists its people.
    pub write_back: Arc<dyn ApprovalWriteBack>,
    pub objects: Vec<String>,
    pub coalesce: Duration,
    pub poll: Option<Duration>,
    /// A status older than this when it reaches the gateway is marked stale (`data.stale`).
    pub stale_after: Option<Duration>,
    /// NetSuite: the HMAC key of the user-event script; Dynamics: the webhook's shared key.
    pub webhook_secret: Option<Secret>,
    /// SAP: the HTTP Basic login of the ECC XML-HTTP port.
    pub idoc_login: Option<(String, Secret)>,
    /// SAP: the watched IDoc drop folder.
    pub idoc_folder: Option<PathBuf>,
}

/// The ERP sources, by source name.
pub type ErpSources = BTreeMap<String, Arc<ErpSource>>;

impl ErpSource {
    fn notices(&self) -> Notices<'_> {
        Notices {
            source: &self.name,
            system: self.system.as_str(),
            destination: read_destination(&self.name),
            coalesce: self.coalesce,
        }
    }

    fn watches(&self, object: &str) -> bool {
        self.objects.iter().any(|o| o.eq_ignore_ascii_case(object))
    }

    /// The event of one record state, as the flows see it: the canonical data plus how old the
    /// state was when it arrived (`age_seconds`, `stale`).
    fn inbound(&self, record: &ErpRecord, change: &str, now_ms: i64) -> InboundChange {
        let mut data = record.data.clone();
        if let Value::Object(map) = &mut data {
            let age = record.source_time_ms.map(|t| (now_ms - t).max(0) / 1000);
            let stale = self.stale_after.is_some_and(|limit| erp::is_stale(record.source_time_ms, now_ms, limit));
            map.insert("age_seconds".into(), age.map_or(Value::Null, Value::from));
            map.insert("stale".into(), Value::Bool(stale));
        }
        InboundChange {
            event_type: format!("{}.{}", self.system.as_str(), record.object),
            entity: record.entity.to_owned(),
            entity_id: record.entity_id.clone(),
            change: change.to_owned(),
            dedup_key: record.dedup_key(),
            source_time_ms: record.source_time_ms,
            data,
        }
    }

    /// Records read by a poll or from an IDoc, committed as events (one transaction).
    async fn commit_records(&self, state: &AppState, records: &[ErpRecord], change: &str) -> Result<(), ApiError> {
        let now = state.clock.now();
        let intakes = records
            .iter()
            .map(|record| state.intake.inbound(&self.name, &self.inbound(record, change, now.as_millisecond()), now))
            .collect::<Result<Vec<_>, _>>()?;
        commit_all(state, &self.name, intakes).await
    }
}

fn erp_source<'a>(state: &'a AppState, source: &str, system: ErpSystem) -> Result<&'a Arc<ErpSource>, ApiError> {
    if !state.is_accepting() {
        return Err(ApiError::unavailable("draining", "the gateway is shutting down; retry later", 1));
    }
    state.erp.get(source).filter(|s| s.system == system).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no {} source named `{source}`", system.as_str()),
        )
    })
}

fn accepted() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "accepted"}))).into_response()
}

// ---------------------------------------------------------------------------------------------
// NetSuite
// ---------------------------------------------------------------------------------------------

/// `POST /intake/netsuite/{source}`: the user-event script's post (docs/netsuite-user-event.md),
/// HMAC-signed with the source's `webhook_secret`.
pub async fn receive_netsuite(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match netsuite_webhook(&state, &source, &headers, &body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "NetSuite user-event webhook"),
    }
}

async fn netsuite_webhook(
    state: &AppState,
    source: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let erp = erp_source(state, source, ErpSystem::Netsuite)?;
    let secret = erp.webhook_secret.as_ref().ok_or_else(|| no_webhooks(source))?;
    let event = ns_source::receive(secret.expose().as_bytes(), headers, body, state.clock.now()).map_err(|err| {
        let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError::new(status, "bad_webhook", err.to_string())
    })?;
    let Some(record) = event.record_type.filter(|r| erp.watches(r.as_str())) else {
        tracing::info!(source, record_type = %event.record_type_name, "NetSuite user event for a record type the source does not list; acknowledged and ignored.");
        return Ok(accepted());
    };
    let change = match event.event_type {
        ns_source::EventType::Create => "created",
        ns_source::EventType::Delete => "deleted",
        ns_source::EventType::Approve | ns_source::EventType::Reject => "status_changed",
        _ => "updated",
    };
    let detail = json!({ "event_id": event.event_id, "event_type": format!("{:?}", event.event_type), "occurred_at": event.occurred_at.to_rfc3339() });
    let now = state.clock.now_millis();
    let notice = erp.notices().notice(
        format!("{source}:{}", event.event_id),
        record.as_str(),
        &event.record_id,
        change,
        detail,
        now,
    );
    commit_all(state, source, vec![notice]).await?;
    Ok(accepted())
}

fn no_webhooks(source: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_source",
        format!("source `{source}` takes no webhooks (no webhook_secret)"),
    )
}

// ---------------------------------------------------------------------------------------------
// Dynamics 365 (Dataverse)
// ---------------------------------------------------------------------------------------------

/// `POST /intake/dynamics/{source}`: a Dataverse webhook (`RemoteExecutionContext`). The
/// serviceendpoint's key arrives in the `x-dingbridge-key` header (authtype HttpHeader) or the
/// `code` query parameter (authtype WebhookKey). Answered 204 after the commit: Dataverse gives a
/// webhook 60 s and retries only 502–504 once, so the reconciliation poll is the safety net.
pub async fn receive_dynamics(
    State(state): State<AppState>,
    Path(source): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dynamics_webhook(&state, &source, &query, &headers, &body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "Dataverse webhook"),
    }
}

async fn dynamics_webhook(
    state: &AppState,
    source: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let erp = erp_source(state, source, ErpSystem::Dynamics)?;
    let secret = erp.webhook_secret.as_ref().ok_or_else(|| no_webhooks(source))?;
    let given = headers
        .get(DATAVERSE_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .or_else(|| query.get("code").map(String::as_str))
        .unwrap_or_default();
    if !connect::secret::matches(secret.expose().as_bytes(), given.as_bytes()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "bad_key", "the webhook key is missing or wrong"));
    }
    let event = connectors::dynamics::source::parse_webhook(body)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", err.to_string()))?;
    if !event.is_fresh(state.clock.now()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "stale_notification",
            format!(
                "the operation was created at {}, more than a day ago (or in the future): a replay, or a clock is off",
                event.operation_created_on.timestamp()
            ),
        ));
    }
    if !erp.watches(&event.entity) {
        tracing::info!(source, entity = %event.entity, "Dataverse webhook for a table the source does not list; acknowledged and ignored.");
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let change = match event.message_name.as_str() {
        "Create" => "created",
        "Delete" => "deleted",
        _ => "updated",
    };
    let detail = json!({ "message": event.message_name, "correlation_id": event.correlation_id, "operation_created_on": event.operation_created_on.to_rfc3339() });
    let now = state.clock.now_millis();
    let dedup = format!("{source}:{}:{}", event.operation_id, event.id);
    let notice = erp.notices().notice(dedup, &event.entity, &event.id, change, detail, now);
    commit_all(state, source, vec![notice]).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// SAP IDoc-XML
// ---------------------------------------------------------------------------------------------

/// `POST /intake/sap/{source}/idoc`: an IDoc packet from an ECC XML-HTTP port, HTTP Basic
/// authenticated. Any 2xx tells ECC the IDoc is delivered (status 03), so an unreadable packet is
/// kept as a dead letter and answered 400 (ECC marks it 02 and it can be resent).
pub async fn receive_idoc(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match idoc_http(&state, &source, &headers, &body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "IDoc"),
    }
}

async fn idoc_http(state: &AppState, source: &str, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let erp = erp_source(state, source, ErpSystem::Sap)?;
    let (user, password) = erp.idoc_login.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_source", format!("source `{source}` takes no IDocs over HTTP"))
    })?;
    if !basic_auth_matches(headers, user, password.expose()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_login",
            "the IDoc port's Basic login is missing or wrong",
        ));
    }
    match erp.reader.decode_push(body).map_err(|err| err.0) {
        Ok(records) => {
            erp.commit_records(state, &records, "updated").await?;
            Ok(accepted())
        }
        Err(reason) => {
            let intake = unreadable_idoc(state, erp, body, &reason, "http")?;
            commit_all(state, source, vec![intake]).await?;
            Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_idoc", reason))
        }
    }
}

fn basic_auth_matches(headers: &HeaderMap, user: &str, password: &str) -> bool {
    use base64::Engine as _;
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let expected = format!("{user}:{password}");
    connect::secret::matches(expected.as_bytes(), &decoded)
}

/// An IDoc that cannot be read, kept as a dead letter with its text and the reason; stored under
/// its content hash, so the same bad file or packet sent again is one dead letter.
fn unreadable_idoc(
    state: &AppState,
    erp: &ErpSource,
    body: &[u8],
    reason: &str,
    via: &str,
) -> Result<store::Intake, ApiError> {
    let hash = hex::encode(Sha256::digest(body));
    let raw = json!({ "via": via, "idoc_xml": String::from_utf8_lossy(body) });
    state.intake.unreadable(&erp.name, &format!("idoc:{hash}"), raw, reason.to_owned(), state.clock.now())
}

/// Watches a SAP source's drop folder: every IDoc file is committed, then moved to `done/`; an
/// unreadable one is kept as a dead letter and moved to `failed/` beside a `.reason.txt`. A file
/// is never deleted, and is moved only after its events (or dead letter) are stored.
pub async fn idoc_folder_loop(
    state: AppState,
    source: Arc<ErpSource>,
    cancel: CancellationToken,
) -> Result<(), TaskError> {
    let Some(folder) = source.idoc_folder.clone() else { return Ok(()) };
    for sub in ["done", "failed"] {
        if let Err(err) = tokio::fs::create_dir_all(folder.join(sub)).await {
            tracing::error!(source = %source.name, folder = %folder.display(), "Cannot create the IDoc folder's {sub}/: {err}");
        }
    }
    loop {
        if let Err(err) = scan_folder(&state, &source, &folder).await {
            tracing::warn!(source = %source.name, folder = %folder.display(), "IDoc folder scan failed; will retry: {err}");
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
    let body = tokio::fs::read(path).await?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stored = match source.reader.decode_push(&body).map_err(|err| err.0) {
        Ok(records) => source.commit_records(state, &records, "updated").await.map(|()| (true, records.len(), None)),
        Err(reason) => match unreadable_idoc(state, source, &body, &reason, &name) {
            Ok(intake) => commit_all(state, &source.name, vec![intake]).await.map(|()| (false, 0, Some(reason))),
            Err(err) => Err(err),
        },
    };
    match stored {
        Ok((true, count, _)) => {
            move_aside(path, &folder.join("done").join(&name)).await?;
            tracing::info!(source = %source.name, file = %name, idocs = count, "IDoc file stored and moved to done/.");
        }
        Ok((false, _, reason)) => {
            let reason = reason.unwrap_or_default();
            // The reason first: whoever sees the file in failed/ finds why beside it.
            let target = folder.join("failed").join(&name);
            let mut note = target.clone().into_os_string();
            note.push(".reason.txt");
            tokio::fs::write(&note, format!("{reason}\n")).await?;
            move_aside(path, &target).await?;
            tracing::error!(source = %source.name, file = %name, "Unreadable IDoc file dead-lettered and moved to failed/: {reason}");
        }
        // Not stored: the file stays where it is and is tried again on the next scan.
        Err(err) => tracing::warn!(source = %source.name, file = %name, "IDoc file not stored yet: {}", err.message),
    }
    Ok(())
}

/// Renames `from` to `to`, or to `to` with a timestamp suffix when a file of that name was
/// already moved there (ECC reuses file names).
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

// ---------------------------------------------------------------------------------------------
// Reconciliation polls
// ---------------------------------------------------------------------------------------------

/// Polls every object of an ERP source each `poll` interval. The first poll of an object only
/// records where to start: a new source reports changes from then on, not the ERP's history.
/// A cursor is saved only after what its poll found is committed, so a crash repeats a poll
/// rather than losing one, and the dedup keys make the repeat harmless.
pub async fn poll_loop(state: AppState, source: Arc<ErpSource>, cancel: CancellationToken) -> Result<(), TaskError> {
    let Some(interval) = source.poll else { return Ok(()) };
    loop {
        for object in &source.objects {
            if let Err(err) = poll_object(&state, &source, object).await {
                tracing::warn!(source = %source.name, object, "ERP poll failed; will try again: {err}");
            }
        }
        if !pause(&cancel, interval).await {
            return Ok(());
        }
    }
}

/// One poll of one object (also run by tests and the demo to reconcile at once).
pub async fn poll_object(state: &AppState, source: &ErpSource, object: &str) -> Result<(), PollError> {
    let cursor_name = format!("{}.poll.{}.{object}", source.system.as_str(), source.name);
    let stored = state.store.get_cursor(&cursor_name).await?;
    let polled = source.reader.poll(object, stored.as_deref(), state.clock.now()).await?;
    match polled.found {
        Found::Nothing => {}
        Found::Changed(rows) => {
            let at = state.clock.now_millis();
            let notices = rows
                .into_iter()
                .map(|row| {
                    let dedup = format!("{}:poll:{object}:{}:{}", source.name, row.id, row.stamp);
                    source.notices().notice(dedup, object, &row.id, "updated", row.detail, at)
                })
                .collect();
            commit_all(state, &source.name, notices).await?;
        }
        Found::Records(records) => source.commit_records(state, &records, "updated").await?,
    }
    if let Some(next) = polled.cursor {
        state.store.put_cursor(&cursor_name, &next, state.clock.now_millis()).await?;
    }
    Ok(())
}

/// Why a poll did not complete; it is tried again on the next round.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("what the poll found could not be stored: {}", .0.message)]
    Commit(ApiError),
}

impl From<ApiError> for PollError {
    fn from(err: ApiError) -> Self {
        PollError::Commit(err)
    }
}

/// The purchase requests waiting for approval in the source's ERP, in the canonical shape.
pub async fn pending_purchase_requests(source: &ErpSource) -> Result<Vec<ErpRecord>, DeliveryError> {
    source.reader.pending_purchase_requests().await.map_err(|err| err.into_delivery(&read_destination(&source.name)))
}
