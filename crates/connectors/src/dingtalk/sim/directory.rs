//! Simulated directory reads (reference §9): the old-API `topapi` user and department calls,
//! served from [`Org`]'s records with `?access_token=` auth and `{errcode, errmsg, result,
//! request_id}` envelopes.
//!
//! Synthetic details: every user reports `hired_date` (real DingTalk does; clients should not
//! keep it), an empty `role_list`, and per-department order values 10, 20, … by position.
//! Not-found codes are UNVERIFIED (60121 for users, 60003 for departments); malformed requests
//! get 40035.
//!
//! The new-API contact search (SDK `contact_1_0` `SearchUser` / `SearchDepartment`, reference §9)
//! is served too: `POST /v1.0/contact/users/search` and `/v1.0/contact/departments/search` with
//! `{queryWord, offset, size, fullMatchField?}` answer `{hasMore, totalCount, list}` (userids /
//! department ids), matching the name case-insensitively (`fullMatchField: 1` = whole name).
//! DingTalk also matches pinyin and other fields, and its refusal codes for these two calls are
//! not published: `MissingParameter` / `InvalidParameter` (HTTP 400) are UNVERIFIED.

use super::super::directory::{
    DEPT_GET_PATH, DEPT_LISTPARENT_PATH, DEPT_LISTSUBID_PATH, DEPT_LISTSUB_PATH, USER_BY_MOBILE_PATH,
    USER_BY_UNIONID_PATH, USER_GET_PATH, USER_LISTID_PATH, USER_LIST_PATH, USER_PAGE_SIZE,
};
use super::org::{Org, SimDepartment, SimUser};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

/// UNVERIFIED: the errcode DingTalk gives for an unknown userid (reference §8.2).
pub const ERRCODE_NO_USER: i64 = 60121;
/// UNVERIFIED: the errcode for an unknown department.
pub const ERRCODE_NO_DEPT: i64 = 60003;
/// Synthetic hire date every simulated user reports (2021-01-01).
const HIRED_DATE_MS: i64 = 1_609_459_200_000;
/// `POST` path of the SDK's `SearchUser`.
pub const SEARCH_USERS_PATH: &str = "/v1.0/contact/users/search";
/// `POST` path of the SDK's `SearchDepartment`.
pub const SEARCH_DEPARTMENTS_PATH: &str = "/v1.0/contact/departments/search";
/// Largest `size` a contact search accepts (the SDK documents 1..=100; UNVERIFIED bound).
pub const MAX_SEARCH_SIZE: i64 = 100;

/// The directory part of the simulator. Its data is [`Org`]'s; it keeps no state of its own.
pub struct DirectorySim {
    org: Arc<Org>,
}

impl std::fmt::Debug for DirectorySim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySim").finish_non_exhaustive()
    }
}

/// What a handler answers: the `result` payload, or an old-API errcode and message.
type Answer = Result<Value, (i64, String)>;

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string().chars().take(13).collect()
}

fn respond(answer: Answer) -> Response {
    match answer {
        Ok(result) => {
            Json(json!({ "errcode": 0, "errmsg": "ok", "result": result, "request_id": request_id() })).into_response()
        }
        Err((errcode, errmsg)) => {
            Json(json!({ "errcode": errcode, "errmsg": errmsg, "request_id": request_id() })).into_response()
        }
    }
}

fn param_error(detail: &str) -> (i64, String) {
    (40035, format!("不合法的参数: {detail}"))
}

fn no_user(what: &str) -> (i64, String) {
    (ERRCODE_NO_USER, format!("找不到该用户 ({what})"))
}

fn no_dept(dept_id: i64) -> (i64, String) {
    (ERRCODE_NO_DEPT, format!("部门不存在 (dept_id {dept_id})"))
}

fn object_body(body: &[u8]) -> Result<Map<String, Value>, (i64, String)> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(param_error("the body must be a JSON object")),
    }
}

