//! The SAP OData v2 client (reference A1, A3-A5, A7).
//!
//! Every call: concurrency permit (at most [`MAX_CONCURRENT`] per system) → `Authorization`
//! (Basic or bearer) + session cookies → `{base}/sap/opu/odata/sap/<SERVICE>/…?sap-client=…` →
//! `Set-Cookie` into the jar → errors through [`super::errors`]. Modifying calls first get a CSRF
//! token (`x-csrf-token: Fetch`), send it with the cookies it is bound to and, on exactly
//! `403 x-csrf-token: Required`, refetch once and replay once.

use super::auth::{CsrfSession, SapAuth};
use super::batch::{self, BatchPart, BatchResponse};
use super::errors::{api_failure, describe, is_csrf_failure};
use super::records::{
    DecisionOption, OutboundDelivery, PurchaseOrder, PurchaseRequisitionItem, StockRow, Task, TaskComment, TaskObject,
};
use super::uom::UomTable;
use super::wire::{self, Page};
use super::VENDOR;
use connect::http::{read_body_capped, redact_url, HttpClient};
use connect::{Clock, DeliveryError};
use http::{HeaderMap, Method};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{Mutex, Semaphore};
use url::Url;

pub const PURCHASE_REQUISITION_SERVICE: &str = "API_PURCHASEREQ_PROCESS_SRV";
pub const PURCHASE_ORDER_SERVICE: &str = "API_PURCHASEORDER_PROCESS_SRV";
pub const MATERIAL_STOCK_SERVICE: &str = "API_MATERIAL_STOCK_SRV";
/// Version 0002: the matrix parameter is part of the path (reference A1).
pub const OUTBOUND_DELIVERY_SERVICE: &str = "API_OUTBOUND_DELIVERY_SRV;v=0002";
/// The Task Gateway service root (workflow inbox, reference A5 option 1).
pub const TASK_PROCESSING_ROOT: &str = "/sap/opu/odata/IWPGW/TASKPROCESSING;mo;v=2/";
/// Reference A7: at most 4 concurrent requests per SAP system.
pub const MAX_CONCURRENT: usize = 4;
/// Pages followed through `__next` before giving up (a loop guard, not a data limit).
pub const DEFAULT_MAX_PAGES: usize = 1_000;
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Characters escaped in query values; OData syntax characters (`$ ' ( ) , = / :`) stay readable.
const QUERY_VALUE: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'%').add(b'&').add(b'+').add(b'<').add(b'>');

/// Path of an A2X service root, e.g. `/sap/opu/odata/sap/API_PURCHASEORDER_PROCESS_SRV/`.
pub fn service_root(service: &str) -> String {
    format!("/sap/opu/odata/sap/{service}/")
}

/// Connection settings of one SAP system.
#[derive(Debug, Clone)]
pub struct SapConfig {
    /// `https://host:port` (no path).
    pub base_url: Url,
    /// `sap-client` (Mandant); sent on every request, the CSRF fetch included, when set.
    pub sap_client: Option<String>,
    /// `sap-language` for texts and messages.
    pub language: Option<String>,
    pub max_pages: usize,
}

impl SapConfig {
    pub fn new(base_url: Url) -> Self {
        Self { base_url, sap_client: None, language: None, max_pages: DEFAULT_MAX_PAGES }
    }
}

/// OData system query options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Option<String>,
    pub select: Vec<String>,
    pub expand: Vec<String>,
    pub orderby: Option<String>,
    pub top: Option<u32>,
    pub skip: Option<u32>,
    pub inline_count: bool,
}

