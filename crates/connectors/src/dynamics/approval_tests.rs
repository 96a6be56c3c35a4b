//! Approval write-back through the approvals extension, and the employee list, against the simulator.

use super::*;
use crate::dynamics::auth::{token_cache, AadTokenFetcher, AppCredentials};
use crate::dynamics::bc::{BcClient, BC_CONCURRENCY};
use crate::dynamics::client::ODataTransport;
use crate::dynamics::sim::{seed, DynamicsSim};
use crate::dynamics::BC_RESOURCE;
use connect::http::{HttpClient, HttpSettings};
use connect::{Clock, Disposition, SystemClock};
use secrecy::SecretString;
use serde_json::json;
use sim::{FaultSpec, RunningSim, Simulator};
use std::sync::Arc;

const PO_106022: &str = "9b0e7d12-1a2d-ee11-8179-000d3a0a1c52";

struct Rig {
    sim: Arc<DynamicsSim>,
    server: RunningSim,
    bc: BcClient,
}

async fn rig() -> Rig {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sim = Arc::new(DynamicsSim::new(clock.clone()));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let creds = AppCredentials {
        tenant_id: seed::TENANT_ID.to_owned(),
        client_id: seed::CLIENT_ID.to_owned(),
        client_secret: SecretString::from(seed::CLIENT_SECRET.to_owned()),
    };
    let http = || HttpClient::new(HttpSettings::loopback()).unwrap();
    let fetcher = AadTokenFetcher::new(http(), &server.url(), &creds, BC_RESOURCE, clock.clone()).unwrap();
    let transport = ODataTransport::new(http(), token_cache(fetcher, clock.clone()), clock, BC_CONCURRENCY);
    let bc = BcClient::new(transport, &server.url(), seed::TENANT_ID, seed::ENVIRONMENT).unwrap();
    Rig { sim, server, bc }
}

impl Rig {
    async fn request(&self, id: &str, decision: Decision, key: &str) -> DecisionRequest {
        let order = self.bc.purchase_order(seed::COMPANY_ID, id).await.unwrap();
        let record = purchase_request_from_bc_order(&order).unwrap();
        DecisionRequest {
            entity: record.entity.to_owned(),
            entity_id: record.entity_id.clone(),
            approval: record.data["approval"].clone(),
            expected_version: record.version.clone(),
            decision,
            comment: "Decided in DingTalk by Lee Wai Kit".to_owned(),
            idempotency_key: key.to_owned(),
            erp_user: Some("E0001".to_owned()),
        }
    }

    /// Approve/reject actions the simulator received.
    fn actions(&self) -> usize {
        self.server
            .state
            .requests(0, None)
            .iter()
            .filter(|e| e.method == "POST" && e.path.contains("Microsoft.NAV"))
            .count()
    }

    async fn approval(&self, id: &str) -> Value {
        self.bc.purchase_order_approval(seed::COMPANY_ID, id).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn approve_opens_the_order_records_the_key_and_a_retry_is_already_applied() {
    let rig = rig().await;
    let request = rig.request(seed::PO_106021, Decision::Approve, "appr-106021").await;
    let etag_before = rig.approval(seed::PO_106021).await["@odata.etag"].clone();
    let outcome = decide(&rig.bc, seed::COMPANY_ID, &request).await.unwrap();

    let order = rig.bc.purchase_order(seed::COMPANY_ID, seed::PO_106021).await.unwrap();
    assert_eq!(order.status.as_deref(), Some("Open"));
    let after = purchase_request_from_bc_order(&order).unwrap();
    assert_eq!(after.data["pending_approval"], false);
    assert_ne!(after.version, request.expected_version);
    assert_eq!(outcome, DecisionOutcome::Applied { version: Some(after.version.clone()) });
    let approval = rig.approval(seed::PO_106021).await;
    assert_eq!(approval["lastDecisionKey"], "appr-106021");
    assert_eq!(approval["lastDecisionComment"], "Decided in DingTalk by Lee Wai Kit");
    assert_ne!(approval["@odata.etag"], etag_before);
    assert_eq!(approval["@odata.etag"].as_str(), order.etag.as_deref(), "one etag for both APIs");
    let journal = rig.server.state.requests(0, None);
    let action = journal.iter().find(|e| e.path.contains("Microsoft.NAV")).unwrap();
    assert!(action.path.ends_with(&format!("purchaseOrderApprovals({})/Microsoft.NAV.approve", seed::PO_106021)));
    assert_eq!(action.headers.get("if-match"), etag_before.as_str().map(str::to_owned).as_ref());
    assert_eq!(serde_json::from_str::<Value>(&action.body).unwrap()["decisionKey"], "appr-106021");

    assert_eq!(decide(&rig.bc, seed::COMPANY_ID, &request).await.unwrap(), DecisionOutcome::AlreadyApplied);
    assert_eq!(rig.actions(), 1, "no second write");
}

#[tokio::test]
async fn reject_puts_the_order_back_to_draft() {
    let rig = rig().await;
    rig.sim.put_record("purchaseOrders", json!({"id": PO_106022, "status": "In Review"})).await.unwrap();
    let request = rig.request(PO_106022, Decision::Reject, "rej-106022").await;
    assert!(matches!(
        decide(&rig.bc, seed::COMPANY_ID, &request).await.unwrap(),
        DecisionOutcome::Applied { version: Some(_) }
    ));
    let order = rig.bc.purchase_order(seed::COMPANY_ID, PO_106022).await.unwrap();
    assert_eq!(order.status.as_deref(), Some("Draft"));
    assert_eq!(rig.approval(PO_106022).await["lastDecisionKey"], "rej-106022");
    let journal = rig.server.state.requests(0, None);
    assert!(journal.iter().any(|e| e.path.ends_with("/Microsoft.NAV.reject")));
    assert_eq!(decide(&rig.bc, seed::COMPANY_ID, &request).await.unwrap(), DecisionOutcome::AlreadyApplied);
}

#[tokio::test]
async fn an_order_changed_after_the_card_is_refused_and_not_written() {
    let rig = rig().await;
    let request = rig.request(seed::PO_106021, Decision::Approve, "appr-changed").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    rig.sim
        .put_record("purchaseOrders", json!({"id": seed::PO_106021, "vendorName": "Another Vendor Ltd"}))
        .await
        .unwrap();
    let outcome = decide(&rig.bc, seed::COMPANY_ID, &request).await.unwrap();
    let DecisionOutcome::Refused { reason, current_status } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("changed in Business Central"), "{reason}");
    assert_eq!(current_status.as_deref(), Some("pending_approval"));
    assert_eq!(rig.actions(), 0);
}

#[tokio::test]
async fn an_order_decided_elsewhere_is_refused() {
    let rig = rig().await;
    let request = rig.request(seed::PO_106021, Decision::Approve, "appr-late").await;
    let mut other = request.clone();
    other.decision = Decision::Reject;
    other.idempotency_key = "someone-else".to_owned();
    assert!(matches!(decide(&rig.bc, seed::COMPANY_ID, &other).await.unwrap(), DecisionOutcome::Applied { .. }));
    let outcome = decide(&rig.bc, seed::COMPANY_ID, &request).await.unwrap();
    let DecisionOutcome::Refused { reason, .. } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("already rejected"), "{reason}");
    assert_eq!(rig.actions(), 1);
}