fn str_param<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, (i64, String)> {
    body.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| (40035, format!("缺少参数 {name}")))
}

/// A number, or a string holding one.
fn int_param(body: &Map<String, Value>, name: &str) -> Result<Option<i64>, (i64, String)> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_i64().map(Some).ok_or_else(|| param_error(&format!("{name} must be an integer")))
        }
        Some(Value::String(s)) => {
            s.trim().parse().map(Some).map_err(|_| param_error(&format!("{name} must be an integer")))
        }
        Some(_) => Err(param_error(&format!("{name} must be an integer"))),
    }
}

fn required_int(body: &Map<String, Value>, name: &str) -> Result<i64, (i64, String)> {
    int_param(body, name)?.ok_or_else(|| (40035, format!("缺少参数 {name}")))
}

impl DirectorySim {
    pub fn new(org: Arc<Org>) -> Self {
        Self { org }
    }

    /// Nothing of its own to reset: [`Org::reset`] restores the directory.
    pub fn reset(&self) {}

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(USER_GET_PATH, post(user_get))
            .route(USER_BY_MOBILE_PATH, post(user_by_mobile))
            .route(USER_BY_UNIONID_PATH, post(user_by_unionid))
            .route(USER_LIST_PATH, post(user_list))
            .route(USER_LISTID_PATH, post(user_listid))
            .route(DEPT_GET_PATH, post(dept_get))
            .route(DEPT_LISTSUB_PATH, post(dept_listsub))
            .route(DEPT_LISTSUBID_PATH, post(dept_listsubid))
            .route(DEPT_LISTPARENT_PATH, post(dept_listparent))
            .route(SEARCH_USERS_PATH, post(search_users))
            .route(SEARCH_DEPARTMENTS_PATH, post(search_departments))
            .with_state(self)
    }

    fn department(&self, dept_id: i64) -> Result<SimDepartment, (i64, String)> {
        self.org.department(dept_id).ok_or_else(|| no_dept(dept_id))
    }

    /// A user as `topapi/v2/user/get` shows it.
    fn user_json(&self, user: &SimUser) -> Value {
        let mut dept_order_list = Vec::new();
        let mut leader_in_dept = Vec::new();
        for dept_id in &user.dept_ids {
            let position = self.org.users_in_department(*dept_id).iter().position(|u| u.userid == user.userid);
            let order = position.map_or(0, |p| (p as i64 + 1) * 10);
            dept_order_list.push(json!({ "dept_id": dept_id, "order": order }));
            let leader = self.org.department(*dept_id).is_some_and(|d| d.manager_userids.contains(&user.userid));
            leader_in_dept.push(json!({ "dept_id": dept_id, "leader": leader }));
        }
        let mut value = json!({
            "userid": user.userid,
            "unionid": user.unionid,
            "name": user.name,
            "mobile": user.mobile,
            "state_code": user.state_code,
            "email": user.email,
            "org_email": "",
            "title": user.title,
            "job_number": user.job_number,
            "active": user.active,
            "admin": false,
            "boss": user.manager_userid.is_none(),
            "senior": false,
            "real_authed": true,
            "hide_mobile": false,
            "exclusive_account": false,
            "dept_id_list": user.dept_ids,
            "dept_order_list": dept_order_list,
            "leader_in_dept": leader_in_dept,
            "role_list": [],
            "hired_date": HIRED_DATE_MS,
        });
        if let (Some(manager), Value::Object(map)) = (&user.manager_userid, &mut value) {
            map.insert("manager_userid".to_owned(), json!(manager));
        }
        value
    }

    fn user_get(&self, body: &Map<String, Value>) -> Answer {
        let userid = str_param(body, "userid")?;
        let user = self.org.user(userid).ok_or_else(|| no_user(&format!("userid {userid}")))?;
        Ok(self.user_json(&user))
    }

    fn user_by_mobile(&self, body: &Map<String, Value>) -> Answer {
        let mobile = str_param(body, "mobile")?;
        // `852-98765432`, `+852 98765432` and `98765432` all name the same number.
        let cleaned: String = mobile.chars().filter(|c| c.is_ascii_digit() || *c == '-').collect();
        let user = self
            .org
            .user_by_mobile(&cleaned)
            .or_else(|| {
                let digits: String = mobile.chars().filter(char::is_ascii_digit).collect();
                self.org
                    .users()
                    .into_iter()
                    .find(|u| !u.mobile.is_empty() && format!("{}{}", u.state_code, u.mobile) == digits)
            })
            .ok_or_else(|| no_user("mobile"))?;
        Ok(json!({ "userid": user.userid }))
    }

    fn user_by_unionid(&self, body: &Map<String, Value>) -> Answer {
        let unionid = str_param(body, "unionid")?;
        let user = self.org.user_by_unionid(unionid).ok_or_else(|| no_user("unionid"))?;
        Ok(json!({ "contact_type": 0, "userid": user.userid }))
    }

    /// Direct members only, in userid order; `cursor` is an offset.
    fn user_list(&self, body: &Map<String, Value>) -> Answer {
        let dept_id = required_int(body, "dept_id")?;
        let cursor = int_param(body, "cursor")?.unwrap_or(0);
        let size = required_int(body, "size")?;
        if !(1..=USER_PAGE_SIZE).contains(&size) {
            return Err(param_error(&format!("size must be 1..={USER_PAGE_SIZE}, got {size}")));
        }
        if cursor < 0 {
            return Err(param_error("cursor must not be negative"));
        }
        let dept = self.department(dept_id)?;
        let members = self.org.users_in_department(dept_id);
        let start = usize::try_from(cursor).unwrap_or(usize::MAX).min(members.len());
        let end = start.saturating_add(usize::try_from(size).unwrap_or(0)).min(members.len());
        let list: Vec<Value> = members[start..end]
            .iter()
            .enumerate()
            .map(|(i, user)| {
                let mut value = self.user_json(user);
                if let Value::Object(map) = &mut value {
                    map.insert("leader".to_owned(), json!(dept.manager_userids.contains(&user.userid)));
                    map.insert("dept_order".to_owned(), json!((start + i + 1) as i64 * 10));
                }
                value
            })
            .collect();
        let mut result = json!({ "has_more": end < members.len(), "list": list });
        if end < members.len() {
            result["next_cursor"] = json!(end as i64);
        }
        Ok(result)
    }

    fn user_listid(&self, body: &Map<String, Value>) -> Answer {
        let dept_id = required_int(body, "dept_id")?;
        self.department(dept_id)?;
        let ids: Vec<String> = self.org.users_in_department(dept_id).into_iter().map(|u| u.userid).collect();
        Ok(json!({ "userid_list": ids }))
    }

    fn dept_get(&self, body: &Map<String, Value>) -> Answer {
        let dept_id = required_int(body, "dept_id")?;
        let dept = self.department(dept_id)?;
        let mut value = json!({
            "dept_id": dept.dept_id,
            "name": dept.name,
            "dept_manager_userid_list": dept.manager_userids,
            "order": dept.dept_id,
            "create_dept_group": true,
            "auto_add_user": true,
        });
        if let Some(parent) = dept.parent_id {
            value["parent_id"] = json!(parent);
        }
        Ok(value)
    }

    fn dept_listsub(&self, body: &Map<String, Value>) -> Answer {
        let dept_id = int_param(body, "dept_id")?.unwrap_or(super::org::ROOT_DEPT_ID);
        self.department(dept_id)?;
        let subs: Vec<Value> = self
            .org
            .sub_departments(dept_id)
            .into_iter()
            .map(|d| {
                json!({
                    "dept_id": d.dept_id,
                    "name": d.name,
                    "parent_id": dept_id,
                    "create_dept_group": true,
                    "auto_add_user": true,
                })
            })
            .collect();
        Ok(Value::Array(subs))
    }

    fn dept_listsubid(&self, body: &Map<String, Value>) -> Answer {
        let dept_id = int_param(body, "dept_id")?.unwrap_or(super::org::ROOT_DEPT_ID);
        self.department(dept_id)?;
        let ids: Vec<i64> = self.org.sub_departments(dept_id).into_iter().map(|d| d.dept_id).collect();
        Ok(json!({ "dept_id_list": ids }))
    }

    /// For each of the user's departments, the ids from it up to the root.
    fn dept_listparent(&self, body: &Map<String, Value>) -> Answer {
        let userid = str_param(body, "userid")?;
        let user = self.org.user(userid).ok_or_else(|| no_user(&format!("userid {userid}")))?;
        let parent_list: Vec<Value> = user
            .dept_ids
            .iter()
            .map(|dept_id| {
                let mut path = Vec::new();
                let mut seen = BTreeSet::new();
                let mut next = Some(*dept_id);
                while let Some(id) = next.filter(|id| seen.insert(*id)) {
                    path.push(id);
                    next = self.org.department(id).and_then(|d| d.parent_id);
                }
                json!({ "parent_dept_id_list": path })
            })
            .collect();
        Ok(json!({ "parent_list": parent_list }))
    }
}

