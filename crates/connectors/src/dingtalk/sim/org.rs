//! The simulated organisation: apps and their access tokens, per-app-per-API QPS, and a seeded
//! Hong Kong trading company (reference §1, §0.1, §8.1, §9, §10 items 1–3).
//!
//! Tokens (§1): both `GET /gettoken` and `POST /v1.0/oauth2/accessToken` issue the same per-app
//! token, valid [`TOKEN_LIFETIME_S`] by the injected clock. Asking again while it is valid
//! returns the same token and extends it; after expiry a new one is issued and the old one is
//! refused.
//!
//! Business routes of the other simulator parts call [`Org::authorize_new`] /
//! [`Org::authorize_old`] first; those enforce the placement rules of §0.1 (header for the new
//! API, `?access_token=` for the old), token validity, and the per-app-per-API QPS window, and
//! hand back DingTalk's exact error answer when one fails. Only authorised calls count towards
//! the window.
//!
//! Everything seeded is synthetic and deterministic, so tests and example configs can name it.

use super::super::openapi::TOKEN_HEADER;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use connect::Clock;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sim::SimError;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Token lifetime in seconds (§1.1).
pub const TOKEN_LIFETIME_S: i64 = 7200;
/// Per app per API, standard edition (§8.1).
pub const DEFAULT_QPS_PER_API: u32 = 20;
/// The QPS window (§8.1: windows are 1 s).
pub const QPS_WINDOW_MS: i64 = 1000;

pub const SEED_CORP_ID: &str = "dingcorp8d3f2a1b7c9e4f60";
pub const SEED_APP_KEY: &str = "dingbridgehk0001apps";
pub const SEED_APP_SECRET: &str = "Hk7mQ2vN9pR4sT6wX8yZ1aB3cD5eF7gJ0kL2nP4qR6tV8xZ1bD3fH5jK7mN9pQ2s";
pub const SEED_AGENT_ID: i64 = 3_120_001;
/// The root department (§0.2).
pub const ROOT_DEPT_ID: i64 = 1;

/// One internal app with a robot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimApp {
    pub app_key: String,
    pub app_secret: String,
    pub agent_id: i64,
    /// Defaults to the seeded corp.
    #[serde(default)]
    pub corp_id: String,
    /// Defaults to `app_key`, as for an internal app's robot.
    #[serde(default)]
    pub robot_code: String,
}

/// One member of the organisation (fields as `topapi/v2/user/get`, §9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimUser {
    pub userid: String,
    /// Defaults to a value derived from `userid`.
    #[serde(default)]
    pub unionid: String,
    pub name: String,
    #[serde(default)]
    pub mobile: String,
    /// Defaults to `852` (Hong Kong).
    #[serde(default)]
    pub state_code: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub job_number: String,
    #[serde(default)]
    pub title: String,
    pub dept_ids: Vec<i64>,
    #[serde(default)]
    pub manager_userid: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDepartment {
    pub dept_id: i64,
    pub name: String,
    /// `None` only for the root department.
    #[serde(default)]
    pub parent_id: Option<i64>,
    #[serde(default)]
    pub manager_userids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimGroup {
    pub open_conversation_id: String,
    pub title: String,
    pub owner_userid: String,
    #[serde(default)]
    pub member_userids: Vec<String>,
}

#[derive(Debug, Clone)]
struct IssuedToken {
    app_key: String,
    expires_at_ms: i64,
}

#[derive(Debug, Default)]
struct Inner {
    apps: BTreeMap<String, SimApp>,
    users: BTreeMap<String, SimUser>,
    departments: BTreeMap<i64, SimDepartment>,
    groups: BTreeMap<String, SimGroup>,
    /// token → owner and expiry; expired tokens stay so the answer for them is deterministic.
    tokens: HashMap<String, IssuedToken>,
    /// app_key → its current token.
    current_token: HashMap<String, String>,
    /// (app_key, api) → accepted call instants (ms) inside the current window.
    calls: HashMap<(String, String), VecDeque<i64>>,
    qps_per_api: u32,
    tokens_issued: u64,
}

/// The simulated organisation. Share it behind an `Arc`.
pub struct Org {
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Org {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Org").finish_non_exhaustive()
    }
}

/// A new-API error answer: HTTP `status` with `{code, requestid, message}`.
fn new_api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "requestid": new_request_id(), "message": message }))).into_response()
}

/// An old-API error answer: HTTP 200 with an errcode body.
fn old_api_error(body: Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

/// An old-API platform error wrapped in errcode 88 (§1.2).
fn old_api_88(sub_code: &str, sub_msg: &str) -> Response {
    old_api_error(json!({
        "errcode": 88,
        "sub_code": sub_code,
        "sub_msg": sub_msg,
        "errmsg": format!("ding talk error[subcode={sub_code},submsg={sub_msg}]"),
        "request_id": old_request_id(),
    }))
}

/// New-API style request id: `01A08FE7-68C3-7BBD-B223-447768EA4B29`.
fn new_request_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase()
}

/// Old-API style request id: 13 lower-case alphanumerics.
fn old_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().chars().take(13).collect()
}

fn param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

impl Org {
    /// The seeded organisation (see [`seed`]).
    pub fn seeded(clock: Arc<dyn Clock>) -> Arc<Self> {
        let org = Arc::new(Self { clock, inner: Mutex::new(Inner::default()) });
        org.reset();
        org
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a whole insert/assignment, so a poisoned lock still holds consistent data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Back to the seed: seeded records, no tokens, empty QPS windows, default QPS.
    pub fn reset(&self) {
        let seed = seed();
        let mut inner = self.lock();
        *inner = Inner { qps_per_api: DEFAULT_QPS_PER_API, ..Inner::default() };
        inner.apps = seed.apps.into_iter().map(|a| (a.app_key.clone(), a)).collect();
        inner.users = seed.users.into_iter().map(|u| (u.userid.clone(), u)).collect();
        inner.departments = seed.departments.into_iter().map(|d| (d.dept_id, d)).collect();
        inner.groups = seed.groups.into_iter().map(|g| (g.open_conversation_id.clone(), g)).collect();
    }

    /// `GET /gettoken`, `POST /v1.0/oauth2/accessToken`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/gettoken", get(gettoken_handler))
            .route("/v1.0/oauth2/accessToken", post(access_token_handler))
            .with_state(self)
    }

