//! The DingTalk simulator: one stateful DingTalk on one port, with the same paths, auth, payloads,
//! error bodies and limits as the real service (reference §10), composed of parts that each own
//! one area:
//!
//! | part | what it simulates |
//! |---|---|
//! | [`org::Org`] | the organisation, its apps, access tokens (old and new API) and QPS limits |
//! | [`robot::RobotsSim`] | custom group robots (`/robot/send`: sign, window, 20/min, keywords) |
//! | [`messages::MessagesSim`] | work notifications and app-robot messages |
//! | [`directory::DirectorySim`] | users and departments (`topapi`) |
//! | [`cards::CardsSim`] | interactive cards with state, clicks and callbacks |
//! | [`workflow::WorkflowSim`] | OA approval instances, tasks and their events |
//! | [`stream::StreamGateway`] | Stream mode: registration, WebSocket, ACKs, redelivery |
//! | [`events::EventRouter`] | where events go: Stream, or encrypted HTTP callbacks |
//! | [`page::Page`] | the web page a person clicks, and `/_sim/actions/` for tests |
//!
//! Records (`POST /_sim/records/{entity}`): `robot`, `app`, `user`, `department`, `group`,
//! `subscription` (`{"app_key", "mode": "stream"}` or `{"app_key", "mode": "http", "url"}` with the
//! seeded callback token and AES key, or your own `token` / `encoding_aes_key`), `process`,
//! `flow_controlled`.

pub mod cards;
pub mod directory;
pub mod events;
pub mod http_push;
pub mod messages;
pub mod org;
pub mod page;
pub mod robot;
pub mod stream;
pub mod workflow;

pub use robot::{
    RecordedMessage, RobotsSim, SimRobot, DEFAULT_BLOCK_MS, DEFAULT_PER_MINUTE, DEFAULT_WINDOW_MS,
    MESSAGES_KEPT_PER_ROBOT, SEED_ROBOTS, TIMESTAMP_WINDOW_MS,
};

use async_trait::async_trait;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use cards::CardsSim;
use connect::Clock;
use directory::DirectorySim;
use events::{EventRouter, EventSubscription};
use messages::MessagesSim;
use org::Org;
use page::Page;
use serde_json::{json, Value};
use sim::{SimError, SimState, Simulator};
use std::collections::BTreeMap;
use std::sync::Arc;
use stream::StreamGateway;
use workflow::WorkflowSim;

/// Token of the seeded HTTP event subscription (synthetic; shown in `/_sim/info`).
pub const SEED_CALLBACK_TOKEN: &str = "dingbridgeSimCallbackToken";
/// EncodingAESKey of the seeded HTTP event subscription: 43 characters from `[A-Za-z0-9]`.
pub const SEED_CALLBACK_AES_KEY: &str = "SimAesKey0dingbridge0HarbourTrading0HK00042";

/// The DingTalk simulator.
pub struct DingTalkSim {
    clock: Arc<dyn Clock>,
    pub org: Arc<Org>,
    pub events: Arc<EventRouter>,
    pub stream: Arc<StreamGateway>,
    pub custom_robots: Arc<RobotsSim>,
    pub messages: Arc<MessagesSim>,
    pub directory: Arc<DirectorySim>,
    pub cards: Arc<CardsSim>,
    pub workflow: Arc<WorkflowSim>,
    pub page: Arc<Page>,
}

impl std::fmt::Debug for DingTalkSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingTalkSim").finish_non_exhaustive()
    }
}

