//! The client against the simulator on loopback, feature by feature.

use super::auth::ZohoCredentials;
use super::client::{Deal, PageCursor, SubRequest, Triggers, ZohoClient, ZohoSettings, MAX_WRITE_BATCH};
use super::sim::{ZohoSim, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN};
use super::source::{max_expiry, verify_notification, WatchChannel};
use connect::http::{HttpClient, HttpSettings};
use connect::{DeliveryError, Disposition, SystemClock};
use serde_json::{json, Value};
use sim::{serve, RunningSim, Simulator};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct Harness {
    sim: Arc<ZohoSim>,
    server: RunningSim,
    client: Arc<ZohoClient>,
}

fn credentials(refresh: &str) -> ZohoCredentials {
    ZohoCredentials {
        client_id: SIM_CLIENT_ID.into(),
        client_secret: SIM_CLIENT_SECRET.into(),
        refresh_token: refresh.to_owned().into(),
    }
}

async fn harness_with(settings: impl FnOnce(&mut ZohoSettings), refresh: &str) -> Harness {
    let sim = Arc::new(ZohoSim::new());
    let server = serve(sim.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let mut s = ZohoSettings::with_base(&server.url());
    // Let the sim's `api_domain` (its own address) decide, as with a real accounts server.
    s.pin_api_domain = false;
    s.api_domain = "http://127.0.0.1:9".into();
    settings(&mut s);
    let http = HttpClient::new(HttpSettings::loopback()).unwrap();
    let client = Arc::new(ZohoClient::new(http, s, credentials(refresh), Arc::new(SystemClock)).unwrap());
    Harness { sim, server, client }
}

async fn harness() -> Harness {
    harness_with(|_| {}, SIM_REFRESH_TOKEN).await
}

#[tokio::test]
async fn token_and_api_domain_come_from_the_accounts_server() {
    let h = harness().await;
    let deal = h.client.get_deal("5843104000001234001").await.unwrap().unwrap();
    assert_eq!(deal.name, "KPC - Q3 servo motor bulk order");
    assert_eq!(h.client.tokens().fetch_count(), 1);
    // The request went to the api_domain from the token answer, with the Zoho scheme.
    let journal = h.server.state.requests(0, Some("/crm/v8/Deals"));
    let auth = journal[0].headers.get("authorization").unwrap();
    assert!(auth.starts_with("Zoho-oauthtoken 1000.simaccess"), "{auth}");
    assert!(h.client.get_deal("5843104000009999999").await.unwrap().is_none(), "unknown id → None (204)");
    assert_eq!(h.client.tokens().fetch_count(), 1, "token cached");
}

#[tokio::test]
async fn revoked_refresh_token_is_an_auth_error() {
    let h = harness_with(|_| {}, "1000.revoked").await;
    let err = h.client.get_deal("5843104000001234001").await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth, "{err}");
    assert!(err.to_string().contains("invalid_code"), "{err}");
    assert_eq!(h.sim.calls(), 0);
}

/// A one-row-per-key vault with compare-and-swap, in memory.
use connect::vault::MemoryVault as MemVault;

