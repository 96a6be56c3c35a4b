//! The SuiteQL subset the simulator answers (reference B10 item 4): what dingbridge's client
//! and poll cursor send, nothing more.
//!
//! `SELECT <columns> FROM transaction|item [WHERE <cond> [AND <cond>]…] [ORDER BY …]` where a
//! condition is `type = 'PurchOrd'` (any transaction type code: `ItemShip`, `PurchReq`, …),
//! `approvalstatus = 1` (or `'1'`; transaction), `itemtype = 'InvtPart'` (item),
//! `lastmodifieddate >= TO_TIMESTAMP('YYYY-MM-DD HH:MM:SS', …)` or
//! `lastmodifieddate > TO_DATE('YYYY-MM-DD', …)`, and the poll cursor's keyset condition
//! `(lastmodifieddate > TO_TIMESTAMP(t, …) OR (lastmodifieddate = TO_TIMESTAMP(t, …) AND id > n))`.
//! Rows always come ordered by `lastmodifieddate, id` (the time compared to the second). Columns: `id`, `tranid`, `status` (order status, or ship status of a
//! fulfillment), `approvalstatus`, `foreigntotal`,
//! `itemid`, `displayname`, `lastmodifieddate` (in the simulated user's date format `d/M/yyyy`,
//! like the fixture) and `TO_CHAR(lastmodifieddate, …) AS alias` (ISO local time). The
//! simulated integration user's time zone is UTC.

use crate::netsuite::client::RecordType;
use jiff::Timestamp;
use serde_json::Value;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Output name and source column per selected item.
    pub columns: Vec<(String, String)>,
    /// Record types the table holds after the type filter.
    pub types: Vec<RecordType>,
    /// Inclusive lower bound on lastModifiedDate (seconds).
    pub since: Option<(i64, bool)>,
    /// Wanted approval status id (`approvalstatus = 1`).
    pub approval: Option<String>,
    /// Only rows after this (lastModifiedDate seconds, id), in the order rows come in.
    pub after: Option<(i64, u64)>,
}

const COLUMNS: &[&str] =
    &["id", "tranid", "status", "approvalstatus", "foreigntotal", "itemid", "displayname", "lastmodifieddate"];

fn literal(text: &str) -> Option<&str> {
    let start = text.find('\'')? + 1;
    let len = text[start..].find('\'')?;
    Some(&text[start..start + len])
}

/// Splits on commas outside parentheses and quotes.
fn split_top(text: &str) -> Vec<String> {
    let (mut parts, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0i32, false);
    for c in text.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                parts.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur.trim().to_owned());
    parts
}

