//! `dingbridge check --fetch` proves the approvals mapping against the simulators' directory and
//! NetSuite employees: a role whose only member has left fails with the role's config line; a
//! complete mapping passes. Without `--fetch` it reads what the gateway stored (the directory
//! cursor, the ERP user lists) and, when nothing is stored yet, says it proved nothing.

use crate::common::{exe, SERIAL};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::process::{Gateway, GatewayCommand};

/// The audit key approval policies need.
const AUDIT_KEY: &str = "check-approvals-audit-key-0123456789abcdef";

/// A NetSuite source governed by one policy whose steps use `roles`, delivered as cards through
/// the DingTalk app. `extra_roles` is appended verbatim after the role sections.
fn config_text(store: &Path, second_step_role: &str, extra_roles: &str) -> String {
    format!(
        r#"[store]
url = "sqlite://{store}"

[audit]
key = {{ env = "DINGBRIDGE_AUDIT_KEY" }}

[dingtalk.apps.harbour]
app_key = "dingbridgehk0001apps"
app_secret = {{ env = "DINGBRIDGE_DINGTALK_APP_SECRET" }}
agent_id = 3120001
region = "mainland"

[sources.dingtalk]
type = "dingtalk"
app = "harbour"
mode = "stream"

[destinations.dingtalk-app]
type = "dingtalk_app"
app = "harbour"

[netsuite.accounts.hk]
account_id = "1234567"
auth = "tba"
consumer_key = "ef40afdd8abaac111b13825dd5e5e2ddddb44f86d5a0dd6dcf38c20aae6b67e4"
consumer_secret = {{ env = "DINGBRIDGE_NETSUITE_CONSUMER_SECRET" }}
token_id = "2b0ce516420110bcbd36b69e99196d1b7f6de3c6234c5afb799b73d87569f5cc"
token_secret = {{ env = "DINGBRIDGE_NETSUITE_TOKEN_SECRET" }}
time_zone = "UTC"

[sources.netsuite]
type = "netsuite"
account = "hk"
objects = ["purchaseRequisition"]
webhook_secret = {{ env = "DINGBRIDGE_NETSUITE_HOOK_SECRET" }}

[roles.finance_approvers]
users = ["finance0001", "pay0002"]

[roles.managing_director]
users = ["boss0001"]
{extra_roles}
[identity.netsuite]
match = ["email", "job_number", "mobile"]

[[approvals.policies]]
name = "purchase-requests"
sources = ["netsuite"]
entity = "purchase_request"
currency = "HKD"
deliver = {{ card = "dingtalk-app", group = "cidF1nAnCe9zYxWvUt8sRqPo/A==" }}

[[approvals.policies.bands]]
min = "0"
steps = [{{ roles = ["finance_approvers"] }}, {{ roles = ["{second_step_role}"] }}]
"#,
        store = store.display()
    )
}

/// `dingbridge check -c CONFIG ARGS` with the simulators' seeded secrets in its environment.
fn check(config: &Path, args: &[&str]) -> Output {
    use connectors::netsuite::sim::seed as ns;
    std::process::Command::new(exe())
        .arg("check")
        .arg("-c")
        .arg(config)
        .args(args)
        .env("DINGBRIDGE_DINGTALK_APP_SECRET", connectors::dingtalk::sim::org::SEED_APP_SECRET)
        .env("DINGBRIDGE_NETSUITE_CONSUMER_SECRET", ns::CONSUMER_SECRET)
        .env("DINGBRIDGE_NETSUITE_TOKEN_SECRET", ns::TOKEN_SECRET)
        .env("DINGBRIDGE_NETSUITE_HOOK_SECRET", ns::WEBHOOK_SECRET)
        .env("DINGBRIDGE_AUDIT_KEY", AUDIT_KEY)
        .env("DINGBRIDGE_LOG", "warn")
        .output()
        .unwrap()
}

