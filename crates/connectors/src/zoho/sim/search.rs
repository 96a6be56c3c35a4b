//! `GET /crm/{version}/{Module}/search` (reference B2 "Search"): `criteria`, `email`, `phone` or
//! `word`, paged like a list (`fields` optional here). The criteria are parsed with a `winnow`
//! grammar; a malformed one is refused with 400 `INVALID_QUERY`.
//!
//! ```text
//! criteria = group ((and | or) group)*                 (evaluated left to right)
//! group    = "(" (criteria | field ":" operator ":" value) ")"
//! operator = equals | not_equal | starts_with | in | greater_than | greater_equal
//!          | less_than | less_equal | between
//! value    = text up to ")" ("\(" "\)" "\," escape; `in` and `between` split on ",")
//! ```

use super::{error, no_content, ZohoSim, MODULES};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::HashMap;
use winnow::ascii::Caseless;
use winnow::combinator::{alt, delimited, repeat};
use winnow::error::{ContextError, ErrMode};
use winnow::prelude::*;
use winnow::token::{any, take_while};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equals,
    NotEqual,
    StartsWith,
    In,
    GreaterThan,
    GreaterEqual,
    LessThan,
    LessEqual,
    Between,
}

#[derive(Debug, Clone, PartialEq)]
enum Criteria {
    Test {
        field: String,
        op: Op,
        values: Vec<String>,
    },
    /// Left to right: (`true` = and, criteria).
    Chain(Box<Criteria>, Vec<(bool, Criteria)>),
}

fn operator(input: &mut &str) -> ModalResult<Op> {
    let name = take_while(1.., |c: char| c.is_ascii_alphabetic() || c == '_').parse_next(input)?;
    Ok(match name.to_ascii_lowercase().as_str() {
        "equals" => Op::Equals,
        "not_equal" => Op::NotEqual,
        "starts_with" => Op::StartsWith,
        "in" => Op::In,
        "greater_than" => Op::GreaterThan,
        "greater_equal" => Op::GreaterEqual,
        "less_than" => Op::LessThan,
        "less_equal" => Op::LessEqual,
        "between" => Op::Between,
        _ => return Err(ErrMode::Backtrack(ContextError::new())),
    })
}

/// The raw value up to the closing bracket, escapes kept.
fn raw_value(input: &mut &str) -> ModalResult<String> {
    let parts: Vec<String> = repeat(
        1..,
        alt((
            ('\\', any).map(|(_, c): (char, char)| format!("\\{c}")),
            any.verify(|c: &char| *c != ')' && *c != '(').map(String::from),
        )),
    )
    .parse_next(input)?;
    Ok(parts.concat())
}

/// Splits on unescaped commas and drops the escapes.
fn split_values(raw: &str, split: bool) -> Vec<String> {
    let (mut out, mut cur, mut chars) = (Vec::new(), String::new(), raw.chars());
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ',' if split => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|v| v.trim().to_owned()).collect()
}

fn test(input: &mut &str) -> ModalResult<Criteria> {
    let field = take_while(1.., |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.').parse_next(input)?;
    let op = delimited(':', operator, ':').parse_next(input)?;
    let raw = raw_value.parse_next(input)?;
    let values = split_values(&raw, matches!(op, Op::In | Op::Between));
    if op == Op::Between && values.len() != 2 {
        return Err(ErrMode::Cut(ContextError::new()));
    }
    Ok(Criteria::Test { field: field.to_owned(), op, values })
}

fn group(input: &mut &str) -> ModalResult<Criteria> {
    delimited('(', alt((test, criteria)), ')').parse_next(input)
}

fn criteria(input: &mut &str) -> ModalResult<Criteria> {
    let first = group.parse_next(input)?;
    let joiner = alt((Caseless("and").value(true), Caseless("or").value(false)));
    let rest: Vec<(bool, Criteria)> = repeat(0.., (joiner, group)).parse_next(input)?;
    Ok(if rest.is_empty() { first } else { Criteria::Chain(Box::new(first), rest) })
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(o) => o.get("id").or_else(|| o.get("name")).and_then(text_of),
        _ => None,
    }
}

/// Orders a row value against a criteria value: numbers, then instants, then text.
fn order(value: &str, wanted: &str) -> std::cmp::Ordering {
    if let (Ok(a), Ok(b)) = (value.parse::<f64>(), wanted.parse::<f64>()) {
        return a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal);
    }
    if let (Ok(a), Ok(b)) = (value.parse::<jiff::Timestamp>(), wanted.parse::<jiff::Timestamp>()) {
        return a.cmp(&b);
    }
    value.to_lowercase().cmp(&wanted.to_lowercase())
}

impl Criteria {
    fn fields(&self) -> Vec<&str> {
        match self {
            Criteria::Test { field, .. } => vec![field.as_str()],
            Criteria::Chain(first, rest) => {
                first.fields().into_iter().chain(rest.iter().flat_map(|(_, c)| c.fields())).collect()
            }
        }
    }

