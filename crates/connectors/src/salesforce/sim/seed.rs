//! Seeded org: a Hong Kong trading company's customers (ids and the main deal match the
//! fixtures' scenario data; the rest is invented), amounts in HKD, USD and CNY.

use serde_json::{json, Value};

pub const ORG_ID: &str = "00D5g000004HkbrEAC";
pub const INTEGRATION_USER_ID: &str = "0055g00000Dg7HkAAJ";
pub const INTEGRATION_USERNAME: &str = "integration@hktrading.example";
pub const SALES_REP_ID: &str = "0055g00000Dg7JmAAJ";
pub const CLIENT_ID: &str = "3MVG9SIMULATEDCONSUMERKEY.dingbridge.hk";
pub const CLIENT_SECRET: &str = "sim-consumer-secret-0123456789";
pub const REFRESH_TOKEN: &str = "5Aep861SimulatedRefreshTokenForDingbridge";
/// Password of the integration user for the username-password flow (being retired by
/// Salesforce, still what many scripts use).
pub const INTEGRATION_PASSWORD: &str = "sim-password-0123";
pub const OPPORTUNITY_ID: &str = "0065g00000Qx1ZpAAJ";
pub const ACCOUNT_ID: &str = "0015g00000HkAbCAAV";

/// Seeded records as (object, record). Every record gets `SystemModstamp` when stored.
pub fn records() -> Vec<(&'static str, Value)> {
    vec![
        (
            "User",
            json!({"Id": INTEGRATION_USER_ID, "Name": "Dingbridge Integration", "Email": INTEGRATION_USERNAME, "IsActive": true, "Username": INTEGRATION_USERNAME}),
        ),
        (
            "User",
            json!({"Id": SALES_REP_ID, "Name": "Chan Tai Man", "Email": "tm.chan@hktrading.example", "IsActive": true, "Username": "tm.chan@hktrading.example"}),
        ),
        (
            "Account",
            json!({"Id": ACCOUNT_ID, "Name": "Kowloon Precision Components Ltd", "Industry": "Manufacturing", "BillingCity": "Kowloon", "BillingCountry": "Hong Kong", "Phone": "+852 2345 6789", "CurrencyIsoCode": "HKD", "OwnerId": SALES_REP_ID}),
        ),
        (
            "Account",
            json!({"Id": "0015g00000HkAbDAAV", "Name": "Pearl River Electronics Trading Co", "Industry": "Electronics", "BillingCity": "Shenzhen", "BillingCountry": "China", "Phone": "+86 755 8888 1234", "CurrencyIsoCode": "CNY", "OwnerId": SALES_REP_ID}),
        ),
        (
            "Account",
            json!({"Id": "0015g00000HkAbEAAV", "Name": "Pacific Rim Logistics Inc", "Industry": "Transportation", "BillingCity": "Los Angeles", "BillingCountry": "United States", "Phone": "+1 310 555 0100", "CurrencyIsoCode": "USD", "OwnerId": SALES_REP_ID}),
        ),
        (
            "Contact",
            json!({"Id": "0035g00000Lm9TqAAJ", "AccountId": ACCOUNT_ID, "FirstName": "Ka Yan", "LastName": "Wong", "Name": "Ka Yan Wong", "Email": "ky.wong@kpc.example", "Phone": "+852 2345 6790", "CurrencyIsoCode": "HKD", "Dingbridge_Id__c": "dt-user-0001"}),
        ),
        (
            "Contact",
            json!({"Id": "0035g00000Lm9TrAAJ", "AccountId": "0015g00000HkAbDAAV", "FirstName": "Wei", "LastName": "Li", "Name": "Wei Li", "Email": "li.wei@pearlriver.example", "CurrencyIsoCode": "CNY", "Dingbridge_Id__c": "dt-user-0002"}),
        ),
        (
            "Opportunity",
            json!({"Id": OPPORTUNITY_ID, "Name": "KPC - Q3 servo motor bulk order", "AccountId": ACCOUNT_ID, "Amount": 1250000.0, "CurrencyIsoCode": "HKD", "CloseDate": "2025-09-30", "StageName": "Negotiation/Review", "Probability": 90.0, "IsClosed": false, "IsWon": false, "NextStep": "Final pricing sign-off", "OwnerId": SALES_REP_ID}),
        ),
        (
            "Opportunity",
            json!({"Id": "0065g00000Qx1ZqAAJ", "Name": "KPC - spare parts annual contract", "AccountId": ACCOUNT_ID, "Amount": 380000.0, "CurrencyIsoCode": "HKD", "CloseDate": "2025-10-15", "StageName": "Proposal/Price Quote", "Probability": 75.0, "IsClosed": false, "IsWon": false, "OwnerId": SALES_REP_ID}),
        ),
        (
            "Opportunity",
            json!({"Id": "0065g00000Qx1ZrAAJ", "Name": "Pearl River - PCB assembly line", "AccountId": "0015g00000HkAbDAAV", "Amount": 2600000.0, "CurrencyIsoCode": "CNY", "CloseDate": "2025-11-30", "StageName": "Qualification", "Probability": 10.0, "IsClosed": false, "IsWon": false, "OwnerId": SALES_REP_ID}),
        ),
        (
            "Opportunity",
            json!({"Id": "0065g00000Qx1ZsAAJ", "Name": "Pacific Rim - cold chain sensors", "AccountId": "0015g00000HkAbEAAV", "Amount": 145000.5, "CurrencyIsoCode": "USD", "CloseDate": "2025-12-15", "StageName": "Prospecting", "Probability": 10.0, "IsClosed": false, "IsWon": false, "OwnerId": SALES_REP_ID}),
        ),
        (
            "Task",
            json!({"Id": "00T5g00000Ab12CEAR", "Subject": "Call: pricing follow-up", "Status": "Completed", "Priority": "Normal", "ActivityDate": "2025-08-13", "TaskSubtype": "Call", "CallDurationInSeconds": 420, "WhatId": OPPORTUNITY_ID, "WhoId": "0035g00000Lm9TqAAJ", "OwnerId": SALES_REP_ID}),
        ),
        (
            "Task",
            json!({"Id": "00T5g00000Ab12DEAR", "Subject": "Send revised quote", "Status": "Not Started", "Priority": "High", "ActivityDate": "2025-08-20", "TaskSubtype": "Task", "WhatId": OPPORTUNITY_ID, "WhoId": "0035g00000Lm9TqAAJ", "OwnerId": SALES_REP_ID}),
        ),
        (
            "Event",
            json!({"Id": "00U5g00000Xy34DEAR", "Subject": "Site visit, Kwun Tong plant", "StartDateTime": "2025-08-12T02:00:00.000+0000", "EndDateTime": "2025-08-12T04:00:00.000+0000", "Location": "Kwun Tong", "WhatId": OPPORTUNITY_ID, "WhoId": "0035g00000Lm9TqAAJ", "OwnerId": SALES_REP_ID}),
        ),
        (
            "OpportunityContactRole",
            json!({"Id": "00K5g00000AaBbCEAV", "OpportunityId": OPPORTUNITY_ID, "ContactId": "0035g00000Lm9TqAAJ", "Role": "Decision Maker", "IsPrimary": true}),
        ),
    ]
}