impl Query {
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }
    pub fn select(mut self, fields: &[&str]) -> Self {
        self.select = fields.iter().map(|f| (*f).to_owned()).collect();
        self
    }
    pub fn expand(mut self, navs: &[&str]) -> Self {
        self.expand = navs.iter().map(|f| (*f).to_owned()).collect();
        self
    }
    pub fn orderby(mut self, orderby: impl Into<String>) -> Self {
        self.orderby = Some(orderby.into());
        self
    }
    pub fn top(mut self, top: u32) -> Self {
        self.top = Some(top);
        self
    }
    pub fn skip(mut self, skip: u32) -> Self {
        self.skip = Some(skip);
        self
    }
    pub fn inline_count(mut self) -> Self {
        self.inline_count = true;
        self
    }

    fn pairs(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: String| out.push((k.to_owned(), v));
        if let Some(f) = &self.filter {
            push("$filter", f.clone());
        }
        if !self.select.is_empty() {
            push("$select", self.select.join(","));
        }
        if !self.expand.is_empty() {
            push("$expand", self.expand.join(","));
        }
        if let Some(o) = &self.orderby {
            push("$orderby", o.clone());
        }
        if let Some(t) = self.top {
            push("$top", t.to_string());
        }
        if let Some(s) = self.skip {
            push("$skip", s.to_string());
        }
        if self.inline_count {
            push("$inlinecount", "allpages".to_owned());
        }
        out
    }
}

/// Result of a PATCH with `If-Match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// 204; the new ETag when the server sent one.
    Updated { etag: Option<String> },
    /// 412: somebody changed the entity since it was read; re-read and decide again.
    Stale { detail: String },
}

/// A raw answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The OData client of one SAP system and user.
pub struct SapClient {
    http: HttpClient,
    auth: SapAuth,
    config: SapConfig,
    uoms: UomTable,
    clock: Arc<dyn Clock>,
    session: Mutex<CsrfSession>,
    permits: Semaphore,
    calls: AtomicU64,
    csrf_fetches: AtomicU64,
}

impl std::fmt::Debug for SapClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SapClient")
            .field("base_url", &redact_url(&self.config.base_url))
            .field("auth", &self.auth)
            .finish()
    }
}

fn answer_unparseable(what: &str, err: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Rejected { vendor: VENDOR, detail: format!("{what}: the answer is not what the API defines: {err}") }
}

impl SapClient {
    pub fn new(http: HttpClient, auth: SapAuth, config: SapConfig, uoms: UomTable, clock: Arc<dyn Clock>) -> Self {
        Self {
            http,
            auth,
            config,
            uoms,
            clock,
            session: Mutex::new(CsrfSession::default()),
            permits: Semaphore::new(MAX_CONCURRENT),
            calls: AtomicU64::new(0),
            csrf_fetches: AtomicU64::new(0),
        }
    }

    pub fn uoms(&self) -> &UomTable {
        &self.uoms
    }

