//! `[sources.NAME]` with a CRM `type` (`salesforce`, `zoho`): the pure validation every CRM
//! source shares (the org it names, the objects it watches as API names, coalescing, and that it
//! takes no other CRM's intake keys) and the validated [`CrmSource`].
//!
//! What differs per vendor (its org table, how its changes come in, what it needs of its org) is
//! the vendor's `config.rs`, a [`CrmRules`] reached through [`CrmSystem::rules`], so this module
//! has no vendor match arms. The same rules serve its destinations ([`crate::crm_destination`]).

use crate::crm_destination::PriorityCheck;
use crate::registry::{Connections, CrmSystem, RawTables};
use connect::config::{span, Code, ConfigError, ConnectionTable, Diagnostics, RawSecretRef, Secret, SecretRef, S};
use std::ops::Range;
use std::time::Duration;

/// Changes to one record within this window become one read and one event.
const DEFAULT_COALESCE: Duration = Duration::from_secs(5);

/// A source watching records of one CRM org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmSource {
    /// A `[salesforce.orgs.*]` / `[zoho.orgs.*]` name.
    pub org: String,
    /// Object API names (Salesforce) or module API names (Zoho), e.g. `Opportunity`, `Deals`.
    pub objects: Vec<String>,
    pub intake: CrmIntake,
    /// Changes to one record within this window become one read and one event; zero = off.
    pub coalesce: Duration,
}

/// How a CRM source learns that records changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmIntake {
    /// Salesforce Outbound Messages posted to `/intake/salesforce/{source}/{token}`: Outbound
    /// Messages carry no signature, so the URL's secret `token` (and the org id in the message)
    /// is what authenticates them.
    OutboundMessage { token: SecretRef },
    /// Polling the CRM's change times (Salesforce `SystemModstamp`, Zoho `Modified_Time`).
    Poll { interval: Duration },
    /// Zoho notification channels (`actions/watch`).
    Notifications { channel_token: SecretRef, notify_url: Option<String> },
}

impl CrmIntake {
    /// The secret that opens the source's push door, and what a message calls it.
    pub fn secret(&self) -> Option<(&SecretRef, &'static str)> {
        match self {
            CrmIntake::OutboundMessage { token } => Some((token, "outbound token")),
            CrmIntake::Notifications { channel_token, .. } => Some((channel_token, "channel token")),
            CrmIntake::Poll { .. } => None,
        }
    }
}

/// The keys of `[sources.NAME]` a CRM source reads, as written. The source table stays one flat
/// table in the engine (serde's tagged enums would lose the spans); this is the part of it that
/// is ours to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrmSourceKeys<'a> {
    pub org: Option<&'a S<String>>,
    pub objects: Option<&'a S<Vec<S<String>>>>,
    pub coalesce: Option<&'a S<String>>,
    pub intake: Option<&'a S<String>>,
    pub poll_interval: Option<&'a S<String>>,
    pub channel_token: Option<&'a S<RawSecretRef>>,
    pub notify_url: Option<&'a S<String>>,
    pub outbound_token: Option<&'a S<RawSecretRef>>,
}

impl CrmSourceKeys<'_> {
    /// Where an intake key was written, if it was.
    pub fn intake_key_at(&self, key: IntakeKey) -> Option<Range<usize>> {
        match key {
            IntakeKey::PollInterval => self.poll_interval.map(|s| s.span()),
            IntakeKey::ChannelToken => self.channel_token.map(|s| s.span()),
            IntakeKey::NotifyUrl => self.notify_url.map(|s| s.span()),
            IntakeKey::OutboundToken => self.outbound_token.map(|s| s.span()),
        }
    }

    /// Where the keys only CRM sources take were written: a source of another type refuses them
    /// (`org`, `objects` and `coalesce` are shared with ERP sources and not listed).
    pub fn crm_only(&self) -> [(&'static str, Option<Range<usize>>); 5] {
        [
            ("intake", self.intake.map(|s| s.span())),
            ("poll_interval", self.poll_interval.map(|s| s.span())),
            ("channel_token", self.channel_token.map(|s| s.span())),
            ("notify_url", self.notify_url.map(|s| s.span())),
            ("outbound_token", self.outbound_token.map(|s| s.span())),
        ]
    }
}

/// A key of `[sources.NAME]` that configures how one CRM's changes come in; a source of another
/// CRM refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntakeKey {
    PollInterval,
    ChannelToken,
    NotifyUrl,
    OutboundToken,
}

impl IntakeKey {
    pub const ALL: [IntakeKey; 4] =
        [IntakeKey::PollInterval, IntakeKey::ChannelToken, IntakeKey::NotifyUrl, IntakeKey::OutboundToken];

    pub fn as_str(self) -> &'static str {
        match self {
            IntakeKey::PollInterval => "poll_interval",
            IntakeKey::ChannelToken => "channel_token",
            IntakeKey::NotifyUrl => "notify_url",
            IntakeKey::OutboundToken => "outbound_token",
        }
    }
}

