//! Shared state of the HTTP handlers.

use crate::error::ApiError;
use axum::http::HeaderMap;
use connect::Clock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use store::{GroupCommitter, Store};

/// Plans what one authenticated request commits: verifies a webhook's signature, decodes the
/// vendor format into the canonical event, runs the flows. Pure with respect to the store.
pub trait IntakePlanner: Send + Sync {
    fn webhook(
        &self,
        source: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: jiff::Timestamp,
    ) -> Result<Planned, ApiError>;

    /// One authenticated event already in the inbound shape: a DingTalk callback or Stream
    /// frame, or a record a CRM/ERP source read. Stored under `{source}:{inbound.dedup_key}`.
    fn inbound(&self, source: &str, inbound: &model::InboundChange, now: jiff::Timestamp) -> Result<Planned, ApiError>;

    /// An event that arrived authenticated but cannot be read (a DingTalk frame, an IDoc): kept
    /// as a dead letter (with `raw` and the reason) under `dedup_key`, so redeliveries do not pile up.
    fn unreadable(
        &self,
        source: &str,
        dedup_key: &str,
        raw: serde_json::Value,
        reason: String,
        now: jiff::Timestamp,
    ) -> Result<store::Intake, ApiError>;

    /// Whether `source` is configured; refusals for unknown names share one metric label so a
    /// stranger cannot mint label values.
    fn has_source(&self, source: &str) -> bool;
}

/// What intake makes of one authenticated request: the intake to commit and, when the event is
/// refused all the same (a decision from a source that is not DingTalk), what the sender is told
/// and what the audit log records. A refused event is still committed, as a dead letter without
/// jobs, so an operator sees it and a resend is recognised as the same one.
pub struct Planned {
    pub intake: store::Intake,
    pub refused: Option<Refusal>,
    /// Who may click each card with HTTP callbacks that the intake sends (id links of kind
    /// [`crate::dingtalk::CARD_RECIPIENTS`]), written before the intake commits.
    pub card_recipients: Vec<store::IdLink>,
}

pub struct Refusal {
    pub error: ApiError,
    pub audit: store::NewAuditEntry,
}

impl From<store::Intake> for Planned {
    fn from(intake: store::Intake) -> Self {
        Planned { intake, refused: None, card_recipients: Vec::new() }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub intake: Arc<dyn IntakePlanner>,
    pub committer: GroupCommitter,
    pub store: Arc<dyn Store>,
    /// Called after every commit that created jobs, so delivery workers pick them up at once.
    pub nudge: Arc<dyn Fn() + Send + Sync>,
    pub clock: Arc<dyn Clock>,
    pub accepting: Arc<AtomicBool>,
    pub max_body_bytes: usize,
    pub metrics: crate::metrics::Metrics,
    /// Bearer token for `/api/`; `None` leaves the admin API closed entirely.
    pub admin_token: Option<Arc<secrecy::SecretString>>,
    /// The DingTalk sources in HTTP callback mode, by source name: each one's decryptor, replay
    /// memory and card token.
    pub dingtalk_callbacks: Arc<std::collections::BTreeMap<String, Arc<crate::sources::CallbackReceiver>>>,
    /// The directory keeper of each DingTalk source's app, by source name.
    pub directories: Arc<std::collections::BTreeMap<String, Arc<crate::directory::DirectoryKeeper>>>,
    /// The CRM sources (Salesforce, Zoho), by source name.
    pub crm: Arc<crate::sources::CrmSources>,
    /// The ERP sources (NetSuite, Dynamics 365, SAP), by source name.
    pub erp: Arc<crate::sources::ErpSources>,
    /// Runs every background task of the gateway, named and with its failure policy.
    pub tasks: crate::supervisor::Supervisor,
}

impl AppState {
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Stop accepting new webhooks (graceful shutdown): they get 503 + Retry-After.
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }
}
