//! The `/_sim/` control API, the same shape on every simulator.

use crate::error::SimError;
use crate::layer::sim_layer;
use crate::state::{FaultSpec, SimState};
use crate::Simulator;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

/// Query of `GET /_sim/requests`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestFilter {
    /// Only entries with `index >= since`.
    #[serde(default)]
    pub since: u64,
    /// Only entries whose path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

#[derive(Clone)]
struct Ctl {
    state: SimState,
    sim: Arc<dyn Simulator>,
}

/// The control routes:
///
/// | route | effect |
/// |---|---|
/// | `GET /_sim/requests?since=N&path_prefix=/x` | journal as a JSON array |
/// | `POST /_sim/faults` | install a [`FaultSpec`] (replaces the current plan): `status`, `latency_ms`, `drop_ratio`, `slow_ratio` + `slow_ms`, `duration_ms`, `count`, `body`, `headers` |
/// | `GET /_sim/faults` | the plan in force, or `null` |
/// | `DELETE /_sim/faults` | clear the plan |
/// | `POST /_sim/reset` | clear journal and faults, reset the simulator to its seed |
/// | `GET /_sim/info` | `{"simulator": name, "info": <Simulator::info>}` |
/// | `POST /_sim/records/{entity}` | [`Simulator::put_record`] |
pub fn control_router(state: SimState, sim: Arc<dyn Simulator>) -> Router {
    Router::new()
        .route("/_sim/requests", get(requests))
        .route("/_sim/faults", post(set_faults).get(get_faults).delete(clear_faults))
        .route("/_sim/reset", post(reset))
        .route("/_sim/info", get(info))
        .route("/_sim/records/{entity}", post(put_record))
        .with_state(Ctl { state, sim })
}

/// A complete simulator application: vendor routes + control routes behind [`sim_layer`].
pub fn app(sim: Arc<dyn Simulator>, state: SimState) -> Router {
    let vendor = Arc::clone(&sim).router();
    sim_layer(vendor.merge(control_router(state.clone(), sim)), state)
}

async fn requests(State(ctl): State<Ctl>, Query(filter): Query<RequestFilter>) -> Response {
    Json(ctl.state.requests(filter.since, filter.path_prefix.as_deref())).into_response()
}

async fn set_faults(State(ctl): State<Ctl>, body: axum::body::Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(err) => return SimError::InvalidFault { detail: err.to_string() }.into_response(),
    };
    match ctl.state.set_faults(spec.clone()) {
        Ok(()) => {
            tracing::info!(simulator = ctl.sim.name(), ?spec, "Simulator fault plan installed.");
            Json(spec).into_response()
        }
        Err(err) => err.into_response(),
    }
}

async fn get_faults(State(ctl): State<Ctl>) -> Response {
    Json(ctl.state.faults()).into_response()
}

async fn clear_faults(State(ctl): State<Ctl>) -> Response {
    ctl.state.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(ctl): State<Ctl>) -> Response {
    ctl.state.reset();
    ctl.sim.reset();
    StatusCode::NO_CONTENT.into_response()
}

async fn info(State(ctl): State<Ctl>) -> Response {
    Json(serde_json::json!({ "simulator": ctl.sim.name(), "info": ctl.sim.info() })).into_response()
}

async fn put_record(State(ctl): State<Ctl>, Path(entity): Path<String>, body: axum::body::Bytes) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(err) => {
            let detail = format!("body is not JSON: {err}");
            return SimError::InvalidRecord { entity, detail }.into_response();
        }
    };
    match ctl.sim.put_record(&entity, value).await {
        Ok(stored) => Json(stored).into_response(),
        Err(err) => err.into_response(),
    }
}
