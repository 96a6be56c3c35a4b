"""NetSuite: `requests-oauthlib` TBA (OAuth 1.0a, HMAC-SHA256, realm = account id) and the OAuth 2.0
client-credentials flow with a PyJWT assertion, against `dingbridge sim`'s NetSuite.

The clients are pointed at the simulator by their base URL (the URL they sign, so the signature the
simulator rebuilds covers exactly the URL the client sent), or keep the account's real
`https://1234567.suitetalk.api.netsuite.com` URL behind `conftest.HostRouter` (the simulator also
accepts a signature over that URL). Covered: the fixture's TBA vectors,
record list pages followed by `links` to the end (with `q`), get collapsed / `expandSubResources`,
create (204 + Location), PATCH (body fields, sublist merge and `replace=`), delete, `!transform`,
SuiteQL paging
to the end, and the refusals: bad signature, nonce replay, stale timestamp, unknown record, unknown
record type, unknown field, missing permission, malformed SuiteQL, missing `Prefer: transient`,
and the account's concurrency limit."""

import json
import threading
import time
import uuid

import conftest
import jwt
import pytest
import requests
from oauthlib.oauth1 import SIGNATURE_HMAC_SHA256, Client
from requests_oauthlib import OAuth1


@pytest.fixture(scope="module")
def ns(netsuite):
    info = netsuite.info()
    return {"sim": netsuite, "info": info, "rest": netsuite.base + "/services/rest"}


def tba(info, **kwargs):
    return OAuth1(
        info["consumer_key"],
        client_secret=info["consumer_secret"],
        resource_owner_key=info["token_id"],
        resource_owner_secret=info["token_secret"],
        signature_method="HMAC-SHA256",
        realm=info["account"],
        **kwargs,
    )


@pytest.fixture(scope="module")
def session(ns):
    s = requests.Session()
    s.auth = tba(ns["info"])
    s.headers["Accept"] = "application/json"
    return s


def details(response):
    body = response.json()
    assert response.headers["Content-Type"].startswith("application/vnd.oracle.resource+json; type=error")
    return body["o:errorDetails"][0]


def strip_links(value):
    if isinstance(value, dict):
        return {k: strip_links(v) for k, v in value.items() if k != "links"}
    if isinstance(value, list):
        return [strip_links(v) for v in value]
    return value


def test_oauthlib_signs_the_fixture_vectors_byte_for_byte(fixtures):
    vectors = json.loads((fixtures / "netsuite" / "tba_signature_vectors.json").read_text())
    creds = vectors["credentials"]
    for v in [v for v in vectors["vectors"] if "request_url" in v]:
        client = Client(
            creds["consumer_key"],
            client_secret=creds["consumer_secret"],
            resource_owner_key=creds["token_id"],
            resource_owner_secret=creds["token_secret"],
            signature_method=SIGNATURE_HMAC_SHA256,
            realm=v["account_id_realm"],
            nonce=v["oauth_nonce"],
            timestamp=v["oauth_timestamp"],
        )
        headers = {"Content-Type": v["content_type"]} if v["content_type"] else {}
        # requests-oauthlib signs a JSON request without its body (no oauth_body_hash), as here.
        _, signed, _ = client.sign(v["request_url"], v["http_method"], None, headers)
        assert f'oauth_signature="{v["expected_oauth_signature"].replace("=", "%3D").replace("+", "%2B").replace("/", "%2F")}"' in signed["Authorization"], v["name"]


