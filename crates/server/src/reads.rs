//! What every "notice, then read" intake shares (CRM and ERP sources alike).
//!
//! A vendor push or poll row says only *that* a record changed. It is stored as a change notice
//! together with one *read job* for the record, and the vendor is acknowledged after that commit.
//! Read jobs coalesce: while one waits for a record, later notices of the record join it, and it
//! runs `coalesce` after the first notice, so a burst of edits costs one read and gives one event.
//! The read job's sink reads the record's current state and commits the event it becomes through
//! the gateway's one intake path ([`commit_read`]).

use crate::error::ApiError;
use crate::hooks::commit;
use crate::state::AppState;
use async_trait::async_trait;
use connect::{DeliveryError, Receipt};
use connectors::erp::ErpRecord;
use connectors::push::PushIntake;
use connectors::reader::{Polled, ReadError};
use model::InboundChange;
use serde_json::{json, Value};
use std::time::Duration;

/// An ERP or CRM source as pushes and polls reach it: the part of a record source that does
/// not depend on the vendor.
#[async_trait]
pub trait RecordSource: Send + Sync {
    fn name(&self) -> &str;
    /// The `system` of its events (`netsuite`, `zoho`, …).
    fn system(&self) -> &'static str;
    /// The objects it watches, in the vendor's spelling.
    fn objects(&self) -> &[String];
    /// Where its change notices' read jobs go.
    fn notices(&self) -> Notices<'_>;
    /// Checks and reads what the vendor pushes to it.
    fn push_intake(&self) -> &dyn PushIntake;
    /// How often it is polled; `None`: never.
    fn poll_interval(&self) -> Option<Duration>;
    /// One poll of `object` from the stored `cursor`.
    async fn poll(&self, object: &str, cursor: Option<&str>, now: jiff::Timestamp) -> Result<Polled, ReadError>;
    /// The intakes of records the vendor pushed or a poll found whole, as events; refused
    /// where this source takes no whole records.
    fn plan_records(&self, state: &AppState, records: &[ErpRecord]) -> Result<Vec<crate::Planned>, ApiError>;

    /// Commits records the vendor pushed or a poll found whole, as events (one transaction).
    async fn commit_records(&self, state: &AppState, records: &[ErpRecord]) -> Result<(), ApiError> {
        commit_all(state, self.name(), self.plan_records(state, records)?).await
    }

    fn watches(&self, object: &str) -> bool {
        self.objects().iter().any(|o| o.eq_ignore_ascii_case(object))
    }
}

/// Where a source's read jobs go and how long they wait for more notices.
#[derive(Debug, Clone)]
pub struct Notices<'a> {
    pub source: &'a str,
    /// `salesforce`, `netsuite`, …: the `system` of the stored notice.
    pub system: &'a str,
    /// The outbox destination of the source's read jobs.
    pub destination: String,
    pub coalesce: Duration,
}

impl Notices<'_> {
    /// The record's read job: due `coalesce` from now, joining a read already waiting for it.
    pub fn read_job(
        &self,
        object: &str,
        record_id: &str,
        change: &str,
        idempotency_key: String,
        now_ms: i64,
    ) -> store::NewJob {
        let delay = i64::try_from(self.coalesce.as_millis()).unwrap_or(i64::MAX);
        store::NewJob {
            flow: format!("{}:read", self.source),
            ordering_key: format!("{}/{object}/{record_id}", self.destination),
            destination: self.destination.clone(),
            idempotency_key,
            payload: json!({ "object": object, "id": record_id, "change": change }).to_string(),
            next_attempt_at: now_ms.saturating_add(delay),
            coalesce: true,
        }
    }

    /// One stored change notice (deduplicated on `dedup_key`) with its read job.
    pub fn notice(
        &self,
        dedup_key: String,
        object: &str,
        record_id: &str,
        change: &str,
        detail: Value,
        now_ms: i64,
    ) -> store::Intake {
        let event_id = uuid::Uuid::now_v7().to_string();
        let event = json!({
            "id": event_id,
            "source": self.source,
            "system": self.system,
            "type": "change_notice",
            "object": object,
            "entity_id": record_id,
            "change": change,
            "notice": detail,
        });
        let job = self.read_job(object, record_id, change, format!("{dedup_key}:read"), now_ms);
        store::Intake {
            dedup_key,
            event_id,
            source: self.source.to_owned(),
            received_at: now_ms,
            event_json: event.to_string(),
            jobs: vec![job],
            dead_letter: None,
        }
    }
}

/// What a read job's payload names: the object, the record id and the change noticed.
pub struct ReadRequest {
    pub object: String,
    pub id: String,
    pub change: String,
}

impl ReadRequest {
    pub fn from_delivery(delivery: &connect::Delivery) -> Result<ReadRequest, DeliveryError> {
        let field = |name: &str| {
            delivery.payload.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| {
                DeliveryError::BadPayload {
                    destination: delivery.destination.clone(),
                    detail: format!("read job without `{name}`"),
                }
            })
        };
        Ok(ReadRequest { object: field("object")?, id: field("id")?, change: field("change")? })
    }
}

impl ReadRequest {
    /// The event of a record that was gone by the time it was read: says so instead of
    /// inventing its last state.
    pub fn gone(&self, system: &str, dedup_key: &str) -> InboundChange {
        InboundChange {
            event_type: format!("{system}.{}", self.object),
            entity: self.object.to_ascii_lowercase(),
            entity_id: self.id.clone(),
            change: "deleted".into(),
            dedup_key: dedup_key.to_owned(),
            source_time_ms: None,
            data: json!({ "id": self.id }),
        }
    }
}

/// Commits the event of a record just read: decoded and planned by the flows like any other
/// event, stored under `inbound.dedup_key`. A read repeated after a crash, or the same state read
/// twice, adds nothing.
pub async fn commit_read(state: &AppState, source: &str, inbound: &InboundChange) -> Result<Receipt, DeliveryError> {
    let intake = state.intake.inbound(source, inbound, state.clock.now()).map_err(|err| DeliveryError::BadPayload {
        destination: format!("read:{source}"),
        detail: err.message.clone(),
    })?;
    let jobs = intake.intake.jobs.len();
    let committed = commit(state, source, intake).await.map_err(|err| {
        if err.status.is_client_error() {
            // Refused (and kept as a dead letter): reading it again would not change that.
            DeliveryError::BadPayload { destination: format!("read:{source}"), detail: err.message }
        } else {
            DeliveryError::Transport {
                endpoint: "intake".into(),
                reason: format!("the read record could not be stored: {}", err.message),
            }
        }
    })?;
    tracing::debug!(source, event_id = %committed.event_id, jobs, duplicate = committed.duplicate, "Record read and its event stored.");
    Ok(Receipt { vendor_id: Some(committed.event_id), detail: Some(format!("{jobs} deliveries planned")) })
}

/// The intakes of one vendor request (or poll), committed together: the group committer puts
/// them in one transaction instead of one round trip each.
pub async fn commit_all<P: Into<crate::Planned>>(
    state: &AppState,
    source: &str,
    intakes: Vec<P>,
) -> Result<(), ApiError> {
    futures::future::try_join_all(intakes.into_iter().map(|intake| commit(state, source, intake))).await?;
    Ok(())
}
