//! `[sources.NAME]` with an ERP `type` (`netsuite`, `dynamics`, `sap`): the pure validation every
//! ERP source shares (the connection it names, the objects it watches, polling, staleness,
//! coalescing, and that something brings changes in) and the validated [`ErpSource`].
//!
//! What differs per vendor (the key that names its connection, how its pushes are
//! authenticated, its own checks against the connection) is the vendor's `config.rs`, an
//! [`ErpSourceRules`] reached through [`ErpSystem::source_rules`], so this module has no vendor
//! match arms.

use crate::registry::{ErpSystem, RawTables};
use connect::config::{span, suggest, Code, ConfigError, ConnectionTable, Diagnostics, RawSecretRef, SecretRef, S};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ERP pushes for one record (a save often fires several user events) within this window are one read.
const DEFAULT_COALESCE: Duration = Duration::from_secs(2);
/// The largest file read from a drop folder by default: 16 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1_048_576;

/// A source watching records of one ERP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpSource {
    pub system: ErpSystem,
    /// A `[netsuite.accounts.*]`, `[dynamics.orgs.*]` or `[sap.systems.*]` name.
    pub connection: String,
    /// Record types / entity sets as written (the vendor's spelling), e.g. `itemFulfillment`.
    pub objects: Vec<String>,
    /// NetSuite: the HMAC key of the user-event script; Dynamics: the `x-dingbridge-key` value.
    pub webhook_secret: Option<SecretRef>,
    /// Reconciliation poll interval; `None` = no polling.
    pub poll: Option<Duration>,
    /// A status older than this when it is received is marked stale.
    pub stale_after: Option<Duration>,
    /// Pushes for one record within this window become one read.
    pub coalesce: Duration,
    /// SAP: the watched IDoc drop folder (relative paths resolved against the config file's directory).
    pub idoc_folder: Option<PathBuf>,
    /// SAP: the largest file read from `idoc_folder`; a larger one is not read but moved to
    /// `failed/` with the reason.
    pub max_file_bytes: u64,
    /// SAP: the HTTP Basic user of the ECC XML-HTTP port.
    pub idoc_user: Option<String>,
    pub idoc_password: Option<SecretRef>,
}

/// The keys of `[sources.NAME]` an ERP source reads, as written. The source table stays one flat
/// table in the engine (serde's tagged enums would lose the spans); this is the part of it that
/// is ours to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErpSourceKeys<'a> {
    pub account: Option<&'a S<String>>,
    pub org: Option<&'a S<String>>,
    pub system: Option<&'a S<String>>,
    pub objects: Option<&'a S<Vec<S<String>>>>,
    pub webhook_secret: Option<&'a S<RawSecretRef>>,
    pub poll: Option<&'a S<String>>,
    pub stale_after: Option<&'a S<String>>,
    pub coalesce: Option<&'a S<String>>,
    pub idoc_folder: Option<&'a S<String>>,
    pub max_file_bytes: Option<&'a S<u64>>,
    pub idoc_user: Option<&'a S<String>>,
    pub idoc_password: Option<&'a S<RawSecretRef>>,
}

impl<'a> ErpSourceKeys<'a> {
    /// The value written under a connection key.
    pub fn connection(&self, key: ConnectionKey) -> Option<&'a S<String>> {
        match key {
            ConnectionKey::Account => self.account,
            ConnectionKey::Org => self.org,
            ConnectionKey::System => self.system,
        }
    }

    /// Where a push key was written, if it was.
    pub fn push_key_at(&self, key: PushKey) -> Option<Range<usize>> {
        match key {
            PushKey::WebhookSecret => self.webhook_secret.map(|s| s.span()),
            PushKey::IdocFolder => self.idoc_folder.map(|s| s.span()),
            PushKey::IdocUser => self.idoc_user.map(|s| s.span()),
            PushKey::IdocPassword => self.idoc_password.map(|s| s.span()),
        }
    }

    /// Where the keys only ERP sources take were written: a source of another type refuses them
    /// (`org`, `system`, `objects` and `coalesce` are shared with other types and not listed).
    pub fn erp_only(&self) -> [(&'static str, Option<Range<usize>>); 8] {
        [
            ("account", self.account.map(|s| s.span())),
            ("webhook_secret", self.webhook_secret.map(|s| s.span())),
            ("poll", self.poll.map(|s| s.span())),
            ("stale_after", self.stale_after.map(|s| s.span())),
            ("idoc_folder", self.idoc_folder.map(|s| s.span())),
            ("max_file_bytes", self.max_file_bytes.map(|s| s.span())),
            ("idoc_user", self.idoc_user.map(|s| s.span())),
            ("idoc_password", self.idoc_password.map(|s| s.span())),
        ]
    }
}

