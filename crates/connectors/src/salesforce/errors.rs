//! Salesforce error bodies and the ONE table that decides what each error code means for the
//! caller (reference A6). Data-API errors are an array of `{message, errorCode, fields}`;
//! collection/composite items say `statusCode` instead of `errorCode`; a few resources answer a
//! single object. Token errors (`{error, error_description}`) are a different shape.

use super::VENDOR;
use connect::oauth::TokenEndpoint;
use connect::DeliveryError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Back-off after the org's rolling 24 h allocation is exhausted. Salesforce sends no
/// Retry-After, and the window frees capacity gradually, so wait a while before trying again.
pub const DAILY_LIMIT_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Back-off after the concurrent long-running request limit: seconds, per the reference.
pub const CONCURRENT_LIMIT_BACKOFF: Duration = Duration::from_secs(5);

/// One entry of a data-API error array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub message: String,
    #[serde(rename = "errorCode", alias = "statusCode", default)]
    pub error_code: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// What an error code means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The session is dead: invalidate the token, fetch a new one, replay once.
    Session,
    /// The Authorization header itself is wrong: a client bug or a broken credential.
    Credentials,
    /// The org's rolling daily API allocation is used up.
    DailyLimit,
    /// Too many long-running requests at once.
    ConcurrentLimit,
    /// Transient on Salesforce's side (row locks, maintenance): retry with back-off.
    Transient,
    /// The request will never succeed as sent (validation, permissions, bad ids).
    Permanent,
}

