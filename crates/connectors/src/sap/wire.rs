//! OData v2 "verbose" JSON on the wire (reference A3, A4): the `d` / `d.results` envelope,
//! `/Date(…)/` values, decimals as strings, `Edm.Time` durations and URL literals.

use jiff::civil::{Date, Time};
use jiff::Timestamp;
use model::{Decimal, ParseError, ZonedTime};
use serde_json::Value;

/// One page of a collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub results: Vec<Value>,
    /// `d.__next`: the absolute URL of the next server page, followed verbatim.
    pub next: Option<String>,
    /// `d.__count` (a string on the wire) when `$inlinecount=allpages` was asked for.
    pub count: Option<u64>,
}

/// The single entity inside `{"d": {...}}`.
pub fn entity(body: &Value) -> Result<&Value, ParseError> {
    match body.get("d") {
        Some(d) if d.is_object() => Ok(d),
        _ => Err(ParseError::new("d", &excerpt(body), "is not an OData v2 entity envelope {\"d\": {...}}")),
    }
}

/// A collection: `{"d": {"results": [...], "__next", "__count"}}`, or the OData v1 style
/// `{"d": [...]}` some older Gateway services still send.
pub fn page(body: &Value) -> Result<Page, ParseError> {
    let d = body.get("d");
    if let Some(Value::Array(list)) = d {
        return Ok(Page { results: list.clone(), next: None, count: None });
    }
    let Some(Value::Array(list)) = d.and_then(|d| d.get("results")) else {
        return Err(ParseError::new("d.results", &excerpt(body), "is not an OData v2 collection envelope"));
    };
    let next = d.and_then(|d| d.get("__next")).and_then(Value::as_str).map(str::to_owned);
    let count = match d.and_then(|d| d.get("__count")) {
        Some(Value::String(s)) => {
            Some(s.parse::<u64>().map_err(|_| ParseError::new("d.__count", s, "is not a count"))?)
        }
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    };
    Ok(Page { results: list.clone(), next, count })
}

fn excerpt(value: &Value) -> String {
    value.to_string().chars().take(80).collect()
}

/// A string property; absent and `null` are errors naming the property.
pub fn string(entity: &Value, field: &str) -> Result<String, ParseError> {
    entity
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ParseError::new(field, "", "is missing or not a string"))
}

/// A string property where absent, `null` and `""` all mean "not set".
pub fn opt_string(entity: &Value, field: &str) -> Option<String> {
    entity.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

pub fn boolean(entity: &Value, field: &str) -> Result<bool, ParseError> {
    entity.get(field).and_then(Value::as_bool).ok_or_else(|| ParseError::new(field, "", "is missing or not a boolean"))
}

/// An `Edm.Decimal`, which SAP always sends as a string (`"37.500"`); JSON numbers are refused
/// because they may already have lost precision.
pub fn decimal(entity: &Value, field: &str) -> Result<Decimal, ParseError> {
    match entity.get(field) {
        Some(Value::String(s)) => model::parse_decimal(field, s),
        Some(other) => Err(ParseError::new(field, &other.to_string(), "is not an Edm.Decimal string")),
        None => Err(ParseError::new(field, "", "is missing")),
    }
}

/// An `Edm.DateTimeOffset` (or an `Edm.DateTime` meant as an instant): `/Date(ms)/` or
/// `/Date(ms+0000)/`, milliseconds in UTC; the suffix never moves the instant (reference A3).
pub fn instant(entity: &Value, field: &str) -> Result<Option<ZonedTime>, ParseError> {
    match entity.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => ZonedTime::parse(field, s).map(Some),
        Some(other) => Err(ParseError::new(field, &other.to_string(), "is not an OData /Date(...)/ string")),
    }
}

/// A date-only `Edm.DateTime` (`sap:display-format="Date"`): midnight UTC of the calendar date.
/// Read as a calendar date in UTC; no time zone is ever applied to it.
pub fn date(entity: &Value, field: &str) -> Result<Option<Date>, ParseError> {
    Ok(instant(entity, field)?.map(|t| t.timestamp().to_zoned(jiff::tz::TimeZone::UTC).date()))
}

/// The `/Date(ms)/` form of a calendar date (midnight UTC), for request bodies.
pub fn date_value(date: Date) -> Result<String, ParseError> {
    let ts = date
        .to_zoned(jiff::tz::TimeZone::UTC)
        .map_err(|e| ParseError::new("date", &date.to_string(), format!("cannot be placed at midnight UTC ({e})")))?
        .timestamp();
    Ok(format!("/Date({})/", ts.as_millisecond()))
}

/// An `Edm.Time` such as `PT15H40M00S`.
pub fn edm_time(entity: &Value, field: &str) -> Result<Option<Time>, ParseError> {
    let Some(text) = entity.get(field).and_then(Value::as_str) else { return Ok(None) };
    parse_edm_time(field, text).map(Some)
}