/// A refresh token kept in the token vault (saved by another instance, or after a re-consent)
/// wins over the configured one at start, and a configured one the accounts server refuses is
/// retried once with the stored one.
#[tokio::test]
async fn a_stored_refresh_token_wins_over_a_revoked_configured_one() {
    use connect::vault::{Keeper, KeeperSlot, TokenKey};
    let sim = Arc::new(ZohoSim::new());
    let server = serve(sim.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let mut s = ZohoSettings::with_base(&server.url());
    s.pin_api_domain = false;
    let key = TokenKey::derive(&[4; 32]).unwrap();
    let vault = Arc::new(MemVault::default());
    let sealed = key.seal("zoho.orgs.crm", "refresh_token", &SIM_REFRESH_TOKEN.to_owned().into());
    connect::vault::TokenVault::save(&*vault, "zoho.orgs.crm", "refresh_token", &sealed, None).await.unwrap();
    let slot = KeeperSlot::default();
    slot.set(Keeper { vault, key }).unwrap();
    let http = HttpClient::new(HttpSettings::loopback()).unwrap();
    let client = ZohoClient::with_token_vault(
        http,
        s,
        credentials("1000.revoked"),
        Arc::new(SystemClock),
        Some(("zoho.orgs.crm", slot)),
    )
    .unwrap();
    let deal = client.get_deal("5843104000001234001").await.unwrap().unwrap();
    assert_eq!(deal.name, "KPC - Q3 servo motor bulk order");
    assert_eq!(sim.refresh_count(), 1, "the revoked configured token was never sent");
}

#[tokio::test]
async fn invalid_token_refetches_once_and_replays_once() {
    let h = harness().await;
    h.client.get_deal("5843104000001234001").await.unwrap();
    h.sim.expire_tokens();
    let deal = h.client.get_deal("5843104000001234002").await.unwrap().unwrap();
    assert_eq!(deal.id, "5843104000001234002");
    assert_eq!(h.client.tokens().fetch_count(), 2);
    assert_eq!(h.sim.calls(), 3, "first call, rejected call, replay");
}

#[tokio::test]
async fn money_lookups_and_times_are_typed() {
    let h = harness().await;
    let rows = h
        .client
        .list_all("Deals", &["Deal_Name", "Amount", "Currency", "Account_Name", "Owner", "Stage"], 200)
        .await
        .unwrap();
    let deals: Vec<Deal> = rows.iter().map(Deal::from_record).collect::<Result<_, _>>().unwrap();
    let codes: Vec<&str> = deals.iter().map(|d| d.amount.unwrap().currency.code()).collect();
    assert_eq!(codes, ["HKD", "HKD", "USD", "CNY"]);
    assert_eq!(deals[2].amount.unwrap().amount_string(), "56000.50");
    assert_eq!(deals[0].owner.as_ref().unwrap().name.as_deref(), Some("Chan Tai Man"));
    assert!(deals[0].modified_time.is_none(), "not requested in `fields`");
}

#[tokio::test]
async fn paging_switches_to_page_token_after_2000_records() {
    let h = harness().await;
    for i in 0..2046 {
        h.sim.put_record("Contacts", json!({"Last_Name": format!("Bulk {i}")})).await.unwrap();
    }
    let rows = h.client.list_all("Contacts", &["Last_Name"], 200).await.unwrap();
    assert_eq!(rows.len(), 2048);
    let mut ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2048, "no record twice");
    let journal = h.server.state.requests(0, Some("/crm/"));
    assert!(journal.iter().any(|e| e.query.as_deref().is_some_and(|q| q.contains("page_token="))));
    // A single page reports the next cursor.
    let page = h.client.list_page("Contacts", &["Last_Name"], 2, &PageCursor::Page(1)).await.unwrap();
    assert_eq!((page.records.len(), page.next), (2, Some(PageCursor::Page(2))));
}

#[tokio::test]
async fn list_without_fields_is_rejected() {
    let h = harness().await;
    let err = h.client.list_page("Deals", &[], 10, &PageCursor::Page(1)).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::Rejected { .. }) && err.to_string().contains("REQUIRED_PARAM_MISSING"),
        "{err}"
    );
}

#[tokio::test]
async fn related_notes_and_activities() {
    let h = harness().await;
    let notes = h.client.notes("Deals", "5843104000001234001").await.unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["Note_Title"], "Discount request");
    let activities = h.client.closed_activities("Deals", "5843104000001234001").await.unwrap();
    assert_eq!(activities.len(), 1);
    assert_eq!(activities[0]["$module"], "Calls");
    assert!(h.client.notes("Deals", "5843104000001234004").await.unwrap().is_empty(), "204 → empty");
}

