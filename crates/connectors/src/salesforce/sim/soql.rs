//! The SOQL the simulator answers (reference A2 and A8), parsed with `winnow`:
//!
//! ```text
//! query   = SELECT item ("," item)* FROM object [WHERE cond] [ORDER BY order ("," order)*]
//!           [LIMIT n] [OFFSET n]
//! item    = path | "(" query ")" | COUNT "(" [path] ")" [alias]
//! path    = name ("." name)*                      -- Account.Name follows a lookup
//! cond    = term (AND term)* | term (OR term)*    -- AND and OR mixed need parentheses
//! term    = NOT term | "(" cond ")" | path op value | path [NOT] IN "(" value ("," value)* ")"
//!         | path LIKE string
//! op      = "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//! value   = 'string' | number | true | false | null | 2025-09-30 | 2025-08-14T06:30:05Z
//!         | TODAY | YESTERDAY | TOMORROW | LAST_N_DAYS:n | NEXT_N_DAYS:n | {LAST,THIS,NEXT}_{WEEK,MONTH,YEAR}
//!         | LAST_90_DAYS | NEXT_90_DAYS
//! order   = path [ASC | DESC] [NULLS FIRST | NULLS LAST]
//! ```
//!
//! Anything else is `MALFORMED_QUERY` with Salesforce's caret diagram. Names are then checked
//! against the org's describe ([`super::schema`]): an unknown object is `INVALID_TYPE`, an
//! unknown field or relationship `INVALID_FIELD`, as Salesforce answers them.

use super::schema::{self, FieldType, ObjectDef};
use serde_json::{json, Map, Value};
use std::cmp::Ordering;
use winnow::ascii::{digit1, multispace0};
use winnow::combinator::{alt, cut_err, delimited, eof, opt, preceded, repeat, separated, terminated};
use winnow::error::{ContextError, ErrMode};
use winnow::prelude::*;
use winnow::stream::{LocatingSlice, Location};
use winnow::token::{any, one_of, take_while};

type In<'a> = LocatingSlice<&'a str>;
type PResult<T> = Result<T, ErrMode<ContextError>>;

/// A field path (`Name`, `Account.Name`) and where it starts in the query text.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub parts: Vec<String>,
    pub at: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Path(Path),
    Sub(Box<Query>),
    /// `COUNT()` (no argument: the answer is only `totalSize`) or `COUNT(field) [alias]`.
    Count {
        arg: Option<Path>,
        alias: Option<String>,
    },
}

/// A relative date literal: `TODAY`, `LAST_N_DAYS:30`, `THIS_MONTH`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relative {
    Today,
    Yesterday,
    Tomorrow,
    LastNDays(i64),
    NextNDays(i64),
    Week(i64),
    Month(i64),
    Year(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Date(String),
    DateTime(String),
    Relative(Relative),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub field: Path,
    pub op: Op,
    pub values: Vec<Literal>,
}

/// A WHERE condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Cond(Cond),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub field: Path,
    pub desc: bool,
    pub nulls_last: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub fields: Vec<Field>,
    pub from: String,
    pub from_at: usize,
    pub filter: Option<Expr>,
    pub order: Vec<Order>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

/// Why a query is refused; [`SoqlError::message`] renders Salesforce's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoqlError {
    /// Outside the grammar: `MALFORMED_QUERY`, "unexpected token: 'X'".
    #[error("unexpected token: {token}")]
    Malformed { at: usize, token: String },
    /// `INVALID_TYPE`: the FROM object is not in the org.
    #[error("sObject type '{object}' is not supported. If you are attempting to use a custom object, be sure to append the '__c' after the entity name. Please reference your WSDL or the describe call for the appropriate names.")]
    InvalidType { at: usize, object: String },
    /// `INVALID_FIELD`: no such field on the object.
    #[error("No such column '{field}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.")]
    NoSuchColumn { at: usize, field: String, object: String },
    /// `INVALID_FIELD`: a parent relationship in a path that the object lacks.
    #[error("Didn't understand relationship '{relationship}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names.")]
    ParentRelationship { at: usize, relationship: String },
    /// `INVALID_TYPE`: a subquery FROM that is not a child relationship of the outer object.
    #[error("Didn't understand relationship '{relationship}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name. Please reference your WSDL or the describe call for the appropriate names.")]
    ChildRelationship { at: usize, relationship: String },
    /// `MALFORMED_QUERY`: COUNT() beside other fields.
    #[error("COUNT() and other fields in the same SELECT are not supported")]
    CountMixed { at: usize },
}

