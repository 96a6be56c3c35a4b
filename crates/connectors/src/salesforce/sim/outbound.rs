//! Outbound Message sender of the simulator (reference A4): a SOAP POST per changed record,
//! resent with doubling back-off until the listener answers 200 with `Ack=true`.

use serde_json::Value;
use sim::SimState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Unacknowledged messages kept at most; beyond it new ones are dropped (Salesforce's own queue
/// is bounded too, and a test sim must not grow without end).
const MAX_PENDING: u64 = 1000;
/// Salesforce gives up after 24 h; a test sim gives up after this many tries.
const MAX_ATTEMPTS: u32 = 50;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The SOAP envelope for one record (null and nested fields left out).
pub fn envelope(record: &Value, notification_id: &str) -> String {
    let object = super::seed::object_of_prefix(record["Id"].as_str().unwrap_or_default()).unwrap_or("Opportunity");
    let mut fields = String::new();
    if let Some(map) = record.as_object() {
        for (k, v) in map {
            let text = match v {
                Value::String(s) => escape(s),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            fields.push_str(&format!("     <sf:{k}>{text}</sf:{k}>\n"));
        }
    }
    let org = super::seed::ORG_ID;
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k5g000000XyzqAAC</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://hktrading.my.salesforce.com/services/Soap/c/62.0/{org15}</EnterpriseUrl>
   <PartnerUrl>https://hktrading.my.salesforce.com/services/Soap/u/62.0/{org15}</PartnerUrl>
   <Notification>
    <Id>{notification_id}</Id>
    <sObject xsi:type="sf:{object}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
{fields}    </sObject>
   </Notification>
  </notifications>
 </soapenv:Body>
</soapenv:Envelope>
"#,
        org15 = &org[..15]
    )
}

#[derive(Debug, Default)]
struct Stats {
    acked: AtomicU64,
    attempts: AtomicU64,
    pending: AtomicU64,
}

pub struct Sender {
    http: reqwest::Client,
    base: Duration,
    max: Duration,
    stats: Arc<Stats>,
}

impl Sender {
    pub fn new(base: Duration, max: Duration) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default();
        Self { http, base, max, stats: Arc::new(Stats::default()) }
    }

    /// (acknowledged, attempts).
    pub fn stats(&self) -> (u64, u64) {
        (self.stats.acked.load(Ordering::SeqCst), self.stats.attempts.load(Ordering::SeqCst))
    }

    /// Queues one message; needs a Tokio runtime (every caller is an async handler).
    pub fn send(&self, url: String, body: String, journal: Option<SimState>) {
        if self.stats.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
            self.stats.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("Simulated outbound-message queue is full; dropping a message.");
            return;
        }
        let (http, stats, mut delay, max) = (self.http.clone(), self.stats.clone(), self.base, self.max);
        tokio::spawn(async move {
            for _ in 0..MAX_ATTEMPTS {
                stats.attempts.fetch_add(1, Ordering::SeqCst);
                if let Some(j) = &journal {
                    j.record_message("POST", &format!("outbound -> {url}"), &body);
                }
                let sent = http
                    .post(&url)
                    .header("content-type", "text/xml; charset=utf-8")
                    .header("soapaction", "\"\"")
                    .body(body.clone())
                    .send()
                    .await;
                if let Ok(resp) = sent {
                    let ok = resp.status().as_u16() == 200;
                    let text = resp.text().await.unwrap_or_default();
                    if ok && text.contains("<Ack>true</Ack>") {
                        stats.acked.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max);
            }
            stats.pending.fetch_sub(1, Ordering::SeqCst);
        });
    }
}
