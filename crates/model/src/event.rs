//! The canonical event: what every source produces and every flow consumes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::decimal::parse_decimal;
use crate::{Money, ParseError, Quantity, ZonedTime};

/// What happened to the entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// "created"
    Created,
    /// "updated"
    Updated,
    /// "deleted"
    Deleted,
    /// "status_changed"
    StatusChanged,
    /// Any other vendor-specific change name, kept verbatim.
    Other(String),
}

impl ChangeKind {
    /// The snake_case name ("status_changed"), or the verbatim name of `Other`.
    pub fn as_str(&self) -> &str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::StatusChanged => "status_changed",
            ChangeKind::Other(name) => name,
        }
    }
}

impl FromStr for ChangeKind {
    type Err = Infallible;

    /// Exact snake_case names map to the known kinds; anything else becomes `Other`, so that a
    /// new vendor change type is carried through rather than dropped.
    fn from_str(s: &str) -> Result<ChangeKind, Infallible> {
        Ok(match s {
            "created" => ChangeKind::Created,
            "updated" => ChangeKind::Updated,
            "deleted" => ChangeKind::Deleted,
            "status_changed" => ChangeKind::StatusChanged,
            other => ChangeKind::Other(other.to_string()),
        })
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ChangeKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ChangeKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ChangeKind, D::Error> {
        let name = String::deserialize(deserializer)?;
        let Ok(kind) = ChangeKind::from_str(&name);
        Ok(kind)
    }
}

/// The declared type of a mapped field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// [`Money`]
    Money,
    /// [`Quantity`]
    Quantity,
    /// [`ZonedTime`]
    Time,
    /// An exact decimal.
    Decimal,
    /// A signed 64-bit integer.
    Integer,
    /// A string.
    Text,
    /// A boolean.
    Bool,
}

impl FieldType {
    /// Every field type, in declaration order.
    pub const ALL: [FieldType; 7] = [
        FieldType::Money,
        FieldType::Quantity,
        FieldType::Time,
        FieldType::Decimal,
        FieldType::Integer,
        FieldType::Text,
        FieldType::Bool,
    ];

    /// The lowercase name used in configuration ("money").
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Money => "money",
            FieldType::Quantity => "quantity",
            FieldType::Time => "time",
            FieldType::Decimal => "decimal",
            FieldType::Integer => "integer",
            FieldType::Text => "text",
            FieldType::Bool => "bool",
        }
    }

    /// Reads a JSON value as this type, strictly: no coercion between JSON types (an integer
    /// field refuses `1.5` and `"12"`, a text field refuses `12`), because a coerced value is a
    /// guessed value.
    pub fn parse_value(self, field: &str, value: &Value) -> Result<TypedValue, ParseError> {
        let shown = || match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let wrong = |expected: &str| ParseError::new(field, &shown(), format!("is not {expected}"));
        match self {
            FieldType::Money => Money::from_json(field, value).map(TypedValue::Money),
            FieldType::Quantity => Quantity::from_json(field, value).map(TypedValue::Quantity),
            FieldType::Time => match value {
                Value::String(s) => ZonedTime::parse(field, s).map(TypedValue::Time),
                _ => Err(wrong("a timestamp string")),
            },
            FieldType::Decimal => match value {
                Value::String(s) => parse_decimal(field, s).map(TypedValue::Decimal),
                Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        Ok(TypedValue::Decimal(Decimal::from(i)))
                    } else if let Some(u) = n.as_u64() {
                        Ok(TypedValue::Decimal(Decimal::from(u)))
                    } else {
                        // A non-integer JSON number was already rounded to binary floating
                        // point by the JSON reader.
                        Err(wrong("a decimal string or an integer (send decimals as strings)"))
                    }
                }
                _ => Err(wrong("a decimal string or an integer")),
            },
            FieldType::Integer => match value {
                Value::Number(n) => {
                    n.as_i64().map(TypedValue::Integer).ok_or_else(|| wrong("an integer between -2^63 and 2^63-1"))
                }
                _ => Err(wrong("an integer (a JSON number without fraction)")),
            },
            FieldType::Text => match value {
                Value::String(s) => Ok(TypedValue::Text(s.clone())),
                _ => Err(wrong("a string")),
            },
            FieldType::Bool => match value {
                Value::Bool(b) => Ok(TypedValue::Bool(*b)),
                _ => Err(wrong("a boolean (true or false)")),
            },
        }
    }
}

