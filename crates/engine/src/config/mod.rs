//! Configuration in three phases (STYLE.md §3):
//!
//! 1. [`parse`]: TOML text → [`RawConfig`] (serde, `deny_unknown_fields`, spans kept);
//! 2. [`Config::validate`]: pure — no environment, no network, no clock, no file reads —
//!    compiles every CEL condition and template and collects *all* errors as coded
//!    [`ConfigError`]s with file:line:col;
//! 3. [`Config::build`]: resolves secrets from the environment / files and constructs sinks,
//!    giving a [`Runtime`].

mod build;
mod error;
pub mod raw;
pub mod refs;
mod validate;

pub use build::{DingtalkSourceRuntime, ErpSecrets, ProcessSecrets, Runtime, Secret, SecretResolver};
// Each connection's config lives with its connector; these names are the engine's API too.
pub use connect::config::{duration, parse_duration, SecretLocation, SecretRef};
pub use connectors::dingtalk::config::{DingtalkAppConfig, DingtalkRegion, DingtalkTokenApi};
pub use error::{line_col, Code, ConfigError, ConfigErrors};
pub use raw::RawConfig;
pub use validate::{destination_types, source_types, MESSAGE_TYPES};

use connect::RetrySchedule;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The type of a typed source field (mirrors `model::FieldType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Money,
    Quantity,
    Time,
    Decimal,
    Integer,
    Text,
    Bool,
}

impl FieldKind {
    pub const ALL: [FieldKind; 7] =
        [Self::Money, Self::Quantity, Self::Time, Self::Decimal, Self::Integer, Self::Text, Self::Bool];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Money => "money",
            Self::Quantity => "quantity",
            Self::Time => "time",
            Self::Decimal => "decimal",
            Self::Integer => "integer",
            Self::Text => "text",
            Self::Bool => "bool",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn to_model(self) -> model::FieldType {
        match self {
            Self::Money => model::FieldType::Money,
            Self::Quantity => model::FieldType::Quantity,
            Self::Time => model::FieldType::Time,
            Self::Decimal => model::FieldType::Decimal,
            Self::Integer => model::FieldType::Integer,
            Self::Text => model::FieldType::Text,
            Self::Bool => model::FieldType::Bool,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where vendors and DingTalk reach the gateway: webhooks, callbacks, intake, `/healthz`.
    pub listen: SocketAddr,
    /// Where operators reach it: `/metrics` and the admin API under `/api/`.
    pub admin_listen: SocketAddr,
    pub max_body_bytes: u64,
    /// Bytes of accepted events in flight between accept and commit, all requests together;
    /// past it intake answers 503 + `Retry-After`.
    pub max_intake_bytes: u64,
    /// Bound on one request to the public listener (body reading and the intake commit
    /// included); past it the client gets 503 `request_timeout`.
    pub request_timeout: Duration,
    /// Requests the public listener works on at once; one more is refused with 503 at once.
    pub max_concurrent_requests: usize,
    /// How long a client may take to send a request's headers, on both listeners; a slower
    /// client (or an idle keep-alive connection) is disconnected.
    pub header_read_timeout: Duration,
    pub admin_token: Option<SecretRef>,
    /// Private and loopback hosts outbound requests may reach (R22): `allow_private_hosts`, plus
    /// the simulators' hosts under `--sim-endpoints`.
    pub private_hosts: connect::http::PrivateHosts,
    /// Extra CA certificates for every outbound connection, read by [`Config::build`].
    pub ca_bundle: Option<FileRef>,
}

/// A file the config names (not a secret), and where: read in phase 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    /// Relative paths are resolved against the config file's directory.
    pub path: PathBuf,
    pub span: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    /// How long done jobs and inbox rows are kept before the retention sweep prunes them (dead
    /// letters and audit rows are kept); at least [`StoreConfig::MIN_RETENTION`].
    pub retention: Duration,
    /// The key material rotated vendor credentials are sealed with (AES-256-GCM); without it
    /// they are kept in memory only.
    pub token_key: Option<SecretRef>,
}

impl StoreConfig {
    /// `[store] retention` by default: 30 days.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
    /// The shortest `[store] retention`: a day, longer than any replay tolerance and than the
    /// longest a vendor retries one notification (Salesforce outbound messages: 24 h), so a
    /// redelivered event still finds its dedup key.
    pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);
}

/// `[audit]`.
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    /// The HMAC key of the audit chain. Required with approval policies; without it the chain is
    /// hashed with plain SHA-256, which anyone who can write to the store can recompute.
    pub key: Option<SecretRef>,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub schedule: RetrySchedule,
    pub lease: Duration,
    pub concurrency_per_destination: usize,
    pub claim_batch: usize,
    pub request_timeout: Duration,
    /// The longest a vendor's `Retry-After` may pause a destination; a longer one is capped (and
    /// logged), so a wrong or hostile header cannot park a destination for years.
    pub max_retry_after: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            schedule: RetrySchedule::default(),
            lease: Duration::from_secs(30),
            concurrency_per_destination: 8,
            claim_batch: 256,
            request_timeout: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// JSON pointer into the webhook body, e.g. `/data/amount`.
    pub path: String,
    pub kind: FieldKind,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Generic Standard Webhooks source: `POST /hooks/{name}`.
    Webhook,
    /// Events of a DingTalk app: approvals, card clicks, robot messages, directory changes.
    Dingtalk { app: String, inbound: DingtalkInbound },
    /// Record changes in a CRM org (a Salesforce org, a Zoho CRM org).
    Crm(CrmSystem, CrmSource),
    /// Record changes in an ERP: a NetSuite account, a Dynamics 365 org or an SAP system.
    Erp(ErpSource),
}

impl SourceKind {
    /// The CRM system and settings of a CRM source.
    pub fn crm(&self) -> Option<(connectors::registry::System, &CrmSource)> {
        match self {
            Self::Crm(system, crm) => Some((system.system(), crm)),
            _ => None,
        }
    }

    /// The kind of a source of CRM `system`.
    pub fn from_crm(system: CrmSystem, crm: CrmSource) -> Self {
        Self::Crm(system, crm)
    }
}

/// The record systems' validated connection tables: the connectors' registry.
pub use connectors::registry::Connections;

/// The ERP an [`ErpSource`] reads: the connectors' closed list.
pub use connectors::registry::ErpSystem;

/// A source watching records of one ERP connection: validated by its connector.
pub use connectors::erp_source::ErpSource;

/// The CRM a CRM source reads or a CRM destination writes to: the connectors' closed list.
pub use connectors::registry::CrmSystem;

/// A source watching records of one CRM org, and how it learns of changes: validated by its
/// connector.
pub use connectors::crm_source::{CrmIntake, CrmSource};

/// How a DingTalk app's events reach the gateway (reference §6, §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DingtalkInbound {
    /// The gateway opens an outbound WebSocket: no public URL needed.
    Stream,
    /// DingTalk posts encrypted callbacks to `POST /dingtalk/callback/{source}`; card clicks of
    /// cards sent with HTTP callbacks go to `POST /dingtalk/card-callback/{source}?token=…`,
    /// which `card_token` (at least 128 random bits) opens.
    Http { token: SecretRef, aes_key: SecretRef, card_token: Option<SecretRef> },
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    pub system: String,
    /// One or more (rotation) signing secrets.
    pub secrets: Vec<SecretRef>,
    /// JSON pointer to the record id.
    pub entity_id: String,
    /// Allowed clock skew of the webhook timestamp.
    pub tolerance: Duration,
    pub fields: BTreeMap<String, FieldSpec>,
}

impl SourceConfig {
    pub fn field_kinds(&self) -> BTreeMap<String, FieldKind> {
        self.fields.iter().map(|(k, v)| (k.clone(), v.kind)).collect()
    }
}

#[derive(Debug, Clone)]
pub struct RobotDestination {
    pub access_token: SecretRef,
    pub secret: Option<SecretRef>,
    pub base_url: String,
    pub per_minute: u32,
}

/// A destination that sends through a DingTalk app (work notifications, group messages,
/// interactive cards, OA approvals).
#[derive(Debug, Clone)]
pub struct AppDestination {
    pub app: String,
    /// The app robot used for group messages and cards; the app key when not set.
    pub robot_code: Option<String>,
}

/// A destination that writes records to one CRM org: validated by its connector.
pub use connectors::crm_destination::CrmDestination;

#[derive(Debug, Clone)]
pub enum DestinationKind {
    DingtalkRobot(RobotDestination),
    DingtalkApp(AppDestination),
    /// Record writes to a CRM org.
    Crm(CrmSystem, CrmDestination),
}

impl DestinationKind {
    /// The simulator / connector family this destination belongs to (`sim_endpoints` key).
    pub fn system(&self) -> &'static str {
        match self {
            Self::DingtalkRobot(_) | Self::DingtalkApp(_) => "dingtalk",
            Self::Crm(system, _) => system.as_str(),
        }
    }

    /// The CRM and settings of a CRM destination.
    pub fn crm(&self) -> Option<(CrmSystem, &CrmDestination)> {
        match self {
            Self::Crm(system, crm) => Some((*system, crm)),
            _ => None,
        }
    }

    /// The kind of a destination of CRM `system`.
    pub fn from_crm(system: CrmSystem, crm: CrmDestination) -> Self {
        Self::Crm(system, crm)
    }

    /// The config `type` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::DingtalkRobot(_) => "dingtalk_robot",
            Self::DingtalkApp(_) => "dingtalk_app",
            Self::Crm(system, _) => system.as_str(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DestinationConfig {
    pub name: String,
    pub kind: DestinationKind,
    /// Overrides `delivery.concurrency_per_destination`.
    pub concurrency: Option<usize>,
}

/// A compiled `when` condition.
#[derive(Clone)]
pub struct Condition {
    pub source: String,
    pub(crate) program: Arc<cel::Program>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

/// Names of compiled templates in [`Config::templates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSpec {
    Markdown {
        title: String,
        text: String,
    },
    ActionCard {
        title: String,
        text: String,
        buttons: CardButtons,
    },
    Text {
        content: String,
    },
    /// Work notification (asyncsend_v2) as markdown to a comma-separated list of userids.
    WorkNotice {
        users: String,
        title: String,
        text: String,
    },
    /// App robot markdown message in each user's 1:1 chat with the robot.
    RobotMessage {
        users: String,
        title: String,
        text: String,
    },
    /// App robot markdown message to one group (openConversationId).
    GroupMessage {
        group: String,
        title: String,
        text: String,
    },
    /// Interactive card, created and delivered to a group or to users.
    Card(CardSpec),
    /// New values for an existing card's parameters (merged by key), shared and per user.
    CardUpdate {
        out_track_id: String,
        params: Vec<(String, String)>,
        private_params: Vec<(String, String)>,
        private_to: Option<String>,
    },
    /// Start an OA approval instance.
    Approval(ApprovalSpec),
    /// Write one record to a CRM (salesforce and zoho destinations).
    Record(RecordSpec),
}

/// A record write: which object, which record, and the new field values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    /// A literal object (Salesforce) or module (Zoho) API name.
    pub object: String,
    pub op: RecordOp,
    /// `(field API name, template)`: sent as JSON strings.
    pub fields: Vec<(String, String)>,
    /// `(field API name, template)`: the rendered text is parsed as JSON (numbers, bools, null).
    pub json_fields: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOp {
    /// Update the record with this id (a template).
    Update { id: String },
    /// Create or update the record whose literal `external_id_field` has the templated value.
    Upsert { external_id_field: String, external_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardSpec {
    /// A literal card template id (`…​.schema`).
    pub template_id: String,
    /// Template for the card's outTrackId; default: the delivery's idempotency key.
    pub out_track_id: Option<String>,
    pub group: Option<String>,
    pub users: Option<String>,
    pub params: Vec<(String, String)>,
    /// Parameters only `private_to` (comma-separated userids) see, e.g. the approve buttons.
    pub private_params: Vec<(String, String)>,
    pub private_to: Option<String>,
    pub callback: CardCallback,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardCallback {
    Stream,
    Http { route_key: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// Literal process code (`PROC-…`).
    pub process_code: String,
    pub originator: String,
    pub dept_id: Option<String>,
    /// Comma-separated userids who approve one after another (`NONE` steps), if the template lets the submitter choose.
    pub approvers: Option<String>,
    pub form: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardButtons {
    Single {
        title: String,
        url: String,
    },
    /// `(title template, url template)` pairs; `orientation` is DingTalk's `btnOrientation`.
    Many {
        buttons: Vec<(String, String)>,
        orientation: String,
    },
}

/// How the ordering key of a delivery is produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderingKey {
    /// A fixed key (default: the destination name, one robot = one conversation).
    Literal(String),
    /// A template name in [`Config::templates`].
    Template(String),
}

#[derive(Debug, Clone)]
pub struct DeliverySpec {
    pub destination: String,
    /// Planned only when this holds (in addition to the flow's `when`).
    pub when: Option<Condition>,
    pub ordering_key: OrderingKey,
    pub message: MessageSpec,
}

#[derive(Debug, Clone)]
pub struct FlowConfig {
    pub name: String,
    /// The sources whose events the flow takes (one or more).
    pub source: Vec<String>,
    /// `None` = any entity (`*`).
    pub entity: Option<String>,
    /// `None` = every change kind.
    pub changes: Option<Vec<String>>,
    pub when: Option<Condition>,
    pub deliver: Vec<DeliverySpec>,
}

/// A validated configuration: every reference resolved, every condition and template compiled.
/// Holds secret *references* only; [`Config::build`] reads them.
#[derive(Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub delivery: DeliveryConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    pub destinations: BTreeMap<String, DestinationConfig>,
    pub flows: Vec<FlowConfig>,
    pub dingtalk_apps: BTreeMap<String, DingtalkAppConfig>,
    /// The record systems' connections (`[salesforce.orgs.*]`, `[netsuite.accounts.*]`, …),
    /// each validated by its connector.
    pub connections: Connections,
    /// Roles, identity mapping and approval policies (empty without an `[approvals]` section).
    pub approvals: crate::approvals::ApprovalsConfig,
    pub audit: AuditConfig,
    pub(crate) templates: Arc<minijinja::Environment<'static>>,
    pub(crate) path: String,
    pub(crate) text: Arc<str>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("server", &self.server)
            .field("store", &self.store)
            .field("delivery", &self.delivery)
            .field("sources", &self.sources)
            .field("destinations", &self.destinations)
            .field("flows", &self.flows)
            .field("dingtalk_apps", &self.dingtalk_apps)
            .field("connections", &self.connections)
            .field("approvals", &self.approvals)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

/// Phase 1: parse TOML into the raw tree. A syntax or schema error is one diagnostic.
pub fn parse(text: &str, path: &str) -> Result<RawConfig, ConfigErrors> {
    toml::from_str::<RawConfig>(text).map_err(|e| ConfigErrors::new(path, text, vec![toml_error(&e)]))
}

fn toml_error(e: &toml::de::Error) -> ConfigError {
    let msg = e.message().trim().to_string();
    let (code, label) = if msg.starts_with("unknown field") {
        (Code::UnknownKey, "unknown key")
    } else if msg.starts_with("missing field") {
        (Code::MissingKey, "missing key")
    } else if msg.starts_with("unknown variant") {
        (Code::UnknownChoice, "unknown value")
    } else if msg.starts_with("invalid type") || msg.starts_with("invalid value") || msg.starts_with("invalid length") {
        (Code::InvalidValue, "invalid value")
    } else {
        (Code::TomlSyntax, "invalid TOML")
    };
    let mut err = ConfigError::new(code, msg, e.span(), label);
    if code == Code::UnknownKey {
        err = err.with_help("remove the key or check its spelling against examples/quickstart.toml");
    }
    err
}

/// Read one config file and run phases 1 and 2. Returns the validated config and the file text.
pub fn load_and_validate(path: &Path) -> Result<(Config, String), ConfigErrors> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::new(
            shown.clone(),
            "",
            vec![ConfigError::new(Code::TomlSyntax, format!("cannot read config file `{shown}`: {e}"), None, "")],
        )
    })?;
    let config = Config::from_toml(&text, &shown)?;
    Ok((config, text))
}

impl Config {
    /// Phases 1 and 2 on a config text.
    pub fn from_toml(text: &str, path: &str) -> Result<Config, ConfigErrors> {
        let raw = parse(text, path)?;
        Config::validate(raw, text, path)
    }

    /// Phase 2, pure: resolve references, compile conditions and templates, collect all errors.
    pub fn validate(raw: RawConfig, source_text: &str, path: &str) -> Result<Config, ConfigErrors> {
        validate::validate(raw, source_text, path)
    }

    /// The file this config came from (as shown in diagnostics).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The config text the spans in diagnostics point into.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Apply command-line overrides: a different store URL, and simulator endpoints (every
    /// destination's base URL becomes `sim_endpoints[<system>]`, e.g. `dingtalk`; every
    /// Salesforce org's login URL `sim_endpoints["salesforce"]`, every Zoho org's hosts
    /// `sim_endpoints["zoho"]`; every NetSuite account, Dynamics org and SAP system its
    /// simulator's URL, `sim_endpoints["netsuite" | "dynamics" | "sap"]`).
    pub fn with_overrides(
        mut self,
        store_url: Option<String>,
        sim_endpoints: Option<&BTreeMap<String, String>>,
    ) -> Self {
        if let Some(url) = store_url {
            self.store.url = url;
        }
        if let Some(endpoints) = sim_endpoints {
            // The simulators run on this machine (loopback): exactly their hosts become reachable.
            for url in endpoints.values() {
                if let Ok(url) = url::Url::parse(url) {
                    self.server.private_hosts.allow_url_host(&url);
                }
            }
            for dest in self.destinations.values_mut() {
                let system = dest.kind.system();
                match &mut dest.kind {
                    DestinationKind::DingtalkRobot(robot) => {
                        if let Some(url) = endpoints.get(system) {
                            robot.base_url = url.clone();
                        }
                    }
                    // These send through their app or org, overridden below.
                    DestinationKind::DingtalkApp(_) | DestinationKind::Crm(..) => {}
                }
            }
            if let Some(url) = endpoints.get("dingtalk") {
                for app in self.dingtalk_apps.values_mut() {
                    app.base_url_override = Some(url.clone());
                }
            }
            self.connections.point_at_simulators(endpoints);
        }
        self
    }

    /// Effective concurrency of one destination.
    pub fn concurrency_for(&self, destination: &str) -> usize {
        self.destinations
            .get(destination)
            .and_then(|d| d.concurrency)
            .unwrap_or(self.delivery.concurrency_per_destination)
    }
}

#[cfg(test)]
mod tests;
