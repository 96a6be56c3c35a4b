//! The SOQL subset the simulator answers (reference A8): SELECT with parent dot paths and child
//! subqueries, WHERE with `=, !=, <, >, <=, >=` joined by AND and OR (a mix of the two needs
//! parentheses, as in SOQL), ORDER BY (ASC/DESC, NULLS FIRST/LAST), LIMIT. Anything else is
//! `MALFORMED_QUERY`, as Salesforce would answer.

use serde_json::{json, Map, Value};
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Path(Vec<String>),
    Sub(Box<Query>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub field: Vec<String>,
    pub op: String,
    pub value: Value,
}

/// A WHERE condition: a comparison, or a parenthesised AND / OR of conditions.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Cond(Cond),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub field: Vec<String>,
    pub desc: bool,
    pub nulls_last: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub fields: Vec<Field>,
    pub from: String,
    /// Conditions that must all hold.
    pub conds: Vec<Expr>,
    pub order: Vec<Order>,
    pub limit: Option<usize>,
}

/// Splits at `sep` outside parentheses and quotes.
fn split_top(text: &str, sep: char) -> Vec<String> {
    let (mut depth, mut quoted, mut cur, mut out) = (0i32, false, String::new(), Vec::new());
    for c in text.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            _ => {}
        }
        if c == sep && depth == 0 && !quoted {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

/// Byte offset of keyword `kw` (whole word, case-insensitive) at depth 0, outside quotes.
fn find_kw(text: &str, kw: &str) -> Option<usize> {
    let upper = text.to_ascii_uppercase();
    let bytes = upper.as_bytes();
    let (mut depth, mut quoted) = (0i32, false);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            _ => {}
        }
        if depth == 0 && !quoted && upper[i..].starts_with(kw) {
            let before_ok = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
            let after = i + kw.len();
            let after_ok = after >= bytes.len() || !bytes[after].is_ascii_alphanumeric();
            if before_ok && after_ok {
                return Some(i);
            }
        }
    }
    None
}

fn path(text: &str) -> Vec<String> {
    text.trim().split('.').map(str::to_owned).collect()
}

/// A query outside the subset (`MALFORMED_QUERY`) or a relationship the org lacks
/// (`INVALID_FIELD`); the text is the `message` Salesforce answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoqlError {
    #[error("unexpected token: '{0}'")]
    UnexpectedToken(String),
    #[error("unexpected token: expected SELECT")]
    NoSelect,
    #[error("unexpected token: expected FROM")]
    NoFrom,
    #[error("unexpected token: '{0}' (AND and OR mixed without parentheses)")]
    MixedAndOr(String),
    #[error("expected an operator")]
    NoOperator,
    #[error("LIMIT needs a number")]
    Limit,
    #[error("Didn't understand relationship '{0}'")]
    Relationship(String),
}

fn literal(text: &str) -> Result<Value, SoqlError> {
    let t = text.trim();
    if let Some(inner) = t.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Ok(Value::String(inner.replace("\\'", "'")));
    }
    match t.to_ascii_lowercase().as_str() {
        "null" => return Ok(Value::Null),
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    if let Ok(n) = t.parse::<f64>() {
        return Ok(json!(n));
    }
    if t.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        // Date and datetime literals are unquoted.
        return Ok(Value::String(t.to_owned()));
    }
    Err(SoqlError::UnexpectedToken(t.to_owned()))
}

