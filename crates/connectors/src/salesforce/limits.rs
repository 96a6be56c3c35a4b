//! API quota (reference A5): the `Sforce-Limit-Info` header read from every response into a
//! shared gauge, the `/limits` resource, and a guard that keeps a reserve of the org's daily
//! allocation for interactive work (approvals) by refusing background calls when it runs low.

use super::VENDOR;
use connect::DeliveryError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Header name (case-insensitive in HTTP).
pub const LIMIT_INFO_HEADER: &str = "sforce-limit-info";

/// `used/max` of one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub used: u64,
    pub max: u64,
}

impl Usage {
    /// What is left; zero while bursting past `max`.
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// One parsed `Sforce-Limit-Info` value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitInfo {
    pub api_usage: Option<Usage>,
    pub api_bursts: Option<Usage>,
    /// `per-app-api-usage=17/250(appName=sample-app)` → ("sample-app", 17/250).
    pub per_app: Vec<(String, Usage)>,
}

fn parse_usage(text: &str) -> Option<Usage> {
    let (used, max) = text.trim().split_once('/')?;
    Some(Usage { used: used.trim().parse().ok()?, max: max.trim().parse().ok()? })
}

/// Lenient parse: `;`-separated `key=value`, values `a/b` with an optional `(appName=…)`.
/// Unknown keys and malformed parts are skipped, never an error.
pub fn parse_limit_info(value: &str) -> LimitInfo {
    let mut info = LimitInfo::default();
    for part in value.split(';') {
        let Some((key, val)) = part.trim().split_once('=') else { continue };
        match key.trim() {
            "api-usage" => info.api_usage = parse_usage(val),
            "api-bursts" => info.api_bursts = parse_usage(val),
            "per-app-api-usage" => {
                let (numbers, app) = match val.split_once('(') {
                    Some((n, rest)) => {
                        let app = rest.trim_end_matches(')').trim();
                        (n, app.strip_prefix("appName=").unwrap_or(app).to_owned())
                    }
                    None => (val, String::new()),
                };
                if let Some(usage) = parse_usage(numbers) {
                    info.per_app.push((app, usage));
                }
            }
            _ => {}
        }
    }
    info
}

/// The org's daily API usage as last reported by Salesforce; shared by every client of one
/// connection. Lock-free: it is written on every response.
#[derive(Debug, Default)]
pub struct ApiUsage {
    used: AtomicU64,
    // 0 = not seen yet.
    max: AtomicU64,
}

impl ApiUsage {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&self, usage: Usage) {
        self.used.store(usage.used, Ordering::Relaxed);
        self.max.store(usage.max, Ordering::Relaxed);
    }

    /// Reads the header of one response, if present.
    pub fn observe(&self, headers: &http::HeaderMap) {
        if let Some(usage) =
            headers.get(LIMIT_INFO_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| parse_limit_info(v).api_usage)
        {
            self.record(usage);
        }
    }

    /// Last reported usage, or `None` before the first response.
    pub fn snapshot(&self) -> Option<Usage> {
        let max = self.max.load(Ordering::Relaxed);
        (max > 0).then(|| Usage { used: self.used.load(Ordering::Relaxed), max })
    }
}

/// Who is asking: approvals a person waits for are interactive; sync jobs and polling are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Interactive,
    Background,
}

/// Refuses background calls once fewer than `reserve` requests remain in the daily allocation,
/// so interactive approvals keep their budget. Interactive calls always pass (Salesforce itself
/// refuses them once the allocation is gone).
#[derive(Debug, Clone, Copy)]
pub struct QuotaGuard {
    pub reserve: u64,
    /// How long a refused background job should wait before asking again.
    pub backoff: Duration,
}

impl Default for QuotaGuard {
    fn default() -> Self {
        Self { reserve: 1_000, backoff: Duration::from_secs(15 * 60) }
    }
}

impl QuotaGuard {
    pub fn check(&self, usage: &ApiUsage, priority: Priority) -> Result<(), DeliveryError> {
        if priority == Priority::Interactive {
            return Ok(());
        }
        match usage.snapshot() {
            Some(u) if u.remaining() < self.reserve => Err(DeliveryError::Throttled {
                vendor: VENDOR,
                detail: format!(
                    "background call refused: {} of {} daily API requests left, below the {} kept for \
                     interactive approvals; raise the reserve setting or the org's allocation to change this",
                    u.remaining(),
                    u.max,
                    self.reserve
                ),
                retry_after: self.backoff,
            }),
            _ => Ok(()),
        }
    }
}

/// One entry of `GET /limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct LimitEntry {
    #[serde(rename = "Max")]
    pub max: u64,
    #[serde(rename = "Remaining")]
    pub remaining: u64,
}

/// `GET /limits` → name → entry. Nested per-app breakdowns are ignored.
pub fn parse_limits(body: &serde_json::Value) -> BTreeMap<String, LimitEntry> {
    body.as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| serde_json::from_value::<LimitEntry>(v.clone()).ok().map(|e| (k.clone(), e)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        fixtures::read_fixture(format!("salesforce/{name}"))
    }

    #[test]
    fn every_header_example_parses() {
        let text = fixture("limits/sforce_limit_info_examples.txt");
        let lines: Vec<LimitInfo> =
            text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(parse_limit_info).collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0].api_usage, Some(Usage { used: 18, max: 5000 }));
        assert_eq!(lines[1].per_app, vec![("sample-app".to_owned(), Usage { used: 17, max: 250 })]);
        assert_eq!(lines[3].api_usage.unwrap().remaining(), 0, "bursting past max leaves nothing");
        assert_eq!(lines[3].api_bursts, Some(Usage { used: 1, max: 750 }));
        assert_eq!(lines[4].api_usage.unwrap().remaining(), 165_000 - 152_660);
        assert_eq!(parse_limit_info("garbage; api-usage=x/y"), LimitInfo::default());
    }

    #[test]
    fn the_guard_keeps_the_reserve_for_interactive_calls() {
        let usage = ApiUsage::new();
        let guard = QuotaGuard { reserve: 100, backoff: Duration::from_secs(60) };
        assert!(guard.check(&usage, Priority::Background).is_ok(), "unknown usage does not block");
        usage.record(Usage { used: 850, max: 1000 });
        assert!(guard.check(&usage, Priority::Background).is_ok());
        usage.record(Usage { used: 901, max: 1000 });
        let err = guard.check(&usage, Priority::Background).unwrap_err();
        assert_eq!(err.disposition(), connect::Disposition::RetryAfter(Duration::from_secs(60)));
        assert!(err.to_string().contains("99 of 1000"), "{err}");
        assert!(guard.check(&usage, Priority::Interactive).is_ok());
    }

    #[test]
    fn limits_fixtures_parse() {
        let dev: serde_json::Value =
            serde_json::from_str(&fixture("limits/limits_developer_edition_simple_salesforce.json")).unwrap();
        assert_eq!(parse_limits(&dev)["DailyApiRequests"].max, 15_000);
        let ent: serde_json::Value = serde_json::from_str(&fixture("limits/limits_enterprise_excerpt.json")).unwrap();
        assert_eq!(parse_limits(&ent)["DailyApiRequests"], LimitEntry { max: 165_000, remaining: 152_340 });
    }
}
