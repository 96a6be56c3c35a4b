//! NetSuite change detection (reference B8): a pushed SuiteScript user-event webhook and a
//! SuiteQL `lastmodifieddate` poll as the safety net.
//!
//! # The webhook contract
//!
//! NetSuite has no native outbound webhooks. The customer deploys a SuiteScript 2.1 user event
//! script (on purchaseOrder, purchaseRequisition, salesOrder, itemFulfillment, inventoryItem)
//! whose `afterSubmit` POSTs the JSON of fixture `suitescript_userevent_webhook_payload.json`
//! (minus its `_comment`/`signature` documentation fields, which are ignored if present) with
//!
//! ```text
//! Content-Type: application/json
//! X-Dingbridge-Timestamp: <Unix seconds when the script signed>
//! X-Dingbridge-Signature: sha256=<lowercase hex HMAC-SHA256(shared secret, "<timestamp>.<raw body>")>
//! ```
//!
//! The signature covers the timestamp and the exact bytes sent, so the script signs the string
//! it posts, and a captured post cannot be sent again once it is [`TOLERANCE`] old (within that
//! window its `eventId` makes a resend a duplicate). The secret is stored in NetSuite as an API
//! secret (Setup > Company > API Secrets, id `custsecret_dingbridge_webhook`, restricted to the
//! script). The script:
//!
//! ```text
//! /**
//!  * @NApiVersion 2.1
//!  * @NScriptType UserEventScript
//!  */
//! define(['N/https', 'N/crypto', 'N/encode', 'N/runtime'], (https, crypto, encode, runtime) => {
//!   const URL = 'https://dingbridge.example.com/intake/netsuite/erp-netsuite';
//!   const afterSubmit = (context) => {
//!     const rec = context.newRecord || context.oldRecord;
//!     const modified = rec.getValue({ fieldId: 'lastmodifieddate' });
//!     const user = runtime.getCurrentUser();
//!     const account = runtime.accountId;
//!     const body = JSON.stringify({
//!       eventId: [account, rec.type, rec.id, modified ? modified.toISOString() : Date.now(), context.type].join(':'),
//!       account, recordType: rec.type, recordId: String(rec.id), eventType: context.type,
//!       userId: String(user.id), role: String(user.role), executionContext: runtime.executionContext,
//!       occurredAt: new Date().toISOString(),
//!       fields: { tranid: rec.getValue('tranid'), approvalstatus: rec.getValue('approvalstatus'),
//!                 nextapprover: rec.getValue('nextapprover'), total: rec.getValue('total'),
//!                 currency: rec.getValue('currency') }
//!     });
//!     const timestamp = String(Math.floor(Date.now() / 1000));
//!     const key = crypto.createSecretKey({ secret: 'custsecret_dingbridge_webhook', encoding: encode.Encoding.UTF_8 });
//!     const hmac = crypto.createHmac({ algorithm: crypto.HashAlg.SHA256, key });
//!     hmac.update({ input: timestamp + '.' + body, inputEncoding: encode.Encoding.UTF_8 });
//!     const signature = hmac.digest({ outputEncoding: encode.Encoding.HEX }).toLowerCase();
//!     https.post({ url: URL, body, headers: { 'Content-Type': 'application/json',
//!                                             'X-Dingbridge-Timestamp': timestamp,
//!                                             'X-Dingbridge-Signature': 'sha256=' + signature } });
//!   };
//!   return { afterSubmit };
//! });
//! ```
//!
//! UNVERIFIED: that `crypto.createHmac` with an API secret and HEX digest yields exactly
//! hex(HMAC-SHA256(secret, body)) for non-ASCII bodies (the contract is ours, not NetSuite's; the
//! simulator signs the same way). User events may not fire for some script/CSV contexts, so the
//! poll below stays on.
//!
//! # The poll
//!
//! `lastmodifieddate` has minute precision. [`PollCursor`] asks for rows at or after its
//! watermark minus [`POLL_OVERLAP`], ordered by `lastmodifieddate, id`, remembers the
//! (timestamp, id) pairs it delivered inside the overlap window and skips them: rows sharing one
//! timestamp are told apart by id, so nothing is delivered twice and a row committed late within
//! the overlap is not lost. A scan goes page by page by keyset: each page asks for the rows after
//! the (timestamp, id) that ended the page before (`lastmodifieddate > t OR (lastmodifieddate = t
//! AND id > n)`), never by offset, so a record edited while the scan runs (it moves to the end)
//! shifts no other row past a page boundary.

