//! The SuiteQL the simulator answers (reference B4, B10 item 4), parsed with a `winnow` grammar
//! and evaluated over the seeded records; anything outside the grammar is refused with NetSuite's
//! 400 `INVALID_PARAMETER` (the caller adds `o:errorQueryParam: q`).
//!
//! ```text
//! query     = SELECT ( "*" | item ("," item)* ) FROM table [alias] [WHERE cond] [ORDER BY key ("," key)*]
//! item      = column [[AS] alias] | TO_CHAR "(" column "," 'format' ")" [AS] alias
//! column    = [qualifier "."] name
//! cond      = conj (OR conj)* ; conj = neg (AND neg)* ; neg = NOT neg | "(" cond ")" | predicate
//! predicate = operand (= | <> | != | < | <= | > | >=) operand
//!           | operand [NOT] IN "(" operand ("," operand)* ")"
//!           | operand IS [NOT] NULL
//! operand   = column | 'text' | number | TO_DATE "(" 'text' "," 'format' ")" | TO_TIMESTAMP (…)
//! key       = column [ASC | DESC]
//! ```
//!
//! Tables: `transaction` (the seeded purchase orders, requisitions, sales orders and
//! fulfillments; columns `id`, `tranid`, `type` (`PurchOrd`, `PurchReq`, `SalesOrd`, `ItemShip`),
//! `trandate`, `status` (order status, or the ship status of a fulfillment), `approvalstatus`,
//! `foreigntotal`, `memo`, `entity`, `createddate`, `lastmodifieddate`), `item` (`id`, `itemid`,
//! `displayname`, `itemtype`, `lastmodifieddate`) and `employee` (`id`, `entityid`, `firstname`,
//! `lastname`, `email`, `mobilephone`, `externalid`, `isinactive`). Every value comes back as a
//! string: dates in the simulated user's format `d/M/yyyy` (like the fixture) unless formatted
//! with `TO_CHAR`, booleans `T`/`F`, empty fields left out. The simulated user's time zone is UTC.
//! Without `ORDER BY`, transactions and items come by (`lastmodifieddate` to the second, `id`),
//! employees by `id`.

use crate::netsuite::client::RecordType;
use jiff::Timestamp;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use winnow::ascii::{digit1, multispace0, multispace1, Caseless};
use winnow::combinator::{alt, delimited, not, opt, preceded, separated, terminated};
use winnow::error::{ContextError, ErrMode};
use winnow::prelude::*;
use winnow::token::{literal, one_of, take_till, take_while};

/// NetSuite's prefix of every SuiteQL refusal.
const PREFIX: &str = "Invalid search query. Detailed unprocessed description follows. Search error occurred:";

/// A query the simulator refuses; the text is the `INVALID_PARAMETER` detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuiteQlError {
    #[error("{PREFIX} Invalid or unsupported search: syntax error at position {0}.")]
    Syntax(usize),
    #[error("{PREFIX} Record '{0}' was not found.")]
    UnknownRecord(String),
    /// Same text as the fixture `error_400_invalid_parameter.json`.
    #[error("{PREFIX} Unknown identifier '{name}'. Available identifiers are: {{{alias}={table}}}.")]
    UnknownIdentifier { name: String, alias: String, table: String },
    #[error("{PREFIX} Invalid date format '{0}'.")]
    Format(String),
    #[error("{PREFIX} Parse of date/time \"{text}\" failed with date format \"{format}\".")]
    DateLiteral { text: String, format: String },
}

/// `[qualifier.]name`, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub qualifier: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    All,
    Column { column: Column, alias: Option<String> },
    ToChar { column: Column, format: String, alias: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Column(Column),
    Text(String),
    Number(f64),
    /// `TO_DATE` / `TO_TIMESTAMP` (text, format).
    Time(String, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(Operand, CmpOp, Operand),
    In(Operand, Vec<Operand>, bool),
    IsNull(Operand, bool),
}

/// A parsed `SELECT`.
#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub items: Vec<SelectItem>,
    pub table: String,
    pub alias: Option<String>,
    pub filter: Option<Cond>,
    /// (column, descending)
    pub order: Vec<(Column, bool)>,
}