#[tokio::test]
async fn coql_rows_lookups_and_credits() {
    let h = harness().await;
    let (rows, more) = h
        .client
        .coql("select Deal_Name, Account_Name, Account_Name.Account_Name from Deals where Currency = 'HKD' limit 1000 offset 0")
        .await
        .unwrap();
    assert!(!more);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["Account_Name"], json!({"id": "5843104000000871001"}));
    assert_eq!(rows[0]["Account_Name.Account_Name"], "Kowloon Precision Components Ltd");
    let deal = Deal::from_record(&rows[0]).unwrap();
    assert_eq!(deal.account.unwrap().name, None);
    assert_eq!(h.client.credits().spent(), 2, "LIMIT 1000 costs 2 credits");
    assert_eq!(h.sim.credits_used(), 2);
    let err = h.client.coql("select id from Deals where id is not null limit 5000").await.unwrap_err();
    assert!(err.to_string().contains("LIMIT_EXCEEDED"), "{err}");
    let (rows, _) = h.client.coql("select id from Deals where Stage = 'Nope'").await.unwrap();
    assert!(rows.is_empty());
}

#[tokio::test]
async fn updates_report_each_record_and_batch_by_100() {
    let h = harness().await;
    let records = vec![
        json!({"id": "5843104000001234001", "Stage": "Closed Won"}),
        json!({"id": "5843104000001234002", "Stage": "Won-ish"}),
        json!({"id": "5843104000009999999", "Stage": "Closed Lost"}),
        json!({"id": "5843104000001234003", "Closing_Date": "2025-12-01", "Last_Activity_Time": "2025-08-14T06:30:05Z"}),
    ];
    let results = h.client.update("Deals", &records, Triggers::None).await.unwrap();
    let codes: Vec<&str> = results.iter().map(|r| r.status.code.as_str()).collect();
    assert_eq!(codes, ["SUCCESS", "INVALID_DATA", "INVALID_DATA", "INVALID_DATA"]);
    assert_eq!(results[0].id.as_deref(), Some("5843104000001234001"));
    assert_eq!(results[1].status.details["api_name"], "Stage");
    assert_eq!(results[3].status.details["expected_data_type"], "datetime");
    assert_eq!(results[1].error().unwrap().disposition(), Disposition::Permanent);
    assert_eq!(h.sim.record("Deals", "5843104000001234001").unwrap()["Stage"], "Closed Won");

    let many: Vec<Value> = (0..250).map(|i| json!({"Last_Name": format!("N{i}")})).collect();
    let calls_before = h.sim.calls();
    let results = h.client.insert("Contacts", &many, Triggers::Workflow).await.unwrap();
    assert_eq!(results.len(), 250);
    assert!(results.iter().all(|r| r.is_success() && r.id.is_some()));
    assert_eq!(h.sim.calls() - calls_before, 250_u64.div_ceil(MAX_WRITE_BATCH as u64));
}

#[tokio::test]
async fn upsert_inserts_or_updates_by_duplicate_check_field() {
    let h = harness().await;
    let records = vec![
        json!({"Email": "kayan.wong@kpc.example", "Title": "Purchasing Manager"}),
        json!({"Email": "new.buyer@kpc.example", "Last_Name": "Buyer"}),
    ];
    let results = h.client.upsert("Contacts", &records, &["Email"], Triggers::None).await.unwrap();
    let actions: Vec<_> = results.iter().map(|r| r.action.as_deref()).collect();
    assert_eq!(actions, [Some("update"), Some("insert")]);
    assert_eq!(results[0].id.as_deref(), Some("5843104000000872001"));
    assert_eq!(h.sim.record("Contacts", "5843104000000872001").unwrap()["Title"], "Purchasing Manager");
}

#[tokio::test]
async fn exhausted_credits_answer_429_and_the_header_appears_past_half() {
    let h = harness().await;
    h.sim.set_limits(4, 20, Duration::ZERO);
    h.client.get_deal("5843104000001234001").await.unwrap();
    assert_eq!(h.client.credits().remaining(), None, "below half: no header");
    h.client.get_deal("5843104000001234001").await.unwrap();
    assert_eq!(h.client.credits().remaining(), Some(2));
    h.client.get_deal("5843104000001234001").await.unwrap();
    h.client.get_deal("5843104000001234001").await.unwrap();
    let err = h.client.get_deal("5843104000001234001").await.unwrap_err();
    assert!(matches!(err.disposition(), Disposition::RetryAfter(_)), "{err}");
    assert!(err.to_string().contains("TOO_MANY_REQUESTS"));
}

