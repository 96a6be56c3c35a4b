//! What a record system pushes to the gateway, and how its connector checks it: the
//! [`PushIntake`] trait, and [`PushSubscription`] for vendors that must be asked to keep pushing.
//!
//! Each vendor that pushes has its own doors (`PATHS` in its `push.rs`, listed by the registry)
//! and its own proof of origin: a NetSuite user-event script signs its posts with HMAC, a
//! Dataverse webhook carries a shared key, an ECC XML-HTTP port logs in with HTTP Basic, a
//! Salesforce Outbound Message has a secret URL token and the org id, a Zoho notification the
//! channel token. The gateway's HTTP face takes every push the same way: it hands the request to
//! the source's intake, which authenticates and decodes it, and stores what comes back. The
//! server never matches on the vendor.

use crate::erp::ErpRecord;
use connect::config::Secret;
use serde_json::Value;
use std::collections::BTreeMap;

/// A push as the gateway received it. Not `Debug`: the URL token and the headers hold secrets.
#[derive(Clone, Copy)]
pub struct PushRequest<'a> {
    /// The route it came through (one of the vendor's `PATHS`), for vendors with several doors.
    pub path: &'a str,
    /// The `{token}` segment of the URL, for vendors whose pushes carry no signature.
    pub token: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    /// The query parameters of the URL.
    pub query: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
    /// When it arrived, for the freshness checks that refuse replays.
    pub now: jiff::Timestamp,
}

/// What an authenticated push says.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// Records changed; the push carries too little to build a message from, so each record is
    /// read later (see the server's read jobs).
    Changed(Vec<PushedChange>),
    /// Whole records, in the canonical shape (an IDoc packet).
    Records(Vec<ErpRecord>),
    /// A change of a record type dingbridge does not read: acknowledged and ignored.
    Ignored { record_type: String },
}

/// One record's change, as a push reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedChange {
    /// Unique per change at the vendor (an event id, an operation id): the same push delivered
    /// twice has the same `push_id` and is stored once.
    pub push_id: String,
    /// The object in the vendor's spelling, e.g. `purchaseOrder`, `salesorder`.
    pub object: String,
    pub id: String,
    /// `created`, `updated`, `deleted` or `status_changed`.
    pub change: &'static str,
    /// What the change notice keeps of the push (ids and times, never the record's content).
    pub detail: Value,
}

/// How the vendor expects a push to be answered once it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledgement {
    /// `200 {"status":"accepted"}`.
    Accepted,
    /// `204 No Content`.
    NoContent,
    /// `200` with this exact body (a SOAP acknowledgement).
    Body { content_type: &'static str, body: &'static str },
}

