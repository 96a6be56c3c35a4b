//! Classification of custom robot answers (reference §2.3, §8.2): the single place that turns
//! an HTTP status and body into success or a [`DeliveryError`] with the right disposition.
//!
//! DingTalk answers robot errors with HTTP 200 and `errcode != 0`, so the body decides, not
//! the status.

use super::VENDOR;
use connect::DeliveryError;
use serde::Deserialize;
use std::time::Duration;

/// How long DingTalk blocks a robot after errcode 130101 / 660026. DOC copies say 10 minutes;
/// the exact penalty is UNVERIFIED (reference §2.3), so we wait the documented worst case.
pub const ROBOT_THROTTLE_PENALTY: Duration = Duration::from_secs(10 * 60);

/// Wait after a QPS-limit errcode (90002/90018/90019): QPS windows are 1 s (reference §8.1).
const QPS_BACKOFF: Duration = Duration::from_secs(1);

/// Wait after HTTP 429 without a usable `Retry-After`: one robot window.
const DEFAULT_429_WAIT: Duration = Duration::from_secs(60);

/// Longest vendor text kept in an error detail.
const MAX_DETAIL_CHARS: usize = 300;

#[derive(Debug, Clone, Copy)]
enum Class {
    /// Robot throttled: blocked for [`ROBOT_THROTTLE_PENALTY`].
    RobotThrottled,
    /// Platform QPS limit: retry after [`QPS_BACKOFF`].
    Qps,
    /// Transient platform error: retry on the schedule.
    Transient,
    /// Never accepted as sent: dead-letter; the text says what to check.
    Permanent(&'static str),
}

/// errcode → class. Codes not listed are permanent (parameter and permission errors must
/// not be retried, reference §8.2).
const ERRCODES: &[(i64, Class)] = &[
    (130_101, Class::RobotThrottled),
    (660_026, Class::RobotThrottled),
    (
        310_000,
        Class::Permanent(
            "robot security check failed; check the robot secret, the server clock (timestamp \
             must be within 1 h), the robot's keywords and its IP allow-list",
        ),
    ),
    (300_005, Class::Permanent("robot token does not exist; check the robot access_token")),
    (-1, Class::Transient),
    (15, Class::Transient),
    (90_002, Class::Qps),
    (90_018, Class::Qps),
    (90_019, Class::Qps),
    (40_035, Class::Permanent("DingTalk says a parameter is missing; check the message body")),
];

#[derive(Debug, Deserialize)]
struct Answer {
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    sub_code: Option<serde_json::Value>,
    #[serde(default)]
    sub_msg: Option<String>,
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(MAX_DETAIL_CHARS).collect();
    if text.chars().count() > MAX_DETAIL_CHARS {
        out.push('…');
    }
    if out.is_empty() {
        "empty body".to_owned()
    } else {
        out
    }
}

fn has_sub_code(answer: &Answer) -> bool {
    match &answer.sub_code {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

/// Classifies a custom robot answer. `retry_after` is the parsed `Retry-After` header, if any
/// (see `connect::retry_after::parse_retry_after`).
///
/// | answer | result |
/// |---|---|
/// | 2xx, errcode 0 | `Ok` |
/// | errcode 130101 / 660026 | `Throttled`, retry after [`ROBOT_THROTTLE_PENALTY`] |
/// | errcode 90002 / 90018 / 90019 | `Throttled`, retry after 1 s |
/// | errcode 310000 (sign, timestamp, keywords, IP) | `Rejected` (permanent), vendor text kept |
/// | errcode 300005 (token does not exist) | `Rejected`: refreshing cannot help |
/// | errcode -1 / 15, or 88 without `sub_code` | `Server` (retry) |
/// | errcode 88 with `sub_code`, any other errcode | `Rejected` |
/// | 2xx with an unparseable body | `Server` (retry): the answer was damaged |
/// | HTTP 429 | `Throttled`, honouring `Retry-After` (default 60 s) |
/// | HTTP 5xx | `Server` (retry) |
/// | HTTP 3xx | `Rejected`: redirects are not followed; check `base_url` |
/// | other HTTP 4xx | `Rejected` |
pub fn classify_robot_response(
    http_status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), DeliveryError> {
    let server = |detail: String| DeliveryError::Server { vendor: VENDOR, status: http_status, detail };
    let rejected = |detail: String| DeliveryError::Rejected { vendor: VENDOR, detail };
    match http_status {
        429 => {
            return Err(DeliveryError::Throttled {
                vendor: VENDOR,
                detail: format!("HTTP 429: {}", snippet(body)),
                retry_after: retry_after.unwrap_or(DEFAULT_429_WAIT),
            })
        }
        500..=599 => return Err(server(snippet(body))),
        300..=399 => {
            return Err(rejected(format!(
                "HTTP {http_status} redirect, which is not followed; check the robot base_url"
            )))
        }
        400..=499 => return Err(rejected(format!("HTTP {http_status}: {}", snippet(body)))),
        200..=299 => {}
        _ => return Err(server(format!("unexpected HTTP status: {}", snippet(body)))),
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|err| server(format!("unreadable answer ({err}): {}", snippet(body))))?;
    if answer.errcode == 0 {
        return Ok(());
    }
    let mut vendor_text = format!("errcode {}: {}", answer.errcode, answer.errmsg);
    if has_sub_code(&answer) {
        if let Some(code) = &answer.sub_code {
            let code = code.as_str().map_or_else(|| code.to_string(), str::to_owned);
            vendor_text.push_str(&format!(" (sub_code {code}"));
            if let Some(sub) = answer.sub_msg.as_deref().filter(|s| !s.is_empty()) {
                vendor_text.push_str(&format!(": {sub}"));
            }
            vendor_text.push(')');
        }
    }
    if answer.errcode == 88 {
        return Err(if has_sub_code(&answer) { rejected(vendor_text) } else { server(vendor_text) });
    }
    let class = ERRCODES
        .iter()
        .find(|(code, _)| *code == answer.errcode)
        .map_or(Class::Permanent("check the message and the robot settings"), |(_, c)| *c);
    Err(match class {
        Class::RobotThrottled => DeliveryError::Throttled {
            vendor: VENDOR,
            detail: format!("{vendor_text}; the robot is blocked for about 10 minutes"),
            retry_after: ROBOT_THROTTLE_PENALTY,
        },
        Class::Qps => DeliveryError::Throttled {
            vendor: VENDOR,
            detail: vendor_text,
            retry_after: retry_after.unwrap_or(QPS_BACKOFF).max(QPS_BACKOFF),
        },
        Class::Transient => server(vendor_text),
        Class::Permanent(hint) => rejected(format!("{vendor_text}; {hint}")),
    })
}
