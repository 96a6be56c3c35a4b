//! Opening a store from a URL.

use crate::{AuditKey, PgStore, SqliteStore, Store, StoreError};
use std::sync::Arc;

/// Open (and migrate) a store without an audit key: it appends to and verifies only an unkeyed
/// audit chain (see [`open_with_audit_key`]).
///
/// - `sqlite://path/to/file.db` or `sqlite:path/to/file.db`: created if missing.
/// - `postgres://…` / `postgresql://…`, optionally with `?schema=NAME`: the schema is created
///   if missing and every pooled connection uses it as `search_path`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with_audit_key(url, None).await
}

/// Open (and migrate) a store as [`open`] does, whose audit rows are hashed (and verified) with
/// `audit_key`. Opening never writes the key; [`Store::audit_bind_key`] does.
pub async fn open_with_audit_key(url: &str, audit_key: Option<AuditKey>) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(open_sqlite(url).await?.with_audit_key(audit_key)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (base, schema) = split_schema_param(url);
        Ok(Arc::new(open_postgres(&base, schema.as_deref()).await?.with_audit_key(audit_key)))
    } else {
        Err(StoreError::BadUrl { url: url.to_owned(), reason: "expected a sqlite:// or postgres:// URL".into() })
    }
}

/// Open (and migrate) a SQLite store file.
pub async fn open_sqlite(url: &str) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(url).await
}

/// Open (and migrate) a Postgres store, in `schema` when given (created if missing).
pub async fn open_postgres(url: &str, schema: Option<&str>) -> Result<PgStore, StoreError> {
    PgStore::open(url, schema).await
}

/// Remove a `schema=NAME` query parameter from a URL; return the rest and the name.
pub(crate) fn split_schema_param(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(v) => {
                schema = Some(v.to_owned());
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
    (url, schema)
}

#[cfg(test)]
mod tests {
    use super::split_schema_param;

    #[test]
    fn schema_param_is_split_off() {
        assert_eq!(split_schema_param("postgres://h/db"), ("postgres://h/db".into(), None));
        assert_eq!(split_schema_param("postgres://h/db?schema=t1"), ("postgres://h/db".into(), Some("t1".into())));
        assert_eq!(
            split_schema_param("postgres://h/db?sslmode=disable&schema=t1&x=y"),
            ("postgres://h/db?sslmode=disable&x=y".into(), Some("t1".into()))
        );
    }
}
