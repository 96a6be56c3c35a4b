//! Change detection (reference A4): Outbound Messages (SOAP push) and `SystemModstamp` polling.

use super::VENDOR;
use connect::DeliveryError;
use jiff::Timestamp;
use quick_xml::events::Event;
use quick_xml::Reader;
use std::collections::BTreeMap;

/// The only acknowledgement Salesforce accepts (HTTP 200, `Content-Type: text/xml`).
pub const ACK_BODY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
 <soapenv:Body>
  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">
   <Ack>true</Ack>
  </notificationsResponse>
 </soapenv:Body>
</soapenv:Envelope>
"#;
/// Content type of [`ACK_BODY`].
pub const ACK_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// One `Notification` of an outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `04l…`: dedupe on it (delivery is at-least-once).
    pub notification_id: String,
    /// `Opportunity` (from `xsi:type="sf:Opportunity"`).
    pub sobject_type: String,
    /// The record's `Id` field (18 characters).
    pub record_id: String,
    /// Field values as sent (text); null fields are absent.
    pub fields: BTreeMap<String, String>,
}

/// A whole outbound-message POST.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboundMessage {
    pub organization_id: String,
    pub action_id: String,
    pub notifications: Vec<Notification>,
}

fn bad(detail: String) -> DeliveryError {
    DeliveryError::BadPayload { destination: "salesforce outbound message".to_owned(), detail }
}

