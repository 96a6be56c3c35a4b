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

/// ERP changes written to Salesforce and Zoho, and deliveries with their own conditions.
const CRM_CONFIG: &str = r#"
[salesforce.orgs.hk]
login_url = "https://hktrading.my.salesforce.com"
client_id = "3MVG9example"
client_secret = { env = "SF_CLIENT_SECRET" }

[zoho.orgs.hk]
data_centre = "com"
client_id = "1000.EXAMPLE"
client_secret = { env = "ZOHO_CLIENT_SECRET" }
refresh_token = { env = "ZOHO_REFRESH_TOKEN" }

[sources.erp]
type = "webhook"
secret = { env = "WH" }
fields.amount = { path = "/data/amount", type = "money", required = false }
fields.limit = { path = "/data/limit", type = "money", required = false }

[destinations.sf-accounts]
type = "salesforce"
org = "hk"

[destinations.zoho-accounts]
type = "zoho"
org = "hk"

[destinations.hk-group]
type = "dingtalk_robot"
access_token = { env = "HK" }

[destinations.us-group]
type = "dingtalk_robot"
access_token = { env = "US" }

[[flows]]
name = "credit-to-crm"
on = { source = "erp", entity = "customer" }
[[flows.deliver]]
destination = "sf-accounts"
message = { type = "record", object = "Account", op = "update", id = " {{ event.data.sf_id }} ", fields = { Credit_Status__c = "{{ event.data.status }}" }, json_fields = { CreditLimit__c = "{{ event.fields.limit.amount }}", On_Hold__c = "{{ event.data.on_hold | tojson }}", Terms__c = "{{ event.data.terms }}" } }
[[flows.deliver]]
destination = "zoho-accounts"
message = { type = "record", object = "Accounts", op = "upsert", external_id_field = "ERP_Customer_No", external_id = "{{ event.entity_id }}", fields = { Account_Name = "{{ event.data.name }}" } }

[[flows]]
name = "regional"
on = { source = "erp", entity = "account" }
[[flows.deliver]]
destination = "hk-group"
when = 'event.data.account.country == "Hong Kong"'
message = { type = "text", content = "HK account {{ event.entity_id }}" }
[[flows.deliver]]
destination = "us-group"
when = 'event.data.account.country == "United States"'
message = { type = "text", content = "US account {{ event.entity_id }}" }

[[flows]]
name = "big-orders"
on = { source = "erp", entity = "order" }
[[flows.deliver]]
destination = "hk-group"
when = 'has(event.fields.amount) && double(event.fields.amount.amount) >= {"HKD": 500000.0, "USD": 64000.0, "CNY": 450000.0}[event.fields.amount.currency]'
message = { type = "text", content = "Big order {{ event.entity_id }}" }
"#;

fn crm_engine() -> FlowEngine {
    let cfg = Config::from_toml(CRM_CONFIG, "crm-flow-test.toml").unwrap_or_else(|e| panic!("{}", e.render()));
    FlowEngine::new(&cfg)
}

fn crm_event(entity: &str, data: Value) -> Event {
    let body = json!({ "type": format!("{entity}.updated"), "data": data }).to_string();
    crm_engine().decode_webhook("erp", "msg_9", body.as_bytes(), now(), "ev-9".into()).unwrap()
}

fn customer(terms: &str) -> Event {
    crm_event(
        "customer",
        json!({
            "id": "C-1001",
            "sf_id": "0015g00000Hk001AAA",
            "status": "Hold",
            "on_hold": true,
            "terms": terms,
            "name": "Kowloon Traders Ltd",
            "limit": { "amount": "250000.50", "currency": "HKD" },
        }),
    )
}

fn payloads(jobs: &[store::NewJob]) -> Vec<Value> {
    jobs.iter().map(|j| serde_json::from_str(&j.payload).unwrap()).collect()
}