fn both(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `dingbridge sim` as a process; its port map written to `sims.json` in `dir`.
async fn start_sims(dir: &Path) -> Gateway {
    let sim = GatewayCommand::new(exe()).args(["sim", "--bind", "127.0.0.1"]).spawn().unwrap();
    let started = Instant::now();
    let first = loop {
        let out = sim.stdout();
        if let Some((line, _)) = out.split_once('\n') {
            break line.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "`dingbridge sim` printed no port map: {}", sim.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    std::fs::write(dir.join("sims.json"), format!("{first}\n")).unwrap();
    sim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fetch_proves_the_approvals_mapping() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let _sims = start_sims(dir.path()).await;
    let sims = dir.path().join("sims.json");
    let sims = sims.to_str().unwrap();
    let store = dir.path().join("gateway.db");

    // A role whose only member has left the company: no active member can act in that step.
    let leaver_role = "\n[roles.sales_lead]\nusers = [\"leaver0099\"]\n";
    let text = config_text(&store, "sales_lead", leaver_role);
    let role_line = text.lines().position(|l| l == "[roles.sales_lead]").unwrap() + 1;
    let bad = dir.path().join("leaver.toml");
    std::fs::write(&bad, &text).unwrap();
    let out = check(&bad, &["--fetch", "--sim-endpoints", sims]);
    let output = both(&out);
    assert_eq!(out.status.code(), Some(1), "a role with only a leaver must fail:\n{output}");
    let prefix = format!("{}:{role_line}: approvals: ", bad.display());
    let findings: Vec<&str> = output.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(
        findings.iter().any(|l| l.contains("sales_lead")),
        "expected a finding on line {role_line} naming sales_lead:\n{output}"
    );
    assert!(!output.contains("every role has an active mapped member"), "{output}");

    // Every role has an active member who is a NetSuite employee (matched by email).
    let good = dir.path().join("complete.toml");
    std::fs::write(&good, config_text(&store, "managing_director", "")).unwrap();
    let out = check(&good, &["--fetch", "--sim-endpoints", sims]);
    let output = both(&out);
    assert!(out.status.success(), "a complete mapping must pass:\n{output}");
    assert!(output.contains("approvals: 1 policies, 2 roles, every role has an active mapped member"), "{output}");
    assert!(!output.contains(": approvals: "), "no findings expected:\n{output}");

    // Without --fetch and before any gateway run there is nothing to prove against: a note,
    // exit 0, and no store file created by `check`.
    let out = check(&good, &[]);
    let output = both(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.contains("approvals mapping not proven: no DingTalk directory synced yet"), "{output}");
    assert!(!store.exists(), "check created the store file");
}

/// The simulators' seeded secrets, for building clients in the test process.
struct SeedSecrets;

impl engine::config::SecretResolver for SeedSecrets {
    fn env(&self, name: &str) -> Option<String> {
        use connectors::netsuite::sim::seed as ns;
        let value = match name {
            "DINGBRIDGE_DINGTALK_APP_SECRET" => connectors::dingtalk::sim::org::SEED_APP_SECRET,
            "DINGBRIDGE_NETSUITE_CONSUMER_SECRET" => ns::CONSUMER_SECRET,
            "DINGBRIDGE_NETSUITE_TOKEN_SECRET" => ns::TOKEN_SECRET,
            "DINGBRIDGE_NETSUITE_HOOK_SECRET" => ns::WEBHOOK_SECRET,
            "DINGBRIDGE_AUDIT_KEY" => AUDIT_KEY,
            _ => return None,
        };
        Some(value.to_owned())
    }

    fn file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

/// Store the directory and the NetSuite users the way the gateway does (its directory keeper
/// and the users cursor), read from the simulators.
async fn store_people_like_the_gateway(config: &Path, sims: &Path) {
    let (config, _) = engine::config::load_and_validate(config).unwrap_or_else(|e| panic!("{}", e.render()));
    let map: BTreeMap<String, String> =
        serde_json::from_str(std::fs::read_to_string(sims).unwrap().lines().next().unwrap()).unwrap();
    let clock: Arc<dyn connect::Clock> = Arc::new(connect::SystemClock);
    let config = config.with_overrides(None, Some(&map));
    let runtime = config.build_with(&SeedSecrets, clock.clone()).unwrap_or_else(|e| panic!("{}", e.render()));
    let store = store::open(&config.store.url).await.unwrap();
    let keeper = server::directory::DirectoryKeeper::new(
        "harbour",
        runtime.dingtalk_apps["harbour"].clone(),
        store.clone(),
        clock,
    );
    // The simulator enforces DingTalk's per-second limits; the gateway would simply try later.
    let mut tries = 0;
    while let Err(err) = keeper.full_sync().await {
        tries += 1;
        assert!(tries < 5, "directory sync: {err}");
        tokio::time::sleep(Duration::from_millis(1_100)).await;
    }
    let users = connectors::netsuite::approval::users(&runtime.connections.netsuite_accounts["hk"]).await.unwrap();
    assert!(users.iter().any(|u| u.email.as_deref() == Some("ml.cheung@harbour-trading.example.hk")), "{users:?}");
    let cursor = server::approvals::users_cursor("netsuite");
    store.put_cursor(&cursor, &serde_json::to_string(&users).unwrap(), 0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_directory_the_gateway_stored() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let _sims = start_sims(dir.path()).await;
    let sims = dir.path().join("sims.json");
    let store = dir.path().join("gateway.db");
    let leaver_role = "\n[roles.sales_lead]\nusers = [\"leaver0099\"]\n";
    let text = config_text(&store, "sales_lead", leaver_role);
    let role_line = text.lines().position(|l| l == "[roles.sales_lead]").unwrap() + 1;
    let bad = dir.path().join("leaver.toml");
    std::fs::write(&bad, &text).unwrap();
    let good = dir.path().join("complete.toml");
    std::fs::write(&good, config_text(&store, "managing_director", "")).unwrap();

    store_people_like_the_gateway(&good, &sims).await;
    // The simulators are not asked again: stop them so a live read could not succeed.
    drop(_sims);

    let out = check(&bad, &[]);
    let output = both(&out);
    assert_eq!(out.status.code(), Some(1), "{output}");
    let prefix = format!("{}:{role_line}: approvals: ", bad.display());
    assert!(output.lines().any(|l| l.starts_with(&prefix) && l.contains("sales_lead")), "{output}");

    let out = check(&good, &[]);
    let output = both(&out);
    assert!(out.status.success(), "{output}");
    assert!(output.contains("approvals: 1 policies, 2 roles, every role has an active mapped member"), "{output}");
}

/// `check` warns about approval policies whose clicks would come over unsigned HTTP card
/// callbacks, and about those whose clicks could not reach the gateway at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_about_http_card_clicks_and_unreachable_cards() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hk-trading.toml")).unwrap();
    let http = example.replace(
        "[sources.dingtalk]\ntype = \"dingtalk\"\napp = \"harbour\"\nmode = \"stream\"\n",
        "[sources.dingtalk]\ntype = \"dingtalk\"\napp = \"harbour\"\nmode = \"http\"\n\
         callback_token = { env = \"CB_TOKEN\" }\ncallback_aes_key = { env = \"CB_KEY\" }\n\
         card_callback_token = { env = \"CARD_TOKEN\" }\n",
    );
    assert_ne!(http, example, "the example's DingTalk source is in Stream mode");
    let allowed = http.replace(
        "entity = \"purchase_request\"\ncurrency = \"HKD\"\n",
        "entity = \"purchase_request\"\ncurrency = \"HKD\"\nallow_http_card_callback = true\n",
    );
    assert_ne!(allowed, http);
    for (name, text, warning) in [
        ("unreachable.toml", &http, "no click on policy `purchase-requests`'s cards can reach the gateway"),
        ("http.toml", &allowed, "policy `purchase-requests` takes decisions over HTTP card callbacks"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = both(&check(&path, &[]));
        assert!(out.contains(warning), "{name}: {out}");
    }
    let path = dir.path().join("stream.toml");
    std::fs::write(&path, &example).unwrap();
    assert!(!both(&check(&path, &[])).contains("card callbacks"), "the Stream example has nothing to warn about");
}
