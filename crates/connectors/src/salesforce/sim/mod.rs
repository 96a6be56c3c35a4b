//! The Salesforce simulator (reference A8): one org on one loopback port with the real paths,
//! status codes, error bodies, `Sforce-Limit-Info` and an enforced daily API quota.
//!
//! | area | what |
//! |---|---|
//! | `POST /services/oauth2/token` | client credentials, JWT bearer (RS256 verified), refresh token; tokens expire after a TTL or on [`SalesforceSim::expire_tokens`] |
//! | `GET /services/data/` | versions (not counted) |
//! | `…/sobjects/{O}/{id}` | GET, PATCH (204), DELETE (to the recycle bin: then 404 `ENTITY_IS_DELETED`); `POST …/sobjects/{O}` create (201) |
//! | `…/sobjects/{O}/{ExtId}/{value}` | upsert by `Id` or any custom (`…__c`) field: 201 created, 200 updated, 300 several matches |
//! | `…/query?q=`, `…/query/{locator}-{offset}` | the SOQL subset of [`soql`], server-side locators, batch size |
//! | `…/composite` | subrequests in order, `@{ref.field}` references, allOrNone rollback; one call |
//! | `…/composite/sobjects[/{O}/{ExtId}]` | collections update/upsert, ≤ 200, per-record `statusCode` errors |
//! | `…/limits` | `DailyApiRequests` from the sliding 24 h window |
//!
//! Records (`POST /_sim/records/{entity}`): any seeded object (`Account`, `Contact`, `Opportunity`,
//! `Task`, `Event`, `User`, `OpportunityContactRole`) — a change bumps `SystemModstamp` and, for
//! Opportunities, queues an Outbound Message to the configured endpoint; `outbound`
//! (`{"url": …}`) sets that endpoint; `limits` (`{"daily": n}`) sets the daily allocation;
//! `locked` (`{"id": …}`) makes writes to that record fail with `UNABLE_TO_LOCK_ROW`.

mod describe;
pub mod keys;
mod outbound;
pub mod schema;
pub mod seed;
pub mod soql;
#[cfg(test)]
mod tests;

pub use keys::{TEST_PRIVATE_KEY_PEM, TEST_PUBLIC_KEY_PEM};

use super::ids::normalize_id;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use base64::Engine;
use connect::Clock;
use hmac::Mac;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use sim::{SimError, SimState, Simulator};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The simulated org's My Domain host (what the token endpoint names as `instance_url`).
const MY_DOMAIN: &str = "hktrading.my.salesforce.com";

/// Versions the simulator serves.
pub const VERSIONS: &[&str] = &["58.0", "59.0", "60.0", "61.0", "62.0", "63.0", "64.0", "65.0", "66.0"];
/// Seconds of clock skew allowed on a JWT assertion's `exp`.
const JWT_SKEW_SECS: i64 = 5;
/// Idle query cursors die after this long (commonly 15 minutes, UNVERIFIED).
pub const LOCATOR_IDLE_EXPIRY: SignedDuration = SignedDuration::from_mins(15);
pub use schema::STAGES;

/// Settings of one simulated org.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Daily API allocation (Developer Edition: 15,000).
    pub daily_limit: u64,
    /// Access-token lifetime (the org's session timeout).
    pub token_ttl: Duration,
    /// Query page size when the client sends no `Sforce-Query-Options`.
    pub batch_size: usize,
    /// Where Outbound Messages go; none = not configured.
    pub outbound_url: Option<String>,
    /// First retry delay of an unacknowledged Outbound Message, doubled up to `outbound_retry_max`
    /// (Salesforce: up to 2 h; compressed here for tests).
    pub outbound_retry_base: Duration,
    pub outbound_retry_max: Duration,
    /// `aud` values accepted in JWT assertions.
    pub audiences: Vec<String>,
    /// Refresh-token rotation (a connected-app setting, off by default as in Salesforce): each
    /// refresh-token grant answers a new `refresh_token` and the one used dies at once
    /// (reference A1, "Refresh token flow").
    pub rotate_refresh_tokens: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            daily_limit: 15_000,
            token_ttl: Duration::from_secs(2 * 3600),
            batch_size: 2000,
            outbound_url: None,
            outbound_retry_base: Duration::from_millis(50),
            outbound_retry_max: Duration::from_secs(2),
            audiences: vec!["https://login.salesforce.com".to_owned(), "https://test.salesforce.com".to_owned()],
            rotate_refresh_tokens: false,
        }
    }
}

struct Org {
    records: BTreeMap<String, BTreeMap<String, Value>>,
    tokens: BTreeMap<String, Timestamp>,
    calls: VecDeque<Timestamp>,
    /// Locator → (all rows, page size, last used).
    locators: BTreeMap<String, (Vec<Value>, usize, Timestamp)>,
    next_id: u64,
    daily_limit: u64,
    batch_size: usize,
    outbound_url: Option<String>,
    locked: BTreeSet<String>,
    /// Records deleted through the API (id → object, record): reads and writes answer
    /// `ENTITY_IS_DELETED`, `queryAll` still returns them with `IsDeleted = true`.
    recycled: BTreeMap<String, (String, Value)>,
    /// The one live refresh token (rotation replaces it).
    refresh_token: String,
    /// Refresh tokens issued by rotation so far.
    rotations: u64,
}

/// The Salesforce simulator.
pub struct SalesforceSim {
    clock: Arc<dyn Clock>,
    config: SimConfig,
    org: Mutex<Org>,
    journal: OnceLock<SimState>,
    counted_calls: AtomicU64,
    outbound: outbound::Sender,
}

impl std::fmt::Debug for SalesforceSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceSim").finish_non_exhaustive()
    }
}

type Answer = (u16, Option<Value>);

fn error(status: u16, code: &str, message: &str) -> Answer {
    (status, Some(json!([{"message": message, "errorCode": code}])))
}

