//! The client against the simulator on loopback, feature by feature.

use super::auth::{Grant, InstanceUrl, SalesforceTokenFetcher, DEFAULT_SESSION_LIFETIME};
use super::client::{money_field, SalesforceClient};
use super::limits::{Priority, QuotaGuard};
use super::sim::{seed, SalesforceSim, SimConfig};
use super::source::{parse_outbound_message, poll_changes, PollCursor, ACK_BODY};
use connect::http::{HttpClient, HttpSettings};
use connect::token::TokenCache;
use connect::{Clock, Disposition};
use jiff::Timestamp;
use secrecy::SecretString;
use serde_json::{json, Value};
use sim::{RunningSim, Simulator};
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BG: Priority = Priority::Background;

/// A clock tests move by hand, so records written together share one SystemModstamp.
#[derive(Debug)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millisecond(self.0.load(Ordering::SeqCst)).unwrap()
    }
}

struct Rig {
    sim: Arc<SalesforceSim>,
    server: RunningSim,
    clock: Arc<ManualClock>,
}

async fn rig() -> Rig {
    rig_with(SimConfig::default()).await
}

async fn rig_with(config: SimConfig) -> Rig {
    let clock = Arc::new(ManualClock(AtomicI64::new(Timestamp::now().as_millisecond())));
    let sim = Arc::new(SalesforceSim::new(config, clock.clone()));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    Rig { sim, server, clock }
}

impl Rig {
    fn fetcher(&self, grant: Grant) -> (Arc<TokenCache>, Arc<InstanceUrl>) {
        let instance = Arc::new(InstanceUrl::default());
        let http = HttpClient::new(HttpSettings::loopback()).unwrap();
        let fetcher = SalesforceTokenFetcher::new(
            http,
            &self.server.url(),
            grant,
            DEFAULT_SESSION_LIFETIME,
            instance.clone(),
            self.clock.clone(),
        )
        .unwrap();
        (Arc::new(TokenCache::new(Arc::new(fetcher), Duration::from_secs(60), self.clock.clone())), instance)
    }

    fn client_with(&self, grant: Grant) -> (SalesforceClient, Arc<TokenCache>) {
        let (tokens, instance) = self.fetcher(grant);
        let http = HttpClient::new(HttpSettings::loopback()).unwrap();
        (SalesforceClient::new(http, tokens.clone(), instance, "v62.0"), tokens)
    }

    fn client(&self) -> SalesforceClient {
        self.client_with(cc_grant(seed::CLIENT_SECRET)).0
    }
}

fn cc_grant(secret: &str) -> Grant {
    Grant::ClientCredentials {
        client_id: seed::CLIENT_ID.to_owned(),
        client_secret: SecretString::from(secret.to_owned()),
    }
}

