//! The gateway's intake pipeline: authenticate, decode, run the flows. Implements `server::IntakePlanner`
//! for signed webhooks and for DingTalk events (HTTP callbacks and Stream).

use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use connect::webhook::WebhookVerifier;
use connectors::dingtalk::source::is_decision_entity;
use engine::flow::{DecodeError, FlowEngine};
use model::InboundChange;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub struct WebhookPipeline {
    pub verifiers: BTreeMap<String, WebhookVerifier>,
    /// The DingTalk sources in HTTP callback mode, by source name.
    pub flows: Arc<FlowEngine>,
    /// Approval policies: ERP records they govern and clicks on approval cards also become
    /// approval inputs.
    pub approvals: Arc<engine::approvals::ApprovalsConfig>,
    /// The DingTalk sources (Stream or encrypted HTTP callback): the only ones whose events may
    /// say what a person decided ([`is_decision_entity`]).
    pub decision_sources: BTreeSet<String>,
}

impl crate::IntakePlanner for WebhookPipeline {
    fn has_source(&self, source: &str) -> bool {
        self.verifiers.contains_key(source)
    }

    fn webhook(
        &self,
        source: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: jiff::Timestamp,
    ) -> Result<crate::Planned, ApiError> {
        let verifier = self.verifiers.get(source).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_source", format!("no webhook source named `{source}`"))
        })?;
        let verified = verifier.verify(headers, body, now).map_err(|err| {
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            ApiError::new(status, err.code(), err.to_string())
        })?;
        let received_at = model::ZonedTime::from(now);
        let event_id = uuid::Uuid::now_v7().to_string();
        let decoded = self.flows.decode_webhook(source, &verified.id, body, received_at, event_id.clone());
        self.intake(source, format!("{source}:{}", verified.id), event_id, now, decoded)
    }

    fn unreadable(
        &self,
        source: &str,
        dedup_key: &str,
        raw: serde_json::Value,
        reason: String,
        now: jiff::Timestamp,
    ) -> Result<store::Intake, ApiError> {
        let event_id = uuid::Uuid::now_v7().to_string();
        let envelope = serde_json::json!({ "id": event_id, "source": source, "raw": raw });
        let decoded = Err(DecodeError::Invalid { reason, envelope });
        self.intake(source, format!("{source}:{dedup_key}"), event_id, now, decoded).map(|planned| planned.intake)
    }

    fn inbound(&self, source: &str, inbound: &InboundChange, now: jiff::Timestamp) -> Result<crate::Planned, ApiError> {
        let event_id = uuid::Uuid::now_v7().to_string();
        let decoded = self.flows.decode_inbound(source, inbound, model::ZonedTime::from(now), event_id.clone());
        self.intake(source, format!("{source}:{}", inbound.dedup_key), event_id, now, decoded)
    }
}

impl WebhookPipeline {
    /// What one decoded (or undecodable) event commits: the inbox row under `dedup_key`, the jobs
    /// the flows plan, or a dead letter with the reason.
    fn intake(
        &self,
        source: &str,
        dedup_key: String,
        event_id: String,
        now: jiff::Timestamp,
        decoded: Result<model::Event, DecodeError>,
    ) -> Result<crate::Planned, ApiError> {
        let now_ms = now.as_millisecond();
        let mut intake = store::Intake {
            dedup_key,
            event_id: event_id.clone(),
            source: source.to_string(),
            received_at: now_ms,
            event_json: String::new(),
            jobs: Vec::new(),
            dead_letter: None,
        };
        match decoded {
            Ok(event) if is_decision_entity(&event.entity) && !self.decision_sources.contains(source) => {
                return Ok(refuse_decision(intake, &event));
            }
            Ok(event) => {
                intake.event_json = serde_json::to_string(&event).unwrap_or_default();
                match self.flows.plan(&event, now_ms) {
                    Ok(jobs) => {
                        intake.jobs = jobs;
                        intake.jobs.extend(engine::approvals::machine::job_for_event(&self.approvals, &event, now_ms));
                    }
                    Err(err) => {
                        tracing::error!(event_id = %event.id, source, "Event dead-lettered: flows could not run: {err}");
                        intake.dead_letter = Some(store::NewDeadLetter { reason: err.to_string() });
                    }
                }
            }
            Err(DecodeError::UnknownSource(name)) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_source",
                    format!("no source named `{name}`"),
                ));
            }
            Err(DecodeError::Malformed(reason)) => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", reason));
            }
            Err(err @ DecodeError::Invalid { .. }) => {
                // Authentic and well-formed, but a typed field is wrong: keep it as a dead letter
                // so an operator sees it; the sender's retry would not fix it.
                tracing::error!(event_id = %intake.event_id, source, "Event dead-lettered: {err}");
                if let DecodeError::Invalid { envelope, .. } = &err {
                    intake.event_json = envelope.to_string();
                }
                intake.dead_letter = Some(store::NewDeadLetter { reason: err.to_string() });
            }
        }
        let card_recipients = card_recipients(&intake.jobs, now_ms);
        Ok(crate::Planned { intake, refused: None, card_recipients })
    }
}

