//! `dingbridge dlq list|retry|drop`: dead letters, straight from the store.

use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// Dead jobs replayed per store transaction by `retry --all`.
const REPLAY_CHUNK: usize = 500;

#[derive(Subcommand)]
pub enum DlqAction {
    /// List dead letters, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Put dead jobs back in the queue (same idempotency key): `retry JOB_ID...` or `retry --all`.
    Retry {
        job_ids: Vec<i64>,
        #[arg(long)]
        all: bool,
    },
    /// Remove dead-letter entries by their id.
    Drop { ids: Vec<i64> },
}

pub(crate) async fn open_store(
    config: Option<PathBuf>,
    store: Option<String>,
) -> anyhow::Result<std::sync::Arc<dyn store::Store>> {
    let url = match (store, config) {
        (Some(url), _) => url,
        (None, Some(path)) => {
            let Some(config) = crate::gateway::load(&path) else {
                anyhow::bail!("the config {} is invalid", path.display());
            };
            config.store.url.clone()
        }
        (None, None) => anyhow::bail!("give --store URL or -c CONFIG to find the store"),
    };
    store::open(&url).await.with_context(|| format!("opening the store {}", crate::gateway::redact_store_url(&url)))
}

pub async fn run(action: DlqAction, config: Option<PathBuf>, store: Option<String>) -> anyhow::Result<ExitCode> {
    let store = open_store(config, store).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    match action {
        DlqAction::List { limit, json } => {
            let dead = store.list_dead(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&dead)?);
            } else if dead.is_empty() {
                println!("no dead letters");
            } else {
                println!("{:>6} {:>8} {:<14} {:>8}  {:<25} reason", "id", "job", "destination", "attempts", "at");
                for d in dead {
                    let at = jiff::Timestamp::from_millisecond(d.created_at).map(|t| t.to_string()).unwrap_or_default();
                    println!(
                        "{:>6} {:>8} {:<14} {:>8}  {:<25} {}",
                        d.id,
                        d.job_id.map(|j| j.to_string()).unwrap_or_else(|| "-".into()),
                        d.destination.unwrap_or_else(|| "-".into()),
                        d.attempts,
                        at,
                        d.reason
                    );
                }
            }
        }
        DlqAction::Retry { job_ids, all } => {
            let ids: Vec<i64> = if all {
                let mut ids: Vec<i64> =
                    store.list_dead(usize::MAX >> 1).await?.into_iter().filter_map(|d| d.job_id).collect();
                // Oldest job first: a running gateway may deliver a replayed job at once, and
                // replaying a key's later job before its earlier one would invert their order.
                ids.sort_unstable();
                ids.dedup();
                ids
            } else {
                job_ids
            };
            let total = ids.len();
            let mut replayed = 0u64;
            if all {
                // Chunks of 500 in one transaction each, oldest first, with progress.
                for (n, chunk) in ids.chunks(REPLAY_CHUNK).enumerate() {
                    replayed += store.replay_dead_many(chunk, now).await.context("replaying dead jobs")?.len() as u64;
                    eprintln!("replayed {} of {total}", (n * REPLAY_CHUNK + chunk.len()).min(total));
                }
                let skipped = total as u64 - replayed;
                if skipped > 0 {
                    eprintln!("{skipped} job(s) were no longer dead (replayed or dropped meanwhile)");
                }
            } else {
                for id in ids {
                    store.replay_dead(id, now).await.with_context(|| format!("replaying job {id}"))?;
                    replayed += 1;
                }
            }
            println!("replayed {replayed} job(s); a running gateway delivers them within its poll interval");
        }
        DlqAction::Drop { ids } => {
            for id in &ids {
                store.drop_dead(*id).await.with_context(|| format!("dropping dead letter {id}"))?;
            }
            println!("dropped {} dead letter(s)", ids.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
