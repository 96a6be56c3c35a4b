//! Zoho's pushes as a [`PushIntake`]: notifications of the source's watch channel, and the
//! webhooks of workflow rules (for changes a channel does not report), both opened by the
//! channel token, which travels inside the body; and the channel itself as a
//! [`PushSubscription`], which lapses unless renewed.

use super::client::ZohoClient;
use super::source::{self, max_expiry, renew_if_due, verify_notification, NotificationError, WatchChannel};
use crate::push::{
    Acknowledgement, PushIntake, PushRefusal, PushRequest, PushSetup, PushSetupError, PushSubscription, Pushed,
    PushedChange,
};
use async_trait::async_trait;
use connect::clock::pause;
use connect::Clock;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the source's channel notifications are posted.
pub const PATH: &str = "/intake/zoho/{source}";
/// Where workflow-rule webhooks are posted.
pub const WORKFLOW_PATH: &str = "/intake/zoho/{source}/workflow";
/// Every route Zoho pushes to.
pub const PATHS: &[&str] = &[PATH, WORKFLOW_PATH];

/// A stable numeric channel id for a source (Zoho channel ids are numbers).
pub fn channel_id(source: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in source.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{}", 1_000_000_000 + hash % 9_000_000_000)
}

/// The watch channel of a source: every change of its modules, pushed to `notify_url`, opened
/// by the channel token (the setup's shared secret).
pub fn channel(setup: &PushSetup<'_>) -> Result<WatchChannel, PushSetupError> {
    let refused = |detail: String| PushSetupError { source_name: setup.source.to_owned(), detail };
    let token = setup.credentials.shared_secret.as_ref().ok_or_else(|| refused("no channel token".into()))?;
    let events: Vec<String> = setup.objects.iter().map(|m| format!("{m}.all")).collect();
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    WatchChannel::new(&channel_id(setup.source), &events, &setup.notify_url, token.secret_string().clone())
        .map_err(|e| refused(e.to_string()))
}

/// One Zoho source's doors: its channel's notifications and its workflow webhooks.
pub struct NotificationIntake {
    pub channel: WatchChannel,
    /// The modules the source watches: a workflow webhook of another is refused, so whoever set
    /// up the rule sees it fail in Zoho.
    pub objects: Vec<String>,
}

/// Every refusal is 401: the channel token travels inside the body, so a body that cannot be
/// read carries no credential either. The message says which it was.
fn refusal(err: &NotificationError, code: &'static str) -> PushRefusal {
    PushRefusal::Unauthenticated { code, detail: err.to_string() }
}

impl NotificationIntake {
    fn notification(&self, request: &PushRequest<'_>) -> Result<Pushed, PushRefusal> {
        let notification = verify_notification(request.body, std::slice::from_ref(&self.channel))
            .map_err(|err| refusal(&err, "bad_notification"))?;
        notification.check_fresh(request.now.as_millisecond()).map_err(|err| refusal(&err, "stale_notification"))?;
        let change = match notification.operation.as_str() {
            "insert" => "created",
            "delete" => "deleted",
            _ => "updated",
        };
        let detail = json!({ "channel_id": notification.channel_id, "operation": notification.operation, "server_time": notification.server_time });
        let changes = notification.ids.iter().map(|id| PushedChange {
            push_id: format!("{}:{}:{id}", notification.channel_id, notification.server_time),
            object: notification.module.clone(),
            id: id.clone(),
            change,
            detail: detail.clone(),
        });
        Ok(Pushed::Changed(changes.collect()))
    }

    fn workflow(&self, request: &PushRequest<'_>) -> Result<Pushed, PushRefusal> {
        let hook = source::WorkflowWebhook::parse_verified(request.body, &self.channel.token)
            .map_err(|err| refusal(&err, "bad_webhook"))?;
        if !self.objects.iter().any(|o| o.eq_ignore_ascii_case(&hook.module)) {
            return Err(PushRefusal::Unprocessable {
                code: "unwatched_module",
                detail: format!("the source does not list module `{}`", hook.module),
            });
        }
        let stamp = hook.modified_time.clone().unwrap_or_else(|| request.now.as_millisecond().to_string());
        let detail = json!({ "workflow": true, "stage": hook.stage, "modified_time": hook.modified_time });
        Ok(Pushed::Changed(vec![PushedChange {
            push_id: format!("workflow:{}:{stamp}", hook.id),
            object: hook.module,
            id: hook.id,
            change: "updated",
            detail,
        }]))
    }
}

impl PushIntake for NotificationIntake {
    fn receive(&self, request: &PushRequest<'_>) -> Result<Pushed, PushRefusal> {
        if request.path == WORKFLOW_PATH {
            self.workflow(request)
        } else {
            self.notification(request)
        }
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::Accepted
    }
}

/// Keeps a source's notification channel open: enables it (retrying every minute until Zoho
/// accepts), then pushes its expiry a week ahead before it lapses.
pub struct ChannelKeeper {
    pub source: String,
    pub client: Arc<ZohoClient>,
    pub channel: WatchChannel,
    pub clock: Arc<dyn Clock>,
}

