//! Phase 3: I/O. Resolve secrets from the environment and files, construct sinks.

use super::*;
use crate::flow::FlowEngine;
pub use connect::config::{Secret, SecretReader, SecretResolver};
use connect::http::{CaBundle, HttpClient, HttpSettings, Outbound};
use connect::webhook::{WebhookSecret, WebhookVerifier};
use connect::{Clock, Sink};
use connectors::dingtalk::crypto::CallbackCrypto;
use connectors::dingtalk::openapi::OpenApi;
use connectors::dingtalk::stream::StreamSettings;
use connectors::netsuite::client::NetSuiteClient;
use connectors::netsuite::config::NetsuiteSecrets;
use connectors::reader::{CrmReader, ErpConnector};
use connectors::registry::System;
use connectors::salesforce::client::SalesforceClient;
use connectors::salesforce::config::SalesforceSecrets;
use connectors::salesforce::limits::Priority;
use connectors::sap::client::SapClient;
use connectors::sap::config::SapSecrets;
use connectors::zoho::auth::ZohoCredentials;
use connectors::zoho::client::ZohoClient;

/// How one DingTalk source receives its events.
pub enum DingtalkSourceRuntime {
    /// The gateway connects out (Stream mode) with these settings (boxed: they are large).
    Stream(Box<StreamSettings>),
    /// DingTalk posts encrypted callbacks; `crypto` decrypts them. `card_token` opens the
    /// source's HTTP card-callback URL (none: that URL is closed).
    Http { crypto: Arc<CallbackCrypto>, card_token: Option<Secret> },
}

impl fmt::Debug for DingtalkSourceRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stream(s) => write!(f, "Stream({})", s.new_api_base),
            Self::Http { card_token, .. } => {
                write!(f, "Http(card callbacks {})", if card_token.is_some() { "open" } else { "closed" })
            }
        }
    }
}

/// The resolved secrets of one ERP source.
#[derive(Debug, Clone)]
pub struct ErpSecrets {
    pub webhook_secret: Option<Secret>,
    pub idoc_password: Option<Secret>,
}

/// Everything phase 3 builds: sinks per destination, resolved source secrets, the admin token,
/// and the flow engine.
pub struct Runtime {
    pub sinks: BTreeMap<String, Arc<dyn Sink>>,
    /// Signature verifiers of the webhook sources, by source name.
    pub sources: BTreeMap<String, WebhookVerifier>,
    /// DingTalk sources, by source name.
    pub dingtalk_sources: BTreeMap<String, DingtalkSourceRuntime>,
    /// One OpenAPI client per DingTalk app (shared token cache and pacing), by app name.
    pub dingtalk_apps: BTreeMap<String, OpenApi>,
    /// One client per Salesforce org (one token cache, one quota gauge), by org name.
    pub salesforce_orgs: BTreeMap<String, Arc<SalesforceClient>>,
    /// One client per Zoho org (one token cache, one credit meter), by org name.
    pub zoho_orgs: BTreeMap<String, Arc<ZohoClient>>,
    /// Every CRM org as the gateway reads it (records, polls, pushes), by system and org name.
    pub crm_readers: BTreeMap<(System, String), Arc<dyn CrmReader>>,
    /// The secret that opens each CRM source's push door (a Zoho channel token, the secret
    /// segment of a Salesforce Outbound Message URL), by source name.
    pub crm_push_secrets: BTreeMap<String, Secret>,
    /// One client per NetSuite account (one signer or token cache, one concurrency semaphore), by account name.
    pub netsuite_accounts: BTreeMap<String, Arc<NetSuiteClient>>,
    /// The Dataverse / Business Central clients of each Dynamics org, by org name.
    pub dynamics_orgs: BTreeMap<String, DynamicsClients>,
    /// One client per SAP system (one CSRF session, one unit table), by system name.
    pub sap_systems: BTreeMap<String, Arc<SapClient>>,
    /// Every ERP connection as the gateway reads it (its reader and approval write-back over the
    /// client above), by system and connection name.
    pub erp_connectors: BTreeMap<(ErpSystem, String), ErpConnector>,
    /// ERP sources' resolved secrets, by source name.
    pub erp_secrets: BTreeMap<String, ErpSecrets>,
    pub admin_token: Option<Secret>,
    /// The key the store hashes the audit chain with; `None` without `[audit] key`.
    pub audit_key: Option<store::AuditKey>,
    pub flows: FlowEngine,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .field("sources", &self.sources)
            .field("dingtalk_sources", &self.dingtalk_sources)
            .field("dingtalk_apps", &self.dingtalk_apps.keys().collect::<Vec<_>>())
            .field("salesforce_orgs", &self.salesforce_orgs.keys().collect::<Vec<_>>())
            .field("zoho_orgs", &self.zoho_orgs.keys().collect::<Vec<_>>())
            .field("crm_push_secrets", &self.crm_push_secrets)
            .field("netsuite_accounts", &self.netsuite_accounts.keys().collect::<Vec<_>>())
            .field("dynamics_orgs", &self.dynamics_orgs.keys().collect::<Vec<_>>())
            .field("sap_systems", &self.sap_systems.keys().collect::<Vec<_>>())
            .field("erp_secrets", &self.erp_secrets)
            .field("admin_token", &self.admin_token)
            .field("audit_key", &self.audit_key)
            .finish_non_exhaustive()
    }
}

