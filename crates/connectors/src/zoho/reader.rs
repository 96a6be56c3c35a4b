//! Zoho CRM as a [`CrmReader`]: a module's record and its context.

use super::client::ZohoClient;
use crate::crm::Snapshot;
use crate::reader::CrmReader;
use async_trait::async_trait;
use connect::DeliveryError;

#[async_trait]
impl CrmReader for ZohoClient {
    fn system(&self) -> &'static str {
        "zoho"
    }

    async fn read(&self, module: &str, id: &str) -> Result<Option<Snapshot>, DeliveryError> {
        super::snapshot::fetch(self, module, id).await
    }
}
