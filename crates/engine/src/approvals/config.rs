//! The `[roles.*]`, `[identity.*]` and `[approvals]` sections: their shapes as written (every leaf
//! keeps its span) and their validation into an [`ApprovalsConfig`]. Every mistake is a coded
//! config error with its place in the file, so `check` and `run` refuse the file the same way.

use super::{
    supported_actions, Action, ApprovalsConfig, Band, BusinessCalendar, Delivery, IdentityConfig, MatchRule,
    PolicyConfig, Require, RoleConfig, SodRule, StepConfig,
};
use crate::config::{
    line_col, parse_duration, Code, ConfigError, DestinationConfig, DestinationKind, ErpSystem, SourceConfig,
    SourceKind,
};
use model::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::str::FromStr;
use toml::Spanned;

type S<T> = Spanned<T>;

/// `[roles.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRole {
    #[serde(default)]
    pub users: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub departments: Option<S<Vec<S<i64>>>>,
    #[serde(default)]
    pub requester_manager: Option<S<i64>>,
}

/// `[identity.SOURCE]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    #[serde(default, rename = "match")]
    pub rules: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub users: Option<S<BTreeMap<String, S<String>>>>,
}

/// `[approvals]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApprovals {
    #[serde(default)]
    pub fx: Option<RawFx>,
    #[serde(default)]
    pub calendar: Option<RawCalendar>,
    #[serde(default)]
    pub policies: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFx {
    pub base: S<String>,
    #[serde(default)]
    pub rates: BTreeMap<String, S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCalendar {
    pub time_zone: Option<S<String>>,
    pub open: Option<S<String>>,
    pub close: Option<S<String>>,
    pub workdays: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub extra_holidays: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub name: S<String>,
    pub sources: S<Vec<S<String>>>,
    pub entity: S<String>,
    pub currency: S<String>,
    pub deliver: RawDeliver,
    pub remind_after: Option<S<String>>,
    pub escalate_after: Option<S<String>>,
    pub escalate_to: Option<S<String>>,
    /// Let clicks arriving over HTTP card callbacks decide (they carry no signature); approval
    /// cards call back over Stream otherwise.
    #[serde(default)]
    pub allow_http_card_callback: bool,
    #[serde(default)]
    pub actions: BTreeMap<String, S<Vec<S<String>>>>,
    #[serde(default)]
    pub segregate: Vec<S<Vec<S<String>>>>,
    #[serde(default)]
    pub bands: Vec<RawBand>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeliver {
    pub card: Option<S<String>>,
    pub group: Option<S<String>>,
    pub oa: Option<S<String>>,
    pub process_code: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBand {
    pub min: S<String>,
    pub below: Option<S<String>>,
    pub steps: S<Vec<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub roles: S<Vec<S<String>>>,
    pub require: Option<S<String>>,
}

/// The three sections as written.
pub struct RawSections<'a> {
    pub roles: &'a BTreeMap<S<String>, RawRole>,
    pub identity: &'a BTreeMap<S<String>, RawIdentity>,
    pub approvals: Option<&'a RawApprovals>,
}

fn at<T>(s: &S<T>) -> Option<Range<usize>> {
    Some(s.span())
}

struct Check<'a> {
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Check<'_> {
    fn line<T>(&self, s: &S<T>) -> usize {
        line_col(self.text, s.span().start).0
    }

    fn error<T>(&mut self, code: Code, message: String, place: &S<T>, label: &str) {
        self.errors.push(ConfigError::new(code, message, at(place), label));
    }

    fn decimal(&mut self, s: &S<String>, what: &str) -> Option<Decimal> {
        match Decimal::from_str(s.get_ref().trim()) {
            Ok(d) => Some(d),
            Err(_) => {
                self.error(
                    Code::InvalidValue,
                    format!("{what} `{}` is not a decimal number", s.get_ref()),
                    s,
                    "write it as a string, e.g. \"50000\"",
                );
                None
            }
        }
    }

    fn duration(&mut self, s: &S<String>, what: &str) -> Option<std::time::Duration> {
        match parse_duration(s.get_ref()) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(Code::BadDuration, format!("{what}: {msg}"), s, "not a duration");
                None
            }
        }
    }
}

