//! The organisation directory (reference §9): users, departments, and the lookups approver
//! resolution needs (ERP user → DingTalk userid, manager chain, department heads).
//!
//! [`DirectorySnapshot`] is the cached copy the gateway persists; [`DirectorySync::full`]
//! builds it by walking the department tree, and [`DirectorySync::apply_event`] keeps it
//! current between nightly syncs from `user_*` / `org_dept_*` events (events are an
//! accelerator, not the source of truth).
//!
//! Privacy (PDPO/GDPR): only the fields mapping needs are kept (no hired date, avatar,
//! telephone, remarks…), and `Debug` output never shows mobile numbers or e-mail addresses.

use super::openapi::OpenApi;
use super::VENDOR;
use connect::DeliveryError;
use futures::StreamExt;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The root department of every organisation.
pub const ROOT_DEPT_ID: i64 = 1;
/// Largest page `topapi/v2/user/list` serves.
pub const USER_PAGE_SIZE: i64 = 100;

pub(crate) const USER_GET_PATH: &str = "/topapi/v2/user/get";
pub(crate) const USER_BY_MOBILE_PATH: &str = "/topapi/v2/user/getbymobile";
pub(crate) const USER_BY_UNIONID_PATH: &str = "/topapi/user/getbyunionid";
pub(crate) const DEPT_LISTSUB_PATH: &str = "/topapi/v2/department/listsub";
pub(crate) const DEPT_LISTSUBID_PATH: &str = "/topapi/v2/department/listsubid";
pub(crate) const DEPT_GET_PATH: &str = "/topapi/v2/department/get";
pub(crate) const DEPT_LISTPARENT_PATH: &str = "/topapi/v2/department/listparentbyuser";
pub(crate) const USER_LIST_PATH: &str = "/topapi/v2/user/list";
pub(crate) const USER_LISTID_PATH: &str = "/topapi/user/listid";

/// A user as mapping needs it. Field names are DingTalk's (`topapi/v2/user/get`), so the same
/// type reads the API answer and the persisted snapshot; unknown fields are dropped on read.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub userid: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub unionid: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// Without country code; see `state_code`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub mobile: String,
    /// Country calling code of `mobile` (`86` mainland, `852` Hong Kong).
    #[serde(default, deserialize_with = "null_as_default")]
    pub state_code: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub email: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub org_email: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub title: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub job_number: String,
    #[serde(default)]
    pub active: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dept_id_list: Vec<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dept_order_list: Vec<DeptOrder>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub leader_in_dept: Vec<LeaderInDept>,
    /// Direct line manager.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub manager_userid: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub role_list: Vec<Role>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Mobile and e-mail are personal data: never in logs.
        f.debug_struct("User")
            .field("userid", &self.userid)
            .field("name", &self.name)
            .field("title", &self.title)
            .field("job_number", &self.job_number)
            .field("active", &self.active)
            .field("dept_id_list", &self.dept_id_list)
            .field("manager_userid", &self.manager_userid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeptOrder {
    pub dept_id: i64,
    #[serde(default)]
    pub order: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInDept {
    pub dept_id: i64,
    #[serde(default)]
    pub leader: bool,
}

/// An admin-defined role label, mapped to ERP approval roles in configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub group_name: String,
}

impl User {
    /// The department the user is filed under when they are in several: the first of
    /// `dept_order_list`, else the first of `dept_id_list` (reference §9 model notes), so the
    /// choice is the same on every sync.
    pub fn primary_dept_id(&self) -> Option<i64> {
        self.dept_order_list.first().map(|d| d.dept_id).or_else(|| self.dept_id_list.first().copied())
    }
}

/// A department (`topapi/v2/department/get`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub dept_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// `None` for the root.
    #[serde(default, deserialize_with = "zero_as_none")]
    pub parent_id: Option<i64>,
    /// Department heads.
    #[serde(default, deserialize_with = "null_as_default")]
    pub dept_manager_userid_list: Vec<String>,
    #[serde(default)]
    pub order: i64,
}

