//! The approval state machine without a network: every rule of who may decide, once.

use super::*;
use crate::approvals::identity::IdentityMap;
use crate::approvals::{Band, Delivery, RoleConfig, SodRule, StepConfig};
use connectors::dingtalk::directory::{DirectorySnapshot, User};
use std::collections::BTreeMap;

fn user(userid: &str, name: &str, manager: Option<&str>, active: bool) -> User {
    serde_json::from_value(json!({
        "userid": userid, "name": name, "active": active, "dept_id_list": [1],
        "manager_userid": manager.unwrap_or(""), "job_number": format!("E-{userid}"),
    }))
    .unwrap()
}

fn directory() -> DirectorySnapshot {
    let mut d = DirectorySnapshot::default();
    for u in [
        user("boss", "Lee Wai Kit", None, true),
        user("fin", "Cheung Mei Ling", Some("boss"), true),
        user("pay", "Lam Chi Keung", Some("fin"), true),
        user("junior", "Ng Hoi Yan", Some("fin"), true),
        user("req", "Chan Tai Man", Some("boss"), true),
        user("gone", "Chow Siu Ming", Some("boss"), false),
        user("nomap", "Unmapped Person", Some("boss"), true),
    ] {
        d.users.insert(u.userid.clone(), u);
    }
    d
}

fn identity() -> IdentityMap {
    let pairs = [("boss", "7"), ("fin", "8"), ("pay", "9"), ("junior", "10"), ("req", "159")];
    IdentityMap {
        source: "ns".into(),
        to_erp: pairs.iter().map(|(d, e)| (d.to_string(), e.to_string())).collect(),
        to_dingtalk: pairs.iter().map(|(d, e)| (e.to_string(), d.to_string())).collect(),
        ..Default::default()
    }
}

fn role(name: &str, users: &[&str]) -> (String, RoleConfig) {
    (
        name.to_owned(),
        RoleConfig {
            name: name.to_owned(),
            users: users.iter().map(|u| u.to_string()).collect(),
            departments: vec![],
            requester_manager: None,
            line: 1,
        },
    )
}

fn step(roles: &[&str], require: Require) -> StepConfig {
    StepConfig { roles: roles.iter().map(|r| r.to_string()).collect(), require, line: 1 }
}

fn config() -> ApprovalsConfig {
    let mut roles: BTreeMap<String, RoleConfig> =
        [role("approvers", &["fin", "pay", "req", "nomap"]), role("md", &["boss"]), role("auditors", &["pay"])]
            .into_iter()
            .collect();
    roles.insert(
        "manager".into(),
        RoleConfig { name: "manager".into(), users: vec![], departments: vec![], requester_manager: Some(1), line: 1 },
    );
    let d = |s: &str| s.parse::<model::Decimal>().unwrap();
    ApprovalsConfig {
        roles,
        identity: BTreeMap::new(),
        policies: vec![PolicyConfig {
            name: "prs".into(),
            sources: vec!["ns".into()],
            entity: "purchase_request".into(),
            currency: "HKD".into(),
            bands: vec![
                Band { min: d("0"), below: Some(d("1000")), steps: vec![step(&["approvers"], Require::Any)], line: 1 },
                Band {
                    min: d("1000"),
                    below: Some(d("100000")),
                    steps: vec![step(&["approvers"], Require::Any), step(&["md"], Require::Any)],
                    line: 1,
                },
                Band { min: d("100000"), below: None, steps: vec![step(&["approvers", "md"], Require::All)], line: 1 },
            ],
            actions: BTreeMap::new(),
            delivery: Delivery::Card { destination: "app".into(), group: Some("cidF".into()) },
            remind_after: Some(std::time::Duration::from_secs(4 * 3600)),
            escalate_after: Some(std::time::Duration::from_secs(9 * 3600)),
            escalate_to: Some("md".into()),
            sod: vec![],
            allow_http_card_callback: false,
            line: 1,
        }],
        fx_base: "HKD".into(),
        fx: [("USD".to_owned(), d("7.80"))].into_iter().collect(),
        calendar: Default::default(),
    }
}