fn is_currency(code: &str) -> bool {
    code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase())
}

fn erp_kind(source: &SourceConfig) -> Option<ErpSystem> {
    match &source.kind {
        SourceKind::Erp(erp) => Some(erp.system),
        _ => None,
    }
}

/// Validates the sections against the sources and destinations already validated.
pub fn validate(
    raw: &RawSections<'_>,
    text: &str,
    sources: &BTreeMap<String, SourceConfig>,
    destinations: &BTreeMap<String, DestinationConfig>,
) -> (ApprovalsConfig, Vec<ConfigError>) {
    let mut cx = Check { text, errors: Vec::new() };
    let mut config = ApprovalsConfig { fx_base: "HKD".into(), ..Default::default() };

    // [roles.*]
    for (name, role) in raw.roles {
        let users: Vec<String> =
            role.users.iter().flat_map(|u| u.get_ref().iter()).map(|u| u.get_ref().clone()).collect();
        let departments: Vec<i64> =
            role.departments.iter().flat_map(|d| d.get_ref().iter()).map(|d| *d.get_ref()).collect();
        let manager = match &role.requester_manager {
            Some(n) if (1..=10).contains(n.get_ref()) => u8::try_from(*n.get_ref()).ok(),
            Some(n) => {
                cx.error(
                    Code::OutOfRange,
                    format!("roles.{}.requester_manager must be 1 to 10 levels, found {}", name.get_ref(), n.get_ref()),
                    n,
                    "1 = the requester's direct manager",
                );
                None
            }
            None => None,
        };
        if users.is_empty() && departments.is_empty() && manager.is_none() && role.requester_manager.is_none() {
            cx.error(
                Code::Approvals,
                format!(
                    "role `{}` has no members: give it `users`, `departments` or `requester_manager`",
                    name.get_ref()
                ),
                name,
                "no members",
            );
        }
        config.roles.insert(
            name.get_ref().clone(),
            RoleConfig {
                name: name.get_ref().clone(),
                users,
                departments,
                requester_manager: manager,
                line: cx.line(name),
            },
        );
    }

    // [identity.*]
    for (source, identity) in raw.identity {
        let kind = sources.get(source.get_ref()).and_then(erp_kind);
        let Some(kind) = kind else {
            cx.error(
                Code::UnknownSource,
                format!("[identity.{0}]: `{0}` is not an ERP source ({1})", source.get_ref(), ErpSystem::names()),
                source,
                "not an ERP source",
            );
            continue;
        };
        let mut rules = Vec::new();
        if let Some(list) = &identity.rules {
            if !kind.keeps_user_list() && !list.get_ref().is_empty() {
                let erp = kind.display_name();
                cx.error(
                    Code::Approvals,
                    format!(
                        "[identity.{}]: {erp} has no user list dingbridge reads; map {erp} users in `users = {{…}}`",
                        source.get_ref()
                    ),
                    list,
                    &format!("not for {erp}"),
                );
            }
            for rule in list.get_ref() {
                match rule.get_ref().as_str() {
                    "job_number" => rules.push(MatchRule::JobNumber),
                    "email" => rules.push(MatchRule::Email),
                    "mobile" => rules.push(MatchRule::Mobile),
                    other => cx.error(
                        Code::UnknownChoice,
                        format!("[identity.{}]: unknown match rule `{other}`", source.get_ref()),
                        rule,
                        "expected job_number, email or mobile",
                    ),
                }
            }
        }
        let table = identity
            .users
            .iter()
            .flat_map(|t| t.get_ref().iter())
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect();
        config.identity.insert(
            source.get_ref().clone(),
            IdentityConfig { source: source.get_ref().clone(), rules, table, line: cx.line(source) },
        );
    }

    let Some(approvals) = raw.approvals else { return (config, cx.errors) };

    // [approvals.fx]
    if let Some(fx) = &approvals.fx {
        if is_currency(fx.base.get_ref()) {
            config.fx_base = fx.base.get_ref().clone();
        } else {
            cx.error(
                Code::BadLocale,
                format!("approvals.fx.base `{}` is not an ISO 4217 code", fx.base.get_ref()),
                &fx.base,
                "e.g. HKD",
            );
        }
        for (currency, rate) in &fx.rates {
            if !is_currency(currency) {
                cx.error(
                    Code::BadLocale,
                    format!("approvals.fx.rates: `{currency}` is not an ISO 4217 code"),
                    rate,
                    "e.g. USD",
                );
                continue;
            }
            match cx.decimal(rate, &format!("approvals.fx.rates.{currency}")) {
                Some(r) if r > Decimal::ZERO => {
                    config.fx.insert(currency.clone(), r);
                }
                Some(_) => cx.error(
                    Code::OutOfRange,
                    format!("approvals.fx.rates.{currency} must be positive"),
                    rate,
                    "units of the base per one unit",
                ),
                None => {}
            }
        }
    }

    // [approvals.calendar]
    if let Some(calendar) = &approvals.calendar {
        config.calendar = validate_calendar(&mut cx, calendar);
    }

    // [[approvals.policies]]
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut governed: BTreeMap<(String, String), String> = BTreeMap::new();
    for policy in &approvals.policies {
        let p = policy;
        let name = p.name.get_ref().clone();
        if let Some(line) = names.get(&name) {
            cx.error(
                Code::DuplicateName,
                format!("duplicate approval policy name `{name}` (first at line {line})"),
                &p.name,
                "defined again here",
            );
        }
        names.insert(name.clone(), cx.line(&p.name));
        if let Some(validated) = validate_policy(&mut cx, policy, &config, sources, destinations, &mut governed) {
            config.policies.push(validated);
        }
    }
    (config, cx.errors)
}

