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
use serde::{Deserialize, Serialize};
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
            return Ok(Polled::last(Found::Records(self.pending_purchase_requests().await?), None));
        }
        if object != canonical::DELIVERY_SET && object != canonical::PURCHASE_ORDER_SET {
            return Err(ReadError::UnknownObject { system: SYSTEM, object: object.to_owned(), what: "polled" });
        }
        let Some(text) = cursor else {
            let start = StoredCursor { watermark_ms: now.as_millisecond(), scan: None };
            return Ok(Polled::last(Found::Nothing, Some(start.encode())));
        };
        let stored = StoredCursor::decode(text).ok_or_else(|| ReadError::BadCursor {
            system: SYSTEM,
            object: object.to_owned(),
            reason: format!("`{text}` is neither a time nor a stored scan"),
        })?;
        let mut cursor = stored.resume(object)?;
        let (records, more) = if object == canonical::DELIVERY_SET {
            canonical::poll_deliveries(&self.client, &mut cursor).await?
        } else {
            canonical::poll_purchase_orders_canonical(&self.client, &mut cursor).await?
        };
        let watermark = cursor.watermark().map_or(stored.watermark_ms, |w| w.as_millisecond().max(stored.watermark_ms));
        let scan = cursor.scan().map(|(at, key)| (at.as_millisecond(), key.clone()));
        Ok(Polled::page(Found::Records(records), StoredCursor { watermark_ms: watermark, scan }.encode(), more))
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

/// A poll cursor as stored: the last change time seen (epoch milliseconds) and the scan under
/// way. Cursors stored before polls went page by page are the milliseconds alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredCursor {
    watermark_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scan: Option<(i64, String)>,
}

impl StoredCursor {
    fn decode(text: &str) -> Option<Self> {
        match text.parse::<i64>() {
            Ok(watermark_ms) => Some(StoredCursor { watermark_ms, scan: None }),
            Err(_) => serde_json::from_str(text).ok(),
        }
    }

    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn resume(&self, object: &str) -> Result<ChangeCursor, ReadError> {
        let time = |ms: i64| {
            jiff::Timestamp::from_millisecond(ms).map_err(|e| ReadError::BadCursor {
                system: SYSTEM,
                object: object.to_owned(),
                reason: format!("{ms} is not a time ({e})"),
            })
        };
        let scan = match &self.scan {
            Some((ms, key)) => Some((time(*ms)?, key.clone())),
            None => None,
        };
        Ok(ChangeCursor::resume(time(self.watermark_ms)?, scan, DEFAULT_OVERLAP))
    }
}