// ---------------------------------------------------------------- grammar

const KEYWORDS: &[&str] =
    &["select", "from", "where", "order", "by", "and", "or", "not", "in", "is", "null", "as", "asc", "desc"];

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A keyword, case-insensitive, not followed by an identifier character.
fn kw<'i>(word: &'static str) -> impl Parser<&'i str, &'i str, ErrMode<ContextError>> {
    terminated(literal(Caseless(word)), not(one_of(is_ident_char)))
}

fn ws<'i, O>(inner: impl Parser<&'i str, O, ErrMode<ContextError>>) -> impl Parser<&'i str, O, ErrMode<ContextError>> {
    delimited(multispace0, inner, multispace0)
}

fn identifier(input: &mut &str) -> ModalResult<String> {
    let word = (one_of(|c: char| c.is_ascii_alphabetic() || c == '_'), take_while(0.., is_ident_char))
        .take()
        .parse_next(input)?;
    let lower = word.to_ascii_lowercase();
    if KEYWORDS.contains(&lower.as_str()) {
        return Err(ErrMode::Backtrack(ContextError::new()));
    }
    Ok(lower)
}

fn column(input: &mut &str) -> ModalResult<Column> {
    let first = identifier.parse_next(input)?;
    match opt(preceded('.', identifier)).parse_next(input)? {
        Some(name) => Ok(Column { qualifier: Some(first), name }),
        None => Ok(Column { qualifier: None, name: first }),
    }
}

/// `'text'` with `''` for a quote.
fn text(input: &mut &str) -> ModalResult<String> {
    let parts: Vec<&str> = delimited('\'', separated(1.., take_till(0.., '\''), "''"), '\'').parse_next(input)?;
    Ok(parts.join("'"))
}

fn number(input: &mut &str) -> ModalResult<f64> {
    (opt('-'), digit1, opt(('.', digit1))).take().try_map(str::parse::<f64>).parse_next(input)
}

fn time_call(input: &mut &str) -> ModalResult<Operand> {
    let _ = alt((kw("to_timestamp"), kw("to_date"))).parse_next(input)?;
    let (value, format) = delimited(ws('('), (ws(text), preceded(',', ws(text))), ')').parse_next(input)?;
    Ok(Operand::Time(value, format))
}

fn operand(input: &mut &str) -> ModalResult<Operand> {
    ws(alt((time_call, text.map(Operand::Text), number.map(Operand::Number), column.map(Operand::Column))))
        .parse_next(input)
}

fn cmp_op(input: &mut &str) -> ModalResult<CmpOp> {
    ws(alt((
        "<>".value(CmpOp::Ne),
        "!=".value(CmpOp::Ne),
        "<=".value(CmpOp::Le),
        ">=".value(CmpOp::Ge),
        "<".value(CmpOp::Lt),
        ">".value(CmpOp::Gt),
        "=".value(CmpOp::Eq),
    )))
    .parse_next(input)
}

fn in_list(input: &mut &str) -> ModalResult<Vec<Operand>> {
    delimited(ws('('), separated(1.., operand, ','), ws(')')).parse_next(input)
}

fn predicate(input: &mut &str) -> ModalResult<Cond> {
    let left = operand.parse_next(input)?;
    let cond = alt((
        (cmp_op, operand).map(|(op, right)| Cond::Cmp(left.clone(), op, right)),
        preceded((kw("not"), multispace1, kw("in")), in_list).map(|list| Cond::In(left.clone(), list, true)),
        preceded(kw("in"), in_list).map(|list| Cond::In(left.clone(), list, false)),
        preceded((kw("is"), multispace1), (opt(terminated(kw("not"), multispace1)), kw("null")))
            .map(|(negated, _)| Cond::IsNull(left.clone(), negated.is_some())),
    ))
    .parse_next(input);
    cond
}

fn negation(input: &mut &str) -> ModalResult<Cond> {
    ws(alt((
        preceded(kw("not"), negation).map(|c| Cond::Not(Box::new(c))),
        delimited('(', condition, ws(')')),
        predicate,
    )))
    .parse_next(input)
}

