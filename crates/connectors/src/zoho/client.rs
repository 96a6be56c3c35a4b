//! `ZohoClient`: the REST calls dingbridge needs (reference B2, B3, B5), sent through the shared
//! [`HttpClient`] with the token cache, credit accounting and a concurrency limiter.
//!
//! Every call holds a permit of one semaphore sized below the edition's concurrency limit, and
//! the heavy calls (COQL, writes of more than 10 records) also hold one of a second semaphore
//! sized ≤ 10, so the client itself never causes a concurrency 429.

use super::auth::{authorization_value, DataCentre, RefreshTokenFetcher, ZohoCredentials, TOKEN_REFRESH_MARGIN};
use super::errors::{api_error, error_code, ZohoStatus};
use super::VENDOR;
use connect::http::{read_body_capped, HttpClient};
use connect::retry_after::parse_retry_after;
use connect::token::TokenCache;
use connect::{Clock, DeliveryError};
use model::{Money, ZonedTime};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use url::Url;

/// Max records per insert/update/upsert call.
pub const MAX_WRITE_BATCH: usize = 100;
/// `per_page` maximum.
pub const MAX_PER_PAGE: u32 = 200;
/// `page` works only while page × per_page ≤ 2,000; after that, `page_token`.
pub const PAGE_NUMBER_LIMIT: u32 = 2000;
/// Heavy APIs share a sub-concurrency of 10 in every edition.
pub const HEAVY_CONCURRENCY: usize = 10;
/// Writes with more records than this count as heavy.
const HEAVY_WRITE_RECORDS: usize = 10;
/// Credits remaining header, present once half the day's credits are spent.
pub const CREDITS_HEADER: &str = "x-api-credits-remaining";
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Where and how to talk to one Zoho org.
#[derive(Debug, Clone)]
pub struct ZohoSettings {
    pub accounts_server: String,
    /// Used until a token answer names the `api_domain`, and always when `pin_api_domain` is set.
    pub api_domain: String,
    pub pin_api_domain: bool,
    /// `v8` by default.
    pub api_version: String,
    /// In-flight calls; the edition limit minus 2 leaves room for other apps (Enterprise: 20).
    pub concurrency: usize,
    pub heavy_concurrency: usize,
}

impl ZohoSettings {
    pub fn for_dc(dc: DataCentre) -> Self {
        Self {
            accounts_server: dc.accounts_server().into(),
            api_domain: dc.api_domain().into(),
            pin_api_domain: false,
            api_version: "v8".into(),
            concurrency: 18,
            heavy_concurrency: HEAVY_CONCURRENCY,
        }
    }

    /// Both servers at one base URL (the simulator), pinned.
    pub fn with_base(base: &str) -> Self {
        Self {
            accounts_server: base.into(),
            api_domain: base.into(),
            pin_api_domain: true,
            ..Self::for_dc(DataCentre::Us)
        }
    }
}

/// A lookup as Zoho returns it: `{id, name}` (COQL gives only `id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

impl Lookup {
    pub fn from_value(value: &Value) -> Option<Lookup> {
        let id = value.get("id")?.as_str()?.to_owned();
        Some(Lookup { id, name: value.get("name").and_then(Value::as_str).map(str::to_owned) })
    }
}

/// The Deal fields dingbridge uses, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Deal {
    pub id: String,
    pub name: String,
    pub stage: Option<String>,
    pub amount: Option<Money>,
    pub closing_date: Option<jiff::civil::Date>,
    pub account: Option<Lookup>,
    pub owner: Option<Lookup>,
    pub modified_time: Option<ZonedTime>,
}

fn bad_record(detail: String) -> DeliveryError {
    DeliveryError::Server { vendor: VENDOR, status: 200, detail }
}

impl Deal {
    pub fn from_record(record: &Value) -> Result<Deal, DeliveryError> {
        let id = record.get("id").and_then(Value::as_str).ok_or_else(|| bad_record("a deal without id".into()))?;
        let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Deal {
            id: id.to_owned(),
            name: text("Deal_Name").unwrap_or_default(),
            stage: text("Stage"),
            amount: money_of(record, "Amount")?,
            closing_date: text("Closing_Date")
                .map(|d| d.parse().map_err(|e| bad_record(format!("deal {id}: Closing_Date `{d}`: {e}"))))
                .transpose()?,
            account: record.get("Account_Name").and_then(Lookup::from_value),
            owner: record.get("Owner").and_then(Lookup::from_value),
            modified_time: zoned_time_of(record, "Modified_Time")?,
        })
    }
}

/// The Account fields dingbridge uses, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub annual_revenue: Option<Money>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub owner: Option<Lookup>,
    pub modified_time: Option<ZonedTime>,
}

impl Account {
    pub fn from_record(record: &Value) -> Result<Account, DeliveryError> {
        let id = record.get("id").and_then(Value::as_str).ok_or_else(|| bad_record("an account without id".into()))?;
        let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Account {
            id: id.to_owned(),
            name: text("Account_Name").unwrap_or_default(),
            annual_revenue: money_of(record, "Annual_Revenue")?,
            city: text("Billing_City"),
            country: text("Billing_Country"),
            owner: record.get("Owner").and_then(Lookup::from_value),
            modified_time: zoned_time_of(record, "Modified_Time")?,
        })
    }
}

