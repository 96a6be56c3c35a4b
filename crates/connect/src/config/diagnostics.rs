//! The error collector of one validation: every check pushes here and goes on, so one run
//! reports all of a file's mistakes (STYLE.md §3), not the first one.

use super::duration::parse_duration;
use super::error::{Code, ConfigError};
use super::secret::{RawSecretRef, SecretRef};
use super::spanned::{span, S};
use super::suggest::{known_list, suggest};
use std::ops::Range;
use std::time::Duration;

/// One kind of connection table a source or destination names an entry of
/// (`[dingtalk.apps.*]`, `[salesforce.orgs.*]`, `[netsuite.accounts.*]`, ...).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTable<'a> {
    /// The key naming it (`app`, `org`, `account`).
    pub key: &'static str,
    /// `DingTalk app`, `Salesforce org`.
    pub what: &'static str,
    /// `dingtalk.apps`.
    pub path: &'static str,
    /// The names defined in the file, as written: an entry with a mistake of its own is still
    /// a name, so a reference to it is not reported twice.
    pub known: &'a [String],
}

/// The diagnostics found so far, with the small checks every section shares.
#[derive(Debug, Default)]
pub struct Diagnostics {
    errors: Vec<ConfigError>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, e: ConfigError) {
        self.errors.push(e);
    }

    pub fn extend(&mut self, errors: impl IntoIterator<Item = ConfigError>) {
        self.errors.extend(errors);
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// How many diagnostics so far: a section compares before and after to know it failed.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors
    }

    /// A friendly duration (`30s`), or `DB0107` naming `what`.
    pub fn duration(&mut self, s: &S<String>, what: &str) -> Option<Duration> {
        match parse_duration(s.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.push(ConfigError::new(Code::BadDuration, format!("{what}: {e}"), span(s), "not a duration"));
                None
            }
        }
    }

    /// A count that must be at least 1.
    pub fn positive(&mut self, s: &S<u64>, what: &str) -> Option<usize> {
        match usize::try_from(*s.get_ref()) {
            Ok(n) if n > 0 => Some(n),
            _ => {
                self.push(ConfigError::new(
                    Code::OutOfRange,
                    format!("{what} must be a positive number, found {}", s.get_ref()),
                    span(s),
                    "must be at least 1",
                ));
                None
            }
        }
    }

    /// The secret reference `what`, or its diagnostic (a literal secret is refused here).
    pub fn secret(&mut self, s: &S<RawSecretRef>, what: &str) -> Option<SecretRef> {
        SecretRef::from_raw(s.get_ref(), s.span()).map_err(|e| self.push(e.to_config_error(what, s.span()))).ok()
    }

    /// `DB0101` for each key that is present but not used by `owner`; true if any was.
    pub fn unused_keys(&mut self, keys: &[(&str, Option<Range<usize>>)], owner: &str, label: &str) -> bool {
        let mut any = false;
        for (key, at) in keys {
            if let Some(at) = at {
                self.push(ConfigError::new(
                    Code::UnknownKey,
                    format!("key `{key}` is not used by {owner}"),
                    Some(at.clone()),
                    label.to_string(),
                ));
                any = true;
            }
        }
        any
    }

    /// The entry of `table` that `value` names, or `DB0125` for a name it does not define (with
    /// a "did you mean") or for no name at all (pointing at `at`, where the key is missing).
    pub fn connection_ref(
        &mut self,
        owner: &str,
        table: &ConnectionTable<'_>,
        value: Option<&S<String>>,
        at: Range<usize>,
    ) -> Option<String> {
        match value {
            Some(a) if table.known.contains(a.get_ref()) => Some(a.get_ref().clone()),
            Some(a) => {
                let mut e = ConfigError::new(
                    Code::BadConnection,
                    format!("{owner} uses unknown {} `{}`", table.what, a.get_ref()),
                    span(a),
                    format!("not defined under [{}]; defined: {}", table.path, known_list(table.known)),
                );
                if let Some(h) = suggest(a.get_ref(), table.known) {
                    e = e.with_help(h);
                }
                self.push(e);
                None
            }
            None => {
                self.push(ConfigError::new(
                    Code::BadConnection,
                    format!("{owner} has no `{}`", table.key),
                    Some(at),
                    format!("needs {} = \"<name of a [{}.NAME] table>\"", table.key, table.path),
                ));
                None
            }
        }
    }
}
