//! Phase 3: I/O. Resolve secrets from the environment and files, construct sinks.

use super::*;
use crate::flow::FlowEngine;
use connect::config::weak_capability;
pub use connect::config::{Secret, SecretReader, SecretResolver};
use connect::http::{CaBundle, HttpSettings, Outbound};
use connect::webhook::{WebhookSecret, WebhookVerifier};
use connect::{Clock, Sink};
use connectors::dingtalk::crypto::CallbackCrypto;
use connectors::dingtalk::openapi::OpenApi;
use connectors::dingtalk::stream::StreamSettings;
use connectors::registry::BuiltConnections;

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
    /// The record systems' clients and the gateway's connectors and readers over them.
    pub connections: BuiltConnections,
    /// The secret that opens each CRM source's push door (a Zoho channel token, the secret
    /// segment of a Salesforce Outbound Message URL), by source name.
    pub crm_push_secrets: BTreeMap<String, Secret>,
    /// ERP sources' resolved secrets, by source name.
    pub erp_secrets: BTreeMap<String, ErpSecrets>,
    pub admin_token: Option<Secret>,
    /// The key the store hashes the audit chain with; `None` without `[audit] key`.
    pub audit_key: Option<store::AuditKey>,
    /// The key rotated vendor credentials are sealed with in the store; `None` without
    /// `[store] token_key` (they stay in memory).
    pub token_key: Option<connect::vault::TokenKey>,
    pub flows: FlowEngine,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .field("sources", &self.sources)
            .field("dingtalk_sources", &self.dingtalk_sources)
            .field("dingtalk_apps", &self.dingtalk_apps.keys().collect::<Vec<_>>())
            .field("connections", &self.connections)
            .field("crm_push_secrets", &self.crm_push_secrets)
            .field("erp_secrets", &self.erp_secrets)
            .field("admin_token", &self.admin_token)
            .field("audit_key", &self.audit_key)
            .field("token_key", &self.token_key)
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

/// The token key named by `[store] token_key`, checked for length.
fn read_token_key(rs: &mut SecretReader<'_>, r: Option<&SecretRef>) -> Option<connect::vault::TokenKey> {
    let r = r?;
    let secret = rs.get(r, "store.token_key")?;
    let key = connect::vault::TokenKey::derive(secret.expose().trim().as_bytes());
    if key.is_none() {
        rs.errors.push(
            ConfigError::new(
                Code::BadCredential,
                format!("store.token_key: the key must be at least {} bytes", connect::vault::MIN_TOKEN_KEY_BYTES),
                Some(r.span.clone()),
                "key too short",
            )
            .with_help("generate one with `openssl rand -hex 32`"),
        );
    }
    key
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
        let token_key = read_token_key(&mut rs, self.store.token_key.as_ref());
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
        let connection_secrets = self.connections.read_secrets(&mut rs);
        // The secret that opens each CRM source's push door, checked by its CRM once read.
        let mut crm_intake_secrets = Vec::new();
        for (name, src) in &self.sources {
            let SourceKind::Crm(system, crm) = &src.kind else { continue };
            let Some((secret, what)) = crm.intake.secret() else { continue };
            if let Some(value) = rs.get(secret, &format!("the {what} of source `{name}`")) {
                crm_intake_secrets.push((name.clone(), *system, value, secret.span.clone()));
            }
        }
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
                DestinationKind::DingtalkApp(_) | DestinationKind::Crm(..) => {}
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
        let timeout = self.delivery.request_timeout;
        let settings = HttpSettings {
            timeout,
            connect_timeout: timeout.min(HttpSettings::default().connect_timeout),
            outbound: outbound.clone(),
            ..HttpSettings::default()
        };
        let connections = self.connections.build(connection_secrets, settings, &clock, &mut errors);
        let mut crm_push_secrets = BTreeMap::new();
        for (name, system, secret, at) in crm_intake_secrets {
            match system.rules().check_intake_secret(&name, &secret, at) {
                Some(refused) => errors.push(refused),
                None => {
                    crm_push_secrets.insert(name, secret);
                }
            }
        }
        for (name, dst) in &self.destinations {
            let Some((system, crm)) = dst.kind.crm() else { continue };
            if let Some(sink) = system.record_sink(&connections, crm) {
                sinks.insert(name.clone(), sink);
            }
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
            connections,
            crm_push_secrets,
            erp_secrets,
            admin_token,
            audit_key,
            token_key,
            flows: FlowEngine::new(self),
        })
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
}
