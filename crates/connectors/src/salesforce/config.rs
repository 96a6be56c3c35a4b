//! `[salesforce.orgs.NAME]`: a Salesforce org as the config writes it (login host, OAuth grant,
//! API version, quota reserve), its pure validation (`check`), and the client `run` builds from
//! it with the grant's secrets read; and the [`Rules`] its sources and destinations are validated
//! by where they differ from Zoho's.

use super::auth::{Grant, InstanceUrl, SalesforceTokenFetcher, DEFAULT_SESSION_LIFETIME, REFRESH_TOKEN_NAME};
use super::client::SalesforceClient;
use super::errors::DAILY_LIMIT_BACKOFF;
use super::ids::normalize_id;
use super::limits::{ApiUsage, QuotaGuard};
use super::DEFAULT_API_VERSION;
use crate::crm_destination::PriorityCheck;
use crate::crm_source::{CrmIntake, CrmOrgs, CrmRules, CrmSource, IntakeCheck, IntakeKey, OrgTable};
use crate::registry::RawTables;
use connect::config::{
    at, is_base_url, require_https, span, Code, ConfigError, Diagnostics, RawSecretRef, Secret, SecretReader,
    SecretRef, S,
};
use connect::http::HttpClient;
use connect::token::TokenCache;
use connect::vault::{KeeperSlot, RotatingSecret};
use connect::Clock;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Daily API requests kept for interactive calls when the org does not say.
const DEFAULT_RESERVE: u64 = 1_000;
/// Salesforce token answers carry no expiry, so the cache assumes the session lifetime; fetching
/// a few minutes early keeps calls from racing the end of a session.
const TOKEN_MARGIN: Duration = Duration::from_secs(5 * 60);

/// `[salesforce.orgs.NAME]`: Salesforce orgs (login host, OAuth grant, API version, quota
/// reserve), used by `salesforce` sources and destinations.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSalesforce {
    #[serde(default)]
    pub orgs: BTreeMap<S<String>, RawSalesforceOrg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSalesforceOrg {
    pub login_url: S<String>,
    /// `client_credentials` (default), `jwt_bearer` or `refresh_token`.
    pub grant: Option<S<String>>,
    pub client_id: S<String>,
    pub client_secret: Option<S<RawSecretRef>>,
    pub username: Option<S<String>>,
    pub private_key: Option<S<RawSecretRef>>,
    pub refresh_token: Option<S<RawSecretRef>>,
    pub api_version: Option<S<String>>,
    pub reserve: Option<S<u64>>,
    pub organization_id: Option<S<String>>,
}

/// `[salesforce.orgs.NAME]`.
#[derive(Debug, Clone)]
pub struct SalesforceOrgConfig {
    pub name: String,
    /// `https://login.salesforce.com`, `https://test.salesforce.com` or the My Domain URL.
    pub login_url: String,
    pub grant: SalesforceGrant,
    pub client_id: String,
    /// `vNN.N`.
    pub api_version: String,
    /// Daily API requests kept for interactive calls: background calls stop at this many left.
    pub reserve: u64,
    /// The 18-character org id; Outbound Messages from any other org are refused.
    pub organization_id: Option<String>,
    /// Set by `--sim-endpoints`: the login URL becomes this URL (the instance URL then comes
    /// from the token answer).
    pub base_url_override: Option<String>,
}

/// The OAuth grant of a Salesforce org, with the secrets each needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SalesforceGrant {
    ClientCredentials {
        client_secret: SecretRef,
    },
    /// `private_key` holds an RSA private key in PEM form.
    JwtBearer {
        username: String,
        private_key: SecretRef,
    },
    RefreshToken {
        client_secret: Option<SecretRef>,
        refresh_token: SecretRef,
    },
}

impl SalesforceGrant {
    /// The config `grant` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ClientCredentials { .. } => "client_credentials",
            Self::JwtBearer { .. } => "jwt_bearer",
            Self::RefreshToken { .. } => "refresh_token",
        }
    }
}

