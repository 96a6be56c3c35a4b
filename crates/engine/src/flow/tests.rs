use super::*;

const CONFIG: &str = r#"
[sources.erp]
type = "webhook"
system = "erp"
secret = { env = "WH" }
fields.amount = { path = "/data/amount", type = "money" }
fields.count = { path = "/data/count", type = "integer", required = false }

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "TOK" }

[destinations.cards]
type = "dingtalk_robot"
access_token = { env = "TOK2" }

[[flows]]
name = "po-to-ops"
on = { source = "erp", entity = "purchase_order", change = ["created", "updated"] }
when = 'event.fields.amount.currency == "HKD"'
[[flows.deliver]]
destination = "ops"
message = { type = "markdown", title = "PO {{ event.entity_id }}", text = "{{ event.fields.amount.currency }} {{ event.fields.amount.amount }} {{ event.change }}" }
[[flows.deliver]]
destination = "cards"
ordering_key = "po-{{ event.entity_id }}"
message = { type = "action_card", title = "PO", text = "t", buttons = [{ title = "Open", url = "https://erp/{{ event.entity_id }}" }] }

[[flows]]
name = "any-entity-text"
on = { source = "erp" }
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "{{ event.entity }}/{{ event.entity_id }}" }

[[flows]]
name = "needs-data"
on = { source = "erp", entity = "shipment" }
when = 'event.data.status'
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "{{ event.data.missing_key }}" }
"#;

fn engine() -> FlowEngine {
    let cfg = Config::from_toml(CONFIG, "flow-test.toml").unwrap_or_else(|e| panic!("{}", e.render()));
    FlowEngine::new(&cfg)
}

fn now() -> ZonedTime {
    ZonedTime::parse("received_at", "2024-03-01T09:30:00Z").unwrap()
}

fn decode(body: &str) -> Result<Event, DecodeError> {
    engine().decode_webhook("erp", "msg_1", body.as_bytes(), now(), "ev-1".into())
}

#[test]
fn decodes_a_generic_webhook() {
    let ev = decode(
        r#"{"type":"purchase_order.created","timestamp":"2024-03-01T09:29:00Z","data":{"id":"PO-7","amount":{"amount":"12.50","currency":"HKD"}}}"#,
    )
    .unwrap();
    assert_eq!(ev.entity, "purchase_order");
    assert_eq!(ev.change, ChangeKind::Created);
    assert_eq!(ev.entity_id, "PO-7");
    assert_eq!(ev.idempotency_key, "erp:msg_1");
    assert_eq!(ev.system, "erp");
    assert!(ev.source_time.is_some());
    assert!(ev.fields.contains_key("amount") && !ev.fields.contains_key("count"));
    assert_eq!(ev.to_template_value()["fields"]["amount"]["amount"], "12.50");
}