/// The real resolver: `std::env` and the filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessSecrets;

impl SecretResolver for ProcessSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// The secrets of one ERP connection, resolved.
struct ErpCredentials {
    netsuite: BTreeMap<String, NetsuiteSecrets>,
    dynamics: BTreeMap<String, Secret>,
    sap: BTreeMap<String, SapSecrets>,
}

/// The clients built from [`ErpCredentials`], by connection name, and the connectors over them.
#[derive(Default)]
struct ErpClients {
    netsuite: BTreeMap<String, Arc<NetSuiteClient>>,
    dynamics: BTreeMap<String, DynamicsClients>,
    sap: BTreeMap<String, Arc<SapClient>>,
    connectors: BTreeMap<(ErpSystem, String), ErpConnector>,
}

/// The audit key named by `[audit] key`, checked for length.
fn read_audit_key(rs: &mut SecretReader<'_>, r: Option<&SecretRef>) -> Option<store::AuditKey> {
    let r = r?;
    let secret = rs.get(r, "audit.key")?;
    match store::AuditKey::new(secret.expose().as_bytes()) {
        Ok(key) => Some(key),
        Err(e) => {
            rs.errors.push(
                ConfigError::new(Code::AuditKey, format!("audit.key: {e}"), Some(r.span.clone()), "key too short")
                    .with_help("generate one with `openssl rand -hex 32`"),
            );
            None
        }
    }
}

impl Config {
    /// Phase 3 with the process environment and filesystem.
    pub fn build(&self, clock: Arc<dyn Clock>) -> Result<Runtime, ConfigErrors> {
        self.build_with(&ProcessSecrets, clock)
    }

    /// Phase 3 for the audit key alone, with the process environment and filesystem: what
    /// `audit verify -c` and `dlq` need, without every other secret. `None` without `[audit] key`.
    pub fn audit_key(&self) -> Result<Option<store::AuditKey>, ConfigErrors> {
        self.audit_key_with(&ProcessSecrets)
    }

    /// [`Config::audit_key`] with an injected secret resolver.
    pub fn audit_key_with(&self, resolver: &dyn SecretResolver) -> Result<Option<store::AuditKey>, ConfigErrors> {
        let mut rs = SecretReader::new(resolver);
        let key = read_audit_key(&mut rs, self.audit.key.as_ref());
        if rs.errors.is_empty() {
            Ok(key)
        } else {
            Err(ConfigErrors::new(self.path.clone(), self.text.clone(), rs.errors))
        }
    }

