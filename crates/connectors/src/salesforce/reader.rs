//! Salesforce as a [`CrmReader`]: a record and its context read as a background client (the
//! reads share the org's API allocation with the sinks and give way to them), `SystemModstamp`
//! polls, and Outbound Messages through [`OutboundMessageIntake`].

use super::client::SalesforceClient;
use super::config::SalesforceOrgConfig;
use super::limits::Priority;
use super::push::OutboundMessageIntake;
use super::source::{poll_changes, PollCursor, POLL_PAGE_SIZE};
use crate::crm::Snapshot;
use crate::push::{PushIntake, PushSetup, PushSetupError};
use crate::reader::{ChangedRecord, CrmReader, Found, Polled, ReadError};
use async_trait::async_trait;
use connect::DeliveryError;
use serde_json::{json, Value};
use std::sync::Arc;

const SYSTEM: &str = "salesforce";

/// One Salesforce org, and the org id its Outbound Messages must carry.
pub struct SalesforceReader {
    pub client: Arc<SalesforceClient>,
    pub organization_id: Option<String>,
}

impl SalesforceOrgConfig {
    /// The org's connector over its built client.
    pub fn connector(&self, client: Arc<SalesforceClient>) -> Arc<dyn CrmReader> {
        Arc::new(SalesforceReader { client, organization_id: self.organization_id.clone() })
    }
}

#[async_trait]
impl CrmReader for SalesforceReader {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    async fn read(&self, object: &str, id: &str) -> Result<Option<Snapshot>, DeliveryError> {
        super::snapshot::fetch(&self.client, object, id, Priority::Background).await
    }

    /// Changes by `SystemModstamp`; the cursor holds the timestamp and the last id, so ties on
    /// one timestamp are neither lost nor repeated.
    async fn poll(&self, object: &str, cursor: Option<&str>, now: jiff::Timestamp) -> Result<Polled, ReadError> {
        let Some(text) = cursor else {
            return Ok(Polled::last(Found::Nothing, Some(PollCursor::starting_at(now).encode())));
        };
        let mut cursor = PollCursor::decode(text).map_err(|e| ReadError::BadCursor {
            system: SYSTEM,
            object: object.to_owned(),
            reason: e.to_string(),
        })?;
        let fields = ["Id", "SystemModstamp"];
        let (rows, more) =
            poll_changes(&self.client, object, &fields, &mut cursor, POLL_PAGE_SIZE, Priority::Background).await?;
        let text = |row: &Value, key: &str| row.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let changed = rows
            .iter()
            .map(|row| {
                let stamp = text(row, "SystemModstamp");
                ChangedRecord { id: text(row, "Id"), detail: json!({ "SystemModstamp": stamp }), stamp }
            })
            .collect();
        Ok(Polled::page(Found::Changed(changed), cursor.encode(), more))
    }

    fn push_intake(&self, setup: &PushSetup<'_>) -> Result<Arc<dyn PushIntake>, PushSetupError> {
        Ok(Arc::new(OutboundMessageIntake {
            token: setup.credentials.shared_secret.clone(),
            organization_id: self.organization_id.clone(),
        }))
    }
}