pub fn parse(soql: &str) -> Result<Query, SoqlError> {
    let text = soql.trim();
    if find_kw(text, "SELECT") != Some(0) {
        return Err(SoqlError::NoSelect);
    }
    let from = find_kw(text, "FROM").ok_or(SoqlError::NoFrom)?;
    let fields = split_top(&text[6..from], ',')
        .into_iter()
        .map(|f| match f.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            Some(inner) => parse(inner).map(|q| Field::Sub(Box::new(q))),
            None => Ok(Field::Path(path(&f))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rest = &text[from + 4..];
    let where_at = find_kw(rest, "WHERE");
    let order_at = find_kw(rest, "ORDER BY");
    let limit_at = find_kw(rest, "LIMIT");
    let ends = |start: usize| {
        [where_at, order_at, limit_at].into_iter().flatten().filter(|&e| e > start).min().unwrap_or(rest.len())
    };
    let object = rest[..ends(0)].trim().to_owned();
    let mut query = Query { fields, from: object, conds: Vec::new(), order: Vec::new(), limit: None };
    if let Some(w) = where_at {
        query.conds = match parse_expr(&rest[w + 5..ends(w)])? {
            Expr::And(all) => all,
            one => vec![one],
        };
    }
    if let Some(o) = order_at {
        for item in split_top(&rest[o + 8..ends(o)], ',') {
            let upper = item.to_ascii_uppercase();
            let words: Vec<&str> = item.split_whitespace().collect();
            let desc = upper.contains(" DESC");
            let nulls_last = if upper.contains("NULLS LAST") {
                true
            } else if upper.contains("NULLS FIRST") {
                false
            } else {
                desc
            };
            query.order.push(Order { field: path(words.first().copied().unwrap_or_default()), desc, nulls_last });
        }
    }
    if let Some(l) = limit_at {
        query.limit = Some(rest[l + 5..].trim().parse().map_err(|_| SoqlError::Limit)?);
    }
    Ok(query)
}

/// Splits at every top-level `kw` (whole word, outside parentheses and quotes).
fn split_kw(text: &str, kw: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(i) = find_kw(rest, kw) {
        parts.push(rest[..i].trim().to_owned());
        rest = &rest[i + kw.len()..];
    }
    parts.push(rest.trim().to_owned());
    parts
}

/// `a = 1`, `(…)`, `x AND y AND …` or `x OR y OR …`; AND and OR side by side need parentheses.
fn parse_expr(text: &str) -> Result<Expr, SoqlError> {
    let text = text.trim();
    let ands = split_kw(text, "AND");
    let ors = split_kw(text, "OR");
    match (ands.len() > 1, ors.len() > 1) {
        (true, true) => Err(SoqlError::MixedAndOr(text.to_owned())),
        (true, false) => Ok(Expr::And(ands.iter().map(|p| parse_expr(p)).collect::<Result<_, _>>()?)),
        (false, true) => Ok(Expr::Or(ors.iter().map(|p| parse_expr(p)).collect::<Result<_, _>>()?)),
        (false, false) => match text.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
            Some(inner) => parse_expr(inner),
            None => parse_cond(text).map(Expr::Cond),
        },
    }
}

fn parse_cond(part: &str) -> Result<Cond, SoqlError> {
    let op = ["!=", "<=", ">=", "=", "<", ">"].into_iter().find(|op| part.contains(op)).ok_or(SoqlError::NoOperator)?;
    let (left, right) = part.split_once(op).ok_or(SoqlError::NoOperator)?;
    Ok(Cond { field: path(left), op: op.to_owned(), value: literal(right)? })
}

/// Orders two field values: datetimes by instant, numbers numerically, text by bytes.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => {
            match (model::ZonedTime::parse("a", x), model::ZonedTime::parse("b", y)) {
                (Ok(p), Ok(q)) => p.cmp(&q),
                _ => x.cmp(y),
            }
        }
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

pub fn matches(value: &Value, cond: &Cond) -> bool {
    if cond.value.is_null() || value.is_null() {
        let both = cond.value.is_null() && value.is_null();
        return if cond.op == "=" {
            both
        } else if cond.op == "!=" {
            !both
        } else {
            false
        };
    }
    let ord = compare(value, &cond.value);
    match cond.op.as_str() {
        "=" => ord == Ordering::Equal,
        "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        ">" => ord == Ordering::Greater,
        "<=" => ord != Ordering::Greater,
        _ => ord != Ordering::Less,
    }
}

fn holds(data: &dyn Data, row: &Value, expr: &Expr) -> bool {
    match expr {
        Expr::Cond(c) => matches(&lookup(data, row, &c.field), c),
        Expr::And(all) => all.iter().all(|e| holds(data, row, e)),
        Expr::Or(any) => any.iter().any(|e| holds(data, row, e)),
    }
}

/// Where the data lives, so the engine can follow relationships.
pub trait Data {
    fn rows(&self, object: &str) -> Vec<Value>;
    /// The record a parent relationship (`Account`, `Owner`, `Who`) of `row` points at.
    fn parent(&self, row: &Value, relationship: &str) -> Option<Value>;
    /// Child object and the lookup field for a child relationship (`Tasks` → Task.WhatId).
    fn child(&self, parent_object: &str, relationship: &str) -> Option<(String, String)>;
    fn attributes(&self, row: &Value) -> Value;
}

fn lookup(data: &dyn Data, row: &Value, path: &[String]) -> Value {
    match path {
        [] => Value::Null,
        [field] => row.get(field).cloned().unwrap_or(Value::Null),
        [rel, rest @ ..] => data.parent(row, rel).map_or(Value::Null, |p| lookup(data, &p, rest)),
    }
}

