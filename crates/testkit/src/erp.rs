//! The three ERP simulators (NetSuite, Dynamics 365 / Business Central, SAP) on loopback, each on
//! its own port, for the demo and the end-to-end tests.

use connectors::dynamics::sim::DynamicsSim;
use connectors::netsuite::sim::NetSuiteSim;
use connectors::sap::sim::SapSim;
use sim::{RunningSim, SimError, SimState};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The names `--sim-endpoints` knows them by, in the order they run.
pub const SYSTEMS: [&str; 3] = ["netsuite", "dynamics", "sap"];

pub struct ErpSims {
    pub netsuite: Arc<NetSuiteSim>,
    pub dynamics: Arc<DynamicsSim>,
    pub sap: Arc<SapSim>,
    running: Vec<RunningSim>,
}

impl ErpSims {
    pub async fn start() -> Result<ErpSims, SimError> {
        let clock: Arc<dyn connect::Clock> = Arc::new(connect::SystemClock);
        let netsuite = Arc::new(NetSuiteSim::new(Default::default(), clock.clone()));
        let dynamics = Arc::new(DynamicsSim::new(clock));
        let sap = Arc::new(SapSim::new());
        let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let running = vec![
            sim::serve(netsuite.clone(), any).await?,
            sim::serve(dynamics.clone(), any).await?,
            sim::serve(sap.clone(), any).await?,
        ];
        Ok(ErpSims { netsuite, dynamics, sap, running })
    }

    fn running(&self, system: &str) -> &RunningSim {
        let i = SYSTEMS.iter().position(|s| *s == system).unwrap_or_else(|| panic!("no ERP simulator `{system}`"));
        &self.running[i]
    }

    /// Base URL of `netsuite`, `dynamics` or `sap`.
    pub fn url(&self, system: &str) -> String {
        self.running(system).url()
    }

    /// The control state of one simulator: its request journal and fault plan.
    pub fn state(&self, system: &str) -> &SimState {
        &self.running(system).state
    }

    /// Adds the three to a `--sim-endpoints` map.
    pub fn endpoints(&self, into: &mut BTreeMap<String, String>) {
        for system in SYSTEMS {
            into.insert(system.to_owned(), self.url(system));
        }
    }
}
