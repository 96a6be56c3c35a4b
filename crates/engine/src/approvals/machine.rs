//! The life of one approval: what a pending ERP record, a click, the ERP's answer to a write-back
//! and the passing of time do to it.
//!
//! Every input of one approval is a job of the `approvals` destination under the approval's
//! ordering key, so inputs are applied one at a time in arrival order, on whichever gateway
//! instance claims them: two approvers clicking at once are two jobs, and the second finds the
//! request already decided. [`apply`] is pure: it returns the new state and the effects (card
//! sends and updates, notices, the ERP write-back, audit rows) for the server to carry out.

use super::policy::{self, People, Person, Route};
use super::{Action, ApprovalsConfig, PolicyConfig, Require};
use connectors::approval::{Decision, DecisionOutcome, DecisionRequest};
use model::Event;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The outbox destination of approval inputs.
pub const DESTINATION: &str = "approvals";
/// The id-link kind approval states are stored under (`left` = key, `right` = status name).
pub const LINK_KIND: &str = "approval";
/// Prefix of the `outTrackId` of approval cards.
const CARD_PREFIX: &str = "approval:";
/// The DingTalk card template of approval cards.
pub const CARD_TEMPLATE: &str = "dingbridge-approval.schema";
/// The card param that enables the buttons (the simulator page's convention).
const BUTTONS_ENABLED: &str = "canApprove";

/// `{source}:{entity}:{entity_id}`: one approval per ERP record.
pub fn approval_key(source: &str, entity: &str, entity_id: &str) -> String {
    format!("{source}:{entity}:{entity_id}")
}

/// The `outTrackId` of the approval's card.
pub fn card_id(key: &str) -> String {
    format!("{CARD_PREFIX}{key}")
}

/// What the approvals sink is given: the job payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "snake_case")]
pub enum Input {
    /// The ERP record's current state (pending or not), from a push, poll or pending list.
    Record { key: String, source: String, entity: String, entity_id: String, data: Value, at_ms: i64 },
    /// A button on the approval card was clicked. `source` is the gateway source the click came
    /// in on: only the DingTalk sources of the card's app may decide (checked again on apply).
    Click {
        key: String,
        #[serde(default)]
        source: String,
        userid: String,
        action: String,
        event_id: String,
        at_ms: i64,
    },
    /// The ERP's answer to a write-back.
    Outcome { key: String, idempotency_key: String, outcome: DecisionOutcome, at_ms: i64 },
    /// The write-back gave up (retries exhausted, or refused as malformed or unauthorised): it is
    /// a dead letter now, which `dlq retry` replays with the same key.
    WriteFailed { key: String, idempotency_key: String, reason: String, at_ms: i64 },
    /// Time passed: reminders and escalation fall due.
    Tick { key: String, at_ms: i64 },
}

impl Input {
    pub fn key(&self) -> &str {
        match self {
            Input::Record { key, .. }
            | Input::Click { key, .. }
            | Input::Outcome { key, .. }
            | Input::WriteFailed { key, .. }
            | Input::Tick { key, .. } => key,
        }
    }
}

/// The ordering key of an approval's inputs.
pub fn ordering_key(key: &str) -> String {
    format!("{DESTINATION}/{key}")
}

/// The approvals job an intake event makes, if it concerns approvals: an ERP record governed by
/// a policy, or a click on an approval card.
pub fn job_for_event(config: &ApprovalsConfig, event: &Event, now_ms: i64) -> Option<store::NewJob> {
    if config.is_empty() {
        return None;
    }
    let input = if event.entity == "card_action" {
        let key = event.entity_id.strip_prefix(CARD_PREFIX)?;
        let userid = event.data.get("userId").and_then(Value::as_str)?;
        let action = event.data.get("actionIds").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or_default();
        Input::Click {
            key: key.to_owned(),
            source: event.source.clone(),
            userid: userid.to_owned(),
            action: action.to_owned(),
            event_id: event.id.clone(),
            at_ms: event.received_at.as_millis(),
        }
    } else {
        config.policy_for(&event.source, &event.entity)?;
        Input::Record {
            key: approval_key(&event.source, &event.entity, &event.entity_id),
            source: event.source.clone(),
            entity: event.entity.clone(),
            entity_id: event.entity_id.clone(),
            data: event.data.clone(),
            at_ms: event.received_at.as_millis(),
        }
    };
    Some(input_job(&input, format!("{}:approvals", event.id), now_ms))
}

/// The job carrying `input` to the approvals sink.
pub fn input_job(input: &Input, idempotency_key: String, now_ms: i64) -> store::NewJob {
    store::NewJob {
        flow: "approvals".into(),
        destination: DESTINATION.into(),
        ordering_key: ordering_key(input.key()),
        idempotency_key,
        payload: serde_json::to_string(input).unwrap_or_default(),
        next_attempt_at: now_ms,
        coalesce: false,
    }
}

