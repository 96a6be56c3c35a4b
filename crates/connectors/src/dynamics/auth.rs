//! Microsoft identity platform client-credentials tokens (reference C1).
//!
//! One [`AadTokenFetcher`] per resource: a Dataverse token (scope `https://{org}…/.default`) is
//! not valid for Business Central (scope `https://api.businesscentral.dynamics.com/.default`) and
//! vice versa, so each resource gets its own `TokenCache`. Tokens are replaced 300 s before
//! `expires_in` runs out (the cache caps that margin at half the lifetime).

use super::errors::TOKEN_ENDPOINT;
use super::VENDOR;
use connect::http::HttpClient;
use connect::oauth::request_token;
use connect::token::{FetchedToken, TokenCache, TokenFetcher};
use connect::{Clock, DeliveryError};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// The public-cloud authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Refresh this long before the token expires (reference C1).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Form encoding: everything but RFC 3986 unreserved characters, as the fixture's request shows
/// (`fake~secret` stays, `:` and `/` in the scope are escaped).
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The token endpoint of a tenant: `{authority}/{tenant}/oauth2/v2.0/token`.
pub fn token_url(authority: &str, tenant_id: &str) -> Result<Url, DeliveryError> {
    let text = format!("{}/{tenant_id}/oauth2/v2.0/token", authority.trim_end_matches('/'));
    Url::parse(&text).map_err(|err| DeliveryError::Rejected {
        vendor: VENDOR,
        detail: format!("the token endpoint `{text}` is not a URL ({err}); check the authority and tenant id"),
    })
}

/// `<resource>/.default`: all application permissions granted to the app on that resource.
pub fn scope_for(resource: &str) -> String {
    format!("{}/.default", resource.trim_end_matches('/'))
}

/// The exact form body, in the order of the reference exchange.
pub fn token_form_body(client_id: &str, client_secret: &str, scope: &str) -> String {
    let enc = |s: &str| utf8_percent_encode(s, FORM).to_string();
    format!(
        "client_id={}&client_secret={}&grant_type=client_credentials&scope={}",
        enc(client_id),
        enc(client_secret),
        enc(scope)
    )
}

/// A successful token answer; `expires_in` is a JSON number in seconds.
/// Not `Debug`: it holds the access token in the clear until it is wrapped.
#[derive(Deserialize)]
pub struct TokenAnswer {
    pub token_type: String,
    pub expires_in: u64,
    #[serde(default)]
    pub ext_expires_in: Option<u64>,
    pub access_token: String,
}

/// The app registration's credentials.
pub struct AppCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Fetches tokens for ONE resource.
pub struct AadTokenFetcher {
    http: HttpClient,
    token_url: Url,
    client_id: String,
    client_secret: SecretString,
    scope: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for AadTokenFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AadTokenFetcher")
            .field("token_url", &self.token_url.as_str())
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl AadTokenFetcher {
    /// `resource` is the Dataverse org URL (`https://{org}.crm5.dynamics.com`) or [`super::BC_RESOURCE`].
    pub fn new(
        http: HttpClient,
        authority: &str,
        credentials: &AppCredentials,
        resource: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeliveryError> {
        Ok(Self {
            http,
            token_url: token_url(authority, &credentials.tenant_id)?,
            client_id: credentials.client_id.clone(),
            client_secret: credentials.client_secret.clone(),
            scope: scope_for(resource),
            clock,
        })
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }
}

#[async_trait::async_trait]
impl TokenFetcher for AadTokenFetcher {
    async fn fetch(&self) -> Result<FetchedToken, DeliveryError> {
        let body = token_form_body(&self.client_id, self.client_secret.expose_secret(), &self.scope);
        let request = self
            .http
            .post(self.token_url.clone())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(body);
        let body = request_token(&self.http, request, &TOKEN_ENDPOINT, self.clock.now()).await?;
        // Only a 200 answer gets here.
        let status = 200;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|err| DeliveryError::Server {
            vendor: VENDOR,
            status,
            detail: format!("token answer lacks access_token/expires_in ({err})"),
        })?;
        if !answer.token_type.eq_ignore_ascii_case("bearer") {
            return Err(DeliveryError::Auth {
                vendor: VENDOR,
                detail: format!("token type `{}` is not Bearer", answer.token_type),
            });
        }
        tracing::debug!(scope = %self.scope, expires_in = answer.expires_in, "Fetched a Microsoft identity token.");
        Ok(FetchedToken {
            value: SecretString::from(answer.access_token),
            lifetime: Duration::from_secs(answer.expires_in),
        })
    }
}

/// A token cache for one resource with the reference's 300 s refresh margin.
pub fn token_cache(fetcher: AadTokenFetcher, clock: Arc<dyn Clock>) -> Arc<TokenCache> {
    Arc::new(TokenCache::new(Arc::new(fetcher), REFRESH_MARGIN, clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_body_matches_the_reference_exchange_byte_for_byte() {
        let exchange = fixtures::read_fixture("dynamics/dataverse_exchanges.http");
        let want = exchange.lines().find(|l| l.starts_with("client_id=")).unwrap();
        let body = token_form_body(
            "00000000-1111-2222-3333-444444444444",
            "fake~secret",
            &scope_for("https://dingbridge-demo.crm5.dynamics.com/"),
        );
        assert_eq!(body, want);
        let url = token_url(DEFAULT_AUTHORITY, "72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        assert!(exchange.contains(&format!("POST {} HTTP/1.1", url.path())));
        assert_eq!(url.host_str(), Some("login.microsoftonline.com"));
    }

    #[test]
    fn token_answer_fixture_reads_with_numeric_expiry() {
        let answer: TokenAnswer =
            serde_json::from_value(fixtures::read_json("dynamics/aad_client_credentials_token_response.json")).unwrap();
        assert_eq!(answer.token_type, "Bearer");
        assert_eq!(answer.expires_in, 3599);
        assert_eq!(answer.ext_expires_in, Some(3599));
        assert!(answer.access_token.starts_with("eyJ0eXAi"));
        assert_eq!(scope_for(super::super::BC_RESOURCE), "https://api.businesscentral.dynamics.com/.default");
    }
}
