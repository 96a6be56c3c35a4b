//! OAuth against the data centre's accounts server (reference B1): the refresh-token grant as a
//! [`TokenFetcher`], the `api_domain` the token answer names, and the `Zoho-oauthtoken` header.
//!
//! The `api_domain` is where every API call (and its token) goes, so it must be https on a Zoho
//! API domain ([`api_domains`]: `*.zohoapis.com`, `.eu`, `.in`, `.com.au`, `.com.cn`, `.jp`,
//! `.ca`, `.sa`, `.uk`) or the configured accounts server itself (the simulator under
//! `--sim-endpoints`); anything else fails the token fetch permanently and is never called (R22).

use super::errors::TOKEN_ENDPOINT;
use super::VENDOR;
use connect::http::{read_body_capped, HttpClient, VendorHosts};
use connect::oauth::{token_error, MAX_TOKEN_ANSWER_BYTES};
use connect::token::{FetchedToken, TokenFetcher};
use connect::vault::{KeeperSlot, RotatingSecret, VaultError};
use connect::DeliveryError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use url::Url;

/// Lifetime used when an answer leaves `expires_in` out (Zoho issues 1 h tokens).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Refresh 5 minutes early (the reference suggests refreshing at ~55 min).
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Path of the token endpoint on every accounts server.
pub const TOKEN_PATH: &str = "/oauth/v2/token";

/// The data centre an org lives in; each has its own accounts server and API domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCentre {
    Us,
    Eu,
    In,
    Au,
    Cn,
    Jp,
    Ca,
    Sa,
    /// Hosts UNVERIFIED in the reference.
    Uk,
}

impl DataCentre {
    pub const ALL: [DataCentre; 9] = [
        DataCentre::Us,
        DataCentre::Eu,
        DataCentre::In,
        DataCentre::Au,
        DataCentre::Cn,
        DataCentre::Jp,
        DataCentre::Ca,
        DataCentre::Sa,
        DataCentre::Uk,
    ];

    pub fn accounts_server(self) -> &'static str {
        match self {
            Self::Us => "https://accounts.zoho.com",
            Self::Eu => "https://accounts.zoho.eu",
            Self::In => "https://accounts.zoho.in",
            Self::Au => "https://accounts.zoho.com.au",
            Self::Cn => "https://accounts.zoho.com.cn",
            Self::Jp => "https://accounts.zoho.jp",
            // Canada's accounts server is on a different second-level domain.
            Self::Ca => "https://accounts.zohocloud.ca",
            Self::Sa => "https://accounts.zoho.sa",
            Self::Uk => "https://accounts.zoho.uk",
        }
    }

    /// The default API domain; the token answer's `api_domain` wins over it.
    pub fn api_domain(self) -> &'static str {
        match self {
            Self::Us => "https://www.zohoapis.com",
            Self::Eu => "https://www.zohoapis.eu",
            Self::In => "https://www.zohoapis.in",
            Self::Au => "https://www.zohoapis.com.au",
            Self::Cn => "https://www.zohoapis.com.cn",
            Self::Jp => "https://www.zohoapis.jp",
            Self::Ca => "https://www.zohoapis.ca",
            Self::Sa => "https://www.zohoapis.sa",
            Self::Uk => "https://www.zohoapis.uk",
        }
    }

    /// From a config value: `us`/`com`, `eu`, `in`, `au`/`com.au`, `cn`/`com.cn`, `jp`, `ca`, `sa`, `uk`.
    pub fn parse(text: &str) -> Option<DataCentre> {
        Some(match text.trim().trim_start_matches('.').to_ascii_lowercase().as_str() {
            "us" | "com" => Self::Us,
            "eu" => Self::Eu,
            "in" => Self::In,
            "au" | "com.au" => Self::Au,
            "cn" | "com.cn" => Self::Cn,
            "jp" => Self::Jp,
            "ca" => Self::Ca,
            "sa" => Self::Sa,
            "uk" => Self::Uk,
            _ => return None,
        })
    }
}

/// The registrable domains of every data centre's API host (`zohoapis.com.au`, ...).
pub fn api_domains() -> Vec<&'static str> {
    DataCentre::ALL.iter().map(|dc| dc.api_domain().trim_start_matches("https://www.")).collect()
}