use super::client::{NetSuiteClient, RecordType};
use crate::keyset::PageStart;
use connect::DeliveryError;
use hmac::Mac;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use model::ZonedTime;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The signature header of the webhook (lowercase, as `http` stores names).
pub const SIGNATURE_HEADER: &str = "x-dingbridge-signature";
/// The header with the Unix seconds the signature was made at.
pub const TIMESTAMP_HEADER: &str = "x-dingbridge-timestamp";
/// How far the signed timestamp may be from the gateway's clock, either way.
pub const TOLERANCE: SignedDuration = SignedDuration::from_mins(5);
/// Prefix of the header value.
pub const SIGNATURE_PREFIX: &str = "sha256=";
/// How far behind the watermark each poll starts (reference B8: 2 minutes).
pub const POLL_OVERLAP: SignedDuration = SignedDuration::from_mins(2);
/// Rows per SuiteQL page when polling.
pub const POLL_PAGE_SIZE: usize = 1000;

/// Why an inbound webhook was refused; `status()` is the HTTP answer for the script.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InboundError {
    #[error("the webhook has no {SIGNATURE_HEADER} header; deploy the dingbridge SuiteScript that signs its posts")]
    MissingSignature,
    #[error("the webhook signature does not match; check the shared secret in NetSuite and dingbridge")]
    BadSignature,
    #[error("the webhook body is not a user-event payload: {0}")]
    Malformed(String),
    #[error("the webhook has no numeric {TIMESTAMP_HEADER} header; deploy the current dingbridge SuiteScript, which signs the time too")]
    MissingTimestamp,
    #[error("the webhook was signed at {signed_at}, more than 5 minutes from now: a replay, or a clock is off")]
    Stale { signed_at: i64 },
}

impl InboundError {
    pub fn status(&self) -> u16 {
        match self {
            InboundError::MissingSignature | InboundError::BadSignature | InboundError::Stale { .. } => 401,
            InboundError::Malformed(_) | InboundError::MissingTimestamp => 400,
        }
    }
}

/// The HMAC of `"{timestamp}.{body}"` under `secret`.
fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// `sha256=<hex>` of `"{timestamp}.{body}"` under `secret`: what the SuiteScript (and the
/// simulator) send, with `timestamp` in [`TIMESTAMP_HEADER`].
pub fn sign_payload(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("{SIGNATURE_PREFIX}{}", hex::encode(mac(secret, timestamp, body).finalize().into_bytes()))
}

/// Checks the signature over the timestamp and the raw body (constant time), then that the
/// timestamp is within [`TOLERANCE`] of `now`: a post captured in transit or a log cannot be
/// sent again later.
pub fn verify_signature(
    secret: &[u8],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: Timestamp,
) -> Result<(), InboundError> {
    let signature = signature.ok_or(InboundError::MissingSignature)?;
    let signed_at: i64 = timestamp.and_then(|t| t.trim().parse().ok()).ok_or(InboundError::MissingTimestamp)?;
    let hex_sig = signature.trim().strip_prefix(SIGNATURE_PREFIX).ok_or(InboundError::BadSignature)?;
    let given = hex::decode(hex_sig.to_ascii_lowercase()).map_err(|_| InboundError::BadSignature)?;
    mac(secret, signed_at, body).verify_slice(&given).map_err(|_| InboundError::BadSignature)?;
    if now.as_second().abs_diff(signed_at) > TOLERANCE.as_secs().unsigned_abs() {
        return Err(InboundError::Stale { signed_at });
    }
    Ok(())
}

/// `context.type` of the user event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventType {
    Create,
    Edit,
    /// Inline edit / mass update.
    XEdit,
    Approve,
    Reject,
    Delete,
    Other(String),
}

impl EventType {
    pub fn parse(text: &str) -> EventType {
        match text.to_ascii_lowercase().as_str() {
            "create" => EventType::Create,
            "edit" => EventType::Edit,
            "xedit" => EventType::XEdit,
            "approve" => EventType::Approve,
            "reject" => EventType::Reject,
            "delete" => EventType::Delete,
            _ => EventType::Other(text.to_owned()),
        }
    }
}

/// The wire form of the user-event payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePayload {
    event_id: String,
    account: String,
    record_type: String,
    record_id: String,
    event_type: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    execution_context: Option<String>,
    occurred_at: String,
    #[serde(default)]
    fields: Map<String, Value>,
}