fn conjunction(input: &mut &str) -> ModalResult<Cond> {
    let first = negation.parse_next(input)?;
    let rest: Vec<Cond> = winnow::combinator::repeat(0.., preceded(kw("and"), negation)).parse_next(input)?;
    Ok(rest.into_iter().fold(first, |a, b| Cond::And(Box::new(a), Box::new(b))))
}

fn condition(input: &mut &str) -> ModalResult<Cond> {
    let first = conjunction.parse_next(input)?;
    let rest: Vec<Cond> = winnow::combinator::repeat(0.., preceded(kw("or"), conjunction)).parse_next(input)?;
    Ok(rest.into_iter().fold(first, |a, b| Cond::Or(Box::new(a), Box::new(b))))
}

fn alias(input: &mut &str) -> ModalResult<String> {
    preceded(multispace1, preceded(opt((kw("as"), multispace1)), identifier)).parse_next(input)
}

fn select_item(input: &mut &str) -> ModalResult<SelectItem> {
    ws(alt((
        "*".value(SelectItem::All),
        (preceded((kw("to_char"), ws('(')), ws(column)), delimited(',', ws(text), ')'), alias)
            .map(|(column, format, alias)| SelectItem::ToChar { column, format, alias }),
        (column, opt(alias)).map(|(column, alias)| SelectItem::Column { column, alias }),
    )))
    .parse_next(input)
}

fn order_key(input: &mut &str) -> ModalResult<(Column, bool)> {
    (ws(column), opt(ws(alt((kw("asc").value(false), kw("desc").value(true))))))
        .map(|(c, desc)| (c, desc.unwrap_or(false)))
        .parse_next(input)
}

fn select(input: &mut &str) -> ModalResult<Select> {
    let items = preceded(ws(kw("select")), separated(1.., select_item, ',')).parse_next(input)?;
    let table = preceded((kw("from"), multispace1), identifier).parse_next(input)?;
    let alias = opt(alias).parse_next(input)?;
    let filter = opt(preceded(ws(kw("where")), condition)).parse_next(input)?;
    let order = opt(preceded((ws(kw("order")), kw("by")), separated(1.., order_key, ','))).parse_next(input)?;
    let _ = multispace0.parse_next(input)?;
    Ok(Select { items, table, alias, filter, order: order.unwrap_or_default() })
}

/// Parses `q` (the whole text must be one query).
pub fn parse(q: &str) -> Result<Select, SuiteQlError> {
    select.parse(q).map_err(|e| SuiteQlError::Syntax(e.offset()))
}

// ---------------------------------------------------------------- date formats

/// Elements of an Oracle datetime format (`YYYY-MM-DD"T"HH24:MI:SS`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Elem {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Literal(String),
}

fn format_elements(format: &str) -> Result<Vec<Elem>, SuiteQlError> {
    let refuse = || SuiteQlError::Format(format.to_owned());
    let upper = format.to_ascii_uppercase();
    let mut rest = upper.as_str();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (elem, len) = if rest.starts_with("YYYY") {
            (Elem::Year, 4)
        } else if rest.starts_with("HH24") {
            (Elem::Hour, 4)
        } else if rest.starts_with("MM") {
            (Elem::Month, 2)
        } else if rest.starts_with("DD") {
            (Elem::Day, 2)
        } else if rest.starts_with("MI") {
            (Elem::Minute, 2)
        } else if rest.starts_with("SS") {
            (Elem::Second, 2)
        } else if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(refuse)?;
            // Literal text keeps the case it was written in.
            let start = format.len() - rest.len() + 1;
            (Elem::Literal(format[start..start + end].to_owned()), end + 2)
        } else if rest.starts_with(|c: char| " -/:.,T".contains(c)) {
            (Elem::Literal(rest[..1].to_owned()), 1)
        } else {
            return Err(refuse());
        };
        out.push(elem);
        rest = &rest[len..];
    }
    Ok(out)
}

