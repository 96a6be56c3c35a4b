//! The COQL of the Zoho simulator (`POST /crm/{version}/coql`), parsed with a `winnow` grammar
//! (reference B2 "COQL"); anything else is refused with Zoho's 400 `SYNTAX_ERROR` (details
//! `clause`, `line`, `column`, `near`, as the fixture) or `INVALID_QUERY` (unknown module or column).
//!
//! ```text
//! query     = SELECT column ("," column)* FROM module [WHERE cond] [ORDER BY key ("," key)*]
//!             [LIMIT n [OFFSET m] | LIMIT m "," n]
//! column    = field ["." field ["." field]]           (up to two lookup hops)
//! cond      = term ((AND term)* | (OR term)*)          (mixing AND and OR needs brackets)
//! term      = "(" cond ")" | field op value | field [NOT] IN "(" value ("," value)* ")"
//!           | field IS [NOT] NULL | field [NOT] LIKE 'pattern' | field BETWEEN value AND value
//! op        = "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//! value     = 'text' | number | true | false
//! ```

use super::{error, no_content, reply, ZohoSim, MODULES};
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::cmp::Ordering;
use winnow::ascii::{digit1, multispace0, multispace1, Caseless};
use winnow::combinator::{alt, delimited, not, opt, preceded, repeat, separated, terminated};
use winnow::error::{ContextError, ErrMode};
use winnow::prelude::*;
use winnow::token::{literal, one_of, take_till, take_while};

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
struct Query {
    columns: Vec<String>,
    module: String,
    condition: Option<Condition>,
    order: Vec<(String, bool)>,
    limit: Option<usize>,
    offset: usize,
}

const KEYWORDS: &[&str] = &[
    "select", "from", "where", "order", "by", "and", "or", "not", "in", "is", "null", "like", "between", "limit",
    "offset", "asc", "desc",
];

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

fn kw<'i>(word: &'static str) -> impl Parser<&'i str, &'i str, ErrMode<ContextError>> {
    terminated(literal(Caseless(word)), not(one_of(is_field_char)))
}

fn ws<'i, O>(inner: impl Parser<&'i str, O, ErrMode<ContextError>>) -> impl Parser<&'i str, O, ErrMode<ContextError>> {
    delimited(multispace0, inner, multispace0)
}

fn field(input: &mut &str) -> ModalResult<String> {
    let name = (one_of(|c: char| c.is_ascii_alphabetic() || c == '$'), take_while(0.., is_field_char))
        .take()
        .parse_next(input)?;
    if KEYWORDS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(ErrMode::Backtrack(ContextError::new()));
    }
    Ok(name.to_owned())
}

fn column(input: &mut &str) -> ModalResult<String> {
    let first = field.parse_next(input)?;
    let hops: Vec<String> = repeat(0..=2, preceded('.', field)).parse_next(input)?;
    Ok(std::iter::once(first).chain(hops).collect::<Vec<_>>().join("."))
}

/// A literal: its text and whether it was quoted.
fn value(input: &mut &str) -> ModalResult<(String, bool)> {
    ws(alt((
        delimited('\'', take_till(0.., '\''), '\'').map(|s: &str| (s.to_owned(), true)),
        (opt('-'), digit1, opt(('.', digit1))).take().map(|s: &str| (s.to_owned(), false)),
        kw("true").value(("true".to_owned(), false)),
        kw("false").value(("false".to_owned(), false)),
    )))
    .parse_next(input)
}

fn cmp_op(input: &mut &str) -> ModalResult<&'static str> {
    ws(alt((
        "<>".value("!="),
        "!=".value("!="),
        "<=".value("<="),
        ">=".value(">="),
        "<".value("<"),
        ">".value(">"),
        "=".value("="),
    )))
    .parse_next(input)
}

fn predicate(input: &mut &str) -> ModalResult<Condition> {
    let name = ws(column).parse_next(input)?;
    let list = |input: &mut &str| -> ModalResult<Vec<(String, bool)>> {
        delimited(ws('('), separated(1.., value, ','), ws(')')).parse_next(input)
    };
    let cond =
        alt((
            (cmp_op, value).map(|(op, (value, quoted))| Condition::Compare { field: name.clone(), op, value, quoted }),
            preceded((kw("is"), multispace1), (opt(terminated(kw("not"), multispace1)), kw("null")))
                .map(|(negated, _)| Condition::Null { field: name.clone(), negated: negated.is_some() }),
            (opt(terminated(kw("not"), multispace1)), preceded(kw("in"), list))
                .map(|(negated, values)| Condition::In { field: name.clone(), values, negated: negated.is_some() }),
            (opt(terminated(kw("not"), multispace1)), preceded(kw("like"), value)).map(|(negated, (pattern, _))| {
                Condition::Like { field: name.clone(), pattern, negated: negated.is_some() }
            }),
            (preceded(kw("between"), value), preceded(kw("and"), value)).map(|(low, high)| {
                Condition::And(vec![
                    Condition::Compare { field: name.clone(), op: ">=", value: low.0, quoted: low.1 },
                    Condition::Compare { field: name.clone(), op: "<=", value: high.0, quoted: high.1 },
                ])
            }),
        ))
        .parse_next(input);
    cond
}

