//! Approval write-back through TASKPROCESSING against the simulator.

use super::*;
use crate::sap::auth::SapAuth;
use crate::sap::client::{SapClient, SapConfig};
use crate::sap::sim::{seed, SapSim};
use crate::sap::uom::UomTable;
use connect::http::{HttpClient, HttpSettings};
use connect::{Disposition, SystemClock};
use secrecy::SecretString;
use serde_json::json;
use sim::{FaultSpec, RunningSim, Simulator};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

struct Rig {
    sim: Arc<SapSim>,
    running: RunningSim,
    client: SapClient,
}

async fn rig() -> Rig {
    let sim = Arc::new(SapSim::new());
    let running = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut config = SapConfig::new(Url::parse(&running.url()).unwrap());
    config.sap_client = Some(seed::SAP_CLIENT.to_owned());
    let client = SapClient::new(
        HttpClient::new(HttpSettings { timeout: Duration::from_secs(10), ..HttpSettings::loopback() }).unwrap(),
        SapAuth::Basic { user: seed::USER.to_owned(), password: SecretString::from(seed::PASSWORD.to_owned()) },
        config,
        UomTable::default(),
        Arc::new(SystemClock),
    );
    Rig { sim, running, client }
}

impl Rig {
    async fn request(&self, number: &str, decision: Decision, key: &str) -> DecisionRequest {
        let record = read_purchase_request(&self.client, number).await.unwrap().unwrap();
        DecisionRequest {
            entity: record.entity.to_owned(),
            entity_id: record.entity_id.clone(),
            approval: record.data["approval"].clone(),
            expected_version: record.version.clone(),
            decision,
            comment: "Decided in DingTalk by Lee Wai Kit".to_owned(),
            idempotency_key: key.to_owned(),
            erp_user: Some("LEEWK".to_owned()),
        }
    }

    /// Decision POSTs the simulator received.
    fn decisions(&self) -> usize {
        self.running
            .state
            .requests(0, None)
            .iter()
            .filter(|e| e.method == "POST" && e.path.ends_with("/Decision"))
            .count()
    }

    async fn task(&self, instance: &str) -> Task {
        let query = Query::default().filter(format!("InstanceID eq '{instance}'"));
        self.client.tasks(&query).await.unwrap().remove(0)
    }
}

#[tokio::test]
async fn approve_releases_the_requisition_and_a_retry_is_already_applied() {
    let rig = rig().await;
    let request = rig.request("10000045", Decision::Approve, "appr-45").await;
    let outcome = decide(&rig.client, &request).await.unwrap();

    let after = read_purchase_request(&rig.client, "10000045").await.unwrap().unwrap();
    assert_eq!(after.data["status"], "approved");
    assert_eq!(after.data["pending_approval"], false);
    assert_ne!(after.version, request.expected_version);
    assert_eq!(outcome, DecisionOutcome::Applied { version: Some(after.version.clone()) });
    let task = rig.task(seed::PR_TASK_IDS[0]).await;
    assert_eq!(task.status, "COMPLETED");
    assert_eq!(task.processor.as_deref(), Some(seed::USER));
    let comments = rig.client.task_comments("LOCAL", seed::PR_TASK_IDS[0]).await.unwrap();
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].text, "Decided in DingTalk by Lee Wai Kit [dingbridge:appr-45]");
    assert_eq!(rig.decisions(), 1);
    let journal = rig.running.state.requests(0, None);
    let decision = journal.iter().find(|e| e.path.ends_with("/Decision")).unwrap();
    assert!(decision.query.as_deref().unwrap().contains("0001"), "the POSITIVE option");
    // The other pending requisition and the PO keep their tasks.
    assert_eq!(rig.task(seed::PR_TASK_IDS[1]).await.status, "READY");
    assert_eq!(rig.task(seed::TASK_ID).await.status, "READY");

    assert_eq!(decide(&rig.client, &request).await.unwrap(), DecisionOutcome::AlreadyApplied);
    assert_eq!(rig.decisions(), 1, "no second decision");
}

#[tokio::test]
async fn reject_rejects_the_requisition_with_the_negative_option() {
    let rig = rig().await;
    let request = rig.request("10000046", Decision::Reject, "rej-46").await;
    assert!(matches!(decide(&rig.client, &request).await.unwrap(), DecisionOutcome::Applied { version: Some(_) }));
    let after = read_purchase_request(&rig.client, "10000046").await.unwrap().unwrap();
    assert_eq!(after.data["status"], "rejected");
    assert_eq!(after.data["pending_approval"], false);
    let journal = rig.running.state.requests(0, None);
    let decision = journal.iter().find(|e| e.path.ends_with("/Decision")).unwrap();
    assert!(decision.query.as_deref().unwrap().contains("0002"), "the NEGATIVE option");
    // Rejected requisitions no longer wait.
    let pending = crate::sap::canonical::pending_purchase_requests(&rig.client).await.unwrap();
    assert!(pending.iter().all(|r| r.entity_id != "10000046"));
    assert_eq!(decide(&rig.client, &request).await.unwrap(), DecisionOutcome::AlreadyApplied);
}

