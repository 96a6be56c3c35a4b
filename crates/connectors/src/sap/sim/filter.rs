//! The `$filter` subset the simulator evaluates: `Field op literal` comparisons (eq ne gt ge lt
//! le) joined by `and` / `or` (no parentheses, no functions); literals `'text'`, `datetime'…'`,
//! `datetimeoffset'…'`, `true`/`false` and decimals.

use jiff::Timestamp;
use model::Decimal;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Text(String),
    Instant(i64),
    Bool(bool),
    Number(Decimal),
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    field: String,
    op: String,
    value: Literal,
}

/// A parsed filter: an OR of ANDs.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    any: Vec<Vec<Comparison>>,
}

/// Splits on a keyword surrounded by spaces, outside quotes.
fn split_outside_quotes<'a>(text: &'a str, word: &str) -> Vec<&'a str> {
    let needle = format!(" {word} ");
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            in_quote = !in_quote;
        } else if !in_quote && text[i..].starts_with(&needle) {
            parts.push(&text[start..i]);
            i += needle.len();
            start = i;
            continue;
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

fn parse_literal(text: &str) -> Result<Literal, String> {
    let quoted = |rest: &str| -> Option<String> {
        rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')).map(|s| s.replace("''", "'"))
    };
    if let Some(inner) = text.strip_prefix("datetimeoffset").and_then(quoted) {
        let ts: Timestamp = inner.parse().map_err(|e| format!("bad datetimeoffset literal {inner}: {e}"))?;
        return Ok(Literal::Instant(ts.as_millisecond()));
    }
    if let Some(inner) = text.strip_prefix("datetime").and_then(quoted) {
        let dt: jiff::civil::DateTime = inner.parse().map_err(|e| format!("bad datetime literal {inner}: {e}"))?;
        let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).map_err(|e| e.to_string())?.timestamp();
        return Ok(Literal::Instant(ts.as_millisecond()));
    }
    if let Some(s) = quoted(text) {
        return Ok(Literal::Text(s));
    }
    match text {
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        _ => {}
    }
    let number = text.trim_end_matches(['M', 'm']);
    number.parse::<Decimal>().map(Literal::Number).map_err(|_| format!("unsupported literal {text}"))
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut any = Vec::new();
        for alternative in split_outside_quotes(text.trim(), "or") {
            let mut all = Vec::new();
            for clause in split_outside_quotes(alternative.trim(), "and") {
                let clause = clause.trim();
                let mut parts = clause.splitn(3, ' ');
                let (Some(field), Some(op), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(format!("cannot parse the filter clause '{clause}'"));
                };
                if !["eq", "ne", "gt", "ge", "lt", "le"].contains(&op) {
                    return Err(format!("unsupported operator '{op}'"));
                }
                all.push(Comparison {
                    field: field.to_owned(),
                    op: op.to_owned(),
                    value: parse_literal(value.trim())?,
                });
            }
            any.push(all);
        }
        Ok(Filter { any })
    }

    /// Every property the filter names.
    pub fn fields(&self) -> Vec<&str> {
        self.any.iter().flatten().map(|c| c.field.as_str()).collect()
    }

    pub fn matches(&self, row: &Value) -> bool {
        self.any.iter().any(|all| all.iter().all(|c| c.matches(row)))
    }
}

/// Milliseconds inside a stored `/Date(ms)/` or `/Date(ms+0000)/`.
pub fn date_millis(text: &str) -> Option<i64> {
    let inner = text.strip_prefix("/Date(")?.strip_suffix(")/")?;
    let end = inner.char_indices().skip(1).find(|&(_, c)| c == '+' || c == '-').map_or(inner.len(), |(i, _)| i);
    inner[..end].parse().ok()
}

impl Comparison {
    fn matches(&self, row: &Value) -> bool {
        let ordering = match (&self.value, row.get(&self.field)) {
            (Literal::Text(t), Some(Value::String(s))) => s.as_str().cmp(t.as_str()),
            (Literal::Instant(ms), Some(Value::String(s))) => match date_millis(s) {
                Some(v) => v.cmp(ms),
                None => return false,
            },
            (Literal::Bool(b), Some(Value::Bool(v))) => v.cmp(b),
            (Literal::Number(n), Some(Value::String(s))) => match s.parse::<Decimal>() {
                Ok(v) => v.cmp(n),
                Err(_) => return false,
            },
            _ => return false,
        };
        use std::cmp::Ordering::*;
        match self.op.as_str() {
            "eq" => ordering == Equal,
            "ne" => ordering != Equal,
            "gt" => ordering == Greater,
            "ge" => ordering != Less,
            "lt" => ordering == Less,
            _ => ordering != Greater,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn comparisons_and_or_and_literals() {
        let row = json!({"PurchaseOrder": "4500000123", "ReleaseIsNotCompleted": true,
            "LastChangeDateTime": "/Date(1710469867000+0000)/", "OrderQuantity": "37.500", "Name": "a and b"});
        let f = |s: &str| Filter::parse(s).unwrap().matches(&row);
        assert!(f("PurchaseOrder eq '4500000123'"));
        assert!(f("ReleaseIsNotCompleted eq true and PurchaseOrder ne '1'"));
        assert!(f("LastChangeDateTime gt datetimeoffset'2024-03-15T02:00:00Z'"));
        assert!(!f("LastChangeDateTime gt datetimeoffset'2024-03-15T02:31:07Z'"));
        assert!(f("LastChangeDateTime ge datetime'2024-03-15T00:00:00'"));
        assert!(f("OrderQuantity lt 40M"));
        assert!(f("PurchaseOrder eq 'x' or Name eq 'a and b'"));
        assert!(Filter::parse("substringof('x',Name)").is_err());
        assert_eq!(Filter::parse("A eq 'O''Neil'").unwrap().fields(), vec!["A"]);
    }
}