/// A new-API contact search refusal: HTTP 400 `{code, message, requestid}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("the body must be a JSON object")]
    NotAnObject,
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{0}")]
    Invalid(String),
}

impl SearchError {
    fn code(&self) -> &'static str {
        match self {
            Self::Missing(_) => "MissingParameter",
            Self::NotAnObject | Self::Invalid(_) => "InvalidParameter",
        }
    }
}

impl IntoResponse for SearchError {
    fn into_response(self) -> Response {
        let requestid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
        let body = json!({ "code": self.code(), "message": self.to_string(), "requestid": requestid });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// `{queryWord, offset, size, fullMatchField}` of a contact search.
#[derive(Debug)]
struct Search {
    word: String,
    full_match: bool,
    offset: usize,
    size: usize,
}

impl Search {
    fn parse(body: &[u8]) -> Result<Self, SearchError> {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body) else {
            return Err(SearchError::NotAnObject);
        };
        let word = body.get("queryWord").and_then(Value::as_str).map(str::trim).unwrap_or("");
        if word.is_empty() {
            return Err(SearchError::Missing("queryWord"));
        }
        let number = |name: &'static str| -> Result<Option<i64>, SearchError> {
            match body.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => {
                    value.as_i64().map(Some).ok_or_else(|| SearchError::Invalid(format!("{name} must be an integer")))
                }
            }
        };
        let offset = number("offset")?.ok_or(SearchError::Missing("offset"))?;
        let size = number("size")?.ok_or(SearchError::Missing("size"))?;
        if offset < 0 {
            return Err(SearchError::Invalid(format!("offset {offset} must not be negative")));
        }
        if !(1..=MAX_SEARCH_SIZE).contains(&size) {
            return Err(SearchError::Invalid(format!("size {size} must be between 1 and {MAX_SEARCH_SIZE}")));
        }
        let full_match = number("fullMatchField")? == Some(1);
        // Both were range-checked above.
        let (offset, size) = (usize::try_from(offset).unwrap_or(0), usize::try_from(size).unwrap_or(1));
        Ok(Self { word: word.to_lowercase(), full_match, offset, size })
    }

    fn matches(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        if self.full_match {
            name == self.word
        } else {
            name.contains(&self.word)
        }
    }

    /// One page of `hits` (in a stable order) as the SDK's `{hasMore, totalCount, list}`.
    fn page(&self, hits: Vec<Value>) -> Value {
        let total = hits.len();
        let list: Vec<Value> = hits.into_iter().skip(self.offset).take(self.size).collect();
        let has_more = self.offset.saturating_add(list.len()) < total;
        json!({ "hasMore": has_more, "totalCount": total, "list": list })
    }
}

