//! The simulated custom group robots (reference §2, §10 item 4).
//!
//! `POST /robot/send?access_token=&timestamp=&sign=` answers exactly as DingTalk does: HTTP 200
//! with an `errcode` body for every outcome. Checks, in this order (DingTalk's own order is not
//! documented):
//!
//! 1. token known, else `300005 token is not exist`;
//! 2. when the robot has a secret: `timestamp` within ±1 h of the simulator clock, else
//!    `310000 invalid timestamp`; `sign` (URL-decoded once) equals the HMAC, else
//!    `310000 sign not match`;
//! 3. pacing: blocked, or `per_minute` messages already accepted in the rolling window →
//!    `130101 send too fast, exceed N times per minute`, and the robot is blocked `block_ms`;
//! 4. body: JSON with a valid `msgtype` object, else `40035 missing parameter: …` (the real
//!    texts for malformed bodies are UNVERIFIED; 40035 is the documented "missing parameter");
//! 5. keywords (when configured): one must appear in the message text, else
//!    `310000 keywords not in content`.
//!
//! Only accepted messages count towards the rate window. IP allow-lists are not simulated.
//! Control routes beyond the chassis: `GET /_sim/messages?robot=NAME` (accepted messages).

use crate::dingtalk::auth::robot_signature_base64;
use crate::dingtalk::client::RobotMessage;
use axum::extract::{Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use connect::Clock;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use sim::SimError;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// `|now - timestamp|` allowed by the signature check (reference §2.1).
pub const TIMESTAMP_WINDOW_MS: i64 = 3_600_000;
pub const DEFAULT_PER_MINUTE: u32 = 20;
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
/// Block after 130101 (DOC copies say 10 minutes; UNVERIFIED).
pub const DEFAULT_BLOCK_MS: u64 = 600_000;
/// Accepted messages kept per robot; older ones are evicted (sequence numbers keep counting).
pub const MESSAGES_KEPT_PER_ROBOT: usize = 100_000;

/// Seeded robots: (name, access_token, secret). Synthetic and deterministic, so example
/// configs can refer to them.
pub const SEED_ROBOTS: [(&str, &str, &str); 3] = [
    (
        "ops",
        "8e960a7e0f61cd6af85d39c4d38ac31251c56830189fb5e90582bd215f348c39",
        "SEC9169dc2429d8360f20d3236f439138f795f758c29b694814a0b503c88e6f74d5",
    ),
    (
        "sales-hk",
        "cd4365df98be1468322c31bdbd95b0dc3d6081d079bc80e25e68a849f28e71af",
        "SECac543ba6ac034adb2e1bf10e5b621c4addc5792d0e0686378c063d9c7667baa3",
    ),
    (
        "finance",
        "60bb4e96eaf61b0c8bc9194b1ac434f84a14a5453290d9c43ce732815f94002e",
        "SEC1f7dd02ca5f4f78b16261ab65f36f8ddb251982ddbbd41ce3238419bae307c81",
    ),
];

/// One simulated custom robot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimRobot {
    pub name: String,
    pub access_token: String,
    /// `None`: signing not enabled, `timestamp`/`sign` are ignored.
    pub secret: Option<String>,
    /// Security keywords; empty = no keyword check.
    pub keywords: Vec<String>,
    /// Accepted messages per window; 0 = unlimited (benchmarks).
    pub per_minute: u32,
    pub window_ms: u64,
    pub block_ms: u64,
}

impl SimRobot {
    /// A robot with DingTalk's default limits (20 per 60 s, 10 min block), no keywords.
    pub fn new(name: &str, access_token: &str, secret: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            access_token: access_token.to_owned(),
            secret: secret.map(str::to_owned),
            keywords: Vec::new(),
            per_minute: DEFAULT_PER_MINUTE,
            window_ms: DEFAULT_WINDOW_MS,
            block_ms: DEFAULT_BLOCK_MS,
        }
    }

    /// The seeded robots `ops`, `sales-hk`, `finance` ([`SEED_ROBOTS`]).
    pub fn seeded() -> Vec<Self> {
        SEED_ROBOTS.iter().map(|(name, token, secret)| Self::new(name, token, Some(secret))).collect()
    }
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedMessage {
    /// Global acceptance order across robots, from 0.
    pub seq: u64,
    pub robot: String,
    /// Acceptance time by the simulator clock, RFC 3339.
    pub time: String,
    pub time_ms: i64,
    pub msgtype: String,
    /// The body as received.
    pub body: Value,
}