/// A query outside the subset; the text is the `INVALID_PARAMETER` detail NetSuite answers.
#[derive(Debug, thiserror::Error)]
pub enum SuiteQlError {
    #[error("Invalid search query: expected SELECT … FROM …")]
    NoFrom,
    #[error("Invalid search query: expected SELECT")]
    NoSelect,
    #[error("TO_CHAR needs an alias")]
    ToCharAlias,
    #[error("Invalid search query. Search error occurred: Unknown identifier '{0}'.")]
    UnknownIdentifier(String),
    #[error("Invalid search query. Search error occurred: Record '{0}' was not found.")]
    UnknownRecord(String),
    #[error("type needs a quoted code")]
    TypeCode,
    #[error("Invalid search query. approvalstatus needs a status id, not `{0}`.")]
    ApprovalStatus(String),
    #[error("Unsupported lastmodifieddate condition `{0}`")]
    DateCondition(String),
    #[error("lastmodifieddate needs a quoted literal")]
    DateLiteral,
    #[error("Invalid date literal '{text}' ({source})")]
    BadDate { text: String, source: jiff::Error },
    #[error("{0}")]
    TimeZone(#[source] jiff::Error),
    #[error("Invalid search query. Unsupported condition `{0}`.")]
    Condition(String),
    #[error("Invalid search query. Unsupported OR condition `{0}`: only the keyset `(lastmodifieddate > t OR (lastmodifieddate = t AND id > n))`.")]
    Keyset(String),
    #[error("Invalid search query. Unsupported clause `{0}` on employee.")]
    EmployeeClause(String),
}

/// Parses `q`; the error text becomes the `INVALID_PARAMETER` detail.
pub fn parse(q: &str) -> Result<Query, SuiteQlError> {
    let lower = q.to_ascii_lowercase();
    let select_end = lower.find(" from ").ok_or(SuiteQlError::NoFrom)?;
    let select = lower.strip_prefix("select ").ok_or(SuiteQlError::NoSelect)?;
    let mut columns = Vec::new();
    for item in split_top(&select[..select_end - "select ".len()]) {
        if item.starts_with("to_char(lastmodifieddate") {
            let alias =
                item.rsplit(" as ").next().filter(|_| item.contains(" as ")).ok_or(SuiteQlError::ToCharAlias)?;
            columns.push((alias.trim().to_owned(), "lastmodified_iso".to_owned()));
        } else if COLUMNS.contains(&item.as_str()) {
            columns.push((item.clone(), item));
        } else {
            return Err(SuiteQlError::UnknownIdentifier(item));
        }
    }
    let rest = &lower[select_end + " from ".len()..];
    let rest = rest.split(" order by ").next().unwrap_or_default();
    let (table, where_clause) = match rest.split_once(" where ") {
        Some((t, w)) => (t.trim(), Some(w)),
        None => (rest.trim(), None),
    };
    let mut types: Vec<RecordType> = match table {
        "transaction" => RecordType::ALL.into_iter().filter(|t| t.transaction_type().is_some()).collect(),
        "item" => vec![RecordType::InventoryItem],
        other => return Err(SuiteQlError::UnknownRecord(other.to_owned())),
    };
    let mut since = None;
    let mut approval = None;
    let mut after = None;
    for cond in where_clause.map(|w| ::sim::text::split_keyword(w, "and")).unwrap_or_default() {
        let cond = cond.trim();
        // Literals keep their case from the original text.
        let original = &q[q.to_ascii_lowercase().find(cond).unwrap_or(0)..];
        if cond.starts_with('(') {
            after = Some(keyset(cond)?);
        } else if cond.starts_with("type =") && table == "transaction" {
            let code = literal(original).ok_or(SuiteQlError::TypeCode)?;
            types.retain(|t| t.transaction_type().is_some_and(|c| c.eq_ignore_ascii_case(code)));
        } else if let Some(value) = cond.strip_prefix("approvalstatus =").filter(|_| table == "transaction") {
            let value = value.trim().trim_matches('\'');
            if value.is_empty() || !value.chars().all(|c| c.is_ascii_digit()) {
                return Err(SuiteQlError::ApprovalStatus(value.to_owned()));
            }
            approval = Some(value.to_owned());
        } else if cond.starts_with("itemtype =") && table == "item" {
            if !literal(cond).is_some_and(|c| c.eq_ignore_ascii_case("invtpart")) {
                types.clear();
            }
        } else if let Some(op) = cond.strip_prefix("lastmodifieddate ") {
            let inclusive = op.starts_with(">=");
            if !inclusive && !op.starts_with('>') {
                return Err(SuiteQlError::DateCondition(cond.to_owned()));
            }
            since = Some((date_literal(op)?, inclusive));
        } else {
            return Err(SuiteQlError::Condition(cond.to_owned()));
        }
    }
    Ok(Query { columns, types, since, approval, after })
}

/// Seconds of the quoted date or timestamp literal in `text` (the simulated user's zone is UTC).
fn date_literal(text: &str) -> Result<i64, SuiteQlError> {
    let text = literal(text).ok_or(SuiteQlError::DateLiteral)?;
    let civil = if text.len() == 10 { format!("{text}T00:00:00") } else { text.replacen(' ', "T", 1) };
    let at: jiff::civil::DateTime =
        civil.parse().map_err(|source| SuiteQlError::BadDate { text: text.to_owned(), source })?;
    Ok(at.to_zoned(jiff::tz::TimeZone::UTC).map_err(SuiteQlError::TimeZone)?.timestamp().as_second())
}

/// `(lastmodifieddate > t OR (lastmodifieddate = t AND id > n))` → (t, n).
fn keyset(cond: &str) -> Result<(i64, u64), SuiteQlError> {
    let refuse = || SuiteQlError::Keyset(cond.to_owned());
    let inner = cond.strip_prefix('(').and_then(|c| c.strip_suffix(')')).ok_or_else(refuse)?;
    let [later, tie] = <[String; 2]>::try_from(::sim::text::split_keyword(inner, "or")).map_err(|_| refuse())?;
    let later_at = date_literal(later.strip_prefix("lastmodifieddate > ").ok_or_else(refuse)?)?;
    let tie = tie.strip_prefix('(').and_then(|c| c.strip_suffix(')')).ok_or_else(refuse)?;
    let [same, id] = <[String; 2]>::try_from(::sim::text::split_keyword(tie, "and")).map_err(|_| refuse())?;
    let same_at = date_literal(same.strip_prefix("lastmodifieddate = ").ok_or_else(refuse)?)?;
    let id = id.strip_prefix("id > ").and_then(|n| n.trim().parse().ok()).ok_or_else(refuse)?;
    if later_at != same_at {
        return Err(refuse());
    }
    Ok((later_at, id))
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o.get("id").and_then(text_of),
        _ => None,
    }
}