/// The label under a CRM-only key on a source (`what` = `sources`) or destination
/// (`what` = `destinations`) of another type: `only `salesforce` and `zoho` sources take it`.
pub fn crm_only_label(what: &str) -> String {
    let types: Vec<&str> = CrmSystem::ALL.iter().map(|s| s.as_str()).collect();
    connect::config::only_these_take_it(&types, what)
}

/// The CRM orgs once validated (an org with a mistake of its own is not among them), with the
/// tables as written for where to point.
#[derive(Debug, Clone, Copy)]
pub struct CrmOrgs<'a> {
    pub tables: RawTables<'a>,
    pub connections: &'a Connections,
}

/// How a diagnostic names a CRM's org table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgTable {
    /// How a diagnostic calls an entry: `Salesforce org`.
    pub what: &'static str,
    /// The table: `salesforce.orgs`.
    pub path: &'static str,
}

/// One CRM source, for the intake rules of its vendor.
#[derive(Debug, Clone, Copy)]
pub struct IntakeCheck<'a> {
    /// The source's name, and where it was written.
    pub name: &'a S<String>,
    /// `a salesforce source (`NAME`)`, the owner in an "is not used by" diagnostic.
    pub owner: &'a str,
    pub keys: &'a CrmSourceKeys<'a>,
}

/// Polling a source when it does not say how often.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Every poll costs API requests from the org's daily allocation.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(10);

impl IntakeCheck<'_> {
    /// `intake = "poll"`: every `poll_interval` (default 60s, at least 10s). `push_keys` are the
    /// keys of the CRM's push intake, which a polling source does not use.
    pub fn poll(
        &self,
        diag: &mut Diagnostics,
        system: &str,
        push_keys: &[(&str, Option<Range<usize>>)],
        ok: &mut bool,
    ) -> CrmIntake {
        let n = self.name.get_ref();
        *ok &= !diag.unused_keys(push_keys, &format!("a polling {system} source (`{n}`)"), "only push sources take it");
        let interval = match self.keys.poll_interval {
            Some(s) => match diag.duration(s, &format!("sources.{n}.poll_interval")) {
                Some(d) if d < MIN_POLL_INTERVAL => {
                    diag.push(ConfigError::new(
                        Code::OutOfRange,
                        format!("sources.{n}.poll_interval must be at least 10s, found {d:?}"),
                        span(s),
                        "every poll costs API requests from the org's daily allocation",
                    ));
                    *ok = false;
                    d
                }
                Some(d) => d,
                None => DEFAULT_POLL_INTERVAL,
            },
            None => DEFAULT_POLL_INTERVAL,
        };
        CrmIntake::Poll { interval }
    }
}

/// What the sources and destinations of one CRM validate differently from the other CRM's. Each
/// CRM's `config.rs` implements it; [`CrmSystem::rules`] hands it out.
pub trait CrmRules: Sync {
    /// The table of the orgs its sources and destinations name with `org`.
    fn org_table(&self) -> OrgTable;

    /// The names defined in that table, as written.
    fn org_names(&self, tables: &RawTables<'_>) -> Vec<String>;

    /// `objects` as a source of this CRM would write it, for the diagnostics about it.
    fn objects_example(&self) -> &'static str;

    /// The intake keys only its sources take, each with the label under it on a source of
    /// another CRM, in the order those are reported.
    fn intake_keys(&self) -> &'static [(IntakeKey, &'static str)];

    /// How a source of this CRM learns of changes, from `intake` and its intake keys. `None` when
    /// it cannot be known; `ok` is cleared by a mistake that leaves it known (both reported).
    fn intake(&self, diag: &mut Diagnostics, source: &IntakeCheck<'_>, ok: &mut bool) -> Option<CrmIntake>;

    /// What a valid source needs of its org once the orgs are validated; reported to `diag`.
    fn check_org(&self, _diag: &mut Diagnostics, _name: &str, _source: &CrmSource, _orgs: &CrmOrgs<'_>) {}

    /// Phase 3: the read secret of source `name`'s push door (at `at`), refused if this CRM
    /// cannot use it.
    fn check_intake_secret(&self, _name: &str, _secret: &Secret, _at: Range<usize>) -> Option<ConfigError> {
        None
    }

    /// Whether a destination's writes are `interactive` (allowed past the org's quota
    /// reserve), from its `priority`; a mistake is reported and reads as background.
    fn interactive(&self, diag: &mut Diagnostics, destination: &PriorityCheck<'_>) -> bool;
}

/// The org table of `system` as a connection table a source or destination names with `org`.
pub(crate) fn org_connection<'a>(system: CrmSystem, known: &'a [String]) -> ConnectionTable<'a> {
    let table = system.rules().org_table();
    ConnectionTable { key: "org", what: table.what, path: table.path, known }
}

