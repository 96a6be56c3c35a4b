//! The OData `$batch` wire format, both directions (OData v2 and v4 share it): a
//! `multipart/mixed` body whose parts are `application/http` messages, or a nested
//! `multipart/mixed` change set whose writes apply all-or-nothing.
//!
//! Clients build requests ([`build_request`]) and read answers ([`parse_response`]); the
//! simulators read requests ([`parse_request`]) and build answers ([`build_response`]). Output
//! uses CRLF line ends, as the multipart grammar (RFC 2046 §5.1.1) requires; input is read with
//! CRLF or bare LF, because hand-written captures and some gateways use LF.
//!
//! Crates: `mime` reads the `Content-Type` and its `boundary` parameter (quoted or not), and
//! `httparse` (hyper's parser) reads every header block and the embedded request and status
//! lines. The multipart split itself is a short line scan: the well-kept multipart crate, `multer`,
//! reads `multipart/form-data` from an async stream, which fits neither nested change sets nor a
//! body already in memory.

use http::{Method, StatusCode};

/// Headers read per part or embedded message; more is not a `$batch` anyone sends.
const MAX_HEADERS: usize = 64;

/// Header names and values in the order they came.
type Headers = Vec<(String, String)>;

/// Why a `$batch` body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchFormatError {
    #[error("the Content-Type `{0}` is not multipart/mixed with a boundary")]
    NoBoundary(String),
    #[error("a $batch part has no readable HTTP {what}: `{start}`")]
    BadMessage { what: &'static str, start: String },
    #[error("a $batch part has unreadable headers: {0}")]
    BadHeaders(String),
}

/// One embedded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub method: Method,
    /// The request target as written: relative to the service root (v2) or an absolute path (v4).
    pub target: String,
    /// Headers in the order they are written; names as given when building, lower-case when read.
    pub headers: Vec<(String, String)>,
    /// Empty when there is none.
    pub body: String,
}

impl Operation {
    /// A request without headers or body.
    pub fn new(method: Method, target: impl Into<String>) -> Self {
        Self { method, target: target.into(), headers: Vec::new(), body: String::new() }
    }

    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// One embedded response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Headers in order; names lower-case when read.
    pub headers: Vec<(String, String)>,
    /// Without the trailing line end.
    pub body: String,
}

impl Response {
    /// The first header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// A top-level part: one message, or a change set of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<T> {
    Single(T),
    ChangeSet(Vec<T>),
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `multipart/mixed; boundary=…` for a body built with `boundary`.
pub fn content_type(boundary: &str) -> String {
    format!("multipart/mixed; boundary={boundary}")
}

/// The `boundary` of a `multipart/mixed` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let parsed: mime::Mime = content_type.parse().ok()?;
    if parsed.type_() != mime::MULTIPART || parsed.subtype().as_str() != "mixed" {
        return None;
    }
    parsed.get_param(mime::BOUNDARY).map(|b| b.as_str().to_owned())
}

/// The boundary of change set `n` inside a batch bounded by `boundary`. It does not start with
/// the batch boundary, so no change-set delimiter line can be read as a batch delimiter.
fn changeset_boundary(prefix: &str, n: usize, boundary: &str) -> String {
    format!("{prefix}_{n}_{boundary}")
}

const HTTP_PART_HEAD: &str = "Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n";

fn write_headers_and_body(out: &mut String, headers: &[(String, String)], body: &str) {
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("\r\n{body}\r\n"));
}

fn write_operation(out: &mut String, op: &Operation) {
    out.push_str(HTTP_PART_HEAD);
    out.push_str(&format!("{} {} HTTP/1.1\r\n", op.method, op.target));
    write_headers_and_body(out, &op.headers, &op.body);
}

