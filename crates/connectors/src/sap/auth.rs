//! Authentication and the CSRF-token protocol (reference A1, A5).
//!
//! SAP on-prem takes HTTP Basic for a technical user; BTP/S/4HANA Cloud takes OAuth bearer tokens
//! (cached through [`TokenCache`]). Every modifying request additionally needs a CSRF token that
//! is bound to the session cookies it was issued with, so [`CsrfSession`] keeps both together.

use base64::Engine as _;
use connect::token::TokenCache;
use connect::DeliveryError;
use http::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;

/// How requests to one SAP system authenticate.
#[derive(Clone)]
pub enum SapAuth {
    /// HTTP Basic with a technical user (what the published A2X API specs declare).
    Basic { user: String, password: SecretString },
    /// OAuth 2.0 bearer tokens (XSUAA on BTP / S/4HANA Cloud) from a shared cache.
    Bearer(Arc<TokenCache>),
}

impl std::fmt::Debug for SapAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { user, .. } => f.debug_struct("Basic").field("user", user).finish_non_exhaustive(),
            Self::Bearer(_) => f.write_str("Bearer"),
        }
    }
}

impl SapAuth {
    /// The `Authorization` header value (a secret: never log it).
    pub async fn header(&self) -> Result<SecretString, DeliveryError> {
        match self {
            Self::Basic { user, password } => Ok(SecretString::from(basic_header(user, password.expose_secret()))),
            Self::Bearer(cache) => {
                let token = cache.get().await?;
                Ok(SecretString::from(format!("Bearer {}", token.expose_secret())))
            }
        }
    }

    /// After a 401: drops a bearer token that was just refused so the next call fetches a new one.
    /// Returns true when a retry can help (Basic credentials do not change by retrying).
    pub async fn invalidate(&self, used: &SecretString) -> bool {
        match self {
            Self::Basic { .. } => false,
            Self::Bearer(cache) => match used.expose_secret().strip_prefix("Bearer ") {
                Some(token) => {
                    cache.invalidate(&SecretString::from(token.to_owned())).await;
                    true
                }
                None => false,
            },
        }
    }
}

/// `Basic base64(user:password)` (RFC 7617, UTF-8).
pub fn basic_header(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Session cookies of one SAP system/user, in the order the server set them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
}

impl CookieJar {
    /// Stores every `Set-Cookie` of a response; only `name=value` is kept (path/secure/HttpOnly
    /// apply to one host, and the jar belongs to one system). A later cookie replaces an earlier
    /// one of the same name; an empty value deletes it.
    pub fn store(&mut self, headers: &HeaderMap) {
        for value in headers.get_all(http::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let pair = text.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else { continue };
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() {
                continue;
            }
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    /// The `Cookie` header value, `None` when the jar is empty.
    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        Some(self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; "))
    }

    pub fn clear(&mut self) {
        self.cookies.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }
}

/// A CSRF token and the session cookies it is bound to.
#[derive(Debug, Default)]
pub struct CsrfSession {
    token: Option<SecretString>,
    pub jar: CookieJar,
}

impl CsrfSession {
    /// The token, when one was fetched and not yet refused.
    pub fn token(&self) -> Option<&SecretString> {
        self.token.as_ref()
    }

    /// Takes the token and cookies from a `x-csrf-token: Fetch` answer. Returns false when the
    /// answer carried no usable token (SAP answers `Required` or nothing when CSRF is off).
    pub fn accept_fetch(&mut self, headers: &HeaderMap) -> bool {
        self.jar.store(headers);
        let token = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("required") && !t.eq_ignore_ascii_case("fetch"));
        match token {
            Some(t) => {
                self.token = Some(SecretString::from(t.to_owned()));
                true
            }
            None => false,
        }
    }

    /// Forgets token and cookies after a CSRF rejection: the token is bound to the session, so a
    /// fresh fetch must start a fresh session.
    pub fn invalidate(&mut self) {
        self.token = None;
        self.jar.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sap::errors::tests_support::http_response;

    #[test]
    fn basic_header_matches_the_fixture_vector() {
        // csrf_fetch_exchange.http: Authorization: Basic RElOR0JSSURHRTpzZWNyZXQ=
        assert_eq!(basic_header("DINGBRIDGE", "secret"), "Basic RElOR0JSSURHRTpzZWNyZXQ=");
        let fixture = fixtures::read_fixture("sap/csrf_fetch_exchange.http");
        assert!(fixture.contains(&format!("Authorization: {}", basic_header("DINGBRIDGE", "secret"))));
    }

    #[test]
    fn fetch_answer_yields_token_and_the_cookie_header_of_the_fixture() {
        let fixture = fixtures::read_fixture("sap/csrf_fetch_exchange.http");
        let (status, headers, _) = http_response(&fixture);
        assert_eq!(status, 200);
        let mut session = CsrfSession::default();
        assert!(session.accept_fetch(&headers));
        assert_eq!(session.token().unwrap().expose_secret(), "7ZrCj0bsV0Vq7Lq2mQ0qTg==");
        let cookie = session.jar.header().unwrap();
        // The PATCH in the same fixture sends exactly this Cookie header.
        assert!(fixture.contains(&format!("Cookie: {cookie}\n")), "{cookie}");
        assert_eq!(
            cookie,
            "sap-usercontext=sap-client=100; SAP_SESSIONID_S4H_100=Wq3m0yY1u9mJk9d8Vt3P8aQh0wUQ1Ru_EeyWJQAWPj8%3d"
        );
        session.invalidate();
        assert!(session.token().is_none() && session.jar.is_empty());
    }

    #[test]
    fn required_is_not_a_token_and_cookies_replace_by_name() {
        let mut h = HeaderMap::new();
        h.insert("x-csrf-token", http::HeaderValue::from_static("Required"));
        h.append(http::header::SET_COOKIE, http::HeaderValue::from_static("a=1; path=/"));
        h.append(http::header::SET_COOKIE, http::HeaderValue::from_static("b=2"));
        let mut s = CsrfSession::default();
        assert!(!s.accept_fetch(&h));
        let mut h2 = HeaderMap::new();
        h2.append(http::header::SET_COOKIE, http::HeaderValue::from_static("a=3; HttpOnly"));
        s.jar.store(&h2);
        assert_eq!(s.jar.header().as_deref(), Some("b=2; a=3"));
    }

    #[tokio::test]
    async fn basic_auth_never_asks_for_a_retry() {
        let auth = SapAuth::Basic { user: "U".into(), password: SecretString::from("s3cret".to_owned()) };
        let header = auth.header().await.unwrap();
        assert_eq!(header.expose_secret(), &basic_header("U", "s3cret"));
        assert!(!auth.invalidate(&header).await);
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
