//! Flows: decode a generic webhook into a canonical event, match it against the configured
//! flows (source, entity, change, CEL `when`), and render one outbox job per delivery whose own
//! `when` (if any) holds.
//!
//! Nothing here panics on bad input: a failing condition or template is a [`FlowError`] the
//! caller turns into a dead letter.

use crate::config::{
    CardButtons, CardCallback, Condition, Config, FlowConfig, MessageSpec, OrderingKey, RecordOp, RecordSpec,
    SourceConfig,
};
use crate::json::{parse_strict, JsonError};
use model::{ChangeKind, Event, TypedValue, ZonedTime};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

/// Most significant digits a `rust_decimal::Decimal` holds.
const DECIMAL_DIGITS: usize = 28;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("flow `{flow}`: condition `{condition}` failed: {reason}")]
    Condition { flow: String, condition: String, reason: String },
    #[error("flow `{flow}`: condition `{condition}` returned {found}, not a bool")]
    NotBool { flow: String, condition: String, found: String },
    #[error("flow `{flow}`: template `{template}` failed: {reason}")]
    Template { flow: String, template: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not a webhook body we can route: the server answers 400.
    #[error("malformed webhook body: {0}")]
    Malformed(String),
    /// A well-formed body with an invalid value: the server answers 2xx and stores a dead letter
    /// with `reason`; `envelope` is what could be read (kept, never dropped).
    #[error("invalid event: {reason}")]
    Invalid { reason: String, envelope: Value },
    /// The source is not configured (a routing bug; the server answers 404).
    #[error("unknown source `{0}`")]
    UnknownSource(String),
}

/// A JSON number in a typed field (or a `json_fields` value) that cannot be kept exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    #[error("field `{field}`: number {text} has more digits than a decimal can hold ({DECIMAL_DIGITS})")]
    TooManyDigits { field: String, text: String },
    #[error("field `{field}`: number {text} uses an exponent; send the exact value as a string")]
    Exponent { field: String, text: String },
    #[error("field `{field}`: number {text} cannot be read exactly as a JSON number; send it as a string")]
    NotExact { field: String, text: String },
}

/// Why a source's declared typed field could not be read from an event; the event becomes a
/// dead letter with this as its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("field `{field}`: required value missing at `{path}`")]
    Missing { field: String, path: String },
    #[error(transparent)]
    Number(#[from] NumberError),
    #[error(transparent)]
    Value(#[from] model::ParseError),
}

/// Why a `json_fields` template's output cannot be written as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonFieldError {
    /// The rendered text is not quoted: it may be personal data.
    #[error(
        "json_fields `{field}` did not render JSON ({source}); render a number, or pass the value through \
         `| tojson` (templates write booleans as True/False and null as none)"
    )]
    NotJson { field: String, source: JsonError },
    #[error("json_fields {0}")]
    Number(#[from] NumberError),
}

/// The compiled flows of one config.
#[derive(Clone)]
pub struct FlowEngine {
    flows: Vec<FlowConfig>,
    sources: BTreeMap<String, SourceConfig>,
    templates: Arc<minijinja::Environment<'static>>,
}

impl std::fmt::Debug for FlowEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowEngine").field("flows", &self.flows.iter().map(|f| &f.name).collect::<Vec<_>>()).finish()
    }
}

impl FlowEngine {
    pub fn new(config: &Config) -> Self {
        Self { flows: config.flows.clone(), sources: config.sources.clone(), templates: config.templates.clone() }
    }

