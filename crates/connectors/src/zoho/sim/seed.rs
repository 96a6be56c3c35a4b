//! The seeded org of the Zoho simulator: a Hong Kong trading company's accounts, contacts,
//! deals and activities, and the state `POST /_sim/reset` returns to.

use super::{Data, DEFAULT_CONCURRENCY, DEFAULT_DAILY_CREDITS, MODULES, ORG_PREFIX};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

fn record(module: &str, suffix: &str, mut fields: Value) -> (String, Value) {
    fields["id"] = json!(format!("{ORG_PREFIX}{suffix}"));
    fields["Created_Time"] = json!("2025-06-02T11:15:27+08:00");
    if fields.get("Modified_Time").is_none() {
        fields["Modified_Time"] = json!("2025-08-14T14:30:05+08:00");
    }
    (module.to_owned(), fields)
}

/// A Hong Kong trading company: customers in HK, Shenzhen and the US.
fn seed_records() -> BTreeMap<String, Vec<Value>> {
    let chan = json!({"name": "Chan Tai Man", "id": "5843104000000424001", "email": "taiman.chan@hktrading.example"});
    let lee = json!({"name": "Lee Siu Ming", "id": "5843104000000424017", "email": "siuming.lee@hktrading.example"});
    let kpc = json!({"name": "Kowloon Precision Components Ltd", "id": "5843104000000871001"});
    let shz = json!({"name": "Shenzhen Harbour Electronics Co", "id": "5843104000000871002"});
    let pac = json!({"name": "Pacific Rim Imports LLC", "id": "5843104000000871003"});
    let deal1 = json!({"name": "KPC - Q3 servo motor bulk order", "id": "5843104000001234001"});
    let seeds = vec![
        record(
            "Accounts",
            "000871001",
            json!({"Account_Name": "Kowloon Precision Components Ltd", "Currency": "HKD", "Billing_City": "Kowloon", "Billing_Country": "Hong Kong", "Industry": "Manufacturing", "Phone": "+852 2345 6789", "Owner": chan}),
        ),
        record(
            "Accounts",
            "000871002",
            json!({"Account_Name": "Shenzhen Harbour Electronics Co", "Currency": "CNY", "Billing_City": "Shenzhen", "Billing_Country": "China", "Owner": lee}),
        ),
        record(
            "Accounts",
            "000871003",
            json!({"Account_Name": "Pacific Rim Imports LLC", "Currency": "USD", "Billing_City": "Los Angeles", "Billing_Country": "United States", "Owner": chan}),
        ),
        record(
            "Contacts",
            "000872001",
            json!({"First_Name": "Ka Yan", "Last_Name": "Wong", "Full_Name": "Ka Yan Wong", "Email": "kayan.wong@kpc.example", "Account_Name": kpc, "Owner": chan}),
        ),
        record(
            "Contacts",
            "000872002",
            json!({"First_Name": "Wei", "Last_Name": "Zhang", "Full_Name": "Wei Zhang", "Email": "wei.zhang@shz-harbour.example", "Account_Name": shz, "Owner": lee}),
        ),
        record(
            "Deals",
            "001234001",
            json!({"Deal_Name": "KPC - Q3 servo motor bulk order", "Stage": "Negotiation/Review", "Amount": 1_250_000, "Currency": "HKD", "Closing_Date": "2025-09-30", "Probability": 90, "Next_Step": "Send revised quote v3", "Account_Name": kpc, "Contact_Name": {"name": "Ka Yan Wong", "id": "5843104000000872001"}, "Owner": chan}),
        ),
        record(
            "Deals",
            "001234002",
            json!({"Deal_Name": "KPC - spare parts annual contract", "Stage": "Proposal/Price Quote", "Amount": 380_000, "Currency": "HKD", "Closing_Date": "2025-10-15", "Account_Name": kpc, "Owner": chan}),
        ),
        record(
            "Deals",
            "001234003",
            json!({"Deal_Name": "Pacific Rim - LED driver boards", "Stage": "Qualification", "Amount": 56_000.5, "Currency": "USD", "Closing_Date": "2025-11-20", "Account_Name": pac, "Owner": lee}),
        ),
        record(
            "Deals",
            "001234004",
            json!({"Deal_Name": "Shenzhen Harbour - connector reels", "Stage": "Closed Won", "Amount": 720_000, "Currency": "CNY", "Closing_Date": "2025-08-01", "Account_Name": shz, "Owner": lee}),
        ),
        record(
            "Notes",
            "001300001",
            json!({"Note_Title": "Discount request", "Note_Content": "Customer asks 3% discount on 2nd delivery.", "Parent_Id": deal1, "$se_module": "Deals", "Owner": chan}),
        ),
        record(
            "Notes",
            "001300002",
            json!({"Note_Title": "Site visit", "Note_Content": "Visited the Kwun Tong plant.", "Parent_Id": deal1, "$se_module": "Deals", "Owner": lee}),
        ),
        record(
            "Calls",
            "001400001",
            json!({"Subject": "Price follow-up", "Call_Type": "Outbound", "Call_Duration": "04:30", "What_Id": deal1, "$se_module": "Deals", "Owner": chan, "Closed_Time": "2025-08-12T10:00:00+08:00"}),
        ),
    ];
    let mut out: BTreeMap<String, Vec<Value>> = MODULES.iter().map(|m| ((*m).to_owned(), Vec::new())).collect();
    for (module, value) in seeds {
        out.entry(module).or_default().push(value);
    }
    out
}

/// Ka Yan Wong buys for Kowloon Precision on its Q3 order.
fn seed_contact_roles() -> Vec<Value> {
    vec![json!({"deal": "5843104000001234001", "contact": "5843104000000872001",
        "role": {"name": "Purchasing", "id": "5843104000000006871"}})]
}

/// The seeded state.
pub(super) fn seed_data() -> Data {
    Data {
        records: seed_records(),
        deleted: BTreeMap::new(),
        contact_roles: seed_contact_roles(),
        tokens: HashMap::new(),
        refreshes: Vec::new(),
        channels: Vec::new(),
        page_tokens: HashMap::new(),
        daily_credits: DEFAULT_DAILY_CREDITS,
        credits_used: 0,
        concurrency: DEFAULT_CONCURRENCY,
        delay_ms: 0,
        next_id: 9_000_001,
    }
}
