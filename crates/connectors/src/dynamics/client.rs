//! The OData transport shared by Dataverse and Business Central, and the Dataverse Web API
//! client (reference C2–C5, C7).
//!
//! Every call: client-side concurrency permit (service protection counts concurrent requests per
//! user, reference C7) → bearer token of the resource → the OData headers → on 401 invalidate the
//! token, fetch a new one and replay once → on 429 wait exactly `Retry-After` and retry (up to a
//! configured number of times; otherwise the caller gets `Throttled` with that exact wait).

use super::errors::{api_failure, parse_error, ODataError, CODE_VERSION_MISMATCH};
use super::{DATAVERSE_API_PATH, VENDOR};
use connect::http::{read_body_capped, redact_url, HttpClient};
use connect::odata::batch::{self as wire, BatchFormatError, Operation, Part};
use connect::retry_after::parse_retry_after;
use connect::token::TokenCache;
use connect::{Clock, DeliveryError};
use http::{HeaderMap, Method};
use model::{Currency, Decimal, Money, ParseError, ZonedTime};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use url::Url;

/// Pages can be large (5,000 Dataverse rows, 20,000 BC rows); anything past this is refused.
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// dingbridge's per-tenant concurrency for Dataverse (reference C7).
pub const DATAVERSE_CONCURRENCY: usize = 8;
/// Default and maximum `odata.maxpagesize` (reference C4).
pub const MAX_PAGE_SIZE: u32 = 5000;
/// Operations per `$batch` request (reference C5).
pub const BATCH_LIMIT: usize = 1000;

/// One HTTP answer, whatever its status.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self, what: &str) -> Result<Value, DeliveryError> {
        serde_json::from_slice(&self.body).map_err(|err| DeliveryError::Server {
            vendor: VENDOR,
            status: self.status,
            detail: format!("{what}: the answer is not JSON ({err})"),
        })
    }
}

/// Bearer-token OData transport for one resource (one token cache, one concurrency budget).
pub struct ODataTransport {
    http: HttpClient,
    tokens: Arc<TokenCache>,
    clock: Arc<dyn Clock>,
    permits: Arc<Semaphore>,
    throttle_retries: u32,
    calls: AtomicU64,
    throttled: AtomicU64,
}

impl std::fmt::Debug for ODataTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ODataTransport").field("calls", &self.call_count()).finish_non_exhaustive()
    }
}

