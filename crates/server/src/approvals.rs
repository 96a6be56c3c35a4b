//! Approvals in the gateway: the sink that applies approval inputs (records, clicks, ERP answers,
//! timer ticks) through [`engine::approvals::machine`], the sinks that write decisions to each
//! ERP, the keeper of each ERP's user list, and the timer that makes reminders and escalations
//! fall due.
//!
//! One approval's inputs are jobs under one ordering key, so they are applied one at a time
//! (per-key FIFO holds across gateway instances). Applying an input commits, in this order:
//! the jobs its effects need (one intake, de-duplicated on the input job's key, so a retry after
//! a crash adds nothing), the audit rows, then the new state with the input's key recorded as
//! applied (a retry after that finds it and does nothing).

use crate::error::StateError;
use crate::hooks::commit;
use crate::sources::ErpSource;
use crate::state::AppState;
use crate::supervisor::{pause, OnFailure, TaskError};
use async_trait::async_trait;
use connect::{Delivery, DeliveryError, Idempotency, Receipt, Sink};
use connectors::approval::{DecisionOutcome, DecisionRequest, ErpUser};
use connectors::dingtalk::directory::DirectorySnapshot;
use engine::approvals::identity::{map_identities, IdentityMap};
use engine::approvals::machine::{self, Approval, Context, Effect, Input};
use engine::approvals::policy::People;
use engine::approvals::{ApprovalsConfig, Delivery as CardDelivery};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Inputs remembered per approval as applied (a retried job finds itself here).
const APPLIED_MEMORY: usize = 32;
/// How often pending approvals are looked at for reminders and escalation.
pub const TIMER_PERIOD: Duration = Duration::from_secs(2);
/// How often each ERP's user list is read again.
const USERS_REFRESH: Duration = Duration::from_secs(6 * 60 * 60);
/// Wait before reading a user list again after a failure.
const USERS_RETRY: Duration = Duration::from_secs(60);

/// The outbox destination of an ERP source's decision write-backs.
pub fn write_back_destination(source: &str) -> String {
    format!("erp-approve:{source}")
}

/// The store cursor holding an ERP source's user list (JSON array of [`ErpUser`]).
pub fn users_cursor(source: &str) -> String {
    format!("erp.users.{source}")
}

/// What approvals need at run time.
pub struct Approvals {
    pub config: Arc<ApprovalsConfig>,
    /// The ERP sources named by a policy, by source name.
    pub sources: BTreeMap<String, Arc<ErpSource>>,
    /// The DingTalk app whose directory says who is who (the app of the policies' destinations).
    pub app: String,
    /// That app's directory keeper, when the gateway keeps it in memory (`sync_directory`).
    pub keeper: Option<Arc<crate::directory::DirectoryKeeper>>,
    /// Per policy, the DingTalk sources whose clicks may decide.
    pub decision_sources: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Per policy, how its cards call back (absent: Stream).
    pub card_callbacks: BTreeMap<String, engine::approvals::CardCallbackMode>,
}

impl Approvals {
    async fn directory(&self, state: &AppState) -> Result<DirectorySnapshot, DeliveryError> {
        let current = match &self.keeper {
            Some(keeper) => keeper.current().await,
            None => crate::directory::load(state.store.as_ref(), &self.app).await,
        };
        match current {
            Ok(Some(snapshot)) => Ok(snapshot),
            Ok(None) => Err(DeliveryError::Transport {
                endpoint: "dingtalk directory".into(),
                reason: format!("the directory of DingTalk app `{}` has not been synced yet", self.app),
            }),
            Err(err) => {
                Err(DeliveryError::Transport { endpoint: "dingtalk directory".into(), reason: err.to_string() })
            }
        }
    }

    /// The identity map of `source`, or `None` when it has no `[identity.*]` section.
    async fn identity(
        &self,
        state: &AppState,
        source: &str,
        directory: &DirectorySnapshot,
    ) -> Result<Option<IdentityMap>, DeliveryError> {
        let Some(config) = self.config.identity.get(source) else { return Ok(None) };
        let users = load_users(state.store.as_ref(), source).await.map_err(store_error)?;
        // Rules match against the ERP's people: until their list has been read, nobody could be
        // matched, and a requester who cannot be recognised could approve their own request.
        let Some(users) = users.or_else(|| config.rules.is_empty().then(Vec::new)) else {
            return Err(DeliveryError::Transport {
                endpoint: format!("{source} users"),
                reason: format!("the user list of `{source}` has not been read yet"),
            });
        };
        Ok(Some(map_identities(config, directory, &users)))
    }
}