/// Where an approval stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the open step's approvers.
    Pending,
    /// Decided in DingTalk; the write-back to the ERP is under way.
    Writing {
        decision: Decision,
        by: String,
        by_name: String,
        at_ms: i64,
        idempotency_key: String,
    },
    /// Decided in DingTalk, but the write-back gave up and waits in the dead-letter queue.
    WriteFailed {
        decision: Decision,
        by: String,
        by_name: String,
        at_ms: i64,
        idempotency_key: String,
        reason: String,
    },
    Approved {
        by: String,
        by_name: String,
        at_ms: i64,
    },
    Rejected {
        by: String,
        by_name: String,
        at_ms: i64,
    },
    /// The ERP refused the write (record changed, closed, locked): a person must look.
    ChangedInErp {
        reason: String,
        at_ms: i64,
    },
    /// The record stopped waiting for approval in the ERP itself (decided there, cancelled).
    ClosedInErp {
        status: String,
        at_ms: i64,
    },
    /// No route: the policy has no band or no approver for it. Fixed in the config, then the
    /// next state of the record reopens it.
    Unroutable {
        reason: String,
    },
}

impl Status {
    /// The short name stored as the link's `right` (listed to find pending approvals).
    pub fn name(&self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Writing { .. } => "writing",
            Status::WriteFailed { .. } => "write_failed",
            Status::Approved { .. } => "approved",
            Status::Rejected { .. } => "rejected",
            Status::ChangedInErp { .. } => "changed_in_erp",
            Status::ClosedInErp { .. } => "closed_in_erp",
            Status::Unroutable { .. } => "unroutable",
        }
    }

    fn is_open(&self) -> bool {
        matches!(self, Status::Pending)
    }

    /// States from which a new pending version of the record starts a new round.
    fn reopens(&self) -> bool {
        matches!(self, Status::ChangedInErp { .. } | Status::Unroutable { .. } | Status::ClosedInErp { .. })
    }
}

/// One approval given in a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub step: usize,
    pub role: String,
    pub userid: String,
    pub name: String,
    pub at_ms: i64,
}

/// The requester, as the ERP names them and as DingTalk knows them (when mapped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requester {
    pub erp_id: Option<String>,
    pub name: Option<String>,
    pub userid: Option<String>,
}

/// The state of one approval, stored as JSON in the approval's id link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub key: String,
    pub source: String,
    pub entity: String,
    pub entity_id: String,
    pub policy: String,
    /// The canonical record as last seen (number, amount, lines, as_of, version, approval keys).
    pub record: Value,
    pub requester: Requester,
    pub route: Option<Route>,
    /// Index of the open step.
    pub step: usize,
    pub votes: Vec<Vote>,
    pub status: Status,
    /// When the open step opened (reminders and escalation count from here).
    pub step_opened_ms: i64,
    pub reminded: bool,
    /// People added to the open step by escalation.
    pub escalated_to: Vec<Person>,
    /// Round number: bumped when a changed record restarts the approval.
    pub round: u32,
}

impl Approval {
    pub fn version(&self) -> &str {
        self.record.get("version").and_then(Value::as_str).unwrap_or_default()
    }

    fn number(&self) -> String {
        text(&self.record, "/number").unwrap_or_else(|| self.entity_id.clone())
    }

    /// The people who may decide the open step now, by the role they act in.
    pub fn open_approvers(&self) -> Vec<(String, Person)> {
        let Some(route) = &self.route else { return Vec::new() };
        let Some(step) = route.steps.get(self.step) else { return Vec::new() };
        let voted_roles: Vec<&str> =
            self.votes.iter().filter(|v| v.step == self.step).map(|v| v.role.as_str()).collect();
        let mut out = Vec::new();
        for role in &step.roles {
            if step.require == Require::All && voted_roles.contains(&role.as_str()) {
                continue;
            }
            for person in step.members.get(role).into_iter().flatten() {
                out.push((role.clone(), person.clone()));
            }
        }
        for person in &self.escalated_to {
            out.push(("escalation".to_owned(), person.clone()));
        }
        out
    }
}

/// Something the server must do after a transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Send the card for the first time, with [`card_params`].
    SendCard,
    /// Bring every copy of the card up to date with [`card_params`].
    UpdateCard,
    /// Show `text` on the card to `userid` only (why their click was refused).
    CardNote { userid: String, text: String },
    /// A DingTalk work notification.
    Notify { users: Vec<String>, title: String, text: String },
    /// Write the decision to the ERP.
    WriteBack(DecisionRequest),
    /// An audit row.
    Audit { actor: String, action: String, detail: Value },
}

/// Everything [`apply`] needs besides the state.
pub struct Context<'a> {
    pub config: &'a ApprovalsConfig,
    pub people: People<'a>,
    /// The ERP's name for people ("NetSuite").
    pub erp_name: &'a str,
    /// Per policy, the DingTalk sources whose clicks may decide ([`super::decision_sources`]).
    pub decision_sources: &'a std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// The new state (`None`: nothing to store) and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub state: Option<Approval>,
    pub effects: Vec<Effect>,
}

impl Transition {
    fn none() -> Self {
        Transition { state: None, effects: Vec::new() }
    }
}