impl DirectorySim {
    /// `SearchUser`: active members whose name matches, by userid.
    fn search_users(&self, body: &[u8]) -> Result<Value, SearchError> {
        let search = Search::parse(body)?;
        let hits = self
            .org
            .users()
            .into_iter()
            .filter(|u| u.active && search.matches(&u.name))
            .map(|u| Value::String(u.userid))
            .collect();
        Ok(search.page(hits))
    }

    /// `SearchDepartment`: departments whose name matches, by id.
    fn search_departments(&self, body: &[u8]) -> Result<Value, SearchError> {
        let search = Search::parse(body)?;
        let hits =
            self.org.departments().into_iter().filter(|d| search.matches(&d.name)).map(|d| json!(d.dept_id)).collect();
        Ok(search.page(hits))
    }
}

async fn search_users(State(sim): State<Arc<DirectorySim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = sim.org.authorize_new(&headers, "contact.users.search") {
        return response;
    }
    sim.search_users(&body).map_or_else(IntoResponse::into_response, |page| Json(page).into_response())
}

async fn search_departments(State(sim): State<Arc<DirectorySim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = sim.org.authorize_new(&headers, "contact.departments.search") {
        return response;
    }
    sim.search_departments(&body).map_or_else(IntoResponse::into_response, |page| Json(page).into_response())
}

