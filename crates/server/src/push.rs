//! The one door for what record systems push: every vendor's push routes
//! ([`System::push_paths`]) lead to [`receive`], which hands the request to the source's
//! [`PushIntake`] and stores what it reports. A changed record becomes a change notice with a
//! read job (see [`crate::reads`]); whole records become events; the vendor gets the answer it
//! expects only after the commit. Nothing here knows a vendor.

use crate::error::ApiError;
use crate::hooks::refuse;
use crate::reads::{commit_all, RecordSource};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use connectors::push::{Acknowledgement, PushRefusal, PushRequest, Pushed};
use connectors::registry::System;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// `POST` to one of `system`'s push routes (`path`, a route template): see the module docs.
pub async fn receive(
    system: System,
    path: &'static str,
    State(state): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let source = params.get("source").cloned().unwrap_or_default();
    // Read leniently: a query the vendor did not mean for us must not refuse its push before the
    // source's intake has had its say.
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let request = PushRequest {
        path,
        token: params.get("token").map(String::as_str),
        headers: &headers,
        query: &query,
        body: &body,
        now: state.clock.now(),
    };
    match store_push(&state, system, &source, &request).await {
        Ok(response) => response,
        Err(err) => refuse(&state, &source, err, &format!("{} push", system.as_str())),
    }
}

/// The source named `source` of `system`, if it takes pushes.
fn target<'a>(state: &'a AppState, system: System, source: &str) -> Result<&'a dyn RecordSource, ApiError> {
    if !state.is_accepting() {
        return Err(ApiError::unavailable("draining", "the gateway is shutting down; retry later", 1));
    }
    let erp = state.erp.get(source).map(|s| s.as_ref() as &dyn RecordSource);
    let crm = state.crm.get(source).map(|s| s.as_ref() as &dyn RecordSource);
    erp.or(crm).filter(|t| t.system() == system.as_str()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_source",
            format!("no {} source named `{source}`", system.as_str()),
        )
    })
}

async fn store_push(
    state: &AppState,
    system: System,
    source: &str,
    request: &PushRequest<'_>,
) -> Result<Response, ApiError> {
    let target = target(state, system, source)?;
    match target.push_intake().receive(request) {
        Ok(Pushed::Changed(changes)) => {
            let now = state.clock.now_millis();
            let notices = target.notices();
            let mut intakes = Vec::with_capacity(changes.len());
            for change in changes {
                if !target.watches(&change.object) {
                    tracing::info!(source, object = %change.object, "Push for an object the source does not list; acknowledged and ignored.");
                    continue;
                }
                let dedup = format!("{source}:{}", change.push_id);
                intakes.push(notices.notice(dedup, &change.object, &change.id, change.change, change.detail, now));
            }
            commit_all(state, source, intakes).await?;
        }
        Ok(Pushed::Ignored { record_type }) => {
            tracing::info!(source, %record_type, "Push for a record type dingbridge does not read; acknowledged and ignored.");
        }
        Ok(Pushed::Records(records)) => target.commit_records(state, &records).await?,
        Err(PushRefusal::Unreadable { code, reason }) => {
            let kept = unreadable_document(state, source, request.body, &reason, "http")?;
            commit_all(state, source, vec![kept]).await?;
            return Err(ApiError::new(StatusCode::BAD_REQUEST, code, reason));
        }
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let message = match &refusal {
                PushRefusal::NotTaken { detail } => format!("source `{source}`: {detail}"),
                other => other.to_string(),
            };
            return Err(ApiError::new(status, refusal.code(), message));
        }
    }
    Ok(acknowledge(target.push_intake().acknowledgement()))
}

fn acknowledge(ack: Acknowledgement) -> Response {
    match ack {
        Acknowledgement::Accepted => (StatusCode::OK, axum::Json(json!({"status": "accepted"}))).into_response(),
        Acknowledgement::NoContent => StatusCode::NO_CONTENT.into_response(),
        Acknowledgement::Body { content_type, body } => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
    }
}

/// A pushed document that cannot be read, kept as a dead letter with its text and the reason;
/// stored under its content hash, so the same bad file or packet sent again is one dead letter.
pub(crate) fn unreadable_document(
    state: &AppState,
    source: &str,
    body: &[u8],
    reason: &str,
    via: &str,
) -> Result<store::Intake, ApiError> {
    let hash = hex::encode(Sha256::digest(body));
    let raw = json!({ "via": via, "document": String::from_utf8_lossy(body) });
    state.intake.unreadable(source, &format!("document:{hash}"), raw, reason.to_owned(), state.clock.now())
}
