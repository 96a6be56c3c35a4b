//! The approval client against this simulator part over loopback HTTP, with the events it
//! publishes read back through the client's `ApprovalEvent`.

use super::*;
use crate::dingtalk::openapi::{AppCredentials, OpenApi, OpenApiSettings};
use crate::dingtalk::sim::org::{SEED_AGENT_ID, SEED_APP_KEY, SEED_APP_SECRET, SEED_CORP_ID};
use crate::dingtalk::workflow::{ApprovalEvent, ApprovalEventKind, Decision, FormValue, TaskOutcome, WorkflowClient};
use connect::{DeliveryError, Disposition};
use std::sync::atomic::{AtomicI64, Ordering};

const START_MS: i64 = 1_767_225_600_000;

#[derive(Debug)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

struct Harness {
    sim: Arc<WorkflowSim>,
    events: Arc<EventRouter>,
    client: WorkflowClient,
    clock: Arc<ManualClock>,
}

async fn harness() -> Harness {
    let clock = Arc::new(ManualClock(AtomicI64::new(START_MS)));
    let org = Org::seeded(clock.clone());
    // The manual clock does not move on its own, so the org's 1 s QPS window would never slide.
    org.set_qps(0);
    let events = Arc::new(EventRouter::new(clock.clone(), SEED_CORP_ID));
    let sim = Arc::new(WorkflowSim::new(org.clone(), events.clone(), clock.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = org.router().merge(sim.clone().router());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let credentials = AppCredentials {
        app_key: SEED_APP_KEY.to_owned(),
        app_secret: SEED_APP_SECRET.to_owned().into(),
        agent_id: Some(SEED_AGENT_ID),
        corp_id: Some(SEED_CORP_ID.to_owned()),
    };
    let mut settings = OpenApiSettings::with_base(&base);
    settings.qps_per_api = 0;
    let api = OpenApi::new(credentials, settings, clock.clone()).unwrap();
    Harness { sim, events, client: WorkflowClient::new(api), clock }
}

fn purchase(originator: &str) -> StartProcessInstance {
    let amount = model::Money::parse("amount", "12800", "HKD").unwrap();
    StartProcessInstance::new(originator, PURCHASE_REQ)
        .with_value(FormValue::text("PO Number", "PO-2024-0042"))
        .with_value(FormValue::money("Amount (HKD)", &amount))
        .with_value(FormValue::table("Items", [[("Item", "Laptop"), ("Qty", "2")]]))
}

/// The published events of `instance`, read by the client's parser, as (kind, staff).
fn events_of(h: &Harness, instance: &str) -> Vec<(ApprovalEventKind, String)> {
    h.events
        .published()
        .into_iter()
        .filter(|e| e.app_key == SEED_APP_KEY)
        .map(|e| ApprovalEvent::from_parts(&e.event_type, &e.payload, Some(SEED_CORP_ID), Some(&e.event_id)).unwrap())
        .filter(|e| e.instance_id == instance)
        .map(|e| (e.kind, e.staff_id))
        .collect()
}

fn ev(kind: ApprovalEventKind, staff: &str) -> (ApprovalEventKind, String) {
    (kind, staff.to_owned())
}

fn assert_refused(result: Result<(), DeliveryError>, code: &str) {
    let err = result.expect_err("the simulator should refuse this");
    assert_eq!(err.disposition(), Disposition::Permanent, "{err}");
    assert!(err.to_string().contains(code), "expected {code} in: {err}");
}

#[tokio::test]
async fn and_approvers_agree_in_turn_and_the_instance_completes() {
    let h = harness().await;
    let request = purchase("staff0815").with_approvers(ActionType::And, &["manager4711", "finance0001"]);
    let id = h.client.start(&request).await.unwrap();

    let instance = h.client.get_instance(&id).await.unwrap();
    assert_eq!(instance.status, InstanceStatus::Running);
    assert_eq!(instance.title, "Ho Siu Fan submitted Purchase requisition");
    assert_eq!(instance.originator_dept_name, "Purchasing");
    assert_eq!(instance.form_value("Amount (HKD)"), Some("12800.00"));
    assert_eq!(instance.running_tasks().count(), 2);
    assert_eq!(h.sim.pending_tasks_for("finance0001").len(), 1);

    for task in instance.tasks.iter() {
        h.clock.0.fetch_add(60_000, Ordering::SeqCst);
        h.client.execute_task(&id, task.task_id, &task.user_id, Decision::Agree, "OK within budget").await.unwrap();
    }

    let done = h.client.get_instance(&id).await.unwrap();
    assert_eq!(done.status, InstanceStatus::Completed);
    assert_eq!(done.result, ApprovalResult::Agree);
    assert!(done.tasks.iter().all(|t| t.status == TaskStatus::Completed && t.result == ApprovalResult::Agree));
    assert_eq!(done.operation_records.len(), 3);
    assert_eq!(done.finish_time.map(|t| t.as_millisecond()), Some(START_MS + 120_000));
    assert!(h.sim.pending_tasks_for("manager4711").is_empty());

    use ApprovalEventKind::*;
    assert_eq!(
        events_of(&h, &id),
        [
            ev(InstanceStarted, "staff0815"),
            ev(TaskStarted, "manager4711"),
            ev(TaskStarted, "finance0001"),
            ev(TaskFinished(TaskOutcome::Agree), "manager4711"),
            ev(TaskFinished(TaskOutcome::Agree), "finance0001"),
            ev(InstanceFinished(Decision::Agree), "staff0815"),
        ]
    );
    let last = h.events.published().pop().unwrap();
    assert_eq!(last.payload["url"].as_str().map(|u| u.contains(&format!("corpid={SEED_CORP_ID}&"))), Some(true));
    assert_eq!(last.payload["processCode"], PURCHASE_REQ);
}

#[tokio::test]
async fn a_refusal_finishes_the_instance_with_refuse() {
    let h = harness().await;
    // No approvers given: the originator's manager (staff0815 → manager4711) decides.
    let id = h.client.start(&purchase("staff0815")).await.unwrap();
    let task = h.sim.pending_tasks_for("manager4711").pop().unwrap();
    assert_eq!((task.instance_id.as_str(), task.form[0].value.as_str()), (id.as_str(), "PO-2024-0042"));

    assert_refused(
        h.client.execute_task(&id, task.task_id, "boss0001", Decision::Agree, "").await,
        "InvalidParameter.NotTaskOwner",
    );
    h.client.execute_task(&id, task.task_id, "manager4711", Decision::Refuse, "over budget").await.unwrap();
    let done = h.client.get_instance(&id).await.unwrap();
    assert_eq!((done.status, done.result), (InstanceStatus::Completed, ApprovalResult::Refuse));
    assert_eq!(done.operation_records[1].remark, "over budget");
    assert_refused(
        h.client.execute_task(&id, task.task_id, "manager4711", Decision::Agree, "").await,
        "InvalidParameter.InstanceNotRunning",
    );

    use ApprovalEventKind::*;
    assert_eq!(
        events_of(&h, &id),
        [
            ev(InstanceStarted, "staff0815"),
            ev(TaskStarted, "manager4711"),
            ev(TaskFinished(TaskOutcome::Refuse), "manager4711"),
            ev(InstanceFinished(Decision::Refuse), "staff0815"),
        ]
    );
    let finish = h.events.published().into_iter().find(|e| e.payload["type"] == "finish").unwrap();
    assert_eq!(finish.payload["remark"], "over budget");
}

#[tokio::test]
async fn terminate_cancels_open_tasks() {
    let h = harness().await;
    let request = purchase("staff0815").with_approvers(ActionType::Or, &["manager4711", "boss0001"]);
    let id = h.client.start(&request).await.unwrap();
    assert_eq!(h.sim.pending_tasks_for("boss0001").len(), 1);
    assert_refused(h.client.terminate(&id, "boss0001", "not mine", false).await, "InvalidParameter");
    h.client.terminate(&id, "staff0815", "withdrawn", false).await.unwrap();

    let done = h.client.get_instance(&id).await.unwrap();
    assert_eq!(done.status, InstanceStatus::Terminated);
    assert_eq!(done.result, ApprovalResult::None);
    assert!(done.tasks.iter().all(|t| t.status == TaskStatus::Canceled));
    assert!(h.sim.pending_tasks_for("boss0001").is_empty());

    use ApprovalEventKind::*;
    assert_eq!(
        events_of(&h, &id),
        [
            ev(InstanceStarted, "staff0815"),
            ev(TaskStarted, "manager4711"),
            ev(TaskStarted, "boss0001"),
            ev(TaskCancelled, "manager4711"),
            ev(TaskCancelled, "boss0001"),
            ev(InstanceTerminated, "staff0815"),
        ]
    );
}

#[tokio::test]
async fn instance_ids_page_by_twenty() {
    let h = harness().await;
    let mut started = Vec::new();
    for _ in 0..25 {
        started.push(h.client.start(&purchase("staff0815")).await.unwrap());
        h.clock.0.fetch_add(1_000, Ordering::SeqCst);
    }
    let end = START_MS + 60_000;
    let first = h.client.list_instance_ids(PURCHASE_REQ, START_MS, end, 0, 50).await.unwrap();
    assert_eq!(first.ids.len(), 20, "clamped to 20");
    let token = first.next_token.expect("more to come");
    let second = h.client.list_instance_ids(PURCHASE_REQ, START_MS, end, token, 20).await.unwrap();
    assert_eq!(second.ids.len(), 5);
    assert_eq!(second.next_token, None);
    assert_eq!([first.ids, second.ids].concat(), started);
    let narrow = h.client.list_instance_ids(PURCHASE_REQ, START_MS + 2_000, START_MS + 3_000, 0, 20).await.unwrap();
    assert_eq!(narrow.ids, started[2..4]);
    let other = h.client.list_instance_ids(PAYMENT, START_MS, end, 0, 20).await.unwrap();
    assert!(other.ids.is_empty() && other.next_token.is_none());
    assert_eq!(h.sim.instances().len(), 25);
}

#[tokio::test]
async fn start_is_validated_and_templates_can_be_added() {
    let h = harness().await;
    let refused = |r: Result<String, DeliveryError>| r.map(|_| ());
    assert_refused(refused(h.client.start(&purchase("leaver0099")).await), "InvalidParameter.UserNotExist");
    assert_refused(
        refused(
            h.client.start(&StartProcessInstance { process_code: "PROC-NOPE".into(), ..purchase("staff0815") }).await,
        ),
        "InvalidParameter.ProcessCodeNotExist",
    );
    assert_refused(
        refused(h.client.start(&purchase("staff0815").with_value(FormValue::text("Colour", "red"))).await),
        "InvalidParameter.FormComponentValues",
    );
    // boss0001 has no manager: approvers must be given.
    assert_refused(refused(h.client.start(&purchase("boss0001")).await), "InvalidParameter.Approvers");
    assert!(h.sim.instances().is_empty());

    let process = json!({
        "process_code": "PROC-DB-LEAVE", "name": "Leave request",
        "components": [{"id": "NumberField-D1", "label": "Days", "component_type": "NumberField", "required": true}],
    });
    h.sim.put_process(process).unwrap();
    assert!(h.sim.put_process(json!({"process_code": "X"})).is_err());
    let leave = StartProcessInstance::new("sales0101", "PROC-DB-LEAVE").with_value(FormValue::number("Days", 2));
    let id = h.client.start(&leave).await.unwrap();
    assert_eq!(h.sim.instance(&id).unwrap().process_name, "Leave request");
    assert_eq!(h.sim.pending_tasks_for("salesmgr0001").len(), 1);

    // The template schema route.
    let schema: Value = h
        .client
        .api()
        .call_new::<(), _>(
            http::Method::GET,
            "/v1.0/workflow/forms/schemas/processCodes",
            &[("processCode", PAYMENT)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(schema["result"]["schemaContent"]["items"][0]["props"]["label"], "Payee");

    h.sim.reset();
    assert!(h.sim.instances().is_empty());
    assert!(h.sim.processes().iter().all(|p| p.process_code != "PROC-DB-LEAVE"));
}

#[tokio::test]
async fn act_from_the_page_publishes_like_the_api() {
    let h = harness().await;
    let id = h.sim.start(SEED_APP_KEY, &purchase("staff0815")).await.unwrap();
    let task = h.sim.pending_tasks_for("manager4711").pop().unwrap();
    let view = h.sim.act(&id, task.task_id, "manager4711", true, "fine").await.unwrap();
    assert_eq!((view.status, view.result), (InstanceStatus::Completed, ApprovalResult::Agree));
    assert_eq!(events_of(&h, &id).len(), 4);
    let err = h.sim.act(&id, task.task_id, "manager4711", true, "").await.unwrap_err();
    assert_eq!(err.code(), "InvalidParameter.InstanceNotRunning");
}