/// Authorises an old-API call of `api`, reads the body and runs `handle`.
fn serve(
    sim: &DirectorySim,
    query: Option<&str>,
    api: &str,
    body: &[u8],
    handle: fn(&DirectorySim, &Map<String, Value>) -> Answer,
) -> Response {
    if let Err(response) = sim.org.authorize_old(query, api) {
        return response;
    }
    respond(object_body(body).and_then(|body| handle(sim, &body)))
}

macro_rules! handler {
    ($name:ident, $api:literal, $method:ident) => {
        async fn $name(State(sim): State<Arc<DirectorySim>>, RawQuery(query): RawQuery, body: Bytes) -> Response {
            serve(&sim, query.as_deref(), $api, &body, DirectorySim::$method)
        }
    };
}

handler!(user_get, "topapi.v2.user.get", user_get);
handler!(user_by_mobile, "topapi.v2.user.getbymobile", user_by_mobile);
handler!(user_by_unionid, "topapi.user.getbyunionid", user_by_unionid);
handler!(user_list, "topapi.v2.user.list", user_list);
handler!(user_listid, "topapi.user.listid", user_listid);
handler!(dept_get, "topapi.v2.department.get", dept_get);
handler!(dept_listsub, "topapi.v2.department.listsub", dept_listsub);
handler!(dept_listsubid, "topapi.v2.department.listsubid", dept_listsubid);
handler!(dept_listparent, "topapi.v2.department.listparentbyuser", dept_listparent);

/// A loopback server with [`Org`], [`DirectorySim`] and [`super::messages::MessagesSim`], and an
/// [`OpenApi`](crate::dingtalk::openapi::OpenApi) for the seeded app, shared by the client tests
/// of both parts.
#[cfg(test)]
pub(crate) mod harness {
    use super::super::messages::MessagesSim;
    use super::super::org::{Org, SEED_AGENT_ID, SEED_APP_KEY, SEED_APP_SECRET};
    use super::DirectorySim;
    use crate::dingtalk::openapi::{AppCredentials, OpenApi, OpenApiSettings};
    use connect::Clock;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    /// A clock tests move by hand (2026-01-01T00:00Z to start).
    #[derive(Debug)]
    pub(crate) struct TestClock(AtomicI64);

