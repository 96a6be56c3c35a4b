//! A cached OAuth-style access token shared by every request of one app.
//!
//! Vendors such as DingTalk hand out tokens with a lifetime (7200 s) and rate-limit the token
//! endpoint, so a connector must fetch once and share. [`TokenCache`] keeps the current token,
//! refreshes it `refresh_margin` before it expires (DingTalk's official SDK refreshes 300 s
//! early) and makes concurrent callers share ONE fetch: the refresh is a round run under a tokio
//! mutex, and everyone who waited on a round gets that round's outcome. A failed round is handed
//! to its waiters and then forgotten, so the next caller tries again instead of replaying a stale
//! error.
//!
//! Expiry is judged by the injected [`Clock`], so tests move time by hand.

use crate::clock::Clock;
use crate::error::DeliveryError;
use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret, SecretString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// One token as the vendor issued it.
#[derive(Debug, Clone)]
pub struct FetchedToken {
    pub value: SecretString,
    /// How long the vendor says it is valid, counted from the fetch.
    pub lifetime: Duration,
}

/// Gets a fresh token from the vendor. Called by [`TokenCache`] only, one call at a time.
#[async_trait::async_trait]
pub trait TokenFetcher: Send + Sync + 'static {
    async fn fetch(&self) -> Result<FetchedToken, DeliveryError>;
}

#[derive(Debug)]
struct Cached {
    value: SecretString,
    /// From this instant on the token counts as stale and the next `get` refreshes it.
    refresh_at: Timestamp,
}

/// What the last completed round left for the callers that waited on it.
#[derive(Debug, Default)]
struct Round {
    /// `Some` iff the last completed round failed.
    failed: Option<DeliveryError>,
}

