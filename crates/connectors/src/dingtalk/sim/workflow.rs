//! DingTalk simulator, OA approval part (reference §5, §10 item 8).
//!
//! Routes (new API, token in `x-acs-dingtalk-access-token`, checked by `Org::authorize_new`):
//! - `POST /v1.0/workflow/processInstances` start → `{instanceId}`
//! - `GET  /v1.0/workflow/processInstances?processInstanceId=` → `{success, result{…}}`
//! - `POST /v1.0/workflow/processInstances/execute` → `{success, result:true}`
//! - `POST /v1.0/workflow/processInstances/terminate` → `{success, result:true}`
//! - `POST /v1.0/workflow/processes/instanceIds/query` → `{success, result{list, nextToken}}`
//! - `GET  /v1.0/workflow/forms/schemas/processCodes?processCode=` → the template's components
//!
//! Approver nodes come from the start request (`AND`: all must agree, `OR`: the first to act
//! decides, `NONE`: exactly one approver) and run in order; without any, the originator's direct
//! manager is the single approver. A refusal finishes the instance with `refuse`.
//!
//! Events go out through the `EventRouter` in DingTalk's order: instance `start`, then task
//! `start` per approver of the first node; on each action the task `finish` (with result and
//! remark), the `cancel` of tasks that no longer matter, then either the next node's task starts
//! or the instance `finish`; terminate cancels the running tasks, then instance `terminate`.
//!
//! Error `code`s are the simulator's own (DingTalk's codes for these cases are UNVERIFIED); all
//! are HTTP 400 with `{code, message, requestid}` so a client treats them as permanent.

use super::events::EventRouter;
use super::org::Org;
use crate::dingtalk::workflow::{
    ActionType, ApprovalResult, Approver, CcPosition, FormComponentValue, InstanceStatus, ListInstanceIds,
    StartProcessInstance, TaskStatus, INSTANCE_CHANGE, TASK_CHANGE,
};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use connect::Clock;
use jiff::Timestamp;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sim::SimError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Seeded template: purchase requisitions.
pub const PURCHASE_REQ: &str = "PROC-DB-PURCHASE-REQ";
/// Seeded template: payment instructions.
pub const PAYMENT: &str = "PROC-DB-PAYMENT";
/// Largest `maxResults` of the id query (§5.2).
pub const MAX_RESULTS: u32 = 20;
/// First task id after a reset (int64 ids like DingTalk's).
const FIRST_TASK_ID: i64 = 80_000_000_001;

/// One component of a simulated approval template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimFormComponent {
    /// e.g. `TextField-PO01`.
    pub id: String,
    /// The label clients match by `name`.
    pub label: String,
    /// `TextField`, `TextareaField`, `NumberField`, `MoneyField`, `DDDateField`, `TableField`, ….
    pub component_type: String,
    #[serde(default)]
    pub required: bool,
}

impl SimFormComponent {
    fn new(id: &str, label: &str, component_type: &str, required: bool) -> Self {
        Self { id: id.to_owned(), label: label.to_owned(), component_type: component_type.to_owned(), required }
    }
}

/// A simulated approval template (`processCode`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimProcess {
    pub process_code: String,
    pub name: String,
    #[serde(default)]
    pub components: Vec<SimFormComponent>,
}

impl SimProcess {
    /// [`PURCHASE_REQ`] "Purchase requisition" and [`PAYMENT`] "Payment instruction".
    pub fn seeded() -> Vec<Self> {
        vec![
            Self {
                process_code: PURCHASE_REQ.to_owned(),
                name: "Purchase requisition".to_owned(),
                components: vec![
                    SimFormComponent::new("TextField-PO01", "PO Number", "TextField", true),
                    SimFormComponent::new("TextField-SUP1", "Supplier", "TextField", false),
                    SimFormComponent::new("MoneyField-AMT1", "Amount (HKD)", "MoneyField", true),
                    SimFormComponent::new("DDDateField-NB01", "Needed by", "DDDateField", false),
                    SimFormComponent::new("TableField-ITM1", "Items", "TableField", false),
                    SimFormComponent::new("TextareaField-RS1", "Reason", "TextareaField", false),
                ],
            },
            Self {
                process_code: PAYMENT.to_owned(),
                name: "Payment instruction".to_owned(),
                components: vec![
                    SimFormComponent::new("TextField-PAY1", "Payee", "TextField", true),
                    SimFormComponent::new("MoneyField-AMT1", "Amount (HKD)", "MoneyField", true),
                    SimFormComponent::new("TextField-INV1", "Invoice number", "TextField", false),
                    SimFormComponent::new("DDDateField-DUE1", "Due date", "DDDateField", false),
                    SimFormComponent::new("TextareaField-RM1", "Remarks", "TextareaField", false),
                ],
            },
        ]
    }

    fn component(&self, value: &crate::dingtalk::workflow::FormValue) -> Option<&SimFormComponent> {
        match value.id.as_deref().filter(|id| !id.is_empty()) {
            Some(id) => self.components.iter().find(|c| c.id == id),
            None => self.components.iter().find(|c| c.label == value.name),
        }
    }
}

/// Why a workflow call was refused; [`WorkflowError::code`] is the answer's `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("user `{0}` does not exist in this organisation or has left")]
    UnknownUser(String),
    #[error("processCode `{0}` does not exist")]
    UnknownProcess(String),
    #[error("approvers: {0}")]
    BadApprovers(String),
    #[error("formComponentValues: {0}")]
    BadForm(String),
    #[error("process instance `{0}` does not exist")]
    UnknownInstance(String),
    #[error("task {task_id} does not exist in process instance `{instance_id}`")]
    UnknownTask { instance_id: String, task_id: i64 },
    #[error("task {task_id} belongs to `{owner}`, not to `{actioner}`")]
    NotTaskOwner { task_id: i64, owner: String, actioner: String },
    #[error("task {task_id} is {status}, only a RUNNING task can be executed")]
    TaskNotRunning { task_id: i64, status: String },
    #[error("process instance `{instance_id}` is {status}, not RUNNING")]
    InstanceNotRunning { instance_id: String, status: String },
    #[error("{0}")]
    Invalid(String),
}

impl WorkflowError {
    /// The answer's `code` (simulator names; DingTalk's are UNVERIFIED).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing(_) => "MissingParameter",
            Self::UnknownUser(_) => "InvalidParameter.UserNotExist",
            Self::UnknownProcess(_) => "InvalidParameter.ProcessCodeNotExist",
            Self::BadApprovers(_) => "InvalidParameter.Approvers",
            Self::BadForm(_) => "InvalidParameter.FormComponentValues",
            Self::UnknownInstance(_) => "InvalidParameter.ProcessInstanceNotExist",
            Self::UnknownTask { .. } => "InvalidParameter.TaskNotExist",
            Self::NotTaskOwner { .. } => "InvalidParameter.NotTaskOwner",
            Self::TaskNotRunning { .. } => "InvalidParameter.TaskNotRunning",
            Self::InstanceNotRunning { .. } => "InvalidParameter.InstanceNotRunning",
            Self::Invalid(_) => "InvalidParameter",
        }
    }
}

/// What the workflow needs to know about a user.
#[derive(Debug, Clone)]
struct Person {
    name: String,
    active: bool,
    manager: Option<String>,
    dept_ids: Vec<i64>,
}

