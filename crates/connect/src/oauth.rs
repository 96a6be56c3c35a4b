//! OAuth 2.0 token-endpoint errors (RFC 6749 §5.2), classified once for every vendor.
//!
//! A token endpoint that refuses answers `{"error": "...", "error_description": "..."}` (Microsoft
//! adds `error_codes`, trace ids and more; Zoho may even answer HTTP 200). Every connector that
//! fetches tokens turns that answer into a [`DeliveryError`] with [`token_error`], passing a
//! [`TokenEndpoint`] that names the vendor and carries its extras (hints, throttling codes).
//!
//! The one classification:
//!
//! | answer | error | why |
//! | --- | --- | --- |
//! | 429, or a vendor throttling code (Zoho `Access Denied`) | `Throttled` (`Retry-After`, else the vendor's fallback) | the endpoint asks us to slow down |
//! | 503 with `Retry-After` | `Throttled` (that wait) | RFC 9110 §15.6.4: the server says when it is back |
//! | other 5xx (503 without `Retry-After` too) | `Server` (retry on the schedule) | transient on the vendor's side |
//! | `invalid_client`, `invalid_grant`, `unauthorized_client` | `Auth` | the credentials must be fixed |
//! | `invalid_request`, `unsupported_grant_type`, `invalid_scope` | `Auth` | see below |
//! | any other code, or none (empty or non-JSON body) | `Auth` | see below |
//!
//! Why `invalid_request`, `unsupported_grant_type` and `invalid_scope` are `Auth` and not
//! `Permanent`: they say that the configured token URL, grant or scope is wrong, which only the
//! operator can fix, exactly like a wrong client secret. The token request carries nothing from
//! the delivery being attempted, so the job itself is fine and must not look bad: `Auth` labels the
//! failure `auth` in metrics and in the dead-letter view and names the settings to check, and its
//! one retry lets a job through when the operator corrects the settings in between (or the
//! endpoint's answer was a blip), where `Permanent` would dead-letter at once as `rejected`, as if
//! the payload were at fault.
//!
//! Why unknown codes (and no code at all) are `Auth`: RFC 6749 lets providers add their own codes
//! (Salesforce `invalid_client_id`, Zoho `invalid_code`), and whatever a token endpoint refuses
//! with a 4xx still means "no token with these settings"; nothing about one delivery can change
//! that, so the same reasoning applies.
//!
//! The error text keeps the vendor's code and the first line of its description only (Microsoft
//! appends trace and correlation ids and a timestamp; a non-JSON body, such as a proxy's HTML
//! page, is cut to a short first line). The request's form (client secret, assertion, refresh
//! token) is never an input here, so it cannot leak into the text.

use crate::error::DeliveryError;
use crate::http::{read_body_capped, HttpClient};
use crate::retry_after::parse_retry_after;
use bytes::Bytes;
use jiff::Timestamp;
use serde::Deserialize;
use std::time::Duration;

/// Longest description kept in the error text (vendor text in errors must be capped).
pub const MAX_DESCRIPTION_CHARS: usize = 200;

/// Largest token answer read: a token answer is a few hundred bytes, so anything far larger is
/// not one.
pub const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;

/// One vendor's token endpoint, as named in errors, with its vendor-specific extras.
#[derive(Debug, Clone, Copy)]
pub struct TokenEndpoint<'a> {
    /// Vendor label in errors and logs (`"netsuite"`).
    pub vendor: &'static str,
    /// The request, as the error text names it (`"client credentials token request"`).
    pub request: &'a str,
    /// What the operator should check when the endpoint refuses.
    pub auth_hint: &'a str,
    /// Wait when throttled without a usable `Retry-After`.
    pub throttle_fallback: Duration,
    /// Vendor error codes that mean "throttled" whatever the status (Zoho's `Access Denied`).
    pub throttle_codes: &'a [&'a str],
    /// Vendor hints for particular codes; they replace `auth_hint` (and are added to a throttle).
    pub code_hints: &'a [(&'a str, &'a str)],
}

impl<'a> TokenEndpoint<'a> {
    /// An endpoint without vendor extras beyond its name, request and hint.
    pub const fn new(vendor: &'static str, request: &'a str, auth_hint: &'a str, throttle_fallback: Duration) -> Self {
        Self { vendor, request, auth_hint, throttle_fallback, throttle_codes: &[], code_hints: &[] }
    }

    fn hint_for(&self, code: &str) -> Option<&'a str> {
        self.code_hints.iter().find(|(c, _)| *c == code).map(|(_, hint)| *hint)
    }
}

/// The RFC 6749 §5.2 error body, reduced to what the error text may keep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenErrorBody {
    /// The `error` code; empty when the body named none or was not JSON.
    pub error: String,
    /// First line of `error_description` (or of a non-JSON body), capped.
    pub description: String,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// First line of `text`, trimmed and capped at [`MAX_DESCRIPTION_CHARS`].
fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .chars()
        .take(MAX_DESCRIPTION_CHARS)
        .collect()
}

/// Reads a token error body; a body that is not the JSON shape keeps a short first line.
pub fn parse_token_error(body: &[u8]) -> TokenErrorBody {
    match serde_json::from_slice::<Wire>(body) {
        Ok(wire) => TokenErrorBody {
            error: wire.error.unwrap_or_default(),
            description: first_line(wire.error_description.as_deref().unwrap_or_default()),
        },
        Err(_) => TokenErrorBody { error: String::new(), description: first_line(&String::from_utf8_lossy(body)) },
    }
}

