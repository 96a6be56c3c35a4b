//! The sink of a `dingtalk_app` destination: everything an internal app sends — work
//! notifications, robot group messages, interactive cards (create and update) and OA approval
//! instances. The flow renders one [`AppMessage`] per delivery; this file maps it onto the
//! typed clients (`messages`, `cards`, `workflow`), which own the wire formats.

use super::cards::{CardInstance, CardParams, CardsClient};
use super::messages::{AppRobotMessage, Messages, Recipients, WorkMessage, WorkNotification};
use super::openapi::OpenApi;
use super::workflow::{ActionType, FormValue, StartProcessInstance, WorkflowClient};
use async_trait::async_trait;
use connect::{Delivery, DeliveryError, Idempotency, Pacing, Receipt, Sink};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// DingTalk's per-API window is one second; the outbox paces by a slightly longer one, so clock
/// skew between instances and the vendor never lets a 21st call into DingTalk's second.
const APP_PACING_WINDOW: Duration = Duration::from_millis(1_100);

/// Waits before sending again to flow-controlled robot recipients within one delivery.
const FLOW_CONTROL_RETRIES: [std::time::Duration; 2] =
    [std::time::Duration::from_secs(1), std::time::Duration::from_secs(3)];

/// One rendered delivery of a `dingtalk_app` destination (the flow engine's output).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "api", rename_all = "snake_case", deny_unknown_fields)]
pub enum AppMessage {
    WorkNotice {
        users: Vec<String>,
        title: String,
        text: String,
    },
    RobotMessage {
        users: Vec<String>,
        title: String,
        text: String,
    },
    GroupMessage {
        group: String,
        title: String,
        text: String,
    },
    Card {
        template_id: String,
        out_track_id: String,
        #[serde(default)]
        group: Option<String>,
        #[serde(default)]
        users: Option<Vec<String>>,
        params: BTreeMap<String, String>,
        #[serde(default)]
        private_params: Option<BTreeMap<String, String>>,
        #[serde(default)]
        private_to: Option<Vec<String>>,
        callback: String,
        #[serde(default)]
        callback_route_key: Option<String>,
    },
    CardUpdate {
        out_track_id: String,
        params: BTreeMap<String, String>,
        #[serde(default)]
        private_params: Option<BTreeMap<String, String>>,
        #[serde(default)]
        private_to: Option<Vec<String>>,
    },
    Approval {
        process_code: String,
        originator: String,
        #[serde(default)]
        dept_id: Option<String>,
        #[serde(default)]
        approvers: Option<Vec<String>>,
        form: BTreeMap<String, String>,
    },
}

/// Sends through one DingTalk app.
pub struct AppSink {
    name: String,
    robot_code: String,
    /// `dingtalk-app:<digest of the app key>`: the app's window in the store's pacing ledger.
    pacing_key: String,
    qps_per_api: u32,
    messages: Messages,
    cards: CardsClient,
    workflow: WorkflowClient,
}

impl std::fmt::Debug for AppSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSink").field("name", &self.name).field("robot_code", &self.robot_code).finish()
    }
}

impl AppSink {
    /// `robot_code`: the app robot for group messages and cards (DingTalk: normally the app key).
    pub fn new(name: &str, api: OpenApi, robot_code: Option<String>) -> Self {
        let robot_code = robot_code.unwrap_or_else(|| api.app_key().to_owned());
        let digest = Sha256::digest(api.app_key().as_bytes());
        Self {
            name: name.to_owned(),
            robot_code,
            pacing_key: format!("dingtalk-app:{}", hex::encode(&digest[..12])),
            qps_per_api: api.qps_per_api(),
            messages: Messages::new(api.clone()),
            cards: CardsClient::new(api.clone()),
            workflow: WorkflowClient::new(api),
        }
    }

    fn bad(&self, detail: impl Into<String>) -> DeliveryError {
        DeliveryError::BadPayload { destination: self.name.clone(), detail: detail.into() }
    }

