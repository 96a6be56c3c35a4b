//! CRM end to end over loopback: an in-process gateway between the Salesforce simulator and the
//! DingTalk simulator.
//!
//! - S3: opportunities changed in Salesforce reach the regional sales group as a card with the
//!   account summary and the last activities, read in one API call per opportunity; three quick
//!   edits of one opportunity give one card; small deals give none.
//! - S6: 10,000 credit-status updates for 2,500 customers arrive through the generic webhook
//!   source and land in Salesforce under a 1,000-call daily quota in at most 60 calls, the
//!   interactive reserve untouched, counted from the simulator's own log.

use connect::webhook::WebhookSecret;
use connectors::dingtalk::sim::cards::CardSpace;
use connectors::dingtalk::sim::org::{SEED_APP_KEY, SEED_APP_SECRET};
use connectors::salesforce::sim::{seed, SalesforceSim, SimConfig};
use dingbridge_server::gateway::{Gateway, Overrides};
use serde_json::{json, Value};
use sim::Simulator;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::dingtalk::DingTalkHarness;
use testkit::sender::{SenderSettings, WebhookSender};
use testkit::wait::{wait_for, wait_for_settled};

const WEBHOOK_SECRET: &str = "whsec_Y3JtLWUyZS10ZXN0LXNlY3JldC1rZXktMDAwMDAwMDAx";
/// The secret last segment of the Outbound Message URL.
const OUTBOUND_TOKEN: &str = "Zq3xW9-mK2pL7vR4tY8nB1cF6h";
const SALES_HK: &str = "cid7Hk2PqRsTuVwXyZ0aBcDe+Q==";
const SALES_PRC: &str = "cidPrC8sAlEs3GbA7wQxYz1Kj==";
const RESERVE: u64 = 200;

fn config() -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[delivery]
retry_schedule = ["200ms", "500ms", "1s"]

[dingtalk.apps.hk]
app_key = "{SEED_APP_KEY}"
app_secret = {{ env = "CRME2E_APP_SECRET" }}
agent_id = 3120001
sync_directory = false

[salesforce.orgs.hk]
login_url = "https://login.salesforce.com"
client_id = "{client_id}"
client_secret = {{ env = "CRME2E_SF_SECRET" }}
reserve = {RESERVE}
organization_id = "{org_id}"

[sources.erp]
type = "webhook"
secret = {{ env = "CRME2E_WEBHOOK_SECRET" }}
entity_id = "/data/customer_no"

[sources.crm]
type = "salesforce"
org = "hk"
objects = ["Opportunity"]
outbound_token = {{ env = "CRME2E_SF_OUTBOUND" }}
coalesce = "1500ms"
[sources.crm.fields]
amount = {{ path = "/data/amount", type = "money", required = false }}

[destinations.app]
type = "dingtalk_app"
app = "hk"

[destinations.sf-accounts]
type = "salesforce"
org = "hk"
linger = "1s"

[[flows]]
name = "big-opportunity"
on = {{ source = "crm", entity = "opportunity" }}
when = 'has(event.fields.amount) && double(event.fields.amount.amount) >= {{"HKD": 500000.0, "USD": 64000.0, "CNY": 450000.0}}[event.fields.amount.currency]'
[[flows.deliver]]
destination = "app"
when = 'event.data.account.country == "Hong Kong"'
message = {{ type = "card", template_id = "dingbridge-opportunity.schema", group = "{SALES_HK}", params = {{ title = "{{{{ event.data.name }}}}", amount = "{{{{ event.fields.amount.currency }}}} {{{{ event.fields.amount.amount }}}}", account = "{{{{ event.data.account.name }}}} ({{{{ event.data.account.industry }}}}, {{{{ event.data.account.city }}}})", stage = "{{{{ event.data.stage }}}}", activities = "{{% for a in event.data.activities %}}{{{{ a.when }}}} {{{{ a.kind }}}}: {{{{ a.subject }}}}\n{{% endfor %}}" }} }}
[[flows.deliver]]
destination = "app"
when = 'event.data.account.country == "China"'
message = {{ type = "card", template_id = "dingbridge-opportunity.schema", group = "{SALES_PRC}", params = {{ title = "{{{{ event.data.name }}}}", amount = "{{{{ event.fields.amount.currency }}}} {{{{ event.fields.amount.amount }}}}", account = "{{{{ event.data.account.name }}}}" }} }}