    /// Flows listening to `source` (for the server's routing table).
    pub fn flows_for_source<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a FlowConfig> + 'a {
        self.flows.iter().filter(move |f| f.source.iter().any(|s| s == source))
    }

    /// Outbox jobs for one event: one per delivery of every matching flow, due at `now_ms`.
    pub fn plan(&self, event: &Event, now_ms: i64) -> Result<Vec<store::NewJob>, FlowError> {
        let ctx = event.to_template_value();
        let change = event.change.to_string();
        let mut jobs = Vec::new();
        let mut tmpl_ctx: Option<minijinja::Value> = None;
        for flow in &self.flows {
            if !flow.source.contains(&event.source) {
                continue;
            }
            if flow.entity.as_ref().is_some_and(|e| *e != event.entity) {
                continue;
            }
            if flow.changes.as_ref().is_some_and(|c| !c.contains(&change)) {
                continue;
            }
            if let Some(cond) = &flow.when {
                if !eval_condition(&flow.name, cond, &ctx)? {
                    continue;
                }
            }
            let tctx =
                tmpl_ctx.get_or_insert_with(|| minijinja::context! { event => minijinja::Value::from_serialize(&ctx) });
            // `i` counts every delivery of the flow, planned or not, so a delivery's idempotency
            // key does not change when the condition of another one does.
            for (i, d) in flow.deliver.iter().enumerate() {
                if let Some(cond) = &d.when {
                    if !eval_condition(&flow.name, cond, &ctx)? {
                        continue;
                    }
                }
                let render = |name: &str| self.render(&flow.name, name, tctx);
                let payload = match &d.message {
                    MessageSpec::Markdown { title, text } => json!({
                        "msgtype": "markdown",
                        "markdown": { "title": render(title)?, "text": render(text)? },
                    }),
                    MessageSpec::Text { content } => {
                        json!({ "msgtype": "text", "text": { "content": render(content)? } })
                    }
                    MessageSpec::ActionCard { title, text, buttons } => {
                        let mut card = serde_json::Map::new();
                        card.insert("title".into(), render(title)?.into());
                        card.insert("text".into(), render(text)?.into());
                        match buttons {
                            CardButtons::Single { title, url } => {
                                card.insert("singleTitle".into(), render(title)?.into());
                                card.insert("singleURL".into(), render(url)?.into());
                            }
                            CardButtons::Many { buttons, orientation } => {
                                let mut btns = Vec::new();
                                for (t, u) in buttons {
                                    btns.push(json!({ "title": render(t)?, "actionURL": render(u)? }));
                                }
                                card.insert("btnOrientation".into(), orientation.clone().into());
                                card.insert("btns".into(), Value::Array(btns));
                            }
                        }
                        json!({ "msgtype": "actionCard", "actionCard": card })
                    }
                    MessageSpec::WorkNotice { users, title, text } => json!({
                        "api": "work_notice",
                        "users": split_list(&render(users)?),
                        "title": render(title)?,
                        "text": render(text)?,
                    }),
                    MessageSpec::RobotMessage { users, title, text } => json!({
                        "api": "robot_message",
                        "users": split_list(&render(users)?),
                        "title": render(title)?,
                        "text": render(text)?,
                    }),
                    MessageSpec::GroupMessage { group, title, text } => json!({
                        "api": "group_message",
                        "group": render(group)?.trim(),
                        "title": render(title)?,
                        "text": render(text)?,
                    }),
                    MessageSpec::Card(card) => {
                        let idempotency_key = format!("{}:{}:{i}", event.id, flow.name);
                        let out_track_id = match &card.out_track_id {
                            Some(t) => render(t)?.trim().to_string(),
                            None => idempotency_key,
                        };
                        let mut body = serde_json::Map::new();
                        body.insert("api".into(), "card".into());
                        body.insert("template_id".into(), card.template_id.clone().into());
                        body.insert("out_track_id".into(), out_track_id.into());
                        if let Some(group) = &card.group {
                            body.insert("group".into(), render(group)?.trim().into());
                        }
                        if let Some(users) = &card.users {
                            body.insert("users".into(), split_list(&render(users)?).into());
                        }
                        body.insert("params".into(), render_map(&card.params, &render)?);
                        if let Some(to) = &card.private_to {
                            body.insert("private_to".into(), split_list(&render(to)?).into());
                            body.insert("private_params".into(), render_map(&card.private_params, &render)?);
                        }
                        match &card.callback {
                            CardCallback::Stream => {
                                body.insert("callback".into(), "stream".into());
                            }
                            CardCallback::Http { route_key } => {
                                body.insert("callback".into(), "http".into());
                                body.insert("callback_route_key".into(), route_key.clone().into());
                            }
                        }
                        Value::Object(body)
                    }
                    MessageSpec::CardUpdate { out_track_id, params, private_params, private_to } => {
                        let mut body = serde_json::Map::new();
                        body.insert("api".into(), "card_update".into());
                        body.insert("out_track_id".into(), render(out_track_id)?.trim().into());
                        body.insert("params".into(), render_map(params, &render)?);
                        if let Some(to) = private_to {
                            body.insert("private_to".into(), split_list(&render(to)?).into());
                            body.insert("private_params".into(), render_map(private_params, &render)?);
                        }
                        Value::Object(body)
                    }
                    MessageSpec::Approval(approval) => {
                        let mut body = serde_json::Map::new();
                        body.insert("api".into(), "approval".into());
                        body.insert("process_code".into(), approval.process_code.clone().into());
                        body.insert("originator".into(), render(&approval.originator)?.trim().into());
                        if let Some(dept) = &approval.dept_id {
                            body.insert("dept_id".into(), render(dept)?.trim().into());
                        }
                        if let Some(approvers) = &approval.approvers {
                            body.insert("approvers".into(), split_list(&render(approvers)?).into());
                        }
                        body.insert("form".into(), render_map(&approval.form, &render)?);
                        Value::Object(body)
                    }
                    MessageSpec::Record(record) => record_payload(&flow.name, record, &render)?,
                };
                // A rendered key is scoped to the destination: the same conversation key rendered
                // for two destinations names two conversations, which must not wait on each other.
                // The literal key is the default, the destination itself (one robot = one group).
                let ordering_key = match &d.ordering_key {
                    OrderingKey::Literal(k) => k.clone(),
                    OrderingKey::Template(name) => format!("{}/{}", d.destination, render(name)?),
                };
                jobs.push(store::NewJob {
                    flow: flow.name.clone(),
                    destination: d.destination.clone(),
                    ordering_key,
                    idempotency_key: format!("{}:{}:{i}", event.id, flow.name),
                    payload: payload.to_string(),
                    next_attempt_at: now_ms,
                    coalesce: false,
                });
            }
        }
        Ok(jobs)
    }

    fn render(&self, flow: &str, name: &str, ctx: &minijinja::Value) -> Result<String, FlowError> {
        let err = |reason: String| FlowError::Template { flow: flow.to_string(), template: name.to_string(), reason };
        let t = self.templates.get_template(name).map_err(|e| err(e.to_string()))?;
        t.render(ctx).map_err(|e| err(e.to_string()))
    }

    /// Decode a generic webhook body `{"type": "<entity>.<change>", "timestamp": "...", "data": {...}}`.
    /// A DingTalk event (from Stream or an HTTP callback) as a canonical event. Typed fields
    /// declared on the source are read from `{"type": "<entity>.<change>", "data": <payload>}`,
    /// the same envelope webhook sources use, so `/data/...` pointers work the same way.
    pub fn decode_inbound(
        &self,
        source: &str,
        inbound: &model::InboundChange,
        received_at: ZonedTime,
        event_id: String,
    ) -> Result<Event, DecodeError> {
        let src = self.sources.get(source).ok_or_else(|| DecodeError::UnknownSource(source.to_string()))?;
        let kind = format!("{}.{}", inbound.entity, inbound.change);
        let root = json!({ "type": kind, "data": inbound.data });
        let source_time =
            inbound.source_time_ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()).map(ZonedTime::from);
        let fields = typed_fields(src, &root, &BTreeMap::new()).map_err(|e| DecodeError::Invalid {
            reason: e.to_string(),
            envelope: json!({
                "id": event_id,
                "source": source,
                "system": src.system,
                "type": kind,
                "entity_id": inbound.entity_id,
                "data": inbound.data,
            }),
        })?;
        let change = match ChangeKind::from_str(&inbound.change) {
            Ok(c) => c,
            Err(never) => match never {},
        };
        Ok(Event {
            id: event_id,
            source: source.to_string(),
            system: src.system.clone(),
            entity: inbound.entity.clone(),
            entity_id: inbound.entity_id.clone(),
            change,
            source_time,
            received_at,
            idempotency_key: format!("{source}:{}", inbound.dedup_key),
            fields,
            data: inbound.data.clone(),
            raw: None,
        })
    }

    pub fn decode_webhook(
        &self,
        source: &str,
        webhook_id: &str,
        body: &[u8],
        received_at: ZonedTime,
        event_id: String,
    ) -> Result<Event, DecodeError> {
        let src = self.sources.get(source).ok_or_else(|| DecodeError::UnknownSource(source.to_string()))?;
        let parsed = parse_strict(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let root = &parsed.value;
        if !root.is_object() {
            return Err(DecodeError::Malformed("the body is not a JSON object".into()));
        }
        let kind = match root.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(DecodeError::Malformed("`type` is not a string".into())),
            None => return Err(DecodeError::Malformed("missing `type` (expected \"<entity>.<change>\")".into())),
        };
        let Some((entity, change)) = kind.rsplit_once('.').filter(|(e, c)| !e.is_empty() && !c.is_empty()) else {
            return Err(DecodeError::Malformed(format!("`type` {kind:?} is not \"<entity>.<change>\"")));
        };
        // What could be read, kept with a dead letter; built only when the event is refused.
        let invalid = |reason: String| DecodeError::Invalid {
            reason,
            envelope: json!({
                "id": event_id,
                "source": source,
                "system": src.system,
                "type": kind,
                "webhook_id": webhook_id,
                "timestamp": root.get("timestamp"),
                "data": root.get("data"),
            }),
        };

        let change = match ChangeKind::from_str(change) {
            Ok(c) => c,
            Err(never) => match never {},
        };
        let source_time = match root.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(ZonedTime::parse("timestamp", s).map_err(|e| invalid(e.to_string()))?),
            Some(other) => return Err(invalid(format!("`timestamp` {other} is not an RFC 3339 string"))),
        };
        let entity_id = match root.pointer(&src.entity_id) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(other) => {
                return Err(invalid(format!(
                    "entity id at `{}` is {other}, expected a string or an integer",
                    src.entity_id
                )))
            }
            None => return Err(invalid(format!("entity id missing at `{}`", src.entity_id))),
        };
        let fields = typed_fields(src, root, &parsed.number_text).map_err(|e| invalid(e.to_string()))?;
        let data = root.get("data").cloned().unwrap_or(Value::Null);
        Ok(Event {
            id: event_id,
            source: source.to_string(),
            system: src.system.clone(),
            entity: entity.to_string(),
            entity_id,
            change,
            source_time,
            received_at,
            idempotency_key: format!("{source}:{webhook_id}"),
            fields,
            data,
            raw: Some(String::from_utf8_lossy(body).into_owned()),
        })
    }
}

