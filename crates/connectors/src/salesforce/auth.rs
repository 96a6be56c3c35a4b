//! Salesforce OAuth token fetchers (reference A1): client credentials, JWT bearer (RS256) and
//! refresh token, as one [`TokenFetcher`] for `connect::token::TokenCache`.
//!
//! Salesforce answers carry no `expires_in`, so the cache gets a configured session lifetime and
//! the client relies on `401 INVALID_SESSION_ID` → invalidate → one refetch → one replay.
//! Every token answer also names the `instance_url` for data calls; the fetcher stores it in a
//! shared [`InstanceUrl`] because orgs can move between pods. That URL is where the access token
//! goes next, so it must be https on Salesforce's own domains ([`SALESFORCE_DOMAINS`]) or the
//! configured login host itself (the simulator under `--sim-endpoints`); anything else is refused
//! (R22) and never called.

use super::errors::{token_endpoint, token_request};
use super::VENDOR;
use connect::http::{HttpClient, VendorHosts};
use connect::oauth::request_token;
use connect::token::{FetchedToken, TokenFetcher};
use connect::vault::{KeeperSlot, RotatingSecret, VaultError};
use connect::{Clock, DeliveryError};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use url::Url;

/// The credential name of a rotating refresh token in the token vault.
pub const REFRESH_TOKEN_NAME: &str = "refresh_token";
/// Path of the token endpoint on every login host.
pub const TOKEN_PATH: &str = "/services/oauth2/token";
/// Grant type of the JWT bearer flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Salesforce accepts a JWT `exp` at most about three minutes ahead.
pub const JWT_LIFETIME_SECS: i64 = 180;
/// Common org session timeout; configurable because each org sets its own (15 min – 24 h).
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// Where Salesforce orgs live: `*.my.salesforce.com` (My Domain), pod hosts `*.salesforce.com`,
/// Lightning and Sites `*.force.com`.
pub const SALESFORCE_DOMAINS: [&str; 2] = ["salesforce.com", "force.com"];

/// The data-API base URL learned from the last token answer, shared with the client.
#[derive(Debug, Default)]
pub struct InstanceUrl(Mutex<Option<String>>);

impl InstanceUrl {
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set(&self, url: &str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(url.trim_end_matches('/').to_owned());
    }
}

/// The claims of a JWT bearer assertion, exactly the four Salesforce requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtClaims {
    /// Connected app consumer key.
    pub iss: String,
    /// Username of the integration user.
    pub sub: String,
    /// `https://login.salesforce.com` or `https://test.salesforce.com`, never the My Domain URL.
    pub aud: String,
    /// Seconds since the epoch, now + 3 min.
    pub exp: i64,
}

/// How dingbridge proves who it is.
pub enum Grant {
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
    },
    JwtBearer {
        client_id: String,
        username: String,
        audience: String,
        key: jsonwebtoken::EncodingKey,
    },
    /// The refresh token is replaced when the org rotates refresh tokens; with a token vault
    /// the new one is saved (sealed) before its access token is used, and shared by every
    /// instance.
    RefreshToken {
        client_id: String,
        client_secret: Option<SecretString>,
        refresh_token: Arc<RotatingSecret>,
    },
}

impl Grant {
    /// A JWT bearer grant from a PEM private key (PKCS#1 or PKCS#8).
    pub fn jwt_bearer(
        client_id: &str,
        username: &str,
        audience: &str,
        private_key_pem: &[u8],
    ) -> Result<Grant, DeliveryError> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem).map_err(|err| DeliveryError::Auth {
            vendor: VENDOR,
            detail: format!("the JWT signing key is not an RSA private key in PEM form ({err})"),
        })?;
        Ok(Grant::JwtBearer {
            client_id: client_id.to_owned(),
            username: username.to_owned(),
            audience: audience.to_owned(),
            key,
        })
    }

    /// A refresh-token grant (`client_secret` only if the connected app requires it) whose
    /// rotations stay in memory.
    pub fn refresh_token(client_id: &str, client_secret: Option<SecretString>, refresh_token: SecretString) -> Grant {
        let memory_only = RotatingSecret::new("", REFRESH_TOKEN_NAME, refresh_token, KeeperSlot::default());
        Grant::rotating_refresh_token(client_id, client_secret, Arc::new(memory_only))
    }

    /// A refresh-token grant whose rotations go through `refresh_token`'s vault.
    pub fn rotating_refresh_token(
        client_id: &str,
        client_secret: Option<SecretString>,
        refresh_token: Arc<RotatingSecret>,
    ) -> Grant {
        Grant::RefreshToken { client_id: client_id.to_owned(), client_secret, refresh_token }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Grant::ClientCredentials { .. } => "client_credentials",
            Grant::JwtBearer { .. } => "jwt_bearer",
            Grant::RefreshToken { .. } => "refresh_token",
        }
    }
}

