//! The token vault over the store: credentials the vendors rotate (a refresh token the vendor
//! replaces on use) kept sealed in the store's `vendor_credentials` table, shared by every instance
//! on it and kept across a restart. The connectors see only [`connect::vault::TokenVault`]; the
//! sealing (AES-256-GCM under `[store] token_key`) happens in the connector before a value
//! reaches this code.

use connect::vault::{Keeper, KeeperSlot, TokenKey, TokenVault, VaultError, VaultRecord};
use connect::Clock;
use std::sync::Arc;
use store::Store;

/// [`TokenVault`] over a [`Store`].
pub struct StoreVault {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl StoreVault {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }
}

#[async_trait::async_trait]
impl TokenVault for StoreVault {
    async fn load(&self, connection: &str, name: &str) -> Result<Option<VaultRecord>, VaultError> {
        let row = self.store.load_credential(connection, name).await.map_err(|e| VaultError::Store(e.to_string()))?;
        Ok(row.map(|r| VaultRecord { sealed: r.sealed, version: r.version }))
    }

    async fn save(
        &self,
        connection: &str,
        name: &str,
        sealed: &str,
        expected: Option<i64>,
    ) -> Result<Option<i64>, VaultError> {
        let now = self.clock.now().as_millisecond();
        self.store
            .save_credential(connection, name, sealed, expected, now)
            .await
            .map_err(|e| VaultError::Store(e.to_string()))
    }
}

/// Hands the connectors their vault once the store is open. Without a key nothing is persisted:
/// rotated credentials stay in memory (as before `[store] token_key` existed) and a WARN says so
/// once, if any connection has a credential that rotates.
pub fn attach_token_vault(
    slot: &KeeperSlot,
    key: Option<TokenKey>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rotating_connections: usize,
) {
    match key {
        Some(key) => {
            let vault = Arc::new(StoreVault::new(store, clock));
            if slot.set(Keeper { vault, key }).is_err() {
                tracing::debug!("The token vault was attached already.");
            }
        }
        None if rotating_connections > 0 => tracing::warn!(
            connections = rotating_connections,
            "No [store] token_key is configured: refresh tokens a vendor rotates are kept in memory only, \
             so a restart or a second instance uses a revoked one. Configure token_key = {{ env = \"...\" }}."
        ),
        None => {}
    }
}
