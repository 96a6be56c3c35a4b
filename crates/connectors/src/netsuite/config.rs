//! `[netsuite.accounts.NAME]`: a NetSuite account as the config writes it (account id, TBA or
//! OAuth 2.0 credentials, concurrency, the integration user's time zone), its pure validation
//! (`check`), and the client `run` builds from it with the secrets read.

use super::account::AccountId;
use super::auth::{Authorizer, ClientCredentials, OAuth2TokenFetcher, TbaCredentials, TbaSigner};
use super::client::{NetSuiteClient, DEFAULT_CONCURRENCY};
use crate::erp_source::{ConnectionKey, ErpSourceRules, Push, PushKey, SourceConnection};
use crate::registry::RawTables;
use connect::config::{at, span, Code, ConfigError, Diagnostics, RawSecretRef, Secret, SecretReader, SecretRef, S};
use connect::http::HttpClient;
use connect::token::TokenCache;
use connect::Clock;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// The zone NetSuite integration users in Hong Kong are set to; NetSuite dates are in the user's zone.
const DEFAULT_NETSUITE_ZONE: &str = "Asia/Hong_Kong";
/// The record types a `netsuite` source may watch (NetSuite's spelling): those the source reads
/// and maps to a canonical record.
pub const SOURCE_OBJECTS: &[&str] = &["itemFulfillment", "purchaseRequisition", "purchaseOrder", "salesOrder"];
/// NetSuite OAuth 2.0 access tokens live an hour; fetch a new one five minutes before.
const TOKEN_MARGIN: Duration = Duration::from_secs(5 * 60);

/// `[netsuite.accounts.NAME]`: NetSuite accounts (account id, TBA or OAuth 2.0 credentials,
/// concurrency, the integration user's time zone), used by `netsuite` sources.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetsuite {
    #[serde(default)]
    pub accounts: BTreeMap<S<String>, RawNetsuiteAccount>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetsuiteAccount {
    pub account_id: S<String>,
    /// `tba` (default) or `oauth2`.
    pub auth: Option<S<String>>,
    pub consumer_key: Option<S<String>>,
    pub consumer_secret: Option<S<RawSecretRef>>,
    pub token_id: Option<S<String>>,
    pub token_secret: Option<S<RawSecretRef>>,
    pub client_id: Option<S<String>>,
    pub certificate_id: Option<S<String>>,
    pub private_key: Option<S<RawSecretRef>>,
    pub concurrency: Option<S<u64>>,
    pub time_zone: Option<S<String>>,
}

/// `[netsuite.accounts.NAME]`.
#[derive(Debug, Clone)]
pub struct NetsuiteAccountConfig {
    pub name: String,
    pub account_id: AccountId,
    pub auth: NetsuiteAuth,
    /// Client-side permits, well below the account's concurrency limit (shared with other integrations).
    pub concurrency: usize,
    /// The integration user's time zone: NetSuite answers and filters dates in it.
    pub time_zone: jiff::tz::TimeZone,
    /// Set by `--sim-endpoints`: the REST base (and the token URL under it) move to this URL.
    pub base_url_override: Option<String>,
}

/// How requests to a NetSuite account authenticate, with the secrets each way needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetsuiteAuth {
    /// Token-Based Authentication (OAuth 1.0a, HMAC-SHA256).
    Tba { consumer_key: String, consumer_secret: SecretRef, token_id: String, token_secret: SecretRef },
    /// OAuth 2.0 client credentials; `private_key` holds an EC (ES256) or RSA (PS256) key in PEM form.
    OAuth2 { client_id: String, certificate_id: String, private_key: SecretRef },
}

impl NetsuiteAuth {
    /// The config `auth` name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Tba { .. } => "tba",
            Self::OAuth2 { .. } => "oauth2",
        }
    }
}

/// The secrets of one account's `auth`, read, with where the config names them (errors while
/// building point there).
pub enum NetsuiteSecrets {
    Tba {
        credentials: TbaCredentials,
        at: Range<usize>,
    },
    /// `private_key` is the PEM key of the client credentials certificate.
    OAuth2 {
        client_id: String,
        certificate_id: String,
        private_key: Secret,
        at: Range<usize>,
    },
}

/// The keys each NetSuite `auth` takes, for the help line of a mismatch.
const NETSUITE_AUTH_HELP: &str = "auth = \"tba\" takes consumer_key, consumer_secret, token_id and token_secret; \
                                  \"oauth2\" takes client_id, certificate_id and private_key";

