//! Phase 1: the config file as written. Every leaf a diagnostic may point at keeps its span.

pub use connect::config::{RawSecretRef, RawSecrets, S};
// Each connection's table is its connector's.
use connectors::crm_destination::CrmDestinationKeys;
use connectors::crm_source::CrmSourceKeys;
pub use connectors::dingtalk::config::{RawDingtalk, RawDingtalkApp};
use connectors::dynamics::config::RawDynamics;
use connectors::erp_source::ErpSourceKeys;
use connectors::netsuite::config::RawNetsuite;
use connectors::registry::RawTables;
use connectors::salesforce::config::RawSalesforce;
use connectors::sap::config::RawSap;
use connectors::zoho::config::RawZoho;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub delivery: RawDelivery,
    #[serde(default)]
    pub sources: BTreeMap<S<String>, RawSource>,
    #[serde(default)]
    pub destinations: BTreeMap<S<String>, RawDestination>,
    #[serde(default)]
    pub flows: Vec<RawFlow>,
    #[serde(default)]
    pub dingtalk: RawDingtalk,
    #[serde(default)]
    pub salesforce: RawSalesforce,
    #[serde(default)]
    pub zoho: RawZoho,
    #[serde(default)]
    pub netsuite: RawNetsuite,
    #[serde(default)]
    pub dynamics: RawDynamics,
    #[serde(default)]
    pub sap: RawSap,
    /// `[roles.NAME]`: who holds an approval role.
    #[serde(default)]
    pub roles: BTreeMap<S<String>, crate::approvals::config::RawRole>,
    /// `[identity.SOURCE]`: DingTalk users ↔ the users of an ERP source.
    #[serde(default)]
    pub identity: BTreeMap<S<String>, crate::approvals::config::RawIdentity>,
    /// `[approvals]`: FX, business calendar and approval policies.
    #[serde(default)]
    pub approvals: Option<crate::approvals::config::RawApprovals>,
    /// `[audit]`: the key the audit chain is hashed with.
    #[serde(default)]
    pub audit: RawAudit,
}

impl RawConfig {
    /// The record systems' connection tables as written, for their validation and for the
    /// connectors' checks of the sources and destinations that name them.
    pub fn tables(&self) -> RawTables<'_> {
        RawTables {
            salesforce: &self.salesforce,
            zoho: &self.zoho,
            netsuite: &self.netsuite,
            dynamics: &self.dynamics,
            sap: &self.sap,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `{ env = "NAME" }` / `{ file = "path" }`: the HMAC key of the audit chain, at least 32 bytes.
    pub key: Option<S<RawSecretRef>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<S<String>>,
    pub admin_listen: Option<S<String>>,
    pub max_body_bytes: Option<S<u64>>,
    /// Bytes of accepted events waiting for their intake commit, all requests together.
    pub max_intake_bytes: Option<S<u64>>,
    /// The longest one request to the public listener may take, body reading included.
    pub request_timeout: Option<S<String>>,
    /// Requests the public listener handles at once; more are refused with 503.
    pub max_concurrent_requests: Option<S<u64>>,
    /// How long a client may take to send a request's headers (also an idle keep-alive's limit).
    pub header_read_timeout: Option<S<String>>,
    pub admin_token: Option<S<RawSecretRef>>,
    /// Private or loopback hosts outbound requests may reach anyway (on-premises systems):
    /// host names, IP addresses or CIDR ranges.
    pub allow_private_hosts: Option<S<Vec<S<String>>>>,
    /// A PEM file of extra CA certificates trusted for every outbound connection.
    pub ca_bundle: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<S<String>>,
    pub retention: Option<S<String>>,
    pub token_key: Option<S<RawSecretRef>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub retry_schedule: Option<S<Vec<S<String>>>>,
    pub jitter: Option<S<f64>>,
    pub lease: Option<S<String>>,
    pub concurrency_per_destination: Option<S<u64>>,
    pub claim_batch: Option<S<u64>>,
    pub request_timeout: Option<S<String>>,
    pub max_retry_after: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub system: Option<S<String>>,
    pub secret: Option<S<RawSecrets>>,
    pub entity_id: Option<S<String>>,
    pub tolerance: Option<S<String>>,
    #[serde(default)]
    pub fields: BTreeMap<S<String>, S<RawField>>,
    /// `dingtalk` sources: the app whose events arrive, and how (`stream` or `http`).
    pub app: Option<S<String>>,
    pub mode: Option<S<String>>,
    pub callback_token: Option<S<RawSecretRef>>,
    pub callback_aes_key: Option<S<RawSecretRef>>,
    /// The capability in the URL of HTTP card callbacks (`?token=`), its own random value.
    pub card_callback_token: Option<S<RawSecretRef>>,
    /// `salesforce` / `zoho` sources: the org, the objects (modules) watched, and how changes arrive.
    pub org: Option<S<String>>,
    pub objects: Option<S<Vec<S<String>>>>,
    pub intake: Option<S<String>>,
    pub poll_interval: Option<S<String>>,
    pub coalesce: Option<S<String>>,
    pub channel_token: Option<S<RawSecretRef>>,
    pub notify_url: Option<S<String>>,
    /// `salesforce` Outbound Message sources: the secret path segment of their intake URL.
    pub outbound_token: Option<S<RawSecretRef>>,
    /// `netsuite` / `dynamics` / `sap` sources: the connection (`account`; `org` and `system`
    /// above serve dynamics and sap), how changes arrive and how old a status may be.
    pub account: Option<S<String>>,
    pub webhook_secret: Option<S<RawSecretRef>>,
    pub poll: Option<S<String>>,
    pub stale_after: Option<S<String>>,
    pub idoc_folder: Option<S<String>>,
    /// `sap` with `idoc_folder`: the largest file read from the folder.
    pub max_file_bytes: Option<S<u64>>,
    pub idoc_user: Option<S<String>>,
    pub idoc_password: Option<S<RawSecretRef>>,
}

impl RawSource {
    /// The keys a CRM source reads, for its connector to validate.
    pub fn crm_keys(&self) -> CrmSourceKeys<'_> {
        CrmSourceKeys {
            org: self.org.as_ref(),
            objects: self.objects.as_ref(),
            coalesce: self.coalesce.as_ref(),
            intake: self.intake.as_ref(),
            poll_interval: self.poll_interval.as_ref(),
            channel_token: self.channel_token.as_ref(),
            notify_url: self.notify_url.as_ref(),
            outbound_token: self.outbound_token.as_ref(),
        }
    }