// Keys and secrets are never shown.
impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant").field("kind", &self.name()).finish_non_exhaustive()
    }
}

/// Signs an RS256 assertion with `exp` = now + 3 minutes.
pub fn sign_assertion(
    client_id: &str,
    username: &str,
    audience: &str,
    key: &jsonwebtoken::EncodingKey,
    now_secs: i64,
) -> Result<String, DeliveryError> {
    let claims = JwtClaims {
        iss: client_id.to_owned(),
        sub: username.to_owned(),
        aud: audience.to_owned(),
        exp: now_secs + JWT_LIFETIME_SECS,
    };
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, key)
        .map_err(|err| DeliveryError::Auth { vendor: VENDOR, detail: format!("cannot sign the JWT assertion ({err})") })
}

/// A successful token answer (fields dingbridge uses).
/// Not `Debug`: it holds the access token in the clear until it is wrapped.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub instance_url: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub issued_at: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// Fetches Salesforce access tokens with one [`Grant`].
pub struct SalesforceTokenFetcher {
    http: HttpClient,
    token_url: Url,
    grant: Grant,
    session_lifetime: Duration,
    instance: Arc<InstanceUrl>,
    /// Where the answer's `instance_url` may point.
    instance_hosts: VendorHosts,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SalesforceTokenFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceTokenFetcher")
            .field("token_url", &self.token_url.as_str())
            .field("grant", &self.grant)
            .finish()
    }
}

impl SalesforceTokenFetcher {
    /// `login_base` is `https://login.salesforce.com`, `https://test.salesforce.com` or the My
    /// Domain URL (required for client credentials).
    pub fn new(
        http: HttpClient,
        login_base: &str,
        grant: Grant,
        session_lifetime: Duration,
        instance: Arc<InstanceUrl>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeliveryError> {
        let token_url = Url::parse(&format!("{}{TOKEN_PATH}", login_base.trim_end_matches('/'))).map_err(|err| {
            DeliveryError::Rejected {
                vendor: VENDOR,
                detail: format!("the Salesforce login URL `{login_base}` is not a URL ({err}); configure e.g. https://login.salesforce.com"),
            }
        })?;
        let instance_hosts = VendorHosts::new(SALESFORCE_DOMAINS).with_origin_of(&token_url);
        Ok(Self { http, token_url, grant, session_lifetime, instance, instance_hosts, clock })
    }

    fn form(&self) -> Result<Vec<(&'static str, String)>, DeliveryError> {
        Ok(match &self.grant {
            Grant::ClientCredentials { client_id, client_secret } => vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.expose_secret().to_owned()),
            ],
            Grant::JwtBearer { client_id, username, audience, key } => {
                let assertion = sign_assertion(client_id, username, audience, key, self.clock.now().as_second())?;
                vec![("grant_type", JWT_BEARER_GRANT.to_owned()), ("assertion", assertion)]
            }
            Grant::RefreshToken { client_id, client_secret, refresh_token } => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", refresh_token.current().expose_secret().to_owned()),
                    ("client_id", client_id.clone()),
                ];
                if let Some(secret) = client_secret {
                    form.push(("client_secret", secret.expose_secret().to_owned()));
                }
                form
            }
        })
    }
}

/// A vault failure as a delivery error: a row that does not open is the operator's to fix (the
/// key), like wrong credentials.
fn vault_error(err: VaultError) -> DeliveryError {
    DeliveryError::Auth { vendor: VENDOR, detail: format!("{err}; see docs/errors/DB0309.md") }
}

