//! Work notifications (old API, reference §3.1) and enterprise robot messages (new API, §3.2).
//!
//! Both are fire-and-forget on DingTalk's side: a successful answer only means "accepted". Work
//! notifications silently drop duplicates and over-quota messages (visible only through
//! [`Messages::send_result`]); robot 1:1 sends report flow-controlled recipients, which
//! [`BatchSendOutcome::retry_these`] hands back to the caller.

use super::openapi::OpenApi;
use connect::DeliveryError;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Most userids one `asyncsend_v2` call takes (internal apps, reference §3.1).
pub const MAX_WORK_NOTIFICATION_USERIDS: usize = 5000;
/// Most department ids one `asyncsend_v2` call takes (reference §3.1).
pub const MAX_WORK_NOTIFICATION_DEPTS: usize = 500;
/// Most `userIds` one robot `batchSend` call takes (reference §3.2); larger lists are split.
pub const MAX_ROBOT_BATCH: usize = 20;

pub(crate) const ASYNCSEND_PATH: &str = "/topapi/message/corpconversation/asyncsend_v2";
pub(crate) const PROGRESS_PATH: &str = "/topapi/message/corpconversation/getsendprogress";
pub(crate) const RESULT_PATH: &str = "/topapi/message/corpconversation/getsendresult";
pub(crate) const BATCH_SEND_PATH: &str = "/v1.0/robot/oToMessages/batchSend";
pub(crate) const GROUP_SEND_PATH: &str = "/v1.0/robot/groupMessages/send";

// ---------------------------------------------------------------------------------------------
// Work notification message bodies (`msg` of asyncsend_v2). Old API: snake_case, except the
// `link` object which DingTalk spells `messageUrl` / `picUrl`.
// ---------------------------------------------------------------------------------------------

