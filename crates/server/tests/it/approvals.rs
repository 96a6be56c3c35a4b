//! S1/S2 end to end: purchase requests waiting in NetSuite, Business Central and SAP become
//! approval cards in the finance group of the DingTalk simulator; clicks come back over Stream,
//! are verified against roles, identity and segregation of duties, and the decision is written to
//! the ERP simulator exactly once.
//!
//! Cast (DingTalk simulator seed): Chan Tai Man (manager4711) requested the NetSuite and SAP
//! requisitions; `approvers` are Cheung Mei Ling (finance0001), Lam Chi Keung (pay0002) and
//! manager4711 himself; `managing_director` is Lee Wai Kit (boss0001); Ng Hoi Yan (acct0003) is a
//! junior clerk in the finance group with no role. Amounts: NetSuite PR000232 HKD 1,531.20 and
//! SAP 10000045 HKD 1,020 take one step; Business Central PO 106021 HKD 1,710 takes two
//! (approvers, then the managing director).

use connectors::dingtalk::sim::org::{SEED_APP_KEY, SEED_APP_SECRET};
use connectors::dynamics::sim::seed as dv_seed;
use connectors::netsuite::sim::seed as ns_seed;
use connectors::sap::sim::seed as sap_seed;
use dingbridge_server::gateway::{Gateway, Overrides};
use engine::approvals::machine::{self, Status};
use serde_json::{json, Value};
use sim::Simulator;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::dingtalk::DingTalkHarness;

const FINANCE: &str = "cidF1nAnCe9zYxWvUt8sRqPo/A==";
const WAIT: Duration = Duration::from_secs(20);
/// The card-callback capability of the HTTP-mode rig.
const HTTP_CARD_TOKEN: &str = "Tq9wE3rY7uI1oP5aS2dF8gH4";
const WEBHOOK_SECRET: &str = "whsec_YXBwcm92YWxzLWUyZS13ZWJob29rLXNlY3JldC0wMDAx";

/// A clock tests move by hand (escalation): real time plus an offset, so retries and leases
/// still fall due while a test jumps hours or days ahead.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(0)))
    }
    /// From now on the clock reads `at` plus the real time passed since this call.
    pub fn set(&self, at: jiff::Timestamp) {
        let offset = at.as_millisecond() - jiff::Timestamp::now().as_millisecond();
        self.0.store(offset, Ordering::SeqCst);
    }
}

impl connect::Clock for ManualClock {
    fn now(&self) -> jiff::Timestamp {
        let ms = jiff::Timestamp::now().as_millisecond() + self.0.load(Ordering::SeqCst);
        jiff::Timestamp::from_millisecond(ms).unwrap()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erp {
    Netsuite,
    Dynamics,
    Sap,
}

impl Erp {
    fn source(self) -> &'static str {
        match self {
            Erp::Netsuite => "ns",
            Erp::Dynamics => "dv",
            Erp::Sap => "s4",
        }
    }

    fn entity_id(self) -> &'static str {
        match self {
            Erp::Netsuite => "4691",
            Erp::Dynamics => dv_seed::PO_106021,
            Erp::Sap => "10000045",
        }
    }

    fn key(self) -> String {
        machine::approval_key(self.source(), "purchase_request", self.entity_id())
    }

    fn card(self) -> String {
        machine::card_id(&self.key())
    }

    /// How many steps its amount takes.
    fn steps(self) -> usize {
        if self == Erp::Dynamics {
            2
        } else {
            1
        }
    }
}

/// The audit key of the rig's gateway.
pub const AUDIT_KEY: &str = "approvals-e2e-audit-key-0123456789abcdef";