def test_tba_record_list_pages_follow_next_to_the_end(ns, session):
    url = ns["rest"] + "/record/v1/purchaseOrder"
    page = session.get(url, params={"limit": 2, "offset": 0})
    page.raise_for_status()
    assert page.headers["Content-Type"] == "application/vnd.oracle.resource+json; type=collection"
    body = page.json()
    assert body["totalResults"] == 4 and body["count"] == 2 and body["hasMore"] is True
    ids = [item["id"] for item in body["items"]]
    pages = 1
    while body["hasMore"]:
        nxt = next(link["href"] for link in body["links"] if link["rel"] == "next")
        # The client follows the href as it is: the signed URL is the sent URL.
        body = session.get(nxt).json()
        ids += [item["id"] for item in body["items"]]
        pages += 1
    assert ids == ["4705", "4709", "4711", "4712"] and pages == 2
    assert not any(link["rel"] == "next" for link in body["links"])
    assert {link["rel"] for link in body["links"]} >= {"previous", "first", "last", "self"}


def test_tba_signed_for_the_real_account_host_through_a_transport_adapter(ns):
    # A script written for production keeps its NetSuite URL; the adapter sends it to the simulator
    # and the signature covers the real URL, as against NetSuite.
    host = f"{ns['info']['account'].lower().replace('_', '-')}.suitetalk.api.netsuite.com"
    s = requests.Session()
    s.mount(f"https://{host}/", conftest.HostRouter({host: ns["sim"].base}))
    s.auth = tba(ns["info"])
    answer = s.get(f"https://{host}/services/rest/record/v1/purchaseOrder/4711")
    assert answer.status_code == 200 and answer.json()["tranId"] == "PO000812"
    ql = s.post(f"https://{host}/services/rest/query/v1/suiteql", params={"limit": 1},
                json={"q": "SELECT id FROM transaction WHERE type = 'PurchOrd' ORDER BY id"}, headers={"Prefer": "transient"})
    assert ql.status_code == 200 and ql.json()["items"][0]["id"] == "4705"


def test_record_list_q_filters_with_the_reference_operators(ns, session):
    url = ns["rest"] + "/record/v1/purchaseOrder"
    pending = session.get(url, params={"q": "approvalStatus ANY_OF [1]"}).json()
    assert [i["id"] for i in pending["items"]] == ["4711", "4712"]
    one = session.get(url, params={"q": 'tranId IS "PO000812"'}).json()
    assert [i["id"] for i in one["items"]] == ["4711"]
    recent = session.get(url, params={"q": 'lastModifiedDate ON_OR_AFTER "15/3/2024" AND approvalStatus ANY_OF [1, 2]'}).json()
    assert [i["id"] for i in recent["items"]] == ["4711", "4712"]
    bad = session.get(url, params={"q": "bogusField ANY_OF [2]"})
    assert bad.status_code == 400
    d = details(bad)
    assert d["o:errorCode"] == "INVALID_PARAMETER" and d["o:errorQueryParam"] == "q"
    assert "Unknown identifier 'bogusField'" in d["detail"]
    syntax = session.get(url, params={"q": 'tranId = "PO000812"'})
    assert syntax.status_code == 400 and details(syntax)["o:errorCode"] == "INVALID_PARAMETER"
    with pytest.raises(requests.HTTPError):
        syntax.raise_for_status()


def test_get_collapsed_and_expanded_match_the_fixtures(ns, session, fixtures):
    url = ns["rest"] + "/record/v1/purchaseOrder/4711"
    collapsed = session.get(url)
    assert collapsed.headers["Content-Type"] == "application/vnd.oracle.resource+json; type=singular"
    collapsed = collapsed.json()
    fixture = json.loads((fixtures / "netsuite" / "purchaseOrder_get_default.json").read_text())
    assert set(collapsed["item"]) == {"links"} and set(collapsed["expense"]) == {"links"}
    for field in ["tranId", "tranDate", "lastModifiedDate", "total", "memo", "approvalStatus", "entity", "currency"]:
        assert strip_links(collapsed[field]) == strip_links(fixture[field]), field
    expanded = session.get(url, params={"expandSubResources": "true"}).json()
    lines = expanded["item"]["items"]
    assert expanded["item"]["totalResults"] == 2
    fixture_x = json.loads((fixtures / "netsuite" / "purchaseOrder_get_expanded.json").read_text())
    for ours, theirs in zip(lines, fixture_x["item"]["items"]):
        for field in ["line", "item", "quantity", "rate", "amount", "units"]:
            assert strip_links(ours[field]) == strip_links(theirs[field]), field


