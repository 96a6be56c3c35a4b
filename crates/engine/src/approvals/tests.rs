//! Identity mapping, routing and `check` findings against hand-built directories.

use super::check::directory_findings;
use super::identity::map_identities;
use super::policy::{convert, members, route, People, RouteError};
use super::*;
use connectors::approval::ErpUser;
use connectors::dingtalk::directory::{DirectorySnapshot, User};
use model::{Currency, Money};
use std::str::FromStr;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

fn user(userid: &str, manager: Option<&str>, depts: &[i64], active: bool) -> User {
    let json = serde_json::json!({
        "userid": userid, "name": userid.to_uppercase(), "active": active,
        "dept_id_list": depts, "manager_userid": manager,
    });
    serde_json::from_value(json).expect("user")
}

fn erp(id: &str, email: Option<&str>, mobile: Option<&str>, job: Option<&str>) -> ErpUser {
    ErpUser {
        id: id.into(),
        name: id.into(),
        email: email.map(Into::into),
        mobile: mobile.map(Into::into),
        job_number: job.map(Into::into),
        active: true,
    }
}

fn directory(users: Vec<User>) -> DirectorySnapshot {
    let mut d = DirectorySnapshot::default();
    for u in users {
        d.users.insert(u.userid.clone(), u);
    }
    d
}

fn identity(rules: Vec<MatchRule>, table: &[(&str, &str)]) -> IdentityConfig {
    IdentityConfig {
        source: "netsuite".into(),
        rules,
        table: table.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect(),
        line: 9,
    }
}

#[test]
fn identity_table_wins_then_rules_in_order() {
    let mut alice = user("alice", None, &[1], true);
    alice.email = "Alice@Corp.hk".into();
    alice.job_number = " E100 ".into();
    let mut bob = user("bob", None, &[1], true);
    bob.mobile = "9876 5432".into();
    bob.state_code = "852".into();
    let mut carol = user("carol", None, &[1], true);
    carol.org_email = "carol@corp.hk".into();
    let boss = user("boss", None, &[1], true);
    let gone = user("gone", None, &[1], false);
    let dir = directory(vec![alice, bob, carol, boss, gone]);
    let erp_users = vec![
        erp("1", Some("alice@corp.hk"), None, Some("X9")),
        erp("2", None, Some("98765432"), None),
        erp("3", Some("carol@corp.hk"), None, None),
        erp("7", None, None, None),
        erp("8", Some("CAROL@corp.hk"), None, None),
    ];
    let config = identity(
        vec![MatchRule::JobNumber, MatchRule::Email, MatchRule::Mobile],
        &[("boss", "7"), ("gone", "1"), ("bob", "99")],
    );
    let map = map_identities(&config, &dir, &erp_users);
    assert_eq!(map.to_erp.get("alice").map(String::as_str), Some("1"));
    assert_eq!(map.to_erp.get("boss").map(String::as_str), Some("7"));
    assert_eq!(map.to_dingtalk.get("7").map(String::as_str), Some("boss"));
    // bob's table entry names an ERP user that does not exist: bad, and not rescued by rules.
    assert!(map.bad_table_entries.contains(&("bob".into(), "99".into())));
    assert!(map.bad_table_entries.contains(&("gone".into(), "1".into())));
    assert_eq!(map.ambiguous, vec![("carol".to_owned(), vec!["3".to_owned(), "8".to_owned()])]);
    assert!(!map.to_erp.contains_key("gone"));
}

#[test]
fn identity_mobile_ignores_country_code_and_sap_trusts_table() {
    let mut bob = user("bob", None, &[1], true);
    bob.mobile = "9876-5432".into();
    bob.state_code = "852".into();
    let dave = user("dave", None, &[1], true);
    let dir = directory(vec![bob, dave]);
    let map = map_identities(&identity(vec![MatchRule::Mobile], &[]), &dir, &[erp("2", None, Some("98765432"), None)]);
    assert_eq!(map.to_erp.get("bob").map(String::as_str), Some("2"));
    assert_eq!(map.unmapped, vec!["dave".to_owned()]);

    let sap = map_identities(&identity(vec![], &[("dave", "DAVE01")]), &dir, &[]);
    assert_eq!(sap.to_erp.get("dave").map(String::as_str), Some("DAVE01"));
    assert_eq!(sap.unmapped, vec!["bob".to_owned()]);
}

fn role(name: &str, users: &[&str], departments: &[i64], manager: Option<u8>, line: usize) -> RoleConfig {
    RoleConfig {
        name: name.into(),
        users: users.iter().map(|u| (*u).to_owned()).collect(),
        departments: departments.to_vec(),
        requester_manager: manager,
        line,
    }
}

fn step(roles: &[&str]) -> StepConfig {
    StepConfig { roles: roles.iter().map(|r| (*r).to_owned()).collect(), require: Require::Any, line: 30 }
}

fn config() -> ApprovalsConfig {
    let mut roles = BTreeMap::new();
    roles.insert("dept_manager".into(), role("dept_manager", &[], &[], Some(1), 2));
    roles.insert("finance_director".into(), role("finance_director", &["fd"], &[], None, 12));
    roles.insert("finance_team".into(), role("finance_team", &[], &[20], None, 14));
    let policy = PolicyConfig {
        name: "purchase-requests".into(),
        sources: vec!["netsuite".into()],
        entity: "purchase_request".into(),
        currency: "HKD".into(),
        bands: vec![
            Band { min: dec("0"), below: Some(dec("50000")), steps: vec![step(&["dept_manager"])], line: 20 },
            Band {
                min: dec("50000"),
                below: None,
                steps: vec![step(&["dept_manager"]), step(&["finance_director", "finance_team"])],
                line: 24,
            },
        ],
        actions: BTreeMap::new(),
        delivery: Delivery::Card { destination: "dingtalk-app".into(), group: None },
        remind_after: None,
        escalate_after: None,
        escalate_to: None,
        sod: Vec::new(),
        allow_http_card_callback: false,
        line: 40,
    };
    let mut fx = BTreeMap::new();
    fx.insert("USD".to_owned(), dec("7.80"));
    ApprovalsConfig {
        roles,
        identity: BTreeMap::from([("netsuite".to_owned(), identity(vec![MatchRule::Email], &[("fd", "5")]))]),
        policies: vec![policy],
        fx_base: "HKD".into(),
        fx,
        calendar: BusinessCalendar::default(),
    }
}

