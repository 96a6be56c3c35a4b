//! Zoho's error shape (reference B6) and the ONE table that decides what each error means.
//!
//! Top-level errors and per-record results share `{code, details, message, status}`. The accounts
//! server uses its own `{error, error_description?}` shape, often with HTTP 200.

use super::VENDOR;
use connect::oauth::TokenEndpoint;
use connect::DeliveryError;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// How long to wait on a 429 when Zoho sends no `Retry-After` (it documents none). Concurrency
/// 429s clear within seconds; credit exhaustion does not, but a short first wait lets the caller
/// tell the two apart (reference B5).
pub const DEFAULT_THROTTLE_WAIT: Duration = Duration::from_secs(5);

/// `{code, details, message, status}`: a top-level error or one record's result.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct ZohoStatus {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub details: Value,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub status: String,
}

impl ZohoStatus {
    pub fn is_success(&self) -> bool {
        self.status.eq_ignore_ascii_case("success")
    }

    /// `CODE: message (field Stage)` for error texts; never contains record values.
    pub fn summary(&self) -> String {
        let field = self.details.get("api_name").and_then(Value::as_str);
        match field {
            Some(f) => format!("{}: {} (field {f})", self.code, self.message),
            None => format!("{}: {}", self.code, self.message),
        }
    }
}

/// What an error code means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The access token is dead: invalidate, refetch once, replay once.
    TokenExpired,
    /// Credentials or scopes are wrong; refreshing will not help.
    Auth,
    /// Credits exhausted or too many concurrent calls.
    Throttled,
    /// Zoho-side failure; retry later.
    Transient,
    /// This request (or record) will never succeed as sent.
    Permanent,
}

/// The table (reference B6). Unknown codes fall back on the HTTP status.
pub fn classify(http_status: u16, code: &str) -> ErrorClass {
    match code {
        "INVALID_TOKEN" => ErrorClass::TokenExpired,
        // A client library reports AUTHENTICATION_FAILURE for expired tokens too (reference B6).
        "AUTHENTICATION_FAILURE" => ErrorClass::TokenExpired,
        "OAUTH_SCOPE_MISMATCH" | "NO_PERMISSION" | "AUTHORIZATION_FAILED" => ErrorClass::Auth,
        "TOO_MANY_REQUESTS" => ErrorClass::Throttled,
        "INTERNAL_ERROR" => ErrorClass::Transient,
        // Another writer got there first; re-read and decide, never blind retry.
        "ALREADY_MODIFIED" | "RECORD_LOCKED" => ErrorClass::Permanent,
        "INVALID_MODULE"
        | "INVALID_DATA"
        | "MANDATORY_NOT_FOUND"
        | "REQUIRED_PARAM_MISSING"
        | "DUPLICATE_DATA"
        | "LIMIT_EXCEEDED"
        | "AMBIGUITY_DURING_PROCESSING"
        | "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
        | "PAGINATION_LIMIT_EXCEEDED"
        | "TOKEN_BOUND_DATA_MISMATCH"
        | "EXPIRED_VALUE"
        | "SYNTAX_ERROR"
        | "INVALID_QUERY"
        | "NOT_APPROVED"
        | "DEPENDENT_MISMATCH"
        | "INVALID_REQUEST_METHOD"
        | "MULTIPLE_OR_MULTI_ERRORS"
        | "INVALID_URL_PATTERN"
        | "NOT_SUPPORTED" => ErrorClass::Permanent,
        _ => match http_status {
            401 => ErrorClass::TokenExpired,
            403 => ErrorClass::Auth,
            429 => ErrorClass::Throttled,
            500..=599 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
    }
}

/// A non-success API answer as a [`DeliveryError`]. `retry_after` is the parsed header, if any.
pub fn api_error(http_status: u16, body: &[u8], retry_after: Option<Duration>) -> DeliveryError {
    let parsed = parse_status(body);
    let code = parsed.as_ref().map(|s| s.code.as_str()).unwrap_or("");
    let detail = match &parsed {
        Some(s) if !s.code.is_empty() => format!("HTTP {http_status} {}", s.summary()),
        _ => format!("HTTP {http_status} without a Zoho error body"),
    };
    match classify(http_status, code) {
        ErrorClass::TokenExpired | ErrorClass::Auth => DeliveryError::Auth { vendor: VENDOR, detail },
        ErrorClass::Throttled => DeliveryError::Throttled {
            vendor: VENDOR,
            detail: format!("{detail}; credits exhausted or concurrency limit reached"),
            retry_after: retry_after.unwrap_or(DEFAULT_THROTTLE_WAIT),
        },
        ErrorClass::Transient => DeliveryError::Server { vendor: VENDOR, status: http_status, detail },
        ErrorClass::Permanent => DeliveryError::Rejected { vendor: VENDOR, detail },
    }
}

/// The error of a body: top level, or the first `data[]` item (412 wraps it there).
fn parse_status(body: &[u8]) -> Option<ZohoStatus> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let item = if value.get("code").is_some() { &value } else { value.get("data")?.get(0)? };
    serde_json::from_value::<ZohoStatus>(item.clone()).ok().filter(|s| !s.code.is_empty())
}