fn config(escalation: bool) -> String {
    let escalation = if escalation {
        "remind_after = \"4h\"\nescalate_after = \"8h\"\nescalate_to = \"managing_director\"\n"
    } else {
        ""
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[audit]
key = {{ env = "APRE2E_AUDIT_KEY" }}

[delivery]
retry_schedule = ["300ms", "600ms", "1s", "1s", "1s", "1s", "1s", "1s"]
lease = "5s"
request_timeout = "2s"

[dingtalk.apps.hk]
app_key = "{SEED_APP_KEY}"
app_secret = {{ env = "APRE2E_APP_SECRET" }}
agent_id = 3120001
sync_directory = true

[sources.dt]
type = "dingtalk"
app = "hk"
mode = "stream"

# An ERP script's webhook source: whoever holds its secret must not be able to decide.
[sources.erp-events]
type = "webhook"
secret = {{ env = "APRE2E_WEBHOOK_SECRET" }}

[netsuite.accounts.main]
account_id = "{ns_account}"
consumer_key = "{ns_ck}"
consumer_secret = {{ env = "APRE2E_NS_CONSUMER_SECRET" }}
token_id = "{ns_token}"
token_secret = {{ env = "APRE2E_NS_TOKEN_SECRET" }}
time_zone = "UTC"

[dynamics.orgs.main]
tenant_id = "{dv_tenant}"
client_id = "{dv_client}"
client_secret = {{ env = "APRE2E_DV_SECRET" }}
dataverse_url = "https://{dv_org}"
bc_environment = "{dv_env}"
bc_company = "{dv_company}"

[sap.systems.s4]
base_url = "https://s4.example.com.hk:44300"
sap_client = "{sap_client}"
user = "{sap_user}"
password = {{ env = "APRE2E_SAP_PASSWORD" }}

[sources.ns]
type = "netsuite"
account = "main"
objects = ["purchaseRequisition"]
poll = "1h"

[sources.dv]
type = "dynamics"
org = "main"
objects = ["purchaseOrders"]
poll = "1h"

[sources.s4]
type = "sap"
system = "s4"
objects = ["A_PurchaseRequisitionHeader"]
poll = "1h"

[destinations.app]
type = "dingtalk_app"
app = "hk"

[roles.approvers]
users = ["finance0001", "pay0002", "manager4711"]

[roles.managing_director]
users = ["boss0001"]

[identity.ns]
match = ["email", "job_number"]

[identity.dv]
match = ["job_number"]

[identity.s4]
users = {{ manager4711 = "CHANTM", finance0001 = "CHEUNGML", pay0002 = "LAMCK", boss0001 = "LEEWK", acct0003 = "NGHY" }}

[approvals.fx]
base = "HKD"
rates = {{ USD = "7.80" }}

[[approvals.policies]]
name = "requisitions"
sources = ["ns", "dv", "s4"]
entity = "purchase_request"
currency = "HKD"
deliver = {{ card = "app", group = "{FINANCE}" }}
{escalation}
[[approvals.policies.bands]]
min = "0"
below = "1600"
steps = [{{ roles = ["approvers"] }}]

[[approvals.policies.bands]]
min = "1600"
steps = [{{ roles = ["approvers"] }}, {{ roles = ["managing_director"] }}]
"#,
        ns_account = ns_seed::ACCOUNT,
        ns_ck = ns_seed::CONSUMER_KEY,
        ns_token = ns_seed::TOKEN_ID,
        dv_tenant = dv_seed::TENANT_ID,
        dv_client = dv_seed::CLIENT_ID,
        dv_org = dv_seed::ORGANIZATION,
        dv_env = dv_seed::ENVIRONMENT,
        dv_company = dv_seed::COMPANY_ID,
        sap_client = sap_seed::SAP_CLIENT,
        sap_user = sap_seed::USER,
    )
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub dingtalk: DingTalkHarness,
    pub sims: testkit::erp::ErpSims,
    pub gateway: Option<Gateway>,
    pub clock: Arc<ManualClock>,
    escalation: bool,
    /// The app's DingTalk source takes HTTP callbacks and the policy allows HTTP card clicks.
    http_cards: bool,
}

impl Rig {
    pub async fn start(escalation: bool) -> Rig {
        Rig::start_at(escalation, None).await
    }

    /// With the gateway's clock reading `at` when it starts (escalation tests).
    pub async fn start_at(escalation: bool, at: Option<jiff::Timestamp>) -> Rig {
        Rig::start_with(escalation, at, false).await
    }

    async fn start_with(escalation: bool, at: Option<jiff::Timestamp>, http_cards: bool) -> Rig {
        if std::env::var("APRE2E_LOG").is_ok() {
            let _ = tracing_subscriber::fmt().with_env_filter("info,dingbridge=debug").with_test_writer().try_init();
        }
        std::env::set_var("APRE2E_APP_SECRET", SEED_APP_SECRET);
        std::env::set_var("APRE2E_NS_CONSUMER_SECRET", ns_seed::CONSUMER_SECRET);
        std::env::set_var("APRE2E_NS_TOKEN_SECRET", ns_seed::TOKEN_SECRET);
        std::env::set_var("APRE2E_DV_SECRET", dv_seed::CLIENT_SECRET);
        std::env::set_var("APRE2E_SAP_PASSWORD", sap_seed::PASSWORD);
        std::env::set_var("APRE2E_WEBHOOK_SECRET", WEBHOOK_SECRET);
        std::env::set_var("APRE2E_AUDIT_KEY", AUDIT_KEY);
        let dir = tempfile::tempdir().unwrap();
        let dingtalk = DingTalkHarness::start().await.unwrap();
        let sims = testkit::erp::ErpSims::start().await.unwrap();
        let mut rig = Rig { dir, dingtalk, sims, gateway: None, clock: ManualClock::new(), escalation, http_cards };
        if let Some(at) = at {
            rig.clock.set(at);
        }
        rig.start_gateway().await;
        rig
    }