/// `TO_CHAR(ts, format)` in UTC.
fn render(at: Timestamp, format: &str) -> Result<String, SuiteQlError> {
    let t = at.to_zoned(jiff::tz::TimeZone::UTC);
    Ok(format_elements(format)?
        .into_iter()
        .map(|e| match e {
            Elem::Year => format!("{:04}", t.year()),
            Elem::Month => format!("{:02}", t.month()),
            Elem::Day => format!("{:02}", t.day()),
            Elem::Hour => format!("{:02}", t.hour()),
            Elem::Minute => format!("{:02}", t.minute()),
            Elem::Second => format!("{:02}", t.second()),
            Elem::Literal(l) => l,
        })
        .collect())
}

/// `TO_DATE` / `TO_TIMESTAMP(text, format)` in UTC, to the second.
fn parse_time(text: &str, format: &str) -> Result<i64, SuiteQlError> {
    let refuse = || SuiteQlError::DateLiteral { text: text.to_owned(), format: format.to_owned() };
    let (mut y, mut mo, mut d, mut h, mut mi, mut s) = (1970i16, 1i8, 1i8, 0i8, 0i8, 0i8);
    let mut rest = text;
    for elem in format_elements(format)? {
        if let Elem::Literal(l) = &elem {
            rest = rest.strip_prefix(l.as_str()).ok_or_else(refuse)?;
            continue;
        }
        let width = if elem == Elem::Year { 4 } else { 2 };
        let digits = rest.chars().take(width).take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(refuse());
        }
        let n: i16 = rest[..digits].parse().map_err(|_| refuse())?;
        rest = &rest[digits..];
        if elem == Elem::Year {
            y = n;
            continue;
        }
        let small = i8::try_from(n).map_err(|_| refuse())?;
        match elem {
            Elem::Month => mo = small,
            Elem::Day => d = small,
            Elem::Hour => h = small,
            Elem::Minute => mi = small,
            Elem::Second => s = small,
            Elem::Year | Elem::Literal(_) => {}
        }
    }
    if !rest.is_empty() {
        return Err(refuse());
    }
    let civil = jiff::civil::DateTime::new(y, mo, d, h, mi, s, 0).map_err(|_| refuse())?;
    Ok(civil.to_zoned(jiff::tz::TimeZone::UTC).map_err(|_| refuse())?.timestamp().as_second())
}

// ---------------------------------------------------------------- evaluation

/// A cell before it is rendered.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Text(String),
    Number(f64),
    /// Seconds (rendered `d/M/yyyy`).
    Time(i64),
    Bool(bool),
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o.get("id").and_then(text_of),
        _ => None,
    }
}

struct Table {
    name: &'static str,
    columns: &'static [&'static str],
}

const TRANSACTION: Table = Table {
    name: "transaction",
    columns: &[
        "id",
        "tranid",
        "type",
        "trandate",
        "status",
        "approvalstatus",
        "foreigntotal",
        "memo",
        "entity",
        "createddate",
        "lastmodifieddate",
    ],
};
const ITEM: Table = Table { name: "item", columns: &["id", "itemid", "displayname", "itemtype", "lastmodifieddate"] };
const EMPLOYEE: Table = Table {
    name: "employee",
    columns: &["id", "entityid", "firstname", "lastname", "email", "mobilephone", "externalid", "isinactive"],
};

fn time_cell(value: &Value) -> Option<Cell> {
    let text = value.as_str()?;
    let at = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_owned() };
    Some(Cell::Time(at.parse::<Timestamp>().ok()?.as_second()))
}

