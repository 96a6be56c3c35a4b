"""Zoho CRM (API v8): the official Python SDK `zohocrmsdk8_0` against `dingbridge sim`'s Zoho.

The SDK is pointed at the simulator through its documented environment object: a
`DataCenter.Environment(api_url, accounts_url, file_upload_url)` built with the simulator's URLs
(the same object `USDataCenter.PRODUCTION()` returns for the real US data centre). Token: an
`OAuthToken` with the seeded client id / secret / refresh token, kept in the SDK's `FileStore`.

Covered: the refresh grant, the SDK's metadata reads (current user, org, modules, fields),
records paging with `page`/`per_page` to the end, get one, create / update (batch and by id) /
upsert / delete in batches (the 101st record refused), related notes and activities, search (criteria, 204, malformed), count,
deleted records, COQL (where with and/or/in/like, order by, limit offset, 204) and its refusals,
notifications enable / callback / list / disable, and INVALID_TOKEN, INVALID_MODULE, INVALID_DATA,
invalid refresh token errors."""

import datetime
import http.server
import json
import pathlib
import tempfile
import threading
import time

import pytest
from zohocrmsdk.src.com.zoho.api.authenticator.oauth_token import OAuthToken
from zohocrmsdk.src.com.zoho.api.authenticator.store import FileStore
from zohocrmsdk.src.com.zoho.api.logger import Logger
from zohocrmsdk.src.com.zoho.crm.api import HeaderMap, ParameterMap
from zohocrmsdk.src.com.zoho.crm.api.coql import APIException as CoqlError
from zohocrmsdk.src.com.zoho.crm.api.coql import BodyWrapper as CoqlBody
from zohocrmsdk.src.com.zoho.crm.api.coql import CoqlOperations
from zohocrmsdk.src.com.zoho.crm.api.dc.data_center import DataCenter
from zohocrmsdk.src.com.zoho.crm.api.exception import SDKException
from zohocrmsdk.src.com.zoho.crm.api.initializer import Initializer
from zohocrmsdk.src.com.zoho.crm.api.notifications import BodyWrapper as WatchBody
from zohocrmsdk.src.com.zoho.crm.api.notifications import Notification, NotificationsOperations
from zohocrmsdk.src.com.zoho.crm.api.notifications import DeleteNotificationParam, GetNotificationsParam
from zohocrmsdk.src.com.zoho.crm.api.record import APIException as RecordError
from zohocrmsdk.src.com.zoho.crm.api.record import ActionWrapper, BodyWrapper, Record, RecordOperations
from zohocrmsdk.src.com.zoho.crm.api.record import DeleteRecordsParam, GetDeletedRecordsParam, GetRecordsParam
from zohocrmsdk.src.com.zoho.crm.api.record import SearchRecordsParam, SuccessResponse
from zohocrmsdk.src.com.zoho.crm.api.related_records import GetRelatedRecordsParam, RelatedRecordsOperations
from zohocrmsdk.src.com.zoho.crm.api.sdk_config import SDKConfig
from zohocrmsdk.src.com.zoho.crm.api.util.choice import Choice


def environment(zoho):
    return DataCenter.Environment(zoho.base, zoho.base + "/oauth/v2/token", zoho.base)


def initialize(zoho, info, workdir, refresh_token=None):
    token = OAuthToken(client_id=info["client_id"], client_secret=info["client_secret"],
                       refresh_token=refresh_token or info["refresh_token"])
    Initializer.initialize(
        environment=environment(zoho),
        token=token,
        store=FileStore(str(workdir / "tokens.txt")),
        sdk_config=SDKConfig(auto_refresh_fields=False, pick_list_validation=True),
        resource_path=str(workdir),
        logger=Logger.get_instance(Logger.Levels.INFO, str(workdir / "sdk.log")),
    )


@pytest.fixture(scope="module")
def sdk(zoho):
    info = zoho.info()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="zoho-sdk-"))
    (workdir / "tokens.txt").touch()
    initialize(zoho, info, workdir)
    return {"sim": zoho, "info": info, "dir": workdir}


def params(**values):
    p = ParameterMap()
    for key, value in values.items():
        p.add(getattr(GetRecordsParam, key), value)
    return p


def coql(query):
    body = CoqlBody()
    body.set_select_query(query)
    return CoqlOperations().get_records(body)


def successes(response):
    obj = response.get_object()
    assert isinstance(obj, ActionWrapper), obj
    return obj.get_data()


