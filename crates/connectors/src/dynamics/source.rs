//! Change detection (reference C8): Dataverse webhook `RemoteExecutionContext` payloads parsed
//! into plain structs, and the change-tracking delta-link cursor for polling.
//!
//! Webhooks are fire-and-forget on Dataverse's side (one retry only on 502/503/504), so the
//! receiver acks fast and the delta poll reconciles whatever was missed.

use super::client::{decimal_of, DataverseClient, Prefer};
use connect::DeliveryError;
use http::HeaderMap;
use model::{Decimal, ParseError, ZonedTime};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The `x-ms-dynamics-*` headers of a webhook POST.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookHeaders {
    pub organization: Option<String>,
    pub entity_name: Option<String>,
    pub request_name: Option<String>,
    pub correlation_id: Option<String>,
    /// The context was over 256 KB, so inputs and images were dropped: refetch the record.
    pub size_exceeded: bool,
}

impl WebhookHeaders {
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Self {
            organization: get("x-ms-dynamics-organization"),
            entity_name: get("x-ms-dynamics-entity-name"),
            request_name: get("x-ms-dynamics-request-name"),
            correlation_id: get("x-ms-correlation-request-id"),
            size_exceeded: get("x-ms-dynamics-msg-size-exceeded").is_some_and(|v| !v.eq_ignore_ascii_case("false")),
        }
    }
}

/// An attribute value, typed where the payload says its type (`__type`, `/Date(…)/`).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Null,
    Bool(bool),
    Int(i64),
    /// A JSON number with a fraction, type not declared.
    Number(Decimal),
    /// A plain string; GUIDs arrive like this too (the payload does not say which).
    Text(String),
    /// `\/Date(ms)\/`, an instant in UTC.
    DateTime(ZonedTime),
    OptionSet(i64),
    /// Amount in the record's transaction currency.
    Money(Decimal),
    Reference {
        id: String,
        logical_name: String,
        name: Option<String>,
    },
    /// Anything else (nested entities, collections), kept as sent.
    Other(Value),
}

fn type_name(value: &Value) -> Option<&str> {
    value.get("__type").and_then(Value::as_str).and_then(|t| t.split(':').next())
}

impl AttrValue {
    pub fn from_json(key: &str, value: &Value) -> Result<AttrValue, ParseError> {
        Ok(match value {
            Value::Null => AttrValue::Null,
            Value::Bool(b) => AttrValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AttrValue::Int(i),
                None => AttrValue::Number(decimal_of(key, value)?.unwrap_or_default()),
            },
            Value::String(s) if s.starts_with("/Date(") => AttrValue::DateTime(ZonedTime::parse(key, s)?),
            Value::String(s) => AttrValue::Text(s.clone()),
            Value::Object(map) => match type_name(value) {
                Some("OptionSetValue") => AttrValue::OptionSet(
                    map.get("Value")
                        .and_then(Value::as_i64)
                        .ok_or_else(|| ParseError::new(key, &value.to_string(), "has no integer Value"))?,
                ),
                Some("Money") => AttrValue::Money(
                    decimal_of(key, map.get("Value").unwrap_or(&Value::Null))?
                        .ok_or_else(|| ParseError::new(key, &value.to_string(), "has no Value"))?,
                ),
                Some("EntityReference") => AttrValue::Reference {
                    id: map.get("Id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    logical_name: map.get("LogicalName").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    name: map.get("Name").and_then(Value::as_str).map(str::to_owned),
                },
                _ => AttrValue::Other(value.clone()),
            },
            Value::Array(_) => AttrValue::Other(value.clone()),
        })
    }
}

/// An `Entity` of the context: the Target or a pre/post image.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityImage {
    pub logical_name: String,
    pub id: String,
    pub attributes: BTreeMap<String, AttrValue>,
    pub row_version: Option<String>,
}

impl EntityImage {
    pub fn from_json(value: &Value) -> Result<EntityImage, ParseError> {
        let mut attributes = BTreeMap::new();
        for pair in value.get("Attributes").and_then(Value::as_array).into_iter().flatten() {
            let key = pair.get("key").and_then(Value::as_str).unwrap_or_default();
            attributes.insert(key.to_owned(), AttrValue::from_json(key, pair.get("value").unwrap_or(&Value::Null))?);
        }
        Ok(EntityImage {
            logical_name: value.get("LogicalName").and_then(Value::as_str).unwrap_or_default().to_owned(),
            id: value.get("Id").and_then(Value::as_str).unwrap_or_default().to_owned(),
            attributes,
            row_version: value.get("RowVersion").and_then(Value::as_str).map(str::to_owned),
        })
    }
}

