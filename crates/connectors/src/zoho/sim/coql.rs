//! The COQL subset of the Zoho simulator (`POST /crm/{version}/coql`).

use super::{error, no_content, reply, ZohoSim, MODULES};
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::cmp::Ordering;

impl ZohoSim {
    /// A COQL subset: `select a, b from M [where …] [order by a [asc|desc], …] [limit n [offset m]]`,
    /// where conditions compare a field (`=, !=, <, <=, >, >=`, `is [not] null`) and are joined by
    /// `and` / `or` in brackets (a mix of the two without brackets is a syntax error).
    pub(super) fn coql(&self, body: &Value) -> Response {
        let Some(query) = body.get("select_query").and_then(Value::as_str) else {
            return error(400, "REQUIRED_PARAM_MISSING", "select_query is missing", json!({"param": "select_query"}));
        };
        let lower = query.to_ascii_lowercase();
        let syntax = || error(400, "SYNTAX_ERROR", "error occured while parsing the query", json!({}));
        let (Some(sel), Some(from)) = (lower.find("select "), lower.find(" from ")) else { return syntax() };
        let columns: Vec<String> = query[sel + 7..from].split(',').map(|c| c.trim().to_owned()).collect();
        let rest = &query[from + 6..];
        let rest_lower = rest.to_ascii_lowercase();
        let end_of = |word: &str| rest_lower.find(word);
        let module_end =
            [" where ", " order by ", " limit "].iter().filter_map(|w| end_of(w)).min().unwrap_or(rest.len());
        let module = rest[..module_end].trim();
        if !MODULES.contains(&module) {
            return error(400, "INVALID_QUERY", "invalid module", json!({"module": module}));
        }
        let limit_at = end_of(" limit ");
        let order_at = end_of(" order by ");
        let where_clause = end_of(" where ").map(|w| {
            let stop = [order_at, limit_at].into_iter().flatten().filter(|e| *e > w).min().unwrap_or(rest.len());
            rest[w + 7..stop].to_owned()
        });
        let order: Vec<(String, bool)> = match order_at {
            Some(o) => {
                let stop = limit_at.filter(|l| *l > o).unwrap_or(rest.len());
                rest[o + 10..stop]
                    .split(',')
                    .map(|item| {
                        let mut words = item.split_whitespace();
                        let field = words.next().unwrap_or_default().to_owned();
                        (field, words.next().is_some_and(|w| w.eq_ignore_ascii_case("desc")))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let (mut limit, mut offset) = (200usize, 0usize);
        if let Some(l) = limit_at {
            let words: Vec<&str> = rest[l + 7..].split_whitespace().collect();
            let Some(n) = words.first().and_then(|w| w.parse().ok()) else { return syntax() };
            limit = n;
            if words.get(1).is_some_and(|w| w.eq_ignore_ascii_case("offset")) {
                let Some(m) = words.get(2).and_then(|w| w.parse().ok()) else { return syntax() };
                offset = m;
            }
        }
        if limit > 2000 || offset + limit > 100_000 {
            return error(400, "LIMIT_EXCEEDED", "limit exceeded", json!({"by": "limit", "limit": 2000}));
        }
        let condition = match where_clause.as_deref().map(parse_condition).transpose() {
            Ok(condition) => condition,
            Err(()) => return syntax(),
        };
        let d = self.data();
        let rows = d.records.get(module).cloned().unwrap_or_default();
        let matches = |r: &Value| condition.as_ref().is_none_or(|c| c.holds(r));
        let mut hits: Vec<&Value> = rows.iter().filter(|r| matches(r)).collect();
        hits.sort_by(|a, b| {
            order
                .iter()
                .map(|(field, desc)| {
                    let ord = compare(&a[field.as_str()], &b[field.as_str()]);
                    if *desc {
                        ord.reverse()
                    } else {
                        ord
                    }
                })
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        });
        let page: Vec<Value> = hits
            .iter()
            .skip(offset)
            .take(limit)
            .map(|r| {
                let mut out = Map::new();
                out.insert("id".into(), r["id"].clone());
                for c in &columns {
                    let value = match c.split_once('.') {
                        // `Lookup.Field`: one hop into the looked-up record.
                        Some((lookup, field)) => {
                            let target = r[lookup]["id"].as_str().unwrap_or("");
                            d.records
                                .values()
                                .flatten()
                                .find(|x| x["id"] == target)
                                .map_or(Value::Null, |x| x[field].clone())
                        }
                        None => match r.get(c.as_str()) {
                            Some(Value::Object(o)) => json!({"id": o.get("id").cloned().unwrap_or(Value::Null)}),
                            Some(v) => v.clone(),
                            None => Value::Null,
                        },
                    };
                    out.insert(c.clone(), value);
                }
                Value::Object(out)
            })
            .collect();
        if page.is_empty() {
            return no_content();
        }
        let more = offset + page.len() < hits.len();
        reply(200, json!({"data": page, "info": {"count": page.len(), "more_records": more}}))
    }
}

/// A parsed `where` clause.
#[derive(Debug, Clone, PartialEq)]
enum Condition {
    /// `field op literal`; the literal keeps its quotes off and says whether it had them.
    Compare {
        field: String,
        op: &'static str,
        value: String,
        quoted: bool,
    },
    Null {
        field: String,
        negated: bool,
    },
    And(Vec<Condition>),
    Or(Vec<Condition>),
}

fn parse_condition(text: &str) -> Result<Condition, ()> {
    let text = text.trim();
    let (ands, ors) = (::sim::text::split_keyword(text, "and"), ::sim::text::split_keyword(text, "or"));
    match (ands.len() > 1, ors.len() > 1) {
        (true, true) => Err(()),
        (true, false) => Ok(Condition::And(ands.iter().map(|p| parse_condition(p)).collect::<Result<_, _>>()?)),
        (false, true) => Ok(Condition::Or(ors.iter().map(|p| parse_condition(p)).collect::<Result<_, _>>()?)),
        (false, false) => {
            if let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
                return parse_condition(inner);
            }
            let lower = text.to_ascii_lowercase();
            if let Some(field) = lower.strip_suffix(" is not null") {
                return Ok(Condition::Null { field: text[..field.len()].trim().to_owned(), negated: true });
            }
            if let Some(field) = lower.strip_suffix(" is null") {
                return Ok(Condition::Null { field: text[..field.len()].trim().to_owned(), negated: false });
            }
            let op = [">=", "<=", "!=", "=", ">", "<"].into_iter().find(|op| text.contains(op)).ok_or(())?;
            let (field, value) = text.split_once(op).ok_or(())?;
            let value = value.trim();
            let (value, quoted) = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(inner) => (inner.to_owned(), true),
                None => (value.to_owned(), false),
            };
            Ok(Condition::Compare { field: field.trim().to_owned(), op, value, quoted })
        }
    }
}

/// How a row value orders against a literal: times as instants, numbers (ids are digit
/// strings) as numbers, anything else as text.
fn compare_literal(value: &Value, literal: &str, quoted: bool) -> Option<Ordering> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(o) => o.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        _ => return None,
    };
    if let (Ok(a), Ok(b)) = (text.parse::<jiff::Timestamp>(), literal.parse::<jiff::Timestamp>()) {
        return Some(a.cmp(&b));
    }
    if !quoted {
        if let (Ok(a), Ok(b)) = (text.parse::<i128>(), literal.parse::<i128>()) {
            return Some(a.cmp(&b));
        }
    }
    Some(text.as_str().cmp(literal))
}

