//! `[roles]`, `[identity]` and `[approvals]` validation: a test per way a policy cannot work, each
//! asserting the code, the words a person needs and the line it points at.

use crate::config::{Code, Config, ConfigErrors};

/// Two ERP sources (NetSuite, SAP), a webhook source, the app destination, a robot and the
/// audit key approvals need.
const SYSTEMS: &str = r#"
[audit]
key = { env = "AUDIT_KEY" }
[dingtalk.apps.hk]
app_key = "dingbridgehk0001apps"
app_secret = { env = "APP_SECRET" }
agent_id = 3120001

[netsuite.accounts.main]
account_id = "1234567"
consumer_key = "ck"
consumer_secret = { env = "NS_CS" }
token_id = "tok"
token_secret = { env = "NS_TS" }

[sap.systems.s4]
base_url = "https://s4.example.com.hk:44300"
sap_client = "100"
user = "DINGBRIDGE"
password = { env = "SAP_PW" }

[sources.ns]
type = "netsuite"
account = "main"
objects = ["purchaseRequisition"]
poll = "1m"

[sources.s4]
type = "sap"
system = "s4"
objects = ["A_PurchaseRequisitionHeader"]
poll = "1m"

[sources.hooks]
type = "webhook"
secret = { env = "WH" }

[destinations.app]
type = "dingtalk_app"
app = "hk"

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "OPS" }

[roles.approvers]
users = ["finance0001", "pay0002"]

[roles.md]
users = ["boss0001"]

[approvals.fx]
base = "HKD"
rates = { USD = "7.80" }
"#;

const POLICY: &str = r#"
[[approvals.policies]]
name = "prs"
sources = ["ns", "s4"]
entity = "purchase_request"
currency = "HKD"
deliver = { card = "app", group = "cidF1nAnCe9zYxWvUt8sRqPo/A==" }
remind_after = "4h"
escalate_after = "8h"
escalate_to = "md"
"#;

const BANDS: &str = r#"
[[approvals.policies.bands]]
min = "0"
below = "50000"
steps = [{ roles = ["approvers"] }]

[[approvals.policies.bands]]
min = "50000"
steps = [{ roles = ["approvers"] }, { roles = ["md"] }]
"#;

fn check(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_toml(text, "approvals.toml")
}

/// The one error of `text`: code, message, line.
fn one_error(text: &str) -> (Code, String, usize) {
    let errs = check(text).expect_err("the config should be refused");
    assert_eq!(errs.errors.len(), 1, "expected one error, got: {}", errs.render());
    let e = &errs.errors[0];
    (e.code, e.message.clone(), errs.line_col(e).expect("a place").0)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or_else(|| panic!("{needle} not in text"))
}

#[test]
fn a_complete_policy_validates_into_the_approvals_config() {
    let text = format!("{SYSTEMS}{POLICY}{BANDS}\n[identity.ns]\nmatch = [\"email\"]\n[identity.s4]\nusers = {{ boss0001 = \"LEEWK\" }}\n");
    let config = check(&text).unwrap_or_else(|e| panic!("{}", e.render()));
    let a = &config.approvals;
    assert_eq!(a.policies.len(), 1);
    let p = &a.policies[0];
    assert_eq!((p.name.as_str(), p.sources.clone(), p.bands.len()), ("prs", vec!["ns".to_owned(), "s4".to_owned()], 2));
    assert_eq!(p.bands[1].steps.len(), 2);
    assert_eq!(p.bands[0].line, line_of(&text, "min = \"0\""));
    assert_eq!(p.remind_after, Some(std::time::Duration::from_secs(4 * 3600)));
    assert_eq!(a.fx["USD"].to_string(), "7.80");
    assert_eq!(a.identity["s4"].table["boss0001"], "LEEWK");
    assert_eq!(a.roles["approvers"].line, line_of(&text, "[roles.approvers]"));
    assert!(a.policy_for("s4", "purchase_request").is_some());
    assert!(a.policy_for("s4", "purchase_order").is_none());
}

