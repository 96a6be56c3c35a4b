//! dingbridge engine: configuration (parse → pure validate → build), flows (match, condition,
//! templates → outbox jobs), and the outbox delivery workers.
//!
//! The engine never talks to a vendor itself (sinks do) and never reads the clock directly
//! (a [`connect::Clock`] is injected); config validation does no I/O at all.

pub mod approvals;
pub mod config;
pub mod flow;
pub mod json;
pub mod token_vault;
pub mod worker;

pub use config::{load_and_validate, Config, ConfigError, ConfigErrors, Runtime};
pub use flow::{DecodeError, FlowEngine, FlowError};
pub use worker::{DeliveryWorkers, Wakeups, WorkerSettings};
