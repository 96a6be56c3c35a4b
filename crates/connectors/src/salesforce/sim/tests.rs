//! The simulator's answers against the fixtures, one request at a time (no HTTP): the
//! refusals and resources the simple-salesforce conformance script found missing.

use super::*;

fn sim() -> SalesforceSim {
    SalesforceSim::new(SimConfig::default(), Arc::new(connect::SystemClock))
}

/// One data-API request as `dispatch` sees it after auth.
fn call(sim: &SalesforceSim, method: &str, target: &str, body: Option<Value>) -> Answer {
    let uri: Uri = target.parse().unwrap();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()).into_owned().collect();
    let mut org = sim.lock();
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    sim.dispatch(&mut org, &method, uri.path(), &query, &HeaderMap::new(), body.as_ref(), &mut Vec::new())
}

fn soql(sim: &SalesforceSim, text: &str) -> Answer {
    let q: String = url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
    call(sim, "GET", &format!("/services/data/v62.0/query?q={q}"), None)
}

fn code(answer: &Answer) -> &str {
    answer.1.as_ref().and_then(|b| b[0]["errorCode"].as_str()).unwrap_or_default()
}

#[test]
fn a_query_naming_an_unknown_field_is_invalid_field_as_the_fixture() {
    let s = sim();
    let answer = soql(&s, "SELECT Id, Nmae FROM Opportunity");
    assert_eq!(answer, (400, Some(fixtures::read_json("salesforce/errors/malformed_query_400.json"))));
    for (text, status, expected) in [
        ("SELECT Id FROM Nope__c", 400, "INVALID_TYPE"),
        ("SELECT Id FROM Account WHERE", 400, "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE A = 1 OR B = 2 AND C = 3", 400, "MALFORMED_QUERY"),
        ("SELECT Id FROM Account WHERE Bogus = 1", 400, "INVALID_FIELD"),
        ("SELECT Id, Account.Bogus FROM Opportunity", 400, "INVALID_FIELD"),
    ] {
        let answer = soql(&s, text);
        assert_eq!((answer.0, code(&answer)), (status, expected), "{text}");
    }
    // The connector's keyset poll and the S3 history query still run.
    let poll = soql(
        &s,
        "SELECT Name, Id, SystemModstamp FROM Opportunity WHERE SystemModstamp > 2020-01-01T00:00:00.5Z \
         OR (SystemModstamp = 2020-01-01T00:00:00Z AND Id > '0065g00000Qx1ZpAAJ') ORDER BY SystemModstamp, Id LIMIT 2000",
    );
    assert_eq!(poll.1.unwrap()["totalSize"], 4);
}

#[test]
fn counts_aggregates_and_query_all() {
    let s = sim();
    let count = soql(&s, "SELECT COUNT() FROM Opportunity WHERE Amount > 1000000");
    assert_eq!(count.1.unwrap(), json!({"totalSize": 2, "done": true, "records": []}));
    let agg = soql(&s, "SELECT COUNT(Id) FROM Opportunity WHERE StageName IN ('Prospecting', 'Qualification')");
    assert_eq!(agg.1.unwrap()["records"][0], json!({"attributes": {"type": "AggregateResult"}, "expr0": 2}));
    assert_eq!(call(&s, "DELETE", &format!("/services/data/v62.0/sobjects/Account/{}", seed::ACCOUNT_ID), None).0, 204);
    let q = "SELECT Id, IsDeleted FROM Account WHERE IsDeleted = true";
    assert_eq!(soql(&s, q).1.unwrap()["totalSize"], 0);
    let target: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    let all = call(&s, "GET", &format!("/services/data/v62.0/queryAll?q={target}"), None).1.unwrap();
    assert_eq!(all["records"][0]["Id"], seed::ACCOUNT_ID);
}

#[test]
fn writes_are_checked_against_the_describe() {
    let s = sim();
    let create =
        |object: &str, body: Value| call(&s, "POST", &format!("/services/data/v62.0/sobjects/{object}"), Some(body));
    let answer = create("Account", json!({"Name": "x", "foo": 1}));
    assert_eq!(
        answer,
        (
            400,
            Some(json!([{"message": "No such column 'foo' on sobject of type Account", "errorCode": "INVALID_FIELD"}]))
        )
    );
    let answer = create("Opportunity", json!({"Name": "x", "StageName": "Prospecting"}));
    assert_eq!(answer, (400, Some(fixtures::read_json("salesforce/errors/required_field_missing_400.json"))));
    let answer = create("Opportunity", json!({"Name": "x", "StageName": "Won", "CloseDate": "2025-09-30"}));
    assert_eq!(answer.1.unwrap()[0]["message"], "Stage: bad value for restricted picklist field: Won");
    assert_eq!(code(&create("Opportunity", json!({"IsWon": true}))), "INVALID_FIELD_FOR_INSERT_UPDATE");
    let answer = create("Task", json!({"Subject": "x", "WhatId": "0065g00000Qx1Zz"}));
    let failure = fixtures::read_json("salesforce/composite/composite_response_allornone_failure.json");
    assert_eq!(answer, (400, Some(failure["compositeResponse"][1]["body"].clone())));
    assert_eq!(create("Nope__c", json!({})).0, 404);
    let created = create("contact", json!({"firstname": "Mei", "LastName": "Lau"}));
    assert_eq!(created.0, 201);
    let id = created.1.unwrap()["id"].as_str().unwrap().to_owned();
    assert_eq!(s.record("Contact", &id).unwrap()["Name"], "Mei Lau", "names are case-insensitive, Name derived");
}