/// Org lookups the state machine needs, resolved by the caller.
struct Directory<'a> {
    user: &'a dyn Fn(&str) -> Option<Person>,
    dept_name: &'a dyn Fn(i64) -> Option<String>,
}

impl Directory<'_> {
    fn active_user(&self, userid: &str) -> Result<Person, WorkflowError> {
        (self.user)(userid).filter(|p| p.active).ok_or_else(|| WorkflowError::UnknownUser(userid.to_owned()))
    }
}

/// An event to publish: type and payload (without `EventType`/`corpId`).
type Emit = (&'static str, Value);

#[derive(Debug, Clone)]
struct Node {
    action_type: ActionType,
    user_ids: Vec<String>,
    activity_id: String,
    activity_name: String,
}

#[derive(Debug, Clone)]
struct TaskState {
    task_id: i64,
    user_id: String,
    node: usize,
    status: TaskStatus,
    result: ApprovalResult,
    create_ms: i64,
    finish_ms: Option<i64>,
    remark: String,
}

/// One `operationRecords` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordView {
    pub user_id: String,
    pub date_ms: i64,
    /// `START_PROCESS_INSTANCE`, `EXECUTE_TASK_NORMAL`, `TERMINATE_PROCESS_INSTANCE`.
    pub kind: &'static str,
    /// `NONE`, `AGREE`, `REFUSE`.
    pub result: &'static str,
    pub remark: String,
    pub show_name: String,
    pub activity_id: String,
}

#[derive(Debug, Clone)]
struct InstanceState {
    id: String,
    seq: u64,
    app_key: String,
    corp_id: String,
    process_code: String,
    process_name: String,
    title: String,
    business_id: String,
    originator: String,
    originator_name: String,
    dept_id: i64,
    dept_name: String,
    status: InstanceStatus,
    result: ApprovalResult,
    create_ms: i64,
    finish_ms: Option<i64>,
    nodes: Vec<Node>,
    tasks: Vec<TaskState>,
    form: Vec<FormComponentValue>,
    cc_user_ids: Vec<String>,
    cc_position: Option<CcPosition>,
    records: Vec<RecordView>,
}

/// One task as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskView {
    pub instance_id: String,
    pub task_id: i64,
    pub user_id: String,
    pub status: TaskStatus,
    pub result: ApprovalResult,
    pub activity_id: String,
    pub activity_name: String,
    pub create_ms: i64,
    pub finish_ms: Option<i64>,
    pub remark: String,
    /// The instance's title, process and originator, so a task list needs no second lookup.
    pub title: String,
    pub process_code: String,
    pub process_name: String,
    pub originator_user_id: String,
    pub form: Vec<FormComponentValue>,
}

/// One instance as the UI and tests see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    pub instance_id: String,
    pub app_key: String,
    pub process_code: String,
    pub process_name: String,
    pub title: String,
    pub business_id: String,
    pub originator_user_id: String,
    pub originator_name: String,
    pub originator_dept_id: i64,
    pub status: InstanceStatus,
    pub result: ApprovalResult,
    pub create_ms: i64,
    pub finish_ms: Option<i64>,
    pub approvers: Vec<Approver>,
    pub cc_user_ids: Vec<String>,
    pub cc_position: Option<CcPosition>,
    pub form: Vec<FormComponentValue>,
    pub tasks: Vec<TaskView>,
    pub records: Vec<RecordView>,
}

/// DingTalk shows times in the GET answer at minute precision (`2026-01-01T06:26Z`).
fn api_time(ms: i64) -> String {
    Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%dT%H:%MZ").to_string()).unwrap_or_default()
}

fn random_alnum(len: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

fn result_word(result: &ApprovalResult) -> &'static str {
    match result {
        ApprovalResult::Agree => "AGREE",
        ApprovalResult::Refuse => "REFUSE",
        ApprovalResult::Redirected => "REDIRECTED",
        _ => "NONE",
    }
}

impl InstanceState {
    fn task_view(&self, task: &TaskState) -> TaskView {
        let node = &self.nodes[task.node];
        TaskView {
            instance_id: self.id.clone(),
            task_id: task.task_id,
            user_id: task.user_id.clone(),
            status: task.status.clone(),
            result: task.result.clone(),
            activity_id: node.activity_id.clone(),
            activity_name: node.activity_name.clone(),
            create_ms: task.create_ms,
            finish_ms: task.finish_ms,
            remark: task.remark.clone(),
            title: self.title.clone(),
            process_code: self.process_code.clone(),
            process_name: self.process_name.clone(),
            originator_user_id: self.originator.clone(),
            form: self.form.clone(),
        }
    }

    fn view(&self) -> InstanceView {
        InstanceView {
            instance_id: self.id.clone(),
            app_key: self.app_key.clone(),
            process_code: self.process_code.clone(),
            process_name: self.process_name.clone(),
            title: self.title.clone(),
            business_id: self.business_id.clone(),
            originator_user_id: self.originator.clone(),
            originator_name: self.originator_name.clone(),
            originator_dept_id: self.dept_id,
            status: self.status.clone(),
            result: self.result.clone(),
            create_ms: self.create_ms,
            finish_ms: self.finish_ms,
            approvers: self
                .nodes
                .iter()
                .map(|n| Approver { action_type: n.action_type, user_ids: n.user_ids.clone() })
                .collect(),
            cc_user_ids: self.cc_user_ids.clone(),
            cc_position: self.cc_position,
            form: self.form.clone(),
            tasks: self.tasks.iter().map(|t| self.task_view(t)).collect(),
            records: self.records.clone(),
        }
    }

    /// The `result` object of `GET /v1.0/workflow/processInstances` (§5.2, fixture
    /// `workflow_get_ok`).
    fn api_result(&self) -> Value {
        let approvers: Vec<&str> = self.nodes.iter().flat_map(|n| n.user_ids.iter().map(String::as_str)).collect();
        let records: Vec<Value> = self
            .records
            .iter()
            .map(|r| {
                let mut record = json!({
                    "userId": r.user_id, "date": api_time(r.date_ms), "type": r.kind, "result": r.result,
                    "showName": r.show_name,
                });
                if !r.remark.is_empty() {
                    record["remark"] = json!(r.remark);
                }
                if !r.activity_id.is_empty() {
                    record["activityId"] = json!(r.activity_id);
                }
                record
            })
            .collect();
        let tasks: Vec<Value> = self
            .tasks
            .iter()
            .map(|t| {
                let mut task = json!({
                    "taskId": t.task_id, "userId": t.user_id, "status": t.status.as_str(),
                    "result": result_word(&t.result), "activityId": self.nodes[t.node].activity_id,
                    "createTime": api_time(t.create_ms), "pcUrl": "", "mobileUrl": "",
                });
                if let Some(finish) = t.finish_ms {
                    task["finishTime"] = json!(api_time(finish));
                }
                task
            })
            .collect();
        let mut result = json!({
            "title": self.title,
            "businessId": self.business_id,
            "status": self.status.as_str(),
            "result": self.result.as_str(),
            "createTime": api_time(self.create_ms),
            "originatorUserId": self.originator,
            "originatorDeptId": self.dept_id.to_string(),
            "originatorDeptName": self.dept_name,
            "approverUserIds": approvers,
            "ccUserIds": self.cc_user_ids,
            "bizAction": "NONE",
            "mainProcessInstanceId": "",
            "attachedProcessInstanceIds": [],
            "bizData": "",
            "formComponentValues": self.form,
            "operationRecords": records,
            "tasks": tasks,
        });
        if let Some(finish) = self.finish_ms {
            result["finishTime"] = json!(api_time(finish));
        }
        result
    }

