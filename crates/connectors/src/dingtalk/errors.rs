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

// ---------------------------------------------------------------------------------------------
// OpenAPI (old `oapi` errcode answers and new `api` {code, message, requestid} answers)
// ---------------------------------------------------------------------------------------------

/// Wait after a monthly-quota error (90020 / `ApiCountLimitForOrg`).
///
/// The org's monthly call quota (reference §8.1) comes back when the month rolls over or when an
/// admin upgrades the plan, neither of which a retry a second later will see. Dead-lettering
/// would throw away deliveries that succeed as soon as the quota is raised, so the delivery is
/// parked: retried once an hour, which costs nothing against the quota (a refused call does not
/// run) and lets the outbox's own attempt/age limits decide when to give up.
pub const MONTHLY_QUOTA_BACKOFF: Duration = Duration::from_secs(60 * 60);

/// How long DingTalk bans a source IP that sent more than 10 000 requests in 20 s (§8.1).
pub const IP_BAN_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// What an OpenAPI error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiClass {
    /// The access token was rejected: drop it, fetch once, retry once (reference §1.2).
    TokenRejected,
    /// Platform hiccup: retry on the schedule.
    Transient,
    /// A 1 s QPS window is full (app, global or third-party): retry after ≥ 1 s (§8.1).
    Qps,
    /// The org's monthly quota is used up: retry after [`MONTHLY_QUOTA_BACKOFF`].
    MonthlyQuota,
    /// A custom robot is blocked for [`ROBOT_THROTTLE_PENALTY`].
    RobotThrottled,
    /// App credentials are wrong: pause the destination until someone fixes the config.
    Auth,
    /// This host's IP is banned for [`IP_BAN_BACKOFF`] (per-IP limit, §8.1).
    IpBanned,
    /// Never accepted: dead-letter; the text says what to check.
    Permanent(&'static str),
}

