//! Approvals with authority: who may decide what, on which ERP record, and how a decision
//! travels from a DingTalk card back to the ERP exactly once.
//!
//! - [`config`]: the `[roles.*]`, `[identity.*]` and `[approvals]` sections, validated with lines.
//! - [`identity`]: DingTalk users ↔ ERP users of each ERP source (rules and an explicit table).
//! - [`policy`]: which policy and amount band applies (FX to the policy currency), and who the
//!   approvers of each step are.
//! - [`calendar`]: Hong Kong business hours (weekends and public holidays excluded) for reminders
//!   and escalation.
//! - [`check`]: `dingbridge check` proves the mapping complete against a directory.
//! - [`machine`]: the state of one approval and the transitions a click, an ERP answer or a timer
//!   cause; pure, so every rule is tested without a network.

pub mod calendar;
pub mod check;
pub mod config;
pub mod identity;
pub mod machine;
pub mod policy;

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod tests;

use crate::config::ErpSystem;
use model::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub use calendar::BusinessCalendar;

/// Everything the approvals feature reads from the config. Empty when the config has no
/// `[approvals]` section (the feature is off).
#[derive(Debug, Clone, Default)]
pub struct ApprovalsConfig {
    /// `[roles.NAME]`.
    pub roles: BTreeMap<String, RoleConfig>,
    /// `[identity.SOURCE]`: how DingTalk users map to the users of the ERP behind that source.
    pub identity: BTreeMap<String, IdentityConfig>,
    /// `[[approvals.policies]]`, in file order.
    pub policies: Vec<PolicyConfig>,
    /// `[approvals.fx]`: units of `fx_base` per one unit of each currency (`fx_base` itself is 1).
    pub fx_base: String,
    pub fx: BTreeMap<String, Decimal>,
    /// `[approvals.calendar]`: business hours and holidays for reminders and escalation.
    pub calendar: BusinessCalendar,
}

/// `[roles.NAME]`: who holds a role. Members are the union of the lists.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleConfig {
    pub name: String,
    /// DingTalk userids.
    pub users: Vec<String>,
    /// Every active member of these DingTalk departments (not sub-departments).
    pub departments: Vec<i64>,
    /// The requester's manager in DingTalk, `n` levels up the manager chain (1 = direct manager).
    pub requester_manager: Option<u8>,
    /// 1-based line of the `[roles.NAME]` header, for `check` messages.
    pub line: usize,
}

/// How DingTalk users are matched to an ERP's users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchRule {
    JobNumber,
    Email,
    Mobile,
}

/// `[identity.SOURCE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityConfig {
    /// The ERP source whose users these are.
    pub source: String,
    /// Tried in order; the first rule that finds exactly one ERP user wins.
    pub rules: Vec<MatchRule>,
    /// Explicit DingTalk userid → ERP user id; wins over the rules.
    pub table: BTreeMap<String, String>,
    pub line: usize,
}

/// What a person may do to a request. Each ERP supports some of them (see [`supported_actions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Approve,
    Reject,
    Return,
    Cancel,
    Delete,
}

impl Action {
    pub const ALL: [Action; 5] = [Action::Approve, Action::Reject, Action::Return, Action::Cancel, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Return => "return",
            Action::Cancel => "cancel",
            Action::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Actions dingbridge can write back to `erp` for `entity`; anything else `check` refuses.
pub fn supported_actions(erp: ErpSystem, entity: &str) -> &'static [Action] {
    match (erp, entity) {
        (ErpSystem::Netsuite, "purchase_request" | "purchase_order") => &[Action::Approve, Action::Reject],
        (ErpSystem::Sap, "purchase_request" | "purchase_order") => &[Action::Approve, Action::Reject],
        (ErpSystem::Dynamics, "purchase_request") => &[Action::Approve, Action::Reject],
        _ => &[],
    }
}

/// How the request reaches the approvers.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// An interactive card through a `dingtalk_app` destination: in `group` (everyone sees it,
    /// anyone may click and is verified) or, without a group, to each approver privately.
    Card { destination: String, group: Option<String> },
    /// A DingTalk OA approval instance (`process_code`) through a `dingtalk_app` destination.
    Oa { destination: String, process_code: String },
}

/// `all`: one approval from each role of the step (parallel); `any`: one approval from any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Require {
    Any,
    All,
}

/// One step of a band, taken in order.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    pub roles: Vec<String>,
    pub require: Require,
    pub line: usize,
}

/// Amounts `min <= amount < below` (in the policy currency) take these steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub min: Decimal,
    /// `None`: no upper bound.
    pub below: Option<Decimal>,
    pub steps: Vec<StepConfig>,
    pub line: usize,
}

/// Segregation of duties: always on (requester never approves; no one takes two steps), plus
/// configurable pairs of roles one person may not hold within one request.
#[derive(Debug, Clone, PartialEq)]
pub struct SodRule {
    /// A person holding both roles may act in neither on the same request.
    pub exclusive_roles: (String, String),
    pub line: usize,
}

