//! SAP as an [`ErpReader`] and an [`ApprovalWriteBack`]: OData polls of outbound deliveries and
//! purchase orders by change time (records in full), purchase requisitions waiting for release,
//! IDoc-XML documents pushed by ECC (read by [`IdocIntake`]), and releases written back.

use super::canonical;
use super::client::SapClient;
use super::push::IdocIntake;
use super::source::{ChangeCursor, DEFAULT_OVERLAP};
use crate::approval::{DecisionOutcome, DecisionRequest, ErpUser};
use crate::erp::ErpRecord;
use crate::push::{PushCredentials, PushIntake};
use crate::reader::{ApprovalWriteBack, ErpConnector, ErpReader, Found, Polled, ReadError};
use async_trait::async_trait;
use connect::DeliveryError;
use std::sync::Arc;

const SYSTEM: &str = "sap";

/// The object whose poll lists the requisitions waiting for release.
const PENDING_OBJECT: &str = "A_PurchaseRequisitionHeader";

/// One SAP system.
pub struct SapReader {
    pub client: Arc<SapClient>,
}

impl super::config::SapSystemConfig {
    /// The system's connector over its built client.
    pub fn connector(&self, client: Arc<SapClient>) -> ErpConnector {
        ErpConnector::new(SapReader { client })
    }
}

#[async_trait]
impl ErpReader for SapReader {
    fn system(&self) -> &'static str {
        SYSTEM
    }

    async fn poll(&self, object: &str, cursor: Option<&str>, now: jiff::Timestamp) -> Result<Polled, ReadError> {
        if object == PENDING_OBJECT {
            return Ok(Polled { found: Found::Records(self.pending_purchase_requests().await?), cursor: None });
        }
        if object != canonical::DELIVERY_SET && object != canonical::PURCHASE_ORDER_SET {
            return Err(ReadError::UnknownObject { system: SYSTEM, object: object.to_owned(), what: "polled" });
        }
        // The cursor is the last change time seen, in epoch milliseconds.
        let start = cursor.map(|text| {
            text.parse::<i64>().ok().and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()).ok_or_else(|| {
                ReadError::BadCursor {
                    system: SYSTEM,
                    object: object.to_owned(),
                    reason: format!("`{text}` is not a time"),
                }
            })
        });
        let Some(start) = start.transpose()? else {
            return Ok(Polled { found: Found::Nothing, cursor: Some(now.as_millisecond().to_string()) });
        };
        let mut cursor = ChangeCursor::new(Some(start), DEFAULT_OVERLAP);
        let records = if object == canonical::DELIVERY_SET {
            canonical::poll_deliveries(&self.client, &mut cursor).await?
        } else {
            canonical::poll_purchase_orders_canonical(&self.client, &mut cursor).await?
        };
        let next = cursor.watermark().map_or(start, |w| w.max(start)).as_millisecond().to_string();
        Ok(Polled { found: Found::Records(records), cursor: Some(next) })
    }

    async fn read(&self, object: &str, id: &str) -> Result<Option<ErpRecord>, ReadError> {
        match object {
            canonical::DELIVERY_SET => Ok(canonical::read_delivery(&self.client, id).await?),
            canonical::PURCHASE_ORDER_SET => Ok(canonical::read_purchase_order(&self.client, id).await?),
            _ => Err(ReadError::UnknownObject { system: SYSTEM, object: object.to_owned(), what: "read" }),
        }
    }

    async fn pending_purchase_requests(&self) -> Result<Vec<ErpRecord>, ReadError> {
        Ok(canonical::pending_purchase_requests(&self.client).await?)
    }

    fn push_intake(&self, credentials: PushCredentials) -> Arc<dyn PushIntake> {
        Arc::new(IdocIntake { client: self.client.clone(), login: credentials.basic_login })
    }
}

#[async_trait]
impl ApprovalWriteBack for SapReader {
    async fn decide(&self, request: &DecisionRequest) -> Result<DecisionOutcome, DeliveryError> {
        super::approval::decide(&self.client, request).await
    }

    /// SAP gives no user list dingbridge reads: identities map by the directory alone.
    async fn users(&self) -> Result<Vec<ErpUser>, DeliveryError> {
        Ok(Vec::new())
    }
}
