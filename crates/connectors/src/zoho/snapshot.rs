//! Current state of a changed Zoho CRM record (reference B2 "Composite", "Related lists"): a deal
//! with its notes, open and closed activities and contact roles in ONE composite call, then one
//! read of its account for the billing country; any other module in one record read.

use super::client::{money_of, zoned_time_of, SubRequest, SubResponse, ZohoClient};
use super::errors::{api_error, error_code};
use super::VENDOR;
use crate::crm::{
    self, entity_name, newest_activities, percent, snippet, text_of, AccountSummary, Activity, ActivityKind,
    ContactRole, Opportunity, Person, Snapshot,
};
use connect::DeliveryError;
use serde_json::{json, Map, Value};

/// A composite read returns at most this many rows per related list (reference B2).
const RELATED_ROWS: &str = "25";
const NOTE_FIELDS: &str = "Note_Title,Note_Content,Owner,Created_Time";
const ACTIVITY_FIELDS: &str = "Subject,Event_Title,Call_Start_Time,Due_Date,Start_DateTime,Closed_Time,Who_Id,Owner";
const CONTACT_ROLE_FIELDS: &str = "Full_Name,First_Name,Last_Name,Contact_Role";
const ACCOUNT_FIELDS: [&str; 5] = ["Account_Name", "Industry", "Billing_City", "Billing_Country", "Phone"];
/// Longest note text used as the subject of an untitled note.
const NOTE_SUBJECT_CHARS: usize = 80;

/// The record's current state; `None` when it no longer exists (204, or `INVALID_DATA` for the id).
pub async fn fetch(client: &ZohoClient, module: &str, id: &str) -> Result<Option<Snapshot>, DeliveryError> {
    if module.eq_ignore_ascii_case("Deals") {
        return fetch_deal(client, id).await;
    }
    let Some(record) = client.get_record(module, id, &[]).await? else { return Ok(None) };
    record_snapshot(module, &record).map(Some)
}

/// The five composite parts of a deal read, in order: deal, notes, open activities, closed
/// activities, contact roles.
fn deal_requests(id: &str) -> Vec<SubRequest> {
    let related = |name: &str, list: &str, fields: &str| {
        SubRequest::get(name, &format!("Deals/{id}/{list}"), &[("fields", fields), ("per_page", RELATED_ROWS)])
    };
    vec![
        SubRequest::get("deal", &format!("Deals/{id}"), &[]),
        related("notes", "Notes", NOTE_FIELDS),
        related("open", "Activities_Chronological_View", ACTIVITY_FIELDS),
        related("closed", "Activities_Chronological_View_History", ACTIVITY_FIELDS),
        related("roles", "Contact_Roles", CONTACT_ROLE_FIELDS),
    ]
}

fn part_error(part: &SubResponse) -> DeliveryError {
    let body = part.body.as_ref().map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
    crm::in_context(api_error(part.status_code, &body, None), &format!("composite part `{}`", part.id))
}

/// The rows of a related-list part (204: none).
fn part_rows(part: &SubResponse) -> Result<Vec<Value>, DeliveryError> {
    if (200..300).contains(&part.status_code) {
        Ok(part.rows())
    } else {
        Err(part_error(part))
    }
}

async fn fetch_deal(client: &ZohoClient, id: &str) -> Result<Option<Snapshot>, DeliveryError> {
    let parts = client.composite(&deal_requests(id)).await?;
    let [deal_part, notes, open, closed, roles] = parts.as_slice() else {
        return Err(malformed(format!("{} composite parts for 5 requests", parts.len())));
    };
    let deal = match deal_part.status_code {
        200..=299 => deal_part.rows().into_iter().next(),
        400 => {
            let body = deal_part.body.as_ref().map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
            if error_code(&body).as_deref() == Some("INVALID_DATA") {
                None
            } else {
                return Err(part_error(deal_part));
            }
        }
        _ => return Err(part_error(deal_part)),
    };
    let Some(deal) = deal else { return Ok(None) };
    let mut activities = part_rows(open)?;
    activities.extend(part_rows(closed)?);
    let (notes, roles) = (part_rows(notes)?, part_rows(roles)?);
    let account = match deal.pointer("/Account_Name/id").and_then(Value::as_str) {
        Some(account_id) => client.get_record("Accounts", account_id, &ACCOUNT_FIELDS).await?,
        None => None,
    };
    deal_snapshot(&deal, account.as_ref(), &notes, &activities, &roles).map(Some)
}

/// The answer did not have the shape Zoho documents.
fn malformed(detail: String) -> DeliveryError {
    DeliveryError::Server { vendor: VENDOR, status: 200, detail }
}

