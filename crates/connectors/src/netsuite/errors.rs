//! NetSuite error bodies and the ONE table that decides what each error means (reference B6,
//! B7). REST answers `{"type","title","status","o:errorDetails":[{"detail","o:errorCode", …}]}`;
//! branch on `status` and `o:errorCode`, never on `type` (older accounts send RFC 2616 URLs).

use super::VENDOR;
use connect::oauth::TokenEndpoint;
use connect::DeliveryError;
use jiff::Timestamp;
use serde::Deserialize;
use std::time::Duration;

/// First back-off after `CONCURRENCY_LIMIT_EXCEEDED`. NetSuite sends no Retry-After (reference
/// B7); the outbox's schedule grows it from here (reference: 1 s -> 30 s with jitter).
pub const CONCURRENCY_BACKOFF: Duration = Duration::from_secs(1);

/// One entry of `o:errorDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub detail: String,
    #[serde(rename = "o:errorCode", default)]
    pub code: String,
    /// The query parameter at fault (`q`), when NetSuite names one.
    #[serde(rename = "o:errorQueryParam", default)]
    pub query_param: Option<String>,
    /// The body path at fault (`item.items[0].quantity`).
    #[serde(rename = "o:errorPath", default)]
    pub path: Option<String>,
    #[serde(rename = "o:errorUrl", default)]
    pub url: Option<String>,
}

/// A REST error body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(rename = "o:errorDetails", default)]
    pub details: Vec<ErrorDetail>,
}

impl ErrorBody {
    /// The first error code, or "" when the body named none.
    pub fn code(&self) -> &str {
        self.details.first().map_or("", |d| d.code.as_str())
    }
}

/// What an error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Signature, realm, clock or token rejected.
    Auth,
    /// The account's concurrency limit (or a frequency limit) was hit.
    Throttled,
    /// Transient on NetSuite's side.
    Transient,
    /// Will never succeed as sent (validation, permissions, unknown ids, bad queries).
    Permanent,
}

/// The classification table. Unknown codes fall back to the HTTP status.
pub fn classify(status: u16, code: &str) -> ErrorClass {
    match code {
        "INVALID_LOGIN" | "INVALID_LOGIN_ATTEMPT" | "INVALID_TOKEN" => ErrorClass::Auth,
        "CONCURRENCY_LIMIT_EXCEEDED" | "SSS_REQUEST_LIMIT_EXCEEDED" => ErrorClass::Throttled,
        // USER_ERROR covers validation AND missing permissions (NetSuite answers 400 where 403
        // would be expected); neither gets better by retrying.
        "INVALID_PARAMETER"
        | "INVALID_ID"
        | "NONEXISTENT_ID"
        | "USER_ERROR"
        | "INSUFFICIENT_PERMISSION"
        | "INVALID_KEY_OR_REF" => ErrorClass::Permanent,
        _ => match status {
            401 => ErrorClass::Auth,
            429 => ErrorClass::Throttled,
            s if s >= 500 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
    }
}

/// Reads an error body; anything that is not the REST shape becomes one detail holding the
/// first 200 characters of the text, so the caller still sees what came back.
pub fn parse_error(body: &[u8]) -> ErrorBody {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        return parsed;
    }
    let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
    ErrorBody {
        title: String::new(),
        status: None,
        details: vec![ErrorDetail { detail: text, code: String::new(), query_param: None, path: None, url: None }],
    }
}

