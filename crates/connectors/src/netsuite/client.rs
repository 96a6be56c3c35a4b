//! The NetSuite REST client (reference B2-B5, B7): record GET / create / PATCH and SuiteQL with
//! offset paging, every request signed (TBA over the exact final URL) or bearer-authorized
//! (OAuth 2.0), every request holding a permit of the account's concurrency semaphore.
//!
//! NetSuite's concurrency limit is account-wide and shared with every other integration, so the
//! semaphore should be shared by all clients of one account ([`NetSuiteClient::with_semaphore`])
//! and sized well below the account limit (reference: 2-3). Requests beyond NetSuite's limit
//! answer 429 `CONCURRENCY_LIMIT_EXCEEDED`, which becomes `DeliveryError::Throttled`.

use super::auth::{encode, Authorizer};
use super::errors::{api_failure, parse_error};
use super::VENDOR;
use connect::http::{read_body_capped, redact_url, HttpClient};
use connect::{Clock, DeliveryError};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Semaphore;
use url::Url;

/// Default client-side concurrency (reference B7: leave room for other integrations).
pub const DEFAULT_CONCURRENCY: usize = 2;
/// SuiteQL returns at most this many rows per page.
pub const SUITEQL_PAGE_MAX: usize = 1000;
/// Offset paging stops at this many rows; beyond it page by key (`WHERE id > :last ORDER BY id`).
pub const SUITEQL_OFFSET_MAX: usize = 100_000;
/// Record and query answers can be large; anything past this is refused, not buffered.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// The record types dingbridge reads and writes (reference B2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    PurchaseRequisition,
    PurchaseOrder,
    SalesOrder,
    InventoryItem,
    ItemFulfillment,
}

impl RecordType {
    pub const ALL: [RecordType; 5] = [
        RecordType::PurchaseRequisition,
        RecordType::PurchaseOrder,
        RecordType::SalesOrder,
        RecordType::InventoryItem,
        RecordType::ItemFulfillment,
    ];

    /// The camelCase name used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::PurchaseRequisition => "purchaseRequisition",
            RecordType::PurchaseOrder => "purchaseOrder",
            RecordType::SalesOrder => "salesOrder",
            RecordType::InventoryItem => "inventoryItem",
            RecordType::ItemFulfillment => "itemFulfillment",
        }
    }

    /// Record type names are case-insensitive in practice (`purchaseorder` == `purchaseOrder`).
    pub fn parse(name: &str) -> Option<RecordType> {
        RecordType::ALL.into_iter().find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    /// The SuiteQL `transaction.type` code; `None` for items, which live in table `item`.
    /// `PurchReq` is UNVERIFIED (reference B4).
    pub fn transaction_type(self) -> Option<&'static str> {
        match self {
            RecordType::PurchaseRequisition => Some("PurchReq"),
            RecordType::PurchaseOrder => Some("PurchOrd"),
            RecordType::SalesOrder => Some("SalesOrd"),
            RecordType::ItemFulfillment => Some("ItemShip"),
            RecordType::InventoryItem => None,
        }
    }
}

/// One SuiteQL page.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuiteQlPage {
    #[serde(default)]
    pub count: usize,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub items: Vec<Value>,
    #[serde(default)]
    pub offset: usize,
    #[serde(default)]
    pub total_results: Option<usize>,
}

/// Raw answer of one request.
struct Answer {
    status: u16,
    location: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

/// The REST client of one NetSuite account.
pub struct NetSuiteClient {
    http: HttpClient,
    /// `…/services/rest`, no trailing slash.
    base: String,
    auth: Authorizer,
    permits: Arc<Semaphore>,
    clock: Arc<dyn Clock>,
    calls: AtomicU64,
}

impl std::fmt::Debug for NetSuiteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetSuiteClient").field("base", &self.base).finish_non_exhaustive()
    }
}

