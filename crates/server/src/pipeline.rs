//! The gateway's intake pipeline: signature check, decode, flows. Implements `server::Intake`.

use crate::error::ApiError;
use axum::http::{HeaderMap, StatusCode};
use connect::webhook::WebhookVerifier;
use engine::flow::{DecodeError, FlowEngine};
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct WebhookPipeline {
    pub verifiers: BTreeMap<String, WebhookVerifier>,
    pub flows: Arc<FlowEngine>,
}

impl crate::Intake for WebhookPipeline {
    fn has_source(&self, source: &str) -> bool {
        self.verifiers.contains_key(source)
    }

    fn webhook(
        &self,
        source: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: jiff::Timestamp,
    ) -> Result<store::Intake, ApiError> {
        let verifier = self.verifiers.get(source).ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_source", format!("no webhook source named `{source}`"))
        })?;
        let verified = verifier.verify(headers, body, now).map_err(|err| {
            let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::UNAUTHORIZED);
            ApiError::new(status, err.code(), err.to_string())
        })?;
        let received_at = model::ZonedTime::from(now);
        let now_ms = now.as_millisecond();
        let event_id = uuid::Uuid::now_v7().to_string();
        let dedup_key = format!("{source}:{}", verified.id);
        let mut intake = store::Intake {
            dedup_key,
            event_id: event_id.clone(),
            source: source.to_string(),
            received_at: now_ms,
            event_json: String::new(),
            jobs: Vec::new(),
            dead_letter: None,
        };
        match self.flows.decode_webhook(source, &verified.id, body, received_at, event_id) {
            Ok(event) => {
                intake.event_json = serde_json::to_string(&event).unwrap_or_default();
                match self.flows.plan(&event, now_ms) {
                    Ok(jobs) => intake.jobs = jobs,
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
                    format!("no webhook source named `{name}`"),
                ));
            }
            Err(DecodeError::Malformed(reason)) => {
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", reason));
            }
            Err(err @ DecodeError::Invalid { .. }) => {
                // Signed and well-formed, but a typed field is wrong: keep it as a dead letter
                // so an operator sees it; the sender's retry would not fix it.
                tracing::error!(event_id = %intake.event_id, source, "Event dead-lettered: {err}");
                if let DecodeError::Invalid { envelope, .. } = &err {
                    intake.event_json = envelope.to_string();
                }
                intake.dead_letter = Some(store::NewDeadLetter { reason: err.to_string() });
            }
        }
        Ok(intake)
    }
}
