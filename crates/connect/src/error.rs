//! Delivery errors, the single place that decides what the outbox does next, and their stable
//! codes (`DB02NN`, one page each in `docs/errors/`).

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

/// Why one delivery (or one vendor call on its way) failed. Every variant has a stable code
/// ([`DeliveryError::code`]); the message stays as it is (tests and vendor-text checks match on
/// it), so the code is written beside it: `[DB0205] auth: …` in a job's last error.
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
    /// Every code [`DeliveryError::code`] returns, in order. Each has a page
    /// `docs/errors/<code>.md` (a test checks it).
    pub const CODES: [&'static str; 8] =
        ["DB0201", "DB0202", "DB0203", "DB0204", "DB0205", "DB0206", "DB0207", "DB0208"];

    /// The stable code of this kind of failure: one per thing an operator can act on. Codes are
    /// never reused or renumbered; a new kind of failure gets the next free number.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Transport { .. } => "DB0201",
            Self::Timeout { .. } => "DB0202",
            Self::Throttled { .. } => "DB0203",
            Self::Server { .. } => "DB0204",
            Self::Auth { .. } => "DB0205",
            Self::Rejected { .. } => "DB0206",
            Self::BadPayload { .. } => "DB0207",
            Self::UnsafeDestination { .. } => "DB0208",
        }
    }

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

#[cfg(test)]
mod tests {
    use super::DeliveryError;
    use std::time::Duration;

    /// One error of each kind, in the order of [`DeliveryError::CODES`].
    fn one_of_each() -> Vec<DeliveryError> {
        let all = vec![
            DeliveryError::Transport {
                endpoint: "https://oapi.dingtalk.com".into(),
                reason: "connection refused".into(),
            },
            DeliveryError::Timeout { endpoint: "https://oapi.dingtalk.com".into(), after: Duration::from_secs(10) },
            DeliveryError::Throttled {
                vendor: "DingTalk",
                detail: "errcode 130101".into(),
                retry_after: Duration::from_secs(600),
            },
            DeliveryError::Server { vendor: "SAP", status: 503, detail: "service unavailable".into() },
            DeliveryError::Auth { vendor: "DingTalk", detail: "token invalid".into() },
            DeliveryError::Rejected { vendor: "DingTalk", detail: "errcode 310000: sign not match".into() },
            DeliveryError::BadPayload { destination: "ops".into(), detail: "text is empty".into() },
            DeliveryError::UnsafeDestination {
                endpoint: "http://10.0.0.1/".into(),
                reason: "a private address".into(),
            },
        ];
        // A new variant stops this match from compiling until it is added to the list above.
        for e in &all {
            match e {
                DeliveryError::Transport { .. }
                | DeliveryError::Timeout { .. }
                | DeliveryError::Throttled { .. }
                | DeliveryError::Server { .. }
                | DeliveryError::Auth { .. }
                | DeliveryError::Rejected { .. }
                | DeliveryError::BadPayload { .. }
                | DeliveryError::UnsafeDestination { .. } => {}
            }
        }
        all
    }

    #[test]
    fn every_kind_has_its_own_listed_code() {
        let codes: Vec<&str> = one_of_each().iter().map(DeliveryError::code).collect();
        assert_eq!(codes, DeliveryError::CODES);
    }
}
