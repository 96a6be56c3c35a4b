//! R24 for the public listener: the test walks every route the router is built from
//! (`dingbridge_server::public_route_list`) and calls it as a stranger would, without
//! credentials. Every door but `/healthz` refuses (401, or the one uniform 400 of the encrypted
//! DingTalk callback, which must not say why), with a JSON error code and nothing else a caller
//! could use, and nothing is stored. The admin routes are not on this listener at all.

use dingbridge_server::gateway::{Gateway, Overrides};
use std::collections::BTreeMap;

/// Values every secret below resolves to; none may appear in an answer.
const SECRETS: &[(&str, &str)] = &[
    ("ROUTES_WEBHOOK_SECRET", "whsec_cm91dGVzLXdhbGstd2ViaG9vay1zZWNyZXQtMDE="),
    ("ROUTES_APP_SECRET", "routes-app-secret-7f3a9c"),
    ("ROUTES_CB_TOKEN", "routes-callback-token"),
    ("ROUTES_CB_KEY", "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7"),
    ("ROUTES_CARD_TOKEN", "Vb7nQ2xLp9-rT4kWm8cJz3Hd"),
    ("ROUTES_SF_SECRET", "routes-sf-client-secret"),
    ("ROUTES_SF_OUTBOUND", "Kq8vN3zRt6-wY1pLm5xBc9Gf"),
    ("ROUTES_ZOHO_SECRET", "routes-zoho-secret"),
    ("ROUTES_ZOHO_REFRESH", "routes-zoho-refresh"),
    ("ROUTES_ZOHO_CHANNEL", "routes-zoho-channel-token"),
    ("ROUTES_NS_CONSUMER", "routes-ns-consumer-secret"),
    ("ROUTES_NS_TOKEN", "routes-ns-token-secret"),
    ("ROUTES_NS_HOOK", "routes-ns-hook-secret"),
    ("ROUTES_DV_SECRET", "routes-dv-client-secret"),
    ("ROUTES_DV_KEY", "routes-dv-webhook-key"),
    ("ROUTES_SAP_PASSWORD", "routes-sap-password"),
    ("ROUTES_IDOC_PASSWORD", "routes-idoc-password"),
    ("ROUTES_ADMIN_TOKEN", "routes-admin-token-5d1e"),
    ("ROUTES_ROBOT_TOKEN", "5f2d8c1b9e7a4f6d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"),
];

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = { env = "ROUTES_ADMIN_TOKEN" }

[dingtalk.apps.hk]
app_key = "dingroutes0000000001"
app_secret = { env = "ROUTES_APP_SECRET" }
sync_directory = false

[salesforce.orgs.hk]
login_url = "https://routes.my.salesforce.com"
client_id = "3MVG9routes"
client_secret = { env = "ROUTES_SF_SECRET" }
organization_id = "00D5g000004HkbrEAC"

[zoho.orgs.hk]
data_centre = "com"
client_id = "1000.ROUTES"
client_secret = { env = "ROUTES_ZOHO_SECRET" }
refresh_token = { env = "ROUTES_ZOHO_REFRESH" }

[netsuite.accounts.main]
account_id = "1234567"
consumer_key = "routes-consumer-key"
consumer_secret = { env = "ROUTES_NS_CONSUMER" }
token_id = "routes-token-id"
token_secret = { env = "ROUTES_NS_TOKEN" }

[dynamics.orgs.main]
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "00000000-1111-2222-3333-444444444444"
client_secret = { env = "ROUTES_DV_SECRET" }
dataverse_url = "https://routes.crm5.dynamics.com"

[sap.systems.s4]
base_url = "https://s4.routes.example.com:44300"
user = "ROUTES"
password = { env = "ROUTES_SAP_PASSWORD" }

[sources.erp]
type = "webhook"
secret = { env = "ROUTES_WEBHOOK_SECRET" }

[sources.dt]
type = "dingtalk"
app = "hk"
mode = "http"
callback_token = { env = "ROUTES_CB_TOKEN" }
callback_aes_key = { env = "ROUTES_CB_KEY" }
card_callback_token = { env = "ROUTES_CARD_TOKEN" }

[sources.sf]
type = "salesforce"
org = "hk"
objects = ["Opportunity"]
outbound_token = { env = "ROUTES_SF_OUTBOUND" }

[sources.zoho]
type = "zoho"
org = "hk"
objects = ["Deals"]
channel_token = { env = "ROUTES_ZOHO_CHANNEL" }

[sources.ns]
type = "netsuite"
account = "main"
objects = ["itemFulfillment"]
webhook_secret = { env = "ROUTES_NS_HOOK" }

