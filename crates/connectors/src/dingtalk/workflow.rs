//! OA approvals (workflow), reference §5: starting an instance, reading it, acting on a task,
//! terminating, listing instance ids for reconciliation, and the canonical [`ApprovalEvent`] read
//! from `bpms_instance_change` / `bpms_task_change` in both their HTTP and Stream forms.
//!
//! Status and result values are read case-insensitively and unknown ones are kept (the full
//! enums and their casing are UNVERIFIED, §5.2), so a new DingTalk value never breaks a read.

use super::openapi::{Envelope, OpenApi};
use super::VENDOR;
use connect::DeliveryError;
use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// Most ids `instanceIds/query` returns per page (§5.2).
pub const MAX_PAGE: u32 = 20;

/// How an approver node decides (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ActionType {
    /// Everyone listed must agree.
    And,
    /// The first one to act decides.
    Or,
    /// A single approver.
    None,
}

/// One approver node of a started instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approver {
    pub action_type: ActionType,
    pub user_ids: Vec<String>,
}

/// When cc recipients are told (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CcPosition {
    Start,
    Finish,
    StartFinish,
}

/// One form value of a start request (§5.1). Values are always strings; use the typed
/// constructors so each component gets the format DingTalk expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FormValue {
    /// The component label as in the template (components are matched by name or id).
    pub name: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_value: Option<String>,
    /// The SDK always sends `[]` here (wire capture) and the server accepts it.
    #[serde(default)]
    pub details: Vec<Value>,
}

impl FormValue {
    fn plain(name: &str, value: String) -> Self {
        Self {
            name: name.to_owned(),
            value,
            id: None,
            biz_alias: None,
            component_type: None,
            ext_value: None,
            details: Vec::new(),
        }
    }

    /// `TextField` / `TextareaField` / `DDSelectField` (option text).
    pub fn text(name: &str, value: &str) -> Self {
        Self::plain(name, value.to_owned())
    }

    /// `NumberField`: the number's decimal text.
    pub fn number(name: &str, value: impl fmt::Display) -> Self {
        Self::plain(name, value.to_string())
    }

    /// `MoneyField`: the plain amount ("12800.00"), no currency code or grouping.
    pub fn money(name: &str, amount: &model::Money) -> Self {
        Self::plain(name, amount.amount_string())
    }

    /// `DDDateField`: `yyyy-MM-dd`.
    pub fn date(name: &str, date: jiff::civil::Date) -> Self {
        Self::plain(name, date.strftime("%Y-%m-%d").to_string())
    }

    /// `TableField`: a JSON array of rows, each row an array of `{name, value}` cells.
    pub fn table<R, C, N, V>(name: &str, rows: R) -> Self
    where
        R: IntoIterator<Item = C>,
        C: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let rows: Vec<Value> = rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|(n, v)| serde_json::json!({ "name": n.as_ref(), "value": v.as_ref() }))
                    .collect::<Vec<_>>()
                    .into()
            })
            .collect();
        let mut value = Self::plain(name, Value::from(rows).to_string());
        value.component_type = Some("TableField".to_owned());
        value
    }

    /// Sets the component id (matching by id instead of label).
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }
}

/// The body of `POST /v1.0/workflow/processInstances` (§5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartProcessInstance {
    pub originator_user_id: String,
    pub process_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dept_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microapp_agent_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<Approver>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cc_list: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cc_position: Option<CcPosition>,
    pub form_component_values: Vec<FormValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_detail_page_url: Option<String>,
}

impl StartProcessInstance {
    pub fn new(originator_user_id: &str, process_code: &str) -> Self {
        Self {
            originator_user_id: originator_user_id.to_owned(),
            process_code: process_code.to_owned(),
            dept_id: None,
            microapp_agent_id: None,
            approvers: Vec::new(),
            cc_list: Vec::new(),
            cc_position: None,
            form_component_values: Vec::new(),
            biz_detail_page_url: None,
        }
    }

    pub fn with_dept(mut self, dept_id: i64) -> Self {
        self.dept_id = Some(dept_id);
        self
    }

    /// Appends an approver node (nodes run in order).
    pub fn with_approvers<S: AsRef<str>>(mut self, action_type: ActionType, user_ids: &[S]) -> Self {
        let user_ids = user_ids.iter().map(|u| u.as_ref().to_owned()).collect();
        self.approvers.push(Approver { action_type, user_ids });
        self
    }

    pub fn with_cc<S: AsRef<str>>(mut self, user_ids: &[S], position: CcPosition) -> Self {
        self.cc_list = user_ids.iter().map(|u| u.as_ref().to_owned()).collect();
        self.cc_position = Some(position);
        self
    }