fn write_response(out: &mut String, response: &Response) {
    let reason = StatusCode::from_u16(response.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    out.push_str(HTTP_PART_HEAD);
    out.push_str(&format!("HTTP/1.1 {} {reason}\r\n", response.status));
    write_headers_and_body(out, &response.headers, &response.body);
}

fn build<T>(boundary: &str, changeset_prefix: &str, parts: &[Part<T>], write: fn(&mut String, &T)) -> String {
    let mut out = String::new();
    for (n, part) in parts.iter().enumerate() {
        out.push_str(&format!("--{boundary}\r\n"));
        match part {
            Part::Single(message) => write(&mut out, message),
            Part::ChangeSet(messages) => {
                let inner = changeset_boundary(changeset_prefix, n, boundary);
                out.push_str(&format!("Content-Type: {}\r\n\r\n", content_type(&inner)));
                for message in messages {
                    out.push_str(&format!("--{inner}\r\n"));
                    write(&mut out, message);
                }
                out.push_str(&format!("--{inner}--\r\n"));
            }
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// The body of a `$batch` request (send it with [`content_type`]`(boundary)`).
pub fn build_request(boundary: &str, parts: &[Part<Operation>]) -> String {
    build(boundary, "changeset", parts, write_operation)
}

/// The body of a `$batch` answer (send it with [`content_type`]`(boundary)`).
pub fn build_response(boundary: &str, parts: &[Part<Response>]) -> String {
    build(boundary, "changesetresponse", parts, write_response)
}

/// One multipart part: its own headers and its content.
struct RawPart {
    headers: Headers,
    content: String,
}

/// The parts between `--boundary` lines, up to `--boundary--`. The line end before a delimiter
/// belongs to the delimiter (RFC 2046 §5.1.1), so a part's content keeps its own last line end
/// only when the sender wrote an extra one.
fn split_multipart(body: &str, boundary: &str) -> Result<Vec<RawPart>, BatchFormatError> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let marker = line.trim_end();
        if marker == delimiter || marker == format!("{delimiter}--") {
            if let Some(lines) = current.take() {
                parts.push(raw_part(&lines.join("\n"))?);
            }
            if marker != delimiter {
                break;
            }
            current = Some(Vec::new());
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    Ok(parts)
}

fn raw_part(text: &str) -> Result<RawPart, BatchFormatError> {
    let (headers, content) = parse_head(text)?;
    Ok(RawPart { headers, content: content.to_owned() })
}

/// Reads a header block (ended by a blank line, or by the end of `text`) and returns the rest.
fn parse_head(text: &str) -> Result<(Headers, &str), BatchFormatError> {
    if text.is_empty() || text.starts_with('\n') {
        return Ok((Vec::new(), text.strip_prefix('\n').unwrap_or(text)));
    }
    let (head, rest) = match text.split_once("\n\n") {
        Some((head, rest)) => (head, rest),
        None => (text, ""),
    };
    let block = format!("{head}\n\n");
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(block.as_bytes(), &mut storage) {
        Ok(httparse::Status::Complete((_, headers))) => Ok((lower_case(headers), rest)),
        Ok(httparse::Status::Partial) => Err(BatchFormatError::BadHeaders("the header block does not end".to_owned())),
        Err(err) => Err(BatchFormatError::BadHeaders(err.to_string())),
    }
}

fn lower_case(headers: &[httparse::Header<'_>]) -> Headers {
    headers.iter().map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).trim().to_owned())).collect()
}

fn start_of(text: &str) -> String {
    text.lines().next().unwrap_or_default().chars().take(60).collect()
}

/// An embedded message with its header block terminated, so a sender that wrote no blank line
/// after the last header (nothing follows) is still read.
fn terminated(text: &str) -> String {
    let text = text.trim_start_matches('\n');
    if text.contains("\n\n") {
        text.to_owned()
    } else {
        format!("{}\n\n", text.trim_end_matches('\n'))
    }
}

fn parse_operation(text: &str) -> Result<Operation, BatchFormatError> {
    let text = terminated(text);
    let bad = || BatchFormatError::BadMessage { what: "request line", start: start_of(&text) };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut storage);
    let Ok(httparse::Status::Complete(offset)) = request.parse(text.as_bytes()) else { return Err(bad()) };
    let method = request.method.and_then(|m| Method::from_bytes(m.as_bytes()).ok()).ok_or_else(bad)?;
    let target = request.path.ok_or_else(bad)?.to_owned();
    let headers = lower_case(request.headers);
    let body = text[offset..].trim_end_matches('\n').to_owned();
    Ok(Operation { method, target, headers, body })
}

fn parse_status_message(text: &str) -> Result<Response, BatchFormatError> {
    let text = terminated(text);
    let bad = || BatchFormatError::BadMessage { what: "status line", start: start_of(&text) };
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    let Ok(httparse::Status::Complete(offset)) = response.parse(text.as_bytes()) else { return Err(bad()) };
    let status = response.code.ok_or_else(bad)?;
    let headers = lower_case(response.headers);
    let body = text[offset..].trim_end_matches('\n').to_owned();
    Ok(Response { status, headers, body })
}

/// Reads a multipart `$batch` body into its parts, change sets kept together.
fn parse<T>(
    content_type: &str,
    body: &[u8],
    message: fn(&str) -> Result<T, BatchFormatError>,
) -> Result<Vec<Part<T>>, BatchFormatError> {
    let boundary = boundary_of(content_type).ok_or_else(|| BatchFormatError::NoBoundary(content_type.to_owned()))?;
    // Line ends are normalised to LF: bodies here are JSON, where they do not matter.
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut parts = Vec::new();
    for part in split_multipart(&text, &boundary)? {
        let part_type = header_in(&part.headers, "content-type").unwrap_or_default();
        match boundary_of(part_type) {
            Some(inner) => {
                let messages = split_multipart(&part.content, &inner)?
                    .iter()
                    .map(|change| message(&change.content))
                    .collect::<Result<Vec<_>, _>>()?;
                parts.push(Part::ChangeSet(messages));
            }
            None => parts.push(Part::Single(message(&part.content)?)),
        }
    }
    Ok(parts)
}

/// Reads a `$batch` request (what a simulator receives).
pub fn parse_request(content_type: &str, body: &[u8]) -> Result<Vec<Part<Operation>>, BatchFormatError> {
    parse(content_type, body, parse_operation)
}

/// Reads a `$batch` answer, keeping change sets together.
pub fn parse_response_parts(content_type: &str, body: &[u8]) -> Result<Vec<Part<Response>>, BatchFormatError> {
    parse(content_type, body, parse_status_message)
}

/// Reads a `$batch` answer: every embedded response in request order, change sets flattened (a
/// failed change set answers one error response in place of its changes).
pub fn parse_response(content_type: &str, body: &[u8]) -> Result<Vec<Response>, BatchFormatError> {
    Ok(parse_response_parts(content_type, body)?
        .into_iter()
        .flat_map(|part| match part {
            Part::Single(response) => vec![response],
            Part::ChangeSet(responses) => responses,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch() -> Operation {
        Operation {
            method: Method::PATCH,
            target: "A_PurchaseOrderItem(PurchaseOrder='4500000123',PurchaseOrderItem='10')".to_owned(),
            headers: vec![
                ("If-Match".to_owned(), "*".to_owned()),
                ("Content-Type".to_owned(), "application/json".to_owned()),
            ],
            body: r#"{"OrderQuantity":"1300"}"#.to_owned(),
        }
    }

    #[test]
    fn a_built_request_reads_back() {
        let mut read = Operation::new(Method::GET, "A_PurchaseOrder('4500000123')?$select=PurchaseOrder");
        read.headers.push(("Accept".to_owned(), "application/json".to_owned()));
        let parts = vec![Part::Single(read), Part::ChangeSet(vec![patch(), Operation::new(Method::DELETE, "X('1')")])];
        let body = build_request("batch_1", &parts);
        assert!(body.starts_with(
            "--batch_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET A_PurchaseOrder('4500000123')?$select=PurchaseOrder HTTP/1.1\r\nAccept: application/json\r\n\r\n\r\n--batch_1\r\n"
        ));
        assert!(body.contains("Content-Type: multipart/mixed; boundary=changeset_1_batch_1\r\n"));
        assert!(body.ends_with("--changeset_1_batch_1--\r\n--batch_1--\r\n"));
        let back = parse_request(&content_type("batch_1"), body.as_bytes()).unwrap();
        let Part::ChangeSet(changes) = &back[1] else { panic!("{back:?}") };
        assert_eq!(changes[0].header("if-match"), Some("*"));
        assert_eq!(changes[0].body, r#"{"OrderQuantity":"1300"}"#);
        assert_eq!(changes[1].method, Method::DELETE);
        let Part::Single(get) = &back[0] else { panic!("{back:?}") };
        assert_eq!(get.target, "A_PurchaseOrder('4500000123')?$select=PurchaseOrder");
        assert_eq!(get.body, "");
    }

    #[test]
    fn a_built_response_reads_back_flattened() {
        let created = Response {
            status: 204,
            headers: vec![("OData-EntityId".to_owned(), "http://x/accounts(9)".to_owned())],
            body: String::new(),
        };
        let failed = Response {
            status: 412,
            headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
            body: r#"{"error":{"code":"0x80060882"}}"#.to_owned(),
        };
        let body = build_response("r", &[Part::Single(created), Part::ChangeSet(vec![failed])]);
        assert!(body.contains("HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\r\n{"));
        let read = parse_response("multipart/mixed; boundary=\"r\"", body.as_bytes()).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].header("odata-entityid"), Some("http://x/accounts(9)"));
        assert_eq!(read[1].status, 412);
        assert_eq!(read[1].body, r#"{"error":{"code":"0x80060882"}}"#);
    }

    #[test]
    fn the_sap_fixture_exchange_reads_both_ways() {
        let text = fixtures::read_fixture("sap/batch_changeset_exchange.http");
        let (request, answer) = text.split_once("HTTP/1.1 202").unwrap();
        let request_body = request.split_once("\n\n").unwrap().1;
        let parts = parse_request(
            "multipart/mixed; boundary=batch_36522ad7-fc75-4b56-8c71-56071383e77b",
            request_body.as_bytes(),
        )
        .unwrap();
        assert_eq!(parts.len(), 2);
        let Part::ChangeSet(changes) = &parts[1] else { panic!("{parts:?}") };
        assert_eq!(changes[0].method, Method::PATCH);
        assert_eq!(changes[0].body, r#"{"OrderQuantity":"1300"}"#);
        let (head, body) = answer.split_once("\n\n").unwrap();
        let ct = head.lines().find_map(|l| l.strip_prefix("Content-Type: ")).unwrap();
        let responses = parse_response(ct, body.as_bytes()).unwrap();
        assert_eq!(responses.iter().map(|r| r.status).collect::<Vec<_>>(), vec![200, 204]);
        assert_eq!(responses[1].header("dataserviceversion"), Some("1.0"));
    }

    #[test]
    fn unreadable_bodies_are_errors() {
        assert_eq!(boundary_of("application/json"), None);
        assert!(matches!(parse_response("text/plain", b""), Err(BatchFormatError::NoBoundary(_))));
        let body = "--b\r\nContent-Type: application/http\r\n\r\nnot http at all\r\n--b--\r\n";
        assert!(matches!(
            parse_response("multipart/mixed; boundary=b", body.as_bytes()),
            Err(BatchFormatError::BadMessage { .. })
        ));
    }
}
