//! DingTalk inbound: `POST /dingtalk/callback` (encrypted HTTP callbacks, reference §6; with
//! several HTTP-mode sources, `POST /dingtalk/callback/{source}`) and the Stream handler (§7). Both persist the event before they acknowledge it, so an
//! acknowledged event is never lost; DingTalk's redeliveries collapse on the event's dedup key.

use crate::error::ApiError;
use crate::hooks::{commit, refuse};
use crate::state::AppState;
use crate::supervisor::{OnFailure, TaskError};
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use connectors::dingtalk::callback::{self, CallbackRequest};
use connectors::dingtalk::source;
use connectors::dingtalk::stream::{CallbackRefused, EventAck, Frame, StreamHandler};
use model::InboundChange;
use secrecy::ExposeSecret;

/// Applies a stored directory change to the app's directory copy, in the background: the
/// event is already durable, and the ACK must not wait for DingTalk's contacts API.
fn update_directory(state: &AppState, source: &str, inbound: &InboundChange, duplicate: bool) {
    if duplicate || !crate::directory::is_directory_event(&inbound.event_type) {
        return;
    }
    let Some(keeper) = state.directories.get(source).cloned() else { return };
    let (event_type, payload) = (inbound.event_type.clone(), inbound.data.clone());
    // Abandoned on failure: the next full sync applies what this change would have.
    state.tasks.spawn(format!("directory-change:{}", keeper.app()), OnFailure::Abandon, move |_| {
        let (keeper, event_type, payload) = (keeper.clone(), event_type.clone(), payload.clone());
        async move {
            keeper.apply(&event_type, &payload).await.map_err(|err| {
                TaskError::new(format!(
                    "DingTalk directory change {event_type} not applied (the next full sync will): {err}"
                ))
            })
        }
    });
}

/// Seconds DingTalk is asked to wait when the gateway is draining or overloaded.
const RETRY_AFTER_SECS: u64 = 1;

/// Id-link kind of the people who may click a card sent with HTTP callbacks (`left` = its
/// `outTrackId`, `data` = `{"group", "users"}`), recorded when the card is planned.
pub const CARD_RECIPIENTS: &str = "card.recipients";

/// Every callback that cannot be verified or decrypted gets this one answer, byte for byte: a
/// caller who could tell a bad signature from bad padding, a wrong length or a wrong owner key
/// would have an oracle against the AES key. The detail goes to the local log only.
fn unverifiable(source: &str, err: &callback::CallbackError) -> ApiError {
    tracing::warn!(source = %source, "DingTalk callback refused: {err}");
    ApiError::new(StatusCode::BAD_REQUEST, "bad_callback", "the callback could not be verified")
}

/// `POST /dingtalk/callback`: the one DingTalk source in HTTP mode.
pub async fn receive_default_callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let sources: Vec<String> = state.dingtalk_callbacks.keys().cloned().collect();
    match sources.as_slice() {
        [only] => {
            let source = only.clone();
            receive_callback(State(state), Path(source), RawQuery(query), body).await
        }
        [] => refuse(
            &state,
            "(none)",
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_source",
                "no DingTalk source is configured with mode = \"http\"",
            ),
            "DingTalk callback",
        ),
        many => refuse(
            &state,
            "(ambiguous)",
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ambiguous_source",
                format!(
                    "several DingTalk sources take callbacks; use /dingtalk/callback/{{source}} with one of: {}",
                    many.join(", ")
                ),
            ),
            "DingTalk callback",
        ),
    }
}

pub async fn receive_callback(
    State(state): State<AppState>,
    Path(source): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    match receive_inner(&state, &source, query.as_deref().unwrap_or(""), &body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "DingTalk callback"),
    }
}

