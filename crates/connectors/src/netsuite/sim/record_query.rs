//! The `q` parameter of a record collection (`GET record/v1/{type}?q=…`, reference B4), parsed
//! with a `winnow` grammar; the rest is refused with 400 `INVALID_PARAMETER` at `q`.
//!
//! ```text
//! q         = condition ((AND | OR) condition)*        (evaluated left to right)
//! condition = field operator [value]
//! operator  = IS | IS_NOT | ANY_OF | NONE_OF | EQUAL | GREATER | GREATER_OR_EQUAL | LESS
//!           | LESS_OR_EQUAL | ON | AFTER | ON_OR_AFTER | BEFORE | ON_OR_BEFORE
//!           | CONTAIN | START_WITH | EMPTY | EMPTY_NOT
//! value     = "text" | number | true | false | "[" value ("," value)* "]"
//! ```
//!
//! Date values are read in the simulated user's date format `d/M/yyyy` (optionally `H:mm`), as
//! NetSuite reads them in the user's preference; a date without time covers the whole day (UTC).

use jiff::Timestamp;
use serde_json::Value;
use winnow::ascii::{digit1, multispace0, multispace1, Caseless};
use winnow::combinator::{alt, delimited, opt, preceded, repeat, separated};
use winnow::prelude::*;
use winnow::token::{take_till, take_while};

/// The simulated integration user's date format.
pub const DATE_FORMAT: &str = "d/M/yyyy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Is,
    IsNot,
    AnyOf,
    NoneOf,
    Equal,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
    On,
    After,
    OnOrAfter,
    Before,
    OnOrBefore,
    Contain,
    StartWith,
    Empty,
    EmptyNot,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Number(f64),
    Bool(bool),
    List(Vec<Literal>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: String,
    pub op: Op,
    pub value: Option<Literal>,
}

/// Conditions joined left to right (`true` = AND).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub first: Condition,
    pub rest: Vec<(bool, Condition)>,
}

/// A `q` the simulator refuses; the text is the `INVALID_PARAMETER` detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("Invalid search query. Detailed unprocessed description follows. Search error occurred: Invalid search query syntax at position {0}.")]
    Syntax(usize),
    /// Same text as the fixture `error_400_invalid_parameter.json`.
    #[error("Invalid search query. Detailed unprocessed description follows. Search error occurred: Unknown identifier '{0}'. Available identifiers are: {{transaction=transaction}}.")]
    UnknownField(String),
    #[error("Parse of date/time \"{0}\" failed with date format \"{DATE_FORMAT}\".")]
    Date(String),
}

fn operator(input: &mut &str) -> ModalResult<Op> {
    // The whole word is read first, so `IS_NOT` is never taken for `IS`.
    let name = take_while(1.., |c: char| c.is_ascii_alphabetic() || c == '_').parse_next(input)?;
    let op = match name.to_ascii_uppercase().as_str() {
        "IS" => Op::Is,
        "IS_NOT" => Op::IsNot,
        "ANY_OF" => Op::AnyOf,
        "NONE_OF" => Op::NoneOf,
        "EQUAL" => Op::Equal,
        "GREATER" => Op::Greater,
        "GREATER_OR_EQUAL" => Op::GreaterOrEqual,
        "LESS" => Op::Less,
        "LESS_OR_EQUAL" => Op::LessOrEqual,
        "ON" => Op::On,
        "AFTER" => Op::After,
        "ON_OR_AFTER" => Op::OnOrAfter,
        "BEFORE" => Op::Before,
        "ON_OR_BEFORE" => Op::OnOrBefore,
        "CONTAIN" => Op::Contain,
        "START_WITH" => Op::StartWith,
        "EMPTY" => Op::Empty,
        "EMPTY_NOT" => Op::EmptyNot,
        _ => return Err(winnow::error::ErrMode::Backtrack(winnow::error::ContextError::new())),
    };
    Ok(op)
}

fn literal(input: &mut &str) -> ModalResult<Literal> {
    alt((
        delimited('"', take_till(0.., '"'), '"').map(|s: &str| Literal::Text(s.to_owned())),
        (opt('-'), digit1, opt(('.', digit1))).take().try_map(str::parse::<f64>).map(Literal::Number),
        Caseless("true").value(Literal::Bool(true)),
        Caseless("false").value(Literal::Bool(false)),
        delimited(('[', multispace0), separated(1.., literal, (multispace0, ',', multispace0)), (multispace0, ']'))
            .map(Literal::List),
    ))
    .parse_next(input)
}

