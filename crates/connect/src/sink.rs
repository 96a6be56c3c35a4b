//! The contract every sink implements.

use crate::error::DeliveryError;
use async_trait::async_trait;

/// One rendered delivery, as the outbox worker hands it to a sink.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stable across retries and replays of the same effect; sent in the vendor's dedupe field.
    pub idempotency_key: String,
    pub event_id: String,
    pub flow: String,
    pub destination: String,
    /// The rendered message (connector-specific JSON, produced by the flow's template).
    pub payload: serde_json::Value,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// What the vendor answered on success, kept for the audit log.
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    pub vendor_id: Option<String>,
    pub detail: Option<String>,
}

/// Whether the vendor honours an idempotency key; decides the duplicate bar in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// The vendor dedupes on our key: duplicate effects are impossible.
    Honoured,
    /// The vendor has no dedupe field: a call in flight at a crash may be repeated; counted.
    None,
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// Deliver one job. Must send `delivery.idempotency_key` in the vendor's dedupe field where one exists.
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError>;
    fn idempotency(&self) -> Idempotency;
    /// Side-effect-free probe used by `doctor`.
    async fn healthcheck(&self) -> Result<(), DeliveryError>;
}