/// `[netsuite.accounts.NAME]` checked (no I/O); `None` when it cannot be used, every problem pushed to `diag`.
pub fn validate_account(
    diag: &mut Diagnostics,
    name: &S<String>,
    account: &RawNetsuiteAccount,
) -> Option<NetsuiteAccountConfig> {
    let n = name.get_ref();
    let mut ok = true;
    let account_id = AccountId::parse(account.account_id.get_ref());
    if account_id.is_none() {
        diag.push(ConfigError::new(
            Code::BadName,
            format!("netsuite.accounts.{n}.account_id `{}` is not a NetSuite account id", account.account_id.get_ref()),
            span(&account.account_id),
            "letters, digits, `_` or `-`, e.g. 1234567 or 1234567_SB1 (Setup → Company → Company Information)",
        ));
    }
    let auth_name = account.auth.as_ref().map_or("tba", |s| s.get_ref().as_str());
    let required: &[&str] = match auth_name {
        "tba" => &["consumer_key", "consumer_secret", "token_id", "token_secret"],
        "oauth2" => &["client_id", "certificate_id", "private_key"],
        other => {
            diag.push(ConfigError::new(
                Code::UnknownChoice,
                format!("netsuite.accounts.{n}.auth `{other}` is unknown"),
                at(&account.auth),
                "`tba` (token-based authentication, default) or `oauth2` (client credentials)",
            ));
            return None;
        }
    };
    let keys = [
        ("consumer_key", at(&account.consumer_key)),
        ("consumer_secret", at(&account.consumer_secret)),
        ("token_id", at(&account.token_id)),
        ("token_secret", at(&account.token_secret)),
        ("client_id", at(&account.client_id)),
        ("certificate_id", at(&account.certificate_id)),
        ("private_key", at(&account.private_key)),
    ];
    // A missing key points at `auth` when it was written (that choice asks for the key).
    let auth_at = at(&account.auth).unwrap_or_else(|| name.span());
    for (key, written) in keys {
        match written {
            Some(at) if !required.contains(&key) => {
                diag.push(
                    ConfigError::new(
                        Code::KeyConflict,
                        format!("netsuite.accounts.{n}.{key} is not used with auth = \"{auth_name}\""),
                        Some(at),
                        format!("not used with auth = \"{auth_name}\""),
                    )
                    .with_help(NETSUITE_AUTH_HELP),
                );
                ok = false;
            }
            None if required.contains(&key) => {
                diag.push(
                    ConfigError::new(
                        Code::MissingKey,
                        format!("netsuite.accounts.{n} uses auth = \"{auth_name}\" but has no `{key}`"),
                        Some(auth_at.clone()),
                        format!("missing `{key}`"),
                    )
                    .with_help(NETSUITE_AUTH_HELP),
                );
                ok = false;
            }
            _ => {}
        }
    }
    let text = |diag: &mut Diagnostics, key: &str, v: &Option<S<String>>, label: &str| match v {
        Some(s) if s.get_ref().trim().is_empty() => {
            diag.push(ConfigError::new(
                Code::EmptyValue,
                format!("netsuite.accounts.{n}.{key} is empty"),
                span(s),
                label.to_string(),
            ));
            None
        }
        Some(s) => Some(s.get_ref().trim().to_string()),
        None => None,
    };
    let secret = |diag: &mut Diagnostics, key: &str, v: &Option<S<RawSecretRef>>| {
        v.as_ref().and_then(|s| diag.secret(s, &format!("netsuite.accounts.{n}.{key}")))
    };
    let auth = if auth_name == "tba" {
        let consumer_key = text(diag, "consumer_key", &account.consumer_key, "the integration record's consumer key");
        let consumer_secret = secret(diag, "consumer_secret", &account.consumer_secret);
        let token_id = text(diag, "token_id", &account.token_id, "the access token's token id");
        let token_secret = secret(diag, "token_secret", &account.token_secret);
        match (consumer_key, consumer_secret, token_id, token_secret) {
            (Some(consumer_key), Some(consumer_secret), Some(token_id), Some(token_secret)) => {
                Some(NetsuiteAuth::Tba { consumer_key, consumer_secret, token_id, token_secret })
            }
            _ => None,
        }
    } else {
        let client_id = text(diag, "client_id", &account.client_id, "the integration record's client id");
        let certificate_id = text(
            diag,
            "certificate_id",
            &account.certificate_id,
            "the certificate id of the client credentials mapping",
        );
        let private_key = secret(diag, "private_key", &account.private_key);
        match (client_id, certificate_id, private_key) {
            (Some(client_id), Some(certificate_id), Some(private_key)) => {
                Some(NetsuiteAuth::OAuth2 { client_id, certificate_id, private_key })
            }
            _ => None,
        }
    };
    let concurrency = match &account.concurrency {
        Some(s) => diag.positive(s, &format!("netsuite.accounts.{n}.concurrency"))?,
        None => DEFAULT_CONCURRENCY,
    };
    let time_zone = match &account.time_zone {
        Some(s) => match jiff::tz::TimeZone::get(s.get_ref().trim()) {
            Ok(zone) => Some(zone),
            Err(_) => {
                diag.push(ConfigError::new(
                    Code::BadLocale,
                    format!("netsuite.accounts.{n}.time_zone `{}` is not a known time zone", s.get_ref()),
                    span(s),
                    "an IANA zone name, e.g. Asia/Hong_Kong or Asia/Shanghai (the integration user's preference)",
                ));
                None
            }
        },
        // Hong Kong has kept +08:00 without daylight saving since 1979, so the fixed offset is
        // the same zone for every date NetSuite answers with.
        None => Some(
            jiff::tz::TimeZone::get(DEFAULT_NETSUITE_ZONE)
                .unwrap_or_else(|_| jiff::tz::TimeZone::fixed(jiff::tz::offset(8))),
        ),
    };
    let (account_id, auth, time_zone) = (account_id?, auth?, time_zone?);
    ok.then(|| NetsuiteAccountConfig {
        name: n.clone(),
        account_id,
        auth,
        concurrency,
        time_zone,
        base_url_override: None,
    })
}