/// The stored user list of an ERP source; `None` when it has never been read.
pub async fn load_users(store: &dyn store::Store, source: &str) -> Result<Option<Vec<ErpUser>>, StateError> {
    match store.get_cursor(&users_cursor(source)).await? {
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StateError::Unreadable { what: format!("users of {source}"), reason: e.to_string() }),
        None => Ok(None),
    }
}

/// The intake that hands `input` to the approval: one job under the approval's ordering key,
/// stored (and de-duplicated) under `dedup_key`.
fn input_intake(source: &str, dedup_key: String, input: &Input, event: Value, now: i64) -> store::Intake {
    store::Intake {
        dedup_key: dedup_key.clone(),
        event_id: uuid::Uuid::now_v7().to_string(),
        source: source.to_owned(),
        received_at: now,
        event_json: event.to_string(),
        jobs: vec![machine::input_job(input, dedup_key, now)],
        dead_letter: None,
    }
}

fn store_error(err: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Transport { endpoint: "store".into(), reason: err.to_string() }
}

/// Applies approval inputs (destination [`machine::DESTINATION`]).
pub struct ApprovalSink {
    pub approvals: Arc<Approvals>,
    pub state: AppState,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    approval: Approval,
    /// Idempotency keys of the inputs applied last.
    applied: Vec<String>,
}

#[async_trait]
impl Sink for ApprovalSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let state = &self.state;
        let input: Input = serde_json::from_value(delivery.payload.clone()).map_err(|e| DeliveryError::BadPayload {
            destination: delivery.destination.clone(),
            detail: format!("not an approval input: {e}"),
        })?;
        let key = input.key().to_owned();
        let span =
            tracing::info_span!("approval", approval = %key, flow = "approvals", job = %delivery.idempotency_key);
        let _guard = span.enter();
        let stored: Option<Stored> = match state.store.get_link(machine::LINK_KIND, &key).await.map_err(store_error)? {
            Some(link) => link.data.as_deref().and_then(|d| serde_json::from_str(d).ok()),
            None => None,
        };
        if stored.as_ref().is_some_and(|s| s.applied.contains(&delivery.idempotency_key)) {
            return Ok(Receipt { vendor_id: None, detail: Some("already applied".into()) });
        }
        let source_name = match &input {
            Input::Record { source, .. } => source.clone(),
            _ => match &stored {
                Some(s) => s.approval.source.clone(),
                None => return Ok(Receipt { vendor_id: None, detail: Some("no such approval".into()) }),
            },
        };
        let Some(source) = self.approvals.sources.get(&source_name) else {
            return Err(DeliveryError::BadPayload {
                destination: delivery.destination.clone(),
                detail: format!("source `{source_name}` is not an ERP source of an approval policy"),
            });
        };
        let directory = self.approvals.directory(state).await?;
        let identity = self.approvals.identity(state, &source_name, &directory).await?;
        let erp = source.system.display_name();
        let ctx = Context {
            config: &self.approvals.config,
            people: People { directory: &directory, identity: identity.as_ref() },
            erp_name: erp,
            decision_sources: &self.approvals.decision_sources,
        };
        let (current, mut applied) = match stored {
            Some(s) => (Some(s.approval), s.applied),
            None => (None, Vec::new()),
        };
        let transition = machine::apply(current, &input, &ctx);
        let Some(next) = transition.state else {
            return Ok(Receipt { vendor_id: None, detail: Some("nothing to do".into()) });
        };
        let now = state.clock.now_millis();
        // 1. The effects' jobs, committed once whatever happens next.
        let jobs = self.effect_jobs(&next, &transition.effects, &delivery.idempotency_key, erp, now);
        if !jobs.is_empty() {
            let intake = store::Intake {
                dedup_key: format!("approvals:{}", delivery.idempotency_key),
                event_id: uuid::Uuid::now_v7().to_string(),
                source: "approvals".into(),
                received_at: now,
                event_json: json!({"approval": key, "status": next.status.name(),
                    "effects": transition.effects.iter().map(effect_name).collect::<Vec<_>>()})
                .to_string(),
                jobs,
                dead_letter: None,
            };
            // Cards with HTTP callbacks: who may click them is recorded as for any card.
            let card_recipients = crate::pipeline::card_recipients(&intake.jobs, now);
            let planned = crate::Planned { intake, refused: None, card_recipients };
            commit(state, "approvals", planned).await.map_err(|e| store_error(e.message))?;
        }
        // 2. The audit rows.
        for effect in &transition.effects {
            if let Effect::Audit { actor, action, detail } = effect {
                let entry = store::NewAuditEntry {
                    at: now,
                    actor: actor.clone(),
                    action: action.clone(),
                    subject: key.clone(),
                    detail: detail.to_string(),
                };
                state.store.audit_append(&entry).await.map_err(store_error)?;
                tracing::info!(action = %action, actor = %actor, "Approval audited.");
            }
        }
        // 3. The state, with this input recorded as applied.
        applied.push(delivery.idempotency_key.clone());
        if applied.len() > APPLIED_MEMORY {
            applied.drain(..applied.len() - APPLIED_MEMORY);
        }
        let status = next.status.name();
        let link = store::IdLink {
            kind: machine::LINK_KIND.into(),
            left: key.clone(),
            right: status.into(),
            data: Some(serde_json::to_string(&Stored { approval: next, applied }).map_err(store_error)?),
            updated_at: now,
        };
        state.store.put_link(&link).await.map_err(store_error)?;
        (state.nudge)();
        Ok(Receipt { vendor_id: None, detail: Some(format!("approval {status}")) })
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Honoured
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::SendCard => "send_card",
        Effect::UpdateCard => "update_card",
        Effect::CardNote { .. } => "card_note",
        Effect::Notify { .. } => "notify",
        Effect::WriteBack(_) => "write_back",
        Effect::Audit { .. } => "audit",
    }
}