struct World {
    config: ApprovalsConfig,
    directory: DirectorySnapshot,
    identity: IdentityMap,
    decision_sources: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl World {
    fn new() -> World {
        let decision_sources = [("prs".to_owned(), ["dt".to_owned()].into_iter().collect())].into_iter().collect();
        World { config: config(), directory: directory(), identity: identity(), decision_sources }
    }
    fn ctx(&self) -> Context<'_> {
        Context {
            config: &self.config,
            people: People { directory: &self.directory, identity: Some(&self.identity) },
            erp_name: "NetSuite",
            decision_sources: &self.decision_sources,
        }
    }
}

/// Monday 2026-11-30 10:00 HKT.
const MONDAY_10: i64 = 1_796_004_000_000;

fn record(amount: &str, currency: &str, version: &str, pending: bool) -> Value {
    json!({
        "number": "PR000232", "pending_approval": pending, "version": version,
        "status_text": if pending { "Pending Approval" } else { "Approved" },
        "requester": {"id": "159", "name": "Chan Tai Man"},
        "amount": {"amount": amount, "currency": currency},
        "lines": [{"item": "Bolt", "quantity": {"value": "600", "unit": "PCE"}}],
        "as_of": "2026-11-30T01:00:00Z",
        "approval": {"record_type": "purchaseRequisition", "id": "4691"},
    })
}

fn record_input(data: Value) -> Input {
    Input::Record {
        key: "ns:purchase_request:4691".into(),
        source: "ns".into(),
        entity: "purchase_request".into(),
        entity_id: "4691".into(),
        data,
        at_ms: MONDAY_10,
    }
}

fn click(user: &str, action: &str, n: u32) -> Input {
    Input::Click {
        key: "ns:purchase_request:4691".into(),
        source: "dt".into(),
        userid: user.into(),
        action: action.into(),
        event_id: format!("evt-{n}"),
        at_ms: MONDAY_10 + i64::from(n) * 60_000,
    }
}

fn opened(w: &World, amount: &str) -> Approval {
    let t = apply(None, &record_input(record(amount, "HKD", "v1", true)), &w.ctx());
    t.state.expect("an approval opens")
}

