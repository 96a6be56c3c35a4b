//! The record sink and the snapshot reader against the simulator on loopback.

use super::RecordSink;
use crate::salesforce::auth::{Grant, InstanceUrl, SalesforceTokenFetcher, DEFAULT_SESSION_LIFETIME};
use crate::salesforce::client::SalesforceClient;
use crate::salesforce::ids::normalize_id;
use crate::salesforce::limits::{ApiUsage, Priority, QuotaGuard};
use crate::salesforce::sim::{seed, SalesforceSim, SimConfig};
use crate::salesforce::snapshot;
use connect::http::{HttpClient, HttpSettings};
use connect::token::TokenCache;
use connect::{Delivery, DeliveryError, Disposition, Idempotency, Receipt, Sink, SystemClock};
use secrecy::SecretString;
use serde_json::{json, Value};
use sim::{RunningSim, Simulator};
use std::sync::Arc;
use std::time::Duration;

const BG: Priority = Priority::Background;
const COLLECTIONS: &str = "/services/data/v62.0/composite/sobjects";

struct Rig {
    sim: Arc<SalesforceSim>,
    server: RunningSim,
}

async fn rig() -> Rig {
    let sim = Arc::new(SalesforceSim::new(SimConfig::default(), Arc::new(SystemClock)));
    let server = ::sim::serve(sim.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    Rig { sim, server }
}

impl Rig {
    fn client_with(&self, guard: QuotaGuard) -> SalesforceClient {
        let instance = Arc::new(InstanceUrl::default());
        let grant = Grant::ClientCredentials {
            client_id: seed::CLIENT_ID.to_owned(),
            client_secret: SecretString::from(seed::CLIENT_SECRET.to_owned()),
        };
        let http = HttpClient::new(HttpSettings::loopback()).unwrap();
        let fetcher = SalesforceTokenFetcher::new(
            http.clone(),
            &self.server.url(),
            grant,
            DEFAULT_SESSION_LIFETIME,
            instance.clone(),
            Arc::new(SystemClock),
        )
        .unwrap();
        let tokens = Arc::new(TokenCache::new(Arc::new(fetcher), Duration::from_secs(60), Arc::new(SystemClock)));
        SalesforceClient::new(http, tokens, instance, "v62.0").with_quota(Arc::new(ApiUsage::new()), guard)
    }

    fn client(&self) -> Arc<SalesforceClient> {
        Arc::new(self.client_with(QuotaGuard::default()))
    }

    /// Collections calls the sim received since journal index `since`.
    fn collection_calls(&self, since: u64) -> Vec<Value> {
        self.server
            .state
            .requests(since, Some(COLLECTIONS))
            .iter()
            .map(|e| serde_json::from_str(&e.body).unwrap())
            .collect()
    }

    fn journal_len(&self) -> u64 {
        self.server.state.request_count()
    }

    /// `n` new accounts; their 18-character ids.
    async fn accounts(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let stored = self.sim.put_record("Account", json!({"Name": format!("Bulk Trading {i}")})).await.unwrap();
            ids.push(stored["Id"].as_str().unwrap().to_owned());
        }
        ids
    }
}

fn sink(client: Arc<SalesforceClient>, priority: Priority) -> RecordSink {
    RecordSink::new(client, priority, Duration::from_millis(50))
}

fn delivery(n: usize, payload: Value) -> Delivery {
    Delivery {
        idempotency_key: format!("key-{n}"),
        event_id: format!("evt-{n}"),
        flow: "erp-credit-status".into(),
        destination: "salesforce".into(),
        payload,
        attempt: 1,
    }
}

fn update(object: &str, id: &str, fields: Value) -> Value {
    json!({"api": "record", "object": object, "op": "update", "id": id, "fields": fields})
}

fn upsert(object: &str, field: &str, value: &str, fields: Value) -> Value {
    json!({"api": "record", "object": object, "op": "upsert", "external_id_field": field,
        "external_id": value, "fields": fields})
}

fn batch(payloads: Vec<Value>) -> Vec<Delivery> {
    payloads.into_iter().enumerate().map(|(n, p)| delivery(n, p)).collect()
}

fn err(result: &Result<Receipt, DeliveryError>) -> &DeliveryError {
    result.as_ref().expect_err("expected an error")
}

