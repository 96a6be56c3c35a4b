//! PostgreSQL backend (scale-out): several gateway processes share one database. Claims use
//! `FOR UPDATE SKIP LOCKED` (see `claim.rs`); ingests are serialised per schema by an advisory
//! transaction lock so job ids of one ordering key are committed in id order (per-key FIFO across
//! instances); audit appends serialise on the `audit_head` row lock, so the chain never forks.
//! The statements are shared: see [`crate::SqlStore`].

use crate::common::Dialect;
use crate::sql_store::{Backend, Durability, SqlStore};
use crate::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{Connection, Executor, Postgres};
use std::str::FromStr;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a store call waits for a pooled connection. While the server is down, sqlx keeps
/// retrying a refused connect until this deadline, so it is how long an intake request hangs
/// before its 503: it must stay well under a sender's timeout (R13).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// A store in one PostgreSQL database (or one schema of it).
pub type PgStore = SqlStore<PgPools>;

/// The connections of a PostgreSQL store.
pub struct PgPools {
    pool: PgPool,
    /// Same database with `synchronous_commit = off`, for leases, completions and retries:
    /// losing one of those to a database crash only repeats a delivery (at-least-once), and it
    /// keeps a WAL flush out of every event's path. Intake, replays, cursors, links and the audit
    /// chain stay on the synchronous pool.
    unsynced: PgPool,
}

impl PgStore {
    /// Connect, create `schema` if given and missing, use it as `search_path` on every pooled
    /// connection, and migrate (`_sqlx_migrations` lands in that schema too).
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl { url: url.to_owned(), reason };
        let mut opts = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
        if let Some(schema) = schema {
            let valid = !schema.is_empty()
                && schema.len() <= 63
                && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !schema.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(bad(format!("schema `{schema}` must match [a-z_][a-z0-9_]* (at most 63 characters)")));
            }
            let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
            let created = conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str()).await;
            if let Err(e) = created {
                // Two openers racing on CREATE SCHEMA IF NOT EXISTS: the loser sees a unique
                // violation although the schema now exists.
                let exists = sqlx::query("SELECT 1 FROM pg_namespace WHERE nspname = $1")
                    .bind(schema)
                    .fetch_optional(&mut conn)
                    .await?
                    .is_some();
                if !exists {
                    return Err(e.into());
                }
            }
            conn.close().await?;
            opts = opts.options([("search_path", schema)]);
        }
        let pool =
            PgPoolOptions::new().max_connections(8).acquire_timeout(ACQUIRE_TIMEOUT).connect_with(opts.clone()).await?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        let unsynced = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.options([("synchronous_commit", "off")]))
            .await?;
        Ok(SqlStore::new(PgPools { pool, unsynced }))
    }

    /// The connection pool, for tests and admin tooling.
    pub fn pool(&self) -> &PgPool {
        &self.backend.pool
    }
}

impl Backend for PgPools {
    type Db = Postgres;

    const DIALECT: Dialect = Dialect::Postgres;

    const BEGIN_WRITE: &'static str = "BEGIN";

    /// One snapshot for every statement of the transaction.
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

    /// Serialise ingests of this schema: ids are then committed in id order, so a claimer never
    /// sees job n+1 of a key before job n exists.
    const INGEST_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(hashtext(current_schema()), 1)");

    async fn write_conn(&self, durability: Durability) -> Result<PoolConnection<Postgres>, StoreError> {
        let pool = match durability {
            Durability::Synced => &self.pool,
            Durability::Unsynced => &self.unsynced,
        };
        Ok(pool.acquire().await?)
    }

    fn read_pool(&self) -> &PgPool {
        &self.pool
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn close(&self) {
        self.unsynced.close().await;
        self.pool.close().await;
    }
}