/// Applies one input to an approval.
pub fn apply(current: Option<Approval>, input: &Input, ctx: &Context<'_>) -> Transition {
    match input {
        Input::Record { key, source, entity, entity_id, data, at_ms } => {
            on_record(current, key, source, entity, entity_id, data, *at_ms, ctx)
        }
        Input::Click { source, userid, action, event_id, at_ms, .. } => match current {
            Some(state) if !click_source_allowed(&state, source, ctx) => {
                forged_click(state, source, userid, action, event_id)
            }
            Some(state) => on_click(state, userid, action, event_id, *at_ms, ctx),
            None => Transition::none(),
        },
        Input::Outcome { idempotency_key, outcome, at_ms, .. } => match current {
            Some(state) => on_outcome(state, idempotency_key, outcome, *at_ms, ctx),
            None => Transition::none(),
        },
        Input::WriteFailed { idempotency_key, reason, at_ms, .. } => match current {
            Some(state) => on_write_failed(state, idempotency_key, reason, *at_ms, ctx),
            None => Transition::none(),
        },
        Input::Tick { at_ms, .. } => match current {
            Some(state) => on_tick(state, *at_ms, ctx),
            None => Transition::none(),
        },
    }
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
}

fn audit(actor: &str, action: &str, detail: Value) -> Effect {
    Effect::Audit { actor: actor.to_owned(), action: action.to_owned(), detail }
}

fn hk_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned(jiff::tz::TimeZone::get("Asia/Hong_Kong").unwrap_or(jiff::tz::TimeZone::UTC)))
        .map(|z| z.strftime("%Y-%m-%d %H:%M HKT").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn money(record: &Value) -> Option<model::Money> {
    serde_json::from_value(record.get("amount")?.clone()).ok()
}

#[allow(clippy::too_many_arguments)]
fn on_record(
    current: Option<Approval>,
    key: &str,
    source: &str,
    entity: &str,
    entity_id: &str,
    data: &Value,
    seen_ms: i64,
    ctx: &Context<'_>,
) -> Transition {
    let Some(policy) = ctx.config.policy_for(source, entity) else { return Transition::none() };
    let pending = data.get("pending_approval").and_then(Value::as_bool).unwrap_or(false);
    let version = data.get("version").and_then(Value::as_str).unwrap_or_default().to_owned();
    match current {
        None if !pending => Transition::none(),
        None => open(None, key, source, entity, entity_id, data, policy, ctx, seen_ms),
        Some(state) if state.version() == version && state.status.is_open() == pending => Transition::none(),
        Some(state) if state.status.is_open() && !pending => {
            let status = text(data, "/status_text").or_else(|| text(data, "/status")).unwrap_or_default();
            let before = state.status.name();
            let mut state = Approval { record: data.clone(), ..state };
            state.status = Status::ClosedInErp { status: status.clone(), at_ms: seen_ms };
            let detail =
                json!({"before": before, "after": state.status.name(), "erp_status": status, "version": version});
            let effects = vec![Effect::UpdateCard, audit(&format!("erp:{source}"), "approval.closed_in_erp", detail)];
            Transition { state: Some(state), effects }
        }
        Some(state) if pending && (state.status.is_open() || state.status.reopens()) => {
            // The record changed while waiting (or after the ERP refused a write): approvals given
            // on the old version do not carry over.
            let before = json!({"status": state.status.name(), "version": state.version(), "votes": state.votes.len()});
            let mut t = open(Some(state), key, source, entity, entity_id, data, policy, ctx, seen_ms);
            if let Some(Effect::Audit { action, detail, .. }) =
                t.effects.iter_mut().find(|e| matches!(e, Effect::Audit { .. }))
            {
                *action = "approval.record_changed".into();
                detail["before"] = before;
            }
            t
        }
        // Writing, approved or rejected: later states of the record are the result of the
        // decision (or arrive after it); nothing to do.
        Some(_) => Transition::none(),
    }
}

#[allow(clippy::too_many_arguments)]
fn open(
    previous: Option<Approval>,
    key: &str,
    source: &str,
    entity: &str,
    entity_id: &str,
    data: &Value,
    policy: &PolicyConfig,
    ctx: &Context<'_>,
    seen_ms: i64,
) -> Transition {
    let erp_id = text(data, "/requester/id");
    let requester = Requester {
        userid: erp_id.as_deref().and_then(|id| ctx.people.identity.and_then(|m| m.to_dingtalk.get(id).cloned())),
        name: text(data, "/requester/name"),
        erp_id,
    };
    let routed = match money(data) {
        Some(amount) => policy::route(ctx.config, policy, &amount, requester.userid.as_deref(), ctx.people)
            .map_err(|e| e.to_string()),
        None => Err(format!("the {entity} has no amount to choose an approval band by")),
    };
    let (route, status) = match routed {
        Ok(route) => (Some(route), Status::Pending),
        Err(reason) => (None, Status::Unroutable { reason }),
    };
    let first = previous.is_none();
    let round = previous.as_ref().map(|p| p.round + 1).unwrap_or(1);
    let state = Approval {
        key: key.to_owned(),
        source: source.to_owned(),
        entity: entity.to_owned(),
        entity_id: entity_id.to_owned(),
        policy: policy.name.clone(),
        record: data.clone(),
        requester,
        route,
        step: 0,
        votes: Vec::new(),
        status,
        step_opened_ms: seen_ms,
        reminded: false,
        escalated_to: Vec::new(),
        round,
    };
    let mut effects = vec![if first { Effect::SendCard } else { Effect::UpdateCard }];
    let detail = json!({
        "after": state.status.name(),
        "version": state.version(),
        "policy": policy.name,
        "band": state.route.as_ref().map(|r| r.band),
        "amount": data.get("amount"),
        "compared": state.route.as_ref().map(|r| format!("{} {}", r.compared, r.currency)),
        "approvers": state.open_approvers().iter().map(|(role, p)| json!({"role": role, "userid": p.userid})).collect::<Vec<_>>(),
        "reason": match &state.status { Status::Unroutable { reason } => Some(reason.clone()), _ => None },
        "round": round,
    });
    let action =
        if matches!(state.status, Status::Unroutable { .. }) { "approval.unroutable" } else { "approval.opened" };
    effects.push(audit(&format!("erp:{source}"), action, detail));
    if let Some(notice) = ask_notice(&state, ctx) {
        effects.push(notice);
    }
    Transition { state: Some(state), effects }
}

/// The work notice asking the open step's approvers to decide.
fn ask_notice(state: &Approval, ctx: &Context<'_>) -> Option<Effect> {
    let users: Vec<String> = dedup(state.open_approvers().into_iter().map(|(_, p)| p.userid).collect());
    if users.is_empty() || !state.status.is_open() {
        return None;
    }
    Some(Effect::Notify {
        users,
        title: format!("Approval needed: {} {}", entity_label(&state.entity), state.number()),
        text: format!(
            "{} {} ({}) from {} waits for your decision in {}. Open the card to approve or reject.",
            entity_label(&state.entity),
            state.number(),
            amount_text(&state.record),
            state.requester.name.clone().unwrap_or_else(|| "an unknown requester".into()),
            ctx.erp_name,
        ),
    })
}

fn dedup(mut users: Vec<String>) -> Vec<String> {
    users.sort();
    users.dedup();
    users
}

fn entity_label(entity: &str) -> &'static str {
    match entity {
        "purchase_order" => "Purchase order",
        _ => "Purchase requisition",
    }
}