def test_refresh_grant_and_the_sdk_metadata_reads(sdk):
    answer = RecordOperations("Deals").get_records(params(fields="Deal_Name", per_page=1), HeaderMap())
    assert answer.get_status_code() == 200
    tokens = (sdk["dir"] / "tokens.txt").read_text()
    assert "1000.simaccess" in tokens and sdk["info"]["refresh_token"] in tokens
    journal = [(r["method"], r["path"]) for r in sdk["sim"].requests()]
    assert ("POST", "/oauth/v2/token") in journal
    assert ("GET", "/crm/v8/settings/fields") in journal and ("GET", "/crm/v8/users") in journal


def test_records_page_by_page_to_the_end_and_get_one(sdk):
    ids, page, pages = [], 1, 0
    while True:
        answer = RecordOperations("Deals").get_records(params(fields="Deal_Name,Stage,Amount", per_page=2, page=page),
                                                       HeaderMap())
        assert answer.get_status_code() == 200
        wrapper = answer.get_object()
        ids += [r.get_id() for r in wrapper.get_data()]
        pages += 1
        info = wrapper.get_info()
        assert info.get_per_page() == 2 and info.get_page() == page
        if not info.get_more_records():
            break
        page += 1
    everything = RecordOperations("Deals").get_records(params(fields="Deal_Name", per_page=200), HeaderMap())
    all_ids = [r.get_id() for r in everything.get_object().get_data()]
    assert ids == all_ids and len(ids) > 2 and pages == (len(ids) + 1) // 2
    one = RecordOperations("Deals").get_record(ids[0], ParameterMap(), HeaderMap())
    record = one.get_object().get_data()[0]
    assert record.get_id() == ids[0] and record.get_key_value("Deal_Name") == "KPC - Q3 servo motor bulk order"
    assert record.get_key_value("Stage").get_value() == "Negotiation/Review"
    assert record.get_key_value("Account_Name").get_id() == 5843104000000871001


def new_deal(name, stage="Qualification", amount=1000.0):
    r = Record()
    r.add_key_value("Deal_Name", name)
    r.add_key_value("Stage", Choice(stage))
    r.add_key_value("Amount", amount)
    return r


def test_create_update_upsert_and_delete_in_batches(sdk):
    ops = RecordOperations("Deals")
    body = BodyWrapper()
    body.set_data([new_deal(f"Conformance deal {i}", amount=100.0 * i) for i in range(1, 4)])
    body.set_trigger([])
    created = ops.create_records(body, HeaderMap())
    assert created.get_status_code() == 201
    results = successes(created)
    assert all(isinstance(r, SuccessResponse) and r.get_code().get_value() == "SUCCESS" for r in results)
    new_ids = [int(r.get_details()["id"]) for r in results]
    assert len(set(new_ids)) == 3

    update = BodyWrapper()
    changed = []
    for i, rid in enumerate(new_ids):
        r = Record()
        r.set_id(rid)
        r.add_key_value("Stage", Choice("Closed Won" if i == 0 else "Negotiation/Review"))
        changed.append(r)
    update.set_data(changed)
    updated = ops.update_records(update, HeaderMap())
    assert updated.get_status_code() == 200 and len(successes(updated)) == 3
    reread = ops.get_record(new_ids[0], ParameterMap(), HeaderMap()).get_object().get_data()[0]
    assert reread.get_key_value("Stage").get_value() == "Closed Won"
    single = BodyWrapper()
    one = Record()
    one.add_key_value("Amount", 4242.0)
    single.set_data([one])
    assert ops.update_record(new_ids[1], single, HeaderMap()).get_status_code() == 200
    assert ops.get_record(new_ids[1], ParameterMap(), HeaderMap()).get_object().get_data()[0].get_key_value("Amount") == 4242.0

    upsert = BodyWrapper()
    again = new_deal("Conformance deal 1", stage="Proposal/Price Quote")
    upsert.set_data([again, new_deal("Conformance upserted")])
    upsert.set_duplicate_check_fields(["Deal_Name"])
    upserted = ops.upsert_records(upsert, HeaderMap())
    actions = [r.get_action().get_value() for r in successes(upserted)]
    assert upserted.get_status_code() in (200, 201)
    assert [r.get_code().get_value() for r in successes(upserted)] == ["SUCCESS", "SUCCESS"]
    assert actions == ["update", "insert"], actions
    assert successes(upserted)[0].get_duplicate_field() == "Deal_Name"
    assert int(successes(upserted)[0].get_details()["id"]) == new_ids[0]

    too_many = BodyWrapper()
    too_many.set_data([new_deal(f"bulk {i}") for i in range(101)])
    refused = ops.create_records(too_many, HeaderMap())
    obj = refused.get_object()
    assert refused.get_status_code() == 400
    assert isinstance(obj, RecordError) and obj.get_code().get_value() == "LIMIT_EXCEEDED", obj

    delete = ParameterMap()
    delete.add(DeleteRecordsParam.ids, ",".join(str(i) for i in new_ids))
    deleted = ops.delete_records(delete, HeaderMap())
    assert deleted.get_status_code() == 200, (deleted.get_object().get_code().get_value(), deleted.get_object().get_details(), deleted.get_object().get_message())
    assert len(successes(deleted)) == 3
    gone = ops.get_record(new_ids[0], ParameterMap(), HeaderMap())
    assert gone.get_status_code() == 204 and gone.get_object() is None