/// One entry of `topapi/v2/department/listsub` (one level below a department; carries no
/// heads — use `Directory::department` for those).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubDepartment {
    pub dept_id: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "zero_as_none")]
    pub parent_id: Option<i64>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

fn zero_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.filter(|id| *id > 0))
}

// ---------------------------------------------------------------------------------------------
// Snapshot and lookups
// ---------------------------------------------------------------------------------------------

/// How a user ended up in a manager chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum ManagerVia {
    /// The user's `manager_userid`.
    DirectManager,
    /// A head of this department (the user's primary department or one above it).
    DepartmentHead { dept_id: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagerLink {
    pub userid: String,
    pub via: ManagerVia,
}

/// The cached directory. Persist it with serde; refresh it with [`DirectorySync`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorySnapshot {
    pub users: BTreeMap<String, User>,
    pub departments: BTreeMap<i64, Department>,
}

/// Digits only: `+852 9876-5432` → `85298765432`.
fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// DingTalk leaves `state_code` empty or `86` for mainland numbers.
fn country_code(state_code: &str) -> String {
    let code = digits(state_code);
    if code.is_empty() {
        "86".to_owned()
    } else {
        code
    }
}

impl DirectorySnapshot {
    pub fn user(&self, userid: &str) -> Option<&User> {
        self.users.get(userid)
    }

    pub fn department(&self, dept_id: i64) -> Option<&Department> {
        self.departments.get(&dept_id)
    }

    /// By mobile number and country code (`852`, `+852`; empty means mainland `86`). Spaces,
    /// dashes and a leading `+` are ignored.
    pub fn by_mobile(&self, state_code: &str, mobile: &str) -> Option<&User> {
        let (code, number) = (country_code(state_code), digits(mobile));
        if number.is_empty() {
            return None;
        }
        self.users.values().find(|u| digits(&u.mobile) == number && country_code(&u.state_code) == code)
    }

    /// By e-mail (`email` or `org_email`), case-insensitive.
    pub fn by_email(&self, email: &str) -> Option<&User> {
        let wanted = email.trim();
        if wanted.is_empty() {
            return None;
        }
        self.users.values().find(|u| u.email.eq_ignore_ascii_case(wanted) || u.org_email.eq_ignore_ascii_case(wanted))
    }

    /// By employee number (exact, surrounding blanks ignored).
    pub fn by_job_number(&self, job_number: &str) -> Option<&User> {
        let wanted = job_number.trim();
        if wanted.is_empty() {
            return None;
        }
        self.users.values().find(|u| u.job_number.trim() == wanted)
    }

    pub fn by_unionid(&self, unionid: &str) -> Option<&User> {
        if unionid.is_empty() {
            return None;
        }
        self.users.values().find(|u| u.unionid == unionid)
    }

    /// Users whose `dept_id_list` holds `dept_id` (direct members only), by userid.
    pub fn members(&self, dept_id: i64) -> Vec<&User> {
        self.users.values().filter(|u| u.dept_id_list.contains(&dept_id)).collect()
    }

    /// Who approves for `userid`, nearest first: the direct manager, then the heads of the
    /// user's primary department and of each department above it up to the root. The user
    /// and repeats are left out. Empty for an unknown user.
    pub fn manager_chain(&self, userid: &str) -> Vec<ManagerLink> {
        let Some(user) = self.users.get(userid) else {
            return Vec::new();
        };
        let mut seen = BTreeSet::from([userid.to_owned()]);
        let mut chain = Vec::new();
        if let Some(manager) = &user.manager_userid {
            if seen.insert(manager.clone()) {
                chain.push(ManagerLink { userid: manager.clone(), via: ManagerVia::DirectManager });
            }
        }
        let mut visited = BTreeSet::new();
        let mut next = user.primary_dept_id();
        // `visited` stops a corrupt parent cycle from looping forever.
        while let Some(dept_id) = next.filter(|id| visited.insert(*id)) {
            let Some(dept) = self.departments.get(&dept_id) else {
                break;
            };
            for head in &dept.dept_manager_userid_list {
                if seen.insert(head.clone()) {
                    chain.push(ManagerLink { userid: head.clone(), via: ManagerVia::DepartmentHead { dept_id } });
                }
            }
            next = dept.parent_id;
        }
        chain
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// What a directory event left stale: fetch these again (`DirectorySync::refetch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refetch {
    pub users: BTreeSet<String>,
    pub departments: BTreeSet<i64>,
}

impl Refetch {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.departments.is_empty()
    }
}

