//! Approval write-back and the ERP's people (see [`crate::approval`] for the contract).
//!
//! NetSuite has no ETags on the REST record API, so the guard is a fresh read right before the
//! `PATCH` (reference B5): the record must still be Pending Approval (`approvalStatus` 1) and its
//! `lastModifiedDate` (the canonical version) unchanged. The decision is written as
//! `approvalStatus` 2 (Approved) or 3 (Rejected) with the idempotency key in `memo`, so a retry
//! after a lost answer finds it and reports `AlreadyApplied` instead of writing twice.

use super::canonical::from_record;
use super::client::{RecordType, SUITEQL_PAGE_MAX};
use super::records::ApprovalStatus;
use super::VENDOR;
use crate::approval::{key_marker, local_mobile, Decision, DecisionOutcome, DecisionRequest, ErpUser};
use connect::DeliveryError;
use serde_json::{json, Value};

type Client = crate::netsuite::client::NetSuiteClient;

/// The employee list [`users`] reads; the simulator's SuiteQL subset answers it.
pub const EMPLOYEES_QUERY: &str =
    "SELECT id, entityid, firstname, lastname, email, mobilephone, externalid, isinactive FROM employee";

/// Writes one approval decision, once, only while the record is unchanged and still pending.
pub async fn decide(client: &Client, request: &DecisionRequest) -> Result<DecisionOutcome, DeliveryError> {
    let (record, id) = target(request)?;
    let Some(current) = client.find_record(record, &id, true).await? else {
        return Ok(DecisionOutcome::Refused {
            reason: format!("deleted in NetSuite ({} {id} no longer exists)", record.as_str()),
            current_status: None,
        });
    };
    let canonical = from_record(record, &current).map_err(|e| e.into_delivery(VENDOR))?;
    let status = current["approvalStatus"]["id"].as_str().and_then(ApprovalStatus::parse);
    let current_status = canonical.data["status"].as_str().map(str::to_owned);
    if status != Some(ApprovalStatus::Pending) {
        let memo = current["memo"].as_str().unwrap_or_default();
        if memo.contains(&key_marker(&request.idempotency_key)) {
            return Ok(DecisionOutcome::AlreadyApplied);
        }
        let what = match status {
            Some(ApprovalStatus::Approved) => "already approved in NetSuite",
            Some(ApprovalStatus::Rejected) => "already rejected in NetSuite",
            // The mapping above refuses unknown ids, so this is a record without the field.
            _ => "no longer pending approval in NetSuite",
        };
        return Ok(DecisionOutcome::Refused { reason: what.to_owned(), current_status });
    }
    if canonical.version != request.expected_version {
        return Ok(DecisionOutcome::Refused {
            reason: format!(
                "changed in NetSuite since the card was sent (was version {}, now {})",
                request.expected_version, canonical.version
            ),
            current_status,
        });
    }
    let body = json!({
        "approvalStatus": {"id": approval_id(request.decision)},
        "memo": memo_text(&request.comment, &request.idempotency_key),
    });
    if let Err(message) = client.try_update_record(record, &id, &body).await? {
        return Ok(DecisionOutcome::Refused {
            reason: format!("NetSuite refused the decision: {message}"),
            current_status,
        });
    }
    // PATCH answers 204 without the record; one more read gives the version after the write. If
    // that read fails the decision is written, and the retry finds it by its key.
    let version = match client.find_record(record, &id, true).await? {
        Some(after) => Some(from_record(record, &after).map_err(|e| e.into_delivery(VENDOR))?.version),
        None => None,
    };
    Ok(DecisionOutcome::Applied { version })
}

/// The ERP's people, for mapping DingTalk users to ERP users.
pub async fn users(client: &Client) -> Result<Vec<ErpUser>, DeliveryError> {
    let rows = client.suiteql(EMPLOYEES_QUERY, SUITEQL_PAGE_MAX).await?;
    rows.iter().map(employee).collect()
}

/// The record type and internal id the decision is about, from the canonical `approval` block
/// (`record_type`, `id`); the id falls back to the canonical entity id.
fn target(request: &DecisionRequest) -> Result<(RecordType, String), DeliveryError> {
    let approval = &request.approval;
    let kind = approval["record_type"].as_str().unwrap_or_default();
    let record = RecordType::parse(kind)
        .filter(|r| matches!(r, RecordType::PurchaseRequisition | RecordType::PurchaseOrder))
        .ok_or_else(|| DeliveryError::BadPayload {
            destination: VENDOR.to_owned(),
            detail: format!(
                "approval.record_type {kind:?} of {} {} is not purchaseRequisition or purchaseOrder; \
                 the approval block must come from the NetSuite canonical mapping",
                request.entity, request.entity_id
            ),
        })?;
    let id = approval["id"].as_str().unwrap_or(&request.entity_id).to_owned();
    Ok((record, id))
}

fn approval_id(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve => ApprovalStatus::Approved.id(),
        Decision::Reject => ApprovalStatus::Rejected.id(),
    }
}

/// `<comment> [dingbridge:<key>]`; the marker alone when there is no comment.
fn memo_text(comment: &str, key: &str) -> String {
    let comment = comment.trim();
    if comment.is_empty() {
        key_marker(key)
    } else {
        format!("{comment} {}", key_marker(key))
    }
}

/// A SuiteQL cell as text (SuiteQL answers strings; numbers are tolerated).
fn cell(row: &Value, column: &str) -> Option<String> {
    match &row[column] {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn employee(row: &Value) -> Result<ErpUser, DeliveryError> {
    let id = cell(row, "id").ok_or_else(|| DeliveryError::Server {
        vendor: VENDOR,
        status: 200,
        detail: format!("SuiteQL employees: a row has no id ({row})"),
    })?;
    let full = [cell(row, "firstname"), cell(row, "lastname")].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let name = if full.is_empty() { cell(row, "entityid").unwrap_or_else(|| id.clone()) } else { full };
    Ok(ErpUser {
        name,
        email: cell(row, "email"),
        mobile: cell(row, "mobilephone").and_then(|m| local_mobile(&m)),
        job_number: cell(row, "externalid"),
        active: cell(row, "isinactive").as_deref() != Some("T"),
        id,
    })
}

#[cfg(test)]
#[path = "approval_tests.rs"]
mod tests;