/// `[[approvals.policies]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    pub name: String,
    /// ERP sources whose records this policy governs.
    pub sources: Vec<String>,
    /// `purchase_request` or `purchase_order`.
    pub entity: String,
    /// The currency amounts are compared in (after FX).
    pub currency: String,
    pub bands: Vec<Band>,
    /// Who may take each action besides `approve`/`reject` by the step's approvers: action →
    /// roles. `approve` and `reject` default to "the open step's approvers".
    pub actions: BTreeMap<Action, Vec<String>>,
    pub delivery: Delivery,
    /// Remind the open step's approvers after this much business time.
    pub remind_after: Option<Duration>,
    /// Then, after this much business time, add `escalate_to`'s members to the open step.
    pub escalate_after: Option<Duration>,
    pub escalate_to: Option<String>,
    pub sod: Vec<SodRule>,
    /// Clicks over HTTP card callbacks may decide (`allow_http_card_callback`); Stream only
    /// otherwise.
    pub allow_http_card_callback: bool,
    pub line: usize,
}

impl ApprovalsConfig {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Every source some policy governs, once each.
    pub fn governed_sources(&self) -> std::collections::BTreeSet<&str> {
        self.policies.iter().flat_map(|p| p.sources.iter().map(String::as_str)).collect()
    }

    /// The policy governing `entity` records of `source`, if any (first match in file order).
    pub fn policy_for(&self, source: &str, entity: &str) -> Option<&PolicyConfig> {
        self.policies.iter().find(|p| p.entity == entity && p.sources.iter().any(|s| s == source))
    }
}

/// For each policy, the sources whose card clicks may decide its approvals: the Stream-mode
/// DingTalk sources of the app that delivers its cards (Stream callbacks come over the app's own
/// authenticated connection), and, only with `allow_http_card_callback`, its HTTP-mode sources
/// that open card callbacks (`card_callback_token`; an HTTP card click carries no signature). A
/// click that arrives any other way is a forgery, whatever it says.
pub fn decision_sources(
    config: &crate::config::Config,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    config
        .approvals
        .policies
        .iter()
        .map(|policy| {
            let destination = match &policy.delivery {
                Delivery::Card { destination, .. } | Delivery::Oa { destination, .. } => destination,
            };
            let app = match config.destinations.get(destination).map(|d| &d.kind) {
                Some(crate::config::DestinationKind::DingtalkApp(app)) => Some(app.app.as_str()),
                _ => None,
            };
            let sources = config
                .sources
                .iter()
                .filter(|(_, s)| match &s.kind {
                    crate::config::SourceKind::Dingtalk { app: a, inbound } if Some(a.as_str()) == app => match inbound
                    {
                        crate::config::DingtalkInbound::Stream => true,
                        crate::config::DingtalkInbound::Http { card_token, .. } => {
                            policy.allow_http_card_callback && card_token.is_some()
                        }
                    },
                    _ => false,
                })
                .map(|(name, _)| name.clone())
                .collect();
            (policy.name.clone(), sources)
        })
        .collect()
}

/// The route key approval cards are created with when their clicks come over HTTP card
/// callbacks: register `POST /dingtalk/card-callback/<source>?token=<card_callback_token>` for it
/// with `/v1.0/card/callbacks/register`.
pub const APPROVAL_CARD_ROUTE_KEY: &str = "dingbridge-approvals";

/// How a policy's approval cards call back: over Stream when the card app has a Stream source,
/// else over HTTP when the policy allows it and a source takes card callbacks; `None` when clicks
/// could not reach the gateway at all (`check` reports it).
pub fn card_callback(config: &crate::config::Config, policy: &PolicyConfig) -> Option<CardCallbackMode> {
    let sources = decision_sources(config).remove(&policy.name).unwrap_or_default();
    let stream = sources.iter().any(|s| {
        config.sources.get(s).is_some_and(|c| {
            matches!(
                c.kind,
                crate::config::SourceKind::Dingtalk { inbound: crate::config::DingtalkInbound::Stream, .. }
            )
        })
    });
    match (stream, sources.is_empty()) {
        (true, _) => Some(CardCallbackMode::Stream),
        (false, false) => Some(CardCallbackMode::Http),
        (false, true) => None,
    }
}

/// See [`card_callback`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardCallbackMode {
    Stream,
    Http,
}

/// The DingTalk app whose directory says who is who for approvals: the app of the first policy's
/// card destination (validation makes it a `dingtalk_app`), else the app of a DingTalk source.
/// The gateway and `dingbridge check` both read people from it.
pub fn directory_app(config: &crate::config::Config) -> Option<&str> {
    let delivery_app = config.approvals.policies.iter().find_map(|policy| {
        let destination = match &policy.delivery {
            Delivery::Card { destination, .. } | Delivery::Oa { destination, .. } => destination,
        };
        match config.destinations.get(destination).map(|d| &d.kind) {
            Some(crate::config::DestinationKind::DingtalkApp(app)) => Some(app.app.as_str()),
            _ => None,
        }
    });
    delivery_app.or_else(|| {
        config.sources.values().find_map(|s| match &s.kind {
            crate::config::SourceKind::Dingtalk { app, .. } => Some(app.as_str()),
            _ => None,
        })
    })
}
