//! Test harness for dingbridge: fixtures from `../shared/fixtures`, the delivery oracle
//! (issued / acknowledged / delivered accounting), a Standard Webhooks sender that retries like a
//! real one, and a process supervisor that spawns, signals and restarts the real binary.
//!
//! Used by end-to-end tests, `dingbridge bench` and the demo; it must never be a dependency of the
//! gateway's request path. Helpers that only make sense in tests (fixtures) panic with a clear
//! message instead of returning errors.

pub mod dingtalk;
pub mod erp;
pub mod layering;
/// The shared fixture loader (its own crate so connector unit tests can use it too).
pub use fixtures;
pub mod oracle;
pub mod process;
pub mod sender;
pub mod wait;

pub use oracle::{payload_for, Oracle, OracleReport};

/// A fresh URL capability (a `card_callback_token`, an `outbound_token`): 32 random URL-safe
/// characters, 190 bits.
pub fn random_url_token() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 32)
}
pub use process::{free_port, peak_rss_kb, Gateway, GatewayCommand, ProcessError};
pub use sender::{SendError, SendOutcome, SenderSettings, WebhookSender};
pub use wait::wait_for;