impl ODataTransport {
    /// `concurrency`: requests in flight at most (Dataverse 8, BC 4 per reference C7).
    pub fn new(http: HttpClient, tokens: Arc<TokenCache>, clock: Arc<dyn Clock>, concurrency: usize) -> Self {
        Self {
            http,
            tokens,
            clock,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            throttle_retries: 0,
            calls: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// Retry a 429 this many times, each after exactly its `Retry-After`.
    pub fn with_throttle_retries(mut self, retries: u32) -> Self {
        self.throttle_retries = retries;
        self
    }

    /// HTTP requests sent (replays and retries included).
    pub fn call_count(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// 429 answers received.
    pub fn throttled_count(&self) -> u64 {
        self.throttled.load(Ordering::SeqCst)
    }

    /// The parsed `Retry-After` of an answer.
    pub fn retry_after(&self, answer: &Answer) -> Option<Duration> {
        answer.header("retry-after").and_then(|v| parse_retry_after(v, self.clock.now()))
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<&(String, Vec<u8>)>,
    ) -> Result<(Answer, secrecy::SecretString), DeliveryError> {
        let token = self.tokens.get().await?;
        let _permit = self.permits.acquire().await.map_err(|_| DeliveryError::Transport {
            endpoint: redact_url(url),
            reason: "the client's concurrency limiter was closed".to_owned(),
        })?;
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token.expose_secret())
            .header(http::header::ACCEPT, "application/json")
            .header("OData-MaxVersion", "4.0")
            .header("OData-Version", "4.0");
        if *method == Method::GET && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("if-none-match")) {
            // Defeats cached expanded collections (reference C1).
            request = request.header(http::header::IF_NONE_MATCH, "null");
        }
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        if let Some((content_type, bytes)) = body {
            request = request.header(http::header::CONTENT_TYPE, content_type.as_str()).body(bytes.clone());
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let resp = self.http.send(request).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        tracing::debug!(%method, url = %redact_url(url), status, "Dynamics answered.");
        let body = read_body_capped(resp, MAX_ANSWER_BYTES).await?.to_vec();
        Ok((Answer { status, headers, body }, token))
    }

    /// One exchange with the 401 replay and the 429 waits. Returns any answer; the caller
    /// decides what its status means.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<(String, Vec<u8>)>,
    ) -> Result<Answer, DeliveryError> {
        let mut waits = 0;
        let mut replayed = false;
        loop {
            let (answer, token) = self.send_once(&method, url, headers, body.as_ref()).await?;
            if answer.status == 401 && !replayed {
                tracing::info!("Dynamics refused the token; fetching a new one and replaying once.");
                replayed = true;
                self.tokens.invalidate(&token).await;
                continue;
            }
            if answer.status == 429 {
                self.throttled.fetch_add(1, Ordering::SeqCst);
                if waits < self.throttle_retries {
                    if let Some(wait) = self.retry_after(&answer) {
                        waits += 1;
                        tracing::info!(
                            wait_s = wait.as_secs_f64(),
                            "Dynamics service protection; waiting Retry-After."
                        );
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            return Ok(answer);
        }
    }

    /// `send` with a JSON body (or none), turning any non-2xx into the classified error.
    pub async fn call_json(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<Answer, DeliveryError> {
        let body = body.map(|b| ("application/json".to_owned(), b.to_string().into_bytes()));
        let answer = self.send(method, url, headers, body).await?;
        if !(200..300).contains(&answer.status) {
            return Err(api_failure(answer.status, self.retry_after(&answer), &answer.body, what));
        }
        Ok(answer)
    }
}

/// Values of the `Prefer` header (reference C3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefer {
    pub max_page_size: Option<u32>,
    pub annotations: bool,
    pub track_changes: bool,
    pub return_representation: bool,
    pub continue_on_error: bool,
}

impl Prefer {
    pub fn page(size: u32) -> Self {
        Prefer { max_page_size: Some(size.clamp(1, MAX_PAGE_SIZE)), ..Prefer::default() }
    }

    /// The header value, or `None` when nothing is preferred.
    pub fn header(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(n) = self.max_page_size {
            parts.push(format!("odata.maxpagesize={n}"));
        }
        if self.annotations {
            parts.push("odata.include-annotations=\"*\"".to_owned());
        }
        if self.track_changes {
            parts.push("odata.track-changes".to_owned());
        }
        if self.return_representation {
            parts.push("return=representation".to_owned());
        }
        if self.continue_on_error {
            parts.push("odata.continue-on-error".to_owned());
        }
        (!parts.is_empty()).then(|| parts.join(","))
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        self.header().map(|v| vec![("Prefer", v)]).unwrap_or_default()
    }
}

/// One page of a collection.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub rows: Vec<Value>,
    pub next_link: Option<String>,
    pub delta_link: Option<String>,
}

impl Page {
    /// Reads `{"value": [...], "@odata.nextLink"?, "@odata.deltaLink"?}`.
    pub fn from_json(value: &Value) -> Result<Page, ParseError> {
        let rows = value
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| ParseError::new("value", &truncate(value), "is not an OData collection"))?
            .clone();
        let link = |k: &str| value.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Page { rows, next_link: link("@odata.nextLink"), delta_link: link("@odata.deltaLink") })
    }
}

fn truncate(value: &Value) -> String {
    value.to_string().chars().take(120).collect()
}

/// `If-Match` on a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// Only if the record is still at this `@odata.etag`.
    Etag(String),
    /// Only if the record exists (prevents PATCH's default upsert).
    Exists,
}

impl IfMatch {
    fn value(&self) -> String {
        match self {
            IfMatch::Etag(tag) => tag.clone(),
            IfMatch::Exists => "*".to_owned(),
        }
    }
}

/// A failed conditional write: either a concurrency conflict the caller must resolve by
/// re-reading, or an ordinary delivery error.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{what}: the record changed since it was read (HTTP 412 {code}: {message}); re-read it and decide again")]
    Conflict { what: String, code: String, message: String },
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

impl From<WriteError> for DeliveryError {
    fn from(err: WriteError) -> DeliveryError {
        match err {
            WriteError::Conflict { .. } => DeliveryError::Rejected { vendor: VENDOR, detail: err.to_string() },
            WriteError::Delivery(inner) => inner,
        }
    }
}