async fn receive_inner(state: &AppState, source: &str, query: &str, body: &[u8]) -> Result<Response, ApiError> {
    if !state.is_accepting() {
        return Err(ApiError::unavailable("draining", "the gateway is shutting down; retry later", RETRY_AFTER_SECS));
    }
    let receiver = state.dingtalk_callbacks.get(source).cloned().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_source", format!("no DingTalk callback source named `{source}`"))
    })?;
    let crypto = &receiver.crypto;
    let now = state.clock.now();
    let opened = callback::open(crypto, &CallbackRequest { query, body }).map_err(|err| unverifiable(source, &err))?;
    receiver.replays.check(&opened, now.as_millisecond()).map_err(|err| {
        tracing::warn!(source = %source, "DingTalk callback refused: {err}");
        ApiError::new(StatusCode::BAD_REQUEST, "replayed_callback", "the callback is stale or was already received")
    })?;
    if !opened.is_check_url {
        let inbound = source::from_http_callback(&opened.event_type, &opened.payload)
            .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "malformed_event", err.to_string()))?;
        if let Some(inbound) = inbound {
            let intake = state.intake.inbound(source, &inbound, now)?;
            let committed = commit(state, source, intake).await?;
            update_directory(state, source, &inbound, committed.duplicate);
            tracing::debug!(
                source = %source,
                event_id = %committed.event_id,
                entity = %inbound.entity,
                change = %inbound.change,
                duplicate = committed.duplicate,
                "DingTalk callback stored."
            );
        }
    }
    // Remembered only once stored: a push that failed to commit may be sent again as it was.
    receiver.replays.accepted(&opened, now.as_millisecond());
    // DingTalk counts the push as delivered only when this decrypts to `success` (§6.3).
    Ok((StatusCode::OK, Json(callback::success_reply(crypto, now.as_millisecond()))).into_response())
}

/// Query of `POST /dingtalk/card-callback/{source}?token=…`.
#[derive(Debug, serde::Deserialize)]
pub struct CardCallbackQuery {
    #[serde(default)]
    token: String,
}

/// `POST /dingtalk/card-callback/{source}?token=<card_callback_token>`: card clicks of cards
/// created with HTTP callbacks. DingTalk posts the same object Stream mode carries (reference
/// §4.2; its signing is UNVERIFIED), so the URL registered with `/v1.0/card/callbacks/register`
/// carries the source's own random capability (`card_callback_token`, not the signing token),
/// checked in constant time and never logged. The answer `{}` leaves the card as it is: the flows
/// update it once the click is stored.
pub async fn receive_card_callback(
    State(state): State<AppState>,
    Path(source): Path<String>,
    axum::extract::Query(query): axum::extract::Query<CardCallbackQuery>,
    body: Bytes,
) -> Response {
    match card_callback_inner(&state, &source, &query.token, &body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "DingTalk card callback"),
    }
}

async fn card_callback_inner(state: &AppState, source: &str, token: &str, body: &[u8]) -> Result<Response, ApiError> {
    if !state.is_accepting() {
        return Err(ApiError::unavailable("draining", "the gateway is shutting down; retry later", RETRY_AFTER_SECS));
    }
    let receiver = state.dingtalk_callbacks.get(source).cloned().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_source", format!("no DingTalk callback source named `{source}`"))
    })?;
    let Some(card_token) = &receiver.card_token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "card_callbacks_closed",
            "this source takes no HTTP card callbacks (no `card_callback_token` is configured)",
        ));
    };
    if !connect::secret::matches(card_token.expose_secret().as_bytes(), token.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "the `token` query parameter is missing or wrong",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", "the body is not UTF-8"))?;
    let inbound = source::from_callback(source::TOPIC_CARD_CALLBACK, "", text)
        .map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "malformed_event", err.to_string()))?;
    check_recipient(state, source, &inbound).await?;
    let intake = state.intake.inbound(source, &inbound, state.clock.now())?;
    let committed = commit(state, source, intake).await?;
    tracing::debug!(source = %source, event_id = %committed.event_id, duplicate = committed.duplicate, "DingTalk card click stored.");
    Ok((StatusCode::OK, Json(serde_json::json!({}))).into_response())
}