#[tokio::test]
async fn client_credentials_read_a_record_and_track_usage() {
    let rig = rig().await;
    let client = rig.client();
    let opp =
        client.get_record("Opportunity", "0065g00000Qx1Zp", &["Name", "Amount", "CurrencyIsoCode"], BG).await.unwrap();
    assert_eq!(opp["attributes"]["type"], "Opportunity");
    assert_eq!(money_field(&opp, "Amount", "HKD").unwrap().unwrap().amount_string(), "1250000.00");
    let usage = client.usage().snapshot().unwrap();
    assert_eq!((usage.used, usage.max), (1, 15_000));
    assert_eq!(rig.sim.api_calls(), 1);
    let err = client.get_record("Opportunity", "0065g00000Qx1Zz", &["Name"], BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    let err = client.get_record("Opportunity", "bad", &["Name"], BG).await.unwrap_err();
    assert!(err.to_string().contains("MALFORMED_ID"), "{err}");

    let (bad, _) = rig.client_with(cc_grant("wrong"));
    let err = bad.get_record("Opportunity", seed::OPPORTUNITY_ID, &["Name"], BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);
    assert!(err.to_string().contains("invalid_client"), "{err}");
}

#[tokio::test]
async fn jwt_bearer_and_refresh_token_grants() {
    let rig = rig().await;
    let pem = super::sim::TEST_PRIVATE_KEY_PEM.as_bytes();
    let grant =
        Grant::jwt_bearer(seed::CLIENT_ID, seed::INTEGRATION_USERNAME, "https://login.salesforce.com", pem).unwrap();
    let (client, _) = rig.client_with(grant);
    assert!(client.get_record("Account", seed::ACCOUNT_ID, &["Name"], BG).await.is_ok());

    let wrong_aud =
        Grant::jwt_bearer(seed::CLIENT_ID, seed::INTEGRATION_USERNAME, "https://hktrading.my.salesforce.com", pem)
            .unwrap();
    let err = rig.client_with(wrong_aud).0.get_record("Account", seed::ACCOUNT_ID, &["Name"], BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);
    assert!(err.to_string().contains("audience is invalid"), "{err}");
    let stranger =
        Grant::jwt_bearer(seed::CLIENT_ID, "nobody@example.com", "https://login.salesforce.com", pem).unwrap();
    let err = rig.client_with(stranger).0.get_record("Account", seed::ACCOUNT_ID, &["Name"], BG).await.unwrap_err();
    assert!(err.to_string().contains("hasn't approved"), "{err}");

    let refresh = |rt: &str| {
        Grant::refresh_token(
            seed::CLIENT_ID,
            Some(SecretString::from(seed::CLIENT_SECRET)),
            SecretString::from(rt.to_owned()),
        )
    };
    assert!(rig.client_with(refresh(seed::REFRESH_TOKEN)).0.limits(BG).await.is_ok());
    let err = rig.client_with(refresh("revoked")).0.limits(BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);
}

/// An org with refresh-token rotation on (reference A1): every refresh answers a new refresh
/// token and the one used dies. One client follows its own rotations in memory; another that
/// still holds the first token is refused (sharing through the store: engine/tests/token_vault.rs).
#[tokio::test]
async fn a_rotating_org_answers_a_new_refresh_token_and_refuses_the_old_one() {
    let rig = rig_with(SimConfig { rotate_refresh_tokens: true, ..SimConfig::default() }).await;
    let refresh = || {
        Grant::refresh_token(
            seed::CLIENT_ID,
            Some(SecretString::from(seed::CLIENT_SECRET)),
            SecretString::from(seed::REFRESH_TOKEN.to_owned()),
        )
    };
    let (client, tokens) = rig.client_with(refresh());
    for round in 1..=3_u64 {
        let token = tokens.get().await.unwrap();
        assert_eq!(rig.sim.refresh_token().1, round, "each refresh rotates");
        client.limits(BG).await.unwrap();
        tokens.invalidate(&token).await;
    }
    let (live, _) = rig.sim.refresh_token();
    assert_ne!(live, seed::REFRESH_TOKEN);
    let (stale, _) = rig.client_with(refresh());
    let err = stale.limits(BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Auth);
    assert!(err.to_string().contains("invalid_grant"), "{err}");
}

#[tokio::test]
async fn an_expired_session_is_refreshed_once_and_replayed() {
    let rig = rig().await;
    let (client, tokens) = rig.client_with(cc_grant(seed::CLIENT_SECRET));
    client.get_record("Account", seed::ACCOUNT_ID, &["Name"], BG).await.unwrap();
    rig.sim.expire_tokens();
    let account = client.get_record("Account", seed::ACCOUNT_ID, &["Name"], BG).await.unwrap();
    assert_eq!(account["Name"], "Kowloon Precision Components Ltd");
    assert_eq!(tokens.fetch_count(), 2);
    assert_eq!(client.call_count(), 3, "first call, rejected call, replay");
    assert_eq!(rig.sim.api_calls(), 2, "the 401 does not consume quota");
}

#[tokio::test]
async fn queries_follow_next_records_url_and_fetch_history_in_one_call() {
    let rig = rig().await;
    rig.sim.set_batch_size(2);
    let client = rig.client();
    let rows = client.query("SELECT Id, Name, Account.Name FROM Opportunity ORDER BY Name", BG).await.unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rig.sim.api_calls(), 2, "one call per page");
    assert!(rows.iter().all(|r| r["Account"]["Name"].is_string()));

    let before = rig.sim.api_calls();
    let deal = client.opportunity_with_history("0065g00000Qx1Zp", BG).await.unwrap().unwrap();
    assert_eq!(rig.sim.api_calls() - before, 1);
    assert_eq!(deal["Account"]["Name"], "Kowloon Precision Components Ltd");
    assert_eq!(deal["Owner"]["Name"], "Chan Tai Man");
    assert_eq!(deal["Tasks"]["totalSize"], 2);
    assert_eq!(deal["Tasks"]["records"][0]["Subject"], "Send revised quote", "newest ActivityDate first");
    assert_eq!(deal["Events"]["records"][0]["Location"], "Kwun Tong");
    assert_eq!(deal["OpportunityContactRoles"]["records"][0]["Contact"]["Name"], "Ka Yan Wong");
    let other = client.opportunity_with_history("0065g00000Qx1ZsAAJ", BG).await.unwrap().unwrap();
    assert!(other["Tasks"].is_null(), "no children is null, not an empty list");

    let err = client.query("SELECT Id FROM Nope", BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("INVALID_TYPE"), "{err}");
    // A field the org lacks is refused as Salesforce refuses it, not answered with nulls.
    let err = client.query("SELECT Id, Nmae FROM Opportunity", BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("INVALID_FIELD") && err.to_string().contains("No such column 'Nmae'"), "{err}");
}