#[test]
fn a_policy_without_an_audit_key_is_refused_at_its_name() {
    let systems = SYSTEMS.replace("[audit]\nkey = { env = \"AUDIT_KEY\" }\n", "");
    assert!(!systems.contains("[audit]"));
    let text = format!("{systems}{POLICY}{BANDS}");
    let (code, message, line) = one_error(&text);
    assert_eq!(code, Code::AuditKey);
    assert_eq!(code.as_str(), "DB0115");
    assert!(message.contains("approval policy `prs` needs an audit key"), "{message}");
    assert_eq!(line, line_of(&text, "name = \"prs\""));
    // Without policies, no key is required.
    assert!(check(&systems).is_ok());
}

#[test]
fn a_step_naming_an_unknown_role_is_refused_at_its_line() {
    let bands = BANDS.replace("roles = [\"md\"]", "roles = [\"finance_director\"]");
    let text = format!("{SYSTEMS}{POLICY}{bands}");
    let (code, message, line) = one_error(&text);
    assert_eq!(code, Code::Approvals);
    assert!(
        message.contains("policy `prs`") && message.contains("role `finance_director`, which is not defined"),
        "{message}"
    );
    assert_eq!(line, line_of(&text, "finance_director"));
}

#[test]
fn escalation_and_actions_to_unknown_roles_are_refused() {
    let text = format!("{SYSTEMS}{}{BANDS}", POLICY.replace("escalate_to = \"md\"", "escalate_to = \"ceo\""));
    let (code, message, line) = one_error(&text);
    assert_eq!(code, Code::Approvals);
    assert!(message.contains("escalate_to names role `ceo`"), "{message}");
    assert_eq!(line, line_of(&text, "escalate_to"));
}

#[test]
fn a_role_without_members_is_refused() {
    let text = format!("{SYSTEMS}{POLICY}{BANDS}\n[roles.auditors]\n");
    let (code, message, line) = one_error(&text);
    assert_eq!(code, Code::Approvals);
    assert!(message.contains("role `auditors` has no members"), "{message}");
    assert_eq!(line, line_of(&text, "[roles.auditors]"));
}

#[test]
fn a_gap_between_bands_names_the_uncovered_amounts_and_both_lines() {
    let bands = BANDS.replace("min = \"50000\"", "min = \"60000\"");
    let text = format!("{SYSTEMS}{POLICY}{bands}");
    let (code, message, line) = one_error(&text);
    assert_eq!(code, Code::Approvals);
    assert!(message.contains("amounts from 50000 to 60000 HKD are not covered"), "{message}");
    let first = line_of(&text, "min = \"0\"");
    let second = line_of(&text, "min = \"60000\"");
    assert!(message.contains(&format!("lines {first} and {second}")), "{message}");
    assert_eq!(line, second);
}

#[test]
fn overlapping_bands_are_refused() {
    let bands = BANDS.replace("min = \"50000\"", "min = \"40000\"");
    let text = format!("{SYSTEMS}{POLICY}{bands}");
    let (code, message, _) = one_error(&text);
    assert_eq!(code, Code::Approvals);
    assert!(message.contains("amounts from 40000 to 50000 HKD are covered twice"), "{message}");
}

#[test]
fn bands_must_start_at_zero_and_end_open() {
    let text = format!("{SYSTEMS}{POLICY}{}", BANDS.replace("min = \"0\"", "min = \"100\""));
    let (_, message, _) = one_error(&text);
    assert!(message.contains("amounts from 0 to 100 HKD are not covered"), "{message}");
    let text =
        format!("{SYSTEMS}{POLICY}{}", BANDS.replace("min = \"50000\"\n", "min = \"50000\"\nbelow = \"1000000\"\n"));
    let (_, message, _) = one_error(&text);
    assert!(message.contains("amounts of 1000000 HKD and more are not covered"), "{message}");
    let text = format!("{SYSTEMS}{POLICY}");
    let (_, message, _) = one_error(&text);
    assert!(message.contains("has no amount bands"), "{message}");
}