    fn base_payload(&self, change_type: &str) -> Map<String, Value> {
        let mut payload = Map::new();
        payload.insert("processInstanceId".into(), json!(self.id));
        payload.insert("processCode".into(), json!(self.process_code));
        payload.insert("businessId".into(), json!(self.business_id));
        payload.insert("title".into(), json!(self.title));
        payload.insert("bizCategoryId".into(), json!(""));
        payload.insert("businessType".into(), json!(""));
        payload.insert("type".into(), json!(change_type));
        payload
    }

    /// A `bpms_instance_change` payload (§5.3): `type` start / finish / terminate.
    fn instance_event(&self, change_type: &str) -> Emit {
        let mut payload = self.base_payload(change_type);
        payload.insert("staffId".into(), json!(self.originator));
        payload.insert("createTime".into(), json!(self.create_ms));
        if change_type == "finish" {
            payload.insert("result".into(), json!(self.result.as_str()));
        }
        if let Some(finish) = self.finish_ms.filter(|_| change_type != "start") {
            payload.insert("finishTime".into(), json!(finish));
        }
        let url = format!(
            "https://aflow.dingtalk.com/dingtalk/mobile/homepage.htm?corpid={corp_id}&dd_share=false&showmenu=false\
             &dd_progress=false&back=native&procInstId={}&taskId=&swfrom=isv&dinghash=approval&dtaction=os\
             &dd_from=corp#approval",
            self.id,
            corp_id = self.corp_id,
        );
        payload.insert("url".into(), json!(url));
        (INSTANCE_CHANGE, Value::Object(payload))
    }

    /// A `bpms_task_change` payload (§5.3): `type` start / finish / cancel.
    fn task_event(&self, task: &TaskState, change_type: &str) -> Emit {
        let node = &self.nodes[task.node];
        let mut payload = self.base_payload(change_type);
        payload.insert("staffId".into(), json!(task.user_id));
        payload.insert("createTime".into(), json!(task.create_ms));
        if change_type == "finish" {
            payload.insert("result".into(), json!(task.result.as_str()));
            if !task.remark.is_empty() {
                payload.insert("remark".into(), json!(task.remark));
            }
        }
        if let Some(finish) = task.finish_ms.filter(|_| change_type != "start") {
            payload.insert("finishTime".into(), json!(finish));
        }
        payload.insert("taskId".into(), json!(task.task_id));
        payload.insert("activityId".into(), json!(node.activity_id));
        payload.insert("activityName".into(), json!(node.activity_name));
        (TASK_CHANGE, Value::Object(payload))
    }

    /// Ends every running task (cancelled, no result) and returns their cancel events.
    fn cancel_running(&mut self, node: Option<usize>, now: i64) -> Vec<Emit> {
        let mut emits = Vec::new();
        for i in 0..self.tasks.len() {
            let task = &mut self.tasks[i];
            if task.status != TaskStatus::Running || node.is_some_and(|n| n != task.node) {
                continue;
            }
            task.status = TaskStatus::Canceled;
            task.result = ApprovalResult::None;
            task.finish_ms = Some(now);
            let task = self.tasks[i].clone();
            emits.push(self.task_event(&task, "cancel"));
        }
        emits
    }
}

/// All workflow state; the methods are the state machine, independent of HTTP and of `Org`.
#[derive(Debug)]
struct Book {
    processes: BTreeMap<String, SimProcess>,
    instances: BTreeMap<String, InstanceState>,
    next_seq: u64,
    next_task_id: i64,
}

impl Book {
    fn new(processes: Vec<SimProcess>) -> Self {
        Self {
            processes: processes.into_iter().map(|p| (p.process_code.clone(), p)).collect(),
            instances: BTreeMap::new(),
            next_seq: 0,
            next_task_id: FIRST_TASK_ID,
        }
    }

    fn instance_mut(&mut self, id: &str) -> Result<&mut InstanceState, WorkflowError> {
        self.instances.get_mut(id).ok_or_else(|| WorkflowError::UnknownInstance(id.to_owned()))
    }

    fn running(instance: &InstanceState) -> Result<(), WorkflowError> {
        if instance.status == InstanceStatus::Running {
            Ok(())
        } else {
            Err(WorkflowError::InstanceNotRunning {
                instance_id: instance.id.clone(),
                status: instance.status.as_str().to_owned(),
            })
        }
    }

    /// Starts the tasks of node `node` and returns their start events.
    fn start_node(&mut self, id: &str, node: usize, now: i64) -> Vec<Emit> {
        let Some(instance) = self.instances.get_mut(id) else { return Vec::new() };
        let mut emits = Vec::new();
        for user in instance.nodes[node].user_ids.clone() {
            let task = TaskState {
                task_id: self.next_task_id,
                user_id: user,
                node,
                status: TaskStatus::Running,
                result: ApprovalResult::None,
                create_ms: now,
                finish_ms: None,
                remark: String::new(),
            };
            self.next_task_id += 1;
            emits.push(instance.task_event(&task, "start"));
            instance.tasks.push(task);
        }
        emits
    }

    fn validate_form(
        process: &SimProcess,
        values: &[crate::dingtalk::workflow::FormValue],
    ) -> Result<Vec<FormComponentValue>, WorkflowError> {
        let mut form = Vec::new();
        for value in values {
            let Some(component) = process.component(value) else {
                return Err(WorkflowError::BadForm(format!(
                    "no component `{}` in template {} (known: {})",
                    value.id.as_deref().unwrap_or(&value.name),
                    process.process_code,
                    process.components.iter().map(|c| c.label.as_str()).collect::<Vec<_>>().join(", ")
                )));
            };
            check_value(component, &value.value)?;
            form.push(FormComponentValue {
                id: component.id.clone(),
                name: component.label.clone(),
                value: value.value.clone(),
                component_type: component.component_type.clone(),
                biz_alias: value.biz_alias.clone().unwrap_or_default(),
                ext_value: value.ext_value.clone().unwrap_or_default(),
            });
        }
        if let Some(missing) =
            process.components.iter().find(|c| c.required && !form.iter().any(|v| v.id == c.id && !v.value.is_empty()))
        {
            return Err(WorkflowError::BadForm(format!("required component `{}` has no value", missing.label)));
        }
        Ok(form)
    }