    /// Seeded credentials and limits for `GET /_sim/info` (secrets included: a test tool).
    pub fn info(&self) -> Value {
        let inner = self.lock();
        json!({
            "corp_id": SEED_CORP_ID,
            "apps": inner.apps.values().collect::<Vec<_>>(),
            "token_lifetime_s": TOKEN_LIFETIME_S,
            "qps_per_api": inner.qps_per_api,
            "tokens_issued": inner.tokens_issued,
            "users": inner.users.len(),
            "departments": inner.departments.len(),
            "groups": inner.groups.values().map(|g| json!({"title": g.title, "open_conversation_id": g.open_conversation_id})).collect::<Vec<_>>(),
        })
    }

    pub fn check_credentials(&self, app_key: &str, app_secret: &str) -> bool {
        self.lock().apps.get(app_key).is_some_and(|a| a.app_secret == app_secret)
    }

    /// The app's valid token, extended; or a new one. The caller checked the credentials.
    fn issue_token(&self, app_key: &str) -> String {
        let now = self.clock.now_millis();
        let expires_at_ms = now.saturating_add(TOKEN_LIFETIME_S * 1000);
        let mut inner = self.lock();
        let current = inner.current_token.get(app_key).cloned();
        if let Some(token) = current {
            if let Some(issued) = inner.tokens.get_mut(&token).filter(|t| t.expires_at_ms > now) {
                issued.expires_at_ms = expires_at_ms;
                return token;
            }
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        inner.tokens.insert(token.clone(), IssuedToken { app_key: app_key.to_owned(), expires_at_ms });
        inner.current_token.insert(app_key.to_owned(), token.clone());
        inner.tokens_issued += 1;
        token
    }

    /// The app of a valid token.
    fn token_app(&self, inner: &Inner, token: &str, now: i64) -> Option<SimApp> {
        let issued = inner.tokens.get(token).filter(|t| t.expires_at_ms > now)?;
        inner.apps.get(&issued.app_key).cloned()
    }

    /// Counts one call of `api` by `app_key` in the QPS window; `false` when the window is full.
    fn admit(inner: &mut Inner, app_key: &str, api: &str, now: i64) -> bool {
        let limit = inner.qps_per_api;
        if limit == 0 {
            return true;
        }
        let window = inner.calls.entry((app_key.to_owned(), api.to_owned())).or_default();
        while window.front().is_some_and(|t| t.saturating_add(QPS_WINDOW_MS) <= now) {
            window.pop_front();
        }
        if window.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            return false;
        }
        window.push_back(now);
        true
    }