fn amount_text(record: &Value) -> String {
    match money(record) {
        Some(m) => format!("{} {}", m.currency, m.amount),
        None => "no amount".into(),
    }
}

/// Why a click is refused, for the card and the audit log.
fn refusal(state: Approval, userid: &str, action: &str, reason: String, event_id: &str) -> Transition {
    let detail = json!({"action": action, "reason": reason, "status": state.status.name(), "event_id": event_id});
    let effects = vec![
        Effect::CardNote { userid: userid.to_owned(), text: format!("Not accepted: {reason}") },
        audit(userid, "approval.refused", detail),
    ];
    // The state is unchanged, but stored again so the transition is recorded as applied.
    Transition { state: Some(state), effects }
}

/// Whether `source` may decide `state`: one of the DingTalk sources of its policy's card app.
/// Intake already refuses decisions from any other source; this holds even if a job were
/// written some other way.
fn click_source_allowed(state: &Approval, source: &str, ctx: &Context<'_>) -> bool {
    ctx.decision_sources.get(&state.policy).is_some_and(|sources| sources.contains(source))
}

/// A click that did not come from DingTalk: refused and audited. Nobody is told on the card:
/// the user it names did not click.
fn forged_click(state: Approval, source: &str, userid: &str, action: &str, event_id: &str) -> Transition {
    let reason = format!("the click came in on `{source}`, which is not a DingTalk source of this card's app");
    let detail = json!({"action": action, "reason": reason, "claimed_user": userid, "source": source,
        "status": state.status.name(), "event_id": event_id});
    Transition { state: Some(state), effects: vec![audit(&format!("source:{source}"), "approval.refused", detail)] }
}