    fn resolve_approvers(
        request: &StartProcessInstance,
        originator: &Person,
        dir: &Directory<'_>,
    ) -> Result<Vec<Approver>, WorkflowError> {
        let approvers = if request.approvers.is_empty() {
            let Some(manager) = originator.manager.clone() else {
                return Err(WorkflowError::BadApprovers(format!(
                    "none given and `{}` has no direct manager to default to",
                    request.originator_user_id
                )));
            };
            vec![Approver { action_type: ActionType::None, user_ids: vec![manager] }]
        } else {
            request.approvers.clone()
        };
        for (i, node) in approvers.iter().enumerate() {
            if node.user_ids.is_empty() {
                return Err(WorkflowError::BadApprovers(format!("node {} has no userIds", i + 1)));
            }
            if node.action_type == ActionType::None && node.user_ids.len() != 1 {
                return Err(WorkflowError::BadApprovers(format!(
                    "node {} has actionType NONE (a single approver) but {} userIds; use AND or OR",
                    i + 1,
                    node.user_ids.len()
                )));
            }
            let mut seen = std::collections::BTreeSet::new();
            for user in &node.user_ids {
                if !seen.insert(user) {
                    return Err(WorkflowError::BadApprovers(format!("node {} lists `{user}` twice", i + 1)));
                }
                dir.active_user(user)?;
            }
        }
        Ok(approvers)
    }

    fn start(
        &mut self,
        app_key: &str,
        request: &StartProcessInstance,
        dir: &Directory<'_>,
        corp_id: &str,
        now: i64,
    ) -> Result<(String, Vec<Emit>), WorkflowError> {
        if request.originator_user_id.is_empty() {
            return Err(WorkflowError::Missing("originatorUserId"));
        }
        if request.process_code.is_empty() {
            return Err(WorkflowError::Missing("processCode"));
        }
        let originator = dir.active_user(&request.originator_user_id)?;
        let process = self
            .processes
            .get(&request.process_code)
            .ok_or_else(|| WorkflowError::UnknownProcess(request.process_code.clone()))?
            .clone();
        let approvers = Self::resolve_approvers(request, &originator, dir)?;
        for user in &request.cc_list {
            dir.active_user(user)?;
        }
        let form = Self::validate_form(&process, &request.form_component_values)?;
        let dept_id = match request.dept_id {
            Some(d) if d > 0 => d,
            _ => originator.dept_ids.first().copied().unwrap_or(1),
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = format!("{}{:011}", random_alnum(24), now.rem_euclid(100_000_000_000));
        let local = Timestamp::from_millisecond(now)
            .map(|t| t.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8))).strftime("%Y%m%d%H%M").to_string())
            .unwrap_or_default();
        let several = approvers.len() > 1;
        let nodes = approvers
            .into_iter()
            .enumerate()
            .map(|(i, a)| Node {
                action_type: a.action_type,
                user_ids: a.user_ids,
                activity_id: format!("act_{:02}", i + 1),
                activity_name: if several { format!("Approver {}", i + 1) } else { "Approver".to_owned() },
            })
            .collect();
        let instance = InstanceState {
            id: id.clone(),
            seq,
            app_key: app_key.to_owned(),
            corp_id: corp_id.to_owned(),
            process_code: process.process_code.clone(),
            process_name: process.name.clone(),
            title: format!("{} submitted {}", originator.name, process.name),
            business_id: format!("{local}{:09}", seq + 1),
            originator: request.originator_user_id.clone(),
            originator_name: originator.name.clone(),
            dept_id,
            dept_name: (dir.dept_name)(dept_id).unwrap_or_default(),
            status: InstanceStatus::Running,
            result: ApprovalResult::None,
            create_ms: now,
            finish_ms: None,
            nodes,
            tasks: Vec::new(),
            form,
            cc_user_ids: request.cc_list.clone(),
            cc_position: request.cc_position,
            records: vec![RecordView {
                user_id: request.originator_user_id.clone(),
                date_ms: now,
                kind: "START_PROCESS_INSTANCE",
                result: "NONE",
                remark: String::new(),
                show_name: "Start".to_owned(),
                activity_id: String::new(),
            }],
        };
        let mut emits = vec![instance.instance_event("start")];
        self.instances.insert(id.clone(), instance);
        emits.extend(self.start_node(&id, 0, now));
        Ok((id, emits))
    }

    fn act(
        &mut self,
        instance_id: &str,
        task_id: i64,
        actioner: &str,
        agree: bool,
        remark: &str,
        now: i64,
    ) -> Result<Vec<Emit>, WorkflowError> {
        let instance = self.instance_mut(instance_id)?;
        Self::running(instance)?;
        let Some(index) = instance.tasks.iter().position(|t| t.task_id == task_id) else {
            return Err(WorkflowError::UnknownTask { instance_id: instance_id.to_owned(), task_id });
        };
        let task = &mut instance.tasks[index];
        if task.user_id != actioner {
            return Err(WorkflowError::NotTaskOwner {
                task_id,
                owner: task.user_id.clone(),
                actioner: actioner.to_owned(),
            });
        }
        if task.status != TaskStatus::Running {
            return Err(WorkflowError::TaskNotRunning { task_id, status: task.status.as_str().to_owned() });
        }
        task.status = TaskStatus::Completed;
        task.result = if agree { ApprovalResult::Agree } else { ApprovalResult::Refuse };
        task.finish_ms = Some(now);
        task.remark = remark.to_owned();
        let task = task.clone();
        let node = instance.nodes[task.node].clone();
        instance.records.push(RecordView {
            user_id: actioner.to_owned(),
            date_ms: now,
            kind: "EXECUTE_TASK_NORMAL",
            result: result_word(&task.result),
            remark: remark.to_owned(),
            show_name: node.activity_name,
            activity_id: node.activity_id,
        });
        let action_type = node.action_type;
        let mut emits = vec![instance.task_event(&task, "finish")];
        if !agree {
            emits.extend(instance.cancel_running(None, now));
            instance.status = InstanceStatus::Completed;
            instance.result = ApprovalResult::Refuse;
            instance.finish_ms = Some(now);
            emits.push(instance.instance_event("finish"));
            return Ok(emits);
        }
        let node_done = match action_type {
            ActionType::And => !instance.tasks.iter().any(|t| t.node == task.node && t.status == TaskStatus::Running),
            ActionType::Or | ActionType::None => {
                emits.extend(instance.cancel_running(Some(task.node), now));
                true
            }
        };
        if !node_done {
            return Ok(emits);
        }
        let next = task.node + 1;
        if next >= instance.nodes.len() {
            instance.status = InstanceStatus::Completed;
            instance.result = ApprovalResult::Agree;
            instance.finish_ms = Some(now);
            emits.push(instance.instance_event("finish"));
            return Ok(emits);
        }
        emits.extend(self.start_node(instance_id, next, now));
        Ok(emits)
    }

    fn terminate(
        &mut self,
        instance_id: &str,
        operator: &str,
        is_system: bool,
        remark: &str,
        now: i64,
    ) -> Result<Vec<Emit>, WorkflowError> {
        let instance = self.instance_mut(instance_id)?;
        Self::running(instance)?;
        if !is_system && operator != instance.originator {
            return Err(WorkflowError::Invalid(format!(
                "only the originator `{}` (or the system, isSystem=true) may terminate; `{operator}` may not",
                instance.originator
            )));
        }
        let mut emits = instance.cancel_running(None, now);
        instance.status = InstanceStatus::Terminated;
        instance.result = ApprovalResult::None;
        instance.finish_ms = Some(now);
        instance.records.push(RecordView {
            user_id: if is_system && operator.is_empty() { instance.originator.clone() } else { operator.to_owned() },
            date_ms: now,
            kind: "TERMINATE_PROCESS_INSTANCE",
            result: "NONE",
            remark: remark.to_owned(),
            show_name: "Terminated".to_owned(),
            activity_id: String::new(),
        });
        emits.push(instance.instance_event("terminate"));
        Ok(emits)
    }

    fn list_ids(&self, query: &ListInstanceIds, now: i64) -> Result<(Vec<String>, Option<i64>), WorkflowError> {
        if query.process_code.is_empty() {
            return Err(WorkflowError::Missing("processCode"));
        }
        if query.max_results == 0 || query.max_results > MAX_RESULTS {
            return Err(WorkflowError::Invalid(format!(
                "maxResults must be 1..={MAX_RESULTS}, got {}",
                query.max_results
            )));
        }
        let offset = usize::try_from(query.next_token)
            .map_err(|_| WorkflowError::Invalid(format!("nextToken {} is negative", query.next_token)))?;
        let end = query.end_time.unwrap_or(now);
        let mut matching: Vec<&InstanceState> = self
            .instances
            .values()
            .filter(|i| i.process_code == query.process_code)
            .filter(|i| i.create_ms >= query.start_time && i.create_ms <= end)
            .filter(|i| query.user_ids.is_empty() || query.user_ids.contains(&i.originator))
            .filter(|i| query.statuses.is_empty() || query.statuses.contains(&i.status))
            .collect();
        matching.sort_by_key(|i| (i.create_ms, i.seq));
        let page: Vec<String> =
            matching.iter().skip(offset).take(query.max_results as usize).map(|i| i.id.clone()).collect();
        let consumed = offset + page.len();
        let next = (consumed < matching.len()).then(|| i64::try_from(consumed).unwrap_or(i64::MAX));
        Ok((page, next))
    }
}