/// The label under an ERP-only key on a source of another type.
pub fn erp_only_label() -> String {
    let types: Vec<&str> = ErpSystem::ALL.iter().map(|s| s.as_str()).collect();
    connect::config::only_these_take_it(&types, "sources")
}

/// A key of `[sources.NAME]` that names an ERP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKey {
    Account,
    Org,
    System,
}

impl ConnectionKey {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKey::Account => "account",
            ConnectionKey::Org => "org",
            ConnectionKey::System => "system",
        }
    }
}

/// A key of `[sources.NAME]` that authenticates an ERP's pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKey {
    WebhookSecret,
    IdocFolder,
    IdocUser,
    IdocPassword,
}

impl PushKey {
    /// In the order their diagnostics are reported.
    pub const ALL: [PushKey; 4] =
        [PushKey::WebhookSecret, PushKey::IdocFolder, PushKey::IdocUser, PushKey::IdocPassword];

    pub fn as_str(self) -> &'static str {
        match self {
            PushKey::WebhookSecret => "webhook_secret",
            PushKey::IdocFolder => "idoc_folder",
            PushKey::IdocUser => "idoc_user",
            PushKey::IdocPassword => "idoc_password",
        }
    }
}

/// The connection an ERP source names: the key it writes and the table it names an entry of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceConnection {
    pub key: ConnectionKey,
    /// How a diagnostic calls an entry: `NetSuite account`.
    pub what: &'static str,
    /// The table: `netsuite.accounts`.
    pub path: &'static str,
}

/// How an ERP pushes changes in, and what a diagnostic says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Push {
    /// The keys that authenticate its pushes; the other push keys are refused. Any of them
    /// written counts as an intake.
    pub keys: &'static [PushKey],
    /// The label under the webhook-source keys (`secret`, `tolerance`, `entity_id`) it refuses.
    pub instead_of_webhook: &'static str,
    /// The label under the push keys of the other ERPs, which it refuses.
    pub instead_of_others: &'static str,
    /// What to add to a source that neither receives pushes nor polls.
    pub no_intake: &'static str,
}

/// One ERP source, for the checks its vendor adds to the shared ones.
#[derive(Debug, Clone, Copy)]
pub struct SourceCheck<'a> {
    /// The source's name.
    pub name: &'a str,
    /// The connection it names, when that connection is defined.
    pub connection: Option<&'a str>,
    pub keys: &'a ErpSourceKeys<'a>,
    pub tables: &'a RawTables<'a>,
}

/// What an ERP source of one vendor validates differently from the others. Each ERP's
/// `config.rs` implements it; [`ErpSystem::source_rules`] hands it out.
pub trait ErpSourceRules: Sync {
    /// The key a source names its connection with, and that connection's table.
    fn connection(&self) -> SourceConnection;

