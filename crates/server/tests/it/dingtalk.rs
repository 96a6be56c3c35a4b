//! DingTalk end to end over loopback: an in-process gateway against the DingTalk simulator.
//! Cards delivered, clicked in the simulator, the click received over Stream and over the HTTP
//! card callback, the card updated; an approval started, approved in the simulator, its finished
//! event received (Stream and encrypted HTTP callback); a token that expires mid-run; a Stream
//! connection dropped mid-event with the event still processed exactly once.

use connect::webhook::{sign, WebhookSecret};
use connectors::dingtalk::crypto::CallbackCrypto;
use connectors::dingtalk::sim::org::{SEED_APP_KEY, SEED_APP_SECRET};
use connectors::dingtalk::sim::{events::EventSubscription, SEED_CALLBACK_AES_KEY, SEED_CALLBACK_TOKEN};
use dingbridge_server::gateway::{Gateway, Overrides};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use testkit::dingtalk::DingTalkHarness;
use testkit::wait::{wait_for, wait_for_settled, DEFAULT_LIMIT};

const WEBHOOK_SECRET: &str = "whsec_ZGluZ3RhbGstZTJlLXRlc3Qtc2VjcmV0LWtleS0wMDAwMQ==";
const FINANCE_GROUP: &str = "cidF1nAnCe9zYxWvUt8sRqPo/A==";
/// The HTTP card-callback capability: its own random value, not the callback signing token.
const CARD_TOKEN: &str = "k3Vq9-Zr_8xWmT2pLc7NbY4hJd";

fn config(mode: &str, card_callback: &str) -> String {
    let mode_lines = match mode {
        "http" => "mode = \"http\"\ncallback_token = { env = \"DTE2E_CB_TOKEN\" }\ncallback_aes_key = { env = \"DTE2E_CB_KEY\" }\n\
                   card_callback_token = { env = \"DTE2E_CARD_TOKEN\" }\n"
            .to_string(),
        _ => String::new(),
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[delivery]
retry_schedule = ["100ms", "200ms", "500ms", "1s"]

[dingtalk.apps.hk]
app_key = "{SEED_APP_KEY}"
app_secret = {{ env = "DTE2E_APP_SECRET" }}
agent_id = 3120001

[sources.erp]
type = "webhook"
secret = {{ env = "DTE2E_WEBHOOK_SECRET" }}

[sources.dingtalk]
type = "dingtalk"
app = "hk"
{mode_lines}
[destinations.app]
type = "dingtalk_app"
app = "hk"

[[flows]]
name = "pr-card"
on = {{ source = "erp", entity = "purchase_requisition", change = ["created"] }}
[[flows.deliver]]
destination = "app"
message = {{ type = "card", template_id = "dingbridge-approval.schema", out_track_id = "pr-{{{{ event.entity_id }}}}", group = "{{{{ event.data.group }}}}", params = {{ title = "PR {{{{ event.entity_id }}}}", status = "Pending" }}, private_params = {{ canApprove = "true" }}, private_to = "{{{{ event.data.approver }}}}", {card_callback} }}

[[flows]]
name = "user-card"
on = {{ source = "erp", entity = "notice_card", change = ["created"] }}
[[flows.deliver]]
destination = "app"
message = {{ type = "card", template_id = "dingbridge-approval.schema", out_track_id = "uc-{{{{ event.entity_id }}}}", users = "{{{{ event.data.user }}}}", params = {{ title = "Notice {{{{ event.entity_id }}}}", status = "Open" }}, {card_callback} }}

[[flows]]
name = "card-clicked"
on = {{ source = "dingtalk", entity = "card_action", change = ["clicked"] }}
[[flows.deliver]]
destination = "app"
message = {{ type = "card_update", out_track_id = "{{{{ event.entity_id }}}}", params = {{ status = "{{{{ event.data.actionIds[0] }}}} by {{{{ event.data.userId }}}}" }} }}

[[flows]]
name = "payment-approval"
on = {{ source = "erp", entity = "payment", change = ["created"] }}
[[flows.deliver]]
destination = "app"
message = {{ type = "approval", process_code = "PROC-DB-PAYMENT", originator = "{{{{ event.data.requester }}}}", approvers = "{{{{ event.data.approver }}}}", form = {{ "Payee" = "{{{{ event.data.payee }}}}", "Amount (HKD)" = "{{{{ event.data.amount }}}}" }} }}

[[flows]]
name = "notice"
on = {{ source = "erp", entity = "notice", change = ["created"] }}
[[flows.deliver]]
destination = "app"
message = {{ type = "robot_message", users = "{{{{ event.data.users }}}}", title = "Notice", text = "{{{{ event.data.text }}}}" }}

[[flows]]
name = "approval-finished"
on = {{ source = "dingtalk", entity = "approval", change = ["finished"] }}
[[flows.deliver]]
destination = "app"
message = {{ type = "work_notice", users = "{{{{ event.data.staffId }}}}", title = "Approval {{{{ event.data.result }}}}", text = "{{{{ event.data.title }}}}: {{{{ event.data.result }}}} ({{{{ event.entity_id }}}})" }}
"#
    )
}

