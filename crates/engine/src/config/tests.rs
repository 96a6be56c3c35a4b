use super::build::SecretResolver;
use super::*;
use connectors::netsuite::config::NetsuiteAuth;
use connectors::salesforce::config::SalesforceGrant;
use std::collections::HashMap;

const BASE: &str = r#"
[sources.erp]
type = "webhook"
system = "erp"
secret = { env = "WH_SECRET" }
fields.amount = { path = "/data/amount", type = "money" }
fields.qty = { path = "/data/qty", type = "quantity", required = false }

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "OPS_TOKEN" }
secret = { env = "OPS_SECRET" }
"#;

fn check(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml(text, "test.toml")
}

/// Validate and expect exactly one error; return (code, message, line, col).
fn one_error(text: &str) -> (Code, String, usize, usize) {
    let errs = check(text).expect_err("config should be refused");
    assert_eq!(errs.errors.len(), 1, "expected one error, got: {}", errs.render());
    let e = &errs.errors[0];
    let (l, c) = errs.line_col(e).expect("error has a position");
    (e.code, e.message.clone(), l, c)
}

fn with_flow(flow: &str) -> String {
    format!("{BASE}\n{flow}")
}

/// Line (1-based) of the first line of `text` containing `needle`, and the column of `needle`.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    for (i, line) in text.lines().enumerate() {
        if let Some(c) = line.find(needle) {
            return (i + 1, line[..c].chars().count() + 1);
        }
    }
    panic!("{needle} not in text");
}

const GOOD_FLOW: &str = r#"
[[flows]]
name = "f"
on = { source = "erp", entity = "purchase_order", change = ["created"] }
when = 'event.fields.amount.currency == "HKD"'
[[flows.deliver]]
destination = "ops"
message = { type = "markdown", title = "PO {{ event.entity_id }}", text = "{{ event.fields.amount.amount }} {{ event.data.anything.goes }}" }
"#;

#[test]
fn base_with_good_flow_validates() {
    let cfg = check(&with_flow(GOOD_FLOW)).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(cfg.flows.len(), 1);
    assert_eq!(cfg.flows[0].deliver[0].ordering_key, OrderingKey::Literal("ops".into()));
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(cfg.server.max_body_bytes, 1_048_576);
    assert_eq!(cfg.store.url, "sqlite://dingbridge.db");
    assert_eq!(cfg.delivery.schedule, RetrySchedule::default());
    assert_eq!(cfg.sources["erp"].entity_id, "/data/id");
    assert!(!cfg.sources["erp"].fields["qty"].required);
}

#[test]
fn quickstart_example_validates_clean() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
    match load_and_validate(&path) {
        Ok((cfg, text)) => {
            assert!(text.contains("po-to-ops"));
            assert_eq!(cfg.flows[0].name, "po-to-ops");
        }
        Err(e) => panic!("{}", e.render()),
    }
}

#[test]
fn db0101_unknown_key() {
    let text = format!("{BASE}\n[server]\nlisten = \"127.0.0.1:9\"\nlisten_port = 9\n");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::UnknownKey);
    assert!(msg.contains("unknown field `listen_port`"), "{msg}");
    assert_eq!((l, c), pos(&text, "listen_port"));
}

#[test]
fn db0101_unknown_key_in_message_for_its_type() {
    let text = with_flow(
        r#"
[[flows]]
name = "f"
on = { source = "erp" }
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "hi", title = "x" }
"#,
    );
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::UnknownKey);
    assert!(msg.contains("`title` is not used by a `text` message"), "{msg}");
    assert_eq!((l, c), pos(&text, "\"x\""));
}

#[test]
fn db0102_unknown_destination_suggests_known_ones() {
    let text = with_flow(
        r#"
[[flows]]
name = "po-to-ops"
on = { source = "erp" }
[[flows.deliver]]
destination = "opps"
message = { type = "text", content = "hi" }
"#,
    );
    let errs = check(&text).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::UnknownDestination]);
    let e = &errs.errors[0];
    assert_eq!(e.message, "flow `po-to-ops` delivers to unknown destination `opps`");
    assert!(e.label.contains("known destinations: ops"), "{}", e.label);
    assert_eq!(e.help.as_deref(), Some("did you mean `ops`?"));
    let (l, c) = pos(&text, "\"opps\"");
    assert_eq!(errs.line_col(e), Some((l, c)));
    let rendered = errs.render();
    assert!(
        rendered.starts_with("error[DB0102]: flow `po-to-ops` delivers to unknown destination `opps`\n"),
        "{rendered}"
    );
    assert!(rendered.contains(&format!("  --> test.toml:{l}:{c}\n")), "{rendered}");
    assert!(rendered.contains("destination = \"opps\""), "snippet shown: {rendered}");
}

#[test]
fn db0103_unknown_source() {
    let text = with_flow(
        r#"
[[flows]]
name = "f"
on = { source = "crm" }
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "hi" }
"#,
    );
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::UnknownSource);
    assert_eq!(msg, "flow `f` listens to unknown source `crm`");
    assert_eq!((l, c), pos(&text, "\"crm\""));
}

#[test]
fn db0104_cel_compile_error() {
    let text = with_flow(
        r#"
[[flows]]
name = "f"
on = { source = "erp" }
when = 'event.entity == '
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "hi" }
"#,
    );
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::CelCompile);
    assert!(msg.starts_with("the condition of flow `f` does not compile"), "{msg}");
    assert_eq!((l, c), pos(&text, "'event.entity == '"));
}

#[test]
fn db0105_template_error() {
    let text = with_flow(
        r#"
[[flows]]
name = "f"
on = { source = "erp" }
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "{{ event.id " }
"#,
    );
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::Template);
    assert!(msg.starts_with("`content` of the message of flow `f` does not compile"), "{msg}");
    assert_eq!((l, c), pos(&text, "\"{{ event.id \""));
}

#[test]
fn db0106_unknown_event_field_in_condition_and_template() {
    let text = with_flow(
        r#"
[[flows]]
name = "f"
on = { source = "erp" }
when = 'event.fields.total > 3'
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "{{ event.fields.amount.value }} {{ event.entity_idd }}" }
"#,
    );
    let errs = check(&text).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::UnknownEventField; 3], "{}", errs.render());
    let msgs: Vec<&str> = errs.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(msgs[0].contains("`event.fields.total`"), "{msgs:?}");
    assert!(errs.errors[0].label.contains("declared fields: amount, qty"), "{}", errs.errors[0].label);
    assert_eq!(errs.line_col(&errs.errors[0]), Some(pos(&text, "'event.fields.total > 3'")));
    assert!(msgs.iter().any(|m| m.contains("`event.fields.amount.value`")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("`event.entity_idd`")), "{msgs:?}");
}

#[test]
fn db0106_allows_comprehension_vars_data_and_quantity_parts() {
    let text = with_flow(
        r#"
[[flows]]
name = "f"
on = { source = "erp" }
when = 'has(event.fields.qty) && event.fields.qty.unit == "EA" && event.data.lines.all(l, l.qty > 0) && event["entity"] == "po"'
[[flows.deliver]]
destination = "ops"
ordering_key = "{{ event.entity_id }}"
message = { type = "action_card", title = "t", text = "{% for l in event.data.lines %}{{ l.sku }}{% endfor %}", single_title = "Open", single_url = "https://x/{{ event.entity_id }}" }
"#,
    );
    check(&text).unwrap_or_else(|e| panic!("{}", e.render()));
}

#[test]
fn db0107_bad_duration_and_empty_schedule() {
    let text = format!("{BASE}\n[delivery]\nlease = \"30 seconds\"\n");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::BadDuration);
    assert!(msg.starts_with("delivery.lease: `30 seconds`"), "{msg}");
    assert_eq!((l, c), pos(&text, "\"30 seconds\""));

    let text = format!("{BASE}\n[delivery]\nretry_schedule = []\n");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::BadDuration);
    assert_eq!(msg, "delivery.retry_schedule is empty");
    assert_eq!((l, c), pos(&text, "[]"));
}

#[test]
fn db0108_duplicate_flow_name() {
    let flow = r#"
[[flows]]
name = "same"
on = { source = "erp" }
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "hi" }
"#;
    let text = with_flow(&format!("{flow}{flow}"));
    let (code, msg, l, _c) = one_error(&text);
    assert_eq!(code, Code::DuplicateName);
    assert_eq!(msg, "duplicate flow name `same`");
    let first = pos(&text, "\"same\"").0;
    assert!(l > first, "points at the second definition");
}

#[test]
fn db0109_missing_secret_names_variable_and_line() {
    let cfg = check(&with_flow(GOOD_FLOW)).unwrap();
    struct Env(HashMap<&'static str, &'static str>);
    impl SecretResolver for Env {
        fn env(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
        fn file(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
        }
    }
    let env = Env(HashMap::from([("WH_SECRET", "whsec_dGVzdC1zZWNyZXQ="), ("OPS_TOKEN", "tok")]));
    let errs = cfg.build_with(&env, Arc::new(connect::SystemClock)).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::MissingSecret]);
    let e = &errs.errors[0];
    assert!(e.message.contains("environment variable `OPS_SECRET` is not set"), "{}", e.message);
    assert_eq!(errs.line_col(e), Some(pos(&cfg.text, "{ env = \"OPS_SECRET\" }")));
}

#[test]
fn db0110_toml_syntax() {
    let text = "[server]\nlisten = \"127.0.0.1:8080\n";
    let (code, _msg, l, _c) = one_error(text);
    assert_eq!(code, Code::TomlSyntax);
    assert_eq!(l, 2);
}

#[test]
fn db0120_unknown_field_type() {
    let text = BASE.replace("type = \"quantity\"", "type = \"qty\"");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::UnknownChoice);
    assert_eq!(msg, "field `qty` of source `erp` has unknown type `qty`");
    assert_eq!((l, c), pos(&text, "\"qty\", required"));
}

#[test]
fn all_errors_are_collected() {
    let text = with_flow(
        r#"
[delivery]
request_timeout = "10 s"

[[flows]]
name = "f"
on = { source = "crm" }
[[flows.deliver]]
destination = "nowhere"
message = { type = "text", content = "hi" }
"#,
    );
    let errs = check(&text).unwrap_err();
    let mut codes = errs.codes();
    codes.sort_by_key(|c| c.as_str());
    assert_eq!(codes, vec![Code::UnknownDestination, Code::UnknownSource, Code::BadDuration]);
    assert_eq!(errs.render().matches("error[DB01").count(), 3);
}

#[test]
fn debug_of_runtime_and_config_redacts_secrets() {
    let cfg = check(&with_flow(GOOD_FLOW)).unwrap();
    let secret = Secret::new("super-secret-token-123");
    assert_eq!(format!("{secret:?}"), "[redacted]");
    assert_eq!(format!("{secret}"), "[redacted]");
    let src =
        connect::webhook::WebhookVerifier::new([connect::webhook::WebhookSecret::parse(secret.expose()).unwrap()])
            .unwrap()
            .with_tolerance(Duration::from_secs(1));
    let dbg = format!("{src:?}");
    assert!(dbg.contains("[redacted]") && !dbg.contains("super-secret"), "{dbg}");
    // The validated config holds references only: it names variables, never values.
    let dbg = format!("{cfg:?}");
    assert!(dbg.contains("OPS_TOKEN") && !dbg.contains("super-secret"));
}

#[test]
fn with_overrides_points_robots_at_the_simulator() {
    let cfg = check(&with_flow(GOOD_FLOW)).unwrap();
    let sims = BTreeMap::from([("dingtalk".to_string(), "http://127.0.0.1:4001".to_string())]);
    let cfg = cfg.with_overrides(Some("sqlite://other.db".into()), Some(&sims));
    assert_eq!(cfg.store.url, "sqlite://other.db");
    let DestinationKind::DingtalkRobot(robot) = &cfg.destinations["ops"].kind else {
        panic!("ops is a robot destination");
    };
    assert_eq!(robot.base_url, "http://127.0.0.1:4001");
}

#[test]
fn quickstart_builds_with_its_env_and_debug_redacts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
    let (cfg, _) = load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    struct Env;
    impl SecretResolver for Env {
        fn env(&self, name: &str) -> Option<String> {
            Some(format!("value-of-{name}-7f3a"))
        }
        fn file(&self, _path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::other("no files here"))
        }
    }
    let rt = cfg.build_with(&Env, Arc::new(connect::SystemClock)).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(rt.sinks.keys().collect::<Vec<_>>(), ["ops"]);
    // The source's verifier uses exactly the resolved secret: a request signed with it verifies.
    let resolved = connect::webhook::WebhookSecret::parse("value-of-DINGBRIDGE_WEBHOOK_SECRET-7f3a").unwrap();
    let now = jiff::Timestamp::now();
    let mut headers = http::HeaderMap::new();
    headers.insert("webhook-id", http::HeaderValue::from_static("msg-1"));
    headers.insert("webhook-timestamp", http::HeaderValue::from(now.as_second()));
    let signature = connect::webhook::sign(&resolved, "msg-1", now.as_second(), b"{}");
    headers.insert("webhook-signature", http::HeaderValue::from_str(&signature).unwrap());
    rt.sources["erp-events"].verify(&headers, b"{}", now).unwrap();
    let dbg = format!("{rt:?} {cfg:?}");
    assert!(!dbg.contains("-7f3a"), "a secret leaked into Debug: {dbg}");
    assert!(dbg.contains("[redacted]"), "{dbg}");
}

#[test]
fn db0116_request_timeout_alone_longer_than_the_default_lease() {
    let text = format!("[delivery]\nrequest_timeout = \"60s\"\n{BASE}");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::OutOfRange);
    assert!(msg.contains("must be longer than delivery.request_timeout"), "{msg}");
    assert_eq!((l, c), pos(&text, "\"60s\""));
}

#[test]
fn db0124_malformed_webhook_secret_is_refused_at_build_with_its_line() {
    let cfg = check(&with_flow(GOOD_FLOW)).unwrap();
    struct Env;
    impl SecretResolver for Env {
        fn env(&self, name: &str) -> Option<String> {
            Some(if name == "WH_SECRET" { "whsec_not base64!".into() } else { "x".into() })
        }
        fn file(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
        }
    }
    let errs = cfg.build_with(&Env, Arc::new(connect::SystemClock)).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::BadCredential]);
    let e = &errs.errors[0];
    assert!(e.message.contains("source `erp`"), "{}", e.message);
    assert!(!e.message.contains("not base64!"), "the secret leaked into the message: {}", e.message);
    assert_eq!(errs.line_col(e), Some(pos(&cfg.text, "{ env = \"WH_SECRET\" }")));
}