    /// HTTP requests sent (CSRF fetches and replays included).
    pub fn call_count(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// CSRF token fetches sent.
    pub fn csrf_fetch_count(&self) -> u64 {
        self.csrf_fetches.load(Ordering::SeqCst)
    }

    /// `{base}{root}{rest}?sap-client=…&sap-language=…&<options>`.
    pub fn url(&self, root: &str, rest: &str, options: &[(String, String)]) -> Result<Url, DeliveryError> {
        let origin = self.config.base_url.as_str().trim_end_matches('/');
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(c) = &self.config.sap_client {
            pairs.push(("sap-client".to_owned(), c.clone()));
        }
        if let Some(l) = &self.config.language {
            pairs.push(("sap-language".to_owned(), l.clone()));
        }
        pairs.extend(options.iter().cloned());
        let mut text = format!("{origin}{root}{rest}");
        if !pairs.is_empty() {
            let query: Vec<String> =
                pairs.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE))).collect();
            text.push('?');
            text.push_str(&query.join("&"));
        }
        Url::parse(&text).map_err(|e| DeliveryError::BadPayload {
            destination: redact_url(&self.config.base_url),
            detail: format!("cannot build the request URL for {root}{rest}: {e}"),
        })
    }

    /// Sends one request with auth and session cookies; keeps `Set-Cookie`; replays once after a
    /// 401 when the credentials are a bearer token that can be refreshed.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, DeliveryError> {
        let _permit = self.permits.acquire().await.map_err(|_| DeliveryError::Transport {
            endpoint: redact_url(url),
            reason: "the SAP client is shutting down".to_owned(),
        })?;
        let mut refreshed = false;
        loop {
            let authorization = self.auth.header().await?;
            let cookie = self.session.lock().await.jar.header();
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(http::header::AUTHORIZATION, authorization.expose_secret())
                .header(http::header::ACCEPT, "application/json");
            if let Some(c) = cookie {
                request = request.header(http::header::COOKIE, c);
            }
            for (name, value) in headers {
                request = request.header(*name, value.as_str());
            }
            match &body {
                Some((content_type, bytes)) => {
                    request = request.header(http::header::CONTENT_TYPE, *content_type).body(bytes.clone());
                }
                None if method != Method::GET && method != Method::HEAD => {
                    request = request.header(http::header::CONTENT_LENGTH, "0");
                }
                None => {}
            }
            self.calls.fetch_add(1, Ordering::SeqCst);
            let resp = self.http.send(request).await?;
            let status = resp.status().as_u16();
            let resp_headers = resp.headers().clone();
            let bytes = read_body_capped(resp, MAX_ANSWER_BYTES).await?;
            self.session.lock().await.jar.store(&resp_headers);
            if status == 401 && !refreshed && self.auth.invalidate(&authorization).await {
                refreshed = true;
                continue;
            }
            tracing::debug!(vendor = VENDOR, %method, endpoint = %redact_url(url), status, "SAP request");
            return Ok(Answer { status, headers: resp_headers, body: bytes.to_vec() });
        }
    }

    fn failure(&self, answer: &Answer, what: &str) -> DeliveryError {
        api_failure(answer.status, &answer.headers, &answer.body, what, self.clock.now())
    }

    fn json(answer: &Answer, what: &str) -> Result<Value, DeliveryError> {
        serde_json::from_slice(&answer.body).map_err(|e| answer_unparseable(what, e))
    }

    /// GET returning JSON; any non-2xx is classified.
    pub async fn get_json(&self, url: &Url, what: &str) -> Result<Value, DeliveryError> {
        let answer = self.send(Method::GET, url, &[], None).await?;
        if !(200..300).contains(&answer.status) {
            return Err(self.failure(&answer, what));
        }
        Self::json(&answer, what)
    }

    /// One page of `root` + `path` (an entity set or navigation).
    pub async fn get_page(&self, root: &str, path: &str, query: &Query) -> Result<Page, DeliveryError> {
        let url = self.url(root, path, &query.pairs())?;
        let what = format!("GET {path}");
        let body = self.get_json(&url, &what).await?;
        wire::page(&body).map_err(|e| answer_unparseable(&what, e))
    }

    /// Every row, following `__next` verbatim while it stays on the configured origin and service.
    pub async fn get_all(&self, root: &str, path: &str, query: &Query) -> Result<Vec<Value>, DeliveryError> {
        let mut page = self.get_page(root, path, query).await?;
        let mut rows = std::mem::take(&mut page.results);
        let mut pages = 1;
        while let Some(next) = page.next.take() {
            if pages >= self.config.max_pages {
                return Err(answer_unparseable(
                    &format!("GET {path}"),
                    format!("more than {} pages; refusing to follow __next further", self.config.max_pages),
                ));
            }
            let url = self.checked_next(&next, root)?;
            let what = format!("GET {path} (page {})", pages + 1);
            let body = self.get_json(&url, &what).await?;
            page = wire::page(&body).map_err(|e| answer_unparseable(&what, e))?;
            rows.append(&mut page.results);
            pages += 1;
        }
        Ok(rows)
    }

    /// Credentials and cookies go only where they were configured to go (reference A4 "Security").
    pub(crate) fn checked_next(&self, next: &str, root: &str) -> Result<Url, DeliveryError> {
        let base = &self.config.base_url;
        let url = base.join(next).map_err(|e| answer_unparseable("__next", e))?;
        let same_origin = url.scheme() == base.scheme()
            && url.host_str() == base.host_str()
            && url.port_or_known_default() == base.port_or_known_default();
        if !same_origin || !url.path().starts_with(root) {
            return Err(DeliveryError::Rejected {
                vendor: VENDOR,
                detail: format!(
                    "the server's __next link points at {} outside the configured service {root}; not followed",
                    redact_url(&url)
                ),
            });
        }
        Ok(url)
    }

    /// The single entity at `root` + `path`, unwrapped from `d`.
    pub async fn get_entity(&self, root: &str, path: &str, query: &Query) -> Result<Value, DeliveryError> {
        let url = self.url(root, path, &query.pairs())?;
        let what = format!("GET {path}");
        let body = self.get_json(&url, &what).await?;
        wire::entity(&body).cloned().map_err(|e| answer_unparseable(&what, e))
    }

    pub async fn purchase_requisition_items(
        &self,
        query: &Query,
    ) -> Result<Vec<PurchaseRequisitionItem>, DeliveryError> {
        let rows =
            self.get_all(&service_root(PURCHASE_REQUISITION_SERVICE), "A_PurchaseRequisitionItem", query).await?;
        rows.iter()
            .map(|r| {
                PurchaseRequisitionItem::from_entity(r, &self.uoms)
                    .map_err(|e| answer_unparseable("A_PurchaseRequisitionItem", e))
            })
            .collect()
    }

    pub async fn purchase_orders(&self, query: &Query) -> Result<Vec<PurchaseOrder>, DeliveryError> {
        let rows = self.get_all(&service_root(PURCHASE_ORDER_SERVICE), "A_PurchaseOrder", query).await?;
        rows.iter()
            .map(|r| PurchaseOrder::from_entity(r, &self.uoms).map_err(|e| answer_unparseable("A_PurchaseOrder", e)))
            .collect()
    }

    /// One purchase order with its items expanded.
    pub async fn purchase_order(&self, number: &str) -> Result<PurchaseOrder, DeliveryError> {
        let path = wire::key_path("A_PurchaseOrder", &[("PurchaseOrder", number)]);
        let query = Query::default().expand(&["to_PurchaseOrderItem"]);
        let e = self.get_entity(&service_root(PURCHASE_ORDER_SERVICE), &path, &query).await?;
        PurchaseOrder::from_entity(&e, &self.uoms).map_err(|err| answer_unparseable(&path, err))
    }

    /// Stock rows of a material in a plant.
    pub async fn material_stock(&self, material: &str, plant: &str) -> Result<Vec<StockRow>, DeliveryError> {
        let filter =
            format!("Material eq {} and Plant eq {}", wire::string_literal(material), wire::string_literal(plant));
        let rows = self
            .get_all(&service_root(MATERIAL_STOCK_SERVICE), "A_MatlStkInAcctMod", &Query::default().filter(filter))
            .await?;
        rows.iter()
            .map(|r| StockRow::from_entity(r, &self.uoms).map_err(|e| answer_unparseable("A_MatlStkInAcctMod", e)))
            .collect()
    }

    pub async fn outbound_deliveries(&self, query: &Query) -> Result<Vec<OutboundDelivery>, DeliveryError> {
        let rows = self.get_all(&service_root(OUTBOUND_DELIVERY_SERVICE), "A_OutbDeliveryHeader", query).await?;
        rows.iter()
            .map(|r| {
                OutboundDelivery::from_entity(r, &self.uoms).map_err(|e| answer_unparseable("A_OutbDeliveryHeader", e))
            })
            .collect()
    }

    pub async fn outbound_delivery(&self, number: &str) -> Result<OutboundDelivery, DeliveryError> {
        let path = wire::key_path("A_OutbDeliveryHeader", &[("DeliveryDocument", number)]);
        let e = self.get_entity(&service_root(OUTBOUND_DELIVERY_SERVICE), &path, &Query::default()).await?;
        OutboundDelivery::from_entity(&e, &self.uoms).map_err(|err| answer_unparseable(&path, err))
    }

    /// Fetches a CSRF token (GET on the service root with `x-csrf-token: Fetch`) into a fresh session.
    pub async fn fetch_csrf(&self, root: &str) -> Result<(), DeliveryError> {
        self.session.lock().await.invalidate();
        let url = self.url(root, "", &[])?;
        self.csrf_fetches.fetch_add(1, Ordering::SeqCst);
        let answer = self.send(Method::GET, &url, &[("x-csrf-token", "Fetch".to_owned())], None).await?;
        if !(200..300).contains(&answer.status) {
            return Err(self.failure(&answer, "CSRF token fetch"));
        }
        if !self.session.lock().await.accept_fetch(&answer.headers) {
            return Err(DeliveryError::Auth {
                vendor: VENDOR,
                detail: format!(
                    "CSRF token fetch on {root}: the answer carried no x-csrf-token; is the user allowed to write?"
                ),
            });
        }
        Ok(())
    }

    /// UNVERIFIED: one token/session per client (SAP system + user) is used for every service of
    /// that system; the reference binds the token to the session, not to a service root.
    /// A modifying request with the CSRF protocol: token + cookies, one refetch and one replay on
    /// `403 x-csrf-token: Required`. Answers of any status are returned for the caller to judge.
    pub async fn modify(
        &self,
        method: Method,
        root: &str,
        url: &Url,
        headers: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, DeliveryError> {
        let mut refetched = false;
        loop {
            let token = self.session.lock().await.token().map(|t| t.expose_secret().to_owned());
            let token = match token {
                Some(t) => t,
                None => {
                    self.fetch_csrf(root).await?;
                    refetched = true;
                    let fetched = self.session.lock().await.token().map(|t| t.expose_secret().to_owned());
                    fetched.unwrap_or_default()
                }
            };
            let mut all: Vec<(&str, String)> = vec![("x-csrf-token", token)];
            all.extend(headers.iter().cloned());
            let answer = self.send(method.clone(), url, &all, body.clone()).await?;
            if is_csrf_failure(answer.status, &answer.headers) && !refetched {
                tracing::info!(vendor = VENDOR, endpoint = %redact_url(url), "CSRF token refused; fetching a new one once");
                self.session.lock().await.invalidate();
                refetched = true;
                self.fetch_csrf(root).await?;
                continue;
            }
            if (200..300).contains(&answer.status) {
                check_sap_message(&answer.headers, &format!("{method} {}", redact_url(url)))?;
            }
            return Ok(answer);
        }
    }

    /// PATCH with `If-Match` (`etag` from `__metadata.etag`, or `*` to disable the check).
    pub async fn update(
        &self,
        root: &str,
        path: &str,
        etag: &str,
        changes: &Value,
    ) -> Result<UpdateOutcome, DeliveryError> {
        let url = self.url(root, path, &[])?;
        let body = serde_json::to_vec(changes).map_err(|e| answer_unparseable("PATCH body", e))?;
        let answer = self
            .modify(Method::PATCH, root, &url, &[("if-match", etag.to_owned())], Some(("application/json", body)))
            .await?;
        match answer.status {
            200..=299 => Ok(UpdateOutcome::Updated {
                etag: answer.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned),
            }),
            412 => Ok(UpdateOutcome::Stale { detail: describe(&answer.body) }),
            _ => Err(self.failure(&answer, &format!("PATCH {path}"))),
        }
    }

    /// POST a new entity (deep insert allowed); returns the created entity.
    pub async fn create(&self, root: &str, entity_set: &str, entity: &Value) -> Result<Value, DeliveryError> {
        let url = self.url(root, entity_set, &[])?;
        let body = serde_json::to_vec(entity).map_err(|e| answer_unparseable("POST body", e))?;
        let what = format!("POST {entity_set}");
        let answer = self.modify(Method::POST, root, &url, &[], Some(("application/json", body))).await?;
        if answer.status != 201 && answer.status != 200 {
            return Err(self.failure(&answer, &what));
        }
        let json = Self::json(&answer, &what)?;
        wire::entity(&json).cloned().map_err(|e| answer_unparseable(&what, e))
    }

    /// Workflow decision options of a work item.
    pub async fn decision_options(
        &self,
        origin: &str,
        instance_id: &str,
    ) -> Result<Vec<DecisionOption>, DeliveryError> {
        let params = [
            ("SAP__Origin".to_owned(), wire::string_literal(origin)),
            ("InstanceID".to_owned(), wire::string_literal(instance_id)),
        ];
        let url = self.url(TASK_PROCESSING_ROOT, "DecisionOptions", &params)?;
        let body = self.get_json(&url, "GET DecisionOptions").await?;
        let page = wire::page(&body).map_err(|e| answer_unparseable("DecisionOptions", e))?;
        page.results
            .iter()
            .map(|o| DecisionOption::from_entity(o).map_err(|e| answer_unparseable("DecisionOptions", e)))
            .collect()
    }

    /// Approves or rejects a work item (`POST Decision`, parameters as query literals; the comment
    /// is mandatory on the wire, `''` when empty). Returns the task with its new status.
    pub async fn decide(
        &self,
        origin: &str,
        instance_id: &str,
        decision_key: &str,
        comments: &str,
    ) -> Result<Task, DeliveryError> {
        let params = [
            ("SAP__Origin".to_owned(), wire::string_literal(origin)),
            ("InstanceID".to_owned(), wire::string_literal(instance_id)),
            ("DecisionKey".to_owned(), wire::string_literal(decision_key)),
            ("Comments".to_owned(), wire::string_literal(comments)),
        ];
        let url = self.url(TASK_PROCESSING_ROOT, "Decision", &params)?;
        let answer = self.modify(Method::POST, TASK_PROCESSING_ROOT, &url, &[], None).await?;
        if !(200..300).contains(&answer.status) {
            return Err(self.failure(&answer, "POST Decision"));
        }
        let json = Self::json(&answer, "POST Decision")?;
        let e = wire::entity(&json).map_err(|e| answer_unparseable("POST Decision", e))?;
        Task::from_entity(e).map_err(|e| answer_unparseable("POST Decision", e))
    }

    /// Work items of `TaskCollection` matching `query` (e.g. `Status eq 'READY'`), all pages.
    pub async fn tasks(&self, query: &Query) -> Result<Vec<Task>, DeliveryError> {
        let rows = self.get_all(TASK_PROCESSING_ROOT, "TaskCollection", query).await?;
        rows.iter().map(|t| Task::from_entity(t).map_err(|e| answer_unparseable("TaskCollection", e))).collect()
    }

    /// The documents a work item is about (`TaskCollection(…)/TaskObjects`).
    pub async fn task_objects(&self, origin: &str, instance_id: &str) -> Result<Vec<TaskObject>, DeliveryError> {
        let path = format!("{}/TaskObjects", task_path(origin, instance_id));
        let rows = self.get_all(TASK_PROCESSING_ROOT, &path, &Query::default()).await?;
        rows.iter().map(|o| TaskObject::from_entity(o).map_err(|e| answer_unparseable("TaskObjects", e))).collect()
    }

    /// The comments of a work item (`TaskCollection(…)/Comments`), decision comments included.
    pub async fn task_comments(&self, origin: &str, instance_id: &str) -> Result<Vec<TaskComment>, DeliveryError> {
        let path = format!("{}/Comments", task_path(origin, instance_id));
        let rows = self.get_all(TASK_PROCESSING_ROOT, &path, &Query::default()).await?;
        rows.iter().map(|c| TaskComment::from_entity(c).map_err(|e| answer_unparseable("Comments", e))).collect()
    }

    /// Like [`SapClient::decide`], but SAP refusing the decision itself (400 or 409: the work item
    /// is already completed, a mandatory comment is missing, …) comes back as `Ok(Err(refusal))`
    /// with Gateway's message text, so the caller can tell it from a failed request.
    pub async fn try_decide(
        &self,
        origin: &str,
        instance_id: &str,
        decision_key: &str,
        comments: &str,
    ) -> Result<Result<Task, crate::approval::ErpRefusal>, DeliveryError> {
        let params = [
            ("SAP__Origin".to_owned(), wire::string_literal(origin)),
            ("InstanceID".to_owned(), wire::string_literal(instance_id)),
            ("DecisionKey".to_owned(), wire::string_literal(decision_key)),
            ("Comments".to_owned(), wire::string_literal(comments)),
        ];
        let url = self.url(TASK_PROCESSING_ROOT, "Decision", &params)?;
        let answer = self.modify(Method::POST, TASK_PROCESSING_ROOT, &url, &[], None).await?;
        if answer.status == 400 || answer.status == 409 {
            let message = match super::errors::parse_error(&answer.body) {
                Some(e) if !e.message.is_empty() => e.message,
                _ => describe(&answer.body),
            };
            return Ok(Err(crate::approval::ErpRefusal { message }));
        }
        if !(200..300).contains(&answer.status) {
            return Err(self.failure(&answer, "POST Decision"));
        }
        let json = Self::json(&answer, "POST Decision")?;
        let e = wire::entity(&json).map_err(|e| answer_unparseable("POST Decision", e))?;
        Task::from_entity(e).map(Ok).map_err(|e| answer_unparseable("POST Decision", e))
    }
}

