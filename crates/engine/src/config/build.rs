//! Phase 3: I/O. Resolve secrets from the environment and files, construct sinks.

use super::*;
use crate::flow::FlowEngine;
use connect::webhook::{WebhookSecret, WebhookVerifier};
use connect::{Clock, Sink};
use secrecy::{ExposeSecret, SecretString};

/// A resolved secret. `Debug` and `Display` print `[redacted]`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn secret_string(&self) -> &SecretString {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Everything phase 3 builds: sinks per destination, resolved source secrets, the admin token,
/// and the flow engine.
pub struct Runtime {
    pub sinks: BTreeMap<String, Arc<dyn Sink>>,
    /// Signature verifiers of the webhook sources, by source name.
    pub sources: BTreeMap<String, WebhookVerifier>,
    pub admin_token: Option<Secret>,
    pub flows: FlowEngine,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .field("sources", &self.sources)
            .field("admin_token", &self.admin_token)
            .finish_non_exhaustive()
    }
}

/// Looks a secret up. Production reads the process environment and files; tests inject.
pub trait SecretResolver {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &Path) -> std::io::Result<String>;
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

struct Resolve<'a> {
    resolver: &'a dyn SecretResolver,
    errors: Vec<ConfigError>,
}

impl Resolve<'_> {
    fn get(&mut self, r: &SecretRef, what: &str) -> Option<Secret> {
        let value = match &r.location {
            SecretLocation::Env(name) => match self.resolver.env(name) {
                Some(v) => v,
                None => {
                    self.errors.push(
                        ConfigError::new(
                            Code::MissingSecret,
                            format!("{what}: environment variable `{name}` is not set"),
                            Some(r.span.clone()),
                            format!("reads `{name}`"),
                        )
                        .with_help(format!("export {name}=... before starting dingbridge")),
                    );
                    return None;
                }
            },
            SecretLocation::File(path) => match self.resolver.file(path) {
                Ok(v) => v.trim_end_matches(['\r', '\n']).to_string(),
                Err(e) => {
                    self.errors.push(ConfigError::new(
                        Code::MissingSecret,
                        format!("{what}: cannot read secret file `{}`: {e}", path.display()),
                        Some(r.span.clone()),
                        "secret file unreadable",
                    ));
                    return None;
                }
            },
        };
        if value.is_empty() {
            self.errors.push(ConfigError::new(
                Code::MissingSecret,
                format!("{what}: the {} is empty", r.location),
                Some(r.span.clone()),
                "empty secret",
            ));
            return None;
        }
        Some(Secret::new(value))
    }
}

impl Config {
    /// Phase 3 with the process environment and filesystem.
    pub fn build(&self, clock: Arc<dyn Clock>) -> Result<Runtime, ConfigErrors> {
        self.build_with(&ProcessSecrets, clock)
    }

    /// Phase 3 with an injected secret resolver. Collects every missing secret.
    pub fn build_with(&self, resolver: &dyn SecretResolver, clock: Arc<dyn Clock>) -> Result<Runtime, ConfigErrors> {
        let mut rs = Resolve { resolver, errors: Vec::new() };
        let admin_token = self.server.admin_token.as_ref().and_then(|r| rs.get(r, "server.admin_token"));
        let mut sources = BTreeMap::new();
        for (name, src) in &self.sources {
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
                    Code::InvalidValue,
                    format!("the secret of source `{name}` is not a usable webhook secret: {e}"),
                    src.secrets.first().map(|r| r.span.clone()),
                    "expected whsec_<base64> (or a raw secret)",
                )),
            }
        }
        let mut robots = Vec::new();
        for (name, dst) in &self.destinations {
            match &dst.kind {
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
        for (name, robot, token, secret) in robots {
            let mut settings = connectors::dingtalk::RobotSettings::new(token.0);
            settings.base_url = robot.base_url.clone();
            settings.secret = secret.map(|s| s.0);
            settings.per_minute = robot.per_minute;
            settings.timeout = self.delivery.request_timeout;
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
        Ok(Runtime { sinks, sources, admin_token, flows: FlowEngine::new(self) })
    }
}