impl SoqlError {
    /// The `errorCode` Salesforce answers.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed { .. } | Self::CountMixed { .. } => "MALFORMED_QUERY",
            Self::InvalidType { .. } | Self::ChildRelationship { .. } => "INVALID_TYPE",
            Self::NoSuchColumn { .. } | Self::ParentRelationship { .. } => "INVALID_FIELD",
        }
    }

    fn at(&self) -> usize {
        match self {
            Self::Malformed { at, .. }
            | Self::InvalidType { at, .. }
            | Self::NoSuchColumn { at, .. }
            | Self::ParentRelationship { at, .. }
            | Self::ChildRelationship { at, .. }
            | Self::CountMixed { at } => *at,
        }
    }

    /// Salesforce's message: the query line, a caret under the culprit, its row and column,
    /// then the reason (fixture `errors/malformed_query_400.json`).
    pub fn message(&self, soql: &str) -> String {
        let at = self.at().min(soql.len());
        let before = &soql[..at];
        let row = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line_end = soql[at..].find('\n').map_or(soql.len(), |i| at + i);
        let column = soql[line_start..at].chars().count() + 1;
        format!(
            "\n{}\n{}^\nERROR at Row:{row}:Column:{column}\n{self}",
            &soql[line_start..line_end],
            " ".repeat(column - 1)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Grammar

const RESERVED: &[&str] = &[
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "LIMIT", "OFFSET", "ASC", "DESC",
    "NULLS", "GROUP", "HAVING", "WITH", "FOR", "USING", "INCLUDES", "EXCLUDES",
];

fn ws(i: &mut In<'_>) -> PResult<()> {
    multispace0.void().parse_next(i)
}

fn name<'a>(i: &mut In<'a>) -> PResult<&'a str> {
    (one_of(|c: char| c.is_ascii_alphabetic()), take_while(0.., |c: char| c.is_ascii_alphanumeric() || c == '_'))
        .take()
        .parse_next(i)
}

/// A keyword as a whole word, any case.
fn kw<'a>(word: &'static str) -> impl Parser<In<'a>, (), ErrMode<ContextError>> {
    move |i: &mut In<'a>| {
        ws(i)?;
        name.verify(|w: &str| w.eq_ignore_ascii_case(word)).void().parse_next(i)
    }
}

fn symbol<'a>(text: &'static str) -> impl Parser<In<'a>, (), ErrMode<ContextError>> {
    move |i: &mut In<'a>| {
        ws(i)?;
        text.void().parse_next(i)
    }
}

/// A name that is not a keyword (a field, relationship or object name).
fn identifier<'a>(i: &mut In<'a>) -> PResult<&'a str> {
    ws(i)?;
    name.verify(|w: &str| !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w))).parse_next(i)
}

fn path(i: &mut In<'_>) -> PResult<Path> {
    ws(i)?;
    let at = i.current_token_start();
    let parts: Vec<&str> = separated(1.., name, '.').parse_next(i)?;
    if parts.first().is_some_and(|w| RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w))) {
        return Err(ErrMode::Backtrack(ContextError::new()));
    }
    Ok(Path { parts: parts.into_iter().map(str::to_owned).collect(), at })
}

fn number(i: &mut In<'_>) -> PResult<f64> {
    (opt(one_of(['-', '+'])), digit1, opt(('.', digit1))).take().parse_to().parse_next(i)
}

fn two(i: &mut In<'_>) -> PResult<()> {
    take_while(2, |c: char| c.is_ascii_digit()).void().parse_next(i)
}

/// `2025-09-30` or `2025-08-14T06:30:05[.sss](Z|±hh:mm)`, unquoted.
fn date_or_datetime(i: &mut In<'_>) -> PResult<Literal> {
    let date = (take_while(4, |c: char| c.is_ascii_digit()), '-', two, '-', two).take().parse_next(i)?;
    let time = opt((
        one_of(['T', 't']),
        two,
        ':',
        two,
        ':',
        two,
        opt(('.', digit1)),
        alt((one_of(['Z', 'z']).void(), (one_of(['+', '-']), two, ':', two).void())),
    )
        .take())
    .parse_next(i)?;
    Ok(match time {
        Some(t) => Literal::DateTime(format!("{date}{t}")),
        None => Literal::Date(date.to_owned()),
    })
}

/// `'text'` with SOQL's backslash escapes; `\%` and `\_` stay escaped for LIKE.
fn string(i: &mut In<'_>) -> PResult<String> {
    '\''.parse_next(i)?;
    let mut out = String::new();
    loop {
        match any.parse_next(i)? {
            '\'' => return Ok(out),
            '\\' => match any.parse_next(i)? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                c @ ('%' | '_') => {
                    out.push('\\');
                    out.push(c);
                }
                c @ ('\'' | '"' | '\\') => out.push(c),
                _ => return Err(ErrMode::Cut(ContextError::new())),
            },
            c => out.push(c),
        }
    }
}