[[flows]]
name = "credit-to-salesforce"
on = {{ source = "erp", entity = "customer", change = ["updated"] }}
[[flows.deliver]]
destination = "sf-accounts"
ordering_key = "{{{{ event.entity_id }}}}"
message = {{ type = "record", object = "Account", op = "upsert", external_id_field = "ERP_Customer_No__c", external_id = "{{{{ event.entity_id }}}}", fields = {{ Credit_Status__c = "{{{{ event.data.credit_status }}}}" }}, json_fields = {{ Credit_Limit__c = "{{{{ event.data.credit_limit }}}}" }} }}
"#,
        client_id = seed::CLIENT_ID,
        org_id = seed::ORG_ID,
    )
}

struct E2e {
    _dir: tempfile::TempDir,
    dingtalk: DingTalkHarness,
    salesforce: Arc<SalesforceSim>,
    _salesforce_running: sim::RunningSim,
    gateway: Gateway,
    sender: WebhookSender,
}

impl E2e {
    async fn start(daily_limit: u64) -> E2e {
        Self::start_with(daily_limit, config()).await
    }

    async fn start_with(daily_limit: u64, config_text: String) -> E2e {
        std::env::set_var("CRME2E_APP_SECRET", SEED_APP_SECRET);
        std::env::set_var("CRME2E_SF_SECRET", seed::CLIENT_SECRET);
        std::env::set_var("CRME2E_WEBHOOK_SECRET", WEBHOOK_SECRET);
        std::env::set_var("CRME2E_SF_OUTBOUND", OUTBOUND_TOKEN);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.toml");
        std::fs::write(&path, config_text).unwrap();
        let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
        let dingtalk = DingTalkHarness::start().await.unwrap();
        let sim_config = SimConfig { daily_limit, ..SimConfig::default() };
        let salesforce = Arc::new(SalesforceSim::new(sim_config, Arc::new(connect::SystemClock)));
        let running = sim::serve(salesforce.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let mut endpoints = dingtalk.endpoint_map();
        endpoints.insert("salesforce".into(), running.url());
        let overrides = Overrides {
            store_url: Some(format!("sqlite://{}/crm.db", dir.path().display())),
            sim_endpoints: Some(endpoints),
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            clock: None,
        };
        let gateway = Gateway::start(config, overrides).await.unwrap();
        let base = format!("http://{}", gateway.addr);
        salesforce.set_outbound_url(Some(format!("{base}/intake/salesforce/crm/{OUTBOUND_TOKEN}")));
        E2e {
            _dir: dir,
            dingtalk,
            salesforce,
            _salesforce_running: running,
            gateway,
            sender: WebhookSender::new(
                &format!("{base}/hooks/erp"),
                WebhookSecret::parse(WEBHOOK_SECRET).unwrap(),
                SenderSettings::default(),
            )
            .unwrap(),
        }
    }

    /// Change a record as a Salesforce user would (fires the Outbound Message).
    async fn change(&self, object: &str, record: Value) {
        self.salesforce.put_record(object, record).await.unwrap();
    }

    async fn webhook(&self, id: &str, body: &Value) {
        let status = self.sender.send(id, body).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 200);
    }

    fn cards_in(&self, group: &str) -> Vec<connectors::dingtalk::sim::cards::CardView> {
        self.dingtalk
            .sim()
            .cards
            .cards()
            .into_iter()
            .filter(|c| {
                c.spaces.iter().any(
                    |s| matches!(s, CardSpace::Group { open_conversation_id, .. } if open_conversation_id == group),
                )
            })
            .collect()
    }
}

