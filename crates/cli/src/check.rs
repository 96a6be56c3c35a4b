//! `dingbridge check`: the config validates, and (with approval policies) every role of every
//! policy has an active DingTalk member who maps to a user of the ERP they would act on.

use anyhow::Context;
use connect::{DeliveryError, Disposition};
use connectors::approval::ErpUser;
use connectors::dingtalk::directory::{Directory, DirectorySnapshot, DirectorySync};
use engine::approvals::ApprovalsConfig;
use engine::config::{self, Config, DestinationKind, ErpSource, ErpSystem, SourceKind};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Printed when the mapping cannot be proven because nobody has read the directory yet.
const NOT_SYNCED: &str = "approvals mapping not proven: no DingTalk directory synced yet; run the gateway once or use \
     `dingbridge check --fetch`";

pub async fn run(path: &Path, fetch: bool, sim_endpoints: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = match config::load_and_validate(path) {
        Ok((config, _text)) => config,
        Err(errors) => {
            eprint!("{}", errors.render());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{}: ok", path.display());
    if config.approvals.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let Some(app) = approvals_app(&config) else {
        // Validation refuses approvals without a DingTalk app; say so rather than pass silently.
        println!("approvals mapping not proven: the config names no DingTalk app to read the directory of");
        return Ok(ExitCode::FAILURE);
    };
    let sources = erp_sources(&config);
    let people = if fetch {
        let sim_endpoints = sim_endpoints.map(|p| crate::gateway::read_sim_endpoints(&p)).transpose()?;
        let config = config.clone().with_overrides(None, sim_endpoints.as_ref());
        match fetch_people(&config, &app, &sources).await? {
            Some(people) => people,
            None => return Ok(ExitCode::FAILURE),
        }
    } else {
        match stored_people(&config, &app, &sources).await? {
            Some(people) => people,
            None => {
                println!("{NOT_SYNCED}");
                return Ok(ExitCode::SUCCESS);
            }
        }
    };
    let findings =
        engine::approvals::check::directory_findings(&config.approvals, &people.directory, &people.erp_users);
    if !findings.is_empty() {
        for finding in &findings {
            eprintln!("{}:{}: approvals: {}", path.display(), finding.line, finding.message);
        }
        eprintln!("approvals: {} finding(s)", findings.len());
        return Ok(ExitCode::FAILURE);
    }
    println!("{}", summary(&config.approvals));
    Ok(ExitCode::SUCCESS)
}

fn summary(approvals: &ApprovalsConfig) -> String {
    format!(
        "approvals: {} policies, {} roles, every role has an active mapped member",
        approvals.policies.len(),
        approvals.roles.len()
    )
}

/// The directory and the ERP users the mapping is proven against.
struct People {
    directory: DirectorySnapshot,
    /// By ERP source name; a source whose users are unknown (SAP, or never read) is absent.
    erp_users: BTreeMap<String, Vec<ErpUser>>,
}

/// The DingTalk app whose directory says who is who: the gateway uses the app of the policies'
/// delivery destination, else the app of the config's DingTalk source.
fn approvals_app(config: &Config) -> Option<String> {
    let delivery_app = config.approvals.policies.iter().find_map(|policy| {
        let destination = match &policy.delivery {
            engine::approvals::Delivery::Card { destination, .. }
            | engine::approvals::Delivery::Oa { destination, .. } => destination,
        };
        match config.destinations.get(destination).map(|d| &d.kind) {
            Some(DestinationKind::DingtalkApp(app)) => Some(app.app.clone()),
            _ => None,
        }
    });
    delivery_app.or_else(|| {
        config.sources.values().find_map(|s| match &s.kind {
            SourceKind::Dingtalk { app, .. } => Some(app.clone()),
            _ => None,
        })
    })
}

/// The ERP sources the policies govern, by name.
fn erp_sources(config: &Config) -> BTreeMap<String, ErpSource> {
    let mut out = BTreeMap::new();
    for policy in &config.approvals.policies {
        for name in &policy.sources {
            if let Some(SourceKind::Erp(erp)) = config.sources.get(name).map(|s| &s.kind) {
                out.insert(name.clone(), erp.clone());
            }
        }
    }
    out
}

/// What the gateway last stored; `None` when no directory was synced (or there is no store yet).
async fn stored_people(
    config: &Config,
    app: &str,
    sources: &BTreeMap<String, ErpSource>,
) -> anyhow::Result<Option<People>> {
    let url = &config.store.url;
    if let Some(file) = sqlite_file(url) {
        // Opening would create an empty store: `check` must not leave files behind.
        if !Path::new(&file).exists() {
            return Ok(None);
        }
    }
    let store = store::open(url)
        .await
        .with_context(|| format!("opening the store {}", crate::gateway::redact_store_url(url)))?;
    let Some(directory) = server::directory::load(store.as_ref(), app).await.map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let mut erp_users = BTreeMap::new();
    for name in sources.keys() {
        let cursor = server::approvals::users_cursor(name);
        if let Some(text) = store.get_cursor(&cursor).await.with_context(|| format!("reading {cursor}"))? {
            let users: Vec<ErpUser> =
                serde_json::from_str(&text).with_context(|| format!("the stored user list {cursor} is not valid"))?;
            erp_users.insert(name.clone(), users);
        }
    }
    Ok(Some(People { directory, erp_users }))
}

/// The file of a `sqlite:` store URL.
fn sqlite_file(url: &str) -> Option<String> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    Some(rest.split('?').next().unwrap_or(rest).to_owned())
}

/// Read the directory and the ERP users live; `None` when the clients cannot be built (the
/// diagnostics are printed).
async fn fetch_people(
    config: &Config,
    app: &str,
    sources: &BTreeMap<String, ErpSource>,
) -> anyhow::Result<Option<People>> {
    let runtime = match config.build(Arc::new(connect::SystemClock)) {
        Ok(runtime) => runtime,
        Err(errors) => {
            eprint!("{}", errors.render());
            return Ok(None);
        }
    };
    let api = runtime
        .dingtalk_apps
        .get(app)
        .with_context(|| format!("the DingTalk app `{app}` has no client (is it configured?)"))?;
    let directory = Directory::new(api.clone());
    let directory =
        patiently(&format!("reading the directory of DingTalk app `{app}`"), || DirectorySync::full(&directory))
            .await?;
    let mut erp_users = BTreeMap::new();
    for (name, erp) in sources {
        let users = match erp.system {
            ErpSystem::Netsuite => {
                let client = runtime
                    .netsuite_accounts
                    .get(&erp.connection)
                    .with_context(|| format!("source `{name}`: no NetSuite account `{}`", erp.connection))?;
                patiently(&format!("reading the users of NetSuite account `{}`", erp.connection), || {
                    connectors::netsuite::approval::users(client)
                })
                .await?
            }
            ErpSystem::Dynamics => {
                let org = runtime
                    .dynamics_orgs
                    .get(&erp.connection)
                    .with_context(|| format!("source `{name}`: no Dynamics org `{}`", erp.connection))?;
                let (Some(bc), Some(company)) = (&org.bc, &org.bc_company) else {
                    anyhow::bail!(
                        "source `{name}`: Dynamics org `{}` has no Business Central company to read users from",
                        erp.connection
                    );
                };
                patiently(&format!("reading the users of Business Central org `{}`", erp.connection), || {
                    connectors::dynamics::approval::users(bc, company)
                })
                .await?
            }
            // SAP exposes no user list to dingbridge; its identity table is checked without one.
            ErpSystem::Sap => continue,
        };
        erp_users.insert(name.clone(), users);
    }
    Ok(Some(People { directory, erp_users }))
}

/// Tries per live read before `check` gives up.
const ATTEMPTS: u32 = 5;
/// Longest wait between tries, whatever the vendor asks for.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// A live read, retried when the vendor throttles or fails transiently (the directory walk makes
/// many calls, and DingTalk's per-second limits are easy to hit when `check` runs right after
/// the gateway or another `check`), as the gateway's own sync would on its next round.
async fn patiently<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DeliveryError>>,
{
    let mut attempt = 1;
    loop {
        let err = match call().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let wait = match err.disposition() {
            Disposition::RetryAfter(after) => after.min(MAX_WAIT),
            Disposition::Retry => Duration::from_secs(1),
            Disposition::Auth | Disposition::Permanent => return Err(err).context(what.to_owned()),
        };
        if attempt >= ATTEMPTS {
            return Err(err).with_context(|| format!("{what} (gave up after {ATTEMPTS} tries)"));
        }
        eprintln!("{what}: {err}; trying again in {wait:?}");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::sqlite_file;

    #[test]
    fn sqlite_file_of_urls() {
        assert_eq!(sqlite_file("sqlite:///var/lib/db.sqlite").as_deref(), Some("/var/lib/db.sqlite"));
        assert_eq!(sqlite_file("sqlite:data/x.db?mode=rwc").as_deref(), Some("data/x.db"));
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