#[tokio::test]
async fn patch_upsert_and_validation() {
    let rig = rig().await;
    let client = rig.client();
    client.update("Opportunity", seed::OPPORTUNITY_ID, &json!({"StageName": "Closed Won"}), BG).await.unwrap();
    let stored = rig.sim.record("Opportunity", seed::OPPORTUNITY_ID).unwrap();
    assert_eq!(stored["IsWon"], true);
    let err = client.update("Opportunity", seed::OPPORTUNITY_ID, &json!({"StageName": "Won!"}), BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"), "{err}");

    let body = json!({"LastName": "Ho", "FirstName": "Siu Ming", "Email": "sm.ho@kpc.example"});
    let created = client.upsert("Contact", "Dingbridge_Id__c", "dt-user-0099", &body, BG).await.unwrap();
    assert!(created.created);
    let updated =
        client.upsert("Contact", "Dingbridge_Id__c", "dt-user-0099", &json!({"Title": "Buyer"}), BG).await.unwrap();
    assert_eq!((updated.created, updated.id.clone()), (false, created.id.clone()));
    assert_eq!(rig.sim.record("Contact", &created.id).unwrap()["Title"], "Buyer");
}

#[tokio::test]
async fn collections_report_record_by_record_and_chunk_by_200() {
    let rig = rig().await;
    rig.sim.lock_record("0065g00000Qx1ZqAAJ");
    let client = rig.client();
    let records = vec![
        json!({"attributes": {"type": "Opportunity"}, "id": seed::OPPORTUNITY_ID, "NextStep": "Sign"}),
        json!({"attributes": {"type": "Opportunity"}, "id": "0065g00000Qx1ZqAAJ", "NextStep": "Sign"}),
        json!({"attributes": {"type": "Opportunity"}, "id": "0065g00000Qx1Z", "NextStep": "Sign"}),
    ];
    let results = client.update_collection(&records, false, BG).await.unwrap();
    assert!(results[0].success);
    assert!(results[1].errors[0].is_retryable(), "row lock is retryable");
    assert_eq!(results[2].errors[0].error_code, "MALFORMED_ID");
    assert!(!results[2].errors[0].is_retryable());
    assert_eq!(rig.sim.record("Opportunity", seed::OPPORTUNITY_ID).unwrap()["NextStep"], "Sign");

    let all_or_none = client
        .update_collection(&records[..1].iter().chain(&records[2..]).cloned().collect::<Vec<_>>(), true, BG)
        .await
        .unwrap();
    assert_eq!(all_or_none[0].errors[0].error_code, "ALL_OR_NONE_OPERATION_ROLLED_BACK");

    let before = rig.sim.api_calls();
    let many: Vec<Value> =
        (0..250).map(|i| json!({"attributes": {"type": "Contact"}, "LastName": format!("Bulk {i}")})).collect();
    let upserts = client
        .upsert_collection(
            "Contact",
            "Dingbridge_Id__c",
            &many
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut r = r.clone();
                    r["Dingbridge_Id__c"] = json!(format!("bulk-{i}"));
                    r
                })
                .collect::<Vec<_>>(),
            false,
            BG,
        )
        .await
        .unwrap();
    assert_eq!(upserts.len(), 250);
    assert!(upserts.iter().all(|r| r.success && r.created == Some(true)));
    assert_eq!(rig.sim.api_calls() - before, 2, "200 + 50");
}

