//! Assembling a running gateway: config -> store -> intake -> workers -> HTTP.

use crate::directory::DirectoryKeeper;
use crate::pipeline::WebhookPipeline;
use crate::reads::RecordSource;
use crate::supervisor::{OnFailure, Supervisor};
use connect::{Clock, SystemClock};
use connectors::dingtalk::stream::{StreamClient, StreamHandle};
use connectors::push::{PushCredentials, PushSetup};
use connectors::reader::{CrmReader, ErpConnector};
use connectors::registry::System;
use engine::config::{Config, CrmIntake, DingtalkSourceRuntime, ErpSecrets, ErpSystem, SourceKind};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Intake commits at most this many events per transaction.
const GROUP_COMMIT_MAX_BATCH: usize = 512;
/// Events waiting for a commit before intake sheds load with 503.
const INTAKE_QUEUE_CAPACITY: usize = 16_384;

/// What the command line may override in a config.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub store_url: Option<String>,
    pub sim_endpoints: Option<BTreeMap<String, String>>,
    pub listen: Option<String>,
    /// Overrides `[server] admin_listen` (tests use `127.0.0.1:0`).
    pub admin_listen: Option<String>,
    /// The clock the gateway reads (tests inject a fake one); the system clock by default.
    pub clock: Option<Arc<dyn Clock>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("opening the store {url}: {source}")]
    Store { url: String, source: store::StoreError },
    /// The store's audit chain is written with another key than `[audit] key` (or with a key
    /// while none is configured, or without one while one is).
    #[error("the audit chain of the store {url} cannot be written with this config: {source}")]
    AuditKey { url: String, source: store::StoreError },
    #[error("binding the gateway to {listen}: {source}")]
    Bind { listen: String, source: std::io::Error },
}

/// A running gateway: HTTP server, group committer and delivery workers.
pub struct Gateway {
    pub addr: SocketAddr,
    /// Where `/metrics` and the admin API answer.
    pub admin_addr: SocketAddr,
    pub state: crate::AppState,
    pub store: Arc<dyn store::Store>,
    /// Stream connections of the DingTalk sources in Stream mode, by source name.
    pub streams: Vec<(String, StreamHandle)>,
    /// Approvals with authority, when the config has approval policies.
    pub approvals: Option<Arc<crate::approvals::Approvals>>,
    /// The background loops (pollers, syncs, timers), stopped first at shutdown; each singleton
    /// one runs only on the instance holding its lease (see [`crate::leader`]).
    tasks: Supervisor,
    workers_cancel: CancellationToken,
    workers: TaskTracker,
    /// The HTTP listeners, stopped last.
    listeners: Supervisor,
}

