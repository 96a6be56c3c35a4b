//! The sources the gateway runs, as its shared state holds them: what each configured ERP, CRM
//! and DingTalk HTTP-callback source was built into. Only data and pure helpers live here; the
//! handlers, sinks and loops that act on them (in `erp`, `crm`, `dingtalk`, `push`, `poll`)
//! reach them through [`crate::AppState`], which is why this module must not import it.

use connectors::dingtalk::callback::ReplayGuard;
use connectors::dingtalk::crypto::CallbackCrypto;
use connectors::erp::{self, ErpRecord};
use connectors::push::{PushIntake, PushSubscription};
use connectors::reader::{ApprovalWriteBack, CrmReader, ErpReader};
use engine::config::ErpSystem;
use model::InboundChange;
use secrecy::SecretString;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The outbox destination of an ERP source's read jobs.
pub fn read_destination(source: &str) -> String {
    format!("erp-read:{source}")
}

/// One configured ERP source, as the gateway runs it.
pub struct ErpSource {
    pub name: String,
    pub system: ErpSystem,
    /// Polls and reads the ERP's records.
    pub reader: Arc<dyn ErpReader>,
    /// Writes approval decisions to the ERP and lists its people.
    pub write_back: Arc<dyn ApprovalWriteBack>,
    pub objects: Vec<String>,
    pub coalesce: Duration,
    pub poll: Option<Duration>,
    /// A status older than this when it reaches the gateway is marked stale (`data.stale`).
    pub stale_after: Option<Duration>,
    /// Checks and reads what the ERP pushes to this source (with the source's secrets).
    pub push: Arc<dyn PushIntake>,
    /// The watched drop folder of pushed documents, read by `push`.
    pub drop_folder: Option<PathBuf>,
    /// The largest file read from `drop_folder`; a larger one goes to `failed/` unread.
    pub max_file_bytes: u64,
}

/// The ERP sources, by source name.
pub type ErpSources = BTreeMap<String, Arc<ErpSource>>;

impl ErpSource {
    /// The event of one record state, as the flows see it: the canonical data plus how old the
    /// state was when it arrived (`age_seconds`, `stale`).
    pub(crate) fn inbound(&self, record: &ErpRecord, change: &str, now_ms: i64) -> InboundChange {
        let mut data = record.data.clone();
        if let Value::Object(map) = &mut data {
            let age = record.source_time_ms.map(|t| (now_ms - t).max(0) / 1000);
            let stale = self.stale_after.is_some_and(|limit| erp::is_stale(record.source_time_ms, now_ms, limit));
            map.insert("age_seconds".into(), age.map_or(Value::Null, Value::from));
            map.insert("stale".into(), Value::Bool(stale));
        }
        InboundChange {
            event_type: format!("{}.{}", self.system.as_str(), record.object),
            entity: record.entity.to_owned(),
            entity_id: record.entity_id.clone(),
            change: change.to_owned(),
            dedup_key: record.dedup_key(),
            source_time_ms: record.source_time_ms,
            data,
        }
    }
}

/// The outbox destination of a CRM source's read jobs.
pub fn refresh_destination(source: &str) -> String {
    format!("refresh:{source}")
}

/// One configured CRM source, as the gateway runs it.
pub struct CrmSource {
    pub name: String,
    /// Reads and polls the CRM's records.
    pub reader: Arc<dyn CrmReader>,
    /// Checks and reads what the CRM pushes to this source (with the source's secrets).
    pub push: Arc<dyn PushIntake>,
    /// Keeps the CRM pushing, where it must be asked to (a Zoho channel).
    pub subscription: Option<Arc<dyn PushSubscription>>,
    /// How often the source is polled; `None`: never.
    pub poll: Option<Duration>,
    pub objects: Vec<String>,
    pub coalesce: Duration,
}

/// Names of every CRM source, by name, for the router and the gateway.
pub type CrmSources = BTreeMap<String, Arc<CrmSource>>;

/// One DingTalk source in HTTP callback mode.
pub struct CallbackReceiver {
    pub crypto: Arc<CallbackCrypto>,
    /// Stale and replayed pushes are refused.
    pub replays: ReplayGuard,
    /// The capability of `POST /dingtalk/card-callback/{source}?token=`; `None` closes that URL.
    pub card_token: Option<SecretString>,
}
