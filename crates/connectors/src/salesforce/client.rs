//! The Salesforce REST data client (reference A2, A3, A5, A6).
//!
//! Every call: quota guard → access token → `{instance_url}/services/data/vNN.N/…` →
//! `Sforce-Limit-Info` into the shared [`ApiUsage`] → on `401 INVALID_SESSION_ID` invalidate the
//! token, fetch a new one and replay exactly once → errors through [`super::errors`].

use super::auth::InstanceUrl;
use super::errors::{api_failure, is_session_expired, parse_errors, ApiError};
use super::limits::{parse_limits, ApiUsage, LimitEntry, Priority, QuotaGuard};
use super::VENDOR;
use connect::http::{read_body_capped, redact_url, HttpClient};
use connect::token::TokenCache;
use connect::DeliveryError;
use model::{Money, ZonedTime};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use url::Url;

/// sObject Collections accept at most this many records per call.
pub const COLLECTION_LIMIT: usize = 200;
/// Query pages can be large (2,000 wide rows); anything past this is refused, not buffered.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Result of one record of a collections call (in request order).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordResult {
    #[serde(default)]
    pub id: Option<String>,
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<ApiError>,
    /// Upserts only: true when the record was created.
    #[serde(default)]
    pub created: Option<bool>,
}

/// Result of a single-record upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertResult {
    pub id: String,
    pub created: bool,
}

/// One `/composite` subrequest result.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompositeItem {
    pub reference_id: String,
    pub http_status_code: u16,
    #[serde(default)]
    pub body: Value,
}

/// The Salesforce data client of one connection.
pub struct SalesforceClient {
    http: HttpClient,
    tokens: Arc<TokenCache>,
    instance: Arc<InstanceUrl>,
    version: String,
    usage: Arc<ApiUsage>,
    guard: QuotaGuard,
    calls: AtomicU64,
    /// `Some(code)` for an org with multi-currency off (see [`SalesforceClient::with_single_currency`]).
    single_currency: Option<String>,
}

impl std::fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("version", &self.version)
            .field("instance", &self.instance.get())
            .finish()
    }
}

/// `url` is on the instance `base`: same scheme, host and port, and no user info.
fn same_origin(url: &Url, base: &str) -> bool {
    Url::parse(base).is_ok_and(|b| b.origin() == url.origin()) && url.username().is_empty() && url.password().is_none()
}

/// A relative reference that cannot even be joined: shown without its query.
fn http_redacted(text: &str) -> String {
    text.split(['?', '#']).next().unwrap_or_default().to_owned()
}

