//! Resource paths below a service root: `Set`, `Set(key)` and `Set(key)/Navigation`, and the key
//! predicate inside the parentheses.

/// A resource path, already percent-decoded and relative to the service root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourcePath<'a> {
    pub set: &'a str,
    /// The inside of the key parentheses, as written (`'4711'`, `K='1',L='2'`, a v4 GUID).
    pub key: Option<&'a str>,
    /// The navigation property after `Set(key)/`.
    pub navigation: Option<&'a str>,
}

impl<'a> ResourcePath<'a> {
    pub fn parse(rest: &'a str) -> Self {
        let Some(open) = rest.find('(') else { return Self { set: rest, key: None, navigation: None } };
        let set = &rest[..open];
        match rest.find(")/") {
            Some(close) if close > open => {
                Self { set, key: Some(&rest[open + 1..close]), navigation: Some(&rest[close + 2..]) }
            }
            _ => match rest.strip_suffix(')') {
                Some(inner) => Self { set, key: Some(&inner[open + 1..]), navigation: None },
                None => Self { set: rest, key: None, navigation: None },
            },
        }
    }
}

/// One value of a key predicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The property named before `=`; `None` for the short form `Set('4711')`.
    pub name: Option<String>,
    pub value: String,
    /// Written as a string literal (`'…'`, `''` unescaped); unquoted values are v4 GUIDs or numbers.
    pub quoted: bool,
}

/// Parses `'v'`, `v`, or `K='v',K2=v2` (the inside of the key parentheses); `None` when a quote
/// is not closed.
pub fn key_values(inner: &str) -> Option<Vec<KeyValue>> {
    let mut out = Vec::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (name, value_part) = match rest.find('=') {
            Some(eq) if !rest.starts_with('\'') => (Some(rest[..eq].trim().to_owned()), &rest[eq + 1..]),
            _ => (None, rest),
        };
        let Some(body) = value_part.strip_prefix('\'') else {
            let (value, after) = value_part.split_once(',').unwrap_or((value_part, ""));
            out.push(KeyValue { name, value: value.trim().to_owned(), quoted: false });
            rest = after;
            continue;
        };
        let mut value = String::new();
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c != '\'' {
                value.push(c);
            } else if chars.peek().map(|(_, n)| *n) == Some('\'') {
                value.push('\'');
                chars.next();
            } else {
                end = Some(i + 1);
                break;
            }
        }
        out.push(KeyValue { name, value, quoted: true });
        rest = body[end?..].trim_start_matches(',');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            ResourcePath::parse("A_PurchaseOrder"),
            ResourcePath { set: "A_PurchaseOrder", key: None, navigation: None }
        );
        assert_eq!(
            ResourcePath::parse("A_PurchaseOrder('4500000123')/to_PurchaseOrderItem"),
            ResourcePath {
                set: "A_PurchaseOrder",
                key: Some("'4500000123'"),
                navigation: Some("to_PurchaseOrderItem")
            }
        );
        assert_eq!(
            ResourcePath::parse("salesorders(3f9a)"),
            ResourcePath { set: "salesorders", key: Some("3f9a"), navigation: None }
        );
    }

    #[test]
    fn key_predicates() {
        let keys = key_values("PurchaseOrder='4500000123',PurchaseOrderItem='10'").unwrap();
        assert_eq!(keys[1], KeyValue { name: Some("PurchaseOrderItem".into()), value: "10".into(), quoted: true });
        assert_eq!(key_values("'O''1'").unwrap(), vec![KeyValue { name: None, value: "O'1".into(), quoted: true }]);
        assert!(!key_values("PurchaseOrder=4500000123").unwrap()[0].quoted);
        assert_eq!(
            key_values("3f9a-01").unwrap(),
            vec![KeyValue { name: None, value: "3f9a-01".into(), quoted: false }]
        );
        assert!(key_values("'open").is_none());
    }
}
