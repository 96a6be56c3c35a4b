//! Approval write-back, the same contract for every ERP: a decision taken in DingTalk is written
//! to the ERP record it was asked about, once, and only while that record is still the one the
//! approver saw.
//!
//! Each ERP module has an `approval` module with two functions of the same shape:
//! `decide(client, &DecisionRequest) -> Result<DecisionOutcome, DeliveryError>` and
//! `users(client) -> Result<Vec<ErpUser>, DeliveryError>` (the ERP's people, for identity mapping).
//!
//! `decide` re-reads the record first. If a previous attempt with the same idempotency key already
//! wrote the decision (a retry after a lost answer, a restart), it reports `AlreadyApplied` and
//! writes nothing. If the record is no longer waiting for approval, or changed since the card was
//! sent (its canonical `version` differs), it reports `Refused` with a reason a person can act on
//! and writes nothing. Otherwise it writes the decision with the idempotency key recorded in the
//! ERP (memo, comment or the key field of the approval API), so the next attempt can tell.
//! Transport failures, 5xx and throttling are `DeliveryError`s the caller retries.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the approver decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    /// "Approved" / "Rejected".
    pub fn past_tense(self) -> &'static str {
        match self {
            Decision::Approve => "Approved",
            Decision::Reject => "Rejected",
        }
    }
}

/// One decision to write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRequest {
    /// The canonical entity (`purchase_request` or `purchase_order`).
    pub entity: String,
    /// The canonical entity id (the PR/PO number as the canonical record gives it).
    pub entity_id: String,
    /// The record's `data.approval` block, as the canonical mapping produced it.
    pub approval: Value,
    /// The canonical `version` of the record when the approval card was sent.
    pub expected_version: String,
    pub decision: Decision,
    /// Free text for the ERP (who decided in DingTalk, their remark).
    pub comment: String,
    /// Unique per decision; stable across retries; recorded in the ERP.
    pub idempotency_key: String,
    /// The approver's user in this ERP (from identity mapping), for the record's audit fields.
    pub erp_user: Option<String>,
}

/// What happened to a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum DecisionOutcome {
    /// Written now. `version` is the record's version after the write, when the ERP says.
    Applied { version: Option<String> },
    /// An earlier attempt with the same idempotency key wrote it; nothing was written now.
    AlreadyApplied,
    /// Not written and never will be: the record changed, was closed, decided elsewhere, locked.
    /// `reason` says what, for the card ("changed in ERP — please review").
    Refused { reason: String, current_status: Option<String> },
}

/// The ERP refused a decision itself (a business rule, a record changed or already decided), in
/// the ERP's own words; distinct from a failed request, so the caller can turn it into
/// [`DecisionOutcome::Refused`] instead of retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ErpRefusal {
    pub message: String,
}

/// A person as the ERP knows them, for mapping DingTalk users to ERP users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErpUser {
    /// The id the ERP records decisions and requesters under (NetSuite employee internal id,
    /// SAP user name, Business Central employee number).
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    /// Digits only, without country code.
    pub mobile: Option<String>,
    /// Staff / employee number, when the ERP keeps it.
    pub job_number: Option<String>,
    pub active: bool,
}

/// Mentions the idempotency key in ERP free text in one recognisable form, so a later attempt
/// finds it: `[dingbridge:<key>]`.
pub fn key_marker(idempotency_key: &str) -> String {
    format!("[dingbridge:{idempotency_key}]")
}

/// A Hong Kong mobile as DingTalk keeps it: digits only, without the `852` country code
/// (`+852 9123 4567`, `(852) 9123-4567` and `0085291234567` all give `91234567`). The code is
/// only removed when it is written as one (`+`, `00`, brackets) or the number is longer than a
/// local one, since local numbers may themselves start with 852. `None` when no digits remain.
pub fn local_mobile(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    let explicit = trimmed.starts_with('+') || trimmed.starts_with('(') || digits.starts_with("00852");
    let digits = digits.strip_prefix("00").filter(|_| digits.starts_with("00852")).unwrap_or(&digits).to_owned();
    let local = match digits.strip_prefix("852") {
        Some(rest) if explicit || rest.len() == 8 => rest.to_owned(),
        _ => digits,
    };
    (!local.is_empty()).then_some(local)
}