const DINGTALK: &str = r#"
[dingtalk.apps.hk]
app_key = "dingbridgehk0001apps"
app_secret = { env = "DT_SECRET" }
agent_id = 3120001

[sources.dt]
type = "dingtalk"
app = "hk"

[sources.dt_http]
type = "dingtalk"
app = "hk"
mode = "http"
callback_token = { env = "DT_CB_TOKEN" }
callback_aes_key = { env = "DT_CB_KEY" }

[destinations.app]
type = "dingtalk_app"
app = "hk"

[[flows]]
name = "po-card"
on = { source = "dt", entity = "approval", change = ["started"] }
[[flows.deliver]]
destination = "app"
message = { type = "card", template_id = "tpl-1.schema", out_track_id = "po-{{ event.entity_id }}", group = "cid-ops", params = { title = "{{ event.data.title }}" }, private_params = { canApprove = "true" }, private_to = "{{ event.data.staffId }}" }
[[flows.deliver]]
destination = "app"
message = { type = "work_notice", users = "u1, u2", title = "t", text = "x {{ event.entity_id }}" }

[[flows]]
name = "click"
on = { source = "dt", entity = "card_action" }
[[flows.deliver]]
destination = "app"
message = { type = "card_update", out_track_id = "{{ event.entity_id }}", params = { status = "Seen by {{ event.data.userId }}" } }
"#;

struct DingtalkEnv;
impl SecretResolver for DingtalkEnv {
    fn env(&self, name: &str) -> Option<String> {
        match name {
            "DT_CB_KEY" => Some("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into()),
            _ => Some(format!("value-of-{name}-9c1d")),
        }
    }
    fn file(&self, _path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::other("no files here"))
    }
}

#[test]
fn dingtalk_apps_sources_and_app_destinations_validate_and_build() {
    let cfg = check(DINGTALK).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(cfg.dingtalk_apps["hk"].agent_id, Some(3_120_001));
    assert!(matches!(&cfg.sources["dt"].kind, SourceKind::Dingtalk { inbound: DingtalkInbound::Stream, .. }));
    assert!(matches!(&cfg.sources["dt_http"].kind, SourceKind::Dingtalk { inbound: DingtalkInbound::Http { .. }, .. }));
    let MessageSpec::Card(card) = &cfg.flows[0].deliver[0].message else { panic!("a card") };
    assert_eq!(card.template_id, "tpl-1.schema");
    assert_eq!(card.callback, CardCallback::Stream);
    let rt = cfg.build_with(&DingtalkEnv, Arc::new(connect::SystemClock)).unwrap_or_else(|e| panic!("{}", e.render()));
    assert!(rt.sinks.contains_key("app"));
    assert!(matches!(rt.dingtalk_sources["dt"], DingtalkSourceRuntime::Stream(_)));
    assert!(matches!(rt.dingtalk_sources["dt_http"], DingtalkSourceRuntime::Http { .. }));
    let dbg = format!("{rt:?} {cfg:?}");
    assert!(!dbg.contains("-9c1d") && !dbg.contains("ABCDEFG"), "a secret leaked into Debug: {dbg}");
}

#[test]
fn sim_endpoints_point_dingtalk_apps_at_the_simulator() {
    let cfg = check(DINGTALK).unwrap();
    let sims = BTreeMap::from([("dingtalk".to_string(), "http://127.0.0.1:4001".to_string())]);
    let cfg = cfg.with_overrides(None, Some(&sims));
    let rt = cfg.build_with(&DingtalkEnv, Arc::new(connect::SystemClock)).unwrap();
    let DingtalkSourceRuntime::Stream(settings) = &rt.dingtalk_sources["dt"] else { panic!("stream") };
    assert_eq!(settings.new_api_base, "http://127.0.0.1:4001");
}

#[test]
fn flows_render_app_messages() {
    let cfg = check(DINGTALK).unwrap();
    let engine = crate::flow::FlowEngine::new(&cfg);
    let inbound = model::InboundChange {
        event_type: "bpms_instance_change".into(),
        entity: "approval".into(),
        entity_id: "pi-1".into(),
        change: "started".into(),
        dedup_key: "bpms_instance_change:pi-1:start".into(),
        source_time_ms: Some(1_767_220_000_000),
        data: serde_json::json!({"title": "PR 42", "staffId": "manager4711"}),
    };
    let event =
        engine.decode_inbound("dt", &inbound, model::ZonedTime::from(jiff::Timestamp::now()), "e1".into()).unwrap();
    assert_eq!(event.idempotency_key, "dt:bpms_instance_change:pi-1:start");
    let jobs = engine.plan(&event, 0).unwrap();
    assert_eq!(jobs.len(), 2);
    let card: serde_json::Value = serde_json::from_str(&jobs[0].payload).unwrap();
    assert_eq!(card["api"], "card");
    assert_eq!(card["out_track_id"], "po-pi-1");
    assert_eq!(card["params"]["title"], "PR 42");
    assert_eq!(card["private_to"], serde_json::json!(["manager4711"]));
    assert_eq!(card["callback"], "stream");
    let notice: serde_json::Value = serde_json::from_str(&jobs[1].payload).unwrap();
    assert_eq!(notice["users"], serde_json::json!(["u1", "u2"]));
    // Every rendered shape is one the sink accepts.
    for job in &jobs {
        let v: serde_json::Value = serde_json::from_str(&job.payload).unwrap();
        serde_json::from_value::<connectors::dingtalk::app_sink::AppMessage>(v).unwrap();
    }
}

#[test]
fn dingtalk_config_errors_name_the_line() {
    // A card message sent to a robot destination.
    let text = with_flow(
        r#"
[[flows]]
name = "f"
on = { source = "erp" }
[[flows.deliver]]
destination = "ops"
message = { type = "card_update", out_track_id = "x", params = { a = "b" } }
"#,
    );
    let (code, msg, line, _) = one_error(&text);
    assert_eq!(code, Code::UnknownChoice);
    assert!(msg.contains("dingtalk_robot destination, which cannot send it"), "{msg}");
    assert_eq!(line, pos(&text, "type = \"card_update\"").0);

    // An unknown app.
    let text = DINGTALK
        .replace("[sources.dt]\ntype = \"dingtalk\"\napp = \"hk\"", "[sources.dt]\ntype = \"dingtalk\"\napp = \"hkk\"");
    let errs = check(&text).expect_err("unknown app");
    let rendered = errs.render();
    assert!(rendered.contains("unknown DingTalk app `hkk`") && rendered.contains("did you mean `hk`"), "{rendered}");

    // HTTP mode without its keys, and a card with both group and users.
    let text = DINGTALK
        .replace("callback_token = { env = \"DT_CB_TOKEN\" }\n", "")
        .replace("group = \"cid-ops\"", "group = \"cid-ops\", users = \"u1\"");
    let errs = check(&text).expect_err("two errors");
    let rendered = errs.render();
    assert_eq!(errs.errors.len(), 2, "{rendered}");
    assert!(rendered.contains("needs `callback_token`"), "{rendered}");
    assert!(rendered.contains("exactly one of `group` and `users`"), "{rendered}");

    // A templated template id, and a webhook key on a dingtalk source.
    let text = DINGTALK
        .replace("template_id = \"tpl-1.schema\"", "template_id = \"{{ event.id }}\"")
        .replace("[sources.dt]\ntype = \"dingtalk\"", "[sources.dt]\ntype = \"dingtalk\"\ntolerance = \"5m\"");
    let errs = check(&text).expect_err("two errors");
    let rendered = errs.render();
    assert!(rendered.contains("must be a fixed, non-empty value"), "{rendered}");
    assert!(rendered.contains("key `tolerance` is not used by a dingtalk source"), "{rendered}");
}

#[test]
fn dingtalk_bad_callback_key_is_refused_at_build_with_its_line() {
    struct ShortKey;
    impl SecretResolver for ShortKey {
        fn env(&self, name: &str) -> Option<String> {
            Some(if name == "DT_CB_KEY" { "too-short".into() } else { format!("v-{name}") })
        }
        fn file(&self, _path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::other("no files"))
        }
    }
    let cfg = check(DINGTALK).unwrap();
    let errs = cfg.build_with(&ShortKey, Arc::new(connect::SystemClock)).expect_err("bad key");
    let rendered = errs.render();
    assert!(rendered.contains("callback keys of source `dt_http` are not usable"), "{rendered}");
    assert!(!rendered.contains("too-short"), "the key itself must not be shown: {rendered}");
    let (line, _) = errs.line_col(&errs.errors[0]).unwrap();
    assert_eq!(line, pos(DINGTALK, "callback_aes_key").0);
}

// ---- Salesforce and Zoho: orgs, sources, destinations, record messages ----

const CRM: &str = r#"
[salesforce.orgs.hk]
login_url = "https://hktrading.my.salesforce.com/"
client_id = "3MVG9example"
client_secret = { env = "SF_CLIENT_SECRET" }
organization_id = "00D5g000004Hkbr"

[salesforce.orgs.jwt]
login_url = "https://test.salesforce.com"
grant = "jwt_bearer"
client_id = "3MVG9jwt"
username = "integration@hk.example"
private_key = { file = "/run/secrets/sf.key" }
api_version = "v60.0"
reserve = 2500

[salesforce.orgs.rt]
login_url = "https://login.salesforce.com"
grant = "refresh_token"
client_id = "3MVG9rt"
refresh_token = { env = "SF_REFRESH" }

[zoho.orgs.hk]
data_centre = "com.cn"
client_id = "1000.EXAMPLE"
client_secret = { env = "ZOHO_CLIENT_SECRET" }
refresh_token = { env = "ZOHO_REFRESH_TOKEN" }

[sources.crm]
type = "salesforce"
org = "hk"
objects = ["Opportunity", "Account"]
outbound_token = { env = "SF_OUTBOUND_TOKEN" }
[sources.crm.fields]
amount = { path = "/data/amount", type = "money", required = false }

[sources.crm-poll]
type = "salesforce"
org = "rt"
objects = ["Case"]
intake = "poll"
poll_interval = "30s"
coalesce = "0s"

[sources.deals]
type = "zoho"
org = "hk"
objects = ["Deals"]
channel_token = { env = "ZOHO_CHANNEL_TOKEN" }
notify_url = "https://gw.example.com/intake/zoho/crm"

[sources.deals-poll]
type = "zoho"
org = "hk"
objects = ["Deals"]
intake = "poll"
poll_interval = "2m"

[destinations.sf-accounts]
type = "salesforce"
org = "hk"

[destinations.sf-approvals]
type = "salesforce"
org = "jwt"
priority = "interactive"
linger = "200ms"
concurrency = 2

[destinations.zoho-accounts]
type = "zoho"
org = "hk"
linger = "2s"

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "OPS_TOKEN" }

[[flows]]
name = "won"
on = { source = "crm", entity = "opportunity" }
when = 'has(event.fields.amount)'
[[flows.deliver]]
destination = "ops"
when = 'event.data.account.country == "Hong Kong"'
message = { type = "text", content = "Won {{ event.entity_id }}" }
[[flows.deliver]]
destination = "sf-accounts"
message = { type = "record", object = "Account", op = "update", id = "{{ event.data.account_id }}", fields = { Credit_Status__c = "{{ event.data.status }}" }, json_fields = { CreditLimit__c = "{{ event.fields.amount.amount }}" } }
[[flows.deliver]]
destination = "zoho-accounts"
message = { type = "record", object = "Accounts", op = "upsert", external_id_field = "ERP_Customer_No", external_id = "{{ event.entity_id }}", fields = { Account_Name = "{{ event.data.name }}" } }
"#;

/// Every variable is set; the JWT key file holds the simulator's test key.
struct CrmEnv;
impl SecretResolver for CrmEnv {
    fn env(&self, name: &str) -> Option<String> {
        Some(if name == "ZOHO_CHANNEL_TOKEN" { "chan-5e2b".to_string() } else { format!("value-of-{name}-5e2b") })
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        if path == Path::new("/run/secrets/sf.key") {
            Ok(connectors::salesforce::sim::TEST_PRIVATE_KEY_PEM.to_string())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
        }
    }
}

/// `CRM` with `from` replaced by `to` (which must occur).
fn crm_with(from: &str, to: &str) -> String {
    assert!(CRM.contains(from), "{from} not in CRM");
    CRM.replacen(from, to, 1)
}

/// Exactly one error, with `code`, on the line of `needle`; returns its rendering.
fn one_error_at(text: &str, code: Code, needle: &str) -> String {
    let errs = check(text).expect_err("config should be refused");
    let rendered = errs.render();
    assert_eq!(errs.errors.len(), 1, "expected one error, got: {rendered}");
    assert_eq!(errs.errors[0].code, code, "{rendered}");
    let (line, _) = errs.line_col(&errs.errors[0]).expect("error has a position");
    assert_eq!(line, pos(text, needle).0, "{rendered}");
    rendered
}