#[test]
fn an_action_the_erp_cannot_take_is_refused() {
    let policy = POLICY.replace("escalate_to = \"md\"\n", "escalate_to = \"md\"\nactions = { cancel = [\"md\"] }\n");
    let text = format!("{SYSTEMS}{policy}{BANDS}");
    let errs = check(&text).expect_err("refused");
    let messages: Vec<&str> = errs.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("action `cancel` does not exist for NetSuite purchase request")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("action `cancel` does not exist for SAP purchase request")),
        "{messages:?}"
    );
    assert!(errs.errors.iter().all(|e| e.code == Code::Approvals));
}

#[test]
fn match_rules_on_sap_are_refused_because_sap_has_no_user_list() {
    let text = format!("{SYSTEMS}{POLICY}{BANDS}\n[identity.s4]\nmatch = [\"email\"]\n");
    let (code, message, line) = one_error(&text);
    assert_eq!(code, Code::Approvals);
    assert!(message.contains("SAP has no user list dingbridge reads"), "{message}");
    assert_eq!(line, line_of(&text, "match = [\"email\"]"));
}

#[test]
fn identity_and_policies_must_name_erp_sources() {
    let text = format!("{SYSTEMS}{POLICY}{BANDS}\n[identity.hooks]\nmatch = [\"email\"]\n");
    let (code, message, _) = one_error(&text);
    assert_eq!(code, Code::UnknownSource);
    assert!(message.contains("`hooks` is not an ERP source"), "{message}");
    let text =
        format!("{SYSTEMS}{}{BANDS}", POLICY.replace("sources = [\"ns\", \"s4\"]", "sources = [\"ns\", \"nope\"]"));
    let (code, message, _) = one_error(&text);
    assert_eq!(code, Code::UnknownSource);
    assert!(message.contains("source `nope` is not defined"), "{message}");
}

#[test]
fn a_currency_without_a_rate_the_wrong_destination_and_oa_are_refused() {
    let text = format!("{SYSTEMS}{}{BANDS}", POLICY.replace("currency = \"HKD\"", "currency = \"EUR\""));
    let (code, message, _) = one_error(&text);
    assert_eq!(code, Code::Approvals);
    assert!(message.contains("currency EUR is neither approvals.fx.base (HKD) nor in approvals.fx.rates"), "{message}");
    let text = format!("{SYSTEMS}{}{BANDS}", POLICY.replace("card = \"app\"", "card = \"ops\""));
    let (code, message, _) = one_error(&text);
    assert_eq!(code, Code::UnknownDestination);
    assert!(message.contains("`ops` is not a dingtalk_app destination"), "{message}");
    let text = format!(
        "{SYSTEMS}{}{BANDS}",
        POLICY.replace(
            "deliver = { card = \"app\", group = \"cidF1nAnCe9zYxWvUt8sRqPo/A==\" }",
            "deliver = { oa = \"app\", process_code = \"PROC-1\" }"
        )
    );
    let (code, message, _) = one_error(&text);
    assert_eq!(code, Code::Approvals);
    assert!(message.contains("OA approval delivery is not supported yet"), "{message}");
}

#[test]
fn timers_duplicates_and_double_governance_are_refused() {
    let text = format!("{SYSTEMS}{}{BANDS}", POLICY.replace("escalate_after = \"8h\"", "escalate_after = \"2h\""));
    let (code, message, _) = one_error(&text);
    assert_eq!(code, Code::OutOfRange);
    assert!(message.contains("escalate_after must be longer than remind_after"), "{message}");
    let text = format!("{SYSTEMS}{}{BANDS}", POLICY.replace("remind_after = \"4h\"", "remind_after = \"soon\""));
    assert_eq!(one_error(&text).0, Code::BadDuration);
    let text = format!("{SYSTEMS}{POLICY}{BANDS}{POLICY}{BANDS}");
    let errs = check(&text).expect_err("refused");
    let messages: Vec<&str> = errs.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("duplicate approval policy name `prs`")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("already governed by policy `prs`")), "{messages:?}");
}