struct E2e {
    _dir: tempfile::TempDir,
    dingtalk: DingTalkHarness,
    gateway: Gateway,
    base: String,
    client: reqwest::Client,
}

impl E2e {
    async fn start(mode: &str, card_callback: &str) -> E2e {
        std::env::set_var("DTE2E_APP_SECRET", SEED_APP_SECRET);
        std::env::set_var("DTE2E_WEBHOOK_SECRET", WEBHOOK_SECRET);
        std::env::set_var("DTE2E_CB_TOKEN", SEED_CALLBACK_TOKEN);
        std::env::set_var("DTE2E_CB_KEY", SEED_CALLBACK_AES_KEY);
        std::env::set_var("DTE2E_CARD_TOKEN", CARD_TOKEN);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dingtalk.toml");
        std::fs::write(&path, config(mode, card_callback)).unwrap();
        let (config, _) = engine::config::load_and_validate(&path).unwrap_or_else(|e| panic!("{}", e.render()));
        let dingtalk = DingTalkHarness::start().await.unwrap();
        let overrides = Overrides {
            store_url: Some(format!("sqlite://{}/e2e.db", dir.path().display())),
            sim_endpoints: Some(dingtalk.endpoint_map()),
            listen: Some("127.0.0.1:0".into()),
            admin_listen: Some("127.0.0.1:0".into()),
            clock: None,
        };
        let gateway = Gateway::start(config, overrides).await.unwrap();
        let base = format!("http://{}", gateway.addr);
        E2e { _dir: dir, dingtalk, gateway, base, client: reqwest::Client::new() }
    }

    async fn webhook(&self, id: &str, body: Value) {
        let body = serde_json::to_vec(&body).unwrap();
        let ts = jiff::Timestamp::now().as_second();
        let secret = WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
        let resp = self
            .client
            .post(format!("{}/hooks/erp", self.base))
            .header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(&secret, id, ts, &body))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    }

    async fn stream_connected(&self) {
        let sim = self.dingtalk.sim().clone();
        wait_for("the gateway's Stream connection", DEFAULT_LIMIT, || sim.stream.connections(SEED_APP_KEY) > 0).await;
    }

    async fn events_stored(&self) -> u64 {
        self.gateway.store.stats(0).await.unwrap().events
    }
}

fn card_status(h: &E2e, out_track_id: &str) -> Option<String> {
    h.dingtalk.sim().cards.card(out_track_id).and_then(|c| c.params.get("status").cloned())
}