#[test]
fn crm_orgs_sources_and_destinations_validate_with_their_defaults() {
    let cfg = check(CRM).unwrap_or_else(|e| panic!("{}", e.render()));
    let hk = &cfg.connections.salesforce_orgs["hk"];
    assert_eq!(hk.login_url, "https://hktrading.my.salesforce.com");
    assert!(matches!(&hk.grant, SalesforceGrant::ClientCredentials { client_secret }
        if client_secret.location == SecretLocation::Env("SF_CLIENT_SECRET".into())));
    assert_eq!(hk.api_version, connectors::salesforce::DEFAULT_API_VERSION);
    assert_eq!(hk.reserve, 1_000);
    assert_eq!(hk.organization_id.as_deref(), Some("00D5g000004HkbrEAC"), "stored in the 18-character form");
    let jwt = &cfg.connections.salesforce_orgs["jwt"];
    assert!(matches!(&jwt.grant, SalesforceGrant::JwtBearer { username, .. } if username == "integration@hk.example"));
    assert_eq!((jwt.api_version.as_str(), jwt.reserve), ("v60.0", 2_500));
    assert!(matches!(
        &cfg.connections.salesforce_orgs["rt"].grant,
        SalesforceGrant::RefreshToken { client_secret: None, .. }
    ));
    assert_eq!(cfg.connections.zoho_orgs["hk"].data_centre, connectors::zoho::auth::DataCentre::Cn);

    let crm = &cfg.sources["crm"];
    assert_eq!(crm.system, "salesforce");
    assert_eq!(
        crm.kind,
        SourceKind::Crm(
            CrmSystem::Salesforce,
            CrmSource {
                org: "hk".into(),
                objects: vec!["Opportunity".into(), "Account".into()],
                intake: CrmIntake::OutboundMessage {
                    token: SecretRef {
                        location: SecretLocation::Env("SF_OUTBOUND_TOKEN".into()),
                        span: crm_token_span()
                    },
                },
                coalesce: Duration::from_secs(5),
            }
        )
    );
    assert!(
        matches!(&cfg.sources["crm-poll"].kind, SourceKind::Crm(CrmSystem::Salesforce, CrmSource { intake: CrmIntake::Poll { interval }, coalesce, .. })
        if *interval == Duration::from_secs(30) && coalesce.is_zero())
    );
    let SourceKind::Crm(CrmSystem::Zoho, deals) = &cfg.sources["deals"].kind else { panic!("a zoho source") };
    assert_eq!(cfg.sources["deals"].system, "zoho");
    assert!(matches!(&deals.intake, CrmIntake::Notifications { notify_url: Some(u), .. } if u.ends_with("/zoho/crm")));
    assert!(
        matches!(&cfg.sources["deals-poll"].kind, SourceKind::Crm(CrmSystem::Zoho, CrmSource { intake: CrmIntake::Poll { interval }, .. })
        if *interval == Duration::from_secs(120))
    );

    let dest = |n: &str| &cfg.destinations[n].kind;
    assert!(
        matches!(dest("sf-accounts"), DestinationKind::Crm(CrmSystem::Salesforce, CrmDestination { interactive: false, linger, .. })
        if *linger == Duration::from_secs(1))
    );
    assert!(
        matches!(dest("sf-approvals"), DestinationKind::Crm(CrmSystem::Salesforce, CrmDestination { interactive: true, linger, .. })
        if *linger == Duration::from_millis(200))
    );
    assert_eq!((dest("zoho-accounts").system(), dest("zoho-accounts").type_name()), ("zoho", "zoho"));
    assert_eq!(dest("sf-accounts").type_name(), "salesforce");
    assert_eq!(cfg.concurrency_for("sf-approvals"), 2);

    let deliver = &cfg.flows[0].deliver;
    assert_eq!(
        deliver[0].when.as_ref().map(|c| c.source.as_str()),
        Some("event.data.account.country == \"Hong Kong\"")
    );
    assert!(deliver[1].when.is_none());
    let MessageSpec::Record(update) = &deliver[1].message else { panic!("a record") };
    assert_eq!(update.object, "Account");
    assert!(matches!(&update.op, RecordOp::Update { .. }));
    assert_eq!(update.fields.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["Credit_Status__c"]);
    assert_eq!(update.json_fields.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["CreditLimit__c"]);
    let MessageSpec::Record(upsert) = &deliver[2].message else { panic!("a record") };
    assert!(matches!(&upsert.op, RecordOp::Upsert { external_id_field, .. } if external_id_field == "ERP_Customer_No"));
}

#[test]
fn crm_orgs_build_one_client_each_and_a_sink_per_destination() {
    let cfg = check(CRM).unwrap();
    let rt = cfg.build_with(&CrmEnv, Arc::new(connect::SystemClock)).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(rt.connections.salesforce_orgs.keys().collect::<Vec<_>>(), ["hk", "jwt", "rt"]);
    assert_eq!(rt.connections.zoho_orgs.keys().collect::<Vec<_>>(), ["hk"]);
    assert_eq!(rt.sinks.keys().collect::<Vec<_>>(), ["ops", "sf-accounts", "sf-approvals", "zoho-accounts"]);
    assert_eq!(rt.sinks["sf-accounts"].batching().map(|b| b.linger), Some(Duration::from_secs(1)));
    assert_eq!(rt.sinks["zoho-accounts"].batching().map(|b| b.linger), Some(Duration::from_secs(2)));
    assert_eq!(rt.crm_push_secrets.keys().collect::<Vec<_>>(), ["crm", "deals"]);
    assert_eq!(rt.crm_push_secrets["deals"].expose(), "chan-5e2b");
    let dbg = format!("{rt:?} {cfg:?}");
    assert!(!dbg.contains("5e2b") && !dbg.contains("PRIVATE KEY"), "a secret leaked into Debug: {dbg}");
}

#[test]
fn jwt_audience_is_the_generic_login_host() {
    use connectors::salesforce::config::jwt_audience;
    assert_eq!(jwt_audience("https://hktrading.my.salesforce.com"), "https://login.salesforce.com");
    assert_eq!(jwt_audience("https://login.salesforce.com"), "https://login.salesforce.com");
    assert_eq!(jwt_audience("https://test.salesforce.com"), "https://test.salesforce.com");
    assert_eq!(jwt_audience("https://hktrading--uat.sandbox.my.salesforce.com/"), "https://test.salesforce.com");
}

/// A loopback HTTP server answering token and data calls, recording `(request line, body)`.
struct FakeVendor {
    url: String,
    seen: Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl FakeVendor {
    async fn start() -> FakeVendor {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (log, base) = (seen.clone(), url.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (log, base) = (log.clone(), base.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head, body) = loop {
                        let n = sock.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                            })
                            .map_or(0, |v| v.parse::<usize>().unwrap());
                        if buf.len() >= end + 4 + length || n == 0 {
                            break (head, String::from_utf8_lossy(&buf[end + 4..]).to_string());
                        }
                    };
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                    let answer = if path == "/services/oauth2/token" {
                        serde_json::json!({"access_token": "00D!fake", "instance_url": base}).to_string()
                    } else if path == "/oauth/v2/token" {
                        serde_json::json!({"access_token": "1000.fake", "api_domain": base, "expires_in": 3600})
                            .to_string()
                    } else {
                        serde_json::json!({"DailyApiRequests": {"Max": 15000, "Remaining": 14000}}).to_string()
                    };
                    log.lock().unwrap().push((line, body));
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    sock.write_all(response.as_bytes()).await.unwrap();
                });
            }
        });
        FakeVendor { url, seen }
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn sim_endpoints_send_each_orgs_grant_with_its_resolved_secrets() {
    let fake = FakeVendor::start().await;
    let sims = BTreeMap::from([("salesforce".to_string(), fake.url.clone()), ("zoho".to_string(), fake.url.clone())]);
    let cfg = check(CRM).unwrap().with_overrides(None, Some(&sims));
    assert_eq!(cfg.connections.salesforce_orgs["jwt"].base_url_override.as_deref(), Some(fake.url.as_str()));
    let rt = cfg.build_with(&CrmEnv, Arc::new(connect::SystemClock)).unwrap_or_else(|e| panic!("{}", e.render()));
    let interactive = connectors::salesforce::limits::Priority::Interactive;

    rt.connections.salesforce_orgs["hk"].limits(interactive).await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen[0].0, "POST /services/oauth2/token HTTP/1.1");
    assert!(seen[0].1.contains("grant_type=client_credentials"), "{}", seen[0].1);
    assert!(seen[0].1.contains("client_id=3MVG9example"), "{}", seen[0].1);
    assert!(seen[0].1.contains("client_secret=value-of-SF_CLIENT_SECRET-5e2b"), "{}", seen[0].1);
    assert_eq!(seen[1].0, "GET /services/data/v62.0/limits HTTP/1.1", "data calls go to the instance URL");
    assert_eq!(rt.connections.salesforce_orgs["hk"].usage().snapshot(), None, "no Sforce-Limit-Info header was sent");

    rt.connections.salesforce_orgs["jwt"].limits(interactive).await.unwrap();
    let seen = fake.seen();
    assert!(seen[2].1.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"), "{}", seen[2].1);
    assert!(seen[2].1.contains("assertion="), "{}", seen[2].1);
    assert_eq!(seen[3].0, "GET /services/data/v60.0/limits HTTP/1.1", "the org's api_version");

    rt.connections.salesforce_orgs["rt"].limits(interactive).await.unwrap();
    let seen = fake.seen();
    assert!(seen[4].1.contains("grant_type=refresh_token"), "{}", seen[4].1);
    assert!(seen[4].1.contains("refresh_token=value-of-SF_REFRESH-5e2b"), "{}", seen[4].1);
    assert!(!seen[4].1.contains("client_secret"), "no client secret configured: {}", seen[4].1);

    rt.connections.zoho_orgs["hk"].tokens().get().await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen[6].0, "POST /oauth/v2/token HTTP/1.1");
    assert!(seen[6].1.contains("refresh_token=value-of-ZOHO_REFRESH_TOKEN-5e2b"), "{}", seen[6].1);
    assert!(seen[6].1.contains("client_id=1000.EXAMPLE"), "{}", seen[6].1);
}

#[test]
fn grant_keys_must_fit_the_grant() {
    // A key the grant does not use, with the help line listing what each grant takes.
    let text = crm_with(
        "username = \"integration@hk.example\"\n",
        "username = \"integration@hk.example\"\nclient_secret = { env = \"X\" }\n",
    );
    let rendered = one_error_at(&text, Code::KeyConflict, "client_secret = { env = \"X\" }");
    assert!(rendered.contains("salesforce.orgs.jwt.client_secret is not used by the jwt_bearer grant"), "{rendered}");
    let help = check(&text).unwrap_err().errors[0].help.clone().unwrap_or_default();
    assert!(help.contains("\"jwt_bearer\" takes username and private_key"), "{help}");

    // A key the grant needs.
    let text = crm_with("username = \"integration@hk.example\"\n", "");
    let rendered = one_error_at(&text, Code::MissingKey, "[salesforce.orgs.jwt]");
    assert!(rendered.contains("uses the jwt_bearer grant but has no `username`"), "{rendered}");

    // The default grant is client_credentials: a refresh token does not belong there.
    let text = crm_with("organization_id", "refresh_token = { env = \"RT\" }\norganization_id");
    one_error_at(&text, Code::KeyConflict, "refresh_token = { env = \"RT\" }");

    let text = crm_with("grant = \"refresh_token\"", "grant = \"password\"");
    let rendered = one_error_at(&text, Code::UnknownChoice, "grant = \"password\"");
    assert!(rendered.contains("`client_credentials` (default), `jwt_bearer` or `refresh_token`"), "{rendered}");
}

#[test]
fn bad_org_values_name_their_line() {
    let text = crm_with("api_version = \"v60.0\"", "api_version = \"60\"");
    let rendered = one_error_at(&text, Code::BadName, "api_version = \"60\"");
    assert!(rendered.contains("e.g. v62.0"), "{rendered}");
    let text = crm_with("00D5g000004Hkbr", "0015g00000Hk001");
    let rendered = one_error_at(&text, Code::BadName, "organization_id");
    assert!(rendered.contains("is not a Salesforce org id"), "{rendered}");
    let text = crm_with("login_url = \"https://login.salesforce.com\"", "login_url = \"login.salesforce.com\"");
    one_error_at(&text, Code::BadAddress, "login_url = \"login.salesforce.com\"");
    let text = crm_with(
        "login_url = \"https://login.salesforce.com\"",
        "login_url = \"https://login.salesforce.com/services/oauth2/token\"",
    );
    one_error_at(&text, Code::BadAddress, "/services/oauth2/token");
    let text = crm_with("data_centre = \"com.cn\"", "data_centre = \"mars\"");
    let rendered = one_error_at(&text, Code::UnknownChoice, "data_centre = \"mars\"");
    assert!(rendered.contains("zoho.orgs.hk.data_centre `mars` is unknown"), "{rendered}");
}

#[test]
fn crm_sources_check_org_objects_and_intake() {
    let text = crm_with("org = \"rt\"", "org = \"rtt\"");
    let rendered = one_error_at(&text, Code::BadConnection, "org = \"rtt\"");
    assert!(rendered.contains("source `crm-poll` uses unknown Salesforce org `rtt`"), "{rendered}");
    assert!(rendered.contains("did you mean `rt`?"), "{rendered}");
    // A Zoho source cannot use a Salesforce org name.
    let text = crm_with("type = \"zoho\"\norg = \"hk\"", "type = \"zoho\"\norg = \"jwt\"");
    let rendered = one_error_at(&text, Code::BadConnection, "org = \"jwt\"");
    assert!(rendered.contains("unknown Zoho org `jwt`"), "{rendered}");

    let text = crm_with("objects = [\"Case\"]\n", "");
    let rendered = one_error_at(&text, Code::MissingKey, "[sources.crm-poll]");
    assert!(rendered.contains("has no `objects`"), "{rendered}");
    let text = crm_with("objects = [\"Case\"]", "objects = []");
    one_error_at(&text, Code::EmptyValue, "objects = []");
    let text = crm_with("objects = [\"Case\"]", "objects = [\"Case Files\"]");
    one_error_at(&text, Code::BadName, "\"Case Files\"");
    let text = crm_with("objects = [\"Case\"]", "objects = [\"Case\", \"Case\"]");
    one_error_at(&text, Code::DuplicateName, "[\"Case\", \"Case\"]");

    let text = crm_with("poll_interval = \"30s\"", "poll_interval = \"5s\"");
    let rendered = one_error_at(&text, Code::OutOfRange, "poll_interval = \"5s\"");
    assert!(rendered.contains("at least 10s"), "{rendered}");
    let text = crm_with("poll_interval = \"30s\"", "poll_interval = \"30 s\"");
    one_error_at(&text, Code::BadDuration, "poll_interval = \"30 s\"");
    let text = crm_with(
        "org = \"rt\"\nobjects = [\"Case\"]\nintake = \"poll\"",
        "org = \"hk\"\nobjects = [\"Case\"]\nintake = \"outbound_message\"\noutbound_token = { env = \"T\" }",
    );
    let rendered = one_error_at(&text, Code::UnknownKey, "poll_interval");
    assert!(
        rendered.contains("key `poll_interval` is not used by a salesforce source receiving Outbound Messages"),
        "{rendered}"
    );
    let text = crm_with("intake = \"poll\"\npoll_interval = \"30s\"\n", "intake = \"streaming\"\n");
    let rendered = one_error_at(&text, Code::UnknownChoice, "intake = \"streaming\"");
    assert!(rendered.contains("`outbound_message` (default) or `poll`"), "{rendered}");

    let text = crm_with("channel_token = { env = \"ZOHO_CHANNEL_TOKEN\" }\n", "");
    let rendered = one_error_at(&text, Code::MissingKey, "[sources.deals]");
    assert!(rendered.contains("zoho source `deals` has no `channel_token`"), "{rendered}");
    let text = crm_with("notify_url = \"https://", "notify_url = \"ftp://");
    one_error_at(&text, Code::BadAddress, "notify_url");
}

