//! The gateway's HTTP face (axum): webhook intake, health, metrics and the admin API.
//!
//! Intake is durable before it is acknowledged: a webhook gets 2xx only after the group commit
//! that holds its inbox row and all its outbox jobs has returned.

pub mod admin;
pub mod approvals;
pub mod crm;
pub mod dingtalk;
pub mod directory;
pub mod erp;
pub mod error;
pub mod gateway;
pub mod hooks;
pub mod metrics;
pub mod pipeline;
pub mod reads;
pub mod state;

pub use state::{AppState, Intake, Planned, Refusal};

use axum::routing::{get, post};
use axum::Router;

/// All gateway routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.max_body_bytes;
    Router::new()
        .route("/healthz", get(hooks::healthz))
        .route("/metrics", get(metrics::render))
        .route("/hooks/{source}", post(hooks::receive).layer(axum::extract::DefaultBodyLimit::max(body_limit)))
        .route(
            "/dingtalk/callback",
            post(dingtalk::receive_default_callback).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/dingtalk/card-callback/{source}",
            post(dingtalk::receive_card_callback).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/dingtalk/callback/{source}",
            post(dingtalk::receive_callback).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/intake/salesforce/{source}/{token}",
            post(crm::receive_outbound_message).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route("/intake/salesforce/{source}", post(crm::receive_outbound_message_without_token))
        .route(
            "/intake/zoho/{source}",
            post(crm::receive_zoho_notification).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/intake/zoho/{source}/workflow",
            post(crm::receive_zoho_workflow).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/intake/netsuite/{source}",
            post(erp::receive_netsuite).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/intake/dynamics/{source}",
            post(erp::receive_dynamics).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .route(
            "/intake/sap/{source}/idoc",
            post(erp::receive_idoc).layer(axum::extract::DefaultBodyLimit::max(body_limit)),
        )
        .nest("/api", admin::router(state.clone()))
        .with_state(state)
}
