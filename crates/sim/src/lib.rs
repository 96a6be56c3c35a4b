//! The simulator chassis every vendor simulator plugs into.
//!
//! A vendor simulator (for example `connectors::dingtalk::sim::DingTalkSim`) implements
//! [`Simulator`]: its own routes at the vendor's real paths, its seeded test credentials
//! ([`Simulator::info`]) and its records. This crate adds what every simulator shares, the same
//! shape for all of them:
//!
//! - a request journal and a fault plan ([`SimState`]),
//! - the layer that journals every vendor request and applies the faults ([`sim_layer`]),
//! - the `/_sim/` control API ([`control_router`]),
//! - serving on a loopback port ([`serve`], [`serve_all`]),
//! - the OData chassis the OData simulators share ([`odata`]).
//!
//! Simulators are test tools: the journal keeps headers and bodies as received, secrets
//! included, so a test can assert on exactly what a client sent. It must never be exposed
//! beyond loopback.

mod control;
mod error;
mod layer;
pub mod odata;
mod origin;
mod server;
mod state;
pub mod text;

#[cfg(test)]
mod tests;

pub use control::{app, control_router, RequestFilter};
pub use error::SimError;
pub use layer::{sim_layer, MAX_BODY_BYTES};
pub use origin::origin;
pub use server::{serve, serve_all, RunningSim, SimFleet};
pub use state::{FaultSpec, JournalEntry, SimState, JOURNAL_CAPACITY};

use std::sync::Arc;

/// One vendor simulator. Kept explicit: a name, routes, info, reset and records.
#[async_trait::async_trait]
pub trait Simulator: Send + Sync + 'static {
    /// Short stable name, the key in `dingbridge sim`'s port map (e.g. `"dingtalk"`).
    fn name(&self) -> &'static str;
    /// The vendor routes at their real paths. Extra simulator-only routes must live under
    /// `/_sim/` and must not collide with the chassis routes.
    fn router(self: Arc<Self>) -> axum::Router;
    /// Seeded test credentials, limits and webhook targets, served at `GET /_sim/info`.
    fn info(&self) -> serde_json::Value;
    /// Back to the seeded state (called by `POST /_sim/reset`).
    fn reset(&self);
    /// Called once by [`serve`] before the first request, with the chassis state, so a simulator
    /// can journal traffic that is not plain HTTP (WebSocket frames) in `/_sim/requests`.
    fn attach(&self, _state: SimState) {}

    /// Seed or change one record of `entity` (`POST /_sim/records/{entity}`); returns the
    /// stored record.
    async fn put_record(&self, entity: &str, value: serde_json::Value) -> Result<serde_json::Value, SimError>;
}
