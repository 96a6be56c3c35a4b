//! The store's one error type and its stable codes (`DB03NN`, one page each in `docs/errors/`).

use crate::audit;

/// What went wrong in the store. Every variant has a stable code ([`StoreError::code`]); the
/// message stays as it was (tools and tests match on it), so the code is printed beside it, as
/// the `dingbridge` binary does: `error[DB0302]: …`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the write; intake must answer 503, not 2xx.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The worker's lease was taken over (expired and re-claimed) or the job already finished.
    #[error("lease on job {job_id} (version {version}) is no longer held")]
    LeaseLost { job_id: i64, version: i64 },
    #[error("no {what} with id {id}")]
    NotFound { what: &'static str, id: String },
    #[error("store migration failed: {0}")]
    Migration(String),
    #[error("invalid store url `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("store data is inconsistent: {0}")]
    Corrupt(String),
    /// The group-commit queue is full: shed load (the server answers 503 + `Retry-After`).
    #[error("store is overloaded: the commit queue is full; retry later")]
    Overloaded,
    /// The audit chain is written with another key than this handle's (or with a key while the
    /// handle has none, or without one while the handle has one): nothing was written.
    #[error("{}", audit::key_mismatch_message(.chain, .given, .rows))]
    AuditKeyMismatch {
        /// The chain's key id (`None`: not keyed).
        chain: Option<String>,
        /// The handle's key id (`None`: no key).
        given: Option<String>,
        /// Rows in the chain.
        rows: i64,
    },
}

impl StoreError {
    /// Every code [`StoreError::code`] returns, in order. Each has a page
    /// `docs/errors/<code>.md` (a test checks it).
    pub const CODES: [&'static str; 8] =
        ["DB0301", "DB0302", "DB0303", "DB0304", "DB0305", "DB0306", "DB0307", "DB0308"];

    /// The stable code of this kind of failure: one per thing an operator can act on. Codes are
    /// never reused or renumbered; a new kind of failure gets the next free number.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUrl { .. } => "DB0301",
            Self::Unavailable(_) => "DB0302",
            Self::Migration(_) => "DB0303",
            Self::AuditKeyMismatch { .. } => "DB0304",
            Self::NotFound { .. } => "DB0305",
            Self::LeaseLost { .. } => "DB0306",
            Self::Corrupt(_) => "DB0307",
            Self::Overloaded => "DB0308",
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            sqlx::Error::Migrate(m) => StoreError::Migration(m.to_string()),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    /// One error of each kind, in the order of [`StoreError::CODES`].
    fn one_of_each() -> Vec<StoreError> {
        let all = vec![
            StoreError::BadUrl { url: "mysql://h/db".into(), reason: "expected a sqlite:// or postgres:// URL".into() },
            StoreError::Unavailable("connection refused".into()),
            StoreError::Migration("migration 3 was changed after it was applied".into()),
            StoreError::AuditKeyMismatch { chain: Some("a".into()), given: Some("b".into()), rows: 3 },
            StoreError::NotFound { what: "dead job", id: "7".into() },
            StoreError::LeaseLost { job_id: 7, version: 2 },
            StoreError::Corrupt("unknown job state `paused`".into()),
            StoreError::Overloaded,
        ];
        // A new variant stops this match from compiling until it is added to the list above.
        for e in &all {
            match e {
                StoreError::BadUrl { .. }
                | StoreError::Unavailable(_)
                | StoreError::Migration(_)
                | StoreError::AuditKeyMismatch { .. }
                | StoreError::NotFound { .. }
                | StoreError::LeaseLost { .. }
                | StoreError::Corrupt(_)
                | StoreError::Overloaded => {}
            }
        }
        all
    }

    #[test]
    fn every_kind_has_its_own_listed_code() {
        let codes: Vec<&str> = one_of_each().iter().map(StoreError::code).collect();
        assert_eq!(codes, StoreError::CODES);
    }
}