fn relative(i: &mut In<'_>) -> PResult<Literal> {
    let word = name.parse_next(i)?.to_ascii_uppercase();
    let fixed = match word.as_str() {
        "TODAY" => Some(Relative::Today),
        "YESTERDAY" => Some(Relative::Yesterday),
        "TOMORROW" => Some(Relative::Tomorrow),
        "LAST_WEEK" => Some(Relative::Week(-1)),
        "THIS_WEEK" => Some(Relative::Week(0)),
        "NEXT_WEEK" => Some(Relative::Week(1)),
        "LAST_MONTH" => Some(Relative::Month(-1)),
        "THIS_MONTH" => Some(Relative::Month(0)),
        "NEXT_MONTH" => Some(Relative::Month(1)),
        "LAST_YEAR" => Some(Relative::Year(-1)),
        "THIS_YEAR" => Some(Relative::Year(0)),
        "NEXT_YEAR" => Some(Relative::Year(1)),
        "LAST_90_DAYS" => Some(Relative::LastNDays(90)),
        "NEXT_90_DAYS" => Some(Relative::NextNDays(90)),
        _ => None,
    };
    if let Some(r) = fixed {
        return Ok(Literal::Relative(r));
    }
    let make: fn(i64) -> Relative = match word.as_str() {
        "LAST_N_DAYS" => Relative::LastNDays,
        "NEXT_N_DAYS" => Relative::NextNDays,
        _ => return Err(ErrMode::Backtrack(ContextError::new())),
    };
    let n: i64 = cut_err(preceded(':', digit1.parse_to())).parse_next(i)?;
    Ok(Literal::Relative(make(n)))
}

fn value(i: &mut In<'_>) -> PResult<Literal> {
    ws(i)?;
    alt((
        string.map(Literal::Str),
        date_or_datetime,
        number.map(Literal::Num),
        kw("null").value(Literal::Null),
        kw("true").value(Literal::Bool(true)),
        kw("false").value(Literal::Bool(false)),
        relative,
    ))
    .parse_next(i)
}

fn value_list(i: &mut In<'_>) -> PResult<Vec<Literal>> {
    delimited(symbol("("), separated(1.., value, symbol(",")), symbol(")")).parse_next(i)
}

fn comparison(i: &mut In<'_>) -> PResult<Expr> {
    let field = path(i)?;
    ws(i)?;
    let (op, values) = cut_err(alt((
        (
            alt((
                "!=".value(Op::Ne),
                "<>".value(Op::Ne),
                "<=".value(Op::Le),
                ">=".value(Op::Ge),
                "=".value(Op::Eq),
                "<".value(Op::Lt),
                ">".value(Op::Gt),
            )),
            cut_err(value),
        )
            .map(|(op, v)| (op, vec![v])),
        preceded(kw("LIKE"), cut_err(preceded(ws, string))).map(|s| (Op::Like, vec![Literal::Str(s)])),
        preceded(kw("IN"), cut_err(value_list)).map(|v| (Op::In, v)),
        preceded((kw("NOT"), kw("IN")), cut_err(value_list)).map(|v| (Op::NotIn, v)),
    )))
    .parse_next(i)?;
    Ok(Expr::Cond(Cond { field, op, values }))
}

fn term(i: &mut In<'_>) -> PResult<Expr> {
    alt((
        preceded(kw("NOT"), cut_err(term)).map(|e| Expr::Not(Box::new(e))),
        preceded(symbol("("), cut_err(terminated(condition, symbol(")")))),
        comparison,
    ))
    .parse_next(i)
}

/// Terms joined by AND, or by OR; a mix of the two needs parentheses, as in SOQL.
fn condition(i: &mut In<'_>) -> PResult<Expr> {
    let first = term(i)?;
    let ands: Vec<Expr> = repeat(0.., preceded(kw("AND"), cut_err(term))).parse_next(i)?;
    if !ands.is_empty() {
        return Ok(Expr::And(std::iter::once(first).chain(ands).collect()));
    }
    let ors: Vec<Expr> = repeat(0.., preceded(kw("OR"), cut_err(term))).parse_next(i)?;
    if !ors.is_empty() {
        return Ok(Expr::Or(std::iter::once(first).chain(ors).collect()));
    }
    Ok(first)
}

fn order_item(i: &mut In<'_>) -> PResult<Order> {
    let field = path(i)?;
    let desc = opt(alt((kw("ASC").value(false), kw("DESC").value(true)))).parse_next(i)?.unwrap_or(false);
    let nulls =
        opt(preceded(kw("NULLS"), cut_err(alt((kw("FIRST").value(false), kw("LAST").value(true)))))).parse_next(i)?;
    // Salesforce's default: nulls first ascending, last descending.
    Ok(Order { field, desc, nulls_last: nulls.unwrap_or(desc) })
}

fn count_item(i: &mut In<'_>) -> PResult<Field> {
    (kw("COUNT"), symbol("(")).parse_next(i)?;
    let arg = cut_err(terminated(opt(path), symbol(")"))).parse_next(i)?;
    let alias = opt(identifier.map(str::to_owned)).parse_next(i)?;
    Ok(Field::Count { arg, alias })
}

fn item(i: &mut In<'_>) -> PResult<Field> {
    alt((
        preceded(symbol("("), cut_err(terminated(query, symbol(")")))).map(|q| Field::Sub(Box::new(q))),
        count_item,
        path.map(Field::Path),
    ))
    .parse_next(i)
}

fn count(i: &mut In<'_>) -> PResult<usize> {
    preceded(ws, digit1.parse_to()).parse_next(i)
}

