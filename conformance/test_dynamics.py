"""Dynamics 365 with Microsoft's own clients: MSAL (client credentials against the tenant's
discovery document and token endpoint), the Power Platform Dataverse client (metadata lookups,
query options, paging with odata.maxpagesize, ETags, creates/updates/deletes, $batch, errors), and
Business Central API v2.0 with plain requests in the documented shapes.

Both clients insist on the vendor's https hosts (MSAL refuses a non-https authority, the
Dataverse client a non-https base URL), so `route_hosts` maps login.microsoftonline.com and the
organisation's host to the simulator; the simulator answers with the vendor's https origin."""

import time
import uuid

import msal
import pytest
import requests
from azure.core.credentials import AccessToken
from PowerPlatform.Dataverse.client import DataverseClient
from PowerPlatform.Dataverse.core.errors import HttpError, MetadataError

import conftest

ORG = "dingbridge-demo.crm5.dynamics.com"
LOGIN = "login.microsoftonline.com"
BC = "api.businesscentral.dynamics.com"


@pytest.fixture(scope="module")
def routed(dynamics):
    with pytest.MonkeyPatch.context() as mp:
        conftest.route_hosts(mp, {LOGIN: dynamics.base, ORG: dynamics.base, BC: dynamics.base})
        yield dynamics


@pytest.fixture(scope="module")
def info(routed):
    return routed.info()


def msal_app(info, secret=None, tenant=None):
    return msal.ConfidentialClientApplication(
        info["client_id"],
        client_credential=secret or info["client_secret"],
        authority=f"https://{LOGIN}/{tenant or info['tenant_id']}",
        http_client=requests.Session(),
    )


class MsalCredential:
    """An azure-core TokenCredential backed by an MSAL confidential client, as Microsoft's
    samples wire the Dataverse client to MSAL."""

    def __init__(self, app):
        self.app = app
        self.calls = 0

    def get_token(self, *scopes, **_):
        self.calls += 1
        result = self.app.acquire_token_for_client(scopes=list(scopes))
        assert "access_token" in result, result
        return AccessToken(result["access_token"], int(time.time()) + int(result["expires_in"]))


@pytest.fixture(scope="module")
def client(info):
    with DataverseClient(f"https://{ORG}", MsalCredential(msal_app(info))) as dv:
        yield dv


# --- Microsoft identity platform (MSAL) ------------------------------------------------------


def test_msal_client_credentials_reads_discovery_and_gets_a_token(info, routed):
    result = msal_app(info).acquire_token_for_client(scopes=[f"https://{ORG}/.default"])
    assert result["token_type"] == "Bearer"
    assert result["expires_in"] > 3000
    paths = [r["path"] for r in routed.requests()]
    assert f"/{info['tenant_id']}/v2.0/.well-known/openid-configuration" in paths
    assert f"/{info['tenant_id']}/oauth2/v2.0/token" in paths


def test_msal_wrong_secret_is_invalid_client(info):
    result = msal_app(info, secret="not-the-secret").acquire_token_for_client(scopes=[f"https://{ORG}/.default"])
    assert result["error"] == "invalid_client"
    assert 7000215 in result["error_codes"]


def test_msal_unknown_tenant_is_refused_at_discovery(info):
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        msal_app(info, tenant=str(uuid.uuid4()))


def test_msal_scope_without_default_suffix_is_invalid_scope(info):
    result = msal_app(info).acquire_token_for_client(scopes=[f"https://{ORG}/user_impersonation"])
    assert result["error"] == "invalid_scope"


# --- Dataverse Web API through the Dataverse client --------------------------------------------


def test_metadata_resolves_tables_and_unknown_tables_fail(client):
    accounts = client.records.list("account", select=["name", "accountnumber"], orderby=["accountnumber asc"])
    numbers = [r["accountnumber"] for r in accounts]
    assert numbers == sorted(numbers) and "C20000077" in numbers
    with pytest.raises(MetadataError):
        client.records.list("nosuchtable")
    info = client.tables.get("account")
    assert info is not None and info["entity_set_name"] == "accounts"


def test_query_options_filter_select_orderby_top(client):
    orders = client.records.list(
        "salesorder",
        filter="statecode eq 0 and totalamount gt 3000",
        select=["name", "totalamount", "statecode"],
        orderby=["totalamount desc"],
    )
    amounts = [r["totalamount"] for r in orders]
    assert amounts == sorted(amounts, reverse=True) and amounts and min(amounts) > 3000
    assert all(set(r.data) >= {"name", "totalamount", "statecode"} for r in orders)
    top = client.records.list("salesorder", select=["name"], top=1)
    assert len(top) == 1


