//! What the CRM connectors (Salesforce, Zoho) share: the canonical snapshot of a changed record,
//! the record-write payload the flows render for CRM destinations, and the batch driver that
//! merges those writes per record, sends them in vendor-sized calls and hands every delivery the
//! result of the record it was merged into.

use async_trait::async_trait;
use connect::{DeliveryError, Disposition, Receipt};
use jiff::Timestamp;
use model::{Money, ZonedTime};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The current state of one CRM record, read after a change notification, in the canonical
/// shape flows are written against (the same for every CRM).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `opportunity`, `account`, `contact`, … (lowercase, singular).
    pub entity: String,
    /// The vendor record id (Salesforce: 18 characters).
    pub entity_id: String,
    /// When the vendor last changed the record (SystemModstamp / Modified_Time), epoch millis.
    pub source_time_ms: Option<i64>,
    pub data: Value,
}

/// The canonical entity of a vendor object or module name: lowercase and singular
/// (`Account` → `account`, `Accounts` → `account`, `Sales_Orders` → `sales_order`); deals are
/// opportunities in both CRMs.
pub fn entity_name(object: &str) -> String {
    let lower = object.to_ascii_lowercase();
    let singular = if let Some(stem) = lower.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = lower.strip_suffix("sses") {
        format!("{stem}ss")
    } else if lower.ends_with('s') && !lower.ends_with("ss") && !lower.ends_with("us") {
        lower[..lower.len() - 1].to_owned()
    } else {
        lower
    };
    if singular == "deal" {
        "opportunity".to_owned()
    } else {
        singular
    }
}

// ---------------------------------------------------------------------------------------------
// Record writes
// ---------------------------------------------------------------------------------------------

/// What a record write does to the vendor record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteOp {
    /// Change fields of an existing record named by its vendor id.
    Update,
    /// Create or change the record whose external id field holds the given value.
    Upsert,
}

impl WriteOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Update => "update",
            Self::Upsert => "upsert",
        }
    }
}

/// One record write as a flow rendered it for a `salesforce` / `zoho` destination:
/// `{"api":"record","object":"Account","op":"update","id":"…","fields":{…}}` or
/// `{"api":"record","object":"Account","op":"upsert","external_id_field":"ERP_Customer_No__c",
/// "external_id":"C-1001","fields":{…}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    /// Salesforce object API name, or Zoho module API name.
    pub object: String,
    pub op: WriteOp,
    /// The record id (update) or the external id value (upsert).
    pub key: String,
    /// Upserts only: the field the key is matched against.
    pub external_id_field: Option<String>,
    /// Field API name → absolute value to write (`null` clears the field).
    pub fields: Map<String, Value>,
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What is wrong with a record-write payload, in terms of the payload, for the flow author (it
/// ends up in the dead-letter list).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("`api` is {0}; a CRM record write needs \"api\": \"record\"")]
    WrongApi(Value),
    #[error("`api` is missing; a CRM record write needs \"api\": \"record\"")]
    MissingApi,
    #[error("`object` is missing: name the object or module, e.g. \"Account\"")]
    MissingObject,
    #[error("`{key}` must be a string, got {got}")]
    NotText { key: String, got: &'static str },
    #[error("unknown op {0}: expected \"update\" or \"upsert\"")]
    UnknownOp(Value),
    #[error("`op` is missing: expected \"update\" or \"upsert\"")]
    MissingOp,
    #[error("`fields` must be an object of field name → value, got {0}")]
    FieldsNotAnObject(&'static str),
    #[error("`fields` is missing: an object of field name → value")]
    MissingFields,
    #[error(
        "`fields` names `{0}`; the record id goes in `id` (update) or `external_id` (upsert), \
         not among the fields"
    )]
    IdAmongFields(String),
    #[error("an update needs `id`, the vendor's record id")]
    MissingId,
    #[error("an upsert needs `external_id_field`, the field that identifies the record")]
    MissingExternalIdField,
    #[error("an upsert needs `external_id`, the value of `{0}`")]
    MissingExternalId(String),
    #[error("`external_id` must be a string or a whole number, got {0}")]
    ExternalIdNotAKey(&'static str),
    #[error("`fields.{0}` differs from `external_id`; drop it from `fields` or make them equal")]
    ExternalIdDiffers(String),
}

/// A required, non-blank string member of the payload.
fn required_text(map: &Map<String, Value>, key: &str, missing: PayloadError) -> Result<String, PayloadError> {
    match map.get(key) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(missing),
        Some(other) => Err(PayloadError::NotText { key: key.to_owned(), got: json_kind(other) }),
    }
}