fn on_click(state: Approval, userid: &str, action: &str, event_id: &str, at_ms: i64, ctx: &Context<'_>) -> Transition {
    let Some(policy) = ctx.config.policies.iter().find(|p| p.name == state.policy) else {
        return refusal(state, userid, action, "the approval policy is no longer configured".into(), event_id);
    };
    let Some(act) = Action::parse(action) else {
        return refusal(state, userid, action, format!("`{action}` is not an action of this card"), event_id);
    };
    match &state.status {
        Status::Pending => {}
        Status::Writing { by_name, decision, .. } | Status::WriteFailed { by_name, decision, .. } => {
            let reason =
                format!("{} by {by_name}; the decision is being written to {}", decision.past_tense(), ctx.erp_name);
            return refusal(state.clone(), userid, action, reason, event_id);
        }
        Status::Approved { by_name, at_ms, .. } | Status::Rejected { by_name, at_ms, .. } => {
            let what = if matches!(state.status, Status::Approved { .. }) { "approved" } else { "rejected" };
            let reason = format!("already {what} by {by_name} at {}", hk_time(*at_ms));
            return refusal(state.clone(), userid, action, reason, event_id);
        }
        Status::ChangedInErp { reason, .. } => {
            let reason = format!("the record changed in {}: {reason}; it must be reviewed there", ctx.erp_name);
            return refusal(state.clone(), userid, action, reason, event_id);
        }
        Status::ClosedInErp { status, .. } => {
            let reason = format!("it is no longer waiting for approval in {} ({status})", ctx.erp_name);
            return refusal(state.clone(), userid, action, reason, event_id);
        }
        Status::Unroutable { reason } => {
            let reason = format!("no approver can be chosen: {reason}");
            return refusal(state.clone(), userid, action, reason, event_id);
        }
    }
    if let Err(refused) = authorise(&state, policy, userid, act, ctx) {
        return refusal(state, userid, action, refused.to_string(), event_id);
    }
    let person = ctx.people.directory.user(userid);
    let name = person.map(|u| u.name.clone()).unwrap_or_else(|| userid.to_owned());
    match act {
        Action::Approve => approve(state, userid, &name, event_id, at_ms, ctx),
        Action::Reject => decide(state, Decision::Reject, userid, &name, event_id, at_ms, ctx),
        // Validation only lets actions the ERP supports into a policy; anything else is refused.
        other => refusal(
            state,
            userid,
            action,
            format!("`{}` cannot be written to {}", other.as_str(), ctx.erp_name),
            event_id,
        ),
    }
}

/// Why a person may not act on an approval. The text is shown on the card to the person who
/// clicked ("Not accepted: …") and audited, so it names who must act instead or what is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum NotAuthorised {
    #[error("{userid} is not in the company's DingTalk directory")]
    NotInDirectory { userid: String },
    #[error("{name} has left the company")]
    LeftCompany { name: String },
    #[error("{name} has no {erp} user mapped, so cannot act in {erp}")]
    NoErpUser { name: String, erp: String },
    #[error("{name} requested this; someone else must decide it (segregation of duties)")]
    OwnRequest { name: String },
    /// `step` counts from 1, as people do.
    #[error("{name} already approved step {step}; one person may not take two steps (segregation of duties)")]
    TookEarlierStep { name: String, step: usize },
    #[error("{name} holds both `{a}` and `{b}`, which may not act on the same request")]
    ExclusiveRoles { name: String, a: String, b: String },
    /// `roles` is already written as "`r1` or `r2`", `holders` as "Name A, Name B".
    #[error("{name} may not {action} this: it needs the role {roles} ({holders} in DingTalk)")]
    MissingRole { name: String, action: &'static str, roles: String, holders: String },
}

/// Whether `userid` may take `action` on the open step: known and active, mapped to a user of
/// the ERP, not the requester, not someone who took an earlier step, not holding two
/// segregated roles, and holding a role the step (or the action) asks for.
fn authorise(
    state: &Approval,
    policy: &PolicyConfig,
    userid: &str,
    action: Action,
    ctx: &Context<'_>,
) -> Result<(), NotAuthorised> {
    let Some(user) = ctx.people.directory.user(userid) else {
        return Err(NotAuthorised::NotInDirectory { userid: userid.to_owned() });
    };
    let name = user.name.clone();
    if !user.active {
        return Err(NotAuthorised::LeftCompany { name });
    }
    if let Some(identity) = ctx.people.identity {
        if !identity.to_erp.contains_key(userid) {
            return Err(NotAuthorised::NoErpUser { name, erp: ctx.erp_name.to_owned() });
        }
    }
    if state.requester.userid.as_deref() == Some(userid) {
        return Err(NotAuthorised::OwnRequest { name });
    }
    if let Some(v) = state.votes.iter().find(|v| v.userid == userid) {
        return Err(NotAuthorised::TookEarlierStep { name, step: v.step + 1 });
    }
    let requester = state.requester.userid.as_deref();
    for rule in &policy.sod {
        let (a, b) = &rule.exclusive_roles;
        let holds =
            |role: &str| policy::members(ctx.config, role, requester, ctx.people).iter().any(|p| p.userid == userid);
        if holds(a) && holds(b) {
            return Err(NotAuthorised::ExclusiveRoles { name, a: a.clone(), b: b.clone() });
        }
    }
    let allowed: Vec<String> = match action {
        Action::Approve | Action::Reject => state.open_approvers().into_iter().map(|(_, p)| p.userid).collect(),
        other => policy
            .actions
            .get(&other)
            .into_iter()
            .flatten()
            .flat_map(|role| policy::members(ctx.config, role, requester, ctx.people))
            .map(|p| p.userid)
            .collect(),
    };
    if allowed.iter().any(|u| u == userid) {
        return Ok(());
    }
    let roles: Vec<String> = match action {
        Action::Approve | Action::Reject => {
            let mut roles: Vec<String> = state.open_approvers().into_iter().map(|(role, _)| role).collect();
            roles.dedup();
            roles
        }
        other => policy.actions.get(&other).cloned().unwrap_or_default(),
    };
    Err(NotAuthorised::MissingRole {
        name,
        action: action.as_str(),
        roles: roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(" or "),
        holders: dedup(allowed).join(", "),
    })
}

