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

/// Waits `period` unless `cancel` fires first; false when cancelled.
async fn pause(cancel: &CancellationToken, period: Duration) -> bool {
    cancel.run_until_cancelled(tokio::time::sleep(period)).await.is_some()
}

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
