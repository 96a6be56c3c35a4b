"""simple-salesforce, unmodified, against the Salesforce simulator.

The client is redirected only through its documented `session=` argument: a `requests.Session`
whose transport sends the vendor hosts (login.salesforce.com, the org's My Domain, and the
instance host the token answer names) to the simulator. It covers what an operator's scripts do
with simple-salesforce: the login flows, SOQL (`query`, `query_more`, `query_all`) paging to the
end, sObject CRUD and external ids, sObject Collections, composite and batch, limits, describe,
and the refusals the real org answers (the client must raise the same exception classes)."""

import datetime
import json

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

import conftest

DOMAIN = "hktrading.my"  # simple-salesforce's `domain`: https://hktrading.my.salesforce.com
OPPORTUNITY = "0065g00000Qx1ZpAAJ"
ACCOUNT = "0015g00000HkAbCAAV"
VERSION = "62.0"


def routed(sim) -> requests.Session:
    """A session whose vendor hosts (and the instance host the token answer names) reach the sim."""
    router = conftest.HostRouter(
        {
            "login.salesforce.com": sim.base,
            "test.salesforce.com": sim.base,
            f"{DOMAIN}.salesforce.com": sim.base,
            sim.host_port: sim.base,
        }
    )
    session = requests.Session()
    for host in router.routes:
        session.mount(f"https://{host}/", router)
    return session


@pytest.fixture(scope="module")
def info(salesforce):
    return salesforce.info()


@pytest.fixture(scope="module")
def sf(salesforce, info):
    """Client-credentials login to the My Domain token URL (Basic auth, as simple-salesforce does)."""
    return Salesforce(
        consumer_key=info["client_id"],
        consumer_secret=info["client_secret"],
        domain=DOMAIN,
        version=VERSION,
        session=routed(salesforce),
    )


def error_code(exc) -> str:
    content = exc.value.content
    return (content[0] if isinstance(content, list) else content)["errorCode"]


def error_message(exc) -> str:
    content = exc.value.content
    return (content[0] if isinstance(content, list) else content)["message"]


# --- login flows ---------------------------------------------------------------------------


def test_client_credentials_login(sf, salesforce, info):
    assert sf.session_id.startswith(info["org_id"][:15] + "!")
    assert sf.sf_instance == info["my_domain"]
    token_calls = [r for r in salesforce.requests("/services/oauth2/token") if r["method"] == "POST"]
    assert token_calls, "the token endpoint was called"
    headers = {k.lower(): v for k, v in token_calls[-1]["headers"].items()}
    assert headers["authorization"].startswith("Basic ")
    org = sf.query("SELECT Id, Name, IsSandbox FROM Organization")
    assert org["records"][0]["Id"] == info["org_id"]
    assert sf.is_sandbox() is False


def test_jwt_bearer_login(salesforce, info):
    sf = Salesforce(
        username=info["username"],
        consumer_key=info["client_id"],
        privatekey=info["jwt_private_key_pem"],
        version=VERSION,
        session=routed(salesforce),
    )
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] >= 3


def test_username_password_login(salesforce, info):
    sf = Salesforce(
        username=info["username"],
        password=info["password"],
        consumer_key=info["client_id"],
        consumer_secret=info["client_secret"],
        version=VERSION,
        session=routed(salesforce),
    )
    assert sf.User.get(info["user_id"])["Username"] == info["username"]


def test_direct_session_and_bad_credentials(salesforce, info, sf):
    direct = Salesforce(instance_url=salesforce.base, session_id=sf.session_id, version=VERSION, session=routed(salesforce))
    assert direct.Account.get(ACCOUNT)["Name"] == "Kowloon Precision Components Ltd"

    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(consumer_key=info["client_id"], consumer_secret="wrong", domain=DOMAIN, session=routed(salesforce))
    assert exc.value.code == "invalid_client"
    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(consumer_key="unknown", consumer_secret="x", domain=DOMAIN, session=routed(salesforce))
    assert exc.value.code == "invalid_client_id"
    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(
            username=info["username"],
            password="wrong",
            consumer_key=info["client_id"],
            consumer_secret=info["client_secret"],
            session=routed(salesforce),
        )
    assert exc.value.code == "invalid_grant"
    with pytest.raises(SalesforceAuthenticationFailed) as exc:
        Salesforce(
            username="nobody@example.com",
            consumer_key=info["client_id"],
            privatekey=info["jwt_private_key_pem"],
            session=routed(salesforce),
        )
    assert exc.value.code == "invalid_grant"


