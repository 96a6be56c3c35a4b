//! Polling record sources (ERP reconciliation polls, Salesforce `SystemModstamp` polls): each
//! object of a source is polled every interval through its connector; a changed record becomes
//! a change notice with a read job, a record found whole becomes an event.
//!
//! The first poll of an object only records where to start: a new source reports changes from
//! then on, not the vendor's history. A poll goes page by page; each page is committed in the
//! same transaction as the cursor after it, so the cursor never passes a record whose event is
//! not stored, a crash repeats at most one page, and the dedup keys make the repeat harmless.

use crate::error::ApiError;
use crate::hooks::commit_page;
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

/// Pages one poll round takes of one object before the next object's turn; the rest of a long
/// backlog follows on the next round, from the cursor its last page stored.
pub const MAX_PAGES_PER_ROUND: usize = 50;

/// One poll of one object (also run by tests and the demo to reconcile at once): page by page,
/// each page's events committed in one transaction with the cursor that follows it, so memory
/// holds one page and a crash repeats at most the page in flight.
pub async fn poll_object(state: &AppState, source: &dyn RecordSource, object: &str) -> Result<(), PollError> {
    let name = source.name();
    let cursor_name = format!("{}.poll.{name}.{object}", source.system());
    let mut stored = state.store.get_cursor(&cursor_name).await?;
    for _ in 0..MAX_PAGES_PER_ROUND {
        let polled = source.poll(object, stored.as_deref(), state.clock.now()).await?;
        let page = match polled.found {
            Found::Nothing => Vec::new(),
            Found::Changed(rows) => {
                let at = state.clock.now_millis();
                let notices = source.notices();
                rows.into_iter()
                    .map(|row| {
                        let dedup = format!("{name}:poll:{object}:{}:{}", row.id, row.stamp);
                        notices.notice(dedup, object, &row.id, "updated", row.detail, at).into()
                    })
                    .collect()
            }
            Found::Records(records) => source.plan_records(state, &records)?,
        };
        let Some(next) = polled.cursor else {
            // Listed afresh every time: nothing to resume, so no further page.
            commit_all(state, name, page).await?;
            return Ok(());
        };
        let update =
            store::CursorUpdate { name: cursor_name.clone(), value: next, updated_at: state.clock.now_millis() };
        commit_page(state, name, page, update.clone()).await?;
        if !polled.more {
            return Ok(());
        }
        stored = Some(update.value);
    }
    tracing::debug!(source = %name, object, "Poll round used its {MAX_PAGES_PER_ROUND} pages; the rest follows next round.");
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