def test_search_count_and_deleted_records(sdk):
    ops = RecordOperations("Deals")
    search = ParameterMap()
    search.add(SearchRecordsParam.criteria, "((Stage:equals:Negotiation/Review)and(Amount:greater_than:500000))")
    found = ops.search_records(search, HeaderMap())
    assert found.get_status_code() == 200
    names = [r.get_key_value("Deal_Name") for r in found.get_object().get_data()]
    assert "KPC - Q3 servo motor bulk order" in names
    nothing = ParameterMap()
    nothing.add(SearchRecordsParam.criteria, "(Deal_Name:equals:no such deal)")
    assert ops.search_records(nothing, HeaderMap()).get_status_code() == 204
    malformed = ParameterMap()
    malformed.add(SearchRecordsParam.criteria, "Stage:eq:Closed Won")
    refused = ops.search_records(malformed, HeaderMap())
    assert refused.get_status_code() == 400
    assert isinstance(refused.get_object(), RecordError) and refused.get_object().get_code().get_value() == "INVALID_QUERY"
    count = ops.record_count(ParameterMap()).get_object().get_count()
    everything = ops.get_records(params(fields="Deal_Name", per_page=200), HeaderMap()).get_object().get_data()
    assert count == len(everything)
    deleted = ParameterMap()
    deleted.add(GetDeletedRecordsParam.type, "all")
    answer = ops.get_deleted_records(deleted, HeaderMap())
    assert answer.get_status_code() in (200, 204)


def test_related_notes_and_closed_activities_of_a_deal(sdk, fixtures):
    deal = 5843104000001234001
    p = ParameterMap()
    p.add(GetRelatedRecordsParam.fields, "Note_Title,Note_Content")
    notes = RelatedRecordsOperations("Notes", "Deals").get_related_records(deal, p, HeaderMap())
    assert notes.get_status_code() == 200
    titles = [n.get_key_value("Note_Title") for n in notes.get_object().get_data()]
    fixture = json.loads((fixtures / "zoho" / "related" / "deal_notes.json").read_text())
    assert titles and all(isinstance(t, str) for t in titles)
    assert set(fixture["data"][0]) >= {"Note_Title", "Note_Content"}
    p = ParameterMap()
    p.add(GetRelatedRecordsParam.fields, "Subject")
    history = RelatedRecordsOperations("Activities_Chronological_View_History", "Deals").get_related_records(deal, p, HeaderMap())
    assert history.get_status_code() in (200, 204)


def test_coql_answers_and_pages_and_refuses_what_zoho_refuses(sdk):
    answer = coql("select Deal_Name, Stage, Amount, Account_Name.Account_Name from Deals "
                  "where (Amount >= 100000 and Stage != 'Closed Lost') order by Amount desc limit 2 offset 0")
    assert answer.get_status_code() == 200
    wrapper = answer.get_object()
    rows = wrapper.get_data()
    amounts = [r.get_key_value("Amount") for r in rows]
    assert amounts == sorted(amounts, reverse=True) and len(rows) <= 2
    assert all(a >= 100000 for a in amounts)
    total = coql("select Deal_Name from Deals where Amount >= 100000 and Stage != 'Closed Lost' limit 200")
    all_rows = total.get_object().get_data()
    paged, offset = [], 0
    while True:
        page = coql(f"select Deal_Name from Deals where Amount >= 100000 and Stage != 'Closed Lost' "
                    f"order by id limit 1 offset {offset}")
        if page.get_status_code() == 204:
            break
        paged += [r.get_id() for r in page.get_object().get_data()]
        offset += 1
        if not page.get_object().get_info().get_more_records():
            break
    assert sorted(paged) == sorted(r.get_id() for r in all_rows)
    ors = coql("select Deal_Name from Deals where (Stage = 'Closed Won' or Stage in ('Negotiation/Review')) limit 50")
    assert ors.get_status_code() in (200, 204)
    like = coql("select Deal_Name from Deals where Deal_Name like 'KPC%' limit 10")
    assert all(r.get_key_value("Deal_Name").startswith("KPC") for r in like.get_object().get_data())
    empty = coql("select Deal_Name from Deals where Deal_Name = 'no such deal'")
    assert empty.get_status_code() == 204 and empty.get_object() is None

    for bad, code in [
        ("select Deal_Name Deals", "SYNTAX_ERROR"),
        ("select Deal_Name from Deals where Amount >", "SYNTAX_ERROR"),
        ("select Deal_Name from Deals where a = 1 and b = 2 or c = 3", "SYNTAX_ERROR"),
        ("select Deal_Name from Nopes", "INVALID_QUERY"),
        ("select No_Such_Field from Deals", "INVALID_QUERY"),
        ("select Deal_Name from Deals limit 2001", "LIMIT_EXCEEDED"),
    ]:
        refused = coql(bad)
        obj = refused.get_object()
        assert refused.get_status_code() == 400, bad
        assert isinstance(obj, CoqlError) and obj.get_code().get_value() == code, (bad, obj)