#[tokio::test]
async fn the_client_never_exceeds_its_concurrency_limit() {
    let h = harness_with(|s| s.concurrency = 3, SIM_REFRESH_TOKEN).await;
    h.sim.set_limits(100_000, 3, Duration::from_millis(60));
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let client = h.client.clone();
            tokio::spawn(async move { client.get_deal("5843104000001234001").await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(h.sim.max_in_flight(), 3);
    assert_eq!(h.client.available_permits(), 3);

    // A client allowed more than the org's limit meets the sim's 429.
    let greedy = harness_with(|s| s.concurrency = 8, SIM_REFRESH_TOKEN).await;
    greedy.sim.set_limits(100_000, 2, Duration::from_millis(100));
    greedy.client.get_deal("5843104000001234001").await.unwrap();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let client = greedy.client.clone();
            tokio::spawn(async move { client.get_deal("5843104000001234001").await })
        })
        .collect();
    let mut throttled = 0;
    for t in tasks {
        if let Err(err) = t.await.unwrap() {
            assert_eq!(err.kind(), "throttled", "{err}");
            throttled += 1;
        }
    }
    assert!(throttled >= 1);
}

#[tokio::test]
async fn channels_notify_with_their_token_and_are_verified() {
    use axum::routing::post;
    let h = harness().await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let app = axum::Router::new().route(
        "/hooks/zoho",
        post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _sent = tx.send(body.to_vec()).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks/zoho?src=crm", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let channel = WatchChannel::new("1000000068001", &["Deals.edit"], &hook_url, "dbr-sim-token-1".into()).unwrap();
    let expiry = max_expiry(jiff::Timestamp::now());
    let answer = h.client.watch(channel.enable_body(expiry)).await.unwrap();
    assert!(answer[0].is_success(), "{answer:?}");
    let extended = h.client.patch_watch(channel.extend_body(expiry)).await.unwrap();
    assert!(extended[0].is_success());

    h.sim.put_record("Deals", json!({"id": "5843104000001234002", "Stage": "Closed Won"})).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let n = verify_notification(&body, std::slice::from_ref(&channel)).unwrap();
    assert_eq!((n.operation.as_str(), n.ids.as_slice()), ("update", ["5843104000001234002".to_owned()].as_slice()));
    assert_eq!(n.affected_values[0].values["Stage"], "Closed Won");
    assert_eq!(n.query_params["src"], "crm");

    // Creates are not watched by this channel; an API update is.
    h.sim.put_record("Deals", json!({"Deal_Name": "new"})).await.unwrap();
    h.client
        .update("Deals", &[json!({"id": "5843104000001234003", "Stage": "Closed Lost"})], Triggers::None)
        .await
        .unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
    let n = verify_notification(&body, &[channel]).unwrap();
    assert_eq!(n.ids, ["5843104000001234003"]);
}

#[tokio::test]
async fn sim_info_reset_and_records() {
    let sim = ZohoSim::new();
    assert_eq!(sim.name(), "zoho");
    assert_eq!(sim.info()["client_id"], SIM_CLIENT_ID);
    sim.put_record("limits", json!({"daily_credits": 10})).await.unwrap();
    assert_eq!(sim.info()["daily_credits"], 10);
    assert!(sim.put_record("Widgets", json!({})).await.is_err());
    assert!(sim.put_record("Deals", json!({"id": 5})).await.is_err(), "ids are strings");
    sim.reset();
    assert_eq!(sim.info()["daily_credits"], super::sim::DEFAULT_DAILY_CREDITS);
}

#[tokio::test]
async fn composite_fetches_deal_history_in_one_credit_and_counts_five_units() {
    let h = harness_with(|s| s.concurrency = 6, SIM_REFRESH_TOKEN).await;
    let deal = "5843104000001234001";
    let requests = [
        SubRequest::get("deal", &format!("Deals/{deal}"), &[]),
        SubRequest::get("notes", &format!("Deals/{deal}/Notes"), &[("fields", "Note_Title,Note_Content")]),
        SubRequest::get(
            "history",
            &format!("Deals/{deal}/Activities_Chronological_View_History"),
            &[("fields", "Subject")],
        ),
        SubRequest::get("account", "Accounts/5843104000000871001", &[]),
    ];
    let subs = h.client.composite(&requests).await.unwrap();
    assert_eq!(subs.iter().map(|s| s.status_code).collect::<Vec<_>>(), [200, 200, 200, 200]);
    assert_eq!(Deal::from_record(&subs[0].rows()[0]).unwrap().id, deal);
    assert_eq!(subs[1].rows().len(), 2);
    assert_eq!(subs[2].rows()[0]["$module"], "Calls");
    assert_eq!(subs[3].rows()[0]["Account_Name"], "Kowloon Precision Components Ltd");
    assert_eq!(h.sim.credits_used(), 1);
    let six: Vec<SubRequest> = (0..6).map(|i| SubRequest::get(&i.to_string(), "Deals", &[])).collect();
    assert_eq!(h.client.composite(&six).await.unwrap_err().kind(), "bad_payload");

    // A composite (5 units) and 3 GETs against an org limit of 6: the client waits instead of
    // causing a 429.
    h.sim.set_limits(100_000, 6, Duration::from_millis(80));
    let composite = {
        let client = h.client.clone();
        let requests = requests.to_vec();
        tokio::spawn(async move { client.composite(&requests).await.map(|_| ()) })
    };
    let gets: Vec<_> = (0..3)
        .map(|_| {
            let client = h.client.clone();
            tokio::spawn(async move { client.get_deal(deal).await.map(|_| ()) })
        })
        .collect();
    composite.await.unwrap().unwrap();
    for g in gets {
        g.await.unwrap().unwrap();
    }
    assert!(h.sim.max_in_flight() <= 6, "{}", h.sim.max_in_flight());
}

#[tokio::test]
async fn polling_with_if_modified_since() {
    let h = harness().await;
    let since = model::ZonedTime::parse("since", "2025-08-14T14:30:05+08:00").unwrap();
    assert!(h.client.list_modified_since("Deals", &["Stage"], since).await.unwrap().is_empty(), "304 → nothing");
    h.sim.put_record("Deals", json!({"id": "5843104000001234003", "Stage": "Closed Lost"})).await.unwrap();
    let rows = h.client.list_modified_since("Deals", &["Stage"], since).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], "5843104000001234003");
    let journal = h.server.state.requests(0, Some("/crm/v8/Deals"));
    assert_eq!(journal[0].headers.get("if-modified-since").map(String::as_str), Some("2025-08-14T14:30:05+08:00"));
}

