//! The `$filter` subset the OData simulators evaluate: `Field op literal` comparisons (`eq ne gt
//! ge lt le`) joined by `and` / `or` (`and` binds tighter; no parentheses, no functions).
//!
//! Literals: `'text'` (with `''` for a quote), `datetime'…'` and `datetimeoffset'…'` (v2), bare
//! RFC 3339 instants (v4), `true`/`false`, `null`, decimals (`40`, `37.5M`), and any other bare
//! word (a v4 GUID) compared as text.
//!
//! Row values compare by kind: v2 `/Date(ms)/` strings and RFC 3339 strings as instants, JSON
//! numbers and decimal strings as decimals, strings as text. A value that cannot be compared with
//! the literal (missing, null, another kind) satisfies only `ne`, as `null ne 'x'` does in OData.

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::str::FromStr;

/// Why a `$filter` is outside the subset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("cannot parse the filter clause '{0}'")]
    Clause(String),
    #[error("unsupported operator '{0}'")]
    Operator(String),
    #[error("bad {kind} literal {text}: {detail}")]
    Literal { kind: &'static str, text: String, detail: String },
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Instant(i64),
    Bool(bool),
    Number(Decimal),
    Null,
    /// An unquoted word that is no other literal (a v4 GUID), compared as text.
    Bare(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    field: String,
    op: Op,
    value: Literal,
}

/// A parsed filter: an OR of ANDs.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    any: Vec<Vec<Comparison>>,
}

fn quoted(text: &str) -> Option<String> {
    text.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')).map(|s| s.replace("''", "'"))
}

fn bad_literal(kind: &'static str, text: &str, detail: impl ToString) -> FilterError {
    FilterError::Literal { kind, text: text.to_owned(), detail: detail.to_string() }
}

fn parse_literal(text: &str) -> Result<Literal, FilterError> {
    if let Some(inner) = text.strip_prefix("datetimeoffset").and_then(quoted) {
        let ts: Timestamp = inner.parse().map_err(|e| bad_literal("datetimeoffset", &inner, e))?;
        return Ok(Literal::Instant(ts.as_millisecond()));
    }
    if let Some(inner) = text.strip_prefix("datetime").and_then(quoted) {
        let dt: jiff::civil::DateTime = inner.parse().map_err(|e| bad_literal("datetime", &inner, e))?;
        let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).map_err(|e| bad_literal("datetime", &inner, e))?.timestamp();
        return Ok(Literal::Instant(ts.as_millisecond()));
    }
    if let Some(s) = quoted(text) {
        return Ok(Literal::Text(s));
    }
    match text {
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        "null" => return Ok(Literal::Null),
        _ => {}
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(Literal::Instant(ts.as_millisecond()));
    }
    let number = text.strip_suffix(['M', 'm']).unwrap_or(text);
    Ok(Decimal::from_str(number).map_or_else(|_| Literal::Bare(text.to_owned()), Literal::Number))
}

fn parse_op(text: &str) -> Result<Op, FilterError> {
    Ok(match text {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "gt" => Op::Gt,
        "ge" => Op::Ge,
        "lt" => Op::Lt,
        "le" => Op::Le,
        other => return Err(FilterError::Operator(other.to_owned())),
    })
}

/// Milliseconds inside an OData v2 JSON date, `/Date(ms)/` or `/Date(ms+0000)/`.
pub fn date_millis(text: &str) -> Option<i64> {
    let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let end = inner.char_indices().skip(1).find(|&(_, c)| c == '+' || c == '-').map_or(inner.len(), |(i, _)| i);
    inner[..end].parse().ok()
}

/// A string row value as an instant: v2 `/Date(…)/` or RFC 3339.
pub(crate) fn instant_of(text: &str) -> Option<i64> {
    date_millis(text).or_else(|| text.parse::<Timestamp>().ok().map(|t| t.as_millisecond()))
}

fn decimal_of(value: &Value) -> Option<Decimal> {
    match value {
        Value::Number(n) => {
            Decimal::from_str(&n.to_string()).ok().or_else(|| n.as_f64().and_then(|f| Decimal::try_from(f).ok()))
        }
        Value::String(s) => Decimal::from_str(s).ok(),
        _ => None,
    }
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut any = Vec::new();
        for alternative in crate::text::split_keyword(text.trim(), "or") {
            let mut all = Vec::new();
            for clause in crate::text::split_keyword(&alternative, "and") {
                let clause = clause.trim();
                let mut parts = clause.splitn(3, ' ');
                let (Some(field), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(FilterError::Clause(clause.to_owned()));
                };
                all.push(Comparison {
                    field: field.to_owned(),
                    op: parse_op(op)?,
                    value: parse_literal(value.trim())?,
                });
            }
            any.push(all);
        }
        Ok(Filter { any })
    }

    /// Every property the filter names.
    pub fn fields(&self) -> Vec<&str> {
        self.any.iter().flatten().map(|c| c.field.as_str()).collect()
    }

    pub fn matches(&self, row: &Map<String, Value>) -> bool {
        self.any.iter().any(|all| all.iter().all(|c| c.matches(row)))
    }
}