/// The `msg` object of a work notification: `{"msgtype": "...", "<msgtype>": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msgtype")]
pub enum WorkMessage {
    #[serde(rename = "text")]
    Text { text: WorkText },
    #[serde(rename = "markdown")]
    Markdown { markdown: WorkMarkdown },
    #[serde(rename = "link")]
    Link { link: WorkLink },
    #[serde(rename = "action_card")]
    ActionCard { action_card: WorkActionCard },
    #[serde(rename = "oa")]
    // Boxed: an OA message is several times larger than the other variants.
    Oa { oa: Box<OaMessage> },
    #[serde(rename = "image")]
    Image { image: MediaRef },
    #[serde(rename = "file")]
    File { file: MediaRef },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkText {
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkMarkdown {
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkLink {
    #[serde(rename = "messageUrl")]
    pub message_url: String,
    #[serde(rename = "picUrl")]
    pub pic_url: String,
    pub title: String,
    pub text: String,
}

/// A media file uploaded before (`media_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    pub media_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkActionCard {
    pub title: String,
    /// Markdown body.
    pub markdown: String,
    #[serde(flatten)]
    pub buttons: WorkActionButtons,
}

/// Whole-card jump (one link) or independent buttons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkActionButtons {
    Single {
        single_title: String,
        single_url: String,
    },
    Multi {
        /// `"0"` vertical, `"1"` horizontal.
        btn_orientation: String,
        btn_json_list: Vec<WorkActionButton>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkActionButton {
    pub title: String,
    pub action_url: String,
}

/// An OA message: a header, a form of key/value lines and an optional status bar that
/// `status_bar/update` can change later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaMessage {
    pub message_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pc_message_url: Option<String>,
    pub head: OaHead,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_bar: Option<OaStatusBar>,
    pub body: OaBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaHead {
    /// ARGB hex, e.g. `FFBBBBBB`.
    pub bgcolor: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaStatusBar {
    pub status_value: String,
    pub status_bg: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub form: Vec<OaFormLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rich: Option<OaRich>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_count: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaFormLine {
    pub key: String,
    pub value: String,
}

/// A highlighted number, e.g. `12800` `HKD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OaRich {
    pub num: String,
    pub unit: String,
}

impl WorkMessage {
    pub fn text(content: impl Into<String>) -> Self {
        Self::Text { text: WorkText { content: content.into() } }
    }

    pub fn markdown(title: impl Into<String>, text: impl Into<String>) -> Self {
        Self::Markdown { markdown: WorkMarkdown { title: title.into(), text: text.into() } }
    }

    pub fn link(
        title: impl Into<String>,
        text: impl Into<String>,
        message_url: impl Into<String>,
        pic_url: impl Into<String>,
    ) -> Self {
        Self::Link {
            link: WorkLink {
                message_url: message_url.into(),
                pic_url: pic_url.into(),
                title: title.into(),
                text: text.into(),
            },
        }
    }

    /// Whole-card jump: one link under the card.
    pub fn action_card_single(
        title: impl Into<String>,
        markdown: impl Into<String>,
        single_title: impl Into<String>,
        single_url: impl Into<String>,
    ) -> Self {
        Self::ActionCard {
            action_card: WorkActionCard {
                title: title.into(),
                markdown: markdown.into(),
                buttons: WorkActionButtons::Single { single_title: single_title.into(), single_url: single_url.into() },
            },
        }
    }

    /// Independent buttons, each opening its own URL; `horizontal` lays them side by side.
    pub fn action_card_buttons(
        title: impl Into<String>,
        markdown: impl Into<String>,
        buttons: Vec<WorkActionButton>,
        horizontal: bool,
    ) -> Self {
        Self::ActionCard {
            action_card: WorkActionCard {
                title: title.into(),
                markdown: markdown.into(),
                buttons: WorkActionButtons::Multi {
                    btn_orientation: if horizontal { "1" } else { "0" }.to_owned(),
                    btn_json_list: buttons,
                },
            },
        }
    }

    pub fn oa(oa: OaMessage) -> Self {
        Self::Oa { oa: Box::new(oa) }
    }

    /// The wire `msgtype`.
    pub fn msgtype(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Markdown { .. } => "markdown",
            Self::Link { .. } => "link",
            Self::ActionCard { .. } => "action_card",
            Self::Oa { .. } => "oa",
            Self::Image { .. } => "image",
            Self::File { .. } => "file",
        }
    }
}

/// Who receives a work notification. At least one target must be set; DingTalk expands
/// departments to their sub-departments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    pub userids: Vec<String>,
    pub dept_ids: Vec<i64>,
    pub to_all_user: bool,
}

impl Recipients {
    pub fn users<I, S>(userids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { userids: userids.into_iter().map(Into::into).collect(), ..Self::default() }
    }

    pub fn departments(dept_ids: impl IntoIterator<Item = i64>) -> Self {
        Self { dept_ids: dept_ids.into_iter().collect(), ..Self::default() }
    }

    pub fn everyone() -> Self {
        Self { to_all_user: true, ..Self::default() }
    }
}

/// One work notification: recipients and message. The app's `agent_id` comes from the
/// [`OpenApi`] credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkNotification {
    pub to: Recipients,
    pub msg: WorkMessage,
}

/// The `asyncsend_v2` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct AsyncSendRequest<'a> {
    pub agent_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userid_list: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dept_id_list: Option<String>,
    pub to_all_user: bool,
    pub msg: &'a WorkMessage,
}

/// Why a work notification's recipients cannot be sent as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecipientsError {
    #[error("no recipients: set userids, dept_ids or to_all_user")]
    None,
    #[error("userid {0:?} contains a comma, which the comma-separated list cannot carry")]
    CommaInUserid(String),
    #[error(
        "{0} userids in one work notification; DingTalk takes at most {MAX_WORK_NOTIFICATION_USERIDS}, \
         split the recipients"
    )]
    TooManyUserids(usize),
    #[error("{0} departments in one work notification; DingTalk takes at most {MAX_WORK_NOTIFICATION_DEPTS}")]
    TooManyDepartments(usize),
}

impl WorkNotification {
    pub fn new(to: Recipients, msg: WorkMessage) -> Self {
        Self { to, msg }
    }

