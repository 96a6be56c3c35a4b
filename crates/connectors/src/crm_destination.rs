//! `[destinations.NAME]` with a CRM `type` (`salesforce`, `zoho`): the pure validation every CRM
//! destination shares (the org it writes to, how long a write waits for a batch) and the
//! validated [`CrmDestination`]. What differs per vendor (its org table, whether writes may be
//! `interactive`) is its [`CrmRules`](crate::crm_source::CrmRules), as for its sources.

use crate::crm_source::org_connection;
use crate::registry::{CrmSystem, RawTables};
use connect::config::{span, Code, ConfigError, Diagnostics, S};
use std::ops::Range;
use std::time::Duration;

/// How long a write waits for others to share its batch when the destination does not say.
const DEFAULT_LINGER: Duration = Duration::from_secs(1);
/// A write waiting longer than this for company feels lost to the person who caused it.
const MAX_LINGER: Duration = Duration::from_secs(60);

/// A destination that writes records to one CRM org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmDestination {
    pub org: String,
    /// Salesforce: writes a person waits for, allowed past the org's quota reserve.
    pub interactive: bool,
    /// How long a batch of writes may wait to fill.
    pub linger: Duration,
}

/// The keys of `[destinations.NAME]` a CRM destination reads, as written (the destination table
/// stays one flat table in the engine, like the source table).
#[derive(Debug, Clone, Copy, Default)]
pub struct CrmDestinationKeys<'a> {
    pub org: Option<&'a S<String>>,
    pub priority: Option<&'a S<String>>,
    pub linger: Option<&'a S<String>>,
}

impl CrmDestinationKeys<'_> {
    /// Where the keys only CRM destinations take were written: a destination of another type
    /// refuses them.
    pub fn crm_only(&self) -> [(&'static str, Option<Range<usize>>); 3] {
        [
            ("org", self.org.map(|s| s.span())),
            ("priority", self.priority.map(|s| s.span())),
            ("linger", self.linger.map(|s| s.span())),
        ]
    }
}

/// One CRM destination, for the `priority` rule of its vendor.
#[derive(Debug, Clone, Copy)]
pub struct PriorityCheck<'a> {
    /// The destination's name.
    pub name: &'a str,
    /// `a zoho destination (`NAME`)`, the owner in an "is not used by" diagnostic.
    pub owner: &'a str,
    pub keys: &'a CrmDestinationKeys<'a>,
}

/// Phase 2 for the CRM keys of destination `name` of `system`: every mistake is pushed to
/// `diag`. The destination is returned when its org is known, even after a mistake in `priority`
/// or `linger` (those read as their defaults).
pub fn validate(
    diag: &mut Diagnostics,
    name: &S<String>,
    system: CrmSystem,
    keys: &CrmDestinationKeys<'_>,
    tables: &RawTables<'_>,
) -> Option<CrmDestination> {
    let n = name.get_ref();
    let owner = format!("a {} destination (`{n}`)", system.as_str());
    let rules = system.rules();
    let interactive = rules.interactive(diag, &PriorityCheck { name: n, owner: &owner, keys });
    let linger = match keys.linger {
        Some(s) => match diag.duration(s, &format!("destinations.{n}.linger")) {
            Some(d) if d > MAX_LINGER => {
                diag.push(ConfigError::new(
                    Code::OutOfRange,
                    format!("destinations.{n}.linger must be at most 1m, found {d:?}"),
                    span(s),
                    "a write waits this long for others to share its batch",
                ));
                DEFAULT_LINGER
            }
            Some(d) => d,
            None => DEFAULT_LINGER,
        },
        None => DEFAULT_LINGER,
    };
    let known = rules.org_names(tables);
    let org =
        diag.connection_ref(&format!("destination `{n}`"), &org_connection(system, &known), keys.org, name.span())?;
    Some(CrmDestination { org, interactive, linger })
}
