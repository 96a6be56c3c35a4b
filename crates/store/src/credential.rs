//! Vendor credentials that rotate: the SQL behind [`crate::Store::load_credential`] and
//! [`crate::Store::save_credential`], written once for both backends.
//!
//! The store keeps an opaque sealed text per connection and credential name (the gateway encrypts
//! it; the store never sees the key). A save is compare-and-swap on `version`: the first save
//! inserts only where no row exists, a later one updates only the version it read, so two
//! instances that rotated concurrently cannot overwrite a newer value with an older one. Both
//! statements are single-row and atomic on either backend.

use crate::sql_store::{Backend, Durability, SqlStore};
use crate::{Millis, StoreError};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};

/// One stored credential: the sealed text and the version it is at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub sealed: String,
    /// 1 for the first save, one more for each later one.
    pub version: i64,
    pub updated_at: Millis,
}

const LOAD_SQL: &str = "SELECT sealed, version, updated_at FROM vendor_credentials WHERE connection = $1 AND name = $2";

/// The first save. Parameters: $1 connection, $2 name, $3 sealed, $4 now.
const INSERT_SQL: &str = "INSERT INTO vendor_credentials (connection, name, sealed, version, updated_at) \
     VALUES ($1, $2, $3, 1, $4) ON CONFLICT (connection, name) DO NOTHING";

/// A later save, fenced by the version read. Parameters: $1 sealed, $2 now, $3 connection,
/// $4 name, $5 expected version.
const UPDATE_SQL: &str = "UPDATE vendor_credentials SET sealed = $1, version = version + 1, updated_at = $2 \
     WHERE connection = $3 AND name = $4 AND version = $5";

impl<B> SqlStore<B>
where
    B: Backend,
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'a> &'a str: ColumnIndex<<B::Db as Database>::Row>,
    for<'q> &'q str: Type<B::Db> + Encode<'q, B::Db>,
    for<'r> String: Type<B::Db> + Decode<'r, B::Db>,
    for<'q, 'r> i64: Type<B::Db> + Encode<'q, B::Db> + Decode<'r, B::Db>,
{
    pub(crate) async fn load_credential_sql(
        &self,
        connection: &str,
        name: &str,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let row = sqlx::query(LOAD_SQL).bind(connection).bind(name).fetch_optional(self.backend.read_pool()).await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(StoredCredential {
            sealed: row.try_get("sealed")?,
            version: row.try_get("version")?,
            updated_at: row.try_get("updated_at")?,
        }))
    }

    pub(crate) async fn save_credential_sql(
        &self,
        connection: &str,
        name: &str,
        sealed: &str,
        expected: Option<i64>,
        now: Millis,
    ) -> Result<Option<i64>, StoreError> {
        // Synced: the vendor has already revoked the value this one replaces.
        let mut conn = self.backend.write_conn(Durability::Synced).await?;
        let r = match expected {
            None => {
                sqlx::query(INSERT_SQL).bind(connection).bind(name).bind(sealed).bind(now).execute(&mut *conn).await?
            }
            Some(version) => {
                sqlx::query(UPDATE_SQL)
                    .bind(sealed)
                    .bind(now)
                    .bind(connection)
                    .bind(name)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?
            }
        };
        Ok((B::rows_affected(&r) == 1).then(|| expected.map_or(1, |v| v + 1)))
    }
}
