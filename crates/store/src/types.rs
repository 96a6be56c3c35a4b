use crate::Millis;
use serde::{Deserialize, Serialize};

/// One received event, ready to commit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Intake {
    /// Unique per source: e.g. `erp-events:msg_2Kx...` (the sender's webhook-id).
    pub dedup_key: String,
    pub event_id: String,
    pub source: String,
    pub received_at: Millis,
    /// The canonical event as JSON.
    pub event_json: String,
    /// Outbox jobs derived from the event by the flows.
    pub jobs: Vec<NewJob>,
    /// Set when the event failed typed parsing or mapping: kept, never dropped.
    pub dead_letter: Option<NewDeadLetter>,
}

/// A poll cursor moved in the same transaction as the intakes its page found, so the cursor
/// never passes a record whose event was not stored, and a crash repeats at most one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorUpdate {
    pub name: String,
    pub value: String,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewJob {
    pub flow: String,
    pub destination: String,
    /// Deliveries with the same key are delivered in id order (one conversation).
    pub ordering_key: String,
    /// Unique across jobs; sent to the vendor; stable across retries and replays.
    pub idempotency_key: String,
    /// Rendered message JSON.
    pub payload: String,
    pub next_attempt_at: Millis,
    /// Not inserted when a pending job with the same destination and ordering key is already
    /// waiting: that job does the same work later (a read of a record's current state, say), so
    /// a burst of changes to one record costs one job.
    #[serde(default)]
    pub coalesce: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewDeadLetter {
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntakeOutcome {
    Accepted,
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Leased,
    Done,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Leased => "leased",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: i64,
    pub event_id: String,
    pub flow: String,
    pub destination: String,
    pub ordering_key: String,
    pub idempotency_key: String,
    pub payload: String,
    pub state: JobState,
    pub attempts: u32,
    pub next_attempt_at: Millis,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<Millis>,
    pub lease_version: i64,
    pub created_at: Millis,
    pub last_error: Option<String>,
}

impl Job {
    pub fn lease(&self) -> Lease {
        Lease { job_id: self.id, version: self.lease_version }
    }
}

/// Fencing token: a job id and the lease version the worker was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub job_id: i64,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub lease: Lease,
    /// Vendor receipt kept with the job (message id, etc.).
    pub receipt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    /// None for events that failed before producing a job.
    pub job_id: Option<i64>,
    pub event_id: String,
    pub destination: Option<String>,
    pub reason: String,
    pub attempts: u32,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdLink {
    pub kind: String,
    pub left: String,
    pub right: String,
    pub data: Option<String>,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub subject: String,
    /// JSON detail (before/after state etc.), never secrets.
    pub detail: String,
}

impl NewAuditEntry {
    /// `actor` (`cli`, `admin-api`) put dead job `job_id` back in the queue.
    pub fn dlq_replayed(actor: &str, job_id: i64, at: Millis) -> Self {
        Self {
            at,
            actor: actor.to_owned(),
            action: "dlq.replayed".to_owned(),
            subject: job_id.to_string(),
            detail: serde_json::json!({ "job_id": job_id }).to_string(),
        }
    }

    /// `actor` removed dead letter `dead_letter_id`.
    pub fn dlq_dropped(actor: &str, dead_letter_id: i64, at: Millis) -> Self {
        Self {
            at,
            actor: actor.to_owned(),
            action: "dlq.dropped".to_owned(),
            subject: dead_letter_id.to_string(),
            detail: serde_json::json!({ "dead_letter_id": dead_letter_id }).to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    /// The previous row's `hash` (all zeros for the first row).
    pub prev_hash: String,
    /// Hex HMAC-SHA256 with the audit key (plain SHA-256 in an unkeyed chain) over prev_hash and
    /// this row's fields, length-prefixed: see [`AuditEntry::chain_hash`].
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AuditVerification {
    Intact {
        rows: u64,
    },
    Broken {
        at_seq: i64,
        reason: String,
    },
    /// The chain is not written with the verifier's key: a wrong key was given, a keyed chain was
    /// verified without one (or an unkeyed one with one), or the head's key id was rewritten.
    /// The rows were not checked.
    WrongKey {
        /// The head's key id (`None`: the chain is not keyed).
        chain_key_id: Option<String>,
        /// The verifier's key id (`None`: no key).
        given_key_id: Option<String>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    pub events: u64,
    pub pending: u64,
    pub leased: u64,
    pub done: u64,
    /// Dead jobs (a dead letter's job stays dead until replayed).
    pub dead: u64,
    /// Dead-letter entries: dead jobs plus events that failed before producing a job.
    pub dead_letters: u64,
    /// Age of the oldest pending-or-leased job, 0 when none.
    pub oldest_pending_age_ms: i64,
    /// Leased jobs whose lease has expired (its holder died or stalled). The next claim takes
    /// them over, so a count that stays above 0 means nothing is claiming that destination.
    pub lease_expired: u64,
}
