//! Simulated work notifications (reference §3.1) and enterprise robot messages (§3.2, §10 items
//! 5–6), backed by [`Org`].
//!
//! Work notifications (old API, errcode bodies):
//! - `asyncsend_v2` answers a `task_id` at once; recipients are expanded (departments include
//!   their sub-departments) and handled immediately, so progress is always 100 % / finished.
//! - Per app, per user, per day (UTC+8, DingTalk's day): identical content is accepted only
//!   once and at most [`DAILY_LIMIT_PER_USER`] messages arrive; the rest is dropped silently
//!   (still errcode 0) and shows in `getsendresult` as `forbidden_user_id_list` plus
//!   `forbidden_list` codes 143106 / 143105 (codes UNVERIFIED).
//! - Unknown userids / departments go to `invalid_user_id_list` / `invalid_dept_id_list`;
//!   inactive members to `failed_user_id_list`. Delivered recipients are `unread`.
//!
//! Robot messages (new API, HTTP 400 `{code, message, requestid}` errors):
//! - `oToMessages/batchSend`: at most 20 `userIds`; `msgParam` must be a JSON string whose object
//!   has the fields `msgKey` needs. Unknown users → `invalidStaffIdList`, inactive ones →
//!   `filteredStaffIdList`, users set with [`MessagesSim::set_flow_controlled`] →
//!   `flowControlledStaffIdList` (none of those receive anything).
//! - `groupMessages/send`: the conversation must exist.
//! - `robotCode` must be the calling app's robot.
//!
//! Error codes and texts for malformed requests are UNVERIFIED (DingTalk does not publish them
//! for these APIs): old-API parameter errors use 40035, a foreign `agent_id` 40056; new-API
//! parameter errors use `param.*` codes.

use super::super::messages::{
    ForbiddenEntry, SendResult, WorkMessage, ASYNCSEND_PATH, BATCH_SEND_PATH, FORBIDDEN_DUPLICATE, FORBIDDEN_QUOTA,
    GROUP_SEND_PATH, MAX_ROBOT_BATCH, MAX_WORK_NOTIFICATION_DEPTS, MAX_WORK_NOTIFICATION_USERIDS, PROGRESS_PATH,
    RESULT_PATH,
};
use super::org::{Org, SimApp, SimUser};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use connect::Clock;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sim::SimError;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Messages one user receives from one app per day before the rest is dropped (internal app).
pub const DAILY_LIMIT_PER_USER: u32 = 500;
/// Inbox entries kept per user; older ones are evicted.
pub const INBOX_CAPACITY: usize = 1000;
/// Messages kept per group conversation.
pub const GROUP_CAPACITY: usize = 1000;
/// Work-notification tasks kept for `getsendprogress` / `getsendresult`.
pub const TASKS_KEPT: usize = 10_000;

/// The first `task_id` handed out (the shape of the documented example).
const FIRST_TASK_ID: i64 = 256_271_667_526;
const DAY_MS: i64 = 86_400_000;
/// DingTalk counts days in China Standard Time (also Hong Kong time), UTC+8.
const UTC8_OFFSET_MS: i64 = 8 * 3_600_000;

/// Required `msgParam` fields per `msgKey` (reference §3.2).
const MSG_KEYS: &[(&str, &[&str])] = &[
    ("sampleText", &["content"]),
    ("sampleMarkdown", &["title", "text"]),
    ("sampleImageMsg", &["photoURL"]),
    ("sampleLink", &["text", "title", "picUrl", "messageUrl"]),
    ("sampleActionCard", &["title", "text", "singleTitle", "singleURL"]),
    ("sampleActionCard2", &["title", "text", "actionTitle1", "actionURL1", "actionTitle2", "actionURL2"]),
    (
        "sampleActionCard3",
        &["title", "text", "actionTitle1", "actionURL1", "actionTitle2", "actionURL2", "actionTitle3", "actionURL3"],
    ),
    (
        "sampleActionCard4",
        &[
            "title",
            "text",
            "actionTitle1",
            "actionURL1",
            "actionTitle2",
            "actionURL2",
            "actionTitle3",
            "actionURL3",
            "actionTitle4",
            "actionURL4",
        ],
    ),
    (
        "sampleActionCard5",
        &[
            "title",
            "text",
            "actionTitle1",
            "actionURL1",
            "actionTitle2",
            "actionURL2",
            "actionTitle3",
            "actionURL3",
            "actionTitle4",
            "actionURL4",
            "actionTitle5",
            "actionURL5",
        ],
    ),
    ("sampleActionCard6", &["title", "text", "buttonTitle1", "buttonUrl1", "buttonTitle2", "buttonUrl2"]),
    ("sampleAudio", &["mediaId", "duration"]),
    ("sampleFile", &["mediaId", "fileName", "fileType"]),
    ("sampleVideo", &["duration", "videoMediaId", "videoType", "picMediaId"]),
];

/// Where an inbox entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InboxSource {
    WorkNotification { agent_id: i64, task_id: i64, msgtype: String },
    Robot { robot_code: String, process_query_key: String, msg_key: String },
}

