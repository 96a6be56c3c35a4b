//! `POST /hooks/{source}`: signed webhook intake. `GET /healthz`.

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use store::{IntakeOutcome, StoreError};

/// Seconds a sender is asked to wait when we shed load or the store is down.
const RETRY_AFTER_SECS: u64 = 1;

pub async fn healthz(State(state): State<AppState>) -> Response {
    if state.is_accepting() {
        (StatusCode::OK, Json(serde_json::json!({"status": "ok"}))).into_response()
    } else {
        ApiError::unavailable("draining", "the gateway is shutting down", RETRY_AFTER_SECS).into_response()
    }
}

/// Refused requests share one metric label per unknown source so a stranger cannot mint labels.
pub fn refuse(state: &AppState, source: &str, err: ApiError, what: &str) -> Response {
    let label = if state.intake.has_source(source) { source } else { "(unknown)" };
    state.metrics.webhook_refused(label, err.code);
    tracing::warn!(source = %source, status = err.status.as_u16(), code = err.code, "{what} refused: {}", err.message);
    err.into_response()
}

pub async fn receive(
    State(state): State<AppState>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match receive_inner(&state, &source, &headers, body).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, "Webhook"),
    }
}

async fn receive_inner(
    state: &AppState,
    source: &str,
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    if !state.is_accepting() {
        return Err(ApiError::unavailable("draining", "the gateway is shutting down; retry later", RETRY_AFTER_SECS));
    }
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(status, "body_too_large", format!("the body exceeds {} bytes", state.max_body_bytes))
        } else {
            ApiError::new(status, "bad_body", rejection.body_text())
        }
    })?;
    let body = decode_content(headers, body, state.max_body_bytes)?;
    let now = state.clock.now();
    let intake = state.intake.webhook(source, headers, &body, now)?;
    let committed = commit(state, source, intake).await?;
    let body = serde_json::json!({
        "status": if committed.duplicate { "duplicate" } else if committed.dead { "dead_lettered" } else { "accepted" },
        "event_id": if committed.duplicate { None } else { Some(committed.event_id) },
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// What a durable intake commit decided.
pub struct Committed {
    pub event_id: String,
    pub duplicate: bool,
    pub dead: bool,
}

/// Commits one intake (group commit), then wakes the workers. Returns only after the event is
/// durable: every transport acknowledges its sender after this, never before. A refused event
/// ([`crate::Planned::refused`]) is committed as its dead letter and audited, and its error returned.
pub async fn commit(state: &AppState, source: &str, planned: impl Into<crate::Planned>) -> Result<Committed, ApiError> {
    let crate::Planned { intake, refused, card_recipients } = planned.into();
    let event_id = intake.event_id.clone();
    store_card_recipients(state, source, &event_id, &card_recipients).await?;
    let (dead, jobs) = (intake.dead_letter.is_some(), intake.jobs.len());
    let outcome = state.committer.submit(intake).await.map_err(|err| match err {
        StoreError::Overloaded => {
            ApiError::unavailable("overloaded", "the gateway's intake queue is full; retry later", RETRY_AFTER_SECS)
        }
        other => store_unavailable(state, source, &event_id, &other),
    })?;
    crashpoint::hit(crashpoint::AFTER_INTAKE_COMMIT);
    let duplicate = outcome == IntakeOutcome::Duplicate;
    if let Some(refusal) = refused {
        audit_refusal(state, source, &event_id, &refusal, duplicate).await;
        return Err(refusal.error);
    }
    accepted(state, source, &event_id, duplicate, dead, jobs);
    Ok(Committed { event_id, duplicate, dead })
}

/// Commits what one poll page found together with the poll's new cursor, in one transaction, so
/// the cursor never passes a record whose event is not stored. A refused record is kept as its
/// dead letter and audited like any refused intake; it does not hold the page back.
pub async fn commit_page(
    state: &AppState,
    source: &str,
    page: Vec<crate::Planned>,
    cursor: store::CursorUpdate,
) -> Result<(), ApiError> {
    for planned in &page {
        store_card_recipients(state, source, &planned.intake.event_id, &planned.card_recipients).await?;
    }
    let intakes: Vec<store::Intake> = page.iter().map(|p| p.intake.clone()).collect();
    let outcomes = state
        .store
        .ingest_with_cursor(&intakes, Some(&cursor))
        .await
        .map_err(|err| store_unavailable(state, source, &cursor.name, &err))?;
    crashpoint::hit(crashpoint::AFTER_POLL_PAGE_COMMIT);
    for (planned, outcome) in page.into_iter().zip(outcomes) {
        let crate::Planned { intake, refused, .. } = planned;
        let duplicate = outcome == IntakeOutcome::Duplicate;
        match refused {
            Some(refusal) => {
                audit_refusal(state, source, &intake.event_id, &refusal, duplicate).await;
                tracing::warn!(source = %source, event_id = %intake.event_id, code = refusal.error.code, "Polled record refused: {}", refusal.error.message);
            }
            None => {
                accepted(state, source, &intake.event_id, duplicate, intake.dead_letter.is_some(), intake.jobs.len())
            }
        }
    }
    Ok(())
}

/// Before the commit: once committed, the card may be sent and clicked at once.
async fn store_card_recipients(
    state: &AppState,
    source: &str,
    event_id: &str,
    card_recipients: &[store::IdLink],
) -> Result<(), ApiError> {
    for link in card_recipients {
        state.store.put_link(link).await.map_err(|err| {
            tracing::error!(source = %source, event_id = %event_id, code = err.code(), "Card recipients not stored: {err}");
            ApiError::unavailable("store_unavailable", "the event could not be stored; retry later", RETRY_AFTER_SECS)
        })?;
    }
    Ok(())
}

/// The commit path failed closed: nothing is acknowledged, the operator is alerted (an error log
/// and `dingbridge_intake_commit_failures_total`).
fn store_unavailable(state: &AppState, source: &str, what: &str, err: &StoreError) -> ApiError {
    state.metrics.commit_failed(err.code());
    tracing::error!(source = %source, event_id = %what, code = err.code(), "Intake commit failed: {err}");
    ApiError::unavailable("store_unavailable", "the event could not be stored; retry later", RETRY_AFTER_SECS)
}

/// A resend of the same refused request is the same attempt: audited once.
async fn audit_refusal(state: &AppState, source: &str, event_id: &str, refusal: &crate::Refusal, duplicate: bool) {
    if duplicate {
        return;
    }
    if let Err(err) = state.store.audit_append(&refusal.audit).await {
        tracing::error!(source = %source, event_id = %event_id, code = err.code(), "The refusal could not be audited: {err}");
    }
}

fn accepted(state: &AppState, source: &str, event_id: &str, duplicate: bool, dead: bool, jobs: usize) {
    state.metrics.webhook_accepted(source, duplicate, dead);
    if !duplicate && jobs > 0 {
        (state.nudge)();
    }
    tracing::debug!(source = %source, event_id = %event_id, duplicate, jobs, "Event accepted.");
}

/// Undo `Content-Encoding: gzip` with the same cap as plain bodies: a small gzip can inflate to
/// gigabytes, so inflation stops one byte past the cap. Signatures cover the decoded body.
fn decode_content(headers: &HeaderMap, body: Bytes, max_bytes: usize) -> Result<Bytes, ApiError> {
    use std::io::Read;
    let Some(encoding) = headers.get(axum::http::header::CONTENT_ENCODING) else {
        return Ok(body);
    };
    match encoding.to_str().map(|e| e.trim().to_ascii_lowercase()) {
        Ok(e) if e == "identity" => Ok(body),
        Ok(e) if e == "gzip" => {
            let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
            let mut inflated = Vec::new();
            flate2::read::GzDecoder::new(body.as_ref()).take(limit).read_to_end(&mut inflated).map_err(|err| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_gzip", format!("the gzip body is corrupt: {err}"))
            })?;
            if inflated.len() > max_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the body inflates past {max_bytes} bytes"),
                ));
            }
            Ok(Bytes::from(inflated))
        }
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            "send the body uncompressed or gzip-compressed",
        )),
    }
}