fn approve(mut state: Approval, userid: &str, name: &str, event_id: &str, at_ms: i64, ctx: &Context<'_>) -> Transition {
    let approvers = state.open_approvers();
    let role = approvers.iter().find(|(_, p)| p.userid == userid).map(|(r, _)| r.clone()).unwrap_or_default();
    state.votes.push(Vote {
        step: state.step,
        role: role.clone(),
        userid: userid.to_owned(),
        name: name.to_owned(),
        at_ms,
    });
    let step_done = match state.route.as_ref().and_then(|r| r.steps.get(state.step)) {
        Some(step) if step.require == Require::All && role != "escalation" => {
            state.open_approvers().is_empty()
                || step.roles.iter().all(|r| state.votes.iter().any(|v| v.step == state.step && &v.role == r))
        }
        _ => true,
    };
    let last_step = state.route.as_ref().map(|r| state.step + 1 >= r.steps.len()).unwrap_or(true);
    if step_done && last_step {
        return decide(state, Decision::Approve, userid, name, event_id, at_ms, ctx);
    }
    let detail = json!({"step": state.step + 1, "role": role, "event_id": event_id, "version": state.version()});
    let mut effects = vec![audit(userid, "approval.step_approved", detail)];
    if step_done {
        state.step += 1;
        state.step_opened_ms = at_ms;
        state.reminded = false;
        state.escalated_to.clear();
        if let Some(notice) = ask_notice(&state, ctx) {
            effects.push(notice);
        }
    }
    effects.insert(0, Effect::UpdateCard);
    Transition { state: Some(state), effects }
}

fn decide(
    mut state: Approval,
    decision: Decision,
    userid: &str,
    name: &str,
    event_id: &str,
    at_ms: i64,
    ctx: &Context<'_>,
) -> Transition {
    let idempotency_key = format!("apr-{event_id}");
    let erp_user = ctx.people.identity.and_then(|m| m.to_erp.get(userid).cloned());
    let request = DecisionRequest {
        entity: state.entity.clone(),
        entity_id: state.entity_id.clone(),
        approval: state.record.get("approval").cloned().unwrap_or(Value::Null),
        expected_version: state.version().to_owned(),
        decision,
        comment: format!(
            "{} in DingTalk by {name} ({}) at {}",
            decision.past_tense(),
            erp_user.as_deref().unwrap_or(userid),
            hk_time(at_ms)
        ),
        idempotency_key: idempotency_key.clone(),
        erp_user,
    };
    let before = state.status.name();
    state.status =
        Status::Writing { decision, by: userid.to_owned(), by_name: name.to_owned(), at_ms, idempotency_key };
    let detail = json!({
        "decision": decision.as_str(),
        "before": before,
        "after": state.status.name(),
        "version": state.version(),
        "step": state.step + 1,
        "votes": state.votes.iter().map(|v| json!({"step": v.step + 1, "role": v.role, "userid": v.userid})).collect::<Vec<_>>(),
        "event_id": event_id,
        "idempotency_key": request.idempotency_key,
    });
    let effects = vec![Effect::UpdateCard, audit(userid, "approval.decided", detail), Effect::WriteBack(request)];
    Transition { state: Some(state), effects }
}