/// The Contact fields dingbridge uses, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: String,
    pub full_name: String,
    pub email: Option<String>,
    pub mobile: Option<String>,
    pub account: Option<Lookup>,
    pub owner: Option<Lookup>,
    pub modified_time: Option<ZonedTime>,
}

impl Contact {
    pub fn from_record(record: &Value) -> Result<Contact, DeliveryError> {
        let id = record.get("id").and_then(Value::as_str).ok_or_else(|| bad_record("a contact without id".into()))?;
        let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
        let full_name = text("Full_Name").unwrap_or_else(|| {
            [text("First_Name"), text("Last_Name")].into_iter().flatten().collect::<Vec<_>>().join(" ")
        });
        Ok(Contact {
            id: id.to_owned(),
            full_name,
            email: text("Email"),
            mobile: text("Mobile"),
            account: record.get("Account_Name").and_then(Lookup::from_value),
            owner: record.get("Owner").and_then(Lookup::from_value),
            modified_time: zoned_time_of(record, "Modified_Time")?,
        })
    }
}

/// A Note as dingbridge shows it in interaction history.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub id: String,
    pub title: Option<String>,
    pub content: String,
    pub parent: Option<Lookup>,
    pub owner: Option<Lookup>,
    pub created_time: Option<ZonedTime>,
}

impl Note {
    pub fn from_record(record: &Value) -> Result<Note, DeliveryError> {
        let id = record.get("id").and_then(Value::as_str).ok_or_else(|| bad_record("a note without id".into()))?;
        let text = |k: &str| record.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Note {
            id: id.to_owned(),
            title: text("Note_Title"),
            content: text("Note_Content").unwrap_or_default(),
            parent: record.get("Parent_Id").and_then(Lookup::from_value),
            owner: record.get("Owner").and_then(Lookup::from_value),
            created_time: zoned_time_of(record, "Created_Time")?,
        })
    }
}

/// A currency field with the record's `Currency` code as [`Money`]; `None` when empty.
pub fn money_of(record: &Value, field: &str) -> Result<Option<Money>, DeliveryError> {
    let Some(number) = record.get(field).filter(|v| !v.is_null()) else { return Ok(None) };
    let code = record.get("Currency").and_then(Value::as_str).ok_or_else(|| {
        bad_record(format!("{field} has no Currency on the record; a single-currency org needs a configured code"))
    })?;
    let amount = match number {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => return Err(bad_record(format!("{field} is not a number: {other}"))),
    };
    Money::parse(field, &amount, code).map(Some).map_err(|e| bad_record(e.to_string()))
}

/// A datetime field as [`ZonedTime`]; `None` when empty.
pub fn zoned_time_of(record: &Value, field: &str) -> Result<Option<ZonedTime>, DeliveryError> {
    match record.get(field).and_then(Value::as_str) {
        None => Ok(None),
        Some(text) => ZonedTime::parse(field, text).map(Some).map_err(|e| bad_record(e.to_string())),
    }
}

/// How Zoho accepts datetimes on input: offset, no `Z`, no fractions (`2025-08-14T14:30:05+08:00`),
/// shown in Hong Kong time.
pub fn format_datetime(time: ZonedTime) -> String {
    let hk = jiff::tz::TimeZone::fixed(jiff::tz::offset(8));
    time.0.to_zoned(hk).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

/// Where a list page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageCursor {
    Page(u32),
    Token(String),
}

/// One page of records.
#[derive(Debug, Clone, Default)]
pub struct RecordPage {
    pub records: Vec<Value>,
    pub more_records: bool,
    pub next: Option<PageCursor>,
}

/// A list answer as a page: the next cursor is `next_page_token` when Zoho gives one, else the
/// next page number, while `more_records`.
pub fn parse_page(answer: &Value, cursor: &PageCursor) -> RecordPage {
    let records = answer.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
    let info = answer.get("info").cloned().unwrap_or(Value::Null);
    let more_records = info.get("more_records").and_then(Value::as_bool).unwrap_or(false);
    let token = info.get("next_page_token").and_then(Value::as_str).map(str::to_owned);
    let page = info.get("page").and_then(Value::as_u64).and_then(|p| u32::try_from(p).ok());
    let next = match (more_records, token, page) {
        (false, _, _) => None,
        (true, Some(t), _) => Some(PageCursor::Token(t)),
        (true, None, Some(p)) => Some(PageCursor::Page(p + 1)),
        (true, None, None) => match cursor {
            PageCursor::Page(p) => Some(PageCursor::Page(p + 1)),
            PageCursor::Token(_) => None,
        },
    };
    RecordPage { records, more_records, next }
}

/// One record's result of a write, in input order.
#[derive(Debug, Clone)]
pub struct RecordResult {
    pub status: ZohoStatus,
    /// The record id on success.
    pub id: Option<String>,
    /// Upsert only: `insert` or `update`.
    pub action: Option<String>,
}