/// `k=v&…` with RFC 3986 encoding, so the URL sent is exactly the URL signed (a `+` for space
/// would be decoded differently by different OAuth implementations).
fn query_string(query: &[(&str, &str)]) -> String {
    query.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

impl NetSuiteClient {
    /// `rest_base` is `https://{acct}.suitetalk.api.netsuite.com/services/rest` (see
    /// `AccountId::rest_base`); `concurrency` the client-side permit count (≥ 1).
    pub fn new(
        http: HttpClient,
        rest_base: &str,
        auth: Authorizer,
        concurrency: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeliveryError> {
        Url::parse(rest_base).map_err(|e| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("the NetSuite REST base `{rest_base}` is not a URL ({e})"),
        })?;
        Ok(Self {
            http,
            base: rest_base.trim_end_matches('/').to_owned(),
            auth,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            clock,
            calls: AtomicU64::new(0),
        })
    }

    /// Share one semaphore between all clients of the same account.
    pub fn with_semaphore(mut self, permits: Arc<Semaphore>) -> Self {
        self.permits = permits;
        self
    }

    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// HTTP requests sent (replays included).
    pub fn call_count(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, DeliveryError> {
        let mut url = Url::parse(&format!("{}{path}", self.base)).map_err(|e| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("cannot build a URL from `{}` and `{path}` ({e})", self.base),
        })?;
        if !query.is_empty() {
            url.set_query(Some(&query_string(query)));
        }
        Ok(url)
    }

    async fn send_once(
        &self,
        method: &http::Method,
        url: &Url,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(Answer, Option<secrecy::SecretString>), DeliveryError> {
        let mut request =
            self.http.request(method.clone(), url.clone()).header(http::header::ACCEPT, "application/json");
        let token = match &self.auth {
            Authorizer::Tba(signer) => {
                request = request.header(http::header::AUTHORIZATION, signer.authorize(method.as_str(), url));
                None
            }
            Authorizer::OAuth2(tokens) => {
                let token = tokens.get().await?;
                request = request.bearer_auth(token.expose_secret());
                Some(token)
            }
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let resp = self.http.send(request).await?;
        let status = resp.status().as_u16();
        let header = |name: http::HeaderName| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let location = header(http::header::LOCATION);
        let retry_after = header(http::header::RETRY_AFTER);
        tracing::debug!(%method, url = %redact_url(url), status, "NetSuite answered.");
        let body = read_body_capped(resp, MAX_ANSWER_BYTES).await?.to_vec();
        Ok((Answer { status, location, retry_after, body }, token))
    }

    /// One request under a concurrency permit; with OAuth 2.0 a 401 invalidates the token and
    /// replays once (TBA has nothing to refresh). Any status is returned.
    async fn exchange_raw(
        &self,
        method: &http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, DeliveryError> {
        let url = self.url(path, query)?;
        let _permit = self.permits.acquire().await.map_err(|_| DeliveryError::Transport {
            endpoint: redact_url(&url),
            reason: "the NetSuite concurrency semaphore was closed".to_owned(),
        })?;
        let (answer, token) = self.send_once(method, &url, body, headers).await?;
        if let (401, Authorizer::OAuth2(tokens), Some(token)) = (answer.status, &self.auth, token) {
            tracing::info!("NetSuite rejected the access token; fetching a new one and replaying once.");
            tokens.invalidate(&token).await;
            return Ok(self.send_once(method, &url, body, headers).await?.0);
        }
        Ok(answer)
    }

    /// [`NetSuiteClient::exchange_raw`], with non-2xx answers turned into errors.
    async fn exchange(
        &self,
        method: http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, DeliveryError> {
        let answer = self.exchange_raw(&method, path, query, body, headers).await?;
        self.check(answer, &format!("{method} {path}"))
    }

    fn check(&self, answer: Answer, what: &str) -> Result<Answer, DeliveryError> {
        if !(200..300).contains(&answer.status) {
            return Err(api_failure(
                answer.status,
                &answer.body,
                answer.retry_after.as_deref(),
                self.clock.now(),
                what,
            ));
        }
        Ok(answer)
    }

    fn json(answer: &Answer, what: &str) -> Result<Value, DeliveryError> {
        serde_json::from_slice(&answer.body).map_err(|e| DeliveryError::Server {
            vendor: VENDOR,
            status: answer.status,
            detail: format!("{what}: the answer is not JSON ({e})"),
        })
    }

    /// `GET record/v1/{type}/{id}`; with `expand` the sublists (`item`, `expense`, …) are inlined
    /// (`?expandSubResources=true`), otherwise they are only links.
    pub async fn get_record(&self, record: RecordType, id: &str, expand: bool) -> Result<Value, DeliveryError> {
        let path = format!("/record/v1/{}/{}", record.as_str(), encode(id));
        let query: &[(&str, &str)] = if expand { &[("expandSubResources", "true")] } else { &[] };
        let answer = self.exchange(http::Method::GET, &path, query, None, &[]).await?;
        Self::json(&answer, &path)
    }

    /// Like [`NetSuiteClient::get_record`], `None` when the id does not exist (404
    /// `NONEXISTENT_ID` / `INVALID_ID`).
    pub async fn find_record(
        &self,
        record: RecordType,
        id: &str,
        expand: bool,
    ) -> Result<Option<Value>, DeliveryError> {
        let path = format!("/record/v1/{}/{}", record.as_str(), encode(id));
        let query: &[(&str, &str)] = if expand { &[("expandSubResources", "true")] } else { &[] };
        let answer = self.exchange_raw(&http::Method::GET, &path, query, None, &[]).await?;
        if answer.status == 404 && is_missing(&answer.body) {
            return Ok(None);
        }
        let answer = self.check(answer, &format!("GET {path}"))?;
        Self::json(&answer, &path).map(Some)
    }

    /// `POST record/v1/{type}` → 204 with the new id only in `Location`. `idempotency_key` goes
    /// out as `X-NetSuite-Idempotency-Key` (UNVERIFIED that NetSuite honours it synchronously;
    /// also put our key in `externalId`).
    pub async fn create_record(
        &self,
        record: RecordType,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<String, DeliveryError> {
        let path = format!("/record/v1/{}", record.as_str());
        let mut headers = vec![("X-NetSuite-PropertyNameValidation", "error")];
        if let Some(key) = idempotency_key {
            headers.push(("X-NetSuite-Idempotency-Key", key));
        }
        let answer = self.exchange(http::Method::POST, &path, &[], Some(body), &headers).await?;
        let location = answer.location.ok_or_else(|| DeliveryError::Server {
            vendor: VENDOR,
            status: answer.status,
            detail: format!("POST {path}: the answer has no Location header, so the new id is unknown"),
        })?;
        id_from_location(&location).ok_or_else(|| DeliveryError::Server {
            vendor: VENDOR,
            status: answer.status,
            detail: format!("POST {path}: the Location `{location}` does not end in a record id"),
        })
    }

    /// `PATCH record/v1/{type}/{id}` with only the changed fields (204). Sublist lines are merged
    /// by `line` unless named in `replace` (`?replace=item`), which replaces them entirely.
    pub async fn update_record(
        &self,
        record: RecordType,
        id: &str,
        fields: &Value,
        replace: &[&str],
    ) -> Result<(), DeliveryError> {
        let path = format!("/record/v1/{}/{}", record.as_str(), encode(id));
        let joined = replace.join(",");
        let query: Vec<(&str, &str)> = if replace.is_empty() { vec![] } else { vec![("replace", joined.as_str())] };
        let headers = [("X-NetSuite-PropertyNameValidation", "error")];
        self.exchange(http::Method::PATCH, &path, &query, Some(fields), &headers).await.map(|_| ())
    }

    /// Like [`NetSuiteClient::update_record`] (no sublist replace), but a change a business rule
    /// of the record refuses (400 `USER_ERROR`, e.g. an approval status change on a transaction no
    /// longer pending approval) comes back as `Ok(Err(refusal))` with NetSuite's own text, so the
    /// caller can tell it from a failed request.
    pub async fn try_update_record(
        &self,
        record: RecordType,
        id: &str,
        fields: &Value,
    ) -> Result<Result<(), crate::approval::ErpRefusal>, DeliveryError> {
        let path = format!("/record/v1/{}/{}", record.as_str(), encode(id));
        let headers = [("X-NetSuite-PropertyNameValidation", "error")];
        let answer = self.exchange_raw(&http::Method::PATCH, &path, &[], Some(fields), &headers).await?;
        if answer.status == 400 {
            let parsed = parse_error(&answer.body);
            if parsed.code() == "USER_ERROR" {
                let message = parsed.details.iter().map(|d| d.detail.as_str()).collect::<Vec<_>>().join(" ");
                return Ok(Err(crate::approval::ErpRefusal { message }));
            }
        }
        self.check(answer, &format!("PATCH {path}")).map(|_| Ok(()))
    }

    /// One SuiteQL page (`limit` capped at 1000).
    pub async fn suiteql_page(&self, q: &str, limit: usize, offset: usize) -> Result<SuiteQlPage, DeliveryError> {
        let limit = limit.clamp(1, SUITEQL_PAGE_MAX).to_string();
        let offset = offset.to_string();
        let query = [("limit", limit.as_str()), ("offset", offset.as_str())];
        let headers = [("Prefer", "transient")];
        let body = json!({ "q": q });
        let answer = self.exchange(http::Method::POST, "/query/v1/suiteql", &query, Some(&body), &headers).await?;
        serde_json::from_slice(&answer.body).map_err(|e| DeliveryError::Server {
            vendor: VENDOR,
            status: answer.status,
            detail: format!("SuiteQL: the answer is not a result page ({e})"),
        })
    }

    /// All rows of a SuiteQL query, following `hasMore` page by page. Refuses to go past the
    /// 100,000-row offset limit (the query must then page by key itself).
    pub async fn suiteql(&self, q: &str, page_size: usize) -> Result<Vec<Value>, DeliveryError> {
        let page_size = page_size.clamp(1, SUITEQL_PAGE_MAX);
        let mut rows = Vec::new();
        let mut offset = 0;
        loop {
            let page = self.suiteql_page(q, page_size, offset).await?;
            let got = page.items.len();
            rows.extend(page.items);
            if !page.has_more || got == 0 {
                return Ok(rows);
            }
            offset += got;
            if offset >= SUITEQL_OFFSET_MAX {
                return Err(DeliveryError::Rejected {
                    vendor: VENDOR,
                    detail: format!(
                        "SuiteQL: more than {SUITEQL_OFFSET_MAX} rows; offset paging stops there, page by key \
                         (WHERE id > :last ORDER BY id) instead"
                    ),
                });
            }
        }
    }
}

/// The last path segment of a `Location` such as `…/record/v1/purchaseOrder/4712`.
pub fn id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next().unwrap_or_default();
    let id = path.trim_end_matches('/').rsplit('/').next()?;
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_owned())
}

/// True when an error body says the record does not exist (`NONEXISTENT_ID` / `INVALID_ID`).
pub fn is_missing(body: &[u8]) -> bool {
    matches!(parse_error(body).code(), "NONEXISTENT_ID" | "INVALID_ID")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_location_header() {
        assert_eq!(
            id_from_location("https://1234567.suitetalk.api.netsuite.com/services/rest/record/v1/purchaseOrder/4712"),
            Some("4712".to_owned())
        );
        assert_eq!(id_from_location("/services/rest/record/v1/salesOrder/88/"), Some("88".to_owned()));
        assert_eq!(id_from_location("/services/rest/record/v1/salesOrder"), None);
    }

    #[test]
    fn record_types_are_case_insensitive_and_know_their_suiteql_codes() {
        assert_eq!(RecordType::parse("purchaseorder"), Some(RecordType::PurchaseOrder));
        assert_eq!(RecordType::parse("ITEMFULFILLMENT"), Some(RecordType::ItemFulfillment));
        assert_eq!(RecordType::parse("vendorBill"), None);
        assert_eq!(RecordType::PurchaseOrder.transaction_type(), Some("PurchOrd"));
        assert_eq!(RecordType::InventoryItem.transaction_type(), None);
    }

    #[test]
    fn query_strings_use_rfc3986_so_the_signed_url_is_the_sent_url() {
        assert_eq!(
            query_string(&[("q", "tranId IS \"PO 1\""), ("limit", "5")]),
            "q=tranId%20IS%20%22PO%201%22&limit=5"
        );
    }

    #[test]
    fn the_suiteql_fixture_is_a_page() {
        let page: SuiteQlPage = serde_json::from_value(fixtures::read_json("netsuite/suiteql_page.json")).unwrap();
        assert!(page.has_more);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.total_results, Some(7));
        assert!(is_missing(fixtures::read_fixture("netsuite/error_404_nonexistent_id.json").as_bytes()));
    }
}