    /// Robot 1:1 messages. DingTalk answers per-user flow control by listing the users who got
    /// nothing; they are sent to again within this delivery (the outbox would resend to everyone).
    /// Whoever is still flow-controlled after the last try fails the delivery by name, so an
    /// operator sees exactly who did not get it.
    async fn robot_message(&self, users: Vec<String>, msg: AppRobotMessage) -> Result<Receipt, DeliveryError> {
        let mut pending = users;
        let mut keys = Vec::new();
        let mut unreachable = Vec::new();
        for attempt in 0..=FLOW_CONTROL_RETRIES.len() {
            if attempt > 0 {
                tokio::time::sleep(FLOW_CONTROL_RETRIES[attempt - 1]).await;
            }
            let outcome = self.messages.batch_send(&self.robot_code, &pending, &msg).await?;
            keys.extend(outcome.process_query_keys.iter().cloned());
            unreachable.extend(outcome.invalid.iter().chain(&outcome.filtered).cloned());
            pending = outcome.retry_these();
            if let Some(failure) = outcome.failure {
                // A later chunk failed: the earlier ones went out; only the rest are retried.
                if keys.is_empty() {
                    return Err(failure);
                }
            }
            if pending.is_empty() {
                let detail = if unreachable.is_empty() {
                    "robot message sent".to_owned()
                } else {
                    format!("robot message sent; not users DingTalk can reach: {}", unreachable.join(","))
                };
                return Ok(Receipt { vendor_id: Some(keys.join(",")), detail: Some(detail) });
            }
        }
        Err(DeliveryError::Rejected {
            vendor: super::VENDOR,
            detail: format!(
                "robot message reached some users, but DingTalk kept flow-controlling {} (sent to the others: {})",
                pending.join(","),
                keys.join(",")
            ),
        })
    }

    async fn send(&self, message: AppMessage) -> Result<Receipt, DeliveryError> {
        match message {
            AppMessage::WorkNotice { users, title, text } => {
                if users.is_empty() {
                    return Err(self.bad("the work notice has no recipients (`users` rendered empty)"));
                }
                let notice = WorkNotification::new(Recipients::users(users), WorkMessage::markdown(title, text));
                let task_id = self.messages.send_work_notification(&notice).await?;
                Ok(Receipt { vendor_id: Some(task_id.to_string()), detail: Some("work notification accepted".into()) })
            }
            AppMessage::RobotMessage { users, title, text } => {
                if users.is_empty() {
                    return Err(self.bad("the robot message has no recipients (`users` rendered empty)"));
                }
                self.robot_message(users, AppRobotMessage::sample_markdown(title, text)).await
            }
            AppMessage::GroupMessage { group, title, text } => {
                if group.is_empty() {
                    return Err(self.bad("the group message has no group (`group` rendered empty)"));
                }
                let msg = AppRobotMessage::sample_markdown(title, text);
                let key = self.messages.group_send(&self.robot_code, &group, &msg).await?;
                Ok(Receipt { vendor_id: Some(key), detail: None })
            }
            AppMessage::Card {
                template_id,
                out_track_id,
                group,
                users,
                params,
                private_params,
                private_to,
                callback,
                callback_route_key,
            } => {
                let params = CardParams::from(params);
                let mut card = match (group, users.as_deref()) {
                    (Some(group), None) if !group.is_empty() => {
                        CardInstance::to_group(&template_id, &out_track_id, &group, &self.robot_code, params)
                    }
                    (None, Some([user])) => {
                        CardInstance::to_robot_chat(&template_id, &out_track_id, user, &self.robot_code, params)
                    }
                    (None, Some(users)) if users.len() > 1 => {
                        // One card instance in each user's chat with the robot: the spaces of one
                        // instance are `;`-separated (reference §4.1).
                        let mut card = CardInstance::to_robot_chat(
                            &template_id,
                            &out_track_id,
                            &users[0],
                            &self.robot_code,
                            params,
                        );
                        card.open_space_id =
                            users.iter().map(|u| super::cards::robot_space_id(u)).collect::<Vec<_>>().join(";");
                        card
                    }
                    _ => return Err(self.bad("a card needs a non-empty `group` or `users`")),
                };
                if let (Some(private), Some(to)) = (private_params, private_to) {
                    let private = CardParams::from(private);
                    for user in to {
                        card = card.with_private(&user, private.clone());
                    }
                }
                card = match (callback.as_str(), callback_route_key) {
                    ("http", Some(route)) => card.with_http_callback(&route),
                    _ => card.with_stream_callback(),
                };
                let result = self.cards.create_and_deliver(&card).await?;
                let detail = if result.already_existed { "card already existed" } else { "card created" };
                Ok(Receipt { vendor_id: Some(result.out_track_id), detail: Some(detail.into()) })
            }
            AppMessage::CardUpdate { out_track_id, params, private_params, private_to } => {
                if out_track_id.is_empty() {
                    return Err(self.bad("the card update has no `out_track_id`"));
                }
                let shared = (!params.is_empty()).then(|| CardParams::from(params));
                let mut private = BTreeMap::new();
                if let (Some(values), Some(to)) = (private_params, private_to) {
                    let values = CardParams::from(values);
                    for user in to {
                        private.insert(user, values.clone());
                    }
                }
                self.cards.update(&out_track_id, shared, private, true).await?;
                Ok(Receipt { vendor_id: Some(out_track_id), detail: Some("card updated".into()) })
            }
            AppMessage::Approval { process_code, originator, dept_id, approvers, form } => {
                let mut start = StartProcessInstance::new(&originator, &process_code);
                if let Some(dept) = dept_id.filter(|d| !d.is_empty()) {
                    let dept: i64 =
                        dept.parse().map_err(|_| self.bad(format!("dept_id `{dept}` is not a department number")))?;
                    start = start.with_dept(dept);
                }
                // Listed approvers decide one after another, each a single-approver step.
                for approver in approvers.unwrap_or_default() {
                    start = start.with_approvers(ActionType::None, &[approver]);
                }
                for (name, value) in &form {
                    start = start.with_value(FormValue::text(name, value));
                }
                let instance_id = self.workflow.start(&start).await?;
                Ok(Receipt { vendor_id: Some(instance_id), detail: Some("approval instance started".into()) })
            }
        }
    }
}

