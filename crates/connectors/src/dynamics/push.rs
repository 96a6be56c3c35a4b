//! Dataverse webhooks (`RemoteExecutionContext`) as a [`PushIntake`]. The serviceendpoint's key
//! arrives in the `x-dingbridge-key` header (authtype HttpHeader) or the `code` query parameter
//! (authtype WebhookKey). Answered 204: Dataverse gives a webhook 60 s and retries only 502–504
//! once, so the reconciliation poll is the safety net.

use super::source::parse_webhook;
use crate::push::{Acknowledgement, PushIntake, PushRefusal, PushRequest, Pushed, PushedChange};
use connect::config::Secret;
use serde_json::json;

/// The Dataverse webhook header carrying the source's shared key (serviceendpoint authtype
/// HttpHeader); authtype WebhookKey sends it as the `code` query parameter instead.
pub const KEY_HEADER: &str = "x-dingbridge-key";

/// Where the Dataverse serviceendpoint posts.
pub const PATH: &str = "/intake/dynamics/{source}";
/// Every route Dataverse pushes to.
pub const PATHS: &[&str] = &[PATH];

/// One Dynamics source's webhook door; without a key it takes no posts.
pub struct WebhookIntake {
    pub key: Option<Secret>,
}

impl PushIntake for WebhookIntake {
    fn receive(&self, request: &PushRequest<'_>) -> Result<Pushed, PushRefusal> {
        let key = self.key.as_ref().ok_or_else(|| PushRefusal::NotTaken {
            detail: "this source takes no webhooks (no webhook_secret)".into(),
        })?;
        let given = request
            .headers
            .get(KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .or_else(|| request.query.get("code").map(String::as_str))
            .unwrap_or_default();
        if !connect::secret::matches(key.expose().as_bytes(), given.as_bytes()) {
            return Err(PushRefusal::Unauthenticated {
                code: "bad_key",
                detail: "the webhook key is missing or wrong".into(),
            });
        }
        let event = parse_webhook(request.body)
            .map_err(|err| PushRefusal::Malformed { code: "malformed_body", detail: err.to_string() })?;
        if !event.is_fresh(request.now) {
            return Err(PushRefusal::Unauthenticated {
                code: "stale_notification",
                detail: format!(
                    "the operation was created at {}, more than a day ago (or in the future): a replay, or a clock is off",
                    event.operation_created_on.timestamp()
                ),
            });
        }
        let change = match event.message_name.as_str() {
            "Create" => "created",
            "Delete" => "deleted",
            _ => "updated",
        };
        let detail = json!({
            "message": event.message_name,
            "correlation_id": event.correlation_id,
            "operation_created_on": event.operation_created_on.to_rfc3339(),
        });
        Ok(Pushed::Changed(vec![PushedChange {
            // One operation can touch several rows: the row's id keeps them apart.
            push_id: format!("{}:{}", event.operation_id, event.id),
            object: event.entity,
            id: event.id,
            change,
            detail,
        }]))
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::NoContent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const KEY: &str = "dataverse-shared-key-for-tests";

    fn fixture() -> Vec<u8> {
        fixtures::read_fixture("dynamics/webhook_remoteexecutioncontext_salesorder_update.json").into_bytes()
    }

    /// The fixture's operation happened at 2024-03-15T06:10:01Z; an hour later it is fresh.
    fn soon_after() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_710_483_001 + 3600).unwrap()
    }

    fn receive_with(
        key: Option<&str>,
        headers: &http::HeaderMap,
        query: &BTreeMap<String, String>,
        now: jiff::Timestamp,
    ) -> Result<Pushed, PushRefusal> {
        let intake = WebhookIntake { key: key.map(Secret::new) };
        intake.receive(&PushRequest { path: PATH, token: None, headers, query, body: &fixture(), now })
    }

    #[test]
    fn the_key_in_the_header_or_the_code_parameter_opens_it() {
        let mut headers = http::HeaderMap::new();
        headers.insert(KEY_HEADER, KEY.parse().unwrap());
        let Pushed::Changed(changes) = receive_with(Some(KEY), &headers, &BTreeMap::new(), soon_after()).unwrap()
        else {
            panic!("a change")
        };
        let [change] = &changes[..] else { panic!("one change: {changes:?}") };
        assert_eq!(change.push_id, "4af10637-4ea2-e711-8122-000d3aa2331d:3f9a1c2e-7b2d-ee11-8179-000d3a0a1c01");
        assert_eq!((change.object.as_str(), change.change), ("salesorder", "updated"));
        let query = BTreeMap::from([("code".to_owned(), KEY.to_owned())]);
        assert!(receive_with(Some(KEY), &http::HeaderMap::new(), &query, soon_after()).is_ok());
    }

    #[test]
    fn a_wrong_key_a_replay_and_a_source_without_a_key_are_refused() {
        let query = BTreeMap::from([("code".to_owned(), "guess".to_owned())]);
        let wrong = receive_with(Some(KEY), &http::HeaderMap::new(), &query, soon_after()).unwrap_err();
        assert_eq!((wrong.status(), wrong.code()), (401, "bad_key"));
        let query = BTreeMap::from([("code".to_owned(), KEY.to_owned())]);
        let weeks_later = soon_after() + jiff::SignedDuration::from_hours(24 * 14);
        let replay = receive_with(Some(KEY), &http::HeaderMap::new(), &query, weeks_later).unwrap_err();
        assert_eq!((replay.status(), replay.code()), (401, "stale_notification"));
        let closed = receive_with(None, &http::HeaderMap::new(), &query, soon_after()).unwrap_err();
        assert_eq!(closed.status(), 404);
    }
}