/// A directory event that cannot be applied; a full sync repairs whatever it was about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryEventError {
    #[error("directory event {event_type} carries no `{field}` list; run a full directory sync instead")]
    MissingIds { event_type: String, field: &'static str },
    #[error("directory event {event_type} has a malformed `{field}` entry ({detail}); run a full directory sync")]
    BadId { event_type: String, field: &'static str, detail: String },
}

/// Reads the id list of a contact event. HTTP callbacks spell it `UserId` / `DeptId`; other
/// transports may use camelCase, so both are accepted. Ids may be strings or numbers.
fn event_ids(event_type: &str, payload: &Value, field: &'static str) -> Result<Vec<String>, DirectoryEventError> {
    let camel = format!("{}{}", field[..1].to_ascii_lowercase(), &field[1..]);
    let Some(list) = payload.get(field).or_else(|| payload.get(&camel)) else {
        return Err(DirectoryEventError::MissingIds { event_type: event_type.to_owned(), field });
    };
    let items = match list {
        Value::Array(items) => items.clone(),
        // A single id instead of a list.
        single => vec![single.clone()],
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) if !s.is_empty() => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(DirectoryEventError::BadId {
                event_type: event_type.to_owned(),
                field,
                detail: format!("expected a string or number, got {other}"),
            }),
        })
        .collect()
}

fn event_dept_ids(event_type: &str, payload: &Value) -> Result<Vec<i64>, DirectoryEventError> {
    event_ids(event_type, payload, "DeptId")?
        .into_iter()
        .map(|id| {
            id.parse::<i64>().map_err(|_| DirectoryEventError::BadId {
                event_type: event_type.to_owned(),
                field: "DeptId",
                detail: format!("`{id}` is not a department id"),
            })
        })
        .collect()
}

/// Applies a contact event to `snapshot` (see [`DirectorySync::apply_event`]).
pub(crate) fn apply_event(
    snapshot: &mut DirectorySnapshot,
    event_type: &str,
    payload: &Value,
) -> Result<Refetch, DirectoryEventError> {
    let mut refetch = Refetch::default();
    match event_type {
        "user_add_org" | "user_modify_org" | "user_active_org" | "user_dept_change" => {
            refetch.users.extend(event_ids(event_type, payload, "UserId")?);
        }
        "user_leave_org" => {
            // Gone users cannot be fetched; drop them now.
            for userid in event_ids(event_type, payload, "UserId")? {
                snapshot.users.remove(&userid);
            }
        }
        "org_dept_create" | "org_dept_modify" => {
            refetch.departments.extend(event_dept_ids(event_type, payload)?);
        }
        "org_dept_remove" => {
            for dept_id in event_dept_ids(event_type, payload)? {
                snapshot.departments.remove(&dept_id);
            }
        }
        other => {
            tracing::debug!(event_type = other, "Not a directory event; the snapshot is unchanged.");
        }
    }
    Ok(refetch)
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Users fetched at once during a full sync: well under the 20 QPS per API that
/// [`OpenApi`] paces anyway, so a sync does not starve other calls of the same app.
const SYNC_CONCURRENCY: usize = 4;
/// Pages followed for one department before giving up (100 users each).
const MAX_USER_PAGES: usize = 10_000;

/// Old-API envelope: the payload is in `result`.
#[derive(Debug, Deserialize)]
struct Envelope<T> {
    result: T,
}

#[derive(Debug, Serialize)]
struct UserRequest<'a> {
    userid: &'a str,
    language: &'a str,
}

#[derive(Debug, Serialize)]
struct DeptRequest<'a> {
    dept_id: i64,
    language: &'a str,
}

#[derive(Debug, Serialize)]
struct UserListRequest<'a> {
    dept_id: i64,
    cursor: i64,
    size: i64,
    language: &'a str,
}

#[derive(Debug, Deserialize)]
struct UserPage {
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    next_cursor: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    list: Vec<User>,
}