impl Gateway {
    pub async fn start(config: Config, overrides: Overrides) -> Result<Gateway, StartError> {
        let clock: Arc<dyn Clock> = overrides.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let config = config.with_overrides(overrides.store_url.clone(), overrides.sim_endpoints.as_ref());
        let runtime = config.build(clock.clone()).map_err(|errors| StartError::Config(errors.render()))?;
        let listen = overrides.listen.clone().unwrap_or_else(|| config.server.listen.to_string());
        let store_url = config.store.url.clone();

        let store = store::open_with_audit_key(&store_url, runtime.audit_key.clone())
            .await
            .map_err(|source| StartError::Store { url: redact_store_url(&store_url), source })?;
        // Bound now, before anything is audited, so a tool run without the key cannot start the
        // chain unkeyed; a chain of another key (or none) stops the start here, not at the first
        // decision.
        store.audit_bind_key().await.map_err(|source| match source {
            store::StoreError::AuditKeyMismatch { .. } => {
                StartError::AuditKey { url: redact_store_url(&store_url), source }
            }
            other => StartError::Store { url: redact_store_url(&store_url), source: other },
        })?;
        if runtime.audit_key.is_none() {
            tracing::warn!(
                "No [audit] key: audit rows are hashed without a key, so whoever can write to the store could rewrite them undetected."
            );
        }
        // Refresh tokens the vendors rotate are shared through the store from here on (before any
        // connector fetches a token).
        engine::token_vault::attach_token_vault(
            &runtime.connections.token_keeper,
            runtime.token_key.clone(),
            store.clone(),
            clock.clone(),
            config.connections.rotating_credentials(),
        );
        // Bounded by count and by bytes: events wait for their commit in memory.
        let committer = store::GroupCommitter::spawn_with_byte_budget(
            store.clone(),
            GROUP_COMMIT_MAX_BATCH,
            INTAKE_QUEUE_CAPACITY,
            usize::try_from(config.server.max_intake_bytes).unwrap_or(usize::MAX),
        );
        let metrics = crate::metrics::Metrics::install();

        let mut dingtalk_callbacks = BTreeMap::new();
        let mut stream_sources = Vec::new();
        for (name, inbound) in runtime.dingtalk_sources {
            match inbound {
                DingtalkSourceRuntime::Http { crypto, card_token } => {
                    let receiver = crate::sources::CallbackReceiver {
                        crypto,
                        replays: Default::default(),
                        card_token: card_token.map(|t| t.secret_string().clone()),
                    };
                    dingtalk_callbacks.insert(name, Arc::new(receiver));
                }
                DingtalkSourceRuntime::Stream(settings) => stream_sources.push((name, *settings)),
            }
        }
        let pipeline = Arc::new(WebhookPipeline {
            verifiers: runtime.sources,
            flows: Arc::new(runtime.flows),
            approvals: Arc::new(config.approvals.clone()),
            decision_sources: config
                .sources
                .iter()
                .filter(|(_, source)| matches!(source.kind, SourceKind::Dingtalk { .. }))
                .map(|(name, _)| name.clone())
                .collect(),
        });

        // Bound before the CRM sources are built: a Zoho channel's default notify URL names it.
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|source| StartError::Bind { listen: listen.clone(), source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { listen: listen.clone(), source })?;
        let admin_listen = overrides.admin_listen.clone().unwrap_or_else(|| config.server.admin_listen.to_string());
        let admin_listener = tokio::net::TcpListener::bind(&admin_listen)
            .await
            .map_err(|source| StartError::Bind { listen: admin_listen.clone(), source })?;
        let admin_addr =
            admin_listener.local_addr().map_err(|source| StartError::Bind { listen: admin_listen.clone(), source })?;
        let crm_sources = crm_sources(&config, &runtime.connections.crm_readers, &runtime.crm_push_secrets, addr)?;
        let erp_sources = erp_sources(&config, &runtime.connections.erp_connectors, &runtime.erp_secrets)?;
        // This instance in the store: the owner of its job leases and singleton task leases.
        let owner = format!("{}-{}-{}", hostname(), std::process::id(), uuid::Uuid::new_v4().simple());
        let tasks = Supervisor::new(metrics.clone()).with_singletons(crate::leader::Singletons::new(
            store.clone(),
            clock.clone(),
            &owner,
        ));

        // One directory keeper per app that keeps its directory, shared by the app's sources.
        let mut keepers = BTreeMap::new();
        for (name, app) in &config.dingtalk_apps {
            if let (true, Some(api)) = (app.sync_directory, runtime.dingtalk_apps.get(name)) {
                let keeper = DirectoryKeeper::new(name, api.clone(), store.clone(), clock.clone());
                keepers.insert(name.clone(), keeper);
            }
        }
        let approvals = approvals_runtime(&config, &erp_sources, &keepers)?;
        let directories = config
            .sources
            .iter()
            .filter_map(|(source, cfg)| match &cfg.kind {
                engine::config::SourceKind::Dingtalk { app, .. } => {
                    keepers.get(app).map(|keeper| (source.clone(), keeper.clone()))
                }
                _ => None,
            })
            .collect();
        // The workers' bells exist before the workers: the state (and the sinks that commit the
        // records they read through it) can ring them from the start.
        let wakeups = engine::Wakeups::default();
        let nudge: Arc<dyn Fn() + Send + Sync> = {
            let wakeups = wakeups.clone();
            Arc::new(move || wakeups.nudge())
        };
        let state = crate::AppState {
            intake: pipeline,
            committer,
            store: store.clone(),
            nudge,
            clock: clock.clone(),
            accepting: Arc::new(AtomicBool::new(true)),
            max_body_bytes: usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX),
            metrics,
            dingtalk_callbacks: Arc::new(dingtalk_callbacks),
            admin_token: runtime.admin_token.map(|t| Arc::new(t.secret_string().clone())),
            directories: Arc::new(directories),
            crm: Arc::new(crm_sources),
            erp: Arc::new(erp_sources),
            tasks: tasks.clone(),
        };

