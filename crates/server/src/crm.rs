//! CRM change intake (Salesforce Outbound Messages and polling, Zoho notifications) and the
//! read that follows it.
//!
//! A change notice is stored first (the vendor is acknowledged only after the commit) together
//! with one *read job* for the changed record. Read jobs coalesce: while one waits for a record,
//! later notices of that record join it, and it runs `coalesce` after the first notice, so a burst
//! of edits costs one read and gives one event. The read job's sink, [`RefreshSink`], fetches the
//! record's current state with its account and last activities (one or two API calls), turns it
//! into the canonical event and commits that event with the deliveries the flows plan for it.
//! The read's idempotency key is the event's dedup key, so a read repeated after a crash adds
//! nothing.

use crate::error::{ApiError, StateError};
use crate::hooks::{commit, refuse};
use crate::reads::{commit_all, commit_read, Notices, ReadRequest};
use crate::state::AppState;
use crate::supervisor::{pause, TaskError};
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use connect::{Clock, Delivery, DeliveryError, Idempotency, Receipt, Sink};
use connectors::reader::CrmReader;
use connectors::salesforce::client::SalesforceClient;
use connectors::salesforce::limits::Priority;
use connectors::salesforce::source::{self as sf_source, PollCursor};
use connectors::zoho::client::ZohoClient;
use connectors::zoho::source::{self as zoho_source, WatchChannel};
use model::InboundChange;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The outbox destination of a CRM source's read jobs.
pub fn refresh_destination(source: &str) -> String {
    format!("refresh:{source}")
}

/// The vendor client behind a CRM source's own intake loop: Salesforce polls by
/// `SystemModstamp`, Zoho keeps a notification channel open. Reading goes through
/// [`CrmSource::reader`].
#[derive(Clone)]
pub enum CrmClient {
    Salesforce(Arc<SalesforceClient>),
    Zoho(Arc<ZohoClient>),
}

/// One configured CRM source, as the gateway runs it.
pub struct CrmSource {
    pub name: String,
    /// Reads a record and its context for the source's read jobs.
    pub reader: Arc<dyn CrmReader>,
    pub client: CrmClient,
    pub objects: Vec<String>,
    pub coalesce: Duration,
    /// Salesforce: Outbound Messages from any other org are refused.
    pub organization_id: Option<String>,
    /// Salesforce: the secret last segment of the Outbound Message URL
    /// (`/intake/salesforce/{source}/{token}`); `None` for polling sources, which take none.
    pub outbound_token: Option<secrecy::SecretString>,
    /// Zoho: the notification channel (token verified on every notification).
    pub channel: Option<WatchChannel>,
}

impl CrmSource {
    fn system(&self) -> &'static str {
        self.reader.system()
    }

    /// Where the source's read jobs go.
    fn notices(&self) -> Notices<'_> {
        Notices {
            source: &self.name,
            system: self.system(),
            destination: refresh_destination(&self.name),
            coalesce: self.coalesce,
        }
    }

    fn watches(&self, object: &str) -> bool {
        self.objects.iter().any(|o| o.eq_ignore_ascii_case(object))
    }
}

/// `POST /intake/salesforce/{source}/{token}`: an Outbound Message (SOAP). Outbound Messages
/// carry no signature, so the source's secret URL token (compared in constant time, never
/// logged) and the org id in the message authenticate it, and every id is checked before
/// anything is stored. Every notification is stored with its read job before the exact
/// acknowledgement goes back; anything else gets a 4xx and a log line, and Salesforce keeps
/// retrying it.
pub async fn receive_outbound_message(
    State(state): State<AppState>,
    Path((source, token)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    match outbound_message(&state, &source, &token, &body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "Salesforce Outbound Message"),
    }
}

/// `POST /intake/salesforce/{source}` without the token segment: refused, with the fix.
pub async fn receive_outbound_message_without_token(
    State(state): State<AppState>,
    Path(source): Path<String>,
) -> Response {
    let err = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "bad_token",
        "Outbound Messages go to /intake/salesforce/{source}/{outbound_token}; this URL has no token",
    );
    refuse(&state, &source, err, "Salesforce Outbound Message")
}