    impl TestClock {
        pub(crate) fn advance_ms(&self, ms: i64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> jiff::Timestamp {
            jiff::Timestamp::from_millisecond(self.0.load(Ordering::SeqCst)).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        }
    }

    pub(crate) struct Harness {
        pub clock: Arc<TestClock>,
        pub org: Arc<Org>,
        pub messages: Arc<MessagesSim>,
        pub url: String,
        pub api: OpenApi,
    }

    impl Harness {
        /// QPS limits off on both sides (the test clock does not move by itself, so the
        /// simulator's 1 s window would never slide).
        pub(crate) async fn start() -> Self {
            let clock = Arc::new(TestClock(AtomicI64::new(1_767_225_600_000)));
            let org = Org::seeded(clock.clone());
            org.set_qps(0);
            let messages = Arc::new(MessagesSim::new(org.clone(), clock.clone()));
            let directory = Arc::new(DirectorySim::new(org.clone()));
            let router = org.clone().router().merge(messages.clone().router()).merge(directory.router());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, router).await });
            let credentials = AppCredentials {
                app_key: SEED_APP_KEY.to_owned(),
                app_secret: SEED_APP_SECRET.to_owned().into(),
                agent_id: Some(SEED_AGENT_ID),
                corp_id: None,
            };
            let settings = OpenApiSettings { qps_per_api: 0, ..OpenApiSettings::with_base(&url) };
            let api = OpenApi::new(credentials, settings, clock.clone()).unwrap();
            Self { clock, org, messages, url, api }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::harness::Harness;
    use crate::dingtalk::directory::{Directory, DirectorySync, ManagerVia, ROOT_DEPT_ID};
    use connect::DeliveryError;
    use serde_json::{json, Value};

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    #[tokio::test]
    async fn full_sync_of_the_seed_matches_the_seed() {
        let h = Harness::start().await;
        let snapshot = DirectorySync::full(&Directory::new(h.api.clone())).await.unwrap();
        let seed_users = h.org.users();
        assert_eq!(snapshot.users.len(), seed_users.len());
        for seed in &seed_users {
            let user = snapshot.user(&seed.userid).unwrap_or_else(|| panic!("{} missing", seed.userid));
            assert_eq!(user.name, seed.name);
            assert_eq!(user.unionid, seed.unionid);
            assert_eq!(
                (user.state_code.as_str(), user.mobile.as_str()),
                (seed.state_code.as_str(), seed.mobile.as_str())
            );
            assert_eq!(user.email, seed.email);
            assert_eq!(user.job_number, seed.job_number);
            assert_eq!(user.title, seed.title);
            assert_eq!(user.dept_id_list, seed.dept_ids);
            assert_eq!(user.manager_userid, seed.manager_userid);
            assert_eq!(user.active, seed.active);
            assert_eq!(user.primary_dept_id(), seed.dept_ids.first().copied());
        }
        let seed_depts = h.org.departments();
        assert_eq!(snapshot.departments.len(), seed_depts.len());
        for seed in &seed_depts {
            let dept = snapshot.department(seed.dept_id).unwrap();
            assert_eq!(dept.name, seed.name);
            assert_eq!(dept.parent_id, seed.parent_id);
            assert_eq!(dept.dept_manager_userid_list, seed.manager_userids);
        }
        // salesmgr0001 is in two departments and appears once; the serialised snapshot keeps
        // no hire date even though the simulator sends one.
        let text = serde_json::to_string(&snapshot).unwrap();
        assert!(!text.contains("hired_date"));
        let in_both = |dept: i64| snapshot.members(dept).iter().any(|u| u.userid == "salesmgr0001");
        assert!(in_both(20003) && in_both(20004));
    }