    /// The wire body, after checking the limits DingTalk would otherwise reject (or, worse,
    /// accept and silently drop).
    pub(crate) fn request(&self, agent_id: i64) -> Result<AsyncSendRequest<'_>, RecipientsError> {
        let to = &self.to;
        if to.userids.is_empty() && to.dept_ids.is_empty() && !to.to_all_user {
            return Err(RecipientsError::None);
        }
        let userids = dedup(to.userids.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()));
        if let Some(bad) = userids.iter().find(|u| u.contains(',')) {
            return Err(RecipientsError::CommaInUserid(bad.clone()));
        }
        if userids.len() > MAX_WORK_NOTIFICATION_USERIDS {
            return Err(RecipientsError::TooManyUserids(userids.len()));
        }
        let dept_ids = dedup(to.dept_ids.iter().copied());
        if dept_ids.len() > MAX_WORK_NOTIFICATION_DEPTS {
            return Err(RecipientsError::TooManyDepartments(dept_ids.len()));
        }
        let join = |parts: Vec<String>| if parts.is_empty() { None } else { Some(parts.join(",")) };
        Ok(AsyncSendRequest {
            agent_id,
            userid_list: join(userids),
            dept_id_list: join(dept_ids.iter().map(i64::to_string).collect()),
            to_all_user: to.to_all_user,
            msg: &self.msg,
        })
    }
}

/// Keeps the first occurrence of each item, in order.
fn dedup<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = BTreeSet::new();
    items.into_iter().filter(|item| seen.insert(item.clone())).collect()
}

#[derive(Debug, Deserialize)]
pub(crate) struct AsyncSendResponse {
    pub task_id: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct TaskRequest {
    pub agent_id: i64,
    pub task_id: i64,
}

/// `getsendprogress`: how far DingTalk got with an accepted task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendProgress {
    #[serde(default)]
    pub progress_in_percent: i64,
    /// 0 not started, 1 sending, 2 finished (DingTalk's values; UNVERIFIED beyond the doc text).
    #[serde(default)]
    pub status: i64,
}

impl SendProgress {
    pub fn finished(&self) -> bool {
        self.status == 2
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProgressResponse {
    pub progress: SendProgress,
}

/// `getsendresult`: where each recipient ended up. Silently dropped recipients (duplicate
/// content, daily quota) are in `forbidden_user_id_list`, with the reason in `forbidden_list`.
/// The field list is UNVERIFIED (reference §3.1); absent lists read as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    #[serde(default, deserialize_with = "null_as_default")]
    pub invalid_user_id_list: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub forbidden_user_id_list: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub failed_user_id_list: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub read_user_id_list: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub unread_user_id_list: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub invalid_dept_id_list: Vec<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub forbidden_list: Vec<ForbiddenEntry>,
}

/// Why a recipient was dropped. Codes seen in DingTalk docs (UNVERIFIED): `143105` daily
/// quota reached, `143106` identical content already sent today.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForbiddenEntry {
    #[serde(deserialize_with = "string_or_number")]
    pub code: String,
    #[serde(default)]
    pub count: i64,
    pub userid: String,
}

/// Forbidden code: the user already got this exact content today.
pub const FORBIDDEN_DUPLICATE: &str = "143106";
/// Forbidden code: the user reached the per-app daily quota.
pub const FORBIDDEN_QUOTA: &str = "143105";

