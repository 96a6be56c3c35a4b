//! Bounded resources of the listeners (`[server]` limits): a slowloris client is disconnected,
//! a request past the request timeout gets 503 `request_timeout`, one past the concurrency limit
//! 503 `overloaded` at once, and an intake past the byte budget 503 with nothing acked lost.

use connect::webhook::{sign, WebhookSecret};
use dingbridge_server::gateway::{Gateway, Overrides};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "whsec_bGltaXRzLXRlc3Qtc2VjcmV0LWtleS1mb3ItaXNzdWUtMTU=";

fn config(server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

[sources.erp]
type = "webhook"
system = "erp"
secret = {{ env = "LIMITS_TEST_SECRET" }}

[destinations.ops]
type = "dingtalk_robot"
access_token = {{ env = "LIMITS_TEST_ROBOT_TOKEN" }}
base_url = "https://127.0.0.1:9"

[[flows]]
name = "all"
on = {{ source = "erp" }}

[[flows.deliver]]
destination = "ops"
message = {{ type = "text", content = "{{{{ event.entity_id }}}}" }}
"#
    )
}

struct Harness {
    _dir: tempfile::TempDir,
    gateway: Gateway,
    addr: std::net::SocketAddr,
}

impl Harness {
    async fn start(server: &str) -> Harness {
        std::env::set_var("LIMITS_TEST_SECRET", SECRET);
        std::env::set_var("LIMITS_TEST_ROBOT_TOKEN", "0".repeat(64));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(&path, config(server)).unwrap();
        let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
        let overrides = Overrides {
            store_url: Some(format!("sqlite://{}/limits.db", dir.path().display())),
            sim_endpoints: None,
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            clock: None,
        };
        let gateway = Gateway::start(config, overrides).await.unwrap();
        let addr = gateway.addr;
        Harness { _dir: dir, gateway, addr }
    }

    /// A request whose headers arrive whole and whose body never does: it sits in the handler
    /// (reading the body) until the request timeout.
    async fn stalled_request(&self) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let head = "POST /hooks/erp HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"type\":";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream
    }
}

/// Reads until the peer closes (or `limit` passes); the bytes read.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err("still open"),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_disconnected_at_the_header_read_timeout() {
    let h = Harness::start("header_read_timeout = \"500ms\"\nrequest_timeout = \"30s\"").await;
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let head = b"POST /hooks/erp HTTP/1.1\r\nhost: gateway\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    // One byte every 100 ms: the headers would take ~9 s; the gateway must not wait for them.
    let dribble = async {
        let mut sent = 0;
        for byte in head {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    };
    let mut buf = [0u8; 1024];
    let closed = tokio::select! {
        read = reader.read(&mut buf) => read.map(|n| buf[..n].to_vec()),
        sent = dribble => panic!("all {sent} header bytes were sent and the connection is still open"),
    };
    let elapsed = started.elapsed();
    eprintln!(
        "slowloris: disconnected after {} ms ({:?})",
        elapsed.as_millis(),
        closed.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
    );
    assert!(elapsed >= Duration::from_millis(400), "closed before the timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "closed {elapsed:?} after the first byte, timeout 500 ms");
    drop(stream);

    // A client that connects and sends nothing at all is cut off the same way.
    let started = Instant::now();
    let mut silent = TcpStream::connect(h.addr).await.unwrap();
    read_to_close(&mut silent, Duration::from_secs(3)).await.expect("a silent connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());

    // A client that sends its request in time is served as before.
    let ok = reqwest::get(format!("http://{}/healthz", h.addr)).await.unwrap();
    assert_eq!(ok.status(), 200);
    h.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_request_timeout_gets_503_request_timeout() {
    let h = Harness::start("request_timeout = \"1s\"").await;
    let started = Instant::now();
    let mut stream = h.stalled_request().await;
    let answer = read_to_close(&mut stream, Duration::from_secs(5)).await.expect("an answer within 5 s");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer).to_lowercase();
    eprintln!("request timeout: answered after {} ms", elapsed.as_millis());
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(h.gateway.store.stats(0).await.unwrap().events, 0, "nothing stored");
    h.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_concurrency_limit_is_refused_at_once() {
    let h = Harness::start("request_timeout = \"2s\"\nmax_concurrent_requests = 2").await;
    let mut stalled = vec![h.stalled_request().await, h.stalled_request().await];
    // Both are in the handler once their headers are parsed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let refused = reqwest::get(format!("http://{}/healthz", h.addr)).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500), "refused at once, not queued");
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    // When the stalled requests end (their timeout), their slots are free again.
    for stream in &mut stalled {
        let answer = read_to_close(stream, Duration::from_secs(5)).await.expect("timed out and answered");
        assert!(String::from_utf8_lossy(&answer).contains("request_timeout"));
    }
    let ok = reqwest::get(format!("http://{}/healthz", h.addr)).await.unwrap();
    assert_eq!(ok.status(), 200);
    h.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_past_the_byte_budget_gets_503_and_nothing_acked_is_lost() {
    // The budget holds one event of the largest body: concurrent large events take turns.
    let h = Harness::start("max_body_bytes = 8192\nmax_intake_bytes = 8192\nmax_concurrent_requests = 1000").await;
    let client = reqwest::Client::new();
    let secret = WebhookSecret::parse(SECRET).unwrap();
    let url = format!("http://{}/hooks/erp", h.addr);
    const EVENTS: usize = 60;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..EVENTS {
        let (client, secret, url) = (client.clone(), secret.clone(), url.clone());
        tasks.spawn(async move {
            let id = format!("big-{i}");
            let body = serde_json::to_vec(&serde_json::json!({
                "type": "document.created",
                "data": {"id": id, "text": "x".repeat(6_000)},
            }))
            .unwrap();
            let mut shed = 0u32;
            let started = Instant::now();
            loop {
                let ts = jiff::Timestamp::now().as_second();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("webhook-id", &id)
                    .header("webhook-timestamp", ts.to_string())
                    .header("webhook-signature", sign(&secret, &id, ts, &body))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                if status == 200 {
                    return shed;
                }
                assert_eq!(status, 503, "only shedding is expected");
                assert_eq!(response.headers()["retry-after"], "1");
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "overloaded", "{body}");
                assert!(body["error"]["message"].as_str().unwrap().contains("intake"), "{body}");
                shed += 1;
                assert!(started.elapsed() < Duration::from_secs(30), "{id} never accepted");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
    let mut shed = 0;
    while let Some(done) = tasks.join_next().await {
        shed += done.unwrap();
    }
    let events = h.gateway.store.stats(0).await.unwrap().events;
    eprintln!("byte budget: {EVENTS} events accepted, {shed} answers of 503 on the way");
    assert!(shed > 0, "concurrent events of a budget's size were never shed");
    assert_eq!(events, EVENTS as u64, "every acknowledged event is stored, once");
    h.gateway.shutdown().await;
}
