//! `dingbridge demo --once` runs its scenarios and exits 0 with one `ok` line per scenario.

use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_once_runs_the_scenarios() {
    let _serial = SERIAL.lock().await;
    let mut demo = testkit::process::GatewayCommand::new(exe()).arg("demo").arg("--once").spawn().unwrap();
    let status = demo.wait_exit(Duration::from_secs(120)).await.expect("demo --once did not finish in 120 s");
    let stdout = demo.stdout();
    assert!(status.success(), "demo failed: {status:?}\n{stdout}\n{}", demo.stderr());
    assert!(stdout.contains("S0 pipeline"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("S0 ") && l.ends_with(": ok")), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("S0 DingTalk app: card -> click over Stream") && l.ends_with(": ok")),
        "the DingTalk app round trip ran and passed:\n{stdout}"
    );
    assert!(stdout.contains("/_sim/ui?user="), "the demo prints the page a person clicks:\n{stdout}");
    assert!(stdout.contains("audit verify --store sqlite://"), "the demo says how to verify its audit log:\n{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_refuses_a_bad_config_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[sources.a]\ntype = \"webhook\"\nsystem = \"erp\"\nsecret = { env = \"X\" }\n\n[[flows]]\nname = \"f\"\non = { source = \"a\" }\n[[flows.deliver]]\ndestination = \"nowhere\"\nmessage = { type = \"text\", content = \"hi\" }\n",
    )
    .unwrap();
    let output = std::process::Command::new(exe()).arg("check").arg("-c").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("DB0102"), "{stderr}");
    assert!(stderr.contains("bad.toml:10:"), "expected file:line:col, got:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_check_clean() {
    for example in ["quickstart.toml", "hk-trading.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(example);
        let output = std::process::Command::new(exe()).arg("check").arg("-c").arg(&path).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{example}: {stderr}");
        // The quickstart has no approvals and no audit key: advice, not an error.
        let warned = stderr.contains("warning: no [audit] key");
        assert_eq!(warned, example == "quickstart.toml", "{example}: {stderr}");
    }
}
