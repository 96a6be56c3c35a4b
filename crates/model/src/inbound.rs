//! The one shape in which an authenticated change reaches intake, whatever sent it: a DingTalk
//! callback or Stream frame, or a record a CRM or ERP source has just read. Intake plans it
//! through the flows and stores it under its dedup key.

use serde_json::Value;

/// One change, ready to become a canonical [`crate::Event`].
#[derive(Debug, Clone, PartialEq)]
pub struct InboundChange {
    /// The vendor's name for it: a DingTalk event type (`bpms_instance_change`, `user_add_org`,
    /// …) or Stream topic, or `<system>.<object>` for a record read from a CRM or ERP.
    pub event_type: String,
    /// What it is about, in the flows' words: `approval`, `card_action`, `user`, `opportunity`,
    /// `item_fulfillment`, …
    pub entity: String,
    pub entity_id: String,
    /// snake_case: `created`, `updated`, `deleted`, `clicked`, `finished`, …
    pub change: String,
    /// Identical for every redelivery of the same happening (vendors redeliver and duplicate).
    pub dedup_key: String,
    /// When the vendor says it happened (epoch ms), if it says.
    pub source_time_ms: Option<i64>,
    /// The vendor payload, plus normalised keys for templates.
    pub data: Value,
}