/// `POST /_sim/records/robot`: adds a robot, or changes the named one (absent fields keep
/// their value; `"secret": null` turns signing off). `blocked_for_ms` forces a block now.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RobotPatch {
    name: String,
    access_token: Option<String>,
    #[serde(default, deserialize_with = "present")]
    secret: Option<Option<String>>,
    keywords: Option<Vec<String>>,
    per_minute: Option<u32>,
    window_ms: Option<u64>,
    block_ms: Option<u64>,
    blocked_for_ms: Option<u64>,
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug)]
struct RobotState {
    robot: SimRobot,
    /// Acceptance times (ms) inside the current window, oldest first.
    sent: VecDeque<i64>,
    blocked_until_ms: Option<i64>,
    messages: VecDeque<RecordedMessage>,
}

impl RobotState {
    fn new(robot: SimRobot) -> Self {
        Self { robot, sent: VecDeque::new(), blocked_until_ms: None, messages: VecDeque::new() }
    }
}

#[derive(Debug, Default)]
struct Inner {
    robots: BTreeMap<String, RobotState>,
    next_seq: u64,
    /// errcode → answers sent with it.
    answers: BTreeMap<i64, u64>,
}

/// The custom robots of the DingTalk simulator.
#[derive(Debug)]
pub struct RobotsSim {
    clock: Arc<dyn Clock>,
    seed: Vec<SimRobot>,
    inner: Mutex<Inner>,
    accepted: AtomicU64,
}

fn answer(errcode: i64, errmsg: &str) -> Response {
    // DingTalk answers every robot outcome with HTTP 200 and an errcode body.
    (StatusCode::OK, Json(json!({ "errcode": errcode, "errmsg": errmsg }))).into_response()
}