/// Checks a value against its component's format (§5.1): numbers and money are decimals, dates
/// `yyyy-MM-dd[ HH:mm]`, tables a JSON array of rows.
fn check_value(component: &SimFormComponent, value: &str) -> Result<(), WorkflowError> {
    let bad = |what: &str| {
        WorkflowError::BadForm(format!(
            "`{}` ({}) must be {what}, got `{value}`",
            component.label, component.component_type
        ))
    };
    if value.is_empty() {
        return Ok(());
    }
    match component.component_type.as_str() {
        "NumberField" | "MoneyField" => {
            model::parse_decimal(&component.label, value)
                .map_err(|_| bad("a plain decimal number such as 12800.50"))?;
        }
        "DDDateField" => {
            let ok = value.parse::<jiff::civil::Date>().is_ok()
                || jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", value).is_ok();
            if !ok {
                return Err(bad("a date yyyy-MM-dd or yyyy-MM-dd HH:mm"));
            }
        }
        "TableField" => match serde_json::from_str::<Value>(value) {
            Ok(Value::Array(rows)) if rows.iter().all(Value::is_array) => {}
            _ => return Err(bad("a JSON array of rows, each an array of {name, value}")),
        },
        "DDMultiSelectField" | "DDDateRangeField" | "DDPhotoField" | "DDAttachment" | "InnerContactField"
            if !matches!(serde_json::from_str::<Value>(value), Ok(Value::Array(_))) =>
        {
            return Err(bad("a JSON array"));
        }
        _ => {}
    }
    Ok(())
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let requestid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
    (status, Json(json!({ "code": code, "message": message, "requestid": requestid }))).into_response()
}

impl IntoResponse for WorkflowError {
    fn into_response(self) -> Response {
        error_response(StatusCode::BAD_REQUEST, self.code(), &self.to_string())
    }
}

/// The OA approval part of the DingTalk simulator. Share it behind an `Arc`.
pub struct WorkflowSim {
    org: Arc<Org>,
    events: Arc<EventRouter>,
    clock: Arc<dyn Clock>,
    book: Mutex<Book>,
    /// Held from a state change until its events are published, so concurrent actions on
    /// instances publish in the order their changes happened.
    gate: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for WorkflowSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowSim").finish_non_exhaustive()
    }
}