/// Checks a write's fields against the object's describe and returns them under their declared
/// names: an unknown field is `INVALID_FIELD` (fixture `restforce/write_error_response.json`), a
/// restricted picklist value outside the list `INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`. Through
/// the API (`api`), read-only fields are `INVALID_FIELD_FOR_INSERT_UPDATE` and a create missing a
/// required field `REQUIRED_FIELD_MISSING`; the `/_sim/records` control API may set any
/// declared field.
fn check_write(
    object: &str,
    create: bool,
    fields: &Map<String, Value>,
    api: bool,
) -> Result<Map<String, Value>, Answer> {
    let Some(def) = schema::object(object) else {
        return Err(error(404, "NOT_FOUND", "The requested resource does not exist"));
    };
    let mut out = Map::new();
    for (name, value) in fields {
        let Some(field) = def.field(name) else {
            return Err(error(
                400,
                "INVALID_FIELD",
                &format!("No such column '{name}' on sobject of type {}", def.name),
            ));
        };
        if field.name == "Id" || (api && !field.writable) {
            return Err((
                400,
                Some(
                    json!([{"message": format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", field.name), "errorCode": "INVALID_FIELD_FOR_INSERT_UPDATE", "fields": [field.name]}]),
                ),
            ));
        }
        if field.restricted && !value.as_str().is_some_and(|v| field.picklist.contains(&v)) {
            return Err((
                400,
                Some(
                    json!([{"message": format!("{}: bad value for restricted picklist field: {}", schema::label_of(field.name), value.as_str().unwrap_or("null")), "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "fields": [field.name]}]),
                ),
            ));
        }
        out.insert(field.name.to_owned(), value.clone());
    }
    if api && create {
        let missing: Vec<&str> =
            def.required.iter().copied().filter(|r| out.get(*r).is_none_or(|v| v.is_null() || v == "")).collect();
        if !missing.is_empty() {
            return Err((
                400,
                Some(
                    json!([{"message": format!("Required fields are missing: [{}]", missing.join(", ")), "errorCode": "REQUIRED_FIELD_MISSING", "fields": missing}]),
                ),
            ));
        }
    }
    Ok(out)
}

fn format_stamp(ts: Timestamp) -> String {
    format!("{}.{:03}+0000", ts.strftime("%Y-%m-%dT%H:%M:%S"), ts.subsec_millisecond())
}

impl SalesforceSim {
    pub fn new(config: SimConfig, clock: Arc<dyn Clock>) -> Self {
        let org = Self::seeded(&config, clock.now());
        Self {
            outbound: outbound::Sender::new(config.outbound_retry_base, config.outbound_retry_max),
            clock,
            config,
            org: Mutex::new(org),
            journal: OnceLock::new(),
            counted_calls: AtomicU64::new(0),
        }
    }

    fn seeded(config: &SimConfig, now: Timestamp) -> Org {
        let mut org = Org {
            records: BTreeMap::new(),
            tokens: BTreeMap::new(),
            calls: VecDeque::new(),
            locators: BTreeMap::new(),
            next_id: 1,
            daily_limit: config.daily_limit,
            batch_size: config.batch_size.max(1),
            outbound_url: config.outbound_url.clone(),
            locked: BTreeSet::new(),
            recycled: BTreeMap::new(),
            refresh_token: seed::REFRESH_TOKEN.to_owned(),
            rotations: 0,
        };
        for (object, mut record) in seed::records().into_iter().chain(seed::setup_records()) {
            let stamp = format_stamp(now);
            record["CreatedDate"] = json!(stamp);
            record["LastModifiedDate"] = json!(stamp);
            record["SystemModstamp"] = json!(stamp);
            let id = record["Id"].as_str().unwrap_or_default().to_owned();
            org.records.entry(object.to_owned()).or_default().insert(id, record);
        }
        org
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Org> {
        self.org.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counted data-API calls since start or reset (the calls that consume the allocation).
    pub fn api_calls(&self) -> u64 {
        self.counted_calls.load(Ordering::SeqCst)
    }

    /// The access tokens issued and still known (a leak check looks for them in what the
    /// gateway wrote).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().tokens.keys().cloned().collect()
    }

    /// Kills every issued access token (as a session timeout or a revoke would).
    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn set_daily_limit(&self, limit: u64) {
        self.lock().daily_limit = limit;
    }

    pub fn set_batch_size(&self, size: usize) {
        self.lock().batch_size = size.max(1);
    }

    pub fn set_outbound_url(&self, url: Option<String>) {
        self.lock().outbound_url = url;
    }

    /// Writes to this record fail with `UNABLE_TO_LOCK_ROW` until reset.
    pub fn lock_record(&self, id: &str) {
        self.lock().locked.insert(id.to_owned());
    }

    /// A stored record.
    pub fn record(&self, object: &str, id: &str) -> Option<Value> {
        self.lock().records.get(object).and_then(|m| m.get(id)).cloned()
    }

    /// The stored record of `object` whose `field` equals `value` (e.g. an external id).
    pub fn find(&self, object: &str, field: &str, value: &str) -> Option<Value> {
        let org = self.lock();
        org.records.get(object)?.values().find(|r| r.get(field).and_then(Value::as_str) == Some(value)).cloned()
    }

    /// Every stored record of `object` whose `field` equals `value`: more than one for an
    /// external id means a write was applied twice as a create (a test counts effects by it).
    pub fn find_all(&self, object: &str, field: &str, value: &str) -> Vec<Value> {
        let org = self.lock();
        org.records
            .get(object)
            .map(|m| m.values().filter(|r| r.get(field).and_then(Value::as_str) == Some(value)).cloned().collect())
            .unwrap_or_default()
    }

    /// Outbound Message deliveries acknowledged / attempted so far.
    pub fn outbound_stats(&self) -> (u64, u64) {
        self.outbound.stats()
    }

    fn api_usage(&self, org: &mut Org) -> (u64, u64) {
        let cutoff = self.clock.now() - SignedDuration::from_hours(24);
        while org.calls.front().is_some_and(|t| *t < cutoff) {
            org.calls.pop_front();
        }
        (org.calls.len() as u64, org.daily_limit)
    }

    fn new_id(org: &mut Org, object: &str) -> String {
        let prefix = seed::prefix_of(object).unwrap_or("a00");
        let n = org.next_id;
        org.next_id += 1;
        normalize_id(&format!("{prefix}5g00000S{n:04}")).unwrap_or_default()
    }

    /// Stores `fields` into record `id` of `object` (creating it when `id` is None), bumping
    /// SystemModstamp. Returns the stored record.
    fn write(
        &self,
        org: &mut Org,
        object: &str,
        id: Option<&str>,
        fields: &Map<String, Value>,
        api: bool,
        changed: &mut Vec<Value>,
    ) -> Result<Value, Answer> {
        if let Some(id) = id {
            if org.locked.contains(id) {
                return Err(error(
                    400,
                    "UNABLE_TO_LOCK_ROW",
                    "unable to obtain exclusive access to this record or 1 records",
                ));
            }
        }
        let fields = check_write(object, id.is_none(), fields, api)?;
        if api {
            Self::check_references(org, object, &fields)?;
        }
        let now = format_stamp(self.clock.now());
        let mut record = match id {
            Some(id) => org
                .records
                .get(object)
                .and_then(|m| m.get(id))
                .cloned()
                .ok_or_else(|| error(404, "NOT_FOUND", "The requested resource does not exist"))?,
            None => {
                let id = Self::new_id(org, object);
                json!({"Id": id, "CreatedDate": now})
            }
        };
        for (k, v) in fields {
            record[k] = v;
        }
        if object == "Contact" {
            // `Name` is the compound of the two (read-only through the API).
            let first = record["FirstName"].as_str().unwrap_or_default();
            let last = record["LastName"].as_str().unwrap_or_default();
            let full = format!("{first} {last}").trim().to_owned();
            if !full.is_empty() {
                record["Name"] = json!(full);
            }
        }
        if object == "Opportunity" {
            let stage = record["StageName"].as_str().unwrap_or_default().to_owned();
            record["IsWon"] = json!(stage == "Closed Won");
            record["IsClosed"] = json!(stage.starts_with("Closed"));
        }
        record["LastModifiedDate"] = json!(now);
        record["SystemModstamp"] = json!(now);
        let id = record["Id"].as_str().unwrap_or_default().to_owned();
        org.records.entry(object.to_owned()).or_default().insert(id, record.clone());
        if object == "Opportunity" {
            changed.push(record.clone());
        }
        Ok(record)
    }

    /// A lookup must name an existing record of an object it may point at, else
    /// `FIELD_INTEGRITY_EXCEPTION` (fixture `composite/composite_response_allornone_failure.json`).
    /// Owners are not checked: the simulated org has few users and owner ids come from mappings.
    fn check_references(org: &Org, object: &str, fields: &Map<String, Value>) -> Result<(), Answer> {
        let Some(def) = schema::object(object) else { return Ok(()) };
        for (name, value) in fields {
            let Some(field) = def.field(name).filter(|f| f.kind == schema::FieldType::Reference && f.name != "OwnerId")
            else {
                continue;
            };
            let Some(text) = value.as_str() else { continue };
            let exists = normalize_id(text).ok().is_some_and(|id18| {
                field.reference_to.iter().any(|o| org.records.get(*o).is_some_and(|m| m.contains_key(&id18)))
            });
            if !exists {
                let label = match field.name {
                    "WhatId" => "Related To ID".to_owned(),
                    "WhoId" => "Name ID".to_owned(),
                    other => schema::label_of(other),
                };
                return Err((
                    400,
                    Some(
                        json!([{"message": format!("{label}: id value of incorrect type: {text}"), "errorCode": "FIELD_INTEGRITY_EXCEPTION", "fields": [field.name]}]),
                    ),
                ));
            }
        }
        Ok(())
    }

    fn find_record(org: &Org, object: &str, id: &str) -> Result<Value, Answer> {
        let Ok(id18) = normalize_id(id) else {
            return Err(error(400, "MALFORMED_ID", &format!("{object} ID: id value of incorrect type: {id}")));
        };
        if let Some(record) = org.records.get(object).and_then(|m| m.get(&id18)) {
            return Ok(record.clone());
        }
        if org.recycled.contains_key(&id18) {
            return Err(error(404, "ENTITY_IS_DELETED", "entity is deleted"));
        }
        Err(error(404, "NOT_FOUND", "The requested resource does not exist"))
    }

    /// One data-API request (already authenticated and counted), also used for composite items.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        org: &mut Org,
        method: &Method,
        path: &str,
        query: &BTreeMap<String, String>,
        headers: &HeaderMap,
        body: Option<&Value>,
        changed: &mut Vec<Value>,
    ) -> Answer {
        let Some(rest) = path.strip_prefix("/services/data/") else {
            return error(404, "NOT_FOUND", "The requested resource does not exist");
        };
        let segs: Vec<String> = rest
            .trim_end_matches('/')
            .split('/')
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let Some(version) = segs.first().and_then(|v| v.strip_prefix('v')).filter(|v| VERSIONS.contains(v)) else {
            return error(404, "NOT_FOUND", "The requested resource does not exist");
        };
        let version = format!("v{version}");
        let segs: Vec<&str> = segs[1..].iter().map(String::as_str).collect();
        // Object names in paths are case-insensitive; answer under the declared spelling.
        let segs: Vec<&str> = segs
            .iter()
            .enumerate()
            .map(|(n, s)| match (n, segs.first(), segs.get(1)) {
                (1, Some(&"sobjects"), _) | (2, Some(&"composite"), Some(&"sobjects")) => {
                    schema::object(s).map_or(*s, |o| o.name)
                }
                _ => *s,
            })
            .collect();
        let object_known = |o: &str| schema::OBJECTS.iter().any(|d| d.name == o);
        let now = self.clock.now();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["limits"]) => {
                let (used, max) = self.api_usage(org);
                (200, Some(limits_body(used, max)))
            }
            ("GET", ["query"]) => {
                self.query(org, &version, query.get("q").map(String::as_str).unwrap_or_default(), headers, false)
            }
            ("GET", ["queryAll"]) => {
                self.query(org, &version, query.get("q").map(String::as_str).unwrap_or_default(), headers, true)
            }
            ("GET", ["query" | "queryAll", locator]) => Self::query_more(org, &version, locator, now),
            ("GET", ["sobjects"]) => (200, Some(describe::global(&version))),
            ("GET", ["sobjects", object]) if object_known(object) => (200, Some(describe::basic(object, &version))),
            ("GET", ["sobjects", object, "describe"]) if object_known(object) => {
                (200, Some(describe::full(object, &version)))
            }
            ("GET", ["sobjects", object, kind @ ("updated" | "deleted")]) if object_known(object) => {
                Self::replication(org, object, kind, query, now)
            }
            ("POST", ["sobjects", object]) if object_known(object) => {
                let Some(fields) = body.and_then(Value::as_object) else {
                    return error(400, "JSON_PARSER_ERROR", "The request body is not a JSON object");
                };
                match self.write(org, object, None, fields, true, changed) {
                    Ok(r) => (201, Some(json!({"id": r["Id"], "success": true, "errors": []}))),
                    Err(e) => e,
                }
            }
            ("GET", ["sobjects", object, id]) if object_known(object) => match Self::find_record(org, object, id) {
                Ok(record) => Self::record_body(object, &version, &record, query.get("fields").map(String::as_str)),
                Err(e) => e,
            },
            ("GET", ["sobjects", object, field, value]) if object_known(object) => {
                match Self::by_external_id(org, &version, object, field, value) {
                    Ok(record) => Self::record_body(object, &version, &record, query.get("fields").map(String::as_str)),
                    Err(e) => e,
                }
            }
            ("PATCH", ["sobjects", object, id]) if object_known(object) => {
                let id18 = match Self::find_record(org, object, id) {
                    Ok(r) => r["Id"].as_str().unwrap_or_default().to_owned(),
                    Err(e) => return e,
                };
                let Some(fields) = body.and_then(Value::as_object) else {
                    return error(400, "JSON_PARSER_ERROR", "The request body is not a JSON object");
                };
                match self.write(org, object, Some(&id18), fields, true, changed) {
                    Ok(_) => (204, None),
                    Err(e) => e,
                }
            }
            ("DELETE", ["sobjects", object, id]) if object_known(object) => match Self::delete(org, object, id, now) {
                Ok(()) => (204, None),
                Err(e) => e,
            },
            ("PATCH", ["sobjects", object, field, value]) if object_known(object) => {
                let Some(fields) = body.and_then(Value::as_object) else {
                    return error(400, "JSON_PARSER_ERROR", "The request body is not a JSON object");
                };
                match self.upsert_one(org, &version, object, field, value, fields, changed) {
                    Ok((status, result)) => (status, Some(result)),
                    Err(e) => e,
                }
            }
            ("POST", ["composite"]) => self.composite(org, body, headers, changed),
            ("POST", ["composite", "batch"]) => self.batch(org, body, headers, changed),
            ("POST", ["composite", "sobjects"]) => self.collection_create(org, body, changed),
            ("PATCH", ["composite", "sobjects"]) => self.collection(org, &version, None, body, changed),
            ("DELETE", ["composite", "sobjects"]) => Self::collection_delete(org, query, now),
            ("GET", ["composite", "sobjects", object]) if object_known(object) => {
                Self::collection_retrieve(org, &version, object, query)
            }
            ("PATCH", ["composite", "sobjects", object, field]) if object_known(object) => {
                self.collection(org, &version, Some((object, field)), body, changed)
            }
            _ => error(404, "NOT_FOUND", "The requested resource does not exist"),
        }
    }

    /// A record's body: all fields, or the `fields=` list (an unknown name is `INVALID_FIELD`).
    fn record_body(object: &str, version: &str, record: &Value, fields: Option<&str>) -> Answer {
        let mut out = Map::new();
        let id = record["Id"].as_str().unwrap_or_default();
        out.insert(
            "attributes".to_owned(),
            json!({"type": object, "url": format!("/services/data/{version}/sobjects/{object}/{id}")}),
        );
        match fields {
            Some(list) => {
                let Some(def) = schema::object(object) else {
                    return error(404, "NOT_FOUND", "The requested resource does not exist");
                };
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let Some(field) = def.field(name) else {
                        return error(
                            400,
                            "INVALID_FIELD",
                            &format!("No such column '{name}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."),
                        );
                    };
                    out.insert(field.name.to_owned(), record.get(field.name).cloned().unwrap_or(Value::Null));
                }
                out.insert("Id".to_owned(), json!(id));
            }
            None => {
                // Every declared field, null when unset (as Salesforce answers a full record).
                if let Some(def) = schema::object(object) {
                    for field in def.fields() {
                        out.insert(field.name.to_owned(), record.get(field.name).cloned().unwrap_or(Value::Null));
                    }
                    out.insert("IsDeleted".to_owned(), json!(false));
                }
                for (k, v) in record.as_object().into_iter().flatten() {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        (200, Some(Value::Object(out)))
    }

    /// `GET /sobjects/{O}/{ExtIdField}/{value}`: one match, 300 with the matches' URLs for
    /// several, 404 for none or for a field that is not an external id.
    fn by_external_id(org: &Org, version: &str, object: &str, field: &str, value: &str) -> Result<Value, Answer> {
        let def = schema::object(object).and_then(|o| o.field(field)).filter(|f| f.external_id || f.name == "Id");
        let Some(def) = def else {
            return Err(error(
                404,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
            ));
        };
        if def.name == "Id" {
            return Self::find_record(org, object, value);
        }
        let matches: Vec<&Value> = org
            .records
            .get(object)
            .map(|m| m.values().filter(|r| r[def.name].as_str() == Some(value)).collect())
            .unwrap_or_default();
        match matches.as_slice() {
            [] => Err(error(404, "NOT_FOUND", "The requested resource does not exist")),
            [one] => Ok((*one).clone()),
            many => Err((
                300,
                Some(json!(many
                    .iter()
                    .map(|r| format!(
                        "/services/data/{version}/sobjects/{object}/{}",
                        r["Id"].as_str().unwrap_or_default()
                    ))
                    .collect::<Vec<_>>())),
            )),
        }
    }

    /// `GET /sobjects/{O}/updated|deleted?start=&end=` (reference A4 "Polling"): ids changed, or
    /// records deleted, in [start, end), both truncated to the minute; start at most 30 days back.
    fn replication(org: &Org, object: &str, kind: &str, query: &BTreeMap<String, String>, now: Timestamp) -> Answer {
        let minute = |name: &str| {
            let text = query.get(name)?;
            let t = model::ZonedTime::parse(name, text).ok()?.0;
            Timestamp::from_second(t.as_second() - t.as_second().rem_euclid(60)).ok()
        };
        let (Some(start), Some(end)) = (minute("start"), minute("end")) else {
            return error(400, "MALFORMED_QUERY", "start and end are required ISO 8601 date-times");
        };
        let earliest = {
            let day = (now - SignedDuration::from_hours(24 * 30)).as_second();
            Timestamp::from_second(day - day.rem_euclid(86_400)).unwrap_or(now)
        };
        if start >= end {
            return error(400, "INVALID_REPLICATION_DATE", "start date must chronologically precede end date");
        }
        if start < earliest {
            return error(400, "INVALID_REPLICATION_DATE", "startDate cannot be more than 30 days ago");
        }
        let within = |record: &Value| {
            record["SystemModstamp"]
                .as_str()
                .and_then(|s| model::ZonedTime::parse("SystemModstamp", s).ok())
                .is_some_and(|t| t.0 >= start && t.0 < end)
        };
        if kind == "updated" {
            let ids: Vec<&Value> = org
                .records
                .get(object)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|r| within(r))
                .map(|r| &r["Id"])
                .collect();
            return (200, Some(json!({"ids": ids, "latestDateCovered": format_stamp(end)})));
        }
        let deleted: Vec<Value> = org
            .recycled
            .values()
            .filter(|(o, r)| o == object && within(r))
            .map(|(_, r)| json!({"id": r["Id"], "deletedDate": r["SystemModstamp"]}))
            .collect();
        (
            200,
            Some(
                json!({"deletedRecords": deleted, "earliestDateAvailable": format_stamp(earliest), "latestDateCovered": format_stamp(end)}),
            ),
        )
    }

    /// Moves a record to the recycle bin.
    fn delete(org: &mut Org, object: &str, id: &str, now: Timestamp) -> Result<(), Answer> {
        let record = Self::find_record(org, object, id)?;
        let id18 = record["Id"].as_str().unwrap_or_default().to_owned();
        if org.locked.contains(&id18) {
            return Err(error(
                400,
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record or 1 records",
            ));
        }
        if let Some(mut record) = org.records.get_mut(object).and_then(|m| m.remove(&id18)) {
            // The deletion is the record's last change (`/deleted` reports it as `deletedDate`).
            record["SystemModstamp"] = json!(format_stamp(now));
            org.recycled.insert(id18, (object.to_owned(), record));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn upsert_one(
        &self,
        org: &mut Org,
        version: &str,
        object: &str,
        field: &str,
        value: &str,
        fields: &Map<String, Value>,
        changed: &mut Vec<Value>,
    ) -> Result<(u16, Value), Answer> {
        // Only `Id` and fields the describe flags as external ids identify a record.
        let declared = schema::object(object).and_then(|o| o.field(field)).filter(|f| f.external_id || f.name == "Id");
        let Some(field) = declared.map(|f| f.name) else {
            return Err(error(
                404,
                "NOT_FOUND",
                &format!("Provided external ID field does not exist or is not accessible: {field}"),
            ));
        };
        let matches: Vec<String> = org
            .records
            .get(object)
            .map(|m| {
                m.values()
                    .filter(|r| r[field].as_str() == Some(value))
                    .filter_map(|r| r["Id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        match matches.as_slice() {
            [] => {
                let mut with_key = fields.clone();
                with_key.insert(field.to_owned(), json!(value));
                // Required fields are not checked on an upsert's create (UNVERIFIED note).
                let r = self.write(org, object, None, &with_key, false, changed)?;
                Ok((201, json!({"id": r["Id"], "success": true, "errors": [], "created": true})))
            }
            [id] => {
                let id = id.clone();
                let r = self.write(org, object, Some(&id), fields, true, changed)?;
                Ok((200, json!({"id": r["Id"], "success": true, "errors": [], "created": false})))
            }
            many => Err((
                300,
                Some(json!(many
                    .iter()
                    .map(|id| format!("/services/data/{version}/sobjects/{object}/{id}"))
                    .collect::<Vec<_>>())),
            )),
        }
    }

    fn query(&self, org: &mut Org, version: &str, soql_text: &str, headers: &HeaderMap, all: bool) -> Answer {
        let refused = |e: soql::SoqlError| error(400, e.code(), &e.message(soql_text));
        let mut parsed = match soql::parse(soql_text) {
            Ok(q) => q,
            Err(e) => return refused(e),
        };
        if let Err(e) = soql::validate(&mut parsed) {
            return refused(e);
        }
        let today = self.clock.now().to_zoned(jiff::tz::TimeZone::UTC).date();
        let outcome = soql::run(&OrgData { org, version, deleted: all, today }, &parsed);
        if outcome.rows.is_empty() {
            return (200, Some(json!({"totalSize": outcome.total, "done": true, "records": []})));
        }
        let rows = outcome.rows;
        let batch = headers
            .get("sforce-query-options")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').find_map(|p| p.trim().strip_prefix("batchSize=")))
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(org.batch_size, |n| n.clamp(1, 2000));
        let total = rows.len();
        if total <= batch {
            return (200, Some(json!({"totalSize": total, "done": true, "records": rows})));
        }
        let locator = format!("01gSIM{:010}", org.next_id);
        org.next_id += 1;
        let first: Vec<Value> = rows[..batch].to_vec();
        org.locators.insert(locator.clone(), (rows, batch, self.clock.now()));
        (
            200,
            Some(
                json!({"totalSize": total, "done": false, "nextRecordsUrl": format!("/services/data/{version}/query/{locator}-{batch}"), "records": first}),
            ),
        )
    }

    fn query_more(org: &mut Org, version: &str, locator_offset: &str, now: Timestamp) -> Answer {
        let invalid = || error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
        let Some((locator, offset)) = locator_offset.rsplit_once('-') else { return invalid() };
        let Ok(offset) = offset.parse::<usize>() else { return invalid() };
        let Some((rows, batch, last_used)) = org.locators.get_mut(locator) else { return invalid() };
        if now.duration_since(*last_used) > LOCATOR_IDLE_EXPIRY {
            org.locators.remove(locator);
            return invalid();
        }
        *last_used = now;
        let (rows, batch) = (&*rows, *batch);
        let end = (offset + batch).min(rows.len());
        let page: Vec<Value> = rows.get(offset..end).map(<[Value]>::to_vec).unwrap_or_default();
        let total = rows.len();
        if end >= total {
            org.locators.remove(locator);
            return (200, Some(json!({"totalSize": total, "done": true, "records": page})));
        }
        (
            200,
            Some(
                json!({"totalSize": total, "done": false, "nextRecordsUrl": format!("/services/data/{version}/query/{locator}-{end}"), "records": page}),
            ),
        )
    }

    fn composite(&self, org: &mut Org, body: Option<&Value>, headers: &HeaderMap, changed: &mut Vec<Value>) -> Answer {
        let Some(items) = body.and_then(|b| b.get("compositeRequest")).and_then(Value::as_array) else {
            return error(400, "JSON_PARSER_ERROR", "compositeRequest is required");
        };
        if items.len() > 25 {
            return error(400, "LIMIT_EXCEEDED", "Composite request limit of 25 subrequests exceeded");
        }
        let all_or_none = body.and_then(|b| b.get("allOrNone")).and_then(Value::as_bool).unwrap_or(false);
        let snapshot = (org.records.clone(), org.recycled.clone());
        let mut results: Vec<Value> = Vec::new();
        let mut refs: BTreeMap<String, Value> = BTreeMap::new();
        let mut failed = false;
        for item in items {
            let reference = item["referenceId"].as_str().unwrap_or_default().to_owned();
            let url = resolve_refs(item["url"].as_str().unwrap_or_default(), &refs);
            let sub_body = item.get("body").map(|b| resolve_value(b, &refs));
            let method = Method::from_bytes(item["method"].as_str().unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
            let (path, query_text) = url.split_once('?').unwrap_or((url.as_str(), ""));
            let query: BTreeMap<String, String> =
                url::form_urlencoded::parse(query_text.as_bytes()).into_owned().collect();
            let (status, answer) = if let Some(expr) = unresolved(&url) {
                let (name, field) = expr.split_once('.').unwrap_or((expr, ""));
                (
                    400,
                    Some(
                        json!([{"errorCode": "PROCESSING_HALTED", "message": format!("Invalid reference specified. No value for {expr} found in {name}. Provided referenceId ('{name}') and field name ('{field}') are valid, but the value is null or the reference resolution failed.")}]),
                    ),
                )
            } else {
                self.dispatch(org, &method, path, &query, headers, sub_body.as_ref(), changed)
            };
            if (200..300).contains(&status) {
                refs.insert(reference.clone(), answer.clone().unwrap_or(Value::Null));
            } else {
                failed = true;
            }
            results
                .push(json!({"body": answer, "httpHeaders": {}, "httpStatusCode": status, "referenceId": reference}));
        }
        if all_or_none && failed {
            (org.records, org.recycled) = snapshot;
            changed.clear();
            for r in &mut results {
                if (200..300).contains(&r["httpStatusCode"].as_u64().unwrap_or(0)) {
                    r["httpStatusCode"] = json!(400);
                    r["body"] = json!([{"errorCode": "PROCESSING_HALTED", "message": "The transaction was rolled back since another operation in the same transaction failed."}]);
                }
            }
        }
        (200, Some(json!({"compositeResponse": results})))
    }

    fn collection(
        &self,
        org: &mut Org,
        version: &str,
        upsert: Option<(&str, &str)>,
        body: Option<&Value>,
        changed: &mut Vec<Value>,
    ) -> Answer {
        let (records, all_or_none) = match collection_body(body) {
            Ok(parsed) => parsed,
            Err(refused) => return refused,
        };
        let snapshot = (org.records.clone(), org.recycled.clone());
        let mut results = Vec::new();
        for record in records {
            let mut fields = record.as_object().cloned().unwrap_or_default();
            let object = fields
                .remove("attributes")
                .and_then(|a| a["type"].as_str().and_then(schema::object).map(|o| o.name.to_owned()))
                .unwrap_or_default();
            let outcome = match upsert {
                Some((object, field)) => {
                    let value = fields.remove(field).and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                    self.upsert_one(org, version, object, field, &value, &fields, changed).map(|(_, r)| r)
                }
                None => {
                    let id = fields.remove("id").or_else(|| fields.remove("Id"));
                    let id = id.as_ref().and_then(Value::as_str).unwrap_or_default().to_owned();
                    match Self::find_record(org, &object, &id) {
                        Ok(_) => self
                            .write(org, &object, normalize_id(&id).ok().as_deref(), &fields, true, changed)
                            .map(|r| json!({"id": r["Id"], "success": true, "errors": []})),
                        Err((_, body))
                            if body.as_ref().and_then(|b| b[0]["errorCode"].as_str()) == Some("ENTITY_IS_DELETED") =>
                        {
                            Err((404, body))
                        }
                        // An id that names no record is "malformed" here (fixture
                        // composite/collections_update_response_partial.json).
                        Err(_) => Err(error(400, "MALFORMED_ID", &format!("malformed id {id}"))),
                    }
                }
            };
            results.push(outcome.unwrap_or_else(item_error));
        }
        roll_back_if_any_failed(org, all_or_none, snapshot, &mut results, changed);
        (200, Some(Value::Array(results)))
    }

    /// `POST /composite/sobjects`: creates up to 200 records of any objects.
    fn collection_create(&self, org: &mut Org, body: Option<&Value>, changed: &mut Vec<Value>) -> Answer {
        let (records, all_or_none) = match collection_body(body) {
            Ok(parsed) => parsed,
            Err(refused) => return refused,
        };
        let snapshot = (org.records.clone(), org.recycled.clone());
        let mut results = Vec::new();
        for record in records {
            let mut fields = record.as_object().cloned().unwrap_or_default();
            let object = fields.remove("attributes").and_then(|a| a["type"].as_str().map(str::to_owned));
            let outcome = match object.as_deref().and_then(schema::object) {
                None => Err(error(
                    400,
                    "INVALID_TYPE",
                    &format!("sObject type '{}' is not supported.", object.unwrap_or_default()),
                )),
                Some(def) => self
                    .write(org, def.name, None, &fields, true, changed)
                    .map(|r| json!({"id": r["Id"], "success": true, "errors": []})),
            };
            results.push(outcome.unwrap_or_else(item_error));
        }
        roll_back_if_any_failed(org, all_or_none, snapshot, &mut results, changed);
        (200, Some(Value::Array(results)))
    }

    /// `DELETE /composite/sobjects?ids=…&allOrNone=…`.
    fn collection_delete(org: &mut Org, query: &BTreeMap<String, String>, now: Timestamp) -> Answer {
        let ids: Vec<&str> = query
            .get("ids")
            .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return error(400, "REQUIRED_FIELD_MISSING", "At least 1 Id is required.");
        }
        if ids.len() > super::client::COLLECTION_LIMIT {
            return error(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            );
        }
        let all_or_none = query.get("allOrNone").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let snapshot = (org.records.clone(), org.recycled.clone());
        let mut results = Vec::new();
        for id in ids {
            let outcome =
                match normalize_id(id).ok().and_then(|id18| schema::object_of_prefix(&id18).map(|o| (o, id18))) {
                    None => Err(error(400, "MALFORMED_ID", &format!("malformed id {id}"))),
                    Some((def, id18)) => match Self::delete(org, def.name, &id18, now) {
                        Ok(()) => Ok(json!({"id": id18, "success": true, "errors": []})),
                        Err((404, _)) if !org.recycled.contains_key(&id18) => {
                            Err(error(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"))
                        }
                        Err(e) => Err(e),
                    },
                };
            let mut result = outcome.unwrap_or_else(item_error);
            if result["success"] == json!(false) {
                result["id"] = json!(id);
            }
            results.push(result);
        }
        roll_back_if_any_failed(org, all_or_none, snapshot, &mut results, &mut Vec::new());
        (200, Some(Value::Array(results)))
    }

    /// `GET /composite/sobjects/{O}?ids=…&fields=…`: the records in request order, null where
    /// an id matches nothing.
    fn collection_retrieve(org: &Org, version: &str, object: &str, query: &BTreeMap<String, String>) -> Answer {
        let Some(fields) = query.get("fields").filter(|f| !f.is_empty()) else {
            return error(400, "REQUIRED_FIELD_MISSING", "The fields parameter is required.");
        };
        let mut out = Vec::new();
        for id in query.get("ids").map(|s| s.split(',').map(str::trim).collect::<Vec<_>>()).unwrap_or_default() {
            match Self::find_record(org, object, id) {
                Ok(record) => match Self::record_body(object, version, &record, Some(fields)) {
                    (200, Some(body)) => out.push(body),
                    refused => return refused,
                },
                Err(_) => out.push(Value::Null),
            }
        }
        (200, Some(Value::Array(out)))
    }

    /// `POST /composite/batch`: up to 25 independent subrequests (urls start at `vNN.N/`), each
    /// committed on its own and each counted against the daily allocation; with
    /// `haltOnError` the ones after the first failure answer 412 `BATCH_PROCESSING_HALTED`.
    fn batch(&self, org: &mut Org, body: Option<&Value>, headers: &HeaderMap, changed: &mut Vec<Value>) -> Answer {
        let Some(items) = body.and_then(|b| b.get("batchRequests")).and_then(Value::as_array) else {
            return error(400, "JSON_PARSER_ERROR", "batchRequests is required");
        };
        if items.len() > 25 {
            return error(400, "LIMIT_EXCEEDED", "Batch request limit of 25 subrequests exceeded");
        }
        let halt_on_error = body.and_then(|b| b.get("haltOnError")).and_then(Value::as_bool).unwrap_or(false);
        let mut results = Vec::new();
        let mut halted = false;
        for (n, item) in items.iter().enumerate() {
            if halted {
                results.push(json!({"statusCode": 412, "result": [{"errorCode": "BATCH_PROCESSING_HALTED", "message": "Batch processing halted per request"}]}));
                continue;
            }
            if n > 0 {
                // The batch itself was counted once; every further subrequest counts too.
                org.calls.push_back(self.clock.now());
                self.counted_calls.fetch_add(1, Ordering::SeqCst);
            }
            let url = item["url"].as_str().unwrap_or_default();
            let path = format!("/services/data/{}", url.trim_start_matches('/').trim_start_matches("services/data/"));
            let (path, query_text) = path.split_once('?').unwrap_or((path.as_str(), ""));
            let query: BTreeMap<String, String> =
                url::form_urlencoded::parse(query_text.as_bytes()).into_owned().collect();
            let method = Method::from_bytes(item["method"].as_str().unwrap_or("GET").as_bytes()).unwrap_or(Method::GET);
            let (status, result) = self.dispatch(org, &method, path, &query, headers, item.get("richInput"), changed);
            halted = halt_on_error && status >= 400;
            results.push(json!({"statusCode": status, "result": result}));
        }
        let has_errors = results.iter().any(|r| r["statusCode"].as_u64().unwrap_or(0) >= 400);
        (200, Some(json!({"hasErrors": has_errors, "results": results})))
    }

    fn mint_token(&self, org: &mut Org) -> String {
        let token = format!("{}!SIM.{}", &seed::ORG_ID[..15], uuid::Uuid::new_v4().simple());
        let expiry = self.clock.now() + SignedDuration::try_from(self.config.token_ttl).unwrap_or(SignedDuration::MAX);
        org.tokens.insert(token.clone(), expiry);
        token
    }

    async fn token(self: Arc<Self>, headers: HeaderMap, body: Bytes) -> Response {
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
        let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
        // A client that reached the simulator by address gets that address back; one that
        // addressed Salesforce's hosts (login.salesforce.com mapped here) gets the org's My
        // Domain, as from the real token endpoint.
        let instance_url = match sim::origin(host) {
            direct if direct.starts_with("http://") => direct,
            _ => format!("https://{MY_DOMAIN}"),
        };
        let fail = |code: &str, text: &str| {
            (StatusCode::BAD_REQUEST, axum::Json(json!({"error": code, "error_description": text}))).into_response()
        };
        let basic = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
        let (client_id, client_secret) = match basic {
            Some((id, secret)) => (Some(id), Some(secret)),
            None => (form.get("client_id").cloned(), form.get("client_secret").cloned()),
        };
        let grant = form.get("grant_type").map(String::as_str).unwrap_or_default();
        let mut rotated = None;
        let signed = match grant {
            "client_credentials" => {
                if client_id.as_deref() != Some(seed::CLIENT_ID) {
                    return fail("invalid_client_id", "client identifier invalid");
                }
                if client_secret.as_deref() != Some(seed::CLIENT_SECRET) {
                    return fail("invalid_client", "invalid client credentials");
                }
                true
            }
            "password" => {
                // Username-password flow: being retired by Salesforce, still common in scripts.
                if client_id.as_deref() != Some(seed::CLIENT_ID) {
                    return fail("invalid_client_id", "client identifier invalid");
                }
                if client_secret.as_deref() != Some(seed::CLIENT_SECRET) {
                    return fail("invalid_client", "invalid client credentials");
                }
                if form.get("username").map(String::as_str) != Some(seed::INTEGRATION_USERNAME)
                    || form.get("password").map(String::as_str) != Some(seed::INTEGRATION_PASSWORD)
                {
                    return fail("invalid_grant", "authentication failure");
                }
                true
            }
            "refresh_token" => {
                if client_id.as_deref() != Some(seed::CLIENT_ID) {
                    return fail("invalid_client_id", "client identifier invalid");
                }
                if client_secret.as_deref().is_some_and(|s| s != seed::CLIENT_SECRET) {
                    return fail("invalid_client", "invalid client credentials");
                }
                let mut org = self.lock();
                if form.get("refresh_token") != Some(&org.refresh_token) {
                    return fail("invalid_grant", "expired access/refresh token");
                }
                if self.config.rotate_refresh_tokens {
                    org.rotations += 1;
                    org.refresh_token = format!("{}.r{}", seed::REFRESH_TOKEN, org.rotations);
                    rotated = Some(org.refresh_token.clone());
                }
                true
            }
            super::auth::JWT_BEARER_GRANT => {
                if let Err((code, text)) =
                    self.verify_jwt(form.get("assertion").map(String::as_str).unwrap_or_default())
                {
                    return fail(code, text);
                }
                false
            }
            _ => return fail("unsupported_grant_type", "grant type not supported"),
        };
        let token = self.mint_token(&mut self.lock());
        let id = format!("https://login.salesforce.com/id/{}/{}", seed::ORG_ID, seed::INTEGRATION_USER_ID);
        let issued_at = self.clock.now().as_millisecond().to_string();
        let mut answer = json!({"access_token": token, "instance_url": instance_url, "id": id, "token_type": "Bearer", "issued_at": issued_at, "scope": "api", "token_format": "opaque"});
        if signed {
            // Lets the client check the answer: HMAC-SHA256(id + issued_at) keyed with the secret.
            if let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(seed::CLIENT_SECRET.as_bytes()) {
                mac.update(format!("{id}{issued_at}").as_bytes());
                answer["signature"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
            }
        }
        if let Some(rotated) = rotated {
            answer["refresh_token"] = json!(rotated);
        }
        (StatusCode::OK, axum::Json(answer)).into_response()
    }

    /// The live refresh token (rotation replaces it) and how many rotations happened.
    pub fn refresh_token(&self) -> (String, u64) {
        let org = self.lock();
        (org.refresh_token.clone(), org.rotations)
    }

    fn verify_jwt(&self, assertion: &str) -> Result<(), (&'static str, &'static str)> {
        /// The claims as clients send them: `exp` a number or, as simple-salesforce sends it,
        /// a numeric string (Salesforce takes both).
        #[derive(serde::Deserialize)]
        struct Claims {
            iss: String,
            sub: String,
            aud: String,
            exp: Value,
        }
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(TEST_PUBLIC_KEY_PEM.as_bytes())
            .map_err(|_| ("invalid_grant", "invalid assertion"))?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        // exp is checked below against the simulator's clock, aud against the configured list.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims = ["iss", "sub", "aud"].into_iter().map(str::to_owned).collect();
        let claims = jsonwebtoken::decode::<Claims>(assertion, &key, &validation)
            .map_err(|_| ("invalid_grant", "invalid assertion"))?
            .claims;
        let exp = match &claims.exp {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        }
        .ok_or(("invalid_grant", "invalid assertion"))?;
        if claims.iss != seed::CLIENT_ID {
            return Err(("invalid_client_id", "client identifier invalid"));
        }
        if !self.config.audiences.contains(&claims.aud) {
            return Err(("invalid_grant", "audience is invalid"));
        }
        let now = self.clock.now().as_second();
        // A few seconds of clock skew on top of the 3 minutes: clients round `exp` to whole
        // seconds (simple-salesforce rounds now + 180 s up), Salesforce's tolerance is UNVERIFIED.
        if exp <= now || exp > now + super::auth::JWT_LIFETIME_SECS + JWT_SKEW_SECS {
            return Err(("invalid_grant", "invalid assertion"));
        }
        if claims.sub != seed::INTEGRATION_USERNAME {
            return Err(("invalid_grant", "user hasn't approved this consumer"));
        }
        Ok(())
    }

    async fn data(self: Arc<Self>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let (answer, usage, changed, outbound_url) = {
            let mut org = self.lock();
            let mut changed = Vec::new();
            let answer = self.authorized_call(&mut org, &method, &uri, &headers, &body, &mut changed);
            let usage = self.api_usage(&mut org);
            (answer, usage, changed, org.outbound_url.clone())
        };
        if let Some(url) = outbound_url {
            for record in changed {
                self.outbound.send(
                    url.clone(),
                    outbound::envelope(&record, &self.next_notification_id()),
                    self.journal.get().cloned(),
                );
            }
        }
        let (status, body) = answer;
        let mut resp = match body {
            Some(v) => (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), axum::Json(v)).into_response(),
            None => StatusCode::from_u16(status).unwrap_or(StatusCode::NO_CONTENT).into_response(),
        };
        if let Ok(v) = HeaderValue::from_str(&format!("api-usage={}/{}", usage.0, usage.1)) {
            resp.headers_mut().insert("sforce-limit-info", v);
        }
        resp
    }

    fn next_notification_id(&self) -> String {
        let mut org = self.lock();
        let n = org.next_id;
        org.next_id += 1;
        normalize_id(&format!("04l5g0000N{n:05}")).unwrap_or_default()
    }

    fn authorized_call(
        &self,
        org: &mut Org,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
        changed: &mut Vec<Value>,
    ) -> Answer {
        let auth = headers.get(axum::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let Some(token) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("OAuth ")) else {
            return error(401, "INVALID_AUTH_HEADER", "INVALID_HEADER_TYPE");
        };
        let now = self.clock.now();
        if org.tokens.get(token.trim()).is_none_or(|exp| *exp <= now) {
            return error(401, "INVALID_SESSION_ID", "Session expired or invalid");
        }
        let (used, max) = self.api_usage(org);
        if used >= max {
            return error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.");
        }
        org.calls.push_back(now);
        self.counted_calls.fetch_add(1, Ordering::SeqCst);
        let query: BTreeMap<String, String> =
            url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
        let json_body = if body.is_empty() {
            None
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(v) => Some(v),
                Err(e) => return error(400, "JSON_PARSER_ERROR", &format!("Unexpected character: {e}")),
            }
        };
        self.dispatch(org, method, uri.path(), &query, headers, json_body.as_ref(), changed)
    }
}

/// A failed write as a collection item: `statusCode` instead of `errorCode`.
fn item_error((_, body): Answer) -> Value {
    let first = body.as_ref().and_then(|e| e.get(0)).cloned().unwrap_or_default();
    json!({"success": false, "errors": [{"statusCode": first["errorCode"], "message": first["message"], "fields": first.get("fields").cloned().unwrap_or(json!([]))}]})
}

type Snapshot = (BTreeMap<String, BTreeMap<String, Value>>, BTreeMap<String, (String, Value)>);

/// The `records` of an sObject Collections body (at most 200) and its `allOrNone` flag.
fn collection_body(body: Option<&Value>) -> Result<(&Vec<Value>, bool), Answer> {
    let Some(records) = body.and_then(|b| b.get("records")).and_then(Value::as_array) else {
        return Err(error(400, "JSON_PARSER_ERROR", "records is required"));
    };
    if records.len() > super::client::COLLECTION_LIMIT {
        return Err(error(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    let all_or_none = body.and_then(|b| b.get("allOrNone")).and_then(Value::as_bool).unwrap_or(false);
    Ok((records, all_or_none))
}

/// allOrNone: one failed item undoes the others, which then report
/// `ALL_OR_NONE_OPERATION_ROLLED_BACK` (fixture `composite/collections_response_allornone_rolled_back.json`).
fn roll_back_if_any_failed(
    org: &mut Org,
    all_or_none: bool,
    snapshot: Snapshot,
    results: &mut [Value],
    changed: &mut Vec<Value>,
) {
    if !all_or_none || results.iter().all(|r| r["success"] == json!(true)) {
        return;
    }
    (org.records, org.recycled) = snapshot;
    changed.clear();
    for r in results {
        if r["success"] == json!(true) {
            *r = json!({"id": r["id"], "success": false, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "Record rolled back because not all records were valid and the request was using AllOrNone header", "fields": []}]});
        }
    }
}

/// The first `@{ref.path}` left unresolved in a subrequest URL.
fn unresolved(url: &str) -> Option<&str> {
    let start = url.find("@{")? + 2;
    let len = url[start..].find('}')?;
    Some(&url[start..start + len])
}

/// Replaces `@{ref.path}` in a subrequest URL with earlier results.
fn resolve_refs(text: &str, refs: &BTreeMap<String, Value>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("@{") {
        let Some(len) = rest[start..].find('}') else { break };
        let expr = &rest[start + 2..start + len];
        let (name, path) = expr.split_once('.').unwrap_or((expr, ""));
        match refs.get(name).map(|v| reference_value(v, path)) {
            Some(Some(value)) => {
                out.push_str(&rest[..start]);
                out.push_str(&value);
            }
            _ => out.push_str(&rest[..start + len + 1]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

fn reference_value(value: &Value, path: &str) -> Option<String> {
    let mut cur = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        cur = cur.get(key)?;
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn resolve_value(value: &Value, refs: &BTreeMap<String, Value>) -> Value {
    match value {
        Value::String(s) => Value::String(resolve_refs(s, refs)),
        Value::Array(a) => Value::Array(a.iter().map(|v| resolve_value(v, refs)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), resolve_value(v, refs))).collect()),
        other => other.clone(),
    }
}

/// The org's records as the SOQL engine sees them.
struct OrgData<'a> {
    org: &'a Org,
    version: &'a str,
    /// `queryAll`: the recycle bin's records too, with `IsDeleted = true`.
    deleted: bool,
    today: jiff::civil::Date,
}

impl soql::Data for OrgData<'_> {
    fn rows(&self, object: &str) -> Vec<Value> {
        let live = self.org.records.get(object).into_iter().flat_map(|m| m.values()).map(|r| {
            let mut r = r.clone();
            r["IsDeleted"] = json!(false);
            r
        });
        let binned = self.org.recycled.values().filter(|(o, _)| self.deleted && o == object).map(|(_, r)| {
            let mut r = r.clone();
            r["IsDeleted"] = json!(true);
            r
        });
        live.chain(binned).collect()
    }

    fn record(&self, id: &str) -> Option<Value> {
        let object = schema::object_of_prefix(id)?;
        self.org.records.get(object.name)?.get(id).cloned()
    }

    fn attributes(&self, row: &Value) -> Value {
        let id = row["Id"].as_str().unwrap_or_default();
        let object = seed::object_of_prefix(id).unwrap_or("Name");
        json!({"type": object, "url": format!("/services/data/{}/sobjects/{object}/{id}", self.version)})
    }

    fn today(&self) -> jiff::civil::Date {
        self.today
    }
}

fn limits_body(used: u64, max: u64) -> Value {
    let fixed = |n: u64| json!({"Max": n, "Remaining": n});
    json!({
        "ConcurrentAsyncGetReportInstances": fixed(200),
        "ConcurrentSyncReportRuns": fixed(20),
        "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)},
        "DailyAsyncApexExecutions": fixed(250_000),
        "DailyBulkApiBatches": fixed(15_000),
        "DailyBulkApiRequests": fixed(5_000),
        "DailyBulkV2QueryJobs": fixed(10_000),
        "DailyDurableStreamingApiEvents": fixed(10_000),
        "DailyStreamingApiEvents": fixed(10_000),
        "DataStorageMB": fixed(5),
        "FileStorageMB": fixed(20),
        "SingleEmail": fixed(15),
    })
}

#[async_trait::async_trait]
impl Simulator for SalesforceSim {
    fn name(&self) -> &'static str {
        "salesforce"
    }

    fn router(self: Arc<Self>) -> Router {
        let token_sim = self.clone();
        let data_sim = self.clone();
        Router::new()
            .route(
                "/services/oauth2/token",
                post(move |headers: HeaderMap, body: Bytes| token_sim.clone().token(headers, body)),
            )
            .route(
                "/services/data/",
                get(|| async {
                    let list: Vec<Value> = VERSIONS
                        .iter()
                        .map(|v| json!({"label": "Simulated", "url": format!("/services/data/v{v}"), "version": v}))
                        .collect();
                    axum::Json(list)
                }),
            )
            .route(
                "/services/data/{*rest}",
                any(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    data_sim.clone().data(method, uri, headers, body)
                }),
            )
    }

    fn info(&self) -> Value {
        let org = self.lock();
        json!({
            "org_id": seed::ORG_ID,
            "client_id": seed::CLIENT_ID,
            "client_secret": seed::CLIENT_SECRET,
            "username": seed::INTEGRATION_USERNAME,
            "password": seed::INTEGRATION_PASSWORD,
            "my_domain": MY_DOMAIN,
            "user_id": seed::INTEGRATION_USER_ID,
            "refresh_token": seed::REFRESH_TOKEN,
            "jwt_public_key_pem": TEST_PUBLIC_KEY_PEM,
            "jwt_private_key_pem": TEST_PRIVATE_KEY_PEM,
            "jwt_audiences": self.config.audiences,
            "api_versions": VERSIONS,
            "daily_api_limit": org.daily_limit,
            "token_ttl_s": self.config.token_ttl.as_secs(),
            "batch_size": org.batch_size,
            "outbound_url": org.outbound_url,
        })
    }

    fn reset(&self) {
        *self.lock() = Self::seeded(&self.config, self.clock.now());
        self.counted_calls.store(0, Ordering::SeqCst);
    }

    fn attach(&self, state: SimState) {
        let _ = self.journal.set(state);
    }

    async fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        let invalid = |detail: &str| SimError::InvalidRecord { entity: entity.to_owned(), detail: detail.to_owned() };
        match entity {
            "outbound" => {
                let url = value["url"].as_str().map(str::to_owned);
                self.set_outbound_url(url);
                return Ok(value);
            }
            "limits" => {
                self.set_daily_limit(value["daily"].as_u64().ok_or_else(|| invalid("expected {\"daily\": n}"))?);
                return Ok(value);
            }
            "locked" => {
                self.lock_record(value["id"].as_str().ok_or_else(|| invalid("expected {\"id\": \"…\"}"))?);
                return Ok(value);
            }
            _ => {}
        }
        let Some(entity) = schema::object(entity).map(|o| o.name) else {
            return Err(SimError::UnknownEntity {
                simulator: "salesforce",
                entity: entity.to_owned(),
                known: schema::OBJECTS
                    .iter()
                    .map(|o| o.name)
                    .chain(["outbound", "limits", "locked"])
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let mut fields = value.as_object().cloned().ok_or_else(|| invalid("expected a JSON object"))?;
        let id = fields.remove("Id").and_then(|v| v.as_str().map(str::to_owned));
        let mut changed = Vec::new();
        let (stored, outbound_url) = {
            let mut org = self.lock();
            let id = match id {
                Some(id) => {
                    let id18 = normalize_id(&id).map_err(|e| invalid(&e.to_string()))?;
                    if !org.records.get(entity).is_some_and(|m| m.contains_key(&id18)) {
                        org.records.entry(entity.to_owned()).or_default().insert(id18.clone(), json!({"Id": id18}));
                    }
                    Some(id18)
                }
                None => None,
            };
            let stored = self
                .write(&mut org, entity, id.as_deref(), &fields, false, &mut changed)
                .map_err(|(_, body)| invalid(&body.map(|b| b.to_string()).unwrap_or_default()))?;
            (stored, org.outbound_url.clone())
        };
        if let Some(url) = outbound_url {
            for record in changed {
                self.outbound.send(
                    url.clone(),
                    outbound::envelope(&record, &self.next_notification_id()),
                    self.journal.get().cloned(),
                );
            }
        }
        Ok(stored)
    }
}