#[test]
fn record_messages_render_exactly_for_update_and_upsert() {
    let jobs = crm_engine().plan(&customer("{\"days\": 30}"), 0).unwrap();
    assert_eq!(jobs.iter().map(|j| j.destination.as_str()).collect::<Vec<_>>(), ["sf-accounts", "zoho-accounts"]);
    let p = payloads(&jobs);
    assert_eq!(
        p[0],
        json!({
            "api": "record",
            "object": "Account",
            "op": "update",
            "id": "0015g00000Hk001AAA",
            "fields": {
                "Credit_Status__c": "Hold",
                "CreditLimit__c": 250000.5,
                "On_Hold__c": true,
                "Terms__c": { "days": 30 },
            },
        })
    );
    assert_eq!(
        p[1],
        json!({
            "api": "record",
            "object": "Accounts",
            "op": "upsert",
            "external_id_field": "ERP_Customer_No",
            "external_id": "C-1001",
            "fields": { "Account_Name": "Kowloon Traders Ltd" },
        })
    );
}

#[test]
fn json_fields_that_do_not_render_json_are_template_errors_naming_the_field() {
    for (terms, needle) in
        [("net 30", "did not render JSON"), ("{\"a\": 1, \"a\": 2}", "did not render JSON"), ("1e3", "exponent")]
    {
        let err = crm_engine().plan(&customer(terms), 0).unwrap_err();
        let FlowError::Template { flow, template, reason } = &err else { panic!("{terms}: {err}") };
        assert_eq!(flow, "credit-to-crm");
        assert!(template.ends_with("json_fields.Terms__c"), "{template}");
        assert!(reason.contains("Terms__c") && reason.contains(needle), "{terms}: {reason}");
        assert!(!reason.contains("net 30"), "the rendered value is not repeated: {reason}");
    }
    // A bare boolean renders as `True`, which is not JSON: the hint names `tojson`.
    let reason = json_field_value("On_Hold__c", "True").unwrap_err().to_string();
    assert!(reason.contains("On_Hold__c") && reason.contains("| tojson"), "{reason}");
    assert_eq!(json_field_value("Amount", " 12.50 "), Ok(json!(12.5)));
    // Typed null, strings need their quotes.
    let p = payloads(&crm_engine().plan(&customer("null"), 0).unwrap());
    assert_eq!(p[0]["fields"]["Terms__c"], Value::Null);
    let p = payloads(&crm_engine().plan(&customer("\"net 30\""), 0).unwrap());
    assert_eq!(p[0]["fields"]["Terms__c"], "net 30");
}

#[test]
fn an_empty_record_id_is_a_template_error() {
    let event = crm_event(
        "customer",
        json!({"id": "C-1", "sf_id": "  ", "status": "x", "on_hold": false, "terms": "1", "name": "n"}),
    );
    let err = crm_engine().plan(&event, 0).unwrap_err();
    assert!(matches!(&err, FlowError::Template { reason, .. } if reason.contains("`id` rendered empty")), "{err}");
}

#[test]
fn a_delivery_with_a_false_condition_is_not_planned() {
    let account = |country: &str| crm_event("account", json!({"id": "A-7", "account": {"country": country}}));
    let jobs = crm_engine().plan(&account("Hong Kong"), 0).unwrap();
    assert_eq!(jobs.iter().map(|j| j.destination.as_str()).collect::<Vec<_>>(), ["hk-group"]);
    assert_eq!(jobs[0].idempotency_key, "ev-9:regional:0");

    let jobs = crm_engine().plan(&account("United States"), 0).unwrap();
    assert_eq!(jobs.iter().map(|j| j.destination.as_str()).collect::<Vec<_>>(), ["us-group"]);
    // Keyed by the delivery's place in the flow, not by how many were planned before it.
    assert_eq!(jobs[0].idempotency_key, "ev-9:regional:1");

    assert!(crm_engine().plan(&account("Japan"), 0).unwrap().is_empty());

    // A condition failing at runtime is an error naming the flow, as for a flow's `when`.
    let err = crm_engine().plan(&crm_event("account", json!({"id": "A-8"})), 0).unwrap_err();
    assert!(
        matches!(&err, FlowError::Condition { flow, condition, .. }
        if flow == "regional" && condition.contains("Hong Kong")),
        "{err}"
    );
}

