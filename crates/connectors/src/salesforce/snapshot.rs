//! Current state of a changed Salesforce record (reference A2 "One-call history for S3"): an
//! opportunity with its account, owner, latest activities and contact roles in ONE SOQL call;
//! any other object in one record read.

use super::client::{money_field, time_field, SalesforceClient};
use super::ids::normalize_id;
use super::limits::Priority;
use super::VENDOR;
use crate::crm::{
    entity_name, newest_activities, percent, text_of, AccountSummary, Activity, ActivityKind, ContactRole, Opportunity,
    Person, Snapshot,
};
use connect::DeliveryError;
use serde_json::{json, Value};

/// Child relationships of the history query: mapped into `activities`/`contacts`, and kept out of
/// `record` because they carry contacts' emails and phones.
const CHILD_LISTS: [&str; 3] = ["Tasks", "Events", "OpportunityContactRoles"];

/// The record's current state; `None` when it no longer exists (deleted or in the recycle bin).
pub async fn fetch(
    client: &SalesforceClient,
    object: &str,
    id: &str,
    priority: Priority,
) -> Result<Option<Snapshot>, DeliveryError> {
    let id = normalize_id(id)
        .map_err(|e| DeliveryError::Rejected { vendor: VENDOR, detail: format!("cannot read {object}: {e}") })?;
    if object.eq_ignore_ascii_case("Opportunity") {
        let Some(record) = client.opportunity_with_history(&id, priority).await? else { return Ok(None) };
        return opportunity_snapshot(&record, client.single_currency().unwrap_or_default()).map(Some);
    }
    let Some(record) = client.find_record(object, &id, &[], priority).await? else { return Ok(None) };
    record_snapshot(object, &record).map(Some)
}

/// The answer did not have the shape Salesforce documents.
fn malformed(detail: String) -> DeliveryError {
    DeliveryError::Server { vendor: VENDOR, status: 200, detail }
}

/// The record as flows see it in `record`: without the `attributes` metadata (at any depth)
/// and without `drop` keys.
fn record_fields(record: &Value, drop: &[&str]) -> Value {
    match record {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| *k != "attributes" && !drop.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), record_fields(v, &[])))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The rows of a child subquery (`null` when there are none, reference A2).
fn children<'a>(record: &'a Value, relationship: &str) -> &'a [Value] {
    record.pointer(&format!("/{relationship}/records")).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn text_at(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
}

fn stamp_ms(record: &Value) -> Result<Option<i64>, DeliveryError> {
    time_field(record, "SystemModstamp").map(|t| t.map(|t| t.as_millis())).map_err(|e| malformed(e.to_string()))
}

/// The canonical opportunity from one row of [`SalesforceClient::opportunity_with_history`].
/// `corporate_currency` is used when the row has no `CurrencyIsoCode` (multi-currency off).
pub fn opportunity_snapshot(record: &Value, corporate_currency: &str) -> Result<Snapshot, DeliveryError> {
    let raw_id = text_of(record, "Id").ok_or_else(|| malformed("an Opportunity row without Id".to_owned()))?;
    let id = normalize_id(&raw_id).map_err(|e| malformed(e.to_string()))?;
    let has_amount = record.get("Amount").is_some_and(|a| !a.is_null());
    if has_amount && text_of(record, "CurrencyIsoCode").is_none() && corporate_currency.is_empty() {
        return Err(DeliveryError::Rejected {
            vendor: VENDOR,
            detail: format!(
                "Opportunity {id} has an Amount but no CurrencyIsoCode: the org has multi-currency off, so \
                 configure the org's currency for this connection"
            ),
        });
    }
    let amount =
        money_field(record, "Amount", corporate_currency).map_err(|e| malformed(format!("Opportunity {id}: {e}")))?;
    let account = record.get("Account").filter(|a| a.is_object()).map(|a| AccountSummary {
        id: text_of(a, "Id")
            .or_else(|| text_of(record, "AccountId"))
            // The relationship's own URL ends with the account id.
            .or_else(|| text_at(a, "/attributes/url").and_then(|u| u.rsplit('/').next().map(str::to_owned))),
        name: text_of(a, "Name"),
        industry: text_of(a, "Industry"),
        city: text_of(a, "BillingCity"),
        country: text_of(a, "BillingCountry"),
        phone: text_of(a, "Phone"),
    });
    let owner = Person {
        id: text_of(record, "OwnerId"),
        name: text_at(record, "/Owner/Name"),
        email: text_at(record, "/Owner/Email"),
    };
    let contacts = children(record, "OpportunityContactRoles")
        .iter()
        .map(|role| ContactRole {
            name: text_at(role, "/Contact/Name"),
            role: text_of(role, "Role"),
            primary: role.get("IsPrimary").and_then(Value::as_bool).unwrap_or(false),
        })
        .collect();
    let tasks = children(record, "Tasks").iter().map(|task| {
        let kind = if task.get("TaskSubtype").and_then(Value::as_str) == Some("Call") {
            ActivityKind::Call
        } else {
            ActivityKind::Task
        };
        Activity::new(
            kind,
            text_of(task, "Subject"),
            task.get("ActivityDate").and_then(Value::as_str),
            text_at(task, "/Who/Name"),
        )
    });
    let events = children(record, "Events").iter().map(|event| {
        let when = ["StartDateTime", "ActivityDateTime", "ActivityDate"]
            .iter()
            .find_map(|k| event.get(*k).and_then(Value::as_str));
        Activity::new(ActivityKind::Meeting, text_of(event, "Subject"), when, text_at(event, "/Who/Name"))
    });
    let opportunity = Opportunity {
        id,
        name: text_of(record, "Name"),
        stage: text_of(record, "StageName"),
        amount,
        close_date: text_of(record, "CloseDate"),
        probability: record.get("Probability").and_then(percent),
        next_step: text_of(record, "NextStep"),
        owner: (owner != Person::default()).then_some(owner),
        account,
        contacts,
        activities: newest_activities(tasks.chain(events).collect()),
        record: record_fields(record, &CHILD_LISTS),
    };
    opportunity.into_snapshot(stamp_ms(record)?, VENDOR)
}