/// Phase 2 for the CRM keys of source `name` of `system`: every mistake is pushed to `diag`, and
/// the source is returned only if there was none.
pub fn validate(
    diag: &mut Diagnostics,
    name: &S<String>,
    system: CrmSystem,
    keys: &CrmSourceKeys<'_>,
    tables: &RawTables<'_>,
) -> Option<CrmSource> {
    let n = name.get_ref();
    let vendor = system.as_str();
    let owner = format!("a {vendor} source (`{n}`)");
    let rules = system.rules();
    let mut ok = true;

    let known = rules.org_names(tables);
    let org = diag.connection_ref(&format!("source `{n}`"), &org_connection(system, &known), keys.org, name.span());
    let objects = validate_objects(diag, n, system, keys.objects, name.span(), &mut ok);
    let coalesce = match keys.coalesce {
        Some(s) => diag.duration(s, &format!("sources.{n}.coalesce")).unwrap_or(DEFAULT_COALESCE),
        None => DEFAULT_COALESCE,
    };
    // The other CRMs' intake keys, with the label their owner gives them.
    for other in CrmSystem::ALL.into_iter().filter(|s| *s != system) {
        for (key, label) in other.rules().intake_keys() {
            ok &= !diag.unused_keys(&[(key.as_str(), keys.intake_key_at(*key))], &owner, label);
        }
    }
    let intake = rules.intake(diag, &IntakeCheck { name, owner: &owner, keys }, &mut ok);
    let source = CrmSource { org: org?, objects: objects?, intake: intake?, coalesce };
    ok.then_some(source)
}

/// After the orgs and the sources are validated: what valid source `name` of `system` needs of
/// its org (Salesforce: the org id an Outbound Message is checked against).
pub fn check_org(diag: &mut Diagnostics, name: &str, system: CrmSystem, source: &CrmSource, orgs: &CrmOrgs<'_>) {
    system.rules().check_org(diag, name, source, orgs);
}

/// `objects` of a CRM source: required, non-empty, API names, each once.
fn validate_objects(
    diag: &mut Diagnostics,
    n: &str,
    system: CrmSystem,
    objects: Option<&S<Vec<S<String>>>>,
    at: Range<usize>,
    ok: &mut bool,
) -> Option<Vec<String>> {
    let vendor = system.as_str();
    let example = system.rules().objects_example();
    let Some(list) = objects else {
        diag.push(ConfigError::new(
            Code::MissingKey,
            format!("{vendor} source `{n}` has no `objects`"),
            Some(at),
            format!("needs the API names of the watched objects, e.g. {example}"),
        ));
        return None;
    };
    if list.get_ref().is_empty() {
        diag.push(ConfigError::new(
            Code::EmptyValue,
            format!("sources.{n}.objects is empty"),
            span(list),
            format!("watch at least one, e.g. {example}"),
        ));
        return None;
    }
    let mut objects: Vec<String> = Vec::new();
    for o in list.get_ref() {
        if !is_api_name(o.get_ref()) {
            diag.push(api_name_error(&format!("object `{}` of source `{n}`", o.get_ref()), o.span()));
            *ok = false;
        } else if objects.contains(o.get_ref()) {
            diag.push(ConfigError::new(
                Code::DuplicateName,
                format!("object `{}` is listed twice in source `{n}`", o.get_ref()),
                span(o),
                "listed again here",
            ));
            *ok = false;
        } else {
            objects.push(o.get_ref().clone());
        }
    }
    Some(objects)
}

/// A Salesforce / Zoho API name: a letter, then letters, digits and underscores
/// (`Opportunity`, `Credit_Status__c`, `Deals`). The objects and fields of the record messages
/// CRM destinations write are API names too.
pub fn is_api_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The diagnostic for `what` (`object `x-y` of source `crm``), which is not an API name.
pub fn api_name_error(what: &str, at: Range<usize>) -> ConfigError {
    ConfigError::new(
        Code::BadName,
        format!("{what} is not an API name"),
        Some(at),
        "an API name is a letter followed by letters, digits and underscores, e.g. Opportunity or Credit_Status__c",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source refuses the other CRMs' intake keys, so every intake key must be exactly one
    /// CRM's, except `poll_interval`, which every CRM's polling sources take.
    #[test]
    fn every_intake_key_has_one_owner() {
        for key in IntakeKey::ALL {
            let owners = CrmSystem::ALL.iter().filter(|s| s.rules().intake_keys().iter().any(|(k, _)| *k == key));
            let expected = if key == IntakeKey::PollInterval { 0 } else { 1 };
            assert_eq!(owners.count(), expected, "`{}`", key.as_str());
        }
    }

    #[test]
    fn a_source_type_names_its_crm() {
        for system in CrmSystem::ALL {
            assert_eq!(CrmSystem::from_name(system.as_str()), Some(system));
            assert_eq!(CrmSystem::from_system(system.system()), Some(system));
        }
        assert_eq!(CrmSystem::from_name("netsuite"), None);
        assert_eq!(crm_only_label("sources"), "only `salesforce` and `zoho` sources take it");
    }

    #[test]
    fn api_names_are_a_letter_then_letters_digits_and_underscores() {
        for good in ["Opportunity", "Credit_Status__c", "Deals", "A1"] {
            assert!(is_api_name(good), "{good}");
        }
        for bad in ["", "1Deal", "_x", "Sales Orders", "x-y", "Ünicode"] {
            assert!(!is_api_name(bad), "{bad}");
        }
    }
}
