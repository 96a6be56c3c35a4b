//! How the operator commands (`dlq`, `audit`) find the store and its audit key.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{AuditKey, Store};

/// The environment variable holding the audit key when only `--store URL` is given (the same
/// name `examples/hk-trading.toml` uses for `[audit] key`).
pub const AUDIT_KEY_ENV: &str = "DINGBRIDGE_AUDIT_KEY";

/// Where the store is, and where its audit key comes from.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// The gateway's config: its `[store] url` and `[audit] key`.
    #[arg(short, long, global = true)]
    pub config: Option<PathBuf>,
    /// Store URL overriding the config's (sqlite://path or postgres://...).
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// File holding the audit key (overrides the config's `[audit] key`). Without it and without
    /// `-c`, the key is read from DINGBRIDGE_AUDIT_KEY when set.
    #[arg(long, global = true)]
    pub key_file: Option<PathBuf>,
}

/// Whether a command reads the audit key: only those that write or verify audit rows do, so
/// `dlq list` and `audit anchor` work where the key is not at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Needed,
    NotNeeded,
}

/// An open store and the audit key it was opened with.
pub struct Opened {
    pub store: Arc<dyn Store>,
    pub key: Option<AuditKey>,
    /// Where the key came from, for messages ("--key-file /etc/…", "[audit] key of FILE", …).
    pub key_source: Option<String>,
}

/// Open the store of `args` with its audit key (when `key_use` needs it): `--key-file`, else the
/// config's `[audit] key` (with `-c`), else `DINGBRIDGE_AUDIT_KEY` (without `-c`), else none.
pub async fn open(args: &StoreArgs, key_use: KeyUse) -> anyhow::Result<Opened> {
    let config = match &args.config {
        Some(path) => {
            let Some(config) = crate::gateway::load(path) else {
                anyhow::bail!("the config {} is invalid", path.display());
            };
            Some(config)
        }
        None => None,
    };
    let url = match (&args.store, &config) {
        (Some(url), _) => url.clone(),
        (None, Some(config)) => config.store.url.clone(),
        (None, None) => anyhow::bail!("give --store URL or -c CONFIG to find the store"),
    };
    let (key, key_source) = match (&args.key_file, &config) {
        _ if key_use == KeyUse::NotNeeded => (None, None),
        (Some(path), _) => (Some(key_from_file(path)?), Some(format!("--key-file {}", path.display()))),
        (None, Some(config)) => match config.audit_key() {
            Ok(key) => {
                let source = key.as_ref().map(|_| format!("[audit] key of {}", config.path()));
                (key, source)
            }
            Err(errors) => {
                eprint!("{}", errors.render());
                anyhow::bail!("cannot read the audit key named in {}", config.path());
            }
        },
        (None, None) => match std::env::var(AUDIT_KEY_ENV) {
            Ok(text) if !text.is_empty() => {
                let key = AuditKey::new(text).with_context(|| format!("the audit key in {AUDIT_KEY_ENV}"))?;
                (Some(key), Some(AUDIT_KEY_ENV.to_owned()))
            }
            _ => (None, None),
        },
    };
    let store = store::open_with_audit_key(&url, key.clone())
        .await
        .with_context(|| format!("opening the store {}", crate::gateway::redact_store_url(&url)))?;
    Ok(Opened { store, key, key_source })
}

/// A key file's bytes, the trailing newline trimmed (as for every secret file).
fn key_from_file(path: &Path) -> anyhow::Result<AuditKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the audit key file {}", path.display()))?;
    AuditKey::new(text.trim_end_matches(['\r', '\n'])).with_context(|| format!("the audit key in {}", path.display()))
}

/// How to give the audit key, for messages.
pub const HOW_TO_GIVE_THE_KEY: &str =
    "give -c CONFIG (its [audit] key), --key-file PATH, or DINGBRIDGE_AUDIT_KEY with --store URL";
