//! Notification channels of the Zoho simulator: `actions/watch` subscriptions and the callbacks
//! that really call the subscribed URLs.

use super::{item_error, reply, Data, ZohoSim};
use axum::http::Method;
use axum::response::Response;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};

impl ZohoSim {
    pub(super) fn watch(&self, method: &Method, body: &Value, now: Timestamp) -> Response {
        let items = body.get("watch").and_then(Value::as_array).cloned().unwrap_or_default();
        let week = now.saturating_add(SignedDuration::from_hours(24 * 7)).unwrap_or(now);
        let hour = now.saturating_add(SignedDuration::from_hours(1)).unwrap_or(now);
        let mut d = self.data();
        let mut out = Vec::new();
        for item in items {
            let channel_id = item
                .get("channel_id")
                .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
                .unwrap_or_default();
            let requested =
                item.get("channel_expiry").and_then(Value::as_str).and_then(|t| t.parse::<Timestamp>().ok());
            // Missing or more than a week ahead → one hour (reference B4).
            let expiry = requested.filter(|t| *t <= week && *t > now).unwrap_or(hour);
            let shown = expiry
                .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8)))
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string();
            let existing = d.channels.iter().position(|(c, _)| c["channel_id"] == channel_id.as_str());
            let channel = match (method, existing) {
                (&Method::PATCH, None) => {
                    out.push(item_error(
                        "INVALID_DATA",
                        "the channel is not enabled",
                        json!({"channel_id": channel_id}),
                    ));
                    continue;
                }
                (&Method::PATCH, Some(p)) => {
                    let (c, exp) = &mut d.channels[p];
                    if let Some(events) = item.get("events") {
                        c["events"] = events.clone();
                    }
                    c["channel_expiry"] = json!(shown);
                    *exp = expiry;
                    c.clone()
                }
                (_, existing) => {
                    let token_ok = item.get("token").and_then(Value::as_str).is_none_or(|t| t.chars().count() <= 50);
                    if !token_ok || item.get("notify_url").and_then(Value::as_str).is_none() {
                        out.push(item_error(
                            "INVALID_DATA",
                            "invalid data",
                            json!({"api_name": if token_ok { "notify_url" } else { "token" }}),
                        ));
                        continue;
                    }
                    let mut c = item.clone();
                    c["channel_id"] = json!(channel_id);
                    c["channel_expiry"] = json!(shown);
                    if let Some(p) = existing {
                        d.channels.remove(p);
                    }
                    d.channels.push((c.clone(), expiry));
                    c
                }
            };
            let events: Vec<Value> = channel["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.as_str()?.split('.').next().map(str::to_owned))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|m| {
                    json!({"channel_expiry": shown, "resource_uri": format!("https://www.zohoapis.com/crm/v2/{m}"),
                    "resource_id": "5843104000000000131", "resource_name": m, "channel_id": channel_id})
                })
                .collect();
            out.push(json!({"code": "SUCCESS", "details": {"events": events},
                "message": "Successfully subscribed for actions-watch of the given module", "status": "success"}));
        }
        reply(200, json!({ "watch": out }))
    }

    /// (notify_url, payload) for every live channel that watches this change.
    pub(super) fn notifications_for(
        d: &Data,
        module: &str,
        changed: &[(String, &str, Map<String, Value>)],
        now: Timestamp,
    ) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (channel, expiry) in &d.channels {
            if *expiry <= now {
                continue;
            }
            let events: Vec<&str> =
                channel["events"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            for operation in ["insert", "update", "delete"] {
                let event = match operation {
                    "insert" => "create",
                    "update" => "edit",
                    _ => "delete",
                };
                let ids: Vec<&(String, &str, Map<String, Value>)> =
                    changed.iter().filter(|c| c.1 == operation).collect();
                if ids.is_empty()
                    || !events.iter().any(|e| *e == format!("{module}.{event}") || *e == format!("{module}.all"))
                {
                    continue;
                }
                let url = channel["notify_url"].as_str().unwrap_or("").to_owned();
                let query_params: Map<String, Value> = url::Url::parse(&url)
                    .map(|u| u.query_pairs().map(|(k, v)| (k.into_owned(), json!(v))).collect())
                    .unwrap_or_default();
                let mut payload = json!({"server_time": now.as_millisecond(), "query_params": query_params, "module": module,
                    "resource_uri": format!("https://www.zohoapis.com/crm/v2/{module}"),
                    "ids": ids.iter().map(|c| c.0.clone()).collect::<Vec<_>>(), "affected_fields": [],
                    "operation": operation, "channel_id": channel["channel_id"], "token": channel["token"]});
                if operation == "update" && channel["return_affected_field_values"] == true {
                    payload["affected_values"] =
                        ids.iter().map(|c| json!({"record_id": c.0, "values": c.2})).collect::<Vec<_>>().into();
                }
                out.push((url, payload));
            }
        }
        out
    }

    pub(super) fn send_notifications(&self, notify: Vec<(String, Value)>) {
        for (url, payload) in notify {
            let client = self.callbacks.clone();
            tokio::spawn(async move {
                if let Err(err) = client.post(&url).json(&payload).send().await {
                    tracing::debug!(error = %err, "Zoho sim: a notification callback failed (best effort, like Zoho).");
                }
            });
        }
    }
}