        let mut sinks = runtime.sinks.clone();
        for source in state.crm.values() {
            let sink = crate::crm::RefreshSink { source: source.clone(), state: state.clone() };
            sinks.insert(crate::sources::refresh_destination(&source.name), Arc::new(sink));
        }
        for source in state.erp.values() {
            let sink = crate::erp::ErpReadSink { source: source.clone(), state: state.clone() };
            sinks.insert(crate::sources::read_destination(&source.name), Arc::new(sink));
        }
        if let Some(approvals) = &approvals {
            sinks.insert(
                engine::approvals::machine::DESTINATION.to_owned(),
                Arc::new(crate::approvals::ApprovalSink { approvals: approvals.clone(), state: state.clone() }),
            );
            for source in approvals.sources.values() {
                let sink = crate::approvals::WriteBackSink {
                    source: source.clone(),
                    state: state.clone(),
                    max_attempts: config.delivery.schedule.max_attempts(),
                };
                sinks.insert(crate::approvals::write_back_destination(&source.name), Arc::new(sink));
            }
        }

        let workers_cancel = CancellationToken::new();
        let workers_tracker = TaskTracker::new();
        let settings = engine::WorkerSettings::from_config(&config, owner);
        engine::DeliveryWorkers::spawn_with_wakeups(
            store.clone(),
            sinks,
            settings,
            clock.clone(),
            workers_cancel.clone(),
            &workers_tracker,
            wakeups,
        );

        spawn_background(&state, approvals.as_ref(), &keepers, config.store.retention);
        // Stream clients start after the store and the intake exist: a frame is ACKed only after
        // its event is committed.
        let streams_cancel = CancellationToken::new();
        let streams = stream_sources
            .into_iter()
            .map(|(source, settings)| {
                let handler = Arc::new(crate::dingtalk::StreamIntake { state: state.clone(), source: source.clone() });
                tracing::info!(source = %source, "Connecting to DingTalk in Stream mode.");
                (source, StreamClient::spawn(settings, handler, streams_cancel.clone()))
            })
            .collect();
        let listeners = tasks.sibling();
        let limits = crate::limits::RequestLimits::from_config(&config.server);
        let public = crate::limits::limit(crate::router(state.clone()), &limits);
        serve(&listeners, "http:public", listener, public, limits.header_read_timeout);
        serve(&listeners, "http:admin", admin_listener, crate::admin_router(state.clone()), limits.header_read_timeout);
        tracing::info!(listen = %addr, admin_listen = %admin_addr, "Listening.");
        Ok(Gateway {
            addr,
            admin_addr,
            state,
            store,
            streams,
            approvals,
            tasks,
            workers_cancel,
            workers: workers_tracker,
            listeners,
        })
    }

    /// Returns when a task the gateway cannot run without (a listener) has failed; `dingbridge
    /// run` then stops and exits non-zero, for the process manager to restart it.
    pub async fn failed(&self) {
        self.tasks.failed().await;
    }

    /// Graceful stop: refuse new webhooks (503), stop the background tasks, let in-flight
    /// deliveries finish and release the rest, then close the HTTP server.
    pub async fn shutdown(self) {
        self.state.stop_accepting();
        // Frames already being handled finish (and are ACKed); nothing new is read.
        for (_, stream) in self.streams {
            stream.shutdown().await;
        }
        if !self.tasks.stop(Duration::from_secs(5)).await {
            tracing::warn!("Background tasks did not stop within 5 s.");
        }
        self.workers_cancel.cancel();
        self.workers.close();
        if tokio::time::timeout(Duration::from_secs(9), self.workers.wait()).await.is_err() {
            tracing::warn!("Delivery workers did not stop within 9 s; their leases will expire and be retaken.");
        }
        let _ = self.listeners.stop(Duration::from_secs(1)).await;
        // Checkpoints the SQLite WAL / closes the Postgres pool; nothing is lost if it is skipped.
        self.store.close().await;
    }
}