/// Orders two row values as `order by` does (nulls first).
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => {
            let literal = match b {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            compare_literal(a, &literal, false).unwrap_or(Ordering::Equal)
        }
    }
}

impl Condition {
    fn holds(&self, row: &Value) -> bool {
        match self {
            Condition::And(all) => all.iter().all(|c| c.holds(row)),
            Condition::Or(any) => any.iter().any(|c| c.holds(row)),
            Condition::Null { field, negated } => row.get(field).is_some_and(|v| !v.is_null()) == *negated,
            Condition::Compare { field, op, value, quoted } => {
                let Some(ord) = row.get(field).and_then(|v| compare_literal(v, value, *quoted)) else { return false };
                match *op {
                    "=" => ord.is_eq(),
                    "!=" => ord.is_ne(),
                    ">" => ord.is_gt(),
                    ">=" => ord.is_ge(),
                    "<" => ord.is_lt(),
                    _ => ord.is_le(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_compare_times_as_instants_and_ids_as_numbers() {
        let c = parse_condition(
            "(Modified_Time > '2025-08-14T14:30:05+08:00' or (Modified_Time = '2025-08-14T14:30:05+08:00' and id > 99))",
        )
        .unwrap();
        let row = |at: &str, id: &str| json!({"id": id, "Modified_Time": at});
        assert!(c.holds(&row("2025-08-14T06:30:06Z", "1")));
        assert!(c.holds(&row("2025-08-14T06:30:05Z", "100")), "same instant, later id");
        assert!(!c.holds(&row("2025-08-14T14:30:05+08:00", "99")));
        assert!(!c.holds(&row("2025-08-14T14:30:04+08:00", "1000")));
        assert!(parse_condition("a = 1 and b = 2 or c = 3").is_err(), "and/or mixed without brackets");
        assert!(parse_condition("Stage is not null and Amount >= 5")
            .unwrap()
            .holds(&json!({"Stage": "x", "Amount": 7})));
    }
}