/// Any other object: `{"id", "name", "record"}`.
fn record_snapshot(object: &str, record: &Value) -> Result<Snapshot, DeliveryError> {
    let raw_id = text_of(record, "Id").ok_or_else(|| malformed(format!("a {object} record without Id")))?;
    let id = normalize_id(&raw_id).map_err(|e| malformed(e.to_string()))?;
    // Activities have a Subject where other objects have a Name.
    let name = text_of(record, "Name").or_else(|| text_of(record, "Subject"));
    Ok(Snapshot {
        entity: entity_name(object),
        entity_id: id.clone(),
        source_time_ms: stamp_ms(record)?,
        data: json!({ "id": id, "name": name, "record": record_fields(record, &[]) }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_row() -> Value {
        fixtures::read_json("salesforce/query/opportunity_with_history.json")["records"][0].clone()
    }

    #[test]
    fn the_history_fixture_becomes_the_canonical_opportunity() {
        let snap = opportunity_snapshot(&fixture_row(), "USD").unwrap();
        assert_eq!((snap.entity.as_str(), snap.entity_id.as_str()), ("opportunity", "0065g00000Qx1ZpAAJ"));
        assert_eq!(snap.source_time_ms, Some(1_755_153_005_000), "SystemModstamp 2025-08-14T06:30:05Z");
        let d = &snap.data;
        assert_eq!(d["name"], "KPC - Q3 servo motor bulk order");
        assert_eq!(d["stage"], "Negotiation/Review");
        assert_eq!(d["amount"], json!({"amount": "1250000.00", "currency": "HKD"}), "the row's currency wins");
        assert_eq!(d["close_date"], "2025-09-30");
        assert_eq!(d["probability"], json!(90));
        assert_eq!(d["next_step"], "Send revised quote v3");
        assert_eq!(
            d["owner"],
            json!({"id": "0055g00000Dg7JmAAJ", "name": "Chan Tai Man", "email": "taiman.chan@hktrading.example"})
        );
        assert_eq!(d["account"]["id"], "0015g00000HkAbCAAV", "from the relationship URL");
        assert_eq!(d["account"]["city"], "Kwun Tong");
        assert_eq!(d["account"]["country"], Value::Null, "not selected in this fixture");
        assert_eq!(d["contacts"], json!([{"name": "Ka Yan Wong", "role": "Decision Maker", "primary": true}]));
        let kinds: Vec<&str> =
            d["activities"].as_array().unwrap().iter().map(|a| a["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["meeting", "call", "task"], "newest first across tasks and events");
        assert_eq!(d["activities"][0]["when"], "2025-08-20T10:00:00+08:00");
        assert_eq!(d["activities"][1]["when"], "2025-08-14");
        assert_eq!(d["activities"][1]["who"], "Ka Yan Wong");
        let text = d.to_string();
        assert!(!text.contains("kayan.wong@kpc.example.hk") && !text.contains("+852 2345 6790"), "no contact data");
        assert!(d["record"].get("Tasks").is_none() && d["record"].get("attributes").is_none());
        assert_eq!(d["record"]["Account"]["Name"], "Kowloon Precision Components Ltd");
        assert!(d["record"]["Account"].get("attributes").is_none());
    }

    #[test]
    fn amounts_follow_the_org_currency_when_the_row_has_none() {
        let mut row = fixture_row();
        row.as_object_mut().unwrap().remove("CurrencyIsoCode");
        let snap = opportunity_snapshot(&row, "HKD").unwrap();
        assert_eq!(snap.data["amount"], json!({"amount": "1250000.00", "currency": "HKD"}));
        let err = opportunity_snapshot(&row, "").unwrap_err();
        assert_eq!(err.disposition(), connect::Disposition::Permanent);
        assert!(err.to_string().contains("multi-currency off"), "{err}");
        row["Amount"] = Value::Null;
        let snap = opportunity_snapshot(&row, "").unwrap();
        assert!(snap.data.get("amount").is_none(), "no amount, no key");
        assert!(opportunity_snapshot(&json!({"Name": "x"}), "HKD").is_err());
    }

    #[test]
    fn other_records_carry_id_name_and_fields() {
        let account = fixtures::read_json("salesforce/rest/account_get.json");
        let snap = record_snapshot("Account", &account).unwrap();
        assert_eq!(snap.entity, "account");
        assert_eq!(snap.entity_id, "0015g00000HkAbCAAV");
        assert_eq!(snap.data["name"], account["Name"]);
        assert_eq!(snap.data["record"]["Industry"], account["Industry"]);
        assert!(snap.data["record"].get("attributes").is_none());
        assert!(snap.source_time_ms.is_some());
        let task = fixtures::read_json("salesforce/rest/task_get.json");
        let snap = record_snapshot("Task", &task).unwrap();
        assert_eq!((snap.entity.as_str(), &snap.data["name"]), ("task", &task["Subject"]));
    }
}
