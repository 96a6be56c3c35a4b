//! Answering a `$batch` request: every embedded request goes through the simulator's own
//! handler ([`BatchHandler`]), change sets apply all-or-nothing, and the multipart answer is built
//! with the shared wire format (`connect::odata::batch`).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use connect::odata::batch::{self as wire, BatchFormatError, Operation, Part, Response};

pub use connect::odata::batch::{Operation as BatchOperation, Response as BatchResponse};

/// A simulator's side of `$batch`.
#[async_trait::async_trait]
pub trait BatchHandler: Send + Sync {
    /// What a change set restores on failure (a copy of the rows it may touch).
    type Savepoint: Send;

    /// Answers one embedded request; `in_changeset` tells whether it belongs to a change set.
    async fn answer(&self, operation: &Operation, in_changeset: bool) -> Response;

    /// Taken before a change set runs.
    fn savepoint(&self) -> Self::Savepoint;

    /// Called when a change in the set failed: undo the ones before it.
    fn rollback(&self, savepoint: Self::Savepoint);
}

/// The multipart answer to a `$batch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAnswer {
    pub content_type: String,
    pub body: String,
}

/// Runs a `$batch` request. Top-level requests are answered one by one; a change set answers all
/// its responses, or, at its first failing change (status ≥ 400), is rolled back and answers that
/// single error in its place (OData v2 §2.2.7.3.4, v4 Part 1 §11.7.4).
pub async fn answer_batch<H: BatchHandler + ?Sized>(
    handler: &H,
    content_type: &str,
    body: &[u8],
) -> Result<BatchAnswer, BatchFormatError> {
    let mut answers = Vec::new();
    for part in wire::parse_request(content_type, body)? {
        match part {
            Part::Single(operation) => answers.push(Part::Single(handler.answer(&operation, false).await)),
            Part::ChangeSet(operations) => {
                let savepoint = handler.savepoint();
                let mut done = Vec::new();
                let mut failed = None;
                for operation in &operations {
                    let answer = handler.answer(operation, true).await;
                    if answer.status >= 400 {
                        failed = Some(answer);
                        break;
                    }
                    done.push(answer);
                }
                match failed {
                    Some(error) => {
                        handler.rollback(savepoint);
                        answers.push(Part::Single(error));
                    }
                    None => answers.push(Part::ChangeSet(done)),
                }
            }
        }
    }
    // A random boundary, so no answer body can contain it.
    let boundary = format!("batchresponse_{:032x}", rand::random::<u128>());
    Ok(BatchAnswer { content_type: wire::content_type(&boundary), body: wire::build_response(&boundary, &answers) })
}

/// The headers of an embedded request as a `HeaderMap` (unreadable ones are left out).
pub fn request_headers(operation: &Operation) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in &operation.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            map.insert(name, value);
        }
    }
    map
}

/// An embedded request's body as the handlers take it.
pub fn request_body(operation: &Operation) -> Bytes {
    Bytes::from(operation.body.trim().to_owned())
}

/// A handler's full HTTP response as an embedded answer (status, headers in order, body text).
pub async fn embedded_response(response: axum::response::Response) -> Response {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let bytes = axum::body::to_bytes(response.into_body(), crate::MAX_BODY_BYTES).await.unwrap_or_default();
    Response { status, headers, body: String::from_utf8_lossy(&bytes).into_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Writes append to a list; a body "fail" answers 400.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl BatchHandler for Log {
        type Savepoint = Vec<String>;

        async fn answer(&self, operation: &Operation, _in_changeset: bool) -> Response {
            if operation.body == "fail" {
                return Response { status: 400, headers: Vec::new(), body: "no".to_owned() };
            }
            self.0.lock().unwrap().push(operation.body.clone());
            Response { status: 204, headers: Vec::new(), body: String::new() }
        }

        fn savepoint(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }

        fn rollback(&self, savepoint: Vec<String>) {
            *self.0.lock().unwrap() = savepoint;
        }
    }

    fn post(body: &str) -> Operation {
        Operation { body: body.to_owned(), ..Operation::new(http::Method::POST, "Set") }
    }

    #[tokio::test]
    async fn a_failing_change_set_rolls_back_and_answers_its_error() {
        let log = Log::default();
        let request = wire::build_request(
            "b",
            &[
                Part::Single(post("a")),
                Part::ChangeSet(vec![post("b"), post("fail")]),
                Part::ChangeSet(vec![post("c")]),
            ],
        );
        let answer = answer_batch(&log, "multipart/mixed; boundary=b", request.as_bytes()).await.unwrap();
        assert_eq!(*log.0.lock().unwrap(), vec!["a".to_owned(), "c".to_owned()]);
        let parts = wire::parse_response_parts(&answer.content_type, answer.body.as_bytes()).unwrap();
        assert!(matches!(&parts[0], Part::Single(r) if r.status == 204));
        assert!(matches!(&parts[1], Part::Single(r) if r.status == 400 && r.body == "no"));
        assert!(matches!(&parts[2], Part::ChangeSet(r) if r.len() == 1));
    }
}