#[test]
fn splits_type_at_the_last_dot_and_accepts_integer_ids() {
    let ev = decode(r#"{"type":"sales.order.status_changed","data":{"id":42,"amount":"HKD 1.00"}}"#).unwrap();
    assert_eq!(ev.entity, "sales.order");
    assert_eq!(ev.change, ChangeKind::StatusChanged);
    assert_eq!(ev.entity_id, "42");
    assert!(ev.source_time.is_none());
}

#[test]
fn malformed_bodies_are_malformed() {
    for body in [
        "not json",
        r#"{"data":{"id":"1"}}"#,
        r#"{"type":"nodot","data":{"id":"1"}}"#,
        r#"{"type":"po.created","data":{"id":"1","id":"2"}}"#,
        r#"[1,2]"#,
    ] {
        assert!(matches!(decode(body), Err(DecodeError::Malformed(_))), "{body}: {:?}", decode(body));
    }
}

#[test]
fn invalid_values_are_kept_as_dead_letters_with_the_reason() {
    let cases = [
        (r#"{"type":"po.created","data":{"id":"1","amount":"one hundred"}}"#, "amount"),
        (r#"{"type":"po.created","data":{"id":"1"}}"#, "required value missing"),
        (r#"{"type":"po.created","data":{"amount":"HKD 1.00"}}"#, "entity id missing"),
        (r#"{"type":"po.created","data":{"id":"1","amount":"HKD 1.00","count":1.5}}"#, "count"),
        (
            r#"{"type":"po.created","data":{"id":"1","amount":{"amount":1234567890123456789012345678901.5,"currency":"HKD"}}}"#,
            "more digits than a decimal can hold",
        ),
        (r#"{"type":"po.created","timestamp":"yesterday","data":{"id":"1","amount":"HKD 1.00"}}"#, "timestamp"),
    ];
    for (body, needle) in cases {
        match decode(body) {
            Err(DecodeError::Invalid { reason, envelope }) => {
                assert!(reason.contains(needle), "{body}: {reason}");
                assert_eq!(envelope["source"], "erp");
                assert_eq!(envelope["id"], "ev-1");
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn unknown_source_is_reported() {
    let r = engine().decode_webhook("nope", "m", b"{}", now(), "e".into());
    assert_eq!(r, Err(DecodeError::UnknownSource("nope".into())));
}

fn event(entity: &str, change: &str, currency: &str) -> Event {
    let body =
        format!(r#"{{"type":"{entity}.{change}","data":{{"id":"PO-7","amount":"{currency} 12.50","status":true}}}}"#);
    decode(&body).unwrap()
}

#[test]
fn plans_one_job_per_delivery_of_each_matching_flow() {
    let jobs = engine().plan(&event("purchase_order", "created", "HKD"), 1000).unwrap();
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    let md = &jobs[0];
    assert_eq!((md.flow.as_str(), md.destination.as_str(), md.ordering_key.as_str()), ("po-to-ops", "ops", "ops"));
    assert_eq!(md.idempotency_key, "ev-1:po-to-ops:0");
    assert_eq!(md.next_attempt_at, 1000);
    let payload: Value = serde_json::from_str(&md.payload).unwrap();
    assert_eq!(payload, json!({"msgtype":"markdown","markdown":{"title":"PO PO-7","text":"HKD 12.50 created"}}));

    let card = &jobs[1];
    assert_eq!(card.ordering_key, "cards/po-PO-7", "scoped to the destination");
    assert_eq!(card.idempotency_key, "ev-1:po-to-ops:1");
    let payload: Value = serde_json::from_str(&card.payload).unwrap();
    assert_eq!(
        payload,
        json!({"msgtype":"actionCard","actionCard":{"title":"PO","text":"t","btnOrientation":"0","btns":[{"title":"Open","actionURL":"https://erp/PO-7"}]}})
    );

    let text: Value = serde_json::from_str(&jobs[2].payload).unwrap();
    assert_eq!(text, json!({"msgtype":"text","text":{"content":"purchase_order/PO-7"}}));
    // Stable: planning again yields the same keys.
    let again = engine().plan(&event("purchase_order", "created", "HKD"), 5).unwrap();
    assert_eq!(
        again.iter().map(|j| &j.idempotency_key).collect::<Vec<_>>(),
        jobs.iter().map(|j| &j.idempotency_key).collect::<Vec<_>>()
    );
}

#[test]
fn on_and_when_filter_flows() {
    let e = engine();
    // Condition false (USD): only the catch-all flow.
    let jobs = e.plan(&event("purchase_order", "created", "USD"), 0).unwrap();
    assert_eq!(jobs.iter().map(|j| j.flow.as_str()).collect::<Vec<_>>(), ["any-entity-text"]);
    // Change not subscribed.
    let jobs = e.plan(&event("purchase_order", "deleted", "HKD"), 0).unwrap();
    assert_eq!(jobs.iter().map(|j| j.flow.as_str()).collect::<Vec<_>>(), ["any-entity-text"]);
    // Other entity.
    let jobs = e.plan(&event("invoice", "created", "HKD"), 0).unwrap();
    assert_eq!(jobs.iter().map(|j| j.flow.as_str()).collect::<Vec<_>>(), ["any-entity-text"]);
}

#[test]
fn template_and_condition_failures_are_errors_not_panics() {
    let e = engine();
    // `needs-data` renders a missing key under strict undefined.
    let err = e.plan(&event("shipment", "created", "HKD"), 0).unwrap_err();
    assert!(matches!(&err, FlowError::Template { flow, .. } if flow == "needs-data"), "{err}");
    // A non-bool condition result.
    let body = r#"{"type":"shipment.created","data":{"id":"S1","amount":"HKD 1.00","status":"shipped"}}"#;
    let err = e.plan(&decode(body).unwrap(), 0).unwrap_err();
    assert!(matches!(&err, FlowError::NotBool { flow, .. } if flow == "needs-data"), "{err}");
    // A condition that fails at runtime (missing key under data).
    let body = r#"{"type":"shipment.created","data":{"id":"S1","amount":"HKD 1.00"}}"#;
    let err = e.plan(&decode(body).unwrap(), 0).unwrap_err();
    assert!(matches!(&err, FlowError::Condition { flow, .. } if flow == "needs-data"), "{err}");
    assert!(err.to_string().contains("needs-data"));
}
