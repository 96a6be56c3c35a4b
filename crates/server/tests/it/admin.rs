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
