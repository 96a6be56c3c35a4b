//! The closed list of the systems dingbridge connects, and what the rest of the gateway may ask
//! of each by name: its config/simulator name, how it is shown to people, the objects an ERP
//! source may watch, and its simulator. Adding a system adds its variant here (the compiler then
//! lists every place that must learn it) and its folder; see `docs/specs/connector.md` §1.2.

use crate::crm_destination::CrmDestination;
use crate::dynamics::config::{DynamicsClients, DynamicsOrgConfig, RawDynamics};
use crate::netsuite::client::NetSuiteClient;
use crate::netsuite::config::{NetsuiteAccountConfig, NetsuiteSecrets, RawNetsuite};
use crate::reader::{CrmReader, ErpConnector};
use crate::salesforce::client::SalesforceClient;
use crate::salesforce::config::{RawSalesforce, SalesforceOrgConfig, SalesforceSecrets};
use crate::salesforce::limits::Priority;
use crate::sap::client::SapClient;
use crate::sap::config::{RawSap, SapSecrets, SapSystemConfig};
use crate::zoho::auth::ZohoCredentials;
use crate::zoho::client::ZohoClient;
use crate::zoho::config::{RawZoho, ZohoOrgConfig};
use connect::config::{Code, ConfigError, Diagnostics, Secret, SecretReader};
use connect::http::{HttpClient, HttpSettings};
use connect::{Clock, Sink};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every system, in the order `dingbridge sim` starts their simulators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    Dingtalk,
    Salesforce,
    Zoho,
    Netsuite,
    Dynamics,
    Sap,
}

impl System {
    pub const ALL: [System; 6] =
        [System::Dingtalk, System::Salesforce, System::Zoho, System::Netsuite, System::Dynamics, System::Sap];

    /// The name in configs, `--sim-endpoints` maps, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            System::Dingtalk => "dingtalk",
            System::Salesforce => "salesforce",
            System::Zoho => "zoho",
            System::Netsuite => "netsuite",
            System::Dynamics => "dynamics",
            System::Sap => "sap",
        }
    }

    /// The public routes the system pushes changes to, each with `{source}` for the source name
    /// (and `{token}` where the URL carries the secret); the source's
    /// [`crate::push::PushIntake`] checks and reads what arrives there. DingTalk's callbacks are
    /// events of an app, not record changes, and have their own routes.
    pub fn push_paths(self) -> &'static [&'static str] {
        match self {
            System::Dingtalk => &[],
            System::Salesforce => crate::salesforce::push::PATHS,
            System::Zoho => crate::zoho::push::PATHS,
            System::Netsuite => crate::netsuite::push::PATHS,
            System::Dynamics => crate::dynamics::push::PATHS,
            System::Sap => crate::sap::push::PATHS,
        }
    }

    /// The system's simulator, unstarted.
    pub fn simulator(self, clock: Arc<dyn Clock>) -> Arc<dyn sim::Simulator> {
        match self {
            System::Dingtalk => Arc::new(crate::dingtalk::DingTalkSim::new(clock)),
            System::Salesforce => Arc::new(crate::salesforce::sim::SalesforceSim::new(
                crate::salesforce::sim::SimConfig::default(),
                clock,
            )),
            System::Zoho => Arc::new(crate::zoho::sim::ZohoSim::new()),
            System::Netsuite => Arc::new(crate::netsuite::sim::NetSuiteSim::new(Default::default(), clock)),
            System::Dynamics => Arc::new(crate::dynamics::sim::DynamicsSim::new(clock)),
            System::Sap => Arc::new(crate::sap::sim::SapSim::new()),
        }
    }
}

/// The ERP an ERP source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErpSystem {
    Netsuite,
    Dynamics,
    Sap,
}

impl ErpSystem {
    pub const ALL: [ErpSystem; 3] = [ErpSystem::Netsuite, ErpSystem::Dynamics, ErpSystem::Sap];

    pub fn system(self) -> System {
        match self {
            ErpSystem::Netsuite => System::Netsuite,
            ErpSystem::Dynamics => System::Dynamics,
            ErpSystem::Sap => System::Sap,
        }
    }