/// A token cache with single-flight refresh. `Send + Sync`; share it behind an `Arc`.
pub struct TokenCache {
    fetcher: Arc<dyn TokenFetcher>,
    refresh_margin: Duration,
    clock: Arc<dyn Clock>,
    /// The current token; a std mutex held only to copy or replace it, never across `.await`.
    cached: Mutex<Option<Cached>>,
    /// Held for the whole of a refresh, so only one fetch runs at a time.
    refresh: tokio::sync::Mutex<Round>,
    /// Completed refresh rounds (success or failure); tells a waiter whether a round finished
    /// while it waited.
    rounds: AtomicU64,
    fetches: AtomicU64,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("refresh_margin", &self.refresh_margin)
            .field("fetches", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// `refresh_margin`: how long before expiry a token is replaced. It is capped at half the
    /// token's lifetime, so a vendor handing out short tokens does not cause a fetch per call.
    pub fn new(fetcher: Arc<dyn TokenFetcher>, refresh_margin: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            fetcher,
            refresh_margin,
            clock,
            cached: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(Round::default()),
            rounds: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    fn lock_cached(&self) -> MutexGuard<'_, Option<Cached>> {
        // The slot is replaced in one assignment, so a poisoned lock still holds a whole value.
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached token if it is not yet due for refresh.
    fn fresh(&self) -> Option<SecretString> {
        let now = self.clock.now();
        self.lock_cached().as_ref().filter(|c| now < c.refresh_at).map(|c| c.value.clone())
    }

    /// The current token, fetching one if none is cached or it is due for refresh. Concurrent
    /// callers share one fetch; if that fetch fails, all of them get its error.
    pub async fn get(&self) -> Result<SecretString, DeliveryError> {
        // Read before looking at the cache: a round that completes after this point is one we
        // may have waited on.
        let seen_rounds = self.rounds.load(Ordering::SeqCst);
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let mut round = self.refresh.lock().await;
        if self.rounds.load(Ordering::SeqCst) != seen_rounds {
            if let Some(err) = &round.failed {
                return Err(clone_error(err));
            }
        }
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let outcome = self.fetcher.fetch().await;
        let result = match outcome {
            Ok(fetched) => {
                let margin = self.refresh_margin.min(fetched.lifetime / 2);
                let usable = fetched.lifetime.saturating_sub(margin);
                let refresh_at = self
                    .clock
                    .now()
                    .checked_add(SignedDuration::try_from(usable).unwrap_or(SignedDuration::MAX))
                    .unwrap_or(Timestamp::MAX);
                *self.lock_cached() = Some(Cached { value: fetched.value.clone(), refresh_at });
                tracing::debug!(lifetime_s = fetched.lifetime.as_secs(), "Access token refreshed.");
                round.failed = None;
                Ok(fetched.value)
            }
            Err(err) => {
                tracing::warn!(error = %err, "Fetching an access token failed.");
                round.failed = Some(clone_error(&err));
                Err(err)
            }
        };
        self.rounds.fetch_add(1, Ordering::SeqCst);
        result
    }

    /// Drops the cached token, but only if it is still `stale`: when many calls fail with the
    /// same rejected token, the first invalidation wins and the fresh token fetched after it
    /// is not thrown away by the others.
    pub async fn invalidate(&self, stale: &SecretString) {
        let mut cached = self.lock_cached();
        if cached.as_ref().is_some_and(|c| c.value.expose_secret() == stale.expose_secret()) {
            *cached = None;
            tracing::debug!("Access token invalidated after the vendor rejected it.");
        }
    }

    /// How many times the vendor was asked for a token (metrics and tests).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// `DeliveryError` is not `Clone` (it lives in `error.rs`); every field is, so one round's error
/// can be handed to each of its waiters.
fn clone_error(err: &DeliveryError) -> DeliveryError {
    match err {
        DeliveryError::Transport { endpoint, reason } => {
            DeliveryError::Transport { endpoint: endpoint.clone(), reason: reason.clone() }
        }
        DeliveryError::Timeout { endpoint, after } => {
            DeliveryError::Timeout { endpoint: endpoint.clone(), after: *after }
        }
        DeliveryError::Throttled { vendor, detail, retry_after } => {
            DeliveryError::Throttled { vendor, detail: detail.clone(), retry_after: *retry_after }
        }
        DeliveryError::Server { vendor, status, detail } => {
            DeliveryError::Server { vendor, status: *status, detail: detail.clone() }
        }
        DeliveryError::Auth { vendor, detail } => DeliveryError::Auth { vendor, detail: detail.clone() },
        DeliveryError::Rejected { vendor, detail } => DeliveryError::Rejected { vendor, detail: detail.clone() },
        DeliveryError::BadPayload { destination, detail } => {
            DeliveryError::BadPayload { destination: destination.clone(), detail: detail.clone() }
        }
        DeliveryError::UnsafeDestination { endpoint, reason } => {
            DeliveryError::UnsafeDestination { endpoint: endpoint.clone(), reason: reason.clone() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    /// A clock moved by hand (this crate has no tokio `test-util`, so no paused time).
    #[derive(Debug)]
    struct ManualClock {
        ms: AtomicI64,
    }

    impl ManualClock {
        fn new() -> Arc<Self> {
            Arc::new(Self { ms: AtomicI64::new(1_700_000_000_000) })
        }

        fn advance(&self, by: Duration) {
            self.ms.fetch_add(i64::try_from(by.as_millis()).unwrap(), Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Timestamp {
            Timestamp::from_millisecond(self.ms.load(Ordering::SeqCst)).unwrap()
        }
    }

    /// Hands out `token-1`, `token-2`, … (or the scripted errors first); each fetch waits for a
    /// permit of `gate` when one is set, so tests can hold a round open.
    struct ScriptedFetcher {
        calls: AtomicU64,
        lifetime: Duration,
        failures: Mutex<Vec<DeliveryError>>,
        gate: Option<tokio::sync::Semaphore>,
    }

    impl ScriptedFetcher {
        fn new(lifetime: Duration) -> Self {
            Self { calls: AtomicU64::new(0), lifetime, failures: Mutex::new(Vec::new()), gate: None }
        }

        fn gated(mut self) -> Self {
            self.gate = Some(tokio::sync::Semaphore::new(0));
            self
        }

        fn failing_first(self, err: DeliveryError) -> Self {
            self.failures.lock().unwrap().push(err);
            self
        }

        fn open_gate(&self, permits: usize) {
            self.gate.as_ref().unwrap().add_permits(permits);
        }
    }

    #[async_trait::async_trait]
    impl TokenFetcher for ScriptedFetcher {
        async fn fetch(&self) -> Result<FetchedToken, DeliveryError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(gate) = &self.gate {
                gate.acquire().await.unwrap().forget();
            }
            if let Some(err) = self.failures.lock().unwrap().pop() {
                return Err(err);
            }
            Ok(FetchedToken { value: format!("token-{n}").into(), lifetime: self.lifetime })
        }
    }

    const HOUR2: Duration = Duration::from_secs(7200);
    const MARGIN: Duration = Duration::from_secs(300);

    fn cache(fetcher: &Arc<ScriptedFetcher>, clock: &Arc<ManualClock>) -> Arc<TokenCache> {
        Arc::new(TokenCache::new(fetcher.clone(), MARGIN, clock.clone()))
    }

    fn server_error() -> DeliveryError {
        DeliveryError::Server { vendor: "Test", status: 503, detail: "token endpoint down".to_owned() }
    }

    /// Lets every spawned task run until it parks (the test runtime is single-threaded).
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let clock = ManualClock::new();
        let fetcher = Arc::new(ScriptedFetcher::new(HOUR2).gated());
        let cache = cache(&fetcher, &clock);
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get().await.map(|t| t.expose_secret().to_owned()) })
            })
            .collect();
        settle().await;
        assert_eq!(cache.fetch_count(), 1, "one fetch is in flight, 99 callers wait for it");
        fetcher.open_gate(1);
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "token-1");
        }
        assert_eq!(cache.fetch_count(), 1);
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-1", "served from the cache");
        assert_eq!(cache.fetch_count(), 1);
    }