def test_bad_token_is_an_expired_session_and_a_login_client_logs_in_again(salesforce, info):
    bogus = Salesforce(
        instance_url=salesforce.base, session_id=info["org_id"][:15] + "!bogus", version=VERSION, session=routed(salesforce)
    )
    with pytest.raises(SalesforceExpiredSession) as exc:
        bogus.query("SELECT Id FROM Account")
    assert error_code(exc) == "INVALID_SESSION_ID"

    sf = Salesforce(
        consumer_key=info["client_id"], consumer_secret=info["client_secret"], domain=DOMAIN, session=routed(salesforce)
    )
    first = sf.session_id
    sf.session_id = "00Dexpired!token"
    sf._generate_headers()  # what a dead session looks like to the client
    assert sf.query("SELECT Id FROM Account LIMIT 1")["totalSize"] == 1
    assert sf.session_id not in (first, "00Dexpired!token"), "the client minted a new token on 401"


# --- describe and limits -------------------------------------------------------------------


def test_describe_global_and_objects(sf):
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", "Contact", "Opportunity", "Task", "Event", "User", "OpportunityContactRole"} <= names

    assert sf.Opportunity.metadata()["objectDescribe"]["keyPrefix"] == "006"
    described = sf.Opportunity.describe()
    fields = {f["name"]: f for f in described["fields"]}
    stage = fields["StageName"]
    assert stage["type"] == "picklist" and stage["restrictedPicklist"] is True
    assert "Closed Won" in [p["value"] for p in stage["picklistValues"]]
    assert fields["AccountId"]["type"] == "reference"
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    assert fields["AccountId"]["relationshipName"] == "Account"
    assert fields["CloseDate"]["type"] == "date"
    assert fields["Amount"]["type"] == "currency"
    assert fields["SystemModstamp"]["type"] == "datetime" and fields["SystemModstamp"]["updateable"] is False
    children = {c["relationshipName"]: c for c in described["childRelationships"]}
    assert children["Tasks"]["childSObject"] == "Task" and children["Tasks"]["field"] == "WhatId"
    assert "OpportunityContactRoles" in children

    contact = {f["name"]: f for f in sf.Contact.describe()["fields"]}
    assert contact["Dingbridge_Id__c"]["externalId"] is True and contact["Dingbridge_Id__c"]["custom"] is True
    task = {f["name"]: f for f in sf.Task.describe()["fields"]}
    assert task["WhoId"]["relationshipName"] == "Who" and set(task["WhoId"]["referenceTo"]) == {"Contact", "Lead"}

    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Nope__c.describe()
    assert error_code(exc) == "NOT_FOUND"


def test_limits_and_usage_header(sf, info):
    limits = sf.limits()
    daily = limits["DailyApiRequests"]
    assert daily["Max"] == info["daily_api_limit"]
    assert 0 <= daily["Remaining"] < daily["Max"]
    assert {"DailyBulkApiBatches", "DataStorageMB"} <= set(limits)
    usage = sf.api_usage["api-usage"]
    assert usage.total == info["daily_api_limit"] and usage.used >= 1


# --- SOQL ----------------------------------------------------------------------------------