impl DingTalkSim {
    /// Seeded: the org and app of [`org::seed`], the robots of [`SEED_ROBOTS`].
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_robots(clock, SimRobot::seeded())
    }

    /// Seeded with `robots` (also what `reset` returns to).
    pub fn with_robots(clock: Arc<dyn Clock>, robots: Vec<SimRobot>) -> Self {
        let org = Org::seeded(clock.clone());
        let events = Arc::new(EventRouter::new(clock.clone(), org::SEED_CORP_ID));
        let credentials_org = org.clone();
        let stream = Arc::new(StreamGateway::new(
            clock.clone(),
            Arc::new(move |key: &str, secret: &str| credentials_org.check_credentials(key, secret)),
        ));
        events.attach_stream(stream.clone());
        let robots = Arc::new(RobotsSim::with_robots(clock.clone(), robots));
        let messages = Arc::new(MessagesSim::new(org.clone(), clock.clone()));
        let directory = Arc::new(DirectorySim::new(org.clone()));
        let cards = Arc::new(CardsSim::new(org.clone(), events.clone(), clock.clone()));
        let workflow = Arc::new(WorkflowSim::new(org.clone(), events.clone(), clock.clone()));
        let robots_for_page = robots.clone();
        let page = Arc::new(Page::new(
            org.clone(),
            cards.clone(),
            workflow.clone(),
            messages.clone(),
            events.clone(),
            Arc::new(move || {
                robots_for_page
                    .robots()
                    .into_iter()
                    .map(|r| (r.name.clone(), robots_for_page.messages(&r.name)))
                    .collect()
            }),
            clock.clone(),
        ));
        Self { clock, org, events, stream, custom_robots: robots, messages, directory, cards, workflow, page }
    }

    /// Adds or replaces a custom robot (its messages and window are kept when it already exists).
    pub fn upsert_robot(&self, robot: SimRobot) {
        self.custom_robots.upsert_robot(robot);
    }

    /// The custom robots, by name.
    pub fn robots(&self) -> Vec<SimRobot> {
        self.custom_robots.robots()
    }

    pub fn robot(&self, name: &str) -> Option<SimRobot> {
        self.custom_robots.robot(name)
    }

    /// Accepted messages of custom robot `robot`, oldest first.
    pub fn messages(&self, robot: &str) -> Vec<RecordedMessage> {
        self.custom_robots.messages(robot)
    }

    /// Accepted messages of custom robot `robot` after sequence number `after`, oldest first.
    pub fn messages_after(&self, robot: &str, after: Option<u64>) -> Vec<RecordedMessage> {
        self.custom_robots.messages_after(robot, after)
    }

    /// How many messages custom robot `robot` has accepted and still keeps.
    pub fn message_count(&self, robot: &str) -> usize {
        self.custom_robots.message_count(robot)
    }

    /// How many `/robot/send` answers carried each errcode.
    pub fn answer_counts(&self) -> BTreeMap<i64, u64> {
        self.custom_robots.answer_counts()
    }

    /// Custom-robot messages accepted since start or the last reset.
    pub fn accepted(&self) -> u64 {
        self.custom_robots.accepted()
    }

    fn put_subscription(&self, value: Value) -> Result<Value, SimError> {
        let invalid = |detail: String| SimError::InvalidRecord { entity: "subscription".to_owned(), detail };
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let app_key = text("app_key").ok_or_else(|| invalid("`app_key` is required".to_owned()))?;
        if self.org.app(&app_key).is_none() {
            return Err(invalid(format!("no app `{app_key}`; see GET /_sim/info")));
        }
        let subscription = match text("mode").as_deref() {
            Some("stream") | None => EventSubscription::Stream,
            Some("http") => {
                let url = text("url").ok_or_else(|| invalid("mode `http` needs `url`".to_owned()))?;
                let token = text("token").unwrap_or_else(|| SEED_CALLBACK_TOKEN.to_owned());
                let encoding_aes_key = text("encoding_aes_key").unwrap_or_else(|| SEED_CALLBACK_AES_KEY.to_owned());
                // Refuse keys DingTalk's console would refuse, before any push fails on them.
                crate::dingtalk::crypto::CallbackCrypto::new(&token, &encoding_aes_key, &app_key)
                    .map_err(|e| invalid(e.to_string()))?;
                EventSubscription::Http { url, token, encoding_aes_key }
            }
            Some(other) => return Err(invalid(format!("unknown mode `{other}`; `stream` or `http`"))),
        };
        self.events.set_subscription(&app_key, subscription.clone());
        Ok(json!({ "app_key": app_key, "subscription": subscription_json(&subscription) }))
    }
}