/// One webhook delivery, the parts dingbridge acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// `Create`, `Update`, `Delete`, …
    pub message_name: String,
    pub entity: String,
    pub id: String,
    /// 20 pre-operation, 30 main, 40 post-operation.
    pub stage: i64,
    /// 0 synchronous, 1 asynchronous.
    pub mode: i64,
    pub depth: i64,
    pub correlation_id: String,
    /// Unique per operation: the idempotency key for the receiver.
    pub operation_id: String,
    pub operation_created_on: ZonedTime,
    pub organization_name: String,
    /// The `Target` input parameter when it is an entity (the changed columns only).
    pub target: Option<EntityImage>,
    pub pre_images: BTreeMap<String, EntityImage>,
    pub post_images: BTreeMap<String, EntityImage>,
}

/// How old a webhook's `OperationCreatedOn` may be. Dataverse posts from its asynchronous
/// service, which can run well behind under load, so the window is a day, not minutes: long
/// enough for any legitimate delivery, short enough that a captured request cannot be sent
/// again weeks later (one sent again inside it is a duplicate of the first: same `OperationId`).
pub const WEBHOOK_MAX_AGE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
/// How far in the future `OperationCreatedOn` may be (clock skew).
pub const WEBHOOK_MAX_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_mins(5);

impl WebhookEvent {
    /// Whether the operation happened inside [`WEBHOOK_MAX_AGE`] before `now` (and at most
    /// [`WEBHOOK_MAX_SKEW`] after it).
    pub fn is_fresh(&self, now: jiff::Timestamp) -> bool {
        let at = self.operation_created_on.timestamp();
        at >= now - WEBHOOK_MAX_AGE && at <= now + WEBHOOK_MAX_SKEW
    }
}

fn images(context: &Value, key: &str) -> Result<BTreeMap<String, EntityImage>, ParseError> {
    let mut out = BTreeMap::new();
    for pair in context.get(key).and_then(Value::as_array).into_iter().flatten() {
        let name = pair.get("key").and_then(Value::as_str).unwrap_or_default();
        out.insert(name.to_owned(), EntityImage::from_json(pair.get("value").unwrap_or(&Value::Null))?);
    }
    Ok(out)
}

/// Parses a `RemoteExecutionContext` body.
pub fn parse_webhook(body: &[u8]) -> Result<WebhookEvent, ParseError> {
    let context: Value = serde_json::from_slice(body)
        .map_err(|e| ParseError::new("RemoteExecutionContext", "(body)", format!("is not JSON ({e})")))?;
    let text = |key: &str| -> Result<String, ParseError> {
        context
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ParseError::new(key, "(missing)", "is required in a RemoteExecutionContext"))
    };
    let int = |key: &str| context.get(key).and_then(Value::as_i64).unwrap_or_default();
    let target = context
        .get("InputParameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("key").and_then(Value::as_str) == Some("Target"))
        .and_then(|p| p.get("value"))
        .filter(|v| type_name(v) == Some("Entity"))
        .map(EntityImage::from_json)
        .transpose()?;
    Ok(WebhookEvent {
        message_name: text("MessageName")?,
        entity: text("PrimaryEntityName")?,
        id: text("PrimaryEntityId")?,
        stage: int("Stage"),
        mode: int("Mode"),
        depth: int("Depth"),
        correlation_id: text("CorrelationId")?,
        operation_id: text("OperationId")?,
        operation_created_on: ZonedTime::parse("OperationCreatedOn", &text("OperationCreatedOn")?)?,
        organization_name: text("OrganizationName").unwrap_or_default(),
        target,
        pre_images: images(&context, "PreEntityImages")?,
        post_images: images(&context, "PostEntityImages")?,
    })
}

/// One change from a delta page.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Created or updated; `row` holds the selected columns.
    Upsert { id: String, etag: Option<String>, row: Value },
    /// Deleted (tombstone `{"id","reason":"deleted"}`).
    Removed { id: String, reason: String },
}