#[derive(Debug, Deserialize)]
pub(crate) struct ResultResponse {
    #[serde(default)]
    pub send_result: SendResult,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        other => Ok(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Enterprise robot messages: msgKey + msgParam (new API, camelCase).
// ---------------------------------------------------------------------------------------------

/// An enterprise robot message: a template key and its parameters. DingTalk wants `msgParam`
/// as a JSON *string* (reference §3.2, §11 gotcha 2); [`AppRobotMessage::msg_param_json`] makes
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRobotMessage {
    pub msg_key: String,
    pub msg_param: BTreeMap<String, String>,
}

/// One button of a robot action card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotButton {
    pub title: String,
    pub url: String,
}

impl RobotButton {
    pub fn new(title: impl Into<String>, url: impl Into<String>) -> Self {
        Self { title: title.into(), url: url.into() }
    }
}

/// An action card needs 2 to 5 vertical buttons (`sampleActionCard2`..`5`) or exactly 2
/// horizontal ones (`sampleActionCard6`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a robot action card takes {expected} buttons, got {got}")]
pub struct ButtonCountError {
    pub expected: &'static str,
    pub got: usize,
}

impl AppRobotMessage {
    /// Any template, for keys without a typed builder (`sampleAudio`, `sampleFile`, …).
    pub fn custom<K, V>(msg_key: impl Into<String>, params: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self { msg_key: msg_key.into(), msg_param: params.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    pub fn sample_text(content: impl Into<String>) -> Self {
        Self::custom("sampleText", [("content", content.into())])
    }

    pub fn sample_markdown(title: impl Into<String>, text: impl Into<String>) -> Self {
        Self::custom("sampleMarkdown", [("title", title.into()), ("text", text.into())])
    }

    pub fn sample_image(photo_url: impl Into<String>) -> Self {
        Self::custom("sampleImageMsg", [("photoURL", photo_url.into())])
    }

    pub fn sample_link(
        title: impl Into<String>,
        text: impl Into<String>,
        message_url: impl Into<String>,
        pic_url: impl Into<String>,
    ) -> Self {
        Self::custom(
            "sampleLink",
            [
                ("title", title.into()),
                ("text", text.into()),
                ("messageUrl", message_url.into()),
                ("picUrl", pic_url.into()),
            ],
        )
    }

    /// `sampleActionCard`: the whole card opens `single_url`.
    pub fn sample_action_card(
        title: impl Into<String>,
        text: impl Into<String>,
        single_title: impl Into<String>,
        single_url: impl Into<String>,
    ) -> Self {
        Self::custom(
            "sampleActionCard",
            [
                ("title", title.into()),
                ("text", text.into()),
                ("singleTitle", single_title.into()),
                ("singleURL", single_url.into()),
            ],
        )
    }

    /// `sampleActionCard2`..`sampleActionCard5`: 2 to 5 vertical buttons
    /// (`actionTitleN` / `actionURLN`).
    pub fn sample_action_card_vertical(
        title: impl Into<String>,
        text: impl Into<String>,
        buttons: &[RobotButton],
    ) -> Result<Self, ButtonCountError> {
        if !(2..=5).contains(&buttons.len()) {
            return Err(ButtonCountError { expected: "2 to 5", got: buttons.len() });
        }
        let mut params = vec![("title".to_owned(), title.into()), ("text".to_owned(), text.into())];
        for (i, b) in buttons.iter().enumerate() {
            params.push((format!("actionTitle{}", i + 1), b.title.clone()));
            params.push((format!("actionURL{}", i + 1), b.url.clone()));
        }
        Ok(Self::custom(format!("sampleActionCard{}", buttons.len()), params))
    }

    /// `sampleActionCard6`: two buttons side by side (`buttonTitleN` / `buttonUrlN`).
    pub fn sample_action_card_horizontal(
        title: impl Into<String>,
        text: impl Into<String>,
        left: RobotButton,
        right: RobotButton,
    ) -> Self {
        Self::custom(
            "sampleActionCard6",
            [
                ("title", title.into()),
                ("text", text.into()),
                ("buttonTitle1", left.title),
                ("buttonUrl1", left.url),
                ("buttonTitle2", right.title),
                ("buttonUrl2", right.url),
            ],
        )
    }

    /// `msgParam` as DingTalk wants it: the parameters as a JSON string.
    pub fn msg_param_json(&self) -> String {
        // A map of strings always serialises.
        serde_json::to_string(&self.msg_param).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchSendRequest<'a> {
    pub robot_code: &'a str,
    pub user_ids: &'a [String],
    pub msg_key: &'a str,
    pub msg_param: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BatchSendResponse {
    #[serde(default)]
    pub process_query_key: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub invalid_staff_id_list: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub flow_controlled_staff_id_list: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub filtered_staff_id_list: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupSendRequest<'a> {
    pub robot_code: &'a str,
    pub open_conversation_id: &'a str,
    pub msg_key: &'a str,
    pub msg_param: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupSendResponse {
    pub process_query_key: String,
}

/// What a robot 1:1 send achieved across its calls of ≤ 20 recipients.
#[derive(Debug, Default)]
pub struct BatchSendOutcome {
    /// One per call that DingTalk accepted (for read status and recall).
    pub process_query_keys: Vec<String>,
    /// Not users of this organisation: sending again will not help.
    pub invalid: Vec<String>,
    /// Filtered by DingTalk (e.g. outside the app's visibility): sending again will not help.
    pub filtered: Vec<String>,
    /// Hit DingTalk's per-user flow control: nothing was delivered to them. **Send to them
    /// again later** (see [`BatchSendOutcome::retry_these`]).
    pub flow_controlled: Vec<String>,
    /// Recipients whose call was never accepted because an earlier call went through and a
    /// later one failed with `failure`. Send to them again (after the failure's disposition).
    pub unsent: Vec<String>,
    pub failure: Option<DeliveryError>,
}

impl BatchSendOutcome {
    /// Every recipient that did not get the message but may on a later attempt: the
    /// flow-controlled ones and those of calls that were not accepted.
    pub fn retry_these(&self) -> Vec<String> {
        self.flow_controlled.iter().chain(&self.unsent).cloned().collect()
    }

    /// True when every recipient was either delivered to or is permanently unreachable.
    pub fn is_complete(&self) -> bool {
        self.flow_controlled.is_empty() && self.unsent.is_empty()
    }
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Work notifications and robot messages of one app.
#[derive(Debug, Clone)]
pub struct Messages {
    api: OpenApi,
}

fn bad_payload(destination: String, detail: String) -> DeliveryError {
    DeliveryError::BadPayload { destination, detail }
}

impl Messages {
    pub fn new(api: OpenApi) -> Self {
        Self { api }
    }

    pub fn api(&self) -> &OpenApi {
        &self.api
    }

    fn agent_id(&self) -> Result<i64, DeliveryError> {
        self.api.agent_id().ok_or_else(|| {
            bad_payload(
                format!("DingTalk app {} work notifications", self.api.app_key()),
                "work notifications need the app's agent_id (AgentId in the developer console); \
                 set agent_id in the app credentials"
                    .to_owned(),
            )
        })
    }

    /// Sends a work notification (`asyncsend_v2`) and returns its `task_id`. Accepted is not
    /// delivered: duplicates and over-quota recipients are dropped silently, see
    /// [`Messages::send_result`].
    pub async fn send_work_notification(&self, notification: &WorkNotification) -> Result<i64, DeliveryError> {
        let agent_id = self.agent_id()?;
        let body = notification.request(agent_id).map_err(|e| {
            bad_payload(format!("DingTalk app {} work notification", self.api.app_key()), e.to_string())
        })?;
        let answer: AsyncSendResponse = self.api.call_old(ASYNCSEND_PATH, &body).await?;
        tracing::debug!(
            app_key = %self.api.app_key(),
            task_id = answer.task_id,
            msgtype = notification.msg.msgtype(),
            "DingTalk accepted a work notification."
        );
        Ok(answer.task_id)
    }

    /// `getsendprogress` of a task this app sent.
    pub async fn send_progress(&self, task_id: i64) -> Result<SendProgress, DeliveryError> {
        let body = TaskRequest { agent_id: self.agent_id()?, task_id };
        let answer: ProgressResponse = self.api.call_old(PROGRESS_PATH, &body).await?;
        Ok(answer.progress)
    }

    /// `getsendresult` of a task this app sent: who got it, who was dropped and why.
    pub async fn send_result(&self, task_id: i64) -> Result<SendResult, DeliveryError> {
        let body = TaskRequest { agent_id: self.agent_id()?, task_id };
        let answer: ResultResponse = self.api.call_old(RESULT_PATH, &body).await?;
        Ok(answer.send_result)
    }

    /// Robot 1:1 messages to `user_ids` (deduplicated), in calls of at most 20.
    ///
    /// `Err` only when the first call fails (nothing was sent). When a later call fails, the
    /// recipients of that call and the ones after it are in [`BatchSendOutcome::unsent`] with
    /// the error in `failure`, so a retry does not repeat the calls that went through.
    pub async fn batch_send(
        &self,
        robot_code: &str,
        user_ids: &[String],
        msg: &AppRobotMessage,
    ) -> Result<BatchSendOutcome, DeliveryError> {
        let chunks = robot_chunks(user_ids);
        if chunks.is_empty() {
            return Err(bad_payload(
                format!("DingTalk robot {robot_code}"),
                "no recipients: user_ids is empty".to_owned(),
            ));
        }
        let msg_param = msg.msg_param_json();
        let mut outcome = BatchSendOutcome::default();
        for (i, chunk) in chunks.iter().enumerate() {
            let body =
                BatchSendRequest { robot_code, user_ids: chunk, msg_key: &msg.msg_key, msg_param: msg_param.clone() };
            let answer: BatchSendResponse =
                match self.api.call_new(http::Method::POST, BATCH_SEND_PATH, &[], Some(&body)).await {
                    Ok(answer) => answer,
                    Err(err) if i == 0 => return Err(err),
                    Err(err) => {
                        outcome.unsent = chunks[i..].concat();
                        outcome.failure = Some(err);
                        break;
                    }
                };
            outcome.process_query_keys.push(answer.process_query_key);
            outcome.invalid.extend(answer.invalid_staff_id_list);
            outcome.filtered.extend(answer.filtered_staff_id_list);
            outcome.flow_controlled.extend(answer.flow_controlled_staff_id_list);
        }
        if !outcome.is_complete() {
            tracing::info!(
                robot_code,
                flow_controlled = outcome.flow_controlled.len(),
                unsent = outcome.unsent.len(),
                "DingTalk robot message did not reach every recipient; they are handed back for a retry."
            );
        }
        Ok(outcome)
    }

    /// A robot message to a group chat; returns the `processQueryKey`.
    pub async fn group_send(
        &self,
        robot_code: &str,
        open_conversation_id: &str,
        msg: &AppRobotMessage,
    ) -> Result<String, DeliveryError> {
        let body = GroupSendRequest {
            robot_code,
            open_conversation_id,
            msg_key: &msg.msg_key,
            msg_param: msg.msg_param_json(),
        };
        let answer: GroupSendResponse =
            self.api.call_new(http::Method::POST, GROUP_SEND_PATH, &[], Some(&body)).await?;
        Ok(answer.process_query_key)
    }
}

/// Splits `user_ids` (deduplicated, order kept) into the chunks one `batchSend` call takes.
pub(crate) fn robot_chunks(user_ids: &[String]) -> Vec<Vec<String>> {
    let unique = dedup(user_ids.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()));
    unique.chunks(MAX_ROBOT_BATCH).map(<[String]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    fn captured_body(path: &str) -> Value {
        crate::dingtalk::test_support::sdk_request_body("POST", path)
    }

    /// msgParam compared as decoded JSON: the SDK's `json.dumps` puts a space after `:`.
    fn split_msg_param(mut body: Value) -> (Value, Value) {
        let param = body["msgParam"].as_str().expect("msgParam must be a JSON string").to_owned();
        body["msgParam"] = Value::Null;
        (body, serde_json::from_str(&param).unwrap())
    }

    #[test]
    fn batch_send_body_matches_the_sdk_capture() {
        let captured = captured_body(BATCH_SEND_PATH);
        let param: BTreeMap<String, String> = serde_json::from_str(captured["msgParam"].as_str().unwrap()).unwrap();
        let msg = AppRobotMessage::sample_markdown(param["title"].clone(), param["text"].clone());
        let users = vec!["manager4711".to_owned(), "staff0815".to_owned()];
        let ours = BatchSendRequest {
            robot_code: "dingrobotcode0001",
            user_ids: &users,
            msg_key: &msg.msg_key,
            msg_param: msg.msg_param_json(),
        };
        let ours = serde_json::to_value(&ours).unwrap();
        assert_eq!(split_msg_param(ours), split_msg_param(captured));
    }

    #[test]
    fn group_send_body_matches_the_sdk_capture() {
        let captured = captured_body(GROUP_SEND_PATH);
        let msg = AppRobotMessage::sample_text("New opportunity: ACME HK Ltd, est. HK$250,000");
        let ours = GroupSendRequest {
            robot_code: "dingrobotcode0001",
            open_conversation_id: "cidAbCdEfGhIjKlMnOpQrStUv==",
            msg_key: &msg.msg_key,
            msg_param: msg.msg_param_json(),
        };
        assert_eq!(split_msg_param(serde_json::to_value(&ours).unwrap()), split_msg_param(captured));
    }

    #[test]
    fn robot_builders_use_dingtalk_parameter_names() {
        let card = AppRobotMessage::sample_action_card("T", "x", "Open", "https://e/1");
        assert_eq!(card.msg_key, "sampleActionCard");
        assert_eq!(card.msg_param["singleURL"], "https://e/1");
        let link = AppRobotMessage::sample_link("T", "x", "https://e/m", "https://e/p.png");
        assert_eq!(link.msg_param["messageUrl"], "https://e/m");
        assert_eq!(link.msg_param["picUrl"], "https://e/p.png");
        let buttons: Vec<RobotButton> = (1..=3).map(|i| RobotButton::new(format!("b{i}"), format!("u{i}"))).collect();
        let vertical = AppRobotMessage::sample_action_card_vertical("T", "x", &buttons).unwrap();
        assert_eq!(vertical.msg_key, "sampleActionCard3");
        assert_eq!(vertical.msg_param["actionTitle3"], "b3");
        assert_eq!(vertical.msg_param["actionURL1"], "u1");
        assert_eq!(
            AppRobotMessage::sample_action_card_vertical("T", "x", &buttons[..1]),
            Err(ButtonCountError { expected: "2 to 5", got: 1 })
        );
        let six = (0..6).map(|i| RobotButton::new(i.to_string(), i.to_string())).collect::<Vec<_>>();
        assert!(AppRobotMessage::sample_action_card_vertical("T", "x", &six).is_err());
        let horizontal = AppRobotMessage::sample_action_card_horizontal(
            "T",
            "x",
            RobotButton::new("Yes", "u1"),
            RobotButton::new("No", "u2"),
        );
        assert_eq!(horizontal.msg_key, "sampleActionCard6");
        assert_eq!(horizontal.msg_param["buttonUrl2"], "u2");
        // The parameters travel as a string holding a JSON object.
        let text = AppRobotMessage::sample_text("hi \"there\"").msg_param_json();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"content": "hi \"there\""}));
    }

    #[test]
    fn work_messages_serialise_to_the_asyncsend_shapes() {
        let cases = [
            (WorkMessage::text("hi"), json!({"msgtype": "text", "text": {"content": "hi"}})),
            (
                WorkMessage::markdown("T", "# x"),
                json!({"msgtype": "markdown", "markdown": {"title": "T", "text": "# x"}}),
            ),
            (
                WorkMessage::link("T", "x", "https://e/m", "@lADO"),
                json!({"msgtype": "link", "link": {"messageUrl": "https://e/m", "picUrl": "@lADO", "title": "T", "text": "x"}}),
            ),
            (
                WorkMessage::action_card_single("T", "md", "Open", "https://e/1"),
                json!({"msgtype": "action_card", "action_card": {"title": "T", "markdown": "md", "single_title": "Open", "single_url": "https://e/1"}}),
            ),
            (
                WorkMessage::action_card_buttons(
                    "T",
                    "md",
                    vec![WorkActionButton { title: "A".into(), action_url: "https://e/a".into() }],
                    true,
                ),
                json!({"msgtype": "action_card", "action_card": {"title": "T", "markdown": "md", "btn_orientation": "1",
                    "btn_json_list": [{"title": "A", "action_url": "https://e/a"}]}}),
            ),
        ];
        for (msg, expected) in cases {
            let value = serde_json::to_value(&msg).unwrap();
            assert_eq!(value, expected);
            assert_eq!(value["msgtype"], msg.msgtype());
            // The simulator reads the same shapes back.
            assert_eq!(serde_json::from_value::<WorkMessage>(value).unwrap(), msg);
        }
        let oa = WorkMessage::oa(OaMessage {
            message_url: "https://e/po/42".into(),
            pc_message_url: None,
            head: OaHead { bgcolor: "FFBBBBBB".into(), text: "PO".into() },
            status_bar: Some(OaStatusBar { status_value: "Pending".into(), status_bg: "0xFFF65E5E".into() }),
            body: OaBody {
                title: Some("PO-2024-0042".into()),
                form: vec![OaFormLine { key: "Amount:".into(), value: "HK$12,800".into() }],
                rich: Some(OaRich { num: "12800".into(), unit: "HKD".into() }),
                ..OaBody::default()
            },
        });
        let value = serde_json::to_value(&oa).unwrap();
        assert_eq!(value["oa"]["head"]["bgcolor"], "FFBBBBBB");
        assert_eq!(value["oa"]["status_bar"]["status_value"], "Pending");
        assert_eq!(value["oa"]["body"]["form"][0]["key"], "Amount:");
        assert!(value["oa"].get("pc_message_url").is_none());
        assert!(value["oa"]["body"].get("content").is_none());
    }

    #[test]
    fn work_notification_request_joins_and_checks_targets() {
        let n = WorkNotification::new(
            Recipients {
                userids: vec!["a".into(), " b ".into(), "a".into()],
                dept_ids: vec![20001, 20001],
                to_all_user: false,
            },
            WorkMessage::text("x"),
        );
        let body = serde_json::to_value(n.request(2391234567).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"agent_id": 2391234567_i64, "userid_list": "a,b", "dept_id_list": "20001", "to_all_user": false,
                "msg": {"msgtype": "text", "text": {"content": "x"}}})
        );
        let everyone = WorkNotification::new(Recipients::everyone(), WorkMessage::text("x"));
        let body = serde_json::to_value(everyone.request(1).unwrap()).unwrap();
        assert!(body.get("userid_list").is_none() && body["to_all_user"] == true);

        let nobody = WorkNotification::new(Recipients::default(), WorkMessage::text("x"));
        assert!(nobody.request(1).unwrap_err().to_string().contains("no recipients"));
        let too_many =
            WorkNotification::new(Recipients::users((0..5001).map(|i| format!("u{i}"))), WorkMessage::text("x"));
        assert!(too_many.request(1).unwrap_err().to_string().contains("at most 5000"));
        let at_limit =
            WorkNotification::new(Recipients::users((0..5000).map(|i| format!("u{i}"))), WorkMessage::text("x"));
        assert!(at_limit.request(1).is_ok());
        let comma = WorkNotification::new(Recipients::users(["a,b"]), WorkMessage::text("x"));
        assert!(comma.request(1).unwrap_err().to_string().contains("comma"));
    }

    #[test]
    fn robot_recipients_are_deduplicated_and_split_by_twenty() {
        let mut users: Vec<String> = (0..45).map(|i| format!("u{i}")).collect();
        users.push("u3".into());
        users.push(" ".into());
        let chunks = robot_chunks(&users);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![20, 20, 5]);
        assert_eq!(chunks[0][0], "u0");
        assert_eq!(chunks[2][4], "u44");
    }