fn text_at(value: &Value, pointer: &str) -> Option<String> {
    value.pointer(pointer).and_then(Value::as_str).map(str::to_owned)
}

/// The record's fields without Zoho's `$` metadata (reference B7).
fn record_fields(record: &Value) -> Value {
    match record.as_object() {
        Some(map) => Value::Object(
            map.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        None => Value::Object(Map::new()),
    }
}

fn modified_ms(record: &Value) -> Result<Option<i64>, DeliveryError> {
    Ok(zoned_time_of(record, "Modified_Time")?.map(|t| t.as_millis()))
}

/// A row of `Activities_Chronological_View[_History]`, told apart by its `$module`.
fn activity(row: &Value) -> Activity {
    let first = |keys: &[&str]| keys.iter().find_map(|k| row.get(*k).and_then(Value::as_str));
    let (kind, when) = match row.get("$module").and_then(Value::as_str) {
        Some("Calls") => (ActivityKind::Call, first(&["Call_Start_Time", "Closed_Time"])),
        Some("Events") => (ActivityKind::Meeting, first(&["Start_DateTime"])),
        _ => (ActivityKind::Task, first(&["Closed_Time", "Due_Date"])),
    };
    let subject = text_of(row, "Subject").or_else(|| text_of(row, "Event_Title"));
    Activity::new(kind, subject, when, text_at(row, "/Who_Id/name"))
}

fn note(row: &Value) -> Activity {
    let subject = text_of(row, "Note_Title")
        .or_else(|| row.get("Note_Content").and_then(Value::as_str).map(|c| snippet(c, NOTE_SUBJECT_CHARS)));
    Activity::new(
        ActivityKind::Note,
        subject,
        row.get("Created_Time").and_then(Value::as_str),
        text_at(row, "/Owner/name"),
    )
}

/// The deal's people: its contact roles, and its `Contact_Name` as the primary contact.
fn contacts(deal: &Value, roles: &[Value]) -> Vec<ContactRole> {
    let primary_id = text_at(deal, "/Contact_Name/id");
    let mut out: Vec<ContactRole> = roles
        .iter()
        .map(|row| {
            let name = text_of(row, "Full_Name").or_else(|| {
                let parts: Vec<String> = ["First_Name", "Last_Name"].iter().filter_map(|k| text_of(row, k)).collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            });
            ContactRole {
                name,
                role: text_at(row, "/Contact_Role/name"),
                primary: primary_id.is_some() && text_of(row, "id") == primary_id,
            }
        })
        .collect();
    let listed = roles.iter().any(|r| primary_id.is_some() && text_of(r, "id") == primary_id);
    if primary_id.is_some() && !listed {
        out.insert(0, ContactRole { name: text_at(deal, "/Contact_Name/name"), role: None, primary: true });
    }
    out
}

/// The canonical opportunity from a deal, its account (when it could be read) and related lists.
pub fn deal_snapshot(
    deal: &Value,
    account: Option<&Value>,
    notes: &[Value],
    activities: &[Value],
    contact_roles: &[Value],
) -> Result<Snapshot, DeliveryError> {
    let id = text_of(deal, "id").ok_or_else(|| malformed("a deal without id".to_owned()))?;
    let lookup = deal.get("Account_Name").filter(|a| a.is_object());
    let account = match (account, lookup) {
        (Some(a), _) => Some(AccountSummary {
            id: text_of(a, "id").or_else(|| lookup.and_then(|l| text_of(l, "id"))),
            name: text_of(a, "Account_Name").or_else(|| lookup.and_then(|l| text_of(l, "name"))),
            industry: text_of(a, "Industry"),
            city: text_of(a, "Billing_City"),
            country: text_of(a, "Billing_Country"),
            phone: text_of(a, "Phone"),
        }),
        // The account could not be read (deleted since): what the lookup says.
        (None, Some(l)) => {
            Some(AccountSummary { id: text_of(l, "id"), name: text_of(l, "name"), ..AccountSummary::default() })
        }
        (None, None) => None,
    };
    let owner = Person {
        id: text_at(deal, "/Owner/id"),
        name: text_at(deal, "/Owner/name"),
        email: text_at(deal, "/Owner/email"),
    };
    let all = notes.iter().map(note).chain(activities.iter().map(activity)).collect();
    let opportunity = Opportunity {
        id: id.clone(),
        name: text_of(deal, "Deal_Name"),
        stage: text_of(deal, "Stage"),
        amount: money_of(deal, "Amount").map_err(|e| crm::in_context(e, &format!("deal {id}")))?,
        close_date: text_of(deal, "Closing_Date"),
        probability: deal.get("Probability").and_then(percent),
        next_step: text_of(deal, "Next_Step"),
        owner: (owner != Person::default()).then_some(owner),
        account,
        contacts: contacts(deal, contact_roles),
        activities: newest_activities(all),
        record: record_fields(deal),
    };
    opportunity.into_snapshot(modified_ms(deal)?, VENDOR)
}

/// Any other module: `{"id", "name", "record"}`.
fn record_snapshot(module: &str, record: &Value) -> Result<Snapshot, DeliveryError> {
    let id = text_of(record, "id").ok_or_else(|| malformed(format!("a {module} record without id")))?;
    // Each module names its records in its own field; lookups (objects) are not names.
    let name =
        ["Account_Name", "Full_Name", "Deal_Name", "Subject", "Event_Title", "Note_Title", "Product_Name", "Name"]
            .iter()
            .find_map(|k| text_of(record, k));
    Ok(Snapshot {
        entity: entity_name(module),
        entity_id: id.clone(),
        source_time_ms: modified_ms(record)?,
        data: json!({ "id": id, "name": name, "record": record_fields(record) }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(name: &str) -> Vec<Value> {
        fixtures::read_json(format!("zoho/{name}"))["data"].as_array().unwrap().clone()
    }

    #[test]
    fn the_deal_fixtures_become_the_canonical_opportunity() {
        let deal = &rows("records/deal_get.json")[0];
        let account = &rows("records/account_get.json")[0];
        let notes = rows("related/deal_notes.json");
        let history = rows("related/deal_activities_chronological_view_history.json");
        let snap = deal_snapshot(deal, Some(account), &notes, &history, &[]).unwrap();
        assert_eq!((snap.entity.as_str(), snap.entity_id.as_str()), ("opportunity", "5843104000001234001"));
        assert_eq!(snap.source_time_ms, Some(1_755_153_005_000), "Modified_Time 2025-08-14T14:30:05+08:00");
        let d = &snap.data;
        assert_eq!(d["amount"], json!({"amount": "1250000.00", "currency": "HKD"}));
        assert_eq!(
            (&d["stage"], &d["close_date"], &d["probability"]),
            (&json!("Negotiation/Review"), &json!("2025-09-30"), &json!(90))
        );
        assert_eq!(d["next_step"], "Send revised quote v3");
        assert_eq!(d["owner"]["email"], "taiman.chan@hktrading.example");
        assert_eq!(d["account"]["id"], "5843104000000871001");
        assert_eq!(d["account"]["country"], account["Billing_Country"]);
        assert_eq!(d["contacts"], json!([{"name": "Ka Yan Wong", "role": null, "primary": true}]));
        let activities = d["activities"].as_array().unwrap();
        let kinds: Vec<&str> = activities.iter().map(|a| a["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["note", "call", "note", "task", "meeting"], "newest first, five of five");
        assert_eq!(activities[0]["subject"], "Discount request");
        assert_eq!(activities[0]["who"], "Chan Tai Man");
        assert_eq!(activities[1]["when"], "2025-08-14T14:23:00+08:00");
        assert_eq!(activities[2]["subject"], "Quote v2 sent by email.", "an untitled note shows its text");
        assert_eq!(activities[3]["when"], "2025-08-11");
        assert!(d["record"].get("$currency_symbol").is_none() && d["record"]["Lead_Source"] == "Partner");
    }

    #[test]
    fn a_deal_whose_account_is_gone_keeps_the_lookup() {
        let deal = &rows("records/deal_get.json")[0];
        let snap = deal_snapshot(deal, None, &[], &[], &[]).unwrap();
        assert_eq!(
            snap.data["account"],
            json!({"id": "5843104000000871001", "name": "Kowloon Precision Components Ltd", "industry": null,
                   "city": null, "country": null, "phone": null})
        );
        assert_eq!(snap.data["activities"], json!([]));
        let mut no_currency = deal.clone();
        no_currency.as_object_mut().unwrap().remove("Currency");
        let err = deal_snapshot(&no_currency, None, &[], &[], &[]).unwrap_err();
        assert!(err.to_string().contains("deal 5843104000001234001"), "{err}");
    }

    #[test]
    fn other_modules_carry_id_name_and_fields() {
        let contact = &rows("records/contact_get.json")[0];
        let snap = record_snapshot("Contacts", contact).unwrap();
        assert_eq!((snap.entity.as_str(), &snap.data["name"]), ("contact", &json!("Ka Yan Wong")));
        assert_eq!(snap.data["record"]["Email"], contact["Email"]);
        let account = &rows("records/account_get.json")[0];
        assert_eq!(record_snapshot("Accounts", account).unwrap().data["name"], "Kowloon Precision Components Ltd");
    }
}
