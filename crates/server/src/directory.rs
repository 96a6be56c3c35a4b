//! Each DingTalk app's directory (users, departments, managers) kept in the store, for the
//! approvals feature to map DingTalk users to ERP users: a full sync when the gateway starts and
//! every 24 hours, and the changes DingTalk announces (`user_*`, `org_dept_*` events) applied as
//! they arrive. Events are an accelerator; the periodic full sync is the source of truth
//! (reference §9).

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

/// The last stored snapshot of `app`, if any.
pub async fn load(store: &dyn Store, app: &str) -> Result<Option<DirectorySnapshot>, String> {
    match store.get_cursor(&cursor_name(app)).await.map_err(|e| e.to_string())? {
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| format!("stored directory of {app}: {e}")),
        None => Ok(None),
    }
}

/// Keeps one app's directory.
pub struct DirectoryKeeper {
    app: String,
    directory: Directory,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The snapshot being maintained; events wait while a full sync replaces it.
    snapshot: tokio::sync::Mutex<Option<DirectorySnapshot>>,
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

    async fn persist(&self, snapshot: &DirectorySnapshot) -> Result<(), String> {
        let text = serde_json::to_string(snapshot).map_err(|e| e.to_string())?;
        self.store.put_cursor(&cursor_name(&self.app), &text, self.clock.now_millis()).await.map_err(|e| e.to_string())
    }

    /// Reads the whole directory and stores it; returns how many users it has.
    pub async fn full_sync(&self) -> Result<usize, String> {
        let mut guard = self.snapshot.lock().await;
        let snapshot = DirectorySync::full(&self.directory).await.map_err(|e| e.to_string())?;
        self.persist(&snapshot).await?;
        let users = snapshot.users.len();
        *guard = Some(snapshot);
        Ok(users)
    }

    /// Applies one `user_*` / `org_dept_*` event: leavers and removed departments go at once,
    /// added or changed ones are fetched again. Before the first full sync there is nothing to
    /// change (that sync will read the current state).
    pub async fn apply(&self, event_type: &str, payload: &Value) -> Result<(), String> {
        let mut guard = self.snapshot.lock().await;
        if guard.is_none() {
            *guard = load(self.store.as_ref(), &self.app).await?;
        }
        let Some(snapshot) = guard.as_mut() else { return Ok(()) };
        let refetch = DirectorySync::apply_event(snapshot, event_type, payload).map_err(|e| e.to_string())?;
        if !refetch.is_empty() {
            DirectorySync::refetch(&self.directory, snapshot, &refetch).await.map_err(|e| e.to_string())?;
        }
        self.persist(snapshot).await
    }

    /// Full syncs now and every [`FULL_SYNC_EVERY`] (sooner again after a failure) until `cancel`.
    pub fn spawn(self: Arc<Self>, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
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
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}

/// Whether DingTalk event type `event_type` changes the directory.
pub fn is_directory_event(event_type: &str) -> bool {
    event_type.starts_with("user_") || event_type.starts_with("org_dept_")
}