impl ApprovalSink {
    /// One outbox job per effect that leaves the gateway.
    fn effect_jobs(
        &self,
        approval: &Approval,
        effects: &[Effect],
        input_key: &str,
        erp: &str,
        now: i64,
    ) -> Vec<store::NewJob> {
        let Some(policy) = self.approvals.config.policies.iter().find(|p| p.name == approval.policy) else {
            return Vec::new();
        };
        let (destination, group) = match &policy.delivery {
            CardDelivery::Card { destination, group } => (destination.clone(), group.clone()),
            CardDelivery::Oa { destination, .. } => (destination.clone(), None),
        };
        let card_id = machine::card_id(&approval.key);
        let card_order = format!("{destination}/{card_id}");
        let notice_order = format!("{destination}/notice:{}", approval.key);
        let params = || machine::card_params(approval, erp);
        let mut jobs = Vec::new();
        for (i, effect) in effects.iter().enumerate() {
            let (destination, ordering_key, payload) = match effect {
                Effect::SendCard => {
                    let mut card = json!({
                        "api": "card",
                        "template_id": machine::CARD_TEMPLATE,
                        "out_track_id": card_id,
                        "params": params(),
                    });
                    match &group {
                        Some(group) => card["group"] = json!(group),
                        None => {
                            let mut users: Vec<String> =
                                approval.open_approvers().into_iter().map(|(_, p)| p.userid).collect();
                            users.sort();
                            users.dedup();
                            card["users"] = json!(users);
                        }
                    }
                    // Stream, unless the policy lets clicks come over HTTP card callbacks and the
                    // card app has no Stream source.
                    match self.approvals.card_callbacks.get(&policy.name) {
                        Some(engine::approvals::CardCallbackMode::Http) => {
                            card["callback"] = json!("http");
                            card["callback_route_key"] = json!(engine::approvals::APPROVAL_CARD_ROUTE_KEY);
                        }
                        _ => card["callback"] = json!("stream"),
                    }
                    (destination.clone(), card_order.clone(), card)
                }
                Effect::UpdateCard => (
                    destination.clone(),
                    card_order.clone(),
                    json!({"api": "card_update", "out_track_id": card_id, "params": params()}),
                ),
                Effect::CardNote { userid, text } => (
                    destination.clone(),
                    card_order.clone(),
                    json!({"api": "card_update", "out_track_id": card_id, "params": {},
                        "private_to": [userid], "private_params": {"note": text}}),
                ),
                Effect::Notify { users, title, text } => (
                    destination.clone(),
                    notice_order.clone(),
                    json!({"api": "work_notice", "users": users, "title": title, "text": text}),
                ),
                Effect::WriteBack(request) => (
                    write_back_destination(&approval.source),
                    format!("{}/{}", write_back_destination(&approval.source), approval.key),
                    json!({"key": approval.key, "request": request}),
                ),
                Effect::Audit { .. } => continue,
            };
            let idempotency_key = match effect {
                Effect::WriteBack(request) => request.idempotency_key.clone(),
                _ => format!("{input_key}:e{i}"),
            };
            jobs.push(store::NewJob {
                flow: "approvals".into(),
                destination,
                ordering_key,
                idempotency_key,
                payload: payload.to_string(),
                next_attempt_at: now,
                coalesce: false,
            });
        }
        jobs
    }
}