/// A decimal from a JSON number. serde_json holds it as f64; its shortest round-trip text is
/// the sent text for Money/Decimal values (≤ 15 significant digits, reference C3: 4 decimals).
pub fn decimal_of(field: &str, value: &Value) -> Result<Option<Decimal>, ParseError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => model::parse_decimal(field, &n.to_string()).map(Some),
        other => Err(ParseError::new(field, &truncate(other), "is not a JSON number")),
    }
}

fn text_of(row: &Value, field: &str) -> Option<String> {
    row.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn required_text(row: &Value, field: &str) -> Result<String, ParseError> {
    text_of(row, field).ok_or_else(|| ParseError::new(field, &truncate(row), "is missing"))
}

fn int_of(row: &Value, field: &str) -> Option<i64> {
    row.get(field).and_then(Value::as_i64)
}

fn decimal_field(row: &Value, field: &str) -> Result<Option<Decimal>, ParseError> {
    decimal_of(field, row.get(field).unwrap_or(&Value::Null))
}

/// A Dataverse `salesorder` row.
#[derive(Debug, Clone, PartialEq)]
pub struct SalesOrder {
    pub id: String,
    pub etag: Option<String>,
    pub order_number: Option<String>,
    pub name: Option<String>,
    /// In the order's transaction currency; see [`DataverseClient::currency_code`].
    pub total_amount: Option<Decimal>,
    pub currency_id: Option<String>,
    pub customer_id: Option<String>,
    /// `account` or `contact`, when annotations were requested.
    pub customer_type: Option<String>,
    /// 0 Active, 1 Submitted, 2 Canceled, 3 Fulfilled, 4 Invoiced.
    pub state_code: Option<i64>,
    pub status_code: Option<i64>,
    pub modified_on: Option<ZonedTime>,
}

impl SalesOrder {
    pub const SET: &'static str = "salesorders";
    pub const SELECT: &'static str = "salesorderid,ordernumber,name,totalamount,_transactioncurrencyid_value,_customerid_value,statecode,statuscode,modifiedon";

    pub fn from_row(row: &Value) -> Result<SalesOrder, ParseError> {
        Ok(SalesOrder {
            id: required_text(row, "salesorderid")?,
            etag: text_of(row, "@odata.etag"),
            order_number: text_of(row, "ordernumber"),
            name: text_of(row, "name"),
            total_amount: decimal_field(row, "totalamount")?,
            currency_id: text_of(row, "_transactioncurrencyid_value"),
            customer_id: text_of(row, "_customerid_value"),
            customer_type: text_of(row, "_customerid_value@Microsoft.Dynamics.CRM.lookuplogicalname"),
            state_code: int_of(row, "statecode"),
            status_code: int_of(row, "statuscode"),
            modified_on: text_of(row, "modifiedon").map(|t| ZonedTime::parse("modifiedon", &t)).transpose()?,
        })
    }

    /// The total as money once the transaction currency's ISO code is known.
    pub fn total(&self, currency_code: &str) -> Result<Option<Money>, ParseError> {
        let currency = Currency::parse("transactioncurrency", currency_code)?;
        self.total_amount.map(|a| Money::new("totalamount", a, currency)).transpose()
    }
}

/// A Dataverse `opportunity` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Opportunity {
    pub id: String,
    pub etag: Option<String>,
    pub name: Option<String>,
    pub estimated_value: Option<Decimal>,
    pub parent_account_id: Option<String>,
    pub step_name: Option<String>,
    /// 0 Open, 1 Won, 2 Lost.
    pub state_code: Option<i64>,
    pub close_probability: Option<i64>,
}

impl Opportunity {
    pub const SET: &'static str = "opportunities";
    pub const SELECT: &'static str =
        "opportunityid,name,estimatedvalue,_parentaccountid_value,stepname,statecode,closeprobability";

    pub fn from_row(row: &Value) -> Result<Opportunity, ParseError> {
        Ok(Opportunity {
            id: required_text(row, "opportunityid")?,
            etag: text_of(row, "@odata.etag"),
            name: text_of(row, "name"),
            estimated_value: decimal_field(row, "estimatedvalue")?,
            parent_account_id: text_of(row, "_parentaccountid_value"),
            step_name: text_of(row, "stepname"),
            state_code: int_of(row, "statecode"),
            close_probability: int_of(row, "closeprobability"),
        })
    }
}

/// A Dataverse `account` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    pub etag: Option<String>,
    pub name: Option<String>,
    pub account_number: Option<String>,
    pub telephone1: Option<String>,
    pub address1_city: Option<String>,
}

