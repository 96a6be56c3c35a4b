//! Outbound Messages (SOAP) as a [`PushIntake`]. They carry no signature, so the source's secret
//! URL token (compared in constant time, never logged) and the org id in the message
//! authenticate them, and every id is checked before anything is stored. Salesforce accepts only
//! its exact acknowledgement and keeps retrying anything else.

use super::ids::{checked_id, same_id};
use super::source::{parse_outbound_message, ACK_BODY, ACK_CONTENT_TYPE};
use crate::push::{Acknowledgement, PushIntake, PushRefusal, PushRequest, Pushed, PushedChange};
use connect::config::Secret;
use serde_json::json;

/// Where a misconfigured Outbound Message (no token segment) arrives: refused with the fix.
pub const PATH_WITHOUT_TOKEN: &str = "/intake/salesforce/{source}";
/// Where Outbound Messages are posted.
pub const PATH: &str = "/intake/salesforce/{source}/{token}";
/// Every route Salesforce pushes to.
pub const PATHS: &[&str] = &[PATH_WITHOUT_TOKEN, PATH];

/// One Salesforce source's Outbound Message door: open only with the URL token and the org id
/// (a polling source has neither and takes no messages).
pub struct OutboundMessageIntake {
    pub token: Option<Secret>,
    pub organization_id: Option<String>,
}

fn bad_token(detail: &str) -> PushRefusal {
    PushRefusal::Unauthenticated { code: "bad_token", detail: detail.to_owned() }
}

impl PushIntake for OutboundMessageIntake {
    fn receive(&self, request: &PushRequest<'_>) -> Result<Pushed, PushRefusal> {
        let (Some(expected), Some(organization_id)) = (&self.token, &self.organization_id) else {
            return Err(PushRefusal::NotTaken { detail: "this source does not take Outbound Messages".into() });
        };
        let Some(token) = request.token else {
            return Err(bad_token(
                "Outbound Messages go to /intake/salesforce/{source}/{outbound_token}; this URL has no token",
            ));
        };
        if !connect::secret::matches(expected.expose().as_bytes(), token.as_bytes()) {
            return Err(bad_token("the URL's token is missing or wrong"));
        }
        let malformed = |detail: String| PushRefusal::Malformed { code: "malformed_body", detail };
        let text = std::str::from_utf8(request.body).map_err(|_| malformed("the body is not UTF-8 XML".into()))?;
        let message = parse_outbound_message(text).map_err(|err| malformed(err.to_string()))?;
        if !same_id(organization_id, &message.organization_id) {
            return Err(PushRefusal::Unauthenticated {
                code: "wrong_organization",
                detail: "the message does not come from the configured Salesforce org".into(),
            });
        }
        // Ids become inbox keys and read URLs: each must be a real Salesforce id (length,
        // alphabet, and the 18-character form's case checksum) before anything is stored.
        for n in &message.notifications {
            for (what, id) in [("notification", &n.notification_id), ("record", &n.record_id)] {
                checked_id(id).map_err(|err| PushRefusal::Malformed {
                    code: "malformed_id",
                    detail: format!("the {what} id is invalid: {err}"),
                })?;
            }
        }
        let changes = message.notifications.into_iter().map(|n| PushedChange {
            detail: json!({ "notification_id": n.notification_id, "action_id": message.action_id, "fields": n.fields }),
            push_id: n.notification_id,
            object: n.sobject_type,
            id: n.record_id,
            change: "updated",
        });
        Ok(Pushed::Changed(changes.collect()))
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::Body { content_type: ACK_CONTENT_TYPE, body: ACK_BODY }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const TOKEN: &str = "Zq3xW9-mK2pL7vR4tY8nB1cF6iA0";
    const ORG: &str = "00D5g000004HkbrEAC";

    fn receive(intake: &OutboundMessageIntake, token: Option<&str>) -> Result<Pushed, PushRefusal> {
        let body = fixtures::read_fixture("salesforce/outbound/outbound_message_opportunity_hk.xml").into_bytes();
        let (headers, query) = (http::HeaderMap::new(), BTreeMap::new());
        let path = if token.is_some() { PATH } else { PATH_WITHOUT_TOKEN };
        intake.receive(&PushRequest {
            path,
            token,
            headers: &headers,
            query: &query,
            body: &body,
            now: jiff::Timestamp::now(),
        })
    }

    fn intake(token: Option<&str>) -> OutboundMessageIntake {
        OutboundMessageIntake { token: token.map(Secret::new), organization_id: Some(ORG.into()) }
    }

    #[test]
    fn each_notification_of_a_message_is_a_change_under_its_notification_id() {
        let Pushed::Changed(changes) = receive(&intake(Some(TOKEN)), Some(TOKEN)).unwrap() else { panic!("changes") };
        let ids: Vec<(&str, &str)> = changes.iter().map(|c| (c.push_id.as_str(), c.id.as_str())).collect();
        assert_eq!(ids, [("04l5g00000AbcdEAAR", "0065g00000Qx1ZpAAJ"), ("04l5g00000AbcdFAAR", "0065g00000Qx1ZqAAJ")]);
        assert!(matches!(intake(None).acknowledgement(), Acknowledgement::Body { .. }));
    }

    #[test]
    fn a_polling_source_takes_no_messages_and_a_url_without_the_token_is_refused() {
        let closed = receive(&intake(None), Some(TOKEN)).unwrap_err();
        assert_eq!((closed.status(), closed.code()), (404, "unknown_source"));
        let no_token = receive(&intake(Some(TOKEN)), None).unwrap_err();
        assert_eq!((no_token.status(), no_token.code()), (401, "bad_token"));
        assert!(!no_token.to_string().contains(TOKEN), "the token is never echoed");
    }
}