/// Who may click the HTTP-callback cards among `jobs`: the card's `users` (robot chat), or its
/// `group`. Card clicks over HTTP carry no signature, so the card-callback route checks the
/// clicker against this (Stream clicks come over the app's own authenticated connection).
pub(crate) fn card_recipients(jobs: &[store::NewJob], now_ms: i64) -> Vec<store::IdLink> {
    jobs.iter()
        .filter(|job| job.payload.contains("\"callback\":\"http\""))
        .filter_map(|job| serde_json::from_str::<serde_json::Value>(&job.payload).ok())
        .filter(|card| card["api"] == "card" && card["callback"] == "http")
        .filter_map(|card| {
            let out_track_id = card["out_track_id"].as_str()?.to_owned();
            let recipients = serde_json::json!({"group": card.get("group"), "users": card.get("users")});
            Some(store::IdLink {
                kind: crate::dingtalk::CARD_RECIPIENTS.into(),
                left: out_track_id,
                right: String::new(),
                data: Some(recipients.to_string()),
                updated_at: now_ms,
            })
        })
        .collect()
}

/// A decision (a click, an approval, a bot message) from a source that is not DingTalk: a
/// forgery by whoever holds that source's credentials. Nothing reaches a flow or an approval;
/// the event is kept as a dead letter, the sender gets 422 and the audit log a row.
fn refuse_decision(mut intake: store::Intake, event: &model::Event) -> crate::Planned {
    let source = &event.source;
    let entity = &event.entity;
    let reason = format!(
        "`{entity}` events record what a person did in DingTalk, and only a DingTalk source may send them; \
         `{source}` is not one, so the event was refused"
    );
    tracing::warn!(event_id = %event.id, source = %source, entity = %entity, entity_id = %event.entity_id,
        "Decision from a source that is not DingTalk refused.");
    intake.event_json = serde_json::to_string(event).unwrap_or_default();
    intake.jobs.clear();
    intake.dead_letter = Some(store::NewDeadLetter { reason: format!("{DECISION_REFUSED}: {reason}") });
    // Who the request claims acted, so an auditor sees whose name was used.
    let claimed = event.data.get("userId").or_else(|| event.data.get("staffId")).and_then(serde_json::Value::as_str);
    let detail = serde_json::json!({
        "code": DECISION_REFUSED,
        "reason": reason,
        "event_id": event.id,
        "entity": entity,
        "entity_id": event.entity_id,
        "claimed_user": claimed,
        "dedup_key": intake.dedup_key,
    });
    let audit = store::NewAuditEntry {
        at: intake.received_at,
        actor: format!("source:{source}"),
        action: "intake.refused".into(),
        subject: format!("{entity}:{}", event.entity_id),
        detail: detail.to_string(),
    };
    let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, DECISION_REFUSED, reason);
    crate::Planned { intake, refused: Some(crate::Refusal { error, audit }), card_recipients: Vec::new() }
}

/// The error code of [`refuse_decision`].
pub const DECISION_REFUSED: &str = "decision_not_from_dingtalk";
