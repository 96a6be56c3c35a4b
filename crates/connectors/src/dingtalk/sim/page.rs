//! The DingTalk simulator's web page and its `/_sim/actions/` API (DESIGN.md "Simulators").
//!
//! A person picks a user and sees what DingTalk would show them: their groups (custom-robot
//! messages, app-robot messages and cards), their 1:1 chat with the app robot, work
//! notifications and pending approvals, and clicks the buttons. A test does the same through the
//! action API; both go through the same code, so a click always takes the real callback path
//! (Stream or HTTP, per card).
//!
//! Routes:
//! - `GET /_sim/ui` the page; `GET /_sim/ui/api/users`; `GET /_sim/ui/api/view?user=ID`.
//! - `POST /_sim/actions/card_click` `{outTrackId, userId, actionId, params}`.
//! - `POST /_sim/actions/approve` and `/reject` `{processInstanceId?, taskId?, userId, remark?}`.
//! - `POST /_sim/actions/send_message` `{userId, text, conversationId?, appKey?}`: a text message
//!   to the app robot (1:1, or @robot in a group), shaped like §7.7.
//! - `POST /_sim/actions/stream_ping` `{appKey?}`: a SYSTEM ping to each of the app's Stream
//!   connections now; answers `{"pinged": N}` (409 when none is connected).
//! - `POST /_sim/actions/stream_disconnect` `{appKey?}`: a SYSTEM `disconnect` to each of the app's
//!   Stream connections (closed after the grace period); answers `{"disconnected": N}` (409 when
//!   none is connected).
//! - `POST /robot/sendBySession?session=…`: the `sessionWebhook` of a message sent with
//!   `send_message` (reference §3.3): a webhook-style body (`text`, `markdown`, `actionCard`,
//!   `link`, `feedCard`), no token, valid 90 minutes; the reply shows in the chat the message came
//!   from. Answers `{"errcode":0,"errmsg":"ok"}`; an unknown or expired session errcode 300005 and a
//!   malformed body 40035 (both UNVERIFIED for session webhooks; they are the custom robot's codes).
//!
//! Errors are `{"error": "..."}`: 400 malformed, 403 not allowed (card not visible to the user,
//! task not theirs), 404 unknown user/card/task/group, 409 wrong state, 502 the subscriber failed.
//!
//! Card buttons. The simulator knows no card templates (they live in DingTalk's card builder),
//! so a card's buttons come from its effective params, by convention:
//! - `actions` (or `buttons`): a JSON array; each entry is an action id (`"approve"`) or
//!   `{"id": "approve", "label": "Approve", "params": {...}, "enabledIf": "canApprove"}`. A button
//!   with `enabledIf` is enabled only while that param is `"true"` for the viewer; `params` are
//!   sent back in the click.
//! - otherwise, a card that has a `canApprove` param (shared or private to anyone) gets
//!   Approve (`approve`) and Reject (`reject`), enabled while the viewer's `canApprove` is
//!   `"true"` (the one-click approve pattern of §4.3).
//!
//! Disabled buttons are a display matter only: the action API still sends such a click, so tests
//! can check that the gateway itself refuses clicks by the wrong people.

use super::cards::{CardSpace, CardView, CardsSim, ClickError};
use super::events::{CardCallbackRoute, EventRouter};
use super::messages::{InboxSource, MessagesSim, SessionTarget};
use super::org::{Org, SimApp, SimUser};
use super::workflow::{TaskView, WorkflowError, WorkflowSim};
use super::RecordedMessage;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use connect::Clock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The page, one self-contained file.
const PAGE_HTML: &str = include_str!("page.html");
/// Messages users sent to the robot that the page keeps showing; older ones are dropped.
pub const SENT_KEPT: usize = 1000;
/// `sessionWebhookExpiredTime - createAt` in the fixtures (90 minutes).
const SESSION_WEBHOOK_TTL_MS: i64 = 90 * 60 * 1000;
/// Longest fallback rendering of a message body DingTalk would not show as text.
const MAX_RAW_TEXT: usize = 2000;

/// The custom robots' accepted messages, by robot name (`DingTalkSim::messages` per robot).
pub type RobotFeed = Arc<dyn Fn() -> Vec<(String, Vec<RecordedMessage>)> + Send + Sync>;

/// A message a user sent to the app robot from the page or the action API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SentMessage {
    pub seq: u64,
    pub time_ms: i64,
    pub user_id: String,
    pub app_key: String,
    /// `None`: the 1:1 chat with the robot.
    pub group: Option<String>,
    pub text: String,
    pub msg_id: String,
    /// Why it did not reach the app (no Stream connection, …); `None` when it did.
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Sent {
    next_seq: u64,
    log: VecDeque<SentMessage>,
    /// `sessionWebhook` session → where its replies go.
    sessions: HashMap<String, Session>,
}

/// The conversation one received message opened a reply channel to (reference §3.3).
#[derive(Debug, Clone)]
struct Session {
    app_key: String,
    robot_code: String,
    userid: String,
    /// The group the message came from; `None` for the 1:1 chat.
    group: Option<String>,
    expires_ms: i64,
}

/// The simulator page. Share it behind an `Arc`.
pub struct Page {
    org: Arc<Org>,
    cards: Arc<CardsSim>,
    workflow: Arc<WorkflowSim>,
    messages: Arc<MessagesSim>,
    events: Arc<EventRouter>,
    robots: RobotFeed,
    clock: Arc<dyn Clock>,
    sent: Mutex<Sent>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page").finish_non_exhaustive()
    }
}

/// A refused page or action request: `{"error": message}` with `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ClickError> for PageError {
    fn from(err: ClickError) -> Self {
        let status = match &err {
            ClickError::UnknownCard(_) | ClickError::UnknownUser(_) => StatusCode::NOT_FOUND,
            ClickError::NotVisible { .. } => StatusCode::FORBIDDEN,
            ClickError::NoCallback(_) => StatusCode::CONFLICT,
            ClickError::BadParams => StatusCode::BAD_REQUEST,
            ClickError::Callback(_) | ClickError::BadUpdate(_) => StatusCode::BAD_GATEWAY,
        };
        Self::new(status, err.to_string())
    }
}