def test_create_patch_sublists_and_delete_are_visible_on_re_read(ns, session):
    base = ns["rest"] + "/record/v1/purchaseOrder"
    strict = {"X-NetSuite-PropertyNameValidation": "error", "X-NetSuite-Idempotency-Key": str(uuid.uuid4())}
    body = {
        "entity": {"id": "1335"},
        "subsidiary": {"id": "2"},
        "currency": {"id": "5"},
        "location": {"id": "3"},
        "memo": "Created by the conformance suite",
        "item": {"items": [{"item": {"id": "501"}, "quantity": 1200, "rate": 0.85}]},
    }
    created = session.post(base, json=body, headers=strict)
    assert created.status_code == 204 and created.content == b""
    location = created.headers["Location"]
    new_id = location.rsplit("/", 1)[1]
    assert location.lower().endswith(f"/record/v1/purchaseorder/{new_id}") and new_id.isdigit()
    record = session.get(f"{base}/{new_id}", params={"expandSubResources": "true"}).json()
    assert record["memo"] == body["memo"] and record["approvalStatus"]["id"] == "1"
    assert [(l["line"], l["quantity"]) for l in record["item"]["items"]] == [(1, 1200)]

    patched = session.patch(f"{base}/{new_id}", json={"memo": "edited", "item": {"items": [
        {"line": 1, "quantity": 1300}, {"item": {"id": "502"}, "quantity": 5, "rate": 18.4}]}}, headers=strict)
    assert patched.status_code == 204
    record = session.get(f"{base}/{new_id}", params={"expandSubResources": "true"}).json()
    assert record["memo"] == "edited"
    assert [(l["line"], l["quantity"]) for l in record["item"]["items"]] == [(1, 1300), (2, 5)]

    replaced = session.patch(f"{base}/{new_id}", params={"replace": "item"},
                             json={"item": {"items": [{"item": {"id": "502"}, "quantity": 9, "rate": 18.4}]}})
    assert replaced.status_code == 204
    record = session.get(f"{base}/{new_id}", params={"expandSubResources": "true"}).json()
    assert [(l["line"], l["item"]["id"], l["quantity"]) for l in record["item"]["items"]] == [(1, "502", 9)]

    approve = session.patch(f"{base}/{new_id}", json={"approvalStatus": {"id": "2"}})
    assert approve.status_code == 204
    assert session.get(f"{base}/{new_id}").json()["approvalStatus"]["refName"] == "Approved"

    assert session.delete(f"{base}/{new_id}").status_code == 204
    gone = session.get(f"{base}/{new_id}")
    assert gone.status_code == 404 and details(gone)["o:errorCode"] == "NONEXISTENT_ID"


def test_transform_a_sales_order_into_a_fulfillment(ns, session):
    rest = ns["rest"]
    # The body of the reference's exchange 6.
    body = {"shipStatus": {"id": "C"}, "item": {"items": [{"orderLine": 1, "quantity": 5, "itemReceive": True}]}}
    made = session.post(rest + "/record/v1/salesOrder/5140/!transform/itemFulfillment", json=body)
    assert made.status_code == 204
    new_id = made.headers["Location"].rsplit("/", 1)[1]
    fulfillment = session.get(rest + f"/record/v1/itemFulfillment/{new_id}", params={"expandSubResources": "true"}).json()
    assert fulfillment["createdFrom"]["id"] == "5140" and fulfillment["shipStatus"]["id"] == "C"
    assert [(l["orderLine"], l["quantity"]) for l in fulfillment["item"]["items"]] == [(1, 5)]