/// The cells of one record in `table`, `None` when the record is not in it.
fn cells(table: &Table, record: RecordType, value: &Value) -> Option<Vec<(&'static str, Cell)>> {
    let number_id = |v: &Value| text_of(v).and_then(|t| t.parse::<f64>().ok()).map(Cell::Number);
    let text = |v: &Value| text_of(v).map(Cell::Text);
    let mut out: Vec<(&'static str, Option<Cell>)> = Vec::new();
    match table.name {
        "transaction" => {
            let code = record.transaction_type()?;
            out.push(("id", number_id(&value["id"])));
            out.push(("tranid", text(&value["tranId"])));
            out.push(("type", Some(Cell::Text(code.to_owned()))));
            out.push(("trandate", time_cell(&value["tranDate"])));
            out.push(("status", text(&value["orderStatus"]).or_else(|| text(&value["shipStatus"]))));
            out.push(("approvalstatus", number_id(&value["approvalStatus"])));
            out.push(("foreigntotal", value["total"].as_f64().map(Cell::Number)));
            out.push(("memo", text(&value["memo"])));
            out.push(("entity", number_id(&value["entity"])));
            out.push(("createddate", time_cell(&value["createdDate"])));
            out.push(("lastmodifieddate", time_cell(&value["lastModifiedDate"])));
        }
        "item" => {
            if record != RecordType::InventoryItem {
                return None;
            }
            out.push(("id", number_id(&value["id"])));
            out.push(("itemid", text(&value["itemId"])));
            out.push(("displayname", text(&value["displayName"])));
            out.push(("itemtype", Some(Cell::Text("InvtPart".to_owned()))));
            out.push(("lastmodifieddate", time_cell(&value["lastModifiedDate"])));
        }
        _ => return None,
    }
    Some(out.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect())
}

fn employee_cells(value: &Value) -> Vec<(&'static str, Cell)> {
    let fields = [
        ("entityid", "entityId"),
        ("firstname", "firstName"),
        ("lastname", "lastName"),
        ("email", "email"),
        ("mobilephone", "mobilePhone"),
        ("externalid", "externalId"),
    ];
    let mut out = Vec::new();
    if let Some(id) = text_of(&value["id"]).and_then(|t| t.parse::<f64>().ok()) {
        out.push(("id", Cell::Number(id)));
    }
    for (column, field) in fields {
        if let Some(t) = text_of(&value[field]) {
            out.push((column, Cell::Text(t)));
        }
    }
    if let Some(b) = value["isInactive"].as_bool() {
        out.push(("isinactive", Cell::Bool(b)));
    }
    out
}

/// Orders two values the way Oracle compares them (numbers with numeric text, `T`/`F` with
/// booleans); `None` when they are not comparable.
fn compare(a: &Cell, b: &Cell) -> Option<Ordering> {
    match (a, b) {
        (Cell::Number(x), Cell::Number(y)) => x.partial_cmp(y),
        (Cell::Number(x), Cell::Text(t)) => t.trim().parse::<f64>().ok().and_then(|y| x.partial_cmp(&y)),
        (Cell::Text(t), Cell::Number(y)) => t.trim().parse::<f64>().ok().and_then(|x| x.partial_cmp(y)),
        (Cell::Text(x), Cell::Text(y)) => Some(x.cmp(y)),
        (Cell::Time(x), Cell::Time(y)) => Some(x.cmp(y)),
        (Cell::Bool(x), Cell::Text(t)) | (Cell::Text(t), Cell::Bool(x)) => {
            Some(if *x { "T" } else { "F" }.cmp(t.as_str()))
        }
        (Cell::Bool(x), Cell::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// The query checked against its table: columns resolved, literals parsed.
struct Plan<'a> {
    select: &'a Select,
    table: &'static Table,
}

impl Plan<'_> {
    fn check_column(&self, column: &Column) -> Result<(), SuiteQlError> {
        let alias = self.select.alias.clone().unwrap_or_else(|| self.table.name.to_owned());
        let unknown = |name: &str| SuiteQlError::UnknownIdentifier {
            name: name.to_owned(),
            alias: alias.clone(),
            table: self.table.name.to_owned(),
        };
        if let Some(q) = &column.qualifier {
            if q != &alias && q != self.table.name {
                return Err(unknown(q));
            }
        }
        if !self.table.columns.contains(&column.name.as_str()) {
            return Err(unknown(&column.name));
        }
        Ok(())
    }

    fn check_operand(&self, operand: &Operand) -> Result<(), SuiteQlError> {
        match operand {
            Operand::Column(c) => self.check_column(c),
            Operand::Time(text, format) => parse_time(text, format).map(|_| ()),
            Operand::Text(_) | Operand::Number(_) => Ok(()),
        }
    }

    fn check_cond(&self, cond: &Cond) -> Result<(), SuiteQlError> {
        match cond {
            Cond::And(a, b) | Cond::Or(a, b) => {
                self.check_cond(a)?;
                self.check_cond(b)
            }
            Cond::Not(c) => self.check_cond(c),
            Cond::Cmp(a, _, b) => {
                self.check_operand(a)?;
                self.check_operand(b)
            }
            Cond::In(a, list, _) => {
                self.check_operand(a)?;
                list.iter().try_for_each(|o| self.check_operand(o))
            }
            Cond::IsNull(a, _) => self.check_operand(a),
        }
    }

    fn check(&self) -> Result<(), SuiteQlError> {
        for item in &self.select.items {
            match item {
                SelectItem::All => {}
                SelectItem::Column { column, .. } => self.check_column(column)?,
                SelectItem::ToChar { column, format, .. } => {
                    self.check_column(column)?;
                    format_elements(format)?;
                }
            }
        }
        if let Some(filter) = &self.select.filter {
            self.check_cond(filter)?;
        }
        self.select.order.iter().try_for_each(|(c, _)| self.check_column(c))
    }
}

fn value_of(operand: &Operand, row: &[(&'static str, Cell)]) -> Option<Cell> {
    match operand {
        Operand::Column(c) => row.iter().find(|(k, _)| *k == c.name).map(|(_, v)| v.clone()),
        Operand::Text(t) => Some(Cell::Text(t.clone())),
        Operand::Number(n) => Some(Cell::Number(*n)),
        // Checked before evaluation.
        Operand::Time(t, f) => parse_time(t, f).ok().map(Cell::Time),
    }
}

/// SQL three-valued logic: `None` is unknown (a NULL was compared).
fn eval(cond: &Cond, row: &[(&'static str, Cell)]) -> Option<bool> {
    match cond {
        Cond::And(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Cond::Or(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Cond::Not(c) => eval(c, row).map(|b| !b),
        Cond::Cmp(a, op, b) => {
            let ord = compare(&value_of(a, row)?, &value_of(b, row)?)?;
            Some(match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Ne => ord != Ordering::Equal,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
            })
        }
        Cond::In(a, list, negated) => {
            let left = value_of(a, row)?;
            let found = list.iter().any(|o| value_of(o, row).and_then(|v| compare(&left, &v)) == Some(Ordering::Equal));
            Some(found != *negated)
        }
        Cond::IsNull(a, negated) => Some(value_of(a, row).is_none() != *negated),
    }
}

/// A cell as SuiteQL hands it back: always a string.
fn render_cell(cell: &Cell) -> String {
    match cell {
        Cell::Text(t) => t.clone(),
        // `1710.0` → `"1710"`, `0.85` → `"0.85"`.
        Cell::Number(n) if n.fract() == 0.0 => format!("{n:.0}"),
        Cell::Number(n) => n.to_string(),
        Cell::Time(s) => {
            let t = Timestamp::from_second(*s).unwrap_or(Timestamp::UNIX_EPOCH).to_zoned(jiff::tz::TimeZone::UTC);
            format!("{}/{}/{}", t.day(), t.month(), t.year())
        }
        Cell::Bool(b) => if *b { "T" } else { "F" }.to_owned(),
    }
}

fn project(select: &Select, table: &Table, row: &[(&'static str, Cell)]) -> Value {
    let mut out = Map::new();
    out.insert("links".to_owned(), Value::Array(Vec::new()));
    let cell = |name: &str| row.iter().find(|(k, _)| *k == name).map(|(_, v)| v);
    for item in &select.items {
        match item {
            SelectItem::All => {
                for name in table.columns {
                    if let Some(c) = cell(name) {
                        out.insert((*name).to_owned(), Value::String(render_cell(c)));
                    }
                }
            }
            SelectItem::Column { column, alias } => {
                // Empty fields are left out, as NetSuite does.
                if let Some(c) = cell(&column.name) {
                    let name = alias.clone().unwrap_or_else(|| column.name.clone());
                    out.insert(name, Value::String(render_cell(c)));
                }
            }
            SelectItem::ToChar { column, format, alias } => {
                let text = match cell(&column.name) {
                    Some(Cell::Time(s)) => {
                        render(Timestamp::from_second(*s).unwrap_or(Timestamp::UNIX_EPOCH), format).ok()
                    }
                    Some(other) => Some(render_cell(other)),
                    None => None,
                };
                if let Some(text) = text {
                    out.insert(alias.clone(), Value::String(text));
                }
            }
        }
    }
    Value::Object(out)
}

fn sort_key_cmp(order: &[(Column, bool)], a: &[(&'static str, Cell)], b: &[(&'static str, Cell)]) -> Ordering {
    for (column, desc) in order {
        let get = |row: &[(&'static str, Cell)]| row.iter().find(|(k, _)| *k == column.name).map(|(_, v)| v.clone());
        // NULLs sort last ascending, as Oracle does.
        let ord = match (get(a), get(b)) {
            (Some(x), Some(y)) => compare(&x, &y).unwrap_or(Ordering::Equal),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        let ord = if *desc { ord.reverse() } else { ord };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

/// Runs `q` over the account's records and employees: the rows, in order, rendered.
pub fn run<'a>(
    q: &str,
    records: impl Iterator<Item = (RecordType, &'a Value)>,
    employees: &[Value],
) -> Result<Vec<Value>, SuiteQlError> {
    let select = parse(q)?;
    let table: &'static Table = match select.table.as_str() {
        "transaction" => &TRANSACTION,
        "item" => &ITEM,
        "employee" => &EMPLOYEE,
        other => return Err(SuiteQlError::UnknownRecord(other.to_owned())),
    };
    Plan { select: &select, table }.check()?;
    let rows: Vec<Vec<(&'static str, Cell)>> = if table.name == "employee" {
        employees.iter().map(employee_cells).collect()
    } else {
        records.filter_map(|(t, v)| cells(table, t, v)).collect()
    };
    let mut rows: Vec<_> =
        rows.into_iter().filter(|row| select.filter.as_ref().is_none_or(|f| eval(f, row) == Some(true))).collect();
    let default_order: Vec<(Column, bool)> = ["lastmodifieddate", "id"]
        .into_iter()
        .filter(|c| table.columns.contains(c))
        .map(|c| (Column { qualifier: None, name: c.to_owned() }, false))
        .collect();
    let order = if select.order.is_empty() { &default_order } else { &select.order };
    rows.sort_by(|a, b| sort_key_cmp(order, a, b));
    Ok(rows.iter().map(|row| project(&select, table, row)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netsuite::sim::seed;
    use crate::netsuite::source::PollCursor;

    fn query(q: &str) -> Result<Vec<Value>, SuiteQlError> {
        let records = seed::records();
        run(q, records.iter().map(|(t, v)| (*t, v)), &seed::employees())
    }

    fn ids(rows: &[Value]) -> Vec<&str> {
        rows.iter().map(|r| r["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn the_poll_cursor_queries_parse_and_page_by_key() {
        let cursor = PollCursor::new(
            RecordType::PurchaseOrder,
            "2024-03-15T02:31:00Z".parse().unwrap(),
            jiff::tz::TimeZone::UTC,
        );
        let rows = query(&cursor.query()).unwrap();
        assert_eq!(ids(&rows), ["4711", "4712"]);
        assert_eq!(rows[0]["lastmodified"], "2024-03-15T02:31:00");
        let keyset = "SELECT id FROM transaction WHERE type = 'PurchOrd' AND (lastmodifieddate > \
                      TO_TIMESTAMP('2024-03-15 02:31:00', 'YYYY-MM-DD HH24:MI:SS') OR (lastmodifieddate = \
                      TO_TIMESTAMP('2024-03-15 02:31:00', 'YYYY-MM-DD HH24:MI:SS') AND id > 4711)) \
                      ORDER BY lastmodifieddate, id";
        assert_eq!(ids(&query(keyset).unwrap()), ["4712"]);
    }

    #[test]
    fn the_fixture_query_answers_the_fixture_rows() {
        let q = "SELECT t.id, t.tranid, t.status, t.approvalstatus, t.foreigntotal, t.lastmodifieddate FROM \
                 transaction t WHERE t.type = 'PurchOrd' AND t.lastmodifieddate >= TO_DATE('2024-03-14','YYYY-MM-DD') \
                 ORDER BY t.id";
        let rows = query(q).unwrap();
        let fixture = fixtures::read_json("netsuite/suiteql_page.json");
        assert_eq!(rows[0], fixture["items"][0]);
        assert_eq!(rows[1], fixture["items"][1]);
        assert_eq!(ids(&rows), ["4709", "4711", "4712"]);
    }

    #[test]
    fn operators_in_not_null_and_descending_order() {
        let q = "select id from transaction where type in ('PurchReq', 'SalesOrd') and not approvalstatus is not null \
                 order by id desc";
        assert_eq!(ids(&query(q).unwrap()), ["5140", "5120"]);
        let q = "SELECT id, tranid FROM transaction WHERE approvalstatus = 1 OR foreigntotal <> 920 AND id <= 4705";
        assert_eq!(ids(&query(q).unwrap()), ["4705", "4690", "4711", "4712", "4691"]);
        let q = "SELECT * FROM item WHERE itemid = 'RM-2040'";
        let rows = query(q).unwrap();
        assert_eq!(rows[0]["displayname"], "RM-2040 PP resin (kg)");
        assert_eq!(rows[0]["lastmodifieddate"], "10/3/2024");
    }

    #[test]
    fn unknown_identifiers_answer_the_fixture_text() {
        let err = query("SELECT subsidiary FROM transaction").unwrap_err();
        let fixture = fixtures::read_json("netsuite/error_400_invalid_parameter.json");
        assert_eq!(err.to_string(), fixture["o:errorDetails"][0]["detail"].as_str().unwrap());
        let err = query("SELECT x.id FROM transaction t").unwrap_err();
        assert!(
            err.to_string().contains("Unknown identifier 'x'. Available identifiers are: {t=transaction}"),
            "{err}"
        );
        assert!(matches!(query("SELECT id FROM customer"), Err(SuiteQlError::UnknownRecord(_))));
        assert!(matches!(
            query("SELECT id FROM transaction WHERE entity = 5 ORDER BY salary"),
            Err(SuiteQlError::UnknownIdentifier { .. })
        ));
    }

    #[test]
    fn text_outside_the_grammar_is_a_syntax_error() {
        for q in [
            "SELEC id FROM transaction",
            "SELECT id FROM transaction WHERE",
            "SELECT id FROM transaction WHERE id >",
            "SELECT id, FROM transaction",
            "SELECT id FROM transaction ORDER id",
            "SELECT id FROM transaction WHERE tranid = 'unterminated",
            "SELECT id FROM transaction GROUP BY id",
            "SELECT id FROM transaction; DROP TABLE transaction",
            "SELECT TO_CHAR(lastmodifieddate, 'YYYY') FROM transaction",
        ] {
            assert!(matches!(query(q), Err(SuiteQlError::Syntax(_))), "{q}: {:?}", query(q));
        }
        assert!(matches!(
            query("SELECT id FROM transaction WHERE lastmodifieddate > TO_DATE('15/3/2024', 'YYYY-MM-DD')"),
            Err(SuiteQlError::DateLiteral { .. })
        ));
        assert!(matches!(
            query("SELECT TO_CHAR(lastmodifieddate, 'Month') AS m FROM transaction"),
            Err(SuiteQlError::Format(_))
        ));
    }

    #[test]
    fn employees_project_booleans_as_t_and_f_and_leave_empty_fields_out() {
        let rows = query("SELECT id, entityid, externalid, isinactive FROM employee ORDER BY id").unwrap();
        let chow = rows.iter().find(|r| r["id"] == "190").unwrap();
        assert_eq!(chow["isinactive"], "T");
        assert_eq!(chow["externalid"], "E3150");
        let lee = rows.iter().find(|r| r["id"] == "201").unwrap();
        assert!(lee.get("externalid").is_none(), "{lee}");
        assert!(query("SELECT salary FROM employee").unwrap_err().to_string().contains("salary"));
        let active = query("SELECT id FROM employee WHERE isinactive = 'F' AND email IS NOT NULL").unwrap();
        assert_eq!(active.len(), 7);
    }

    #[test]
    fn quotes_double_inside_text_literals() {
        assert_eq!(
            parse("SELECT id FROM transaction WHERE memo = 'it''s'").unwrap().filter,
            Some(Cond::Cmp(
                Operand::Column(Column { qualifier: None, name: "memo".into() }),
                CmpOp::Eq,
                Operand::Text("it's".into())
            ))
        );
    }
}