/// One message a user received: a work notification or a robot 1:1 message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxItem {
    /// Order across all inboxes and groups, from 0.
    pub seq: u64,
    pub time_ms: i64,
    pub app_key: String,
    pub source: InboxSource,
    /// The work notification's `msg`, or the robot message's decoded `msgParam`.
    pub content: Value,
}

/// Where a `sessionWebhook` reply goes: the conversation the received message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTarget<'a> {
    /// The user's 1:1 chat with the robot.
    User(&'a str),
    /// A group, by openConversationId.
    Group(&'a str),
}

/// One robot message posted to a group conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupMessage {
    pub seq: u64,
    pub time_ms: i64,
    pub app_key: String,
    pub robot_code: String,
    pub process_query_key: String,
    pub msg_key: String,
    /// Decoded `msgParam`.
    pub msg_param: Value,
}

#[derive(Debug)]
struct Task {
    app_key: String,
    agent_id: i64,
    result: SendResult,
}

#[derive(Debug, Default)]
struct UserDay {
    received: u32,
    /// SHA-256 of each distinct content received today.
    contents: HashSet<[u8; 32]>,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    next_task_id: i64,
    tasks: BTreeMap<i64, Task>,
    /// The day (UTC+8) `daily` counts.
    day: i64,
    /// (app_key, userid) → today's deliveries.
    daily: HashMap<(String, String), UserDay>,
    inboxes: BTreeMap<String, VecDeque<InboxItem>>,
    groups: BTreeMap<String, VecDeque<GroupMessage>>,
    flow_controlled: BTreeSet<String>,
}

impl Inner {
    fn fresh() -> Self {
        Self { next_task_id: FIRST_TASK_ID, ..Self::default() }
    }

    fn seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn deliver(&mut self, userid: &str, mut item: InboxItem) {
        item.seq = self.seq();
        let inbox = self.inboxes.entry(userid.to_owned()).or_default();
        if inbox.len() >= INBOX_CAPACITY {
            inbox.pop_front();
        }
        inbox.push_back(item);
    }
}

/// Work notifications and robot messages of the simulated DingTalk.
pub struct MessagesSim {
    org: Arc<Org>,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MessagesSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagesSim").finish_non_exhaustive()
    }
}

fn old_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().chars().take(13).collect()
}

fn old_ok(mut body: Map<String, Value>) -> Response {
    body.insert("errcode".to_owned(), json!(0));
    body.insert("errmsg".to_owned(), json!("ok"));
    body.insert("request_id".to_owned(), json!(old_request_id()));
    Json(Value::Object(body)).into_response()
}

/// An old-API failure, answered as HTTP 200 with an errcode body.
#[derive(Debug)]
struct OldError {
    errcode: i64,
    errmsg: String,
}

impl IntoResponse for OldError {
    fn into_response(self) -> Response {
        Json(json!({ "errcode": self.errcode, "errmsg": self.errmsg, "request_id": old_request_id() })).into_response()
    }
}

fn old_error(errcode: i64, errmsg: &str) -> OldError {
    OldError { errcode, errmsg: errmsg.to_owned() }
}

fn old_param_error(errmsg: &str) -> OldError {
    old_error(40035, errmsg)
}

fn old_answer(answer: Result<Map<String, Value>, OldError>) -> Response {
    answer.map_or_else(IntoResponse::into_response, old_ok)
}

fn new_answer(answer: Result<Value, ParamError>) -> Response {
    answer.map_or_else(IntoResponse::into_response, |body| Json(body).into_response())
}

/// A new-API parameter failure, answered as HTTP 400 with `{code, message, requestid}`.
#[derive(Debug)]
struct ParamError {
    code: &'static str,
    message: String,
}

impl IntoResponse for ParamError {
    fn into_response(self) -> Response {
        let requestid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
        let body = json!({ "code": self.code, "message": self.message, "requestid": requestid });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

fn new_param_error(code: &'static str, message: &str) -> ParamError {
    ParamError { code, message: message.to_owned() }
}

/// A request body that is not a JSON object; the caller answers it as its parameter error.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("the body is not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
}

/// Reads a JSON object body; anything else is the caller's parameter error.
fn object_body(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BodyError::NotAnObject),
        Err(err) => Err(BodyError::NotJson(err)),
    }
}