impl FromStr for FieldType {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<FieldType, ParseError> {
        FieldType::ALL.into_iter().find(|t| t.name() == s).ok_or_else(|| {
            ParseError::new(
                "type",
                s,
                "is not a field type (expected one of: money, quantity, time, decimal, \
                     integer, text, bool)",
            )
        })
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed field value of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypedValue {
    /// Money.
    Money(Money),
    /// A quantity with unit.
    Quantity(Quantity),
    /// An instant.
    Time(ZonedTime),
    /// An exact decimal.
    Decimal(Decimal),
    /// An integer.
    Integer(i64),
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl TypedValue {
    /// The type of this value.
    pub fn field_type(&self) -> FieldType {
        match self {
            TypedValue::Money(_) => FieldType::Money,
            TypedValue::Quantity(_) => FieldType::Quantity,
            TypedValue::Time(_) => FieldType::Time,
            TypedValue::Decimal(_) => FieldType::Decimal,
            TypedValue::Integer(_) => FieldType::Integer,
            TypedValue::Text(_) => FieldType::Text,
            TypedValue::Bool(_) => FieldType::Bool,
        }
    }

    /// Natural JSON: money `{"amount":"12.50","currency":"HKD"}`, quantity
    /// `{"value":"144","unit":"PCE"}`, time as RFC 3339 at +08:00, decimal as a string (never a
    /// float), the rest as JSON integers, strings and booleans.
    pub fn to_json(&self) -> Value {
        match self {
            TypedValue::Money(m) => {
                let mut map = Map::new();
                map.insert("amount".to_string(), Value::String(m.amount_string()));
                map.insert("currency".to_string(), Value::String(m.currency.code().to_string()));
                Value::Object(map)
            }
            TypedValue::Quantity(q) => {
                let mut map = Map::new();
                map.insert("value".to_string(), Value::String(q.value.to_string()));
                map.insert("unit".to_string(), Value::String(q.unit.code().to_string()));
                Value::Object(map)
            }
            TypedValue::Time(t) => Value::String(t.to_rfc3339()),
            TypedValue::Decimal(d) => Value::String(d.to_string()),
            TypedValue::Integer(i) => Value::from(*i),
            TypedValue::Text(s) => Value::String(s.clone()),
            TypedValue::Bool(b) => Value::Bool(*b),
        }
    }
}

impl Serialize for TypedValue {
    /// Natural JSON, as [`TypedValue::to_json`]. Not self-describing ("12.50" may be text or a
    /// decimal), so read it back with [`FieldType::parse_value`] and the declared type.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

/// The canonical event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id (a UUID v7 assigned by the gateway).
    pub id: String,
    /// Configured source name, e.g. "erp-events".
    pub source: String,
    /// System the event came from, e.g. "erp", "netsuite", "dingtalk".
    pub system: String,
    /// Entity type, e.g. "purchase_order".
    pub entity: String,
    /// The entity's id in the source system.
    pub entity_id: String,
    /// What happened.
    pub change: ChangeKind,
    /// When it happened according to the source, if the source says.
    pub source_time: Option<ZonedTime>,
    /// When the gateway received it.
    pub received_at: ZonedTime,
    /// Deduplication key of the inbox.
    pub idempotency_key: String,
    /// Typed payload. Stored as `{"name": {"type": "money", "value": {...}}}` so that it reads
    /// back exactly: natural JSON alone cannot tell text "12.50" from decimal 12.50.
    #[serde(with = "tagged_fields")]
    pub fields: BTreeMap<String, TypedValue>,
    /// The decoded vendor payload.
    pub data: Value,
    /// The raw body as received, when kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl Event {
    /// The event as CEL conditions and message templates see it (`event.*`): id, source,
    /// system, entity, entity_id, change, idempotency_key, source_time (RFC 3339 or null),
    /// source_time_hk (e.g. "2024-03-01 17:30:00 HKT" or null), received_at, received_at_hk,
    /// fields (natural JSON) and data. The raw body is left out: templates have no use for it
    /// and it may hold data the destination is not cleared for.
    pub fn to_template_value(&self) -> Value {
        let mut fields = Map::new();
        for (name, value) in &self.fields {
            fields.insert(name.clone(), value.to_json());
        }
        let mut map = Map::new();
        let mut put = |key: &str, value: Value| {
            map.insert(key.to_string(), value);
        };
        put("id", Value::String(self.id.clone()));
        put("source", Value::String(self.source.clone()));
        put("system", Value::String(self.system.clone()));
        put("entity", Value::String(self.entity.clone()));
        put("entity_id", Value::String(self.entity_id.clone()));
        put("change", Value::String(self.change.to_string()));
        put("idempotency_key", Value::String(self.idempotency_key.clone()));
        put("source_time", self.source_time.map_or(Value::Null, |t| Value::String(t.to_rfc3339())));
        put("source_time_hk", self.source_time.map_or(Value::Null, |t| Value::String(t.to_hk_string())));
        put("received_at", Value::String(self.received_at.to_rfc3339()));
        put("received_at_hk", Value::String(self.received_at.to_hk_string()));
        put("fields", Value::Object(fields));
        put("data", self.data.clone());
        Value::Object(map)
    }
}

/// Serde for `Event::fields`: each value tagged with its type.
mod tagged_fields {
    use std::collections::BTreeMap;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    use super::{FieldType, TypedValue};

    #[derive(Serialize)]
    struct TaggedRef<'a> {
        #[serde(rename = "type")]
        kind: FieldType,
        value: &'a TypedValue,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tagged {
        #[serde(rename = "type")]
        kind: FieldType,
        value: Value,
    }

    pub(super) fn serialize<S: Serializer>(
        fields: &BTreeMap<String, TypedValue>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(fields.iter().map(|(name, value)| (name, TaggedRef { kind: value.field_type(), value })))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, TypedValue>, D::Error> {
        let tagged = BTreeMap::<String, Tagged>::deserialize(deserializer)?;
        let mut fields = BTreeMap::new();
        for (name, Tagged { kind, value }) in tagged {
            let typed = kind.parse_value(&name, &value).map_err(D::Error::custom)?;
            fields.insert(name, typed);
        }
        Ok(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Currency, Uom};
    use serde_json::json;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn sample_event() -> Event {
        let mut fields = BTreeMap::new();
        fields.insert("amount".to_string(), TypedValue::Money(Money::parse("amount", "1234.5", "HKD").unwrap()));
        fields.insert("qty".to_string(), TypedValue::Quantity(Quantity::parse("qty", "12", "DZN").unwrap()));
        fields
            .insert("due".to_string(), TypedValue::Time(ZonedTime::parse("due", "2024-03-01T09:30:00.123Z").unwrap()));
        fields.insert("rate".to_string(), TypedValue::Decimal(dec("1.00000")));
        fields.insert("lines".to_string(), TypedValue::Integer(-3));
        fields.insert("code".to_string(), TypedValue::Text("12.50".to_string()));
        fields.insert("urgent".to_string(), TypedValue::Bool(true));
        Event {
            id: "0190f3a0-0000-7000-8000-000000000001".to_string(),
            source: "erp-events".to_string(),
            system: "erp".to_string(),
            entity: "purchase_order".to_string(),
            entity_id: "4500000123".to_string(),
            change: ChangeKind::StatusChanged,
            source_time: Some(ZonedTime::parse("s", "/Date(1709285400000)/").unwrap()),
            received_at: ZonedTime::parse("r", "2024-03-01T09:30:05Z").unwrap(),
            idempotency_key: "erp:4500000123:03".to_string(),
            fields,
            data: json!({"PurchaseOrder": "4500000123", "n": [1, 2.5, null]}),
            raw: Some("{\"PurchaseOrder\":\"4500000123\"}".to_string()),
        }
    }

    #[test]
    fn change_kind_names() {
        for (kind, name) in [
            (ChangeKind::Created, "created"),
            (ChangeKind::Updated, "updated"),
            (ChangeKind::Deleted, "deleted"),
            (ChangeKind::StatusChanged, "status_changed"),
            (ChangeKind::Other("approved".to_string()), "approved"),
        ] {
            assert_eq!(kind.to_string(), name);
            assert_eq!(ChangeKind::from_str(name), Ok(kind.clone()));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<ChangeKind>(&format!("\"{name}\"")).unwrap(), kind);
        }
        assert_eq!(ChangeKind::from_str("Created"), Ok(ChangeKind::Other("Created".to_string())));
    }

    #[test]
    fn field_type_names() {
        for t in FieldType::ALL {
            assert_eq!(FieldType::from_str(t.name()).unwrap(), t);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", t.name()));
            assert_eq!(serde_json::from_str::<FieldType>(&format!("\"{t}\"")).unwrap(), t);
        }
        let err = FieldType::from_str("float").unwrap_err();
        assert_eq!(err.value, "float");
        assert!(err.reason.contains("money, quantity, time, decimal, integer, text, bool"), "{err}");
    }

    #[test]
    fn parse_value_is_strict() {
        let ok = |t: FieldType, v: Value| t.parse_value("f", &v).unwrap();
        let bad = |t: FieldType, v: Value| {
            let err = t.parse_value("f", &v).unwrap_err();
            assert_eq!(err.field, "f");
            err
        };

        assert_eq!(ok(FieldType::Integer, json!(12)), TypedValue::Integer(12));
        bad(FieldType::Integer, json!(1.5));
        bad(FieldType::Integer, json!("12"));
        bad(FieldType::Integer, json!(u64::MAX));
        bad(FieldType::Integer, json!(null));

        assert_eq!(ok(FieldType::Decimal, json!("12.50")), TypedValue::Decimal(dec("12.50")));
        assert_eq!(ok(FieldType::Decimal, json!(7)), TypedValue::Decimal(dec("7")));
        let err = bad(FieldType::Decimal, json!(1.5));
        assert!(err.reason.contains("send decimals as strings"), "{err}");
        bad(FieldType::Decimal, json!("1,000.5"));
        bad(FieldType::Decimal, json!(true));

        assert_eq!(ok(FieldType::Text, json!("hello")), TypedValue::Text("hello".to_string()));
        bad(FieldType::Text, json!(12));
        bad(FieldType::Text, json!(null));

        assert_eq!(ok(FieldType::Bool, json!(false)), TypedValue::Bool(false));
        bad(FieldType::Bool, json!("true"));
        bad(FieldType::Bool, json!(1));

        assert_eq!(
            ok(FieldType::Time, json!("/Date(1709285400000)/")),
            TypedValue::Time(ZonedTime::parse("t", "2024-03-01T09:30:00Z").unwrap())
        );
        bad(FieldType::Time, json!(1_709_285_400_000_i64));
        bad(FieldType::Time, json!("2024-03-01T09:30:00"));

        assert_eq!(
            ok(FieldType::Money, json!({"amount": "12.50", "currency": "HKD"})),
            TypedValue::Money(Money { amount: dec("12.50"), currency: Currency::HKD })
        );
        bad(FieldType::Money, json!("HKD 12.345"));

        assert_eq!(
            ok(FieldType::Quantity, json!({"value": "12", "unit": "DZN"})),
            TypedValue::Quantity(Quantity::new(dec("12"), Uom::DZN))
        );
        bad(FieldType::Quantity, json!("100 units"));
    }

    #[test]
    fn typed_values_serialize_naturally() {
        let e = sample_event();
        let natural = |k: &str| serde_json::to_value(&e.fields[k]).unwrap();
        assert_eq!(natural("amount"), json!({"amount": "1234.50", "currency": "HKD"}));
        assert_eq!(natural("qty"), json!({"value": "12", "unit": "DZN"}));
        assert_eq!(natural("due"), json!("2024-03-01T17:30:00.123+08:00"));
        assert_eq!(natural("rate"), json!("1.00000"));
        assert_eq!(natural("lines"), json!(-3));
        assert_eq!(natural("code"), json!("12.50"));
        assert_eq!(natural("urgent"), json!(true));
        for value in e.fields.values() {
            assert_eq!(serde_json::to_value(value).unwrap(), value.to_json());
            // The natural form reads back with the declared type.
            assert_eq!(&value.field_type().parse_value("f", &value.to_json()).unwrap(), value);
        }
    }

    #[test]
    fn event_round_trips_exactly() {
        let e = sample_event();
        let text = serde_json::to_string(&e).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, e);
        // Scale survives too (Decimal equality alone ignores it).
        match (&back.fields["rate"], &back.fields["amount"]) {
            (TypedValue::Decimal(d), TypedValue::Money(m)) => {
                assert_eq!(d.to_string(), "1.00000");
                assert_eq!(m.amount.to_string(), "1234.50");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(serde_json::to_string(&back).unwrap(), text);

        let mut bare = e.clone();
        bare.raw = None;
        bare.source_time = None;
        bare.change = ChangeKind::Other("approved".to_string());
        let text = serde_json::to_string(&bare).unwrap();
        assert!(!text.contains("\"raw\""));
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), bare);
    }

    #[test]
    fn event_deserialize_validates_fields() {
        let mut v = serde_json::to_value(sample_event()).unwrap();
        v["fields"]["lines"] = json!({"type": "integer", "value": "3"});
        let err = serde_json::from_value::<Event>(v.clone()).unwrap_err();
        assert!(err.to_string().contains("lines"), "{err}");
        v["fields"]["lines"] = json!({"type": "float", "value": 3});
        assert!(serde_json::from_value::<Event>(v).is_err());
    }

    #[test]
    fn template_value() {
        let e = sample_event();
        let t = e.to_template_value();
        assert_eq!(t["id"], json!(e.id));
        assert_eq!(t["source"], json!("erp-events"));
        assert_eq!(t["system"], json!("erp"));
        assert_eq!(t["entity"], json!("purchase_order"));
        assert_eq!(t["entity_id"], json!("4500000123"));
        assert_eq!(t["change"], json!("status_changed"));
        assert_eq!(t["source_time"], json!("2024-03-01T17:30:00+08:00"));
        assert_eq!(t["source_time_hk"], json!("2024-03-01 17:30:00 HKT"));
        assert_eq!(t["received_at"], json!("2024-03-01T17:30:05+08:00"));
        assert_eq!(t["fields"]["amount"]["amount"], json!("1234.50"));
        assert_eq!(t["fields"]["qty"]["unit"], json!("DZN"));
        assert_eq!(t["fields"]["lines"], json!(-3));
        assert_eq!(t["data"]["PurchaseOrder"], json!("4500000123"));
        assert!(t.get("raw").is_none());

        let mut e = e;
        e.source_time = None;
        let t = e.to_template_value();
        assert_eq!(t["source_time"], Value::Null);
        assert_eq!(t["source_time_hk"], Value::Null);
    }
}