impl RecordWrite {
    /// Reads a record-write payload. The error says what is wrong in terms of the payload, for
    /// the flow author (it ends up in the dead-letter list).
    pub fn from_payload(payload: &Value) -> Result<RecordWrite, PayloadError> {
        let Some(map) = payload.as_object() else {
            return Err(PayloadError::NotAnObject(json_kind(payload)));
        };
        match map.get("api") {
            Some(Value::String(api)) if api == "record" => {}
            Some(other) => return Err(PayloadError::WrongApi(other.clone())),
            None => return Err(PayloadError::MissingApi),
        }
        let object = required_text(map, "object", PayloadError::MissingObject)?;
        let op = match map.get("op") {
            Some(Value::String(op)) if op == "update" => WriteOp::Update,
            Some(Value::String(op)) if op == "upsert" => WriteOp::Upsert,
            Some(other) => return Err(PayloadError::UnknownOp(other.clone())),
            None => return Err(PayloadError::MissingOp),
        };
        let fields = match map.get("fields") {
            Some(Value::Object(fields)) => fields.clone(),
            Some(other) => return Err(PayloadError::FieldsNotAnObject(json_kind(other))),
            None => return Err(PayloadError::MissingFields),
        };
        if let Some(name) = fields.keys().find(|k| k.eq_ignore_ascii_case("id")) {
            return Err(PayloadError::IdAmongFields(name.clone()));
        }
        let (key, external_id_field) = match op {
            WriteOp::Update => (required_text(map, "id", PayloadError::MissingId)?, None),
            WriteOp::Upsert => {
                let field = required_text(map, "external_id_field", PayloadError::MissingExternalIdField)?;
                let value = match map.get("external_id") {
                    Some(Value::String(text)) if !text.trim().is_empty() => text.trim().to_owned(),
                    // Whole numbers are exact in JSON up to u64/i64; fractions would not be a key.
                    Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
                    Some(Value::String(_)) | None | Some(Value::Null) => {
                        return Err(PayloadError::MissingExternalId(field))
                    }
                    Some(other) => return Err(PayloadError::ExternalIdNotAKey(json_kind(other))),
                };
                if let Some(given) = fields.get(&field) {
                    let same = match given {
                        Value::String(s) => s.trim() == value,
                        Value::Number(n) => n.to_string() == value,
                        _ => false,
                    };
                    if !same {
                        return Err(PayloadError::ExternalIdDiffers(field));
                    }
                }
                (value, Some(field))
            }
        };
        Ok(RecordWrite { object, op, key, external_id_field, fields })
    }
}

/// Writes to the same record merged into one: `members` are the indexes (into the batch) of the
/// deliveries merged, in batch order.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedWrite {
    pub write: RecordWrite,
    pub members: Vec<usize>,
}

type RecordIdentity<'a> = (&'a str, WriteOp, Option<&'a str>, &'a str);

fn identity(write: &RecordWrite) -> RecordIdentity<'_> {
    (write.object.as_str(), write.op, write.external_id_field.as_deref(), write.key.as_str())
}

