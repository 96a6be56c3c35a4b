//! NetSuite as an [`ErpReader`] and an [`ApprovalWriteBack`]: SuiteQL polls by
//! `lastmodifieddate` (changed ids become notices, read later through the REST record service),
//! pending purchase requisitions, and approvals written to the requisition.

use super::canonical;
use super::client::{NetSuiteClient, RecordType};
use super::push::UserEventIntake;
use super::source::{poll_changes, PollCursor};
use crate::approval::{DecisionOutcome, DecisionRequest, ErpUser};
use crate::erp::ErpRecord;
use crate::push::{PushCredentials, PushIntake};
use crate::reader::{ApprovalWriteBack, ChangedRecord, ErpConnector, ErpReader, Found, Polled, ReadError};
use async_trait::async_trait;
use connect::DeliveryError;
use serde_json::json;
use std::sync::Arc;

const SYSTEM: &str = "netsuite";

/// The object whose poll lists the requisitions waiting for approval.
const PENDING_OBJECT: &str = "purchaseRequisition";

/// One NetSuite account read in its own time zone (SuiteQL compares local times).
pub struct NetSuiteReader {
    pub client: Arc<NetSuiteClient>,
    pub zone: jiff::tz::TimeZone,
}

impl NetSuiteReader {
    fn record_type(object: &str, what: &'static str) -> Result<RecordType, ReadError> {
        RecordType::parse(object).ok_or_else(|| ReadError::UnknownObject {
            system: SYSTEM,
            object: object.to_owned(),
            what,
        })
    }
}

impl super::config::NetsuiteAccountConfig {
    /// The account's connector over its built client, read in the account's time zone.
    pub fn connector(&self, client: Arc<NetSuiteClient>) -> ErpConnector {
        ErpConnector::new(NetSuiteReader { client, zone: self.time_zone.clone() })
    }
}

#[async_trait]
impl ErpReader for NetSuiteReader {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    async fn poll(&self, object: &str, cursor: Option<&str>, now: jiff::Timestamp) -> Result<Polled, ReadError> {
        if object == PENDING_OBJECT {
            return Ok(Polled::last(Found::Records(self.pending_purchase_requests().await?), None));
        }
        let record = Self::record_type(object, "polled")?;
        let encode = |cursor: &PollCursor| serde_json::to_string(cursor.state()).unwrap_or_default();
        let Some(text) = cursor else {
            let start = PollCursor::new(record, now, self.zone.clone());
            return Ok(Polled::last(Found::Nothing, Some(encode(&start))));
        };
        let saved = serde_json::from_str(text).map_err(|e| ReadError::BadCursor {
            system: SYSTEM,
            object: object.to_owned(),
            reason: e.to_string(),
        })?;
        let mut cursor = PollCursor::resume(record, saved, self.zone.clone());
        let (rows, more) = poll_changes(&self.client, &mut cursor).await?;
        let changed = rows
            .iter()
            .map(|row| {
                let stamp = row.last_modified.to_rfc3339();
                ChangedRecord { id: row.id.clone(), detail: json!({ "lastmodified": stamp }), stamp }
            })
            .collect();
        Ok(Polled::page(Found::Changed(changed), encode(&cursor), more))
    }

    async fn read(&self, object: &str, id: &str) -> Result<Option<ErpRecord>, ReadError> {
        let record = Self::record_type(object, "read")?;
        Ok(canonical::read(&self.client, record, id).await?)
    }

    async fn pending_purchase_requests(&self) -> Result<Vec<ErpRecord>, ReadError> {
        Ok(canonical::pending_purchase_requests(&self.client).await?)
    }

    fn push_intake(&self, credentials: PushCredentials) -> Arc<dyn PushIntake> {
        Arc::new(UserEventIntake { secret: credentials.shared_secret })
    }
}

#[async_trait]
impl ApprovalWriteBack for NetSuiteReader {
    async fn decide(&self, request: &DecisionRequest) -> Result<DecisionOutcome, DeliveryError> {
        super::approval::decide(&self.client, request).await
    }

    async fn users(&self) -> Result<Vec<ErpUser>, DeliveryError> {
        super::approval::users(&self.client).await
    }
}
