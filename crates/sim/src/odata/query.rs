//! System query options as the OData simulators read them, and row ordering for `$orderby`.

use super::filter::{instant_of, Filter, FilterError};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// One `$orderby` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    pub field: String,
    pub descending: bool,
}

/// The decoded query of one request, in the order the client sent it (next links keep it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryOptions {
    pairs: Vec<(String, String)>,
}

impl QueryOptions {
    /// Decodes a raw query string (`application/x-www-form-urlencoded`, as OData clients send).
    pub fn parse(query: Option<&str>) -> Self {
        let pairs = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
        Self { pairs }
    }

    /// Every option, decoded, in request order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Every option except `names`, for building the next link.
    pub fn without(&self, names: &[&str]) -> Vec<(String, String)> {
        self.pairs.iter().filter(|(k, _)| !names.contains(&k.as_str())).cloned().collect()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// A comma-separated list option (`$select`, `$expand`); empty when absent.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.get(name).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
    }

    /// A non-negative number option (`$top`, `$skip`); `None` when absent or not a number.
    pub fn number(&self, name: &str) -> Option<usize> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// `$orderby`: `Field [asc|desc]`, comma-separated.
    pub fn order_by(&self) -> Vec<OrderKey> {
        self.list("$orderby")
            .into_iter()
            .map(|key| {
                let mut words = key.split_whitespace();
                let field = words.next().unwrap_or_default().to_owned();
                OrderKey { field, descending: words.next() == Some("desc") }
            })
            .collect()
    }

    /// `$filter`, parsed; `Ok(None)` when absent.
    pub fn filter(&self) -> Result<Option<Filter>, FilterError> {
        self.get("$filter").map(Filter::parse).transpose()
    }

    /// Whether the total count was asked for: `$inlinecount=allpages` (v2) or `$count=true` (v4).
    pub fn wants_count(&self) -> bool {
        self.get("$inlinecount") == Some("allpages") || self.get("$count") == Some("true")
    }
}

/// Orders two row values the way `$orderby` does: instants as instants (v2 `/Date(…)/` or RFC
/// 3339), numbers as numbers, text as text; missing and null first.
pub fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(Value::String(x)), Some(Value::String(y))) => match (instant_of(x), instant_of(y)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.cmp(y),
        },
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// Orders two rows by `keys` (stable callers keep the stored order for ties).
pub fn compare_rows(a: &Map<String, Value>, b: &Map<String, Value>, keys: &[OrderKey]) -> Ordering {
    for key in keys {
        let ordering = compare_values(a.get(&key.field), b.get(&key.field));
        let ordering = if key.descending { ordering.reverse() } else { ordering };
        if ordering.is_ne() {
            return ordering;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_are_decoded_in_request_order() {
        let q = QueryOptions::parse(Some(
            "$select=PurchaseOrder,%20Supplier&$top=5&$filter=Status%20eq%20'READY'&$orderby=A%20desc,B&$inlinecount=allpages",
        ));
        assert_eq!(q.list("$select"), vec!["PurchaseOrder", "Supplier"]);
        assert_eq!(q.number("$top"), Some(5));
        assert_eq!(q.number("$skip"), None);
        assert!(q.filter().unwrap().is_some());
        assert_eq!(
            q.order_by(),
            vec![OrderKey { field: "A".into(), descending: true }, OrderKey { field: "B".into(), descending: false }]
        );
        assert!(q.wants_count());
        assert_eq!(q.without(&["$top", "$filter"]).len(), 3);
        assert!(QueryOptions::parse(None).pairs().is_empty());
    }

    #[test]
    fn values_order_by_kind() {
        let cmp = |a: Value, b: Value| compare_values(Some(&a), Some(&b));
        assert!(cmp(json!("/Date(2000)/"), json!("/Date(10000)/")).is_lt());
        assert!(cmp(json!("2024-03-15T02:31:07Z"), json!("2024-03-15T02:31:06Z")).is_gt());
        assert!(cmp(json!(9), json!(10)).is_lt());
        assert!(compare_values(None, Some(&json!("a"))).is_lt());
        let a = json!({"n": 1, "s": "b"}).as_object().cloned().unwrap();
        let b = json!({"n": 1, "s": "a"}).as_object().cloned().unwrap();
        let keys =
            [OrderKey { field: "n".into(), descending: false }, OrderKey { field: "s".into(), descending: true }];
        assert!(compare_rows(&a, &b, &keys).is_lt());
    }
}