/// Merges writes to the same record (same object, op, external id field and key), in order of
/// first appearance; a later write's field values replace earlier ones. Writes set absolute
/// values, so the merged write leaves the record as the writes one after another would.
/// Keys are compared as given: callers normalise them first (Salesforce 15/18-character ids).
pub fn merge_writes(writes: &[(usize, RecordWrite)]) -> Vec<MergedWrite> {
    let mut merged: Vec<MergedWrite> = Vec::new();
    let mut seen: HashMap<RecordIdentity<'_>, usize> = HashMap::new();
    for (index, write) in writes {
        match seen.get(&identity(write)) {
            Some(&at) => {
                let into = &mut merged[at];
                into.write.fields.extend(write.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                into.members.push(*index);
            }
            None => {
                seen.insert(identity(write), merged.len());
                merged.push(MergedWrite { write: write.clone(), members: vec![*index] });
            }
        }
    }
    merged
}

/// Splits merged writes into vendor calls: each call is one object, op and external id field
/// (groups in order of first appearance) and holds at most `max_records` records. Returns
/// indexes into `merged`.
pub fn plan_calls(merged: &[MergedWrite], max_records: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_kind: HashMap<(&str, WriteOp, Option<&str>), usize> = HashMap::new();
    for (i, m) in merged.iter().enumerate() {
        let kind = (m.write.object.as_str(), m.write.op, m.write.external_id_field.as_deref());
        let group = *by_kind.entry(kind).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(i);
    }
    groups.iter().flat_map(|g| g.chunks(max_records.max(1)).map(<[usize]>::to_vec)).collect()
}

/// One result per delivery (or per record of a call), in order.
pub type WriteResults = Vec<Result<Receipt, DeliveryError>>;

/// One vendor's way of writing a call's worth of merged records.
#[async_trait]
pub trait RecordWriter: Send + Sync {
    /// Vendor label for errors the batch driver makes itself.
    fn vendor(&self) -> &'static str;

    /// Sends ONE vendor call for `writes`, which share object, op and external id field and are
    /// no more than the vendor takes per call. Returns one result per write, in order, or the
    /// error of the whole call.
    async fn write_call(&self, writes: &[&RecordWrite]) -> Result<WriteResults, DeliveryError>;
}

/// True when an error of one call means the next calls would fail the same way: the vendor is
/// throttling (or our quota guard refused) or the credentials are rejected. Sending more would
/// only burn quota, so the rest of the batch gets the same error without a call.
pub fn halts_batch(error: &DeliveryError) -> bool {
    matches!(error.disposition(), Disposition::RetryAfter(_) | Disposition::Auth)
}

/// Delivers a batch of parsed record writes through `writer`: merges writes per record, splits
/// them into calls of at most `max_records`, and returns exactly one result per input, in input
/// order. Inputs that failed to parse keep their error; every delivery merged into a record gets
/// that record's result; a failed call gives each of its deliveries a clone of the error; after
/// a throttle or auth error the remaining calls are not attempted.
pub async fn deliver_writes<W: RecordWriter + ?Sized>(
    writer: &W,
    parsed: Vec<Result<RecordWrite, DeliveryError>>,
    max_records: usize,
) -> WriteResults {
    let vendor = writer.vendor();
    let mut results: Vec<Option<Result<Receipt, DeliveryError>>> = vec![None; parsed.len()];
    let mut writes = Vec::with_capacity(parsed.len());
    for (index, item) in parsed.into_iter().enumerate() {
        match item {
            Ok(write) => writes.push((index, write)),
            Err(err) => results[index] = Some(Err(err)),
        }
    }
    let merged = merge_writes(&writes);
    let calls = plan_calls(&merged, max_records);
    tracing::debug!(
        vendor,
        deliveries = results.len(),
        records = merged.len(),
        calls = calls.len(),
        "Writing a batch of CRM records."
    );
    let mut halted: Option<DeliveryError> = None;
    for call in calls {
        let outcome = match &halted {
            Some(err) => vec![Err(err.clone()); call.len()],
            None => {
                let group: Vec<&RecordWrite> = call.iter().map(|&m| &merged[m].write).collect();
                match writer.write_call(&group).await {
                    Ok(per_record) if per_record.len() == group.len() => per_record,
                    Ok(per_record) => {
                        let err = DeliveryError::Server {
                            vendor,
                            status: 200,
                            detail: format!("{} results for {} records in one call", per_record.len(), group.len()),
                        };
                        vec![Err(err); group.len()]
                    }
                    Err(err) => {
                        tracing::warn!(
                            vendor,
                            object = %group.first().map_or("", |w| w.object.as_str()),
                            records = group.len(),
                            kind = err.kind(),
                            "A CRM record write call failed as a whole."
                        );
                        if halts_batch(&err) {
                            halted = Some(err.clone());
                        }
                        vec![Err(err); group.len()]
                    }
                }
            }
        };
        for (&m, result) in call.iter().zip(outcome) {
            let members = &merged[m].members;
            let result = match result {
                Ok(mut receipt) if members.len() > 1 => {
                    let note = format!("{} deliveries merged into one write", members.len());
                    receipt.detail = Some(match receipt.detail {
                        Some(detail) => format!("{detail}; {note}"),
                        None => note,
                    });
                    Ok(receipt)
                }
                other => other,
            };
            for &member in members {
                results[member] = Some(result.clone());
            }
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(DeliveryError::Server { vendor, status: 0, detail: "the batch driver lost a delivery".to_owned() })
            })
        })
        .collect()
}