    pub fn with_value(mut self, value: FormValue) -> Self {
        self.form_component_values.push(value);
        self
    }
}

/// Declares a string enum read case-insensitively that keeps unknown values.
macro_rules! lenient_enum {
    ($(#[$meta:meta])* $name:ident default $default:expr, { $($variant:ident => $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this code does not know, as received.
            Other(String),
        }

        impl $name {
            pub fn parse(text: &str) -> Self {
                $(
                    if text.eq_ignore_ascii_case($text) $(|| text.eq_ignore_ascii_case($alias))* {
                        return Self::$variant;
                    }
                )+
                Self::Other(text.to_owned())
            }

            /// The canonical wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(text) => text,
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $default
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::parse(&Option::<String>::deserialize(d)?.unwrap_or_default()))
            }
        }
    };
}

lenient_enum! {
    /// `status` of an instance.
    InstanceStatus default Self::Other(String::new()), {
        New => "NEW",
        Running => "RUNNING",
        Terminated => "TERMINATED",
        Completed => "COMPLETED",
        Canceled => "CANCELED" | "CANCELLED",
    }
}

lenient_enum! {
    /// `status` of a task.
    TaskStatus default Self::Other(String::new()), {
        New => "NEW",
        Running => "RUNNING",
        Paused => "PAUSED",
        Canceled => "CANCELED" | "CANCELLED",
        Completed => "COMPLETED",
        Terminated => "TERMINATED",
    }
}

lenient_enum! {
    /// `result` of an instance (`agree`/`refuse`/`""`) or a task (`AGREE`/`REFUSE`/`REDIRECTED`/`NONE`).
    ApprovalResult default Self::None, {
        Agree => "agree",
        Refuse => "refuse",
        Redirected => "redirected" | "redirect",
        None => "" | "none",
    }
}

/// A decision on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Agree,
    Refuse,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agree => "agree",
            Self::Refuse => "refuse",
        }
    }
}

/// A time DingTalk sends as epoch ms (number or digit string) or as ISO 8601 text, seconds
/// optional (`2026-01-01T06:26Z` in the GET answer); empty means absent.
pub fn parse_time(value: &Value) -> Option<Timestamp> {
    match value {
        Value::Number(n) => n.as_i64().and_then(|ms| Timestamp::from_millisecond(ms).ok()),
        Value::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                None
            } else if text.bytes().all(|b| b.is_ascii_digit()) {
                text.parse::<i64>().ok().and_then(|ms| Timestamp::from_millisecond(ms).ok())
            } else {
                text.parse::<Timestamp>().ok()
            }
        }
        _ => None,
    }
}

fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.as_ref().and_then(parse_time))
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text,
        Some(other) => other.to_string(),
    })
}

fn lenient_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// A form value as read back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FormComponentValue {
    #[serde(deserialize_with = "lenient_string")]
    pub id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub value: String,
    #[serde(deserialize_with = "lenient_string")]
    pub component_type: String,
    #[serde(deserialize_with = "lenient_string")]
    pub biz_alias: String,
    #[serde(deserialize_with = "lenient_string")]
    pub ext_value: String,
}

/// One entry of an instance's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OperationRecord {
    #[serde(deserialize_with = "lenient_string")]
    pub user_id: String,
    #[serde(deserialize_with = "lenient_time")]
    pub date: Option<Timestamp>,
    /// e.g. `START_PROCESS_INSTANCE`, `EXECUTE_TASK_NORMAL`, `TERMINATE_PROCESS_INSTANCE`.
    #[serde(rename = "type", deserialize_with = "lenient_string")]
    pub kind: String,
    pub result: ApprovalResult,
    #[serde(deserialize_with = "lenient_string")]
    pub remark: String,
    #[serde(deserialize_with = "lenient_string")]
    pub show_name: String,
    #[serde(deserialize_with = "lenient_string")]
    pub activity_id: String,
}

/// One approver's step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Task {
    pub task_id: i64,
    #[serde(deserialize_with = "lenient_string")]
    pub user_id: String,
    pub status: TaskStatus,
    pub result: ApprovalResult,
    #[serde(deserialize_with = "lenient_string")]
    pub activity_id: String,
    #[serde(deserialize_with = "lenient_time")]
    pub create_time: Option<Timestamp>,
    #[serde(deserialize_with = "lenient_time")]
    pub finish_time: Option<Timestamp>,
    #[serde(deserialize_with = "lenient_string")]
    pub pc_url: String,
    #[serde(deserialize_with = "lenient_string")]
    pub mobile_url: String,
}

