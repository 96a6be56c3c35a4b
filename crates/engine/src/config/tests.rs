use super::build::SecretResolver;
use super::*;
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
fn db0111_unknown_field_type() {
    let text = BASE.replace("type = \"quantity\"", "type = \"qty\"");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::InvalidValue);
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
fn db0111_request_timeout_alone_longer_than_the_default_lease() {
    let text = format!("[delivery]\nrequest_timeout = \"60s\"\n{BASE}");
    let (code, msg, l, c) = one_error(&text);
    assert_eq!(code, Code::InvalidValue);
    assert!(msg.contains("must be longer than delivery.request_timeout"), "{msg}");
    assert_eq!((l, c), pos(&text, "\"60s\""));
}

#[test]
fn db0111_malformed_webhook_secret_is_refused_at_build_with_its_line() {
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
    assert_eq!(errs.codes(), vec![Code::InvalidValue]);
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
    assert!(matches!(rt.dingtalk_sources["dt_http"], DingtalkSourceRuntime::Http(_)));
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
    let inbound = connectors::dingtalk::source::Inbound {
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
    assert_eq!(code, Code::InvalidValue);
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
