//! Salesforce as a [`CrmReader`]: a record and its context read as a background client (the
//! reads share the org's API allocation with the sinks and give way to them).

use super::client::SalesforceClient;
use super::limits::Priority;
use crate::crm::Snapshot;
use crate::reader::CrmReader;
use async_trait::async_trait;
use connect::DeliveryError;

#[async_trait]
impl CrmReader for SalesforceClient {
    fn system(&self) -> &'static str {
        "salesforce"
    }

    async fn read(&self, object: &str, id: &str) -> Result<Option<Snapshot>, DeliveryError> {
        super::snapshot::fetch(self, object, id, Priority::Background).await
    }
}