/// What the refresh grant needs. The secrets are never logged or shown by `Debug`.
#[derive(Clone)]
pub struct ZohoCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
    pub refresh_token: SecretString,
}

impl std::fmt::Debug for ZohoCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZohoCredentials").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// The `Authorization` header value for an access token.
pub fn authorization_value(token: &SecretString) -> String {
    format!("Zoho-oauthtoken {}", token.expose_secret())
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    api_domain: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    error: Option<String>,
    /// Zoho documents none on a refresh (its refresh tokens live until revoked); should one come,
    /// it replaces ours like a rotated Salesforce one.
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The credential name of the refresh token in the token vault.
pub const REFRESH_TOKEN_NAME: &str = "refresh_token";

/// `POST {accounts}/oauth/v2/token` with `grant_type=refresh_token`. Remembers the latest
/// `api_domain` so the client sends API calls where the accounts server says the org lives.
pub struct RefreshTokenFetcher {
    http: HttpClient,
    url: Url,
    credentials: ZohoCredentials,
    /// The refresh token in use: the configured one until the vault holds a newer one.
    refresh: Arc<RotatingSecret>,
    api_domain: Mutex<Option<String>>,
    /// Where the answer's `api_domain` may point.
    api_hosts: VendorHosts,
}

impl std::fmt::Debug for RefreshTokenFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshTokenFetcher").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl RefreshTokenFetcher {
    /// `accounts_server`: e.g. [`DataCentre::accounts_server`], or a simulator's URL.
    pub fn new(http: HttpClient, accounts_server: &str, credentials: ZohoCredentials) -> Result<Self, DeliveryError> {
        let joined = format!("{}{TOKEN_PATH}", accounts_server.trim_end_matches('/'));
        let url = Url::parse(&joined).map_err(|err| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!(
                "the accounts server `{accounts_server}` is not a URL ({err}); e.g. https://accounts.zoho.com"
            ),
        })?;
        let api_hosts = VendorHosts::new(api_domains()).with_origin_of(&url);
        let refresh = Arc::new(RotatingSecret::new(
            "",
            REFRESH_TOKEN_NAME,
            credentials.refresh_token.clone(),
            KeeperSlot::default(),
        ));
        Ok(Self { http, url, credentials, refresh, api_domain: Mutex::new(None), api_hosts })
    }

    /// Keeps a refresh token Zoho replaces in the token vault of `slot`, as credential
    /// `refresh_token` of `connection`.
    pub fn with_token_vault(mut self, connection: &str, slot: KeeperSlot) -> Self {
        let configured = self.credentials.refresh_token.clone();
        self.refresh = Arc::new(RotatingSecret::new(connection, REFRESH_TOKEN_NAME, configured, slot));
        self
    }

    /// The `api_domain` of the last successful token answer.
    pub fn api_domain(&self) -> Option<String> {
        self.api_domain.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A vault step: a store failure is logged and the in-memory token used, a row that does not
/// open (DB0309) stops the grant as an auth error.
fn vault_step(outcome: Result<bool, VaultError>) -> Result<bool, DeliveryError> {
    match outcome {
        Ok(changed) => Ok(changed),
        Err(err @ VaultError::Undecryptable { .. }) => {
            Err(DeliveryError::Auth { vendor: VENDOR, detail: format!("{err}; see docs/errors/DB0309.md") })
        }
        Err(err) => {
            tracing::warn!(error = %err, "Reading the stored Zoho refresh token failed; using the one in memory.");
            Ok(false)
        }
    }
}

#[async_trait::async_trait]
impl TokenFetcher for RefreshTokenFetcher {
    async fn fetch(&self) -> Result<FetchedToken, DeliveryError> {
        vault_step(self.refresh.prepare().await.map(|()| false))?;
        match self.fetch_once().await {
            Err(err @ DeliveryError::Auth { .. }) if self.refresh.is_persistent() => {
                // Refused: another instance may have replaced the token meanwhile.
                if vault_step(self.refresh.reload().await)? {
                    tracing::info!("Zoho refused the refresh token; retrying once with the stored one.");
                    self.fetch_once().await
                } else {
                    Err(err)
                }
            }
            outcome => outcome,
        }
    }
}

impl RefreshTokenFetcher {
    async fn fetch_once(&self) -> Result<FetchedToken, DeliveryError> {
        let refresh = self.refresh.current();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.client_secret.expose_secret()),
            ("refresh_token", refresh.expose_secret()),
        ];
        let request = self.http.post(self.url.clone()).form(&form).header(http::header::ACCEPT, "application/json");
        let resp = self.http.send(request).await?;
        let status = resp.status().as_u16();
        let body = read_body_capped(resp, MAX_TOKEN_ANSWER_BYTES).await?;
        let answer = serde_json::from_slice::<TokenAnswer>(&body);
        // Errors come with HTTP 200 too: an `error` key refuses whatever the status. Zoho is not
        // known to send Retry-After here; the shared classification falls back to a minute.
        let has_error = answer.as_ref().is_ok_and(|a| a.error.is_some());
        if has_error || !(200..300).contains(&status) {
            return Err(token_error(&TOKEN_ENDPOINT, status, None, &body));
        }
        // An unreadable 2xx answer is transient (connector spec §3).
        let answer = answer.map_err(|e| DeliveryError::Server {
            vendor: VENDOR,
            status,
            detail: format!("the token endpoint answered something that is not a token answer ({e})"),
        })?;
        let Some(token) = answer.access_token.filter(|t| !t.is_empty()) else {
            return Err(DeliveryError::Server {
                vendor: VENDOR,
                status,
                detail: "the token answer has no access_token".into(),
            });
        };
        if let Some(domain) = answer.api_domain {
            self.api_hosts.check("the Zoho token answer's api_domain", &domain)?;
            *self.api_domain.lock().unwrap_or_else(PoisonError::into_inner) = Some(domain);
        }
        if let Some(rotated) = answer.refresh_token.filter(|t| !t.is_empty()) {
            // Saved before the access token is handed out.
            if let Err(err) = self.refresh.rotated(SecretString::from(rotated)).await {
                tracing::error!(error = %err, "Zoho replaced the refresh token but saving it failed; it is kept in memory and saved at the next refresh.");
            } else {
                tracing::info!("Zoho replaced the refresh token; using the new one from now on.");
            }
        }
        let lifetime = match answer.expires_in {
            Some(s) if s > 0 => Duration::from_secs(s.unsigned_abs()),
            _ => DEFAULT_TOKEN_LIFETIME,
        };
        Ok(FetchedToken { value: token.into(), lifetime })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_centres_have_their_own_hosts() {
        assert_eq!(DataCentre::parse("com.cn"), Some(DataCentre::Cn));
        assert_eq!(DataCentre::parse(".com.au"), Some(DataCentre::Au));
        assert_eq!(DataCentre::parse("mars"), None);
        assert_eq!(DataCentre::Cn.accounts_server(), "https://accounts.zoho.com.cn");
        assert_eq!(DataCentre::Ca.accounts_server(), "https://accounts.zohocloud.ca");
        assert_eq!(DataCentre::Cn.api_domain(), "https://www.zohoapis.com.cn");
        let hosts: std::collections::BTreeSet<_> = DataCentre::ALL.iter().map(|d| d.accounts_server()).collect();
        assert_eq!(hosts.len(), DataCentre::ALL.len());
    }

    #[test]
    fn api_domains_are_every_data_centre_and_nothing_else() {
        let hosts = connect::http::VendorHosts::new(api_domains());
        for dc in DataCentre::ALL {
            assert!(hosts.check("api_domain", dc.api_domain()).is_ok(), "{dc:?}");
        }
        for ok in ["https://www.zohoapis.com.au", "https://crm.zohoapis.eu", "https://www.zohoapis.sa"] {
            assert!(hosts.check("api_domain", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://www.zohoapis.com",
            "https://www.zohoapis.com.evil.example",
            "https://www.zohoapis.co",
            "https://zohoapis.com.br.example",
            "https://www.notzohoapis.com",
            "https://accounts.zoho.com",
        ] {
            assert!(hosts.check("api_domain", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_scheme_is_zoho_oauthtoken() {
        assert_eq!(authorization_value(&"1000.abc".into()), "Zoho-oauthtoken 1000.abc");
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = ZohoCredentials {
            client_id: "1000.ID".into(),
            client_secret: "topsecret".into(),
            refresh_token: "1000.refresh".into(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("topsecret") && !shown.contains("1000.refresh"), "{shown}");
    }
}
