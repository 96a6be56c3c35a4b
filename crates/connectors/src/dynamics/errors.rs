//! Dynamics error bodies and their meaning for the caller (reference C6, C7).
//!
//! Dataverse and Business Central share the OData v4 shape `{"error":{"code","message",…}}`;
//! Dataverse codes are hex (`0x80072322`), BC codes are names (`Application_TooManyRequests`).
//! The token endpoint answers `{"error","error_description","error_codes",…}`.

use super::VENDOR;
use connect::oauth::TokenEndpoint;
use connect::DeliveryError;
use serde_json::{Map, Value};
use std::time::Duration;

/// Wait after a 429 that carries no usable `Retry-After`. The reference says Dataverse always
/// sends one; this is dingbridge's own fallback (UNVERIFIED that it is ever needed).
pub const THROTTLE_FALLBACK: Duration = Duration::from_secs(5);

/// Dataverse "Number of requests" service-protection code.
pub const CODE_REQUEST_COUNT: &str = "0x80072322";
/// Dataverse "Combined execution time" service-protection code.
pub const CODE_EXECUTION_TIME: &str = "0x80072321";
/// Dataverse "Concurrent requests" service-protection code.
pub const CODE_CONCURRENCY: &str = "0x80072326";
/// Dataverse optimistic-concurrency failure (stale `If-Match`).
pub const CODE_VERSION_MISMATCH: &str = "0x80060882";
/// Dataverse "does not exist".
pub const CODE_NOT_FOUND: &str = "0x80040217";
/// Business Central throttling code.
pub const BC_TOO_MANY_REQUESTS: &str = "Application_TooManyRequests";

/// The inside of an OData error body. Annotation keys (`@Microsoft.PowerApps.CDS.*`) are kept
/// apart so they never leak into user-facing text by accident (trace text can be long).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ODataError {
    pub code: String,
    pub message: String,
    pub annotations: Map<String, Value>,
}

impl ODataError {
    /// `@Microsoft.PowerApps.CDS.ErrorDetails.SubErrorCode`, when annotations were requested.
    pub fn sub_error_code(&self) -> Option<&str> {
        self.annotations.get("@Microsoft.PowerApps.CDS.ErrorDetails.SubErrorCode").and_then(Value::as_str)
    }
}

/// Reads an OData error body; anything else becomes a message holding its first 200 characters.
pub fn parse_error(body: &[u8]) -> ODataError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(Value::Object(inner)) = parsed.as_ref().and_then(|v| v.get("error")) {
        let text = |key: &str| inner.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let annotations =
            inner.iter().filter(|(k, _)| k.starts_with('@')).map(|(k, v)| (k.clone(), v.clone())).collect();
        return ODataError { code: text("code"), message: text("message"), annotations };
    }
    ODataError { message: String::from_utf8_lossy(body).chars().take(200).collect(), ..ODataError::default() }
}

/// What an answer means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Service protection / BC rate limit: wait `Retry-After`, then retry.
    Throttled,
    /// The token was refused (401) or the app user lacks a role (403).
    Auth,
    /// Optimistic concurrency: the record changed since it was read (412).
    Conflict,
    /// Transient on Microsoft's side.
    Server,
    /// Will never succeed as sent (validation, not found, plug-in error).
    Rejected,
}

/// The single classification table. Status decides first, because Dataverse codes are
/// unrelated to the HTTP status and BC codes are open-ended.
pub fn classify(status: u16, error: &ODataError) -> ErrorClass {
    match (status, error.code.as_str()) {
        (429, _) | (_, CODE_REQUEST_COUNT | CODE_EXECUTION_TIME | CODE_CONCURRENCY | BC_TOO_MANY_REQUESTS) => {
            ErrorClass::Throttled
        }
        (401 | 403, _) => ErrorClass::Auth,
        (412, _) => ErrorClass::Conflict,
        (408, _) | (500..=599, _) if status != 501 => ErrorClass::Server,
        _ => ErrorClass::Rejected,
    }
}