    /// The source `type` (and simulator) name.
    pub fn as_str(self) -> &'static str {
        self.system().as_str()
    }

    /// How approvers know it (on cards and notices): Dynamics approvals are Business Central's.
    pub fn display_name(self) -> &'static str {
        match self {
            ErpSystem::Netsuite => "NetSuite",
            ErpSystem::Dynamics => "Business Central",
            ErpSystem::Sap => "SAP",
        }
    }

    /// Whether dingbridge reads the ERP's list of people ([`crate::reader::ApprovalWriteBack::users`])
    /// that identity rules match against; without one, users are mapped by table only.
    pub fn keeps_user_list(self) -> bool {
        match self {
            ErpSystem::Netsuite | ErpSystem::Dynamics => true,
            ErpSystem::Sap => false,
        }
    }

    /// The ERP source types as a sentence: `netsuite, dynamics or sap`.
    pub fn names() -> String {
        let names: Vec<&str> = ErpSystem::ALL.iter().map(|s| s.as_str()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }

    /// What the objects of a source of this system may be.
    pub fn source_objects(self) -> &'static [&'static str] {
        match self {
            ErpSystem::Netsuite => crate::netsuite::config::SOURCE_OBJECTS,
            ErpSystem::Dynamics => crate::dynamics::config::SOURCE_OBJECTS,
            ErpSystem::Sap => crate::sap::config::SOURCE_OBJECTS,
        }
    }
}

/// What the config asks of each ERP by name: how the `type` of a source is read, and how its
/// sources are validated where they differ (each vendor's `config.rs`).
impl ErpSystem {
    /// The ERP a source `type` names, if it names one.
    pub fn from_name(name: &str) -> Option<ErpSystem> {
        ErpSystem::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// How a source of this ERP differs from the other ERP sources ([`crate::erp_source`]).
    pub fn source_rules(self) -> &'static dyn crate::erp_source::ErpSourceRules {
        match self {
            ErpSystem::Netsuite => &crate::netsuite::config::SourceRules,
            ErpSystem::Dynamics => &crate::dynamics::config::SourceRules,
            ErpSystem::Sap => &crate::sap::config::SourceRules,
        }
    }
}

/// The CRM a CRM source reads or a CRM destination writes to, and what the config asks of each
/// by name: how a source or destination `type` is read, and how its sources and destinations are
/// validated where they differ (each vendor's `config.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrmSystem {
    Salesforce,
    Zoho,
}

impl CrmSystem {
    pub const ALL: [CrmSystem; 2] = [CrmSystem::Salesforce, CrmSystem::Zoho];

    pub fn system(self) -> System {
        match self {
            CrmSystem::Salesforce => System::Salesforce,
            CrmSystem::Zoho => System::Zoho,
        }
    }

    /// The source and destination `type` (and simulator) name.
    pub fn as_str(self) -> &'static str {
        self.system().as_str()
    }

    /// The CRM a source or destination `type` names, if it names one.
    pub fn from_name(name: &str) -> Option<CrmSystem> {
        CrmSystem::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The CRM a system is, if it is one.
    pub fn from_system(system: System) -> Option<CrmSystem> {
        CrmSystem::ALL.into_iter().find(|s| s.system() == system)
    }

    /// The sink that writes a destination's records to its org, when the org was built.
    pub fn record_sink(self, built: &BuiltConnections, destination: &CrmDestination) -> Option<Arc<dyn Sink>> {
        Some(match self {
            CrmSystem::Salesforce => {
                let client = built.salesforce_orgs.get(&destination.org)?;
                let priority = if destination.interactive { Priority::Interactive } else { Priority::Background };
                Arc::new(crate::salesforce::sink::RecordSink::new(client.clone(), priority, destination.linger))
            }
            CrmSystem::Zoho => {
                let client = built.zoho_orgs.get(&destination.org)?;
                Arc::new(crate::zoho::sink::RecordSink::new(client.clone(), destination.linger))
            }
        })
    }

    /// How this CRM's sources and destinations differ from the other CRM's
    /// ([`crate::crm_source`], [`crate::crm_destination`]).
    pub fn rules(self) -> &'static dyn crate::crm_source::CrmRules {
        match self {
            CrmSystem::Salesforce => &crate::salesforce::config::Rules,
            CrmSystem::Zoho => &crate::zoho::config::Rules,
        }
    }
}

