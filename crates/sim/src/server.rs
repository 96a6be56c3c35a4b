//! Serving simulators on loopback ports.

use crate::control::app;
use crate::error::SimError;
use crate::state::SimState;
use crate::Simulator;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A simulator being served. Dropping it leaves the server running until the runtime ends;
/// call [`RunningSim::shutdown`] to stop it.
#[derive(Debug)]
pub struct RunningSim {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// The chassis state (journal, faults), for in-process tests.
    pub state: SimState,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningSim {
    /// `http://IP:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, ends stalled (dropped) requests and waits for in-flight ones.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        self.state.signal_shutdown();
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only if the server already stopped, which is fine.
            let _already_stopped = stop.send(());
        }
        let name = self.name;
        match (&mut self.task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(SimError::Serve { simulator: name, detail: err.to_string() }),
            Err(err) => Err(SimError::Serve { simulator: name, detail: err.to_string() }),
        }
    }
}

/// Binds `bind` (use port 0 for any free port, e.g. `127.0.0.1:0`) and serves the simulator with
/// the chassis (journal, faults, `/_sim/` control API).
pub async fn serve(sim: Arc<dyn Simulator>, bind: SocketAddr) -> Result<RunningSim, SimError> {
    let name = sim.name();
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|source| SimError::Bind {
        simulator: name,
        addr: bind,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind { simulator: name, addr: bind, source })?;
    let state = SimState::new();
    sim.attach(state.clone());
    let router = app(sim, state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                // Only an explicit stop ends the server; a dropped handle (sender gone) does not.
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
            .await
    });
    tracing::info!(simulator = name, %addr, "Simulator listening.");
    Ok(RunningSim { name, addr, state, stop: Some(stop), task })
}

/// Several simulators, each on its own port.
#[derive(Debug)]
pub struct SimFleet {
    pub servers: Vec<RunningSim>,
}

impl SimFleet {
    /// `{"dingtalk": "http://127.0.0.1:PORT", ...}` — what `dingbridge sim` prints first.
    pub fn urls(&self) -> BTreeMap<String, String> {
        self.servers.iter().map(|s| (s.name.to_owned(), s.url())).collect()
    }

    /// Stops every simulator; reports the first failure after trying all.
    pub async fn shutdown(self) -> Result<(), SimError> {
        let mut first = Ok(());
        for server in self.servers {
            let result = server.shutdown().await;
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

/// Serves every simulator on its own free port of `bind_ip` (e.g. `127.0.0.1`).
pub async fn serve_all(sims: Vec<Arc<dyn Simulator>>, bind_ip: IpAddr) -> Result<SimFleet, SimError> {
    let mut servers = Vec::with_capacity(sims.len());
    for sim in sims {
        match serve(sim, SocketAddr::new(bind_ip, 0)).await {
            Ok(server) => servers.push(server),
            Err(err) => {
                // Best effort: stop the ones already started before reporting.
                let _first_failure = SimFleet { servers }.shutdown().await;
                return Err(err);
            }
        }
    }
    Ok(SimFleet { servers })
}