#[tokio::test]
async fn channels_can_be_disabled() {
    let h = harness().await;
    let channel = WatchChannel::new("77", &["Deals.all"], "http://127.0.0.1:9/x", "t".into()).unwrap();
    h.client.watch(channel.enable_body(max_expiry(jiff::Timestamp::now()))).await.unwrap();
    assert_eq!(h.sim.info()["channels"], 1);
    let answer = h.client.disable_watch(&["77"]).await.unwrap();
    assert!(answer[0].is_success());
    assert_eq!(h.sim.info()["channels"], 0);
}

#[tokio::test]
async fn token_endpoint_throttles_after_ten_refreshes() {
    use connect::token::TokenFetcher;
    let h = harness().await;
    let http = HttpClient::new(HttpSettings::loopback()).unwrap();
    let fetcher = super::auth::RefreshTokenFetcher::new(http, &h.server.url(), credentials(SIM_REFRESH_TOKEN)).unwrap();
    for _ in 0..10 {
        let token = fetcher.fetch().await.unwrap();
        assert_eq!(token.lifetime, Duration::from_secs(3600));
    }
    assert_eq!(fetcher.api_domain(), Some(h.server.url()));
    let err = fetcher.fetch().await.unwrap_err();
    assert_eq!(err.kind(), "throttled", "{err}");
    assert_eq!(h.sim.refresh_count(), 10);
}