/// `result` of `GET /v1.0/workflow/processInstances` (§5.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcessInstance {
    #[serde(deserialize_with = "lenient_string")]
    pub title: String,
    #[serde(deserialize_with = "lenient_string")]
    pub business_id: String,
    pub status: InstanceStatus,
    pub result: ApprovalResult,
    #[serde(deserialize_with = "lenient_time")]
    pub create_time: Option<Timestamp>,
    #[serde(deserialize_with = "lenient_time")]
    pub finish_time: Option<Timestamp>,
    #[serde(deserialize_with = "lenient_string")]
    pub originator_user_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub originator_dept_id: String,
    #[serde(deserialize_with = "lenient_string")]
    pub originator_dept_name: String,
    #[serde(deserialize_with = "lenient_strings")]
    pub approver_user_ids: Vec<String>,
    #[serde(deserialize_with = "lenient_strings")]
    pub cc_user_ids: Vec<String>,
    #[serde(deserialize_with = "lenient_string")]
    pub biz_action: String,
    #[serde(deserialize_with = "lenient_string")]
    pub biz_data: String,
    pub form_component_values: Vec<FormComponentValue>,
    pub operation_records: Vec<OperationRecord>,
    pub tasks: Vec<Task>,
}

impl ProcessInstance {
    /// The value of the form component labelled `name`.
    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form_component_values.iter().find(|v| v.name == name).map(|v| v.value.as_str())
    }

    /// Tasks still waiting for their owner.
    pub fn running_tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(|t| t.status == TaskStatus::Running)
    }
}

/// One page of `POST /v1.0/workflow/processes/instanceIds/query`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceIdPage {
    pub ids: Vec<String>,
    /// Pass back for the next page; `None` on the last page.
    pub next_token: Option<i64>,
}

/// The body of `POST /v1.0/workflow/processes/instanceIds/query` (§5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListInstanceIds {
    pub process_code: String,
    /// Epoch ms.
    pub start_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub next_token: i64,
    #[serde(default = "default_page")]
    pub max_results: u32,
    /// Originators to filter on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<InstanceStatus>,
}

fn default_page() -> u32 {
    MAX_PAGE
}

impl ListInstanceIds {
    pub fn new(process_code: &str, start_ms: i64, end_ms: i64) -> Self {
        Self {
            process_code: process_code.to_owned(),
            start_time: start_ms,
            end_time: Some(end_ms),
            next_token: 0,
            max_results: MAX_PAGE,
            user_ids: Vec::new(),
            statuses: Vec::new(),
        }
    }

    /// Page from `next_token` (0 = first), `max_results` clamped to 1..=20.
    pub fn page(mut self, next_token: i64, max_results: u32) -> Self {
        self.next_token = next_token;
        self.max_results = max_results.clamp(1, MAX_PAGE);
        self
    }

    pub fn with_statuses(mut self, statuses: Vec<InstanceStatus>) -> Self {
        self.statuses = statuses;
        self
    }
}

/// `bpms_instance_change`.
pub const INSTANCE_CHANGE: &str = "bpms_instance_change";
/// `bpms_task_change`.
pub const TASK_CHANGE: &str = "bpms_task_change";

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskOutcome {
    Agree,
    Refuse,
    /// Handed to someone else (a new task starts for them).
    Redirect,
}

/// What an approval event says happened (§5.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ApprovalEventKind {
    InstanceStarted,
    InstanceFinished(Decision),
    InstanceTerminated,
    TaskStarted,
    TaskFinished(TaskOutcome),
    TaskCancelled,
    /// A `type`/`result` combination this code does not know, kept as received.
    Other {
        change_type: String,
        result: String,
    },
}

/// An approval event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalEventError {
    #[error("event type `{0}` is not an approval event (expected bpms_instance_change or bpms_task_change)")]
    NotApproval(String),
    #[error("approval event has no `{0}`")]
    Missing(&'static str),
    #[error("approval event data is not a JSON object")]
    NotObject,
}