/// An HTTP card click counts only from someone the card was sent to: a user of its robot chat,
/// or (for a group card) an active member of the app's directory. The token in the URL proves
/// the request came through the registered route, not who clicked, so a click on a card the
/// gateway never sent, or by anyone else, is refused (403) and audited.
async fn check_recipient(state: &AppState, source: &str, inbound: &InboundChange) -> Result<(), ApiError> {
    let card = &inbound.entity_id;
    let user = inbound.data.get("userId").and_then(serde_json::Value::as_str).unwrap_or_default();
    let link = state.store.get_link(CARD_RECIPIENTS, card).await.map_err(|err| {
        ApiError::unavailable("store_unavailable", format!("the card could not be looked up: {err}"), RETRY_AFTER_SECS)
    })?;
    let refusal = match link.and_then(|l| l.data).and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok()) {
        None => Some(("unknown_card", format!("card `{card}` was not sent by this gateway with HTTP callbacks"))),
        Some(recipients) => {
            let users: Vec<&str> = recipients["users"]
                .as_array()
                .map(|u| u.iter().filter_map(serde_json::Value::as_str).collect())
                .unwrap_or_default();
            if !users.is_empty() {
                (!users.contains(&user))
                    .then(|| ("not_a_recipient", format!("{user} is not a recipient of card `{card}`")))
            } else {
                match state.directories.get(source) {
                    Some(keeper) => match keeper.current().await {
                        Ok(Some(directory)) if directory.user(user).is_some_and(|u| u.active) => None,
                        Ok(Some(_)) => Some((
                            "not_a_recipient",
                            format!("{user} is not an active member of the company's DingTalk directory"),
                        )),
                        // Not synced yet: DingTalk shows a group card only to the group's members.
                        _ => None,
                    },
                    None => None,
                }
            }
        }
    };
    let Some((code, reason)) = refusal else { return Ok(()) };
    let audit = store::NewAuditEntry {
        at: state.clock.now_millis(),
        actor: format!("source:{source}"),
        action: "intake.refused".into(),
        subject: format!("card_action:{card}"),
        detail: serde_json::json!({"code": code, "reason": reason, "claimed_user": user}).to_string(),
    };
    if let Err(err) = state.store.audit_append(&audit).await {
        tracing::error!(source = %source, "The refused card click could not be audited: {err}");
    }
    Err(ApiError::new(StatusCode::FORBIDDEN, code, reason))
}

/// Stream frames of one DingTalk source, persisted before the client ACKs them.
pub struct StreamIntake {
    pub state: AppState,
    pub source: String,
}

impl StreamIntake {
    async fn store(&self, inbound: &InboundChange) -> Result<(), ApiError> {
        if !self.state.is_accepting() {
            return Err(ApiError::unavailable("draining", "shutting down", RETRY_AFTER_SECS));
        }
        let intake = self.state.intake.inbound(&self.source, inbound, self.state.clock.now())?;
        let committed = commit(&self.state, &self.source, intake).await?;
        update_directory(&self.state, &self.source, inbound, committed.duplicate);
        tracing::debug!(
            source = %self.source,
            event_id = %committed.event_id,
            entity = %inbound.entity,
            change = %inbound.change,
            duplicate = committed.duplicate,
            "DingTalk Stream event stored."
        );
        Ok(())
    }
}

#[async_trait]
impl StreamHandler for StreamIntake {
    async fn on_event(&self, frame: &Frame) -> EventAck {
        let event_type = frame.headers.get("eventType").map(String::as_str).unwrap_or_default();
        let event_id = frame.headers.get("eventId").map(String::as_str);
        let inbound = match source::from_stream_event(event_type, event_id, &frame.data) {
            Ok(inbound) => inbound,
            Err(err) => {
                // Redelivery would not fix it: keep it as a dead letter, then acknowledge.
                let key = format!("unreadable:{event_type}:{}", event_id.or(frame.message_id()).unwrap_or_default());
                let raw = serde_json::json!({ "eventType": event_type, "eventId": event_id, "data": frame.data });
                let now = self.state.clock.now();
                let kept = match self.state.intake.unreadable(&self.source, &key, raw, err.to_string(), now) {
                    Ok(intake) => commit(&self.state, &self.source, intake).await.map(|_| ()),
                    Err(refused) => Err(refused),
                };
                return match kept {
                    Ok(()) => EventAck::Success,
                    Err(not_stored) => {
                        tracing::warn!(source = %self.source, event_type, "Unreadable DingTalk event not stored, asking for redelivery: {}", not_stored.message);
                        EventAck::Later
                    }
                };
            }
        };
        match self.store(&inbound).await {
            Ok(()) => EventAck::Success,
            Err(err) => {
                tracing::warn!(source = %self.source, event_type, "DingTalk Stream event not stored, asking for redelivery: {}", err.message);
                EventAck::Later
            }
        }
    }

    async fn on_callback(&self, frame: &Frame) -> Result<Option<serde_json::Value>, CallbackRefused> {
        let topic = frame.headers.get("topic").map(String::as_str).unwrap_or_default();
        let message_id = frame.headers.get("messageId").map(String::as_str).unwrap_or_default();
        let inbound = source::from_callback(topic, message_id, &frame.data).map_err(|err| err.to_string())?;
        self.store(&inbound).await.map_err(|err| err.message)?;
        // The card is updated by the flows (through the outbox), not in the ACK: an ACK that
        // changed the card before the decision is durable could show a result that never happens.
        Ok(None)
    }
}