#[test]
fn calendar_values_are_checked() {
    let text = format!("{SYSTEMS}{POLICY}{BANDS}\n[approvals.calendar]\nopen = \"18:00\"\nclose = \"09:00\"\n");
    let (_, message, _) = one_error(&text);
    assert!(message.contains("close must be later than open"), "{message}");
    let text = format!("{SYSTEMS}{POLICY}{BANDS}\n[approvals.calendar]\nworkdays = [\"mon\", \"funday\"]\nextra_holidays = [\"2026-12-24\"]\n");
    let (_, message, _) = one_error(&text);
    assert!(message.contains("`funday` is not a day"), "{message}");
    let text = format!("{SYSTEMS}{POLICY}{BANDS}\n[approvals.calendar]\nextra_holidays = [\"2026-12-24\"]\n");
    let config = check(&text).unwrap();
    let eve = jiff::civil::date(2026, 12, 24);
    assert!(config.approvals.calendar.holidays.contains(&eve));
}

#[test]
fn only_the_card_apps_stream_sources_may_decide() {
    // The app's Stream source decides; its HTTP-callback source, a webhook source and another
    // app's source do not.
    let extra = r#"
[dingtalk.apps.other]
app_key = "dingother00000000001"
app_secret = { env = "OTHER_SECRET" }

[sources.dt-stream]
type = "dingtalk"
app = "hk"
mode = "stream"

[sources.dt-http]
type = "dingtalk"
app = "hk"
mode = "http"
callback_token = { env = "CB_TOKEN" }
callback_aes_key = { env = "CB_KEY" }

[sources.dt-other]
type = "dingtalk"
app = "other"
"#;
    let text = format!("{SYSTEMS}{extra}{POLICY}{BANDS}\n[identity.ns]\nmatch = [\"email\"]\n");
    let config = check(&text).unwrap_or_else(|e| panic!("{}", e.render()));
    let sources = super::decision_sources(&config);
    let prs: Vec<&str> = sources["prs"].iter().map(String::as_str).collect();
    assert_eq!(prs, ["dt-stream"]);
}

#[test]
fn http_card_clicks_decide_only_when_the_policy_allows_them() {
    let http_source = r#"
[sources.dt-http]
type = "dingtalk"
app = "hk"
mode = "http"
callback_token = { env = "CB_TOKEN" }
callback_aes_key = { env = "CB_KEY" }
card_callback_token = { env = "CARD_TOKEN" }
"#;
    let identity = "\n[identity.ns]\nmatch = [\"email\"]\n";
    let allowed = POLICY.replacen("currency = \"HKD\"", "currency = \"HKD\"\nallow_http_card_callback = true", 1);
    assert_ne!(allowed, POLICY, "the flag was added");
    let modes = |policy: &str, extra: &str| {
        let text = format!("{SYSTEMS}{http_source}{extra}{policy}{BANDS}{identity}");
        let config = check(&text).unwrap_or_else(|e| panic!("{}", e.render()));
        let p = &config.approvals.policies[0];
        (super::decision_sources(&config)[&p.name].clone(), super::card_callback(&config, p))
    };
    use super::CardCallbackMode::{Http, Stream};
    // Without the flag an HTTP-only app cannot decide at all (and `check` warns).
    let (sources, mode) = modes(POLICY, "");
    assert!(sources.is_empty());
    assert_eq!(mode, None);
    // With it, the HTTP source decides and the cards call back over HTTP.
    let (sources, mode) = modes(&allowed, "");
    assert_eq!(sources.into_iter().collect::<Vec<_>>(), ["dt-http"]);
    assert_eq!(mode, Some(Http));
    // A Stream source is preferred for the cards even when HTTP clicks are allowed.
    let stream = "\n[sources.dt]\ntype = \"dingtalk\"\napp = \"hk\"\n";
    let (sources, mode) = modes(&allowed, stream);
    assert_eq!(sources.len(), 2);
    assert_eq!(mode, Some(Stream));
}