#[tokio::test]
async fn sim_enforces_the_100_record_cap_and_reports_token_expiry() {
    use secrecy::ExposeSecret;
    let h = harness().await;
    h.client.get_deal("5843104000001234001").await.unwrap();
    let token = h.client.tokens().get().await.unwrap();
    let records: Vec<Value> = (0..101).map(|i| json!({"Last_Name": format!("N{i}")})).collect();
    let resp = reqwest::Client::new()
        .post(format!("{}/crm/v8/Contacts", h.server.url()))
        .header("Authorization", format!("Zoho-oauthtoken {}", token.expose_secret()))
        .json(&json!({ "data": records }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.headers().contains_key("x-accesstoken-reset"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "LIMIT_EXCEEDED");
}

#[tokio::test]
async fn conditional_update_reports_already_modified() {
    let h = harness().await;
    let since = model::ZonedTime::parse("since", "2025-08-14T14:30:05+08:00").unwrap();
    let record = json!({"id": "5843104000001234001", "Stage": "Closed Won"});
    let ok = h.client.update_if_unmodified("Deals", record.clone(), since, Triggers::None).await.unwrap();
    assert!(ok.is_success());
    let stale = h.client.update_if_unmodified("Deals", record, since, Triggers::None).await.unwrap();
    assert_eq!(stale.status.code, "ALREADY_MODIFIED");
    assert_eq!(stale.error().unwrap().disposition(), Disposition::Permanent);
    let journal = h.server.state.requests(0, Some("/crm/v8/Deals"));
    assert_eq!(journal.last().unwrap().status, Some(412));
}

#[tokio::test]
async fn channel_renewal_patches_the_expiry_when_due() {
    use super::source::{renew_if_due, DEFAULT_RENEW_MARGIN};
    #[derive(Debug)]
    struct At(jiff::Timestamp);
    impl connect::Clock for At {
        fn now(&self) -> jiff::Timestamp {
            self.0
        }
    }
    let h = harness().await;
    let channel = WatchChannel::new("88", &["Deals.edit"], "http://127.0.0.1:9/x", "t".into()).unwrap();
    let now = jiff::Timestamp::now();
    let expiry = model::ZonedTime(now.saturating_add(jiff::SignedDuration::from_hours(2)).unwrap());
    h.client.watch(channel.enable_body(expiry)).await.unwrap();
    let calm = At(now.saturating_sub(jiff::SignedDuration::from_hours(24)).unwrap());
    assert_eq!(renew_if_due(&h.client, &channel, expiry, DEFAULT_RENEW_MARGIN, &calm).await.unwrap(), None);
    let renewed = renew_if_due(&h.client, &channel, expiry, DEFAULT_RENEW_MARGIN, &At(now)).await.unwrap().unwrap();
    assert!(renewed.0 > now.saturating_add(jiff::SignedDuration::from_hours(24 * 6)).unwrap());
    let listed = h.sim.info();
    assert_eq!(listed["channels"], 1);
    // An unknown channel cannot be renewed.
    let ghost = WatchChannel::new("99", &["Deals.edit"], "http://127.0.0.1:9/x", "t".into()).unwrap();
    assert!(renew_if_due(&h.client, &ghost, expiry, DEFAULT_RENEW_MARGIN, &At(now)).await.is_err());
}

#[tokio::test]
async fn typed_accounts_contacts_and_deals() {
    let h = harness().await;
    let account = h.client.get_account("5843104000000871002").await.unwrap().unwrap();
    assert_eq!(account.name, "Shenzhen Harbour Electronics Co");
    let contact = h.client.get_contact("5843104000000872001").await.unwrap().unwrap();
    assert_eq!(contact.full_name, "Ka Yan Wong");
    let deals = h.client.list_deals().await.unwrap();
    assert_eq!(deals.len(), 4);
    assert!(deals.iter().all(|d| d.modified_time.is_some() && d.closing_date.is_some()));
}

#[tokio::test]
async fn delete_and_list_deleted() {
    let h = harness().await;
    let results = h.client.delete("Deals", &["5843104000001234004", "5843104000009999999"]).await.unwrap();
    assert!(results[0].is_success());
    assert_eq!(results[1].status.code, "INVALID_DATA");
    assert!(h.client.get_deal("5843104000001234004").await.unwrap().is_none());
    let deleted = h.client.deleted("Deals", None).await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["display_name"], "Shenzhen Harbour - connector reels");
    let future = model::ZonedTime(jiff::Timestamp::now().saturating_add(jiff::SignedDuration::from_hours(1)).unwrap());
    assert!(h.client.deleted("Deals", Some(future)).await.unwrap().is_empty());
    assert!(h.client.deleted("Accounts", None).await.unwrap().is_empty(), "204 → empty");
}

// ---------------------------------------------------------------- R22: the token answer's api_domain

#[tokio::test]
async fn an_api_domain_off_zoho_is_refused_and_never_called() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let rogue_router = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { axum::Json(json!({"data": []})) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rogue = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, rogue_router).await.unwrap() });
    for api_domain in [
        rogue.clone(),
        "https://www.zohoapis.com.evil.example".to_owned(),
        "https://zohoapis.example".to_owned(),
        "http://www.zohoapis.com".to_owned(),
    ] {
        // An accounts server (trusted: it is configured) answering with that api_domain.
        let answer =
            json!({"access_token": "1000.fake", "api_domain": api_domain, "token_type": "Bearer", "expires_in": 3600});
        let accounts = axum::Router::new()
            .route("/oauth/v2/token", axum::routing::post(move || async move { axum::Json(answer) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, accounts).await.unwrap() });
        let mut settings = ZohoSettings::with_base(&base);
        settings.pin_api_domain = false;
        let http = HttpClient::new(HttpSettings::loopback()).unwrap();
        let client = ZohoClient::new(http, settings, credentials(SIM_REFRESH_TOKEN), Arc::new(SystemClock)).unwrap();
        let err = client.get_deal("5843104000001234001").await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Permanent, "{api_domain}: {err}");
        assert!(matches!(err, DeliveryError::UnsafeDestination { .. }), "{api_domain}: {err:?}");
        assert!(err.to_string().contains("api_domain"), "{api_domain}: {err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a refused api_domain is never called");
}

