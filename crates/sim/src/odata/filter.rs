//! The `$filter` grammar the OData simulators evaluate (reference A4 for SAP Gateway v2, C4 for
//! Dataverse v4), parsed with `winnow`:
//!
//! ```text
//! expr       = and_expr *( RWS "or" RWS and_expr )
//! and_expr   = unary *( RWS "and" RWS unary )
//! unary      = "not" [RWS] unary / primary
//! primary    = "(" expr ")" / function [ RWS ("eq" / "ne") RWS ("true" / "false") ] / comparison
//! comparison = property RWS ("eq" / "ne" / "gt" / "ge" / "lt" / "le") RWS literal
//! function   = "substringof(" literal "," property ")"            ; v2
//!            / ("startswith" / "endswith") "(" property "," literal ")"
//!            / "contains(" property "," literal ")"                ; v4
//! ```
//!
//! Literals: `'text'` (with `''` for a quote), `datetime'…'`, `datetimeoffset'…'`, `guid'…'` and
//! `time'…'` (v2), bare RFC 3339 instants and GUIDs (v4), `true`/`false`, `null`, decimals (`40`,
//! `37.5M`). Anything else is refused: another operator (`has`, `in`, arithmetic), another
//! function (`tolower`, `length`, …), a malformed literal or clause.
//!
//! Row values compare by kind: v2 `/Date(ms)/` strings and RFC 3339 strings as instants, JSON
//! numbers and decimal strings as decimals, strings as text. A value that cannot be compared with
//! the literal (missing, null, another kind) satisfies only `ne`, as `null ne 'x'` does in OData.

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::str::FromStr;
use winnow::ascii::{multispace0, multispace1};
use winnow::combinator::{alt, delimited, not as not_followed_by, opt, preceded, repeat, separated, terminated};
use winnow::error::{ContextError, ErrMode};
use winnow::prelude::*;
use winnow::token::{literal, one_of, rest, take_till, take_while};

/// Why a `$filter` is outside the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("cannot parse the filter clause '{0}'")]
    Clause(String),
    #[error("unsupported operator '{0}'")]
    Operator(String),
    #[error("unsupported function '{0}'")]
    Function(String),
    #[error("bad {kind} literal {text}: {detail}")]
    Literal { kind: &'static str, text: String, detail: String },
}

/// Which protocol version's functions a service knows (`substringof` is v2 only, `contains` v4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V2,
    V4,
    /// Both (a chassis caller that does not say).
    Any,
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Instant(i64),
    Bool(bool),
    Number(Decimal),
    Null,
    /// A v4 GUID (unquoted) or a v2 `guid'…'`, compared as text.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextFunction {
    /// v2 `substringof('x', F)` and v4 `contains(F, 'x')`.
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Or(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Compare(Comparison),
    Text {
        name: String,
        function: TextFunction,
        field: String,
        text: String,
    },
    /// Well-formed up to something the grammar refuses; reported after parsing.
    Refused(FilterError),
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Node,
}

fn bad_literal(kind: &'static str, text: &str, detail: impl ToString) -> FilterError {
    FilterError::Literal { kind, text: text.to_owned(), detail: detail.to_string() }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A lowercase keyword as a whole word.
fn keyword<'i>(word: &'static str) -> impl Parser<&'i str, &'i str, ErrMode<ContextError>> {
    terminated(literal(word), not_followed_by(one_of(is_word_char)))
}

/// A property name (a navigation path `to_X/Y` is kept whole, for the caller to refuse).
fn property<'i>(input: &mut &'i str) -> ModalResult<&'i str> {
    (one_of(|c: char| c.is_ascii_alphabetic() || c == '_'), take_while(0.., |c: char| is_word_char(c) || c == '/'))
        .take()
        .parse_next(input)
}

/// `'…'` with `''` standing for one quote.
fn quoted(input: &mut &str) -> ModalResult<String> {
    '\''.parse_next(input)?;
    let mut out = String::new();
    loop {
        out.push_str(take_till(0.., '\'').parse_next(input)?);
        '\''.parse_next(input)?;
        if opt('\'').parse_next(input)?.is_some() {
            out.push('\'');
        } else {
            return Ok(out);
        }
    }
}

fn typed_literal(prefix: &str, inner: String) -> Result<Literal, FilterError> {
    match prefix {
        "" => Ok(Literal::Text(inner)),
        "datetimeoffset" => {
            let ts: Timestamp = inner.parse().map_err(|e| bad_literal("datetimeoffset", &inner, e))?;
            Ok(Literal::Instant(ts.as_millisecond()))
        }
        "datetime" => {
            let dt: jiff::civil::DateTime = inner.parse().map_err(|e| bad_literal("datetime", &inner, e))?;
            let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).map_err(|e| bad_literal("datetime", &inner, e))?.timestamp();
            Ok(Literal::Instant(ts.as_millisecond()))
        }
        "guid" => Ok(Literal::Bare(inner)),
        "time" => Ok(Literal::Text(inner)),
        other => Err(bad_literal("typed", &format!("{other}'{inner}'"), "unknown literal type")),
    }
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn bare_literal(text: &str) -> Result<Literal, FilterError> {
    match text {
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        "null" => return Ok(Literal::Null),
        _ => {}
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(Literal::Instant(ts.as_millisecond()));
    }
    if is_guid(text) {
        return Ok(Literal::Bare(text.to_owned()));
    }
    let number = text.strip_suffix(['M', 'm', 'D', 'd', 'F', 'f', 'L', 'l']).unwrap_or(text);
    Decimal::from_str(number)
        .or_else(|_| Decimal::from_scientific(number))
        .map(Literal::Number)
        .map_err(|e| bad_literal("bare", text, e))
}