/// Reads a change-tracking page's rows; `key_field` is the table's primary key (`salesorderid`).
pub fn parse_delta_rows(rows: &[Value], key_field: &str) -> Result<Vec<Change>, ParseError> {
    rows.iter()
        .map(|row| {
            let is_tombstone =
                row.get("@odata.context").and_then(Value::as_str).is_some_and(|c| c.ends_with("$deletedEntity"))
                    || (row.get("reason").is_some() && row.get(key_field).is_none());
            let field = if is_tombstone { "id" } else { key_field };
            let id = row
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| ParseError::new(field, &row.to_string(), "is missing in a change-tracking row"))?
                .to_owned();
            Ok(if is_tombstone {
                Change::Removed {
                    id,
                    reason: row.get("reason").and_then(Value::as_str).unwrap_or("deleted").to_owned(),
                }
            } else {
                Change::Upsert {
                    id,
                    etag: row.get("@odata.etag").and_then(Value::as_str).map(str::to_owned),
                    row: row.clone(),
                }
            })
        })
        .collect()
}

/// Where a change-tracking poll resumes. Persist it with the changes of the page that produced
/// it: then a crash repeats a page instead of losing one (no gaps), and a delta link never
/// returns a change twice once advanced (no repeats).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaCursor {
    pub entity_set: String,
    /// `$select` of the initial request; the delta link carries it afterwards.
    pub select: String,
    pub key_field: String,
    /// `None` until the initial full read has completed.
    pub delta_link: Option<String>,
    /// The `@odata.nextLink` of a poll still going through its pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
    /// The pages under way belong to the initial full read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub initial_scan: bool,
}

/// The changes of one page and the cursor to persist with them.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaPoll {
    pub changes: Vec<Change>,
    pub next: DeltaCursor,
    /// True for the initial full read (every row arrives as an upsert).
    pub initial: bool,
    /// More pages follow: polling `next` now continues this poll.
    pub more: bool,
}

impl DeltaCursor {
    pub fn new(entity_set: &str, select: &str, key_field: &str) -> Self {
        Self {
            entity_set: entity_set.to_owned(),
            select: select.to_owned(),
            key_field: key_field.to_owned(),
            delta_link: None,
            next_link: None,
            initial_scan: false,
        }
    }

    /// One page of a poll: of the initial tracked read, of the changes since the delta link, or
    /// the next page of either (`@odata.nextLink`), until the page that carries the new
    /// `@odata.deltaLink`. Change tracking allows no `$filter`/`$orderby`/`$top` (reference C8),
    /// so none is sent.
    pub async fn poll(&self, client: &DataverseClient, page_size: u32) -> Result<DeltaPoll, DeliveryError> {
        let prefer = Prefer { track_changes: true, ..Prefer::page(page_size) };
        let (mut page, initial) = match (&self.next_link, &self.delta_link) {
            (Some(next), _) => (client.follow(next, &prefer).await?, self.initial_scan),
            (None, Some(delta)) => (client.follow(delta, &prefer).await?, false),
            (None, None) => (client.query(&self.entity_set, &[("$select", &self.select)], &prefer).await?, true),
        };
        let changes = parse_delta_rows(&page.rows, &self.key_field).map_err(|e| DeliveryError::Server {
            vendor: super::VENDOR,
            status: 200,
            detail: format!("change tracking of {}: {e}", self.entity_set),
        })?;
        if let Some(delta) = page.delta_link.take() {
            let next = DeltaCursor { delta_link: Some(delta), next_link: None, initial_scan: false, ..self.clone() };
            return Ok(DeltaPoll { changes, next, initial, more: false });
        }
        let Some(link) = page.next_link.take() else {
            return Err(DeliveryError::Server {
                vendor: super::VENDOR,
                status: 200,
                detail: format!(
                    "change tracking of {}: the last page has no @odata.deltaLink; is \"Track changes\" enabled on the table?",
                    self.entity_set
                ),
            });
        };
        let next = DeltaCursor { next_link: Some(link), initial_scan: initial, ..self.clone() };
        Ok(DeltaPoll { changes, next, initial, more: true })
    }