    /// New-API auth for one call of `api` (a stable name such as `"card.create"`): the token
    /// header present, the token issued and unexpired, and the app's QPS for `api`. `Err` is
    /// the exact DingTalk answer.
    // The error is the finished DingTalk answer a handler returns as is; boxing it would only
    // move the allocation into every caller.
    #[allow(clippy::result_large_err)]
    pub fn authorize_new(&self, headers: &http::HeaderMap, api: &str) -> Result<SimApp, Response> {
        let token = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Err(new_api_error(
                StatusCode::BAD_REQUEST,
                "AuthenticationFailed.MissingParameter",
                &format!("缺少参数：{TOKEN_HEADER}"),
            ));
        }
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        let Some(app) = self.token_app(&inner, token, now) else {
            return Err(new_api_error(StatusCode::BAD_REQUEST, "InvalidAuthentication", "不合法的access_token"));
        };
        if !Self::admit(&mut inner, &app.app_key, api, now) {
            let limit = inner.qps_per_api;
            return Err(new_api_error(
                StatusCode::FORBIDDEN,
                "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
                &format!("app {} called {api} more than {limit} times in one second", app.app_key),
            ));
        }
        Ok(app)
    }

    /// Old-API auth from the raw query string (`access_token=`); errors are errcode bodies with
    /// HTTP 200.
    // The error is the finished DingTalk answer a handler returns as is; boxing it would only
    // move the allocation into every caller.
    #[allow(clippy::result_large_err)]
    pub fn authorize_old(&self, query: Option<&str>, api: &str) -> Result<SimApp, Response> {
        let token = param(query, "access_token").unwrap_or_default();
        if token.trim().is_empty() {
            return Err(old_api_88("40000", "access_token is blank"));
        }
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        let Some(app) = self.token_app(&inner, &token, now) else {
            return Err(old_api_88("40014", "不合法的access_token"));
        };
        if !Self::admit(&mut inner, &app.app_key, api, now) {
            let limit = inner.qps_per_api;
            return Err(old_api_error(json!({
                "errcode": 90018,
                "errmsg": format!("app {} called {api} more than {limit} times in one second", app.app_key),
                "request_id": old_request_id(),
            })));
        }
        Ok(app)
    }

    pub fn app(&self, app_key: &str) -> Option<SimApp> {
        self.lock().apps.get(app_key).cloned()
    }

    pub fn apps(&self) -> Vec<SimApp> {
        self.lock().apps.values().cloned().collect()
    }

    /// The app whose robot has `robot_code`.
    pub fn app_by_robot_code(&self, robot_code: &str) -> Option<SimApp> {
        self.lock().apps.values().find(|a| a.robot_code == robot_code).cloned()
    }

    pub fn user(&self, userid: &str) -> Option<SimUser> {
        self.lock().users.get(userid).cloned()
    }

    /// All users, by userid.
    pub fn users(&self) -> Vec<SimUser> {
        self.lock().users.values().cloned().collect()
    }

    pub fn user_by_unionid(&self, unionid: &str) -> Option<SimUser> {
        self.lock().users.values().find(|u| u.unionid == unionid).cloned()
    }

    /// By mobile, with or without a `852-` style country prefix.
    pub fn user_by_mobile(&self, mobile: &str) -> Option<SimUser> {
        let bare = mobile.rsplit('-').next().unwrap_or(mobile);
        self.lock().users.values().find(|u| !u.mobile.is_empty() && u.mobile == bare).cloned()
    }

    /// Users directly in `dept_id`, by userid.
    pub fn users_in_department(&self, dept_id: i64) -> Vec<SimUser> {
        self.lock().users.values().filter(|u| u.dept_ids.contains(&dept_id)).cloned().collect()
    }

    pub fn department(&self, dept_id: i64) -> Option<SimDepartment> {
        self.lock().departments.get(&dept_id).cloned()
    }

    /// All departments, by id.
    pub fn departments(&self) -> Vec<SimDepartment> {
        self.lock().departments.values().cloned().collect()
    }

    /// Direct children of `dept_id`, by id.
    pub fn sub_departments(&self, dept_id: i64) -> Vec<SimDepartment> {
        self.lock().departments.values().filter(|d| d.parent_id == Some(dept_id)).cloned().collect()
    }

    pub fn group(&self, open_conversation_id: &str) -> Option<SimGroup> {
        self.lock().groups.get(open_conversation_id).cloned()
    }

    pub fn groups(&self) -> Vec<SimGroup> {
        self.lock().groups.values().cloned().collect()
    }

    pub fn group_by_title(&self, title: &str) -> Option<SimGroup> {
        self.lock().groups.values().find(|g| g.title == title).cloned()
    }

    /// Every issued token expires now (tests of the client's refresh).
    pub fn expire_tokens(&self) {
        let now = self.clock.now_millis();
        for token in self.lock().tokens.values_mut() {
            token.expires_at_ms = token.expires_at_ms.min(now);
        }
    }

    /// The app's current token, if one is valid (tests).
    pub fn current_token(&self, app_key: &str) -> Option<String> {
        let now = self.clock.now_millis();
        let inner = self.lock();
        let token = inner.current_token.get(app_key)?;
        inner.tokens.get(token).filter(|t| t.expires_at_ms > now).map(|_| token.clone())
    }

    /// Tokens issued since start or the last reset (a reused token is not counted again).
    pub fn tokens_issued(&self) -> u64 {
        self.lock().tokens_issued
    }

    /// Per-app-per-API limit; 0 = unlimited.
    pub fn set_qps(&self, qps_per_api: u32) {
        let mut inner = self.lock();
        inner.qps_per_api = qps_per_api;
        inner.calls.clear();
    }

    pub fn qps(&self) -> u32 {
        self.lock().qps_per_api
    }

    /// Adds or replaces one record (`POST /_sim/records/{entity}`): `app`, `user`, `department`
    /// or `group`, the whole record as JSON. Returns the stored record with defaults filled in.
    pub fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        let invalid = |detail: String| SimError::InvalidRecord { entity: entity.to_owned(), detail };
        let stored = match entity {
            "app" => {
                let app: SimApp = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
                let app = self.put_app(app).map_err(|e| invalid(e.to_string()))?;
                serde_json::to_value(app)
            }
            "user" => {
                let user: SimUser = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
                let user = self.put_user(user).map_err(|e| invalid(e.to_string()))?;
                serde_json::to_value(user)
            }
            "department" => {
                let dept: SimDepartment = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
                let dept = self.put_department(dept).map_err(|e| invalid(e.to_string()))?;
                serde_json::to_value(dept)
            }
            "group" => {
                let group: SimGroup = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
                let group = self.put_group(group).map_err(|e| invalid(e.to_string()))?;
                serde_json::to_value(group)
            }
            _ => {
                return Err(SimError::UnknownEntity {
                    simulator: "dingtalk",
                    entity: entity.to_owned(),
                    known: "app, user, department, group".to_owned(),
                })
            }
        };
        stored.map_err(|e| invalid(e.to_string()))
    }

    fn put_app(&self, mut app: SimApp) -> Result<SimApp, SeedError> {
        if app.app_key.trim().is_empty() {
            return Err(SeedError::Empty("app_key"));
        }
        if app.app_secret.trim().is_empty() {
            return Err(SeedError::Empty("app_secret"));
        }
        if app.agent_id <= 0 {
            return Err(SeedError::NotPositive("agent_id"));
        }
        if app.corp_id.is_empty() {
            app.corp_id = SEED_CORP_ID.to_owned();
        }
        if app.robot_code.is_empty() {
            app.robot_code = app.app_key.clone();
        }
        let mut inner = self.lock();
        if let Some(other) = inner.apps.values().find(|a| a.app_key != app.app_key && a.robot_code == app.robot_code) {
            return Err(SeedError::RobotCodeTaken { robot_code: app.robot_code, app_key: other.app_key.clone() });
        }
        inner.apps.insert(app.app_key.clone(), app.clone());
        Ok(app)
    }

    fn put_user(&self, mut user: SimUser) -> Result<SimUser, SeedError> {
        if user.userid.trim().is_empty() {
            return Err(SeedError::Empty("userid"));
        }
        if user.name.trim().is_empty() {
            return Err(SeedError::Empty("name"));
        }
        if !user.mobile.chars().all(|c| c.is_ascii_digit()) {
            return Err(SeedError::MobileNotDigits(user.mobile));
        }
        if user.state_code.is_empty() {
            user.state_code = "852".to_owned();
        }
        if !user.state_code.chars().all(|c| c.is_ascii_digit()) {
            return Err(SeedError::StateCodeNotDigits(user.state_code));
        }
        if user.unionid.is_empty() {
            user.unionid = synthetic_unionid(&user.userid);
        }
        if user.dept_ids.is_empty() {
            return Err(SeedError::NoDepartments);
        }
        let mut inner = self.lock();
        if let Some(missing) = user.dept_ids.iter().find(|d| !inner.departments.contains_key(d)) {
            return Err(SeedError::UnknownDepartment(*missing));
        }
        if let Some(manager) = &user.manager_userid {
            if manager == &user.userid || !inner.users.contains_key(manager) {
                return Err(SeedError::BadManager(manager.clone()));
            }
        }
        if let Some(other) = inner.users.values().find(|u| u.userid != user.userid && u.unionid == user.unionid) {
            return Err(SeedError::UnionidTaken(other.userid.clone()));
        }
        inner.users.insert(user.userid.clone(), user.clone());
        Ok(user)
    }

    fn put_department(&self, dept: SimDepartment) -> Result<SimDepartment, SeedError> {
        if dept.dept_id <= 0 {
            return Err(SeedError::NotPositive("dept_id"));
        }
        if dept.name.trim().is_empty() {
            return Err(SeedError::Empty("name"));
        }
        let mut inner = self.lock();
        match dept.parent_id {
            None if dept.dept_id != ROOT_DEPT_ID => return Err(SeedError::ParentRequired),
            Some(_) if dept.dept_id == ROOT_DEPT_ID => return Err(SeedError::RootWithParent),
            Some(parent) => {
                if !inner.departments.contains_key(&parent) {
                    return Err(SeedError::UnknownParent(parent));
                }
                // Walk up from the parent: meeting this department would make a cycle.
                let mut cursor = Some(parent);
                while let Some(id) = cursor {
                    if id == dept.dept_id {
                        return Err(SeedError::Cycle { parent, dept_id: dept.dept_id });
                    }
                    cursor = inner.departments.get(&id).and_then(|d| d.parent_id);
                }
            }
            None => {}
        }
        if let Some(missing) = dept.manager_userids.iter().find(|u| !inner.users.contains_key(*u)) {
            return Err(SeedError::UnknownManager(missing.clone()));
        }
        inner.departments.insert(dept.dept_id, dept.clone());
        Ok(dept)
    }

    fn put_group(&self, group: SimGroup) -> Result<SimGroup, SeedError> {
        if !group.open_conversation_id.starts_with("cid") || group.open_conversation_id.len() < 8 {
            return Err(SeedError::ConversationId(group.open_conversation_id));
        }
        if group.title.trim().is_empty() {
            return Err(SeedError::Empty("title"));
        }
        let mut inner = self.lock();
        if !inner.users.contains_key(&group.owner_userid) {
            return Err(SeedError::UnknownOwner(group.owner_userid.clone()));
        }
        if let Some(missing) = group.member_userids.iter().find(|u| !inner.users.contains_key(*u)) {
            return Err(SeedError::UnknownMember(missing.clone()));
        }
        inner.groups.insert(group.open_conversation_id.clone(), group.clone());
        Ok(group)
    }
}