#[derive(Debug, Deserialize)]
struct UseridResult {
    userid: String,
}

#[derive(Debug, Deserialize)]
struct UnionidResult {
    userid: String,
    #[serde(default)]
    contact_type: i64,
}

/// Directory reads over one app's [`OpenApi`] (old-API `topapi`, reference §9). Contact APIs
/// do not count against the monthly quota.
#[derive(Debug, Clone)]
pub struct Directory {
    api: OpenApi,
    language: String,
}

fn rejected(detail: String) -> DeliveryError {
    DeliveryError::Rejected { vendor: VENDOR, detail }
}

impl Directory {
    /// Names in Chinese (`zh_CN`), DingTalk's default.
    pub fn new(api: OpenApi) -> Self {
        Self { api, language: "zh_CN".to_owned() }
    }

    /// `zh_CN` or `en_US`: the language of department names.
    #[must_use]
    pub fn with_language(mut self, language: &str) -> Self {
        language.clone_into(&mut self.language);
        self
    }

    pub fn api(&self) -> &OpenApi {
        &self.api
    }

    /// `topapi/v2/user/get`. An unknown userid is a permanent error (errcode 60121).
    pub async fn user(&self, userid: &str) -> Result<User, DeliveryError> {
        let body = UserRequest { userid, language: &self.language };
        let answer: Envelope<User> = self.api.call_old(USER_GET_PATH, &body).await?;
        Ok(answer.result)
    }

    /// `topapi/v2/user/getbymobile`: the **userid** of the member with this mobile number
    /// (needs the extra mobile permission; non-mainland numbers may need the country code,
    /// UNVERIFIED in which form).
    pub async fn user_by_mobile(&self, mobile: &str) -> Result<String, DeliveryError> {
        let answer: Envelope<UseridResult> =
            self.api.call_old(USER_BY_MOBILE_PATH, &serde_json::json!({ "mobile": mobile })).await?;
        Ok(answer.result.userid)
    }

    /// `topapi/user/getbyunionid`: the **userid** of the member with this unionid. An external
    /// contact (not a member) is a permanent error: no message or approval API takes it.
    pub async fn user_by_unionid(&self, unionid: &str) -> Result<String, DeliveryError> {
        let answer: Envelope<UnionidResult> =
            self.api.call_old(USER_BY_UNIONID_PATH, &serde_json::json!({ "unionid": unionid })).await?;
        if answer.result.contact_type != 0 {
            return Err(rejected(format!(
                "the unionid belongs to an external contact (userid {}), not a member of the organisation",
                answer.result.userid
            )));
        }
        Ok(answer.result.userid)
    }

    /// `topapi/v2/department/listsub`: the departments one level below `dept_id` (root = 1).
    pub async fn sub_departments(&self, dept_id: i64) -> Result<Vec<SubDepartment>, DeliveryError> {
        let body = DeptRequest { dept_id, language: &self.language };
        let answer: Envelope<Option<Vec<SubDepartment>>> = self.api.call_old(DEPT_LISTSUB_PATH, &body).await?;
        Ok(answer.result.unwrap_or_default())
    }

    /// `topapi/v2/department/get`, with the department heads.
    pub async fn department(&self, dept_id: i64) -> Result<Department, DeliveryError> {
        let body = DeptRequest { dept_id, language: &self.language };
        let answer: Envelope<Department> = self.api.call_old(DEPT_GET_PATH, &body).await?;
        Ok(answer.result)
    }