#[test]
fn describe_external_ids_and_collections() {
    let s = sim();
    let described = call(&s, "GET", "/services/data/v62.0/sobjects/Opportunity/describe", None).1.unwrap();
    let stage = described["fields"].as_array().unwrap().iter().find(|f| f["name"] == "StageName").unwrap();
    assert_eq!((stage["type"].as_str(), stage["restrictedPicklist"].as_bool()), (Some("picklist"), Some(true)));
    assert_eq!(call(&s, "GET", "/services/data/v62.0/sobjects/Nope__c/describe", None).0, 404);
    assert!(
        call(&s, "GET", "/services/data/v62.0/sobjects", None).1.unwrap()["sobjects"].as_array().unwrap().len() >= 7
    );

    let by_ext = call(&s, "GET", "/services/data/v62.0/sobjects/Contact/Dingbridge_Id__c/dt-user-0001", None);
    assert_eq!(by_ext.1.unwrap()["Id"], "0035g00000Lm9TqAAJ");
    let not_ext = call(&s, "GET", "/services/data/v62.0/sobjects/Contact/Email/x", None);
    assert_eq!(not_ext.0, 404);

    let records = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "Account"}, "Name": "A"},
        {"attributes": {"type": "Account"}, "Nmae": "B"},
    ]});
    let rolled = call(&s, "POST", "/services/data/v62.0/composite/sobjects", Some(records)).1.unwrap();
    assert_eq!(rolled[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    assert!(s.find("Account", "Name", "A").is_none(), "rolled back");
    let none = call(&s, "DELETE", "/services/data/v62.0/composite/sobjects?ids=", None);
    let expected = fixtures::read_json("salesforce/restforce/composite_sobjects_destroy_bad_request_response.json");
    assert_eq!(none, (400, Some(expected)));
    let target =
        format!("/services/data/v62.0/composite/sobjects?ids={},0015g00000HkZzZ&allOrNone=true", seed::ACCOUNT_ID);
    let refused = call(&s, "DELETE", &target, None).1.unwrap();
    assert_eq!(refused[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    assert!(s.record("Account", seed::ACCOUNT_ID).is_some(), "rolled back");
}

#[test]
fn batch_runs_the_fixture_and_halts_on_error() {
    let s = sim();
    let request = fixtures::read_json("salesforce/composite/batch_request.json");
    let before = s.api_calls();
    let answer = call(&s, "POST", "/services/data/v62.0/composite/batch", Some(request)).1.unwrap();
    let statuses: Vec<u64> =
        answer["results"].as_array().unwrap().iter().map(|r| r["statusCode"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 204, 200]);
    assert_eq!(
        s.api_calls() - before,
        2,
        "each subrequest after the first counts (the batch itself was counted by auth)"
    );
    let halted = json!({"haltOnError": true, "batchRequests": [
        {"method": "GET", "url": "v62.0/sobjects/Account/0015g00000HkZzZ"},
        {"method": "GET", "url": format!("v62.0/sobjects/Account/{}", seed::ACCOUNT_ID)},
    ]});
    let answer = call(&s, "POST", "/services/data/v62.0/composite/batch", Some(halted)).1.unwrap();
    assert_eq!(answer, fixtures::read_json("salesforce/composite/batch_response_halted.json"));
}

#[test]
fn a_jwt_whose_exp_is_a_numeric_string_is_accepted() {
    let s = sim();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(TEST_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    let exp = (s.clock.now().as_second() + 180).to_string();
    let claims = json!({"iss": seed::CLIENT_ID, "sub": seed::INTEGRATION_USERNAME, "aud": "https://login.salesforce.com", "exp": exp});
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap();
    assert_eq!(s.verify_jwt(&jwt), Ok(()));
    let late = json!({"iss": seed::CLIENT_ID, "sub": seed::INTEGRATION_USERNAME, "aud": "https://login.salesforce.com", "exp": s.clock.now().as_second() + 600});
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &late, &key).unwrap();
    assert_eq!(s.verify_jwt(&jwt), Err(("invalid_grant", "invalid assertion")));
}

#[test]
fn updated_and_deleted_list_the_window_truncated_to_the_minute() {
    let s = sim();
    let now = s.clock.now().as_second();
    let minute = now - now.rem_euclid(60);
    let stamp = |secs: i64| Timestamp::from_second(secs).unwrap().to_string();
    let window = format!("start={}&end={}", stamp(minute - 300), stamp(minute + 120));
    let target =
        |kind: &str| format!("/services/data/v62.0/sobjects/Opportunity/{kind}?{}", window.replace('+', "%2B"));
    let updated = call(&s, "GET", &target("updated"), None).1.unwrap();
    assert_eq!(updated["ids"].as_array().unwrap().len(), 4, "{updated}");
    assert!(updated["latestDateCovered"].as_str().unwrap().ends_with(":00.000+0000"));
    assert_eq!(
        call(&s, "DELETE", &format!("/services/data/v62.0/sobjects/Opportunity/{}", seed::OPPORTUNITY_ID), None).0,
        204
    );
    let deleted = call(&s, "GET", &target("deleted"), None).1.unwrap();
    assert_eq!(deleted["deletedRecords"][0]["id"], seed::OPPORTUNITY_ID);
    assert_eq!(call(&s, "GET", &target("updated"), None).1.unwrap()["ids"].as_array().unwrap().len(), 3);
    let old = format!(
        "/services/data/v62.0/sobjects/Opportunity/updated?start={}&end={}",
        stamp(now - 40 * 86_400),
        stamp(now)
    );
    assert_eq!(code(&call(&s, "GET", &old, None)), "INVALID_REPLICATION_DATE");
}