/// R27 on Zoho: 1,000 deals changed three times each while the COQL poll runs, 300 changes to a
/// `Modified_Time` second, in bursts of 700 (more than a page of 200 between polls), every third
/// page lost before its commit: every last change arrives, none twice, each deal's changes in
/// order.
#[tokio::test]
async fn r27_polls_see_every_change_once_while_records_change() {
    use crate::reader::CrmReader;
    let h = harness().await;
    h.sim.put_record("limits", json!({"daily_credits": 10_000_000})).await.unwrap();
    let reader = Arc::new(super::reader::ZohoReader { client: h.client.clone(), clock: Arc::new(SystemClock) });
    let start = jiff::Timestamp::now().as_second();
    let cursor = Some(serde_json::to_string(&crate::keyset::KeysetState::starting_at(start)).unwrap());
    let poll = |cursor: Option<String>| {
        let reader = reader.clone();
        async move { reader.poll("Deals", cursor.as_deref(), jiff::Timestamp::now()).await }
    };
    let sim = h.sim.clone();
    let writer = tokio::spawn(async move {
        for k in 0..3000i64 {
            let (round, n) = (k / 1000, k % 1000);
            let i = (n * 7919 + round * 13) % 1000;
            let at = jiff::Timestamp::from_second(start + k / 300).unwrap().to_string();
            let deal = json!({"id": format!("584310409{i:08}"), "Deal_Name": format!("R27 {i}"), "Stage": format!("round {round}"), "Modified_Time": at});
            sim.put_record("Deals", deal).await.unwrap();
            if k % 700 == 699 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let outcome = crate::poll_tests::poll_while_changing(cursor.clone(), poll, writer, 3).await;
    let last = crate::poll_tests::last_changes(cursor, poll).await;
    crate::poll_tests::check("Zoho", &outcome, &last, 1000, true);
}