/// Writes decisions to one ERP source (destination [`write_back_destination`]) and hands the
/// ERP's answer back to the approval as an input.
pub struct WriteBackSink {
    pub source: Arc<ErpSource>,
    pub state: AppState,
    /// The delivery schedule's last attempt: a failure then is a dead letter.
    pub max_attempts: u32,
}

#[async_trait]
impl Sink for WriteBackSink {
    async fn deliver(&self, delivery: &Delivery) -> Result<Receipt, DeliveryError> {
        let bad = |detail: String| DeliveryError::BadPayload { destination: delivery.destination.clone(), detail };
        let key = delivery.payload.get("key").and_then(Value::as_str).ok_or_else(|| bad("no approval key".into()))?;
        let request: DecisionRequest =
            serde_json::from_value(delivery.payload.get("request").cloned().unwrap_or_default())
                .map_err(|e| bad(format!("not a decision: {e}")))?;
        let span = tracing::info_span!("approval_write_back", approval = %key, flow = "approvals",
            source = %self.source.name, decision = request.decision.as_str());
        let _guard = span.enter();
        let state = &self.state;
        let outcome = match self.source.write_back.decide(&request).await {
            Ok(outcome) => outcome,
            Err(err) => {
                let last = delivery.attempt >= self.max_attempts
                    || matches!(err.disposition(), connect::Disposition::Permanent);
                if last {
                    // The worker dead-letters it next: the approval and its card say so.
                    let now = state.clock.now_millis();
                    let input = Input::WriteFailed {
                        key: key.to_owned(),
                        idempotency_key: request.idempotency_key.clone(),
                        reason: err.to_string(),
                        at_ms: now,
                    };
                    let failed_key = format!("{}:failed:{}", delivery.idempotency_key, delivery.attempt);
                    let event = json!({"approval": key, "write_back_failed": err.to_string()});
                    let intake = input_intake(&self.source.name, failed_key, &input, event, now);
                    if let Err(e) = commit(state, &self.source.name, intake).await {
                        tracing::warn!("The failed write-back could not be recorded on the approval: {}", e.message);
                    }
                }
                return Err(err);
            }
        };
        tracing::info!(outcome = ?outcome, "Decision written back.");
        let now = state.clock.now_millis();
        let input = Input::Outcome {
            key: key.to_owned(),
            idempotency_key: request.idempotency_key.clone(),
            outcome: outcome.clone(),
            at_ms: now,
        };
        let answer_key = format!("{}:outcome", delivery.idempotency_key);
        let event = json!({"approval": key, "outcome": outcome});
        let intake = input_intake(&self.source.name, answer_key, &input, event, now);
        commit(state, &self.source.name, intake).await.map_err(|e| store_error(e.message))?;
        let detail = match &outcome {
            DecisionOutcome::Applied { .. } => "applied".to_owned(),
            DecisionOutcome::AlreadyApplied => "already applied".to_owned(),
            DecisionOutcome::Refused { reason, .. } => format!("refused: {reason}"),
        };
        Ok(Receipt { vendor_id: None, detail: Some(detail) })
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Honoured
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        Ok(())
    }
}

