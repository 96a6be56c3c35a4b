//! Delivery errors and the single place that decides what the outbox does next.

use std::time::Duration;

/// What the outbox does with a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Transient: retry on the schedule, same idempotency key.
    Retry,
    /// Throttled: not before this long from now (the vendor's own signal), then retry.
    RetryAfter(Duration),
    /// Credentials rejected: retried once on the schedule; rejected again on the next attempt,
    /// the job is dead-lettered. The destination is not paused: other jobs keep trying, each
    /// with its own second chance.
    Auth,
    /// The vendor will never accept this request: dead-letter now.
    Permanent,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    #[error("request to {endpoint} failed before an answer: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("request to {endpoint} timed out after {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("{vendor} is throttling requests ({detail}); retry in {retry_after:?}")]
    Throttled { vendor: &'static str, detail: String, retry_after: Duration },
    #[error("{vendor} answered HTTP {status}: {detail}")]
    Server { vendor: &'static str, status: u16, detail: String },
    #[error("{vendor} rejected the credentials ({detail}); check the configured secret")]
    Auth { vendor: &'static str, detail: String },
    #[error("{vendor} rejected the request permanently ({detail})")]
    Rejected { vendor: &'static str, detail: String },
    #[error("the payload for destination {destination} is not a valid message: {detail}")]
    BadPayload { destination: String, detail: String },
    /// R22: dingbridge itself refused to send there (a private address, a host a vendor answer
    /// named outside the vendor's domains, a redirect); nothing was sent.
    #[error("refused to send to {endpoint}: {reason}")]
    UnsafeDestination { endpoint: String, reason: String },
}

impl DeliveryError {
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } | Self::Server { .. } => Disposition::Retry,
            Self::Throttled { retry_after, .. } => Disposition::RetryAfter(*retry_after),
            Self::Auth { .. } => Disposition::Auth,
            // Retrying cannot make an unsafe destination safe: the configuration has to change.
            Self::Rejected { .. } | Self::BadPayload { .. } | Self::UnsafeDestination { .. } => Disposition::Permanent,
        }
    }

    /// Short bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transport { .. } => "transport",
            Self::Timeout { .. } => "timeout",
            Self::Throttled { .. } => "throttled",
            Self::Server { .. } => "server",
            Self::Auth { .. } => "auth",
            Self::Rejected { .. } => "rejected",
            Self::BadPayload { .. } => "bad_payload",
            Self::UnsafeDestination { .. } => "unsafe_destination",
        }
    }
}