/// Every record system's connection table as written in the config file (`[netsuite.accounts.*]`,
/// `[salesforce.orgs.*]`, …): what sources and destinations may name. Each table is its
/// connector's; a system added to the registry adds its table here.
#[derive(Debug, Clone, Copy)]
pub struct RawTables<'a> {
    pub salesforce: &'a RawSalesforce,
    pub zoho: &'a RawZoho,
    pub netsuite: &'a RawNetsuite,
    pub dynamics: &'a RawDynamics,
    pub sap: &'a RawSap,
}

/// The connection tables once validated, by name; an entry with a mistake of its own is left
/// out (and reported).
#[derive(Debug, Clone, Default)]
pub struct Connections {
    pub salesforce_orgs: BTreeMap<String, SalesforceOrgConfig>,
    pub zoho_orgs: BTreeMap<String, ZohoOrgConfig>,
    pub netsuite_accounts: BTreeMap<String, NetsuiteAccountConfig>,
    pub dynamics_orgs: BTreeMap<String, DynamicsOrgConfig>,
    pub sap_systems: BTreeMap<String, SapSystemConfig>,
}

impl Connections {
    /// Every table checked by its connector (no I/O); every problem is pushed to `diag`.
    pub fn validate(diag: &mut Diagnostics, tables: RawTables<'_>) -> Connections {
        let mut connections = Connections::default();
        for (name, org) in &tables.salesforce.orgs {
            if let Some(o) = crate::salesforce::config::validate_org(diag, name, org) {
                connections.salesforce_orgs.insert(name.get_ref().clone(), o);
            }
        }
        for (name, org) in &tables.zoho.orgs {
            if let Some(o) = crate::zoho::config::validate_org(diag, name, org) {
                connections.zoho_orgs.insert(name.get_ref().clone(), o);
            }
        }
        for (name, account) in &tables.netsuite.accounts {
            if let Some(a) = crate::netsuite::config::validate_account(diag, name, account) {
                connections.netsuite_accounts.insert(name.get_ref().clone(), a);
            }
        }
        for (name, org) in &tables.dynamics.orgs {
            if let Some(o) = crate::dynamics::config::validate_org(diag, name, org) {
                connections.dynamics_orgs.insert(name.get_ref().clone(), o);
            }
        }
        for (name, system) in &tables.sap.systems {
            if let Some(s) = crate::sap::config::validate_system(diag, name, system) {
                connections.sap_systems.insert(name.get_ref().clone(), s);
            }
        }
        connections
    }

    /// How many connections hold a credential the vendor may rotate (a Salesforce refresh-token
    /// grant), which `[store] token_key` lets the store keep.
    pub fn rotating_credentials(&self) -> usize {
        self.salesforce_orgs.values().filter(|o| o.rotates_credentials()).count()
    }

    /// The secrets of every connection, read through `rs` (a missing one is reported there and its
    /// connection left out).
    pub fn read_secrets(&self, rs: &mut SecretReader<'_>) -> ConnectionSecrets {
        ConnectionSecrets {
            salesforce: read_each(&self.salesforce_orgs, |c| c.read_secrets(rs)),
            zoho: read_each(&self.zoho_orgs, |c| c.read_secrets(rs)),
            netsuite: read_each(&self.netsuite_accounts, |c| c.read_secrets(rs)),
            dynamics: read_each(&self.dynamics_orgs, |c| c.read_secrets(rs)),
            sap: read_each(&self.sap_systems, |c| c.read_secrets(rs)),
        }
    }

