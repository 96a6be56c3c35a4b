//! InboundChange DingTalk events in the gateway's terms: which entity changed, how, and the key that
//! makes a redelivery a duplicate. The same decoding serves both transports — the decrypted
//! HTTP callback plaintext (reference §6, `EventType` inside) and Stream frames (§7, the type in
//! `headers.eventType`, card clicks and robot messages as CALLBACK frames) — so a flow does not
//! care how an event arrived.

use model::InboundChange;
use serde_json::{json, Map, Value};

pub use super::stream::{TOPIC_CARD_CALLBACK, TOPIC_ROBOT_MESSAGE};
use super::workflow::{ApprovalEvent, ApprovalEventError, ApprovalEventKind, TaskOutcome};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    #[error("the DingTalk {what} is not valid JSON: {reason}")]
    NotJson { what: &'static str, reason: String },
    #[error("the DingTalk {what} has no `{field}`")]
    Missing { what: &'static str, field: &'static str },
    #[error("the DingTalk {what} is invalid: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// Entities that record what a person did in DingTalk: a card click, an OA approval or one of
/// its tasks, a message to the bot, any other callback. Only a DingTalk source (Stream, or the
/// encrypted HTTP callback) may produce them: an ERP script or webhook sender that names one is
/// forging a decision, however well it signs the request.
pub const DECISION_ENTITIES: &[&str] = &["card_action", "approval", "approval_task", "robot_message", "callback"];

/// Whether events of `entity` may only come from a DingTalk source ([`DECISION_ENTITIES`], and
/// the approval events DingTalk names verbatim, `bpms_*`).
pub fn is_decision_entity(entity: &str) -> bool {
    DECISION_ENTITIES.contains(&entity) || entity.starts_with("bpms_")
}

/// A decrypted HTTP callback. `None` for `check_url` (answered, never stored).
pub fn from_http_callback(event_type: &str, payload: &Value) -> Result<Option<InboundChange>, InboundError> {
    if event_type == "check_url" || event_type == "check_create_suite_url" {
        return Ok(None);
    }
    let mut data = payload.clone();
    if let Some(obj) = data.as_object_mut() {
        obj.remove("EventType");
    }
    from_event(event_type, data, None).map(Some)
}

/// A Stream EVENT frame: its headers and its `data` JSON string.
pub fn from_stream_event(event_type: &str, event_id: Option<&str>, data: &str) -> Result<InboundChange, InboundError> {
    let data: Value =
        serde_json::from_str(data).map_err(|e| InboundError::NotJson { what: "event data", reason: e.to_string() })?;
    let event_id =
        event_id.map(str::to_string).or_else(|| data.get("eventId").and_then(Value::as_str).map(str::to_string));
    from_event(event_type, data, event_id.as_deref())
}

/// A Stream CALLBACK frame (or an HTTP card callback body, which carries the same object).
pub fn from_callback(topic: &str, message_id: &str, data: &str) -> Result<InboundChange, InboundError> {
    let data: Value = serde_json::from_str(data)
        .map_err(|e| InboundError::NotJson { what: "callback data", reason: e.to_string() })?;
    match topic {
        TOPIC_CARD_CALLBACK => card_click(data),
        TOPIC_ROBOT_MESSAGE => {
            let msg_id = text(&data, "msgId").ok_or(InboundError::Missing { what: "robot message", field: "msgId" })?;
            Ok(InboundChange {
                event_type: topic.to_string(),
                entity: "robot_message".into(),
                entity_id: msg_id.clone(),
                change: "received".into(),
                dedup_key: format!("robot_message:{msg_id}"),
                source_time_ms: data.get("createAt").and_then(Value::as_i64),
                data,
            })
        }
        other => Ok(InboundChange {
            event_type: other.to_string(),
            entity: "callback".into(),
            entity_id: message_id.to_string(),
            change: "received".into(),
            dedup_key: format!("callback:{other}:{message_id}"),
            source_time_ms: None,
            data: json!({ "topic": other, "data": data }),
        }),
    }
}

/// A card button click (reference §4.2). DingTalk may deliver the same click twice, so the
/// dedup key is (outTrackId, userId, actionIds, params) as §4.3 recommends.
pub fn card_click(mut data: Value) -> Result<InboundChange, InboundError> {
    let what = "card callback";
    let out_track_id = text(&data, "outTrackId").ok_or(InboundError::Missing { what, field: "outTrackId" })?;
    let user_id = text(&data, "userId").ok_or(InboundError::Missing { what, field: "userId" })?;
    // `content` is a JSON string: {"cardPrivateData":{"actionIds":[…],"params":{…}}}.
    let content: Value = match data.get("content") {
        Some(Value::String(s)) if !s.is_empty() => serde_json::from_str(s)
            .map_err(|e| InboundError::NotJson { what: "card callback content", reason: e.to_string() })?,
        Some(Value::Object(_)) => data.get("content").cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let private = content.get("cardPrivateData").cloned().unwrap_or(Value::Null);
    let action_ids = private.get("actionIds").cloned().unwrap_or_else(|| json!([]));
    let params = private.get("params").cloned().unwrap_or_else(|| json!({}));
    let dedup_key = format!("card_action:{out_track_id}:{user_id}:{action_ids}:{params}");
    if let Some(obj) = data.as_object_mut() {
        obj.insert("actionIds".into(), action_ids);
        obj.insert("params".into(), params);
    }
    Ok(InboundChange {
        event_type: TOPIC_CARD_CALLBACK.to_string(),
        entity: "card_action".into(),
        entity_id: out_track_id,
        change: "clicked".into(),
        dedup_key,
        source_time_ms: None,
        data,
    })
}

fn from_event(event_type: &str, data: Value, event_id: Option<&str>) -> Result<InboundChange, InboundError> {
    if ApprovalEvent::is_approval_event(event_type) {
        return approval(event_type, data, event_id);
    }
    let (entity, entity_id, change, natural_key) = match event_type {
        "user_add_org" | "user_modify_org" | "user_leave_org" => {
            let ids = id_list(&data, "UserId").or_else(|| id_list(&data, "userId")).unwrap_or_default();
            let change = match event_type {
                "user_add_org" => "added",
                "user_modify_org" => "modified",
                _ => "left",
            };
            let at = text(&data, "TimeStamp").unwrap_or_default();
            ("user", ids.clone(), change, format!("{ids}:{at}"))
        }
        "org_dept_create" | "org_dept_modify" | "org_dept_remove" => {
            let ids = id_list(&data, "DeptId").or_else(|| id_list(&data, "deptId")).unwrap_or_default();
            let change = match event_type {
                "org_dept_create" => "created",
                "org_dept_modify" => "updated",
                _ => "deleted",
            };
            let at = text(&data, "TimeStamp").unwrap_or_default();
            ("department", ids.clone(), change, format!("{ids}:{at}"))
        }
        _ => return Ok(other_event(event_type, data, event_id, "received")),
    };
    Ok(InboundChange {
        event_type: event_type.to_string(),
        entity: entity.into(),
        entity_id,
        change: change.into(),
        dedup_key: format!("{event_type}:{natural_key}"),
        source_time_ms: time_of(&data),
        data,
    })
}

/// `bpms_instance_change` / `bpms_task_change`, read through the canonical [`ApprovalEvent`]. The
/// data keeps DingTalk's fields and gains `decision` (`agree`, `refuse`, `redirect`) on a finish.
fn approval(event_type: &str, mut data: Value, event_id: Option<&str>) -> Result<InboundChange, InboundError> {
    let what = "approval event";
    let event = ApprovalEvent::from_parts(event_type, &data, None, event_id).map_err(|err| match err {
        ApprovalEventError::Missing(field) => InboundError::Missing { what, field },
        other => InboundError::Invalid { what, reason: other.to_string() },
    })?;
    let (entity, change, decision) = match &event.kind {
        ApprovalEventKind::InstanceStarted => ("approval", "started", None),
        ApprovalEventKind::InstanceFinished(decision) => ("approval", "finished", Some(decision.as_str())),
        ApprovalEventKind::InstanceTerminated => ("approval", "terminated", None),
        ApprovalEventKind::TaskStarted => ("approval_task", "started", None),
        ApprovalEventKind::TaskFinished(outcome) => ("approval_task", "finished", Some(task_outcome(*outcome))),
        ApprovalEventKind::TaskCancelled => ("approval_task", "cancelled", None),
        ApprovalEventKind::Other { change_type, .. } => {
            let change = change_type.clone();
            return Ok(other_event(event_type, data, event_id, &change));
        }
    };
    let kind = text(&data, "type").unwrap_or_default();
    // The natural key, not DingTalk's eventId: an HTTP push and a Stream redelivery of the same
    // change must collapse into one event, and HTTP plaintexts carry no eventId.
    let (entity_id, natural_key) = match event.task_id {
        Some(task) if entity == "approval_task" => (task.to_string(), format!("{}:{task}:{kind}", event.instance_id)),
        _ => (event.instance_id.clone(), format!("{}:{kind}", event.instance_id)),
    };
    if let (Some(decision), Some(obj)) = (decision, data.as_object_mut()) {
        obj.insert("decision".into(), Value::String(decision.to_owned()));
    }
    let source_time_ms = event.finish_time.or(event.create_time).map(|t| t.as_millisecond());
    Ok(InboundChange {
        event_type: event_type.to_string(),
        entity: entity.into(),
        entity_id,
        change: change.into(),
        dedup_key: format!("{event_type}:{natural_key}"),
        source_time_ms,
        data,
    })
}

fn task_outcome(outcome: TaskOutcome) -> &'static str {
    match outcome {
        TaskOutcome::Agree => "agree",
        TaskOutcome::Refuse => "refuse",
        TaskOutcome::Redirect => "redirect",
    }
}

fn other_event(event_type: &str, data: Value, event_id: Option<&str>, change: &str) -> InboundChange {
    let id = event_id.map(str::to_string).unwrap_or_else(|| digest(&data));
    let change = if change.is_empty() { "received" } else { change };
    InboundChange {
        event_type: event_type.to_string(),
        entity: event_type.to_string(),
        entity_id: id.clone(),
        change: snake(change),
        dedup_key: format!("{event_type}:{id}"),
        source_time_ms: time_of(&data),
        data,
    }
}

fn time_of(data: &Value) -> Option<i64> {
    ["finishTime", "createTime", "eventBornTime", "TimeStamp"].iter().find_map(|k| match data.get(*k) {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    })
}

fn text(data: &Value, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `["u1","u2"]` or a single value, as `u1,u2`.
fn id_list(data: &Value, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::Array(items) => Some(
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn snake(s: &str) -> String {
    let cleaned: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    if cleaned.is_empty() {
        "received".into()
    } else {
        cleaned
    }
}

/// A stable short digest of a payload, for events that carry no id of their own.
fn digest(data: &Value) -> String {
    use sha2::{Digest, Sha256};
    let canonical = canonical_json(data);
    let hash = Sha256::digest(canonical.as_bytes());
    hex::encode(&hash[..12])
}

fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let sorted: Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let parts: Vec<String> =
                sorted.iter().map(|(k, v)| format!("{}:{}", Value::String(k.clone()), canonical_json(v))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_the_entities_dingtalk_produces_for_user_actions() {
        for entity in ["card_action", "approval", "approval_task", "robot_message", "callback", "bpms_task_change"] {
            assert!(is_decision_entity(entity), "{entity}");
        }
        for entity in ["purchase_request", "shipment", "opportunity", "user", "approvals"] {
            assert!(!is_decision_entity(entity), "{entity}");
        }
        // Everything the decoders make of a click, an approval or a bot message is a decision.
        let click = card_click(json!({"outTrackId": "approval:x", "userId": "u1"})).unwrap();
        assert!(is_decision_entity(&click.entity));
    }

    fn fixture(name: &str) -> Value {
        fixtures::read_json(format!("dingtalk/{name}"))
    }

    fn http_plaintext(name: &str) -> Value {
        let v = fixture(name);
        assert!(v.get("EventType").is_some(), "{name}: no EventType in {v}");
        v
    }

    #[test]
    fn http_approval_events_map_to_approval_entities() {
        let cases = [
            ("events/http_bpms_instance_change_start.json", "approval", "started"),
            ("events/http_bpms_instance_change_finish_agree.json", "approval", "finished"),
            ("events/http_bpms_instance_change_finish_refuse.json", "approval", "finished"),
            ("events/http_bpms_instance_change_terminate.json", "approval", "terminated"),
            ("events/http_bpms_task_change_start.json", "approval_task", "started"),
            ("events/http_bpms_task_change_finish_agree.json", "approval_task", "finished"),
            ("events/http_bpms_task_change_redirect.json", "approval_task", "finished"),
        ];
        for (file, entity, change) in cases {
            let payload = http_plaintext(file);
            let event_type = payload["EventType"].as_str().unwrap_or_default().to_string();
            let inbound = from_http_callback(&event_type, &payload).unwrap().unwrap();
            assert_eq!(inbound.entity, entity, "{file}");
            assert_eq!(inbound.change, change, "{file}");
            assert!(inbound.data.get("EventType").is_none(), "{file}: EventType is transport, not data");
            assert!(inbound.source_time_ms.is_some(), "{file}");
            if change == "finished" {
                let result = payload["result"].as_str().unwrap_or_default();
                assert_eq!(inbound.data["decision"], result, "{file}: the decision is normalised from `result`");
            }
            if entity == "approval" {
                assert_eq!(inbound.entity_id, payload["processInstanceId"].as_str().unwrap(), "{file}");
            }
        }
    }

    #[test]
    fn the_same_change_over_http_and_stream_has_one_dedup_key() {
        let mut parsed = fixture("events/stream_data_bpms_instance_change_finish.json");
        let headers = parsed.as_object_mut().and_then(|o| o.remove("_headers_for_this_event")).unwrap();
        let data_text = parsed.to_string();
        let event_id = headers["eventId"].as_str();
        let from_stream = from_stream_event("bpms_instance_change", event_id, &data_text).unwrap();
        assert_eq!(from_stream.entity, "approval");
        assert_eq!(from_stream.change, "finished");
        // The HTTP form of the same change: same fields, EventType inside, no eventId.
        let mut http = parsed.clone();
        if let Some(obj) = http.as_object_mut() {
            obj.remove("eventId");
            obj.remove("resource");
            obj.insert("EventType".into(), "bpms_instance_change".into());
        }
        let from_http = from_http_callback("bpms_instance_change", &http).unwrap().unwrap();
        assert_eq!(from_stream.dedup_key, from_http.dedup_key);
    }

    #[test]
    fn check_url_is_answered_not_stored() {
        let payload = http_plaintext("events/http_check_url.json");
        assert_eq!(from_http_callback("check_url", &payload).unwrap(), None);
    }

    #[test]
    fn user_add_org_is_a_user_event() {
        let payload = http_plaintext("events/http_user_add_org.json");
        let inbound = from_http_callback("user_add_org", &payload).unwrap().unwrap();
        assert_eq!(inbound.entity, "user");
        assert_eq!(inbound.change, "added");
        assert!(!inbound.entity_id.is_empty());
    }

    #[test]
    fn card_click_from_the_stream_fixture() {
        let frame = fixture("stream/04_callback_card_action.json")["server_frame"].clone();
        let topic = frame["headers"]["topic"].as_str().unwrap_or(TOPIC_CARD_CALLBACK).to_string();
        let data = frame["data"].as_str().unwrap().to_string();
        let click = from_callback(&topic, "m1", &data).unwrap();
        assert_eq!(click.entity, "card_action");
        assert_eq!(click.change, "clicked");
        assert!(!click.entity_id.is_empty());
        assert!(click.data["actionIds"].is_array());
        assert!(click.data["params"].is_object());
        // A second delivery of the same click collapses; another user's click does not.
        let again = from_callback(&topic, "m2", &data).unwrap();
        assert_eq!(again.dedup_key, click.dedup_key);
        let mut other: Value = serde_json::from_str(&data).unwrap();
        other["userId"] = "someone-else".into();
        let other = from_callback(&topic, "m3", &other.to_string()).unwrap();
        assert_ne!(other.dedup_key, click.dedup_key);
    }

    #[test]
    fn robot_message_from_the_stream_fixture() {
        let frame = fixture("stream/03_callback_robot_message.json")["server_frame"].clone();
        let data = frame["data"].as_str().unwrap().to_string();
        let msg = from_callback(TOPIC_ROBOT_MESSAGE, "m1", &data).unwrap();
        assert_eq!(msg.entity, "robot_message");
        assert_eq!(msg.dedup_key, format!("robot_message:{}", msg.entity_id));
    }

    #[test]
    fn malformed_data_is_a_clear_error() {
        let err = from_stream_event("bpms_instance_change", Some("e1"), "{not json").unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = from_stream_event("bpms_instance_change", Some("e1"), "{}").unwrap_err();
        assert!(err.to_string().contains("processInstanceId"), "{err}");
    }

    #[test]
    fn unknown_event_types_are_kept_with_a_stable_key() {
        let a = from_stream_event("chat_update_title", None, r#"{"ChatId":"c1","b":2,"a":1}"#).unwrap();
        let b = from_stream_event("chat_update_title", None, r#"{"a":1,"b":2,"ChatId":"c1"}"#).unwrap();
        assert_eq!(a.entity, "chat_update_title");
        assert_eq!(a.dedup_key, b.dedup_key, "key independent of key order");
    }
}