/// `1710.0` → `"1710"`, `0.85` → `"0.85"` (SuiteQL hands numbers back as strings).
fn number_text(value: &Value) -> Option<String> {
    let n = value.as_f64()?;
    Some(if n.fract() == 0.0 { format!("{n:.0}") } else { n.to_string() })
}

/// The projected row of one record, `None` when the filter excludes it.
pub fn project(query: &Query, record: RecordType, value: &Value) -> Option<Value> {
    let modified: Timestamp = value["lastModifiedDate"].as_str()?.parse().ok()?;
    if let Some((since, inclusive)) = query.since {
        let s = modified.as_second();
        if s < since || (!inclusive && s == since) {
            return None;
        }
    }
    if let Some((at, id)) = query.after {
        let key = (modified.as_second(), text_of(&value["id"])?.parse::<u64>().ok()?);
        if key <= (at, id) {
            return None;
        }
    }
    if !query.types.contains(&record) {
        return None;
    }
    if query.approval.as_ref().is_some_and(|wanted| text_of(&value["approvalStatus"]).as_ref() != Some(wanted)) {
        return None;
    }
    let utc = modified.to_zoned(jiff::tz::TimeZone::UTC);
    let mut row = serde_json::Map::new();
    row.insert("links".to_owned(), Value::Array(Vec::new()));
    for (name, source) in &query.columns {
        let cell = match source.as_str() {
            "id" => text_of(&value["id"]),
            "tranid" => text_of(&value["tranId"]),
            "status" => text_of(&value["orderStatus"]).or_else(|| text_of(&value["shipStatus"])),
            "approvalstatus" => text_of(&value["approvalStatus"]),
            "foreigntotal" => number_text(&value["total"]),
            "itemid" => text_of(&value["itemId"]),
            "displayname" => text_of(&value["displayName"]),
            "lastmodifieddate" => Some(format!("{}/{}/{}", utc.day(), utc.month(), utc.year())),
            "lastmodified_iso" => Some(utc.strftime("%Y-%m-%dT%H:%M:%S").to_string()),
            _ => None,
        };
        // Empty fields are left out, as NetSuite does.
        if let Some(cell) = cell {
            row.insert(name.clone(), Value::String(cell));
        }
    }
    Some(Value::Object(row))
}

/// Columns of the `employee` table and the record field each comes from.
const EMPLOYEE_COLUMNS: &[(&str, &str)] = &[
    ("id", "id"),
    ("entityid", "entityId"),
    ("firstname", "firstName"),
    ("lastname", "lastName"),
    ("email", "email"),
    ("mobilephone", "mobilePhone"),
    ("externalid", "externalId"),
    ("isinactive", "isInactive"),
];

/// True for `SELECT … FROM employee …`, answered by [`employee_rows`] instead of [`parse`].
pub fn is_employee_query(q: &str) -> bool {
    let lower = q.to_ascii_lowercase();
    lower.split(" from ").nth(1).is_some_and(|rest| rest.split_whitespace().next() == Some("employee"))
}