async fn outbound_message(state: &AppState, source: &str, token: &str, body: &[u8]) -> Result<Response, ApiError> {
    let crm = crm_source(state, source, "salesforce")?;
    let (Some(expected_token), Some(organization_id)) = (&crm.outbound_token, &crm.organization_id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("source `{source}` does not take Outbound Messages"),
        ));
    };
    if !connect::secret::matches(expected_token.expose_secret().as_bytes(), token.as_bytes()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "bad_token", "the URL's token is missing or wrong"));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", "the body is not UTF-8 XML"))?;
    let message = sf_source::parse_outbound_message(text)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", err.to_string()))?;
    if !connectors::salesforce::ids::same_id(organization_id, &message.organization_id) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong_organization",
            "the message does not come from the configured Salesforce org",
        ));
    }
    // Ids become inbox keys and read URLs: each must be a real Salesforce id (length, alphabet,
    // and the 18-character form's case checksum) before anything is stored.
    for n in &message.notifications {
        for (what, id) in [("notification", &n.notification_id), ("record", &n.record_id)] {
            connectors::salesforce::ids::checked_id(id).map_err(|err| {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_id", format!("the {what} id is invalid: {err}"))
            })?;
        }
    }
    let now_ms = state.clock.now_millis();
    let mut notices = Vec::with_capacity(message.notifications.len());
    for n in &message.notifications {
        if !crm.watches(&n.sobject_type) {
            tracing::warn!(source, object = %n.sobject_type, "Outbound Message for an object the source does not list; acknowledged and ignored.");
            continue;
        }
        let detail =
            json!({ "notification_id": n.notification_id, "action_id": message.action_id, "fields": n.fields });
        notices.push(crm.notices().notice(
            format!("{source}:{}", n.notification_id),
            &n.sobject_type,
            &n.record_id,
            "updated",
            detail,
            now_ms,
        ));
    }
    commit_all(state, source, notices).await?;
    Ok(([(header::CONTENT_TYPE, sf_source::ACK_CONTENT_TYPE)], sf_source::ACK_BODY).into_response())
}

/// `POST /intake/zoho/{source}`: a notification of the source's watch channel. The channel token
/// is checked before anything is stored.
pub async fn receive_zoho_notification(
    State(state): State<AppState>,
    Path(source): Path<String>,
    body: Bytes,
) -> Response {
    match zoho_notification(&state, &source, &body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "Zoho notification"),
    }
}

async fn zoho_notification(state: &AppState, source: &str, body: &[u8]) -> Result<Response, ApiError> {
    let crm = crm_source(state, source, "zoho")?;
    let channel = zoho_channel(crm)?;
    let notification = zoho_source::verify_notification(body, std::slice::from_ref(channel))
        .map_err(|err| zoho_refusal(&err, "bad_notification"))?;
    let now_ms = state.clock.now_millis();
    notification.check_fresh(now_ms).map_err(|err| zoho_refusal(&err, "stale_notification"))?;
    let change = match notification.operation.as_str() {
        "insert" => "created",
        "delete" => "deleted",
        _ => "updated",
    };
    let detail = json!({ "channel_id": notification.channel_id, "operation": notification.operation, "server_time": notification.server_time });
    let notices = notification.ids.iter().map(|id| {
        let dedup = format!("{source}:{}:{}:{id}", notification.channel_id, notification.server_time);
        crm.notices().notice(dedup, &notification.module, id, change, detail.clone(), now_ms)
    });
    commit_all(state, source, notices.collect()).await?;
    Ok((StatusCode::OK, axum::Json(json!({"status": "accepted"}))).into_response())
}

/// `POST /intake/zoho/{source}/workflow`: a Zoho workflow rule's webhook (the payload
/// `{"module","id","stage","modified_time","secret"}` built from merge fields), for changes a
/// channel does not report. Its `secret` must equal the source's channel token.
pub async fn receive_zoho_workflow(State(state): State<AppState>, Path(source): Path<String>, body: Bytes) -> Response {
    match zoho_workflow(&state, &source, &body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "Zoho workflow webhook"),
    }
}

async fn zoho_workflow(state: &AppState, source: &str, body: &[u8]) -> Result<Response, ApiError> {
    let crm = crm_source(state, source, "zoho")?;
    let channel = zoho_channel(crm)?;
    let hook = zoho_source::WorkflowWebhook::parse_verified(body, &channel.token)
        .map_err(|err| zoho_refusal(&err, "bad_webhook"))?;
    if !crm.watches(&hook.module) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unwatched_module",
            format!("source `{source}` does not list module `{}`", hook.module),
        ));
    }
    let now_ms = state.clock.now_millis();
    let stamp = hook.modified_time.clone().unwrap_or_else(|| now_ms.to_string());
    let detail = json!({ "workflow": true, "stage": hook.stage, "modified_time": hook.modified_time });
    let intake = crm.notices().notice(
        format!("{source}:workflow:{}:{stamp}", hook.id),
        &hook.module,
        &hook.id,
        "updated",
        detail,
        now_ms,
    );
    commit(state, source, intake).await?;
    Ok((StatusCode::OK, axum::Json(json!({"status": "accepted"}))).into_response())
}

/// The watch channel of a Zoho source (every Zoho source has one; its token is the shared secret
/// of notifications and workflow webhooks alike).
fn zoho_channel(crm: &CrmSource) -> Result<&WatchChannel, ApiError> {
    crm.channel.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_source", format!("`{}` takes no Zoho notifications", crm.name))
    })
}

/// Every refusal is 401: the channel token travels inside the body, so a body that cannot be
/// read carries no credential either. The message says which it was.
fn zoho_refusal(err: &zoho_source::NotificationError, code: &'static str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, err.to_string())
}

fn crm_source<'a>(state: &'a AppState, source: &str, system: &str) -> Result<&'a Arc<CrmSource>, ApiError> {
    if !state.is_accepting() {
        return Err(ApiError::unavailable("draining", "the gateway is shutting down; retry later", 1));
    }
    state.crm.get(source).filter(|s| s.system() == system).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_source", format!("no {system} source named `{source}`"))
    })
}