fn validate_calendar(cx: &mut Check<'_>, raw: &RawCalendar) -> BusinessCalendar {
    let mut calendar = BusinessCalendar::default();
    if let Some(zone) = &raw.time_zone {
        match jiff::tz::TimeZone::get(zone.get_ref()) {
            Ok(z) => calendar.zone = z,
            Err(_) => cx.error(
                Code::BadLocale,
                format!("approvals.calendar.time_zone `{}` is not a known zone", zone.get_ref()),
                zone,
                "e.g. Asia/Hong_Kong",
            ),
        }
    }
    let time = |s: &Option<S<String>>, what: &str, cx: &mut Check<'_>| -> Option<jiff::civil::Time> {
        let s = s.as_ref()?;
        match s.get_ref().parse::<jiff::civil::Time>() {
            Ok(t) => Some(t),
            Err(_) => {
                cx.error(
                    Code::BadLocale,
                    format!("approvals.calendar.{what} `{}` is not a time of day", s.get_ref()),
                    s,
                    "e.g. \"09:00\"",
                );
                None
            }
        }
    };
    if let Some(open) = time(&raw.open, "open", cx) {
        calendar.open = open;
    }
    if let Some(close) = time(&raw.close, "close", cx) {
        calendar.close = close;
    }
    if calendar.close <= calendar.open {
        if let Some(close) = &raw.close {
            cx.error(
                Code::OutOfRange,
                "approvals.calendar.close must be later than open".into(),
                close,
                "closes before it opens",
            );
        }
    }
    if let Some(days) = &raw.workdays {
        let names = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let mut workdays = [false; 7];
        for day in days.get_ref() {
            match names.iter().position(|n| *n == day.get_ref().to_ascii_lowercase()) {
                Some(i) => workdays[i] = true,
                None => cx.error(
                    Code::BadLocale,
                    format!("approvals.calendar.workdays: `{}` is not a day", day.get_ref()),
                    day,
                    "mon … sun",
                ),
            }
        }
        if !workdays.contains(&true) {
            cx.error(
                Code::EmptyValue,
                "approvals.calendar.workdays names no day".into(),
                days,
                "at least one working day",
            );
        } else {
            calendar.workdays = workdays;
        }
    }
    for day in &raw.extra_holidays {
        match day.get_ref().parse::<jiff::civil::Date>() {
            Ok(d) => {
                calendar.holidays.insert(d);
            }
            Err(_) => cx.error(
                Code::BadLocale,
                format!("approvals.calendar.extra_holidays: `{}` is not a date", day.get_ref()),
                day,
                "e.g. \"2026-12-24\"",
            ),
        }
    }
    calendar
}