#[tokio::test]
async fn deliveries_for_the_same_records_merge_into_one_collections_call() {
    let rig = rig().await;
    let ids = rig.accounts(150).await;
    let sink = sink(rig.client(), BG);
    let mut payloads = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        payloads.push(update("Account", id, json!({"Rating": "Hot", "Phone": format!("+852 1000 {i:04}")})));
    }
    for (i, id) in ids.iter().enumerate() {
        // The 15-character form names the same record.
        payloads.push(update(
            "Account",
            &id[..15],
            json!({"Phone": format!("+852 2000 {i:04}"), "Industry": "Retail"}),
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        payloads.push(update("Account", id, json!({"Rating": "Cold", "NumberOfEmployees": i})));
    }
    let deliveries = batch(payloads);
    let (calls_before, journal) = (rig.sim.api_calls(), rig.journal_len());
    let results = sink.deliver_batch(&deliveries).await;

    assert_eq!(results.len(), 450);
    assert_eq!(rig.sim.api_calls() - calls_before, 1, "one collections call");
    let bodies = rig.collection_calls(journal);
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["records"].as_array().unwrap().len(), 150, "merged to one record per account");
    assert_eq!(bodies[0]["allOrNone"], false);
    assert_eq!(bodies[0]["records"][0]["attributes"], json!({"type": "Account"}));
    for (n, result) in results.iter().enumerate() {
        let receipt = result.as_ref().unwrap();
        assert_eq!(receipt.vendor_id.as_deref(), Some(ids[n % 150].as_str()), "delivery {n}");
        assert_eq!(receipt.detail.as_deref(), Some("Account updated; 3 deliveries merged into one write"));
    }
    for (i, id) in ids.iter().enumerate() {
        let stored = rig.sim.record("Account", id).unwrap();
        assert_eq!(stored["Rating"], "Cold");
        assert_eq!(stored["Phone"], format!("+852 2000 {i:04}"));
        assert_eq!(stored["Industry"], "Retail");
        assert_eq!(stored["NumberOfEmployees"], i);
    }
}