#[tokio::test]
async fn s3_big_opportunities_reach_the_regional_group_once_with_account_and_history() {
    let h = E2e::start(15_000).await;
    let calls_before = h.salesforce.api_calls();
    let started = Instant::now();

    // Three quick edits of the Hong Kong deal (HKD 1.25M, over the HKD 500k bar).
    for (i, step) in ["Negotiation/Review", "Proposal/Price Quote", "Negotiation/Review"].iter().enumerate() {
        h.change(
            "Opportunity",
            json!({"Id": seed::OPPORTUNITY_ID, "StageName": step, "NextStep": format!("edit {i}")}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A small HKD deal and a big mainland deal (CNY 2.6M) change too.
    h.change("Opportunity", json!({"Id": "0065g00000Qx1ZqAAJ", "Amount": 120000.0})).await;
    h.change("Opportunity", json!({"Id": "0065g00000Qx1ZrAAJ", "StageName": "Needs Analysis"})).await;

    wait_for("the Hong Kong card", Duration::from_secs(20), || !h.cards_in(SALES_HK).is_empty()).await;
    let latency = started.elapsed();
    wait_for("the mainland card", Duration::from_secs(20), || !h.cards_in(SALES_PRC).is_empty()).await;
    // Every notice was committed before its push was answered; once the reads and cards they
    // planned are done, nothing more is coming.
    wait_for_settled(h.gateway.store.as_ref(), Duration::from_secs(20)).await;

    let hk = h.cards_in(SALES_HK);
    assert_eq!(hk.len(), 1, "three edits within the window give one card: {hk:#?}");
    let card = &hk[0].params;
    assert_eq!(card["title"], "KPC - Q3 servo motor bulk order");
    assert_eq!(card["amount"], "HKD 1250000.00");
    assert_eq!(card["stage"], "Negotiation/Review", "the card shows the state after the last edit");
    assert_eq!(card["account"], "Kowloon Precision Components Ltd (Manufacturing, Kowloon)");
    let activities: Vec<&str> = card["activities"].lines().collect();
    assert_eq!(activities.len(), 3, "{activities:?}");
    assert!(activities[0].contains("Send revised quote"), "newest first: {activities:?}");
    assert!(activities.iter().any(|a| a.contains("Site visit, Kwun Tong plant")), "{activities:?}");

    let prc = h.cards_in(SALES_PRC);
    assert_eq!(prc.len(), 1);
    assert_eq!(prc[0].params["amount"], "CNY 2600000.00");
    assert_eq!(prc[0].params["account"], "Pearl River Electronics Trading Co");
    assert!(
        h.cards_in(SALES_HK).iter().all(|c| c.params["title"] != "KPC - spare parts annual contract"),
        "small deal: no card"
    );

    // One read per changed opportunity (3 opportunities), whatever the number of edits.
    let calls = h.salesforce.api_calls() - calls_before;
    assert_eq!(calls, 3, "one API call per opportunity");
    let stats = h.gateway.store.stats(0).await.unwrap();
    assert_eq!(stats.dead_letters, 0);
    eprintln!("S3: Salesforce change -> DingTalk card in {} ms (coalescing window 1500 ms); {calls} API calls for 5 edits of 3 opportunities", latency.as_millis());
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn s6_ten_thousand_updates_land_in_sixty_calls_under_a_thousand_call_quota() {
    const CUSTOMERS: usize = 2_500;
    const ROUNDS: usize = 4;
    let h = E2e::start(1_000).await;
    let calls_before = h.salesforce.api_calls();
    let h = Arc::new(h);
    for round in 0..ROUNDS {
        // One update per customer per round, 32 in flight: per-customer order is the round order.
        let mut tasks = tokio::task::JoinSet::new();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..32 {
            let (h, next) = (h.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let c = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if c >= CUSTOMERS {
                        break;
                    }
                    let body = json!({"type": "customer.updated", "data": {
                        "customer_no": format!("C-{c:05}"),
                        "credit_status": format!("status-{round}"),
                        "credit_limit": 10_000 * (round + 1) + c,
                    }});
                    h.webhook(&format!("credit-{round}-{c}"), &body).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    }
    let sf = h.salesforce.clone();
    // Wait on the gateway's own count (cheap); then check every account once in the simulator.
    let started = Instant::now();
    let mut stats = h.gateway.store.stats(0).await.unwrap();
    while stats.done < (CUSTOMERS * ROUNDS) as u64 {
        assert!(started.elapsed() < Duration::from_secs(60), "not all delivered: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        stats = h.gateway.store.stats(0).await.unwrap();
    }
    for c in 0..CUSTOMERS {
        let account = sf.find("Account", "ERP_Customer_No__c", &format!("C-{c:05}")).expect("account upserted");
        assert_eq!(
            account["Credit_Status__c"],
            json!(format!("status-{}", ROUNDS - 1)),
            "customer {c}: the last status"
        );
    }
    assert_eq!((stats.pending, stats.leased, stats.dead_letters), (0, 0, 0), "{stats:?}");
    assert_eq!(stats.done, (CUSTOMERS * ROUNDS) as u64, "all 10,000 updates delivered");
    for c in [0, 1_234, CUSTOMERS - 1] {
        let account = sf.find("Account", "ERP_Customer_No__c", &format!("C-{c:05}")).unwrap();
        assert_eq!(account["Credit_Limit__c"], json!(10_000 * ROUNDS + c), "the last limit, as a number");
    }
    let calls = sf.api_calls() - calls_before;
    assert!(calls <= 60, "{calls} API calls for 10,000 updates");
    assert!(1_000 - sf.api_calls() >= RESERVE, "the interactive reserve is untouched");
    eprintln!(
        "S6: 10,000 updates of {CUSTOMERS} accounts in {calls} Salesforce API calls ({:.1} per 1,000 updates)",
        calls as f64 / 10.0
    );
}

const ZOHO_DEAL: &str = "5843104000001234001";

fn zoho_config() -> String {
    use connectors::zoho::sim::SIM_CLIENT_ID;
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[dingtalk.apps.hk]
app_key = "{SEED_APP_KEY}"
app_secret = {{ env = "CRME2E_APP_SECRET" }}
agent_id = 3120001
sync_directory = false

[zoho.orgs.hk]
data_centre = "com"
client_id = "{SIM_CLIENT_ID}"
client_secret = {{ env = "CRME2E_ZOHO_SECRET" }}
refresh_token = {{ env = "CRME2E_ZOHO_REFRESH" }}

[sources.deals]
type = "zoho"
org = "hk"
objects = ["Deals"]
coalesce = "1s"
channel_token = {{ env = "CRME2E_ZOHO_CHANNEL" }}
[sources.deals.fields]
amount = {{ path = "/data/amount", type = "money", required = false }}

[destinations.app]
type = "dingtalk_app"
app = "hk"

[[flows]]
name = "big-deal"
on = {{ source = "deals", entity = "opportunity" }}
when = 'has(event.fields.amount) && double(event.fields.amount.amount) >= {{"HKD": 500000.0, "USD": 64000.0, "CNY": 450000.0}}[event.fields.amount.currency]'
[[flows.deliver]]
destination = "app"
when = 'event.data.account.country == "Hong Kong"'
message = {{ type = "card", template_id = "dingbridge-opportunity.schema", group = "{SALES_HK}", params = {{ title = "{{{{ event.data.name }}}}", amount = "{{{{ event.fields.amount.currency }}}} {{{{ event.fields.amount.amount }}}}", stage = "{{{{ event.data.stage }}}}", account = "{{{{ event.data.account.name }}}}", activities = "{{% for a in event.data.activities %}}{{{{ a.kind }}}}: {{{{ a.subject }}}}\n{{% endfor %}}" }} }}
"#
    )
}

/// A Zoho source that polls (`intake = "poll"`): it opens no channel and no push route, its
/// first poll only records where to start, and a deal edited afterwards is found by the next
/// poll, read and carded once; polling again finds nothing new.
#[tokio::test]
async fn a_polling_zoho_source_finds_a_change_once_without_a_channel() {
    use connectors::zoho::sim::{ZohoSim, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN};
    std::env::set_var("CRME2E_APP_SECRET", SEED_APP_SECRET);
    std::env::set_var("CRME2E_ZOHO_SECRET", SIM_CLIENT_SECRET);
    std::env::set_var("CRME2E_ZOHO_REFRESH", SIM_REFRESH_TOKEN);
    let text = zoho_config()
        .replace("channel_token = { env = \"CRME2E_ZOHO_CHANNEL\" }", "intake = \"poll\"\npoll_interval = \"1h\"");
    assert!(text.contains("intake = \"poll\""));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zoho.toml");
    std::fs::write(&path, text).unwrap();
    let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    let dingtalk = DingTalkHarness::start().await.unwrap();
    let zoho = Arc::new(ZohoSim::new());
    let running = sim::serve(zoho.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let mut endpoints = dingtalk.endpoint_map();
    endpoints.insert("zoho".into(), running.url());
    let overrides = Overrides {
        store_url: Some(format!("sqlite://{}/zoho.db", dir.path().display())),
        sim_endpoints: Some(endpoints),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        clock: None,
    };
    let gateway = Gateway::start(config, overrides).await.unwrap();
    let cursor = "zoho.poll.deals.Deals";
    let started = Instant::now();
    while gateway.store.get_cursor(cursor).await.unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(15), "no first poll");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let source = gateway.state.crm.get("deals").expect("the zoho source").clone();
    // Past the first poll's second: Zoho's times have second precision.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    zoho.put_record("Deals", json!({"id": ZOHO_DEAL, "Stage": "Negotiation/Review"})).await.unwrap();
    dingbridge_server::poll::poll_object(&gateway.state, source.as_ref(), "Deals").await.unwrap();
    let in_hk = || {
        dingtalk
            .sim()
            .cards
            .cards()
            .into_iter()
            .filter(|c| {
                c.spaces.iter().any(
                    |s| matches!(s, CardSpace::Group { open_conversation_id, .. } if open_conversation_id == SALES_HK),
                )
            })
            .count()
    };
    wait_for("the polled deal's card", Duration::from_secs(20), || in_hk() == 1).await;
    wait_for_settled(gateway.store.as_ref(), Duration::from_secs(20)).await;
    // The next poll (positive marker: one more COQL call in the simulator's journal) finds the
    // change already delivered.
    let coql = || running.state.requests(0, None).iter().filter(|r| r.path.ends_with("/coql")).count();
    let before = coql();
    dingbridge_server::poll::poll_object(&gateway.state, source.as_ref(), "Deals").await.unwrap();
    assert!(coql() > before);
    wait_for_settled(gateway.store.as_ref(), Duration::from_secs(20)).await;
    assert_eq!(in_hk(), 1, "the same change polled twice is one card");
    // No channel was opened and the push route refuses.
    assert!(!running.state.requests(0, None).iter().any(|r| r.path.ends_with("/actions/watch")));
    let resp = reqwest::Client::new()
        .post(format!("http://{}/intake/zoho/deals", gateway.addr))
        .json(&json!({"token": "x"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    gateway.shutdown().await;
}

/// S3 with Zoho CRM: the gateway opens its notification channel itself; three quick edits of a
/// deal are notified three times, read once (two API calls: one composite, one account) and
/// give one card in the Hong Kong sales group; a notification with a wrong token is refused.
#[tokio::test]
async fn s3_zoho_deal_edits_reach_the_regional_group_once_in_two_calls() {
    use connectors::zoho::sim::{ZohoSim, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN};
    std::env::set_var("CRME2E_APP_SECRET", SEED_APP_SECRET);
    std::env::set_var("CRME2E_ZOHO_SECRET", SIM_CLIENT_SECRET);
    std::env::set_var("CRME2E_ZOHO_REFRESH", SIM_REFRESH_TOKEN);
    std::env::set_var("CRME2E_ZOHO_CHANNEL", "dingbridge-e2e-channel-token");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zoho.toml");
    std::fs::write(&path, zoho_config()).unwrap();
    let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    let dingtalk = DingTalkHarness::start().await.unwrap();
    let zoho = Arc::new(ZohoSim::new());
    let running = sim::serve(zoho.clone(), std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let mut endpoints = dingtalk.endpoint_map();
    endpoints.insert("zoho".into(), running.url());
    let overrides = Overrides {
        store_url: Some(format!("sqlite://{}/zoho.db", dir.path().display())),
        sim_endpoints: Some(endpoints),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        clock: None,
    };
    let gateway = Gateway::start(config, overrides).await.unwrap();
    let client = reqwest::Client::new();
    // The channel is enabled by the gateway at start.
    let started = Instant::now();
    loop {
        let requests: Value =
            client.get(format!("{}/_sim/requests", running.url())).send().await.unwrap().json().await.unwrap();
        let enabled = requests
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["method"] == "POST" && r["path"].as_str().is_some_and(|p| p.ends_with("/actions/watch")));
        if enabled {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the gateway never enabled its Zoho channel");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls_before = zoho.calls();
    for stage in ["Proposal/Price Quote", "Negotiation/Review", "Negotiation/Review"] {
        zoho.put_record("Deals", json!({"id": ZOHO_DEAL, "Stage": stage})).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let in_hk = || {
        dingtalk
            .sim()
            .cards
            .cards()
            .into_iter()
            .filter(|c| {
                c.spaces.iter().any(
                    |s| matches!(s, CardSpace::Group { open_conversation_id, .. } if open_conversation_id == SALES_HK),
                )
            })
            .collect::<Vec<_>>()
    };
    wait_for("the Zoho deal card", Duration::from_secs(20), || !in_hk().is_empty()).await;
    wait_for_settled(gateway.store.as_ref(), Duration::from_secs(20)).await;
    let cards = in_hk();
    assert_eq!(cards.len(), 1, "three edits, one card");
    let card = &cards[0].params;
    assert_eq!(card["title"], "KPC - Q3 servo motor bulk order");
    assert_eq!(card["amount"], "HKD 1250000.00");
    assert_eq!(card["stage"], "Negotiation/Review");
    assert_eq!(card["account"], "Kowloon Precision Components Ltd");
    assert!(card["activities"].contains("Discount request"), "{}", card["activities"]);
    let calls = zoho.calls() - calls_before;
    assert!(calls <= 2, "{calls} Zoho API calls for one deal");

    // A forged notification (wrong token) is refused and stores nothing.
    let events = gateway.store.stats(0).await.unwrap().events;
    let forged = json!({"server_time": 1, "query_params": {}, "module": "Deals", "resource_uri": "x", "ids": [ZOHO_DEAL],
        "affected_fields": [], "operation": "update", "channel_id": connectors::zoho::push::channel_id("deals"), "token": "not-the-token"});
    let resp = client.post(format!("http://{}/intake/zoho/deals", gateway.addr)).json(&forged).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // The right token on a notification from long ago: a captured one sent again.
    let mut replayed = forged.clone();
    replayed["token"] = json!("dingbridge-e2e-channel-token");
    let resp = client.post(format!("http://{}/intake/zoho/deals", gateway.addr)).json(&replayed).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("stale_notification"));
    assert_eq!(gateway.store.stats(0).await.unwrap().events, events);

    // A workflow rule's webhook carries the shared secret: a wrong one is refused, the right one
    // stores a change notice (and its read).
    let hook = |secret: &str| json!({"module": "Deals", "id": ZOHO_DEAL, "stage": "Closed Won", "modified_time": "2026-11-28T10:00:00+08:00", "secret": secret});
    let url = format!("http://{}/intake/zoho/deals/workflow", gateway.addr);
    let resp = client.post(&url).json(&hook("guess")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client.post(&url).json(&hook("dingbridge-e2e-channel-token")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    assert_eq!(gateway.store.stats(0).await.unwrap().events, events + 1);
    gateway.shutdown().await;
}

/// Without Outbound Messages: the source polls `SystemModstamp`; the first poll only sets the
/// cursor (no history replayed), a change after it is read and carded once, and the poll after
/// that finds nothing new (no repeats).
#[tokio::test]
async fn salesforce_polling_finds_a_change_once_without_replaying_history() {
    let polled = config().replace(
        "objects = [\"Opportunity\"]\noutbound_token = { env = \"CRME2E_SF_OUTBOUND\" }\ncoalesce = \"1500ms\"",
        "objects = [\"Opportunity\"]\nintake = \"poll\"\npoll_interval = \"10s\"\ncoalesce = \"0s\"",
    );
    assert!(polled.contains("intake = \"poll\""));
    let h = E2e::start_with(15_000, polled).await;
    h.salesforce.set_outbound_url(None);
    // The first poll runs at start and only records where to begin.
    let store = h.gateway.store.clone();
    let started = Instant::now();
    while store.get_cursor("salesforce.poll.crm.Opportunity").await.unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(10), "no poll cursor");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.cards_in(SALES_HK).is_empty(), "existing opportunities are not replayed");
    h.change("Opportunity", json!({"Id": seed::OPPORTUNITY_ID, "StageName": "Negotiation/Review"})).await;
    wait_for("the polled change's card", Duration::from_secs(25), || !h.cards_in(SALES_HK).is_empty()).await;
    // One more poll cycle: the same change is not reported again. The card came after the
    // read, so the next call the simulator counts is the next poll.
    wait_for_settled(store.as_ref(), Duration::from_secs(20)).await;
    let calls = h.salesforce.api_calls();
    wait_for("the next poll", Duration::from_secs(25), || h.salesforce.api_calls() > calls).await;
    wait_for_settled(store.as_ref(), Duration::from_secs(20)).await;
    assert_eq!(h.cards_in(SALES_HK).len(), 1);
    assert_eq!(store.stats(0).await.unwrap().dead_letters, 0);
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn outbound_messages_without_the_url_token_or_from_another_org_are_refused_storing_nothing() {
    let h = E2e::start(15_000).await;
    let base = format!("http://{}", h.gateway.addr);
    let genuine = testkit::fixtures::read_fixture("salesforce/outbound/outbound_message_opportunity_hk.xml");
    let other_org = genuine.replace("00D5g000004HkbrEAC", "00D5g000004HkbsEAC");
    let bad_id = genuine.replace("0065g00000Qx1ZpAAJ", "0065g00000Qx1ZpAAA");
    let calls_before = h.salesforce.api_calls();
    let http = reqwest::Client::new();
    let post = |path: String, body: String| {
        http.post(format!("{base}{path}")).header("content-type", "text/xml; charset=utf-8").body(body).send()
    };
    for (what, path, body, status, code) in [
        ("no token", "/intake/salesforce/crm".to_owned(), genuine.clone(), 401, "bad_token"),
        (
            "wrong token",
            "/intake/salesforce/crm/Zq3xW9-mK2pL7vR4tY8nB1cF6i".to_owned(),
            genuine.clone(),
            401,
            "bad_token",
        ),
        ("short token", "/intake/salesforce/crm/Zq3".to_owned(), genuine.clone(), 401, "bad_token"),
        ("another org", format!("/intake/salesforce/crm/{OUTBOUND_TOKEN}"), other_org, 401, "wrong_organization"),
        ("bad id checksum", format!("/intake/salesforce/crm/{OUTBOUND_TOKEN}"), bad_id, 400, "malformed_id"),
        ("unknown source", format!("/intake/salesforce/nope/{OUTBOUND_TOKEN}"), genuine.clone(), 404, "unknown_source"),
    ] {
        let resp = post(path, body).await.unwrap();
        assert_eq!(resp.status(), status, "{what}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(code), "{what}: {text}");
        assert!(!text.contains(OUTBOUND_TOKEN), "{what}: the token is never echoed");
    }
    // Nothing stored, no read job, no API call.
    let stats = h.gateway.store.stats(0).await.unwrap();
    assert_eq!((stats.events, stats.pending, stats.leased, stats.dead_letters), (0, 0, 0, 0), "{stats:?}");
    // The genuine message on the right URL is the positive marker: stored, read once.
    let resp = post(format!("/intake/salesforce/crm/{OUTBOUND_TOKEN}"), genuine).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("<Ack>true</Ack>"));
    assert!(h.gateway.store.stats(0).await.unwrap().events > 0);
    wait_for("the read", Duration::from_secs(20), || h.salesforce.api_calls() > calls_before).await;
    h.gateway.shutdown().await;
}
