//! Zoho CRM as a [`CrmReader`]: a module's record and its context, and the notification channel
//! that pushes its changes ([`NotificationIntake`], kept open by [`ChannelKeeper`]).

use super::client::ZohoClient;
use super::config::ZohoOrgConfig;
use super::push::{channel, ChannelKeeper, NotificationIntake};
use crate::crm::Snapshot;
use crate::push::{PushIntake, PushSetup, PushSetupError, PushSubscription};
use crate::reader::{CrmReader, Polled, ReadError};
use async_trait::async_trait;
use connect::{Clock, DeliveryError};
use std::sync::Arc;

/// One Zoho org; the clock times its channels' renewals.
pub struct ZohoReader {
    pub client: Arc<ZohoClient>,
    pub clock: Arc<dyn Clock>,
}

impl ZohoOrgConfig {
    /// The org's connector over its built client.
    pub fn connector(&self, client: Arc<ZohoClient>, clock: Arc<dyn Clock>) -> Arc<dyn CrmReader> {
        Arc::new(ZohoReader { client, clock })
    }
}

#[async_trait]
impl CrmReader for ZohoReader {
    fn system(&self) -> &'static str {
        "zoho"
    }

    async fn read(&self, module: &str, id: &str) -> Result<Option<Snapshot>, DeliveryError> {
        super::snapshot::fetch(&self.client, module, id).await
    }

    /// Changes by `Modified_Time` (COQL keyset pages), for sources that poll.
    async fn poll(&self, module: &str, cursor: Option<&str>, now: jiff::Timestamp) -> Result<Polled, ReadError> {
        super::poll::poll(&self.client, module, cursor, now).await
    }

    fn push_intake(&self, setup: &PushSetup<'_>) -> Result<Arc<dyn PushIntake>, PushSetupError> {
        Ok(Arc::new(NotificationIntake { channel: channel(setup)?, objects: setup.objects.to_vec() }))
    }

    fn subscription(&self, setup: &PushSetup<'_>) -> Result<Option<Arc<dyn PushSubscription>>, PushSetupError> {
        Ok(Some(Arc::new(ChannelKeeper {
            source: setup.source.to_owned(),
            client: self.client.clone(),
            channel: channel(setup)?,
            clock: self.clock.clone(),
        })))
    }
}