#[tokio::test]
async fn composite_uses_references_in_one_call() {
    let rig = rig().await;
    let client = rig.client();
    let items = client
        .composite(
            true,
            vec![
                json!({"method": "PATCH", "url": format!("/services/data/v62.0/sobjects/Opportunity/{}", seed::OPPORTUNITY_ID), "referenceId": "refOpp", "body": {"StageName": "Closed Won"}}),
                json!({"method": "POST", "url": "/services/data/v62.0/sobjects/Task", "referenceId": "refTask", "body": {"Subject": "Call", "WhatId": seed::OPPORTUNITY_ID, "TaskSubtype": "Call"}}),
                json!({"method": "GET", "url": "/services/data/v62.0/sobjects/Task/@{refTask.id}?fields=Subject,WhatId", "referenceId": "refRead"}),
            ],
            BG,
        )
        .await
        .unwrap();
    assert_eq!(items.iter().map(|i| i.http_status_code).collect::<Vec<_>>(), [204, 201, 200]);
    assert_eq!(items[2].body["Subject"], "Call");
    assert_eq!(rig.sim.api_calls(), 1);

    let failed = client
        .composite(
            true,
            vec![
                json!({"method": "PATCH", "url": format!("/services/data/v62.0/sobjects/Opportunity/{}", "0065g00000Qx1ZqAAJ"), "referenceId": "a", "body": {"NextStep": "x"}}),
                json!({"method": "PATCH", "url": format!("/services/data/v62.0/sobjects/Opportunity/{}", "0065g00000Qx1ZqAAJ"), "referenceId": "b", "body": {"StageName": "bogus"}}),
            ],
            BG,
        )
        .await
        .unwrap();
    assert_eq!(failed[0].http_status_code, 400, "rolled back");
    assert!(rig.sim.record("Opportunity", "0065g00000Qx1ZqAAJ").unwrap().get("NextStep").is_none());
}

#[tokio::test]
async fn quota_is_enforced_by_the_sim_and_reserved_by_the_guard() {
    let rig = rig().await;
    rig.sim.set_daily_limit(5);
    let (tokens, instance) = rig.fetcher(cc_grant(seed::CLIENT_SECRET));
    let http = HttpClient::new(HttpSettings::loopback()).unwrap();
    let client = SalesforceClient::new(http, tokens, instance, "v62.0").with_quota(
        Arc::new(super::limits::ApiUsage::new()),
        QuotaGuard { reserve: 3, backoff: Duration::from_secs(30) },
    );
    let limits = client.limits(BG).await.unwrap();
    assert_eq!(limits["DailyApiRequests"].max, 5);
    client.limits(BG).await.unwrap();
    client.limits(BG).await.unwrap();
    // 3 used, 2 left: background work now stops, interactive work goes on.
    let refused = client.limits(BG).await.unwrap_err();
    assert_eq!(refused.disposition(), Disposition::RetryAfter(Duration::from_secs(30)));
    assert_eq!(rig.sim.api_calls(), 3, "refused locally, never sent");
    client.limits(Priority::Interactive).await.unwrap();
    client.limits(Priority::Interactive).await.unwrap();
    let exhausted = client.limits(Priority::Interactive).await.unwrap_err();
    assert!(matches!(exhausted.disposition(), Disposition::RetryAfter(_)));
    assert!(exhausted.to_string().contains("REQUEST_LIMIT_EXCEEDED"), "{exhausted}");
}