/// A JSON number in a typed field must be exactly representable: no more significant digits
/// than a decimal holds, and no precision lost on the way through a binary float.
fn check_number_precision(field: &str, text: &str) -> Result<(), NumberError> {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    let (field, text) = (field.to_owned(), text.to_owned());
    if significant.len() > DECIMAL_DIGITS {
        return Err(NumberError::TooManyDigits { field, text });
    }
    if text.contains(['e', 'E']) {
        return Err(NumberError::Exponent { field, text });
    }
    if significant.len() > 15 {
        return Err(NumberError::NotExact { field, text });
    }
    Ok(())
}

/// Evaluates a flow's or a delivery's condition against the event.
fn eval_condition(flow: &str, cond: &Condition, ctx: &Value) -> Result<bool, FlowError> {
    let fail = |reason: String| FlowError::Condition { flow: flow.to_string(), condition: cond.source.clone(), reason };
    let value = cel::to_value(ctx).map_err(|e| fail(e.to_string()))?;
    let mut cel_ctx = cel::Context::default();
    cel_ctx.add_variable_from_value("event", value);
    match cond.program.execute(&cel_ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(FlowError::NotBool {
            flow: flow.to_string(),
            condition: cond.source.clone(),
            found: format!("{other:?}"),
        }),
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
mod tests;

/// The source's declared typed fields, read from the event envelope `root` (`{"type", "data"}`).
/// `number_text` holds the verbatim text of JSON numbers by pointer, to refuse numbers beyond
/// decimal precision instead of rounding them.
fn typed_fields(
    src: &SourceConfig,
    root: &Value,
    number_text: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, TypedValue>, FieldError> {
    let mut fields: BTreeMap<String, TypedValue> = BTreeMap::new();
    for (name, spec) in &src.fields {
        let value = match root.pointer(&spec.path) {
            None | Some(Value::Null) => {
                if spec.required {
                    return Err(FieldError::Missing { field: name.clone(), path: spec.path.clone() });
                }
                continue;
            }
            Some(v) => v,
        };
        let under = format!("{}/", spec.path);
        for (ptr, text) in number_text {
            if *ptr == spec.path || ptr.starts_with(&under) {
                check_number_precision(name, text)?;
            }
        }
        let typed = spec.kind.to_model().parse_value(name, value)?;
        fields.insert(name.clone(), typed);
    }
    Ok(fields)
}

/// `{"api":"record","object":…,"op":"update","id":…,"fields":{…}}` or the `upsert` shape with
/// `external_id_field` and `external_id`. `fields` go as strings; `json_fields` as the JSON
/// their rendered text is.
fn record_payload(
    flow: &str,
    record: &RecordSpec,
    render: &dyn Fn(&str) -> Result<String, FlowError>,
) -> Result<Value, FlowError> {
    // A record id that renders empty would address the object's collection instead of a record.
    let non_empty = |template: &str, key: &str| -> Result<String, FlowError> {
        let value = render(template)?.trim().to_string();
        if value.is_empty() {
            return Err(FlowError::Template {
                flow: flow.to_string(),
                template: template.to_string(),
                reason: format!("`{key}` rendered empty; the record to write cannot be named by an empty value"),
            });
        }
        Ok(value)
    };
    let mut body = serde_json::Map::new();
    body.insert("api".into(), "record".into());
    body.insert("object".into(), record.object.clone().into());
    match &record.op {
        RecordOp::Update { id } => {
            body.insert("op".into(), "update".into());
            body.insert("id".into(), non_empty(id, "id")?.into());
        }
        RecordOp::Upsert { external_id_field, external_id } => {
            body.insert("op".into(), "upsert".into());
            body.insert("external_id_field".into(), external_id_field.clone().into());
            body.insert("external_id".into(), non_empty(external_id, "external_id")?.into());
        }
    }
    let mut fields = serde_json::Map::new();
    for (field, template) in &record.fields {
        fields.insert(field.clone(), Value::String(render(template)?));
    }
    for (field, template) in &record.json_fields {
        let rendered = render(template)?;
        let value = json_field_value(field, &rendered).map_err(|e| FlowError::Template {
            flow: flow.to_string(),
            template: template.clone(),
            reason: e.to_string(),
        })?;
        fields.insert(field.clone(), value);
    }
    body.insert("fields".into(), Value::Object(fields));
    Ok(Value::Object(body))
}

/// The JSON a `json_fields` template rendered. Strict (no duplicate keys), and numbers a binary
/// float would round are refused rather than written to the CRM changed. The rendered text is
/// not quoted in the error: it may be personal data.
fn json_field_value(field: &str, rendered: &str) -> Result<Value, JsonFieldError> {
    let parsed = parse_strict(rendered.as_bytes())
        .map_err(|source| JsonFieldError::NotJson { field: field.to_owned(), source })?;
    for text in parsed.number_text.values() {
        check_number_precision(field, text)?;
    }
    Ok(parsed.value)
}

/// A rendered comma-separated list (userids): trimmed, empty items dropped.
fn split_list(rendered: &str) -> Vec<String> {
    rendered.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Renders `(key, template)` pairs into a JSON object of strings.
fn render_map(
    pairs: &[(String, String)],
    render: &dyn Fn(&str) -> Result<String, FlowError>,
) -> Result<Value, FlowError> {
    let mut out = serde_json::Map::new();
    for (key, template) in pairs {
        out.insert(key.clone(), Value::String(render(template)?));
    }
    Ok(Value::Object(out))
}