impl RobotsSim {
    /// Seeded with [`SimRobot::seeded`].
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_robots(clock, SimRobot::seeded())
    }

    /// Seeded with `robots` (also what `reset` returns to).
    pub fn with_robots(clock: Arc<dyn Clock>, robots: Vec<SimRobot>) -> Self {
        let sim = Self { clock, seed: robots, inner: Mutex::new(Inner::default()), accepted: AtomicU64::new(0) };
        sim.reseed();
        sim
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update is a complete push/assignment, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reseed(&self) {
        let mut inner = self.lock();
        inner.robots = self.seed.iter().map(|r| (r.name.clone(), RobotState::new(r.clone()))).collect();
        inner.next_seq = 0;
        inner.answers.clear();
        self.accepted.store(0, Ordering::SeqCst);
    }

    /// Adds or replaces a robot (its messages and window are kept when it already exists).
    pub fn upsert_robot(&self, robot: SimRobot) {
        let mut inner = self.lock();
        match inner.robots.get_mut(&robot.name) {
            Some(state) => state.robot = robot,
            None => {
                inner.robots.insert(robot.name.clone(), RobotState::new(robot));
            }
        }
    }

    pub fn robot(&self, name: &str) -> Option<SimRobot> {
        self.lock().robots.get(name).map(|s| s.robot.clone())
    }

    pub fn robots(&self) -> Vec<SimRobot> {
        self.lock().robots.values().map(|s| s.robot.clone()).collect()
    }

    /// Accepted messages of `robot`, oldest first (empty for an unknown robot).
    pub fn messages(&self, robot: &str) -> Vec<RecordedMessage> {
        self.lock().robots.get(robot).map(|s| s.messages.iter().cloned().collect()).unwrap_or_default()
    }

    /// Accepted messages of `robot` with a sequence number above `after` (all when `None`),
    /// oldest first. Long tests read only what is new, so the per-robot cap never evicts a
    /// message before they saw it and they do not copy the whole history on every poll.
    pub fn messages_after(&self, robot: &str, after: Option<u64>) -> Vec<RecordedMessage> {
        let inner = self.lock();
        let Some(state) = inner.robots.get(robot) else { return Vec::new() };
        // Sequence numbers only grow, so the kept messages are sorted by them.
        let start = after.map_or(0, |after| state.messages.partition_point(|m| m.seq <= after));
        state.messages.range(start..).cloned().collect()
    }

    /// How many messages `robot` has accepted and still keeps, without copying them (polled often
    /// by the bench and tests while the simulator is under load).
    pub fn message_count(&self, robot: &str) -> usize {
        self.lock().robots.get(robot).map_or(0, |s| s.messages.len())
    }

    /// How many `/robot/send` answers carried each errcode since start or the last reset.
    pub fn answer_counts(&self) -> BTreeMap<i64, u64> {
        self.lock().answers.clone()
    }

    fn count_answer(&self, errcode: i64) {
        *self.lock().answers.entry(errcode).or_insert(0) += 1;
    }

    /// Messages accepted since start or the last reset, all robots.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The `POST /robot/send` logic, independent of HTTP.
    fn robot_send(&self, query: Option<&str>, body: &[u8]) -> (i64, String) {
        let params: BTreeMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned().collect();
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        let token = params.get("access_token").map(String::as_str).unwrap_or("");
        let Some(state) = inner.robots.values_mut().find(|s| !token.is_empty() && s.robot.access_token == token) else {
            return (300_005, "token is not exist".to_owned());
        };

        if let Some(secret) = &state.robot.secret {
            let timestamp = params.get("timestamp").map(String::as_str).unwrap_or("");
            match timestamp.parse::<i64>() {
                Ok(ts) if (now - ts).abs() <= TIMESTAMP_WINDOW_MS => {}
                _ => return (310_000, "invalid timestamp".to_owned()),
            }
            // `parse` above URL-decoded the value exactly once, as DingTalk does.
            let sign = params.get("sign").map(String::as_str).unwrap_or("");
            if sign != robot_signature_base64(secret, timestamp) {
                return (310_000, "sign not match".to_owned());
            }
        }

        let limit = state.robot.per_minute;
        if state.blocked_until_ms.is_some_and(|until| until > now) {
            return (130_101, format!("send too fast, exceed {limit} times per minute"));
        }
        let window = i64::try_from(state.robot.window_ms).unwrap_or(i64::MAX);
        while state.sent.front().is_some_and(|t| t.saturating_add(window) <= now) {
            state.sent.pop_front();
        }
        if limit > 0 && state.sent.len() >= usize::try_from(limit).unwrap_or(usize::MAX) {
            let block = i64::try_from(state.robot.block_ms).unwrap_or(i64::MAX);
            state.blocked_until_ms = Some(now.saturating_add(block));
            return (130_101, format!("send too fast, exceed {limit} times per minute"));
        }

        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => return (40_035, "missing parameter: json (the body is not a JSON object)".to_owned()),
        };
        let message = match RobotMessage::from_value(&value) {
            Ok(m) => m,
            Err(detail) => return (40_035, format!("missing parameter: {detail}")),
        };
        if !state.robot.keywords.is_empty() {
            let text = message.visible_text();
            if !state.robot.keywords.iter().any(|k| text.contains(k.as_str())) {
                return (310_000, "keywords not in content".to_owned());
            }
        }

        if limit > 0 {
            state.sent.push_back(now);
        }
        let robot = state.robot.name.clone();
        if state.messages.len() >= MESSAGES_KEPT_PER_ROBOT {
            state.messages.pop_front();
        }
        let time = jiff::Timestamp::from_millisecond(now).map(|t| t.to_string()).unwrap_or_default();
        let seq = inner.next_seq;
        let recorded = RecordedMessage {
            seq,
            robot: robot.clone(),
            time,
            time_ms: now,
            msgtype: message.msgtype().to_owned(),
            body: value,
        };
        inner.next_seq += 1;
        if let Some(state) = inner.robots.get_mut(&robot) {
            state.messages.push_back(recorded);
        }
        self.accepted.fetch_add(1, Ordering::SeqCst);
        (0, "ok".to_owned())
    }

    fn apply_patch(&self, patch: RobotPatch) -> Result<SimRobot, SimError> {
        let invalid = |detail: String| SimError::InvalidRecord { entity: "robot".to_owned(), detail };
        if patch.name.trim().is_empty() {
            return Err(invalid("`name` must not be empty".to_owned()));
        }
        let now = self.clock.now_millis();
        let mut inner = self.lock();
        if let Some(token) = &patch.access_token {
            if token.is_empty() {
                return Err(invalid("`access_token` must not be empty".to_owned()));
            }
            if let Some(other) =
                inner.robots.values().find(|s| &s.robot.access_token == token && s.robot.name != patch.name)
            {
                return Err(invalid(format!("access_token already belongs to robot `{}`", other.robot.name)));
            }
        }
        let state = match inner.robots.get_mut(&patch.name) {
            Some(state) => state,
            None => {
                let Some(token) = patch.access_token.clone() else {
                    return Err(invalid(format!("robot `{}` is new: `access_token` is required", patch.name)));
                };
                inner
                    .robots
                    .entry(patch.name.clone())
                    .or_insert_with(|| RobotState::new(SimRobot::new(&patch.name, &token, None)))
            }
        };
        let robot = &mut state.robot;
        if let Some(token) = patch.access_token {
            robot.access_token = token;
        }
        if let Some(secret) = patch.secret {
            robot.secret = secret;
        }
        if let Some(keywords) = patch.keywords {
            robot.keywords = keywords;
        }
        if let Some(per_minute) = patch.per_minute {
            robot.per_minute = per_minute;
        }
        if let Some(window_ms) = patch.window_ms {
            robot.window_ms = window_ms;
        }
        if let Some(block_ms) = patch.block_ms {
            robot.block_ms = block_ms;
        }
        if let Some(ms) = patch.blocked_for_ms {
            state.blocked_until_ms = Some(now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)));
        }
        Ok(state.robot.clone())
    }
}