/// The single classification table for Salesforce error codes. Codes not listed fall back to
/// the HTTP status (5xx transient, everything else permanent).
pub fn classify(code: &str, message: &str, status: Option<u16>) -> ErrorClass {
    match code {
        "INVALID_SESSION_ID" => ErrorClass::Session,
        "INVALID_AUTH_HEADER" => ErrorClass::Credentials,
        "REQUEST_LIMIT_EXCEEDED" if message.starts_with("ConcurrentRequests") => ErrorClass::ConcurrentLimit,
        "REQUEST_LIMIT_EXCEEDED" => ErrorClass::DailyLimit,
        "UNABLE_TO_LOCK_ROW"
        | "SERVER_UNAVAILABLE"
        | "UNKNOWN_EXCEPTION"
        | "QUERY_TIMEOUT"
        | "API_CURRENTLY_DISABLED" => ErrorClass::Transient,
        "MALFORMED_QUERY"
        | "INVALID_FIELD"
        | "MALFORMED_ID"
        | "JSON_PARSER_ERROR"
        | "REQUIRED_FIELD_MISSING"
        | "FIELD_CUSTOM_VALIDATION_EXCEPTION"
        | "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        | "DUPLICATE_VALUE"
        | "DUPLICATES_DETECTED"
        | "STRING_TOO_LONG"
        | "FIELD_INTEGRITY_EXCEPTION"
        | "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
        | "INVALID_TYPE"
        | "INSUFFICIENT_ACCESS_OR_READONLY"
        | "INSUFFICIENT_ACCESS"
        | "API_DISABLED_FOR_ORG"
        | "NOT_FOUND"
        | "ENTITY_IS_DELETED"
        | "METHOD_NOT_ALLOWED"
        | "INVALID_QUERY_LOCATOR"
        | "INACTIVE_OWNER_OR_USER"
        | "ALL_OR_NONE_OPERATION_ROLLED_BACK"
        | "PROCESSING_HALTED"
        | "BATCH_PROCESSING_HALTED"
        | "EXCEEDED_ID_LIMIT" => ErrorClass::Permanent,
        _ => match status {
            Some(429) => ErrorClass::ConcurrentLimit,
            Some(s) if s >= 500 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
    }
}

impl ApiError {
    pub fn class(&self, status: Option<u16>) -> ErrorClass {
        classify(&self.error_code, &self.message, status)
    }

    /// Worth retrying this one record (collections partial failures).
    pub fn is_retryable(&self) -> bool {
        matches!(self.class(None), ErrorClass::Transient | ErrorClass::ConcurrentLimit)
    }
}

/// Reads an error body: an array, a single object, or anything else (then one entry carrying
/// the first bytes of the text, so the caller still gets a message).
pub fn parse_errors(body: &[u8]) -> Vec<ApiError> {
    if let Ok(list) = serde_json::from_slice::<Vec<ApiError>>(body) {
        return list;
    }
    if let Ok(one) = serde_json::from_slice::<ApiError>(body) {
        return vec![one];
    }
    let text = String::from_utf8_lossy(body);
    vec![ApiError { message: text.chars().take(200).collect(), error_code: String::new(), fields: Vec::new() }]
}

/// Short human text of an error list for error details (messages only, never record data).
pub fn describe(errors: &[ApiError]) -> String {
    errors
        .iter()
        .map(|e| {
            let fields =
                if e.fields.is_empty() { String::new() } else { format!(" (fields: {})", e.fields.join(", ")) };
            format!("{}: {}{fields}", e.error_code, e.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The error for a non-success data-API answer. `what` names the call (`GET Opportunity/006…`).
pub fn api_failure(status: u16, body: &[u8], what: &str) -> DeliveryError {
    let errors = parse_errors(body);
    let class = errors.first().map_or_else(|| classify("", "", Some(status)), |e| e.class(Some(status)));
    let detail = format!("{what}: HTTP {status}: {}", describe(&errors));
    match class {
        ErrorClass::Session | ErrorClass::Credentials => DeliveryError::Auth { vendor: VENDOR, detail },
        ErrorClass::DailyLimit => DeliveryError::Throttled {
            vendor: VENDOR,
            detail: format!("{detail}; the org's daily API allocation is used up"),
            retry_after: DAILY_LIMIT_BACKOFF,
        },
        ErrorClass::ConcurrentLimit => {
            DeliveryError::Throttled { vendor: VENDOR, detail, retry_after: CONCURRENT_LIMIT_BACKOFF }
        }
        ErrorClass::Transient => DeliveryError::Server { vendor: VENDOR, status, detail },
        ErrorClass::Permanent => DeliveryError::Rejected { vendor: VENDOR, detail },
    }
}

/// True when a 401 answer says the session (access token) is dead, so one refresh may help.
pub fn is_session_expired(status: u16, body: &[u8]) -> bool {
    status == 401 && parse_errors(body).iter().any(|e| e.class(Some(status)) == ErrorClass::Session)
}

/// How the token request of `grant` is named in errors (`jwt-bearer token request`).
pub fn token_request(grant: &str) -> String {
    format!("{grant} token request")
}

/// Salesforce's token endpoint for the shared OAuth error classification ([`connect::oauth`]);
/// `request` comes from [`token_request`]. A throttled token request starts from the
/// concurrent-limit back-off, since Salesforce sends no Retry-After.
pub fn token_endpoint(request: &str) -> TokenEndpoint<'_> {
    TokenEndpoint::new(
        VENDOR,
        request,
        "check the connected app's consumer key, the user's approval and the login URL",
        CONCURRENT_LIMIT_BACKOFF,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use connect::oauth::token_error;
    use connect::Disposition;

    fn token_failure(status: u16, body: &[u8]) -> DeliveryError {
        token_error(&token_endpoint(&token_request("test")), status, None, body)
    }

    fn fixture(name: &str) -> Vec<u8> {
        fixtures::read_fixture(format!("salesforce/{name}")).into_bytes()
    }

    fn disposition(file: &str, status: u16) -> Disposition {
        api_failure(status, &fixture(&format!("errors/{file}")), "test").disposition()
    }

    #[test]
    fn error_fixtures_are_classified_by_the_table() {
        assert_eq!(disposition("invalid_session_id_401.json", 401), Disposition::Auth);
        assert_eq!(disposition("invalid_auth_header_401.json", 401), Disposition::Auth);
        assert_eq!(
            disposition("request_limit_exceeded_daily_403.json", 403),
            Disposition::RetryAfter(DAILY_LIMIT_BACKOFF)
        );
        assert_eq!(
            disposition("request_limit_exceeded_concurrent_403.json", 403),
            Disposition::RetryAfter(CONCURRENT_LIMIT_BACKOFF)
        );
        assert_eq!(disposition("server_unavailable_503.json", 503), Disposition::Retry);
        for permanent in [
            "insufficient_access_403.json",
            "not_found_404.json",
            "entity_is_deleted_404.json",
            "malformed_id_400.json",
            "malformed_query_400.json",
            "restricted_picklist_400.json",
            "validation_rule_400.json",
            "required_field_missing_400.json",
            "json_parser_error_400.json",
        ] {
            let status = permanent[permanent.len() - 8..permanent.len() - 5].parse().unwrap();
            assert_eq!(disposition(permanent, status), Disposition::Permanent, "{permanent}");
        }
    }

    #[test]
    fn only_invalid_session_counts_as_an_expired_session() {
        assert!(is_session_expired(401, &fixture("errors/invalid_session_id_401.json")));
        assert!(!is_session_expired(401, &fixture("errors/invalid_auth_header_401.json")));
        assert!(is_session_expired(401, &fixture("restforce/expired_session_response.json")));
    }

    #[test]
    fn single_object_and_item_error_shapes_are_read() {
        let one = parse_errors(&fixture("restforce/composite_sobjects_error_response.json"));
        assert_eq!(one[0].error_code, "INVALID_FIELD");
        let item: ApiError = serde_json::from_str(
            r#"{"statusCode":"UNABLE_TO_LOCK_ROW","message":"unable to obtain exclusive access","fields":[]}"#,
        )
        .unwrap();
        assert!(item.is_retryable());
        let validation = parse_errors(&fixture("errors/validation_rule_400.json"));
        assert!(!validation[0].is_retryable());
        assert_eq!(api_failure(500, b"<html>oops</html>", "x").disposition(), Disposition::Retry);
    }

    #[test]
    fn token_errors_are_credential_problems() {
        for file in [
            "oauth/error_invalid_client_id.json",
            "oauth/error_jwt_user_not_approved.json",
            "oauth/error_jwt_audience_invalid.json",
            "restforce/refresh_error_response.json",
        ] {
            assert_eq!(token_failure(400, &fixture(file)).disposition(), Disposition::Auth, "{file}");
        }
        assert_eq!(token_failure(503, b"").disposition(), Disposition::Retry);
    }
}
