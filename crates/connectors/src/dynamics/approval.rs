//! Approval write-back and the ERP's people (see [`crate::approval`] for the contract) for
//! Business Central.
//!
//! Approvals are not in BC's standard v2.0 API (reference C2/C5); customers install the
//! dingbridge approvals extension, whose custom API page `purchaseOrderApprovals` exposes the
//! purchase order's approval state, the last decision key, and bound actions `approve` / `reject`
//! guarded by the purchase order's etag. The canonical version is still read from the standard
//! `purchaseOrders` entity (as the card was built from it), and the key recorded by the extension
//! tells a retry that its decision is already written.

use super::bc::PurchaseOrder;
use super::canonical::{purchase_request_from_bc_order, PENDING_STATUSES};
use super::VENDOR;
use crate::approval::local_mobile;
use crate::approval::{Decision, DecisionOutcome, DecisionRequest, ErpUser};
use connect::DeliveryError;
use serde_json::Value;

type Client = crate::dynamics::bc::BcClient;

/// Writes one approval decision, once, only while the record is unchanged and still pending.
pub async fn decide(
    client: &Client,
    company_id: &str,
    request: &DecisionRequest,
) -> Result<DecisionOutcome, DeliveryError> {
    let id = request.approval["id"].as_str().filter(|s| !s.is_empty()).unwrap_or(&request.entity_id).to_owned();
    let deleted = || DecisionOutcome::Refused {
        reason: format!("deleted in Business Central (purchase order {id} no longer exists)"),
        current_status: None,
    };
    let Some(order) = client.find_purchase_order(company_id, &id).await? else { return Ok(deleted()) };
    let Some(approval) = client.purchase_order_approval(company_id, &id).await? else { return Ok(deleted()) };
    let current = canonical(&order)?;
    let current_status = current.data["status"].as_str().map(str::to_owned);
    let status = approval["status"].as_str().or(order.status.as_deref()).unwrap_or_default().to_owned();
    if !PENDING_STATUSES.contains(&status.as_str()) {
        if approval["lastDecisionKey"].as_str() == Some(request.idempotency_key.as_str()) {
            return Ok(DecisionOutcome::AlreadyApplied);
        }
        let reason = match status.as_str() {
            "Open" | "Released" => format!("already approved in Business Central (status {status})"),
            "Draft" => "already rejected or reopened in Business Central (status Draft)".to_owned(),
            other => format!("no longer pending approval in Business Central (status {other})"),
        };
        return Ok(DecisionOutcome::Refused { reason, current_status });
    }
    if current.version != request.expected_version {
        return Ok(DecisionOutcome::Refused {
            reason: format!(
                "changed in Business Central since the card was sent (was version {}, now {})",
                request.expected_version, current.version
            ),
            current_status,
        });
    }
    let etag = approval["@odata.etag"].as_str().ok_or_else(|| DeliveryError::Server {
        vendor: VENDOR,
        status: 200,
        detail: format!(
            "purchaseOrderApprovals({id}) has no @odata.etag; the dingbridge approvals extension must publish it"
        ),
    })?;
    let approve = request.decision == Decision::Approve;
    let written = client
        .decide_purchase_order(company_id, &id, approve, request.comment.trim(), &request.idempotency_key, etag)
        .await?;
    if let Err(message) = written {
        return Ok(DecisionOutcome::Refused {
            reason: format!("Business Central refused the decision: {message}"),
            current_status,
        });
    }
    // The action answers 204; one read gives the version after the write. If that read fails the
    // decision is written, and the retry finds it by its key.
    let version = match client.find_purchase_order(company_id, &id).await? {
        Some(after) => Some(canonical(&after)?.version),
        None => None,
    };
    Ok(DecisionOutcome::Applied { version })
}

/// The ERP's people, for mapping DingTalk users to ERP users.
pub async fn users(client: &Client, company_id: &str) -> Result<Vec<ErpUser>, DeliveryError> {
    let rows = client.employees(company_id).await?;
    rows.iter().map(employee).collect()
}

fn canonical(order: &PurchaseOrder) -> Result<crate::erp::ErpRecord, DeliveryError> {
    purchase_request_from_bc_order(order).map_err(|e| e.into_delivery(VENDOR))
}

fn text(row: &Value, field: &str) -> Option<String> {
    row[field].as_str().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// An `employees` row: `id` and `job_number` are the employee `number` (what BC records people
/// under and what HR keeps as the staff number).
fn employee(row: &Value) -> Result<ErpUser, DeliveryError> {
    let number = text(row, "number").ok_or_else(|| DeliveryError::Server {
        vendor: VENDOR,
        status: 200,
        detail: format!("employees: a row has no number (id {})", row["id"].as_str().unwrap_or("?")),
    })?;
    let full = [text(row, "givenName"), text(row, "surname")].into_iter().flatten().collect::<Vec<_>>().join(" ");
    let name = text(row, "displayName").or(Some(full).filter(|f| !f.is_empty())).unwrap_or_else(|| number.clone());
    Ok(ErpUser {
        id: number.clone(),
        name,
        email: text(row, "email"),
        mobile: text(row, "mobilePhone").and_then(|m| local_mobile(&m)),
        job_number: Some(number),
        active: text(row, "status").as_deref() != Some("Inactive"),
    })
}

#[cfg(test)]
#[path = "approval_tests.rs"]
mod tests;