[sources.dv]
type = "dynamics"
org = "main"
objects = ["salesorder"]
webhook_secret = { env = "ROUTES_DV_KEY" }

[sources.sap]
type = "sap"
system = "s4"
objects = ["A_OutbDeliveryHeader"]
idoc_user = "ECCIDOC"
idoc_password = { env = "ROUTES_IDOC_PASSWORD" }

[destinations.ops]
type = "dingtalk_robot"
access_token = { env = "ROUTES_ROBOT_TOKEN" }

[[flows]]
name = "all"
on = { source = "erp" }
[[flows.deliver]]
destination = "ops"
message = { type = "text", content = "{{ event.entity_id }}" }
"#;

/// The configured source a route's `{source}` stands for.
fn source_for(path: &str) -> &'static str {
    let table = [
        ("/hooks/", "erp"),
        ("/dingtalk/", "dt"),
        ("/intake/salesforce/", "sf"),
        ("/intake/zoho/", "zoho"),
        ("/intake/netsuite/", "ns"),
        ("/intake/dynamics/", "dv"),
        ("/intake/sap/", "sap"),
    ];
    table.iter().find(|(prefix, _)| path.starts_with(prefix)).map(|(_, s)| *s).unwrap_or("erp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r24_every_public_route_refuses_a_caller_without_credentials() {
    for (name, value) in SECRETS {
        std::env::set_var(name, value);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    // Every vendor is "reachable" at a closed loopback port: nothing leaves the machine.
    let closed = "http://127.0.0.1:9".to_owned();
    let endpoints: BTreeMap<String, String> = ["dingtalk", "salesforce", "zoho", "netsuite", "dynamics", "sap"]
        .into_iter()
        .map(|system| (system.to_owned(), closed.clone()))
        .collect();
    let overrides = Overrides {
        store_url: Some(format!("sqlite://{}/routes.db", dir.path().display())),
        sim_endpoints: Some(endpoints),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        clock: None,
    };
    let gateway = Gateway::start(config, overrides).await.unwrap();
    let base = format!("http://{}", gateway.addr);
    let client = reqwest::Client::new();

    let routes = dingbridge_server::public_route_list();
    // Every vendor door is in the list the router is built from (the walk cannot skip one).
    for expected in [
        "/hooks/{source}",
        "/dingtalk/card-callback/{source}",
        "/intake/salesforce/{source}/{token}",
        "/intake/zoho/{source}",
        "/intake/netsuite/{source}",
        "/intake/dynamics/{source}",
        "/intake/sap/{source}/idoc",
    ] {
        assert!(routes.iter().any(|(_, path)| *path == expected), "{expected} is not routed: {routes:?}");
    }
    for (method, route) in &routes {
        let url = format!("{base}{}", route.replace("{source}", source_for(route)).replace("{token}", "not-the-token"));
        for body in ["{}", "<soapenv:Envelope/>", ""] {
            let response = client.request(method.clone(), &url).body(body).send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            if *route == "/healthz" {
                assert_eq!(status, 200, "{route} is the one open door");
                continue;
            }
            // The encrypted callback answers every failure with one 400 (no oracle); a Standard
            // Webhook without its three headers is malformed, 400 `missing_header` (R17).
            let expected: &[u16] = if route.starts_with("/dingtalk/callback") {
                &[400]
            } else if route.starts_with("/hooks/") {
                &[400, 401]
            } else {
                &[401, 403]
            };
            assert!(expected.contains(&status), "{method} {route} with {body:?}: {status} {text}");
            let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{route}: {text}"));
            let code = json["error"]["code"].as_str().unwrap_or_else(|| panic!("{route}: no error code in {text}"));
            assert!(!code.is_empty());
            for (name, value) in SECRETS {
                assert!(!text.contains(value), "{route} answered with {name}: {text}");
            }
        }
    }
    let stats = gateway.store.stats(0).await.unwrap();
    assert_eq!((stats.events, stats.pending, stats.dead_letters), (0, 0, 0), "a stranger stored something");

    // The admin surface is not on the public listener, and is on its own.
    for path in ["/metrics", "/api/stats", "/api/dead-letters"] {
        let status = client.get(format!("{base}{path}")).send().await.unwrap().status().as_u16();
        assert_eq!(status, 404, "{path} on the public listener");
    }
    let admin = format!("http://{}", gateway.admin_addr);
    assert!(gateway.admin_addr.ip().is_loopback());
    assert_eq!(client.get(format!("{admin}/api/stats")).send().await.unwrap().status().as_u16(), 401);
    let metrics = client.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("dingbridge_webhooks_refused_total"), "refusals are counted");
    for (name, value) in SECRETS {
        assert!(!metrics.contains(value), "/metrics shows {name}");
    }
    gateway.shutdown().await;
}