fn validate_policy(
    cx: &mut Check<'_>,
    policy: &RawPolicy,
    config: &ApprovalsConfig,
    sources: &BTreeMap<String, SourceConfig>,
    destinations: &BTreeMap<String, DestinationConfig>,
    governed: &mut BTreeMap<(String, String), String>,
) -> Option<PolicyConfig> {
    let p = policy;
    let name = p.name.get_ref().clone();
    let before = cx.errors.len();
    let role_known = |cx: &mut Check<'_>, role: &S<String>, where_: &str| {
        if !config.roles.contains_key(role.get_ref()) {
            let known = config.roles.keys().cloned().collect::<Vec<_>>().join(", ");
            cx.error(
                Code::Approvals,
                format!(
                    "policy `{name}`: {where_} names role `{}`, which is not defined (roles: {known})",
                    role.get_ref()
                ),
                role,
                "unknown role",
            );
        }
    };

    let entity = p.entity.get_ref().as_str();
    if !matches!(entity, "purchase_request" | "purchase_order") {
        cx.error(
            Code::UnknownChoice,
            format!("policy `{name}`: entity `{entity}` cannot be approved"),
            &p.entity,
            "purchase_request or purchase_order",
        );
    }
    let mut kinds = Vec::new();
    for source in p.sources.get_ref() {
        match sources.get(source.get_ref()).map(erp_kind) {
            None => cx.error(
                Code::UnknownSource,
                format!("policy `{name}`: source `{}` is not defined", source.get_ref()),
                source,
                "unknown source",
            ),
            Some(None) => cx.error(
                Code::UnknownSource,
                format!("policy `{name}`: source `{}` is not an ERP source ({})", source.get_ref(), ErpSystem::names()),
                source,
                "not an ERP source",
            ),
            Some(Some(kind)) => {
                kinds.push((source.get_ref().clone(), kind));
                let slot = (source.get_ref().clone(), entity.to_owned());
                if let Some(other) = governed.get(&slot) {
                    cx.error(
                        Code::Approvals,
                        format!(
                            "policy `{name}`: {} records of `{}` are already governed by policy `{other}`",
                            entity,
                            source.get_ref()
                        ),
                        source,
                        "governed twice",
                    );
                } else {
                    governed.insert(slot, name.clone());
                }
            }
        }
    }
    if p.sources.get_ref().is_empty() {
        cx.error(
            Code::EmptyValue,
            format!("policy `{name}` names no sources"),
            &p.sources,
            "which ERP sources it governs",
        );
    }
    let currency = p.currency.get_ref().clone();
    if !is_currency(&currency) {
        cx.error(
            Code::BadLocale,
            format!("policy `{name}`: currency `{currency}` is not an ISO 4217 code"),
            &p.currency,
            "e.g. HKD",
        );
    } else if currency != config.fx_base && !config.fx.contains_key(&currency) {
        cx.error(
            Code::Approvals,
            format!(
                "policy `{name}`: currency {currency} is neither approvals.fx.base ({}) nor in approvals.fx.rates",
                config.fx_base
            ),
            &p.currency,
            "no exchange rate",
        );
    }

    // deliver
    let d = &p.deliver;
    let delivery = match (&d.card, &d.oa) {
        (Some(dest), None) => {
            check_app_destination(cx, &name, dest, destinations);
            Some(Delivery::Card {
                destination: dest.get_ref().clone(),
                group: d.group.as_ref().map(|g| g.get_ref().clone()),
            })
        }
        (None, Some(dest)) => {
            cx.error(
                Code::Approvals,
                format!(
                    "policy `{name}`: OA approval delivery is not supported yet; use `deliver = {{ card = \"…\" }}`"
                ),
                dest,
                "not supported yet",
            );
            None
        }
        _ => {
            cx.error(
                Code::KeyConflict,
                format!("policy `{name}`: deliver needs exactly one of `card` or `oa`"),
                &p.name,
                "e.g. { card = \"dingtalk-app\", group = \"cid…\" }",
            );
            None
        }
    };

    // timers
    let remind_after = p.remind_after.as_ref().and_then(|s| cx.duration(s, &format!("policy `{name}`: remind_after")));
    let escalate_after =
        p.escalate_after.as_ref().and_then(|s| cx.duration(s, &format!("policy `{name}`: escalate_after")));
    if let (Some(r), Some(e), Some(place)) = (remind_after, escalate_after, &p.escalate_after) {
        if e <= r {
            cx.error(
                Code::OutOfRange,
                format!("policy `{name}`: escalate_after must be longer than remind_after"),
                place,
                "escalation comes after the reminder",
            );
        }
    }
    if let Some(role) = &p.escalate_to {
        role_known(cx, role, "escalate_to");
    }
    if let (Some(place), None) = (&p.escalate_after, &p.escalate_to) {
        cx.error(
            Code::MissingKey,
            format!("policy `{name}`: escalate_after needs escalate_to (a role)"),
            place,
            "escalate to whom?",
        );
    }

    // actions
    let mut actions = BTreeMap::new();
    for (action, roles) in &p.actions {
        let Some(act) = Action::parse(action) else {
            cx.error(
                Code::UnknownChoice,
                format!("policy `{name}`: unknown action `{action}`"),
                roles,
                "approve, reject, return, cancel or delete",
            );
            continue;
        };
        for (source, kind) in &kinds {
            if !supported_actions(*kind, entity).contains(&act) {
                cx.error(
                    Code::Approvals,
                    format!(
                        "policy `{name}`: action `{action}` does not exist for {} {} (source `{source}`); dingbridge can write {}",
                        kind.display_name(),
                        entity.replace('_', " "),
                        supported_actions(*kind, entity).iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" and ")
                    ),
                    roles,
                    "not supported by this ERP",
                );
            }
        }
        for role in roles.get_ref() {
            role_known(cx, role, &format!("actions.{action}"));
        }
        actions.insert(act, roles.get_ref().iter().map(|r| r.get_ref().clone()).collect());
    }

    // segregate
    let mut sod = Vec::new();
    for pair in &p.segregate {
        match pair.get_ref().as_slice() {
            [a, b] if a.get_ref() != b.get_ref() => {
                role_known(cx, a, "segregate");
                role_known(cx, b, "segregate");
                sod.push(SodRule { exclusive_roles: (a.get_ref().clone(), b.get_ref().clone()), line: cx.line(pair) });
            }
            _ => cx.error(
                Code::InvalidValue,
                format!("policy `{name}`: each segregate entry is two different roles"),
                pair,
                "e.g. [\"buyer\", \"approver\"]",
            ),
        }
    }

    // bands
    let mut bands = Vec::new();
    for band in &p.bands {
        let b = band;
        let min = cx.decimal(&b.min, &format!("policy `{name}`: band min"));
        let below = b.below.as_ref().and_then(|s| cx.decimal(s, &format!("policy `{name}`: band below")));
        let mut steps = Vec::new();
        if b.steps.get_ref().is_empty() {
            cx.error(
                Code::Approvals,
                format!("policy `{name}`: a band without steps would approve nothing"),
                &b.steps,
                "at least one step",
            );
        }
        for step in b.steps.get_ref() {
            let s = step;
            if s.roles.get_ref().is_empty() {
                cx.error(
                    Code::Approvals,
                    format!("policy `{name}`: a step names no role"),
                    &s.roles,
                    "who approves this step?",
                );
            }
            for role in s.roles.get_ref() {
                role_known(cx, role, "a step");
            }
            let require = match s.require.as_ref().map(|r| r.get_ref().as_str()) {
                None | Some("any") => Require::Any,
                Some("all") => Require::All,
                Some(other) => {
                    cx.error(
                        Code::UnknownChoice,
                        format!("policy `{name}`: require `{other}`"),
                        &s.roles,
                        "any or all",
                    );
                    Require::Any
                }
            };
            steps.push(StepConfig {
                roles: s.roles.get_ref().iter().map(|r| r.get_ref().clone()).collect(),
                require,
                line: cx.line(&s.roles),
            });
        }
        if let (Some(min), Some(below)) = (min, below) {
            if below <= min {
                cx.error(
                    Code::Approvals,
                    format!("policy `{name}`: band min {min} is not below its `below` {below}"),
                    &b.min,
                    "empty band",
                );
            }
        }
        if let Some(min) = min {
            bands.push((Band { min, below, steps, line: cx.line(&b.min) }, &b.min));
        }
    }
    check_bands(cx, &name, &currency, &mut bands, policy);

    if cx.errors.len() > before {
        return None;
    }
    Some(PolicyConfig {
        name,
        sources: kinds.into_iter().map(|(s, _)| s).collect(),
        entity: entity.to_owned(),
        currency,
        bands: bands.into_iter().map(|(b, _)| b).collect(),
        actions,
        delivery: delivery?,
        remind_after,
        escalate_after,
        escalate_to: p.escalate_to.as_ref().map(|r| r.get_ref().clone()),
        sod,
        allow_http_card_callback: p.allow_http_card_callback,
        line: cx.line(&p.name),
    })
}