/// The sink of a CRM source's read jobs: read the record, commit the canonical event.
pub struct RefreshSink {
    pub source: Arc<CrmSource>,
    /// The event is committed through the same intake path as every other event.
    pub state: AppState,
}

#[async_trait]
impl Sink for RefreshSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let request = ReadRequest::from_delivery(delivery)?;
        let ReadRequest { object, id, change } = &request;
        let inbound = match self.source.reader.read(object, id).await? {
            Some(s) => InboundChange {
                event_type: format!("{}.{object}", self.source.system()),
                entity: s.entity,
                entity_id: s.entity_id,
                change: change.clone(),
                dedup_key: delivery.idempotency_key.clone(),
                source_time_ms: s.source_time_ms,
                data: s.data,
            },
            None => request.gone(self.source.system(), &delivery.idempotency_key),
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

/// Polls a Salesforce source by `SystemModstamp` every `interval` until `cancel`: each changed
/// record gets a stored notice and a read job; the cursor (timestamp and last id, so ties on one
/// timestamp are neither lost nor repeated) is saved only after the notices are committed.
pub async fn poll_loop(
    state: AppState,
    source: Arc<CrmSource>,
    interval: Duration,
    cancel: CancellationToken,
) -> Result<(), TaskError> {
    let CrmClient::Salesforce(client) = source.client.clone() else { return Ok(()) };
    loop {
        for object in &source.objects {
            if let Err(err) = poll_once(&state, &source, &client, object).await {
                tracing::warn!(source = %source.name, object, "Salesforce poll failed; will try again: {err}");
            }
        }
        if !pause(&cancel, interval).await {
            return Ok(());
        }
    }
}

async fn poll_once(
    state: &AppState,
    source: &CrmSource,
    client: &SalesforceClient,
    object: &str,
) -> Result<(), StateError> {
    let name = format!("salesforce.poll.{}.{object}", source.name);
    let now = state.clock.now_millis();
    let mut cursor = match state.store.get_cursor(&name).await? {
        Some(text) => PollCursor::decode(&text)
            .map_err(|e| StateError::Unreadable { what: format!("poll cursor `{name}`"), reason: e.to_string() })?,
        // A new source starts now: it reports changes from here on, not the org's history.
        None => {
            let start = PollCursor::starting_at(state.clock.now());
            state.store.put_cursor(&name, &start.encode(), now).await?;
            return Ok(());
        }
    };
    let rows =
        sf_source::poll_changes(client, object, &["Id", "SystemModstamp"], &mut cursor, Priority::Background).await?;
    let notices = rows.iter().map(|row| {
        let id = row.get("Id").and_then(Value::as_str).unwrap_or_default();
        let stamp = row.get("SystemModstamp").and_then(Value::as_str).unwrap_or_default();
        source.notices().notice(
            format!("{}:poll:{id}:{stamp}", source.name),
            object,
            id,
            "updated",
            json!({ "SystemModstamp": stamp }),
            now,
        )
    });
    commit_all(state, &source.name, notices.collect()).await?;
    Ok(state.store.put_cursor(&name, &cursor.encode(), now).await?)
}

/// Keeps a Zoho source's notification channel open: enables it at start (retrying every minute
/// until Zoho accepts), then pushes its expiry a week ahead before it lapses.
pub async fn zoho_watch_loop(
    source: Arc<CrmSource>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) -> Result<(), TaskError> {
    let (CrmClient::Zoho(client), Some(channel)) = (source.client.clone(), source.channel.clone()) else {
        return Ok(());
    };
    const RETRY: Duration = Duration::from_secs(60);
    const CHECK: Duration = Duration::from_secs(3600);
    let mut expiry = loop {
        let expiry = zoho_source::max_expiry(clock.now());
        match client.watch(channel.enable_body(expiry)).await {
            Ok(answer) if answer.first().is_some_and(|s| s.is_success()) => {
                tracing::info!(source = %source.name, channel = %channel.channel_id, "Zoho notification channel enabled.");
                break expiry;
            }
            Ok(answer) => {
                tracing::warn!(source = %source.name, answer = ?answer.first().map(|s| s.summary()), "Zoho refused the notification channel; retrying in a minute.")
            }
            Err(err) => {
                tracing::warn!(source = %source.name, "Enabling the Zoho notification channel failed; retrying in a minute: {err}")
            }
        }
        if !pause(&cancel, RETRY).await {
            return Ok(());
        }
    };
    loop {
        if !pause(&cancel, CHECK).await {
            return Ok(());
        }
        match zoho_source::renew_if_due(&client, &channel, expiry, zoho_source::DEFAULT_RENEW_MARGIN, clock.as_ref())
            .await
        {
            Ok(Some(next)) => expiry = next,
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(source = %source.name, "Renewing the Zoho notification channel failed; will retry: {err}")
            }
        }
    }
}

/// A stable numeric channel id for a source (Zoho channel ids are numbers).
pub fn channel_id(source: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in source.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}", 1_000_000_000 + hash % 9_000_000_000)
}

/// Names of every CRM source, by name, for the router and the gateway.
pub type CrmSources = BTreeMap<String, Arc<CrmSource>>;