impl Comparison {
    /// How the row's value orders against the literal; `None` when they cannot be compared.
    fn ordering(&self, value: Option<&Value>) -> Option<Ordering> {
        let value = value.filter(|v| !v.is_null());
        match (&self.value, value) {
            (Literal::Null, None) => Some(Ordering::Equal),
            (Literal::Null, Some(_)) => Some(Ordering::Greater),
            (_, None) => None,
            (Literal::Text(t) | Literal::Bare(t), Some(Value::String(s))) => Some(s.as_str().cmp(t.as_str())),
            (Literal::Instant(ms), Some(Value::String(s))) => instant_of(s).map(|v| v.cmp(ms)),
            (Literal::Bool(b), Some(Value::Bool(v))) => Some(v.cmp(b)),
            (Literal::Number(n), Some(v)) => decimal_of(v).map(|v| v.cmp(n)),
            _ => None,
        }
    }

    fn matches(&self, row: &Map<String, Value>) -> bool {
        let ordering = self.ordering(row.get(&self.field));
        match (self.op, ordering) {
            (Op::Ne, ordering) => ordering != Some(Ordering::Equal),
            (_, None) => false,
            (Op::Eq, Some(o)) => o.is_eq(),
            (Op::Gt, Some(o)) => o.is_gt(),
            (Op::Ge, Some(o)) => o.is_ge(),
            (Op::Lt, Some(o)) => o.is_lt(),
            (Op::Le, Some(o)) => o.is_le(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn v2_comparisons_and_or_and_literals() {
        let row = row(json!({"PurchaseOrder": "4500000123", "ReleaseIsNotCompleted": true,
            "LastChangeDateTime": "/Date(1710469867000+0000)/", "OrderQuantity": "37.500", "Name": "a and b"}));
        let f = |s: &str| Filter::parse(s).unwrap().matches(&row);
        assert!(f("PurchaseOrder eq '4500000123'"));
        assert!(f("ReleaseIsNotCompleted eq true and PurchaseOrder ne '1'"));
        assert!(f("LastChangeDateTime gt datetimeoffset'2024-03-15T02:00:00Z'"));
        assert!(!f("LastChangeDateTime gt datetimeoffset'2024-03-15T02:31:07Z'"));
        assert!(f("LastChangeDateTime ge datetime'2024-03-15T00:00:00'"));
        assert!(f("OrderQuantity lt 40M"));
        assert!(f("PurchaseOrder eq 'x' or Name eq 'a and b'"));
        assert!(Filter::parse("substringof('x',Name)").is_err());
        assert_eq!(Filter::parse("A eq 'O''Neil'").unwrap().fields(), vec!["A"]);
    }

    #[test]
    fn v4_instants_numbers_guids_and_null() {
        let row = row(json!({"modifiedon": "2024-03-15T02:31:07Z", "statecode": 0, "totalamount": 20712.0,
            "_customerid_value": "a1b2c3d4-0000-ee11-8179-000d3a0a1c22", "description": null}));
        let f = |s: &str| Filter::parse(s).unwrap().matches(&row);
        assert!(f("modifiedon ge 2024-03-15T02:31:07Z"));
        assert!(!f("modifiedon gt 2024-03-15T02:31:07Z"));
        assert!(f("statecode eq 0 and totalamount gt 20000"));
        assert!(f("_customerid_value eq a1b2c3d4-0000-ee11-8179-000d3a0a1c22"));
        assert!(f("description eq null") && f("statecode ne null"));
        assert!(f("missing ne 'x'") && !f("missing eq 'x'") && !f("missing lt 'x'"));
        assert_eq!(Filter::parse("statecode has 1"), Err(FilterError::Operator("has".to_owned())));
    }

    #[test]
    fn v2_dates() {
        assert_eq!(date_millis("/Date(1710469867000+0000)/"), Some(1_710_469_867_000));
        assert_eq!(date_millis("/Date(1710720000000)/"), Some(1_710_720_000_000));
        assert_eq!(date_millis("2024-03-15"), None);
    }
}