fn org() -> DirectorySnapshot {
    directory(vec![
        user("req", Some("mgr_left"), &[10], true),
        user("mgr_left", Some("mgr2"), &[10], false),
        user("mgr2", Some("ceo"), &[10], true),
        user("ceo", None, &[1], true),
        user("fd", Some("ceo"), &[20], true),
        user("ft1", None, &[20], true),
        user("ft_gone", None, &[20], false),
    ])
}

fn money(amount: &str, code: &str) -> Money {
    Money { amount: dec(amount), currency: Currency::parse("currency", code).expect("currency") }
}

#[test]
fn convert_uses_fx_and_reports_missing_rates() {
    let c = config();
    assert_eq!(convert(&c, "p", &money("10000", "USD"), "HKD"), Ok(dec("78000.00")));
    assert_eq!(convert(&c, "p", &money("780", "HKD"), "USD"), Ok(dec("100.00")));
    assert_eq!(
        convert(&c, "p", &money("1", "EUR"), "HKD"),
        Err(RouteError::NoRate { policy: "p".into(), currency: "EUR".into() })
    );
}

#[test]
fn members_skip_inactive_managers_and_departments() {
    let c = config();
    let dir = org();
    let people = People { directory: &dir, identity: None };
    let managers: Vec<String> =
        members(&c, "dept_manager", Some("req"), people).into_iter().map(|p| p.userid).collect();
    assert_eq!(managers, vec!["mgr2".to_owned()]);
    let team: Vec<String> = members(&c, "finance_team", None, people).into_iter().map(|p| p.userid).collect();
    assert_eq!(team, vec!["fd".to_owned(), "ft1".to_owned()]);
}

#[test]
fn route_picks_band_after_fx_and_removes_requester() {
    let c = config();
    let dir = org();
    let people = People { directory: &dir, identity: None };
    let policy = &c.policies[0];
    let small = route(&c, policy, &money("6000", "USD"), Some("req"), people).expect("route");
    assert_eq!((small.band, small.compared), (0, dec("46800.00")));
    let big = route(&c, policy, &money("7000", "USD"), Some("req"), people).expect("route");
    assert_eq!(big.band, 1);
    assert_eq!(big.steps.len(), 2);
    // fd requests: removed from finance_director, which is left empty.
    let err = route(&c, policy, &money("60000", "HKD"), Some("fd"), people).expect_err("empty role");
    assert_eq!(err, RouteError::EmptyRole { policy: "purchase-requests".into(), role: "finance_director".into() });
}

#[test]
fn check_reports_inactive_role_unmapped_member_and_bad_table() {
    let mut c = config();
    let mut dir = org();
    if let Some(fd) = dir.users.get_mut("fd") {
        fd.active = false;
    }
    c.roles.insert("finance_director".into(), role("finance_director", &["fd", "nobody"], &[], None, 12));
    let erp_users = BTreeMap::from([("netsuite".to_owned(), vec![erp("5", None, None, None)])]);
    let findings = directory_findings(&c, &dir, &erp_users);
    let text: Vec<String> = findings.iter().map(|f| f.message.clone()).collect();
    assert!(
        text.iter().any(|m| m
            == "policy `purchase-requests` (line 40): role `finance_director` (line 12) has no active member: fd has left"),
        "{text:#?}"
    );
    assert!(text.iter().any(|m| m.contains("lists `nobody`, who is not in the DingTalk directory")), "{text:#?}");
    assert!(
        text.iter().any(|m| m.contains(
            "member `ft1` (FT1) may approve for source `netsuite` but maps to no `netsuite` user (rules: email)"
        )),
        "{text:#?}"
    );
    let bad = findings.iter().find(|f| f.message.contains("table entry `fd`")).expect("bad table entry");
    assert_eq!(bad.line, 9);
    let role_finding = findings.iter().find(|f| f.message.contains("has no active member")).expect("finding");
    assert_eq!((role_finding.line, role_finding.role.as_deref()), (12, Some("finance_director")));
}

#[test]
fn check_reports_ambiguous_and_accepts_requester_manager_roles() {
    let c = config();
    let mut dir = org();
    for id in ["fd", "ft1"] {
        if let Some(u) = dir.users.get_mut(id) {
            u.email = "shared@corp.hk".into();
        }
    }
    let erp_users = BTreeMap::from([(
        "netsuite".to_owned(),
        vec![
            erp("5", Some("x@corp.hk"), None, None),
            erp("6", Some("shared@corp.hk"), None, None),
            erp("9", Some("SHARED@corp.hk"), None, None),
        ],
    )]);
    let findings = directory_findings(&c, &dir, &erp_users);
    assert!(
        findings.iter().any(|f| f.message.contains("`ft1` matches several `netsuite` users (6, 9)")),
        "{findings:#?}"
    );
    // dept_manager has no listed users but req has an active manager: satisfiable.
    assert!(!findings.iter().any(|f| f.role.as_deref() == Some("dept_manager")), "{findings:#?}");
}
