//! The metadata the official Zoho SDKs read before any record call (`users?type=CurrentUser`,
//! `org`, `settings/modules`, `settings/fields?module=`): without it `zohocrmsdk8_0` refuses to
//! convert records. Field metadata is derived from the seeded records (names, types, lookups)
//! plus the mandatory fields and the `Stage` pick list of the org.

use super::{error, reply, ZohoSim, DEAL_STAGES, MODULES, ORG_PREFIX};
use axum::response::Response;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The integration user (the owner of most seeded records).
const USER_ID: &str = "5843104000000424001";
const USER_EMAIL: &str = "taiman.chan@hktrading.example";

/// Fields Zoho requires on create, per module.
fn mandatory(module: &str) -> &'static [&'static str] {
    match module {
        "Deals" => &["Deal_Name", "Stage"],
        "Accounts" => &["Account_Name"],
        "Contacts" => &["Last_Name"],
        "Tasks" => &["Subject"],
        "Calls" => &["Subject", "Call_Type", "Call_Start_Time"],
        "Events" => &["Event_Title", "Start_DateTime", "End_DateTime"],
        _ => &[],
    }
}

/// Fields of each module beyond the seeded ones (reference B2 "Fields dingbridge needs").
fn standard(module: &str) -> &'static [&'static str] {
    match module {
        "Deals" => &[
            "Deal_Name",
            "Stage",
            "Pipeline",
            "Amount",
            "Currency",
            "Exchange_Rate",
            "Closing_Date",
            "Probability",
            "Expected_Revenue",
            "Type",
            "Lead_Source",
            "Next_Step",
            "Description",
            "Account_Name",
            "Contact_Name",
            "Owner",
            "Created_Time",
            "Modified_Time",
            "Last_Activity_Time",
            "Reason_For_Loss__s",
            "Tag",
            "Layout",
        ],
        "Accounts" => &[
            "Account_Name",
            "Account_Number",
            "Account_Type",
            "Industry",
            "Parent_Account",
            "Phone",
            "Website",
            "Billing_Street",
            "Billing_City",
            "Billing_State",
            "Billing_Code",
            "Billing_Country",
            "Annual_Revenue",
            "Employees",
            "Owner",
            "Currency",
            "Description",
            "Created_Time",
            "Modified_Time",
            "Tag",
        ],
        "Contacts" => &[
            "First_Name",
            "Last_Name",
            "Full_Name",
            "Salutation",
            "Title",
            "Department",
            "Account_Name",
            "Email",
            "Phone",
            "Mobile",
            "Mailing_City",
            "Mailing_Country",
            "Email_Opt_Out",
            "Owner",
            "Description",
            "Created_Time",
            "Modified_Time",
            "Tag",
        ],
        "Tasks" => &[
            "Subject",
            "Due_Date",
            "Status",
            "Priority",
            "Who_Id",
            "What_Id",
            "Owner",
            "Closed_Time",
            "Description",
            "Created_Time",
            "Modified_Time",
        ],
        "Calls" => &[
            "Subject",
            "Call_Type",
            "Outbound_Call_Status",
            "Call_Start_Time",
            "Call_Duration",
            "Call_Duration_in_seconds",
            "Call_Purpose",
            "Call_Result",
            "Who_Id",
            "What_Id",
            "Owner",
            "Description",
            "Created_Time",
            "Modified_Time",
        ],
        "Events" => &[
            "Event_Title",
            "Start_DateTime",
            "End_DateTime",
            "All_day",
            "Venue",
            "Participants",
            "Who_Id",
            "What_Id",
            "Owner",
            "Description",
            "Created_Time",
            "Modified_Time",
        ],
        "Notes" => &["Note_Title", "Note_Content", "Parent_Id", "Owner", "Created_Time", "Modified_Time"],
        _ => &[],
    }
}

/// The module a lookup field points to.
fn lookup_module(field: &str) -> &'static str {
    match field {
        "Account_Name" | "Parent_Account" => "Accounts",
        "Contact_Name" | "Who_Id" => "Contacts",
        "Deal_Name" | "What_Id" => "Deals",
        _ => "Accounts",
    }
}