/// A literal, or why it is not one.
fn literal_value(input: &mut &str) -> ModalResult<Result<Literal, FilterError>> {
    alt((
        (take_while(0.., |c: char| c.is_ascii_alphabetic()), quoted)
            .map(|(prefix, inner)| typed_literal(prefix, inner)),
        take_while(1.., |c: char| !c.is_whitespace() && !matches!(c, '(' | ')' | ',' | '\'')).map(bare_literal),
    ))
    .parse_next(input)
}

fn comparison_op(word: &str) -> Option<Op> {
    Some(match word {
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "gt" => Op::Gt,
        "ge" => Op::Ge,
        "lt" => Op::Lt,
        "le" => Op::Le,
        _ => return None,
    })
}

/// One argument of a text function: a property or a string literal.
enum Argument {
    Property(String),
    Text(String),
}

fn argument(input: &mut &str) -> ModalResult<Argument> {
    delimited(
        multispace0,
        alt((quoted.map(Argument::Text), property.map(|p: &str| Argument::Property(p.to_owned())))),
        multispace0,
    )
    .parse_next(input)
}

/// `name(args)` of a text function, optionally compared with `true` / `false`.
fn function_call(name: &str, input: &mut &str) -> ModalResult<Node> {
    let function = match name {
        "substringof" | "contains" => TextFunction::Contains,
        "startswith" => TextFunction::StartsWith,
        "endswith" => TextFunction::EndsWith,
        other => {
            // Not in the grammar: nothing after it matters.
            rest.parse_next(input)?;
            return Ok(Node::Refused(FilterError::Function(other.to_owned())));
        }
    };
    let args: Vec<Argument> = delimited('(', separated(1.., argument, ','), ')').parse_next(input)?;
    let (field, text) = match (name, args.as_slice()) {
        ("substringof", [Argument::Text(t), Argument::Property(f)]) => (f.clone(), t.clone()),
        (_, [Argument::Property(f), Argument::Text(t)]) if name != "substringof" => (f.clone(), t.clone()),
        _ => return Ok(Node::Refused(FilterError::Clause(format!("{name}(…) takes a property and a string")))),
    };
    let node = Node::Text { name: name.to_owned(), function, field, text };
    let compared =
        opt((multispace1, alt((keyword("eq"), keyword("ne"))), multispace1, alt((keyword("true"), keyword("false")))))
            .parse_next(input)?;
    Ok(match compared {
        // `f(…) eq true` and `f(…) ne false` keep it; the other two negate it.
        Some((_, op, _, value)) if (op == "eq") != (value == "true") => Node::Not(Box::new(node)),
        _ => node,
    })
}

fn comparison(field: &str, input: &mut &str) -> ModalResult<Node> {
    multispace1.parse_next(input)?;
    let word = take_while(1.., |c: char| c.is_ascii_alphabetic()).parse_next(input)?;
    let Some(op) = comparison_op(word) else {
        rest.parse_next(input)?;
        return Ok(Node::Refused(FilterError::Operator(word.to_owned())));
    };
    multispace1.parse_next(input)?;
    Ok(match literal_value.parse_next(input)? {
        Ok(value) => Node::Compare(Comparison { field: field.to_owned(), op, value }),
        Err(e) => Node::Refused(e),
    })
}

fn primary(input: &mut &str) -> ModalResult<Node> {
    if input.starts_with('(') {
        return delimited(('(', multispace0), or_expr, (multispace0, ')')).parse_next(input);
    }
    let name = property.parse_next(input)?;
    if input.starts_with('(') {
        return function_call(name, input);
    }
    comparison(name, input)
}

fn unary(input: &mut &str) -> ModalResult<Node> {
    if opt(terminated(keyword("not"), multispace0)).parse_next(input)?.is_some() {
        return Ok(Node::Not(Box::new(unary.parse_next(input)?)));
    }
    primary.parse_next(input)
}

fn and_expr(input: &mut &str) -> ModalResult<Node> {
    let first = unary.parse_next(input)?;
    let others: Vec<Node> =
        repeat(0.., preceded((multispace1, keyword("and"), multispace1), unary)).parse_next(input)?;
    Ok(others.into_iter().fold(first, |a, b| Node::And(Box::new(a), Box::new(b))))
}