/// One user event as dingbridge uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct UserEvent {
    /// Stable per change: dedupe on it.
    pub event_id: String,
    pub account: String,
    /// As sent (lowercase, `purchaseorder`).
    pub record_type_name: String,
    /// `None` for record types dingbridge does not handle.
    pub record_type: Option<RecordType>,
    pub record_id: String,
    pub event_type: EventType,
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub execution_context: Option<String>,
    pub occurred_at: ZonedTime,
    /// The few body fields the script sends (lowercase SuiteScript ids, raw values).
    pub fields: Map<String, Value>,
}

/// Parses a user-event body (signature already verified).
pub fn parse_user_event(body: &[u8]) -> Result<UserEvent, InboundError> {
    let wire: WirePayload = serde_json::from_slice(body).map_err(|e| InboundError::Malformed(e.to_string()))?;
    let occurred_at =
        ZonedTime::parse("occurredAt", &wire.occurred_at).map_err(|e| InboundError::Malformed(e.to_string()))?;
    if wire.record_id.is_empty() || !wire.record_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(InboundError::Malformed(format!("recordId `{}` is not an internal id", wire.record_id)));
    }
    Ok(UserEvent {
        event_id: wire.event_id,
        account: wire.account,
        record_type: RecordType::parse(&wire.record_type),
        record_type_name: wire.record_type,
        record_id: wire.record_id,
        event_type: EventType::parse(&wire.event_type),
        user_id: wire.user_id,
        role: wire.role,
        execution_context: wire.execution_context,
        occurred_at,
        fields: wire.fields,
    })
}

/// Verifies and parses one webhook request.
pub fn receive(
    secret: &[u8],
    headers: &http::HeaderMap,
    body: &[u8],
    now: Timestamp,
) -> Result<UserEvent, InboundError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify_signature(secret, header(SIGNATURE_HEADER), header(TIMESTAMP_HEADER), body, now)?;
    parse_user_event(body)
}

/// One changed row found by the poll.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedRow {
    pub id: String,
    pub last_modified: ZonedTime,
    /// The SuiteQL row as returned (lowercase column names, string values).
    pub row: Value,
}

/// What a cursor persists between polls.
pub type CursorState = crate::keyset::KeysetState;

/// A `lastmodifieddate` poll cursor for one record type.
#[derive(Debug, Clone)]
pub struct PollCursor {
    record: RecordType,
    /// The integration user's time zone: SuiteQL reads and writes date literals in it
    /// (UNVERIFIED that TO_CHAR/TO_TIMESTAMP use the user's zone rather than the account's).
    zone: TimeZone,
    state: CursorState,
}

impl PollCursor {
    /// Starts at `since`.
    pub fn new(record: RecordType, since: Timestamp, zone: TimeZone) -> Self {
        Self { record, zone, state: CursorState::starting_at(since.as_second()) }
    }

    /// Resumes from persisted state.
    pub fn resume(record: RecordType, state: CursorState, zone: TimeZone) -> Self {
        Self { record, zone, state }
    }

    pub fn state(&self) -> &CursorState {
        &self.state
    }