/// The secrets of one org's grant, read.
pub enum SalesforceSecrets {
    ClientCredentials { client_secret: Secret },
    JwtBearer { username: String, private_key: Secret, span: Range<usize> },
    RefreshToken { client_secret: Option<Secret>, refresh_token: Secret },
}

/// The grants of a Salesforce org and the keys each takes, for the help line of a mismatch.
const GRANT_HELP: &str = "grant = \"client_credentials\" takes client_secret; \"jwt_bearer\" takes username and \
                          private_key; \"refresh_token\" takes refresh_token (and client_secret if the connected app \
                          requires it)";

/// `[salesforce.orgs.NAME]` checked (no I/O); `None` when it cannot be used, every problem pushed to `diag`.
pub fn validate_org(diag: &mut Diagnostics, name: &S<String>, org: &RawSalesforceOrg) -> Option<SalesforceOrgConfig> {
    let n = name.get_ref();
    let mut ok = true;
    let login_url = org.login_url.get_ref().trim_end_matches('/').to_string();
    require_https(diag, &format!("salesforce.orgs.{n}.login_url"), &org.login_url);
    if !is_base_url(&login_url) {
        diag.push(ConfigError::new(
            Code::BadAddress,
            format!("salesforce.orgs.{n}.login_url `{}` is not an http(s) URL without a path", org.login_url.get_ref()),
            span(&org.login_url),
            "e.g. https://login.salesforce.com or https://yourcompany.my.salesforce.com",
        ));
        ok = false;
    }
    if org.client_id.get_ref().trim().is_empty() {
        diag.push(ConfigError::new(
            Code::EmptyValue,
            format!("salesforce.orgs.{n}.client_id is empty"),
            span(&org.client_id),
            "the connected app's consumer key",
        ));
        ok = false;
    }
    let grant_name = org.grant.as_ref().map_or("client_credentials", |s| s.get_ref().as_str());
    let (required, optional): (&[&str], &[&str]) = match grant_name {
        "client_credentials" => (&["client_secret"], &[]),
        "jwt_bearer" => (&["username", "private_key"], &[]),
        "refresh_token" => (&["refresh_token"], &["client_secret"]),
        other => {
            diag.push(ConfigError::new(
                Code::UnknownChoice,
                format!("salesforce.orgs.{n}.grant `{other}` is unknown"),
                at(&org.grant),
                "`client_credentials` (default), `jwt_bearer` or `refresh_token`",
            ));
            return None;
        }
    };
    let keys = [
        ("client_secret", at(&org.client_secret)),
        ("username", at(&org.username)),
        ("private_key", at(&org.private_key)),
        ("refresh_token", at(&org.refresh_token)),
    ];
    for (key, written) in keys {
        match written {
            Some(at) if !required.contains(&key) && !optional.contains(&key) => {
                diag.push(
                    ConfigError::new(
                        Code::KeyConflict,
                        format!("salesforce.orgs.{n}.{key} is not used by the {grant_name} grant"),
                        Some(at),
                        format!("not used with grant = \"{grant_name}\""),
                    )
                    .with_help(GRANT_HELP),
                );
                ok = false;
            }
            None if required.contains(&key) => {
                diag.push(
                    ConfigError::new(
                        Code::MissingKey,
                        format!("salesforce.orgs.{n} uses the {grant_name} grant but has no `{key}`"),
                        Some(name.span()),
                        format!("missing `{key}`"),
                    )
                    .with_help(GRANT_HELP),
                );
                ok = false;
            }
            _ => {}
        }
    }
    let secret = |diag: &mut Diagnostics, key: &str, v: &Option<S<RawSecretRef>>| {
        v.as_ref().and_then(|s| diag.secret(s, &format!("salesforce.orgs.{n}.{key}")))
    };
    let client_secret = secret(diag, "client_secret", &org.client_secret);
    let private_key = secret(diag, "private_key", &org.private_key);
    let refresh_token = secret(diag, "refresh_token", &org.refresh_token);
    let grant = match grant_name {
        "client_credentials" => client_secret.map(|client_secret| SalesforceGrant::ClientCredentials { client_secret }),
        "jwt_bearer" => {
            let username = org.username.as_ref().map(|s| s.get_ref().trim().to_string()).filter(|u| !u.is_empty());
            if let (None, Some(s)) = (&username, &org.username) {
                diag.push(ConfigError::new(
                    Code::EmptyValue,
                    format!("salesforce.orgs.{n}.username is empty"),
                    span(s),
                    "the Salesforce username of the integration user",
                ));
            }
            match (username, private_key) {
                (Some(username), Some(private_key)) => Some(SalesforceGrant::JwtBearer { username, private_key }),
                _ => None,
            }
        }
        _ => refresh_token.map(|refresh_token| SalesforceGrant::RefreshToken { client_secret, refresh_token }),
    };
    let api_version = org.api_version.as_ref().map_or_else(|| DEFAULT_API_VERSION.to_string(), |s| s.get_ref().clone());
    if let Some(s) = &org.api_version {
        if !is_api_version(s.get_ref()) {
            diag.push(ConfigError::new(
                Code::BadName,
                format!("salesforce.orgs.{n}.api_version `{}` is not a Salesforce API version", s.get_ref()),
                span(s),
                format!("`v` and the version number, e.g. {DEFAULT_API_VERSION}"),
            ));
            ok = false;
        }
    }
    let organization_id = match &org.organization_id {
        None => None,
        Some(s) => match normalize_id(s.get_ref().trim()) {
            Ok(id) if id.starts_with("00D") => Some(id),
            _ => {
                diag.push(ConfigError::new(
                    Code::BadName,
                    format!("salesforce.orgs.{n}.organization_id `{}` is not a Salesforce org id", s.get_ref()),
                    span(s),
                    "the 15- or 18-character id starting with 00D (Setup → Company Information)",
                ));
                ok = false;
                None
            }
        },
    };
    let grant = grant?;
    ok.then(|| SalesforceOrgConfig {
        name: n.clone(),
        login_url,
        grant,
        client_id: org.client_id.get_ref().trim().to_string(),
        api_version,
        reserve: org.reserve.as_ref().map_or(DEFAULT_RESERVE, |s| *s.get_ref()),
        organization_id,
        base_url_override: None,
    })
}

