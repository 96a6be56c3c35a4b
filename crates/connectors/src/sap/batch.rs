//! OData v2 `$batch` (reference A5): `multipart/mixed` with reads as top-level parts and writes
//! inside one atomic `changeset` each; the `202 Accepted` answer holds one HTTP response per read
//! and per change (or a single error response for a failed changeset).

use serde_json::Value;

/// One write inside a changeset; `path` is relative to the service root.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub method: http::Method,
    pub path: String,
    /// `If-Match` value; `None` sends none.
    pub if_match: Option<String>,
    pub body: Option<Value>,
}

/// A top-level batch part.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchPart {
    /// A GET of `path` (relative to the service root, query included).
    Read(String),
    /// Writes applied all-or-nothing.
    ChangeSet(Vec<Change>),
}

/// One HTTP response out of a batch answer, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResponse {
    pub status: u16,
    /// Header names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl BatchResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a batch answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the $batch answer is not valid multipart: {0}")]
pub struct BatchFormatError(pub String);

/// The request body and its `Content-Type` (CRLF line endings, as on the wire).
pub fn build(batch_id: &str, parts: &[BatchPart]) -> (String, String) {
    let boundary = format!("batch_{batch_id}");
    let mut out = String::new();
    for (n, part) in parts.iter().enumerate() {
        out.push_str(&format!("--{boundary}\r\n"));
        match part {
            BatchPart::Read(path) => {
                out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n");
                out.push_str(&format!("GET {path} HTTP/1.1\r\nAccept: application/json\r\n\r\n\r\n"));
            }
            BatchPart::ChangeSet(changes) => {
                let cs = format!("changeset_{batch_id}_{n}");
                out.push_str(&format!("Content-Type: multipart/mixed; boundary={cs}\r\n\r\n"));
                for change in changes {
                    out.push_str(&format!("--{cs}\r\n"));
                    out.push_str("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n");
                    out.push_str(&format!("{} {} HTTP/1.1\r\n", change.method, change.path));
                    if let Some(etag) = &change.if_match {
                        out.push_str(&format!("If-Match: {etag}\r\n"));
                    }
                    match &change.body {
                        Some(body) => {
                            out.push_str(&format!("Content-Type: application/json\r\n\r\n{body}\r\n"));
                        }
                        None => out.push_str("\r\n"),
                    }
                }
                out.push_str(&format!("--{cs}--\r\n"));
            }
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/mixed; boundary={boundary}"), out)
}

/// The `boundary` parameter of a multipart content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_owned())
}

/// Splits a multipart body into its parts (each still with its own header block).
pub fn split_parts(body: &str, boundary: &str) -> Vec<String> {
    let body = body.replace("\r\n", "\n");
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    for chunk in body.split(&delimiter).skip(1) {
        if chunk.starts_with("--") {
            break;
        }
        parts.push(chunk.trim_start_matches('\n').to_owned());
    }
    parts
}

/// Header block and content of a part or message.
pub fn split_head(text: &str) -> (Vec<(String, String)>, String) {
    let (head, rest) = text.split_once("\n\n").unwrap_or((text, ""));
    let headers = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (headers, rest.to_owned())
}

/// Parses the `202` answer: every inner response, changesets flattened in order.
pub fn parse_response(content_type: &str, body: &str) -> Result<Vec<BatchResponse>, BatchFormatError> {
    let boundary =
        boundary_of(content_type).ok_or_else(|| BatchFormatError(format!("no boundary in {content_type:?}")))?;
    let mut out = Vec::new();
    for part in split_parts(body, &boundary) {
        let (headers, content) = split_head(&part);
        let part_type = headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str()).unwrap_or_default();
        if part_type.starts_with("multipart/mixed") {
            out.extend(parse_response(part_type, &content)?);
        } else {
            out.push(parse_http_response(&content)?);
        }
    }
    Ok(out)
}

fn parse_http_response(text: &str) -> Result<BatchResponse, BatchFormatError> {
    let text = text.trim_start();
    let (status_line, rest) = text.split_once('\n').unwrap_or((text, ""));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| BatchFormatError(format!("bad status line {status_line:?}")))?;
    let (headers, body) = split_head(rest);
    Ok(BatchResponse { status, headers, body: body.trim_end().to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture_response() -> (String, String) {
        let text = fixtures::read_fixture("sap/batch_changeset_exchange.http");
        let at = text.find("HTTP/1.1 202").unwrap();
        let (head, body) = text[at..].split_once("\n\n").unwrap();
        let ct = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap().to_owned();
        (ct, body.to_owned())
    }

    #[test]
    fn fixture_answer_yields_the_read_and_the_change() {
        let (ct, body) = fixture_response();
        let responses = parse_response(&ct, &body).unwrap();
        assert_eq!(responses.len(), 2);
        assert_eq!(responses[0].status, 200);
        let read: Value = serde_json::from_str(&responses[0].body).unwrap();
        assert_eq!(read["d"]["ReleaseIsNotCompleted"], true);
        assert_eq!(responses[1].status, 204);
        assert_eq!(responses[1].header("dataserviceversion"), Some("1.0"));
    }

    #[test]
    fn built_request_has_the_fixture_shape_and_round_trips() {
        let parts = vec![
            BatchPart::Read("A_PurchaseOrder('4500000123')?$select=PurchaseOrder,ReleaseIsNotCompleted".to_owned()),
            BatchPart::ChangeSet(vec![Change {
                method: http::Method::PATCH,
                path: "A_PurchaseOrderItem(PurchaseOrder='4500000123',PurchaseOrderItem='10')".to_owned(),
                if_match: Some("*".to_owned()),
                body: Some(json!({"OrderQuantity": "1300"})),
            }]),
        ];
        let (ct, body) = build("36522ad7", &parts);
        assert_eq!(ct, "multipart/mixed; boundary=batch_36522ad7");
        assert!(body.contains("\r\n"));
        let fixture = fixtures::read_fixture("sap/batch_changeset_exchange.http");
        for line in [
            "GET A_PurchaseOrder('4500000123')?$select=PurchaseOrder,ReleaseIsNotCompleted HTTP/1.1",
            "PATCH A_PurchaseOrderItem(PurchaseOrder='4500000123',PurchaseOrderItem='10') HTTP/1.1",
            "If-Match: *",
            "{\"OrderQuantity\":\"1300\"}",
        ] {
            assert!(fixture.contains(line) && body.contains(line), "{line}");
        }
        let outer = split_parts(&body, "batch_36522ad7");
        assert_eq!(outer.len(), 2);
        let (headers, content) = split_head(&outer[1]);
        let cs = boundary_of(&headers[0].1).unwrap();
        assert_eq!(split_parts(&content, &cs).len(), 1);
    }
}