    fn holds(&self, row: &Value) -> bool {
        match self {
            Criteria::Chain(first, rest) => {
                rest.iter().fold(
                    first.holds(row),
                    |acc, (and, c)| if *and { acc && c.holds(row) } else { acc || c.holds(row) },
                )
            }
            Criteria::Test { field, op, values } => {
                let Some(value) = row.get(field.as_str()).and_then(text_of) else { return false };
                let first = values.first().map(String::as_str).unwrap_or_default();
                let ord = order(&value, first);
                match op {
                    Op::Equals => ord.is_eq(),
                    Op::NotEqual => ord.is_ne(),
                    Op::StartsWith => value.to_lowercase().starts_with(&first.to_lowercase()),
                    Op::In => values.iter().any(|v| order(&value, v).is_eq()),
                    Op::GreaterThan => ord.is_gt(),
                    Op::GreaterEqual => ord.is_ge(),
                    Op::LessThan => ord.is_lt(),
                    Op::LessEqual => ord.is_le(),
                    Op::Between => ord.is_ge() && values.get(1).is_some_and(|high| order(&value, high).is_le()),
                }
            }
        }
    }
}

impl ZohoSim {
    /// `GET {Module}/search?criteria=…|email=…|phone=…|word=…`.
    pub(super) fn search(&self, module: &str, query: &HashMap<String, String>) -> Response {
        let invalid = |reason: &str| error(400, "INVALID_QUERY", "Invalid query formed", json!({"reason": reason}));
        let test: Box<dyn Fn(&Value) -> bool> = if let Some(text) = query.get("criteria") {
            let parsed = match criteria.parse(text.as_str()) {
                Ok(c) => c,
                Err(_) => return invalid("invalid criteria"),
            };
            let known = self.known_fields(module);
            if let Some(unknown) = parsed.fields().into_iter().find(|f| *f != "id" && !known.iter().any(|k| k == f)) {
                return error(
                    400,
                    "INVALID_QUERY",
                    "Invalid query formed",
                    json!({"reason": "the field is not available for search", "api_name": unknown}),
                );
            }
            Box::new(move |row: &Value| parsed.holds(row))
        } else if let Some(email) = query.get("email") {
            let email = email.to_lowercase();
            Box::new(move |row: &Value| {
                ["Email", "Secondary_Email"]
                    .iter()
                    .any(|f| row.get(*f).and_then(Value::as_str).is_some_and(|v| v.to_lowercase() == email))
            })
        } else if let Some(phone) = query.get("phone") {
            let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
            Box::new(move |row: &Value| {
                ["Phone", "Mobile"].iter().any(|f| {
                    row.get(*f).and_then(Value::as_str).is_some_and(|v| {
                        !digits.is_empty()
                            && v.chars().filter(char::is_ascii_digit).collect::<String>().contains(&digits)
                    })
                })
            })
        } else if let Some(word) = query.get("word") {
            let word = word.to_lowercase();
            Box::new(move |row: &Value| {
                row.as_object()
                    .into_iter()
                    .flatten()
                    .any(|(_, v)| v.as_str().is_some_and(|s| s.to_lowercase().contains(&word)))
            })
        } else {
            return error(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                json!({"param": "criteria, email, phone or word"}),
            );
        };
        debug_assert!(MODULES.contains(&module));
        let rows: Vec<Value> =
            self.data().records.get(module).into_iter().flatten().filter(|r| test(r)).cloned().collect();
        if rows.is_empty() {
            return no_content();
        }
        // `fields` is optional for a search: without it every field comes back.
        let mut query = query.clone();
        if query.get("fields").is_none_or(|f| f.is_empty()) {
            let mut all: Vec<String> =
                rows.iter().flat_map(|r| r.as_object().into_iter().flatten().map(|(k, _)| k.clone())).collect();
            all.sort();
            all.dedup();
            query.insert("fields".to_owned(), all.join(","));
        }
        let key = format!("{module}/search?{}", query.get("criteria").map_or("", String::as_str));
        self.page(rows, &query, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criteria_parse_and_match() {
        let c = criteria.parse("((Stage:equals:Closed Won)and(Amount:greater_than:500000))").unwrap();
        assert!(c.holds(&json!({"Stage": "Closed Won", "Amount": 1250000})));
        assert!(!c.holds(&json!({"Stage": "Closed Won", "Amount": 1000})));
        let c = criteria.parse("(Stage:in:Closed Won,Closed Lost)or(Deal_Name:starts_with:KPC)").unwrap();
        assert!(c.holds(&json!({"Stage": "Qualification", "Deal_Name": "kpc spare parts"})));
        let c = criteria.parse(r"(Deal_Name:equals:KPC \(HK\)\, Ltd)").unwrap();
        assert!(c.holds(&json!({"Deal_Name": "KPC (HK), Ltd"})));
        let c = criteria.parse("(Amount:between:100,200)").unwrap();
        assert!(c.holds(&json!({"Amount": 150})) && !c.holds(&json!({"Amount": 250})));
        assert_eq!(c.fields(), ["Amount"]);
    }

    #[test]
    fn malformed_criteria_are_refused() {
        for bad in
            ["Stage:equals:x", "(Stage:eq:x)", "(Stage:equals:x", "(Stage:equals:x)and", "(Amount:between:1)", "()"]
        {
            assert!(criteria.parse(bad).is_err(), "{bad}");
        }
    }
}
