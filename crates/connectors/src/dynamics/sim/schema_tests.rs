//! The schema-derived answers: identity discovery, `EntityDefinitions`, `$metadata`, and the
//! refusals of names the tables do not declare (what the conformance suite drives with
//! Microsoft's own clients, pinned here at the wire).

use super::{schema, seed, DynamicsSim};
use connect::SystemClock;
use serde_json::{json, Value};
use std::sync::Arc;

struct Rig {
    url: String,
    http: reqwest::Client,
    token: String,
    _server: ::sim::RunningSim,
}

async fn rig() -> Rig {
    let sim = Arc::new(DynamicsSim::new(Arc::new(SystemClock)));
    let server = ::sim::serve(sim, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = server.url();
    let http = reqwest::Client::new();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", seed::CLIENT_ID),
        ("client_secret", seed::CLIENT_SECRET),
        ("scope", &format!("{url}/.default")),
    ];
    let token: Value = http
        .post(format!("{url}/{}/oauth2/v2.0/token", seed::TENANT_ID))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    Rig { url, http, token, _server: server }
}

impl Rig {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp =
            self.http.get(format!("{}/api/data/v9.2/{path}", self.url)).bearer_auth(&self.token).send().await.unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/api/data/v9.2/{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn discovery_names_the_token_endpoint_of_the_origin_reached_and_unknown_tenants_are_refused() {
    let rig = rig().await;
    let doc: Value = rig
        .http
        .get(format!("{}/{}/v2.0/.well-known/openid-configuration", rig.url, seed::TENANT_ID))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["token_endpoint"], json!(format!("{}/{}/oauth2/v2.0/token", rig.url, seed::TENANT_ID)));
    let vendor_host: Value = rig
        .http
        .get(format!("{}/{}/v2.0/.well-known/openid-configuration", rig.url, seed::TENANT_ID))
        .header("host", "login.microsoftonline.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(vendor_host["token_endpoint"].as_str().unwrap().starts_with("https://login.microsoftonline.com/"));
    for path in ["v2.0/.well-known/openid-configuration", "oauth2/v2.0/token"] {
        let resp = rig
            .http
            .request(
                if path.contains("token") { reqwest::Method::POST } else { reqwest::Method::GET },
                format!("{}/nosuchtenant/{path}", rig.url),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_tenant", "{path}");
        assert_eq!(body["error_codes"], json!([90002]), "{path}");
    }
}

#[tokio::test]
async fn entity_definitions_resolve_tables_attributes_and_choices() {
    let rig = rig().await;
    let (status, body) =
        rig.get("EntityDefinitions?$select=LogicalName,EntitySetName,PrimaryIdAttribute&$filter=LogicalName%20eq%20'salesorder'").await;
    assert_eq!(status, 200);
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["EntitySetName"], "salesorders");
    assert_eq!(value[0]["PrimaryIdAttribute"], "salesorderid");
    assert!(value[0].get("SchemaName").is_none(), "not selected");
    let (_, none) = rig.get("EntityDefinitions?$filter=LogicalName%20eq%20'nosuchtable'").await;
    assert_eq!(none["value"], json!([]));
    let (status, missing) = rig.get("EntityDefinitions(LogicalName='nosuchtable')").await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "0x80040217");
    let (status, choices) = rig
        .get("EntityDefinitions(LogicalName='salesorder')/Attributes/Microsoft.Dynamics.CRM.StateAttributeMetadata?$select=LogicalName&$expand=OptionSet($select=Options)")
        .await;
    assert_eq!(status, 200);
    let options = &choices["value"][0]["OptionSet"]["Options"];
    assert_eq!(options.as_array().unwrap().len(), 5);
    assert_eq!(options[3]["Value"], 3);
    assert_eq!(options[3]["Label"]["UserLocalizedLabel"]["Label"], "Fulfilled");
}

#[tokio::test]
async fn metadata_declares_every_table_the_simulator_serves() {
    let rig = rig().await;
    let xml = rig
        .http
        .get(format!("{}/api/data/v9.2/$metadata", rig.url))
        .bearer_auth(&rig.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for table in schema::TABLES {
        assert!(xml.contains(&format!("<EntitySet Name=\"{}\"", table.set)), "{}", table.set);
        assert!(xml.contains(&format!("<PropertyRef Name=\"{}\"/>", table.key)), "{}", table.key);
    }
    assert!(xml.contains("<Property Name=\"_customerid_value\" Type=\"Edm.Guid\"/>"));
    assert!(xml.contains("<NavigationProperty Name=\"customerid_account\""));
}

#[tokio::test]
async fn undeclared_names_are_refused_in_queries_and_writes() {
    let rig = rig().await;
    let (status, body) = rig.get("accounts?$select=name,nosuchcolumn").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "0x80060888");
    assert_eq!(
        body["error"]["message"],
        "Could not find a property named 'nosuchcolumn' on type 'Microsoft.Dynamics.CRM.account'."
    );
    let (status, _) = rig.get("accounts?$orderby=nosuchcolumn%20desc").await;
    assert_eq!(status, 400);
    let (status, _) = rig.get("accounts?$filter=nosuchcolumn%20eq%201").await;
    assert_eq!(status, 400);
    // A declared column the row has no value for comes back null.
    let (status, rows) = rig.get("transactioncurrencies?$select=currencysymbol").await;
    assert_eq!(status, 200);
    assert_eq!(rows["value"][0]["currencysymbol"], Value::Null);

    let (status, body) = rig.post("accounts", json!({"name": "Bad Co", "nosuchcolumn": 1})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "0x80048d19");
    assert!(body["error"]["message"].as_str().unwrap().contains("The property 'nosuchcolumn' does not exist"));
    let (status, _) = rig.post("opportunities", json!({"_parentaccountid_value": seed::HARBOUR_CITY_ID})).await;
    assert_eq!(status, 400, "a lookup is written through its navigation property");
    let (status, _) = rig
        .post("opportunities", json!({"parentaccountid@odata.bind": "/products(7d1e2f30-44e3-ea11-bb43-000d3a2feca1)"}))
        .await;
    assert_eq!(status, 400, "bound to the wrong table");
}

#[tokio::test]
async fn create_multiple_is_all_or_nothing_and_returns_the_ids() {
    let rig = rig().await;
    let targets = json!({"Targets": [
        {"@odata.type": "Microsoft.Dynamics.CRM.account", "name": "One Ltd"},
        {"@odata.type": "Microsoft.Dynamics.CRM.account", "name": "Two Ltd", "parentaccountid@odata.bind": "/accounts(x)"}
    ]});
    let (status, _) = rig.post("accounts/Microsoft.Dynamics.CRM.CreateMultiple", targets).await;
    assert_eq!(status, 400);
    let (_, before) = rig.get("accounts?$select=name").await;
    assert_eq!(before["value"].as_array().unwrap().len(), 3, "nothing of the refused batch was created");
    let targets = json!({"Targets": [{"name": "One Ltd"}, {"name": "Two Ltd"}]});
    let (status, body) = rig.post("accounts/Microsoft.Dynamics.CRM.CreateMultiple", targets).await;
    assert_eq!(status, 200);
    let ids = body["Ids"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    let (status, one) = rig.get(&format!("accounts({})?$select=name", ids[0].as_str().unwrap())).await;
    assert_eq!((status, one["name"].clone()), (200, json!("One Ltd")));
}

/// The gateway's own reads name only columns the simulated tables declare, so a connector
/// query the simulator accepts is one Dataverse's schema accepts too.
#[test]
fn the_connectors_selects_name_declared_columns_only() {
    use crate::dynamics::canonical::SALES_ORDER_SELECT;
    use crate::dynamics::client::{Account, Opportunity, Product, SalesOrder};
    let reads = [
        (SalesOrder::SET, SalesOrder::SELECT),
        (SalesOrder::SET, SALES_ORDER_SELECT),
        (Opportunity::SET, Opportunity::SELECT),
        (Account::SET, Account::SELECT),
        (Product::SET, Product::SELECT),
    ];
    for (set, select) in reads {
        let table = schema::by_set(set).unwrap();
        for column in select.split(',') {
            assert!(table.has_property(column), "{set}: {column} is not declared");
        }
    }
}

/// A row is named by a GUID: a create that sets the primary key to anything else, or a bulk
/// target whose `@odata.id` does not name a row by its key, is refused and nothing is written.
#[tokio::test]
async fn keys_that_are_not_guids_are_refused() {
    let rig = rig().await;
    let (status, body) = rig.post("accounts", json!({"accountid": "../../etc", "name": "Bad Key Ltd"})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("Edm.Guid"));
    let targets = json!({"Targets": [{"@odata.id": "accounts(not-a-guid)", "name": "Upserted Ltd"}]});
    let (status, _) = rig.post("accounts/Microsoft.Dynamics.CRM.UpsertMultiple", targets).await;
    assert_eq!(status, 400);
    let (_, rows) = rig.get("accounts?$select=name").await;
    let names: Vec<&str> = rows["value"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let id = uuid::Uuid::new_v4();
    let targets = json!({"Targets": [{"@odata.id": format!("accounts({id})"), "name": "Upserted Ltd"}]});
    let (status, _) = rig.post("accounts/Microsoft.Dynamics.CRM.UpsertMultiple", targets).await;
    assert_eq!(status, 204);
    let (status, row) = rig.get(&format!("accounts({id})?$select=name")).await;
    assert_eq!((status, row["name"].clone()), (200, json!("Upserted Ltd")));
}