def test_unknown_column_in_select_or_filter_is_refused(client):
    with pytest.raises(HttpError) as refused:
        client.records.list("account", select=["name", "nosuchcolumn"])
    assert refused.value.status_code == 400
    assert "Could not find a property named 'nosuchcolumn'" in str(refused.value)
    with pytest.raises(HttpError) as refused:
        client.records.list("account", filter="nosuchcolumn eq 'x'")
    assert refused.value.status_code == 400


def test_paging_with_maxpagesize_follows_nextlinks_to_the_end(client, routed):
    created = client.records.create(
        "account", [{"name": f"Paging Co {i:03}", "accountnumber": f"P{i:05}"} for i in range(23)]
    )
    assert len(created) == 23
    pages = list(client.records.list_pages("account", select=["name"], filter="startswith(name,'Paging Co') and accountnumber ge 'P00000'", page_size=5))
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    names = [r["name"] for page in pages for r in page]
    assert len(set(names)) == 23
    prefers = [r["headers"].get("prefer", "") for r in routed.requests("/api/data/v9.2/accounts")]
    assert any("odata.maxpagesize=5" in p for p in prefers)


def test_create_get_update_delete_and_etags(client):
    account_id = client.records.create("account", {"name": "Tsuen Wan Hardware", "telephone1": "+852 2411 0000"})
    record = client.records.retrieve("account", account_id, select=["name", "telephone1"])
    assert record["name"] == "Tsuen Wan Hardware"
    etag = record.etag
    assert etag and etag.startswith('W/"')
    client.records.update("account", account_id, {"telephone1": "+852 2411 9999"})
    again = client.records.retrieve("account", account_id, select=["telephone1"])
    assert again["telephone1"] == "+852 2411 9999"
    assert again.etag != etag
    client.records.delete("account", account_id)
    assert client.records.retrieve("account", account_id) is None
    with pytest.raises(HttpError) as gone:
        client.records.delete("account", account_id)
    assert gone.value.status_code == 404
    assert gone.value.details.get("service_error_code") == "0x80040217"


def test_update_of_a_missing_row_is_404_not_an_upsert(client):
    # The client sends If-Match: * on update, so a missing row is not created.
    missing = str(uuid.uuid4())
    with pytest.raises(HttpError) as refused:
        client.records.update("account", missing, {"name": "ghost"})
    assert refused.value.status_code == 404


def test_lookup_bind_is_read_back_as_the_lookup_value(client, info):
    accounts = client.records.list("account", select=["accountid"], filter="accountnumber eq 'C20000077'")
    account_id = accounts[0]["accountid"]
    opp = client.records.create(
        "opportunity", {"name": "Kwai Chung warehouse racks", "parentaccountid@odata.bind": f"/accounts({account_id})"}
    )
    back = client.records.retrieve("opportunity", opp, select=["name", "_parentaccountid_value"])
    assert back["_parentaccountid_value"] == account_id


def test_writing_an_unknown_column_is_refused(client):
    with pytest.raises(HttpError) as refused:
        client.records.create("account", {"name": "Bad Co", "nosuchcolumn": 1})
    assert refused.value.status_code == 400
    assert "does not exist on type 'Microsoft.Dynamics.CRM.account'" in str(refused.value)


def test_batch_runs_operations_and_reports_each(client):
    batch = client.batch.new()
    batch.records.create("account", {"name": "Batch One Ltd", "accountnumber": "B0001"})
    batch.records.create("account", {"name": "Batch Two Ltd", "accountnumber": "B0002"})
    result = batch.execute()
    assert len(result.responses) == 2
    assert all(r.status_code in (201, 204) for r in result.responses), [r.status_code for r in result.responses]
    names = [r["name"] for r in client.records.list("account", select=["name"], filter="contains(name,'Batch ') and (accountnumber eq 'B0001' or accountnumber eq 'B0002')")]
    assert sorted(names) == ["Batch One Ltd", "Batch Two Ltd"]


def test_expand_a_lookup_with_a_nested_select(client):
    orders = client.records.list(
        "salesorder",
        select=["ordernumber"],
        expand=["customerid_account($select=name,accountnumber)"],
        orderby=["ordernumber asc"],
    )
    first = orders[0]
    assert first["ordernumber"] == "ORD-01001-X7Y2Z3"
    assert first["customerid_account"]["name"] == "Harbour City Retail Ltd"
    assert first["customerid_account"]["accountnumber"] == "C20000077"
    with pytest.raises(HttpError) as refused:
        client.records.list("salesorder", select=["ordernumber"], expand=["nosuchnavigation"])
    assert refused.value.status_code == 400