class Callbacks(http.server.BaseHTTPRequestHandler):
    """A notify_url on loopback that keeps every callback body."""

    received = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        try:
            Callbacks.received.append(json.loads(raw or b"{}"))
        except ValueError:
            # Kept as text so the test's assertion, not this server thread, reports it.
            Callbacks.received.append({"unparsed": raw.decode(errors="replace")})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_notifications_enable_call_back_list_and_disable(sdk):
    server = http.server.HTTPServer(("127.0.0.1", 0), Callbacks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ops = NotificationsOperations()
    n = Notification()
    n.set_channel_id("1000000068001")
    n.set_events(["Deals.create", "Deals.edit"])
    n.set_notify_url(f"http://127.0.0.1:{server.server_address[1]}/zoho-callback?tenant=hk")
    n.set_token("conformance-token")
    n.set_channel_expiry(datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=2))
    body = WatchBody()
    body.set_watch([n])
    enabled = ops.enable_notifications(body)
    assert enabled.get_status_code() == 200
    first = enabled.get_object().get_watch()[0]
    assert first.get_code().get_value() == "SUCCESS"
    listed = ops.get_notifications(ParameterMap())
    channels = listed.get_object().get_watch()
    assert [str(c.get_channel_id()) for c in channels] == ["1000000068001"]
    assert sorted(channels[0].get_events()) == ["Deals.create", "Deals.edit"]

    body = BodyWrapper()
    body.set_data([new_deal("Watched deal")])
    created = successes(RecordOperations("Deals").create_records(body, HeaderMap()))[0].get_details()["id"]
    deadline = time.time() + 5
    while not Callbacks.received and time.time() < deadline:
        time.sleep(0.05)
    server.shutdown()
    callback = Callbacks.received[0]
    assert callback["ids"] == [created] and callback["module"] == "Deals" and callback["operation"] == "insert"
    assert callback["channel_id"] in ("1000000068001", 1000000068001) and callback["token"] == "conformance-token"
    assert callback["query_params"] == {"tenant": "hk"}
    off = ParameterMap()
    off.add(DeleteNotificationParam.channel_ids, "1000000068001")
    disabled = ops.delete_notification(off)
    assert disabled.get_status_code() == 200
    after = ops.get_notifications(ParameterMap())
    assert after.get_status_code() == 204 or after.get_object().get_watch() == []


def test_errors_invalid_module_data_and_token(sdk):
    with pytest.raises(SDKException) as raised:
        RecordOperations("Nopes").get_records(params(fields="Name"), HeaderMap())
    assert "INVALID_MODULE" in str(raised.value)

    body = BodyWrapper()
    bad = new_deal("Unknown field")
    bad.add_key_value("No_Such_Field", "x")
    body.set_data([bad])
    answer = RecordOperations("Deals").create_records(body, HeaderMap())
    results = answer.get_object().get_data() if isinstance(answer.get_object(), ActionWrapper) else [answer.get_object()]
    assert results[0].get_code().get_value() == "INVALID_DATA", results[0]
    assert results[0].get_details()["api_name"] == "No_Such_Field"

    sdk["sim"].put_record("tokens", {"expire_all": True})
    expired = RecordOperations("Deals").get_records(params(fields="Deal_Name"), HeaderMap())
    obj = expired.get_object()
    assert expired.get_status_code() == 401
    assert isinstance(obj, RecordError) and obj.get_code().get_value() == "INVALID_TOKEN"


def test_a_bad_refresh_token_is_refused(sdk, zoho):
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="zoho-sdk-bad-"))
    (workdir / "tokens.txt").touch()
    try:
        with pytest.raises(SDKException):
            initialize(zoho, sdk["info"], workdir, refresh_token="1000.not.a.refresh.token")
            RecordOperations("Deals").get_records(params(fields="Deal_Name"), HeaderMap())
    finally:
        initialize(zoho, sdk["info"], sdk["dir"])