fn term(input: &mut &str) -> ModalResult<Condition> {
    ws(alt((delimited('(', condition, ws(')')), predicate))).parse_next(input)
}

fn condition(input: &mut &str) -> ModalResult<Condition> {
    let first = term.parse_next(input)?;
    let ands: Vec<Condition> = repeat(0.., preceded(kw("and"), term)).parse_next(input)?;
    if !ands.is_empty() {
        return Ok(Condition::And(std::iter::once(first).chain(ands).collect()));
    }
    let ors: Vec<Condition> = repeat(0.., preceded(kw("or"), term)).parse_next(input)?;
    if !ors.is_empty() {
        return Ok(Condition::Or(std::iter::once(first).chain(ors).collect()));
    }
    Ok(first)
}

fn number(input: &mut &str) -> ModalResult<usize> {
    ws(digit1.try_map(str::parse::<usize>)).parse_next(input)
}

fn query(input: &mut &str) -> ModalResult<Query> {
    let columns = preceded(ws(kw("select")), separated(1.., ws(column), ',')).parse_next(input)?;
    let module = preceded(ws(kw("from")), ws(field)).parse_next(input)?;
    let condition = opt(preceded(kw("where"), condition)).parse_next(input)?;
    let order = opt(preceded(
        (ws(kw("order")), kw("by")),
        separated(1.., (ws(column), opt(ws(alt((kw("asc").value(false), kw("desc").value(true)))))), ','),
    ))
    .parse_next(input)?;
    let paging = opt(preceded(
        ws(kw("limit")),
        (
            number,
            opt(alt((preceded(kw("offset"), number).map(|m| (m, true)), preceded(',', number).map(|n| (n, false))))),
        ),
    ))
    .parse_next(input)?;
    let _ = multispace0.parse_next(input)?;
    let (limit, offset) = match paging {
        None => (None, 0),
        Some((n, None)) => (Some(n), 0),
        Some((n, Some((m, true)))) => (Some(n), m),
        // `limit offset, count`
        Some((m, Some((n, false)))) => (Some(n), m),
    };
    let order: Vec<(String, Option<bool>)> = order.unwrap_or_default();
    Ok(Query {
        columns,
        module,
        condition,
        order: order.into_iter().map(|(c, d)| (c, d.unwrap_or(false))).collect(),
        limit,
        offset,
    })
}

/// Zoho's `SYNTAX_ERROR` details for a failure at byte `offset` of `text`: the clause it is in,
/// the 1-based line and column, and the word there.
fn syntax_details(text: &str, offset: usize) -> Value {
    let before = &text[..offset.min(text.len())];
    let lower = before.to_ascii_lowercase();
    let clause = ["limit", "order by", "where", "from", "select"]
        .into_iter()
        .filter_map(|c| lower.rfind(c).map(|at| (at, c)))
        .max()
        .map_or("select", |(_, c)| c);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
    let near: String = text[before.len()..].trim_start().chars().take_while(|c| !c.is_whitespace()).collect();
    json!({"clause": clause, "line": line, "column": column, "near": near})
}

fn syntax_error(details: Value) -> Response {
    error(400, "SYNTAX_ERROR", "error occured while parsing the query", details)
}

impl ZohoSim {
    /// Answers one COQL query (grammar in the module docs).
    pub(super) fn coql(&self, body: &Value) -> Response {
        let Some(text) = body.get("select_query").and_then(Value::as_str) else {
            return error(400, "REQUIRED_PARAM_MISSING", "select_query is missing", json!({"param": "select_query"}));
        };
        let q = match query.parse(text) {
            Ok(q) => q,
            Err(e) => return syntax_error(syntax_details(text, e.offset())),
        };
        let module = q.module.as_str();
        if !MODULES.contains(&module) {
            return error(400, "INVALID_QUERY", "invalid module given", json!({"module": module}));
        }
        let known = self.known_fields(module);
        let unknown = q
            .columns
            .iter()
            .chain(q.order.iter().map(|(c, _)| c))
            .map(String::as_str)
            .chain(q.condition.iter().flat_map(Condition::fields))
            .find(|c| {
                let head = c.split('.').next().unwrap_or_default();
                head != "id" && !known.iter().any(|k| k == head)
            });
        if let Some(column) = unknown {
            return error(400, "INVALID_QUERY", "column given seems to be invalid", json!({"column_name": column}));
        }
        let limit = q.limit.unwrap_or(200);
        let offset = q.offset;
        if limit > 2000 || offset + limit > 100_000 {
            return error(400, "LIMIT_EXCEEDED", "limit exceeded", json!({"by": "limit", "limit": 2000}));
        }
        let (columns, condition, order) = (q.columns, q.condition, q.order);
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
    In {
        field: String,
        values: Vec<(String, bool)>,
        negated: bool,
    },
    /// `%` matches any run of characters.
    Like {
        field: String,
        pattern: String,
        negated: bool,
    },
    And(Vec<Condition>),
    Or(Vec<Condition>),
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
        // Decimals (`Amount: 56000.5`) order as numbers, not as text.
        if let (Ok(a), Ok(b)) = (text.parse::<f64>(), literal.parse::<f64>()) {
            return a.partial_cmp(&b);
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

/// `text` matches a LIKE `pattern` (`%` any run, case-insensitive).
fn like(text: &str, pattern: &str) -> bool {
    let (text, pattern) = (text.to_lowercase(), pattern.to_lowercase());
    let parts: Vec<&str> = pattern.split('%').collect();
    let mut rest = text.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else { return false };
            rest = &rest[at + part.len()..];
        }
    }
    rest.is_empty()
}

impl Condition {
    /// The columns the condition names.
    fn fields(&self) -> Vec<&str> {
        match self {
            Condition::Compare { field, .. }
            | Condition::Null { field, .. }
            | Condition::In { field, .. }
            | Condition::Like { field, .. } => vec![field.as_str()],
            Condition::And(all) | Condition::Or(all) => all.iter().flat_map(Condition::fields).collect(),
        }
    }

