//! The contract every sink implements.

use crate::error::DeliveryError;
use async_trait::async_trait;
use std::time::Duration;

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

/// How a sink that writes many records per vendor call wants its jobs handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Distinct records one vendor call takes (Salesforce collections: 200, Zoho: 100).
    pub max_records: usize,
    /// How long the outbox waits for a batch to fill before sending a partial one.
    pub linger: Duration,
}

/// A vendor limit of `max` sends in any rolling `window`, shared by every sink (in any gateway
/// instance) that sends to the same vendor endpoint: DingTalk's custom robot allows 20 per
/// minute and blocks the robot for minutes after the 21st.
///
/// The outbox takes one permit per attempt from a ledger in the store before the attempt's
/// timeout starts, so a wait for the window never eats the attempt's time, never cancels a
/// request already sent, and counts the sends of every instance and of the process before a
/// restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacing {
    /// Names the vendor endpoint the limit belongs to (never a secret: a digest of it).
    pub key: String,
    pub max: u32,
    pub window: Duration,
}

#[async_trait]
pub trait Sink: Send + Sync {
    /// Deliver one job. Must send `delivery.idempotency_key` in the vendor's dedupe field where one exists.
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError>;
    fn idempotency(&self) -> Idempotency;
    /// Side-effect-free probe used by `doctor`.
    async fn healthcheck(&self) -> Result<(), DeliveryError>;

    /// `Some` when the vendor limits sends per rolling window: the outbox paces the sink's
    /// attempts by it (see [`Pacing`]). The sink itself then does not wait for the window.
    /// Only one-by-one delivery is paced: a sink with [`Sink::batching`] is not.
    fn pacing(&self) -> Option<Pacing> {
        None
    }

    /// `Some` when the sink writes records in batches: the outbox then hands it many jobs at
    /// once through [`Sink::deliver_batch`] instead of one by one.
    fn batching(&self) -> Option<Batching> {
        None
    }

    /// Deliver many jobs, in id order, several of which may concern the same record (the sink
    /// merges those, later values winning, and splits the rest into vendor calls). Returns one
    /// result per delivery, in the same order. The default delivers one by one.
    async fn deliver_batch(&self, batch: &[Delivery]) -> Vec<Result<Receipt, DeliveryError>> {
        let mut out = Vec::with_capacity(batch.len());
        for delivery in batch {
            out.push(self.deliver(delivery).await);
        }
        out
    }
}