impl RecordResult {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// The failure of this record as a delivery error (`None` on success).
    pub fn error(&self) -> Option<DeliveryError> {
        (!self.is_success()).then(|| {
            let body = serde_json::to_vec(&self.status).unwrap_or_default();
            api_error(400, &body, None)
        })
    }
}

fn record_result(item: &Value) -> Result<RecordResult, DeliveryError> {
    let status: ZohoStatus =
        serde_json::from_value(item.clone()).map_err(|e| bad_record(format!("a record result: {e}")))?;
    let id = item.pointer("/details/id").and_then(Value::as_str).map(str::to_owned);
    let action = item.get("action").and_then(Value::as_str).map(str::to_owned);
    Ok(RecordResult { status, id, action })
}

/// Automation that Zoho runs on our writes (`trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Triggers {
    /// `[]`: nothing runs, so our own writes do not loop back as workflow events.
    None,
    /// `["workflow"]`.
    Workflow,
}

impl Triggers {
    fn json(self) -> Value {
        match self {
            Self::None => json!([]),
            Self::Workflow => json!(["workflow"]),
        }
    }
}

/// Credits as seen by this client: what it spent by its cost model and what Zoho last reported.
#[derive(Debug, Default)]
pub struct CreditMeter {
    spent: AtomicU64,
    remaining: Mutex<Option<u64>>,
}

impl CreditMeter {
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::SeqCst)
    }

    /// From `X-API-CREDITS-REMAINING`; `None` until Zoho sends it (after half the day's credits).
    pub fn remaining(&self) -> Option<u64> {
        *self.remaining.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, cost: u64, headers: &http::HeaderMap) {
        self.spent.fetch_add(cost, Ordering::SeqCst);
        if let Some(n) = headers.get(CREDITS_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()) {
            *self.remaining.lock().unwrap_or_else(PoisonError::into_inner) = Some(n);
        }
    }
}

/// Credits of a COQL call by its LIMIT (1–200 → 1, 201–1,000 → 2, more → 3; default limit 200).
pub fn coql_cost(query: &str) -> u64 {
    let lower = query.to_ascii_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let limit = words
        .iter()
        .position(|w| *w == "limit")
        .and_then(|i| words.get(i + 1))
        .and_then(|w| w.trim_end_matches(',').parse::<u64>().ok())
        .unwrap_or(200);
    match limit {
        0..=200 => 1,
        201..=1000 => 2,
        _ => 3,
    }
}

/// Sub-requests per composite call.
pub const MAX_COMPOSITE: usize = 5;
/// Concurrency units a composite call takes.
pub const COMPOSITE_UNITS: u32 = 5;

/// One GET inside a composite call; `path` is relative to `/crm/{version}/` (`Deals/{id}/Notes`).
#[derive(Debug, Clone)]
pub struct SubRequest {
    pub id: String,
    pub path: String,
    pub params: std::collections::BTreeMap<String, String>,
}

impl SubRequest {
    pub fn get(id: &str, path: &str, params: &[(&str, &str)]) -> Self {
        Self {
            id: id.into(),
            path: path.into(),
            params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }
}

/// One sub-response: its status and body (`None` for 204).
#[derive(Debug, Clone)]
pub struct SubResponse {
    pub id: String,
    pub status_code: u16,
    pub body: Option<Value>,
}

impl SubResponse {
    /// The `data[]` rows of the body (empty for 204).
    pub fn rows(&self) -> Vec<Value> {
        self.body.as_ref().and_then(|b| b.get("data")).and_then(Value::as_array).cloned().unwrap_or_default()
    }
}

/// Pairs the composite answer with its requests (Zoho answers in request order).
pub fn parse_composite(answer: &Value, requests: &[SubRequest]) -> Result<Vec<SubResponse>, DeliveryError> {
    let items = answer.get("__composite_requests").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.len() != requests.len() {
        return Err(bad_record(format!("{} composite answers for {} sub-requests", items.len(), requests.len())));
    }
    Ok(requests
        .iter()
        .zip(items)
        .map(|(req, item)| {
            let response = item.pointer("/details/response").cloned().unwrap_or(Value::Null);
            let status_code = response.get("status_code").and_then(Value::as_u64).unwrap_or(0);
            SubResponse {
                id: req.id.clone(),
                status_code: u16::try_from(status_code).unwrap_or(0),
                body: response.get("body").filter(|b| !b.is_null()).cloned(),
            }
        })
        .collect())
}

/// One answered call.
struct Raw {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Raw {
    /// 204 and 304 are "nothing" and never parsed; other 2xx are JSON; the rest errors.
    fn json(self) -> Result<Option<Value>, DeliveryError> {
        match self.status {
            204 | 304 => Ok(None),
            200..=299 => serde_json::from_slice(&self.body)
                .map(Some)
                .map_err(|e| bad_record(format!("an answer that is not JSON ({e})"))),
            _ => Err(api_error(self.status, &self.body, self.retry_after)),
        }
    }
}

struct Call<'a> {
    method: http::Method,
    segments: &'a [&'a str],
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
    cost: u64,
    heavy: bool,
    /// Concurrency units the call takes (a composite takes 5).
    units: u32,
    /// `If-Modified-Since` (polling) or `If-Unmodified-Since` (safe writes) with its value.
    condition: Option<(http::HeaderName, String)>,
}