#[tokio::test]
async fn purchase_orders_are_released_through_their_task() {
    let rig = rig().await;
    let record = read_purchase_order(&rig.client, "4500000123").await.unwrap().unwrap();
    let request = DecisionRequest {
        entity: record.entity.to_owned(),
        entity_id: record.entity_id.clone(),
        approval: json!({}),
        expected_version: record.version.clone(),
        decision: Decision::Approve,
        comment: String::new(),
        idempotency_key: "po-123".to_owned(),
        erp_user: None,
    };
    assert!(matches!(decide(&rig.client, &request).await.unwrap(), DecisionOutcome::Applied { .. }));
    assert!(!rig.client.purchase_order("4500000123").await.unwrap().release_not_completed);
    assert_eq!(rig.task(seed::TASK_ID).await.status, "COMPLETED");
}

#[tokio::test]
async fn a_requisition_changed_after_the_card_is_refused_and_not_decided() {
    let rig = rig().await;
    let request = rig.request("10000045", Decision::Approve, "appr-45-changed").await;
    rig.sim
        .put_record(
            "A_PurchaseRequisitionItem",
            json!({"PurchaseRequisition": "10000045", "PurchaseRequisitionItem": "10", "RequestedQuantity": "1500"}),
        )
        .await
        .unwrap();
    let outcome = decide(&rig.client, &request).await.unwrap();
    let DecisionOutcome::Refused { reason, current_status } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("changed in SAP"), "{reason}");
    assert_eq!(current_status.as_deref(), Some("pending_approval"));
    assert_eq!(rig.decisions(), 0);
    assert_eq!(rig.task(seed::PR_TASK_IDS[0]).await.status, "READY");
}

#[tokio::test]
async fn a_requisition_decided_elsewhere_is_refused() {
    let rig = rig().await;
    let request = rig.request("10000045", Decision::Approve, "appr-45-late").await;
    // Released in My Inbox first (a comment without our key).
    rig.client.decide("LOCAL", seed::PR_TASK_IDS[0], "0001", "ok from SAP GUI").await.unwrap();
    let outcome = decide(&rig.client, &request).await.unwrap();
    assert_eq!(
        outcome,
        DecisionOutcome::Refused {
            reason: "already approved (released) in SAP".to_owned(),
            current_status: Some("approved".to_owned())
        }
    );
    assert_eq!(rig.decisions(), 1, "only the SAP GUI decision");
}

#[tokio::test]
async fn a_decision_on_a_completed_work_item_is_a_refusal_with_sap_text() {
    let rig = rig().await;
    rig.client.decide("LOCAL", seed::PR_TASK_IDS[1], "0001", "first").await.unwrap();
    let refused =
        rig.client.try_decide("LOCAL", seed::PR_TASK_IDS[1], "0002", "second").await.unwrap().unwrap_err().message;
    assert!(refused.contains("already completed"), "{refused}");
    // A requisition that does not exist is refused as deleted.
    let mut request = rig.request("10000045", Decision::Approve, "gone").await;
    request.approval["purchase_requisition"] = json!("10009999");
    let DecisionOutcome::Refused { reason, .. } = decide(&rig.client, &request).await.unwrap() else { panic!() };
    assert!(reason.starts_with("deleted in SAP"), "{reason}");
}

#[tokio::test]
async fn task_objects_name_the_document_by_navigation_and_expand() {
    let rig = rig().await;
    let objects = rig.client.task_objects("LOCAL", seed::PR_TASK_IDS[0]).await.unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].object_id, "10000045");
    assert_eq!(objects[0].object_type, seed::OBJECT_TYPE_PR);
    assert_eq!(work_item(&rig.client, "READY", "0010000046").await.unwrap()[0].instance_id, seed::PR_TASK_IDS[1]);
    assert!(work_item(&rig.client, "COMPLETED", "10000046").await.unwrap().is_empty());
}

#[tokio::test]
async fn server_errors_stay_retryable_errors() {
    let rig = rig().await;
    let request = rig.request("10000045", Decision::Approve, "appr-503").await;
    rig.running.state.set_faults(FaultSpec { status: Some(503), ..FaultSpec::default() }).unwrap();
    let err = decide(&rig.client, &request).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Retry, "{err}");
    rig.running.state.clear_faults();
    assert_eq!(rig.task(seed::PR_TASK_IDS[0]).await.status, "READY");
}

#[test]
fn options_are_picked_by_nature_then_by_text() {
    let option = |key: &str, text: &str, nature: &str| DecisionOption {
        origin: "LOCAL".to_owned(),
        instance_id: "1".to_owned(),
        key: key.to_owned(),
        text: text.to_owned(),
        comment_mandatory: false,
        nature: nature.to_owned(),
    };
    let natured = [option("A", "Freigeben", "POSITIVE"), option("B", "Ablehnen", "NEGATIVE")];
    assert_eq!(pick(&natured, Decision::Approve).unwrap().key, "A");
    assert_eq!(pick(&natured, Decision::Reject).unwrap().key, "B");
    let texts = [option("1", "Approve", ""), option("2", "Reject", "")];
    assert_eq!(pick(&texts, Decision::Approve).unwrap().key, "1");
    assert_eq!(pick(&texts, Decision::Reject).unwrap().key, "2");
    assert!(pick(&[option("9", "Forward", "")], Decision::Approve).is_none());
}