#[tokio::test]
async fn bc_refusals_of_the_action_carry_bc_text_and_deleted_orders_are_refused() {
    let rig = rig().await;
    let etag = rig.approval(seed::PO_106021).await["@odata.etag"].as_str().unwrap().to_owned();
    // The order is not in review: BC's dialog error.
    let refused = rig
        .bc
        .decide_purchase_order(seed::COMPANY_ID, PO_106022, true, "", "k1", "*")
        .await
        .unwrap()
        .unwrap_err()
        .message;
    assert!(refused.starts_with("Status must be equal to 'Pending Approval'"), "{refused}");
    assert!(refused.contains("Current value is 'Draft'"), "{refused}");
    // A stale etag: 412.
    rig.sim.put_record("purchaseOrders", json!({"id": seed::PO_106021, "vendorName": "Changed"})).await.unwrap();
    let stale = rig
        .bc
        .decide_purchase_order(seed::COMPANY_ID, seed::PO_106021, true, "", "k2", &etag)
        .await
        .unwrap()
        .unwrap_err()
        .message;
    assert!(stale.contains("already changed"), "{stale}");
    assert_eq!(
        rig.bc.purchase_order(seed::COMPANY_ID, seed::PO_106021).await.unwrap().status.as_deref(),
        Some("In Review")
    );

    let mut request = rig.request(seed::PO_106021, Decision::Approve, "gone").await;
    request.approval["id"] = json!("00000000-0000-0000-0000-000000000000");
    let DecisionOutcome::Refused { reason, .. } = decide(&rig.bc, seed::COMPANY_ID, &request).await.unwrap() else {
        panic!()
    };
    assert!(reason.starts_with("deleted in Business Central"), "{reason}");
}

#[tokio::test]
async fn server_errors_stay_retryable_errors() {
    let rig = rig().await;
    let request = rig.request(seed::PO_106021, Decision::Approve, "appr-503").await;
    rig.server.state.set_faults(FaultSpec { status: Some(503), ..FaultSpec::default() }).unwrap();
    let err = decide(&rig.bc, seed::COMPANY_ID, &request).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Retry, "{err}");
    rig.server.state.clear_faults();
    assert_eq!(rig.approval(seed::PO_106021).await["status"], "In Review");
}

#[tokio::test]
async fn users_are_the_company_employees() {
    let rig = rig().await;
    let users = users(&rig.bc, seed::COMPANY_ID).await.unwrap();
    assert_eq!(users.len(), 7);
    let chan = users.iter().find(|u| u.id == "E1024").unwrap();
    assert_eq!(
        chan,
        &ErpUser {
            id: "E1024".to_owned(),
            name: "Tai Man Chan".to_owned(),
            email: Some("tm.chan@example.com.hk".to_owned()),
            mobile: Some("98765432".to_owned()),
            job_number: Some("E1024".to_owned()),
            active: true,
        }
    );
    let by_job = |job: &str| users.iter().find(|u| u.job_number.as_deref() == Some(job)).unwrap();
    assert_eq!(by_job("E0001").mobile.as_deref(), Some("91234567"));
    assert_eq!(by_job("E0002").mobile.as_deref(), Some("93456781"));
    assert_eq!(by_job("E2011").mobile.as_deref(), Some("51234568"));
    assert_eq!(by_job("E1031").email.as_deref(), Some("sf.ho@harbour-trading.example.hk"));
    assert_eq!(by_job("E2017").name, "Hoi Yan Ng");
    assert!(!by_job("E3150").active);
    assert_eq!(users.iter().filter(|u| !u.active).count(), 1);
}