def test_annotations_come_only_when_asked(client):
    plain = client.records.list("salesorder", select=["statecode"], top=1)
    assert not any("@" in k for k in plain[0].data)
    annotated = client.records.list(
        "salesorder", select=["statecode"], top=1, include_annotations="OData.Community.Display.V1.FormattedValue"
    )
    assert "statecode@OData.Community.Display.V1.FormattedValue" in annotated[0].data


def test_service_protection_429_carries_retry_after(client, routed):
    routed.put_record("limits", {"requests": 1})
    try:
        with pytest.raises(HttpError) as throttled:
            for _ in range(3):
                client.records.list("account", select=["name"], top=1)
        assert throttled.value.status_code == 429
        assert throttled.value.details.get("service_error_code") == "0x80072322"
        assert throttled.value.details.get("retry_after") == 37
    finally:
        routed.put_record("limits", {"requests": 6000})


# --- Change tracking (documented Web API shapes; the Dataverse client has no call for it) ------


def bearer(info, resource):
    result = msal_app(info).acquire_token_for_client(scopes=[f"{resource}/.default"])
    return {"Authorization": f"Bearer {result['access_token']}", "Accept": "application/json",
            "OData-MaxVersion": "4.0", "OData-Version": "4.0"}


def test_change_tracking_delta_links_and_tombstones(info, client):
    headers = bearer(info, f"https://{ORG}")
    api = f"https://{ORG}/api/data/v9.2"
    first = requests.get(f"{api}/accounts?$select=name", headers={**headers, "Prefer": "odata.track-changes"}).json()
    delta = first["@odata.deltaLink"]
    assert "$deltatoken=" in delta
    new_id = client.records.create("account", {"name": "Delta Trading"})
    gone = first["value"][0]["accountid"]
    client.records.delete("account", gone)
    changes = requests.get(delta, headers=headers).json()
    assert [r.get("name") for r in changes["value"] if "name" in r] == ["Delta Trading"]
    tombstones = [r for r in changes["value"] if r.get("reason") == "deleted"]
    assert [t["id"] for t in tombstones] == [gone]
    assert any(r.get("accountid") == new_id for r in changes["value"])
    refused = requests.get(f"{api}/accounts?$select=name&$filter=name eq 'x'", headers={**headers, "Prefer": "odata.track-changes"})
    assert refused.status_code == 400
    assert "isn't supported when Change Tracking is enabled" in refused.json()["error"]["message"]


# --- Business Central API v2.0 (plain requests in the documented shapes) -----------------------


def test_business_central_companies_purchase_orders_and_etag_rules(info):
    headers = bearer(info, f"https://{BC}")
    api = f"https://{BC}/v2.0/{info['tenant_id']}/{info['bc_environment']}/api/v2.0"
    companies = requests.get(f"{api}/companies", headers=headers).json()["value"]
    assert [c["id"] for c in companies] == [info["bc_company_id"]]
    company = f"{api}/companies({info['bc_company_id']})"
    orders = requests.get(f"{company}/purchaseOrders?$filter=status eq 'In Review'&$expand=purchaseOrderLines", headers=headers)
    assert orders.status_code == 200
    [order] = orders.json()["value"]
    assert order["number"] == "106021" and len(order["purchaseOrderLines"]) == 2
    url = f"{company}/purchaseOrders({order['id']})"
    no_etag = requests.patch(url, json={"requestedReceiptDate": "2024-04-05"}, headers=headers)
    assert no_etag.status_code in (400, 428)
    ok = requests.patch(url, json={"requestedReceiptDate": "2024-04-05"}, headers={**headers, "If-Match": order["@odata.etag"]})
    assert ok.status_code == 200 and ok.json()["requestedReceiptDate"] == "2024-04-05"
    stale = requests.patch(url, json={"requestedReceiptDate": "2024-04-06"}, headers={**headers, "If-Match": order["@odata.etag"]})
    assert stale.status_code == 412
    missing = requests.get(f"{company}/purchaseOrders({uuid.uuid4()})", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "Internal_RecordNotFound"
    wrong_audience = requests.get(f"{company}/items", headers=bearer(info, f"https://{ORG}"))
    assert wrong_audience.status_code == 401