/// A new-API path DingTalk does not serve: HTTP 404 with the gateway's `{code, message,
/// requestid}` body, so the official SDK raises its API error (`TeaException`) as it does against
/// DingTalk instead of failing to parse an empty body. Code and text are UNVERIFIED (they are the
/// Alibaba API gateway's wording for an unknown API).
async fn unknown_api() -> Response {
    let requestid = uuid::Uuid::new_v4().hyphenated().to_string().to_uppercase();
    let body = json!({
        "code": UNKNOWN_API_CODE,
        "message": "Specified api is not found, please check your url and method.",
        "requestid": requestid,
    });
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// The code of [`unknown_api`]'s answer (UNVERIFIED).
pub const UNKNOWN_API_CODE: &str = "InvalidAction.NotFound";

fn subscription_json(subscription: &EventSubscription) -> Value {
    match subscription {
        EventSubscription::Stream => json!({ "mode": "stream" }),
        EventSubscription::Http { url, .. } => json!({ "mode": "http", "url": url }),
    }
}

#[async_trait]
impl Simulator for DingTalkSim {
    fn name(&self) -> &'static str {
        "dingtalk"
    }

    fn router(self: Arc<Self>) -> Router {
        Router::new()
            .merge(self.org.clone().router())
            .merge(self.custom_robots.clone().router())
            .merge(self.messages.clone().router())
            .merge(self.directory.clone().router())
            .merge(self.cards.clone().router())
            .merge(self.workflow.clone().router())
            .merge(self.stream.clone().router())
            .merge(self.page.clone().router())
            // Static routes win over this catch-all, so only paths no part serves reach it.
            .route("/v1.0/{*rest}", any(unknown_api))
    }

    fn attach(&self, state: SimState) {
        self.stream.attach_journal(state);
    }

    fn info(&self) -> Value {
        let mut info = self.custom_robots.info();
        let subscriptions: BTreeMap<String, Value> = self
            .org
            .apps()
            .into_iter()
            .map(|app| {
                let sub = self.events.subscription(&app.app_key);
                (app.app_key, subscription_json(&sub))
            })
            .collect();
        if let Some(obj) = info.as_object_mut() {
            obj.insert("org".into(), self.org.info());
            obj.insert("stream".into(), self.stream.info());
            obj.insert(
                "callback".into(),
                json!({
                    "token": SEED_CALLBACK_TOKEN,
                    "encoding_aes_key": SEED_CALLBACK_AES_KEY,
                    "owner_key": "the app key",
                    "subscriptions": subscriptions,
                }),
            );
            obj.insert("page".into(), json!({ "path": "/_sim/ui" }));
            obj.insert("clock_ms".into(), json!(self.clock.now_millis()));
        }
        info
    }

    fn reset(&self) {
        self.custom_robots.reset();
        self.org.reset();
        self.events.reset();
        self.stream.reset();
        self.messages.reset();
        self.directory.reset();
        self.cards.reset();
        self.workflow.reset();
        self.page.reset();
    }

    async fn put_record(&self, entity: &str, value: Value) -> Result<Value, SimError> {
        match entity {
            "robot" => self.custom_robots.put_record(value),
            "app" | "user" | "department" | "group" => self.org.put_record(entity, value),
            "subscription" => self.put_subscription(value),
            "process" => self.workflow.put_process(value),
            "flow_controlled" => self.messages.put_record(entity, value),
            other => Err(SimError::UnknownEntity {
                simulator: "dingtalk",
                entity: other.to_owned(),
                known: "robot, app, user, department, group, subscription, process, flow_controlled".to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connect::SystemClock;

    /// An unserved new-API path answers DingTalk's JSON error; served paths are untouched.
    #[tokio::test]
    async fn unknown_new_api_paths_answer_a_json_404() {
        let sim = Arc::new(DingTalkSim::new(Arc::new(SystemClock)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, sim.router()).await });
        let http = reqwest::Client::new();
        let answer = http.post(format!("{base}/v1.0/contact/nothing/here")).json(&json!({})).send().await.unwrap();
        assert_eq!(answer.status(), 404);
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["code"], UNKNOWN_API_CODE);
        assert!(body["requestid"].as_str().is_some_and(|r| !r.is_empty()));
        // A served path still answers itself (here: bad credentials, not the catch-all).
        let token = http.post(format!("{base}/v1.0/oauth2/accessToken")).json(&json!({})).send().await.unwrap();
        assert_eq!(token.status(), 400);
        let body: Value = token.json().await.unwrap();
        assert_ne!(body["code"], UNKNOWN_API_CODE);
    }
}
