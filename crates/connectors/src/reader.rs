//! What the gateway asks of a record source's connector, as traits: [`ErpReader`] (poll an
//! object for changes, read one record, list the purchase requests waiting for approval, make
//! the intake of what the ERP pushes), [`ApprovalWriteBack`] (write a decision, list the people who may decide) and
//! [`CrmReader`] (read one CRM record with its context). Each vendor implements them in its own
//! folder (`<system>/reader.rs`); the gateway holds them as trait objects and never matches on
//! the vendor to read.

use crate::approval::{DecisionOutcome, DecisionRequest, ErpUser};
use crate::erp::ErpRecord;
use crate::push::{NoPushes, PushCredentials, PushIntake, PushSetup, PushSetupError, PushSubscription};
use async_trait::async_trait;
use connect::DeliveryError;
use serde_json::Value;
use std::sync::Arc;

/// A record a poll reports as changed without its content (NetSuite's SuiteQL lists ids and
/// times): intake stores a change notice and reads the record later.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedRecord {
    pub id: String,
    /// Identifies the change (the record's last-modified time), so the same change polled twice
    /// is one notice.
    pub stamp: String,
    /// What the notice keeps of the poll row.
    pub detail: Value,
}

/// What one poll of one object found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Nothing to report: the first poll of a new source only sets where changes start.
    Nothing,
    /// Changed records to be read later.
    Changed(Vec<ChangedRecord>),
    /// Records in full, in the canonical shape.
    Records(Vec<ErpRecord>),
}

/// One page of a poll and the cursor to store with what it found (`None`: the object is listed
/// afresh every time and keeps no cursor).
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    pub found: Found,
    pub cursor: Option<String>,
    /// More changes wait past this page: polling again from `cursor` now continues the scan.
    pub more: bool,
}

impl Polled {
    /// The last (or only) page of a poll.
    pub fn last(found: Found, cursor: Option<String>) -> Self {
        Polled { found, cursor, more: false }
    }

    /// A page after which more changes wait.
    pub fn page(found: Found, cursor: String, more: bool) -> Self {
        Polled { found, cursor: Some(cursor), more }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The config lets only known objects through; this is a source built by hand.
    #[error("{system} object `{object}` cannot be {what} by dingbridge")]
    UnknownObject { system: &'static str, object: String, what: &'static str },
    /// The stored cursor does not parse: a store edited by hand, or written by another version.
    #[error("the stored {system} poll cursor of `{object}` is unreadable ({reason}); delete it to restart the poll from now")]
    BadCursor { system: &'static str, object: String, reason: String },
    #[error("{system}: {detail}")]
    NotConfigured { system: &'static str, detail: String },
    #[error(transparent)]
    Vendor(#[from] DeliveryError),
    #[error("{system} answered a record dingbridge cannot map: {reason}")]
    Map { system: &'static str, reason: String },
}

impl ReadError {
    /// The failure as a delivery error, for a read job: an object or config problem is
    /// permanent (reading again changes nothing), a vendor failure keeps its own disposition.
    pub fn into_delivery(self, destination: &str) -> DeliveryError {
        match self {
            ReadError::Vendor(err) => err,
            other => DeliveryError::BadPayload { destination: destination.to_owned(), detail: other.to_string() },
        }
    }
}

/// Reading one ERP's records (see the module docs).
#[async_trait]
pub trait ErpReader: Send + Sync {
    /// `netsuite`, `dynamics`, `sap`: the `system` of events and notices.
    fn system(&self) -> &'static str;

    /// One page of a poll of `object` from the stored `cursor` (`None`: the first poll, which only
    /// says where to start, so a new source reports changes from now on and not the ERP's
    /// history). A page is bounded; [`Polled::more`] says whether the scan goes on.
    async fn poll(&self, object: &str, cursor: Option<&str>, now: jiff::Timestamp) -> Result<Polled, ReadError>;

    /// The current state of one record, `None` when it no longer exists.
    async fn read(&self, object: &str, id: &str) -> Result<Option<ErpRecord>, ReadError>;

    /// The purchase requests waiting for approval, in the canonical shape.
    async fn pending_purchase_requests(&self) -> Result<Vec<ErpRecord>, ReadError>;

    /// The intake of the changes this ERP pushes to a source with `credentials`; an ERP that
    /// only polls takes none.
    fn push_intake(&self, _credentials: PushCredentials) -> Arc<dyn PushIntake> {
        Arc::new(NoPushes)
    }
}

/// Writing approval decisions back to one ERP.
#[async_trait]
pub trait ApprovalWriteBack: Send + Sync {
    async fn decide(&self, request: &DecisionRequest) -> Result<DecisionOutcome, DeliveryError>;

    /// The ERP's people, for identity mapping; empty where the ERP keeps no list for dingbridge, an error
    /// where this connection cannot read the list it should have.
    async fn users(&self) -> Result<Vec<ErpUser>, DeliveryError>;
}

/// Reading one CRM's records: one record's current state with the context a message needs
/// (account, contact roles, recent activity), polls for CRMs that are polled, and the intake of
/// what the CRM pushes.
#[async_trait]
pub trait CrmReader: Send + Sync {
    /// `salesforce`, `zoho`: the `system` of events and notices.
    fn system(&self) -> &'static str;

    /// `object`'s record `id` now, `None` when it no longer exists.
    async fn read(&self, object: &str, id: &str) -> Result<Option<crate::crm::Snapshot>, DeliveryError>;

    /// One poll of `object` from the stored `cursor`, as [`ErpReader::poll`]; a CRM that is not
    /// polled finds nothing.
    async fn poll(&self, _object: &str, _cursor: Option<&str>, _now: jiff::Timestamp) -> Result<Polled, ReadError> {
        Ok(Polled::last(Found::Nothing, None))
    }

    /// The intake of what this CRM pushes to a source set up as `setup` says.
    fn push_intake(&self, _setup: &PushSetup<'_>) -> Result<Arc<dyn PushIntake>, PushSetupError> {
        Ok(Arc::new(NoPushes))
    }

    /// What keeps the CRM pushing to the source, where it must be asked to (`None`: nothing).
    fn subscription(&self, _setup: &PushSetup<'_>) -> Result<Option<Arc<dyn PushSubscription>>, PushSetupError> {
        Ok(None)
    }
}

/// One ERP connector as the gateway holds it: the same vendor object behind both traits.
#[derive(Clone)]
pub struct ErpConnector {
    pub reader: Arc<dyn ErpReader>,
    pub write_back: Arc<dyn ApprovalWriteBack>,
}

impl ErpConnector {
    pub fn new<T: ErpReader + ApprovalWriteBack + 'static>(connector: T) -> Self {
        let shared = Arc::new(connector);
        ErpConnector { reader: shared.clone(), write_back: shared }
    }
}
