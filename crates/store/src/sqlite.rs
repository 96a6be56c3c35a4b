//! SQLite backend: WAL, `synchronous=FULL` for intake (see [`Durability`]), ONE write connection
//! (SQLite has one writer, so writes queue in the pool instead of fighting over SQLITE_BUSY) and
//! a small read pool. The statements are shared: see [`crate::SqlStore`].

use crate::common::Dialect;
use crate::sql_store::{Backend, Durability, SqlStore};
use crate::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// A store in one SQLite file.
pub type SqliteStore = SqlStore<SqlitePools>;

/// The connections of a SQLite store.
pub struct SqlitePools {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Whether the writer connection currently runs with `synchronous = FULL`.
    writer_synced: AtomicBool,
}

impl SqliteStore {
    /// `sqlite://path/to/file.db` (created if missing), migrated.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl { url: url.to_owned(), reason: e.to_string() })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&writer).await.map_err(|e| StoreError::Migration(e.to_string()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(opts.create_if_missing(false))
            .await?;
        Ok(SqlStore::new(SqlitePools { writer, reader, writer_synced: AtomicBool::new(true) }))
    }
}

impl Backend for SqlitePools {
    type Db = Sqlite;

    const DIALECT: Dialect = Dialect::Sqlite;

    /// Write transactions take the write lock up front.
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";

    /// In WAL mode a read transaction sees the snapshot of its first read.
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";

    /// Ingests are serialised already: they all go through the one writer connection.
    const INGEST_LOCK: Option<&'static str> = None;

    /// The single write connection, switched to the durability this write needs: `Synced` is
    /// `synchronous = FULL` (fsync on commit), `Unsynced` is `synchronous = NORMAL` (WAL still
    /// survives a process kill, and the next synced commit flushes it), which removes two fsyncs
    /// from every event's path.
    async fn write_conn(&self, durability: Durability) -> Result<PoolConnection<Sqlite>, StoreError> {
        let mut conn = self.writer.acquire().await?;
        if conn.is_in_transaction() {
            // A COMMIT that failed (SQLITE_FULL, an I/O error) leaves sqlx counting a transaction
            // that SQLite already rolled back, and the ROLLBACK on drop fails too: every later
            // BEGIN on this connection would fail, forever (R14). Replace the connection.
            tracing::warn!("The SQLite write connection was left inside a failed transaction; reopening it.");
            conn.close_on_drop();
            drop(conn);
            conn = self.writer.acquire().await?;
            // A fresh connection starts with the options' `synchronous = FULL`.
            self.writer_synced.store(true, Ordering::SeqCst);
        }
        let synced = durability == Durability::Synced;
        // The pool holds one connection, so whoever holds it owns this flag too.
        if self.writer_synced.load(Ordering::SeqCst) != synced {
            let pragma = if synced { "PRAGMA synchronous = FULL" } else { "PRAGMA synchronous = NORMAL" };
            sqlx::query(pragma).execute(&mut *conn).await?;
            self.writer_synced.store(synced, Ordering::SeqCst);
        }
        Ok(conn)
    }

    fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    /// Readers first, so the writer's close checkpoints the WAL.
    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}
