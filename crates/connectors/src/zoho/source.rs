//! Change notifications from Zoho (reference B4): Notifications API channels (enable, renew before
//! they lapse, verify the channel token on every callback) and workflow-webhook payloads.
//!
//! Callbacks carry no signature; the channel `token` (≤ 50 chars) is the only proof, so it is
//! compared in constant time.

use super::client::{format_datetime, ZohoClient};
use super::VENDOR;
use connect::{Clock, DeliveryError};
use jiff::{SignedDuration, Timestamp};
use model::ZonedTime;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Zoho keeps a channel at most one week; a longer or missing expiry becomes one hour.
pub const MAX_CHANNEL_LIFETIME: SignedDuration = SignedDuration::from_hours(24 * 7);
/// The channel token's maximum length.
pub const MAX_TOKEN_CHARS: usize = 50;
/// Renew when less than this is left, so one failed renewal still leaves time to retry.
pub const DEFAULT_RENEW_MARGIN: SignedDuration = SignedDuration::from_hours(12);

/// Problems with a channel definition or an incoming notification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    #[error("the channel token has {0} characters; Zoho accepts at most 50")]
    TokenTooLong(usize),
    #[error("the notification is not a Zoho callback ({0})")]
    Malformed(String),
    #[error("the notification names channel `{0}`, which dingbridge did not enable; ignored")]
    UnknownChannel(String),
    #[error("the notification token does not match the channel's token; ignored")]
    BadToken,
    #[error("the notification's server_time {server_time} is more than 5 minutes from the gateway's clock: a replay, or a clock is off")]
    Stale { server_time: i64 },
}

/// How far a notification's `server_time` may be from the gateway's clock, either way. Zoho
/// posts a notification as the record changes; a captured one sent again later is refused (one
/// sent again within the window is a duplicate of the first).
pub const NOTIFICATION_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// One notification channel as dingbridge enables it.
#[derive(Clone)]
pub struct WatchChannel {
    pub channel_id: String,
    /// `Deals.create`, `Deals.edit`, `Deals.delete`, `Deals.all` …
    pub events: Vec<String>,
    pub notify_url: String,
    pub token: SecretString,
    pub return_affected_field_values: bool,
}

impl std::fmt::Debug for WatchChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchChannel")
            .field("channel_id", &self.channel_id)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl WatchChannel {
    pub fn new(
        channel_id: &str,
        events: &[&str],
        notify_url: &str,
        token: SecretString,
    ) -> Result<Self, NotificationError> {
        let len = token.expose_secret().chars().count();
        if len > MAX_TOKEN_CHARS {
            return Err(NotificationError::TokenTooLong(len));
        }
        Ok(Self {
            channel_id: channel_id.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            notify_url: notify_url.into(),
            token,
            return_affected_field_values: true,
        })
    }

    /// Body of `POST /actions/watch` enabling the channel until `expiry`.
    pub fn enable_body(&self, expiry: ZonedTime) -> Value {
        json!({ "watch": [{
            "channel_id": self.channel_id,
            "events": self.events,
            "channel_expiry": format_datetime(expiry),
            "token": self.token.expose_secret(),
            "return_affected_field_values": self.return_affected_field_values,
            "notify_url": self.notify_url,
            "notify_on_related_action": false,
        }]})
    }

    /// Body of `PATCH /actions/watch` pushing the expiry to `expiry`.
    pub fn extend_body(&self, expiry: ZonedTime) -> Value {
        json!({ "watch": [{
            "channel_id": self.channel_id,
            "events": self.events,
            "channel_expiry": format_datetime(expiry),
        }]})
    }
}

/// The longest expiry Zoho accepts from `now` (a minute short of a week, against clock skew).
pub fn max_expiry(now: Timestamp) -> ZonedTime {
    ZonedTime(now.saturating_add(MAX_CHANNEL_LIFETIME - SignedDuration::from_mins(1)).unwrap_or(now))
}

/// When a channel expiring at `expiry` must be renewed: `margin` before expiry.
pub fn renew_at(expiry: ZonedTime, margin: SignedDuration) -> Timestamp {
    expiry.0.saturating_sub(margin).unwrap_or(expiry.0)
}

/// Whether the channel is due for renewal now, by the injected clock.
pub fn renewal_due(expiry: ZonedTime, margin: SignedDuration, clock: &dyn Clock) -> bool {
    clock.now() >= renew_at(expiry, margin)
}