    /// One client per connection, all on one HTTP connection pool with `settings`, and the
    /// gateway's readers over them. A connection that cannot be built is reported to `errors`.
    pub fn build(
        &self,
        secrets: ConnectionSecrets,
        settings: HttpSettings,
        clock: &Arc<dyn Clock>,
        errors: &mut Vec<ConfigError>,
    ) -> BuiltConnections {
        let mut built = BuiltConnections::default();
        if secrets.is_empty() {
            return built;
        }
        let http = match HttpClient::new(settings) {
            Ok(http) => http,
            Err(e) => {
                let message = format!("the HTTP client for the record systems cannot be built: {e}");
                errors.push(ConfigError::new(Code::InvalidValue, message, None, ""));
                return built;
            }
        };
        let keeper = built.token_keeper.clone();
        built.salesforce_orgs = build_each(&self.salesforce_orgs, secrets.salesforce, errors, |c, s| {
            c.build(s, &http, clock, &keeper).map(Arc::new)
        });
        built.zoho_orgs =
            build_each(&self.zoho_orgs, secrets.zoho, errors, |c, s| c.build(s, &http, clock, &keeper).map(Arc::new));
        built.netsuite_accounts = build_each(&self.netsuite_accounts, secrets.netsuite, errors, |c, s| {
            c.build(s, &http, clock).map(Arc::new)
        });
        built.dynamics_orgs =
            build_each(&self.dynamics_orgs, secrets.dynamics, errors, |c, s| c.build(s, &http, clock));
        built.sap_systems =
            build_each(&self.sap_systems, secrets.sap, errors, |c, s| c.build(s, &http, clock).map(Arc::new));
        for (name, client) in &built.salesforce_orgs {
            let reader = self.salesforce_orgs[name].connector(client.clone());
            built.crm_readers.insert((System::Salesforce, name.clone()), reader);
        }
        for (name, client) in &built.zoho_orgs {
            let reader = self.zoho_orgs[name].connector(client.clone(), clock.clone());
            built.crm_readers.insert((System::Zoho, name.clone()), reader);
        }
        for (name, client) in &built.netsuite_accounts {
            let connector = self.netsuite_accounts[name].connector(client.clone());
            built.erp_connectors.insert((ErpSystem::Netsuite, name.clone()), connector);
        }
        for (name, clients) in &built.dynamics_orgs {
            let connector = self.dynamics_orgs[name].connector(clients.clone());
            built.erp_connectors.insert((ErpSystem::Dynamics, name.clone()), connector);
        }
        for (name, client) in &built.sap_systems {
            let connector = self.sap_systems[name].connector(client.clone());
            built.erp_connectors.insert((ErpSystem::Sap, name.clone()), connector);
        }
        built
    }

    /// Points every connection of a system at that system's URL in `endpoints` (its simulator,
    /// keyed by [`System::as_str`]).
    pub fn point_at_simulators(&mut self, endpoints: &BTreeMap<String, String>) {
        let url = |system: System| endpoints.get(system.as_str()).cloned();
        if let Some(url) = url(System::Salesforce) {
            self.salesforce_orgs.values_mut().for_each(|c| c.base_url_override = Some(url.clone()));
        }
        if let Some(url) = url(System::Zoho) {
            self.zoho_orgs.values_mut().for_each(|c| c.base_url_override = Some(url.clone()));
        }
        if let Some(url) = url(System::Netsuite) {
            self.netsuite_accounts.values_mut().for_each(|c| c.base_url_override = Some(url.clone()));
        }
        if let Some(url) = url(System::Dynamics) {
            self.dynamics_orgs.values_mut().for_each(|c| c.base_url_override = Some(url.clone()));
        }
        if let Some(url) = url(System::Sap) {
            self.sap_systems.values_mut().for_each(|c| c.base_url_override = Some(url.clone()));
        }
    }
}

/// The secrets of every connection, read; see [`Connections::read_secrets`].
#[derive(Default)]
pub struct ConnectionSecrets {
    salesforce: BTreeMap<String, SalesforceSecrets>,
    zoho: BTreeMap<String, ZohoCredentials>,
    netsuite: BTreeMap<String, NetsuiteSecrets>,
    dynamics: BTreeMap<String, Secret>,
    sap: BTreeMap<String, SapSecrets>,
}

