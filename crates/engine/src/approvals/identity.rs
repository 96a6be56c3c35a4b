//! DingTalk users ↔ the users of one ERP, by the rules of `[identity.SOURCE]`.

use super::{IdentityConfig, MatchRule};
use connectors::approval::ErpUser;
use connectors::dingtalk::directory::{DirectorySnapshot, User};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The mapping of one ERP source, with what could not be mapped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdentityMap {
    pub source: String,
    /// DingTalk userid → ERP user id (active DingTalk users only).
    pub to_erp: BTreeMap<String, String>,
    /// ERP user id → DingTalk userid.
    pub to_dingtalk: BTreeMap<String, String>,
    /// Active DingTalk users no rule or table entry maps.
    pub unmapped: Vec<String>,
    /// DingTalk users a rule matched to more than one ERP user (not mapped; named for the report).
    pub ambiguous: Vec<(String, Vec<String>)>,
    /// Table entries naming a DingTalk user or ERP user that does not exist (or is inactive).
    pub bad_table_entries: Vec<(String, String)>,
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The ERP users `rule` finds for `user` (active ERP users only).
fn candidates<'a>(rule: MatchRule, user: &User, erp_users: &'a [ErpUser]) -> Vec<&'a ErpUser> {
    let active = erp_users.iter().filter(|e| e.active);
    match rule {
        MatchRule::JobNumber => {
            let wanted = user.job_number.trim();
            if wanted.is_empty() {
                return Vec::new();
            }
            active.filter(|e| e.job_number.as_deref().is_some_and(|j| j.trim().eq_ignore_ascii_case(wanted))).collect()
        }
        MatchRule::Email => {
            let mine: Vec<&str> =
                [user.email.trim(), user.org_email.trim()].into_iter().filter(|e| !e.is_empty()).collect();
            if mine.is_empty() {
                return Vec::new();
            }
            active
                .filter(|e| e.email.as_deref().is_some_and(|x| mine.iter().any(|m| m.eq_ignore_ascii_case(x.trim()))))
                .collect()
        }
        MatchRule::Mobile => {
            // DingTalk keeps the country code apart (`state_code`); ERPs keep the number without it.
            let wanted = digits(&user.mobile);
            if wanted.is_empty() {
                return Vec::new();
            }
            active.filter(|e| e.mobile.as_deref().is_some_and(|m| digits(m) == wanted)).collect()
        }
    }
}

/// Maps every active DingTalk user of `directory` to at most one ERP user.
pub fn map_identities(config: &IdentityConfig, directory: &DirectorySnapshot, erp_users: &[ErpUser]) -> IdentityMap {
    let mut map = IdentityMap { source: config.source.clone(), ..IdentityMap::default() };
    // Without an ERP user list (SAP) the table's ERP ids are trusted as written.
    let trust_table = erp_users.is_empty();
    for (userid, erp_id) in &config.table {
        let dingtalk_ok = directory.user(userid).is_some_and(|u| u.active);
        let erp_ok = trust_table || erp_users.iter().any(|e| e.active && &e.id == erp_id);
        if dingtalk_ok && erp_ok {
            map.to_erp.insert(userid.clone(), erp_id.clone());
            map.to_dingtalk.insert(erp_id.clone(), userid.clone());
        } else {
            map.bad_table_entries.push((userid.clone(), erp_id.clone()));
        }
    }
    for user in directory.users.values().filter(|u| u.active) {
        if map.to_erp.contains_key(&user.userid) || config.table.contains_key(&user.userid) {
            continue;
        }
        let mut outcome = None;
        if !trust_table {
            for rule in &config.rules {
                let found = candidates(*rule, user, erp_users);
                match found.len() {
                    0 => continue,
                    1 => outcome = Some(Ok(found[0].id.clone())),
                    _ => outcome = Some(Err(found.iter().map(|e| e.id.clone()).collect::<Vec<_>>())),
                }
                break;
            }
        }
        match outcome {
            Some(Ok(erp_id)) => {
                map.to_erp.insert(user.userid.clone(), erp_id.clone());
                map.to_dingtalk.insert(erp_id, user.userid.clone());
            }
            Some(Err(ids)) => map.ambiguous.push((user.userid.clone(), ids)),
            None => map.unmapped.push(user.userid.clone()),
        }
    }
    map
}
