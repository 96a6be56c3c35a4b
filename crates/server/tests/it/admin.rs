//! R24: every admin route answers 401 without a token and with a wrong one; the right token works.

use dingbridge_server::gateway::{Gateway, Overrides};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_token = { env = "ADMIN_TEST_TOKEN" }

[sources.erp]
type = "webhook"
system = "erp"
secret = { env = "ADMIN_TEST_SECRET" }

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "ADMIN_TEST_ROBOT_TOKEN" }
base_url = "https://127.0.0.1:9"

[[flows]]
name = "all"
on = { source = "erp" }

[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "{{ event.entity_id }}" }
"#;

/// Every route under /api/, with a method that reaches its handler.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/stats"),
    ("GET", "/api/dead-letters"),
    ("DELETE", "/api/dead-letters/1"),
    ("POST", "/api/jobs/1/replay"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r24_admin_routes_need_the_token() {
    std::env::set_var("ADMIN_TEST_TOKEN", "correct-horse-battery-staple");
    std::env::set_var("ADMIN_TEST_SECRET", "whsec_YWRtaW4tdGVzdC13ZWJob29rLXNlY3JldC0wMDAwMDA=");
    std::env::set_var("ADMIN_TEST_ROBOT_TOKEN", "1111111111111111111111111111111111111111111111111111111111111111");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let (config, _) = engine::config::load_and_validate(&path).unwrap();
    let overrides = Overrides {
        store_url: Some(format!("sqlite://{}/admin.db", dir.path().display())),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    let gateway = Gateway::start(config, overrides).await.unwrap();
    let base = format!("http://{}", gateway.admin_addr);
    let client = reqwest::Client::new();
    for (method, path) in ADMIN_ROUTES {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for token in [None, Some("Bearer wrong"), Some("correct-horse-battery-staple"), Some("Bearer ")] {
            let mut request = client.request(method.clone(), format!("{base}{path}"));
            if let Some(token) = token {
                request = request.header("authorization", token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), 401, "{method} {path} with {token:?}");
        }
        let response = client
            .request(method.clone(), format!("{base}{path}"))
            .header("authorization", "Bearer correct-horse-battery-staple")
            .send()
            .await
            .unwrap();
        assert_ne!(response.status().as_u16(), 401, "{method} {path} refused the right token");
    }
    gateway.shutdown().await;
}

#[test]
fn default_bind_address_is_loopback() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart.toml");
    let (config, _) = engine::config::load_and_validate(&path).unwrap();
    assert!(config.server.listen.ip().is_loopback());
    let minimal = "[sources.a]\ntype = \"webhook\"\nsystem = \"x\"\nsecret = { env = \"X\" }\n";
    let config = engine::config::Config::from_toml(minimal, "minimal.toml").unwrap();
    assert!(config.server.listen.ip().is_loopback(), "default listen {}", config.server.listen);
}

/// `[audit] key` added to [`CONFIG`].
fn keyed_config() -> String {
    CONFIG.replace("[sources.erp]", "[audit]\nkey = { env = \"ADMIN_TEST_AUDIT_KEY\" }\n\n[sources.erp]")
}

const AUDIT_KEY: &str = "admin-test-audit-key-0123456789abcdef0123";

async fn start(dir: &std::path::Path, config: &str) -> Result<Gateway, dingbridge_server::gateway::StartError> {
    let path = dir.join("admin.toml");
    std::fs::write(&path, config).unwrap();
    let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    let overrides = Overrides {
        store_url: Some(format!("sqlite://{}/admin.db", dir.display())),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        ..Overrides::default()
    };
    Gateway::start(config, overrides).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_replay_and_drop_are_audited_and_another_key_cannot_start() {
    std::env::set_var("ADMIN_TEST_TOKEN", "correct-horse-battery-staple");
    std::env::set_var("ADMIN_TEST_SECRET", "whsec_YWRtaW4tdGVzdC13ZWJob29rLXNlY3JldC0wMDAwMDA=");
    std::env::set_var("ADMIN_TEST_ROBOT_TOKEN", "1111111111111111111111111111111111111111111111111111111111111111");
    std::env::set_var("ADMIN_TEST_AUDIT_KEY", AUDIT_KEY);
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(dir.path(), &keyed_config()).await.unwrap();
    let store = gateway.store.clone();
    // The key is bound before anything is audited.
    let key = store::AuditKey::new(AUDIT_KEY).unwrap();
    assert_eq!(store.audit_head().await.unwrap().key_id.as_deref(), Some(key.id()));
    // A dead job of a destination no worker serves (so nothing delivers it meanwhile), and a dead
    // letter of an event that never made a job.
    let job = store::NewJob {
        flow: "all".into(),
        destination: "parked".into(),
        ordering_key: "k".into(),
        idempotency_key: "admin-audit-1".into(),
        payload: "{}".into(),
        next_attempt_at: 0,
        coalesce: false,
    };
    let intake = |dedup: &str, jobs: Vec<store::NewJob>, dead: Option<&str>| store::Intake {
        dedup_key: dedup.into(),
        event_id: dedup.into(),
        source: "erp".into(),
        received_at: 0,
        event_json: "{}".into(),
        jobs,
        dead_letter: dead.map(|reason| store::NewDeadLetter { reason: reason.into() }),
    };
    store.ingest(&[intake("d1", vec![job], None), intake("d2", vec![], Some("unreadable"))]).await.unwrap();
    let claimed = store.claim("parked", "test", 1, 60_000, 1).await.unwrap();
    store.dead_letter(claimed[0].lease(), "HTTP 400", 2).await.unwrap();
    let dead = store.list_dead(10).await.unwrap();
    let parse_failure = dead.iter().find(|d| d.job_id.is_none()).unwrap().id;

    let base = format!("http://{}", gateway.admin_addr);
    let client = reqwest::Client::new();
    let auth = "Bearer correct-horse-battery-staple";
    let replay = client.post(format!("{base}/api/jobs/{}/replay", claimed[0].id)).header("authorization", auth);
    assert_eq!(replay.send().await.unwrap().status().as_u16(), 204);
    let drop = client.delete(format!("{base}/api/dead-letters/{parse_failure}")).header("authorization", auth);
    assert_eq!(drop.send().await.unwrap().status().as_u16(), 204);
    // A refused action (nothing to replay) writes nothing.
    let again = client.post(format!("{base}/api/jobs/{}/replay", claimed[0].id)).header("authorization", auth);
    assert_eq!(again.send().await.unwrap().status().as_u16(), 404);

    let rows = store.audit_list(i64::MIN, 0, 100).await.unwrap();
    let shown: Vec<_> = rows.iter().map(|r| (r.actor.as_str(), r.action.as_str(), r.subject.clone())).collect();
    assert_eq!(
        shown,
        [
            ("admin-api", "dlq.replayed", claimed[0].id.to_string()),
            ("admin-api", "dlq.dropped", parse_failure.to_string())
        ]
    );
    assert_eq!(store.audit_verify().await.unwrap(), store::AuditVerification::Intact { rows: 2 });
    gateway.shutdown().await;

    // The same store with another key, or with none: the gateway does not start.
    std::env::set_var("ADMIN_TEST_AUDIT_KEY", "another-audit-key-entirely-0123456789abcdef");
    let err = start(dir.path(), &keyed_config()).await.err().expect("started with another key");
    assert!(err.to_string().contains("wrong audit key"), "{err}");
    let err = start(dir.path(), CONFIG).await.err().expect("started without the key");
    assert!(err.to_string().contains("no audit key was given"), "{err}");
}
