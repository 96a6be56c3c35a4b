//! The record sink and the snapshot reader against the simulator on loopback.

use super::RecordSink;
use crate::zoho::auth::ZohoCredentials;
use crate::zoho::client::{Triggers, ZohoClient, ZohoSettings};
use crate::zoho::errors::DEFAULT_THROTTLE_WAIT;
use crate::zoho::sim::{ZohoSim, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN};
use crate::zoho::snapshot;
use connect::http::{HttpClient, HttpSettings};
use connect::{Delivery, DeliveryError, Disposition, Idempotency, Receipt, Sink, SystemClock};
use serde_json::{json, Value};
use sim::{serve, RunningSim, Simulator};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const DEAL: &str = "5843104000001234001";
const KPC: &str = "5843104000000871001";
const KA_YAN: &str = "5843104000000872001";

struct Harness {
    sim: Arc<ZohoSim>,
    server: RunningSim,
    client: Arc<ZohoClient>,
}

async fn harness() -> Harness {
    let sim = Arc::new(ZohoSim::new());
    let server = serve(sim.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let credentials = ZohoCredentials {
        client_id: SIM_CLIENT_ID.into(),
        client_secret: SIM_CLIENT_SECRET.into(),
        refresh_token: SIM_REFRESH_TOKEN.into(),
    };
    let http = HttpClient::new(HttpSettings::loopback()).unwrap();
    let settings = ZohoSettings::with_base(&server.url());
    let client = Arc::new(ZohoClient::new(http, settings, credentials, Arc::new(SystemClock)).unwrap());
    Harness { sim, server, client }
}

impl Harness {
    fn sink(&self) -> RecordSink {
        RecordSink::new(self.client.clone(), Duration::from_millis(50))
    }

    fn journal_len(&self) -> u64 {
        self.server.state.request_count()
    }

    /// Bodies of the write calls to `path` since journal index `since`.
    fn bodies(&self, since: u64, path: &str) -> Vec<Value> {
        self.server
            .state
            .requests(since, Some(path))
            .iter()
            .filter(|e| e.path == path)
            .map(|e| serde_json::from_str(&e.body).unwrap())
            .collect()
    }

    /// `n` new deals; their ids.
    async fn deals(&self, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let stored = self
                .sim
                .put_record("Deals", json!({"Deal_Name": format!("Bulk order {i}"), "Stage": "Qualification"}))
                .await
                .unwrap();
            ids.push(stored["id"].as_str().unwrap().to_owned());
        }
        ids
    }
}

fn delivery(n: usize, payload: Value) -> Delivery {
    Delivery {
        idempotency_key: format!("key-{n}"),
        event_id: format!("evt-{n}"),
        flow: "erp-deal-sync".into(),
        destination: "zoho".into(),
        payload,
        attempt: 1,
    }
}

fn batch(payloads: Vec<Value>) -> Vec<Delivery> {
    payloads.into_iter().enumerate().map(|(n, p)| delivery(n, p)).collect()
}

fn update(module: &str, id: &str, fields: Value) -> Value {
    json!({"api": "record", "object": module, "op": "update", "id": id, "fields": fields})
}

fn upsert(module: &str, field: &str, value: &str, fields: Value) -> Value {
    json!({"api": "record", "object": module, "op": "upsert", "external_id_field": field,
        "external_id": value, "fields": fields})
}

fn err(result: &Result<Receipt, DeliveryError>) -> &DeliveryError {
    result.as_ref().expect_err("expected an error")
}