/// How a row of [`OPENAPI_ERRORS`] matches an answer.
#[derive(Debug, Clone, Copy)]
enum ApiKey {
    /// Old API `errcode`.
    Errcode(i64),
    /// Old API errcode 88 (or another wrapper) with this `sub_code`.
    SubCode(i64, &'static str),
    /// New API `code`, exactly.
    Code(&'static str),
    /// New API `code` starting with this (card `param.*`).
    CodePrefix(&'static str),
}

const HINT_PERMISSION: &str = "the app lacks a permission (scope) or the user is outside the app's visibility; \
                               grant it in the DingTalk developer console";
const HINT_PARAM: &str = "DingTalk refused a parameter; check the request body";
const HINT_ROBOT_SECURITY: &str = "robot security check failed; check the robot secret, the server clock (timestamp \
                                   must be within 1 h), the robot's keywords and its IP allow-list";

/// The one OpenAPI classification table (reference §8.2, §1, §2.3). Codes not listed fall back to
/// the HTTP status (see [`classify_code`]) or are permanent: parameter and permission errors
/// must not be retried.
const OPENAPI_ERRORS: &[(ApiKey, ApiClass)] = &[
    // Old API errcodes.
    (ApiKey::Errcode(-1), ApiClass::Transient),
    (ApiKey::Errcode(15), ApiClass::Transient),
    (ApiKey::Errcode(22), ApiClass::Permanent("DingTalk does not know this API; check the path")),
    (ApiKey::SubCode(88, "40014"), ApiClass::TokenRejected),
    (
        ApiKey::SubCode(88, "40000"),
        ApiClass::Permanent("the access_token was blank; old-API calls carry it as `?access_token=`, not in a header"),
    ),
    (ApiKey::Errcode(40_014), ApiClass::TokenRejected),
    (ApiKey::Errcode(40_035), ApiClass::Permanent("DingTalk says a parameter is missing; check the request")),
    (ApiKey::Errcode(40_096), ApiClass::Auth),
    (ApiKey::Errcode(60_011), ApiClass::Permanent(HINT_PERMISSION)),
    (ApiKey::Errcode(60_121), ApiClass::Permanent("the user does not exist in this organisation; check the userid")),
    (ApiKey::Errcode(90_002), ApiClass::Qps),
    (ApiKey::Errcode(90_018), ApiClass::Qps),
    (ApiKey::Errcode(90_019), ApiClass::Qps),
    (ApiKey::Errcode(90_020), ApiClass::MonthlyQuota),
    (
        ApiKey::Errcode(71_009),
        ApiClass::Permanent("the callback URL did not answer the encrypted `success`; check the callback endpoint"),
    ),
    (ApiKey::Errcode(310_000), ApiClass::Permanent(HINT_ROBOT_SECURITY)),
    (ApiKey::Errcode(130_101), ApiClass::RobotThrottled),
    (ApiKey::Errcode(660_026), ApiClass::RobotThrottled),
    (ApiKey::Errcode(300_005), ApiClass::Permanent("robot token does not exist; check the robot access_token")),
    // New API codes.
    (ApiKey::Code("invalidClientIdOrSecret"), ApiClass::Auth),
    (ApiKey::Code("invalidSuiteKey"), ApiClass::Auth),
    (ApiKey::Code("InvalidAuthentication"), ApiClass::TokenRejected),
    (
        ApiKey::Code("AuthenticationFailed.MissingParameter"),
        ApiClass::Permanent(
            "the access token was missing; new-API calls carry it in the `x-acs-dingtalk-access-token` header",
        ),
    ),
    (ApiKey::Code("Forbidden.AccessDenied.AccessTokenPermissionDenied"), ApiClass::Permanent(HINT_PERMISSION)),
    (ApiKey::Code("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"), ApiClass::Qps),
    (ApiKey::Code("Forbidden.AccessDenied.QpsLimitForApi"), ApiClass::Qps),
    (ApiKey::Code("Forbidden.AccessDenied.ApiCountLimitForOrg"), ApiClass::MonthlyQuota),
    (ApiKey::Code("unknownError"), ApiClass::Transient),
    (ApiKey::CodePrefix("param."), ApiClass::Permanent(HINT_PARAM)),
];

/// Class of an old-API `errcode` (with its `sub_code`, if any). `0` is not an error and is not
/// asked about.
pub fn classify_errcode(errcode: i64, sub_code: Option<&str>) -> ApiClass {
    let sub_code = sub_code.filter(|s| !s.is_empty());
    if let Some(sub) = sub_code {
        let hit = OPENAPI_ERRORS.iter().find_map(|(key, class)| match key {
            ApiKey::SubCode(code, s) if *code == errcode && *s == sub => Some(*class),
            _ => None,
        });
        if let Some(class) = hit {
            return class;
        }
    }
    if errcode == 88 {
        // 88 wraps platform errors: without a sub_code it is the gateway's auth timeout (§8.2).
        return match sub_code {
            None => ApiClass::Transient,
            Some(_) => ApiClass::Permanent("see the sub_code; DingTalk refused the call"),
        };
    }
    OPENAPI_ERRORS
        .iter()
        .find_map(|(key, class)| matches!(key, ApiKey::Errcode(c) if *c == errcode).then_some(*class))
        .unwrap_or(ApiClass::Permanent("DingTalk refused the call; see the errcode"))
}

/// Class of a new-API failure from its `code` and HTTP status; the status decides for codes not
/// in the table (401 token, 429 QPS, 5xx transient, other 4xx permanent).
pub fn classify_code(http_status: u16, code: &str) -> ApiClass {
    let hit = OPENAPI_ERRORS.iter().find_map(|(key, class)| match key {
        ApiKey::Code(c) if *c == code => Some(*class),
        ApiKey::CodePrefix(p) if code.starts_with(p) => Some(*class),
        _ => None,
    });
    if let Some(class) = hit {
        return class;
    }
    match http_status {
        401 => ApiClass::TokenRejected,
        429 => ApiClass::Qps,
        500..=599 => ApiClass::Transient,
        _ => ApiClass::Permanent("DingTalk refused the call; see the code"),
    }
}

/// A classified OpenAPI failure: the error to report and its class (so the caller can see a
/// rejected token and refresh it).
#[derive(Debug)]
pub struct ApiFailure {
    pub class: ApiClass,
    pub error: DeliveryError,
}

/// Turns a class and the vendor text into the outbox's error.
pub fn api_error(
    class: ApiClass,
    http_status: u16,
    retry_after: Option<Duration>,
    vendor_text: String,
) -> DeliveryError {
    match class {
        ApiClass::TokenRejected => DeliveryError::Auth {
            vendor: VENDOR,
            detail: format!("{vendor_text}; the access token was rejected even after a refresh"),
        },
        ApiClass::Transient => DeliveryError::Server { vendor: VENDOR, status: http_status, detail: vendor_text },
        ApiClass::Qps => DeliveryError::Throttled {
            vendor: VENDOR,
            detail: vendor_text,
            retry_after: retry_after.unwrap_or(QPS_BACKOFF).max(QPS_BACKOFF),
        },
        ApiClass::MonthlyQuota => DeliveryError::Throttled {
            vendor: VENDOR,
            detail: format!(
                "{vendor_text}; the organisation's monthly API quota is used up, retrying hourly until \
                 the month rolls over or the plan is upgraded"
            ),
            retry_after: retry_after.unwrap_or(MONTHLY_QUOTA_BACKOFF).max(MONTHLY_QUOTA_BACKOFF),
        },
        ApiClass::RobotThrottled => DeliveryError::Throttled {
            vendor: VENDOR,
            detail: format!("{vendor_text}; the robot is blocked for about 10 minutes"),
            retry_after: ROBOT_THROTTLE_PENALTY,
        },
        ApiClass::IpBanned => DeliveryError::Throttled {
            vendor: VENDOR,
            detail: format!("{vendor_text}; DingTalk banned this host's IP for sending too many requests"),
            retry_after: retry_after.unwrap_or(IP_BAN_BACKOFF).max(IP_BAN_BACKOFF),
        },
        ApiClass::Auth => {
            DeliveryError::Auth { vendor: VENDOR, detail: format!("{vendor_text}; check the app key and app secret") }
        }
        ApiClass::Permanent(hint) => {
            DeliveryError::Rejected { vendor: VENDOR, detail: format!("{vendor_text}; {hint}") }
        }
    }
}

#[derive(Debug, Deserialize)]
struct OldAnswer {
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    sub_code: Option<serde_json::Value>,
    #[serde(default)]
    sub_msg: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct NewAnswer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    requestid: Option<String>,
    #[serde(default)]
    accessdenieddetail: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct IpBan {
    punish: String,
    #[serde(default)]
    wait: Option<u64>,
}

/// DingTalk's per-IP ban answer, `{"status":1111,"wait":5,"source":"x5","punish":"deny",…}` with
/// HTTP 200 (§8.1). It has no errcode, so without this check it would read as a success.
pub fn ip_ban(api: &str, http_status: u16, body: &[u8]) -> Option<ApiFailure> {
    let ban: IpBan = serde_json::from_slice(body).ok()?;
    if ban.punish.is_empty() {
        return None;
    }
    // `wait` is UNVERIFIED in unit; the documented ban is 5 minutes, never wait less.
    let wait = ban.wait.map(|m| Duration::from_secs(m.saturating_mul(60)));
    let text = format!("{api}: HTTP {http_status} punish={}: {}", ban.punish, snippet(body));
    Some(ApiFailure { class: ApiClass::IpBanned, error: api_error(ApiClass::IpBanned, http_status, wait, text) })
}

/// Failures decided by the HTTP status alone (both API generations): 429, 5xx, 3xx.
fn status_failure(api: &str, http_status: u16, retry_after: Option<Duration>, body: &[u8]) -> Option<ApiFailure> {
    let class = match http_status {
        429 => ApiClass::Qps,
        500..=599 => ApiClass::Transient,
        300..=399 => {
            return Some(ApiFailure {
                class: ApiClass::Permanent("redirect"),
                error: DeliveryError::Rejected {
                    vendor: VENDOR,
                    detail: format!(
                        "{api}: HTTP {http_status} redirect, which is not followed; check the configured API base URL"
                    ),
                },
            })
        }
        _ => return None,
    };
    let text = format!("{api}: HTTP {http_status}: {}", snippet(body));
    Some(ApiFailure { class, error: api_error(class, http_status, retry_after, text) })
}

/// Reads an old-API (`oapi`) answer: `Ok` with the whole body when `errcode` is 0 (or absent,
/// as on a few endpoints), else the classified failure with `request_id` in the detail.
pub fn old_api_answer(
    api: &str,
    http_status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<serde_json::Value, ApiFailure> {
    if let Some(failure) = status_failure(api, http_status, retry_after, body) {
        return Err(failure);
    }
    if let Some(ban) = ip_ban(api, http_status, body) {
        return Err(ban);
    }
    let transient = |detail: String| ApiFailure {
        class: ApiClass::Transient,
        error: DeliveryError::Server { vendor: VENDOR, status: http_status, detail },
    };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| transient(format!("{api}: unreadable answer ({err}): {}", snippet(body))))?;
    let answer: OldAnswer = serde_json::from_value(value.clone())
        .map_err(|err| transient(format!("{api}: unreadable answer ({err}): {}", snippet(body))))?;
    let errcode = answer.errcode.unwrap_or(0);
    if errcode == 0 && (200..300).contains(&http_status) {
        return Ok(value);
    }
    let sub_code = answer.sub_code.as_ref().and_then(|v| match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    });
    let mut text = format!("{api}: errcode {errcode}: {}", answer.errmsg);
    if let Some(sub) = sub_code.as_deref().filter(|s| !s.is_empty()) {
        text.push_str(&format!(" (sub_code {sub}"));
        if let Some(msg) = answer.sub_msg.as_deref().filter(|s| !s.is_empty()) {
            text.push_str(&format!(": {msg}"));
        }
        text.push(')');
    }
    if let Some(id) = answer.request_id.as_deref().filter(|s| !s.is_empty()) {
        text.push_str(&format!(" [request_id {id}]"));
    }
    let class = if errcode == 0 {
        // errcode 0 with a non-2xx status: the status decides.
        classify_code(http_status, "")
    } else {
        classify_errcode(errcode, sub_code.as_deref())
    };
    Err(ApiFailure { class, error: api_error(class, http_status, retry_after, text) })
}

/// Classifies a new-API (`api.dingtalk.com/v1.0`) answer with a non-2xx status: `{code, message,
/// requestid}`; `requestid` and any `accessdenieddetail` (e.g. the missing scope) are kept.
pub fn new_api_failure(api: &str, http_status: u16, retry_after: Option<Duration>, body: &[u8]) -> ApiFailure {
    let answer: Option<NewAnswer> = serde_json::from_slice(body).ok();
    let code = answer.as_ref().and_then(|a| a.code.clone()).unwrap_or_default();
    if code.is_empty() {
        if let Some(failure) = status_failure(api, http_status, retry_after, body) {
            return failure;
        }
    }
    let mut text = match &answer {
        Some(a) if !code.is_empty() => {
            format!("{api}: HTTP {http_status} {code}: {}", a.message.as_deref().unwrap_or(""))
        }
        _ => format!("{api}: HTTP {http_status}: {}", snippet(body)),
    };
    if let Some(detail) = answer.as_ref().and_then(|a| a.accessdenieddetail.as_ref()) {
        let detail = detail.to_string();
        text.push_str(&format!(" (accessdenieddetail {})", detail.chars().take(MAX_DETAIL_CHARS).collect::<String>()));
    }
    if let Some(id) = answer.as_ref().and_then(|a| a.requestid.as_deref()).filter(|s| !s.is_empty()) {
        text.push_str(&format!(" [requestid {id}]"));
    }
    let class = classify_code(http_status, &code);
    ApiFailure { class, error: api_error(class, http_status, retry_after, text) }
}

#[cfg(test)]
mod openapi_tests {
    use super::*;
    use connect::Disposition::{self, Auth, Permanent, Retry, RetryAfter};
    use serde_json::Value;

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    const QPS: Disposition = RetryAfter(Duration::from_secs(1));
    const QUOTA: Disposition = RetryAfter(MONTHLY_QUOTA_BACKOFF);
    const ROBOT: Disposition = RetryAfter(ROBOT_THROTTLE_PENALTY);

    /// (fixture section, example, expected class and disposition; `None` for a success).
    type Expectation = (&'static str, &'static str, Option<(ApiClass, Disposition)>);

    fn expectations() -> Vec<Expectation> {
        let old = "old_api_oapi_dingtalk_com";
        let new = "new_api_api_dingtalk_com";
        let robot = "custom_robot_webhook";
        let perm = |d| Some((ApiClass::Permanent(""), d));
        vec![
            (old, "gettoken_ok", None),
            (old, "gettoken_bad_secret", Some((ApiClass::Auth, Auth))),
            (old, "gettoken_missing_param", perm(Permanent)),
            (old, "topapi_invalid_token", Some((ApiClass::TokenRejected, Auth))),
            (old, "topapi_missing_token", perm(Permanent)),
            (old, "topapi_unknown_api", perm(Permanent)),
            (old, "rate_limited_app_per_api", Some((ApiClass::Qps, QPS))),
            (old, "rate_limited_global_per_api", Some((ApiClass::Qps, QPS))),
            (old, "monthly_quota_exceeded", Some((ApiClass::MonthlyQuota, QUOTA))),
            (old, "asyncsend_v2_ok", None),
            (old, "user_get_ok", None),
            (old, "user_getbymobile_ok", None),
            (old, "user_getbyunionid_ok", None),
            (old, "department_listsub_ok", None),
            (old, "department_listsubid_ok", None),
            (old, "department_get_ok", None),
            (old, "department_listparentbyuser_ok", None),
            (old, "user_list_ok", None),
            (old, "role_simplelist_ok", None),
            (new, "accessToken_ok", None),
            (new, "accessToken_bad_secret", Some((ApiClass::Auth, Auth))),
            (new, "invalid_access_token", Some((ApiClass::TokenRejected, Auth))),
            (new, "missing_token_header", perm(Permanent)),
            (new, "qps_app_per_api", Some((ApiClass::Qps, QPS))),
            (new, "qps_global_per_api", Some((ApiClass::Qps, QPS))),
            (new, "monthly_quota_exceeded", Some((ApiClass::MonthlyQuota, QUOTA))),
            (new, "permission_denied", perm(Permanent)),
            (new, "gateway_timeout", Some((ApiClass::Transient, Retry))),
            (new, "batchSend_ok", None),
            (new, "groupMessages_send_ok", None),
            (new, "card_createAndDeliver_ok", None),
            (new, "card_update_ok", None),
            (new, "workflow_start_ok", None),
            (new, "workflow_get_ok", None),
            (robot, "ok", None),
            (robot, "sign_mismatch", perm(Permanent)),
            (robot, "sign_mismatch_legacy_text", perm(Permanent)),
            (robot, "invalid_timestamp", perm(Permanent)),
            (robot, "keyword_missing", perm(Permanent)),
            (robot, "ip_not_whitelisted", perm(Permanent)),
            (robot, "too_fast", Some((ApiClass::RobotThrottled, ROBOT))),
            (robot, "too_fast_variant", Some((ApiClass::RobotThrottled, ROBOT))),
            (robot, "token_not_exist", perm(Permanent)),
        ]
    }

    fn same_class(a: ApiClass, b: ApiClass) -> bool {
        std::mem::discriminant(&a) == std::mem::discriminant(&b)
    }

    #[test]
    fn every_response_example_is_classified() {
        let examples = fixture("openapi/response_examples.json");
        let expected = expectations();
        let mut seen = 0;
        for section in ["old_api_oapi_dingtalk_com", "new_api_api_dingtalk_com", "custom_robot_webhook"] {
            let rows = examples[section].as_object().unwrap();
            for (name, example) in rows.iter().filter(|(_, v)| v.is_object()) {
                let (_, _, want) = expected
                    .iter()
                    .find(|(s, n, _)| *s == section && n == name)
                    .unwrap_or_else(|| panic!("no expectation for {section}.{name}; add one"));
                seen += 1;
                let status = u16::try_from(example["status"].as_u64().unwrap()).unwrap();
                let body = serde_json::to_vec(&example["body"]).unwrap();
                let api = format!("test {name}");
                let got = if section == "new_api_api_dingtalk_com" {
                    if (200..300).contains(&status) {
                        assert!(ip_ban(&api, status, &body).is_none(), "{name}");
                        None
                    } else {
                        Some(new_api_failure(&api, status, None, &body))
                    }
                } else {
                    old_api_answer(&api, status, None, &body).err()
                };
                match (want, got) {
                    (None, None) => {}
                    (Some((class, disposition)), Some(failure)) => {
                        assert!(same_class(*class, failure.class), "{section}.{name}: {:?}", failure.class);
                        assert_eq!(failure.error.disposition(), *disposition, "{section}.{name}: {}", failure.error);
                        let text = failure.error.to_string();
                        if let Some(id) =
                            example["body"]["requestid"].as_str().or(example["body"]["request_id"].as_str())
                        {
                            assert!(text.contains(id), "{section}.{name}: request id missing in {text}");
                        }
                        if let Some(code) = example["body"]["code"].as_str() {
                            assert!(text.contains(code), "{section}.{name}: {text}");
                        }
                        if let Some(code) = example["body"]["errcode"].as_i64() {
                            assert!(text.contains(&format!("errcode {code}")), "{section}.{name}: {text}");
                        }
                    }
                    (want, got) => panic!("{section}.{name}: expected {want:?}, got {got:?}"),
                }
            }
        }
        assert_eq!(seen, expected.len(), "every expectation names an existing example");
    }

    #[test]
    fn permission_errors_name_the_missing_scope() {
        let examples = fixture("openapi/response_examples.json");
        let example = &examples["new_api_api_dingtalk_com"]["permission_denied"];
        let body = serde_json::to_vec(&example["body"]).unwrap();
        let failure = new_api_failure("POST /v1.0/robot/oToMessages/batchSend", 403, None, &body);
        let text = failure.error.to_string();
        assert!(text.contains("qyapi_robot_sendmsg") && text.contains("developer console"), "{text}");
        assert!(text.contains("POST /v1.0/robot/oToMessages/batchSend"), "{text}");
    }

    #[test]
    fn every_listed_errcode_has_its_class() {
        let rows: &[(i64, Option<&str>, ApiClass)] = &[
            (-1, None, ApiClass::Transient),
            (15, Some("isp.top-remote-connection-timeout"), ApiClass::Transient),
            (22, None, ApiClass::Permanent("")),
            (88, None, ApiClass::Transient),
            (88, Some(""), ApiClass::Transient),
            (88, Some("40014"), ApiClass::TokenRejected),
            (88, Some("40000"), ApiClass::Permanent("")),
            (88, Some("somethingelse"), ApiClass::Permanent("")),
            (40_014, None, ApiClass::TokenRejected),
            (40_035, None, ApiClass::Permanent("")),
            (40_096, None, ApiClass::Auth),
            (60_011, None, ApiClass::Permanent("")),
            (60_121, None, ApiClass::Permanent("")),
            (90_002, None, ApiClass::Qps),
            (90_018, None, ApiClass::Qps),
            (90_019, None, ApiClass::Qps),
            (90_020, None, ApiClass::MonthlyQuota),
            (71_009, None, ApiClass::Permanent("")),
            (310_000, None, ApiClass::Permanent("")),
            (130_101, None, ApiClass::RobotThrottled),
            (300_005, None, ApiClass::Permanent("")),
            (424_242, None, ApiClass::Permanent("")),
        ];
        for (errcode, sub_code, want) in rows {
            let got = classify_errcode(*errcode, *sub_code);
            assert!(same_class(got, *want), "errcode {errcode} {sub_code:?}: {got:?}");
        }
    }

    #[test]
    fn every_listed_code_has_its_class() {
        let rows: &[(u16, &str, ApiClass)] = &[
            (400, "invalidClientIdOrSecret", ApiClass::Auth),
            (400, "InvalidAuthentication", ApiClass::TokenRejected),
            (401, "InvalidAuthentication", ApiClass::TokenRejected),
            (400, "AuthenticationFailed.MissingParameter", ApiClass::Permanent("")),
            (403, "Forbidden.AccessDenied.AccessTokenPermissionDenied", ApiClass::Permanent("")),
            (403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", ApiClass::Qps),
            (403, "Forbidden.AccessDenied.QpsLimitForApi", ApiClass::Qps),
            (403, "Forbidden.AccessDenied.ApiCountLimitForOrg", ApiClass::MonthlyQuota),
            (500, "unknownError", ApiClass::Transient),
            (400, "param.invalidCardParamMap", ApiClass::Permanent("")),
            (400, "invalidSuiteKey", ApiClass::Auth),
            // Unknown codes: the status decides.
            (401, "SomethingNew", ApiClass::TokenRejected),
            (429, "SomethingNew", ApiClass::Qps),
            (503, "ServiceUnavailable", ApiClass::Transient),
            (404, "NotFound", ApiClass::Permanent("")),
            (400, "", ApiClass::Permanent("")),
        ];
        for (status, code, want) in rows {
            let got = classify_code(*status, code);
            assert!(same_class(got, *want), "{status} {code}: {got:?}");
        }
    }

    #[test]
    fn status_only_failures_and_retry_after() {
        let f = new_api_failure("GET /x", 502, None, b"<html>bad gateway</html>");
        assert_eq!(f.error.disposition(), Retry);
        let f = new_api_failure("GET /x", 429, Some(Duration::from_secs(7)), b"");
        assert_eq!(f.error.disposition(), RetryAfter(Duration::from_secs(7)));
        // A QPS answer never asks for less than the 1 s window.
        let body = br#"{"code":"Forbidden.AccessDenied.QpsLimitForApi","message":"x","requestid":"r"}"#;
        let f = new_api_failure("GET /x", 403, Some(Duration::ZERO), body);
        assert_eq!(f.error.disposition(), QPS);
        let f = new_api_failure("GET /x", 302, None, b"");
        assert_eq!(f.error.disposition(), Permanent);
        let f = new_api_failure("GET /x", 401, None, b"");
        assert_eq!(f.class, ApiClass::TokenRejected);
        let err = old_api_answer("POST /topapi/x", 503, None, b"").unwrap_err();
        assert_eq!(err.error.disposition(), Retry);
        let err = old_api_answer("POST /topapi/x", 200, None, b"<html>").unwrap_err();
        assert_eq!(err.error.disposition(), Retry);
    }

    #[test]
    fn the_ip_ban_answer_is_not_a_success() {
        let examples = fixture("openapi/response_examples.json");
        let body = serde_json::to_vec(&examples["stream_gateway_ip_ban"]["body"]).unwrap();
        let err = old_api_answer("POST /topapi/x", 200, None, &body).unwrap_err();
        assert_eq!(err.class, ApiClass::IpBanned);
        assert_eq!(err.error.disposition(), RetryAfter(IP_BAN_BACKOFF));
        assert!(ip_ban("GET /v1.0/x", 200, &body).is_some());
        assert!(ip_ban("GET /v1.0/x", 200, br#"{"processQueryKey":"k"}"#).is_none());
    }

    #[test]
    fn a_token_rejected_twice_is_an_auth_error() {
        let err = api_error(ApiClass::TokenRejected, 400, None, "x".to_owned());
        assert_eq!(err.disposition(), Auth);
        assert!(err.to_string().contains("rejected even after a refresh"));
    }
}