#[test]
fn db0101_source_keys_belong_to_their_type() {
    let errs = check(&crm_with(
        "objects = [\"Deals\"]\n",
        "objects = [\"Deals\"]\npoll_interval = \"1m\"\nsecret = { env = \"S\" }\napp = \"hk\"\n",
    ))
    .unwrap_err();
    assert_eq!(errs.codes(), vec![Code::UnknownKey; 3], "{}", errs.render());
    let rendered = errs.render();
    assert!(
        rendered.contains("key `poll_interval` is not used by a zoho source receiving notifications (`deals`)"),
        "{rendered}"
    );
    assert!(rendered.contains("key `secret` is not used by a zoho source"), "{rendered}");
    assert!(rendered.contains("key `app` is not used by a zoho source"), "{rendered}");

    let text = crm_with("objects = [\"Case\"]\n", "objects = [\"Case\"]\nnotify_url = \"https://x\"\n");
    let rendered = one_error_at(&text, Code::UnknownKey, "notify_url");
    assert!(rendered.contains("only `zoho` sources take it"), "{rendered}");

    // ... and the CRM keys on the other source types.
    let text = BASE.replacen(
        "fields.qty = { path = \"/data/qty\", type = \"quantity\", required = false }\n",
        "fields.qty = { path = \"/data/qty\", type = \"quantity\", required = false }\nobjects = [\"Account\"]\n",
        1,
    );
    let errs = check(&text).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::UnknownKey], "{}", errs.render());
    assert!(errs.render().contains("key `objects` is not used by a webhook source (`erp`)"), "{}", errs.render());
    let text =
        DINGTALK.replace("[sources.dt]\ntype = \"dingtalk\"", "[sources.dt]\ntype = \"dingtalk\"\ncoalesce = \"5s\"");
    let rendered = one_error_at(&text, Code::UnknownKey, "coalesce");
    assert!(rendered.contains("only CRM (`salesforce`, `zoho`) and ERP"), "{rendered}");
}

#[test]
fn crm_destinations_check_org_priority_and_linger() {
    let text = crm_with("linger = \"2s\"", "linger = \"2s\"\npriority = \"background\"");
    let rendered = one_error_at(&text, Code::UnknownKey, "priority = \"background\"");
    assert!(rendered.contains("only `salesforce` destinations take it"), "{rendered}");
    let text = crm_with("priority = \"interactive\"", "priority = \"urgent\"");
    one_error_at(&text, Code::UnknownChoice, "priority = \"urgent\"");
    let text = crm_with("linger = \"2s\"", "linger = \"2m\"");
    let rendered = one_error_at(&text, Code::OutOfRange, "linger = \"2m\"");
    assert!(rendered.contains("at most 1m"), "{rendered}");
    let text = crm_with("linger = \"2s\"", "linger = \"2\"");
    one_error_at(&text, Code::BadDuration, "linger = \"2\"");
    let text = crm_with(
        "[destinations.sf-accounts]\ntype = \"salesforce\"\norg = \"hk\"",
        "[destinations.sf-accounts]\ntype = \"salesforce\"\norg = \"zz\"",
    );
    one_error_at(&text, Code::BadConnection, "org = \"zz\"");
    let text = crm_with(
        "[destinations.sf-accounts]\ntype = \"salesforce\"\norg = \"hk\"",
        "[destinations.sf-accounts]\ntype = \"salesforce\"\norg = \"hk\"\nbase_url = \"https://x\"",
    );
    one_error_at(&text, Code::UnknownKey, "base_url");
    let text =
        crm_with("access_token = { env = \"OPS_TOKEN\" }", "access_token = { env = \"OPS_TOKEN\" }\nlinger = \"1s\"");
    let rendered = one_error_at(&text, Code::UnknownKey, "linger = \"1s\"");
    assert!(rendered.contains("only `salesforce` and `zoho` destinations take it"), "{rendered}");
}

#[test]
fn record_messages_go_only_to_crm_destinations_and_are_checked() {
    let update = "message = { type = \"record\", object = \"Account\", op = \"update\", id = \"{{ event.data.account_id }}\", fields = { Credit_Status__c = \"{{ event.data.status }}\" }, json_fields = { CreditLimit__c = \"{{ event.fields.amount.amount }}\" } }";
    let upsert_fields = "fields = { Account_Name = \"{{ event.data.name }}\" }";

    let text = crm_with("message = { type = \"text\", content = \"Won {{ event.entity_id }}\" }", update);
    // The first line with the update message is the one now sent to the robot.
    let rendered = one_error_at(&text, Code::UnknownChoice, update);
    assert!(rendered.contains("sends a `record` message to a dingtalk_robot destination"), "{rendered}");
    let text = crm_with(update, "message = { type = \"markdown\", title = \"t\", text = \"x\" }");
    let rendered = one_error_at(&text, Code::UnknownChoice, "type = \"markdown\"");
    assert!(rendered.contains("a salesforce destination sends: record"), "{rendered}");

    let text = crm_with("op = \"update\"", "op = \"update\", external_id = \"x\"");
    let rendered = one_error_at(&text, Code::UnknownKey, "external_id = \"x\"");
    assert!(rendered.contains("key `external_id` is not used by an `update` record message"), "{rendered}");
    let text = crm_with("op = \"update\"", "op = \"merge\"");
    one_error_at(&text, Code::UnknownChoice, "op = \"merge\"");
    let text = crm_with("op = \"update\", ", "");
    let rendered = one_error_at(&text, Code::MissingKey, "type = \"record\", object = \"Account\"");
    assert!(rendered.contains("needs `op`"), "{rendered}");
    let text = crm_with("external_id_field = \"ERP_Customer_No\", ", "");
    let rendered = one_error_at(&text, Code::MissingKey, "object = \"Accounts\"");
    assert!(rendered.contains("needs `external_id_field`"), "{rendered}");
    let text = crm_with("external_id_field = \"ERP_Customer_No\"", "external_id_field = \"{{ event.data.f }}\"");
    one_error_at(&text, Code::InvalidValue, "external_id_field = \"{{");
    let text = crm_with("object = \"Account\"", "object = \"{{ event.data.object }}\"");
    let rendered = one_error_at(&text, Code::InvalidValue, "object = \"{{");
    assert!(rendered.contains("must be a fixed, non-empty value"), "{rendered}");
    let text = crm_with("object = \"Accounts\"", "object = \"Accounts/1\"");
    one_error_at(&text, Code::BadName, "object = \"Accounts/1\"");
    let text = crm_with(upsert_fields, "fields = { \"Account Name\" = \"{{ event.data.name }}\" }");
    one_error_at(&text, Code::BadName, "\"Account Name\"");
    let text = crm_with("json_fields = { CreditLimit__c", "json_fields = { Credit_Status__c = \"1\", CreditLimit__c");
    let rendered = one_error_at(&text, Code::KeyConflict, "Credit_Status__c = \"1\"");
    assert!(rendered.contains("field `Credit_Status__c` is in both `fields` and `json_fields`"), "{rendered}");
    let text = crm_with(upsert_fields, "fields = {}");
    let rendered = one_error_at(&text, Code::MissingKey, "object = \"Accounts\"");
    assert!(rendered.contains("writes no fields"), "{rendered}");
    // Templates are compiled and their event references checked like every other.
    let text = crm_with("{{ event.fields.amount.amount }}", "{{ event.fields.amount.value }}");
    one_error_at(&text, Code::UnknownEventField, "event.fields.amount.value");
    let text = crm_with("{{ event.data.account_id }}", "{{ event.data.account_id ");
    one_error_at(&text, Code::Template, "{{ event.data.account_id \"");
}

#[test]
fn delivery_conditions_are_compiled_and_checked_like_flow_conditions() {
    let text =
        crm_with("when = 'event.data.account.country == \"Hong Kong\"'", "when = 'event.data.account.country == '");
    let rendered = one_error_at(&text, Code::CelCompile, "when = 'event.data.account.country == '");
    assert!(rendered.contains("the condition of delivery #1 of flow `won` does not compile"), "{rendered}");
    let text =
        crm_with("when = 'event.data.account.country == \"Hong Kong\"'", "when = 'event.fields.country == \"HK\"'");
    let rendered = one_error_at(&text, Code::UnknownEventField, "when = 'event.fields.country");
    assert!(rendered.contains("`event.fields.country`"), "{rendered}");
}

#[test]
fn db0109_every_missing_crm_secret_is_reported_with_its_line() {
    let cfg = check(CRM).unwrap();
    struct OnlySome;
    impl SecretResolver for OnlySome {
        fn env(&self, name: &str) -> Option<String> {
            ["OPS_TOKEN", "SF_REFRESH", "ZOHO_CLIENT_SECRET"].contains(&name).then(|| format!("v-{name}"))
        }
        fn file(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
        }
    }
    let errs = cfg.build_with(&OnlySome, Arc::new(connect::SystemClock)).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::MissingSecret; 5], "{}", errs.render());
    let lines: Vec<usize> = errs.errors.iter().map(|e| errs.line_col(e).unwrap().0).collect();
    let expected: Vec<usize> = [
        "client_secret = { env = \"SF_CLIENT_SECRET\" }",
        "private_key = { file = \"/run/secrets/sf.key\" }",
        "outbound_token = { env = \"SF_OUTBOUND_TOKEN\" }",
        "refresh_token = { env = \"ZOHO_REFRESH_TOKEN\" }",
        "channel_token = { env = \"ZOHO_CHANNEL_TOKEN\" }",
    ]
    .iter()
    .map(|needle| pos(CRM, needle).0)
    .collect();
    let mut expected = expected;
    expected.sort_unstable();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected, "{}", errs.render());
    assert!(
        errs.render().contains("the private key of Salesforce org `jwt`: cannot read secret file"),
        "{}",
        errs.render()
    );
}

#[test]
fn db0124_unusable_crm_secrets_are_refused_at_build_without_showing_them() {
    struct Bad;
    impl SecretResolver for Bad {
        fn env(&self, name: &str) -> Option<String> {
            Some(match name {
                "ZOHO_CHANNEL_TOKEN" => "t0ken-".repeat(10),
                "SF_OUTBOUND_TOKEN" => "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
                _ => format!("v-{name}"),
            })
        }
        fn file(&self, _path: &Path) -> std::io::Result<String> {
            Ok("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n".into())
        }
    }
    let cfg = check(CRM).unwrap();
    let errs = cfg.build_with(&Bad, Arc::new(connect::SystemClock)).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::BadCredential; 3], "{}", errs.render());
    assert!(errs
        .render()
        .contains("the outbound token of source `crm` is too weak to stand in a URL: only 1 different characters"));
    let rendered = errs.render();
    assert!(
        rendered.contains("the channel token of source `deals` has 60 characters; Zoho accepts at most 50"),
        "{rendered}"
    );
    assert!(rendered.contains("the private key of Salesforce org `jwt` is not usable"), "{rendered}");
    assert!(!rendered.contains("t0ken-") && !rendered.contains("bm90IGEga2V5"), "a secret was shown: {rendered}");
    let mut lines: Vec<usize> = errs.errors.iter().map(|e| errs.line_col(e).unwrap().0).collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [pos(CRM, "private_key = {").0, pos(CRM, "outbound_token = {").0, pos(CRM, "channel_token = {").0]
    );
}

#[test]
fn message_types_are_the_robot_app_and_crm_types() {
    use super::validate::{APP_MESSAGES, CRM_MESSAGES, ROBOT_MESSAGES};
    let all: Vec<&str> = ROBOT_MESSAGES.iter().chain(&APP_MESSAGES).chain(&CRM_MESSAGES).copied().collect();
    assert_eq!(all, MESSAGE_TYPES);
}

const ERP: &str = r#"
[netsuite.accounts.main]
account_id = "1234567-sb1"
consumer_key = "ck-main"
consumer_secret = { env = "NS_CONSUMER_SECRET" }
token_id = "tok-main"
token_secret = { env = "NS_TOKEN_SECRET" }
concurrency = 3
time_zone = "America/Los_Angeles"

[netsuite.accounts.prod]
account_id = "7654321"
consumer_key = "ck-prod"
consumer_secret = { env = "NS_CONSUMER_SECRET" }
token_id = "tok-prod"
token_secret = { env = "NS_TOKEN_SECRET" }

[dynamics.orgs.main]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "00000000-1111-2222-3333-444444444444"
client_secret = { env = "AAD_SECRET" }
dataverse_url = "https://contoso.crm5.dynamics.com/"
bc_environment = "Production"
bc_company = "6a8f2b10-44e3-ea11-bb43-000d3a2feca1"

[dynamics.orgs.dv]
tenant_id = "contoso.onmicrosoft.com"
client_id = "app-dv"
client_secret = { env = "AAD_SECRET" }
authority = "https://login.partner.microsoftonline.cn"
dataverse_url = "https://contoso.crm5.dynamics.com"

[sap.systems.s4]
base_url = "https://s4.example.com.hk:44300"
sap_client = "100"
user = "DINGBRIDGE"
password = { env = "SAP_PASSWORD" }
units = { "ZCT" = "CT" }

[sources.shipments]
type = "netsuite"
account = "main"
objects = ["itemFulfillment", "purchaseRequisition"]
webhook_secret = { env = "NS_HOOK_SECRET" }
poll = "5m"
stale_after = "2h"
fields.total = { path = "/data/total", type = "money", required = false }

[sources.orders]
type = "dynamics"
org = "main"
objects = ["salesorder", "purchaseOrders"]
webhook_secret = { env = "DYN_HOOK_KEY" }
coalesce = "0s"

[sources.s4]
type = "sap"
system = "s4"
objects = ["A_OutbDeliveryHeader", "A_PurchaseOrder"]
idoc_folder = "var/idoc-in"
idoc_user = "ECCIDOC"
idoc_password = { env = "IDOC_PASSWORD" }

[sources.s4-poll]
type = "sap"
system = "s4"
objects = ["A_PurchaseRequisitionHeader"]
poll = "10m"
idoc_folder = "/srv/idoc"

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "OPS_TOKEN" }

[[flows]]
name = "shipped"
on = { source = "shipments", entity = "shipment" }
when = 'has(event.fields.total)'
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "Shipped {{ event.entity_id }} ({{ event.data.stale }})" }
"#;

/// Every variable is set, to a value naming it.
struct ErpEnv;
impl SecretResolver for ErpEnv {
    fn env(&self, name: &str) -> Option<String> {
        Some(format!("value-of-{name}-7f3c"))
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
    }
}