/// The error for a refused token request; the classification is the table in the module doc.
/// `retry_after` is the parsed `Retry-After` header, if one came.
pub fn token_error(
    endpoint: &TokenEndpoint<'_>,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> DeliveryError {
    let parsed = parse_token_error(body);
    let said = [parsed.error.as_str(), parsed.description.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let said = if said.is_empty() { "no error code".to_owned() } else { said };
    let detail = format!("{}: HTTP {status}: {said}", endpoint.request);
    let vendor = endpoint.vendor;
    let code_hint = endpoint.hint_for(&parsed.error);
    if status == 429 || endpoint.throttle_codes.contains(&parsed.error.as_str()) {
        let detail = match code_hint {
            Some(hint) => format!("{detail}; {hint}"),
            None => detail,
        };
        return DeliveryError::Throttled {
            vendor,
            detail,
            retry_after: retry_after.unwrap_or(endpoint.throttle_fallback),
        };
    }
    if let (503, Some(wait)) = (status, retry_after) {
        return DeliveryError::Throttled { vendor, detail, retry_after: wait };
    }
    if status >= 500 {
        return DeliveryError::Server { vendor, status, detail };
    }
    DeliveryError::Auth { vendor, detail: format!("{detail}; {}", code_hint.unwrap_or(endpoint.auth_hint)) }
}

/// Sends a token request through the shared client. The body of a 200 answer comes back; any
/// other answer is the classified [`token_error`], with its `Retry-After` read against `now`.
pub async fn request_token(
    http: &HttpClient,
    request: reqwest::RequestBuilder,
    endpoint: &TokenEndpoint<'_>,
    now: Timestamp,
) -> Result<Bytes, DeliveryError> {
    let resp = http.send(request).await?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now));
    let body = read_body_capped(resp, MAX_TOKEN_ANSWER_BYTES).await?;
    if status != 200 {
        return Err(token_error(endpoint, status, retry_after, &body));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Disposition;

    const FALLBACK: Duration = Duration::from_secs(5);
    const ENDPOINT: TokenEndpoint<'static> =
        TokenEndpoint::new("acme", "client credentials token request", "check the client id and secret", FALLBACK);

    fn disposition(status: u16, retry_after: Option<u64>, body: &str) -> Disposition {
        token_error(&ENDPOINT, status, retry_after.map(Duration::from_secs), body.as_bytes()).disposition()
    }

    #[test]
    fn the_classification_table() {
        let wait = |s| Disposition::RetryAfter(Duration::from_secs(s));
        assert_eq!(disposition(429, Some(9), r#"{"error":"slow_down"}"#), wait(9));
        assert_eq!(disposition(429, None, ""), Disposition::RetryAfter(FALLBACK));
        assert_eq!(disposition(503, Some(30), "<html>down</html>"), wait(30));
        assert_eq!(disposition(503, None, ""), Disposition::Retry);
        assert_eq!(disposition(500, None, r#"{"error":"server_error"}"#), Disposition::Retry);
        assert_eq!(disposition(502, None, "bad gateway"), Disposition::Retry);
        for code in [
            "invalid_client",
            "invalid_grant",
            "unauthorized_client",
            "invalid_request",
            "unsupported_grant_type",
            "invalid_scope",
            "invalid_client_id",
            "something_new",
        ] {
            let body = format!(r#"{{"error":"{code}","error_description":"d"}}"#);
            assert_eq!(disposition(400, None, &body), Disposition::Auth, "{code}");
            assert_eq!(disposition(401, None, &body), Disposition::Auth, "{code}");
        }
        assert_eq!(disposition(400, None, ""), Disposition::Auth);
        assert_eq!(disposition(404, None, "<html>Not Found</html>"), Disposition::Auth);
    }

    #[test]
    fn the_text_keeps_the_code_and_the_first_line_only() {
        let body = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret.\r\nTrace ID: 1\r\nCorrelation ID: 2"}"#;
        let text = token_error(&ENDPOINT, 401, None, body.as_bytes()).to_string();
        assert!(text.contains("invalid_client: AADSTS7000215: Invalid client secret."), "{text}");
        assert!(text.contains("check the client id and secret"), "{text}");
        assert!(!text.contains("Trace ID"), "{text}");
        let html = format!("<html>\n{}\n</html>", "x".repeat(500));
        let text = token_error(&ENDPOINT, 502, None, html.as_bytes()).to_string();
        assert!(text.ends_with("HTTP 502: <html>"), "{text}");
        let long = "y".repeat(500);
        let parsed = parse_token_error(long.as_bytes());
        assert_eq!(parsed.description.len(), MAX_DESCRIPTION_CHARS);
        assert!(token_error(&ENDPOINT, 400, None, b"").to_string().contains("HTTP 400: no error code"));
    }

    #[test]
    fn vendor_extras_add_throttle_codes_and_hints() {
        let endpoint = TokenEndpoint {
            throttle_codes: &["Access Denied"],
            code_hints: &[("Access Denied", "at most 10 refreshes per 10 minutes"), ("invalid_code", "re-consent")],
            ..ENDPOINT
        };
        let throttled = token_error(&endpoint, 400, None, br#"{"error":"Access Denied"}"#);
        assert_eq!(throttled.disposition(), Disposition::RetryAfter(FALLBACK));
        assert!(throttled.to_string().contains("at most 10 refreshes"), "{throttled}");
        let revoked = token_error(&endpoint, 200, None, br#"{"error":"invalid_code"}"#);
        assert_eq!(revoked.disposition(), Disposition::Auth);
        assert!(revoked.to_string().contains("invalid_code; re-consent"), "{revoked}");
    }
}