/// Runs a vault step: a store failure is logged and the in-memory value used (today's
/// behaviour), a row that does not open stops the grant.
fn vault_step(outcome: Result<bool, VaultError>) -> Result<bool, DeliveryError> {
    match outcome {
        Ok(changed) => Ok(changed),
        Err(err @ VaultError::Undecryptable { .. }) => Err(vault_error(err)),
        Err(err) => {
            tracing::warn!(error = %err, "Reading the stored Salesforce refresh token failed; using the one in memory.");
            Ok(false)
        }
    }
}

#[async_trait::async_trait]
impl TokenFetcher for SalesforceTokenFetcher {
    async fn fetch(&self) -> Result<FetchedToken, DeliveryError> {
        let Grant::RefreshToken { refresh_token, .. } = &self.grant else { return self.fetch_once().await };
        // At start (first use) the stored token wins over the configured one: an earlier run or
        // another instance may have rotated it.
        vault_step(refresh_token.prepare().await.map(|()| false))?;
        match self.fetch_once().await {
            Err(err @ DeliveryError::Auth { .. }) if refresh_token.is_persistent() => {
                // Refused (invalid_grant): another instance may have rotated the token since we
                // read it. Read it again and retry once if it changed.
                if vault_step(refresh_token.reload().await)? {
                    tracing::info!("Salesforce refused the refresh token; another instance had rotated it, retrying once with the stored one.");
                    self.fetch_once().await
                } else {
                    Err(err)
                }
            }
            outcome => outcome,
        }
    }
}

impl SalesforceTokenFetcher {
    async fn fetch_once(&self) -> Result<FetchedToken, DeliveryError> {
        let form = self.form()?;
        let request =
            self.http.post(self.token_url.clone()).header(http::header::ACCEPT, "application/json").form(&form);
        let what = token_request(self.grant.name());
        let body = request_token(&self.http, request, &token_endpoint(&what), self.clock.now()).await?;
        // Only a 200 answer gets here.
        let status = 200;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|err| DeliveryError::Server {
            vendor: VENDOR,
            status,
            detail: format!("{} token answer lacks access_token/instance_url ({err})", self.grant.name()),
        })?;
        self.instance_hosts.check("the Salesforce token answer's instance_url", &answer.instance_url)?;
        self.instance.set(&answer.instance_url);
        if let (Grant::RefreshToken { refresh_token, .. }, Some(rotated)) = (&self.grant, answer.refresh_token) {
            // Saved before the access token is handed out: the one we sent is dead at Salesforce.
            match refresh_token.rotated(SecretString::from(rotated)).await {
                Ok(()) => tracing::info!(
                    persisted = refresh_token.is_persistent(),
                    "Salesforce rotated the refresh token; using the new one from now on."
                ),
                Err(err) => tracing::error!(
                    error = %err,
                    "Salesforce rotated the refresh token but saving it failed; it is kept in memory and saved at the next refresh."
                ),
            }
        }
        Ok(FetchedToken { value: SecretString::from(answer.access_token), lifetime: self.session_lifetime })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_fixtures_parse_and_have_no_expiry() {
        for name in ["token_client_credentials.json", "token_jwt_bearer.json", "token_refresh_token_grant.json"] {
            let text = fixtures::read_fixture(format!("salesforce/oauth/{name}"));
            let answer: TokenAnswer = serde_json::from_str(&text).unwrap();
            assert_eq!(answer.instance_url, "https://hktrading.my.salesforce.com", "{name}");
            assert!(!text.contains("expires_in"), "{name}");
        }
    }

    #[test]
    fn assertion_carries_exactly_the_reference_claims() {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(super::super::sim::TEST_PRIVATE_KEY_PEM.as_bytes()).unwrap();
        let jwt = sign_assertion(
            "3MVG9key",
            "integration@hktrading.example",
            "https://login.salesforce.com",
            &key,
            1_755_158_400,
        )
        .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
        let decoding =
            jsonwebtoken::DecodingKey::from_rsa_pem(super::super::sim::TEST_PUBLIC_KEY_PEM.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_exp = false;
        validation.set_audience(&["https://login.salesforce.com"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &decoding, &validation).unwrap().claims;
        assert_eq!(
            claims,
            serde_json::json!({"iss":"3MVG9key","sub":"integration@hktrading.example","aud":"https://login.salesforce.com","exp":1_755_158_580})
        );
    }
}
