//! Weak ETags and conditional writes (RFC 9110 §13.1.1, as OData uses them). The decision is the
//! protocol's; what each outcome answers (412, 428, 404, the vendor's error body) is the
//! simulator's.

use http::HeaderMap;

/// A weak ETag around `opaque` (`W/"5561023"`).
pub fn weak_etag(opaque: &str) -> String {
    format!("W/\"{opaque}\"")
}

/// What an `If-Match` header says about a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match` was sent (Gateway answers 428 where an ETag is required).
    Absent,
    /// `*` on an existing entity, or the current ETag.
    Matches,
    /// An ETag that is no longer current: 412.
    Stale,
    /// `If-Match` was sent but the entity does not exist (Dataverse answers 404).
    NoEntity,
}

/// Evaluates `If-Match` against the entity's current ETag (`None`: the entity does not exist).
pub fn if_match(headers: &HeaderMap, current: Option<&str>) -> IfMatch {
    let Some(sent) = headers.get(http::header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return IfMatch::Absent;
    };
    match current {
        None => IfMatch::NoEntity,
        Some(_) if sent.trim() == "*" => IfMatch::Matches,
        Some(tag) if sent.split(',').any(|s| s.trim() == tag) => IfMatch::Matches,
        Some(_) => IfMatch::Stale,
    }
}

/// `If-None-Match: *`: create only; an existing entity fails with 412.
pub fn if_none_match_any(headers: &HeaderMap) -> bool {
    headers.get(http::header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() == "*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        headers
    }

    #[test]
    fn if_match_outcomes() {
        let tag = weak_etag("7");
        assert_eq!(tag, "W/\"7\"");
        assert_eq!(if_match(&HeaderMap::new(), Some(&tag)), IfMatch::Absent);
        assert_eq!(if_match(&with("if-match", "*"), Some(&tag)), IfMatch::Matches);
        assert_eq!(if_match(&with("if-match", "W/\"7\""), Some(&tag)), IfMatch::Matches);
        assert_eq!(if_match(&with("if-match", "W/\"6\""), Some(&tag)), IfMatch::Stale);
        assert_eq!(if_match(&with("if-match", "*"), None), IfMatch::NoEntity);
        assert!(if_none_match_any(&with("if-none-match", "*")));
    }
}