/// Pushes the channel's expiry a week ahead if it is due (by `clock`); the new expiry, or `None`
/// when nothing was due. Run it on a timer shorter than `margin`.
pub async fn renew_if_due(
    client: &ZohoClient,
    channel: &WatchChannel,
    expiry: ZonedTime,
    margin: SignedDuration,
    clock: &dyn Clock,
) -> Result<Option<ZonedTime>, DeliveryError> {
    if !renewal_due(expiry, margin, clock) {
        return Ok(None);
    }
    let new_expiry = max_expiry(clock.now());
    let answer = client.patch_watch(channel.extend_body(new_expiry)).await?;
    match answer.first() {
        Some(status) if status.is_success() => {
            tracing::info!(channel_id = %channel.channel_id, "Zoho notification channel renewed.");
            Ok(Some(new_expiry))
        }
        other => Err(DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!(
                "renewing channel {} failed ({}); enable it again",
                channel.channel_id,
                other.map_or_else(|| "empty answer".to_owned(), |s| s.summary())
            ),
        }),
    }
}

/// The body Zoho POSTs to `notify_url`.
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    pub server_time: i64,
    #[serde(default)]
    pub query_params: BTreeMap<String, Value>,
    pub module: String,
    #[serde(default)]
    pub resource_uri: Option<String>,
    pub ids: Vec<String>,
    #[serde(default)]
    pub affected_fields: Vec<Value>,
    /// With `return_affected_field_values` (shape observed, not documented).
    #[serde(default)]
    pub affected_values: Vec<AffectedValues>,
    /// `insert`, `update` or `delete`.
    pub operation: String,
    pub channel_id: String,
    token: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AffectedValues {
    pub record_id: String,
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
}

impl Notification {
    pub fn parse(body: &[u8]) -> Result<Notification, NotificationError> {
        serde_json::from_slice(body).map_err(|e| NotificationError::Malformed(e.to_string()))
    }

    pub fn server_time(&self) -> Option<ZonedTime> {
        ZonedTime::from_millis("server_time", self.server_time).ok()
    }

    /// Whether `server_time` is within [`NOTIFICATION_TOLERANCE_MS`] of `now_ms`.
    pub fn check_fresh(&self, now_ms: i64) -> Result<(), NotificationError> {
        if now_ms.abs_diff(self.server_time) > NOTIFICATION_TOLERANCE_MS.unsigned_abs() {
            return Err(NotificationError::Stale { server_time: self.server_time });
        }
        Ok(())
    }
}

/// Parses a callback and checks it belongs to one of `channels` and carries that channel's token.
pub fn verify_notification(body: &[u8], channels: &[WatchChannel]) -> Result<Notification, NotificationError> {
    let n = Notification::parse(body)?;
    let channel = channels
        .iter()
        .find(|c| c.channel_id == n.channel_id)
        .ok_or_else(|| NotificationError::UnknownChannel(n.channel_id.clone()))?;
    if !connect::secret::matches(channel.token.expose_secret().as_bytes(), n.token.as_bytes()) {
        return Err(NotificationError::BadToken);
    }
    Ok(n)
}

/// The payload dingbridge recommends for admin-configured workflow webhooks (raw JSON built from
/// merge fields): `{"module","id","stage","modified_time","secret"}`. The record itself is
/// fetched through the API afterwards.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowWebhook {
    pub module: String,
    pub id: String,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub modified_time: Option<String>,
    secret: String,
}

impl WorkflowWebhook {
    /// Parses the payload and checks its shared secret in constant time.
    pub fn parse_verified(body: &[u8], secret: &SecretString) -> Result<WorkflowWebhook, NotificationError> {
        let hook: WorkflowWebhook =
            serde_json::from_slice(body).map_err(|e| NotificationError::Malformed(e.to_string()))?;
        if !connect::secret::matches(secret.expose_secret().as_bytes(), hook.secret.as_bytes()) {
            return Err(NotificationError::BadToken);
        }
        Ok(hook)
    }