impl Account {
    pub const SET: &'static str = "accounts";
    pub const SELECT: &'static str = "accountid,name,accountnumber,telephone1,address1_city";

    pub fn from_row(row: &Value) -> Result<Account, ParseError> {
        Ok(Account {
            id: required_text(row, "accountid")?,
            etag: text_of(row, "@odata.etag"),
            name: text_of(row, "name"),
            account_number: text_of(row, "accountnumber"),
            telephone1: text_of(row, "telephone1"),
            address1_city: text_of(row, "address1_city"),
        })
    }
}

/// A Dataverse `product` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub id: String,
    pub etag: Option<String>,
    pub product_number: Option<String>,
    pub name: Option<String>,
    pub default_uom_id: Option<String>,
    /// In the product's default unit (a Dataverse `uom` record, not an ISO unit).
    pub quantity_on_hand: Option<Decimal>,
    pub state_code: Option<i64>,
}

impl Product {
    pub const SET: &'static str = "products";
    pub const SELECT: &'static str = "productid,productnumber,name,_defaultuomid_value,quantityonhand,statecode";

    pub fn from_row(row: &Value) -> Result<Product, ParseError> {
        Ok(Product {
            id: required_text(row, "productid")?,
            etag: text_of(row, "@odata.etag"),
            product_number: text_of(row, "productnumber"),
            name: text_of(row, "name"),
            default_uom_id: text_of(row, "_defaultuomid_value"),
            quantity_on_hand: decimal_field(row, "quantityonhand")?,
            state_code: int_of(row, "statecode"),
        })
    }
}

fn bad_row(set: &str, err: ParseError) -> DeliveryError {
    DeliveryError::Server { vendor: VENDOR, status: 200, detail: format!("{set}: unexpected row ({err})") }
}

/// One operation of a `$batch`; `path` is relative to the API root (`accounts`,
/// `salesorders(<guid>)`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOp {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub if_match: Option<IfMatch>,
}

/// The answer to one batch operation, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub status: u16,
    /// `OData-EntityId` of a create or update.
    pub entity_id: Option<String>,
    pub error: Option<ODataError>,
}

/// The GUID inside `…/set(<guid>)`.
pub fn id_from_entity_url(url: &str) -> Option<String> {
    let inner = url.rsplit_once('(')?.1.strip_suffix(')')?;
    Some(inner.to_owned())
}

/// The Dataverse Web API client of one environment.
pub struct DataverseClient {
    transport: ODataTransport,
    org: Url,
}

impl std::fmt::Debug for DataverseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataverseClient").field("org", &self.org.as_str()).finish_non_exhaustive()
    }
}

