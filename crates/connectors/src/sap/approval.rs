//! Approval write-back (see [`crate::approval`] for the contract) through the workflow inbox
//! (`TASKPROCESSING`, reference A5 option 1): the READY release work item of the requisition or
//! order is found by its `TaskObjects`, and decided with the `DecisionOptions` entry of the
//! wanted nature; the idempotency key travels in the decision comment, so a retry finds it on the
//! COMPLETED work item's `Comments` and reports `AlreadyApplied`.
//!
//! There is no `users` here: SAP has no user-list API dingbridge reads, so SAP identities (the
//! SAP user a DingTalk user decides as) are configured explicitly in identity mapping.

use super::canonical::{read_purchase_order, read_purchase_request};
use super::client::{Query, TASK_PROCESSING_ROOT};
use super::records::{DecisionOption, Task, TaskObject};
use super::{wire, VENDOR};
use crate::approval::{key_marker, Decision, DecisionOutcome, DecisionRequest};
use crate::erp::{ErpRecord, PURCHASE_ORDER, PURCHASE_REQUEST};
use connect::DeliveryError;

type Client = crate::sap::client::SapClient;

/// Navigation expanded with work items so one request names their documents.
const TASK_OBJECTS: &str = "TaskObjects";

/// The document a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requisition,
    Order,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Requisition => "purchase requisition",
            Kind::Order => "purchase order",
        }
    }
}

/// Writes one approval decision, once, only while the record is unchanged and still pending.
pub async fn decide(client: &Client, request: &DecisionRequest) -> Result<DecisionOutcome, DeliveryError> {
    let (kind, number) = target(request)?;
    let Some(current) = read(client, kind, &number).await? else {
        return Ok(DecisionOutcome::Refused {
            reason: format!("deleted in SAP ({} {number} no longer exists)", kind.label()),
            current_status: None,
        });
    };
    let status = current.data["status"].as_str().unwrap_or_default().to_owned();
    let current_status = Some(status.clone()).filter(|s| !s.is_empty());
    if status != "pending_approval" {
        if decided_with_key(client, &number, &request.idempotency_key).await? {
            return Ok(DecisionOutcome::AlreadyApplied);
        }
        let reason = match status.as_str() {
            "approved" => "already approved (released) in SAP".to_owned(),
            "rejected" => "already rejected in SAP".to_owned(),
            other => format!("no longer pending approval in SAP (status {other})"),
        };
        return Ok(DecisionOutcome::Refused { reason, current_status });
    }
    if current.version != request.expected_version {
        return Ok(DecisionOutcome::Refused {
            reason: format!(
                "changed in SAP since the card was sent (was version {}, now {})",
                request.expected_version, current.version
            ),
            current_status,
        });
    }
    let Some(task) = work_item(client, "READY", &number).await?.into_iter().next() else {
        return Ok(DecisionOutcome::Refused {
            reason: format!(
                "no open release work item in SAP for {} {number} (release it in SAP, or check the workflow)",
                kind.label()
            ),
            current_status,
        });
    };
    let options = client.decision_options(&task.origin, &task.instance_id).await?;
    let Some(option) = pick(&options, request.decision) else {
        let offered: Vec<&str> = options.iter().map(|o| o.text.as_str()).collect();
        return Ok(DecisionOutcome::Refused {
            reason: format!(
                "the SAP work item {} offers no {} decision (it offers: {})",
                task.instance_id,
                request.decision.as_str(),
                offered.join(", ")
            ),
            current_status,
        });
    };
    let comment = comment_text(&request.comment, &request.idempotency_key);
    if let Err(message) = client.try_decide(&task.origin, &task.instance_id, &option.key, &comment).await? {
        return Ok(DecisionOutcome::Refused { reason: format!("SAP refused the decision: {message}"), current_status });
    }
    // The decision answers the task, not the document; one read gives the document's new version.
    // If that read fails the decision is written, and the retry finds it by its key.
    let version = read(client, kind, &number).await?.map(|r| r.version);
    Ok(DecisionOutcome::Applied { version })
}