/// `ERP` with `from` replaced by `to` (which must occur).
fn erp_with(from: &str, to: &str) -> String {
    assert!(ERP.contains(from), "{from} not in ERP");
    ERP.replacen(from, to, 1)
}

fn env(name: &str) -> Option<SecretRef> {
    Some(SecretRef { location: SecretLocation::Env(name.into()), span: 0..0 })
}

/// Secret references compared by location only (spans differ by where they were written).
fn locations(r: &Option<SecretRef>) -> Option<SecretLocation> {
    r.as_ref().map(|r| r.location.clone())
}

fn erp_source(cfg: &Config, name: &str) -> ErpSource {
    match &cfg.sources[name].kind {
        SourceKind::Erp(erp) => erp.clone(),
        other => panic!("source `{name}` is {other:?}"),
    }
}

#[test]
fn erp_connections_and_sources_validate_with_their_defaults() {
    let cfg = Config::from_toml(ERP, "/etc/dingbridge/gw.toml").unwrap_or_else(|e| panic!("{}", e.render()));
    let main = &cfg.connections.netsuite_accounts["main"];
    assert_eq!(main.account_id.realm(), "1234567_SB1", "either spelling is accepted");
    assert_eq!(main.concurrency, 3);
    assert_eq!(main.time_zone.iana_name(), Some("America/Los_Angeles"));
    assert!(matches!(&main.auth, NetsuiteAuth::Tba { consumer_key, token_id, .. }
        if consumer_key == "ck-main" && token_id == "tok-main"));
    let prod = &cfg.connections.netsuite_accounts["prod"];
    assert_eq!((prod.concurrency, prod.time_zone.iana_name()), (2, Some("Asia/Hong_Kong")), "defaults");
    assert_eq!(prod.auth.name(), "tba");

    let dynamics = &cfg.connections.dynamics_orgs["main"];
    assert_eq!(dynamics.authority, "https://login.microsoftonline.com");
    assert_eq!(dynamics.dataverse_url.as_deref(), Some("https://contoso.crm5.dynamics.com"));
    assert_eq!(dynamics.bc_environment.as_deref(), Some("Production"));
    assert_eq!(dynamics.bc_company.as_deref(), Some("6a8f2b10-44e3-ea11-bb43-000d3a2feca1"));
    assert_eq!(cfg.connections.dynamics_orgs["dv"].authority, "https://login.partner.microsoftonline.cn");
    assert_eq!(cfg.connections.dynamics_orgs["dv"].bc_environment, None);

    let s4 = &cfg.connections.sap_systems["s4"];
    assert_eq!((s4.base_url.as_str(), s4.sap_client.as_deref()), ("https://s4.example.com.hk:44300", Some("100")));
    assert_eq!(s4.units, vec![("ZCT".to_string(), "CT".to_string())]);

    let shipments = erp_source(&cfg, "shipments");
    assert_eq!(shipments.system, ErpSystem::Netsuite);
    assert_eq!(shipments.connection, "main");
    assert_eq!(shipments.objects, ["itemFulfillment", "purchaseRequisition"]);
    assert_eq!(locations(&shipments.webhook_secret), locations(&env("NS_HOOK_SECRET")));
    assert_eq!(shipments.poll, Some(Duration::from_secs(300)));
    assert_eq!(shipments.stale_after, Some(Duration::from_secs(7200)));
    assert_eq!(shipments.coalesce, Duration::from_secs(2), "the ERP default");
    assert_eq!((shipments.idoc_folder, shipments.idoc_user), (None, None));
    assert_eq!(cfg.sources["shipments"].system, "netsuite");
    assert_eq!(cfg.sources["shipments"].field_kinds()["total"], FieldKind::Money);

    let orders = erp_source(&cfg, "orders");
    assert_eq!((orders.system, orders.connection.as_str()), (ErpSystem::Dynamics, "main"));
    assert_eq!((orders.poll, orders.coalesce), (None, Duration::ZERO));

    let s4 = erp_source(&cfg, "s4");
    assert_eq!((s4.system, s4.connection.as_str()), (ErpSystem::Sap, "s4"));
    assert_eq!(s4.idoc_folder.as_deref(), Some(Path::new("/etc/dingbridge/var/idoc-in")), "relative to the config");
    assert_eq!(s4.idoc_user.as_deref(), Some("ECCIDOC"));
    assert_eq!(locations(&s4.idoc_password), locations(&env("IDOC_PASSWORD")));
    assert_eq!(s4.webhook_secret, None);
    assert_eq!(erp_source(&cfg, "s4-poll").idoc_folder.as_deref(), Some(Path::new("/srv/idoc")));
    assert_eq!(cfg.sources["s4"].system, "sap");
    assert_eq!(
        [ErpSystem::Netsuite, ErpSystem::Dynamics, ErpSystem::Sap].map(ErpSystem::as_str),
        ["netsuite", "dynamics", "sap"]
    );
}

#[test]
fn erp_connections_build_one_client_each_with_their_secrets() {
    let cfg = check(ERP).unwrap();
    let rt = cfg.build_with(&ErpEnv, Arc::new(connect::SystemClock)).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(rt.connections.netsuite_accounts.keys().collect::<Vec<_>>(), ["main", "prod"]);
    let main = format!("{:?}", rt.connections.netsuite_accounts["main"]);
    assert!(main.contains("https://1234567-sb1.suitetalk.api.netsuite.com/services/rest"), "{main}");
    assert_eq!(rt.connections.netsuite_accounts["main"].semaphore().available_permits(), 3);
    assert_eq!(rt.connections.netsuite_accounts["prod"].semaphore().available_permits(), 2);

    let dynamics = &rt.connections.dynamics_orgs["main"];
    let dataverse = format!("{:?}", dynamics.dataverse.as_ref().expect("dataverse client"));
    assert!(dataverse.contains("\"https://contoso.crm5.dynamics.com/\""), "{dataverse}");
    let bc = format!("{:?}", dynamics.bc.as_ref().expect("business central client"));
    assert!(
        bc.contains(
            "https://api.businesscentral.dynamics.com/v2.0/11111111-2222-3333-4444-555555555555/Production/api/v2.0/"
        ),
        "{bc}"
    );
    assert_eq!(dynamics.bc_company.as_deref(), Some("6a8f2b10-44e3-ea11-bb43-000d3a2feca1"));
    assert!(rt.connections.dynamics_orgs["dv"].bc.is_none() && rt.connections.dynamics_orgs["dv"].dataverse.is_some());

    let sap = &rt.connections.sap_systems["s4"];
    assert_eq!(sap.uoms().to_iso("ZCT"), Some("CT"), "the system's own entry");
    assert_eq!(sap.uoms().to_iso("PC"), Some("PCE"), "the defaults stay");
    let root = connectors::sap::client::service_root(connectors::sap::client::PURCHASE_ORDER_SERVICE);
    let url = sap.url(&root, "A_PurchaseOrder", &[]).unwrap();
    assert_eq!(
        url.as_str(),
        "https://s4.example.com.hk:44300/sap/opu/odata/sap/API_PURCHASEORDER_PROCESS_SRV/A_PurchaseOrder?sap-client=100"
    );

    assert_eq!(rt.erp_secrets.keys().collect::<Vec<_>>(), ["orders", "s4", "s4-poll", "shipments"]);
    let shipments = &rt.erp_secrets["shipments"];
    assert_eq!(shipments.webhook_secret.as_ref().map(Secret::expose), Some("value-of-NS_HOOK_SECRET-7f3c"));
    assert!(shipments.idoc_password.is_none());
    assert_eq!(rt.erp_secrets["s4"].idoc_password.as_ref().map(Secret::expose), Some("value-of-IDOC_PASSWORD-7f3c"));
    assert!(rt.erp_secrets["s4-poll"].webhook_secret.is_none() && rt.erp_secrets["s4-poll"].idoc_password.is_none());
    let dbg = format!("{rt:?} {cfg:?}");
    assert!(!dbg.contains("7f3c"), "a secret leaked into Debug: {dbg}");
}

#[tokio::test]
async fn sim_endpoints_point_every_erp_connection_at_its_simulator() {
    let fake = FakeVendor::start().await;
    let sims = BTreeMap::from([
        ("netsuite".to_string(), fake.url.clone()),
        ("dynamics".to_string(), fake.url.clone()),
        ("sap".to_string(), format!("{}/", fake.url)),
    ]);
    let cfg = check(ERP).unwrap().with_overrides(None, Some(&sims));
    assert_eq!(cfg.connections.netsuite_accounts["main"].base_url_override.as_deref(), Some(fake.url.as_str()));
    assert_eq!(cfg.connections.dynamics_orgs["dv"].base_url_override.as_deref(), Some(fake.url.as_str()));
    let rt = cfg.build_with(&ErpEnv, Arc::new(connect::SystemClock)).unwrap_or_else(|e| panic!("{}", e.render()));

    // NetSuite: the REST base is under the simulator, every request TBA-signed for the account.
    let ns = &rt.connections.netsuite_accounts["main"];
    ns.get_record(connectors::netsuite::client::RecordType::ItemFulfillment, "6100", false).await.unwrap();
    assert_eq!(fake.seen()[0].0, "GET /services/rest/record/v1/itemFulfillment/6100 HTTP/1.1");

    // Dynamics: the token comes from `{sim}/{tenant}/oauth2/v2.0/token`, for the simulator's own
    // URL (Dataverse) and for the Business Central resource; the fake's answer is no token.
    let dynamics = &rt.connections.dynamics_orgs["main"];
    let dataverse = dynamics.dataverse.as_ref().unwrap();
    assert!(dataverse.get("salesorders", "x", "name").await.is_err());
    let seen = fake.seen();
    assert_eq!(seen[1].0, "POST /11111111-2222-3333-4444-555555555555/oauth2/v2.0/token HTTP/1.1");
    let scope = format!("scope={}", fake.url.replace(':', "%3A").replace('/', "%2F"));
    assert!(seen[1].1.contains(&format!("{scope}%2F.default")), "{}", seen[1].1);
    assert!(seen[1].1.contains("client_secret=value-of-AAD_SECRET-7f3c"), "{}", seen[1].1);
    assert!(dynamics.bc.as_ref().unwrap().companies().await.is_err());
    let seen = fake.seen();
    assert_eq!(seen[2].0, "POST /11111111-2222-3333-4444-555555555555/oauth2/v2.0/token HTTP/1.1");
    assert!(seen[2].1.contains("scope=https%3A%2F%2Fapi.businesscentral.dynamics.com%2F.default"), "{}", seen[2].1);
    assert_eq!(seen.len(), 3, "no data call without a token");
    let bc = format!("{:?}", dynamics.bc.as_ref().unwrap());
    assert!(
        bc.contains(&format!("{}/v2.0/11111111-2222-3333-4444-555555555555/Production/api/v2.0/", fake.url)),
        "{bc}"
    );

    // SAP: the OData host becomes the simulator; the client stays.
    let root = connectors::sap::client::service_root(connectors::sap::client::PURCHASE_ORDER_SERVICE);
    let url = rt.connections.sap_systems["s4"].url(&root, "A_PurchaseOrder", &[]).unwrap();
    assert_eq!(
        url.as_str(),
        format!("{}/sap/opu/odata/sap/API_PURCHASEORDER_PROCESS_SRV/A_PurchaseOrder?sap-client=100", fake.url)
    );
}

#[test]
fn db0125_erp_sources_name_known_connections() {
    let text = erp_with("account = \"main\"", "account = \"mian\"");
    let rendered = one_error_at(&text, Code::BadConnection, "account = \"mian\"");
    assert!(rendered.contains("source `shipments` uses unknown NetSuite account `mian`"), "{rendered}");
    assert!(rendered.contains("did you mean `main`?"), "{rendered}");
    let text = erp_with("org = \"main\"", "org = \"s4\"");
    let rendered = one_error_at(&text, Code::BadConnection, "org = \"s4\"");
    assert!(rendered.contains("unknown Dynamics org `s4`"), "{rendered}");
    let text = erp_with("system = \"s4\"\nobjects = [\"A_Outb", "system = \"main\"\nobjects = [\"A_Outb");
    let rendered = one_error_at(&text, Code::BadConnection, "system = \"main\"");
    assert!(rendered.contains("unknown SAP system `main`"), "{rendered}");
    let text = erp_with("account = \"main\"\n", "");
    let rendered = one_error_at(&text, Code::BadConnection, "[sources.shipments]");
    assert!(rendered.contains("source `shipments` has no `account`"), "{rendered}");
}

#[test]
fn erp_objects_must_be_ones_the_type_watches() {
    let text = erp_with("\"itemFulfillment\", \"purchaseRequisition\"", "\"itemfulfillment\"");
    let rendered = one_error_at(&text, Code::UnknownChoice, "\"itemfulfillment\"");
    assert!(rendered.contains("object `itemfulfillment` of source `shipments` is not one netsuite sources watch"));
    assert!(rendered.contains("itemFulfillment, purchaseRequisition, purchaseOrder, salesOrder"), "{rendered}");
    assert!(rendered.contains("did you mean `itemFulfillment`?"), "{rendered}");
    let text = erp_with("[\"salesorder\", \"purchaseOrders\"]", "[\"A_PurchaseOrder\"]");
    let rendered = one_error_at(&text, Code::UnknownChoice, "[\"A_PurchaseOrder\"]");
    assert!(rendered.contains("allowed: salesorder, purchaseOrders"), "{rendered}");
    let text = erp_with(
        "[\"A_PurchaseRequisitionHeader\"]",
        "[\"A_PurchaseRequisitionHeader\", \"A_PurchaseRequisitionHeader\"]",
    );
    one_error_at(&text, Code::DuplicateName, "[\"A_PurchaseRequisitionHeader\", \"A_");
    let text = erp_with("objects = [\"A_PurchaseRequisitionHeader\"]", "objects = []");
    one_error_at(&text, Code::EmptyValue, "objects = []");
    let text = erp_with("objects = [\"A_PurchaseRequisitionHeader\"]\n", "");
    let rendered = one_error_at(&text, Code::MissingKey, "[sources.s4-poll]");
    assert!(rendered.contains("sap source `s4-poll` has no `objects`"), "{rendered}");
}