fn project(data: &dyn Data, object: &str, row: &Value, fields: &[Field]) -> Result<Value, SoqlError> {
    let mut out = Map::new();
    out.insert("attributes".to_owned(), data.attributes(row));
    for field in fields {
        match field {
            Field::Path(p) if p.len() == 1 => {
                out.insert(p[0].clone(), row.get(&p[0]).cloned().unwrap_or(Value::Null));
            }
            Field::Path(p) => {
                // Nest `Account.Name` as {"Account": {"attributes":…, "Name": …}}, null if unset.
                let Some(parent) = data.parent(row, &p[0]) else {
                    out.entry(p[0].clone()).or_insert(Value::Null);
                    continue;
                };
                let entry = out.entry(p[0].clone()).or_insert_with(|| json!({"attributes": data.attributes(&parent)}));
                if let Some(obj) = entry.as_object_mut() {
                    obj.insert(p[1..].join("."), lookup(data, &parent, &p[1..]));
                }
            }
            Field::Sub(sub) => {
                let (child, key) =
                    data.child(object, &sub.from).ok_or_else(|| SoqlError::Relationship(sub.from.clone()))?;
                let mut inner = sub.as_ref().clone();
                inner.from = child.clone();
                inner.conds.push(Expr::Cond(Cond {
                    field: vec![key],
                    op: "=".to_owned(),
                    value: row.get("Id").cloned().unwrap_or_default(),
                }));
                let rows = run(data, &inner)?;
                let value = if rows.is_empty() {
                    Value::Null
                } else {
                    json!({"totalSize": rows.len(), "done": true, "records": rows})
                };
                out.insert(sub.from.clone(), value);
            }
        }
    }
    Ok(Value::Object(out))
}

/// Runs a query; every row projected with its `attributes`.
pub fn run(data: &dyn Data, query: &Query) -> Result<Vec<Value>, SoqlError> {
    let mut rows: Vec<Value> =
        data.rows(&query.from).into_iter().filter(|row| query.conds.iter().all(|e| holds(data, row, e))).collect();
    rows.sort_by(|a, b| {
        for o in &query.order {
            let (x, y) = (lookup(data, a, &o.field), lookup(data, b, &o.field));
            let ord = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => {
                    if o.nulls_last {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (false, true) => {
                    if o.nulls_last {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                _ => {
                    if o.desc {
                        compare(&y, &x)
                    } else {
                        compare(&x, &y)
                    }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
    if let Some(limit) = query.limit {
        rows.truncate(limit);
    }
    rows.iter().map(|row| project(data, &query.from, row, &query.fields)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_query_parses() {
        let q = parse(
            "SELECT Id, Account.Name, (SELECT Id FROM Tasks ORDER BY ActivityDate DESC NULLS LAST LIMIT 10) \
             FROM Opportunity WHERE Id = '0065g00000Qx1ZpAAJ' AND Amount > 5 ORDER BY SystemModstamp, Id LIMIT 3",
        )
        .unwrap();
        assert_eq!(q.from, "Opportunity");
        assert_eq!(q.fields.len(), 3);
        assert!(matches!(&q.fields[2], Field::Sub(s) if s.from == "Tasks" && s.limit == Some(10) && s.order[0].desc));
        assert_eq!(q.conds.len(), 2);
        assert!(matches!(&q.conds[0], Expr::Cond(c) if c.value == json!("0065g00000Qx1ZpAAJ")));
        assert_eq!(q.order.len(), 2);
        assert_eq!(q.limit, Some(3));
        assert!(parse("SELEC Id FROM X").is_err());
        assert!(parse("SELECT Id FROM X WHERE A = 1 OR B = 2 AND C = 3").is_err(), "AND and OR mixed");
        let q = parse("SELECT Id FROM X WHERE S > 2 OR (S = 2 AND Id > 'b') ORDER BY S, Id LIMIT 2").unwrap();
        let cond =
            |field: &str, op: &str, value: Value| Expr::Cond(Cond { field: vec![field.into()], op: op.into(), value });
        assert_eq!(
            q.conds,
            vec![Expr::Or(vec![
                cond("S", ">", json!(2.0)),
                Expr::And(vec![cond("S", "=", json!(2.0)), cond("Id", ">", json!("b"))]),
            ])]
        );
        assert_eq!(q.limit, Some(2));
    }

    #[test]
    fn datetimes_compare_as_instants() {
        let c = Cond { field: vec!["S".into()], op: ">=".into(), value: json!("2025-08-14T06:30:05Z") };
        assert!(matches(&json!("2025-08-14T06:30:05.000+0000"), &c));
        assert!(!matches(&json!("2025-08-14T06:30:04.000+0000"), &c));
    }
}
