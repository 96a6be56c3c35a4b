//! Assembling and running the gateway: config -> store -> intake -> workers -> HTTP.

use anyhow::Context;
use engine::config::{self, Config};
pub use server::gateway::{redact_store_url, Gateway, Overrides};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn read_sim_endpoints(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let first = text.lines().next().unwrap_or_default();
    serde_json::from_str(first)
        .with_context(|| format!("{}: expected the JSON map printed by `dingbridge sim`", path.display()))
}

/// Load and validate a config, printing diagnostics; `None` means it was refused.
pub fn load(path: &Path) -> Option<Config> {
    match config::load_and_validate(path) {
        Ok((config, _text)) => Some(config),
        Err(errors) => {
            eprint!("{}", errors.render());
            None
        }
    }
}

pub async fn run(
    path: &Path,
    store_url: Option<String>,
    sim_endpoints: Option<PathBuf>,
    listen: Option<String>,
    admin_listen: Option<String>,
) -> anyhow::Result<ExitCode> {
    let Some(config) = load(path) else {
        return Ok(ExitCode::FAILURE);
    };
    let sim_endpoints = sim_endpoints.map(|p| read_sim_endpoints(&p)).transpose()?;
    let overrides = Overrides { store_url, sim_endpoints, listen, admin_listen, clock: None };
    let gateway = Gateway::start(config, overrides).await?;
    tracing::info!(listen = %gateway.addr, admin_listen = %gateway.admin_addr, "dingbridge is running.");
    let failed = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            tracing::info!("Shutdown requested: draining.");
            false
        }
        () = gateway.failed() => {
            tracing::error!("A task the gateway cannot run without failed: draining and exiting.");
            true
        }
    };
    gateway.shutdown().await;
    tracing::info!("Drained; exiting.");
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