fn or_expr(input: &mut &str) -> ModalResult<Node> {
    let first = and_expr.parse_next(input)?;
    let others: Vec<Node> =
        repeat(0.., preceded((multispace1, keyword("or"), multispace1), and_expr)).parse_next(input)?;
    Ok(others.into_iter().fold(first, |a, b| Node::Or(Box::new(a), Box::new(b))))
}

impl Node {
    /// The first refusal in reading order, or a function the dialect does not have.
    fn refusal(&self, dialect: Dialect) -> Option<FilterError> {
        match self {
            Node::Or(a, b) | Node::And(a, b) => a.refusal(dialect).or_else(|| b.refusal(dialect)),
            Node::Not(a) => a.refusal(dialect),
            Node::Refused(e) => Some(e.clone()),
            Node::Text { name, .. } => match (dialect, name.as_str()) {
                (Dialect::V2, "contains") | (Dialect::V4, "substringof") => Some(FilterError::Function(name.clone())),
                _ => None,
            },
            Node::Compare(_) => None,
        }
    }

    fn fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Node::Or(a, b) | Node::And(a, b) => {
                a.fields(out);
                b.fields(out);
            }
            Node::Not(a) => a.fields(out),
            Node::Compare(c) => out.push(&c.field),
            Node::Text { field, .. } => out.push(field),
            Node::Refused(_) => {}
        }
    }

    fn matches(&self, row: &Map<String, Value>) -> bool {
        match self {
            Node::Or(a, b) => a.matches(row) || b.matches(row),
            Node::And(a, b) => a.matches(row) && b.matches(row),
            Node::Not(a) => !a.matches(row),
            Node::Compare(c) => c.matches(row),
            Node::Text { function, field, text, .. } => {
                let Some(value) = row.get(field).and_then(Value::as_str) else { return false };
                match function {
                    TextFunction::Contains => value.contains(text.as_str()),
                    TextFunction::StartsWith => value.starts_with(text.as_str()),
                    TextFunction::EndsWith => value.ends_with(text.as_str()),
                }
            }
            Node::Refused(_) => false,
        }
    }
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
    /// Parses `text` accepting both dialects' functions.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        Self::parse_dialect(text, Dialect::Any)
    }

    /// Parses `text` as a service of `dialect` would.
    pub fn parse_dialect(text: &str, dialect: Dialect) -> Result<Filter, FilterError> {
        let trimmed = text.trim();
        let root = or_expr.parse(trimmed).map_err(|e| {
            let at = e.offset().min(trimmed.len());
            FilterError::Clause(trimmed[at..].to_owned())
        })?;
        match root.refusal(dialect) {
            Some(e) => Err(e),
            None => Ok(Filter { root }),
        }
    }

    /// Every property the filter names.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.root.fields(&mut out);
        out
    }

    pub fn matches(&self, row: &Map<String, Value>) -> bool {
        self.root.matches(row)
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
        assert!(f("substringof('and',Name) and startswith(Name,'a ') and endswith(Name,'b')"));
        assert!(f("not (PurchaseOrder eq '1' or Name eq 'x') and not startswith(Name,'z')"));
        assert!(f("(PurchaseOrder eq 'x' or ReleaseIsNotCompleted eq true) and OrderQuantity ge 37.5M"));
        assert!(f("substringof('zz',Name) eq false"));
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
    fn outside_the_grammar_is_refused() {
        let err = |s: &str| Filter::parse(s).unwrap_err();
        assert_eq!(err("Name in ('a','b')"), FilterError::Operator("in".to_owned()));
        assert_eq!(err("Amount add 1 eq 2"), FilterError::Operator("add".to_owned()));
        assert_eq!(err("tolower(Name) eq 'a'"), FilterError::Function("tolower".to_owned()));
        assert_eq!(err("length(Name) gt 1"), FilterError::Function("length".to_owned()));
        assert!(matches!(err("Name eq 'open"), FilterError::Clause(_)));
        assert!(matches!(err("Name eq"), FilterError::Clause(_)));
        assert!(matches!(err("(Name eq 'a'"), FilterError::Clause(_)));
        assert!(matches!(err("Name eq 'a' and"), FilterError::Clause(_)));
        assert!(matches!(err("Name eq abc"), FilterError::Literal { .. }));
        assert!(matches!(err("D gt datetime'yesterday'"), FilterError::Literal { .. }));
        assert!(matches!(err("substringof(Name,'x')"), FilterError::Clause(_)));
        assert_eq!(
            Filter::parse_dialect("contains(Name,'x')", Dialect::V2),
            Err(FilterError::Function("contains".to_owned()))
        );
        assert_eq!(
            Filter::parse_dialect("substringof('x',Name)", Dialect::V4),
            Err(FilterError::Function("substringof".to_owned()))
        );
        assert_eq!(Filter::parse("not A eq 'x' and B eq 'y'").unwrap().fields(), vec!["A", "B"]);
    }

    #[test]
    fn v2_dates() {
        assert_eq!(date_millis("/Date(1710469867000+0000)/"), Some(1_710_469_867_000));
        assert_eq!(date_millis("/Date(1710720000000)/"), Some(1_710_720_000_000));
        assert_eq!(date_millis("2024-03-15"), None);
    }
}