fn query(i: &mut In<'_>) -> PResult<Query> {
    kw("SELECT").parse_next(i)?;
    let fields: Vec<Field> = cut_err(separated(1.., item, symbol(","))).parse_next(i)?;
    cut_err(kw("FROM")).parse_next(i)?;
    ws(i)?;
    let from_at = i.current_token_start();
    let from = cut_err(identifier).parse_next(i)?.to_owned();
    let filter = opt(preceded(kw("WHERE"), cut_err(condition))).parse_next(i)?;
    let order = opt(preceded((kw("ORDER"), cut_err(kw("BY"))), cut_err(separated(1.., order_item, symbol(",")))))
        .parse_next(i)?
        .unwrap_or_default();
    let limit = opt(preceded(kw("LIMIT"), cut_err(count))).parse_next(i)?;
    let offset = opt(preceded(kw("OFFSET"), cut_err(count))).parse_next(i)?;
    Ok(Query { fields, from, from_at, filter, order, limit, offset })
}

/// The token at `at` for "unexpected token: …": a word, a literal, or one character.
fn token_at(text: &str, at: usize) -> String {
    let rest = text[at.min(text.len())..].trim_start();
    let Some(first) = rest.chars().next() else { return "<EOF>".to_owned() };
    let len = if first.is_ascii_alphanumeric() || first == '_' {
        rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(rest.len())
    } else if first == '\'' {
        rest[1..].find('\'').map_or(rest.len(), |i| i + 2)
    } else {
        first.len_utf8()
    };
    format!("'{}'", &rest[..len])
}

/// Parses a SOQL text (syntax only; see [`validate`] for names).
pub fn parse(soql: &str) -> Result<Query, SoqlError> {
    terminated(query, (ws, eof)).parse(LocatingSlice::new(soql)).map_err(|e| {
        // Point at the token, past the blanks before it.
        let mut at = e.offset().min(soql.len());
        at += soql[at..].len() - soql[at..].trim_start().len();
        SoqlError::Malformed { at, token: token_at(soql, at) }
    })
}

// ---------------------------------------------------------------------------------------------
// Names against the describe

/// Checks every object, field and relationship name against the org's schema and rewrites
/// them to their declared spelling (SOQL names are case-insensitive).
pub fn validate(query: &mut Query) -> Result<&'static ObjectDef, SoqlError> {
    let object = schema::object(&query.from)
        .ok_or_else(|| SoqlError::InvalidType { at: query.from_at, object: query.from.clone() })?;
    query.from = object.name.to_owned();
    validate_in(query, object)?;
    Ok(object)
}

fn validate_in(query: &mut Query, object: &'static ObjectDef) -> Result<(), SoqlError> {
    let has_plain_count = query.fields.iter().any(|f| matches!(f, Field::Count { arg: None, .. }));
    if has_plain_count && query.fields.len() > 1 {
        let at = query.fields.iter().find_map(|f| match f {
            Field::Path(p) => Some(p.at),
            _ => None,
        });
        return Err(SoqlError::CountMixed { at: at.unwrap_or(0) });
    }
    for field in &mut query.fields {
        match field {
            Field::Path(p) | Field::Count { arg: Some(p), .. } => {
                resolve_path(object, p)?;
            }
            Field::Count { arg: None, .. } => {}
            Field::Sub(sub) => {
                let rel = object
                    .child_relationship(&sub.from)
                    .ok_or_else(|| SoqlError::ChildRelationship { at: sub.from_at, relationship: sub.from.clone() })?;
                sub.from = rel.name.to_owned();
                let child = schema::object(rel.object)
                    .ok_or_else(|| SoqlError::ChildRelationship { at: sub.from_at, relationship: sub.from.clone() })?;
                validate_in(sub, child)?;
            }
        }
    }
    if let Some(filter) = &mut query.filter {
        validate_expr(object, filter)?;
    }
    for o in &mut query.order {
        resolve_path(object, &mut o.field)?;
    }
    Ok(())
}

fn validate_expr(object: &'static ObjectDef, expr: &mut Expr) -> Result<(), SoqlError> {
    match expr {
        Expr::Cond(c) => {
            let field = resolve_path(object, &mut c.field)?;
            // A 15-character id matches its 18-character form.
            if matches!(field.map(|f| f.kind), Some(FieldType::Id | FieldType::Reference)) {
                for v in &mut c.values {
                    if let Literal::Str(s) = v {
                        if let Ok(id18) = super::super::ids::normalize_id(s) {
                            *s = id18;
                        }
                    }
                }
            }
            Ok(())
        }
        Expr::Not(e) => validate_expr(object, e),
        Expr::And(all) | Expr::Or(all) => all.iter_mut().try_for_each(|e| validate_expr(object, e)),
    }
}