#[test]
fn db0125_dynamics_objects_need_their_service() {
    let text = erp_with("org = \"main\"", "org = \"dv\"");
    let rendered = one_error_at(&text, Code::BadConnection, "objects = [\"salesorder\", \"purchaseOrders\"]");
    assert!(
        rendered.contains("object `purchaseOrders` of source `orders` is read from Business Central, but dynamics org `dv` has no `bc_environment`"),
        "{rendered}"
    );
    let text = erp_with("dataverse_url = \"https://contoso.crm5.dynamics.com/\"\n", "");
    let rendered = one_error_at(&text, Code::BadConnection, "objects = [\"salesorder\"");
    assert!(rendered.contains("is read from Dataverse, but dynamics org `main` has no `dataverse_url`"), "{rendered}");
}

#[test]
fn db0101_erp_keys_belong_to_their_type() {
    let text =
        erp_with("idoc_folder = \"/srv/idoc\"\n", "idoc_folder = \"/srv/idoc\"\nwebhook_secret = { env = \"X\" }\n");
    let rendered = one_error_at(&text, Code::UnknownKey, "webhook_secret = { env = \"X\" }");
    assert!(rendered.contains("key `webhook_secret` is not used by a sap source (`s4-poll`)"), "{rendered}");
    assert!(rendered.contains("SAP sends IDocs"), "{rendered}");
    let text = erp_with("coalesce = \"0s\"\n", "coalesce = \"0s\"\nidoc_user = \"ECC\"\n");
    let rendered = one_error_at(&text, Code::UnknownKey, "idoc_user = \"ECC\"");
    assert!(rendered.contains("key `idoc_user` is not used by a dynamics source (`orders`)"), "{rendered}");
    let text = erp_with("stale_after = \"2h\"\n", "stale_after = \"2h\"\nidoc_folder = \"in\"\n");
    let rendered = one_error_at(&text, Code::UnknownKey, "idoc_folder = \"in\"");
    assert!(rendered.contains("only `sap` sources take it"), "{rendered}");
    // The other types' connection keys, CRM and webhook keys.
    let text = erp_with("account = \"main\"\n", "account = \"main\"\norg = \"main\"\n");
    let rendered = one_error_at(&text, Code::UnknownKey, "org = \"main\"");
    assert!(rendered.contains("a netsuite source names its [netsuite.accounts.NAME] with `account`"), "{rendered}");
    let text = erp_with("poll = \"5m\"", "poll_interval = \"5m\"");
    let rendered = one_error_at(&text, Code::UnknownKey, "poll_interval");
    assert!(rendered.contains("ERP sources poll with `poll`"), "{rendered}");
    let text = erp_with("coalesce = \"0s\"\n", "coalesce = \"0s\"\nsecret = { env = \"X\" }\n");
    one_error_at(&text, Code::UnknownKey, "secret = { env = \"X\" }");
    // ... and the ERP keys on the other source types.
    let text =
        BASE.replacen("secret = { env = \"WH_SECRET\" }\n", "secret = { env = \"WH_SECRET\" }\npoll = \"5m\"\n", 1);
    let rendered = one_error_at(&text, Code::UnknownKey, "poll = ");
    assert!(rendered.contains("only `netsuite`, `dynamics` and `sap` sources take it"), "{rendered}");
    let text = crm_with("coalesce = \"0s\"\n", "coalesce = \"0s\"\nstale_after = \"1h\"\n");
    let rendered = one_error_at(&text, Code::UnknownKey, "stale_after");
    assert!(rendered.contains("key `stale_after` is not used by a salesforce source (`crm-poll`)"), "{rendered}");
}

#[test]
fn idoc_login_needs_both_halves_and_a_source_needs_an_intake() {
    let text = erp_with("idoc_password = { env = \"IDOC_PASSWORD\" }\n", "");
    let rendered = one_error_at(&text, Code::KeyConflict, "idoc_user = \"ECCIDOC\"");
    assert!(rendered.contains("sources.s4.idoc_user is set but idoc_password is not"), "{rendered}");
    let text = erp_with("idoc_user = \"ECCIDOC\"\n", "");
    let rendered = one_error_at(&text, Code::KeyConflict, "idoc_password = { env = \"IDOC_PASSWORD\" }");
    assert!(rendered.contains("sources.s4.idoc_password is set but idoc_user is not"), "{rendered}");

    let text = erp_with("webhook_secret = { env = \"DYN_HOOK_KEY\" }\n", "");
    let rendered = one_error_at(&text, Code::MissingKey, "[sources.orders]");
    assert!(rendered.contains("dynamics source `orders` has no intake"), "{rendered}");
    assert!(rendered.contains("webhook_secret"), "{rendered}");
    let text = erp_with("poll = \"10m\"\nidoc_folder = \"/srv/idoc\"\n", "");
    let rendered = one_error_at(&text, Code::MissingKey, "[sources.s4-poll]");
    assert!(rendered.contains("sap source `s4-poll` has no intake"), "{rendered}");
    // Polling alone is an intake.
    check(&erp_with("webhook_secret = { env = \"DYN_HOOK_KEY\" }\n", "poll = \"1m\"\n")).unwrap();
}

#[test]
fn db0107_erp_durations() {
    let text = erp_with("poll = \"5m\"", "poll = \"5 minutes\"");
    one_error_at(&text, Code::BadDuration, "poll = \"5 minutes\"");
    let text = erp_with("stale_after = \"2h\"", "stale_after = \"2\"");
    let rendered = one_error_at(&text, Code::BadDuration, "stale_after = \"2\"");
    assert!(rendered.contains("sources.shipments.stale_after"), "{rendered}");
    let text = erp_with("coalesce = \"0s\"", "coalesce = \"soon\"");
    one_error_at(&text, Code::BadDuration, "coalesce = \"soon\"");
    let text = erp_with("poll = \"5m\"", "poll = \"0s\"");
    let rendered = one_error_at(&text, Code::OutOfRange, "poll = \"0s\"");
    assert!(rendered.contains("leave `poll` out to not poll"), "{rendered}");
}

#[test]
fn netsuite_account_values_name_their_line() {
    let text = erp_with("account_id = \"7654321\"", "account_id = \"7654321 SB1\"");
    let rendered = one_error_at(&text, Code::BadName, "account_id = \"7654321 SB1\"");
    assert!(rendered.contains("netsuite.accounts.prod.account_id `7654321 SB1` is not a NetSuite account id"));
    let text = erp_with("time_zone = \"America/Los_Angeles\"", "time_zone = \"HKT\"");
    let rendered = one_error_at(&text, Code::BadLocale, "time_zone = \"HKT\"");
    assert!(rendered.contains("`HKT` is not a known time zone"), "{rendered}");
    let text = erp_with("concurrency = 3", "concurrency = 0");
    one_error_at(&text, Code::OutOfRange, "concurrency = 0");
    let text = erp_with("account_id = \"7654321\"", "account_id = \"7654321\"\nauth = \"oauth1\"");
    let rendered = one_error_at(&text, Code::UnknownChoice, "auth = \"oauth1\"");
    assert!(rendered.contains("`tba` (token-based authentication, default) or `oauth2`"), "{rendered}");
}

#[test]
fn netsuite_auth_keys_must_fit_the_auth() {
    // A TBA key missing: pointed at the account's table (no `auth` written).
    let text = erp_with("token_id = \"tok-prod\"\n", "");
    let rendered = one_error_at(&text, Code::MissingKey, "[netsuite.accounts.prod]");
    assert!(rendered.contains("netsuite.accounts.prod uses auth = \"tba\" but has no `token_id`"), "{rendered}");
    assert!(rendered.contains("takes client_id, certificate_id and private_key"), "{rendered}");
    // OAuth 2.0 with TBA keys: each TBA key is refused, each missing OAuth key reported at `auth`.
    let text = erp_with("account_id = \"7654321\"", "account_id = \"7654321\"\nauth = \"oauth2\"");
    let errs = check(&text).unwrap_err();
    assert_eq!(errs.codes(), [vec![Code::MissingKey; 3], vec![Code::KeyConflict; 4]].concat(), "{}", errs.render());
    let lines: Vec<usize> = errs.errors.iter().map(|e| errs.line_col(e).unwrap().0).collect();
    assert_eq!(&lines[..3], [pos(&text, "auth = \"oauth2\"").0; 3], "{}", errs.render());
    assert_eq!(lines[3], pos(&text, "consumer_key = \"ck-prod\"").0);
    assert!(errs.render().contains("netsuite.accounts.prod.token_id is not used with auth = \"oauth2\""));
    // A complete OAuth 2.0 account validates.
    let oauth2 = erp_with(
        "consumer_key = \"ck-prod\"\nconsumer_secret = { env = \"NS_CONSUMER_SECRET\" }\ntoken_id = \"tok-prod\"\ntoken_secret = { env = \"NS_TOKEN_SECRET\" }\n",
        "auth = \"oauth2\"\nclient_id = \"cid\"\ncertificate_id = \"c.7654321\"\nprivate_key = { file = \"ns.pem\" }\n",
    );
    let cfg = check(&oauth2).unwrap_or_else(|e| panic!("{}", e.render()));
    assert!(
        matches!(&cfg.connections.netsuite_accounts["prod"].auth, NetsuiteAuth::OAuth2 { client_id, certificate_id, private_key }
        if client_id == "cid" && certificate_id == "c.7654321" && private_key.location == SecretLocation::File("ns.pem".into()))
    );
    // It builds with the certificate's EC key (ES256 assertions); a key that is not PEM is a
    // coded error at `private_key`.
    struct KeyFile(&'static str);
    impl SecretResolver for KeyFile {
        fn env(&self, name: &str) -> Option<String> {
            ErpEnv.env(name)
        }
        fn file(&self, _path: &Path) -> std::io::Result<String> {
            Ok(self.0.to_string())
        }
    }
    let rt = cfg
        .build_with(&KeyFile(connectors::netsuite::sim::TEST_EC_PRIVATE_KEY_PEM), Arc::new(connect::SystemClock))
        .unwrap_or_else(|e| panic!("{}", e.render()));
    assert!(format!("{:?}", rt.connections.netsuite_accounts["prod"]).contains("7654321.suitetalk.api.netsuite.com"));
    let errs = cfg.build_with(&KeyFile("not a key"), Arc::new(connect::SystemClock)).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::BadCredential], "{}", errs.render());
    assert!(errs.render().contains("neither an EC nor an RSA PEM key"), "{}", errs.render());
    assert_eq!(errs.line_col(&errs.errors[0]).unwrap().0, pos(&oauth2, "private_key = { file").0);
}

#[test]
fn dynamics_and_sap_values_name_their_line() {
    let text = erp_with(
        "dataverse_url = \"https://contoso.crm5.dynamics.com\"",
        "dataverse_url = \"contoso.crm5.dynamics.com\"",
    );
    let rendered = one_error_at(&text, Code::BadAddress, "dataverse_url = \"contoso.crm5");
    assert!(rendered.contains("dynamics.orgs.dv.dataverse_url `contoso.crm5.dynamics.com` is not an http(s) URL"));
    let text = erp_with("bc_company = \"6a8f2b10-44e3-ea11-bb43-000d3a2feca1\"\n", "");
    let rendered = one_error_at(&text, Code::KeyConflict, "bc_environment = \"Production\"");
    assert!(rendered.contains("bc_environment is set but bc_company is not"), "{rendered}");
    let text = erp_with(
        "dataverse_url = \"https://contoso.crm5.dynamics.com\"\n",
        "dataverse_url = \"https://contoso.crm5.dynamics.com\"\nbc_company = \"x\"\n",
    );
    let rendered = one_error_at(&text, Code::KeyConflict, "bc_company = \"x\"");
    assert!(rendered.contains("bc_company is set but bc_environment is not"), "{rendered}");
    let text = erp_with("tenant_id = \"contoso.onmicrosoft.com\"", "tenant_id = \"\"");
    one_error_at(&text, Code::BadName, "tenant_id = \"\"");
    let text = erp_with(
        "authority = \"https://login.partner.microsoftonline.cn\"",
        "authority = \"https://login.partner.microsoftonline.cn/common\"",
    );
    one_error_at(&text, Code::BadAddress, "authority = ");
    let text = erp_with("authority = \"https://login.partner.microsoftonline.cn\"\ndataverse_url = \"https://contoso.crm5.dynamics.com\"\n", "");
    let errs = check(&text).unwrap_err();
    assert!(
        errs.render().contains("dynamics.orgs.dv has neither `dataverse_url` nor `bc_environment`"),
        "{}",
        errs.render()
    );
    assert_eq!(errs.line_col(&errs.errors[0]).unwrap().0, pos(&text, "[dynamics.orgs.dv]").0);

    let text = erp_with(
        "base_url = \"https://s4.example.com.hk:44300\"",
        "base_url = \"https://s4.example.com.hk:44300/sap/opu\"",
    );
    let rendered = one_error_at(&text, Code::BadAddress, "base_url = ");
    assert!(rendered.contains(
        "sap.systems.s4.base_url `https://s4.example.com.hk:44300/sap/opu` is not an http(s) URL without a path"
    ));
    let text = erp_with("base_url = \"https://s4.example.com.hk:44300\"", "base_url = \"https://s4 example\"");
    one_error_at(&text, Code::BadAddress, "base_url = ");
    let text = erp_with("sap_client = \"100\"", "sap_client = \"1000\"");
    one_error_at(&text, Code::BadName, "sap_client = \"1000\"");
    let text = erp_with("units = { \"ZCT\" = \"CT\" }", "units = { \"ZCT\" = \"carton\" }");
    let rendered = one_error_at(&text, Code::BadLocale, "units = ");
    assert!(rendered.contains("sap.systems.s4.units.ZCT maps to `carton`"), "{rendered}");
}