/// `TaskCollection(SAP__Origin='…',InstanceID='…')`.
fn task_path(origin: &str, instance_id: &str) -> String {
    wire::key_path("TaskCollection", &[("SAP__Origin", origin), ("InstanceID", instance_id)])
}

impl SapClient {
    /// Sends a `$batch` to the service at `root` (CSRF protocol included) and returns every inner
    /// response in request order; a failed changeset yields its single error response.
    pub async fn batch(&self, root: &str, parts: &[BatchPart]) -> Result<Vec<BatchResponse>, DeliveryError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (content_type, body) = batch::build(&id, parts);
        let url = self.url(root, "$batch", &[])?;
        let answer = self.modify(Method::POST, root, &url, &[], Some((&content_type, body.into_bytes()))).await?;
        if answer.status != 202 && answer.status != 200 {
            return Err(self.failure(&answer, "POST $batch"));
        }
        let answer_type =
            answer.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        batch::parse_response(answer_type, &String::from_utf8_lossy(&answer.body))
            .map_err(|e| answer_unparseable("POST $batch", e))
    }
}

/// A 2xx may still carry `sap-message` severity `error`: the business operation failed (reference A6).
pub fn check_sap_message(headers: &HeaderMap, what: &str) -> Result<(), DeliveryError> {
    let Some(text) = headers.get("sap-message").and_then(|v| v.to_str().ok()) else { return Ok(()) };
    let Ok(message) = serde_json::from_str::<Value>(text) else { return Ok(()) };
    if message.get("severity").and_then(Value::as_str) == Some("error") {
        let code = message.get("code").and_then(Value::as_str).unwrap_or_default();
        let msg = message.get("message").and_then(Value::as_str).unwrap_or_default();
        return Err(DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("{what}: SAP answered 2xx with an error message: {code} {msg}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sap_message_error_severity_on_2xx_is_a_rejection() {
        let mut h = HeaderMap::new();
        h.insert("sap-message", r#"{"code":"06/017","message":"changed","severity":"success"}"#.parse().unwrap());
        assert!(check_sap_message(&h, "PATCH").is_ok());
        h.insert("sap-message", r#"{"code":"ME/083","message":"no","severity":"error"}"#.parse().unwrap());
        let err = check_sap_message(&h, "PATCH").unwrap_err();
        assert!(err.to_string().contains("ME/083"));
    }

    #[test]
    fn query_options_keep_odata_syntax_readable() {
        let q = Query::default()
            .filter("LastChangeDateTime gt datetimeoffset'2024-03-15T02:00:00Z'")
            .select(&["PurchaseOrder", "Supplier"])
            .top(50)
            .inline_count();
        let pairs = q.pairs();
        assert_eq!(pairs[0].0, "$filter");
        assert_eq!(pairs[1].1, "PurchaseOrder,Supplier");
        let encoded = utf8_percent_encode(&pairs[0].1, QUERY_VALUE).to_string();
        assert_eq!(encoded, "LastChangeDateTime%20gt%20datetimeoffset'2024-03-15T02:00:00Z'");
    }
}
