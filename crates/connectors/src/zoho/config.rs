//! `[zoho.orgs.NAME]`: a Zoho CRM org as the config writes it, its pure validation (`check`),
//! and the client `run` builds from it with the secrets read; and the [`Rules`] its sources and
//! destinations are validated by where they differ from Salesforce's.

use super::auth::{DataCentre, ZohoCredentials};
use super::client::{ZohoClient, ZohoSettings};
use crate::crm_destination::PriorityCheck;
use crate::crm_source::{CrmIntake, CrmRules, IntakeCheck, IntakeKey, OrgTable};
use crate::registry::RawTables;
use connect::config::{span, Code, ConfigError, Diagnostics, RawSecretRef, Secret, SecretReader, SecretRef, S};
use connect::http::HttpClient;
use connect::Clock;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `[zoho.orgs.NAME]`: Zoho CRM orgs (data centre and refresh-token credentials), used by
/// `zoho` sources and destinations.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZoho {
    #[serde(default)]
    pub orgs: BTreeMap<S<String>, RawZohoOrg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZohoOrg {
    pub data_centre: S<String>,
    pub client_id: S<String>,
    pub client_secret: S<RawSecretRef>,
    pub refresh_token: S<RawSecretRef>,
}

/// `[zoho.orgs.NAME]`.
#[derive(Debug, Clone)]
pub struct ZohoOrgConfig {
    pub name: String,
    pub data_centre: DataCentre,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub refresh_token: SecretRef,
    /// Set by `--sim-endpoints`: the accounts server and the API domain become this URL.
    pub base_url_override: Option<String>,
}

/// `[zoho.orgs.NAME]` checked (no I/O); `None` when it cannot be used, every problem pushed to `diag`.
pub fn validate_org(diag: &mut Diagnostics, name: &S<String>, org: &RawZohoOrg) -> Option<ZohoOrgConfig> {
    let n = name.get_ref();
    let mut ok = true;
    let data_centre = DataCentre::parse(org.data_centre.get_ref());
    if data_centre.is_none() {
        diag.push(ConfigError::new(
            Code::UnknownChoice,
            format!("zoho.orgs.{n}.data_centre `{}` is unknown", org.data_centre.get_ref()),
            span(&org.data_centre),
            "the domain suffix of the org's Zoho site: com, eu, in, com.au, com.cn, jp, ca, sa or uk",
        ));
    }
    if org.client_id.get_ref().trim().is_empty() {
        diag.push(ConfigError::new(
            Code::EmptyValue,
            format!("zoho.orgs.{n}.client_id is empty"),
            span(&org.client_id),
            "the client id from the Zoho API console, e.g. 1000.XXXX",
        ));
        ok = false;
    }
    let client_secret = diag.secret(&org.client_secret, &format!("zoho.orgs.{n}.client_secret"));
    let refresh_token = diag.secret(&org.refresh_token, &format!("zoho.orgs.{n}.refresh_token"));
    let (data_centre, client_secret, refresh_token) = (data_centre?, client_secret?, refresh_token?);
    ok.then(|| ZohoOrgConfig {
        name: n.clone(),
        data_centre,
        client_id: org.client_id.get_ref().trim().to_string(),
        client_secret,
        refresh_token,
        base_url_override: None,
    })
}

impl ZohoOrgConfig {
    /// The org's OAuth credentials; `None` when a secret is missing (recorded in `rs`).
    pub fn read_secrets(&self, rs: &mut SecretReader<'_>) -> Option<ZohoCredentials> {
        let name = &self.name;
        let secret = rs.get(&self.client_secret, &format!("the client secret of Zoho org `{name}`"));
        let token = rs.get(&self.refresh_token, &format!("the refresh token of Zoho org `{name}`"));
        let (secret, token) = (secret?, token?);
        Some(ZohoCredentials {
            client_id: self.client_id.clone(),
            client_secret: secret.into_secret_string(),
            refresh_token: token.into_secret_string(),
        })
    }

    /// The org's client on `http` (shared with the other CRM orgs).
    pub fn build(
        &self,
        credentials: ZohoCredentials,
        http: &HttpClient,
        clock: &Arc<dyn Clock>,
        keeper: &connect::vault::KeeperSlot,
    ) -> Result<ZohoClient, ConfigError> {
        let settings = match &self.base_url_override {
            Some(url) => ZohoSettings::with_base(url),
            None => ZohoSettings::for_dc(self.data_centre),
        };
        let connection = format!("zoho.orgs.{}", self.name);
        let vault = Some((connection.as_str(), keeper.clone()));
        ZohoClient::with_token_vault(http.clone(), settings, credentials, clock.clone(), vault).map_err(|e| {
            ConfigError::new(
                Code::InvalidValue,
                format!("Zoho org `{}` cannot be built: {e}", self.name),
                Some(self.refresh_token.span.clone()),
                "while building this org",
            )
        })
    }
}