def test_soql_operators(sf):
    def names(soql):
        return [r["Name"] for r in sf.query_all(soql)["records"]]

    assert names("SELECT Name FROM Opportunity WHERE Amount > 1000000 ORDER BY Amount DESC") == [
        "Pearl River - PCB assembly line",
        "KPC - Q3 servo motor bulk order",
    ]
    assert names("SELECT Name FROM Opportunity WHERE Amount >= 380000 AND Amount <= 1250000 ORDER BY Name") == [
        "KPC - Q3 servo motor bulk order",
        "KPC - spare parts annual contract",
    ]
    assert len(names("SELECT Name FROM Opportunity WHERE StageName != 'Prospecting'")) == 3
    assert len(names("SELECT Name FROM Opportunity WHERE StageName <> 'Prospecting' AND Amount < 500000")) == 1
    assert names(
        "SELECT Name FROM Opportunity WHERE CurrencyIsoCode = 'USD' OR (CurrencyIsoCode = 'CNY' AND Probability < 50) "
        "ORDER BY Name"
    ) == ["Pacific Rim - cold chain sensors", "Pearl River - PCB assembly line"]
    assert names("SELECT Name FROM Opportunity WHERE StageName IN ('Prospecting', 'Qualification') ORDER BY Name") == [
        "Pacific Rim - cold chain sensors",
        "Pearl River - PCB assembly line",
    ]
    assert len(names("SELECT Name FROM Opportunity WHERE StageName NOT IN ('Prospecting', 'Qualification')")) == 2
    assert names("SELECT Name FROM Account WHERE Name LIKE 'pacific%'") == ["Pacific Rim Logistics Inc"]
    assert names("SELECT Name FROM Account WHERE NOT Name LIKE '%Ltd' ORDER BY Name LIMIT 1") == [
        "Pacific Rim Logistics Inc"
    ]
    assert names("SELECT Name FROM Opportunity WHERE CloseDate < 2025-10-01") == ["KPC - Q3 servo motor bulk order"]
    assert names("SELECT Name FROM Opportunity WHERE NextStep = null ORDER BY Name LIMIT 2 OFFSET 1") == [
        "Pacific Rim - cold chain sensors",
        "Pearl River - PCB assembly line",
    ]
    assert names("SELECT Name FROM Account WHERE name = 'KOWLOON PRECISION COMPONENTS LTD'") == [
        "Kowloon Precision Components Ltd"
    ], "text equality ignores case"


def test_soql_date_literals(sf):
    today = datetime.datetime.now(datetime.timezone.utc).date()  # the org's dates are UTC
    recent = sf.Opportunity.create(
        {"Name": "Date literal recent", "StageName": "Prospecting", "CloseDate": str(today - datetime.timedelta(days=5))}
    )
    sf.Opportunity.create(
        {"Name": "Date literal old", "StageName": "Prospecting", "CloseDate": str(today - datetime.timedelta(days=60))}
    )
    rows = sf.query("SELECT Id FROM Opportunity WHERE Name LIKE 'Date literal%' AND CloseDate = LAST_N_DAYS:30")
    assert [r["Id"] for r in rows["records"]] == [recent["id"]]
    assert sf.query("SELECT COUNT() FROM Opportunity WHERE Name LIKE 'Date literal%' AND CloseDate < LAST_N_DAYS:30")[
        "totalSize"
    ] == 1
    created_today = sf.query("SELECT COUNT() FROM Opportunity WHERE Name LIKE 'Date literal%' AND CreatedDate = TODAY")
    assert created_today["totalSize"] == 2
    stamp = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    since = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sf.query(f"SELECT COUNT() FROM Opportunity WHERE SystemModstamp > {since} AND Name LIKE 'Date%'")[
        "totalSize"
    ] == 2


def test_soql_relationships_subqueries_and_count(sf):
    rows = sf.query(
        "SELECT Name, Account.Name, Owner.Name, (SELECT Subject FROM Tasks ORDER BY ActivityDate DESC), "
        "(SELECT Role, Contact.Name FROM OpportunityContactRoles) "
        f"FROM Opportunity WHERE Id = '{OPPORTUNITY}'"
    )["records"]
    deal = rows[0]
    assert deal["Account"]["Name"] == "Kowloon Precision Components Ltd"
    assert deal["Account"]["attributes"]["type"] == "Account"
    assert deal["Owner"]["Name"] == "Chan Tai Man"
    assert [t["Subject"] for t in deal["Tasks"]["records"]] == ["Send revised quote", "Call: pricing follow-up"]
    assert deal["OpportunityContactRoles"]["records"][0]["Contact"]["Name"] == "Ka Yan Wong"
    none = sf.query("SELECT Name, (SELECT Id FROM Tasks) FROM Opportunity WHERE StageName = 'Prospecting' LIMIT 1")
    assert none["records"][0]["Tasks"] is None, "no children is null, not an empty list"

    by_parent = sf.query("SELECT Name FROM Opportunity WHERE Account.Name = 'Kowloon Precision Components Ltd'")
    assert by_parent["totalSize"] == 2
    count = sf.query("SELECT COUNT() FROM Contact")
    assert count["totalSize"] >= 2 and count["records"] == []
    aggregate = sf.query("SELECT COUNT(Id) FROM Opportunity WHERE Amount > 1000000")["records"][0]
    assert aggregate["attributes"]["type"] == "AggregateResult" and aggregate["expr0"] == 2

    # The gateway's keyset poll: OR with parentheses over SystemModstamp and Id.
    first = sf.query("SELECT Id, SystemModstamp FROM Opportunity ORDER BY SystemModstamp, Id LIMIT 1")["records"][0]
    stamp = first["SystemModstamp"].removesuffix("+0000") + "Z"  # a SOQL datetime literal
    after = sf.query_all(
        f"SELECT Id, SystemModstamp FROM Opportunity WHERE SystemModstamp > {stamp} "
        f"OR (SystemModstamp = {stamp} AND Id > '{first['Id']}') ORDER BY SystemModstamp, Id LIMIT 2000"
    )
    total = sf.query("SELECT COUNT() FROM Opportunity")["totalSize"]
    assert after["totalSize"] == total - 1 and first["Id"] not in [r["Id"] for r in after["records"]]


