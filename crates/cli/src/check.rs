//! `dingbridge check`: the config validates, and (with approval policies) every role of every
//! policy has an active DingTalk member who maps to a user of the ERP they would act on.

use anyhow::Context;
use connect::{DeliveryError, Disposition};
use connectors::approval::ErpUser;
use connectors::dingtalk::directory::{Directory, DirectorySnapshot, DirectorySync};
use engine::approvals::ApprovalsConfig;
use engine::config::{self, Config, ErpSource, SourceKind};
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
    if config.audit.key.is_none() {
        // Approval policies make the key required (DB0115); without them it is advice.
        eprintln!(
            "{}: warning: no [audit] key: audit rows (operator actions) are hashed without a key, so whoever \
             can write to the store could rewrite them undetected; set `[audit] key = {{ env = \"DINGBRIDGE_AUDIT_KEY\" }}` \
             (at least 32 bytes, e.g. `openssl rand -hex 32`)",
            path.display()
        );
    }
    if config.approvals.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for policy in &config.approvals.policies {
        match engine::approvals::card_callback(&config, policy) {
            Some(engine::approvals::CardCallbackMode::Http) => eprintln!(
                "{}:{}: warning: approvals: policy `{}` takes decisions over HTTP card callbacks, which DingTalk does \
                 not sign: only the source's card_callback_token and the recipient check stand between a forger and \
                 a decision; prefer a Stream-mode source",
                path.display(),
                policy.line,
                policy.name
            ),
            Some(engine::approvals::CardCallbackMode::Stream) => {}
            None => eprintln!(
                "{}:{}: warning: approvals: no click on policy `{}`'s cards can reach the gateway: its card app has no \
                 Stream-mode DingTalk source{}",
                path.display(),
                policy.line,
                policy.name,
                if policy.allow_http_card_callback { " and no HTTP source with a card_callback_token" } else {
                    " (or set allow_http_card_callback = true with an HTTP source that has a card_callback_token)"
                }
            ),
        }
    }
    let Some(app) = engine::approvals::directory_app(&config).map(str::to_owned) else {
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

/// The ERP sources the policies govern, by name.
fn erp_sources(config: &Config) -> BTreeMap<String, ErpSource> {
    let mut out = BTreeMap::new();
    for name in config.approvals.governed_sources() {
        if let Some(SourceKind::Erp(erp)) = config.sources.get(name).map(|s| &s.kind) {
            out.insert(name.to_owned(), erp.clone());
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
        let users = server::approvals::load_users(store.as_ref(), name)
            .await
            .map_err(|e| anyhow::anyhow!("reading the stored user list of `{name}`: {e}"))?;
        if let Some(users) = users {
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
        let connector =
            runtime.connections.erp_connectors.get(&(erp.system, erp.connection.clone())).with_context(|| {
                format!("source `{name}`: no {} connection `{}`", erp.system.as_str(), erp.connection)
            })?;
        let what = format!("reading the users of source `{name}` ({} `{}`)", erp.system.display_name(), erp.connection);
        let users = patiently(&what, || connector.write_back.users()).await?;
        erp_users.insert(name.clone(), users);
    }
    Ok(Some(People { directory, erp_users }))
}

/// Waits between tries of a live read (four retries), and the longest wait whatever the vendor
/// asks for.
const RETRY_STEP: Duration = Duration::from_secs(1);
const RETRIES: usize = 4;
const MAX_WAIT: Duration = Duration::from_secs(10);

/// A live read, retried on the shared schedule when the vendor throttles or fails transiently
/// (the directory walk makes many calls, and DingTalk's per-second limits are easy to hit when
/// `check` runs right after the gateway or another `check`), as the gateway's own sync would on
/// its next round.
async fn patiently<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DeliveryError>>,
{
    let schedule = connect::RetrySchedule { steps: vec![RETRY_STEP; RETRIES], jitter: 0.2 };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let err = match call().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        let retry_after = match err.disposition() {
            Disposition::RetryAfter(after) => Some(after.min(MAX_WAIT)),
            Disposition::Retry => None,
            Disposition::Auth | Disposition::Permanent => return Err(err).context(what.to_owned()),
        };
        let Some(wait) = schedule.next_delay(attempts, retry_after) else {
            return Err(err).with_context(|| format!("{what} (gave up after {attempts} tries)"));
        };
        eprintln!("{what}: {err}; trying again in {wait:?}");
        tokio::time::sleep(wait).await;
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