fn condition(input: &mut &str) -> ModalResult<Condition> {
    let field = take_while(1.., |c: char| c.is_ascii_alphanumeric() || c == '_').parse_next(input)?;
    let op = preceded(multispace1, operator).parse_next(input)?;
    let value = if matches!(op, Op::Empty | Op::EmptyNot) {
        None
    } else {
        Some(preceded(multispace1, literal).parse_next(input)?)
    };
    Ok(Condition { field: field.to_owned(), op, value })
}

fn filter(input: &mut &str) -> ModalResult<Filter> {
    let first = preceded(multispace0, condition).parse_next(input)?;
    let joiner = delimited(multispace1, alt((Caseless("AND").value(true), Caseless("OR").value(false))), multispace1);
    let rest = repeat(0.., (joiner, condition)).parse_next(input)?;
    let _ = multispace0.parse_next(input)?;
    Ok(Filter { first, rest })
}

/// Parses `q`.
pub fn parse(q: &str) -> Result<Filter, QueryError> {
    filter.parse(q).map_err(|e| QueryError::Syntax(e.offset()))
}

/// (start, end) seconds of a `d/M/yyyy[ H:mm]` literal: the whole day, or the minute.
fn date_range(text: &str) -> Result<(i64, i64), QueryError> {
    let refuse = || QueryError::Date(text.to_owned());
    let (date, time) = match text.trim().split_once(' ') {
        Some((d, t)) => (d, Some(t)),
        None => (text.trim(), None),
    };
    let parts: Vec<i16> = date.split('/').map(|p| p.parse().map_err(|_| refuse())).collect::<Result<_, _>>()?;
    let [day, month, year] = <[i16; 3]>::try_from(parts).map_err(|_| refuse())?;
    let (hour, minute) = match time {
        Some(t) => {
            let (h, m) = t.split_once(':').ok_or_else(refuse)?;
            (h.parse::<i8>().map_err(|_| refuse())?, m.parse::<i8>().map_err(|_| refuse())?)
        }
        None => (0, 0),
    };
    let small = |n: i16| i8::try_from(n).map_err(|_| refuse());
    let civil =
        jiff::civil::DateTime::new(year, small(month)?, small(day)?, hour, minute, 0, 0).map_err(|_| refuse())?;
    let start = civil.to_zoned(jiff::tz::TimeZone::UTC).map_err(|_| refuse())?.timestamp().as_second();
    Ok((start, start + if time.is_some() { 60 } else { 86_400 }))
}

/// Checks the fields against `known` (the record type's field names, case-insensitive) and the
/// date literals; `Ok` means every record can be judged.
pub fn check(filter: &Filter, known: &dyn Fn(&str) -> bool) -> Result<(), QueryError> {
    for cond in std::iter::once(&filter.first).chain(filter.rest.iter().map(|(_, c)| c)) {
        if !known(&cond.field) {
            return Err(QueryError::UnknownField(cond.field.clone()));
        }
        if matches!(cond.op, Op::On | Op::After | Op::OnOrAfter | Op::Before | Op::OnOrBefore) {
            match &cond.value {
                Some(Literal::Text(t)) => {
                    date_range(t)?;
                }
                other => return Err(QueryError::Date(format!("{other:?}"))),
            }
        }
    }
    Ok(())
}

/// The comparable text of a field value: references by id, numbers as written.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(o) => o.get("id").and_then(text_of),
        _ => None,
    }
}

fn literal_text(l: &Literal) -> String {
    match l {
        Literal::Text(t) => t.clone(),
        Literal::Number(n) if n.fract() == 0.0 => format!("{n:.0}"),
        Literal::Number(n) => n.to_string(),
        Literal::Bool(b) => b.to_string(),
        Literal::List(_) => String::new(),
    }
}

fn field<'v>(record: &'v Value, name: &str) -> Option<&'v Value> {
    record.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