    #[tokio::test]
    async fn lookups_on_the_synced_seed() {
        let h = Harness::start().await;
        let directory = Directory::new(h.api.clone());
        let snapshot = DirectorySync::full(&directory).await.unwrap();
        assert_eq!(snapshot.by_mobile("852", "9876 5432").unwrap().userid, "manager4711");
        assert_eq!(snapshot.by_email("TM.Chan@example.com.hk").unwrap().userid, "manager4711");
        assert_eq!(snapshot.by_job_number("E1031").unwrap().userid, "staff0815");
        let chain: Vec<_> = snapshot.manager_chain("staff0815");
        let ids: Vec<&str> = chain.iter().map(|l| l.userid.as_str()).collect();
        // Direct manager (also head of Purchasing, listed once), then the root's head.
        assert_eq!(ids, vec!["manager4711", "boss0001"]);
        assert_eq!(chain[1].via, ManagerVia::DepartmentHead { dept_id: ROOT_DEPT_ID });
        // The API lookups agree.
        assert_eq!(directory.user_by_mobile("98765432").await.unwrap(), "manager4711");
        assert_eq!(directory.user_by_mobile("852-98765432").await.unwrap(), "manager4711");
        assert_eq!(directory.user_by_unionid("z21HjQliSzpw0YWCNxmii6u2Os62cZ62iSZ").await.unwrap(), "manager4711");
        let subs = directory.sub_departments(ROOT_DEPT_ID).await.unwrap();
        assert_eq!(subs.len(), 5);
        assert!(subs.iter().all(|d| d.parent_id == Some(ROOT_DEPT_ID)));
    }

