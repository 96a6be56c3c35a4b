//! Canonical ERP records: one shape per business entity (shipment, purchase request, purchase
//! order) whatever ERP it came from, so message templates are written once.
//!
//! Each vendor module (`netsuite::canonical`, `dynamics::canonical`, `sap::canonical`) maps its
//! wire JSON / IDocs into an [`ErpRecord`]; this module holds the record type, the shipment status
//! vocabulary, the mapping error and the small JSON builders every mapping shares, so that the
//! same value is written the same way by every vendor (RFC 3339 UTC times, decimal strings without
//! trailing zeros, money as `{"amount","currency"}`).

use jiff::Timestamp;
use model::{Decimal, Money};
use serde_json::{json, Value};

pub const SHIPMENT: &str = "shipment";
pub const PURCHASE_REQUEST: &str = "purchase_request";
pub const PURCHASE_ORDER: &str = "purchase_order";

/// One ERP record's current state in the canonical shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ErpRecord {
    /// One of [`SHIPMENT`], [`PURCHASE_REQUEST`], [`PURCHASE_ORDER`].
    pub entity: &'static str,
    /// Stable id: the same record read by any path gives the same id.
    pub entity_id: String,
    /// Vendor object it came from, e.g. `itemFulfillment`, `A_OutbDeliveryHeader`, `DESADV`.
    pub object: String,
    /// When the ERP says this state came to be, in ms since the epoch.
    pub source_time_ms: Option<i64>,
    /// Identifies this state: a webhook-triggered read and a poll of the same state agree on it.
    pub version: String,
    /// The canonical shape of `entity`.
    pub data: Value,
}

impl ErpRecord {
    /// `{entity}:{entity_id}:{version}`: what the gateway de-duplicates on.
    pub fn dedup_key(&self) -> String {
        format!("{}:{}:{}", self.entity, self.entity_id, self.version)
    }
}

/// Where a shipment stands, the same words for every ERP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentStatus {
    NotStarted,
    Picked,
    Packed,
    PartiallyShipped,
    Shipped,
    Delivered,
    Cancelled,
}

impl ShipmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::NotStarted => "not_started",
            ShipmentStatus::Picked => "picked",
            ShipmentStatus::Packed => "packed",
            ShipmentStatus::PartiallyShipped => "partially_shipped",
            ShipmentStatus::Shipped => "shipped",
            ShipmentStatus::Delivered => "delivered",
            ShipmentStatus::Cancelled => "cancelled",
        }
    }
}

/// Why a vendor record could not be put into the canonical shape. Every variant names the vendor
/// object, the record id (as far as it is known) and the field, so an operator can find the
/// record in the ERP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{object} {id}: field `{field}` is missing")]
    Missing { object: String, id: String, field: String },
    #[error("{object} {id}: field `{field}` has value {value:?}, which {reason}")]
    Invalid { object: String, id: String, field: String, value: String, reason: String },
    #[error("{object} {id}: dingbridge has no canonical mapping for this object ({reason})")]
    Unsupported { object: String, id: String, reason: String },
}

impl MapError {
    pub fn missing(object: &str, id: &str, field: &str) -> MapError {
        MapError::Missing { object: object.to_owned(), id: id.to_owned(), field: field.to_owned() }
    }

    pub fn invalid(object: &str, id: &str, field: &str, value: &str, reason: impl Into<String>) -> MapError {
        MapError::Invalid {
            object: object.to_owned(),
            id: id.to_owned(),
            field: field.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    /// From a `model` parse error (which names its field and value) met while reading `object` `id`.
    pub fn parse(object: &str, id: &str, err: model::ParseError) -> MapError {
        MapError::invalid(object, id, &err.field, &err.value, err.reason)
    }

    /// A record the ERP answered but dingbridge cannot map: permanent until the record (or the
    /// mapping configuration) changes, so retrying the same read is pointless.
    pub fn into_delivery(self, vendor: &'static str) -> connect::DeliveryError {
        connect::DeliveryError::Rejected { vendor, detail: self.to_string() }
    }
}

/// Whether a state `as_of_ms` is older than `stale_after` at `now_ms`. A state of unknown age
/// counts as stale: nothing vouches for it being current.
pub fn is_stale(as_of_ms: Option<i64>, now_ms: i64, stale_after: std::time::Duration) -> bool {
    let Some(as_of) = as_of_ms else { return true };
    let limit = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
    now_ms.saturating_sub(as_of) > limit
}

/// `"2024-03-15T02:31:00Z"` for a time in ms, `null` when unknown or out of range.
pub fn as_of_json(ms: Option<i64>) -> Value {
    ms.and_then(|ms| Timestamp::from_millisecond(ms).ok()).map_or(Value::Null, |t| json!(t.to_string()))
}

/// The shipment version: `"{status}@{as_of_ms or 0}"`.
pub fn shipment_version(status: ShipmentStatus, as_of_ms: Option<i64>) -> String {
    format!("{}@{}", status.as_str(), as_of_ms.unwrap_or(0))
}

/// A decimal as text without trailing zeros (`"37.5"`, `"1200"`), so that `"1200.000"` from an
/// IDoc and `"1200"` from OData give the same canonical value.
pub fn decimal_text(value: Decimal) -> String {
    value.normalize().to_string()
}

/// `{"value","unit"}` with the unit as given (callers pass an ISO / Rec 20 code when one is known;
/// `null` when the ERP sent none).
pub fn quantity_json(value: Decimal, unit: Option<&str>) -> Value {
    json!({"value": decimal_text(value), "unit": unit})
}

/// Money as `{"amount","currency"}`, `null` when absent.
pub fn money_json(money: Option<Money>) -> Value {
    money.map_or(Value::Null, |m| json!({"amount": m.amount_string(), "currency": m.currency.code()}))
}

/// `Some(text)` as a JSON string, `None` as `null`.
pub fn opt_json(text: Option<&str>) -> Value {
    text.map_or(Value::Null, |t| json!(t))
}

/// One document line in the shape shared by purchase requests and purchase orders.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub line: String,
    pub item: Option<String>,
    pub description: Option<String>,
    /// `(value, unit)`.
    pub quantity: Option<(Decimal, Option<String>)>,
    pub unit_price: Option<Money>,
    pub amount: Option<Money>,
}

impl Line {
    /// `{"line","item","description","quantity","unit_price","amount"}`.
    pub fn priced_json(&self) -> Value {
        json!({
            "line": self.line,
            "item": opt_json(self.item.as_deref()),
            "description": opt_json(self.description.as_deref()),
            "quantity": self.quantity_json(),
            "unit_price": money_json(self.unit_price),
            "amount": money_json(self.amount),
        })
    }

