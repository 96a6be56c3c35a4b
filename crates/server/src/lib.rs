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
pub mod leader;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod poll;
pub mod push;
pub mod reads;
pub mod retention;
pub mod sources;
pub mod state;
pub mod supervisor;

pub use state::{AppState, IntakePlanner, Planned, Refusal};

use axum::http::Method;
use axum::routing::{get, post, MethodRouter};
use axum::Router;

/// Every route of the public listener (`[server] listen`, the one vendors and DingTalk reach),
/// as (method, path, handler). The router is built from this list, and the R24 test walks it, so
/// no route can be added without the test trying it unauthenticated.
fn public_routes() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    let mut routes = vec![
        (Method::GET, "/healthz", get(hooks::healthz)),
        (Method::POST, "/hooks/{source}", post(hooks::receive)),
        (Method::POST, "/dingtalk/callback", post(dingtalk::receive_default_callback)),
        (Method::POST, "/dingtalk/callback/{source}", post(dingtalk::receive_callback)),
        (Method::POST, "/dingtalk/card-callback/{source}", post(dingtalk::receive_card_callback)),
    ];
    // Every record system's push routes, from the registry: one handler takes them all through
    // the source's intake.
    for system in connectors::registry::System::ALL {
        for &path in system.push_paths() {
            let handler = move |state, params, query, headers, body| {
                push::receive(system, path, state, params, query, headers, body)
            };
            routes.push((Method::POST, path, post(handler)));
        }
    }
    routes
}

/// (method, path) of every public route, for the route walk.
pub fn public_route_list() -> Vec<(Method, &'static str)> {
    public_routes().into_iter().map(|(method, path, _)| (method, path)).collect()
}

/// The public listener's routes.
pub fn router(state: AppState) -> Router {
    let body_limit = state.max_body_bytes;
    public_routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| router.route(path, handler))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The admin listener's routes (`[server] admin_listen`, loopback by default): `/metrics` and
/// the admin API, every route of which needs the bearer token.
pub fn admin_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(admin::metrics)).nest("/api", admin::router(state.clone())).with_state(state)
}
