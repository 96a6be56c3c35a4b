//! Approval write-back and the employee list against the simulator.

use super::*;
use crate::netsuite::account::AccountId;
use crate::netsuite::auth::{Authorizer, TbaCredentials, TbaSigner};
use crate::netsuite::canonical::read;
use crate::netsuite::client::NetSuiteClient;
use crate::netsuite::sim::{seed, NetSuiteSim, SimConfig};
use connect::http::{HttpClient, HttpSettings};
use connect::{Clock, Disposition};
use jiff::Timestamp;
use serde_json::json;
use sim::{FaultSpec, RunningSim, Simulator};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
struct ManualClock(AtomicI64);

impl ManualClock {
    fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

struct Rig {
    sim: Arc<NetSuiteSim>,
    server: RunningSim,
    clock: Arc<ManualClock>,
    client: NetSuiteClient,
}

async fn rig() -> Rig {
    let start = "2024-03-15T04:00:00Z".parse::<Timestamp>().unwrap().as_millisecond();
    let clock = Arc::new(ManualClock(AtomicI64::new(start)));
    let sim = Arc::new(NetSuiteSim::new(SimConfig::default(), clock.clone()));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let creds = TbaCredentials {
        consumer_key: seed::CONSUMER_KEY.to_owned(),
        consumer_secret: seed::CONSUMER_SECRET.to_owned().into(),
        token_id: seed::TOKEN_ID.to_owned(),
        token_secret: seed::TOKEN_SECRET.to_owned().into(),
    };
    let signer = TbaSigner::new(AccountId::parse(seed::ACCOUNT).unwrap(), creds, clock.clone());
    let http = HttpClient::new(HttpSettings::loopback()).unwrap();
    let base = format!("{}/services/rest", server.url());
    let client = NetSuiteClient::new(http, &base, Authorizer::Tba(signer), 2, clock.clone()).unwrap();
    Rig { sim, server, clock, client }
}

impl Rig {
    /// The decision request a card for requisition `id` would carry, as the canonical read gives it.
    async fn request(&self, id: &str, decision: Decision, key: &str) -> DecisionRequest {
        let record = read(&self.client, RecordType::PurchaseRequisition, id).await.unwrap().unwrap();
        DecisionRequest {
            entity: record.entity.to_owned(),
            entity_id: record.entity_id.clone(),
            approval: record.data["approval"].clone(),
            expected_version: record.version.clone(),
            decision,
            comment: "Approved in DingTalk by Lee Wai Kit: ok for Q2".to_owned(),
            idempotency_key: key.to_owned(),
            erp_user: Some("150".to_owned()),
        }
    }

    fn patches(&self) -> usize {
        self.server.state.requests(0, None).iter().filter(|e| e.method == "PATCH").count()
    }

