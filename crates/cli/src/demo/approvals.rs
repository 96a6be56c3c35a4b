//! The demo's approval scenarios: S1 (a NetSuite requisition approved on its DingTalk card and
//! written back once) and S2 (a junior clerk's click refused, explained and audited; SAP not
//! called). SAP requisition 10000046 and Business Central PO 106021 are left waiting for a person
//! to decide them on the simulator's page.

use super::{until, ScenarioResult, Timeline};
use crate::gateway::Gateway;
use crate::sims::DingTalkHarness;
use anyhow::Context;
use connectors::netsuite::client::RecordType;
use engine::approvals::machine::{self, Status};
use serde_json::json;
use std::time::{Duration, Instant};

use super::erp::{reconcile, ErpSims};

const WAIT: Duration = Duration::from_secs(20);

async fn status(gateway: &Gateway, key: &str) -> anyhow::Result<Option<Status>> {
    let approval = server::approvals::load(&gateway.state, key).await.map_err(|e| anyhow::anyhow!(e))?;
    Ok(approval.map(|a| a.status))
}

async fn wait_status(gateway: &Gateway, key: &str, what: &str, want: impl Fn(&Status) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if status(gateway, key).await?.as_ref().is_some_and(&want) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what} did not happen within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn card_param(dingtalk: &DingTalkHarness, card: &str, viewer: Option<&str>, name: &str) -> Option<String> {
    let view = match viewer {
        None => dingtalk.sim().cards.card(card),
        Some(user) => dingtalk.sim().cards.cards_for_user(user).into_iter().find(|c| c.out_track_id == card),
    };
    view.and_then(|v| v.params.get(name).cloned())
}

pub async fn scenario_approval(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
    sims: &ErpSims,
) -> ScenarioResult {
    ScenarioResult::of("S1", "NetSuite requisition -> card to the approvers by amount and role -> click verified -> written back once -> card + requester told", approval_steps(timeline, dingtalk, gateway, sims)).await
}

async fn approval_steps(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
    sims: &ErpSims,
) -> anyhow::Result<()> {
    let key = machine::approval_key("netsuite", "purchase_request", "4691");
    let card = machine::card_id(&key);
    reconcile(gateway, "netsuite", "purchaseRequisition").await?;
    timeline.line("NS", "requisition PR000232 (HKD 1,531.20, Chan Tai Man) is pending approval");
    wait_status(gateway, &key, "the approval to open", |s| matches!(s, Status::Pending)).await?;
    let waiting = until("the approval card", WAIT, || card_param(dingtalk, &card, None, "status")).await?;
    timeline.line("OUT", format!("finance group card: Purchase requisition PR000232 | {waiting}"));
    let clicked = Instant::now();
    dingtalk.sim().cards.click(&card, "finance0001", "approve", json!({})).await?;
    timeline.line("IN", "Cheung Mei Ling (finance0001) clicks Approve; the click comes back over Stream");
    wait_status(gateway, &key, "the NetSuite write-back", |s| matches!(s, Status::Approved { .. })).await?;
    let record =
        sims.netsuite.record(RecordType::PurchaseRequisition, "4691").context("PR 4691 in the NetSuite sim")?;
    let approval_status = record["approvalStatus"]["refName"].as_str().unwrap_or_default().to_owned();
    anyhow::ensure!(approval_status == "Approved", "NetSuite shows {approval_status}");
    timeline.line(
        "NS",
        format!(
            "PATCH purchaseRequisition/4691 approvalStatus=Approved, memo \"{}\" ({} ms after the click)",
            record["memo"].as_str().unwrap_or_default(),
            clicked.elapsed().as_millis()
        ),
    );
    let shown = until("the updated card", WAIT, || {
        card_param(dingtalk, &card, None, "status").filter(|s| s.starts_with("Approved by"))
    })
    .await?;
    timeline.line("OUT", format!("every copy of the card: {shown}; buttons off"));
    until("the requester's notice", WAIT, || {
        dingtalk
            .sim()
            .messages
            .user_inbox("manager4711")
            .into_iter()
            .find(|i| i.content.to_string().contains("approved by"))
    })
    .await?;
    timeline.line("OUT", "work notice to Chan Tai Man (manager4711): your requisition PR000232 was approved");
    // A second click finds it decided: nothing more reaches NetSuite.
    dingtalk.sim().cards.click(&card, "pay0002", "approve", json!({})).await?;
    until("the late click's note", WAIT, || card_param(dingtalk, &card, Some("pay0002"), "note")).await?;
    timeline.line("IN", "Lam Chi Keung clicks Approve too late: \"Not accepted: already approved by Cheung Mei Ling\"");
    Ok(())
}

pub async fn scenario_authority(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
    sims: &ErpSims,
) -> ScenarioResult {
    ScenarioResult::of(
        "S2",
        "a click without the role is refused, explained on the card and audited; the ERP is not called",
        authority_steps(timeline, dingtalk, gateway, sims),
    )
    .await
}

async fn authority_steps(
    timeline: &Timeline,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
    sims: &ErpSims,
) -> anyhow::Result<()> {
    let key = machine::approval_key("s4", "purchase_request", "10000045");
    let card = machine::card_id(&key);
    reconcile(gateway, "s4", "A_PurchaseRequisitionHeader").await?;
    reconcile(gateway, "dynamics", "purchaseOrders").await?;
    wait_status(gateway, &key, "the SAP approval to open", |s| matches!(s, Status::Pending)).await?;
    until("the SAP approval card", WAIT, || card_param(dingtalk, &card, None, "status")).await?;
    timeline.line("OUT", "finance group card: Purchase requisition 10000045 (SAP), HKD 1,020");
    let decisions_before = super::erp::sap_decisions(sims);
    dingtalk.sim().cards.click(&card, "acct0003", "approve", json!({})).await?;
    timeline.line("IN", "Ng Hoi Yan (acct0003, junior accounts clerk, no approval role) clicks Approve");
    let note = until("the refusal on the card", WAIT, || card_param(dingtalk, &card, Some("acct0003"), "note")).await?;
    timeline.line("OUT", format!("card, for her only: {note}"));
    let audit = gateway.store.audit_list(0, 0, 10_000).await?;
    let refused = audit
        .iter()
        .find(|e| e.action == "approval.refused" && e.subject == key)
        .context("no audit row for the refusal")?;
    timeline.line("AUDIT", format!("#{} {} by {}: {}", refused.seq, refused.action, refused.actor, refused.detail));
    anyhow::ensure!(super::erp::sap_decisions(sims) == decisions_before, "SAP was called");
    anyhow::ensure!(matches!(status(gateway, &key).await?, Some(Status::Pending)), "the request is no longer pending");
    timeline.line("SAP", "no TASKPROCESSING Decision was sent; 10000045 still waits for a rightful approver");
    match gateway.store.audit_verify().await? {
        store::AuditVerification::Intact { rows } => timeline.line("AUDIT", format!("hash chain intact: {rows} rows")),
        store::AuditVerification::Broken { at_seq, reason } => {
            anyhow::bail!("audit chain broken at {at_seq}: {reason}")
        }
        store::AuditVerification::WrongKey { chain_key_id, given_key_id } => {
            anyhow::bail!("the audit chain is keyed with {chain_key_id:?}, the gateway with {given_key_id:?}")
        }
    }
    Ok(())
}
