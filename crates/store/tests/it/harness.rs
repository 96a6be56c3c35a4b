//! Backends for the contract suite: SQLite in a temp file, Postgres in a fresh schema per test.

use sqlx::{Connection, Executor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use store::{AuditKey, Intake, NewJob, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub enum Raw {
    Sqlite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

pub struct Backend {
    pub kind: Kind,
    pub store: Arc<dyn Store>,
    /// The URL `store::open` was given (reopen uses it again).
    pub url: String,
    /// The audit key `store` hashes the audit chain with ([`test_key`]).
    pub audit_key: Option<AuditKey>,
    pub schema: Option<String>,
    raw: Option<Raw>,
    _dir: Option<tempfile::TempDir>,
}

pub fn pg_base_url() -> String {
    std::env::var("DINGBRIDGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The audit key of the contract suite's stores.
pub fn test_key() -> AuditKey {
    AuditKey::new("dingbridge contract suite audit key, 32+ bytes").expect("test key")
}

/// Another valid key: an attacker's, or a wrongly configured one.
pub fn other_key() -> AuditKey {
    AuditKey::new("not the key the gateway writes with, 32+ bytes").expect("other key")
}

fn unique_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("{}_{n}_{}", std::process::id(), &u[..8])
}

impl Backend {
    pub async fn new(kind: Kind) -> Option<Backend> {
        match kind {
            Kind::Sqlite => Some(Self::sqlite_in(None).await),
            Kind::Postgres => Self::postgres().await,
        }
    }

    /// A SQLite file in a fresh temp dir (under `dir` when given, e.g. /dev/shm).
    pub async fn sqlite_in(dir: Option<&str>) -> Backend {
        let tmp = match dir {
            Some(d) if std::path::Path::new(d).is_dir() => tempfile::tempdir_in(d),
            _ => tempfile::tempdir(),
        }
        .expect("temp dir");
        let url = format!("sqlite://{}", tmp.path().join("store.db").display());
        let audit_key = Some(test_key());
        let store = store::open_with_audit_key(&url, audit_key.clone()).await.expect("open sqlite store");
        Backend { kind: Kind::Sqlite, store, url, audit_key, schema: None, raw: None, _dir: Some(tmp) }
    }

    /// A fresh schema on the test database, or `None` (skip) when Postgres is unreachable and
    /// `CI` is not `true` (then unreachable Postgres is a failure).
    pub async fn postgres() -> Option<Backend> {
        let base = pg_base_url();
        if let Err(e) = sqlx::PgConnection::connect(&base).await {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("Postgres at {base} is unreachable and CI=true: {e}");
            }
            eprintln!("SKIPPED: Postgres at {base} is unreachable ({e}); set DINGBRIDGE_TEST_PG");
            return None;
        }
        let schema = format!("st_{}", unique_suffix());
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}schema={schema}");
        let audit_key = Some(test_key());
        let store = store::open_with_audit_key(&url, audit_key.clone()).await.expect("open postgres store");
        Some(Backend { kind: Kind::Postgres, store, url, audit_key, schema: Some(schema), raw: None, _dir: None })
    }

    /// Another handle on the same database (a second gateway process, say), with the same key.
    pub async fn open_again(&self) -> Arc<dyn Store> {
        self.open_with_key(self.audit_key.clone()).await
    }

    /// Another handle on the same database whose audit key is `key` (`None`: no key).
    pub async fn open_with_key(&self, key: Option<AuditKey>) -> Arc<dyn Store> {
        store::open_with_audit_key(&self.url, key).await.expect("open store again")
    }

    /// Close the store and open it again on the same file / schema.
    pub async fn reopen(&mut self) {
        self.store.close().await;
        self.store = self.open_again().await;
    }

    async fn raw(&mut self) -> &mut Raw {
        if self.raw.is_none() {
            let raw = match self.kind {
                Kind::Sqlite => {
                    let mut c = sqlx::SqliteConnection::connect(&self.url).await.expect("raw sqlite");
                    c.execute("PRAGMA synchronous = OFF").await.expect("pragma");
                    Raw::Sqlite(c)
                }
                Kind::Postgres => {
                    let mut c = sqlx::PgConnection::connect(&pg_base_url()).await.expect("raw pg");
                    let schema = self.schema.clone().expect("schema");
                    c.execute(format!("SET search_path = {schema}").as_str()).await.expect("path");
                    Raw::Pg(c)
                }
            };
            self.raw = Some(raw);
        }
        self.raw.as_mut().expect("raw connection")
    }

    /// Run raw SQL (several statements allowed) on the backend, bypassing the store.
    pub async fn exec(&mut self, sql: &str) {
        match self.raw().await {
            Raw::Sqlite(c) => {
                c.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Raw::Pg(c) => {
                c.execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    /// Empty every table (between proptest cases); the audit head is reset too.
    pub async fn reset(&mut self) {
        self.exec(
            "DELETE FROM dead_letters; DELETE FROM jobs; DELETE FROM inbox; DELETE FROM cursors; \
             DELETE FROM id_links; DELETE FROM audit_log; DELETE FROM task_leases; \
             UPDATE audit_head SET seq = 0, key_id = NULL, \
             hash = '0000000000000000000000000000000000000000000000000000000000000000';",
        )
        .await;
    }

    /// Drop the test schema (Postgres); the SQLite temp dir goes away with `self`.
    pub async fn teardown(mut self) {
        self.store.close().await;
        if let Some(raw) = self.raw.take() {
            match raw {
                Raw::Sqlite(c) => {
                    let _ = c.close().await;
                }
                Raw::Pg(c) => {
                    let _ = c.close().await;
                }
            }
        }
        if let (Kind::Postgres, Some(schema)) = (self.kind, &self.schema) {
            if let Ok(mut c) = sqlx::PgConnection::connect(&pg_base_url()).await {
                let _ = c.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await;
                let _ = c.close().await;
            }
        }
    }
}

/// Generate `sqlite_<case>` and `postgres_<case>` tests from `async fn <case>(&mut Backend)`.
#[macro_export]
macro_rules! contract_tests {
    ($($case:ident),* $(,)?) => {
        pub mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let mut b = $crate::harness::Backend::new($crate::harness::Kind::Sqlite)
                        .await
                        .expect("sqlite backend");
                    super::$case(&mut b).await;
                    b.teardown().await;
                }
            )*
        }
        pub mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(mut b) =
                        $crate::harness::Backend::new($crate::harness::Kind::Postgres).await
                    else {
                        return;
                    };
                    super::$case(&mut b).await;
                    b.teardown().await;
                }
            )*
        }
    };
}

pub const DEST: &str = "dingtalk:robot:sales";

pub fn job(key: &str, idem: &str, due: i64) -> NewJob {
    NewJob {
        flow: "flow".into(),
        destination: DEST.into(),
        ordering_key: key.into(),
        idempotency_key: idem.into(),
        payload: format!("{{\"idem\":\"{idem}\"}}"),
        next_attempt_at: due,
        coalesce: false,
    }
}

pub fn intake(dedup: &str, event: &str, jobs: Vec<NewJob>) -> Intake {
    Intake {
        dedup_key: dedup.into(),
        event_id: event.into(),
        source: "erp-events".into(),
        received_at: 1_000,
        event_json: format!("{{\"id\":\"{event}\"}}"),
        jobs,
        dead_letter: None,
    }
}