impl DataverseClient {
    /// `org_url` = `https://{org}.crm5.dynamics.com` (also the token resource).
    pub fn new(transport: ODataTransport, org_url: &str) -> Result<Self, DeliveryError> {
        let org = Url::parse(org_url.trim_end_matches('/')).map_err(|err| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("the Dataverse URL `{org_url}` is not a URL ({err})"),
        })?;
        Ok(Self { transport, org })
    }

    pub fn transport(&self) -> &ODataTransport {
        &self.transport
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, DeliveryError> {
        let base = self.org.as_str().trim_end_matches('/');
        let mut url = Url::parse(&format!("{base}{DATAVERSE_API_PATH}/{path}")).map_err(|err| {
            DeliveryError::Rejected { vendor: VENDOR, detail: format!("cannot build a URL for `{path}` ({err})") }
        })?;
        if !query.is_empty() {
            // OData wants `$` and `,` literal and spaces as %20.
            let text: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, QUERY_VALUE)))
                .collect();
            url.set_query(Some(&text.join("&")));
        }
        Ok(url)
    }

    /// A link the server handed out (`@odata.nextLink`/`@odata.deltaLink`), used verbatim, but only
    /// towards our own environment so the bearer token never goes elsewhere.
    fn link(&self, link: &str) -> Result<Url, DeliveryError> {
        let url = Url::parse(link).map_err(|err| DeliveryError::Server {
            vendor: VENDOR,
            status: 200,
            detail: format!("the server's paging link is not a URL ({err})"),
        })?;
        if url.origin() != self.org.origin() {
            return Err(DeliveryError::Rejected {
                vendor: VENDOR,
                detail: format!("a paging link points at `{}`, not at the configured environment", redact_url(&url)),
            });
        }
        Ok(url)
    }

    /// The first page of `set` with `query` (`$select`, `$filter`, …).
    pub async fn query(&self, set: &str, query: &[(&str, &str)], prefer: &Prefer) -> Result<Page, DeliveryError> {
        let url = self.url(set, query)?;
        self.page(&url, prefer, &format!("GET {set}")).await
    }

    /// The page behind a `@odata.nextLink` or `@odata.deltaLink`; send the same `Prefer` again.
    pub async fn follow(&self, link: &str, prefer: &Prefer) -> Result<Page, DeliveryError> {
        let url = self.link(link)?;
        self.page(&url, prefer, "GET next page").await
    }

    async fn page(&self, url: &Url, prefer: &Prefer, what: &str) -> Result<Page, DeliveryError> {
        let answer = self.transport.call_json(Method::GET, url, &prefer.headers(), None, what).await?;
        Page::from_json(&answer.json(what)?).map_err(|err| bad_row(what, err))
    }

    /// Every row, following `@odata.nextLink` to the end.
    pub async fn query_all(
        &self,
        set: &str,
        query: &[(&str, &str)],
        prefer: &Prefer,
    ) -> Result<Vec<Value>, DeliveryError> {
        let mut page = self.query(set, query, prefer).await?;
        let mut rows = std::mem::take(&mut page.rows);
        while let Some(next) = page.next_link.take() {
            page = self.follow(&next, prefer).await?;
            rows.append(&mut page.rows);
        }
        Ok(rows)
    }

    /// One record by id; the row carries `@odata.etag`.
    pub async fn get(&self, set: &str, id: &str, select: &str) -> Result<Value, DeliveryError> {
        let url = self.url(&format!("{set}({id})"), &[("$select", select)])?;
        let what = format!("GET {set}({id})");
        self.transport.call_json(Method::GET, &url, &[], None, &what).await?.json(&what)
    }

    /// Creates a record; returns its id from `OData-EntityId` (204) or the body (201).
    pub async fn create(&self, set: &str, body: &Value) -> Result<String, DeliveryError> {
        let url = self.url(set, &[])?;
        let what = format!("POST {set}");
        let answer = self.transport.call_json(Method::POST, &url, &[], Some(body), &what).await?;
        answer.header("odata-entityid").and_then(id_from_entity_url).ok_or_else(|| DeliveryError::Server {
            vendor: VENDOR,
            status: answer.status,
            detail: format!("{what}: the answer has no OData-EntityId"),
        })
    }

    /// Updates a record under `If-Match`; a stale etag is [`WriteError::Conflict`].
    pub async fn update(&self, set: &str, id: &str, body: &Value, if_match: &IfMatch) -> Result<(), WriteError> {
        let url = self.url(&format!("{set}({id})"), &[])?;
        let what = format!("PATCH {set}({id})");
        let body = Some(("application/json".to_owned(), body.to_string().into_bytes()));
        let answer = self.transport.send(Method::PATCH, &url, &[("If-Match", if_match.value())], body).await?;
        if answer.status == 412 {
            let error = parse_error(&answer.body);
            return Err(WriteError::Conflict { what, code: error.code, message: error.message });
        }
        if !(200..300).contains(&answer.status) {
            return Err(api_failure(answer.status, self.transport.retry_after(&answer), &answer.body, &what).into());
        }
        Ok(())
    }

    /// Deletes a record.
    pub async fn delete(&self, set: &str, id: &str) -> Result<(), DeliveryError> {
        let url = self.url(&format!("{set}({id})"), &[])?;
        self.transport.call_json(Method::DELETE, &url, &[], None, &format!("DELETE {set}({id})")).await?;
        Ok(())
    }

    /// Runs writes as `$batch` requests of at most [`BATCH_LIMIT`] operations each, with
    /// `odata.continue-on-error`, so one bad record does not stop the rest. Not atomic: change
    /// sets are not used.
    pub async fn batch(&self, ops: &[BatchOp]) -> Result<Vec<BatchItem>, DeliveryError> {
        let mut results = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(BATCH_LIMIT) {
            let boundary = format!("batch_{}", uuid::Uuid::new_v4());
            let body = batch_body(&boundary, chunk);
            let url = self.url("$batch", &[])?;
            let prefer = Prefer { continue_on_error: true, ..Prefer::default() };
            let answer = self
                .transport
                .send(Method::POST, &url, &prefer.headers(), Some((wire::content_type(&boundary), body)))
                .await?;
            if !(200..300).contains(&answer.status) {
                return Err(api_failure(
                    answer.status,
                    self.transport.retry_after(&answer),
                    &answer.body,
                    "POST $batch",
                ));
            }
            let content_type = answer.header("content-type").unwrap_or_default().to_owned();
            let mut items = parse_batch_response(&content_type, &answer.body).map_err(|err| DeliveryError::Server {
                vendor: VENDOR,
                status: answer.status,
                detail: format!("POST $batch: {err}"),
            })?;
            if items.len() != chunk.len() {
                return Err(DeliveryError::Server {
                    vendor: VENDOR,
                    status: answer.status,
                    detail: format!("POST $batch: {} answers for {} operations", items.len(), chunk.len()),
                });
            }
            results.append(&mut items);
        }
        Ok(results)
    }

    /// ISO code of a `transactioncurrency` (for [`SalesOrder::total`]).
    pub async fn currency_code(&self, currency_id: &str) -> Result<String, DeliveryError> {
        let row = self.get("transactioncurrencies", currency_id, "isocurrencycode").await?;
        text_of(&row, "isocurrencycode").ok_or_else(|| DeliveryError::Server {
            vendor: VENDOR,
            status: 200,
            detail: format!("transactioncurrencies({currency_id}) has no isocurrencycode"),
        })
    }

    /// Sales orders modified at or after `since` (the polling fallback of reference C8), oldest first.
    pub async fn sales_orders_since(&self, since: ZonedTime, page_size: u32) -> Result<Vec<SalesOrder>, DeliveryError> {
        let filter = format!("modifiedon ge {}", since.timestamp());
        let rows = self
            .query_all(
                SalesOrder::SET,
                &[("$select", SalesOrder::SELECT), ("$filter", &filter), ("$orderby", "modifiedon asc")],
                &Prefer { annotations: true, ..Prefer::page(page_size) },
            )
            .await?;
        rows.iter().map(|r| SalesOrder::from_row(r).map_err(|e| bad_row(SalesOrder::SET, e))).collect()
    }

    pub async fn opportunities(&self, page_size: u32) -> Result<Vec<Opportunity>, DeliveryError> {
        let rows =
            self.query_all(Opportunity::SET, &[("$select", Opportunity::SELECT)], &Prefer::page(page_size)).await?;
        rows.iter().map(|r| Opportunity::from_row(r).map_err(|e| bad_row(Opportunity::SET, e))).collect()
    }

    pub async fn accounts(&self, page_size: u32) -> Result<Vec<Account>, DeliveryError> {
        let rows = self.query_all(Account::SET, &[("$select", Account::SELECT)], &Prefer::page(page_size)).await?;
        rows.iter().map(|r| Account::from_row(r).map_err(|e| bad_row(Account::SET, e))).collect()
    }

    pub async fn products(&self, page_size: u32) -> Result<Vec<Product>, DeliveryError> {
        let rows = self.query_all(Product::SET, &[("$select", Product::SELECT)], &Prefer::page(page_size)).await?;
        rows.iter().map(|r| Product::from_row(r).map_err(|e| bad_row(Product::SET, e))).collect()
    }
}

