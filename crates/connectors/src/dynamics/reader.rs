//! Dynamics 365 as an [`ErpReader`] and an [`ApprovalWriteBack`]: Dataverse sales orders by
//! change tracking (rows in full), Business Central purchase orders in review, and approvals
//! written to Business Central.

use super::canonical;
use super::config::DynamicsClients;
use super::push::WebhookIntake;
use super::source::{Change, DeltaCursor};
use crate::approval::{DecisionOutcome, DecisionRequest, ErpUser};
use crate::erp::ErpRecord;
use crate::push::{PushCredentials, PushIntake};
use crate::reader::{ApprovalWriteBack, ErpConnector, ErpReader, Found, Polled, ReadError};
use async_trait::async_trait;
use connect::DeliveryError;
use std::sync::Arc;

const SYSTEM: &str = "dynamics";

/// Rows per page of a Dataverse change-tracking poll.
const DELTA_PAGE_SIZE: u32 = 1000;

/// The Dataverse table whose changes are polled and read.
const SALES_ORDER: &str = "salesorder";

/// The Business Central object whose poll lists the purchase orders in review.
const PENDING_OBJECT: &str = "purchaseOrders";

/// One Dynamics org: its Dataverse and/or Business Central clients.
pub struct DynamicsReader {
    pub clients: DynamicsClients,
}

impl DynamicsReader {
    fn dataverse(&self) -> Result<&super::client::DataverseClient, ReadError> {
        self.clients
            .dataverse
            .as_deref()
            .ok_or_else(|| ReadError::NotConfigured { system: SYSTEM, detail: "the org has no Dataverse URL".into() })
    }

    fn business_central(&self) -> Result<(&super::bc::BcClient, &str), DeliveryError> {
        match (&self.clients.bc, &self.clients.bc_company) {
            (Some(bc), Some(company)) => Ok((bc, company)),
            _ => Err(DeliveryError::BadPayload {
                destination: "dynamics approvals".into(),
                detail: "the Dynamics org has no Business Central environment to write approvals to".into(),
            }),
        }
    }
}

impl super::config::DynamicsOrgConfig {
    /// The org's connector over its built Dataverse / Business Central clients.
    pub fn connector(&self, clients: DynamicsClients) -> ErpConnector {
        ErpConnector::new(DynamicsReader { clients })
    }
}

#[async_trait]
impl ErpReader for DynamicsReader {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    async fn poll(&self, object: &str, cursor: Option<&str>, _now: jiff::Timestamp) -> Result<Polled, ReadError> {
        if object == PENDING_OBJECT {
            return Ok(Polled::last(Found::Records(self.pending_purchase_requests().await?), None));
        }
        if object != SALES_ORDER {
            return Err(ReadError::UnknownObject { system: SYSTEM, object: object.to_owned(), what: "polled" });
        }
        let dataverse = self.dataverse()?;
        let cursor = match cursor {
            Some(text) => serde_json::from_str(text).map_err(|e| ReadError::BadCursor {
                system: SYSTEM,
                object: object.to_owned(),
                reason: e.to_string(),
            })?,
            None => DeltaCursor::new("salesorders", canonical::SALES_ORDER_SELECT, "salesorderid"),
        };
        let poll = cursor.poll(dataverse, DELTA_PAGE_SIZE).await?;
        let next = serde_json::to_string(&poll.next).unwrap_or_default();
        // The initial tracked read lists every row: it only sets where changes start.
        if poll.initial {
            return Ok(Polled::page(Found::Nothing, next, poll.more));
        }
        let mut records = Vec::new();
        for change in &poll.changes {
            match change {
                Change::Upsert { row, .. } => records.push(
                    canonical::shipment_from_sales_order(row)
                        .map_err(|e| ReadError::Map { system: SYSTEM, reason: e.to_string() })?,
                ),
                Change::Removed { id, .. } => tracing::info!(id, "Dataverse sales order deleted."),
            }
        }
        Ok(Polled::page(Found::Records(records), next, poll.more))
    }

    async fn read(&self, object: &str, id: &str) -> Result<Option<ErpRecord>, ReadError> {
        if !object.eq_ignore_ascii_case(SALES_ORDER) {
            return Err(ReadError::UnknownObject { system: SYSTEM, object: object.to_owned(), what: "read" });
        }
        Ok(canonical::read_sales_order(self.dataverse()?, id).await?)
    }

    async fn pending_purchase_requests(&self) -> Result<Vec<ErpRecord>, ReadError> {
        match (&self.clients.bc, &self.clients.bc_company) {
            (Some(bc), Some(company)) => Ok(canonical::pending_purchase_requests(bc, company).await?),
            _ => Ok(Vec::new()),
        }
    }

    fn push_intake(&self, credentials: PushCredentials) -> Arc<dyn PushIntake> {
        Arc::new(WebhookIntake { key: credentials.shared_secret })
    }
}

#[async_trait]
impl ApprovalWriteBack for DynamicsReader {
    async fn decide(&self, request: &DecisionRequest) -> Result<DecisionOutcome, DeliveryError> {
        let (bc, company) = self.business_central()?;
        super::approval::decide(bc, company, request).await
    }

    async fn users(&self) -> Result<Vec<ErpUser>, DeliveryError> {
        match (&self.clients.bc, &self.clients.bc_company) {
            (Some(bc), Some(company)) => super::approval::users(bc, company).await,
            // Identity rules match against these people: an empty list would leave every
            // requester unrecognised without saying why.
            _ => Err(DeliveryError::BadPayload {
                destination: "dynamics users".into(),
                detail: "the Dynamics org has no Business Central company to read users from".into(),
            }),
        }
    }
}