    #[tokio::test]
    async fn unknown_user_is_a_permanent_error() {
        let h = Harness::start().await;
        let directory = Directory::new(h.api.clone());
        let err = directory.user("nobody").await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Rejected { detail, .. } if detail.contains("60121")), "{err}");
        let err = directory.user_by_mobile("11111111").await.unwrap_err();
        assert!(matches!(err, DeliveryError::Rejected { .. }));
        let err = directory.department(999).await.unwrap_err();
        assert!(matches!(&err, DeliveryError::Rejected { detail, .. } if detail.contains("60003")), "{err}");
    }

    #[tokio::test]
    async fn user_list_pages_by_one_hundred() {
        let h = Harness::start().await;
        for i in 0..130 {
            let user = json!({"userid": format!("temp{i:03}"), "name": format!("Temp {i}"), "dept_ids": [20005]});
            h.org.put_record("user", user).unwrap();
        }
        let directory = Directory::new(h.api.clone());
        let users = directory.users_in_department(20005).await.unwrap();
        assert_eq!(users.len(), 132);
        let mut ids: Vec<&str> = users.iter().map(|u| u.userid.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 132, "pages must not overlap");
        // The simulator refuses pages above 100, as DingTalk does.
        let err = h
            .api
            .call_old::<_, Value>("/topapi/v2/user/list", &json!({"dept_id": 20005, "cursor": 0, "size": 101}))
            .await
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Rejected { .. }));
    }

    #[tokio::test]
    async fn user_add_org_event_is_applied() {
        let h = Harness::start().await;
        let directory = Directory::new(h.api.clone());
        let mut snapshot = DirectorySync::full(&directory).await.unwrap();
        // The fixture announces manager4711; pretend the snapshot predates them.
        snapshot.users.remove("manager4711");
        let event = fixture("events/http_user_add_org.json");
        let refetch = DirectorySync::apply_event(&mut snapshot, "user_add_org", &event).unwrap();
        DirectorySync::refetch(&directory, &mut snapshot, &refetch).await.unwrap();
        assert_eq!(snapshot.by_job_number("E1024").unwrap().userid, "manager4711");

        // A brand-new member, then a new department and a leaver.
        h.org
            .put_record(
                "user",
                json!({"userid": "new0001", "name": "New Joiner", "dept_ids": [20002], "job_number": "E9001"}),
            )
            .unwrap();
        h.org.put_record("department", json!({"dept_id": 20006, "name": "Logistics", "parent_id": 20005})).unwrap();
        let refetch =
            DirectorySync::apply_event(&mut snapshot, "user_add_org", &json!({"UserId": ["new0001"]})).unwrap();
        DirectorySync::refetch(&directory, &mut snapshot, &refetch).await.unwrap();
        let refetch =
            DirectorySync::apply_event(&mut snapshot, "org_dept_create", &json!({"DeptId": [20006]})).unwrap();
        DirectorySync::refetch(&directory, &mut snapshot, &refetch).await.unwrap();
        assert_eq!(snapshot.by_job_number("E9001").unwrap().dept_id_list, vec![20002]);
        assert_eq!(snapshot.department(20006).unwrap().parent_id, Some(20005));
        let refetch =
            DirectorySync::apply_event(&mut snapshot, "user_leave_org", &json!({"UserId": ["new0001"]})).unwrap();
        assert!(refetch.is_empty());
        assert!(snapshot.user("new0001").is_none());
    }

    /// The new-API contact search the official SDK calls: pages to the end, refusals are HTTP 400
    /// with a code, and the token is checked first.
    #[tokio::test]
    async fn contact_search_pages_and_refuses() {
        let h = Harness::start().await;
        let http = reqwest::Client::new();
        let token: Value = http
            .post(format!("{}/v1.0/oauth2/accessToken", h.url))
            .json(&json!({"appKey": super::super::org::SEED_APP_KEY, "appSecret": super::super::org::SEED_APP_SECRET}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = token["accessToken"].as_str().unwrap().to_owned();
        let search = |path: &'static str, body: Value, token: String| {
            let http = http.clone();
            let url = format!("{}{path}", h.url);
            async move {
                let answer =
                    http.post(url).header("x-acs-dingtalk-access-token", token).json(&body).send().await.unwrap();
                (answer.status().as_u16(), answer.json::<Value>().await.unwrap())
            }
        };
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let (status, page) = search(
                super::SEARCH_USERS_PATH,
                json!({"queryWord": "an", "offset": offset, "size": 2}),
                token.clone(),
            )
            .await;
            assert_eq!(status, 200, "{page}");
            let list = page["list"].as_array().unwrap().clone();
            assert!(list.len() <= 2);
            offset += list.len();
            seen.extend(list);
            if !page["hasMore"].as_bool().unwrap() {
                assert_eq!(page["totalCount"].as_u64().unwrap() as usize, seen.len());
                break;
            }
        }
        assert!(seen.contains(&json!("manager4711")), "Chan Tai Man");
        assert!(seen.len() > 2);

        let (_, depts) = search(
            super::SEARCH_DEPARTMENTS_PATH,
            json!({"queryWord": "sales", "offset": 0, "size": 10}),
            token.clone(),
        )
        .await;
        assert_eq!(depts["list"], json!([20003, 20004]));
        let (_, exact) = search(
            super::SEARCH_DEPARTMENTS_PATH,
            json!({"queryWord": "Sales HK", "offset": 0, "size": 10, "fullMatchField": 1}),
            token.clone(),
        )
        .await;
        assert_eq!(exact["list"], json!([20003]));

        for (body, code) in [
            (json!({"offset": 0, "size": 10}), "MissingParameter"),
            (json!({"queryWord": "a", "offset": 0, "size": 101}), "InvalidParameter"),
            (json!({"queryWord": "a", "offset": -1, "size": 1}), "InvalidParameter"),
        ] {
            let (status, answer) = search(super::SEARCH_USERS_PATH, body, token.clone()).await;
            assert_eq!((status, answer["code"].as_str().unwrap()), (400, code), "{answer}");
        }
        let (status, answer) =
            search(super::SEARCH_USERS_PATH, json!({"queryWord": "a", "offset": 0, "size": 1}), "bogus".to_owned())
                .await;
        assert_eq!((status, answer["code"].as_str().unwrap()), (400, "InvalidAuthentication"));
    }
}