fn note(t: &Transition) -> String {
    t.effects
        .iter()
        .find_map(|e| match e {
            Effect::CardNote { text, .. } => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn write_back(t: &Transition) -> Option<DecisionRequest> {
    t.effects.iter().find_map(|e| match e {
        Effect::WriteBack(r) => Some(r.clone()),
        _ => None,
    })
}

fn audits(t: &Transition) -> Vec<String> {
    t.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Audit { action, .. } => Some(action.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_pending_record_opens_an_approval_with_a_card_the_approvers_and_an_audit_row() {
    let w = World::new();
    let t = apply(None, &record_input(record("500", "HKD", "v1", true)), &w.ctx());
    let a = t.state.clone().unwrap();
    assert_eq!(a.status, Status::Pending);
    assert_eq!(a.requester.userid.as_deref(), Some("req"), "requester mapped through identity");
    let approvers: Vec<String> = a.open_approvers().into_iter().map(|(_, p)| p.userid).collect();
    assert!(!approvers.contains(&"req".to_owned()), "the requester is never an approver: {approvers:?}");
    assert!(approvers.contains(&"fin".to_owned()) && approvers.contains(&"pay".to_owned()));
    assert_eq!(t.effects[0], Effect::SendCard);
    assert_eq!(audits(&t), ["approval.opened"]);
    assert!(t.effects.iter().any(|e| matches!(e, Effect::Notify { users, .. } if users.contains(&"fin".to_owned()))));
    let params = card_params(&a, "NetSuite");
    assert_eq!(params["amount"], "HKD 500.00");
    assert_eq!(params["canApprove"], "true");
    assert!(params["lines"].contains("600 PCE Bolt"), "{params:?}");
    assert!(params["as_of"].contains("HKT"));
    // The same state again: nothing.
    let again = apply(Some(a), &record_input(record("500", "HKD", "v1", true)), &w.ctx());
    assert_eq!(again, Transition { state: None, effects: vec![] });
    // Not pending and unknown: nothing.
    assert!(apply(None, &record_input(record("500", "HKD", "v1", false)), &w.ctx()).state.is_none());
}

#[test]
fn an_approver_decides_and_the_write_back_carries_the_version_and_a_stable_key() {
    let w = World::new();
    let a = opened(&w, "500");
    let t = apply(Some(a), &click("fin", "approve", 1), &w.ctx());
    let s = t.state.clone().unwrap();
    assert!(matches!(&s.status, Status::Writing { decision: Decision::Approve, by, .. } if by == "fin"));
    let req = write_back(&t).expect("a write-back");
    assert_eq!(req.expected_version, "v1");
    assert_eq!(req.idempotency_key, "apr-evt-1");
    assert_eq!(req.erp_user.as_deref(), Some("8"));
    assert_eq!(req.approval["id"], "4691");
    assert!(req.comment.contains("Cheung Mei Ling"));
    assert_eq!(audits(&t), ["approval.decided"]);
    // The ERP took it: approved, card and requester told.
    let done = apply(
        Some(s),
        &Input::Outcome {
            key: "ns:purchase_request:4691".into(),
            idempotency_key: "apr-evt-1".into(),
            outcome: DecisionOutcome::Applied { version: None },
            at_ms: MONDAY_10 + 120_000,
        },
        &w.ctx(),
    );
    let s = done.state.clone().unwrap();
    assert!(matches!(&s.status, Status::Approved { by_name, .. } if by_name == "Cheung Mei Ling"));
    assert!(done.effects.contains(&Effect::UpdateCard));
    assert!(done.effects.iter().any(|e| matches!(e, Effect::Notify { users, text, .. } if users == &["req"] && text.contains("approved by Cheung Mei Ling"))));
    assert!(card_params(&s, "NetSuite")["status"].starts_with("Approved by Cheung Mei Ling at 2026-11-30 10:02 HKT"));
    assert_eq!(card_params(&s, "NetSuite")["canApprove"], "false");
    // A late click: refused, no second write.
    let late = apply(Some(s), &click("pay", "approve", 3), &w.ctx());
    assert!(write_back(&late).is_none());
    assert!(note(&late).contains("already approved by Cheung Mei Ling"), "{}", note(&late));
}

#[test]
fn clicks_by_the_wrong_people_are_refused_with_a_reason_and_audited() {
    let w = World::new();
    let a = opened(&w, "500");
    let cases = [
        ("junior", "Ng Hoi Yan may not approve this: it needs the role `approvers`"),
        ("req", "Chan Tai Man requested this; someone else must decide it"),
        ("gone", "Chow Siu Ming has left the company"),
        ("stranger", "stranger is not in the company's DingTalk directory"),
        ("nomap", "Unmapped Person has no NetSuite user mapped"),
    ];
    for (who, why) in cases {
        let t = apply(Some(a.clone()), &click(who, "approve", 1), &w.ctx());
        assert!(note(&t).contains(why), "{who}: {}", note(&t));
        assert!(write_back(&t).is_none(), "{who}: the ERP is not called");
        assert_eq!(t.state.as_ref().unwrap().status, Status::Pending);
        assert_eq!(audits(&t), ["approval.refused"]);
        assert!(t.effects.iter().any(|e| matches!(e, Effect::Audit { actor, .. } if actor == who)));
    }
    let t = apply(Some(a), &click("fin", "cancel", 1), &w.ctx());
    assert!(note(&t).contains("may not cancel"), "{}", note(&t));
    assert!(write_back(&t).is_none());
}

#[test]
fn steps_run_in_order_and_one_person_never_takes_two() {
    let w = World::new();
    let a = opened(&w, "5000");
    assert_eq!(a.route.as_ref().unwrap().steps.len(), 2);
    // Step 2's approver cannot jump the queue.
    let early = apply(Some(a.clone()), &click("boss", "approve", 1), &w.ctx());
    assert!(note(&early).contains("needs the role `approvers`"), "{}", note(&early));
    let t = apply(Some(a), &click("fin", "approve", 2), &w.ctx());
    let s = t.state.clone().unwrap();
    assert_eq!(s.step, 1);
    assert!(write_back(&t).is_none());
    assert!(card_params(&s, "NetSuite")["status"].contains("step 1 approved by Cheung Mei Ling"));
    let twice = apply(Some(s.clone()), &click("fin", "approve", 3), &w.ctx());
    assert!(note(&twice).contains("already approved step 1"), "{}", note(&twice));
    let done = apply(Some(s), &click("boss", "approve", 4), &w.ctx());
    assert!(write_back(&done).is_some());
}

#[test]
fn a_parallel_step_needs_every_role_and_a_reject_ends_it_at_once() {
    let w = World::new();
    let a = opened(&w, "200000");
    let t = apply(Some(a.clone()), &click("boss", "approve", 1), &w.ctx());
    assert!(write_back(&t).is_none(), "md alone is not enough");
    let t = apply(t.state, &click("pay", "approve", 2), &w.ctx());
    assert_eq!(write_back(&t).unwrap().decision, Decision::Approve);
    let r = apply(Some(a), &click("pay", "reject", 3), &w.ctx());
    assert_eq!(write_back(&r).unwrap().decision, Decision::Reject);
}

#[test]
fn amounts_in_other_currencies_are_converted_before_the_band_is_chosen() {
    let w = World::new();
    // USD 200 = HKD 1,560: the two-step band.
    let t = apply(None, &record_input(record("200", "USD", "v1", true)), &w.ctx());
    let route = t.state.unwrap().route.unwrap();
    assert_eq!(route.band, 1);
    // No rate: unroutable, shown on the card, audited.
    let t = apply(None, &record_input(record("200", "JPY", "v1", true)), &w.ctx());
    let s = t.state.unwrap();
    assert!(matches!(&s.status, Status::Unroutable { reason } if reason.contains("JPY")));
    assert!(audits(&Transition { state: None, effects: t.effects }).contains(&"approval.unroutable".to_owned()));
    assert!(card_params(&s, "NetSuite")["status"].starts_with("Cannot be routed"));
}

#[test]
fn the_erp_refusing_the_write_turns_the_card_into_changed_in_erp() {
    let w = World::new();
    let t = apply(Some(opened(&w, "500")), &click("fin", "approve", 1), &w.ctx());
    let refused = apply(
        t.state,
        &Input::Outcome {
            key: "ns:purchase_request:4691".into(),
            idempotency_key: "apr-evt-1".into(),
            outcome: DecisionOutcome::Refused {
                reason: "changed in NetSuite since the card was sent".into(),
                current_status: None,
            },
            at_ms: MONDAY_10,
        },
        &w.ctx(),
    );
    let s = refused.state.clone().unwrap();
    assert!(matches!(s.status, Status::ChangedInErp { .. }));
    assert!(card_params(&s, "NetSuite")["status"].starts_with("Changed in NetSuite — please review"));
    assert!(refused.effects.iter().any(|e| matches!(e, Effect::Notify { users, .. } if users == &["fin"])));
    assert_eq!(audits(&refused), ["approval.writeback_refused"]);
    // An answer for another decision is ignored.
    let stray = apply(
        Some(s.clone()),
        &Input::Outcome {
            key: "ns:purchase_request:4691".into(),
            idempotency_key: "apr-other".into(),
            outcome: DecisionOutcome::AlreadyApplied,
            at_ms: MONDAY_10,
        },
        &w.ctx(),
    );
    assert!(stray.state.is_none());
    // The record's new version reopens it: a new round with no votes.
    let reopened = apply(Some(s), &record_input(record("500", "HKD", "v2", true)), &w.ctx());
    let s = reopened.state.unwrap();
    assert_eq!((s.status, s.round, s.votes.len()), (Status::Pending, 2, 0));
}

#[test]
fn a_record_changed_or_decided_in_the_erp_while_pending_is_followed() {
    let w = World::new();
    let t = apply(Some(opened(&w, "5000")), &click("fin", "approve", 1), &w.ctx());
    let changed = apply(t.state, &record_input(record("5200", "HKD", "v2", true)), &w.ctx());
    let s = changed.state.clone().unwrap();
    assert_eq!(s.votes.len(), 0, "approvals of the old version do not carry over");
    assert_eq!(s.version(), "v2");
    assert_eq!(audits(&changed), ["approval.record_changed"]);
    let closed = apply(Some(s), &record_input(record("5200", "HKD", "v3", false)), &w.ctx());
    let s = closed.state.unwrap();
    assert!(matches!(s.status, Status::ClosedInErp { .. }));
    assert_eq!(card_params(&s, "NetSuite")["canApprove"], "false");
}

#[test]
fn reminders_and_escalation_fall_due_in_business_hours_and_the_escalated_may_decide() {
    let w = World::new();
    let a = opened(&w, "500");
    let due = due_times(&a, &w.config.policies[0], &w.config);
    // Monday 10:00 + 4 business hours = 14:00; + 9 = Tuesday 10:00 (08:00 of it on Monday until
    // the 18:00 close, the last hour from Tuesday's 09:00 opening).
    assert_eq!(due.remind_ms, Some(MONDAY_10 + 4 * 3_600_000));
    assert_eq!(due.escalate_ms, Some(MONDAY_10 + 24 * 3_600_000));
    assert_eq!(next_due(&a, &w.config), due.remind_ms);
    let tick = |at: i64| Input::Tick { key: a.key.clone(), at_ms: at };
    assert!(apply(Some(a.clone()), &tick(MONDAY_10 + 3_600_000), &w.ctx()).state.is_none(), "nothing due yet");
    let reminded = apply(Some(a.clone()), &tick(MONDAY_10 + 4 * 3_600_000), &w.ctx());
    assert_eq!(audits(&reminded), ["approval.reminded"]);
    let s = reminded.state.unwrap();
    assert!(apply(Some(s.clone()), &tick(MONDAY_10 + 5 * 3_600_000), &w.ctx()).state.is_none(), "reminded once");
    let escalated = apply(Some(s), &tick(MONDAY_10 + 24 * 3_600_000), &w.ctx());
    assert_eq!(audits(&escalated), ["approval.escalated"]);
    assert!(escalated.effects.iter().any(|e| matches!(e, Effect::Notify { users, .. } if users == &["boss"])));
    let s = escalated.state.unwrap();
    assert_eq!(next_due(&s, &w.config), None);
    let t = apply(Some(s), &click("boss", "approve", 9), &w.ctx());
    assert!(write_back(&t).is_some(), "the escalation target may decide");
}

#[test]
fn segregated_roles_may_not_be_held_together() {
    let mut w = World::new();
    w.config.policies[0].sod.push(SodRule { exclusive_roles: ("approvers".into(), "auditors".into()), line: 1 });
    let t = apply(Some(opened(&w, "500")), &click("pay", "approve", 1), &w.ctx());
    assert!(note(&t).contains("holds both `approvers` and `auditors`"), "{}", note(&t));
    let t = apply(Some(opened(&w, "500")), &click("fin", "approve", 1), &w.ctx());
    assert!(write_back(&t).is_some());
}

#[test]
fn only_governed_records_and_approval_card_clicks_become_approval_jobs() {
    let w = World::new();
    let event = |source: &str, entity: &str, id: &str, data: Value| -> Event {
        serde_json::from_value(json!({
            "id": "e1", "source": source, "system": "x", "entity": entity, "entity_id": id, "change": "updated",
            "received_at": "2026-11-30T02:00:00Z", "idempotency_key": "k", "fields": {}, "data": data,
        }))
        .unwrap()
    };
    let job =
        job_for_event(&w.config, &event("ns", "purchase_request", "4691", record("1", "HKD", "v", true)), 5).unwrap();
    assert_eq!(job.destination, DESTINATION);
    assert_eq!(job.ordering_key, "approvals/ns:purchase_request:4691");
    let click_event = event(
        "dt",
        "card_action",
        "approval:ns:purchase_request:4691",
        json!({"userId": "fin", "actionIds": ["approve"]}),
    );
    let job = job_for_event(&w.config, &click_event, 5).unwrap();
    assert_eq!(job.ordering_key, "approvals/ns:purchase_request:4691", "clicks queue behind the record");
    let input: Input = serde_json::from_str(&job.payload).unwrap();
    assert!(matches!(input, Input::Click { ref userid, ref action, .. } if userid == "fin" && action == "approve"));
    assert!(job_for_event(&w.config, &event("dt", "card_action", "pr-5001", json!({"userId": "fin"})), 5).is_none());
    assert!(job_for_event(&w.config, &event("other", "purchase_request", "1", json!({})), 5).is_none());
    assert!(job_for_event(&w.config, &event("ns", "shipment", "1", json!({})), 5).is_none());
    assert!(job_for_event(&ApprovalsConfig::default(), &click_event, 5).is_none());
}

#[test]
fn a_write_back_that_gave_up_is_shown_and_a_later_replay_still_completes_it() {
    let w = World::new();
    let t = apply(Some(opened(&w, "500")), &click("fin", "approve", 1), &w.ctx());
    let failed = apply(
        t.state,
        &Input::WriteFailed {
            key: "ns:purchase_request:4691".into(),
            idempotency_key: "apr-evt-1".into(),
            reason: "NetSuite answered HTTP 503".into(),
            at_ms: MONDAY_10 + 600_000,
        },
        &w.ctx(),
    );
    let s = failed.state.clone().unwrap();
    assert!(matches!(&s.status, Status::WriteFailed { reason, .. } if reason.contains("503")));
    assert_eq!(audits(&failed), ["approval.writeback_failed"]);
    assert!(card_params(&s, "NetSuite")["status"].contains("NOT yet in NetSuite"), "{:?}", card_params(&s, "NetSuite"));
    assert!(failed.effects.iter().any(|e| matches!(e, Effect::Notify { users, .. } if users == &["fin"])));
    // Nobody may decide again meanwhile.
    let again = apply(Some(s.clone()), &click("pay", "reject", 2), &w.ctx());
    assert!(write_back(&again).is_none());
    // The dead letter replayed by operations reaches NetSuite: approved.
    let done = apply(
        Some(s),
        &Input::Outcome {
            key: "ns:purchase_request:4691".into(),
            idempotency_key: "apr-evt-1".into(),
            outcome: DecisionOutcome::Applied { version: None },
            at_ms: MONDAY_10 + 900_000,
        },
        &w.ctx(),
    );
    assert!(matches!(done.state.unwrap().status, Status::Approved { .. }));
}

#[test]
fn a_click_from_a_source_that_is_not_the_cards_dingtalk_app_is_refused_and_audited() {
    let w = World::new();
    let a = opened(&w, "500");
    for source in ["erp-events", "", "ns"] {
        let mut forged = click("fin", "approve", 1);
        if let Input::Click { source: s, .. } = &mut forged {
            *s = source.to_owned();
        }
        let t = apply(Some(a.clone()), &forged, &w.ctx());
        let next = t.state.expect("stored again, so the input counts as applied");
        assert_eq!(next.status, Status::Pending, "{source:?}: nothing decided");
        assert!(next.votes.is_empty(), "{source:?}: no vote counted");
        assert!(!t.effects.iter().any(|e| matches!(e, Effect::WriteBack(_))), "{source:?}: nothing written");
        assert!(!t.effects.iter().any(|e| matches!(e, Effect::CardNote { .. })), "{source:?}: nobody told");
        let audited = t.effects.iter().find_map(|e| match e {
            Effect::Audit { actor, action, detail } => Some((actor.clone(), action.clone(), detail.clone())),
            _ => None,
        });
        let (actor, action, detail) = audited.expect("audited");
        assert_eq!(action, "approval.refused");
        assert_eq!(actor, format!("source:{source}"));
        assert_eq!(detail["claimed_user"], "fin");
    }
    // The same click from the card's DingTalk source decides.
    let t = apply(Some(a), &click("fin", "approve", 1), &w.ctx());
    assert!(t.effects.iter().any(|e| matches!(e, Effect::WriteBack(_))));
}

#[test]
fn erp_text_on_the_approval_card_cannot_become_markup() {
    let w = World::new();
    let mut data = record("500", "HKD", "v1", true);
    data["number"] = json!("PR[1](http://evil)");
    data["lines"] = json!([{"item": "[Pay here](http://evil) @all", "quantity": {"value": "1", "unit": "EA"}}]);
    let a = apply(None, &record_input(data), &w.ctx()).state.expect("opens");
    let params = card_params(&a, "NetSuite");
    assert!(params["title"].contains("PR\\[1\\](http://evil)"), "{}", params["title"]);
    assert_eq!(params["lines"], "1 EA \\[Pay here\\](http://evil) @\u{2060}all", "the mention is broken too");
    assert!(!params["lines"].contains("[Pay here]"));
}