    pub fn modified_time(&self) -> Option<ZonedTime> {
        self.modified_time.as_deref().and_then(|t| ZonedTime::parse("modified_time", t).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct FixedClock(Timestamp);
    impl Clock for FixedClock {
        fn now(&self) -> Timestamp {
            self.0
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        fixtures::read_fixture(format!("zoho/{name}")).into_bytes()
    }

    fn channel() -> WatchChannel {
        WatchChannel::new(
            "1000000068001",
            &["Deals.create", "Deals.edit", "Deals.delete"],
            "https://dingbridge.hktrading.example/hooks/zoho/notify?src=crm",
            "dbr-7f3a9c1e5b2d4a68".into(),
        )
        .unwrap()
    }

    #[test]
    fn enable_body_matches_the_fixture() {
        let expected: Value = serde_json::from_slice(&fixture("notifications/watch_request.json")).unwrap();
        let expiry = ZonedTime::parse("e", "2025-08-21T09:00:00+08:00").unwrap();
        assert_eq!(channel().enable_body(expiry), expected);
        let patch: Value = serde_json::from_slice(&fixture("notifications/extend_expiry_patch_request.json")).unwrap();
        let later = ZonedTime::parse("e", "2025-08-28T09:00:00+08:00").unwrap();
        assert_eq!(channel().extend_body(later), patch);
    }

    #[test]
    fn long_tokens_are_refused() {
        let err = WatchChannel::new("1", &["Deals.all"], "https://x", "x".repeat(51).into()).unwrap_err();
        assert_eq!(err, NotificationError::TokenTooLong(51));
    }

    #[test]
    fn renewal_is_due_margin_before_expiry() {
        let expiry = ZonedTime::parse("e", "2025-08-21T09:00:00+08:00").unwrap();
        let margin = SignedDuration::from_hours(12);
        let before: Timestamp = "2025-08-20T12:59:59Z".parse().unwrap();
        let at: Timestamp = "2025-08-20T13:00:00Z".parse().unwrap();
        assert!(!renewal_due(expiry, margin, &FixedClock(before)));
        assert!(renewal_due(expiry, margin, &FixedClock(at)));
        assert!(renewal_due(expiry, margin, &FixedClock("2025-08-22T00:00:00Z".parse().unwrap())));
        let max = max_expiry(at);
        assert!(max.0 < at.saturating_add(MAX_CHANNEL_LIFETIME).unwrap());
        assert!(!renewal_due(max, margin, &FixedClock(at)));
    }

    #[test]
    fn callbacks_are_verified_by_channel_and_token() {
        let n = verify_notification(&fixture("notifications/callback_update.json"), &[channel()]).unwrap();
        assert_eq!((n.module.as_str(), n.operation.as_str()), ("Deals", "update"));
        assert_eq!(n.ids, ["5843104000001234001"]);
        assert_eq!(n.affected_values[0].values["Stage"], "Negotiation/Review");
        assert_eq!(n.query_params["src"], "crm");
        let n =
            verify_notification(&fixture("notifications/callback_insert_from_docs_shape.json"), &[channel()]).unwrap();
        assert_eq!(n.operation, "insert");
        assert!(n.server_time().is_some());

        let mut wrong = channel();
        wrong.token = "dbr-7f3a9c1e5b2d4a69".into();
        let body = fixture("notifications/callback_update.json");
        assert_eq!(verify_notification(&body, &[wrong]).unwrap_err(), NotificationError::BadToken);
        let mut other = channel();
        other.channel_id = "42".into();
        assert!(matches!(verify_notification(&body, &[other]), Err(NotificationError::UnknownChannel(_))));
        assert!(matches!(verify_notification(b"{}", &[channel()]), Err(NotificationError::Malformed(_))));
    }

    #[test]
    fn workflow_webhook_payload() {
        let body = br#"{"module":"Deals","id":"5843104000001234001","stage":"Closed Won","modified_time":"2025-08-21T10:10:00+08:00","secret":"s3"}"#;
        let hook = WorkflowWebhook::parse_verified(body, &"s3".into()).unwrap();
        assert_eq!((hook.id.as_str(), hook.stage.as_deref()), ("5843104000001234001", Some("Closed Won")));
        assert!(hook.modified_time().is_some());
        assert_eq!(WorkflowWebhook::parse_verified(body, &"s4".into()).unwrap_err(), NotificationError::BadToken);
    }

    #[test]
    fn notifications_are_fresh_only_within_five_minutes() {
        let body = |server_time: i64| {
            serde_json::to_vec(&serde_json::json!({"server_time": server_time, "module": "Deals", "ids": ["1"],
                "operation": "update", "channel_id": "c", "token": "t"}))
            .unwrap()
        };
        let now = 1_767_225_600_000_i64;
        for (offset, fresh) in [(0, true), (-300_000, true), (300_000, true), (-300_001, false), (300_001, false)] {
            let n = Notification::parse(&body(now + offset)).unwrap();
            assert_eq!(n.check_fresh(now).is_ok(), fresh, "{offset}");
        }
    }
}