/// The gateway's background loops, each under the supervisor with its name: restarted with
/// backoff if it fails, since each works from what the store holds (cursors, the directory copy,
/// pending approvals) and a restart repeats at most one round. Each is a singleton: of several
/// instances sharing a store, the one holding the task's lease runs it.
fn spawn_background(
    state: &crate::AppState,
    approvals: Option<&Arc<crate::approvals::Approvals>>,
    keepers: &BTreeMap<String, Arc<DirectoryKeeper>>,
    retention: Duration,
) {
    let tasks = &state.tasks;
    let (store, clock) = (state.store.clone(), state.clock.clone());
    tasks.spawn_singleton("retention", OnFailure::Restart, move |cancel| {
        crate::retention::sweep_loop(store.clone(), clock.clone(), retention, cancel)
    });
    for (app, keeper) in keepers {
        let keeper = keeper.clone();
        tasks.spawn_singleton(format!("directory-sync:{app}"), OnFailure::Restart, move |cancel| {
            keeper.clone().sync_loop(cancel)
        });
    }
    let polled = state.crm.values().map(|s| s.clone() as Arc<dyn RecordSource>);
    let polled = polled.chain(state.erp.values().map(|s| s.clone() as Arc<dyn RecordSource>));
    for source in polled.filter(|s| s.poll_interval().is_some()) {
        let state = state.clone();
        tasks.spawn_singleton(format!("poll:{}", source.name()), OnFailure::Restart, move |cancel| {
            crate::poll::poll_loop(state.clone(), source.clone(), cancel)
        });
    }
    for (name, source) in state.crm.iter() {
        if let Some(subscription) = source.subscription.clone() {
            tasks.spawn_singleton(format!("push-subscription:{name}"), OnFailure::Restart, move |cancel| {
                let subscription = subscription.clone();
                async move {
                    subscription.keep_open(cancel).await;
                    Ok(())
                }
            });
        }
    }
    for (name, source) in state.erp.iter() {
        if source.drop_folder.is_some() {
            let (state, source) = (state.clone(), source.clone());
            tasks.spawn_singleton(format!("drop-folder:{name}"), OnFailure::Restart, move |cancel| {
                crate::erp::drop_folder_loop(state.clone(), source.clone(), cancel)
            });
        }
    }
    if let Some(approvals) = approvals {
        crate::approvals::spawn_user_sync(state, approvals);
        let (state, approvals) = (state.clone(), approvals.clone());
        tasks.spawn_singleton("approval-timer", OnFailure::Restart, move |cancel| {
            crate::approvals::timer_loop(state.clone(), approvals.clone(), cancel)
        });
    }
}

/// Serves `app` on `listener` as task `name` until the listeners stop; the gateway cannot work
/// without it, so its failure stops the gateway.
fn serve(
    listeners: &Supervisor,
    name: &'static str,
    listener: tokio::net::TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
) {
    let stop = listeners.stop_token();
    listeners.spawn_once(name, OnFailure::StopGateway, crate::limits::serve(listener, app, header_read_timeout, stop));
}

/// The CRM sources of a config over the readers its build made: each source's push intake and
/// subscription with its own secrets, and its poll interval.
fn crm_sources(
    config: &Config,
    readers: &BTreeMap<(System, String), Arc<dyn CrmReader>>,
    secrets: &BTreeMap<String, engine::config::Secret>,
    addr: SocketAddr,
) -> Result<crate::sources::CrmSources, StartError> {
    let mut out = BTreeMap::new();
    for (name, source) in &config.sources {
        let Some((system, crm)) = source.kind.crm() else { continue };
        let reader = readers.get(&(system, crm.org.clone())).ok_or_else(|| {
            StartError::Config(format!("no connector was built for {} org `{}`", system.as_str(), crm.org))
        })?;
        let (poll, notify_url) = match &crm.intake {
            CrmIntake::Poll { interval } => (Some(*interval), None),
            CrmIntake::Notifications { notify_url, .. } => (None, notify_url.clone()),
            CrmIntake::OutboundMessage { .. } => (None, None),
        };
        // Where the vendor is told to push, unless the config says (behind a proxy): the
        // gateway's own first push route of the system.
        let own_url = || {
            let path = system.push_paths().first().copied().unwrap_or_default();
            format!("http://{addr}{}", path.replace("{source}", name))
        };
        let setup = PushSetup {
            source: name,
            objects: &crm.objects,
            credentials: PushCredentials { shared_secret: secrets.get(name).cloned(), basic_login: None },
            notify_url: notify_url.unwrap_or_else(own_url),
        };
        let refused = |e: connectors::push::PushSetupError| StartError::Config(e.to_string());
        // A polling source opens no push door and keeps no subscription.
        let (push, subscription) = match poll {
            Some(_) => (Arc::new(connectors::push::NoPushes) as Arc<dyn connectors::push::PushIntake>, None),
            None => (reader.push_intake(&setup).map_err(refused)?, reader.subscription(&setup).map_err(refused)?),
        };
        let built = crate::sources::CrmSource {
            name: name.clone(),
            push,
            subscription,
            reader: reader.clone(),
            poll,
            objects: crm.objects.clone(),
            coalesce: crm.coalesce,
        };
        out.insert(name.clone(), Arc::new(built));
    }
    Ok(out)
}

