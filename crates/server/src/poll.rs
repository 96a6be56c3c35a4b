//! Polling record sources (ERP reconciliation polls, Salesforce `SystemModstamp` polls): each
//! object of a source is polled every interval through its connector; a changed record becomes
//! a change notice with a read job, a record found whole becomes an event.
//!
//! The first poll of an object only records where to start: a new source reports changes from
//! then on, not the vendor's history. A cursor is saved only after what its poll found is
//! committed, so a crash repeats a poll rather than losing one, and the dedup keys make the
//! repeat harmless.

use crate::error::ApiError;
use crate::reads::{commit_all, RecordSource};
use crate::state::AppState;
use crate::supervisor::{pause, TaskError};
use connectors::reader::{Found, ReadError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Polls every object of `source` each poll interval until `cancel`.
pub async fn poll_loop(
    state: AppState,
    source: Arc<dyn RecordSource>,
    cancel: CancellationToken,
) -> Result<(), TaskError> {
    let Some(interval) = source.poll_interval() else { return Ok(()) };
    loop {
        for object in source.objects() {
            if let Err(err) = poll_object(&state, source.as_ref(), object).await {
                tracing::warn!(source = %source.name(), system = source.system(), object, "Poll failed; will try again: {err}");
            }
        }
        if !pause(&cancel, interval).await {
            return Ok(());
        }
    }
}

/// One poll of one object (also run by tests and the demo to reconcile at once).
pub async fn poll_object(state: &AppState, source: &dyn RecordSource, object: &str) -> Result<(), PollError> {
    let name = source.name();
    let cursor_name = format!("{}.poll.{name}.{object}", source.system());
    let stored = state.store.get_cursor(&cursor_name).await?;
    let polled = source.poll(object, stored.as_deref(), state.clock.now()).await?;
    match polled.found {
        Found::Nothing => {}
        Found::Changed(rows) => {
            let at = state.clock.now_millis();
            let notices = source.notices();
            let intakes = rows
                .into_iter()
                .map(|row| {
                    let dedup = format!("{name}:poll:{object}:{}:{}", row.id, row.stamp);
                    notices.notice(dedup, object, &row.id, "updated", row.detail, at)
                })
                .collect();
            commit_all(state, name, intakes).await?;
        }
        Found::Records(records) => source.commit_records(state, &records).await?,
    }
    if let Some(next) = polled.cursor {
        state.store.put_cursor(&cursor_name, &next, state.clock.now_millis()).await?;
    }
    Ok(())
}

/// Why a poll did not complete; it is tried again on the next round.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("the store: {0}")]
    Store(#[from] store::StoreError),
    #[error("what the poll found could not be stored: {}", .0.message)]
    Commit(ApiError),
}

impl From<ApiError> for PollError {
    fn from(err: ApiError) -> Self {
        PollError::Commit(err)
    }
}