    #[test]
    fn send_result_reads_dingtalk_shapes() {
        let result: ResultResponse = serde_json::from_value(json!({
            "errcode": 0,
            "send_result": {
                "invalid_user_id_list": ["ghost"],
                "forbidden_user_id_list": ["a"],
                "failed_user_id_list": null,
                "read_user_id_list": [],
                "unread_user_id_list": ["b"],
                "invalid_dept_id_list": [9],
                "forbidden_list": [{"code": 143106, "count": 1, "userid": "a"}]
            }
        }))
        .unwrap();
        let r = result.send_result;
        assert_eq!(r.forbidden_list[0].code, FORBIDDEN_DUPLICATE);
        assert!(r.failed_user_id_list.is_empty());
        assert_eq!(r.invalid_dept_id_list, vec![9]);
        let response: BatchSendResponse = serde_json::from_value(
            fixture("openapi/response_examples.json")["new_api_api_dingtalk_com"]["batchSend_ok"]["body"].clone(),
        )
        .unwrap();
        assert_eq!(response.process_query_key, "pqk-0001");
        assert!(response.filtered_staff_id_list.is_empty());
    }

    #[test]
    fn outcome_hands_back_flow_controlled_and_unsent_recipients() {
        let outcome = BatchSendOutcome {
            flow_controlled: vec!["a".into()],
            unsent: vec!["b".into()],
            invalid: vec!["ghost".into()],
            ..BatchSendOutcome::default()
        };
        assert_eq!(outcome.retry_these(), vec!["a".to_owned(), "b".to_owned()]);
        assert!(!outcome.is_complete());
        assert!(BatchSendOutcome { invalid: vec!["ghost".into()], ..BatchSendOutcome::default() }.is_complete());
    }
}