fn enc(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

impl SalesforceClient {
    /// `version` like `v62.0`. The instance URL comes from the token fetcher sharing `instance`.
    pub fn new(http: HttpClient, tokens: Arc<TokenCache>, instance: Arc<InstanceUrl>, version: &str) -> Self {
        Self {
            http,
            tokens,
            instance,
            version: version.to_owned(),
            usage: Arc::new(ApiUsage::new()),
            guard: QuotaGuard::default(),
            calls: AtomicU64::new(0),
            single_currency: None,
        }
    }

    /// For an org with multi-currency off: amounts are in `code` (the org's currency) and
    /// `CurrencyIsoCode` does not exist, so queries leave it out (selecting it would fail with
    /// `INVALID_FIELD`, reference A7).
    pub fn with_single_currency(mut self, code: &str) -> Self {
        self.single_currency = Some(code.to_owned());
        self
    }

    /// The org's currency when multi-currency is off; `None` when records carry `CurrencyIsoCode`.
    pub fn single_currency(&self) -> Option<&str> {
        self.single_currency.as_deref()
    }

    /// Share one usage gauge between clients of the same org and set the interactive reserve.
    pub fn with_quota(mut self, usage: Arc<ApiUsage>, guard: QuotaGuard) -> Self {
        self.usage = usage;
        self.guard = guard;
        self
    }

    pub fn usage(&self) -> &Arc<ApiUsage> {
        &self.usage
    }

    /// HTTP requests sent to the data API (replays included).
    pub fn call_count(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn data_path(&self, rest: &str) -> String {
        format!("/services/data/{}/{rest}", self.version)
    }

    async fn send_once(
        &self,
        method: &http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<(u16, secrecy::SecretString, Vec<u8>), DeliveryError> {
        let token = self.tokens.get().await?;
        let base = self.instance.get().ok_or_else(|| DeliveryError::Auth {
            vendor: VENDOR,
            detail: "no instance_url yet: the token answer did not name one".to_owned(),
        })?;
        let mut url = Url::parse(&format!("{base}{path}")).map_err(|e| DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("cannot build a URL from instance `{base}` and `{path}` ({e})"),
        })?;
        // The token goes along: a path that changes the host (`@elsewhere/…`) is refused.
        if !same_origin(&url, &base) {
            return Err(DeliveryError::UnsafeDestination {
                endpoint: redact_url(&url),
                reason: format!("the path `{path}` leaves the Salesforce instance; it is not called"),
            });
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .bearer_auth(token.expose_secret())
            .header(http::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let resp = self.http.send(request).await?;
        self.usage.observe(resp.headers());
        let status = resp.status().as_u16();
        tracing::debug!(%method, url = %redact_url(&url), status, "Salesforce answered.");
        Ok((status, token, read_body_capped(resp, MAX_ANSWER_BYTES).await?.to_vec()))
    }

    /// Quota guard, then the request with the single refresh-and-replay on an expired session.
    /// Returns the status and the raw body, whatever the status.
    async fn exchange(
        &self,
        method: &http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        priority: Priority,
    ) -> Result<(u16, Vec<u8>), DeliveryError> {
        self.guard.check(&self.usage, priority)?;
        let (status, token, bytes) = self.send_once(method, path, query, body).await?;
        if !is_session_expired(status, &bytes) {
            return Ok((status, bytes));
        }
        tracing::info!("Salesforce session expired; fetching a new token and replaying once.");
        self.tokens.invalidate(&token).await;
        let (status, _, bytes) = self.send_once(method, path, query, body).await?;
        Ok((status, bytes))
    }

    /// One data call with the single refresh-and-replay on an expired session. Returns the
    /// status and the JSON body (`Null` for 204).
    pub async fn call(
        &self,
        method: http::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        priority: Priority,
    ) -> Result<(u16, Value), DeliveryError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let (status, bytes) = self.exchange(&method, path, query, body, priority).await?;
        answer(status, &bytes, &what)
    }

    /// `GET /sobjects/{object}/{id}` (all fields when `fields` is empty); `None` when the record
    /// does not exist or is in the recycle bin (404 `NOT_FOUND` / `ENTITY_IS_DELETED`).
    pub async fn find_record(
        &self,
        object: &str,
        id: &str,
        fields: &[&str],
        priority: Priority,
    ) -> Result<Option<Value>, DeliveryError> {
        let path = self.data_path(&format!("sobjects/{object}/{}", enc(id)));
        let joined = fields.join(",");
        let query: Vec<(&str, &str)> = if fields.is_empty() { vec![] } else { vec![("fields", joined.as_str())] };
        let (status, bytes) = self.exchange(&http::Method::GET, &path, &query, None, priority).await?;
        let gone = status == 404
            && parse_errors(&bytes).iter().any(|e| matches!(e.error_code.as_str(), "NOT_FOUND" | "ENTITY_IS_DELETED"));
        if gone {
            return Ok(None);
        }
        Ok(Some(answer(status, &bytes, &format!("GET sobjects/{object}"))?.1))
    }

    /// `GET /sobjects/{object}/{id}?fields=…` (always name the fields: wide objects are costly).
    pub async fn get_record(
        &self,
        object: &str,
        id: &str,
        fields: &[&str],
        priority: Priority,
    ) -> Result<Value, DeliveryError> {
        let path = self.data_path(&format!("sobjects/{object}/{}", enc(id)));
        let joined = fields.join(",");
        let query: Vec<(&str, &str)> = if fields.is_empty() { vec![] } else { vec![("fields", joined.as_str())] };
        Ok(self.call(http::Method::GET, &path, &query, None, priority).await?.1)
    }

    /// Runs SOQL and follows `nextRecordsUrl` until `done`; every page is one API call.
    pub async fn query(&self, soql: &str, priority: Priority) -> Result<Vec<Value>, DeliveryError> {
        let mut records = Vec::new();
        let first = self.data_path("query");
        let (_, mut page) = self.call(http::Method::GET, &first, &[("q", soql)], None, priority).await?;
        loop {
            if let Some(rows) = page.get_mut("records").and_then(Value::as_array_mut) {
                records.append(rows);
            }
            let done = page.get("done").and_then(Value::as_bool).unwrap_or(true);
            let next = page.get("nextRecordsUrl").and_then(Value::as_str).map(str::to_owned);
            match (done, next) {
                (false, Some(next)) => {
                    let next = self.next_page_path(&next)?;
                    page = self.call(http::Method::GET, &next, &[], None, priority).await?.1;
                }
                _ => return Ok(records),
            }
        }
    }

    /// `nextRecordsUrl` is a path on the instance (`/services/data/vNN.N/query/01g…-2000`). An
    /// absolute URL (or `//host/…`) is followed only when it is the instance itself: the answer
    /// must not be able to send the access token anywhere else (R22).
    fn next_page_path(&self, next: &str) -> Result<String, DeliveryError> {
        let base = self.instance.get().ok_or_else(|| DeliveryError::Auth {
            vendor: VENDOR,
            detail: "no instance_url yet: the token answer did not name one".to_owned(),
        })?;
        let refused = |endpoint: String| DeliveryError::UnsafeDestination {
            endpoint,
            reason: "Salesforce's nextRecordsUrl points off the instance; it is not called".to_owned(),
        };
        let instance = Url::parse(&base).map_err(|_| refused(base.clone()))?;
        let joined = instance.join(next).map_err(|_| refused(http_redacted(next)))?;
        if !same_origin(&joined, &base) {
            return Err(refused(redact_url(&joined)));
        }
        Ok(joined[url::Position::BeforePath..].to_owned())
    }

    /// The S3 "one call": opportunity + account + owner + last tasks/events + contact roles.
    /// `None` when no such opportunity exists (deleted).
    pub async fn opportunity_with_history(&self, id: &str, priority: Priority) -> Result<Option<Value>, DeliveryError> {
        let id = super::ids::normalize_id(id)
            .map_err(|e| DeliveryError::Rejected { vendor: VENDOR, detail: e.to_string() })?;
        let currency = if self.single_currency.is_some() { "" } else { "CurrencyIsoCode, " };
        let soql = format!(
            "SELECT Id, Name, StageName, Amount, {currency}CloseDate, Probability, NextStep, OwnerId, AccountId, \
             SystemModstamp, Account.Id, Account.Name, Account.Industry, Account.BillingCity, Account.BillingCountry, Account.Phone, \
             Owner.Name, Owner.Email, \
             (SELECT Id, Subject, ActivityDate, Status, TaskSubtype, CallDurationInSeconds, Description, Who.Name \
             FROM Tasks ORDER BY ActivityDate DESC NULLS LAST LIMIT 10), \
             (SELECT Id, Subject, StartDateTime, EndDateTime, Location, Who.Name FROM Events ORDER BY StartDateTime DESC LIMIT 5), \
             (SELECT Role, IsPrimary, Contact.Name, Contact.Email, Contact.Phone FROM OpportunityContactRoles) \
             FROM Opportunity WHERE Id = '{id}'"
        );
        Ok(self.query(&soql, priority).await?.into_iter().next())
    }

    /// `PATCH /sobjects/{object}/{id}` with only the changed fields (204 on success).
    pub async fn update(
        &self,
        object: &str,
        id: &str,
        fields: &Value,
        priority: Priority,
    ) -> Result<(), DeliveryError> {
        let path = self.data_path(&format!("sobjects/{object}/{}", enc(id)));
        self.call(http::Method::PATCH, &path, &[], Some(fields), priority).await.map(|_| ())
    }

    /// `PATCH /sobjects/{object}/{ext_field}/{value}`: 201 created, 200 updated.
    pub async fn upsert(
        &self,
        object: &str,
        ext_field: &str,
        value: &str,
        fields: &Value,
        priority: Priority,
    ) -> Result<UpsertResult, DeliveryError> {
        let path = self.data_path(&format!("sobjects/{object}/{ext_field}/{}", enc(value)));
        let (status, body) = self.call(http::Method::PATCH, &path, &[], Some(fields), priority).await?;
        let id = body.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        let created = body.get("created").and_then(Value::as_bool).unwrap_or(status == 201);
        Ok(UpsertResult { id, created })
    }

    /// `PATCH /composite/sobjects` in chunks of 200; results record by record in input order.
    /// With `all_or_none` false one bad record does not block the others.
    pub async fn update_collection(
        &self,
        records: &[Value],
        all_or_none: bool,
        priority: Priority,
    ) -> Result<Vec<RecordResult>, DeliveryError> {
        let path = self.data_path("composite/sobjects");
        self.collection_calls(&path, records, all_or_none, priority).await
    }

    /// `PATCH /composite/sobjects/{object}/{ext_field}` in chunks of 200.
    pub async fn upsert_collection(
        &self,
        object: &str,
        ext_field: &str,
        records: &[Value],
        all_or_none: bool,
        priority: Priority,
    ) -> Result<Vec<RecordResult>, DeliveryError> {
        let path = self.data_path(&format!("composite/sobjects/{object}/{ext_field}"));
        self.collection_calls(&path, records, all_or_none, priority).await
    }

    async fn collection_calls(
        &self,
        path: &str,
        records: &[Value],
        all_or_none: bool,
        priority: Priority,
    ) -> Result<Vec<RecordResult>, DeliveryError> {
        let mut results = Vec::with_capacity(records.len());
        for chunk in records.chunks(COLLECTION_LIMIT) {
            let body = json!({"allOrNone": all_or_none, "records": chunk});
            let (_, answer) = self.call(http::Method::PATCH, path, &[], Some(&body), priority).await?;
            let items: Vec<RecordResult> = serde_json::from_value(answer).map_err(|e| DeliveryError::Server {
                vendor: VENDOR,
                status: 200,
                detail: format!("collections answer is not a result list ({e})"),
            })?;
            if items.len() != chunk.len() {
                return Err(DeliveryError::Server {
                    vendor: VENDOR,
                    status: 200,
                    detail: format!("collections answered {} results for {} records", items.len(), chunk.len()),
                });
            }
            results.extend(items);
        }
        Ok(results)
    }

    /// `POST /composite`: up to 25 subrequests, one API call; items in request order.
    pub async fn composite(
        &self,
        all_or_none: bool,
        subrequests: Vec<Value>,
        priority: Priority,
    ) -> Result<Vec<CompositeItem>, DeliveryError> {
        let body = json!({"allOrNone": all_or_none, "compositeRequest": subrequests});
        let (_, answer) =
            self.call(http::Method::POST, &self.data_path("composite"), &[], Some(&body), priority).await?;
        let items = answer.get("compositeResponse").cloned().unwrap_or(Value::Null);
        serde_json::from_value(items).map_err(|e| DeliveryError::Server {
            vendor: VENDOR,
            status: 200,
            detail: format!("composite answer lacks compositeResponse ({e})"),
        })
    }

    /// `GET /limits`.
    pub async fn limits(&self, priority: Priority) -> Result<BTreeMap<String, LimitEntry>, DeliveryError> {
        Ok(parse_limits(&self.call(http::Method::GET, &self.data_path("limits"), &[], None, priority).await?.1))
    }
}

/// A data-API answer as status and JSON (`Null` for an empty body), or its error.
fn answer(status: u16, bytes: &[u8], what: &str) -> Result<(u16, Value), DeliveryError> {
    if status == 300 {
        return Err(DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!("{what}: the external id matches several records; make the field unique"),
        });
    }
    if !(200..300).contains(&status) {
        return Err(api_failure(status, bytes, what));
    }
    if bytes.is_empty() {
        return Ok((status, Value::Null));
    }
    serde_json::from_slice(bytes).map(|value| (status, value)).map_err(|e| DeliveryError::Server {
        vendor: VENDOR,
        status,
        detail: format!("{what}: the answer is not JSON ({e})"),
    })
}

/// Money of a record: `field` (a JSON number) in the record's `CurrencyIsoCode`, or
/// `corporate_currency` in single-currency orgs. `None` when the amount is null.
pub fn money_field(record: &Value, field: &str, corporate_currency: &str) -> Result<Option<Money>, model::ParseError> {
    let amount = match record.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v.clone(),
    };
    let currency = record.get("CurrencyIsoCode").and_then(Value::as_str).unwrap_or(corporate_currency);
    Money::from_json(field, &json!({"amount": amount, "currency": currency})).map(Some)
}

/// A datetime field (`2025-08-14T06:30:05.000+0000` or `…Z`); `None` when null or absent.
pub fn time_field(record: &Value, field: &str) -> Result<Option<ZonedTime>, model::ParseError> {
    match record.get(field).and_then(Value::as_str) {
        None => Ok(None),
        Some(text) => ZonedTime::parse(field, text).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("salesforce/{name}"))
    }

    #[test]
    fn opportunity_money_and_times_convert() {
        let opp = fixture("rest/opportunity_get.json");
        let money = money_field(&opp, "Amount", "HKD").unwrap().unwrap();
        assert_eq!(money.currency.code(), "HKD");
        assert_eq!(money.amount_string(), "1250000.00");
        let stamp = time_field(&opp, "SystemModstamp").unwrap().unwrap();
        assert_eq!(stamp.0.to_string(), opp["SystemModstamp"].as_str().unwrap().replace(".000+0000", "Z"));
        assert_eq!(money_field(&json!({"Amount": null}), "Amount", "HKD").unwrap(), None);
        assert_eq!(money_field(&json!({"Amount": 12.5}), "Amount", "USD").unwrap().unwrap().amount_string(), "12.50");
    }

    #[test]
    fn partial_collection_results_are_read_record_by_record() {
        let items: Vec<RecordResult> =
            serde_json::from_value(fixture("composite/collections_update_response_partial.json")).unwrap();
        assert_eq!(items.iter().filter(|r| r.success).count(), 2);
        assert_eq!(items[2].errors[0].error_code, "MALFORMED_ID");
        let upserts: Vec<RecordResult> =
            serde_json::from_value(fixture("composite/collections_upsert_response.json")).unwrap();
        assert!(upserts.iter().all(|r| r.created.is_some()));
    }
}