    /// (Re)starts the gateway on the same store.
    pub async fn start_gateway(&mut self) {
        let path = self.dir.path().join("approvals.toml");
        let mut text = config(self.escalation);
        if self.http_cards {
            text = text
                .replace(
                    "[sources.dt]\ntype = \"dingtalk\"\napp = \"hk\"\nmode = \"stream\"\n",
                    "[sources.dt]\ntype = \"dingtalk\"\napp = \"hk\"\nmode = \"http\"\n\
                     callback_token = { env = \"APRE2E_CB_TOKEN\" }\ncallback_aes_key = { env = \"APRE2E_CB_KEY\" }\n\
                     card_callback_token = { env = \"APRE2E_CARD_TOKEN\" }\n",
                )
                .replace("currency = \"HKD\"\ndeliver", "currency = \"HKD\"\nallow_http_card_callback = true\ndeliver");
            assert!(text.contains("mode = \"http\"") && text.contains("allow_http_card_callback"), "{text}");
            std::env::set_var("APRE2E_CB_TOKEN", connectors::dingtalk::sim::SEED_CALLBACK_TOKEN);
            std::env::set_var("APRE2E_CB_KEY", connectors::dingtalk::sim::SEED_CALLBACK_AES_KEY);
            std::env::set_var("APRE2E_CARD_TOKEN", HTTP_CARD_TOKEN);
        }
        std::fs::write(&path, text).unwrap();
        let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
        let mut endpoints = self.dingtalk.endpoint_map();
        self.sims.endpoints(&mut endpoints);
        let overrides = Overrides {
            store_url: Some(format!("sqlite://{}/approvals.db", self.dir.path().display())),
            sim_endpoints: Some(endpoints),
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            clock: Some(self.clock.clone()),
        };
        let gateway = Gateway::start(config, overrides).await.unwrap();
        if self.http_cards {
            // What the operator registers once with /v1.0/card/callbacks/register.
            let url = format!("http://{}/dingtalk/card-callback/dt?token={HTTP_CARD_TOKEN}", gateway.addr);
            let route = engine::approvals::APPROVAL_CARD_ROUTE_KEY;
            self.dingtalk.sim().events.register_card_route(SEED_APP_KEY, route, &url, "unused");
        }
        self.gateway = Some(gateway);
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }

    pub fn erp_url(&self, erp: Erp) -> String {
        self.sims.url(match erp {
            Erp::Netsuite => "netsuite",
            Erp::Dynamics => "dynamics",
            Erp::Sap => "sap",
        })
    }

    pub async fn approval(&self, erp: Erp) -> Option<machine::Approval> {
        dingbridge_server::approvals::load(&self.gateway().state, &erp.key()).await.unwrap()
    }

