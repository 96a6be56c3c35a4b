//! Rotated refresh tokens shared through the store (issue 15): the Salesforce simulator rotates
//! the refresh token on every use and refuses the old one, as an org with refresh-token rotation
//! does. Two gateway instances (separate token fetchers) share one SQLite store; a third comes up
//! after a restart.

use connect::http::{HttpClient, HttpSettings};
use connect::token::TokenCache;
use connect::vault::{KeeperSlot, RotatingSecret, TokenKey};
use connect::{Clock, DeliveryError, SystemClock};
use connectors::salesforce::auth::{
    Grant, InstanceUrl, SalesforceTokenFetcher, DEFAULT_SESSION_LIFETIME, REFRESH_TOKEN_NAME,
};
use connectors::salesforce::sim::{seed, SalesforceSim, SimConfig};
use dingbridge_engine::token_vault::attach_token_vault;
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use store::Store;

const CONNECTION: &str = "salesforce.orgs.crm";

struct World {
    sim: Arc<SalesforceSim>,
    server: ::sim::RunningSim,
    url: String,
    clock: Arc<dyn Clock>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let sim =
        Arc::new(SalesforceSim::new(SimConfig { rotate_refresh_tokens: true, ..SimConfig::default() }, clock.clone()));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    World { sim, server, url, clock, _dir: dir }
}

fn key(byte: u8) -> TokenKey {
    TokenKey::derive(&[byte; 32]).unwrap()
}

impl World {
    async fn store(&self) -> Arc<dyn Store> {
        store::open(&self.url).await.unwrap()
    }

    /// One gateway instance's token cache for the org, configured with the original refresh
    /// token, its vault over `store` sealed with `key` (none: memory only).
    fn instance(&self, store: Option<(Arc<dyn Store>, TokenKey)>) -> Arc<TokenCache> {
        let slot = KeeperSlot::default();
        if let Some((store, key)) = store {
            attach_token_vault(&slot, Some(key), store, self.clock.clone(), 1);
        }
        let refresh = RotatingSecret::new(
            CONNECTION,
            REFRESH_TOKEN_NAME,
            SecretString::from(seed::REFRESH_TOKEN.to_owned()),
            slot,
        );
        let grant = Grant::rotating_refresh_token(
            seed::CLIENT_ID,
            Some(SecretString::from(seed::CLIENT_SECRET.to_owned())),
            Arc::new(refresh),
        );
        let fetcher = SalesforceTokenFetcher::new(
            HttpClient::new(HttpSettings::loopback()).unwrap(),
            &self.server.url(),
            grant,
            DEFAULT_SESSION_LIFETIME,
            Arc::new(InstanceUrl::default()),
            self.clock.clone(),
        )
        .unwrap();
        Arc::new(TokenCache::new(Arc::new(fetcher), Duration::from_secs(60), self.clock.clone()))
    }

    fn live_refresh_token(&self) -> (String, u64) {
        self.sim.refresh_token()
    }
}

/// A fresh access token from `cache` (the cached one is dropped first, as after a 401).
async fn refresh(cache: &TokenCache) -> Result<SecretString, DeliveryError> {
    if let Ok(old) = cache.get().await {
        cache.invalidate(&old).await;
    }
    cache.get().await
}

#[tokio::test]
async fn a_rotated_refresh_token_is_shared_by_instances_and_survives_a_restart() {
    let w = world().await;
    let store_a = w.store().await;
    let a = w.instance(Some((store_a.clone(), key(1))));
    a.get().await.expect("A refreshes with the configured token");
    assert_eq!(w.live_refresh_token().1, 1, "the simulator rotated it");
    let row = store_a.load_credential(CONNECTION, REFRESH_TOKEN_NAME).await.unwrap().expect("saved");
    assert_eq!(row.version, 1);
    assert!(!row.sealed.contains(&w.live_refresh_token().0), "sealed, not in the clear");
    assert!(!row.sealed.contains("5Aep861"), "sealed, not in the clear");

    // B, a second instance on the same store, starts after the rotation: it loads the stored
    // token instead of the configured (now revoked) one.
    let store_b = w.store().await;
    let b = w.instance(Some((store_b.clone(), key(1))));
    b.get().await.expect("B refreshes with the persisted token");
    assert_eq!(w.live_refresh_token().1, 2);

    // A still holds the token it rotated to, which B's refresh revoked: the vendor refuses it
    // (invalid_grant), A reloads the store and retries once, successfully.
    let fetches = a.fetch_count();
    refresh(&a).await.expect("A follows B's rotation");
    assert_eq!(a.fetch_count(), fetches + 1, "one fetch round (with one retry inside)");
    assert_eq!(w.live_refresh_token().1, 3);
    refresh(&b).await.expect("and B follows A's");
    assert_eq!(w.live_refresh_token().1, 4);
    let row = store_b.load_credential(CONNECTION, REFRESH_TOKEN_NAME).await.unwrap().unwrap();
    assert_eq!(row.version, 4, "each rotation saved once, none overwritten");
    drop((a, b));
    store_a.close().await;
    store_b.close().await;

    // A restart: a new instance, same store file, configured with the original token.
    let c = w.instance(Some((w.store().await, key(1))));
    c.get().await.expect("after a restart the stored token is used");
    assert_eq!(w.live_refresh_token().1, 5);

    // Without the store (today's behaviour), a restart presents the revoked configured token.
    let memory_only = w.instance(None);
    let err = memory_only.get().await.unwrap_err();
    assert!(err.to_string().contains("invalid_grant"), "{err}");
}

#[tokio::test]
async fn a_store_sealed_with_another_key_is_a_coded_error_not_a_revoked_token() {
    let w = world().await;
    let store = w.store().await;
    w.instance(Some((store.clone(), key(1)))).get().await.unwrap();
    let rotations = w.live_refresh_token().1;
    let err = w.instance(Some((store, key(2)))).get().await.unwrap_err();
    assert!(err.to_string().contains("DB0309"), "{err}");
    assert_eq!(w.live_refresh_token().1, rotations, "nothing was sent to the vendor");
}