impl NetsuiteAccountConfig {
    /// The secrets of the account's `auth`; `None` when one is missing (recorded in `rs`).
    pub fn read_secrets(&self, rs: &mut SecretReader<'_>) -> Option<NetsuiteSecrets> {
        let name = &self.name;
        let what = |key: &str| format!("the {key} of NetSuite account `{name}`");
        match &self.auth {
            NetsuiteAuth::Tba { consumer_key, consumer_secret, token_id, token_secret } => {
                let consumer_secret_value = rs.get(consumer_secret, &what("consumer secret"));
                let token_secret = rs.get(token_secret, &what("token secret"));
                let credentials = TbaCredentials {
                    consumer_key: consumer_key.clone(),
                    consumer_secret: consumer_secret_value?.into_secret_string(),
                    token_id: token_id.clone(),
                    token_secret: token_secret?.into_secret_string(),
                };
                Some(NetsuiteSecrets::Tba { credentials, at: consumer_secret.span.clone() })
            }
            NetsuiteAuth::OAuth2 { client_id, certificate_id, private_key } => {
                rs.get(private_key, &what("private key")).map(|key| NetsuiteSecrets::OAuth2 {
                    client_id: client_id.clone(),
                    certificate_id: certificate_id.clone(),
                    private_key: key,
                    at: private_key.span.clone(),
                })
            }
        }
    }

    /// The account's client on `http` (shared with the other ERP connections): its signer or
    /// token cache, and its concurrency permits.
    pub fn build(
        &self,
        secrets: NetsuiteSecrets,
        http: &HttpClient,
        clock: &Arc<dyn Clock>,
    ) -> Result<NetSuiteClient, ConfigError> {
        let name = &self.name;
        let rest_base = match &self.base_url_override {
            Some(url) => format!("{}/services/rest", url.trim_end_matches('/')),
            None => self.account_id.rest_base(),
        };
        let (auth, at) = match secrets {
            NetsuiteSecrets::Tba { credentials, at } => {
                (Authorizer::Tba(TbaSigner::new(self.account_id.clone(), credentials, clock.clone())), at)
            }
            NetsuiteSecrets::OAuth2 { client_id, certificate_id, private_key, at } => {
                let pem = private_key.expose().as_bytes();
                let settings =
                    ClientCredentials::from_pem(&rest_base, &client_id, &certificate_id, pem).map_err(|e| {
                        ConfigError::new(
                            Code::BadCredential,
                            format!("NetSuite account `{name}`: {e}"),
                            Some(at.clone()),
                            "the client credentials key cannot be loaded",
                        )
                    })?;
                let fetcher = OAuth2TokenFetcher::new(http.clone(), settings, clock.clone());
                let tokens = Arc::new(TokenCache::new(Arc::new(fetcher), TOKEN_MARGIN, clock.clone()));
                (Authorizer::OAuth2(tokens), at)
            }
        };
        NetSuiteClient::new(http.clone(), &rest_base, auth, self.concurrency, clock.clone()).map_err(|e| {
            ConfigError::new(
                Code::InvalidValue,
                format!("NetSuite account `{name}` cannot be built: {e}"),
                Some(at),
                "while building this account",
            )
        })
    }
}

/// How a `netsuite` source differs from the other ERP sources: it names an account, and the
/// account's user-event script signs its pushes with `webhook_secret`.
pub struct SourceRules;

impl ErpSourceRules for SourceRules {
    fn connection(&self) -> SourceConnection {
        SourceConnection { key: ConnectionKey::Account, what: "NetSuite account", path: "netsuite.accounts" }
    }

    fn connection_names(&self, tables: &RawTables<'_>) -> Vec<String> {
        tables.netsuite.accounts.keys().map(|k| k.get_ref().clone()).collect()
    }

    fn push(&self) -> Push {
        Push {
            keys: &[PushKey::WebhookSecret],
            instead_of_webhook: "ERP pushes are authenticated with webhook_secret",
            instead_of_others: "only `sap` sources take it (IDoc intake)",
            no_intake: "add webhook_secret = { env = \"...\" } and/or poll = \"5m\"",
        }
    }
}
