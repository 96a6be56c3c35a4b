//! R23: the demo at TRACE level leaks no secret. `demo --once --keep DIR` runs every scenario with
//! `DINGBRIDGE_LOG=trace` and writes `secrets.json` (every token, key and password it configured),
//! its SQLite store, a `/metrics` snapshot and the dead letters as the admin API shows them.
//! None of those secrets may appear in stdout, stderr, the store (WAL included), `/metrics` or
//! the dead letters.

use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r23_the_demo_at_trace_level_shows_no_secret_anywhere() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("demo");
    let mut demo = testkit::process::GatewayCommand::new(exe())
        .arg("demo")
        .arg("--once")
        .arg("--keep")
        .arg(&keep)
        .env("DINGBRIDGE_LOG", "trace")
        .spawn()
        .unwrap();
    let status = demo.wait_exit(Duration::from_secs(300)).await.expect("demo --once did not finish in 300 s");
    assert!(status.success(), "demo failed: {status:?}\n{}", demo.stdout());

    let secrets: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(keep.join("secrets.json")).unwrap()).unwrap();
    for name in [
        "DINGBRIDGE_WEBHOOK_SECRET",
        "DINGBRIDGE_ADMIN_TOKEN",
        "DINGBRIDGE_DINGTALK_APP_SECRET",
        "DINGBRIDGE_SALESFORCE_SECRET",
        "DINGBRIDGE_SALESFORCE_OUTBOUND_TOKEN",
        "DINGBRIDGE_OPS_ROBOT_TOKEN",
        "DINGBRIDGE_OPS_ROBOT_SECRET",
        "DINGBRIDGE_NETSUITE_TOKEN_SECRET",
        "DINGBRIDGE_NETSUITE_HOOK_SECRET",
        "DINGBRIDGE_AAD_SECRET",
        "DINGBRIDGE_DATAVERSE_KEY",
        "DINGBRIDGE_SAP_PASSWORD",
        "DINGBRIDGE_IDOC_PASSWORD",
    ] {
        assert!(secrets.get(name).is_some_and(|v| !v.is_empty()), "{name} is one of the demo's secrets");
    }
    // And the access tokens the DingTalk, Salesforce and Dynamics simulators issued to it.
    let issued = secrets.keys().filter(|k| k.starts_with("ISSUED_TOKEN_")).count();
    assert!(issued >= 3, "issued tokens recorded: {issued}");

    // Everything the gateway wrote or said, as bytes.
    let mut places: Vec<(String, Vec<u8>)> = vec![
        ("stdout".into(), std::fs::read(demo.stdout_path()).unwrap()),
        ("stderr".into(), std::fs::read(demo.stderr_path()).unwrap()),
    ];
    for entry in std::fs::read_dir(&keep).unwrap().flatten() {
        let path = entry.path();
        // secrets.json is the list itself; audit.key is the demo's key, written for `audit verify`.
        if path.is_file() && path.file_name().is_some_and(|n| n != "secrets.json" && n != "audit.key") {
            places.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    let names: Vec<&str> = places.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in ["dingbridge.db", "metrics.txt", "dead-letters.json"] {
        assert!(names.iter().any(|n| n.ends_with(wanted)), "{wanted} was kept: {names:?}");
    }
    let stderr_len = places[1].1.len();
    assert!(stderr_len > 100_000, "TRACE logging was on ({stderr_len} bytes of log)");
    let mut leaks = Vec::new();
    // A value this short (the SAP simulator's password is "secret") would match unrelated bytes.
    let checked: Vec<(&String, &String)> = secrets.iter().filter(|(_, v)| v.len() >= 8).collect();
    assert!(checked.len() >= 15, "{} secrets to look for", checked.len());
    for (name, value) in checked {
        for (place, bytes) in &places {
            if bytes.windows(value.len()).any(|w| w == value.as_bytes()) {
                leaks.push(format!("{name} in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    eprintln!(
        "R23: {} secrets checked in {} places ({stderr_len} bytes of TRACE log): 0 hits",
        secrets.len(),
        places.len()
    );
}