fn on_write_failed(mut state: Approval, key: &str, reason: &str, at_ms: i64, ctx: &Context<'_>) -> Transition {
    let Status::Writing { decision, by, by_name, idempotency_key, at_ms: decided_ms } = state.status.clone() else {
        return Transition::none();
    };
    if idempotency_key != key {
        return Transition::none();
    }
    state.status = Status::WriteFailed {
        decision,
        by: by.clone(),
        by_name,
        at_ms: decided_ms,
        idempotency_key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let detail = json!({"before": "writing", "after": state.status.name(), "decision": decision.as_str(),
        "reason": reason, "idempotency_key": key, "failed_at": hk_time(at_ms)});
    let effects = vec![
        Effect::UpdateCard,
        audit(&format!("erp:{}", state.source), "approval.writeback_failed", detail),
        Effect::Notify {
            users: vec![by],
            title: format!("{} {}: not yet in {}", entity_label(&state.entity), state.number(), ctx.erp_name),
            text: format!(
                "Your decision ({}) could not be written to {} ({reason}). It is kept as a dead letter; \
                 operations retry it with `dingbridge dlq retry`, and it is written once.",
                decision.past_tense().to_lowercase(),
                ctx.erp_name
            ),
        },
    ];
    Transition { state: Some(state), effects }
}

fn on_outcome(mut state: Approval, key: &str, outcome: &DecisionOutcome, at_ms: i64, ctx: &Context<'_>) -> Transition {
    let (Status::Writing { decision, by, by_name, idempotency_key, .. }
    | Status::WriteFailed { decision, by, by_name, idempotency_key, .. }) = state.status.clone()
    else {
        return Transition::none();
    };
    if idempotency_key != key {
        return Transition::none();
    }
    let mut effects = vec![Effect::UpdateCard];
    let before = state.status.name();
    match outcome {
        DecisionOutcome::Applied { .. } | DecisionOutcome::AlreadyApplied => {
            state.status = match decision {
                Decision::Approve => Status::Approved { by: by.clone(), by_name: by_name.clone(), at_ms },
                Decision::Reject => Status::Rejected { by: by.clone(), by_name: by_name.clone(), at_ms },
            };
            let detail = json!({"before": before, "after": state.status.name(), "decision": decision.as_str(),
                "outcome": outcome, "idempotency_key": key, "version_before": state.version()});
            effects.push(audit(&format!("erp:{}", state.source), "approval.written", detail));
            let mut told = Vec::new();
            if let Some(requester) = &state.requester.userid {
                told.push(requester.clone());
            }
            if !told.is_empty() {
                effects.push(Effect::Notify {
                    users: told,
                    title: format!(
                        "{} {} {}",
                        entity_label(&state.entity),
                        state.number(),
                        decision.past_tense().to_lowercase()
                    ),
                    text: format!(
                        "Your {} {} ({}) was {} by {by_name} at {}; {} has it.",
                        entity_label(&state.entity).to_lowercase(),
                        state.number(),
                        amount_text(&state.record),
                        decision.past_tense().to_lowercase(),
                        hk_time(at_ms),
                        ctx.erp_name
                    ),
                });
            }
        }
        DecisionOutcome::Refused { reason, current_status } => {
            state.status = Status::ChangedInErp { reason: reason.clone(), at_ms };
            let detail = json!({"before": before, "after": state.status.name(), "decision": decision.as_str(),
                "reason": reason, "erp_status": current_status, "idempotency_key": key});
            effects.push(audit(&format!("erp:{}", state.source), "approval.writeback_refused", detail));
            effects.push(Effect::Notify {
                users: vec![by.clone()],
                title: format!("{} {}: changed in {}", entity_label(&state.entity), state.number(), ctx.erp_name),
                text: format!(
                    "Your decision ({}) was not written: {reason}. Please review it in {}.",
                    decision.past_tense().to_lowercase(),
                    ctx.erp_name
                ),
            });
        }
    }
    Transition { state: Some(state), effects }
}

fn on_tick(mut state: Approval, now_ms: i64, ctx: &Context<'_>) -> Transition {
    if !state.status.is_open() {
        return Transition::none();
    }
    let Some(policy) = ctx.config.policies.iter().find(|p| p.name == state.policy) else { return Transition::none() };
    let due = due_times(&state, policy, ctx.config);
    let mut effects = Vec::new();
    if let Some(escalate_at) = due.escalate_ms {
        if now_ms >= escalate_at && state.escalated_to.is_empty() {
            if let Some(role) = &policy.escalate_to {
                let current: Vec<String> = state.open_approvers().into_iter().map(|(_, p)| p.userid).collect();
                let added: Vec<Person> =
                    policy::members(ctx.config, role, state.requester.userid.as_deref(), ctx.people)
                        .into_iter()
                        .filter(|p| !current.contains(&p.userid) && !state.votes.iter().any(|v| v.userid == p.userid))
                        .collect();
                if !added.is_empty() {
                    state.escalated_to = added.clone();
                    state.reminded = true;
                    let detail = json!({"step": state.step + 1, "to_role": role,
                        "added": added.iter().map(|p| p.userid.clone()).collect::<Vec<_>>(), "waiting_since": hk_time(state.step_opened_ms)});
                    effects.push(Effect::UpdateCard);
                    effects.push(audit("dingbridge", "approval.escalated", detail));
                    effects.push(Effect::Notify {
                        users: added.iter().map(|p| p.userid.clone()).collect(),
                        title: format!("Escalated to you: {} {}", entity_label(&state.entity), state.number()),
                        text: format!(
                            "{} {} ({}) has waited since {} for its approvers; as `{role}` you may now decide it.",
                            entity_label(&state.entity),
                            state.number(),
                            amount_text(&state.record),
                            hk_time(state.step_opened_ms)
                        ),
                    });
                    return Transition { state: Some(state), effects };
                }
            }
        }
    }
    if let Some(remind_at) = due.remind_ms {
        if now_ms >= remind_at && !state.reminded {
            state.reminded = true;
            let users = dedup(state.open_approvers().into_iter().map(|(_, p)| p.userid).collect());
            let detail =
                json!({"step": state.step + 1, "users": users, "waiting_since": hk_time(state.step_opened_ms)});
            effects.push(audit("dingbridge", "approval.reminded", detail));
            effects.push(Effect::Notify {
                users,
                title: format!("Reminder: {} {} waits for you", entity_label(&state.entity), state.number()),
                text: format!(
                    "{} {} ({}) has waited since {}. Please approve or reject it on the card.",
                    entity_label(&state.entity),
                    state.number(),
                    amount_text(&state.record),
                    hk_time(state.step_opened_ms)
                ),
            });
            return Transition { state: Some(state), effects };
        }
    }
    Transition::none()
}

/// When the open step's reminder and escalation fall due, in business time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueTimes {
    pub remind_ms: Option<i64>,
    pub escalate_ms: Option<i64>,
}

