//! Shared connector machinery: the `Sink` contract, delivery errors and their
//! disposition, the clock, retry schedules, rate limiting, OAuth token-error classification,
//! the OData `$batch` wire format and Standard Webhooks signing.
//!
//! This crate owns no vendor knowledge; connectors build on it so HTTP, retry and
//! rate-limit logic live in one place.

pub mod clock;
pub mod config;
pub mod error;
pub mod retry;
pub mod sink;
pub mod token;

pub use clock::{Clock, SystemClock};
pub use error::{DeliveryError, Disposition};
pub use retry::RetrySchedule;
pub use sink::{Batching, Delivery, Idempotency, Pacing, Receipt, Sink};
pub mod http;
pub mod oauth;
pub mod odata;
pub mod ratelimit;
pub mod retry_after;
pub mod secret;
pub mod vault;
pub mod webhook;
