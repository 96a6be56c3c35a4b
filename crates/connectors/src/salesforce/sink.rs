//! Salesforce record writes (reference A2 "sObject Collections", A3): the flows' record-write
//! payloads, merged per record (ids compared in their 18-character form) and sent as
//! collections of at most 200 records, one object per call, `allOrNone: false` so one bad record
//! does not block the others.

use super::client::{RecordResult, SalesforceClient, COLLECTION_LIMIT};
use super::errors::{describe, ApiError, ErrorClass, CONCURRENT_LIMIT_BACKOFF, DAILY_LIMIT_BACKOFF};
use super::ids::normalize_id;
use super::limits::Priority;
use super::VENDOR;
use crate::crm::{self, RecordWrite, RecordWriter, WriteOp, WriteResults};
use async_trait::async_trait;
use connect::{Batching, Delivery, DeliveryError, Idempotency, Receipt, Sink};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Writes records of one Salesforce org at one priority (approvals a person waits for are
/// interactive and keep the quota reserve; sync jobs are background).
pub struct RecordSink {
    client: Arc<SalesforceClient>,
    priority: Priority,
    linger: Duration,
}

impl RecordSink {
    pub fn new(client: Arc<SalesforceClient>, priority: Priority, linger: Duration) -> Self {
        Self { client, priority, linger }
    }

    /// The delivery's record write with its id in the 18-character form, or why it is not one.
    fn parse(delivery: &Delivery) -> Result<RecordWrite, DeliveryError> {
        let bad = |detail: String| DeliveryError::BadPayload { destination: delivery.destination.clone(), detail };
        let mut write = RecordWrite::from_payload(&delivery.payload).map_err(|e| bad(e.to_string()))?;
        if write.fields.contains_key("attributes") {
            return Err(bad("`fields` names `attributes`, which Salesforce reserves for the record type".to_owned()));
        }
        let by_id = write.op == WriteOp::Update
            || write.external_id_field.as_deref().is_some_and(|f| f.eq_ignore_ascii_case("Id"));
        if by_id {
            write.key = normalize_id(&write.key).map_err(|e| bad(e.to_string()))?;
        }
        Ok(write)
    }
}

/// One collections record: `{"attributes":{"type":O}, "id"|ext_field: key, ...fields}`.
fn collection_record(write: &RecordWrite) -> Value {
    let mut record = Map::new();
    record.insert("attributes".to_owned(), json!({ "type": write.object }));
    let key_field = write.external_id_field.clone().unwrap_or_else(|| "id".to_owned());
    record.insert(key_field, Value::String(write.key.clone()));
    for (name, value) in &write.fields {
        // The parse refused `attributes` and `id`; an equal external id value is already there.
        record.entry(name.clone()).or_insert_with(|| value.clone());
    }
    Value::Object(record)
}

/// A failed collections item as a delivery error, classified by the connector's error table.
fn record_error(write: &RecordWrite, errors: &[ApiError]) -> DeliveryError {
    let text = if errors.is_empty() { "failed without an error code".to_owned() } else { describe(errors) };
    let detail = format!("{} {}: {text}", write.object, write.key);
    // Item errors come inside a 200 answer: the code alone decides (unknown codes: permanent).
    match errors.first().map_or(ErrorClass::Permanent, |e| e.class(None)) {
        ErrorClass::Session | ErrorClass::Credentials => DeliveryError::Auth { vendor: VENDOR, detail },
        ErrorClass::DailyLimit => DeliveryError::Throttled { vendor: VENDOR, detail, retry_after: DAILY_LIMIT_BACKOFF },
        ErrorClass::ConcurrentLimit => {
            DeliveryError::Throttled { vendor: VENDOR, detail, retry_after: CONCURRENT_LIMIT_BACKOFF }
        }
        ErrorClass::Transient => DeliveryError::Server { vendor: VENDOR, status: 200, detail },
        ErrorClass::Permanent => DeliveryError::Rejected { vendor: VENDOR, detail },
    }
}

fn record_outcome(write: &RecordWrite, result: RecordResult) -> Result<Receipt, DeliveryError> {
    if !result.success {
        return Err(record_error(write, &result.errors));
    }
    let what = if result.created == Some(true) { "created" } else { "updated" };
    let vendor_id = result.id.or_else(|| (write.op == WriteOp::Update).then(|| write.key.clone()));
    Ok(Receipt { vendor_id, detail: Some(format!("{} {what}", write.object)) })
}

#[async_trait]
impl RecordWriter for RecordSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    async fn write_call(&self, writes: &[&RecordWrite]) -> Result<WriteResults, DeliveryError> {
        let Some(first) = writes.first() else { return Ok(Vec::new()) };
        let records: Vec<Value> = writes.iter().map(|w| collection_record(w)).collect();
        // Every write of a call shares object, op and external id field; upserts always have one.
        let results = match first.external_id_field.as_deref() {
            Some(field) => self.client.upsert_collection(&first.object, field, &records, false, self.priority).await?,
            None => self.client.update_collection(&records, false, self.priority).await?,
        };
        Ok(writes.iter().zip(results).map(|(write, result)| record_outcome(write, result)).collect())
    }
}

#[async_trait]
impl Sink for RecordSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        crm::single_result(self.deliver_batch(std::slice::from_ref(delivery)).await, VENDOR)
    }

    /// Writes set absolute field values, so a replay leaves the record in the same state.
    fn idempotency(&self) -> Idempotency {
        Idempotency::Honoured
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        self.client.limits(Priority::Interactive).await.map(|_| ())
    }

    fn batching(&self) -> Option<Batching> {
        Some(Batching { max_records: COLLECTION_LIMIT, linger: self.linger })
    }

    async fn deliver_batch(&self, batch: &[Delivery]) -> WriteResults {
        let parsed = batch.iter().map(Self::parse).collect();
        crm::deliver_writes(self, parsed, COLLECTION_LIMIT).await
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod sink_tests;