    /// The keys an ERP source reads, for its connector to validate.
    pub fn erp_keys(&self) -> ErpSourceKeys<'_> {
        ErpSourceKeys {
            account: self.account.as_ref(),
            org: self.org.as_ref(),
            system: self.system.as_ref(),
            objects: self.objects.as_ref(),
            webhook_secret: self.webhook_secret.as_ref(),
            poll: self.poll.as_ref(),
            stale_after: self.stale_after.as_ref(),
            coalesce: self.coalesce.as_ref(),
            idoc_folder: self.idoc_folder.as_ref(),
            max_file_bytes: self.max_file_bytes.as_ref(),
            idoc_user: self.idoc_user.as_ref(),
            idoc_password: self.idoc_password.as_ref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    pub path: S<String>,
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub access_token: Option<S<RawSecretRef>>,
    pub secret: Option<S<RawSecretRef>>,
    pub base_url: Option<S<String>>,
    pub per_minute: Option<S<u32>>,
    pub concurrency: Option<S<u64>>,
    /// `dingtalk_app` destinations: the app that sends, and its robot (default: the app key).
    pub app: Option<S<String>>,
    pub robot_code: Option<S<String>>,
    /// `salesforce` / `zoho` destinations: the org written to, and how writes are batched.
    pub org: Option<S<String>>,
    pub priority: Option<S<String>>,
    pub linger: Option<S<String>>,
}

impl RawDestination {
    /// The keys a CRM destination reads, for its connector to validate.
    pub fn crm_keys(&self) -> CrmDestinationKeys<'_> {
        CrmDestinationKeys { org: self.org.as_ref(), priority: self.priority.as_ref(), linger: self.linger.as_ref() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    pub name: S<String>,
    pub on: S<RawOn>,
    pub when: Option<S<String>>,
    #[serde(default)]
    pub deliver: Vec<RawDeliver>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOn {
    /// One source name, or a list of them (`source = ["s4", "ecc"]`).
    pub source: S<RawSourceNames>,
    pub entity: Option<S<String>>,
    pub change: Option<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeliver {
    pub destination: S<String>,
    pub when: Option<S<String>>,
    pub ordering_key: Option<S<String>>,
    pub message: S<RawMessage>,
}

/// All message shapes in one table (a `type` tag picks which keys are required); kept flat so
/// spans survive (serde's internally tagged enums buffer values and lose them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub title: Option<S<String>>,
    pub text: Option<S<String>>,
    pub content: Option<S<String>>,
    pub buttons: Option<Vec<S<RawButton>>>,
    pub single_title: Option<S<String>>,
    pub single_url: Option<S<String>>,
    pub btn_orientation: Option<S<String>>,
    // `dingtalk_app` message types (work_notice, group_message, card, card_update, approval).
    pub users: Option<S<String>>,
    pub group: Option<S<String>>,
    pub template_id: Option<S<String>>,
    pub out_track_id: Option<S<String>>,
    pub params: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub private_params: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub private_to: Option<S<String>>,
    pub callback: Option<S<String>>,
    pub callback_route_key: Option<S<String>>,
    pub process_code: Option<S<String>>,
    pub originator: Option<S<String>>,
    pub dept_id: Option<S<String>>,
    pub approvers: Option<S<String>>,
    pub form: Option<S<BTreeMap<S<String>, S<String>>>>,
    // `record` messages (salesforce and zoho destinations).
    pub object: Option<S<String>>,
    pub op: Option<S<String>>,
    pub id: Option<S<String>>,
    pub external_id_field: Option<S<String>>,
    pub external_id: Option<S<String>>,
    pub fields: Option<S<BTreeMap<S<String>, S<String>>>>,
    pub json_fields: Option<S<BTreeMap<S<String>, S<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawButton {
    pub title: S<String>,
    pub url: S<String>,
}

/// `on.source`: one name or a list of names (the span covers the whole value).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSourceNames {
    One(String),
    Many(Vec<String>),
}

impl RawSourceNames {
    pub fn names(&self) -> Vec<String> {
        match self {
            RawSourceNames::One(name) => vec![name.clone()],
            RawSourceNames::Many(names) => names.clone(),
        }
    }
}
