//! `dingbridge demo`: the simulators, a gateway on SQLite in a temporary folder with
//! `examples/hk-trading.toml`, and the scenarios that exist so far, with a readable timeline.
//! The scenarios are checks: the demo ends with `S<n> <title>: ok|FAILED (reason)` per scenario
//! and exits 1 if any failed.

mod approvals;
mod crm;
mod erp;

use crate::gateway::{Gateway, Overrides};
use crate::sims::{self, DingTalkHarness};
use anyhow::Context;
use connect::webhook::WebhookSecret;
use connectors::salesforce::sim::SalesforceSim;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::sender::signed_headers;

/// The demo config, embedded so `dingbridge demo` works from any folder.
const HK_TRADING: &str = include_str!("../../../examples/hk-trading.toml");
const DEMO_WEBHOOK_SECRET: &str = "whsec_ZGluZ2JyaWRnZS1kZW1vLXdlYmhvb2stc2VjcmV0LTAx";

/// Lines stamped with when things happened, printed in time order when a scenario ends (the
/// simulator's receipts are only known after the fact).
struct Timeline {
    start: Instant,
    /// The same instant on the wall clock, to place the simulator's receipt times.
    start_wall: jiff::Timestamp,
    lines: std::sync::Mutex<Vec<(f64, String)>>,
}

impl Timeline {
    fn new() -> Self {
        Self { start: Instant::now(), start_wall: jiff::Timestamp::now(), lines: std::sync::Mutex::default() }
    }

    fn line(&self, direction: &str, text: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64() * 1000.0;
        self.push(t, direction, text.as_ref());
    }

    /// A line stamped with the time something happened elsewhere (e.g. the simulator's receipt).
    fn line_at(&self, at: jiff::Timestamp, direction: &str, text: impl AsRef<str>) {
        let t = at.duration_since(self.start_wall).as_secs_f64() * 1000.0;
        self.push(t, direction, text.as_ref());
    }

    fn push(&self, t: f64, direction: &str, text: &str) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push((t, format!("{t:>9.1} ms  {direction:<4} {text}")));
        }
    }

    fn flush(&self) {
        let mut lines = self.lines.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        lines.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, line) in lines {
            println!("{line}");
        }
    }
}

struct ScenarioResult {
    id: &'static str,
    title: &'static str,
    failure: Option<String>,
}

impl ScenarioResult {
    /// Runs a scenario's steps; their first error is the scenario's failure.
    async fn of(
        id: &'static str,
        title: &'static str,
        steps: impl std::future::Future<Output = anyhow::Result<()>>,
    ) -> ScenarioResult {
        let failure = steps.await.err().map(|err| format!("{err:#}"));
        ScenarioResult { id, title, failure }
    }
}