    fn requisition(&self, id: &str) -> Value {
        self.sim.record(RecordType::PurchaseRequisition, id).unwrap()
    }
}

#[tokio::test]
async fn approve_is_written_with_the_key_and_a_retry_is_already_applied() {
    let rig = rig().await;
    let request = rig.request("4691", Decision::Approve, "appr-4691-1").await;
    let outcome = decide(&rig.client, &request).await.unwrap();

    let stored = rig.requisition("4691");
    assert_eq!(stored["approvalStatus"]["id"], "2");
    assert_eq!(stored["status"]["refName"], "Pending Order");
    assert_eq!(stored["memo"], "Approved in DingTalk by Lee Wai Kit: ok for Q2 [dingbridge:appr-4691-1]");
    assert_eq!(stored["lastModifiedDate"], "2024-03-15T04:00:00Z");
    let after = read(&rig.client, RecordType::PurchaseRequisition, "4691").await.unwrap().unwrap();
    assert_eq!(after.data["pending_approval"], false);
    assert_eq!(outcome, DecisionOutcome::Applied { version: Some(after.version.clone()) });
    assert_ne!(after.version, request.expected_version);
    assert_eq!(rig.patches(), 1);
    let patch = rig.server.state.requests(0, None).into_iter().find(|e| e.method == "PATCH").unwrap();
    assert_eq!(patch.path, "/services/rest/record/v1/purchaseRequisition/4691");

    // The answer was lost; the same request again writes nothing.
    rig.clock.advance(Duration::from_secs(120));
    assert_eq!(decide(&rig.client, &request).await.unwrap(), DecisionOutcome::AlreadyApplied);
    assert_eq!(rig.patches(), 1);
    assert_eq!(rig.requisition("4691")["lastModifiedDate"], "2024-03-15T04:00:00Z");
}

#[tokio::test]
async fn reject_is_written_as_approval_status_3() {
    let rig = rig().await;
    let mut request = rig.request("4690", Decision::Reject, "rej-4690").await;
    request.comment = String::new();
    let outcome = decide(&rig.client, &request).await.unwrap();
    assert!(matches!(outcome, DecisionOutcome::Applied { version: Some(_) }), "{outcome:?}");
    let stored = rig.requisition("4690");
    assert_eq!(stored["approvalStatus"]["id"], "3");
    assert_eq!(stored["status"]["refName"], "Rejected");
    assert_eq!(stored["memo"], "[dingbridge:rej-4690]");
    let body: Value = serde_json::from_str(
        &rig.server.state.requests(0, None).into_iter().find(|e| e.method == "PATCH").unwrap().body,
    )
    .unwrap();
    assert_eq!(body["approvalStatus"], json!({"id": "3"}));
}

#[tokio::test]
async fn purchase_orders_are_decided_too() {
    let rig = rig().await;
    let record = read(&rig.client, RecordType::PurchaseOrder, "4712").await.unwrap().unwrap();
    let request = DecisionRequest {
        entity: record.entity.to_owned(),
        entity_id: record.entity_id.clone(),
        approval: json!({"record_type": "purchaseOrder", "id": "4712"}),
        expected_version: record.version.clone(),
        decision: Decision::Approve,
        comment: "ok".to_owned(),
        idempotency_key: "po-4712".to_owned(),
        erp_user: None,
    };
    assert!(matches!(decide(&rig.client, &request).await.unwrap(), DecisionOutcome::Applied { .. }));
    let stored = rig.sim.record(RecordType::PurchaseOrder, "4712").unwrap();
    assert_eq!(stored["approvalStatus"]["id"], "2");
    assert_eq!(stored["orderStatus"]["id"], "B");
    assert_eq!(stored["status"]["refName"], "Pending Receipt");
}

#[tokio::test]
async fn a_record_changed_after_the_card_is_refused_and_not_written() {
    let rig = rig().await;
    let request = rig.request("4691", Decision::Approve, "appr-4691-2").await;
    // Someone edits the requisition in NetSuite (a later minute, so its version moves).
    rig.clock.advance(Duration::from_secs(60));
    rig.sim
        .put_record("purchaseRequisition", json!({"id": "4691", "item": {"items": [{"line": 1, "quantity": 900.0}]}}))
        .await
        .unwrap();
    let outcome = decide(&rig.client, &request).await.unwrap();
    let DecisionOutcome::Refused { reason, current_status } = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("changed in NetSuite"), "{reason}");
    assert!(reason.contains(&request.expected_version), "{reason}");
    assert_eq!(current_status.as_deref(), Some("pending_approval"));
    assert_eq!(rig.patches(), 0);
    assert_eq!(rig.requisition("4691")["approvalStatus"]["id"], "1");
}

#[tokio::test]
async fn a_record_decided_elsewhere_is_refused() {
    let rig = rig().await;
    let request = rig.request("4691", Decision::Approve, "appr-4691-3").await;
    // Another approver (another key) rejected it first.
    let mut other = request.clone();
    other.decision = Decision::Reject;
    other.idempotency_key = "someone-else".to_owned();
    assert!(matches!(decide(&rig.client, &other).await.unwrap(), DecisionOutcome::Applied { .. }));
    let outcome = decide(&rig.client, &request).await.unwrap();
    assert_eq!(
        outcome,
        DecisionOutcome::Refused {
            reason: "already rejected in NetSuite".to_owned(),
            current_status: Some("rejected".to_owned())
        }
    );
    assert_eq!(rig.patches(), 1, "only the first decision was written");
}

