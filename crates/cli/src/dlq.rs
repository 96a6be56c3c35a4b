//! `dingbridge dlq list|retry|drop`: dead letters, straight from the store. `retry` and `drop`
//! write an audit row per job or dead letter (actor `cli`), right after the change.

use crate::store_access::{KeyUse, StoreArgs, HOW_TO_GIVE_THE_KEY};
use anyhow::Context;
use clap::Subcommand;
use std::process::ExitCode;
use store::{NewAuditEntry, Store, StoreError};

/// Who the audit log names for actions taken with this command.
const ACTOR: &str = "cli";

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

/// Before changing anything: the audit rows this command will write can be written (the chain
/// takes this key, or no key), so no retry or drop goes unaudited for a missing key.
async fn ready_to_audit(store: &dyn Store) -> anyhow::Result<()> {
    match store.audit_bind_key().await {
        Ok(_) => Ok(()),
        Err(err @ StoreError::AuditKeyMismatch { .. }) => {
            anyhow::bail!("{err}; this command writes audit rows: {HOW_TO_GIVE_THE_KEY}")
        }
        Err(err) => Err(err).context("reading the audit chain's head"),
    }
}

/// Audit rows for changes already made: a failure says what was done unaudited.
async fn audit(store: &dyn Store, rows: &[NewAuditEntry], done: &str) -> anyhow::Result<()> {
    store.audit_append_many(rows).await.with_context(|| format!("{done}, but its audit rows could not be written"))?;
    Ok(())
}

pub async fn run(action: DlqAction, target: &StoreArgs) -> anyhow::Result<ExitCode> {
    let writes = !matches!(action, DlqAction::List { .. });
    let opened = crate::store_access::open(target, if writes { KeyUse::Needed } else { KeyUse::NotNeeded }).await?;
    let store = opened.store;
    let now = jiff::Timestamp::now().as_millisecond();
    if writes {
        ready_to_audit(store.as_ref()).await?;
    }
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
                    let done = store.replay_dead_many(chunk, now).await.context("replaying dead jobs")?;
                    let rows: Vec<_> = done.iter().map(|id| NewAuditEntry::dlq_replayed(ACTOR, *id, now)).collect();
                    audit(store.as_ref(), &rows, &format!("{} job(s) were replayed", done.len())).await?;
                    replayed += done.len() as u64;
                    eprintln!("replayed {} of {total}", (n * REPLAY_CHUNK + chunk.len()).min(total));
                }
                let skipped = total as u64 - replayed;
                if skipped > 0 {
                    eprintln!("{skipped} job(s) were no longer dead (replayed or dropped meanwhile)");
                }
            } else {
                for id in ids {
                    store.replay_dead(id, now).await.with_context(|| format!("replaying job {id}"))?;
                    let row = NewAuditEntry::dlq_replayed(ACTOR, id, now);
                    audit(store.as_ref(), &[row], &format!("job {id} was replayed")).await?;
                    replayed += 1;
                }
            }
            println!("replayed {replayed} job(s); a running gateway delivers them within its poll interval");
        }
        DlqAction::Drop { ids } => {
            for id in &ids {
                store.drop_dead(*id).await.with_context(|| format!("dropping dead letter {id}"))?;
                let row = NewAuditEntry::dlq_dropped(ACTOR, *id, now);
                audit(store.as_ref(), &[row], &format!("dead letter {id} was dropped")).await?;
            }
            println!("dropped {} dead letter(s)", ids.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
