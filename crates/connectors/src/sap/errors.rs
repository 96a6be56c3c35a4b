//! SAP Gateway error bodies (reference A6) and their delivery disposition.
//!
//! OData v2 errors carry `error.message.value` and `innererror.errordetails[].message`; OData v4
//! errors carry `error.message` as a plain string. Both are parsed defensively: any other key may
//! be missing depending on the release. A CSRF rejection (403 + `x-csrf-token: Required`) is told
//! apart from an authorization 403, because only the former may be retried after a token refetch.

use super::VENDOR;
use connect::retry_after::parse_retry_after;
use connect::DeliveryError;
use http::HeaderMap;
use jiff::Timestamp;
use serde_json::Value;
use std::time::Duration;

/// Back-off when SAP (or a proxy in front of it) throttles without saying for how long.
pub const DEFAULT_THROTTLE_BACKOFF: Duration = Duration::from_secs(30);
/// Longest body excerpt quoted in an error when the body is not an OData error (HTML dumps).
const EXCERPT_CHARS: usize = 200;

/// One parsed Gateway error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SapError {
    /// `<message class>/<number>` (e.g. `ME/083`) or a 32-hex id.
    pub code: String,
    pub message: String,
    /// Messages of `innererror.errordetails[]` (v2) or `details[]` (v4), in order.
    pub details: Vec<String>,
    /// `innererror.transactionid` (v2) or `@SAP__common.TransactionId` (v4): what an SAP admin
    /// searches for in /IWFND/ERROR_LOG.
    pub transaction_id: Option<String>,
}

/// Parses an OData v2 or v4 JSON error body; `None` when the body is not one.
pub fn parse_error(body: &[u8]) -> Option<SapError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let code = error.get("code").and_then(Value::as_str).unwrap_or_default().to_owned();
    let message = match error.get("message") {
        Some(Value::String(text)) => text.clone(),
        Some(obj) => obj.get("value").and_then(Value::as_str).unwrap_or_default().to_owned(),
        None => String::new(),
    };
    let inner = error.get("innererror");
    let detail_list =
        inner.and_then(|i| i.get("errordetails")).or_else(|| error.get("details")).and_then(Value::as_array);
    let details = detail_list
        .map(|list| list.iter().filter_map(|d| d.get("message").and_then(Value::as_str).map(str::to_owned)).collect())
        .unwrap_or_default();
    let transaction_id = inner
        .and_then(|i| {
            i.get("transactionid").or_else(|| i.get("ErrorDetails").and_then(|e| e.get("@SAP__common.TransactionId")))
        })
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some(SapError { code, message, details, transaction_id })
}

/// True for exactly the CSRF rejection: 403 with `x-csrf-token: Required`. Any other 403 is an
/// authorization failure and must surface (reference A5 step 3).
pub fn is_csrf_failure(status: u16, headers: &HeaderMap) -> bool {
    status == 403
        && headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("required"))
}

/// Classifies a non-2xx answer. `what` names the operation for the operator ("PATCH A_PurchaseOrder").
pub fn api_failure(status: u16, headers: &HeaderMap, body: &[u8], what: &str, now: Timestamp) -> DeliveryError {
    let detail = format!("{what}: HTTP {status}: {}", describe(body));
    match status {
        429 => DeliveryError::Throttled { vendor: VENDOR, detail, retry_after: retry_after(headers, now) },
        // UNVERIFIED (reference A7 names no quota): 429 only comes from proxies/API Management.
        // A 503 with Retry-After is an overloaded ICM or a maintenance window announcing its end.
        503 if headers.contains_key(http::header::RETRY_AFTER) => {
            DeliveryError::Throttled { vendor: VENDOR, detail, retry_after: retry_after(headers, now) }
        }
        401 => DeliveryError::Auth { vendor: VENDOR, detail },
        403 if is_csrf_failure(status, headers) => DeliveryError::Auth {
            vendor: VENDOR,
            detail: format!("{detail}; the CSRF token was refused even after a refetch (session cookies lost?)"),
        },
        403 => DeliveryError::Auth {
            vendor: VENDOR,
            detail: format!("{detail}; the SAP user lacks authorization (S_SERVICE / PFCG role)"),
        },
        408 | 500..=599 => DeliveryError::Server { vendor: VENDOR, status, detail },
        // 400/404/405, and 412/428 (their message texts are UNVERIFIED, reference A11).
        _ => DeliveryError::Rejected { vendor: VENDOR, detail },
    }
}

fn retry_after(headers: &HeaderMap, now: Timestamp) -> Duration {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
        .unwrap_or(DEFAULT_THROTTLE_BACKOFF)
}