/// `bpms_instance_change` / `bpms_task_change`, the same whichever transport brought it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalEvent {
    pub kind: ApprovalEventKind,
    /// `bpms_instance_change` or `bpms_task_change`.
    pub event_type: String,
    pub instance_id: String,
    pub process_code: String,
    /// The human approval number.
    pub business_id: String,
    pub title: String,
    /// Instance events: the originator; task events: the task owner.
    pub staff_id: String,
    /// HTTP: `corpId` in the body; Stream: header `eventCorpId`.
    pub corp_id: Option<String>,
    /// Stream only (header and data `eventId`): use it to drop redeliveries.
    pub event_id: Option<String>,
    pub task_id: Option<i64>,
    pub activity_id: Option<String>,
    pub activity_name: Option<String>,
    pub remark: Option<String>,
    /// Mobile approval page (instance events).
    pub url: Option<String>,
    pub create_time: Option<Timestamp>,
    pub finish_time: Option<Timestamp>,
}

impl ApprovalEvent {
    pub fn is_approval_event(event_type: &str) -> bool {
        event_type == INSTANCE_CHANGE || event_type == TASK_CHANGE
    }

    /// The decrypted plaintext of an HTTP callback (`EventType` and `corpId` inside).
    pub fn from_http(body: &Value) -> Result<Self, ApprovalEventError> {
        let event_type =
            body.get("EventType").and_then(Value::as_str).ok_or(ApprovalEventError::Missing("EventType"))?;
        Self::from_parts(event_type, body, None, None)
    }

    /// A Stream EVENT frame: its `headers` (with `eventType`, `eventCorpId`, `eventId`) and its
    /// decoded `data`.
    pub fn from_stream(headers: &Value, data: &Value) -> Result<Self, ApprovalEventError> {
        let header = |key: &str| headers.get(key).and_then(Value::as_str);
        let event_type = header("eventType").ok_or(ApprovalEventError::Missing("headers.eventType"))?;
        Self::from_parts(event_type, data, header("eventCorpId"), header("eventId"))
    }

    /// The event body with its type given separately; `corp_id` / `event_id` fill in what the
    /// body lacks.
    pub fn from_parts(
        event_type: &str,
        data: &Value,
        corp_id: Option<&str>,
        event_id: Option<&str>,
    ) -> Result<Self, ApprovalEventError> {
        if !Self::is_approval_event(event_type) {
            return Err(ApprovalEventError::NotApproval(event_type.to_owned()));
        }
        if !data.is_object() {
            return Err(ApprovalEventError::NotObject);
        }
        let text = |key: &str| match data.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let instance_id = text("processInstanceId").ok_or(ApprovalEventError::Missing("processInstanceId"))?;
        let change_type = text("type").unwrap_or_default();
        let result = text("result").unwrap_or_default();
        let kind = classify(event_type == INSTANCE_CHANGE, &change_type, &result);
        let task_id = match data.get("taskId") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Ok(Self {
            kind,
            event_type: event_type.to_owned(),
            instance_id,
            process_code: text("processCode").unwrap_or_default(),
            business_id: text("businessId").unwrap_or_default(),
            title: text("title").unwrap_or_default(),
            staff_id: text("staffId").unwrap_or_default(),
            corp_id: text("corpId").or_else(|| corp_id.map(str::to_owned)),
            event_id: text("eventId").or_else(|| event_id.map(str::to_owned)),
            task_id,
            activity_id: text("activityId"),
            activity_name: text("activityName"),
            remark: text("remark"),
            url: text("url"),
            create_time: data.get("createTime").and_then(parse_time),
            finish_time: data.get("finishTime").and_then(parse_time),
        })
    }
}

fn classify(instance: bool, change_type: &str, result: &str) -> ApprovalEventKind {
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let kind = match (instance, change_type) {
        (true, t) if is(t, "start") => Some(ApprovalEventKind::InstanceStarted),
        (true, t) if is(t, "terminate") => Some(ApprovalEventKind::InstanceTerminated),
        (true, t) if is(t, "finish") => match result {
            r if is(r, "agree") => Some(ApprovalEventKind::InstanceFinished(Decision::Agree)),
            r if is(r, "refuse") => Some(ApprovalEventKind::InstanceFinished(Decision::Refuse)),
            _ => None,
        },
        (false, t) if is(t, "start") => Some(ApprovalEventKind::TaskStarted),
        (false, t) if is(t, "cancel") => Some(ApprovalEventKind::TaskCancelled),
        (false, t) if is(t, "finish") => match result {
            r if is(r, "agree") => Some(ApprovalEventKind::TaskFinished(TaskOutcome::Agree)),
            r if is(r, "refuse") => Some(ApprovalEventKind::TaskFinished(TaskOutcome::Refuse)),
            r if is(r, "redirect") || is(r, "redirected") => {
                Some(ApprovalEventKind::TaskFinished(TaskOutcome::Redirect))
            }
            _ => None,
        },
        _ => None,
    };
    kind.unwrap_or_else(|| ApprovalEventKind::Other { change_type: change_type.to_owned(), result: result.to_owned() })
}