#[tokio::test]
async fn deliveries_for_the_same_deals_merge_into_one_update_call() {
    let h = harness().await;
    let ids = h.deals(90).await;
    let mut payloads = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        payloads.push(update("Deals", id, json!({"Stage": "Needs Analysis", "Next_Step": format!("call {i}")})));
    }
    for id in &ids {
        payloads.push(update("Deals", id, json!({"Stage": "Closed Won", "Amount": 1200})));
    }
    for (i, id) in ids.iter().enumerate() {
        payloads.push(update("Deals", id, json!({"Next_Step": format!("invoice {i}"), "Description": null})));
    }
    let (calls, journal) = (h.sim.calls(), h.journal_len());
    let results = h.sink().deliver_batch(&batch(payloads)).await;
    assert_eq!(results.len(), 270);
    assert_eq!(h.sim.calls() - calls, 1, "one PUT for 90 merged records");
    let bodies = h.bodies(journal, "/crm/v8/Deals");
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["data"].as_array().unwrap().len(), 90);
    assert_eq!(bodies[0]["trigger"], json!(["workflow"]));
    for (n, result) in results.iter().enumerate() {
        let receipt = result.as_ref().unwrap();
        assert_eq!(receipt.vendor_id.as_deref(), Some(ids[n % 90].as_str()));
        assert_eq!(receipt.detail.as_deref(), Some("Deals updated; 3 deliveries merged into one write"));
    }
    for (i, id) in ids.iter().enumerate() {
        let stored = h.sim.record("Deals", id).unwrap();
        assert_eq!((&stored["Stage"], &stored["Amount"]), (&json!("Closed Won"), &json!(1200)));
        assert_eq!(stored["Next_Step"], format!("invoice {i}"));
        assert_eq!(stored["Description"], Value::Null);
    }
}