    /// The names defined in that table, as written.
    fn connection_names(&self, tables: &RawTables<'_>) -> Vec<String>;

    /// How this ERP's changes are pushed to the gateway.
    fn push(&self) -> Push;

    /// The vendor's own checks, after the shared ones; false if one failed.
    fn check(&self, _diag: &mut Diagnostics, _source: &SourceCheck<'_>) -> bool {
        true
    }
}

/// Phase 2 for the ERP keys of source `name` of `system`: every mistake is pushed to `diag`, and
/// the source is returned only if there was none. Relative paths are resolved against
/// `base_dir`, the config file's directory.
pub fn validate(
    diag: &mut Diagnostics,
    name: &S<String>,
    system: ErpSystem,
    keys: &ErpSourceKeys<'_>,
    tables: &RawTables<'_>,
    base_dir: &Path,
) -> Option<ErpSource> {
    let n = name.get_ref();
    let vendor = system.as_str();
    let owner = format!("a {vendor} source (`{n}`)");
    let rules = system.source_rules();
    let own = rules.connection();
    let push = rules.push();

    // The keys that name the other ERPs' connections, and that authenticate their pushes.
    let other_connections: Vec<(&str, Option<Range<usize>>)> = ErpSystem::ALL
        .into_iter()
        .filter(|s| *s != system)
        .map(|s| s.source_rules().connection().key)
        .map(|key| (key.as_str(), keys.connection(key).map(|s| s.span())))
        .collect();
    let mut ok = !diag.unused_keys(
        &other_connections,
        &owner,
        &format!("a {vendor} source names its [{}.NAME] with `{}`", own.path, own.key.as_str()),
    );
    let other_pushes: Vec<(&str, Option<Range<usize>>)> = PushKey::ALL
        .into_iter()
        .filter(|k| !push.keys.contains(k))
        .map(|k| (k.as_str(), keys.push_key_at(k)))
        .collect();
    ok &= !diag.unused_keys(&other_pushes, &owner, push.instead_of_others);

    let known = rules.connection_names(tables);
    let table = ConnectionTable { key: own.key.as_str(), what: own.what, path: own.path, known: &known };
    let connection = diag.connection_ref(&format!("source `{n}`"), &table, keys.connection(own.key), name.span());
    let objects = validate_objects(diag, n, system, keys.objects, name.span(), &mut ok);

    // Every push key is read whatever the vendor: one it refuses is reported above and also here
    // when it is malformed, and a secret written in it is still hidden when the file is shown.
    let webhook_secret = keys.webhook_secret.and_then(|s| diag.secret(s, &format!("sources.{n}.webhook_secret")));
    let idoc_password = keys.idoc_password.and_then(|s| diag.secret(s, &format!("sources.{n}.idoc_password")));
    let idoc_user = match keys.idoc_user {
        Some(s) if s.get_ref().trim().is_empty() => {
            diag.push(ConfigError::new(
                Code::EmptyValue,
                format!("sources.{n}.idoc_user is empty"),
                span(s),
                "the user the ECC port logs in with (HTTP Basic)",
            ));
            ok = false;
            None
        }
        Some(s) => Some(s.get_ref().trim().to_string()),
        None => None,
    };
    let idoc_folder = match keys.idoc_folder {
        Some(s) if s.get_ref().trim().is_empty() => {
            diag.push(ConfigError::new(
                Code::EmptyValue,
                format!("sources.{n}.idoc_folder is empty"),
                span(s),
                "the folder the ECC file port writes IDocs to, e.g. var/idoc-in",
            ));
            ok = false;
            None
        }
        Some(s) => Some(base_dir.join(s.get_ref().trim())),
        None => None,
    };
    let max_file_bytes = match keys.max_file_bytes {
        // Only a drop folder reads files: anywhere else the key would be silently ignored.
        Some(s) if !push.keys.contains(&PushKey::IdocFolder) => {
            ok &= !diag.unused_keys(
                &[("max_file_bytes", Some(s.span()))],
                &owner,
                "only a drop folder (`idoc_folder`) reads files",
            );
            DEFAULT_MAX_FILE_BYTES
        }
        Some(s) if keys.idoc_folder.is_none() => {
            ok &= !diag.unused_keys(
                &[("max_file_bytes", Some(s.span()))],
                &format!("{owner} without `idoc_folder`"),
                "it caps the files read from `idoc_folder`; add one or leave this out",
            );
            DEFAULT_MAX_FILE_BYTES
        }
        Some(s) => match diag.positive(s, &format!("sources.{n}.max_file_bytes")) {
            Some(_) => *s.get_ref(),
            None => {
                ok = false;
                DEFAULT_MAX_FILE_BYTES
            }
        },
        None => DEFAULT_MAX_FILE_BYTES,
    };
    ok &= rules.check(diag, &SourceCheck { name: n, connection: connection.as_deref(), keys, tables });

    let mut longer_than_zero = |diag: &mut Diagnostics, key: &str, value: Option<&S<String>>, label: &str| {
        let s = value?;
        match diag.duration(s, &format!("sources.{n}.{key}")) {
            Some(d) if d.is_zero() => {
                diag.push(ConfigError::new(
                    Code::OutOfRange,
                    format!("sources.{n}.{key} must be longer than 0s"),
                    span(s),
                    label.to_string(),
                ));
                ok = false;
                None
            }
            Some(d) => Some(d),
            None => {
                ok = false;
                None
            }
        }
    };
    let poll = longer_than_zero(diag, "poll", keys.poll, "leave `poll` out to not poll");
    let stale_after =
        longer_than_zero(diag, "stale_after", keys.stale_after, "leave `stale_after` out to never mark a status stale");
    let coalesce = match keys.coalesce {
        Some(s) => diag.duration(s, &format!("sources.{n}.coalesce")).unwrap_or(DEFAULT_COALESCE),
        None => DEFAULT_COALESCE,
    };
    // Whether any intake was written (a key with a mistake is reported on its own).
    let pushed = push.keys.iter().any(|k| keys.push_key_at(*k).is_some());
    if !pushed && keys.poll.is_none() {
        diag.push(ConfigError::new(
            Code::MissingKey,
            format!("{vendor} source `{n}` has no intake: nothing pushes changes and nothing polls"),
            Some(name.span()),
            push.no_intake,
        ));
        ok = false;
    }
    if keys.webhook_secret.is_some() && webhook_secret.is_none()
        || keys.idoc_password.is_some() && idoc_password.is_none()
    {
        ok = false; // reported by diag.secret
    }
    let source = ErpSource {
        system,
        connection: connection?,
        objects: objects?,
        webhook_secret,
        poll,
        stale_after,
        coalesce,
        idoc_folder,
        max_file_bytes,
        idoc_user,
        idoc_password,
    };
    ok.then_some(source)
}

/// `objects` of an ERP source: required, non-empty, each one its type watches, each once.
fn validate_objects(
    diag: &mut Diagnostics,
    n: &str,
    system: ErpSystem,
    objects: Option<&S<Vec<S<String>>>>,
    at: Range<usize>,
    ok: &mut bool,
) -> Option<Vec<String>> {
    let vendor = system.as_str();
    let allowed = system.source_objects();
    let Some(list) = objects else {
        diag.push(ConfigError::new(
            Code::MissingKey,
            format!("{vendor} source `{n}` has no `objects`"),
            Some(at),
            format!("needs the watched objects, from: {}", allowed.join(", ")),
        ));
        return None;
    };
    if list.get_ref().is_empty() {
        diag.push(ConfigError::new(
            Code::EmptyValue,
            format!("sources.{n}.objects is empty"),
            span(list),
            format!("watch at least one of: {}", allowed.join(", ")),
        ));
        return None;
    }
    let known: Vec<String> = allowed.iter().map(|s| (*s).to_string()).collect();
    let mut objects: Vec<String> = Vec::new();
    for o in list.get_ref() {
        let object = o.get_ref();
        if !allowed.contains(&object.as_str()) {
            let mut e = ConfigError::new(
                Code::UnknownChoice,
                format!("object `{object}` of source `{n}` is not one {vendor} sources watch"),
                span(o),
                format!("allowed: {}", allowed.join(", ")),
            );
            if let Some(h) = suggest(object, &known) {
                e = e.with_help(h);
            }
            diag.push(e);
            *ok = false;
        } else if objects.contains(object) {
            diag.push(ConfigError::new(
                Code::DuplicateName,
                format!("object `{object}` is listed twice in source `{n}`"),
                span(o),
                "listed again here",
            ));
            *ok = false;
        } else {
            objects.push(object.clone());
        }
    }
    Some(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source refuses the other ERPs' connection and push keys, so no two ERPs may name their
    /// connection with the same key, and every push key must be some ERP's.
    #[test]
    fn each_erp_has_its_own_connection_key_and_every_push_key_an_owner() {
        let keys: Vec<ConnectionKey> = ErpSystem::ALL.iter().map(|s| s.source_rules().connection().key).collect();
        for (i, key) in keys.iter().enumerate() {
            assert!(!keys[..i].contains(key), "`{}` names two ERPs' connections", key.as_str());
        }
        for key in PushKey::ALL {
            assert!(
                ErpSystem::ALL.iter().any(|s| s.source_rules().push().keys.contains(&key)),
                "no ERP takes `{}`",
                key.as_str()
            );
        }
    }

    #[test]
    fn a_source_type_names_its_erp() {
        for system in ErpSystem::ALL {
            assert_eq!(ErpSystem::from_name(system.as_str()), Some(system));
        }
        assert_eq!(ErpSystem::from_name("webhook"), None);
        assert_eq!(erp_only_label(), "only `netsuite`, `dynamics` and `sap` sources take it");
    }
}