/// The ERP sources of a config over the connectors its build made: one reader and write-back per
/// connection, shared by its sources, and each source's push intake with its own secrets.
fn erp_sources(
    config: &Config,
    connectors: &BTreeMap<(ErpSystem, String), ErpConnector>,
    secrets: &BTreeMap<String, ErpSecrets>,
) -> Result<crate::sources::ErpSources, StartError> {
    use connectors::push::PushCredentials;
    let mut out = BTreeMap::new();
    for (name, source) in &config.sources {
        let SourceKind::Erp(erp) = &source.kind else { continue };
        let connector = connectors.get(&(erp.system, erp.connection.clone())).ok_or_else(|| {
            StartError::Config(format!("no connector was built for {} `{}`", erp.system.as_str(), erp.connection))
        })?;
        let secrets = secrets.get(name);
        let credentials = PushCredentials {
            shared_secret: secrets.and_then(|s| s.webhook_secret.clone()),
            basic_login: erp.idoc_user.clone().zip(secrets.and_then(|s| s.idoc_password.clone())),
        };
        let built = crate::sources::ErpSource {
            name: name.clone(),
            system: erp.system,
            push: connector.reader.push_intake(credentials),
            reader: connector.reader.clone(),
            write_back: connector.write_back.clone(),
            objects: erp.objects.clone(),
            coalesce: erp.coalesce,
            poll: erp.poll,
            stale_after: erp.stale_after,
            drop_folder: erp.idoc_folder.clone(),
            max_file_bytes: erp.max_file_bytes,
        };
        out.insert(name.clone(), Arc::new(built));
    }
    Ok(out)
}

/// The approvals runtime, when the config has approval policies: the ERP sources they govern and
/// the DingTalk app whose directory says who is who.
fn approvals_runtime(
    config: &Config,
    erp_sources: &crate::sources::ErpSources,
    keepers: &BTreeMap<String, Arc<DirectoryKeeper>>,
) -> Result<Option<Arc<crate::approvals::Approvals>>, StartError> {
    let approvals = &config.approvals;
    if approvals.is_empty() {
        return Ok(None);
    }
    let mut sources = BTreeMap::new();
    for name in approvals.governed_sources() {
        // Validation only lets ERP sources into a policy.
        let source = erp_sources
            .get(name)
            .ok_or_else(|| StartError::Config(format!("approvals: source `{name}` is not an ERP source")))?;
        sources.insert(name.to_owned(), source.clone());
    }
    let app = engine::approvals::directory_app(config)
        .ok_or_else(|| StartError::Config("approvals: no DingTalk app to read the directory of".into()))?
        .to_owned();
    Ok(Some(Arc::new(crate::approvals::Approvals {
        config: Arc::new(approvals.clone()),
        sources,
        keeper: keepers.get(&app).cloned(),
        app,
        decision_sources: engine::approvals::decision_sources(config),
        card_callbacks: approvals
            .policies
            .iter()
            .filter_map(|p| engine::approvals::card_callback(config, p).map(|mode| (p.name.clone(), mode)))
            .collect(),
    })))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "gateway".into())
}

/// Store URLs may carry a password; show scheme and host only.
pub fn redact_store_url(url: &str) -> String {
    url::Url::parse(url).map(|u| connect::http::redact_url(&u)).unwrap_or_else(|_| url.to_string())
}