#[test]
fn a_per_currency_threshold_in_cel_reads_a_money_field() {
    let order = |amount: Value| {
        let mut data = json!({"id": "SO-1"});
        if !amount.is_null() {
            data["amount"] = amount;
        }
        crm_engine().plan(&crm_event("order", data), 0)
    };
    let planned = |amount: &str, currency: &str| {
        order(json!({"amount": amount, "currency": currency})).unwrap_or_else(|e| panic!("{e}")).len() == 1
    };
    assert!(planned("500000.00", "HKD"));
    assert!(!planned("499999.99", "HKD"));
    assert!(planned("64000", "USD"));
    assert!(!planned("63999.99", "USD"));
    assert!(planned("450000.01", "CNY"));
    assert!(!planned("449999", "CNY"));
    // No amount: `has` guards the lookup.
    assert!(order(Value::Null).unwrap().is_empty());
    // A currency missing from the map is an error (a dead letter), not a silent skip.
    let err = order(json!({"amount": "1", "currency": "EUR"})).unwrap_err();
    assert!(matches!(&err, FlowError::Condition { flow, .. } if flow == "big-orders"), "{err}");
}

#[test]
fn cel_map_literals_support_the_membership_guard_the_docs_suggest() {
    let guard = r#"event.fields.amount.currency in {"HKD": 500000.0, "USD": 64000.0}"#;
    let run = |currency: &str| {
        let program = cel::Program::compile(guard).unwrap();
        let mut ctx = cel::Context::default();
        let event = json!({"fields": {"amount": {"amount": "1", "currency": currency}}});
        ctx.add_variable_from_value("event", cel::to_value(event).unwrap());
        program.execute(&ctx).unwrap()
    };
    assert_eq!(run("HKD"), cel::Value::Bool(true));
    assert_eq!(run("EUR"), cel::Value::Bool(false));
}

#[test]
fn a_flow_may_listen_to_several_sources() {
    let text = r#"
[sources.s4]
type = "webhook"
secret = { env = "WH" }
[sources.ecc]
type = "webhook"
secret = { env = "WH" }
[sources.other]
type = "webhook"
secret = { env = "WH" }
[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "TOK" }
[[flows]]
name = "po-both"
on = { source = ["s4", "ecc"], entity = "purchase_order" }
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "{{ event.source }} {{ event.entity_id }}" }
"#;
    let cfg = Config::from_toml(text, "multi.toml").unwrap_or_else(|e| panic!("{}", e.render()));
    let engine = FlowEngine::new(&cfg);
    let body = br#"{"type":"purchase_order.created","data":{"id":"4500000123"}}"#;
    for (source, expected) in [("s4", 1), ("ecc", 1), ("other", 0)] {
        let ev = engine.decode_webhook(source, "m", body, now(), format!("ev-{source}")).unwrap();
        let jobs = engine.plan(&ev, 0).unwrap();
        assert_eq!(jobs.len(), expected, "{source}");
        if let Some(job) = jobs.first() {
            assert!(job.payload.contains(&format!("{source} 4500000123")), "{}", job.payload);
        }
    }
    assert_eq!(engine.flows_for_source("ecc").count(), 1);

    let unknown = text.replace(r#"["s4", "ecc"]"#, r#"["s4", "ecx"]"#);
    let errors = Config::from_toml(&unknown, "multi.toml").unwrap_err();
    let rendered = errors.render();
    assert!(rendered.contains("unknown source `ecx`") && rendered.contains("DB0103"), "{rendered}");
}