#[async_trait]
impl Sink for AppSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let message: AppMessage = serde_json::from_value(delivery.payload.clone())
            .map_err(|e| self.bad(format!("not a dingtalk_app message: {e}")))?;
        self.send(message).await
    }

    /// DingTalk limits each API of an app to `qps_per_api` calls in any second, whoever calls;
    /// a delivery calls each of its APIs once (a card: create, then deliver), so pacing the
    /// app's deliveries by that window keeps every API under it, for every instance on the
    /// store, and the wait comes before the attempt's timeout starts.
    fn pacing(&self) -> Option<Pacing> {
        Some(Pacing { key: self.pacing_key.clone(), max: self.qps_per_api, window: APP_PACING_WINDOW })
    }

    /// Cards carry our outTrackId and DingTalk dedupes identical work notices, but robot group
    /// messages and approval starts have no dedupe field: a call in flight at a crash may repeat.
    fn idempotency(&self) -> Idempotency {
        Idempotency::None
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        self.messages.api().tokens().get().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_app_is_paced_by_its_per_api_window_under_a_digest_of_its_key() {
        use super::super::openapi::{AppCredentials, OpenApiSettings};
        let settings = OpenApiSettings { qps_per_api: 7, ..OpenApiSettings::with_base("http://127.0.0.1:9") };
        let credentials = AppCredentials {
            app_key: "dingappkey-secret-looking".into(),
            app_secret: "s".to_owned().into(),
            agent_id: None,
            corp_id: None,
        };
        let api = OpenApi::new(credentials, settings, std::sync::Arc::new(connect::SystemClock)).unwrap();
        let pacing = AppSink::new("app", api, None).pacing().unwrap();
        assert_eq!((pacing.max, pacing.window), (7, APP_PACING_WINDOW));
        assert!(pacing.key.starts_with("dingtalk-app:") && !pacing.key.contains("dingappkey"), "{}", pacing.key);
    }

    #[test]
    fn every_rendered_shape_parses() {
        let cases = [
            json!({"api": "work_notice", "users": ["u1"], "title": "t", "text": "x"}),
            json!({"api": "group_message", "group": "cid1", "title": "t", "text": "x"}),
            json!({"api": "robot_message", "users": ["u1", "u2"], "title": "t", "text": "x"}),
            json!({"api": "card", "template_id": "t.schema", "out_track_id": "o1", "group": "cid1",
                   "params": {"a": "1"}, "callback": "stream"}),
            json!({"api": "card", "template_id": "t.schema", "out_track_id": "o1", "users": ["u1", "u2"],
                   "params": {}, "private_to": ["u1"], "private_params": {"canApprove": "true"},
                   "callback": "http", "callback_route_key": "r1"}),
            json!({"api": "card_update", "out_track_id": "o1", "params": {"status": "done"}}),
            json!({"api": "approval", "process_code": "PROC-1", "originator": "u1", "dept_id": "20001",
                   "approvers": ["u2"], "form": {"Amount": "100.00"}}),
        ];
        for case in cases {
            serde_json::from_value::<AppMessage>(case.clone()).unwrap_or_else(|e| panic!("{case}: {e}"));
        }
    }

    #[test]
    fn unknown_apis_and_keys_are_refused() {
        assert!(serde_json::from_value::<AppMessage>(json!({"api": "fax", "to": "x"})).is_err());
        assert!(serde_json::from_value::<AppMessage>(
            json!({"api": "card_update", "out_track_id": "o", "params": {}, "extra": 1})
        )
        .is_err());
    }
}