/// `vNN.N`, as Salesforce names its API versions.
fn is_api_version(text: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    text.strip_prefix('v').and_then(|v| v.split_once('.')).is_some_and(|(major, minor)| number(major) && number(minor))
}

/// The `aud` of a JWT bearer assertion: Salesforce wants the generic login host (`test` for
/// sandboxes), never the My Domain URL the token request is sent to.
pub fn jwt_audience(login_url: &str) -> &'static str {
    let host = login_url.split_once("://").map_or(login_url, |(_, rest)| rest).trim_end_matches('/');
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        "https://test.salesforce.com"
    } else {
        "https://login.salesforce.com"
    }
}

/// Where the grant's main secret is named in the config: errors about the org point there.
fn grant_span(grant: &SalesforceGrant) -> Range<usize> {
    match grant {
        SalesforceGrant::ClientCredentials { client_secret } => client_secret.span.clone(),
        SalesforceGrant::JwtBearer { private_key, .. } => private_key.span.clone(),
        SalesforceGrant::RefreshToken { refresh_token, .. } => refresh_token.span.clone(),
    }
}

impl SalesforceOrgConfig {
    /// Whether the org's grant holds a credential Salesforce may rotate (a refresh token).
    pub fn rotates_credentials(&self) -> bool {
        matches!(self.grant, SalesforceGrant::RefreshToken { .. })
    }

    /// The secrets of the org's grant; `None` when one is missing (recorded in `rs`).
    pub fn read_secrets(&self, rs: &mut SecretReader<'_>) -> Option<SalesforceSecrets> {
        let name = &self.name;
        let what = |key: &str| format!("the {key} of Salesforce org `{name}`");
        match &self.grant {
            SalesforceGrant::ClientCredentials { client_secret } => rs
                .get(client_secret, &what("client secret"))
                .map(|client_secret| SalesforceSecrets::ClientCredentials { client_secret }),
            SalesforceGrant::JwtBearer { username, private_key } => {
                rs.get(private_key, &what("private key")).map(|key| SalesforceSecrets::JwtBearer {
                    username: username.clone(),
                    private_key: key,
                    span: private_key.span.clone(),
                })
            }
            SalesforceGrant::RefreshToken { client_secret, refresh_token } => {
                let secret = client_secret.as_ref().map(|r| rs.get(r, &what("client secret")));
                let token = rs.get(refresh_token, &what("refresh token"));
                match (secret, token) {
                    (Some(None), _) | (_, None) => None,
                    (secret, Some(refresh_token)) => {
                        Some(SalesforceSecrets::RefreshToken { client_secret: secret.flatten(), refresh_token })
                    }
                }
            }
        }
    }