/// `{success, result}` of the workflow APIs (`success` was a string in the SDK model).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartAnswer {
    #[serde(default)]
    instance_id: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IdPage {
    list: Vec<String>,
    next_token: Option<Value>,
}

fn bad_request(what: &str, detail: &str) -> DeliveryError {
    DeliveryError::BadPayload { destination: format!("DingTalk approval {what}"), detail: detail.to_owned() }
}

/// The OA approval calls of the new API on top of [`OpenApi`].
#[derive(Debug, Clone)]
pub struct WorkflowClient {
    api: OpenApi,
}

impl WorkflowClient {
    pub fn new(api: OpenApi) -> Self {
        Self { api }
    }

    pub fn api(&self) -> &OpenApi {
        &self.api
    }

    /// `POST /v1.0/workflow/processInstances` → the new instance id. Not idempotent on
    /// DingTalk's side: a retry after a lost answer can start a second instance, so callers
    /// reconcile with [`WorkflowClient::list_instance_ids`] before retrying.
    pub async fn start(&self, request: &StartProcessInstance) -> Result<String, DeliveryError> {
        if request.originator_user_id.trim().is_empty() {
            return Err(bad_request(&request.process_code, "originatorUserId is empty"));
        }
        if request.process_code.trim().is_empty() {
            return Err(bad_request("(no process)", "processCode is empty"));
        }
        const API: &str = "POST /v1.0/workflow/processInstances";
        let answer: StartAnswer =
            self.api.call_new(http::Method::POST, "/v1.0/workflow/processInstances", &[], Some(request)).await?;
        if answer.instance_id.is_empty() {
            return Err(DeliveryError::Rejected {
                vendor: VENDOR,
                detail: format!("{API}: DingTalk answered without an instanceId"),
            });
        }
        Ok(answer.instance_id)
    }

    /// `GET /v1.0/workflow/processInstances?processInstanceId=`.
    pub async fn get_instance(&self, instance_id: &str) -> Result<ProcessInstance, DeliveryError> {
        const API: &str = "GET /v1.0/workflow/processInstances";
        let envelope: Envelope<ProcessInstance> = self
            .api
            .call_new::<(), _>(
                http::Method::GET,
                "/v1.0/workflow/processInstances",
                &[("processInstanceId", instance_id)],
                None,
            )
            .await?;
        envelope.into_result(API)?.ok_or_else(|| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("{API}: DingTalk answered without a result for instance {instance_id}"),
        })
    }

    /// `POST /v1.0/workflow/processInstances/execute`: `actioner` agrees to or refuses their task.
    pub async fn execute_task(
        &self,
        instance_id: &str,
        task_id: i64,
        actioner: &str,
        decision: Decision,
        remark: &str,
    ) -> Result<(), DeliveryError> {
        const API: &str = "POST /v1.0/workflow/processInstances/execute";
        let body = serde_json::json!({
            "processInstanceId": instance_id,
            "taskId": task_id,
            "actionerUserId": actioner,
            "result": decision.as_str(),
            "remark": remark,
        });
        let envelope: Envelope<Value> =
            self.api.call_new(http::Method::POST, "/v1.0/workflow/processInstances/execute", &[], Some(&body)).await?;
        expect_true(envelope, API)
    }

    /// `POST /v1.0/workflow/processInstances/terminate` on behalf of `operating_user_id` (or as
    /// the system when `is_system`).
    pub async fn terminate(
        &self,
        instance_id: &str,
        operating_user_id: &str,
        remark: &str,
        is_system: bool,
    ) -> Result<(), DeliveryError> {
        const API: &str = "POST /v1.0/workflow/processInstances/terminate";
        let body = serde_json::json!({
            "processInstanceId": instance_id,
            "isSystem": is_system,
            "operatingUserId": operating_user_id,
            "remark": remark,
        });
        let envelope: Envelope<Value> = self
            .api
            .call_new(http::Method::POST, "/v1.0/workflow/processInstances/terminate", &[], Some(&body))
            .await?;
        expect_true(envelope, API)
    }

    /// One page of instance ids of `process_code` started in `[start_ms, end_ms]`;
    /// `next_token` 0 for the first page, `max_results` clamped to 1..=20.
    pub async fn list_instance_ids(
        &self,
        process_code: &str,
        start_ms: i64,
        end_ms: i64,
        next_token: i64,
        max_results: u32,
    ) -> Result<InstanceIdPage, DeliveryError> {
        self.list_instance_ids_with(&ListInstanceIds::new(process_code, start_ms, end_ms).page(next_token, max_results))
            .await
    }

    /// `POST /v1.0/workflow/processes/instanceIds/query` with filters.
    pub async fn list_instance_ids_with(&self, query: &ListInstanceIds) -> Result<InstanceIdPage, DeliveryError> {
        const API: &str = "POST /v1.0/workflow/processes/instanceIds/query";
        let mut query = query.clone();
        query.max_results = query.max_results.clamp(1, MAX_PAGE);
        let envelope: Envelope<IdPage> = self
            .api
            .call_new(http::Method::POST, "/v1.0/workflow/processes/instanceIds/query", &[], Some(&query))
            .await?;
        let page = envelope.into_result(API)?.unwrap_or_default();
        let next_token = match page.next_token {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(text)) => text.trim().parse().ok(),
            _ => None,
        };
        // An empty page with a token would loop forever; the list is done.
        let next_token = next_token.filter(|_| !page.list.is_empty());
        Ok(InstanceIdPage { ids: page.list, next_token })
    }
}