    /// Every page of one poll, for callers that hold a whole poll at once (tests, small sets).
    pub async fn poll_all(&self, client: &DataverseClient, page_size: u32) -> Result<DeltaPoll, DeliveryError> {
        let mut poll = self.poll(client, page_size).await?;
        while poll.more {
            let page = poll.next.poll(client, page_size).await?;
            poll.changes.extend(page.changes);
            poll.next = page.next;
            poll.more = page.more;
        }
        Ok(poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(name: &str) -> Vec<u8> {
        fixtures::read_fixture(format!("dynamics/{name}")).into_bytes()
    }

    #[test]
    fn salesorder_webhook_parses_typed_attributes_and_images() {
        let event = parse_webhook(&bytes("webhook_remoteexecutioncontext_salesorder_update.json")).unwrap();
        assert_eq!(event.message_name, "Update");
        assert_eq!(event.entity, "salesorder");
        assert_eq!(event.id, "3f9a1c2e-7b2d-ee11-8179-000d3a0a1c01");
        assert_eq!((event.stage, event.mode, event.depth), (40, 1, 1));
        assert_eq!(event.operation_created_on.as_millis(), 1_710_483_001_000);
        let target = event.target.unwrap();
        assert_eq!(target.row_version.as_deref(), Some("5561199"));
        assert_eq!(target.attributes["statuscode"], AttrValue::OptionSet(3));
        assert_eq!(target.attributes["totalamount"], AttrValue::Money("21512.0".parse().unwrap()));
        assert_eq!(target.attributes["salesorderid"], AttrValue::Text("3f9a1c2e-7b2d-ee11-8179-000d3a0a1c01".into()));
        match &target.attributes["modifiedon"] {
            AttrValue::DateTime(t) => assert_eq!(t.timestamp().to_string(), "2024-03-15T06:10:00Z"),
            other => panic!("{other:?}"),
        }
        assert!(event.pre_images.is_empty());
        assert_eq!(
            event.post_images["PostImage"].attributes["ordernumber"],
            AttrValue::Text("ORD-01001-X7Y2Z3".into())
        );
    }

    #[test]
    fn contact_webhook_reads_references_nulls_and_offset_dates() {
        let event = parse_webhook(&bytes("webhook_remoteexecutioncontext_contact_update.json")).unwrap();
        assert_eq!(event.entity, "contact");
        // `-0700` only says how to display; the instant is the milliseconds.
        assert_eq!(event.operation_created_on.as_millis(), 1_506_409_448_000);
        let target = event.target.unwrap();
        assert_eq!(
            target.attributes["modifiedby"],
            AttrValue::Reference {
                id: "75c2dd85-e89e-e711-8122-000d3aa2331c".into(),
                logical_name: "systemuser".into(),
                name: None
            }
        );
        assert_eq!(target.attributes["modifiedonbehalfby"], AttrValue::Null);
        assert_eq!(
            event.post_images["AsynchronousStepPrimaryName"].attributes["fullname"],
            AttrValue::Text("James Glynn (sample)".into())
        );
    }

    #[test]
    fn webhook_headers_fixture_is_read() {
        let text = fixtures::read_fixture("dynamics/webhook_request_headers.http");
        let mut headers = HeaderMap::new();
        for line in text.lines().filter(|l| l.starts_with("x-ms-")) {
            let (k, v) = line.split_once(':').unwrap();
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.trim().parse().unwrap());
        }
        let parsed = WebhookHeaders::from_headers(&headers);
        assert_eq!(parsed.organization.as_deref(), Some("dingbridge-demo.crm5.dynamics.com"));
        assert_eq!(parsed.entity_name.as_deref(), Some("salesorder"));
        assert_eq!(parsed.request_name.as_deref(), Some("Update"));
        assert_eq!(parsed.correlation_id.as_deref(), Some("c1d2e3f4-0000-4a1b-9c8d-112233445566"));
        assert!(!parsed.size_exceeded);
    }

    #[test]
    fn delta_fixtures_give_upserts_and_tombstones() {
        let initial = fixtures::read_json("dynamics/dataverse_salesorders_delta_initial.json");
        let rows = initial["value"].as_array().unwrap();
        let changes = parse_delta_rows(rows, "salesorderid").unwrap();
        assert!(
            matches!(&changes[..], [Change::Upsert { id, etag: Some(e), .. }] if id == "3f9a1c2e-7b2d-ee11-8179-000d3a0a1c01" && e == "W/\"5561023\"")
        );
        let later = fixtures::read_json("dynamics/dataverse_salesorders_delta_changes.json");
        let changes = parse_delta_rows(later["value"].as_array().unwrap(), "salesorderid").unwrap();
        assert_eq!(changes.len(), 2);
        assert!(matches!(&changes[0], Change::Upsert { row, .. } if row["statuscode"] == 3));
        assert_eq!(
            changes[1],
            Change::Removed { id: "9c7d2e41-7b2d-ee11-8179-000d3a0a1c09".into(), reason: "deleted".into() }
        );
    }
}