/// `SELECT <employee columns> FROM employee [ORDER BY …]` over `employees`, ordered by id.
/// Booleans come back as `'T'`/`'F'` and empty fields are left out, as SuiteQL does.
pub fn employee_rows(q: &str, employees: &[Value]) -> Result<Vec<Value>, SuiteQlError> {
    let lower = q.to_ascii_lowercase();
    let select = lower.strip_prefix("select ").ok_or(SuiteQlError::NoSelect)?;
    let (columns, rest) = select.split_once(" from ").ok_or(SuiteQlError::NoFrom)?;
    let rest = rest.trim_start().strip_prefix("employee").unwrap_or_default().trim();
    if !(rest.is_empty() || rest.starts_with("order by")) {
        return Err(SuiteQlError::EmployeeClause(rest.to_owned()));
    }
    let mut wanted = Vec::new();
    for column in split_top(columns) {
        let field = EMPLOYEE_COLUMNS
            .iter()
            .find(|(name, _)| *name == column)
            .map(|(_, field)| *field)
            .ok_or_else(|| SuiteQlError::UnknownIdentifier(column.clone()))?;
        wanted.push((column, field));
    }
    let mut sorted: Vec<&Value> = employees.iter().collect();
    sorted.sort_by_key(|e| e["id"].as_str().and_then(|id| id.parse::<u64>().ok()).unwrap_or(u64::MAX));
    Ok(sorted
        .into_iter()
        .map(|employee| {
            let mut row = serde_json::Map::new();
            row.insert("links".to_owned(), Value::Array(Vec::new()));
            for (column, field) in &wanted {
                let cell = match &employee[*field] {
                    Value::Bool(b) => Some(if *b { "T" } else { "F" }.to_owned()),
                    other => text_of(other),
                };
                if let Some(cell) = cell.filter(|c| !c.is_empty()) {
                    row.insert(column.clone(), Value::String(cell));
                }
            }
            Value::Object(row)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netsuite::source::PollCursor;

    #[test]
    fn the_poll_cursor_query_parses() {
        let q = PollCursor::new(
            RecordType::PurchaseOrder,
            "2024-03-15T02:31:00Z".parse().unwrap(),
            jiff::tz::TimeZone::UTC,
        )
        .query();
        let parsed = parse(&q).unwrap();
        assert_eq!(parsed.types, [RecordType::PurchaseOrder]);
        assert_eq!(parsed.since, Some(("2024-03-15T02:29:00Z".parse::<Timestamp>().unwrap().as_second(), true)));
        assert_eq!(parsed.columns[1], ("lastmodified".to_owned(), "lastmodified_iso".to_owned()));
    }

    #[test]
    fn the_fixture_query_shape_parses_and_projects_like_the_fixture() {
        let q = "SELECT id, tranid, status, approvalstatus, foreigntotal, lastmodifieddate FROM transaction \
                 WHERE type = 'PurchOrd' AND lastmodifieddate > TO_DATE('2024-01-31','YYYY-MM-DD')";
        let parsed = parse(q).unwrap();
        let po = super::super::seed::records().into_iter().find(|(_, v)| v["id"] == "4711").unwrap().1;
        let row = project(&parsed, RecordType::PurchaseOrder, &po).unwrap();
        let fixture = fixtures::read_json("netsuite/suiteql_page.json");
        assert_eq!(row, fixture["items"][1]);
        assert!(project(&parsed, RecordType::SalesOrder, &po).is_none());
    }

    #[test]
    fn unknown_columns_and_tables_are_refused() {
        assert!(parse("SELECT subsidiary FROM transaction")
            .unwrap_err()
            .to_string()
            .contains("Unknown identifier 'subsidiary'"));
        assert!(parse("SELECT id FROM customer").is_err());
        assert!(parse("SELECT id FROM transaction WHERE entity = 5").is_err());
    }

    #[test]
    fn employee_queries_project_booleans_as_t_and_f_and_leave_empty_fields_out() {
        let q = "SELECT id, entityid, externalid, isinactive FROM employee ORDER BY id";
        assert!(is_employee_query(q));
        assert!(!is_employee_query("SELECT id FROM transaction"));
        let rows = employee_rows(q, &super::super::seed::employees()).unwrap();
        let chow = rows.iter().find(|r| r["id"] == "190").unwrap();
        assert_eq!(chow["isinactive"], "T");
        assert_eq!(chow["externalid"], "E3150");
        let lee = rows.iter().find(|r| r["id"] == "201").unwrap();
        assert!(lee.get("externalid").is_none(), "{lee}");
        assert!(employee_rows("SELECT salary FROM employee", &[]).unwrap_err().to_string().contains("salary"));
        assert!(employee_rows("SELECT id FROM employee WHERE id = 1", &[]).is_err());
    }
}