/// The document kind and number: the requisition of the `approval` block (or the entity id) for
/// purchase requests, the entity id for purchase orders.
fn target(request: &DecisionRequest) -> Result<(Kind, String), DeliveryError> {
    let field = |name: &str| request.approval[name].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    match request.entity.as_str() {
        PURCHASE_REQUEST => {
            Ok((Kind::Requisition, field("purchase_requisition").unwrap_or_else(|| request.entity_id.clone())))
        }
        PURCHASE_ORDER => Ok((Kind::Order, field("purchase_order").unwrap_or_else(|| request.entity_id.clone()))),
        other => Err(DeliveryError::BadPayload {
            destination: VENDOR.to_owned(),
            detail: format!(
                "SAP approvals decide purchase_request or purchase_order records, not {other:?} ({})",
                request.entity_id
            ),
        }),
    }
}

async fn read(client: &Client, kind: Kind, number: &str) -> Result<Option<ErpRecord>, DeliveryError> {
    match kind {
        Kind::Requisition => read_purchase_request(client, number).await,
        Kind::Order => read_purchase_order(client, number).await,
    }
}

/// Document numbers compare without leading zeros (`0010000045` is `10000045`).
fn same_document(a: &str, b: &str) -> bool {
    a.trim_start_matches('0') == b.trim_start_matches('0')
}

/// Work items with `status` whose objects include document `number`.
async fn work_item(client: &Client, status: &str, number: &str) -> Result<Vec<Task>, DeliveryError> {
    let query = Query::default().filter(format!("Status eq {}", wire::string_literal(status))).expand(&[TASK_OBJECTS]);
    let rows = client.get_all(TASK_PROCESSING_ROOT, "TaskCollection", &query).await?;
    let mut found = Vec::new();
    for row in &rows {
        let task = Task::from_entity(row).map_err(|e| unparseable("TaskCollection", e))?;
        let objects = match wire::expanded(row, TASK_OBJECTS) {
            Some(expanded) => expanded
                .iter()
                .map(TaskObject::from_entity)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unparseable("TaskObjects", e))?,
            // A Gateway that ignores the $expand leaves the navigation deferred: follow it.
            None => client.task_objects(&task.origin, &task.instance_id).await?,
        };
        if objects.iter().any(|o| same_document(&o.object_id, number)) {
            found.push(task);
        }
    }
    Ok(found)
}

/// True when a COMPLETED work item of document `number` carries the key marker in a comment.
async fn decided_with_key(client: &Client, number: &str, key: &str) -> Result<bool, DeliveryError> {
    let marker = key_marker(key);
    for task in work_item(client, "COMPLETED", number).await? {
        let comments = client.task_comments(&task.origin, &task.instance_id).await?;
        if comments.iter().any(|c| c.text.contains(&marker)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The option of the wanted nature (POSITIVE approves, NEGATIVE rejects); without natures, by
/// the decision text (Release/Approve vs Reject).
fn pick(options: &[DecisionOption], decision: Decision) -> Option<&DecisionOption> {
    let (nature, words): (&str, &[&str]) = match decision {
        Decision::Approve => ("POSITIVE", &["release", "approve"]),
        Decision::Reject => ("NEGATIVE", &["reject"]),
    };
    options.iter().find(|o| o.nature.eq_ignore_ascii_case(nature)).or_else(|| {
        options.iter().find(|o| {
            let text = o.text.to_ascii_lowercase();
            o.nature.is_empty() && words.iter().any(|w| text.contains(w))
        })
    })
}

/// `<comment> [dingbridge:<key>]`; the marker alone when there is no comment (the comment is
/// never empty, which also satisfies options with a mandatory comment).
fn comment_text(comment: &str, key: &str) -> String {
    let comment = comment.trim();
    if comment.is_empty() {
        key_marker(key)
    } else {
        format!("{comment} {}", key_marker(key))
    }
}

fn unparseable(what: &str, err: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Rejected { vendor: VENDOR, detail: format!("{what}: the answer is not what the API defines: {err}") }
}

#[cfg(test)]
#[path = "approval_tests.rs"]
mod tests;