    /// `topapi/v2/user/list`: the direct members of `dept_id`, every page (100 a page). List
    /// entries may lack fields `user` returns (manager, order, roles); [`DirectorySync::full`]
    /// fetches each user in full.
    pub async fn users_in_department(&self, dept_id: i64) -> Result<Vec<User>, DeliveryError> {
        let mut users = Vec::new();
        let mut cursor = 0;
        for _ in 0..MAX_USER_PAGES {
            let body = UserListRequest { dept_id, cursor, size: USER_PAGE_SIZE, language: &self.language };
            let page: Envelope<UserPage> = self.api.call_old(USER_LIST_PATH, &body).await?;
            let page = page.result;
            users.extend(page.list);
            if !page.has_more {
                return Ok(users);
            }
            match page.next_cursor {
                Some(next) if next > cursor => cursor = next,
                // A cursor that does not move would page forever.
                other => {
                    return Err(DeliveryError::Server {
                        vendor: VENDOR,
                        status: 200,
                        detail: format!(
                            "POST {USER_LIST_PATH}: dept {dept_id} says has_more with next_cursor {other:?} after \
                             cursor {cursor}"
                        ),
                    })
                }
            }
        }
        Err(rejected(format!("POST {USER_LIST_PATH}: dept {dept_id} has more than {MAX_USER_PAGES} pages of users")))
    }
}

/// Builds and refreshes a [`DirectorySnapshot`].
#[derive(Debug, Clone, Copy)]
pub struct DirectorySync;

impl DirectorySync {
    /// Walks the department tree from the root (`department` + `sub_departments`), lists every
    /// department's members, and fetches each distinct user once in full (a user in several
    /// departments appears once).
    pub async fn full(directory: &Directory) -> Result<DirectorySnapshot, DeliveryError> {
        let mut snapshot = DirectorySnapshot::default();
        let mut queue = std::collections::VecDeque::from([ROOT_DEPT_ID]);
        while let Some(dept_id) = queue.pop_front() {
            if snapshot.departments.contains_key(&dept_id) {
                continue;
            }
            let dept = directory.department(dept_id).await?;
            snapshot.departments.insert(dept_id, dept);
            for sub in directory.sub_departments(dept_id).await? {
                if !snapshot.departments.contains_key(&sub.dept_id) {
                    queue.push_back(sub.dept_id);
                }
            }
        }
        let mut userids = BTreeSet::new();
        for dept_id in snapshot.departments.keys() {
            userids.extend(directory.users_in_department(*dept_id).await?.into_iter().map(|u| u.userid));
        }
        let fetched: Vec<Result<User, DeliveryError>> =
            // Owned ids: a closure over `&String` makes this future not provably `Send` for
            // every lifetime, so it could not run inside `tokio::spawn`.
            futures::stream::iter(userids.into_iter().map(|userid| async move { directory.user(&userid).await }))
                .buffer_unordered(SYNC_CONCURRENCY)
                .collect()
                .await;
        for user in fetched {
            let user = user?;
            snapshot.users.insert(user.userid.clone(), user);
        }
        tracing::debug!(
            app_key = %directory.api().app_key(),
            departments = snapshot.departments.len(),
            users = snapshot.users.len(),
            "DingTalk directory synchronised."
        );
        Ok(snapshot)
    }

    /// Applies a contact event (`user_add_org`, `user_modify_org`, `user_leave_org`,
    /// `org_dept_create`, `org_dept_modify`, `org_dept_remove`; others are ignored). Leavers
    /// and removed departments are dropped at once; added or changed ones are returned for
    /// [`DirectorySync::refetch`]. `payload` is the event body (`UserId` / `DeptId` lists).
    pub fn apply_event(
        snapshot: &mut DirectorySnapshot,
        event_type: &str,
        payload: &Value,
    ) -> Result<Refetch, DirectoryEventError> {
        apply_event(snapshot, event_type, payload)
    }