/// Reads each ERP source's user list now and every [`USERS_REFRESH`] (sooner after a failure),
/// keeping it in the store for identity mapping and `dingbridge check`.
pub fn spawn_user_sync(state: &AppState, approvals: &Approvals) {
    for (name, source) in &approvals.sources {
        if approvals.config.identity.get(name).is_none_or(|i| i.rules.is_empty()) {
            continue;
        }
        let (task_state, source) = (state.clone(), source.clone());
        state.tasks.spawn_singleton(format!("approval-users:{name}"), OnFailure::Restart, move |cancel| {
            user_sync_loop(task_state.clone(), source.clone(), cancel)
        });
    }
}

async fn user_sync_loop(state: AppState, source: Arc<ErpSource>, cancel: CancellationToken) -> Result<(), TaskError> {
    loop {
        let wait = match sync_users(&state, &source).await {
            Ok(count) => {
                tracing::info!(source = %source.name, users = count, "ERP user list read.");
                USERS_REFRESH
            }
            Err(err) => {
                tracing::warn!(source = %source.name, "Reading the ERP user list failed; will try again: {err}");
                USERS_RETRY
            }
        };
        if !pause(&cancel, wait).await {
            return Ok(());
        }
    }
}

/// Reads one ERP source's users and stores them; returns how many.
pub async fn sync_users(state: &AppState, source: &ErpSource) -> Result<usize, DeliveryError> {
    let users = source.write_back.users().await?;
    let text = serde_json::to_string(&users).map_err(store_error)?;
    state.store.put_cursor(&users_cursor(&source.name), &text, state.clock.now_millis()).await.map_err(store_error)?;
    Ok(users.len())
}

/// Every [`TIMER_PERIOD`], commits a tick for each pending approval whose reminder or
/// escalation is due. A tick is stored under (approval, round, step, due time), so each falls
/// due once however often the timer looks.
pub async fn timer_loop(
    state: AppState,
    approvals: Arc<Approvals>,
    cancel: CancellationToken,
) -> Result<(), TaskError> {
    loop {
        if let Err(err) = tick_due(&state, &approvals).await {
            tracing::warn!("Approval timer could not run; will try again: {err}");
        }
        if !pause(&cancel, TIMER_PERIOD).await {
            return Ok(());
        }
    }
}

/// One look at the pending approvals (tests and the demo call it directly too).
pub async fn tick_due(state: &AppState, approvals: &Approvals) -> Result<usize, StateError> {
    let now = state.clock.now_millis();
    let mut after = String::new();
    let mut ticks = Vec::new();
    loop {
        let page = state.store.list_links(machine::LINK_KIND, Some("pending"), &after, 500).await?;
        let Some(last) = page.last() else { break };
        after = last.left.clone();
        for link in &page {
            let Some(stored) = link.data.as_deref().and_then(|d| serde_json::from_str::<Stored>(d).ok()) else {
                continue;
            };
            let approval = stored.approval;
            let Some(due) = machine::next_due(&approval, &approvals.config) else { continue };
            if due > now {
                continue;
            }
            let dedup_key = format!("approval-tick:{}:{}:{}:{due}", approval.key, approval.round, approval.step);
            let input = Input::Tick { key: approval.key.clone(), at_ms: now };
            let event = json!({"approval": approval.key, "tick": due});
            ticks.push(input_intake("approvals", dedup_key, &input, event, now));
        }
    }
    let count = ticks.len();
    if count > 0 {
        crate::reads::commit_all(state, "approvals", ticks).await?;
    }
    Ok(count)
}

/// The stored state of one approval (admin API, tests, the demo).
pub async fn load(state: &AppState, key: &str) -> Result<Option<Approval>, StateError> {
    let link = state.store.get_link(machine::LINK_KIND, key).await?;
    Ok(link.and_then(|l| l.data).and_then(|d| serde_json::from_str::<Stored>(&d).ok()).map(|s| s.approval))
}
