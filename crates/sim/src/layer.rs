//! The layer every simulator runs behind: journal each vendor request, then apply the fault plan.

use crate::state::{FaultDecision, JournalEntry, Outcome, SimState};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest request body a simulator accepts (answers 413 above it).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long a dropped request stalls at most if the client never gives up.
const DROP_STALL_MAX: Duration = Duration::from_secs(600);

/// Wraps `router` so every request outside `/_sim/` is journaled and subject to the fault plan:
/// latency, drops and forced statuses before the vendor handler runs, slow answers after it.
/// Control routes (`/_sim/...`) are neither journaled nor faulted.
pub fn sim_layer(router: Router, state: SimState) -> Router {
    router.layer(axum::middleware::from_fn_with_state(state, journal_and_fault))
}

fn is_control_path(path: &str) -> bool {
    path == "/_sim" || path.starts_with("/_sim/")
}

async fn journal_and_fault(State(state): State<SimState>, req: Request, next: Next) -> Response {
    if is_control_path(req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let msg = format!("request body unreadable or over {MAX_BODY_BYTES} bytes: {err}");
            return (StatusCode::PAYLOAD_TOO_LARGE, msg).into_response();
        }
    };
    let index = state.begin(JournalEntry {
        index: 0,
        time: jiff::Timestamp::now().to_string(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        status: None,
        dropped: false,
        faulted: false,
        slow: false,
    });

    let fault = state.next_fault();
    if let Some(fault) = &fault {
        if !fault.latency.is_zero() {
            tokio::time::sleep(fault.latency).await;
        }
        if fault.drop {
            state.finish(index, Outcome { status: None, dropped: true, faulted: true, slow: false });
            tracing::debug!(index, "Simulator dropped a request (fault plan); stalling.");
            tokio::select! {
                () = state.shutting_down() => {}
                () = tokio::time::sleep(DROP_STALL_MAX) => {}
            }
            // Only reached at shutdown or after the stall cap: the client has long given up.
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    let response = match fault.as_ref().and_then(|f| f.status.map(|s| (f, s))) {
        Some((fault, status)) => forced_response(fault, status),
        None => next.run(Request::from_parts(parts, Body::from(bytes))).await,
    };
    let slow = fault.as_ref().and_then(|f| f.slow);
    let outcome = Outcome {
        status: Some(response.status().as_u16()),
        dropped: false,
        faulted: fault.is_some(),
        slow: slow.is_some(),
    };
    // Journaled before the hold: a client that gives up meanwhile drops this future, and the
    // journal must still show that the handler ran and what it answered.
    state.finish(index, outcome);
    if let Some(hold) = slow {
        tracing::debug!(index, ?hold, "Simulator holds an answer (fault plan); the handler has run.");
        tokio::select! {
            () = state.shutting_down() => {}
            () = tokio::time::sleep(hold) => {}
        }
    }
    response
}

fn forced_response(fault: &FaultDecision, status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match &fault.body {
        Some(serde_json::Value::String(text)) => (code, text.clone()).into_response(),
        Some(json) => (code, axum::Json(json.clone())).into_response(),
        None => {
            let json = serde_json::json!({"error": "fault injected by simulator", "status": status});
            (code, axum::Json(json)).into_response()
        }
    };
    for (name, value) in &fault.headers {
        // Validated when the plan was installed.
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