/// A seeded record (`POST /_sim/records/{entity}`) the organisation refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum SeedError {
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("`{0}` must be a positive number")]
    NotPositive(&'static str),
    #[error("`robot_code` {robot_code} already belongs to app {app_key}")]
    RobotCodeTaken { robot_code: String, app_key: String },
    #[error("`mobile` must be digits only (country code goes in `state_code`), got {0}")]
    MobileNotDigits(String),
    #[error("`state_code` must be digits, got {0}")]
    StateCodeNotDigits(String),
    #[error("`dept_ids` must name at least one department")]
    NoDepartments,
    #[error("`dept_ids` names department {0}, which does not exist")]
    UnknownDepartment(i64),
    #[error("`manager_userid` {0} is not another existing user")]
    BadManager(String),
    #[error("`unionid` already belongs to user {0}")]
    UnionidTaken(String),
    #[error("`parent_id` is required for every department but the root (1)")]
    ParentRequired,
    #[error("`parent_id` must be absent for the root (1)")]
    RootWithParent,
    #[error("`parent_id` {0} does not exist")]
    UnknownParent(i64),
    #[error("`parent_id` {parent} would make department {dept_id} its own ancestor")]
    Cycle { parent: i64, dept_id: i64 },
    #[error("`manager_userids` names user {0}, who does not exist")]
    UnknownManager(String),
    #[error("`open_conversation_id` must look like `cid…` (at least 8 chars), got {0}")]
    ConversationId(String),
    #[error("`owner_userid` {0} does not exist")]
    UnknownOwner(String),
    #[error("`member_userids` names user {0}, who does not exist")]
    UnknownMember(String),
}

/// A stable, opaque unionid for a userid (real ones are 20–40 opaque chars, §0.2).
fn synthetic_unionid(userid: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("dingbridge-sim-unionid:{userid}").as_bytes());
    format!("u{}", &hex::encode(digest)[..27])
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccessTokenRequest {
    #[serde(default)]
    app_key: String,
    #[serde(default)]
    app_secret: String,
}

async fn gettoken_handler(State(org): State<Arc<Org>>, RawQuery(query): RawQuery) -> Response {
    let query = query.as_deref();
    let app_key = param(query, "appkey").unwrap_or_default();
    let app_secret = param(query, "appsecret").unwrap_or_default();
    if app_key.is_empty() || app_secret.is_empty() {
        return old_api_error(json!({ "errcode": 40035, "errmsg": "缺少参数 corpid or appkey" }));
    }
    if !org.check_credentials(&app_key, &app_secret) {
        return old_api_error(json!({ "errcode": 40096, "errmsg": "不合法的appKey或appSecret" }));
    }
    let token = org.issue_token(&app_key);
    Json(json!({ "errcode": 0, "access_token": token, "errmsg": "ok", "expires_in": TOKEN_LIFETIME_S })).into_response()
}

async fn access_token_handler(State(org): State<Arc<Org>>, body: axum::body::Bytes) -> Response {
    // A body that is not `{appKey, appSecret}` gets the bad-credentials answer too: what real
    // DingTalk says for a malformed token request is not documented.
    let request: AccessTokenRequest = serde_json::from_slice(&body)
        .unwrap_or(AccessTokenRequest { app_key: String::new(), app_secret: String::new() });
    if !org.check_credentials(&request.app_key, &request.app_secret) {
        return new_api_error(StatusCode::BAD_REQUEST, "invalidClientIdOrSecret", "无效的clientId或者clientSecret");
    }
    let token = org.issue_token(&request.app_key);
    Json(json!({ "accessToken": token, "expireIn": TOKEN_LIFETIME_S })).into_response()
}