#[tokio::test]
async fn a_card_clicked_over_stream_is_updated_and_a_token_expiring_mid_run_is_renewed() {
    let h = E2e::start("stream", "callback = \"stream\"").await;
    h.stream_connected().await;
    let sim = h.dingtalk.sim().clone();

    h.webhook("pr-1", json!({"type": "purchase_requisition.created", "data": {"id": "1", "group": FINANCE_GROUP, "approver": "finance0001"}})).await;
    wait_for("card pr-1", DEFAULT_LIMIT, || card_status(&h, "pr-1").is_some()).await;
    let card = sim.cards.card("pr-1").unwrap();
    assert_eq!(card.params["title"], "PR 1");
    assert_eq!(card.private_data["finance0001"]["canApprove"], "true", "the approve button is the approver's only");
    let tokens_before = sim.org.tokens_issued();

    // Click in the simulator: the callback goes over the gateway's Stream connection, is stored,
    // and the flow updates the card through the OpenAPI.
    sim.cards.click("pr-1", "finance0001", "approve", json!({})).await.unwrap();
    wait_for("the card update", DEFAULT_LIMIT, || card_status(&h, "pr-1").as_deref() == Some("approve by finance0001"))
        .await;

    // The same click delivered again is one event.
    let stored = h.events_stored().await;
    // Over Stream the click returns with the gateway's answer, which comes after the commit:
    // when it returns, the repeat has been stored or recognised.
    sim.cards.click("pr-1", "finance0001", "approve", json!({})).await.unwrap();
    assert_eq!(h.events_stored().await, stored, "a repeated click is deduplicated");

    // The app's token expires mid-run: the next card still goes out, after one fresh token.
    sim.org.expire_tokens();
    h.webhook("pr-2", json!({"type": "purchase_requisition.created", "data": {"id": "2", "group": FINANCE_GROUP, "approver": "finance0001"}})).await;
    wait_for("card pr-2", DEFAULT_LIMIT, || card_status(&h, "pr-2").is_some()).await;
    assert_eq!(sim.org.tokens_issued(), tokens_before + 1, "exactly one new token after expiry");
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn an_approval_approved_in_the_simulator_comes_back_over_stream() {
    let h = E2e::start("stream", "callback = \"stream\"").await;
    h.stream_connected().await;
    let sim = h.dingtalk.sim().clone();

    h.webhook("pay-1", json!({"type": "payment.created", "data": {"id": "PAY-1", "requester": "staff0815", "approver": "finance0001", "payee": "Kowloon Steel Ltd", "amount": "12800.00"}})).await;
    wait_for("the approval task", DEFAULT_LIMIT, || !sim.workflow.pending_tasks_for("finance0001").is_empty()).await;
    let task = sim.workflow.pending_tasks_for("finance0001").remove(0);
    let instance = sim.workflow.instance(&task.instance_id).unwrap();
    assert_eq!(instance.originator_user_id, "staff0815");
    assert!(instance.form.iter().any(|f| f.name == "Payee" && f.value == "Kowloon Steel Ltd"), "{:?}", instance.form);

    // Approve the way the page does, through the simulator's action API.
    let url = h.dingtalk.url();
    let approve = json!({"processInstanceId": task.instance_id, "userId": "finance0001", "remark": "OK"});
    let resp = h.client.post(format!("{url}/_sim/actions/approve")).json(&approve).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
    let inbox = || sim.messages.user_inbox("staff0815");
    wait_for("the requester's work notice", DEFAULT_LIMIT, || !inbox().is_empty()).await;
    let notice = serde_json::to_string(&inbox()).unwrap();
    assert!(notice.contains("agree") && notice.contains(&task.instance_id), "{notice}");

    // Every Stream frame, both ways, is in the simulator's journal; a ping on demand is echoed.
    let resp = h.client.post(format!("{url}/_sim/actions/stream_ping")).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["pinged"], 1);
    wait_for("the ping echo", DEFAULT_LIMIT, || sim.stream.ping_stats().answered >= 1).await;
    let journal: Vec<Value> =
        h.client.get(format!("{url}/_sim/requests?path_prefix=/connect")).send().await.unwrap().json().await.unwrap();
    let sent = journal.iter().filter(|e| e["method"] == "WS-SEND").count();
    let received = journal.iter().filter(|e| e["method"] == "WS-RECV").count();
    let text = serde_json::to_string(&journal).unwrap();
    assert!(sent >= 3 && received >= 3, "frames journaled: {sent} sent, {received} received");
    assert!(text.contains("bpms_instance_change") && text.contains("opaque"), "events and pings are journaled");
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn clicks_and_approvals_arrive_over_http_callbacks() {
    let h = E2e::start("http", "callback = \"http\", callback_route_key = \"dingbridge\"").await;
    let sim = h.dingtalk.sim().clone();
    // What an operator does once in the developer console and with /v1.0/card/callbacks/register.
    sim.events.set_subscription(
        SEED_APP_KEY,
        EventSubscription::Http {
            url: format!("{}/dingtalk/callback", h.base),
            token: SEED_CALLBACK_TOKEN.into(),
            encoding_aes_key: SEED_CALLBACK_AES_KEY.into(),
        },
    );
    let card_url = format!("{}/dingtalk/card-callback/dingtalk?token={CARD_TOKEN}", h.base);
    sim.events.register_card_route(SEED_APP_KEY, "dingbridge", &card_url, "unused");

    h.webhook("pr-9", json!({"type": "purchase_requisition.created", "data": {"id": "9", "group": FINANCE_GROUP, "approver": "pay0002"}})).await;
    wait_for("card pr-9", DEFAULT_LIMIT, || card_status(&h, "pr-9").is_some()).await;
    sim.cards.click("pr-9", "pay0002", "reject", json!({"reason": "duplicate"})).await.unwrap();
    wait_for("the card update", DEFAULT_LIMIT, || card_status(&h, "pr-9").as_deref() == Some("reject by pay0002"))
        .await;

    h.webhook("pay-9", json!({"type": "payment.created", "data": {"id": "PAY-9", "requester": "staff0815", "approver": "finance0001", "payee": "Tsuen Wan Paper Co", "amount": "300.00"}})).await;
    wait_for("the approval task", DEFAULT_LIMIT, || !sim.workflow.pending_tasks_for("finance0001").is_empty()).await;
    let task = sim.workflow.pending_tasks_for("finance0001").remove(0);
    sim.workflow.act(&task.instance_id, task.task_id, "finance0001", false, "over budget").await.unwrap();
    let inbox = || sim.messages.user_inbox("staff0815");
    wait_for("the requester's work notice", DEFAULT_LIMIT, || !inbox().is_empty()).await;
    assert!(serde_json::to_string(&inbox()).unwrap().contains("refuse"));
    // Every push was answered with the encrypted `success` DingTalk requires.
    wait_for("push outcomes", DEFAULT_LIMIT, || {
        sim.events.published().iter().all(|e| e.outcome.starts_with("delivered"))
    })
    .await;

    // A forged card click (no token, a wrong one, or the callback signing token that DingTalk
    // knows too) is refused and stores nothing.
    let stored = h.events_stored().await;
    for query in ["", "?token=", "?token=k3Vq9-Zr_8xWmT2pLc7NbY4hJe", &format!("?token={SEED_CALLBACK_TOKEN}")] {
        let forged = h
            .client
            .post(format!("{}/dingtalk/card-callback/dingtalk{query}", h.base))
            .json(&json!({"outTrackId": "pr-9", "userId": "boss0001", "content": "{}"}))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 401, "{query}");
        let body = forged.text().await.unwrap();
        assert!(body.contains("bad_token") && !body.contains(CARD_TOKEN), "{query}: {body}");
    }
    assert_eq!(h.events_stored().await, stored);
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn a_stream_connection_dropped_mid_event_still_processes_each_event_once() {
    let h = E2e::start("stream", "callback = \"stream\"").await;
    h.stream_connected().await;
    let sim = h.dingtalk.sim().clone();
    let mut timings = sim.stream.timings();
    timings.ack_timeout = Duration::from_millis(500);
    sim.stream.set_timings(timings);
    sim.stream.inject_duplicate(true);

    const EVENTS: usize = 12;
    for i in 0..EVENTS {
        let data = json!({
            "processInstanceId": format!("drop-{i}"),
            "processCode": "PROC-DB-PAYMENT",
            "title": format!("Payment {i}"),
            "type": "finish",
            "result": "agree",
            "staffId": "staff0815",
            "createTime": 1_767_220_000_000_i64,
            "finishTime": 1_767_223_000_000_i64 + i as i64,
        });
        sim.stream.push_event(SEED_APP_KEY, "bpms_instance_change", "dingcorp8d3f2a1b7c9e4f60", data);
        if i % 3 == 0 {
            // The network drops while the event is in flight: un-ACKed events come back.
            sim.stream.drop_connections(SEED_APP_KEY);
        }
    }
    wait_for("every event acknowledged", DEFAULT_LIMIT, || {
        let delivered = sim.stream.delivered_events();
        delivered.len() >= EVENTS && delivered.iter().all(|(_, _, acked)| *acked)
    })
    .await;
    // An authentic but unreadable event is kept as a dead letter, not dropped.
    sim.stream.inject_duplicate(false);
    sim.stream.push_event(SEED_APP_KEY, "bpms_instance_change", "dingcorp8d3f2a1b7c9e4f60", json!({"type": "finish"}));
    let store = h.gateway.store.clone();
    let started = Instant::now();
    while store.stats(0).await.unwrap().dead_letters == 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "the unreadable event was not kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = store.list_dead(10).await.unwrap();
    assert!(dead[0].reason.contains("processInstanceId"), "{}", dead[0].reason);
    wait_for("every event acknowledged", DEFAULT_LIMIT, || {
        sim.stream.delivered_events().iter().all(|(_, _, acked)| *acked)
    })
    .await;
    let deliveries: u32 = sim.stream.delivered_events().iter().map(|(_, n, _)| *n).sum();
    assert!(deliveries as usize > EVENTS, "redeliveries happened ({deliveries} deliveries of {EVENTS} events)");
    assert_eq!(h.events_stored().await, EVENTS as u64 + 1, "each event stored exactly once, plus the dead letter");
    let stats = h.gateway.store.stats(0).await.unwrap();
    assert_eq!(stats.pending + stats.leased + stats.done + stats.dead, EVENTS as u64, "one notice job per event");
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn the_directory_is_kept_in_the_store_and_follows_contact_events() {
    let h = E2e::start("stream", "callback = \"stream\"").await;
    h.stream_connected().await;
    let sim = h.dingtalk.sim().clone();
    let store = h.gateway.store.clone();
    let stored = || {
        let store = store.clone();
        async move { dingbridge_server::directory::load(store.as_ref(), "hk").await.unwrap() }
    };
    let started = Instant::now();
    let snapshot = loop {
        if let Some(s) = stored().await {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no directory stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let finance = snapshot.user("finance0001").expect("the finance director is in the directory");
    assert_eq!(finance.job_number, "E0002");
    let chain: Vec<String> = snapshot.manager_chain("pay0002").into_iter().map(|l| l.userid).collect();
    assert_eq!(chain.first().map(String::as_str), Some("finance0001"), "{chain:?}");
    assert!(snapshot.by_mobile("852", "98765432").is_some_and(|u| u.userid == "manager4711"));

    // A new colleague joins: DingTalk announces it, the gateway fetches and stores them.
    let newcomer = json!({"userid": "buyer0042", "name": "Wong Ka Yan", "mobile": "61112222", "email": "ky.wong@harbour-trading.example.hk",
        "job_number": "E1042", "title": "Buyer", "dept_ids": [20001], "manager_userid": "manager4711"});
    sim::Simulator::put_record(sim.as_ref(), "user", newcomer).await.unwrap();
    let corp = connectors::dingtalk::sim::org::SEED_CORP_ID;
    sim.stream.push_event(
        SEED_APP_KEY,
        "user_add_org",
        corp,
        json!({"UserId": ["buyer0042"], "TimeStamp": "1767225600000"}),
    );
    let started = Instant::now();
    loop {
        if stored().await.is_some_and(|s| s.user("buyer0042").is_some_and(|u| u.job_number == "E1042")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the new user never reached the stored directory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Someone leaves: gone from the stored copy without a full sync.
    sim.stream.push_event(
        SEED_APP_KEY,
        "user_leave_org",
        corp,
        json!({"UserId": ["acct0003"], "TimeStamp": "1767225700000"}),
    );
    let started = Instant::now();
    loop {
        if stored().await.is_some_and(|s| s.user("acct0003").is_none()) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the leaver is still in the stored directory");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn robot_messages_reach_flow_controlled_users_once_without_repeating_the_others() {
    let h = E2e::start("stream", "callback = \"stream\"").await;
    let sim = h.dingtalk.sim().clone();
    // DingTalk flow-controls one recipient for a moment.
    sim.messages.set_flow_controlled(["pay0002"]);
    h.webhook("notice-1", json!({"type": "notice.created", "data": {"id": "N-1", "users": "finance0001, pay0002, acct0003", "text": "Month-end close at 18:00"}})).await;
    let inbox = |user: &str| {
        sim.messages.user_inbox(user).iter().filter(|m| serde_json::to_string(m).unwrap().contains("Month-end")).count()
    };
    // The first send reached the others and was flow-controlled for pay0002.
    wait_for("the first send", DEFAULT_LIMIT, || inbox("finance0001") == 1 && inbox("acct0003") == 1).await;
    assert_eq!(inbox("pay0002"), 0, "flow-controlled");
    sim.messages.set_flow_controlled(Vec::<String>::new());
    wait_for("the flow-controlled user's message", DEFAULT_LIMIT, || inbox("pay0002") == 1).await;
    wait_for_settled(h.gateway.store.as_ref(), DEFAULT_LIMIT).await;
    assert_eq!((inbox("finance0001"), inbox("pay0002"), inbox("acct0003")), (1, 1, 1), "each user got it exactly once");
    h.gateway.shutdown().await;
}

/// `(query, body)` of an encrypted callback as DingTalk sends it.
fn sealed(crypto: &CallbackCrypto, encrypt: &str, timestamp: i64, nonce: &str) -> (String, Vec<u8>) {
    let signature = crypto.signature(&timestamp.to_string(), nonce, encrypt);
    let query = format!("msg_signature={signature}&timestamp={timestamp}&nonce={nonce}");
    (query, serde_json::to_vec(&json!({ "encrypt": encrypt })).unwrap())
}

#[tokio::test]
async fn a_tampered_callback_gets_one_identical_answer_and_a_replay_is_refused() {
    use base64::Engine as _;
    let h = E2e::start("http", "callback = \"http\", callback_route_key = \"dingbridge\"").await;
    let crypto = CallbackCrypto::new(SEED_CALLBACK_TOKEN, SEED_CALLBACK_AES_KEY, SEED_APP_KEY).unwrap();
    let url = format!("{}/dingtalk/callback", h.base);
    let post = |(query, body): (String, Vec<u8>)| {
        let client = h.client.clone();
        let url = format!("{url}?{query}");
        async move {
            let resp = client.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
        }
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let plaintext = r#"{"EventType":"org_dept_create","DeptId":[4242],"TimeStamp":"1767225600000"}"#;
    let good = crypto.encrypt(plaintext);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut flipped = b64.decode(&good).unwrap();
    *flipped.last_mut().unwrap() ^= 0x5a; // the last block decrypts to other padding
    let bad_padding = b64.encode(&flipped);
    let short = b64.encode(&b64.decode(&good).unwrap()[..40]); // not a multiple of 16
    let other_owner = CallbackCrypto::new(SEED_CALLBACK_TOKEN, SEED_CALLBACK_AES_KEY, "dingSOMEONEELSE").unwrap();
    let (good_query, good_body) = sealed(&crypto, &good, now, "n0nce1");
    let variants: Vec<(&str, (String, Vec<u8>))> = vec![
        ("bad padding", sealed(&crypto, &bad_padding, now, "v1")),
        ("wrong length", sealed(&crypto, &short, now, "v2")),
        ("wrong owner key", sealed(&crypto, &other_owner.encrypt(plaintext), now, "v3")),
        ("bad signature", (good_query.replace("msg_signature=", "msg_signature=0"), good_body.clone())),
        ("not base64", sealed(&crypto, "%%%%", now, "v4")),
        ("no signature", (format!("timestamp={now}&nonce=v5"), good_body.clone())),
        ("body not JSON", (good_query.clone(), b"encrypt=1".to_vec())),
    ];
    let stored = h.events_stored().await;
    let mut answers = Vec::new();
    for (what, request) in variants {
        let (status, body) = post(request).await;
        assert_eq!(status, 400, "{what}");
        answers.push((what, body));
    }
    let (_, first) = &answers[0];
    for (what, body) in &answers {
        assert_eq!(body, first, "{what}: every refusal is the same bytes, no oracle");
    }
    let text = String::from_utf8_lossy(first);
    assert!(text.contains("bad_callback") && !text.contains("padding") && !text.contains("owner"), "{text}");
    assert_eq!(h.events_stored().await, stored, "nothing stored");

    // The genuine push is taken once; the same request again is a replay, refused.
    let (status, _) = post((good_query.clone(), good_body.clone())).await;
    assert_eq!(status, 200);
    wait_for_events(&h, stored + 1).await;
    let (status, body) = post((good_query, good_body)).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("replayed_callback"));
    // A push signed six minutes ago is stale, however valid its signature.
    let (status, body) = post(sealed(&crypto, &crypto.encrypt(plaintext), now - 6 * 60_000, "n0nce2")).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("replayed_callback"));
    assert_eq!(h.events_stored().await, stored + 1, "one event from three sends");
    h.gateway.shutdown().await;
}

async fn wait_for_events(h: &E2e, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.events_stored().await < count {
        assert!(Instant::now() < deadline, "{count} events were never stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_click_posted_as_a_webhook_is_refused_kept_and_audited() {
    let h = E2e::start("stream", "callback = \"stream\"").await;
    let body = json!({"type": "card_action.clicked", "data": {"id": "pr-1", "userId": "finance0001", "actionIds": ["approve"]}});
    let body = serde_json::to_vec(&body).unwrap();
    let ts = jiff::Timestamp::now().as_second();
    let secret = WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
    let send = || {
        h.client
            .post(format!("{}/hooks/erp", h.base))
            .header("webhook-id", "forged-1")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(&secret, "forged-1", ts, &body))
            .body(body.clone())
            .send()
    };
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "decision_not_from_dingtalk", "{answer}");
    // Kept for an operator, with the reason; no job planned, so no card was updated.
    let dead = h.gateway.store.list_dead(10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.starts_with("decision_not_from_dingtalk"), "{}", dead[0].reason);
    let stats = h.gateway.store.stats(0).await.unwrap();
    assert_eq!((stats.pending, stats.leased), (0, 0), "nothing reached a flow");
    let audit = h.gateway.store.audit_list(0, 0, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!((audit[0].action.as_str(), audit[0].actor.as_str()), ("intake.refused", "source:erp"));
    assert!(audit[0].detail.contains("finance0001"), "the name used is recorded: {}", audit[0].detail);
    // The sender's retry gets the same answer and adds nothing.
    let again = send().await.unwrap();
    assert_eq!(again.status(), 422);
    assert_eq!(h.gateway.store.list_dead(10).await.unwrap().len(), 1);
    assert_eq!(h.gateway.store.audit_list(0, 0, 10).await.unwrap().len(), 1);
    h.gateway.shutdown().await;
}

#[tokio::test]
async fn an_http_card_click_counts_only_from_a_recipient_of_the_card() {
    let h = E2e::start("http", "callback = \"http\", callback_route_key = \"dingbridge\"").await;
    let sim = h.dingtalk.sim().clone();
    h.webhook("uc-7", json!({"type": "notice_card.created", "data": {"id": "7", "user": "pay0002"}})).await;
    wait_for("card uc-7", DEFAULT_LIMIT, || sim.cards.card("uc-7").is_some()).await;
    let url = format!("{}/dingtalk/card-callback/dingtalk?token={CARD_TOKEN}", h.base);
    let click = |card: &str, user: &str| {
        let body = json!({"outTrackId": card, "userId": user,
            "content": serde_json::to_string(&json!({"cardPrivateData": {"actionIds": ["approve"], "params": {}}})).unwrap()});
        h.client.post(&url).json(&body).send()
    };
    let stored = h.events_stored().await;
    // The right token, but someone the card was not sent to, or a card the gateway never sent.
    for (card, user, code) in [("uc-7", "boss0001", "not_a_recipient"), ("uc-404", "pay0002", "unknown_card")] {
        let resp = click(card, user).await.unwrap();
        assert_eq!(resp.status(), 403, "{card} by {user}");
        let body = resp.text().await.unwrap();
        assert!(body.contains(code), "{body}");
    }
    assert_eq!(h.events_stored().await, stored, "nothing stored");
    let refused: Vec<_> = h
        .gateway
        .store
        .audit_list(0, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "intake.refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].detail.contains("boss0001") && refused[0].subject == "card_action:uc-7");
    // The recipient's click is taken.
    let resp = click("uc-7", "pay0002").await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(h.events_stored().await, stored + 1);

    // A group card: anyone outside the company's directory is refused, once it is synced.
    let store = h.gateway.store.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get_cursor("dingtalk.directory.hk").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the directory was never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.webhook("pr-8", json!({"type": "purchase_requisition.created", "data": {"id": "8", "group": FINANCE_GROUP, "approver": "pay0002"}})).await;
    wait_for("card pr-8", DEFAULT_LIMIT, || sim.cards.card("pr-8").is_some()).await;
    let resp = click("pr-8", "outsider0001").await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("not an active member"));
    let resp = click("pr-8", "finance0001").await.unwrap();
    assert_eq!(resp.status(), 200, "a member of the company may click a group card");
    h.gateway.shutdown().await;
}
