//! R8 through the outbox, in real time with DingTalk's limit scaled down (5 per second on the
//! simulator, 5 per 1.6 s in the sink: the margin must cover the 500 ms a permit may take to come
//! back plus the send, as the 1 s margin of its 61 s default does): two gateway
//! instances (two sets of workers, each with its own robot sink) on one store send to one robot,
//! then a restarted instance sends more in the same window. The simulator never answers 130101,
//! every message arrives once, and no rolling second holds more than five.

use connect::http::Outbound;
use connect::{Clock, Sink, SystemClock};
use connectors::dingtalk::{DingTalkSim, RobotSettings, RobotSink, SimRobot};
use dingbridge_engine::{DeliveryWorkers, WorkerSettings};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use store::{Intake, JobState, NewJob, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const ROBOT: (&str, &str) = ("pacing", "5ac1d6f0e0c1b5d0a4c8b7e2f3a9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1");
const DESTINATION: &str = "robot";

struct Instance {
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Instance {
    fn start(store: Arc<dyn Store>, sim_url: &str, owner: &str) -> Instance {
        let settings = RobotSettings {
            base_url: sim_url.to_owned(),
            per_minute: 5,
            window: Duration::from_millis(1_600),
            timeout: Duration::from_secs(5),
            outbound: Outbound::loopback(),
            ..RobotSettings::new(ROBOT.1.into())
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let sink: Arc<dyn Sink> = Arc::new(RobotSink::new(settings, clock.clone()).unwrap());
        let worker_settings = WorkerSettings {
            owner: owner.to_owned(),
            lease: Duration::from_secs(30),
            concurrency_per_destination: 4,
            concurrency_overrides: BTreeMap::new(),
            claim_batch: 64,
            poll_interval: Duration::from_millis(50),
            schedule: connect::RetrySchedule::default(),
            request_timeout: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(3_600),
        };
        let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
        let sinks = BTreeMap::from([(DESTINATION.to_owned(), sink)]);
        DeliveryWorkers::spawn(store, sinks, worker_settings, clock, shutdown.clone(), &tracker);
        Instance { shutdown, tracker }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

async fn enqueue(store: &dyn Store, range: std::ops::Range<usize>) {
    let now = SystemClock.now_millis();
    let intakes: Vec<Intake> = range
        .map(|n| Intake {
            dedup_key: format!("pacing:{n}"),
            event_id: format!("ev{n}"),
            source: "pacing".into(),
            received_at: now,
            event_json: "{}".into(),
            jobs: vec![NewJob {
                flow: "f".into(),
                destination: DESTINATION.into(),
                ordering_key: format!("chat{}", n % 3),
                idempotency_key: format!("ev{n}:f:0"),
                payload: serde_json::json!({"msgtype": "text", "text": {"content": format!("message {n}")}})
                    .to_string(),
                next_attempt_at: now,
                coalesce: false,
            }],
            dead_letter: None,
        })
        .collect();
    store.ingest(&intakes).await.unwrap();
}

async fn wait_done(store: &dyn Store, events: std::ops::Range<usize>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for n in events {
        loop {
            let jobs = store.jobs_for_event(&format!("ev{n}")).await.unwrap();
            if jobs.iter().all(|j| j.state == JobState::Done) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "ev{n} not delivered: {jobs:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn two_instances_and_a_restart_stay_under_the_robot_limit(first: Arc<dyn Store>, second: Arc<dyn Store>) {
    let dingtalk = Arc::new(DingTalkSim::new(Arc::new(SystemClock)));
    dingtalk.upsert_robot(SimRobot { per_minute: 5, window_ms: 1_000, ..SimRobot::new(ROBOT.0, ROBOT.1, None) });
    let server = sim::serve(dingtalk.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();

    enqueue(first.as_ref(), 0..20).await;
    let a = Instance::start(first.clone(), &server.url(), "a");
    let b = Instance::start(second.clone(), &server.url(), "b");
    wait_done(first.as_ref(), 0..20).await;
    a.stop().await;
    b.stop().await;
    // A restarted instance, at once: the grants of the last second are in the store.
    enqueue(first.as_ref(), 20..30).await;
    let restarted = Instance::start(first.clone(), &server.url(), "a-restarted");
    wait_done(first.as_ref(), 20..30).await;
    restarted.stop().await;

    let messages = dingtalk.messages(ROBOT.0);
    let mut texts: Vec<String> = messages.iter().map(|m| m.body["text"]["content"].to_string()).collect();
    texts.sort();
    texts.dedup();
    assert_eq!((messages.len(), texts.len()), (30, 30), "every message once");
    assert_eq!(dingtalk.answer_counts().get(&130_101), None, "the simulator never throttled");
    let times: Vec<i64> = messages.iter().map(|m| m.time_ms).collect();
    let busiest = times.iter().map(|t| times.iter().filter(|u| **u >= *t && **u < t + 1_000).count()).max();
    assert!(busiest <= Some(5), "{busiest:?} messages in one rolling second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_instances_and_a_restart_stay_under_the_robot_limit() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("pacing.db").display());
    let first = store::open(&url).await.unwrap();
    let second = store::open(&url).await.unwrap();
    two_instances_and_a_restart_stay_under_the_robot_limit(first, second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_instances_and_a_restart_stay_under_the_robot_limit() {
    let base = std::env::var("DINGBRIDGE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("pacing_{}", uuid::Uuid::new_v4().simple());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}schema={schema}");
    let first = match store::open(&url).await {
        Ok(store) => store,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: Postgres at {base} is unreachable ({e}); set DINGBRIDGE_TEST_PG");
            return;
        }
        Err(e) => panic!("Postgres at {base} is unreachable and CI=true: {e}"),
    };
    let second = store::open(&url).await.unwrap();
    two_instances_and_a_restart_stay_under_the_robot_limit(first, second).await;
}
