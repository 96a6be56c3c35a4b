//! What every part of the config shares, below the connectors: coded diagnostics with spans,
//! secret references, friendly durations, endpoint rules and the error collector.
//!
//! Pure: nothing here reads the environment, a file, the network or the clock, so a connector's
//! `validate` built on it stays pure too (`dingbridge check` runs it). Secrets are read in
//! phase 3 through an injected [`SecretResolver`]; the real one, and rendering the diagnostics
//! (miette), belong to the engine.

pub mod diagnostics;
pub mod duration;
pub mod endpoint;
pub mod error;
pub mod resolve;
pub mod secret;
pub mod spanned;
pub mod suggest;

pub use diagnostics::{ConnectionTable, Diagnostics};
pub use duration::{parse_duration, DurationError};
pub use endpoint::{is_base_url, require_https, validate_private_hosts};
pub use error::{line_col, Code, ConfigError};
pub use resolve::{Secret, SecretReader, SecretResolver};
pub use secret::{weak_capability, RawSecretRef, RawSecrets, SecretLocation, SecretRef, SecretRefError};
pub use spanned::{at, span, S};
pub use suggest::{distance, known_list, only_these_take_it, suggest};