/// The seeded records.
#[derive(Debug, Clone)]
pub struct Seed {
    pub apps: Vec<SimApp>,
    pub users: Vec<SimUser>,
    pub departments: Vec<SimDepartment>,
    pub groups: Vec<SimGroup>,
}

/// Harbour Trading Ltd, a Hong Kong trading company: one internal app, six departments, twelve
/// people (one has left) with manager chains for purchasing, finance and sales approvals, and
/// three groups named after the seeded custom robots (`ops`, `sales-hk`, `finance`) and
/// `sales-prc`, the group of the mainland China sales team.
pub fn seed() -> Seed {
    let apps = vec![SimApp {
        app_key: SEED_APP_KEY.to_owned(),
        app_secret: SEED_APP_SECRET.to_owned(),
        agent_id: SEED_AGENT_ID,
        corp_id: SEED_CORP_ID.to_owned(),
        robot_code: SEED_APP_KEY.to_owned(),
    }];
    let dept = |id: i64, name: &str, parent: Option<i64>, managers: &[&str]| SimDepartment {
        dept_id: id,
        name: name.to_owned(),
        parent_id: parent,
        manager_userids: managers.iter().map(|m| (*m).to_owned()).collect(),
    };
    let departments = vec![
        dept(ROOT_DEPT_ID, "Harbour Trading Ltd", None, &["boss0001"]),
        dept(20001, "Purchasing", Some(1), &["manager4711"]),
        dept(20002, "Finance", Some(1), &["finance0001"]),
        dept(20003, "Sales HK", Some(1), &["salesmgr0001"]),
        dept(20004, "Sales South China", Some(1), &["salesmgr0001"]),
        dept(20005, "Warehouse", Some(1), &["wh0001"]),
    ];
    // (userid, name, mobile, email, job number, title, departments, manager, active)
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a [i64], Option<&'a str>, bool);
    let rows: [Row<'_>; 12] = [
        (
            "boss0001",
            "Lee Wai Kit",
            "91234567",
            "wk.lee@harbour-trading.example.hk",
            "E0001",
            "Managing Director",
            &[1],
            None,
            true,
        ),
        (
            "manager4711",
            "Chan Tai Man",
            "98765432",
            "tm.chan@example.com.hk",
            "E1024",
            "Purchasing Manager",
            &[20001],
            Some("boss0001"),
            true,
        ),
        (
            "staff0815",
            "Ho Siu Fan",
            "62345678",
            "sf.ho@harbour-trading.example.hk",
            "E1031",
            "Purchasing Clerk",
            &[20001],
            Some("manager4711"),
            true,
        ),
        (
            "finance0001",
            "Cheung Mei Ling",
            "93456781",
            "ml.cheung@harbour-trading.example.hk",
            "E0002",
            "Finance Director",
            &[20002],
            Some("boss0001"),
            true,
        ),
        (
            "pay0002",
            "Lam Chi Keung",
            "51234568",
            "ck.lam@harbour-trading.example.hk",
            "E2011",
            "Payment Officer",
            &[20002],
            Some("finance0001"),
            true,
        ),
        (
            "acct0003",
            "Ng Hoi Yan",
            "67891234",
            "hy.ng@harbour-trading.example.hk",
            "E2017",
            "Junior Accounts Clerk",
            &[20002],
            Some("finance0001"),
            true,
        ),
        (
            "salesmgr0001",
            "Tsang Ka Wai",
            "94561237",
            "kw.tsang@harbour-trading.example.hk",
            "E3001",
            "Sales Manager",
            &[20003, 20004],
            Some("boss0001"),
            true,
        ),
        (
            "sales0101",
            "Yeung Wing Sze",
            "65432178",
            "ws.yeung@harbour-trading.example.hk",
            "E3105",
            "Sales Representative (Hong Kong)",
            &[20003],
            Some("salesmgr0001"),
            true,
        ),
        (
            "sales0201",
            "Li Jun",
            "56781234",
            "jun.li@harbour-trading.example.hk",
            "E3203",
            "Sales Representative (South China)",
            &[20004],
            Some("salesmgr0001"),
            true,
        ),
        (
            "wh0001",
            "Kwok Chun Hei",
            "97651234",
            "ch.kwok@harbour-trading.example.hk",
            "E4001",
            "Warehouse Lead",
            &[20005],
            Some("boss0001"),
            true,
        ),
        (
            "wh0002",
            "Mak Tsz Ho",
            "68123457",
            "th.mak@harbour-trading.example.hk",
            "E4012",
            "Warehouse Assistant",
            &[20005],
            Some("wh0001"),
            true,
        ),
        (
            "leaver0099",
            "Chow Siu Ming",
            "59871234",
            "sm.chow@harbour-trading.example.hk",
            "E3150",
            "Sales Representative (left)",
            &[20003],
            Some("salesmgr0001"),
            false,
        ),
    ];
    let users = rows
        .iter()
        .map(|(userid, name, mobile, email, job, title, depts, manager, active)| SimUser {
            userid: (*userid).to_owned(),
            // manager4711 keeps the unionid of the `user_get_ok` fixture.
            unionid: if *userid == "manager4711" {
                "z21HjQliSzpw0YWCNxmii6u2Os62cZ62iSZ".to_owned()
            } else {
                synthetic_unionid(userid)
            },
            name: (*name).to_owned(),
            mobile: (*mobile).to_owned(),
            state_code: "852".to_owned(),
            email: (*email).to_owned(),
            job_number: (*job).to_owned(),
            title: (*title).to_owned(),
            dept_ids: depts.to_vec(),
            manager_userid: manager.map(str::to_owned),
            active: *active,
        })
        .collect();
    let group = |cid: &str, title: &str, owner: &str, members: &[&str]| SimGroup {
        open_conversation_id: cid.to_owned(),
        title: title.to_owned(),
        owner_userid: owner.to_owned(),
        member_userids: members.iter().map(|m| (*m).to_owned()).collect(),
    };
    let groups = vec![
        group(
            "cidAbCdEfGhIjKlMnOpQrStUv==",
            "ops",
            "boss0001",
            &["boss0001", "manager4711", "staff0815", "wh0001", "wh0002"],
        ),
        group(
            "cid7Hk2PqRsTuVwXyZ0aBcDe+Q==",
            "sales-hk",
            "salesmgr0001",
            &["salesmgr0001", "sales0101", "sales0201", "boss0001"],
        ),
        // Mainland China customers: the regional sales group S3 routes PRC accounts to.
        group("cidPrC8sAlEs3GbA7wQxYz1Kj==", "sales-prc", "salesmgr0001", &["salesmgr0001", "sales0201", "boss0001"]),
        group(
            "cidF1nAnCe9zYxWvUt8sRqPo/A==",
            "finance",
            "finance0001",
            &["finance0001", "pay0002", "acct0003", "boss0001", "manager4711"],
        ),
    ];
    Seed { apps, users, departments, groups }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use std::sync::atomic::{AtomicI64, Ordering};

    #[derive(Debug)]
    struct ManualClock {
        ms: AtomicI64,
    }

    impl ManualClock {
        fn advance_ms(&self, ms: i64) {
            self.ms.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> jiff::Timestamp {
            jiff::Timestamp::from_millisecond(self.ms.load(Ordering::SeqCst)).unwrap()
        }
    }

    struct Harness {
        org: Arc<Org>,
        clock: Arc<ManualClock>,
        base: String,
        http: reqwest::Client,
    }

    /// Serves the org's token routes plus one new-API and one old-API test route that only
    /// authorise (the business routes live in the other simulator parts).
    async fn harness() -> Harness {
        let clock = Arc::new(ManualClock { ms: AtomicI64::new(1_767_225_600_000) });
        let org = Org::seeded(clock.clone());
        let new_route = |State(org): State<Arc<Org>>, headers: HeaderMap| async move {
            match org.authorize_new(&headers, "test.echo") {
                Ok(app) => Json(json!({ "appKey": app.app_key })).into_response(),
                Err(resp) => resp,
            }
        };
        let old_route = |State(org): State<Arc<Org>>, RawQuery(query): RawQuery| async move {
            match org.authorize_old(query.as_deref(), "test.echo") {
                Ok(app) => Json(json!({ "errcode": 0, "errmsg": "ok", "app_key": app.app_key })).into_response(),
                Err(resp) => resp,
            }
        };
        let router = org.clone().router().merge(
            Router::new()
                .route("/v1.0/test/echo", get(new_route))
                .route("/topapi/test/echo", post(old_route))
                .with_state(org.clone()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Harness { org, clock, base, http: reqwest::Client::new() }
    }

    impl Harness {
        async fn new_token(&self, key: &str, secret: &str) -> (u16, Value) {
            let resp = self
                .http
                .post(format!("{}/v1.0/oauth2/accessToken", self.base))
                .json(&json!({ "appKey": key, "appSecret": secret }))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap())
        }

        async fn old_token(&self, query: &str) -> (u16, Value) {
            let resp = self.http.get(format!("{}/gettoken?{query}", self.base)).send().await.unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap())
        }

        async fn call_new(&self, token: Option<&str>, query: &str) -> (u16, Value) {
            let mut req = self.http.get(format!("{}/v1.0/test/echo{query}", self.base));
            if let Some(token) = token {
                req = req.header(TOKEN_HEADER, token);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap())
        }

        async fn call_old(&self, query: &str, header_token: Option<&str>) -> (u16, Value) {
            let mut req = self.http.post(format!("{}/topapi/test/echo{query}", self.base)).json(&json!({}));
            if let Some(token) = header_token {
                req = req.header(TOKEN_HEADER, token);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap())
        }
    }

    fn fixture_example(section: &str, name: &str) -> Value {
        let all = fixtures::read_json("dingtalk/openapi/response_examples.json");
        all[section][name].clone()
    }

    /// Same keys and values as the fixture, except the listed volatile keys (ids, tokens).
    fn assert_shape(got: &Value, want: &Value, volatile: &[&str]) {
        let (got, want) = (got.as_object().unwrap(), want.as_object().unwrap());
        let keys = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<std::collections::BTreeSet<_>>();
        assert_eq!(keys(got), keys(want), "keys of {got:?}");
        for (k, v) in want {
            if !volatile.contains(&k.as_str()) {
                assert_eq!(&got[k], v, "field {k}");
            }
        }
    }

    #[tokio::test]
    async fn tokens_are_reused_while_valid_and_renewed_after_expiry() {
        let h = harness().await;
        let (status, first) = h.new_token(SEED_APP_KEY, SEED_APP_SECRET).await;
        assert_eq!(status, 200);
        assert_shape(&first, &fixture_example("new_api_api_dingtalk_com", "accessToken_ok")["body"], &["accessToken"]);
        let token = first["accessToken"].as_str().unwrap().to_owned();

        // The old endpoint hands out the same app token, and asking again extends it.
        h.clock.advance_ms(7_000_000);
        let (status, old) = h.old_token(&format!("appkey={SEED_APP_KEY}&appsecret={SEED_APP_SECRET}")).await;
        assert_eq!(status, 200);
        assert_shape(&old, &fixture_example("old_api_oapi_dingtalk_com", "gettoken_ok")["body"], &["access_token"]);
        assert_eq!(old["access_token"], token.as_str());
        // 7000 s + 7000 s after the first issue: valid only because the second call extended it.
        h.clock.advance_ms(7_000_000);
        assert_eq!(h.call_new(Some(&token), "").await.0, 200);
        assert_eq!(h.org.tokens_issued(), 1);

        // After expiry the old token is refused and a new one is issued.
        h.clock.advance_ms(7_200_000);
        let (status, body) = h.call_new(Some(&token), "").await;
        assert_eq!((status, body["code"].as_str()), (400, Some("InvalidAuthentication")));
        let (_, renewed) = h.new_token(SEED_APP_KEY, SEED_APP_SECRET).await;
        let renewed = renewed["accessToken"].as_str().unwrap().to_owned();
        assert_ne!(renewed, token);
        assert_eq!(h.org.tokens_issued(), 2);
        let (status, body) = h.call_new(Some(&renewed), "").await;
        assert_eq!((status, body["appKey"].as_str()), (200, Some(SEED_APP_KEY)));
    }

    #[tokio::test]
    async fn bad_credentials_get_dingtalks_exact_errors() {
        let h = harness().await;
        let (status, body) = h.new_token(SEED_APP_KEY, "wrong").await;
        assert_eq!(status, 400);
        assert_shape(
            &body,
            &fixture_example("new_api_api_dingtalk_com", "accessToken_bad_secret")["body"],
            &["requestid"],
        );
        let (status, body) = h.new_token("dingunknownapp000000", SEED_APP_SECRET).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("invalidClientIdOrSecret")));

        let (status, body) = h.old_token(&format!("appkey={SEED_APP_KEY}&appsecret=wrong")).await;
        assert_eq!(status, 200);
        assert_eq!(body, fixture_example("old_api_oapi_dingtalk_com", "gettoken_bad_secret")["body"]);
        let (_, body) = h.old_token(&format!("appsecret={SEED_APP_SECRET}")).await;
        assert_eq!(body, fixture_example("old_api_oapi_dingtalk_com", "gettoken_missing_param")["body"]);
        assert_eq!(h.org.tokens_issued(), 0);
    }

    #[tokio::test]
    async fn wrong_token_placement_is_refused_like_dingtalk() {
        let h = harness().await;
        let (_, body) = h.new_token(SEED_APP_KEY, SEED_APP_SECRET).await;
        let token = body["accessToken"].as_str().unwrap().to_owned();

        // `?access_token=` on a new-API path: the header is missing.
        let (status, body) = h.call_new(None, &format!("?access_token={token}")).await;
        assert_eq!(status, 400);
        assert_shape(
            &body,
            &fixture_example("new_api_api_dingtalk_com", "missing_token_header")["body"],
            &["requestid"],
        );

        // The new-API header on an old-API path: the token is blank.
        let (status, body) = h.call_old("", Some(&token)).await;
        assert_eq!(status, 200);
        assert_shape(
            &body,
            &fixture_example("old_api_oapi_dingtalk_com", "topapi_missing_token")["body"],
            &["request_id"],
        );

        // Each in its right place works.
        assert_eq!(h.call_new(Some(&token), "").await.0, 200);
        let (status, body) = h.call_old(&format!("?access_token={token}"), None).await;
        assert_eq!((status, body["errcode"].as_i64()), (200, Some(0)));
    }

    #[tokio::test]
    async fn unknown_and_expired_tokens_are_invalid() {
        let h = harness().await;
        let (status, body) = h.call_new(Some("not-a-token"), "").await;
        assert_eq!(status, 400);
        assert_shape(
            &body,
            &fixture_example("new_api_api_dingtalk_com", "invalid_access_token")["body"],
            &["requestid"],
        );
        let (status, body) = h.call_old("?access_token=not-a-token", None).await;
        assert_eq!(status, 200);
        assert_shape(
            &body,
            &fixture_example("old_api_oapi_dingtalk_com", "topapi_invalid_token")["body"],
            &["request_id"],
        );

        let (_, body) = h.old_token(&format!("appkey={SEED_APP_KEY}&appsecret={SEED_APP_SECRET}")).await;
        let token = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(h.org.current_token(SEED_APP_KEY).as_deref(), Some(token.as_str()));
        h.org.expire_tokens();
        assert_eq!(h.org.current_token(SEED_APP_KEY), None);
        let (_, body) = h.call_old(&format!("?access_token={token}"), None).await;
        assert_eq!((body["errcode"].as_i64(), body["sub_code"].as_str()), (Some(88), Some("40014")));
        let (status, _) = h.call_new(Some(&token), "").await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn qps_is_limited_per_app_and_api_in_one_second_windows() {
        let h = harness().await;
        h.org.set_qps(3);
        let (_, body) = h.new_token(SEED_APP_KEY, SEED_APP_SECRET).await;
        let token = body["accessToken"].as_str().unwrap().to_owned();
        for _ in 0..3 {
            assert_eq!(h.call_new(Some(&token), "").await.0, 200);
        }
        let (status, body) = h.call_new(Some(&token), "").await;
        assert_eq!(status, 403);
        assert_shape(
            &body,
            &fixture_example("new_api_api_dingtalk_com", "qps_app_per_api")["body"],
            &["requestid", "message"],
        );
        // The old-API route authorises the same API name, so it shares the full window and is
        // refused with the old-API errcode.
        let (status, body) = h.call_old(&format!("?access_token={token}"), None).await;
        assert_eq!((status, body["errcode"].as_i64()), (200, Some(90018)));
        // A different API has its own window.
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, token.parse().unwrap());
        assert!(h.org.authorize_new(&headers, "other.api").is_ok());

        // One second later the window has moved on.
        h.clock.advance_ms(QPS_WINDOW_MS);
        assert_eq!(h.call_new(Some(&token), "").await.0, 200);
        // The default is DingTalk's 20, restored by reset.
        h.org.reset();
        assert_eq!(h.org.qps(), DEFAULT_QPS_PER_API);
        assert_eq!(h.org.tokens_issued(), 0);
    }

    #[test]
    fn the_seed_is_consistent() {
        let org = Org::seeded(Arc::new(ManualClock { ms: AtomicI64::new(0) }));
        let app = org.app(SEED_APP_KEY).unwrap();
        assert_eq!(
            (app.agent_id, app.corp_id.as_str(), app.robot_code.as_str()),
            (3_120_001, SEED_CORP_ID, SEED_APP_KEY)
        );
        assert_eq!(app.app_secret.len(), 64);
        assert_eq!(org.department(1).unwrap().name, "Harbour Trading Ltd");
        assert_eq!(org.sub_departments(1).len(), 5);
        let users = org.users();
        assert!(users.len() >= 10);
        for user in &users {
            assert_eq!((user.state_code.as_str(), user.mobile.len()), ("852", 8), "{}", user.userid);
            assert!(user.email.contains('@') && !user.job_number.is_empty() && !user.title.is_empty());
            assert!(user.dept_ids.iter().all(|d| org.department(*d).is_some()), "{}", user.userid);
            // Every manager chain ends at the managing director without loops.
            let mut seen = vec![user.userid.clone()];
            let mut cursor = user.manager_userid.clone();
            while let Some(manager) = cursor {
                assert!(!seen.contains(&manager), "loop at {manager}");
                seen.push(manager.clone());
                cursor = org.user(&manager).unwrap().manager_userid;
            }
            assert_eq!(seen.last().unwrap(), "boss0001");
        }
        let mut unionids: Vec<_> = users.iter().map(|u| u.unionid.clone()).collect();
        unionids.sort();
        unionids.dedup();
        assert_eq!(unionids.len(), users.len());
        for dept in org.departments() {
            assert!(!dept.manager_userids.is_empty() && dept.manager_userids.iter().all(|u| org.user(u).is_some()));
        }
        // Purchase request chain: clerk → purchasing manager → managing director; finance people exist.
        assert_eq!(org.user("staff0815").unwrap().manager_userid.as_deref(), Some("manager4711"));
        assert_eq!(org.user("manager4711").unwrap().unionid, "z21HjQliSzpw0YWCNxmii6u2Os62cZ62iSZ");
        for title in ["ops", "sales-hk", "sales-prc", "finance"] {
            let group = org.group_by_title(title).unwrap_or_else(|| panic!("group {title}"));
            assert!(group.open_conversation_id.starts_with("cid"));
            assert!(group.member_userids.contains(&group.owner_userid));
            assert_eq!(org.group(&group.open_conversation_id).unwrap(), group);
        }
        assert_eq!(org.user_by_mobile("852-98765432").unwrap().userid, "manager4711");
        assert_eq!(org.user_by_unionid("z21HjQliSzpw0YWCNxmii6u2Os62cZ62iSZ").unwrap().userid, "manager4711");
    }

    #[test]
    fn records_are_validated_naming_the_field() {
        let org = Org::seeded(Arc::new(ManualClock { ms: AtomicI64::new(0) }));
        let bad = [
            ("app", json!({"app_key": "", "app_secret": "s", "agent_id": 1}), "app_key"),
            ("app", json!({"app_key": "k", "app_secret": "s"}), "agent_id"),
            (
                "app",
                json!({"app_key": "k", "app_secret": "s", "agent_id": 1, "robot_code": SEED_APP_KEY}),
                "robot_code",
            ),
            ("user", json!({"userid": "u1", "name": "N", "dept_ids": [99]}), "dept_ids"),
            (
                "user",
                json!({"userid": "u1", "name": "N", "dept_ids": [1], "manager_userid": "ghost"}),
                "manager_userid",
            ),
            ("user", json!({"userid": "u1", "name": "N", "dept_ids": [1], "mobile": "+852 9123"}), "mobile"),
            ("user", json!({"userid": "u1", "dept_ids": [1]}), "name"),
            ("user", json!({"userid": "u1", "name": "N", "dept_ids": [1], "colour": "red"}), "colour"),
            ("department", json!({"dept_id": 30001, "name": "X"}), "parent_id"),
            ("department", json!({"dept_id": 30001, "name": "X", "parent_id": 77}), "parent_id"),
            ("department", json!({"dept_id": 1, "name": "X", "parent_id": 20001}), "parent_id"),
            (
                "department",
                json!({"dept_id": 30001, "name": "X", "parent_id": 1, "manager_userids": ["ghost"]}),
                "manager_userids",
            ),
            (
                "group",
                json!({"open_conversation_id": "abc", "title": "t", "owner_userid": "boss0001"}),
                "open_conversation_id",
            ),
            (
                "group",
                json!({"open_conversation_id": "cidXyz12345==", "title": "t", "owner_userid": "ghost"}),
                "owner_userid",
            ),
        ];
        for (entity, value, field) in bad {
            let err = org.put_record(entity, value.clone()).unwrap_err();
            assert!(matches!(err, SimError::InvalidRecord { .. }), "{entity} {value}: {err}");
            assert!(err.to_string().contains(field), "{entity} {value}: {err}");
        }
        assert!(matches!(org.put_record("robot", json!({})), Err(SimError::UnknownEntity { .. })));

        // Purchasing under its own new child would be a cycle.
        org.put_record("department", json!({"dept_id": 30001, "name": "Procurement HK", "parent_id": 20001})).unwrap();
        let err = org
            .put_record("department", json!({"dept_id": 20001, "name": "Purchasing", "parent_id": 30001}))
            .unwrap_err();
        assert!(err.to_string().contains("ancestor"), "{err}");

        let stored = org
            .put_record("user", json!({"userid": "new0001", "name": "Wong Siu Ling", "dept_ids": [30001], "mobile": "61112222", "manager_userid": "manager4711"}))
            .unwrap();
        assert_eq!(stored["state_code"], "852");
        assert!(stored["active"].as_bool().unwrap());
        assert!(!stored["unionid"].as_str().unwrap().is_empty());
        assert_eq!(org.users_in_department(30001).len(), 1);
        let app = org
            .put_record(
                "app",
                json!({"app_key": "dingsecondapp0000001", "app_secret": "x".repeat(64), "agent_id": 3120002}),
            )
            .unwrap();
        assert_eq!(app["robot_code"], "dingsecondapp0000001");
        assert!(org.check_credentials("dingsecondapp0000001", &"x".repeat(64)));
        org.reset();
        assert!(org.user("new0001").is_none() && org.app("dingsecondapp0000001").is_none());
    }
}