    /// `{"line","item","description","quantity"}` (shipment lines).
    pub fn shipment_json(&self) -> Value {
        json!({
            "line": self.line,
            "item": opt_json(self.item.as_deref()),
            "description": opt_json(self.description.as_deref()),
            "quantity": self.quantity_json(),
        })
    }

    fn quantity_json(&self) -> Value {
        self.quantity.as_ref().map_or(Value::Null, |(v, u)| quantity_json(*v, u.as_deref()))
    }
}

/// SAP and IDocs pad numeric keys with leading zeros (`0080001234`, `000010`) where OData shows
/// `80001234` and `10`; all-digit values are compared without them (reference A9), other values
/// are kept as they are.
pub fn trim_numeric(text: &str) -> String {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let trimmed = text.trim_start_matches('0');
        if trimmed.is_empty() {
            "0".to_owned()
        } else {
            trimmed.to_owned()
        }
    } else {
        text.to_owned()
    }
}

/// Milliseconds of an RFC 3339 text (NetSuite, Dataverse and BC times).
pub fn rfc3339_ms(object: &str, id: &str, field: &str, text: &str) -> Result<i64, MapError> {
    model::ZonedTime::parse(field, text).map(|t| t.as_millis()).map_err(|e| MapError::parse(object, id, e))
}

/// Tests of this module and of the vendor mappings share these checks.
#[cfg(test)]
pub(crate) fn assert_error_names(err: &MapError, object: &str, id: &str, field: &str) {
    let text = err.to_string();
    for part in [object, id, field] {
        assert!(text.contains(part), "`{text}` should name {part}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::time::Duration;

    #[test]
    fn staleness_counts_unknown_ages_as_stale() {
        let minute = Duration::from_secs(60);
        assert!(!is_stale(Some(1_000), 61_000, minute));
        assert!(is_stale(Some(1_000), 61_001, minute));
        assert!(is_stale(None, 0, minute));
        assert!(!is_stale(Some(10_000), 5_000, minute), "a state from the future is not stale");
    }

    #[test]
    fn dedup_keys_and_versions_have_the_documented_form() {
        let record = ErpRecord {
            entity: SHIPMENT,
            entity_id: "5141".to_owned(),
            object: "itemFulfillment".to_owned(),
            source_time_ms: Some(1_710_469_200_000),
            version: shipment_version(ShipmentStatus::Picked, Some(1_710_469_200_000)),
            data: Value::Null,
        };
        assert_eq!(record.dedup_key(), "shipment:5141:picked@1710469200000");
        assert_eq!(shipment_version(ShipmentStatus::PartiallyShipped, None), "partially_shipped@0");
        assert_eq!(ShipmentStatus::NotStarted.as_str(), "not_started");
    }

    #[test]
    fn shared_builders_normalise_values() {
        assert_eq!(as_of_json(Some(1_710_469_200_000)), json!("2024-03-15T02:20:00Z"));
        assert_eq!(as_of_json(None), Value::Null);
        let q = quantity_json(Decimal::from_str("1200.000").unwrap(), Some("PCE"));
        assert_eq!(q, json!({"value": "1200", "unit": "PCE"}));
        let money = Money::parse("t", "1710", "HKD").unwrap();
        assert_eq!(money_json(Some(money)), json!({"amount": "1710.00", "currency": "HKD"}));
        assert_eq!(trim_numeric("0080001234"), "80001234");
        assert_eq!(trim_numeric("000"), "0");
        assert_eq!(trim_numeric("TG-1001"), "TG-1001");
    }

    #[test]
    fn map_errors_name_object_id_and_field() {
        let err = MapError::missing("itemFulfillment", "5141", "shipStatus");
        assert_error_names(&err, "itemFulfillment", "5141", "shipStatus");
        let err = MapError::invalid("A_PurchaseOrder", "4500000123", "DocumentCurrency", "XXX", "is not ISO 4217");
        assert_error_names(&err, "A_PurchaseOrder", "4500000123", "DocumentCurrency");
        assert!(matches!(err.into_delivery("sap"), connect::DeliveryError::Rejected { vendor: "sap", .. }));
    }
}