impl From<WorkflowError> for PageError {
    fn from(err: WorkflowError) -> Self {
        let status = match &err {
            WorkflowError::UnknownUser(_) | WorkflowError::UnknownInstance(_) | WorkflowError::UnknownTask { .. } => {
                StatusCode::NOT_FOUND
            }
            WorkflowError::NotTaskOwner { .. } => StatusCode::FORBIDDEN,
            WorkflowError::TaskNotRunning { .. } | WorkflowError::InstanceNotRunning { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(status, err.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// What the page shows
// ---------------------------------------------------------------------------------------------

/// A user in the picker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserEntry {
    pub userid: String,
    pub name: String,
    pub title: String,
    pub active: bool,
    pub departments: Vec<String>,
}

/// A link or URL button of a message (opened, never called back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageLink {
    pub title: String,
    pub url: String,
}

/// A message reduced to what a chat bubble shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageSummary {
    pub msgtype: String,
    pub title: Option<String>,
    pub text: String,
    pub links: Vec<MessageLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardField {
    pub key: String,
    pub value: String,
}

/// A card button (see the module docs for where buttons come from).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardButton {
    pub action_id: String,
    pub label: String,
    /// Sent back as the click's `params`.
    pub params: Value,
    pub enabled: bool,
    /// The param that enables it (`enabledIf`, or `canApprove` for the default buttons).
    pub enabled_if: Option<String>,
}

/// A card as one user sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CardItem {
    pub out_track_id: String,
    pub template_id: String,
    /// `stream`, `http` or `none` (clicks fail).
    pub callback: &'static str,
    pub title: Option<String>,
    pub text: Option<String>,
    pub status: Option<String>,
    pub fields: Vec<CardField>,
    pub buttons: Vec<CardButton>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One entry of a chat, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatItem {
    /// A custom (webhook) robot's message in its group.
    CustomRobot {
        time_ms: i64,
        robot: String,
        message: MessageSummary,
    },
    /// The app robot's message (`groupMessages/send`, `oToMessages/batchSend`).
    AppRobot {
        time_ms: i64,
        robot_code: String,
        message: MessageSummary,
    },
    Card {
        time_ms: i64,
        card: CardItem,
    },
    /// What the viewer sent to the robot.
    Mine {
        time_ms: i64,
        text: String,
        error: Option<String>,
    },
}

impl ChatItem {
    fn time_ms(&self) -> i64 {
        match self {
            Self::CustomRobot { time_ms, .. }
            | Self::AppRobot { time_ms, .. }
            | Self::Card { time_ms, .. }
            | Self::Mine { time_ms, .. } => *time_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupPane {
    pub open_conversation_id: String,
    pub title: String,
    pub owner_userid: String,
    pub member_count: usize,
    pub items: Vec<ChatItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationItem {
    pub time_ms: i64,
    pub app_key: String,
    pub agent_id: i64,
    pub message: MessageSummary,
}

/// A task waiting for the viewer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalItem {
    pub instance_id: String,
    pub task_id: i64,
    pub title: String,
    pub process_code: String,
    pub process_name: String,
    pub activity_name: String,
    pub originator_user_id: String,
    pub originator_name: String,
    pub create_ms: i64,
    pub form: Vec<CardField>,
}

/// Everything one user sees (`GET /_sim/ui/api/view`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserView {
    pub user: UserEntry,
    pub groups: Vec<GroupPane>,
    pub robot_chat: Vec<ChatItem>,
    pub work_notifications: Vec<NotificationItem>,
    pub approvals: Vec<ApprovalItem>,
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CardClickRequest {
    out_track_id: String,
    user_id: String,
    action_id: String,
    #[serde(default)]
    params: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecisionRequest {
    #[serde(default)]
    process_instance_id: Option<String>,
    /// A number or a string holding one.
    #[serde(default)]
    task_id: Option<Value>,
    user_id: String,
    #[serde(default)]
    remark: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendMessageRequest {
    user_id: String,
    text: String,
    #[serde(default)]
    conversation_id: Option<String>,
    /// Which app's robot; the first app when absent.
    #[serde(default)]
    app_key: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ViewQuery {
    user: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PageError> {
    serde_json::from_slice(body).map_err(|err| PageError::bad_request(format!("the request body is not valid: {err}")))
}

/// `taskId` as a number, or a string holding one.
fn task_id_of(value: &Value) -> Result<i64, PageError> {
    let parsed = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| PageError::bad_request(format!("taskId must be an integer, got {value}")))
}

impl Page {
    pub fn new(
        org: Arc<Org>,
        cards: Arc<CardsSim>,
        workflow: Arc<WorkflowSim>,
        messages: Arc<MessagesSim>,
        events: Arc<EventRouter>,
        robots: RobotFeed,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { org, cards, workflow, messages, events, robots, clock, sent: Mutex::new(Sent::default()) }
    }

    fn sent(&self) -> MutexGuard<'_, Sent> {
        // Every update is one push under the lock, so a poisoned log is still consistent.
        self.sent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the messages users sent (everything else lives in the other parts).
    pub fn reset(&self) {
        *self.sent() = Sent::default();
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/_sim/ui", get(page_handler))
            .route("/_sim/ui/api/users", get(users_handler))
            .route("/_sim/ui/api/view", get(view_handler))
            .route("/_sim/actions/{action}", post(action_handler))
            .route("/robot/sendBySession", post(session_webhook_handler))
            .with_state(self)
    }

    /// Messages users sent to app robots, oldest first.
    pub fn sent_messages(&self) -> Vec<SentMessage> {
        self.sent().log.iter().cloned().collect()
    }

    /// Everyone in the organisation, by userid.
    pub fn users(&self) -> Vec<UserEntry> {
        self.org.users().into_iter().map(|u| self.user_entry(u)).collect()
    }

    fn user_entry(&self, user: SimUser) -> UserEntry {
        let departments = user.dept_ids.iter().filter_map(|d| self.org.department(*d)).map(|d| d.name).collect();
        UserEntry { userid: user.userid, name: user.name, title: user.title, active: user.active, departments }
    }

    fn known_user(&self, userid: &str) -> Result<SimUser, PageError> {
        self.org.user(userid).ok_or_else(|| {
            PageError::not_found(format!("no user `{userid}` in the organisation; see GET /_sim/ui/api/users"))
        })
    }

    /// Everything `userid` sees.
    pub fn view(&self, userid: &str) -> Result<UserView, PageError> {
        let user = self.known_user(userid)?;
        let cards = self.cards.cards_for_user(userid);
        let sent = self.sent_messages();
        let robot_feed = (self.robots)();

        let mut groups = Vec::new();
        for group in self.org.groups() {
            if group.owner_userid != userid && !group.member_userids.iter().any(|m| m == userid) {
                continue;
            }
            let cid = group.open_conversation_id.as_str();
            let mut items = Vec::new();
            for (robot, messages) in &robot_feed {
                // Custom robots belong to the group they are named after (seeded `ops` ↔ `ops`).
                if !robot.trim().eq_ignore_ascii_case(group.title.trim()) {
                    continue;
                }
                items.extend(messages.iter().map(|m| ChatItem::CustomRobot {
                    time_ms: m.time_ms,
                    robot: robot.clone(),
                    message: summarise(&m.body),
                }));
            }
            items.extend(self.messages.group_messages(cid).into_iter().map(|m| ChatItem::AppRobot {
                time_ms: m.time_ms,
                robot_code: m.robot_code,
                message: summarise_msg_param(&m.msg_key, &m.msg_param),
            }));
            for card in &cards {
                let here = card.spaces.iter().any(|s| match s {
                    CardSpace::Group { open_conversation_id, recipients, .. } => {
                        open_conversation_id == cid && (recipients.is_empty() || recipients.iter().any(|r| r == userid))
                    }
                    CardSpace::Robot { .. } => false,
                });
                if here {
                    items.push(ChatItem::Card { time_ms: card.created_ms, card: card_item(card) });
                }
            }
            items.extend(sent.iter().filter(|m| m.user_id == userid && m.group.as_deref() == Some(cid)).map(mine));
            sort_chat(&mut items);
            groups.push(GroupPane {
                open_conversation_id: group.open_conversation_id.clone(),
                title: group.title.clone(),
                owner_userid: group.owner_userid.clone(),
                member_count: group.member_userids.len(),
                items,
            });
        }

        let mut robot_chat = Vec::new();
        let mut work_notifications = Vec::new();
        for item in self.messages.user_inbox(userid) {
            match item.source {
                InboxSource::WorkNotification { agent_id, msgtype, .. } => {
                    let mut message = summarise(&item.content);
                    message.msgtype = msgtype;
                    work_notifications.push(NotificationItem {
                        time_ms: item.time_ms,
                        app_key: item.app_key,
                        agent_id,
                        message,
                    });
                }
                InboxSource::Robot { robot_code, msg_key, .. } => robot_chat.push(ChatItem::AppRobot {
                    time_ms: item.time_ms,
                    robot_code,
                    message: summarise_msg_param(&msg_key, &item.content),
                }),
            }
        }
        for card in &cards {
            if card.spaces.iter().any(|s| matches!(s, CardSpace::Robot { user_id } if user_id == userid)) {
                robot_chat.push(ChatItem::Card { time_ms: card.created_ms, card: card_item(card) });
            }
        }
        robot_chat.extend(sent.iter().filter(|m| m.user_id == userid && m.group.is_none()).map(mine));
        sort_chat(&mut robot_chat);

        let approvals = self.workflow.pending_tasks_for(userid).into_iter().map(|t| self.approval_item(t)).collect();
        Ok(UserView { user: self.user_entry(user), groups, robot_chat, work_notifications, approvals })
    }

    fn approval_item(&self, task: TaskView) -> ApprovalItem {
        let originator_name = self.org.user(&task.originator_user_id).map(|u| u.name).unwrap_or_default();
        ApprovalItem {
            instance_id: task.instance_id,
            task_id: task.task_id,
            title: task.title,
            process_code: task.process_code,
            process_name: task.process_name,
            activity_name: task.activity_name,
            originator_user_id: task.originator_user_id,
            originator_name,
            create_ms: task.create_ms,
            form: task.form.into_iter().map(|f| CardField { key: f.name, value: f.value }).collect(),
        }
    }

    /// `userid` clicks `action_id` on a card: the callback goes out over the card's route and
    /// the subscriber's answer is applied. Returns the card as the clicker now sees it.
    pub async fn card_click(
        &self,
        out_track_id: &str,
        userid: &str,
        action_id: &str,
        params: Value,
    ) -> Result<CardItem, PageError> {
        if action_id.trim().is_empty() {
            return Err(PageError::bad_request("actionId is empty; name the button that was clicked"));
        }
        self.known_user(userid)?;
        let card = self.cards.click(out_track_id, userid, action_id, params).await?;
        Ok(card_item(&card))
    }

    /// `userid` approves (`agree`) or rejects a task named by its id, or by the instance whose
    /// running task belongs to them.
    pub async fn decide(
        &self,
        instance_id: Option<&str>,
        task_id: Option<i64>,
        userid: &str,
        agree: bool,
        remark: &str,
    ) -> Result<Value, PageError> {
        self.known_user(userid)?;
        let instance_id = instance_id.map(str::trim).filter(|i| !i.is_empty());
        let (instance_id, task_id) = match (instance_id, task_id) {
            (None, None) => return Err(PageError::bad_request("give processInstanceId or taskId (or both)")),
            (Some(instance), Some(task)) => (instance.to_owned(), task),
            (None, Some(task)) => {
                let owner = self.workflow.instances().into_iter().find(|i| i.tasks.iter().any(|t| t.task_id == task));
                let Some(instance) = owner else {
                    return Err(PageError::not_found(format!("no approval task {task}")));
                };
                (instance.instance_id, task)
            }
            (Some(instance), None) => {
                let Some(view) = self.workflow.instance(instance) else {
                    return Err(PageError::not_found(format!("process instance `{instance}` does not exist")));
                };
                let running = self.workflow.pending_tasks_for(userid).into_iter().find(|t| t.instance_id == instance);
                let Some(task) = running else {
                    return Err(PageError::forbidden(format!(
                        "user `{userid}` has no running task in process instance `{instance}` ({:?}); only its current approvers can act",
                        view.status
                    )));
                };
                (instance.to_owned(), task.task_id)
            }
        };
        let view = self.workflow.act(&instance_id, task_id, userid, agree, remark).await?;
        Ok(json!({ "instance": view }))
    }

    /// A text message from `userid` to the app robot, delivered as DingTalk does (Stream topic
    /// `/v1.0/im/bot/messages/get`). `host` builds the `sessionWebhook` URL.
    pub async fn send_message(
        &self,
        userid: &str,
        text: &str,
        conversation_id: Option<&str>,
        app_key: Option<&str>,
        host: &str,
    ) -> Result<Value, PageError> {
        let user = self.known_user(userid)?;
        if !user.active {
            return Err(PageError::forbidden(format!("user `{userid}` has left the organisation")));
        }
        if text.trim().is_empty() {
            return Err(PageError::bad_request("text is empty"));
        }
        let app = match app_key {
            Some(key) => self.org.app(key).ok_or_else(|| PageError::not_found(format!("no app `{key}`")))?,
            None => {
                self.org.apps().into_iter().next().ok_or_else(|| PageError::not_found("the simulator has no app"))?
            }
        };
        let group = match conversation_id.map(str::trim).filter(|c| !c.is_empty()) {
            None => None,
            Some(cid) => {
                let group = self
                    .org
                    .group(cid)
                    .ok_or_else(|| PageError::not_found(format!("no group conversation `{cid}`")))?;
                if group.owner_userid != userid && !group.member_userids.iter().any(|m| m == userid) {
                    return Err(PageError::forbidden(format!("user `{userid}` is not a member of group `{cid}`")));
                }
                Some(group)
            }
        };
        let now = self.clock.now_millis();
        let msg_id =
            format!("msg{}", base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes()));
        let session = hex::encode(&Sha256::digest(format!("session:{msg_id}").as_bytes())[..16]);
        let webhook = format!("http://{host}/robot/sendBySession?session={session}");
        let data = robot_message_payload(&app, &user, group.as_ref(), text, &msg_id, &webhook, now);
        {
            let mut sent = self.sent();
            // Expired sessions are useless; drop them so the map stays small.
            sent.sessions.retain(|_, s| s.expires_ms > now);
            sent.sessions.insert(
                session,
                Session {
                    app_key: app.app_key.clone(),
                    robot_code: if app.robot_code.is_empty() { app.app_key.clone() } else { app.robot_code.clone() },
                    userid: user.userid.clone(),
                    group: group.as_ref().map(|g| g.open_conversation_id.clone()),
                    expires_ms: now + SESSION_WEBHOOK_TTL_MS,
                },
            );
        }
        let outcome = self.events.robot_message(&app.app_key, data.clone()).await;
        {
            let mut sent = self.sent();
            let seq = sent.next_seq;
            sent.next_seq += 1;
            if sent.log.len() >= SENT_KEPT {
                sent.log.pop_front();
            }
            sent.log.push_back(SentMessage {
                seq,
                time_ms: now,
                user_id: userid.to_owned(),
                app_key: app.app_key.clone(),
                group: group.as_ref().map(|g| g.open_conversation_id.clone()),
                text: text.to_owned(),
                msg_id: msg_id.clone(),
                error: outcome.as_ref().err().map(ToString::to_string),
            });
        }
        match outcome {
            Ok(()) => Ok(json!({ "msgId": msg_id, "data": data })),
            Err(err) => Err(PageError::new(
                StatusCode::BAD_GATEWAY,
                format!("the robot message did not reach app `{}`: {err}", app.app_key),
            )),
        }
    }
}

/// The §7.7 payload of a text message (fixtures `events/robot_message_text_*.json`).
fn robot_message_payload(
    app: &SimApp,
    user: &SimUser,
    group: Option<&super::org::SimGroup>,
    text: &str,
    msg_id: &str,
    session_webhook: &str,
    now: i64,
) -> Value {
    let robot_code = if app.robot_code.is_empty() { app.app_key.as_str() } else { app.robot_code.as_str() };
    let chatbot_user_id = format!("$:LWCP_v1:${}", opaque_id(&format!("bot:{robot_code}")));
    let mut data = json!({
        "atUsers": [],
        "chatbotCorpId": app.corp_id,
        "chatbotUserId": chatbot_user_id,
        "msgId": msg_id,
        "senderNick": user.name,
        "isAdmin": false,
        "senderStaffId": user.userid,
        "sessionWebhookExpiredTime": now + SESSION_WEBHOOK_TTL_MS,
        "createAt": now,
        "senderCorpId": app.corp_id,
        "senderId": format!("$:LWCP_v1:${}", opaque_id(&format!("user:{}", user.userid))),
        "sessionWebhook": session_webhook,
        "text": { "content": text },
        "robotCode": robot_code,
        "msgtype": "text",
    });
    let Some(obj) = data.as_object_mut() else { return data };
    match group {
        // In groups only messages that @ the robot arrive; the @mention is cut, leaving a space.
        Some(group) => {
            obj.insert("conversationId".into(), json!(group.open_conversation_id));
            obj.insert("conversationType".into(), json!("2"));
            obj.insert("conversationTitle".into(), json!(group.title));
            obj.insert("isInAtList".into(), json!(true));
            obj.insert("atUsers".into(), json!([{ "dingtalkId": chatbot_user_id, "staffId": "" }]));
            obj.insert("text".into(), json!({ "content": format!(" {}", text.trim_start()) }));
        }
        None => {
            let cid = format!("cid{}", opaque_id(&format!("single:{}:{}", app.app_key, user.userid)));
            obj.insert("conversationId".into(), json!(cid));
            obj.insert("conversationType".into(), json!("1"));
            obj.insert("conversationTitle".into(), Value::Null);
            obj.insert("isInAtList".into(), json!(false));
        }
    }
    data
}

/// A stable opaque id like DingTalk's base64 ones.
fn opaque_id(seed: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(&Sha256::digest(seed.as_bytes())[..16])
}

fn mine(m: &SentMessage) -> ChatItem {
    ChatItem::Mine { time_ms: m.time_ms, text: m.text.clone(), error: m.error.clone() }
}

fn sort_chat(items: &mut [ChatItem]) {
    // Stable: equal times keep the order they were gathered in.
    items.sort_by_key(ChatItem::time_ms);
}

// ---------------------------------------------------------------------------------------------
// Rendering data
// ---------------------------------------------------------------------------------------------

const TITLE_KEYS: &[&str] = &["title", "header", "subject"];
const TEXT_KEYS: &[&str] = &["text", "content", "markdown", "summary", "description"];
const STATUS_KEYS: &[&str] = &["status", "state", "result"];
const BUTTON_KEYS: &[&str] = &["actions", "buttons"];
const CAN_APPROVE: &str = "canApprove";

/// A card as its viewer sees it, with buttons per the module's convention.
pub fn card_item(card: &CardView) -> CardItem {
    let params = &card.params;
    let pick = |keys: &[&'static str]| -> Option<(&'static str, String)> {
        keys.iter().find(|k| params.contains_key(**k)).map(|k| (*k, params[*k].clone()))
    };
    let title = pick(TITLE_KEYS);
    let text = pick(TEXT_KEYS);
    let status = pick(STATUS_KEYS);
    // Keys shown prominently or consumed by the buttons are left out of the key/value list.
    let mut hidden: Vec<&str> = [&title, &text, &status].iter().filter_map(|p| p.as_ref().map(|(k, _)| *k)).collect();

    let declared =
        BUTTON_KEYS.iter().find_map(|k| params.get(*k).and_then(|v| parse_buttons(v, params)).map(|b| (*k, b)));
    let buttons = match declared {
        Some((key, buttons)) => {
            hidden.push(key);
            buttons
        }
        None if card.card_data.contains_key(CAN_APPROVE)
            || card.private_data.values().any(|p| p.contains_key(CAN_APPROVE)) =>
        {
            let enabled = params.get(CAN_APPROVE).is_some_and(|v| v == "true");
            ["approve", "reject"]
                .iter()
                .map(|id| CardButton {
                    action_id: (*id).to_owned(),
                    label: label_for(id),
                    params: json!({}),
                    enabled,
                    enabled_if: Some(CAN_APPROVE.to_owned()),
                })
                .collect()
        }
        None => Vec::new(),
    };
    hidden.extend(buttons.iter().filter_map(|b: &CardButton| b.enabled_if.as_deref()));
    let fields = params
        .iter()
        .filter(|(k, _)| !hidden.contains(&k.as_str()))
        .map(|(k, v)| CardField { key: k.clone(), value: v.clone() })
        .collect();
    CardItem {
        out_track_id: card.out_track_id.clone(),
        template_id: card.template_id.clone(),
        callback: match card.callback {
            Some(CardCallbackRoute::Stream) => "stream",
            Some(CardCallbackRoute::Http { .. }) => "http",
            None => "none",
        },
        title: title.map(|(_, v)| v),
        text: text.map(|(_, v)| v),
        status: status.map(|(_, v)| v),
        fields,
        buttons,
        created_ms: card.created_ms,
        updated_ms: card.updated_ms,
    }
}

/// Buttons from an `actions` param; `None` when it is not a JSON array.
fn parse_buttons(raw: &str, params: &BTreeMap<String, String>) -> Option<Vec<CardButton>> {
    let Ok(Value::Array(entries)) = serde_json::from_str::<Value>(raw) else { return None };
    let buttons = entries
        .iter()
        .filter_map(|entry| match entry {
            Value::String(id) if !id.is_empty() => Some(CardButton {
                action_id: id.clone(),
                label: label_for(id),
                params: json!({}),
                enabled: true,
                enabled_if: None,
            }),
            Value::Object(obj) => {
                let text = |key: &str| obj.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
                let id = text("id").or_else(|| text("actionId"))?;
                let label = text("label").or_else(|| text("text")).or_else(|| text("title")).map(str::to_owned);
                let enabled_if = text("enabledIf");
                let enabled = enabled_if.is_none_or(|key| params.get(key).is_some_and(|v| v == "true"));
                Some(CardButton {
                    action_id: id.to_owned(),
                    label: label.unwrap_or_else(|| label_for(id)),
                    params: obj.get("params").filter(|p| p.is_object()).cloned().unwrap_or_else(|| json!({})),
                    enabled,
                    enabled_if: enabled_if.map(str::to_owned),
                })
            }
            _ => None,
        })
        .collect();
    Some(buttons)
}

/// `approve` → `Approve`.
fn label_for(action_id: &str) -> String {
    let mut chars = action_id.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn str_at<'a>(obj: &'a Map<String, Value>, path: &[&str]) -> Option<&'a str> {
    let (last, parents) = path.split_last()?;
    let mut cursor = obj;
    for key in parents {
        cursor = cursor.get(*key)?.as_object()?;
    }
    cursor.get(*last).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A message body with a `msgtype` (custom robot, work notification) → what a bubble shows.
fn summarise(body: &Value) -> MessageSummary {
    let msgtype = body.get("msgtype").and_then(Value::as_str).unwrap_or("").to_owned();
    let inner = body.get(&msgtype).filter(|v| v.is_object()).unwrap_or(body);
    summarise_object(msgtype, inner)
}

/// An app robot's `msgParam` for `msg_key` (`sampleText`, `sampleMarkdown`, …).
fn summarise_msg_param(msg_key: &str, msg_param: &Value) -> MessageSummary {
    summarise_object(msg_key.to_owned(), msg_param)
}

fn summarise_object(msgtype: String, value: &Value) -> MessageSummary {
    let Some(obj) = value.as_object() else {
        return MessageSummary { msgtype, title: None, text: value.to_string(), links: Vec::new() };
    };
    let title = [&["title"][..], &["head", "text"], &["body", "title"]].iter().find_map(|p| str_at(obj, p));
    let text = [&["content"][..], &["text"], &["markdown"], &["body", "content"]].iter().find_map(|p| str_at(obj, p));
    let mut links = Vec::new();
    let mut link = |title: Option<&str>, url: Option<&str>| {
        if let Some(url) = url {
            links.push(MessageLink { title: title.unwrap_or("Open").to_owned(), url: url.to_owned() });
        }
    };
    link(str_at(obj, &["singleTitle"]), str_at(obj, &["singleURL"]));
    link(str_at(obj, &["single_title"]), str_at(obj, &["single_url"]));
    for n in 1..=6 {
        link(str_at(obj, &[&format!("actionTitle{n}")]), str_at(obj, &[&format!("actionURL{n}")]));
        link(str_at(obj, &[&format!("buttonTitle{n}")]), str_at(obj, &[&format!("buttonUrl{n}")]));
    }
    for (list, title_key, url_key) in
        [("btns", "title", "actionURL"), ("btn_json_list", "title", "action_url"), ("links", "title", "messageURL")]
    {
        for entry in obj.get(list).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_object) {
            link(str_at(entry, &[title_key]), str_at(entry, &[url_key]));
        }
    }
    for key in ["messageUrl", "messageURL", "message_url"] {
        link(None, str_at(obj, &[key]));
    }
    for key in ["picURL", "picUrl", "photoURL"] {
        link(Some("Picture"), str_at(obj, &[key]));
    }
    let text = match text {
        Some(text) => text.to_owned(),
        None if title.is_none() && links.is_empty() => value.to_string().chars().take(MAX_RAW_TEXT).collect(),
        None => String::new(),
    };
    MessageSummary { msgtype, title: title.map(str::to_owned), text, links }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

async fn page_handler() -> Response {
    // The page polls; an old copy from a cache would show a stale UI after an upgrade.
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE_HTML)).into_response()
}

async fn users_handler(State(page): State<Arc<Page>>) -> Response {
    Json(page.users()).into_response()
}

async fn view_handler(State(page): State<Arc<Page>>, Query(query): Query<ViewQuery>) -> Response {
    let Some(user) = query.user.filter(|u| !u.is_empty()) else {
        return PageError::bad_request("give ?user=USERID").into_response();
    };
    match page.view(&user) {
        Ok(view) => Json(view).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn action_handler(
    State(page): State<Arc<Page>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match run_action(&page, &action, &headers, &body).await {
        Ok(answer) => Json(answer).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn run_action(page: &Page, action: &str, headers: &HeaderMap, body: &[u8]) -> Result<Value, PageError> {
    match action {
        "card_click" => {
            let req: CardClickRequest = parse(body)?;
            let card = page.card_click(&req.out_track_id, &req.user_id, &req.action_id, req.params).await?;
            Ok(json!({ "card": card }))
        }
        "approve" | "reject" => {
            let req: DecisionRequest = parse(body)?;
            let task_id = req.task_id.as_ref().filter(|v| !v.is_null()).map(task_id_of).transpose()?;
            let remark = req.remark.unwrap_or_default();
            page.decide(req.process_instance_id.as_deref(), task_id, &req.user_id, action == "approve", &remark).await
        }
        "send_message" => {
            let req: SendMessageRequest = parse(body)?;
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
            page.send_message(&req.user_id, &req.text, req.conversation_id.as_deref(), req.app_key.as_deref(), host)
                .await
        }
        "stream_disconnect" => {
            let req: Value = if body.is_empty() { json!({}) } else { parse(body)? };
            let app_key = match req.get("appKey").and_then(Value::as_str) {
                Some(key) => key.to_owned(),
                None => page.org.apps().first().map(|a| a.app_key.clone()).unwrap_or_default(),
            };
            let told = page
                .events
                .stream_disconnect(&app_key)
                .map_err(|e| PageError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
            if told == 0 {
                return Err(PageError::new(StatusCode::CONFLICT, format!("app {app_key} has no Stream connection")));
            }
            Ok(json!({ "disconnected": told }))
        }
        "stream_ping" => {
            let req: Value = if body.is_empty() { json!({}) } else { parse(body)? };
            let app_key = match req.get("appKey").and_then(Value::as_str) {
                Some(key) => key.to_owned(),
                None => page.org.apps().first().map(|a| a.app_key.clone()).unwrap_or_default(),
            };
            let pinged = page
                .events
                .stream_ping(&app_key)
                .map_err(|e| PageError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
            if pinged == 0 {
                return Err(PageError::new(StatusCode::CONFLICT, format!("app {app_key} has no Stream connection")));
            }
            Ok(json!({ "pinged": pinged }))
        }
        other => Err(PageError::not_found(format!(
            "unknown action `{other}`; known: card_click, approve, reject, send_message, stream_ping, stream_disconnect"
        ))),
    }
}

/// Why a `sessionWebhook` post was refused: the custom robot's errcode and message.
fn session_refusal(errcode: i64, errmsg: String) -> Response {
    Json(json!({ "errcode": errcode, "errmsg": errmsg })).into_response()
}

impl Page {
    /// `POST /robot/sendBySession?session=…`: a reply in the conversation the session belongs to.
    fn session_reply(&self, query: Option<&str>, body: &[u8]) -> Response {
        let session = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .find(|(k, _)| k == "session")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let now = self.clock.now_millis();
        let Some(target) = self.sent().sessions.get(&session).filter(|s| s.expires_ms > now).cloned() else {
            return session_refusal(300_005, "session is not exist or has expired".to_owned());
        };
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return session_refusal(40_035, "missing parameter: json (the body is not a JSON object)".to_owned());
        };
        let message = match crate::dingtalk::client::RobotMessage::from_value(&value) {
            Ok(message) => message,
            Err(detail) => return session_refusal(40_035, format!("missing parameter: {detail}")),
        };
        let msgtype = message.msgtype();
        let content = value.get(msgtype).cloned().unwrap_or(Value::Null);
        let to = match target.group.as_deref() {
            Some(cid) => SessionTarget::Group(cid),
            None => SessionTarget::User(&target.userid),
        };
        self.messages.session_reply(&target.app_key, &target.robot_code, to, msgtype, content);
        Json(json!({ "errcode": 0, "errmsg": "ok" })).into_response()
    }
}

async fn session_webhook_handler(State(page): State<Arc<Page>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    page.session_reply(query.as_deref(), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::cards::{CardInstance, CardParams, CardsClient};
    use crate::dingtalk::openapi::{AppCredentials, OpenApi, OpenApiSettings};
    use crate::dingtalk::sim::org::{SEED_AGENT_ID, SEED_APP_KEY, SEED_APP_SECRET, SEED_CORP_ID};
    use crate::dingtalk::sim::stream::StreamGateway;
    use crate::dingtalk::sim::workflow::PURCHASE_REQ;
    use crate::dingtalk::stream::{CallbackRefused, EventAck, Frame, StreamClient, StreamHandler, StreamSettings};
    use crate::dingtalk::workflow::{ApprovalResult, FormValue, StartProcessInstance, TaskStatus};
    use connect::SystemClock;
    use secrecy::SecretString;
    use std::time::Duration;

    const OPS: &str = "cidAbCdEfGhIjKlMnOpQrStUv==";

    struct Harness {
        base: String,
        http: reqwest::Client,
        page: Arc<Page>,
        workflow: Arc<WorkflowSim>,
        gateway: Arc<StreamGateway>,
        cards: CardsClient,
    }

    fn recorded(robot: &str, seq: u64, time_ms: i64, content: &str) -> RecordedMessage {
        RecordedMessage {
            seq,
            robot: robot.to_owned(),
            time: String::new(),
            time_ms,
            msgtype: "text".to_owned(),
            body: json!({ "msgtype": "text", "text": { "content": content } }),
        }
    }

    async fn harness() -> Harness {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let org = Org::seeded(clock.clone());
        let events = Arc::new(EventRouter::new(clock.clone(), SEED_CORP_ID));
        let check_org = org.clone();
        let gateway =
            Arc::new(StreamGateway::new(clock.clone(), Arc::new(move |k, s| check_org.check_credentials(k, s))));
        events.attach_stream(gateway.clone());
        let cards = Arc::new(CardsSim::new(org.clone(), events.clone(), clock.clone()));
        let workflow = Arc::new(WorkflowSim::new(org.clone(), events.clone(), clock.clone()));
        let messages = Arc::new(MessagesSim::new(org.clone(), clock.clone()));
        let robots: RobotFeed = Arc::new(|| {
            vec![
                ("ops".to_owned(), vec![recorded("ops", 0, 1, "Stock low: SKU-1")]),
                ("finance".to_owned(), vec![recorded("finance", 1, 2, "Payment run done")]),
            ]
        });
        let page = Arc::new(Page::new(
            org.clone(),
            cards.clone(),
            workflow.clone(),
            messages.clone(),
            events,
            robots,
            clock.clone(),
        ));
        let router = org
            .router()
            .merge(cards.router())
            .merge(workflow.clone().router())
            .merge(messages.router())
            .merge(gateway.clone().router())
            .merge(page.clone().router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let credentials = AppCredentials {
            app_key: SEED_APP_KEY.to_owned(),
            app_secret: SecretString::from(SEED_APP_SECRET.to_owned()),
            agent_id: Some(SEED_AGENT_ID),
            corp_id: None,
        };
        let api = OpenApi::new(credentials, OpenApiSettings::with_base(&base), clock).unwrap();
        Harness { base, http: reqwest::Client::new(), page, workflow, gateway, cards: CardsClient::new(api) }
    }

    impl Harness {
        async fn get(&self, path: &str) -> (u16, Value) {
            let resp = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap())
        }

        async fn action(&self, action: &str, body: Value) -> (u16, Value) {
            let resp = self.http.post(format!("{}/_sim/actions/{action}", self.base)).json(&body).send().await.unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap())
        }

        /// A Stream-callback card in the ops group that only manager4711 may approve.
        async fn approval_card(&self, out_track_id: &str) {
            let params =
                CardParams::new().text("title", "PO-2024-0042").text("status", "Pending").text("amount", "HK$12,800");
            let card = CardInstance::to_group("tpl-approval.schema", out_track_id, OPS, SEED_APP_KEY, params)
                .with_private("manager4711", CardParams::new().text("canApprove", "true"))
                .with_stream_callback();
            self.cards.create_and_deliver(&card).await.unwrap();
        }
    }

    #[tokio::test]
    async fn the_page_and_the_user_list_are_served() {
        let h = harness().await;
        let resp = h.http.get(format!("{}/_sim/ui", h.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert!(resp.text().await.unwrap().contains("data-testid=\"user-picker\""));
        let (status, users) = h.get("/_sim/ui/api/users").await;
        assert_eq!(status, 200);
        let manager = users.as_array().unwrap().iter().find(|u| u["userid"] == "manager4711").unwrap();
        assert_eq!(
            (manager["name"].as_str(), manager["departments"][0].as_str()),
            (Some("Chan Tai Man"), Some("Purchasing"))
        );
    }

    #[tokio::test]
    async fn a_users_view_has_their_groups_with_messages_and_cards() {
        let h = harness().await;
        h.approval_card("po-42").await;

        let (status, view) = h.get("/_sim/ui/api/view?user=manager4711").await;
        assert_eq!(status, 200, "{view}");
        let titles: Vec<&str> =
            view["groups"].as_array().unwrap().iter().map(|g| g["title"].as_str().unwrap()).collect();
        assert_eq!(titles.len(), 2, "{titles:?}");
        assert!(titles.contains(&"ops") && titles.contains(&"finance") && !titles.contains(&"sales-hk"), "{titles:?}");
        let ops = view["groups"].as_array().unwrap().iter().find(|g| g["title"] == "ops").unwrap();
        let items = ops["items"].as_array().unwrap();
        // Oldest first: the custom robot's message (time 1) before the card (created now).
        assert_eq!(items[0]["kind"], "custom_robot");
        assert_eq!(items[0]["message"]["text"], "Stock low: SKU-1");
        assert_eq!(items[1]["kind"], "card");
        let card = &items[1]["card"];
        assert_eq!((card["title"].as_str(), card["status"].as_str()), (Some("PO-2024-0042"), Some("Pending")));
        assert_eq!(card["fields"], json!([{ "key": "amount", "value": "HK$12,800" }]));
        assert_eq!(card["buttons"][0]["action_id"], "approve");
        assert_eq!(card["buttons"][0]["enabled"], true, "the approver's private canApprove enables the buttons");

        // Another ops member sees the card with disabled buttons; a non-member sees no ops group.
        let (_, staff) = h.get("/_sim/ui/api/view?user=staff0815").await;
        let ops = staff["groups"].as_array().unwrap().iter().find(|g| g["title"] == "ops").unwrap();
        assert_eq!(ops["items"][1]["card"]["buttons"][0]["enabled"], false);
        let (_, sales) = h.get("/_sim/ui/api/view?user=sales0101").await;
        assert!(sales["groups"].as_array().unwrap().iter().all(|g| g["title"] != "ops"));
    }

    #[tokio::test]
    async fn clicking_a_card_one_cannot_see_is_forbidden() {
        let h = harness().await;
        h.approval_card("po-43").await;
        let click =
            |user: &str, card: &str| json!({ "outTrackId": card, "userId": user, "actionId": "approve", "params": {} });
        let (status, body) = h.action("card_click", click("sales0101", "po-43")).await;
        assert_eq!(status, 403, "{body}");
        assert!(body["error"].as_str().unwrap().contains("cannot see"), "{body}");
        let (status, body) = h.action("card_click", click("manager4711", "po-nope")).await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = h.action("card_click", json!({ "outTrackId": "po-43" })).await;
        assert_eq!(status, 400, "{body}");
        // Visible, but no app is connected over Stream: the subscriber failed, not the clicker.
        let (status, body) = h.action("card_click", click("manager4711", "po-43")).await;
        assert_eq!(status, 502, "{body}");
    }

    /// Approves every card click; keeps the robot messages it gets.
    #[derive(Default)]
    struct Approver {
        robot_messages: Mutex<Vec<Value>>,
    }

    #[async_trait::async_trait]
    impl StreamHandler for Approver {
        async fn on_event(&self, _frame: &Frame) -> EventAck {
            EventAck::Success
        }

        async fn on_callback(&self, frame: &Frame) -> Result<Option<Value>, CallbackRefused> {
            let data = frame.data_json().map_err(|e| e.to_string())?;
            if frame.topic() == Some(crate::dingtalk::stream::TOPIC_ROBOT_MESSAGE) {
                self.robot_messages.lock().unwrap().push(data);
                return Ok(None);
            }
            let user = data["userId"].as_str().unwrap_or_default();
            Ok(Some(json!({ "cardData": { "cardParamMap": { "status": format!("Approved by {user}") } },
                            "cardUpdateOptions": { "updateCardDataByKey": true } })))
        }
    }

    #[tokio::test]
    async fn a_click_goes_over_stream_and_the_answer_updates_the_card() {
        let h = harness().await;
        h.approval_card("po-44").await;
        let mut settings = StreamSettings::new(&h.base, SEED_APP_KEY, SecretString::from(SEED_APP_SECRET.to_owned()));
        settings.outbound = connect::http::Outbound::loopback();
        let approver = Arc::new(Approver::default());
        let stream = StreamClient::spawn(settings, approver.clone(), tokio_util::sync::CancellationToken::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while h.gateway.connections(SEED_APP_KEY) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "no Stream connection: {:?}", stream.last_error());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let click =
            json!({ "outTrackId": "po-44", "userId": "manager4711", "actionId": "approve", "params": {"x": 1} });
        let (status, body) = h.action("card_click", click).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["card"]["status"], "Approved by manager4711");
        assert_eq!(body["card"]["title"], "PO-2024-0042", "merged by key, the rest stays");
        let (_, view) = h.get("/_sim/ui/api/view?user=boss0001").await;
        let ops = view["groups"].as_array().unwrap().iter().find(|g| g["title"] == "ops").unwrap();
        assert_eq!(ops["items"][1]["card"]["status"], "Approved by manager4711", "everyone sees the shared update");

        // With the app connected, a message to the robot arrives as §7.7 data.
        let send = json!({ "userId": "staff0815", "text": "status PO-1", "conversationId": OPS });
        let (status, body) = h.action("send_message", send).await;
        assert_eq!(status, 200, "{body}");
        let got = approver.robot_messages.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0]["senderStaffId"].as_str(), got[0]["text"]["content"].as_str()),
            (Some("staff0815"), Some(" status PO-1"))
        );
        assert_eq!(got[0]["msgId"], body["msgId"]);
        let (_, view) = h.get("/_sim/ui/api/view?user=staff0815").await;
        let ops = view["groups"].as_array().unwrap().iter().find(|g| g["title"] == "ops").unwrap();
        let mine = ops["items"].as_array().unwrap().last().unwrap();
        assert_eq!((mine["kind"].as_str(), mine["error"].is_null()), (Some("mine"), true), "{mine}");

        // The reply through the message's sessionWebhook lands in the group it came from.
        let webhook = got[0]["sessionWebhook"].as_str().unwrap().to_owned();
        assert!(webhook.starts_with(&format!("{}/robot/sendBySession?session=", h.base)), "{webhook}");
        let post = |url: String, body: Value| {
            let http = h.http.clone();
            async move { http.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let ok = post(webhook.clone(), json!({"msgtype": "text", "text": {"content": "PO-1 is approved"}})).await;
        assert_eq!(ok, json!({"errcode": 0, "errmsg": "ok"}));
        let (_, view) = h.get("/_sim/ui/api/view?user=staff0815").await;
        let ops = view["groups"].as_array().unwrap().iter().find(|g| g["title"] == "ops").unwrap();
        let items = ops["items"].as_array().unwrap();
        assert!(
            items.iter().any(|i| i["kind"] == "app_robot" && i["message"]["text"] == "PO-1 is approved"),
            "{items:?}"
        );
        // A 1:1 message's reply goes to the robot chat.
        let (status, body) = h.action("send_message", json!({ "userId": "manager4711", "text": "hi" })).await;
        assert_eq!(status, 200, "{body}");
        let single = body["data"]["sessionWebhook"].as_str().unwrap().to_owned();
        let md = json!({"msgtype": "markdown", "markdown": {"title": "t", "text": "**hello**"}});
        assert_eq!(post(single.clone(), md).await["errcode"], 0);
        let (_, view) = h.get("/_sim/ui/api/view?user=manager4711").await;
        // Same millisecond as the message: the chat's order may put either first.
        let chat = view["robot_chat"].as_array().unwrap();
        assert!(chat.iter().any(|i| i["kind"] == "app_robot" && i["message"]["title"] == "t"), "{chat:?}");
        // Refusals: a malformed body, an unknown session.
        assert_eq!(post(single, json!({"msgtype": "text"})).await["errcode"], 40_035);
        let unknown = format!("{}/robot/sendBySession?session=nope", h.base);
        assert_eq!(post(unknown, json!({"msgtype": "text", "text": {"content": "x"}})).await["errcode"], 300_005);

        // stream_disconnect tells the connection to go; the client comes back on a new ticket.
        let (status, body) = h.action("stream_disconnect", json!({})).await;
        assert_eq!((status, body["disconnected"].as_u64()), (200, Some(1)), "{body}");
        stream.shutdown().await;
    }

    async fn start_purchase(h: &Harness) -> String {
        let request = StartProcessInstance::new("staff0815", PURCHASE_REQ)
            .with_value(FormValue::text("PO Number", "PO-2024-0042"))
            .with_value(FormValue::number("Amount (HKD)", 12800));
        h.workflow.start(SEED_APP_KEY, &request).await.unwrap()
    }

    #[tokio::test]
    async fn approving_finishes_the_task_and_only_the_approver_may() {
        let h = harness().await;
        let instance = start_purchase(&h).await;
        let (_, view) = h.get("/_sim/ui/api/view?user=manager4711").await;
        let approval = &view["approvals"][0];
        assert_eq!(
            (approval["instance_id"].as_str(), approval["originator_name"].as_str()),
            (Some(instance.as_str()), Some("Ho Siu Fan"))
        );
        assert!(approval["form"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["key"] == "PO Number" && f["value"] == "PO-2024-0042"));

        let (status, body) = h.action("approve", json!({ "processInstanceId": instance, "userId": "staff0815" })).await;
        assert_eq!(status, 403, "the originator has no task: {body}");
        let task_id = approval["task_id"].as_i64().unwrap();
        let (status, body) = h.action("reject", json!({ "taskId": task_id.to_string(), "userId": "boss0001" })).await;
        assert_eq!(status, 403, "someone else's task: {body}");

        let (status, body) = h
            .action("approve", json!({ "processInstanceId": instance, "userId": "manager4711", "remark": "OK" }))
            .await;
        assert_eq!(status, 200, "{body}");
        let done = h.workflow.instance(&instance).unwrap();
        let task = done.tasks.iter().find(|t| t.task_id == task_id).unwrap();
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(task.result, ApprovalResult::Agree);
        assert_eq!(task.remark, "OK");
        assert!(h.page.view("manager4711").unwrap().approvals.is_empty());
        let (status, body) = h.action("approve", json!({ "taskId": task_id, "userId": "manager4711" })).await;
        assert_eq!(status, 409, "already done: {body}");
    }

    #[tokio::test]
    async fn unknown_users_and_actions_are_404() {
        let h = harness().await;
        let (status, body) = h.get("/_sim/ui/api/view?user=ghost").await;
        assert_eq!(status, 404);
        assert!(body["error"].as_str().unwrap().contains("ghost"));
        for action in ["card_click", "approve", "send_message"] {
            let body = json!({ "userId": "ghost", "outTrackId": "x", "actionId": "a", "taskId": 1, "text": "hi" });
            let (status, answer) = h.action(action, body).await;
            assert_eq!(status, 404, "{action}: {answer}");
        }
        assert_eq!(h.action("dance", json!({})).await.0, 404);
        let (status, body) = h.action("stream_ping", json!({})).await;
        assert!(status == 409 || status == 502, "no Stream client connected: {status} {body}");
        assert!(body["error"].as_str().unwrap().contains("Stream"), "{body}");
    }

    #[tokio::test]
    async fn a_message_to_the_robot_without_a_stream_client_fails_visibly() {
        let h = harness().await;
        let (status, body) = h.action("send_message", json!({ "userId": "manager4711", "text": "status PO-1" })).await;
        assert_eq!(status, 502, "{body}");
        let (_, view) = h.get("/_sim/ui/api/view?user=manager4711").await;
        let mine = &view["robot_chat"][0];
        assert_eq!((mine["kind"].as_str(), mine["text"].as_str()), (Some("mine"), Some("status PO-1")));
        assert!(mine["error"].as_str().unwrap().contains("Stream"), "{mine}");
        let (status, _) =
            h.action("send_message", json!({ "userId": "sales0101", "text": "hi", "conversationId": OPS })).await;
        assert_eq!(status, 403, "not a member of ops");
    }

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    fn keys(value: &Value) -> Vec<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn robot_messages_have_the_fixtures_shape() {
        let org = Org::seeded(Arc::new(SystemClock));
        let app = org.app(SEED_APP_KEY).unwrap();
        let user = org.user("manager4711").unwrap();
        let single = robot_message_payload(&app, &user, None, "approve PO-2024-0042", "msgX", "http://h/s1", 1_000);
        let want = fixture("events/robot_message_text_single.json");
        assert_eq!(keys(&single), keys(&want));
        for key in
            ["conversationType", "senderStaffId", "senderNick", "isInAtList", "text", "msgtype", "conversationTitle"]
        {
            assert_eq!(single[key], want[key], "{key}");
        }
        assert_eq!(single["sessionWebhookExpiredTime"], 1_000 + SESSION_WEBHOOK_TTL_MS);
        assert_eq!(single["robotCode"], SEED_APP_KEY);

        let group = org.group(OPS).unwrap();
        let in_group =
            robot_message_payload(&app, &user, Some(&group), "status PO-2024-0042", "msgY", "http://h/s2", 1_000);
        let want = fixture("events/robot_message_text_group.json");
        assert_eq!(keys(&in_group), keys(&want));
        for key in ["conversationType", "isInAtList", "text", "conversationId"] {
            if key == "conversationId" {
                assert_eq!(in_group[key], OPS);
            } else {
                assert_eq!(in_group[key], want[key], "{key}");
            }
        }
        assert_eq!(in_group["atUsers"][0]["dingtalkId"], in_group["chatbotUserId"]);
    }

    fn view_of(card_data: &[(&str, &str)], private: &[(&str, &str)]) -> CardView {
        let map = |pairs: &[(&str, &str)]| {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>()
        };
        let card_data = map(card_data);
        let mut params = card_data.clone();
        params.extend(map(private));
        CardView {
            out_track_id: "c1".to_owned(),
            template_id: "t".to_owned(),
            app_key: SEED_APP_KEY.to_owned(),
            callback: Some(CardCallbackRoute::Http { route_key: "r".to_owned() }),
            spaces: Vec::new(),
            card_data,
            private_data: BTreeMap::from([("someone".to_owned(), map(private))]),
            viewer: Some("someone".to_owned()),
            params,
            history: Vec::new(),
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn buttons_follow_the_actions_param_convention() {
        let actions = r#"["ack", {"id": "approve", "label": "Approve PO", "params": {"po": "42"}, "enabledIf": "canApprove"}, {"label": "no id"}]"#;
        let item = card_item(&view_of(&[("actions", actions), ("state", "open"), ("note", "n")], &[]));
        assert_eq!(item.callback, "http");
        assert_eq!(item.status.as_deref(), Some("open"));
        assert_eq!(item.fields, [CardField { key: "note".to_owned(), value: "n".to_owned() }]);
        let summary: Vec<(&str, &str, bool)> =
            item.buttons.iter().map(|b| (b.action_id.as_str(), b.label.as_str(), b.enabled)).collect();
        assert_eq!(summary, [("ack", "Ack", true), ("approve", "Approve PO", false)]);
        assert_eq!(item.buttons[1].params, json!({ "po": "42" }));
        let item = card_item(&view_of(&[("actions", actions)], &[("canApprove", "true")]));
        assert!(item.buttons[1].enabled);

        // Not an array: shown as a field, no buttons. No buttons declared, no canApprove: none.
        let item = card_item(&view_of(&[("actions", "approve")], &[]));
        assert!(item.buttons.is_empty() && item.fields[0].key == "actions");
        assert!(card_item(&view_of(&[("title", "t")], &[])).buttons.is_empty());
        // canApprove only in someone's private data still makes Approve/Reject, disabled for others.
        let mut other = view_of(&[("title", "t")], &[("canApprove", "true")]);
        other.params.remove("canApprove");
        let item = card_item(&other);
        assert_eq!(
            item.buttons.iter().map(|b| (b.action_id.as_str(), b.enabled)).collect::<Vec<_>>(),
            [("approve", false), ("reject", false)]
        );
    }

    #[test]
    fn messages_are_summarised_for_a_bubble() {
        let action_card = json!({ "msgtype": "actionCard", "actionCard": { "title": "PO", "text": "Approve?",
            "btns": [{ "title": "Open", "actionURL": "https://erp.example/po/42" }] } });
        let summary = summarise(&action_card);
        assert_eq!(
            (summary.msgtype.as_str(), summary.title.as_deref(), summary.text.as_str()),
            ("actionCard", Some("PO"), "Approve?")
        );
        assert_eq!(
            summary.links,
            [MessageLink { title: "Open".to_owned(), url: "https://erp.example/po/42".to_owned() }]
        );
        let oa = json!({ "msgtype": "oa", "oa": { "head": { "text": "Leave" }, "body": { "content": "2 days" } } });
        assert_eq!(summarise(&oa).title.as_deref(), Some("Leave"));
        assert_eq!(summarise(&oa).text, "2 days");
        let param = summarise_msg_param(
            "sampleActionCard2",
            &json!({ "title": "T", "text": "X", "actionTitle1": "A",
            "actionURL1": "https://a", "actionTitle2": "B", "actionURL2": "https://b" }),
        );
        assert_eq!(param.links.len(), 2);
        let odd = summarise_msg_param("sampleAudio", &json!({ "mediaId": "m", "duration": "3" }));
        assert!(odd.text.contains("mediaId"), "unknown shapes fall back to their JSON");
    }
}