/// Resolves `Account.Name` hop by hop; the last field's definition (None when a polymorphic
/// lookup makes it ambiguous).
fn resolve_path(object: &'static ObjectDef, path: &mut Path) -> Result<Option<&'static schema::FieldDef>, SoqlError> {
    let mut targets: Vec<&'static ObjectDef> = vec![object];
    let last = path.parts.len() - 1;
    for (n, part) in path.parts.iter_mut().enumerate() {
        if n == last {
            let found = targets.iter().find_map(|o| o.field(part));
            let Some(def) = found else {
                let entity = targets.first().map_or("", |o| o.name);
                return Err(SoqlError::NoSuchColumn { at: path.at, field: part.clone(), object: entity.to_owned() });
            };
            *part = def.name.to_owned();
            return Ok(Some(def));
        }
        let lookup = targets.iter().find_map(|o| o.parent_relationship(part));
        let Some(lookup) = lookup else {
            return Err(SoqlError::ParentRelationship { at: path.at, relationship: part.clone() });
        };
        *part = lookup.relationship.unwrap_or_default().to_owned();
        targets = lookup.reference_to.iter().filter_map(|o| schema::object(o)).collect();
        if targets.is_empty() {
            return Err(SoqlError::ParentRelationship { at: path.at, relationship: part.clone() });
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// Where the data lives, so the engine can follow relationships.
pub trait Data {
    /// The rows of an object (declared name).
    fn rows(&self, object: &str) -> Vec<Value>;
    /// Any record by its 18-character id.
    fn record(&self, id: &str) -> Option<Value>;
    fn attributes(&self, row: &Value) -> Value;
    /// Today's date, for TODAY, LAST_N_DAYS:n, …
    fn today(&self) -> jiff::civil::Date;
}

/// A query's answer: the rows, and `totalSize` (for `COUNT()` only the size, no rows).
#[derive(Debug)]
pub struct Outcome {
    pub rows: Vec<Value>,
    pub total: usize,
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

/// `[start, end)` of a relative date literal.
fn range(r: Relative, today: jiff::civil::Date) -> (jiff::civil::Date, jiff::civil::Date) {
    use jiff::ToSpan;
    let add = |d: jiff::civil::Date, days: i64| d.checked_add(days.days()).unwrap_or(d);
    match r {
        Relative::Today => (today, add(today, 1)),
        Relative::Yesterday => (add(today, -1), today),
        Relative::Tomorrow => (add(today, 1), add(today, 2)),
        // Salesforce: the n days before today and today itself.
        Relative::LastNDays(n) => (add(today, -n), add(today, 1)),
        // The n days after today, today excluded.
        Relative::NextNDays(n) => (add(today, 1), add(today, n + 1)),
        Relative::Week(k) => {
            // Weeks start on Sunday (the en_US locale).
            let start = add(today, -i64::from(today.weekday().to_sunday_zero_offset()) + 7 * k);
            (start, add(start, 7))
        }
        Relative::Month(k) => {
            let first = today.first_of_month().checked_add(k.months()).unwrap_or(today);
            (first, first.checked_add(1.month()).unwrap_or(first))
        }
        Relative::Year(k) => {
            let first = jiff::civil::Date::new(today.year(), 1, 1).unwrap_or(today);
            let first = first.checked_add(k.years()).unwrap_or(first);
            (first, first.checked_add(1.year()).unwrap_or(first))
        }
    }
}

/// The UTC date of a date or datetime field value.
fn date_of(value: &str) -> Option<jiff::civil::Date> {
    if value.len() == 10 {
        return value.parse().ok();
    }
    let t = model::ZonedTime::parse("v", value).ok()?;
    Some(t.0.to_zoned(jiff::tz::TimeZone::UTC).date())
}

fn like(text: &str, pattern: &str) -> bool {
    fn go(t: &[char], p: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('%', rest)) => (0..=t.len()).any(|k| go(&t[k..], rest)),
            Some(('_', rest)) => !t.is_empty() && go(&t[1..], rest),
            Some(('\\', rest)) if !rest.is_empty() => !t.is_empty() && t[0] == rest[0] && go(&t[1..], &rest[1..]),
            Some((c, rest)) => !t.is_empty() && t[0] == *c && go(&t[1..], rest),
        }
    }
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    go(&t, &p)
}

/// Compares a field value with one literal: `None` when they cannot be compared.
fn order_of(value: &Value, lit: &Literal, today: jiff::civil::Date) -> Option<Ordering> {
    match (value, lit) {
        (Value::Number(n), Literal::Num(x)) => n.as_f64()?.partial_cmp(x),
        (Value::Bool(b), Literal::Bool(x)) => Some(b.cmp(x)),
        (Value::String(s), Literal::Str(x)) => Some(s.cmp(x)),
        (Value::String(s), Literal::DateTime(x)) => {
            Some(model::ZonedTime::parse("v", s).ok()?.cmp(&model::ZonedTime::parse("l", x).ok()?))
        }
        (Value::String(s), Literal::Date(x)) => Some(date_of(s)?.cmp(&x.parse().ok()?)),
        (Value::String(s), Literal::Relative(r)) => {
            let (start, end) = range(*r, today);
            let d = date_of(s)?;
            Some(if d < start {
                Ordering::Less
            } else if d >= end {
                Ordering::Greater
            } else {
                Ordering::Equal
            })
        }
        _ => None,
    }
}

fn equals(value: &Value, lit: &Literal, today: jiff::civil::Date) -> bool {
    match (value, lit) {
        (Value::Null, Literal::Null) => true,
        (Value::Null, _) | (_, Literal::Null) => false,
        // Text equality in SOQL ignores case.
        (Value::String(s), Literal::Str(x)) => s.to_lowercase() == x.to_lowercase(),
        _ => order_of(value, lit, today) == Some(Ordering::Equal),
    }
}

fn cond_holds(value: &Value, cond: &Cond, today: jiff::civil::Date) -> bool {
    let one = || cond.values.first().unwrap_or(&Literal::Null);
    match cond.op {
        Op::Eq => equals(value, one(), today),
        Op::Ne => !equals(value, one(), today),
        Op::In => cond.values.iter().any(|l| equals(value, l, today)),
        Op::NotIn => !value.is_null() && !cond.values.iter().any(|l| equals(value, l, today)),
        Op::Like => match (value, one()) {
            (Value::String(s), Literal::Str(p)) => like(s, p),
            _ => false,
        },
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            if value.is_null() {
                return false;
            }
            let Some(ord) = order_of(value, one(), today) else { return false };
            match cond.op {
                Op::Lt => ord == Ordering::Less,
                Op::Le => ord != Ordering::Greater,
                Op::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            }
        }
    }
}

fn holds(data: &dyn Data, row: &Value, expr: &Expr, today: jiff::civil::Date) -> bool {
    match expr {
        Expr::Cond(c) => cond_holds(&lookup(data, row, &c.field.parts), c, today),
        Expr::Not(e) => !holds(data, row, e, today),
        Expr::And(all) => all.iter().all(|e| holds(data, row, e, today)),
        Expr::Or(any) => any.iter().any(|e| holds(data, row, e, today)),
    }
}

/// The record a parent relationship (`Account`, `Owner`, `Who`) of `row` points at.
fn parent(data: &dyn Data, row: &Value, relationship: &str) -> Option<Value> {
    let object = schema::object_of_prefix(row.get("Id")?.as_str()?)?;
    let field = object.parent_relationship(relationship)?;
    data.record(row.get(field.name)?.as_str()?)
}

fn lookup(data: &dyn Data, row: &Value, path: &[String]) -> Value {
    match path {
        [] => Value::Null,
        [field] => row.get(field).cloned().unwrap_or(Value::Null),
        [rel, rest @ ..] => parent(data, row, rel).map_or(Value::Null, |p| lookup(data, &p, rest)),
    }
}

/// Puts `path` of `row` into `out`, nesting parents as `{"Account": {"attributes": …, "Name": …}}`
/// (null when the lookup is empty).
fn put_path(data: &dyn Data, out: &mut Map<String, Value>, row: &Value, path: &[String]) {
    match path {
        [] => {}
        [field] => {
            out.insert(field.clone(), row.get(field).cloned().unwrap_or(Value::Null));
        }
        [rel, rest @ ..] => match parent(data, row, rel) {
            None => {
                out.entry(rel.clone()).or_insert(Value::Null);
            }
            Some(p) => {
                let entry = out.entry(rel.clone()).or_insert_with(|| json!({"attributes": data.attributes(&p)}));
                if let Some(obj) = entry.as_object_mut() {
                    put_path(data, obj, &p, rest);
                }
            }
        },
    }
}

fn project(data: &dyn Data, row: &Value, fields: &[Field]) -> Value {
    let mut out = Map::new();
    out.insert("attributes".to_owned(), data.attributes(row));
    for field in fields {
        match field {
            Field::Path(p) => put_path(data, &mut out, row, &p.parts),
            Field::Count { .. } => {}
            Field::Sub(sub) => {
                let Some(rel) = schema::object_of_prefix(row["Id"].as_str().unwrap_or_default())
                    .and_then(|o| o.child_relationship(&sub.from))
                else {
                    out.insert(sub.from.clone(), Value::Null);
                    continue;
                };
                let mut inner = sub.as_ref().clone();
                inner.from = rel.object.to_owned();
                let key = Expr::Cond(Cond {
                    field: Path { parts: vec![rel.field.to_owned()], at: 0 },
                    op: Op::Eq,
                    values: vec![Literal::Str(row["Id"].as_str().unwrap_or_default().to_owned())],
                });
                inner.filter = Some(match inner.filter.take() {
                    Some(f) => Expr::And(vec![key, f]),
                    None => key,
                });
                let rows = run(data, &inner).rows;
                let value = if rows.is_empty() {
                    Value::Null
                } else {
                    json!({"totalSize": rows.len(), "done": true, "records": rows})
                };
                out.insert(sub.from.clone(), value);
            }
        }
    }
    Value::Object(out)
}

/// Runs a validated query.
pub fn run(data: &dyn Data, query: &Query) -> Outcome {
    let today = data.today();
    let mut rows: Vec<Value> = data
        .rows(&query.from)
        .into_iter()
        .filter(|row| query.filter.as_ref().is_none_or(|e| holds(data, row, e, today)))
        .collect();
    rows.sort_by(|a, b| {
        for o in &query.order {
            let (x, y) = (lookup(data, a, &o.field.parts), lookup(data, b, &o.field.parts));
            let ord = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) if o.nulls_last => Ordering::Greater,
                (true, false) => Ordering::Less,
                (false, true) if o.nulls_last => Ordering::Less,
                (false, true) => Ordering::Greater,
                _ if o.desc => compare(&y, &x),
                _ => compare(&x, &y),
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
    let skip = query.offset.unwrap_or(0).min(rows.len());
    rows.drain(..skip);
    if let Some(limit) = query.limit {
        rows.truncate(limit);
    }
    if matches!(query.fields.as_slice(), [Field::Count { arg: None, .. }]) {
        return Outcome { total: rows.len(), rows: Vec::new() };
    }
    if query.fields.iter().any(|f| matches!(f, Field::Count { .. })) {
        // Aggregate without GROUP BY: one AggregateResult row, `exprN` unless aliased.
        let mut out = Map::new();
        out.insert("attributes".to_owned(), json!({"type": "AggregateResult"}));
        let mut n = 0;
        for f in &query.fields {
            if let Field::Count { arg: Some(p), alias } = f {
                let count = rows.iter().filter(|r| !lookup(data, r, &p.parts).is_null()).count();
                let key = alias.clone().unwrap_or_else(|| {
                    n += 1;
                    format!("expr{}", n - 1)
                });
                out.insert(key, json!(count));
            }
        }
        return Outcome { rows: vec![Value::Object(out)], total: 1 };
    }
    let rows: Vec<Value> = rows.iter().map(|row| project(data, row, &query.fields)).collect();
    Outcome { total: rows.len(), rows }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(field: &str, op: Op, value: Literal) -> Expr {
        Expr::Cond(Cond { field: Path { parts: vec![field.into()], at: 0 }, op, values: vec![value] })
    }

    fn strip(e: &mut Expr) {
        match e {
            Expr::Cond(c) => c.field.at = 0,
            Expr::Not(e) => strip(e),
            Expr::And(a) | Expr::Or(a) => a.iter_mut().for_each(strip),
        }
    }

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
        assert!(matches!(&q.filter, Some(Expr::And(all)) if all.len() == 2));
        assert_eq!(q.order.len(), 2);
        assert_eq!(q.limit, Some(3));
    }

    #[test]
    fn the_keyset_poll_query_parses_with_or_and_parentheses() {
        let mut q = parse(
            "SELECT Name, Id, SystemModstamp FROM Opportunity WHERE SystemModstamp > 2025-08-14T06:30:05.123Z \
             OR (SystemModstamp = 2025-08-14T06:30:05.123Z AND Id > '0065g00000Qx1ZpAAJ') ORDER BY SystemModstamp, Id LIMIT 2",
        )
        .unwrap();
        let stamp = || Literal::DateTime("2025-08-14T06:30:05.123Z".into());
        let mut filter = q.filter.take().unwrap();
        strip(&mut filter);
        assert_eq!(
            filter,
            Expr::Or(vec![
                cond("SystemModstamp", Op::Gt, stamp()),
                Expr::And(vec![
                    cond("SystemModstamp", Op::Eq, stamp()),
                    cond("Id", Op::Gt, Literal::Str("0065g00000Qx1ZpAAJ".into())),
                ]),
            ])
        );
        assert!(parse("SELECT Id FROM X WHERE SystemModstamp >= 2025-08-14T06:30:05+08:00").is_ok());
    }

    #[test]
    fn operators_lists_likes_and_date_literals_parse() {
        let q = parse(
            "select Id from Opportunity where StageName IN ('Prospecting', 'Qualification') and Name like 'KPC%' \
             and CloseDate = LAST_N_DAYS:30 and not Amount < 10 and CloseDate > 2025-01-01 and Amount != null \
             and StageName not in ('Closed Lost') and CloseDate <= THIS_YEAR order by Amount desc nulls last limit 5 offset 1",
        )
        .unwrap();
        let Some(Expr::And(all)) = &q.filter else { panic!("{:?}", q.filter) };
        assert_eq!(all.len(), 8);
        assert!(matches!(&all[0], Expr::Cond(c) if c.op == Op::In && c.values.len() == 2));
        assert!(matches!(&all[2], Expr::Cond(c) if c.values == vec![Literal::Relative(Relative::LastNDays(30))]));
        assert!(matches!(&all[3], Expr::Not(_)));
        assert_eq!((q.limit, q.offset), (Some(5), Some(1)));
        assert!(q.order[0].desc && q.order[0].nulls_last);
        let q = parse("SELECT COUNT() FROM Account").unwrap();
        assert!(matches!(q.fields[0], Field::Count { arg: None, .. }));
        let q = parse("SELECT COUNT(Id) n FROM Account").unwrap();
        assert!(matches!(&q.fields[0], Field::Count { arg: Some(_), alias: Some(a) } if a == "n"));
    }

    #[test]
    fn what_the_grammar_lacks_is_malformed_with_salesforce_caret_diagram() {
        let err = parse("SELECT Id FROM Account WHERE").unwrap_err();
        assert_eq!(err.code(), "MALFORMED_QUERY");
        assert_eq!(
            err.message("SELECT Id FROM Account WHERE"),
            "\nSELECT Id FROM Account WHERE\n                            ^\nERROR at Row:1:Column:29\nunexpected token: <EOF>"
        );
        let mixed = "SELECT Id FROM X WHERE A = 1 OR B = 2 AND C = 3";
        let err = parse(mixed).unwrap_err();
        assert_eq!(err, SoqlError::Malformed { at: 38, token: "'AND'".into() });
        for bad in [
            "SELEC Id FROM X",
            "SELECT FROM X",
            "SELECT Id FROM",
            "SELECT Id FROM X WHERE Name == 'a'",
            "SELECT Id FROM X WHERE Name = 'open",
            "SELECT Id FROM X LIMIT many",
            "SELECT Id FROM X GROUP BY Name",
            "SELECT Id FROM X WHERE Id IN (SELECT Id FROM Y)",
            "SELECT Id, FROM X",
            "SELECT Id FROM X WHERE CloseDate = LAST_N_DAYS",
            "SELECT Id FROM X WHERE CloseDate = SOMEDAY",
        ] {
            assert_eq!(parse(bad).map(|_| ()).unwrap_err().code(), "MALFORMED_QUERY", "{bad}");
        }
    }

    #[test]
    fn unknown_names_are_invalid_field_or_invalid_type() {
        let text = "SELECT Id, Nmae FROM Opportunity";
        let err = validate(&mut parse(text).unwrap()).unwrap_err();
        assert_eq!(err.code(), "INVALID_FIELD");
        // Byte for byte the message of fixture errors/malformed_query_400.json.
        assert_eq!(
            err.message(text),
            "\nSELECT Id, Nmae FROM Opportunity\n           ^\nERROR at Row:1:Column:12\nNo such column 'Nmae' on entity 'Opportunity'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."
        );
        let err = validate(&mut parse("SELECT Id FROM Nope").unwrap()).unwrap_err();
        assert_eq!((err.code(), err.at()), ("INVALID_TYPE", 15));
        for (text, code) in [
            ("SELECT Id FROM Account WHERE Bogus__c = 1", "INVALID_FIELD"),
            ("SELECT Id FROM Account ORDER BY Bogus", "INVALID_FIELD"),
            ("SELECT Id, Boss.Name FROM Opportunity", "INVALID_FIELD"),
            ("SELECT Id, Account.Nmae FROM Opportunity", "INVALID_FIELD"),
            ("SELECT Id, (SELECT Id FROM Things) FROM Opportunity", "INVALID_TYPE"),
            ("SELECT Id, (SELECT Nmae FROM Tasks) FROM Opportunity", "INVALID_FIELD"),
            ("SELECT COUNT(), Id FROM Account", "MALFORMED_QUERY"),
        ] {
            assert_eq!(validate(&mut parse(text).unwrap()).unwrap_err().code(), code, "{text}");
        }
        let mut q =
            parse("select id, account.name, (select subject from tasks) from OPPORTUNITY where stagename = 'x'")
                .unwrap();
        validate(&mut q).unwrap();
        assert_eq!(q.from, "Opportunity");
        assert!(matches!(&q.fields[1], Field::Path(p) if p.parts == ["Account", "Name"]));
        assert!(matches!(&q.fields[2], Field::Sub(s) if s.from == "Tasks"));
    }

    #[test]
    fn literals_compare_as_salesforce_does() {
        let today: jiff::civil::Date = "2025-08-14".parse().unwrap();
        let c = |op, v| Cond { field: Path { parts: vec!["S".into()], at: 0 }, op, values: vec![v] };
        let stamp = Literal::DateTime("2025-08-14T06:30:05Z".into());
        assert!(cond_holds(&json!("2025-08-14T06:30:05.000+0000"), &c(Op::Ge, stamp.clone()), today));
        assert!(!cond_holds(&json!("2025-08-14T06:30:04.000+0000"), &c(Op::Ge, stamp), today));
        let last30 = Literal::Relative(Relative::LastNDays(30));
        assert!(cond_holds(&json!("2025-07-20"), &c(Op::Eq, last30.clone()), today));
        assert!(!cond_holds(&json!("2025-06-20"), &c(Op::Eq, last30.clone()), today));
        assert!(cond_holds(&json!("2025-06-20"), &c(Op::Lt, last30), today));
        assert!(cond_holds(&json!("2025-08-31"), &c(Op::Eq, Literal::Relative(Relative::Month(0))), today));
        assert!(cond_holds(&json!("KPC - Q3"), &c(Op::Like, Literal::Str("kpc%".into())), today));
        assert!(!cond_holds(&json!("xKPC"), &c(Op::Like, Literal::Str("KPC%".into())), today));
        assert!(cond_holds(&json!("Closed Won"), &c(Op::Eq, Literal::Str("closed won".into())), today));
        assert!(cond_holds(&Value::Null, &c(Op::Eq, Literal::Null), today));
        assert!(!cond_holds(&Value::Null, &c(Op::Gt, Literal::Num(1.0)), today));
    }
}