def test_query_paging_to_the_end(sf, info):
    page = info["batch_size"]
    wanted = page + 150
    for start in range(0, wanted, 200):
        batch = [
            {"attributes": {"type": "Account"}, "Name": f"Paging {n:05d}", "Industry": "Shipping"}
            for n in range(start, min(start + 200, wanted))
        ]
        results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": batch})
        assert all(r["success"] for r in results)
    soql = "SELECT Id, Name FROM Account WHERE Name LIKE 'Paging%' ORDER BY Name"
    first = sf.query(soql)
    assert first["totalSize"] == wanted and first["done"] is False
    assert len(first["records"]) == page
    assert first["nextRecordsUrl"].startswith(f"/services/data/v{VERSION}/query/")
    last = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert last["done"] is True and "nextRecordsUrl" not in last
    assert len(last["records"]) == wanted - page
    assert last["records"][-1]["Name"] == f"Paging {wanted - 1:05d}"
    # The locator form (`<locator>-<offset>`) works on its own too.
    again = sf.query(soql)
    locator = again["nextRecordsUrl"].rsplit("/", 1)[1]
    assert len(sf.query_more(locator)["records"]) == wanted - page

    everything = sf.query_all(soql)
    names = [r["Name"] for r in everything["records"]]
    assert len(names) == wanted and names == sorted(names) and len(set(names)) == wanted
    assert sum(1 for _ in sf.query_all_iter(soql)) == wanted
    # A smaller batch on request (Sforce-Query-Options), every page through query_more.
    options = {"Sforce-Query-Options": "batchSize=500"}
    small = sf.query(soql, headers=options)
    pages = [small]
    while not pages[-1]["done"]:
        pages.append(sf.query_more(pages[-1]["nextRecordsUrl"], identifier_is_url=True, headers=options))
    expected = [500] * (wanted // 500) + ([wanted % 500] if wanted % 500 else [])
    assert [len(p["records"]) for p in pages] == expected
    shipping = sf.query("SELECT COUNT() FROM Account WHERE Industry = 'Shipping'")
    assert shipping["totalSize"] == wanted


def test_query_all_returns_deleted_rows(sf):
    doomed = sf.Account.create({"Name": "Recycle bin Ltd"})["id"]
    assert sf.Account.delete(doomed) == 204
    soql = "SELECT Id, IsDeleted FROM Account WHERE Name = 'Recycle bin Ltd'"
    assert sf.query(soql)["totalSize"] == 0
    rows = sf.query_all(soql, include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in rows] == [(doomed, True)]


def test_updated_and_deleted_resources(sf):
    now = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(minutes=2)
    fresh = sf.Opportunity.create({"Name": "Replication", "StageName": "Prospecting", "CloseDate": "2026-01-31"})["id"]
    updated = sf.Opportunity.updated(start, end)
    assert fresh in updated["ids"]
    assert updated["latestDateCovered"] == end.strftime("%Y-%m-%dT%H:%M:00.000+0000")
    sf.Opportunity.delete(fresh)
    deleted = sf.Opportunity.deleted(start, end)
    assert [d["id"] for d in deleted["deletedRecords"]] == [fresh]
    assert deleted["deletedRecords"][0]["deletedDate"].endswith("+0000")
    assert fresh not in sf.Opportunity.updated(start, end)["ids"]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Opportunity.updated(now - datetime.timedelta(days=40), now)
    assert error_code(exc) == "INVALID_REPLICATION_DATE"


def test_query_refusals(sf, fixtures):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id FROM Account WHERE")
    assert error_code(exc) == "MALFORMED_QUERY"
    assert error_message(exc).endswith("unexpected token: <EOF>")
    for bad in [
        "SELEC Id FROM Account",
        "SELECT Id FROM Account WHERE Name = 'a' OR Name = 'b' AND Industry = 'c'",
        "SELECT Id FROM Account WHERE Name == 'a'",
        "SELECT Id FROM Account LIMIT ten",
    ]:
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.query(bad)
        assert error_code(exc) == "MALFORMED_QUERY", bad

    # Fixture errors/malformed_query_400.json: byte for byte.
    expected = json.loads((fixtures / "salesforce/errors/malformed_query_400.json").read_text())
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.query("SELECT Id, Nmae FROM Opportunity")
    assert exc.value.status == 400 and exc.value.content == expected

    for soql, code, text in [
        ("SELECT Id FROM Opportunity WHERE Bogus__c = 'x'", "INVALID_FIELD", "No such column 'Bogus__c' on entity 'Opportunity'"),
        ("SELECT Id, Account.Nmae FROM Opportunity", "INVALID_FIELD", "No such column 'Nmae' on entity 'Account'"),
        ("SELECT Id, Boss.Name FROM Opportunity", "INVALID_FIELD", "Didn't understand relationship 'Boss'"),
        ("SELECT Id FROM Opportunity ORDER BY Nmae", "INVALID_FIELD", "No such column 'Nmae'"),
        ("SELECT Id FROM Nope__c", "INVALID_TYPE", "sObject type 'Nope__c' is not supported"),
        ("SELECT Id, (SELECT Id FROM Things) FROM Opportunity", "INVALID_TYPE", "Didn't understand relationship 'Things'"),
    ]:
        with pytest.raises(SalesforceMalformedRequest) as exc:
            sf.query(soql)
        assert error_code(exc) == code, soql
        assert text in error_message(exc), soql
        assert "ERROR at Row:1:Column:" in error_message(exc), soql


# --- sObject CRUD --------------------------------------------------------------------------


def test_sobject_crud(sf):
    created = sf.Account.create({"Name": "Tsuen Wan Metalworks", "Industry": "Machinery", "BillingCity": "Tsuen Wan"})
    assert created["success"] is True and created["id"].startswith("001") and len(created["id"]) == 18
    account = sf.Account.get(created["id"])
    assert account["Name"] == "Tsuen Wan Metalworks" and account["attributes"]["type"] == "Account"
    assert account["SystemModstamp"].endswith("+0000")
    assert sf.Account.update(created["id"], {"Phone": "+852 2411 0000", "Industry": None}) == 204
    again = sf.Account.get(created["id"])
    assert again["Phone"] == "+852 2411 0000" and again["Industry"] is None
    assert sf.Account.get(created["id"][:15])["Id"] == created["id"], "a 15-character id reads the record"

    contact = sf.Contact.create({"LastName": "Lau", "FirstName": "Mei", "AccountId": created["id"]})
    assert sf.Contact.get(contact["id"])["Name"] == "Mei Lau"
    assert sf.Contact.delete(contact["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Contact.get(contact["id"])
    assert error_code(exc) == "ENTITY_IS_DELETED"

    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Account.get("0015g00000HkZzZAAV")
    assert error_code(exc) == "NOT_FOUND"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.get("not-an-id")
    assert error_code(exc) == "MALFORMED_ID"


def test_external_ids_and_upsert(sf):
    found = sf.Contact.get_by_custom_id("Dingbridge_Id__c", "dt-user-0001")
    assert found["Id"] == "0035g00000Lm9TqAAJ" and found["LastName"] == "Wong"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get_by_custom_id("Dingbridge_Id__c", "dt-user-none")
    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Contact.get_by_custom_id("Email", "ky.wong@kpc.example")
    assert "Provided external ID field does not exist or is not accessible: Email" in error_message(exc)

    created = sf.Contact.upsert("Dingbridge_Id__c/dt-user-0500", {"LastName": "Yip", "Email": "yip@kpc.example"}, raw_response=True)
    assert created.status_code == 201 and created.json()["created"] is True
    updated = sf.Contact.upsert("Dingbridge_Id__c/dt-user-0500", {"Title": "Buyer"}, raw_response=True)
    assert updated.status_code == 200 and updated.json() == {
        "id": created.json()["id"],
        "success": True,
        "errors": [],
        "created": False,
    }
    assert sf.Contact.get_by_custom_id("Dingbridge_Id__c", "dt-user-0500")["Title"] == "Buyer"

    with pytest.raises(SalesforceResourceNotFound) as exc:
        sf.Contact.upsert("LastName/Yip", {"Title": "x"})
    assert error_code(exc) == "NOT_FOUND"

    # Two records share an external id: the lookup answers 300 with both URLs.
    sf.Contact.create({"LastName": "Twin A", "Dingbridge_Id__c": "dt-twin"})
    sf.Contact.create({"LastName": "Twin B", "Dingbridge_Id__c": "dt-twin"})
    with pytest.raises(SalesforceMoreThanOneRecord) as exc:
        sf.Contact.get_by_custom_id("Dingbridge_Id__c", "dt-twin")
    assert len(exc.value.content) == 2


def test_write_refusals(sf):
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Account.create({"Name": "x", "Nmae": "typo"})
    assert error_code(exc) == "INVALID_FIELD"
    assert error_message(exc) == "No such column 'Nmae' on sobject of type Account"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Opportunity.update(OPPORTUNITY, {"Bogus__c": 1})
    assert error_code(exc) == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Opportunity.update(OPPORTUNITY, {"StageName": "Won"})
    assert exc.value.content == [
        {
            "message": "Stage: bad value for restricted picklist field: Won",
            "errorCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "fields": ["StageName"],
        }
    ]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Opportunity.create({"Name": "No close date", "StageName": "Prospecting"})
    assert exc.value.content == [
        {"message": "Required fields are missing: [CloseDate]", "errorCode": "REQUIRED_FIELD_MISSING", "fields": ["CloseDate"]}
    ]
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Opportunity.update(OPPORTUNITY, {"IsWon": True})
    assert error_code(exc) == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.Task.create({"Subject": "x", "WhatId": "0065g00000Qx1Zz"})
    assert error_code(exc) == "FIELD_INTEGRITY_EXCEPTION"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Nope__c.create({"Name": "x"})


# --- sObject Collections, composite, batch -------------------------------------------------


def test_collections(sf):
    def create(all_or_none, records):
        return sf.restful("composite/sobjects", method="POST", json={"allOrNone": all_or_none, "records": records})

    good = {"attributes": {"type": "Account"}, "Name": "Collections Alpha"}
    bad = {"attributes": {"type": "Account"}, "Nmae": "Collections Beta"}
    rolled = create(True, [good, bad])
    assert rolled[0]["success"] is False
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert rolled[1]["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert sf.query("SELECT COUNT() FROM Account WHERE Name LIKE 'Collections%'")["totalSize"] == 0

    partial = create(False, [good, bad, {"attributes": {"type": "Contact"}, "LastName": "Collections Chan"}])
    assert [r["success"] for r in partial] == [True, False, True]
    account_id, contact_id = partial[0]["id"], partial[2]["id"]

    updated = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Account"}, "id": account_id, "Rating": "Hot"},
                {"attributes": {"type": "Opportunity"}, "id": "0065g00000Qx1Zz", "StageName": "Closed Won"},
            ],
        },
    )
    assert updated[0] == {"id": account_id, "success": True, "errors": []}
    assert updated[1]["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert sf.Account.get(account_id)["Rating"] == "Hot"

    upserted = sf.restful(
        "composite/sobjects/Contact/Dingbridge_Id__c",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Contact"}, "Dingbridge_Id__c": "dt-user-0001", "Title": "Plant Manager"},
                {"attributes": {"type": "Contact"}, "Dingbridge_Id__c": "dt-user-0700", "LastName": "Ng"},
            ],
        },
    )
    assert [(r["success"], r["created"]) for r in upserted] == [(True, False), (True, True)]
    assert sf.Contact.get("0035g00000Lm9TqAAJ")["Title"] == "Plant Manager"

    retrieved = sf.restful(
        "composite/sobjects/Contact",
        params={"ids": f"0035g00000Lm9TqAAJ,{contact_id}", "fields": "LastName,Title"},
    )
    assert [r["LastName"] for r in retrieved] == ["Wong", "Collections Chan"]

    missing = "0015g00000HkZzZAAV"
    refused = sf.restful("composite/sobjects", method="DELETE", params={"ids": f"{account_id},{missing}", "allOrNone": "true"})
    assert [r["success"] for r in refused] == [False, False]
    assert refused[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert sf.Account.get(account_id)["Name"] == "Collections Alpha", "rolled back"
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": f"{account_id},{contact_id},{missing}"})
    assert [r["success"] for r in deleted] == [True, True, False]
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get(account_id)
    with pytest.raises(SalesforceMalformedRequest) as exc:
        sf.restful("composite/sobjects", method="DELETE", params={"ids": ""})
    assert error_code(exc) == "REQUIRED_FIELD_MISSING"


def test_composite(sf, fixtures):
    request = json.loads((fixtures / "salesforce/composite/composite_request.json").read_text())
    expected = json.loads((fixtures / "salesforce/composite/composite_response.json").read_text())
    answer = sf.restful("composite", method="POST", json=request)["compositeResponse"]
    assert [(a["referenceId"], a["httpStatusCode"]) for a in answer] == [
        (e["referenceId"], e["httpStatusCode"]) for e in expected["compositeResponse"]
    ]
    assert answer[2]["body"]["IsWon"] is True
    assert answer[3]["body"]["Subject"] == "Marked won from DingTalk"

    # The same with a bad WhatId: everything rolls back (composite_response_allornone_failure.json).
    failing = json.loads(json.dumps(request))
    failing["compositeRequest"][0]["body"] = {"StageName": "Negotiation/Review"}
    failing["compositeRequest"][1]["body"]["WhatId"] = "0065g00000Qx1Zz"
    expected = json.loads((fixtures / "salesforce/composite/composite_response_allornone_failure.json").read_text())
    answer = sf.restful("composite", method="POST", json=failing)["compositeResponse"]
    assert [(a["httpStatusCode"], a["body"][0]["errorCode"]) for a in answer] == [
        (e["httpStatusCode"], e["body"][0]["errorCode"]) for e in expected["compositeResponse"]
    ]
    assert answer[1]["body"] == expected["compositeResponse"][1]["body"]
    assert answer[3]["body"] == expected["compositeResponse"][3]["body"]
    assert sf.Opportunity.get(OPPORTUNITY)["StageName"] == "Closed Won", "the failed request changed nothing"


def test_batch(sf, fixtures):
    request = json.loads((fixtures / "salesforce/composite/batch_request.json").read_text())
    answer = sf.restful("composite/batch", method="POST", json=request)
    assert answer["hasErrors"] is False
    assert [r["statusCode"] for r in answer["results"]] == [200, 204, 200]
    assert answer["results"][0]["result"]["Name"] == "Kowloon Precision Components Ltd"
    tasks = sf.query(f"SELECT COUNT() FROM Task WHERE WhatId = '{OPPORTUNITY}'")["totalSize"]
    assert answer["results"][2]["result"]["totalSize"] == min(tasks, 5)
    assert sf.Opportunity.get(OPPORTUNITY)["NextStep"] == "Quote v3 sent"

    halted = sf.restful(
        "composite/batch",
        method="POST",
        json={
            "haltOnError": True,
            "batchRequests": [
                {"method": "GET", "url": f"v{VERSION}/sobjects/Account/0015g00000HkZzZAAV"},
                {"method": "GET", "url": f"v{VERSION}/sobjects/Account/{ACCOUNT}"},
            ],
        },
    )
    assert halted["hasErrors"] is True
    assert [r["statusCode"] for r in halted["results"]] == [404, 412]
    assert halted["results"][1]["result"][0]["errorCode"] == "BATCH_PROCESSING_HALTED"


# --- quota ---------------------------------------------------------------------------------


def test_daily_quota_exhausted(sf, salesforce, info):
    used = sf.limits()["DailyApiRequests"]
    spent = used["Max"] - used["Remaining"]
    # Every call so far (this limits call included) has used the allocation up.
    salesforce.put_record("limits", {"daily": spent})
    try:
        with pytest.raises(SalesforceRefusedRequest) as exc:
            sf.query("SELECT Id FROM Account LIMIT 1")
        assert exc.value.status == 403
        assert exc.value.content == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    finally:
        salesforce.put_record("limits", {"daily": info["daily_api_limit"]})
    assert sf.query("SELECT Id FROM Account LIMIT 1")["totalSize"] == 1