#[tokio::test]
async fn polling_by_system_modstamp_handles_ties_and_restarts() {
    let rig = rig().await;
    let client = rig.client();
    let start = rig.clock.now();
    rig.clock.0.fetch_add(1000, Ordering::SeqCst);
    let mut cursor = PollCursor::starting_at(start);
    // Seeded rows share `start`; skip past them.
    cursor.last_id = "006zzzzzzzzzzzzzzz".to_owned();
    for id in ["0065g00000Qx1ZqAAJ", "0065g00000Qx1ZpAAJ"] {
        rig.sim.put_record("Opportunity", json!({"Id": id, "NextStep": "tie"})).await.unwrap();
    }
    let got = poll_changes(&client, "Opportunity", &["Name"], &mut cursor, 100, BG).await.unwrap().0;
    let ids: Vec<&str> = got.iter().map(|r| r["Id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["0065g00000Qx1ZpAAJ", "0065g00000Qx1ZqAAJ"]);
    let saved = cursor.encode();
    // Same instant again: a third record joins the tie after the first poll.
    rig.sim.put_record("Opportunity", json!({"Id": "0065g00000Qx1ZsAAJ", "NextStep": "tie"})).await.unwrap();
    let mut restarted = PollCursor::decode(&saved).unwrap();
    let got = poll_changes(&client, "Opportunity", &["Name"], &mut restarted, 100, BG).await.unwrap().0;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["Id"], "0065g00000Qx1ZsAAJ");
    assert!(poll_changes(&client, "Opportunity", &["Name"], &mut restarted, 100, BG).await.unwrap().0.is_empty());
}

/// R27 on Salesforce: 1,000 opportunities changed three times each while the poll runs, 40 to a
/// `SystemModstamp`, in bursts of 700 (more than a page between polls), with every third page
/// lost before its commit: every last change arrives, none twice, each record's changes in order.
#[tokio::test]
async fn r27_polls_see_every_change_once_while_records_change() {
    use crate::reader::CrmReader;
    let rig = rig_with(SimConfig { daily_limit: 1_000_000, ..SimConfig::default() }).await;
    let reader = Arc::new(super::reader::SalesforceReader { client: Arc::new(rig.client()), organization_id: None });
    // Past the seeded rows' stamp: the poll starts where the test's changes do.
    rig.clock.0.fetch_add(1000, Ordering::SeqCst);
    let start = Some(PollCursor::starting_at(rig.clock.now()).encode());
    let poll = |cursor: Option<String>| {
        let reader = reader.clone();
        async move { reader.poll("Opportunity", cursor.as_deref(), Timestamp::now()).await }
    };
    let (sim, clock) = (rig.sim.clone(), rig.clock.clone());
    let writer = tokio::spawn(async move {
        for round in 0..3 {
            for n in 0..1000u64 {
                // Not in id order, so a tie spans ids on both sides of a page's last one.
                let i = (n * 7919 + round * 13) % 1000;
                let id = format!("006R2700000{i:04}AAA");
                sim.put_record(
                    "Opportunity",
                    json!({"Id": id, "Name": format!("R27 {i}"), "NextStep": format!("round {round}")}),
                )
                .await
                .unwrap();
                if n % 40 == 39 {
                    clock.0.fetch_add(1000, Ordering::SeqCst);
                }
                // Bursts longer than a page: the poll finds more than one page waiting.
                if n % 700 == 699 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    });
    let outcome = crate::poll_tests::poll_while_changing(start.clone(), poll, writer, 3).await;
    let last = crate::poll_tests::last_changes(start, poll).await;
    crate::poll_tests::check("Salesforce", &outcome, &last, 1000, true);
}

#[tokio::test]
async fn outbound_messages_are_resent_until_acknowledged() {
    let rig = rig_with(SimConfig { outbound_retry_base: Duration::from_millis(20), ..SimConfig::default() }).await;
    let hits = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(8);
    let app = {
        let hits = hits.clone();
        axum::Router::new().route(
            "/sfdc/outbound",
            axum::routing::post(move |body: String| {
                let (hits, tx) = (hits.clone(), tx.clone());
                async move {
                    // The first delivery fails, so the sim must retry.
                    if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new());
                    }
                    let _ = tx.send(body).await;
                    (axum::http::StatusCode::OK, ACK_BODY.to_owned())
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    rig.sim.put_record("outbound", json!({"url": format!("http://{addr}/sfdc/outbound")})).await.unwrap();
    rig.sim.put_record("Opportunity", json!({"Id": seed::OPPORTUNITY_ID, "StageName": "Closed Won"})).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    let msg = parse_outbound_message(&body).unwrap();
    assert_eq!(msg.organization_id, seed::ORG_ID);
    assert_eq!(msg.notifications[0].record_id, seed::OPPORTUNITY_ID);
    assert_eq!(msg.notifications[0].fields["StageName"], "Closed Won");
    for _ in 0..100 {
        if rig.sim.outbound_stats().0 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rig.sim.outbound_stats(), (1, 2));
}

#[tokio::test]
async fn every_answer_carries_limit_info_and_info_lists_credentials() {
    let rig = rig().await;
    let info = rig.sim.info();
    assert_eq!(info["client_id"], seed::CLIENT_ID);
    assert!(info["jwt_public_key_pem"].as_str().unwrap().contains("BEGIN PUBLIC KEY"));
    let resp = reqwest::get(format!("{}/services/data/v62.0/limits", rig.server.url())).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().get("sforce-limit-info").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body[0]["errorCode"], "INVALID_AUTH_HEADER");
    let versions: Value =
        reqwest::get(format!("{}/services/data/", rig.server.url())).await.unwrap().json().await.unwrap();
    assert!(versions.as_array().unwrap().iter().any(|v| v["version"] == "62.0"));
}

#[tokio::test]
async fn a_stale_jwt_is_refused() {
    let rig = rig().await;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(super::sim::TEST_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let stale = super::auth::sign_assertion(
        seed::CLIENT_ID,
        seed::INTEGRATION_USERNAME,
        "https://login.salesforce.com",
        &key,
        rig.clock.now().as_second() - 600,
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", rig.server.url()))
        .form(&[("grant_type", super::auth::JWT_BEARER_GRANT), ("assertion", stale.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn an_external_id_matching_several_records_is_permanent() {
    let rig = rig().await;
    for name in ["Twin A", "Twin B"] {
        rig.sim.put_record("Contact", json!({"LastName": name, "Dingbridge_Id__c": "dt-twin"})).await.unwrap();
    }
    let client = rig.client();
    let err = client.upsert("Contact", "Dingbridge_Id__c", "dt-twin", &json!({"Title": "x"}), BG).await.unwrap_err();
    assert_eq!(err.disposition(), Disposition::Permanent);
    assert!(err.to_string().contains("several records"), "{err}");
}

#[tokio::test]
async fn the_daily_window_slides_and_idle_locators_expire() {
    let rig = rig().await;
    rig.sim.set_daily_limit(2);
    let client = rig.client();
    client.limits(Priority::Interactive).await.unwrap();
    client.limits(Priority::Interactive).await.unwrap();
    assert!(client.limits(Priority::Interactive).await.is_err());
    rig.clock.0.fetch_add(24 * 3600 * 1000 + 1000, Ordering::SeqCst);
    // The session outlived its TTL too: the client refreshes and the window has room again.
    client.limits(Priority::Interactive).await.unwrap();

    rig.sim.set_daily_limit(100);
    rig.sim.set_batch_size(1);
    let (_, first) = client
        .call(
            http::Method::GET,
            "/services/data/v62.0/query",
            &[("q", "SELECT Id FROM Account")],
            None,
            Priority::Interactive,
        )
        .await
        .unwrap();
    let next = first["nextRecordsUrl"].as_str().unwrap().to_owned();
    rig.clock.0.fetch_add(16 * 60 * 1000, Ordering::SeqCst);
    let err = client.call(http::Method::GET, &next, &[], None, Priority::Interactive).await.unwrap_err();
    assert!(err.to_string().contains("INVALID_QUERY_LOCATOR"), "{err}");
}

// ---------------------------------------------------------------- R22: hosts named by answers

/// A local server counting what reaches it: where a refused URL would have sent the token.
async fn rogue_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let router = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { axum::Json(json!({"done": true, "records": []})) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, hits)
}

/// A login host that is also the instance (as the simulator is): the token answer names
/// `instance_url` (its own address when `None`), and a query's first page points at `next`.
async fn fake_org(instance_url: Option<String>, next: String) -> String {
    use axum::routing::{get, post};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let instance = instance_url.unwrap_or_else(|| base.clone());
    let token = move || {
        let answer = json!({"access_token": "00Dfake!token", "instance_url": instance.clone(), "token_type": "Bearer"});
        async move { axum::Json(answer) }
    };
    let first = move || {
        let page = json!({"done": false, "totalSize": 2, "records": [{"Id": "001A"}], "nextRecordsUrl": next.clone()});
        async move { axum::Json(page) }
    };
    let router = axum::Router::new()
        .route("/services/oauth2/token", post(token))
        .route("/services/data/v62.0/query", get(first))
        .route(
            "/services/data/v62.0/query/01gNEXT-2000",
            get(|| async { axum::Json(json!({"done": true, "totalSize": 2, "records": [{"Id": "001B"}]})) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

fn client_of(login: &str) -> SalesforceClient {
    let clock: Arc<dyn Clock> = Arc::new(connect::SystemClock);
    let http = HttpClient::new(HttpSettings::loopback()).unwrap();
    let instance = Arc::new(InstanceUrl::default());
    let grant =
        Grant::ClientCredentials { client_id: seed::CLIENT_ID.into(), client_secret: SecretString::from("s3cret") };
    let fetcher = SalesforceTokenFetcher::new(
        http.clone(),
        login,
        grant,
        DEFAULT_SESSION_LIFETIME,
        instance.clone(),
        clock.clone(),
    )
    .unwrap();
    let tokens = Arc::new(TokenCache::new(Arc::new(fetcher), Duration::from_secs(60), clock));
    SalesforceClient::new(http, tokens, instance, "v62.0")
}

#[tokio::test]
async fn an_instance_url_off_salesforce_is_refused_and_never_called() {
    let (rogue, hits) = rogue_server().await;
    for instance in [
        rogue.clone(),
        rogue.replace("http://", "https://"),
        "https://hktrading.my.salesforce.com.evil.example".to_owned(),
        "https://evil-force.com".to_owned(),
        "http://hktrading.my.salesforce.com".to_owned(),
    ] {
        let login = fake_org(Some(instance.clone()), "/services/data/v62.0/query/01gNEXT-2000".into()).await;
        let err = client_of(&login).query("SELECT Id FROM Account", BG).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Permanent, "{instance}: {err}");
        assert_eq!(err.kind(), "unsafe_destination", "{instance}: {err}");
        assert!(err.to_string().contains("instance_url"), "{instance}: {err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a refused instance is never called");
}

#[tokio::test]
async fn a_next_records_url_off_the_instance_is_refused_and_never_called() {
    let (rogue, hits) = rogue_server().await;
    let rogue_host = rogue.trim_start_matches("http://").to_owned();
    for next in [
        format!("{rogue}/services/data/v62.0/query/01gNEXT-2000"),
        format!("//{rogue_host}/services/data/v62.0/query/01gNEXT-2000"),
        "https://evil.example/services/data/v62.0/query/01gNEXT-2000".to_owned(),
    ] {
        let login = fake_org(None, next.clone()).await;
        let err = client_of(&login).query("SELECT Id FROM Account", BG).await.unwrap_err();
        assert_eq!(err.disposition(), Disposition::Permanent, "{next}: {err}");
        assert!(err.to_string().contains("nextRecordsUrl"), "{next}: {err}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a refused next page is never called");
    // A path on the instance, and the instance's own absolute URL, are followed.
    let login = fake_org(None, "/services/data/v62.0/query/01gNEXT-2000".into()).await;
    let ids: Vec<Value> = client_of(&login).query("SELECT Id FROM Account", BG).await.unwrap();
    assert_eq!(ids, vec![json!({"Id": "001A"}), json!({"Id": "001B"})]);
}