/// Why a push is refused. Each refusal names the HTTP status the vendor should get and a short
/// code for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    /// The source is not configured to take this kind of push (no secret or login for it).
    #[error("{detail}")]
    NotTaken { detail: String },
    /// The proof of origin is missing, wrong or too old.
    #[error("{detail}")]
    Unauthenticated { code: &'static str, detail: String },
    /// The body is not what the vendor sends.
    #[error("{detail}")]
    Malformed { code: &'static str, detail: String },
    /// Authentic, but about something the source is not set up for, and the vendor shows the
    /// failure to whoever configured the sender (a Zoho workflow rule on another module).
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    /// An authenticated document that cannot be read (an IDoc the parser refuses): the gateway
    /// keeps it as a dead letter before answering, so it is not lost.
    #[error("{reason}")]
    Unreadable { code: &'static str, reason: String },
}

impl PushRefusal {
    pub fn status(&self) -> u16 {
        match self {
            PushRefusal::NotTaken { .. } => 404,
            PushRefusal::Unauthenticated { .. } => 401,
            PushRefusal::Malformed { .. } | PushRefusal::Unreadable { .. } => 400,
            PushRefusal::Unprocessable { .. } => 422,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            PushRefusal::NotTaken { .. } => "unknown_source",
            PushRefusal::Unauthenticated { code, .. }
            | PushRefusal::Malformed { code, .. }
            | PushRefusal::Unprocessable { code, .. }
            | PushRefusal::Unreadable { code, .. } => code,
        }
    }
}

/// Why a document (an IDoc file) cannot be read; it is kept as a dead letter with this reason.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PushError(pub String);

/// The secrets a source's config gives its push intake.
#[derive(Debug, Clone, Default)]
pub struct PushCredentials {
    /// A key shared with the ERP: the HMAC key of a signing script, or a webhook's shared key.
    pub shared_secret: Option<Secret>,
    /// An HTTP Basic login the ERP's port sends.
    pub basic_login: Option<(String, Secret)>,
}

/// What a source's config says about its pushes, for building its intake.
#[derive(Debug, Clone)]
pub struct PushSetup<'a> {
    pub source: &'a str,
    /// The objects the source watches; a push about another is acknowledged and ignored (or
    /// refused, where the vendor lets a person fix the sender).
    pub objects: &'a [String],
    pub credentials: PushCredentials,
    /// Where the vendor is asked to push, for vendors that are told (Zoho channels).
    pub notify_url: String,
}

/// Why a source's push intake cannot be built from its config.
#[derive(Debug, Clone, thiserror::Error)]
#[error("source `{source_name}`: {detail}")]
pub struct PushSetupError {
    pub source_name: String,
    pub detail: String,
}

/// One source's intake of pushes (see the module docs).
pub trait PushIntake: Send + Sync {
    /// Authenticates `request` and says what it reports. Refusals are answered with their
    /// status; nothing of a refused request is stored except an [`PushRefusal::Unreadable`]
    /// document.
    fn receive(&self, request: &PushRequest<'_>) -> Result<Pushed, PushRefusal>;

    /// How a stored (or ignored) push is answered.
    fn acknowledgement(&self) -> Acknowledgement;

    /// The records of a document taken from the source's drop folder, where the folder's
    /// permissions, not a request, say where it came from.
    fn decode_document(&self, _body: &[u8]) -> Result<Vec<ErpRecord>, PushError> {
        Err(PushError("this source takes no documents from a folder".into()))
    }
}

/// Keeps a vendor pushing to a source (a Zoho notification channel expires unless renewed).
#[async_trait::async_trait]
pub trait PushSubscription: Send + Sync {
    /// Opens the subscription and renews it until `cancel`; failures are logged and retried
    /// inside, so it returns only when cancelled.
    async fn keep_open(&self, cancel: tokio_util::sync::CancellationToken);
}

/// The intake of a vendor that pushes nothing (or of a source not set up for pushes).
pub struct NoPushes;

impl PushIntake for NoPushes {
    fn receive(&self, _request: &PushRequest<'_>) -> Result<Pushed, PushRefusal> {
        Err(PushRefusal::NotTaken { detail: "this source takes no pushes".into() })
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::Accepted
    }
}

/// HTTP Basic credentials in `headers` equal `user` and `password` (constant time). An empty
/// password opens nothing.
pub fn basic_login_matches(headers: &http::HeaderMap, user: &str, password: &str) -> bool {
    use base64::Engine as _;
    if password.is_empty() {
        return false;
    }
    let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let expected = format!("{user}:{password}");
    connect::secret::matches(expected.as_bytes(), &decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn basic(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        headers.insert(http::header::AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        headers
    }

    #[test]
    fn a_basic_login_opens_only_with_both_parts_right() {
        assert!(basic_login_matches(&basic("ecc:s3cret"), "ecc", "s3cret"));
        assert!(!basic_login_matches(&basic("ecc:wrong"), "ecc", "s3cret"));
        assert!(!basic_login_matches(&basic("other:s3cret"), "ecc", "s3cret"));
        assert!(!basic_login_matches(&http::HeaderMap::new(), "ecc", "s3cret"));
        // An empty configured password never opens the door, even to an empty one.
        assert!(!basic_login_matches(&basic("ecc:"), "ecc", ""));
    }

    #[test]
    fn refusals_carry_the_status_the_vendor_gets() {
        let refused = PushRefusal::Unauthenticated { code: "bad_key", detail: "wrong".into() };
        assert_eq!((refused.status(), refused.code()), (401, "bad_key"));
        assert_eq!(PushRefusal::NotTaken { detail: String::new() }.status(), 404);
        assert_eq!(PushRefusal::Unreadable { code: "malformed_idoc", reason: String::new() }.status(), 400);
    }
}