const ENABLE_RETRY: Duration = Duration::from_secs(60);
const RENEW_CHECK: Duration = Duration::from_secs(3600);

#[async_trait]
impl PushSubscription for ChannelKeeper {
    async fn keep_open(&self, cancel: CancellationToken) {
        let (source, channel) = (&self.source, &self.channel);
        let mut expiry = loop {
            let expiry = max_expiry(self.clock.now());
            match self.client.watch(channel.enable_body(expiry)).await {
                Ok(answer) if answer.first().is_some_and(|s| s.is_success()) => {
                    tracing::info!(source, channel = %channel.channel_id, "Zoho notification channel enabled.");
                    break expiry;
                }
                Ok(answer) => {
                    tracing::warn!(source, answer = ?answer.first().map(|s| s.summary()), "Zoho refused the notification channel; retrying in a minute.")
                }
                Err(err) => {
                    tracing::warn!(source, "Enabling the Zoho notification channel failed; retrying in a minute: {err}")
                }
            }
            if !pause(&cancel, ENABLE_RETRY).await {
                return;
            }
        };
        loop {
            if !pause(&cancel, RENEW_CHECK).await {
                return;
            }
            match renew_if_due(&self.client, channel, expiry, source::DEFAULT_RENEW_MARGIN, self.clock.as_ref()).await {
                Ok(Some(next)) => expiry = next,
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(source, "Renewing the Zoho notification channel failed; will retry: {err}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;
    use std::collections::BTreeMap;

    const TOKEN: &str = "dbr-7f3a9c1e5b2d4a68";
    /// `server_time` of `notifications/callback_update.json`.
    const SENT_AT_MS: i64 = 1_755_153_006_473;

    fn intake(token: &str) -> NotificationIntake {
        let channel = WatchChannel::new(
            "1000000068001",
            &["Deals.all"],
            "https://gw.example/intake/zoho/deals",
            SecretString::from(token),
        )
        .unwrap();
        NotificationIntake { channel, objects: vec!["Deals".into()] }
    }

    fn receive(intake: &NotificationIntake, path: &str, body: &[u8], now_ms: i64) -> Result<Pushed, PushRefusal> {
        let (headers, query) = (http::HeaderMap::new(), BTreeMap::new());
        let now = jiff::Timestamp::from_millisecond(now_ms).unwrap();
        intake.receive(&PushRequest { path, token: None, headers: &headers, query: &query, body, now })
    }

    fn notification() -> Vec<u8> {
        fixtures::read_fixture("zoho/notifications/callback_update.json").into_bytes()
    }

    #[test]
    fn a_channel_notification_names_each_changed_record() {
        let Pushed::Changed(changes) = receive(&intake(TOKEN), PATH, &notification(), SENT_AT_MS).unwrap() else {
            panic!("a change")
        };
        let [change] = &changes[..] else { panic!("one change: {changes:?}") };
        assert_eq!(change.push_id, "1000000068001:1755153006473:5843104000001234001");
        assert_eq!((change.object.as_str(), change.id.as_str()), ("Deals", "5843104000001234001"));
        assert_eq!(intake(TOKEN).acknowledgement(), Acknowledgement::Accepted);
    }

    #[test]
    fn a_notification_with_another_token_or_sent_long_ago_is_refused() {
        let forged = receive(&intake("dbr-another-channel-token"), PATH, &notification(), SENT_AT_MS).unwrap_err();
        assert_eq!((forged.status(), forged.code()), (401, "bad_notification"));
        let replayed = receive(&intake(TOKEN), PATH, &notification(), SENT_AT_MS + 10 * 60 * 1000).unwrap_err();
        assert_eq!((replayed.status(), replayed.code()), (401, "stale_notification"));
    }

    fn workflow(module: &str, secret: &str) -> Vec<u8> {
        let body = serde_json::json!({"module": module, "id": "5843104000001234001", "stage": "Closed Won",
            "modified_time": "2025-08-14T15:10:06+08:00", "secret": secret});
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn a_workflow_webhook_opens_with_the_channel_token_for_a_watched_module_only() {
        let Pushed::Changed(changes) =
            receive(&intake(TOKEN), WORKFLOW_PATH, &workflow("Deals", TOKEN), SENT_AT_MS).unwrap()
        else {
            panic!("a change")
        };
        assert_eq!(changes[0].push_id, "workflow:5843104000001234001:2025-08-14T15:10:06+08:00");
        let forged = receive(&intake(TOKEN), WORKFLOW_PATH, &workflow("Deals", "guess"), SENT_AT_MS).unwrap_err();
        assert_eq!((forged.status(), forged.code()), (401, "bad_webhook"));
        let unwatched = receive(&intake(TOKEN), WORKFLOW_PATH, &workflow("Leads", TOKEN), SENT_AT_MS).unwrap_err();
        assert_eq!((unwatched.status(), unwatched.code()), (422, "unwatched_module"));
        // The notification door does not take a workflow body, nor the other way round.
        assert!(receive(&intake(TOKEN), PATH, &workflow("Deals", TOKEN), SENT_AT_MS).is_err());
        assert!(receive(&intake(TOKEN), WORKFLOW_PATH, &notification(), SENT_AT_MS).is_err());
    }
}
