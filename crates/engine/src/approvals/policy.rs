//! Which policy, band and approvers a request gets.

use super::identity::IdentityMap;
use super::{ApprovalsConfig, PolicyConfig, Require};
use connectors::dingtalk::directory::DirectorySnapshot;
use model::{Decimal, Money};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A DingTalk user who may act, with their ERP user when mapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub userid: String,
    pub name: String,
    pub erp_user: Option<String>,
}

/// One step with its members per role (active users only, requester excluded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteStep {
    pub roles: Vec<String>,
    pub require: Require,
    pub members: BTreeMap<String, Vec<Person>>,
}

/// The approval path of one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub policy: String,
    /// Index of the band in the policy.
    pub band: usize,
    /// The amount in the policy currency, as compared with the bands.
    pub compared: Decimal,
    pub currency: String,
    pub steps: Vec<RouteStep>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("policy `{policy}`: no exchange rate for {currency} in [approvals.fx]")]
    NoRate { policy: String, currency: String },
    #[error("policy `{policy}`: no amount band covers {amount} {currency}")]
    NoBand { policy: String, amount: Decimal, currency: String },
    #[error("policy `{policy}`: role `{role}` has no active member who may approve this request")]
    EmptyRole { policy: String, role: String },
}

/// Who is who: the DingTalk directory and the identity map of the request's ERP source.
#[derive(Debug, Clone, Copy)]
pub struct People<'a> {
    pub directory: &'a DirectorySnapshot,
    pub identity: Option<&'a IdentityMap>,
}

/// Units of `fx_base` per one unit of `currency`.
fn rate(config: &ApprovalsConfig, policy: &str, currency: &str) -> Result<Decimal, RouteError> {
    if currency.eq_ignore_ascii_case(&config.fx_base) {
        return Ok(Decimal::ONE);
    }
    config
        .fx
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(currency))
        .map(|(_, r)| *r)
        .filter(|r| *r > Decimal::ZERO)
        .ok_or_else(|| RouteError::NoRate { policy: policy.to_owned(), currency: currency.to_owned() })
}

/// `amount` in `currency` through the FX table.
pub fn convert(config: &ApprovalsConfig, policy: &str, amount: &Money, currency: &str) -> Result<Decimal, RouteError> {
    let from = amount.currency.code();
    if from.eq_ignore_ascii_case(currency) {
        return Ok(amount.amount);
    }
    let in_base = amount.amount * rate(config, policy, from)?;
    let converted = in_base / rate(config, policy, currency)?;
    // Two decimals are plenty to compare with band limits.
    Ok(converted.round_dp(2))
}

/// Active members of `role` for a request by `requester` (a DingTalk userid, when known), with
/// their ERP users.
pub fn members(config: &ApprovalsConfig, role: &str, requester: Option<&str>, people: People<'_>) -> Vec<Person> {
    let Some(role) = config.roles.get(role) else {
        return Vec::new();
    };
    let directory = people.directory;
    let mut ids = BTreeSet::new();
    for userid in &role.users {
        if directory.user(userid).is_some_and(|u| u.active) {
            ids.insert(userid.clone());
        }
    }
    for dept in &role.departments {
        ids.extend(directory.members(*dept).into_iter().filter(|u| u.active).map(|u| u.userid.clone()));
    }
    if let (Some(levels), Some(requester)) = (role.requester_manager, requester) {
        if let Some(manager) = manager_up(directory, requester, levels) {
            ids.insert(manager);
        }
    }
    ids.into_iter()
        .filter_map(|id| directory.user(&id))
        .map(|u| Person {
            userid: u.userid.clone(),
            name: u.name.clone(),
            erp_user: people.identity.and_then(|m| m.to_erp.get(&u.userid).cloned()),
        })
        .collect()
}

/// The active manager `levels` up the manager chain of `userid`; inactive managers are skipped
/// (their own manager takes their place).
pub fn manager_up(directory: &DirectorySnapshot, userid: &str, levels: u8) -> Option<String> {
    let mut seen = BTreeSet::from([userid.to_owned()]);
    let mut current = directory.user(userid)?;
    let mut climbed = 0;
    while let Some(next) = current.manager_userid.as_deref() {
        // A cycle in corrupt directory data must not loop forever.
        if !seen.insert(next.to_owned()) {
            return None;
        }
        current = directory.user(next)?;
        if current.active {
            climbed += 1;
            if climbed >= levels.max(1) {
                return Some(current.userid.clone());
            }
        }
    }
    None
}

/// The route of a request: band by amount (after FX), members of each step's roles with the
/// requester removed. A role left without members is an error (the request would hang).
pub fn route(
    config: &ApprovalsConfig,
    policy: &PolicyConfig,
    amount: &Money,
    requester: Option<&str>,
    people: People<'_>,
) -> Result<Route, RouteError> {
    let compared = convert(config, &policy.name, amount, &policy.currency)?;
    let band = policy
        .bands
        .iter()
        .position(|b| b.min <= compared && b.below.is_none_or(|below| compared < below))
        .ok_or_else(|| RouteError::NoBand {
            policy: policy.name.clone(),
            amount: compared,
            currency: policy.currency.clone(),
        })?;
    let mut steps = Vec::new();
    for step in &policy.bands[band].steps {
        let mut by_role = BTreeMap::new();
        for role in &step.roles {
            let mut found = members(config, role, requester, people);
            // Segregation of duties: the requester never approves their own request.
            found.retain(|p| Some(p.userid.as_str()) != requester);
            if found.is_empty() {
                return Err(RouteError::EmptyRole { policy: policy.name.clone(), role: role.clone() });
            }
            by_role.insert(role.clone(), found);
        }
        steps.push(RouteStep { roles: step.roles.clone(), require: step.require, members: by_role });
    }
    Ok(Route { policy: policy.name.clone(), band, compared, currency: policy.currency.clone(), steps })
}