/// How `zoho` sources and destinations differ from Salesforce's: a source learns of changes
/// through a notification channel, whose notifications echo `channel_token` and go to
/// `notify_url` (the gateway's own push route when not set); a destination has no interactive
/// reserve, so it takes no `priority`.
pub struct Rules;

impl CrmRules for Rules {
    /// Zoho refuses a channel whose token is longer than it accepts.
    fn check_intake_secret(&self, name: &str, secret: &Secret, at: std::ops::Range<usize>) -> Option<ConfigError> {
        let max_chars = super::source::MAX_TOKEN_CHARS;
        let chars = secret.expose().chars().count();
        (chars > max_chars).then(|| {
            ConfigError::new(
                Code::BadCredential,
                format!(
                    "the channel token of source `{name}` has {chars} characters; Zoho accepts at most {max_chars}"
                ),
                Some(at),
                "too long for a Zoho watch channel",
            )
        })
    }

    fn org_table(&self) -> OrgTable {
        OrgTable { what: "Zoho org", path: "zoho.orgs" }
    }

    fn org_names(&self, tables: &RawTables<'_>) -> Vec<String> {
        tables.zoho.orgs.keys().map(|k| k.get_ref().clone()).collect()
    }

    fn objects_example(&self) -> &'static str {
        "objects = [\"Deals\"]"
    }

    fn intake_keys(&self) -> &'static [(IntakeKey, &'static str)] {
        const CHANNEL: &str = "only `zoho` sources take it (their notification channel)";
        &[(IntakeKey::ChannelToken, CHANNEL), (IntakeKey::NotifyUrl, CHANNEL)]
    }

    /// `notifications` (the default) with its `channel_token`, or `poll` every `poll_interval`
    /// (at least 10s) by `Modified_Time`.
    fn intake(&self, diag: &mut Diagnostics, source: &IntakeCheck<'_>, ok: &mut bool) -> Option<CrmIntake> {
        let n = source.name.get_ref();
        let keys = source.keys;
        match keys.intake.map(|s| s.get_ref().as_str()) {
            Some("poll") => Some(source.poll(
                diag,
                "zoho",
                &[
                    ("channel_token", keys.channel_token.map(|s| s.span())),
                    ("notify_url", keys.notify_url.map(|s| s.span())),
                ],
                ok,
            )),
            None | Some("notifications") => {
                *ok &= !diag.unused_keys(
                    &[("poll_interval", keys.poll_interval.map(|s| s.span()))],
                    &format!("a zoho source receiving notifications (`{n}`)"),
                    "only intake = \"poll\" polls",
                );
                let channel_token = match keys.channel_token {
                    Some(s) => diag.secret(s, &format!("sources.{n}.channel_token")),
                    None => {
                        diag.push(
                            ConfigError::new(
                                Code::MissingKey,
                                format!("zoho source `{n}` has no `channel_token`"),
                                Some(source.name.span()),
                                "needs channel_token = { env = \"...\" }",
                            )
                            .with_help("Zoho echoes this token (at most 50 characters) in every notification; the gateway refuses notifications without it"),
                        );
                        None
                    }
                };
                let notify_url = keys.notify_url.map(|s| s.get_ref().clone());
                if let Some(s) = keys.notify_url {
                    if !(s.get_ref().starts_with("https://") || s.get_ref().starts_with("http://")) {
                        diag.push(ConfigError::new(
                            Code::BadAddress,
                            format!("sources.{n}.notify_url `{}` is not an http(s) URL", s.get_ref()),
                            span(s),
                            "the public URL Zoho posts notifications to, e.g. https://gw.example.com/intake/zoho/crm",
                        ));
                        *ok = false;
                    }
                }
                channel_token.map(|channel_token| CrmIntake::Notifications { channel_token, notify_url })
            }
            Some(other) => {
                diag.push(ConfigError::new(
                    Code::UnknownChoice,
                    format!("zoho source `{n}` has unknown intake `{other}`"),
                    keys.intake.map(|s| s.span()),
                    "`notifications` (default) or `poll`",
                ));
                None
            }
        }
    }

    /// Zoho has no interactive reserve: `priority` is refused and every write is background.
    fn interactive(&self, diag: &mut Diagnostics, destination: &PriorityCheck<'_>) -> bool {
        diag.unused_keys(
            &[("priority", destination.keys.priority.map(|s| s.span()))],
            destination.owner,
            "only `salesforce` destinations take it (Zoho has no interactive reserve)",
        );
        false
    }
}
