//! Record writes of the Zoho simulator: insert, update, upsert (100-record cap, per-record
//! results, 207, `If-Unmodified-Since` → 412) and delete.

use super::{bad_datetime, error, item_error, modified_after, reply, ZohoSim, DEAL_STAGES, ORG_PREFIX};
use axum::response::Response;
use jiff::Timestamp;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriteKind {
    Insert,
    /// With the `If-Unmodified-Since` instant, if sent.
    Update(Option<Timestamp>),
    Upsert,
}

impl ZohoSim {
    pub(super) fn write(
        &self,
        module: &str,
        body: &Value,
        kind: WriteKind,
        now: Timestamp,
    ) -> (Response, Vec<(String, Value)>) {
        let Some(items) = body.get("data").and_then(Value::as_array) else {
            return (error(400, "REQUIRED_PARAM_MISSING", "data is missing", json!({"param": "data"})), Vec::new());
        };
        if items.len() > 100 {
            return (
                error(400, "LIMIT_EXCEEDED", "the number of records exceeds 100", json!({"limit": 100})),
                Vec::new(),
            );
        }
        let dup_fields: Vec<String> = body
            .get("duplicate_check_fields")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let stamp =
            now.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8))).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
        let mut results = Vec::new();
        let mut changed = Vec::new();
        // Read before the data lock is taken (it takes it too).
        let known = self.known_fields(module);
        let mut d = self.data();
        for (i, item) in items.iter().enumerate() {
            let Some(fields) = item.as_object() else {
                results.push(item_error("INVALID_DATA", "invalid data", json!({"json_path": format!("$.data[{i}]")})));
                continue;
            };
            if let Some((k, _)) = fields.iter().find(|(_, v)| bad_datetime(v)) {
                results.push(item_error(
                    "INVALID_DATA",
                    "invalid data",
                    json!({"expected_data_type": "datetime", "api_name": k, "json_path": format!("$.data[{i}].{k}")}),
                ));
                continue;
            }
            // A field the module does not have is refused, as Zoho does.
            if let Some(k) = fields.keys().find(|k| *k != "id" && !k.starts_with('$') && !known.contains(k)) {
                results.push(item_error(
                    "INVALID_DATA",
                    "the field name given seems to be invalid",
                    json!({"api_name": k, "json_path": format!("$.data[{i}].{k}")}),
                ));
                continue;
            }
            if module == "Deals" {
                if let Some(stage) = fields.get("Stage").and_then(Value::as_str) {
                    if !DEAL_STAGES.contains(&stage) {
                        results.push(item_error("INVALID_DATA", "invalid data", json!({"expected_data_type": "picklist", "api_name": "Stage", "json_path": format!("$.data[{i}].Stage")})));
                        continue;
                    }
                }
            }
            let rows = d.records.entry(module.to_owned()).or_default();
            let existing = match kind {
                WriteKind::Update(unmodified_since) => {
                    // Zoho takes the id as a string or as a number (the SDKs send a long).
                    let id = match fields.get("id") {
                        Some(Value::Number(n)) => n.to_string(),
                        Some(Value::String(s)) => s.clone(),
                        _ => String::new(),
                    };
                    let id = id.as_str();
                    match rows.iter().position(|r| r["id"] == id) {
                        Some(p) if modified_after(&rows[p], unmodified_since) => {
                            results.push(item_error(
                                "ALREADY_MODIFIED",
                                "record updated time has already passed if-unmodified-since time",
                                json!({"id": id}),
                            ));
                            continue;
                        }
                        Some(p) => Some(p),
                        None => {
                            results.push(item_error(
                                "INVALID_DATA",
                                "the id given seems to be invalid",
                                json!({"id": id}),
                            ));
                            continue;
                        }
                    }
                }
                WriteKind::Insert => None,
                WriteKind::Upsert => rows.iter().position(|r| {
                    !dup_fields.is_empty()
                        && dup_fields.iter().all(|f| fields.get(f).is_some_and(|v| !v.is_null() && r.get(f) == Some(v)))
                }),
            };
            let (id, action, operation) = match existing {
                Some(p) => {
                    let row = &mut rows[p];
                    for (k, v) in fields {
                        if k != "id" && !k.starts_with('$') || k == "$se_module" {
                            row[k.as_str()] = v.clone();
                        }
                    }
                    row["Modified_Time"] = json!(stamp);
                    (row["id"].as_str().unwrap_or("").to_owned(), "update", "update")
                }
                None => {
                    d.next_id += 1;
                    let id = format!("{ORG_PREFIX}{:09}", d.next_id);
                    let mut row = Value::Object(fields.clone());
                    row["id"] = json!(id);
                    row["Created_Time"] = json!(stamp);
                    row["Modified_Time"] = json!(stamp);
                    d.records.entry(module.to_owned()).or_default().push(row);
                    (id, "insert", "insert")
                }
            };
            let mut result = json!({"code": "SUCCESS", "details": {"id": id, "Modified_Time": stamp, "Created_Time": stamp},
                "message": if operation == "insert" { "record added" } else { "record updated" }, "status": "success"});
            if kind == WriteKind::Upsert {
                result["action"] = json!(action);
                result["duplicate_field"] = if action == "update" { json!(dup_fields.first()) } else { Value::Null };
            }
            results.push(result);
            let affected: Map<String, Value> =
                fields.iter().filter(|(k, _)| *k != "id").map(|(k, v)| (k.clone(), v.clone())).collect();
            changed.push((id, operation, affected));
        }
        let ok = results.iter().filter(|r| r["status"] == "success").count();
        let status = match (ok, results.len() - ok) {
            (0, _) if results.iter().all(|r| r["code"] == "ALREADY_MODIFIED") => 412,
            (_, 0) => {
                if matches!(kind, WriteKind::Update(_)) {
                    200
                } else {
                    201
                }
            }
            (0, _) => 400,
            _ => 207,
        };
        let notify = Self::notifications_for(&d, module, &changed, now);
        (reply(status, json!({ "data": results })), notify)
    }

    /// `DELETE /{Module}?ids=a,b` (max 100): per-record results; deleted records move to the
    /// recycle bin list and watching channels hear `delete`.
    pub(super) fn delete(
        &self,
        module: &str,
        query: &HashMap<String, String>,
        now: Timestamp,
    ) -> (Response, Vec<(String, Value)>) {
        let ids: Vec<&str> =
            query.get("ids").map(|q| q.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
        if ids.is_empty() {
            return (error(400, "REQUIRED_PARAM_MISSING", "ids is missing", json!({"param": "ids"})), Vec::new());
        }
        if ids.len() > 100 {
            return (
                error(400, "LIMIT_EXCEEDED", "the number of records exceeds 100", json!({"limit": 100})),
                Vec::new(),
            );
        }
        let stamp =
            now.to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(8))).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
        let mut d = self.data();
        let mut results = Vec::new();
        let mut changed = Vec::new();
        for id in ids {
            let rows = d.records.entry(module.to_owned()).or_default();
            let Some(p) = rows.iter().position(|r| r["id"] == id) else {
                results.push(item_error("INVALID_DATA", "the id given seems to be invalid", json!({"id": id})));
                continue;
            };
            let row = rows.remove(p);
            let name = ["Deal_Name", "Account_Name", "Full_Name", "Subject", "Note_Title"]
                .iter()
                .find_map(|k| row.get(*k).and_then(Value::as_str))
                .unwrap_or("")
                .to_owned();
            d.deleted.entry(module.to_owned()).or_default().push(
                json!({"id": id, "display_name": name, "type": "recycle",
                "deleted_by": {"name": "dingbridge Integration", "id": "5843104000000424099"}, "deleted_time": stamp,
                "created_by": row.get("Owner").cloned().unwrap_or(Value::Null)}),
            );
            results.push(
                json!({"code": "SUCCESS", "details": {"id": id}, "message": "record deleted", "status": "success"}),
            );
            changed.push((id.to_owned(), "delete", Map::new()));
        }
        let ok = results.iter().filter(|r| r["status"] == "success").count();
        let status = match (ok, results.len() - ok) {
            (_, 0) => 200,
            (0, _) => 400,
            _ => 207,
        };
        let notify = Self::notifications_for(&d, module, &changed, now);
        (reply(status, json!({ "data": results })), notify)
    }
}