fn holds(cond: &Condition, record: &Value) -> bool {
    let value = field(record, &cond.field).filter(|v| !v.is_null());
    let text = value.and_then(text_of);
    let number = text.as_deref().and_then(|t| t.parse::<f64>().ok());
    let wanted = cond.value.as_ref();
    let wanted_number = wanted.map(literal_text).and_then(|t| t.parse::<f64>().ok());
    let list: Vec<String> = match wanted {
        Some(Literal::List(items)) => items.iter().map(literal_text).collect(),
        Some(single) => vec![literal_text(single)],
        None => Vec::new(),
    };
    let time = text.as_deref().and_then(|t| {
        let t = if t.len() == 10 { format!("{t}T00:00:00Z") } else { t.to_owned() };
        t.parse::<Timestamp>().ok().map(|ts| ts.as_second())
    });
    let range = match wanted {
        Some(Literal::Text(t)) => date_range(t).ok(),
        _ => None,
    };
    let numeric = |f: fn(f64, f64) -> bool| matches!((number, wanted_number), (Some(a), Some(b)) if f(a, b));
    let timed = |f: fn(i64, (i64, i64)) -> bool| matches!((time, range), (Some(t), Some(r)) if f(t, r));
    match cond.op {
        Op::Is | Op::Equal => {
            text.as_deref().is_some_and(|t| list.iter().any(|w| w.eq_ignore_ascii_case(t))) || numeric(|a, b| a == b)
        }
        Op::IsNot => !(text.as_deref().is_some_and(|t| list.iter().any(|w| w.eq_ignore_ascii_case(t)))),
        Op::AnyOf => text.as_deref().is_some_and(|t| list.iter().any(|w| w == t)),
        Op::NoneOf => !text.as_deref().is_some_and(|t| list.iter().any(|w| w == t)),
        Op::Greater => numeric(|a, b| a > b),
        Op::GreaterOrEqual => numeric(|a, b| a >= b),
        Op::Less => numeric(|a, b| a < b),
        Op::LessOrEqual => numeric(|a, b| a <= b),
        Op::On => timed(|t, (s, e)| t >= s && t < e),
        Op::After => timed(|t, (_, e)| t >= e),
        Op::OnOrAfter => timed(|t, (s, _)| t >= s),
        Op::Before => timed(|t, (s, _)| t < s),
        Op::OnOrBefore => timed(|t, (_, e)| t < e),
        Op::Contain => text.is_some_and(|t| list.first().is_some_and(|w| t.to_lowercase().contains(&w.to_lowercase()))),
        Op::StartWith => {
            text.is_some_and(|t| list.first().is_some_and(|w| t.to_lowercase().starts_with(&w.to_lowercase())))
        }
        Op::Empty => text.is_none_or(|t| t.is_empty()),
        Op::EmptyNot => text.is_some_and(|t| !t.is_empty()),
    }
}

/// Whether `record` passes `filter` (joined left to right).
pub fn matches(filter: &Filter, record: &Value) -> bool {
    filter.rest.iter().fold(holds(&filter.first, record), |acc, (and, cond)| {
        if *and {
            acc && holds(cond, record)
        } else {
            acc || holds(cond, record)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn po() -> Value {
        json!({"id": "4711", "tranId": "PO000812", "approvalStatus": {"id": "1"}, "total": 1710.0,
               "lastModifiedDate": "2024-03-15T02:31:00Z"})
    }

    #[test]
    fn the_reference_operators_filter_records() {
        for (q, want) in [
            ("tranId IS \"PO000812\"", true),
            ("approvalStatus ANY_OF [1, 2]", true),
            ("approvalStatus ANY_OF [2]", false),
            ("lastModifiedDate ON_OR_AFTER \"15/3/2024\"", true),
            ("lastModifiedDate AFTER \"15/3/2024\"", false),
            ("lastModifiedDate AFTER \"15/3/2024 2:30\"", true),
            ("total GREATER 1000 AND tranId START_WITH \"PO\"", true),
            ("total LESS 1000 OR memo EMPTY", true),
        ] {
            let filter = parse(q).unwrap();
            assert_eq!(matches(&filter, &po()), want, "{q}");
        }
    }

    #[test]
    fn syntax_unknown_fields_and_dates_outside_the_user_format_are_refused() {
        assert!(matches!(parse("tranId = \"PO000812\""), Err(QueryError::Syntax(_))));
        assert!(matches!(parse("tranId IS"), Err(QueryError::Syntax(_))));
        assert!(matches!(parse("tranId IS \"x\" AND"), Err(QueryError::Syntax(_))));
        let known = |f: &str| f.eq_ignore_ascii_case("lastModifiedDate");
        let err = check(&parse("subsidiary ANY_OF [2]").unwrap(), &known).unwrap_err();
        let fixture = fixtures::read_json("netsuite/error_400_invalid_parameter.json");
        assert_eq!(err.to_string(), fixture["o:errorDetails"][0]["detail"].as_str().unwrap());
        let err = check(&parse("lastModifiedDate AFTER \"2024-01-31 08:00:00\"").unwrap(), &known).unwrap_err();
        assert!(err.to_string().contains("failed with date format \"d/M/yyyy\""), "{err}");
    }
}