#[test]
fn db0109_every_missing_erp_secret_is_reported_with_its_line() {
    struct Only;
    impl SecretResolver for Only {
        fn env(&self, name: &str) -> Option<String> {
            ["NS_CONSUMER_SECRET", "OPS_TOKEN"].contains(&name).then(|| "x".to_string())
        }
        fn file(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
        }
    }
    let errs = check(ERP).unwrap().build_with(&Only, Arc::new(connect::SystemClock)).unwrap_err();
    let rendered = errs.render();
    assert!(errs.codes().iter().all(|c| *c == Code::MissingSecret), "{rendered}");
    let mut lines: Vec<usize> = errs.errors.iter().map(|e| errs.line_col(e).unwrap().0).collect();
    lines.sort_unstable();
    let mut expected: Vec<usize> = [
        "token_secret = { env = \"NS_TOKEN_SECRET\" }",
        "client_secret = { env = \"AAD_SECRET\" }\ndataverse_url = \"https://contoso.crm5.dynamics.com/\"",
        "client_secret = { env = \"AAD_SECRET\" }\nauthority",
        "password = { env = \"SAP_PASSWORD\" }",
        "webhook_secret = { env = \"NS_HOOK_SECRET\" }",
        "webhook_secret = { env = \"DYN_HOOK_KEY\" }",
        "idoc_password = { env = \"IDOC_PASSWORD\" }",
    ]
    .iter()
    .map(|needle| line_of(ERP, needle))
    .collect();
    // Both NetSuite accounts read NS_TOKEN_SECRET.
    expected.push(
        line_of(&ERP[ERP.find("[netsuite.accounts.prod]").unwrap()..], "token_secret")
            + line_of(ERP, "[netsuite.accounts.prod]")
            - 1,
    );
    expected.sort_unstable();
    assert_eq!(lines, expected, "{rendered}");
    assert!(
        rendered.contains("the webhook secret of source `shipments`: environment variable `NS_HOOK_SECRET` is not set"),
        "{rendered}"
    );
    assert!(rendered.contains("the password of SAP system `s4`"), "{rendered}");
}

/// 1-based line where `needle` (which may span lines) starts.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text.find(needle).unwrap_or_else(|| panic!("{needle} not in text"));
    text[..at].matches('\n').count() + 1
}

#[test]
fn a_flow_taking_decisions_from_a_non_dingtalk_source_is_refused_with_its_line() {
    for entity in ["card_action", "approval", "approval_task", "robot_message", "bpms_task_change"] {
        let text = with_flow(&format!(
            r#"
[[flows]]
name = "forgeable"
on = {{ source = "erp", entity = "{entity}" }}
[[flows.deliver]]
destination = "ops"
message = {{ type = "text", content = "{{{{ event.entity_id }}}}" }}
"#
        ));
        let (code, message, line, col) = one_error(&text);
        assert_eq!(code, Code::DecisionSource, "{entity}: {message}");
        assert_eq!(code.as_str(), "DB0113");
        assert!(message.contains("`erp`") && message.contains(entity), "{message}");
        assert_eq!((line, col), pos(&text, &format!("\"{entity}\"")), "{entity}");
    }
}

#[test]
fn a_flow_taking_decisions_from_dingtalk_is_accepted() {
    let text = format!(
        r#"{BASE}
[dingtalk.apps.a]
app_key = "k"
app_secret = {{ env = "APP_SECRET" }}

[sources.dingtalk]
type = "dingtalk"
app = "a"
mode = "stream"

[[flows]]
name = "clicks"
on = {{ source = "dingtalk", entity = "card_action" }}
[[flows.deliver]]
destination = "ops"
message = {{ type = "text", content = "{{{{ event.entity_id }}}}" }}

[[flows]]
name = "mixed"
on = {{ source = ["dingtalk", "erp"], entity = "approval" }}
[[flows.deliver]]
destination = "ops"
message = {{ type = "text", content = "{{{{ event.entity_id }}}}" }}
"#
    );
    let (code, message, _, _) = one_error(&text);
    // Listing a DingTalk source beside a webhook source does not make the webhook one safe.
    assert_eq!(code, Code::DecisionSource, "{message}");
    assert!(message.contains("flow `mixed`") && message.contains("`erp`") && !message.contains("`dingtalk`"));
}

/// Where `outbound_token`'s value stands in `CRM`.
fn crm_token_span() -> std::ops::Range<usize> {
    let start = CRM.find("{ env = \"SF_OUTBOUND_TOKEN\" }").unwrap();
    start..start + "{ env = \"SF_OUTBOUND_TOKEN\" }".len()
}

#[test]
fn an_outbound_message_source_needs_its_url_token_and_the_orgs_id() {
    let text = crm_with("outbound_token = { env = \"SF_OUTBOUND_TOKEN\" }\n", "");
    let rendered = one_error_at(&text, Code::MissingKey, "[sources.crm]");
    assert!(rendered.contains("has no `outbound_token`"), "{rendered}");

    let text = crm_with("organization_id = \"00D5g000004Hkbr\"\n", "");
    let rendered = one_error_at(&text, Code::BadConnection, "[salesforce.orgs.hk]");
    assert!(rendered.contains("no `organization_id`") && rendered.contains("source `crm`"), "{rendered}");

    // A polling source takes no URL token, nor does a Zoho source.
    let text = crm_with("poll_interval = \"30s\"\n", "poll_interval = \"30s\"\noutbound_token = { env = \"X\" }\n");
    one_error_at(&text, Code::UnknownKey, "outbound_token = { env = \"X\" }");
}

// ---------------------------------------------------------------- outbound safety (R22)

const PLAIN_HTTP: &str = r#"
[salesforce.orgs.hk]
login_url = "http://hktrading.my.salesforce.com"
client_id = "3MVG9"
client_secret = { env = "SF_SECRET" }

[dynamics.orgs.main]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "00000000-1111-2222-3333-444444444444"
client_secret = { env = "AAD_SECRET" }
authority = "http://login.example.com"
dataverse_url = "http://contoso.crm5.dynamics.com"

[sap.systems.s4]
base_url = "http://s4.example.com.hk:8000"
user = "DINGBRIDGE"
password = { env = "SAP_PASSWORD" }

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "OPS_TOKEN" }
base_url = "http://oapi.dingtalk.com"
"#;

#[test]
fn plain_http_vendor_urls_are_db0114_at_their_lines() {
    let errs = check(PLAIN_HTTP).expect_err("plain http must be refused");
    let found: Vec<(Code, (usize, usize))> = errs.errors.iter().map(|e| (e.code, errs.line_col(e).unwrap())).collect();
    let expected: Vec<(Code, (usize, usize))> = [
        "\"http://hktrading.my.salesforce.com\"",
        "\"http://login.example.com\"",
        "\"http://contoso.crm5.dynamics.com\"",
        "\"http://s4.example.com.hk:8000\"",
        "\"http://oapi.dingtalk.com\"",
    ]
    .iter()
    .map(|needle| (Code::InsecureEndpoint, pos(PLAIN_HTTP, needle)))
    .collect();
    assert_eq!(found, expected, "{}", errs.render());
    assert_eq!(Code::InsecureEndpoint.as_str(), "DB0114");
    assert!(errs
        .render()
        .contains("error[DB0114]: sap.systems.s4.base_url `http://s4.example.com.hk:8000` is plain http"));
    // The same config with https validates.
    let secure = PLAIN_HTTP.replace("http://", "https://");
    check(&secure).unwrap_or_else(|e| panic!("{}", e.render()));
}

#[test]
fn sim_endpoints_make_exactly_the_simulators_reachable() {
    let cfg = check(BASE).unwrap();
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    assert!(cfg.server.private_hosts.is_empty());
    assert!(cfg.server.private_hosts.check("127.0.0.1", loopback).is_err());
    let sims = BTreeMap::from([
        ("dingtalk".to_string(), "http://127.0.0.1:4001".to_string()),
        ("sap".to_string(), "http://sims.local:4002".to_string()),
    ]);
    let cfg = cfg.with_overrides(None, Some(&sims));
    assert!(cfg.server.private_hosts.check("127.0.0.1", loopback).is_ok());
    assert!(cfg.server.private_hosts.check("sims.local", "10.0.0.1".parse().unwrap()).is_ok());
    assert!(cfg.server.private_hosts.check("127.0.0.2", "127.0.0.2".parse().unwrap()).is_err());
}

#[test]
fn allow_private_hosts_takes_names_addresses_and_ranges() {
    let text = format!(
        "[server]\nallow_private_hosts = [\"sap.corp.local\", \"10.1.2.3\", \"10.20.0.0/16\"]\nca_bundle = \"certs/corp-ca.pem\"\n{BASE}"
    );
    let cfg = Config::from_toml(&text, "conf/dingbridge.toml").unwrap_or_else(|e| panic!("{}", e.render()));
    let hosts = &cfg.server.private_hosts;
    assert!(hosts.check("sap.corp.local", "10.9.9.9".parse().unwrap()).is_ok());
    assert!(hosts.check("10.1.2.3", "10.1.2.3".parse().unwrap()).is_ok());
    assert!(hosts.check("erp", "10.20.7.7".parse().unwrap()).is_ok());
    assert!(hosts.check("erp", "10.21.0.1".parse().unwrap()).is_err());
    let bundle = cfg.server.ca_bundle.as_ref().unwrap();
    assert_eq!(bundle.path, Path::new("conf").join("certs/corp-ca.pem"), "relative to the config file");
    assert_eq!(line_col(&text, bundle.span.start).0, 3);

    let text = format!("[server]\nallow_private_hosts = [\"sap.corp.local\", \"https://10.1.2.3:8443\"]\n{BASE}");
    let (code, msg, line, col) = one_error(&text);
    assert_eq!((code, line, col), (Code::BadAddress, 2, 42), "{msg}");
    assert!(msg.contains("https://10.1.2.3:8443"), "{msg}");
    let (code, _, line, _) = one_error(&format!("[server]\nca_bundle = \" \"\n{BASE}"));
    assert_eq!((code, line), (Code::EmptyValue, 2));
}

const TEST_CA: &str = include_str!("../../../connect/testdata/ca.pem");
const TEST_CLIENT_CERT: &str = include_str!("../../../connect/testdata/client.pem");
const TEST_CLIENT_KEY: &str = include_str!("../../../connect/testdata/client.key");

/// Every variable set, and a few PEM files: `ca.pem`, `client.pem`, `client.key`, `garbage.pem`.
struct PemFiles;

impl SecretResolver for PemFiles {
    fn env(&self, name: &str) -> Option<String> {
        Some(format!("value-of-{name}"))
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        match path.file_name().and_then(|n| n.to_str()) {
            Some("ca.pem") => Ok(TEST_CA.to_owned()),
            Some("client.pem") => Ok(TEST_CLIENT_CERT.to_owned()),
            Some("client.key") => Ok(TEST_CLIENT_KEY.to_owned()),
            Some("garbage.pem") => Ok("not a certificate".to_owned()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
        }
    }
}

const SAP_MTLS: &str = r#"
[server]
allow_private_hosts = ["s4.corp.local"]
ca_bundle = "ca.pem"

[sap.systems.s4]
base_url = "https://s4.corp.local:44300"
user = "DINGBRIDGE"
password = { env = "SAP_PASSWORD" }
client_cert = { file = "client.pem" }
client_key = { file = "client.key" }
"#;

#[test]
fn ca_bundle_and_sap_client_certificates_are_read_when_built() {
    let clock: Arc<dyn connect::Clock> = Arc::new(connect::SystemClock);
    let rt = check(SAP_MTLS).unwrap().build_with(&PemFiles, clock.clone()).unwrap_or_else(|e| panic!("{}", e.render()));
    assert!(rt.connections.sap_systems.contains_key("s4"));

    // An unusable bundle, a missing bundle, a key that is no key: coded errors at their keys.
    for (from, to, code, needle) in [
        ("ca_bundle = \"ca.pem\"", "ca_bundle = \"garbage.pem\"", Code::BadCredential, "ca_bundle"),
        ("ca_bundle = \"ca.pem\"", "ca_bundle = \"missing.pem\"", Code::BadCredential, "ca_bundle"),
        ("file = \"client.key\"", "file = \"ca.pem\"", Code::BadCredential, "client_cert"),
        ("file = \"client.key\"", "file = \"missing.key\"", Code::MissingSecret, "client_key"),
    ] {
        let text = SAP_MTLS.replace(from, to);
        let errs = check(&text).unwrap().build_with(&PemFiles, clock.clone()).expect_err(to);
        assert_eq!(errs.codes(), vec![code], "{to}: {}", errs.render());
        assert_eq!(errs.line_col(&errs.errors[0]).unwrap().0, pos(&text, needle).0, "{to}: {}", errs.render());
    }

    // One half of the pair is refused before anything is read.
    let text = SAP_MTLS.replace("client_key = { file = \"client.key\" }\n", "");
    let (code, msg, line, _) = one_error(&text);
    assert_eq!((code, line), (Code::KeyConflict, pos(&text, "client_cert").0), "{msg}");
    assert!(msg.contains("client_key"), "{msg}");
}

/// Answers every variable with `value`, and reads no files.
struct Fixed(&'static str);
impl SecretResolver for Fixed {
    fn env(&self, _name: &str) -> Option<String> {
        Some(self.0.to_owned())
    }
    fn file(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
    }
}

const AUDIT_KEY_VALUE: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0-audit-9d4e";

#[test]
fn audit_key_resolves_alone_and_into_the_runtime_and_never_prints() {
    let text = format!("[audit]\nkey = {{ env = \"AUDIT_KEY\" }}\n{BASE}");
    let cfg = check(&text).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(cfg.audit.key.as_ref().map(|k| k.location.clone()), Some(SecretLocation::Env("AUDIT_KEY".into())));
    let expected = store::AuditKey::new(AUDIT_KEY_VALUE).unwrap();
    let alone = cfg.audit_key_with(&Fixed(AUDIT_KEY_VALUE)).unwrap().expect("a key");
    assert_eq!(alone.id(), expected.id());
    let rt = cfg
        .build_with(&Fixed(AUDIT_KEY_VALUE), Arc::new(connect::SystemClock))
        .unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(rt.audit_key.as_ref().map(|k| k.id().to_owned()), Some(expected.id().to_owned()));
    let dbg = format!("{rt:?} {cfg:?} {alone:?}");
    assert!(!dbg.contains("9d4e"), "the audit key leaked into Debug: {dbg}");
    assert!(dbg.contains(expected.id()), "Debug names the key by its id: {dbg}");
}

#[test]
fn db0113_a_short_audit_key_is_refused_at_build_with_its_line() {
    let text = format!("[audit]\nkey = {{ env = \"AUDIT_KEY\" }}\n{BASE}");
    let cfg = check(&text).unwrap();
    for errs in [
        cfg.audit_key_with(&Fixed("too-short-9d4e")).unwrap_err(),
        cfg.build_with(&Fixed("too-short-9d4e"), Arc::new(connect::SystemClock)).unwrap_err(),
    ] {
        let e = errs.errors.iter().find(|e| e.code == Code::AuditKey).unwrap_or_else(|| panic!("{}", errs.render()));
        assert!(
            e.message.contains("audit.key: the audit key is 14 bytes long; it must be at least 32"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("9d4e"), "the key leaked into the message: {}", e.message);
        assert_eq!(errs.line_col(e), Some(pos(&cfg.text, "{ env = \"AUDIT_KEY\" }")));
    }
}

#[test]
fn no_audit_key_without_approvals_is_allowed_and_resolves_to_none() {
    let cfg = check(&with_flow(GOOD_FLOW)).unwrap();
    assert!(cfg.audit.key.is_none());
    assert!(cfg.audit_key_with(&Fixed(AUDIT_KEY_VALUE)).unwrap().is_none());
    let errs = check(&format!("[audit]\nkey = {{ }}\n{BASE}")).unwrap_err();
    assert_eq!(errs.codes(), vec![Code::BadCredential]);
    assert!(errs.errors[0].message.starts_with("audit.key: a secret reference needs"), "{}", errs.render());
}

#[test]
fn a_literal_secret_is_refused_at_its_line_without_showing_it_or_hiding_other_mistakes() {
    let text = r#"
[sources.erp]
type = "webhook"
secret = "whsec_c2VjcmV0LXZhbHVlLW5ldmVyLXByaW50ZWQ="

[destinations.ops]
type = "dingtalk_robot"
access_token = "abc-literal-token-9f3e"

[[flows]]
name = "f"
on = { source = "erp", entity = "purchase_order" }
[[flows.deliver]]
destination = "nowhere"
message = { type = "text", content = "x" }
"#;
    let errs = check(text).expect_err("refused");
    let rendered = errs.render();
    assert!(!rendered.contains("c2VjcmV0") && !rendered.contains("abc-literal"), "a secret was shown: {rendered}");
    assert!(!rendered.contains("RawSecretRef"), "no internal type names: {rendered}");
    let literal: Vec<usize> = errs
        .errors
        .iter()
        .filter(|e| e.message.contains("secrets are never written in the config"))
        .map(|e| errs.line_col(e).unwrap().0)
        .collect();
    assert_eq!(literal, [pos(text, "secret = \"whsec").0, pos(text, "access_token = \"abc").0], "{rendered}");
    // The parse went on: the unknown destination further down is reported too.
    assert!(errs.codes().contains(&Code::UnknownDestination), "{rendered}");
}

#[test]
fn db0116_a_value_out_of_range() {
    let text = format!("[delivery]\njitter = 1.5\n{BASE}");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::OutOfRange);
    assert_eq!(msg, "delivery.jitter must be in [0, 1), found 1.5");
    assert_eq!((l, c), pos(&text, "1.5"));
}

#[test]
fn db0117_a_key_the_type_needs_and_a_key_the_schema_needs() {
    let text = BASE.replace("secret = { env = \"WH_SECRET\" }\n", "");
    let (code, msg, l, _) = one_error(&text);
    assert_eq!(code, Code::MissingKey);
    assert_eq!(msg, "webhook source `erp` has no `secret`; unsigned webhooks are refused");
    assert_eq!(l, pos(&text, "[sources.erp]").0);

    // A key every flow needs is missing at parse time: the same code.
    let text = with_flow(
        "[[flows]]\nname = \"f\"\n[[flows.deliver]]\ndestination = \"ops\"\nmessage = { type = \"text\", content = \"x\" }\n",
    );
    let (code, msg, l, _) = one_error(&text);
    assert_eq!(code, Code::MissingKey);
    assert!(msg.starts_with("missing field `on`"), "{msg}");
    assert_eq!(l, pos(&text, "[[flows]]").0);
}

#[test]
fn db0118_one_half_of_a_pair() {
    let text = format!(
        "{BASE}\n[sap.systems.s4]\nbase_url = \"https://s4.example.com.hk:44300\"\nuser = \"DINGBRIDGE\"\npassword = {{ env = \"SAP_PASSWORD\" }}\nclient_key = {{ file = \"client.key\" }}\n"
    );
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::KeyConflict);
    assert_eq!(msg, "sap.systems.s4.client_key is set but client_cert is not");
    assert_eq!((l, c), pos(&text, "{ file = \"client.key\" }"));
}

#[test]
fn db0119_an_empty_flow_name() {
    let text = with_flow(&GOOD_FLOW.replace("name = \"f\"", "name = \"\""));
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::EmptyValue);
    assert_eq!(msg, "flow #1 has an empty name");
    let (name_line, name_col) = pos(&text, "name = \"\"");
    assert_eq!((l, c), (name_line, name_col + "name = ".len()));
}