/// Human summary of an error body: code, message, details and transaction id, or an excerpt of a
/// non-JSON body (401 HTML pages, ABAP dumps).
pub fn describe(body: &[u8]) -> String {
    match parse_error(body) {
        Some(e) => {
            let mut out = format!("{} {}", e.code, e.message);
            let extra: Vec<&str> = e.details.iter().map(String::as_str).filter(|d| *d != e.message).collect();
            if !extra.is_empty() {
                out.push_str(&format!(" ({})", extra.join("; ")));
            }
            if let Some(id) = &e.transaction_id {
                out.push_str(&format!(" [transaction {id}]"));
            }
            out
        }
        None => {
            let text = String::from_utf8_lossy(body);
            let excerpt: String = text.trim().chars().take(EXCERPT_CHARS).collect();
            if excerpt.is_empty() {
                "empty body".to_owned()
            } else {
                excerpt
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use http::HeaderMap;

    /// Splits an `.http` fixture's response (the part after the status line) into status, headers, body.
    pub(crate) fn http_response(text: &str) -> (u16, HeaderMap, String) {
        let start = text.find("HTTP/1.1 ").unwrap_or(0);
        let rest = &text[start..];
        let (head, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
        let mut lines = head.lines();
        let status: u16 = lines.next().unwrap()["HTTP/1.1 ".len()..][..3].parse().unwrap();
        let mut h = HeaderMap::new();
        for line in lines {
            let (k, v) = line.split_once(':').unwrap();
            h.append(http::HeaderName::from_bytes(k.trim().as_bytes()).unwrap(), v.trim().parse().unwrap());
        }
        (status, h, body.trim_end().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::http_response;
    use super::*;
    use connect::Disposition;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    fn fixture_bytes(name: &str) -> Vec<u8> {
        fixtures::read_fixture(format!("sap/{name}")).into_bytes()
    }

    #[test]
    fn every_error_fixture_is_parsed_and_classified() {
        let now = Timestamp::from_second(1_710_460_800).unwrap();
        let none = HeaderMap::new();
        // (fixture, status, expected code, expected message, disposition)
        let table: &[(&str, u16, &str, &str, Disposition)] = &[
            ("error_400_business.v2.json", 400, "ME/083", "Enter a quantity greater than zero", Disposition::Permanent),
            (
                "error_404_resource_not_found.v2.json",
                404,
                "005056A509B11EE1B9A8FEC11C21D78E",
                "Resource not found for the segment 'A_PurchaseOrder'.",
                Disposition::Permanent,
            ),
            (
                "error_412_etag_mismatch.v2.json",
                412,
                "/IWBEP/CM_MGW_RT/022",
                "Precondition failed",
                Disposition::Permanent,
            ),
            (
                "error_428_precondition_required.v2.json",
                428,
                "/IWBEP/CM_MGW_RT/021",
                "Precondition required",
                Disposition::Permanent,
            ),
            ("error_v4_example.json", 400, "ME/083", "Enter a quantity greater than zero", Disposition::Permanent),
            ("error_400_business.v2.json", 500, "ME/083", "Enter a quantity greater than zero", Disposition::Retry),
            ("error_404_resource_not_found.v2.json", 401, "005056A509B11EE1B9A8FEC11C21D78E", "", Disposition::Auth),
        ];
        for (name, status, code, message, disposition) in table {
            let body = fixture_bytes(name);
            let parsed = parse_error(&body).unwrap_or_else(|| panic!("{name} did not parse"));
            assert_eq!(parsed.code, *code, "{name}");
            if !message.is_empty() {
                assert_eq!(parsed.message, *message, "{name}");
            }
            let err = api_failure(*status, &none, &body, "GET A_PurchaseOrder", now);
            assert_eq!(err.disposition(), *disposition, "{name} as {status}");
            assert!(err.to_string().contains(code), "{name}: {err}");
        }
    }

    #[test]
    fn v2_details_and_transaction_id_are_kept() {
        let e = parse_error(&fixture_bytes("error_400_business.v2.json")).unwrap();
        assert_eq!(e.details, vec!["Enter a quantity greater than zero", "An exception was raised."]);
        assert_eq!(e.transaction_id.as_deref(), Some("F1A2B3C4D5E60090E00693874FE4DDEF"));
        let v4 = parse_error(&fixture_bytes("error_v4_example.json")).unwrap();
        assert_eq!(v4.transaction_id.as_deref(), Some("F14022DB810C0090E00693874FE4DDEF"));
        let text = describe(&fixture_bytes("error_400_business.v2.json"));
        assert!(text.contains("An exception was raised.") && text.contains("F1A2B3C4"), "{text}");
    }

    #[test]
    fn csrf_403_fixture_is_recognised_and_other_403s_are_not() {
        let (status, h, body) = http_response(&fixtures::read_fixture("sap/csrf_validation_failed_403.http"));
        assert_eq!(body, "CSRF token validation failed");
        assert_eq!(body.len(), 28);
        assert!(is_csrf_failure(status, &h));
        assert!(!is_csrf_failure(403, &HeaderMap::new()));
        assert!(!is_csrf_failure(401, &h));
        let now = Timestamp::from_second(0).unwrap();
        let err = api_failure(status, &h, body.as_bytes(), "PATCH", now);
        assert_eq!(err.disposition(), Disposition::Auth);
        assert!(err.to_string().contains("CSRF"), "{err}");
        let plain = api_failure(403, &HeaderMap::new(), b"<html>No authorization</html>", "GET", now);
        assert!(plain.to_string().contains("S_SERVICE"), "{plain}");
    }

    #[test]
    fn throttling_uses_retry_after_seconds_and_dates() {
        let now = Timestamp::from_second(1_445_412_480).unwrap(); // 2015-10-21 07:28:00 UTC
        let err = api_failure(429, &headers(&[("retry-after", "7")]), b"", "GET", now);
        assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(7)));
        let err = api_failure(503, &headers(&[("retry-after", "Wed, 21 Oct 2015 07:29:00 GMT")]), b"", "GET", now);
        assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(60)));
        let err = api_failure(429, &HeaderMap::new(), b"", "GET", now);
        assert_eq!(err.disposition(), Disposition::RetryAfter(DEFAULT_THROTTLE_BACKOFF));
        let err = api_failure(503, &HeaderMap::new(), b"<html>dump</html>", "GET", now);
        assert_eq!(err.disposition(), Disposition::Retry);
        assert!(err.to_string().contains("<html>dump</html>"));
    }
}