#[tokio::test]
async fn distinct_records_split_into_calls_of_200_and_upsert_by_external_id() {
    let rig = rig().await;
    let sink = sink(rig.client(), BG);
    let payloads = (0..250)
        .map(|i| {
            upsert("Contact", "Dingbridge_Id__c", &format!("dt-bulk-{i}"), json!({"LastName": format!("Bulk {i}")}))
        })
        .collect();
    let (calls_before, journal) = (rig.sim.api_calls(), rig.journal_len());
    let results = sink.deliver_batch(&batch(payloads)).await;
    assert_eq!(rig.sim.api_calls() - calls_before, 2, "200 + 50");
    let bodies = rig.collection_calls(journal);
    let sizes: Vec<usize> = bodies.iter().map(|b| b["records"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [200, 50]);
    let paths: Vec<String> =
        rig.server.state.requests(journal, Some(COLLECTIONS)).into_iter().map(|e| e.path).collect();
    assert!(paths.iter().all(|p| p.ends_with("/composite/sobjects/Contact/Dingbridge_Id__c")), "{paths:?}");
    for result in &results {
        let receipt = result.as_ref().unwrap();
        assert_eq!(receipt.detail.as_deref(), Some("Contact created"));
        let stored = rig.sim.record("Contact", receipt.vendor_id.as_deref().unwrap()).unwrap();
        assert!(stored["Dingbridge_Id__c"].as_str().unwrap().starts_with("dt-bulk-"));
    }

    // The flows' ERP example: an account keyed by the ERP customer number, created then updated.
    let erp = |status: &str| {
        upsert("Account", "ERP_Customer_No__c", "C-1001", json!({"Name": "KPC", "Credit_Status__c": status}))
    };
    let created = sink.deliver(&delivery(0, erp("OK"))).await.unwrap();
    assert_eq!(created.detail.as_deref(), Some("Account created"));
    let updated = sink.deliver(&delivery(1, erp("Hold"))).await.unwrap();
    assert_eq!((updated.detail.as_deref(), &updated.vendor_id), (Some("Account updated"), &created.vendor_id));
    let stored = rig.sim.record("Account", created.vendor_id.as_deref().unwrap()).unwrap();
    assert_eq!((&stored["ERP_Customer_No__c"], &stored["Credit_Status__c"]), (&json!("C-1001"), &json!("Hold")));
}

#[tokio::test]
async fn a_locked_record_fails_alone_and_is_retried() {
    let rig = rig().await;
    let locked = "0015g00000HkAbDAAV";
    rig.sim.lock_record(locked);
    let sink = sink(rig.client(), BG);
    let deliveries = batch(vec![
        update("Account", locked, json!({"Rating": "Hot"})),
        update("Account", seed::ACCOUNT_ID, json!({"Rating": "Warm"})),
        update("Opportunity", seed::OPPORTUNITY_ID, json!({"NextStep": "Deliver batch 1"})),
        update("Account", locked, json!({"Phone": "+86 755 0000 0000"})),
    ]);
    let results = sink.deliver_batch(&deliveries).await;
    for n in [0, 3] {
        let e = err(&results[n]);
        assert_eq!(e.disposition(), Disposition::Retry, "{e}");
        assert!(e.to_string().contains("UNABLE_TO_LOCK_ROW"), "{e}");
        assert!(e.to_string().contains(locked), "the record is named: {e}");
    }
    assert!(results[1].is_ok() && results[2].is_ok());
    assert_eq!(rig.sim.record("Account", seed::ACCOUNT_ID).unwrap()["Rating"], "Warm");
    assert_eq!(rig.sim.record("Opportunity", seed::OPPORTUNITY_ID).unwrap()["NextStep"], "Deliver batch 1");
}

#[tokio::test]
async fn bad_ids_and_invalid_values_are_permanent_for_their_record_only() {
    let rig = rig().await;
    let client = rig.client();
    let sink = sink(client.clone(), BG);
    let missing = normalize_id("0015g00000ZZZZZ").unwrap();
    let deleted = "0015g00000HkAbEAAV";
    let path = format!("/services/data/v62.0/sobjects/Account/{deleted}");
    client.call(http::Method::DELETE, &path, &[], None, Priority::Interactive).await.unwrap();
    let deliveries = batch(vec![
        update("Account", "0015g00000HkAb", json!({"Rating": "Hot"})),
        update("Account", &missing, json!({"Rating": "Hot"})),
        update("Opportunity", seed::OPPORTUNITY_ID, json!({"StageName": "Won!"})),
        update("Account", seed::ACCOUNT_ID, json!({"Rating": "Hot"})),
        json!({"api": "record", "object": "Account", "op": "delete", "id": seed::ACCOUNT_ID, "fields": {}}),
        update("Account", deleted, json!({"Rating": "Hot"})),
        update("Account", seed::ACCOUNT_ID, json!({"attributes": {"type": "Contact"}})),
    ]);
    let journal = rig.journal_len();
    let results = sink.deliver_batch(&deliveries).await;
    for (n, expect) in [
        (0, "is not a Salesforce id"),
        // A well-formed id of no record: collections answer MALFORMED_ID (fixture
        // composite/collections_update_response_partial.json).
        (1, "MALFORMED_ID"),
        (2, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        (4, "unknown op \"delete\""),
        (5, "ENTITY_IS_DELETED"),
        (6, "reserves for the record type"),
    ] {
        let e = err(&results[n]);
        assert_eq!(e.disposition(), Disposition::Permanent, "{n}: {e}");
        assert!(e.to_string().contains(expect), "{n}: {e}");
    }
    assert_eq!(err(&results[0]).kind(), "bad_payload", "refused before any call");
    assert_eq!(err(&results[1]).kind(), "rejected");
    assert!(results[3].is_ok());
    let sent: Vec<String> = rig
        .collection_calls(journal)
        .iter()
        .flat_map(|b| {
            b["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(sent.len(), 4, "only parsable writes reach Salesforce: {sent:?}");
}

#[tokio::test]
async fn the_quota_guard_refuses_background_batches_before_they_reach_the_sim() {
    let rig = rig().await;
    rig.sim.set_daily_limit(5);
    let client = Arc::new(rig.client_with(QuotaGuard { reserve: 10, backoff: Duration::from_secs(30) }));
    let background = sink(client.clone(), BG);
    let interactive = sink(client.clone(), Priority::Interactive);
    // The first answer tells the client how much of the allocation is left (4 of 5).
    interactive.healthcheck().await.unwrap();
    let before = rig.sim.api_calls();
    let payloads = (0..250)
        .map(|i| upsert("Contact", "Dingbridge_Id__c", &format!("dt-q-{i}"), json!({"LastName": "Q"})))
        .collect();
    let results = background.deliver_batch(&batch(payloads)).await;
    assert_eq!(rig.sim.api_calls(), before, "refused locally, never sent");
    for result in &results {
        let e = err(result);
        assert_eq!(e.disposition(), Disposition::RetryAfter(Duration::from_secs(30)));
        assert!(e.to_string().contains("interactive approvals"), "{e}");
    }
    let approved = interactive
        .deliver(&delivery(0, update("Opportunity", seed::OPPORTUNITY_ID, json!({"StageName": "Closed Won"}))))
        .await
        .unwrap();
    assert_eq!(approved.vendor_id.as_deref(), Some(seed::OPPORTUNITY_ID));
    assert_eq!(rig.sim.api_calls(), before + 1);
}

#[tokio::test]
async fn a_vendor_throttle_stops_the_batch_and_a_server_error_does_not() {
    let rig = rig().await;
    let client = rig.client();
    let sink = sink(client.clone(), Priority::Interactive);
    sink.healthcheck().await.unwrap();
    let payloads: Vec<Value> = (0..450)
        .map(|i| upsert("Contact", "Dingbridge_Id__c", &format!("dt-t-{i}"), json!({"LastName": "T"})))
        .collect();

    // A 503 on the first of three calls: the others still go out.
    rig.server.state.set_faults(::sim::FaultSpec { status: Some(503), count: Some(1), ..Default::default() }).unwrap();
    let journal = rig.journal_len();
    let results = sink.deliver_batch(&batch(payloads.clone())).await;
    assert_eq!(rig.server.state.requests(journal, Some(COLLECTIONS)).len(), 3);
    assert!(results[..200].iter().all(|r| err(r).disposition() == Disposition::Retry));
    assert!(results[200..].iter().all(Result::is_ok));

    // The org's allocation is used up: the first call is refused and no more are sent.
    rig.sim.set_daily_limit(rig.sim.api_calls());
    let journal = rig.journal_len();
    let results = sink.deliver_batch(&batch(payloads)).await;
    assert_eq!(rig.server.state.requests(journal, Some(COLLECTIONS)).len(), 1, "the other two calls are not made");
    for result in &results {
        let e = err(result);
        assert!(matches!(e.disposition(), Disposition::RetryAfter(_)), "{e}");
        assert!(e.to_string().contains("REQUEST_LIMIT_EXCEEDED"), "{e}");
    }
}

#[tokio::test]
async fn one_delivery_is_a_batch_of_one_and_the_sink_describes_itself() {
    let rig = rig().await;
    let sink = sink(rig.client(), BG);
    assert_eq!(sink.idempotency(), Idempotency::Honoured);
    let batching = sink.batching().unwrap();
    assert_eq!((batching.max_records, batching.linger), (200, Duration::from_millis(50)));
    sink.healthcheck().await.unwrap();
    let receipt =
        sink.deliver(&delivery(0, update("Account", &seed::ACCOUNT_ID[..15], json!({"Rating": "Hot"})))).await.unwrap();
    assert_eq!(receipt.vendor_id.as_deref(), Some(seed::ACCOUNT_ID));
    assert_eq!(receipt.detail.as_deref(), Some("Account updated"));
    let bad = sink.deliver(&delivery(1, json!({"api": "message"}))).await.unwrap_err();
    assert_eq!(bad.kind(), "bad_payload");
    assert!(bad.to_string().contains("salesforce"), "names the destination: {bad}");
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

async fn add_activities(rig: &Rig) {
    let opp = seed::OPPORTUNITY_ID;
    let contact = "0035g00000Lm9TqAAJ";
    for (subject, date, subtype) in [
        ("Quote v3 approved", "2025-08-22", "Task"),
        ("Follow-up call", "2025-08-18", "Call"),
        ("Intro email", "2025-07-01", "Email"),
    ] {
        let task =
            json!({"Subject": subject, "ActivityDate": date, "TaskSubtype": subtype, "WhatId": opp, "WhoId": contact});
        rig.sim.put_record("Task", task).await.unwrap();
    }
    for (subject, start) in
        [("Contract signing", "2025-08-25T06:00:00.000+0000"), ("Kick-off", "2025-06-05T02:00:00.000+0000")]
    {
        rig.sim.put_record("Event", json!({"Subject": subject, "StartDateTime": start, "WhatId": opp})).await.unwrap();
    }
}

#[tokio::test]
async fn an_opportunity_snapshot_takes_one_api_call() {
    let rig = rig().await;
    add_activities(&rig).await;
    let client = rig.client();
    let (before, journal) = (rig.sim.api_calls(), rig.journal_len());
    let snap = snapshot::fetch(&client, "Opportunity", &seed::OPPORTUNITY_ID[..15], BG).await.unwrap().unwrap();
    assert_eq!(rig.sim.api_calls() - before, 1);
    let query = &rig.server.state.requests(journal, Some("/services/data/")).last().unwrap().query.clone().unwrap();
    assert!(query.contains("BillingCountry"), "{query}");

    assert_eq!((snap.entity.as_str(), snap.entity_id.as_str()), ("opportunity", seed::OPPORTUNITY_ID));
    assert!(snap.source_time_ms.is_some());
    let d = &snap.data;
    assert_eq!(d["amount"], json!({"amount": "1250000.00", "currency": "HKD"}));
    assert_eq!(d["probability"], json!(90));
    assert_eq!(d["owner"]["name"], "Chan Tai Man");
    assert_eq!(
        d["account"],
        json!({"id": seed::ACCOUNT_ID, "name": "Kowloon Precision Components Ltd", "industry": "Manufacturing",
               "city": "Kowloon", "country": "Hong Kong", "phone": "+852 2345 6789"})
    );
    assert_eq!(d["contacts"], json!([{"name": "Ka Yan Wong", "role": "Decision Maker", "primary": true}]));
    let activities: Vec<(&str, &str)> = d["activities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["kind"].as_str().unwrap(), a["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        activities,
        [
            ("meeting", "Contract signing"),
            ("task", "Quote v3 approved"),
            ("task", "Send revised quote"),
            ("call", "Follow-up call"),
            ("call", "Call: pricing follow-up"),
        ],
        "the five newest of eight, tasks and events merged"
    );
    assert_eq!(d["activities"][0]["when"], "2025-08-25T14:00:00+08:00");
    assert_eq!(d["activities"][1]["who"], "Ka Yan Wong");
    assert!(!d.to_string().contains("ky.wong@kpc.example"), "no contact emails");
}

#[tokio::test]
async fn deleted_records_have_no_snapshot_and_other_objects_take_one_read() {
    let rig = rig().await;
    let client = rig.client();
    let before = rig.sim.api_calls();
    let account = snapshot::fetch(&client, "Account", seed::ACCOUNT_ID, BG).await.unwrap().unwrap();
    assert_eq!(rig.sim.api_calls() - before, 1);
    assert_eq!(
        (account.entity.as_str(), &account.data["name"]),
        ("account", &json!("Kowloon Precision Components Ltd"))
    );
    assert_eq!(account.data["record"]["BillingCountry"], "Hong Kong");

    for (object, id) in [("Opportunity", "0065g00000Qx1ZrAAJ"), ("Account", "0015g00000HkAbEAAV")] {
        let path = format!("/services/data/v62.0/sobjects/{object}/{id}");
        client.call(http::Method::DELETE, &path, &[], None, BG).await.unwrap();
        assert_eq!(snapshot::fetch(&client, object, id, BG).await.unwrap(), None, "{object} in the recycle bin");
    }
    let never = normalize_id("0035g00000ZZZZZ").unwrap();
    assert_eq!(snapshot::fetch(&client, "Contact", &never, BG).await.unwrap(), None);
    let malformed = snapshot::fetch(&client, "Contact", "003-bad", BG).await.unwrap_err();
    assert_eq!(malformed.disposition(), Disposition::Permanent);
}

#[tokio::test]
async fn single_currency_orgs_are_read_without_currency_iso_code() {
    let rig = rig().await;
    let client = rig.client_with(QuotaGuard::default()).with_single_currency("HKD");
    let journal = rig.journal_len();
    let snap = snapshot::fetch(&client, "Opportunity", "0065g00000Qx1ZsAAJ", BG).await.unwrap().unwrap();
    let query = rig.server.state.requests(journal, Some("/services/data/")).last().unwrap().query.clone().unwrap();
    assert!(!query.contains("CurrencyIsoCode"), "{query}");
    assert_eq!(snap.data["amount"], json!({"amount": "145000.50", "currency": "HKD"}));
    assert!(snap.data["record"].get("CurrencyIsoCode").is_none());
}