/// The code of an error body, for the client's INVALID_TOKEN check.
pub fn error_code(body: &[u8]) -> Option<String> {
    parse_status(body).map(|s| s.code)
}

/// Zoho's accounts server for the shared OAuth error classification ([`connect::oauth`]), with
/// Zoho's extras: `Access Denied` (in a 400, or even a 200) means the refresh rate limit, and two
/// codes get a precise hint. Zoho sends no Retry-After there; a minute lets the window move on.
pub const TOKEN_ENDPOINT: TokenEndpoint<'static> = TokenEndpoint {
    vendor: VENDOR,
    request: "refresh token request",
    auth_hint: "check the Zoho OAuth settings",
    throttle_fallback: Duration::from_secs(60),
    throttle_codes: &["Access Denied"],
    code_hints: &[
        ("Access Denied", "at most 10 refreshes per 10 minutes"),
        ("invalid_code", "the refresh token is revoked or belongs to another data centre; re-consent"),
        ("invalid_client", "check the client id/secret and the data centre"),
    ],
};

#[cfg(test)]
mod tests {
    use super::*;
    use connect::oauth::token_error;
    use connect::Disposition;

    fn token_failure(status: u16, body: &[u8]) -> DeliveryError {
        token_error(&TOKEN_ENDPOINT, status, None, body)
    }

    fn fixture(name: &str) -> Vec<u8> {
        fixtures::read_fixture(format!("zoho/{name}")).into_bytes()
    }

    #[test]
    fn every_error_fixture_is_classified() {
        let cases: &[(&str, u16, &str)] = &[
            ("errors/invalid_token_401.json", 401, "auth"),
            ("errors/authentication_failure_401.json", 401, "auth"),
            ("errors/oauth_scope_mismatch_401.json", 401, "auth"),
            ("errors/no_permission_403.json", 403, "auth"),
            ("errors/invalid_url_pattern_404.json", 404, "rejected"),
            ("errors/invalid_module_400.json", 400, "rejected"),
            ("errors/required_param_missing_fields_400.json", 400, "rejected"),
            ("errors/limit_exceeded_fields_400.json", 400, "rejected"),
            ("errors/discrete_pagination_limit_exceeded_400.json", 400, "rejected"),
            ("errors/token_bound_data_mismatch_400.json", 400, "rejected"),
            ("errors/too_many_requests_429.json", 429, "throttled"),
            ("errors/internal_error_500.json", 500, "server"),
            ("errors/already_modified_412.json", 412, "rejected"),
            ("coql/error_syntax.json", 400, "rejected"),
            ("coql/error_limit_exceeded.json", 400, "rejected"),
        ];
        for (name, status, kind) in cases {
            let err = api_error(*status, &fixture(name), None);
            assert_eq!(err.kind(), *kind, "{name}: {err}");
        }
    }

    #[test]
    fn token_codes_and_scope_mismatch_differ() {
        assert_eq!(classify(401, "INVALID_TOKEN"), ErrorClass::TokenExpired);
        assert_eq!(classify(401, "OAUTH_SCOPE_MISMATCH"), ErrorClass::Auth);
        assert_eq!(classify(400, "SOMETHING_NEW"), ErrorClass::Permanent);
        assert_eq!(classify(503, ""), ErrorClass::Transient);
        assert_eq!(error_code(&fixture("errors/invalid_token_401.json")).as_deref(), Some("INVALID_TOKEN"));
    }

    #[test]
    fn throttle_uses_retry_after_or_default() {
        let body = fixture("errors/too_many_requests_429.json");
        let err = api_error(429, &body, Some(Duration::from_secs(42)));
        assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(42)));
        let err = api_error(429, &body, None);
        assert_eq!(err.disposition(), Disposition::RetryAfter(DEFAULT_THROTTLE_WAIT));
    }

    #[test]
    fn accounts_errors() {
        assert_eq!(token_failure(200, &fixture("oauth/error_invalid_code_http200.json")).kind(), "auth");
        assert!(token_failure(200, &fixture("oauth/error_invalid_client.json"))
            .to_string()
            .contains("client id/secret"));
        assert_eq!(token_failure(400, &fixture("oauth/error_token_throttled_http400.json")).kind(), "throttled");
    }

    #[test]
    fn per_record_errors_parse() {
        for name in ["errors/record_mandatory_not_found.json", "errors/record_duplicate_data.json"] {
            let v: Value = serde_json::from_slice(&fixture(name)).unwrap();
            let s: ZohoStatus = serde_json::from_value(v["data"][0].clone()).unwrap();
            assert!(!s.is_success());
            assert_eq!(classify(400, &s.code), ErrorClass::Permanent, "{name}");
        }
    }
}
