//! Server-driven paging: which rows go on this page, the link to the next one, and the
//! `Prefer: odata.maxpagesize` a v4 client asks for.

use http::HeaderMap;
use percent_encoding::{utf8_percent_encode, AsciiSet};

/// The rows of one page: `rows[start..end]`, and whether more follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageWindow {
    pub start: usize,
    pub end: usize,
    pub more: bool,
}

impl PageWindow {
    /// At most `size` of `available` rows from `start` (clamped); `more` when rows are left.
    pub fn new(available: usize, start: usize, size: usize) -> Self {
        let start = start.min(available);
        let end = start.saturating_add(size).min(available);
        Self { start, end, more: end < available }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// `{path}?k=v&…`, each value percent-encoded with `encoding` (Gateway keeps OData punctuation
/// readable, Dataverse encodes everything but letters and digits), names written as they are
/// (`$skiptoken`).
pub fn next_link(path: &str, pairs: &[(String, String)], encoding: &'static AsciiSet) -> String {
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, encoding))).collect();
    format!("{path}?{}", query.join("&"))
}

/// Whether a `Prefer` preference starting with `what` was sent (`odata.track-changes`).
pub fn prefers(headers: &HeaderMap, what: &str) -> bool {
    prefer(headers).is_some_and(|p| p.split(',').any(|part| part.trim().starts_with(what)))
}

/// `Prefer: odata.maxpagesize=n`, when sent and a number.
pub fn max_page_size(headers: &HeaderMap) -> Option<usize> {
    prefer(headers)?
        .split(',')
        .find_map(|part| part.trim().strip_prefix("odata.maxpagesize="))
        .and_then(|n| n.parse().ok())
}

fn prefer(headers: &HeaderMap) -> Option<&str> {
    headers.get("prefer").and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::NON_ALPHANUMERIC;

    #[test]
    fn windows_and_links() {
        assert_eq!(PageWindow::new(5, 0, 2), PageWindow { start: 0, end: 2, more: true });
        assert_eq!(PageWindow::new(5, 4, 2), PageWindow { start: 4, end: 5, more: false });
        assert!(PageWindow::new(1, 9, 2).is_empty());
        let pairs =
            vec![("$select".to_owned(), "a,b".to_owned()), ("$skiptoken".to_owned(), "<c x=\"1\"/>".to_owned())];
        assert_eq!(
            next_link("http://h/s", &pairs, NON_ALPHANUMERIC),
            "http://h/s?$select=a%2Cb&$skiptoken=%3Cc%20x%3D%221%22%2F%3E"
        );
    }

    #[test]
    fn prefer_header() {
        let mut headers = HeaderMap::new();
        headers.insert("prefer", "odata.maxpagesize=2,odata.include-annotations=\"*\"".parse().unwrap());
        assert_eq!(max_page_size(&headers), Some(2));
        assert!(prefers(&headers, "odata.include-annotations"));
        assert!(!prefers(&headers, "odata.track-changes"));
    }
}