pub async fn run(once: bool, listen: Option<String>, keep: Option<std::path::PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = DemoDir::new(keep)?;
    let dingtalk = DingTalkHarness::start().await?;
    set_demo_env(&dingtalk)?;
    let audit_key_file = demo_audit_key(dir.path())?;
    let sf_config = connectors::salesforce::sim::SimConfig { daily_limit: crm::DAILY_LIMIT, ..Default::default() };
    let salesforce = Arc::new(SalesforceSim::new(sf_config, Arc::new(connect::SystemClock)));
    let salesforce_running = sim::serve(salesforce.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let erp_sims = erp::ErpSims::start().await?;
    let config_path = dir.path().join("hk-trading.toml");
    std::fs::write(&config_path, HK_TRADING)?;
    let Some(config) = crate::gateway::load(&config_path) else {
        anyhow::bail!("the embedded demo config is invalid");
    };
    let listen = match listen {
        Some(listen) => listen,
        None if std::net::TcpListener::bind("127.0.0.1:8080").is_ok() && !once => "127.0.0.1:8080".into(),
        None => "127.0.0.1:0".into(),
    };
    let overrides = Overrides {
        store_url: Some(format!("sqlite://{}/dingbridge.db", dir.path().display())),
        sim_endpoints: Some({
            let mut endpoints = dingtalk.endpoint_map();
            endpoints.insert("salesforce".into(), salesforce_running.url());
            erp_sims.endpoints(&mut endpoints);
            endpoints
        }),
        listen: Some(listen),
        // The usual admin port when it is free and a person is watching; any free port otherwise.
        admin_listen: Some(if std::net::TcpListener::bind("127.0.0.1:9090").is_ok() && !once {
            "127.0.0.1:9090".into()
        } else {
            "127.0.0.1:0".into()
        }),
        clock: None,
    };
    let gateway = Gateway::start(config, overrides).await?;
    let base = format!("http://{}", gateway.addr);
    let outbound_token = std::env::var("DINGBRIDGE_SALESFORCE_OUTBOUND_TOKEN")?;
    salesforce.set_outbound_url(Some(format!("{base}/intake/salesforce/crm/{outbound_token}")));
    erp::connect(&erp_sims, &base).await?;
    println!("dingbridge demo");
    println!("  gateway        {base}   (POST /hooks/erp-events, GET /healthz)");
    println!("  admin          http://{}   (GET /metrics, /api/ with the admin token)", gateway.admin_addr);
    println!("  dingtalk sim   {}   (GET /_sim/requests, /_sim/info)", dingtalk.url());
    println!("  dingtalk page  {}/_sim/ui?user=finance0001   (click the cards as a DingTalk user)", dingtalk.url());
    println!(
        "  salesforce sim {}   (Outbound Messages -> {base}/intake/salesforce/crm/<token>)",
        salesforce_running.url()
    );
    let erp_urls: Vec<String> = testkit::erp::SYSTEMS.iter().map(|s| erp_sims.url(s)).collect();
    println!("  netsuite sim   {}   (user events -> {base}/intake/netsuite/netsuite)", erp_urls[0]);
    println!("  dynamics sim   {}   (Dataverse webhooks -> {base}/intake/dynamics/dynamics)", erp_urls[1]);
    println!(
        "  sap sim        {}   (IDocs -> {base}/intake/sap/ecc/idoc; drop folder {}/idoc-in)",
        erp_urls[2],
        dir.path().display()
    );
    println!("  store          {}/dingbridge.db", dir.path().display());
    println!(
        "  audit          dingbridge audit verify --store sqlite://{}/dingbridge.db --key-file {}",
        dir.path().display(),
        audit_key_file.display()
    );
    println!();

    let timeline = Timeline::new();
    let mut results = vec![scenario_pipeline(&timeline, &base, &dingtalk, &gateway).await];
    timeline.flush();
    let timeline = Timeline::new();
    results.push(scenario_dingtalk_app(&timeline, &base, &dingtalk).await);
    timeline.flush();
    let timeline = Timeline::new();
    results.push(crm::scenario_opportunities(&timeline, &dingtalk, &salesforce).await);
    timeline.flush();
    let timeline = Timeline::new();
    results.push(crm::scenario_quota(&timeline, &base, &gateway, &salesforce).await);
    timeline.flush();
    let timeline = Timeline::new();
    results.push(erp::scenario_freshness(&timeline, &dingtalk, &gateway, &erp_sims).await);
    timeline.flush();
    let timeline = Timeline::new();
    results.push(erp::scenario_legacy(&timeline, &dingtalk, &gateway, &erp_sims, &dir.path().join("idoc-in")).await);
    timeline.flush();
    let timeline = Timeline::new();
    results.push(approvals::scenario_approval(&timeline, &dingtalk, &gateway, &erp_sims).await);
    timeline.flush();
    let timeline = Timeline::new();
    results.push(approvals::scenario_authority(&timeline, &dingtalk, &gateway, &erp_sims).await);
    timeline.flush();

    println!();
    let mut failed = false;
    for result in &results {
        match &result.failure {
            None => println!("{} {}: ok", result.id, result.title),
            Some(reason) => {
                failed = true;
                println!("{} {}: FAILED ({reason})", result.id, result.title);
            }
        }
    }
    if !once {
        if let Err(err) = leave_a_card_to_click(&base).await {
            println!("(could not leave a card to click: {err:#})");
        }
        println!();
        println!("The demo keeps running. Open {}/_sim/ui?user=finance0001 and click Approve or", dingtalk.url());
        println!("Reject on requisition PR-5002, SAP requisition 10000046 or Business Central PO 106021");
        println!("(then as boss0001 for its second step); the decision lands in the ERP simulator:");
        println!(
            "  {}/_sim/requests shows the TASKPROCESSING Decision, {}/_sim/requests the BC approve action.",
            erp_urls[2], erp_urls[1]
        );
        println!("Send your own events to {base}/hooks/erp-events. Ctrl-C stops it.");
        let _ = tokio::signal::ctrl_c().await;
    }
    if dir.kept {
        dir.snapshot(&gateway).await?;
        // The access tokens the simulators issued during the run are secrets too.
        let mut issued = Vec::new();
        issued.extend(dingtalk.sim().org.current_token(connectors::dingtalk::sim::org::SEED_APP_KEY));
        issued.extend(salesforce.issued_tokens());
        issued.extend(erp_sims.dynamics.issued_tokens());
        dir.write_secrets(&issued)?;
    }
    gateway.shutdown().await;
    dingtalk.shutdown().await;
    salesforce_running.shutdown().await?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Where the demo works: a temporary folder, or the folder `--keep` names (kept afterwards).
struct DemoDir {
    path: std::path::PathBuf,
    kept: bool,
    _temp: Option<tempfile::TempDir>,
}

impl DemoDir {
    fn new(keep: Option<std::path::PathBuf>) -> anyhow::Result<DemoDir> {
        match keep {
            Some(path) => {
                std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
                Ok(DemoDir { path, kept: true, _temp: None })
            }
            None => {
                let temp = tempfile::tempdir().context("creating the demo's temporary folder")?;
                Ok(DemoDir { path: temp.path().to_path_buf(), kept: false, _temp: Some(temp) })
            }
        }
    }

    fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `secrets.json`: every `DINGBRIDGE_*` value the demo set (tokens, keys, passwords) and the
    /// access tokens the simulators `issued` (as `ISSUED_TOKEN_n`), so a leak check knows
    /// exactly what must appear nowhere else.
    fn write_secrets(&self, issued: &[String]) -> anyhow::Result<()> {
        let mut secrets: std::collections::BTreeMap<String, String> =
            std::env::vars().filter(|(name, _)| name.starts_with("DINGBRIDGE_") && name != "DINGBRIDGE_LOG").collect();
        secrets.extend(issued.iter().enumerate().map(|(n, token)| (format!("ISSUED_TOKEN_{n}"), token.clone())));
        std::fs::write(self.path.join("secrets.json"), serde_json::to_vec_pretty(&secrets)?)?;
        Ok(())
    }

    /// What an operator sees at the end: `/metrics` and the dead letters through the admin API.
    async fn snapshot(&self, gateway: &Gateway) -> anyhow::Result<()> {
        let admin = format!("http://{}", gateway.admin_addr);
        let client = reqwest::Client::new();
        let metrics = client.get(format!("{admin}/metrics")).send().await?.text().await?;
        std::fs::write(self.path.join("metrics.txt"), metrics)?;
        let token = std::env::var("DINGBRIDGE_ADMIN_TOKEN").unwrap_or_default();
        let dead = client.get(format!("{admin}/api/dead-letters")).bearer_auth(token).send().await?.text().await?;
        std::fs::write(self.path.join("dead-letters.json"), dead)?;
        Ok(())
    }
}

/// A fresh audit key for this demo's store (the store lives in `dir` and goes away with it), in
/// `DINGBRIDGE_AUDIT_KEY` for the config and in `dir/audit.key` for `audit verify --key-file`. Not
/// a constant, so no demo key can end up guarding a real store.
fn demo_audit_key(dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("audit.key");
    std::fs::write(&path, &key).with_context(|| format!("writing {}", path.display()))?;
    // Set before the gateway starts any task that could read the environment concurrently.
    std::env::set_var(crate::store_access::AUDIT_KEY_ENV, key);
    Ok(path)
}

fn set_demo_env(dingtalk: &DingTalkHarness) -> anyhow::Result<()> {
    let pairs = [("OPS", "ops"), ("FINANCE", "finance"), ("SALES", "sales-hk")];
    // Set before the gateway starts any task that could read the environment concurrently.
    std::env::set_var("DINGBRIDGE_WEBHOOK_SECRET", DEMO_WEBHOOK_SECRET);
    std::env::set_var("DINGBRIDGE_ADMIN_TOKEN", "demo-admin-token");
    std::env::set_var("DINGBRIDGE_DINGTALK_APP_SECRET", connectors::dingtalk::sim::org::SEED_APP_SECRET);
    std::env::set_var("DINGBRIDGE_SALESFORCE_SECRET", connectors::salesforce::sim::seed::CLIENT_SECRET);
    // A new one each run: it is the only thing that authenticates an Outbound Message.
    std::env::set_var("DINGBRIDGE_SALESFORCE_OUTBOUND_TOKEN", testkit::random_url_token());
    erp::set_env();
    for (var, robot) in pairs {
        let creds = dingtalk.robot(robot).with_context(|| format!("the simulator has no robot `{robot}`"))?;
        std::env::set_var(format!("DINGBRIDGE_{var}_ROBOT_TOKEN"), creds.access_token);
        std::env::set_var(format!("DINGBRIDGE_{var}_ROBOT_SECRET"), creds.secret);
    }
    Ok(())
}

/// A requisition PR-5002 waiting in the finance group, for a person to click on the page.
async fn leave_a_card_to_click(base: &str) -> anyhow::Result<()> {
    let secret = WebhookSecret::parse(DEMO_WEBHOOK_SECRET)?;
    let quiet = Timeline::new();
    post_event(&quiet, &reqwest::Client::new(), base, "evt-5002", &requisition("PR-5002", "6200.00"), &secret).await?;
    Ok(())
}

fn requisition(id: &str, amount: &str) -> serde_json::Value {
    serde_json::json!({"type": "purchase_requisition.created", "timestamp": jiff::Timestamp::now().to_string(),
        "data": {"id": id, "amount": {"amount": amount, "currency": "HKD"},
                 "requester": "staff0815", "requester_name": "Ho Siu Fan",
                 "approver": "finance0001", "approver_name": "Cheung Mei Ling"}})
}

/// Waits until `check` says yes, polling every 20 ms, at most `within`.
async fn until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return Ok(found);
        }
        anyhow::ensure!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The DingTalk app side: a requisition card in the finance group, clicked as the approver
/// through the simulator's page API, the click back over Stream, the card updated; a payment
/// approved in DingTalk's OA approval and the result sent to the requester.
async fn scenario_dingtalk_app(timeline: &Timeline, base: &str, dingtalk: &DingTalkHarness) -> ScenarioResult {
    ScenarioResult::of(
        "S0",
        "DingTalk app: card -> click over Stream -> card updated; OA approval -> requester told",
        dingtalk_app_steps(timeline, base, dingtalk),
    )
    .await
}

async fn dingtalk_app_steps(timeline: &Timeline, base: &str, dingtalk: &DingTalkHarness) -> anyhow::Result<()> {
    use connectors::dingtalk::sim::org::SEED_APP_KEY;
    let sim = dingtalk.sim().clone();
    let secret = WebhookSecret::parse(DEMO_WEBHOOK_SECRET)?;
    let client = reqwest::Client::new();
    until("the gateway's Stream connection", Duration::from_secs(10), || {
        (sim.stream.connections(SEED_APP_KEY) > 0).then_some(())
    })
    .await?;
    timeline.line("LINK", "gateway connected to DingTalk in Stream mode (no public URL)");

    post_event(timeline, &client, base, "evt-5001", &requisition("PR-5001", "38500.00"), &secret).await?;
    let card = until("the requisition card", Duration::from_secs(10), || sim.cards.card("pr-PR-5001")).await?;
    timeline.line(
        "OUT",
        format!(
            "dingtalk card   pr-PR-5001 -> group finance: {} / {} / {}",
            card.params.get("title").map_or("", String::as_str),
            card.params.get("amount").map_or("", String::as_str),
            card.params.get("status").map_or("", String::as_str)
        ),
    );
    let click =
        serde_json::json!({"outTrackId": "pr-PR-5001", "userId": "finance0001", "actionId": "approve", "params": {}});
    let answer = client.post(format!("{}/_sim/actions/card_click", dingtalk.url())).json(&click).send().await?;
    anyhow::ensure!(answer.status().is_success(), "the click was refused: {}", answer.text().await.unwrap_or_default());
    timeline.line("CLICK", "finance0001 (Cheung Mei Ling) presses Approve on pr-PR-5001 in DingTalk");
    let status = until("the card update", Duration::from_secs(10), || {
        sim.cards.card("pr-PR-5001").and_then(|c| c.params.get("status").cloned()).filter(|s| s.starts_with("Approved"))
    })
    .await?;
    timeline.line("IN", "dingtalk card_action clicked pr-PR-5001 (over Stream, stored before the ACK)");
    timeline.line("OUT", format!("dingtalk card   pr-PR-5001 updated: {status}; buttons off for the approver"));

    let payment = serde_json::json!({"type": "payment.created", "timestamp": jiff::Timestamp::now().to_string(),
        "data": {"id": "PAY-7001", "amount": {"amount": "12800.00", "currency": "HKD"}, "payee": "Kowloon Metal Works Ltd",
                 "invoice": "INV-2026-0117", "requester": "staff0815", "approver": "finance0001"}});
    post_event(timeline, &client, base, "evt-7001", &payment, &secret).await?;
    let task = until("the OA approval task", Duration::from_secs(10), || {
        sim.workflow.pending_tasks_for("finance0001").into_iter().next()
    })
    .await?;
    timeline.line("OUT", format!("dingtalk OA approval {} started, task for finance0001", task.instance_id));
    let approve = serde_json::json!({"processInstanceId": task.instance_id, "userId": "finance0001", "remark": "Invoice checked"});
    let answer = client.post(format!("{}/_sim/actions/approve", dingtalk.url())).json(&approve).send().await?;
    anyhow::ensure!(
        answer.status().is_success(),
        "the approval was refused: {}",
        answer.text().await.unwrap_or_default()
    );
    timeline.line("CLICK", "finance0001 approves the payment in DingTalk");
    until("the requester's work notification", Duration::from_secs(10), || {
        sim.messages.user_inbox("staff0815").into_iter().next()
    })
    .await?;
    timeline.line("IN", "dingtalk approval finished (agree), over Stream");
    timeline.line("OUT", "dingtalk work notice -> staff0815 (Ho Siu Fan): Approval agree");
    Ok(())
}

async fn post_event(
    timeline: &Timeline,
    client: &reqwest::Client,
    base: &str,
    id: &str,
    event: &serde_json::Value,
    secret: &WebhookSecret,
) -> anyhow::Result<u16> {
    let body = serde_json::to_vec(event)?;
    let response = client
        .post(format!("{base}/hooks/erp-events"))
        .headers(signed_headers(secret, id, jiff::Timestamp::now().as_second(), &body))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    let kind = event.get("type").and_then(|t| t.as_str()).unwrap_or_default();
    let outcome = answer
        .get("status")
        .and_then(|s| s.as_str())
        .or_else(|| answer.pointer("/error/code").and_then(|s| s.as_str()))
        .unwrap_or("");
    timeline.line("IN", format!("erp-events {kind:<28} webhook-id {id:<10} -> {status} {outcome}"));
    Ok(status)
}

/// S0: the spine's own pipeline check: signed webhooks in, flows, robot messages out, a replay
/// deduplicated, a bad signature refused, an ambiguous amount dead-lettered.
async fn scenario_pipeline(
    timeline: &Timeline,
    base: &str,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
) -> ScenarioResult {
    let title = "pipeline: signed webhook -> flows -> DingTalk robot";
    ScenarioResult::of("S0", title, pipeline_steps(timeline, base, dingtalk, gateway)).await
}

async fn pipeline_steps(
    timeline: &Timeline,
    base: &str,
    dingtalk: &DingTalkHarness,
    gateway: &Gateway,
) -> anyhow::Result<()> {
    let secret = WebhookSecret::parse(DEMO_WEBHOOK_SECRET)?;
    let client = reqwest::Client::new();
    let now = jiff::Timestamp::now().to_string();
    let events = [
        (
            "evt-1001",
            serde_json::json!({"type": "purchase_order.created", "timestamp": now,
            "data": {"id": "PO-1001", "amount": {"amount": "128000.00", "currency": "HKD"}, "supplier": "Kowloon Metal Works Ltd"}}),
        ),
        (
            "evt-1002",
            serde_json::json!({"type": "purchase_order.created", "timestamp": now,
            "data": {"id": "PO-1002", "amount": {"amount": "800.00", "currency": "HKD"}, "supplier": "Tsuen Wan Stationery"}}),
        ),
        (
            "evt-2001",
            serde_json::json!({"type": "shipment.status_changed", "timestamp": now,
            "data": {"id": "SH-77", "status": "In transit", "order": "SO-88"}}),
        ),
        (
            "evt-3001",
            serde_json::json!({"type": "inventory_level.updated", "timestamp": now,
            "data": {"id": "SKU-42", "quantity": {"value": "12", "unit": "DZN"}}}),
        ),
    ];
    for (id, body) in &events {
        let status = post_event(timeline, &client, base, id, body, &secret).await?;
        anyhow::ensure!(status == 200, "event {id} was answered {status}, expected 200");
    }
    // The sender retries evt-2001: same webhook-id, so the same event, one message.
    let status = post_event(timeline, &client, base, "evt-2001", &events[2].1, &secret).await?;
    anyhow::ensure!(status == 200, "the replay of evt-2001 was answered {status}, expected 200");
    // An ambiguous amount: HKD has 2 decimals. Kept as a dead letter, never guessed.
    let bad = serde_json::json!({"type": "purchase_order.created", "timestamp": now,
        "data": {"id": "PO-1003", "amount": {"amount": "12.345", "currency": "HKD"}, "supplier": "?"}});
    let status = post_event(timeline, &client, base, "evt-1003", &bad, &secret).await?;
    anyhow::ensure!(status == 200, "the ambiguous amount was answered {status}, expected 200 + dead letter");
    // A forged request: refused before anything is stored.
    let forger = WebhookSecret::parse("whsec_bm90LXRoZS1zaGFyZWQtc2VjcmV0LWp1c3QtYS1ndWVzcw==")?;
    let status = post_event(timeline, &client, base, "evt-9999", &events[0].1, &forger).await?;
    anyhow::ensure!(status == 401, "a bad signature was answered {status}, expected 401");

    // Expect: finance gets PO-1001 (PO-1002 is under the threshold), ops gets SH-77 once and SKU-42.
    let expected = [("finance", 1usize), ("ops", 2usize)];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut shown = std::collections::BTreeMap::<&str, usize>::new();
    loop {
        for (robot, _) in expected {
            let messages = dingtalk.messages(robot);
            let already = shown.entry(robot).or_insert(0);
            for message in messages.iter().skip(*already) {
                timeline.line_at(
                    message.at,
                    "OUT",
                    format!("dingtalk robot {robot:<8} {}", sims::summary(&message.body)),
                );
            }
            *already = messages.len();
        }
        if expected.iter().all(|(robot, n)| shown.get(robot).copied().unwrap_or(0) >= *n) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "messages did not all arrive within 15 s: {shown:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Give a duplicate a chance to show up before judging.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (robot, n) in expected {
        let got = dingtalk.messages(robot).len();
        anyhow::ensure!(got == n, "robot {robot} received {got} messages, expected {n}");
    }
    let finance = dingtalk.messages("finance");
    let text = finance.first().map(|m| m.body.to_string()).unwrap_or_default();
    anyhow::ensure!(text.contains("128000.00") && text.contains("PO-1001"), "the finance card lacks the PO amount");
    let ops = dingtalk.messages("ops");
    let stock = ops.iter().map(|m| m.body.to_string()).find(|t| t.contains("SKU-42")).unwrap_or_default();
    anyhow::ensure!(stock.contains("12 DZN"), "the stock message lacks `12 DZN`");
    let dead = gateway.store.list_dead(10).await?;
    anyhow::ensure!(dead.len() == 1, "expected 1 dead letter (the 3-decimal HKD amount), found {}", dead.len());
    timeline.line("DLQ", format!("dead letter: {}", dead[0].reason));
    Ok(())
}