    pub fn watermark(&self) -> Timestamp {
        Timestamp::from_second(self.state.watermark_s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// The SuiteQL of the next page.
    pub fn query(&self) -> String {
        let literal = |second: i64| {
            let at = Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH);
            let local = self.zone.to_datetime(at).strftime("%Y-%m-%d %H:%M:%S").to_string();
            format!("TO_TIMESTAMP('{local}', 'YYYY-MM-DD HH24:MI:SS')")
        };
        let (table, filter) = match self.record.transaction_type() {
            Some(code) => ("transaction", format!("type = '{code}'")),
            None => ("item", "itemtype = 'InvtPart'".to_owned()),
        };
        let start = match self.state.page_start(POLL_OVERLAP.as_secs()) {
            PageStart::After(second, id) => {
                let at = literal(second);
                format!("(lastmodifieddate > {at} OR (lastmodifieddate = {at} AND id > {id}))")
            }
            PageStart::From(second) => format!("lastmodifieddate >= {}", literal(second)),
        };
        format!(
            "SELECT id, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD\"T\"HH24:MI:SS') AS lastmodified FROM {table} \
             WHERE {filter} AND {start} ORDER BY lastmodifieddate, id"
        )
    }

    /// A page row's change time and internal id.
    fn parse_row(&self, row: &Value) -> Result<(ZonedTime, u64), model::ParseError> {
        let id = match &row["id"] {
            Value::String(s) => s.parse::<u64>().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| model::ParseError::new("id", &row["id"].to_string(), "is not an internal id"))?;
        let text = row["lastmodified"].as_str().unwrap_or_default();
        Ok((ZonedTime::parse_local("lastmodified", text, &self.zone)?, id))
    }

    /// Takes the rows of one page and whether NetSuite said more follow: returns the rows not
    /// delivered before, in (timestamp, id) order, and whether the scan goes on (see
    /// [`crate::keyset`]).
    pub fn accept(
        &mut self,
        rows: Vec<Value>,
        vendor_has_more: bool,
    ) -> Result<(Vec<ChangedRow>, bool), model::ParseError> {
        let parsed = rows.iter().map(|row| self.parse_row(row)).collect::<Result<Vec<_>, _>>()?;
        let keys: Vec<(i64, u64)> = parsed.iter().map(|(at, id)| (at.0.as_second(), *id)).collect();
        let (fresh, more) = self.state.accept_page(&keys, vendor_has_more, POLL_OVERLAP.as_secs());
        let mut changed: Vec<ChangedRow> = rows
            .into_iter()
            .zip(parsed)
            .zip(fresh)
            .filter(|(_, new)| *new)
            .map(|((row, (last_modified, id)), _)| ChangedRow { id: id.to_string(), last_modified, row })
            .collect();
        changed.sort_by_key(|r| (r.last_modified, r.id.parse::<u64>().unwrap_or(u64::MAX)));
        Ok((changed, more))
    }
}

/// One page of a poll: the new rows of the cursor's next page, and whether the scan goes on
/// (the cursor then holds where the next page starts).
pub async fn poll_changes(
    client: &NetSuiteClient,
    cursor: &mut PollCursor,
) -> Result<(Vec<ChangedRow>, bool), DeliveryError> {
    let page = client.suiteql_page(&cursor.query(), POLL_PAGE_SIZE, 0).await?;
    cursor.accept(page.items, page.has_more).map_err(|e| DeliveryError::Server {
        vendor: super::VENDOR,
        status: 200,
        detail: format!("SuiteQL poll row unreadable: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload() -> Vec<u8> {
        fixtures::read_fixture("netsuite/suitescript_userevent_webhook_payload.json").into_bytes()
    }

    #[test]
    fn the_fixture_payload_parses() {
        let event = parse_user_event(&payload()).unwrap();
        assert_eq!(event.event_id, "1234567:purchaseorder:4711:2024-03-15T02:31:00Z:edit");
        assert_eq!(event.record_type, Some(RecordType::PurchaseOrder));
        assert_eq!(event.record_id, "4711");
        assert_eq!(event.event_type, EventType::Edit);
        assert_eq!(event.occurred_at.0.to_string(), "2024-03-15T02:31:05Z");
        assert_eq!(event.fields["approvalstatus"], "1");
        assert_eq!(event.user_id.as_deref(), Some("159"));
    }

    #[test]
    fn signatures_are_checked_over_the_timestamp_and_the_raw_body() {
        let body = payload();
        let secret = b"whsec-netsuite-test";
        let now: Timestamp = "2026-12-07T04:00:00Z".parse().unwrap();
        let signed_at = now.as_second() - 30;
        let header = sign_payload(secret, signed_at, &body);
        assert!(header.starts_with("sha256=") && header.len() == 7 + 64);
        let headers_at = |signature: &str, timestamp: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(SIGNATURE_HEADER, signature.parse().unwrap());
            headers.insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
            headers
        };
        let headers = headers_at(&header, &signed_at.to_string());
        assert_eq!(receive(secret, &headers, &body, now).unwrap().record_id, "4711");
        assert_eq!(receive(b"other", &headers, &body, now).unwrap_err(), InboundError::BadSignature);
        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert_eq!(receive(secret, &headers, &tampered, now).unwrap_err().status(), 401);
        // The timestamp is signed: moving it breaks the signature.
        let moved = headers_at(&header, &(signed_at + 1).to_string());
        assert_eq!(receive(secret, &moved, &body, now).unwrap_err(), InboundError::BadSignature);
        // A body-only signature (the old script) no longer passes.
        let mut old = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).unwrap();
        old.update(&body);
        let old = format!("sha256={}", hex::encode(old.finalize().into_bytes()));
        assert_eq!(
            receive(secret, &headers_at(&old, &signed_at.to_string()), &body, now).unwrap_err(),
            InboundError::BadSignature
        );
        // Missing pieces.
        assert_eq!(receive(secret, &http::HeaderMap::new(), &body, now).unwrap_err(), InboundError::MissingSignature);
        let mut no_time = http::HeaderMap::new();
        no_time.insert(SIGNATURE_HEADER, header.parse().unwrap());
        assert_eq!(receive(secret, &no_time, &body, now).unwrap_err(), InboundError::MissingTimestamp);
        assert_eq!(receive(secret, &headers_at(&header, "soon"), &body, now).unwrap_err().status(), 400);
        // The window, both ways: 5 minutes is in, 5 minutes and a second is a replay.
        for (offset, fresh) in [(-300, true), (300, true), (-301, false), (301, false), (-3600, false)] {
            let at = now.as_second() + offset;
            let signed = headers_at(&sign_payload(secret, at, &body), &at.to_string());
            let got = receive(secret, &signed, &body, now);
            assert_eq!(got.is_ok(), fresh, "{offset}: {got:?}");
            if !fresh {
                assert_eq!(got.unwrap_err(), InboundError::Stale { signed_at: at });
            }
        }
        let upper = header.to_ascii_uppercase().replace("SHA256=", "sha256=");
        assert!(verify_signature(secret, Some(&upper), Some(&signed_at.to_string()), &body, now).is_ok());
    }

    #[test]
    fn malformed_payloads_are_400() {
        let err = parse_user_event(br#"{"eventId":"x"}"#).unwrap_err();
        assert_eq!(err.status(), 400);
        let bad_id = br#"{"eventId":"e","account":"1","recordType":"purchaseorder","recordId":"47a","eventType":"edit","occurredAt":"2024-03-15T02:31:05Z"}"#;
        assert!(matches!(parse_user_event(bad_id), Err(InboundError::Malformed(_))));
    }

    fn row(id: &str, at: &str) -> Value {
        json!({"links": [], "id": id, "lastmodified": at})
    }

    #[test]
    fn ties_on_one_minute_are_told_apart_by_id_without_repeats() {
        let start = "2024-03-15T02:00:00Z".parse().unwrap();
        let mut cursor = PollCursor::new(RecordType::PurchaseOrder, start, TimeZone::UTC);
        let first = cursor
            .accept(vec![row("4711", "2024-03-15T02:31:00"), row("4709", "2024-03-15T02:31:00")], false)
            .unwrap()
            .0;
        assert_eq!(first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["4709", "4711"]);
        assert_eq!(cursor.watermark().to_string(), "2024-03-15T02:31:00Z");
        // The next poll overlaps: the same two rows come again, plus one committed late in the
        // same minute and one later.
        let second = cursor
            .accept(
                vec![
                    row("4709", "2024-03-15T02:31:00"),
                    row("4710", "2024-03-15T02:31:00"),
                    row("4711", "2024-03-15T02:31:00"),
                    row("4712", "2024-03-15T02:40:00"),
                ],
                false,
            )
            .unwrap()
            .0;
        assert_eq!(second.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["4710", "4712"]);
        // An edit of 4711 later is a new change.
        let third = cursor
            .accept(vec![row("4712", "2024-03-15T02:40:00"), row("4711", "2024-03-15T02:41:00")], false)
            .unwrap()
            .0;
        assert_eq!(third.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["4711"]);
        // Pairs older than the overlap are forgotten.
        assert!(cursor.state().seen.iter().all(|(ts, _)| *ts >= cursor.watermark().as_second() - 120));
        let restored = PollCursor::resume(
            RecordType::PurchaseOrder,
            serde_json::from_value(serde_json::to_value(cursor.state()).unwrap()).unwrap(),
            TimeZone::UTC,
        );
        assert_eq!(restored.state(), cursor.state());
    }

    #[test]
    fn the_query_starts_two_minutes_before_the_watermark_in_the_user_zone() {
        let start = "2024-03-15T02:31:00Z".parse().unwrap();
        let utc = PollCursor::new(RecordType::PurchaseOrder, start, TimeZone::UTC).query();
        assert!(utc.contains("type = 'PurchOrd'"), "{utc}");
        assert!(utc.contains("TO_TIMESTAMP('2024-03-15 02:29:00'"), "{utc}");
        assert!(utc.ends_with("ORDER BY lastmodifieddate, id"));
        let hk = TimeZone::fixed(jiff::tz::offset(8));
        let local = PollCursor::new(RecordType::InventoryItem, start, hk.clone());
        assert!(local.query().contains("FROM item WHERE itemtype = 'InvtPart'"));
        assert!(local.query().contains("'2024-03-15 10:29:00'"));
        let mut cursor = local;
        let rows = cursor.accept(vec![row("501", "2024-03-15T10:35:00")], false).unwrap().0;
        assert_eq!(rows[0].last_modified.0.to_string(), "2024-03-15T02:35:00Z");
    }
}