    pub async fn wait_status(&self, erp: Erp, what: &str, want: impl Fn(&Status) -> bool) -> machine::Approval {
        let started = Instant::now();
        loop {
            if let Some(a) = self.approval(erp).await {
                if want(&a.status) {
                    return a;
                }
            }
            if started.elapsed() >= WAIT {
                let now = self.approval(erp).await.map(|a| format!("{:?}", a.status));
                let dead = self.gateway().store.list_dead(20).await.unwrap();
                let directory = self.gateway().store.get_cursor("dingtalk.directory.hk").await.unwrap().is_some();
                panic!("{erp:?}: timed out waiting for {what}; state {now:?}; directory synced: {directory}; dead letters: {dead:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The card of `erp` as `viewer` sees it (None: the shared view).
    pub fn card_params(&self, erp: Erp, viewer: Option<&str>) -> std::collections::BTreeMap<String, String> {
        match viewer {
            None => self.dingtalk.sim().cards.card(&erp.card()).map(|c| c.params).unwrap_or_default(),
            Some(user) => self
                .dingtalk
                .sim()
                .cards
                .cards_for_user(user)
                .into_iter()
                .find(|c| c.out_track_id == erp.card())
                .map(|c| c.params)
                .unwrap_or_default(),
        }
    }

    pub async fn wait_card(
        &self,
        erp: Erp,
        viewer: Option<&str>,
        what: &str,
        want: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
    ) {
        let started = Instant::now();
        while !want(&self.card_params(erp, viewer)) {
            assert!(
                started.elapsed() < WAIT,
                "{erp:?}: card never showed {what}: {:#?}",
                self.card_params(erp, viewer)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the pending request's card (the first poll lists pending requests).
    pub async fn wait_for_card(&self, erp: Erp) {
        self.wait_status(erp, "the approval to open", |s| matches!(s, Status::Pending)).await;
        self.wait_card(erp, None, "the request", |p| p.get("canApprove").map(String::as_str) == Some("true")).await;
    }

    pub async fn click(&self, erp: Erp, user: &str, action: &str) {
        self.dingtalk.sim().cards.click(&erp.card(), user, action, json!({})).await.unwrap();
    }

    pub fn notices(&self, user: &str) -> Vec<String> {
        self.dingtalk.sim().messages.user_inbox(user).into_iter().map(|i| i.content.to_string()).collect()
    }

    pub async fn audit(&self) -> Vec<store::AuditEntry> {
        self.gateway().store.audit_list(0, 0, 10_000).await.unwrap()
    }

    pub async fn audit_actions(&self, erp: Erp) -> Vec<String> {
        self.audit().await.into_iter().filter(|e| e.subject == erp.key()).map(|e| e.action).collect()
    }

    pub async fn fault(&self, erp: Erp, spec: Value) {
        let url = format!("{}/_sim/faults", self.erp_url(erp));
        let answer = reqwest::Client::new().post(url).json(&spec).send().await.unwrap();
        assert!(answer.status().is_success(), "fault: {}", answer.text().await.unwrap());
    }

    pub async fn erp_requests(&self, erp: Erp) -> Vec<Value> {
        let url = format!("{}/_sim/requests", self.erp_url(erp));
        let answer: Value = reqwest::Client::new().get(url).send().await.unwrap().json().await.unwrap();
        answer.as_array().cloned().or_else(|| answer["requests"].as_array().cloned()).unwrap_or_default()
    }

    /// The decision writes that reached the ERP (requests a fault answered are not counted).
    pub async fn writes(&self, erp: Erp) -> usize {
        self.erp_requests(erp)
            .await
            .iter()
            .filter(|r| !r["faulted"].as_bool().unwrap_or(false))
            .filter(|r| {
                let method = r["method"].as_str().unwrap_or_default();
                let path = r["path"].as_str().unwrap_or_default();
                match erp {
                    Erp::Netsuite => method == "PATCH" && path.contains("purchaseRequisition"),
                    Erp::Dynamics => method == "POST" && path.contains("Microsoft.NAV."),
                    Erp::Sap => method == "POST" && path.ends_with("/Decision"),
                }
            })
            .count()
    }

    pub async fn shutdown(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
    }
}

/// Whether the ERP still lists the request as waiting for approval.
pub async fn still_pending(rig: &Rig, erp: Erp) -> bool {
    let source = rig.gateway().state.erp.get(erp.source()).unwrap().clone();
    let records = dingbridge_server::erp::pending_purchase_requests(&source).await.unwrap();
    records.iter().any(|r| r.entity_id == erp.entity_id())
}

async fn approve_all_steps(rig: &Rig, erp: Erp, first: &str) {
    rig.click(erp, first, "approve").await;
    if erp.steps() == 2 {
        rig.wait_card(erp, None, "step 1 approved", |p| p["status"].contains("step 1 approved by")).await;
        rig.click(erp, "boss0001", "approve").await;
    }
}

async fn approve(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    let card = rig.card_params(erp, None);
    assert!(card["title"].contains("Purchase requisition"), "{card:?}");
    assert!(card["amount"].starts_with("HKD "), "{card:?}");
    assert!(card["status"].starts_with("Waiting for"), "{card:?}");
    assert_ne!(card["as_of"], "unknown", "{card:?}");
    let calls_before = rig.erp_requests(erp).await.len();
    let clicked = Instant::now();
    approve_all_steps(&rig, erp, "finance0001").await;
    let done = rig.wait_status(erp, "approved", |s| matches!(s, Status::Approved { .. })).await;
    let took = clicked.elapsed();
    // What one decision costs the ERP: the re-read that guards it, the write, and (NetSuite) the
    // read of the version after it; SAP adds the work-item lookup and its CSRF token.
    let calls = rig.erp_requests(erp).await.len() - calls_before;
    eprintln!("{erp:?}: last click -> ERP written and state approved in {took:?}; {calls} ERP calls for the decision");
    assert!(calls <= 8, "{erp:?}: {calls} ERP calls for one decision");
    rig.wait_card(erp, None, "Approved by … at …", |p| {
        p["status"].starts_with("Approved by ") && p["status"].contains("HKT") && p["canApprove"] == "false"
    })
    .await;
    assert_eq!(rig.writes(erp).await, 1, "one decision write");
    assert!(!still_pending(&rig, erp).await, "{erp:?} no longer waits for approval in the ERP");
    if let Some(requester) = &done.requester.userid {
        assert_eq!(requester, "manager4711");
        let started = Instant::now();
        while !rig.notices(requester).iter().any(|n| n.contains("approved by")) {
            assert!(started.elapsed() < WAIT, "the requester was never told: {:?}", rig.notices(requester));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let actions = rig.audit_actions(erp).await;
    for want in ["approval.opened", "approval.decided", "approval.written"] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
    assert!(matches!(rig.gateway().store.audit_verify().await.unwrap(), store::AuditVerification::Intact { .. }));
    // The chain is keyed with the configured key: verifying with another one says so.
    let head = rig.gateway().store.audit_head().await.unwrap();
    let key = store::AuditKey::new(AUDIT_KEY).unwrap();
    assert_eq!(head.key_id.as_deref(), Some(key.id()));
    rig.shutdown().await;
}

async fn reject(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    rig.click(erp, "pay0002", "reject").await;
    rig.wait_status(erp, "rejected", |s| matches!(s, Status::Rejected { .. })).await;
    rig.wait_card(erp, None, "Rejected by Lam Chi Keung", |p| p["status"].starts_with("Rejected by Lam Chi Keung"))
        .await;
    assert_eq!(rig.writes(erp).await, 1);
    assert!(!still_pending(&rig, erp).await);
    rig.shutdown().await;
}

/// S2: a junior clerk without the role is refused, told why on the card, audited; the ERP is
/// not called.
async fn unauthorised_click(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    rig.click(erp, "acct0003", "approve").await;
    rig.wait_card(erp, Some("acct0003"), "the refusal", |p| {
        p.get("note").is_some_and(|n| n.contains("Ng Hoi Yan may not approve this") && n.contains("`approvers`"))
    })
    .await;
    let actions = rig.audit_actions(erp).await;
    assert!(actions.iter().any(|a| a == "approval.refused"), "{actions:?}");
    let refusal = rig.audit().await.into_iter().find(|e| e.action == "approval.refused").unwrap();
    assert_eq!(refusal.actor, "acct0003");
    assert!(matches!(rig.approval(erp).await.unwrap().status, Status::Pending));
    assert_eq!(rig.writes(erp).await, 0, "the ERP is not called");
    // Others still see the request waiting, and a rightful approver can still decide.
    assert_eq!(rig.card_params(erp, None)["canApprove"], "true");
    approve_all_steps(&rig, erp, "finance0001").await;
    rig.wait_status(erp, "approved", |s| matches!(s, Status::Approved { .. })).await;
    assert_eq!(rig.writes(erp).await, 1);
    rig.shutdown().await;
}

/// The hole issue 13 was filed for: whoever holds a webhook source's secret posts a signed
/// "click" naming a rightful approver. Intake refuses it (422, dead letter, `intake.refused`),
/// nothing reaches the approval, the ERP is never called.
async fn forged_click(erp: Erp) {
    use connect::webhook::{sign, WebhookSecret};
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    let body = json!({"type": "card_action.clicked",
        "data": {"id": erp.card(), "userId": "finance0001", "actionIds": ["approve"]}});
    let body = serde_json::to_vec(&body).unwrap();
    let ts = jiff::Timestamp::now().as_second();
    let secret = WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/hooks/erp-events", rig.gateway().addr))
        .header("webhook-id", "forged-click-1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(&secret, "forged-click-1", ts, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "decision_not_from_dingtalk");
    let refused: Vec<_> = rig.audit().await.into_iter().filter(|e| e.action == "intake.refused").collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].actor, "source:erp-events");
    assert!(refused[0].detail.contains("finance0001"));
    let dead = rig.gateway().store.list_dead(20).await.unwrap();
    assert!(dead.iter().any(|d| d.reason.starts_with("decision_not_from_dingtalk")), "{dead:?}");
    // A marker behind it in the approval's queue: once a real (unauthorised) click is applied,
    // anything the forgery could have queued before it would have been applied too.
    rig.click(erp, "acct0003", "approve").await;
    rig.wait_card(erp, Some("acct0003"), "the refusal", |p| {
        p.get("note").is_some_and(|n| n.contains("may not approve"))
    })
    .await;
    let approval = rig.approval(erp).await.unwrap();
    assert!(matches!(approval.status, Status::Pending), "{:?}", approval.status);
    assert!(approval.votes.is_empty(), "no vote counted: {:?}", approval.votes);
    assert_eq!(rig.writes(erp).await, 0, "{erp:?}: the ERP simulator's journal shows no decision");
    let actions = rig.audit_actions(erp).await;
    assert!(!actions.iter().any(|a| a == "approval.decided"), "{actions:?}");
    assert!(matches!(rig.gateway().store.audit_verify().await.unwrap(), store::AuditVerification::Intact { .. }));
    rig.shutdown().await;
}

/// `allow_http_card_callback`: the app's source takes HTTP callbacks, so approval cards are
/// created with the approvals route key and their clicks come over the card-callback URL, where
/// the token and the recipient check apply before the approval's own checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_an_approval_decided_over_http_card_callbacks_when_the_policy_allows_it() {
    let erp = Erp::Netsuite;
    let rig = Rig::start_with(false, None, true).await;
    rig.wait_for_card(erp).await;
    // The junior clerk is in the directory (the HTTP door lets her in) but not in the role.
    rig.click(erp, "acct0003", "approve").await;
    rig.wait_card(erp, Some("acct0003"), "the refusal", |p| {
        p.get("note").is_some_and(|n| n.contains("may not approve"))
    })
    .await;
    rig.click(erp, "finance0001", "approve").await;
    rig.wait_status(erp, "approved", |s| matches!(s, Status::Approved { .. })).await;
    assert_eq!(rig.writes(erp).await, 1);
    // The clicks came in over HTTP, as the card's callback route says.
    let stored = rig.gateway().store.get_link(dingbridge_server::dingtalk::CARD_RECIPIENTS, &erp.card()).await.unwrap();
    assert!(stored.is_some_and(|l| l.data.unwrap_or_default().contains(FINANCE)), "recipients recorded");
    let route = rig.dingtalk.sim().events.card_route_url(SEED_APP_KEY, engine::approvals::APPROVAL_CARD_ROUTE_KEY);
    assert!(route.is_some_and(|u| u.contains("/dingtalk/card-callback/dt")));
    rig.shutdown().await;
}

/// Segregation of duties: the requester may not approve their own request (NetSuite, SAP); one
/// person may not take two steps (Business Central, whose purchase orders name no requester).
async fn self_approval(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    // (The step-1 approver's second click is a reject: the same click again would be the same
    // callback, which intake drops as a duplicate delivery.)
    let (who, action, expect) = if erp == Erp::Dynamics {
        rig.click(erp, "finance0001", "approve").await;
        rig.wait_card(erp, None, "step 1 approved", |p| p["status"].contains("step 1 approved by")).await;
        ("finance0001", "reject", "already approved step 1")
    } else {
        ("manager4711", "approve", "requested this; someone else must decide it")
    };
    rig.click(erp, who, action).await;
    rig.wait_card(erp, Some(who), "the refusal", |p| p.get("note").is_some_and(|n| n.contains(expect))).await;
    assert!(matches!(rig.approval(erp).await.unwrap().status, Status::Pending));
    assert_eq!(rig.writes(erp).await, 0);
    rig.shutdown().await;
}

/// The approver clicks twice (DingTalk may deliver a click twice too); another approver clicks
/// after the decision: one ERP change, and the late clicker is told it is already decided.
async fn double_click(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    let last = if erp.steps() == 2 {
        rig.click(erp, "finance0001", "approve").await;
        rig.wait_card(erp, None, "step 1 approved", |p| p["status"].contains("step 1 approved by")).await;
        "boss0001"
    } else {
        "finance0001"
    };
    rig.click(erp, last, "approve").await;
    rig.click(erp, last, "approve").await;
    rig.wait_status(erp, "approved", |s| matches!(s, Status::Approved { .. })).await;
    rig.click(erp, "pay0002", "approve").await;
    rig.wait_card(erp, Some("pay0002"), "already approved", |p| {
        p.get("note").is_some_and(|n| n.contains("already approved by"))
    })
    .await;
    assert_eq!(rig.writes(erp).await, 1);
    let decided = rig.audit_actions(erp).await.iter().filter(|a| *a == "approval.decided").count();
    assert_eq!(decided, 1);
    rig.shutdown().await;
}

/// Two approvers click at the same moment: one decision, one ERP change; the other is told.
async fn concurrent_approvers(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    let (a, b) = if erp.steps() == 2 {
        rig.click(erp, "finance0001", "approve").await;
        rig.wait_card(erp, None, "step 1 approved", |p| p["status"].contains("step 1 approved by")).await;
        ("boss0001", "pay0002")
    } else {
        ("finance0001", "pay0002")
    };
    tokio::join!(rig.click(erp, a, "approve"), rig.click(erp, b, "reject"));
    let done =
        rig.wait_status(erp, "decided", |s| matches!(s, Status::Approved { .. } | Status::Rejected { .. })).await;
    let loser = match &done.status {
        Status::Approved { by, .. } | Status::Rejected { by, .. } if by == a => b,
        _ => a,
    };
    rig.wait_card(erp, Some(loser), "the loser's note", |p| p.contains_key("note")).await;
    assert_eq!(rig.writes(erp).await, 1);
    rig.shutdown().await;
}

/// The record changes in the ERP after the card was sent: the click is not written; the card
/// says "changed in ERP — please review" with the reason; the decider is told.
async fn record_changed(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    change_in_erp(&rig, erp).await;
    approve_all_steps(&rig, erp, "finance0001").await;
    rig.wait_status(erp, "changed in ERP", |s| matches!(s, Status::ChangedInErp { .. })).await;
    rig.wait_card(erp, None, "changed in ERP", |p| p["status"].contains("please review") && p["canApprove"] == "false")
        .await;
    let decider = if erp.steps() == 2 { "boss0001" } else { "finance0001" };
    assert!(rig.notices(decider).iter().any(|n| n.contains("was not written")), "{:?}", rig.notices(decider));
    assert!(still_pending(&rig, erp).await, "nothing written to the ERP");
    assert!(rig.audit_actions(erp).await.iter().any(|a| a == "approval.writeback_refused"));
    rig.shutdown().await;
}

/// The ERP answers 503 for a while during the write-back: retried, then applied once.
async fn erp_down(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    if erp.steps() == 2 {
        rig.click(erp, "finance0001", "approve").await;
        rig.wait_card(erp, None, "step 1 approved", |p| p["status"].contains("step 1 approved by")).await;
    }
    rig.fault(erp, json!({"status": 503, "duration_ms": 2500})).await;
    rig.click(erp, if erp.steps() == 2 { "boss0001" } else { "finance0001" }, "approve").await;
    rig.wait_status(erp, "writing", |s| matches!(s, Status::Writing { .. })).await;
    let done = rig.wait_status(erp, "approved", |s| matches!(s, Status::Approved { .. })).await;
    assert!(matches!(done.status, Status::Approved { .. }));
    assert!(!still_pending(&rig, erp).await);
    let written = rig.audit_actions(erp).await.iter().filter(|a| *a == "approval.written").count();
    assert_eq!(written, 1);
    assert_eq!(rig.writes(erp).await, 1, "503 answers are not writes; exactly one write went through");
    rig.shutdown().await;
}

/// The gateway stops after the decision is taken and before the ERP has it: after the restart
/// the decision is written, once.
async fn restart_between_click_and_write_back(erp: Erp) {
    let mut rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    if erp.steps() == 2 {
        rig.click(erp, "finance0001", "approve").await;
        rig.wait_card(erp, None, "step 1 approved", |p| p["status"].contains("step 1 approved by")).await;
    }
    rig.fault(erp, json!({"status": 503, "duration_ms": 60_000})).await;
    rig.click(erp, if erp.steps() == 2 { "boss0001" } else { "finance0001" }, "approve").await;
    rig.wait_status(erp, "writing", |s| matches!(s, Status::Writing { .. })).await;
    rig.gateway.take().unwrap().shutdown().await;
    reqwest::Client::new().delete(format!("{}/_sim/faults", rig.erp_url(erp))).send().await.unwrap();
    rig.start_gateway().await;
    rig.wait_status(erp, "approved after the restart", |s| matches!(s, Status::Approved { .. })).await;
    assert!(!still_pending(&rig, erp).await);
    assert_eq!(rig.writes(erp).await, 1);
    rig.shutdown().await;
}

/// A buyer edits the request in the ERP after the card went out (its version moves; no push
/// reaches the gateway before the click).
async fn change_in_erp(rig: &Rig, erp: Erp) {
    match erp {
        Erp::Netsuite => {
            rig.sims
                .netsuite
                .put_record("purchaseRequisition", json!({"id": "4691", "memo": "Quantity raised by the buyer"}))
                .await
                .unwrap();
        }
        Erp::Dynamics => {
            rig.sims
                .dynamics
                .put_record("purchaseOrders", json!({"id": dv_seed::PO_106021, "requestedReceiptDate": "2024-04-09"}))
                .await
                .unwrap();
        }
        Erp::Sap => {
            rig.sims.sap
                .put_record(
                    "A_PurchaseRequisitionItem",
                    json!({"PurchaseRequisition": "10000045", "PurchaseRequisitionItem": "10", "RequestedQuantity": "1300"}),
                )
                .await
                .unwrap();
        }
    }
}

/// The ERP stays down past the whole retry schedule: the write-back is dead-lettered, the card
/// says the decision is not yet in the ERP, and `dlq retry` later writes it once.
async fn write_back_dead_lettered_then_replayed(erp: Erp) {
    let rig = Rig::start(false).await;
    rig.wait_for_card(erp).await;
    rig.fault(erp, json!({"status": 503, "duration_ms": 60_000})).await;
    approve_all_steps(&rig, erp, "finance0001").await;
    rig.wait_status(erp, "write-back given up", |s| matches!(s, Status::WriteFailed { .. })).await;
    rig.wait_card(erp, None, "not yet in the ERP", |p| p["status"].contains("NOT yet in")).await;
    assert!(rig.audit_actions(erp).await.iter().any(|a| a == "approval.writeback_failed"));
    let store = &rig.gateway().store;
    let dead = store.list_dead(10).await.unwrap();
    let letter = dead
        .iter()
        .find(|d| d.destination.as_deref() == Some(&format!("erp-approve:{}", erp.source())))
        .expect("the write-back is a dead letter");
    reqwest::Client::new().delete(format!("{}/_sim/faults", rig.erp_url(erp))).send().await.unwrap();
    store.replay_dead(letter.job_id.unwrap(), jiff::Timestamp::now().as_millisecond()).await.unwrap();
    (rig.gateway().state.nudge)();
    rig.wait_status(erp, "approved after the replay", |s| matches!(s, Status::Approved { .. })).await;
    assert_eq!(rig.writes(erp).await, 1);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netsuite_a_write_back_past_every_retry_is_dead_lettered_shown_and_replayed_once() {
    write_back_dead_lettered_then_replayed(Erp::Netsuite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_a_write_back_past_every_retry_is_dead_lettered_shown_and_replayed_once() {
    write_back_dead_lettered_then_replayed(Erp::Sap).await;
}

fn at(text: &str) -> jiff::Timestamp {
    text.parse().unwrap()
}

/// Reminders after 4 and escalation after 8 hours of Hong Kong business time, with the gateway's
/// clock moved by hand: a request opened on Friday 16:00 is not overdue over the weekend, is
/// reminded on Monday 11:00 and escalated to the managing director on Monday 15:00, who may then
/// decide it.
async fn escalation(erp: Erp) {
    let rig = Rig::start_at(true, Some(at("2026-12-04T08:00:00Z"))).await;
    rig.wait_for_card(erp).await;
    let reminded =
        |rig: &Rig| ["finance0001", "pay0002"].iter().all(|u| rig.notices(u).iter().any(|n| n.contains("Reminder:")));
    // Saturday noon HKT: the weekend does not count.
    rig.clock.set(at("2026-12-05T04:00:00Z"));
    // The timer's own look at the pending approvals, run now: at the weekend nothing is due.
    let gateway = rig.gateway.as_ref().unwrap();
    let (state, approvals) = (&gateway.state, gateway.approvals.as_ref().unwrap());
    assert_eq!(
        dingbridge_server::approvals::tick_due(state, approvals).await.unwrap(),
        0,
        "nothing due at the weekend"
    );
    assert!(!reminded(&rig), "no reminder at the weekend");
    assert!(!rig.audit_actions(erp).await.iter().any(|a| a == "approval.reminded"));
    // Monday 11:30 HKT: 2 business hours on Friday + 2.5 on Monday.
    rig.clock.set(at("2026-12-07T03:30:00Z"));
    let started = Instant::now();
    while !reminded(&rig) {
        assert!(started.elapsed() < WAIT, "no reminder: {:?}", rig.notices("finance0001"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rig.notices("boss0001").iter().all(|n| !n.contains("Escalated")), "not escalated yet");
    // Monday 15:30 HKT: past 8 business hours; the managing director is added.
    rig.clock.set(at("2026-12-07T07:30:00Z"));
    let started = Instant::now();
    while !rig.notices("boss0001").iter().any(|n| n.contains("Escalated to you")) {
        assert!(started.elapsed() < WAIT, "no escalation: {:?}", rig.notices("boss0001"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The notice is a job committed before the input's audit rows are appended: wait for them.
    let started = Instant::now();
    let mut actions = rig.audit_actions(erp).await;
    while !actions.iter().any(|a| a == "approval.escalated") {
        assert!(started.elapsed() < WAIT, "escalation not audited: {actions:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        actions = rig.audit_actions(erp).await;
    }
    assert_eq!(actions.iter().filter(|a| *a == "approval.reminded").count(), 1, "{actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "approval.escalated").count(), 1, "{actions:?}");
    if erp.steps() == 2 {
        // The escalation only widens step 1; the director still takes step 2 after someone else.
        rig.click(erp, "finance0001", "approve").await;
        rig.wait_card(erp, None, "step 1 approved", |p| p["status"].contains("step 1 approved by")).await;
    }
    rig.click(erp, "boss0001", "approve").await;
    rig.wait_status(
        erp,
        "approved by the managing director",
        |s| matches!(s, Status::Approved { by, .. } if by == "boss0001"),
    )
    .await;
    assert_eq!(rig.writes(erp).await, 1);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sap_reminders_and_escalation_follow_hong_kong_business_hours() {
    escalation(Erp::Sap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_central_reminders_and_escalation_follow_hong_kong_business_hours() {
    escalation(Erp::Dynamics).await;
}

macro_rules! approval_cases {
    ($module:ident, $erp:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn approve_writes_once_updates_the_card_and_tells_the_requester() {
                approve($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_click_forged_through_a_webhook_source_is_refused_at_intake() {
                forged_click($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reject_writes_once() {
                reject($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_click_without_the_role_is_refused_audited_and_the_erp_not_called() {
                unauthorised_click($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn segregation_of_duties_refuses_self_approval() {
                self_approval($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_double_click_makes_one_erp_change() {
                double_click($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_approvers_make_one_erp_change() {
                concurrent_approvers($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_record_changed_in_the_erp_before_the_click_is_not_written_and_the_card_says_so() {
                record_changed($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_erp_outage_during_the_write_back_is_retried_then_applied_once() {
                erp_down($erp).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_restart_between_click_and_write_back_applies_it_once() {
                restart_between_click_and_write_back($erp).await;
            }
        }
    };
}

approval_cases!(netsuite, Erp::Netsuite);
approval_cases!(business_central, Erp::Dynamics);
approval_cases!(sap, Erp::Sap);