pub fn due_times(state: &Approval, policy: &PolicyConfig, config: &ApprovalsConfig) -> DueTimes {
    let Ok(opened) = jiff::Timestamp::from_millisecond(state.step_opened_ms) else {
        return DueTimes { remind_ms: None, escalate_ms: None };
    };
    let at = |d: Option<std::time::Duration>| d.map(|d| config.calendar.add_business_time(opened, d).as_millisecond());
    DueTimes { remind_ms: at(policy.remind_after), escalate_ms: at(policy.escalate_after) }
}

/// The next instant a tick could change `state` (the timer loop sleeps until then).
pub fn next_due(state: &Approval, config: &ApprovalsConfig) -> Option<i64> {
    if !state.status.is_open() {
        return None;
    }
    let policy = config.policies.iter().find(|p| p.name == state.policy)?;
    let due = due_times(state, policy, config);
    let remind = if state.reminded { None } else { due.remind_ms };
    let escalate = if state.escalated_to.is_empty() { due.escalate_ms } else { None };
    [remind, escalate].into_iter().flatten().min()
}

/// The shared params of the approval card in its current state.
/// The approval card's fields. What the ERP wrote (item texts, the requester's name, the
/// document number, its status and reasons) is escaped for DingTalk markdown: an ERP user must
/// not be able to put a link or an `@all` on a finance group's card.
pub fn card_params(state: &Approval, erp_name: &str) -> std::collections::BTreeMap<String, String> {
    use connectors::dingtalk::markdown::escape_markdown as md;
    let r = &state.record;
    let lines = r
        .get("lines")
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .map(|l| {
                    let q = |p: &str| l.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
                    let item = text(l, "/item").or_else(|| text(l, "/description")).unwrap_or_default();
                    format!("{} {} {item}", q("/quantity/value"), q("/quantity/unit")).trim().to_owned()
                })
                .map(|line| md(&line))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let status = match &state.status {
        Status::Pending => {
            let who = dedup(state.open_approvers().into_iter().map(|(_, p)| p.name).collect()).join(", ");
            let steps = state.route.as_ref().map(|r| r.steps.len()).unwrap_or(1);
            let done = state
                .votes
                .iter()
                .map(|v| format!("step {} approved by {} at {}", v.step + 1, v.name, hk_time(v.at_ms)))
                .collect::<Vec<_>>();
            let mut s = format!("Waiting for {who} (step {} of {steps})", state.step + 1);
            if !done.is_empty() {
                s = format!("{}; {s}", done.join("; "));
            }
            s
        }
        Status::Writing { decision, by_name, at_ms, .. } => {
            format!("{} by {by_name} at {}; writing to {erp_name}…", decision.past_tense(), hk_time(*at_ms))
        }
        Status::WriteFailed { decision, by_name, at_ms, reason, .. } => format!(
            "{} by {by_name} at {}; NOT yet in {erp_name}: {reason} (kept for retry by operations)",
            decision.past_tense(),
            hk_time(*at_ms)
        ),
        Status::Approved { by_name, at_ms, .. } => format!("Approved by {by_name} at {}", hk_time(*at_ms)),
        Status::Rejected { by_name, at_ms, .. } => format!("Rejected by {by_name} at {}", hk_time(*at_ms)),
        Status::ChangedInErp { reason, .. } => format!("Changed in {erp_name} — please review: {}", md(reason)),
        Status::ClosedInErp { status, .. } => format!("No longer waiting for approval in {erp_name} ({})", md(status)),
        Status::Unroutable { reason } => format!("Cannot be routed: {}", md(reason)),
    };
    let buttons = json!([
        {"id": "approve", "label": "Approve", "enabledIf": BUTTONS_ENABLED},
        {"id": "reject", "label": "Reject", "enabledIf": BUTTONS_ENABLED},
    ]);
    let mut params = std::collections::BTreeMap::new();
    params.insert("title".into(), format!("{} {} ({erp_name})", entity_label(&state.entity), md(&state.number())));
    params.insert("amount".into(), amount_text(r));
    params.insert(
        "requester".into(),
        md(&state
            .requester
            .name
            .clone()
            .or_else(|| state.requester.erp_id.clone())
            .unwrap_or_else(|| "unknown".into())),
    );
    params.insert("lines".into(), lines);
    params.insert(
        "as_of".into(),
        r.get("as_of")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| hk_time(t.as_millisecond()))
            .unwrap_or_else(|| "unknown".into()),
    );
    params.insert("status".into(), status);
    params.insert("actions".into(), buttons.to_string());
    params.insert(BUTTONS_ENABLED.into(), state.status.is_open().to_string());
    params
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