/// Key prefix → object (reference A7).
pub fn object_of_prefix(id: &str) -> Option<&'static str> {
    super::schema::object_of_prefix(id).map(|o| o.name)
}

/// Object → key prefix (declared spelling of the object only).
pub fn prefix_of(object: &str) -> Option<&'static str> {
    super::schema::OBJECTS.iter().find(|o| o.name == object).map(|o| o.prefix)
}

/// The org's row and its opportunity stages (`OpportunityStage`, which tells which stage means
/// won or closed: fixture `query/opportunity_stages.json`).
pub fn setup_records() -> Vec<(&'static str, Value)> {
    let mut out = vec![(
        "Organization",
        json!({"Id": ORG_ID, "Name": "HK Trading Ltd", "IsSandbox": false, "OrganizationType": "Developer Edition", "InstanceName": "AP5", "DefaultLocaleSidKey": "en_HK", "LanguageLocaleKey": "en_US", "TimeZoneSidKey": "Asia/Hong_Kong"}),
    )];
    let probability = [10.0, 10.0, 20.0, 50.0, 60.0, 70.0, 75.0, 90.0, 100.0, 0.0];
    for (n, (stage, p)) in super::schema::STAGES.iter().zip(probability).enumerate() {
        let closed = stage.starts_with("Closed");
        let won = *stage == "Closed Won";
        let category = if won {
            "Closed"
        } else if closed {
            "Omitted"
        } else {
            "Pipeline"
        };
        let id = super::super::ids::normalize_id(&format!("01J5g00000StG{n:02}")).unwrap_or_default();
        out.push((
            "OpportunityStage",
            json!({"Id": id, "ApiName": stage, "MasterLabel": stage, "IsActive": true, "IsClosed": closed, "IsWon": won, "DefaultProbability": p, "SortOrder": n + 1, "ForecastCategory": category, "ForecastCategoryName": category, "Description": null}),
        ));
    }
    out
}
