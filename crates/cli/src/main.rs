//! The `dingbridge` binary. `anyhow` lives only here, at the edge.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod audit;
mod bench;
mod check;
mod demo;
mod dlq;
mod gateway;
mod sims;
mod store_access;

use clap::{Parser, Subcommand};

/// mimalloc: the gateway allocates many small short-lived buffers on several threads, where
/// glibc's malloc spends measurable time in locking and consolidation (seen in `perf`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "dingbridge", version, about = "DingTalk <-> ERP/CRM integration gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file: every error names file, line and column. Exit 1 on any error.
    /// With approval policies, also prove every role has an active member mapped to an ERP user.
    Check {
        #[arg(short, long)]
        config: PathBuf,
        /// Read the DingTalk directory and the ERP users live instead of the gateway's stored copy.
        #[arg(long)]
        fetch: bool,
        /// JSON map printed by `dingbridge sim`: fetch from those simulators (with `--fetch`).
        #[arg(long, requires = "fetch")]
        sim_endpoints: Option<PathBuf>,
    },
    /// Run the gateway.
    Run {
        #[arg(short, long)]
        config: PathBuf,
        /// Store URL overriding `[store] url` (sqlite://path or postgres://...).
        #[arg(long)]
        store: Option<String>,
        /// JSON map printed by `dingbridge sim`: point every connector at those simulators.
        #[arg(long)]
        sim_endpoints: Option<PathBuf>,
        /// Address overriding `[server] listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Address overriding `[server] admin_listen` (`/metrics`, `/api/`).
        #[arg(long)]
        admin_listen: Option<String>,
    },
    /// Run only the simulators, each on its own port; the first stdout line is the JSON port map.
    Sim {
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
    },
    /// Simulators + gateway + scenarios on loopback, with a readable timeline.
    Demo {
        /// Exit when the scenarios are done (exit code 1 if any failed).
        #[arg(long)]
        once: bool,
        /// Gateway listen address (default 127.0.0.1:8080, or a free port if that is taken).
        #[arg(long)]
        listen: Option<String>,
        /// Work in DIR and keep it: the store, the config, a /metrics and dead-letter snapshot
        /// at the end, and `secrets.json` (every secret the demo configured), for inspecting
        /// what the gateway wrote.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Measure throughput and latency through a real gateway process into the robot simulator.
    Bench(bench::BenchArgs),
    /// Dead letters: list, retry, drop (retry and drop write audit rows, so they need the audit key).
    Dlq {
        #[command(subcommand)]
        action: dlq::DlqAction,
        #[command(flatten)]
        target: store_access::StoreArgs,
    },
    /// The keyed hash-chained audit log: verify the chain (with the audit key), print an anchor
    /// to keep elsewhere, export rows as CSV or JSON.
    Audit {
        #[command(subcommand)]
        action: audit::AuditAction,
        #[command(flatten)]
        target: store_access::StoreArgs,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DINGBRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Check { config, fetch, sim_endpoints } => check::run(&config, fetch, sim_endpoints).await,
            Command::Run { config, store, sim_endpoints, listen, admin_listen } => {
                gateway::run(&config, store, sim_endpoints, listen, admin_listen).await
            }
            Command::Sim { bind } => sims::run(bind).await,
            Command::Demo { once, listen, keep } => demo::run(once, listen, keep).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Dlq { action, target } => dlq::run(action, &target).await,
            Command::Audit { action, target } => audit::run(action, &target).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            // A store failure carries a stable code with a page in docs/errors/; its message is
            // left as it is, since tools and tests match on it.
            match err.chain().find_map(|e| e.downcast_ref::<store::StoreError>()) {
                Some(store_err) => eprintln!("error[{}]: {err:#}", store_err.code()),
                None => eprintln!("error: {err:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