/// Query values: unreserved characters plus the OData punctuation kept literal.
pub(crate) const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'$')
    .remove(b',')
    .remove(b':')
    .remove(b'(')
    .remove(b')')
    .remove(b'\'');

/// The multipart body of one batch: every operation a top-level part (no change sets, so one
/// failure does not roll back the rest), targets as absolute Web API paths.
pub fn batch_body(boundary: &str, ops: &[BatchOp]) -> Vec<u8> {
    let parts: Vec<Part<Operation>> = ops
        .iter()
        .map(|op| {
            let mut operation = Operation::new(op.method.clone(), format!("{DATAVERSE_API_PATH}/{}", op.path));
            if let Some(if_match) = &op.if_match {
                operation.headers.push(("If-Match".to_owned(), if_match.value()));
            }
            if let Some(body) = &op.body {
                operation.headers.push(("Content-Type".to_owned(), "application/json; type=entry".to_owned()));
                operation.body = body.to_string();
            }
            Part::Single(operation)
        })
        .collect();
    wire::build_request(boundary, &parts).into_bytes()
}

/// Reads the `application/http` answers of a batch response.
pub fn parse_batch_response(content_type: &str, body: &[u8]) -> Result<Vec<BatchItem>, BatchFormatError> {
    Ok(wire::parse_response(content_type, body)?
        .into_iter()
        .map(|answer| BatchItem {
            status: answer.status,
            entity_id: answer.header("odata-entityid").map(str::to_owned),
            error: (answer.status >= 400).then(|| parse_error(answer.body.as_bytes())),
        })
        .collect())
}