    /// Fetches what an event left stale and stores it in `snapshot`.
    pub async fn refetch(
        directory: &Directory,
        snapshot: &mut DirectorySnapshot,
        refetch: &Refetch,
    ) -> Result<(), DeliveryError> {
        for dept_id in &refetch.departments {
            let dept = directory.department(*dept_id).await?;
            snapshot.departments.insert(dept.dept_id, dept);
        }
        for userid in &refetch.users {
            let user = directory.user(userid).await?;
            snapshot.users.insert(user.userid.clone(), user);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    fn user(userid: &str, manager: Option<&str>, depts: &[i64]) -> User {
        User {
            userid: userid.to_owned(),
            unionid: format!("union-{userid}"),
            name: userid.to_uppercase(),
            mobile: String::new(),
            state_code: String::new(),
            email: String::new(),
            org_email: String::new(),
            title: String::new(),
            job_number: String::new(),
            active: true,
            dept_id_list: depts.to_vec(),
            dept_order_list: depts.iter().map(|d| DeptOrder { dept_id: *d, order: 0 }).collect(),
            leader_in_dept: Vec::new(),
            manager_userid: manager.map(str::to_owned),
            role_list: Vec::new(),
        }
    }

    fn dept(dept_id: i64, parent: Option<i64>, heads: &[&str]) -> Department {
        Department {
            dept_id,
            name: format!("dept {dept_id}"),
            parent_id: parent,
            dept_manager_userid_list: heads.iter().map(|h| (*h).to_owned()).collect(),
            order: 0,
        }
    }

    fn snapshot() -> DirectorySnapshot {
        let mut s = DirectorySnapshot::default();
        for d in [dept(1, None, &["boss"]), dept(20, Some(1), &["head20"]), dept(21, Some(20), &["head21", "clerk"])] {
            s.departments.insert(d.dept_id, d);
        }
        let mut clerk = user("clerk", Some("lead"), &[21]);
        clerk.mobile = "9876 5432".to_owned();
        clerk.state_code = "852".to_owned();
        clerk.email = "Clerk@Example.com.hk".to_owned();
        clerk.job_number = "E1024".to_owned();
        let mut mainland = user("ml", None, &[20]);
        mainland.mobile = "13800000000".to_owned();
        for u in [clerk, mainland, user("lead", Some("head20"), &[21]), user("boss", None, &[1])] {
            s.users.insert(u.userid.clone(), u);
        }
        s
    }

    #[test]
    fn user_get_fixture_reads_only_mapping_fields() {
        let body = fixture("openapi/response_examples.json");
        let result = &body["old_api_oapi_dingtalk_com"]["user_get_ok"]["body"]["result"];
        let user: User = serde_json::from_value(result.clone()).unwrap();
        assert_eq!(user.userid, "manager4711");
        assert_eq!(user.state_code, "852");
        assert_eq!(user.manager_userid.as_deref(), Some("boss0001"));
        assert_eq!(user.dept_id_list, vec![1, 20001]);
        // Primary department: first of dept_order_list, not of dept_id_list.
        assert_eq!(user.primary_dept_id(), Some(20001));
        assert_eq!(user.role_list[0].name, "Purchasing Approver");
        let stored = serde_json::to_value(&user).unwrap();
        assert!(stored.get("hired_date").is_none(), "hired_date must not be kept: {stored}");
        assert!(stored.get("real_authed").is_none());
        let debug = format!("{user:?}");
        assert!(!debug.contains("98765432") && !debug.contains("example.com.hk"), "{debug}");
    }

    #[test]
    fn department_fixtures_read() {
        let body = fixture("openapi/response_examples.json");
        let old = &body["old_api_oapi_dingtalk_com"];
        let dept: Department = serde_json::from_value(old["department_get_ok"]["body"]["result"].clone()).unwrap();
        assert_eq!(dept.parent_id, Some(1));
        assert_eq!(dept.dept_manager_userid_list, vec!["boss0001"]);
        let subs: Vec<SubDepartment> =
            serde_json::from_value(old["department_listsub_ok"]["body"]["result"].clone()).unwrap();
        assert_eq!(subs.iter().map(|d| d.dept_id).collect::<Vec<_>>(), vec![20001, 20002]);
        let root: Department = serde_json::from_value(json!({"dept_id": 1, "name": "Org", "parent_id": 0})).unwrap();
        assert_eq!(root.parent_id, None);
    }

    #[test]
    fn primary_department_falls_back_to_dept_id_list() {
        let mut u = user("x", None, &[]);
        u.dept_id_list = vec![30, 20];
        assert_eq!(u.primary_dept_id(), Some(30));
        u.dept_id_list.clear();
        assert_eq!(u.primary_dept_id(), None);
    }

    #[test]
    fn lookups_by_mobile_email_and_job_number() {
        let s = snapshot();
        assert_eq!(s.by_mobile("852", "98765432").map(|u| u.userid.as_str()), Some("clerk"));
        assert_eq!(s.by_mobile("+852", "9876-5432").map(|u| u.userid.as_str()), Some("clerk"));
        // Same digits, other country: not the same person.
        assert!(s.by_mobile("86", "98765432").is_none());
        // Empty state_code is mainland.
        assert_eq!(s.by_mobile("86", "138 0000 0000").map(|u| u.userid.as_str()), Some("ml"));
        assert_eq!(s.by_mobile("", "13800000000").map(|u| u.userid.as_str()), Some("ml"));
        assert!(s.by_mobile("852", "").is_none());
        assert_eq!(s.by_email("clerk@example.COM.hk").map(|u| u.userid.as_str()), Some("clerk"));
        assert!(s.by_email("").is_none(), "users without e-mail must not match an empty query");
        assert_eq!(s.by_job_number(" E1024 ").map(|u| u.userid.as_str()), Some("clerk"));
        assert!(s.by_job_number("").is_none());
        assert_eq!(s.by_unionid("union-boss").map(|u| u.userid.as_str()), Some("boss"));
        assert_eq!(s.members(21).len(), 2);
    }

    #[test]
    fn manager_chain_is_direct_manager_then_heads_upward_without_self_or_repeats() {
        let s = snapshot();
        let chain = s.manager_chain("clerk");
        let ids: Vec<&str> = chain.iter().map(|l| l.userid.as_str()).collect();
        // clerk heads dept 21 too but is left out; head21 from 21, head20 from 20, boss from 1.
        assert_eq!(ids, vec!["lead", "head21", "head20", "boss"]);
        assert_eq!(chain[0].via, ManagerVia::DirectManager);
        assert_eq!(chain[1].via, ManagerVia::DepartmentHead { dept_id: 21 });
        // lead's direct manager head20 appears once, as direct manager.
        let lead: Vec<_> = s.manager_chain("lead");
        assert_eq!(lead[0], ManagerLink { userid: "head20".to_owned(), via: ManagerVia::DirectManager });
        assert_eq!(lead.iter().filter(|l| l.userid == "head20").count(), 1);
        assert!(s.manager_chain("boss").is_empty());
        assert!(s.manager_chain("nobody").is_empty());
    }

    #[test]
    fn manager_chain_survives_a_parent_cycle() {
        let mut s = snapshot();
        s.departments.insert(1, dept(1, Some(21), &["boss"]));
        assert_eq!(s.manager_chain("clerk").len(), 4);
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let s = snapshot();
        let text = serde_json::to_string(&s).unwrap();
        let back: DirectorySnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn user_add_org_fixture_asks_for_a_refetch() {
        let mut s = snapshot();
        let payload = fixture("events/http_user_add_org.json");
        let event_type = payload["EventType"].as_str().unwrap().to_owned();
        let refetch = apply_event(&mut s, &event_type, &payload).unwrap();
        assert_eq!(refetch.users, BTreeSet::from(["manager4711".to_owned()]));
        assert!(refetch.departments.is_empty());
    }

    #[test]
    fn leave_and_remove_events_drop_entries_without_refetch() {
        let mut s = snapshot();
        let r = apply_event(&mut s, "user_leave_org", &json!({"UserId": ["clerk"]})).unwrap();
        assert!(r.is_empty());
        assert!(s.user("clerk").is_none());
        let r = apply_event(&mut s, "org_dept_remove", &json!({"DeptId": [21]})).unwrap();
        assert!(r.is_empty());
        assert!(s.department(21).is_none());
        let r = apply_event(&mut s, "org_dept_modify", &json!({"deptId": ["20"]})).unwrap();
        assert_eq!(r.departments, BTreeSet::from([20]));
        let r = apply_event(&mut s, "bpms_task_change", &json!({})).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn malformed_events_are_errors() {
        let mut s = snapshot();
        assert!(matches!(
            apply_event(&mut s, "user_modify_org", &json!({"CorpId": "x"})),
            Err(DirectoryEventError::MissingIds { field: "UserId", .. })
        ));
        assert!(matches!(
            apply_event(&mut s, "org_dept_create", &json!({"DeptId": ["abc"]})),
            Err(DirectoryEventError::BadId { .. })
        ));
    }
}