#[tokio::test]
async fn a_deleted_record_is_refused_and_the_sim_refuses_decided_records() {
    let rig = rig().await;
    let mut request = rig.request("4691", Decision::Approve, "appr-gone").await;
    request.approval["id"] = json!("4999");
    let DecisionOutcome::Refused { reason, .. } = decide(&rig.client, &request).await.unwrap() else { panic!() };
    assert!(reason.starts_with("deleted in NetSuite"), "{reason}");

    // The write itself refused (decided between the read and the PATCH) becomes a refusal.
    rig.sim.put_record("purchaseRequisition", json!({"id": "4690", "approvalStatus": {"id": "2"}})).await.unwrap();
    let refused = rig
        .client
        .try_update_record(RecordType::PurchaseRequisition, "4690", &json!({"approvalStatus": {"id": "3"}}))
        .await
        .unwrap()
        .unwrap_err()
        .message;
    assert!(refused.contains("no longer pending approval"), "{refused}");
}

#[tokio::test]
async fn server_errors_stay_retryable_errors() {
    let rig = rig().await;
    let request = rig.request("4691", Decision::Approve, "appr-503").await;
    rig.server.state.set_faults(FaultSpec { status: Some(503), ..FaultSpec::default() }).unwrap();
    let err = decide(&rig.client, &request).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Retry, "{err}");
    rig.server.state.clear_faults();
    assert_eq!(rig.requisition("4691")["approvalStatus"]["id"], "1");
}

#[tokio::test]
async fn users_are_the_seeded_employees() {
    let rig = rig().await;
    let users = users(&rig.client).await.unwrap();
    let chan = users.iter().find(|u| u.id == "159").unwrap();
    assert_eq!(
        chan,
        &ErpUser {
            id: "159".to_owned(),
            name: "Tai Man Chan".to_owned(),
            email: Some("tm.chan@example.com.hk".to_owned()),
            mobile: Some("98765432".to_owned()),
            job_number: Some("E1024".to_owned()),
            active: true,
        }
    );
    let by_job = |job: &str| users.iter().find(|u| u.job_number.as_deref() == Some(job)).unwrap();
    assert_eq!(by_job("E0001").mobile.as_deref(), Some("91234567"), "+852 removed");
    assert_eq!(by_job("E0002").mobile.as_deref(), Some("93456781"), "852- removed");
    assert_eq!(by_job("E2011").mobile.as_deref(), Some("51234568"));
    assert_eq!(by_job("E1031").email.as_deref(), Some("sf.ho@harbour-trading.example.hk"));
    assert_eq!(by_job("E2017").name, "Hoi Yan Ng");
    assert!(!by_job("E3150").active, "Chow Siu Ming has left");
    assert_eq!(users.iter().filter(|u| !u.active).count(), 1);
    let approvals = users.iter().find(|u| u.id == "205").unwrap();
    assert_eq!(approvals.name, "Purchasing Approvals", "entityid when there is no first/last name");
    assert_eq!(approvals.job_number, None);
}

#[test]
fn mobiles_lose_the_hong_kong_country_code_only() {
    assert_eq!(local_mobile("+852 9123 4567").as_deref(), Some("91234567"));
    assert_eq!(local_mobile("(852) 5123 4568").as_deref(), Some("51234568"));
    assert_eq!(local_mobile("0085291234567").as_deref(), Some("91234567"));
    assert_eq!(local_mobile("852-9345-6781").as_deref(), Some("93456781"));
    // A local number that starts with 852 keeps it.
    assert_eq!(local_mobile("8521 2345").as_deref(), Some("85212345"));
    assert_eq!(local_mobile("+86 138 0013 8000").as_deref(), Some("8613800138000"));
    assert_eq!(local_mobile(" - "), None);
}