/// The one result of a batch of one (`Sink::deliver`).
pub fn single_result(results: WriteResults, vendor: &'static str) -> Result<Receipt, DeliveryError> {
    results.into_iter().next().unwrap_or_else(|| {
        Err(DeliveryError::Server { vendor, status: 0, detail: "a batch of one gave no result".to_owned() })
    })
}

/// `error` with `context` (which record) in front of its detail.
pub fn in_context(error: DeliveryError, context: &str) -> DeliveryError {
    match error {
        DeliveryError::Transport { endpoint, reason } => {
            DeliveryError::Transport { endpoint, reason: format!("{context}: {reason}") }
        }
        DeliveryError::Timeout { endpoint, after } => DeliveryError::Timeout { endpoint, after },
        DeliveryError::Throttled { vendor, detail, retry_after } => {
            DeliveryError::Throttled { vendor, detail: format!("{context}: {detail}"), retry_after }
        }
        DeliveryError::Server { vendor, status, detail } => {
            DeliveryError::Server { vendor, status, detail: format!("{context}: {detail}") }
        }
        DeliveryError::Auth { vendor, detail } => {
            DeliveryError::Auth { vendor, detail: format!("{context}: {detail}") }
        }
        DeliveryError::Rejected { vendor, detail } => {
            DeliveryError::Rejected { vendor, detail: format!("{context}: {detail}") }
        }
        DeliveryError::BadPayload { destination, detail } => {
            DeliveryError::BadPayload { destination, detail: format!("{context}: {detail}") }
        }
        DeliveryError::UnsafeDestination { endpoint, reason } => {
            DeliveryError::UnsafeDestination { endpoint, reason: format!("{context}: {reason}") }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The canonical opportunity
// ---------------------------------------------------------------------------------------------

/// Activities a snapshot carries at most.
pub const MAX_ACTIVITIES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityKind {
    Call,
    Task,
    Meeting,
    Note,
}

/// One interaction on a deal, as flows show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Activity {
    pub kind: ActivityKind,
    pub subject: Option<String>,
    /// RFC 3339 at +08:00 for instants, `YYYY-MM-DD` for dates.
    pub when: Option<String>,
    /// The contact (activities) or the author (notes).
    pub who: Option<String>,
    /// The instant `when` sorts at (a date sorts at its midnight UTC).
    #[serde(skip)]
    at: Option<Timestamp>,
}

impl Activity {
    /// `when` as the vendor wrote it: a datetime with offset, or a date. Anything else is left
    /// out (and sorts last) rather than passed on in a shape flows do not expect.
    pub fn new(kind: ActivityKind, subject: Option<String>, when: Option<&str>, who: Option<String>) -> Activity {
        let (when, at) = match when {
            Some(text) => match ZonedTime::parse("when", text) {
                Ok(time) => (Some(time.to_rfc3339()), Some(time.timestamp())),
                Err(_) => match text.parse::<jiff::civil::Date>() {
                    Ok(date) => {
                        (Some(date.to_string()), date.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp()))
                    }
                    Err(_) => (None, None),
                },
            },
            None => (None, None),
        };
        Activity { kind, subject, when, who, at }
    }
}

/// The newest [`MAX_ACTIVITIES`] activities, newest first; undated ones last; equal instants
/// keep the order given.
pub fn newest_activities(mut activities: Vec<Activity>) -> Vec<Activity> {
    activities.sort_by(|a, b| match (a.at, b.at) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    activities.truncate(MAX_ACTIVITIES);
    activities
}

/// A user (the deal owner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Person {
    pub id: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
}

/// The customer account of a deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct AccountSummary {
    pub id: Option<String>,
    pub name: Option<String>,
    pub industry: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub phone: Option<String>,
}

