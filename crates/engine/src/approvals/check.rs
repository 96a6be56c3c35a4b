//! `dingbridge check`: the approvals config proven complete against the people who exist.

use super::identity::{map_identities, IdentityMap};
use super::policy::{members, People};
use super::{ApprovalsConfig, MatchRule, PolicyConfig};
use connectors::approval::ErpUser;
use connectors::dingtalk::directory::DirectorySnapshot;
use std::collections::BTreeMap;

/// One incompleteness, naming the policy, role and config line it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub policy: Option<String>,
    pub role: Option<String>,
    /// 1-based line in the config file.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Roles a policy relies on: step roles, action roles and `escalate_to`, first use first.
fn used_roles(policy: &PolicyConfig) -> Vec<&str> {
    let mut roles: Vec<&str> = Vec::new();
    let all = policy
        .bands
        .iter()
        .flat_map(|b| b.steps.iter().flat_map(|s| s.roles.iter()))
        .chain(policy.actions.values().flatten())
        .chain(policy.escalate_to.iter());
    for role in all {
        if !roles.contains(&role.as_str()) {
            roles.push(role);
        }
    }
    roles
}

fn rule_names(rules: &[MatchRule]) -> String {
    if rules.is_empty() {
        return "table only".to_owned();
    }
    let names: Vec<&str> = rules
        .iter()
        .map(|r| match r {
            MatchRule::JobNumber => "job_number",
            MatchRule::Email => "email",
            MatchRule::Mobile => "mobile",
        })
        .collect();
    names.join(", ")
}

/// Findings that need the directory: roles without an active mapped member, DingTalk users who
/// may act but map to no user of the ERP they would act on, identity table entries naming
/// unknown people. `erp_users` is by ERP source name.
pub fn directory_findings(
    config: &ApprovalsConfig,
    directory: &DirectorySnapshot,
    erp_users: &BTreeMap<String, Vec<ErpUser>>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    // A source missing from `erp_users` (SAP) is mapped by its table only.
    let maps: BTreeMap<&str, IdentityMap> = config
        .identity
        .iter()
        .map(|(source, identity)| {
            let users = erp_users.get(source).map(Vec::as_slice).unwrap_or(&[]);
            (source.as_str(), map_identities(identity, directory, users))
        })
        .collect();

    for policy in &config.policies {
        for role_name in used_roles(policy) {
            let Some(role) = config.roles.get(role_name) else {
                continue; // Config validation reports unknown roles.
            };
            let finding = |message: String| Finding {
                policy: Some(policy.name.clone()),
                role: Some(role_name.to_owned()),
                line: role.line,
                message: format!(
                    "policy `{}` (line {}): role `{role_name}` (line {}) {message}",
                    policy.name, policy.line, role.line
                ),
            };
            for userid in &role.users {
                if directory.user(userid).is_none() {
                    findings.push(finding(format!("lists `{userid}`, who is not in the DingTalk directory")));
                }
            }
            let people = People { directory, identity: None };
            let listed = members(config, role_name, None, people);
            let manager_ok = role.requester_manager.is_some()
                && directory.users.values().any(|u| {
                    u.active && u.manager_userid.as_deref().and_then(|m| directory.user(m)).is_some_and(|m| m.active)
                });
            if listed.is_empty() && !manager_ok {
                let left: Vec<String> = role
                    .users
                    .iter()
                    .filter(|u| directory.user(u).is_some_and(|u| !u.active))
                    .map(|u| format!("{u} has left"))
                    .collect();
                let why = if left.is_empty() { String::new() } else { format!(": {}", left.join(", ")) };
                findings.push(finding(format!("has no active member{why}")));
            }
            for person in &listed {
                for source in &policy.sources {
                    let identity = config.identity.get(source);
                    let mapped = maps.get(source.as_str()).is_some_and(|m| m.to_erp.contains_key(&person.userid));
                    if !mapped {
                        let rules =
                            identity.map(|i| rule_names(&i.rules)).unwrap_or_else(|| "no [identity] section".into());
                        findings.push(finding(format!(
                            "member `{}` ({}) may approve for source `{source}` but maps to no `{source}` user (rules: {rules})",
                            person.userid, person.name
                        )));
                    }
                }
            }
        }
    }

    for (source, map) in &maps {
        let line = config.identity.get(*source).map_or(0, |i| i.line);
        for (userid, erp_id) in &map.bad_table_entries {
            findings.push(Finding {
                policy: None,
                role: None,
                line,
                message: format!(
                    "[identity.{source}]: table entry `{userid}` = \"{erp_id}\" names an unknown or inactive DingTalk or ERP user"
                ),
            });
        }
        for (userid, ids) in &map.ambiguous {
            findings.push(Finding {
                policy: None,
                role: None,
                line,
                message: format!(
                    "[identity.{source}]: `{userid}` matches several `{source}` users ({}); map them in `users = {{…}}`",
                    ids.join(", ")
                ),
            });
        }
    }
    findings
}