#[tokio::test]
async fn distinct_records_split_into_calls_of_100_and_upsert_by_duplicate_check_field() {
    let h = harness().await;
    let sink = h.sink();
    let accounts = |name: &str| -> Vec<Value> {
        (0..250)
            .map(|i| {
                upsert(
                    "Accounts",
                    "Account_Number",
                    &format!("C-{i:04}"),
                    json!({"Account_Name": format!("{name} {i}")}),
                )
            })
            .collect()
    };
    let (calls, journal) = (h.sim.calls(), h.journal_len());
    let created = sink.deliver_batch(&batch(accounts("Trading"))).await;
    assert_eq!(h.sim.calls() - calls, 3, "100 + 100 + 50");
    let bodies = h.bodies(journal, "/crm/v8/Accounts/upsert");
    let sizes: Vec<usize> = bodies.iter().map(|b| b["data"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert!(bodies.iter().all(|b| b["duplicate_check_fields"] == json!(["Account_Number"])));
    assert_eq!(bodies[0]["data"][0], json!({"Account_Number": "C-0000", "Account_Name": "Trading 0"}));
    assert!(created.iter().all(|r| r.as_ref().unwrap().detail.as_deref() == Some("Accounts created")));

    let renamed = sink.deliver_batch(&batch(accounts("Renamed"))).await;
    for (first, second) in created.iter().zip(&renamed) {
        let (first, second) = (first.as_ref().unwrap(), second.as_ref().unwrap());
        assert_eq!(second.detail.as_deref(), Some("Accounts updated"));
        assert_eq!(first.vendor_id, second.vendor_id, "the same record, found by its number");
    }
    let id = created[7].as_ref().unwrap().vendor_id.clone().unwrap();
    assert_eq!(h.sim.record("Accounts", &id).unwrap()["Account_Name"], "Renamed 7");
}

#[tokio::test]
async fn a_failed_record_fails_only_its_deliveries() {
    let h = harness().await;
    let deliveries = batch(vec![
        update("Deals", DEAL, json!({"Stage": "Won-ish"})),
        update("Deals", "5843104000001234002", json!({"Stage": "Closed Won"})),
        update("Deals", "5843104000009999999", json!({"Stage": "Closed Lost"})),
        update(
            "Deals",
            "5843104000001234003",
            json!({"Closing_Date": "2025-12-01", "Last_Activity_Time": "2025-08-14T06:30:05Z"}),
        ),
        json!({"api": "record", "object": "Deals", "op": "update", "id": 5843104000001234004_u64, "fields": {}}),
        update("Deals", DEAL, json!({"Next_Step": "retry pricing"})),
    ]);
    let results = h.sink().deliver_batch(&deliveries).await;
    for (n, expect) in
        [(0, "(field Stage)"), (2, "INVALID_DATA"), (3, "(field Last_Activity_Time)"), (4, "`id` must be a string")]
    {
        let e = err(&results[n]);
        assert_eq!(e.disposition(), Disposition::Permanent, "{n}: {e}");
        assert!(e.to_string().contains(expect), "{n}: {e}");
    }
    assert!(err(&results[2]).to_string().contains("Deals 5843104000009999999"), "the record is named");
    assert_eq!(err(&results[5]).to_string(), err(&results[0]).to_string(), "merged with the bad stage");
    assert!(results[1].is_ok());
    assert_eq!(h.sim.record("Deals", "5843104000001234002").unwrap()["Stage"], "Closed Won");
    assert_eq!(
        h.sim.record("Deals", DEAL).unwrap()["Stage"],
        "Negotiation/Review",
        "nothing of the bad record written"
    );
}

#[tokio::test]
async fn a_429_stops_the_batch_and_a_500_does_not() {
    let h = harness().await;
    let sink = h.sink();
    sink.healthcheck().await.unwrap();
    let ids = h.deals(250).await;
    let payloads: Vec<Value> = ids.iter().map(|id| update("Deals", id, json!({"Stage": "Closed Lost"}))).collect();

    h.server.state.set_faults(::sim::FaultSpec { status: Some(500), count: Some(1), ..Default::default() }).unwrap();
    let journal = h.journal_len();
    let results = sink.deliver_batch(&batch(payloads.clone())).await;
    assert_eq!(h.bodies(journal, "/crm/v8/Deals").len(), 3, "the other calls still go out");
    assert!(results[..100].iter().all(|r| err(r).disposition() == Disposition::Retry));
    assert!(results[100..].iter().all(Result::is_ok));

    // No credits left: Zoho answers 429 and the batch stops at the first call.
    h.sim.set_limits(h.sim.credits_used(), 20, Duration::ZERO);
    let calls = h.sim.calls();
    let results = sink.deliver_batch(&batch(payloads)).await;
    assert_eq!(h.sim.calls() - calls, 1, "the other two calls are not made");
    for result in &results {
        let e = err(result);
        assert_eq!(e.disposition(), Disposition::RetryAfter(DEFAULT_THROTTLE_WAIT), "{e}");
        assert!(e.to_string().contains("TOO_MANY_REQUESTS"), "{e}");
    }
}

#[tokio::test]
async fn one_delivery_is_a_batch_of_one_and_triggers_can_be_turned_off() {
    let h = harness().await;
    let sink = h.sink().with_triggers(Triggers::None);
    assert_eq!(sink.idempotency(), Idempotency::Honoured);
    let batching = sink.batching().unwrap();
    assert_eq!((batching.max_records, batching.linger), (100, Duration::from_millis(50)));
    sink.healthcheck().await.unwrap();
    let journal = h.journal_len();
    let receipt = sink.deliver(&delivery(0, update("Deals", DEAL, json!({"Stage": "Closed Won"})))).await.unwrap();
    assert_eq!(receipt.vendor_id.as_deref(), Some(DEAL));
    assert_eq!(h.bodies(journal, "/crm/v8/Deals")[0]["trigger"], json!([]));
    let bad = sink.deliver(&delivery(1, json!({"api": "record", "object": "Deals", "op": "update", "id": DEAL}))).await;
    assert!(err(&bad).to_string().contains("`fields` is missing"));
}

// ---------------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------------

async fn add_history(h: &Harness) {
    let deal = json!({"name": "KPC - Q3 servo motor bulk order", "id": DEAL});
    let ka_yan = json!({"name": "Ka Yan Wong", "id": KA_YAN});
    let chan = json!({"name": "Chan Tai Man", "id": "5843104000000424001"});
    let records = [
        (
            "Notes",
            json!({"Note_Title": "Margin check", "Note_Content": "Finance agrees to 2%.", "Parent_Id": deal,
                "$se_module": "Deals", "Owner": chan, "Created_Time": "2025-08-15T09:00:00+08:00"}),
        ),
        (
            "Tasks",
            json!({"Subject": "Send quote v3", "Due_Date": "2025-08-20", "Status": "Not Started", "What_Id": deal,
                "$se_module": "Deals", "Who_Id": ka_yan}),
        ),
        (
            "Events",
            json!({"Event_Title": "Contract signing", "Start_DateTime": "2025-08-25T14:00:00+08:00", "What_Id": deal,
                "$se_module": "Deals"}),
        ),
        (
            "Calls",
            json!({"Subject": "Pricing call", "Call_Type": "Outbound", "Outbound_Call_Status": "Completed",
                "Call_Start_Time": "2025-08-14T14:23:00+08:00", "What_Id": deal, "$se_module": "Deals",
                "Who_Id": ka_yan}),
        ),
        (
            "Tasks",
            json!({"Subject": "Email quote v2", "Due_Date": "2025-08-11", "Status": "Completed", "What_Id": deal,
                "$se_module": "Deals"}),
        ),
    ];
    for (module, record) in records {
        h.sim.put_record(module, record).await.unwrap();
    }
    let role = json!({"deal_id": DEAL, "contact_id": "5843104000000872002", "role": "Technical Evaluator"});
    h.sim.put_record("Contact_Roles", role).await.unwrap();
}

#[tokio::test]
async fn a_deal_snapshot_takes_two_calls() {
    let h = harness().await;
    add_history(&h).await;
    let (calls, journal) = (h.sim.calls(), h.journal_len());
    let snap = snapshot::fetch(&h.client, "Deals", DEAL).await.unwrap().unwrap();
    assert_eq!(h.sim.calls() - calls, 2, "one composite, one account read");
    let composite = h.bodies(journal, "/crm/v8/__composite_requests");
    assert_eq!(composite[0]["__composite_requests"].as_array().unwrap().len(), 5);
    let account_reads = h.server.state.requests(journal, Some(&format!("/crm/v8/Accounts/{KPC}")));
    assert_eq!(account_reads.len(), 1);

    assert_eq!((snap.entity.as_str(), snap.entity_id.as_str()), ("opportunity", DEAL));
    assert!(snap.source_time_ms.is_some());
    let d = &snap.data;
    assert_eq!(d["amount"], json!({"amount": "1250000.00", "currency": "HKD"}));
    assert_eq!((&d["probability"], &d["next_step"]), (&json!(90), &json!("Send revised quote v3")));
    assert_eq!(
        d["account"],
        json!({"id": KPC, "name": "Kowloon Precision Components Ltd", "industry": "Manufacturing",
               "city": "Kowloon", "country": "Hong Kong", "phone": "+852 2345 6789"})
    );
    assert_eq!(
        d["contacts"],
        json!([{"name": "Ka Yan Wong", "role": "Purchasing", "primary": true},
               {"name": "Wei Zhang", "role": "Technical Evaluator", "primary": false}])
    );
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
            ("task", "Send quote v3"),
            ("note", "Margin check"),
            ("call", "Pricing call"),
            ("call", "Price follow-up"),
        ],
        "the five newest of eight: open and closed activities and notes"
    );
    assert_eq!(d["activities"][1]["who"], "Ka Yan Wong");
    assert_eq!(d["activities"][4]["when"], "2025-08-12T10:00:00+08:00", "a closed call without start: closed time");
    assert!(!d.to_string().contains("kayan.wong@kpc.example"), "no contact emails");
}

#[tokio::test]
async fn deleted_records_have_no_snapshot_and_other_modules_take_one_read() {
    let h = harness().await;
    let calls = h.sim.calls();
    let account = snapshot::fetch(&h.client, "Accounts", KPC).await.unwrap().unwrap();
    assert_eq!(h.sim.calls() - calls, 1);
    assert_eq!(
        (account.entity.as_str(), &account.data["name"]),
        ("account", &json!("Kowloon Precision Components Ltd"))
    );
    assert_eq!(account.data["record"]["Billing_Country"], "Hong Kong");

    h.client.delete("Deals", &["5843104000001234004"]).await.unwrap();
    let calls = h.sim.calls();
    assert_eq!(snapshot::fetch(&h.client, "Deals", "5843104000001234004").await.unwrap(), None);
    assert_eq!(h.sim.calls() - calls, 1, "no account read for a deal that is gone");
    assert_eq!(snapshot::fetch(&h.client, "Contacts", "5843104000009999999").await.unwrap(), None);
}
