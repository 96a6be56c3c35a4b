//! Each DingTalk app's directory (users, departments, managers) kept in the store, for the
//! approvals feature to map DingTalk users to ERP users: a full sync when the gateway starts and
//! every 24 hours, and the changes DingTalk announces (`user_*`, `org_dept_*` events) applied as
//! they arrive. Events are an accelerator; the periodic full sync is the source of truth
//! (reference §9).

use crate::error::StateError;
use crate::supervisor::{pause, TaskError};
use connect::Clock;
use connectors::dingtalk::directory::{Directory, DirectorySnapshot, DirectorySync};
use connectors::dingtalk::openapi::OpenApi;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use store::Store;
use tokio_util::sync::CancellationToken;

/// How often the whole directory is read again.
pub const FULL_SYNC_EVERY: Duration = Duration::from_secs(24 * 60 * 60);
/// Wait before trying again after a failed full sync.
pub const RETRY_FAILED_SYNC_AFTER: Duration = Duration::from_secs(5 * 60);

/// The store cursor that holds an app's snapshot (JSON).
pub fn cursor_name(app: &str) -> String {
    format!("dingtalk.directory.{app}")
}

/// What is stored: the snapshot and when it was last read in full.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    synced_at_ms: i64,
    snapshot: DirectorySnapshot,
}

async fn load_stored(store: &dyn Store, app: &str) -> Result<Option<Stored>, StateError> {
    match store.get_cursor(&cursor_name(app)).await? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Unreadable { what: format!("directory of {app}"), reason: e.to_string() }),
        None => Ok(None),
    }
}

/// The last stored snapshot of `app`, if any.
pub async fn load(store: &dyn Store, app: &str) -> Result<Option<DirectorySnapshot>, StateError> {
    Ok(load_stored(store, app).await?.map(|s| s.snapshot))
}

/// Keeps one app's directory.
pub struct DirectoryKeeper {
    app: String,
    directory: Directory,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The snapshot being maintained and when it was last read in full; events wait while a
    /// full sync replaces it.
    snapshot: tokio::sync::Mutex<Option<Stored>>,
}

impl DirectoryKeeper {
    pub fn new(app: &str, api: OpenApi, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Self {
            app: app.to_owned(),
            directory: Directory::new(api),
            store,
            clock,
            snapshot: tokio::sync::Mutex::new(None),
        })
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    /// The directory as kept in memory; the stored one while nothing was read yet or a full
    /// sync holds it (a reader does not wait for the sync's network calls).
    pub async fn current(&self) -> Result<Option<DirectorySnapshot>, StateError> {
        if let Ok(guard) = self.snapshot.try_lock() {
            if let Some(stored) = guard.as_ref() {
                return Ok(Some(stored.snapshot.clone()));
            }
        }
        load(self.store.as_ref(), &self.app).await
    }

    async fn persist(&self, stored: &Stored) -> Result<(), StateError> {
        let text = serde_json::to_string(stored).map_err(|e| StateError::Unreadable {
            what: format!("directory of {}", self.app),
            reason: e.to_string(),
        })?;
        Ok(self.store.put_cursor(&cursor_name(&self.app), &text, self.clock.now_millis()).await?)
    }

    /// Reads the whole directory and stores it; returns how many users it has.
    pub async fn full_sync(&self) -> Result<usize, StateError> {
        let mut guard = self.snapshot.lock().await;
        let snapshot = DirectorySync::full(&self.directory).await?;
        let stored = Stored { synced_at_ms: self.clock.now_millis(), snapshot };
        self.persist(&stored).await?;
        let users = stored.snapshot.users.len();
        *guard = Some(stored);
        Ok(users)
    }

    /// Applies one `user_*` / `org_dept_*` event: leavers and removed departments go at once,
    /// added or changed ones are fetched again. Before the first full sync there is nothing to
    /// change (that sync will read the current state).
    pub async fn apply(&self, event_type: &str, payload: &Value) -> Result<(), StateError> {
        let mut guard = self.snapshot.lock().await;
        if guard.is_none() {
            *guard = load_stored(self.store.as_ref(), &self.app).await?;
        }
        let Some(stored) = guard.as_mut() else { return Ok(()) };
        let refetch = DirectorySync::apply_event(&mut stored.snapshot, event_type, payload).map_err(|e| {
            StateError::Unreadable { what: format!("DingTalk event {event_type}"), reason: e.to_string() }
        })?;
        if !refetch.is_empty() {
            DirectorySync::refetch(&self.directory, &mut stored.snapshot, &refetch).await?;
        }
        self.persist(stored).await
    }

    /// How long until the stored copy is due for a full sync: zero when there is none (or it
    /// cannot be read), so a restart does not read the whole directory again every time.
    async fn due_in(&self) -> Duration {
        let stored = match load_stored(self.store.as_ref(), &self.app).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Duration::ZERO,
            Err(err) => {
                tracing::warn!(app = %self.app, "Stored DingTalk directory unreadable; syncing again: {err}");
                return Duration::ZERO;
            }
        };
        let age_ms = self.clock.now_millis().saturating_sub(stored.synced_at_ms);
        let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
        *self.snapshot.lock().await = Some(stored);
        FULL_SYNC_EVERY.saturating_sub(age)
    }

    /// Full syncs when the stored copy is due and every [`FULL_SYNC_EVERY`] after (sooner again
    /// after a failure) until `cancel`.
    pub async fn sync_loop(self: Arc<Self>, cancel: CancellationToken) -> Result<(), TaskError> {
        let first = self.due_in().await;
        if !pause(&cancel, first).await {
            return Ok(());
        }
        loop {
            let wait = match self.full_sync().await {
                Ok(users) => {
                    tracing::info!(app = %self.app, users, "DingTalk directory synchronised.");
                    FULL_SYNC_EVERY
                }
                Err(err) => {
                    tracing::warn!(app = %self.app, "DingTalk directory sync failed, retrying in 5 minutes: {err}");
                    RETRY_FAILED_SYNC_AFTER
                }
            };
            if !pause(&cancel, wait).await {
                return Ok(());
            }
        }
    }
}

/// Whether DingTalk event type `event_type` changes the directory.
pub fn is_directory_event(event_type: &str) -> bool {
    event_type.starts_with("user_") || event_type.starts_with("org_dept_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use connectors::dingtalk::openapi::{AppCredentials, OpenApiSettings};

    #[tokio::test]
    async fn a_fresh_stored_copy_postpones_the_start_up_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open(&format!("sqlite://{}/d.db", dir.path().display())).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(connect::SystemClock);
        let credentials = AppCredentials {
            app_key: "app".into(),
            app_secret: "secret".to_string().into(),
            agent_id: None,
            corp_id: None,
        };
        // Never called: nothing listens on port 9.
        let api = OpenApi::new(credentials, OpenApiSettings::with_base("http://127.0.0.1:9"), clock.clone()).unwrap();
        let keeper = DirectoryKeeper::new("hk", api, store.clone(), clock.clone());
        assert_eq!(keeper.due_in().await, Duration::ZERO, "no stored copy: sync at once");

        let an_hour_ago = clock.now_millis() - 3_600_000;
        let stored = Stored { synced_at_ms: an_hour_ago, snapshot: DirectorySnapshot::default() };
        keeper.persist(&stored).await.unwrap();
        let due = keeper.due_in().await;
        assert!(due > Duration::from_secs(22 * 3600) && due <= Duration::from_secs(23 * 3600), "{due:?}");
        assert!(load(store.as_ref(), "hk").await.unwrap().is_some());
    }
}
