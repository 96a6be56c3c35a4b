//! Zoho CRM record writes (reference B3): the flows' record-write payloads, merged per record and
//! sent as `PUT /{Module}` (update) or `POST /{Module}/upsert` with `duplicate_check_fields`
//! (upsert), at most 100 records per call, one module per call; every record's own status
//! decides its deliveries' results.

use super::client::{RecordResult, Triggers, ZohoClient, MAX_WRITE_BATCH};
use super::VENDOR;
use crate::crm::{self, RecordWrite, RecordWriter, WriteOp, WriteResults};
use async_trait::async_trait;
use connect::{Batching, Delivery, DeliveryError, Idempotency, Receipt, Sink};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

pub struct RecordSink {
    client: Arc<ZohoClient>,
    linger: Duration,
    triggers: Triggers,
}

impl RecordSink {
    /// Writes run the org's workflow rules, as an edit in Zoho would, but not approvals or
    /// blueprints (which would stop an integration write halfway); see [`RecordSink::with_triggers`].
    pub fn new(client: Arc<ZohoClient>, linger: Duration) -> Self {
        Self { client, linger, triggers: Triggers::Workflow }
    }

    /// Which automation Zoho runs on these writes (`Triggers::None` when workflow rules would
    /// echo the gateway's own writes back as events).
    pub fn with_triggers(mut self, triggers: Triggers) -> Self {
        self.triggers = triggers;
        self
    }

    fn parse(delivery: &Delivery) -> Result<RecordWrite, DeliveryError> {
        RecordWrite::from_payload(&delivery.payload)
            .map_err(|e| DeliveryError::BadPayload { destination: delivery.destination.clone(), detail: e.to_string() })
    }
}

/// One record of the `data` array: `{"id"|dup_field: key, ...fields}`.
fn module_record(write: &RecordWrite) -> Value {
    let mut record = Map::new();
    let key_field = write.external_id_field.clone().unwrap_or_else(|| "id".to_owned());
    record.insert(key_field, Value::String(write.key.clone()));
    for (name, value) in &write.fields {
        // The parse refused `id`; an equal external id value is already there.
        record.entry(name.clone()).or_insert_with(|| value.clone());
    }
    Value::Object(record)
}

fn record_outcome(write: &RecordWrite, result: &RecordResult) -> Result<Receipt, DeliveryError> {
    if let Some(error) = result.error() {
        return Err(crm::in_context(error, &format!("{} {}", write.object, write.key)));
    }
    let what = if result.action.as_deref() == Some("insert") { "created" } else { "updated" };
    let vendor_id = result.id.clone().or_else(|| (write.op == WriteOp::Update).then(|| write.key.clone()));
    Ok(Receipt { vendor_id, detail: Some(format!("{} {what}", write.object)) })
}

#[async_trait]
impl RecordWriter for RecordSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    async fn write_call(&self, writes: &[&RecordWrite]) -> Result<WriteResults, DeliveryError> {
        let Some(first) = writes.first() else { return Ok(Vec::new()) };
        let records: Vec<Value> = writes.iter().map(|w| module_record(w)).collect();
        // Every write of a call shares module, op and external id field; upserts always have one.
        let results = match first.external_id_field.as_deref() {
            Some(field) => self.client.upsert(&first.object, &records, &[field], self.triggers).await?,
            None => self.client.update(&first.object, &records, self.triggers).await?,
        };
        Ok(writes.iter().zip(&results).map(|(write, result)| record_outcome(write, result)).collect())
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

    /// Reads nothing but proves the token, the data centre and the module API answer: the
    /// deleted-records list of Deals (1 credit, usually empty).
    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let now = model::ZonedTime(jiff::Timestamp::now());
        self.client.deleted("Deals", Some(now)).await.map(|_| ())
    }

    fn batching(&self) -> Option<Batching> {
        Some(Batching { max_records: MAX_WRITE_BATCH, linger: self.linger })
    }

    async fn deliver_batch(&self, batch: &[Delivery]) -> WriteResults {
        let parsed = batch.iter().map(Self::parse).collect();
        crm::deliver_writes(self, parsed, MAX_WRITE_BATCH).await
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod sink_tests;