/// Zoho's (data_type, json_type) of a seeded value.
fn types_of(field: &str, value: &Value) -> (&'static str, &'static str) {
    match value {
        Value::Bool(_) => ("boolean", "boolean"),
        Value::Number(_) if field == "Amount" || field.ends_with("Revenue") => ("currency", "double"),
        Value::Number(n) if n.is_f64() => ("double", "double"),
        Value::Number(_) => ("integer", "integer"),
        Value::Object(o) if o.contains_key("email") => ("ownerlookup", "jsonobject"),
        Value::Object(_) => ("lookup", "jsonobject"),
        Value::Array(_) => ("multiselectpicklist", "jsonarray"),
        Value::String(s) if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') => ("date", "string"),
        Value::String(s) if s.parse::<jiff::Timestamp>().is_ok() => ("datetime", "string"),
        Value::Null if field.ends_with("_Time") || field.ends_with("DateTime") => ("datetime", "string"),
        Value::Null if field.ends_with("_Date") => ("date", "string"),
        Value::Null if field == "Owner" => ("ownerlookup", "jsonobject"),
        Value::Null if ["Account_Name", "Contact_Name", "Parent_Account", "Who_Id", "What_Id"].contains(&field) => {
            ("lookup", "jsonobject")
        }
        _ if field == "Stage" => ("picklist", "string"),
        _ if field == "Email" => ("email", "string"),
        _ if field == "Phone" || field == "Mobile" => ("phone", "string"),
        _ if field.ends_with("Description") || field == "Note_Content" => ("textarea", "string"),
        _ => ("text", "string"),
    }
}