#[derive(Debug, Deserialize)]
struct MessagesQuery {
    robot: Option<String>,
}

async fn robot_send_handler(
    State(sim): State<Arc<RobotsSim>>,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let (errcode, errmsg) = sim.robot_send(query.as_deref(), &body);
    sim.count_answer(errcode);
    answer(errcode, &errmsg)
}

async fn messages_handler(State(sim): State<Arc<RobotsSim>>, Query(q): Query<MessagesQuery>) -> Response {
    match q.robot {
        Some(name) => {
            if sim.robot(&name).is_none() {
                let error = json!({ "error": format!("no robot named `{name}`; see GET /_sim/info") });
                return (StatusCode::NOT_FOUND, Json(error)).into_response();
            }
            Json(sim.messages(&name)).into_response()
        }
        None => {
            let inner = sim.lock();
            let mut all: Vec<RecordedMessage> =
                inner.robots.values().flat_map(|s| s.messages.iter().cloned()).collect();
            all.sort_by_key(|m| m.seq);
            Json(all).into_response()
        }
    }
}

impl RobotsSim {
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/robot/send", post(robot_send_handler))
            .route("/_sim/messages", get(messages_handler))
            .with_state(self)
    }

    pub fn info(&self) -> Value {
        let robots: Vec<Value> = self
            .robots()
            .into_iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "access_token": r.access_token,
                    "secret": r.secret,
                    "keywords": r.keywords,
                    "per_minute": r.per_minute,
                    "window_ms": r.window_ms,
                    "block_ms": r.block_ms,
                    "webhook_path": format!("/robot/send?access_token={}", r.access_token),
                })
            })
            .collect();
        json!({
            "robots": robots,
            "limits": {
                "timestamp_window_ms": TIMESTAMP_WINDOW_MS,
                "default_per_minute": DEFAULT_PER_MINUTE,
                "default_window_ms": DEFAULT_WINDOW_MS,
                "default_block_ms": DEFAULT_BLOCK_MS,
            },
            "accepted_messages": self.accepted(),
            "answers_by_errcode": self.answer_counts(),
        })
    }

    pub fn reset(&self) {
        self.reseed();
    }

    /// `POST /_sim/records/robot`.
    pub fn put_record(&self, value: Value) -> Result<Value, SimError> {
        let patch: RobotPatch = serde_json::from_value(value)
            .map_err(|err| SimError::InvalidRecord { entity: "robot".to_owned(), detail: err.to_string() })?;
        let robot = self.apply_patch(patch)?;
        serde_json::to_value(robot)
            .map_err(|err| SimError::InvalidRecord { entity: "robot".to_owned(), detail: err.to_string() })
    }
}