/// A customer-side person on a deal. No emails or phones: this reaches chat groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactRole {
    pub name: Option<String>,
    pub role: Option<String>,
    pub primary: bool,
}

/// The canonical opportunity (Salesforce Opportunity, Zoho Deal): one shape for every CRM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Opportunity {
    pub id: String,
    pub name: Option<String>,
    pub stage: Option<String>,
    /// Exact: the amount is a string in JSON. Left out when the deal has no amount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<Money>,
    /// `YYYY-MM-DD`.
    pub close_date: Option<String>,
    /// 0–100.
    pub probability: Option<Value>,
    pub next_step: Option<String>,
    pub owner: Option<Person>,
    pub account: Option<AccountSummary>,
    pub contacts: Vec<ContactRole>,
    /// At most [`MAX_ACTIVITIES`], newest first.
    pub activities: Vec<Activity>,
    /// The vendor's own record fields as read.
    pub record: Value,
}

impl Opportunity {
    pub fn into_snapshot(self, source_time_ms: Option<i64>, vendor: &'static str) -> Result<Snapshot, DeliveryError> {
        let entity_id = self.id.clone();
        let data = serde_json::to_value(&self).map_err(|e| DeliveryError::Server {
            vendor,
            status: 200,
            detail: format!("opportunity {entity_id} cannot be turned into JSON ({e})"),
        })?;
        Ok(Snapshot { entity: "opportunity".to_owned(), entity_id, source_time_ms, data })
    }
}

/// A percentage as JSON: whole numbers without `.0` (Salesforce sends `90.0`).
pub fn percent(value: &Value) -> Option<Value> {
    let number = value.as_number()?;
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= 1e15 => Some(Value::from(f as i64)),
        _ => Some(Value::Number(number.clone())),
    }
}

