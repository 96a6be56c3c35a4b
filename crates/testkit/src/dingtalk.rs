//! An in-process DingTalk simulator for end-to-end tests, `demo` and `bench`: served on a loopback
//! port, with direct access to what it recorded and to its fault plan.

use connect::SystemClock;
use connectors::dingtalk::sim::{DingTalkSim, RecordedMessage, SimRobot};
use sim::{FaultSpec, RunningSim, SimError, SimState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Credentials of one simulated robot.
#[derive(Debug, Clone)]
pub struct RobotCredentials {
    pub access_token: String,
    pub secret: String,
}

/// One message as the simulator accepted it.
#[derive(Debug, Clone)]
pub struct SimMessage {
    /// The simulator's acceptance order (global across robots, from 0).
    pub seq: u64,
    pub body: serde_json::Value,
    /// Acceptance time by the simulator's clock.
    pub at: jiff::Timestamp,
}

pub struct DingTalkHarness {
    sim: Arc<DingTalkSim>,
    running: RunningSim,
}

impl DingTalkHarness {
    /// Start the simulator, seeded with its default robots, on 127.0.0.1 (a free port).
    pub async fn start() -> Result<Self, SimError> {
        let sim = Arc::new(DingTalkSim::new(Arc::new(SystemClock)));
        let bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let running = sim::serve(sim.clone(), bind).await?;
        Ok(Self { sim, running })
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    /// The `--sim-endpoints` map for a gateway pointed at this simulator.
    pub fn endpoint_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("dingtalk".to_string(), self.url())])
    }

    /// Add a robot with no rate limit (the benchmarking switch), signing enabled.
    pub async fn add_unlimited_robot(&self, name: &str) -> Result<RobotCredentials, SimError> {
        self.add_robot(name, 0).await
    }

    /// Add a robot accepting `per_minute` messages per rolling 60 s (0 = unlimited), signing
    /// enabled; past the limit it answers 130101 and blocks for DingTalk's 10 minutes.
    pub async fn add_robot(&self, name: &str, per_minute: u32) -> Result<RobotCredentials, SimError> {
        let token = hex_of(name, 32);
        let secret = format!("SEC{}", hex_of(&format!("{name}-secret"), 32));
        let mut robot = SimRobot::new(name, &token, Some(&secret));
        robot.per_minute = per_minute;
        self.sim.upsert_robot(robot);
        Ok(RobotCredentials { access_token: token, secret })
    }

    /// Credentials of a robot the simulator knows (seeded ones: `ops`, `sales-hk`, `finance`).
    pub fn robot(&self, name: &str) -> Option<RobotCredentials> {
        let robot = self.sim.robot(name)?;
        Some(RobotCredentials { access_token: robot.access_token, secret: robot.secret.unwrap_or_default() })
    }

    pub fn messages(&self, robot: &str) -> Vec<SimMessage> {
        self.sim.messages(robot).into_iter().map(to_sim_message).collect()
    }

    /// Messages accepted by `robot` after sequence number `after` (all when `None`), oldest
    /// first: for tests that collect more messages than the simulator keeps.
    pub fn messages_after(&self, robot: &str, after: Option<u64>) -> Vec<SimMessage> {
        self.sim.messages_after(robot, after).into_iter().map(to_sim_message).collect()
    }

    pub fn message_count(&self, robot: &str) -> u64 {
        self.sim.message_count(robot) as u64
    }

    /// Requests the simulator received since start, answered, faulted or dropped alike.
    pub fn request_count(&self) -> u64 {
        self.running.state.request_count()
    }

    pub fn sim(&self) -> &Arc<DingTalkSim> {
        &self.sim
    }

    /// The simulator's request journal and fault plan: every request as it arrived on the wire.
    pub fn journal(&self) -> &SimState {
        &self.running.state
    }

    /// Delay every vendor request by `latency` until cleared.
    pub async fn set_latency(&self, latency: Duration) -> Result<(), SimError> {
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.running.state.set_faults(FaultSpec { latency_ms, ..FaultSpec::default() })
    }

    pub async fn set_faults(&self, spec: FaultSpec) -> Result<(), SimError> {
        self.running.state.set_faults(spec)
    }

    pub async fn clear_faults(&self) -> Result<(), SimError> {
        self.running.state.clear_faults();
        Ok(())
    }

    pub async fn shutdown(self) {
        if let Err(err) = self.running.shutdown().await {
            tracing::warn!("DingTalk simulator did not stop cleanly: {err}");
        }
    }
}

fn to_sim_message(message: RecordedMessage) -> SimMessage {
    let at = jiff::Timestamp::from_millisecond(message.time_ms)
        .ok()
        .or_else(|| message.time.parse().ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    SimMessage { seq: message.seq, body: message.body, at }
}

/// Deterministic hex of `bytes` bytes derived from a name (test credentials, not secrets).
fn hex_of(name: &str, bytes: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    digest.iter().cycle().take(bytes).map(|b| format!("{b:02x}")).collect()
}
