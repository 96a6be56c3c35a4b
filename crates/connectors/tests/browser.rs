//! The DingTalk simulator page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver) picks the approver, clicks Approve on an interactive card, and the card shows
//! the update the app answered over Stream.
//!
//! The WebDriver client is the few W3C commands this test needs, spoken with reqwest:
//! fantoccini's `ClientBuilder::rustls()` panics in this workspace because rustls ends up with
//! both the `ring` (reqwest) and `aws-lc-rs` (hyper-rustls defaults) providers and no process
//! default, and installing one needs a direct `rustls` dependency.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian `chromium`, `chromium-driver`;
//! `.ci/run` installs them). Without them the test is skipped, except when `CI=true`, where it
//! fails. A screenshot goes to `target/browser-test.png` on success and on failure.

use async_trait::async_trait;
use base64::Engine;
use connect::SystemClock;
use dingbridge_connectors::dingtalk::cards::{CardInstance, CardParams, CardsClient};
use dingbridge_connectors::dingtalk::openapi::{AppCredentials, OpenApi, OpenApiSettings};
use dingbridge_connectors::dingtalk::sim::org::{SEED_AGENT_ID, SEED_APP_KEY, SEED_APP_SECRET};
use dingbridge_connectors::dingtalk::sim::stream::StreamGateway;
use dingbridge_connectors::dingtalk::stream::{
    CallbackRefused, EventAck, Frame, StreamClient, StreamHandler, StreamSettings,
};
use dingbridge_connectors::dingtalk::DingTalkSim;
use secrecy::SecretString;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const APPROVER: &str = "manager4711";
const OUT_TRACK_ID: &str = "dingbridge-pr-PO-2024-0042-v1";
/// The seeded `ops` group; the approver is a member.
const OPS_GROUP: &str = "cidAbCdEfGhIjKlMnOpQrStUv==";
const WAIT: Duration = Duration::from_secs(10);

/// The app's Stream handler: approves on the card, as the gateway would after its checks (§4.2).
#[derive(Default)]
struct Approver {
    clicks: Mutex<Vec<Value>>,
}

#[async_trait]
impl StreamHandler for Approver {
    async fn on_event(&self, _frame: &Frame) -> EventAck {
        EventAck::Success
    }

    async fn on_callback(&self, frame: &Frame) -> Result<Option<Value>, CallbackRefused> {
        let data = frame.data_json().map_err(|e| e.to_string())?;
        let user = data["userId"].as_str().unwrap_or_default().to_owned();
        self.clicks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(data);
        // Merged by key: the card keeps its title and buttons; the approver's buttons turn off.
        Ok(Some(json!({
            "cardData": { "cardParamMap": { "status": format!("Approved by {user}") } },
            "userPrivateData": { "cardParamMap": { "canApprove": "false" } },
            "cardUpdateOptions": { "updateCardDataByKey": true, "updatePrivateDataByKey": true },
        })))
    }
}

/// chromedriver, killed when dropped (also when the test fails).
struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    async fn start() -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for chromedriver: {e}"))?
            .port();
        let child = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start {CHROMEDRIVER}: {e}"))?;
        let driver = Self { child, url: format!("http://127.0.0.1:{port}") };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http.get(format!("{}/status", driver.url)).send().await;
            if let Ok(resp) = ready {
                if resp.json::<Value>().await.is_ok_and(|s| s["value"]["ready"] == true) {
                    return Ok(driver);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("chromedriver did not get ready on {} within {WAIT:?}", driver.url));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Non-blocking: tokio reaps the killed process in the background.
        let _already_gone = self.child.start_kill();
    }
}

/// `Some(reason)` when the browser cannot run here.
fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).exists()).collect();
    (!missing.is_empty())
        .then(|| format!("{} not installed (Debian: apt-get install chromium chromium-driver)", missing.join(" and ")))
}

fn screenshot_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("browser-test.png")
}