/// A number, or a string holding one (DingTalk accepts both for ids).
fn int_field(body: &Map<String, Value>, name: &str) -> Option<i64> {
    match body.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn str_field<'a>(body: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Keeps the first occurrence of each item, in order.
fn dedup(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    items.into_iter().filter(|item| seen.insert(item.clone())).collect()
}

/// `msgParam`: a JSON string holding an object with the fields `msg_key` needs.
fn check_msg_param(msg_key: &str, msg_param: Option<&Value>) -> Result<Value, ParamError> {
    let Some((_, required)) = MSG_KEYS.iter().find(|(key, _)| *key == msg_key) else {
        let known: Vec<&str> = MSG_KEYS.iter().map(|(k, _)| *k).collect();
        return Err(new_param_error(
            "param.msgKeyInvalid",
            &format!("msgKey `{msg_key}` is not a known template; known: {}", known.join(", ")),
        ));
    };
    let text = match msg_param {
        Some(Value::String(text)) => text,
        Some(_) => {
            return Err(new_param_error(
                "param.msgParamInvalid",
                "msgParam must be a JSON string (an object serialised to text), not a JSON value",
            ))
        }
        None => return Err(new_param_error("param.msgParamEmpty", "msgParam is required")),
    };
    let Ok(Value::Object(params)) = serde_json::from_str::<Value>(text) else {
        return Err(new_param_error("param.msgParamInvalid", "msgParam does not hold a JSON object"));
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|field| !params.get(*field).is_some_and(|v| v.is_string() || v.is_number()))
        .collect();
    if !missing.is_empty() {
        return Err(new_param_error(
            "param.msgParamInvalid",
            &format!("msgParam for {msg_key} lacks {}", missing.join(", ")),
        ));
    }
    Ok(Value::Object(params))
}

/// The calling app must own `robotCode`.
fn check_robot_code(app: &SimApp, body: &Map<String, Value>) -> Result<String, ParamError> {
    match str_field(body, "robotCode") {
        None => Err(new_param_error("param.robotCodeEmpty", "robotCode is required")),
        Some(code) if code != app.robot_code => Err(new_param_error(
            "param.robotCodeInvalid",
            &format!("robotCode {code} is not the robot of app {}", app.app_key),
        )),
        Some(code) => Ok(code.to_owned()),
    }
}

fn process_query_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

impl MessagesSim {
    pub fn new(org: Arc<Org>, clock: Arc<dyn Clock>) -> Self {
        Self { org, clock, inner: Mutex::new(Inner::fresh()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a whole insert/push, so a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No tasks, inboxes, group messages, daily counts or flow control.
    pub fn reset(&self) {
        *self.lock() = Inner::fresh();
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(ASYNCSEND_PATH, post(asyncsend_handler))
            .route(PROGRESS_PATH, post(progress_handler))
            .route(RESULT_PATH, post(result_handler))
            .route(BATCH_SEND_PATH, post(batch_send_handler))
            .route(GROUP_SEND_PATH, post(group_send_handler))
            .with_state(self)
    }

    /// Robot 1:1 sends to these users come back in `flowControlledStaffIdList` (replaces the
    /// previous set; empty clears it).
    pub fn set_flow_controlled<I, S>(&self, userids: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.lock().flow_controlled = userids.into_iter().map(Into::into).collect();
    }

    /// What `userid` received, oldest first.
    pub fn user_inbox(&self, userid: &str) -> Vec<InboxItem> {
        self.lock().inboxes.get(userid).map(|i| i.iter().cloned().collect()).unwrap_or_default()
    }

    /// Robot messages posted to a group, oldest first.
    pub fn group_messages(&self, open_conversation_id: &str) -> Vec<GroupMessage> {
        self.lock().groups.get(open_conversation_id).map(|g| g.iter().cloned().collect()).unwrap_or_default()
    }

    /// The `getsendresult` of a task, if it is still kept.
    pub fn task_result(&self, task_id: i64) -> Option<SendResult> {
        self.lock().tasks.get(&task_id).map(|t| t.result.clone())
    }

    /// For `POST /_sim/records/flow_controlled`: `{"userids": [...]}` replaces the set.
    pub fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        if entity != "flow_controlled" {
            return Err(SimError::UnknownEntity {
                simulator: "dingtalk",
                entity: entity.to_owned(),
                known: "flow_controlled".to_owned(),
            });
        }
        let invalid = |detail: &str| SimError::InvalidRecord { entity: entity.to_owned(), detail: detail.to_owned() };
        let list =
            value.get("userids").and_then(Value::as_array).ok_or_else(|| invalid("expected {\"userids\": [..]}"))?;
        let userids: Vec<String> = list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid("userids must be strings"))?;
        self.set_flow_controlled(userids.clone());
        Ok(json!({ "userids": userids }))
    }

    /// The UTC+8 day of `now_ms`; a new day clears the per-user counts.
    fn roll_day(&self, inner: &mut Inner) -> i64 {
        let now = self.clock.now_millis();
        let day = (now + UTC8_OFFSET_MS).div_euclid(DAY_MS);
        if inner.day != day {
            inner.day = day;
            inner.daily.clear();
        }
        now
    }

    /// Members of `dept_id` and of every department below it.
    fn department_members(&self, dept_id: i64) -> Vec<SimUser> {
        let departments = self.org.departments();
        let mut wanted = BTreeSet::from([dept_id]);
        let mut queue = VecDeque::from([dept_id]);
        while let Some(id) = queue.pop_front() {
            for child in departments.iter().filter(|d| d.parent_id == Some(id)) {
                if wanted.insert(child.dept_id) {
                    queue.push_back(child.dept_id);
                }
            }
        }
        self.org.users().into_iter().filter(|u| u.dept_ids.iter().any(|d| wanted.contains(d))).collect()
    }

    fn asyncsend(&self, app: &SimApp, body: &[u8]) -> Result<Map<String, Value>, OldError> {
        let body = object_body(body).map_err(|detail| old_param_error(&format!("不合法的参数: {detail}")))?;
        let Some(agent_id) = int_field(&body, "agent_id") else {
            return Err(old_param_error("缺少参数 agent_id"));
        };
        if agent_id != app.agent_id {
            return Err(old_error(40056, &format!("不合法的agentid: {agent_id} is not the agent of this app")));
        }
        let Some(msg_value) = body.get("msg") else {
            return Err(old_param_error("缺少参数 msg"));
        };
        let msg: WorkMessage = match serde_json::from_value(msg_value.clone()) {
            Ok(msg) => msg,
            Err(err) => return Err(old_param_error(&format!("不合法的参数 msg: {err}"))),
        };
        let userids = dedup(
            str_field(&body, "userid_list")
                .unwrap_or("")
                .split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty()),
        );
        if userids.len() > MAX_WORK_NOTIFICATION_USERIDS {
            return Err(old_param_error(&format!("userid_list has more than {MAX_WORK_NOTIFICATION_USERIDS} userids")));
        }
        let mut dept_ids = Vec::new();
        for part in str_field(&body, "dept_id_list").unwrap_or("").split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<i64>() {
                Ok(id) if !dept_ids.contains(&id) => dept_ids.push(id),
                Ok(_) => {}
                Err(_) => return Err(old_param_error(&format!("dept_id_list: `{part}` is not a department id"))),
            }
        }
        if dept_ids.len() > MAX_WORK_NOTIFICATION_DEPTS {
            return Err(old_param_error(&format!(
                "dept_id_list has more than {MAX_WORK_NOTIFICATION_DEPTS} departments"
            )));
        }
        let to_all_user = body.get("to_all_user").and_then(Value::as_bool).unwrap_or(false);
        if userids.is_empty() && dept_ids.is_empty() && !to_all_user {
            return Err(old_param_error("缺少参数 userid_list, dept_id_list or to_all_user"));
        }

        let mut result = SendResult::default();
        let mut candidates: Vec<SimUser> = Vec::new();
        for userid in &userids {
            match self.org.user(userid) {
                Some(user) => candidates.push(user),
                None => result.invalid_user_id_list.push(userid.clone()),
            }
        }
        for dept_id in &dept_ids {
            if self.org.department(*dept_id).is_none() {
                result.invalid_dept_id_list.push(*dept_id);
                continue;
            }
            candidates.extend(self.department_members(*dept_id));
        }
        if to_all_user {
            candidates.extend(self.org.users());
        }
        let mut seen = HashSet::new();
        let recipients: Vec<SimUser> = candidates.into_iter().filter(|u| seen.insert(u.userid.clone())).collect();

        // Typed and re-serialised, so key order and unknown fields do not make content "new".
        let content = serde_json::to_value(&msg).unwrap_or(Value::Null);
        let digest: [u8; 32] = Sha256::digest(content.to_string().as_bytes()).into();
        let mut inner = self.lock();
        let now = self.roll_day(&mut inner);
        let task_id = inner.next_task_id;
        inner.next_task_id += 1;
        for user in recipients {
            if !user.active {
                result.failed_user_id_list.push(user.userid);
                continue;
            }
            let day = inner.daily.entry((app.app_key.clone(), user.userid.clone())).or_default();
            let dropped = if day.contents.contains(&digest) {
                Some(FORBIDDEN_DUPLICATE)
            } else if day.received >= DAILY_LIMIT_PER_USER {
                Some(FORBIDDEN_QUOTA)
            } else {
                day.received += 1;
                day.contents.insert(digest);
                None
            };
            if let Some(code) = dropped {
                result.forbidden_list.push(ForbiddenEntry {
                    code: code.to_owned(),
                    count: 1,
                    userid: user.userid.clone(),
                });
                result.forbidden_user_id_list.push(user.userid);
                continue;
            }
            let item = InboxItem {
                seq: 0,
                time_ms: now,
                app_key: app.app_key.clone(),
                source: InboxSource::WorkNotification { agent_id, task_id, msgtype: msg.msgtype().to_owned() },
                content: content.clone(),
            };
            inner.deliver(&user.userid, item);
            result.unread_user_id_list.push(user.userid);
        }
        if inner.tasks.len() >= TASKS_KEPT {
            inner.tasks.pop_first();
        }
        inner.tasks.insert(task_id, Task { app_key: app.app_key.clone(), agent_id, result });
        Ok(Map::from_iter([("task_id".to_owned(), json!(task_id))]))
    }

    /// The task named by `{agent_id, task_id}`, if this app sent it.
    fn with_task<T>(&self, app: &SimApp, body: &[u8], read: impl FnOnce(&Task) -> T) -> Result<T, OldError> {
        let body = object_body(body).map_err(|detail| old_param_error(&format!("不合法的参数: {detail}")))?;
        let agent_id = int_field(&body, "agent_id").ok_or_else(|| old_param_error("缺少参数 agent_id"))?;
        let task_id = int_field(&body, "task_id").ok_or_else(|| old_param_error("缺少参数 task_id"))?;
        let inner = self.lock();
        match inner.tasks.get(&task_id) {
            Some(task) if task.app_key == app.app_key && task.agent_id == agent_id => Ok(read(task)),
            _ => Err(old_param_error(&format!("不合法的参数: task_id {task_id} is not a task of agent {agent_id}"))),
        }
    }

    fn batch_send(&self, app: &SimApp, body: &[u8]) -> Result<Value, ParamError> {
        let body = object_body(body).map_err(|detail| new_param_error("param.invalid", &detail.to_string()))?;
        let robot_code = check_robot_code(app, &body)?;
        let Some(user_ids) = body.get("userIds").and_then(Value::as_array) else {
            return Err(new_param_error("param.userIdsEmpty", "userIds is required"));
        };
        let Some(user_ids) = user_ids.iter().map(|v| v.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>() else {
            return Err(new_param_error("param.userIdsInvalid", "userIds must be strings"));
        };
        if user_ids.is_empty() {
            return Err(new_param_error("param.userIdsEmpty", "userIds is empty"));
        }
        if user_ids.len() > MAX_ROBOT_BATCH {
            return Err(new_param_error(
                "param.userIdsExceedLimit",
                &format!("userIds has {} entries; at most {MAX_ROBOT_BATCH} per call", user_ids.len()),
            ));
        }
        let msg_key = str_field(&body, "msgKey").unwrap_or("").to_owned();
        let params = check_msg_param(&msg_key, body.get("msgParam"))?;
        let key = process_query_key();
        let (mut invalid, mut filtered, mut flow_controlled) = (Vec::new(), Vec::new(), Vec::new());
        let mut inner = self.lock();
        let now = self.clock.now_millis();
        for userid in dedup(user_ids) {
            match self.org.user(&userid) {
                None => invalid.push(userid),
                Some(user) if !user.active => filtered.push(userid),
                Some(_) if inner.flow_controlled.contains(&userid) => flow_controlled.push(userid),
                Some(_) => {
                    let item = InboxItem {
                        seq: 0,
                        time_ms: now,
                        app_key: app.app_key.clone(),
                        source: InboxSource::Robot {
                            robot_code: robot_code.clone(),
                            process_query_key: key.clone(),
                            msg_key: msg_key.clone(),
                        },
                        content: params.clone(),
                    };
                    inner.deliver(&userid, item);
                }
            }
        }
        Ok(json!({
            "processQueryKey": key,
            "invalidStaffIdList": invalid,
            "flowControlledStaffIdList": flow_controlled,
            "filteredStaffIdList": filtered,
        }))
    }

    /// A reply posted to a received message's `sessionWebhook` (reference §3.3): it lands in the
    /// user's 1:1 robot chat, or in the group (`conversation`) the message came from. `msgtype`
    /// and `content` are the webhook body's type and its object of that name.
    pub fn session_reply(&self, app_key: &str, robot_code: &str, to: SessionTarget<'_>, msgtype: &str, content: Value) {
        let mut inner = self.lock();
        let now = self.clock.now_millis();
        match to {
            SessionTarget::User(userid) => {
                let item = InboxItem {
                    seq: 0,
                    time_ms: now,
                    app_key: app_key.to_owned(),
                    // A session reply has no processQueryKey: it cannot be recalled or queried.
                    source: InboxSource::Robot {
                        robot_code: robot_code.to_owned(),
                        process_query_key: String::new(),
                        msg_key: msgtype.to_owned(),
                    },
                    content,
                };
                inner.deliver(userid, item);
            }
            SessionTarget::Group(conversation) => {
                let message = GroupMessage {
                    seq: inner.seq(),
                    time_ms: now,
                    app_key: app_key.to_owned(),
                    robot_code: robot_code.to_owned(),
                    process_query_key: String::new(),
                    msg_key: msgtype.to_owned(),
                    msg_param: content,
                };
                let group = inner.groups.entry(conversation.to_owned()).or_default();
                if group.len() >= GROUP_CAPACITY {
                    group.pop_front();
                }
                group.push_back(message);
            }
        }
    }

    fn group_send(&self, app: &SimApp, body: &[u8]) -> Result<Value, ParamError> {
        let body = object_body(body).map_err(|detail| new_param_error("param.invalid", &detail.to_string()))?;
        let robot_code = check_robot_code(app, &body)?;
        let Some(conversation) = str_field(&body, "openConversationId") else {
            return Err(new_param_error("param.openConversationIdEmpty", "openConversationId is required"));
        };
        if self.org.group(conversation).is_none() {
            return Err(new_param_error(
                "param.openConversationIdInvalid",
                &format!("openConversationId {conversation} is not a group of this organisation"),
            ));
        }
        let msg_key = str_field(&body, "msgKey").unwrap_or("").to_owned();
        let params = check_msg_param(&msg_key, body.get("msgParam"))?;
        let key = process_query_key();
        let mut inner = self.lock();
        let message = GroupMessage {
            seq: inner.seq(),
            time_ms: self.clock.now_millis(),
            app_key: app.app_key.clone(),
            robot_code,
            process_query_key: key.clone(),
            msg_key,
            msg_param: params,
        };
        let group = inner.groups.entry(conversation.to_owned()).or_default();
        if group.len() >= GROUP_CAPACITY {
            group.pop_front();
        }
        group.push_back(message);
        Ok(json!({ "processQueryKey": key }))
    }
}

async fn asyncsend_handler(State(sim): State<Arc<MessagesSim>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    match sim.org.authorize_old(query.as_deref(), "message.corpconversation.asyncsend_v2") {
        Ok(app) => old_answer(sim.asyncsend(&app, &body)),
        Err(response) => response,
    }
}

async fn progress_handler(State(sim): State<Arc<MessagesSim>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let app = match sim.org.authorize_old(query.as_deref(), "message.corpconversation.getsendprogress") {
        Ok(app) => app,
        Err(response) => return response,
    };
    // Recipients are handled when the task is created, so every kept task is finished.
    let progress = json!({ "progress_in_percent": 100, "status": 2 });
    old_answer(sim.with_task(&app, &body, |_| Map::from_iter([("progress".to_owned(), progress)])))
}

async fn result_handler(State(sim): State<Arc<MessagesSim>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let app = match sim.org.authorize_old(query.as_deref(), "message.corpconversation.getsendresult") {
        Ok(app) => app,
        Err(response) => return response,
    };
    old_answer(sim.with_task(&app, &body, |task| {
        Map::from_iter([("send_result".to_owned(), serde_json::to_value(&task.result).unwrap_or(Value::Null))])
    }))
}

async fn batch_send_handler(State(sim): State<Arc<MessagesSim>>, headers: HeaderMap, body: Bytes) -> Response {
    match sim.org.authorize_new(&headers, "robot.oToMessages.batchSend") {
        Ok(app) => new_answer(sim.batch_send(&app, &body)),
        Err(response) => response,
    }
}

async fn group_send_handler(State(sim): State<Arc<MessagesSim>>, headers: HeaderMap, body: Bytes) -> Response {
    match sim.org.authorize_new(&headers, "robot.groupMessages.send") {
        Ok(app) => new_answer(sim.group_send(&app, &body)),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::super::directory::harness::Harness;
    use super::*;
    use crate::dingtalk::messages::{AppRobotMessage, Messages, Recipients, WorkMessage, WorkNotification};
    use connect::DeliveryError;

    fn users(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|u| (*u).to_owned()).collect()
    }

    #[tokio::test]
    async fn identical_work_notification_is_dropped_silently_and_shows_in_the_result() {
        let h = Harness::start().await;
        let messages = Messages::new(h.api.clone());
        let note = WorkNotification::new(Recipients::users(["manager4711"]), WorkMessage::markdown("PO", "approved"));
        let first = messages.send_work_notification(&note).await.unwrap();
        let second = messages.send_work_notification(&note).await.unwrap();
        assert_ne!(first, second, "each call is its own task");
        assert_eq!(h.messages.user_inbox("manager4711").len(), 1, "the duplicate must not arrive");

        let result = messages.send_result(second).await.unwrap();
        assert_eq!(result.forbidden_user_id_list, users(&["manager4711"]));
        assert_eq!(result.forbidden_list[0].code, crate::dingtalk::messages::FORBIDDEN_DUPLICATE);
        assert!(result.unread_user_id_list.is_empty());
        assert_eq!(messages.send_result(first).await.unwrap().unread_user_id_list, users(&["manager4711"]));
        assert!(messages.send_progress(second).await.unwrap().finished());

        // Other content the same day arrives; the same content arrives again the next day (UTC+8).
        messages
            .send_work_notification(&WorkNotification::new(Recipients::users(["manager4711"]), WorkMessage::text("x")))
            .await
            .unwrap();
        h.clock.advance_ms(DAY_MS);
        let next_day = messages.send_work_notification(&note).await.unwrap();
        assert!(messages.send_result(next_day).await.unwrap().forbidden_user_id_list.is_empty());
        let inbox = h.messages.user_inbox("manager4711");
        assert_eq!(inbox.len(), 3);
        assert!(inbox.windows(2).all(|w| w[0].seq < w[1].seq), "newest last");
        assert_eq!(inbox[0].content, serde_json::to_value(&note.msg).unwrap());
    }

    #[tokio::test]
    async fn work_notification_targets_expand_and_unknowns_are_reported() {
        let h = Harness::start().await;
        let messages = Messages::new(h.api.clone());
        let to = Recipients { userids: users(&["ghost", "staff0815"]), dept_ids: vec![20003, 777], to_all_user: false };
        let task =
            messages.send_work_notification(&WorkNotification::new(to, WorkMessage::text("hello"))).await.unwrap();
        let result = messages.send_result(task).await.unwrap();
        assert_eq!(result.invalid_user_id_list, users(&["ghost"]));
        assert_eq!(result.invalid_dept_id_list, vec![777]);
        // Sales HK: the manager and a rep; the leaver is inactive.
        assert_eq!(result.failed_user_id_list, users(&["leaver0099"]));
        let mut unread = result.unread_user_id_list.clone();
        unread.sort();
        assert_eq!(unread, users(&["sales0101", "salesmgr0001", "staff0815"]));

        // Root department: everyone active, sub-departments included.
        let task = messages
            .send_work_notification(&WorkNotification::new(Recipients::departments([1]), WorkMessage::text("all")))
            .await
            .unwrap();
        let active = h.org.users().iter().filter(|u| u.active).count();
        assert_eq!(messages.send_result(task).await.unwrap().unread_user_id_list.len(), active);
    }

    #[tokio::test]
    async fn work_notification_errors() {
        let h = Harness::start().await;
        let messages = Messages::new(h.api.clone());
        // A task of another agent is not found.
        let err = h
            .api
            .call_old::<_, Value>(RESULT_PATH, &json!({"agent_id": 1, "task_id": FIRST_TASK_ID}))
            .await
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Rejected { .. }), "{err}");
        let err = h
            .api
            .call_old::<_, Value>(
                ASYNCSEND_PATH,
                &json!({"agent_id": 1, "to_all_user": true, "msg": {"msgtype": "text", "text": {"content": "x"}}}),
            )
            .await
            .unwrap_err();
        assert!(matches!(&err, DeliveryError::Rejected { detail, .. } if detail.contains("40056")), "{err}");
        let err = h
            .api
            .call_old::<_, Value>(
                ASYNCSEND_PATH,
                &json!({"agent_id": super::super::org::SEED_AGENT_ID, "to_all_user": true, "msg": {"msgtype": "text"}}),
            )
            .await
            .unwrap_err();
        assert!(matches!(&err, DeliveryError::Rejected { detail, .. } if detail.contains("40035")), "{err}");
        // An app without agent_id cannot send at all: refused before any call.
        let credentials = crate::dingtalk::openapi::AppCredentials {
            app_key: super::super::org::SEED_APP_KEY.to_owned(),
            app_secret: super::super::org::SEED_APP_SECRET.to_owned().into(),
            agent_id: None,
            corp_id: None,
        };
        let api = crate::dingtalk::openapi::OpenApi::new(
            credentials,
            crate::dingtalk::openapi::OpenApiSettings::with_base(&h.url),
            h.clock.clone(),
        )
        .unwrap();
        let note = WorkNotification::new(Recipients::everyone(), WorkMessage::text("x"));
        assert!(matches!(
            Messages::new(api).send_work_notification(&note).await,
            Err(DeliveryError::BadPayload { .. })
        ));
        assert!(messages.api().app_key() == super::super::org::SEED_APP_KEY);
    }

    #[tokio::test]
    async fn daily_quota_drops_the_501st_message() {
        let h = Harness::start().await;
        let app = h.org.apps().remove(0);
        let send = |i: u32| {
            let body = json!({"agent_id": app.agent_id, "userid_list": "staff0815", "msg": {"msgtype": "text", "text": {"content": format!("n{i}")}}});
            h.messages.asyncsend(&app, body.to_string().as_bytes())
        };
        for i in 0..DAILY_LIMIT_PER_USER {
            assert!(send(i).is_ok());
        }
        assert!(send(DAILY_LIMIT_PER_USER).is_ok(), "dropped silently, not refused");
        let last = h.messages.lock().next_task_id - 1;
        let result = h.messages.task_result(last).unwrap();
        assert_eq!(result.forbidden_list[0].code, FORBIDDEN_QUOTA);
        assert_eq!(h.messages.user_inbox("staff0815").len(), DAILY_LIMIT_PER_USER as usize);
    }

    #[tokio::test]
    async fn batch_send_to_45_users_makes_3_calls() {
        let h = Harness::start().await;
        let mut ids = Vec::new();
        for i in 0..44 {
            let userid = format!("bulk{i:02}");
            h.org
                .put_record("user", json!({"userid": userid, "name": format!("Bulk {i}"), "dept_ids": [20005]}))
                .unwrap();
            ids.push(userid);
        }
        ids.push("ghost".to_owned());
        let messages = Messages::new(h.api.clone());
        let msg = AppRobotMessage::sample_markdown("PO-2024-0042 approved", "**approved**");
        let outcome = messages.batch_send(super::super::org::SEED_APP_KEY, &ids, &msg).await.unwrap();
        assert_eq!(outcome.process_query_keys.len(), 3);
        assert_eq!(outcome.invalid, users(&["ghost"]));
        assert!(outcome.is_complete());
        let inbox = h.messages.user_inbox("bulk43");
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].content, json!({"title": "PO-2024-0042 approved", "text": "**approved**"}));
        assert!(matches!(&inbox[0].source, InboxSource::Robot { msg_key, .. } if msg_key == "sampleMarkdown"));
    }

    #[tokio::test]
    async fn flow_controlled_recipients_are_handed_back() {
        let h = Harness::start().await;
        h.messages.set_flow_controlled(["staff0815"]);
        let messages = Messages::new(h.api.clone());
        let ids = users(&["manager4711", "staff0815", "leaver0099"]);
        let outcome = messages
            .batch_send(super::super::org::SEED_APP_KEY, &ids, &AppRobotMessage::sample_text("hi"))
            .await
            .unwrap();
        assert_eq!(outcome.flow_controlled, users(&["staff0815"]));
        assert_eq!(outcome.retry_these(), users(&["staff0815"]));
        assert_eq!(outcome.filtered, users(&["leaver0099"]));
        assert!(!outcome.is_complete());
        assert!(h.messages.user_inbox("staff0815").is_empty());
        assert_eq!(h.messages.user_inbox("manager4711").len(), 1);
    }

    #[tokio::test]
    async fn a_later_chunk_failing_leaves_its_recipients_unsent() {
        let h = Harness::start().await;
        // One call per second allowed, and the test clock does not move: the second call is
        // refused with the QPS 403.
        h.org.set_qps(1);
        let mut ids = Vec::new();
        for i in 0..25 {
            let userid = format!("bulk{i:02}");
            h.org
                .put_record("user", json!({"userid": userid, "name": format!("Bulk {i}"), "dept_ids": [20005]}))
                .unwrap();
            ids.push(userid);
        }
        let messages = Messages::new(h.api.clone());
        let outcome = messages
            .batch_send(super::super::org::SEED_APP_KEY, &ids, &AppRobotMessage::sample_text("x"))
            .await
            .unwrap();
        assert_eq!(outcome.process_query_keys.len(), 1);
        assert_eq!(outcome.unsent, ids[20..].to_vec());
        assert!(matches!(outcome.failure, Some(DeliveryError::Throttled { .. })));
        assert_eq!(outcome.retry_these().len(), 5);
    }

    #[tokio::test]
    async fn robot_requests_are_validated() {
        let h = Harness::start().await;
        let code = super::super::org::SEED_APP_KEY;
        let post = |body: Value| {
            let api = h.api.clone();
            async move { api.call_new::<_, Value>(http::Method::POST, BATCH_SEND_PATH, &[], Some(&body)).await }
        };
        let many: Vec<String> = (0..21).map(|i| format!("u{i}")).collect();
        let cases = [
            (
                json!({"robotCode": code, "userIds": many, "msgKey": "sampleText", "msgParam": "{\"content\":\"x\"}"}),
                "userIdsExceedLimit",
            ),
            (
                json!({"robotCode": code, "userIds": ["staff0815"], "msgKey": "sampleText", "msgParam": {"content": "x"}}),
                "must be a JSON string",
            ),
            (
                json!({"robotCode": code, "userIds": ["staff0815"], "msgKey": "sampleActionCard", "msgParam": "{\"title\":\"t\",\"text\":\"x\"}"}),
                "singleTitle, singleURL",
            ),
            (
                json!({"robotCode": code, "userIds": ["staff0815"], "msgKey": "sampleNope", "msgParam": "{}"}),
                "msgKeyInvalid",
            ),
            (
                json!({"robotCode": "other", "userIds": ["staff0815"], "msgKey": "sampleText", "msgParam": "{\"content\":\"x\"}"}),
                "robotCodeInvalid",
            ),
        ];
        for (body, expected) in cases {
            let err = post(body).await.unwrap_err();
            assert!(
                matches!(&err, DeliveryError::Rejected { detail, .. } if detail.contains("HTTP 400") && detail.contains(expected)),
                "{expected}: {err}"
            );
        }
        assert!(h.messages.user_inbox("staff0815").is_empty());
    }

    #[tokio::test]
    async fn group_send_posts_to_known_conversations_only() {
        let h = Harness::start().await;
        let messages = Messages::new(h.api.clone());
        let code = super::super::org::SEED_APP_KEY;
        let group = h.org.group_by_title("finance").unwrap();
        let msg = AppRobotMessage::sample_text("Invoice INV-7 paid");
        let key = messages.group_send(code, &group.open_conversation_id, &msg).await.unwrap();
        let posted = h.messages.group_messages(&group.open_conversation_id);
        assert_eq!(posted.len(), 1);
        assert_eq!(posted[0].process_query_key, key);
        assert_eq!(posted[0].msg_param, json!({"content": "Invoice INV-7 paid"}));
        let err = messages.group_send(code, "cidNoSuchGroup==", &msg).await.unwrap_err();
        assert!(matches!(err, DeliveryError::Rejected { .. }), "{err}");
    }

    #[test]
    fn flow_control_record() {
        let clock = std::sync::Arc::new(connect::SystemClock);
        let sim = MessagesSim::new(Org::seeded(clock.clone()), clock);
        sim.put_record("flow_controlled", json!({"userids": ["a"]})).unwrap();
        assert!(sim.lock().flow_controlled.contains("a"));
        assert!(sim.put_record("nope", json!({})).is_err());
        assert!(sim.put_record("flow_controlled", json!({"userids": [1]})).is_err());
        sim.reset();
        assert!(sim.lock().flow_controlled.is_empty());
    }
}