impl WorkflowSim {
    /// Seeded with [`SimProcess::seeded`].
    pub fn new(org: Arc<Org>, events: Arc<EventRouter>, clock: Arc<dyn Clock>) -> Self {
        Self {
            org,
            events,
            clock,
            book: Mutex::new(Book::new(SimProcess::seeded())),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // Each change completes under the lock before it is released, so a poisoned book is whole.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Back to the seeded templates and no instances.
    pub fn reset(&self) {
        *self.lock() = Book::new(SimProcess::seeded());
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v1.0/workflow/processInstances", post(start_handler).get(get_handler))
            .route("/v1.0/workflow/processInstances/execute", post(execute_handler))
            .route("/v1.0/workflow/processInstances/terminate", post(terminate_handler))
            .route("/v1.0/workflow/processes/instanceIds/query", post(list_handler))
            .route("/v1.0/workflow/forms/schemas/processCodes", get(schema_handler))
            .with_state(self)
    }

    pub fn processes(&self) -> Vec<SimProcess> {
        self.lock().processes.values().cloned().collect()
    }

    /// Adds or replaces a template.
    pub fn upsert_process(&self, process: SimProcess) -> Result<SimProcess, SimError> {
        let invalid = |detail: String| SimError::InvalidRecord { entity: "process".to_owned(), detail };
        if process.process_code.trim().is_empty() || process.name.trim().is_empty() {
            return Err(invalid("`process_code` and `name` must not be empty".to_owned()));
        }
        let mut ids = std::collections::BTreeSet::new();
        let mut labels = std::collections::BTreeSet::new();
        for component in &process.components {
            if component.id.is_empty() || component.label.is_empty() || component.component_type.is_empty() {
                return Err(invalid("every component needs `id`, `label` and `component_type`".to_owned()));
            }
            if !ids.insert(&component.id) || !labels.insert(&component.label) {
                return Err(invalid(format!("component `{}` / `{}` is listed twice", component.id, component.label)));
            }
        }
        self.lock().processes.insert(process.process_code.clone(), process.clone());
        Ok(process)
    }

    /// `POST /_sim/records/process`: a [`SimProcess`] as JSON.
    pub fn put_process(&self, value: Value) -> Result<Value, SimError> {
        let process: SimProcess = serde_json::from_value(value)
            .map_err(|err| SimError::InvalidRecord { entity: "process".to_owned(), detail: err.to_string() })?;
        let stored = self.upsert_process(process)?;
        serde_json::to_value(stored)
            .map_err(|err| SimError::InvalidRecord { entity: "process".to_owned(), detail: err.to_string() })
    }

    fn corp_id(&self, app_key: &str) -> String {
        self.org
            .app(app_key)
            .map(|a| a.corp_id)
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| self.events.corp_id().to_owned())
    }

    async fn publish(&self, app_key: &str, emits: Vec<Emit>) {
        for (event_type, payload) in emits {
            self.events.publish(app_key, event_type, payload).await;
        }
    }

    /// Starts an instance for `app_key` (whose app will hear its events) → the instance id.
    pub async fn start(&self, app_key: &str, request: &StartProcessInstance) -> Result<String, WorkflowError> {
        let corp_id = self.corp_id(app_key);
        let _gate = self.gate.lock().await;
        let now = self.clock.now_millis();
        let (id, emits) = {
            // Scoped: the lookups are not `Send` and must not live across an await.
            let org = &self.org;
            let user = |userid: &str| {
                org.user(userid).map(|u| Person {
                    name: u.name,
                    active: u.active,
                    manager: u.manager_userid,
                    dept_ids: u.dept_ids,
                })
            };
            let dept_name = |dept_id: i64| org.department(dept_id).map(|d| d.name);
            let dir = Directory { user: &user, dept_name: &dept_name };
            self.lock().start(app_key, request, &dir, &corp_id, now)?
        };
        tracing::debug!(instance = %id, process = %request.process_code, "simulated approval started");
        self.publish(app_key, emits).await;
        Ok(id)
    }

    /// `userid` agrees to (or refuses) task `task_id` of `instance_id`: the HTTP execute route
    /// and the simulator page both come here.
    pub async fn act(
        &self,
        instance_id: &str,
        task_id: i64,
        userid: &str,
        agree: bool,
        remark: &str,
    ) -> Result<InstanceView, WorkflowError> {
        let _gate = self.gate.lock().await;
        let now = self.clock.now_millis();
        let (app_key, emits, view) = {
            let mut book = self.lock();
            let emits = book.act(instance_id, task_id, userid, agree, remark, now)?;
            let instance = &book.instances[instance_id];
            (instance.app_key.clone(), emits, instance.view())
        };
        self.publish(&app_key, emits).await;
        Ok(view)
    }

    /// Terminates a running instance: by its originator, or by the system when `is_system`.
    pub async fn terminate(
        &self,
        instance_id: &str,
        operating_user_id: &str,
        is_system: bool,
        remark: &str,
    ) -> Result<InstanceView, WorkflowError> {
        let _gate = self.gate.lock().await;
        let now = self.clock.now_millis();
        let (app_key, emits, view) = {
            let mut book = self.lock();
            let emits = book.terminate(instance_id, operating_user_id, is_system, remark, now)?;
            let instance = &book.instances[instance_id];
            (instance.app_key.clone(), emits, instance.view())
        };
        self.publish(&app_key, emits).await;
        Ok(view)
    }

    pub fn instance(&self, instance_id: &str) -> Option<InstanceView> {
        self.lock().instances.get(instance_id).map(InstanceState::view)
    }

    /// Every instance, oldest first.
    pub fn instances(&self) -> Vec<InstanceView> {
        let book = self.lock();
        let mut all: Vec<&InstanceState> = book.instances.values().collect();
        all.sort_by_key(|i| i.seq);
        all.into_iter().map(InstanceState::view).collect()
    }

    /// Running tasks waiting for `userid`, oldest first.
    pub fn pending_tasks_for(&self, userid: &str) -> Vec<TaskView> {
        let book = self.lock();
        let mut tasks: Vec<(u64, TaskView)> = book
            .instances
            .values()
            .flat_map(|i| {
                i.tasks
                    .iter()
                    .filter(|t| t.user_id == userid && t.status == TaskStatus::Running)
                    .map(move |t| (i.seq, i.task_view(t)))
            })
            .collect();
        tasks.sort_by_key(|(seq, t)| (*seq, t.task_id));
        tasks.into_iter().map(|(_, t)| t).collect()
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WorkflowError> {
    serde_json::from_slice(body).map_err(|err| WorkflowError::Invalid(format!("the request body is not valid: {err}")))
}

fn success(result: Value) -> Response {
    Json(json!({ "success": true, "result": result })).into_response()
}

async fn start_handler(State(sim): State<Arc<WorkflowSim>>, headers: HeaderMap, body: Bytes) -> Response {
    let app = match sim.org.authorize_new(&headers, "workflow.start") {
        Ok(app) => app,
        Err(resp) => return resp,
    };
    let request: StartProcessInstance = match parse_body(&body) {
        Ok(r) => r,
        Err(err) => return err.into_response(),
    };
    match sim.start(&app.app_key, &request).await {
        Ok(id) => Json(json!({ "instanceId": id })).into_response(),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetQuery {
    #[serde(default)]
    process_instance_id: String,
}

async fn get_handler(
    State(sim): State<Arc<WorkflowSim>>,
    headers: HeaderMap,
    Query(query): Query<GetQuery>,
) -> Response {
    if let Err(resp) = sim.org.authorize_new(&headers, "workflow.get") {
        return resp;
    }
    if query.process_instance_id.is_empty() {
        return WorkflowError::Missing("processInstanceId").into_response();
    }
    let book = sim.lock();
    match book.instances.get(&query.process_instance_id) {
        Some(instance) => success(instance.api_result()),
        None => WorkflowError::UnknownInstance(query.process_instance_id).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecuteRequest {
    #[serde(default)]
    process_instance_id: String,
    task_id: Option<i64>,
    #[serde(default)]
    actioner_user_id: String,
    #[serde(default)]
    result: String,
    #[serde(default)]
    remark: String,
}

async fn execute_handler(State(sim): State<Arc<WorkflowSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = sim.org.authorize_new(&headers, "workflow.execute") {
        return resp;
    }
    let request: ExecuteRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(err) => return err.into_response(),
    };
    let agree = match request.result.as_str() {
        "agree" => true,
        "refuse" => false,
        other => {
            return WorkflowError::Invalid(format!("result must be `agree` or `refuse`, got `{other}`")).into_response()
        }
    };
    let missing = if request.process_instance_id.is_empty() {
        Some("processInstanceId")
    } else if request.actioner_user_id.is_empty() {
        Some("actionerUserId")
    } else {
        None
    };
    if let Some(field) = missing {
        return WorkflowError::Missing(field).into_response();
    }
    let Some(task_id) = request.task_id else { return WorkflowError::Missing("taskId").into_response() };
    match sim.act(&request.process_instance_id, task_id, &request.actioner_user_id, agree, &request.remark).await {
        Ok(_) => success(json!(true)),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TerminateRequest {
    #[serde(default)]
    process_instance_id: String,
    #[serde(default)]
    is_system: bool,
    #[serde(default)]
    operating_user_id: String,
    #[serde(default)]
    remark: String,
}

async fn terminate_handler(State(sim): State<Arc<WorkflowSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = sim.org.authorize_new(&headers, "workflow.terminate") {
        return resp;
    }
    let request: TerminateRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(err) => return err.into_response(),
    };
    if request.process_instance_id.is_empty() {
        return WorkflowError::Missing("processInstanceId").into_response();
    }
    if !request.is_system && request.operating_user_id.is_empty() {
        return WorkflowError::Missing("operatingUserId").into_response();
    }
    match sim
        .terminate(&request.process_instance_id, &request.operating_user_id, request.is_system, &request.remark)
        .await
    {
        Ok(_) => success(json!(true)),
        Err(err) => err.into_response(),
    }
}

async fn list_handler(State(sim): State<Arc<WorkflowSim>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = sim.org.authorize_new(&headers, "workflow.instanceIds") {
        return resp;
    }
    let query: ListInstanceIds = match parse_body(&body) {
        Ok(q) => q,
        Err(err) => return err.into_response(),
    };
    let now = sim.clock.now_millis();
    match sim.lock().list_ids(&query, now) {
        Ok((list, Some(next))) => success(json!({ "list": list, "nextToken": next })),
        Ok((list, None)) => success(json!({ "list": list })),
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaQuery {
    #[serde(default)]
    process_code: String,
}

/// `GET /v1.0/workflow/forms/schemas/processCodes` (§5.1): the template's components.
async fn schema_handler(
    State(sim): State<Arc<WorkflowSim>>,
    headers: HeaderMap,
    Query(query): Query<SchemaQuery>,
) -> Response {
    if let Err(resp) = sim.org.authorize_new(&headers, "workflow.schema") {
        return resp;
    }
    if query.process_code.is_empty() {
        return WorkflowError::Missing("processCode").into_response();
    }
    let book = sim.lock();
    let Some(process) = book.processes.get(&query.process_code) else {
        return WorkflowError::UnknownProcess(query.process_code).into_response();
    };
    let items: Vec<Value> = process
        .components
        .iter()
        .map(|c| json!({ "componentName": c.component_type, "props": { "id": c.id, "label": c.label, "required": c.required } }))
        .collect();
    success(json!({
        "name": process.name,
        "processCode": process.process_code,
        "schemaContent": { "title": process.name, "items": items },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dingtalk::workflow::{FormValue, ProcessInstance};

    const CORP: &str = "dingcorpsim";

    fn person(userid: &str) -> Option<Person> {
        let (name, manager) = match userid {
            "staff1" => ("Chan Tai Man", Some("boss1")),
            "orphan" => ("No Manager", None),
            "boss1" | "boss2" | "boss3" | "cfo" => ("Boss", None),
            "gone" => return Some(Person { name: "Gone".into(), active: false, manager: None, dept_ids: vec![] }),
            _ => return None,
        };
        Some(Person { name: name.into(), active: true, manager: manager.map(Into::into), dept_ids: vec![20001] })
    }

    fn dept(id: i64) -> Option<String> {
        (id == 20001).then(|| "Purchasing".to_owned())
    }

    fn dir() -> Directory<'static> {
        Directory { user: &person, dept_name: &dept }
    }

    fn request() -> StartProcessInstance {
        StartProcessInstance::new("staff1", PURCHASE_REQ)
            .with_value(FormValue::text("PO Number", "PO-1"))
            .with_value(FormValue::number("Amount (HKD)", 12800))
    }

    fn kinds(emits: &[Emit]) -> Vec<String> {
        emits
            .iter()
            .map(|(t, p)| {
                let who = p["staffId"].as_str().unwrap_or("");
                let result = p.get("result").and_then(Value::as_str).map(|r| format!(":{r}")).unwrap_or_default();
                format!(
                    "{}/{}{result}@{who}",
                    if *t == INSTANCE_CHANGE { "instance" } else { "task" },
                    p["type"].as_str().unwrap()
                )
            })
            .collect()
    }

    fn running_task(book: &Book, id: &str, user: &str) -> i64 {
        book.instances[id].tasks.iter().find(|t| t.user_id == user && t.status == TaskStatus::Running).unwrap().task_id
    }

    #[test]
    fn and_then_or_nodes_in_order() {
        let mut book = Book::new(SimProcess::seeded());
        let req = request()
            .with_approvers(ActionType::And, &["boss1", "boss2"])
            .with_approvers(ActionType::Or, &["boss3", "cfo"]);
        let (id, emits) = book.start("app1", &req, &dir(), CORP, 1_000).unwrap();
        assert_eq!(kinds(&emits), ["instance/start@staff1", "task/start@boss1", "task/start@boss2"]);
        assert!(emits[0].1["url"].as_str().unwrap().contains(&format!("corpid={CORP}&")));
        assert!(emits[0].1.get("result").is_none() && emits[0].1.get("finishTime").is_none());
        assert_eq!(book.instances[&id].title, "Chan Tai Man submitted Purchase requisition");

        let t1 = running_task(&book, &id, "boss1");
        let emits = book.act(&id, t1, "boss1", true, "ok", 2_000).unwrap();
        assert_eq!(kinds(&emits), ["task/finish:agree@boss1"], "AND waits for boss2");
        assert_eq!(emits[0].1["remark"], "ok");
        assert_eq!(emits[0].1["finishTime"], 2_000);

        let t2 = running_task(&book, &id, "boss2");
        let emits = book.act(&id, t2, "boss2", true, "", 3_000).unwrap();
        assert_eq!(kinds(&emits), ["task/finish:agree@boss2", "task/start@boss3", "task/start@cfo"]);
        assert!(emits[0].1.get("remark").is_none());

        let t3 = running_task(&book, &id, "cfo");
        let emits = book.act(&id, t3, "cfo", true, "fine", 4_000).unwrap();
        assert_eq!(kinds(&emits), ["task/finish:agree@cfo", "task/cancel@boss3", "instance/finish:agree@staff1"]);
        let instance = &book.instances[&id];
        assert_eq!(instance.status, InstanceStatus::Completed);
        assert_eq!(instance.result, ApprovalResult::Agree);
        assert_eq!(instance.finish_ms, Some(4_000));
        assert_eq!(emits[2].1["finishTime"], 4_000);
    }

    #[test]
    fn refuse_cancels_the_rest_and_finishes_with_refuse() {
        let mut book = Book::new(SimProcess::seeded());
        let req =
            request().with_approvers(ActionType::And, &["boss1", "boss2"]).with_approvers(ActionType::None, &["cfo"]);
        let (id, _) = book.start("app1", &req, &dir(), CORP, 1_000).unwrap();
        let t1 = running_task(&book, &id, "boss1");
        let emits = book.act(&id, t1, "boss1", false, "too much", 2_000).unwrap();
        assert_eq!(kinds(&emits), ["task/finish:refuse@boss1", "task/cancel@boss2", "instance/finish:refuse@staff1"]);
        let instance = &book.instances[&id];
        assert_eq!((&instance.status, &instance.result), (&InstanceStatus::Completed, &ApprovalResult::Refuse));
        assert!(instance.tasks.iter().all(|t| t.node == 0), "the cfo node never started");
        let err = book.act(&id, t1, "boss1", true, "", 3_000).unwrap_err();
        assert_eq!(err.code(), "InvalidParameter.InstanceNotRunning");
    }

    #[test]
    fn execute_checks_owner_and_task_state() {
        let mut book = Book::new(SimProcess::seeded());
        let req = request().with_approvers(ActionType::And, &["boss1", "boss2"]);
        let (id, _) = book.start("app1", &req, &dir(), CORP, 1_000).unwrap();
        let t1 = running_task(&book, &id, "boss1");
        assert!(matches!(book.act(&id, t1, "boss2", true, "", 2), Err(WorkflowError::NotTaskOwner { .. })));
        assert!(matches!(book.act(&id, 1, "boss1", true, "", 2), Err(WorkflowError::UnknownTask { .. })));
        assert!(matches!(book.act("nope", t1, "boss1", true, "", 2), Err(WorkflowError::UnknownInstance(_))));
        book.act(&id, t1, "boss1", true, "", 2).unwrap();
        let err = book.act(&id, t1, "boss1", true, "", 3).unwrap_err();
        assert_eq!(err, WorkflowError::TaskNotRunning { task_id: t1, status: "COMPLETED".into() });
    }

    #[test]
    fn terminate_cancels_tasks_then_the_instance() {
        let mut book = Book::new(SimProcess::seeded());
        let req = request().with_approvers(ActionType::Or, &["boss1", "boss2"]);
        let (id, _) = book.start("app1", &req, &dir(), CORP, 1_000).unwrap();
        let err = book.terminate(&id, "boss1", false, "", 2).unwrap_err();
        assert_eq!(err.code(), "InvalidParameter");
        let emits = book.terminate(&id, "staff1", false, "withdrawn", 2_000).unwrap();
        assert_eq!(kinds(&emits), ["task/cancel@boss1", "task/cancel@boss2", "instance/terminate@staff1"]);
        assert!(emits[2].1.get("result").is_none());
        assert_eq!(emits[2].1["finishTime"], 2_000);
        assert_eq!(book.instances[&id].status, InstanceStatus::Terminated);
        assert!(book.terminate(&id, "staff1", false, "", 3).is_err(), "already terminated");
    }

    #[test]
    fn start_validation() {
        let mut book = Book::new(SimProcess::seeded());
        let start = |book: &mut Book, req: StartProcessInstance| {
            book.start("app", &req, &dir(), CORP, 1).map(|_| ()).unwrap_err()
        };
        assert_eq!(
            start(&mut book, StartProcessInstance { originator_user_id: String::new(), ..request() }).code(),
            "MissingParameter"
        );
        assert_eq!(
            start(&mut book, StartProcessInstance { originator_user_id: "gone".into(), ..request() }).code(),
            "InvalidParameter.UserNotExist"
        );
        assert_eq!(
            start(&mut book, StartProcessInstance { process_code: "PROC-X".into(), ..request() }).code(),
            "InvalidParameter.ProcessCodeNotExist"
        );
        assert_eq!(
            start(&mut book, request().with_approvers(ActionType::None, &["boss1", "boss2"])).code(),
            "InvalidParameter.Approvers"
        );
        assert_eq!(
            start(&mut book, request().with_approvers(ActionType::Or, &["ghost"])).code(),
            "InvalidParameter.UserNotExist"
        );
        assert_eq!(
            start(&mut book, StartProcessInstance { originator_user_id: "orphan".into(), ..request() }).code(),
            "InvalidParameter.Approvers"
        );
        let form = |values: Vec<FormValue>| StartProcessInstance { form_component_values: values, ..request() };
        assert_eq!(
            start(&mut book, form(vec![FormValue::text("PO Number", "PO-1")])).code(),
            "InvalidParameter.FormComponentValues",
            "amount required"
        );
        assert_eq!(
            start(&mut book, request().with_value(FormValue::text("Colour", "red"))).code(),
            "InvalidParameter.FormComponentValues"
        );
        assert_eq!(
            start(&mut book, request().with_value(FormValue::text("Needed by", "next week"))).code(),
            "InvalidParameter.FormComponentValues"
        );
        assert_eq!(
            start(&mut book, request().with_value(FormValue::text("Items", "{}"))).code(),
            "InvalidParameter.FormComponentValues"
        );
        let bad_amount = form(vec![FormValue::text("PO Number", "PO-1"), FormValue::text("Amount (HKD)", "HK$1")]);
        assert_eq!(start(&mut book, bad_amount).code(), "InvalidParameter.FormComponentValues");
        // Defaults to the manager; matching by id works; dates with time are fine.
        let ok = request()
            .with_value(FormValue::text("", "2026-01-09 10:30").with_id("DDDateField-NB01"))
            .with_value(FormValue::table("Items", [[("Item", "Laptop")]]));
        let (id, emits) = book.start("app", &ok, &dir(), CORP, 1).unwrap();
        assert_eq!(kinds(&emits), ["instance/start@staff1", "task/start@boss1"]);
        assert_eq!(book.instances[&id].form[2].name, "Needed by");
        assert!(book.instances.len() == 1, "failed starts leave nothing behind");
    }

    #[test]
    fn get_answer_reads_back_with_the_client_type() {
        let mut book = Book::new(SimProcess::seeded());
        let req = request().with_approvers(ActionType::None, &["boss1"]).with_cc(&["cfo"], CcPosition::Finish);
        let now = 1_767_248_790_500; // 2026-01-01T06:26:30.5Z
        let (id, _) = book.start("app", &req, &dir(), CORP, now).unwrap();
        let t = running_task(&book, &id, "boss1");
        book.act(&id, t, "boss1", true, "OK within budget", now + 60_000).unwrap();
        let read: ProcessInstance = serde_json::from_value(book.instances[&id].api_result()).unwrap();
        assert_eq!(read.status, InstanceStatus::Completed);
        assert_eq!(read.result, ApprovalResult::Agree);
        assert_eq!(read.create_time, Some("2026-01-01T06:26:00Z".parse().unwrap()), "minute precision");
        assert_eq!(read.originator_dept_id, "20001");
        assert_eq!(read.originator_dept_name, "Purchasing");
        assert_eq!(read.approver_user_ids, ["boss1"]);
        assert_eq!(read.cc_user_ids, ["cfo"]);
        assert_eq!(read.form_value("Amount (HKD)"), Some("12800"));
        assert_eq!(read.tasks[0].result, ApprovalResult::Agree);
        assert_eq!(read.tasks[0].status, TaskStatus::Completed);
        assert_eq!(read.operation_records[1].remark, "OK within budget");
        assert_eq!(read.business_id.len(), 21);
    }

    #[test]
    fn list_ids_pages_in_creation_order() {
        let mut book = Book::new(SimProcess::seeded());
        let mut ids = Vec::new();
        for i in 0..45 {
            let req = request().with_approvers(ActionType::None, &["boss1"]);
            ids.push(book.start("app", &req, &dir(), CORP, 1_000 + i).unwrap().0);
        }
        let payment = StartProcessInstance::new("staff1", PAYMENT)
            .with_value(FormValue::text("Payee", "ACME"))
            .with_value(FormValue::text("Amount (HKD)", "1.50"));
        book.start("app", &payment, &dir(), CORP, 1_010).unwrap();
        let mut seen = Vec::new();
        let mut token = 0;
        loop {
            let q = ListInstanceIds::new(PURCHASE_REQ, 0, 10_000).page(token, 20);
            let (page, next) = book.list_ids(&q, 5_000).unwrap();
            assert!(page.len() <= 20);
            seen.extend(page);
            match next {
                Some(t) => token = t,
                None => break,
            }
        }
        assert_eq!(seen, ids);
        let q = ListInstanceIds::new(PURCHASE_REQ, 1_010, 1_019);
        assert_eq!(book.list_ids(&q, 5_000).unwrap().0, ids[10..20]);
        let q = ListInstanceIds::new(PURCHASE_REQ, 0, 10_000).with_statuses(vec![InstanceStatus::Completed]);
        assert!(book.list_ids(&q, 5_000).unwrap().0.is_empty());
        let mut q = ListInstanceIds::new(PURCHASE_REQ, 0, 10_000);
        q.max_results = 21;
        assert_eq!(book.list_ids(&q, 5_000).unwrap_err().code(), "InvalidParameter");
    }
}

#[cfg(test)]
#[path = "workflow_tests.rs"]
mod loopback_tests;