def test_refusals_answer_netsuites_error_bodies(ns, session, fixtures):
    rest = ns["rest"]
    missing = session.get(rest + "/record/v1/purchaseOrder/999999")
    assert missing.status_code == 404
    assert missing.json() == json.loads((fixtures / "netsuite" / "error_404_nonexistent_id.json").read_text())
    unknown_type = session.get(rest + "/record/v1/notARecordType/1")
    assert unknown_type.status_code == 404
    no_permission = session.get(rest + "/record/v1/customer/1")
    assert no_permission.status_code == 400
    assert no_permission.json() == json.loads((fixtures / "netsuite" / "error_400_user_error_permission.json").read_text())
    unknown_field = session.post(rest + "/record/v1/purchaseOrder", json={"memo": "x", "bogusField": 1},
                                 headers={"X-NetSuite-PropertyNameValidation": "error"})
    assert unknown_field.status_code == 400
    assert details(unknown_field)["o:errorPath"] == "bogusField"
    decided = session.patch(rest + "/record/v1/purchaseOrder/4709", json={"approvalStatus": {"id": "3"}})
    assert decided.status_code == 400 and details(decided)["o:errorCode"] == "USER_ERROR"


def test_bad_signature_replayed_nonce_and_stale_timestamp_are_invalid_login(ns, fixtures):
    info = ns["info"]
    url = ns["rest"] + "/record/v1/purchaseOrder/4711"
    fixture = json.loads((fixtures / "netsuite" / "error_401_invalid_login.json").read_text())
    wrong = dict(info, token_secret="not-the-secret")
    bad = requests.get(url, auth=tba(wrong))
    assert bad.status_code == 401 and bad.json() == fixture
    wrong_realm = requests.get(url, auth=tba(dict(info, account="7654321")))
    assert wrong_realm.status_code == 401
    nonce = uuid.uuid4().hex
    first = requests.get(url, auth=tba(info, nonce=nonce, timestamp=str(int(time.time()))))
    assert first.status_code == 200
    replay = requests.get(url, auth=tba(info, nonce=nonce, timestamp=str(int(time.time()))))
    assert replay.status_code == 401 and replay.json() == fixture
    stale = requests.get(url, auth=tba(info, timestamp=str(int(time.time()) - 3600)))
    assert stale.status_code == 401


def client_assertion(info, token_url, **overrides):
    now = int(time.time())
    claims = {"iss": info["client_id"], "scope": ["rest_webservices", "restlets"], "aud": token_url,
              "iat": now, "exp": now + 3600}
    claims.update(overrides)
    return jwt.encode(claims, info["jwt_private_key_pem"], algorithm="ES256",
                      headers={"kid": info["certificate_id"], "typ": "JWT"})