async fn wait_for_stream(gateway: &StreamGateway) {
    let deadline = Instant::now() + WAIT;
    while gateway.connections(SEED_APP_KEY) == 0 {
        assert!(Instant::now() < deadline, "the app's Stream client did not connect within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One WebDriver session (W3C protocol, the commands this test needs).
struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
}

/// The key of a W3C element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn open(driver: &str, capabilities: Value) -> Result<Self, String> {
        let http = reqwest::Client::new();
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let value = command(http.post(format!("{driver}/session")).json(&body), "start a browser session").await?;
        let id =
            value["sessionId"].as_str().ok_or_else(|| format!("new session answered without a sessionId: {value}"))?;
        Ok(Self { session: format!("{driver}/session/{id}"), http })
    }

    async fn goto(&self, url: &str) -> Result<(), String> {
        command(self.http.post(format!("{}/url", self.session)).json(&json!({ "url": url })), "navigate")
            .await
            .map(drop)
    }

    /// The element's id, or an error when none matches.
    async fn find(&self, css: &str) -> Result<String, String> {
        let body = json!({ "using": "css selector", "value": css });
        let value = command(self.http.post(format!("{}/element", self.session)).json(&body), css).await?;
        value[ELEMENT_KEY].as_str().map(str::to_owned).ok_or_else(|| format!("{css}: no element reference in {value}"))
    }

    /// Polls for up to [`WAIT`] until `css` matches.
    async fn wait_for(&self, css: &str) -> Result<String, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.find(css).await {
                Ok(id) => return Ok(id),
                Err(err) if Instant::now() > deadline => return Err(format!("waited {WAIT:?}: {err}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn click(&self, element: &str) -> Result<(), String> {
        let url = format!("{}/element/{element}/click", self.session);
        command(self.http.post(url).json(&json!({})), "click").await.map(drop)
    }

    async fn text(&self, element: &str) -> Result<String, String> {
        let value = command(self.http.get(format!("{}/element/{element}/text", self.session)), "read text").await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    async fn enabled(&self, element: &str) -> Result<bool, String> {
        let value = command(self.http.get(format!("{}/element/{element}/enabled", self.session)), "read state").await?;
        Ok(value.as_bool().unwrap_or(false))
    }

    async fn screenshot(&self) -> Result<Vec<u8>, String> {
        let value = command(self.http.get(format!("{}/screenshot", self.session)), "screenshot").await?;
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .map_err(|e| format!("screenshot is not base64: {e}"))
    }

    async fn close(self) -> Result<(), String> {
        command(self.http.delete(&self.session), "close the session").await.map(drop)
    }
}

/// Sends one WebDriver command and returns its `value`; an error names `what` and the driver's reason.
async fn command(request: reqwest::RequestBuilder, what: &str) -> Result<Value, String> {
    let resp = request.timeout(Duration::from_secs(30)).send().await.map_err(|e| format!("{what}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("{what}: the answer is not JSON: {e}"))?;
    if !status.is_success() {
        let value = &body["value"];
        return Err(format!("{what}: HTTP {status} {} ({})", value["error"], value["message"]));
    }
    Ok(body["value"].clone())
}

/// What a person does: open the page, pick the approver, click Approve, watch the card.
async fn click_approve(browser: &Browser, base: &str) -> Result<String, String> {
    browser.goto(&format!("{base}/_sim/ui")).await?;
    let option = browser.wait_for(&format!("[data-testid=\"user-option-{APPROVER}\"]")).await?;
    browser.click(&option).await?;

    let button = browser.wait_for(&format!("[data-testid=\"btn-{OUT_TRACK_ID}-approve\"]")).await?;
    if !browser.enabled(&button).await? {
        return Err("the Approve button is disabled for the approver".to_owned());
    }
    browser.click(&button).await?;

    let status = format!("[data-testid=\"card-status-{OUT_TRACK_ID}\"]");
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        // The page re-renders on change, so look the element up afresh each time.
        if let Ok(element) = browser.find(&status).await {
            if let Ok(text) = browser.text(&element).await {
                if text.starts_with("Approved by") {
                    // The re-rendered card shows the approver's updated private data too.
                    let button = browser.find(&format!("[data-testid=\"btn-{OUT_TRACK_ID}-approve\"]")).await?;
                    if browser.enabled(&button).await? {
                        return Err("the Approve button is still enabled after the approval".to_owned());
                    }
                    return Ok(text);
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = match browser.find("[data-testid=\"error\"]").await {
        Ok(element) => browser.text(&element).await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    Err(format!("the card status still reads {last:?} after {WAIT:?}; page error: {error:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_card_in_a_real_browser() {
    if let Some(reason) = missing_tools() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true, but the browser test cannot run: {reason}");
        eprintln!("skipping the browser test: {reason}");
        return;
    }

    let full = Arc::new(DingTalkSim::new(Arc::new(SystemClock)));
    let running = sim::serve(full.clone(), "127.0.0.1:0".parse().unwrap()).await.expect("serve the simulator");
    let base = running.url();
    let secret = || SecretString::from(SEED_APP_SECRET.to_owned());

    let approver = Arc::new(Approver::default());
    let mut settings = StreamSettings::new(&base, SEED_APP_KEY, secret());
    settings.outbound = connect::http::Outbound::loopback();
    let stream = StreamClient::spawn(settings, approver.clone(), tokio_util::sync::CancellationToken::new());
    wait_for_stream(&full.stream).await;

    let credentials = AppCredentials {
        app_key: SEED_APP_KEY.to_owned(),
        app_secret: secret(),
        agent_id: Some(SEED_AGENT_ID),
        corp_id: None,
    };
    let api =
        OpenApi::new(credentials, OpenApiSettings::with_base(&base), Arc::new(SystemClock)).expect("OpenAPI client");
    let buttons = json!([
        { "id": "approve", "label": "Approve", "enabledIf": "canApprove" },
        { "id": "reject", "label": "Reject", "enabledIf": "canApprove" },
    ]);
    let params = CardParams::new()
        .text("title", "Purchase request PO-2024-0042")
        .text("status", "Waiting for approval")
        .text("amount", "HK$12,800")
        .text("actions", buttons.to_string());
    let card = CardInstance::to_group("dingbridge-approval.schema", OUT_TRACK_ID, OPS_GROUP, SEED_APP_KEY, params)
        .with_private(APPROVER, CardParams::new().text("canApprove", "true"))
        .with_stream_callback();
    CardsClient::new(api).create_and_deliver(&card).await.expect("create and deliver the card");

    let driver = Driver::start().await.expect("chromedriver");
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
        },
    });
    let browser = Browser::open(&driver.url, capabilities).await.expect("a Chromium session from chromedriver");

    let outcome = click_approve(&browser, &base).await;
    let shot = screenshot_path();
    match browser.screenshot().await {
        Ok(png) => {
            if let Some(dir) = shot.parent() {
                let _exists = std::fs::create_dir_all(dir);
            }
            if let Err(err) = std::fs::write(&shot, png) {
                eprintln!("could not save {}: {err}", shot.display());
            }
        }
        Err(err) => eprintln!("no screenshot: {err}"),
    }
    // Close the session before asserting, so Chromium never outlives a failed test.
    if let Err(err) = browser.close().await {
        eprintln!("closing the browser session failed: {err}");
    }
    drop(driver);

    let status = outcome.unwrap_or_else(|err| panic!("{err} (screenshot: {})", shot.display()));
    assert_eq!(status, format!("Approved by {APPROVER}"));
    // The click really went over Stream as DingTalk sends it, and the answer is the card's state.
    let clicks = approver.clicks.lock().unwrap().clone();
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    assert_eq!((clicks[0]["outTrackId"].as_str(), clicks[0]["userId"].as_str()), (Some(OUT_TRACK_ID), Some(APPROVER)));
    let content: Value = serde_json::from_str(clicks[0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["cardPrivateData"]["actionIds"], json!(["approve"]));
    let stored = full.cards.card(OUT_TRACK_ID).unwrap();
    assert_eq!(stored.card_data.get("status").map(String::as_str), Some("Approved by manager4711"));
    assert_eq!(stored.card_data.get("title").map(String::as_str), Some("Purchase request PO-2024-0042"));

    stream.shutdown().await;
    running.shutdown().await.expect("stop the simulator");
}
