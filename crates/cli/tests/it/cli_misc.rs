//! Process-level tests of the binary's small commands: `sim`, `--help`, `dlq list --json` and
//! `check` on a config with several mistakes.

use crate::common::{exe, SERIAL};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use testkit::process::GatewayCommand;

fn run(args: &[&str]) -> Output {
    Command::new(exe()).args(args).output().unwrap_or_else(|e| panic!("running dingbridge {args:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn sim_prints_its_port_map_first_and_serves_the_control_api() {
    let _serial = SERIAL.lock().await;
    // Killed on drop.
    let sim = GatewayCommand::new(exe()).args(["sim", "--bind", "127.0.0.1"]).spawn().unwrap();
    let started = Instant::now();
    let first = loop {
        let out = sim.stdout();
        if let Some((line, _)) = out.split_once('\n') {
            break line.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "`dingbridge sim` printed no full line in 30 s; stdout {out:?}, stderr:\n{}",
            sim.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let map: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("first stdout line is not JSON ({e}): {first:?}"));
    assert!(map.is_object(), "first stdout line is not a JSON object: {first}");
    let dingtalk = map["dingtalk"].as_str().unwrap_or_else(|| panic!("no `dingtalk` URL in {first}"));
    let mut seen = std::collections::BTreeSet::from([dingtalk.to_owned()]);
    for vendor in ["salesforce", "zoho", "netsuite", "dynamics", "sap"] {
        let url = map[vendor].as_str().unwrap_or_else(|| panic!("no `{vendor}` URL in {first}"));
        assert!(
            url.starts_with("http://127.0.0.1:") && seen.insert(url.to_owned()),
            "{vendor} on its own port: {first}"
        );
        // Every simulator answers the shared control API.
        let info = reqwest::Client::new()
            .get(format!("{url}/_sim/info"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(info.status().as_u16(), 200, "{vendor} /_sim/info");
    }
    assert!(dingtalk.starts_with("http://127.0.0.1:"), "unexpected simulator URL {dingtalk}");

    let info = reqwest::Client::new()
        .get(format!("{}/_sim/info", dingtalk.trim_end_matches('/')))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(info.status().as_u16(), 200);
    let body: serde_json::Value = info.json().await.unwrap();
    assert!(body.is_object(), "GET /_sim/info is not a JSON object: {body}");
}

#[test]
fn help_lists_every_command() {
    let out = run(&["--help"]);
    assert!(out.status.success(), "--help failed: {}", text(&out.stderr));
    let help = text(&out.stdout);
    let commands: Vec<&str> =
        help.lines().filter_map(|l| l.strip_prefix("  ")).filter_map(|l| l.split_whitespace().next()).collect();
    for command in ["check", "run", "sim", "demo", "bench", "dlq"] {
        assert!(commands.contains(&command), "`dingbridge --help` does not list `{command}`:\n{help}");
    }
}

#[test]
fn dlq_list_json_on_an_empty_store_prints_an_empty_array() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("x.db").display());
    let out = run(&["dlq", "list", "--json", "--store", &store]);
    assert!(out.status.success(), "dlq list failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.trim(), "[]", "stdout: {stdout:?}");
    let parsed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(parsed, serde_json::json!([]));
}

/// Three independent mistakes, each found by validation (a parse error would stop at the first).
const THREE_MISTAKES: &str = r#"[delivery]
lease = "30"

[sources.erp]
type = "webhook"
secret = { env = "DINGBRIDGE_WEBHOOK_SECRET" }

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "DINGBRIDGE_OPS_ROBOT_TOKEN" }

[[flows]]
name = "po"
on = { source = "erp" }
when = 'event.change == "created" &&'

[[flows.deliver]]
destination = "opps"
message = { type = "text", content = "PO {{ event.entity_id }}" }
"#;

#[test]
fn check_reports_every_mistake_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, THREE_MISTAKES).unwrap();
    let shown = path.display().to_string();
    let out = run(&["check", "-c", &shown]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "check must exit 1; stderr:\n{stderr}");

    let lines: Vec<&str> = stderr.lines().collect();
    let headers: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("error[DB")).collect();
    assert_eq!(headers.len(), 3, "expected 3 errors:\n{stderr}");
    let mut found = Vec::new();
    for i in headers {
        let code = &lines[i]["error[".len()..lines[i].find(']').unwrap()];
        let location = lines.get(i + 1).and_then(|l| l.trim_start().strip_prefix("--> ")).unwrap_or_else(|| {
            panic!("error without a `--> file:line:col` line:\n{stderr}");
        });
        let rest = location.strip_prefix(&format!("{shown}:")).unwrap_or_else(|| panic!("not in {shown}: {location}"));
        let (line, col) = rest.split_once(':').unwrap_or_else(|| panic!("no line:col in {location}"));
        let line: usize = line.parse().unwrap_or_else(|_| panic!("bad line in {location}"));
        let col: usize = col.parse().unwrap_or_else(|_| panic!("bad column in {location}"));
        found.push((code.to_owned(), line, col));
    }
    // In file order: the bad lease, the bad condition, the unknown destination.
    assert_eq!(
        found,
        vec![("DB0107".to_owned(), 2, 9), ("DB0104".to_owned(), 15, 8), ("DB0102".to_owned(), 18, 15)],
        "stderr:\n{stderr}"
    );
}