fn expect_true(envelope: Envelope<Value>, api: &str) -> Result<(), DeliveryError> {
    match envelope.into_result(api)? {
        Some(Value::Bool(false)) => {
            Err(DeliveryError::Rejected { vendor: VENDOR, detail: format!("{api}: DingTalk answered result=false") })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    fn captured_body(path: &str, method: &str) -> Value {
        crate::dingtalk::test_support::sdk_request_body(method, path)
    }

    fn ts(ms: i64) -> Option<Timestamp> {
        Some(Timestamp::from_millisecond(ms).unwrap())
    }

    const INSTANCE: &str = "a1B2c3D4e5F6g7H8i9J0kLmN01761700000";
    const PROCESS: &str = "PROC-1A2B3C4D-0000-4000-8000-000000000001";

    #[test]
    fn start_request_matches_the_sdk_capture() {
        let request = StartProcessInstance::new("manager4711", PROCESS)
            .with_dept(1)
            .with_approvers(ActionType::None, &["boss0001"])
            .with_cc(&["finance0001"], CcPosition::Finish)
            .with_value(FormValue::text("PO Number", "PO-2024-0042"))
            .with_value(FormValue::number("Amount (HKD)", 12800))
            .with_value(FormValue::table("Items", [[("Item", "Laptop"), ("Qty", "2")]]));
        let wire = serde_json::to_value(&request).unwrap();
        let expected = captured_body("/v1.0/workflow/processInstances", "POST");
        // The table value is JSON text: compare it as JSON (the SDK wrote `", "` separators).
        let table = |v: &Value| -> Value {
            serde_json::from_str(v["formComponentValues"][2]["value"].as_str().unwrap()).unwrap()
        };
        assert_eq!(table(&wire), table(&expected));
        let mut wire_rest = wire.clone();
        let mut expected_rest = expected.clone();
        wire_rest["formComponentValues"][2]["value"] = Value::Null;
        expected_rest["formComponentValues"][2]["value"] = Value::Null;
        assert_eq!(wire_rest, expected_rest);
    }

    #[test]
    fn form_value_helpers_format_values() {
        let money = model::Money::parse("amount", "12800.5", "HKD").unwrap();
        assert_eq!(FormValue::money("Amount", &money).value, "12800.50");
        let date = jiff::civil::date(2026, 1, 9);
        assert_eq!(FormValue::date("Needed by", date).value, "2026-01-09");
        assert_eq!(FormValue::number("Qty", 2.5).value, "2.5");
        let table = FormValue::table("Items", vec![vec![("Item", "A \"quoted\"")]]);
        assert_eq!(table.component_type.as_deref(), Some("TableField"));
        let parsed: Value = serde_json::from_str(&table.value).unwrap();
        assert_eq!(parsed, json!([[{"name": "Item", "value": "A \"quoted\""}]]));
        assert_eq!(
            serde_json::to_value(FormValue::text("a", "b").with_id("TextField-1")).unwrap()["id"],
            "TextField-1"
        );
    }

    #[test]
    fn list_request_matches_the_sdk_capture() {
        let request = ListInstanceIds::new(PROCESS, 1_767_139_200_000, 1_767_225_600_000)
            .page(0, 50)
            .with_statuses(vec![InstanceStatus::Completed]);
        assert_eq!(request.max_results, 20, "clamped");
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            captured_body("/v1.0/workflow/processes/instanceIds/query", "POST")
        );
    }

    #[test]
    fn get_answer_reads_the_documented_example() {
        let examples = fixture("openapi/response_examples.json");
        let body = &examples["new_api_api_dingtalk_com"]["workflow_get_ok"]["body"];
        let instance: ProcessInstance = serde_json::from_value(body["result"].clone()).unwrap();
        assert_eq!(instance.status, InstanceStatus::Completed);
        assert_eq!(instance.result, ApprovalResult::Agree);
        assert_eq!(instance.create_time, Some("2026-01-01T06:26:00Z".parse().unwrap()));
        assert_eq!(instance.originator_dept_id, "20001");
        assert_eq!(instance.form_value("Amount (HKD)"), Some("12800"));
        assert_eq!(instance.tasks.len(), 1);
        let task = &instance.tasks[0];
        assert_eq!(task.task_id, 88_382_752_389);
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(task.result, ApprovalResult::Agree);
        assert_eq!(instance.operation_records[0].kind, "START_PROCESS_INSTANCE");
        assert_eq!(instance.operation_records[0].result, ApprovalResult::None);
        assert_eq!(instance.operation_records[1].remark, "OK within budget");
        assert_eq!(instance.running_tasks().count(), 0);
    }

    #[test]
    fn statuses_are_case_insensitive_and_unknown_values_are_kept() {
        let instance: ProcessInstance = serde_json::from_value(json!({
            "status": "running", "result": "",
            "tasks": [{"taskId": 1, "status": "Running", "result": "redirected"},
                      {"taskId": 2, "status": "WAITING", "result": "MAYBE"}],
            "createTime": 1767220000000i64, "finishTime": null, "approverUserIds": null
        }))
        .unwrap();
        assert_eq!(instance.status, InstanceStatus::Running);
        assert_eq!(instance.result, ApprovalResult::None);
        assert_eq!(instance.tasks[0].status, TaskStatus::Running);
        assert_eq!(instance.tasks[0].result, ApprovalResult::Redirected);
        assert_eq!(instance.tasks[1].status, TaskStatus::Other("WAITING".into()));
        assert_eq!(instance.tasks[1].result.as_str(), "MAYBE");
        assert_eq!(instance.create_time, ts(1_767_220_000_000));
        assert_eq!(instance.finish_time, None);
        assert!(instance.approver_user_ids.is_empty());
        assert_eq!(instance.running_tasks().count(), 1);
        assert_eq!(serde_json::to_value(InstanceStatus::parse("cancelled")).unwrap(), "CANCELED");
    }

    #[test]
    fn times_in_every_form() {
        assert_eq!(parse_time(&json!(1767220000000i64)), ts(1_767_220_000_000));
        assert_eq!(parse_time(&json!("1767220000000")), ts(1_767_220_000_000));
        assert_eq!(parse_time(&json!("2026-01-01T06:26Z")), ts(1_767_248_760_000));
        assert_eq!(parse_time(&json!("2026-01-01T06:26:30.5Z")), ts(1_767_248_790_500));
        assert_eq!(parse_time(&json!("")), None);
        assert_eq!(parse_time(&json!("yesterday")), None);
    }

    fn http(name: &str) -> ApprovalEvent {
        ApprovalEvent::from_http(&fixture(&format!("events/{name}.json"))).unwrap()
    }

    #[test]
    fn http_instance_events() {
        let start = http("http_bpms_instance_change_start");
        assert_eq!(start.kind, ApprovalEventKind::InstanceStarted);
        assert_eq!(start.event_type, INSTANCE_CHANGE);
        assert_eq!(start.instance_id, INSTANCE);
        assert_eq!(start.process_code, PROCESS);
        assert_eq!(start.business_id, "202601011200000012345");
        assert_eq!(start.title, "Chan Tai Man submitted Purchase Request");
        assert_eq!(start.staff_id, "manager4711");
        assert_eq!(start.corp_id.as_deref(), Some("dingcorp0123456789abcdef"));
        assert_eq!(start.create_time, ts(1_767_220_000_000));
        assert_eq!(start.finish_time, None);
        assert!(start.url.as_deref().unwrap().starts_with("https://aflow.dingtalk.com/"));
        assert_eq!(start.task_id, None);
        assert_eq!(start.event_id, None);

        let agree = http("http_bpms_instance_change_finish_agree");
        assert_eq!(agree.kind, ApprovalEventKind::InstanceFinished(Decision::Agree));
        assert_eq!(agree.finish_time, ts(1_767_223_000_000));
        let refuse = http("http_bpms_instance_change_finish_refuse");
        assert_eq!(refuse.kind, ApprovalEventKind::InstanceFinished(Decision::Refuse));
        let terminate = http("http_bpms_instance_change_terminate");
        assert_eq!(terminate.kind, ApprovalEventKind::InstanceTerminated);
        assert_eq!(terminate.finish_time, ts(1_767_223_100_000));
    }

    #[test]
    fn http_task_events() {
        let start = http("http_bpms_task_change_start");
        assert_eq!(start.kind, ApprovalEventKind::TaskStarted);
        assert_eq!(start.event_type, TASK_CHANGE);
        assert_eq!(start.staff_id, "boss0001");
        assert_eq!(start.task_id, Some(88_382_752_389));
        assert_eq!(start.activity_id.as_deref(), Some("1918_5cd3"));
        assert_eq!(start.activity_name.as_deref(), Some("Approver"));
        assert_eq!(start.remark, None);
        let agree = http("http_bpms_task_change_finish_agree");
        assert_eq!(agree.kind, ApprovalEventKind::TaskFinished(TaskOutcome::Agree));
        assert_eq!(agree.remark.as_deref(), Some("OK within budget"));
        assert_eq!(agree.finish_time, ts(1_767_223_000_000));
        let redirect = http("http_bpms_task_change_redirect");
        assert_eq!(redirect.kind, ApprovalEventKind::TaskFinished(TaskOutcome::Redirect));
    }

    #[test]
    fn stream_events_from_data_fixtures() {
        for (name, event_type) in [
            ("stream_data_bpms_instance_change_finish", INSTANCE_CHANGE),
            ("stream_data_bpms_task_change_finish", TASK_CHANGE),
        ] {
            let data = fixture(&format!("events/{name}.json"));
            let headers = &data["_headers_for_this_event"];
            let event = ApprovalEvent::from_stream(headers, &data).unwrap();
            assert_eq!(event.event_type, event_type);
            assert_eq!(event.instance_id, INSTANCE);
            assert_eq!(event.corp_id.as_deref(), Some("dingcorp0123456789abcdef"), "from eventCorpId");
            assert_eq!(event.event_id.as_deref(), headers["eventId"].as_str());
            assert_eq!(event.finish_time, ts(1_767_223_000_000));
        }
        let data = fixture("events/stream_data_bpms_task_change_finish.json");
        let task = ApprovalEvent::from_stream(&data["_headers_for_this_event"], &data).unwrap();
        assert_eq!(task.kind, ApprovalEventKind::TaskFinished(TaskOutcome::Agree));
        assert_eq!(task.task_id, Some(88_382_752_389));
        assert_eq!(task.staff_id, "boss0001");
    }

    #[test]
    fn stream_event_from_the_captured_frame() {
        let frame = fixture("stream/02_event_bpms_instance_change.json");
        let server = &frame["server_frame"];
        let data: Value = serde_json::from_str(server["data"].as_str().unwrap()).unwrap();
        let event = ApprovalEvent::from_stream(&server["headers"], &data).unwrap();
        assert_eq!(event.kind, ApprovalEventKind::InstanceFinished(Decision::Agree));
        assert_eq!(event.staff_id, "manager4711");
        assert_eq!(event.event_id.as_deref(), Some("5b9e0f3a8c2d4e6f8a0b1c2d3e4f5a6b"));
        assert_eq!(event.business_id, "202601011200000012345");
        assert_eq!(event.process_code, PROCESS);
    }

    #[test]
    fn unknown_and_foreign_events() {
        let cancel =
            ApprovalEvent::from_parts(TASK_CHANGE, &json!({"processInstanceId": "i", "type": "CANCEL"}), None, None)
                .unwrap();
        assert_eq!(cancel.kind, ApprovalEventKind::TaskCancelled);
        let odd = ApprovalEvent::from_parts(
            INSTANCE_CHANGE,
            &json!({"processInstanceId": "i", "type": "finish", "result": "maybe"}),
            None,
            None,
        )
        .unwrap();
        assert_eq!(odd.kind, ApprovalEventKind::Other { change_type: "finish".into(), result: "maybe".into() });
        let user = fixture("events/http_user_add_org.json");
        assert!(matches!(ApprovalEvent::from_http(&user), Err(ApprovalEventError::NotApproval(_))));
        assert!(matches!(
            ApprovalEvent::from_parts(TASK_CHANGE, &json!({"type": "start"}), None, None),
            Err(ApprovalEventError::Missing("processInstanceId"))
        ));
        assert!(matches!(ApprovalEvent::from_http(&json!({})), Err(ApprovalEventError::Missing("EventType"))));
    }
}
