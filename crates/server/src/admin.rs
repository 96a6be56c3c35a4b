//! `/api/`: the admin API (dead letters, replay, stats). Every route needs the bearer token;
//! without a configured token the admin API answers 401 to everyone.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::ExposeSecret;
use store::StoreError;

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/dead-letters", get(list_dead))
        .route("/dead-letters/{id}", axum::routing::delete(drop_dead))
        .route("/jobs/{job_id}/replay", post(replay))
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// `GET /metrics` (admin listener): Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.render(state.store.as_ref(), state.clock.as_ref()).await
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = match (&state.admin_token, presented) {
        (Some(expected), Some(given)) => {
            connect::secret::matches(expected.expose_secret().as_bytes(), given.as_bytes())
        }
        _ => false,
    };
    if ok {
        next.run(request).await
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid admin bearer token is required")
            .into_response()
    }
}

fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string()),
        other => ApiError::unavailable("store_unavailable", other.to_string(), 1),
    }
}

async fn stats(State(state): State<AppState>) -> Result<Json<store::StoreStats>, ApiError> {
    let now = state.clock.now_millis();
    state.store.stats(now).await.map(Json).map_err(store_error)
}

#[derive(serde::Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_dead(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<store::DeadLetter>>, ApiError> {
    let limit = query.limit.unwrap_or(100).min(10_000);
    state.store.list_dead(limit).await.map(Json).map_err(store_error)
}

/// Who the audit log names for actions taken through this API.
const ACTOR: &str = "admin-api";

async fn replay(State(state): State<AppState>, Path(job_id): Path<i64>) -> Result<StatusCode, ApiError> {
    let now = state.clock.now_millis();
    state.store.replay_dead(job_id, now).await.map_err(store_error)?;
    (state.nudge)();
    state.store.audit_append(&store::NewAuditEntry::dlq_replayed(ACTOR, job_id, now)).await.map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn drop_dead(State(state): State<AppState>, Path(id): Path<i64>) -> Result<StatusCode, ApiError> {
    state.store.drop_dead(id).await.map_err(store_error)?;
    let now = state.clock.now_millis();
    state.store.audit_append(&store::NewAuditEntry::dlq_dropped(ACTOR, id, now)).await.map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}
