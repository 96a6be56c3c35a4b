//! OData v2 `$batch` (reference A5): `multipart/mixed` with reads as top-level parts and writes
//! inside one atomic `changeset` each; the `202 Accepted` answer holds one HTTP response per read
//! and per change (or a single error response for a failed changeset).

use connect::odata::batch::{self as wire, Operation, Part};
use serde_json::Value;

/// One embedded answer, in request order (header names lower-case).
pub use connect::odata::batch::Response as BatchResponse;
pub use connect::odata::batch::{boundary_of, BatchFormatError};

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

impl Change {
    /// The embedded request: `If-Match` first, then the body's `Content-Type`.
    fn operation(&self) -> Operation {
        let mut op = Operation::new(self.method.clone(), self.path.clone());
        if let Some(etag) = &self.if_match {
            op.headers.push(("If-Match".to_owned(), etag.clone()));
        }
        if let Some(body) = &self.body {
            op.headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
            op.body = body.to_string();
        }
        op
    }
}

/// The request body and its `Content-Type` (CRLF line endings, as on the wire).
pub fn build(batch_id: &str, parts: &[BatchPart]) -> (String, String) {
    let boundary = format!("batch_{batch_id}");
    let parts: Vec<Part<Operation>> = parts
        .iter()
        .map(|part| match part {
            BatchPart::Read(path) => {
                let mut op = Operation::new(http::Method::GET, path.clone());
                op.headers.push(("Accept".to_owned(), "application/json".to_owned()));
                Part::Single(op)
            }
            BatchPart::ChangeSet(changes) => Part::ChangeSet(changes.iter().map(Change::operation).collect()),
        })
        .collect();
    let body = wire::build_request(&boundary, &parts);
    (wire::content_type(&boundary), body)
}

/// Parses the `202` answer: every inner response, changesets flattened in order.
pub fn parse_response(content_type: &str, body: &str) -> Result<Vec<BatchResponse>, BatchFormatError> {
    wire::parse_response(content_type, body.as_bytes())
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
        let read = wire::parse_request(&ct, body.as_bytes()).unwrap();
        assert_eq!(read.len(), 2);
        assert!(matches!(&read[1], Part::ChangeSet(changes) if changes.len() == 1));
    }
}