    /// The org's client on `http` (shared with the other CRM orgs): one token cache and one
    /// quota gauge.
    ///
    /// `keeper`: where a refresh token the org rotates is kept (memory only while empty).
    pub fn build(
        &self,
        secrets: SalesforceSecrets,
        http: &HttpClient,
        clock: &Arc<dyn Clock>,
        keeper: &KeeperSlot,
    ) -> Result<SalesforceClient, ConfigError> {
        let name = &self.name;
        let at = grant_span(&self.grant);
        let grant = match secrets {
            SalesforceSecrets::ClientCredentials { client_secret } => Grant::ClientCredentials {
                client_id: self.client_id.clone(),
                client_secret: client_secret.into_secret_string(),
            },
            SalesforceSecrets::JwtBearer { username, private_key, span } => {
                let audience = jwt_audience(&self.login_url);
                Grant::jwt_bearer(&self.client_id, &username, audience, private_key.expose().as_bytes()).map_err(
                    |e| {
                        ConfigError::new(
                            Code::BadCredential,
                            format!("the private key of Salesforce org `{name}` is not usable: {e}"),
                            Some(span),
                            "expected an RSA private key in PEM form (-----BEGIN PRIVATE KEY-----)",
                        )
                    },
                )?
            }
            SalesforceSecrets::RefreshToken { client_secret, refresh_token } => Grant::rotating_refresh_token(
                &self.client_id,
                client_secret.map(Secret::into_secret_string),
                Arc::new(RotatingSecret::new(
                    &format!("salesforce.orgs.{name}"),
                    REFRESH_TOKEN_NAME,
                    refresh_token.into_secret_string(),
                    keeper.clone(),
                )),
            ),
        };
        let login = self.base_url_override.as_deref().unwrap_or(&self.login_url);
        let instance = Arc::new(InstanceUrl::default());
        let fetcher = SalesforceTokenFetcher::new(
            http.clone(),
            login,
            grant,
            DEFAULT_SESSION_LIFETIME,
            instance.clone(),
            clock.clone(),
        )
        .map_err(|e| {
            ConfigError::new(
                Code::InvalidValue,
                format!("Salesforce org `{name}` cannot be built: {e}"),
                Some(at),
                "while building this org",
            )
        })?;
        let tokens = Arc::new(TokenCache::new(Arc::new(fetcher), TOKEN_MARGIN, clock.clone()));
        let guard = QuotaGuard { reserve: self.reserve, backoff: DAILY_LIMIT_BACKOFF };
        Ok(SalesforceClient::new(http.clone(), tokens, instance, &self.api_version)
            .with_quota(Arc::new(ApiUsage::new()), guard))
    }
}

/// How `salesforce` sources and destinations differ from Zoho's: a source receives Outbound
/// Messages at a URL carrying `outbound_token` (so its org must say its id) or polls every
/// `poll_interval`; a destination's writes may be `interactive`, allowed past the org's quota
/// reserve.
pub struct Rules;

impl CrmRules for Rules {
    /// The outbound token stands alone in a URL: it must be a real capability.
    fn check_intake_secret(&self, name: &str, secret: &Secret, at: Range<usize>) -> Option<ConfigError> {
        let weak = connect::config::weak_capability(secret.expose())?;
        Some(ConfigError::new(
            Code::BadCredential,
            format!("the outbound token of source `{name}` is too weak to stand in a URL: {weak}"),
            Some(at),
            "use at least 22 random URL-safe characters, e.g. `openssl rand -base64 24 | tr '+/' '-_'`",
        ))
    }