/// Parses the SOAP envelope. The session id, if an admin ticked "send session id", is ignored
/// on purpose: dingbridge never uses a token it did not fetch itself.
pub fn parse_outbound_message(xml: &str) -> Result<OutboundMessage, DeliveryError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut message = OutboundMessage::default();
    let mut path: Vec<String> = Vec::new();
    let mut current: Option<Notification> = None;
    let mut saw_notifications = false;
    loop {
        let event = reader.read_event().map_err(|e| bad(format!("not well-formed XML ({e})")))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                match name.as_str() {
                    "notifications" => saw_notifications = true,
                    "Notification" => {
                        current = Some(Notification {
                            notification_id: String::new(),
                            sobject_type: String::new(),
                            record_id: String::new(),
                            fields: BTreeMap::new(),
                        })
                    }
                    "sObject" => {
                        for attr in e.attributes().flatten() {
                            if attr.key.local_name().as_ref() == b"type" {
                                let value = attr.unescape_value().map_err(|e| bad(format!("bad xsi:type ({e})")))?;
                                let ty = value.rsplit(':').next().unwrap_or_default().to_owned();
                                if let Some(n) = current.as_mut() {
                                    n.sobject_type = ty;
                                }
                            }
                        }
                    }
                    _ => {}
                }
                path.push(name);
            }
            // The guard pops for every end tag; only a closing Notification needs more work.
            Event::End(_) if path.pop().as_deref() == Some("Notification") => {
                let n = current.take().ok_or_else(|| bad("unbalanced Notification".to_owned()))?;
                if n.notification_id.is_empty() || n.record_id.is_empty() {
                    return Err(bad("a Notification lacks its Id or the record's Id".to_owned()));
                }
                message.notifications.push(n);
            }
            Event::Text(t) => {
                let text = t.unescape().map_err(|e| bad(format!("bad text ({e})")))?.into_owned();
                let parent = path.len().checked_sub(2).and_then(|i| path.get(i)).map(String::as_str);
                match (parent, path.last().map(String::as_str)) {
                    (Some("notifications"), Some("OrganizationId")) => message.organization_id = text,
                    (Some("notifications"), Some("ActionId")) => message.action_id = text,
                    (Some("Notification"), Some("Id")) => {
                        if let Some(n) = current.as_mut() {
                            n.notification_id = text;
                        }
                    }
                    (Some("sObject"), Some(field)) => {
                        if let Some(n) = current.as_mut() {
                            if field == "Id" {
                                n.record_id = text.clone();
                            }
                            n.fields.insert(field.to_owned(), text);
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_notifications {
        return Err(bad("no <notifications> element: not a Salesforce outbound message".to_owned()));
    }
    Ok(message)
}

/// Where polling got to: the last `SystemModstamp` delivered and the greatest `Id` delivered
/// with exactly that stamp. The next page asks for the rows after (`stamp`, `last_id`) (and
/// [`PollCursor::advance`] drops any at or before it), so rows sharing a stamp across a page or
/// a restart are neither lost nor repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollCursor {
    pub modstamp: Timestamp,
    pub last_id: String,
}

impl PollCursor {
    /// Start at `since`, with nothing of that instant seen yet.
    pub fn starting_at(since: Timestamp) -> Self {
        Self { modstamp: since, last_id: String::new() }
    }

    /// One page of the poll query: the rows after the cursor in (`SystemModstamp`, `Id`) order,
    /// at most `limit` (datetime literal unquoted, `Z` form so no `+` needs escaping). Keyset
    /// paging: a page starts after the last row handed on, so ties on one stamp across pages
    /// and records edited while the scan runs are neither skipped nor repeated.
    pub fn soql(&self, object: &str, fields: &[&str], limit: usize) -> String {
        let mut list: Vec<&str> = fields.to_vec();
        for required in ["Id", "SystemModstamp"] {
            if !list.contains(&required) {
                list.push(required);
            }
        }
        let stamp = self.modstamp;
        // An empty Id literal is not a valid Id to Salesforce: before any row of the stamp, `>=`.
        let after = if self.last_id.is_empty() {
            format!("SystemModstamp >= {stamp}")
        } else {
            let id = self.last_id.replace('\\', "\\\\").replace('\'', "\\'");
            format!("SystemModstamp > {stamp} OR (SystemModstamp = {stamp} AND Id > '{id}')")
        };
        format!("SELECT {} FROM {object} WHERE {after} ORDER BY SystemModstamp, Id LIMIT {limit}", list.join(", "))
    }

    /// Keeps the rows after the cursor (in query order) and moves the cursor past them.
    pub fn advance(&mut self, rows: Vec<serde_json::Value>) -> Result<Vec<serde_json::Value>, DeliveryError> {
        let mut fresh = Vec::new();
        for row in rows {
            let id = row.get("Id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            // The id goes into the next page's SOQL and into read jobs: only an id's shape passes.
            super::ids::normalize_id(&id).map_err(|e| DeliveryError::Server {
                vendor: VENDOR,
                status: 200,
                detail: format!("poll row: {e}"),
            })?;
            let stamp_text = row.get("SystemModstamp").and_then(|v| v.as_str()).unwrap_or_default();
            let stamp = model::ZonedTime::parse("SystemModstamp", stamp_text)
                .map_err(|e| DeliveryError::Server {
                    vendor: VENDOR,
                    status: 200,
                    detail: format!("poll row {id}: {e}"),
                })?
                .0;
            let seen = stamp < self.modstamp || (stamp == self.modstamp && id.as_str() <= self.last_id.as_str());
            if seen {
                continue;
            }
            self.modstamp = stamp;
            self.last_id = id;
            fresh.push(row);
        }
        Ok(fresh)
    }

    /// Text form to persist: `<RFC 3339 stamp>|<last id>`.
    pub fn encode(&self) -> String {
        format!("{}|{}", self.modstamp, self.last_id)
    }

    pub fn decode(text: &str) -> Result<Self, DeliveryError> {
        let (stamp, id) = text.split_once('|').unwrap_or((text, ""));
        let modstamp = stamp.parse::<Timestamp>().map_err(|e| {
            bad(format!("stored poll cursor `{text}` is not `<timestamp>|<id>` ({e}); reset the cursor"))
        })?;
        Ok(Self { modstamp, last_id: id.to_owned() })
    }
}

/// Rows one poll page asks for: a page is one Salesforce query batch (2,000 at most).
pub const POLL_PAGE_SIZE: usize = 500;

/// One page of a poll: the rows after the cursor, at most `limit`, moving the cursor past them,
/// and whether the page was full (more may follow). Persist [`PollCursor::encode`] with the rows.
pub async fn poll_changes(
    client: &super::client::SalesforceClient,
    object: &str,
    fields: &[&str],
    cursor: &mut PollCursor,
    limit: usize,
    priority: super::limits::Priority,
) -> Result<(Vec<serde_json::Value>, bool), DeliveryError> {
    let rows = client.query(&cursor.soql(object, fields, limit), priority).await?;
    let full = rows.len() >= limit;
    Ok((cursor.advance(rows)?, full))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> String {
        fixtures::read_fixture(format!("salesforce/{name}"))
    }

    #[test]
    fn two_notifications_are_read_from_the_hk_message() {
        let msg = parse_outbound_message(&fixture("outbound/outbound_message_opportunity_hk.xml")).unwrap();
        assert_eq!(msg.organization_id, "00D5g000004HkbrEAC");
        assert_eq!(msg.action_id, "04k5g000000XyzqAAC");
        assert_eq!(msg.notifications.len(), 2);
        let first = &msg.notifications[0];
        assert_eq!(first.notification_id, "04l5g00000AbcdEAAR");
        assert_eq!(first.sobject_type, "Opportunity");
        assert_eq!(first.record_id, "0065g00000Qx1ZpAAJ");
        assert_eq!(first.fields["Amount"], "1250000.0");
        assert_eq!(first.fields["StageName"], "Negotiation/Review");
        assert_eq!(msg.notifications[1].record_id, "0065g00000Qx1ZqAAJ");
    }

    #[test]
    fn the_real_ap5_message_parses_and_garbage_does_not() {
        let msg = parse_outbound_message(&fixture("outbound/outbound_message_opportunity_ap5.xml")).unwrap();
        assert_eq!(msg.notifications.len(), 1);
        assert_eq!(msg.notifications[0].sobject_type, "Opportunity");
        assert!(parse_outbound_message("<a><b></a>").is_err());
        assert!(parse_outbound_message("<html/>").is_err());
    }

    #[test]
    fn ack_is_the_reference_body() {
        assert_eq!(ACK_BODY.trim(), fixture("outbound/outbound_ack.xml").trim());
    }

    fn row(id: &str, stamp: &str) -> serde_json::Value {
        json!({"Id": id, "SystemModstamp": stamp})
    }

    #[test]
    fn ties_on_one_stamp_are_neither_lost_nor_repeated_across_restarts() {
        let start: Timestamp = "2025-08-14T06:00:00Z".parse().unwrap();
        let mut cursor = PollCursor::starting_at(start);
        let t1 = "2025-08-14T06:30:05.000+0000";
        // First poll sees two of three rows sharing t1 (the third committed later).
        let got = cursor.advance(vec![row("006xx0000000A00", t1), row("006xx0000000B00", t1)]).unwrap();
        assert_eq!(got.len(), 2);
        // Restart: the cursor survives as text.
        let mut cursor = PollCursor::decode(&cursor.encode()).unwrap();
        assert!(cursor.soql("Opportunity", &["Name"], 10).contains(
            "WHERE SystemModstamp > 2025-08-14T06:30:05Z OR (SystemModstamp = 2025-08-14T06:30:05Z AND Id > '006xx0000000B00') \
             ORDER BY SystemModstamp, Id LIMIT 10"
        ));
        // Second poll (>=) returns the tie again plus the late row and a newer one.
        let got = cursor
            .advance(vec![
                row("006xx0000000A00", t1),
                row("006xx0000000B00", t1),
                row("006xx0000000C00", t1),
                row("006xx0000000A00", "2025-08-14T06:31:00.000+0000"),
            ])
            .unwrap();
        let ids: Vec<&str> = got.iter().map(|r| r["Id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["006xx0000000C00", "006xx0000000A00"]);
        assert_eq!(cursor.advance(vec![row("006xx0000000A00", "2025-08-14T06:31:00.000+0000")]).unwrap().len(), 0);
        // An id that is not an id's shape (it would go into the next page's SOQL) is refused.
        assert!(cursor.advance(vec![row("006' OR Name != '", "2025-08-14T06:32:00.000+0000")]).is_err());
    }
}