/// True when an error body is Dataverse's stale-`If-Match` answer.
pub fn is_version_mismatch(body: &[u8]) -> bool {
    parse_error(body).code == CODE_VERSION_MISMATCH
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fixture_reads_with_next_link_and_typed_orders() {
        let json = fixtures::read_json("dynamics/dataverse_salesorders_page_nextlink.json");
        let page = Page::from_json(&json).unwrap();
        assert_eq!(page.rows.len(), 2);
        assert!(page.next_link.as_deref().unwrap().contains("$skiptoken=%3Ccookie"));
        let first = SalesOrder::from_row(&page.rows[0]).unwrap();
        assert_eq!(first.id, "3f9a1c2e-7b2d-ee11-8179-000d3a0a1c01");
        assert_eq!(first.etag.as_deref(), Some("W/\"5561023\""));
        assert_eq!(first.total_amount, Some("20712.0".parse().unwrap()));
        assert_eq!(first.customer_type.as_deref(), Some("account"));
        assert_eq!(first.modified_on.unwrap().timestamp().to_string(), "2024-03-15T02:31:07Z");
        assert_eq!(first.total("HKD").unwrap().unwrap().amount_string(), "20712.00");
        let second = SalesOrder::from_row(&page.rows[1]).unwrap();
        assert_eq!(second.total_amount, Some("8800.5".parse().unwrap()));
        assert_eq!(second.status_code, Some(3));
    }

    #[test]
    fn prefer_header_combines_values_with_commas() {
        let prefer = Prefer { annotations: true, ..Prefer::page(2) };
        assert_eq!(prefer.header().unwrap(), "odata.maxpagesize=2,odata.include-annotations=\"*\"");
        assert_eq!(Prefer::default().header(), None);
        assert_eq!(Prefer::page(9000).max_page_size, Some(MAX_PAGE_SIZE));
    }

    #[test]
    fn entity_id_is_read_from_the_header_url() {
        assert_eq!(
            id_from_entity_url("https://dingbridge-demo.crm5.dynamics.com/api/data/v9.2/accounts(a1b2c3d4-0000-ee11-8179-000d3a0a1c22)")
                .as_deref(),
            Some("a1b2c3d4-0000-ee11-8179-000d3a0a1c22")
        );
    }

    #[test]
    fn batch_body_and_answer_round_trip() {
        let ops = vec![
            BatchOp {
                method: Method::POST,
                path: "accounts".into(),
                body: Some(serde_json::json!({"name":"A"})),
                if_match: None,
            },
            BatchOp {
                method: Method::PATCH,
                path: "accounts(1)".into(),
                body: Some(serde_json::json!({})),
                if_match: Some(IfMatch::Exists),
            },
        ];
        let body = String::from_utf8(batch_body("b1", &ops)).unwrap();
        assert!(body.contains("\r\n\r\nPATCH /api/data/v9.2/accounts(1) HTTP/1.1\r\nIf-Match: *\r\n"));
        let parts = wire::parse_request("multipart/mixed; boundary=b1", body.as_bytes()).unwrap();
        assert_eq!(parts.len(), 2);
        assert!(matches!(&parts[1], Part::Single(op) if op.target == "/api/data/v9.2/accounts(1)"));
        let answer = "--r\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\nOData-EntityId: http://x/api/data/v9.2/accounts(9)\r\n\r\n\r\n--r\r\nContent-Type: application/http\r\n\r\nHTTP/1.1 412 Precondition Failed\r\nContent-Type: application/json\r\n\r\n{\"error\":{\"code\":\"0x80060882\",\"message\":\"m\"}}\r\n--r--\r\n";
        let items = parse_batch_response("multipart/mixed; boundary=r", answer.as_bytes()).unwrap();
        assert_eq!(items[0].status, 204);
        assert_eq!(items[0].entity_id.as_deref(), Some("http://x/api/data/v9.2/accounts(9)"));
        assert_eq!(items[1].error.as_ref().unwrap().code, CODE_VERSION_MISMATCH);
    }
}
