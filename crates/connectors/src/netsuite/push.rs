//! The user-event script's posts (docs/netsuite-user-event.md) as a [`PushIntake`]: HMAC-signed
//! over the timestamp and the body with the source's shared secret, acknowledged with 200.

use super::source::{receive, EventType};
use crate::push::{Acknowledgement, PushIntake, PushRefusal, PushRequest, Pushed, PushedChange};
use connect::config::Secret;
use serde_json::json;

/// Where the user-event script posts.
pub const PATH: &str = "/intake/netsuite/{source}";
/// Every route NetSuite pushes to.
pub const PATHS: &[&str] = &[PATH];

/// One NetSuite source's webhook door; without a secret it takes no posts.
pub struct UserEventIntake {
    pub secret: Option<Secret>,
}

impl PushIntake for UserEventIntake {
    fn receive(&self, request: &PushRequest<'_>) -> Result<Pushed, PushRefusal> {
        let secret = self.secret.as_ref().ok_or_else(|| PushRefusal::NotTaken {
            detail: "this source takes no webhooks (no webhook_secret)".into(),
        })?;
        let event = receive(secret.expose().as_bytes(), request.headers, request.body, request.now).map_err(|err| {
            let detail = err.to_string();
            match err.status() {
                401 => PushRefusal::Unauthenticated { code: "bad_webhook", detail },
                _ => PushRefusal::Malformed { code: "bad_webhook", detail },
            }
        })?;
        let Some(record) = event.record_type else {
            return Ok(Pushed::Ignored { record_type: event.record_type_name });
        };
        let change = match event.event_type {
            EventType::Create => "created",
            EventType::Delete => "deleted",
            EventType::Approve | EventType::Reject => "status_changed",
            _ => "updated",
        };
        let detail = json!({
            "event_id": event.event_id,
            "event_type": format!("{:?}", event.event_type),
            "occurred_at": event.occurred_at.to_rfc3339(),
        });
        Ok(Pushed::Changed(vec![PushedChange {
            push_id: event.event_id,
            object: record.as_str().to_owned(),
            id: event.record_id,
            change,
            detail,
        }]))
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::Accepted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netsuite::source::{sign_payload, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    use std::collections::BTreeMap;

    const SECRET: &str = "user-event-secret-for-tests";

    fn body(record_type: &str, event_type: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "eventId": format!("1234567:{record_type}:4711:2024-03-15T03:00:00Z:{event_type}"),
            "account": "1234567",
            "recordType": record_type,
            "recordId": "4711",
            "eventType": event_type,
            "occurredAt": "2024-03-15T03:00:00Z",
        }))
        .unwrap()
    }

    fn signed(body: &[u8], secret: &str, now: jiff::Timestamp) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        let at = now.as_second();
        headers.insert(SIGNATURE_HEADER, sign_payload(secret.as_bytes(), at, body).parse().unwrap());
        headers.insert(TIMESTAMP_HEADER, at.to_string().parse().unwrap());
        headers
    }

    fn receive_with(intake: &UserEventIntake, body: &[u8], headers: &http::HeaderMap) -> Result<Pushed, PushRefusal> {
        let query = BTreeMap::new();
        intake.receive(&PushRequest {
            path: PATH,
            token: None,
            headers,
            query: &query,
            body,
            now: jiff::Timestamp::now(),
        })
    }

    #[test]
    fn a_signed_user_event_is_a_change_to_read_under_its_event_id() {
        let intake = UserEventIntake { secret: Some(Secret::new(SECRET)) };
        let body = body("purchaseorder", "approve");
        let Pushed::Changed(changes) =
            receive_with(&intake, &body, &signed(&body, SECRET, jiff::Timestamp::now())).unwrap()
        else {
            panic!("a change")
        };
        let [change] = &changes[..] else { panic!("one change: {changes:?}") };
        assert_eq!(change.push_id, "1234567:purchaseorder:4711:2024-03-15T03:00:00Z:approve");
        assert_eq!(
            (change.object.as_str(), change.id.as_str(), change.change),
            ("purchaseOrder", "4711", "status_changed")
        );
        assert_eq!(intake.acknowledgement(), Acknowledgement::Accepted);
    }

    #[test]
    fn a_record_type_dingbridge_does_not_read_is_ignored_not_refused() {
        let intake = UserEventIntake { secret: Some(Secret::new(SECRET)) };
        let body = body("customrecord_x", "edit");
        let pushed = receive_with(&intake, &body, &signed(&body, SECRET, jiff::Timestamp::now())).unwrap();
        assert_eq!(pushed, Pushed::Ignored { record_type: "customrecord_x".into() });
    }

    #[test]
    fn forged_unsigned_and_unconfigured_posts_are_refused() {
        let intake = UserEventIntake { secret: Some(Secret::new(SECRET)) };
        let body = body("purchaseorder", "edit");
        let forged =
            receive_with(&intake, &body, &signed(&body, "another-secret", jiff::Timestamp::now())).unwrap_err();
        assert_eq!((forged.status(), forged.code()), (401, "bad_webhook"));
        let unsigned = receive_with(&intake, &body, &http::HeaderMap::new()).unwrap_err();
        assert_eq!(unsigned.status(), 401);
        let closed = UserEventIntake { secret: None };
        let refused = receive_with(&closed, &body, &signed(&body, SECRET, jiff::Timestamp::now())).unwrap_err();
        assert_eq!((refused.status(), refused.code()), (404, "unknown_source"));
    }
}