    fn org_table(&self) -> OrgTable {
        OrgTable { what: "Salesforce org", path: "salesforce.orgs" }
    }

    fn org_names(&self, tables: &RawTables<'_>) -> Vec<String> {
        tables.salesforce.orgs.keys().map(|k| k.get_ref().clone()).collect()
    }

    fn objects_example(&self) -> &'static str {
        "objects = [\"Opportunity\"]"
    }

    fn intake_keys(&self) -> &'static [(IntakeKey, &'static str)] {
        &[(IntakeKey::OutboundToken, "only `salesforce` Outbound Message sources take it")]
    }

    /// `outbound_message` (the default) with its `outbound_token`, or `poll` every
    /// `poll_interval` (at least 10s).
    fn intake(&self, diag: &mut Diagnostics, source: &IntakeCheck<'_>, ok: &mut bool) -> Option<CrmIntake> {
        let n = source.name.get_ref();
        let keys = source.keys;
        match keys.intake.map(|s| s.get_ref().as_str()) {
            None | Some("outbound_message") => {
                *ok &= !diag.unused_keys(
                    &[("poll_interval", keys.poll_interval.map(|s| s.span()))],
                    &format!("a salesforce source receiving Outbound Messages (`{n}`)"),
                    "only intake = \"poll\" polls",
                );
                match keys.outbound_token {
                    Some(s) => diag
                        .secret(s, &format!("sources.{n}.outbound_token"))
                        .map(|token| CrmIntake::OutboundMessage { token }),
                    None => {
                        diag.push(
                            ConfigError::new(
                                Code::MissingKey,
                                format!(
                                    "salesforce source `{n}` receives Outbound Messages but has no `outbound_token`"
                                ),
                                Some(source.name.span()),
                                "needs outbound_token = { env = \"...\" }",
                            )
                            .with_help(format!(
                                "Outbound Messages are not signed: the endpoint URL /intake/salesforce/{n}/<token> is \
                                 what keeps strangers out; use at least 22 random URL-safe characters"
                            )),
                        );
                        None
                    }
                }
            }
            Some("poll") => {
                Some(source.poll(diag, "salesforce", &[("outbound_token", keys.outbound_token.map(|s| s.span()))], ok))
            }
            Some(other) => {
                diag.push(ConfigError::new(
                    Code::UnknownChoice,
                    format!("salesforce source `{n}` has unknown intake `{other}`"),
                    keys.intake.map(|s| s.span()),
                    "`outbound_message` (default) or `poll`",
                ));
                None
            }
        }
    }

    /// An Outbound Message names its org: one from another org is refused, so the org id must
    /// be known.
    fn check_org(&self, diag: &mut Diagnostics, name: &str, source: &CrmSource, orgs: &CrmOrgs<'_>) {
        let CrmSource { org, intake: CrmIntake::OutboundMessage { .. }, .. } = source else {
            return;
        };
        if orgs.connections.salesforce_orgs.get(org).is_some_and(|o| o.organization_id.is_none()) {
            let at = orgs.tables.salesforce.orgs.keys().find(|k| k.get_ref() == org).map(|k| k.span());
            diag.push(ConfigError::new(
                Code::BadConnection,
                format!("salesforce.orgs.{org} has no `organization_id`, which source `{name}` needs to refuse Outbound Messages from other orgs"),
                at,
                "add organization_id = \"00D…\" (Setup → Company Information)",
            ));
        }
    }

    /// `background` (the default) stops at the org's reserve; `interactive` may go past it.
    fn interactive(&self, diag: &mut Diagnostics, destination: &PriorityCheck<'_>) -> bool {
        let priority = destination.keys.priority;
        match priority.map(|s| s.get_ref().as_str()) {
            None | Some("background") => false,
            Some("interactive") => true,
            Some(other) => {
                diag.push(ConfigError::new(
                    Code::UnknownChoice,
                    format!("destination `{}` has unknown priority `{other}`", destination.name),
                    priority.map(|s| s.span()),
                    "`background` (default; stops at the org's reserve) or `interactive`",
                ));
                false
            }
        }
    }
}