    #[tokio::test]
    async fn refreshes_margin_before_expiry_and_after_it() {
        let clock = ManualClock::new();
        let fetcher = Arc::new(ScriptedFetcher::new(HOUR2));
        let cache = cache(&fetcher, &clock);
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-1");
        // Just before the margin starts (7200 - 300 s): still cached.
        clock.advance(HOUR2 - MARGIN - Duration::from_millis(1));
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-1");
        assert_eq!(cache.fetch_count(), 1);
        // Inside the margin: refreshed although the vendor would still accept it.
        clock.advance(Duration::from_millis(1));
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-2");
        assert_eq!(cache.fetch_count(), 2);
        // Long after expiry: refreshed again.
        clock.advance(HOUR2 * 3);
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-3");
        assert_eq!(cache.fetch_count(), 3);
    }

    #[tokio::test]
    async fn margin_is_capped_at_half_a_short_lifetime() {
        let clock = ManualClock::new();
        let fetcher = Arc::new(ScriptedFetcher::new(Duration::from_secs(60)));
        let cache = cache(&fetcher, &clock);
        cache.get().await.unwrap();
        clock.advance(Duration::from_secs(29));
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-1", "a 300 s margin must not void a 60 s token");
        clock.advance(Duration::from_secs(1));
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-2");
    }

    #[tokio::test]
    async fn invalidate_drops_only_the_stale_token() {
        let clock = ManualClock::new();
        let fetcher = Arc::new(ScriptedFetcher::new(HOUR2));
        let cache = cache(&fetcher, &clock);
        let first = cache.get().await.unwrap();
        cache.invalidate(&first).await;
        let second = cache.get().await.unwrap();
        assert_eq!(second.expose_secret(), "token-2");
        // A slower caller that also saw `first` rejected must not drop the fresh token.
        cache.invalidate(&first).await;
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-2");
        assert_eq!(cache.fetch_count(), 2);
        cache.invalidate(&second).await;
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-3");
    }

    #[tokio::test]
    async fn a_failed_fetch_reaches_every_waiter_and_is_not_cached() {
        let clock = ManualClock::new();
        let fetcher = Arc::new(ScriptedFetcher::new(HOUR2).gated().failing_first(server_error()));
        let cache = cache(&fetcher, &clock);
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get().await })
            })
            .collect();
        settle().await;
        fetcher.open_gate(1);
        for task in tasks {
            let err = task.await.unwrap().unwrap_err();
            assert!(matches!(err, DeliveryError::Server { status: 503, .. }), "{err:?}");
            assert!(err.to_string().contains("token endpoint down"));
        }
        assert_eq!(cache.fetch_count(), 1, "the waiters of a failed round share its error");
        // The next caller starts a new round instead of replaying the error.
        fetcher.open_gate(1);
        assert_eq!(cache.get().await.unwrap().expose_secret(), "token-2");
        assert_eq!(cache.fetch_count(), 2);
    }

    #[tokio::test]
    async fn a_cancelled_fetch_lets_the_next_waiter_fetch() {
        let clock = ManualClock::new();
        let fetcher = Arc::new(ScriptedFetcher::new(HOUR2).gated());
        let cache = cache(&fetcher, &clock);
        let first = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get().await })
        };
        settle().await;
        let second = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get().await })
        };
        settle().await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        fetcher.open_gate(1);
        assert_eq!(second.await.unwrap().unwrap().expose_secret(), "token-2");
        assert_eq!(cache.fetch_count(), 2);
    }

    #[test]
    fn cloned_errors_keep_kind_and_text() {
        let errors = [
            DeliveryError::Transport { endpoint: "e".into(), reason: "r".into() },
            DeliveryError::Timeout { endpoint: "e".into(), after: Duration::from_secs(3) },
            DeliveryError::Throttled { vendor: "V", detail: "d".into(), retry_after: Duration::from_secs(1) },
            DeliveryError::Server { vendor: "V", status: 500, detail: "d".into() },
            DeliveryError::Auth { vendor: "V", detail: "d".into() },
            DeliveryError::Rejected { vendor: "V", detail: "d".into() },
            DeliveryError::BadPayload { destination: "x".into(), detail: "d".into() },
        ];
        for err in &errors {
            let copy = clone_error(err);
            assert_eq!(copy.kind(), err.kind());
            assert_eq!(copy.disposition(), err.disposition());
            assert_eq!(copy.to_string(), err.to_string());
        }
    }
}