impl ConnectionSecrets {
    fn is_empty(&self) -> bool {
        self.salesforce.is_empty()
            && self.zoho.is_empty()
            && self.netsuite.is_empty()
            && self.dynamics.is_empty()
            && self.sap.is_empty()
    }
}

/// The clients a config's connections were built into, by connection name, and the gateway's
/// readers over them; see [`Connections::build`].
#[derive(Default)]
pub struct BuiltConnections {
    /// One client per Salesforce org (one token cache, one quota gauge).
    pub salesforce_orgs: BTreeMap<String, Arc<SalesforceClient>>,
    /// One client per Zoho org (one token cache, one credit meter).
    pub zoho_orgs: BTreeMap<String, Arc<ZohoClient>>,
    /// One client per NetSuite account (one signer or token cache, one concurrency semaphore).
    pub netsuite_accounts: BTreeMap<String, Arc<NetSuiteClient>>,
    /// The Dataverse / Business Central clients of each Dynamics org.
    pub dynamics_orgs: BTreeMap<String, DynamicsClients>,
    /// One client per SAP system (one CSRF session, one unit table).
    pub sap_systems: BTreeMap<String, Arc<SapClient>>,
    /// Every ERP connection as the gateway reads it and writes approvals to, by system and name.
    pub erp_connectors: BTreeMap<(ErpSystem, String), ErpConnector>,
    /// Every CRM org as the gateway reads it (records, polls, pushes), by system and name.
    pub crm_readers: BTreeMap<(System, String), Arc<dyn CrmReader>>,
    /// Where credentials the vendors rotate are kept: empty (memory only) until the server fills
    /// it with a vault over the opened store and the `[store] token_key`.
    pub token_keeper: connect::vault::KeeperSlot,
}

impl std::fmt::Debug for BuiltConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltConnections")
            .field("salesforce_orgs", &self.salesforce_orgs.keys().collect::<Vec<_>>())
            .field("zoho_orgs", &self.zoho_orgs.keys().collect::<Vec<_>>())
            .field("netsuite_accounts", &self.netsuite_accounts.keys().collect::<Vec<_>>())
            .field("dynamics_orgs", &self.dynamics_orgs.keys().collect::<Vec<_>>())
            .field("sap_systems", &self.sap_systems.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The secrets of each entry of `configs` that has them all.
fn read_each<C, S>(configs: &BTreeMap<String, C>, mut read: impl FnMut(&C) -> Option<S>) -> BTreeMap<String, S> {
    configs.iter().filter_map(|(name, config)| read(config).map(|s| (name.clone(), s))).collect()
}

/// The client of each entry of `configs` whose secrets were read; failures go to `errors`.
fn build_each<C, S, T>(
    configs: &BTreeMap<String, C>,
    secrets: BTreeMap<String, S>,
    errors: &mut Vec<ConfigError>,
    mut build: impl FnMut(&C, S) -> Result<T, ConfigError>,
) -> BTreeMap<String, T> {
    let mut built = BTreeMap::new();
    for (name, secret) in secrets {
        let Some(config) = configs.get(&name) else { continue };
        match build(config, secret) {
            Ok(client) => {
                built.insert(name, client);
            }
            Err(e) => errors.push(e),
        }
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_system_has_a_simulator_under_its_own_name() {
        let clock: Arc<dyn Clock> = Arc::new(connect::SystemClock);
        for system in System::ALL {
            assert_eq!(system.simulator(clock.clone()).name(), system.as_str());
        }
    }

    #[test]
    fn the_erp_names_read_as_a_sentence() {
        assert_eq!(ErpSystem::names(), "netsuite, dynamics or sap");
        assert!(!ErpSystem::Sap.keeps_user_list() && ErpSystem::Netsuite.keeps_user_list());
    }

    #[test]
    fn every_erp_is_a_system_with_objects() {
        for erp in ErpSystem::ALL {
            assert_eq!(erp.as_str(), erp.system().as_str());
            assert!(!erp.source_objects().is_empty());
        }
    }
}