pub fn parse_edm_time(field: &str, text: &str) -> Result<Time, ParseError> {
    let invalid = || ParseError::new(field, text, "is not an Edm.Time (expected PTnnHnnMnnS)");
    let rest = text.strip_prefix("PT").ok_or_else(invalid)?;
    let (h, rest) = rest.split_once('H').ok_or_else(invalid)?;
    let (m, rest) = rest.split_once('M').ok_or_else(invalid)?;
    let s = rest.strip_suffix('S').ok_or_else(invalid)?;
    let num = |v: &str| v.parse::<i8>().map_err(|_| invalid());
    Time::new(num(h)?, num(m)?, num(s)?, 0).map_err(|_| invalid())
}

/// `__metadata.etag`, the value to send in `If-Match`.
pub fn etag(entity: &Value) -> Option<String> {
    entity.get("__metadata").and_then(|m| m.get("etag")).and_then(Value::as_str).map(str::to_owned)
}

/// Expanded 1:n navigation `{"results": [...]}`; `None` when deferred or absent.
pub fn expanded<'a>(entity: &'a Value, nav: &str) -> Option<&'a Vec<Value>> {
    entity.get(nav).and_then(|n| n.get("results")).and_then(Value::as_array)
}

/// A string URL literal: `'4500000123'`, single quotes doubled.
pub fn string_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `datetimeoffset'2024-03-15T02:00:00Z'` (UTC; sub-seconds are truncated, i.e. rounded toward
/// the past, which only widens a `ge` polling window).
pub fn datetimeoffset_literal(at: Timestamp) -> String {
    format!("datetimeoffset'{}'", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
}

/// `datetime'2024-03-15T00:00:00'` for a date-only property.
pub fn datetime_literal(date: Date) -> String {
    format!("datetime'{}T00:00:00'", date.strftime("%Y-%m-%d"))
}

/// Path segment of one entity: `A_PurchaseOrder('4500000123')` or, with several key fields,
/// `A_PurchaseOrderItem(PurchaseOrder='4500000123',PurchaseOrderItem='10')`.
pub fn key_path(entity_set: &str, keys: &[(&str, &str)]) -> String {
    let inner = match keys {
        [(_, value)] => string_literal(value),
        _ => keys.iter().map(|(k, v)| format!("{k}={}", string_literal(v))).collect::<Vec<_>>().join(","),
    };
    format!("{entity_set}({inner})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collection_envelopes_v2_and_v1() {
        let body = fixtures::read_json("sap/purchaseorder_collection_page.v2.json");
        let p = page(&body).unwrap();
        assert_eq!(p.count, Some(137));
        assert!(p.next.as_deref().unwrap().ends_with("$skiptoken=2"));
        assert!(!p.results.is_empty());
        let v1 = page(&json!({"d": [{"a": 1}]})).unwrap();
        assert_eq!(v1.results.len(), 1);
        assert!(v1.next.is_none());
        assert!(page(&json!({"d": {"a": 1}})).is_err());
        assert!(entity(&json!({"d": []})).is_err());
    }

    #[test]
    fn dates_datetimes_and_times() {
        let body = fixtures::read_json("sap/outbound_delivery_header.v2.json");
        let d = entity(&body).unwrap();
        assert_eq!(date(d, "PlannedGoodsIssueDate").unwrap(), Some(Date::constant(2024, 3, 19)));
        assert_eq!(edm_time(d, "ActualGoodsMovementTime").unwrap(), Some(Time::constant(15, 40, 0, 0)));
        assert_eq!(date_value(Date::constant(2024, 3, 19)).unwrap(), "/Date(1710806400000)/");
        let e = json!({"LastChangeDateTime": "/Date(1710469867000+0000)/", "Shifted": "/Date(1710469867000+0480)/", "N": null});
        let t = instant(&e, "LastChangeDateTime").unwrap().unwrap();
        assert_eq!(t.as_millis(), 1_710_469_867_000);
        // The suffix is display information only.
        assert_eq!(instant(&e, "Shifted").unwrap(), Some(t));
        assert_eq!(instant(&e, "N").unwrap(), None);
        assert!(parse_edm_time("t", "15:40").is_err());
    }

    #[test]
    fn decimals_must_be_strings() {
        let e = json!({"A": "37.500", "B": 37.5});
        assert_eq!(decimal(&e, "A").unwrap(), Decimal::new(37_500, 3));
        assert!(decimal(&e, "B").is_err());
        assert!(decimal(&e, "C").is_err());
    }

    #[test]
    fn literals_and_key_paths() {
        assert_eq!(string_literal("O'Neil"), "'O''Neil'");
        assert_eq!(key_path("A_PurchaseOrder", &[("PurchaseOrder", "4500000123")]), "A_PurchaseOrder('4500000123')");
        assert_eq!(
            key_path("A_PurchaseOrderItem", &[("PurchaseOrder", "4500000123"), ("PurchaseOrderItem", "10")]),
            "A_PurchaseOrderItem(PurchaseOrder='4500000123',PurchaseOrderItem='10')"
        );
        let at: Timestamp = "2024-03-15T02:00:00Z".parse().unwrap();
        assert_eq!(datetimeoffset_literal(at), "datetimeoffset'2024-03-15T02:00:00Z'");
        assert_eq!(datetime_literal(Date::constant(2024, 3, 15)), "datetime'2024-03-15T00:00:00'");
    }
}