def test_oauth2_client_credentials_with_a_jwt_assertion(ns):
    info = ns["info"]
    token_url = ns["rest"] + "/auth/oauth2/v1/token"
    form = {"grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(info, token_url)}
    answer = requests.post(token_url, data=form)
    answer.raise_for_status()
    token = answer.json()
    assert token["token_type"] == "bearer" and token["expires_in"] == "3600"
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    po = requests.get(ns["rest"] + "/record/v1/purchaseOrder/4711", headers=bearer)
    assert po.status_code == 200 and po.json()["tranId"] == "PO000812"
    ql = requests.post(ns["rest"] + "/query/v1/suiteql", headers={**bearer, "Prefer": "transient"},
                       json={"q": "SELECT id FROM transaction WHERE type = 'SalesOrd' ORDER BY id"})
    assert [r["id"] for r in ql.json()["items"]] == ["5120", "5140"]
    # A foreign audience, a too long life and a wrong key id are refused.
    for bad in [client_assertion(info, "https://elsewhere.example/token"),
                client_assertion(info, token_url, exp=int(time.time()) + 7200),
                jwt.encode({"iss": info["client_id"], "aud": token_url, "scope": ["rest_webservices"],
                            "iat": int(time.time()), "exp": int(time.time()) + 600},
                           info["jwt_private_key_pem"], algorithm="ES256", headers={"kid": "c.other"})]:
        refused = requests.post(token_url, data=dict(form, client_assertion=bad))
        assert refused.status_code == 400 and "error" in refused.json()
    assert requests.get(ns["rest"] + "/record/v1/purchaseOrder/4711",
                        headers={"Authorization": "Bearer not-a-token"}).status_code == 401


def test_suiteql_pages_to_the_end_and_refuses_what_netsuite_refuses(ns, session, fixtures):
    url = ns["rest"] + "/query/v1/suiteql"
    q = ("SELECT t.id, t.tranid, t.status, t.approvalstatus, t.foreigntotal, t.lastmodifieddate FROM transaction t "
         "WHERE t.type = 'PurchOrd' AND t.lastmodifieddate >= TO_DATE('2024-03-11','YYYY-MM-DD') ORDER BY t.id")
    page = session.post(url, params={"limit": 2, "offset": 0}, json={"q": q}, headers={"Prefer": "transient"})
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["hasMore"] is True and body["totalResults"] == 4 and body["count"] == 2
    fixture = json.loads((fixtures / "netsuite" / "suiteql_page.json").read_text())
    assert body["items"][1] == fixture["items"][0]
    rows = list(body["items"])
    while body["hasMore"]:
        nxt = next(link["href"] for link in body["links"] if link["rel"] == "next")
        body = session.post(nxt, json={"q": q}, headers={"Prefer": "transient"}).json()
        rows += body["items"]
    assert [r["id"] for r in rows] == ["4705", "4709", "4711", "4712"]
    assert rows[2] == fixture["items"][1]

    keyset = session.post(url, json={"q": "SELECT id, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD\"T\"HH24:MI:SS') AS lm "
                                          "FROM transaction WHERE id > 4711 AND type IN ('PurchOrd', 'PurchReq') ORDER BY id"},
                          headers={"Prefer": "transient"}).json()
    assert keyset["items"] == [{"links": [], "id": "4712", "lm": "2024-03-15T02:31:00"}]

    no_prefer = session.post(url, json={"q": q})
    assert no_prefer.status_code == 400 and details(no_prefer)["o:errorCode"] == "INVALID_PARAMETER"
    unknown = session.post(url, json={"q": "SELECT subsidiary FROM transaction"}, headers={"Prefer": "transient"})
    assert unknown.status_code == 400
    assert unknown.json() == json.loads((fixtures / "netsuite" / "error_400_invalid_parameter.json").read_text())
    for bad in ["SELECT FROM transaction", "SELECT id FROM transaction WHERE", "DELETE FROM transaction",
                "SELECT id FROM nosuchtable", "SELECT id FROM transaction GROUP BY id"]:
        refused = session.post(url, json={"q": bad}, headers={"Prefer": "transient"})
        assert refused.status_code == 400, bad
        d = details(refused)
        assert d["o:errorCode"] == "INVALID_PARAMETER" and d["o:errorQueryParam"] == "q", bad
    too_big = session.post(url, params={"limit": 1001}, json={"q": q}, headers={"Prefer": "transient"})
    assert too_big.status_code == 400


def test_the_account_concurrency_limit_answers_429(ns, fixtures):
    sim = ns["sim"]
    sim.put_record("limits", {"concurrency": 1, "delay_ms": 1500})
    try:
        answers = []

        def call():
            s = requests.Session()
            s.auth = tba(ns["info"])
            answers.append(s.get(ns["rest"] + "/record/v1/purchaseOrder/4711"))

        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.1)
        for t in threads:
            t.join()
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 429, 429], codes
        throttled = next(a for a in answers if a.status_code == 429)
        assert throttled.json() == json.loads((fixtures / "netsuite" / "error_429_concurrency_limit.json").read_text())
    finally:
        sim.put_record("limits", {"concurrency": 5, "delay_ms": 0})