#[test]
fn db0120_an_unknown_destination_type() {
    let text = BASE.replace("type = \"dingtalk_robot\"", "type = \"dingtalk_bot\"");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::UnknownChoice);
    assert_eq!(msg, "destination `ops` has unknown type `dingtalk_bot`");
    assert_eq!((l, c), pos(&text, "\"dingtalk_bot\""));
}

#[test]
fn db0121_a_listen_address_that_is_a_host_name() {
    let text = format!("[server]\nlisten = \"localhost:8080\"\n{BASE}");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::BadAddress);
    assert!(msg.starts_with("server.listen `localhost:8080` is not an address: "), "{msg}");
    assert_eq!((l, c), pos(&text, "\"localhost:8080\""));
}

#[test]
fn db0122_a_change_name_that_is_not_snake_case() {
    let text = with_flow(&GOOD_FLOW.replace("change = [\"created\"]", "change = [\"PO Created\"]"));
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::BadName);
    assert_eq!(msg, "flow `f` listens to change `PO Created`, which is not a snake_case name");
    assert_eq!((l, c), pos(&text, "\"PO Created\""));
}

#[test]
fn db0123_a_time_zone_that_does_not_exist() {
    let text = format!(
        "{BASE}\n[netsuite.accounts.main]\naccount_id = \"1234567\"\nconsumer_key = \"ck\"\nconsumer_secret = {{ env = \"NS_CONSUMER_SECRET\" }}\ntoken_id = \"tok\"\ntoken_secret = {{ env = \"NS_TOKEN_SECRET\" }}\ntime_zone = \"HKT\"\n"
    );
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::BadLocale);
    assert_eq!(msg, "netsuite.accounts.main.time_zone `HKT` is not a known time zone");
    assert_eq!((l, c), pos(&text, "\"HKT\""));
}

#[test]
fn db0124_a_secret_reference_with_both_env_and_file() {
    let text = BASE.replace("{ env = \"WH_SECRET\" }", "{ env = \"WH_SECRET\", file = \"/run/wh\" }");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::BadCredential);
    assert_eq!(msg, "sources.erp.secret: give either `env` or `file`, not both");
    assert_eq!((l, c), pos(&text, "{ env = \"WH_SECRET\", file"));
}

#[test]
fn db0125_a_source_naming_an_undefined_org() {
    let text = format!(
        "{BASE}\n[sources.crm]\ntype = \"salesforce\"\norg = \"hk\"\nobjects = [\"Opportunity\"]\nintake = \"poll\"\n"
    );
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::BadConnection);
    assert_eq!(msg, "source `crm` uses unknown Salesforce org `hk`");
    assert_eq!((l, c), pos(&text, "\"hk\""));
}

#[test]
fn the_known_types_are_the_gateway_s_own_then_the_registry_s() {
    assert_eq!(source_types(), ["webhook", "dingtalk", "salesforce", "zoho", "netsuite", "dynamics", "sap"]);
    assert_eq!(destination_types(), ["dingtalk_robot", "dingtalk_app", "salesforce", "zoho"]);
}

#[test]
fn max_retry_after_is_a_positive_duration_with_a_default_of_an_hour() {
    assert_eq!(check(BASE).unwrap().delivery.max_retry_after, Duration::from_secs(3600));
    let text = format!("{BASE}\n[delivery]\nmax_retry_after = \"2h\"\n");
    assert_eq!(check(&text).unwrap().delivery.max_retry_after, Duration::from_secs(7200));
    let text = format!("{BASE}\n[delivery]\nmax_retry_after = \"0s\"\n");
    let errors = check(&text).unwrap_err();
    let rendered = errors.render();
    assert!(
        rendered.contains("DB0116") && rendered.contains("delivery.max_retry_after must be longer than 0s"),
        "{rendered}"
    );
}

#[test]
fn store_retention_defaults_to_30_days_and_is_at_least_a_day_and_every_replay_tolerance() {
    assert_eq!(check(BASE).unwrap().store.retention, Duration::from_secs(30 * 86_400));
    let text = format!("{BASE}\n[store]\nretention = \"7d\"\n");
    assert_eq!(check(&text).unwrap().store.retention, Duration::from_secs(7 * 86_400));
    for short in ["0s", "23h"] {
        let text = format!("{BASE}\n[store]\nretention = \"{short}\"\n");
        let rendered = check(&text).unwrap_err().render();
        assert!(
            rendered.contains("DB0116") && rendered.contains(&format!("store.retention `{short}` must be at least 1d")),
            "{rendered}"
        );
    }
    let base = BASE.replace("system = \"erp\"", "system = \"erp\"\ntolerance = \"2d\"");
    let text = format!("{base}\n[store]\nretention = \"1d\"\n");
    let rendered = check(&text).unwrap_err().render();
    assert!(rendered.contains("store.retention `1d` must be at least sources.erp.tolerance"), "{rendered}");
}

#[test]
fn server_limits_have_safe_defaults_and_are_validated() {
    let cfg = check(BASE).unwrap();
    assert_eq!(cfg.server.max_intake_bytes, 64 * 1_048_576);
    assert_eq!(cfg.server.request_timeout, Duration::from_secs(30));
    assert_eq!(cfg.server.max_concurrent_requests, 1_024);
    assert_eq!(cfg.server.header_read_timeout, Duration::from_secs(10));
    let text = format!(
        "{BASE}\n[server]\nmax_intake_bytes = 8388608\nrequest_timeout = \"5s\"\nmax_concurrent_requests = 64\nheader_read_timeout = \"2s\"\n"
    );
    let cfg = check(&text).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(cfg.server.max_intake_bytes, 8_388_608);
    assert_eq!(cfg.server.request_timeout, Duration::from_secs(5));
    assert_eq!(cfg.server.max_concurrent_requests, 64);
    assert_eq!(cfg.server.header_read_timeout, Duration::from_secs(2));
    // A larger body raises the default budget with it: one event of the largest body fits.
    let text = format!("{BASE}\n[server]\nmax_body_bytes = 134217728\n");
    assert_eq!(check(&text).unwrap().server.max_intake_bytes, 134_217_728);

    let text = format!("{BASE}\n[server]\nmax_body_bytes = 2048\nmax_intake_bytes = 1024\n");
    let rendered = one_error_at(&text, Code::OutOfRange, "max_intake_bytes");
    assert!(
        rendered.contains("server.max_intake_bytes (1024) must be at least server.max_body_bytes (2048)"),
        "{rendered}"
    );
    let text = format!("{BASE}\n[server]\nmax_concurrent_requests = 0\n");
    let rendered = one_error_at(&text, Code::OutOfRange, "max_concurrent_requests");
    assert!(rendered.contains("server.max_concurrent_requests must be a positive number"), "{rendered}");
    let text = format!("{BASE}\n[server]\nrequest_timeout = \"0s\"\n");
    let rendered = one_error_at(&text, Code::OutOfRange, "request_timeout");
    assert!(rendered.contains("server.request_timeout must be longer than 0s"), "{rendered}");
    let text = format!("{BASE}\n[server]\nheader_read_timeout = \"10\"\n");
    one_error_at(&text, Code::BadDuration, "header_read_timeout");
}

#[test]
fn max_file_bytes_caps_the_drop_folder_of_sap_sources_only() {
    let cfg = check(ERP).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(erp_source(&cfg, "s4").max_file_bytes, 16 * 1_048_576, "the default");
    let text = erp_with("idoc_folder = \"var/idoc-in\"\n", "idoc_folder = \"var/idoc-in\"\nmax_file_bytes = 65536\n");
    let cfg = check(&text).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(erp_source(&cfg, "s4").max_file_bytes, 65_536);

    let text = erp_with("idoc_folder = \"var/idoc-in\"\n", "idoc_folder = \"var/idoc-in\"\nmax_file_bytes = 0\n");
    let rendered = one_error_at(&text, Code::OutOfRange, "max_file_bytes");
    assert!(rendered.contains("sources.s4.max_file_bytes must be a positive number"), "{rendered}");
    // Without a drop folder nothing reads files: the key would be ignored, so it is refused.
    let text = erp_with("coalesce = \"0s\"\n", "coalesce = \"0s\"\nmax_file_bytes = 1024\n");
    let rendered = one_error_at(&text, Code::UnknownKey, "max_file_bytes");
    assert!(rendered.contains("key `max_file_bytes` is not used by a dynamics source (`orders`)"), "{rendered}");
    let text =
        format!("{BASE}\n[sources.erp2]\ntype = \"webhook\"\nsecret = {{ env = \"X\" }}\nmax_file_bytes = 1024\n");
    let rendered = one_error_at(&text, Code::UnknownKey, "max_file_bytes");
    assert!(rendered.contains("only `sap`") || rendered.contains("not used by"), "{rendered}");
}

#[test]
fn store_token_key_is_read_at_build_and_a_short_one_is_db0124() {
    assert!(check(BASE).unwrap().store.token_key.is_none(), "optional: rotated tokens stay in memory");
    let rt = check(BASE).unwrap().build_with(&Fixed(AUDIT_KEY_VALUE), Arc::new(connect::SystemClock)).unwrap();
    assert!(rt.token_key.is_none());
    let text = format!("{BASE}\n[store]\ntoken_key = {{ env = \"TOKEN_KEY\" }}\n");
    let cfg = check(&text).unwrap_or_else(|e| panic!("{}", e.render()));
    assert_eq!(cfg.store.token_key.as_ref().map(|k| k.location.clone()), Some(SecretLocation::Env("TOKEN_KEY".into())));
    let rt = cfg.build_with(&Fixed(AUDIT_KEY_VALUE), Arc::new(connect::SystemClock)).unwrap();
    assert!(rt.token_key.is_some());
    assert!(!format!("{rt:?}").contains("9d4e"), "the key never prints");
    let errs = cfg.build_with(&Fixed("too-short-9d4e"), Arc::new(connect::SystemClock)).unwrap_err();
    let e = errs.errors.iter().find(|e| e.code == Code::BadCredential).unwrap_or_else(|| panic!("{}", errs.render()));
    assert!(e.message.contains("store.token_key: the key must be at least 32 bytes"), "{}", e.message);
    assert!(!e.message.contains("9d4e"), "{}", e.message);
    assert_eq!(errs.line_col(e), Some(pos(&cfg.text, "{ env = \"TOKEN_KEY\" }")));
}