    /// Phase 3 with an injected secret resolver. Collects every missing secret.
    pub fn build_with(&self, resolver: &dyn SecretResolver, clock: Arc<dyn Clock>) -> Result<Runtime, ConfigErrors> {
        let mut rs = SecretReader::new(resolver);
        let outbound = self.outbound(resolver, &mut rs.errors);
        let admin_token = self.server.admin_token.as_ref().and_then(|r| rs.get(r, "server.admin_token"));
        let audit_key = read_audit_key(&mut rs, self.audit.key.as_ref());
        let mut app_secrets = BTreeMap::new();
        for (name, app) in &self.dingtalk_apps {
            if let Some(secret) = app.read_secrets(&mut rs) {
                app_secrets.insert(name.clone(), secret);
            }
        }
        let mut dingtalk_callback_keys = BTreeMap::new();
        for (name, src) in &self.sources {
            if let SourceKind::Dingtalk { inbound: DingtalkInbound::Http { token, aes_key, card_token }, .. } =
                &src.kind
            {
                let token = rs.get(token, &format!("the callback token of source `{name}`"));
                let aes_key = rs.get(aes_key, &format!("the callback AES key of source `{name}`"));
                let mut card_secret = None;
                if let Some(r) = card_token {
                    card_secret = rs.get(r, &format!("the card callback token of source `{name}`"));
                    if let Some(weak) = card_secret.as_ref().and_then(|s| weak_capability(s.expose())) {
                        rs.errors.push(ConfigError::new(
                            Code::BadCredential,
                            format!("the card callback token of source `{name}` is too weak to stand in a URL: {weak}"),
                            Some(r.span.clone()),
                            "use at least 22 random URL-safe characters, e.g. `openssl rand -base64 24 | tr '+/' '-_'`",
                        ));
                    }
                }
                if let (Some(token), Some(aes_key)) = (token, aes_key) {
                    dingtalk_callback_keys.insert(name.clone(), (token, aes_key, card_secret));
                }
            }
        }
        let mut sources = BTreeMap::new();
        for (name, src) in &self.sources {
            if src.kind != SourceKind::Webhook {
                continue;
            }
            let secrets: Vec<Secret> =
                src.secrets.iter().filter_map(|r| rs.get(r, &format!("the secret of source `{name}`"))).collect();
            if secrets.len() != src.secrets.len() {
                continue; // missing secrets are already reported
            }
            // The verifier is built here, so a malformed secret is a config error with a line.
            let verifier = secrets
                .iter()
                .map(|s| WebhookSecret::parse(s.expose()))
                .collect::<Result<Vec<_>, _>>()
                .and_then(WebhookVerifier::new)
                .map(|v| v.with_tolerance(src.tolerance));
            match verifier {
                Ok(v) => {
                    sources.insert(name.clone(), v);
                }
                Err(e) => rs.errors.push(ConfigError::new(
                    Code::BadCredential,
                    format!("the secret of source `{name}` is not a usable webhook secret: {e}"),
                    src.secrets.first().map(|r| r.span.clone()),
                    "expected whsec_<base64> (or a raw secret)",
                )),
            }
        }
        let mut salesforce_grants = BTreeMap::new();
        for (name, org) in &self.connections.salesforce_orgs {
            if let Some(secrets) = org.read_secrets(&mut rs) {
                salesforce_grants.insert(name.clone(), secrets);
            }
        }
        let mut zoho_credentials = BTreeMap::new();
        for (name, org) in &self.connections.zoho_orgs {
            if let Some(credentials) = org.read_secrets(&mut rs) {
                zoho_credentials.insert(name.clone(), credentials);
            }
        }
        let mut zoho_channel_tokens = BTreeMap::new();
        for (name, src) in &self.sources {
            let SourceKind::Zoho(CrmSource { intake: CrmIntake::Notifications { channel_token, .. }, .. }) = &src.kind
            else {
                continue;
            };
            if let Some(token) = rs.get(channel_token, &format!("the channel token of source `{name}`")) {
                zoho_channel_tokens.insert(name.clone(), (token, channel_token.span.clone()));
            }
        }
        let mut salesforce_outbound_tokens = BTreeMap::new();
        for (name, src) in &self.sources {
            let SourceKind::Salesforce(CrmSource { intake: CrmIntake::OutboundMessage { token }, .. }) = &src.kind
            else {
                continue;
            };
            if let Some(secret) = rs.get(token, &format!("the outbound token of source `{name}`")) {
                salesforce_outbound_tokens.insert(name.clone(), (secret, token.span.clone()));
            }
        }
        let erp_credentials = self.resolve_erp_connections(&mut rs);
        let mut erp_secrets = BTreeMap::new();
        for (name, src) in &self.sources {
            let SourceKind::Erp(erp) = &src.kind else { continue };
            let webhook_secret =
                erp.webhook_secret.as_ref().map(|r| rs.get(r, &format!("the webhook secret of source `{name}`")));
            let idoc_password =
                erp.idoc_password.as_ref().map(|r| rs.get(r, &format!("the IDoc password of source `{name}`")));
            if matches!(webhook_secret, Some(None)) || matches!(idoc_password, Some(None)) {
                continue; // reported
            }
            let secrets =
                ErpSecrets { webhook_secret: webhook_secret.flatten(), idoc_password: idoc_password.flatten() };
            erp_secrets.insert(name.clone(), secrets);
        }
        let mut robots = Vec::new();
        for (name, dst) in &self.destinations {
            match &dst.kind {
                // Built from their app or org below.
                DestinationKind::DingtalkApp(_) | DestinationKind::Salesforce(_) | DestinationKind::Zoho(_) => {}
                DestinationKind::DingtalkRobot(robot) => {
                    let token = rs.get(&robot.access_token, &format!("the access token of destination `{name}`"));
                    let secret = match &robot.secret {
                        Some(r) => match rs.get(r, &format!("the secret of destination `{name}`")) {
                            Some(s) => Some(s),
                            None => continue,
                        },
                        None => None,
                    };
                    if let Some(token) = token {
                        robots.push((name.clone(), robot.clone(), token, secret));
                    }
                }
            }
        }
        if !rs.errors.is_empty() {
            return Err(ConfigErrors::new(self.path.clone(), self.text.clone(), rs.errors));
        }
        let mut sinks: BTreeMap<String, Arc<dyn Sink>> = BTreeMap::new();
        let mut errors = Vec::new();
        let mut dingtalk_apps = BTreeMap::new();
        for (name, app) in &self.dingtalk_apps {
            let Some(secret) = app_secrets.get(name) else { continue };
            match app.build(secret, self.delivery.request_timeout, &outbound, &clock) {
                Ok(api) => {
                    dingtalk_apps.insert(name.clone(), api);
                }
                Err(e) => errors.push(e),
            }
        }
        let mut dingtalk_sources = BTreeMap::new();
        for (name, src) in &self.sources {
            let SourceKind::Dingtalk { app, inbound } = &src.kind else { continue };
            let (Some(app_config), Some(secret)) = (self.dingtalk_apps.get(app), app_secrets.get(app)) else {
                continue;
            };
            match inbound {
                DingtalkInbound::Stream => {
                    let base = app_config.openapi_settings(self.delivery.request_timeout, &outbound).new_api_base;
                    let mut settings =
                        StreamSettings::new(base, app_config.app_key.clone(), secret.secret_string().clone());
                    settings.outbound = outbound.clone();
                    dingtalk_sources.insert(name.clone(), DingtalkSourceRuntime::Stream(Box::new(settings)));
                }
                DingtalkInbound::Http { aes_key, .. } => {
                    let Some((token, key, card_token)) = dingtalk_callback_keys.get(name) else { continue };
                    // Internal apps' event subscriptions use the AppKey as the owner key (§6.2).
                    match CallbackCrypto::new(token.expose(), key.expose(), &app_config.app_key) {
                        Ok(crypto) => {
                            let runtime = DingtalkSourceRuntime::Http {
                                crypto: Arc::new(crypto),
                                card_token: card_token.clone(),
                            };
                            dingtalk_sources.insert(name.clone(), runtime);
                        }
                        Err(e) => errors.push(ConfigError::new(
                            Code::BadCredential,
                            format!("the callback keys of source `{name}` are not usable: {e}"),
                            Some(aes_key.span.clone()),
                            "expected the 43-character EncodingAESKey from the app's event subscription page",
                        )),
                    }
                }
            }
        }
        for (name, dst) in &self.destinations {
            let DestinationKind::DingtalkApp(app) = &dst.kind else { continue };
            if let Some(api) = dingtalk_apps.get(&app.app) {
                let sink = connectors::dingtalk::app_sink::AppSink::new(name, api.clone(), app.robot_code.clone());
                sinks.insert(name.clone(), Arc::new(sink));
            }
        }
        let (salesforce_orgs, zoho_orgs) =
            self.crm_clients(salesforce_grants, zoho_credentials, &outbound, &clock, &mut errors);
        let erp = self.erp_clients(erp_credentials, &outbound, &clock, &mut errors);
        let max_chars = connectors::zoho::source::MAX_TOKEN_CHARS;
        let mut crm_push_secrets = BTreeMap::new();
        for (name, (token, span)) in zoho_channel_tokens {
            let chars = token.expose().chars().count();
            if chars > max_chars {
                errors.push(ConfigError::new(
                    Code::BadCredential,
                    format!(
                        "the channel token of source `{name}` has {chars} characters; Zoho accepts at most {max_chars}"
                    ),
                    Some(span),
                    "too long for a Zoho watch channel",
                ));
            } else {
                crm_push_secrets.insert(name, token);
            }
        }
        for (name, (token, span)) in salesforce_outbound_tokens {
            match weak_capability(token.expose()) {
                Some(weak) => errors.push(ConfigError::new(
                    Code::BadCredential,
                    format!("the outbound token of source `{name}` is too weak to stand in a URL: {weak}"),
                    Some(span),
                    "use at least 22 random URL-safe characters, e.g. `openssl rand -base64 24 | tr '+/' '-_'`",
                )),
                None => {
                    crm_push_secrets.insert(name, token);
                }
            }
        }
        for (name, dst) in &self.destinations {
            let sink: Arc<dyn Sink> = match &dst.kind {
                DestinationKind::Salesforce(d) => {
                    let Some(client) = salesforce_orgs.get(&d.org) else { continue };
                    let priority = if d.interactive { Priority::Interactive } else { Priority::Background };
                    Arc::new(connectors::salesforce::sink::RecordSink::new(client.clone(), priority, d.linger))
                }
                DestinationKind::Zoho(d) => {
                    let Some(client) = zoho_orgs.get(&d.org) else { continue };
                    Arc::new(connectors::zoho::sink::RecordSink::new(client.clone(), d.linger))
                }
                DestinationKind::DingtalkRobot(_) | DestinationKind::DingtalkApp(_) => continue,
            };
            sinks.insert(name.clone(), sink);
        }
        for (name, robot, token, secret) in robots {
            let mut settings = connectors::dingtalk::RobotSettings::new(token.into_secret_string());
            settings.base_url = robot.base_url.clone();
            settings.secret = secret.map(|s| s.into_secret_string());
            settings.per_minute = robot.per_minute;
            settings.timeout = self.delivery.request_timeout;
            settings.outbound = outbound.clone();
            match connectors::dingtalk::RobotSink::new(settings, clock.clone()) {
                Ok(sink) => {
                    sinks.insert(name, Arc::new(sink));
                }
                Err(e) => errors.push(ConfigError::new(
                    Code::InvalidValue,
                    format!("destination `{name}` cannot be built: {e}"),
                    Some(robot.access_token.span.clone()),
                    "while building this destination",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors::new(self.path.clone(), self.text.clone(), errors));
        }
        Ok(Runtime {
            sinks,
            sources,
            dingtalk_sources,
            dingtalk_apps,
            crm_readers: crm_readers(self, &salesforce_orgs, &zoho_orgs, &clock),
            salesforce_orgs,
            zoho_orgs,
            crm_push_secrets,
            netsuite_accounts: erp.netsuite,
            dynamics_orgs: erp.dynamics,
            sap_systems: erp.sap,
            erp_connectors: erp.connectors,
            erp_secrets,
            admin_token,
            audit_key,
            flows: FlowEngine::new(self),
        })
    }

    /// The secrets of every NetSuite account, Dynamics org and SAP system; missing ones are
    /// reported to `rs`.
    fn resolve_erp_connections(&self, rs: &mut SecretReader<'_>) -> ErpCredentials {
        let mut netsuite = BTreeMap::new();
        for (name, account) in &self.connections.netsuite_accounts {
            if let Some(secrets) = account.read_secrets(rs) {
                netsuite.insert(name.clone(), secrets);
            }
        }
        let mut dynamics = BTreeMap::new();
        for (name, org) in &self.connections.dynamics_orgs {
            if let Some(secret) = org.read_secrets(rs) {
                dynamics.insert(name.clone(), secret);
            }
        }
        let mut sap = BTreeMap::new();
        for (name, system) in &self.connections.sap_systems {
            if let Some(secrets) = system.read_secrets(rs) {
                sap.insert(name.clone(), secrets);
            }
        }
        ErpCredentials { netsuite, dynamics, sap }
    }

    /// What every outbound client gets from `[server]`: the private hosts it may reach and the
    /// extra CA certificates it trusts. An unreadable or unusable CA bundle is reported to
    /// `errors` at the key.
    fn outbound(&self, resolver: &dyn SecretResolver, errors: &mut Vec<ConfigError>) -> Outbound {
        let mut outbound = Outbound { private_hosts: self.server.private_hosts.clone(), ..Outbound::default() };
        let Some(file) = &self.server.ca_bundle else { return outbound };
        let shown = file.path.display();
        match resolver.file(&file.path) {
            Ok(pem) => match CaBundle::from_pem(pem.as_bytes()) {
                Ok(bundle) => outbound.ca_bundle = Some(bundle),
                Err(e) => errors.push(ConfigError::new(
                    Code::BadCredential,
                    format!("server.ca_bundle `{shown}`: {e}"),
                    Some(file.span.clone()),
                    "expected PEM CA certificates (-----BEGIN CERTIFICATE-----)",
                )),
            },
            Err(e) => errors.push(ConfigError::new(
                Code::BadCredential,
                format!("server.ca_bundle: cannot read `{shown}`: {e}"),
                Some(file.span.clone()),
                "CA bundle unreadable",
            )),
        }
        outbound
    }

    /// One client per NetSuite account, Dynamics service and SAP system, sharing one HTTP
    /// connection pool.
    fn erp_clients(
        &self,
        credentials: ErpCredentials,
        outbound: &Outbound,
        clock: &Arc<dyn Clock>,
        errors: &mut Vec<ConfigError>,
    ) -> ErpClients {
        let mut built = ErpClients::default();
        if credentials.netsuite.is_empty() && credentials.dynamics.is_empty() && credentials.sap.is_empty() {
            return built;
        }
        let timeout = self.delivery.request_timeout;
        let settings = HttpSettings {
            timeout,
            connect_timeout: timeout.min(HttpSettings::default().connect_timeout),
            outbound: outbound.clone(),
            ..HttpSettings::default()
        };
        let http = match HttpClient::new(settings) {
            Ok(http) => http,
            Err(e) => {
                errors.push(ConfigError::new(
                    Code::InvalidValue,
                    format!("the HTTP client for the ERPs cannot be built: {e}"),
                    None,
                    "",
                ));
                return built;
            }
        };
        for (name, secrets) in credentials.netsuite {
            let Some(account) = self.connections.netsuite_accounts.get(&name) else { continue };
            match account.build(secrets, &http, clock) {
                Ok(client) => {
                    let client = Arc::new(client);
                    built.connectors.insert((ErpSystem::Netsuite, name.clone()), account.connector(client.clone()));
                    built.netsuite.insert(name, client);
                }
                Err(e) => errors.push(e),
            }
        }
        for (name, secret) in credentials.dynamics {
            let Some(org) = self.connections.dynamics_orgs.get(&name) else { continue };
            match org.build(secret, &http, clock) {
                Ok(clients) => {
                    built.connectors.insert((ErpSystem::Dynamics, name.clone()), org.connector(clients.clone()));
                    built.dynamics.insert(name, clients);
                }
                Err(e) => errors.push(e),
            }
        }
        for (name, secrets) in credentials.sap {
            let Some(system) = self.connections.sap_systems.get(&name) else { continue };
            match system.build(secrets, &http, clock) {
                Ok(client) => {
                    let client = Arc::new(client);
                    built.connectors.insert((ErpSystem::Sap, name.clone()), system.connector(client.clone()));
                    built.sap.insert(name, client);
                }
                Err(e) => errors.push(e),
            }
        }
        built
    }

    /// One client per Salesforce and Zoho org, sharing one HTTP connection pool.
    fn crm_clients(
        &self,
        salesforce_grants: BTreeMap<String, SalesforceSecrets>,
        zoho_credentials: BTreeMap<String, ZohoCredentials>,
        outbound: &Outbound,
        clock: &Arc<dyn Clock>,
        errors: &mut Vec<ConfigError>,
    ) -> (BTreeMap<String, Arc<SalesforceClient>>, BTreeMap<String, Arc<ZohoClient>>) {
        let mut salesforce = BTreeMap::new();
        let mut zoho = BTreeMap::new();
        if salesforce_grants.is_empty() && zoho_credentials.is_empty() {
            return (salesforce, zoho);
        }
        let timeout = self.delivery.request_timeout;
        let settings = HttpSettings {
            timeout,
            connect_timeout: timeout.min(HttpSettings::default().connect_timeout),
            outbound: outbound.clone(),
            ..HttpSettings::default()
        };
        let http = match HttpClient::new(settings) {
            Ok(http) => http,
            Err(e) => {
                errors.push(ConfigError::new(
                    Code::InvalidValue,
                    format!("the HTTP client for Salesforce and Zoho cannot be built: {e}"),
                    None,
                    "",
                ));
                return (salesforce, zoho);
            }
        };
        for (name, secrets) in salesforce_grants {
            let Some(org) = self.connections.salesforce_orgs.get(&name) else { continue };
            match org.build(secrets, &http, clock) {
                Ok(client) => {
                    salesforce.insert(name, Arc::new(client));
                }
                Err(e) => errors.push(e),
            }
        }
        for (name, credentials) in zoho_credentials {
            let Some(org) = self.connections.zoho_orgs.get(&name) else { continue };
            match org.build(credentials, &http, clock) {
                Ok(client) => {
                    zoho.insert(name, Arc::new(client));
                }
                Err(e) => errors.push(e),
            }
        }
        (salesforce, zoho)
    }
}

/// The readers over the built CRM clients.
fn crm_readers(
    config: &Config,
    salesforce: &BTreeMap<String, Arc<SalesforceClient>>,
    zoho: &BTreeMap<String, Arc<ZohoClient>>,
    clock: &Arc<dyn Clock>,
) -> BTreeMap<(System, String), Arc<dyn CrmReader>> {
    let mut readers = BTreeMap::new();
    for (name, client) in salesforce {
        if let Some(org) = config.connections.salesforce_orgs.get(name) {
            readers.insert((System::Salesforce, name.clone()), org.connector(client.clone()));
        }
    }
    for (name, client) in zoho {
        if let Some(org) = config.connections.zoho_orgs.get(name) {
            readers.insert((System::Zoho, name.clone()), org.connector(client.clone(), clock.clone()));
        }
    }
    readers
}

/// Why `token` is too weak to be the only thing guarding a URL, if it is: fewer than 22
/// characters (128 bits as URL-safe base64), characters that need escaping in a query, or a
/// value with almost no variety.
fn weak_capability(token: &str) -> Option<String> {
    const MIN_LEN: usize = 22;
    if token.len() < MIN_LEN {
        return Some(format!("{} characters, at least {MIN_LEN} are needed", token.len()));
    }
    if let Some(c) = token.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.~".contains(*c))) {
        return Some(format!("`{}` is not URL-safe", c.escape_default()));
    }
    let distinct: std::collections::BTreeSet<char> = token.chars().collect();
    (distinct.len() < 8).then(|| format!("only {} different characters", distinct.len()))
}