impl<'a> Call<'a> {
    fn get(segments: &'a [&'a str]) -> Self {
        Self {
            method: http::Method::GET,
            segments,
            query: Vec::new(),
            body: None,
            cost: 1,
            heavy: false,
            units: 1,
            condition: None,
        }
    }
}

/// The Zoho CRM REST client for one org. `Send + Sync`; share it behind an `Arc`.
pub struct ZohoClient {
    http: HttpClient,
    settings: ZohoSettings,
    fetcher: Arc<RefreshTokenFetcher>,
    tokens: TokenCache,
    clock: Arc<dyn Clock>,
    permits: Semaphore,
    heavy: Semaphore,
    credits: CreditMeter,
    /// Size of `permits`, so a composite never asks for more than exist.
    permit_total: u32,
}

impl std::fmt::Debug for ZohoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZohoClient").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl ZohoClient {
    pub fn new(
        http: HttpClient,
        settings: ZohoSettings,
        credentials: ZohoCredentials,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeliveryError> {
        Self::with_token_vault(http, settings, credentials, clock, None)
    }

    /// [`ZohoClient::new`] whose refresh token, should Zoho replace it, is kept in the token
    /// vault of the slot as connection `.0`'s.
    pub fn with_token_vault(
        http: HttpClient,
        settings: ZohoSettings,
        credentials: ZohoCredentials,
        clock: Arc<dyn Clock>,
        vault: Option<(&str, connect::vault::KeeperSlot)>,
    ) -> Result<Self, DeliveryError> {
        let mut fetcher = RefreshTokenFetcher::new(http.clone(), &settings.accounts_server, credentials)?;
        if let Some((connection, slot)) = vault {
            fetcher = fetcher.with_token_vault(connection, slot);
        }
        let fetcher = Arc::new(fetcher);
        let tokens = TokenCache::new(fetcher.clone(), TOKEN_REFRESH_MARGIN, clock.clone());
        let settings_concurrency = settings.concurrency.max(1);
        Ok(Self {
            permits: Semaphore::new(settings.concurrency.max(1)),
            heavy: Semaphore::new(settings.heavy_concurrency.clamp(1, HEAVY_CONCURRENCY)),
            http,
            settings,
            fetcher,
            tokens,
            clock,
            credits: CreditMeter::default(),
            permit_total: u32::try_from(settings_concurrency).unwrap_or(u32::MAX),
        })
    }

    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    pub fn credits(&self) -> &CreditMeter {
        &self.credits
    }

    /// Permits free right now (tests and metrics).
    pub fn available_permits(&self) -> usize {
        self.permits.available_permits()
    }

    fn url(&self, segments: &[&str], query: &[(&'static str, String)]) -> Result<Url, DeliveryError> {
        let domain = match self.fetcher.api_domain() {
            Some(d) if !self.settings.pin_api_domain => d,
            _ => self.settings.api_domain.clone(),
        };
        let mut url = Url::parse(&domain).map_err(|e| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("the API domain `{domain}` is not a URL ({e})"),
        })?;
        {
            let mut path = url.path_segments_mut().map_err(|()| DeliveryError::Rejected {
                vendor: VENDOR,
                detail: format!("the API domain `{domain}` cannot take a path"),
            })?;
            path.pop_if_empty().extend(["crm", self.settings.api_version.as_str()]);
            // Pushing segments escapes '/' and '?', so an id cannot change the path.
            path.extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(url)
    }

    /// Sends a call under the concurrency permits; on INVALID_TOKEN invalidates the token,
    /// refetches once and replays once.
    async fn send(&self, call: Call<'_>) -> Result<Raw, DeliveryError> {
        let closed = |_| DeliveryError::Transport { endpoint: "zoho".into(), reason: "client shut down".into() };
        let _permit = self.permits.acquire_many(call.units.min(self.permit_total)).await.map_err(closed)?;
        let _heavy = if call.heavy { Some(self.heavy.acquire().await.map_err(closed)?) } else { None };
        let mut replayed = false;
        loop {
            let token = self.tokens.get().await?;
            let url = self.url(call.segments, &call.query)?;
            let mut request = self
                .http
                .request(call.method.clone(), url)
                .header(http::header::AUTHORIZATION, authorization_value(&token))
                .header(http::header::ACCEPT, "application/json");
            if let Some((name, value)) = &call.condition {
                request = request.header(name, value);
            }
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            let resp = self.http.send(request).await?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, self.clock.now()));
            let headers = resp.headers().clone();
            let body = read_body_capped(resp, MAX_ANSWER_BYTES).await?.to_vec();
            if status != 401 && status != 429 {
                self.credits.record(call.cost, &headers);
            }
            if status == 401 && !replayed {
                let code = error_code(&body);
                if matches!(code.as_deref(), Some("INVALID_TOKEN" | "AUTHENTICATION_FAILURE")) {
                    tracing::info!("Zoho rejected the access token; refreshing once and replaying.");
                    self.tokens.invalidate(&token).await;
                    replayed = true;
                    continue;
                }
            }
            return Ok(Raw { status, retry_after, body });
        }
    }

    /// `GET /{Module}/{id}`; `None` when Zoho has no such record (204, or 400 INVALID_DATA).
    pub async fn get_record(&self, module: &str, id: &str, fields: &[&str]) -> Result<Option<Value>, DeliveryError> {
        let segments = [module, id];
        let mut call = Call::get(&segments);
        if !fields.is_empty() {
            call.query.push(("fields", fields.join(",")));
        }
        let raw = self.send(call).await?;
        if raw.status == 400 && error_code(&raw.body).as_deref() == Some("INVALID_DATA") {
            return Ok(None);
        }
        Ok(raw.json()?.and_then(|v| v.get("data").and_then(|d| d.get(0)).cloned()))
    }

    pub async fn get_deal(&self, id: &str) -> Result<Option<Deal>, DeliveryError> {
        self.get_record("Deals", id, &[]).await?.as_ref().map(Deal::from_record).transpose()
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, DeliveryError> {
        self.get_record("Accounts", id, &[]).await?.as_ref().map(Account::from_record).transpose()
    }

    pub async fn get_contact(&self, id: &str) -> Result<Option<Contact>, DeliveryError> {
        self.get_record("Contacts", id, &[]).await?.as_ref().map(Contact::from_record).transpose()
    }

    /// Every deal, typed, with the fields [`Deal`] reads.
    pub async fn list_deals(&self) -> Result<Vec<Deal>, DeliveryError> {
        let fields =
            ["Deal_Name", "Stage", "Amount", "Currency", "Closing_Date", "Account_Name", "Owner", "Modified_Time"];
        self.list_all("Deals", &fields, MAX_PER_PAGE).await?.iter().map(Deal::from_record).collect()
    }

    async fn page_at(
        &self,
        segments: &[&str],
        fields: &[&str],
        per_page: u32,
        cursor: &PageCursor,
    ) -> Result<RecordPage, DeliveryError> {
        let mut call = Call::get(segments);
        call.query.push(("fields", fields.join(",")));
        call.query.push(("per_page", per_page.clamp(1, MAX_PER_PAGE).to_string()));
        // Never both: Zoho answers AMBIGUITY_DURING_PROCESSING.
        match cursor {
            PageCursor::Page(n) => call.query.push(("page", n.to_string())),
            PageCursor::Token(t) => call.query.push(("page_token", t.clone())),
        }
        let Some(answer) = self.send(call).await?.json()? else { return Ok(RecordPage::default()) };
        Ok(parse_page(&answer, cursor))
    }

    /// One page of `GET /{Module}?fields=…` (`fields` is mandatory, max 50).
    pub async fn list_page(
        &self,
        module: &str,
        fields: &[&str],
        per_page: u32,
        cursor: &PageCursor,
    ) -> Result<RecordPage, DeliveryError> {
        self.page_at(&[module], fields, per_page, cursor).await
    }

    async fn all_pages(&self, segments: &[&str], fields: &[&str], per_page: u32) -> Result<Vec<Value>, DeliveryError> {
        let mut out = Vec::new();
        let mut cursor = PageCursor::Page(1);
        loop {
            let page = self.page_at(segments, fields, per_page, &cursor).await?;
            out.extend(page.records);
            match page.next {
                Some(next) => cursor = next,
                None => return Ok(out),
            }
        }
    }

    /// Every record of a module, page by page while `more_records`.
    pub async fn list_all(&self, module: &str, fields: &[&str], per_page: u32) -> Result<Vec<Value>, DeliveryError> {
        self.all_pages(&[module], fields, per_page).await
    }

    /// A related list of one record, all pages (`Notes`, `Calls`, `Activities_Chronological_View_History` …).
    pub async fn related(
        &self,
        module: &str,
        id: &str,
        related_list: &str,
        fields: &[&str],
    ) -> Result<Vec<Value>, DeliveryError> {
        self.all_pages(&[module, id, related_list], fields, MAX_PER_PAGE).await
    }

    pub async fn notes(&self, module: &str, id: &str) -> Result<Vec<Value>, DeliveryError> {
        self.related(module, id, "Notes", &["Note_Title", "Note_Content", "Owner", "Created_Time"]).await
    }

    /// Closed activities (calls, tasks, events), each row tagged `$module`.
    pub async fn closed_activities(&self, module: &str, id: &str) -> Result<Vec<Value>, DeliveryError> {
        let fields = ["Subject", "Activity_Type", "Owner", "Closed_Time", "Modified_Time"];
        self.related(module, id, "Activities_Chronological_View_History", &fields).await
    }

    /// `POST /coql`; rows and `more_records`. Counts as heavy; credits by LIMIT.
    pub async fn coql(&self, select_query: &str) -> Result<(Vec<Value>, bool), DeliveryError> {
        let call = Call {
            method: http::Method::POST,
            segments: &["coql"],
            query: Vec::new(),
            body: Some(json!({ "select_query": select_query })),
            cost: coql_cost(select_query),
            heavy: true,
            units: 1,
            condition: None,
        };
        let Some(answer) = self.send(call).await?.json()? else { return Ok((Vec::new(), false)) };
        let rows = answer.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
        let more = answer.pointer("/info/more_records").and_then(Value::as_bool).unwrap_or(false);
        Ok((rows, more))
    }

    async fn write_batches(
        &self,
        method: http::Method,
        segments: &[&str],
        records: &[Value],
        extra: &[(&str, Value)],
    ) -> Result<Vec<RecordResult>, DeliveryError> {
        let mut results = Vec::with_capacity(records.len());
        for chunk in records.chunks(MAX_WRITE_BATCH) {
            let mut body = json!({ "data": chunk });
            for (k, v) in extra {
                body[*k] = v.clone();
            }
            let call = Call {
                method: method.clone(),
                segments,
                query: Vec::new(),
                body: Some(body),
                cost: 1,
                heavy: chunk.len() > HEAVY_WRITE_RECORDS,
                units: 1,
                condition: None,
            };
            let raw = self.send(call).await?;
            let items = match serde_json::from_slice::<Value>(&raw.body).ok().and_then(|v| v.get("data").cloned()) {
                // 200/201/207, and an all-failed 400 that still lists the records.
                Some(Value::Array(items)) if raw.status < 500 && raw.status != 401 && raw.status != 429 => items,
                _ => return Err(api_error(raw.status, &raw.body, raw.retry_after)),
            };
            if items.len() != chunk.len() {
                return Err(bad_record(format!("{} results for {} records", items.len(), chunk.len())));
            }
            for item in items {
                results.push(record_result(&item)?);
            }
        }
        Ok(results)
    }

    /// `PUT /{Module}` in batches of ≤ 100; one result per record, in input order.
    pub async fn update(
        &self,
        module: &str,
        records: &[Value],
        triggers: Triggers,
    ) -> Result<Vec<RecordResult>, DeliveryError> {
        self.write_batches(http::Method::PUT, &[module], records, &[("trigger", triggers.json())]).await
    }

    /// `PUT /{Module}` of one record only if nobody changed it since `unmodified_since`
    /// (`If-Unmodified-Since`); a later change gives the record `ALREADY_MODIFIED` (HTTP 412).
    pub async fn update_if_unmodified(
        &self,
        module: &str,
        record: Value,
        unmodified_since: ZonedTime,
        triggers: Triggers,
    ) -> Result<RecordResult, DeliveryError> {
        let call = Call {
            method: http::Method::PUT,
            segments: &[module],
            query: Vec::new(),
            body: Some(json!({ "data": [record], "trigger": triggers.json() })),
            cost: 1,
            heavy: false,
            units: 1,
            condition: None,
        };
        let mut call = call;
        call.condition = Some((http::header::IF_UNMODIFIED_SINCE, format_datetime(unmodified_since)));
        let raw = self.send(call).await?;
        let item = serde_json::from_slice::<Value>(&raw.body).ok().and_then(|v| v.pointer("/data/0").cloned());
        match item {
            Some(item) if raw.status < 500 && raw.status != 401 && raw.status != 429 => record_result(&item),
            _ => Err(api_error(raw.status, &raw.body, raw.retry_after)),
        }
    }

    /// `DELETE /{Module}?ids=…` in batches of ≤ 100; one result per id, in order.
    pub async fn delete(&self, module: &str, ids: &[&str]) -> Result<Vec<RecordResult>, DeliveryError> {
        let mut results = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_WRITE_BATCH) {
            let segments = [module];
            let mut call = Call::get(&segments);
            call.method = http::Method::DELETE;
            call.query.push(("ids", chunk.join(",")));
            call.query.push(("wf_trigger", "false".into()));
            let raw = self.send(call).await?;
            let items = match serde_json::from_slice::<Value>(&raw.body).ok().and_then(|v| v.get("data").cloned()) {
                Some(Value::Array(items)) if raw.status < 500 && raw.status != 401 && raw.status != 429 => items,
                _ => return Err(api_error(raw.status, &raw.body, raw.retry_after)),
            };
            for item in &items {
                results.push(record_result(item)?);
            }
        }
        Ok(results)
    }

    /// `GET /{Module}/deleted?type=all`, only those deleted after `since` when given.
    pub async fn deleted(&self, module: &str, since: Option<ZonedTime>) -> Result<Vec<Value>, DeliveryError> {
        let segments = [module, "deleted"];
        let mut call = Call::get(&segments);
        call.query.push(("type", "all".into()));
        call.condition = since.map(|s| (http::header::IF_MODIFIED_SINCE, format_datetime(s)));
        let answer = self.send(call).await?.json()?;
        Ok(answer.and_then(|a| a.get("data").and_then(Value::as_array).cloned()).unwrap_or_default())
    }

    /// `POST /{Module}` in batches of ≤ 100.
    pub async fn insert(
        &self,
        module: &str,
        records: &[Value],
        triggers: Triggers,
    ) -> Result<Vec<RecordResult>, DeliveryError> {
        self.write_batches(http::Method::POST, &[module], records, &[("trigger", triggers.json())]).await
    }

    /// `POST /{Module}/upsert` with `duplicate_check_fields`, in batches of ≤ 100.
    pub async fn upsert(
        &self,
        module: &str,
        records: &[Value],
        duplicate_check_fields: &[&str],
        triggers: Triggers,
    ) -> Result<Vec<RecordResult>, DeliveryError> {
        let extra = [("duplicate_check_fields", json!(duplicate_check_fields)), ("trigger", triggers.json())];
        self.write_batches(http::Method::POST, &[module, "upsert"], records, &extra).await
    }

    /// Records modified after `since`, all pages, oldest first (`If-Modified-Since`; 304 → empty).
    /// For the reconciliation poll next to notifications.
    pub async fn list_modified_since(
        &self,
        module: &str,
        fields: &[&str],
        since: ZonedTime,
    ) -> Result<Vec<Value>, DeliveryError> {
        let mut out = Vec::new();
        let mut cursor = PageCursor::Page(1);
        loop {
            let mut call = Call::get(std::slice::from_ref(&module));
            call.query.push(("fields", fields.join(",")));
            call.query.push(("per_page", MAX_PER_PAGE.to_string()));
            call.query.push(("sort_by", "Modified_Time".into()));
            call.query.push(("sort_order", "asc".into()));
            match &cursor {
                PageCursor::Page(n) => call.query.push(("page", n.to_string())),
                PageCursor::Token(t) => call.query.push(("page_token", t.clone())),
            }
            call.condition = Some((http::header::IF_MODIFIED_SINCE, format_datetime(since)));
            let Some(answer) = self.send(call).await?.json()? else { return Ok(out) };
            out.extend(answer.get("data").and_then(Value::as_array).cloned().unwrap_or_default());
            let info = answer.get("info").cloned().unwrap_or(Value::Null);
            if !info.get("more_records").and_then(Value::as_bool).unwrap_or(false) {
                return Ok(out);
            }
            cursor = match (info.get("next_page_token").and_then(Value::as_str), &cursor) {
                (Some(t), _) => PageCursor::Token(t.to_owned()),
                (None, PageCursor::Page(n)) => PageCursor::Page(n + 1),
                (None, PageCursor::Token(_)) => return Ok(out),
            };
        }
    }

    /// `POST /__composite_requests`: up to 5 GETs in one call, one credit, 5 concurrency units.
    /// Sub-responses come back in request order.
    pub async fn composite(&self, requests: &[SubRequest]) -> Result<Vec<SubResponse>, DeliveryError> {
        if requests.is_empty() || requests.len() > MAX_COMPOSITE {
            return Err(DeliveryError::BadPayload {
                destination: "Zoho composite".into(),
                detail: format!("{} sub-requests; Zoho takes 1 to {MAX_COMPOSITE}", requests.len()),
            });
        }
        let version = &self.settings.api_version;
        let subs: Vec<Value> = requests
            .iter()
            .map(|r| {
                json!({"sub_request_id": r.id, "method": "GET", "uri": format!("/crm/{version}/{}", r.path), "params": r.params})
            })
            .collect();
        let call = Call {
            method: http::Method::POST,
            segments: &["__composite_requests"],
            query: Vec::new(),
            // Rollback and parallel execution cannot both be on; reads need no rollback.
            body: Some(json!({"rollback_on_fail": false, "parallel_execution": true, "__composite_requests": subs})),
            cost: 1,
            heavy: false,
            units: COMPOSITE_UNITS,
            condition: None,
        };
        let answer = self.send(call).await?.json()?.unwrap_or(Value::Null);
        parse_composite(&answer, requests)
    }

    /// `DELETE /actions/watch?channel_ids=…`: disables channels.
    pub async fn disable_watch(&self, channel_ids: &[&str]) -> Result<Vec<ZohoStatus>, DeliveryError> {
        let mut call = Call::get(&["actions", "watch"]);
        call.method = http::Method::DELETE;
        call.query.push(("channel_ids", channel_ids.join(",")));
        let answer = self.send(call).await?.json()?.unwrap_or(Value::Null);
        serde_json::from_value(answer.get("watch").cloned().unwrap_or(json!([])))
            .map_err(|e| bad_record(format!("a watch answer: {e}")))
    }

    /// `POST /actions/watch`: enables notification channels; the answer's `watch[]` items.
    pub async fn watch(&self, body: Value) -> Result<Vec<ZohoStatus>, DeliveryError> {
        self.watch_call(http::Method::POST, body).await
    }

    /// `PATCH /actions/watch`: e.g. pushes `channel_expiry` forward.
    pub async fn patch_watch(&self, body: Value) -> Result<Vec<ZohoStatus>, DeliveryError> {
        self.watch_call(http::Method::PATCH, body).await
    }

    async fn watch_call(&self, method: http::Method, body: Value) -> Result<Vec<ZohoStatus>, DeliveryError> {
        let call = Call {
            method,
            segments: &["actions", "watch"],
            query: Vec::new(),
            body: Some(body),
            cost: 1,
            heavy: false,
            units: 1,
            condition: None,
        };
        let answer = self.send(call).await?.json()?.unwrap_or(Value::Null);
        let items = answer.get("watch").cloned().unwrap_or(json!([]));
        serde_json::from_value(items).map_err(|e| bad_record(format!("a watch answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("zoho/{name}"))
    }

    #[test]
    fn deal_fixture_becomes_typed_deal() {
        let v = fixture("records/deal_get.json");
        let deal = Deal::from_record(&v["data"][0]).unwrap();
        assert_eq!(deal.id, "5843104000001234001");
        let amount = deal.amount.unwrap();
        assert_eq!((amount.amount_string().as_str(), amount.currency.code()), ("1250000.00", "HKD"));
        assert_eq!(deal.account.unwrap().name.as_deref(), Some("Kowloon Precision Components Ltd"));
        assert_eq!(deal.closing_date.unwrap().to_string(), "2025-09-30");
        let modified = deal.modified_time.unwrap();
        assert_eq!(format_datetime(modified), "2025-08-14T14:30:05+08:00");
    }

    #[test]
    fn composite_fixture_pairs_with_requests() {
        let answer = fixture("composite/response.json");
        let request = fixture("composite/request.json");
        let requests: Vec<SubRequest> = request["__composite_requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| SubRequest::get(r["sub_request_id"].as_str().unwrap(), "x", &[]))
            .collect();
        let subs = parse_composite(&answer, &requests).unwrap();
        assert_eq!(subs.len(), 4);
        assert_eq!((subs[0].id.as_str(), subs[0].status_code), ("deal", 200));
        let deal = Deal::from_record(&subs[0].rows()[0]).unwrap();
        assert_eq!(deal.id, "5843104000001234001");
        assert!(!subs[1].rows().is_empty());
        assert!(parse_composite(&answer, &requests[..2]).is_err());
    }

    #[test]
    fn list_fixtures_page_by_number_then_token() {
        let page1 = parse_page(&fixture("records/deals_list_page1.json"), &PageCursor::Page(1));
        assert_eq!((page1.records.len(), page1.next), (2, Some(PageCursor::Page(2))));
        let page2 = parse_page(&fixture("records/deals_list_page2.json"), &PageCursor::Page(2));
        assert!(!page2.more_records);
        assert_eq!(page2.next, None);
        let tokened = fixture("records/deals_list_with_page_token.json");
        let page = parse_page(&tokened, &PageCursor::Page(10));
        let expected = tokened["info"]["next_page_token"].as_str().map(|t| PageCursor::Token(t.to_owned()));
        assert!(expected.is_some());
        assert_eq!(page.next, expected);
    }

    #[test]
    fn write_fixture_results() {
        let v = fixture("write/update_deals_response_mixed_207.json");
        let statuses: Vec<ZohoStatus> = serde_json::from_value(v["data"].clone()).unwrap();
        assert_eq!(statuses.iter().filter(|s| s.is_success()).count(), 1);
        assert_eq!(statuses[1].summary(), "INVALID_DATA: invalid data (field Stage)");
        let v = fixture("write/upsert_contacts_response.json");
        assert!(v["data"].as_array().unwrap().iter().all(|r| r["action"].is_string()));
    }

    #[test]
    fn account_contact_and_note_fixtures() {
        let account = Account::from_record(&fixture("records/account_get.json")["data"][0]).unwrap();
        assert_eq!(account.name, "Kowloon Precision Components Ltd");
        assert_eq!(account.annual_revenue.unwrap().amount_string(), "86000000.00");
        assert_eq!(account.country.as_deref(), Some("Hong Kong"));
        let contact = Contact::from_record(&fixture("records/contact_get.json")["data"][0]).unwrap();
        assert_eq!(contact.full_name, "Ka Yan Wong");
        assert_eq!(contact.account.unwrap().id, "5843104000000871001");
        let notes = fixture("related/deal_notes.json");
        let note = Note::from_record(&notes["data"][0]).unwrap();
        assert_eq!(note.title.as_deref(), Some("Discount request"));
        assert_eq!(note.parent.unwrap().id, "5843104000001234001");
        assert!(note.created_time.is_some());
    }

    #[test]
    fn coql_lookup_has_only_an_id() {
        let v = fixture("coql/response_recent_deals.json");
        let deal = Deal::from_record(&v["data"][0]).unwrap();
        assert_eq!(deal.account, Some(Lookup { id: "5843104000000871001".into(), name: None }));
    }

    #[test]
    fn datetimes_are_written_without_z_or_fractions() {
        let t = ZonedTime::parse("t", "2025-08-14T06:30:05.123Z").unwrap();
        assert_eq!(format_datetime(t), "2025-08-14T14:30:05+08:00");
    }

    #[test]
    fn coql_costs_follow_the_limit() {
        assert_eq!(coql_cost("select id from Deals where id is not null"), 1);
        assert_eq!(coql_cost("select id from Deals where id is not null limit 200"), 1);
        assert_eq!(coql_cost("select id from Deals where id is not null LIMIT 1000 offset 5"), 2);
        assert_eq!(coql_cost("select id from Deals where id is not null limit 2000"), 3);
    }

    #[test]
    fn credits_header_is_read() {
        let meter = CreditMeter::default();
        let mut headers = http::HeaderMap::new();
        meter.record(1, &headers);
        assert_eq!((meter.spent(), meter.remaining()), (1, None));
        headers.insert("X-API-CREDITS-REMAINING", "48211".parse().unwrap());
        meter.record(2, &headers);
        assert_eq!((meter.spent(), meter.remaining()), (3, Some(48211)));
    }
}