/// The error for a non-success answer. `retry_after` is the parsed `Retry-After` header, used
/// verbatim for throttling. `what` names the call (`PATCH salesorders(…)`), never data.
pub fn api_failure(status: u16, retry_after: Option<Duration>, body: &[u8], what: &str) -> DeliveryError {
    let error = parse_error(body);
    let detail = format!("{what}: HTTP {status}: {} {}", error.code, error.message).trim_end().to_owned();
    match classify(status, &error) {
        ErrorClass::Throttled => {
            DeliveryError::Throttled { vendor: VENDOR, detail, retry_after: retry_after.unwrap_or(THROTTLE_FALLBACK) }
        }
        ErrorClass::Auth => DeliveryError::Auth {
            vendor: VENDOR,
            detail: format!("{detail}; check the application user's security role and the app registration"),
        },
        ErrorClass::Conflict => DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("{detail}; the record changed since it was read: re-read it and decide again"),
        },
        ErrorClass::Server => DeliveryError::Server { vendor: VENDOR, status, detail },
        ErrorClass::Rejected => DeliveryError::Rejected { vendor: VENDOR, detail },
    }
}

/// The Microsoft identity platform's token endpoint for the shared OAuth error classification
/// ([`connect::oauth`]); its `error_description` keeps only the first line there (the rest is
/// trace/correlation ids and a timestamp).
pub const TOKEN_ENDPOINT: TokenEndpoint<'static> = TokenEndpoint::new(
    VENDOR,
    "client-credentials token request",
    "check the tenant id, client id and client secret of the app registration",
    THROTTLE_FALLBACK,
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
        fixtures::read_fixture(format!("dynamics/{name}")).into_bytes()
    }

    #[test]
    fn every_error_fixture_has_its_disposition() {
        let ra = Some(Duration::from_secs(37));
        let table: &[(&str, u16, Disposition)] = &[
            ("error_429_number_of_requests.json", 429, Disposition::RetryAfter(Duration::from_secs(37))),
            ("error_429_execution_time.json", 429, Disposition::RetryAfter(Duration::from_secs(37))),
            ("error_429_concurrent_requests.json", 429, Disposition::RetryAfter(Duration::from_secs(37))),
            ("bc_error_429_too_many_requests.json", 429, Disposition::RetryAfter(Duration::from_secs(37))),
            ("error_412_concurrency_version_mismatch.json", 412, Disposition::Permanent),
            ("error_404_not_found.json", 404, Disposition::Permanent),
            ("error_400_plugin_with_annotations.json", 400, Disposition::Permanent),
            ("bc_error_400_validation.json", 400, Disposition::Permanent),
        ];
        for (file, status, want) in table {
            assert_eq!(api_failure(*status, ra, &fixture(file), "test").disposition(), *want, "{file}");
        }
        assert_eq!(
            token_failure(401, &fixture("aad_token_error_invalid_client.json")).disposition(),
            Disposition::Auth
        );
        assert_eq!(api_failure(401, None, b"", "x").disposition(), Disposition::Auth);
        assert_eq!(api_failure(503, None, b"<html/>", "x").disposition(), Disposition::Retry);
        assert_eq!(token_failure(503, b"").disposition(), Disposition::Retry);
    }

    #[test]
    fn error_bodies_are_read_with_codes_and_annotations() {
        let plugin = parse_error(&fixture("error_400_plugin_with_annotations.json"));
        assert_eq!(plugin.code, "0x80040265");
        assert_eq!(plugin.message, "Example Error Message.");
        assert_eq!(plugin.sub_error_code(), Some("12345"));
        assert_eq!(plugin.annotations.len(), 5);
        let conflict = parse_error(&fixture("error_412_concurrency_version_mismatch.json"));
        assert_eq!(classify(412, &conflict), ErrorClass::Conflict);
        assert_eq!(conflict.code, CODE_VERSION_MISMATCH);
        for (file, code) in [
            ("error_429_number_of_requests.json", CODE_REQUEST_COUNT),
            ("error_429_execution_time.json", CODE_EXECUTION_TIME),
            ("error_429_concurrent_requests.json", CODE_CONCURRENCY),
            ("bc_error_429_too_many_requests.json", BC_TOO_MANY_REQUESTS),
        ] {
            let error = parse_error(&fixture(file));
            assert_eq!(error.code, code);
            // The code alone marks throttling even if a proxy rewrote the status.
            assert_eq!(classify(400, &error), ErrorClass::Throttled, "{file}");
        }
        let missing_ra = api_failure(429, None, &fixture("error_429_number_of_requests.json"), "x");
        assert_eq!(missing_ra.disposition(), Disposition::RetryAfter(THROTTLE_FALLBACK));
    }

    #[test]
    fn token_error_keeps_only_the_first_line() {
        let err = token_failure(401, &fixture("aad_token_error_invalid_client.json"));
        let text = err.to_string();
        assert!(text.contains("AADSTS7000215"), "{text}");
        assert!(!text.contains("Trace ID"), "{text}");
    }
}