impl ZohoSim {
    /// Each field of `module` with a sample value: the fields of its records and the mandatory ones.
    fn field_samples(&self, module: &str) -> BTreeMap<String, Value> {
        let mut seen: BTreeMap<String, Value> = BTreeMap::new();
        for row in self.data().records.get(module).into_iter().flatten() {
            for (k, v) in row.as_object().into_iter().flatten() {
                if !v.is_null() && !k.starts_with('$') && k != "id" {
                    seen.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        for m in mandatory(module).iter().chain(standard(module)) {
            seen.entry((*m).to_owned()).or_insert(Value::Null);
        }
        seen
    }

    /// The field API names of `module` (COQL refuses any other column with `INVALID_QUERY`).
    pub(super) fn known_fields(&self, module: &str) -> Vec<String> {
        self.field_samples(module).into_keys().collect()
    }

    /// `GET users?type=CurrentUser`.
    pub(super) fn current_user(&self) -> Response {
        reply(
            200,
            json!({"users": [{"id": USER_ID, "email": USER_EMAIL, "full_name": "Chan Tai Man", "first_name": "Tai Man",
                              "last_name": "Chan", "status": "active", "role": {"name": "CEO", "id": format!("{ORG_PREFIX}000026005")},
                              "profile": {"name": "Administrator", "id": format!("{ORG_PREFIX}000026011")},
                              "time_zone": "Asia/Hong_Kong", "locale": "en_US", "country_locale": "en_US"}],
                   "info": {"per_page": 200, "count": 1, "page": 1, "more_records": false}}),
        )
    }

    /// `GET org`.
    pub(super) fn org(&self) -> Response {
        reply(
            200,
            json!({"org": [{"id": format!("{ORG_PREFIX}000000001"), "company_name": "HK Trading Ltd", "domain_name": "org5843104",
                            "zgid": "5843104", "primary_email": USER_EMAIL, "currency": "Hong Kong Dollar - HKD",
                            "iso_code": "HKD", "currency_symbol": "HK$", "time_zone": "Asia/Hong_Kong", "country_code": "HK",
                            "type": "production", "mc_status": false}]}),
        )
    }

    /// `GET settings/modules`: the modules the simulator serves.
    pub(super) fn modules(&self) -> Response {
        let modules: Vec<Value> = MODULES
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({"api_name": m, "module_name": m, "plural_label": m, "singular_label": m.trim_end_matches('s'),
                       "id": format!("{ORG_PREFIX}00000{:04}", 2175 + i), "api_supported": true, "generated_type": "default",
                       "creatable": true, "editable": true, "deletable": true, "viewable": true})
            })
            .collect();
        reply(200, json!({ "modules": modules }))
    }

    /// `GET settings/related_lists?module=M`: the related lists the simulator serves under a
    /// record of `M` (`{Module}/{id}/{api_name}`); the SDKs read it before a related-records call.
    /// The activity views span several modules, so they name none.
    pub(super) fn related_lists(&self, module: Option<&str>) -> Response {
        let Some(module) = module.filter(|m| MODULES.contains(m)) else {
            return error(400, "INVALID_MODULE", "the module name given seems to be invalid", json!({}));
        };
        let lists: &[(&str, Option<&str>)] = match module {
            "Deals" => &[
                ("Notes", Some("Notes")),
                ("Calls", Some("Calls")),
                ("Tasks", Some("Tasks")),
                ("Events", Some("Events")),
                ("Activities_Chronological_View", None),
                ("Activities_Chronological_View_History", None),
                ("Contact_Roles", Some("Contacts")),
            ],
            "Accounts" | "Contacts" => &[("Notes", Some("Notes"))],
            _ => &[],
        };
        let related: Vec<Value> = lists
            .iter()
            .enumerate()
            .map(|(i, (api_name, target))| {
                json!({"api_name": api_name, "name": api_name, "display_label": api_name.replace('_', " "),
                       "id": format!("{ORG_PREFIX}0000{:05}", 4000 + i), "type": "default", "visible": true,
                       "href": format!("{module}/{{ENTITYID}}/{api_name}"),
                       "module": target.map(|t| json!({"api_name": t, "id": format!("{ORG_PREFIX}000002175")}))})
            })
            .collect();
        if related.is_empty() {
            return super::no_content();
        }
        reply(200, json!({ "related_lists": related }))
    }

    /// `GET settings/fields?module=M`: every field any seeded record of `M` has.
    pub(super) fn fields(&self, module: Option<&str>) -> Response {
        let Some(module) = module.filter(|m| MODULES.contains(m)) else {
            return error(400, "INVALID_MODULE", "the module name given seems to be invalid", json!({}));
        };
        let seen = self.field_samples(module);
        let fields: Vec<Value> = seen
            .iter()
            .enumerate()
            .map(|(i, (name, sample))| {
                let (data_type, json_type) = types_of(name, sample);
                let mut field = Map::new();
                field.insert("api_name".into(), json!(name));
                field.insert("field_label".into(), json!(name.replace('_', " ")));
                field.insert("display_label".into(), json!(name.replace('_', " ")));
                field.insert("id".into(), json!(format!("{ORG_PREFIX}0000{:05}", 3000 + i)));
                field.insert("data_type".into(), json!(data_type));
                field.insert("json_type".into(), json!(json_type));
                field.insert("system_mandatory".into(), json!(mandatory(module).contains(&name.as_str())));
                field.insert("custom_field".into(), json!(false));
                field.insert("read_only".into(), json!(matches!(name.as_str(), "Created_Time" | "Modified_Time")));
                if data_type == "lookup" {
                    let target = lookup_module(name);
                    field.insert(
                        "lookup".into(),
                        json!({"module": {"api_name": target, "id": format!("{ORG_PREFIX}000002175")}}),
                    );
                }
                if data_type == "picklist" {
                    let values: Vec<Value> = DEAL_STAGES
                        .iter()
                        .map(|s| json!({"display_value": s, "actual_value": s, "reference_value": s}))
                        .collect();
                    field.insert("pick_list_values".into(), Value::Array(values));
                }
                Value::Object(field)
            })
            .collect();
        reply(200, json!({ "fields": fields }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ZohoSim, SIM_CLIENT_ID, SIM_CLIENT_SECRET, SIM_REFRESH_TOKEN};
    use serde_json::{json, Value};
    use sim::serve;
    use std::net::SocketAddr;
    use std::sync::Arc;

    /// The simulator on loopback and an access token of it.
    async fn rig() -> (sim::RunningSim, reqwest::Client, String) {
        let server = serve(Arc::new(ZohoSim::new()), SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let http = reqwest::Client::new();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", SIM_CLIENT_ID),
            ("client_secret", SIM_CLIENT_SECRET),
            ("refresh_token", SIM_REFRESH_TOKEN),
        ];
        let token: Value = http
            .post(format!("{}/oauth/v2/token", server.url()))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = format!("Zoho-oauthtoken {}", token["access_token"].as_str().unwrap());
        (server, http, token)
    }

    #[tokio::test]
    async fn the_sdk_metadata_reads_answer() {
        let (server, http, token) = rig().await;
        let get =
            |path: &str| http.get(format!("{}/crm/v8/{path}", server.url())).header("authorization", &token).send();
        let user: Value = get("users?type=CurrentUser").await.unwrap().json().await.unwrap();
        assert_eq!(user["users"][0]["email"], super::USER_EMAIL);
        let org: Value = get("org").await.unwrap().json().await.unwrap();
        assert!(org["org"][0]["id"].is_string());
        let modules: Value = get("settings/modules").await.unwrap().json().await.unwrap();
        assert_eq!(modules["modules"].as_array().unwrap().len(), super::MODULES.len());
        let fields: Value = get("settings/fields?module=Deals").await.unwrap().json().await.unwrap();
        let field =
            |name: &str| fields["fields"].as_array().unwrap().iter().find(|f| f["api_name"] == name).cloned().unwrap();
        assert_eq!(field("Stage")["data_type"], "picklist");
        assert_eq!(field("Stage")["system_mandatory"], true);
        assert_eq!(field("Account_Name")["lookup"]["module"]["api_name"], "Accounts");
        assert_eq!(field("Modified_Time")["data_type"], "datetime");
        assert_eq!(field("Amount")["data_type"], "currency");
        let related: Value = get("settings/related_lists?module=Deals").await.unwrap().json().await.unwrap();
        let notes =
            related["related_lists"].as_array().unwrap().iter().find(|r| r["api_name"] == "Notes").unwrap().clone();
        assert_eq!(
            (notes["href"].as_str(), notes["module"]["api_name"].as_str()),
            (Some("Deals/{ENTITYID}/Notes"), Some("Notes"))
        );
        let unknown = get("settings/fields?module=Nopes").await.unwrap();
        assert_eq!(unknown.status(), 400);
    }

    #[tokio::test]
    async fn unknown_fields_are_invalid_data_and_ids_may_be_numbers() {
        let (server, http, token) = rig().await;
        let url = |path: &str| format!("{}/crm/v8/{path}", server.url());
        let bad = json!({"data": [{"Deal_Name": "x", "Stage": "Qualification", "No_Such_Field": 1}]});
        let answer = http.post(url("Deals")).header("authorization", &token).json(&bad).send().await.unwrap();
        assert_eq!(answer.status(), 400, "every record failed");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["data"][0]["code"], "INVALID_DATA");
        assert_eq!(body["data"][0]["details"]["api_name"], "No_Such_Field");
        let id: u64 = 5843104000001234001;
        let update = json!({"data": [{"id": id, "Amount": 42.5}]});
        let answer = http.put(url("Deals")).header("authorization", &token).json(&update).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let one = json!({"data": [{"Next_Step": "call back"}]});
        let answer =
            http.put(url(&format!("Deals/{id}"))).header("authorization", &token).json(&one).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let read: Value = http
            .get(url(&format!("Deals/{id}")))
            .header("authorization", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (read["data"][0]["Amount"].as_f64(), read["data"][0]["Next_Step"].as_str()),
            (Some(42.5), Some("call back"))
        );
        let gone = http.delete(url(&format!("Deals/{id}"))).header("authorization", &token).send().await.unwrap();
        assert_eq!(gone.status(), 200);
        let after = http.get(url(&format!("Deals/{id}"))).header("authorization", &token).send().await.unwrap();
        assert_eq!(after.status(), 204);
    }

    #[tokio::test]
    async fn search_and_count_answer_like_a_list() {
        let (server, http, token) = rig().await;
        let get =
            |path: &str| http.get(format!("{}/crm/v8/{path}", server.url())).header("authorization", &token).send();
        let found: Value =
            get("Deals/search?criteria=(Deal_Name:starts_with:KPC)").await.unwrap().json().await.unwrap();
        assert!(found["data"].as_array().unwrap().iter().all(|d| d["Deal_Name"].as_str().unwrap().starts_with("KPC")));
        assert_eq!(found["info"]["page"], 1);
        assert_eq!(get("Deals/search?criteria=(Deal_Name:equals:none)").await.unwrap().status(), 204);
        let refused = get("Deals/search?criteria=Deal_Name:equals:none").await.unwrap();
        assert_eq!(refused.status(), 400);
        assert_eq!(refused.json::<Value>().await.unwrap()["code"], "INVALID_QUERY");
        let unknown: Value = get("Deals/search?criteria=(Nope:equals:1)").await.unwrap().json().await.unwrap();
        assert_eq!(unknown["details"]["api_name"], "Nope");
        assert_eq!(get("Deals/search").await.unwrap().status(), 400, "criteria, email, phone or word required");
        let count: Value = get("Deals/actions/count").await.unwrap().json().await.unwrap();
        assert!(count["count"].as_u64().unwrap() >= 3);
    }
}