    fn holds(&self, row: &Value) -> bool {
        match self {
            Condition::In { field, values, negated } => {
                let found = row.get(field).is_some_and(|v| {
                    values.iter().any(|(lit, quoted)| compare_literal(v, lit, *quoted) == Some(Ordering::Equal))
                });
                found != *negated
            }
            Condition::Like { field, pattern, negated } => {
                let text = row.get(field).and_then(Value::as_str).is_some_and(|t| like(t, pattern));
                text != *negated
            }
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

    fn cond(text: &str) -> Condition {
        query.parse(&format!("select id from Deals where {text}")).unwrap().condition.unwrap()
    }

    #[test]
    fn conditions_compare_times_as_instants_and_ids_as_numbers() {
        let c = cond(
            "(Modified_Time > '2025-08-14T14:30:05+08:00' or (Modified_Time = '2025-08-14T14:30:05+08:00' and id > 99))",
        );
        let row = |at: &str, id: &str| json!({"id": id, "Modified_Time": at});
        assert!(c.holds(&row("2025-08-14T06:30:06Z", "1")));
        assert!(c.holds(&row("2025-08-14T06:30:05Z", "100")), "same instant, later id");
        assert!(!c.holds(&row("2025-08-14T14:30:05+08:00", "99")));
        assert!(!c.holds(&row("2025-08-14T14:30:04+08:00", "1000")));
        assert!(cond("Stage is not null and Amount >= 5").holds(&json!({"Stage": "x", "Amount": 7})));
        assert_eq!(compare(&json!(56000.5), &json!(1250000)), Ordering::Less, "decimals order as numbers");
    }

    #[test]
    fn in_like_between_and_paging_forms() {
        let row = json!({"Stage": "Closed Won", "Amount": 700, "Deal_Name": "KPC - Q3 order"});
        assert!(cond("Stage in ('Closed Won', 'Closed Lost')").holds(&row));
        assert!(!cond("Stage not in ('Closed Won')").holds(&row));
        assert!(cond("Deal_Name like 'kpc%order'").holds(&row));
        assert!(cond("Amount between 500 and 1000").holds(&row));
        let q = query.parse("SELECT Deal_Name FROM Deals ORDER BY Amount DESC, id LIMIT 5, 10").unwrap();
        assert_eq!((q.limit, q.offset), (Some(10), 5));
        assert_eq!(q.order, [("Amount".to_owned(), true), ("id".to_owned(), false)]);
        let q = query.parse("select Account_Name.Account_Name from Deals limit 3 offset 6").unwrap();
        assert_eq!((q.columns[0].as_str(), q.limit, q.offset), ("Account_Name.Account_Name", Some(3), 6));
    }

    #[test]
    fn text_outside_the_grammar_is_a_syntax_error_with_the_fixture_details() {
        for bad in [
            "select from Deals",
            "select Deal_Name Deals",
            "select Deal_Name from Deals where a = 1 and b = 2 or c = 3",
            "select Deal_Name from Deals where Amount >",
            "select Deal_Name from Deals limit ten",
            "select Deal_Name from Deals group by Stage",
            "update Deals set Stage = 'x'",
        ] {
            assert!(query.parse(bad).is_err(), "{bad}");
        }
        let text = "select Deal_Name from Deals where Stage = 'Closed Won' and Amount";
        let offset = query.parse(text).unwrap_err().offset();
        let details = syntax_details(text, offset);
        assert_eq!(details["clause"], "where");
        assert_eq!(details["line"], 1);
        let fixture = fixtures::read_json("zoho/coql/error_syntax.json");
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&details), keys(&fixture["details"]));
    }
}
