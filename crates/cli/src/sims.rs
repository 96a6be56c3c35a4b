//! The simulators as `sim`, `demo` and `bench` use them.

use connect::SystemClock;
use connectors::registry::System;
use std::process::ExitCode;
use std::sync::Arc;
pub use testkit::dingtalk::DingTalkHarness;

/// `dingbridge sim`: every simulator on its own port; the first stdout line is the JSON port map.
pub async fn run(bind: std::net::IpAddr) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let simulators: Vec<Arc<dyn sim::Simulator>> =
        System::ALL.iter().map(|system| system.simulator(Arc::new(SystemClock))).collect();
    let fleet = sim::serve_all(simulators, bind).await?;
    let map = fleet.urls();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&map)?)?;
    stdout.flush()?;
    drop(stdout);
    eprintln!("simulators running; control API under /_sim/ on each; Ctrl-C stops them");
    let _ = tokio::signal::ctrl_c().await;
    fleet.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}

/// The `seq=N` a bench message carries.
pub fn extract_seq(body: &serde_json::Value) -> Option<u64> {
    let content = body.pointer("/text/content")?.as_str()?;
    content.split(' ').find_map(|part| part.strip_prefix("seq=")).and_then(|n| n.parse().ok())
}

/// One line describing a robot message for the demo's timeline.
pub fn summary(body: &serde_json::Value) -> String {
    let msgtype = body.get("msgtype").and_then(|v| v.as_str()).unwrap_or("?");
    let title = body
        .pointer(&format!("/{msgtype}/title"))
        .or_else(|| body.pointer("/text/content"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let title: String = title.chars().take(60).collect();
    format!("{msgtype:<10} \"{title}\"")
}