/// Short text of the details (code, message and the field/parameter at fault; never record data).
pub fn describe(body: &ErrorBody) -> String {
    body.details
        .iter()
        .map(|d| {
            let at = d.path.as_deref().or(d.query_param.as_deref()).map(|p| format!(" (at {p})")).unwrap_or_default();
            format!("{}: {}{at}", d.code, d.detail)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The error for a non-success REST answer. `what` names the call (`GET purchaseOrder/4711`);
/// `retry_after` is the raw header if one came (NetSuite is not known to send it: UNVERIFIED).
pub fn api_failure(status: u16, body: &[u8], retry_after: Option<&str>, now: Timestamp, what: &str) -> DeliveryError {
    let parsed = parse_error(body);
    let detail = format!("{what}: HTTP {status}: {}", describe(&parsed));
    match classify(status, parsed.code()) {
        ErrorClass::Auth => DeliveryError::Auth {
            vendor: VENDOR,
            detail: format!(
                "{detail}; check the token, the realm (account id) and the clock, see the Login Audit Trail"
            ),
        },
        ErrorClass::Throttled => DeliveryError::Throttled {
            vendor: VENDOR,
            detail,
            retry_after: retry_after
                .and_then(|v| connect::retry_after::parse_retry_after(v, now))
                .unwrap_or(CONCURRENCY_BACKOFF),
        },
        ErrorClass::Transient => DeliveryError::Server { vendor: VENDOR, status, detail },
        ErrorClass::Permanent => DeliveryError::Rejected { vendor: VENDOR, detail },
    }
}

/// NetSuite's token endpoint for the shared OAuth error classification ([`connect::oauth`]).
/// NetSuite sends no Retry-After on a throttled token request: start from the concurrency back-off.
pub const TOKEN_ENDPOINT: TokenEndpoint<'static> = TokenEndpoint::new(
    VENDOR,
    "client credentials token request",
    "check the client id, the certificate id and key, and the realm (account id)",
    CONCURRENCY_BACKOFF,
);

#[cfg(test)]
mod tests {
    use super::*;
    use connect::oauth::token_error;
    use connect::Disposition;

    fn token_failure(status: u16, body: &[u8]) -> DeliveryError {
        token_error(&TOKEN_ENDPOINT, status, None, body)
    }

    fn fixture(name: &str) -> Vec<u8> {
        fixtures::read_fixture(format!("netsuite/{name}")).into_bytes()
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_710_469_860).unwrap()
    }

    #[test]
    fn every_error_fixture_is_classified_by_the_table() {
        let table: [(&str, u16, &str, Disposition); 5] = [
            ("error_400_invalid_parameter.json", 400, "INVALID_PARAMETER", Disposition::Permanent),
            ("error_400_user_error_permission.json", 400, "USER_ERROR", Disposition::Permanent),
            ("error_401_invalid_login.json", 401, "INVALID_LOGIN", Disposition::Auth),
            ("error_404_nonexistent_id.json", 404, "NONEXISTENT_ID", Disposition::Permanent),
            (
                "error_429_concurrency_limit.json",
                429,
                "CONCURRENCY_LIMIT_EXCEEDED",
                Disposition::RetryAfter(CONCURRENCY_BACKOFF),
            ),
        ];
        for (file, status, code, disposition) in table {
            let body = fixture(file);
            let parsed = parse_error(&body);
            assert_eq!(parsed.status, Some(status), "{file}");
            assert_eq!(parsed.code(), code, "{file}");
            let err = api_failure(status, &body, None, now(), "test");
            assert_eq!(err.disposition(), disposition, "{file}");
            assert!(err.to_string().contains(code), "{file}: {err}");
        }
    }

    #[test]
    fn error_detail_names_the_parameter_or_path_at_fault() {
        let parsed = parse_error(&fixture("error_400_invalid_parameter.json"));
        assert_eq!(parsed.details[0].query_param.as_deref(), Some("q"));
        assert!(describe(&parsed).contains("(at q)"));
        let missing = parse_error(&fixture("error_404_nonexistent_id.json"));
        assert_eq!(missing.details[0].url.as_deref(), Some("/services/rest/record/v1/purchaseOrder/999999"));
    }

    #[test]
    fn a_retry_after_header_wins_over_the_default_backoff() {
        let body = fixture("error_429_concurrency_limit.json");
        let err = api_failure(429, &body, Some("7"), now(), "test");
        assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(7)));
    }

    #[test]
    fn non_json_bodies_fall_back_to_the_status() {
        assert_eq!(api_failure(503, b"<html>maintenance</html>", None, now(), "x").disposition(), Disposition::Retry);
        assert_eq!(api_failure(401, b"", None, now(), "x").disposition(), Disposition::Auth);
        assert_eq!(api_failure(429, b"", None, now(), "x").disposition(), Disposition::RetryAfter(CONCURRENCY_BACKOFF));
        assert_eq!(api_failure(403, b"nope", None, now(), "x").disposition(), Disposition::Permanent);
    }

    #[test]
    fn token_errors_are_credential_or_settings_problems() {
        let invalid = br#"{"error":"invalid_client","error_description":"bad assertion"}"#;
        assert_eq!(token_failure(400, invalid).disposition(), Disposition::Auth);
        // A malformed token request is a settings problem like a bad secret, not a bad job
        // (connect::oauth explains the choice).
        assert_eq!(token_failure(400, br#"{"error":"invalid_request"}"#).disposition(), Disposition::Auth);
        assert_eq!(token_failure(502, b"").disposition(), Disposition::Retry);
    }
}
