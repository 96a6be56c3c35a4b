//! CRM sources and the read that follows their change notices.
//!
//! A CRM source learns of changes through its connector: pushes (through the one push door,
//! [`crate::push`]), polls ([`crate::poll`]) or both. A change notice is stored first (the vendor
//! is acknowledged only after the commit) together with one *read job* for the changed record.
//! Read jobs coalesce: while one waits for a record, later notices of that record join it, and it
//! runs `coalesce` after the first notice, so a burst of edits costs one read and gives one event.
//! The read job's sink, [`RefreshSink`], fetches the record's current state with its account and
//! last activities (one or two API calls), turns it into the canonical event and commits that
//! event with the deliveries the flows plan for it. The read's idempotency key is the event's
//! dedup key, so a read repeated after a crash adds nothing.

use crate::error::ApiError;
use crate::reads::{commit_read, Notices, ReadRequest, RecordSource};
use crate::sources::{refresh_destination, CrmSource};
use crate::state::AppState;
use async_trait::async_trait;
use connect::{Delivery, DeliveryError, Idempotency, Receipt, Sink};
use connectors::erp::ErpRecord;
use connectors::push::PushIntake;
use connectors::reader::{Polled, ReadError};
use model::InboundChange;
use std::sync::Arc;
use std::time::Duration;

#[async_trait]
impl RecordSource for CrmSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn system(&self) -> &'static str {
        self.reader.system()
    }

    fn objects(&self) -> &[String] {
        &self.objects
    }

    fn notices(&self) -> Notices<'_> {
        Notices {
            source: &self.name,
            system: self.reader.system(),
            destination: refresh_destination(&self.name),
            coalesce: self.coalesce,
        }
    }

    fn push_intake(&self) -> &dyn PushIntake {
        self.push.as_ref()
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.poll
    }

    async fn poll(&self, object: &str, cursor: Option<&str>, now: jiff::Timestamp) -> Result<Polled, ReadError> {
        self.reader.poll(object, cursor, now).await
    }

    /// A CRM's pushes and polls name records to read; none carries a record whole.
    fn plan_records(&self, _state: &AppState, records: &[ErpRecord]) -> Result<Vec<crate::Planned>, ApiError> {
        Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "malformed_body",
            format!("source `{}` takes no whole records ({} sent)", self.name, records.len()),
        ))
    }
}

/// The sink of a CRM source's read jobs: read the record, commit the canonical event.
pub struct RefreshSink {
    pub source: Arc<CrmSource>,
    /// The event is committed through the same intake path as every other event.
    pub state: AppState,
}

#[async_trait]
impl Sink for RefreshSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let request = ReadRequest::from_delivery(delivery)?;
        let ReadRequest { object, id, change } = &request;
        let inbound = match self.source.reader.read(object, id).await? {
            Some(s) => InboundChange {
                event_type: format!("{}.{object}", self.source.reader.system()),
                entity: s.entity,
                entity_id: s.entity_id,
                change: change.clone(),
                dedup_key: delivery.idempotency_key.clone(),
                source_time_ms: s.source_time_ms,
                data: s.data,
            },
            None => request.gone(self.source.reader.system(), &delivery.idempotency_key),
        };
        commit_read(&self.state, &self.source.name, &inbound).await
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Honoured
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
}