/// Bands sorted by `min` must tile [0, ∞): the first starts at 0, each `below` is the next `min`,
/// only the last has no `below`.
fn check_bands(cx: &mut Check<'_>, name: &str, currency: &str, bands: &mut [(Band, &S<String>)], policy: &RawPolicy) {
    if bands.is_empty() {
        cx.error(
            Code::Approvals,
            format!("policy `{name}` has no amount bands: no request could be routed"),
            &policy.name,
            "add [[approvals.policies.bands]]",
        );
        return;
    }
    bands.sort_by_key(|b| b.0.min);
    let (first, first_raw) = &bands[0];
    if first.min > Decimal::ZERO {
        cx.error(
            Code::Approvals,
            format!("policy `{name}`: amounts from 0 to {} {currency} are not covered (the lowest band, line {}, starts at {})", first.min, first.line, first.min),
            *first_raw,
            "gap below this band",
        );
    }
    for pair in bands.windows(2) {
        let ((a, _), (b, b_raw)) = (&pair[0], &pair[1]);
        match a.below {
            None => cx.error(
                Code::Approvals,
                format!("policy `{name}`: the band at line {} has no upper bound, so it overlaps the band at line {} (from {} {currency})", a.line, b.line, b.min),
                *b_raw,
                "overlaps",
            ),
            Some(below) if below < b.min => cx.error(
                Code::Approvals,
                format!("policy `{name}`: amounts from {below} to {} {currency} are not covered (between the bands at lines {} and {})", b.min, a.line, b.line),
                *b_raw,
                "gap before this band",
            ),
            Some(below) if below > b.min => cx.error(
                Code::Approvals,
                format!("policy `{name}`: amounts from {} to {below} {currency} are covered twice (the bands at lines {} and {} overlap)", b.min, a.line, b.line),
                *b_raw,
                "overlaps",
            ),
            Some(_) => {}
        }
    }
    let (last, last_raw) = &bands[bands.len() - 1];
    if let Some(below) = last.below {
        cx.error(
            Code::Approvals,
            format!("policy `{name}`: amounts of {below} {currency} and more are not covered (the highest band, line {}, ends there)", last.line),
            *last_raw,
            "omit `below` on the highest band",
        );
    }
}

fn check_app_destination(
    cx: &mut Check<'_>,
    policy: &str,
    dest: &S<String>,
    destinations: &BTreeMap<String, DestinationConfig>,
) {
    match destinations.get(dest.get_ref()).map(|d| &d.kind) {
        Some(DestinationKind::DingtalkApp(_)) => {}
        Some(_) => cx.error(
            Code::UnknownDestination,
            format!("policy `{policy}`: destination `{}` is not a dingtalk_app destination", dest.get_ref()),
            dest,
            "cards need a dingtalk_app destination",
        ),
        None => cx.error(
            Code::UnknownDestination,
            format!("policy `{policy}`: destination `{}` is not defined", dest.get_ref()),
            dest,
            "unknown destination",
        ),
    }
}