/// A string member of a JSON object.
pub fn text_of(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The first `max_chars` characters of `text` (on a character boundary), with `…` when cut.
pub fn snippet(text: &str, max_chars: usize) -> String {
    let first_line = text.lines().next().unwrap_or_default().trim();
    let mut out: String = first_line.chars().take(max_chars).collect();
    if first_line.chars().count() > max_chars || text.trim().lines().count() > 1 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;
    use std::time::Duration;

    fn write(payload: Value) -> RecordWrite {
        RecordWrite::from_payload(&payload).unwrap()
    }

    fn payload_error(payload: Value) -> String {
        RecordWrite::from_payload(&payload).unwrap_err().to_string()
    }

    #[test]
    fn record_payloads_parse() {
        let update = write(json!({"api":"record","object":"Account","op":"update","id":"0015g00000HkAbCAAV",
            "fields":{"Credit_Status__c":"Hold","AnnualRevenue":null}}));
        assert_eq!(update.op, WriteOp::Update);
        assert_eq!(update.key, "0015g00000HkAbCAAV");
        assert_eq!(update.external_id_field, None);
        assert_eq!(update.fields["AnnualRevenue"], Value::Null);
        let upsert =
            write(json!({"api":"record","object":"Account","op":"upsert","external_id_field":"ERP_Customer_No__c",
            "external_id":"C-1001","fields":{"Name":"KPC","ERP_Customer_No__c":"C-1001"}}));
        assert_eq!((upsert.op, upsert.key.as_str()), (WriteOp::Upsert, "C-1001"));
        assert_eq!(upsert.external_id_field.as_deref(), Some("ERP_Customer_No__c"));
        let numeric =
            write(json!({"api":"record","object":"Accounts","op":"upsert","external_id_field":"Account_Number",
            "external_id":1001,"fields":{}}));
        assert_eq!(numeric.key, "1001");
    }

    #[test]
    fn bad_record_payloads_say_what_is_wrong() {
        let base = json!({"api":"record","object":"Account","op":"update","id":"0015g00000HkAbCAAV","fields":{}});
        let with = |key: &str, value: Value| {
            let mut p = base.clone();
            p[key] = value;
            payload_error(p)
        };
        let without = |key: &str| {
            let mut p = base.clone();
            p.as_object_mut().unwrap().remove(key);
            payload_error(p)
        };
        assert!(payload_error(json!([1])).contains("JSON object"));
        assert!(with("api", json!("message")).contains("\"api\": \"record\""));
        assert!(without("api").contains("`api` is missing"));
        assert!(without("id").contains("an update needs `id`"));
        assert!(with("id", json!("  ")).contains("an update needs `id`"));
        assert!(with("id", json!(5843104000001234001_u64)).contains("`id` must be a string"));
        assert!(with("op", json!("delete")).contains("unknown op \"delete\""));
        assert!(without("op").contains("`op` is missing"));
        assert!(without("object").contains("`object` is missing"));
        assert!(with("fields", json!(["Name"])).contains("`fields` must be an object"));
        assert!(without("fields").contains("`fields` is missing"));
        assert!(with("fields", json!({"Id": "x"})).contains("the record id goes in `id`"));
        let upsert = json!({"api":"record","object":"Account","op":"upsert","external_id":"C-1","fields":{}});
        assert!(payload_error(upsert.clone()).contains("needs `external_id_field`"));
        let mut no_value = upsert.clone();
        no_value["external_id_field"] = json!("ERP__c");
        no_value.as_object_mut().unwrap().remove("external_id");
        assert!(payload_error(no_value.clone()).contains("needs `external_id`, the value of `ERP__c`"));
        no_value["external_id"] = json!(1.5);
        assert!(payload_error(no_value.clone()).contains("string or a whole number"));
        no_value["external_id"] = json!("C-1");
        no_value["fields"] = json!({"ERP__c": "C-2"});
        assert!(payload_error(no_value).contains("differs from `external_id`"));
    }

    fn at(i: usize, payload: Value) -> (usize, RecordWrite) {
        (i, write(payload))
    }

    fn update(id: &str, fields: Value) -> Value {
        json!({"api":"record","object":"Account","op":"update","id":id,"fields":fields})
    }

    #[test]
    fn merging_keeps_first_appearance_order_and_later_values() {
        let writes = vec![
            at(0, update("A", json!({"Rating":"Hot","Phone":"1"}))),
            at(1, update("B", json!({"Rating":"Warm"}))),
            at(2, update("A", json!({"Phone":"2","Industry":"Retail"}))),
            at(
                3,
                json!({"api":"record","object":"Account","op":"upsert","external_id_field":"ERP__c",
                    "external_id":"A","fields":{"Name":"x"}}),
            ),
            at(4, json!({"api":"record","object":"Contact","op":"update","id":"A","fields":{"Title":"CFO"}})),
            at(5, update("A", json!({"Rating":"Cold"}))),
        ];
        let merged = merge_writes(&writes);
        assert_eq!(merged.len(), 4, "same key under another op or object is another record");
        assert_eq!(merged[0].members, [0, 2, 5]);
        assert_eq!(
            merged[0].write.fields,
            *json!({"Rating":"Cold","Phone":"2","Industry":"Retail"}).as_object().unwrap()
        );
        assert_eq!(merged[1].members, [1]);
        assert_eq!(merged[2].write.op, WriteOp::Upsert);
        assert_eq!(merged[3].write.object, "Contact");
        assert!(merge_writes(&[]).is_empty());
    }

    #[test]
    fn calls_are_one_object_and_op_each_and_capped() {
        let mut writes: Vec<(usize, RecordWrite)> =
            (0..5).map(|i| at(i, update(&format!("A{i}"), json!({"Rating":"Hot"})))).collect();
        writes.push(at(5, json!({"api":"record","object":"Contact","op":"update","id":"C","fields":{}})));
        writes.push(at(6, update("A9", json!({}))));
        let merged = merge_writes(&writes);
        let calls = plan_calls(&merged, 2);
        assert_eq!(calls, vec![vec![0, 1], vec![2, 3], vec![4, 6], vec![5]]);
        assert_eq!(plan_calls(&merged, 0).len(), 7, "a zero limit still makes progress");
    }

    #[test]
    fn entity_names_are_lowercase_singular() {
        for (object, entity) in [
            ("Account", "account"),
            ("Accounts", "account"),
            ("Contacts", "contact"),
            ("Deals", "opportunity"),
            ("Opportunity", "opportunity"),
            ("Sales_Orders", "sales_order"),
            ("Activities", "activity"),
            ("Address", "address"),
            ("CaseStatus", "casestatus"),
            ("Invoice__c", "invoice__c"),
        ] {
            assert_eq!(entity_name(object), entity, "{object}");
        }
    }

    #[test]
    fn activities_sort_newest_first_and_cap_at_five() {
        let list = vec![
            Activity::new(ActivityKind::Task, Some("old task".into()), Some("2025-08-01"), None),
            Activity::new(ActivityKind::Meeting, Some("visit".into()), Some("2025-08-20T02:00:00.000+0000"), None),
            Activity::new(ActivityKind::Note, Some("undated".into()), None, None),
            Activity::new(ActivityKind::Call, Some("call".into()), Some("2025-08-14T14:23:00+08:00"), None),
            Activity::new(ActivityKind::Task, Some("due".into()), Some("2025-08-15"), None),
            Activity::new(ActivityKind::Task, Some("garbled".into()), Some("next week"), None),
            Activity::new(ActivityKind::Note, Some("note".into()), Some("2025-08-02T09:00:00Z"), None),
        ];
        let newest = newest_activities(list);
        let subjects: Vec<&str> = newest.iter().map(|a| a.subject.as_deref().unwrap()).collect();
        assert_eq!(subjects, ["visit", "due", "call", "note", "old task"]);
        assert_eq!(newest[0].when.as_deref(), Some("2025-08-20T10:00:00+08:00"), "instants in HK time");
        assert_eq!(newest[1].when.as_deref(), Some("2025-08-15"), "dates stay dates");
        let json = serde_json::to_value(&newest[0]).unwrap();
        assert_eq!(json, json!({"kind":"meeting","subject":"visit","when":"2025-08-20T10:00:00+08:00","who":null}));
    }

    #[test]
    fn percentages_and_snippets() {
        assert_eq!(percent(&json!(90.0)), Some(json!(90)));
        assert_eq!(percent(&json!(12.5)), Some(json!(12.5)));
        assert_eq!(percent(&json!("90")), None);
        assert_eq!(snippet("Short", 10), "Short");
        assert_eq!(snippet("0123456789abc", 10), "0123456789…");
        assert_eq!(snippet("line one\nline two", 20), "line one…");
        assert_eq!(snippet("客戶要求第二批折扣三個百分點", 4), "客戶要求…");
    }

    #[test]
    fn context_goes_in_front_of_the_detail_and_keeps_the_disposition() {
        let err = in_context(
            DeliveryError::Throttled { vendor: "x", detail: "slow down".into(), retry_after: Duration::from_secs(7) },
            "Deals 1",
        );
        assert_eq!(err.disposition(), Disposition::RetryAfter(Duration::from_secs(7)));
        assert!(err.to_string().contains("Deals 1: slow down"), "{err}");
        let err = in_context(DeliveryError::Rejected { vendor: "x", detail: "INVALID_DATA".into() }, "Deals 2");
        assert_eq!(err.disposition(), Disposition::Permanent);
        assert!(err.to_string().contains("Deals 2: INVALID_DATA"));
    }

    /// Answers calls from a script and records what was asked.
    struct Scripted {
        answers: Mutex<Vec<Result<WriteResults, DeliveryError>>>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl RecordWriter for Scripted {
        fn vendor(&self) -> &'static str {
            "test"
        }
        async fn write_call(&self, writes: &[&RecordWrite]) -> Result<WriteResults, DeliveryError> {
            self.calls.lock().unwrap().push(writes.iter().map(|w| w.key.clone()).collect());
            self.answers.lock().unwrap().remove(0)
        }
    }

    fn ok(id: &str) -> Result<Receipt, DeliveryError> {
        Ok(Receipt { vendor_id: Some(id.into()), detail: Some("Account updated".into()) })
    }

    #[tokio::test]
    async fn the_driver_fans_results_out_in_input_order() {
        let writer = Scripted {
            answers: Mutex::new(vec![
                Ok(vec![ok("A"), Err(DeliveryError::Rejected { vendor: "test", detail: "MALFORMED_ID".into() })]),
                Ok(vec![ok("C")]),
            ]),
            calls: Mutex::new(Vec::new()),
        };
        let parsed = vec![
            Ok(write(update("A", json!({"Rating":"Hot"})))),
            Err(DeliveryError::BadPayload { destination: "sf".into(), detail: "no id".into() }),
            Ok(write(update("B", json!({})))),
            Ok(write(update("A", json!({"Rating":"Cold"})))),
            Ok(write(update("C", json!({})))),
        ];
        let results = deliver_writes(&writer, parsed, 2).await;
        assert_eq!(results.len(), 5);
        assert_eq!(*writer.calls.lock().unwrap(), vec![vec!["A", "B"], vec!["C"]]);
        let first = results[0].as_ref().unwrap();
        assert_eq!(first.vendor_id.as_deref(), Some("A"));
        assert_eq!(first.detail.as_deref(), Some("Account updated; 2 deliveries merged into one write"));
        assert_eq!(results[3].as_ref().unwrap().vendor_id.as_deref(), Some("A"));
        assert_eq!(results[1].as_ref().unwrap_err().kind(), "bad_payload");
        assert_eq!(results[2].as_ref().unwrap_err().kind(), "rejected");
        assert_eq!(results[4].as_ref().unwrap().detail.as_deref(), Some("Account updated"));
    }

    #[tokio::test]
    async fn a_throttle_stops_the_remaining_calls_and_a_server_error_does_not() {
        let throttled =
            DeliveryError::Throttled { vendor: "test", detail: "quota".into(), retry_after: Duration::from_secs(60) };
        let writer = Scripted {
            answers: Mutex::new(vec![
                Err(DeliveryError::Server { vendor: "test", status: 503, detail: "down".into() }),
                Err(throttled.clone()),
            ]),
            calls: Mutex::new(Vec::new()),
        };
        let parsed = (0..5).map(|i| Ok(write(update(&format!("R{i}"), json!({}))))).collect();
        let results = deliver_writes(&writer, parsed, 2).await;
        assert_eq!(writer.calls.lock().unwrap().len(), 2, "the third call is never made");
        assert_eq!(results[0].as_ref().unwrap_err().kind(), "server");
        assert_eq!(results[1].as_ref().unwrap_err().kind(), "server");
        for r in &results[2..] {
            assert_eq!(r.as_ref().unwrap_err().disposition(), Disposition::RetryAfter(Duration::from_secs(60)));
        }
        assert!(halts_batch(&DeliveryError::Auth { vendor: "test", detail: "revoked".into() }));
        assert!(!halts_batch(&DeliveryError::Rejected { vendor: "test", detail: "bad".into() }));
    }

    #[tokio::test]
    async fn a_short_answer_fails_the_call_and_an_empty_batch_makes_none() {
        let writer = Scripted { answers: Mutex::new(vec![Ok(vec![ok("A")])]), calls: Mutex::new(Vec::new()) };
        let parsed = vec![Ok(write(update("A", json!({})))), Ok(write(update("B", json!({}))))];
        let results = deliver_writes(&writer, parsed, 10).await;
        assert!(results.iter().all(|r| r.as_ref().unwrap_err().to_string().contains("1 results for 2 records")));
        assert!(deliver_writes(&writer, Vec::new(), 10).await.is_empty());
        assert_eq!(writer.calls.lock().unwrap().len(), 1);
        assert_eq!(single_result(Vec::new(), "test").unwrap_err().kind(), "server");
    }
}