/// A customer whose name is markup, rendered into each kind of DingTalk text.
const INJECTION_CONFIG: &str = r####"
[sources.crm]
type = "webhook"
secret = { env = "WH" }

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "TOK" }

[dingtalk.apps.a]
app_key = "k"
app_secret = { env = "APP" }

[destinations.app]
type = "dingtalk_app"
app = "a"

[[flows]]
name = "md"
on = { source = "crm", entity = "customer" }
[[flows.deliver]]
destination = "ops"
message = { type = "markdown", title = "{{ event.data.name }}", text = "### {{ event.data.name }}\n- note: {{ event.data.note }}\n- trusted: {{ event.data.link | raw }}" }
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "New customer {{ event.data.name }}: {{ event.data.note }}" }
[[flows.deliver]]
destination = "ops"
message = { type = "action_card", title = "{{ event.data.name }}", text = "{{ event.data.name }}", single_title = "Open {{ event.data.name }}", single_url = "https://crm.example.com/c/{{ event.data.id }}?n={{ event.data.name }}" }
[[flows.deliver]]
destination = "app"
ordering_key = "c-{{ event.data.name }}"
message = { type = "card", template_id = "t.schema", out_track_id = "c-{{ event.data.id }}", group = "{{ event.data.group }}", params = { name = "{{ event.data.name }}" } }
"####;

#[test]
fn vendor_text_is_escaped_where_dingtalk_renders_it_and_nowhere_else() {
    let cfg = Config::from_toml(INJECTION_CONFIG, "inject.toml").unwrap_or_else(|e| panic!("{}", e.render()));
    let engine = FlowEngine::new(&cfg);
    let body = json!({"type": "customer.created", "data": {
        "id": "C-1", "name": "[click](http://evil)", "note": "@all **pay** to <font>x</font>\n# urgent",
        "link": "[ERP](https://erp.example.com/c/1)", "group": "cid[1]",
    }});
    let event = engine.decode_webhook("crm", "m1", body.to_string().as_bytes(), now(), "ev-i".into()).unwrap();
    let jobs = engine.plan(&event, 0).unwrap();
    let p = payloads(&jobs);
    let joiner = '\u{2060}';
    // Markdown: the name is text, not a link; the note's mention, bold, HTML and heading are inert.
    assert_eq!(p[0]["markdown"]["title"], "\\[click\\](http://evil)");
    let text = p[0]["markdown"]["text"].as_str().unwrap();
    assert!(text.starts_with("### \\[click\\](http://evil)\n"), "{text}");
    assert!(text.contains(&format!("note: @{joiner}all \\*\\*pay\\*\\* to \\<font>x\\</font>\n\\# urgent")), "{text}");
    // `| raw` is the template author's explicit choice: printed as it is.
    assert!(text.ends_with("trusted: [ERP](https://erp.example.com/c/1)"), "{text}");
    // Plain text: no markup to escape, but no mention either.
    assert_eq!(
        p[1]["text"]["content"],
        format!("New customer [click](http://evil): @{joiner}all **pay** to <font>x</font>\n# urgent")
    );
    // Action card text and titles escaped; the URL is not DingTalk text.
    assert_eq!(p[2]["actionCard"]["text"], "\\[click\\](http://evil)");
    assert_eq!(p[2]["actionCard"]["singleTitle"], "Open \\[click\\](http://evil)");
    assert_eq!(p[2]["actionCard"]["singleURL"], "https://crm.example.com/c/C-1?n=[click](http://evil)");
    // Card fields escaped; ids, groups and ordering keys untouched.
    assert_eq!(p[3]["params"]["name"], "\\[click\\](http://evil)");
    assert_eq!(p[3]["group"], "cid[1]");
    assert_eq!(p[3]["out_track_id"], "c-C-1");
    assert_eq!(jobs[3].ordering_key, "app/c-[click](http://evil)");
}
